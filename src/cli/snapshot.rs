//! `provd vm snapshot create|list|revert|delete`: internal snapshots of a shut-off domain
//! (`vm::snapshot` says why only those), with `--json` for scripts.

use super::Target;
use crate::vm::Hypervisor;
use crate::vm::snapshot::SnapshotInfo;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a shut-off VM (internal, inside its qcow2 disks). A running VM is refused:
    /// `provd vm shutdown` it first. A template that linked clones back is refused.
    Create {
        name: String,
        snapshot: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// A VM's snapshots, oldest first: when, from what state, parent, current, newer ones.
    List {
        name: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Put a shut-off VM's disks back to SNAPSHOT (the disks' later state is discarded).
    /// Refused when newer snapshots were taken after it, unless --force.
    Revert {
        name: String,
        snapshot: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete one snapshot (newer ones are kept).
    Delete {
        name: String,
        snapshot: String,
        #[command(flatten)]
        target: Target,
    },
}

fn row(s: &SnapshotInfo) -> String {
    format!(
        "{:<24} {:<10} {:>12} {:<24} {}{}",
        s.name,
        s.state,
        s.created,
        s.parent.as_deref().unwrap_or("-"),
        if s.current { "current" } else { "" },
        if s.newer.is_empty() {
            String::new()
        } else {
            format!(" newer: {}", s.newer.join(","))
        }
    )
}

pub fn run(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Create {
            name,
            snapshot,
            json,
            target,
        } => {
            let s = Hypervisor::connect(target.uri())?.snapshot_create(&name, &snapshot)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                println!("{name}: snapshot {snapshot:?} taken ({})", s.state);
            }
        }
        SnapshotCommand::List { name, json, target } => {
            let list = Hypervisor::connect(target.uri())?.snapshot_list(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("{name}: no snapshots");
            } else {
                println!("{:<24} {:<10} {:>12} {:<24} ", "SNAPSHOT", "STATE", "CREATED", "PARENT");
                for s in &list {
                    println!("{}", row(s));
                }
            }
        }
        SnapshotCommand::Revert {
            name,
            snapshot,
            force,
            target,
        } => {
            Hypervisor::connect(target.uri())?.snapshot_revert(&name, &snapshot, force)?;
            println!("{name}: reverted to {snapshot:?} (shut off; `provd vm start {name}` to run it)");
        }
        SnapshotCommand::Delete { name, snapshot, target } => {
            Hypervisor::connect(target.uri())?.snapshot_delete(&name, &snapshot)?;
            println!("{name}: snapshot {snapshot:?} deleted");
        }
    }
    Ok(())
}
