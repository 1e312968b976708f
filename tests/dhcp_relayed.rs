//! Relayed DHCP against provd's services in the test process (`common::served`: the DHCP
//! loop on a loopback socket, relays at 127.N.x.1 bound on the port it answers relays on):
//! crafted packets, option 82, giaddr selection across sites, PXE answers by architecture,
//! the malformed corpus, leases across a restart. No root. The clients that need a real
//! interface (dhclient, udhcpc, perfdhcp, the interface filter, kill -9, a full disk) stay
//! in `dhcp_blackbox.rs`.

mod common;

use common::builder::SiteBuilder;
use common::client::{self, dora_relayed, exchange, mac, msg_type, request};
use common::served::{Served, Sockets};
use common::{Workdir, wait_until};
use dhcproto::v4::{DhcpOption, MessageType, OptionCode, UnknownOption};
use std::net::Ipv4Addr;
use std::time::Duration;

/// provd serving `sites` (built for the HTTP port it gets) on 127.N.0.1.
fn start(net: u8, sites: impl FnOnce(u16) -> String) -> (Workdir, Served) {
    let work = Workdir::new();
    std::fs::create_dir_all(work.path("assets")).unwrap();
    let sockets = Sockets::bind(&[("t", Ipv4Addr::new(127, net, 0, 1))]);
    let state = work.path("state");
    let text = sockets.config(&work.path("assets"), &state, &[sites(sockets.http(0).port())]);
    let cfg = work.write("site.toml", &text);
    let served = Served::start(sockets, &cfg, &state);
    (work, served)
}

/// The site most tests use; the harness's relay (127.N.0.1, the server's own address) is
/// trusted, as a site trusts its configured relay.
fn basic_site(net: u8, lease_time: u32, http_port: u16) -> String {
    SiteBuilder::new("t", &format!("127.{net}.0.1"))
        .field(&format!("http_port = {http_port}"))
        .listen("lo")
        .dhcp(&format!("relays = [\"127.{net}.0.1\"]"))
        .pxe("uefi_x64 = \"snponly.efi\"")
        .subnet(
            &format!("127.{net}.0.0/24"),
            (&format!("127.{net}.0.100"), &format!("127.{net}.0.200")),
            &[
                &format!("router = \"127.{net}.0.1\""),
                &format!("dns = [\"127.{net}.0.53\"]"),
                "domain = \"test.example\"",
                &format!("lease_time = {lease_time}"),
            ],
        )
        .toml()
}

#[test]
fn relayed_clients_land_in_the_subnet_and_site_of_their_giaddr() {
    let net = 74;
    // Two relays besides the harness's, at 127.N.1.1 and 127.N.2.1 (their giaddrs).
    let relays = format!("relays = [\"127.{net}.0.1\", \"127.{net}.1.1\", \"127.{net}.2.1\"]");
    let (_work, lab) = start(net, |http_port| {
        let main = SiteBuilder::new("main", &format!("127.{net}.0.1"))
            .field(&format!("http_port = {http_port}"))
            .listen("lo")
            .dhcp(&relays)
            .subnet(
                &format!("127.{net}.0.0/24"),
                (&format!("127.{net}.0.100"), &format!("127.{net}.0.200")),
                &[],
            )
            .subnet(
                &format!("127.{net}.1.0/24"),
                (&format!("127.{net}.1.100"), &format!("127.{net}.1.110")),
                &[&format!("router = \"127.{net}.1.1\"")],
            );
        // A second site with no interface of its own, reached only through a relay.
        let remote = SiteBuilder::new("remote", &format!("127.{net}.0.1"))
            .field(&format!("http_port = {http_port}"))
            .dhcp(&relays)
            .subnet(
                &format!("127.{net}.2.0/24"),
                (&format!("127.{net}.2.50"), &format!("127.{net}.2.60")),
                &[&format!("router = \"127.{net}.2.1\"")],
            );
        format!("{}\n{}", main.toml(), remote.toml())
    });
    let server = lab.dhcp[0];
    let opt82 = vec![1, 3, b'p', b'1', b'7', 2, 2, 0xab, 0xcd, 9, 1, 0xee];
    let mut results = Vec::new();
    for (i, g) in [[127, net, 1, 1], [127, net, 2, 1], [127, net, 1, 1]]
        .into_iter()
        .enumerate()
    {
        let giaddr = Ipv4Addr::from(g);
        let sock = lab.relay_at(giaddr);
        // Option 82 with circuit-id and remote-id, plus an unknown sub-option 9.
        let mut d = request(
            MessageType::Discover,
            mac(0x7400 + i as u32),
            100 + i as u32,
            Some(giaddr),
        );
        d.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::RelayAgentInformation,
            opt82.clone(),
        )));
        let offer = exchange(&sock, server, &d).expect("offer via relay");
        let echoed = client::encode(&offer);
        let (_, ack) = dora_relayed(&sock, server, giaddr, mac(0x7400 + i as u32), 100 + i as u32);
        results.push((
            giaddr,
            offer.yiaddr(),
            ack.yiaddr(),
            msg_type(&ack),
            offer.opts().get(OptionCode::Router).cloned(),
            find_opt(&echoed, 82),
        ));
    }
    for (giaddr, offered, acked, kind, router, echoed82) in &results {
        assert_eq!(*kind, Some(MessageType::Ack));
        assert_eq!(offered, acked);
        let o = giaddr.octets();
        assert_eq!(&acked.octets()[..3], &o[..3], "client relayed via {giaddr} got {acked}");
        assert_eq!(router.clone(), Some(DhcpOption::Router(vec![*giaddr])));
        assert_eq!(echoed82.as_deref(), Some(&opt82[..]), "option 82 echoed verbatim");
    }
    let leases = lab.leases();
    let remote = leases
        .iter()
        .find(|l| l["ip"].as_str().unwrap().starts_with(&format!("127.{net}.2.")))
        .unwrap();
    assert_eq!(remote["site"], "remote");
    // A giaddr in no configured subnet (a trusted relay's packet) is dropped and counted,
    // not answered.
    let d = request(
        MessageType::Discover,
        mac(0x7499),
        999,
        Some(Ipv4Addr::new(127, net, 9, 1)),
    );
    let stray = lab.relay_at(Ipv4Addr::new(127, net, 9, 1));
    lab.relay.send_to(&client::encode(&d), server).unwrap();
    let mut buf = [0u8; 1500];
    assert!(stray.recv_from(&mut buf).is_err() && lab.relay.recv_from(&mut buf).is_err());
    wait_until("dropped_no_subnet counted", Duration::from_secs(5), || {
        (lab.stats()["dhcp"]["dropped_no_subnet"] == 1).then_some(())
    });
    // A machine on the boot wire that forges a giaddr (a served subnet's, even) is not a
    // relay the config trusts: no OFFER, counted. Trust comes from the config, not the packet.
    let forger = std::net::UdpSocket::bind((Ipv4Addr::new(127, net, 0, 66), 0)).unwrap();
    forger.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let relay_1 = lab.relay_at(Ipv4Addr::new(127, net, 1, 1));
    let d = request(
        MessageType::Discover,
        mac(0x7498),
        998,
        Some(Ipv4Addr::new(127, net, 1, 1)),
    );
    forger.send_to(&client::encode(&d), server).unwrap();
    assert!(
        forger.recv_from(&mut buf).is_err() && relay_1.recv_from(&mut buf).is_err(),
        "an untrusted relay got an answer"
    );
    wait_until("dropped_untrusted_relay counted", Duration::from_secs(5), || {
        (lab.stats()["dhcp"]["dropped_untrusted_relay"] == 1).then_some(())
    });
}

/// The raw payload of option `code` in an encoded message.
fn find_opt(bytes: &[u8], code: u8) -> Option<Vec<u8>> {
    let mut i = 240;
    while i + 1 < bytes.len() {
        match bytes[i] {
            0 => i += 1,
            255 => return None,
            c => {
                let len = bytes[i + 1] as usize;
                if c == code {
                    return Some(bytes[i + 2..i + 2 + len].to_vec());
                }
                i += 2 + len;
            }
        }
    }
    None
}

#[test]
fn a_known_client_gets_its_address_back_after_restart() {
    let net = 75;
    let (_work, lab) = start(net, |port| basic_site(net, 3600, port));
    let giaddr = lab.giaddr();
    // Take a few addresses so the one we check is not simply the first of the pool.
    let first: Vec<Ipv4Addr> = (0..5)
        .map(|i| {
            dora_relayed(&lab.relay, lab.dhcp[0], giaddr, mac(0x7500 + i), i)
                .1
                .yiaddr()
        })
        .collect();
    let lab = lab.restart();
    let (sock, server) = (&lab.relay, lab.dhcp[0]);
    let offer = exchange(
        sock,
        server,
        &request(MessageType::Discover, mac(0x7503), 50, Some(giaddr)),
    )
    .unwrap();
    // INIT-REBOOT: REQUEST with requested-ip and no server identifier.
    let mut r = request(MessageType::Request, mac(0x7504), 51, Some(giaddr));
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(first[4]));
    let reboot = exchange(sock, server, &r).unwrap();
    // Another client claiming that address is refused.
    let mut r = request(MessageType::Request, mac(0x7599), 52, Some(giaddr));
    r.opts_mut().insert(DhcpOption::RequestedIpAddress(first[4]));
    let other = exchange(sock, server, &r).unwrap();
    let leases = lab.leases();
    let expected: Ipv4Addr = leases.iter().find(|l| l["mac"] == "52:54:00:00:75:03").unwrap()["ip"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(offer.yiaddr(), expected);
    assert_eq!((msg_type(&reboot), reboot.yiaddr()), (Some(MessageType::Ack), first[4]));
    assert_eq!(msg_type(&other), Some(MessageType::Nak));
}

#[test]
fn pxe_and_ipxe_clients_get_the_boot_file_for_their_architecture() {
    let net = 77;
    let (_work, lab) = start(net, |port| basic_site(net, 3600, port));
    let (server, giaddr) = (lab.dhcp[0], lab.giaddr());
    let cases: Vec<(&str, Option<u16>, Option<&str>, bool)> = vec![
        ("bios", Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), false),
        ("efi-bc", Some(7), Some("PXEClient:Arch:00007:UNDI:003016"), false),
        ("efi-x64", Some(9), Some("PXEClient:Arch:00009:UNDI:003016"), false),
        ("ipxe", Some(0), Some("PXEClient:Arch:00000:UNDI:002001"), true),
        ("old-rom", None, Some("PXEClient"), false),
        (
            "arm64-unmapped",
            Some(11),
            Some("PXEClient:Arch:00011:UNDI:003016"),
            false,
        ),
        ("plain", None, None, false),
    ];
    let replies = {
        let sock = &lab.relay;
        cases
            .iter()
            .enumerate()
            .map(|(i, (name, arch, vc, ipxe))| {
                let mut d = request(
                    MessageType::Discover,
                    mac(0x7700 + i as u32),
                    700 + i as u32,
                    Some(giaddr),
                );
                if let Some(a) = arch {
                    d.opts_mut().insert(DhcpOption::ClientSystemArchitecture((*a).into()));
                }
                if let Some(v) = vc {
                    d.opts_mut().insert(DhcpOption::ClassIdentifier(v.as_bytes().to_vec()));
                }
                if *ipxe {
                    d.opts_mut().insert(DhcpOption::UserClass(b"iPXE".to_vec()));
                }
                let o = exchange(sock, server, &d).unwrap_or_else(|| panic!("{name}: no offer"));
                // dhcproto's decoder keeps the NUL that ends the `file` field.
                let file = o
                    .fname_str()
                    .and_then(|r| r.ok())
                    .map(|f| f.trim_end_matches('\0').to_string());
                let vc = match o.opts().get(OptionCode::ClassIdentifier) {
                    Some(DhcpOption::ClassIdentifier(v)) => Some(String::from_utf8_lossy(v).to_string()),
                    _ => None,
                };
                (name.to_string(), file, o.siaddr(), vc)
            })
            .collect::<Vec<_>>()
    };
    let server_ip = Ipv4Addr::new(127, net, 0, 1);
    let want: Vec<(&str, Option<String>, Ipv4Addr, Option<&str>)> = vec![
        // No option 60 by default: see PxePolicy::answer_pxeclient (EDK2 would go looking for
        // a BINL server on port 4011); the lab's OVMF VMs prove the default works.
        ("bios", Some("undionly.kpxe".into()), server_ip, None),
        ("efi-bc", Some("snponly.efi".into()), server_ip, None),
        ("efi-x64", Some("snponly.efi".into()), server_ip, None),
        (
            "ipxe",
            Some(format!(
                "http://127.{net}.0.1:{}/boot/52-54-00-00-77-03.ipxe",
                lab.http(0).port()
            )),
            Ipv4Addr::UNSPECIFIED,
            None,
        ),
        ("old-rom", Some("undionly.kpxe".into()), server_ip, None),
        ("arm64-unmapped", None, Ipv4Addr::UNSPECIFIED, None),
        ("plain", None, Ipv4Addr::UNSPECIFIED, None),
    ];
    for ((name, file, siaddr, vc), (wname, wfile, wsiaddr, wvc)) in replies.iter().zip(want) {
        assert_eq!(name, wname);
        assert_eq!(file, &wfile, "{name}: boot file");
        assert_eq!(*siaddr, wsiaddr, "{name}: next-server");
        assert_eq!(vc.as_deref(), wvc, "{name}: option 60");
    }
}

#[test]
fn a_corpus_of_malformed_packets_is_counted_and_the_server_keeps_serving() {
    let net = 78;
    let (_work, lab) = start(net, |port| basic_site(net, 3600, port));
    let (server, giaddr) = (lab.dhcp[0], lab.giaddr());
    let corpus = malformed_corpus(giaddr);
    let sent = corpus.len() as u64;
    // In bursts of 25: the point is what each packet does, not whether the socket's
    // receive buffer (capped by net.core.rmem_max) holds all 410 at once.
    for burst in corpus.chunks(25) {
        for p in burst {
            lab.relay.send_to(p, server).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(500));
    // A receive loop that panicked would have ended `serve` (it supervises them): this
    // exchange would go unanswered.
    let ack = dora_relayed(&lab.relay, server, giaddr, mac(0x7800), 1).1;
    assert_eq!(msg_type(&ack), Some(MessageType::Ack));
    let stats = lab.stats();
    let malformed: u64 = stats["dhcp"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("malformed_"))
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    assert_eq!(malformed, sent, "every malformed packet counted: {stats:#}");
}

/// Hostile packets: truncations, bad cookies, oversized hlen, option lengths running past
/// the end, missing message type, replies sent to the server, and seeded random garbage.
fn malformed_corpus(giaddr: Ipv4Addr) -> Vec<Vec<u8>> {
    let good = client::encode(&request(MessageType::Discover, mac(0x78ff), 9, Some(giaddr)));
    let mut v: Vec<Vec<u8>> = vec![vec![], vec![1], good[..100].to_vec(), good[..239].to_vec()];
    let mut bad_cookie = good.clone();
    bad_cookie[238] = 0;
    v.push(bad_cookie);
    let mut big_hlen = good.clone();
    big_hlen[2] = 255;
    v.push(big_hlen);
    let mut reply = good.clone();
    reply[0] = 2;
    v.push(reply);
    let mut overrun = good[..240].to_vec();
    overrun.extend_from_slice(&[53, 1, 1, 12, 250, b'x']);
    v.push(overrun);
    let mut no_type = good[..240].to_vec();
    no_type.extend_from_slice(&[12, 1, b'x', 255]);
    v.push(no_type);
    let mut bad_type_len = good[..240].to_vec();
    bad_type_len.extend_from_slice(&[53, 0, 255]);
    v.push(bad_type_len);
    // Seeded xorshift so the corpus is the same every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..200 {
        let len = (next() % 600) as usize;
        v.push((0..len).map(|_| next() as u8).collect());
    }
    for _ in 0..200 {
        // A valid header followed by random, wrongly-framed options.
        let mut p = good[..240].to_vec();
        p.extend([53, 1, 1]);
        p.push(12);
        p.push(200);
        p.extend((0..(next() % 100) as usize).map(|_| next() as u8));
        v.push(p);
    }
    v
}
