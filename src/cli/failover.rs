//! `provd failover status|partner-down`: what omshell does for an ISC failover pair.

use super::ServerTarget;
use crate::failover::peer::Status;
use crate::replication::link::Status as Replication;
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum FailoverCommand {
    /// Each relationship: our state, the partner's, since when, the connection, updates.
    Status {
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// The pair's shared inventory, per site: connected, first and last synchronisation,
    /// records sent, received and applied, the last error.
    Replication {
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Declare the partner down: this server then serves every client, and after MCLT also
    /// the partner's free addresses. Only when the partner really is down (provd refuses
    /// while the partner is talking to it); the partner comes back through RECOVER.
    PartnerDown {
        /// The relationship name (`name` in [sites.X.failover]).
        name: String,
        #[command(flatten)]
        target: ServerTarget,
    },
}

fn ago(t: u64) -> String {
    let now = crate::clock::unix_now();
    if t == 0 {
        return "-".into();
    }
    format!("{} s ago", now.saturating_sub(t))
}

fn print(s: &Status) {
    println!(
        "{} (site {}, {}): {} since {}; partner {} {} since {}; {}; mclt {} s; updates sent {} received {} unacked {} queued {}",
        s.name,
        s.site,
        s.role,
        s.state.name(),
        ago(s.stos),
        s.partner,
        s.partner_state.map_or("unknown", |p| p.name()),
        ago(s.partner_stos),
        if s.connected { "connected" } else { "not connected" },
        s.mclt,
        s.updates_sent,
        s.updates_received,
        s.unacked_updates,
        s.queued_updates
    );
    if let Some(e) = &s.last_error {
        println!("  last error: {e}");
    }
}

fn print_replication(r: &Replication) {
    println!(
        "inventory replication (site {}) with {}: {}; {}; last sync {}; last record {}; records sent {} received {} applied {}",
        r.site,
        r.partner,
        if r.connected { "connected" } else { "not connected" },
        if r.synced_at == 0 {
            "never synchronised (no installs until it has)".to_string()
        } else {
            format!("first synchronised {}", ago(r.synced_at))
        },
        ago(r.last_sync),
        ago(r.last_received),
        r.records_sent,
        r.records_received,
        r.records_applied
    );
    if let Some(e) = &r.last_error {
        println!("  last error: {e}");
    }
}

pub fn run(cmd: FailoverCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FailoverCommand::Status { target, json } => {
            let api = target.api()?;
            let list: Vec<Status> = api.require(api.get("/api/failover")?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no failover relationship is configured for the sites this provd serves");
            }
            if !json {
                list.iter().for_each(print);
                let repl: Vec<Replication> = api.require(api.get("/api/replication")?)?;
                repl.iter().for_each(print_replication);
            }
        }
        FailoverCommand::Replication { target, json } => {
            let api = target.api()?;
            let repl: Vec<Replication> = api.require(api.get("/api/replication")?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&repl)?);
            } else if repl.is_empty() {
                println!("no inventory replication: no served site has a failover partner and a CA");
            } else {
                repl.iter().for_each(print_replication);
            }
        }
        FailoverCommand::PartnerDown { name, target } => {
            let api = target.api()?;
            let s: Status = api.require(api.post(&format!("/api/failover/{name}/partner-down"))?)?;
            print(&s);
        }
    }
    Ok(ExitCode::SUCCESS)
}
