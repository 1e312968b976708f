//! Tests of `failover::session`.

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
    let Some(Effect::PersistThenQueue { records, .. }) = fx.iter().find(|e| balanced(std::slice::from_ref(*e))) else {
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
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::PersistState { state: p, .. } if p.state == State::CommunicationsInterrupted))
    );
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
