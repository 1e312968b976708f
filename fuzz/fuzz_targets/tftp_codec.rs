//! Any TFTP datagram: decoding never panics, a decoded packet re-encodes to a packet that
//! decodes the same, and option negotiation never panics on what a client asked for.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provd::tftp::codec::{Packet, decode, encode, negotiate};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = decode(data) {
        let again = decode(&encode(&p)).expect("an encoded packet decodes");
        assert_eq!(again, p);
        if let Packet::Request { options, .. } = &p {
            let n = negotiate(options, Some(1 << 20), 2);
            assert!(n.block_size <= provd::tftp::codec::MAX_BLOCK_SIZE);
        }
    }
});
