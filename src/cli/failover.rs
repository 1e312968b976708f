//! `provd failover status|partner-down`: what omshell does for an ISC failover pair.

use super::ServerTarget;
use crate::failover::peer::Status;
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
