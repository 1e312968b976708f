//! What cannot work in a network model, found before any host is installed with it: each
//! problem names the device and says why. `provd check` will report these with file, line
//! and key once the site config carries the model.

use super::{BondMode, NetModel, Role};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("{name:?}: a device name is 1 to 15 letters, digits, '.', '-' or '_' (the kernel's limit)")]
    BadName { name: String },
    #[error("{name:?} is defined twice")]
    Duplicate { name: String },
    #[error("bond {bond:?} has no members")]
    EmptyBond { bond: String },
    #[error("bond {bond:?}: member {member:?} is not a port of this model")]
    UnknownMember { bond: String, member: String },
    #[error("port {port:?} is a member of both {first:?} and {second:?}")]
    TwoBonds {
        port: String,
        first: String,
        second: String,
    },
    #[error("bond {bond:?}: lacp_rate and xmit_hash apply to 802.3ad only")]
    LacpOptionsWithoutLacp { bond: String },
    #[error("VLAN {id} on {on:?}: an id is 1 to 4094")]
    BadVlanId { id: u16, on: String },
    #[error("VLAN {id} on {on:?} is defined twice")]
    DuplicateVlan { id: u16, on: String },
    #[error("{what} {name:?} is on {on:?}, which is not a {allowed} of this model")]
    UnknownParent {
        what: &'static str,
        name: String,
        on: String,
        allowed: &'static str,
    },
    #[error("{what} {name:?} is on port {port:?}, which bond {bond:?} enslaves: put it on the bond")]
    OnEnslavedPort {
        what: &'static str,
        name: String,
        port: String,
        bond: String,
    },
    #[error("{device:?} carries two bridges ({first:?} and {second:?}): one device, one bridge")]
    TwoBridges {
        device: String,
        first: String,
        second: String,
    },
    #[error("no bridge has the boot role: the host could not reach provd at its next install")]
    NoBoot,
    #[error("two bridges have the boot role ({first:?} and {second:?})")]
    TwoBoots { first: String, second: String },
}

fn valid_name(name: &str) -> bool {
    (1..=15).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
}

/// Every problem of `m`, in the order the model reads (empty: it can work).
pub fn check(m: &NetModel) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let vlan_devices: Vec<String> = m.vlans.iter().map(|v| v.device()).collect();
    let names = m
        .ports
        .iter()
        .map(|p| &p.name)
        .chain(m.bonds.iter().map(|b| &b.name))
        .chain(vlan_devices.iter())
        .chain(m.bridges.iter().map(|b| &b.name));
    for name in names {
        if !valid_name(name) {
            out.push(Problem::BadName { name: name.clone() });
        }
        if !seen.insert(name.clone()) {
            out.push(Problem::Duplicate { name: name.clone() });
        }
    }
    let ports: BTreeSet<&str> = m.ports.iter().map(|p| p.name.as_str()).collect();
    let bonds: BTreeSet<&str> = m.bonds.iter().map(|b| b.name.as_str()).collect();
    // Which bond enslaves each port.
    let mut master: BTreeMap<&str, &str> = BTreeMap::new();
    for b in &m.bonds {
        if b.members.is_empty() {
            out.push(Problem::EmptyBond { bond: b.name.clone() });
        }
        let lacp_options = b.lacp_rate != Default::default() || b.xmit_hash != Default::default();
        if b.mode != BondMode::Lacp && lacp_options {
            out.push(Problem::LacpOptionsWithoutLacp { bond: b.name.clone() });
        }
        for member in &b.members {
            if !ports.contains(member.as_str()) {
                out.push(Problem::UnknownMember {
                    bond: b.name.clone(),
                    member: member.clone(),
                });
            } else if let Some(first) = master.insert(member, &b.name) {
                out.push(Problem::TwoBonds {
                    port: member.clone(),
                    first: first.into(),
                    second: b.name.clone(),
                });
            }
        }
    }
    // A VLAN or bridge on a port a bond enslaves never sees its traffic.
    let on_port = |what: &'static str, name: &str, on: &str| {
        master.get(on).map(|bond| Problem::OnEnslavedPort {
            what,
            name: name.into(),
            port: on.into(),
            bond: (*bond).into(),
        })
    };
    let mut vlans_seen = BTreeSet::new();
    for v in &m.vlans {
        if !(1..=4094).contains(&v.id) {
            out.push(Problem::BadVlanId {
                id: v.id,
                on: v.on.clone(),
            });
        }
        if !vlans_seen.insert((v.on.as_str(), v.id)) {
            out.push(Problem::DuplicateVlan {
                id: v.id,
                on: v.on.clone(),
            });
        }
        if !ports.contains(v.on.as_str()) && !bonds.contains(v.on.as_str()) {
            out.push(Problem::UnknownParent {
                what: "VLAN",
                name: v.id.to_string(),
                on: v.on.clone(),
                allowed: "port or bond",
            });
        }
        out.extend(on_port("VLAN", &v.id.to_string(), &v.on));
    }
    let mut bridged: BTreeMap<&str, &str> = BTreeMap::new();
    for b in &m.bridges {
        let known = ports.contains(b.on.as_str()) || bonds.contains(b.on.as_str()) || vlan_devices.contains(&b.on);
        if !known {
            out.push(Problem::UnknownParent {
                what: "bridge",
                name: b.name.clone(),
                on: b.on.clone(),
                allowed: "port, bond or VLAN device",
            });
        }
        out.extend(on_port("bridge", &b.name, &b.on));
        if let Some(first) = bridged.insert(&b.on, &b.name) {
            out.push(Problem::TwoBridges {
                device: b.on.clone(),
                first: first.into(),
                second: b.name.clone(),
            });
        }
    }
    let boots: Vec<&str> = m
        .bridges
        .iter()
        .filter(|b| b.role == Role::Boot)
        .map(|b| b.name.as_str())
        .collect();
    match boots.as_slice() {
        [] => out.push(Problem::NoBoot),
        [_] => {}
        [first, second, ..] => out.push(Problem::TwoBoots {
            first: (*first).into(),
            second: (*second).into(),
        }),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netmodel::tests::example;
    use crate::netmodel::{Bridge, Vlan};

    #[test]
    fn the_worked_example_can_work() {
        assert_eq!(check(&example()), []);
    }

    #[test]
    fn a_bridge_or_vlan_on_an_enslaved_port_is_refused() {
        let mut m = example();
        m.bridges.push(Bridge {
            name: "br-x".into(),
            on: "ens1f0".into(),
            role: Role::Storage,
        });
        m.vlans.push(Vlan {
            id: 30,
            on: "ens1f1".into(),
        });
        let p = check(&m);
        assert!(p.contains(&Problem::OnEnslavedPort {
            what: "bridge",
            name: "br-x".into(),
            port: "ens1f0".into(),
            bond: "bond0".into()
        }));
        assert!(
            p.iter().any(|x| x
                .to_string()
                .contains("VLAN \"30\" is on port \"ens1f1\", which bond \"bond0\" enslaves")),
            "{p:?}"
        );
    }

    #[test]
    fn one_device_one_bridge_and_exactly_one_boot_network() {
        let mut m = example();
        // VLAN 20 carries migration already: bridging it again as storage cannot work.
        m.bridges.push(Bridge {
            name: "br-st".into(),
            on: "bond0.20".into(),
            role: Role::Storage,
        });
        assert!(check(&m).contains(&Problem::TwoBridges {
            device: "bond0.20".into(),
            first: "br-mig".into(),
            second: "br-st".into()
        }));
        let mut m = example();
        m.bridges.retain(|b| b.role != Role::Boot);
        assert_eq!(check(&m), [Problem::NoBoot]);
        let mut m = example();
        m.bridges[1].role = Role::Boot;
        assert!(matches!(check(&m).as_slice(), [Problem::TwoBoots { .. }]));
    }

    #[test]
    fn names_ids_members_and_references_are_checked() {
        let mut m = example();
        m.vlans.push(Vlan {
            id: 4095,
            on: "bond0".into(),
        });
        m.vlans.push(Vlan {
            id: 10,
            on: "bond0".into(),
        });
        m.vlans.push(Vlan {
            id: 7,
            on: "bond9".into(),
        });
        m.bonds[0].members.push("eno9".into());
        m.bridges.push(Bridge {
            name: "br-toolongforlinux".into(),
            on: "bond0.999".into(),
            role: Role::Tenant,
        });
        let p = check(&m);
        for want in [
            Problem::BadVlanId {
                id: 4095,
                on: "bond0".into(),
            },
            Problem::DuplicateVlan {
                id: 10,
                on: "bond0".into(),
            },
            Problem::UnknownMember {
                bond: "bond0".into(),
                member: "eno9".into(),
            },
            Problem::BadName {
                name: "br-toolongforlinux".into(),
            },
        ] {
            assert!(p.contains(&want), "{want:?} in {p:?}");
        }
        assert!(
            p.iter()
                .any(|x| matches!(x, Problem::UnknownParent { on, .. } if on == "bond9"))
        );
        assert!(
            p.iter()
                .any(|x| matches!(x, Problem::UnknownParent { on, .. } if on == "bond0.999"))
        );
        assert!(p.contains(&Problem::Duplicate {
            name: "bond0.10".into()
        }));
    }

    #[test]
    fn lacp_options_need_lacp_and_a_port_is_in_one_bond() {
        let mut m = example();
        m.bonds[0].mode = BondMode::ActiveBackup;
        let mut second = m.bonds[0].clone();
        second.name = "bond1".into();
        second.mode = BondMode::Lacp;
        m.bonds.push(second);
        let p = check(&m);
        assert!(p.contains(&Problem::LacpOptionsWithoutLacp { bond: "bond0".into() }));
        assert!(p.contains(&Problem::TwoBonds {
            port: "ens1f0".into(),
            first: "bond0".into(),
            second: "bond1".into()
        }));
    }
}
