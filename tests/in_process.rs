//! The in-process tier: provd's own services (the same wiring `provd serve` uses,
//! `daemon::Services`) exercised without root, namespaces or the binary. The HTTP routers
//! are called with `tower::ServiceExt::oneshot`; TFTP and the DHCP loop serve sockets bound
//! to 127.0.0.1 port 0. The config is a named fixture (`tests/fixtures/sites/loopback.toml`).
//!
//! The black-box tests keep proving the same paths against real clients; these are the fast,
//! exact checks of what each route and packet gets.

mod common;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use provd::daemon::Services;
use provd::tftp::codec::{self as tftp, Packet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tower::ServiceExt;

const HV1: &str = "52:54:00:7f:00:01";
const HV1_PATH: &str = "52-54-00-7f-00-01";
/// Where booting machines "are" in these tests (the router sees it as the peer address).
const CLIENT: &str = "127.0.0.11:40000";

struct Fixture {
    services: Services,
    _work: common::Workdir,
}

fn fixture() -> Fixture {
    fixture_in(common::Workdir::new(), None)
}

/// The fixture with its state directory at `state` (a filesystem the test controls).
fn fixture_in(work: common::Workdir, state: Option<std::path::PathBuf>) -> Fixture {
    fixture_with(work, state, None)
}

/// The fixture, with `policy` as the boot policy every protocol asks (None: the config's
/// and the inventory's).
fn fixture_with(
    work: common::Workdir,
    state: Option<std::path::PathBuf>,
    policy: Option<Arc<dyn provd::boot::policy::BootPolicy>>,
) -> Fixture {
    let state = state.unwrap_or_else(|| work.path("state"));
    let assets = work.path("assets");
    std::fs::create_dir_all(assets.join("el9")).unwrap();
    std::fs::write(assets.join("el9/vmlinuz"), vec![7u8; 3000]).unwrap();
    std::fs::write(assets.join("hello.txt"), "hello from provd\n").unwrap();
    let text = common::builder::config_with(&assets, &state, &common::builder::fixture("loopback"));
    let cfg = provd::config::load_from_strs(&[(work.path("provd.toml"), text)]).unwrap();
    let services = match policy {
        None => Services::build(Arc::new(cfg), &[], &[], &state),
        Some(p) => Services::build_with_policy(Arc::new(cfg), &state, p),
    }
    .unwrap();
    Fixture { services, _work: work }
}

impl Fixture {
    fn boot_router(&self) -> axum::Router {
        provd::http::boot_router(
            self.services
                .app_state(&provd::daemon::Peers::default(), Some("loop".into())),
        )
    }

    fn api_router(&self) -> axum::Router {
        provd::http::api_router(self.services.app_state(&provd::daemon::Peers::default(), None))
    }
}

async fn call(router: &axum::Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
    call_as(router, method, uri, body, None).await
}

/// A request from another machine's address.
async fn call_from(router: &axum::Router, from: &str, method: &str, uri: &str) -> (StatusCode, String) {
    request(router, from, method, uri, "", None).await
}

async fn call_as(
    router: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    authorization: Option<&str>,
) -> (StatusCode, String) {
    request(router, CLIENT, method, uri, body, authorization).await
}

/// One request through `router` as if it came from `from` (what the listener puts in
/// `ConnectInfo` for a real connection), with an optional Authorization header.
async fn request(
    router: &axum::Router,
    from: &str,
    method: &str,
    uri: &str,
    body: &str,
    authorization: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .unwrap();
    if let Some(a) = authorization {
        req.headers_mut().insert("authorization", a.parse().unwrap());
    }
    req.extensions_mut()
        .insert(ConnectInfo(from.parse::<SocketAddr>().unwrap()));
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn token_in(script: &str) -> String {
    let i = script.find("token=").expect("a token in the install script") + "token=".len();
    script[i..].chars().take_while(|c| c.is_ascii_hexdigit()).collect()
}

fn journal_details(f: &Fixture, kind: &str) -> Vec<String> {
    f.services
        .journal()
        .events(Some(HV1.parse().unwrap()))
        .into_iter()
        .filter(|e| serde_json::to_value(&e.step).unwrap()["kind"] == kind)
        .map(|e| e.detail)
        .collect()
}

#[tokio::test]
async fn the_boot_chain_through_the_router_installs_once_then_boots_locally() {
    let f = fixture();
    let boot = f.boot_router();
    let (status, script) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert_eq!(status, StatusCode::OK, "{script}");
    assert!(script.contains("http://127.0.0.1:8080/assets/el9/vmlinuz"), "{script}");
    let token = token_in(&script);
    assert_eq!(token.len(), 32);
    // The journal says what the policy decided (no text scraped from the script).
    assert_eq!(
        journal_details(&f, "boot-script"),
        ["installing hv1 with profile el9 (site loop)"]
    );
    // The same session on a second boot.
    let (_, again) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert_eq!(token_in(&again), token);

    // The kickstart: only with the token; unknown hosts are not found.
    assert_eq!(
        call(&boot, "GET", "/ks/hv1?token=0000", "").await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&boot, "GET", "/ks/nobody?token=0000", "").await.0,
        StatusCode::NOT_FOUND
    );
    let (status, ks) = call(&boot, "GET", &format!("/ks/hv1?token={token}"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(ks.contains("hv1"), "{ks}");

    // installed: the token is spent and the next boot is from the local disk.
    let (status, body) = call(&boot, "POST", &format!("/callback/hv1/installed?token={token}"), "ok").await;
    assert_eq!((status, body.contains("installed")), (StatusCode::OK, true), "{body}");
    assert_eq!(
        call(&boot, "POST", &format!("/callback/hv1/failed?token={token}"), "")
            .await
            .0,
        StatusCode::FORBIDDEN,
        "spent"
    );
    let (_, local) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert!(!local.contains("token="), "{local}");
    assert_eq!(
        journal_details(&f, "boot-script").last().map(String::as_str),
        Some("hv1 boots from its local disk")
    );
    assert_eq!(journal_details(&f, "callback"), ["installed"]);
}

/// Any machine can claim any MAC; only the address provd reserved or leased for that MAC
/// gets its install secrets. A machine elsewhere gets 403 for the script (no token is
/// minted), the kickstart, the callbacks and the certificate, even with the right token;
/// each refusal is counted and journaled with both addresses.
#[tokio::test]
async fn install_secrets_go_only_to_the_address_of_the_lease() {
    let f = fixture();
    let boot = f.boot_router();
    let stranger = "127.0.0.77:5000";
    let (status, _) = call_from(&boot, stranger, "GET", &format!("/boot/{HV1_PATH}.ipxe")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let record = f.services.inventory().get(HV1.parse().unwrap()).await.unwrap();
    assert!(record.install.is_none(), "no token was minted for the stranger");

    // The real host (its reservation) gets the script and its token ...
    let (_, script) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    let token = token_in(&script);
    // ... which is worth nothing from anywhere else.
    for (method, uri) in [
        ("GET", format!("/ks/hv1?token={token}")),
        ("POST", format!("/callback/hv1/installing?token={token}")),
        ("POST", format!("/pki/sign/hv1?role=client&token={token}")),
        ("GET", format!("/boot/{HV1_PATH}.ipxe")),
    ] {
        assert_eq!(
            call_from(&boot, stranger, method, &uri).await.0,
            StatusCode::FORBIDDEN,
            "{uri}"
        );
    }
    assert_eq!(f.services.http_stats().snapshot()["refused_address"], 5);
    // The journal says which request and why, in fields.
    let refused: Vec<_> = f
        .services
        .journal()
        .events(Some(HV1.parse().unwrap()))
        .into_iter()
        .filter_map(|e| match e.step {
            provd::journal::Step::Refused { request, why } => Some((request, why)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 5);
    assert_eq!(
        refused[1].1,
        provd::journal::RefusalReason::WrongAddress {
            from: "127.0.0.77".parse().unwrap(),
            holds: vec!["127.0.0.11".parse().unwrap()],
        },
        "{refused:?}"
    );
    // The token is still good for the host itself: nothing was spent by the refusals.
    assert_eq!(
        call(&boot, "GET", &format!("/ks/hv1?token={token}"), "").await.0,
        StatusCode::OK
    );

    // A host without a reservation: only its lease's address counts (here: none yet).
    let plain_mac = "52-54-00-7f-00-02";
    assert_eq!(
        call_from(&boot, "127.0.0.12:1", "GET", &format!("/boot/{plain_mac}.ipxe"))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn an_unknown_machine_gets_the_menu() {
    let f = fixture();
    let (status, script) = call(&f.boot_router(), "GET", "/boot/52-54-00-7f-00-99.ipxe", "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!script.contains("token="));
    let events = f.services.journal().events(Some("52:54:00:7f:00:99".parse().unwrap()));
    assert_eq!(
        events[0].detail,
        "machine 52:54:00:7f:00:99 is not in the inventory of site loop."
    );
    // It holds no lease at the address it asked from: the menu, but no discovered record
    // (a made-up MAC costs nothing; only leased machines fill the discovery table).
    assert!(
        f.services
            .inventory()
            .get("52:54:00:7f:00:99".parse().unwrap())
            .await
            .is_none(),
        "a machine without a lease was recorded"
    );
    assert_eq!(
        call(&f.boot_router(), "GET", "/boot/not-a-mac.ipxe", "").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn assets_are_served_with_ranges_and_never_outside_the_root() {
    let f = fixture();
    let boot = f.boot_router();
    let req = Request::builder()
        .uri("/assets/el9/vmlinuz")
        .header("range", "bytes=0-99")
        .body(Body::empty())
        .unwrap();
    let mut req = req;
    req.extensions_mut()
        .insert(ConnectInfo(CLIENT.parse::<SocketAddr>().unwrap()));
    let resp = boot.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().len(),
        100
    );
    for evil in [
        "/assets/../provd.toml",
        "/assets/%2e%2e/provd.toml",
        "/assets/el9/../../state/provd.redb",
    ] {
        let (status, _) = call(&boot, "GET", evil, "").await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{evil}: {status}"
        );
    }
    assert_eq!(call(&boot, "GET", "/assets/missing", "").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn admin_routes_exist_only_on_the_api_listener_and_need_the_token() {
    let f = fixture();
    let bearer = f.services.api_token().bearer();
    let api = f.api_router();
    for path in [
        "/api/hosts",
        "/api/leases",
        "/api/stats",
        "/api/events",
        "/api/sites",
        "/api/failover",
        "/api/vms",
    ] {
        assert_eq!(
            call(&f.boot_router(), "GET", path, "").await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
        assert_eq!(call(&api, "GET", path, "").await.0, StatusCode::UNAUTHORIZED, "{path}");
        let wrong = call_as(&api, "GET", path, "", Some("Bearer 00")).await;
        assert_eq!(wrong.0, StatusCode::UNAUTHORIZED, "{path}");
        let (status, body) = call_as(&api, "GET", path, "", Some(&bearer)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            !body.contains(bearer.trim_start_matches("Bearer ")),
            "{path} returned the token"
        );
    }
    // A VM action needs the pool (provd's CA): without it, refused with the reason.
    let (status, body) = call_as(&api, "POST", "/api/vms/hv1/web1/start", "", Some(&bearer)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("the pool is not running"), "{body}");
    // Metrics and health: open on the admin listener, absent from boot listeners.
    assert_eq!(call(&api, "GET", "/metrics", "").await.0, StatusCode::OK);
    assert_eq!(
        call(&api, "GET", "/healthz", "").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    assert_eq!(
        call(&f.boot_router(), "GET", "/metrics", "").await.0,
        StatusCode::NOT_FOUND
    );
    // A write without the token changes nothing.
    assert_eq!(
        call(&api, "POST", "/api/hosts/hv1/netboot/off", "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert!(f.services.inventory().get(HV1.parse().unwrap()).await.unwrap().netboot);
    assert_eq!(
        call(&f.boot_router(), "POST", "/api/hosts/hv1/reinstall", "").await.0,
        StatusCode::NOT_FOUND
    );
    // The BMC, reload and adopt routes too: refused without the token, absent from boot
    // listeners.
    for (method, path) in [
        ("GET", "/api/bmc"),
        ("POST", "/api/hosts/hv1/power/off"),
        ("POST", "/api/hosts/hv1/reinstall?power=true"),
        ("POST", "/api/reload"),
        ("POST", "/api/hosts/52:54:00:00:00:99/adopt"),
    ] {
        assert_eq!(call(&api, method, path, "").await.0, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            call(&f.boot_router(), method, path, "").await.0,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert!(f.services.http_stats().snapshot()["refused_unauthenticated"] >= 18);
    let (_, hosts) = call_as(&api, "GET", "/api/hosts", "", Some(&bearer)).await;
    let hosts: serde_json::Value = serde_json::from_str(&hosts).unwrap();
    assert_eq!(hosts.as_array().unwrap().len(), 2, "{hosts:#}");
}

/// A TFTP read over a real UDP socket on loopback: a file from the assets directory and a
/// pxelinux file rendered for the host by the boot policy.
#[tokio::test]
async fn tftp_serves_assets_and_generated_files_on_loopback() {
    let f = fixture();
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::new(f.services.tftp().unwrap()).serve(server, stop_rx));

    let read = |name: &'static str| tftp_read(addr, "127.0.0.11", name);
    assert_eq!(read("hello.txt").await.unwrap(), b"hello from provd\n");
    let cfg = String::from_utf8(read("pxelinux.cfg/01-52-54-00-7f-00-01").await.unwrap()).unwrap();
    assert!(cfg.contains("el9/vmlinuz") && cfg.contains("token="), "{cfg}");
    assert!(read("../provd.toml").await.is_err());
    // Debian's signed GRUB (the Secure Boot chain) reads one name for every machine: it is
    // rendered for the asker (hv1, by its reservation), and refused to an address that
    // holds nothing here.
    let grub = String::from_utf8(read("grub/grub.cfg").await.unwrap()).unwrap();
    assert!(
        grub.contains("# provd: hv1 (install)") && grub.contains("(tftp,") && grub.contains("el9/vmlinuz"),
        "{grub}"
    );
    assert!(tftp_read(addr, "127.0.0.77", "grub/grub.cfg").await.is_err());
    assert!(f.services.tftp_stats().snapshot()["requests"] >= 3);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// Issue 34: one generation per TFTP request. The server asks for its scope (admission and
/// generated files of one generation) exactly once per request: three reads, one refusal,
/// four scopes, and the rendered file came from that scope (the server has no other).
#[tokio::test]
async fn tftp_asks_one_generation_per_request() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    struct Counting {
        inner: provd::boot::BootSource,
        asked: AtomicUsize,
    }
    impl provd::tftp::Scopes for Counting {
        fn scope(&self) -> Arc<dyn provd::tftp::Scope> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.inner.scope()
        }
    }
    let f = fixture();
    let counting = Arc::new(Counting {
        inner: f.services.boot().clone(),
        asked: AtomicUsize::new(0),
    });
    let server = provd::tftp::TftpServer::new(
        f.services.assets_root().to_path_buf(),
        Arc::new(provd::tftp::NoGenerated),
        f.services.tftp_stats().clone(),
    )
    .unwrap()
    .with_scopes(counting.clone());
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::new(server).serve(sock, stop_rx));
    let read = |from: &'static str, name: &'static str| tftp_read(addr, from, name);
    assert_eq!(read("127.0.0.11", "hello.txt").await.unwrap(), b"hello from provd\n");
    let cfg = String::from_utf8(read("127.0.0.11", "pxelinux.cfg/01-52-54-00-7f-00-01").await.unwrap()).unwrap();
    assert!(cfg.contains("el9/vmlinuz"), "{cfg}");
    assert!(read("127.0.0.11", "grub.cfg-01-52-54-00-7f-00-01").await.is_ok());
    assert!(read("127.0.0.77", "hello.txt").await.is_err(), "no lease: refused");
    assert_eq!(counting.asked.load(Ordering::SeqCst), 4);
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// A whole TFTP read of `name` from `server`, as the machine at `from` (lockstep, 512-byte
/// blocks); the server's ERROR when it refuses.
async fn tftp_read(server: SocketAddr, from: &str, name: &str) -> Result<Vec<u8>, (u16, String)> {
    let client = UdpSocket::bind((from, 0)).await.unwrap();
    let rrq = tftp::encode(&Packet::Request {
        write: false,
        filename: name.into(),
        mode: "octet".into(),
        options: Vec::new(),
    });
    client.send_to(&rrq, server).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let (n, tid) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        match tftp::decode(&buf[..n]).unwrap() {
            Packet::Data { block, data } => {
                got.extend_from_slice(&data);
                client
                    .send_to(&tftp::encode(&Packet::Ack { block }), tid)
                    .await
                    .unwrap();
                if data.len() < 512 {
                    return Ok(got);
                }
            }
            Packet::Error { code, message } => return Err((code, message)),
            other => panic!("{other:?}"),
        }
    }
}

/// The boot policy is one thing every protocol asks (pixiecore's `booterFunc`): with a fake
/// in place of the config's and the inventory's, DHCP names the fake's first-stage file,
/// and HTTP and TFTP give the script it decides. hv1 is a fresh host with a profile, which
/// the standard policy would install; the fake boots it from its disk.
#[tokio::test]
async fn every_protocol_asks_the_one_boot_policy() {
    use provd::boot::firmware::{BootAnswer, DhcpAsk, DhcpBoot, DhcpPolicy};
    use provd::boot::policy::{BootPolicy, DecisionFuture, ScriptAsk};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Fake {
        dhcp: AtomicUsize,
        scripts: AtomicUsize,
    }
    impl DhcpPolicy for Fake {
        fn dhcp(&self, ask: &DhcpAsk<'_>) -> DhcpBoot {
            self.dhcp.fetch_add(1, Ordering::Relaxed);
            DhcpBoot::Boot(BootAnswer::Tftp(format!("fake-{}.efi", ask.site.name)))
        }
    }
    impl BootPolicy for Fake {
        fn script<'a>(&'a self, _ask: ScriptAsk<'a>) -> DecisionFuture<'a> {
            self.scripts.fetch_add(1, Ordering::Relaxed);
            Box::pin(async { Ok(provd::inventory::BootDecision::LocalDisk) })
        }
    }
    let fake = Arc::new(Fake::default());
    let f = fixture_with(common::Workdir::new(), None, Some(fake.clone()));

    // DHCP: an unknown machine's DISCOVER through the relay gets the fake's file.
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let shared = relayed_shared(&f, relay.local_addr().unwrap().port(), false);
    let ingress = f.services.leases().ingresses()[0].clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let dhcp = tokio::spawn(provd::dhcp::server::serve_socket(
        shared,
        server,
        ingress,
        stop_rx.clone(),
    ));
    relay
        .send_to(
            &relayed(MessageType::Discover, [0x52, 0x54, 0, 0x7f, 9, 9], Vec::new()),
            server_addr,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
        .await
        .expect("an OFFER")
        .unwrap();
    let offer = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
    let file = offer
        .fname_str()
        .and_then(|r| r.ok())
        .map(|f| f.trim_end_matches('\0').to_string());
    assert_eq!(file.as_deref(), Some("fake-loop.efi"));

    // HTTP: hv1's script, asked from its reserved address.
    let (status, script) = call(&f.boot_router(), "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        script.contains("boots from its local disk") && !script.contains("token="),
        "{script}"
    );

    // TFTP: hv1's pxelinux file.
    let tftp_sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let tftp_addr = tftp_sock.local_addr().unwrap();
    let tftp = tokio::spawn(Arc::new(f.services.tftp().unwrap()).serve(tftp_sock, stop_rx));
    let cfg = String::from_utf8(
        tftp_read(tftp_addr, "127.0.0.11", &format!("pxelinux.cfg/01-{HV1_PATH}"))
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(!cfg.contains("token=") && !cfg.contains("el9/vmlinuz"), "{cfg}");

    assert!(fake.dhcp.load(Ordering::Relaxed) >= 1, "DHCP did not ask the policy");
    assert_eq!(fake.scripts.load(Ordering::Relaxed), 2, "HTTP and TFTP each asked once");
    stop_tx.send(true).unwrap();
    dhcp.await.unwrap();
    tftp.await.unwrap();
}

/// One address may not take the whole TFTP server: past MAX_TRANSFERS_PER_CLIENT open
/// transfers it is refused with an ERROR (counted); another address is still served.
#[tokio::test]
async fn tftp_caps_transfers_per_client_address() {
    let f = fixture();
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::new(f.services.tftp().unwrap()).serve(server, stop_rx));
    let cap = provd::tftp::MAX_TRANSFERS_PER_CLIENT;
    let rrq = tftp::encode(&Packet::Request {
        write: false,
        filename: "el9/vmlinuz".into(),
        mode: "octet".into(),
        options: Vec::new(),
    });
    // cap + 6 transfers from one address that never acknowledge: each holds its slot.
    let mut clients = Vec::new();
    for _ in 0..cap + 6 {
        let c = UdpSocket::bind("127.0.0.44:0").await.unwrap();
        c.send_to(&rrq, addr).await.unwrap();
        clients.push(c);
    }
    let (mut data, mut refused) = (0, 0);
    for c in &clients {
        let mut buf = [0u8; 1024];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), c.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        match tftp::decode(&buf[..n]).unwrap() {
            Packet::Data { block: 1, .. } => data += 1,
            Packet::Error { message, .. } => {
                assert!(message.contains("too many transfers"), "{message}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((data, refused), (cap, 6));
    assert_eq!(f.services.tftp_stats().snapshot()["refused_per_client"], 6);
    // Another machine is not affected.
    let other = UdpSocket::bind("127.0.0.45:0").await.unwrap();
    other.send_to(&rrq, addr).await.unwrap();
    let mut buf = [0u8; 1024];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), other.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        tftp::decode(&buf[..n]).unwrap(),
        Packet::Data { block: 1, .. }
    ));
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// What the DHCP loop shares, answering relays at `relay_port` on loopback.
fn relayed_shared(f: &Fixture, relay_port: u16, journal: bool) -> provd::dhcp::server::Shared {
    provd::dhcp::server::Shared {
        ports: provd::dhcp::server::ReplyPorts {
            client: 1, // never used: every answer goes to the relay
            server: relay_port,
        },
        leases: f.services.leases().clone(),
        generations: f.services.generations().clone(),
        store: f.services.store().clone(),
        stats: f.services.dhcp_stats().clone(),
        observer: None,
        journal: journal.then(|| f.services.journal().clone()),
        failover_updates: Arc::new(Default::default()),
        persists: Default::default(),
    }
}

fn relayed(kind: MessageType, mac: [u8; 6], extra: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest);
    m.set_chaddr(&mac);
    m.set_giaddr(Ipv4Addr::LOCALHOST);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    for o in extra {
        m.opts_mut().insert(o);
    }
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    b
}

/// The DHCP receive loop on a loopback socket, with the test playing a relay (giaddr
/// 127.0.0.1): DORA for a reserved host, the lease durable in the store before the ACK.
#[tokio::test]
async fn dhcp_dora_through_a_relay_on_loopback_persists_before_the_ack() {
    let f = fixture();
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let shared = relayed_shared(&f, relay.local_addr().unwrap().port(), true);
    let ingress = f.services.leases().ingresses()[0].clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(provd::dhcp::server::serve_socket(shared, server, ingress, stop_rx));

    let mac = [0x52, 0x54, 0, 0x7f, 0, 1];
    let exchange = |bytes: Vec<u8>| {
        let relay = &relay;
        async move {
            relay.send_to(&bytes, server_addr).await.unwrap();
            let mut buf = [0u8; 1500];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), relay.recv_from(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            Message::decode(&mut Decoder::new(&buf[..n])).unwrap()
        }
    };
    let offer = exchange(relayed(
        MessageType::Discover,
        mac,
        vec![DhcpOption::ClientSystemArchitecture(7.into())],
    ))
    .await;
    assert_eq!(offer.yiaddr(), Ipv4Addr::new(127, 0, 0, 11), "the reservation");
    assert!(matches!(
        offer.opts().get(OptionCode::MessageType),
        Some(DhcpOption::MessageType(MessageType::Offer))
    ));
    assert_eq!(offer.fname_str().unwrap().unwrap().trim_end_matches('\0'), "ipxe.efi");
    let ack = exchange(relayed(
        MessageType::Request,
        mac,
        vec![
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
            DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST),
        ],
    ))
    .await;
    assert!(matches!(
        ack.opts().get(OptionCode::MessageType),
        Some(DhcpOption::MessageType(MessageType::Ack))
    ));
    // Durable before the ACK left: the store has it now.
    let stored = f.services.store().load_leases().unwrap();
    assert!(
        stored
            .iter()
            .any(|r| r.ip == offer.yiaddr() && r.mac == Some(HV1.parse().unwrap()))
    );
    assert_eq!(f.services.leases().mac_of(offer.yiaddr()), Some(HV1.parse().unwrap()));

    // A forged giaddr from a source the site does not list as a relay: no answer, counted.
    let impostor = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    impostor
        .send_to(
            &relayed(MessageType::Discover, [0x52, 0x54, 0, 0x7f, 0, 0x66], vec![]),
            server_addr,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let answered = tokio::time::timeout(Duration::from_millis(500), relay.recv_from(&mut buf)).await;
    assert!(answered.is_err(), "an untrusted relay's request was answered");
    assert_eq!(f.services.dhcp_stats().snapshot()["dropped_untrusted_relay"], 1);

    // Garbage is counted and dropped; the loop keeps serving.
    relay.send_to(b"not dhcp", server_addr).await.unwrap();
    let offer2 = exchange(relayed(MessageType::Discover, [0x52, 0x54, 0, 0x7f, 0, 0x55], vec![])).await;
    assert!((100..=150).contains(&offer2.yiaddr().octets()[3]));
    // A client's hostname (option 12) with terminal escapes is stored cleaned: it is shown on
    // operators' terminals (`provd leases list`).
    let ack2 = exchange(relayed(
        MessageType::Request,
        [0x52, 0x54, 0, 0x7f, 0, 0x55],
        vec![
            DhcpOption::RequestedIpAddress(offer2.yiaddr()),
            DhcpOption::ServerIdentifier(Ipv4Addr::LOCALHOST),
            DhcpOption::Hostname("pc\u{1b}]0;owned\u{7}\u{1b}[2J".into()),
        ],
    ))
    .await;
    assert_eq!(ack2.yiaddr(), offer2.yiaddr());
    let stored = f.services.store().load_leases().unwrap();
    let named = stored.iter().find(|r| r.ip == offer2.yiaddr()).expect("stored");
    assert_eq!(named.hostname.as_deref(), Some("pc\u{FFFD}]0;owned\u{FFFD}\u{FFFD}[2J"));
    let stats = f.services.dhcp_stats().snapshot();
    assert_eq!(
        stats["malformed_truncated"] + stats["malformed_bad_cookie"],
        1,
        "{stats:?}"
    );
    stop_tx.send(true).unwrap();
    task.await.unwrap();
}

/// A full disk under the state directory is a 507 with its kind, on the admin API and on
/// the boot listener alike (it was the same 500 as a template bug), and nothing changes.
#[tokio::test]
async fn a_full_disk_answers_507_with_its_kind() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let work = common::Workdir::new();
    let disk = common::Tmpfs::mount(&work.path("state"), "4m");
    let f = fixture_in(work, Some(disk.dir.clone()));
    let (api, boot) = (f.api_router(), f.boot_router());
    let bearer = f.services.api_token().bearer();
    disk.fill();

    let (status, body) = call_as(&api, "POST", "/api/hosts/hv1/netboot/off", "", Some(&bearer)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "disk-full", "{body}");
    let (_, host) = call_as(&api, "GET", "/api/hosts/hv1", "", Some(&bearer)).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&host).unwrap()["netboot"],
        true
    );
    // A drain marks the host first: that write failing is the disk's 507 too (issue 34: it
    // was text, answered 409 like a host that is not ready).
    // (Any directory: a drain only needs the pool to have one before it marks the host.)
    f.services.pool().set_pki_dir(std::env::temp_dir());
    let (status, body) = call_as(&api, "POST", "/api/hypervisors/hv1/drain", "", Some(&bearer)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["kind"],
        "disk-full"
    );

    // The install script needs a token, which must be durable before it is handed out.
    let (status, script) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{script}");
    assert_eq!(script, "provd could not record this now (disk full)\n");
    assert!(!script.contains("token="));
}

/// A boot listener on a real socket: `path` requested raw, with zero-copy assets in front
/// of the router (`fast`) or the router alone.
async fn listener(f: &Fixture, fast: bool) -> (SocketAddr, tokio::sync::watch::Sender<bool>) {
    use provd::http::listen::{self, Transport};
    let state = f
        .services
        .app_state(&provd::daemon::Peers::default(), Some("loop".into()));
    let assets: Option<provd::http::zero_copy::Files> = fast.then(|| Arc::new(state.clone()) as _);
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stats = f.services.http_stats().clone();
    tokio::spawn(listen::serve(
        socket,
        provd::http::boot_router(state),
        listen::BOOT_LIMITS,
        stopped,
        move |why: listen::Refused| why.counter(&stats).inc(),
        Transport::Plain { assets },
        // The daemon's admission: leased, reserved, or in `tftp_open`.
        Some(Arc::new(f.services.boot().clone())),
    ));
    (addr, stop)
}

/// A TCP connection to `addr` from the local address `from` (any 127/8 address works on
/// loopback).
async fn connect_from(from: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Issue 34: the boot listener admits the addresses TFTP does. An address with no lease,
/// no reservation and outside `tftp_open` is closed at accept without a byte of answer
/// (counted `refused_no_lease`); the reserved host and an open-prefix address are served.
#[tokio::test]
async fn the_boot_listener_closes_addresses_without_a_lease_at_accept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let f = fixture();
    for fast in [true, false] {
        let (addr, _stop) = listener(&f, fast).await;
        let before = f.services.http_stats().snapshot()["refused_no_lease"];
        let ask = |from: &'static str| async move {
            let mut s = connect_from(from, addr).await;
            let _ = s
                .write_all(b"GET /assets/hello.txt HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
                .await
                .expect("the server closes");
            String::from_utf8_lossy(&got).into_owned()
        };
        let stranger = ask("127.0.0.77").await;
        assert_eq!(stranger, "", "an unleased address got an answer");
        assert_eq!(f.services.http_stats().snapshot()["refused_no_lease"], before + 1);
        for admitted in ["127.0.0.11", "127.0.0.33"] {
            let got = ask(admitted).await;
            assert!(
                got.starts_with("HTTP/1.1 200") && got.ends_with("hello from provd\n"),
                "{admitted}: {got}"
            );
        }
    }
}

/// One response parsed from raw bytes: status line, headers (lowercase names, `date`
/// left out: it is the clock), body by content-length.
#[derive(Debug, PartialEq)]
struct RawResponse {
    status: String,
    headers: std::collections::BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Everything the server answered to `requests` sent in one write, until it closed.
async fn raw_exchange(addr: SocketAddr, requests: &str, head_only: bool) -> Vec<RawResponse> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // From an address the boot listener admits (the fixture's `tftp_open`).
    let mut s = connect_from("127.0.0.33", addr).await;
    s.write_all(requests.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all))
        .await
        .expect("the server closes after a connection: close request")
        .unwrap();
    let mut out = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head") + 4;
        let head = std::str::from_utf8(&rest[..end]).unwrap();
        let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
        let status = lines.next().unwrap().to_string();
        let headers: std::collections::BTreeMap<String, String> = lines
            .map(|l| l.split_once(": ").unwrap())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .filter(|(k, _)| k != "date")
            .collect();
        let len: usize = if head_only {
            0
        } else {
            headers.get("content-length").map_or(0, |v| v.parse().unwrap())
        };
        out.push(RawResponse {
            status,
            headers,
            body: rest[end..end + len].to_vec(),
        });
        rest = &rest[end + len..];
    }
    out
}

/// The zero-copy path answers kernels and images exactly as the router did (status,
/// headers but the date, bytes), pipelined and with ranges, and leaves every unusual
/// request to the router: conditions, several ranges, escapes, HTTP/1.0, missing files.
#[tokio::test]
async fn zero_copy_assets_answer_as_the_router_does() {
    let f = fixture();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(f.services.assets_root().join("el9/initrd.img"), &big).unwrap();
    let (fast, _stop_fast) = listener(&f, true).await;
    let (router, _stop_router) = listener(&f, false).await;
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let close = "Connection: close\r\n";
    let cases: Vec<(String, bool, u64)> = vec![
        // (requests in one write, HEAD, how many the fast path serves)
        (get("/assets/el9/initrd.img", close), false, 1),
        (
            get("/assets/el9/vmlinuz", "Range: bytes=100-199\r\nConnection: close\r\n"),
            false,
            1,
        ),
        (
            get("/assets/el9/initrd.img", "Range: bytes=-5000\r\nConnection: close\r\n"),
            false,
            1,
        ),
        (
            format!("HEAD /assets/hello.txt HTTP/1.1\r\nHost: x\r\n{close}\r\n"),
            true,
            1,
        ),
        // Pipelined: two answers on one connection, then the close.
        (
            format!("{}{}", get("/assets/hello.txt", ""), get("/assets/el9/vmlinuz", close)),
            false,
            2,
        ),
        // Served by the router: after the fast one, on the same connection.
        (
            format!(
                "{}{}",
                get("/assets/hello.txt", ""),
                get(
                    "/assets/hello.txt",
                    "If-Modified-Since: Sun, 01 Jan 2090 00:00:00 GMT\r\nConnection: close\r\n"
                )
            ),
            false,
            1,
        ),
        (
            get("/assets/el9/vmlinuz", "Range: bytes=0-1,5-9\r\nConnection: close\r\n"),
            false,
            0,
        ),
        (
            get("/assets/el9/vmlinuz", "Range: bytes=9000-\r\nConnection: close\r\n"),
            false,
            0,
        ),
        (get("/assets/%2e%2e/provd.toml", close), false, 0),
        (get("/assets/el9/../../state/provd.redb", close), false, 0),
        (get("/assets/missing", close), false, 0),
        (get("/assets/el9", close), false, 0),
        ("GET /assets/hello.txt HTTP/1.0\r\n\r\n".to_string(), false, 0),
    ];
    for (requests, head_only, served_fast) in cases {
        let before = f.services.http_stats().get("assets_sendfile");
        let expected = raw_exchange(router, &requests, head_only).await;
        assert_eq!(
            f.services.http_stats().get("assets_sendfile"),
            before,
            "the router alone: {requests:?}"
        );
        let got = raw_exchange(fast, &requests, head_only).await;
        assert_eq!(got, expected, "{requests:?}");
        assert_eq!(
            f.services.http_stats().get("assets_sendfile") - before,
            served_fast,
            "{requests:?}"
        );
    }
    let whole = raw_exchange(fast, &get("/assets/el9/initrd.img", close), false).await;
    assert_eq!(whole[0].body, big, "every byte, in order");
    // The journal records fast answers as it does the router's.
    let ranges = f
        .services
        .journal()
        .events(None)
        .into_iter()
        .filter(|e| matches!(&e.step, provd::journal::Step::HttpAsset { range: Some(r), .. } if r == "bytes=-5000"))
        .count();
    assert_eq!(ranges, 2, "one from each listener");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A reload while boot scripts are being served: every answer comes whole from one config
/// generation. Generation A installs hv1 with profile `el9` and the iPXE template marked A;
/// generation B with profile `el9b` (another kernel) and the template marked B. An answer
/// that takes its host from one generation and its template or profile from the other
/// (the old `Live<Config>` + renderer + host index swapped one after another) fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reload_during_boot_requests_never_mixes_two_generations() {
    let work = common::Workdir::new();
    let (state, assets, templates) = (work.path("state"), work.path("assets"), work.path("templates"));
    for kernel in ["el9/vmlinuz", "el9b/vmlinuz"] {
        std::fs::create_dir_all(assets.join(kernel).parent().unwrap()).unwrap();
        std::fs::write(assets.join(kernel), b"kernel").unwrap();
    }
    copy_tree(&common::repo("templates"), &templates);
    let ipxe = templates.join("ipxe/boot.ipxe.j2");
    let ipxe_text = std::fs::read_to_string(&ipxe).unwrap();
    let site = common::builder::fixture("loopback");
    let hv1_el9 = "hostname = \"hv1\"\nip = \"127.0.0.11\"\nprofile = \"el9\"";
    assert!(site.contains(hv1_el9), "the loopback fixture names hv1's profile");
    let config_path = work.path("provd.toml");
    // Generation `g` (0: A, 1: B): its config file and its iPXE template.
    let write_generation = |g: usize| {
        let (profile, marker) = [("el9", "A"), ("el9b", "B")][g];
        let text = format!(
            "[daemon]\ntemplates_dir = \"{}\"\nassets_dir = \"{}\"\napi_listen = \"127.0.0.1:6767\"\n\
             state_dir = \"{}\"\n\n[profiles.el9b]\nos = \"el9\"\nkernel = \"el9b/vmlinuz\"\n\
             initrd = \"el9b/initrd.img\"\nkickstart = \"kickstart/el-generic.ks.j2\"\n\n{}",
            templates.display(),
            assets.display(),
            state.display(),
            site.replace(hv1_el9, &hv1_el9.replace("\"el9\"", &format!("\"{profile}\""))),
        );
        std::fs::write(&config_path, text).unwrap();
        std::fs::write(&ipxe, format!("{ipxe_text}\n# template {marker}\n")).unwrap();
    };
    write_generation(0);
    let cfg = provd::config::load(std::slice::from_ref(&config_path)).unwrap();
    let services = Services::build(Arc::new(cfg), std::slice::from_ref(&config_path), &[], &state).unwrap();
    let boot = provd::http::boot_router(services.app_state(&provd::daemon::Peers::default(), Some("loop".into())));

    /// Which generation an answer is wholly from, or why it is from none.
    fn generation_of(script: &str) -> Result<usize, String> {
        let a = (
            script.contains("with profile el9 "),
            script.contains("/assets/el9/vmlinuz"),
            script.contains("# template A"),
        );
        let b = (
            script.contains("with profile el9b "),
            script.contains("/assets/el9b/vmlinuz"),
            script.contains("# template B"),
        );
        match (a, b) {
            ((true, true, true), (false, false, false)) => Ok(0),
            ((false, false, false), (true, true, true)) => Ok(1),
            _ => Err(format!("A parts {a:?}, B parts {b:?}:\n{script}")),
        }
    }
    let (status, first) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert_eq!((status, generation_of(&first)), (StatusCode::OK, Ok(0)), "{first}");

    let reloading = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut askers = Vec::new();
    for _ in 0..6 {
        let (boot, reloading) = (boot.clone(), reloading.clone());
        askers.push(tokio::spawn(async move {
            let mut seen = [0usize; 2];
            while reloading.load(std::sync::atomic::Ordering::Relaxed) {
                let (status, script) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
                assert_eq!(status, StatusCode::OK, "{script}");
                match generation_of(&script) {
                    Ok(g) => seen[g] += 1,
                    Err(mixed) => panic!("a mixed answer: {mixed}"),
                }
            }
            seen
        }));
    }
    const RELOADS: u64 = 24;
    for n in 1..=RELOADS {
        write_generation((n % 2) as usize);
        let report = services.reloader().reload().await.expect("reload");
        assert_eq!(report.generation, n);
        // Let requests run under this generation before the next reload.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reloading.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut seen = [0usize; 2];
    for asker in askers {
        let s = asker.await.expect("no asker saw a mixed answer");
        seen = [seen[0] + s[0], seen[1] + s[1]];
    }
    assert!(seen[0] > 0 && seen[1] > 0, "answers from both generations: {seen:?}");
    // The last reload (24, even) published A again.
    let (_, last) = call(&boot, "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    assert_eq!(generation_of(&last), Ok(0), "{last}");
    assert_eq!(services.generations().current().number, RELOADS);
}

/// One request to `router` with extra headers; status, headers and body.
async fn call_with(
    router: &axum::Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body.to_string()))
        .unwrap();
    for (k, v) in headers {
        let name = axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:50000".parse::<SocketAddr>().unwrap()));
    let resp = router.clone().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8_lossy(&bytes).into_owned())
}

/// The web console: refused (a sign-in page) without credentials, a session cookie for the
/// right token only, the page and the API with it, changes only with the console's header,
/// never on a boot listener.
#[tokio::test]
async fn the_console_needs_the_token_and_its_cookie_changes_nothing_without_its_header() {
    let f = fixture();
    let api = f.api_router();
    let (status, _, body) = call_with(&api, "GET", "/console", &[], "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.contains("action=\"/console/login\"") && !body.contains("app.js"),
        "{body}"
    );
    assert_eq!(
        call_with(&api, "GET", "/console/app.js", &[], "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_with(&api, "GET", "/api/console/stream", &[], "").await.0,
        StatusCode::UNAUTHORIZED
    );

    let form = [("content-type", "application/x-www-form-urlencoded")];
    let (status, headers, _) = call_with(&api, "POST", "/console/login", &form, "token=0000").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.get("set-cookie").is_none());
    // A forged cookie is nobody's session.
    let forged = [("cookie", "provd_console=00000000000000000000000000000000")];
    assert_eq!(
        call_with(&api, "GET", "/console", &forged, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_with(&api, "GET", "/api/hosts", &forged, "").await.0,
        StatusCode::UNAUTHORIZED
    );

    let token = f.services.api_token().bearer();
    let token = token.strip_prefix("Bearer ").unwrap();
    let (status, headers, _) = call_with(&api, "POST", "/console/login", &form, &format!("token={token}")).await;
    assert_eq!(
        (status, headers.get("location").unwrap().to_str().unwrap()),
        (StatusCode::SEE_OTHER, "/console")
    );
    let set = headers.get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains(token),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let with = [("cookie", cookie.as_str())];

    let (status, _, page) = call_with(&api, "GET", "/console", &with, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("/console/app.js") && page.contains("Boot journal"),
        "{page}"
    );
    let (status, headers, script) = call_with(&api, "GET", "/console/app.js", &with, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/javascript"));
    assert!(script.contains("EventSource(\"/api/console/stream\")"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN: everything is embedded"
    );
    assert_eq!(call_with(&api, "GET", "/api/hosts", &with, "").await.0, StatusCode::OK);
    // A wrong bearer header beside a good cookie is refused on both: one rule for both.
    let mixed = [("cookie", cookie.as_str()), ("authorization", "Bearer wrong")];
    assert_eq!(
        call_with(&api, "GET", "/api/hosts", &mixed, "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_with(&api, "GET", "/console", &mixed, "").await.0,
        StatusCode::UNAUTHORIZED
    );

    // A change with the cookie alone (what a cross-site form would send) is refused and
    // changes nothing; with the console's header it goes through.
    let (status, _, body) = call_with(&api, "POST", "/api/hosts/hv1/netboot/off", &with, "").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (_, host) = call_as(
        &api,
        "GET",
        "/api/hosts/hv1",
        "",
        Some(&f.services.api_token().bearer()),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&host).unwrap()["netboot"],
        true
    );
    let both = [("cookie", cookie.as_str()), ("x-provd-console", "1")];
    assert_eq!(
        call_with(&api, "POST", "/api/hosts/hv1/netboot/off", &both, "").await.0,
        StatusCode::OK
    );

    // The boot listener has no console.
    assert_eq!(
        call_with(&f.boot_router(), "GET", "/console", &with, "").await.0,
        StatusCode::NOT_FOUND
    );

    // Signing out ends the session.
    let (status, headers, _) = call_with(&api, "POST", "/console/logout", &with, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    assert_eq!(
        call_with(&api, "GET", "/console", &with, "").await.0,
        StatusCode::UNAUTHORIZED
    );
}

/// Issue 34: renewal asks the host's profile again. hv1's profile (el9) declares no
/// certificates, so a renewal from hv1's own address is refused for that reason, before any
/// key or CSR is looked at.
#[tokio::test]
async fn renewal_is_refused_when_the_profile_declares_no_such_certificate() {
    let f = fixture();
    let boot = f.boot_router();
    for role in ["server", "client"] {
        let (status, body) = call(&boot, "POST", &format!("/pki/renew/hv1?role={role}"), "not looked at").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert!(body.contains(&format!("declares no {role} certificate")), "{body}");
    }
}

/// Open `/api/console/stream` with `headers`; returns a reader of its events as
/// (event name, data), or None once the stream has ended.
async fn open_console_stream(
    f: &Fixture,
    headers: &[(&str, &str)],
) -> impl FnMut() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<(String, String)>>>> + use<> {
    use futures_util::StreamExt;
    let mut req = Request::builder().uri("/api/console/stream");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut req = req.body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:50000".parse::<SocketAddr>().unwrap()));
    let resp = f.api_router().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{headers:?}");
    let body = Arc::new(tokio::sync::Mutex::new((
        resp.into_body().into_data_stream(),
        String::new(),
    )));
    move || {
        let body = body.clone();
        Box::pin(async move {
            let mut guard = body.lock().await;
            let (stream, text) = &mut *guard;
            loop {
                if let Some(end) = text.find("\n\n") {
                    let event = text[..end].to_string();
                    *text = text[end + 2..].to_string();
                    let name = event.lines().find_map(|l| l.strip_prefix("event: "));
                    let data: String = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                    match name {
                        Some(n) => return Some((n.to_string(), data)),
                        None => continue, // a keep-alive comment
                    }
                }
                let next = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .expect("an event or the end within 10 s")?;
                text.push_str(&String::from_utf8_lossy(&next.unwrap()));
            }
        })
    }
}

/// Issue 34: the stream asks for its credential again before every snapshot. A signed-out
/// session's stream ends with the reason; an expiring session's stream ends at its expiry;
/// the token's stream goes on.
#[tokio::test]
async fn the_console_stream_ends_when_its_session_is_signed_out_or_expires() {
    let f = fixture();
    let now = provd::clock::unix_now();
    let signed_out = f.services.console().open(now);
    let cookie = format!("provd_console={signed_out}");
    let mut events = open_console_stream(&f, &[("cookie", &cookie)]).await;
    assert_eq!(events().await.unwrap().0, "snapshot");
    f.services.console().close(&signed_out);
    let (name, why) = events().await.expect("an ended event");
    assert_eq!(name, "ended");
    assert!(why.contains("session ended"), "{why}");
    assert!(events().await.is_none(), "nothing after it: the stream is over");

    // A session with 2 s left: snapshots, then the end, without anyone signing out.
    let now = provd::clock::unix_now();
    let expiring = f.services.console().open(now + 2 - provd::http::session::SESSION_TTL);
    let cookie = format!("provd_console={expiring}");
    let mut events = open_console_stream(&f, &[("cookie", &cookie)]).await;
    let mut seen = Vec::new();
    while let Some((name, _)) = events().await {
        seen.push(name);
    }
    assert_eq!(seen.first().map(String::as_str), Some("snapshot"), "{seen:?}");
    assert_eq!(seen.last().map(String::as_str), Some("ended"), "{seen:?}");
    assert!(
        provd::clock::unix_now() >= now + 2,
        "it ended at the expiry, not before"
    );

    // The bearer token does not lapse: two snapshots in a row.
    let bearer = f.services.api_token().bearer();
    let mut events = open_console_stream(&f, &[("authorization", &bearer)]).await;
    for _ in 0..2 {
        assert_eq!(events().await.unwrap().0, "snapshot");
    }
}

/// The console's live stream: a snapshot at once (hosts without their install tokens, the
/// journal), then another when the journal records something, not a poll per second.
#[tokio::test]
async fn the_console_stream_sends_a_snapshot_and_another_when_the_journal_moves() {
    use futures_util::StreamExt;
    let f = fixture();
    let api = f.api_router();
    // hv1 gets an install token first: the snapshot must not carry it.
    let (_, script) = call(&f.boot_router(), "GET", &format!("/boot/{HV1_PATH}.ipxe"), "").await;
    let token = token_in(&script);
    let mut req = Request::builder()
        .uri("/api/console/stream")
        .header("authorization", f.services.api_token().bearer())
        .body(Body::empty())
        .unwrap();
    req.extensions_mut()
        .insert(ConnectInfo("127.0.0.1:50000".parse::<SocketAddr>().unwrap()));
    let resp = api.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut body = resp.into_body().into_data_stream();
    let mut next_snapshot = async || -> serde_json::Value {
        let mut text = String::new();
        loop {
            let data = tokio::time::timeout(Duration::from_secs(10), body.next())
                .await
                .expect("data within 10 s")
                .expect("the stream stays open")
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&data));
            if let Some(end) = text.find("\n\n") {
                let event = text[..end].to_string();
                if event.starts_with("event: snapshot") {
                    let data: String = event.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
                    return serde_json::from_str(&data).unwrap();
                }
                text = text[end + 2..].to_string();
            }
        }
    };
    let first = next_snapshot().await;
    let hv1 = first["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "hv1")
        .unwrap()
        .clone();
    assert!(
        hv1["install"].is_null() && !first.to_string().contains(&token),
        "no install token in the console"
    );
    let before = first["events"].as_array().unwrap().len();
    // The journal moves: the next snapshot comes (within the 1 s pace, not the 5 s idle).
    let started = std::time::Instant::now();
    call(&f.boot_router(), "GET", "/assets/hello.txt", "").await;
    let second = next_snapshot().await;
    assert!(second["events"].as_array().unwrap().len() > before, "{second}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "woken by the journal, not the idle timer"
    );
}
