//! Tests of `dhcp::engine`.

use super::*;
use crate::config;
use crate::dhcp::packet::{self, Request};
use dhcproto::v4::{DhcpOption, Message};
use dhcproto::{Encodable, Encoder};

const NOW: u64 = 1_000_000;

/// An engine with the one topology these tests decide under.
struct TestEngine {
    engine: Engine,
    topology: Topology,
}

impl TestEngine {
    fn new(topology: Topology) -> Self {
        TestEngine {
            engine: Engine::new(&topology, LeaseTable::new()),
            topology,
        }
    }

    fn handle(&mut self, req: &Request, ingress: &Ingress, now: u64) -> Outcome {
        self.engine.handle(&self.topology, req, ingress, now)
    }
}

fn engine(unknown: &str, authoritative: bool) -> (TestEngine, Ingress) {
    let toml = format!(
        r#"
[sites.s]
server_address = "10.0.0.1"
listen = [{{ interface = "eth0", address = "10.0.0.1" }}]
[sites.s.dhcp]
unknown_clients = "{unknown}"
authoritative = {authoritative}
[[sites.s.subnets]]
prefix = "10.0.0.0/24"
lease_time = 600
max_lease_time = 1200
pools = [{{ start = "10.0.0.100", end = "10.0.0.110" }}]
[[sites.s.hosts]]
mac = "52:54:00:00:00:01"
hostname = "reserved"
ip = "10.0.0.50"
[[sites.s.hosts]]
mac = "52:54:00:00:00:02"
hostname = "known"
"#
    );
    let cfg = config::load_from_strs(&[("t.toml".into(), toml)]).unwrap();
    let served = cfg.select_sites(&[]).unwrap();
    let topo = Topology::new(&cfg, &served);
    let ingress = topo.ingresses().remove(0);
    (TestEngine::new(topo), ingress)
}

fn req(kind: MessageType, last: u8, opts: Vec<DhcpOption>, ciaddr: Option<Ipv4Addr>) -> Request {
    let mut m = Message::default();
    m.set_chaddr(&[0x52, 0x54, 0, 0, 0, last]);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    if let Some(c) = ciaddr {
        m.set_ciaddr(c);
    }
    for o in opts {
        m.opts_mut().insert(o);
    }
    let mut b = Vec::new();
    m.encode(&mut Encoder::new(&mut b)).unwrap();
    packet::parse(&b).unwrap()
}

fn reply(o: &Outcome) -> (MessageType, Ipv4Addr) {
    match o {
        Outcome::Reply { kind, msg, .. } => (*kind, msg.yiaddr()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn select(e: &mut TestEngine, ing: &Ingress, last: u8, addr: Ipv4Addr) -> Outcome {
    let opts = vec![
        DhcpOption::RequestedIpAddress(addr),
        DhcpOption::ServerIdentifier(ip("10.0.0.1")),
    ];
    e.handle(&req(MessageType::Request, last, opts, None), ing, NOW)
}

#[test]
fn reserved_host_gets_its_address_and_only_that() {
    let (mut e, ing) = engine("boot", true);
    let o = e.handle(&req(MessageType::Discover, 1, vec![], None), &ing, NOW);
    assert_eq!(reply(&o), (MessageType::Offer, ip("10.0.0.50")));
    assert_eq!(reply(&select(&mut e, &ing, 1, ip("10.0.0.100"))).0, MessageType::Nak);
    let ack = select(&mut e, &ing, 1, ip("10.0.0.50"));
    assert_eq!(reply(&ack), (MessageType::Ack, ip("10.0.0.50")));
    match ack {
        Outcome::Reply { persist: Some(r), .. } => assert_eq!(r.hostname.as_deref(), Some("reserved")),
        _ => panic!("ACK must carry the record to persist"),
    }
    // Nobody else may take the reserved address, even by asking for it.
    assert_eq!(reply(&select(&mut e, &ing, 9, ip("10.0.0.50"))).0, MessageType::Nak);
}

#[test]
fn unknown_client_policies() {
    let pxe = vec![DhcpOption::ClientSystemArchitecture(0.into())];
    let (mut e, ing) = engine("ignore", true);
    assert!(matches!(
        e.handle(&req(MessageType::Discover, 9, pxe.clone(), None), &ing, NOW),
        Outcome::Drop(DropReason::UnknownClient)
    ));
    assert_eq!(
        reply(&e.handle(&req(MessageType::Discover, 2, pxe.clone(), None), &ing, NOW)).0,
        MessageType::Offer
    );

    let (mut e, ing) = engine("lease-only", true);
    let boot_file = |o: &Outcome| match o {
        Outcome::Reply { msg, .. } => msg.fname().is_some(),
        _ => panic!(),
    };
    assert!(
        !boot_file(&e.handle(&req(MessageType::Discover, 9, pxe.clone(), None), &ing, NOW)),
        "unknown: lease only"
    );
    assert!(
        boot_file(&e.handle(&req(MessageType::Discover, 2, pxe.clone(), None), &ing, NOW)),
        "known host boots"
    );

    let (mut e, ing) = engine("boot", true);
    assert!(boot_file(&e.handle(
        &req(MessageType::Discover, 9, pxe, None),
        &ing,
        NOW
    )));
}

/// The engine asks its policy and does what it says, whatever the site config: a fake
/// policy (as pixiecore's `booterFunc` in its tests) ignores one MAC, gives another a
/// lease only and a third a file of its own, and is asked once per packet.
#[test]
fn the_engine_answers_as_its_boot_policy_says() {
    #[derive(Default)]
    struct Fake {
        asked: std::sync::Mutex<Vec<(Option<u8>, bool)>>,
    }
    impl DhcpPolicy for Fake {
        fn dhcp(&self, ask: &DhcpAsk<'_>) -> DhcpBoot {
            let last = ask.mac.map(|m| m.0[5]);
            self.asked.lock().unwrap().push((last, ask.host.is_some()));
            match last {
                Some(9) => DhcpBoot::Ignore,
                Some(2) => DhcpBoot::LeaseOnly,
                _ => DhcpBoot::Boot(BootAnswer::Tftp(format!("fake-{}.efi", ask.site.name))),
            }
        }
    }
    let (t, ing) = engine("boot", true);
    let fake = Arc::new(Fake::default());
    let mut e = TestEngine {
        engine: Engine::with_policy(&t.topology, LeaseTable::new(), fake.clone()),
        topology: t.topology,
    };
    let pxe = vec![DhcpOption::ClientSystemArchitecture(7.into())];
    let file = |o: &Outcome| match o {
        Outcome::Reply { msg, .. } => msg.fname().map(|f| String::from_utf8_lossy(f).into_owned()),
        other => panic!("expected a reply, got {other:?}"),
    };
    assert!(matches!(
        e.handle(&req(MessageType::Discover, 9, pxe.clone(), None), &ing, NOW),
        Outcome::Drop(DropReason::UnknownClient)
    ));
    // Known host 02 boots under the site config; the policy says lease only.
    assert_eq!(
        file(&e.handle(&req(MessageType::Discover, 2, pxe.clone(), None), &ing, NOW)),
        None
    );
    assert_eq!(
        file(&e.handle(&req(MessageType::Discover, 7, pxe, None), &ing, NOW)).as_deref(),
        Some("fake-s.efi")
    );
    assert_eq!(
        *fake.asked.lock().unwrap(),
        vec![(Some(9), false), (Some(2), true), (Some(7), false)]
    );
}

#[test]
fn relayed_requests_are_served_only_from_configured_relays() {
    let toml = r#"
[sites.s]
server_address = "10.0.0.1"
listen = [{ interface = "eth0", address = "10.0.0.1" }]
[sites.s.dhcp]
relays = ["10.0.0.2", "10.9.0.0/24"]
[[sites.s.subnets]]
prefix = "10.0.0.0/24"
pools = [{ start = "10.0.0.100", end = "10.0.0.110" }]
[[sites.s.subnets]]
prefix = "10.0.1.0/24"
pools = [{ start = "10.0.1.100", end = "10.0.1.110" }]
"#;
    let cfg = config::load_from_strs(&[("t.toml".into(), toml.into())]).unwrap();
    let served = cfg.select_sites(&[]).unwrap();
    let topo = Topology::new(&cfg, &served);
    let ing = topo.ingresses().remove(0);
    let mut e = TestEngine::new(topo);
    let relayed = |source: Option<Ipv4Addr>| {
        let mut r = req(MessageType::Discover, 9, vec![], None);
        r.msg.set_giaddr(ip("10.0.1.1"));
        r.source = source;
        r
    };
    for trusted in ["10.0.0.2", "10.9.0.77"] {
        let o = e.handle(&relayed(Some(ip(trusted))), &ing, NOW);
        assert_eq!(
            reply(&o).1.octets()[2],
            1,
            "{trusted}: an address of the relayed subnet"
        );
    }
    for untrusted in [Some(ip("10.0.0.3")), Some(ip("10.0.1.1")), None] {
        assert!(
            matches!(
                e.handle(&relayed(untrusted), &ing, NOW),
                Outcome::Drop(DropReason::UntrustedRelay)
            ),
            "{untrusted:?}"
        );
    }
    // Direct requests (no giaddr) are not relay traffic.
    assert_eq!(
        reply(&e.handle(&req(MessageType::Discover, 8, vec![], None), &ing, NOW)).0,
        MessageType::Offer
    );
}

#[test]
fn request_for_another_server_withdraws_our_offer() {
    let (mut e, ing) = engine("boot", true);
    let (_, offered) = reply(&e.handle(&req(MessageType::Discover, 9, vec![], None), &ing, NOW));
    let opts = vec![
        DhcpOption::RequestedIpAddress(ip("10.0.0.77")),
        DhcpOption::ServerIdentifier(ip("10.0.0.254")),
    ];
    assert!(matches!(
        e.handle(&req(MessageType::Request, 9, opts, None), &ing, NOW),
        Outcome::Drop(DropReason::OtherServer)
    ));
    assert!(e.engine.table.get(offered).is_none(), "offer released for others");
}

#[test]
fn init_reboot_and_renew_rules() {
    let (mut e, ing) = engine("boot", true);
    let (_, a) = reply(&e.handle(&req(MessageType::Discover, 9, vec![], None), &ing, NOW));
    assert_eq!(reply(&select(&mut e, &ing, 9, a)).0, MessageType::Ack);
    // INIT-REBOOT for its own address: ACK. For an address on another network: NAK.
    let reboot = |addr| {
        req(
            MessageType::Request,
            9,
            vec![DhcpOption::RequestedIpAddress(addr)],
            None,
        )
    };
    assert_eq!(reply(&e.handle(&reboot(a), &ing, NOW)).0, MessageType::Ack);
    assert_eq!(
        reply(&e.handle(&reboot(ip("192.168.1.5")), &ing, NOW)).0,
        MessageType::Nak
    );
    // RENEWING (ciaddr set): ACK for the owner, NAK for a client claiming it.
    assert_eq!(
        reply(&e.handle(&req(MessageType::Request, 9, vec![], Some(a)), &ing, NOW)).0,
        MessageType::Ack
    );
    assert_eq!(
        reply(&e.handle(&req(MessageType::Request, 8, vec![], Some(a)), &ing, NOW)).0,
        MessageType::Nak
    );
}

#[test]
fn non_authoritative_server_is_silent_about_clients_it_does_not_know() {
    let (mut e, ing) = engine("boot", false);
    let reboot = req(
        MessageType::Request,
        9,
        vec![DhcpOption::RequestedIpAddress(ip("10.0.0.20"))],
        None,
    );
    assert!(matches!(
        e.handle(&reboot, &ing, NOW),
        Outcome::Drop(DropReason::NoRecord)
    ));
    let (_, auth_ing) = engine("boot", true);
    let (mut auth, _) = engine("boot", true);
    assert_eq!(reply(&auth.handle(&reboot, &auth_ing, NOW)).0, MessageType::Nak);
}

#[test]
fn decline_quarantines_and_inform_gets_configuration_only() {
    let (mut e, ing) = engine("boot", true);
    let (_, a) = reply(&e.handle(&req(MessageType::Discover, 9, vec![], None), &ing, NOW));
    reply(&select(&mut e, &ing, 9, a));
    let d = e.handle(
        &req(MessageType::Decline, 9, vec![DhcpOption::RequestedIpAddress(a)], None),
        &ing,
        NOW,
    );
    assert!(matches!(d, Outcome::Persist(ref r) if r.state == crate::store::LeaseState::Declined));
    let (_, b) = reply(&e.handle(&req(MessageType::Discover, 9, vec![], None), &ing, NOW));
    assert_ne!(a, b, "declined address is not offered again");

    let inform = e.handle(&req(MessageType::Inform, 7, vec![], Some(ip("10.0.0.9"))), &ing, NOW);
    match inform {
        Outcome::Reply {
            kind,
            msg,
            dest,
            persist,
        } => {
            assert_eq!(kind, MessageType::Ack);
            assert!(msg.yiaddr().is_unspecified());
            assert!(msg.opts().get(dhcproto::v4::OptionCode::AddressLeaseTime).is_none());
            assert_eq!(dest, Destination::Unicast(ip("10.0.0.9")));
            assert!(persist.is_none());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn requested_lease_time_is_clamped() {
    let (mut e, ing) = engine("boot", true);
    let lease_of = |o: &Outcome| match o {
        Outcome::Reply { msg, .. } => match msg.opts().get(dhcproto::v4::OptionCode::AddressLeaseTime) {
            Some(DhcpOption::AddressLeaseTime(t)) => *t,
            _ => panic!(),
        },
        _ => panic!(),
    };
    let ask = |t| req(MessageType::Discover, 9, vec![DhcpOption::AddressLeaseTime(t)], None);
    assert_eq!(lease_of(&e.handle(&ask(999_999), &ing, NOW)), 1200);
    assert_eq!(lease_of(&e.handle(&ask(5), &ing, NOW)), 60);
    assert_eq!(
        lease_of(&e.handle(&req(MessageType::Discover, 9, vec![], None), &ing, NOW)),
        600
    );
}
