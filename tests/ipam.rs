//! Issue 35's IPAM against provd serving in this process: hosts whose profile's network has
//! management and migration bridges get one address each from their site's pools, shown
//! by `/api/ipam` and `provd hosts show`; a host that leaves the config gives its address
//! back and a newcomer takes the lowest free one, the others keep theirs; a full pool
//! leaves the newcomer without (and nobody else loses one); a restart keeps every address.
//! A host's kickstart carries its profile's bonds and these addresses (ksvalidator checks it).
//! The refusal of a pool that overlaps a DHCP range is a config fixture
//! (`tests/fixtures/config/bad/ipam_pool_overlaps_dhcp.toml`).

mod common;

use common::builder::SiteBuilder;
use common::served::{Served, Sockets};
use common::{Workdir, wait_until};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

const NET: u8 = 97;

/// The Debian image's profile with the worked network (its image is written by the test).
const DEBIAN_PROFILE: &str = r#"
[profiles.deb-bonded]
os = "debian12"
kernel = "el9/vmlinuz"
initrd = "el9/initrd.img"
kickstart = "kickstart/debian12-image.ks.j2"
image = "tiny"
certificates = ["server"]
[profiles.deb-bonded.network]
ports = [{ name = "ens1f0", mac = "52:54:00:aa:97:01" }, { name = "ens1f1", mac = "52:54:00:aa:97:02" }]
bonds = [{ name = "bond0", members = ["ens1f0", "ens1f1"], mode = "802.3ad" }]
vlans = [{ id = 20, on = "bond0" }, { id = 100, on = "bond0" }]
bridges = [
  { name = "br-boot", on = "bond0", role = "boot" },
  { name = "br-mig", on = "bond0.20", role = "migration" },
  { name = "br-t100", on = "bond0.100", role = "tenant" },
]
"#;

/// A 64 KiB gzip'd raw image and its checksum sidecar: what `image = "tiny"` needs.
fn write_image(assets: &std::path::Path) {
    let images = assets.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let raw = images.join("tiny.raw");
    std::fs::write(&raw, vec![7u8; 64 << 10]).unwrap();
    common::run(std::process::Command::new("gzip").arg("-1").arg(&raw));
    let sum = common::run(std::process::Command::new("sha256sum").arg(images.join("tiny.raw.gz"))).stdout;
    let sum = String::from_utf8(sum).unwrap();
    let sum = sum.split_whitespace().next().unwrap();
    std::fs::write(images.join("tiny.raw.gz.sha256"), format!("{sum}  tiny.raw.gz\n")).unwrap();
}

/// hostname -> (MAC, profile).
fn site_toml(sockets: &Sockets, hosts: &[(&str, u8, &str)]) -> String {
    let server = Ipv4Addr::new(127, NET, 0, 1);
    let mut s = SiteBuilder::new("a", &server.to_string())
        .field(&format!("http_port = {}", sockets.http(0).port()))
        .listen("lo")
        .dhcp(&format!("relays = [\"{server}\"]"))
        .subnet(
            &format!("127.{NET}.0.0/24"),
            (&format!("127.{NET}.0.100"), &format!("127.{NET}.0.200")),
            &[],
        );
    for (name, n, profile) in hosts {
        s = s.host(
            &format!("52:54:00:00:{NET}:{n:02x}"),
            name,
            &[
                &format!("profile = \"{profile}\""),
                &format!("ip = \"127.{NET}.0.{}\"", 10 + n),
            ],
        );
    }
    format!(
        "{}\n{DEBIAN_PROFILE}\n[sites.a.networks.migration]\nprefix = \"10.{NET}.20.0/24\"\npool = {{ start = \"10.{NET}.20.10\", end = \"10.{NET}.20.12\" }}\n\
         [sites.a.networks.management]\nprefix = \"10.{NET}.10.0/24\"\npool = {{ start = \"10.{NET}.10.10\", end = \"10.{NET}.10.99\" }}\ngateway = \"10.{NET}.10.1\"\n",
        s.toml()
    )
}

/// hostname -> role -> address, from `/api/ipam` (through curl: an independent client).
fn assignments(d: &Served) -> BTreeMap<String, BTreeMap<String, String>> {
    let token = std::fs::read_to_string(d.state_dir.join("api-token")).unwrap_or_default();
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://{}/api/ipam", d.api()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GET /api/ipam: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_host: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for a in list {
        let role = a["role"].as_str().unwrap().to_string();
        let before = by_host
            .entry(a["hostname"].as_str().unwrap().to_string())
            .or_default()
            .insert(role, a["address"].as_str().unwrap().to_string());
        assert!(before.is_none(), "one address per host and role: {a}");
    }
    by_host
}

fn wait_for(d: &Served, what: &str, want: &[(&str, &str, &str)]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut last = BTreeMap::new();
    wait_until(what, Duration::from_secs(20), || {
        last = assignments(d);
        want.iter()
            .all(|(h, role, ip)| last.get(*h).and_then(|r| r.get(*role)).map(String::as_str) == Some(*ip))
            .then_some(())
    });
    last
}

/// Host `n`'s kickstart, asked as the host asks it: its boot script (for the token), then
/// the kickstart, both from its reserved address.
fn kickstart(d: &Served, n: u8, name: &str) -> String {
    let from = format!("127.{NET}.0.{}", 10 + n);
    let base = format!("http://{}", d.http(0));
    let get = |url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sf", "--interface", &from, url])
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {url} from {from}");
        String::from_utf8(out.stdout).unwrap()
    };
    let script = get(&format!("{base}/boot/52-54-00-00-{NET}-{n:02x}.ipxe"));
    let i = script
        .find("?token=")
        .unwrap_or_else(|| panic!("an install script: {script}"))
        + 7;
    let token = script[i..].split_whitespace().next().unwrap();
    get(&format!("{base}/ks/{name}?token={token}"))
}

#[test]
fn hosts_get_static_addresses_that_stay_theirs() {
    common::require_tools(&["curl", "ksvalidator"]);
    let work = Workdir::new();
    let sockets = Sockets::bind(&[("a", Ipv4Addr::new(127, NET, 0, 1))]);
    let (state, assets) = (work.path("state"), work.path("assets"));
    std::fs::create_dir_all(&assets).unwrap();
    write_image(&assets);
    let config = |hosts: &[(&str, u8, &str)]| sockets.config(&assets, &state, &[site_toml(&sockets, hosts)]);
    let first = config(&[
        ("hv1", 1, "el9-bonded"),
        ("hv2", 2, "el9-bonded"),
        ("deb6", 6, "deb-bonded"),
        ("plain", 9, "el9"),
    ]);
    let second = config(&[
        ("hv2", 2, "el9-bonded"),
        ("hv3", 3, "el9-bonded"),
        ("hv4", 4, "el9-bonded"),
        ("plain", 9, "el9"),
    ]);
    let third = config(&[
        ("hv2", 2, "el9-bonded"),
        ("hv3", 3, "el9-bonded"),
        ("hv4", 4, "el9-bonded"),
        ("hv5", 5, "el9-bonded"),
        ("plain", 9, "el9"),
    ]);
    let cfg = work.write("sites.toml", &first);
    let d = Served::start(sockets, &cfg, &state);
    let m = |last: u8| format!("10.{NET}.20.{last}");
    let g = |last: u8| format!("10.{NET}.10.{last}");

    let got = wait_for(
        &d,
        "hv1 and hv2's addresses",
        &[
            ("hv1", "migration", &m(10)),
            ("hv1", "management", &g(10)),
            ("hv2", "migration", &m(11)),
            ("hv2", "management", &g(11)),
            ("deb6", "migration", &m(12)),
        ],
    );
    assert_eq!(got["deb6"].len(), 1, "its profile has no management bridge: {got:?}");
    assert!(
        !got.contains_key("plain"),
        "a profile without those bridges gets nothing: {got:?}"
    );
    let show = String::from_utf8(d.cli(&["hosts", "show", "hv1"]).stdout).unwrap();
    assert!(show.contains(&format!("address   {}/24 on migration", m(10))), "{show}");
    assert!(
        show.contains(&format!("address   {}/24 on management via 10.{NET}.10.1", g(10))),
        "{show}"
    );
    let json: serde_json::Value = serde_json::from_slice(&d.cli(&["hosts", "show", "hv2", "--json"]).stdout).unwrap();
    assert_eq!(json["addresses"].as_array().map(Vec::len), Some(2), "{json}");

    // hv2's kickstart, fetched as hv2 (from its address, with its install token), carries
    // the bond and its IPAM addresses, and ksvalidator takes it.
    let ks = kickstart(&d, 2, "hv2");
    assert!(
        ks.contains("network --device=bond0 --bondslaves=ens1f0,ens1f1 --bondopts="),
        "{ks}"
    );
    assert!(
        ks.contains("network --device=br-boot --bridgeslaves=bond0 --bootproto=dhcp"),
        "{ks}"
    );
    assert!(
        ks.contains(&format!("address1={}/24\n", m(11))),
        "br-mig's keyfile: {ks}"
    );
    assert!(
        ks.contains(&format!("address1={}/24,10.{NET}.10.1\n", g(11))),
        "br-mgmt's keyfile: {ks}"
    );
    let file = work.write("hv2.ks", &ks);
    let v = std::process::Command::new("ksvalidator")
        .args(["-v", "RHEL9"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "ksvalidator: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    // deb6's deploy document writes its networkd units: run just those heredocs with sh into
    // a scratch directory and read what landed.
    let doc = kickstart(&d, 6, "deb6");
    let units = work.path("deb6-network");
    std::fs::create_dir_all(&units).unwrap();
    let mut script = String::new();
    let mut inside = false;
    for line in doc.lines() {
        if line.starts_with("cat > /etc/systemd/network/") {
            inside = true;
        }
        if inside {
            script.push_str(&line.replace("/etc/systemd/network/", &format!("{}/", units.display())));
            script.push('\n');
        }
        if line == "PROVD_EOF" {
            inside = false;
        }
    }
    common::run(std::process::Command::new("sh").arg("-ec").arg(&script));
    let unit = |f: &str| std::fs::read_to_string(units.join(f)).unwrap_or_else(|e| panic!("{f}: {e}\n{doc}"));
    assert_eq!(
        unit("10-br-boot.netdev"),
        format!("[NetDev]\nName=br-boot\nKind=bridge\nMACAddress=52:54:00:00:{NET}:06\n")
    );
    assert!(unit("40-br-boot.network").contains("DHCP=ipv4\n\n[DHCPv4]\nClientIdentifier=mac\n"));
    assert_eq!(
        unit("40-br-mig.network"),
        format!("[Match]\nName=br-mig\n\n[Network]\nAddress={}/24\n", m(12))
    );
    assert!(
        unit("20-ens1f1.network").contains("[Match]\nPermanentMACAddress=52:54:00:aa:97:02\n\n[Network]\nBond=bond0")
    );
    assert!(
        !doc.contains("10-provd-boot-nic.network"),
        "the single-bridge layout is gone"
    );

    // hv1 leaves, hv3 and hv4 come: hv2 keeps .11, hv3 takes the freed .10, hv4 .12.
    std::fs::write(&cfg, &second).unwrap();
    d.cli(&["reload"]);
    let got = wait_for(
        &d,
        "the second config's addresses",
        &[
            ("hv2", "migration", &m(11)),
            ("hv3", "migration", &m(10)),
            ("hv4", "migration", &m(12)),
        ],
    );
    assert!(!got.contains_key("hv1"), "hv1 gave its addresses back: {got:?}");
    assert_eq!(got["hv2"]["management"], g(11), "hv2 keeps its management address too");

    // The migration pool (3 addresses) is full: hv5 gets a management address only.
    std::fs::write(&cfg, &third).unwrap();
    d.cli(&["reload"]);
    let got = wait_for(&d, "hv5's management address", &[("hv5", "management", &g(13))]);
    assert!(!got["hv5"].contains_key("migration"), "{got:?}");
    assert_eq!(got["hv2"]["migration"], m(11));
    assert_eq!(got["hv3"]["migration"], m(10));
    assert_eq!(got["hv4"]["migration"], m(12));

    // A restart keeps every address.
    let mut d = d.restart();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(assignments(&d), got);

    // `provd render` shows hv3's kickstart with its addresses: the daemon's while it runs,
    // its store's once it is stopped (no daemon holds the store then).
    let live = d.cli(&["render", "ks", "hv3"]);
    let text = String::from_utf8_lossy(&live.stdout).to_string();
    assert!(text.contains(&format!("{}/", m(10))), "{text}");
    assert!(String::from_utf8_lossy(&live.stderr).contains("from the daemon"));
    d.stop();
    let mut offline = None;
    for _ in 0..50 {
        let out = d.cli(&["render", "ks", "hv3"]);
        if String::from_utf8_lossy(&out.stderr).contains("from the store") {
            offline = Some(out);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let offline = offline.expect("render read the stopped daemon's store");
    let text = String::from_utf8_lossy(&offline.stdout);
    assert!(
        text.contains(&format!("{}/", m(10))) && text.contains(&format!("{}/", got["hv3"]["management"])),
        "{text}"
    );
}
