//! The failover wire format (pure), as draft-ietf-dhc-failover-12 defines it and ISC dhcpd
//! 4.4 speaks it over TCP (port 647 by default).
//!
//! A message is a 12-byte header — length (u16, the whole message), type (u8), payload
//! offset (u8, where the options start; 12 unless a sender adds header bytes), time (u32,
//! the sender's clock), xid (u32) — followed by options, each a u16 code, a u16 length and
//! the data. Numbers are big-endian. Messages are 12 to 2048 bytes.
//!
//! Decoding is strict where ISC is strict (a peer that would reject a message should not
//! have it accepted here either): an option may appear once, fixed-size options must have
//! their exact size, the message digest must be last. Unknown option codes are kept (and
//! re-encoded) rather than dropped, so a decode followed by an encode gives back the same
//! bytes. Nothing here panics on any input.

use std::net::Ipv4Addr;

pub const HEADER_LEN: usize = 12;
pub const MIN_MESSAGE: usize = 12;
pub const MAX_MESSAGE: usize = 2048;
pub const DEFAULT_PORT: u16 = 647;
/// The protocol version ISC dhcpd sends in CONNECT.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the hash bucket assignment (256 buckets, one bit each).
pub const HBA_LEN: usize = 32;

/// Message types (draft-12 section 6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    PoolReq = 1,
    PoolResp = 2,
    BndUpd = 3,
    BndAck = 4,
    Connect = 5,
    ConnectAck = 6,
    UpdReqAll = 7,
    UpdDone = 8,
    UpdReq = 9,
    State = 10,
    Contact = 11,
    Disconnect = 12,
}

impl MessageType {
    pub const ALL: [MessageType; 12] = [
        MessageType::PoolReq,
        MessageType::PoolResp,
        MessageType::BndUpd,
        MessageType::BndAck,
        MessageType::Connect,
        MessageType::ConnectAck,
        MessageType::UpdReqAll,
        MessageType::UpdDone,
        MessageType::UpdReq,
        MessageType::State,
        MessageType::Contact,
        MessageType::Disconnect,
    ];

    pub fn from_u8(v: u8) -> Option<MessageType> {
        MessageType::ALL.iter().copied().find(|t| *t as u8 == v)
    }

    pub fn name(self) -> &'static str {
        match self {
            MessageType::PoolReq => "POOLREQ",
            MessageType::PoolResp => "POOLRESP",
            MessageType::BndUpd => "BNDUPD",
            MessageType::BndAck => "BNDACK",
            MessageType::Connect => "CONNECT",
            MessageType::ConnectAck => "CONNECTACK",
            MessageType::UpdReqAll => "UPDREQALL",
            MessageType::UpdDone => "UPDDONE",
            MessageType::UpdReq => "UPDREQ",
            MessageType::State => "STATE",
            MessageType::Contact => "CONTACT",
            MessageType::Disconnect => "DISCONNECT",
        }
    }
}

/// Binding status of a lease (draft-12 section 12.3; ISC's FTS_*).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum BindingStatus {
    Free = 1,
    Active = 2,
    Expired = 3,
    Released = 4,
    Abandoned = 5,
    Reset = 6,
    Backup = 7,
}

impl BindingStatus {
    pub fn from_u8(v: u8) -> Option<BindingStatus> {
        use BindingStatus::*;
        [Free, Active, Expired, Released, Abandoned, Reset, Backup]
            .into_iter()
            .find(|s| *s as u8 == v)
    }
}

/// Reject reasons (draft-12 section 12.21) provd sends or names in logs.
pub mod reject {
    pub const ILLEGAL_IP_ADDR: u8 = 1;
    pub const FATAL_CONFLICT: u8 = 2;
    pub const MISSING_BINDINFO: u8 = 3;
    pub const TIME_MISMATCH: u8 = 4;
    pub const INVALID_MCLT: u8 = 5;
    pub const MISC: u8 = 6;
    pub const DUPLICATE_CONNECTION: u8 = 7;
    pub const INVALID_PARTNER: u8 = 8;
    pub const VERSION_MISMATCH: u8 = 14;
    pub const OUTDATED_BIND_INFO: u8 = 15;
    pub const HBA_CONFLICT: u8 = 18;
}

/// Option codes (draft-12 section 12, as renumbered there and used by ISC 3.1+).
pub mod code {
    pub const ADDRESSES_TRANSFERRED: u16 = 1;
    pub const ASSIGNED_IP_ADDRESS: u16 = 2;
    pub const BINDING_STATUS: u16 = 3;
    pub const CLIENT_IDENTIFIER: u16 = 4;
    pub const CHADDR: u16 = 5;
    pub const CLTT: u16 = 6;
    pub const REPLY_OPTIONS: u16 = 7;
    pub const REQUEST_OPTIONS: u16 = 8;
    pub const DDNS: u16 = 9;
    pub const DELAYED_SERVICE: u16 = 10;
    pub const HBA: u16 = 11;
    pub const IP_FLAGS: u16 = 12;
    pub const LEASE_EXPIRY: u16 = 13;
    pub const MAX_UNACKED: u16 = 14;
    pub const MCLT: u16 = 15;
    pub const MESSAGE: u16 = 16;
    pub const MESSAGE_DIGEST: u16 = 17;
    pub const POTENTIAL_EXPIRY: u16 = 18;
    pub const RECEIVE_TIMER: u16 = 19;
    pub const PROTOCOL_VERSION: u16 = 20;
    pub const REJECT_REASON: u16 = 21;
    pub const RELATIONSHIP_NAME: u16 = 22;
    pub const SERVER_FLAGS: u16 = 23;
    pub const SERVER_STATE: u16 = 24;
    pub const STOS: u16 = 25;
    pub const TLS_REPLY: u16 = 26;
    pub const TLS_REQUEST: u16 = 27;
    pub const VENDOR_CLASS: u16 = 28;
    pub const VENDOR_OPTIONS: u16 = 29;
}

/// How an option's data is shaped (ISC's FT_* types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    U8,
    U16,
    U32,
    Ip,
    Bytes,
    /// DDNS: flags and an FQDN; kept as bytes.
    Ddns,
    Digest,
}

fn shape(code: u16) -> Option<Shape> {
    use code::*;
    Some(match code {
        ADDRESSES_TRANSFERRED | CLTT | LEASE_EXPIRY | MAX_UNACKED | MCLT | POTENTIAL_EXPIRY | RECEIVE_TIMER | STOS => {
            Shape::U32
        }
        ASSIGNED_IP_ADDRESS => Shape::Ip,
        BINDING_STATUS | DELAYED_SERVICE | PROTOCOL_VERSION | REJECT_REASON | SERVER_FLAGS | SERVER_STATE
        | TLS_REPLY | TLS_REQUEST => Shape::U8,
        IP_FLAGS => Shape::U16,
        CLIENT_IDENTIFIER | CHADDR | REPLY_OPTIONS | REQUEST_OPTIONS | HBA | MESSAGE | RELATIONSHIP_NAME
        | VENDOR_CLASS | VENDOR_OPTIONS => Shape::Bytes,
        DDNS => Shape::Ddns,
        MESSAGE_DIGEST => Shape::Digest,
        _ => return None,
    })
}

/// One option's value, typed by its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    U8(u8),
    U16(u16),
    U32(u32),
    Ip(Ipv4Addr),
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoOption {
    pub code: u16,
    pub value: Value,
}

/// A failover message. Options keep their order (byte-exact round trips).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: MessageType,
    pub time: u32,
    pub xid: u32,
    /// Header bytes beyond the 12 this protocol version defines (kept, not interpreted).
    pub extra_header: Vec<u8>,
    pub options: Vec<FoOption>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("message length {0} outside 12..=2048")]
    BadLength(usize),
    #[error("payload offset {offset} outside 12..={len}")]
    BadPayloadOffset { offset: usize, len: usize },
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("option at byte {at} runs past the end of the message")]
    OptionOverflow { at: usize },
    #[error("option {code} has {len} bytes; it must have {want}")]
    BadOptionSize { code: u16, len: usize, want: &'static str },
    #[error("option {0} appears twice")]
    Duplicate(u16),
    #[error("the message digest is not the last option")]
    DigestNotLast,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// For a TCP stream: the length of the message that starts `buf`, once its 2-byte length is
/// there. `Ok(None)`: not enough bytes yet. An impossible length is an error (the stream
/// cannot be resynchronised; the connection must be dropped).
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let len = be16(buf) as usize;
    if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&len) {
        return Err(DecodeError::BadLength(len));
    }
    Ok(Some(len))
}

impl Message {
    pub fn new(kind: MessageType, time: u32, xid: u32) -> Message {
        Message {
            kind,
            time,
            xid,
            extra_header: Vec::new(),
            options: Vec::new(),
        }
    }

    pub fn with(mut self, code: u16, value: Value) -> Message {
        self.options.push(FoOption { code, value });
        self
    }

    /// The message without option `code`.
    pub fn without(mut self, code: u16) -> Message {
        self.options.retain(|o| o.code != code);
        self
    }

    pub fn get(&self, code: u16) -> Option<&Value> {
        self.options.iter().find(|o| o.code == code).map(|o| &o.value)
    }

    pub fn u8(&self, code: u16) -> Option<u8> {
        match self.get(code)? {
            Value::U8(v) => Some(*v),
            _ => None,
        }
    }

    pub fn u16(&self, code: u16) -> Option<u16> {
        match self.get(code)? {
            Value::U16(v) => Some(*v),
            _ => None,
        }
    }

    pub fn u32(&self, code: u16) -> Option<u32> {
        match self.get(code)? {
            Value::U32(v) => Some(*v),
            _ => None,
        }
    }

    pub fn ip(&self, code: u16) -> Option<Ipv4Addr> {
        match self.get(code)? {
            Value::Ip(v) => Some(*v),
            _ => None,
        }
    }

    pub fn bytes(&self, code: u16) -> Option<&[u8]> {
        match self.get(code)? {
            Value::Bytes(v) => Some(v),
            _ => None,
        }
    }

    /// A text option (MESSAGE, VENDOR_CLASS...) as the partner wrote it, made safe to show
    /// on a terminal (`printable`: control and bidi characters replaced) and cut at 256
    /// characters. The partner, or an impostor at its address, chooses these bytes.
    pub fn text(&self, code: u16) -> Option<String> {
        let raw = String::from_utf8_lossy(self.bytes(code)?).into_owned();
        Some(crate::printable::printable(&raw).chars().take(256).collect())
    }

    /// The wire bytes. Fails only if the message would exceed 2048 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(&[0, 0, self.kind as u8, (HEADER_LEN + self.extra_header.len()) as u8]);
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.extra_header);
        for o in &self.options {
            out.extend_from_slice(&o.code.to_be_bytes());
            let data: Vec<u8> = match &o.value {
                Value::U8(v) => vec![*v],
                Value::U16(v) => v.to_be_bytes().to_vec(),
                Value::U32(v) => v.to_be_bytes().to_vec(),
                Value::Ip(v) => v.octets().to_vec(),
                Value::Bytes(b) => b.clone(),
            };
            if data.len() > u16::MAX as usize {
                return Err(DecodeError::BadLength(data.len()));
            }
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        if out.len() > MAX_MESSAGE || HEADER_LEN + self.extra_header.len() > u8::MAX as usize {
            return Err(DecodeError::BadLength(out.len()));
        }
        let len = (out.len() as u16).to_be_bytes();
        out[0..2].copy_from_slice(&len);
        Ok(out)
    }

    /// Decode exactly one message (`buf` is the whole message, as `frame_len` delimits it).
    pub fn decode(buf: &[u8]) -> Result<Message, DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::Truncated {
                need: HEADER_LEN,
                have: buf.len(),
            });
        }
        let len = be16(buf) as usize;
        if !(MIN_MESSAGE..=MAX_MESSAGE).contains(&len) {
            return Err(DecodeError::BadLength(len));
        }
        if buf.len() < len {
            return Err(DecodeError::Truncated {
                need: len,
                have: buf.len(),
            });
        }
        let buf = &buf[..len];
        let kind = MessageType::from_u8(buf[2]).ok_or(DecodeError::UnknownType(buf[2]))?;
        let offset = buf[3] as usize;
        if offset < HEADER_LEN || offset > len {
            return Err(DecodeError::BadPayloadOffset { offset, len });
        }
        let mut m = Message {
            kind,
            time: be32(&buf[4..8]),
            xid: be32(&buf[8..12]),
            extra_header: buf[HEADER_LEN..offset].to_vec(),
            options: Vec::new(),
        };
        let mut at = offset;
        let mut seen = std::collections::HashSet::new();
        while at < len {
            if at + 4 > len {
                return Err(DecodeError::OptionOverflow { at });
            }
            let code = be16(&buf[at..]);
            let olen = be16(&buf[at + 2..]) as usize;
            let start = at + 4;
            if start + olen > len {
                return Err(DecodeError::OptionOverflow { at });
            }
            let data = &buf[start..start + olen];
            at = start + olen;
            if !seen.insert(code) {
                return Err(DecodeError::Duplicate(code));
            }
            let exact = |want: usize, name: &'static str| {
                if olen == want {
                    Ok(())
                } else {
                    Err(DecodeError::BadOptionSize {
                        code,
                        len: olen,
                        want: name,
                    })
                }
            };
            let value = match shape(code) {
                Some(Shape::U8) => {
                    exact(1, "1")?;
                    Value::U8(data[0])
                }
                Some(Shape::U16) => {
                    exact(2, "2")?;
                    Value::U16(be16(data))
                }
                Some(Shape::U32) => {
                    exact(4, "4")?;
                    Value::U32(be32(data))
                }
                Some(Shape::Ip) => {
                    exact(4, "4")?;
                    Value::Ip(Ipv4Addr::new(data[0], data[1], data[2], data[3]))
                }
                Some(Shape::Digest) => {
                    if at != len {
                        return Err(DecodeError::DigestNotLast);
                    }
                    Value::Bytes(data.to_vec())
                }
                Some(Shape::Bytes) | Some(Shape::Ddns) | None => Value::Bytes(data.to_vec()),
            };
            if code == code::HBA && olen != HBA_LEN {
                return Err(DecodeError::BadOptionSize {
                    code,
                    len: olen,
                    want: "32",
                });
            }
            m.options.push(FoOption { code, value });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> Message {
        Message::new(MessageType::Connect, 1_795_000_000, 7)
            .with(code::RELATIONSHIP_NAME, Value::Bytes(b"dc1".to_vec()))
            .with(code::MAX_UNACKED, Value::U32(10))
            .with(code::RECEIVE_TIMER, Value::U32(30))
            .with(code::VENDOR_CLASS, Value::Bytes(b"provd".to_vec()))
            .with(code::PROTOCOL_VERSION, Value::U8(PROTOCOL_VERSION))
            .with(code::TLS_REQUEST, Value::U8(0))
            .with(code::MCLT, Value::U32(3600))
            .with(code::HBA, Value::Bytes(vec![0xff; HBA_LEN]))
    }

    fn bndupd() -> Message {
        Message::new(MessageType::BndUpd, 1_795_000_001, 8)
            .with(code::ASSIGNED_IP_ADDRESS, Value::Ip(Ipv4Addr::new(10, 0, 0, 5)))
            .with(code::BINDING_STATUS, Value::U8(BindingStatus::Active as u8))
            .with(code::CHADDR, Value::Bytes(vec![1, 0x52, 0x54, 0, 1, 2, 3]))
            .with(code::CLIENT_IDENTIFIER, Value::Bytes(vec![1, 0x52, 0x54, 0, 1, 2, 3]))
            .with(code::LEASE_EXPIRY, Value::U32(1_795_003_600))
            .with(code::POTENTIAL_EXPIRY, Value::U32(1_795_007_200))
            .with(code::STOS, Value::U32(1_795_000_001))
            .with(code::CLTT, Value::U32(1_795_000_001))
            .with(code::IP_FLAGS, Value::U16(0))
    }

    #[test]
    fn header_layout_is_the_drafts() {
        let b = Message::new(MessageType::Contact, 0x01020304, 0x0a0b0c0d)
            .encode()
            .unwrap();
        assert_eq!(b, [0, 12, 11, 12, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        let b = Message::new(MessageType::State, 0, 1)
            .with(code::SERVER_STATE, Value::U8(2))
            .with(code::SERVER_FLAGS, Value::U8(0))
            .with(code::STOS, Value::U32(0x11223344))
            .encode()
            .unwrap();
        assert_eq!(
            &b[12..],
            [0, 24, 0, 1, 2, 0, 23, 0, 1, 0, 0, 25, 0, 4, 0x11, 0x22, 0x33, 0x44]
        );
        assert_eq!(be16(&b) as usize, b.len());
    }

    #[test]
    fn every_message_type_round_trips_byte_exactly() {
        for kind in MessageType::ALL {
            let mut m = bndupd();
            m.kind = kind;
            let bytes = m.encode().unwrap();
            let back = Message::decode(&bytes).unwrap();
            assert_eq!(back, m, "{}", kind.name());
            assert_eq!(back.encode().unwrap(), bytes);
        }
        let c = connect();
        assert_eq!(Message::decode(&c.encode().unwrap()).unwrap(), c);
        assert_eq!(c.u32(code::MCLT), Some(3600));
        assert_eq!(c.bytes(code::RELATIONSHIP_NAME), Some(&b"dc1"[..]));
    }

    #[test]
    fn unknown_options_and_extra_header_bytes_survive() {
        let mut m = connect().with(900, Value::Bytes(vec![9, 9]));
        m.extra_header = vec![0xaa, 0xbb];
        let bytes = m.encode().unwrap();
        assert_eq!(bytes[3], 14, "payload offset covers the extra header");
        assert_eq!(Message::decode(&bytes).unwrap().encode().unwrap(), bytes);
    }

    #[test]
    fn truncated_and_hostile_input_is_an_error_never_a_panic() {
        let good = bndupd().encode().unwrap();
        for cut in 0..good.len() {
            assert!(Message::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[2] = 13;
        assert_eq!(Message::decode(&bad), Err(DecodeError::UnknownType(13)));
        let mut bad = good.clone();
        bad[3] = 11;
        assert!(matches!(
            Message::decode(&bad),
            Err(DecodeError::BadPayloadOffset { .. })
        ));
        let mut bad = good.clone();
        bad[0..2].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(Message::decode(&bad), Err(DecodeError::BadLength(5000)));
        assert_eq!(frame_len(&bad), Err(DecodeError::BadLength(5000)));
        assert_eq!(frame_len(&good[..1]), Ok(None));
        assert_eq!(frame_len(&good), Ok(Some(good.len())));
        // An option length that runs past the message.
        let mut bad = Message::new(MessageType::State, 0, 0).encode().unwrap();
        bad.extend_from_slice(&[0, 24, 0, 9, 2]);
        let n = bad.len() as u16;
        bad[0..2].copy_from_slice(&n.to_be_bytes());
        assert!(matches!(Message::decode(&bad), Err(DecodeError::OptionOverflow { .. })));
        // Wrong fixed sizes, duplicates, a digest that is not last, a short HBA.
        let sized = |code: u16, data: &[u8]| {
            let mut b = Message::new(MessageType::BndUpd, 0, 0).encode().unwrap();
            b.extend_from_slice(&code.to_be_bytes());
            b.extend_from_slice(&(data.len() as u16).to_be_bytes());
            b.extend_from_slice(data);
            b
        };
        let fix = |mut b: Vec<u8>| {
            let n = b.len() as u16;
            b[0..2].copy_from_slice(&n.to_be_bytes());
            b
        };
        assert!(matches!(
            Message::decode(&fix(sized(code::MCLT, &[1, 2]))),
            Err(DecodeError::BadOptionSize { code: 15, .. })
        ));
        assert!(matches!(
            Message::decode(&fix(sized(code::HBA, &[0xff; 16]))),
            Err(DecodeError::BadOptionSize { code: 11, .. })
        ));
        let mut twice = sized(code::BINDING_STATUS, &[2]);
        twice.extend_from_slice(&[0, 3, 0, 1, 2]);
        assert_eq!(Message::decode(&fix(twice)), Err(DecodeError::Duplicate(3)));
        let mut digest_first = sized(code::MESSAGE_DIGEST, &[1; 16]);
        digest_first.extend_from_slice(&[0, 3, 0, 1, 2]);
        assert_eq!(Message::decode(&fix(digest_first)), Err(DecodeError::DigestNotLast));
        // A deterministic flood of garbage: errors or messages, never a panic.
        let mut x: u32 = 1;
        for _ in 0..20_000 {
            let n = (x % 64) as usize + 1;
            let mut b = Vec::with_capacity(n);
            for _ in 0..n {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                b.push((x >> 24) as u8);
            }
            if b.len() >= 2 {
                let l = (b.len() as u16).to_be_bytes();
                b[0] = l[0];
                b[1] = l[1];
            }
            let _ = Message::decode(&b);
        }
    }

    #[test]
    fn oversized_messages_are_refused_on_encode() {
        let m = Message::new(MessageType::BndUpd, 0, 0).with(code::MESSAGE, Value::Bytes(vec![b'x'; 3000]));
        assert!(m.encode().is_err());
    }

    #[test]
    fn partner_text_is_cleaned_and_bounded_where_it_enters() {
        let evil = b"refused\x1b]0;owned\x07\x1b[2J\xe2\x80\xaecba".to_vec();
        let m = Message::new(MessageType::ConnectAck, 0, 1).with(code::MESSAGE, Value::Bytes(evil));
        let text = m.text(code::MESSAGE).unwrap();
        assert!(!crate::printable::has_unsafe(&text), "{text:?}");
        assert!(text.starts_with("refused\u{FFFD}]0;owned"), "{text:?}");
        let long = Message::new(MessageType::ConnectAck, 0, 1).with(code::MESSAGE, Value::Bytes(vec![b'a'; 1000]));
        assert_eq!(long.text(code::MESSAGE).unwrap().len(), 256);
        assert_eq!(m.text(code::VENDOR_CLASS), None);
    }
}
