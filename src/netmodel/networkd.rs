//! The model as systemd-networkd units for the Debian image: a `.netdev` per bond, VLAN and
//! bridge, and a `.network` per device saying what it is part of (a bond's member, a VLAN's
//! parent, a bridge's port) and per bridge saying how it is addressed. File names carry a
//! number so that networkd reads them in a stable order.

use super::{Addressing, BondMode, NetModel, Role};
use crate::mac::MacAddr;
use std::collections::BTreeMap;

/// (file name, contents) of every unit for `m`, bridges addressed as `addresses` says.
/// `boot_mac`: the host's MAC, which the boot bridge takes and asks DHCP with (a MAC client
/// identifier), so provd answers it as this host, at its reservation, whatever MAC the
/// bridge or bond would have made up.
pub fn units(
    m: &NetModel,
    addresses: &BTreeMap<String, Addressing>,
    boot_mac: Option<MacAddr>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in &m.bonds {
        let mut bond = format!("[Bond]\nMode={}\nMIIMonitorSec={}ms\n", b.mode.as_str(), b.miimon);
        if b.mode == BondMode::Lacp {
            let rate = b.lacp_rate.as_str();
            bond.push_str(&format!(
                "LACPTransmitRate={rate}\nTransmitHashPolicy={}\n",
                b.xmit_hash.as_str()
            ));
        }
        out.push((
            format!("10-{}.netdev", b.name),
            format!("[NetDev]\nName={}\nKind=bond\n\n{bond}", b.name),
        ));
        for member in &b.members {
            let matching = match m.ports.iter().find(|p| &p.name == member).and_then(|p| p.mac) {
                // The permanent address: once enslaved, a member takes the bond's MAC, and a
                // match on the current one would no longer hold.
                Some(mac) => format!("PermanentMACAddress={mac}"),
                None => format!("Name={member}"),
            };
            out.push((
                format!("20-{member}.network"),
                format!("[Match]\n{matching}\n\n[Network]\nBond={}\n", b.name),
            ));
        }
    }
    for v in &m.vlans {
        out.push((
            format!("10-{}.netdev", v.device()),
            format!("[NetDev]\nName={}\nKind=vlan\n\n[VLAN]\nId={}\n", v.device(), v.id),
        ));
    }
    for br in &m.bridges {
        let mac = match boot_mac {
            Some(mac) if br.role == Role::Boot => format!("MACAddress={mac}\n"),
            _ => String::new(),
        };
        out.push((
            format!("10-{}.netdev", br.name),
            format!("[NetDev]\nName={}\nKind=bridge\n{mac}", br.name),
        ));
    }
    // Each device that carries VLANs or a bridge says so.
    let mut carried: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for v in &m.vlans {
        carried.entry(&v.on).or_default().push(format!("VLAN={}", v.device()));
    }
    for br in &m.bridges {
        carried.entry(&br.on).or_default().push(format!("Bridge={}", br.name));
    }
    for (device, lines) in carried {
        out.push((
            format!("30-{device}.network"),
            format!(
                "[Match]\nName={device}\n\n[Network]\nLinkLocalAddressing=no\n{}\n",
                lines.join("\n")
            ),
        ));
    }
    for br in &m.bridges {
        let network = match m.addressing(br, addresses) {
            Addressing::Dhcp if boot_mac.is_some() => "DHCP=ipv4\n\n[DHCPv4]\nClientIdentifier=mac\n".to_string(),
            Addressing::Dhcp => "DHCP=ipv4\n".to_string(),
            Addressing::Static { address, gateway } => {
                let gw = gateway.map(|g| format!("Gateway={g}\n")).unwrap_or_default();
                format!("Address={address}\n{gw}")
            }
            // A tenant bridge carries VMs only: up without an address of its own.
            Addressing::None => "LinkLocalAddressing=no\nConfigureWithoutCarrier=yes\n".to_string(),
        };
        out.push((
            format!("40-{}.network", br.name),
            format!("[Match]\nName={}\n\n[Network]\n{network}", br.name),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netmodel::tests::example;

    fn unit<'a>(units: &'a [(String, String)], name: &str) -> &'a str {
        &units
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} in {units:?}"))
            .1
    }

    #[test]
    fn the_example_becomes_bond_vlan_and_bridge_units() {
        let units = units(&example(), &BTreeMap::new(), None);
        assert_eq!(
            unit(&units, "10-bond0.netdev"),
            "[NetDev]\nName=bond0\nKind=bond\n\n[Bond]\nMode=802.3ad\nMIIMonitorSec=100ms\nLACPTransmitRate=fast\nTransmitHashPolicy=layer3+4\n"
        );
        assert_eq!(
            unit(&units, "20-ens1f0.network"),
            "[Match]\nName=ens1f0\n\n[Network]\nBond=bond0\n"
        );
        assert!(
            unit(&units, "20-ens1f1.network").contains("[Match]\nPermanentMACAddress=52:54:00:aa:00:02"),
            "matched by MAC when given"
        );
        assert_eq!(
            unit(&units, "10-bond0.20.netdev"),
            "[NetDev]\nName=bond0.20\nKind=vlan\n\n[VLAN]\nId=20\n"
        );
        let bond0 = unit(&units, "30-bond0.network");
        for line in ["VLAN=bond0.10", "VLAN=bond0.20", "VLAN=bond0.100", "Bridge=br-boot"] {
            assert!(bond0.contains(line), "{line} in {bond0}");
        }
        assert!(unit(&units, "30-bond0.20.network").contains("Bridge=br-mig"));
        assert!(unit(&units, "40-br-boot.network").contains("DHCP=ipv4"));
        assert!(unit(&units, "40-br-t100.network").contains("ConfigureWithoutCarrier=yes"));
        assert!(
            !unit(&units, "10-br-boot.netdev").contains("MACAddress"),
            "no host, no MAC"
        );
    }

    #[test]
    fn the_boot_bridge_takes_the_hosts_mac_and_asks_dhcp_with_it() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let units = units(&example(), &BTreeMap::new(), Some(mac));
        assert_eq!(
            unit(&units, "10-br-boot.netdev"),
            "[NetDev]\nName=br-boot\nKind=bridge\nMACAddress=52:54:00:12:34:56\n"
        );
        assert_eq!(
            unit(&units, "40-br-boot.network"),
            "[Match]\nName=br-boot\n\n[Network]\nDHCP=ipv4\n\n[DHCPv4]\nClientIdentifier=mac\n"
        );
        assert!(
            !unit(&units, "10-br-mgmt.netdev").contains("MACAddress"),
            "only the boot bridge"
        );
    }

    #[test]
    fn a_static_bridge_gets_its_address_and_gateway() {
        let mut addresses = BTreeMap::new();
        addresses.insert(
            "br-mgmt".to_string(),
            Addressing::Static {
                address: "10.10.0.11/24".parse().unwrap(),
                gateway: Some("10.10.0.1".parse().unwrap()),
            },
        );
        let units = units(&example(), &addresses, None);
        assert_eq!(
            unit(&units, "40-br-mgmt.network"),
            "[Match]\nName=br-mgmt\n\n[Network]\nAddress=10.10.0.11/24\nGateway=10.10.0.1\n"
        );
    }
}
