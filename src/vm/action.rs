//! One action on one VM, as the admin API (and the console's buttons) ask for it: the same
//! `Hypervisor` calls `provd vm` makes, behind one type so the API, its clients and the
//! journal name them alike.

use super::{DomainSummary, Hypervisor, VmError};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAction {
    Start,
    /// Ask the guest to shut down (ACPI); the answer does not wait for it.
    Shutdown,
    /// Power off at once.
    PowerOff,
    /// Ask the guest to reboot.
    Reboot,
    /// Hard reset (the guest is not asked).
    Reset,
    Pause,
    Resume,
    /// Start with the hypervisor (`autostart`) or not (`autostart-off`).
    Autostart,
    AutostartOff,
    /// A snapshot (`snapshot` names it): internal when shut off, external when running.
    Snapshot,
    /// Back to snapshot `snapshot` (shut off; `force` past newer ones).
    Revert,
    /// Delete snapshot `snapshot` (an external one is merged first).
    DeleteSnapshot,
    /// vCPUs to `vcpus`, within the domain's maximum.
    SetVcpus,
    /// Memory to `memory_mib`, within the domain's maximum.
    SetMemory,
    /// Live migration to another ready hypervisor of the site (`to` names it).
    Migrate,
}

/// Every action, in the order the API's refusal lists them.
const ALL: [VmAction; 15] = [
    VmAction::Start,
    VmAction::Shutdown,
    VmAction::PowerOff,
    VmAction::Reboot,
    VmAction::Reset,
    VmAction::Pause,
    VmAction::Resume,
    VmAction::Autostart,
    VmAction::AutostartOff,
    VmAction::Snapshot,
    VmAction::Revert,
    VmAction::DeleteSnapshot,
    VmAction::SetVcpus,
    VmAction::SetMemory,
    VmAction::Migrate,
];

impl VmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Shutdown => "shutdown",
            VmAction::PowerOff => "power-off",
            VmAction::Reboot => "reboot",
            VmAction::Reset => "reset",
            VmAction::Pause => "pause",
            VmAction::Resume => "resume",
            VmAction::Autostart => "autostart",
            VmAction::AutostartOff => "autostart-off",
            VmAction::Snapshot => "snapshot",
            VmAction::Revert => "revert",
            VmAction::DeleteSnapshot => "delete-snapshot",
            VmAction::SetVcpus => "set-vcpus",
            VmAction::SetMemory => "set-memory",
            VmAction::Migrate => "migrate",
        }
    }

    pub fn parse(s: &str) -> Option<VmAction> {
        ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The names of every action, for a refusal that lists them.
    pub fn names() -> String {
        ALL.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// What some actions need besides the VM's name.
#[derive(Debug, Clone, Default)]
pub struct ActionArgs {
    /// snapshot, revert, delete-snapshot.
    pub snapshot: Option<String>,
    /// revert past newer snapshots.
    pub force: bool,
    /// migrate: the destination's libvirt URI.
    pub dest: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
}

/// The answer to an action: the VM as libvirt shows it afterwards, and where it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionDone {
    pub action: VmAction,
    pub host: String,
    pub vm: DomainSummary,
}

/// Apply one action to `name` on `h`; a migration goes to `args.dest` (a libvirt URI), and
/// the VM is then as the destination shows it. Blocking (libvirt).
pub fn apply(h: &Hypervisor, name: &str, action: VmAction, args: &ActionArgs) -> Result<DomainSummary, VmError> {
    let missing = |what: &'static str| VmError::MissingArgument {
        name: name.into(),
        action: action.as_str(),
        what,
    };
    let snapshot = || args.snapshot.as_deref().ok_or_else(|| missing("snapshot"));
    match action {
        VmAction::Start => h.start(name)?,
        VmAction::Shutdown => h.stop(name)?,
        VmAction::PowerOff => h.destroy(name)?,
        VmAction::Reboot => h.reboot(name)?,
        VmAction::Reset => h.reset(name)?,
        VmAction::Pause => h.pause(name)?,
        VmAction::Resume => h.resume(name)?,
        VmAction::Autostart => h.set_autostart(name, true)?,
        VmAction::AutostartOff => h.set_autostart(name, false)?,
        VmAction::Snapshot => {
            h.snapshot_create(name, snapshot()?, false)?;
        }
        VmAction::Revert => {
            h.snapshot_revert(name, snapshot()?, args.force)?;
        }
        VmAction::DeleteSnapshot => h.snapshot_delete(name, snapshot()?)?,
        VmAction::SetVcpus => h.set_vcpus(name, args.vcpus.ok_or_else(|| missing("vcpus"))?)?,
        VmAction::SetMemory => h.set_memory(name, args.memory_mib.ok_or_else(|| missing("memory_mib"))?)?,
        VmAction::Migrate => {
            let dest = args
                .dest
                .as_deref()
                .ok_or_else(|| VmError::NoDestination { name: name.into() })?;
            return super::deploy::migrate_live(h, name, dest);
        }
    }
    h.info(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_is_none() {
        for a in VmAction::names().split(", ") {
            let parsed = VmAction::parse(a).unwrap();
            assert_eq!(parsed.as_str(), a);
            assert_eq!(serde_json::to_value(parsed).unwrap(), a);
        }
        assert_eq!(VmAction::parse("format-disk"), None);
        assert_eq!(VmAction::names().split(", ").count(), ALL.len());
    }
}
