//! A discovery report (`POST /discover/<mac>`, any machine with a lease can send one): the
//! JSON never panics the parser, and what `check` accepts is bounded and printable, since it
//! reaches `provd hosts show` on an operator's terminal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provd::inventory::facts::{HardwareFacts, MAX_ITEMS, MAX_TEXT};

fuzz_target!(|data: &[u8]| {
    let Ok(facts) = serde_json::from_slice::<HardwareFacts>(data) else {
        return;
    };
    if facts.check().is_err() {
        return;
    }
    assert!(facts.disks.len() <= MAX_ITEMS && facts.nics.len() <= MAX_ITEMS);
    let texts = facts.texts();
    for t in texts {
        assert!(t.len() <= MAX_TEXT);
        assert_eq!(provd::printable::printable(t), t, "accepted text with control characters: {t:?}");
    }
    // What is stored is what is shown later: the accepted report survives a round trip.
    let again: HardwareFacts = serde_json::from_slice(&serde_json::to_vec(&facts).unwrap()).unwrap();
    assert_eq!(again, facts);
});
