//! A line from the pair's replication link (mutual TLS, but the partner's bugs are input
//! too): decoding never panics, a decoded message re-encodes to one that decodes equal,
//! and merging a record with itself changes nothing (the pair converges).
#![no_main]
use libfuzzer_sys::fuzz_target;
use provd::replication::wire::{Message, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Ok(m) = decode(data) else {
        return;
    };
    let line = encode(&m);
    assert_eq!(line.last(), Some(&b'\n'));
    assert_eq!(decode(&line[..line.len() - 1]).expect("re-decodes"), m);
    match &m {
        Message::Host(h) => assert_eq!(provd::inventory::merge::host(h, h), **h),
        Message::Certificate(c) => assert_eq!(provd::pki::registry::CertRecord::merge(c, c), *c),
        _ => {}
    }
});
