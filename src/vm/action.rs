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
    /// A snapshot (`snapshot` names it): internal when shut off, external when running.
    Snapshot,
    /// Live migration to another ready hypervisor of the site (`to` names it).
    Migrate,
}

impl VmAction {
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Start => "start",
            VmAction::Shutdown => "shutdown",
            VmAction::PowerOff => "power-off",
            VmAction::Reboot => "reboot",
            VmAction::Snapshot => "snapshot",
            VmAction::Migrate => "migrate",
        }
    }

    pub fn parse(s: &str) -> Option<VmAction> {
        [
            VmAction::Start,
            VmAction::Shutdown,
            VmAction::PowerOff,
            VmAction::Reboot,
            VmAction::Snapshot,
            VmAction::Migrate,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// The answer to an action: the VM as libvirt shows it afterwards, and where it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionDone {
    pub action: VmAction,
    pub host: String,
    pub vm: DomainSummary,
}

/// Apply one action to `name` on `h`; a migration goes to `dest` (a libvirt URI), and the
/// VM is then as `dest` shows it. Blocking (libvirt).
pub fn apply(
    h: &Hypervisor,
    name: &str,
    action: VmAction,
    snapshot: &str,
    dest: Option<&str>,
) -> Result<DomainSummary, VmError> {
    match action {
        VmAction::Start => h.start(name)?,
        VmAction::Shutdown => h.stop(name)?,
        VmAction::PowerOff => h.destroy(name)?,
        VmAction::Reboot => h.reboot(name)?,
        VmAction::Snapshot => {
            h.snapshot_create(name, snapshot, false)?;
        }
        VmAction::Migrate => {
            let dest = dest.ok_or_else(|| VmError::NoDestination { name: name.into() })?;
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
        for a in ["start", "shutdown", "power-off", "reboot", "snapshot", "migrate"] {
            let parsed = VmAction::parse(a).unwrap();
            assert_eq!(parsed.as_str(), a);
            assert_eq!(serde_json::to_value(parsed).unwrap(), a);
        }
        assert_eq!(VmAction::parse("format-disk"), None);
    }
}
