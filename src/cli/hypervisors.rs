//! `provd hypervisors list|drain|undrain`: installed hosts as provd verified them over
//! qemu+tls (the pool), and moving VMs off one.

use super::ServerTarget;
use crate::pool::{DrainReport, HypervisorView};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum HypervisorsCommand {
    /// Every installed host provd has checked: status (ready or installed), pool state
    /// (ready, unreachable, tls, no-libvirt) and why, capacity, last check.
    List {
        /// Only this site's hypervisors.
        #[arg(long)]
        site: Option<String>,
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Take a hypervisor out of service: no new placements, and every running VM is
    /// live-migrated to the site's other ready, undrained hypervisors (most free memory that
    /// fits, then fewest VMs). Waits until every VM has moved (or could not).
    Drain {
        host: String,
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Put a drained hypervisor back into the pool.
    Undrain {
        host: String,
        #[command(flatten)]
        target: ServerTarget,
    },
}

pub fn run(cmd: HypervisorsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HypervisorsCommand::Drain { host, target, json } => {
            let api = target.api()?;
            let report: DrainReport = api.require(api.post_long(&format!("/api/hypervisors/{host}/drain"))?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                if report.moved.is_empty() {
                    println!("{host}: drained; no VM was running");
                }
                for m in &report.moved {
                    match &m.to {
                        Some(to) => println!("{}: moved to {to}", m.domain),
                        None => println!("{}: NOT moved: {}", m.domain, m.error.as_deref().unwrap_or("?")),
                    }
                }
            }
            let failed = report.failed();
            if failed > 0 {
                anyhow::bail!("{host}: {failed} VM(s) could not be moved; it stays drained");
            }
        }
        HypervisorsCommand::Undrain { host, target } => {
            let api = target.api()?;
            let _: serde::de::IgnoredAny = api.require(api.post(&format!("/api/hypervisors/{host}/undrain"))?)?;
            println!("{host}: back in the pool");
        }
        HypervisorsCommand::List { site, target, json } => {
            let api = target.api()?;
            let all: Vec<HypervisorView> = api.require(api.get("/api/hypervisors")?)?;
            let list: Vec<&HypervisorView> = all
                .iter()
                .filter(|h| site.as_deref().is_none_or(|s| h.check.site == s))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                println!("no installed host has been checked yet");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<20} {:<8} {:<10} {:<12} {:>5} {:>10} {:>10} {:>8} LAST CHECK / WHY",
                "HOST", "SITE", "STATUS", "POOL", "CPUS", "MEM MiB", "FREE MiB", "RUNNING"
            );
            let now = crate::clock::unix_now();
            for h in list {
                let c = &h.check;
                let cap = |f: fn(&crate::pool::Capacity) -> u64| {
                    c.capacity.as_ref().map_or("-".to_string(), |cap| f(cap).to_string())
                };
                let status = match (h.drained, h.status) {
                    (true, _) => "drained",
                    (false, Some(s)) => s.as_str(),
                    (false, None) => "?",
                };
                println!(
                    "{:<20} {:<8} {:<10} {:<12} {:>5} {:>10} {:>10} {:>8} {} s ago{}",
                    c.host,
                    c.site,
                    status,
                    c.state.as_str(),
                    cap(|c| u64::from(c.cpus)),
                    cap(|c| c.memory_mib),
                    cap(|c| c.free_memory_mib),
                    cap(|c| c.running_domains as u64),
                    now.saturating_sub(c.checked_at),
                    c.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The ready hypervisors of `site` in the running provd's pool, as URIs (with
/// `include_drained`, drained ones too).
pub(super) fn pool_uris(
    server: &ServerTarget,
    site: &str,
    pkipath: Option<&std::path::Path>,
    include_drained: bool,
) -> anyhow::Result<Vec<String>> {
    Ok(pool_hosts(server, site, pkipath, include_drained)?
        .into_iter()
        .map(|(_, uri)| uri)
        .collect())
}

/// The same, each with its host name (host, URI).
pub(super) fn pool_hosts(
    server: &ServerTarget,
    site: &str,
    pkipath: Option<&std::path::Path>,
    include_drained: bool,
) -> anyhow::Result<Vec<(String, String)>> {
    let api = server.api()?;
    let pool: Vec<HypervisorView> = api.require(api.get("/api/hypervisors")?)?;
    Ok(pool
        .iter()
        .filter(|h| h.check.site == site && h.status == Some(crate::inventory::Status::Ready))
        .filter(|h| include_drained || !h.drained)
        .map(|h| {
            let u = h.check.uri.as_str();
            let uri = match pkipath {
                Some(p) => format!("{u}?pkipath={}", p.display()),
                None => u.to_string(),
            };
            (h.check.host.clone(), uri)
        })
        .collect())
}
