//! The rules a pool-sharing arrangement (DHCP failover) imposes on the engine, as one small
//! trait the engine asks: may this server answer this client, which free addresses may it
//! hand out, and how long may a lease be.
//!
//! The engine knows nothing of failover's states or messages: `failover::gate::Gate`
//! implements this trait and the relationship publishes a new one through
//! `dhcp::Leases::set_rules` when its state changes. This keeps the dependency one way
//! (failover uses dhcp, never the reverse), as dora keeps storage behind `Storage`.

use crate::dhcp::leases::Owner;
use crate::dhcp::packet::Request;
use std::net::Ipv4Addr;

/// Why the rules kept a request from being answered (counted like other drops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The state serves nobody (RECOVER, POTENTIAL-CONFLICT, STARTUP, ...).
    NoService,
    /// Load balancing gives this client to the partner.
    PartnersClient,
}

/// What the engine asks before it answers a client of a site that shares its pools.
pub trait PoolRules: Send + Sync + std::fmt::Debug {
    /// May this server answer `req` now?
    fn admits(&self, req: &Request) -> Result<(), Refusal>;
    /// Which free addresses this server may hand out at `now`.
    fn owner(&self, now: u64) -> Owner<'_>;
    /// Whether `ip` is in the shared pools (only those are bound by `clamp_lease`).
    fn covers(&self, ip: Ipv4Addr) -> bool;
    /// The lease time a client may get for an address the partner acknowledged up to
    /// `tsfp`, when it asks for `wanted` seconds.
    fn clamp_lease(&self, wanted: u32, tsfp: u64, now: u64) -> u32;
}
