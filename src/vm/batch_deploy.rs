//! Running a batch deploy (`vm deploy --count N`, `POST /api/vms/deploy`): survey the
//! candidate hypervisors (free memory, domains, whether they hold the template), plan every
//! name with `vm::batch::plan`, then deploy the placed ones in parallel (a bounded set of
//! workers, each with its own libvirt connection). One VM's failure never stops the
//! others; the report has every name's outcome. How a VM is deployed (where its seed
//! comes from) is the caller's `DeployFn`; how progress is shown is its `on_done`.

use super::Hypervisor;
use super::batch::{self, Placement, Slot};
use super::deploy::{DeployError, DeployStep, Deployed};
use serde::Serialize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deploy `name` on the hypervisor at `uri` (already chosen), reporting its steps.
pub type DeployFn<'a> = dyn Fn(&str, &str, &mut dyn FnMut(DeployStep)) -> Result<Deployed, DeployError> + Sync + 'a;

/// What a batch needs besides its names.
pub struct Batch<'a> {
    pub hypervisors: &'a [String],
    pub template: &'a str,
    /// The VM's memory (None: the template's).
    pub memory_mib: Option<u64>,
    pub placement: Placement,
    pub deploy: &'a DeployFn<'a>,
}

/// How one name of the batch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ended {
    Deployed,
    /// It was there already (a rerun): left as it is.
    Exists,
    NoRoom,
    Failed,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub name: String,
    pub result: Ended,
    pub hypervisor: Option<String>,
    pub error: Option<String>,
    pub deployed: Option<Deployed>,
}

/// A candidate the survey could not read, and why (its domains are unknown).
#[derive(Debug, Serialize)]
pub struct PassedOver {
    pub uri: String,
    pub reason: String,
}

/// The whole batch: `vm deploy --count --json` prints it, the API answers it.
#[derive(Debug, Serialize)]
pub struct Report {
    pub placement: Placement,
    pub passed_over: Vec<PassedOver>,
    pub vms: Vec<Outcome>,
}

impl Report {
    /// Every name is there (deployed now or before).
    pub fn all_there(&self) -> bool {
        self.vms
            .iter()
            .all(|o| matches!(o.result, Ended::Deployed | Ended::Exists))
    }
}

/// Each reachable candidate as the planner sees it, the unreachable ones, and the memory
/// one VM needs.
fn survey(b: &Batch) -> (Vec<batch::Host>, Vec<PassedOver>, u64) {
    let mut hosts = Vec::new();
    let mut passed = Vec::new();
    let mut template_memory = None;
    for uri in b.hypervisors {
        let read = Hypervisor::connect(uri).and_then(|h| {
            let info = h.host_info()?;
            let names: Vec<String> = h.list()?.into_iter().map(|d| d.name).collect();
            // Its newest version when it has versions (what the clones will be of).
            let template = h.resolve_template(b.template)?;
            let has_template = names.contains(&template);
            if has_template && template_memory.is_none() {
                template_memory = Some(h.info(&template)?.memory_mib);
            }
            Ok(batch::Host {
                uri: uri.clone(),
                free_memory_mib: info.free_memory_mib,
                domains: info.domains,
                has_template,
                names,
            })
        });
        match read {
            Ok(h) => hosts.push(h),
            Err(e) => passed.push(PassedOver {
                uri: uri.clone(),
                reason: e.to_string(),
            }),
        }
    }
    let need = b.memory_mib.or(template_memory).unwrap_or(0);
    (hosts, passed, need)
}

/// What the batch is about to do, before any VM is deployed.
pub struct Planned<'a> {
    pub passed_over: &'a [PassedOver],
    pub to_deploy: usize,
    pub exist: usize,
    pub no_room: usize,
    pub need_mib: u64,
}

/// Plan and deploy `names`, at most `parallel` at once. `on_plan` hears the plan once,
/// `on_done` each deployed or failed VM as it ends (from the worker threads).
pub fn run(
    b: &Batch,
    names: &[String],
    parallel: usize,
    on_plan: &mut dyn FnMut(&Planned),
    on_done: &(dyn Fn(&Outcome) + Sync),
) -> Report {
    let (hosts, passed_over, need) = survey(b);
    let plan = batch::plan(names, &hosts, need, b.placement);
    let mut outcomes: Vec<Option<Outcome>> = plan
        .iter()
        .map(|(name, slot)| match slot {
            Slot::Exists { host } => Some(Outcome {
                name: name.clone(),
                result: Ended::Exists,
                hypervisor: Some(hosts[*host].uri.clone()),
                error: None,
                deployed: None,
            }),
            Slot::NoRoom { reason } => Some(Outcome {
                name: name.clone(),
                result: Ended::NoRoom,
                hypervisor: None,
                error: Some(reason.clone()),
                deployed: None,
            }),
            Slot::Place { .. } => None,
        })
        .collect();
    let jobs: Vec<(usize, &str, &str)> = plan
        .iter()
        .enumerate()
        .filter_map(|(i, (name, slot))| match slot {
            Slot::Place { host } => Some((i, name.as_str(), hosts[*host].uri.as_str())),
            _ => None,
        })
        .collect();
    on_plan(&Planned {
        passed_over: &passed_over,
        to_deploy: jobs.len(),
        exist: plan.iter().filter(|(_, s)| matches!(s, Slot::Exists { .. })).count(),
        no_room: plan.iter().filter(|(_, s)| matches!(s, Slot::NoRoom { .. })).count(),
        need_mib: need,
    });
    for (i, o) in deploy_all(b, &jobs, parallel, on_done) {
        outcomes[i] = Some(o);
    }
    Report {
        placement: b.placement,
        passed_over,
        vms: outcomes
            .into_iter()
            .map(|o| o.expect("every name has an outcome"))
            .collect(),
    }
}

/// Deploy the placed names with at most `parallel` at once; each outcome with its index.
fn deploy_all(
    b: &Batch,
    jobs: &[(usize, &str, &str)],
    parallel: usize,
    on_done: &(dyn Fn(&Outcome) + Sync),
) -> Vec<(usize, Outcome)> {
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel.min(jobs.len()) {
            s.spawn(|| {
                while let Some(&(i, name, uri)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = match (b.deploy)(name, uri, &mut |_| {}) {
                        Ok(d) => Outcome {
                            name: name.into(),
                            result: Ended::Deployed,
                            hypervisor: Some(uri.into()),
                            error: None,
                            deployed: Some(d),
                        },
                        Err(e) => Outcome {
                            name: name.into(),
                            result: Ended::Failed,
                            hypervisor: Some(uri.into()),
                            error: Some(chain(&e)),
                            deployed: None,
                        },
                    };
                    on_done(&outcome);
                    results.lock().expect("no worker panics holding it").push((i, outcome));
                }
            });
        }
    });
    results.into_inner().expect("the workers have ended")
}

/// An error and its causes, as one line ("a: b: c"), for the report.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // thiserror's `transparent` and `{0}` repeat the cause in the message.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}
