//! TFTP packets (RFC 1350) with option extension (RFC 2347: blksize 2348, timeout/tsize
//! 2349, windowsize 7440). Pure: bytes in, packets out, and back. No I/O.

use std::fmt;

pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Error codes from RFC 1350 §5 and RFC 2347.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    OptionNegotiation = 8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Read or write request: filename, mode, options in the order sent (names lower-cased).
    Request {
        write: bool,
        filename: String,
        mode: String,
        options: Vec<(String, String)>,
    },
    Data {
        block: u16,
        data: Vec<u8>,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
        message: String,
    },
    OAck {
        options: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Short,
    UnknownOpcode(u16),
    /// A string field with no NUL terminator, or not UTF-8.
    BadString,
    /// Options must come in name/value pairs.
    OddOptions,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Short => write!(f, "packet too short"),
            DecodeError::UnknownOpcode(op) => write!(f, "unknown opcode {op}"),
            DecodeError::BadString => write!(f, "unterminated or non-UTF-8 string"),
            DecodeError::OddOptions => write!(f, "option without value"),
        }
    }
}

pub fn decode(b: &[u8]) -> Result<Packet, DecodeError> {
    if b.len() < 2 {
        return Err(DecodeError::Short);
    }
    let op = u16::from_be_bytes([b[0], b[1]]);
    let rest = &b[2..];
    match op {
        OP_RRQ | OP_WRQ => {
            let mut fields = strings(rest)?;
            if fields.len() < 2 {
                return Err(DecodeError::Short);
            }
            if fields.len() % 2 != 0 {
                return Err(DecodeError::OddOptions);
            }
            let opts = fields.split_off(2);
            let options = opts
                .chunks(2)
                .map(|p| (p[0].to_ascii_lowercase(), p[1].clone()))
                .collect();
            let mut it = fields.into_iter();
            let filename = it.next().expect("checked");
            let mode = it.next().expect("checked").to_ascii_lowercase();
            Ok(Packet::Request {
                write: op == OP_WRQ,
                filename,
                mode,
                options,
            })
        }
        OP_DATA => {
            let block = u16_at(rest)?;
            Ok(Packet::Data {
                block,
                data: rest[2..].to_vec(),
            })
        }
        OP_ACK => Ok(Packet::Ack { block: u16_at(rest)? }),
        OP_ERROR => {
            let code = u16_at(rest)?;
            // Some clients omit the message's terminating NUL; accept what is there.
            let msg = &rest[2..];
            let msg = msg.split(|&c| c == 0).next().unwrap_or(&[]);
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(msg).into_owned(),
            })
        }
        OP_OACK => {
            let fields = strings(rest)?;
            if fields.len() % 2 != 0 {
                return Err(DecodeError::OddOptions);
            }
            Ok(Packet::OAck {
                options: fields
                    .chunks(2)
                    .map(|p| (p[0].to_ascii_lowercase(), p[1].clone()))
                    .collect(),
            })
        }
        other => Err(DecodeError::UnknownOpcode(other)),
    }
}

fn u16_at(b: &[u8]) -> Result<u16, DecodeError> {
    match b {
        [h, l, ..] => Ok(u16::from_be_bytes([*h, *l])),
        _ => Err(DecodeError::Short),
    }
}

/// NUL-terminated strings filling `b` exactly.
fn strings(b: &[u8]) -> Result<Vec<String>, DecodeError> {
    if b.is_empty() {
        return Ok(Vec::new());
    }
    if *b.last().expect("not empty") != 0 {
        return Err(DecodeError::BadString);
    }
    b[..b.len() - 1]
        .split(|&c| c == 0)
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| DecodeError::BadString))
        .collect()
}

pub fn encode(p: &Packet) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match p {
        Packet::Request {
            write,
            filename,
            mode,
            options,
        } => {
            out.extend_from_slice(&(if *write { OP_WRQ } else { OP_RRQ }).to_be_bytes());
            push_str(&mut out, filename);
            push_str(&mut out, mode);
            for (k, v) in options {
                push_str(&mut out, k);
                push_str(&mut out, v);
            }
        }
        Packet::Data { block, data } => {
            out.extend_from_slice(&OP_DATA.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
            out.extend_from_slice(data);
        }
        Packet::Ack { block } => {
            out.extend_from_slice(&OP_ACK.to_be_bytes());
            out.extend_from_slice(&block.to_be_bytes());
        }
        Packet::Error { code, message } => {
            out.extend_from_slice(&OP_ERROR.to_be_bytes());
            out.extend_from_slice(&code.to_be_bytes());
            push_str(&mut out, message);
        }
        Packet::OAck { options } => {
            out.extend_from_slice(&OP_OACK.to_be_bytes());
            for (k, v) in options {
                push_str(&mut out, k);
                push_str(&mut out, v);
            }
        }
    }
    out
}

/// A DATA packet header followed by `data`, without building a `Packet` (the hot path).
pub fn encode_data(block: u16, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(data);
}

pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    encode(&Packet::Error {
        code: code as u16,
        message: message.to_string(),
    })
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// The options a server grants, after clamping what the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub block_size: usize,
    pub window_size: u16,
    pub timeout_secs: u8,
    /// What goes in the OACK; empty means no OACK (the client asked for nothing we know).
    pub oack: Vec<(String, String)>,
}

pub const DEFAULT_BLOCK_SIZE: usize = 512;
/// RFC 2348 allows 8..=65464; cap at what fits one Ethernet frame without fragmentation
/// (1500 - IP 20 - UDP 8 - TFTP 4), which is also what iPXE and PXE ROMs ask for.
pub const MAX_BLOCK_SIZE: usize = 1468;
pub const MAX_WINDOW_SIZE: u16 = 64;
/// The longest retransmission timeout a client may negotiate (RFC 2349 allows 1..=255 s).
/// A transfer holds a slot for up to MAX_RETRIES of these: a client asking for 255 s could
/// otherwise pin slots for twenty minutes. A longer request is not acknowledged (RFC 2349:
/// the server omits an option it does not accept) and the default applies.
pub const MAX_TIMEOUT_SECS: u8 = 10;

pub fn negotiate(options: &[(String, String)], file_size: Option<u64>, default_timeout: u8) -> Negotiated {
    let mut n = Negotiated {
        block_size: DEFAULT_BLOCK_SIZE,
        window_size: 1,
        timeout_secs: default_timeout,
        oack: Vec::new(),
    };
    for (name, value) in options {
        match name.as_str() {
            "blksize" => {
                if let Ok(v) = value.parse::<usize>()
                    && v >= 8
                {
                    n.block_size = v.min(MAX_BLOCK_SIZE);
                    n.oack.push((name.clone(), n.block_size.to_string()));
                }
            }
            "tsize" => {
                // RFC 2349: in an RRQ the client sends 0 and the server answers the size.
                if let Some(size) = file_size {
                    n.oack.push((name.clone(), size.to_string()));
                }
            }
            "timeout" => {
                if let Ok(v) = value.parse::<u8>()
                    && (1..=MAX_TIMEOUT_SECS).contains(&v)
                {
                    n.timeout_secs = v;
                    n.oack.push((name.clone(), v.to_string()));
                }
            }
            "windowsize" => {
                if let Ok(v) = value.parse::<u16>()
                    && v >= 1
                {
                    n.window_size = v.min(MAX_WINDOW_SIZE);
                    n.oack.push((name.clone(), n.window_size.to_string()));
                }
            }
            // Unknown options are ignored, as RFC 2347 requires.
            _ => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_timeout_is_not_granted() {
        let opts = |t: &str| vec![("timeout".to_string(), t.to_string())];
        let n = negotiate(&opts("5"), None, 2);
        assert_eq!((n.timeout_secs, n.oack.len()), (5, 1));
        for t in ["255", "11", "0", "x"] {
            let n = negotiate(&opts(t), None, 2);
            assert_eq!((n.timeout_secs, n.oack.len()), (2, 0), "{t}");
        }
    }

    #[test]
    fn rrq_with_options_round_trips_byte_exact() {
        let bytes = b"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00";
        let p = decode(bytes).unwrap();
        assert_eq!(
            p,
            Packet::Request {
                write: false,
                filename: "undionly.kpxe".into(),
                mode: "octet".into(),
                options: vec![("tsize".into(), "0".into()), ("blksize".into(), "1468".into())]
            }
        );
        assert_eq!(encode(&p), bytes.to_vec());
    }

    #[test]
    fn data_ack_error_oack_round_trip() {
        for p in [
            Packet::Data {
                block: 65535,
                data: vec![1, 2, 3],
            },
            Packet::Ack { block: 0 },
            Packet::Error {
                code: 8,
                message: "option negotiation".into(),
            },
            Packet::OAck {
                options: vec![("tsize".into(), "1024".into())],
            },
        ] {
            assert_eq!(decode(&encode(&p)).unwrap(), p);
        }
        let mut v = Vec::new();
        encode_data(7, b"ab", &mut v);
        assert_eq!(v, b"\x00\x03\x00\x07ab");
    }

    #[test]
    fn hostile_packets_are_errors() {
        assert_eq!(decode(b""), Err(DecodeError::Short));
        assert_eq!(decode(b"\x00\x09"), Err(DecodeError::UnknownOpcode(9)));
        assert_eq!(decode(b"\x00\x01file"), Err(DecodeError::BadString));
        assert_eq!(
            decode(b"\x00\x01file\x00octet\x00tsize\x00"),
            Err(DecodeError::OddOptions)
        );
        assert_eq!(decode(b"\x00\x01\xff\xfe\x00octet\x00"), Err(DecodeError::BadString));
        assert_eq!(decode(b"\x00\x04\x01"), Err(DecodeError::Short));
        // An ERROR without the final NUL is still understood (PXE ROMs send this).
        assert_eq!(
            decode(b"\x00\x05\x00\x00abort").unwrap(),
            Packet::Error {
                code: 0,
                message: "abort".into()
            }
        );
        for n in 0..40 {
            let _ = decode(&b"\x00\x01undionly.kpxe\x00octet\x00tsize\x000\x00blksize\x001468\x00"[..n]);
        }
    }

    #[test]
    fn negotiation_clamps_and_ignores_unknown_options() {
        let opts = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        };
        let n = negotiate(
            &opts(&[
                ("blksize", "65464"),
                ("tsize", "0"),
                ("windowsize", "1000"),
                ("multicast", ""),
            ]),
            Some(4096),
            3,
        );
        assert_eq!(n.block_size, MAX_BLOCK_SIZE);
        assert_eq!(n.window_size, MAX_WINDOW_SIZE);
        assert_eq!(
            n.oack,
            opts(&[("blksize", "1468"), ("tsize", "4096"), ("windowsize", "64")]),
            "unknown 'multicast' is not acknowledged"
        );
        let n = negotiate(&opts(&[("blksize", "4"), ("timeout", "0")]), None, 3);
        assert_eq!((n.block_size, n.timeout_secs), (DEFAULT_BLOCK_SIZE, 3));
        assert!(
            n.oack.is_empty(),
            "invalid values are refused by leaving them out of the OACK"
        );
    }
}
