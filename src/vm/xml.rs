//! libvirt domain XML for a new VM (pure): name, vCPUs, memory, disks from a disk profile,
//! NICs from a NIC profile, optional VNC on autoport. Values are XML-escaped.

use crate::config::{DiskSpec, NicSpec};
use crate::mac::MacAddr;
use std::fmt::Write;
use std::path::PathBuf;

/// One disk as it will be attached: the profile's spec plus the file it lives in.
#[derive(Debug, Clone)]
pub struct AttachedDisk {
    pub spec: DiskSpec,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct DomainSpec {
    pub name: String,
    /// libvirt domain type: "kvm", "qemu" (TCG), or "test" for the test driver.
    pub domain_type: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disks: Vec<AttachedDisk>,
    /// NICs with the MAC each will have (profile MAC, or one chosen by the caller).
    pub nics: Vec<(NicSpec, MacAddr)>,
    pub vnc: bool,
}

/// Escape text for an XML attribute or element.
pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Guest device names per bus, in the order disks are attached: vda.. (virtio), sda..
/// (scsi, sata), hda.. (ide).
pub fn device_name(bus: &str, index: usize) -> String {
    let prefix = match bus {
        "virtio" => "vd",
        "ide" => "hd",
        _ => "sd",
    };
    format!("{prefix}{}", (b'a' + index as u8) as char)
}

pub fn domain_xml(d: &DomainSpec) -> String {
    let mut x = String::new();
    let _ = writeln!(x, "<domain type='{}'>", esc(&d.domain_type));
    let _ = writeln!(x, "  <name>{}</name>", esc(&d.name));
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", d.memory_mib);
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", d.vcpus);
    let _ = writeln!(x, "  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>");
    let _ = writeln!(x, "  <devices>");
    let mut per_bus: std::collections::HashMap<&str, usize> = Default::default();
    for disk in &d.disks {
        let n = per_bus.entry(disk.spec.bus.as_str()).or_default();
        let dev = device_name(&disk.spec.bus, *n);
        *n += 1;
        let _ = writeln!(x, "    <disk type='file' device='disk'>");
        let _ = writeln!(x, "      <driver name='qemu' type='{}'/>", esc(&disk.spec.format));
        let _ = writeln!(x, "      <source file='{}'/>", esc(&disk.path.display().to_string()));
        let _ = writeln!(x, "      <target dev='{dev}' bus='{}'/>", esc(&disk.spec.bus));
        let _ = writeln!(x, "    </disk>");
    }
    for (nic, mac) in &d.nics {
        let _ = writeln!(x, "    <interface type='bridge'>");
        let _ = writeln!(x, "      <source bridge='{}'/>", esc(&nic.bridge));
        let _ = writeln!(x, "      <mac address='{mac}'/>");
        let _ = writeln!(x, "      <model type='{}'/>", esc(&nic.model));
        if !nic.rom {
            let _ = writeln!(x, "      <rom enabled='no'/>");
        }
        let _ = writeln!(x, "    </interface>");
    }
    if d.vnc {
        // Loopback only: VNC has no authentication (`provd vm console` says so).
        let _ = writeln!(
            x,
            "    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>"
        );
    }
    let _ = writeln!(x, "    <serial type='pty'/>");
    let _ = writeln!(x, "  </devices>");
    let _ = writeln!(x, "</domain>");
    x
}

/// The text of each `<NAME ...>...</NAME>` element in XML order (from the open tag to just
/// before the close tag); an element left unclosed ends the scan.
fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name} "), format!("</{name}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let Some(len) = rest[start..].find(&close) else {
            break;
        };
        out.push(&rest[start..start + len]);
        rest = &rest[start + len..];
    }
    out
}

/// Files of the domain's own writable disks, in XML order: `<disk type='file' device='disk'>`
/// without `<readonly/>` or `<shareable/>` (those, and CD-ROMs, belong to others too).
pub fn owned_disk_files(xml: &str) -> Vec<PathBuf> {
    own_disk_elements(xml)
        .filter_map(|disk| attr(disk, "<source file="))
        .map(PathBuf::from)
        .collect()
}

fn own_disk_elements(xml: &str) -> impl Iterator<Item = &str> {
    elements(xml, "disk")
        .into_iter()
        .filter(|disk| disk.contains("device='disk'") || disk.contains("device=\"disk\""))
        .filter(|disk| !disk.contains("<readonly/>") && !disk.contains("<shareable/>"))
}

/// The domain's own writable disks (as `owned_disk_files`) with their targets (`vda`).
pub fn owned_disks(xml: &str) -> Vec<(String, PathBuf)> {
    own_disk_elements(xml)
        .filter_map(|disk| Some((attr(disk, "<target dev=")?, PathBuf::from(attr(disk, "<source file=")?))))
        .collect()
}

/// The target of every disk of the domain (CD-ROMs and shared disks too), in XML order.
pub fn disk_targets(xml: &str) -> Vec<String> {
    elements(xml, "disk")
        .into_iter()
        .filter_map(|disk| attr(disk, "<target dev="))
        .collect()
}

/// The MAC of each `<interface>`, in XML order (what the guest's DHCP requests will carry:
/// `provd vm deploy` reports them so a lease or reservation can be matched to the VM).
/// An interface without a readable MAC is skipped.
pub fn nic_macs(xml: &str) -> Vec<MacAddr> {
    elements(xml, "interface")
        .into_iter()
        .filter_map(|nic| attr(nic, "<mac address=")?.parse().ok())
        .collect()
}

/// The UEFI NVRAM file (`<os><nvram>PATH</nvram>`), if the domain has one.
pub fn nvram_file(xml: &str) -> Option<PathBuf> {
    let start = xml.find("<nvram")?;
    let open_end = start + xml[start..].find('>')?;
    if xml[start..=open_end].ends_with("/>") {
        return None;
    }
    let close = open_end + xml[open_end..].find("</nvram>")?;
    let path = xml[open_end + 1..close].trim();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// The first graphics console: (type, listen address, port). Port is None until libvirt
/// allocates one (autoport on a domain that is not running).
pub fn graphics(xml: &str) -> Option<(String, String, Option<u16>)> {
    let start = xml.find("<graphics ")?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let kind = attr(tag, "type=")?;
    let listen = attr(tag, "listen=").unwrap_or_else(|| "127.0.0.1".into());
    let port = attr(tag, "port=")
        .and_then(|p| p.parse::<i32>().ok())
        .filter(|p| *p > 0)
        .map(|p| p as u16);
    Some((kind, listen, port))
}

/// The value of `name='...'` or `name="..."` after the first occurrence of `name`.
fn attr(text: &str, name: &str) -> Option<String> {
    let i = text.find(name)? + name.len();
    let quote = text[i..].chars().next()?;
    if quote != '\'' && quote != '"' {
        return None;
    }
    let value = &text[i + 1..];
    Some(value[..value.find(quote)?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nic_macs_in_order_and_only_of_interfaces() {
        let xml = "<domain><devices>\
            <interface type='bridge'><mac address='52:54:00:aa:bb:01'/><source bridge='br0'/></interface>\
            <hostdev><mac address='52:54:00:ff:ff:ff'/></hostdev>\
            <interface type=\"network\"><source network='default'/><mac address=\"52:54:00:AA:BB:02\"/></interface>\
            <interface type='user'><model type='virtio'/></interface>\
            </devices></domain>";
        let macs: Vec<String> = nic_macs(xml).iter().map(|m| m.to_string()).collect();
        assert_eq!(macs, ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]);
        assert!(nic_macs("<domain/>").is_empty());
    }

    #[test]
    fn owned_disks_skip_shared_readonly_and_cdroms() {
        let xml = "<domain><devices>\
            <disk type='file' device='disk'><source file='/img/a.qcow2'/></disk>\
            <disk type='file' device='cdrom'><source file='/iso/x.iso'/><readonly/></disk>\
            <disk type='file' device='disk'><source file='/img/shared.raw'/><shareable/></disk>\
            <disk type=\"file\" device=\"disk\"><source file=\"/img/b.qcow2\"/></disk>\
            </devices></domain>";
        assert_eq!(
            owned_disk_files(xml),
            [PathBuf::from("/img/a.qcow2"), PathBuf::from("/img/b.qcow2")]
        );
    }

    #[test]
    fn nvram_path_when_present() {
        assert_eq!(
            nvram_file("<os><nvram template='/t.fd'>/var/lib/libvirt/qemu/nvram/a_VARS.fd</nvram></os>"),
            Some(PathBuf::from("/var/lib/libvirt/qemu/nvram/a_VARS.fd"))
        );
        assert_eq!(nvram_file("<os><nvram template='/t.fd'/></os>"), None);
        assert_eq!(nvram_file("<os/>"), None);
    }

    #[test]
    fn graphics_address_and_port() {
        assert_eq!(
            graphics("<graphics type='vnc' port='5901' autoport='yes' listen='127.0.0.1'>"),
            Some(("vnc".into(), "127.0.0.1".into(), Some(5901)))
        );
        assert_eq!(
            graphics("<graphics type='spice' port='-1' autoport='yes'/>"),
            Some(("spice".into(), "127.0.0.1".into(), None))
        );
        assert_eq!(graphics("<domain/>"), None);
    }

    #[test]
    fn disks_and_nics_follow_their_profiles() {
        let disk = |name: &str, bus: &str| AttachedDisk {
            spec: DiskSpec {
                name: name.into(),
                size_gib: 8,
                format: "qcow2".into(),
                bus: bus.into(),
                dir: "/img".into(),
            },
            path: format!("/img/vm_{name}.qcow2").into(),
        };
        let nic = NicSpec {
            name: "eth0".into(),
            bridge: "br0".into(),
            model: "virtio".into(),
            mac: None,
            rom: false,
        };
        let x = domain_xml(&DomainSpec {
            name: "web<1>".into(),
            domain_type: "qemu".into(),
            vcpus: 2,
            memory_mib: 1024,
            disks: vec![disk("system", "virtio"), disk("data", "virtio"), disk("old", "ide")],
            nics: vec![(nic, "52:54:00:01:02:03".parse().unwrap())],
            vnc: true,
        });
        assert!(x.contains("<domain type='qemu'>") && x.contains("<name>web&lt;1&gt;</name>"));
        assert!(x.contains("<target dev='vda' bus='virtio'/>") && x.contains("<target dev='vdb' bus='virtio'/>"));
        assert!(x.contains("<target dev='hda' bus='ide'/>"));
        assert!(x.contains("<source bridge='br0'/>") && x.contains("<mac address='52:54:00:01:02:03'/>"));
        assert!(x.contains("<rom enabled='no'/>"), "rom = false: {x}");
        assert!(x.contains("autoport='yes' listen='127.0.0.1'"));
    }
}
