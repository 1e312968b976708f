//! Any datagram that parses, through the RFC 2131 engine of a small site (a pool, a
//! reservation, a trusted relay), twice in a row so the second sees the first's binding.
//! Never a panic; an address offered or acknowledged lies in the site's subnets; the
//! reserved address goes to its host's MAC only; a persisted record names the address the
//! answer gives.
#![no_main]
use dhcproto::v4::MessageType;
use libfuzzer_sys::fuzz_target;
use provd::config::Config;
use provd::dhcp::Leases;
use provd::dhcp::engine::Outcome;
use provd::dhcp::leases::LeaseTable;
use provd::config::topology::Topology;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

const SITE: &str = r#"
[sites.f]
server_address = "10.0.0.1"
listen = [{ interface = "eth0", address = "10.0.0.1" }]
[sites.f.dhcp]
relays = ["10.9.0.1"]
[[sites.f.subnets]]
prefix = "10.0.0.0/24"
pools = [{ start = "10.0.0.100", end = "10.0.0.119" }]
[[sites.f.subnets]]
prefix = "10.9.0.0/24"
pools = [{ start = "10.9.0.100", end = "10.9.0.109" }]
[[sites.f.hosts]]
mac = "52:54:00:00:00:0b"
hostname = "h11"
ip = "10.0.0.11"
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| provd::config::load_from_strs(&[("fuzz.toml".into(), SITE.into())]).expect("the fuzz site"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, packet)) = data.split_first() else {
        return;
    };
    let Ok(mut req) = provd::dhcp::packet::parse(packet) else {
        return;
    };
    // The receive loop sets the source; let the input choose a relay, the client or none.
    req.source = match knobs & 3 {
        0 => None,
        1 => Some(Ipv4Addr::new(10, 9, 0, 1)),
        2 => Some(req.giaddr()),
        _ => Some(Ipv4Addr::new(10, 0, 0, 50)),
    };
    let cfg = config();
    let served = cfg.select_sites(&[]).unwrap();
    let topology = Topology::new(cfg, &served);
    let leases = Leases::new(&topology, LeaseTable::new());
    let ingress = leases.ingresses()[0].clone();
    let reserved_mac = provd::mac::MacAddr([0x52, 0x54, 0, 0, 0, 0x0b]);
    for now in [1_800_000_000u64, 1_800_000_000 + u64::from(knobs >> 2)] {
        match leases.decide(&topology, &req, &ingress, now) {
            Outcome::Reply { msg, kind, persist, .. } => {
                let yiaddr = msg.yiaddr();
                if matches!(kind, MessageType::Offer | MessageType::Ack) && !yiaddr.is_unspecified() {
                    let o = yiaddr.octets();
                    assert!(
                        o[0] == 10 && (o[1] == 0 || o[1] == 9) && o[2] == 0,
                        "{kind:?} of {yiaddr}, outside the site's subnets"
                    );
                    if yiaddr == Ipv4Addr::new(10, 0, 0, 11) {
                        assert_eq!(req.mac, Some(reserved_mac), "the reservation went to another MAC");
                    }
                }
                if let Some(r) = persist {
                    assert_eq!(r.ip, yiaddr, "the record names another address than the answer");
                }
            }
            Outcome::Persist(_) | Outcome::Drop(_) => {}
        }
    }
});
