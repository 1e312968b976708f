//! DHCP sockets: one UDP socket on port 67 per configured interface, pinned to it with
//! SO_BINDTODEVICE, so provd never hears or answers on an interface its config does not name.
//!
//! Also the one piece of link-layer work a UDP server needs: writing an ARP entry for a
//! client that has no address yet, so a unicast OFFER/ACK can reach it (RFC 2131 §4.1; the
//! kernel cannot ARP for an address nobody holds yet).

use crate::mac::MacAddr;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

/// Bind 0.0.0.0:67 on `iface` only. Several such sockets (one per interface) coexist because
/// each is bound to a different device.
pub fn bind_interface(iface: &str) -> io::Result<tokio::net::UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    s.bind_device(Some(iface.as_bytes()))?;
    // Bursts of thousands of DISCOVERs must queue, not drop, while a commit runs.
    let _ = s.set_recv_buffer_size(8 << 20);
    let _ = s.set_send_buffer_size(8 << 20);
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT).into())?;
    s.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// Add a complete ARP entry `ip -> mac` on `iface` (SIOCSARP), as ISC dhcpd and dnsmasq do
/// before unicasting to a client that cannot answer ARP yet.
pub fn set_arp_entry(sock: &impl AsRawFd, iface: &str, ip: Ipv4Addr, mac: MacAddr) -> io::Result<()> {
    // SAFETY: arpreq is plain old data; every field is initialised below before the ioctl,
    // and the sockaddr casts follow the kernel's layout for AF_INET / ARPHRD_ETHER.
    unsafe {
        let mut req: libc::arpreq = std::mem::zeroed();
        let pa = &mut req.arp_pa as *mut libc::sockaddr as *mut libc::sockaddr_in;
        (*pa).sin_family = libc::AF_INET as libc::sa_family_t;
        (*pa).sin_addr.s_addr = u32::from(ip).to_be();
        req.arp_ha.sa_family = libc::ARPHRD_ETHER;
        for (dst, src) in req.arp_ha.sa_data.iter_mut().zip(mac.0) {
            *dst = src as libc::c_char;
        }
        req.arp_flags = libc::ATF_COM;
        for (dst, src) in req.arp_dev.iter_mut().zip(iface.bytes().take(15)) {
            *dst = src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSARP as _, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
