//! Changing a defined domain's devices and size: attach or detach a disk or a NIC, set its
//! vCPUs or memory. On a running domain each change is made live *and* in the definition
//! (so it survives the next start); on a shut-off one in the definition only. Where libvirt
//! or the guest cannot do it live (more vCPUs than the domain's maximum, memory above its
//! maximum, a device the guest does not release) the error says which and why.
//!
//! The device XML and the choice of the next free disk name are pure (`disk_device_xml`,
//! `nic_device_xml`, `next_disk_name`, `device_element`) and unit-tested.

use super::xml::{device_name, esc};
use super::{Hypervisor, VmError};
use crate::mac::MacAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use virt::domain::Domain;
use virt::sys;

/// The first disk name on `bus` no `<target dev=...>` of `xml` uses (vdb after vda, ...).
pub fn next_disk_name(xml: &str, bus: &str) -> Option<String> {
    let used: Vec<&str> = xml
        .split("<target dev='")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .collect();
    (0..26)
        .map(|i| device_name(bus, i))
        .find(|n| !used.contains(&n.as_str()))
}

pub fn disk_device_xml(file: &Path, format: &str, dev: &str, bus: &str) -> String {
    format!(
        "<disk type='file' device='disk'><driver name='qemu' type='{}'/><source file='{}'/><target dev='{}' bus='{}'/></disk>",
        esc(format),
        esc(&file.display().to_string()),
        esc(dev),
        esc(bus)
    )
}

pub fn nic_device_xml(bridge: &str, model: &str, mac: MacAddr) -> String {
    format!(
        "<interface type='bridge'><source bridge='{}'/><mac address='{mac}'/><model type='{}'/></interface>",
        esc(bridge),
        esc(model)
    )
}

/// The whole `<tag ...>...</tag>` element of `xml` that contains `needle` (a disk's
/// `<target dev='vdb'`, an interface's `<mac address='...'`), as libvirt wants it for a
/// detach.
pub fn device_element(xml: &str, tag: &str, needle: &str) -> Option<String> {
    let (open, close) = (format!("<{tag} "), format!("</{tag}>"));
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let end = start + rest[start..].find(&close)? + close.len();
        let element = &rest[start..end];
        if element.contains(needle) {
            return Some(element.to_string());
        }
        rest = &rest[end..];
    }
    None
}

/// How long a live detach may take the guest to release the device.
const RELEASE_WAIT: Duration = Duration::from_secs(60);

impl Hypervisor {
    /// CONFIG always; LIVE too when the domain runs.
    fn affect(&self, d: &Domain, name: &str) -> Result<u32, VmError> {
        let live = if self.is_active(d, name)? {
            sys::VIR_DOMAIN_AFFECT_LIVE
        } else {
            0
        };
        Ok(sys::VIR_DOMAIN_AFFECT_CONFIG | live)
    }

    /// A new empty disk of `size_gib` in `dir` (`<name>_<dev>.<format>`), attached as the
    /// next free name on `bus`. The volume is deleted again when the attach fails.
    pub fn attach_new_disk(
        &self,
        name: &str,
        size_gib: u32,
        dir: &Path,
        format: &str,
        bus: &str,
    ) -> Result<(String, PathBuf), VmError> {
        let d = self.domain(name)?;
        let flags = self.affect(&d, name)?;
        let xml = d.xml_desc(0).map_err(self.err("reading", name))?;
        let inactive = d
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(self.err("reading", name))?;
        let dev = next_disk_name(&format!("{xml}{inactive}"), bus).ok_or(VmError::NoFreeDiskName {
            name: name.into(),
            bus: bus.into(),
        })?;
        let file = dir.join(format!("{name}_{dev}.{format}"));
        let mut vols = super::storage::Volumes::new(&self.conn);
        if vols.exists(&file) {
            return Err(VmError::Disk {
                path: file,
                message: "already exists; refusing to overwrite it".into(),
            });
        }
        vols.create_empty(&file, format, u64::from(size_gib) << 30)
            .map_err(VmError::on_disk(&file))?;
        if let Err(e) = d.attach_device_flags(&disk_device_xml(&file, format, &dev, bus), flags) {
            let _ = vols.delete(&file);
            return Err(self.err("attaching a disk to", name)(e));
        }
        Ok((dev, file))
    }

    /// The directory of the VM's first own disk: where the API puts a new one (a caller
    /// never chooses a path on the hypervisor).
    pub fn first_disk_dir(&self, name: &str) -> Result<PathBuf, VmError> {
        let xml = self.domain(name)?.xml_desc(0).map_err(self.err("reading", name))?;
        super::xml::owned_disk_files(&xml)
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .ok_or_else(|| VmError::Disk {
                path: PathBuf::new(),
                message: format!("{name:?} has no disk of its own to put a new one beside"),
            })
    }

    /// Detach the disk named `dev` (its file stays); live, the guest must release it.
    pub fn detach_disk(&self, name: &str, dev: &str) -> Result<PathBuf, VmError> {
        let needle = format!("<target dev='{dev}'");
        let (element, _) = self.detach(name, "disk", &needle, dev)?;
        let file = element
            .split("<source file='")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .map(PathBuf::from)
            .unwrap_or_default();
        Ok(file)
    }

    /// A NIC on `bridge` with a MAC no domain here uses.
    pub fn attach_nic(&self, name: &str, bridge: &str, model: &str) -> Result<MacAddr, VmError> {
        let d = self.domain(name)?;
        let flags = self.affect(&d, name)?;
        let mut used = self.macs_in_use();
        let mac = loop {
            let m = super::random_mac();
            if used.insert(m) {
                break m;
            }
        };
        d.attach_device_flags(&nic_device_xml(bridge, model, mac), flags)
            .map_err(self.err("attaching a NIC to", name))?;
        Ok(mac)
    }

    pub fn detach_nic(&self, name: &str, mac: MacAddr) -> Result<(), VmError> {
        let needle = format!("<mac address='{mac}'");
        self.detach(name, "interface", &needle, &mac.to_string()).map(|_| ())
    }

    /// Detach the `tag` element containing `needle`; when live, wait for the guest to
    /// release it. Returns the element detached and whether it was live.
    fn detach(&self, name: &str, tag: &str, needle: &str, what: &str) -> Result<(String, bool), VmError> {
        let d = self.domain(name)?;
        let flags = self.affect(&d, name)?;
        let live = flags & sys::VIR_DOMAIN_AFFECT_LIVE != 0;
        let xml = d
            .xml_desc(if live { 0 } else { sys::VIR_DOMAIN_XML_INACTIVE })
            .map_err(self.err("reading", name))?;
        let element = device_element(&xml, tag, needle).ok_or_else(|| VmError::NoDevice {
            name: name.into(),
            device: what.into(),
        })?;
        d.detach_device_flags(&element, flags)
            .map_err(self.err("detaching a device from", name))?;
        if live {
            // Live unplug is a request the guest answers (ACPI/PCI hotplug): wait for it.
            let asked = Instant::now();
            while d.xml_desc(0).map_err(self.err("reading", name))?.contains(needle) {
                if asked.elapsed() > RELEASE_WAIT {
                    return Err(VmError::NotReleased {
                        name: name.into(),
                        device: what.into(),
                        waited: RELEASE_WAIT.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        Ok((element, live))
    }

    /// vCPUs now (live and in the definition); at most the domain's maximum.
    pub fn set_vcpus(&self, name: &str, vcpus: u32) -> Result<(), VmError> {
        let d = self.domain(name)?;
        let flags = self.affect(&d, name)?;
        let max = d
            .vcpus_flags(sys::VIR_DOMAIN_VCPU_MAXIMUM | sys::VIR_DOMAIN_AFFECT_CONFIG)
            .map_err(self.err("reading", name))?;
        if vcpus == 0 || vcpus > max {
            return Err(VmError::OutOfRange {
                name: name.into(),
                what: "vCPUs",
                asked: vcpus.into(),
                max: max.into(),
                how: "the maximum is the definition's <vcpu>; raise it with the VM shut off",
            });
        }
        d.set_vcpus_flags(vcpus, flags)
            .map_err(self.err("setting the vCPUs of", name))
    }

    /// Memory now (the balloon when live, and the definition's current memory); at most the
    /// domain's maximum.
    pub fn set_memory(&self, name: &str, mib: u64) -> Result<(), VmError> {
        let d = self.domain(name)?;
        let flags = self.affect(&d, name)?;
        let max_mib = d.max_memory().map_err(self.err("reading", name))? / 1024;
        if mib == 0 || mib > max_mib {
            return Err(VmError::OutOfRange {
                name: name.into(),
                what: "memory (MiB)",
                asked: mib,
                max: max_mib,
                how: "the maximum is the definition's <memory>; raise it with the VM shut off",
            });
        }
        d.set_memory_flags(mib * 1024, flags)
            .map_err(self.err("setting the memory of", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const XML: &str = "<domain><devices>\
        <disk type='file' device='disk'><source file='/i/a.qcow2'/><target dev='vda' bus='virtio'/></disk>\
        <disk type='file' device='disk'><source file='/i/c.qcow2'/><target dev='vdc' bus='virtio'/></disk>\
        <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface>\
        </devices></domain>";

    #[test]
    fn the_next_disk_name_is_the_first_free_one_on_its_bus() {
        assert_eq!(next_disk_name(XML, "virtio").as_deref(), Some("vdb"));
        assert_eq!(next_disk_name(XML, "scsi").as_deref(), Some("sda"));
        let full: String = (0..26)
            .map(|i| format!("<target dev='{}'", device_name("virtio", i)))
            .collect();
        assert_eq!(next_disk_name(&full, "virtio"), None);
    }

    #[test]
    fn a_detach_names_the_whole_element_of_that_device_only() {
        let vdc = device_element(XML, "disk", "<target dev='vdc'").unwrap();
        assert!(vdc.starts_with("<disk ") && vdc.ends_with("</disk>") && vdc.contains("/i/c.qcow2"));
        assert!(!vdc.contains("a.qcow2"));
        assert!(device_element(XML, "disk", "<target dev='vdb'").is_none());
        let nic = device_element(XML, "interface", "<mac address='52:54:00:00:00:01'").unwrap();
        assert!(nic.ends_with("</interface>"));
    }

    #[test]
    fn device_xml_escapes_what_it_is_given() {
        let x = disk_device_xml(Path::new("/i/x'y.qcow2"), "qcow2", "vdb", "virtio");
        assert!(x.contains("/i/x&apos;y.qcow2") && !x.contains("x'y"), "{x}");
        let mac: MacAddr = "52:54:00:aa:bb:cc".parse().unwrap();
        let n = nic_device_xml("br<0>", "virtio", mac);
        assert!(n.contains("br&lt;0&gt;") && n.contains("52:54:00:aa:bb:cc"), "{n}");
    }
}
