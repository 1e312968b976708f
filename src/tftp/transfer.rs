//! One read transfer: OACK negotiation, then windows of DATA blocks until the last one is
//! acknowledged.
//!
//! The rule async-tftp 0.4 breaks (its issue #18; measured in BENCHMARKS.md): a client may
//! answer the OACK, or any DATA, with an ERROR. PXE firmware does exactly that after asking
//! only for `tsize` ("ask tsize, get OACK, send ERROR, ask again"). An ERROR from the peer
//! ends the transfer at once; nothing is retransmitted after it.

use super::codec::{self, ErrorCode, Negotiated, Packet};
use std::io;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How far a file transfer reads ahead (one blocking-pool trip per this many bytes).
pub const READ_AHEAD: usize = 256 * 1024;

impl Source {
    pub fn file(file: tokio::fs::File) -> Source {
        Source::File(tokio::io::BufReader::with_capacity(READ_AHEAD, file))
    }
}
use tokio::net::UdpSocket;

/// What a transfer reads from: a file on disk or bytes rendered in memory.
pub enum Source {
    /// Read ahead in large chunks: each read of a tokio file is a trip to the blocking pool,
    /// which per 512-byte block cost more than the block's send and ACK together.
    File(tokio::io::BufReader<tokio::fs::File>),
    /// Bytes in memory: a rendered file, or a small file's snapshot (`files::FileCache`).
    Memory { bytes: std::sync::Arc<[u8]>, pos: usize },
}

impl Source {
    /// Fill `buf` as far as the source allows; returns the count (short only at the end).
    async fn read_block(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::File(f) => {
                let mut filled = 0;
                while filled < buf.len() {
                    let n = f.read(&mut buf[filled..]).await?;
                    if n == 0 {
                        break;
                    }
                    filled += n;
                }
                Ok(filled)
            }
            Source::Memory { bytes, pos } => {
                let n = buf.len().min(bytes.len() - *pos);
                buf[..n].copy_from_slice(&bytes[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed {
        bytes: u64,
    },
    /// The client sent ERROR (e.g. after an OACK it only wanted for tsize).
    AbortedByClient,
    /// No acknowledgement after every retry.
    TimedOut,
    Failed,
}

/// Serve `source` to the peer `sock` is connected to.
pub async fn send(sock: &UdpSocket, mut source: Source, neg: &Negotiated, max_retries: u32) -> Outcome {
    let timeout = Duration::from_secs(u64::from(neg.timeout_secs));
    let mut buf = vec![0u8; 2048.max(neg.block_size + 4)];
    // One timer for the whole transfer, reset per wait (not a new timer entry per block).
    let timer = tokio::time::sleep(timeout);
    tokio::pin!(timer);

    if !neg.oack.is_empty() {
        let oack = codec::encode(&Packet::OAck {
            options: neg.oack.clone(),
        });
        match exchange(sock, &[oack], 0, timeout, max_retries, &mut buf, timer.as_mut()).await {
            Ok(_) => {}
            Err(o) => return o,
        }
    }

    // The window holds encoded DATA packets not yet acknowledged; `base` is the block number
    // of its first packet (u64 internally; the wire number wraps to 0 as tftp-hpa does).
    let mut window: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
    let mut base: u64 = 1;
    let mut next: u64 = 1;
    let mut finished_reading = false;
    let mut sent_bytes: u64 = 0;
    let mut block = vec![0u8; neg.block_size];
    loop {
        while !finished_reading && window.len() < neg.window_size as usize {
            let n = match source.read_block(&mut block).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("tftp read failed: {e}");
                    let _ = sock.send(&codec::error(ErrorCode::NotDefined, "read error")).await;
                    return Outcome::Failed;
                }
            };
            let mut pkt = Vec::with_capacity(n + 4);
            codec::encode_data(next as u16, &block[..n], &mut pkt);
            window.push_back(pkt);
            sent_bytes += n as u64;
            next += 1;
            // A short block (possibly empty) ends the file (RFC 1350 §6).
            if n < neg.block_size {
                finished_reading = true;
            }
        }
        if window.is_empty() {
            return Outcome::Completed { bytes: sent_bytes };
        }
        match exchange(
            sock,
            window.make_contiguous(),
            base as u16,
            timeout,
            max_retries,
            &mut buf,
            timer.as_mut(),
        )
        .await
        {
            Ok(acked) => {
                window.drain(..acked);
                base += acked as u64;
            }
            Err(o) => return o,
        }
        if finished_reading && window.is_empty() {
            return Outcome::Completed { bytes: sent_bytes };
        }
    }
}

/// Send `packets` (numbered from `first`; the OACK counts as block 0) and wait for an ACK
/// inside the window. Returns how many packets the ACK covers. Retransmits the whole window
/// on timeout (RFC 7440 §4). An ERROR from the peer ends everything.
async fn exchange(
    sock: &UdpSocket,
    packets: &[Vec<u8>],
    first: u16,
    timeout: Duration,
    max_retries: u32,
    buf: &mut [u8],
    mut timer: std::pin::Pin<&mut tokio::time::Sleep>,
) -> Result<usize, Outcome> {
    for _attempt in 0..=max_retries {
        for p in packets {
            if sock.send(p).await.is_err() {
                return Err(Outcome::Failed);
            }
        }
        timer.as_mut().reset(tokio::time::Instant::now() + timeout);
        loop {
            let n = tokio::select! {
                biased;
                r = sock.recv(buf) => match r {
                    Ok(n) => n,
                    Err(_) => return Err(Outcome::Failed),
                },
                () = timer.as_mut() => break, // timed out: retransmit
            };
            match codec::decode(&buf[..n]) {
                Ok(Packet::Ack { block }) => {
                    let offset = block.wrapping_sub(first) as usize;
                    if offset < packets.len() {
                        return Ok(offset + 1);
                    }
                    // A duplicate ACK of an older block: keep waiting (no Sorcerer's
                    // Apprentice retransmission, RFC 1123 §4.2.3.1).
                }
                Ok(Packet::Error { .. }) => return Err(Outcome::AbortedByClient),
                _ => {
                    let _ = sock
                        .send(&codec::error(ErrorCode::IllegalOperation, "expected ACK"))
                        .await;
                    return Err(Outcome::Failed);
                }
            }
        }
    }
    Err(Outcome::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        server.connect(client.local_addr().unwrap()).await.unwrap();
        client.connect(server.local_addr().unwrap()).await.unwrap();
        (server, client)
    }

    fn lockstep() -> Negotiated {
        Negotiated {
            block_size: 512,
            window_size: 1,
            timeout_secs: 1,
            oack: Vec::new(),
        }
    }

    fn data_block(pkt: &[u8]) -> u16 {
        match codec::decode(pkt).unwrap() {
            Packet::Data { block, .. } => block,
            other => panic!("{other:?}"),
        }
    }

    /// A lost ACK: the same block comes again after the timeout, then the transfer goes on
    /// to the end. Every wait reuses one timer: were it not re-armed, each later block would
    /// come twice (an "expired" wait retransmits at once) and the order check would fail.
    #[tokio::test]
    async fn an_unacknowledged_block_is_sent_again_after_the_timeout() {
        let (server, client) = pair().await;
        let bytes: Vec<u8> = (0..1300u32).map(|i| i as u8).collect();
        let source = Source::Memory {
            bytes: bytes.clone().into(),
            pos: 0,
        };
        let serving = tokio::spawn(async move { send(&server, source, &lockstep(), 3).await });
        let mut buf = [0u8; 600];
        let n = client.recv(&mut buf).await.unwrap();
        assert_eq!(data_block(&buf[..n]), 1);
        // No ACK: block 1 again once the server's timeout passes.
        let mut n = client.recv(&mut buf).await.unwrap();
        let mut expect = 1;
        let mut got = Vec::new();
        loop {
            assert_eq!(data_block(&buf[..n]), expect, "blocks in order, each once");
            got.extend_from_slice(&buf[4..n]);
            client
                .send(&codec::encode(&Packet::Ack { block: expect }))
                .await
                .unwrap();
            if n - 4 < 512 {
                break;
            }
            expect += 1;
            n = client.recv(&mut buf).await.unwrap();
        }
        assert_eq!(serving.await.unwrap(), Outcome::Completed { bytes: 1300 });
        assert_eq!(got, bytes);
        // Nothing more comes: the last ACK ended it.
        let more = tokio::time::timeout(Duration::from_millis(1500), client.recv(&mut buf)).await;
        assert!(more.is_err(), "no packet after the last ACK");
    }

    /// A client that never answers: the retries run out and the transfer ends.
    #[tokio::test]
    async fn a_silent_client_times_the_transfer_out() {
        let (server, client) = pair().await;
        let source = Source::Memory {
            bytes: vec![1; 100].into(),
            pos: 0,
        };
        let outcome = send(&server, source, &lockstep(), 1).await;
        assert_eq!(outcome, Outcome::TimedOut);
        let mut buf = [0u8; 600];
        for _ in 0..2 {
            let n = client.recv(&mut buf).await.unwrap();
            assert_eq!(data_block(&buf[..n]), 1, "the first send and one retry");
        }
    }
}
