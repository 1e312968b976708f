//! A bound on the lease writes the DHCP server has waiting for the store.
//!
//! Every ACK (and RELEASE/DECLINE) waits, queued, for the store's durable commit. Without
//! a bound, a client that sends REQUESTs at line rate grows that queue as fast as it sends. So: at most one write per address in flight (a renewal of an
//! address whose previous write has not finished yet is dropped: its client retransmits
//! and is answered once that write is durable), and at most `MAX_IN_FLIGHT` in all (a
//! flood of many addresses waits for the store instead of filling memory).
//!
//! Must never: let an ACK out before its write (it only ever removes work), or keep an
//! address blocked after its write finished (the permit frees it on drop, even on panic).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Writes in flight at once; group commit puts hundreds in one fsync, so this is far above
/// what a store needs to run at full speed, and small enough to be a few MiB at most.
pub const MAX_IN_FLIGHT: usize = 4096;

/// Why a write was not admitted (each has its counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// This address has a write in flight already.
    AddressInFlight,
    /// `MAX_IN_FLIGHT` writes are waiting.
    Full,
}

pub struct PersistGate {
    slots: Arc<Semaphore>,
    addresses: Arc<Mutex<HashSet<Ipv4Addr>>>,
}

impl Default for PersistGate {
    fn default() -> Self {
        Self::with_capacity(MAX_IN_FLIGHT)
    }
}

/// One admitted write; dropping it frees its address and its slot.
pub struct Permit {
    ip: Ipv4Addr,
    addresses: Arc<Mutex<HashSet<Ipv4Addr>>>,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.addresses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.ip);
    }
}

impl PersistGate {
    pub fn with_capacity(n: usize) -> Self {
        PersistGate {
            slots: Arc::new(Semaphore::new(n)),
            addresses: Arc::default(),
        }
    }

    /// Admit a write of `ip`'s lease, or say why not.
    pub fn admit(&self, ip: Ipv4Addr) -> Result<Permit, Busy> {
        let mut addresses = self.addresses.lock().unwrap_or_else(|p| p.into_inner());
        if addresses.contains(&ip) {
            return Err(Busy::AddressInFlight);
        }
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| Busy::Full)?;
        addresses.insert(ip);
        Ok(Permit {
            ip,
            addresses: self.addresses.clone(),
            _slot: slot,
        })
    }

    /// Writes in flight now.
    pub fn in_flight(&self) -> usize {
        self.addresses.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_write_per_address_and_a_cap_on_all() {
        let g = PersistGate::with_capacity(2);
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        let first = g.admit(a).unwrap();
        assert_eq!(g.admit(a).err(), Some(Busy::AddressInFlight));
        let second = g.admit(b).unwrap();
        assert_eq!(g.admit(Ipv4Addr::new(10, 0, 0, 3)).err(), Some(Busy::Full));
        assert_eq!(g.in_flight(), 2);
        drop(first);
        assert!(g.admit(a).is_ok(), "freed when its write finished");
        drop(second);
        assert_eq!(g.in_flight(), 0);
    }
}
