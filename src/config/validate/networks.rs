//! `[sites.X.networks.ROLE]`: a site's statically addressed networks (management,
//! migration, storage) and the pools IPAM assigns from. Each is checked alone here; that no
//! pool overlaps a DHCP range or holds a reservation (an address would then be given
//! twice: once by DHCP, once by IPAM) is checked once every site is known
//! (`check_against_dhcp`).

use super::super::ConfigError;
use super::super::model::{Pool, Site, StaticNetwork};
use super::super::wire::NetworkWire;
use super::Source;
use crate::netmodel::Role;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use toml::Spanned;

/// A pool waiting for the check against every site's DHCP: where to say it is wrong.
pub(super) struct PoolAt {
    pool: Pool,
    /// The error to give, without its message.
    at: ConfigError,
}

pub(super) fn convert_networks(
    src: &Source,
    site: &str,
    wire: &BTreeMap<String, Spanned<NetworkWire>>,
    errors: &mut Vec<ConfigError>,
    pending: &mut Vec<PoolAt>,
) -> BTreeMap<Role, StaticNetwork> {
    let mut out: BTreeMap<Role, StaticNetwork> = BTreeMap::new();
    for (role_name, w) in wire {
        let key = format!("sites.{site}.networks.{role_name}");
        let role = match role_name.as_str() {
            "management" => Role::Management,
            "migration" => Role::Migration,
            "storage" => Role::Storage,
            "boot" => {
                errors.push(src.error(
                    Some(w.span()),
                    &key,
                    "the boot network is addressed by DHCP: give it as a subnet",
                ));
                continue;
            }
            "tenant" => {
                errors.push(src.error(
                    Some(w.span()),
                    &key,
                    "tenant networks carry VMs, not host addresses: nothing to assign",
                ));
                continue;
            }
            other => {
                errors.push(src.error(
                    Some(w.span()),
                    &key,
                    format!("unknown role {other:?}: management, migration or storage"),
                ));
                continue;
            }
        };
        if let Some(net) = convert_one(src, &key, w.get_ref(), errors) {
            if let Some((other, _)) = out
                .iter()
                .find(|(_, o)| o.prefix.contains(&net.prefix) || net.prefix.contains(&o.prefix))
            {
                errors.push(src.error(
                    Some(w.get_ref().prefix.span()),
                    format!("{key}.prefix"),
                    format!(
                        "{} overlaps the {} network {}",
                        net.prefix,
                        other.as_str(),
                        out[other].prefix
                    ),
                ));
                continue;
            }
            pending.push(PoolAt {
                pool: net.pool,
                at: src.error(Some(w.get_ref().pool.span()), format!("{key}.pool"), ""),
            });
            out.insert(role, net);
        }
    }
    out
}

fn convert_one(src: &Source, key: &str, w: &NetworkWire, errors: &mut Vec<ConfigError>) -> Option<StaticNetwork> {
    let prefix: Ipv4Net = match w.prefix.get_ref().parse() {
        Ok(p) if Ipv4Net::trunc(&p) == p => p,
        _ => {
            errors.push(src.error(
                Some(w.prefix.span()),
                format!("{key}.prefix"),
                format!("{:?} is not an IPv4 network like 10.20.0.0/24", w.prefix.get_ref()),
            ));
            return None;
        }
    };
    let pool = Pool {
        start: w.pool.get_ref().start,
        end: w.pool.get_ref().end,
    };
    let pool_error = |why: String| src.error(Some(w.pool.span()), format!("{key}.pool"), why);
    if pool.start > pool.end {
        errors.push(pool_error(format!(
            "pool start {} is after its end {}",
            pool.start, pool.end
        )));
        return None;
    }
    if !prefix.contains(&pool.start) || !prefix.contains(&pool.end) {
        errors.push(pool_error(format!(
            "pool {}-{} is not inside {prefix}",
            pool.start, pool.end
        )));
        return None;
    }
    if pool.contains(prefix.network()) || pool.contains(prefix.broadcast()) {
        errors.push(pool_error(format!(
            "pool {}-{} includes the network or broadcast address of {prefix}",
            pool.start, pool.end
        )));
        return None;
    }
    let gateway = w.gateway.as_ref().map(|g| (*g.get_ref(), g.span()));
    if let Some((g, span)) = &gateway
        && (!prefix.contains(g) || pool.contains(*g))
    {
        errors.push(src.error(
            Some(span.clone()),
            format!("{key}.gateway"),
            format!("{g} must be inside {prefix} and outside the pool"),
        ));
        return None;
    }
    Some(StaticNetwork {
        prefix,
        pool,
        gateway: gateway.map(|(g, _)| g),
    })
}

/// No IPAM pool may overlap a DHCP range or hold a reserved address, at any site: the same
/// address would be handed out twice.
pub(super) fn check_against_dhcp<'a>(
    pending: &[PoolAt],
    sites: impl Iterator<Item = &'a Site> + Clone,
    errors: &mut Vec<ConfigError>,
) {
    for p in pending {
        let say = |why: String| {
            let mut e = p.at.clone();
            e.message = why;
            e
        };
        for site in sites.clone() {
            for (i, subnet) in site.subnets.iter().enumerate() {
                for (j, range) in subnet.pools.iter().enumerate() {
                    if range.overlaps(&p.pool) {
                        errors.push(say(format!(
                            "pool {}-{} overlaps the DHCP range {}-{} (sites.{}.subnets[{i}].pools[{j}]): \
                             an address would be given twice",
                            p.pool.start, p.pool.end, range.start, range.end, site.name
                        )));
                    }
                }
            }
            for host in &site.hosts {
                if let Some(ip) = host.ip.filter(|ip| p.pool.contains(*ip)) {
                    errors.push(say(format!(
                        "pool {}-{} holds {ip}, reserved for {} at site {}",
                        p.pool.start, p.pool.end, host.hostname, site.name
                    )));
                }
            }
        }
    }
}
