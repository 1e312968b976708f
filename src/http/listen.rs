//! Serving a router on a TCP listener with the limits a hostile network needs: a cap on
//! open connections (one more is closed at once), a deadline for a request's headers
//! (slow-loris), and a deadline for a handler to produce its response (tower-http's
//! timeout: a body that streams a kernel for minutes is not cut, its handler answered in
//! time). Each request sees its peer address as axum's `ConnectInfo`.
//!
//! With a TLS configuration (the admin listener's `api_tls`), each connection is a TLS
//! handshake first (bounded by the header deadline too); a verified admin client
//! certificate reaches handlers as the request extension `tls::Operator`.
//!
//! HTTP/1.1 only, like `axum::serve` with axum's default features: iPXE, curl, Anaconda and
//! UEFI HTTP boot all speak it.

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once; the next is closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a handler may take to produce its response (408 after that).
    pub request_timeout: Duration,
}

/// Boot listeners: hundreds of machines booting at once, each with a few connections.
pub const BOOT_LIMITS: Limits = Limits {
    max_connections: 1024,
    header_read_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(30),
};

/// The admin listener: a few authenticated operators and scripts. Its handlers may run
/// long (a drain live-migrates every VM of a hypervisor), so the handler deadline is an
/// hour; headers still have 10 s.
pub const API_LIMITS: Limits = Limits {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(10),
    request_timeout: Duration::from_secs(3600),
};

/// Serve `app` on `listener` until `stop` turns true; connections in flight get a few
/// seconds to finish. `refused` counts connections closed for being over the cap. With
/// `tls`, every connection is HTTPS.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    refused: impl Fn() + Send + 'static,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let app = app.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
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
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused();
            drop(stream);
            continue;
        };
        let app = app.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(stream, app, peer, None, limits).await,
                Some(acceptor) => {
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
                    serve_connection(tls, app, peer, operator, limits).await
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// One HTTP/1.1 connection (plain or TLS): every request learns its peer (and operator).
async fn serve_connection<IO>(
    io: IO,
    app: Router,
    peer: std::net::SocketAddr,
    operator: Option<super::tls::Operator>,
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
            move || {
                r.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            },
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
    async fn connections_over_the_cap_are_closed_and_counted() {
        let limits = Limits {
            header_read_timeout: Duration::from_secs(10),
            ..SMALL
        };
        let (addr, _stop, refused) = server(limits).await;
        // Two idle connections hold both slots.
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut buf))
            .await
            .expect("closed at once")
            .unwrap_or(0);
        assert_eq!(n, 0, "no answer over the cap");
        assert_eq!(refused.load(std::sync::atomic::Ordering::Relaxed), 1);
        // A slot frees when a connection goes.
        drop(_a);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(get_path(addr, "/").await.starts_with("HTTP/1.1 200"));
    }
}
