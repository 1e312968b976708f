//! Snapshots: `provd vm snapshot create|list|revert|delete`.
//!
//! Two kinds, one per domain:
//! - a shut-off domain whose writable disks are all qcow2 gets an *internal* snapshot
//!   (inside each qcow2, so the domain's disk files stay what they were and purge removes
//!   them with it);
//! - a running domain gets an *external* disk-only one (`snapshot_external`: an overlay per
//!   disk, quiesced through the guest agent when one is connected). Once a domain has
//!   external snapshots its later ones are external too, even shut off; a running domain
//!   with internal snapshots is refused (the two kinds on one disk chain cannot be
//!   reverted safely). `kind_for` is that rule, pure and unit-tested.
//!
//! Two refusals protect what cannot be undone: a template that linked clones back is
//! never snapshotted or reverted (its disk is their base), and a revert that would leave
//! newer snapshots on an abandoned branch needs `--force`. A revert needs the domain shut
//! off (a disk-only snapshot holds no memory to resume). The revert rule is pure
//! (`revert_refusal`) and unit-tested; the libvirt calls are the thin part around it.

use super::snapshot_external::{PLAIN, QUIESCED};
use super::{Hypervisor, VmError};
use serde::Serialize;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;

/// Where a snapshot's state lives.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// Inside the domain's qcow2 files (taken shut off).
    Internal,
    /// The files below per-disk overlays (taken running, or after other external ones).
    External,
}

/// Which kind a new snapshot of a domain is, given whether it runs and the kinds of its
/// snapshots so far; Err says why none can be taken.
pub fn kind_for(running: bool, existing: &[SnapshotKind]) -> Result<SnapshotKind, &'static str> {
    let has = |k| existing.contains(&k);
    match (running, has(SnapshotKind::Internal), has(SnapshotKind::External)) {
        (true, true, _) => Err(
            "it has internal snapshots (taken shut off), and a running VM's snapshot is external: the two \
             kinds on one disk chain cannot be reverted safely; shut it off to snapshot it, or delete them",
        ),
        (_, _, true) | (true, false, false) => Ok(SnapshotKind::External),
        (false, _, false) => Ok(SnapshotKind::Internal),
    }
}

/// One snapshot as `vm snapshot list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    pub kind: SnapshotKind,
    /// The guest agent froze the file systems while it was taken.
    pub quiesced: bool,
    /// Unix time libvirt recorded at creation.
    pub created: i64,
    /// The domain's state when it was taken ("shutoff", "running", "disk-snapshot").
    pub state: String,
    pub parent: Option<String>,
    /// The one the domain's disks now descend from.
    pub current: bool,
    /// Snapshots made after this one from its state (its descendants).
    pub newer: Vec<String>,
}

/// Why a revert to `target` would lose something, given the snapshots made after it; None
/// when it is safe (or `force` says do it anyway).
pub fn revert_refusal(target: &str, newer: &[String], force: bool) -> Option<String> {
    if force || newer.is_empty() {
        return None;
    }
    Some(format!(
        "{} newer snapshot(s) ({}) were taken after {target:?}; reverting leaves them on an abandoned \
         branch and discards the disks' state since: --force to revert anyway",
        newer.len(),
        newer.join(", ")
    ))
}

/// The text of `<tag>...</tag>` in libvirt's snapshot XML (no attributes on these tags).
fn tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..start + end].trim())
}

/// A snapshot name as provd accepts it: what a file name and libvirt both take as is.
fn check_name(name: &str) -> Result<(), VmError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(VmError::BadSnapshotName { name: name.into() })
    }
}

impl Hypervisor {
    pub(super) fn snapshot_of(&self, d: &Domain, vm: &str, snap: &str) -> Result<DomainSnapshot, VmError> {
        Domain::lookup_snapshot_by_name(d, snap, 0).map_err(|_| VmError::NoSnapshot {
            name: vm.into(),
            snapshot: snap.into(),
        })
    }

    fn snapshot_info(&self, vm: &str, s: &DomainSnapshot) -> Result<SnapshotInfo, VmError> {
        let name = s.name().map_err(self.err("reading a snapshot of", vm))?;
        let xml = s.xml_desc(0).map_err(self.err("reading a snapshot of", vm))?;
        let mut newer: Vec<String> = s
            .list_all_children(virt::sys::VIR_DOMAIN_SNAPSHOT_LIST_DESCENDANTS)
            .map_err(self.err("reading a snapshot of", vm))?
            .iter()
            .filter_map(|c| c.name().ok())
            .collect();
        newer.sort();
        let external = !super::snapshot_external::external_disks(&xml).is_empty();
        Ok(SnapshotInfo {
            kind: if external {
                SnapshotKind::External
            } else {
                SnapshotKind::Internal
            },
            quiesced: tag(&xml, "description") == Some(QUIESCED),
            created: tag(&xml, "creationTime").and_then(|t| t.parse().ok()).unwrap_or(0),
            state: tag(&xml, "state").unwrap_or("unknown").to_string(),
            parent: s.parent(0).ok().and_then(|p| p.name().ok()),
            current: s.is_current(0).unwrap_or(false),
            newer,
            name,
        })
    }

    /// A snapshot of the domain: internal when it is shut off, external (quiesced when its
    /// guest agent is connected, unless `no_quiesce`) when it runs; see `kind_for`.
    pub fn snapshot_create(&self, vm: &str, snap: &str, no_quiesce: bool) -> Result<SnapshotInfo, VmError> {
        check_name(snap)?;
        let d = self.domain(vm)?;
        self.refuse_if_backing(vm, "a snapshot of it")?;
        if Domain::lookup_snapshot_by_name(&d, snap, 0).is_ok() {
            return Err(VmError::SnapshotExists {
                name: vm.into(),
                snapshot: snap.into(),
            });
        }
        let kinds: Vec<SnapshotKind> = self.snapshot_list(vm)?.iter().map(|s| s.kind).collect();
        let kind = kind_for(self.is_active(&d, vm)?, &kinds)
            .map_err(|why| VmError::SnapshotRefused { name: vm.into(), why })?;
        let s = match kind {
            SnapshotKind::External => self.create_external(&d, vm, snap, no_quiesce)?,
            SnapshotKind::Internal => {
                let xml =
                    format!("<domainsnapshot><name>{snap}</name><description>{PLAIN}</description></domainsnapshot>");
                d.create_snapshot_xml(&xml, 0).map_err(self.err("snapshotting", vm))?
            }
        };
        self.snapshot_info(vm, &s)
    }

    /// Every snapshot of the domain, oldest first.
    pub fn snapshot_list(&self, vm: &str) -> Result<Vec<SnapshotInfo>, VmError> {
        let d = self.domain(vm)?;
        let mut out = d
            .list_all_snapshots(0)
            .map_err(self.err("listing snapshots of", vm))?
            .iter()
            .map(|s| self.snapshot_info(vm, s))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        Ok(out)
    }

    /// Put the (shut-off) domain's disks back to `snap`; it stays shut off.
    pub fn snapshot_revert(&self, vm: &str, snap: &str, force: bool) -> Result<SnapshotInfo, VmError> {
        let d = self.domain(vm)?;
        self.require_running(&d, vm, false, "revert", "shut off (`provd vm shutdown` first)")?;
        self.refuse_if_backing(vm, "reverting it")?;
        let s = self.snapshot_of(&d, vm, snap)?;
        let info = self.snapshot_info(vm, &s)?;
        if let Some(why) = revert_refusal(snap, &info.newer, force) {
            return Err(VmError::RevertRefused {
                name: vm.into(),
                snapshot: snap.into(),
                why,
            });
        }
        match info.kind {
            SnapshotKind::Internal => s.revert(0).map_err(self.err("reverting", vm))?,
            SnapshotKind::External => self.revert_external(&d, vm, &s, &info.newer)?,
        }
        self.snapshot_info(vm, &self.snapshot_of(&d, vm, snap)?)
    }

    /// Delete one snapshot (its children are kept, re-parented by libvirt). An external
    /// one is merged into the file below its overlays first, the VM running or not.
    pub fn snapshot_delete(&self, vm: &str, snap: &str) -> Result<(), VmError> {
        let d = self.domain(vm)?;
        let s = self.snapshot_of(&d, vm, snap)?;
        match self.snapshot_info(vm, &s)?.kind {
            SnapshotKind::Internal => s.delete(0).map_err(self.err("deleting a snapshot of", vm)),
            SnapshotKind::External => self.delete_external(&d, vm, &s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revert_past_newer_snapshots_needs_force() {
        assert_eq!(revert_refusal("a", &[], false), None);
        let newer = vec!["b".to_string(), "c".to_string()];
        let why = revert_refusal("a", &newer, false).expect("refused");
        assert!(
            why.contains("2 newer snapshot(s) (b, c)") && why.contains("--force"),
            "{why}"
        );
        assert_eq!(revert_refusal("a", &newer, true), None);
    }

    #[test]
    fn one_kind_per_domain() {
        use SnapshotKind::*;
        assert_eq!(kind_for(false, &[]), Ok(Internal));
        assert_eq!(kind_for(true, &[]), Ok(External));
        assert_eq!(kind_for(false, &[Internal]), Ok(Internal));
        assert_eq!(
            kind_for(false, &[External]),
            Ok(External),
            "shut off, after external ones"
        );
        assert_eq!(kind_for(true, &[External]), Ok(External));
        assert!(kind_for(true, &[Internal]).unwrap_err().contains("internal snapshots"));
    }

    #[test]
    fn snapshot_names_are_plain() {
        for good in ["before-upgrade", "s1", "2026.12.06_a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-x", "a b", "a/b", "<x>", "a'b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn creation_time_and_state_are_read_from_libvirts_xml() {
        let xml = "<domainsnapshot>\n  <name>s1</name>\n  <state>shutoff</state>\n  <creationTime>1765000000</creationTime>\n</domainsnapshot>";
        assert_eq!(tag(xml, "creationTime"), Some("1765000000"));
        assert_eq!(tag(xml, "state"), Some("shutoff"));
        assert_eq!(tag(xml, "parent"), None);
    }
}
