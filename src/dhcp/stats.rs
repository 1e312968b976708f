//! DHCP packet counters: what came in, what went out, what was dropped and why. Shown by
//! the API's stats view, `/metrics`, and a periodic log line.

pub use crate::counters::Counters as DhcpStats;

/// Every DHCP counter name (see `Counters`).
pub const NAMES: &[&str] = &[
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
    "dropped_untrusted_relay",
    "dropped_unknown_client",
    "dropped_pool_exhausted",
    "dropped_other_server",
    "dropped_no_record",
    "dropped_not_clients_lease",
    "dropped_malformed_request",
    "dropped_unsupported_type",
    "dropped_failover_no_service",
    "dropped_failover_partners_client",
    // Lease writes not admitted (`persist_gate`): the address has one in flight, or the cap.
    "dropped_persist_in_flight",
    "dropped_persist_backlog",
];

/// A fresh set of DHCP counters.
pub fn counters() -> DhcpStats {
    DhcpStats::new(NAMES)
}
