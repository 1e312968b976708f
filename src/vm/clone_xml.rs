//! The XML half of a clone (pure): turns a template's libvirt domain XML into the clone's,
//! with virt-clone's semantics, and lists the disks that must be copied or overlaid.
//!
//! What changes: the name; the UUID (removed, so libvirt makes a new one); every NIC's MAC
//! (and its host-side `target` device name); graphics go back to autoport (a fixed port
//! would collide with the template's); the UEFI NVRAM file gets a path of its own; each of
//! the domain's own writable file disks gets a new path. What is shared, unchanged:
//! read-only disks, shareable disks, CD-ROMs and floppies (virt-clone shares them too).
//! provd's own metadata (`template`, `clone-of`) is dropped: the caller writes the clone's.

use crate::mac::MacAddr;
use std::path::{Path, PathBuf};
use xmltree::{Element, XMLNode};

/// The XML namespace of provd's per-domain metadata.
pub const METADATA_NS: &str = "https://provd.dev/xmlns/vm/1";

/// One disk of the template that the clone gets its own copy (or overlay) of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskCopy {
    /// Guest device, e.g. "vda": for messages.
    pub target: String,
    pub source: PathBuf,
    /// The template disk's format (qcow2, raw, ...).
    pub source_format: String,
    pub dest: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ClonePlan {
    pub xml: String,
    pub disks: Vec<DiskCopy>,
    /// (template's NVRAM file, the clone's), for UEFI domains.
    pub nvram: Option<(PathBuf, PathBuf)>,
    pub macs: Vec<MacAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CloneXmlError {
    #[error("the domain XML does not parse: {0}")]
    Parse(String),
    #[error(
        "disk {target}: a {kind} disk cannot be cloned (only file disks can); make it read-only or shareable to share it"
    )]
    UnclonableDisk { target: String, kind: String },
}

fn child<'a>(e: &'a Element, name: &str) -> Option<&'a Element> {
    e.get_child(name)
}

fn children_named<'a>(e: &'a mut Element, name: &'a str) -> impl Iterator<Item = &'a mut Element> + 'a {
    e.children
        .iter_mut()
        .filter_map(XMLNode::as_mut_element)
        .filter(move |c| c.name == name)
}

fn remove_children(e: &mut Element, name: &str) {
    e.children
        .retain(|n| n.as_element().map(|c| c.name != name).unwrap_or(true));
}

fn set_text(e: &mut Element, text: &str) {
    e.children.retain(|n| n.as_element().is_some());
    e.children.insert(0, XMLNode::Text(text.to_string()));
}

/// The clone's file for one of the template's: in the same directory; the template's name in
/// the file name becomes the clone's ("centos.template_system.qcow2" ->
/// "web1_system.qcow2"), otherwise the clone's name is put in front. A linked clone is
/// always qcow2 (an overlay), whatever the template's format.
pub fn clone_path(source: &Path, template: &str, clone: &str, linked: bool) -> PathBuf {
    let dir = source.parent().unwrap_or(Path::new("/"));
    let file = source
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut new = if !template.is_empty() && file.contains(template) {
        file.replacen(template, clone, 1)
    } else {
        format!("{clone}-{file}")
    };
    if linked && !new.ends_with(".qcow2") {
        let stem = Path::new(&new)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(new.clone());
        new = format!("{stem}.qcow2");
    }
    dir.join(new)
}

/// Build the clone's XML. `new_mac` is asked once per NIC.
pub fn plan_clone(
    template_xml: &str,
    clone: &str,
    linked: bool,
    new_mac: &mut dyn FnMut() -> MacAddr,
) -> Result<ClonePlan, CloneXmlError> {
    let mut dom = Element::parse(template_xml.as_bytes()).map_err(|e| CloneXmlError::Parse(e.to_string()))?;
    let template = child(&dom, "name")
        .and_then(|n| n.get_text())
        .map(|t| t.into_owned())
        .unwrap_or_default();
    if let Some(name) = dom.get_mut_child("name") {
        set_text(name, clone);
    }
    remove_children(&mut dom, "uuid");
    if let Some(meta) = dom.get_mut_child("metadata") {
        meta.children.retain(|n| {
            n.as_element()
                .map(|c| c.namespace.as_deref() != Some(METADATA_NS))
                .unwrap_or(true)
        });
    }

    let mut nvram = None;
    if let Some(os) = dom.get_mut_child("os")
        && let Some(nv) = os.get_mut_child("nvram")
        && let Some(path) = nv.get_text().map(|t| t.trim().to_string())
        && !path.is_empty()
    {
        let old = PathBuf::from(&path);
        let new = old.parent().unwrap_or(Path::new("/")).join(format!("{clone}_VARS.fd"));
        set_text(nv, &new.display().to_string());
        nvram = Some((old, new));
    }

    let mut disks = Vec::new();
    let mut macs = Vec::new();
    if let Some(devices) = dom.get_mut_child("devices") {
        for disk in children_named(devices, "disk") {
            let device = disk.attributes.get("device").cloned().unwrap_or_else(|| "disk".into());
            let shared =
                device != "disk" || disk.get_child("readonly").is_some() || disk.get_child("shareable").is_some();
            if shared {
                continue;
            }
            let target = disk
                .get_child("target")
                .and_then(|t| t.attributes.get("dev").cloned())
                .unwrap_or_default();
            let kind = disk.attributes.get("type").cloned().unwrap_or_else(|| "file".into());
            let source = disk.get_child("source").and_then(|s| s.attributes.get("file").cloned());
            let (true, Some(source)) = (kind == "file", source) else {
                return Err(CloneXmlError::UnclonableDisk { target, kind });
            };
            let source = PathBuf::from(source);
            let source_format = disk
                .get_child("driver")
                .and_then(|d| d.attributes.get("type").cloned())
                .unwrap_or_else(|| "raw".into());
            let dest = clone_path(&source, &template, clone, linked);
            if let Some(s) = disk.get_mut_child("source") {
                s.attributes.insert("file".into(), dest.display().to_string());
            }
            if linked && let Some(d) = disk.get_mut_child("driver") {
                d.attributes.insert("type".into(), "qcow2".into());
            }
            // libvirt works the backing chain out itself from the image.
            remove_children(disk, "backingStore");
            disks.push(DiskCopy {
                target,
                source,
                source_format,
                dest,
            });
        }
        for nic in children_named(devices, "interface") {
            let mac = new_mac();
            remove_children(nic, "mac");
            // The host-side tap name ("vnet3") belongs to the running template, if any.
            remove_children(nic, "target");
            let mut m = Element::new("mac");
            m.attributes.insert("address".into(), mac.to_string());
            nic.children.push(XMLNode::Element(m));
            macs.push(mac);
        }
        // A file-backed serial console is a log: two domains must not append to one file.
        for dev in ["serial", "console"] {
            for c in children_named(devices, dev) {
                if c.attributes.get("type").map(String::as_str) != Some("file") {
                    continue;
                }
                if let Some(src) = c.get_mut_child("source")
                    && let Some(path) = src.attributes.get("path").cloned()
                {
                    let p = Path::new(&path);
                    let new = clone_path(p, &template, clone, false);
                    src.attributes.insert("path".into(), new.display().to_string());
                }
            }
        }
        for g in children_named(devices, "graphics") {
            g.attributes.insert("autoport".into(), "yes".into());
            g.attributes.insert("port".into(), "-1".into());
            g.attributes.shift_remove("websocket");
            if g.attributes.contains_key("tlsPort") {
                g.attributes.insert("tlsPort".into(), "-1".into());
            }
        }
    }
    Ok(ClonePlan {
        xml: write(&dom),
        disks,
        nvram,
        macs,
    })
}

/// Point cloud-init's NoCloud datasource at `seed_url` through the SMBIOS system serial
/// (`ds=nocloud-net;s=URL`), which the guest reads from /sys/class/dmi/id/product_serial.
pub fn set_smbios_serial(domain_xml: &str, serial: &str) -> Result<String, CloneXmlError> {
    let mut dom = Element::parse(domain_xml.as_bytes()).map_err(|e| CloneXmlError::Parse(e.to_string()))?;
    remove_children(&mut dom, "sysinfo");
    let mut entry = Element::new("entry");
    entry.attributes.insert("name".into(), "serial".into());
    entry.children.push(XMLNode::Text(serial.into()));
    let mut system = Element::new("system");
    system.children.push(XMLNode::Element(entry));
    let mut sysinfo = Element::new("sysinfo");
    sysinfo.attributes.insert("type".into(), "smbios".into());
    sysinfo.children.push(XMLNode::Element(system));
    dom.children.push(XMLNode::Element(sysinfo));
    if let Some(os) = dom.get_mut_child("os") {
        remove_children(os, "smbios");
        let mut smbios = Element::new("smbios");
        smbios.attributes.insert("mode".into(), "sysinfo".into());
        os.children.push(XMLNode::Element(smbios));
    }
    Ok(write(&dom))
}

/// Resize a domain: vCPUs and/or memory (MiB; `memory` and `currentMemory` both).
pub fn set_size(domain_xml: &str, vcpus: Option<u32>, memory_mib: Option<u64>) -> Result<String, CloneXmlError> {
    let mut dom = Element::parse(domain_xml.as_bytes()).map_err(|e| CloneXmlError::Parse(e.to_string()))?;
    if let Some(n) = vcpus
        && let Some(v) = dom.get_mut_child("vcpu")
    {
        set_text(v, &n.to_string());
    }
    if let Some(mib) = memory_mib {
        for name in ["memory", "currentMemory"] {
            if let Some(m) = dom.get_mut_child(name) {
                m.attributes.insert("unit".into(), "MiB".into());
                set_text(m, &mib.to_string());
            }
        }
    }
    Ok(write(&dom))
}

/// Replace every NIC with those of a NIC profile (each with the MAC given), for
/// `deploy --nic-profile`.
pub fn set_nics(domain_xml: &str, nics: &[(crate::config::NicSpec, MacAddr)]) -> Result<String, CloneXmlError> {
    let mut dom = Element::parse(domain_xml.as_bytes()).map_err(|e| CloneXmlError::Parse(e.to_string()))?;
    if let Some(devices) = dom.get_mut_child("devices") {
        remove_children(devices, "interface");
        for (nic, mac) in nics {
            let mut iface = Element::new("interface");
            iface.attributes.insert("type".into(), "bridge".into());
            for (name, attr, value) in [
                ("source", "bridge", nic.bridge.clone()),
                ("mac", "address", mac.to_string()),
                ("model", "type", nic.model.clone()),
            ] {
                let mut e = Element::new(name);
                e.attributes.insert(attr.into(), value);
                iface.children.push(XMLNode::Element(e));
            }
            if !nic.rom {
                let mut rom = Element::new("rom");
                rom.attributes.insert("enabled".into(), "no".into());
                iface.children.push(XMLNode::Element(rom));
            }
            devices.children.push(XMLNode::Element(iface));
        }
    }
    Ok(write(&dom))
}

/// Attach new file disks (`deploy --disk-profile`'s data disks), each on the first guest
/// device name of its bus that the domain does not use yet.
pub fn add_disks(domain_xml: &str, disks: &[super::xml::AttachedDisk]) -> Result<String, CloneXmlError> {
    let mut dom = Element::parse(domain_xml.as_bytes()).map_err(|e| CloneXmlError::Parse(e.to_string()))?;
    let Some(devices) = dom.get_mut_child("devices") else {
        return Err(CloneXmlError::Parse("no <devices>".into()));
    };
    let mut used: std::collections::HashSet<String> = children_named(devices, "disk")
        .filter_map(|d| d.get_child("target").and_then(|t| t.attributes.get("dev").cloned()))
        .collect();
    for disk in disks {
        let dev = (0..26)
            .map(|i| super::xml::device_name(&disk.spec.bus, i))
            .find(|d| !used.contains(d))
            .ok_or_else(|| CloneXmlError::Parse(format!("no free device name on bus {}", disk.spec.bus)))?;
        used.insert(dev.clone());
        let mut e = Element::new("disk");
        e.attributes.insert("type".into(), "file".into());
        e.attributes.insert("device".into(), "disk".into());
        for (name, attrs) in [
            (
                "driver",
                vec![("name", "qemu".to_string()), ("type", disk.spec.format.clone())],
            ),
            ("source", vec![("file", disk.path.display().to_string())]),
            ("target", vec![("dev", dev.clone()), ("bus", disk.spec.bus.clone())]),
        ] {
            let mut c = Element::new(name);
            for (k, v) in attrs {
                c.attributes.insert(k.into(), v);
            }
            e.children.push(XMLNode::Element(c));
        }
        devices.children.push(XMLNode::Element(e));
    }
    Ok(write(&dom))
}

/// Point disk `target` at `file` in `format`, forgetting the backing chain libvirt may have
/// recorded for the old file (it probes the new one's at the next start; a stale chain
/// would name the new file as its own backing). None when the domain has no such disk.
pub fn set_disk_source(
    domain_xml: &str,
    target: &str,
    file: &Path,
    format: &str,
) -> Result<Option<String>, CloneXmlError> {
    let mut dom = Element::parse(domain_xml.as_bytes()).map_err(|e| CloneXmlError::Parse(e.to_string()))?;
    let Some(devices) = dom.get_mut_child("devices") else {
        return Ok(None);
    };
    let Some(disk) = children_named(devices, "disk").find(|d| {
        d.get_child("target")
            .and_then(|t| t.attributes.get("dev"))
            .map(String::as_str)
            == Some(target)
    }) else {
        return Ok(None);
    };
    let Some(source) = disk.get_mut_child("source") else {
        return Ok(None);
    };
    source.attributes.insert("file".into(), file.display().to_string());
    remove_children(disk, "backingStore");
    if let Some(driver) = disk.get_mut_child("driver") {
        driver.attributes.insert("type".into(), format.into());
    }
    Ok(Some(write(&dom)))
}

fn write(dom: &Element) -> String {
    let mut out = Vec::new();
    let config = xmltree::EmitterConfig::new()
        .perform_indent(true)
        .write_document_declaration(false);
    dom.write_with_config(&mut out, config)
        .expect("writing XML to memory cannot fail");
    String::from_utf8(out).expect("xmltree writes UTF-8")
}

#[cfg(test)]
mod tests;
