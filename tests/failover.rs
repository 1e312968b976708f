//! DHCP failover between two real servers in network namespaces: provd with provd, and
//! provd with ISC dhcpd 4.4 (each way round). Clients are Kea's perfdhcp (broadcast, so both
//! servers hear every request) and ISC dhclient, on a bridge that joins three namespaces.

mod common;

use common::builder::{self, SiteBuilder};
use common::{Daemon, Netns, Workdir, provd_ok, require_root_and_tools, veth, wait_until};
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

/// Three hosts on one Ethernet: `a` (10.N.0.1, interface fa), `b` (10.N.0.2, fb) and the
/// clients `c` (10.N.0.3, fc), joined by bridge fbr0 in a fourth namespace.
struct Lan {
    _br: Netns,
    a: Netns,
    b: Netns,
    c: Netns,
    /// A host with no address, for dhclient (interface fd).
    d: Netns,
    net: u8,
}

fn lan(tag: &str, net: u8) -> Lan {
    let br = Netns::new(&format!("{tag}br"));
    let (a, b, c) = (
        Netns::new(&format!("{tag}a")),
        Netns::new(&format!("{tag}b")),
        Netns::new(&format!("{tag}c")),
    );
    br.sh("ip link add fbr0 type bridge && ip link set fbr0 up");
    let d = Netns::new(&format!("{tag}d"));
    for (ns, ifname, port, host) in [
        (&a, "fa", "pa", 1),
        (&b, "fb", "pb", 2),
        (&c, "fc", "pc", 3),
        (&d, "fd", "pd", 0),
    ] {
        let addr = if host == 0 {
            String::new()
        } else {
            format!("10.{net}.0.{host}/24")
        };
        veth(ns, ifname, &addr, &br, port, "");
        br.sh(&format!("ip link set {port} master fbr0"));
    }
    Lan {
        _br: br,
        a,
        b,
        c,
        d,
        net,
    }
}

/// A provd config for one half of a pair.
fn provd_config(w: &Workdir, file: &str, net: u8, me: u8, role: &str, mclt: u32) -> std::path::PathBuf {
    let peer = 3 - me;
    let iface = if me == 1 { "fa" } else { "fb" };
    let primary_only = if role == "primary" {
        format!("mclt = {mclt}\nsplit = 128\n")
    } else {
        String::new()
    };
    std::fs::create_dir_all(w.path("assets")).unwrap();
    let site = SiteBuilder::new("fo", &format!("10.{net}.0.{me}"))
        .listen(iface)
        .dhcp("unknown_clients = \"lease-only\"")
        // perfdhcp (10.N.0.3) always fills in giaddr, as a relay on this LAN would.
        .dhcp(&format!("relays = [\"10.{net}.0.3\"]"))
        .subnet(
            &format!("10.{net}.0.0/24"),
            (&format!("10.{net}.0.100"), &format!("10.{net}.0.199")),
            &["lease_time = 600"],
        )
        .raw(&format!(
            "[sites.fo.failover]\nname = \"fo\"\nrole = \"{role}\"\naddress = \"10.{net}.0.{me}\"\n\
             peer_address = \"10.{net}.0.{peer}\"\nmax_response_delay = 6\nload_balance_max_seconds = 3\n{primary_only}"
        ));
    w.write(file, &builder::config(&w.path("assets"), &[site.toml()]))
}

fn failover_status(d: &Daemon) -> Value {
    let out = d.cli(&["failover", "status", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

fn wait_state(d: &Daemon, want: &str, secs: u64) -> Value {
    wait_until(&format!("failover state {want}"), Duration::from_secs(secs), || {
        let s = failover_status(d);
        (s["state"] == want).then_some(s)
    })
}

/// Both in `want` *and* each knowing the other is: a server enters NORMAL when its partner
/// is RECOVER-DONE, and hears the partner's own NORMAL a moment later; a single sample of
/// one side can fall between the two.
fn wait_pair_state(a: &Daemon, b: &Daemon, want: &str, secs: u64) -> (Value, Value) {
    wait_until(
        &format!("both {want}, each seeing the other {want}"),
        Duration::from_secs(secs),
        || {
            let (sa, sb) = (failover_status(a), failover_status(b));
            let agreed = [&sa, &sb]
                .iter()
                .all(|s| s["state"] == want && s["partner_state"] == want);
            agreed.then_some((sa, sb))
        },
    )
}

/// Bound leases in a provd store: ip -> client.
fn bound(d: &Daemon) -> HashMap<String, String> {
    d.leases()
        .into_iter()
        .filter(|l| l["state"] == "bound")
        .map(|l| {
            (
                l["ip"].as_str().unwrap().to_string(),
                l["client_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Bound leases that will not expire within the next few seconds (lease times are short
/// here: MCLT 10 s bounds a lease the partner has not acknowledged yet).
fn bound_unexpired(d: &Daemon) -> HashMap<String, String> {
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    d.leases()
        .into_iter()
        .filter(|l| l["state"] == "bound" && l["ends"].as_u64().unwrap_or(0) > soon)
        .map(|l| {
            (
                l["ip"].as_str().unwrap().to_string(),
                l["client_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every record in a provd store: ip -> (state, client).
fn records(d: &Daemon) -> HashMap<String, (String, String)> {
    d.leases()
        .into_iter()
        .map(|l| {
            (
                l["ip"].as_str().unwrap().to_string(),
                (
                    l["state"].as_str().unwrap().to_string(),
                    l["client_id"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// No address is bound to two clients, within or across the stores.
fn assert_unique(stores: &[&HashMap<String, String>]) {
    let mut owner: HashMap<&str, &str> = HashMap::new();
    for s in stores {
        for (ip, client) in s.iter() {
            if let Some(other) = owner.insert(ip, client) {
                assert_eq!(other, client, "{ip} is bound to two clients");
            }
        }
    }
}

/// perfdhcp DORA in direct (broadcast) mode from the clients' namespace: `n` exchanges
/// with `clients` distinct MACs (the MAC prefix makes runs distinct).
fn perfdhcp(c: &Netns, clients: u32, mac: &str) -> String {
    let out = c
        .cmd("perfdhcp")
        .args([
            "-4",
            "-l",
            "fc",
            "-r",
            "40",
            "-R",
            &clients.to_string(),
            "-n",
            &clients.to_string(),
        ])
        .args(["-b", &format!("mac={mac}")])
        .args(["-p", "20"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// ISC dhclient, once, in namespace d: it gets (or re-confirms) a lease and exits; the
/// lease file keeps what it holds. Returns the address it now has.
fn dhclient_once(l: &Lan, w: &Workdir) -> String {
    let lf = w.path("dhclient.leases");
    let out =
        l.d.cmd("dhclient")
            .args(["-4", "-1", "-sf", "/bin/true", "-lf"])
            .arg(&lf)
            .arg("-pf")
            .arg(w.path("dhclient.pid"))
            .arg("fd")
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "dhclient: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It went to the background holding the lease: stop it (the lease file stays).
    if let Ok(pid) = std::fs::read_to_string(w.path("dhclient.pid")) {
        let _ = std::process::Command::new("kill").arg(pid.trim()).output();
    }
    let text = std::fs::read_to_string(&lf).unwrap();
    text.rsplit("fixed-address ")
        .next()
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_string()
}

fn stat(d: &Daemon, name: &str) -> u64 {
    d.stats()["dhcp"][name].as_u64().unwrap_or(0)
}

#[test]
fn provd_pair_reaches_normal_splits_clients_survives_a_dead_partner_and_recovers() {
    require_root_and_tools(&["ip", "perfdhcp", "dhclient"]);
    let l = lan("fopp", 240);
    let (wa, wb) = (Workdir::new(), Workdir::new());
    let ca = provd_config(&wa, "a.toml", l.net, 1, "primary", 10);
    let cb = provd_config(&wb, "b.toml", l.net, 2, "secondary", 0);
    let a = Daemon::start(&l.a, &ca, &wa.path("state"), &wa.path("provd.log"));
    let mut b = Daemon::start(&l.b, &cb, &wb.path("state"), &wb.path("provd.log"));

    // A new pair: both come up in RECOVER, exchange (empty) updates, and reach NORMAL.
    let (sa, sb) = wait_pair_state(&a, &b, "normal", 60);
    assert_eq!(
        (sa["partner_state"].as_str(), sb["partner_state"].as_str()),
        (Some("normal"), Some("normal"))
    );
    assert_eq!(sb["mclt"], 10, "the secondary learnt MCLT from the primary's CONNECT");
    // The primary gave the secondary half the free addresses (POOLREQ -> BNDUPD backup).
    wait_until("pool balanced", Duration::from_secs(20), || {
        let backup = b.leases().iter().filter(|r| r["state"] == "backup").count();
        (backup == 50).then_some(())
    });

    // A machine that is not the configured partner (10.N.0.3) connects to the secondary's
    // failover port and sends a well-formed CONNECT for this relationship: the connection
    // is closed unanswered, and the real pair stays NORMAL and connected.
    let (net, updates_before) = (l.net, failover_status(&b)["updates_received"].clone());
    let answer = l.c.enter(move || {
        use provd::failover::codec::{Message, MessageType, Value, code};
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect((std::net::Ipv4Addr::new(10, net, 0, 2), 647)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let connect = Message::new(MessageType::Connect, now, 1)
            .with(code::RELATIONSHIP_NAME, Value::Bytes(b"fo".to_vec()))
            .with(code::MAX_UNACKED, Value::U32(10))
            .with(code::RECEIVE_TIMER, Value::U32(6))
            .with(code::MCLT, Value::U32(86_000))
            .with(code::HBA, Value::Bytes(vec![0xff; 32]));
        let _ = s.write_all(&connect.encode().unwrap());
        let mut buf = [0u8; 64];
        s.read(&mut buf).unwrap_or(0)
    });
    assert_eq!(answer, 0, "the impostor got an answer");
    std::thread::sleep(Duration::from_secs(1));
    let (sa, sb) = (failover_status(&a), failover_status(&b));
    for s in [&sa, &sb] {
        assert_eq!(
            (s["state"].as_str(), s["connected"].as_bool()),
            (Some("normal"), Some(true)),
            "{s}"
        );
    }
    assert_eq!(sb["mclt"], 10, "nothing learnt from the impostor");
    assert_eq!(sb["updates_received"], updates_before);

    // Clients split between the two by the hash; both stores end up with every lease.
    let out = perfdhcp(&l.c, 60, "00:0c:01:00:00:00");
    let (acks_a, acks_b) = (stat(&a, "sent_ack"), stat(&b, "sent_ack"));
    assert!(
        acks_a > 10 && acks_b > 10,
        "both answer their share: a {acks_a}, b {acks_b}\n{out}"
    );
    assert!(stat(&a, "dropped_failover_partners_client") > 0 && stat(&b, "dropped_failover_partners_client") > 0);
    let (ba, bb) = wait_until("both stores agree", Duration::from_secs(20), || {
        let (ba, bb) = (bound(&a), bound(&b));
        (ba == bb && ba.len() as u64 >= acks_a + acks_b - 2).then_some((ba, bb))
    });
    assert_unique(&[&ba, &bb]);
    // Each server allocated from its own half: the primary below .150, the secondary above.
    let low = ba
        .keys()
        .filter(|ip| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap() < 150)
        .count();
    assert!(low > 0 && low < ba.len(), "{ba:?}");

    // A real client (ISC dhclient) takes a lease from whichever server the hash picks.
    let wd = Workdir::new();
    let held = dhclient_once(&l, &wd);

    // The secondary dies: the primary sees the connection go and serves everyone, but new
    // addresses only from its own half (the secondary may still have clients in its half).
    b.kill9();
    wait_state(&a, "communications-interrupted", 20);
    // The client comes back (INIT-REBOOT, or DISCOVER once its short lease ran out) and
    // keeps its address, whichever server first gave it.
    assert_eq!(
        dhclient_once(&l, &wd),
        held,
        "the survivor renews the client's own address"
    );
    let before = stat(&a, "sent_ack");
    perfdhcp(&l.c, 20, "00:0c:02:00:00:00");
    assert!(
        stat(&a, "sent_ack") >= before + 15,
        "the primary alone serves every client"
    );
    let high_before = bound(&a)
        .keys()
        .filter(|ip| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap() >= 150)
        .count();

    // partner-down: after MCLT the primary may hand out the secondary's addresses too.
    let out = a.cli(&["failover", "partner-down", "fo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("partner-down"));
    std::thread::sleep(Duration::from_secs(11));
    perfdhcp(&l.c, 40, "00:0c:03:00:00:00");
    let after = bound(&a);
    let high_after = after
        .keys()
        .filter(|ip| ip.rsplit('.').next().unwrap().parse::<u32>().unwrap() >= 150)
        .count();
    assert!(
        high_after > high_before,
        "took over the partner's free addresses: {high_before} -> {high_after}"
    );
    assert_unique(&[&after]);

    // The secondary returns: RECOVER (it learns everything), then both NORMAL again.
    let b = Daemon::start(&l.b, &cb, &wb.path("state"), &wb.path("provd.log"));
    wait_state(&b, "normal", 90);
    wait_state(&a, "normal", 30);
    let (ba, bb) = wait_until("stores merged", Duration::from_secs(20), || {
        let (ba, bb) = (bound(&a), bound(&b));
        (ba == bb).then_some((ba, bb))
    });
    // Every address the primary handed out alone is now known to the secondary, for the
    // same client (or, expired since, as a free address of one of the two).
    let known_b = records(&b);
    for (ip, client) in &after {
        let (state, c) = known_b
            .get(ip)
            .unwrap_or_else(|| panic!("{ip} unknown to the secondary"));
        assert!(state != "bound" || c == client, "{ip}: {state} {c} vs {client}");
    }
    assert_unique(&[&ba, &bb]);
}

/// ISC dhcpd 4.4 as one half of the pair, in its namespace; killed on drop.
struct Isc {
    child: Option<std::process::Child>,
    log: std::path::PathBuf,
    leases: std::path::PathBuf,
}

impl Isc {
    fn start(ns: &Netns, w: &Workdir, net: u8, me: u8, role: &str, mclt: u32) -> Isc {
        let peer = 3 - me;
        let iface = if me == 1 { "fa" } else { "fb" };
        let primary_only = if role == "primary" {
            format!("  mclt {mclt};\n  split 128;\n")
        } else {
            String::new()
        };
        let conf = w.write(
            "dhcpd.conf",
            &format!(
                r#"authoritative;
ddns-update-style none;
failover peer "fo" {{
  {role};
  address 10.{net}.0.{me};
  port 647;
  peer address 10.{net}.0.{peer};
  peer port 647;
  max-response-delay 6;
  max-unacked-updates 10;
  load balance max seconds 3;
{primary_only}}}
subnet 10.{net}.0.0 netmask 255.255.255.0 {{
  default-lease-time 600;
  max-lease-time 600;
  pool {{
    failover peer "fo";
    range 10.{net}.0.100 10.{net}.0.199;
  }}
}}
"#
            ),
        );
        let leases = w.path("dhcpd.leases");
        if !leases.exists() {
            std::fs::write(&leases, "").unwrap();
        }
        let log = w.path("dhcpd.log");
        let logf = std::fs::File::options().create(true).append(true).open(&log).unwrap();
        let child = ns
            .cmd("dhcpd")
            .args(["-4", "-f", "-d", "-cf"])
            .arg(&conf)
            .arg("-lf")
            .arg(&leases)
            .arg("-pf")
            .arg(w.path("dhcpd.pid"))
            .arg(iface)
            .stdout(std::process::Stdio::null())
            .stderr(logf)
            .spawn()
            .unwrap();
        Isc {
            child: Some(child),
            log,
            leases,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// ISC's own word for its state: the last "I move from X to Y".
    fn state(&self) -> Option<String> {
        self.log_text()
            .lines()
            .rev()
            .find_map(|l| l.split("I move from ").nth(1))
            .and_then(|rest| rest.split(" to ").nth(1))
            .map(|s| s.trim().to_string())
    }

    /// Active leases in ISC's lease file: ip -> hardware address.
    fn active_leases(&self) -> HashMap<String, String> {
        let text = std::fs::read_to_string(&self.leases).unwrap_or_default();
        let mut out = HashMap::new();
        for block in text.split("lease ").skip(1) {
            let ip = block.split_whitespace().next().unwrap_or("").to_string();
            let body = block.split('}').next().unwrap_or("");
            let active = body.contains("binding state active;");
            let hw = body
                .split("hardware ethernet ")
                .nth(1)
                .and_then(|s| s.split(';').next())
                .unwrap_or("")
                .to_string();
            // Later blocks for the same address supersede earlier ones.
            if active {
                out.insert(ip, hw);
            } else {
                out.remove(&ip);
            }
        }
        out
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Isc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- ISC dhcpd log ---\n{}", self.log_text());
        }
    }
}

/// provd's client id for an Ethernet client without option 61: htype 01 + MAC, as hex.
fn client_of(mac: &str) -> String {
    format!("01{}", mac.replace(':', ""))
}

fn provd_with_isc(provd_role: &str, net: u8, tag: &str) {
    require_root_and_tools(&["ip", "perfdhcp", "dhcpd"]);
    let l = lan(tag, net);
    let (wa, wb) = (Workdir::new(), Workdir::new());
    let isc_role = if provd_role == "primary" {
        "secondary"
    } else {
        "primary"
    };
    let ca = provd_config(&wa, "a.toml", l.net, 1, provd_role, 10);
    let a = Daemon::start(&l.a, &ca, &wa.path("state"), &wa.path("provd.log"));
    let mut isc = Isc::start(&l.b, &wb, l.net, 2, isc_role, 10);

    // NORMAL may come while the partner is still RECOVER-DONE; its own NORMAL follows.
    let sa = wait_until("normal with the partner normal", Duration::from_secs(90), || {
        let s = failover_status(&a);
        (s["state"] == "normal" && s["partner_state"] == "normal").then_some(s)
    });
    assert_eq!(sa["partner_state"], "normal", "{sa}");
    wait_until("ISC in normal", Duration::from_secs(30), || {
        (isc.state().as_deref() == Some("normal")).then_some(())
    });

    // `provd reload` (the same files, read again) leaves the failover connection alone: the
    // same state since the same time, connected, and ISC saw no interruption.
    let before = failover_status(&a);
    let interrupted = isc.log_text().matches("communications-interrupted").count();
    let said = a.cli(&["reload"]);
    assert!(String::from_utf8_lossy(&said.stdout).contains("reloaded (generation 1)"));
    std::thread::sleep(Duration::from_secs(2));
    let after = failover_status(&a);
    assert_eq!(
        (&after["state"], &after["stos"], &after["connected"]),
        (&before["state"], &before["stos"], &serde_json::json!(true)),
        "{before} -> {after}"
    );
    assert_eq!(
        isc.log_text().matches("communications-interrupted").count(),
        interrupted
    );

    // Clients: both answer their share; each one's leases reach the other's store.
    let out = perfdhcp(&l.c, 60, "00:0c:11:00:00:00");
    let acks_provd = stat(&a, "sent_ack");
    let isc_acks = isc.log_text().matches("DHCPACK on").count();
    assert!(
        acks_provd > 5 && isc_acks > 5,
        "provd {acks_provd} ACKs, ISC {isc_acks}\n{out}"
    );
    let (mine, theirs) = wait_until("leases exchanged", Duration::from_secs(30), || {
        let mine = bound(&a);
        let theirs = isc.active_leases();
        let isc_in_provd = theirs.iter().all(|(ip, hw)| mine.get(ip) == Some(&client_of(hw)));
        let provd_in_isc = bound_unexpired(&a)
            .iter()
            .all(|(ip, c)| theirs.get(ip).map(|hw| client_of(hw)).as_ref() == Some(c));
        (isc_in_provd && provd_in_isc && mine.len() as u64 >= acks_provd).then_some((mine, theirs))
    });
    assert!(
        theirs.len() > mine.len() / 4,
        "ISC's own leases are in provd's store too"
    );
    assert_unique(&[&mine]);

    // ISC dies: provd serves everyone; partner-down; after MCLT the partner's addresses too.
    isc.kill();
    wait_state(&a, "communications-interrupted", 20);
    let out = a.cli(&["failover", "partner-down", "fo"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("partner-down"));
    std::thread::sleep(Duration::from_secs(11));
    let before = stat(&a, "sent_ack");
    perfdhcp(&l.c, 20, "00:0c:12:00:00:00");
    assert!(stat(&a, "sent_ack") >= before + 15, "provd alone serves every client");

    // ISC returns: it recovers from provd, then both are normal with the same leases.
    let isc = Isc::start(&l.b, &wb, l.net, 2, isc_role, 10);
    wait_state(&a, "normal", 120);
    wait_until("ISC back in normal", Duration::from_secs(60), || {
        (isc.state().as_deref() == Some("normal")).then_some(())
    });
    wait_until("ISC learnt provd's leases", Duration::from_secs(30), || {
        let theirs = isc.active_leases();
        bound_unexpired(&a)
            .iter()
            .all(|(ip, c)| theirs.get(ip).map(|hw| client_of(hw)).as_ref() == Some(c))
            .then_some(())
    });
}

#[test]
fn provd_primary_with_isc_dhcpd_secondary() {
    provd_with_isc("primary", 241, "fopi");
}

#[test]
fn provd_secondary_with_isc_dhcpd_primary() {
    provd_with_isc("secondary", 242, "fosi");
}

/// The ISC failover protocol has no authentication (dhcpd 4.4 offers none), so the secondary
/// knows its partner only by address and by the CONNECT exchange. While the primary
/// restarts, a third program speaks from the primary's own address:
/// - a BNDUPD before any CONNECT binds nothing: the connection is closed unanswered;
/// - a connection that does CONNECT is answered (nothing tells it from the partner), and a
///   BNDUPD it then sends binds a configured host's MAC to an address of the impostor's: the
///   binding keeps that address from others, but the host's boot script (its install token)
///   is refused to that address: a binding learnt from the partner is no proof of the client;
/// - that connection, kept alive with CONTACTs, does not lock the real primary out: when it
///   comes back and CONNECTs, it replaces the impostor, and the pair reaches NORMAL.
#[test]
fn an_impostor_at_the_partners_address_binds_nothing_and_locks_nobody_out() {
    use provd::failover::codec::{Message, MessageType, Value, code};
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    require_root_and_tools(&["ip"]);
    let l = lan("foimp", 242);
    let net = l.net;
    let (wa, wb) = (Workdir::new(), Workdir::new());
    let ca = provd_config(&wa, "a.toml", net, 1, "primary", 10);
    let cb = provd_config(&wb, "b.toml", net, 2, "secondary", 0);
    // A configured host with no reservation: its secrets follow its lease.
    let host_mac: provd::mac::MacAddr = "52:54:00:42:00:01".parse().unwrap();
    let host = "[[hosts]]\nsite = \"fo\"\nmac = \"52:54:00:42:00:01\"\nhostname = \"fo-h1\"\nprofile = \"el9\"\n";
    for c in [&ca, &cb] {
        let text = std::fs::read_to_string(c).unwrap();
        std::fs::write(c, format!("{text}\n{host}")).unwrap();
    }
    let mut a = Daemon::start(&l.a, &ca, &wa.path("state"), &wa.path("provd.log"));
    let b = Daemon::start(&l.b, &cb, &wb.path("state"), &wb.path("provd.log"));
    wait_pair_state(&a, &b, "normal", 60);

    a.kill9();
    wait_state(&b, "communications-interrupted", 20);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let secondary = (std::net::Ipv4Addr::new(10, net, 0, 2), 647);

    // 1. A BNDUPD first: a week-long binding of a pool address to the impostor's MAC.
    let forged_mac: provd::mac::MacAddr = "02:00:00:00:06:66".parse().unwrap();
    let forged_ip = std::net::Ipv4Addr::new(10, net, 0, 120);
    let t = now();
    let update = provd::failover::binding::bndupd(
        &provd::store::LeaseRecord {
            ip: forged_ip,
            client_id: format!("01{}", forged_mac.to_string().replace(':', "")),
            mac: Some(forged_mac),
            hostname: None,
            state: provd::store::LeaseState::Bound,
            starts: t,
            ends: t + 7 * 86_400,
            site: "fo".into(),
            tstp: 0,
            tsfp: 0,
            cltt: t,
            from_partner: false,
        },
        t,
        7,
    );
    let answer = l.a.enter(move || {
        let mut s = std::net::TcpStream::connect(secondary).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&update.encode().unwrap()).unwrap();
        let mut buf = [0u8; 256];
        s.read(&mut buf)
    });
    assert!(
        matches!(answer, Ok(0)),
        "the BNDUPD before CONNECT was answered or the connection kept open: {answer:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let forged = b
        .leases()
        .into_iter()
        .find(|r| r["ip"] == forged_ip.to_string() && r["state"] == "bound");
    assert!(forged.is_none(), "the impostor's binding was stored: {forged:?}");
    assert!(b.log_text().contains("BNDUPD before the CONNECT"), "{}", b.log_text());

    // 2. An impostor that CONNECTs and keeps the link alive.
    let connect = Message::new(MessageType::Connect, now() as u32, 1)
        .with(code::RELATIONSHIP_NAME, Value::Bytes(b"fo".to_vec()))
        .with(code::MAX_UNACKED, Value::U32(10))
        .with(code::RECEIVE_TIMER, Value::U32(6))
        .with(code::MCLT, Value::U32(10))
        .with(code::HBA, Value::Bytes(provd::config::hba_from_split(128).to_vec()));
    let mut stream = l.a.enter(move || std::net::TcpStream::connect(secondary).unwrap());
    stream.write_all(&connect.encode().unwrap()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let read_until = |stream: &mut std::net::TcpStream, kind: MessageType| loop {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).expect("a message");
        let mut bytes = len.to_vec();
        bytes.resize(usize::from(u16::from_be_bytes(len)), 0);
        stream.read_exact(&mut bytes[2..]).expect("the whole message");
        let m = Message::decode(&bytes).unwrap();
        if m.kind == kind {
            return m;
        }
    };
    let ack = read_until(&mut stream, MessageType::ConnectAck);
    assert_eq!(
        ack.u8(code::REJECT_REASON),
        None,
        "the impostor's CONNECT is indistinguishable"
    );
    // The impostor binds the configured host's MAC to an address it then takes.
    let taken = std::net::Ipv4Addr::new(10, net, 0, 150);
    let t = now();
    let claim = provd::failover::binding::bndupd(
        &provd::store::LeaseRecord {
            ip: taken,
            client_id: format!("01{}", host_mac.to_string().replace(':', "")),
            mac: Some(host_mac),
            hostname: None,
            state: provd::store::LeaseState::Bound,
            starts: t,
            ends: t + 86_400,
            site: "fo".into(),
            tstp: 0,
            tsfp: 0,
            cltt: t,
            from_partner: false,
        },
        t,
        8,
    );
    stream.write_all(&claim.encode().unwrap()).unwrap();
    let bndack = read_until(&mut stream, MessageType::BndAck);
    assert_eq!((bndack.xid, bndack.u8(code::REJECT_REASON)), (8, None));

    // Issue 34: a lease granted here (to dhclient, by B alone while A is away) is not the
    // impostor's to free, expire, hand to another client or give back to the pool, however
    // new its updates claim to be; each is answered with reject reason 15 (outdated binding
    // information) and the lease stays where it was.
    let granted = dhclient_once(&l, &wb);
    let before = records(&b)[&granted].clone();
    assert_eq!(before.0, "bound", "{before:?}");
    let dhclient_mac: provd::mac::MacAddr = {
        let out = l.d.cmd("cat").arg("/sys/class/net/fd/address").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let t = now();
    let undo = |state, mac: provd::mac::MacAddr, xid| {
        provd::failover::binding::bndupd(
            &provd::store::LeaseRecord {
                ip: granted.parse().unwrap(),
                client_id: format!("01{}", mac.to_string().replace(':', "")),
                mac: Some(mac),
                hostname: None,
                state,
                starts: t,
                ends: t + 86_400,
                site: "fo".into(),
                tstp: 0,
                tsfp: 0,
                cltt: t + 1000,
                from_partner: false,
            },
            t,
            xid,
        )
    };
    use provd::store::LeaseState as S;
    for (xid, update) in [
        (20, undo(S::Released, dhclient_mac, 20)),
        (21, undo(S::Expired, dhclient_mac, 21)),
        (22, undo(S::Bound, forged_mac, 22)),
        (23, undo(S::Free, dhclient_mac, 23)),
    ] {
        stream.write_all(&update.encode().unwrap()).unwrap();
        let ack = read_until(&mut stream, MessageType::BndAck);
        assert_eq!(
            (ack.xid, ack.u8(code::REJECT_REASON)),
            (xid, Some(provd::failover::codec::reject::OUTDATED_BIND_INFO)),
            "{:?}",
            ack.text(code::MESSAGE)
        );
    }
    assert_eq!(
        records(&b)[&granted],
        before,
        "the impostor changed a lease granted here"
    );
    let held = b
        .leases()
        .into_iter()
        .find(|r| r["ip"] == taken.to_string() && r["state"] == "bound");
    assert_eq!(
        held.as_ref().map(|r| r["mac"].clone()),
        Some(serde_json::Value::from("52:54:00:42:00:01")),
        "{held:?}"
    );
    l.a.sh(&format!("ip addr add {taken}/24 dev fa"));
    let script =
        l.a.cmd("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--interface",
                &taken.to_string(),
            ])
            .arg(format!("http://10.{net}.0.2:8080/boot/52-54-00-42-00-01.ipxe"))
            .output()
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&script.stdout),
        "403",
        "the host's boot script went to an address only the partner's BNDUPD gave it"
    );
    l.a.sh(&format!("ip addr del {taken}/24 dev fa"));
    wait_until("the impostor holds the connection", Duration::from_secs(10), || {
        failover_status(&b)["connected"].as_bool().filter(|c| *c)
    });
    let cut_off = Arc::new(AtomicBool::new(false));
    let keepalive = {
        let cut_off = cut_off.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            for _ in 0..600 {
                let contact = Message::new(MessageType::Contact, now() as u32, 2);
                if stream.write_all(&contact.encode().unwrap()).is_err() {
                    break;
                }
                match stream.read(&mut buf) {
                    Ok(0) => break,
                    Err(e)
                        if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut =>
                    {
                        break;
                    }
                    _ => {}
                }
            }
            cut_off.store(true, Ordering::SeqCst);
        })
    };
    // The real primary comes back and dials: it replaces the impostor.
    let a = Daemon::start(&l.a, &ca, &wa.path("state"), &wa.path("provd.log"));
    wait_pair_state(&a, &b, "normal", 60);
    wait_until("the impostor's connection closed", Duration::from_secs(10), || {
        cut_off.load(Ordering::SeqCst).then_some(())
    });
    keepalive.join().unwrap();
    assert!(
        b.log_text()
            .contains("sent a valid CONNECT; it replaces the established one"),
        "{}",
        b.log_text()
    );
    let sb = failover_status(&b);
    assert_eq!(
        (sb["connected"].as_bool(), sb["mclt"].as_u64()),
        (Some(true), Some(10)),
        "{sb}"
    );
}

/// `tls = true` (two provds): the failover conversation inside the pair's mutual TLS. The
/// pair reaches NORMAL; from the partner's own address, a plain-TCP CONNECT and a TLS peer
/// with another certificate of the same CA (an operator's) get no failover byte and change
/// nothing; and a binding the authenticated partner sent counts for install secrets (the
/// host's boot script from the address the primary leased it, asked of the secondary).
#[test]
fn a_provd_pair_over_tls_authenticates_the_partner() {
    use provd::failover::codec::{Message, MessageType, Value, code};
    use std::io::{Read, Write};
    require_root_and_tools(&["ip", "dhclient", "openssl", "curl"]);
    let l = lan("fotls", 243);
    let net = l.net;
    let (wa, wb) = (Workdir::new(), Workdir::new());
    let ca = provd_config(&wa, "a.toml", net, 1, "primary", 10);
    let cb = provd_config(&wb, "b.toml", net, 2, "secondary", 0);
    // The host that dhclient (namespace d) will be, with no reservation.
    let host = "[[hosts]]\nsite = \"fo\"\nmac = \"52:54:00:43:00:01\"\nhostname = \"fo-t1\"\nprofile = \"el9\"\n";
    for c in [&ca, &cb] {
        let text = std::fs::read_to_string(c)
            .unwrap()
            .replace("max_response_delay = 6\n", "max_response_delay = 6\ntls = true\n");
        assert!(text.contains("tls = true"));
        std::fs::write(c, format!("{text}\n{host}")).unwrap();
    }
    l.d.sh("ip link set fd address 52:54:00:43:00:01");
    // One CA on both servers (the pair's certificates come from it).
    let pki_a = wa.path("state/pki");
    provd_ok(&["pki", "init", "--pki-dir", &pki_a.display().to_string()]);
    std::fs::create_dir_all(wb.path("state/pki")).unwrap();
    for f in ["ca-cert.pem", "ca-key.pem"] {
        std::fs::copy(pki_a.join(f), wb.path("state/pki").join(f)).unwrap();
    }
    let a = Daemon::start(&l.a, &ca, &wa.path("state"), &wa.path("provd.log"));
    let mut b = Daemon::start(&l.b, &cb, &wb.path("state"), &wb.path("provd.log"));
    wait_pair_state(&a, &b, "normal", 60);

    // From the partner's address: a plain CONNECT is not TLS; it gets a TLS alert at most.
    let secondary = (std::net::Ipv4Addr::new(10, net, 0, 2), 647);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let connect = Message::new(MessageType::Connect, now, 1)
        .with(code::RELATIONSHIP_NAME, Value::Bytes(b"fo".to_vec()))
        .with(code::MAX_UNACKED, Value::U32(10))
        .with(code::RECEIVE_TIMER, Value::U32(6))
        .with(code::MCLT, Value::U32(10))
        .with(code::HBA, Value::Bytes(provd::config::hba_from_split(128).to_vec()));
    let answer = l.a.enter(move || {
        let mut s = std::net::TcpStream::connect(secondary).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&connect.encode().unwrap()).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    });
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "a plain CONNECT got something other than a TLS alert: {answer:02x?}"
    );
    // A TLS peer with an operator's certificate of the same CA: the handshake completes,
    // then the secondary drops it (not the site's replication certificate).
    let op = wa.path("operator");
    provd_ok(&[
        "pki",
        "issue-client",
        "mallory",
        "--out",
        &op.display().to_string(),
        "--pki-dir",
        &pki_a.display().to_string(),
    ]);
    let o = op.display();
    // (s_client's own exit status depends on when the server closes: not asserted.)
    let s_client =
        l.a.cmd("sh")
            .arg("-c")
            .arg(format!(
                "echo | timeout 10 openssl s_client -connect 10.{net}.0.2:647 -CAfile {o}/cacert.pem -cert {o}/clientcert.pem -key {o}/clientkey.pem"
            ))
            .output()
            .unwrap();
    eprintln!(
        "s_client: {}",
        String::from_utf8_lossy(&s_client.stdout).lines().next().unwrap_or("")
    );
    wait_until(
        "the secondary refuses the operator's certificate",
        Duration::from_secs(10),
        || {
            b.log_text()
                .contains("not the replication certificate of site fo")
                .then_some(())
        },
    );
    assert!(
        b.log_text().contains("refused a connection from 10.") && b.log_text().contains("TLS"),
        "{}",
        b.log_text()
    );
    let (sa, sb) = wait_pair_state(&a, &b, "normal", 20);
    assert_eq!(
        (sa["connected"].as_bool(), sb["connected"].as_bool()),
        (Some(true), Some(true))
    );

    // The secondary down; the primary leases the host an address alone; the secondary comes
    // back and learns the binding from its authenticated partner: that binding opens the
    // host's boot script on the secondary.
    b.kill9();
    wait_state(&a, "communications-interrupted", 30);
    let ip = dhclient_once(&l, &wa);
    b = Daemon::start(&l.b, &cb, &wb.path("state"), &wb.path("provd.log"));
    wait_pair_state(&a, &b, "normal", 60);
    let learnt = wait_until(
        "the secondary learns the host's binding",
        Duration::from_secs(30),
        || {
            b.leases()
                .into_iter()
                .find(|r| r["ip"] == ip.as_str() && r["state"] == "bound")
        },
    );
    assert_eq!(learnt["mac"], "52:54:00:43:00:01", "{learnt}");
    l.d.sh(&format!("ip addr add {ip}/24 dev fd"));
    let script =
        l.d.cmd("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://10.{net}.0.2:8080/boot/52-54-00-43-00-01.ipxe"))
            .output()
            .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&script.stdout),
        "200",
        "a binding from the authenticated partner counts (plain ISC failover: 403)"
    );
}
