//! One failover relationship at run time: the driver around the pure `Session`.
//!
//! It owns the I/O and nothing else: the listening socket (the secondary accepts only its
//! configured partner's address; a second connection from it while one is established is a
//! candidate that replaces the established one only once its first message is a CONNECT the
//! session accepts, so neither a silent impostor nor a garbage one locks the restarted
//! partner out, and neither takes over a working conversation without identifying itself),
//! dialling (the primary), the `Connection`, the one-second
//! timer, and the effects the session asks for: persisting state (before anything that
//! follows it), publishing the engine's rules, sending messages, and storing lease records
//! off the loop (the store's group commit batches them) with their BNDACK or their BNDUPDs
//! coming back through a channel once durable.
//!
//! The relationship state (ours, the partner's, their start times, MCLT and the HBA learnt)
//! is written durably on every change, so a restart comes back in STARTUP with the state it
//! left.
//!
//! With `tls` (two provds), every connection is mutual TLS with the pair's certificates
//! (`pki::pair`) before a single failover byte is read: the secondary does the handshake off
//! the loop (a slow or silent peer stalls nothing), the primary within its dial timeout; a
//! peer that does not present the site's unrevoked replication certificate is dropped. An
//! impostor at the partner's address then gets nothing, and the partner's bindings count.

use super::FailoverError;
use super::codec::Message;
use super::connection::Connection;
use super::session::{Effect, Input, Session};
use super::state::Refused;
use crate::clock::unix_now;
use crate::config::{Failover, FailoverRole};
use crate::dhcp::Leases;
use crate::dhcp::partner_updates::PartnerUpdates;
use crate::store::{LeaseRecord, Store};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

pub use super::session::{Persisted, Status};

/// How long the primary waits for the partner to accept a TCP connection.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one message may take to go out: a partner that stops reading (or an impostor
/// that never does) is disconnected instead of stalling the driver and everything queued
/// behind it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a second connection from the partner's address has to send its CONNECT.
const CANDIDATE_TIMEOUT: Duration = Duration::from_secs(5);

pub enum Command {
    PartnerDown(oneshot::Sender<Result<Status, Refused>>),
}

/// The handle the daemon keeps: status for the API, commands for the operator.
#[derive(Clone)]
pub struct Handle {
    /// The relationship's state as of its last change (the driver publishes, the API reads).
    pub status: watch::Receiver<Status>,
    pub commands: mpsc::Sender<Command>,
}

/// How long a TLS handshake with the partner may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes with connections from the partner's address at once (the partner needs one).
const HANDSHAKES_AT_ONCE: usize = 4;

/// What authenticates the partner when the relationship runs over TLS: our side of the
/// pair's mutual TLS and the registry that says what is revoked.
#[derive(Clone)]
pub struct PairAuth {
    pub tls: Arc<crate::pki::pair::PairTls>,
    pub registry: Arc<crate::pki::registry::Registry>,
}

/// Everything one relationship needs.
pub struct Relationship {
    pub cfg: Failover,
    pub site: String,
    pub leases: Leases,
    pub store: Store,
    /// Some when `cfg.tls`: the conversation runs inside mutual TLS.
    pub auth: Option<PairAuth>,
    /// A secondary's listening socket (`cfg.address:cfg.port`), bound before the daemon
    /// started anything; None on a primary, which dials.
    pub listener: Option<TcpListener>,
}

/// What finished off the loop and comes back to it.
enum Completion {
    /// A BNDACK whose update is now durable, for the connection it arrived on.
    Send { generation: u64, message: Message },
    /// A connection from the partner's address that finished its TLS handshake and
    /// presented the partner's certificate.
    Accepted { conn: Connection, from: SocketAddr },
    /// Records stored for `PersistThenQueue`.
    Durable {
        records: Vec<LeaseRecord>,
        then: Option<Message>,
    },
}

/// The state this relationship saved before its last stop, if readable.
fn load_saved(store: &Store, name: &str) -> Option<Persisted> {
    store
        .load_failover()
        .ok()?
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, json)| serde_json::from_slice::<Persisted>(&json).ok())
}

/// Start the relationship; returns the handle and the mailbox the DHCP server feeds with
/// durable lease changes (coalesced by address, so it cannot grow past the pools). The
/// engine has this relationship's rules before this returns.
pub fn start(
    rel: Relationship,
    shutdown: watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (Handle, PartnerUpdates) {
    let saved = load_saved(&rel.store, &rel.cfg.name);
    let session = Session::new(rel.cfg.clone(), rel.site.clone(), saved, unix_now());
    for e in session.start() {
        if let Effect::PublishRules(g) = e {
            rel.leases.set_rules(&rel.site, Arc::new(g));
        }
    }
    let (status_tx, status) = watch::channel(session.status());
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let updates = PartnerUpdates::new();
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let driver = Driver {
        session,
        rel,
        status: status_tx,
        conn: None,
        candidate: None,
        generation: 0,
        done_tx,
    };
    tasks.spawn(driver.run(updates.clone(), cmd_rx, done_rx, shutdown));
    (
        Handle {
            status,
            commands: cmd_tx,
        },
        updates.clone(),
    )
}

struct Driver {
    session: Session,
    rel: Relationship,
    status: watch::Sender<Status>,
    conn: Option<Connection>,
    /// A newer connection from the partner's address, waiting for its CONNECT (at most one:
    /// a newer candidate replaces an older one), with its deadline.
    candidate: Option<(Connection, tokio::time::Instant)>,
    /// Counts connections, so a BNDACK is never sent on a later connection than its BNDUPD's.
    generation: u64,
    done_tx: mpsc::UnboundedSender<Completion>,
}

/// The next message on the connection, or never when there is none.
async fn read(conn: &mut Option<Connection>) -> Result<Option<Message>, FailoverError> {
    match conn {
        Some(c) => c.read_message().await,
        None => std::future::pending().await,
    }
}

/// The first message of the candidate connection, or an error at its deadline; never when
/// there is none.
async fn read_candidate(
    candidate: &mut Option<(Connection, tokio::time::Instant)>,
) -> Result<Option<Message>, FailoverError> {
    match candidate {
        Some((c, deadline)) => match tokio::time::timeout_at(*deadline, c.read_message()).await {
            Ok(r) => r,
            Err(_) => Err(FailoverError::Closed("no CONNECT within 5 seconds")),
        },
        None => std::future::pending().await,
    }
}

async fn accept(listener: &Option<TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Why the relationship's state was not stored.
#[derive(Debug, thiserror::Error)]
enum PersistError {
    #[error("could not store failover state: {0}")]
    Store(crate::store::StoreError),
    #[error("the writer panicked: {0}")]
    Writer(tokio::task::JoinError),
}

/// Why a connection to or from the partner did not become the session's.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("connect {addr}: timed out")]
    DialTimedOut { addr: SocketAddr },
    #[error("connect {addr}: {source}")]
    Dial { addr: SocketAddr, source: std::io::Error },
    #[error("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimedOut,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("not the replication certificate of site {site}")]
    NotPartner { site: String },
}

/// The secondary's side of a TLS connection: the handshake, then the partner's certificate.
async fn handshake_accepted(stream: TcpStream, auth: &PairAuth, site: &str) -> Result<Connection, ConnectError> {
    let _ = stream.set_nodelay(true);
    let tls = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(auth.tls.server()).accept(stream),
    )
    .await
    .map_err(|_| ConnectError::HandshakeTimedOut)?
    .map_err(ConnectError::Tls)?;
    if !crate::pki::pair::is_partner(tls.get_ref().1.peer_certificates(), site, &auth.registry) {
        return Err(ConnectError::NotPartner { site: site.to_string() });
    }
    Ok(Connection::over(Box::new(tls)))
}

/// The primary's connection to the partner: TCP, and with `auth` TLS with the partner's
/// certificate checked, all within the dial timeout.
async fn dial(
    addr: SocketAddr,
    peer: std::net::Ipv4Addr,
    auth: Option<&PairAuth>,
    site: &str,
) -> Result<Connection, ConnectError> {
    let stream = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnectError::DialTimedOut { addr })?
        .map_err(|source| ConnectError::Dial { addr, source })?;
    let Some(auth) = auth else {
        return Ok(Connection::new(stream));
    };
    let _ = stream.set_nodelay(true);
    let handshake = async {
        let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(peer).into());
        let tls = tokio_rustls::TlsConnector::from(auth.tls.client())
            .connect(name, stream)
            .await
            .map_err(ConnectError::Tls)?;
        if !crate::pki::pair::is_partner(tls.get_ref().1.peer_certificates(), site, &auth.registry) {
            return Err(ConnectError::NotPartner { site: site.to_string() });
        }
        Ok(Connection::over(Box::new(tls)))
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| ConnectError::HandshakeTimedOut)?
}

impl Driver {
    fn name(&self) -> &str {
        &self.rel.cfg.name
    }

    async fn run(
        mut self,
        updates: PartnerUpdates,
        mut commands: mpsc::Receiver<Command>,
        mut done: mpsc::UnboundedReceiver<Completion>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let cfg = self.rel.cfg.clone();
        let listener = self.rel.listener.take();
        if cfg.role == FailoverRole::Secondary && listener.is_none() {
            tracing::error!("failover {}: a secondary without a listening socket", cfg.name);
            self.session.note_error("not listening".to_string());
        }
        tracing::info!(
            "failover {} ({:?}) on {}:{}, partner {}:{}",
            cfg.name,
            cfg.role,
            cfg.address,
            cfg.port,
            cfg.peer_address,
            cfg.peer_port
        );
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                Some(c) = done.recv() => match c {
                    Completion::Send { generation, message } => {
                        if generation == self.generation {
                            self.perform(vec![Effect::Send(message)]).await;
                            self.input(Input::UpdateAcknowledged).await;
                        }
                    }
                    Completion::Durable { records, then } => self.input(Input::Durable { records, then }).await,
                    Completion::Accepted { conn, from } => self.accepted(conn, from).await,
                },
                _ = shutdown.changed() => {
                    self.input(Input::Shutdown).await;
                    return;
                }
                Some(cmd) = commands.recv() => match cmd {
                    Command::PartnerDown(reply) => {
                        let r = self.session.partner_down(unix_now());
                        let r = match r {
                            Ok(fx) => {
                                self.perform(fx).await;
                                Ok(self.session.status())
                            }
                            Err(e) => Err(e),
                        };
                        self.publish_status();
                        let _ = reply.send(r);
                    }
                },
                batch = updates.next_batch() => {
                    for r in batch {
                        self.input(Input::LeaseChanged(r)).await;
                    }
                }
                accepted = accept(&listener) => {
                    if let Ok((stream, from)) = accepted {
                        if from.ip() != std::net::IpAddr::V4(cfg.peer_address) {
                            tracing::warn!("failover {}: refused a connection from {from} (not the partner)", cfg.name);
                            continue;
                        }
                        match &self.rel.auth {
                            None => self.accepted(Connection::new(stream), from).await,
                            Some(auth) => {
                                // The handshake off the loop; the connection comes back
                                // through `done` only if it is the partner.
                                // At most HANDSHAKES_AT_ONCE: a flood of connections from the
                                // partner's address is dropped, not turned into tasks.
                                let Ok(slot) = handshakes.clone().try_acquire_owned() else {
                                    tracing::warn!("failover {}: refused a connection from {from}: handshakes in progress", cfg.name);
                                    continue;
                                };
                                let (auth, done, site) = (auth.clone(), self.done_tx.clone(), self.rel.site.clone());
                                let name = cfg.name.clone();
                                tokio::spawn(async move {
                                    let _slot = slot;
                                    match handshake_accepted(stream, &auth, &site).await {
                                        Ok(conn) => {
                                            let _ = done.send(Completion::Accepted { conn, from });
                                        }
                                        Err(why) => tracing::warn!("failover {name}: refused a connection from {from}: {why}"),
                                    }
                                });
                            }
                        }
                    }
                }
                first = read_candidate(&mut self.candidate) => self.on_candidate(first).await,
                msg = read(&mut self.conn) => match msg {
                    Ok(Some(m)) => self.input(Input::Message(m)).await,
                    Ok(None) => self.lost("closed by the partner".into()).await,
                    Err(e) => self.lost(e.to_string()).await,
                },
                _ = tick.tick() => self.input(Input::Tick).await,
            }
        }
    }

    /// A connection from the partner's address (authenticated first, with `tls`).
    async fn accepted(&mut self, conn: Connection, from: SocketAddr) {
        if self.conn.is_some() {
            // A partner that restarted dials again while we still hold its old connection
            // (or an impostor's): the newcomer must CONNECT.
            tracing::info!(
                "failover {}: a second connection from {from}; it replaces the established one if it sends a valid CONNECT",
                self.name()
            );
            self.candidate = Some((conn, tokio::time::Instant::now() + CANDIDATE_TIMEOUT));
            return;
        }
        self.connected(conn).await;
    }

    async fn connected(&mut self, conn: Connection) {
        if let Some(old) = self.conn.replace(conn) {
            old.shutdown().await;
        }
        self.generation += 1;
        self.input(Input::Connected).await;
    }

    /// The candidate's first message: a CONNECT the session accepts makes it the connection
    /// (the old one is shut down and the session told, then the CONNECT handled as on any new
    /// connection); anything else drops the candidate and keeps the established connection.
    async fn on_candidate(&mut self, first: Result<Option<Message>, FailoverError>) {
        let Some((conn, _)) = self.candidate.take() else {
            return;
        };
        match first {
            Ok(Some(m)) => match self.session.connect_refusal(&m, unix_now()) {
                None => {
                    tracing::warn!(
                        "failover {}: a new connection from the partner's address sent a valid CONNECT; it replaces the established one",
                        self.name()
                    );
                    // `connected` shuts the old connection and the session requeues what
                    // was in flight on it.
                    self.connected(conn).await;
                    self.input(Input::Message(m)).await;
                }
                Some((_, why)) => self.refuse_candidate(conn, why).await,
            },
            Ok(None) => self.refuse_candidate(conn, "closed before its CONNECT").await,
            Err(e) => self.refuse_candidate(conn, &e.to_string()).await,
        }
    }

    async fn refuse_candidate(&mut self, conn: Connection, why: &str) {
        tracing::warn!(
            "failover {}: refused a second connection from the partner's address ({why}); the established one stays",
            self.name()
        );
        self.session.note_error(format!("refused a second connection: {why}"));
        self.publish_status();
        conn.shutdown().await;
    }

    async fn lost(&mut self, why: String) {
        self.conn = None;
        self.input(Input::Closed(why)).await;
    }

    async fn input(&mut self, input: Input) {
        let fx = self.session.handle(input, unix_now(), &self.rel.leases);
        self.perform(fx).await;
        self.publish_status();
    }

    fn publish_status(&self) {
        self.status.send_replace(self.session.status());
    }

    /// Perform effects in order; effects of inputs they cause (a failed send, a dial) join
    /// the end of the list.
    async fn perform(&mut self, fx: Vec<Effect>) {
        let mut pending: VecDeque<Effect> = fx.into();
        while let Some(e) = pending.pop_front() {
            match e {
                Effect::PersistState { state, then } => {
                    if let Err(why) = self.persist_state(state).await {
                        // Durable first: what depended on this state (a STATE message, new
                        // rules, acknowledgements) is dropped, and so is what was queued after
                        // it. The connection goes too, so the partner hears nothing this
                        // server could not keep; the session detaches, and its next state is
                        // written again before anyone is told.
                        tracing::error!(
                            "failover {}: state not stored ({why}): {} dependent effect(s) dropped, disconnecting",
                            self.name(),
                            then.len() + pending.len()
                        );
                        pending.clear();
                        if let Some(c) = self.conn.take() {
                            c.shutdown().await;
                            let closed = Input::Closed(format!("state not stored: {why}"));
                            pending.extend(self.session.handle(closed, unix_now(), &self.rel.leases));
                        }
                        continue;
                    }
                    // Ahead of anything queued after this write, in their order.
                    for e in then.into_iter().rev() {
                        pending.push_front(e);
                    }
                }
                Effect::PublishRules(g) => {
                    self.rel.leases.set_rules(&self.rel.site, Arc::new(g));
                }
                Effect::Send(m) => {
                    let Some(c) = self.conn.as_mut() else {
                        continue; // not connected: the session re-sends what matters
                    };
                    let written = match tokio::time::timeout(WRITE_TIMEOUT, c.write_message(&m)).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!("not read by the partner within {} s", WRITE_TIMEOUT.as_secs())),
                    };
                    if let Err(e) = written {
                        // Dropped, not shut down: a shutdown would flush into the same
                        // full buffer.
                        self.conn = None;
                        let more =
                            self.session
                                .handle(Input::Closed(format!("send: {e}")), unix_now(), &self.rel.leases);
                        pending.extend(more);
                    }
                }
                Effect::PersistThenSend { records, then } => {
                    let (store, done, generation) = (self.rel.store.clone(), self.done_tx.clone(), self.generation);
                    tokio::spawn(async move {
                        match store.persist(records).await {
                            Ok(()) => {
                                let _ = done.send(Completion::Send {
                                    generation,
                                    message: then,
                                });
                            }
                            Err(e) => tracing::error!("failover: update not stored, not acknowledged: {e}"),
                        }
                    });
                }
                Effect::PersistThenQueue { records, then } => {
                    let (store, done) = (self.rel.store.clone(), self.done_tx.clone());
                    tokio::spawn(async move {
                        match store.persist(records.clone()).await {
                            Ok(()) => {
                                let _ = done.send(Completion::Durable { records, then });
                            }
                            Err(e) => tracing::error!("failover: pool balance not stored, not sent: {e}"),
                        }
                    });
                }
                Effect::Lease(change) => {
                    // The table changes now, in order; the write it needs goes first.
                    let left = super::table::apply(change, &self.rel.leases, &self.rel.cfg.pools, &self.rel.site);
                    if let Some(e) = super::session::stored(left) {
                        pending.push_front(e);
                    }
                }
                Effect::Persist(records) => {
                    let store = self.rel.store.clone();
                    tokio::spawn(async move {
                        if let Err(e) = store.persist(records).await {
                            tracing::warn!("failover: acknowledged time not stored: {e}");
                        }
                    });
                }
                Effect::Dial => {
                    let cfg = &self.rel.cfg;
                    let addr = SocketAddr::from((cfg.peer_address, cfg.peer_port));
                    let input = match dial(addr, cfg.peer_address, self.rel.auth.as_ref(), &self.rel.site).await {
                        Ok(conn) => {
                            if let Some(old) = self.conn.replace(conn) {
                                old.shutdown().await;
                            }
                            self.generation += 1;
                            Input::Connected
                        }
                        // The session keeps the reason as its last error, in words.
                        Err(why) => Input::DialFailed(format!("{addr}: {why}")),
                    };
                    pending.extend(self.session.handle(input, unix_now(), &self.rel.leases));
                }
                Effect::Disconnect => {
                    if let Some(c) = self.conn.take() {
                        c.shutdown().await;
                    }
                }
            }
        }
    }

    /// The state is durable before any effect after it is performed.
    /// Write the relationship's state durably (the error is also the session's last error).
    async fn persist_state(&mut self, p: Persisted) -> Result<(), PersistError> {
        let (store, name) = (self.rel.store.clone(), self.name().to_string());
        let json = serde_json::to_vec(&p).expect("serialisable");
        let r = tokio::task::spawn_blocking(move || store.put_failover_blocking(&name, &json)).await;
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                let why = PersistError::Store(e);
                self.session.note_error(&why);
                Err(why)
            }
            Err(e) => Err(PersistError::Writer(e)),
        }
    }
}
