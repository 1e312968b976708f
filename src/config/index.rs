//! One index of every configured host (by MAC, by hostname, by reserved IP), built once from
//! the validated config and shared by DHCP (reservations, known clients), the boot policy,
//! the inventory and the CLI. Nothing else scans `site.hosts` to find a host.
//!
//! Validation has already made MACs, hostnames and reserved IPs unique across the set, so
//! each lookup has at most one answer.

use super::model::{Host, Site};
use crate::mac::MacAddr;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// A configured host and the site it belongs to.
#[derive(Debug, Clone)]
pub struct HostEntry {
    pub site: String,
    pub host: Host,
}

#[derive(Debug, Default)]
struct Inner {
    by_mac: HashMap<MacAddr, HostEntry>,
    by_name: HashMap<String, MacAddr>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
}

/// Cheap to clone (shared); read-only after construction.
#[derive(Debug, Clone, Default)]
pub struct HostIndex {
    inner: Arc<Inner>,
}

impl HostIndex {
    pub fn build(sites: &BTreeMap<String, Site>) -> Self {
        let mut inner = Inner::default();
        for site in sites.values() {
            for h in &site.hosts {
                inner.by_name.insert(h.hostname.to_ascii_lowercase(), h.mac);
                if let Some(ip) = h.ip {
                    inner.by_ip.insert(ip, h.mac);
                }
                inner.by_mac.insert(
                    h.mac,
                    HostEntry {
                        site: site.name.clone(),
                        host: h.clone(),
                    },
                );
            }
        }
        HostIndex { inner: Arc::new(inner) }
    }

    pub fn by_mac(&self, mac: MacAddr) -> Option<&HostEntry> {
        self.inner.by_mac.get(&mac)
    }

    /// By hostname (case-insensitive).
    pub fn by_name(&self, name: &str) -> Option<&HostEntry> {
        let mac = self.inner.by_name.get(&name.to_ascii_lowercase())?;
        self.inner.by_mac.get(mac)
    }

    /// The host whose reservation is `ip`.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&HostEntry> {
        let mac = self.inner.by_ip.get(&ip)?;
        self.inner.by_mac.get(mac)
    }

    /// A hostname or a MAC (any separator, an optional `.ipxe` suffix), as operators and
    /// installers name hosts in URLs and commands.
    pub fn find(&self, name: &str) -> Option<&HostEntry> {
        self.by_name(name)
            .or_else(|| self.by_mac(name.trim_end_matches(".ipxe").parse().ok()?))
    }

    /// Every reserved address, of every site (served or not: an address reserved anywhere
    /// is never handed out dynamically).
    pub fn reserved_ips(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.inner.by_ip.keys().copied()
    }

    /// Every host, with its site.
    pub fn iter(&self) -> impl Iterator<Item = &HostEntry> {
        self.inner.by_mac.values()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_index_finds_hosts_by_mac_name_and_reservation() {
        let toml = r#"
[sites.a]
server_address = "10.0.0.1"
listen = [{ interface = "eth0", address = "10.0.0.1" }]
[[sites.a.subnets]]
prefix = "10.0.0.0/24"
domain = "a.test"
[[sites.a.hosts]]
mac = "52:54:00:00:00:01"
hostname = "hv01"
ip = "10.0.0.11"
[sites.b]
server_address = "10.1.0.1"
[[sites.b.subnets]]
prefix = "10.1.0.0/24"
[[sites.b.hosts]]
mac = "52:54:00:00:00:02"
hostname = "hv02"
"#;
        let cfg = crate::config::load_from_strs(&[("t.toml".into(), toml.into())]).unwrap();
        let mac1: crate::mac::MacAddr = "52:54:00:00:00:01".parse().unwrap();
        assert_eq!(cfg.hosts.by_mac(mac1).unwrap().host.hostname, "hv01");
        assert_eq!(cfg.hosts.by_name("HV02").unwrap().site, "b");
        assert_eq!(cfg.hosts.by_ip("10.0.0.11".parse().unwrap()).unwrap().host.mac, mac1);
        assert_eq!(cfg.hosts.find("52-54-00-00-00-02.ipxe").unwrap().host.hostname, "hv02");
        assert!(cfg.hosts.find("nobody").is_none());
        assert_eq!(
            cfg.hosts.reserved_ips().collect::<Vec<_>>(),
            ["10.0.0.11".parse::<std::net::Ipv4Addr>().unwrap()]
        );
        let (site, host) = cfg.host(mac1).unwrap();
        assert_eq!(site.fqdn(&host.hostname), "hv01.a.test");
        assert_eq!(site.boot_base_url(), "http://10.0.0.1:8080");
    }
}
