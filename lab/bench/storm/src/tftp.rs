//! The TFTP side of a simulated machine: one lockstep read (RFC 1350) with blksize and tsize
//! (RFC 2348/2349), as a PXE ROM loads iPXE: from the machine's leased address, resending
//! its last packet after a second of silence, five times at most.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::UdpSocket;

const BLKSIZE: usize = 1456;

/// Read `file` from `server`; the number of bytes received.
pub async fn read(from: Ipv4Addr, server: Ipv4Addr, file: &str) -> Result<u64, String> {
    let socket = UdpSocket::bind((from, 0)).await.map_err(|e| format!("bind {from}: {e}"))?;
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", &BLKSIZE.to_string(), "tsize", "0"] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    let mut last: Vec<u8> = rrq;
    let mut to = SocketAddr::from((server, 69));
    let mut peer: Option<SocketAddr> = None;
    let mut expected: u16 = 1;
    let mut received: u64 = 0;
    let mut blksize = 512;
    let mut buf = vec![0u8; BLKSIZE + 4];
    let mut tries = 0;
    loop {
        socket.send_to(&last, to).await.map_err(|e| e.to_string())?;
        let (n, src) = match tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await {
            Err(_) => {
                tries += 1;
                if tries > 5 {
                    return Err(format!("no answer after block {}", expected - 1));
                }
                continue;
            }
            Ok(r) => r.map_err(|e| e.to_string())?,
        };
        if peer.is_some_and(|p| p != src) || n < 4 {
            continue; // another transfer's packet, or garbage: not ours
        }
        tries = 0;
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        match opcode {
            6 => {
                // OACK: take the blksize the server agreed to, acknowledge block 0.
                if let Some(b) = option(&buf[2..n], "blksize") {
                    blksize = b;
                }
                peer = Some(src);
                to = src;
                last = vec![0, 4, 0, 0];
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                peer = Some(src);
                to = src;
                if block == expected {
                    received += (n - 4) as u64;
                    last = vec![0, 4, buf[2], buf[3]];
                    if n - 4 < blksize {
                        socket.send_to(&last, to).await.map_err(|e| e.to_string())?;
                        return Ok(received);
                    }
                    expected = expected.wrapping_add(1);
                }
            }
            5 => {
                return Err(format!(
                    "ERROR {}: {}",
                    u16::from_be_bytes([buf[2], buf[3]]),
                    String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
                ));
            }
            other => return Err(format!("unexpected opcode {other}")),
        }
    }
}

/// A numeric option's value in an OACK body (`name\0value\0...`).
fn option(body: &[u8], name: &str) -> Option<usize> {
    let mut parts = body.split(|b| *b == 0);
    while let Some(key) = parts.next() {
        let value = parts.next()?;
        if key.eq_ignore_ascii_case(name.as_bytes()) {
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
    }
    None
}
