//! Zero-copy asset serving on plain boot listeners: a connection's requests for files
//! under `/assets/` are answered with `sendfile(2)` straight from the page cache to the
//! socket (no userspace copy per chunk, no per-chunk allocation), which is how nginx serves
//! kernels and images. The first request that is anything else (see `asset_head`), and
//! everything after it on that connection, goes to the router through hyper with the bytes
//! already read put back in front: the fast path never answers what it does not fully
//! understand.
//!
//! Limits stay those of the listener: the connection holds its permits, every byte moved
//! feeds the idle watchdog, and a request head must arrive within the header deadline.
//! Must never: block the runtime (the socket is non-blocking; `sendfile` on a regular file
//! reads from the page cache, as tokio's own file reads do on a blocking thread at worse
//! cost), or serve a path the router would refuse (`AssetFiles::resolve` is the router's own
//! check).

use super::asset_head::{self, FileFacts, Parsed};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Where the fast path finds files, and how it reports what it served (the same counters
/// and journal entries as the router's `/assets` handler).
pub trait AssetFiles: Send + Sync + 'static {
    /// The file for `path` (below `/assets/`), or None: the router answers (its refusal or
    /// its 404).
    fn resolve(&self, path: &str) -> Option<PathBuf>;
    /// `path` is being answered from a file for `peer`.
    fn served(&self, peer: SocketAddr, head_only: bool, path: &str, range: Option<&str>);
}

/// How a connection left the fast path.
pub enum Outcome {
    /// Closed (by the client, an error, `connection: close`, or a deadline).
    Closed,
    /// The router takes over: these bytes were read from the socket and not answered.
    Router(Vec<u8>, TcpStream),
}

/// Serve asset requests on `stream` until one is not, or the connection ends.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    files: &dyn AssetFiles,
    progress: &AtomicU64,
    header_timeout: Duration,
) -> Outcome {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Wait for a request as long as the idle watchdog allows, then its head must come
        // within the header deadline.
        let mut deadline = None;
        let request = loop {
            match asset_head::parse(&buf) {
                Parsed::Partial => {}
                Parsed::Asset(r) => break r,
                Parsed::Other => return Outcome::Router(buf, stream),
            }
            if !buf.is_empty() && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + header_timeout);
            }
            let read = async {
                let mut chunk = [0u8; 2048];
                let n = stream.read(&mut chunk).await?;
                buf.extend_from_slice(&chunk[..n]);
                Ok::<usize, std::io::Error>(n)
            };
            let n = match deadline {
                Some(d) => match tokio::time::timeout_at(d, read).await {
                    Ok(r) => r,
                    Err(_) => return Outcome::Closed,
                },
                None => read.await,
            };
            match n {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(_) => progress.store(super::activity::now_ms(), Ordering::Relaxed),
            }
        };
        let Some(path) = files.resolve(&request.path) else {
            return Outcome::Router(buf, stream);
        };
        let Ok(file) = std::fs::File::open(&path) else {
            return Outcome::Router(buf, stream);
        };
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            _ => return Outcome::Router(buf, stream),
        };
        let Some(extent) = asset_head::byte_range(request.range.as_deref(), meta.len()) else {
            return Outcome::Router(buf, stream);
        };
        files.served(peer, request.head_only, &request.path, request.range.as_deref());
        let facts = FileFacts {
            size: meta.len(),
            modified: meta.modified().ok(),
            content_type: mime_guess::from_path(&path)
                .first_raw()
                .unwrap_or("application/octet-stream"),
        };
        let head = asset_head::response_head(&facts, extent, request.close, SystemTime::now());
        let (start, length) = extent.span(meta.len());
        let body = if request.head_only { 0 } else { length };
        if send_head(&stream, &head, body > 0, progress).await.is_err()
            || send_file(&stream, &file, start, body, progress).await.is_err()
        {
            return Outcome::Closed;
        }
        if request.close {
            return Outcome::Closed;
        }
        buf.drain(..request.head_len);
    }
}

/// Write the head; with a body to follow, `MSG_MORE` lets the kernel put the head and the
/// file's first bytes in one segment.
async fn send_head(stream: &TcpStream, head: &[u8], more: bool, progress: &AtomicU64) -> std::io::Result<()> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    let mut sent = 0;
    while sent < head.len() {
        stream.writable().await?;
        let rest = &head[sent..];
        match stream.try_io(Interest::WRITABLE, || {
            // SAFETY: a valid socket and a buffer of `rest.len()` bytes we own.
            let n = unsafe { libc::send(stream.as_raw_fd(), rest.as_ptr().cast(), rest.len(), flags) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            Ok(n) => {
                sent += n;
                progress.store(super::activity::now_ms(), Ordering::Relaxed);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `length` bytes of `file` from `start`, page cache to socket.
async fn send_file(
    stream: &TcpStream,
    file: &std::fs::File,
    start: u64,
    length: u64,
    progress: &AtomicU64,
) -> std::io::Result<()> {
    // One call moves at most what the socket buffer takes; this only bounds a single call.
    const MAX_CALL: u64 = 1 << 30;
    let end = start + length;
    let mut offset = start as libc::off_t;
    while (offset as u64) < end {
        stream.writable().await?;
        let count = (end - offset as u64).min(MAX_CALL) as usize;
        match stream.try_io(Interest::WRITABLE, || {
            // SAFETY: valid descriptors; `offset` is ours and sendfile advances it.
            let n = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut offset, count) };
            if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        }) {
            // The file shrank under us: the promised length cannot be kept, so the
            // connection ends (the client sees a short body, never wrong bytes).
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => progress.store(super::activity::now_ms(), Ordering::Relaxed),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        // A fast reader on loopback never makes the socket block: give other tasks their turn.
        tokio::task::consume_budget().await;
    }
    Ok(())
}

/// A socket with bytes already read from it put back in front (the router's connection
/// after the fast path handed it over).
pub struct Prefixed<IO> {
    prefix: Vec<u8>,
    read: usize,
    inner: IO,
}

impl<IO> Prefixed<IO> {
    pub fn new(prefix: Vec<u8>, inner: IO) -> Self {
        Prefixed { prefix, read: 0, inner }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if self.read < self.prefix.len() {
            let n = (self.prefix.len() - self.read).min(buf.remaining());
            let from = self.read;
            buf.put_slice(&self.prefix[from..from + n]);
            self.read += n;
            if self.read == self.prefix.len() {
                self.prefix = Vec::new();
                self.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Shared between a listener and its connections.
pub type Files = Arc<dyn AssetFiles>;
