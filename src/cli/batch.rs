//! `provd vm deploy --count N --name-pattern P`: survey the candidate hypervisors (their
//! free memory, their domains, whether they hold the template), plan every name with
//! `vm::batch::plan`, then deploy the placed ones in parallel (a bounded set of workers,
//! each with its own libvirt connection) with one progress bar for the batch and a line
//! per VM as it ends. One VM's failure never stops the others; the result is a table (or
//! `--json`) with every name's outcome, and the exit status says whether all landed.

use crate::vm::Hypervisor;
use crate::vm::batch::{self, Placement, Slot};
use crate::vm::deploy::{DeployStep, Deployed};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Deploy `name` on the hypervisor at `uri` (already chosen), reporting its steps.
pub(super) type DeployFn<'a> = dyn Fn(&str, &str, &mut dyn FnMut(DeployStep)) -> anyhow::Result<Deployed> + Sync + 'a;

/// What a batch needs besides its names.
pub(super) struct Batch<'a> {
    pub hypervisors: &'a [String],
    pub template: &'a str,
    /// The VM's memory (None: the template's).
    pub memory_mib: Option<u64>,
    pub placement: Placement,
    pub deploy: &'a DeployFn<'a>,
}

/// How one name of the batch ended.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
enum Ended {
    Deployed,
    /// It was there already (a rerun): left as it is.
    Exists,
    NoRoom,
    Failed,
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    name: String,
    result: Ended,
    hypervisor: Option<String>,
    error: Option<String>,
    deployed: Option<Deployed>,
}

/// A candidate the survey could not read, and why (its domains are unknown).
#[derive(Debug, serde::Serialize)]
struct PassedOver {
    uri: String,
    reason: String,
}

#[derive(serde::Serialize)]
struct Report<'a> {
    placement: Placement,
    passed_over: &'a [PassedOver],
    vms: &'a [Outcome],
}

/// Each reachable candidate as the planner sees it, the unreachable ones, and the memory
/// one VM needs.
fn survey(b: &Batch) -> anyhow::Result<(Vec<batch::Host>, Vec<PassedOver>, u64)> {
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
    Ok((hosts, passed, need))
}

pub(super) fn run(b: &Batch, names: &[String], parallel: u32, json: bool) -> anyhow::Result<ExitCode> {
    let (hosts, passed_over, need) = survey(b)?;
    for p in &passed_over {
        // A name may exist there unseen: say so, a rerun after it is back finds it.
        eprintln!(
            "warning: passing over {}: {} (a VM of this batch defined there is not seen)",
            p.uri, p.reason
        );
    }
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
    eprintln!(
        "{} VM(s): {} to deploy ({:?}, {need} MiB each), {} already there, {} with no room",
        names.len(),
        jobs.len(),
        b.placement,
        plan.iter().filter(|(_, s)| matches!(s, Slot::Exists { .. })).count(),
        plan.iter().filter(|(_, s)| matches!(s, Slot::NoRoom { .. })).count(),
    );
    let done = deploy_all(b, &jobs, parallel as usize, json);
    for (i, o) in done {
        outcomes[i] = Some(o);
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.expect("every name has an outcome"))
        .collect();
    print(&outcomes, &passed_over, b.placement, json)?;
    let all_there = outcomes
        .iter()
        .all(|o| matches!(o.result, Ended::Deployed | Ended::Exists));
    Ok(if all_there {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Deploy the placed names with at most `parallel` at once; each outcome with its index.
fn deploy_all(b: &Batch, jobs: &[(usize, &str, &str)], parallel: usize, json: bool) -> Vec<(usize, Outcome)> {
    let bar = indicatif::ProgressBar::new(jobs.len() as u64);
    if json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} deployed, {elapsed} {msg}")
            .expect("a valid template"),
    );
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..parallel.min(jobs.len()) {
            s.spawn(|| {
                while let Some(&(i, name, uri)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let r = (b.deploy)(name, uri, &mut |_| {});
                    let shown = crate::vm::deploy::uri_for_source(uri);
                    let outcome = match r {
                        Ok(d) => {
                            say(format!(
                                "{name}: deployed on {shown} ({})",
                                if d.started { "started" } else { "defined" }
                            ));
                            Outcome {
                                name: name.into(),
                                result: Ended::Deployed,
                                hypervisor: Some(uri.into()),
                                error: None,
                                deployed: Some(d),
                            }
                        }
                        Err(e) => {
                            say(format!("{name}: FAILED on {shown}: {e:#}"));
                            Outcome {
                                name: name.into(),
                                result: Ended::Failed,
                                hypervisor: Some(uri.into()),
                                error: Some(format!("{e:#}")),
                                deployed: None,
                            }
                        }
                    };
                    bar.inc(1);
                    results.lock().expect("no worker panics holding it").push((i, outcome));
                }
            });
        }
    });
    bar.finish_and_clear();
    results.into_inner().expect("the workers have ended")
}

fn print(outcomes: &[Outcome], passed_over: &[PassedOver], placement: Placement, json: bool) -> anyhow::Result<()> {
    if json {
        let report = Report {
            placement,
            passed_over,
            vms: outcomes,
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("{:<24} {:<9} {:<36} DETAIL", "NAME", "RESULT", "HYPERVISOR");
    for o in outcomes {
        let result = serde_json::to_value(&o.result)?;
        let host = o
            .hypervisor
            .as_deref()
            .map(crate::vm::deploy::uri_for_source)
            .unwrap_or("-");
        let detail = match (&o.deployed, &o.error) {
            (Some(d), _) => format!("{}, seed {}", d.vm.state, d.seed.url),
            (None, Some(e)) => e.clone(),
            (None, None) => String::new(),
        };
        println!(
            "{:<24} {:<9} {:<36} {detail}",
            o.name,
            result.as_str().unwrap_or("?"),
            host
        );
    }
    Ok(())
}
