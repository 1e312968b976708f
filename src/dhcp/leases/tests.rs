//! Tests of `dhcp::leases`.

use super::*;

fn subnet(pools: &[(&str, &str)]) -> Subnet {
    Subnet {
        prefix: "10.0.0.0/24".parse().unwrap(),
        pools: pools
            .iter()
            .map(|(s, e)| Pool {
                start: s.parse().unwrap(),
                end: e.parse().unwrap(),
            })
            .collect(),
        router: None,
        dns: vec![],
        domain: None,
        lease_time: 3600,
        max_lease_time: 3600,
    }
}
fn key(n: u8) -> ClientKey {
    ClientKey(vec![1, 0, 0, 0, 0, 0, n])
}
fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// One client per key number allocates (as `owner` may) and binds what it got.
fn take_each(
    t: &mut LeaseTable,
    s: &Subnet,
    clients: std::ops::RangeInclusive<u8>,
    owner: Owner,
) -> Vec<Option<Ipv4Addr>> {
    clients
        .map(|n| {
            let got = t.allocate_owned(s, &key(n), None, &Reserved::new(), 100, owner);
            if let Some(a) = got {
                t.bind(a, &key(n), ClientFacts::default(), 600, 100, "a");
            }
            got
        })
        .collect()
}

#[test]
fn failover_balance_gives_the_secondary_half_and_each_takes_only_its_own() {
    let s = subnet(&[("10.0.0.10", "10.0.0.19")]);
    let pools = s.pools.clone();
    let mut primary = LeaseTable::new();
    let moved = primary.balance(&pools, 100, 60, "a");
    assert_eq!(moved.len(), 5, "half of ten free addresses");
    assert!(
        moved
            .iter()
            .all(|r| r.state == LeaseState::Backup && u32::from(r.ip) >= u32::from(ip("10.0.0.15")))
    );
    assert!(
        primary.balance(&pools, 100, 60, "a").is_empty(),
        "balanced: nothing more moves"
    );
    assert_eq!(primary.free_counts(&pools, 100), (5, 5));
    // The secondary learns the same from the BNDUPDs (restore = same state).
    let mut secondary = LeaseTable::restore(&moved);
    let r = &Reserved::new();
    let got = take_each(&mut secondary, &s, 1..=6, Owner::Secondary(&pools));
    assert!(
        got[..5]
            .iter()
            .all(|a| a.is_some_and(|a| u32::from(a) >= u32::from(ip("10.0.0.15")))),
        "{got:?}"
    );
    assert_eq!(
        got[5], None,
        "the secondary's five are gone; the primary's are not its to give"
    );
    let got = take_each(&mut primary, &s, 11..=16, Owner::Primary(&pools));
    assert!(
        got[..5]
            .iter()
            .all(|a| a.is_some_and(|a| u32::from(a) < u32::from(ip("10.0.0.15")))),
        "{got:?}"
    );
    assert_eq!(got[5], None);
    // A requested address of the partner's is not taken either.
    let mut fresh = LeaseTable::restore(&moved);
    assert_ne!(
        fresh.allocate_owned(&s, &key(40), Some(ip("10.0.0.19")), r, 100, Owner::Primary(&pools)),
        Some(ip("10.0.0.19"))
    );
    // In partner-down after MCLT: anything free.
    assert_eq!(
        fresh.allocate_owned(&s, &key(40), Some(ip("10.0.0.19")), r, 100, Owner::Any),
        Some(ip("10.0.0.19"))
    );
}

#[test]
fn a_binding_learnt_from_the_partner_is_no_proof_of_the_client_until_granted_here() {
    let mac = MacAddr([0x52, 0x54, 0, 0, 0, 9]);
    let mut chaddr_key = vec![1u8];
    chaddr_key.extend_from_slice(&mac.0);
    let client = ClientKey(chaddr_key);
    let mut t = LeaseTable::new();
    let r = t
        .apply_partner(
            PartnerBinding {
                ip: ip("10.0.0.40"),
                state: LeaseState::Bound,
                client: Some(client.clone()),
                mac: Some(mac),
                starts: 100,
                ends: 10_000,
                tsfp: 0,
                cltt: 100,
                authenticated: false,
            },
            "a",
            100,
        )
        .unwrap();
    assert!(r.from_partner);
    assert!(t.holds(ip("10.0.0.40"), mac, 200), "it keeps the address from others");
    assert!(!t.holds_granted_here(ip("10.0.0.40"), mac, 200));
    // A restart does not turn it into one of ours.
    let back = LeaseTable::restore(&[r]);
    assert!(!back.holds_granted_here(ip("10.0.0.40"), mac, 200));
    // Our own ACK of the same client (a renewal we answered) does.
    let facts = ClientFacts {
        mac: Some(mac),
        hostname: None,
    };
    let ours = t.bind(ip("10.0.0.40"), &client, facts, 600, 300, "a");
    assert!(!ours.from_partner);
    assert!(t.holds_granted_here(ip("10.0.0.40"), mac, 400));
}

#[test]
fn partner_updates_are_applied_and_survive_a_restore() {
    let mut t = LeaseTable::new();
    let r = t
        .apply_partner(
            PartnerBinding {
                ip: ip("10.0.0.10"),
                state: LeaseState::Bound,
                client: Some(key(1)),
                mac: None,
                starts: 100,
                ends: 700,
                tsfp: 900,
                cltt: 100,
                authenticated: false,
            },
            "a",
            100,
        )
        .unwrap();
    assert_eq!((r.state, r.tsfp, r.cltt), (LeaseState::Bound, 900, 100));
    assert_eq!(t.address_of(&key(1)), Some(ip("10.0.0.10")));
    assert!(
        !t.available_for(ip("10.0.0.10"), &key(2), 200),
        "the partner's client holds it"
    );
    let b = t
        .apply_partner(
            PartnerBinding {
                ip: ip("10.0.0.11"),
                state: LeaseState::Backup,
                client: None,
                mac: None,
                starts: 100,
                ends: 100,
                tsfp: 0,
                cltt: 0,
                authenticated: false,
            },
            "a",
            100,
        )
        .unwrap();
    let back = LeaseTable::restore(&[r.clone(), b]);
    assert!(back.is_backup(ip("10.0.0.11")));
    assert_eq!(back.get(ip("10.0.0.10")).map(|b| b.tsfp), Some(900));
    let acked = t.acknowledged(ip("10.0.0.10"), 1500, "a").unwrap();
    assert_eq!(acked.tsfp, 1500);
    let pools = [Pool {
        start: ip("10.0.0.10"),
        end: ip("10.0.0.12"),
    }];
    let all = t.records_in(&pools, "a");
    assert_eq!(
        all.iter().map(|r| r.state).collect::<Vec<_>>(),
        [LeaseState::Bound, LeaseState::Backup]
    );
}

#[test]
fn allocates_in_order_and_skips_offered_and_reserved() {
    let s = subnet(&[("10.0.0.10", "10.0.0.12")]);
    let mut t = LeaseTable::new();
    let reserved: Reserved = [ip("10.0.0.11")].into();
    let a = t.allocate(&s, &key(1), None, &reserved, 0).unwrap();
    assert_eq!(a, ip("10.0.0.10"));
    t.offer(a, &key(1), None, 30, 0);
    let b = t.allocate(&s, &key(2), None, &reserved, 0).unwrap();
    assert_eq!(b, ip("10.0.0.12"), "10.0.0.11 is reserved for another host");
    t.offer(b, &key(2), None, 30, 0);
    assert_eq!(t.allocate(&s, &key(3), None, &reserved, 0), None, "pool exhausted");
    // The same client asking again gets the same offer.
    assert_eq!(t.allocate(&s, &key(1), None, &reserved, 0), Some(a));
}

#[test]
fn expired_offers_and_leases_are_reused_and_previous_address_preferred() {
    let s = subnet(&[("10.0.0.10", "10.0.0.11")]);
    let mut t = LeaseTable::new();
    let none = Reserved::new();
    let a = t.allocate(&s, &key(1), None, &none, 0).unwrap();
    t.bind(a, &key(1), ClientFacts::default(), 100, 0, "s");
    let b = t.allocate(&s, &key(2), None, &none, 0).unwrap();
    t.offer(b, &key(2), None, 30, 0);
    assert_eq!(
        t.allocate(&s, &key(3), None, &none, 20),
        None,
        "lease and offer still held"
    );
    // At t=60 the offer to key 2 lapsed: key 3 may take it.
    assert_eq!(t.allocate(&s, &key(3), None, &none, 60), Some(b));
    // At t=200 key 1's lease has expired, but key 1 itself still gets it back first.
    assert_eq!(t.allocate(&s, &key(1), None, &none, 200), Some(a));
}

#[test]
fn requested_address_is_honoured_when_free() {
    let s = subnet(&[("10.0.0.10", "10.0.0.20")]);
    let mut t = LeaseTable::new();
    let none = Reserved::new();
    assert_eq!(
        t.allocate(&s, &key(1), Some(ip("10.0.0.15")), &none, 0),
        Some(ip("10.0.0.15"))
    );
    t.bind(ip("10.0.0.15"), &key(1), ClientFacts::default(), 100, 0, "s");
    assert_ne!(
        t.allocate(&s, &key(2), Some(ip("10.0.0.15")), &none, 0),
        Some(ip("10.0.0.15"))
    );
    assert_eq!(
        t.allocate(&s, &key(2), Some(ip("10.0.1.1")), &none, 0),
        Some(ip("10.0.0.10")),
        "outside the pool is ignored"
    );
}

#[test]
fn release_frees_and_decline_quarantines() {
    let s = subnet(&[("10.0.0.10", "10.0.0.10")]);
    let mut t = LeaseTable::new();
    let none = Reserved::new();
    let a = t.bind(ip("10.0.0.10"), &key(1), ClientFacts::default(), 100, 0, "s").ip;
    assert!(t.release(a, &key(2), 5, "s").is_none(), "only the owner may release");
    let rec = t.release(a, &key(1), 5, "s").unwrap();
    assert_eq!(rec.state, LeaseState::Released);
    assert_eq!(
        t.allocate(&s, &key(2), None, &none, 6),
        Some(a),
        "released address is reusable"
    );
    t.bind(a, &key(2), ClientFacts::default(), 100, 6, "s");
    let rec = t.decline(a, &key(2), 1000, 7, "s").unwrap();
    assert_eq!(rec.state, LeaseState::Declined);
    assert_eq!(
        t.allocate(&s, &key(2), None, &none, 8),
        None,
        "quarantined, even for the decliner"
    );
    assert_eq!(t.allocate(&s, &key(3), None, &none, 1008), Some(a), "quarantine over");
}

#[test]
fn restore_rebuilds_bindings_from_records() {
    let mut t = LeaseTable::new();
    let r1 = t.bind(
        ip("10.0.0.10"),
        &key(1),
        ClientFacts {
            mac: None,
            hostname: Some("h".into()),
        },
        100,
        0,
        "s",
    );
    let r2 = t.bind(ip("10.0.0.11"), &key(2), ClientFacts::default(), 100, 0, "s");
    let r2 = t.release(r2.ip, &key(2), 1, "s").unwrap();
    let t2 = LeaseTable::restore(&[r1, r2]);
    assert_eq!(t2.address_of(&key(1)), Some(ip("10.0.0.10")));
    assert_eq!(t2.get(ip("10.0.0.11")).unwrap().state, BindState::Released);
    assert_eq!(t2.count_bound(50), 1);
}

#[test]
fn who_holds_an_address_is_one_lookup_and_only_while_bound() {
    let mut t = LeaseTable::new();
    let mac = MacAddr([0x52, 0x54, 0, 0, 0, 7]);
    let hw = ClientKey(vec![1, 0x52, 0x54, 0, 0, 0, 7]);
    let facts = ClientFacts {
        mac: Some(mac),
        hostname: None,
    };
    t.bind(ip("10.0.0.30"), &hw, facts.clone(), 100, 0, "s");
    assert!(t.holds(ip("10.0.0.30"), mac, 50));
    assert!(
        !t.holds(ip("10.0.0.30"), MacAddr([0x52, 0x54, 0, 0, 0, 8]), 50),
        "another MAC"
    );
    assert!(!t.holds(ip("10.0.0.31"), mac, 50), "another address");
    assert!(!t.holds(ip("10.0.0.30"), mac, 100), "expired");
    assert_eq!(t.address_of_mac(mac, 50), Some(ip("10.0.0.30")));
    t.release(ip("10.0.0.30"), &hw, 60, "s");
    assert!(!t.holds(ip("10.0.0.30"), mac, 61), "released");
    assert_eq!(t.address_of_mac(mac, 61), None);
    // A client with its own client identifier is still found by address.
    t.bind(ip("10.0.0.32"), &key(9), facts, 100, 70, "s");
    assert!(t.holds(ip("10.0.0.32"), mac, 80));
}

#[test]
fn a_client_holds_one_offer_at_a_time() {
    let s = subnet(&[("10.0.0.10", "10.0.0.20")]);
    let mut t = LeaseTable::new();
    let none = Reserved::new();
    t.offer(ip("10.0.0.10"), &key(1), None, 30, 0);
    t.offer(ip("10.0.0.15"), &key(1), None, 30, 0);
    assert!(t.get(ip("10.0.0.10")).is_none());
    assert_eq!(
        t.allocate(&s, &key(2), None, &none, 0),
        Some(ip("10.0.0.10")),
        "the stale offer was freed"
    );
}

/// Issue 34: what a partner (or an impostor that CONNECTs from its address) may change.
#[test]
fn partner_updates_never_undo_a_binding_granted_here_the_conflict_rule() {
    let mut t = LeaseTable::new();
    let facts = ClientFacts::default();
    let addr = ip("10.0.0.50");
    // Granted here at 1000 (CLTT 1000), until 4600.
    t.bind(addr, &key(1), facts.clone(), 3600, 1000, "a");
    let update = |state, client: Option<ClientKey>, cltt, authenticated| PartnerBinding {
        ip: addr,
        state,
        client,
        mac: None,
        starts: cltt,
        ends: cltt + 600,
        tsfp: cltt + 600,
        cltt,
        authenticated,
    };
    let now = 2000;
    let refused = |t: &mut LeaseTable, u: PartnerBinding| t.apply_partner(u, "a", now).unwrap_err();
    // An impostor's (or a confused partner's) release, expiry, free or backup: refused,
    // however new it claims to be, and the binding is untouched.
    for state in [
        LeaseState::Released,
        LeaseState::Expired,
        LeaseState::Free,
        LeaseState::Backup,
        LeaseState::Declined,
    ] {
        let client = matches!(state, LeaseState::Released | LeaseState::Expired | LeaseState::Declined).then(|| key(1));
        let e = refused(&mut t, update(state, client, now, false));
        assert!(matches!(e, PartnerConflict::EndsOurs { .. }), "{state:?}: {e}");
    }
    // Another client: refused.
    let e = refused(&mut t, update(LeaseState::Bound, Some(key(2)), now, false));
    assert!(matches!(e, PartnerConflict::OtherClient { .. }), "{e}");
    // Older information than ours: refused, even from an authenticated partner.
    let e = refused(&mut t, update(LeaseState::Bound, Some(key(1)), 900, true));
    assert!(
        matches!(
            e,
            PartnerConflict::Older {
                ours: 1000,
                theirs: 900,
                ..
            }
        ),
        "{e}"
    );
    let e = refused(&mut t, update(LeaseState::Released, Some(key(1)), 900, true));
    assert!(matches!(e, PartnerConflict::Older { .. }), "{e}");
    let b = t.get(addr).unwrap();
    assert_eq!((b.client.clone(), b.state, b.ends), (key(1), BindState::Bound, 4600));

    // An authenticated partner with newer information is believed.
    let mut t2 = LeaseTable::new();
    t2.bind(addr, &key(1), facts.clone(), 3600, 1000, "a");
    let r = t2
        .apply_partner(update(LeaseState::Released, Some(key(1)), 1500, true), "a", now)
        .unwrap();
    assert_eq!(r.state, LeaseState::Released);

    // The real flow with an ISC partner: the client renews there (same client, newer
    // CLTT: accepted, and from then on the partner's to change), then releases there.
    let r = t
        .apply_partner(update(LeaseState::Bound, Some(key(1)), 1800, false), "a", now)
        .unwrap();
    assert!(r.from_partner && r.state == LeaseState::Bound);
    let r = t
        .apply_partner(update(LeaseState::Released, Some(key(1)), 1900, false), "a", now)
        .unwrap();
    assert_eq!(r.state, LeaseState::Released);

    // An address whose binding here has expired is the partner's to change.
    let mut t3 = LeaseTable::new();
    t3.bind(addr, &key(1), facts, 60, 1000, "a");
    assert!(
        t3.apply_partner(update(LeaseState::Bound, Some(key(2)), 1500, false), "a", now)
            .is_ok()
    );
}
