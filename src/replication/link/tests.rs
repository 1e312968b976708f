//! The session's clocks, in process over an in-memory stream: a partner that falls silent
//! after Hello, one that never says Hello, and one that stops reading each end the session
//! with their own error; a partner that keeps talking is kept. (The namespaced
//! `tests/replication.rs` shows the same against real TCP and TLS with silent connections
//! from the partner's address.)

use super::*;
use std::net::Ipv4Addr;
use tokio::io::{AsyncReadExt, DuplexStream};

const SITE: &str = "dc1";

/// Short clocks: the tests wait for a timeout to fire, never measure one.
fn timing() -> Timing {
    Timing {
        handshake: Duration::from_millis(400),
        keepalive: Duration::from_millis(50),
        idle: Duration::from_millis(400),
        write: Duration::from_millis(400),
    }
}

/// A link of site `dc1` over an empty inventory in `dir` (the session never dials or
/// accepts: the test hands it one end of a duplex stream).
fn link(dir: &std::path::Path) -> (Link, watch::Receiver<Status>) {
    let pki = dir.join("pki");
    crate::pki::init(&pki, "test CA", 30, false).unwrap();
    let ca = crate::pki::Ca::load(&pki).unwrap();
    let store = Store::open(&dir.join("store")).unwrap();
    let shared = Shared {
        inventory: Arc::new(Inventory::load(store.clone(), &Default::default(), &[], 60).unwrap()),
        certificates: Registry::load(store.clone()).unwrap(),
        nocloud: Arc::new(nocloud::Registry::load(store.clone()).unwrap()),
        store,
    };
    let address = Ipv4Addr::new(10, 0, 0, 1);
    let cfg = Failover {
        name: "dc1-pair".into(),
        role: FailoverRole::Primary,
        address,
        port: 647,
        peer_address: Ipv4Addr::new(10, 0, 0, 2),
        peer_port: 647,
        max_response_delay: 60,
        max_unacked_updates: 10,
        mclt: 3600,
        hba: None,
        load_balance_max_seconds: 3,
        pools: vec![],
        replication_port: 6470,
        tls: true,
        longest_lease: 3600,
    };
    let (status, watching) = watch::channel(Status::default());
    let link = Link {
        site: SITE.into(),
        cfg,
        creds: Arc::new(Credentials::new(&ca, SITE, address.into()).unwrap()),
        shared,
        status,
        timing: timing(),
    };
    (link, watching)
}

fn hello() -> Vec<u8> {
    wire::encode(&Message::Hello {
        site: SITE.into(),
        server: "partner".into(),
    })
}

/// Read and discard everything the session sends, until it closes its side.
async fn drain(mut r: tokio::io::ReadHalf<DuplexStream>) {
    let mut buf = [0u8; 4096];
    while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
}

#[tokio::test]
async fn a_partner_silent_after_hello_ends_the_session_at_the_idle_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (link, status) = link(dir.path());
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (r, mut w) = tokio::io::split(theirs);
    w.write_all(&hello()).await.unwrap();
    let reader = tokio::spawn(drain(r));
    let result = tokio::time::timeout(Duration::from_secs(30), session(&link, ours, "serial"))
        .await
        .expect("the session ends by itself");
    assert!(matches!(result, Err(LinkError::Idle(_))), "{result:?}");
    assert!(
        status.borrow().connected,
        "it was connected (Hello both ways) before falling silent"
    );
    drop(w);
    reader.await.unwrap();
}

/// The control: the same partner, but it says something (keepalives) more often than the
/// idle limit, is kept for many idle periods, and its leaving ends the session cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_that_keeps_talking_is_kept_past_many_idle_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (link, _status) = link(dir.path());
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (r, mut w) = tokio::io::split(theirs);
    let reader = tokio::spawn(drain(r));
    // The partner is its own task, as a remote one would be: the session's work never
    // delays what it says.
    let partner = tokio::spawn(async move {
        w.write_all(&hello()).await.unwrap();
        w.write_all(&wire::encode(&Message::Synced)).await.unwrap();
        // Five idle limits' worth of keepalives, then a clean goodbye.
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            w.write_all(&wire::encode(&Message::Keepalive)).await.unwrap();
        }
        // Its end of the stream (the read half still lives in `drain`).
        w.shutdown().await.unwrap();
    });
    let result = tokio::time::timeout(Duration::from_secs(30), session(&link, ours, "serial"))
        .await
        .expect("the session ends when the partner goes");
    assert!(result.is_ok(), "{result:?}");
    partner.await.unwrap();
    reader.await.unwrap();
}

#[tokio::test]
async fn a_partner_that_never_says_hello_ends_the_session_at_the_handshake_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (link, status) = link(dir.path());
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (r, _w) = tokio::io::split(theirs);
    let reader = tokio::spawn(drain(r));
    let result = tokio::time::timeout(Duration::from_secs(30), session(&link, ours, "serial"))
        .await
        .expect("the session ends by itself");
    assert!(matches!(result, Err(LinkError::Silent)), "{result:?}");
    assert!(!status.borrow().connected, "never connected without its Hello");
    drop(reader);
}

#[tokio::test]
async fn a_partner_that_stops_reading_ends_the_session_at_the_write_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (link, _status) = link(dir.path());
    // A window smaller than one Hello, and nobody reading it: the first write cannot finish.
    let (ours, theirs) = tokio::io::duplex(16);
    let _theirs = theirs;
    let result = tokio::time::timeout(Duration::from_secs(30), session(&link, ours, "serial"))
        .await
        .expect("the session ends by itself");
    assert!(matches!(result, Err(LinkError::WriteTimeout(_))), "{result:?}");
}

/// The partner's certificate revoked while the session runs (`provd pki revoke`, or learnt
/// from the partner's own records): the session it opened with that certificate ends at
/// the next message, although the partner keeps talking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_the_partners_certificate_ends_the_session_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let (link, _status) = link(dir.path());
    let peer = crate::pki::registry::CertRecord {
        serial: "0badcafe".into(),
        host: format!("replication {SITE} 10.0.0.2"),
        role: crate::pki::registry::REPLICATION_ROLE.into(),
        issued_at: 0,
        not_after: i64::MAX,
        key_id: "k".into(),
        how: "start".into(),
        revoked_at: None,
    };
    link.shared.certificates.issued(peer.clone()).await.unwrap();
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    let (r, mut w) = tokio::io::split(theirs);
    let reader = tokio::spawn(drain(r));
    let partner = tokio::spawn(async move {
        w.write_all(&hello()).await.unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if w.write_all(&wire::encode(&Message::Keepalive)).await.is_err() {
                return;
            }
        }
    });
    let certificates = link.shared.certificates.clone();
    let revoke = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        certificates.revoke_serial(&peer.serial, 1).await.unwrap();
    };
    let (result, ()) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(30), session(&link, ours, &peer.serial)),
        revoke
    );
    let result = result.expect("the session ends by itself");
    assert!(
        matches!(&result, Err(LinkError::Revoked(s)) if *s == peer.serial),
        "{result:?}"
    );
    partner.abort();
    reader.abort();
}
