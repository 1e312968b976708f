//! `provd leases list` and `provd stats`: ask the daemon's API; when no daemon answers, read
//! the lease database directly (redb locks it while a daemon holds it, so this never reads
//! a database under a live writer).

use super::ServerTarget;
use super::client::Fetch;
use crate::clock::unix_now;
use crate::http::StatsView;
use crate::store::{self, LeaseRecord};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum LeasesCommand {
    /// List every stored lease (bound, released, declined, expired).
    List {
        #[command(flatten)]
        target: ServerTarget,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LeasesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        LeasesCommand::List { target, json } => list(&target, json),
    }
}

fn list(target: &ServerTarget, json: bool) -> anyhow::Result<ExitCode> {
    let (base, state_dir, _) = target.resolve();
    let leases: Vec<LeaseRecord> = match target.api()?.get("/api/leases")? {
        Fetch::Ok(l) => l,
        Fetch::NoDaemon => {
            eprintln!(
                "provd: no daemon at {base}; reading {}",
                store::db_path(&state_dir).display()
            );
            store::read_leases_offline(&state_dir)?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&leases)?);
        return Ok(ExitCode::SUCCESS);
    }
    let now = unix_now();
    println!(
        "{:<16} {:<9} {:<18} {:<24} {:<12} SITE",
        "ADDRESS", "STATE", "MAC", "HOSTNAME", "ENDS"
    );
    for l in &leases {
        let ends = if l.ends > now {
            format!("in {}s", l.ends - now)
        } else {
            format!("{}s ago", now - l.ends)
        };
        println!(
            "{:<16} {:<9} {:<18} {:<24} {:<12} {}",
            l.ip,
            format!("{:?}", l.state).to_lowercase(),
            l.mac.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            l.hostname.as_deref().unwrap_or("-"),
            ends,
            l.site
        );
    }
    eprintln!("{} lease(s)", leases.len());
    Ok(ExitCode::SUCCESS)
}

pub fn stats(target: &ServerTarget, json: bool) -> anyhow::Result<ExitCode> {
    let api = target.api()?;
    let view: StatsView = api.require(api.get("/api/stats")?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("leases bound: {}  known: {}", view.leases_bound, view.leases_known);
    for (section, map) in [
        ("dhcp", &view.dhcp),
        ("store", &view.store),
        ("tftp", &view.tftp),
        ("http", &view.http),
        ("hosts", &view.hosts),
    ] {
        for (k, v) in map {
            println!("{section:<6} {k:<28} {v}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
