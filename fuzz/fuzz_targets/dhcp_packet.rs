//! Any datagram a machine on the boot network can send: parsing never panics, and what
//! parses yields the facts the engine and the boot policy read.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = provd::dhcp::packet::parse(data) {
        let _ = req.firmware_facts();
        let _ = req.is_booting();
        let _ = (req.giaddr(), req.ciaddr(), req.broadcast_flag());
    }
});
