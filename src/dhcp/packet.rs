//! Incoming packet -> `Request`: a checked, typed view of what a client asked for.
//!
//! Pure: bytes in, value or error out, no I/O. Everything the rest of the server relies on
//! is checked here once, so that later code can index without fear:
//! - dhcproto 0.15 does not check the magic cookie (RFC 2131 §3) and its `chaddr()` slices by
//!   `hlen` without bounds, so a hostile `hlen > 16` would panic: both are checked on the
//!   raw bytes before decoding.
//! - Option 82 is kept as the raw bytes the relay sent, because RFC 3046 §2.2 wants it echoed
//!   unchanged, and re-encoding parsed sub-options could reorder or drop unknown ones.

use crate::mac::MacAddr;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};
use std::net::Ipv4Addr;

/// BOOTP fixed header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
pub const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
const RELAY_AGENT_INFO: u8 = 82;
/// RFC 5071 iPXE encapsulated options; its presence means the client is iPXE.
const IPXE_ENCAP: u8 = 175;
const CLIENT_UUID: u8 = 97;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("shorter than a DHCP header")]
    Truncated,
    #[error("bad magic cookie")]
    BadCookie,
    #[error("hardware address length over 16")]
    BadHlen,
    #[error("not a BOOTREQUEST")]
    NotRequest,
    #[error("options do not decode")]
    BadOptions,
    #[error("no DHCP message type (plain BOOTP is not served)")]
    NoMessageType,
}

/// The client's identity for lease purposes: option 61 when sent (RFC 2131 §4.2 says the
/// server must use it), otherwise hardware type + chaddr.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(pub Vec<u8>);

impl ClientKey {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
    pub fn from_hex(s: &str) -> Option<ClientKey> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
            .map(ClientKey)
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub msg: Message,
    pub msg_type: MessageType,
    pub client: ClientKey,
    pub mac: Option<MacAddr>,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub requested_lease: Option<u32>,
    pub hostname: Option<String>,
    /// Option 93, first value (RFC 4578 allows a list; firmware sends one).
    pub arch: Option<u16>,
    pub vendor_class: Option<Vec<u8>>,
    /// User class "iPXE" (option 77) or option 175 present.
    pub is_ipxe: bool,
    /// Raw option 82 payload, to echo.
    pub relay_info: Option<Vec<u8>>,
    /// Option 97 (RFC 4578 §2.3): the machine's SMBIOS UUID, as PXE firmware sends it.
    pub client_uuid: Option<String>,
    /// The IP source address the datagram came from (set by the receive loop; the codec
    /// never sees it). A relayed request is served only from a trusted relay.
    pub source: Option<Ipv4Addr>,
}

impl Request {
    pub fn giaddr(&self) -> Ipv4Addr {
        self.msg.giaddr()
    }
    pub fn ciaddr(&self) -> Ipv4Addr {
        self.msg.ciaddr()
    }
    pub fn broadcast_flag(&self) -> bool {
        self.msg.flags().broadcast()
    }
    /// What the boot policy needs to know about the firmware (`boot::firmware`).
    pub fn firmware_facts(&self) -> crate::boot::firmware::FirmwareFacts<'_> {
        crate::boot::firmware::FirmwareFacts {
            arch: self.arch,
            is_ipxe: self.is_ipxe,
            vendor_class: self.vendor_class.as_deref(),
        }
    }

    /// A network-booting client (firmware PXE, UEFI HTTP boot, or iPXE).
    pub fn is_booting(&self) -> bool {
        self.arch.is_some()
            || self.is_ipxe
            || self
                .vendor_class
                .as_deref()
                .is_some_and(|v| v.starts_with(b"PXEClient") || v.starts_with(b"HTTPClient"))
    }
}

pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
    if bytes.len() < HEADER_LEN {
        return Err(ParseError::Truncated);
    }
    if bytes[236..240] != MAGIC_COOKIE {
        return Err(ParseError::BadCookie);
    }
    let hlen = bytes[2] as usize;
    if hlen > 16 {
        return Err(ParseError::BadHlen);
    }
    if bytes[0] != 1 {
        return Err(ParseError::NotRequest);
    }
    // dhcproto stops quietly at an option that runs past the end; we call that malformed.
    if !options_well_formed(bytes) {
        return Err(ParseError::BadOptions);
    }
    // Decoding is expected not to panic after the checks above; catch_unwind is the second
    // line of defence so that one hostile packet can never take the listener down.
    let msg = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)))
        .map_err(|_| ParseError::BadOptions)?
        .map_err(|_| ParseError::BadOptions)?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(ParseError::NotRequest);
    }
    let opts = msg.opts();
    let msg_type = opts.msg_type().ok_or(ParseError::NoMessageType)?;

    let client = match opts.get(OptionCode::ClientIdentifier) {
        Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => ClientKey(id.clone()),
        _ => {
            let mut key = vec![u8::from(msg.htype())];
            key.extend_from_slice(&bytes[28..28 + hlen]);
            ClientKey(key)
        }
    };
    let mac = if hlen == 6 {
        MacAddr::from_chaddr(&bytes[28..34])
    } else {
        None
    };
    let requested_ip = match opts.get(OptionCode::RequestedIpAddress) {
        Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
        _ => None,
    };
    let server_id = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    let requested_lease = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(t)) => Some(*t),
        _ => None,
    };
    let hostname = match opts.get(OptionCode::Hostname) {
        // Shown to operators and stored: no terminal escapes from a client (`printable`).
        Some(DhcpOption::Hostname(h)) => Some(crate::printable::printable(h).into_owned()),
        _ => None,
    };
    let arch = match opts.get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(u16::from(*a)),
        _ => None,
    };
    let vendor_class = match opts.get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
        _ => None,
    };
    let user_class_ipxe = match opts.get(OptionCode::UserClass) {
        Some(DhcpOption::UserClass(u)) => user_class_has(u, b"iPXE"),
        _ => false,
    };
    let is_ipxe = user_class_ipxe || raw_option(bytes, IPXE_ENCAP).is_some();
    let relay_info = raw_option(bytes, RELAY_AGENT_INFO).map(<[u8]>::to_vec);
    let client_uuid = raw_option(bytes, CLIENT_UUID).and_then(format_uuid);

    Ok(Request {
        msg,
        msg_type,
        client,
        mac,
        requested_ip,
        server_id,
        requested_lease,
        hostname,
        arch,
        vendor_class,
        is_ipxe,
        relay_info,
        client_uuid,
        source: None,
    })
}

/// Option 97 is a type byte (0) followed by 16 bytes of UUID.
fn format_uuid(raw: &[u8]) -> Option<String> {
    let b = match raw {
        [0, rest @ ..] if rest.len() == 16 => rest,
        _ => return None,
    };
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Option 77 per RFC 3004 is a list of length-prefixed classes, but iPXE and many clients
/// send the bare string instead; accept either.
fn user_class_has(data: &[u8], class: &[u8]) -> bool {
    if data == class {
        return true;
    }
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == class {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Every option's length stays inside the packet (the END option may be missing: some
/// clients omit it and nothing is lost by accepting that).
fn options_well_formed(bytes: &[u8]) -> bool {
    let mut i = HEADER_LEN;
    while i < bytes.len() {
        match bytes[i] {
            0 => i += 1,
            255 => return true,
            _ => match bytes.get(i + 1) {
                Some(&len) if i + 2 + len as usize <= bytes.len() => i += 2 + len as usize,
                _ => return false,
            },
        }
    }
    true
}

/// Find an option's payload in the options area by walking TLVs on the raw bytes. Returns
/// `None` on any inconsistency rather than guessing.
pub fn raw_option(bytes: &[u8], code: u8) -> Option<&[u8]> {
    let mut i = HEADER_LEN;
    while i < bytes.len() {
        match bytes[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = *bytes.get(i + 1)? as usize;
                let payload = bytes.get(i + 2..i + 2 + len)?;
                if c == code {
                    return Some(payload);
                }
                i += 2 + len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::{Encodable, Encoder};

    pub(crate) fn discover(mac: [u8; 6]) -> Message {
        let mut m = Message::default();
        m.set_chaddr(&mac);
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
        m
    }

    fn encode(m: &Message) -> Vec<u8> {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        buf
    }

    #[test]
    fn a_hostname_with_terminal_escapes_is_cleaned_where_it_enters() {
        let mut m = discover([0x52, 0x54, 0, 0, 0, 1]);
        m.opts_mut().insert(DhcpOption::Hostname("h\u{1b}[2Jx\u{202E}".into()));
        let r = parse(&encode(&m)).unwrap();
        assert_eq!(r.hostname.as_deref(), Some("h\u{FFFD}[2Jx\u{FFFD}"));
    }

    /// Found by the dhcp_packet fuzz target (fuzz/corpus/dhcp_packet/rapid_commit_with_length):
    /// dhcproto 0.15 `debug_assert!`s that option 80 (rapid commit) is empty, so in a debug
    /// build a packet with a non-empty one panics inside the decoder. The parser's
    /// catch_unwind turns that into a dropped packet; a release build decodes it.
    #[test]
    fn a_panicking_decoder_is_a_dropped_packet_not_a_dead_listener() {
        let crash = include_bytes!("../../fuzz/corpus/dhcp_packet/rapid_commit_with_length");
        let r = std::panic::catch_unwind(|| parse(crash));
        assert!(r.is_ok(), "parse itself must never panic");
        if cfg!(debug_assertions) {
            assert_eq!(r.unwrap().err(), Some(ParseError::BadOptions));
        }
    }

    #[test]
    fn client_identifier_is_preferred_over_chaddr() {
        let mut m = discover([1, 2, 3, 4, 5, 6]);
        let plain = parse(&encode(&m)).unwrap();
        assert_eq!(plain.client.0, vec![1, 1, 2, 3, 4, 5, 6], "htype + chaddr");
        m.opts_mut().insert(DhcpOption::ClientIdentifier(vec![0xff, 9, 9]));
        let with_id = parse(&encode(&m)).unwrap();
        assert_eq!(with_id.client.0, vec![0xff, 9, 9]);
        assert_eq!(with_id.mac.unwrap().to_string(), "01:02:03:04:05:06");
    }

    #[test]
    fn ipxe_is_recognised_by_user_class_in_both_encodings_and_by_option_175() {
        let mut m = discover([1; 6]);
        m.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
        assert!(parse(&encode(&m)).unwrap().is_ipxe);
        let mut m = discover([1; 6]);
        m.opts_mut().insert(DhcpOption::UserClass(b"\x04iPXE".to_vec()));
        assert!(parse(&encode(&m)).unwrap().is_ipxe);
        let mut m = discover([1; 6]);
        m.opts_mut()
            .insert(DhcpOption::Unknown(dhcproto::v4::UnknownOption::new(
                OptionCode::from(175),
                vec![1, 1, 1],
            )));
        assert!(parse(&encode(&m)).unwrap().is_ipxe);
        assert!(!parse(&encode(&discover([1; 6]))).unwrap().is_ipxe);
    }

    #[test]
    fn option_82_is_kept_verbatim() {
        let mut bytes = encode(&discover([1; 6]));
        let end = bytes.len() - 1; // before the END option
        assert_eq!(bytes[end], 255);
        let opt82 = [82, 8, 1, 2, 0xaa, 0xbb, 9, 2, 0xcc, 0xdd];
        bytes.splice(end..end, opt82);
        let req = parse(&bytes).unwrap();
        assert_eq!(req.relay_info.unwrap(), opt82[2..].to_vec());
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        let good = encode(&discover([1; 6]));
        assert_eq!(parse(&good[..100]).unwrap_err(), ParseError::Truncated);
        let mut bad = good.clone();
        bad[2] = 200;
        assert_eq!(parse(&bad).unwrap_err(), ParseError::BadHlen);
        let mut bad = good.clone();
        bad[236] = 0;
        assert_eq!(parse(&bad).unwrap_err(), ParseError::BadCookie);
        let mut bad = good.clone();
        bad[0] = 2;
        assert_eq!(parse(&bad).unwrap_err(), ParseError::NotRequest);
        // An option whose length runs past the end of the packet.
        let mut bad = good[..HEADER_LEN].to_vec();
        bad.extend_from_slice(&[53, 1, 1, 61, 200, 1, 2]);
        assert!(parse(&bad).is_err());
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_packet_is_handled() {
        let mut m = discover([1; 6]);
        m.opts_mut().insert(DhcpOption::ClientSystemArchitecture(7.into()));
        m.opts_mut()
            .insert(DhcpOption::ClassIdentifier(b"PXEClient:Arch:00007".to_vec()));
        let good = encode(&m);
        for n in 0..good.len() {
            let _ = parse(&good[..n]);
        }
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut b = good.clone();
                b[i] ^= 1 << bit;
                let _ = parse(&b);
            }
        }
    }
}
