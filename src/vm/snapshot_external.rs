//! External (disk-only) snapshots: how a *running* VM is snapshotted. libvirt starts a new
//! qcow2 overlay on each of the domain's own disks and the domain writes there from then
//! on; the file below the overlay is frozen as the snapshot's state. A quiesce through the
//! guest agent (fsfreeze) is asked for when the domain's agent is connected.
//!
//! The libvirt of these hosts (9.0) creates such snapshots but can neither revert nor
//! delete them (that came in 9.9 and 9.7), so provd does both itself, through libvirt's
//! storage and block-job APIs only (it works the same on a remote hypervisor):
//! - **revert** (VM shut off): the snapshot's overlay is emptied (a fresh overlay on the
//!   same frozen file, at the same path), the domain's disks point at it again, and the
//!   snapshots taken after it go (`--force`, as for internal ones) with their overlays;
//! - **delete**: the snapshot's overlay is merged into the file below it (block commit;
//!   an *active* commit with a pivot when the domain writes to it now), then removed. A
//!   shut-off VM is started paused for the merge (a block job needs a running QEMU) and
//!   powered off again; the guest runs no instruction meanwhile.
//!
//! Since provd makes each new snapshot on top of the current one and a revert removes the
//! abandoned branch, every disk's chain stays a line: own disk <- overlay 1 <- ... <- top.
//! `purge` follows that line (`chain_files`) so no overlay is left behind. What to do is
//! decided by pure functions here (`external_disks`, `overlay_path`, `chain_files`,
//! `clone_xml::set_disk_source`, `agent_connected`), unit-tested; the libvirt calls are the thin part.

use super::storage::Volumes;
use super::{Hypervisor, VmError, blockjob, xml};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;
use virt::sys;

/// A snapshot's description when provd made it: plain, or quiesced by the guest agent
/// (`vm snapshot list` tells them apart by it).
pub(super) const PLAIN: &str = "provd";
pub(super) const QUIESCED: &str = "provd, quiesced by the guest agent";

/// One disk of an external snapshot: its target (`vda`) and the overlay the snapshot began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalDisk {
    pub target: String,
    pub overlay: PathBuf,
}

/// The external disks a libvirt snapshot description names (empty for an internal one).
pub fn external_disks(snapshot_xml: &str) -> Vec<ExternalDisk> {
    let Ok(root) = xmltree::Element::parse(snapshot_xml.as_bytes()) else {
        return Vec::new();
    };
    let Some(disks) = root.get_child("disks") else {
        return Vec::new();
    };
    disks
        .children
        .iter()
        .filter_map(|n| n.as_element())
        .filter(|d| d.name == "disk" && d.attributes.get("snapshot").map(String::as_str) == Some("external"))
        .filter_map(|d| {
            Some(ExternalDisk {
                target: d.attributes.get("name")?.clone(),
                overlay: PathBuf::from(d.get_child("source")?.attributes.get("file")?),
            })
        })
        .collect()
}

/// Where the overlay of `vm`'s disk `target` for snapshot `snap` goes: beside `disk`, named
/// after the VM, the disk and the snapshot (never after the current file, which may itself
/// be an overlay: names would grow with every snapshot).
pub fn overlay_path(disk: &Path, vm: &str, target: &str, snap: &str) -> PathBuf {
    let dir = disk.parent().unwrap_or(Path::new("/"));
    dir.join(format!("{vm}_{target}.{snap}.qcow2"))
}

/// The guest agent is connected: libvirt's live XML marks its channel `state='connected'`.
pub fn agent_connected(live_xml: &str) -> bool {
    live_xml.split("<target ").skip(1).any(|t| {
        let tag = &t[..t.find('>').unwrap_or(t.len())];
        tag.contains("name='org.qemu.guest_agent.0'") && tag.contains("state='connected'")
    })
}

/// Every file of one disk's chain that is the domain's own: from `top` down through each
/// snapshot overlay, and the file below the last overlay (the disk as it was before the
/// first snapshot). A template below that (a linked clone's base) is never reached.
pub fn chain_files(
    top: &Path,
    overlays: &HashSet<PathBuf>,
    mut backing: impl FnMut(&Path) -> Option<PathBuf>,
) -> Vec<PathBuf> {
    let mut files = vec![top.to_path_buf()];
    let mut at = top.to_path_buf();
    while overlays.contains(&at) {
        match backing(&at) {
            Some(below) if !files.contains(&below) => {
                files.push(below.clone());
                at = below;
            }
            _ => break,
        }
    }
    files
}

/// The definition `xml` with disk `target` on `file` (its backing chain forgotten), or None
/// when it already is there or has no such disk.
fn retarget_disk(xml: &str, vm: &str, target: &str, file: &Path, format: &str) -> Result<Option<String>, VmError> {
    if xml::owned_disks(xml).iter().any(|(t, f)| t == target && f == file) {
        return Ok(None);
    }
    super::clone_xml::set_disk_source(xml, target, file, format).map_err(|source| VmError::Definition {
        name: vm.into(),
        source,
    })
}

/// The `<domainsnapshot>` asking for an external overlay on each of the domain's own disks
/// (at `overlay_path`) and none on the others (CD-ROMs, shared and read-only disks).
fn snapshot_request(vm: &str, snap: &str, domain_xml: &str, quiesced: bool) -> String {
    let owned = xml::owned_disks(domain_xml);
    let mut disks = String::new();
    for target in xml::disk_targets(domain_xml) {
        match owned.iter().find(|(t, _)| *t == target) {
            Some((_, own)) => disks.push_str(&format!(
                "<disk name='{}' snapshot='external'><driver type='qcow2'/><source file='{}'/></disk>",
                xml::esc(&target),
                xml::esc(&overlay_path(own, vm, &target, snap).display().to_string())
            )),
            None => disks.push_str(&format!("<disk name='{}' snapshot='no'/>", xml::esc(&target))),
        }
    }
    format!(
        "<domainsnapshot><name>{snap}</name><description>{}</description><disks>{disks}</disks></domainsnapshot>",
        if quiesced { QUIESCED } else { PLAIN }
    )
}

/// The file an external snapshot's overlay stands on (the snapshot's state), and its format.
fn frozen_below(vols: &mut Volumes, overlay: &Path) -> Result<(PathBuf, String), VmError> {
    vols.backing(overlay)
        .map_err(VmError::on_disk(overlay))?
        .ok_or_else(|| VmError::Disk {
            path: overlay.to_path_buf(),
            message: "the snapshot's overlay has no backing file (changed outside provd?)".into(),
        })
}

impl Hypervisor {
    /// An external disk-only snapshot (the domain may run); quiesced when its agent is
    /// connected, unless `no_quiesce`.
    pub(super) fn create_external(
        &self,
        d: &Domain,
        vm: &str,
        snap: &str,
        no_quiesce: bool,
    ) -> Result<DomainSnapshot, VmError> {
        let live = d.xml_desc(0).map_err(self.err("reading", vm))?;
        let quiesce = !no_quiesce && self.is_active(d, vm)? && agent_connected(&live);
        let request = snapshot_request(vm, snap, &live, quiesce);
        let mut flags = sys::VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | sys::VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC;
        if quiesce {
            flags |= sys::VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE;
        }
        d.create_snapshot_xml(&request, flags).map_err(|e| VmError::Libvirt {
            what: if quiesce {
                "snapshotting (quiesced by its guest agent; --no-quiesce to snapshot without)"
            } else {
                "snapshotting"
            },
            name: vm.into(),
            uri: self.uri.clone(),
            message: e.to_string(),
        })
    }

    /// Revert the shut-off domain to the external snapshot `s`; `newer` are the snapshots
    /// taken after it (already allowed to go by the caller).
    pub(super) fn revert_external(
        &self,
        d: &Domain,
        vm: &str,
        s: &DomainSnapshot,
        newer: &[String],
    ) -> Result<(), VmError> {
        let mut vols = Volumes::new(&self.conn);
        for name in newer {
            let n = self.snapshot_of(d, vm, name)?;
            let xml = n.xml_desc(0).map_err(self.err("reading a snapshot of", vm))?;
            n.delete(sys::VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
                .map_err(self.err("deleting a snapshot of", vm))?;
            for disk in external_disks(&xml) {
                if vols.exists(&disk.overlay) {
                    vols.delete(&disk.overlay).map_err(VmError::on_disk(&disk.overlay))?;
                }
            }
        }
        let snap_xml = s.xml_desc(0).map_err(self.err("reading a snapshot of", vm))?;
        let mut def = d
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(self.err("reading", vm))?;
        for disk in external_disks(&snap_xml) {
            let (base, format) = frozen_below(&mut vols, &disk.overlay)?;
            vols.delete(&disk.overlay).map_err(VmError::on_disk(&disk.overlay))?;
            vols.create_overlay(&base, &format, &disk.overlay)
                .map_err(VmError::on_disk(&disk.overlay))?;
            if let Some(changed) = retarget_disk(&def, vm, &disk.target, &disk.overlay, "qcow2")? {
                def = changed;
            }
        }
        self.conn.define_domain_xml(&def).map_err(self.err("redefining", vm))?;
        // libvirt's idea of the current snapshot follows what the disks now descend from.
        let current = s.xml_desc(0).map_err(self.err("reading a snapshot of", vm))?;
        d.create_snapshot_xml(
            &current,
            sys::VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | sys::VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT,
        )
        .map_err(self.err("marking the current snapshot of", vm))?;
        Ok(())
    }

    /// Delete the external snapshot `s`: merge each overlay it began into the file below,
    /// then remove the overlay and the snapshot's record.
    pub(super) fn delete_external(&self, d: &Domain, vm: &str, s: &DomainSnapshot) -> Result<(), VmError> {
        let snap_xml = s.xml_desc(0).map_err(self.err("reading a snapshot of", vm))?;
        let was_running = self.is_active(d, vm)?;
        if !was_running {
            // A block job needs a running QEMU: start it paused (no guest code runs).
            d.create_with_flags(sys::VIR_DOMAIN_START_PAUSED)
                .map_err(self.err("starting paused to merge the snapshot of", vm))?;
        }
        let merged = self.merge_overlays(d, vm, &snap_xml);
        if !was_running {
            let _ = d.destroy();
        }
        merged?;
        s.delete(sys::VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY)
            .map_err(self.err("deleting a snapshot of", vm))
    }

    fn merge_overlays(&self, d: &Domain, vm: &str, snap_xml: &str) -> Result<(), VmError> {
        let mut vols = Volumes::new(&self.conn);
        for disk in external_disks(snap_xml) {
            let (base, base_format) = frozen_below(&mut vols, &disk.overlay)?;
            let live = d.xml_desc(0).map_err(self.err("reading", vm))?;
            let active = xml::owned_disks(&live)
                .iter()
                .any(|(t, f)| *t == disk.target && *f == disk.overlay);
            blockjob::commit(d, &disk.target, &base, &disk.overlay, active).map_err(|e| VmError::Libvirt {
                what: "merging a snapshot's overlay of",
                name: vm.into(),
                uri: self.uri.clone(),
                message: format!("{} into {}: {e}", disk.overlay.display(), base.display()),
            })?;
            if active {
                // The domain now writes to `base`: its definition must say so too.
                let def = d
                    .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
                    .map_err(self.err("reading", vm))?;
                if let Some(changed) = retarget_disk(&def, vm, &disk.target, &base, &base_format)? {
                    self.conn
                        .define_domain_xml(&changed)
                        .map_err(self.err("redefining", vm))?;
                }
            }
            vols.delete(&disk.overlay).map_err(VmError::on_disk(&disk.overlay))?;
        }
        Ok(())
    }

    /// Every file of the domain's own disks, overlays of its external snapshots included
    /// (what `purge` removes).
    pub(super) fn own_files(&self, d: &Domain, vm: &str) -> Result<Vec<PathBuf>, VmError> {
        let def = d.xml_desc(0).map_err(self.err("reading", vm))?;
        let mut overlays = HashSet::new();
        for s in d.list_all_snapshots(0).map_err(self.err("listing snapshots of", vm))? {
            let x = s.xml_desc(0).map_err(self.err("reading a snapshot of", vm))?;
            overlays.extend(external_disks(&x).into_iter().map(|e| e.overlay));
        }
        let mut vols = Volumes::new(&self.conn);
        let mut files = Vec::new();
        for (_, top) in xml::owned_disks(&def) {
            for f in chain_files(&top, &overlays, |p| vols.backing(p).ok().flatten().map(|(b, _)| b)) {
                if !files.contains(&f) {
                    files.push(f);
                }
            }
        }
        Ok(files)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "<domainsnapshot>
  <name>s2</name>
  <state>disk-snapshot</state>
  <parent><name>s1</name></parent>
  <memory snapshot='no'/>
  <disks>
    <disk name='vda' snapshot='external' type='file'>
      <driver type='qcow2'/>
      <source file='/img/web_vda.s2.qcow2'/>
    </disk>
    <disk name='vdb' snapshot='external' type='file'><source file='/img/web_vdb.s2.qcow2'/></disk>
    <disk name='hdc' snapshot='no'/>
  </disks>
  <domain type='qemu'><devices><disk type='file' device='disk'><source file='/img/web_vda.s1.qcow2'/></disk></devices></domain>
</domainsnapshot>";

    #[test]
    fn external_disks_are_read_from_the_snapshot_not_its_domain() {
        assert_eq!(
            external_disks(SNAPSHOT),
            vec![
                ExternalDisk {
                    target: "vda".into(),
                    overlay: "/img/web_vda.s2.qcow2".into()
                },
                ExternalDisk {
                    target: "vdb".into(),
                    overlay: "/img/web_vdb.s2.qcow2".into()
                },
            ]
        );
        let internal = "<domainsnapshot><name>a</name><state>shutoff</state></domainsnapshot>";
        assert!(external_disks(internal).is_empty());
        assert!(external_disks("not xml").is_empty());
    }

    #[test]
    fn overlays_are_named_after_vm_disk_and_snapshot() {
        let p = overlay_path(Path::new("/img/web_vda.s1.qcow2"), "web", "vda", "s2");
        assert_eq!(p, PathBuf::from("/img/web_vda.s2.qcow2"));
    }

    #[test]
    fn the_agent_counts_only_when_connected() {
        let on =
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='connected'/></channel>";
        let off =
            "<channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0' state='disconnected'/></channel>";
        assert!(agent_connected(on));
        assert!(!agent_connected(off));
        assert!(!agent_connected("<target dev='vda' bus='virtio'/>"));
    }

    #[test]
    fn the_chain_stops_below_the_last_overlay_and_never_reaches_the_template() {
        let backing = |p: &Path| -> Option<PathBuf> {
            match p.to_str()? {
                "/i/top" => Some("/i/o1".into()),
                "/i/o1" => Some("/i/own".into()),
                "/i/own" => Some("/tpl/template".into()),
                _ => None,
            }
        };
        let overlays: HashSet<PathBuf> = ["/i/top", "/i/o1"].iter().map(PathBuf::from).collect();
        assert_eq!(
            chain_files(Path::new("/i/top"), &overlays, backing),
            ["/i/top", "/i/o1", "/i/own"].map(PathBuf::from)
        );
        // No snapshots: the disk alone (a linked clone's template stays out).
        assert_eq!(
            chain_files(Path::new("/i/own"), &HashSet::new(), backing),
            [PathBuf::from("/i/own")]
        );
        // A loop in a corrupt chain ends.
        let looped = |_: &Path| Some(PathBuf::from("/i/top"));
        assert_eq!(chain_files(Path::new("/i/top"), &overlays, looped).len(), 1);
    }

    #[test]
    fn retarget_changes_only_that_disk_and_drops_its_old_chain() {
        let def = "<domain><devices>\
            <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/i/a.s2.qcow2'/>\
            <backingStore type='file'><format type='qcow2'/><source file='/i/a.s1.qcow2'/><backingStore/></backingStore>\
            <target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='disk'><source file='/i/b.qcow2'/><target dev='vdb' bus='virtio'/></disk>\
            </devices></domain>";
        let changed = retarget_disk(def, "web", "vda", Path::new("/i/a.s1.qcow2"), "qcow2")
            .unwrap()
            .unwrap();
        assert_eq!(
            xml::owned_disks(&changed),
            [
                ("vda".to_string(), PathBuf::from("/i/a.s1.qcow2")),
                ("vdb".to_string(), PathBuf::from("/i/b.qcow2"))
            ]
        );
        assert!(!changed.contains("backingStore"), "{changed}");
        assert_eq!(
            retarget_disk(def, "web", "vdc", Path::new("/x"), "qcow2").unwrap(),
            None
        );
        assert_eq!(
            retarget_disk(def, "web", "vdb", Path::new("/i/b.qcow2"), "qcow2").unwrap(),
            None,
            "already there"
        );
        let raw = retarget_disk(def, "web", "vda", Path::new("/i/a.raw"), "raw")
            .unwrap()
            .unwrap();
        assert!(raw.contains("type=\"raw\""), "{raw}");
    }

    #[test]
    fn the_request_overlays_own_disks_and_skips_the_rest() {
        let def = "<domain><devices>\
            <disk type='file' device='disk'><source file='/i/web_system.qcow2'/><target dev='vda' bus='virtio'/></disk>\
            <disk type='file' device='disk'><source file='/shared/iso.img'/><target dev='vdb' bus='virtio'/><readonly/></disk>\
            <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/></disk>\
            </devices></domain>";
        let r = snapshot_request("web", "s1", def, true);
        assert!(
            r.contains(
                "<disk name='vda' snapshot='external'><driver type='qcow2'/><source file='/i/web_vda.s1.qcow2'/></disk>"
            ),
            "{r}"
        );
        assert!(
            r.contains("<disk name='vdb' snapshot='no'/>") && r.contains("<disk name='hdc' snapshot='no'/>"),
            "{r}"
        );
        assert!(r.contains(QUIESCED), "{r}");
    }
}
