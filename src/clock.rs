//! Wall-clock time as Unix seconds (the unit leases are stored in), and `Version`, the
//! hybrid clock every replicated record carries (so the records' own modules can compare
//! versions without depending on the replication link that ships them).

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t` (unix seconds) as RFC 3339 UTC, for messages people read.
pub fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| d.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("unix time {t}"))
}

/// Unix time in milliseconds (record versions of the pair's replication).
pub fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A replicated record's version: when (unix ms) and where it was last written locally.
/// Causally later local writes always compare greater (`after`); concurrent writes on the
/// two servers of a pair compare by wall clock, then by server name.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Version {
    pub at_ms: u64,
    pub origin: String,
}

impl Version {
    /// The version of a local write after `prev`: never smaller than `prev`, even if this
    /// server's clock is behind the one that wrote `prev`.
    pub fn after(prev: &Version, now_ms: u64, origin: &str) -> Version {
        Version {
            at_ms: now_ms.max(prev.at_ms + 1),
            origin: origin.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_write_after_a_remote_one_is_newer_even_with_a_clock_behind() {
        let remote = Version {
            at_ms: 300,
            origin: "b".into(),
        };
        let v = Version::after(&remote, 10, "a");
        assert!(v > remote);
        assert_eq!(v.at_ms, 301);
        // Concurrent writes at the same millisecond break the tie by server.
        assert!(
            Version {
                at_ms: 300,
                origin: "b".into()
            } > Version {
                at_ms: 300,
                origin: "a".into()
            }
        );
    }
}
