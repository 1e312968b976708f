//! Snapshots of a stopped domain: `provd vm snapshot create|list|revert|delete`.
//!
//! A shut-off domain whose writable disks are all qcow2 gets an *internal* snapshot (inside
//! each qcow2, so the domain's disk files stay what they were and purge removes them with
//! it). A running domain is refused with a clear reason: an external disk-only snapshot
//! would change its disk chain, and the libvirt of these hosts (9.0) cannot revert one
//! (that arrived in 9.9); see the issue-38 note.
//!
//! Two refusals protect what cannot be undone: a template that linked clones back is
//! never snapshotted or reverted (its disk is their base), and a revert that would leave
//! newer snapshots on an abandoned branch needs `--force`. The revert rule is pure
//! (`revert_refusal`) and unit-tested; the libvirt calls are the thin part around it.

use super::{Hypervisor, VmError};
use serde::Serialize;
use virt::domain::Domain;
use virt::domain_snapshot::DomainSnapshot;

/// One snapshot as `vm snapshot list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub name: String,
    /// Unix time libvirt recorded at creation.
    pub created: i64,
    /// The domain's state when it was taken ("shutoff", "running").
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
    fn snapshot_of(&self, d: &Domain, vm: &str, snap: &str) -> Result<DomainSnapshot, VmError> {
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
        Ok(SnapshotInfo {
            created: tag(&xml, "creationTime").and_then(|t| t.parse().ok()).unwrap_or(0),
            state: tag(&xml, "state").unwrap_or("unknown").to_string(),
            parent: s.parent(0).ok().and_then(|p| p.name().ok()),
            current: s.is_current(0).unwrap_or(false),
            newer,
            name,
        })
    }

    /// An internal snapshot of a shut-off domain (every writable disk qcow2).
    pub fn snapshot_create(&self, vm: &str, snap: &str) -> Result<SnapshotInfo, VmError> {
        check_name(snap)?;
        let d = self.domain(vm)?;
        self.require_running(
            &d,
            vm,
            false,
            "a snapshot (internal, the kind these hosts' libvirt can revert)",
            "shut off (`provd vm shutdown` first)",
        )?;
        self.refuse_if_backing(vm, "a snapshot of it")?;
        if Domain::lookup_snapshot_by_name(&d, snap, 0).is_ok() {
            return Err(VmError::SnapshotExists {
                name: vm.into(),
                snapshot: snap.into(),
            });
        }
        let xml = format!("<domainsnapshot><name>{snap}</name><description>provd</description></domainsnapshot>");
        let s = d.create_snapshot_xml(&xml, 0).map_err(self.err("snapshotting", vm))?;
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
        s.revert(0).map_err(self.err("reverting", vm))?;
        self.snapshot_info(vm, &s)
    }

    /// Delete one snapshot (its children are kept, re-parented by libvirt).
    pub fn snapshot_delete(&self, vm: &str, snap: &str) -> Result<(), VmError> {
        let d = self.domain(vm)?;
        let s = self.snapshot_of(&d, vm, snap)?;
        s.delete(0).map_err(self.err("deleting a snapshot of", vm))
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
