//! The replication link of one site's pair: mutual TLS with certificates from the site's
//! CA, then `wire` messages both ways.
//!
//! Who connects: the failover primary dials the secondary's `replication_port`; the
//! secondary accepts only from the configured peer address. A connection from that address
//! proves nothing (any machine on the LAN can claim it), so the secondary keeps accepting
//! while a link runs: each newcomer gets `Timing::handshake` to complete TLS as the partner
//! (at most `MAX_PENDING_HANDSHAKES` at once), and one that does replaces the link in use
//! (the partner reconnecting after a restart or a half-open connection). A silent
//! connection therefore holds nothing. Both present a certificate with
//! OU "provd replication site NAME" issued by their CA at start; each checks that the
//! other's chains to its own CA (so both hold the same CA) and carries that OU (so a
//! hypervisor's or an operator's certificate from the same CA is refused).
//!
//! Per connection: Hello, the full dump, Synced, then live changes and a keepalive whenever
//! the link is quiet; the receiver merges everything (the rules beside each record). A
//! session ends when the partner says nothing for `Timing::idle`, does not take a message
//! within `Timing::write`, or when the certificate it connected with is revoked. The first complete dump received marks the site synchronised
//! (durably), which releases the install hold of a new or rebuilt server.

use super::wire::{self, Message};
use crate::config::{Failover, FailoverRole};
use crate::inventory::Inventory;
use crate::nocloud;
use crate::pki::registry::Registry;
use crate::store::Store;
use rustls::pki_types::ServerName;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What `provd failover status` shows about the pair's inventory.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Status {
    pub site: String,
    pub partner: String,
    pub connected: bool,
    /// Unix time of the first complete dump ever received from the partner (0: never; a
    /// server that never synchronised serves no installs).
    pub synced_at: u64,
    /// Unix time of the last complete dump received (this connection or an earlier one).
    pub last_sync: u64,
    /// Unix time the last record arrived from the partner.
    pub last_received: u64,
    pub records_sent: u64,
    pub records_received: u64,
    /// Received records that changed ours.
    pub records_applied: u64,
    pub last_error: Option<String>,
}

/// Everything the pair shares, and where it lives here.
#[derive(Clone)]
pub struct Shared {
    pub inventory: Arc<Inventory>,
    pub certificates: Arc<Registry>,
    pub nocloud: Arc<nocloud::Registry>,
    pub store: Store,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the partner's certificate is not a replication certificate of site {0}")]
    NotPartner(String),
    #[error("{0}")]
    Wire(#[from] wire::WireError),
    #[error("the partner says it serves site {theirs:?}, not {ours:?}")]
    WrongSite { ours: String, theirs: String },
    #[error("the partner sent {0} before Hello")]
    NoHello(&'static str),
    #[error("no Hello from the partner in time")]
    Silent,
    #[error("the connection did not complete TLS within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("nothing from the partner for {0:?}")]
    Idle(Duration),
    #[error("the partner took no data for {0:?}")]
    WriteTimeout(Duration),
    #[error("the partner's certificate {0} was revoked")]
    Revoked(String),
    #[error("applying the partner's host record: {0}")]
    Inventory(#[from] crate::inventory::InventoryError),
    #[error("applying the partner's certificate record: {0}")]
    Registry(#[from] crate::pki::registry::RegistryError),
    #[error("storing what the partner sent: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("a local task ended: {0}")]
    Task(#[from] tokio::task::JoinError),
}

fn tls_failed(e: impl std::fmt::Display) -> LinkError {
    LinkError::Tls(e.to_string())
}

/// The TLS side of one site's link (shared with the failover conversation between two
/// provds): `pki::pair`.
pub use crate::pki::pair::PairTls as Credentials;
use crate::pki::pair::partner_serial;

/// The link's clocks.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// TCP connect, TLS and the Hello exchange, each bounded by this.
    pub handshake: Duration,
    /// A keepalive is sent after this long without sending anything.
    pub keepalive: Duration,
    /// Nothing from the partner for this long (several keepalives) ends the session.
    pub idle: Duration,
    /// A message the partner does not take within this ends the session.
    pub write: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            handshake: Duration::from_secs(10),
            keepalive: Duration::from_secs(5),
            idle: Duration::from_secs(20),
            write: Duration::from_secs(15),
        }
    }
}

/// Connections from the partner's address completing their TLS handshake at once; more are
/// closed at accept. Each is bounded by `Timing::handshake`, so a flood of silent
/// connections delays the real partner by at most that long per retry, never forever.
pub const MAX_PENDING_HANDSHAKES: usize = 8;

/// Run the link of `cfg`'s site until `stop`: connect (a primary) or accept on `listener`
/// (a secondary's, bound by the daemon at `cfg.address:cfg.replication_port`), sync, repeat.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    site: String,
    cfg: Failover,
    creds: Arc<Credentials>,
    shared: Shared,
    listener: Option<TcpListener>,
    status: watch::Sender<Status>,
    timing: Timing,
    stop: watch::Receiver<bool>,
) {
    let link = Link {
        site,
        cfg,
        creds,
        shared,
        status,
        timing,
    };
    match (link.cfg.role, listener) {
        (FailoverRole::Secondary, Some(l)) => link.accept(l, stop).await,
        (FailoverRole::Secondary, None) => {
            let why = format!(
                "not listening on {}",
                SocketAddr::from((link.cfg.address, link.cfg.replication_port))
            );
            tracing::error!("replication (site {}): {why}", link.site);
            link.status.send_modify(|st| st.last_error = Some(why));
        }
        (FailoverRole::Primary, _) => link.dial(stop).await,
    }
}

/// One site's link and what it needs; `run` owns it.
struct Link {
    site: String,
    cfg: Failover,
    creds: Arc<Credentials>,
    shared: Shared,
    status: watch::Sender<Status>,
    timing: Timing,
}

impl Link {
    fn remote(&self) -> SocketAddr {
        SocketAddr::from((self.cfg.peer_address, self.cfg.replication_port))
    }

    /// A session (or an attempt) ended: show it.
    fn ended(&self, result: &Result<(), LinkError>) {
        if let Err(e) = result {
            tracing::warn!("replication (site {}) with {}: {e}", self.site, self.remote());
        }
        self.status.send_modify(|st| {
            st.connected = false;
            if let Err(e) = result {
                st.last_error = Some(e.to_string());
            }
        });
    }

    /// The primary: dial the secondary, run a session, wait (backing off after failures),
    /// repeat.
    async fn dial(&self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let attempt = async {
                let handshake = async {
                    let tcp = TcpStream::connect(self.remote()).await?;
                    let name = ServerName::IpAddress(self.cfg.peer_address.into());
                    tokio_rustls::TlsConnector::from(self.creds.client())
                        .connect(name, tcp)
                        .await
                        .map_err(tls_failed)
                };
                let tls = tokio::time::timeout(self.timing.handshake, handshake)
                    .await
                    .map_err(|_| LinkError::HandshakeTimeout(self.timing.handshake))??;
                let serial = partner_serial(
                    tls.get_ref().1.peer_certificates(),
                    &self.site,
                    &self.shared.certificates,
                )
                .ok_or_else(|| LinkError::NotPartner(self.site.clone()))?;
                session(self, tls, &serial).await
            };
            let result = tokio::select! {
                r = attempt => r,
                _ = stop.changed() => return,
            };
            if result.is_ok() {
                backoff = Duration::from_millis(500);
            }
            self.ended(&result);
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// The secondary: accept from the partner's address for as long as provd runs; each
    /// connection that proves itself the partner becomes the session, replacing the one
    /// before it.
    async fn accept(&self, listener: TcpListener, mut stop: watch::Receiver<bool>) {
        type Authenticated = Result<(tokio_rustls::server::TlsStream<TcpStream>, String), LinkError>;
        type Session<'s> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), LinkError>> + Send + 's>>;
        let mut handshakes: tokio::task::JoinSet<Authenticated> = tokio::task::JoinSet::new();
        let mut current: Option<Session<'_>> = None;
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of descriptors or similar: wait rather than spin.
                            tracing::warn!("replication (site {}): accept: {e}", self.site);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    if peer.ip() != IpAddr::V4(self.cfg.peer_address) {
                        tracing::warn!("replication (site {}): refused a connection from {peer}: not the partner", self.site);
                        continue;
                    }
                    if handshakes.len() >= MAX_PENDING_HANDSHAKES {
                        tracing::warn!(
                            "replication (site {}): refused a connection from {peer}: {MAX_PENDING_HANDSHAKES} handshakes already pending",
                            self.site
                        );
                        continue;
                    }
                    let (acceptor, limit) = (tokio_rustls::TlsAcceptor::from(self.creds.server()), self.timing.handshake);
                    let (site, registry) = (self.site.clone(), self.shared.certificates.clone());
                    handshakes.spawn(async move {
                        let tls = tokio::time::timeout(limit, acceptor.accept(tcp))
                            .await
                            .map_err(|_| LinkError::HandshakeTimeout(limit))?
                            .map_err(tls_failed)?;
                        let serial = partner_serial(tls.get_ref().1.peer_certificates(), &site, &registry)
                            .ok_or(LinkError::NotPartner(site))?;
                        Ok((tls, serial))
                    });
                }
                Some(done) = handshakes.join_next() => match done {
                    Ok(Ok((tls, serial))) => {
                        if current.is_some() {
                            tracing::info!(
                                "replication (site {}): the partner connected again; its new connection replaces the old one",
                                self.site
                            );
                        }
                        self.status.send_modify(|st| st.connected = false);
                        current = Some(Box::pin(async move { session(self, tls, &serial).await }));
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("replication (site {}): a connection from {}: {e}", self.site, self.cfg.peer_address);
                        if current.is_none() {
                            self.status.send_modify(|st| st.last_error = Some(e.to_string()));
                        }
                    }
                    Err(e) => tracing::error!("replication (site {}): a handshake task failed: {e}", self.site),
                },
                result = async { current.as_mut().expect("guarded").await }, if current.is_some() => {
                    current = None;
                    self.ended(&result);
                }
                _ = stop.changed() => return,
            }
        }
    }
}

fn site_of_seed(seed: &nocloud::Seed, site: &str) -> bool {
    seed.site == site
}

/// Everything we hold for `site`, as messages (the dump).
async fn dump(site: &str, shared: &Shared) -> Vec<Message> {
    let mut out: Vec<Message> = shared
        .inventory
        .list()
        .await
        .into_iter()
        .filter(|r| r.site.as_deref().is_none_or(|s| s == site))
        .map(|r| Message::Host(Box::new(r)))
        .collect();
    out.extend(shared.certificates.certificates().into_iter().map(Message::Certificate));
    out.extend(
        shared
            .nocloud
            .entries()
            .into_iter()
            .filter(|(_, s)| site_of_seed(s, site))
            .map(|(token, seed)| Message::Seed { token, seed }),
    );
    out.push(Message::Synced);
    out
}

/// One connected session: Hello both ways, dumps, then live changes, until either side
/// goes, the partner falls silent, or `peer_serial` (its certificate) is revoked.
async fn session<S>(link: &Link, stream: S, peer_serial: &str) -> Result<(), LinkError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (site, shared, status, timing) = (link.site.as_str(), &link.shared, &link.status, link.timing);
    // Subscribe before dumping: a change made during the dump is sent (again) after it.
    let mut hosts = shared.inventory.subscribe();
    let mut certs = shared.certificates.subscribe();
    let mut seeds = shared.nocloud.subscribe();
    let (reader, mut writer) = tokio::io::split(stream);
    let mut lines = BufReader::new(reader);
    let server_id = shared
        .store
        .meta_blocking("server-id")
        .ok()
        .flatten()
        .unwrap_or_default();
    let hello = Message::Hello {
        site: site.to_string(),
        server: server_id,
    };
    send_all(&mut writer, std::slice::from_ref(&hello), timing.write).await?;
    match tokio::time::timeout(timing.handshake, read_message(&mut lines)).await {
        Err(_) => return Err(LinkError::Silent),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) => return Ok(()),
        Ok(Ok(Some(Message::Hello { site: theirs, .. }))) if theirs != site => {
            return Err(LinkError::WrongSite {
                ours: site.to_string(),
                theirs,
            });
        }
        Ok(Ok(Some(Message::Hello { .. }))) => {}
        Ok(Ok(Some(_))) => return Err(LinkError::NoHello("a record")),
    }
    status.send_modify(|st| {
        st.connected = true;
        st.last_error = None;
    });
    tracing::info!("replication (site {site}): connected; sending the full dump");

    let send = async {
        let everything = dump(site, shared).await;
        send_all(&mut writer, &everything, timing.write).await?;
        status.send_modify(|st| st.records_sent += everything.len() as u64);
        let mut quiet = tokio::time::interval(timing.keepalive);
        quiet.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        quiet.reset();
        loop {
            let m = tokio::select! {
                r = hosts.recv() => match r {
                    Ok(h) if h.site.as_deref().is_none_or(|s| s == site) => vec![Message::Host(Box::new(h))],
                    Ok(_) => continue,
                    // We fell behind: the full dump again says everything.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dump(site, shared).await,
                    Err(_) => return Ok::<(), LinkError>(()),
                },
                r = certs.recv() => match r {
                    Ok(c) => vec![Message::Certificate(c)],
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dump(site, shared).await,
                    Err(_) => return Ok(()),
                },
                r = seeds.recv() => match r {
                    Ok((token, seed)) if site_of_seed(&seed, site) => vec![Message::Seed { token, seed }],
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => dump(site, shared).await,
                    Err(_) => return Ok(()),
                },
                _ = quiet.tick() => vec![Message::Keepalive],
            };
            send_all(&mut writer, &m, timing.write).await?;
            quiet.reset();
            let records = m.iter().filter(|m| !matches!(m, Message::Keepalive)).count();
            status.send_modify(|st| st.records_sent += records as u64);
            // Revoked here (`provd pki revoke`) or learnt from the partner's own records:
            // the link it opened with that certificate ends now, after telling it.
            if shared.certificates.is_revoked(peer_serial) {
                return Err(LinkError::Revoked(peer_serial.to_string()));
            }
        }
    };
    let receive = async {
        loop {
            let next = tokio::time::timeout(timing.idle, read_message(&mut lines))
                .await
                .map_err(|_| LinkError::Idle(timing.idle))?;
            match next? {
                Some(m) => apply(site, m, shared, status).await?,
                None => return Ok::<(), LinkError>(()),
            }
        }
    };
    tokio::select! {
        r = send => r,
        r = receive => r,
    }
}

/// Write `messages` and flush, all within `limit` (a partner that stops reading cannot hold
/// the session forever on a full TCP window).
async fn send_all<W: AsyncWrite + Unpin>(
    writer: &mut W,
    messages: &[Message],
    limit: Duration,
) -> Result<(), LinkError> {
    let write = async {
        for m in messages {
            writer.write_all(&wire::encode(m)).await?;
        }
        writer.flush().await
    };
    tokio::time::timeout(limit, write)
        .await
        .map_err(|_| LinkError::WriteTimeout(limit))?
        .map_err(LinkError::Io)
}

/// Read one message; None at a clean end of the stream.
async fn read_message<R: AsyncRead + Unpin>(lines: &mut BufReader<R>) -> Result<Option<Message>, LinkError> {
    let mut buf = Vec::new();
    let n = tokio::io::AsyncReadExt::take(&mut *lines, wire::MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(wire::WireError::TooLong.into());
    }
    buf.pop();
    Ok(Some(wire::decode(&buf)?))
}

async fn apply(site: &str, m: Message, shared: &Shared, status: &watch::Sender<Status>) -> Result<(), LinkError> {
    let now = crate::clock::unix_now();
    let changed = match m {
        Message::Hello { .. } => return Err(LinkError::NoHello("a second Hello")),
        Message::Keepalive => return Ok(()),
        Message::Host(r) => shared.inventory.apply_remote(*r).await?,
        Message::Certificate(c) => shared.certificates.apply_remote(c).await?,
        Message::Seed { token, seed } => {
            let reg = shared.nocloud.clone();
            tokio::task::spawn_blocking(move || reg.apply_remote_blocking(&token, seed)).await??
        }
        Message::Synced => {
            let store = shared.store.clone();
            let key = synced_key(site);
            let first = tokio::task::spawn_blocking(move || -> Result<bool, crate::store::StoreError> {
                let first = store.meta_blocking(&key)?.is_none();
                if first {
                    store.set_meta_blocking(&key, &crate::clock::unix_now().to_string())?;
                }
                Ok(first)
            })
            .await??;
            shared.inventory.hold_installs(site, false);
            status.send_modify(|st| {
                st.last_sync = now;
                if st.synced_at == 0 {
                    st.synced_at = now;
                }
            });
            if first {
                tracing::info!(
                    "replication (site {site}): first synchronisation with the partner complete; installs allowed"
                );
            }
            return Ok(());
        }
    };
    status.send_modify(|st| {
        st.records_received += 1;
        st.last_received = now;
        if changed {
            st.records_applied += 1;
        }
    });
    Ok(())
}

/// The store key that says `site`'s pair has synchronised once (value: unix time).
pub fn synced_key(site: &str) -> String {
    format!("replication-synced:{site}")
}

#[cfg(test)]
mod tests;
