//! Which of the two servers answers a client in NORMAL state (pure): RFC 3074 load
//! balancing, computed exactly as ISC dhcpd 4.4 computes it, because both halves of a mixed
//! provd/ISC pair must agree on every client or some clients get two answers and others none.
//!
//! - The key is the client identifier (option 61's data, type byte included) when the client
//!   sends one, else `chaddr` for `hlen` bytes (without the hardware type).
//! - The hash is RFC 3074's Pearson hash with its mixing table, but ISC walks the key from
//!   the **last** byte to the first (the RFC walks it forwards). That is the quirk: for any
//!   key longer than one byte the bucket differs from the RFC's, and ISC is what is deployed.
//! - The primary's hash bucket assignment (HBA, 256 bits) is also the secondary's: bit b of
//!   byte b/8 set means "bucket b is the primary's"; the secondary serves the buckets whose
//!   bit is clear. `split N` sets buckets 0..N (ISC refuses N > 255, so a split can never
//!   give the primary every bucket; an explicit HBA can).
//! - A client whose `secs` exceeds `load balance max seconds` is served by both (it has been
//!   waiting: its own server may be down). `load balance max seconds = 0` disables load
//!   balancing: both serve everyone.

use super::codec::HBA_LEN;

/// RFC 3074 section 6: a permutation of 0..=255 (a protocol constant).
const MIX: [u8; 256] = [
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232, 31, 32, 55, 60, 152, 58, 17, 237, 174,
    70, 160, 144, 220, 90, 57, 223, 59, 3, 18, 140, 111, 166, 203, 196, 134, 243, 124, 95, 222, 179, 197, 65, 180, 48,
    36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97, 16, 40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22,
    138, 29, 108, 244, 67, 207, 9, 178, 204, 74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5, 20, 113, 71, 35,
    128, 13, 182, 94, 25, 226, 227, 199, 75, 27, 41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115,
    241, 73, 88, 105, 39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84, 82, 163, 44, 139,
    228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239, 195, 42, 106, 198, 118, 112, 184, 172, 87, 2, 173, 117,
    176, 229, 247, 253, 137, 185, 99, 164, 102, 147, 45, 66, 231, 52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248,
    63, 240, 189, 93, 92, 51, 53, 183, 19, 171, 72, 50, 33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125,
    188, 213, 96, 235, 136, 208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4, 216, 131, 89, 21, 28, 133, 37, 153,
    149, 80, 170, 68, 6, 169, 234, 151,
];

/// ISC's bucket for a key: the Pearson hash seeded with the key's length, over the key
/// from its last byte to its first.
pub fn bucket(key: &[u8]) -> u8 {
    let mut h = key.len() as u8;
    for &b in key.iter().rev() {
        h = MIX[(h ^ b) as usize];
    }
    h
}

/// The bucket as RFC 3074 writes it (forwards): for comparison only; provd uses `bucket`.
pub fn rfc_bucket(key: &[u8]) -> u8 {
    let mut h = key.len() as u8;
    for &b in key {
        h = MIX[(h ^ b) as usize];
    }
    h
}

/// The HBA of `split N` (buckets 0..N are the primary's). It is computed where the
/// config is validated (the config states the split; the model carries the HBA), and used
/// here under its protocol name.
pub use crate::config::hba_from_split;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

/// The load-balancing key of a request: option 61's data if present, else chaddr[..hlen].
pub fn key<'a>(client_id: Option<&'a [u8]>, chaddr: &'a [u8]) -> &'a [u8] {
    client_id.unwrap_or(chaddr)
}

/// Does `role` answer this client in NORMAL state?
pub fn serves(role: Role, hba: &[u8; HBA_LEN], load_balance_max_secs: u16, secs: u16, key: &[u8]) -> bool {
    if load_balance_max_secs == 0 || secs > load_balance_max_secs {
        return true;
    }
    let b = bucket(key) as usize;
    let primary_owns = hba[b / 8] & (1 << (b % 8)) != 0;
    match role {
        Role::Primary => primary_owns,
        Role::Secondary => !primary_owns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixing_table_is_a_permutation_with_the_rfcs_values() {
        // Spot checks against RFC 3074's table, one per row of ten.
        let rows = [
            251, 181, 152, 57, 134, 36, 209, 210, 207, 34, 128, 41, 212, 62, 154, 205, 195, 173, 102, 246, 92, 101,
            202, 190, 216, 170,
        ];
        for (r, v) in rows.iter().enumerate() {
            assert_eq!(MIX[r * 10], *v, "row {r}");
        }
        assert_eq!((MIX[213], MIX[255], MIX[99]), (252, 151, 35));
        let mut seen = [false; 256];
        for v in MIX {
            assert!(!seen[v as usize], "{v} twice");
            seen[v as usize] = true;
        }
    }

    #[test]
    fn isc_hashes_backwards_which_differs_from_the_rfc_for_longer_keys() {
        // Hand-computed from the table: empty key -> seed 0 -> no step.
        assert_eq!(bucket(&[]), 0);
        // One byte: MIX[1 ^ 0] = MIX[1] = 175, both directions.
        assert_eq!(bucket(&[0]), 175);
        assert_eq!(rfc_bucket(&[0]), 175);
        // Two bytes [1, 2]: ISC: h=2; MIX[2^2]=MIX[0]=251; MIX[251^1]=MIX[250]=170.
        assert_eq!(bucket(&[1, 2]), 170);
        // RFC: h=2; MIX[2^1]=MIX[3]=215; MIX[215^2]=MIX[213]=252.
        assert_eq!(rfc_bucket(&[1, 2]), 252);
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_ne!(bucket(&mac), rfc_bucket(&mac), "the quirk matters for real MACs");
    }

    #[test]
    fn split_128_halves_the_buckets_and_the_two_servers_never_both_or_neither_answer() {
        let hba = hba_from_split(128);
        assert_eq!(&hba[..16], &[0xff; 16]);
        assert_eq!(&hba[16..], &[0; 16]);
        let mut primary = 0;
        for i in 0..4096u32 {
            let mac = [0x52, 0x54, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let p = serves(Role::Primary, &hba, 3, 0, &mac);
            let s = serves(Role::Secondary, &hba, 3, 0, &mac);
            assert!(p != s, "exactly one server answers {mac:?}");
            primary += p as u32;
        }
        assert!(
            (1600..2500).contains(&primary),
            "split 128 is roughly half: {primary}/4096"
        );
    }

    #[test]
    fn waiting_clients_and_disabled_balancing_are_served_by_both() {
        let hba = hba_from_split(0); // every bucket is the secondary's
        let mac = [0x52, 0x54, 0, 0, 0, 1];
        assert!(!serves(Role::Primary, &hba, 3, 3, &mac));
        assert!(serves(Role::Primary, &hba, 3, 4, &mac), "secs > max: both answer");
        assert!(serves(Role::Primary, &hba, 0, 0, &mac), "max 0 disables balancing");
        assert_eq!(key(Some(&[1, 2]), &mac), &[1, 2]);
        assert_eq!(key(None, &mac), &mac);
    }
}
