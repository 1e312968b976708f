//! The served sites as DHCP reads them: which subnet a packet belongs to (by relay giaddr
//! or by receiving interface), which configured host a MAC is, which addresses are reserved.
//!
//! Built once per config generation from the validated model (pure: no I/O); read-only
//! afterwards. It lives beside the model, not in `dhcp`, so a config generation
//! (`generation::Generation`) can carry it without depending on the serving layer.

use super::{Config, Host, HostIndex, Listen, Site, Subnet};
use crate::mac::MacAddr;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// Addresses no dynamic pool may hand out (every configured site's reservations).
pub type Reserved = HashSet<Ipv4Addr>;

pub struct Topology {
    pub sites: Vec<Site>,
    /// (site index, subnet index) for every subnet of every served site.
    subnets: Vec<(usize, usize)>,
    /// The config's host index (hosts of sites this process does not serve are skipped).
    hosts: HostIndex,
    pub reserved: Reserved,
}

/// Where a packet came in: the listen entry (interface + our address on it) and its site.
#[derive(Debug, Clone)]
pub struct Ingress {
    pub site: usize,
    pub listen: Listen,
}

impl Topology {
    pub fn new(config: &Config, served: &[&Site]) -> Self {
        let sites: Vec<Site> = served.iter().map(|s| (*s).clone()).collect();
        let mut subnets = Vec::new();
        for (si, site) in sites.iter().enumerate() {
            subnets.extend((0..site.subnets.len()).map(|ni| (si, ni)));
        }
        // Reservations of every configured site, served or not: an address reserved anywhere
        // is never handed out dynamically.
        let reserved = config.hosts.reserved_ips().collect();
        Topology {
            sites,
            subnets,
            hosts: config.hosts.clone(),
            reserved,
        }
    }

    /// No served site: a lease table with nothing to serve (offline tools, tests).
    pub fn none() -> Self {
        Topology {
            sites: Vec::new(),
            subnets: Vec::new(),
            hosts: HostIndex::default(),
            reserved: Reserved::default(),
        }
    }

    /// Every listen entry of every served site, with its site index.
    pub fn ingresses(&self) -> Vec<Ingress> {
        self.sites
            .iter()
            .enumerate()
            .flat_map(|(si, s)| {
                s.listen.iter().map(move |l| Ingress {
                    site: si,
                    listen: l.clone(),
                })
            })
            .collect()
    }

    /// The served subnet containing `addr`, with its site index.
    pub fn subnet_for(&self, addr: Ipv4Addr) -> Option<(usize, &Subnet)> {
        self.subnets
            .iter()
            .map(|&(si, ni)| (si, &self.sites[si].subnets[ni]))
            .find(|(_, s)| s.prefix.contains(&addr))
    }

    /// The configured host with this MAC, and its site index.
    pub fn host(&self, mac: Option<MacAddr>) -> Option<(usize, &Host)> {
        let e = self.hosts.by_mac(mac?)?;
        let si = self.sites.iter().position(|s| s.name == e.site)?;
        Some((si, &e.host))
    }
}
