//! `provd hypervisors list`: installed hosts as provd verified them over qemu+tls (the pool).

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
}

pub fn run(cmd: HypervisorsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
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
                    h["status"].as_str().unwrap_or("?"),
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
