//! The failover conversation as a pure state machine: `(session, input, now) -> effects`.
//!
//! A `Session` holds everything one relationship knows (its state and the partner's, MCLT
//! and HBA, the update queue and what is in flight, the timers) and turns each input (a
//! message from the partner, a lease change of ours, a timer tick, the connection coming
//! or going, an operator command) into a list of effects for the driver to perform, in
//! order: persist the state, publish the engine's rules, send a message, persist lease
//! records and then acknowledge or queue them, dial the partner, drop the connection.
//!
//! It does no I/O, reads no clock and writes nothing: it reads the lease table through
//! `LeaseView`, and every change it wants (a partner's binding, an acknowledged
//! expiry, a sent one, a pool balance) is an effect, which `table::apply` performs in
//! order with the rest and turns into what must be stored. Nothing the partner is told
//! depends on a write that has not happened: a BNDACK is sent only after the BNDUPD's
//! record is stored (`PersistThenSend`), the BNDUPDs of a pool balance only after the moved
//! addresses are (`PersistThenQueue`), and whatever follows a state change only after the
//! state is (`PersistState { then }`).

use super::FailoverError;
use super::binding::{bndupd, partner_binding};
use super::codec::{self, Message, MessageType, Value, code};
use super::gate::Gate;
use super::loadbalance::Role;
use super::state::{self, Action, Context, Event, Refused, State};
use super::table::{LeaseChange, LeaseView, ToStore};
use crate::config::{Failover, FailoverRole};
use crate::store::LeaseRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// The primary dials a silent partner this often (ISC: every 5 s).
pub const DIAL_INTERVAL: u64 = 5;
/// The primary rebalances its pools this often in NORMAL (expired leases come back to the
/// free pool over time), besides on entering NORMAL and on every POOLREQ.
pub const BALANCE_INTERVAL: u64 = 60;
/// A partner's clock may differ from ours by this much before its CONNECT is refused.
pub const MAX_CLOCK_SKEW: i64 = 60;
/// The largest MCLT a partner's CONNECT may set (a day; ISC's default is an hour). A
/// larger one would let a rogue or misconfigured primary stretch every lease.
pub const MAX_MCLT: u32 = 86_400;
/// The most unacknowledged updates a partner may ask us to keep in flight (ISC's default
/// is 10); more would let it make us queue without bound.
pub const MAX_UNACKED_LIMIT: u32 = 1_000;

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
    /// BNDUPDs refused because their address is outside this relationship's pools.
    #[serde(default)]
    pub updates_refused: u64,
    pub last_error: Option<String>,
}

/// What happens to a session.
#[derive(Debug)]
pub enum Input {
    /// A connection to the partner is up (dialled by the primary, accepted by the secondary).
    Connected,
    /// The connection failed or closed; the driver has already dropped it.
    Closed(String),
    /// The primary's dial failed.
    DialFailed(String),
    Message(Message),
    /// A lease change of ours, durable: the partner must hear of it.
    LeaseChanged(LeaseRecord),
    /// Records from `PersistThenQueue` are durable now: send them, then `then`.
    Durable {
        records: Vec<LeaseRecord>,
        then: Option<Message>,
    },
    /// The BNDACK of one of the partner's BNDUPDs went out (its record is durable).
    UpdateAcknowledged,
    /// A second passed.
    Tick,
    Shutdown,
}

/// What the driver must do, in order.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Write the relationship's state durably, and only then perform `then`: durable first.
    /// A STATE message, new rules for the engine or an acknowledgement never get ahead of
    /// what a restart would find. Not written: `then` never runs (see `durable_first`).
    PersistState {
        state: Persisted,
        then: Vec<Effect>,
    },
    /// Give the DHCP engine new rules (state, MCLT or HBA changed).
    PublishRules(Gate),
    Send(Message),
    /// Store these records; once stored, send `then` (a BNDACK). Not stored: not sent.
    PersistThenSend {
        records: Vec<LeaseRecord>,
        then: Message,
    },
    /// Store these records; once stored, feed them back as `Input::Durable`.
    PersistThenQueue {
        records: Vec<LeaseRecord>,
        then: Option<Message>,
    },
    /// Store these records; nobody waits (a tsfp lost in a crash only shortens a lease).
    Persist(Vec<LeaseRecord>),
    /// Change the lease table (in memory, in order with the rest): `table::apply` performs
    /// it, and `stored` turns what it leaves to store into the effect that follows.
    Lease(LeaseChange),
    /// The primary: connect to the partner.
    Dial,
    /// Drop the connection (the session has already accounted for it).
    Disconnect,
}

/// Durable first: every effect after a state write goes inside it (`then`), recursively, so
/// the driver can run none of them unless the write succeeded.
fn durable_first(fx: Vec<Effect>) -> Vec<Effect> {
    let mut out = Vec::with_capacity(fx.len());
    let mut rest = fx.into_iter();
    while let Some(e) = rest.next() {
        if let Effect::PersistState { state, mut then } = e {
            then.extend(rest);
            out.push(Effect::PersistState {
                state,
                then: durable_first(then),
            });
            break;
        }
        out.push(e);
    }
    out
}

/// The effects in the order a driver whose every write succeeds performs them (nested
/// `then`s spliced in after their write, which is left with an empty `then`).
pub fn in_order(fx: Vec<Effect>) -> Vec<Effect> {
    let mut out = Vec::with_capacity(fx.len());
    for e in fx {
        if let Effect::PersistState { state, then } = e {
            out.push(Effect::PersistState {
                state,
                then: Vec::new(),
            });
            out.extend(in_order(then));
        } else {
            out.push(e);
        }
    }
    out
}

/// The effect that follows a lease change, from what `table::apply` left to store.
pub fn stored(what: ToStore) -> Option<Effect> {
    match what {
        ToStore::Nothing => None,
        ToStore::ThenSend { records, then } => Some(Effect::PersistThenSend { records, then }),
        ToStore::ThenQueue { records, then } => Some(Effect::PersistThenQueue { records, then }),
        ToStore::Quietly(records) => Some(Effect::Persist(records)),
    }
}

pub struct Session {
    cfg: Failover,
    site: String,
    role: Role,
    /// The state saved before the last stop (STARTUP resolves to it).
    saved: State,
    state: State,
    stos: u64,
    partner_state: Option<State>,
    partner_stos: u64,
    mclt: u32,
    hba: Option<[u8; 32]>,
    connected: bool,
    /// Where this connection is in the CONNECT/CONNECTACK exchange: until it is `Done`,
    /// nothing but that exchange is accepted.
    handshake: Handshake,
    /// Lease changes waiting to go out (BNDUPD).
    /// Updates for the partner, one per address (coalesced).
    queue: super::queue::UpdateQueue,
    /// xid -> (address, potential expiry sent).
    in_flight: HashMap<u32, (Ipv4Addr, u64)>,
    /// The partner's BNDUPDs on this connection not acknowledged yet (their records are being
    /// stored). The partner may have `max_unacked_updates` (ours, told in CONNECT or
    /// CONNECTACK) in flight; one more is a protocol error, so a partner, or whoever speaks
    /// from its address, cannot make us hold an unbounded number of writes.
    inbound_unacked: u32,
    partner_max_unacked: u32,
    xid: u32,
    /// After an UPDREQ(ALL): send UPDDONE (with this xid) once queue and in-flight are empty.
    update_done_due: Option<u32>,
    mclt_timer_due: Option<u64>,
    /// The primary's next periodic pool balance (set on entering NORMAL).
    next_balance: Option<u64>,
    startup_deadline: u64,
    last_received: u64,
    next_dial: u64,
    next_contact: u64,
    partner_receive_timer: u32,
    updates_sent: u64,
    updates_received: u64,
    updates_refused: u64,
    last_error: Option<String>,
}

/// The CONNECT/CONNECTACK exchange of the current connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// No connection.
    Idle,
    /// The secondary waits for the primary's CONNECT.
    AwaitConnect,
    /// The primary sent CONNECT and waits for the CONNECTACK.
    AwaitConnectAck,
    /// The partner identified itself and was accepted: the conversation may start.
    Done,
}

fn role_of(f: &Failover) -> Role {
    match f.role {
        FailoverRole::Primary => Role::Primary,
        FailoverRole::Secondary => Role::Secondary,
    }
}

impl Session {
    /// A session starting at `now` in STARTUP, resuming what `saved` says.
    pub fn new(cfg: Failover, site: String, saved: Option<Persisted>, now: u64) -> Session {
        let mclt = match cfg.role {
            FailoverRole::Primary => cfg.mclt,
            FailoverRole::Secondary => saved.as_ref().map_or(0, |p| p.mclt),
        };
        let hba = match cfg.role {
            FailoverRole::Primary => cfg.hba,
            FailoverRole::Secondary => saved
                .as_ref()
                .and_then(|p| p.hba.as_ref())
                .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok()),
        };
        Session {
            role: role_of(&cfg),
            saved: saved.as_ref().map_or(State::Startup, |p| p.state),
            state: State::Startup,
            stos: now,
            partner_state: saved.as_ref().and_then(|p| p.partner_state),
            partner_stos: saved.as_ref().map_or(0, |p| p.partner_stos),
            mclt,
            hba,
            connected: false,
            handshake: Handshake::Idle,
            queue: Default::default(),
            in_flight: HashMap::new(),
            inbound_unacked: 0,
            partner_max_unacked: 0,
            xid: (now as u32).wrapping_mul(2_654_435_761),
            update_done_due: None,
            mclt_timer_due: None,
            next_balance: None,
            startup_deadline: now + u64::from(cfg.max_response_delay),
            last_received: now,
            next_dial: 0,
            next_contact: 0,
            partner_receive_timer: cfg.max_response_delay,
            updates_sent: 0,
            updates_received: 0,
            updates_refused: 0,
            last_error: None,
            cfg,
            site,
        }
    }

    /// The site this relationship serves.
    pub fn site(&self) -> &str {
        &self.site
    }

    pub fn config(&self) -> &Failover {
        &self.cfg
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// What the DHCP engine decides by (state, MCLT, HBA).
    pub fn rules(&self) -> Gate {
        Gate {
            role: self.role,
            state: self.state,
            hba: self.hba,
            load_balance_max_secs: self.cfg.load_balance_max_seconds,
            mclt: self.mclt,
            pools: self.cfg.pools.clone(),
            stos: self.stos,
        }
    }

    pub fn persisted(&self) -> Persisted {
        Persisted {
            state: self.state,
            stos: self.stos,
            partner_state: self.partner_state,
            partner_stos: self.partner_stos,
            mclt: self.mclt,
            hba: self.hba.map(|h| h.to_vec()),
        }
    }

    pub fn status(&self) -> Status {
        Status {
            name: self.cfg.name.clone(),
            site: self.site.clone(),
            role: match self.role {
                Role::Primary => "primary".into(),
                Role::Secondary => "secondary".into(),
            },
            state: self.state,
            stos: self.stos,
            partner_state: self.partner_state,
            partner_stos: self.partner_stos,
            connected: self.connected,
            partner: format!("{}:{}", self.cfg.peer_address, self.cfg.peer_port),
            mclt: self.mclt,
            unacked_updates: self.in_flight.len(),
            queued_updates: self.queue.len(),
            updates_sent: self.updates_sent,
            updates_received: self.updates_received,
            updates_refused: self.updates_refused,
            last_error: self.last_error.clone(),
        }
    }

    /// Note a failure the driver saw (the API shows the last one).
    pub fn note_error(&mut self, e: impl std::fmt::Display) {
        self.last_error = Some(e.to_string());
    }

    fn next_xid(&mut self) -> u32 {
        self.xid = self.xid.wrapping_add(1);
        self.xid
    }

    fn message(&mut self, kind: MessageType, now: u64) -> Message {
        let xid = self.next_xid();
        Message::new(kind, now as u32, xid)
    }

    fn state_message(&mut self, now: u64) -> Message {
        let flags = u8::from(self.state == State::Startup);
        let (state, stos) = (self.state as u8, self.stos as u32);
        self.message(MessageType::State, now)
            .with(code::SERVER_STATE, Value::U8(state))
            .with(code::SERVER_FLAGS, Value::U8(flags))
            .with(code::STOS, Value::U32(stos))
    }

    fn context(&self, now: u64) -> Context {
        Context {
            role: self.role,
            saved: self.saved,
            peer: self.partner_state,
            mclt_elapsed: now >= self.stos + u64::from(self.mclt),
        }
    }

    /// An effect that writes the current state (what follows it is nested by `durable_first`).
    fn persist_state(&self) -> Effect {
        Effect::PersistState {
            state: self.persisted(),
            then: Vec::new(),
        }
    }

    /// The first effects, before any input: the engine's rules for STARTUP.
    pub fn start(&self) -> Vec<Effect> {
        vec![Effect::PublishRules(self.rules())]
    }

    /// One input in, the effects out.
    pub fn handle(&mut self, input: Input, now: u64, leases: &dyn LeaseView) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Connected => {
                if self.connected {
                    // A new connection replaces the old one: what was in flight goes again.
                    self.detach(now, leases, &mut fx);
                }
                self.connected = true;
                self.last_received = now;
                if self.role == Role::Primary {
                    let m = self.connect_message(now);
                    fx.push(Effect::Send(m));
                    self.handshake = Handshake::AwaitConnectAck;
                } else {
                    self.handshake = Handshake::AwaitConnect;
                }
            }
            Input::Closed(why) => {
                if self.connected {
                    tracing::warn!("failover {}: connection lost: {why}", self.cfg.name);
                    self.last_error = Some(why);
                    self.detach(now, leases, &mut fx);
                }
            }
            Input::DialFailed(why) => self.last_error = Some(why),
            Input::Message(m) => {
                self.last_received = now;
                if let Some(rt) = m.u32(code::RECEIVE_TIMER) {
                    self.partner_receive_timer = rt.max(3);
                }
                if let Err(e) = self.on_message(m, now, leases, &mut fx) {
                    tracing::warn!("failover {}: {e}; disconnecting", self.cfg.name);
                    self.last_error = Some(e.to_string());
                    fx.push(Effect::Disconnect);
                    self.detach(now, leases, &mut fx);
                }
            }
            Input::LeaseChanged(r) => {
                if self.cfg.pools.iter().any(|p| p.contains(r.ip)) {
                    self.queue.push_back(r);
                    self.pump(now, &mut fx);
                }
            }
            Input::Durable { records, then } => {
                self.queue.extend(records);
                self.pump(now, &mut fx);
                if let Some(m) = then {
                    fx.push(Effect::Send(m));
                }
            }
            Input::UpdateAcknowledged => self.inbound_unacked = self.inbound_unacked.saturating_sub(1),
            Input::Tick => self.tick(now, leases, &mut fx),
            Input::Shutdown => {
                let _ = self.event(Event::Shutdown, now, &mut fx);
            }
        }
        durable_first(fx)
    }

    /// The operator says the partner is down.
    pub fn partner_down(&mut self, now: u64) -> Result<Vec<Effect>, Refused> {
        let mut fx = Vec::new();
        self.event(Event::OperatorPartnerDown, now, &mut fx)?;
        Ok(durable_first(fx))
    }

    fn tick(&mut self, now: u64, leases: &dyn LeaseView, fx: &mut Vec<Effect>) {
        if !self.connected && self.role == Role::Primary && now >= self.next_dial {
            self.next_dial = now + DIAL_INTERVAL;
            fx.push(Effect::Dial);
        }
        if self.connected {
            if now > self.last_received + u64::from(self.cfg.max_response_delay) {
                let why = format!("nothing from the partner in {} s", self.cfg.max_response_delay);
                tracing::warn!("failover {}: {why}", self.cfg.name);
                self.last_error = Some(why);
                fx.push(Effect::Disconnect);
                self.detach(now, leases, fx);
            } else if now >= self.next_contact {
                self.next_contact = now + u64::from((self.partner_receive_timer / 3).max(1));
                let m = self.message(MessageType::Contact, now);
                fx.push(Effect::Send(m));
            }
        }
        if self.state == State::Startup && !self.connected && now >= self.startup_deadline {
            tracing::info!(
                "failover {}: no partner within {} s",
                self.cfg.name,
                self.cfg.max_response_delay
            );
            let _ = self.event(Event::NoPartner, now, fx);
        }
        if self.role == Role::Primary
            && self.state == State::Normal
            && self.connected
            && self.next_balance.is_some_and(|due| now >= due)
        {
            self.balance(now, fx);
        }
        if let Some(due) = self.mclt_timer_due
            && now >= due
        {
            self.mclt_timer_due = None;
            let _ = self.event(Event::McltElapsed, now, fx);
        }
    }

    /// Apply a state machine event: move, persist, publish, tell the partner.
    fn event(&mut self, e: Event, now: u64, fx: &mut Vec<Effect>) -> Result<(), Refused> {
        let out = state::next(self.state, &self.context(now), e)?;
        let entered_normal = out.state == State::Normal && self.state != State::Normal;
        if out.state != self.state {
            tracing::info!(
                "failover {}: {} -> {} ({e:?})",
                self.cfg.name,
                self.state.name(),
                out.state.name()
            );
            self.state = out.state;
            self.stos = now;
            if self.state == State::RecoverWait {
                self.mclt_timer_due = Some(self.stos + u64::from(self.mclt));
            }
            if self.state != State::Normal {
                self.next_balance = None;
            }
            fx.push(self.persist_state());
            fx.push(Effect::PublishRules(self.rules()));
        }
        if self.connected {
            for a in out.actions {
                let m = match a {
                    Action::SendState => self.state_message(now),
                    Action::SendUpdReqAll => self.message(MessageType::UpdReqAll, now),
                };
                fx.push(Effect::Send(m));
            }
            // Entering NORMAL: the secondary asks for addresses, the primary hands them out
            // (and again every BALANCE_INTERVAL while in NORMAL).
            if entered_normal && self.role == Role::Secondary {
                let m = self.message(MessageType::PoolReq, now);
                fx.push(Effect::Send(m));
            }
            if entered_normal && self.role == Role::Primary {
                self.balance(now, fx);
            }
        }
        Ok(())
    }

    /// The primary's pool balancing: half the free addresses to the secondary (BACKUP),
    /// stored before they are sent. The next periodic balance is due BALANCE_INTERVAL later.
    fn balance(&mut self, now: u64, fx: &mut Vec<Effect>) {
        self.next_balance = Some(now + BALANCE_INTERVAL);
        fx.push(Effect::Lease(LeaseChange::Balance {
            now,
            grace: u64::from(self.mclt),
            answer: None,
        }));
    }

    /// Everything about the connection is gone: what was in flight goes out again on the
    /// next connection; the state machine hears that communications were lost.
    fn detach(&mut self, now: u64, leases: &dyn LeaseView, fx: &mut Vec<Effect>) {
        self.connected = false;
        self.handshake = Handshake::Idle;
        self.inbound_unacked = 0;
        let mut lost: Vec<(u32, (Ipv4Addr, u64))> = self.in_flight.drain().collect();
        lost.sort_by_key(|(x, _)| *x);
        let ips: Vec<Ipv4Addr> = lost.into_iter().map(|(_, (ip, _))| ip).collect();
        for r in leases.failover_records(&ips, &self.site).into_iter().rev() {
            self.queue.push_front(r);
        }
        self.update_done_due = None;
        self.partner_max_unacked = 0;
        let _ = self.event(Event::CommunicationsLost, now, fx);
    }

    /// Send queued BNDUPDs while the partner accepts more; then UPDDONE if one is due.
    fn pump(&mut self, now: u64, fx: &mut Vec<Effect>) {
        if !self.connected || self.partner_max_unacked == 0 {
            return;
        }
        while self.in_flight.len() < self.partner_max_unacked as usize {
            let Some(r) = self.queue.pop_front() else {
                break;
            };
            let xid = self.next_xid();
            let m = bndupd(&r, now, xid);
            let potential = u64::from(m.u32(code::POTENTIAL_EXPIRY).unwrap_or(0));
            fx.push(Effect::Lease(LeaseChange::NoteSent {
                ip: r.ip,
                tstp: potential,
            }));
            self.in_flight.insert(xid, (r.ip, potential));
            self.updates_sent += 1;
            fx.push(Effect::Send(m));
        }
        if let Some(xid) = self.update_done_due
            && self.queue.is_empty()
            && self.in_flight.is_empty()
        {
            self.update_done_due = None;
            fx.push(Effect::Send(Message::new(MessageType::UpdDone, now as u32, xid)));
        }
    }

    fn connect_message(&mut self, now: u64) -> Message {
        let xid = self.next_xid();
        let cfg = &self.cfg;
        Message::new(MessageType::Connect, now as u32, xid)
            .with(code::RELATIONSHIP_NAME, Value::Bytes(cfg.name.as_bytes().to_vec()))
            .with(code::MAX_UNACKED, Value::U32(cfg.max_unacked_updates))
            .with(code::RECEIVE_TIMER, Value::U32(cfg.max_response_delay))
            .with(
                code::VENDOR_CLASS,
                Value::Bytes(format!("provd-{}", env!("CARGO_PKG_VERSION")).into_bytes()),
            )
            .with(code::PROTOCOL_VERSION, Value::U8(codec::PROTOCOL_VERSION))
            .with(code::TLS_REQUEST, Value::U8(0))
            .with(code::MCLT, Value::U32(self.mclt))
            .with(code::HBA, Value::Bytes(self.hba.unwrap_or([0; 32]).to_vec()))
    }

    /// Why the partner's CONNECT is refused, if it is: the reject reason and its text (pure;
    /// the driver also asks it before letting a new connection replace an established one).
    pub fn connect_refusal(&self, m: &Message, now: u64) -> Option<(u8, &'static str)> {
        if m.kind != MessageType::Connect {
            return Some((codec::reject::MISC, "the first message was not CONNECT"));
        }
        if self.role != Role::Secondary {
            return Some((codec::reject::INVALID_PARTNER, "CONNECT sent to the primary"));
        }
        let name = m.bytes(code::RELATIONSHIP_NAME).unwrap_or_default();
        let skew = (i64::from(m.time) - now as i64).abs();
        if name != self.cfg.name.as_bytes() {
            Some((codec::reject::INVALID_PARTNER, "unknown relationship name"))
        } else if skew > MAX_CLOCK_SKEW {
            Some((codec::reject::TIME_MISMATCH, "clocks more than 60 s apart"))
        } else if m.bytes(code::HBA).map(<[u8]>::len) != Some(codec::HBA_LEN) {
            Some((codec::reject::HBA_CONFLICT, "invalid HBA"))
        } else if m.u32(code::MCLT).is_some_and(|t| t == 0 || t > MAX_MCLT) {
            Some((codec::reject::INVALID_MCLT, "MCLT outside 1..=86400 seconds"))
        } else if m.u32(code::MAX_UNACKED).is_some_and(|n| n > MAX_UNACKED_LIMIT) {
            Some((codec::reject::MISC, "max-unacked-updates above 1000"))
        } else {
            None
        }
    }

    /// Only the CONNECT/CONNECTACK exchange until it is done (draft-ietf-dhc-failover-12
    /// section 7.1: CONNECT is the first message on a connection); a second CONNECT on an
    /// established connection is an error too.
    fn check_order(&self, kind: MessageType) -> Result<(), FailoverError> {
        let name = kind.name();
        match (self.handshake, kind) {
            (Handshake::AwaitConnect, MessageType::Connect) | (Handshake::AwaitConnectAck, MessageType::ConnectAck) => {
                Ok(())
            }
            (Handshake::Done, MessageType::Connect | MessageType::ConnectAck) => Err(FailoverError::Closed(
                "a second CONNECT exchange on an established connection",
            )),
            (Handshake::Done, _) => Ok(()),
            _ => Err(FailoverError::BeforeConnect(name)),
        }
    }

    fn on_message(
        &mut self,
        m: Message,
        now: u64,
        leases: &dyn LeaseView,
        fx: &mut Vec<Effect>,
    ) -> Result<(), FailoverError> {
        if m.kind == MessageType::Connect && self.role != Role::Secondary {
            return Err(FailoverError::WrongRole("CONNECT", "primary"));
        }
        if m.kind == MessageType::ConnectAck && self.role != Role::Primary {
            return Err(FailoverError::WrongRole("CONNECTACK", "secondary"));
        }
        self.check_order(m.kind)?;
        match m.kind {
            MessageType::Connect => {
                let reject = self.connect_refusal(&m, now);
                let mut ack = Message::new(MessageType::ConnectAck, now as u32, m.xid)
                    .with(code::RELATIONSHIP_NAME, Value::Bytes(self.cfg.name.as_bytes().to_vec()))
                    .with(code::MAX_UNACKED, Value::U32(self.cfg.max_unacked_updates))
                    .with(code::RECEIVE_TIMER, Value::U32(self.cfg.max_response_delay))
                    .with(code::VENDOR_CLASS, Value::Bytes(b"provd".to_vec()))
                    .with(code::PROTOCOL_VERSION, Value::U8(codec::PROTOCOL_VERSION))
                    .with(code::TLS_REPLY, Value::U8(0));
                if let Some((reason, text)) = reject {
                    ack = ack
                        .with(code::REJECT_REASON, Value::U8(reason))
                        .with(code::MESSAGE, Value::Bytes(text.as_bytes().to_vec()));
                    fx.push(Effect::Send(ack));
                    return Err(FailoverError::RefusedConnect(text));
                }
                self.partner_max_unacked = m.u32(code::MAX_UNACKED).unwrap_or(1).max(1);
                if let Some(mclt) = m.u32(code::MCLT) {
                    self.mclt = mclt;
                }
                if let Some(h) = m.bytes(code::HBA).and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                    self.hba = Some(h);
                }
                self.handshake = Handshake::Done;
                fx.push(self.persist_state());
                fx.push(Effect::PublishRules(self.rules()));
                fx.push(Effect::Send(ack));
                let state = self.state_message(now);
                fx.push(Effect::Send(state));
            }
            MessageType::ConnectAck => {
                if let Some(reason) = m.u8(code::REJECT_REASON) {
                    let text = m.text(code::MESSAGE).unwrap_or_default();
                    return Err(FailoverError::PartnerRefused { reason, text });
                }
                if m.u32(code::MAX_UNACKED).is_some_and(|n| n > MAX_UNACKED_LIMIT) {
                    return Err(FailoverError::Closed("the partner's max-unacked-updates is above 1000"));
                }
                self.partner_max_unacked = m.u32(code::MAX_UNACKED).unwrap_or(1).max(1);
                self.handshake = Handshake::Done;
                let state = self.state_message(now);
                fx.push(Effect::Send(state));
            }
            MessageType::State => {
                let s = m
                    .u8(code::SERVER_STATE)
                    .and_then(State::from_u8)
                    .ok_or(FailoverError::BadState)?;
                // A partner still starting up reports the state it will resume, flagged
                // STARTUP (ISC does): until the flag clears it is in STARTUP for us.
                let starting = m.u8(code::SERVER_FLAGS).unwrap_or(0) & 1 != 0;
                let s = if starting { State::Startup } else { s };
                self.partner_state = Some(s);
                self.partner_stos = m.u32(code::STOS).map_or(now, u64::from);
                fx.push(self.persist_state());
                tracing::info!("failover {}: partner is {}", self.cfg.name, s.name());
                let _ = self.event(Event::PeerState(s), now, fx);
                self.pump(now, fx);
            }
            MessageType::Contact => {}
            MessageType::Disconnect => return Err(FailoverError::PartnerDisconnected),
            MessageType::BndUpd => {
                if self.inbound_unacked >= self.cfg.max_unacked_updates {
                    return Err(FailoverError::Closed("the partner exceeded our max-unacked-updates"));
                }
                self.updates_received += 1;
                let mut ack = m.clone();
                ack.kind = MessageType::BndAck;
                ack.time = now as u32;
                match partner_binding(&m, now, u64::from(self.mclt) + u64::from(self.cfg.longest_lease)) {
                    // Only addresses the two servers share: anything else is not the
                    // partner's to change here (configuration, not the packet, decides).
                    Ok(b) if !self.cfg.pools.iter().any(|p| p.contains(b.ip)) => {
                        self.updates_refused += 1;
                        tracing::warn!(
                            "failover {}: refused a BNDUPD for {}, outside the relationship's pools",
                            self.cfg.name,
                            b.ip
                        );
                        let ack = ack
                            .with(code::REJECT_REASON, Value::U8(codec::reject::ILLEGAL_IP_ADDR))
                            .with(
                                code::MESSAGE,
                                Value::Bytes(b"address outside the failover pools".to_vec()),
                            );
                        fx.push(Effect::Send(ack));
                    }
                    Ok(mut b) => {
                        // With `tls`, the driver accepts no connection that did not prove
                        // it is the partner: its word on a binding counts.
                        b.authenticated = self.cfg.tls;
                        // Durable before the BNDACK: an acknowledged update is never lost.
                        self.inbound_unacked += 1;
                        fx.push(Effect::Lease(LeaseChange::ApplyPartner { binding: b, ack, now }));
                    }
                    Err(e) => {
                        tracing::warn!("failover {}: rejecting a BNDUPD: {e}", self.cfg.name);
                        let ack = ack
                            .with(code::REJECT_REASON, Value::U8(codec::reject::MISSING_BINDINFO))
                            .with(code::MESSAGE, Value::Bytes(e.to_string().into_bytes()));
                        fx.push(Effect::Send(ack));
                    }
                }
            }
            MessageType::BndAck => {
                let Some((ip, potential)) = self.in_flight.remove(&m.xid) else {
                    return Ok(()); // a late ack for an update re-sent since
                };
                if let Some(reason) = m.u8(code::REJECT_REASON) {
                    tracing::warn!(
                        "failover {}: the partner rejected the update of {ip} (reason {reason})",
                        self.cfg.name
                    );
                } else {
                    fx.push(Effect::Lease(LeaseChange::Acknowledged { ip, tsfp: potential }));
                }
                self.pump(now, fx);
            }
            MessageType::UpdReqAll | MessageType::UpdReq => {
                let records = leases.records_in(&self.cfg.pools, &self.site);
                tracing::info!(
                    "failover {}: partner asked for updates; sending {} binding(s)",
                    self.cfg.name,
                    records.len()
                );
                self.queue.extend(records);
                self.update_done_due = Some(m.xid);
                self.pump(now, fx);
            }
            MessageType::UpdDone => {
                let _ = self.event(Event::UpdateDone, now, fx);
            }
            MessageType::PoolReq => {
                if self.role != Role::Primary {
                    return Ok(());
                }
                // The answer counts what moves; it follows the moved addresses' BNDUPDs.
                tracing::info!("failover {}: pool request from the partner", self.cfg.name);
                fx.push(Effect::Lease(LeaseChange::Balance {
                    now,
                    grace: u64::from(self.mclt),
                    answer: Some(Message::new(MessageType::PoolResp, now as u32, m.xid)),
                }));
            }
            MessageType::PoolResp => {
                tracing::info!(
                    "failover {}: the primary gave us {} address(es)",
                    self.cfg.name,
                    m.u32(code::ADDRESSES_TRANSFERRED).unwrap_or(0)
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Every message type in, effects out; timers (dial, contact, silence, startup, MCLT,
    //! the balancing schedule) driven by `now`. The lease table is a real in-memory `Leases`.
    use super::*;

    /// The session's effects as a driver whose writes all succeed performs them.
    trait Steps {
        fn step(&mut self, input: Input, now: u64, leases: &Leases) -> Vec<Effect>;
        fn partner_down_step(&mut self, now: u64, leases: &Leases) -> Result<Vec<Effect>, Refused>;
    }
    use crate::dhcp::Leases;

    impl Steps for Session {
        fn step(&mut self, input: Input, now: u64, leases: &Leases) -> Vec<Effect> {
            let fx = self.handle(input, now, leases);
            self.on_table(fx, leases)
        }

        fn partner_down_step(&mut self, now: u64, leases: &Leases) -> Result<Vec<Effect>, Refused> {
            let fx = self.partner_down(now)?;
            Ok(self.on_table(fx, leases))
        }
    }

    impl Session {
        /// In order, with the lease effects performed on the table as the driver does.
        fn on_table(&self, fx: Vec<Effect>, leases: &Leases) -> Vec<Effect> {
            let pools = self.config().pools.clone();
            in_order(fx)
                .into_iter()
                .filter_map(|e| match e {
                    Effect::Lease(c) => stored(crate::failover::table::apply(c, leases, &pools, self.site())),
                    other => Some(other),
                })
                .collect()
        }
    }
    use crate::config::Pool;
    use crate::config::topology::Topology;
    use crate::dhcp::leases::LeaseTable;
    use crate::failover::binding::bndupd;
    use crate::failover::loadbalance::hba_from_split;
    use crate::store::LeaseState;

    const T0: u64 = 1_800_000_000;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn cfg(role: FailoverRole) -> Failover {
        Failover {
            name: "fo".into(),
            role,
            address: ip(1),
            port: 647,
            peer_address: ip(2),
            peer_port: 647,
            max_response_delay: 15,
            max_unacked_updates: 4,
            mclt: if role == FailoverRole::Primary { 600 } else { 0 },
            hba: (role == FailoverRole::Primary).then(|| hba_from_split(128)),
            load_balance_max_seconds: 3,
            pools: vec![Pool {
                start: ip(100),
                end: ip(119),
            }],
            replication_port: 6769,
            tls: false,
            longest_lease: 3600,
        }
    }

    fn leases() -> Leases {
        Leases::new(&Topology::none(), LeaseTable::new())
    }

    fn saved(state: State) -> Option<Persisted> {
        Some(Persisted {
            state,
            stos: T0 - 100,
            partner_state: Some(State::Normal),
            partner_stos: T0 - 100,
            mclt: 600,
            hba: Some(hba_from_split(128).to_vec()),
        })
    }

    fn sent(fx: &[Effect]) -> Vec<MessageType> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Send(m) => Some(m.kind),
                _ => None,
            })
            .collect()
    }

    fn messages(fx: &[Effect]) -> Vec<&Message> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Send(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    fn state_msg(s: State, startup: bool) -> Message {
        Message::new(MessageType::State, T0 as u32, 1)
            .with(code::SERVER_STATE, Value::U8(s as u8))
            .with(code::SERVER_FLAGS, Value::U8(u8::from(startup)))
            .with(code::STOS, Value::U32(T0 as u32))
    }

    fn connect_ack(max_unacked: u32) -> Message {
        Message::new(MessageType::ConnectAck, T0 as u32, 1).with(code::MAX_UNACKED, Value::U32(max_unacked))
    }

    fn record(last: u8, state: LeaseState) -> LeaseRecord {
        LeaseRecord {
            ip: ip(last),
            client_id: format!("0152540000{last:04x}"),
            mac: Some(crate::mac::MacAddr([0x52, 0x54, 0, 0, 0, last])),
            hostname: None,
            state,
            starts: T0,
            ends: T0 + 3600,
            site: "s".into(),
            tstp: 0,
            tsfp: 0,
            cltt: T0,
            from_partner: false,
        }
    }

    /// A session whose connection finished the CONNECT/CONNECTACK exchange.
    fn established(role: FailoverRole, saved: Option<Persisted>, l: &Leases) -> Session {
        let mut s = Session::new(cfg(role), "s".into(), saved, T0);
        s.step(Input::Connected, T0, l);
        let fx = match role {
            FailoverRole::Primary => s.step(Input::Message(connect_ack(4)), T0, l),
            FailoverRole::Secondary => {
                let connect = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0).connect_message(T0);
                s.step(Input::Message(connect), T0, l)
            }
        };
        assert!(!fx.contains(&Effect::Disconnect), "{fx:?}");
        s
    }

    /// A primary that resumed NORMAL with its partner: connected, CONNECTACK'd, NORMAL.
    fn normal_primary(l: &Leases) -> (Session, Vec<Effect>) {
        let mut s = Session::new(cfg(FailoverRole::Primary), "s".into(), saved(State::Normal), T0);
        s.step(Input::Connected, T0, l);
        s.step(Input::Message(connect_ack(4)), T0, l);
        let fx = s.step(Input::Message(state_msg(State::Normal, false)), T0, l);
        assert_eq!(s.state(), State::Normal);
        (s, fx)
    }

    #[test]
    fn the_primary_dials_every_five_seconds_and_sends_connect() {
        let l = leases();
        let mut s = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0);
        assert_eq!(s.start(), vec![Effect::PublishRules(s.rules())]);
        assert!(s.step(Input::Tick, T0, &l).contains(&Effect::Dial));
        assert!(!s.step(Input::Tick, T0 + 4, &l).contains(&Effect::Dial));
        s.step(Input::DialFailed("refused".into()), T0 + 4, &l);
        assert_eq!(s.status().last_error.as_deref(), Some("refused"));
        assert!(s.step(Input::Tick, T0 + 5, &l).contains(&Effect::Dial));
        let fx = s.step(Input::Connected, T0 + 5, &l);
        let m = messages(&fx);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].kind, MessageType::Connect);
        assert_eq!(m[0].bytes(code::RELATIONSHIP_NAME), Some(&b"fo"[..]));
        assert_eq!(m[0].u32(code::MCLT), Some(600));
        assert_eq!(m[0].bytes(code::HBA), Some(&hba_from_split(128)[..]));
        assert!(!s.step(Input::Tick, T0 + 10, &l).contains(&Effect::Dial), "connected");
    }

    #[test]
    fn the_secondary_learns_mclt_and_hba_from_connect_and_answers() {
        let l = leases();
        let mut s = Session::new(cfg(FailoverRole::Secondary), "s".into(), None, T0);
        assert!(sent(&s.step(Input::Connected, T0, &l)).is_empty(), "waits for CONNECT");
        let mut primary = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0);
        primary.step(Input::Connected, T0, &l);
        let connect = primary.connect_message(T0);
        let fx = s.step(Input::Message(connect.clone()), T0, &l);
        assert!(
            matches!(&fx[0], Effect::PersistState { state: p, .. } if p.mclt == 600 && p.hba.as_deref() == Some(&hba_from_split(128)[..]))
        );
        assert!(matches!(&fx[1], Effect::PublishRules(g) if g.mclt == 600 && g.hba.is_some()));
        assert_eq!(sent(&fx), [MessageType::ConnectAck, MessageType::State]);
        assert_eq!(messages(&fx)[0].xid, connect.xid);
        assert_eq!(messages(&fx)[0].u8(code::REJECT_REASON), None);

        // A wrong relationship name and a clock 2 minutes off are refused, and the
        // connection is dropped.
        for (bad, reason) in [
            (
                {
                    let mut other = cfg(FailoverRole::Primary);
                    other.name = "other".into();
                    Session::new(other, "s".into(), None, T0).connect_message(T0)
                },
                codec::reject::INVALID_PARTNER,
            ),
            (
                Message {
                    time: (T0 - 120) as u32,
                    ..connect.clone()
                },
                codec::reject::TIME_MISMATCH,
            ),
        ] {
            let mut s = Session::new(cfg(FailoverRole::Secondary), "s".into(), None, T0);
            s.step(Input::Connected, T0, &l);
            let fx = s.step(Input::Message(bad), T0, &l);
            assert_eq!(messages(&fx)[0].u8(code::REJECT_REASON), Some(reason));
            assert!(fx.contains(&Effect::Disconnect));
            assert!(!s.is_connected());
            assert!(s.status().last_error.unwrap().contains("refused the partner's CONNECT"));
        }
    }

    #[test]
    fn connect_parameters_are_bounded() {
        let l = leases();
        let mut primary = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0);
        let good = primary.connect_message(T0);
        for (bad, reason) in [
            (
                good.clone()
                    .without(code::MCLT)
                    .with(code::MCLT, Value::U32(MAX_MCLT + 1)),
                codec::reject::INVALID_MCLT,
            ),
            (
                good.clone().without(code::MCLT).with(code::MCLT, Value::U32(0)),
                codec::reject::INVALID_MCLT,
            ),
            (
                good.clone()
                    .without(code::MAX_UNACKED)
                    .with(code::MAX_UNACKED, Value::U32(MAX_UNACKED_LIMIT + 1)),
                codec::reject::MISC,
            ),
        ] {
            let mut s = Session::new(cfg(FailoverRole::Secondary), "s".into(), None, T0);
            s.step(Input::Connected, T0, &l);
            let fx = s.step(Input::Message(bad), T0, &l);
            assert_eq!(messages(&fx)[0].u8(code::REJECT_REASON), Some(reason), "{fx:?}");
            assert!(fx.contains(&Effect::Disconnect));
            assert_eq!(s.status().mclt, 0, "nothing learnt from a refused CONNECT");
        }
        // A CONNECTACK asking for too many unacknowledged updates drops the connection.
        primary.step(Input::Connected, T0, &l);
        let fx = primary.step(Input::Message(connect_ack(MAX_UNACKED_LIMIT + 1)), T0, &l);
        assert!(fx.contains(&Effect::Disconnect));
    }

    #[test]
    fn a_bndupd_outside_the_pools_is_refused_and_counted() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        let outside = bndupd(&record(50, LeaseState::Bound), T0, 61);
        let fx = s.step(Input::Message(outside), T0, &l);
        let m = messages(&fx);
        assert_eq!(fx.len(), 1, "nothing stored: {fx:?}");
        assert_eq!(
            (m[0].kind, m[0].xid, m[0].u8(code::REJECT_REASON)),
            (MessageType::BndAck, 61, Some(codec::reject::ILLEGAL_IP_ADDR))
        );
        assert_eq!(l.mac_of(ip(50)), None, "the lease table is unchanged");
        assert_eq!(s.status().updates_refused, 1);
        assert!(s.is_connected(), "a refused update is not a reason to disconnect");
    }

    #[test]
    fn nothing_but_the_connect_exchange_is_accepted_before_it_and_no_second_one_after() {
        let l = leases();
        let mac = |last: u8| crate::mac::MacAddr([0x52, 0x54, 0, 0, 0, last]);
        // An impostor at the partner's address: a BNDUPD (or anything else) before CONNECT
        // binds nothing and drops the connection, on either role.
        for role in [FailoverRole::Secondary, FailoverRole::Primary] {
            for kind in [
                MessageType::BndUpd,
                MessageType::State,
                MessageType::UpdReqAll,
                MessageType::PoolReq,
            ] {
                let mut s = Session::new(cfg(role), "s".into(), saved(State::Normal), T0);
                s.step(Input::Connected, T0, &l);
                let m = if kind == MessageType::BndUpd {
                    bndupd(&record(105, LeaseState::Bound), T0, 9)
                } else if kind == MessageType::State {
                    state_msg(State::Normal, false)
                } else {
                    Message::new(kind, T0 as u32, 9)
                };
                let fx = s.step(Input::Message(m), T0, &l);
                assert!(fx.contains(&Effect::Disconnect), "{role:?} {kind:?}: {fx:?}");
                assert!(
                    !fx.iter()
                        .any(|e| matches!(e, Effect::Send(_) | Effect::PersistThenSend { .. })),
                    "nothing answered or stored: {fx:?}"
                );
                assert!(!s.is_connected());
                assert!(
                    s.status().last_error.unwrap().contains("before the CONNECT"),
                    "{kind:?}"
                );
            }
        }
        assert!(
            !l.holds(ip(105), mac(105), T0 + 1),
            "the impostor's binding is not in the table"
        );
        // A CONNECT to a secondary already established, and a CONNECTACK to a secondary.
        let mut s = established(FailoverRole::Secondary, None, &l);
        let again = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0).connect_message(T0);
        assert!(s.step(Input::Message(again), T0, &l).contains(&Effect::Disconnect));
        let mut s = established(FailoverRole::Secondary, None, &l);
        assert!(
            s.step(Input::Message(connect_ack(1)), T0, &l)
                .contains(&Effect::Disconnect)
        );
        // The driver's check for a connection that would replace an established one.
        let s = Session::new(cfg(FailoverRole::Secondary), "s".into(), None, T0);
        let good = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0).connect_message(T0);
        assert_eq!(s.connect_refusal(&good, T0), None);
        assert!(
            s.connect_refusal(&bndupd(&record(105, LeaseState::Bound), T0, 1), T0)
                .is_some()
        );
    }

    #[test]
    fn protocol_errors_drop_the_connection() {
        let l = leases();
        // CONNECT to a primary; a refused CONNECTACK; STATE without a state; DISCONNECT.
        let cases = [
            (
                FailoverRole::Primary,
                Message::new(MessageType::Connect, T0 as u32, 1),
                "primary",
            ),
            (
                FailoverRole::Primary,
                connect_ack(1).with(code::REJECT_REASON, Value::U8(codec::reject::INVALID_PARTNER)),
                "refused our CONNECT",
            ),
            (
                FailoverRole::Primary,
                Message::new(MessageType::State, T0 as u32, 1),
                "server-state",
            ),
            (
                FailoverRole::Secondary,
                Message::new(MessageType::Disconnect, T0 as u32, 1),
                "disconnected",
            ),
        ];
        for (role, m, why) in cases {
            let mut s = if matches!(m.kind, MessageType::Connect | MessageType::ConnectAck) {
                let mut s = Session::new(cfg(role), "s".into(), None, T0);
                s.step(Input::Connected, T0, &l);
                s
            } else {
                established(role, None, &l)
            };
            let fx = s.step(Input::Message(m), T0, &l);
            assert!(fx.contains(&Effect::Disconnect), "{why}: {fx:?}");
            assert!(s.status().last_error.unwrap().contains(why), "{why}");
        }
    }

    /// Durable first, as the driver receives it: the partner's state is written, and the
    /// move to NORMAL, its rules, the STATE message and the pool balance ride inside that
    /// write (and the move's own write), so a driver whose write fails can perform none of
    /// them.
    #[test]
    fn what_follows_a_state_write_runs_only_inside_it() {
        let l = leases();
        let mut s = Session::new(cfg(FailoverRole::Primary), "s".into(), saved(State::Normal), T0);
        s.step(Input::Connected, T0, &l);
        s.step(Input::Message(connect_ack(4)), T0, &l);
        let fx = s.handle(Input::Message(state_msg(State::Normal, false)), T0, &l);
        let [Effect::PersistState { state: partner, then }] = &fx[..] else {
            panic!("one write at the top, everything inside it: {fx:?}")
        };
        assert_eq!(
            partner.partner_state,
            Some(State::Normal),
            "the partner's state is written first"
        );
        let [Effect::PersistState { state: moved, then }] = &then[..] else {
            panic!("the move's write holds the rest: {then:?}")
        };
        assert_eq!(moved.state, State::Normal);
        assert!(matches!(then[0], Effect::PublishRules(_)), "{then:?}");
        assert_eq!(sent(then), [MessageType::State]);
        assert!(
            matches!(
                then.last(),
                Some(Effect::Lease(LeaseChange::Balance { answer: None, .. }))
            ),
            "{then:?}"
        );
        let inside = then.len();

        // Spliced in order, the two writes come first, then what they hold.
        let flat = in_order(fx);
        assert_eq!(flat.len(), 2 + inside);
    }

    #[test]
    fn state_moves_persist_before_publishing_and_entering_normal_balances_pools() {
        let l = leases();
        let (s, fx) = normal_primary(&l);
        // The partner's state is stored, the move to NORMAL is stored and published, STATE
        // announced, and half of the 20 free addresses go to the secondary once durable.
        let kinds: Vec<&str> = fx
            .iter()
            .map(|e| match e {
                Effect::PersistState { state: _, .. } => "persist",
                Effect::PublishRules(_) => "publish",
                Effect::Send(_) => "send",
                Effect::PersistThenQueue { .. } => "balance",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["persist", "persist", "publish", "send", "balance"]);
        let Some(Effect::PersistThenQueue { records, then: None }) = fx.last() else {
            panic!("{fx:?}")
        };
        assert_eq!(records.len(), 10);
        assert!(records.iter().all(|r| r.state == LeaseState::Backup));
        assert_eq!(s.rules().state, State::Normal);

        // The secondary entering NORMAL asks for addresses.
        let mut sec = established(FailoverRole::Secondary, saved(State::Normal), &l);
        let fx = sec.step(Input::Message(state_msg(State::Normal, false)), T0, &l);
        assert_eq!(sent(&fx), [MessageType::State, MessageType::PoolReq]);
    }

    /// The session writes nothing: a partner's binding and a pool balance come out as
    /// effects, and the table changes only when `table::apply` performs them, returning
    /// the write that must happen before the BNDACK or the BNDUPDs.
    #[test]
    fn the_table_changes_only_when_the_lease_effects_are_applied() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        let before = l.records_in(&s.config().pools, "s");
        let upd = bndupd(&record(101, LeaseState::Bound), T0, 300);
        let fx = s.handle(Input::Message(upd), T0, &l);
        let [Effect::Lease(LeaseChange::ApplyPartner { binding, ack, .. })] = &fx[..] else {
            panic!("{fx:?}")
        };
        assert_eq!((binding.ip, ack.kind), (ip(101), MessageType::BndAck));
        assert_eq!(l.records_in(&s.config().pools, "s"), before, "handle wrote the table");

        let pools = s.config().pools.clone();
        let apply = |fx: Vec<Effect>| match fx.into_iter().next() {
            Some(Effect::Lease(c)) => stored(crate::failover::table::apply(c, &l, &pools, "s")),
            other => panic!("{other:?}"),
        };
        let Some(Effect::PersistThenSend { records, then }) = apply(fx) else {
            panic!("a write before the BNDACK")
        };
        assert_eq!(
            (records[0].ip, records[0].state, then.kind),
            (ip(101), LeaseState::Bound, MessageType::BndAck)
        );
        assert!(
            l.records_in(&pools, "s")
                .iter()
                .any(|r| r.ip == ip(101) && r.state == LeaseState::Bound)
        );

        // A POOLREQ: the answer waits for the moved addresses and counts them.
        let fx = s.handle(
            Input::Message(Message::new(MessageType::PoolReq, T0 as u32, 301)),
            T0,
            &l,
        );
        let [Effect::Lease(LeaseChange::Balance { answer: Some(resp), .. })] = &fx[..] else {
            panic!("{fx:?}")
        };
        assert_eq!(
            resp.u32(code::ADDRESSES_TRANSFERRED),
            None,
            "the count is the table's to give"
        );
        let Some(Effect::PersistThenQueue {
            records,
            then: Some(resp),
        }) = apply(fx)
        else {
            panic!("the moved addresses stored before the POOLRESP")
        };
        assert_eq!(resp.u32(code::ADDRESSES_TRANSFERRED), Some(records.len() as u32));
    }

    #[test]
    fn a_partner_flagged_startup_counts_as_startup() {
        let l = leases();
        let mut s = established(FailoverRole::Primary, saved(State::Normal), &l);
        s.step(Input::Message(state_msg(State::Normal, true)), T0, &l);
        assert_eq!(s.status().partner_state, Some(State::Startup));
    }

    #[test]
    fn a_partner_may_not_have_more_unacknowledged_updates_than_we_allow() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        let limit = s.config().max_unacked_updates;
        let upd = |last: u8, xid: u32| Input::Message(bndupd(&record(last, LeaseState::Bound), T0, xid));
        for i in 0..limit {
            let fx = s.step(upd(101 + i as u8, 100 + i), T0, &l);
            assert!(matches!(fx[..], [Effect::PersistThenSend { .. }]), "{fx:?}");
        }
        // One acknowledged (its record durable, its BNDACK sent): room for one more.
        s.step(Input::UpdateAcknowledged, T0, &l);
        let fx = s.step(upd(110, 200), T0, &l);
        assert!(matches!(fx[..], [Effect::PersistThenSend { .. }]), "{fx:?}");
        // Beyond the window: a protocol error, nothing stored.
        let fx = s.step(upd(111, 201), T0, &l);
        assert!(fx.contains(&Effect::Disconnect), "{fx:?}");
        assert!(!fx.iter().any(|e| matches!(e, Effect::PersistThenSend { .. })));
        assert!(s.status().last_error.unwrap().contains("max-unacked-updates"));
        // A new connection starts with an empty window.
        let mut s = established(FailoverRole::Primary, saved(State::Normal), &l);
        let fx = s.step(upd(112, 300), T0, &l);
        assert!(matches!(fx[..], [Effect::PersistThenSend { .. }]), "{fx:?}");
    }

    #[test]
    fn bndupds_are_stored_before_they_are_acknowledged() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        let upd = bndupd(&record(105, LeaseState::Bound), T0, 77);
        let fx = s.step(Input::Message(upd), T0, &l);
        let [Effect::PersistThenSend { records, then }] = fx.as_slice() else {
            panic!("{fx:?}")
        };
        assert_eq!((records[0].ip, records[0].state), (ip(105), LeaseState::Bound));
        assert_eq!((then.kind, then.xid), (MessageType::BndAck, 77));
        assert_eq!(l.mac_of(ip(105)), Some(crate::mac::MacAddr([0x52, 0x54, 0, 0, 0, 105])));
        assert_eq!(s.status().updates_received, 1);

        // An update without an address is rejected at once, nothing stored.
        let bad = Message::new(MessageType::BndUpd, T0 as u32, 78);
        let fx = s.step(Input::Message(bad), T0, &l);
        let m = messages(&fx);
        assert_eq!(
            (m[0].kind, m[0].u8(code::REJECT_REASON)),
            (MessageType::BndAck, Some(codec::reject::MISSING_BINDINFO))
        );
        assert_eq!(fx.len(), 1);
    }

    #[test]
    fn our_updates_respect_max_unacked_and_acks_store_what_the_partner_knows() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        let mut xids = Vec::new();
        for last in 100..106 {
            for e in s.step(Input::LeaseChanged(record(last, LeaseState::Bound)), T0, &l) {
                if let Effect::Send(m) = e {
                    assert_eq!(m.kind, MessageType::BndUpd);
                    xids.push(m.xid);
                }
            }
        }
        assert_eq!(xids.len(), 4, "the partner takes 4 unacknowledged");
        assert_eq!(s.status().queued_updates, 2);
        // Renewals of a queued address replace its update: the queue stays one per address.
        for _ in 0..50 {
            s.step(Input::LeaseChanged(record(104, LeaseState::Bound)), T0, &l);
        }
        assert_eq!(s.status().queued_updates, 2);
        // A change outside the relationship's pools is not the partner's business.
        assert!(
            s.step(Input::LeaseChanged(record(50, LeaseState::Bound)), T0, &l)
                .is_empty()
        );

        // BNDUPDs carry no binding for an address we never bound (100..106 are not in our
        // table): the ack finds no record to store, but the window moves on.
        let ack = Message::new(MessageType::BndAck, T0 as u32, xids[0]);
        let fx = s.step(Input::Message(ack.clone()), T0, &l);
        assert_eq!(sent(&fx), [MessageType::BndUpd]);
        assert!(s.step(Input::Message(ack), T0, &l).is_empty(), "a late duplicate ack");

        // An address the table knows: the ack stores the acknowledged time (tsfp).
        s.step(Input::Message(bndupd(&record(110, LeaseState::Bound), T0, 5)), T0, &l);
        let fx = s.step(Input::LeaseChanged(record(110, LeaseState::Bound)), T0, &l);
        assert!(fx.is_empty(), "window full");
        let mut acked = Vec::new();
        for x in &xids[1..] {
            acked.extend(s.step(Input::Message(Message::new(MessageType::BndAck, T0 as u32, *x)), T0, &l));
        }
        let sent_110 = messages(&acked)
            .into_iter()
            .find(|m| m.ip(code::ASSIGNED_IP_ADDRESS) == Some(ip(110)))
            .expect("queued update sent once the window opened")
            .xid;
        let fx = s.step(
            Input::Message(Message::new(MessageType::BndAck, T0 as u32, sent_110)),
            T0,
            &l,
        );
        assert!(
            fx.iter()
                .any(|e| matches!(e, Effect::Persist(r) if r[0].ip == ip(110) && r[0].tsfp == T0 + 3600)),
            "{fx:?}"
        );
    }

    #[test]
    fn updreqall_sends_every_binding_then_upddone() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        s.step(Input::Message(bndupd(&record(101, LeaseState::Bound), T0, 5)), T0, &l);
        let req = Message::new(MessageType::UpdReqAll, T0 as u32, 900);
        let fx = s.step(Input::Message(req), T0, &l);
        // 101 bound + 10 BACKUP addresses: the first 4 go, the rest wait for acks.
        assert_eq!(sent(&fx), [MessageType::BndUpd; 4]);
        let mut last = Vec::new();
        for _ in 0..20 {
            let in_flight: Vec<u32> = s.in_flight.keys().copied().collect();
            if in_flight.is_empty() {
                break;
            }
            for x in in_flight {
                last = s.step(Input::Message(Message::new(MessageType::BndAck, T0 as u32, x)), T0, &l);
            }
        }
        let m = messages(&last);
        assert_eq!(
            (m.last().unwrap().kind, m.last().unwrap().xid),
            (MessageType::UpdDone, 900)
        );
    }

    #[test]
    fn upddone_completes_recovery() {
        let l = leases();
        // A new primary (nothing saved) meeting a NORMAL partner recovers: asks for all.
        let mut s = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0);
        s.step(Input::Connected, T0, &l);
        s.step(Input::Message(connect_ack(4)), T0, &l);
        let fx = s.step(Input::Message(state_msg(State::Normal, false)), T0, &l);
        assert_eq!(s.state(), State::Recover);
        assert_eq!(sent(&fx), [MessageType::State, MessageType::UpdReqAll]);
        let fx = s.step(
            Input::Message(Message::new(MessageType::UpdDone, T0 as u32, 3)),
            T0 + 1,
            &l,
        );
        assert_ne!(s.state(), State::Recover);
        assert!(fx.iter().any(|e| matches!(e, Effect::PersistState { state: _, .. })));
    }

    #[test]
    fn poolreq_is_answered_after_the_moved_addresses_are_durable() {
        let l = leases();
        let mut s = Session::new(cfg(FailoverRole::Primary), "s".into(), saved(State::Normal), T0);
        s.step(Input::Connected, T0, &l);
        s.step(Input::Message(connect_ack(100)), T0, &l);
        let fx = s.step(
            Input::Message(Message::new(MessageType::PoolReq, T0 as u32, 42)),
            T0,
            &l,
        );
        let [
            Effect::PersistThenQueue {
                records,
                then: Some(resp),
            },
        ] = fx.as_slice()
        else {
            panic!("{fx:?}")
        };
        assert_eq!(records.len(), 10);
        assert_eq!(
            (resp.kind, resp.xid, resp.u32(code::ADDRESSES_TRANSFERRED)),
            (MessageType::PoolResp, 42, Some(10))
        );
        // Durable: the BNDUPDs go first, then the POOLRESP.
        let fx = s.step(
            Input::Durable {
                records: records.clone(),
                then: Some(resp.clone()),
            },
            T0,
            &l,
        );
        let kinds = sent(&fx);
        assert_eq!(kinds.len(), 11);
        assert_eq!(kinds.last(), Some(&MessageType::PoolResp));
        // A secondary ignores POOLREQ; POOLRESP and CONTACT change nothing.
        let mut sec = established(FailoverRole::Secondary, None, &l);
        for k in [MessageType::PoolReq, MessageType::PoolResp, MessageType::Contact] {
            assert!(
                sec.step(Input::Message(Message::new(k, T0 as u32, 1)), T0, &l)
                    .is_empty(),
                "{k:?}"
            );
        }
    }

    #[test]
    fn the_primary_rebalances_every_interval_in_normal_not_on_round_seconds() {
        let l = leases();
        let (mut s, fx) = normal_primary(&l);
        let Some(Effect::PersistThenQueue { records, .. }) = fx.last() else {
            panic!()
        };
        // The secondary binds two of its BACKUP addresses: the primary owes it one more.
        for (i, r) in records.iter().take(2).enumerate() {
            let mut b = record(0, LeaseState::Bound);
            b.ip = r.ip;
            s.step(Input::Message(bndupd(&b, T0, 500 + i as u32)), T0, &l);
        }
        // Ticks start at an odd second; nothing before the interval has passed.
        let balanced = |fx: &[Effect]| fx.iter().any(|e| matches!(e, Effect::PersistThenQueue { .. }));
        for t in [T0 + 1, T0 + 30, T0 + BALANCE_INTERVAL - 1] {
            s.last_received = t;
            assert!(!balanced(&s.step(Input::Tick, t, &l)), "{t}");
        }
        s.last_received = T0 + BALANCE_INTERVAL + 7;
        let fx = s.step(Input::Tick, T0 + BALANCE_INTERVAL + 7, &l);
        let Some(Effect::PersistThenQueue { records, .. }) = fx.iter().find(|e| balanced(std::slice::from_ref(*e)))
        else {
            panic!("due after BALANCE_INTERVAL: {fx:?}")
        };
        assert_eq!(records.len(), 1);
        // The next one is an interval later again.
        s.last_received = T0 + BALANCE_INTERVAL + 8;
        assert!(!balanced(&s.step(Input::Tick, T0 + BALANCE_INTERVAL + 8, &l)));
    }

    #[test]
    fn contact_keeps_the_link_and_silence_breaks_it_and_requeues_updates() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        // CONTACT at a third of the partner's receive timer (15 s -> every 5 s).
        assert_eq!(sent(&s.step(Input::Tick, T0 + 1, &l)), [MessageType::Contact]);
        assert!(sent(&s.step(Input::Tick, T0 + 3, &l)).is_empty());
        assert_eq!(sent(&s.step(Input::Tick, T0 + 6, &l)), [MessageType::Contact]);
        s.step(Input::LeaseChanged(record(100, LeaseState::Bound)), T0 + 6, &l);
        s.step(
            Input::Message(bndupd(&record(100, LeaseState::Bound), T0, 9)),
            T0 + 6,
            &l,
        );
        assert_eq!(s.status().unacked_updates, 1);
        // Nothing for more than max-response-delay: drop it; the update waits in the queue.
        let fx = s.step(Input::Tick, T0 + 6 + 16, &l);
        assert!(fx.contains(&Effect::Disconnect));
        assert_eq!(s.state(), State::CommunicationsInterrupted);
        assert!(fx.iter().any(
            |e| matches!(e, Effect::PersistState { state: p, .. } if p.state == State::CommunicationsInterrupted)
        ));
        assert_eq!((s.status().unacked_updates, s.status().queued_updates), (0, 1));
        assert!(s.status().last_error.unwrap().contains("nothing from the partner"));
        // Reconnected and CONNECTACK'd, the update goes out again.
        s.step(Input::Connected, T0 + 30, &l);
        let fx = s.step(Input::Message(connect_ack(4)), T0 + 30, &l);
        assert_eq!(sent(&fx), [MessageType::State]);
        let fx = s.step(Input::Message(state_msg(State::Normal, false)), T0 + 30, &l);
        assert!(sent(&fx).contains(&MessageType::BndUpd), "{fx:?}");
    }

    #[test]
    fn a_lost_connection_is_communications_interrupted() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        let fx = s.step(Input::Closed("reset".into()), T0 + 2, &l);
        assert_eq!(s.state(), State::CommunicationsInterrupted);
        assert!(sent(&fx).is_empty() || !s.is_connected());
        assert_eq!(s.status().last_error.as_deref(), Some("reset"));
        // Closed twice (the driver and a failed send) counts once.
        assert!(s.step(Input::Closed("again".into()), T0 + 3, &l).is_empty());
    }

    #[test]
    fn startup_without_a_partner_resumes_after_max_response_delay() {
        let l = leases();
        let mut s = Session::new(cfg(FailoverRole::Secondary), "s".into(), saved(State::Normal), T0);
        s.step(Input::Tick, T0 + 14, &l);
        assert_eq!(s.state(), State::Startup);
        let fx = s.step(Input::Tick, T0 + 15, &l);
        assert_eq!(s.state(), State::CommunicationsInterrupted);
        assert!(matches!(fx[0], Effect::PersistState { state: _, .. }));
    }

    #[test]
    fn operator_partner_down_and_shutdown() {
        let l = leases();
        let (mut s, _) = normal_primary(&l);
        assert!(s.partner_down_step(T0, &l).is_err(), "the partner is talking to us");
        s.step(Input::Closed("gone".into()), T0, &l);
        let fx = s.partner_down_step(T0 + 1, &l).unwrap();
        assert_eq!(s.state(), State::PartnerDown);
        assert!(matches!(&fx[1], Effect::PublishRules(g) if g.state == State::PartnerDown && g.stos == T0 + 1));
        s.step(Input::Shutdown, T0 + 2, &l);
        assert_eq!(s.persisted().state, State::Shutdown);
    }

    #[test]
    fn recover_wait_ends_after_mclt() {
        let l = leases();
        let mut s = Session::new(cfg(FailoverRole::Primary), "s".into(), None, T0);
        s.step(Input::Connected, T0, &l);
        s.step(Input::Message(connect_ack(4)), T0, &l);
        s.step(Input::Message(state_msg(State::Normal, false)), T0, &l);
        s.step(Input::Message(Message::new(MessageType::UpdDone, T0 as u32, 3)), T0, &l);
        if s.state() == State::RecoverWait {
            s.last_received = T0 + 599;
            s.step(Input::Tick, T0 + 599, &l);
            assert_eq!(s.state(), State::RecoverWait);
            s.last_received = T0 + 600;
            s.step(Input::Tick, T0 + 600, &l);
            assert_ne!(s.state(), State::RecoverWait, "MCLT elapsed");
        } else {
            assert_eq!(s.state(), State::RecoverDone, "MCLT had already passed");
        }
    }
}
