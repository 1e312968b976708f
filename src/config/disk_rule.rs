//! Which disk an image profile's installer writes (`disk = "..."` on the profile), parsed and
//! checked once here; the installer environment applies it to the disks it finds.
//!
//! A server often has several disks (a small boot SSD or a BOSS card beside data disks, NVMe
//! beside SATA), and the kernel's order of them is not stable across firmware or driver
//! changes: the profile says which one by a rule, never by "the first". The rule is handed
//! to the installer in a canonical form (`DiskRule::installer_form`) that a shell compares
//! without parsing units.

use std::fmt;

/// The rule a profile states.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DiskRule {
    /// The smallest disk (the default: the OS disk of a server is its smallest).
    #[default]
    Smallest,
    Largest,
    /// `/dev/disk/by-path/...` (the slot, as udev names it) or a kernel name `/dev/nvme0n1`.
    Path(String),
    /// The disk's serial number (NVMe, SATA, SAS, virtio).
    Serial(String),
    /// A disk whose size in bytes is within the range (either end may be open).
    Size {
        min: u64,
        max: Option<u64>,
    },
}

impl DiskRule {
    /// `smallest`, `largest`, `/dev/...`, `serial:S`, `size:MIN-MAX` (`size:400G-`,
    /// `size:-2T`; K, M, G, T are powers of 1000 as disks are sold, Ki, Mi, Gi, Ti of 1024).
    pub fn parse(text: &str) -> Result<DiskRule, String> {
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        match text {
            "smallest" => return Ok(DiskRule::Smallest),
            "largest" => return Ok(DiskRule::Largest),
            _ => {}
        }
        if let Some(path) = text.strip_prefix("/dev/") {
            if !plain(path) || path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(format!(
                    "{text:?} is not a device path (e.g. \"/dev/disk/by-path/pci-0000:3b:00.0-nvme-1\")"
                ));
            }
            return Ok(DiskRule::Path(text.to_string()));
        }
        if let Some(serial) = text.strip_prefix("serial:") {
            if !plain(serial) {
                return Err(format!(
                    "serial {serial:?}: one word of printable characters, no spaces"
                ));
            }
            return Ok(DiskRule::Serial(serial.to_string()));
        }
        if let Some(range) = text.strip_prefix("size:") {
            let (lo, hi) = range
                .split_once('-')
                .ok_or_else(|| format!("{text:?}: a size range is MIN-MAX, e.g. \"size:400G-2T\" or \"size:400G-\""))?;
            let min = if lo.is_empty() { 0 } else { bytes(lo)? };
            let max = if hi.is_empty() { None } else { Some(bytes(hi)?) };
            if lo.is_empty() && hi.is_empty() {
                return Err(format!("{text:?}: give at least one end of the range"));
            }
            if max.is_some_and(|m| m < min) {
                return Err(format!("{text:?}: the range ends before it starts"));
            }
            return Ok(DiskRule::Size { min, max });
        }
        Err(format!(
            "{text:?} is not a disk rule: \"smallest\", \"largest\", \"/dev/disk/by-path/...\", \"serial:...\" or \"size:MIN-MAX\""
        ))
    }

    /// What the installer environment reads (`--disk=` on the deploy document's image line):
    /// one word, sizes in bytes.
    pub fn installer_form(&self) -> String {
        match self {
            DiskRule::Smallest => "smallest".into(),
            DiskRule::Largest => "largest".into(),
            DiskRule::Path(p) => format!("path:{p}"),
            DiskRule::Serial(s) => format!("serial:{s}"),
            DiskRule::Size { min, max } => format!("size:{min}-{}", max.map(|m| m.to_string()).unwrap_or_default()),
        }
    }
}

impl fmt::Display for DiskRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.installer_form())
    }
}

/// "400G", "1.5T", "512Gi", "1000000" (bytes).
fn bytes(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale: u64 = match unit {
        "" => 1,
        "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => return Err(format!("{text:?}: unknown unit {other:?} (K, M, G, T, Ki, Mi, Gi, Ti)")),
    };
    let n: f64 = number.parse().map_err(|_| format!("{text:?} is not a size"))?;
    let b = n * scale as f64;
    if !(b.is_finite() && b >= 0.0 && b < u64::MAX as f64) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(b as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_to_one_word_for_the_installer() {
        let form = |t: &str| DiskRule::parse(t).unwrap().installer_form();
        assert_eq!(form("smallest"), "smallest");
        assert_eq!(form("largest"), "largest");
        assert_eq!(
            form("/dev/disk/by-path/pci-0000:3b:00.0-nvme-1"),
            "path:/dev/disk/by-path/pci-0000:3b:00.0-nvme-1"
        );
        assert_eq!(form("/dev/nvme0n1"), "path:/dev/nvme0n1");
        assert_eq!(form("serial:S4EVNX0N123456"), "serial:S4EVNX0N123456");
        assert_eq!(form("size:400G-2T"), "size:400000000000-2000000000000");
        assert_eq!(form("size:8Gi-"), "size:8589934592-");
        assert_eq!(form("size:-1.5T"), "size:0-1500000000000");
        assert_eq!(DiskRule::default(), DiskRule::Smallest);
    }

    #[test]
    fn bad_rules_say_why() {
        for (text, says) in [
            ("first", "not a disk rule"),
            ("/dev/../etc/passwd", "not a device path"),
            ("/dev/", "not a device path"),
            ("serial:two words", "no spaces"),
            ("serial:", "no spaces"),
            ("size:2T-400G", "ends before it starts"),
            ("size:-", "at least one end"),
            ("size:400X-", "unknown unit"),
            ("size:400G", "MIN-MAX"),
            ("size:G-", "not a size"),
        ] {
            let e = DiskRule::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
