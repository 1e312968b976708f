//! Packet counters: what came in, what went out, what was dropped and why. Lock-free
//! (atomics in a map fixed at start), shown by the API's stats view, `/metrics`, and a
//! periodic log line.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct DhcpStats {
    counters: BTreeMap<&'static str, AtomicU64>,
}

/// Every counter name, so the map never changes shape after start.
const NAMES: &[&str] = &[
    "received_discover",
    "received_request",
    "received_decline",
    "received_release",
    "received_inform",
    "received_other",
    "sent_offer",
    "sent_ack",
    "sent_nak",
    "send_errors",
    "persist_failures",
    // Malformed packets, by what was wrong (dropped before any state is touched).
    "malformed_truncated",
    "malformed_bad_cookie",
    "malformed_bad_hlen",
    "malformed_not_request",
    "malformed_bad_options",
    "malformed_no_message_type",
    // Well-formed requests that get no answer, by reason (engine::DropReason names).
    "dropped_no_subnet",
    "dropped_unknown_client",
    "dropped_pool_exhausted",
    "dropped_other_server",
    "dropped_no_record",
    "dropped_not_clients_lease",
    "dropped_malformed_request",
    "dropped_unsupported_type",
];

impl Default for DhcpStats {
    fn default() -> Self {
        DhcpStats {
            counters: NAMES.iter().map(|n| (*n, AtomicU64::new(0))).collect(),
        }
    }
}

impl DhcpStats {
    pub fn inc(&self, name: &str) {
        match self.counters.get(name) {
            Some(c) => {
                c.fetch_add(1, Ordering::Relaxed);
            }
            None => debug_assert!(false, "unknown counter {name}"),
        }
    }

    pub fn get(&self, name: &str) -> u64 {
        self.counters.get(name).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counters
            .iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// Sum of all `malformed_*` counters.
    pub fn malformed_total(&self) -> u64 {
        self.counters
            .iter()
            .filter(|(k, _)| k.starts_with("malformed_"))
            .map(|(_, v)| v.load(Ordering::Relaxed))
            .sum()
    }
}
