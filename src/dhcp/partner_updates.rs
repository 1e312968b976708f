//! The lease changes waiting for the failover partner, coalesced by address.
//!
//! The DHCP server pushes every durable lease change of a failover site here; the failover
//! driver takes them in batches. Only the newest change per address is kept (the partner
//! needs the binding's current state, not its history), so however fast one client renews
//! and however slowly the partner reads, this holds at most one record per address of the
//! site's pools: memory an outside machine cannot grow.
//!
//! Must never: block the DHCP server (a push is a short lock and a wake-up), or drop the
//! newest change of an address.

use crate::store::LeaseRecord;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct PartnerUpdates {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    pending: Mutex<BTreeMap<Ipv4Addr, LeaseRecord>>,
    wake: Notify,
}

impl PartnerUpdates {
    pub fn new() -> Self {
        Self::default()
    }

    /// A durable change for the partner; replaces an older one of the same address still
    /// waiting.
    pub fn push(&self, record: LeaseRecord) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(record.ip, record);
        self.inner.wake.notify_one();
    }

    /// How many addresses have a change waiting.
    pub fn len(&self) -> usize {
        self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every waiting change (by address), waiting for one if there is none.
    pub async fn next_batch(&self) -> Vec<LeaseRecord> {
        loop {
            let batch: Vec<LeaseRecord> =
                std::mem::take(&mut *self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()))
                    .into_values()
                    .collect();
            if !batch.is_empty() {
                return batch;
            }
            // A push between the take above and this wait stores a permit: no wake-up lost.
            self.inner.wake.notified().await;
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
            client_id: "01aa".into(),
            mac: None,
            hostname: None,
            state: LeaseState::Bound,
            starts: 1,
            ends,
            site: "s".into(),
            tstp: 0,
            tsfp: 0,
            cltt: 1,
            from_partner: false,
        }
    }

    #[tokio::test]
    async fn a_flood_of_renewals_of_one_address_keeps_one_record_the_newest() {
        let u = PartnerUpdates::new();
        for ends in 0..100_000 {
            u.push(rec(5, ends));
        }
        u.push(rec(6, 7));
        assert_eq!(u.len(), 2);
        let batch = u.next_batch().await;
        assert_eq!(
            batch.iter().map(|r| (r.ip.octets()[3], r.ends)).collect::<Vec<_>>(),
            [(5, 99_999), (6, 7)]
        );
        assert!(u.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_on_a_push() {
        let u = PartnerUpdates::new();
        let reader = tokio::spawn({
            let u = u.clone();
            async move { u.next_batch().await }
        });
        tokio::task::yield_now().await;
        u.push(rec(9, 1));
        let batch = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(batch.len(), 1);
    }
}
