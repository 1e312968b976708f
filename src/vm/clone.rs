//! `provd vm clone`: a new domain from a shut-off template, linked (qcow2 overlays on the
//! template's disks) or full (independent copies by libvirt's volume clone), all or
//! nothing: any failure deletes the volumes this call made and undefines what it defined.
//!
//! A template with linked clones is protected: provd refuses to start, sysprep, undefine
//! or purge it while any domain records it (by UUID) as its linked template, because
//! writing to a backing file corrupts every overlay on it.

use super::clone_xml::{self, ClonePlan, DiskCopy};
use super::metadata::{CloneMark, VmMeta};
use super::storage::Volumes;
use super::{DomainSummary, Hypervisor, VmError};
use crate::mac::MacAddr;
use std::collections::HashSet;
use virt::domain::Domain;

/// libvirt's "inactive" (persistent definition) and "secure" (keep VNC passwords) XML flags.
const XML_INACTIVE_SECURE: u32 = virt::sys::VIR_DOMAIN_XML_INACTIVE | virt::sys::VIR_DOMAIN_XML_SECURE;

#[derive(Clone, Copy)]
pub struct CloneRequest<'a> {
    pub template: &'a str,
    pub name: &'a str,
    pub linked: bool,
    /// `ds=nocloud-net;s=URL` for a deployed VM (SMBIOS system serial).
    pub smbios_serial: Option<&'a str>,
    /// The seed URL, recorded in the clone's metadata.
    pub nocloud_url: Option<&'a str>,
    /// New vCPU count / memory, for `deploy --cpus/--memory`.
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// Replace the template's NICs with these (`deploy --nic-profile`).
    pub nics: Option<&'a [crate::config::NicSpec]>,
    /// A disk profile (`deploy --disk-profile`): its first disk is the template's first
    /// disk, grown to the profile's size if smaller; the others are new empty data disks.
    pub disk_profile: Option<&'a [crate::config::DiskSpec]>,
}

impl<'a> CloneRequest<'a> {
    /// `provd vm clone`'s request: the template as it is, under a new name (no identity,
    /// size or device changes; `deploy` sets those).
    pub fn plain(template: &'a str, name: &'a str, linked: bool) -> CloneRequest<'a> {
        CloneRequest {
            template,
            name,
            linked,
            smbios_serial: None,
            nocloud_url: None,
            vcpus: None,
            memory_mib: None,
            nics: None,
            disk_profile: None,
        }
    }
}

/// What a clone reports while it works (a CLI draws progress bars from these).
#[derive(Debug)]
pub enum CloneEvent<'a> {
    /// A disk starts: full copies report the bytes the template's disk really uses.
    DiskStart {
        disk: &'a DiskCopy,
        linked: bool,
        bytes: u64,
    },
    DiskDone {
        disk: &'a DiskCopy,
    },
}

/// A disk profile's disks after the first (the template's): new empty disks, named after
/// the clone.
fn data_disks_of(r: &CloneRequest) -> Vec<super::xml::AttachedDisk> {
    let Some(profile) = r.disk_profile else {
        return Vec::new();
    };
    profile
        .iter()
        .skip(1)
        .map(|spec| {
            let ext = if spec.format == "raw" { "img" } else { "qcow2" };
            super::xml::AttachedDisk {
                spec: spec.clone(),
                path: spec.dir.join(format!("{}_{}.{ext}", r.name, spec.name)),
            }
        })
        .collect()
}

/// A clone never writes over a file that exists.
fn refuse_overwrite<'p>(
    vols: &mut Volumes,
    mut paths: impl Iterator<Item = &'p std::path::Path>,
) -> Result<(), VmError> {
    match paths.find(|p| vols.exists(p)) {
        Some(p) => Err(VmError::Disk {
            path: p.to_path_buf(),
            message: "already exists; refusing to overwrite it".into(),
        }),
        None => Ok(()),
    }
}

/// One of the template's disks: an overlay on it (linked) or a full copy, with progress.
fn copy_disk(
    vols: &mut Volumes,
    d: &DiskCopy,
    linked: bool,
    progress: &mut dyn FnMut(CloneEvent),
) -> Result<(), VmError> {
    let bytes = if linked {
        0
    } else {
        vols.size(&d.source).map_err(VmError::on_disk(&d.dest))?.allocation
    };
    progress(CloneEvent::DiskStart { disk: d, linked, bytes });
    if linked {
        vols.create_overlay(&d.source, &d.source_format, &d.dest)
    } else {
        vols.copy_full(&d.source, &d.source_format, &d.dest)
    }
    .map_err(VmError::on_disk(&d.dest))?;
    progress(CloneEvent::DiskDone { disk: d });
    Ok(())
}

impl Hypervisor {
    pub(super) fn meta(&self, d: &Domain) -> VmMeta {
        d.metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(clone_xml::METADATA_NS),
            virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
        )
        .map(|x| VmMeta::parse(&x))
        .unwrap_or_default()
    }

    pub(super) fn set_meta(&self, d: &Domain, name: &str, meta: &VmMeta) -> Result<(), VmError> {
        d.set_metadata(
            virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&meta.to_xml()),
            Some("provd"),
            Some(clone_xml::METADATA_NS),
            virt::sys::VIR_DOMAIN_AFFECT_CONFIG,
        )
        .map_err(self.err("writing provd metadata of", name))
    }

    /// provd's marks on a domain (template, clone-of, nocloud).
    pub fn metadata(&self, name: &str) -> Result<VmMeta, VmError> {
        Ok(self.meta(&self.domain(name)?))
    }

    /// Names of the domains whose disks are overlays on this one's.
    pub fn linked_clones_of(&self, name: &str) -> Result<Vec<String>, VmError> {
        let uuid = self.domain(name)?.uuid_string().map_err(self.err("reading", name))?;
        let all = self.conn.list_all_domains(0).map_err(self.err("listing", "domains"))?;
        let mut out: Vec<String> = all
            .iter()
            .filter(|d| {
                self.meta(d)
                    .clone_of
                    .is_some_and(|c| c.linked && c.template_uuid == uuid)
            })
            .filter_map(|d| d.name().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Refuse `what` on a template that linked clones depend on.
    pub(super) fn refuse_if_backing(&self, name: &str, what: &'static str) -> Result<(), VmError> {
        let clones = self.linked_clones_of(name)?;
        if clones.is_empty() {
            return Ok(());
        }
        Err(VmError::Protected {
            name: name.into(),
            what,
            clones,
        })
    }

    /// Every MAC address any domain on this hypervisor uses (clones must not reuse one).
    pub(super) fn macs_in_use(&self) -> HashSet<MacAddr> {
        let mut used = HashSet::new();
        for d in self.conn.list_all_domains(0).unwrap_or_default() {
            let Ok(x) = d.xml_desc(virt::sys::VIR_DOMAIN_XML_INACTIVE) else {
                continue;
            };
            for part in x.split("<mac address=").skip(1) {
                if let Some(mac) = part.get(1..18).and_then(|m| m.parse().ok()) {
                    used.insert(mac);
                }
            }
        }
        used
    }

    /// Clone `r.template`, or its newest version when it has versions here
    /// (`version::resolve_template`); the clone records which.
    pub fn clone_domain(
        &self,
        r: &CloneRequest,
        progress: &mut dyn FnMut(CloneEvent),
    ) -> Result<DomainSummary, VmError> {
        let resolved = self.resolve_template(r.template)?;
        self.clone_exact(
            &CloneRequest {
                template: &resolved,
                ..*r
            },
            progress,
        )
    }

    /// Clone exactly the domain `r.template` names.
    pub(super) fn clone_exact(
        &self,
        r: &CloneRequest,
        progress: &mut dyn FnMut(CloneEvent),
    ) -> Result<DomainSummary, VmError> {
        let template = self.domain(r.template)?;
        if self.is_active(&template, r.template)? {
            return Err(VmError::WrongState {
                name: r.template.into(),
                state: super::state_name(&template),
                what: "clone",
                needs: "shut off (a running disk is not a consistent copy)",
            });
        }
        if self.conn.lookup_domain_by_name(r.name).is_ok() {
            return Err(VmError::Exists {
                name: r.name.into(),
                uri: self.uri.clone(),
            });
        }
        let template_uuid = template.uuid_string().map_err(self.err("reading", r.template))?;
        let template_version = self.meta(&template).template.and_then(|t| t.version);
        let xml = template
            .xml_desc(XML_INACTIVE_SECURE)
            .map_err(self.err("reading", r.template))?;
        let mut used = self.macs_in_use();
        let mut fresh_mac = || loop {
            let m = super::random_mac();
            if used.insert(m) {
                return m;
            }
        };
        let plan_err = |source| VmError::Definition {
            name: r.template.into(),
            source,
        };
        let ClonePlan {
            mut xml, disks, nvram, ..
        } = clone_xml::plan_clone(&xml, r.name, r.linked, &mut fresh_mac).map_err(plan_err)?;
        if let Some(serial) = r.smbios_serial {
            xml = clone_xml::set_smbios_serial(&xml, serial).map_err(plan_err)?;
        }
        if let Some(nics) = r.nics {
            let with_macs: Vec<_> = nics
                .iter()
                .map(|n| (n.clone(), n.mac.unwrap_or_else(&mut fresh_mac)))
                .collect();
            xml = clone_xml::set_nics(&xml, &with_macs).map_err(plan_err)?;
        }
        if r.vcpus.is_some() || r.memory_mib.is_some() {
            xml = clone_xml::set_size(&xml, r.vcpus, r.memory_mib).map_err(plan_err)?;
        }

        let data_disks = data_disks_of(r);
        if !data_disks.is_empty() {
            xml = clone_xml::add_disks(&xml, &data_disks).map_err(plan_err)?;
        }
        let mut vols = Volumes::new(&self.conn);
        refuse_overwrite(
            &mut vols,
            data_disks
                .iter()
                .map(|d| d.path.as_path())
                .chain(disks.iter().map(|d| d.dest.as_path())),
        )?;
        // From here on, undo what was made if anything fails.
        let mut made: Vec<std::path::PathBuf> = Vec::new();
        let result = (|| -> Result<Domain, VmError> {
            for d in &disks {
                copy_disk(&mut vols, d, r.linked, progress)?;
                made.push(d.dest.clone());
            }
            if let (Some(profile), Some(first)) = (r.disk_profile, disks.first())
                && let Some(system) = profile.first()
            {
                vols.grow(&first.dest, u64::from(system.size_gib) << 30)
                    .map_err(VmError::on_disk(&first.dest))?;
            }
            for d in &data_disks {
                vols.create_empty(&d.path, &d.spec.format, u64::from(d.spec.size_gib) << 30)
                    .map_err(VmError::on_disk(&d.path))?;
                made.push(d.path.clone());
            }
            if let Some((from, to)) = &nvram {
                refuse_overwrite(&mut vols, [to.as_path()].into_iter())?;
                vols.copy_full(from, "raw", to).map_err(VmError::on_disk(to))?;
                made.push(to.clone());
            }
            let dom = self
                .conn
                .define_domain_xml(&xml)
                .map_err(self.err("defining", r.name))?;
            let meta = VmMeta {
                template: None,
                clone_of: Some(CloneMark {
                    template_name: r.template.into(),
                    template_uuid,
                    linked: r.linked,
                    version: template_version,
                }),
                nocloud: r.nocloud_url.map(str::to_string),
            };
            if let Err(e) = self.set_meta(&dom, r.name, &meta) {
                let _ = dom.undefine();
                return Err(e);
            }
            Ok(dom)
        })();
        match result {
            Ok(dom) => self.summary(&dom),
            Err(e) => {
                for path in made.iter().rev() {
                    let _ = vols.delete(path);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A private test driver holding a shut-off template whose disk is a volume of a dir pool,
    /// and a running domain. Clones go through the same libvirt storage calls as on a real
    /// hypervisor (the test driver keeps volumes in memory).
    pub(in crate::vm) fn driver() -> (tempfile::TempDir, Hypervisor) {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(
            &node,
            "<node>\
             <domain type='test'><name>tpl</name><memory>524288</memory><vcpu>1</vcpu><os><type>hvm</type></os>\
               <devices>\
                 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/pool/tpl_system.qcow2'/><target dev='vda' bus='virtio'/></disk>\
                 <disk type='file' device='cdrom'><source file='/iso/x.iso'/><target dev='sda' bus='sata'/><readonly/></disk>\
                 <interface type='bridge'><mac address='52:54:00:00:00:01'/><source bridge='br0'/></interface>\
               </devices></domain>\
             <domain type='test'><name>broken</name><memory>524288</memory><vcpu>1</vcpu><os><type>hvm</type></os>\
               <devices>\
                 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/pool/tpl_system.qcow2'/><target dev='vda' bus='virtio'/></disk>\
                 <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/pool/gone.qcow2'/><target dev='vdb' bus='virtio'/></disk>\
               </devices></domain>\
             <domain type='test'><name>busy</name><memory>524288</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain>\
             <pool type='dir'><name>images</name><target><path>/pool</path></target>\
               <volume type='file'><name>tpl_system.qcow2</name><capacity unit='G'>8</capacity><allocation unit='M'>300</allocation>\
                 <target><path>/pool/tpl_system.qcow2</path><format type='qcow2'/></target></volume>\
             </pool>\
             </node>",
        )
        .unwrap();
        let h = Hypervisor::connect(&format!("test://{}", node.display())).unwrap();
        // The node file's domains all start running; a template is shut off.
        h.destroy("tpl").unwrap();
        h.destroy("broken").unwrap();
        (dir, h)
    }

    fn req<'a>(template: &'a str, name: &'a str, linked: bool) -> CloneRequest<'a> {
        CloneRequest::plain(template, name, linked)
    }

    #[test]
    fn full_and_linked_clones_get_own_identity_and_disks() {
        let (_d, h) = driver();
        let mut events = Vec::new();
        let full = h
            .clone_domain(&req("tpl", "web1", false), &mut |e| {
                events.push(match e {
                    CloneEvent::DiskStart { disk, bytes, .. } => format!("start {} {bytes}", disk.target),
                    CloneEvent::DiskDone { disk } => format!("done {}", disk.target),
                })
            })
            .unwrap();
        assert_eq!(
            events,
            ["start vda 314572800", "done vda"],
            "progress per disk, in bytes used"
        );
        let linked = h.clone_domain(&req("tpl", "web2", true), &mut |_| {}).unwrap();
        let tpl = h.info("tpl").unwrap();
        assert_eq!(full.state, "shutoff");
        let uuids = [&tpl.uuid, &full.uuid, &linked.uuid];
        assert!(
            uuids[0] != uuids[1] && uuids[1] != uuids[2] && uuids[0] != uuids[2],
            "{uuids:?}"
        );
        let (x1, x2) = (h.xml("web1").unwrap(), h.xml("web2").unwrap());
        assert!(x1.contains("/pool/web1_system.qcow2") && x2.contains("/pool/web2_system.qcow2"));
        assert!(
            x1.contains("/iso/x.iso") && x2.contains("/iso/x.iso"),
            "the CD-ROM is shared"
        );
        assert!(!x1.contains("52:54:00:00:00:01") && !x2.contains("52:54:00:00:00:01"));
        let mut vols = super::super::storage::Volumes::new(&h.conn);
        assert_eq!(
            vols.size(std::path::Path::new("/pool/web1_system.qcow2"))
                .unwrap()
                .capacity,
            8 << 30
        );
        assert_eq!(
            vols.backing_path(std::path::Path::new("/pool/web2_system.qcow2"))
                .unwrap(),
            Some("/pool/tpl_system.qcow2".into())
        );
        assert_eq!(
            vols.backing_path(std::path::Path::new("/pool/web1_system.qcow2"))
                .unwrap(),
            None
        );
        drop(vols);

        let meta = h.metadata("web2").unwrap().clone_of.unwrap();
        assert_eq!(
            (meta.template_name.as_str(), meta.linked, &meta.template_uuid),
            ("tpl", true, &tpl.uuid)
        );
        assert_eq!(h.linked_clones_of("tpl").unwrap(), ["web2"], "web1 is a full clone");

        // The template is protected while web2 depends on it.
        for refused in [h.start("tpl"), h.undefine("tpl"), h.purge("tpl", false).map(|_| ())] {
            assert!(matches!(refused, Err(VmError::Protected { .. })), "{refused:?}");
        }
        h.purge("web2", false).unwrap();
        assert!(h.linked_clones_of("tpl").unwrap().is_empty());
        h.start("tpl").unwrap();
    }

    #[test]
    fn a_disk_profile_grows_the_system_disk_and_adds_data_disks() {
        let (_d, h) = driver();
        let spec = |name: &str, gib| crate::config::DiskSpec {
            name: name.into(),
            size_gib: gib,
            format: "qcow2".into(),
            bus: "virtio".into(),
            dir: "/pool".into(),
        };
        // 4 GiB is less than the template's 8: the system disk keeps its size (never shrunk;
        // growing is covered against a real libvirtd, the test driver cannot resize).
        let profile = [spec("system", 4), spec("data", 2)];
        let mut r = req("tpl", "db1", false);
        r.disk_profile = Some(&profile);
        h.clone_domain(&r, &mut |_| {}).unwrap();
        let mut vols = super::super::storage::Volumes::new(&h.conn);
        assert_eq!(
            vols.size(std::path::Path::new("/pool/db1_system.qcow2"))
                .unwrap()
                .capacity,
            8 << 30
        );
        assert_eq!(
            vols.size(std::path::Path::new("/pool/db1_data.qcow2"))
                .unwrap()
                .capacity,
            2 << 30
        );
        drop(vols);
        let x = h.xml("db1").unwrap();
        assert!(x.contains("/pool/db1_data.qcow2") && x.contains("dev='vdb'"), "{x}");
        // Purge takes the data disk too: it is the domain's own.
        let removed = h.purge("db1", false).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
    }

    #[test]
    fn refusals_leave_nothing_behind() {
        let (_d, h) = driver();
        // A running source, an existing name, and a clone whose disk path is taken.
        assert!(matches!(
            h.clone_domain(&req("busy", "x", false), &mut |_| {}),
            Err(VmError::WrongState { .. })
        ));
        assert!(matches!(
            h.clone_domain(&req("tpl", "busy", false), &mut |_| {}),
            Err(VmError::Exists { .. })
        ));
        h.clone_domain(&req("tpl", "web1", true), &mut |_| {}).unwrap();
        h.undefine("web1").unwrap(); // its disk stays
        assert!(matches!(
            h.clone_domain(&req("tpl", "web1", false), &mut |_| {}),
            Err(VmError::Disk { .. })
        ));
        assert!(
            matches!(h.info("web1"), Err(VmError::NoDomain { .. })),
            "all or nothing"
        );

        // A failure after a disk was made (the second disk's source is missing) removes the
        // first copy again and defines nothing.
        let err = h.clone_domain(&req("broken", "web3", false), &mut |_| {});
        assert!(
            matches!(err, Err(VmError::Storage { ref disk, .. }) if disk.ends_with("web3-gone.qcow2")),
            "{err:?}"
        );
        let mut vols = super::super::storage::Volumes::new(&h.conn);
        assert!(
            !vols.exists(std::path::Path::new("/pool/web3-tpl_system.qcow2")),
            "the first copy was deleted again"
        );
        assert!(matches!(h.info("web3"), Err(VmError::NoDomain { .. })));
    }
}
