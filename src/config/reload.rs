//! What a running daemon can take from a reloaded config, and what needs a restart.
//!
//! Live: hosts (added, changed, removed), profiles, variables, templates, subnet options,
//! PXE and DHCP policy, the signing policy, VM profiles. Restart: anything a listener,
//! a socket or the lease pools were built from ([daemon], the set of served sites, a
//! site's listen entries, server address, HTTP port, failover relationship, subnet
//! prefixes and pools). A reload that touches a restart key changes nothing and names each
//! such key, so an operator never believes a change took effect when it did not.
//!
//! Pure: compares two validated configs.

use super::Config;

/// The restart-only differences between the running config and `new`, one sentence each
/// (empty: the reload may go ahead). `served_now` / `served_new`: the sites the daemon
/// serves under each.
pub fn restart_needed(old: &Config, new: &Config, served_now: &[String], served_new: &[String]) -> Vec<String> {
    let mut why = Vec::new();
    let (a, b) = (&old.daemon, &new.daemon);
    let daemon_keys: [(&str, bool); 9] = [
        ("state_dir", a.state_dir != b.state_dir),
        ("api_listen", a.api_listen != b.api_listen),
        ("templates_dir", a.templates_dir != b.templates_dir),
        ("assets_dir", a.assets_dir != b.assets_dir),
        ("pki_dir", a.pki_dir != b.pki_dir),
        ("api_tls", a.api_tls != b.api_tls),
        ("api_names", a.api_names != b.api_names),
        ("region_ca", a.region_ca != b.region_ca),
        ("region_cross_cert", a.region_cross_cert != b.region_cross_cert),
    ];
    for (key, changed) in daemon_keys {
        if changed {
            why.push(format!("[daemon] {key} changed"));
        }
    }
    if served_now != served_new {
        why.push(format!(
            "the served sites would change from [{}] to [{}]",
            served_now.join(", "),
            served_new.join(", ")
        ));
    }
    for name in served_now {
        let (Some(o), Some(n)) = (old.sites.get(name), new.sites.get(name)) else {
            continue;
        };
        let site_keys = [
            ("listen", o.listen != n.listen),
            ("server_address", o.server_address != n.server_address),
            ("http_port", o.http_port != n.http_port),
            ("failover", o.failover != n.failover),
        ];
        for (key, changed) in site_keys {
            if changed {
                why.push(format!("site {name}: `{key}` changed"));
            }
        }
        let shape = |s: &super::Site| {
            s.subnets
                .iter()
                .map(|n| (n.prefix, n.pools.clone()))
                .collect::<Vec<_>>()
        };
        if shape(o) != shape(n) {
            why.push(format!("site {name}: a subnet's prefix or pools changed"));
        }
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn config(extra_host: &str, http_port: u16) -> Config {
        let text = format!(
            r#"
[daemon]
state_dir = "/tmp/x"

[sites.dc1]
server_address = "10.0.0.1"
http_port = {http_port}
listen = [{{ interface = "eth0", address = "10.0.0.1" }}]

[[sites.dc1.subnets]]
prefix = "10.0.0.0/24"
pools = [{{ start = "10.0.0.100", end = "10.0.0.200" }}]

[[sites.dc1.hosts]]
mac = "52:54:00:00:00:01"
hostname = "a"
{extra_host}
"#
        );
        crate::config::load_from_strs(&[(PathBuf::from("t.toml"), text)]).unwrap()
    }

    #[test]
    fn hosts_are_live_listeners_are_not() {
        let served = vec!["dc1".to_string()];
        let old = config("", 8080);
        let more = config(
            "[[sites.dc1.hosts]]\nmac = \"52:54:00:00:00:02\"\nhostname = \"b\"\n",
            8080,
        );
        assert!(restart_needed(&old, &more, &served, &served).is_empty());
        let moved = config("", 8081);
        assert_eq!(
            restart_needed(&old, &moved, &served, &served),
            vec!["site dc1: `http_port` changed".to_string()]
        );
        let fewer = vec![];
        assert!(restart_needed(&old, &old, &served, &fewer)[0].contains("served sites"));
    }
}
