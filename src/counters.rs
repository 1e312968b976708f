//! Named event counters: a fixed set of names chosen at start, each an atomic, so that
//! counting on a hot path (a DHCP packet, a TFTP block) is one relaxed add and never a lock.
//! DHCP, TFTP and HTTP each own one; the API's stats view and `/metrics` read snapshots.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counters {
    map: BTreeMap<&'static str, AtomicU64>,
}

impl Counters {
    pub fn new(names: &[&'static str]) -> Self {
        Counters {
            map: names.iter().map(|n| (*n, AtomicU64::new(0))).collect(),
        }
    }

    pub fn add(&self, name: &str, n: u64) {
        match self.map.get(name) {
            Some(c) => {
                c.fetch_add(n, Ordering::Relaxed);
            }
            // A misspelt name is a bug in provd, not in the input: loud in tests, ignored in
            // production rather than taking a listener down.
            None => debug_assert!(false, "unknown counter {name}"),
        }
    }

    pub fn inc(&self, name: &str) {
        self.add(name, 1);
    }

    pub fn get(&self, name: &str) -> u64 {
        self.map.get(name).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.map
            .iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_name() {
        let c = Counters::new(&["a", "b"]);
        c.inc("a");
        c.add("b", 5);
        assert_eq!((c.get("a"), c.get("b"), c.get("zzz")), (1, 5, 0));
        assert_eq!(c.snapshot().len(), 2);
    }
}
