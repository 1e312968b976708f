//! Bytes from a failover partner (or anyone who reaches the port): framing and decoding
//! never panic, and a message that decodes encodes to bytes that decode to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provd::failover::codec::{Message, frame_len};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(n)) = frame_len(data)
        && n <= data.len()
    {
        if let Ok(m) = Message::decode(&data[..n]) {
            let bytes = m.encode().expect("a decoded message encodes");
            assert_eq!(Message::decode(&bytes).expect("re-decodes"), m);
        }
    }
    let _ = Message::decode(data);
});
