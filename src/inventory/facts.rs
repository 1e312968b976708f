//! Hardware facts a machine reports about itself from the discovery image (`POST
//! /discover/<mac>`): what an operator needs to decide what the machine becomes (`provd
//! hosts adopt`). Reported, not verified: a machine can lie about itself, so nothing in
//! provd decides anything from them; they are shown, and bounded in size.

use serde::{Deserialize, Serialize};

/// Bounds on what one machine may make provd store.
pub const MAX_ITEMS: usize = 64;
pub const MAX_TEXT: usize = 256;
/// Largest body the discovery route reads.
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HardwareFacts {
    pub system_vendor: Option<String>,
    pub system_product: Option<String>,
    pub system_serial: Option<String>,
    pub system_uuid: Option<String>,
    pub cpu_model: Option<String>,
    pub cpus: Option<u32>,
    /// Memory the firmware gave the machine (online memory blocks), MiB.
    pub memory_mib: Option<u64>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    /// The BMC's LAN address, when the board reports one.
    pub bmc_address: Option<String>,
    /// When provd received them (set by provd, not the machine).
    pub reported_at: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub serial: Option<String>,
    pub model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    pub name: String,
    pub mac: String,
    /// "up", "down" (carrier), or what the kernel said.
    pub link: Option<String>,
    pub speed_mbps: Option<u32>,
}

impl HardwareFacts {
    /// Refuse what is oversized rather than store part of it.
    pub fn check(&self) -> Result<(), String> {
        if self.disks.len() > MAX_ITEMS || self.nics.len() > MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} disks or NICs"));
        }
        let texts = [
            &self.system_vendor,
            &self.system_product,
            &self.system_serial,
            &self.system_uuid,
            &self.cpu_model,
            &self.bmc_address,
        ];
        let long = texts.iter().filter_map(|t| t.as_deref()).any(|t| t.len() > MAX_TEXT)
            || self.disks.iter().any(|d| {
                d.name.len() > MAX_TEXT
                    || d.serial.as_deref().is_some_and(|s| s.len() > MAX_TEXT)
                    || d.model.as_deref().is_some_and(|s| s.len() > MAX_TEXT)
            })
            || self
                .nics
                .iter()
                .any(|n| n.name.len() > MAX_TEXT || n.mac.len() > MAX_TEXT);
        if long {
            return Err(format!("a value longer than {MAX_TEXT} characters"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_reports_are_refused() {
        let mut f = HardwareFacts::default();
        assert!(f.check().is_ok());
        f.disks = vec![Disk::default(); MAX_ITEMS + 1];
        assert!(f.check().is_err());
        f.disks.clear();
        f.cpu_model = Some("x".repeat(MAX_TEXT + 1));
        assert!(f.check().is_err());
    }
}
