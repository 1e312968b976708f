//! Install tokens: 128 random bits from the kernel, hex encoded, compared in constant time.

use std::io::Read;

pub fn mint() -> String {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("the kernel's random source is readable");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Constant-time comparison: the time taken does not reveal how much of a guess was right.
pub fn equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
