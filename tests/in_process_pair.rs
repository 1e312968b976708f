//! The in-process tier for a failover pair: two `Services` in one test process, each run by
//! `daemon::serve` on loopback sockets the test bound itself (port 0), with one CA. Server A
//! (primary) is 127.0.0.1 and B (secondary) 127.0.0.2, both on `lo`, so the secondary's
//! "only the partner's address" rule is exercised as in production. No root, no
//! namespaces, no binary: what `tests/failover.rs` and `tests/replication.rs` prove with
//! real peers in namespaces, at the speed of a unit test.
//!
//! - The pair reaches NORMAL over mutual TLS; a lease one server grants through a relay
//!   shows up bound on the other (BNDUPD), both ways.
//! - The inventory replication link synchronises, and an operator's reinstall on A is in
//!   B's history.

mod common;

use common::client::{self, encode};
use dhcproto::v4::MessageType;
use provd::cli::client::Api;
use provd::daemon::{ApiListener, DhcpListeners, Listeners, PairListeners, Services};
use serde_json::Value;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

const HV1: &str = "52:54:00:7f:00:01";

/// One server of the pair, running.
struct Server {
    api: Arc<Api>,
    dhcp: SocketAddr,
    /// Where this server's DHCP answers come back (it relays to 127.0.0.1:<this port>).
    relay: UdpSocket,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn site(me: Ipv4Addr, peer: Ipv4Addr, primary: bool, failover_port: u16, replication_port: u16) -> String {
    let (role, primary_only) = if primary {
        ("primary", "mclt = 10\nsplit = 128\n")
    } else {
        ("secondary", "")
    };
    format!(
        r#"
[profiles.el9]
os = "el9"
kernel = "el9/vmlinuz"
initrd = "el9/initrd.img"
kickstart = "kickstart/el-generic.ks.j2"
vars = {{ install_url = "http://mirror.invalid/el9" }}

[sites.pair]
server_address = "{me}"
listen = [{{ interface = "lo", address = "{me}" }}]

[sites.pair.dhcp]
unknown_clients = "lease-only"
relays = ["127.0.0.1"]

[[sites.pair.subnets]]
prefix = "127.0.0.0/24"
lease_time = 600
pools = [{{ start = "127.0.0.100", end = "127.0.0.199" }}]

[[sites.pair.hosts]]
mac = "{HV1}"
hostname = "hv1"
ip = "127.0.0.11"
profile = "el9"

[sites.pair.failover]
name = "pair"
role = "{role}"
address = "{me}"
port = {failover_port}
peer_address = "{peer}"
peer_port = {failover_port}
replication_port = {replication_port}
max_response_delay = 6
load_balance_max_seconds = 3
tls = true
{primary_only}"#
    )
}

async fn start(work: &common::Workdir, name: &str, me: Ipv4Addr, text: String, pair: PairListeners) -> Server {
    let state = work.path(&format!("{name}-state"));
    let cfg = provd::config::load_from_strs(&[(work.path(&format!("{name}.toml")), text)]).unwrap();
    let services = Services::build(Arc::new(cfg), &[], &[], &state).unwrap();
    let token = provd::http::auth::read_token(&provd::http::auth::token_path(&state)).unwrap();

    let dhcp_sock = UdpSocket::bind((me, 0)).await.unwrap();
    let dhcp = dhcp_sock.local_addr().unwrap();
    let relay = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ingress = services.leases().ingresses()[0].clone();
    let api_sock = TcpListener::bind((me, 0)).await.unwrap();
    let api = Api::with_tls(
        format!("http://{}", api_sock.local_addr().unwrap()),
        Some(token),
        "the test".into(),
        None,
    );
    let listeners = Listeners {
        dhcp: DhcpListeners {
            sockets: vec![(dhcp_sock, ingress)],
            reply_ports: provd::dhcp::server::ReplyPorts {
                client: 1, // never used: every answer goes to the relay
                server: relay.local_addr().unwrap().port(),
            },
        },
        tftp: Vec::new(),
        boot_http: vec![("pair".into(), TcpListener::bind((me, 0)).await.unwrap())],
        api: ApiListener {
            socket: api_sock,
            tls: None,
        },
        pair,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(provd::daemon::serve(services, listeners, async move {
        let _ = stopped.await;
    }));
    Server {
        api: Arc::new(api),
        dhcp,
        relay,
        stop: Some(stop),
        task,
    }
}

impl Server {
    async fn get(&self, path: &str) -> Value {
        let (api, path) = (self.api.clone(), path.to_string());
        tokio::task::spawn_blocking(move || api.require(api.get::<Value>(&path).unwrap()).unwrap())
            .await
            .unwrap()
    }

    async fn post(&self, path: &str) -> Value {
        let (api, path) = (self.api.clone(), path.to_string());
        tokio::task::spawn_blocking(move || api.require(api.post::<Value>(&path).unwrap()).unwrap())
            .await
            .unwrap()
    }

    /// One relayed request and its answer, if one comes within `wait`.
    async fn ask(&self, kind: MessageType, mac: [u8; 6], xid: u32, wait: Duration) -> Option<dhcproto::v4::Message> {
        let m = client::request(kind, mac, xid, Some(Ipv4Addr::LOCALHOST));
        self.relay.send_to(&encode(&m), self.dhcp).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(wait, self.relay.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(client::decode(&buf[..n]))
    }

    /// DISCOVER then REQUEST for `mac`; the bound address, or None when this server does
    /// not answer for that client (the partner's hash bucket).
    async fn lease(&self, mac: [u8; 6], xid: u32) -> Option<Ipv4Addr> {
        let offer = self
            .ask(MessageType::Discover, mac, xid, Duration::from_millis(800))
            .await?;
        let mut req = client::request(MessageType::Request, mac, xid + 1, Some(Ipv4Addr::LOCALHOST));
        req.opts_mut()
            .insert(dhcproto::v4::DhcpOption::RequestedIpAddress(offer.yiaddr()));
        req.opts_mut()
            .insert(dhcproto::v4::DhcpOption::ServerIdentifier(client::server_id(&offer)));
        self.relay.send_to(&encode(&req), self.dhcp).await.unwrap();
        let mut buf = [0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), self.relay.recv_from(&mut buf))
            .await
            .expect("an answer to the REQUEST")
            .unwrap();
        let ack = client::decode(&buf[..n]);
        assert_eq!(client::msg_type(&ack), Some(MessageType::Ack), "{ack:?}");
        Some(ack.yiaddr())
    }

    /// Bound leases: ip -> state.
    async fn leases(&self) -> HashMap<String, String> {
        self.get("/api/leases")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["ip"].as_str().unwrap().to_string(),
                    l["state"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("serve returns after its shutdown future");
        r.unwrap().unwrap();
    }
}

async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut probe: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ca(dir: &Path) {
    provd::pki::init(dir, "in-process pair CA", 30, false).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_loopback_fail_over_leases_and_replicate_the_inventory() {
    let work = common::Workdir::new();
    std::fs::create_dir_all(work.path("assets/el9")).unwrap();
    ca(&work.path("pki"));
    let (a_ip, b_ip) = (Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2));

    // B's listeners first: A must know which ports to dial.
    let b_failover = TcpListener::bind((b_ip, 0)).await.unwrap();
    let failover_port = b_failover.local_addr().unwrap().port();
    let b_replication = TcpListener::bind((b_ip, 0)).await.unwrap();
    let replication_port = b_replication.local_addr().unwrap().port();
    let b_pair = PairListeners {
        failover: HashMap::from([("pair".to_string(), b_failover)]),
        replication: HashMap::from([("pair".to_string(), b_replication)]),
    };
    // One CA for both (still in the [daemon] table: the sites follow).
    let pki = format!("pki_dir = \"{}\"\n", work.path("pki").display());
    let a_text = common::builder::config_with(
        &work.path("assets"),
        &work.path("a-state"),
        &(pki.clone() + &site(a_ip, b_ip, true, failover_port, replication_port)),
    );
    let b_text = common::builder::config_with(
        &work.path("assets"),
        &work.path("b-state"),
        &(pki + &site(b_ip, a_ip, false, failover_port, replication_port)),
    );
    let b = start(&work, "b", b_ip, b_text, b_pair).await;
    let a = start(&work, "a", a_ip, a_text, PairListeners::default()).await;

    // NORMAL on both, each seeing the other NORMAL, over the pair's mutual TLS.
    wait_for("both normal", 60, || async {
        let (sa, sb) = (a.get("/api/failover").await, b.get("/api/failover").await);
        [&sa[0], &sb[0]]
            .iter()
            .all(|s| s["state"] == "normal" && s["partner_state"] == "normal")
            .then_some(())
    })
    .await;

    // A lease from each server reaches the other as bound (the hash buckets decide which
    // server answers a client: try MACs until each has answered one).
    let mut granted: HashMap<&str, Ipv4Addr> = HashMap::new();
    for i in 1..=40u8 {
        let mac = [0x52, 0x54, 0, 0x7f, 1, i];
        for (name, server) in [("a", &a), ("b", &b)] {
            if granted.contains_key(name) {
                continue;
            }
            if let Some(ip) = server.lease(mac, 0x1000 * i as u32).await {
                granted.insert(name, ip);
            }
        }
        if granted.len() == 2 {
            break;
        }
    }
    let (from_a, from_b) = (granted["a"], granted["b"]);
    for (other, ip) in [(&b, from_a), (&a, from_b)] {
        wait_for(&format!("{ip} bound on the partner"), 20, || async {
            (other.leases().await.get(&ip.to_string()).map(String::as_str) == Some("bound")).then_some(())
        })
        .await;
    }

    // The inventory link synchronises both ways, and an operator's action on A reaches B.
    wait_for("replication synchronised", 30, || async {
        let (ra, rb) = (a.get("/api/replication").await, b.get("/api/replication").await);
        [&ra[0], &rb[0]]
            .iter()
            .all(|r| r["connected"] == true && r["last_sync"].as_u64().unwrap_or(0) > 0)
            .then_some(())
    })
    .await;
    let before = b.get("/api/hosts/hv1").await["history"].as_array().map_or(0, Vec::len);
    a.post("/api/hosts/hv1/reinstall").await;
    let seen = wait_for("A's reinstall in B's history", 20, || async {
        let h = b.get("/api/hosts/hv1").await;
        let history = h["history"].as_array().cloned().unwrap_or_default();
        (history.len() > before).then_some(h)
    })
    .await;
    let last = seen["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["what"], "operator: reinstall", "{seen}");

    a.stop().await;
    b.stop().await;
}
