//! `provd power status|on|off|cycle|pxe-once` and `provd hosts reinstall --power`: one
//! action on many hosts' BMCs through the daemon, with a concurrency limit, a progress bar,
//! a per-host result table (or `--json`), and exit status 1 when any host failed.
//!
//! Hosts are named, or selected from the daemon's configured hosts that have a BMC:
//! `--all`, `--site S`, `--tag T` (repeatable: every tag must match).

use super::ServerTarget;
use super::client::Api;
use crate::http::power_api::{BmcEntry, PowerResult, PoweredReinstall};
use clap::Subcommand;
use serde::Serialize;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which hosts, and how many BMCs at once.
#[derive(clap::Args, Clone)]
pub struct Selection {
    /// Hostnames or MACs.
    pub hosts: Vec<String>,
    /// Every configured host with a BMC (of the sites this daemon serves).
    #[arg(long)]
    pub all: bool,
    /// The hosts of this site that have a BMC.
    #[arg(long)]
    pub site: Option<String>,
    /// The hosts carrying this tag (repeat for several: all must match).
    #[arg(long)]
    pub tag: Vec<String>,
    /// At most this many hosts at once (the daemon also caps its BMC calls).
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Print JSON (one object per host) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum PowerCommand {
    /// What each BMC says: on, off.
    Status {
        #[command(flatten)]
        select: Selection,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Power on (nothing to do when already on).
    On {
        #[command(flatten)]
        select: Selection,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Power off, at once (not a graceful shutdown).
    Off {
        #[command(flatten)]
        select: Selection,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Power cycle a running host; power on a stopped one.
    Cycle {
        #[command(flatten)]
        select: Selection,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Boot from the network at the next start only (the BMC's one-time boot override).
    PxeOnce {
        #[command(flatten)]
        select: Selection,
        #[command(flatten)]
        target: ServerTarget,
    },
}

pub fn run(cmd: PowerCommand) -> anyhow::Result<ExitCode> {
    let (action, select, target) = match cmd {
        PowerCommand::Status { select, target } => ("status", select, target),
        PowerCommand::On { select, target } => ("on", select, target),
        PowerCommand::Off { select, target } => ("off", select, target),
        PowerCommand::Cycle { select, target } => ("cycle", select, target),
        PowerCommand::PxeOnce { select, target } => ("pxe-once", select, target),
    };
    let api = target.api()?;
    let hosts = select.resolve(&api)?;
    let rows = fan_out(
        &api,
        &hosts,
        select.parallel,
        &format!("power {action}"),
        |api, host| {
            api.post_long::<PowerResult>(&format!("/api/hosts/{host}/power/{action}"))
                .and_then(|f| api.require(f))
                .map(Row::Done)
        },
    );
    report(&rows, select.json)
}

/// `provd hosts reinstall ... --power`: reinstall intent, one-time PXE and a power cycle.
pub fn reinstall(select: &Selection, force: bool, power: bool, target: &ServerTarget) -> anyhow::Result<ExitCode> {
    let api = target.api()?;
    let hosts = select.resolve(&api)?;
    let query = match (force, power) {
        (true, true) => "?force=true&power=true",
        (true, false) => "?force=true",
        (false, true) => "?power=true",
        (false, false) => "",
    };
    let rows = fan_out(&api, &hosts, select.parallel, "reinstall", |api, host| {
        let url = format!("/api/hosts/{host}/reinstall{query}");
        if power {
            let answer: PoweredReinstall = api.require(api.post_long(&url)?)?;
            return Ok(Row::Done(answer.power));
        }
        let _: serde::de::IgnoredAny = api.require(api.post_long(&url)?)?;
        Ok(Row::Intent {
            host: host.to_string(),
            action: "reinstall",
            ok: true,
            detail: "installs at its next network boot (netboot on); may wipe an earlier install",
        })
    });
    report(&rows, select.json)
}

impl Selection {
    /// The named hosts plus those the selectors pick (in name order, each once).
    pub fn resolve(&self, api: &Api) -> anyhow::Result<Vec<String>> {
        let mut hosts = self.hosts.clone();
        if self.all || self.site.is_some() || !self.tag.is_empty() {
            let known: Vec<BmcEntry> = api.require(api.get("/api/bmc")?)?;
            for h in known {
                let site_ok = self.site.as_ref().is_none_or(|s| &h.site == s);
                let tags_ok = self.tag.iter().all(|t| h.tags.contains(t));
                if site_ok && tags_ok && h.driver.is_some() {
                    hosts.push(h.host);
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        hosts.retain(|h| seen.insert(h.clone()));
        if hosts.is_empty() {
            anyhow::bail!("no host selected: name hosts, or use --all, --site S or --tag T (hosts with a BMC)");
        }
        Ok(hosts)
    }
}

/// One host's line of the result: what its BMC did, what provd recorded without touching
/// a BMC (a reinstall without `--power`), or why the call failed. As JSON, the BMC's result
/// as the daemon gave it, or `{host, action, ok, detail}`, or `{host, ok: false, error}`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Row {
    Done(PowerResult),
    Intent {
        host: String,
        action: &'static str,
        ok: bool,
        detail: &'static str,
    },
    Failed {
        host: String,
        ok: bool,
        error: String,
    },
}

impl Row {
    fn ok(&self) -> bool {
        match self {
            Row::Done(r) => r.ok,
            Row::Intent { ok, .. } | Row::Failed { ok, .. } => *ok,
        }
    }
}

/// Run `one` for every host, `parallel` at a time, with a progress bar on stderr. A failed
/// call becomes a row with its error.
fn fan_out(
    api: &Api,
    hosts: &[String],
    parallel: usize,
    label: &str,
    one: impl Fn(&Api, &str) -> anyhow::Result<Row> + Sync,
) -> Vec<Row> {
    let bar = indicatif::ProgressBar::new(hosts.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} hosts, {elapsed} {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    let next = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    let rows: Mutex<Vec<Option<Row>>> = Mutex::new((0..hosts.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..parallel.clamp(1, hosts.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(host) = hosts.get(i) else { return };
                    let row = one(api, host).unwrap_or_else(|e| Row::Failed {
                        host: host.clone(),
                        ok: false,
                        error: format!("{e:#}"),
                    });
                    if !row.ok() {
                        let n = failed.fetch_add(1, Ordering::Relaxed) + 1;
                        bar.set_message(format!("({n} failed)"));
                    }
                    rows.lock().unwrap()[i] = Some(row);
                    bar.inc(1);
                }
            });
        }
    });
    bar.finish_and_clear();
    rows.into_inner().unwrap().into_iter().flatten().collect()
}

fn report(rows: &[Row], json: bool) -> anyhow::Result<ExitCode> {
    let failed = rows.iter().filter(|r| !r.ok()).count();
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else {
        println!(
            "{:<20} {:<16} {:<7} {:<8} {:>7}  DETAIL",
            "HOST", "ACTION", "RESULT", "POWER", "SECONDS"
        );
        for r in rows {
            let (host, action, state, seconds, detail) = match r {
                Row::Done(p) => {
                    let mut detail = p.error.clone().unwrap_or_else(|| p.outcome.detail.clone());
                    for w in &p.outcome.warnings {
                        detail.push_str(&format!(" [warning: {w}]"));
                    }
                    let seconds = format!("{:.1}", p.seconds);
                    (
                        p.host.as_str(),
                        p.action.as_str(),
                        p.outcome.state.as_str(),
                        seconds,
                        detail,
                    )
                }
                Row::Intent {
                    host, action, detail, ..
                } => (host.as_str(), *action, "-", "-".to_string(), detail.to_string()),
                Row::Failed { host, error, .. } => (host.as_str(), "-", "-", "-".to_string(), error.clone()),
            };
            println!(
                "{:<20} {:<16} {:<7} {:<8} {:>7}  {}",
                host,
                action,
                if r.ok() { "ok" } else { "FAILED" },
                state,
                seconds,
                detail.trim()
            );
        }
    }
    if failed > 0 {
        eprintln!("provd: {failed} of {} host(s) failed", rows.len());
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
