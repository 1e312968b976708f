//! The replication link of one site's pair: mutual TLS with certificates from the site's
//! CA, then `wire` messages both ways.
//!
//! Who connects: the failover primary dials the secondary's `replication_port`; the
//! secondary accepts only from the configured peer address, one connection at a time (a
//! newcomer waits; it never replaces the link in use). Both present a certificate with
//! OU "provd replication site NAME" issued by their CA at start; each checks that the
//! other's chains to its own CA (so both hold the same CA) and carries that OU (so a
//! hypervisor's or an operator's certificate from the same CA is refused).
//!
//! Per connection: Hello, the full dump, Synced, then live changes; the receiver merges
//! everything (the rules beside each record). The first complete dump received marks the site synchronised
//! (durably), which releases the install hold of a new or rebuilt server.

use super::wire::{self, Message};
use crate::config::{Failover, FailoverRole};
use crate::inventory::Inventory;
use crate::nocloud;
use crate::pki::registry::Registry;
use crate::store::Store;
use rustls::pki_types::ServerName;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What `provd failover status` shows about the pair's inventory.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Status {
    pub site: String,
    pub partner: String,
    pub connected: bool,
    /// Unix time of the first complete dump ever received from the partner (0: never; a
    /// server that never synchronised serves no installs).
    pub synced_at: u64,
    /// Unix time of the last complete dump received (this connection or an earlier one).
    pub last_sync: u64,
    /// Unix time the last record arrived from the partner.
    pub last_received: u64,
    pub records_sent: u64,
    pub records_received: u64,
    /// Received records that changed ours.
    pub records_applied: u64,
    pub last_error: Option<String>,
}

/// Everything the pair shares, and where it lives here.
#[derive(Clone)]
pub struct Shared {
    pub inventory: Arc<Inventory>,
    pub certificates: Arc<Registry>,
    pub nocloud: Arc<nocloud::Registry>,
    pub store: Store,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the partner's certificate is not a replication certificate of site {0}")]
    NotPartner(String),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("the partner says it serves site {theirs:?}, not {ours:?}")]
    WrongSite { ours: String, theirs: String },
    #[error("the partner sent {0} before Hello")]
    NoHello(&'static str),
    #[error("no Hello from the partner within 10 s")]
    Silent,
    #[error("{0}")]
    Local(String),
}

fn tls_failed(e: impl std::fmt::Display) -> LinkError {
    LinkError::Tls(e.to_string())
}

/// The TLS side of one site's link (shared with the failover conversation between two
/// provds): `pki::pair`.
pub use crate::pki::pair::PairTls as Credentials;
use crate::pki::pair::is_partner;

/// Run the link of `cfg`'s site until `stop`: connect (a primary) or accept on `listener`
/// (a secondary's, bound by the daemon at `cfg.address:cfg.replication_port`), sync, repeat.
pub async fn run(
    site: String,
    cfg: Failover,
    creds: Arc<Credentials>,
    shared: Shared,
    listener: Option<TcpListener>,
    status: watch::Sender<Status>,
    mut stop: watch::Receiver<bool>,
) {
    let local = SocketAddr::from((cfg.address, cfg.replication_port));
    let remote = SocketAddr::from((cfg.peer_address, cfg.replication_port));
    if cfg.role == FailoverRole::Secondary && listener.is_none() {
        let why = format!("not listening on {local}");
        tracing::error!("replication (site {site}): {why}");
        status.send_modify(|st| st.last_error = Some(why));
        return;
    }
    let mut backoff = Duration::from_millis(500);
    loop {
        let attempt = async {
            match &listener {
                None => {
                    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(remote))
                        .await
                        .map_err(|_| LinkError::Io(std::io::ErrorKind::TimedOut.into()))??;
                    let name = ServerName::IpAddress(cfg.peer_address.into());
                    let tls = tokio_rustls::TlsConnector::from(creds.client())
                        .connect(name, tcp)
                        .await
                        .map_err(tls_failed)?;
                    if !is_partner(tls.get_ref().1.peer_certificates(), &site, &shared.certificates) {
                        return Err(LinkError::NotPartner(site.clone()));
                    }
                    session(&site, tls, &shared, &status).await
                }
                Some(l) => {
                    let (tcp, peer) = l.accept().await?;
                    if peer.ip() != IpAddr::V4(cfg.peer_address) {
                        tracing::warn!("replication (site {site}): refused a connection from {peer}: not the partner");
                        return Ok(());
                    }
                    let tls = tokio_rustls::TlsAcceptor::from(creds.server())
                        .accept(tcp)
                        .await
                        .map_err(tls_failed)?;
                    if !is_partner(tls.get_ref().1.peer_certificates(), &site, &shared.certificates) {
                        return Err(LinkError::NotPartner(site.clone()));
                    }
                    session(&site, tls, &shared, &status).await
                }
            }
        };
        let result = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        if result.is_ok() {
            backoff = Duration::from_millis(500);
        }
        if let Err(e) = &result {
            tracing::warn!("replication (site {site}) with {remote}: {e}");
        }
        status.send_modify(|st| {
            st.connected = false;
            if let Err(e) = &result {
                st.last_error = Some(e.to_string());
            }
        });
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn site_of_seed(seed: &nocloud::Seed, site: &str) -> bool {
    seed.site == site
}

/// Everything we hold for `site`, as messages (the dump).
async fn dump(site: &str, shared: &Shared) -> Vec<Message> {
    let mut out: Vec<Message> = shared
        .inventory
        .list()
        .await
        .into_iter()
        .filter(|r| r.site.as_deref().is_none_or(|s| s == site))
        .map(|r| Message::Host(Box::new(r)))
        .collect();
    out.extend(shared.certificates.certificates().into_iter().map(Message::Certificate));
    out.extend(
        shared
            .nocloud
            .entries()
            .into_iter()
            .filter(|(_, s)| site_of_seed(s, site))
            .map(|(token, seed)| Message::Seed { token, seed }),
    );
    out.push(Message::Synced);
    out
}

/// One connected session: Hello both ways, dumps, then live changes, until either side
/// goes.
async fn session<S>(site: &str, stream: S, shared: &Shared, status: &watch::Sender<Status>) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Subscribe before dumping: a change made during the dump is sent (again) after it.
    let mut hosts = shared.inventory.subscribe();
    let mut certs = shared.certificates.subscribe();
    let mut seeds = shared.nocloud.subscribe();
    let (reader, mut writer) = tokio::io::split(stream);
    let mut lines = BufReader::new(reader);
    let server_id = shared
        .store
        .meta_blocking("server-id")
        .ok()
        .flatten()
        .unwrap_or_default();
    writer
        .write_all(&wire::encode(&Message::Hello {
            site: site.to_string(),
            server: server_id,
        }))
        .await?;
    match tokio::time::timeout(Duration::from_secs(10), read_message(&mut lines)).await {
        Err(_) => return Err(LinkError::Silent),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(Message::Hello { site: theirs, .. }))) if theirs != site => {
            return Err(LinkError::WrongSite {
                ours: site.to_string(),
                theirs,
            });
        }
        Ok(Ok(Some(Message::Hello { .. }))) => {}
        Ok(Ok(Some(_))) => return Err(LinkError::NoHello("a record")),
    }
    status.send_modify(|st| {
        st.connected = true;
        st.last_error = None;
    });
    tracing::info!("replication (site {site}): connected; sending the full dump");

    let send = async {
        let mut sent = 0u64;
        for m in dump(site, shared).await {
            writer.write_all(&wire::encode(&m)).await?;
            sent += 1;
        }
        writer.flush().await?;
        status.send_modify(|st| st.records_sent += sent);
        loop {
            let m = tokio::select! {
                r = hosts.recv() => match r {
                    Ok(h) if h.site.as_deref().is_none_or(|s| s == site) => vec![Message::Host(Box::new(h))],
                    Ok(_) => continue,
                    // We fell behind: the full dump again says everything.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dump(site, shared).await,
                    Err(_) => return Ok::<(), LinkError>(()),
                },
                r = certs.recv() => match r {
                    Ok(c) => vec![Message::Certificate(c)],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dump(site, shared).await,
                    Err(_) => return Ok(()),
                },
                r = seeds.recv() => match r {
                    Ok((token, seed)) if site_of_seed(&seed, site) => vec![Message::Seed { token, seed }],
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dump(site, shared).await,
                    Err(_) => return Ok(()),
                },
            };
            for msg in &m {
                writer.write_all(&wire::encode(msg)).await?;
            }
            writer.flush().await?;
            status.send_modify(|st| st.records_sent += m.len() as u64);
        }
    };
    let receive = async {
        while let Some(m) = read_message(&mut lines).await? {
            apply(site, m, shared, status).await?;
        }
        Ok::<(), LinkError>(())
    };
    tokio::select! {
        r = send => r,
        r = receive => r,
    }
}

/// Read one message; None at a clean end of the stream.
async fn read_message<R: AsyncRead + Unpin>(lines: &mut BufReader<R>) -> Result<Option<Message>, LinkError> {
    let mut buf = Vec::new();
    let n = tokio::io::AsyncReadExt::take(&mut *lines, wire::MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(wire::WireError::TooLong.into());
    }
    buf.pop();
    Ok(Some(wire::decode(&buf)?))
}

async fn apply(site: &str, m: Message, shared: &Shared, status: &watch::Sender<Status>) -> Result<(), LinkError> {
    let now = crate::clock::unix_now();
    let changed = match m {
        Message::Hello { .. } => return Err(LinkError::NoHello("a second Hello")),
        Message::Host(r) => shared
            .inventory
            .apply_remote(*r)
            .await
            .map_err(|e| LinkError::Local(e.to_string()))?,
        Message::Certificate(c) => shared
            .certificates
            .apply_remote(c)
            .await
            .map_err(|e| LinkError::Local(e.to_string()))?,
        Message::Seed { token, seed } => {
            let reg = shared.nocloud.clone();
            tokio::task::spawn_blocking(move || reg.apply_remote_blocking(&token, seed))
                .await
                .map_err(|e| LinkError::Local(e.to_string()))?
                .map_err(LinkError::Local)?
        }
        Message::Synced => {
            let store = shared.store.clone();
            let key = synced_key(site);
            let first = tokio::task::spawn_blocking(move || -> Result<bool, String> {
                let first = store.meta_blocking(&key).map_err(|e| e.to_string())?.is_none();
                if first {
                    store
                        .set_meta_blocking(&key, &crate::clock::unix_now().to_string())
                        .map_err(|e| e.to_string())?;
                }
                Ok(first)
            })
            .await
            .map_err(|e| LinkError::Local(e.to_string()))?
            .map_err(LinkError::Local)?;
            shared.inventory.hold_installs(site, false);
            status.send_modify(|st| {
                st.last_sync = now;
                if st.synced_at == 0 {
                    st.synced_at = now;
                }
            });
            if first {
                tracing::info!(
                    "replication (site {site}): first synchronisation with the partner complete; installs allowed"
                );
            }
            return Ok(());
        }
    };
    status.send_modify(|st| {
        st.records_received += 1;
        st.last_received = now;
        if changed {
            st.records_applied += 1;
        }
    });
    Ok(())
}

/// The store key that says `site`'s pair has synchronised once (value: unix time).
pub fn synced_key(site: &str) -> String {
    format!("replication-synced:{site}")
}
