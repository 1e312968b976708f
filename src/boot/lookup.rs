//! What the boot policy may ask of the lease table. `dhcp::Leases` implements it, so DHCP
//! can ask the boot policy without a dependency cycle.

use crate::mac::MacAddr;
use std::net::Ipv4Addr;

/// What the boot policy needs from the lease table: lookups cheap enough for every
/// request (no scan of the table while a boot storm holds the DHCP engine's lock).
pub trait LeaseLookup: Send + Sync {
    /// The MAC that holds (or last held) a lease on `ip`.
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr>;
    /// Whether `ip` is bound to `mac` and unexpired at `now` by this server's own grant: a
    /// binding learnt only from the failover partner does not count (the ISC protocol does
    /// not authenticate the partner, so a forged BNDUPD must not open a host's secrets).
    fn holds(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool;
    /// The address bound to `mac` as a plain Ethernet client, if any.
    fn address_of_mac(&self, mac: MacAddr, now: u64) -> Option<Ipv4Addr>;
    /// Whether `ip` is bound to some client and unexpired at `now` (ours or the partner's).
    fn is_bound(&self, ip: Ipv4Addr, now: u64) -> bool;
}
