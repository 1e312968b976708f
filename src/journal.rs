//! The boot journal: a bounded, in-memory record of each step every machine took through
//! the boot chain (DHCP ACK with its boot file, TFTP files, HTTP assets, the boot-script
//! decision, kickstart fetches, installer callbacks), keyed by MAC.
//!
//! It is provd's own account of a boot, for operators (`/api/events`) and for the lab's
//! progress display and tests. Recording never blocks and never fails; the oldest entries
//! fall off when it is full. It is not durable: the store holds what must survive.

use crate::clock::unix_now;
use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::sync::Mutex;

const CAPACITY: usize = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEvent {
    pub at: u64,
    pub mac: Option<MacAddr>,
    pub ip: Option<Ipv4Addr>,
    /// dhcp-ack, tftp, http-asset, boot-script, kickstart, callback
    pub kind: String,
    pub detail: String,
}

/// Who holds an address now: the DHCP lease table answers it (TFTP and HTTP only see
/// addresses). A trait so the journal, which everything records into, depends on no
/// serving module (`dhcp::Leases` implements it).
pub trait AddressHolders: Send + Sync {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr>;
}

pub struct Journal {
    events: Mutex<VecDeque<BootEvent>>,
    holders: Box<dyn AddressHolders>,
}

impl Journal {
    pub fn new(holders: impl AddressHolders + 'static) -> Self {
        Journal {
            events: Mutex::new(VecDeque::new()),
            holders: Box::new(holders),
        }
    }

    pub fn record(&self, mac: Option<MacAddr>, ip: Option<Ipv4Addr>, kind: &str, detail: impl Into<String>) {
        let e = BootEvent {
            at: unix_now(),
            mac,
            ip,
            kind: kind.to_string(),
            detail: detail.into(),
        };
        let mut q = self.events.lock().expect("journal lock");
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(e);
    }

    /// Record an event seen from an address; the MAC comes from the lease table.
    pub fn record_ip(&self, ip: Ipv4Addr, kind: &str, detail: impl Into<String>) {
        self.record(self.holders.mac_of(ip), Some(ip), kind, detail);
    }

    /// Events, oldest first, optionally only one MAC's.
    pub fn events(&self, mac: Option<MacAddr>) -> Vec<BootEvent> {
        let q = self.events.lock().expect("journal lock");
        q.iter().filter(|e| mac.is_none() || e.mac == mac).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_mac_resolving_addresses_through_the_holders() {
        let m: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        struct OneLease(Ipv4Addr, MacAddr);
        impl AddressHolders for OneLease {
            fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
                (ip == self.0).then_some(self.1)
            }
        }
        let leases = OneLease(Ipv4Addr::new(10, 0, 0, 5), m);
        let j = Journal::new(leases);
        j.record(Some(m), None, "boot-script", "install");
        j.record_ip(Ipv4Addr::new(10, 0, 0, 5), "tftp", "undionly.kpxe");
        j.record_ip(Ipv4Addr::new(10, 0, 0, 6), "tftp", "other");
        let mine = j.events(Some(m));
        assert_eq!(
            mine.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
            ["boot-script", "tftp"]
        );
        assert_eq!(j.events(None).len(), 3);
    }
}
