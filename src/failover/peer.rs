//! One failover relationship at run time: the TCP connection to the partner, the protocol
//! conversation on it, and the state that survives restarts.
//!
//! The primary connects to the partner (every 5 s until it answers, as ISC does); the
//! secondary listens and accepts only its partner's address. On a connection: CONNECT /
//! CONNECTACK (the secondary learns MCLT and the hash buckets from the primary), then STATE
//! from both, CONTACT keepalives at a third of the receive timer, and lease traffic:
//!
//! - every lease change this server makes, once durable, goes out as BNDUPD; at most
//!   max-unacked-updates are in flight; the BNDACK records what the partner now knows (tsfp);
//! - a BNDUPD from the partner is applied to the lease table, made durable, then acknowledged;
//! - UPDREQALL / UPDREQ are answered with every binding of the covered pools, then UPDDONE;
//! - the secondary asks for addresses with POOLREQ; the primary balances its free addresses
//!   (half to BACKUP) and answers POOLRESP.
//!
//! The state (ours, the partner's, their start times, MCLT and the HBA learnt) is written
//! durably on every change, so a restart comes back in STARTUP with the state it left.

use super::binding::{bndupd, partner_binding};
use super::codec::{self, Message, MessageType, Value, code};
use super::gate::Gate;
use super::loadbalance::Role;
use super::state::{self, Action, Context, Event, Refused, State};
use crate::clock::unix_now;
use crate::config::{Failover, FailoverRole};
use crate::dhcp::Leases;
use crate::store::{LeaseRecord, Store};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

/// What is stored (and shown by `provd failover status`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Persisted {
    pub state: State,
    pub stos: u64,
    pub partner_state: Option<State>,
    pub partner_stos: u64,
    pub mclt: u32,
    #[serde(default)]
    pub hba: Option<Vec<u8>>,
}

/// The live view of a relationship.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub site: String,
    pub role: String,
    pub state: State,
    pub stos: u64,
    pub partner_state: Option<State>,
    pub partner_stos: u64,
    pub connected: bool,
    pub partner: String,
    pub mclt: u32,
    pub unacked_updates: usize,
    pub queued_updates: usize,
    pub updates_sent: u64,
    pub updates_received: u64,
    pub last_error: Option<String>,
}

pub enum Command {
    PartnerDown(oneshot::Sender<Result<Status, String>>),
}

/// The handle the daemon keeps: status for the API, commands for the operator.
#[derive(Clone)]
pub struct Handle {
    pub status: Arc<Mutex<Status>>,
    pub commands: mpsc::Sender<Command>,
}

fn role_of(f: &Failover) -> Role {
    match f.role {
        FailoverRole::Primary => Role::Primary,
        FailoverRole::Secondary => Role::Secondary,
    }
}

/// Everything one relationship needs.
pub struct Relationship {
    pub cfg: Failover,
    pub site: String,
    pub leases: Leases,
    pub store: Store,
}

/// Start the relationship; returns the handle and the sender the DHCP server feeds with
/// durable lease changes.
pub fn start(
    rel: Relationship,
    shutdown: watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> (Handle, mpsc::UnboundedSender<LeaseRecord>) {
    let now = unix_now();
    let saved = rel
        .store
        .load_failover()
        .ok()
        .and_then(|rows| rows.into_iter().find(|(n, _)| *n == rel.cfg.name))
        .and_then(|(_, json)| serde_json::from_slice::<Persisted>(&json).ok());
    let mclt = match rel.cfg.role {
        FailoverRole::Primary => rel.cfg.mclt,
        FailoverRole::Secondary => saved.as_ref().map_or(0, |p| p.mclt),
    };
    let hba = match rel.cfg.role {
        FailoverRole::Primary => rel.cfg.hba,
        FailoverRole::Secondary => saved
            .as_ref()
            .and_then(|p| p.hba.as_ref())
            .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()),
    };
    let status = Status {
        name: rel.cfg.name.clone(),
        site: rel.site.clone(),
        role: match rel.cfg.role {
            FailoverRole::Primary => "primary".into(),
            FailoverRole::Secondary => "secondary".into(),
        },
        state: State::Startup,
        stos: now,
        partner_state: saved.as_ref().and_then(|p| p.partner_state),
        partner_stos: saved.as_ref().map_or(0, |p| p.partner_stos),
        connected: false,
        partner: format!("{}:{}", rel.cfg.peer_address, rel.cfg.peer_port),
        mclt,
        unacked_updates: 0,
        queued_updates: 0,
        updates_sent: 0,
        updates_received: 0,
        last_error: None,
    };
    let status = Arc::new(Mutex::new(status));
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let (upd_tx, upd_rx) = mpsc::unbounded_channel();
    let (outbox_tx, outbox_rx) = mpsc::unbounded_channel();
    let mut peer = Peer {
        role: role_of(&rel.cfg),
        saved: saved.as_ref().map_or(State::Startup, |p| p.state),
        state: State::Startup,
        stos: now,
        partner_state: saved.as_ref().and_then(|p| p.partner_state),
        partner_stos: saved.as_ref().map_or(0, |p| p.partner_stos),
        mclt,
        hba,
        rel,
        status: status.clone(),
        queue: VecDeque::new(),
        in_flight: HashMap::new(),
        partner_max_unacked: 0,
        xid: (now as u32).wrapping_mul(2_654_435_761),
        update_done_due: None,
        writer: None,
        mclt_timer_due: None,
        updates_sent: 0,
        updates_received: 0,
        outbox: outbox_tx,
        outbox_rx: Some(outbox_rx),
    };
    peer.publish_gate();
    tasks.spawn(async move { peer.run(upd_rx, cmd_rx, shutdown).await });
    (
        Handle {
            status,
            commands: cmd_tx,
        },
        upd_tx,
    )
}

struct Peer {
    rel: Relationship,
    role: Role,
    saved: State,
    state: State,
    stos: u64,
    partner_state: Option<State>,
    partner_stos: u64,
    mclt: u32,
    hba: Option<[u8; 32]>,
    status: Arc<Mutex<Status>>,
    /// Lease changes waiting to go out (BNDUPD).
    queue: VecDeque<LeaseRecord>,
    /// xid -> (address, potential expiry sent).
    in_flight: HashMap<u32, (Ipv4Addr, u64)>,
    partner_max_unacked: u32,
    xid: u32,
    /// After an UPDREQ(ALL): send UPDDONE (with this xid) once queue and in-flight are empty.
    update_done_due: Option<u32>,
    writer: Option<OwnedWriteHalf>,
    mclt_timer_due: Option<u64>,
    updates_sent: u64,
    updates_received: u64,
    /// Messages produced off the main loop (BNDACKs after their write) to send in order.
    outbox: mpsc::UnboundedSender<Message>,
    outbox_rx: Option<mpsc::UnboundedReceiver<Message>>,
}

/// What the reader task hands the main loop.
enum Inbound {
    Message(Message),
    Closed(String),
}

impl Peer {
    fn next_xid(&mut self) -> u32 {
        self.xid = self.xid.wrapping_add(1);
        self.xid
    }

    fn context(&self) -> Context {
        Context {
            role: self.role,
            saved: self.saved,
            peer: self.partner_state,
            mclt_elapsed: unix_now() >= self.stos + u64::from(self.mclt),
        }
    }

    /// What the DHCP engine decides by (state, MCLT, HBA): only when one of them changes.
    fn publish_gate(&self) {
        let gate = Gate {
            role: self.role,
            state: self.state,
            hba: self.hba,
            load_balance_max_secs: self.rel.cfg.load_balance_max_seconds,
            mclt: self.mclt,
            pools: self.rel.cfg.pools.clone(),
            stos: self.stos,
        };
        self.rel.leases.set_rules(&self.rel.site, Arc::new(gate));
        self.publish_status();
    }

    /// The API's view only (no engine lock: this runs for every BNDACK).
    fn publish_status(&self) {
        let mut s = self.status.lock().expect("status lock");
        s.state = self.state;
        s.stos = self.stos;
        s.partner_state = self.partner_state;
        s.partner_stos = self.partner_stos;
        s.mclt = self.mclt;
        s.connected = self.writer.is_some();
        s.unacked_updates = self.in_flight.len();
        s.queued_updates = self.queue.len();
        s.updates_sent = self.updates_sent;
        s.updates_received = self.updates_received;
    }

    /// Write the state durably (before anyone acts on it).
    async fn persist_state(&self) {
        let p = Persisted {
            state: self.state,
            stos: self.stos,
            partner_state: self.partner_state,
            partner_stos: self.partner_stos,
            mclt: self.mclt,
            hba: self.hba.map(|h| h.to_vec()),
        };
        let (store, name) = (self.rel.store.clone(), self.rel.cfg.name.clone());
        let json = serde_json::to_vec(&p).expect("serialisable");
        let r = tokio::task::spawn_blocking(move || store.put_failover_blocking(&name, &json)).await;
        if !matches!(r, Ok(Ok(()))) {
            tracing::error!("failover {}: could not persist state", self.rel.cfg.name);
        }
    }

    async fn send(&mut self, m: &Message) -> Result<(), String> {
        let bytes = m.encode().map_err(|e| e.to_string())?;
        let w = self.writer.as_mut().ok_or("not connected")?;
        w.write_all(&bytes).await.map_err(|e| e.to_string())
    }

    async fn send_state(&mut self) -> Result<(), String> {
        let flags = u8::from(self.state == State::Startup);
        let m = Message::new(MessageType::State, unix_now() as u32, self.next_xid())
            .with(code::SERVER_STATE, Value::U8(self.state as u8))
            .with(code::SERVER_FLAGS, Value::U8(flags))
            .with(code::STOS, Value::U32(self.stos as u32));
        self.send(&m).await
    }

    /// Apply an event: move, persist, tell the engine and the partner.
    async fn event(&mut self, e: Event) -> Result<(), Refused> {
        let out = state::next(self.state, &self.context(), e)?;
        let entered_normal = out.state == State::Normal && self.state != State::Normal;
        if out.state != self.state {
            tracing::info!(
                "failover {}: {} -> {} ({e:?})",
                self.rel.cfg.name,
                self.state.name(),
                out.state.name()
            );
            self.state = out.state;
            self.stos = unix_now();
            if self.state == State::RecoverWait {
                self.mclt_timer_due = Some(self.stos + u64::from(self.mclt));
            }
            self.persist_state().await;
            self.publish_gate();
        }
        if self.writer.is_some() {
            for a in out.actions {
                let r = match a {
                    Action::SendState => self.send_state().await,
                    Action::SendUpdReqAll => {
                        let m = Message::new(MessageType::UpdReqAll, unix_now() as u32, self.next_xid());
                        self.send(&m).await
                    }
                };
                if let Err(err) = r {
                    tracing::warn!("failover {}: send: {err}", self.rel.cfg.name);
                }
            }
            // Entering NORMAL: the secondary asks for addresses, the primary hands them out
            // (and again once a minute, from the timer).
            if entered_normal && self.role == Role::Secondary {
                let m = Message::new(MessageType::PoolReq, unix_now() as u32, self.next_xid());
                let _ = self.send(&m).await;
            }
            if entered_normal && self.role == Role::Primary {
                match self.balance_pools().await {
                    Ok(n) if n > 0 => tracing::info!(
                        "failover {}: balanced pools: {n} address(es) to the secondary",
                        self.rel.cfg.name
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("failover {}: pool balancing: {e}", self.rel.cfg.name),
                }
            }
        }
        Ok(())
    }

    async fn run(
        &mut self,
        mut updates: mpsc::UnboundedReceiver<LeaseRecord>,
        mut commands: mpsc::Receiver<Command>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let cfg = self.rel.cfg.clone();
        let listener = if self.role == Role::Secondary {
            match TcpListener::bind(SocketAddr::from((cfg.address, cfg.port))).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::error!(
                        "failover {}: cannot listen on {}:{}: {e}",
                        cfg.name,
                        cfg.address,
                        cfg.port
                    );
                    self.status.lock().expect("status").last_error = Some(format!("listen: {e}"));
                    None
                }
            }
        } else {
            None
        };
        tracing::info!(
            "failover {} ({:?}) on {}:{}, partner {}:{}",
            cfg.name,
            self.role,
            cfg.address,
            cfg.port,
            cfg.peer_address,
            cfg.peer_port
        );
        let startup_deadline = unix_now() + u64::from(cfg.max_response_delay);
        let (in_tx, mut in_rx) = mpsc::channel::<Inbound>(256);
        let mut last_received = unix_now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut next_connect = 0u64;
        let mut next_contact = 0u64;
        let mut partner_receive_timer = cfg.max_response_delay;
        let mut outbox = self.outbox_rx.take().expect("run once");
        loop {
            tokio::select! {
                Some(m) = outbox.recv() => {
                    if self.writer.is_some() && self.send(&m).await.is_err() {
                        self.detach().await;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = self.event(Event::Shutdown).await;
                    return;
                }
                Some(cmd) = commands.recv() => match cmd {
                    Command::PartnerDown(reply) => {
                        let r = self.event(Event::OperatorPartnerDown).await;
                        let status = self.status.lock().expect("status").clone();
                        let _ = reply.send(r.map(|_| status).map_err(|e| e.to_string()));
                    }
                },
                Some(r) = updates.recv() => {
                    if self.rel.cfg.pools.iter().any(|p| p.contains(r.ip)) {
                        self.queue.push_back(r);
                        self.pump().await;
                    }
                }
                accepted = async {
                    match &listener {
                        Some(l) => l.accept().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok((stream, from)) = accepted {
                        if from.ip() != std::net::IpAddr::V4(cfg.peer_address) {
                            tracing::warn!("failover {}: refused a connection from {from} (not the partner)", cfg.name);
                            continue;
                        }
                        if self.writer.is_some() {
                            tracing::warn!("failover {}: second connection from the partner; replacing the first", cfg.name);
                        }
                        self.attach(stream, in_tx.clone());
                        last_received = unix_now();
                    }
                }
                Some(inbound) = in_rx.recv() => match inbound {
                    Inbound::Message(m) => {
                        last_received = unix_now();
                        if let Some(rt) = m.u32(code::RECEIVE_TIMER) {
                            partner_receive_timer = rt.max(3);
                        }
                        if let Err(e) = self.on_message(m).await {
                            tracing::warn!("failover {}: {e}; disconnecting", cfg.name);
                            self.status.lock().expect("status").last_error = Some(e);
                            self.detach().await;
                        }
                    }
                    Inbound::Closed(why) => {
                        if self.writer.is_some() {
                            tracing::warn!("failover {}: connection lost: {why}", cfg.name);
                            self.status.lock().expect("status").last_error = Some(why);
                            self.detach().await;
                        }
                    }
                },
                _ = tick.tick() => {
                    let now = unix_now();
                    if self.writer.is_none() && self.role == Role::Primary && now >= next_connect {
                        next_connect = now + 5;
                        let addr = SocketAddr::from((cfg.peer_address, cfg.peer_port));
                        match tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await {
                            Ok(Ok(stream)) => {
                                self.attach(stream, in_tx.clone());
                                last_received = now;
                                let connect = self.connect_message();
                                if let Err(e) = self.send(&connect).await {
                                    tracing::warn!("failover {}: CONNECT: {e}", cfg.name);
                                    self.detach().await;
                                }
                            }
                            Ok(Err(e)) => self.status.lock().expect("status").last_error = Some(format!("connect {addr}: {e}")),
                            Err(_) => self.status.lock().expect("status").last_error = Some(format!("connect {addr}: timed out")),
                        }
                    }
                    if self.writer.is_some() {
                        if now > last_received + u64::from(cfg.max_response_delay) {
                            tracing::warn!("failover {}: nothing from the partner in {} s", cfg.name, cfg.max_response_delay);
                            self.detach().await;
                        } else if now >= next_contact {
                            next_contact = now + u64::from((partner_receive_timer / 3).max(1));
                            let m = Message::new(MessageType::Contact, now as u32, self.next_xid());
                            if self.send(&m).await.is_err() {
                                self.detach().await;
                            }
                        }
                    }
                    if self.state == State::Startup && self.writer.is_none() && now >= startup_deadline {
                        tracing::info!("failover {}: no partner within {} s", cfg.name, cfg.max_response_delay);
                        let _ = self.event(Event::NoPartner).await;
                    }
                    // The primary rebalances once a minute in NORMAL (expired leases come back
                    // to the free pool over time).
                    if self.role == Role::Primary
                        && self.state == State::Normal
                        && self.writer.is_some()
                        && now.is_multiple_of(60)
                    {
                        let _ = self.balance_pools().await;
                    }
                    if let Some(due) = self.mclt_timer_due
                        && now >= due
                    {
                        self.mclt_timer_due = None;
                        let _ = self.event(Event::McltElapsed).await;
                    }
                    self.publish_status();
                }
            }
        }
    }

    fn connect_message(&mut self) -> Message {
        let xid = self.next_xid();
        let cfg = &self.rel.cfg;
        let m = Message::new(MessageType::Connect, unix_now() as u32, xid)
            .with(code::RELATIONSHIP_NAME, Value::Bytes(cfg.name.as_bytes().to_vec()))
            .with(code::MAX_UNACKED, Value::U32(cfg.max_unacked_updates))
            .with(code::RECEIVE_TIMER, Value::U32(cfg.max_response_delay))
            .with(
                code::VENDOR_CLASS,
                Value::Bytes(format!("provd-{}", env!("CARGO_PKG_VERSION")).into_bytes()),
            )
            .with(code::PROTOCOL_VERSION, Value::U8(codec::PROTOCOL_VERSION))
            .with(code::TLS_REQUEST, Value::U8(0))
            .with(code::MCLT, Value::U32(self.mclt));
        m.with(code::HBA, Value::Bytes(self.hba.unwrap_or([0; 32]).to_vec()))
    }

    fn attach(&mut self, stream: TcpStream, to_main: mpsc::Sender<Inbound>) {
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        self.writer = Some(wr);
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            let mut chunk = [0u8; 4096];
            loop {
                // Whole messages out of the stream; an impossible length ends the connection.
                loop {
                    match codec::frame_len(&buf) {
                        Ok(Some(n)) if buf.len() >= n => {
                            let frame: Vec<u8> = buf.drain(..n).collect();
                            let msg = match Message::decode(&frame) {
                                Ok(m) => Inbound::Message(m),
                                Err(e) => Inbound::Closed(format!("bad message: {e}")),
                            };
                            let closed = matches!(msg, Inbound::Closed(_));
                            if to_main.send(msg).await.is_err() || closed {
                                return;
                            }
                        }
                        Ok(_) => break,
                        Err(e) => {
                            let _ = to_main.send(Inbound::Closed(format!("bad framing: {e}"))).await;
                            return;
                        }
                    }
                }
                match rd.read(&mut chunk).await {
                    Ok(0) => {
                        let _ = to_main.send(Inbound::Closed("closed by the partner".into())).await;
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        let _ = to_main.send(Inbound::Closed(e.to_string())).await;
                        return;
                    }
                }
            }
        });
    }

    async fn detach(&mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.shutdown().await;
        }
        // Unacknowledged updates go out again on the next connection.
        let mut lost: Vec<(u32, (Ipv4Addr, u64))> = self.in_flight.drain().collect();
        lost.sort_by_key(|(x, _)| *x);
        let ips: Vec<Ipv4Addr> = lost.into_iter().map(|(_, (ip, _))| ip).collect();
        for r in self.rel.leases.failover_records(&ips, &self.rel.site).into_iter().rev() {
            self.queue.push_front(r);
        }
        self.update_done_due = None;
        let _ = self.event(Event::CommunicationsLost).await;
        self.publish_status();
    }

    /// Send queued BNDUPDs while the partner accepts more; then UPDDONE if one is due.
    async fn pump(&mut self) {
        if self.writer.is_none() || self.partner_max_unacked == 0 {
            return;
        }
        while self.in_flight.len() < self.partner_max_unacked as usize {
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            let now = unix_now();
            let xid = self.next_xid();
            let m = bndupd(&r, now, xid);
            let potential = u64::from(m.u32(code::POTENTIAL_EXPIRY).unwrap_or(0));
            if self.send(&m).await.is_err() {
                self.queue.push_front(r);
                return;
            }
            self.rel.leases.note_sent(r.ip, potential);
            self.in_flight.insert(xid, (r.ip, potential));
            self.updates_sent += 1;
        }
        if let Some(xid) = self.update_done_due
            && self.queue.is_empty()
            && self.in_flight.is_empty()
        {
            self.update_done_due = None;
            let m = Message::new(MessageType::UpdDone, unix_now() as u32, xid);
            let _ = self.send(&m).await;
        }
        self.publish_status();
    }

    /// The primary's pool balancing: half the free addresses to the secondary (BACKUP),
    /// durable, then sent. ISC's primary does this by itself in NORMAL; so does provd's.
    async fn balance_pools(&mut self) -> Result<u32, String> {
        let moved = self
            .rel
            .leases
            .balance(&self.rel.cfg.pools, unix_now(), u64::from(self.mclt), &self.rel.site);
        let n = moved.len() as u32;
        self.persist_records(moved.clone()).await?;
        self.queue.extend(moved);
        self.pump().await;
        Ok(n)
    }

    async fn persist_records(&self, records: Vec<LeaseRecord>) -> Result<(), String> {
        if records.is_empty() {
            return Ok(());
        }
        self.rel.store.persist(records).await.map_err(|e| e.to_string())
    }

    async fn on_message(&mut self, m: Message) -> Result<(), String> {
        let now = unix_now();
        let cfg = self.rel.cfg.clone();
        match m.kind {
            MessageType::Connect => {
                if self.role != Role::Secondary {
                    return Err("CONNECT received, but this server is the primary".into());
                }
                let name = m.bytes(code::RELATIONSHIP_NAME).unwrap_or_default();
                let skew = (i64::from(m.time) - now as i64).abs();
                let reject = if name != cfg.name.as_bytes() {
                    Some((codec::reject::INVALID_PARTNER, "unknown relationship name"))
                } else if skew > 60 {
                    Some((codec::reject::TIME_MISMATCH, "clocks more than 60 s apart"))
                } else if m.bytes(code::HBA).map(<[u8]>::len) != Some(codec::HBA_LEN) {
                    Some((codec::reject::HBA_CONFLICT, "invalid HBA"))
                } else {
                    None
                };
                let mut ack = Message::new(MessageType::ConnectAck, now as u32, m.xid)
                    .with(code::RELATIONSHIP_NAME, Value::Bytes(cfg.name.as_bytes().to_vec()))
                    .with(code::MAX_UNACKED, Value::U32(cfg.max_unacked_updates))
                    .with(code::RECEIVE_TIMER, Value::U32(cfg.max_response_delay))
                    .with(code::VENDOR_CLASS, Value::Bytes(b"provd".to_vec()))
                    .with(code::PROTOCOL_VERSION, Value::U8(codec::PROTOCOL_VERSION))
                    .with(code::TLS_REPLY, Value::U8(0));
                if let Some((reason, text)) = reject {
                    ack = ack
                        .with(code::REJECT_REASON, Value::U8(reason))
                        .with(code::MESSAGE, Value::Bytes(text.as_bytes().to_vec()));
                    let _ = self.send(&ack).await;
                    return Err(format!("refused the partner's CONNECT: {text}"));
                }
                self.partner_max_unacked = m.u32(code::MAX_UNACKED).unwrap_or(1).max(1);
                if let Some(mclt) = m.u32(code::MCLT) {
                    self.mclt = mclt;
                }
                if let Some(h) = m.bytes(code::HBA).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                    self.hba = Some(h);
                }
                self.persist_state().await;
                self.publish_gate();
                self.send(&ack).await?;
                self.send_state().await?;
            }
            MessageType::ConnectAck => {
                if let Some(reason) = m.u8(code::REJECT_REASON) {
                    let text = m
                        .bytes(code::MESSAGE)
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default();
                    return Err(format!("the partner refused our CONNECT (reason {reason}): {text}"));
                }
                self.partner_max_unacked = m.u32(code::MAX_UNACKED).unwrap_or(1).max(1);
                self.send_state().await?;
            }
            MessageType::State => {
                let s = m
                    .u8(code::SERVER_STATE)
                    .and_then(State::from_u8)
                    .ok_or("STATE without a known server-state")?;
                // A partner still starting up reports the state it will resume, flagged
                // STARTUP (ISC does): until the flag clears it is in STARTUP for us.
                let starting = m.u8(code::SERVER_FLAGS).unwrap_or(0) & 1 != 0;
                let s = if starting { State::Startup } else { s };
                self.partner_state = Some(s);
                self.partner_stos = m.u32(code::STOS).map_or(now, u64::from);
                self.persist_state().await;
                tracing::info!("failover {}: partner is {}", cfg.name, s.name());
                let _ = self.event(Event::PeerState(s)).await;
                self.publish_status();
                self.pump().await;
            }
            MessageType::Contact => {}
            MessageType::Disconnect => return Err("the partner disconnected".into()),
            MessageType::BndUpd => {
                self.updates_received += 1;
                let mut ack = m.clone();
                ack.kind = MessageType::BndAck;
                ack.time = now as u32;
                match partner_binding(&m, now) {
                    Ok(b) => {
                        let record = self.rel.leases.apply_partner(b, &self.rel.site);
                        // Durable before the BNDACK: an acknowledged update is never lost. The
                        // write runs beside the conversation (the store's group commit
                        // batches concurrent ones); the BNDACK goes out when it is done.
                        let (store, outbox) = (self.rel.store.clone(), self.outbox.clone());
                        tokio::spawn(async move {
                            match store.persist(vec![record]).await {
                                Ok(()) => {
                                    let _ = outbox.send(ack);
                                }
                                Err(e) => tracing::error!("failover: update not stored, not acknowledged: {e}"),
                            }
                        });
                        return Ok(());
                    }
                    Err(e) => {
                        tracing::warn!("failover {}: rejecting a BNDUPD: {e}", cfg.name);
                        ack = ack
                            .with(code::REJECT_REASON, Value::U8(codec::reject::MISSING_BINDINFO))
                            .with(code::MESSAGE, Value::Bytes(e.into_bytes()));
                    }
                }
                self.send(&ack).await?;
            }
            MessageType::BndAck => {
                let Some((ip, potential)) = self.in_flight.remove(&m.xid) else {
                    return Ok(()); // a late ack for an update re-sent since
                };
                if let Some(reason) = m.u8(code::REJECT_REASON) {
                    tracing::warn!(
                        "failover {}: the partner rejected the update of {ip} (reason {reason})",
                        cfg.name
                    );
                } else {
                    let record = self.rel.leases.acknowledged(ip, potential, &self.rel.site);
                    if let Some(r) = record {
                        // Not awaited: a tsfp lost in a crash only shortens a later lease.
                        let store = self.rel.store.clone();
                        tokio::spawn(async move {
                            let _ = store.persist(vec![r]).await;
                        });
                    }
                }
                self.pump().await;
            }
            MessageType::UpdReqAll | MessageType::UpdReq => {
                let records = self.rel.leases.records_in(&cfg.pools, &self.rel.site);
                tracing::info!(
                    "failover {}: partner asked for updates; sending {} binding(s)",
                    cfg.name,
                    records.len()
                );
                self.queue.extend(records);
                self.update_done_due = Some(m.xid);
                self.pump().await;
            }
            MessageType::UpdDone => {
                let _ = self.event(Event::UpdateDone).await;
            }
            MessageType::PoolReq => {
                if self.role != Role::Primary {
                    return Ok(());
                }
                let n = self.balance_pools().await?;
                tracing::info!(
                    "failover {}: pool request from the partner: {n} address(es) moved to it",
                    cfg.name
                );
                let resp = Message::new(MessageType::PoolResp, now as u32, m.xid)
                    .with(code::ADDRESSES_TRANSFERRED, Value::U32(n));
                self.send(&resp).await?;
            }
            MessageType::PoolResp => {
                tracing::info!(
                    "failover {}: the primary gave us {} address(es)",
                    cfg.name,
                    m.u32(code::ADDRESSES_TRANSFERRED).unwrap_or(0)
                );
            }
        }
        Ok(())
    }
}
