//! Issue 35's DNS against a real BIND 9 (Debian's `named`), checked with `dig`: provd keeps
//! each named host's A and PTR records in the site's zones with RFC 2136 updates signed
//! with a `tsig-keygen` key. A reserved host's records appear, move when its reservation
//! does (the old PTR goes) and go when it leaves the config, its IPAM migration address
//! with it (`hv1-migration`); a host without a reservation
//! is named at its lease; a stranger that asks for a host's name in DHCP option 12 gets no
//! record. With BIND stopped, DHCP still answers, the change waits in the queue (`provd dns`
//! exits 1 and names it, `/metrics` counts it), and it lands when BIND is back. A restart of
//! provd sends nothing again (the published names are in the store).
//!
//! Everything on loopback (provd on 127.95.0.0/24, named on 127.0.0.1 at a free port); needs named, dig and tsig-keygen (bind9,
//! bind9-dnsutils).

mod common;

use common::builder::SiteBuilder;
use common::client::{self, request};
use common::served::{Served, Sockets};
use common::{ChildGuard, Workdir, require_tools, wait_until};
use dhcproto::v4::{DhcpOption, MessageType};
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NET: u8 = 95;
const HV1: &str = "52:54:00:00:95:01";
const HV2: [u8; 6] = [0x52, 0x54, 0, 0, 0x95, 2];
const STRANGER: [u8; 6] = [0x52, 0x54, 0, 0, 0x95, 0x66];

/// BIND on its own loopback address and port, its zones in `dir`; killed on drop.
struct Bind {
    addr: Ipv4Addr,
    port: u16,
    conf: std::path::PathBuf,
    _proc: Option<ChildGuard>,
}

impl Bind {
    fn write(dir: &Path, key_file: &Path) -> Bind {
        // named serves only addresses an interface has: loopback's own, on a free port.
        let addr = Ipv4Addr::LOCALHOST;
        let port = std::net::UdpSocket::bind((addr, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let zone = |name: &str| {
            format!(
                "$TTL 60\n@ IN SOA ns.a.test. admin.a.test. 1 60 60 600 60\n@ IN NS ns.a.test.\n{}",
                if name == "a.test" {
                    format!("ns IN A {addr}\n")
                } else {
                    String::new()
                }
            )
        };
        let mut conf = format!(
            "include \"{}\";\ncontrols {{ }};\noptions {{\n  directory \"{}\";\n  listen-on port {port} {{ {addr}; }};\n  \
             listen-on-v6 {{ none; }};\n  pid-file none;\n  recursion no;\n  dnssec-validation no;\n}};\n",
            key_file.display(),
            dir.display()
        );
        for name in [
            "a.test",
            &format!("0.{NET}.10.in-addr.arpa"),
            &format!("0.{NET}.127.in-addr.arpa"),
        ] {
            std::fs::write(dir.join(format!("{name}.db")), zone(name)).unwrap();
            conf.push_str(&format!(
                "zone \"{name}\" {{ type primary; file \"{name}.db\"; allow-update {{ key \"provd-a\"; }}; }};\n"
            ));
        }
        let path = dir.join("named.conf");
        std::fs::write(&path, conf).unwrap();
        Bind {
            addr,
            port,
            conf: path,
            _proc: None,
        }
    }

    fn start(&mut self) {
        let mut cmd = Command::new("named");
        let log = std::fs::File::create(self.conf.with_file_name("named.log")).unwrap();
        cmd.args(["-g", "-4", "-c"])
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log);
        self._proc = Some(ChildGuard::spawn(&mut cmd));
        wait_until("named to answer", Duration::from_secs(20), || {
            if self._proc.as_mut().is_some_and(|p| p.exited()) {
                panic!(
                    "named exited: {}",
                    std::fs::read_to_string(self.conf.with_file_name("named.log")).unwrap()
                );
            }
            self.try_dig("a.test", "SOA")
                .is_some_and(|soa| !soa.is_empty())
                .then_some(())
        });
    }

    fn stop(&mut self) {
        self._proc = None;
    }

    /// `dig +short` at this server; None when it did not answer.
    fn try_dig(&self, name: &str, rtype: &str) -> Option<String> {
        let out = Command::new("dig")
            .args([
                &format!("@{}", self.addr),
                "-p",
                &self.port.to_string(),
                "+short",
                "+time=1",
                "+tries=1",
                name,
                rtype,
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && !text.starts_with(";;")).then_some(text)
    }

    /// The answer, which must come.
    fn dig(&self, name: &str, rtype: &str) -> String {
        self.try_dig(name, rtype)
            .unwrap_or_else(|| panic!("named does not answer {name} {rtype}"))
    }

    /// Wait until `name` `rtype` answers exactly `want` ("" for no record).
    fn expect(&self, name: &str, rtype: &str, want: &str) {
        let start = std::time::Instant::now();
        loop {
            let now = self.try_dig(name, rtype);
            if now.as_deref() == Some(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{name} {rtype}: want {want:?}, named says {now:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn site_toml(sockets: &Sockets, bind: &Bind, key: &Path, hv1_ip: Option<&str>) -> String {
    let server = Ipv4Addr::new(127, NET, 0, 1);
    let mut s = SiteBuilder::new("a", &server.to_string())
        .field(&format!("http_port = {}", sockets.http(0).port()))
        .listen("lo")
        .dhcp(&format!("relays = [\"{server}\"]"))
        .subnet(
            &format!("127.{NET}.0.0/24"),
            (&format!("127.{NET}.0.100"), &format!("127.{NET}.0.200")),
            &["domain = \"a.test\""],
        )
        .subnet(
            &format!("10.{NET}.0.0/24"),
            (&format!("10.{NET}.0.100"), &format!("10.{NET}.0.200")),
            &[],
        )
        // No reservation: named at its lease.
        .host("52:54:00:00:95:02", "hv2", &[]);
    if let Some(ip) = hv1_ip {
        s = s.host(HV1, "hv1", &[&format!("ip = \"{ip}\""), "profile = \"el9-bonded\""]);
    }
    format!(
        "{}\n[sites.a.networks.migration]\nprefix = \"10.{NET}.20.0/24\"\npool = {{ start = \"10.{NET}.20.10\", end = \"10.{NET}.20.99\" }}\n\
         [sites.a.dns]\nserver = \"{}:{}\"\nreverse_zones = [\"0.{NET}.10.in-addr.arpa\", \"0.{NET}.127.in-addr.arpa.\"]\nkey_file = \"{}\"\nttl = 60\n",
        s.toml(),
        bind.addr,
        bind.port,
        key.display()
    )
}

fn dns_view(d: &Served) -> (serde_json::Value, bool) {
    let out = d.cli_output(&["dns", "--json"]);
    let failing = d.cli_output(&["dns"]).status.code() == Some(1);
    (serde_json::from_slice(&out.stdout).unwrap(), failing)
}

fn metrics(d: &Served) -> String {
    let out = Command::new("curl")
        .args(["-s", &format!("http://{}/metrics", d.api())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A DHCP DORA through the harness's relay; the leased address.
fn dora(d: &Served, mac: [u8; 6], xid: u32, hostname: Option<&str>) -> Ipv4Addr {
    let giaddr = Some(d.giaddr());
    let mut discover = request(MessageType::Discover, mac, xid, giaddr);
    let mut req = request(MessageType::Request, mac, xid, giaddr);
    if let Some(h) = hostname {
        discover.opts_mut().insert(DhcpOption::Hostname(h.to_string()));
        req.opts_mut().insert(DhcpOption::Hostname(h.to_string()));
    }
    let offer = d.dhcp_exchange(&discover).expect("OFFER");
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    req.opts_mut()
        .insert(DhcpOption::ServerIdentifier(client::server_id(&offer)));
    let ack = d.dhcp_exchange(&req).expect("ACK");
    assert_eq!(client::msg_type(&ack), Some(MessageType::Ack));
    ack.yiaddr()
}

#[test]
fn hosts_are_named_in_bind_and_a_dead_server_only_queues() {
    require_tools(&["named", "dig", "tsig-keygen", "curl"]);
    let work = Workdir::new();
    let key = work.path("provd-a.key");
    let keygen = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", "provd-a"])
        .output()
        .unwrap();
    assert!(keygen.status.success());
    std::fs::write(&key, &keygen.stdout).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let zones = work.path("bind");
    std::fs::create_dir_all(&zones).unwrap();
    let mut bind = Bind::write(&zones, &key);
    bind.start();

    let sockets = Sockets::bind(&[("a", Ipv4Addr::new(127, NET, 0, 1))]);
    let state = work.path("state");
    let assets = work.path("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let hv1_at = format!("10.{NET}.0.21");
    let cfg = work.write(
        "sites.toml",
        &sockets.config(&assets, &state, &[site_toml(&sockets, &bind, &key, Some(&hv1_at))]),
    );
    // The config names the sockets' ports: the later versions are written now.
    let config_for = |hv1: Option<&str>| sockets.config(&assets, &state, &[site_toml(&sockets, &bind, &key, hv1)]);
    let moved = config_for(Some(&format!("10.{NET}.0.31")));
    let retired = config_for(None);
    let d = Served::start(sockets, &cfg, &state);

    // A reserved host: A and PTR; its IPAM migration address as hv1-migration.
    bind.expect("hv1.a.test", "A", &hv1_at);
    bind.expect(&format!("21.0.{NET}.10.in-addr.arpa"), "PTR", "hv1.a.test.");
    bind.expect("hv1-migration.a.test", "A", &format!("10.{NET}.20.10"));
    // hv2 has no reservation and no lease yet: no name. Once leased, named at its lease.
    assert_eq!(bind.dig("hv2.a.test", "A"), "");
    let hv2_at = dora(&d, HV2, 0x9502, None);
    bind.expect("hv2.a.test", "A", &hv2_at.to_string());
    let [a, b, c, last] = hv2_at.octets();
    bind.expect(&format!("{last}.{c}.{b}.{a}.in-addr.arpa"), "PTR", "hv2.a.test.");
    // A stranger asking for hv1's name (option 12) is named nothing, and hv1 keeps its own.
    let stranger_at = dora(&d, STRANGER, 0x9566, Some("hv1"));
    let [a, b, c, last] = stranger_at.octets();
    std::thread::sleep(Duration::from_secs(4)); // more than one updater round
    assert_eq!(bind.dig(&format!("{last}.{c}.{b}.{a}.in-addr.arpa"), "PTR"), "");
    assert_eq!(bind.dig("hv1.a.test", "A"), hv1_at);

    // The reservation moves: the A follows, the old PTR goes, the new one appears.
    std::fs::write(&cfg, &moved).unwrap();
    d.cli(&["reload"]);
    bind.expect("hv1.a.test", "A", &format!("10.{NET}.0.31"));
    bind.expect(&format!("31.0.{NET}.10.in-addr.arpa"), "PTR", "hv1.a.test.");
    bind.expect(&format!("21.0.{NET}.10.in-addr.arpa"), "PTR", "");

    // BIND goes away; hv1 is retired meanwhile. DHCP answers all along; the removal waits.
    bind.stop();
    std::fs::write(&cfg, &retired).unwrap();
    d.cli(&["reload"]);
    assert_eq!(dora(&d, HV2, 0x9503, None), hv2_at, "DHCP does not wait for DNS");
    let (view, failing) = wait_until("the updater to report the dead server", Duration::from_secs(30), || {
        let (v, failing) = dns_view(&d);
        (failing && v["sites"]["a"]["last_error"].is_string()).then_some((v, failing))
    });
    assert!(failing, "provd dns exits 1 while the server fails");
    let pending = view["sites"]["a"]["pending"].as_array().unwrap();
    let names: Vec<&str> = pending.iter().map(|c| c["fqdn"].as_str().unwrap()).collect();
    assert_eq!(names, ["hv1-migration.a.test", "hv1.a.test"], "{view}");
    assert!(pending.iter().all(|c| c["to"].is_null()), "removals: {view}");
    let m = metrics(&d);
    assert!(m.contains("provd_dns_pending{site=\"a\"} 2"), "{m}");
    assert!(!m.contains("provd_dns_updates_total{result=\"failed\"} 0"), "{m}");

    // BIND is back (its journal kept the dynamic records): the queue drains.
    bind.start();
    assert_eq!(
        bind.dig("hv1.a.test", "A"),
        format!("10.{NET}.0.31"),
        "still there until provd catches up"
    );
    bind.expect("hv1.a.test", "A", "");
    bind.expect("hv1-migration.a.test", "A", "");
    bind.expect(&format!("31.0.{NET}.10.in-addr.arpa"), "PTR", "");
    bind.expect("hv2.a.test", "A", &hv2_at.to_string());
    wait_until("the queue to drain", Duration::from_secs(30), || {
        let (v, failing) = dns_view(&d);
        (!failing && v["sites"]["a"]["pending"].as_array().is_some_and(|p| p.is_empty())).then_some(())
    });

    // A restart sends nothing again: what BIND accepted is in the store.
    let d = d.restart();
    std::thread::sleep(Duration::from_secs(4));
    let (v, _) = dns_view(&d);
    assert_eq!(v["accepted"], 0, "nothing resent after a restart: {v}");
    assert_eq!(v["sites"]["a"]["names"], 1, "{v}");
    bind.expect("hv2.a.test", "A", &hv2_at.to_string());
}
