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
            MessageType::Connect => self.on_connect(&m, now, fx)?,
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
            MessageType::State => self.on_state(&m, now, fx)?,
            MessageType::Contact => {}
            MessageType::Disconnect => return Err(FailoverError::PartnerDisconnected),
            MessageType::BndUpd => self.on_bndupd(m, now, fx)?,
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

    /// The partner's CONNECT (we are the secondary): refuse it with a reason, or take its
    /// parameters, answer CONNECTACK and our STATE.
    fn on_connect(&mut self, m: &Message, now: u64, fx: &mut Vec<Effect>) -> Result<(), FailoverError> {
        let reject = self.connect_refusal(m, now);
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
        Ok(())
    }

    /// The partner's STATE: its server state (STARTUP while it says it is starting).
    fn on_state(&mut self, m: &Message, now: u64, fx: &mut Vec<Effect>) -> Result<(), FailoverError> {
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
        Ok(())
    }

    /// A BNDUPD: a binding of the relationship's pools is applied (durably, then acked);
    /// anything else is rejected with its reason.
    fn on_bndupd(&mut self, m: Message, now: u64, fx: &mut Vec<Effect>) -> Result<(), FailoverError> {
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
        Ok(())
    }
}

#[cfg(test)]
mod tests;
