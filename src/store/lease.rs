//! The stored form of a lease. Offers are never stored: only what a client was told it may
//! use (bound), gave back (released), refused (declined) or outlived (expired).

use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    Bound,
    Released,
    /// The client said the address is in use by someone else (DHCPDECLINE); quarantined until
    /// `ends`.
    Declined,
    Expired,
    /// Failover: free, and the primary's to allocate (no client).
    Free,
    /// Failover: free, and the secondary's to allocate (no client).
    Backup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub ip: Ipv4Addr,
    /// Hex of the client identifier (option 61) or, without one, of htype + chaddr.
    pub client_id: String,
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
    pub state: LeaseState,
    /// Unix seconds.
    pub starts: u64,
    pub ends: u64,
    pub site: String,
    /// Failover times (unix seconds; 0 = none). tstp: the potential expiry last sent to the
    /// partner; tsfp: the one the partner acknowledged (a client may be given at most tsfp +
    /// MCLT); cltt: the client's last transaction.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tstp: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tsfp: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cltt: u64,
    /// Learnt from the failover partner's BNDUPD rather than granted by this server. The
    /// ISC protocol does not authenticate the partner, so such a binding never authorises a
    /// host's install secrets (`dhcp::Leases::holds_granted_here`); it is stored so that a
    /// restart does not turn it into one of ours.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_partner: bool,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}
