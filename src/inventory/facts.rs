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

/// Why a discovery report is refused (whole: nothing of it is stored).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FactsRefusal {
    #[error("more than {MAX_ITEMS} disks or NICs")]
    TooMany,
    #[error("a value longer than {MAX_TEXT} characters")]
    TooLong,
    #[error("a value with control characters (terminal escapes are refused)")]
    ControlCharacters,
}

impl HardwareFacts {
    /// Every text value of the report (what reaches an operator's terminal): the one list
    /// `check` and the discovery fuzz target both read.
    pub fn texts(&self) -> Vec<&str> {
        let mut texts: Vec<&str> = [
            &self.system_vendor,
            &self.system_product,
            &self.system_serial,
            &self.system_uuid,
            &self.cpu_model,
            &self.bmc_address,
        ]
        .into_iter()
        .filter_map(|t| t.as_deref())
        .collect();
        for d in &self.disks {
            texts.push(&d.name);
            texts.extend(d.serial.as_deref());
            texts.extend(d.model.as_deref());
        }
        for n in &self.nics {
            texts.extend([n.name.as_str(), n.mac.as_str()]);
            texts.extend(n.link.as_deref());
        }
        texts
    }

    /// Refuse what is oversized rather than store part of it.
    pub fn check(&self) -> Result<(), FactsRefusal> {
        if self.disks.len() > MAX_ITEMS || self.nics.len() > MAX_ITEMS {
            return Err(FactsRefusal::TooMany);
        }
        let texts = self.texts();
        if texts.iter().any(|t| t.len() > MAX_TEXT) {
            return Err(FactsRefusal::TooLong);
        }
        // They are shown on operators' terminals: an escape sequence is refused, not stored.
        if texts.iter().any(|t| crate::printable::has_unsafe(t)) {
            return Err(FactsRefusal::ControlCharacters);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_reports_and_terminal_escapes_are_refused() {
        let mut f = HardwareFacts::default();
        assert!(f.check().is_ok());
        f.disks = vec![Disk::default(); MAX_ITEMS + 1];
        assert_eq!(f.check(), Err(FactsRefusal::TooMany));
        f.disks.clear();
        f.cpu_model = Some("x".repeat(MAX_TEXT + 1));
        assert_eq!(f.check(), Err(FactsRefusal::TooLong));
        f.cpu_model = Some("Xeon".into());
        assert!(f.check().is_ok());
        f.nics = vec![Nic {
            name: "eth0\u{1b}]0;pwned\u{7}".into(),
            ..Nic::default()
        }];
        assert_eq!(f.check(), Err(FactsRefusal::ControlCharacters));
    }
}
