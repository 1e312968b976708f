//! A connection's last activity as milliseconds since a fixed start: cheap to store from
//! every read and write (one relaxed atomic), read by the idle watchdog. Shared by the
//! listener and the zero-copy path, which both move bytes on the same connection.

use std::sync::OnceLock;
use std::time::Instant;

pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}
