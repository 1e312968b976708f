//! Measurement behind replacing async-tftp with provd's own TFTP module (see
//! BENCHMARKS.md and lab/bench/tftp-oack-error.sh). Runs both servers on loopback, same
//! process, same files:
//!
//! 1. The PXE firmware pattern: RRQ with tsize, receive OACK, answer with ERROR (code 8,
//!    RFC 2347 option refusal), ask again. Counts every packet the server still sends to
//!    the abandoned transfer in the following seconds. Correct: zero.
//! 2. 500 concurrent transfers of a 1 MiB file (blksize 1468): completed, failed, wall time.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WATCH_SECS: u64 = 8;
const CLIENTS: usize = 500;

fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    use provd::tftp::codec::{Packet, encode};
    let options = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    encode(&Packet::Request {
        write: false,
        filename: file.into(),
        mode: "octet".into(),
        options,
    })
}

/// Returns (packets received after our ERROR, seconds until the last one).
fn oack_then_error(server: SocketAddr) -> (usize, f64) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(&rrq("ipxe.bin", &[("tsize", "0")]), server).unwrap();
    let mut buf = [0u8; 2048];
    let (n, tid) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..2], &[0, 6], "expected OACK, got {:?}", &buf[..n.min(8)]);
    s.send_to(b"\x00\x05\x00\x08TFTP Aborted\x00", tid).unwrap();
    let start = Instant::now();
    let mut after = 0;
    let mut last = 0.0;
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    while start.elapsed() < Duration::from_secs(WATCH_SECS) {
        if let Ok((_, from)) = s.recv_from(&mut buf)
            && from == tid
        {
            after += 1;
            last = start.elapsed().as_secs_f64();
        }
    }
    (after, last)
}

/// One full download with blksize 1468 from `client` (an address of 127/8); returns bytes
/// received or None on failure.
fn download(server: SocketAddr, client: std::net::Ipv4Addr) -> Option<usize> {
    let s = UdpSocket::bind((client, 0)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.send_to(&rrq("ipxe.bin", &[("blksize", "1468")]), server).ok()?;
    let mut buf = [0u8; 2048];
    let mut total = 0;
    let mut expect: u16 = 1;
    loop {
        let (n, tid) = s.recv_from(&mut buf).ok()?;
        match buf[1] {
            6 => {
                s.send_to(&[0, 4, 0, 0], tid).ok()?;
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == expect {
                    total += n - 4;
                    expect = expect.wrapping_add(1);
                }
                s.send_to(&[0, 4, buf[2], buf[3]], tid).ok()?;
                if block == expect.wrapping_sub(1) && n - 4 < 1468 {
                    return Some(total);
                }
            }
            _ => return None,
        }
    }
}

fn concurrent(server: SocketAddr) -> (usize, usize, f64) {
    let start = Instant::now();
    // A rack of 50 machines, 10 transfers each (provd caps transfers per client address).
    let handles: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = std::net::Ipv4Addr::new(127, 0, 1, (1 + i % 50) as u8);
            std::thread::spawn(move || download(server, client))
        })
        .collect();
    let results: Vec<Option<usize>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = results.iter().filter(|r| **r == Some(1 << 20)).count();
    (ok, CLIENTS - ok, start.elapsed().as_secs_f64())
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ipxe.bin"), vec![0x5a; 1 << 20]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    let crate_addr: SocketAddr = "127.0.0.1:16969".parse().unwrap();
    let root = dir.path().to_path_buf();
    rt.spawn(async move {
        let server = async_tftp::server::TftpServerBuilder::with_dir_ro(root)
            .unwrap()
            .bind(crate_addr)
            .build()
            .await
            .unwrap();
        let _ = server.serve().await;
    });

    let provd_addr: SocketAddr = "127.0.0.1:16970".parse().unwrap();
    let server = Arc::new(
        provd::tftp::TftpServer::new(
            dir.path().to_path_buf(),
            Arc::new(provd::tftp::NoGenerated),
            Arc::new(provd::tftp::TftpStats::default()),
        )
        .unwrap(),
    );
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    rt.spawn(async move {
        let sock = tokio::net::UdpSocket::bind(provd_addr).await.unwrap();
        server.serve(sock, stop_rx).await;
    });
    std::thread::sleep(Duration::from_millis(500));

    println!("1. RRQ(tsize) -> OACK -> client ERROR: packets the server sends afterwards ({WATCH_SECS} s watched)");
    for (name, addr) in [("async-tftp 0.4.2", crate_addr), ("provd tftp", provd_addr)] {
        let (after, last) = oack_then_error(addr);
        println!("   {name:<17} {after} packets after the ERROR (last at {last:.1} s)");
    }
    println!("2. {CLIENTS} concurrent 1 MiB transfers, blksize 1468");
    for (name, addr) in [("async-tftp 0.4.2", crate_addr), ("provd tftp", provd_addr)] {
        let (ok, failed, secs) = concurrent(addr);
        println!("   {name:<17} completed {ok}, failed {failed}, {secs:.1} s");
    }
}
