//! IPAM (issue 35): the static addresses of hosts on their site's management, migration and
//! storage networks. A host whose profile's network has a bridge of a role, at a site with
//! a `[sites.X.networks.ROLE]` pool, gets one address from that pool; the assignment is
//! durable (the store's `ipam` table, keyed by site, role and address, so no address is
//! ever given twice) and kept across restarts and reloads: a host keeps its address for as
//! long as it needs one. A host that leaves the config (or whose profile no longer has the
//! role) gives its address back.
//!
//! `plan` is the pure core: from the current assignments and what the hosts need, what to
//! release and what to assign (the lowest free address of the pool). `Ipam` owns the
//! assignments and their store writes; the daemon reconciles at start and after each
//! reload (`daemon::serve`).

use crate::config::{Config, Site, StaticNetwork};
use crate::mac::MacAddr;
use crate::netmodel::Role;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::RwLock;

/// One host's address on one of its site's networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub site: String,
    pub role: Role,
    pub mac: MacAddr,
    pub hostname: String,
    pub address: Ipv4Addr,
    /// The network's prefix length and gateway, for whoever renders the address.
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl Assignment {
    fn key(&self) -> String {
        key(&self.site, self.role, self.address)
    }
}

fn key(site: &str, role: Role, address: Ipv4Addr) -> String {
    format!("{site}/{}/{address}", role.as_str())
}

/// A host that needs an address on `role` at `site`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Need {
    pub site: String,
    pub role: Role,
    pub mac: MacAddr,
    pub hostname: String,
}

/// What each host of `site` needs, by its profile. Only configured hosts (adopted ones are
/// written to the config by `hosts adopt`): a host removed from the config is retired,
/// whatever record of it the inventory keeps.
pub fn needs(site: &Site) -> Vec<Need> {
    let roles_of = |net: Option<&crate::netmodel::NetModel>| -> Vec<Role> {
        let Some(net) = net else {
            return Vec::new();
        };
        let roles: BTreeSet<Role> = net
            .bridges
            .iter()
            .map(|b| b.role)
            .filter(|r| site.networks.contains_key(r))
            .collect();
        roles.into_iter().collect()
    };
    site.hosts
        .iter()
        .flat_map(|h| {
            roles_of(h.network.as_deref()).into_iter().map(|role| Need {
                site: site.name.clone(),
                role,
                mac: h.mac,
                hostname: h.hostname.clone(),
            })
        })
        .collect()
}

/// What to change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub release: Vec<Assignment>,
    pub assign: Vec<Assignment>,
    /// Needs no address was left for (the pool is full), as "site/role hostname".
    pub exhausted: Vec<Need>,
}

/// From `current` to what `needs` asks, over the served sites' `networks` (by site). A host
/// keeps its address while its need stands (a renamed host keeps it too: the MAC is the
/// host); an assignment whose site is not in `networks` is left alone (another server's).
pub fn plan(
    current: &[Assignment],
    needs: &[Need],
    networks: &BTreeMap<String, BTreeMap<Role, StaticNetwork>>,
) -> Plan {
    let mut plan = Plan::default();
    let wanted: BTreeSet<(&str, Role, MacAddr)> = needs.iter().map(|n| (n.site.as_str(), n.role, n.mac)).collect();
    let mut kept: BTreeMap<(String, Role, MacAddr), &Assignment> = BTreeMap::new();
    for a in current {
        let Some(site_nets) = networks.get(&a.site) else {
            continue;
        };
        let still = wanted.contains(&(a.site.as_str(), a.role, a.mac))
            && site_nets.get(&a.role).is_some_and(|n| n.pool.contains(a.address))
            && !kept.contains_key(&(a.site.clone(), a.role, a.mac));
        if still {
            kept.insert((a.site.clone(), a.role, a.mac), a);
        } else {
            plan.release.push(a.clone());
        }
    }
    let mut taken: BTreeSet<(String, Role, Ipv4Addr)> =
        kept.values().map(|a| (a.site.clone(), a.role, a.address)).collect();
    for need in needs {
        if kept.contains_key(&(need.site.clone(), need.role, need.mac))
            || plan
                .assign
                .iter()
                .any(|a| a.site == need.site && a.role == need.role && a.mac == need.mac)
        {
            continue;
        }
        let Some(net) = networks.get(&need.site).and_then(|n| n.get(&need.role)) else {
            continue;
        };
        let free = (u32::from(net.pool.start)..=u32::from(net.pool.end))
            .map(Ipv4Addr::from)
            .find(|ip| !taken.contains(&(need.site.clone(), need.role, *ip)));
        match free {
            Some(address) => {
                taken.insert((need.site.clone(), need.role, address));
                plan.assign.push(Assignment {
                    site: need.site.clone(),
                    role: need.role,
                    mac: need.mac,
                    hostname: need.hostname.clone(),
                    address,
                    prefix_len: net.prefix.prefix_len(),
                    gateway: net.gateway,
                });
            }
            None => plan.exhausted.push(need.clone()),
        }
    }
    plan
}

/// The assignments, and their one writer.
pub struct Ipam {
    store: Store,
    assignments: RwLock<Vec<Assignment>>,
    /// Serialises reconciles (the task's and the daemon start's).
    writer: std::sync::Mutex<()>,
}

impl Ipam {
    /// Load what the store holds (blocking).
    pub fn load(store: Store) -> Result<Ipam, StoreError> {
        let mut assignments = Vec::new();
        for (key, json) in store.load_ipam()? {
            match serde_json::from_slice::<Assignment>(&json) {
                Ok(a) => assignments.push(a),
                Err(e) => tracing::error!("ignoring unreadable IPAM record {key}: {e}"),
            }
        }
        Ok(Ipam {
            store,
            assignments: RwLock::new(assignments),
            writer: Default::default(),
        })
    }

    pub fn all(&self) -> Vec<Assignment> {
        self.assignments.read().expect("ipam").clone()
    }

    /// `mac`'s address on `role`, if it has one.
    pub fn address(&self, mac: MacAddr, role: Role) -> Option<Ipv4Addr> {
        self.assignments
            .read()
            .expect("ipam")
            .iter()
            .find(|a| a.mac == mac && a.role == role)
            .map(|a| a.address)
    }

    pub fn of_host(&self, mac: MacAddr) -> Vec<Assignment> {
        self.assignments
            .read()
            .expect("ipam")
            .iter()
            .filter(|a| a.mac == mac)
            .cloned()
            .collect()
    }

    /// Bring the assignments in line with the served sites of `config` (blocking: store
    /// writes, each fsynced, releases before assignments so a freed address can be reused).
    pub fn reconcile_blocking(&self, config: &Config, served: &[String]) -> Result<Plan, StoreError> {
        let _one = self.writer.lock().expect("ipam writer");
        let sites: Vec<&Site> = served.iter().filter_map(|s| config.sites.get(s)).collect();
        let networks = sites.iter().map(|s| (s.name.clone(), s.networks.clone())).collect();
        let needs: Vec<Need> = sites.iter().flat_map(|s| needs(s)).collect();
        let current = self.all();
        let plan = plan(&current, &needs, &networks);
        if plan.release.is_empty() && plan.assign.is_empty() {
            return Ok(plan);
        }
        let puts: Vec<(String, Vec<u8>)> = plan
            .assign
            .iter()
            .map(|a| (a.key(), serde_json::to_vec(a).expect("plain data")))
            .collect();
        let deletes: Vec<String> = plan.release.iter().map(Assignment::key).collect();
        self.store.write_ipam_blocking(&deletes, &puts)?;
        let mut all = self.assignments.write().expect("ipam");
        all.retain(|a| !plan.release.contains(a));
        all.extend(plan.assign.iter().cloned());
        for a in &plan.release {
            tracing::info!(
                "ipam: {} gives back {} on {} at {}",
                a.hostname,
                a.address,
                a.role.as_str(),
                a.site
            );
        }
        for a in &plan.assign {
            tracing::info!(
                "ipam: {} gets {} on {} at {}",
                a.hostname,
                a.address,
                a.role.as_str(),
                a.site
            );
        }
        for n in &plan.exhausted {
            tracing::warn!(
                "ipam: the {} pool of site {} is full: {} gets no address",
                n.role.as_str(),
                n.site,
                n.hostname
            );
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Pool;

    fn net(start: &str, end: &str) -> StaticNetwork {
        StaticNetwork {
            prefix: "10.20.0.0/24".parse().unwrap(),
            pool: Pool {
                start: start.parse().unwrap(),
                end: end.parse().unwrap(),
            },
            gateway: None,
        }
    }

    fn need(mac: u8, name: &str) -> Need {
        Need {
            site: "a".into(),
            role: Role::Migration,
            mac: MacAddr([0x52, 0x54, 0, 0, 0, mac]),
            hostname: name.into(),
        }
    }

    fn nets(n: StaticNetwork) -> BTreeMap<String, BTreeMap<Role, StaticNetwork>> {
        BTreeMap::from([("a".to_string(), BTreeMap::from([(Role::Migration, n)]))])
    }

    #[test]
    fn hosts_get_the_lowest_free_address_and_keep_it() {
        let networks = nets(net("10.20.0.10", "10.20.0.12"));
        let first = plan(&[], &[need(1, "hv1"), need(2, "hv2")], &networks);
        let addrs: Vec<String> = first.assign.iter().map(|a| a.address.to_string()).collect();
        assert_eq!(addrs, ["10.20.0.10", "10.20.0.11"]);
        // hv1 leaves, hv3 and hv4 come: hv2 keeps .11, hv3 takes the freed .10, hv4 .12.
        let second = plan(
            &first.assign,
            &[need(2, "hv2"), need(3, "hv3"), need(4, "hv4")],
            &networks,
        );
        assert_eq!(second.release.len(), 1);
        assert_eq!(second.release[0].hostname, "hv1");
        let got: Vec<(String, String)> = second
            .assign
            .iter()
            .map(|a| (a.hostname.clone(), a.address.to_string()))
            .collect();
        assert_eq!(
            got,
            [("hv3".into(), "10.20.0.10".into()), ("hv4".into(), "10.20.0.12".into())]
        );
        // The pool is full: hv5 is told so, nobody loses an address.
        let mut now = first.assign.clone();
        now.retain(|a| a.hostname != "hv1");
        now.extend(second.assign);
        let third = plan(
            &now,
            &[need(2, "hv2"), need(3, "hv3"), need(4, "hv4"), need(5, "hv5")],
            &networks,
        );
        assert!(third.release.is_empty() && third.assign.is_empty());
        assert_eq!(third.exhausted, vec![need(5, "hv5")]);
        // Nothing changes when nothing changed.
        assert_eq!(
            plan(&now, &[need(2, "hv2"), need(3, "hv3"), need(4, "hv4")], &networks),
            Plan::default()
        );
    }

    #[test]
    fn a_pool_moved_away_from_an_address_reassigns_it() {
        let before = plan(&[], &[need(1, "hv1")], &nets(net("10.20.0.10", "10.20.0.12")));
        let after = plan(
            &before.assign,
            &[need(1, "hv1")],
            &nets(net("10.20.0.100", "10.20.0.120")),
        );
        assert_eq!(after.release, before.assign);
        assert_eq!(after.assign[0].address.to_string(), "10.20.0.100");
        // Another server's site is not touched.
        let other = plan(&before.assign, &[], &BTreeMap::new());
        assert_eq!(other, Plan::default());
    }
}
