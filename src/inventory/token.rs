//! Install tokens: minted by `crate::random::token` (128 random bits, hex), compared here in
//! constant time.

/// Constant-time comparison: the time taken does not reveal how much of a guess was right.
pub fn equal(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
