//! `POST /api/vms/deploy`: a batch deploy (`provd vm deploy --count N --name-pattern P`)
//! asked of the running provd, on a site it serves: the candidates are that site's ready,
//! undrained hypervisors in the pool (reached with provd's own client certificate), the
//! profiles and placement come from the loaded config, and each VM's NoCloud seed is stored
//! here directly. The plan and the parallel deploy are `vm::batch_deploy`'s, the same the
//! CLI runs; the answer is its report (every name's outcome) with `complete`. Each VM
//! deployed or failed is journaled under its hypervisor.
//!
//! The request names a template, profiles and SSH keys, never a hypervisor address or a
//! path: a caller cannot make provd dial or write where it chooses.

use super::AppState;
use super::failure::refuse;
use crate::mac::MacAddr;
use crate::vm::batch::Placement;
use crate::vm::batch_deploy::{self, Batch, Ended, Report};
use crate::vm::deploy::{DeployRequest, SeedIssueError};
use crate::vm::{self, Hypervisor};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The request: `vm deploy`'s options, by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    pub from: String,
    pub site: String,
    pub count: u32,
    pub name_pattern: String,
    #[serde(default = "one")]
    pub first: u32,
    pub placement: Option<Placement>,
    #[serde(default = "four")]
    pub parallel: u32,
    pub cpus: Option<u32>,
    pub memory_mib: Option<u64>,
    pub nic_profile: Option<String>,
    pub disk_profile: Option<String>,
    #[serde(default)]
    pub linked: bool,
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub no_start: bool,
    #[serde(default)]
    pub no_autostart: bool,
}

fn one() -> u32 {
    1
}
fn four() -> u32 {
    4
}

#[derive(Debug, Serialize)]
struct Answer {
    /// Every name is there (deployed now or before).
    complete: bool,
    #[serde(flatten)]
    report: Report,
}

/// The site's ready hypervisors, less the drained ones: the MAC each is journaled by, and
/// its host name, by URI.
struct SiteCandidates {
    macs: HashMap<String, MacAddr>,
    names: HashMap<String, String>,
}

async fn site_candidates(s: &AppState, site: &str) -> Result<SiteCandidates, String> {
    let mut c = SiteCandidates {
        macs: HashMap::new(),
        names: HashMap::new(),
    };
    for check in s.pool.checks().into_iter().filter(|c| c.site == site) {
        let Ok(reach) = s.pool.reach(&check.host) else { continue };
        if !s.inventory.get(reach.mac).await.is_some_and(|r| r.drained) {
            c.names.insert(reach.uri.clone(), check.host.clone());
            c.macs.insert(reach.uri, reach.mac);
        }
    }
    if c.macs.is_empty() {
        return Err(format!("site {site:?} has no ready, undrained hypervisor"));
    }
    Ok(c)
}

/// The NIC profile `wants` on each of `uris` by its host's network; those that lack a
/// network it needs leave `uris` and are returned with why. None fits: why (a 409).
fn nics_for(
    wants: &[crate::config::NicWant],
    site: &str,
    config: &crate::config::Config,
    names: &HashMap<String, String>,
    uris: &mut Vec<String>,
) -> Result<(vm::deploy::NicsByUri, Vec<(String, String)>), String> {
    let candidates: Vec<vm::deploy::NicHost> = uris
        .iter()
        .map(|u| vm::deploy::NicHost {
            uri: u,
            name: &names[u],
            network: config.host_network(site, &names[u]),
        })
        .collect();
    let (fit, lacking) = vm::deploy::nics_per_hypervisor(wants, &candidates);
    if fit.is_empty() {
        let why: Vec<String> = lacking.into_iter().map(|(_, w)| w).collect();
        return Err(format!(
            "no hypervisor of site {site:?} can take this NIC profile: {}",
            why.join("; ")
        ));
    }
    uris.retain(|u| fit.contains_key(u));
    Ok((fit, lacking))
}

/// Each VM deployed or failed, as a `deploy` under its hypervisor's MAC.
fn journal_outcomes(s: &AppState, report: &Report, macs: &HashMap<String, MacAddr>) {
    for o in report
        .vms
        .iter()
        .filter(|o| matches!(o.result, Ended::Deployed | Ended::Failed))
    {
        let mac = o.hypervisor.as_ref().and_then(|u| macs.get(u)).copied();
        s.journal.record(
            mac,
            None,
            crate::journal::Step::VmAction {
                domain: o.name.clone(),
                action: "deploy".into(),
                error: o.error.clone(),
            },
        );
    }
}

pub async fn deploy(State(s): State<AppState>, Json(b): Json<DeployBody>) -> Response {
    let bad = |e: String| refuse(StatusCode::BAD_REQUEST, e);
    if !(1..=64).contains(&b.parallel) {
        return bad(format!("parallel {} is out of range (1 to 64)", b.parallel));
    }
    let names = match vm::batch::names(&b.name_pattern, b.count, b.first) {
        Ok(n) => n,
        Err(e) => return bad(e.to_string()),
    };
    // What a seed would refuse, refused before anything is placed: a name that is not a
    // host name (it becomes the guest's), a key that is not one line.
    if let Some(n) = names.iter().find(|n| !crate::config::valid_hostname(n)) {
        return bad(crate::nocloud::SeedError::BadHostname(n.clone()).to_string());
    }
    if let Some(i) = b.ssh_keys.iter().position(|k| k.contains('\n') || k.contains('\r')) {
        return bad(crate::nocloud::SeedError::BadKey(i).to_string());
    }
    let boot = s.boot();
    if !boot.served_sites().contains(&b.site) {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("this provd does not serve a site named {:?}", b.site),
        );
    }
    let Some(site_cfg) = boot.config().sites.get(&b.site) else {
        return refuse(StatusCode::NOT_FOUND, format!("no site {:?}", b.site));
    };
    let base_url = site_cfg.boot_base_url();
    let profiles = &boot.config().vm;
    let wants = match b
        .nic_profile
        .as_deref()
        .map(|p| crate::config::VmProfiles::named(&profiles.nics, p, "NIC"))
        .transpose()
    {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    let disks = match b
        .disk_profile
        .as_deref()
        .map(|p| crate::config::VmProfiles::named(&profiles.disks, p, "disk"))
        .transpose()
    {
        Ok(d) => d,
        Err(e) => return bad(e),
    };
    let placement = b.placement.unwrap_or(profiles.placement);
    let candidates = match site_candidates(&s, &b.site).await {
        Ok(c) => c,
        Err(why) => return refuse(StatusCode::CONFLICT, why),
    };
    let hosts = candidates.macs;
    let mut uris: Vec<String> = hosts.keys().cloned().collect();
    uris.sort();
    let (nics, lacking) = match wants
        .as_deref()
        .map(|w| nics_for(w, &b.site, boot.config(), &candidates.names, &mut uris))
        .transpose()
    {
        Ok(Some((fit, lacking))) => (Some(fit), lacking),
        Ok(None) => (None, Vec::new()),
        Err(why) => return refuse(StatusCode::CONFLICT, why),
    };
    let (registry, site) = (s.nocloud.clone(), b.site.clone());
    let done = tokio::task::spawn_blocking(move || {
        let deploy_one = |name: &str, uri: &str, report: &mut dyn FnMut(vm::deploy::DeployStep)| {
            let h = Hypervisor::connect(uri)?;
            let req = DeployRequest {
                name,
                template: &b.from,
                vcpus: b.cpus,
                memory_mib: b.memory_mib,
                nics: nics.as_ref(),
                disks: disks.as_deref(),
                linked: b.linked,
                start: !b.no_start,
                autostart: !b.no_autostart,
                // Placed already: deploy_on uses `h`, not a candidate list.
                hypervisors: &[],
            };
            let seed = || {
                let request = crate::nocloud::SeedRequest {
                    hostname: name.to_string(),
                    ssh_keys: b.ssh_keys.clone(),
                    site: Some(site.clone()),
                };
                registry
                    .create_blocking(&request, &site, &base_url)
                    .map_err(|e| Box::new(e) as SeedIssueError)
            };
            vm::deploy::deploy_on(&h, &req, seed, report)
        };
        let batch = Batch {
            hypervisors: &uris,
            template: &b.from,
            memory_mib: b.memory_mib,
            placement,
            deploy: &deploy_one,
        };
        batch_deploy::run(&batch, &names, b.parallel as usize, &mut |_| {}, &|_| {})
    })
    .await;
    let mut report = match done {
        Ok(r) => r,
        Err(e) => return super::failure::internal(e),
    };
    report.passed_over.extend(
        lacking
            .into_iter()
            .map(|(uri, reason)| batch_deploy::PassedOver { uri, reason }),
    );
    journal_outcomes(&s, &report, &hosts);
    Json(Answer {
        complete: report.all_there(),
        report,
    })
    .into_response()
}
