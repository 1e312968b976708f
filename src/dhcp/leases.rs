//! The working set of leases in memory, and address allocation.
//!
//! Pure data structure: no I/O, time passed in. The store is the durable copy; this table is
//! rebuilt from it at start (`restore`) and every change that must survive a crash is
//! returned as a `LeaseRecord` for the caller to persist before answering the client.
//!
//! Allocation order for a client (RFC 2131 §4.3.1): its current or previous address, then
//! the address it asked for, then the first never-used address after a per-pool cursor, and
//! only then an address someone else released or let expire (so that a returning client is
//! likely to find its old address still free).

use crate::config::{Pool, Subnet};
use crate::dhcp::packet::ClientKey;
use crate::mac::MacAddr;
use crate::store::{LeaseRecord, LeaseState};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindState {
    /// Promised in a DHCPOFFER, held until `ends`; never persisted.
    Offered,
    Bound,
    Released,
    Declined,
    Expired,
}

#[derive(Debug, Clone)]
pub struct Binding {
    pub client: ClientKey,
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
    pub state: BindState,
    pub starts: u64,
    pub ends: u64,
}

impl Binding {
    /// Whether this binding still keeps the address from other clients at `now`.
    fn holds_address(&self, now: u64) -> bool {
        match self.state {
            BindState::Offered | BindState::Bound | BindState::Declined => self.ends > now,
            BindState::Released | BindState::Expired => false,
        }
    }
}

#[derive(Debug, Default)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, Binding>,
    by_client: HashMap<ClientKey, Ipv4Addr>,
    /// Next address to try per pool (keyed by pool start), so allocation does not rescan
    /// the used part of a big pool for every client.
    cursors: HashMap<Ipv4Addr, u32>,
}

/// What a lease records about its client besides its key.
#[derive(Debug, Clone, Default)]
pub struct ClientFacts {
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
}

/// Addresses that dynamic allocation must never hand out (reservations of other hosts).
pub type Reserved = HashSet<Ipv4Addr>;

impl LeaseTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild from stored records (address order; later state wins per address).
    pub fn restore(records: &[LeaseRecord]) -> Self {
        let mut t = LeaseTable::new();
        for r in records {
            let Some(client) = ClientKey::from_hex(&r.client_id) else {
                continue;
            };
            let state = match r.state {
                LeaseState::Bound => BindState::Bound,
                LeaseState::Released => BindState::Released,
                LeaseState::Declined => BindState::Declined,
                LeaseState::Expired => BindState::Expired,
            };
            if state != BindState::Declined {
                t.by_client.insert(client.clone(), r.ip);
            }
            t.by_ip.insert(
                r.ip,
                Binding {
                    client,
                    mac: r.mac,
                    hostname: r.hostname.clone(),
                    state,
                    starts: r.starts,
                    ends: r.ends,
                },
            );
        }
        t
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<&Binding> {
        self.by_ip.get(&ip)
    }

    pub fn address_of(&self, client: &ClientKey) -> Option<Ipv4Addr> {
        self.by_client.get(client).copied()
    }

    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Addresses bound to `mac` and not expired at `now`.
    pub fn bound_addresses_of(&self, mac: MacAddr, now: u64) -> Vec<Ipv4Addr> {
        let mut v: Vec<Ipv4Addr> = self
            .by_ip
            .iter()
            .filter(|(_, b)| b.mac == Some(mac) && b.state == BindState::Bound && b.ends > now)
            .map(|(ip, _)| *ip)
            .collect();
        v.sort();
        v
    }

    /// Active bindings (bound and not expired) at `now`.
    pub fn count_bound(&self, now: u64) -> usize {
        self.by_ip
            .values()
            .filter(|b| b.state == BindState::Bound && b.ends > now)
            .count()
    }

    /// May `client` be given `ip` at `now`?
    pub fn available_for(&self, ip: Ipv4Addr, client: &ClientKey, now: u64) -> bool {
        match self.by_ip.get(&ip) {
            None => true,
            Some(b) if b.state == BindState::Declined => !b.holds_address(now),
            Some(b) => &b.client == client || !b.holds_address(now),
        }
    }

    /// Choose an address for `client` in `subnet`. `reserved` addresses belong to other hosts.
    pub fn allocate(
        &mut self,
        subnet: &Subnet,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        reserved: &Reserved,
        now: u64,
    ) -> Option<Ipv4Addr> {
        let in_pool = |ip: Ipv4Addr| subnet.pools.iter().any(|p| p.contains(ip));
        if let Some(ip) = self.address_of(client)
            && in_pool(ip)
            && !reserved.contains(&ip)
            && self.available_for(ip, client, now)
        {
            return Some(ip);
        }
        if let Some(ip) = requested
            && in_pool(ip)
            && !reserved.contains(&ip)
            && self.available_for(ip, client, now)
        {
            return Some(ip);
        }
        // Never-used addresses first (cheap, via the cursor), then reusable ones.
        for pool in &subnet.pools {
            if let Some(ip) = self.next_unused(pool, reserved) {
                return Some(ip);
            }
        }
        for pool in &subnet.pools {
            let found = pool_addresses(pool).find(|ip| !reserved.contains(ip) && self.available_for(*ip, client, now));
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn next_unused(&mut self, pool: &Pool, reserved: &Reserved) -> Option<Ipv4Addr> {
        let (start, end) = (u32::from(pool.start), u32::from(pool.end));
        let cursor = self.cursors.entry(pool.start).or_insert(start);
        while *cursor <= end {
            let ip = Ipv4Addr::from(*cursor);
            if !self.by_ip.contains_key(&ip) && !reserved.contains(&ip) {
                return Some(ip);
            }
            *cursor = match cursor.checked_add(1) {
                Some(c) => c,
                None => break,
            };
        }
        None
    }

    /// Hold `ip` for `client` until `now + hold`. An existing binding of the same client is
    /// kept as it is (re-offering a bound address must not shorten its lease).
    pub fn offer(&mut self, ip: Ipv4Addr, client: &ClientKey, mac: Option<MacAddr>, hold: u32, now: u64) {
        if let Some(b) = self.by_ip.get(&ip)
            && &b.client == client
            && b.state == BindState::Bound
            && b.ends > now
        {
            return;
        }
        self.set(
            ip,
            Binding {
                client: client.clone(),
                mac,
                hostname: None,
                state: BindState::Offered,
                starts: now,
                ends: now + u64::from(hold),
            },
        );
    }

    /// Forget an offer made to `client` (it chose another server).
    pub fn withdraw_offer(&mut self, client: &ClientKey) {
        if let Some(ip) = self.by_client.get(client).copied()
            && let Some(b) = self.by_ip.get(&ip)
            && b.state == BindState::Offered
        {
            self.by_ip.remove(&ip);
            self.by_client.remove(client);
        }
    }

    /// Bind `ip` to `client` for `lease` seconds; returns the record to persist.
    pub fn bind(
        &mut self,
        ip: Ipv4Addr,
        client: &ClientKey,
        facts: ClientFacts,
        lease: u32,
        now: u64,
        site: &str,
    ) -> LeaseRecord {
        let ClientFacts { mac, hostname } = facts;
        let b = Binding {
            client: client.clone(),
            mac,
            hostname,
            state: BindState::Bound,
            starts: now,
            ends: now + u64::from(lease),
        };
        self.set(ip, b);
        self.record(ip, site).expect("just inserted")
    }

    /// The client gave the address back; returns the record to persist, if it was the client's.
    pub fn release(&mut self, ip: Ipv4Addr, client: &ClientKey, now: u64, site: &str) -> Option<LeaseRecord> {
        let b = self.by_ip.get_mut(&ip)?;
        if &b.client != client || b.state != BindState::Bound {
            return None;
        }
        b.state = BindState::Released;
        b.ends = now;
        self.record(ip, site)
    }

    /// The client found the address in use: quarantine it for `quarantine` seconds and stop
    /// associating it with the client (so its next DISCOVER gets another address).
    pub fn decline(
        &mut self,
        ip: Ipv4Addr,
        client: &ClientKey,
        quarantine: u32,
        now: u64,
        site: &str,
    ) -> Option<LeaseRecord> {
        let b = self.by_ip.get_mut(&ip)?;
        if &b.client != client || !matches!(b.state, BindState::Offered | BindState::Bound) {
            return None;
        }
        b.state = BindState::Declined;
        b.starts = now;
        b.ends = now + u64::from(quarantine);
        self.by_client.remove(client);
        self.record(ip, site)
    }

    fn set(&mut self, ip: Ipv4Addr, b: Binding) {
        if let Some(old) = self.by_ip.get(&ip)
            && old.client != b.client
            && self.by_client.get(&old.client) == Some(&ip)
        {
            self.by_client.remove(&old.client);
        }
        if let Some(prev_ip) = self.by_client.insert(b.client.clone(), ip)
            && prev_ip != ip
            && let Some(prev) = self.by_ip.get(&prev_ip)
            && prev.state == BindState::Offered
        {
            // A client holds one offer at a time; drop the stale one.
            self.by_ip.remove(&prev_ip);
        }
        self.by_ip.insert(ip, b);
    }

    fn record(&self, ip: Ipv4Addr, site: &str) -> Option<LeaseRecord> {
        let b = self.by_ip.get(&ip)?;
        let state = match b.state {
            BindState::Bound => LeaseState::Bound,
            BindState::Released => LeaseState::Released,
            BindState::Declined => LeaseState::Declined,
            BindState::Expired => LeaseState::Expired,
            BindState::Offered => return None,
        };
        Some(LeaseRecord {
            ip,
            client_id: b.client.to_hex(),
            mac: b.mac,
            hostname: b.hostname.clone(),
            state,
            starts: b.starts,
            ends: b.ends,
            site: site.to_string(),
        })
    }
}

fn pool_addresses(pool: &Pool) -> impl Iterator<Item = Ipv4Addr> {
    (u32::from(pool.start)..=u32::from(pool.end)).map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(pools: &[(&str, &str)]) -> Subnet {
        Subnet {
            prefix: "10.0.0.0/24".parse().unwrap(),
            pools: pools
                .iter()
                .map(|(s, e)| Pool {
                    start: s.parse().unwrap(),
                    end: e.parse().unwrap(),
                })
                .collect(),
            router: None,
            dns: vec![],
            domain: None,
            lease_time: 3600,
            max_lease_time: 3600,
        }
    }
    fn key(n: u8) -> ClientKey {
        ClientKey(vec![1, 0, 0, 0, 0, 0, n])
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn allocates_in_order_and_skips_offered_and_reserved() {
        let s = subnet(&[("10.0.0.10", "10.0.0.12")]);
        let mut t = LeaseTable::new();
        let reserved: Reserved = [ip("10.0.0.11")].into();
        let a = t.allocate(&s, &key(1), None, &reserved, 0).unwrap();
        assert_eq!(a, ip("10.0.0.10"));
        t.offer(a, &key(1), None, 30, 0);
        let b = t.allocate(&s, &key(2), None, &reserved, 0).unwrap();
        assert_eq!(b, ip("10.0.0.12"), "10.0.0.11 is reserved for another host");
        t.offer(b, &key(2), None, 30, 0);
        assert_eq!(t.allocate(&s, &key(3), None, &reserved, 0), None, "pool exhausted");
        // The same client asking again gets the same offer.
        assert_eq!(t.allocate(&s, &key(1), None, &reserved, 0), Some(a));
    }

    #[test]
    fn expired_offers_and_leases_are_reused_and_previous_address_preferred() {
        let s = subnet(&[("10.0.0.10", "10.0.0.11")]);
        let mut t = LeaseTable::new();
        let none = Reserved::new();
        let a = t.allocate(&s, &key(1), None, &none, 0).unwrap();
        t.bind(a, &key(1), ClientFacts::default(), 100, 0, "s");
        let b = t.allocate(&s, &key(2), None, &none, 0).unwrap();
        t.offer(b, &key(2), None, 30, 0);
        assert_eq!(
            t.allocate(&s, &key(3), None, &none, 20),
            None,
            "lease and offer still held"
        );
        // At t=60 the offer to key 2 lapsed: key 3 may take it.
        assert_eq!(t.allocate(&s, &key(3), None, &none, 60), Some(b));
        // At t=200 key 1's lease has expired, but key 1 itself still gets it back first.
        assert_eq!(t.allocate(&s, &key(1), None, &none, 200), Some(a));
    }

    #[test]
    fn requested_address_is_honoured_when_free() {
        let s = subnet(&[("10.0.0.10", "10.0.0.20")]);
        let mut t = LeaseTable::new();
        let none = Reserved::new();
        assert_eq!(
            t.allocate(&s, &key(1), Some(ip("10.0.0.15")), &none, 0),
            Some(ip("10.0.0.15"))
        );
        t.bind(ip("10.0.0.15"), &key(1), ClientFacts::default(), 100, 0, "s");
        assert_ne!(
            t.allocate(&s, &key(2), Some(ip("10.0.0.15")), &none, 0),
            Some(ip("10.0.0.15"))
        );
        assert_eq!(
            t.allocate(&s, &key(2), Some(ip("10.0.1.1")), &none, 0),
            Some(ip("10.0.0.10")),
            "outside the pool is ignored"
        );
    }

    #[test]
    fn release_frees_and_decline_quarantines() {
        let s = subnet(&[("10.0.0.10", "10.0.0.10")]);
        let mut t = LeaseTable::new();
        let none = Reserved::new();
        let a = t.bind(ip("10.0.0.10"), &key(1), ClientFacts::default(), 100, 0, "s").ip;
        assert!(t.release(a, &key(2), 5, "s").is_none(), "only the owner may release");
        let rec = t.release(a, &key(1), 5, "s").unwrap();
        assert_eq!(rec.state, LeaseState::Released);
        assert_eq!(
            t.allocate(&s, &key(2), None, &none, 6),
            Some(a),
            "released address is reusable"
        );
        t.bind(a, &key(2), ClientFacts::default(), 100, 6, "s");
        let rec = t.decline(a, &key(2), 1000, 7, "s").unwrap();
        assert_eq!(rec.state, LeaseState::Declined);
        assert_eq!(
            t.allocate(&s, &key(2), None, &none, 8),
            None,
            "quarantined, even for the decliner"
        );
        assert_eq!(t.allocate(&s, &key(3), None, &none, 1008), Some(a), "quarantine over");
    }

    #[test]
    fn restore_rebuilds_bindings_from_records() {
        let mut t = LeaseTable::new();
        let r1 = t.bind(
            ip("10.0.0.10"),
            &key(1),
            ClientFacts {
                mac: None,
                hostname: Some("h".into()),
            },
            100,
            0,
            "s",
        );
        let r2 = t.bind(ip("10.0.0.11"), &key(2), ClientFacts::default(), 100, 0, "s");
        let r2 = t.release(r2.ip, &key(2), 1, "s").unwrap();
        let t2 = LeaseTable::restore(&[r1, r2]);
        assert_eq!(t2.address_of(&key(1)), Some(ip("10.0.0.10")));
        assert_eq!(t2.get(ip("10.0.0.11")).unwrap().state, BindState::Released);
        assert_eq!(t2.count_bound(50), 1);
    }

    #[test]
    fn a_client_holds_one_offer_at_a_time() {
        let s = subnet(&[("10.0.0.10", "10.0.0.20")]);
        let mut t = LeaseTable::new();
        let none = Reserved::new();
        t.offer(ip("10.0.0.10"), &key(1), None, 30, 0);
        t.offer(ip("10.0.0.15"), &key(1), None, 30, 0);
        assert!(t.get(ip("10.0.0.10")).is_none());
        assert_eq!(
            t.allocate(&s, &key(2), None, &none, 0),
            Some(ip("10.0.0.10")),
            "the stale offer was freed"
        );
    }
}
