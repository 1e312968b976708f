//! The region over two sites, black-box in network namespaces: site dca (one server) and
//! site dcb (a failover pair sharing one inventory), each with a booting host on its LAN,
//! and `provd region serve` in a third namespace reaching the sites' admin APIs over WAN
//! links with mutual TLS (the region's root cross-signs each site's CA; the sites accept
//! the region's admin certificate through `[daemon] region_ca`).
//!
//! - An install at dca (DHCP, boot script, callback) appears at the region within seconds.
//! - A reinstall issued at the region (`provd --region-config ... hosts reinstall`) runs at
//!   dcb: both servers of the pair show it.
//! - The WAN cut (the region's links down): both sites keep serving DHCP and installing;
//!   the region marks them stale and refuses to forward, queueing nothing; after the
//!   links come back it catches up, and its copy equals each site's own (every record,
//!   and dca's journal event for event: nothing lost, nothing twice).
//! - One server of the pair dies: the region follows the other.
//! - Sites revoked at the region: every server of the followed sites is handed the
//!   region's CRL (only the root's, only newer), and dca's hypervisor takes it with its
//!   own `refresh-crl` beside the site's list (openssl then finds the site revoked).
//! - A site revoked at the region is no longer followed or forwarded to, and the other
//!   site learns it.
//!
//! Needs root, ip, curl, busybox.

mod common;

use common::builder::{self, SiteBuilder};
use common::{ChildGuard, Daemon, Netns, Workdir, provd_bin, require_root_and_tools, run, veth, wait_until};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

const MAC_A: &str = "52:54:00:00:a1:0b";
const MAC_B: &str = "52:54:00:00:b1:0b";

/// A booting host on a site's LAN: its namespace, interface, MAC and reserved address.
struct Host<'a> {
    ns: &'a Netns,
    iface: &'static str,
    mac: &'static str,
    ip: &'static str,
    name: &'static str,
}

impl Host<'_> {
    /// A lease from the site (busybox udhcpc, one shot): it must be the reservation.
    fn lease(&self) {
        common::udhcpc_lease(self.ns, self.iface, self.ip);
    }

    fn boot_script(&self, server: &str) -> String {
        let out = self
            .ns
            .cmd("curl")
            .args([
                "-fsS",
                &format!("http://{server}:8080/boot/{}.ipxe", self.mac.replace(':', "-")),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The install: the boot script's token, then the installer's callbacks.
    fn install(&self, server: &str) {
        self.install_signing(server, None);
    }

    /// The same, asking for the libvirt server certificate (`fqdn`'s CSR) on the way, as
    /// the kickstart's %post does; provd's answer.
    fn install_signing(&self, server: &str, fqdn: Option<&str>) -> Option<String> {
        let script = self.boot_script(server);
        let token = token_in(&script).unwrap_or_else(|| panic!("{} is offered no install: {script}", self.name));
        let answer = fqdn.map(|fqdn| {
            let out = self
                .ns
                .cmd("curl")
                .args(["-fsS", "--data-binary", &common::openssl_csr(fqdn, "rsa:2048")])
                .arg(format!(
                    "http://{server}:8080/pki/sign/{}?role=server&token={token}",
                    self.name
                ))
                .output()
                .unwrap();
            assert!(out.status.success(), "sign: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap()
        });
        for event in ["installing", "installed"] {
            let out = self
                .ns
                .cmd("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-X",
                    "POST",
                    "--data",
                    "test",
                ])
                .arg(format!(
                    "http://{server}:8080/callback/{}/{event}?token={token}",
                    self.name
                ))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{event} callback");
        }
        answer
    }
}

fn token_in(script: &str) -> Option<String> {
    let i = script.find("?token=")?;
    Some(script[i + 7..].split_whitespace().next()?.to_string())
}

/// A site server's config: its LAN site, the admin API on its WAN address over TLS, and
/// the region's root as `region_ca`.
fn site_config(w: &Workdir, file: &str, site: SiteBuilder, wan: &str, region_root: &Path, more: &str) -> PathBuf {
    let plain = builder::config(&w.path("assets"), &[site.toml()]);
    let text = plain.replace(
        "api_listen = \"127.0.0.1:6767\"",
        &format!(
            "api_listen = \"{wan}:6767\"\napi_tls = true\nregion_ca = \"{}\"\n{more}",
            region_root.display()
        ),
    );
    assert_ne!(text, plain);
    w.write(file, &text)
}

fn provd(args: &[&str]) -> Output {
    run(Command::new(provd_bin()).args(args))
}

struct RegionCli<'a> {
    ns: &'a Netns,
    config: PathBuf,
}

impl RegionCli<'_> {
    fn output(&self, args: &[&str]) -> Output {
        self.ns
            .cmd(provd_bin())
            .arg("--region-config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.output(args);
        // `region sites` exits 1 while a site is not fresh; its JSON is still the answer.
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)))
    }

    fn site(&self, name: &str) -> Value {
        self.json(&["region", "sites", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    }

    fn host(&self, site: &str, name: &str) -> Option<Value> {
        self.json(&["region", "hosts", "--site", site, "--json"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["host"]["hostname"] == name)
            .map(|h| {
                // The site's record, with the region's freshness beside it.
                let mut record = h["host"].clone();
                record["health"] = h["health"].clone();
                record
            })
    }
}

/// What a copy must equal: each record's MAC, status, netboot and version.
fn records(hosts: &Value) -> BTreeSet<String> {
    hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{} {} {} {}", h["mac"], h["status"], h["netboot"], h["version"]))
        .collect()
}

fn site_hosts(d: &Daemon) -> Value {
    serde_json::from_slice(&d.cli(&["hosts", "list", "--json"]).stdout).unwrap()
}

fn host_of(d: &Daemon, name: &str) -> Value {
    serde_json::from_slice(&d.cli(&["hosts", "show", name, "--json"]).stdout).unwrap()
}

#[test]
fn the_region_follows_two_sites_forwards_writes_and_catches_up_after_a_wan_cut() {
    require_root_and_tools(&["ip", "curl", "busybox", "openssl", "chromium", "/usr/bin/python3"]);
    let w = Workdir::new();
    std::fs::create_dir_all(w.path("assets")).unwrap();

    // Namespaces: dca's server and host; dcb's two servers and host on a bridge; the region.
    let (a, ha) = (Netns::new("rga"), Netns::new("rgah"));
    veth(&a, "la", "10.161.0.1/24", &ha, "ha", "");
    ha.sh(&format!("ip link set ha address {MAC_A}"));
    let (br, b1, b2, hb) = (
        Netns::new("rgbr"),
        Netns::new("rgb1"),
        Netns::new("rgb2"),
        Netns::new("rgbh"),
    );
    br.sh("ip link add rbr0 type bridge && ip link set rbr0 up");
    for (ns, ifname, port, addr) in [
        (&b1, "lb", "q1", "10.162.0.1/24"),
        (&b2, "lb", "q2", "10.162.0.2/24"),
        (&hb, "hb", "qh", ""),
    ] {
        veth(ns, ifname, addr, &br, port, "");
        br.sh(&format!("ip link set {port} master rbr0"));
    }
    hb.sh(&format!("ip link set hb address {MAC_B}"));
    let r = Netns::new("rgr");
    veth(&a, "wan", "10.163.1.1/30", &r, "wa", "10.163.1.2/30");
    veth(&b1, "wan", "10.163.2.1/30", &r, "wb1", "10.163.2.2/30");
    veth(&b2, "wan", "10.163.3.1/30", &r, "wb2", "10.163.3.2/30");
    let wan_links = |state: &str| {
        for l in ["wa", "wb1", "wb2"] {
            r.sh(&format!("ip link set {l} {state}"));
        }
    };

    // The region's root, the sites' CAs (one for the pair), cross-signed.
    let region_toml = w.write(
        "region.toml",
        &format!(
            "[region]\nname = \"eu\"\nlisten = \"127.0.0.1:7070\"\nstate_dir = \"{}\"\nstale_after_secs = 15\n\n\
             [sites.dca]\nurls = [\"https://10.163.1.1:6767\"]\n\n\
             [sites.dcb]\nurls = [\"https://10.163.2.1:6767\", \"https://10.163.3.1:6767\"]\n",
            w.path("region").display()
        ),
    );
    let region_cfg = region_toml.display().to_string();
    provd(&["region", "init", "--config", &region_cfg]);
    let root = w.path("region/pki/ca-cert.pem");
    let (state_a, state_b1, state_b2) = (w.path("state-a"), w.path("state-b1"), w.path("state-b2"));
    for s in [&state_a, &state_b1] {
        provd(&["pki", "init", "--pki-dir", &s.join("pki").display().to_string()]);
    }
    std::fs::create_dir_all(state_b2.join("pki")).unwrap();
    for f in ["ca-cert.pem", "ca-key.pem"] {
        std::fs::copy(state_b1.join("pki").join(f), state_b2.join("pki").join(f)).unwrap();
    }
    for (site, state) in [("dca", &state_a), ("dcb", &state_b1)] {
        let ca = state.join("pki/ca-cert.pem").display().to_string();
        provd(&["region", "add-site", site, "--ca", &ca, "--config", &region_cfg]);
    }

    // The sites.
    let site_a = SiteBuilder::new("dca", "10.161.0.1")
        .listen("la")
        .subnet(
            "10.161.0.0/24",
            ("10.161.0.100", "10.161.0.199"),
            &["domain = \"dca.test\""],
        )
        .host(MAC_A, "hva1", &["ip = \"10.161.0.11\"", "profile = \"el9-kvm\""]);
    // dca hands its hypervisors the region's trust (its cross-certificate from add-site).
    let cross_a = w.path("region/pki/sites/dca.pem");
    let cfg_a = site_config(
        &w,
        "a.toml",
        site_a,
        "10.163.1.1",
        &root,
        &format!("region_cross_cert = \"{}\"", cross_a.display()),
    );
    let pair = |me: u8| {
        let (role, peer) = if me == 1 { ("primary", 2) } else { ("secondary", 1) };
        let primary_only = if me == 1 { "mclt = 30\nsplit = 128\n" } else { "" };
        SiteBuilder::new("dcb", &format!("10.162.0.{me}"))
            .listen("lb")
            .subnet(
                "10.162.0.0/24",
                ("10.162.0.100", "10.162.0.199"),
                &["domain = \"dcb.test\""],
            )
            .host(MAC_B, "hvb1", &["ip = \"10.162.0.11\"", "profile = \"el9-kvm\""])
            .raw(&format!(
                "[sites.dcb.failover]\nname = \"dcb\"\nrole = \"{role}\"\naddress = \"10.162.0.{me}\"\n\
                 peer_address = \"10.162.0.{peer}\"\nmax_response_delay = 6\n{primary_only}"
            ))
    };
    let cfg_b1 = site_config(&w, "b1.toml", pair(1), "10.163.2.1", &root, "");
    let cfg_b2 = site_config(&w, "b2.toml", pair(2), "10.163.3.1", &root, "");
    let da = Daemon::start(&a, &cfg_a, &state_a, &w.path("a.log"));
    let mut db1 = Daemon::start(&b1, &cfg_b1, &state_b1, &w.path("b1.log"));
    let db2 = Daemon::start(&b2, &cfg_b2, &state_b2, &w.path("b2.log"));
    for d in [&db1, &db2] {
        wait_until("the pair synchronised", Duration::from_secs(40), || {
            let v: Value = serde_json::from_slice(&d.cli(&["failover", "replication", "--json"]).stdout).unwrap();
            (v[0]["connected"] == true && v[0]["last_sync"].as_u64().unwrap_or(0) > 0).then_some(())
        });
    }

    // The region, in its own namespace.
    let log = std::fs::File::create(w.path("region.log")).unwrap();
    let _region = ChildGuard::spawn(
        r.cmd(provd_bin())
            .args(["region", "serve", "--config", &region_cfg])
            .env("PROVD_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(log),
    );
    let cli = RegionCli {
        ns: &r,
        config: region_toml.clone(),
    };
    let _log = PrintOnFailure(w.path("region.log"));
    wait_until("the region hears from both sites", Duration::from_secs(30), || {
        let out = cli.output(&["region", "sites"]);
        out.status.success().then_some(())
    });
    console_checks(&r, &w);
    // The console in Chromium: both sites fresh, the site filter; it is told to watch
    // for the WAN cut below.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("region-console.png");
    let _ = std::fs::remove_file(&shot);
    let token = std::fs::read_to_string(w.path("region/api-token")).unwrap();
    let mut browser = ChildGuard::spawn(
        r.cmd("/usr/bin/python3")
            .arg(common::repo("tests/browser/region_console.py"))
            .arg("http://127.0.0.1:7070/console")
            .arg(token.trim())
            .arg(&shot)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    );
    let mut said = BufReader::new(browser.child().stdout.take().unwrap()).lines();
    let mut expect = |want: &str| {
        let line = said.next().expect("the console driver ended early").unwrap();
        assert!(line.starts_with(want), "wanted {want}, the console driver said: {line}");
    };
    expect("REFUSED");
    expect("LIVE");
    expect("FILTERED");
    expect("READY");
    let vms = |site: &str| region_get(&r, &w, &format!("/api/region/sites/{site}/vms"));
    let (code, body) = vms("dcb");
    assert!(
        code == "200" && body.contains("\"vms\":[]"),
        "the site's VMs, asked live: {code} {body}"
    );
    let before = cli.site("dcb");
    assert_eq!(before["health"], "fresh", "{before}");
    assert_eq!(before["hosts"], 1);

    // An install at dca appears at the region within seconds.
    let host_a = Host {
        ns: &ha,
        iface: "ha",
        mac: MAC_A,
        ip: "10.161.0.11",
        name: "hva1",
    };
    host_a.lease();
    let answer = host_a.install_signing("10.161.0.1", Some("hva1.dca.test")).unwrap();
    assert_eq!(host_of(&da, "hva1")["status"], "installed");
    region_chain_checks(&w, &answer, &root, &cross_a);
    // The region holds no install token: the site's record has one, its copy does not.
    let token_at_site = host_of(&da, "hva1")["install"]["token"].as_str().unwrap().to_string();
    assert!(!token_at_site.is_empty());
    let copy = wait_until("hva1's copy at the region", Duration::from_secs(10), || {
        cli.host("dca", "hva1")
    });
    assert_eq!(copy["install"]["token"], "", "the region's copy carries no token");
    // dca's kickstart allows other sites' migration certificates; dcb's (no region chain) not.
    let ks = |d: &Daemon, host: &str| String::from_utf8(d.cli(&["render", "ks", host]).stdout).unwrap();
    assert!(ks(&da, "hva1").contains("\"O=*,OU=site * migration,CN=*\""));
    assert!(!ks(&db1, "hvb1").contains("OU=site * migration"));
    wait_until(
        "the install at dca shows at the region",
        Duration::from_secs(10),
        || {
            cli.host("dca", "hva1")
                .filter(|h| h["status"] == "installed")
                .map(|_| ())
        },
    );

    // The region's revocations reach every site and dca's hypervisor.
    let ks_a = ks(&da, "hva1");
    // hvb1's reserved address (boot listeners answer only machines provd knows).
    hb.sh("ip addr add 10.162.0.11/24 dev hb");
    region_crl_checks(&w, [&a, &ha, &hb], &state_a, &answer, &ks_a);
    // The region says which list each site holds (every address of the pair).
    let current = provd::pki::crl_number(&std::fs::read_to_string(w.path("region/pki/crl.pem")).unwrap());
    for site in ["dca", "dcb"] {
        wait_until(&format!("{site}'s CRL at the region"), Duration::from_secs(20), || {
            (cli.site(site)["crl_number"].as_u64() == current).then_some(())
        });
    }

    // A reinstall issued at the region runs at dcb (the pair's inventory is one).
    assert_eq!(host_of(&db1, "hvb1")["status"], "assigned");
    let host_b = Host {
        ns: &hb,
        iface: "hb",
        mac: MAC_B,
        ip: "10.162.0.11",
        name: "hvb1",
    };
    host_b.lease();
    host_b.install("10.162.0.1");
    wait_until("hvb1 installed at the region", Duration::from_secs(10), || {
        cli.host("dcb", "hvb1")
            .filter(|h| h["status"] == "installed")
            .map(|_| ())
    });
    let refused = cli.output(&["hosts", "reinstall", "hvb1"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("installed"),
        "without --force, dcb refuses: {said}"
    );
    let out = cli.output(&["hosts", "reinstall", "hvb1", "--force"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hvb1 at site dcb: assigned"));
    for d in [&db1, &db2] {
        wait_until(
            "the reinstall reached both servers of dcb",
            Duration::from_secs(20),
            || {
                let h = host_of(d, "hvb1");
                (h["status"] == "assigned" && h["netboot"] == true).then_some(())
            },
        );
    }
    wait_until("and shows at the region", Duration::from_secs(15), || {
        cli.host("dcb", "hvb1")
            .filter(|h| h["status"] == "assigned")
            .map(|_| ())
    });
    // A batch deploy goes to the site it names, which answers for its own hypervisors.
    let out = cli.output(&[
        "vm",
        "deploy",
        "--site",
        "dca",
        "--from",
        "centos.template",
        "--count",
        "2",
        "--name-pattern",
        "web-{n}",
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && said.contains("site \"dca\" has no ready, undrained hypervisor")
            && said.contains("HTTP 409"),
        "dca's own refusal (no ready hypervisor), through the region: {said}"
    );
    // A host name cannot smuggle a query or another path into the site's URL: the site is
    // asked for a host named "hvb1?force=true#" (none), not for hvb1 with force.
    let (code, body) = region_request(
        &r,
        &w,
        "POST",
        "/api/region/sites/dcb/hosts/hvb1%3Fforce=true%23/reinstall",
    );
    assert!(code == "404", "{code} {body}");
    let unknown = cli.output(&["hosts", "reinstall", "nosuch"]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no site the region follows has a host"));

    // The WAN is cut: the sites go on alone.
    wan_links("down");
    // dca: a reinstall by its own operator, a lease and the install.
    da.cli(&["hosts", "reinstall", "hva1", "--force"]);
    host_a.lease();
    host_a.install("10.161.0.1");
    // dcb: hvb1 (reinstall asked by the region) installs through the secondary.
    host_b.lease();
    host_b.install("10.162.0.2");
    assert_eq!(host_of(&da, "hva1")["status"], "installed");
    wait_until("dcb's primary learns the install", Duration::from_secs(20), || {
        (host_of(&db1, "hvb1")["status"] == "installed").then_some(())
    });
    browser.child().stdin.as_mut().unwrap().write_all(b"GO\n").unwrap();
    wait_until("the region marks both sites stale", Duration::from_secs(60), || {
        let sites = cli.json(&["region", "sites", "--json"]);
        sites
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["health"] == "stale" && s["error"].is_string())
            .then_some(())
    });
    let (code, body) = vms("dca");
    assert!(code == "503" && body.contains("was not reached"), "{code} {body}");
    expect("STALE");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot in {}", shot.display());
    drop(browser);
    // The region still shows what it last knew, marked stale.
    let copy = cli.host("dcb", "hvb1").unwrap();
    assert_eq!(
        (copy["status"].as_str(), copy["health"].as_str()),
        (Some("assigned"), Some("stale"))
    );
    // A write for a site it cannot reach is refused, not queued.
    let out = cli.output(&["hosts", "netboot", "hva1", "off"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("was not reached") && said.contains("nothing was queued"),
        "{said}"
    );

    // The WAN is back: the region catches up, and its copy is each site's own.
    wan_links("up");
    wait_until("the region catches up with both sites", Duration::from_secs(60), || {
        let fresh = cli.output(&["region", "sites"]).status.success();
        let a_ok = cli.host("dca", "hva1").is_some_and(|h| h["status"] == "installed");
        let b_ok = cli.host("dcb", "hvb1").is_some_and(|h| h["status"] == "installed");
        (fresh && a_ok && b_ok).then_some(())
    });
    // Nothing was queued: hva1's netboot is what dca itself last set (off after its install).
    assert_eq!(host_of(&da, "hva1")["netboot"], false);
    let copy_of = |site: &str| -> Value {
        let all = cli.json(&["region", "hosts", "--site", site, "--json"]);
        Value::Array(all.as_array().unwrap().iter().map(|h| h["host"].clone()).collect())
    };
    let (region_a, region_b) = (copy_of("dca"), copy_of("dcb"));
    assert_eq!(records(&region_a), records(&site_hosts(&da)), "dca's copy");
    assert_eq!(records(&region_b), records(&site_hosts(&db1)), "dcb's copy");
    assert_eq!(
        region_a.as_array().unwrap().len(),
        site_hosts(&da).as_array().unwrap().len()
    );
    // dca's journal, event for event (the region follows one server there).
    let events_at_a = journal(&a, &state_a);
    let events_at_region = cli.json(&["region", "events", "--site", "dca", "--limit", "5000", "--json"]);
    let key = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| format!("{} {} {}", e["at"], e["kind"], e["detail"]))
            .collect()
    };
    let (at_site, at_region) = (key(&events_at_a), key(&events_at_region));
    assert!(at_site.len() >= 8, "dca recorded both boots: {at_site:?}");
    // The region may have read a few more since the site's list was taken: compare the prefix.
    assert_eq!(at_region[..at_site.len()], at_site[..], "every event once, in order");
    let stats = cli.site("dca");
    assert!(stats["pages"].as_u64().unwrap() > 1, "{stats}");

    // dcb's primary dies: the region follows the secondary.
    db1.kill9();
    wait_until("the region follows dcb's secondary", Duration::from_secs(60), || {
        let s = cli.site("dcb");
        (s["reached"] == "https://10.163.3.1:6767" && s["health"] == "fresh").then_some(())
    });

    // dca is revoked at the region: no longer followed, nothing forwarded; dcb (its
    // secondary, the server still up) is handed the list that names dca.
    let said = provd(&["region", "revoke-site", "dca", "--config", &region_cfg]).stdout;
    let said = String::from_utf8_lossy(&said);
    let dca_serial = said
        .split("cross-certificate ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    wait_until(
        "dcb's secondary serves the list naming dca",
        Duration::from_secs(40),
        || region_list(&hb, "10.162.0.2", &root).filter(|f| f.revoked.iter().any(|s| s == dca_serial)),
    );
    wait_until("the region stops following dca", Duration::from_secs(40), || {
        (cli.site("dca")["error_kind"] == "revoked").then_some(())
    });
    let out = cli.output(&["hosts", "reinstall", "hva1", "--force"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("revoked"), "{said}");
    assert_eq!(host_of(&da, "hva1")["status"], "installed", "dca never got it");
}

/// The region's list as a site serves it to its hypervisors, verified against the root.
fn region_list(ns: &Netns, server: &str, root: &Path) -> Option<provd::pki::region_crl::CrlFacts> {
    let out = ns
        .cmd("curl")
        .args(["-fsS", &format!("http://{server}:8080/pki/region-crl.pem")])
        .output()
        .unwrap();
    let root = std::fs::read_to_string(root).unwrap();
    let got = provd::pki::region_crl::check(&String::from_utf8_lossy(&out.stdout), &root);
    if let Err(e) = &got {
        eprintln!("{server}: {e}: {}", String::from_utf8_lossy(&out.stderr));
    }
    got.ok()
}

/// POST `body` to one of dca's admin API paths (its token, its CA): (status, body).
fn site_post(ns: &Netns, state: &Path, path: &str, body: &Path) -> (String, String) {
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let (said, code) = common::curl_status(
        ns,
        &[
            "--cacert",
            &state.join("pki/ca-cert.pem").display().to_string(),
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("https://10.163.1.1:6767{path}"),
        ],
    );
    (code, said)
}

/// Two sites leave the region (revoked there; they are not among the followed ones, as a
/// decommissioned site would be). Every server of both followed sites is handed the
/// region's list; dca's hypervisor takes it with its own `refresh-crl` (from its
/// kickstart) into the one file libvirt reads, beside the site's list, and openssl finds
/// the revoked site's certificate revoked there. Neither a list signed by the site's own
/// CA nor the region's older list is accepted, by the site or by the hypervisor.
/// `a`: dca's server; `ha`, `hb`: the hosts on dca's and dcb's LANs.
fn region_crl_checks(w: &Workdir, [a, ha, hb]: [&Netns; 3], state_a: &Path, answer: &str, ks_a: &str) {
    use provd::region::trust::Trust;
    let trust = Trust::new(w.path("region/pki"));
    let root = w.path("region/pki/ca-cert.pem");
    let leaving = |name: &str| {
        let dir = w.path(name);
        provd(&["pki", "init", "--pki-dir", &dir.display().to_string()]);
        let ca = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap();
        let (cross, _) = trust.add_site(name, &ca).unwrap();
        let serial = trust.revoke_site(name, provd::clock::unix_now()).unwrap();
        (w.write(&format!("{name}-cross.pem"), &cross), serial)
    };
    let (dcz_cross, dcz) = leaving("dcz");
    let first = std::fs::read_to_string(w.path("region/pki/crl.pem")).unwrap();
    let first_file = w.write("region-crl-first.pem", &first);
    // Signed within the same second as the first, and still numbered above it.
    let (_, dcy) = leaving("dcy");
    let both = |f: &provd::pki::region_crl::CrlFacts| f.revoked.contains(&dcz) && f.revoked.contains(&dcy);
    for (ns, server) in [(ha, "10.161.0.1"), (hb, "10.162.0.1"), (hb, "10.162.0.2")] {
        wait_until(
            &format!("{server} serves the region's list"),
            Duration::from_secs(40),
            || region_list(ns, server, &root).filter(both),
        );
    }

    // The site keeps only the root's newer lists, whoever asks.
    let (code, said) = site_post(a, state_a, "/api/pki/region-crl", &first_file);
    assert!(code == "409" && said.contains("kept_number"), "{code} {said}");
    let own_ca = provd::pki::Ca::load(&state_a.join("pki")).unwrap();
    let forged = own_ca
        .crl(&[], time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .unwrap();
    let (code, said) = site_post(a, state_a, "/api/pki/region-crl", &w.write("forged.pem", &forged));
    assert!(
        code == "422" && said.contains("not by the region's root"),
        "{code} {said}"
    );
    assert!(region_list(ha, "10.161.0.1", &root).is_some_and(|f| both(&f)));

    // dca's hypervisor: its CA file as the certificate answer gave it (site CA and root),
    // its refresh-crl as its kickstart wrote it.
    let script = ks_a
        .split("cat > /etc/provd/refresh-crl <<'PROVD_EOF'\n")
        .nth(1)
        .and_then(|rest| rest.split("\nPROVD_EOF\n").next())
        .expect("dca's kickstart writes refresh-crl");
    let script = w.write("refresh-crl", script);
    // The region's part of the %post (the first lists) is bash that parses.
    for (i, post) in ks_a.split("\n%post").skip(1).enumerate() {
        let body = post.split_once('\n').unwrap().1.split("\n%end").next().unwrap();
        let file = w.write(&format!("post-{i}.sh"), body);
        let out = Command::new("bash").arg("-n").arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "%post {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if body.contains("/pki/region-crl.pem") {
            assert!(body.contains("CA/provd-crl/region.pem"), "the first region list");
        }
    }
    assert!(
        ks_a.contains("take region "),
        "dca's refresh-crl takes the region's list"
    );
    let pki = w.path("hva1-pki");
    std::fs::create_dir_all(pki.join("CA")).unwrap();
    let (ca_part, _) = answer.split_once("# provd: server\n").unwrap();
    std::fs::write(pki.join("CA/cacert.pem"), ca_part.trim_start_matches("# provd: ca\n")).unwrap();
    let shims = w.path("hva1-shims");
    std::fs::create_dir_all(&shims).unwrap();
    let calls = w.path("hva1-calls.log");
    w.write(
        "hva1-shims/systemctl",
        &format!("#!/bin/sh\necho \"systemctl $*\" >> {}\n", calls.display()),
    );
    run(Command::new("chmod").arg("+x").arg(shims.join("systemctl")));
    let refresh = |env: &[(&str, &Path)]| -> String {
        let mut cmd = ha.cmd("sh");
        cmd.arg(&script).env("PROVD_PKI_DIR", &pki).env(
            "PATH",
            format!("{}:{}", shims.display(), std::env::var("PATH").unwrap()),
        );
        for (k, v) in env {
            cmd.env(k, format!("file://{}", v.display()));
        }
        let out = cmd.output().unwrap();
        format!(
            "{}{}exit {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            out.status.code().unwrap_or(-1)
        )
    };
    let restarts = || std::fs::read_to_string(&calls).unwrap_or_default().lines().count();
    let got = refresh(&[]);
    assert!(got.contains("CRL updated") && got.ends_with("exit 0"), "{got}");
    assert_eq!(restarts(), 1, "{got}");
    let installed = std::fs::read_to_string(pki.join("CA/cacrl.pem")).unwrap();
    assert_eq!(
        installed.matches("BEGIN X509 CRL").count(),
        2,
        "the site's list and the region's"
    );
    // openssl, trusting the root, finds the leaving site's certificate revoked in that file.
    let out = Command::new("openssl")
        .args(["verify", "-crl_check", "-CAfile"])
        .arg(&root)
        .arg("-CRLfile")
        .arg(pki.join("CA/cacrl.pem"))
        .arg(&dcz_cross)
        .output()
        .unwrap();
    let verdict = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && verdict.contains("revoked"), "{verdict}");
    // Nothing new: nothing installed, no restart. The region's older list replayed by a
    // machine on the boot network: refused, the newer one stays.
    let again = refresh(&[]);
    assert!(!again.contains("CRL updated") && again.ends_with("exit 0"), "{again}");
    let replay = refresh(&[("PROVD_REGION_CRL_URL", &first_file)]);
    assert!(
        replay.contains("not higher than the installed one's") && replay.ends_with("exit 1"),
        "{replay}"
    );
    assert_eq!(std::fs::read_to_string(pki.join("CA/cacrl.pem")).unwrap(), installed);
    assert_eq!(restarts(), 1);
}

/// What a hypervisor of a site in the region gets with its certificate: the site's CA and
/// the region's root for its CA file, its certificate followed by the site's
/// cross-certificate; openssl, trusting only the root, then verifies it.
fn region_chain_checks(w: &Workdir, answer: &str, root: &Path, cross: &Path) {
    let (ca_part, cert_part) = answer.split_once("# provd: server\n").expect("the answer's two parts");
    let count = |t: &str| t.matches("BEGIN CERTIFICATE").count();
    assert_eq!((count(ca_part), count(cert_part)), (2, 2), "{answer}");
    let root_pem = std::fs::read_to_string(root).unwrap();
    let cross_pem = std::fs::read_to_string(cross).unwrap();
    assert!(ca_part.contains(root_pem.trim()) && cert_part.trim_end().ends_with(cross_pem.trim()));
    let leaf = w.write("hva1-server.pem", cert_part);
    let out = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(cross)
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
}

/// GET a region API path with the region's token: (status, body).
fn region_get(r: &Netns, w: &Workdir, path: &str) -> (String, String) {
    region_request(r, w, "GET", path)
}

/// `method` on a region API path with the region's token: (status, body).
fn region_request(r: &Netns, w: &Workdir, method: &str, path: &str) -> (String, String) {
    let token = std::fs::read_to_string(w.path("region/api-token")).unwrap();
    let (body, code) = common::curl_status(
        r,
        &[
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://127.0.0.1:7070{path}"),
        ],
    );
    (code, body)
}

/// The region's console: the token signs in once, the cookie then reads the page and the
/// API; a change through the cookie needs the console's header.
fn console_checks(r: &Netns, w: &Workdir) {
    let curl = |args: &[&str]| common::curl_status(r, args);
    let base = "http://127.0.0.1:7070";
    let (page, code) = curl(&[&format!("{base}/console")]);
    assert!(code == "401" && page.contains("Sign in"), "{code} {page}");
    let (_, code) = curl(&["--data", "token=wrong", &format!("{base}/console/login")]);
    assert_eq!(code, "401");
    let jar = w.path("cookies");
    let jar = jar.to_str().unwrap();
    let token = std::fs::read_to_string(w.path("region/api-token")).unwrap();
    let (_, code) = curl(&[
        "-c",
        jar,
        "--data",
        &format!("token={}", token.trim()),
        &format!("{base}/console/login"),
    ]);
    assert_eq!(code, "303");
    let (page, code) = curl(&["-b", jar, &format!("{base}/console")]);
    assert!(
        code == "200" && page.contains("provd region <span id=\"region\">eu</span>"),
        "{code} {page}"
    );
    let (script, code) = curl(&["-b", jar, &format!("{base}/console/app.js")]);
    assert!(code == "200" && script.contains("site-filter"));
    let (sites, code) = curl(&["-b", jar, &format!("{base}/api/region/sites")]);
    assert!(code == "200" && sites.contains("\"dca\""), "{code} {sites}");
    let forward = format!("{base}/api/region/sites/dcb/hosts/hvb1/netboot/off");
    let (said, code) = curl(&["-b", jar, "-X", "POST", &forward]);
    assert!(code == "403" && said.contains("X-Provd-Console"), "{code} {said}");
    let (_, code) = curl(&["-X", "POST", &forward]);
    assert_eq!(code, "401", "no credential, no forward");
}

/// The region's log, shown when the test fails.
struct PrintOnFailure(PathBuf);

impl Drop for PrintOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- region log ---\n{}",
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

/// dca's journal through its admin API (curl with its token and CA).
fn journal(a: &Netns, state: &Path) -> Value {
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let out = a
        .cmd("curl")
        .args(["-fsS", "--cacert"])
        .arg(state.join("pki/ca-cert.pem"))
        .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
        .arg("https://10.163.1.1:6767/api/events")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}
