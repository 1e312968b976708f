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
use std::collections::HashMap;
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
    /// Failover: potential expiry sent to / acknowledged by the partner, last transaction.
    pub tstp: u64,
    pub tsfp: u64,
    pub cltt: u64,
    /// Learnt from a failover partner that is not authenticated (plain ISC failover), not
    /// granted here: it keeps the address from other clients but is no proof of who the
    /// client is (`holds_granted_here`).
    pub from_partner: bool,
}

impl Binding {
    /// Bound to `mac` and unexpired at `now`.
    fn bound_to(&self, mac: MacAddr, now: u64) -> bool {
        self.mac == Some(mac) && self.state == BindState::Bound && self.ends > now
    }

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
    /// Failover: free addresses that are the secondary's to allocate (BACKUP). Every other
    /// free address of a failover pool is the primary's (FREE).
    backup: std::collections::BTreeSet<Ipv4Addr>,
}

/// Which free addresses a server may hand out (failover ownership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner<'a> {
    /// No failover, or the partner is down and MCLT has passed: any free address.
    Any,
    /// The primary: free addresses of `pools` not in BACKUP (and any outside `pools`).
    Primary(&'a [Pool]),
    /// The secondary: BACKUP addresses of `pools` (and any outside `pools`).
    Secondary(&'a [Pool]),
}

/// What a lease records about its client besides its key.
#[derive(Debug, Clone, Default)]
pub struct ClientFacts {
    pub mac: Option<MacAddr>,
    pub hostname: Option<String>,
}

/// One address as the failover partner describes it in a BNDUPD.
#[derive(Debug, Clone, PartialEq)]
pub struct PartnerBinding {
    pub ip: Ipv4Addr,
    /// Bound (active), Released, Expired, Declined (abandoned), Free or Backup.
    pub state: LeaseState,
    pub client: Option<ClientKey>,
    pub mac: Option<MacAddr>,
    pub starts: u64,
    pub ends: u64,
    /// What the partner now knows: the potential expiry it acknowledged by this update.
    pub tsfp: u64,
    pub cltt: u64,
    /// The partner that sent it is authenticated (the failover conversation runs inside the
    /// pair's mutual TLS): its bindings count as leases for install secrets too.
    pub authenticated: bool,
}

/// Why a partner's update of an address is refused (answered with a BNDACK carrying reject
/// reason 15, outdated binding information, as ISC answers stale updates).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartnerConflict {
    #[error("{ip} is bound here to another client until {ends}")]
    OtherClient { ip: Ipv4Addr, ends: u64 },
    #[error("the update of {ip} (client last transaction {theirs}) is older than the binding here ({ours})")]
    Older { ip: Ipv4Addr, ours: u64, theirs: u64 },
    #[error(
        "{ip} is bound here until {ends}: an unauthenticated partner cannot end a binding granted here (the client must be seen active with the partner first)"
    )]
    EndsOurs { ip: Ipv4Addr, ends: u64 },
}

/// The conflict rule for partner updates (draft-ietf-dhc-failover-12 section 7.1.3 orders
/// conflicting information by the client's last transaction time; ISC dhcpd does the same).
/// Only a binding that is in force here (Bound, unexpired) and was not learnt from an
/// unauthenticated partner is defended:
/// - an update binding the address to a different client is refused;
/// - an update whose CLTT is older than ours is refused (outdated information);
/// - an update ending it (released, expired, free, backup, abandoned) is refused from an
///   unauthenticated partner: a real client that moved to the partner shows up first as an
///   active binding of the same client there (accepted, and then no longer defended), so
///   only an impostor or a confused partner ever sends this; a TLS-authenticated provd
///   partner with newer information is believed.
///
/// Everything else (a renewal of the same client seen by the partner, an address we hold
/// nothing for, a binding that expired or that the partner told us) is the partner's to
/// change.
pub fn partner_conflict(ours: Option<&Binding>, update: &PartnerBinding, now: u64) -> Option<PartnerConflict> {
    let ours = ours.filter(|b| !b.from_partner && b.state == BindState::Bound && b.ends > now)?;
    let ip = update.ip;
    let same_client = update.client.as_ref() == Some(&ours.client);
    match update.state {
        LeaseState::Bound if !same_client => Some(PartnerConflict::OtherClient { ip, ends: ours.ends }),
        _ if update.cltt < ours.cltt => Some(PartnerConflict::Older {
            ip,
            ours: ours.cltt,
            theirs: update.cltt,
        }),
        LeaseState::Bound => None,
        _ if !update.authenticated => Some(PartnerConflict::EndsOurs { ip, ends: ours.ends }),
        _ => None,
    }
}

/// The record of a free address and whose it is (FREE: primary's, BACKUP: secondary's).
fn ownership_record(ip: Ipv4Addr, state: LeaseState, now: u64, site: &str) -> LeaseRecord {
    LeaseRecord {
        ip,
        client_id: String::new(),
        mac: None,
        hostname: None,
        state,
        starts: now,
        ends: now,
        site: site.to_string(),
        tstp: 0,
        tsfp: 0,
        cltt: 0,
        from_partner: false,
    }
}

/// Addresses that dynamic allocation must never hand out (reservations of other hosts).
pub use crate::config::topology::Reserved;

impl LeaseTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuild from stored records (address order; later state wins per address).
    pub fn restore(records: &[LeaseRecord]) -> Self {
        let mut t = LeaseTable::new();
        for r in records {
            let state = match r.state {
                LeaseState::Bound => BindState::Bound,
                LeaseState::Released => BindState::Released,
                LeaseState::Declined => BindState::Declined,
                LeaseState::Expired => BindState::Expired,
                LeaseState::Free | LeaseState::Backup => {
                    t.forget(r.ip);
                    if r.state == LeaseState::Backup {
                        t.backup.insert(r.ip);
                    } else {
                        t.backup.remove(&r.ip);
                    }
                    continue;
                }
            };
            let Some(client) = ClientKey::from_hex(&r.client_id) else {
                continue;
            };
            t.backup.remove(&r.ip);
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
                    tstp: r.tstp,
                    tsfp: r.tsfp,
                    cltt: r.cltt,
                    from_partner: r.from_partner,
                },
            );
        }
        t
    }

    /// Drop whatever is known about `ip` (it became a free address).
    fn forget(&mut self, ip: Ipv4Addr) {
        if let Some(b) = self.by_ip.remove(&ip)
            && self.by_client.get(&b.client) == Some(&ip)
        {
            self.by_client.remove(&b.client);
        }
    }

    /// May a server with `owner` hand out `ip` (to a client that does not hold it yet)?
    pub fn may_take(&self, ip: Ipv4Addr, owner: Owner) -> bool {
        match owner {
            Owner::Any => true,
            Owner::Primary(pools) => !pools.iter().any(|p| p.contains(ip)) || !self.backup.contains(&ip),
            Owner::Secondary(pools) => !pools.iter().any(|p| p.contains(ip)) || self.backup.contains(&ip),
        }
    }

    pub fn is_backup(&self, ip: Ipv4Addr) -> bool {
        self.backup.contains(&ip)
    }

    /// Free addresses of `pools` (no binding that holds them at `now`): (primary's, backup).
    pub fn free_counts(&self, pools: &[Pool], now: u64) -> (usize, usize) {
        let (mut free, mut backup) = (0, 0);
        for pool in pools {
            for ip in pool_addresses(pool) {
                if self.by_ip.get(&ip).is_some_and(|b| b.holds_address(now)) {
                    continue;
                }
                if self.backup.contains(&ip) {
                    backup += 1;
                } else {
                    free += 1;
                }
            }
        }
        (free, backup)
    }

    /// Failover pool balancing (the primary): move free addresses to BACKUP until the
    /// secondary holds half of the free ones. Returns the records to persist and send.
    /// An expired binding moves only once `grace` (MCLT) has passed since its end: until then
    /// the partner may have extended it without our having heard yet.
    pub fn balance(&mut self, pools: &[Pool], now: u64, grace: u64, site: &str) -> Vec<LeaseRecord> {
        let (free, backup) = self.free_counts(pools, now);
        let want = (free + backup) / 2;
        let mut moved = Vec::new();
        if backup >= want {
            return moved;
        }
        let mut need = want - backup;
        // From the top of each pool: the primary allocates from the bottom (its cursor).
        'pools: for pool in pools.iter().rev() {
            let (start, end) = (u32::from(pool.start), u32::from(pool.end));
            for n in (start..=end).rev() {
                if need == 0 {
                    break 'pools;
                }
                let ip = Ipv4Addr::from(n);
                if self.backup.contains(&ip)
                    || self
                        .by_ip
                        .get(&ip)
                        .is_some_and(|b| b.holds_address(now) || b.ends + grace > now)
                {
                    continue;
                }
                self.forget(ip);
                self.backup.insert(ip);
                moved.push(ownership_record(ip, LeaseState::Backup, now, site));
                need -= 1;
            }
        }
        moved
    }

    /// The partner's view of one address (a BNDUPD), applied here unless it conflicts with
    /// a binding this server granted (`partner_conflict`). `client` is None for FREE and
    /// BACKUP. Returns the record to persist.
    pub fn apply_partner(
        &mut self,
        update: PartnerBinding,
        site: &str,
        now: u64,
    ) -> Result<LeaseRecord, PartnerConflict> {
        if let Some(conflict) = partner_conflict(self.by_ip.get(&update.ip), &update, now) {
            return Err(conflict);
        }
        let PartnerBinding {
            ip,
            state,
            client,
            mac,
            starts,
            ends,
            tsfp,
            cltt,
            authenticated,
        } = update;
        match (state, client) {
            (LeaseState::Free | LeaseState::Backup, _) | (_, None) => {
                self.forget(ip);
                if state == LeaseState::Backup {
                    self.backup.insert(ip);
                } else {
                    self.backup.remove(&ip);
                }
                let mut r = ownership_record(
                    ip,
                    if state == LeaseState::Backup {
                        LeaseState::Backup
                    } else {
                        LeaseState::Free
                    },
                    starts,
                    site,
                );
                r.tsfp = tsfp;
                Ok(r)
            }
            (state, Some(client)) => {
                self.backup.remove(&ip);
                let bind_state = match state {
                    LeaseState::Bound => BindState::Bound,
                    LeaseState::Released => BindState::Released,
                    LeaseState::Declined => BindState::Declined,
                    _ => BindState::Expired,
                };
                let hostname = self.by_ip.get(&ip).and_then(|b| b.hostname.clone());
                self.set(
                    ip,
                    Binding {
                        client,
                        mac,
                        hostname,
                        state: bind_state,
                        starts,
                        ends,
                        tstp: 0,
                        tsfp,
                        cltt,
                        from_partner: !authenticated,
                    },
                );
                Ok(self.record(ip, site).expect("just set"))
            }
        }
    }

    /// The partner acknowledged a binding update for `ip` up to `tsfp`.
    pub fn acknowledged(&mut self, ip: Ipv4Addr, tsfp: u64, site: &str) -> Option<LeaseRecord> {
        let b = self.by_ip.get_mut(&ip)?;
        b.tsfp = b.tsfp.max(tsfp);
        self.record(ip, site)
    }

    /// Note what is being sent to the partner for `ip` (tstp).
    pub fn sent(&mut self, ip: Ipv4Addr, tstp: u64) {
        if let Some(b) = self.by_ip.get_mut(&ip) {
            b.tstp = tstp;
        }
    }

    /// Every binding and BACKUP address in `pools`, as records (UPDREQALL answers).
    pub fn records_in(&self, pools: &[Pool], site: &str) -> Vec<LeaseRecord> {
        let mut ips: Vec<Ipv4Addr> = self
            .by_ip
            .keys()
            .chain(self.backup.iter().filter(|ip| !self.by_ip.contains_key(ip)))
            .filter(|ip| pools.iter().any(|p| p.contains(**ip)))
            .copied()
            .collect();
        ips.sort();
        ips.into_iter()
            .filter_map(|ip| self.failover_record(ip, site))
            .collect()
    }

    /// What the failover partner is told about `ip`: its binding, or that it is a BACKUP
    /// address (None for an offer or an address nothing is known of).
    pub fn failover_record(&self, ip: Ipv4Addr, site: &str) -> Option<LeaseRecord> {
        match self.by_ip.get(&ip) {
            Some(_) => self.record(ip, site),
            None if self.backup.contains(&ip) => Some(ownership_record(ip, LeaseState::Backup, 0, site)),
            None => None,
        }
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

    /// Whether `ip` is bound to `mac` and unexpired at `now` (one map lookup).
    pub fn holds(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.by_ip.get(&ip).is_some_and(|b| b.bound_to(mac, now))
    }

    /// Whether `ip` is bound to some client and unexpired at `now` (one map lookup).
    pub fn is_bound(&self, ip: Ipv4Addr, now: u64) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|b| b.state == BindState::Bound && b.ends > now)
    }

    /// Whether `ip` is bound to `mac` by this server's own ACK (or a restart's restore of
    /// one): a binding learnt from the unauthenticated failover partner does not count. What
    /// a host's install secrets are checked against.
    pub fn holds_granted_here(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        self.by_ip
            .get(&ip)
            .is_some_and(|b| !b.from_partner && b.bound_to(mac, now))
    }

    /// The address bound to `mac` as an Ethernet client without a client identifier (how
    /// PXE firmware and iPXE identify themselves): one map lookup, not a scan.
    pub fn address_of_mac(&self, mac: MacAddr, now: u64) -> Option<Ipv4Addr> {
        let mut key = vec![1u8];
        key.extend_from_slice(&mac.0);
        let ip = *self.by_client.get(&ClientKey(key))?;
        self.holds(ip, mac, now).then_some(ip)
    }

    /// Addresses bound to `mac` and not expired at `now` (a scan of the whole table).
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
        self.allocate_owned(subnet, client, requested, reserved, now, Owner::Any)
    }

    /// `allocate`, handing out only addresses `owner` may (failover).
    pub fn allocate_owned(
        &mut self,
        subnet: &Subnet,
        client: &ClientKey,
        requested: Option<Ipv4Addr>,
        reserved: &Reserved,
        now: u64,
        owner: Owner,
    ) -> Option<Ipv4Addr> {
        let in_pool = |ip: Ipv4Addr| subnet.pools.iter().any(|p| p.contains(ip));
        // Its own current binding: a client keeps it whoever's pool it came from.
        if let Some(ip) = self.address_of(client)
            && in_pool(ip)
            && !reserved.contains(&ip)
            && self.available_for(ip, client, now)
            && (self
                .by_ip
                .get(&ip)
                .is_some_and(|b| &b.client == client && b.holds_address(now))
                || self.may_take(ip, owner))
        {
            return Some(ip);
        }
        if let Some(ip) = requested
            && in_pool(ip)
            && !reserved.contains(&ip)
            && self.available_for(ip, client, now)
            && self.may_take(ip, owner)
        {
            return Some(ip);
        }
        if let Owner::Secondary(pools) = owner {
            // The secondary allocates from its BACKUP addresses only (within failover pools).
            let found = self.backup.iter().copied().find(|ip| {
                in_pool(*ip)
                    && pools.iter().any(|p| p.contains(*ip))
                    && !reserved.contains(ip)
                    && self.available_for(*ip, client, now)
            });
            if found.is_some() {
                return found;
            }
        }
        // Never-used addresses first (cheap, via the cursor), then reusable ones.
        for pool in &subnet.pools {
            if let Some(ip) = self.next_unused(pool, reserved, owner) {
                return Some(ip);
            }
        }
        for pool in &subnet.pools {
            let found = pool_addresses(pool)
                .find(|ip| !reserved.contains(ip) && self.available_for(*ip, client, now) && self.may_take(*ip, owner));
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// The first never-used address of `pool` that `owner` may take. The per-pool cursor
    /// only ever passes addresses that are used or reserved (facts that do not depend on
    /// who asks), so a partner-owned free address is skipped without being lost.
    fn next_unused(&mut self, pool: &Pool, reserved: &Reserved, owner: Owner) -> Option<Ipv4Addr> {
        let (start, end) = (u32::from(pool.start), u32::from(pool.end));
        let cursor = self.cursors.entry(pool.start).or_insert(start);
        while *cursor <= end {
            let ip = Ipv4Addr::from(*cursor);
            if !self.by_ip.contains_key(&ip) && !reserved.contains(&ip) {
                break;
            }
            *cursor = cursor.checked_add(1)?;
        }
        let from = *cursor;
        (from..=end)
            .map(Ipv4Addr::from)
            .find(|ip| !self.by_ip.contains_key(ip) && !reserved.contains(ip) && self.may_take(*ip, owner))
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
                tstp: 0,
                tsfp: 0,
                cltt: now,
                from_partner: false,
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
        // What the partner already acknowledged for this address stays (MCLT arithmetic).
        let tsfp = self
            .by_ip
            .get(&ip)
            .filter(|b| &b.client == client)
            .map_or(0, |b| b.tsfp);
        self.backup.remove(&ip);
        let b = Binding {
            client: client.clone(),
            mac,
            hostname,
            state: BindState::Bound,
            starts: now,
            ends: now + u64::from(lease),
            tstp: 0,
            tsfp,
            cltt: now,
            from_partner: false,
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
            tstp: b.tstp,
            tsfp: b.tsfp,
            cltt: b.cltt,
            from_partner: b.from_partner,
        })
    }
}

fn pool_addresses(pool: &Pool) -> impl Iterator<Item = Ipv4Addr> {
    (u32::from(pool.start)..=u32::from(pool.end)).map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests;
