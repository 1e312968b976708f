//! One site, two servers, one inventory: two provd servers of a failover pair in network
//! namespaces share host records over their mutual-TLS replication link (same CA on both),
//! and the host (its own namespace, at its reserved address) talks to them with curl.
//!
//! - lab-1 installs through A; B learns it; A is killed -9; B serves lab-1 local boot, and
//!   B's history shows the install. `reinstall` on B needs --force; A restarts and serves
//!   the install B asked for.
//! - A partition (blackhole routes between the servers, the host still reaches both) with
//!   an operator's reinstall on B and the end of an older install reported to A converges
//!   after it heals to the documented rule: the operator's reinstall wins, both histories
//!   kept.
//! - A fresh B (empty state directory) started while A is down offers no install; once it
//!   has synchronised with A it serves what A knows.
//!
//! Needs root, ip, curl.

mod common;

use common::builder::{self, SiteBuilder};
use common::{Daemon, Netns, Workdir, provd_bin, require_root_and_tools, veth, wait_until};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const NET: u8 = 94;
const MAC: &str = "52:54:00:00:94:0b";

struct Pair {
    _br: Netns,
    a: Netns,
    b: Netns,
    h: Netns,
}

fn lan() -> Pair {
    lan_named("rp", NET)
}

fn lan_named(tag: &str, net: u8) -> Pair {
    let br = Netns::new(&format!("{tag}br"));
    let (a, b, h) = (
        Netns::new(&format!("{tag}a")),
        Netns::new(&format!("{tag}b")),
        Netns::new(&format!("{tag}h")),
    );
    br.sh("ip link add rbr0 type bridge && ip link set rbr0 up");
    for (ns, ifname, port, host) in [(&a, "ra", "qa", 1), (&b, "rb", "qb", 2), (&h, "rh", "qh", 11)] {
        // The host gets its address from the pair by DHCP (its reservation).
        let addr = if host == 11 {
            String::new()
        } else {
            format!("10.{net}.0.{host}/24")
        };
        veth(ns, ifname, &addr, &br, port, "");
        br.sh(&format!("ip link set {port} master rbr0"));
    }
    h.sh(&format!("ip link set rh address {MAC}"));
    Pair { _br: br, a, b, h }
}

fn config(w: &Workdir, me: u8) -> PathBuf {
    config_on(w, me, NET)
}

fn config_on(w: &Workdir, me: u8, net: u8) -> PathBuf {
    let (iface, role, peer) = if me == 1 {
        ("ra", "primary", 2)
    } else {
        ("rb", "secondary", 1)
    };
    let primary_only = if me == 1 { "mclt = 30\nsplit = 128\n" } else { "" };
    let site = SiteBuilder::new("rp", &format!("10.{net}.0.{me}"))
        .listen(iface)
        .subnet(
            &format!("10.{net}.0.0/24"),
            (&format!("10.{net}.0.100"), &format!("10.{net}.0.199")),
            &["domain = \"rp.test\""],
        )
        .host(
            MAC,
            "lab-1",
            &[&format!("ip = \"10.{net}.0.11\""), "profile = \"el9-kvm\""],
        )
        .raw(&format!(
            "[sites.rp.failover]\nname = \"rp\"\nrole = \"{role}\"\naddress = \"10.{net}.0.{me}\"\n\
             peer_address = \"10.{net}.0.{peer}\"\nmax_response_delay = 6\n{primary_only}"
        ));
    w.write(
        &format!("server{me}.toml"),
        &builder::config(&w.path("assets"), &[site.toml()]),
    )
}

fn replication(d: &Daemon) -> Value {
    let out = d.cli(&["failover", "replication", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0].clone()
}

fn wait_synced(d: &Daemon, what: &str) {
    wait_until(what, Duration::from_secs(40), || {
        let r = replication(d);
        (r["connected"] == true && r["last_sync"].as_u64().unwrap_or(0) > 0).then_some(())
    });
}

fn host(d: &Daemon) -> Value {
    serde_json::from_slice(&d.cli(&["hosts", "show", "lab-1", "--json"]).stdout).unwrap()
}

fn history(d: &Daemon) -> Vec<String> {
    host(d)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["what"].as_str().unwrap().to_string())
        .collect()
}

/// The host's boot script from server `n` (1 = A, 2 = B), asked from its own address.
fn boot_script(p: &Pair, n: u8) -> String {
    let out =
        p.h.cmd("curl")
            .args([
                "-fsS",
                &format!("http://10.{NET}.0.{n}:8080/boot/{}.ipxe", MAC.replace(':', "-")),
            ])
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn token_in(script: &str) -> Option<String> {
    let i = script.find("?token=")?;
    Some(script[i + 7..].split_whitespace().next()?.to_string())
}

fn callback(p: &Pair, n: u8, token: &str, event: &str) -> String {
    let out =
        p.h.cmd("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "POST",
                "--data",
                "from the test",
            ])
            .arg(format!(
                "http://10.{NET}.0.{n}:8080/callback/lab-1/{event}?token={token}"
            ))
            .output()
            .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn cli_fails(d: &Daemon, args: &[&str]) -> String {
    let out = d.cli_output(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The host's lease from the pair (udhcpc, one shot), then its address on the interface.
fn lease(p: &Pair, net: u8) {
    common::udhcpc_lease(&p.h, "rh", &format!("10.{net}.0.11"));
}

/// A CSR for lab-1's `role` certificate, signed at `server` (1 or 2) with `token`: the code.
fn sign(p: &Pair, server: u8, token: &str, role: &str) -> String {
    let csr = common::openssl_csr("lab-1.rp.test", "rsa:2048");
    let out =
        p.h.cmd("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary"])
            .arg(csr)
            .arg(format!(
                "http://10.{NET}.0.{server}:8080/pki/sign/lab-1?role={role}&token={token}"
            ))
            .output()
            .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One CA for the site: made in A's state directory, copied to B's.
fn one_ca(state_a: &Path, state_b: &Path) {
    let out = Command::new(provd_bin())
        .args(["pki", "init", "--pki-dir"])
        .arg(state_a.join("pki"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    copy_ca(&state_a.join("pki"), &state_b.join("pki"));
}

fn copy_ca(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in ["ca-cert.pem", "ca-key.pem"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

#[test]
fn the_pair_shares_one_inventory_and_never_offers_an_install_it_cannot_know_is_safe() {
    require_root_and_tools(&["ip", "curl"]);
    let p = lan();
    let w = Workdir::new();
    std::fs::create_dir_all(w.path("assets")).unwrap();
    let (cfg_a, cfg_b) = (config(&w, 1), config(&w, 2));
    let (state_a, state_b) = (w.path("state-a"), w.path("state-b"));
    // One CA for the site, on both servers.
    one_ca(&state_a, &state_b);

    let mut a = Daemon::start(&p.a, &cfg_a, &state_a, &w.path("a.log"));
    let mut b = Daemon::start(&p.b, &cfg_b, &state_b, &w.path("b.log"));
    wait_synced(&a, "A synchronised");
    wait_synced(&b, "B synchronised");

    // lab-1 takes its lease from the pair (busybox udhcpc), at its reservation.
    lease(&p, NET);

    // lab-1 installs through A.
    let token = token_in(&boot_script(&p, 1)).expect("A offers the install");
    assert_eq!(callback(&p, 1, &token, "installed"), "200");
    wait_until("B learns that lab-1 is installed", Duration::from_secs(20), || {
        (host(&b)["status"] == "installed").then_some(())
    });

    // A dies: B serves lab-1 its local disk, and knows why.
    a.kill9();
    let script = boot_script(&p, 2);
    assert!(token_in(&script).is_none() && script.contains("local disk"), "{script}");
    assert!(
        history(&b)
            .iter()
            .any(|h| h.contains("installer: installed: from the test")),
        "{:?}",
        history(&b)
    );

    // A reinstall on B: refused without --force (B knows lab-1 is installed), then asked for.
    assert!(cli_fails(&b, &["hosts", "reinstall", "lab-1"]).contains("--force"));
    b.cli(&["hosts", "reinstall", "lab-1", "--force"]);
    // A comes back and serves the install B asked for.
    a = Daemon::start(&p.a, &cfg_a, &state_a, &w.path("a.log"));
    wait_until("A learns of the reinstall", Duration::from_secs(40), || {
        let h = host(&a);
        (h["status"] == "assigned" && h["netboot"] == true).then_some(())
    });
    let token = token_in(&boot_script(&p, 1)).expect("A offers the install B asked for");
    wait_until("B learns of A's install session", Duration::from_secs(20), || {
        (host(&b)["install"]["token"] == token.as_str()).then_some(())
    });
    // The kickstart, once per install across the pair: served by A, refused by B once B
    // has learnt that step is taken.
    let kickstart = |n: u8| {
        let out =
            p.h.cmd("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("http://10.{NET}.0.{n}:8080/ks/lab-1?token={token}"))
                .output()
                .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(kickstart(1), "200", "kickstart from A");
    wait_until("B learns the kickstart is taken", Duration::from_secs(20), || {
        (host(&b)["install"]["steps"] == serde_json::json!(["kickstart"])).then_some(())
    });
    assert_eq!(kickstart(2), "403", "a second kickstart from B");
    // Each certificate role once per token across the pair: signed on B, spent on A too.
    assert_eq!(sign(&p, 2, &token, "server"), "200");
    wait_until("A learns the server role is spent", Duration::from_secs(20), || {
        (host(&a)["install"]["certificates_issued"] == serde_json::json!(["server"])).then_some(())
    });
    assert_eq!(
        sign(&p, 1, &token, "server"),
        "403",
        "a second server certificate from A"
    );
    assert_eq!(
        sign(&p, 1, &token, "client"),
        "403",
        "no migration certificate for a token, on either server"
    );
    wait_until("A learns of B's certificate", Duration::from_secs(20), || {
        let list: Value = serde_json::from_slice(&a.cli(&["pki", "list", "--json"]).stdout).ok()?;
        list["certificates"]
            .as_array()?
            .iter()
            .any(|c| c["host"] == "lab-1" && c["role"] == "server")
            .then_some(())
    });

    // A partition between the servers (the host still reaches both). An operator asks B
    // for a reinstall; the install that was already running ends on A.
    p.a.sh(&format!("ip route add blackhole 10.{NET}.0.2/32"));
    p.b.sh(&format!("ip route add blackhole 10.{NET}.0.1/32"));
    std::thread::sleep(Duration::from_millis(1100));
    b.cli(&["hosts", "reinstall", "lab-1"]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(callback(&p, 1, &token, "installed"), "200");
    assert_eq!(host(&a)["status"], "installed");
    assert_eq!(host(&b)["status"], "assigned");
    p.a.sh(&format!("ip route del blackhole 10.{NET}.0.2/32"));
    p.b.sh(&format!("ip route del blackhole 10.{NET}.0.1/32"));
    // Healed: the operator's reinstall (newer than the install that ended) wins on both,
    // and both keep both events.
    wait_until("the pair converges", Duration::from_secs(60), || {
        let (ha, hb) = (host(&a), host(&b));
        let same = ha["status"] == hb["status"] && ha["netboot"] == hb["netboot"];
        (same && ha["status"] == "assigned" && ha["netboot"] == true).then_some(())
    });
    for d in [&a, &b] {
        let h = history(d);
        assert!(h.iter().any(|x| x.contains("operator: reinstall")), "{h:?}");
        assert!(
            h.iter().filter(|x| x.contains("installer: installed")).count() >= 2,
            "{h:?}"
        );
    }

    // A fresh B: empty state directory (the CA copied back), A down. It knows nothing, so it
    // offers nothing; after its first synchronisation with A it knows what A knows.
    a.stop();
    b.stop();
    std::fs::remove_dir_all(&state_b).unwrap();
    copy_ca(&state_a.join("pki"), &state_b.join("pki"));
    let b = Daemon::start(&p.b, &cfg_b, &state_b, &w.path("b.log"));
    assert_eq!(replication(&b)["synced_at"], 0);
    let script = boot_script(&p, 2);
    assert!(
        token_in(&script).is_none(),
        "a never-synchronised server offered an install:\n{script}"
    );
    let a = Daemon::start(&p.a, &cfg_a, &state_a, &w.path("a.log"));
    wait_synced(&b, "the fresh B synchronised");
    let h = host(&b);
    assert_eq!(
        (h["status"].as_str(), h["netboot"].as_bool()),
        (Some("assigned"), Some(true))
    );
    assert!(history(&b).iter().any(|x| x.contains("operator: reinstall")));
    assert!(
        token_in(&boot_script(&p, 2)).is_some(),
        "synchronised, B serves the install A knows of"
    );
    drop(a);
}

/// Two servers with different CAs never pair: the TLS handshake fails (each checks that the
/// other's certificate chains to its own CA), neither synchronises, and neither offers an
/// install it cannot know is safe.
#[test]
fn servers_with_different_cas_do_not_pair() {
    require_root_and_tools(&["ip", "curl"]);
    let p = lan_named("rq", 95);
    let w = Workdir::new();
    std::fs::create_dir_all(w.path("assets")).unwrap();
    let (cfg_a, cfg_b) = (config_on(&w, 1, 95), config_on(&w, 2, 95));
    let (state_a, state_b) = (w.path("state-a"), w.path("state-b"));
    for s in [&state_a, &state_b] {
        let out = Command::new(provd_bin())
            .args(["pki", "init", "--pki-dir"])
            .arg(s.join("pki"))
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let a = Daemon::start(&p.a, &cfg_a, &state_a, &w.path("a.log"));
    let b = Daemon::start(&p.b, &cfg_b, &state_b, &w.path("b.log"));
    // (Before B listens, A's error is "connection refused"; then the handshake fails.)
    let err = wait_until("A reports the refused handshake", Duration::from_secs(30), || {
        replication(&a)["last_error"]
            .as_str()
            .filter(|e| e.contains("TLS"))
            .map(str::to_string)
    });
    eprintln!("A: {err}");
    for d in [&a, &b] {
        let r = replication(d);
        assert_eq!(
            (r["connected"].as_bool(), r["synced_at"].as_u64()),
            (Some(false), Some(0)),
            "{r}"
        );
    }
    let script =
        p.h.cmd("curl")
            .args([
                "-fsS",
                &format!("http://10.95.0.1:8080/boot/{}.ipxe", MAC.replace(':', "-")),
            ])
            .output()
            .unwrap();
    assert!(token_in(&String::from_utf8_lossy(&script.stdout)).is_none());
}

/// Issue 34: connections from the partner's address that never speak TLS hold nothing (the
/// real partner still synchronises while they stay open), and revoking the certificate the
/// partner connected with ends the running link, which stays down.
#[test]
fn silent_connections_from_the_partners_address_hold_nothing_and_revocation_ends_the_link() {
    require_root_and_tools(&["ip", "curl"]);
    let p = lan_named("rs", 96);
    let w = Workdir::new();
    std::fs::create_dir_all(w.path("assets")).unwrap();
    let (cfg_a, cfg_b) = (config_on(&w, 1, 96), config_on(&w, 2, 96));
    let (state_a, state_b) = (w.path("state-a"), w.path("state-b"));
    one_ca(&state_a, &state_b);

    let b = Daemon::start(&p.b, &cfg_b, &state_b, &w.path("b.log"));
    // Three silent TCP connections from A's address (in A's namespace), open before the
    // real A starts and for the rest of the test.
    let silent: Vec<std::net::TcpStream> = (0..3)
        .map(|_| {
            wait_until(
                "a silent connection to B's replication port",
                Duration::from_secs(20),
                || p.a.enter(|| std::net::TcpStream::connect("10.96.0.2:6769").ok()),
            )
        })
        .collect();
    let a = Daemon::start(&p.a, &cfg_a, &state_a, &w.path("a.log"));
    wait_synced(&a, "A synchronised despite the silent connections");
    wait_synced(&b, "B synchronised despite the silent connections");

    // B revokes the certificate A connected with (A's own, learnt in A's dump).
    let name = "replication rp 10.96.0.1";
    wait_until("B knows A's certificate", Duration::from_secs(20), || {
        let list: Value = serde_json::from_slice(&b.cli(&["pki", "list", "--json"]).stdout).ok()?;
        list["certificates"]
            .as_array()?
            .iter()
            .any(|c| c["host"] == name)
            .then_some(())
    });
    b.cli(&["pki", "revoke", name]);
    let err = wait_until("B ends the link", Duration::from_secs(20), || {
        let r = replication(&b);
        (r["connected"] == false).then(|| r["last_error"].as_str().unwrap_or_default().to_string())
    });
    assert!(err.contains("revoked"), "{err}");
    // A keeps dialling with the same certificate: refused every time.
    std::thread::sleep(Duration::from_secs(4));
    let r = replication(&b);
    assert_eq!(r["connected"], false, "{r}");
    drop(silent);
}
