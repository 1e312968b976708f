//! Event counters: each protocol owns a struct with one named atomic per counter (made by
//! `counter_set!`), so that counting on a hot path (a DHCP packet, a TFTP block) is one
//! relaxed add and never a lock, and a misspelt counter is a compile error rather than a
//! count silently lost. DHCP, TFTP and HTTP each own one; the API's stats view and
//! `/metrics` read snapshots keyed by the field names, which are the exported names.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A struct of named counters: `counter_set! { /// doc  pub struct DhcpStats { a, b } }`.
/// It gets `NAMES` (the exported names, in declaration order), `snapshot()` (name ->
/// value, what the stats view and `/metrics` print) and `get(name)` (for tests and views
/// that take a name from outside).
#[macro_export]
macro_rules! counter_set {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* $field:ident),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $crate::counters::Counter,)*
        }

        impl $name {
            /// Every counter's exported name.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            /// Every counter by its exported name.
            pub fn snapshot(&self) -> std::collections::BTreeMap<String, u64> {
                let mut out = std::collections::BTreeMap::new();
                $(out.insert(stringify!($field).to_string(), self.$field.get());)*
                out
            }

            /// One counter by its exported name (0 for a name the set lacks).
            pub fn get(&self, name: &str) -> u64 {
                match name {
                    $(stringify!($field) => self.$field.get(),)*
                    _ => 0,
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::counter_set! {
        /// Two counters.
        pub struct Pair { a, b }
    }

    #[test]
    fn counts_and_snapshots_by_field_name() {
        let c = Pair::default();
        c.a.inc();
        c.a.add(2);
        assert_eq!(c.get("a"), 3);
        assert_eq!(c.get("b"), 0);
        assert_eq!(c.get("nope"), 0);
        assert_eq!(Pair::NAMES, ["a", "b"]);
        let snap = c.snapshot();
        assert_eq!((snap.len(), snap["a"], snap["b"]), (2, 3, 0));
    }
}
