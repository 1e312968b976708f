//! The binding updates waiting for the partner, one per address (pure).
//!
//! While the partner is away (or slow to acknowledge), a client may renew many times; only
//! its latest binding matters to the partner, so a newer record replaces the queued one
//! for the same address in place (it keeps its turn). The queue therefore never holds more
//! records than the relationship has addresses, however long the partner is gone.

use crate::store::LeaseRecord;
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

#[derive(Debug, Default)]
pub struct UpdateQueue {
    order: VecDeque<Ipv4Addr>,
    latest: HashMap<Ipv4Addr, LeaseRecord>,
}

impl UpdateQueue {
    pub fn len(&self) -> usize {
        self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.latest.is_empty()
    }

    /// Queue `r` last, or replace the queued record of its address (keeping that turn).
    pub fn push_back(&mut self, r: LeaseRecord) {
        if self.latest.insert(r.ip, r.clone()).is_none() {
            self.order.push_back(r.ip);
        }
    }

    /// Queue `r` first (an update that was in flight when the connection went), unless a
    /// newer record of that address is already queued: the newer one wins.
    pub fn push_front(&mut self, r: LeaseRecord) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.latest.entry(r.ip) {
            e.insert(r.clone());
            self.order.push_front(r.ip);
        }
    }

    pub fn pop_front(&mut self) -> Option<LeaseRecord> {
        while let Some(ip) = self.order.pop_front() {
            if let Some(r) = self.latest.remove(&ip) {
                return Some(r);
            }
        }
        None
    }

    pub fn extend(&mut self, records: impl IntoIterator<Item = LeaseRecord>) {
        for r in records {
            self.push_back(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LeaseState;

    fn rec(last: u8, ends: u64) -> LeaseRecord {
        LeaseRecord {
            ip: Ipv4Addr::new(10, 0, 0, last),
            mac: Some(crate::mac::MacAddr([0x52, 0x54, 0, 0, 0, last])),
            client_id: format!("01525400{last:06x}"),
            hostname: None,
            state: LeaseState::Bound,
            starts: 0,
            ends,
            site: "s".into(),
            tstp: 0,
            tsfp: 0,
            cltt: 0,
            from_partner: false,
        }
    }

    #[test]
    fn renewals_of_one_address_coalesce_in_place() {
        let mut q = UpdateQueue::default();
        q.push_back(rec(1, 10));
        q.push_back(rec(2, 10));
        for ends in 11..1000 {
            q.push_back(rec(1, ends));
        }
        assert_eq!(q.len(), 2, "one record per address, however many renewals");
        let first = q.pop_front().unwrap();
        assert_eq!(
            (first.ip, first.ends),
            (Ipv4Addr::new(10, 0, 0, 1), 999),
            "kept its turn, newest record"
        );
        assert_eq!(q.pop_front().unwrap().ip, Ipv4Addr::new(10, 0, 0, 2));
        assert!(q.pop_front().is_none() && q.is_empty());
    }

    #[test]
    fn a_returned_in_flight_update_never_overrides_a_newer_one() {
        let mut q = UpdateQueue::default();
        q.push_back(rec(1, 50));
        q.push_front(rec(1, 20)); // the older one that was in flight
        q.push_front(rec(3, 20));
        assert_eq!(q.pop_front().unwrap().ip, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(q.pop_front().unwrap().ends, 50);
    }
}
