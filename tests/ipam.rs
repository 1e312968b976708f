//! Issue 35's IPAM against provd serving in this process: hosts whose profile's network has
//! management and migration bridges get one address each from their site's pools, shown
//! by `/api/ipam` and `provd hosts show`; a host that leaves the config gives its address
//! back and a newcomer takes the lowest free one, the others keep theirs; a full pool
//! leaves the newcomer without (and nobody else loses one); a restart keeps every address.
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

/// hostname -> (MAC, profile).
fn site_toml(sockets: &Sockets, hosts: &[(&str, u8, &str)]) -> String {
    let server = Ipv4Addr::new(127, NET, 0, 1);
    let mut s = SiteBuilder::new("a", &server.to_string())
        .field(&format!("http_port = {}", sockets.http(0).port()))
        .listen("lo")
        .dhcp(&format!("relays = [\"{server}\"]"))
        .subnet(&format!("127.{NET}.0.0/24"), (&format!("127.{NET}.0.100"), &format!("127.{NET}.0.200")), &[]);
    for (name, n, profile) in hosts {
        s = s.host(&format!("52:54:00:00:{NET}:{n:02x}"), name, &[&format!("profile = \"{profile}\"")]);
    }
    format!(
        "{}\n[sites.a.networks.migration]\nprefix = \"10.{NET}.20.0/24\"\npool = {{ start = \"10.{NET}.20.10\", end = \"10.{NET}.20.12\" }}\n\
         [sites.a.networks.management]\nprefix = \"10.{NET}.10.0/24\"\npool = {{ start = \"10.{NET}.10.10\", end = \"10.{NET}.10.99\" }}\ngateway = \"10.{NET}.10.1\"\n",
        s.toml()
    )
}

/// hostname -> role -> address, from `/api/ipam` (through curl: an independent client).
fn assignments(d: &Served) -> BTreeMap<String, BTreeMap<String, String>> {
    let token = std::fs::read_to_string(d.state_dir.join("api-token")).unwrap_or_default();
    let out = std::process::Command::new("curl")
        .args(["-sf", "-H", &format!("Authorization: Bearer {}", token.trim()), &format!("http://{}/api/ipam", d.api())])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET /api/ipam: {}", String::from_utf8_lossy(&out.stderr));
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

#[test]
fn hosts_get_static_addresses_that_stay_theirs() {
    let work = Workdir::new();
    let sockets = Sockets::bind(&[("a", Ipv4Addr::new(127, NET, 0, 1))]);
    let (state, assets) = (work.path("state"), work.path("assets"));
    std::fs::create_dir_all(&assets).unwrap();
    let config = |hosts: &[(&str, u8, &str)]| sockets.config(&assets, &state, &[site_toml(&sockets, hosts)]);
    let first = config(&[("hv1", 1, "el9-bonded"), ("hv2", 2, "el9-bonded"), ("plain", 9, "el9")]);
    let second = config(&[("hv2", 2, "el9-bonded"), ("hv3", 3, "el9-bonded"), ("hv4", 4, "el9-bonded"), ("plain", 9, "el9")]);
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
        &[("hv1", "migration", &m(10)), ("hv1", "management", &g(10)), ("hv2", "migration", &m(11)), ("hv2", "management", &g(11))],
    );
    assert!(!got.contains_key("plain"), "a profile without those bridges gets nothing: {got:?}");
    let show = String::from_utf8(d.cli(&["hosts", "show", "hv1"]).stdout).unwrap();
    assert!(show.contains(&format!("address   {}/24 on migration", m(10))), "{show}");
    assert!(show.contains(&format!("address   {}/24 on management via 10.{NET}.10.1", g(10))), "{show}");
    let json: serde_json::Value = serde_json::from_slice(&d.cli(&["hosts", "show", "hv2", "--json"]).stdout).unwrap();
    assert_eq!(json["addresses"].as_array().map(Vec::len), Some(2), "{json}");

    // hv1 leaves, hv3 and hv4 come: hv2 keeps .11, hv3 takes the freed .10, hv4 .12.
    std::fs::write(&cfg, &second).unwrap();
    d.cli(&["reload"]);
    let got = wait_for(
        &d,
        "the second config's addresses",
        &[("hv2", "migration", &m(11)), ("hv3", "migration", &m(10)), ("hv4", "migration", &m(12))],
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
    let d = d.restart();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(assignments(&d), got);
}
