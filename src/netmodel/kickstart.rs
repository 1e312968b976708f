//! The model for EL8/EL9 installs: kickstart `network` lines for the bonds and for the
//! bridges on a port or bond (`--bondslaves`, `--bondopts`, `--bridgeslaves`), in the order
//! Anaconda must create the devices, and NetworkManager keyfiles for the VLANs and the
//! bridges on them, written by a `%post` script.
//!
//! Why VLANs are not `network --vlanid` lines: pykickstart tells network lines apart by
//! `--device` alone, so a second VLAN on the same bond (`--device=bond0 --vlanid=20` after
//! `--vlanid=10`) is a duplicate and ksvalidator refuses it (seen in
//! `tests/netmodel_kickstart.rs`). A hypervisor has several VLANs on one bond; the
//! keyfiles NetworkManager reads at first boot carry any number.

use super::{Addressing, Bond, BondMode, NetModel};
use std::collections::BTreeMap;

fn bond_opts(b: &Bond) -> String {
    let mut opts = vec![format!("mode={}", b.mode.as_str()), format!("miimon={}", b.miimon)];
    if b.mode == BondMode::Lacp {
        opts.push(format!("lacp_rate={}", b.lacp_rate.as_str()));
        opts.push(format!("xmit_hash_policy={}", b.xmit_hash.as_str()));
    }
    opts.join(",")
}

fn addressing(a: &Addressing) -> String {
    match a {
        Addressing::Dhcp => "--bootproto=dhcp".into(),
        Addressing::Static { address, gateway } => {
            let gw = gateway.map(|g| format!(" --gateway={g}")).unwrap_or_default();
            format!(
                "--bootproto=static --ip={} --netmask={}{gw}",
                address.addr(),
                address.netmask()
            )
        }
        Addressing::None => "--noipv4 --noipv6".into(),
    }
}

/// The `network` lines for `m`, with each bridge addressed as `addresses` says (the boot
/// bridge by DHCP unless given).
pub fn network_lines(m: &NetModel, addresses: &BTreeMap<String, Addressing>) -> Vec<String> {
    let mut out = Vec::new();
    for b in &m.bonds {
        out.push(format!(
            "network --device={} --bondslaves={} --bondopts={} --noipv4 --noipv6 --onboot=yes",
            b.name,
            b.members.join(","),
            bond_opts(b)
        ));
    }
    for br in m.bridges.iter().filter(|b| !on_vlan(m, &b.on)) {
        let activate = if br.role == super::Role::Boot {
            " --activate"
        } else {
            ""
        };
        out.push(format!(
            "network --device={} --bridgeslaves={} {} --onboot=yes{activate}",
            br.name,
            br.on,
            addressing(&m.addressing(br, addresses))
        ));
    }
    out
}

/// `device` is one of the model's VLAN devices.
fn on_vlan(m: &NetModel, device: &str) -> bool {
    m.vlans.iter().any(|v| v.device() == device)
}

fn nm_ip(a: &Addressing) -> String {
    match a {
        Addressing::Dhcp => "[ipv4]\nmethod=auto\n".into(),
        Addressing::Static { address, gateway } => {
            let gw = gateway.map(|g| format!(",{g}")).unwrap_or_default();
            format!("[ipv4]\nmethod=manual\naddress1={address}{gw}\n")
        }
        Addressing::None => "[ipv4]\nmethod=disabled\n".into(),
    }
}

/// (file name, contents) of a NetworkManager keyfile per VLAN and per bridge on a VLAN.
pub fn nm_keyfiles(m: &NetModel, addresses: &BTreeMap<String, Addressing>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in &m.vlans {
        let dev = v.device();
        let port_of = m
            .bridges
            .iter()
            .find(|b| b.on == dev)
            .map(|b| format!("master={}\nslave-type=bridge\n", b.name))
            .unwrap_or_default();
        let ip = if port_of.is_empty() {
            "[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=ignore\n".to_string()
        } else {
            String::new()
        };
        out.push((
            format!("{dev}.nmconnection"),
            format!(
                "[connection]\nid={dev}\ntype=vlan\ninterface-name={dev}\nautoconnect=true\n{port_of}\n[vlan]\nid={}\nparent={}\n{}{ip}",
                v.id,
                v.on,
                if ip.is_empty() { "" } else { "\n" }
            ),
        ));
    }
    for br in m.bridges.iter().filter(|b| on_vlan(m, &b.on)) {
        out.push((
            format!("{}.nmconnection", br.name),
            format!(
                "[connection]\nid={name}\ntype=bridge\ninterface-name={name}\nautoconnect=true\n\n[bridge]\nstp=false\n\n{}\n[ipv6]\nmethod=ignore\n",
                nm_ip(&m.addressing(br, addresses)),
                name = br.name
            ),
        ));
    }
    out
}

/// The body of a `%post` section that writes `nm_keyfiles` into the installed system
/// (root-owned, 0600: NetworkManager ignores a keyfile others can read).
pub fn post_script(m: &NetModel, addresses: &BTreeMap<String, Addressing>) -> String {
    let mut s = String::from("install -d -m 0700 /etc/NetworkManager/system-connections\n");
    for (name, text) in nm_keyfiles(m, addresses) {
        let path = format!("/etc/NetworkManager/system-connections/{name}");
        s.push_str(&format!(
            "cat > {path} <<'PROVD_KEYFILE'\n{text}PROVD_KEYFILE\nchmod 0600 {path}\n"
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netmodel::tests::example;

    #[test]
    fn the_example_renders_bond_vlans_and_bridges_in_order() {
        let mut addresses = BTreeMap::new();
        addresses.insert(
            "br-mig".to_string(),
            Addressing::Static {
                address: "10.20.0.11/24".parse().unwrap(),
                gateway: None,
            },
        );
        let lines = network_lines(&example(), &addresses);
        assert_eq!(
            lines[0],
            "network --device=bond0 --bondslaves=ens1f0,ens1f1 \
             --bondopts=mode=802.3ad,miimon=100,lacp_rate=fast,xmit_hash_policy=layer3+4 --noipv4 --noipv6 --onboot=yes"
        );
        assert_eq!(
            lines[1],
            "network --device=br-boot --bridgeslaves=bond0 --bootproto=dhcp --onboot=yes --activate"
        );
        assert_eq!(lines.len(), 2, "the VLANs and their bridges are keyfiles: {lines:?}");
        let files = nm_keyfiles(&example(), &addresses);
        let file = |n: &str| files.iter().find(|(f, _)| f == n).map(|(_, t)| t.as_str()).unwrap();
        assert_eq!(
            file("bond0.20.nmconnection"),
            "[connection]\nid=bond0.20\ntype=vlan\ninterface-name=bond0.20\nautoconnect=true\nmaster=br-mig\nslave-type=bridge\n\n[vlan]\nid=20\nparent=bond0\n"
        );
        assert_eq!(
            file("br-mig.nmconnection"),
            "[connection]\nid=br-mig\ntype=bridge\ninterface-name=br-mig\nautoconnect=true\n\n[bridge]\nstp=false\n\n[ipv4]\nmethod=manual\naddress1=10.20.0.11/24\n\n[ipv6]\nmethod=ignore\n"
        );
        assert!(file("br-t100.nmconnection").contains("[ipv4]\nmethod=disabled\n"));
        assert_eq!(files.len(), 4 + 4);
        let post = post_script(&example(), &addresses);
        assert!(
            post.contains("chmod 0600 /etc/NetworkManager/system-connections/br-mig.nmconnection"),
            "{post}"
        );
    }

    #[test]
    fn an_unbridged_vlan_is_up_without_addresses() {
        let mut m = example();
        m.bridges.retain(|b| b.on != "bond0.101");
        let files = nm_keyfiles(&m, &BTreeMap::new());
        let (_, text) = files.iter().find(|(f, _)| f == "bond0.101.nmconnection").unwrap();
        assert!(
            text.ends_with("parent=bond0\n\n[ipv4]\nmethod=disabled\n\n[ipv6]\nmethod=ignore\n"),
            "{text}"
        );
        assert!(!text.contains("master="));
    }

    #[test]
    fn active_backup_carries_no_lacp_options() {
        let mut m = example();
        m.bonds[0].mode = BondMode::ActiveBackup;
        let lines = network_lines(&m, &BTreeMap::new());
        assert!(
            lines[0].contains("--bondopts=mode=active-backup,miimon=100 "),
            "{}",
            lines[0]
        );
    }
}
