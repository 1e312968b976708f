//! Workflows that span more than one libvirt call: `deploy` (place, seed, clone, start) and
//! `migrate_live` (the URI the source dials vs the one provd reads). The CLI parses and
//! prints; these functions decide and act, and report progress through callbacks so any
//! front end (CLI, API, the lab) can show it.
//!
//! Must never: boot a VM whose NoCloud seed does not exist yet (the seed is issued before
//! the clone), or leave a half-made clone behind (`clone_domain` is all or nothing).

use super::clone::{CloneEvent, CloneRequest};
use super::placement::{self, Candidate, PlacementError};
use super::{DomainSummary, Hypervisor, VmError};
use crate::config::{DiskSpec, NicSpec, NicWant};
use std::collections::BTreeMap;

/// A NIC profile made concrete per candidate hypervisor (by the URI deploy is given).
pub type NicsByUri = BTreeMap<String, Vec<NicSpec>>;

/// A candidate hypervisor as NIC resolution sees it: its URI, its name (for messages) and
/// its network model when provd knows it.
pub struct NicHost<'a> {
    pub uri: &'a str,
    pub name: &'a str,
    pub network: Option<&'a crate::netmodel::NetModel>,
}

/// The NIC profile `wants` on each candidate, and the candidates that lack a network it
/// needs, with why (pure). Those are never placed on: a VM whose NIC names the tenant
/// network must not land on a host without one.
pub fn nics_per_hypervisor(wants: &[NicWant], hosts: &[NicHost]) -> (NicsByUri, Vec<(String, String)>) {
    let mut fit = NicsByUri::new();
    let mut lacking = Vec::new();
    for h in hosts {
        match crate::config::nics_on(wants, h.network, h.name) {
            Ok(nics) => {
                fit.insert(h.uri.to_string(), nics);
            }
            Err(why) => lacking.push((h.uri.to_string(), why)),
        }
    }
    (fit, lacking)
}
use crate::nocloud::Seed;

/// What `provd vm deploy` asks for.
pub struct DeployRequest<'a> {
    pub name: &'a str,
    pub template: &'a str,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// The NIC profile on each candidate (None: keep the template's NICs). A candidate
    /// without an entry lacks a network the profile needs (`nics_per_hypervisor`).
    pub nics: Option<&'a NicsByUri>,
    pub disks: Option<&'a [DiskSpec]>,
    pub linked: bool,
    pub start: bool,
    /// Start it whenever its hypervisor's libvirtd starts (a deployed VM comes back after
    /// the hypervisor reboots).
    pub autostart: bool,
    /// Candidate hypervisor URIs; the one with the most free memory that fits wins.
    pub hypervisors: &'a [String],
}

/// What a deploy reports as it goes.
#[derive(Debug)]
pub enum DeployStep<'a> {
    /// A candidate that could not be reached, and why; the others are still considered.
    PassedOver { uri: &'a str, reason: String },
    /// The chosen hypervisor.
    Placed {
        uri: &'a str,
        free_memory_mib: u64,
        need_mib: u64,
    },
    /// A disk of the clone (see `CloneEvent`).
    Disk(CloneEvent<'a>),
}

/// The result: where the VM is, its NICs' MACs, its seed, and whether it was started.
#[derive(Debug, serde::Serialize)]
pub struct Deployed {
    pub vm: DomainSummary,
    pub uri: String,
    /// The clone's own MACs (new ones: a clone never shares its template's).
    pub macs: Vec<crate::mac::MacAddr>,
    pub seed: Seed,
    pub started: bool,
    pub autostart: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the NoCloud seed could not be issued: {0}")]
    Seed(#[source] SeedIssueError),
}

/// Why the seed could not be stored: whatever the caller's way of reaching provd says.
pub type SeedIssueError = Box<dyn std::error::Error + Send + Sync>;

/// Place, seed, clone and (optionally) start a VM. `issue_seed` stores the VM's NoCloud
/// seed where the guest will fetch it (the running provd) and is called once, after
/// placement succeeded and before anything is created.
pub fn deploy(
    req: &DeployRequest,
    issue_seed: impl FnOnce() -> Result<Seed, SeedIssueError>,
    report: &mut dyn FnMut(DeployStep),
) -> Result<Deployed, DeployError> {
    // Look at every candidate; one that cannot be reached is reported and passed over.
    let mut hosts = Vec::new();
    let mut cands = Vec::new();
    for uri in req.hypervisors {
        let h = match Hypervisor::connect(uri) {
            Ok(h) => h,
            Err(e) => {
                report(DeployStep::PassedOver {
                    uri,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let info = h.host_info()?;
        // The template's newest version when it has versions (what the clone will be of).
        let template = h.resolve_template(req.template).ok().and_then(|t| h.info(&t).ok());
        cands.push(Candidate {
            uri: uri.clone(),
            free_memory_mib: info.free_memory_mib,
            has_template: template.is_some(),
            name_taken: h.info(req.name).is_ok(),
            domains: info.domains,
        });
        hosts.push((h, template));
    }
    // Without --memory the VM needs what its template has.
    let need = match req.memory_mib {
        Some(m) => m,
        None => hosts
            .iter()
            .find_map(|(_, t)| t.as_ref().map(|t| t.memory_mib))
            .unwrap_or(0),
    };
    let i = placement::choose(&cands, req.template, req.name, need)?;
    let (h, _) = &hosts[i];
    report(DeployStep::Placed {
        uri: &cands[i].uri,
        free_memory_mib: cands[i].free_memory_mib,
        need_mib: need,
    });
    deploy_on(h, req, issue_seed, report)
}

/// Seed, clone and (optionally) start `req.name` on `h`, already chosen (by `deploy`'s
/// placement, or a batch's plan).
pub fn deploy_on(
    h: &Hypervisor,
    req: &DeployRequest,
    issue_seed: impl FnOnce() -> Result<Seed, SeedIssueError>,
    report: &mut dyn FnMut(DeployStep),
) -> Result<Deployed, DeployError> {
    let nics = match req.nics {
        None => None,
        Some(by_uri) => Some(by_uri.get(h.uri()).ok_or_else(|| VmError::Libvirt {
            what: "deploying",
            name: req.name.into(),
            uri: h.uri().to_string(),
            message: "this hypervisor lacks a network the NIC profile needs".into(),
        })?),
    };
    // The identity first: a VM must never boot pointing at a seed that does not exist.
    let seed = issue_seed().map_err(DeployError::Seed)?;
    let serial = format!("ds=nocloud-net;s={}", seed.url);
    let cloned = h.clone_domain(
        &CloneRequest {
            template: req.template,
            name: req.name,
            linked: req.linked,
            smbios_serial: Some(&serial),
            nocloud_url: Some(&seed.url),
            vcpus: req.vcpus,
            memory_mib: req.memory_mib,
            nics: nics.map(Vec::as_slice),
            disk_profile: req.disks,
        },
        &mut |e| report(DeployStep::Disk(e)),
    )?;
    // Before starting: a VM that runs is one that comes back after a hypervisor reboot.
    h.set_autostart(req.name, req.autostart)?;
    let vm = if req.start {
        h.start(req.name)?;
        // As libvirt sees it now (running), not as the clone was made (shut off).
        h.info(req.name)?
    } else {
        cloned
    };
    let macs = super::xml::nic_macs(&h.xml(req.name)?);
    Ok(Deployed {
        vm,
        uri: h.uri().to_string(),
        macs,
        seed,
        started: req.start,
        autostart: req.autostart,
    })
}

/// The URI the *source* libvirtd dials for a peer-to-peer migration: provd's own query
/// (`?pkipath=` for its client certificate) means nothing to the source daemon, which uses
/// its own certificates.
pub fn uri_for_source(dest: &str) -> &str {
    dest.split('?').next().unwrap_or(dest)
}

/// Migrate `name` live from `source` to `dest` (peer-to-peer, tunnelled); returns the
/// domain as DEST now sees it.
/// `via`: the URI the source's libvirtd dials when it is not `dest` itself: the
/// destination's migration-network address, so the memory crosses the migration VLAN while
/// provd reads the destination where it always does.
pub fn migrate_live(source: &Hypervisor, name: &str, dest: &str, via: Option<&str>) -> Result<DomainSummary, VmError> {
    let dest_view = Hypervisor::connect(dest)?;
    source.migrate(name, via.unwrap_or(uri_for_source(dest)), &dest_view)?;
    dest_view.info(name)
}

/// The URI a source libvirtd dials to migrate to a hypervisor at `address` on the migration
/// network (its certificate names that address: `boot::certificates`).
pub fn migration_uri(address: std::net::Ipv4Addr) -> String {
    format!("qemu+tls://{address}/system")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_dials_dest_without_provds_query() {
        assert_eq!(
            uri_for_source("qemu+tls://hv02/system?pkipath=/tmp/x"),
            "qemu+tls://hv02/system"
        );
        assert_eq!(uri_for_source("qemu:///system"), "qemu:///system");
    }

    /// On libvirt's in-memory test driver: a deploy with no reachable candidate says so and
    /// never asks for a seed.
    #[test]
    fn no_candidate_means_no_seed() {
        let uris = vec!["test:///nonexistent-provd-driver".to_string()];
        let req = DeployRequest {
            name: "web1",
            template: "t",
            vcpus: None,
            memory_mib: None,
            nics: None,
            disks: None,
            linked: false,
            start: false,
            autostart: true,
            hypervisors: &uris,
        };
        let mut passed = 0;
        let r = deploy(&req, || panic!("no seed without a placement"), &mut |s| {
            if let DeployStep::PassedOver { .. } = s {
                passed += 1;
            }
        });
        assert!(
            matches!(r, Err(DeployError::Placement(PlacementError::NoCandidates))),
            "{r:?}"
        );
        assert_eq!(passed, 1);
    }
}
