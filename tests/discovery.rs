//! Discovery and adoption against the real binary (no VM: the facts are posted with curl
//! from the address the machine leased): an unknown machine's boot script boots the
//! discovery image; its facts are accepted only from the address its MAC holds, bounded,
//! and shown by `hosts list --discovered`; `hosts adopt` writes `hosts-<site>.toml` and
//! reloads, refuses a conflicting entry leaving the file as it was, and the adopted machine
//! then gets an install. (The lab test boots a real VM through the same path.) provd runs
//! in the test process (`common::served`) on 127.93.0.1; the machine is 127.93.0.x. No root.

mod common;

use common::builder::SiteBuilder;
use common::client::{dora_relayed, mac};
use common::served::{Served, Sockets};
use common::{Workdir, require_tools};
use std::net::Ipv4Addr;

const NET: u8 = 93;

#[test]
fn a_discovered_machine_reports_itself_and_is_adopted_into_a_host_file() {
    require_tools(&["curl"]);
    let work = Workdir::new();
    let assets = work.path("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let sockets = Sockets::bind(&[("d", Ipv4Addr::new(127, NET, 0, 1))]);
    let http = sockets.http(0);
    let site = SiteBuilder::new("d", &format!("127.{NET}.0.1"))
        .field(&format!("http_port = {}", http.port()))
        .listen("lo")
        .dhcp(&format!("relays = [\"127.{NET}.0.1\"]"))
        .dhcp("unknown_clients = \"discover\"")
        .subnet(
            &format!("127.{NET}.0.0/24"),
            (&format!("127.{NET}.0.100"), &format!("127.{NET}.0.200")),
            &[],
        )
        .host("52:54:00:00:93:01", "taken", &[&format!("ip = \"127.{NET}.0.61\"")])
        .raw("[sites.d.discovery]\nkernel = \"disc/vmlinuz\"\ninitrd = \"disc/initrd\"\nkernel_args = \"console=ttyS0\"\n");
    let conf = work.path("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let state = work.path("state");
    let text = sockets.config(&assets, &state, &[site.toml()]);
    std::fs::write(conf.join("site.toml"), text).unwrap();
    let daemon = Served::start(sockets, &conf, &state);

    // An unknown machine leases an address (relayed, as the lab's VMs are bridged).
    let m = mac(0x0000_9342);
    let mac_text = "52:54:00:00:93:42";
    let leased = dora_relayed(&daemon.relay, daemon.dhcp[0], daemon.giaddr(), m, 7)
        .1
        .yiaddr();
    let base = format!("http://{http}");
    let curl = |from: &str, args: &[&str]| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-s", "--interface", from, "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    let me = leased.to_string();

    // Its boot script boots the discovery image, telling it where to report.
    let (code, script) = curl(&me, &[&format!("{base}/boot/52-54-00-00-93-42.ipxe")]);
    assert_eq!(code, "200");
    assert!(
        script.contains(&format!("kernel {base}/assets/disc/vmlinuz"))
            && script.contains(&format!("provd.discover={base}/discover/52-54-00-00-93-42"))
            && script.contains("provd.then=poweroff"),
        "{script}"
    );

    let facts = r#"{"cpus":4,"cpu_model":"Test CPU","memory_mib":8192,"system_serial":"SN-93",
        "disks":[{"name":"sda","size_bytes":480103981056,"serial":"DISK-1"}],
        "nics":[{"name":"eth0","mac":"52:54:00:00:93:42","link":"up"}]}"#;
    let post = |from: &str, target: &str, body: &str| {
        curl(
            from,
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
                &format!("{base}/discover/{target}"),
            ],
        )
    };
    // Liars: another address posting for this MAC (it has no lease: the boot listener
    // closes it at accept, curl's "000"), this address posting for another MAC (403).
    assert_eq!(post(&format!("127.{NET}.0.2"), "52-54-00-00-93-42", facts).0, "000");
    assert_eq!(post(&me, "52-54-00-00-93-43", facts).0, "403");
    // Malformed and oversized reports are refused.
    assert_eq!(post(&me, "52-54-00-00-93-42", "{not json").0, "400");
    let huge = format!("{{\"cpu_model\":\"{}\"}}", "x".repeat(70 * 1024));
    assert_eq!(post(&me, "52-54-00-00-93-42", &huge).0, "413");
    let many = format!("{{\"disks\":[{}]}}", vec!["{\"name\":\"d\"}"; 65].join(","));
    assert_eq!(post(&me, "52-54-00-00-93-42", &many).0, "400");
    // The real report.
    assert_eq!(
        post(&me, "52-54-00-00-93-42", facts),
        ("200".to_string(), "poweroff\n".to_string())
    );

    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&daemon.cli(&["hosts", "list", "--discovered", "--json"]).stdout).unwrap();
    assert_eq!(list.len(), 1, "{list:#?}");
    assert_eq!(list[0]["mac"], mac_text);
    assert_eq!(list[0]["facts"]["memory_mib"], 8192);
    assert_eq!(list[0]["facts"]["disks"][0]["serial"], "DISK-1");
    assert_eq!(list[0]["site"], "d");
    let table = String::from_utf8_lossy(&daemon.cli(&["hosts", "list", "--discovered"]).stdout).to_string();
    assert!(
        table.contains("8192") && table.contains("sda 447G") && table.contains("SN-93"),
        "{table}"
    );

    // Adopting under a hostname that is taken: refused by the reload's own validation, and
    // the host file is as it was (here: never created).
    let file = conf.join("hosts-d.toml");
    let refused = daemon.cli_output(&["hosts", "adopt", mac_text, "--hostname", "taken", "--profile", "el9"]);
    let why = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success() && why.contains("duplicate hostname taken"),
        "{why}"
    );
    assert!(!file.exists(), "a refused adoption left {}", file.display());

    let out = daemon.cli(&[
        "hosts",
        "adopt",
        mac_text,
        "--hostname",
        "new93",
        "--profile",
        "el9",
        "--ip",
        &format!("127.{NET}.0.93"),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("is now new93 (assigned)"), "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("[[hosts]]") && text.contains("hostname = \"new93\"") && text.contains("site = \"d\""),
        "{text}"
    );
    // `provd check` accepts the directory with the written file.
    let check = std::process::Command::new(common::provd_bin())
        .arg("check")
        .arg(&conf)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));

    // Adopted: it is offered an install now (from the address it holds), not discovery,
    // and a second adoption is refused.
    let (code, script) = curl(&me, &[&format!("{base}/boot/52-54-00-00-93-42.ipxe")]);
    assert_eq!(code, "200");
    assert!(
        script.contains("installing new93 with profile") && !script.contains("provd.discover"),
        "{script}"
    );
    let again = daemon.cli_output(&["hosts", "adopt", mac_text, "--hostname", "other", "--profile", "el9"]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("not a discovered machine"));
    // It has no BMC, so --power is refused before anything changes.
    let nobmc = daemon.cli_output(&["hosts", "reinstall", "new93", "--power"]);
    assert!(
        String::from_utf8_lossy(&nobmc.stdout).contains("has no BMC"),
        "{}",
        String::from_utf8_lossy(&nobmc.stdout)
    );
}
