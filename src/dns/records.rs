//! Which names a site's DNS should hold (pure): each named host's fully qualified name with
//! its address, and what must change to get there from what was last published.
//!
//! A name is `<hostname>.<zone>` (a hostname already inside the zone stays as it is; one in
//! another zone is not provd's to write). Each address has at most one name here: the
//! config refuses two hosts with one reservation and the lease table gives an address to
//! one MAC, but should two sources ever disagree the first name in order keeps it, so a PTR
//! never flips between two hosts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Fully qualified name (lower case, no final dot) -> its IPv4 address.
pub type Names = BTreeMap<String, Ipv4Addr>;

/// One name whose record must change: added (`from` none), moved, or removed (`to` none).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub fqdn: String,
    pub from: Option<Ipv4Addr>,
    pub to: Option<Ipv4Addr>,
}

/// The names `hosts` (hostname, address) should have in `zone`.
pub fn desired<'a>(zone: &str, hosts: impl IntoIterator<Item = (&'a str, Ipv4Addr)>) -> Names {
    let mut names = Names::new();
    let mut taken = BTreeSet::new();
    for (hostname, address) in hosts {
        let Some(fqdn) = qualify(hostname, zone) else {
            continue;
        };
        if taken.contains(&address) || names.contains_key(&fqdn) {
            continue;
        }
        taken.insert(address);
        names.insert(fqdn, address);
    }
    names
}

/// `hostname` as a name in `zone`, if it is a valid one there.
pub fn qualify(hostname: &str, zone: &str) -> Option<String> {
    let h = hostname.trim_end_matches('.').to_ascii_lowercase();
    let fqdn = if h == zone || h.ends_with(&format!(".{zone}")) {
        h
    } else if h.contains('.') {
        return None;
    } else {
        format!("{h}.{zone}")
    };
    crate::config::valid_hostname(&fqdn).then_some(fqdn)
}

/// What to send to turn `published` into `desired`, in name order.
pub fn diff(published: &Names, desired: &Names) -> Vec<Change> {
    let names: BTreeSet<&String> = published.keys().chain(desired.keys()).collect();
    names
        .into_iter()
        .filter_map(|fqdn| {
            let (from, to) = (published.get(fqdn).copied(), desired.get(fqdn).copied());
            (from != to).then(|| Change {
                fqdn: fqdn.clone(),
                from,
                to,
            })
        })
        .collect()
}

/// `a.b.c.d` -> `d.c.b.a.in-addr.arpa` (RFC 1035 section 3.5).
pub fn reverse_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa")
}

/// The most specific of `zones` that holds `name`, if any.
pub fn zone_of<'z>(name: &str, zones: &'z [String]) -> Option<&'z str> {
    zones
        .iter()
        .filter(|z| name == z.as_str() || name.ends_with(&format!(".{z}")))
        .max_by_key(|z| z.len())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn names_are_qualified_once_and_never_outside_the_zone() {
        assert_eq!(qualify("hv1", "a.test").as_deref(), Some("hv1.a.test"));
        assert_eq!(qualify("HV1.a.test.", "a.test").as_deref(), Some("hv1.a.test"));
        assert_eq!(qualify("hv1.other.test", "a.test"), None);
        assert_eq!(qualify("bad_name", "a.test"), None);
        let names = desired(
            "a.test",
            [
                ("hv1", ip("10.0.0.21")),
                ("hv2", ip("10.0.0.21")),
                ("hv1", ip("10.0.0.22")),
                ("hv3", ip("10.0.0.23")),
            ],
        );
        assert_eq!(names.len(), 2, "an address has one name, a name one address: {names:?}");
        assert_eq!(names["hv1.a.test"], ip("10.0.0.21"));
        assert_eq!(names["hv3.a.test"], ip("10.0.0.23"));
    }

    #[test]
    fn the_diff_adds_moves_and_removes() {
        let published = desired(
            "a.test",
            [
                ("hv1", ip("10.0.0.21")),
                ("hv2", ip("10.0.0.22")),
                ("hv3", ip("10.0.0.23")),
            ],
        );
        let wanted = desired(
            "a.test",
            [
                ("hv1", ip("10.0.0.21")),
                ("hv2", ip("10.0.0.32")),
                ("hv4", ip("10.0.0.24")),
            ],
        );
        let changes = diff(&published, &wanted);
        assert_eq!(
            changes,
            vec![
                Change {
                    fqdn: "hv2.a.test".into(),
                    from: Some(ip("10.0.0.22")),
                    to: Some(ip("10.0.0.32"))
                },
                Change {
                    fqdn: "hv3.a.test".into(),
                    from: Some(ip("10.0.0.23")),
                    to: None
                },
                Change {
                    fqdn: "hv4.a.test".into(),
                    from: None,
                    to: Some(ip("10.0.0.24"))
                },
            ]
        );
        assert!(diff(&wanted, &wanted).is_empty());
    }

    #[test]
    fn reverse_names_find_their_most_specific_zone() {
        assert_eq!(reverse_name(ip("10.0.1.21")), "21.1.0.10.in-addr.arpa");
        let zones = vec!["10.in-addr.arpa".to_string(), "1.0.10.in-addr.arpa".to_string()];
        assert_eq!(zone_of("21.1.0.10.in-addr.arpa", &zones), Some("1.0.10.in-addr.arpa"));
        assert_eq!(zone_of("21.2.0.10.in-addr.arpa", &zones), Some("10.in-addr.arpa"));
        assert_eq!(zone_of("21.2.0.110.in-addr.arpa", &zones), None, "110 is not under 10");
    }
}
