//! One test per section of the validation: each feeds `build` a small config with one
//! mistake and checks the error names the key and the line (the operator's way back to it).

use super::build;
use crate::config::{Config, ConfigError};
use std::path::PathBuf;

/// A valid site `a` the tests add one mistake to.
const SITE: &str = r#"
[sites.a]
server_address = "10.0.0.1"
listen = [{ interface = "eth0", address = "10.0.0.1" }]
[[sites.a.subnets]]
prefix = "10.0.0.0/24"
pools = [{ start = "10.0.0.100", end = "10.0.0.199" }]
"#;

fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
    build(&[(PathBuf::from("t.toml"), text.to_string())]).map_err(|e| e.0)
}

/// The errors of `text`, as (key, line) pairs.
fn errors(text: &str) -> Vec<(String, Option<usize>)> {
    load(text)
        .err()
        .unwrap_or_else(|| panic!("accepted:\n{text}"))
        .into_iter()
        .map(|e| (e.key, e.line))
        .collect()
}

/// The line of `needle` in `text` (1-based).
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[test]
fn the_base_site_is_valid() {
    let cfg = load(SITE).unwrap();
    assert_eq!(cfg.sites["a"].listen[0].interface, "eth0");
}

#[test]
fn daemon_secrets_and_config_never_live_under_the_served_assets() {
    let text = format!("[daemon]\nassets_dir = \"/srv/a\"\nstate_dir = \"/srv/a/state\"\n{SITE}");
    assert_eq!(errors(&text), [("daemon.assets_dir".to_string(), Some(1))]);
    let text = format!("[daemon]\nassets_dir = \"/srv/a\"\nstate_dir = \"/var/lib/p\"\n{SITE}");
    let e = build(&[(PathBuf::from("/srv/a/site.toml"), text)]).unwrap_err().0;
    assert_eq!(e.len(), 1);
    assert!(
        e[0].message.contains("holds the config file /srv/a/site.toml"),
        "{}",
        e[0]
    );
}

#[test]
fn sections_given_twice_name_the_first() {
    let e = build(&[
        (PathBuf::from("one.toml"), format!("[pki]\nsign = \"auto\"\n{SITE}")),
        (PathBuf::from("two.toml"), "[pki]\nsign = \"auto\"\n".to_string()),
    ])
    .unwrap_err()
    .0;
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].key.as_str(), e[0].file.to_str()), ("pki", Some("two.toml")));
    assert!(e[0].message.contains("first at one.toml"), "{}", e[0]);
}

#[test]
fn profiles_name_known_roles_and_image_profiles_their_installer() {
    let text = format!("{SITE}[profiles.p]\nos = \"el9\"\ncertificates = [\"sever\"]\n");
    assert_eq!(
        errors(&text),
        [("profiles.p.certificates".to_string(), line_of(&text, "sever"))]
    );
    let text = format!("{SITE}[profiles.p]\nos = \"el9\"\nimage = \"debian\"\n");
    assert_eq!(
        errors(&text),
        [("profiles.p.image".to_string(), line_of(&text, "image ="))]
    );
    let text = format!("{SITE}[profiles.p]\nos = \"el9\"\nimage = \"../etc\"\n");
    assert_eq!(
        errors(&text),
        [("profiles.p.image".to_string(), line_of(&text, "image ="))]
    );
}

#[test]
fn listen_interfaces_are_linux_names_each_once_inside_a_subnet() {
    let text = SITE.replace(
        r#"listen = [{ interface = "eth0", address = "10.0.0.1" }]"#,
        r#"listen = [{ interface = "eth 0", address = "10.0.0.1" }, { interface = "eth 0", address = "10.0.0.1" }, { interface = "eth1", address = "10.9.0.1" }]"#,
    );
    let got = errors(&text);
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sites.a.listen[0].interface",
            "sites.a.listen[1].interface",
            "sites.a.listen[1].interface",
            "sites.a.listen[2].address",
        ],
        "{got:?}"
    );
}

#[test]
fn failover_roles_buckets_and_pools_are_checked() {
    let fo = |body: &str| {
        format!("{SITE}[sites.a.failover]\nname = \"fo\"\naddress = \"10.0.0.1\"\npeer_address = \"10.0.0.2\"\n{body}")
    };
    let text = fo("role = \"leader\"\n");
    assert_eq!(
        errors(&text),
        [("sites.a.failover.role".to_string(), line_of(&text, "leader"))]
    );
    let text = fo("role = \"primary\"\nsplit = 128\nhba = \"00\"\n");
    assert_eq!(
        errors(&text),
        [("sites.a.failover.hba".to_string(), line_of(&text, "hba ="))]
    );
    let text = fo("role = \"primary\"\nsplit = 300\n");
    assert_eq!(
        errors(&text),
        [("sites.a.failover.split".to_string(), line_of(&text, "split"))]
    );
    let text = fo("role = \"primary\"\nhba = \"xyz\"\n");
    assert_eq!(
        errors(&text),
        [("sites.a.failover.hba".to_string(), line_of(&text, "hba ="))]
    );
    let text = fo("role = \"secondary\"\nmclt = 600\n");
    assert_eq!(
        errors(&text),
        [("sites.a.failover.mclt".to_string(), line_of(&text, "mclt"))]
    );
    let text = fo("role = \"primary\"\npools = [\"10.0.0.100-10.0.0.150\"]\n");
    assert_eq!(
        errors(&text),
        [("sites.a.failover.pools[0]".to_string(), line_of(&text, "10.0.0.150"))]
    );
    let text = fo("role = \"primary\"\npools = [\"10.0.0.100-10.0.0.199\"]\nmax_response_delay = 0\n");
    assert_eq!(
        errors(&text),
        [(
            "sites.a.failover.max_response_delay".to_string(),
            line_of(&text, "max_response_delay")
        )]
    );
    // And the valid one: the pool named, the longest lease of its subnet recorded.
    let cfg = load(&fo("role = \"primary\"\npools = [\"10.0.0.100-10.0.0.199\"]\n")).unwrap();
    let f = cfg.sites["a"].failover.as_ref().unwrap();
    assert_eq!((f.pools.len(), f.mclt > 0, f.longest_lease > 0), (1, true, true));
}

#[test]
fn discovery_says_what_happens_after_the_report() {
    let text = format!("{SITE}[sites.a.discovery]\nkernel = \"d/vmlinuz\"\ninitrd = \"d/initrd\"\nthen = \"reboot\"\n");
    assert_eq!(
        errors(&text),
        [("sites.a.discovery.then".to_string(), line_of(&text, "then ="))]
    );
    let text = format!("{SITE}[sites.a.dhcp]\nunknown_clients = \"discover\"\n");
    assert_eq!(errors(&text), [("sites.a.dhcp.unknown_clients".to_string(), None)]);
}

#[test]
fn top_level_hosts_name_a_known_site() {
    let text = format!("{SITE}[[hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"h1\"\n");
    assert_eq!(
        errors(&text),
        [("hosts[0].site".to_string(), line_of(&text, "[[hosts]]"))]
    );
    let text = format!("{SITE}[[hosts]]\nsite = \"b\"\nmac = \"52:54:00:00:00:01\"\nhostname = \"h1\"\n");
    assert_eq!(
        errors(&text),
        [("hosts[0].site".to_string(), line_of(&text, "site = \"b\""))]
    );
    let text = format!("{SITE}[[sites.a.hosts]]\nsite = \"a\"\nmac = \"52:54:00:00:00:01\"\nhostname = \"h1\"\n");
    assert_eq!(
        errors(&text),
        [("sites.a.hosts[0].site".to_string(), line_of(&text, "site = \"a\""))]
    );
    let ok = format!("{SITE}[[hosts]]\nsite = \"a\"\nmac = \"52:54:00:00:00:01\"\nhostname = \"h1\"\n");
    assert_eq!(load(&ok).unwrap().sites["a"].hosts[0].hostname, "h1");
}

#[test]
fn a_config_must_serve_something() {
    assert_eq!(errors("[pki]\nsign = \"auto\"\n"), [("sites".to_string(), None)]);
    let text = SITE.replace(r#"listen = [{ interface = "eth0", address = "10.0.0.1" }]"#, "");
    assert_eq!(errors(&text), [("listen".to_string(), None)]);
}
