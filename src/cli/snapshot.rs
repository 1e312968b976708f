//! `provd vm snapshot create|list|revert|delete`: internal snapshots of a shut-off VM,
//! external (disk-only, quiesced by the guest agent when it runs) of a running one
//! (`vm::snapshot` and `vm::snapshot_external` say how), with `--json` for scripts.

use super::Target;
use crate::vm::Hypervisor;
use crate::vm::snapshot::{SnapshotInfo, SnapshotKind};
use clap::Subcommand;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a VM. Shut off: internal (inside its qcow2 disks). Running: external, a new
    /// overlay per disk (NAME_vda.SNAPSHOT.qcow2 beside it), with the guest's file systems
    /// frozen by its guest agent while it is taken when the agent answers. A template that
    /// linked clones back is refused.
    Create {
        name: String,
        snapshot: String,
        /// Do not ask the guest agent to freeze the file systems (crash-consistent only).
        #[arg(long)]
        no_quiesce: bool,
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
    /// Refused when newer snapshots were taken after it, unless --force (which deletes
    /// them: an external one's overlays go with it).
    Revert {
        name: String,
        snapshot: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete one snapshot (newer ones are kept). An external one is merged into the file
    /// below its overlays (a block commit; a shut-off VM is started paused for it).
    Delete {
        name: String,
        snapshot: String,
        #[command(flatten)]
        target: Target,
    },
}

fn row(s: &SnapshotInfo) -> String {
    let kind = match (s.kind, s.quiesced) {
        (SnapshotKind::Internal, _) => "internal",
        (SnapshotKind::External, false) => "external",
        (SnapshotKind::External, true) => "external+q",
    };
    format!(
        "{:<24} {:<10} {:<14} {:>12} {:<24} {}{}",
        s.name,
        kind,
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
            no_quiesce,
            json,
            target,
        } => {
            let s = Hypervisor::connect(target.uri())?.snapshot_create(&name, &snapshot, no_quiesce)?;
            if json {
                println!("{}", serde_json::to_string(&s)?);
            } else {
                let how = match (s.kind, s.quiesced) {
                    (SnapshotKind::Internal, _) => "internal",
                    (SnapshotKind::External, true) => "external, quiesced by the guest agent",
                    (SnapshotKind::External, false) => "external, not quiesced (no guest agent answered)",
                };
                println!("{name}: snapshot {snapshot:?} taken ({how})");
            }
        }
        SnapshotCommand::List { name, json, target } => {
            let list = Hypervisor::connect(target.uri())?.snapshot_list(&name)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("{name}: no snapshots");
            } else {
                println!(
                    "{:<24} {:<10} {:<14} {:>12} {:<24} ",
                    "SNAPSHOT", "KIND", "STATE", "CREATED", "PARENT"
                );
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
