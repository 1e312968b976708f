//! The pair's replication messages: one JSON object per line over the TLS link. Pure:
//! `encode` and `decode` work on bytes; the link reads lines with a length limit.
//!
//! A connection is `Hello` each way, then each side's full dump (every host, certificate
//! and seed record it has), `Synced`, and from then on each local change as it becomes
//! durable. The receiver merges every record (`inventory::merge`, `CertRecord::merge`), so order and repetition do not
//! matter; the dump on every connect is the anti-entropy that repairs anything a broken
//! connection lost.

use crate::inventory::HostRecord;
use crate::nocloud::Seed;
use crate::pki::registry::CertRecord;
use serde::{Deserialize, Serialize};

/// The longest line accepted (a host record with its history is a few tens of KiB).
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    Hello {
        site: String,
        server: String,
    },
    Host(Box<HostRecord>),
    Certificate(CertRecord),
    Seed {
        token: String,
        seed: Seed,
    },
    /// The sender's full dump is complete.
    Synced,
    /// Nothing to say, and still here: sent when the link has been quiet for a while, so
    /// that the receiver can tell a quiet partner from a dead or silent connection.
    Keepalive,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("a replication message longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("an unreadable replication message: {0}")]
    Bad(String),
}

/// One message as a line.
pub fn encode(m: &Message) -> Vec<u8> {
    let mut v = serde_json::to_vec(m).expect("replication messages serialize");
    v.push(b'\n');
    v
}

/// One line (without its newline) as a message.
pub fn decode(line: &[u8]) -> Result<Message, WireError> {
    if line.len() > MAX_LINE {
        return Err(WireError::TooLong);
    }
    serde_json::from_slice(line).map_err(|e| WireError::Bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let r = crate::inventory::transition::new_record("52:54:00:00:00:01".parse().unwrap(), 5);
        for m in [
            Message::Hello {
                site: "dc1".into(),
                server: "abc".into(),
            },
            Message::Host(Box::new(r)),
            Message::Synced,
            Message::Keepalive,
        ] {
            let bytes = encode(&m);
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert_eq!(bytes.iter().filter(|b| **b == b'\n').count(), 1, "one line");
            assert_eq!(decode(&bytes[..bytes.len() - 1]).unwrap(), m);
        }
        assert!(matches!(decode(b"{\"nope\": 1}"), Err(WireError::Bad(_))));
        assert!(matches!(decode(&vec![b' '; MAX_LINE + 1]), Err(WireError::TooLong)));
    }
}
