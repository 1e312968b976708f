//! `provd hosts list|show|reinstall|mark-installed|netboot`: the inventory, through the
//! daemon's API.

use super::ServerTarget;
use crate::clock::unix_now;
use crate::inventory::HostRecord;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum HostsCommand {
    /// Every host: configured ones and discovered machines.
    List {
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// One host with its history.
    Show {
        /// Hostname or MAC.
        host: String,
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Install the host again at its next network boot (state -> assigned, netboot on).
    /// This install may wipe an earlier provd install on its disks (the kickstart's %pre
    /// refuses that otherwise). Refused for an installed host unless --force. With --power,
    /// provd also makes it boot now: one-time PXE and a power cycle through its BMC.
    Reinstall {
        #[command(flatten)]
        select: super::power::Selection,
        /// Reinstall even though the inventory says the host is installed (in service).
        #[arg(long)]
        force: bool,
        /// Then set a one-time PXE boot and power-cycle the host through its BMC.
        #[arg(long)]
        power: bool,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// The host is installed and in service: boot it from its disk (netboot off). For hosts
    /// installed before provd knew them, or after a server lost its state.
    MarkInstalled {
        host: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Allow (on) or stop (off) network installs for the host.
    Netboot {
        host: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
        #[command(flatten)]
        target: ServerTarget,
    },
}

pub fn run(cmd: HostsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        HostsCommand::List { target, json } => {
            let api = target.api()?;
            let hosts: Vec<HostRecord> = api.require(api.get("/api/hosts")?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
            } else {
                println!(
                    "{:<20} {:<18} {:<11} {:<8} {:<10} {:<12} UPDATED",
                    "HOST", "MAC", "STATUS", "NETBOOT", "SITE", "PROFILE"
                );
                for h in &hosts {
                    println!(
                        "{:<20} {:<18} {:<11} {:<8} {:<10} {:<12} {}",
                        h.hostname.as_deref().unwrap_or("-"),
                        h.mac,
                        status(h),
                        if h.netboot { "on" } else { "off" },
                        h.site.as_deref().unwrap_or("-"),
                        h.profile.as_deref().unwrap_or("-"),
                        ago(h.updated)
                    );
                }
            }
        }
        HostsCommand::Show { host, target, json } => {
            let api = target.api()?;
            let h: HostRecord = api.require(api.get(&format!("/api/hosts/{host}"))?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                println!("host      {}", h.hostname.as_deref().unwrap_or("-"));
                println!("mac       {}", h.mac);
                println!("status    {}", status(&h));
                println!("netboot   {}", if h.netboot { "on" } else { "off" });
                println!("site      {}", h.site.as_deref().unwrap_or("-"));
                println!("profile   {}", h.profile.as_deref().unwrap_or("-"));
                println!(
                    "arch      {}",
                    h.arch.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
                );
                println!("uuid      {}", h.uuid.as_deref().unwrap_or("-"));
                if let Some(s) = &h.install {
                    println!(
                        "install   token issued {}, kickstart fetched {} time(s){}",
                        ago(s.issued),
                        s.kickstart_fetches,
                        if s.closed { ", closed" } else { "" }
                    );
                }
                println!("history");
                for e in &h.history {
                    println!(
                        "  {:<12} {:<11} {}",
                        ago(e.at),
                        format!("{:?}", e.status).to_lowercase(),
                        e.what
                    );
                }
            }
        }
        HostsCommand::Reinstall {
            select,
            force,
            power,
            target,
        } => {
            if power || select.hosts.len() != 1 || select.json {
                return super::power::reinstall(&select, force, power, &target);
            }
            let host = select.hosts[0].clone();
            let api = target.api()?;
            let path = if force {
                format!("/api/hosts/{host}/reinstall?force=true")
            } else {
                format!("/api/hosts/{host}/reinstall")
            };
            let h: HostRecord = api.require(api.post(&path)?)?;
            println!(
                "{}: {} (netboot on): it installs at its next network boot, and may wipe an earlier install",
                h.hostname.as_deref().unwrap_or(&host),
                status(&h)
            );
        }
        HostsCommand::MarkInstalled { host, target } => {
            let api = target.api()?;
            let h: HostRecord = api.require(api.post(&format!("/api/hosts/{host}/mark-installed"))?)?;
            println!(
                "{}: {} (netboot off): it boots from its disk",
                h.hostname.as_deref().unwrap_or(&host),
                status(&h)
            );
        }
        HostsCommand::Netboot { host, state, target } => {
            let api = target.api()?;
            let h: HostRecord = api.require(api.post(&format!("/api/hosts/{host}/netboot/{state}"))?)?;
            println!(
                "{}: netboot {}",
                h.hostname.as_deref().unwrap_or(&host),
                if h.netboot { "on" } else { "off" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(h: &HostRecord) -> String {
    serde_json::to_value(h.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn ago(t: u64) -> String {
    let now = unix_now();
    match now.saturating_sub(t) {
        0..=59 => format!("{}s ago", now.saturating_sub(t)),
        s @ 60..=3599 => format!("{}m ago", s / 60),
        s @ 3600..=86399 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86400),
    }
}
