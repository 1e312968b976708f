//! TFTP (read-only): boot assets from `boot-assets/` and files generated per client
//! (pxelinux and GRUB configs), with blksize, tsize, timeout and windowsize.
//!
//! Our own tokio implementation rather than async-tftp: that crate ignores an ERROR sent
//! after its OACK and keeps retransmitting until its retries run out (its issue #18), which
//! is what every PXE ROM triggers; lab/bench/tftp-oack-error measures both side by side.
//!
//! `codec` is pure; `transfer` runs one transfer on its own socket (a new TID, RFC 1350 §4);
//! this file accepts requests, resolves paths, caps concurrency. Never serves a path outside
//! the root (see `served_root`), never accepts writes.

pub mod codec;
pub mod files;
pub mod transfer;

use crate::journal::{Journal, Step};
use crate::mac::MacAddr;
use crate::served_root::{self, Refusal};
use codec::{ErrorCode, Packet};
use files::{FileCache, Opened};
use std::collections::HashSet;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, watch};
use transfer::{Outcome, Source};

/// More transfers than this at once are not started (memory stays bounded: each holds one
/// window of blocks): the request is left unanswered and the client's retransmission asks
/// again.
pub const MAX_TRANSFERS: usize = 2048;
/// Transfers one client address may run at once. A booting machine fetches one file at a
/// time; a machine that opens more only takes slots from the rest of the rack.
pub const MAX_TRANSFERS_PER_CLIENT: usize = 64;
const MAX_RETRIES: u32 = 5;
const DEFAULT_TIMEOUT_SECS: u8 = 2;

/// What `GeneratedFiles::generate` returns: `None`, not a generated name (look on disk);
/// `Some(Err)`, a generated name that cannot be produced for this client (unknown host,
/// render error), answered "file not found".
pub type GeneratedFuture<'a> = Pin<Box<dyn Future<Output = Option<Result<GeneratedFile, GenerateError>>> + Send + 'a>>;

/// A file rendered for the asking client, and what the boot journal should say about it
/// (a boot script's decision, as the HTTP route records it), recorded when it is rendered.
pub struct GeneratedFile {
    pub bytes: Vec<u8>,
    pub journal: Option<(Option<MacAddr>, Step)>,
}

/// Why a generated file cannot be produced for this client (logged; the client is told
/// only "file not found").
pub type GenerateError = Box<dyn std::error::Error + Send + Sync>;

/// Files that do not exist on disk but are rendered for the asking client.
pub trait GeneratedFiles: Send + Sync {
    fn generate<'a>(&'a self, client: Ipv4Addr, path: &'a str) -> GeneratedFuture<'a>;
}

/// No generated files (tests and tools that serve a plain directory).
pub struct NoGenerated;
impl GeneratedFiles for NoGenerated {
    fn generate<'a>(&'a self, _: Ipv4Addr, _: &'a str) -> GeneratedFuture<'a> {
        Box::pin(async { None })
    }
}

/// One request's view of the boot policy: whether the client may read, and the files
/// generated for it, both answered by the same config generation (a reload between the
/// two must not admit by one config and render by another).
pub trait Scope: Send + Sync {
    fn admits(&self, client: Ipv4Addr) -> bool;
    fn generate<'a>(&'a self, client: Ipv4Addr, path: &'a str) -> GeneratedFuture<'a>;
}

/// Hands each request its scope, once, when the request arrives (the daemon: the
/// generation current then, `boot::BootSource`).
pub trait Scopes: Send + Sync {
    fn scope(&self) -> Arc<dyn Scope>;
}

/// A scope that never changes: `new`'s generated files, every address admitted (tools and
/// tests that serve a plain directory; the daemon gives `with_scopes`).
struct Fixed(Arc<dyn GeneratedFiles>);

impl Scope for Fixed {
    fn admits(&self, _: Ipv4Addr) -> bool {
        true
    }
    fn generate<'a>(&'a self, client: Ipv4Addr, path: &'a str) -> GeneratedFuture<'a> {
        self.0.generate(client, path)
    }
}

impl Scopes for Arc<Fixed> {
    fn scope(&self) -> Arc<dyn Scope> {
        self.clone()
    }
}

crate::counter_set! {
    /// Every TFTP counter; the field names are the exported names.
    pub struct TftpStats {
        requests,
        completed,
        aborted_by_client,
        timed_out,
        failed,
        refused_outside_root,
        not_found,
        malformed,
        bytes_sent,
        refused_per_client,
        refused_no_lease,
        deferred_busy,
    }
}

/// The transfers in progress, by peer and by client address.
#[derive(Default)]
struct Active {
    peers: HashSet<SocketAddr>,
    per_address: std::collections::HashMap<std::net::IpAddr, usize>,
}

enum Slot {
    Admitted,
    /// A retransmitted RRQ of a transfer already running.
    Duplicate,
    TooMany,
}

impl Active {
    fn admit(&mut self, peer: SocketAddr) -> Slot {
        if self.peers.contains(&peer) {
            return Slot::Duplicate;
        }
        let n = self.per_address.entry(peer.ip()).or_default();
        if *n >= MAX_TRANSFERS_PER_CLIENT {
            return Slot::TooMany;
        }
        *n += 1;
        self.peers.insert(peer);
        Slot::Admitted
    }

    fn remove(&mut self, peer: &SocketAddr) {
        if self.peers.remove(peer)
            && let Some(n) = self.per_address.get_mut(&peer.ip())
        {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&peer.ip());
            }
        }
    }
}

/// Bind the request socket. A rack powering on sends hundreds of RRQs at once; the default
/// receive buffer (about 200 KiB, ~270 queued datagrams) would drop part of that burst.
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

pub struct TftpServer {
    files: Arc<FileCache>,
    /// Generated files and admission, per request (`Scopes`).
    scopes: Arc<dyn Scopes>,
    pub stats: Arc<TftpStats>,
    journal: Option<Arc<Journal>>,
}

impl TftpServer {
    pub fn new(root: PathBuf, generated: Arc<dyn GeneratedFiles>, stats: Arc<TftpStats>) -> std::io::Result<Self> {
        let root = served_root::canonical_root(&root)?;
        Ok(TftpServer {
            files: Arc::new(FileCache::new(root)),
            scopes: Arc::new(Arc::new(Fixed(generated))),
            stats,
            journal: None,
        })
    }

    /// Admission and generated files from `scopes`, asked once per request.
    pub fn with_scopes(mut self, scopes: Arc<dyn Scopes>) -> Self {
        self.scopes = scopes;
        self
    }

    /// Record completed transfers in the boot journal.
    pub fn with_journal(mut self, journal: Arc<Journal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Serve on `sock` (bound by the caller, usually to a site address, port 69) until
    /// `shutdown` turns true.
    pub async fn serve(self: Arc<Self>, sock: UdpSocket, mut shutdown: watch::Receiver<bool>) {
        let local_ip = sock
            .local_addr()
            .map(|a| a.ip())
            .unwrap_or(Ipv4Addr::UNSPECIFIED.into());
        let permits = Arc::new(Semaphore::new(MAX_TRANSFERS));
        // Clients retransmit RRQs while we are already answering: one transfer per peer
        // (address and port), and at most MAX_TRANSFERS_PER_CLIENT per address.
        let active: Arc<Mutex<Active>> = Arc::default();
        let mut buf = vec![0u8; 1024];
        loop {
            let (n, peer) = tokio::select! {
                r = sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
                _ = shutdown.changed() => return,
            };
            let (filename, options) = match codec::decode(&buf[..n]) {
                Ok(Packet::Request {
                    write: false,
                    filename,
                    options,
                    ..
                }) => (filename, options),
                Ok(Packet::Request { write: true, .. }) => {
                    let _ = sock
                        .send_to(&codec::error(ErrorCode::AccessViolation, "read-only server"), peer)
                        .await;
                    continue;
                }
                // Stray ACK/ERROR/DATA on port 69 belong to no transfer; garbage is counted.
                Ok(_) => continue,
                Err(_) => {
                    self.stats.malformed.inc();
                    continue;
                }
            };
            let client = match peer.ip() {
                std::net::IpAddr::V4(a) => a,
                std::net::IpAddr::V6(_) => continue,
            };
            // One scope per request: admission here and the file it gets come from the
            // same generation.
            let scope = self.scopes.scope();
            if !scope.admits(client) {
                // One short error, never a transfer: a forged source gets no stream aimed at
                // it, and a real machine without a lease is told why.
                self.stats.refused_no_lease.inc();
                let _ = sock
                    .send_to(
                        &codec::error(ErrorCode::AccessViolation, "no lease or reservation for this address"),
                        peer,
                    )
                    .await;
                continue;
            }
            let slot = active.lock().expect("active set").admit(peer);
            match slot {
                Slot::Duplicate => continue,
                Slot::TooMany => {
                    self.stats.refused_per_client.inc();
                    let _ = sock
                        .send_to(
                            &codec::error(ErrorCode::NotDefined, "too many transfers from this address"),
                            peer,
                        )
                        .await;
                    continue;
                }
                Slot::Admitted => {}
            }
            self.stats.requests.inc();
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Full: no answer, so the client asks again after its timeout. A PXE ROM
                // treats an ERROR as the end of its boot (it moves to the next boot
                // device); it retransmits an unanswered RRQ. The storm benchmark lost a
                // third of 5,000 machines to "server busy" before this.
                active.lock().expect("active set").remove(&peer);
                self.stats.deferred_busy.inc();
                continue;
            };
            let (me, active) = (self.clone(), active.clone());
            tokio::spawn(async move {
                me.run_transfer(&*scope, local_ip, peer, filename, options).await;
                active.lock().expect("active set").remove(&peer);
                drop(permit);
            });
        }
    }

    async fn run_transfer(
        &self,
        scope: &dyn Scope,
        local_ip: std::net::IpAddr,
        peer: SocketAddr,
        filename: String,
        options: Vec<(String, String)>,
    ) {
        // A new socket per transfer: its port is the server's transfer ID (RFC 1350 §4).
        let Ok(sock) = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await else {
            return;
        };
        if sock.connect(peer).await.is_err() {
            return;
        }
        let client_ip = match peer.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        };
        let (source, size) = match self.open(scope, client_ip, &filename).await {
            Ok(s) => s,
            Err((code, msg)) => {
                let _ = sock.send(&codec::error(code, &msg)).await;
                return;
            }
        };
        let neg = codec::negotiate(&options, Some(size), DEFAULT_TIMEOUT_SECS);
        let outcome = transfer::send(&sock, source, &neg, MAX_RETRIES).await;
        let s = &self.stats;
        match outcome {
            Outcome::Completed { bytes } => {
                s.completed.inc();
                s.bytes_sent.add(bytes);
                tracing::debug!("tftp {peer} {filename}: {bytes} bytes");
                if let Some(j) = &self.journal {
                    j.record_ip(
                        client_ip,
                        Step::Tftp {
                            file: filename.to_string(),
                            bytes,
                        },
                    );
                }
            }
            Outcome::AbortedByClient => {
                s.aborted_by_client.inc();
            }
            Outcome::TimedOut => {
                s.timed_out.inc();
                tracing::info!("tftp {peer} {filename}: client stopped acknowledging");
            }
            Outcome::Failed => {
                s.failed.inc();
            }
        }
    }

    async fn open(
        &self,
        scope: &dyn Scope,
        client: Ipv4Addr,
        filename: &str,
    ) -> Result<(Source, u64), (ErrorCode, String)> {
        if let Some(generated) = scope.generate(client, filename).await {
            return match generated {
                Ok(GeneratedFile { bytes, journal }) => {
                    if let (Some(j), Some((mac, step))) = (&self.journal, journal) {
                        j.record(mac, Some(client), step);
                    }
                    let len = bytes.len() as u64;
                    Ok((
                        Source::Memory {
                            bytes: bytes.into(),
                            pos: 0,
                        },
                        len,
                    ))
                }
                Err(why) => {
                    tracing::info!("tftp {client} {filename}: {why}");
                    self.stats.not_found.inc();
                    Err((ErrorCode::FileNotFound, "file not found".into()))
                }
            };
        }
        // TFTP has no current directory: a leading '/' names the served root, as GRUB
        // (every path it asks is absolute) and many PXE ROMs send it. What remains is
        // checked as any other name (`served_root::resolve`).
        match self.files.open(filename.trim_start_matches(['/', '\\'])).await {
            Ok(Opened::Whole(bytes)) => {
                let len = bytes.len() as u64;
                Ok((Source::Memory { bytes, pos: 0 }, len))
            }
            Ok(Opened::File(file, len)) => Ok((Source::file(tokio::fs::File::from_std(file)), len)),
            Err(Refusal::OutsideRoot) => {
                tracing::warn!("tftp {client}: refused {filename:?}: outside the served directory");
                self.stats.refused_outside_root.inc();
                Err((ErrorCode::AccessViolation, "access violation".into()))
            }
            Err(Refusal::NotFound) => {
                self.stats.not_found.inc();
                Err((ErrorCode::FileNotFound, "file not found".into()))
            }
        }
    }
}
