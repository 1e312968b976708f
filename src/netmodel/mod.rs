//! A hypervisor's data-center network (issue 35): physical ports, bonds over them, VLANs on
//! a port or bond, and bridges on any of those, each bridge with a role (boot, tenant,
//! migration, storage, management). This is the model an operator writes once per profile
//! (or host); `check` says what cannot work, `kickstart` and `networkd` render it for the
//! two installers. Everything here is pure: the site config carries a model per profile
//! (`[profiles.X.network]`, checked when the config loads); `render` puts the renderings
//! into the kickstarts with the host's IPAM addresses (`crate::ipam`).
//!
//! Devices are named as the installed system names them (`eno1`, `bond0`, `bond0.20`,
//! `br-mgmt`): a VLAN's device is `<parent>.<id>`, as both Anaconda and systemd-networkd
//! name it here.

pub mod check;
pub mod kickstart;
pub mod networkd;

use serde::Deserialize;

/// What a bridge carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The provisioning network: DHCP from provd, PXE.
    Boot,
    Management,
    /// VMs' networks.
    Tenant,
    Migration,
    Storage,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Boot => "boot",
            Role::Management => "management",
            Role::Tenant => "tenant",
            Role::Migration => "migration",
            Role::Storage => "storage",
        }
    }
}

/// A physical port, by its name on the installed system (and its MAC, when the name is not
/// predictable).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    pub name: String,
    #[serde(default)]
    pub mac: Option<crate::mac::MacAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BondMode {
    /// IEEE 802.3ad dynamic link aggregation (the switch must speak LACP).
    #[serde(rename = "802.3ad")]
    Lacp,
    /// One member carries the traffic, another takes over (any switch).
    #[serde(rename = "active-backup")]
    ActiveBackup,
}

impl BondMode {
    /// As the kernel's bonding driver (and Anaconda, and networkd) spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BondMode::Lacp => "802.3ad",
            BondMode::ActiveBackup => "active-backup",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LacpRate {
    #[default]
    Slow,
    Fast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum XmitHash {
    #[default]
    #[serde(rename = "layer2")]
    Layer2,
    #[serde(rename = "layer2+3")]
    Layer23,
    #[serde(rename = "layer3+4")]
    Layer34,
}

impl LacpRate {
    pub fn as_str(self) -> &'static str {
        match self {
            LacpRate::Slow => "slow",
            LacpRate::Fast => "fast",
        }
    }
}

impl XmitHash {
    pub fn as_str(self) -> &'static str {
        match self {
            XmitHash::Layer2 => "layer2",
            XmitHash::Layer23 => "layer2+3",
            XmitHash::Layer34 => "layer3+4",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bond {
    pub name: String,
    /// Port names.
    pub members: Vec<String>,
    pub mode: BondMode,
    /// Link monitoring interval, milliseconds.
    #[serde(default = "default_miimon")]
    pub miimon: u32,
    /// 802.3ad only.
    #[serde(default)]
    pub lacp_rate: LacpRate,
    /// 802.3ad only.
    #[serde(default)]
    pub xmit_hash: XmitHash,
}

fn default_miimon() -> u32 {
    100
}

/// A tagged VLAN on a port or bond (`on`); its device is `<on>.<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vlan {
    pub id: u16,
    pub on: String,
}

impl Vlan {
    pub fn device(&self) -> String {
        format!("{}.{}", self.on, self.id)
    }
}

/// How a bridge gets its address: DHCP (the boot network), a static address (from the
/// network's pool, once IPAM assigns it), or none (tenant bridges carry VMs only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addressing {
    Dhcp,
    Static {
        address: ipnet::Ipv4Net,
        gateway: Option<std::net::Ipv4Addr>,
    },
    None,
}

/// A bridge on a port, bond or VLAN device (`on`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    pub on: String,
    pub role: Role,
}

/// One host's network, as written per profile (VLAN ranges expanded: `NetModelWire`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "NetModelWire")]
pub struct NetModel {
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub bonds: Vec<Bond>,
    #[serde(default)]
    pub vlans: Vec<Vlan>,
    #[serde(default)]
    pub bridges: Vec<Bridge>,
}

/// The model as written: a VLAN entry is one VLAN (`id`) or a range (`ids = "100-199"`),
/// and may bring its bridge along (`bridge = "br-t"`, `role = "tenant"`: each VLAN N gets
/// bridge `br-tN` on `<on>.N` with that role), so a hundred tenant VLANs are one line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetModelWire {
    #[serde(default)]
    ports: Vec<Port>,
    #[serde(default)]
    bonds: Vec<Bond>,
    #[serde(default)]
    vlans: Vec<VlanWire>,
    #[serde(default)]
    bridges: Vec<Bridge>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VlanWire {
    id: Option<u16>,
    ids: Option<String>,
    on: String,
    /// With `role`: each VLAN's bridge is this prefix and the VLAN id.
    bridge: Option<String>,
    role: Option<Role>,
}

/// `"100-199"` (or one id) as the ids it names, each 1-4094, first <= last.
fn vlan_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let bad = || format!("ids {text:?}: a VLAN range is FIRST-LAST, each 1-4094, FIRST <= LAST");
    let (a, b) = text.split_once('-').unwrap_or((text, text));
    let a: u16 = a.trim().parse().map_err(|_| bad())?;
    let b: u16 = b.trim().parse().map_err(|_| bad())?;
    if a == 0 || b > 4094 || a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

impl TryFrom<NetModelWire> for NetModel {
    type Error = String;

    fn try_from(w: NetModelWire) -> Result<NetModel, String> {
        let mut vlans = Vec::new();
        let mut bridges = w.bridges;
        for v in w.vlans {
            let ids = match (v.id, &v.ids) {
                (Some(id), None) => id..=id,
                (None, Some(text)) => vlan_range(text)?,
                _ => return Err(format!("a VLAN on {:?} has either id or ids (a range)", v.on)),
            };
            match (&v.bridge, v.role) {
                (None, None) | (Some(_), Some(_)) => {}
                _ => {
                    return Err(format!(
                        "VLANs {:?} on {:?}: bridge and role come together (each VLAN's bridge and what it carries)",
                        v.ids.clone().unwrap_or_default(),
                        v.on
                    ));
                }
            }
            for id in ids {
                let vlan = Vlan { id, on: v.on.clone() };
                if let (Some(prefix), Some(role)) = (&v.bridge, v.role) {
                    bridges.push(Bridge {
                        name: format!("{prefix}{id}"),
                        on: vlan.device(),
                        role,
                    });
                }
                vlans.push(vlan);
            }
        }
        Ok(NetModel {
            ports: w.ports,
            bonds: w.bonds,
            vlans,
            bridges,
        })
    }
}

impl NetModel {
    /// The bridge that carries `role`, if any (the first, when several do).
    pub fn bridge_for(&self, role: Role) -> Option<&Bridge> {
        self.bridges.iter().find(|b| b.role == role)
    }

    /// How each bridge is addressed: the boot bridge by DHCP, the others as `addresses`
    /// gives them (by bridge name), else none.
    pub fn addressing(
        &self,
        bridge: &Bridge,
        addresses: &std::collections::BTreeMap<String, Addressing>,
    ) -> Addressing {
        match addresses.get(&bridge.name) {
            Some(a) => a.clone(),
            None if bridge.role == Role::Boot => Addressing::Dhcp,
            None => Addressing::None,
        }
    }
}

/// A host's own ports put into its profile's model (`net`): each names a port of the
/// model and gives its MAC (the topology is the profile's; which NIC is which differs per
/// machine). Refused, with why: ports on a host whose profile has no network, a name the
/// model does not have, a port named twice, a port without a MAC (it would say nothing).
pub fn with_ports(net: Option<&NetModel>, ports: &[Port]) -> Result<NetModel, String> {
    let Some(net) = net else {
        return Err("the host's profile has no [profiles.X.network] whose ports these could be".into());
    };
    let mut out = net.clone();
    let mut seen = std::collections::BTreeSet::new();
    for p in ports {
        if !seen.insert(p.name.as_str()) {
            return Err(format!("port {:?} is named twice", p.name));
        }
        let Some(mac) = p.mac else {
            return Err(format!(
                "port {:?} has no mac: a host's port says which NIC it is",
                p.name
            ));
        };
        let Some(port) = out.ports.iter_mut().find(|q| q.name == p.name) else {
            let known: Vec<&str> = net.ports.iter().map(|q| q.name.as_str()).collect();
            return Err(format!(
                "the profile's network has no port {:?} (its ports: {})",
                p.name,
                known.join(", ")
            ));
        };
        port.mac = Some(mac);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The README's worked example: two 25G ports in LACP, management on VLAN 10 (the
    /// boot network untagged on the bond), migration on VLAN 20, tenants on 100 and 101.
    pub(crate) const EXAMPLE: &str = r#"
ports = [{ name = "ens1f0" }, { name = "ens1f1", mac = "52:54:00:aa:00:02" }]
bonds = [{ name = "bond0", members = ["ens1f0", "ens1f1"], mode = "802.3ad", lacp_rate = "fast", xmit_hash = "layer3+4" }]
vlans = [{ id = 10, on = "bond0" }, { id = 20, on = "bond0" }, { id = 100, on = "bond0" }, { id = 101, on = "bond0" }]
bridges = [
  { name = "br-boot", on = "bond0", role = "boot" },
  { name = "br-mgmt", on = "bond0.10", role = "management" },
  { name = "br-mig", on = "bond0.20", role = "migration" },
  { name = "br-t100", on = "bond0.100", role = "tenant" },
  { name = "br-t101", on = "bond0.101", role = "tenant" },
]
"#;

    pub(crate) fn example() -> NetModel {
        toml::from_str(EXAMPLE).expect("the example parses")
    }

    #[test]
    fn the_example_reads_as_written() {
        let m = example();
        assert_eq!(m.bonds[0].mode, BondMode::Lacp);
        assert_eq!(m.bonds[0].miimon, 100, "the default");
        assert_eq!(m.bonds[0].xmit_hash, XmitHash::Layer34);
        assert_eq!(m.vlans[1].device(), "bond0.20");
        assert_eq!(m.bridge_for(Role::Migration).map(|b| b.name.as_str()), Some("br-mig"));
        let unknown =
            toml::from_str::<NetModel>("bonds = [{ name = \"b\", members = [], mode = \"802.3ad\", speed = 1 }]");
        assert!(unknown.unwrap_err().to_string().contains("unknown field `speed`"));
        let mode = toml::from_str::<NetModel>("bonds = [{ name = \"b\", members = [], mode = \"balance-rr\" }]");
        assert!(mode.is_err(), "only the modes provd renders");
    }

    #[test]
    fn a_vlan_range_is_one_entry_and_brings_its_bridges() {
        let m: NetModel = toml::from_str(
            r#"
ports = [{ name = "eno1" }]
vlans = [{ id = 20, on = "eno1" }, { ids = "100-199", on = "eno1", bridge = "br-t", role = "tenant" }]
bridges = [{ name = "br-boot", on = "eno1", role = "boot" }]
"#,
        )
        .unwrap();
        assert_eq!(m.vlans.len(), 101);
        assert_eq!(m.vlans[1].device(), "eno1.100");
        assert_eq!(m.vlans[100].device(), "eno1.199");
        assert_eq!(m.bridges.len(), 101, "the written bridge and one per VLAN of the range");
        assert_eq!(
            m.bridges[100],
            Bridge {
                name: "br-t199".into(),
                on: "eno1.199".into(),
                role: Role::Tenant
            }
        );
        assert!(check::check(&m).is_empty(), "{:?}", check::check(&m));
        let err = |text: &str| toml::from_str::<NetModel>(text).unwrap_err().to_string();
        assert!(err(r#"vlans = [{ ids = "200-100", on = "eno1" }]"#).contains("FIRST <= LAST"));
        assert!(err(r#"vlans = [{ ids = "4000-4095", on = "eno1" }]"#).contains("each 1-4094"));
        assert!(err(r#"vlans = [{ id = 5, ids = "1-2", on = "eno1" }]"#).contains("either id or ids"));
        assert!(err(r#"vlans = [{ ids = "1-2", on = "eno1", bridge = "br-" }]"#).contains("come together"));
    }

    #[test]
    fn a_host_says_which_of_its_nics_are_the_profiles_ports() {
        let mac: crate::mac::MacAddr = "52:54:00:00:c0:01".parse().unwrap();
        let port = |name: &str, mac: Option<crate::mac::MacAddr>| Port { name: name.into(), mac };
        let net = with_ports(Some(&example()), &[port("ens1f0", Some(mac))]).unwrap();
        assert_eq!(net.ports[0].mac, Some(mac));
        assert_eq!(net.ports[1], example().ports[1], "the other port is the profile's");
        assert_eq!(net.bonds, example().bonds, "the topology is the profile's");
        let e = with_ports(Some(&example()), &[port("eno9", Some(mac))]).unwrap_err();
        assert!(e.contains("no port \"eno9\"") && e.contains("ens1f0, ens1f1"), "{e}");
        let e = with_ports(Some(&example()), &[port("ens1f0", None)]).unwrap_err();
        assert!(e.contains("has no mac"), "{e}");
        let twice = [port("ens1f0", Some(mac)), port("ens1f0", Some(mac))];
        assert!(with_ports(Some(&example()), &twice).unwrap_err().contains("twice"));
        assert!(with_ports(None, &[]).unwrap_err().contains("no [profiles.X.network]"));
    }
}
