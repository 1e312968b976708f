//! Serving a router on a TCP listener with the limits a hostile network needs: a cap on
//! open connections (past it, the next connection waits in the kernel's accept queue until
//! one closes) and a smaller one per client address (one more is closed at once, so one
//! machine cannot take every slot), a deadline for a request's headers (slow-loris), a
//! deadline for a handler to produce its response (tower-http's timeout: a body that
//! streams a kernel for minutes is not cut, its handler answered in time), and an idle
//! deadline: a connection that moves no byte either way for that long is closed (a client
//! that stops reading a kernel, or keeps a connection open and says nothing, gives its
//! slot back). Each request sees its peer address as axum's `ConnectInfo`.
//!
//! With a TLS configuration (the admin listener's `api_tls`), each connection is a TLS
//! handshake first (bounded by the header deadline too); a verified admin client
//! certificate reaches handlers as the request extension `tls::Operator`.
//!
//! A boot listener also has an admission (`Admission`, the same rule as TFTP's): a
//! connection from an address with no lease or reservation here and outside `tftp_open` is
//! closed at accept, before a byte is read. So the machines that may use the connection
//! slots are the ones provd itself put on the network (or the operator opened it to), and
//! 64 spoofed-source machines cannot take the global slots from the booting rack.
//!
//! HTTP/1.1 only, like `axum::serve` with axum's default features: iPXE, curl, Anaconda and
//! UEFI HTTP boot all speak it.

use super::activity::now_ms;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; the next is accepted when one of them closes.
    pub max_connections: usize,
    /// Connections open at once from one client address (a booting machine opens a few).
    pub max_per_address: usize,
    /// A connection that moves no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a handler may take to produce its response (408 after that).
    pub request_timeout: Duration,
}

/// Boot listeners: hundreds of machines booting at once, each with a few connections.
pub const BOOT_LIMITS: Limits = Limits {
    max_connections: 1024,
    max_per_address: 16,
    idle_timeout: Duration::from_secs(60),
    header_read_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(30),
};

/// The admin listener: a few authenticated operators and scripts. Its handlers may run
/// long (a drain live-migrates every VM of a hypervisor), so the handler deadline is an
/// hour; headers still have 10 s.
pub const API_LIMITS: Limits = Limits {
    max_connections: 64,
    max_per_address: 32,
    // A long handler (a drain) answers late, but its client waits silently: the idle
    // deadline must not cut it before the handler deadline does.
    idle_timeout: Duration::from_secs(3600),
    header_read_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(3600),
};

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address already holds `max_per_address` connections.
    OverAddressCap,
    /// The listener's admission does not admit its address.
    NotAdmitted,
}

impl Refused {
    /// The HTTP counter that counts it.
    pub fn counter(self, stats: &super::HttpStats) -> &crate::counters::Counter {
        match self {
            Refused::OverAddressCap => &stats.refused_connections,
            Refused::NotAdmitted => &stats.refused_no_lease,
        }
    }
}

/// What a listener speaks: HTTPS, or plain HTTP with (boot listeners) or without
/// zero-copy asset serving in front of the router.
#[derive(Clone)]
pub enum Transport {
    Plain { assets: Option<super::zero_copy::Files> },
    Tls(Arc<rustls::ServerConfig>),
}

/// Serve `app` on `listener` until `stop` turns true; connections in flight get a few
/// seconds to finish. `refused` counts connections closed for being over their address's
/// cap.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    refused: impl Fn(Refused) + Send + 'static,
    transport: Transport,
    admission: Option<Arc<dyn crate::admission::Admission>>,
) {
    let (acceptor, assets) = match transport {
        Transport::Plain { assets } => (None, assets),
        Transport::Tls(tls) => (Some(tokio_rustls::TlsAcceptor::from(tls)), None),
    };
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = PerAddress::default();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // A free slot first, then the next connection. Over the cap, connections wait in
        // the kernel's accept queue (and past it clients retransmit their SYN) instead of
        // being closed: a rack of 5,000 machines asking at once is served a little later
        // rather than refused (lab/bench/storm.sh lost 15% of them to closed connections
        // when the 1,025th was closed at once). One machine still cannot hold more than
        // its address's share, and idle connections give their slots back.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!("HTTP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        if let Some(admission) = &admission
            && !super::boot::source(peer).is_some_and(|ip| admission.admits(ip))
        {
            tracing::debug!("HTTP connection from {peer}: no lease or reservation here, not in tftp_open: closed");
            refused(Refused::NotAdmitted);
            drop(stream);
            continue;
        }
        let Some(address_slot) = per_address.admit(peer.ip(), limits.max_per_address) else {
            refused(Refused::OverAddressCap);
            drop(stream);
            continue;
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        let assets = assets.clone();
        connections.spawn(async move {
            let _permit = permit;
            let _address_slot = address_slot;
            one_connection(stream, peer, app, acceptor, assets, limits).await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// One accepted connection: TLS, the zero-copy asset path or the router, until it ends
/// or stays idle past the limit.
async fn one_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    app: Router,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    assets: Option<super::zero_copy::Files>,
    limits: Limits,
) {
    let progress = Arc::new(AtomicU64::new(0));
    let watched = Watched {
        inner: stream,
        progress: progress.clone(),
    };
    let served = async {
        match (acceptor, assets) {
            (None, None) => serve_connection(watched, app, peer, None, false, limits).await,
            (None, Some(assets)) => {
                use super::zero_copy::{self, Outcome, Prefixed};
                let header_timeout = limits.header_read_timeout;
                let stream = watched.inner;
                match zero_copy::serve(stream, peer, &*assets, &progress, header_timeout).await {
                    Outcome::Closed => {}
                    Outcome::Router(read, stream) => {
                        let watched = Watched {
                            inner: stream,
                            progress: progress.clone(),
                        };
                        serve_connection(Prefixed::new(read, watched), app, peer, None, false, limits).await
                    }
                }
            }
            (Some(acceptor), _) => {
                let stream = watched;
                let tls = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::info!("TLS handshake from {peer} failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake from {peer} timed out");
                        return;
                    }
                };
                let operator = super::tls::operator(tls.get_ref().1.peer_certificates());
                serve_connection(tls, app, peer, operator, true, limits).await
            }
        }
    };
    tokio::select! {
        () = served => {}
        () = idle_watchdog(&progress, limits.idle_timeout) => {
            tracing::debug!("HTTP connection from {peer}: idle for {:?}, closed", limits.idle_timeout);
        }
    }
}

/// Open connections per client address; a slot gives its place back when dropped.
#[derive(Clone, Default)]
struct PerAddress(Arc<Mutex<HashMap<IpAddr, usize>>>);

struct AddressSlot {
    ip: IpAddr,
    table: PerAddress,
}

impl PerAddress {
    fn admit(&self, ip: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = t.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            ip,
            table: self.clone(),
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut t = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = t.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                t.remove(&self.ip); // the map holds only addresses with open connections
            }
        }
    }
}

/// The connection's socket, noting every byte that moves (as milliseconds since a fixed
/// start, for the idle watchdog).
struct Watched<IO> {
    inner: IO,
    progress: Arc<AtomicU64>,
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.progress.store(now_ms(), Ordering::Relaxed);
        }
        r
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.store(now_ms(), Ordering::Relaxed);
        }
        r
    }

    // Forwarded so hyper keeps writing headers and body in one vectored call (the default
    // would make it copy them into one buffer first).
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.progress.store(now_ms(), Ordering::Relaxed);
        }
        r
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

/// Returns once no byte has moved for `idle` (the connection is then dropped).
async fn idle_watchdog(progress: &AtomicU64, idle: Duration) {
    progress.store(now_ms(), Ordering::Relaxed);
    let idle_ms = idle.as_millis() as u64;
    loop {
        let quiet = now_ms().saturating_sub(progress.load(Ordering::Relaxed));
        if quiet >= idle_ms {
            return;
        }
        tokio::time::sleep(Duration::from_millis(idle_ms - quiet)).await;
    }
}

/// One HTTP/1.1 connection (plain or TLS): every request learns its peer (and operator,
/// and whether it came over TLS).
async fn serve_connection<IO>(
    io: IO,
    app: Router,
    peer: std::net::SocketAddr,
    operator: Option<super::tls::Operator>,
    over_tls: bool,
    limits: Limits,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(ConnectInfo(peer));
        if let Some(op) = &operator {
            req.extensions_mut().insert(op.clone());
        }
        if over_tls {
            req.extensions_mut().insert(super::tls::OverTls);
        }
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .serve_connection(TokioIo::new(io), service);
    if let Err(e) = conn.await {
        tracing::debug!("HTTP connection from {peer}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server(limits: Limits) -> (SocketAddr, watch::Sender<bool>, Arc<std::sync::atomic::AtomicU64>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route(
                "/",
                get(|ConnectInfo(p): ConnectInfo<SocketAddr>| async move { p.ip().to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        let (tx, rx) = watch::channel(false);
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = refused.clone();
        tokio::spawn(serve(
            listener,
            app,
            limits,
            rx,
            move |_| {
                r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
            Transport::Plain { assets: None },
            None,
        ));
        (addr, tx, refused)
    }

    async fn get_path(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    const SMALL: Limits = Limits {
        max_connections: 2,
        max_per_address: 2,
        idle_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(300),
    };

    #[tokio::test]
    async fn answers_with_the_peer_address_and_times_out_slow_handlers() {
        let (addr, _stop, _) = server(SMALL).await;
        let ok = get_path(addr, "/").await;
        assert!(ok.starts_with("HTTP/1.1 200") && ok.ends_with("127.0.0.1"), "{ok}");
        assert!(get_path(addr, "/slow").await.starts_with("HTTP/1.1 408"));
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let (addr, _stop, _) = server(SMALL).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await.unwrap();
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "the server closed the connection");
        assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    }

    #[tokio::test]
    async fn one_address_cannot_take_every_slot() {
        let limits = Limits {
            max_connections: 10,
            max_per_address: 1,
            header_read_timeout: Duration::from_secs(10),
            ..SMALL
        };
        let (addr, _stop, refused) = server(limits).await;
        let _held = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A second connection from 127.0.0.1: closed unanswered.
        let mut second = TcpStream::connect(addr).await.unwrap();
        let _ = second.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(3), second.read_to_end(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);
        // Another address is served.
        let other = tokio::net::TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = other.connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200") && out.ends_with("127.0.0.2"), "{out}");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_a_large_body_loses_its_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        const BODY: usize = 64 << 20;
        let app = Router::new().route("/big", get(|| async { vec![7u8; BODY] }));
        let (_stop, rx) = watch::channel(false);
        let limits = Limits {
            idle_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_secs(30),
            ..SMALL
        };
        tokio::spawn(serve(
            listener,
            app,
            limits,
            rx,
            |_| {},
            Transport::Plain { assets: None },
            None,
        ));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        // Read nothing: the socket buffers fill, the server can write no more.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
        assert!(r.is_ok(), "the connection was closed (read ended)");
        assert!(
            got.len() < BODY,
            "the whole body arrived: the idle connection was not closed"
        );
    }

    /// Over the cap on all connections, the next one is neither answered nor closed: it
    /// waits until a slot frees, then is served (a storm is served late, not refused).
    #[tokio::test]
    async fn a_connection_over_the_cap_waits_for_a_free_slot() {
        let limits = Limits {
            max_per_address: 16,
            header_read_timeout: Duration::from_secs(10),
            ..SMALL
        };
        let (addr, _stop, refused) = server(limits).await;
        // Two idle connections hold both slots.
        let a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let early = tokio::time::timeout(Duration::from_millis(700), c.read_to_end(&mut buf)).await;
        assert!(
            early.is_err() && buf.is_empty(),
            "no answer and no close while both slots are held"
        );
        // A slot frees when a connection goes: the waiting one is served.
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut buf))
            .await
            .expect("served once a slot freed")
            .unwrap();
        let out = String::from_utf8_lossy(&buf);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 0, "nothing refused");
    }
}
