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
        /// Only machines nobody configured, with the hardware they reported (discovery).
        #[arg(long)]
        discovered: bool,
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Make a discovered machine a configured host: an entry in `hosts-<site>.toml` of the
    /// daemon's config directory (reviewable, in git if you like), applied by a reload.
    Adopt {
        /// The machine's MAC (see `provd hosts list --discovered`).
        mac: String,
        #[arg(long)]
        hostname: String,
        /// The profile to install (leave out to only register it).
        #[arg(long)]
        profile: Option<String>,
        /// A reserved address.
        #[arg(long)]
        ip: Option<std::net::Ipv4Addr>,
        /// Its site (default: where it was discovered).
        #[arg(long)]
        site: Option<String>,
        /// Its BMC as DRIVER,ADDRESS,CREDENTIALS (e.g. ipmi,10.0.9.21,rack7).
        #[arg(long)]
        bmc: Option<String>,
        /// Then install it now: one-time PXE and a power cycle through its BMC.
        #[arg(long)]
        power: bool,
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
        HostsCommand::List {
            discovered,
            target,
            json,
        } => list(&target, discovered, json)?,
        HostsCommand::Show { host, target, json } => show(&target, &host, json)?,
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
        HostsCommand::Adopt {
            mac,
            hostname,
            profile,
            ip,
            site,
            bmc,
            power,
            target,
            json,
        } => {
            let bmc = bmc.map(|b| parse_bmc(&b)).transpose()?;
            let api = target.api()?;
            let body = crate::reload::AdoptRequest {
                hostname: hostname.clone(),
                profile,
                ip,
                site,
                bmc,
            };
            let answer: crate::reload::AdoptAnswer =
                api.require(api.post_body(&format!("/api/hosts/{mac}/adopt"), &body)?)?;
            if json && !power {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else if !json {
                println!(
                    "{mac} is now {hostname} ({}), written to {}",
                    answer.host.as_ref().map_or("?", |h| h.status.as_str()),
                    answer.file.display()
                );
            }
            if power {
                let select = super::power::Selection {
                    hosts: vec![hostname],
                    all: false,
                    site: None,
                    tag: Vec::new(),
                    parallel: 1,
                    json,
                };
                return super::power::reinstall(&select, false, true, &target);
            }
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

/// `provd hosts list [--discovered]`.
fn list(target: &ServerTarget, discovered: bool, json: bool) -> anyhow::Result<()> {
    let api = target.api()?;
    let mut hosts: Vec<HostRecord> = api.require(api.get("/api/hosts")?)?;
    if discovered {
        hosts.retain(|h| h.status == crate::inventory::Status::Discovered);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&hosts)?);
    } else if discovered {
        println!(
            "{:<18} {:<8} {:>5} {:>8} {:<28} {:<22} SEEN",
            "MAC", "SITE", "CPUS", "MEM MiB", "DISKS", "SERIAL"
        );
        for h in &hosts {
            let f = h.facts.clone().unwrap_or_default();
            let disks: Vec<String> = f
                .disks
                .iter()
                .map(|d| format!("{} {}G", d.name, d.size_bytes >> 30))
                .collect();
            println!(
                "{:<18} {:<8} {:>5} {:>8} {:<28} {:<22} {}",
                h.mac,
                h.site.as_deref().unwrap_or("-"),
                f.cpus.map_or("-".into(), |c| c.to_string()),
                f.memory_mib.map_or("-".into(), |m| m.to_string()),
                if disks.is_empty() {
                    "(no report yet)".into()
                } else {
                    disks.join(", ")
                },
                f.system_serial.as_deref().unwrap_or("-"),
                ago(h.updated)
            );
        }
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
    Ok(())
}

/// `provd hosts show`: the record, its hardware facts, install and history.
fn show(target: &ServerTarget, host: &str, json: bool) -> anyhow::Result<()> {
    let api = target.api()?;
    let h: HostRecord = api.require(api.get(&format!("/api/hosts/{host}"))?)?;
    let all: Vec<crate::ipam::Assignment> = api.require(api.get("/api/ipam")?)?;
    let addresses: Vec<&crate::ipam::Assignment> = all.iter().filter(|a| a.mac == h.mac).collect();
    if json {
        // The record, plus its static addresses (IPAM) under "addresses".
        let mut v = serde_json::to_value(&h)?;
        v["addresses"] = serde_json::to_value(&addresses)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
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
        for a in &addresses {
            let gateway = a.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            println!(
                "address   {}/{} on {}{gateway}",
                a.address,
                a.prefix_len,
                a.role.as_str()
            );
        }
        if let Some(f) = &h.facts {
            println!(
                "hardware  {} x {}, {} MiB, serial {}, reported {}",
                f.cpus.unwrap_or(0),
                f.cpu_model.as_deref().unwrap_or("?"),
                f.memory_mib.unwrap_or(0),
                f.system_serial.as_deref().unwrap_or("-"),
                ago(f.reported_at)
            );
            for d in &f.disks {
                println!(
                    "  disk    {} {} bytes serial {}",
                    d.name,
                    d.size_bytes,
                    d.serial.as_deref().unwrap_or("-")
                );
            }
            for n in &f.nics {
                println!(
                    "  nic     {} {} link {}",
                    n.name,
                    n.mac,
                    n.link.as_deref().unwrap_or("?")
                );
            }
        }
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
    Ok(())
}

/// `DRIVER,ADDRESS,CREDENTIALS[,KEY=VALUE...]` -> the host entry's `bmc` table (extra keys
/// as in the config: fingerprint=..., system=..., ca_file=..., insecure=true, cipher_suite=N).
fn parse_bmc(text: &str) -> anyhow::Result<toml::Table> {
    let parts: Vec<&str> = text.split(',').map(str::trim).collect();
    let [driver, address, credentials, extra @ ..] = parts.as_slice() else {
        anyhow::bail!("--bmc is DRIVER,ADDRESS,CREDENTIALS[,KEY=VALUE...] (e.g. ipmi,10.0.9.21,rack7), not {text:?}");
    };
    let mut bmc = toml::Table::new();
    for (k, v) in [("driver", driver), ("address", address), ("credentials", credentials)] {
        bmc.insert(k.into(), v.to_string().into());
    }
    for kv in extra {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--bmc: {kv:?} is not KEY=VALUE"))?;
        let value: toml::Value = match (k, v) {
            ("insecure", "true") => true.into(),
            ("cipher_suite", n) => i64::from(
                n.parse::<u8>()
                    .map_err(|_| anyhow::anyhow!("--bmc: cipher_suite={n}"))?,
            )
            .into(),
            (_, v) => v.to_string().into(),
        };
        bmc.insert(k.to_string(), value);
    }
    Ok(bmc)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmc_argument() {
        let b = parse_bmc("redfish,https://10.0.9.3,rack7,fingerprint=AB:CD,system=1,insecure=true").unwrap();
        assert_eq!(b["driver"].as_str(), Some("redfish"));
        assert_eq!(b["address"].as_str(), Some("https://10.0.9.3"));
        assert_eq!(
            (b["fingerprint"].as_str(), b["system"].as_str()),
            (Some("AB:CD"), Some("1"))
        );
        assert_eq!(b["insecure"].as_bool(), Some(true));
        assert!(parse_bmc("ipmi,10.0.9.3").is_err());
        assert!(parse_bmc("ipmi,10.0.9.3,c,oops").is_err());
    }
}
