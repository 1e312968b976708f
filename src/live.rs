//! A value the daemon replaces whole on `provd reload` (the config, the boot policy built
//! from it). Readers take a snapshot (`get`, an `Arc` clone under a read lock held for
//! nanoseconds) and use it to the end of their request, so a request never sees half of an
//! old config and half of a new one; a reload swaps the pointer once everything new is
//! built and checked.
//!
//! Must never: be held across an await (callers hold the `Arc`, not the lock).

use std::sync::{Arc, RwLock};

pub struct Live<T> {
    current: RwLock<Arc<T>>,
}

impl<T> Live<T> {
    pub fn new(value: Arc<T>) -> Self {
        Live {
            current: RwLock::new(value),
        }
    }

    /// The current value; later swaps do not change what the caller holds.
    pub fn get(&self) -> Arc<T> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Publish `value`: every later `get` sees it.
    pub fn set(&self, value: Arc<T>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_outlives_a_swap() {
        let live = Live::new(Arc::new(1));
        let before = live.get();
        live.set(Arc::new(2));
        assert_eq!(*before, 1);
        assert_eq!(*live.get(), 2);
    }
}
