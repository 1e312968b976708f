//! `provd hypervisors list|drain|undrain`: installed hosts as provd verified them over
//! qemu+tls (the pool), and moving VMs off one.

use super::ServerTarget;
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
            let answer: serde_json::Value = api.require(api.post_long(&format!("/api/hypervisors/{host}/drain"))?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            }
            let moved = answer["moved"].as_array().cloned().unwrap_or_default();
            let failed = moved.iter().filter(|m| m["to"].is_null()).count();
            if !json {
                if moved.is_empty() {
                    println!("{host}: drained; no VM was running");
                }
                for m in &moved {
                    match m["to"].as_str() {
                        Some(to) => println!("{}: moved to {to}", m["domain"].as_str().unwrap_or("?")),
                        None => println!(
                            "{}: NOT moved: {}",
                            m["domain"].as_str().unwrap_or("?"),
                            m["error"].as_str().unwrap_or("?")
                        ),
                    }
                }
            }
            if failed > 0 {
                anyhow::bail!("{host}: {failed} VM(s) could not be moved; it stays drained");
            }
        }
        HypervisorsCommand::Undrain { host, target } => {
            let api = target.api()?;
            let _: serde_json::Value = api.require(api.post(&format!("/api/hypervisors/{host}/undrain"))?)?;
            println!("{host}: back in the pool");
        }
        HypervisorsCommand::List { site, target, json } => {
            let api = target.api()?;
            let all: Vec<serde_json::Value> = api.require(api.get("/api/hypervisors")?)?;
            let list: Vec<&serde_json::Value> = all
                .iter()
                .filter(|h| site.as_deref().is_none_or(|s| h["site"] == s))
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
                let cap = &h["capacity"];
                let num = |v: &serde_json::Value| v.as_u64().map_or("-".to_string(), |n| n.to_string());
                println!(
                    "{:<20} {:<8} {:<10} {:<12} {:>5} {:>10} {:>10} {:>8} {} s ago{}",
                    h["host"].as_str().unwrap_or("?"),
                    h["site"].as_str().unwrap_or("?"),
                    if h["drained"] == true {
                        "drained"
                    } else {
                        h["status"].as_str().unwrap_or("?")
                    },
                    h["state"].as_str().unwrap_or("?"),
                    num(&cap["cpus"]),
                    num(&cap["memory_mib"]),
                    num(&cap["free_memory_mib"]),
                    num(&cap["running_domains"]),
                    now.saturating_sub(h["checked_at"].as_u64().unwrap_or(0)),
                    h["reason"].as_str().map(|r| format!(": {r}")).unwrap_or_default()
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
    let api = server.api()?;
    let pool: Vec<serde_json::Value> = api.require(api.get("/api/hypervisors")?)?;
    Ok(pool
        .iter()
        .filter(|h| h["site"] == site && h["status"] == "ready")
        .filter(|h| include_drained || h["drained"] != true)
        .filter_map(|h| h["uri"].as_str())
        .map(|u| match pkipath {
            Some(p) => format!("{u}?pkipath={}", p.display()),
            None => u.to_string(),
        })
        .collect())
}
