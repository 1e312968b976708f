//! A small DHCP client for tests that need to craft packets real clients never send: it
//! acts as a relay (giaddr set, listening on port 67) or as a direct client on port 68.
//! Built on dhcproto, the same codec the server uses, but it only builds requests and reads
//! replies; the server's behaviour is what is under test.

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

pub fn encode(m: &Message) -> Vec<u8> {
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

pub fn decode(b: &[u8]) -> Message {
    Message::decode(&mut Decoder::new(b)).unwrap()
}

pub fn msg_type(m: &Message) -> Option<MessageType> {
    m.opts().msg_type()
}

pub fn mac(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

/// A request of `kind` from `mac`, optionally relayed through `giaddr`.
pub fn request(kind: MessageType, mac: [u8; 6], xid: u32, giaddr: Option<Ipv4Addr>) -> Message {
    let mut m = Message::default();
    m.set_chaddr(&mac).set_xid(xid);
    if let Some(g) = giaddr {
        m.set_giaddr(g).set_hops(1);
    }
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

/// A UDP socket bound to 0.0.0.0:`port` inside the caller's current namespace.
pub fn bind(port: u16, device: Option<&str>) -> UdpSocket {
    socket_on(Ipv4Addr::UNSPECIFIED, port, device)
}

/// A UDP socket bound to `ip:port` (a relay listening on its own giaddr).
pub fn bind_addr(ip: Ipv4Addr, port: u16) -> UdpSocket {
    socket_on(ip, port, None)
}

/// Reusable (several test sockets share port 67/68), broadcast-capable, optionally pinned
/// to a device, with a short read timeout so a missing answer fails fast.
fn socket_on(ip: Ipv4Addr, port: u16, device: Option<&str>) -> UdpSocket {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    s.set_reuse_address(true).unwrap();
    s.set_broadcast(true).unwrap();
    if let Some(d) = device {
        s.bind_device(Some(d.as_bytes())).unwrap();
    }
    s.bind(&SocketAddr::from((ip, port)).into()).unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    s
}

/// Send `m` to `to` and wait for a reply with the same xid, retrying a few times.
pub fn exchange(sock: &UdpSocket, to: SocketAddr, m: &Message) -> Option<Message> {
    exchange_raw(sock, to, &encode(m), m.xid())
}

pub fn exchange_raw(sock: &UdpSocket, to: SocketAddr, bytes: &[u8], xid: u32) -> Option<Message> {
    let mut buf = [0u8; 1500];
    for _ in 0..4 {
        sock.send_to(bytes, to).unwrap();
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            if n >= 240 {
                let r = decode(&buf[..n]);
                if r.xid() == xid {
                    return Some(r);
                }
            }
        }
    }
    None
}

/// A full DISCOVER/OFFER/REQUEST/ACK through a relay; returns (offer, ack).
pub fn dora_relayed(
    sock: &UdpSocket,
    server: SocketAddr,
    giaddr: Ipv4Addr,
    mac: [u8; 6],
    xid: u32,
) -> (Message, Message) {
    let offer = exchange(sock, server, &request(MessageType::Discover, mac, xid, Some(giaddr))).expect("OFFER");
    assert_eq!(msg_type(&offer), Some(MessageType::Offer));
    let mut req = request(MessageType::Request, mac, xid, Some(giaddr));
    req.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    req.opts_mut().insert(DhcpOption::ServerIdentifier(server_id(&offer)));
    let ack = exchange(sock, server, &req).expect("ACK");
    (offer, ack)
}

pub fn server_id(m: &Message) -> Ipv4Addr {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => panic!("reply has no server identifier"),
    }
}

pub fn broadcast_flag() -> Flags {
    Flags::default().set_broadcast()
}
