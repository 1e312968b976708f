//! Building DHCPOFFER / DHCPACK / DHCPNAK messages (RFC 2131 §4.3.1-4.3.5, table 3) and
//! choosing where they go (§4.1). Pure: no I/O.

use crate::boot::firmware::BootAnswer;
use crate::config::Subnet;
use crate::dhcp::packet::Request;
use crate::mac::MacAddr;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use std::net::Ipv4Addr;

/// Where a reply is sent (RFC 2131 §4.1, "the server ... sends" paragraph).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// To the relay agent at giaddr, server port 67.
    Relay(Ipv4Addr),
    /// To an address the client already uses (ciaddr), port 68.
    Unicast(Ipv4Addr),
    /// 255.255.255.255:68 on the receiving interface.
    Broadcast,
    /// To yiaddr at chaddr: the client has no address yet but can take unicast, so the ARP
    /// entry is written by hand before sending (as ISC dhcpd and dnsmasq do).
    Hardware { ip: Ipv4Addr, mac: MacAddr },
}

pub fn destination(req: &Request, kind: MessageType, yiaddr: Ipv4Addr) -> Destination {
    let giaddr = req.giaddr();
    if !giaddr.is_unspecified() {
        return Destination::Relay(giaddr);
    }
    // A NAK always broadcasts when no relay is involved: the client's address is in doubt.
    if kind == MessageType::Nak {
        return Destination::Broadcast;
    }
    let ciaddr = req.ciaddr();
    if !ciaddr.is_unspecified() {
        return Destination::Unicast(ciaddr);
    }
    match (req.broadcast_flag(), req.mac) {
        (false, Some(mac)) if !yiaddr.is_unspecified() => Destination::Hardware { ip: yiaddr, mac },
        _ => Destination::Broadcast,
    }
}

/// What goes into an OFFER or ACK.
pub struct Grant<'a> {
    pub kind: MessageType,
    pub yiaddr: Ipv4Addr,
    pub server_id: Ipv4Addr,
    pub subnet: &'a Subnet,
    /// None for an ACK to DHCPINFORM, which must carry no lease time (§4.3.5).
    pub lease: Option<u32>,
    pub hostname: Option<&'a str>,
    pub boot: Option<&'a BootAnswer>,
    pub next_server: Ipv4Addr,
    pub vendor_class: Option<&'static str>,
}

/// The longest name the BOOTP `file` field holds (128 bytes, NUL-terminated).
const FILE_FIELD_MAX: usize = 127;

pub fn grant(req: &Request, g: &Grant) -> Message {
    let mut m = base(req, g.kind, g.server_id);
    m.set_yiaddr(g.yiaddr);
    let opts = m.opts_mut();
    if let Some(lease) = g.lease {
        opts.insert(DhcpOption::AddressLeaseTime(lease));
        // T1 = 0.5 and T2 = 0.875 of the lease (RFC 2131 §4.4.5 defaults).
        opts.insert(DhcpOption::Renewal(lease / 2));
        opts.insert(DhcpOption::Rebinding((u64::from(lease) * 7 / 8) as u32));
    }
    opts.insert(DhcpOption::SubnetMask(g.subnet.prefix.netmask()));
    opts.insert(DhcpOption::BroadcastAddr(g.subnet.prefix.broadcast()));
    if let Some(r) = g.subnet.router {
        opts.insert(DhcpOption::Router(vec![r]));
    }
    if !g.subnet.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServer(g.subnet.dns.clone()));
    }
    if let Some(d) = &g.subnet.domain {
        opts.insert(DhcpOption::DomainName(d.clone()));
    }
    if let Some(h) = g.hostname {
        opts.insert(DhcpOption::Hostname(h.to_string()));
    }
    if let Some(vc) = g.vendor_class {
        opts.insert(DhcpOption::ClassIdentifier(vc.as_bytes().to_vec()));
    }
    if let Some(boot) = g.boot {
        let file = boot.file();
        if let BootAnswer::Tftp(_) = boot {
            m.set_siaddr(g.next_server);
            m.opts_mut()
                .insert(DhcpOption::TFTPServerName(g.next_server.to_string().into_bytes()));
        }
        if file.len() <= FILE_FIELD_MAX {
            m.set_fname_str(file);
        }
        // Option 67 as well: UEFI and iPXE read it, and a long URL only fits there.
        m.opts_mut().insert(DhcpOption::BootfileName(file.as_bytes().to_vec()));
    }
    m
}

pub fn nak(req: &Request, server_id: Ipv4Addr, why: &str) -> Message {
    let mut m = base(req, MessageType::Nak, server_id);
    m.opts_mut().insert(DhcpOption::Message(why.to_string()));
    // §4.3.2: a NAK through a relay asks the relay to broadcast it.
    if !req.giaddr().is_unspecified() {
        m.set_flags(Flags::default().set_broadcast());
    }
    m
}

/// Fields every reply copies from the request (RFC 2131 table 3).
fn base(req: &Request, kind: MessageType, server_id: Ipv4Addr) -> Message {
    let q = &req.msg;
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_htype(q.htype())
        .set_chaddr(q.chaddr())
        .set_xid(q.xid())
        .set_flags(q.flags())
        .set_giaddr(q.giaddr())
        .set_hops(0)
        .set_secs(0);
    if kind == MessageType::Ack && req.msg_type == MessageType::Inform {
        m.set_ciaddr(q.ciaddr());
    }
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server_id));
    if let Some(info) = &req.relay_info {
        // RFC 3046 §2.2: echo option 82 unchanged; dhcproto writes it last as the RFC asks.
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::RelayAgentInformation,
            info.clone(),
        )));
    }
    m
}
