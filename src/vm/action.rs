//! One action on one VM, as the admin API (and the console's buttons) ask for it: the same
//! `Hypervisor` calls `provd vm` makes, behind one type so the API, its clients and the
//! journal name them alike.

use super::{DomainSummary, Hypervisor, VmError};
use crate::mac::MacAddr;
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
    /// A new empty disk of `size_gib` beside the VM's first disk (never at a path the
    /// caller gives), on `bus` (virtio by default).
    AttachDisk,
    /// Detach disk `dev` (its file stays).
    DetachDisk,
    /// A NIC on `bridge` (`model`, virtio by default) with a fresh MAC.
    AttachNic,
    /// Detach the NIC with MAC `mac`.
    DetachNic,
    /// Freeze the template into its next version (`T-vN`).
    Version,
    /// Live migration to another ready hypervisor of the site (`to` names it).
    Migrate,
}

/// Every action, in the order the API's refusal lists them.
const ALL: [VmAction; 20] = [
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
    VmAction::AttachDisk,
    VmAction::DetachDisk,
    VmAction::AttachNic,
    VmAction::DetachNic,
    VmAction::Version,
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
            VmAction::AttachDisk => "attach-disk",
            VmAction::DetachDisk => "detach-disk",
            VmAction::AttachNic => "attach-nic",
            VmAction::DetachNic => "detach-nic",
            VmAction::Version => "version",
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
    /// migrate: the URI the source dials instead (the destination's migration address).
    pub dest_via: Option<String>,
    pub vcpus: Option<u32>,
    pub memory_mib: Option<u64>,
    /// attach-disk.
    pub size_gib: Option<u32>,
    pub bus: Option<String>,
    /// detach-disk.
    pub dev: Option<String>,
    /// attach-nic.
    pub bridge: Option<String>,
    pub model: Option<String>,
    /// detach-nic.
    pub mac: Option<MacAddr>,
}

/// A bridge name as Linux takes it (IFNAMSIZ, no '/', no spaces): the API passes it into
/// the device XML, so nothing else gets there.
fn check_bridge(name: &str, bridge: &str) -> Result<(), VmError> {
    let ok = !bridge.is_empty()
        && bridge.len() <= 15
        && bridge.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        return Ok(());
    }
    Err(VmError::MissingArgument {
        name: name.into(),
        action: "attach-nic",
        what: "a bridge name of at most 15 letters, digits, '-', '_' or '.'",
    })
}

/// The answer to an action: the VM as libvirt shows it afterwards, and where it is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionDone {
    pub action: VmAction,
    pub host: String,
    pub vm: DomainSummary,
    /// What the action made (`vdb /images/web1_vdb.qcow2`, a MAC, `T-v3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<String>,
}

/// What an action made that the VM's summary does not show: the new disk's name and file,
/// the new NIC's MAC, the version's name.
pub type Made = Option<String>;

/// Apply one action to `name` on `h`; a migration goes to `args.dest` (a libvirt URI), and
/// the VM is then as the destination shows it. Blocking (libvirt).
pub fn apply(
    h: &Hypervisor,
    name: &str,
    action: VmAction,
    args: &ActionArgs,
) -> Result<(DomainSummary, Made), VmError> {
    let missing = |what: &'static str| VmError::MissingArgument {
        name: name.into(),
        action: action.as_str(),
        what,
    };
    let snapshot = || args.snapshot.as_deref().ok_or_else(|| missing("snapshot"));
    let mut made = None;
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
        VmAction::AttachDisk => {
            let size = args.size_gib.ok_or_else(|| missing("size_gib"))?;
            let dir = h.first_disk_dir(name)?;
            let bus = args.bus.as_deref().unwrap_or("virtio");
            if !matches!(bus, "virtio" | "scsi" | "sata") {
                return Err(missing("a bus of virtio, scsi or sata"));
            }
            let (dev, file) = h.attach_new_disk(name, size, &dir, "qcow2", bus)?;
            made = Some(format!("{dev} {}", file.display()));
        }
        VmAction::DetachDisk => {
            h.detach_disk(name, args.dev.as_deref().ok_or_else(|| missing("dev"))?)?;
        }
        VmAction::AttachNic => {
            let bridge = args.bridge.as_deref().ok_or_else(|| missing("bridge"))?;
            check_bridge(name, bridge)?;
            let model = args.model.as_deref().unwrap_or("virtio");
            if !matches!(model, "virtio" | "e1000" | "e1000e" | "rtl8139") {
                return Err(missing("a model of virtio, e1000, e1000e or rtl8139"));
            }
            made = Some(h.attach_nic(name, bridge, model)?.to_string());
        }
        VmAction::DetachNic => h.detach_nic(name, args.mac.ok_or_else(|| missing("mac"))?)?,
        VmAction::Version => {
            let (version, _) = h.freeze_version(name, &mut |_| {})?;
            made = Some(version.name);
        }
        VmAction::Migrate => {
            let dest = args
                .dest
                .as_deref()
                .ok_or_else(|| VmError::NoDestination { name: name.into() })?;
            return Ok((
                super::deploy::migrate_live(h, name, dest, args.dest_via.as_deref())?,
                None,
            ));
        }
    }
    Ok((h.info(name)?, made))
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

    #[test]
    fn a_bridge_name_is_an_interface_name_and_nothing_else() {
        assert!(check_bridge("vm", "br-tenant.100").is_ok());
        for bad in ["", "br0'/><x", "a b", "../x", "averyveryverylongbridge"] {
            assert!(check_bridge("vm", bad).is_err(), "{bad:?}");
        }
    }
}
