//! The boot chain against provd's own services run in the test process
//! (`common::served`: `daemon::serve` on loopback sockets), with real clients: curl over
//! TFTP and HTTP, the tftp-hpa client, crafted TFTP sequences, relayed DHCP and the `provd`
//! CLI; tokens, boot-once and two sites end to end. Each test has its own `127.N.0.0/24`:
//! the server at .1, hv81 at its reserved .81. No root.

mod common;

use common::builder::SiteBuilder;
use common::served::{Served, Sockets};
use common::{Workdir, require_tools};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const HV_MAC: &str = "52:54:00:00:81:01";

/// An assets dir with the real iPXE binaries (`provd assets init`) and a 1 MiB
/// pseudo-random file, and provd serving one site on 127.N.0.1.
struct Boot {
    work: Workdir,
    daemon: Served,
    net: u8,
    http: SocketAddr,
    tftp: SocketAddr,
}

impl Boot {
    fn start(net: u8) -> Boot {
        require_tools(&["curl", "tftp"]);
        let work = Workdir::new();
        let assets = work.path("assets");
        let out = Command::new(common::provd_bin())
            .args(["assets", "init", "--dir"])
            .arg(&assets)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "provd assets init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut x: u32 = 12345;
        let blob: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        std::fs::write(assets.join("blob.bin"), &blob).unwrap();
        std::fs::create_dir_all(assets.join("el9")).unwrap();
        std::fs::write(assets.join("el9/vmlinuz"), b"kernel").unwrap();
        // A symlink leading out of the assets directory must be refused.
        std::fs::write(work.path("secret.txt"), b"outside").unwrap();
        std::os::unix::fs::symlink(work.path("secret.txt"), assets.join("escape")).unwrap();
        let server = Ipv4Addr::new(127, net, 0, 1);
        let sockets = Sockets::bind(&[("b", server)]);
        let (http, tftp) = (sockets.http(0), sockets.tftp(0));
        let site = SiteBuilder::new("b", &server.to_string())
            .field(&format!("http_port = {}", http.port()))
            .listen("lo")
            // Relayed DHCP comes from the server's own address (the harness's relay).
            .dhcp(&format!("relays = [\"{server}\"]"))
            // The test clients' own addresses (.2, and a rack at .100-.109) have no lease:
            // open to TFTP by configuration (.3 is not). Clients that do not choose a
            // source address (tftp-hpa, curl's TFTP) come from 127.0.0.1.
            .pxe(&format!(
                "tftp_open = [\"127.0.0.1/32\", \"127.{net}.0.2/32\", \"127.{net}.0.96/27\"]"
            ))
            .subnet(
                &format!("127.{net}.0.0/24"),
                (&format!("127.{net}.0.100"), &format!("127.{net}.0.200")),
                &["domain = \"b.test\""],
            )
            .host(
                HV_MAC,
                "hv81",
                &[&format!("ip = \"127.{net}.0.81\""), "profile = \"el9\""],
            )
            // In service before provd knew it: never offered an install by surprise.
            .host(
                "52:54:00:00:81:82",
                "hv82",
                &[
                    &format!("ip = \"127.{net}.0.82\""),
                    "profile = \"el9\"",
                    "state = \"installed\"",
                ],
            );
        let state = work.path("state");
        let text = sockets.config(&assets, &state, &[site.toml()]);
        let cfg = work.write("site.toml", &text);
        let daemon = Served::start(sockets, &cfg, &state);
        Boot {
            work,
            daemon,
            net,
            http,
            tftp,
        }
    }

    fn server(&self) -> String {
        format!("127.{}.0.1", self.net)
    }

    /// The boot listener's base URL.
    fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// hv81's reserved address.
    fn host_address(&self) -> String {
        format!("127.{}.0.81", self.net)
    }

    /// curl as hv81 (from its reserved address); returns (HTTP status or curl exit, body).
    fn curl(&self, args: &[&str]) -> (String, Vec<u8>) {
        self.curl_from(&self.host_address(), args)
    }

    /// curl from `address` (any of 127/8).
    fn curl_from(&self, address: &str, args: &[&str]) -> (String, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-s", "--interface", address, "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let mut body = out.stdout;
        let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&body[split + 1..]).to_string();
        body.truncate(split);
        (code, body)
    }

    fn assets(&self) -> PathBuf {
        self.work.path("assets")
    }
}

fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    use provd::tftp::codec::{Packet, encode};
    let options = opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    encode(&Packet::Request {
        write: false,
        filename: file.into(),
        mode: "octet".into(),
        options,
    })
}

/// A complete TFTP download with our own minimal client (blksize 1468, windowsize 1).
fn tftp_get(server: SocketAddr, file: &str) -> Result<Vec<u8>, String> {
    tftp_get_on(UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?, server, file)
}

/// The TFTP error code the server answers `file` with.
fn tftp_error_code(server: SocketAddr, file: &str) -> Option<u16> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(&rrq(file, &[]), server).unwrap();
    let mut buf = [0u8; 600];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    (n >= 4 && buf[1] == 5).then(|| u16::from_be_bytes([buf[2], buf[3]]))
}

#[test]
fn tftp_serves_real_clients_with_options_and_refuses_escapes() {
    let b = Boot::start(81);
    let srv = b.tftp;
    let blob = std::fs::read(b.assets().join("blob.bin")).unwrap();
    let ipxe = std::fs::read(b.assets().join("ipxe.efi")).unwrap();

    // curl with blksize (RFC 2348) and the tsize it always sends.
    let dl = b.work.path("curl.bin");
    let out = Command::new("curl")
        .args(["-s", "--tftp-blksize", "1468", "-o"])
        .arg(&dl)
        .arg(format!("tftp://{srv}/blob.bin"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl tftp: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&dl).unwrap(), blob);
    // tftp-hpa's client without options (plain RFC 1350, 512-byte blocks).
    let dl2 = b.work.path("hpa.efi");
    let out = Command::new("tftp")
        .args(["-m", "binary", &srv.ip().to_string(), &srv.port().to_string()])
        .args(["-c", "get", "ipxe.efi"])
        .arg(&dl2)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tftp-hpa: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&dl2).unwrap(), ipxe);

    // Escapes: parent directories (also behind a leading '/'), a symlink out of the root.
    // A leading '/' names the served root, as GRUB sends every path: "/etc/passwd" is the
    // root's etc/passwd (there is none), never the server's.
    let codes = [
        "../secret.txt",
        "el9/../../secret.txt",
        "/../secret.txt",
        "escape",
        "/etc/passwd",
        "nope.bin",
    ]
    .map(|f| tftp_error_code(srv, f));
    assert_eq!(
        codes,
        [Some(2), Some(2), Some(2), Some(2), Some(1), Some(1)],
        "access violation x4, then file not found x2"
    );
    // GRUB's absolute name of a served file is that file.
    assert_eq!(tftp_get(srv, "/blob.bin").unwrap(), blob);
    let stats = b.daemon.stats();
    assert_eq!(stats["tftp"]["refused_outside_root"], 4);
    assert!(stats["tftp"]["completed"].as_u64().unwrap() >= 2);
}

#[test]
fn tftp_oack_then_error_ends_the_transfer_and_the_retry_succeeds() {
    let b = Boot::start(82);
    let server = b.tftp;
    let expected = std::fs::read(b.assets().join("undionly.kpxe")).unwrap();
    let size = expected.len().to_string();
    let (after_error, retry) = {
        // The PXE ROM pattern: ask with tsize, get the OACK, refuse it with ERROR 8.
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&rrq("undionly.kpxe", &[("tsize", "0")]), server).unwrap();
        let mut buf = [0u8; 2048];
        let (n, tid) = s.recv_from(&mut buf).unwrap();
        assert_eq!(buf[1], 6, "OACK expected");
        assert!(String::from_utf8_lossy(&buf[2..n]).contains(&size), "tsize answered");
        s.send_to(b"\x00\x05\x00\x08TFTP Aborted\x00", tid).unwrap();
        // The server's timeout is 2 s: a transfer that ignored the ERROR would retransmit
        // its OACK within the next 5 s.
        s.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
        let start = Instant::now();
        let mut after = 0;
        while start.elapsed() < Duration::from_secs(5) {
            if s.recv_from(&mut buf).is_ok() {
                after += 1;
            }
        }
        (after, tftp_get(server, "undionly.kpxe"))
    };
    assert_eq!(after_error, 0, "packets sent after the client's ERROR");
    assert_eq!(retry.unwrap(), expected);
    assert_eq!(b.daemon.stats()["tftp"]["aborted_by_client"], 1);
}

#[test]
fn tftp_windowsize_sends_whole_windows_acknowledged_by_their_last_block() {
    let b = Boot::start(89);
    let server = b.tftp;
    let expected = std::fs::read(b.assets().join("blob.bin")).unwrap();
    let (granted, data, acks) = (move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(&rrq("blob.bin", &[("blksize", "1468"), ("windowsize", "8")]), server)
            .unwrap();
        let mut buf = [0u8; 2048];
        let (n, tid) = s.recv_from(&mut buf).unwrap();
        let granted = String::from_utf8_lossy(&buf[2..n]).to_string();
        s.send_to(&[0, 4, 0, 0], tid).unwrap();
        let (mut data, mut acks, mut expect, mut in_window) = (Vec::new(), 0, 1u16, 0);
        loop {
            let (n, _) = s.recv_from(&mut buf).unwrap();
            let block = u16::from_be_bytes([buf[2], buf[3]]);
            assert_eq!(block, expect, "in-order delivery on a clean link");
            data.extend_from_slice(&buf[4..n]);
            expect = expect.wrapping_add(1);
            in_window += 1;
            let last = n - 4 < 1468;
            // RFC 7440: acknowledge the last block of each window (or the final block).
            if in_window == 8 || last {
                s.send_to(&[0, 4, buf[2], buf[3]], tid).unwrap();
                acks += 1;
                in_window = 0;
            }
            if last {
                return (granted, data, acks);
            }
        }
    })();
    assert!(
        granted.contains("windowsize\08"),
        "OACK grants windowsize 8: {granted:?}"
    );
    assert_eq!(data, expected);
    assert_eq!(
        acks,
        expected.len().div_ceil(1468 * 8),
        "one ACK per window of 8 blocks"
    );
}

#[test]
fn five_hundred_concurrent_tftp_transfers_of_the_ipxe_binary_all_complete() {
    let b = Boot::start(83);
    let server = b.tftp;
    let expected = std::fs::read(b.assets().join("ipxe.efi")).unwrap();
    // A rack: 500 transfers from 10 machines (provd caps transfers per client address).
    let net = b.net;
    let socks: Vec<UdpSocket> = (0..500)
        .map(|i| UdpSocket::bind(format!("127.{net}.0.{}:0", 100 + i % 10)).unwrap())
        .collect();
    let handles: Vec<_> = socks
        .into_iter()
        .map(|s| std::thread::spawn(move || tftp_get_on(s, server, "ipxe.efi")))
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failures.is_empty(),
        "{} of 500 failed, e.g. {:?}; server: {}",
        failures.len(),
        failures.first(),
        b.daemon.stats()["tftp"]
    );
    assert!(results.iter().all(|r| r.as_ref().unwrap() == &expected));
    assert_eq!(b.daemon.stats()["tftp"]["completed"], 500);
}

/// TFTP answers only addresses with a lease or reservation here, or in `tftp_open`: a
/// machine at another address (or a forged source) gets one short error and no transfer.
#[test]
fn tftp_refuses_an_address_without_lease_reservation_or_open_prefix() {
    let b = Boot::start(90);
    let server = b.tftp;
    let (refused, reserved, open) = {
        let s = UdpSocket::bind("127.90.0.3:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(&rrq("ipxe.efi", &[("blksize", "1468")]), server).unwrap();
        let mut buf = [0u8; 600];
        let (n, _) = s.recv_from(&mut buf).expect("an answer");
        let refused = (
            u16::from_be_bytes([buf[0], buf[1]]),
            u16::from_be_bytes([buf[2], buf[3]]),
            String::from_utf8_lossy(&buf[4..n]).to_string(),
        );
        // Nothing else follows: no DATA, no OACK.
        let more = s.recv_from(&mut buf).is_ok();
        assert!(!more, "a transfer followed the refusal");
        let reserved = tftp_get_on(UdpSocket::bind("127.90.0.81:0").unwrap(), server, "ipxe.efi");
        let open = tftp_get_on(UdpSocket::bind("127.90.0.2:0").unwrap(), server, "ipxe.efi");
        (refused, reserved, open)
    };
    assert_eq!((refused.0, refused.1), (5, 2), "ERROR, access violation: {refused:?}");
    assert!(refused.2.contains("no lease or reservation"), "{refused:?}");
    let ipxe = std::fs::read(b.assets().join("ipxe.efi")).unwrap();
    assert_eq!(reserved.expect("hv81's reservation reads"), ipxe);
    assert_eq!(open.expect("the tftp_open prefix reads"), ipxe);
    let stats = b.daemon.stats();
    assert_eq!(stats["tftp"]["refused_no_lease"], 1, "{stats}");
    assert_eq!(stats["tftp"]["completed"], 2, "{stats}");
}

/// Like a real client (tftp-hpa, PXE ROMs): retransmit the RRQ while nothing answers.
fn tftp_get_on(s: UdpSocket, server: SocketAddr, file: &str) -> Result<Vec<u8>, String> {
    let mut buf = [0u8; 2048];
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut first = None;
    for _ in 0..5 {
        s.send_to(&rrq(file, &[("blksize", "1468")]), server)
            .map_err(|e| e.to_string())?;
        if let Ok((n, tid)) = s.recv_from(&mut buf) {
            first = Some((n, tid));
            break;
        }
    }
    let (mut n, mut tid) = first.ok_or("no answer to 5 RRQs")?;
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut data = Vec::new();
    let mut expect: u16 = 1;
    loop {
        match buf[1] {
            6 => {
                s.send_to(&[0, 4, 0, 0], tid).unwrap();
            }
            3 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                if block == expect {
                    data.extend_from_slice(&buf[4..n]);
                    expect = expect.wrapping_add(1);
                }
                s.send_to(&[0, 4, buf[2], buf[3]], tid).unwrap();
                if block == expect.wrapping_sub(1) && n - 4 < 1468 {
                    return Ok(data);
                }
            }
            _ => return Err(format!("unexpected: {:?}", &buf[..n.min(40)])),
        }
        (n, tid) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("recv after {} bytes: {e}", data.len()))?;
    }
}

#[test]
fn http_assets_support_range_and_head_and_refuse_escapes() {
    let b = Boot::start(84);
    let base = b.base();
    let blob = std::fs::read(b.assets().join("blob.bin")).unwrap();
    let (code, body) = b.curl(&["-r", "1000-1999", &format!("{base}/assets/blob.bin")]);
    assert_eq!(code, "206");
    assert_eq!(body, blob[1000..2000].to_vec());
    let (code, body) = b.curl(&["-r", "-100", &format!("{base}/assets/blob.bin")]);
    assert_eq!((code.as_str(), body), ("206", blob[blob.len() - 100..].to_vec()));
    let out = Command::new("curl")
        .args(["-sI", &format!("{base}/assets/blob.bin")])
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        head.contains("content-length: 1048576") && head.contains("accept-ranges: bytes"),
        "{head}"
    );
    for path in [
        "/assets/../secret.txt",
        "/assets/el9/../../secret.txt",
        "/assets/%2e%2e/secret.txt",
        "/assets/escape",
    ] {
        let (code, body) = b.curl(&["--path-as-is", &format!("{base}{path}")]);
        assert!(code == "403" || code == "404", "{path}: {code}");
        assert!(
            !String::from_utf8_lossy(&body).contains("outside"),
            "{path} leaked the file"
        );
    }
    assert!(b.daemon.stats()["http"]["refused_outside_root"].as_u64().unwrap() >= 2);
}

fn token_in(script: &str) -> String {
    let i = script.find("?token=").expect("install script has a kickstart token") + 7;
    script[i..].split_whitespace().next().unwrap().to_string()
}

#[test]
fn install_tokens_boot_once_and_unknown_hosts_end_to_end() {
    let b = Boot::start(85);
    let base = b.base();
    let mac_h = HV_MAC.replace(':', "-");

    // The install script, with the kickstart URL and its token.
    let (code, script) = b.curl(&[&format!("{base}/boot/{mac_h}.ipxe")]);
    let script = String::from_utf8(script).unwrap();
    assert_eq!(code, "200");
    assert!(
        script.contains(&format!("kernel {base}/assets/el9/vmlinuz")),
        "{script}"
    );
    assert!(script.contains(&format!("inst.ks={base}/ks/hv81?token=")), "{script}");
    let token = token_in(&script);

    // The right token from another machine (127.N.0.2, not hv81's address): refused, for
    // the kickstart, a callback and the boot script alike.
    let elsewhere = format!("127.{}.0.2", b.net);
    assert_eq!(
        b.curl_from(&elsewhere, &[&format!("{base}/ks/hv81?token={token}")]).0,
        "403"
    );
    assert_eq!(
        b.curl_from(
            &elsewhere,
            &["-X", "POST", &format!("{base}/callback/hv81/installed?token={token}")]
        )
        .0,
        "403"
    );
    assert_eq!(
        b.curl_from(&elsewhere, &[&format!("{base}/boot/{mac_h}.ipxe")]).0,
        "403"
    );

    // Wrong token, no token, and an unknown host.
    assert_eq!(b.curl(&[&format!("{base}/ks/hv81?token=0000")]).0, "403");
    assert_eq!(b.curl(&[&format!("{base}/ks/hv81")]).0, "403");
    let (code, body) = b.curl(&[&format!("{base}/ks/nosuchhost?token={token}")]);
    assert_eq!(
        (code.as_str(), String::from_utf8(body).unwrap().as_str()),
        ("404", "not found\n"),
        "nothing leaked"
    );

    // The kickstart itself: rendered for this host, carrying the token for callbacks, valid.
    let (code, ks) = b.curl(&[&format!("{base}/ks/hv81?token={token}")]);
    let ks = String::from_utf8(ks).unwrap();
    assert_eq!(code, "200");
    assert!(
        ks.contains("--hostname=hv81.b.test") && ks.contains(&format!("{base}/callback/hv81")) && ks.contains(&token),
        "{ks}"
    );
    let ks_file = b.work.write("hv81.ks", &ks);
    if Command::new("sh")
        .args(["-c", "command -v ksvalidator"])
        .output()
        .unwrap()
        .status
        .success()
    {
        let out = Command::new("ksvalidator")
            .args(["-v", "RHEL9"])
            .arg(&ks_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ksvalidator: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Install events: wrong token refused, the right one accepted; `installed` spends it.
    let cb = |event: &str, tok: &str| {
        b.curl(&[
            "-X",
            "POST",
            "--data",
            "from test",
            &format!("{base}/callback/hv81/{event}?token={tok}"),
        ])
        .0
    };
    assert_eq!(cb("installing", "bad"), "403");
    assert_eq!(cb("installing", &token), "200");
    assert_eq!(cb("post-started", &token), "200");
    assert_eq!(cb("bogus", &token), "400");
    assert_eq!(cb("installed", &token), "200");
    assert_eq!(cb("installed", &token), "403", "a spent token is refused");
    assert_eq!(b.curl(&[&format!("{base}/ks/hv81?token={token}")]).0, "403");
    assert_eq!(
        b.curl(&["-X", "POST", &format!("{base}/callback/ghost/installed?token={token}")])
            .0,
        "404"
    );

    // Boot once: now the host boots its disk, until an operator asks for a reinstall.
    let (_, script) = b.curl(&[&format!("{base}/boot/{mac_h}.ipxe")]);
    let script = String::from_utf8(script).unwrap();
    assert!(
        script.contains("boots from its local disk") && script.contains("\nexit"),
        "{script}"
    );
    let show = String::from_utf8(b.daemon.cli(&["hosts", "show", "hv81"]).stdout).unwrap();
    assert!(
        show.contains("status    installed")
            && show.contains("netboot   off")
            && show.contains("kickstart fetched 1 time"),
        "{show}"
    );
    assert!(
        show.contains("installer: installed: from test"),
        "history keeps the event: {show}"
    );
    // An installed host is not reinstalled by accident: the CLI says why and what to do.
    let refused = b.daemon.cli_output(&["hosts", "reinstall", "hv81"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("hv81 is installed") && said.contains("--force"),
        "{said}"
    );
    b.daemon.cli(&["hosts", "reinstall", "hv81", "--force"]);
    let (_, script) = b.curl(&[&format!("{base}/boot/{mac_h}.ipxe")]);
    let new_token = token_in(&String::from_utf8(script).unwrap());
    assert_ne!(new_token, token);
    // `mark-installed`: the host is in service; the install just asked for is withdrawn.
    b.daemon.cli(&["hosts", "mark-installed", "hv81"]);
    let (_, script) = b.curl(&[&format!("{base}/boot/{mac_h}.ipxe")]);
    assert!(String::from_utf8(script).unwrap().contains("local disk"));
    b.daemon.cli(&["hosts", "reinstall", "hv81", "--force"]);
    // A host the config says is installed boots its disk from the first time provd sees it.
    let net = b.net;
    let (_, script) = b.curl_from(
        &format!("127.{net}.0.82"),
        &[&format!("{base}/boot/52-54-00-00-81-82.ipxe")],
    );
    let script = String::from_utf8(script).unwrap();
    assert!(script.contains("local disk") && !script.contains("token="), "{script}");
    let show = String::from_utf8(b.daemon.cli(&["hosts", "show", "hv82"]).stdout).unwrap();
    assert!(
        show.contains("status    installed") && show.contains("in config as installed"),
        "{show}"
    );
    b.daemon.cli(&["hosts", "netboot", "hv81", "off"]);
    let (_, script) = b.curl(&[&format!("{base}/boot/{mac_h}.ipxe")]);
    assert!(String::from_utf8(script).unwrap().contains("local disk"));

    // An unknown machine asking for a made-up MAC's script gets the menu, unrecorded.
    let (code, _) = b.curl(&[&format!("{base}/boot/52-54-00-de-ad-02.ipxe")]);
    assert_eq!(code, "200");
    // An unknown machine that holds a lease gets the menu and is recorded as discovered.
    let leased = {
        use common::client::{self, request};
        use dhcproto::v4::{DhcpOption, MessageType};
        let (d, giaddr) = (&b.daemon, Some(b.daemon.giaddr()));
        let mac = [0x52, 0x54, 0, 0xde, 0xad, 1];
        let offer = d
            .dhcp_exchange(&request(MessageType::Discover, mac, 0xdead, giaddr))
            .expect("OFFER");
        let mut r = request(MessageType::Request, mac, 0xdead, giaddr);
        r.opts_mut().insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        r.opts_mut()
            .insert(DhcpOption::ServerIdentifier(client::server_id(&offer)));
        let ack = d.dhcp_exchange(&r).expect("ACK");
        assert_eq!(client::msg_type(&ack), Some(MessageType::Ack));
        ack.yiaddr()
    };
    let (code, menu) = b.curl_from(&leased.to_string(), &[&format!("{base}/boot/52-54-00-de-ad-01.ipxe")]);
    assert_eq!(code, "200");
    assert!(
        String::from_utf8(menu)
            .unwrap()
            .contains("not in the inventory of site b")
    );
    let list: serde_json::Value = serde_json::from_slice(&b.daemon.cli(&["hosts", "list", "--json"]).stdout).unwrap();
    let d = list
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["mac"] == "52:54:00:de:ad:01")
        .expect("discovered host listed");
    assert_eq!(d["status"], "discovered");
    assert!(
        list.as_array().unwrap().iter().all(|h| h["mac"] != "52:54:00:de:ad:02"),
        "a MAC with no lease was recorded"
    );

    // Metrics and sites on the API listener, the admin routes with the token from the
    // daemon's state directory ...
    let token = std::fs::read_to_string(b.daemon.state_dir.join("api-token")).unwrap();
    let api_addr = b.daemon.api();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let api_as = |path: &str, extra: &[&str]| {
        String::from_utf8(
            Command::new("curl")
                .args(["-s", "-w", "\n%{http_code}"])
                .args(extra)
                .arg(format!("http://{api_addr}{path}"))
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let api = |path: &str| {
        let out = api_as(path, &["-H", &bearer]);
        out.rsplit_once('\n').map(|(body, _)| body.to_string()).unwrap_or(out)
    };
    // ... and without it, every admin route is refused (401), while /metrics stays open.
    for (method, path) in [
        ("GET", "/api/hosts"),
        ("GET", "/api/hosts/hv81"),
        ("POST", "/api/hosts/hv81/reinstall"),
        ("POST", "/api/hosts/hv81/netboot/on"),
        ("GET", "/api/nocloud"),
        ("POST", "/api/nocloud"),
        ("GET", "/api/failover"),
        ("POST", "/api/failover/x/partner-down"),
        ("GET", "/api/leases"),
        ("GET", "/api/sites"),
        ("GET", "/api/stats"),
        ("GET", "/api/events"),
    ] {
        for extra in [
            &["-X", method][..],
            &["-X", method, "-H", "Authorization: Bearer wrong"][..],
        ] {
            let out = api_as(path, extra);
            assert!(out.ends_with("\n401"), "{method} {path} {extra:?}: {out}");
            assert!(!out.contains(token.trim()), "the token is never returned");
        }
    }
    assert!(api_as("/metrics", &[]).ends_with("\n200"));
    let metrics = api("/metrics");
    for line in [
        "provd_http_total{what=\"kickstarts\"} 1",
        "provd_http_total{what=\"refused_token\"} 5",
        "provd_hosts{status=\"discovered\"} 1",
        "provd_tftp_total{what=\"completed\"}",
        "provd_dhcp_events_total{event=\"received_discover\"}",
    ] {
        assert!(metrics.contains(line), "metrics lack {line}:\n{metrics}");
    }
    let sites: serde_json::Value = serde_json::from_str(&api("/api/sites")).unwrap();
    assert_eq!(sites[0]["name"], "b");
    // ... and never on a boot listener.
    assert_eq!(b.curl(&[&format!("{base}/api/hosts")]).0, "404");
    assert_eq!(
        b.curl(&["-X", "POST", &format!("{base}/api/hosts/hv81/reinstall")]).0,
        "404"
    );

    // State survives a restart.
    let d2 = b.daemon.restart();
    let h: serde_json::Value = serde_json::from_slice(&d2.cli(&["hosts", "show", "hv81", "--json"]).stdout).unwrap();
    assert_eq!(
        (h["status"].as_str(), h["netboot"].as_bool()),
        (Some("assigned"), Some(false))
    );
}

#[test]
fn pxelinux_configs_are_generated_per_client_over_tftp() {
    let b = Boot::start(86);
    let (srv, tftp) = (b.server(), b.tftp);
    let mac_h = HV_MAC.replace(':', "-");
    // curl's TFTP client, as hv81 (from its reserved address).
    let cfg = String::from_utf8(b.curl(&[&format!("tftp://{tftp}/pxelinux.cfg/01-{mac_h}")]).1).unwrap();
    assert!(
        cfg.contains("LABEL install") && cfg.contains("KERNEL el9/vmlinuz") && cfg.contains("/ks/hv81?token="),
        "{cfg}"
    );
    let grub = String::from_utf8(b.curl(&[&format!("tftp://{tftp}/grub/grub.cfg-01-{mac_h}")]).1).unwrap();
    assert!(grub.contains(&format!("linux (tftp,{srv})/el9/vmlinuz")), "{grub}");
    // By hex IP: the address must be leased to the MAC first; unleased -> file not found.
    let unleased = format!("pxelinux.cfg/{:08X}", u32::from(Ipv4Addr::new(127, 86, 0, 11)));
    assert_eq!(tftp_error_code(tftp, &unleased), Some(1));
}

#[test]
fn each_host_gets_its_own_sites_urls_with_two_sites_in_one_config() {
    require_tools(&["curl"]);
    let work = Workdir::new();
    std::fs::create_dir(work.path("assets")).unwrap();
    let (n_ip, s_ip) = (Ipv4Addr::new(127, 87, 0, 1), Ipv4Addr::new(127, 88, 0, 1));
    let sockets = Sockets::bind(&[("north", n_ip), ("south", s_ip)]);
    let (n_http, s_http) = (sockets.http(0), sockets.http(1));
    let north = SiteBuilder::new("north", &n_ip.to_string())
        .field(&format!("http_port = {}", n_http.port()))
        .listen("lo")
        .subnet("127.87.0.0/24", ("127.87.0.100", "127.87.0.200"), &[])
        // Reserved at its own address: secrets go only there.
        .host("52:54:00:00:87:01", "n1", &["ip = \"127.87.0.2\"", "profile = \"el9\""]);
    let south = SiteBuilder::new("south", &s_ip.to_string())
        .field(&format!("http_port = {}", s_http.port()))
        // One interface per site: south answers no DHCP here (this test asks no DHCP).
        .subnet("127.88.0.0/24", ("127.88.0.100", "127.88.0.200"), &[])
        .host("52:54:00:00:88:01", "s1", &["ip = \"127.88.0.2\"", "profile = \"el9\""]);
    let state = work.path("state");
    let text = sockets.config(&work.path("assets"), &state, &[north.toml(), south.toml()]);
    let cfg = work.write("sites.toml", &text);
    let _d = Served::start(sockets, &cfg, &state);
    let get_from = |from: &str, url: &str| {
        String::from_utf8(
            Command::new("curl")
                .args(["-s", "--interface", from, url])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
    };
    let n = get_from("127.87.0.2", &format!("http://{n_http}/boot/52-54-00-00-87-01.ipxe"));
    let s = get_from("127.88.0.2", &format!("http://{s_http}/boot/52-54-00-00-88-01.ipxe"));
    assert!(n.contains(&format!("http://{n_http}/ks/n1?token=")), "{n}");
    assert!(s.contains(&format!("http://{s_http}/ks/s1?token=")), "{s}");
    // Asking through the other site's listener (from its own address) still gives the host
    // its own site's URLs.
    let cross = get_from("127.88.0.2", &format!("http://{n_http}/boot/52-54-00-00-88-01.ipxe"));
    assert!(
        cross.contains(&format!("http://{s_http}/assets/el9/vmlinuz")) && !cross.contains("127.87.0.1"),
        "{cross}"
    );
    // An unknown machine gets the site of the listener it asked.
    assert!(get_from("127.88.0.2", &format!("http://{s_http}/boot/52-54-00-00-99-99.ipxe")).contains("site south"));
}

#[test]
fn every_shipped_template_renders_for_every_host_of_every_site_config_and_kickstarts_validate() {
    let has_ksvalidator = Command::new("sh")
        .args(["-c", "command -v ksvalidator"])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        has_ksvalidator,
        "ksvalidator (pykickstart) is not installed: run lab/deps.sh"
    );
    let renderer = provd::render::Renderer::load(&common::repo("templates")).unwrap();
    let work = Workdir::new();
    let mut rendered = 0;
    let mut shipped: Vec<std::path::PathBuf> = std::fs::read_dir(common::repo("site-configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    shipped.extend([common::repo("lab/lab.toml"), common::repo("lab/bench/bench.toml")]);
    for file in shipped {
        let cfg = provd::config::load(std::slice::from_ref(&file)).unwrap();
        provd::boot::Boot::check_templates(&cfg, &renderer).unwrap();
        for site in cfg.sites.values() {
            for host in &site.hosts {
                for kind in ["ipxe", "pxelinux", "grub"] {
                    for action in [
                        provd::render::Action::Install,
                        provd::render::Action::Local,
                        provd::render::Action::Menu,
                    ] {
                        if action == provd::render::Action::Install && host.profile.is_none() {
                            continue;
                        }
                        let text = provd::boot::Boot::preview(&cfg, &renderer, kind, &host.hostname, action, &[])
                            .unwrap_or_else(|e| panic!("{} {} {kind}: {e}", file.display(), host.hostname));
                        assert!(!text.trim().is_empty());
                        rendered += 1;
                    }
                }
                let Some(profile) = host.profile.as_ref().and_then(|p| cfg.profiles.get(p)) else {
                    continue;
                };
                let ks = provd::boot::Boot::preview(
                    &cfg,
                    &renderer,
                    "ks",
                    &host.hostname,
                    provd::render::Action::Install,
                    &[],
                )
                .unwrap();
                assert!(ks.contains(&format!(
                    "http://{}:{}/callback/{}",
                    site.server_address, site.http_port, host.hostname
                )));
                let version = if profile.os == "el8" { "RHEL8" } else { "RHEL9" };
                let path = work.write(&format!("{}.ks", host.hostname), &ks);
                let out = Command::new("ksvalidator")
                    .args(["-v", version])
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{} ({version}): {}{}",
                    host.hostname,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                rendered += 1;
            }
        }
    }
    assert!(
        rendered >= 20,
        "only {rendered} renders: the site configs lost their hosts?"
    );
}

/// Scripts are kept per host within one config generation (`render::cache`): the same
/// fetch again is the same text, and a reload that changes what the script says is served
/// at once, never the kept text of the generation before.
#[test]
fn a_kept_script_is_never_served_after_a_reload_changed_it() {
    let b = Boot::start(91);
    let (from, url) = (
        format!("127.{}.0.82", b.net),
        format!("{}/boot/52-54-00-00-81-82.ipxe", b.base()),
    );
    let fetch = || {
        let (code, body) = b.curl_from(&from, &[&url]);
        assert_eq!(code, "200", "{}", String::from_utf8_lossy(&body));
        String::from_utf8(body).unwrap()
    };
    let first = fetch();
    assert!(
        first.contains("\nexit 1\n"),
        "hv82 is installed: it boots its disk\n{first}"
    );
    assert_eq!(fetch(), first, "the same facts, the same text");
    // A machine that claims hv82's MAC from another address gets no kept text: the
    // address check comes before the cache.
    let (code, body) = b.curl_from(&format!("127.{}.0.83", b.net), &[&url]);
    assert_ne!(code, "200", "{}", String::from_utf8_lossy(&body));
    assert!(
        !String::from_utf8_lossy(&body).contains("hv82"),
        "{}",
        String::from_utf8_lossy(&body)
    );

    let cfg = b.work.path("site.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let changed = text.replacen(
        "state = \"installed\"",
        "state = \"installed\"\nvars = { local_boot = \"sanboot --no-describe --drive 0x80\" }",
        1,
    );
    assert_ne!(changed, text);
    std::fs::write(&cfg, changed).unwrap();
    let said = b.daemon.cli(&["reload"]);
    assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));
    let after = fetch();
    assert!(
        after.contains("sanboot --no-describe --drive 0x80") && !after.contains("\nexit 1\n"),
        "the reloaded config's script, not the kept one:\n{after}"
    );
    assert_eq!(fetch(), after);
}

/// An image profile (`image = NAME`): provd finds the image and its checksum when a config
/// generation is built (a host moved to it without the image is a refused reload), the
/// deploy document names the URL, format, size and checksum of the file it serves, the
/// image is served with Range, and a replaced image is named with its new checksum only
/// after a reload (never a checksum of one file beside the bytes of another).
#[test]
fn an_image_profile_names_the_served_images_checksum_and_needs_the_image_to_load() {
    let sha256 = |bytes: &[u8]| -> String {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let b = Boot::start(92);
    let cfg = b.work.path("site.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let image_profile = "\n[profiles.img]\nos = \"debian12\"\nkernel = \"el9/vmlinuz\"\ninitrd = \"el9/initrd.img\"\n\
                         kickstart = \"kickstart/debian12-image.ks.j2\"\nimage = \"tiny\"\ncertificates = [\"server\"]\n";
    let moved = format!("{text}{image_profile}").replacen("profile = \"el9\"", "profile = \"img\"", 1);
    std::fs::write(&cfg, &moved).unwrap();

    // No image yet: the reload is refused and says what is missing; hv81 keeps el9.
    let said = b.daemon.cli_output(&["reload"]);
    let err = String::from_utf8_lossy(&said.stderr).to_string() + &String::from_utf8_lossy(&said.stdout);
    assert!(!said.status.success(), "{err}");
    assert!(err.contains("neither tiny.raw.gz nor tiny.raw"), "{err}");

    // The image: 1 MiB of a gzip'd raw disk (what the installer streams), and its sidecar.
    let images = b.assets().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let write_image = |seed: u32| -> (Vec<u8>, String) {
        let mut x = seed;
        let raw: Vec<u8> = (0..(1 << 20))
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        let raw_path = b.work.path("tiny.raw");
        std::fs::write(&raw_path, &raw).unwrap();
        let gz = Command::new("gzip")
            .args(["-1", "-c"])
            .arg(&raw_path)
            .output()
            .unwrap()
            .stdout;
        assert!(gz.len() > 1000, "gzip made nothing");
        let sum = sha256(&gz);
        std::fs::write(images.join("tiny.raw.gz"), &gz).unwrap();
        std::fs::write(images.join("tiny.raw.gz.sha256"), format!("{sum}  tiny.raw.gz\n")).unwrap();
        (gz, sum)
    };
    let (gz, sum) = write_image(7);
    let said = b.daemon.cli(&["reload"]);
    assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));

    // The kickstart is taken once per install token: each later look is a new install.
    let deploy_document = || -> String {
        let _ = b.daemon.cli_output(&["hosts", "reinstall", "hv81"]);
        let (code, script) = b.curl(&[&format!("{}/boot/52-54-00-00-81-01.ipxe", b.base())]);
        let script = String::from_utf8(script).unwrap();
        assert_eq!(code, "200", "{script}");
        let token = token_in(&script);
        let (code, ks) = b.curl(&[&format!("{}/ks/hv81?token={token}", b.base())]);
        let ks = String::from_utf8(ks).unwrap();
        assert_eq!(code, "200", "{ks}");
        ks
    };
    let image_line = |ks: &str| -> String {
        ks.lines()
            .find(|l| l.starts_with("image "))
            .unwrap_or_else(|| panic!("no image line:\n{ks}"))
            .to_string()
    };
    let opt = |line: &str, name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("--{name}=")))
            .unwrap_or_else(|| panic!("no --{name} in {line}"))
            .to_string()
    };
    let ks = deploy_document();
    let line = image_line(&ks);
    let url = opt(&line, "url");
    assert_eq!(url, format!("{}/assets/images/tiny.raw.gz", b.base()));
    assert_eq!(opt(&line, "sha256"), sum);
    assert_eq!(opt(&line, "format"), "raw.gz");
    assert_eq!(opt(&line, "size"), gz.len().to_string());
    assert!(opt(&line, "failed").starts_with(&format!("{}/callback/hv81/failed?token=", b.base())));
    // The same build-out as the EL kickstarts: the CSR flow, the allow list, the callbacks.
    for part in [
        "/pki/sign/hv81?role=$1",
        "tls_allowed_dn_list",
        "/callback/hv81/$1?token=",
        "report installed",
    ] {
        assert!(ks.contains(part), "{part} missing from the deploy document");
    }

    // What the installer streams is what the document names: whole, and by Range.
    let (code, body) = b.curl(&[&url]);
    assert_eq!(code, "200");
    assert_eq!(sha256(&body), sum);
    let (code, body) = b.curl(&["-r", "4096-8191", &url]);
    assert_eq!((code.as_str(), body), ("206", gz[4096..8192].to_vec()));

    // Replaced on disk: the generation still names the checksum it was built with (the
    // installer then refuses the new bytes); a reload names the new one.
    let (_, new_sum) = write_image(8);
    assert_ne!(new_sum, sum);
    assert_eq!(opt(&image_line(&deploy_document()), "sha256"), sum);
    let said = b.daemon.cli(&["reload"]);
    assert!(said.status.success(), "{}", String::from_utf8_lossy(&said.stderr));
    assert_eq!(opt(&image_line(&deploy_document()), "sha256"), new_sum);
}
