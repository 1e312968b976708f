//! `Leases`: the one owner of the DHCP lease state, in the style of mini-redis's `Db`.
//!
//! The engine (lease table, pool-sharing rules) sits behind a private lock that is
//! held only for a decision or one table operation (microseconds, never across an await or
//! an fsync). Everything else in provd (the DHCP loop, the failover relationship, the boot
//! policy, the journal, the API) holds a cheap clone of this handle and calls its methods;
//! no module outside `dhcp` takes a lock on DHCP state.
//!
//! Methods that change a lease return the `LeaseRecord` the caller must make durable (the
//! store) before acting on it: the handle never does I/O.

use crate::config::Pool;
use crate::config::topology::{Ingress, Topology};
use crate::dhcp::engine::{Engine, Outcome};
use crate::dhcp::leases::{LeaseTable, PartnerBinding};
use crate::dhcp::packet::Request;
use crate::dhcp::rules::PoolRules;
use crate::mac::MacAddr;
use crate::store::LeaseRecord;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A cheap, cloneable handle on the lease state.
#[derive(Clone)]
pub struct Leases {
    engine: Arc<Mutex<Engine>>,
    /// Every listen entry of the served sites: fixed at construction, so read without the lock.
    ingresses: Arc<Vec<Ingress>>,
}

/// How many addresses are known and how many of them are bound now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseCounts {
    pub bound: usize,
    pub known: usize,
}

impl Leases {
    /// The lease state of the served sites of `topology` (any generation's: they serve the
    /// same sites on the same listeners).
    pub fn new(topology: &Topology, table: LeaseTable) -> Self {
        Leases::with_policy(topology, table, Arc::new(crate::boot::firmware::SitePolicy))
    }

    /// The same, with the boot policy DHCP asks for every packet (the daemon's is the one
    /// HTTP and TFTP ask too).
    pub fn with_policy(
        topology: &Topology,
        table: LeaseTable,
        policy: Arc<dyn crate::boot::firmware::DhcpPolicy>,
    ) -> Self {
        let ingresses = Arc::new(topology.ingresses());
        Leases {
            engine: Arc::new(Mutex::new(Engine::with_policy(topology, table, policy))),
            ingresses,
        }
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        // A panic while holding the lock can only come from a bug in the engine; the table
        // is still consistent per operation, so keep serving rather than poison everyone.
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where DHCP listens: one entry per configured interface of each served site.
    pub fn ingresses(&self) -> &[Ingress] {
        &self.ingresses
    }

    /// RFC 2131: the answer to one request under `topology`, the caller's config
    /// generation (see `Engine::handle`).
    pub fn decide(&self, topology: &Topology, req: &Request, ingress: &Ingress, now: u64) -> Outcome {
        self.engine().handle(topology, req, ingress, now)
    }

    /// Install the pool-sharing rules (a failover gate) of `site`; false if not served.
    pub fn set_rules(&self, site: &str, rules: Arc<dyn PoolRules>) -> bool {
        self.engine().set_rules(site, rules)
    }

    /// The MAC that holds (or last held) a lease on `ip`.
    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.engine().table().get(ip).and_then(|b| b.mac)
    }

    /// Addresses bound to `mac` and unexpired at `now` (scans the table: not per request).
    pub fn bound_addresses_of(&self, mac: MacAddr, now: u64) -> Vec<Ipv4Addr> {
        self.engine().table().bound_addresses_of(mac, now)
    }

    /// Whether `ip` is bound to `mac` now (one lookup: fit for every request).
    pub fn holds(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.engine().table().holds(ip, mac, now)
    }

    /// Whether `ip` is bound to `mac` by this server itself, not learnt from the failover
    /// partner (one lookup). See `LeaseTable::holds_granted_here`.
    pub fn holds_granted_here(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.engine().table().holds_granted_here(ip, mac, now)
    }

    /// The address `mac` holds as a plain Ethernet client, if any (one lookup).
    pub fn address_of_mac(&self, mac: MacAddr, now: u64) -> Option<Ipv4Addr> {
        self.engine().table().address_of_mac(mac, now)
    }

    pub fn counts(&self, now: u64) -> LeaseCounts {
        let e = self.engine();
        LeaseCounts {
            bound: e.table().count_bound(now),
            known: e.table().len(),
        }
    }

    /// Failover: the partner's view of one address, applied unless it conflicts with a
    /// binding granted here (`leases::partner_conflict`). Returns the record to persist.
    pub fn apply_partner(
        &self,
        update: PartnerBinding,
        site: &str,
        now: u64,
    ) -> Result<LeaseRecord, super::leases::PartnerConflict> {
        self.engine().table_mut().apply_partner(update, site, now)
    }

    /// Failover: the partner acknowledged `ip` up to `tsfp`. Returns the record to persist.
    pub fn acknowledged(&self, ip: Ipv4Addr, tsfp: u64, site: &str) -> Option<LeaseRecord> {
        self.engine().table_mut().acknowledged(ip, tsfp, site)
    }

    /// Failover: `tstp` (the potential expiry) was sent to the partner for `ip`.
    pub fn note_sent(&self, ip: Ipv4Addr, tstp: u64) {
        self.engine().table_mut().sent(ip, tstp);
    }

    /// Failover: every binding and BACKUP address of `pools` (an UPDREQALL answer).
    pub fn records_in(&self, pools: &[Pool], site: &str) -> Vec<LeaseRecord> {
        self.engine().table().records_in(pools, site)
    }

    /// Failover: what the partner is told about each of `ips` (in order; unknown skipped).
    pub fn failover_records(&self, ips: &[Ipv4Addr], site: &str) -> Vec<LeaseRecord> {
        let e = self.engine();
        ips.iter()
            .filter_map(|ip| e.table().failover_record(*ip, site))
            .collect()
    }

    /// Failover (primary): give half the free addresses of `pools` to the secondary.
    /// Returns the records to persist and send.
    pub fn balance(&self, pools: &[Pool], now: u64, grace: u64, site: &str) -> Vec<LeaseRecord> {
        self.engine().table_mut().balance(pools, now, grace, site)
    }
}

impl crate::boot::LeaseLookup for Leases {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        Leases::mac_of(self, ip)
    }
    fn holds(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        Leases::holds_granted_here(self, ip, mac, now)
    }
    fn address_of_mac(&self, mac: MacAddr, now: u64) -> Option<Ipv4Addr> {
        Leases::address_of_mac(self, mac, now)
    }
    fn is_bound(&self, ip: Ipv4Addr, now: u64) -> bool {
        self.engine().table().is_bound(ip, now)
    }
}

/// The journal resolves addresses (TFTP and HTTP events) to MACs through the lease table.
impl crate::journal::AddressHolders for Leases {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        Leases::mac_of(self, ip)
    }
}
