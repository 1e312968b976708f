//! What a failover partner (or an impostor at its address) can send, through the session:
//! a stream of framed messages, decoded, handed to a fresh session of either role with a
//! second passing between them. Never a panic; and nothing a connection sends before its
//! CONNECT/CONNECTACK exchange changes the lease table or persists a binding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provd::config::{Failover, FailoverRole, Pool, hba_from_split};
use provd::dhcp::Leases;
use provd::dhcp::leases::LeaseTable;
use provd::config::topology::Topology;
use provd::failover::codec::{Message, MessageType, frame_len};
use provd::failover::session::{Effect, Input, Session, in_order, stored};
use provd::failover::table;
use std::net::Ipv4Addr;

const T0: u64 = 1_800_000_000;

fn cfg(role: FailoverRole) -> Failover {
    Failover {
        name: "fo".into(),
        role,
        address: Ipv4Addr::new(10, 0, 0, 1),
        port: 647,
        peer_address: Ipv4Addr::new(10, 0, 0, 2),
        peer_port: 647,
        max_response_delay: 15,
        max_unacked_updates: 4,
        mclt: if role == FailoverRole::Primary { 600 } else { 0 },
        hba: (role == FailoverRole::Primary).then(|| hba_from_split(128)),
        load_balance_max_seconds: 3,
        pools: vec![Pool {
            start: Ipv4Addr::new(10, 0, 0, 100),
            end: Ipv4Addr::new(10, 0, 0, 119),
        }],
        replication_port: 6769,
        tls: false,
        longest_lease: 3600,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let role = if mode & 1 == 0 {
        FailoverRole::Primary
    } else {
        FailoverRole::Secondary
    };
    let leases = Leases::new(&Topology::none(), LeaseTable::new());
    let mut session = Session::new(cfg(role), "s".into(), None, T0);
    // As the driver performs them: in order, lease effects applied to the table.
    let step = |session: &mut Session, input: Input, now: u64| -> Vec<Effect> {
        let pools = session.config().pools.clone();
        in_order(session.handle(input, now, &leases))
            .into_iter()
            .filter_map(|e| match e {
                Effect::Lease(c) => stored(table::apply(c, &leases, &pools, "s")),
                other => Some(other),
            })
            .collect()
    };
    step(&mut session, Input::Connected, T0);
    let mut now = T0;
    let mut handshake_done = false;
    while let Ok(Some(n)) = frame_len(rest) {
        if n == 0 || n > rest.len() {
            break;
        }
        let (frame, tail) = rest.split_at(n);
        rest = tail;
        let Ok(m) = Message::decode(frame) else {
            continue;
        };
        let kind = m.kind;
        // What a connection that has not finished its handshake may change: nothing. (The
        // table may hold bindings from an earlier connection's conversation.)
        let known_before = leases.counts(now).known;
        let fx = step(&mut session, Input::Message(m), now);
        let dropped = fx.contains(&Effect::Disconnect);
        if !handshake_done {
            let opener = matches!(kind, MessageType::Connect | MessageType::ConnectAck);
            if opener && !dropped {
                handshake_done = true;
            } else {
                assert_eq!(
                    leases.counts(now).known,
                    known_before,
                    "a {kind:?} before the handshake changed the lease table"
                );
                assert!(
                    !fx.iter().any(|e| matches!(e, Effect::PersistThenSend { .. } | Effect::PersistThenQueue { .. } | Effect::Persist(_))),
                    "a {kind:?} before the handshake persisted a binding: {fx:?}"
                );
            }
        }
        if dropped {
            // The driver closes the connection; a new one starts over.
            step(&mut session, Input::Closed("fuzz".into()), now);
            step(&mut session, Input::Connected, now);
            handshake_done = false;
        }
        now += u64::from(mode >> 1) % 40;
        step(&mut session, Input::Tick, now);
    }
});
