//! The hypervisor pool with real peers: two "hypervisors" (network namespaces, each with a
//! real libvirtd on TLS) get their certificates through provd's CSR flow (boot script ->
//! install token -> `POST /pki/sign` from their own address), report `installed`, and
//! provd marks both ready by itself over qemu+tls. A TCG guest runs on the first; `provd
//! hypervisors drain` live-migrates it to the second (same UUID, still running) over the
//! site's migration network (IPAM addresses, named in the certificates; the boot network
//! between the two is cut while it moves); with every other hypervisor drained, a drain
//! says what it could not move. Needs root, libvirtd,
//! virtlogd, virsh, openssl, curl, qemu-system-x86_64, unshare.

mod common;

use common::builder::{self, SiteBuilder};
use common::libvirtd::Libvirtd;
use common::{Daemon, Netns, NetnsHosts, Workdir, provd_ok, require_root_and_tools, run, veth, wait_until};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const HOSTS: &str =
    "127.0.0.1 localhost\n10.96.0.11 hva.pl.test hva\n10.96.0.12 hvb.pl.test hvb\n10.96.0.13 hvc.pl.test hvc\n";

/// One hypervisor's /etc/pki, made as its kickstart's %post would: both keys here, the
/// server certificate from provd for its install token, asked from its own address (the
/// client certificate comes later: `migration_cert`).
fn enrol(ns: &Netns, name: &str, mac: &str, pki: &Path) -> String {
    let base = "http://10.96.0.1:8080";
    let curl = |args: &[&str]| {
        let out = ns.cmd("curl").args(["-fsS"]).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let script = curl(&[&format!("{base}/boot/{}.ipxe", mac.replace(':', "-"))]);
    let token = script[script.find("?token=").expect("an install token") + 7..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let private = pki.join("libvirt/private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::create_dir_all(pki.join("CA")).unwrap();
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(private.join("clientkey.pem"))
        .arg("2048"));
    {
        let role = "server";
        let key = private.join(format!("{role}key.pem"));
        run(Command::new("openssl").args(["genrsa", "-out"]).arg(&key).arg("2048"));
        let csr = run(Command::new("openssl")
            .args(["req", "-new", "-subj", &format!("/CN={name}.pl.test"), "-key"])
            .arg(&key));
        let csr_file = pki.join(format!("{role}.csr"));
        std::fs::write(&csr_file, &csr.stdout).unwrap();
        let answer = curl(&[
            "--data-binary",
            &format!("@{}", csr_file.display()),
            &format!("{base}/pki/sign/{name}?role={role}&token={token}"),
        ]);
        let ca = answer
            .split("# provd: ca\n")
            .nth(1)
            .unwrap()
            .split("# provd: ")
            .next()
            .unwrap();
        let cert = answer.split(&format!("# provd: {role}\n")).nth(1).unwrap();
        std::fs::write(pki.join("CA/cacert.pem"), ca).unwrap();
        std::fs::write(pki.join(format!("libvirt/{role}cert.pem")), cert).unwrap();
    }
    token
}

/// The migration (client) certificate, as the host's `migration-cert` script asks for it
/// once the pool has verified the host: its client CSR and a proof made with its server key.
fn migration_cert(ns: &Netns, name: &str, pki: &Path) {
    let key = pki.join("libvirt/private/clientkey.pem");
    let subj = format!("/CN={name}.pl.test");
    let csr = run(Command::new("openssl")
        .args(["req", "-new", "-subj", &subj, "-key"])
        .arg(&key))
    .stdout;
    let id = run(Command::new("sh").arg("-c").arg(format!(
        "openssl pkey -in {} -pubout -outform DER | sha256sum | cut -d' ' -f1",
        key.display()
    )))
    .stdout;
    let proof = run(Command::new("openssl")
        .args(["req", "-new", "-subj"])
        .arg(format!("{subj}/serialNumber={}", String::from_utf8_lossy(&id).trim()))
        .arg("-key")
        .arg(pki.join("libvirt/private/serverkey.pem")))
    .stdout;
    let body = pki.join("migration.req");
    std::fs::write(&body, [csr, proof].concat()).unwrap();
    let out = ns
        .cmd("curl")
        .args(["-fsS", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("http://10.96.0.1:8080/pki/sign/{name}?role=client"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    let answer = String::from_utf8(out.stdout).unwrap();
    let cert = answer.split("# provd: client\n").nth(1).unwrap();
    std::fs::write(pki.join("libvirt/clientcert.pem"), cert).unwrap();
}

fn hypervisors(d: &Daemon) -> Vec<Value> {
    let out = d.cli(&["hypervisors", "list", "--json"]);
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn hv(d: &Daemon, name: &str) -> Option<Value> {
    hypervisors(d).into_iter().find(|h| h["host"] == name)
}

#[test]
fn installed_hypervisors_become_ready_and_a_drain_moves_their_vms() {
    require_root_and_tools(&[
        "libvirtd",
        "virtlogd",
        "virsh",
        "openssl",
        "curl",
        "qemu-system-x86_64",
        "unshare",
    ]);
    let br = Netns::new("plbr");
    let (p, a, b) = (Netns::new("pls"), Netns::new("pla"), Netns::new("plb"));
    let c = Netns::new("plc");
    br.sh("ip link add pbr0 type bridge && ip link set pbr0 up");
    for (ns, ifname, port, addr) in [
        (&p, "pp", "xp", "10.96.0.1/24"),
        (&a, "pa", "xa", "10.96.0.11/24"),
        (&b, "pb", "xb", "10.96.0.12/24"),
        (&c, "pc", "xc", "10.96.0.13/24"),
    ] {
        veth(ns, ifname, addr, &br, port, "");
        br.sh(&format!("ip link set {port} master pbr0"));
    }
    let _hosts: Vec<NetnsHosts> = [&p, &a, &b, &c].iter().map(|ns| NetnsHosts::new(ns, HOSTS)).collect();

    let w = Workdir::new();
    std::fs::create_dir_all(w.path("assets")).unwrap();
    let (mac_a, mac_b, mac_c) = ("52:54:00:00:96:0a", "52:54:00:00:96:0b", "52:54:00:00:96:0c");
    let site = SiteBuilder::new("pl", "10.96.0.1")
        .listen("pp")
        .subnet(
            "10.96.0.0/24",
            ("10.96.0.100", "10.96.0.200"),
            &["domain = \"pl.test\""],
        )
        // A and B have the bonded profile's migration bridge: IPAM gives them addresses on
        // the site's migration network, which drains use.
        .host(mac_a, "hva", &["ip = \"10.96.0.11\"", "profile = \"el9-bonded\""])
        .host(mac_b, "hvb", &["ip = \"10.96.0.12\"", "profile = \"el9-bonded\""])
        .host(mac_c, "hvc", &["ip = \"10.96.0.13\"", "profile = \"el9-kvm\""])
        .raw(
            "[sites.pl.networks.migration]\nprefix = \"10.196.20.0/24\"\n\
             pool = { start = \"10.196.20.11\", end = \"10.196.20.30\" }\n\
             [vm.nic_profiles.tenant]\nnics = [{ name = \"eth0\", role = \"tenant\", rom = false }]\n\
             [vm.nic_profiles.store]\nnics = [{ name = \"eth0\", role = \"storage\" }]\n\
             [vm.nic_profiles.onbr0]\nnics = [{ name = \"eth0\", bridge = \"br0\" }]\n",
        );
    let cfg = w.write("site.toml", &builder::config(&w.path("assets"), &[site.toml()]));
    let state = w.path("state");
    provd_ok(&["pki", "init", "--pki-dir", &state.join("pki").display().to_string()]);
    let daemon = Daemon::start(&p, &cfg, &state, &w.path("provd.log"));

    // Each hypervisor enrols through provd, starts libvirtd on TLS, reports installed.
    let (da, db) = (w.path("hva"), w.path("hvb"));
    let token_a = enrol(&a, "hva", mac_a, &da.join("pki"));
    let token_b = enrol(&b, "hvb", mac_b, &db.join("pki"));
    // C enrols too, but its libvirtd presents a server certificate from another CA.
    let dc = w.path("hvc");
    let token_c = enrol(&c, "hvc", mac_c, &dc.join("pki"));
    let other = w.path("other-ca");
    provd_ok(&["pki", "init", "--pki-dir", &other.display().to_string()]);
    let other_ca = provd::pki::Ca::load(&other).unwrap();
    // Its whole /etc/pki from that CA (libvirtd checks its own certificates against it).
    std::fs::write(dc.join("pki/CA/cacert.pem"), other_ca.cert_pem()).unwrap();
    for (role, name) in [
        (provd::pki::Role::Server, "server"),
        (provd::pki::Role::Client, "client"),
    ] {
        let key = dc.join(format!("pki/libvirt/private/{name}key.pem"));
        let csr = run(Command::new("openssl")
            .args(["req", "-new", "-subj", "/CN=hvc.pl.test", "-key"])
            .arg(&key));
        let cert = other_ca
            .sign_host(
                &String::from_utf8_lossy(&csr.stdout),
                &provd::pki::HostIdentity {
                    fqdn: "hvc.pl.test".into(),
                    short: "hvc".into(),
                    addresses: vec!["10.96.0.13".parse().unwrap()],
                    unit: "site pl".into(),
                },
                role,
                30,
            )
            .unwrap();
        std::fs::write(dc.join(format!("pki/libvirt/{name}cert.pem")), cert.pem).unwrap();
    }
    // A and B listen on every address (as virtproxyd-tls.socket does): the boot network
    // for provd, the migration network for each other.
    let mut lva = Libvirtd::start_with(&a, &da, Some((&da.join("pki"), "0.0.0.0")));
    let lvb = Libvirtd::start_with(&b, &db, Some((&db.join("pki"), "0.0.0.0")));
    let lvc = Libvirtd::start_with(&c, &dc, Some((&dc.join("pki"), "10.96.0.13")));
    for (ns, name, ip, token) in [
        (&a, "hva", "11", &token_a),
        (&b, "hvb", "12", &token_b),
        (&c, "hvc", "13", &token_c),
    ] {
        let out = ns
            .cmd("curl")
            .args(["-fsS", "-X", "POST", "--data", "test hypervisor up"])
            .arg(format!("http://10.96.0.1:8080/callback/{name}/installed?token={token}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "10.96.0.{ip}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // provd verifies both by itself.
    for name in ["hva", "hvb"] {
        let h = wait_until(&format!("{name} ready"), Duration::from_secs(60), || {
            hv(&daemon, name).filter(|h| h["status"] == "ready")
        });
        assert_eq!(h["state"], "ready", "{h}");
        assert!(h["capacity"]["memory_mib"].as_u64().unwrap() > 0, "{h}");
        assert_eq!(h["uri"], format!("qemu+tls://{name}.pl.test/system"));
    }
    // Verified: each gets its migration certificate (peer-to-peer migration dials with it).
    migration_cert(&a, "hva", &da.join("pki"));
    migration_cert(&b, "hvb", &db.join("pki"));

    // C answers with a certificate provd's CA did not sign: not ready, and why.
    let h = wait_until("hvc checked", Duration::from_secs(60), || {
        hv(&daemon, "hvc").filter(|h| h["state"] != serde_json::Value::Null)
    });
    assert_eq!(
        (h["status"].as_str(), h["state"].as_str()),
        (Some("installed"), Some("tls")),
        "{h}"
    );
    eprintln!("hvc: {}", h["reason"]);
    assert!(h["reason"].as_str().unwrap().contains("certificate"), "{h}");
    drop(lvc);

    // A diskless TCG guest on A: SeaBIOS finds nothing to boot and keeps running.
    let xml = w.write(
        "guest.xml",
        "<domain type='qemu'><name>mover</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/>\
         <interface type='user'><mac address='52:54:00:7e:00:01'/><model type='virtio'/><rom enabled='no'/></interface>\
         </devices></domain>",
    );
    lva.virsh(&["define", &xml.display().to_string()]);
    lva.virsh(&["start", "mover"]);
    let uuid = lva.virsh(&["domuuid", "mover"]).trim().to_string();

    // The migration network: IPAM gave A and B their addresses (config order), which the
    // installer would put on br-mig; here a second bridge joins them. A and B then lose
    // each other's boot address (a blackhole route): a migration that works now crossed
    // the migration network.
    let out = daemon.cli(&["hosts", "show", "hva", "--json"]);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["addresses"][0]["address"], "10.196.20.11", "{shown}");
    br.sh("ip link add mbr0 type bridge && ip link set mbr0 up");
    for (ns, ifname, port, addr) in [
        (&a, "miga", "mpa", "10.196.20.11/24"),
        (&b, "migb", "mpb", "10.196.20.12/24"),
    ] {
        veth(ns, ifname, addr, &br, port, "");
        br.sh(&format!("ip link set {port} master mbr0"));
    }
    a.sh("ip route add blackhole 10.96.0.12/32");
    b.sh("ip route add blackhole 10.96.0.11/32");
    let migration_bytes = |ns: &Netns, ifname: &str| -> u64 {
        let out = ns.sh(&format!("cat /sys/class/net/{ifname}/statistics/tx_bytes"));
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let before = migration_bytes(&a, "miga");

    // Drain A: mover lives on B now, same UUID, still running; A is drained.
    let out = daemon.cli(&["hypervisors", "drain", "hva", "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        answer["moved"],
        serde_json::json!([{ "domain": "mover", "to": "hvb", "error": null }]),
        "{answer}\nA:\n{}\nB:\n{}",
        lva.log_text(),
        lvb.log_text()
    );
    assert_eq!(lvb.virsh(&["domstate", "mover"]).trim(), "running");
    assert_eq!(lvb.virsh(&["domuuid", "mover"]).trim(), uuid);
    assert!(!lva.virsh(&["list", "--name"]).contains("mover"));
    assert_eq!(hv(&daemon, "hva").unwrap()["drained"], true);
    let carried = migration_bytes(&a, "miga") - before;
    assert!(carried > 64 << 10, "the migration network carried only {carried} bytes");

    // B cannot be drained while A is: the drain says what it could not move, and why.
    let out = daemon.cli_output(&["hypervisors", "drain", "hvb"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("mover: NOT moved: no ready, undrained hypervisor"),
        "{said}"
    );
    assert_eq!(lvb.virsh(&["domstate", "mover"]).trim(), "running");
    daemon.cli(&["hypervisors", "undrain", "hva"]);
    assert_eq!(hv(&daemon, "hva").unwrap()["drained"], false);

    // Drain B now: mover goes back to A, the site's only ready, undrained hypervisor.
    let out = daemon.cli(&["hypervisors", "drain", "hvb", "--json"]);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["moved"][0]["to"], "hva", "{answer}");
    assert_eq!(lva.virsh(&["domstate", "mover"]).trim(), "running");
    a.sh("ip route del blackhole 10.96.0.12/32");
    b.sh("ip route del blackhole 10.96.0.11/32");

    // Placement by site: a new VM from a template goes to a ready, undrained hypervisor of
    // the site (A; B is drained), reached with the operator's client certificate.
    let tmpl = w.write(
        "tmpl.xml",
        "<domain type='qemu'><name>tmpl</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/>\
         <interface type='user'><mac address='52:54:00:7e:00:01'/><model type='virtio'/><rom enabled='no'/></interface>\
         </devices></domain>",
    );
    lva.virsh(&["define", &tmpl.display().to_string()]);
    let operator = w.path("operator");
    provd_ok(&[
        "pki",
        "issue-client",
        "provd",
        "--out",
        &operator.display().to_string(),
        "--pki-dir",
        &state.join("pki").display().to_string(),
    ]);
    let out = daemon.cli_output(&[
        "vm",
        "deploy",
        "web1",
        "--from",
        "tmpl",
        "--site",
        "pl",
        "--pkipath",
        &operator.display().to_string(),
        "--json",
    ]);
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("hva.pl.test"),
        "deploy --site: {said}"
    );
    assert_eq!(lva.virsh(&["domstate", "web1"]).trim(), "running");
    // --json: stdout is the result alone (progress went to stderr): the state after the start,
    // and the clone's own MACs, as libvirt has them (not the template's).
    let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("deploy --json prints JSON");
    assert_eq!(deployed["vm"]["state"], "running", "{deployed}");
    assert_eq!(deployed["started"], true);
    let macs = deployed["macs"].as_array().expect("macs");
    let web1_xml = lva.virsh(&["dumpxml", "web1"]);
    let tmpl_xml = lva.virsh(&["dumpxml", "tmpl"]);
    assert!(!macs.is_empty(), "{deployed}");
    for mac in macs {
        let mac = mac.as_str().unwrap();
        assert!(
            web1_xml.contains(&format!("<mac address='{mac}'/>")),
            "{mac} not in {web1_xml}"
        );
        assert!(!tmpl_xml.contains(mac), "{mac} is the template's");
    }
    assert!(!lvb.virsh(&["list", "--all", "--name"]).contains("web1"));

    // A ready hypervisor that runs VMs is not reinstalled without --force, and the refusal
    // names what would be destroyed (asked of its libvirt now).
    let refused = daemon.cli_output(&["hosts", "reinstall", "hva"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success()
            && said.contains("hva is ready")
            && said.contains("--force")
            && said.contains("mover")
            && said.contains("web1"),
        "{said}"
    );

    // The site's VMs across the pool, with where each runs.
    let out = daemon.cli_output(&[
        "vm",
        "list",
        "--json",
        "--site",
        "pl",
        "--pkipath",
        &operator.display().to_string(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut where_: Vec<(String, String, String)> = listed
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["state"].as_str().unwrap().to_string(),
                d["hypervisor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    where_.sort();
    let on_a = "qemu+tls://hva.pl.test/system".to_string();
    assert_eq!(
        where_,
        [
            ("mover".to_string(), "running".to_string(), on_a.clone()),
            ("tmpl".to_string(), "shutoff".to_string(), on_a.clone()),
            ("web1".to_string(), "running".to_string(), on_a.clone()),
        ]
    );

    // Template push: a template with a 4 MiB disk on A reaches B (drained, but ready)
    // through libvirt's storage streams; C (not ready) is left alone.
    // Transient pools (pool-create-as): nothing is written to the machine's /etc/libvirt.
    for lv in [&lva, &lvb] {
        lv.virsh(&["pool-create-as", "tpool", "dir", "--target", "/var/lib/libvirt/images"]);
    }
    let data: Vec<u8> = (0..4u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let data_file = w.path("tdisk.raw");
    std::fs::write(&data_file, &data).unwrap();
    lva.virsh(&["vol-create-as", "tpool", "tdisk.raw", "4M", "--format", "raw"]);
    lva.virsh(&[
        "vol-upload",
        "--pool",
        "tpool",
        "tdisk.raw",
        &data_file.display().to_string(),
    ]);
    let tdisk = w.write(
        "tdisk.xml",
        "<domain type='qemu'><name>tdisk</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='/var/lib/libvirt/images/tdisk.raw'/><target dev='vda' bus='virtio'/></disk>\
         </devices></domain>",
    );
    lva.virsh(&["define", &tdisk.display().to_string()]);
    let out = daemon.cli_output(&[
        "vm",
        "template",
        "push",
        "tdisk",
        "--site",
        "pl",
        "--json",
        "--pkipath",
        &operator.display().to_string(),
    ]);
    assert!(out.status.success(), "push: {}", String::from_utf8_lossy(&out.stderr));
    let pushed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let want = sha256(&data);
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    assert_eq!(pushed[0]["hypervisor"], "qemu+tls://hvb.pl.test/system");
    assert_eq!(pushed[0]["disks"][0]["sha256"], want.as_str(), "{pushed:?}");
    // B has it, and its disk (read back with virsh, not provd) is the same bytes.
    assert!(lvb.virsh(&["list", "--all", "--name"]).contains("tdisk"));
    let copy = w.path("copy.raw");
    lvb.virsh(&[
        "vol-download",
        "--pool",
        "tpool",
        "tdisk.raw",
        &copy.display().to_string(),
    ]);
    assert_eq!(sha256(&std::fs::read(&copy).unwrap()), want);
    // A second push finds nothing to do.
    let again = daemon.cli_output(&[
        "vm",
        "template",
        "push",
        "tdisk",
        "--site",
        "pl",
        "--pkipath",
        &operator.display().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("every ready hypervisor of site pl has tdisk"));

    // `vm init --image` on a remote hypervisor: the disk is made by A's libvirt (its
    // /var/lib/libvirt is private to it, so only libvirt can put it there) and the image
    // streamed to it. Read back with virsh, the disk holds the image's bytes, grown to the
    // default profile's 8 GiB.
    let uri_a = format!("qemu+tls://hva.pl.test/system?pkipath={}", operator.display());
    // The built-in NIC profile asks for the tenant network, which provd cannot know on a
    // `--connect` URI: refused, saying so; a profile naming a bridge is used instead.
    let refused = p
        .cmd(common::provd_bin())
        .args([
            "vm",
            "init",
            "nonic",
            "1",
            "64",
            "--domain-type",
            "qemu",
            "--connect",
            &uri_a,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("asks for the tenant network"),
        "{said}"
    );
    assert!(!said.contains("pkipath"), "the host, not provd's query: {said}");
    let vm_init = |name: &str| {
        p.cmd(common::provd_bin())
            .args([
                "vm",
                "init",
                name,
                "1",
                "64",
                "--domain-type",
                "qemu",
                "--nic-profile",
                "onbr0",
                "--config",
            ])
            .arg(&cfg)
            .arg("--image")
            .arg(&data_file)
            .args(["--connect", &uri_a])
            .output()
            .unwrap()
    };
    let out = vm_init("rinit");
    assert!(
        out.status.success(),
        "vm init over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rinit_xml = lva.virsh(&["dumpxml", "rinit"]);
    assert!(
        rinit_xml.contains("/var/lib/libvirt/images/rinit_system.qcow2"),
        "{rinit_xml}"
    );
    let rinit_copy = w.path("rinit.qcow2");
    lva.virsh(&[
        "vol-download",
        "--pool",
        "tpool",
        "rinit_system.qcow2",
        &rinit_copy.display().to_string(),
    ]);
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&rinit_copy));
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        (info["format"].as_str(), info["virtual-size"].as_u64()),
        (Some("qcow2"), Some(8 << 30))
    );
    // compare: the image's 4 MiB equal, the rest of the grown disk zeros.
    run(Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "qcow2"])
        .arg(&data_file)
        .arg(&rinit_copy));
    // A volume already in the way: refused, nothing defined, the volume untouched.
    lva.virsh(&["vol-create-as", "tpool", "clash_system.qcow2", "1M", "--format", "raw"]);
    let out = vm_init("clash");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && said.contains("already exists"), "{said}");
    assert!(!lva.virsh(&["list", "--all", "--name"]).contains("clash"));
    assert!(
        lva.virsh(&["vol-info", "--pool", "tpool", "clash_system.qcow2"])
            .contains("1.00 MiB")
    );
    let packed = batch_deploy_across_both_hypervisors(&daemon, &lva, &lvb, &operator);
    console_acts_on_vms(&p, &lva, &lvb, &state, &w, packed);
    api_batch_deploy(&p, &state, &lva, &lvb);
    live_snapshot_over_tls(&p, &state, &lva);
    api_day_two_verbs(&p, &state, &lvb, if packed == "hva" { &lva } else { &lvb }, packed);
    no_vm_moves_to_a_drained_host(&p, &daemon, &state);
    deployed_vms_come_back_when_their_hypervisor_boots(&mut lva);
    drop(lva);
    drop(lvb);
}

/// `vm deploy --count` (issue 38): a batch of 8 linked clones of tdisk (on both A and B
/// since the push) lands on both hypervisors (spread), as virsh on each sees it; a rerun
/// makes nothing new; a packed batch goes to one host, and one VM whose disk is in the way
/// fails without stopping the others.
fn batch_deploy_across_both_hypervisors(
    daemon: &Daemon,
    lva: &Libvirtd,
    lvb: &Libvirtd,
    operator: &Path,
) -> &'static str {
    daemon.cli(&["hypervisors", "undrain", "hvb"]);
    let batch = |extra: &[&str]| {
        let mut args = vec![
            "vm",
            "deploy",
            "--from",
            "tdisk",
            "--linked",
            "--site",
            "pl",
            "--pkipath",
            operator.to_str().unwrap(),
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = daemon.cli_output(&args);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (
            out.status.success(),
            report,
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let names_on = |lv: &Libvirtd, prefix: &str| -> Vec<String> {
        lv.virsh(&["list", "--all", "--name"])
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let (ok, report, said) = batch(&["--count", "8", "--name-pattern", "web-{n}", "--parallel", "4"]);
    assert!(ok, "{report}\n{said}");
    let vms = report["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 8, "{report}");
    assert!(vms.iter().all(|v| v["result"] == "deployed"), "{report}");
    let (on_a, on_b) = (names_on(lva, "web-"), names_on(lvb, "web-"));
    eprintln!("batch: A has {on_a:?}, B has {on_b:?}");
    assert_eq!(on_a.len() + on_b.len(), 8, "A {on_a:?} B {on_b:?}");
    assert!(
        !on_a.is_empty() && !on_b.is_empty(),
        "spread over both: A {on_a:?} B {on_b:?}"
    );
    for v in vms {
        let name = v["name"].as_str().unwrap();
        let lv = if on_a.iter().any(|n| n == name) { lva } else { lvb };
        assert_eq!(lv.virsh(&["domstate", name]).trim(), "running", "{name}");
        assert!(
            v["hypervisor"]
                .as_str()
                .unwrap()
                .contains(if std::ptr::eq(lv, lva) { "hva" } else { "hvb" })
        );
    }
    // A rerun finds all eight and makes nothing.
    let (ok, report, _) = batch(&["--count", "8", "--name-pattern", "web-{n}"]);
    assert!(ok, "{report}");
    assert!(
        report["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["result"] == "exists"),
        "{report}"
    );
    assert_eq!(names_on(lva, "web-").len() + names_on(lvb, "web-").len(), 8);

    // Pack: all on one host. pk-2's disk is already there on both, so pk-2 fails; pk-1 and
    // pk-3 are deployed anyway, and the exit status says not all landed.
    for lv in [lva, lvb] {
        lv.virsh(&["vol-create-as", "tpool", "pk-2.qcow2", "1M", "--format", "raw"]);
    }
    let (ok, report, said) = batch(&[
        "--count",
        "3",
        "--name-pattern",
        "pk-{n}",
        "--placement",
        "pack",
        "--no-start",
    ]);
    assert!(!ok, "one failed: {report}\n{said}");
    let result = |i: usize| report["vms"][i]["result"].as_str().unwrap().to_string();
    assert_eq!(
        (result(0), result(1), result(2)),
        ("deployed".into(), "failed".into(), "deployed".into()),
        "{report}"
    );
    assert!(
        report["vms"][1]["error"].as_str().unwrap().contains("exists"),
        "{report}"
    );
    let (pa, pb) = (names_on(lva, "pk-"), names_on(lvb, "pk-"));
    assert!(
        (pa.len(), pb.len()) == (2, 0) || (pa.len(), pb.len()) == (0, 2),
        "packed on one host: A {pa:?} B {pb:?}"
    );
    let packed_on = if pa.is_empty() { lvb } else { lva };
    for name in ["pk-1", "pk-3"] {
        assert_eq!(
            packed_on.virsh(&["domstate", name]).trim(),
            "shut off",
            "--no-start: {name}"
        );
    }
    if pa.is_empty() { "hvb" } else { "hva" }
}

/// Drained means no new VMs, whoever asks: the API refuses a migration to a drained host.
fn no_vm_moves_to_a_drained_host(p: &Netns, daemon: &Daemon, state: &Path) {
    // Drain B (what it cannot move, disks on B's own storage, stays there).
    daemon.cli_output(&["hypervisors", "drain", "hvb"]);
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let out = p
        .cmd("curl")
        .args(["-s", "-w", "\n%{http_code}", "-X", "POST", "-H"])
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .arg("http://127.0.0.1:6767/api/vms/hva/mover/migrate?to=hvb")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.ends_with("\n409") && said.contains("hvb is drained"), "{said}");
}

/// A batch's VMs are set to autostart (issue 38): one powered off on A comes back running
/// when A's TLS libvirtd starts as after a host reboot (its once-per-boot mark cleared).
fn deployed_vms_come_back_when_their_hypervisor_boots(lva: &mut Libvirtd) {
    let list = lva.virsh(&["list", "--all", "--name"]);
    let vm = list
        .lines()
        .find(|l| l.starts_with("web-"))
        .expect("a web-N on A")
        .to_string();
    assert!(
        lva.virsh(&["dominfo", &vm])
            .lines()
            .any(|l| l.starts_with("Autostart:") && l.ends_with("enable"))
    );
    lva.virsh(&["destroy", &vm]);
    assert_eq!(lva.virsh(&["domstate", &vm]).trim(), "shut off");
    lva.restart(true);
    wait_until(
        &format!("{vm} started by A's libvirtd"),
        Duration::from_secs(60),
        || (lva.virsh(&["domstate", &vm]).trim() == "running").then_some(()),
    );
}

/// The admin API's VM routes and the console's VM buttons (issue 38), in headless Chromium
/// inside provd's namespace: a snapshot of the shut-off pk-1 (on `packed`), then web1
/// (diskless, on A) powered off, started, refused a migration to hvc (not ready),
/// migrated to B, rebooted; each result checked with virsh on the hypervisors.
fn console_acts_on_vms(p: &Netns, lva: &Libvirtd, lvb: &Libvirtd, state: &Path, w: &Workdir, packed: &str) {
    use std::io::{BufRead, BufReader, Write};
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let token = token.trim();
    let curl = |args: &[&str]| common::curl_status(p, args);
    let bearer = format!("Authorization: Bearer {token}");
    let api = "http://127.0.0.1:6767/api/vms";
    // The API first: every VM of both hosts; refusals say why.
    let (body, code) = curl(&["-H", &bearer, api]);
    assert_eq!(code, "200", "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let on = |host: &str| -> Vec<String> {
        list["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["host"] == host)
            .map(|v| v["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        on("hva").contains(&"web1".to_string()) && on("hvb").iter().any(|n| n.starts_with("web-")),
        "{list}"
    );
    assert_eq!(list["unanswered"], serde_json::json!([]), "{list}");
    let post = |path: &str, auth: bool| {
        let url = format!("{api}/{path}");
        let mut args = vec!["-X", "POST"];
        if auth {
            args.extend(["-H", bearer.as_str()]);
        }
        args.push(&url);
        curl(&args)
    };
    assert_eq!(post("hva/web1/reboot", false).1, "401", "no credential, no action");
    let (body, code) = post("hva/web1/format-disk", true);
    assert!(code == "400" && body.contains("unknown action"), "{code} {body}");
    // A host is named as the pool knows it: an address the caller picks is never dialled.
    let (body, code) = post("10.96.0.99/web1/start", true);
    assert!(code == "404" && body.contains("no hypervisor named"), "{code} {body}");
    let (body, code) = post("hva/web1/start", true);
    assert!(
        code == "409" && body.contains("running"),
        "already running: {code} {body}"
    );

    let shot = w.path("vm-console.png");
    let mut driver = common::ChildGuard::spawn(
        p.cmd("/usr/bin/python3")
            .arg(common::repo("tests/browser/vm_console.py"))
            .arg("http://127.0.0.1:6767/console")
            .arg(token)
            .arg(&shot)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped()),
    );
    let mut lines = BufReader::new(driver.child().stdout.take().unwrap()).lines();
    let mut stdin = driver.child().stdin.take().unwrap();
    let mut next = || lines.next().expect("the console driver ended early").unwrap();
    assert_eq!(next(), "REFUSED");
    assert_eq!(next(), "LIVE");
    let mut say = |command: &str| -> String {
        stdin.write_all(format!("{command}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let line = next();
        eprintln!("console: {command} -> {line}");
        line
    };
    let lv_packed = if packed == "hva" { lva } else { lvb };
    let ok = |said: String| assert!(said.starts_with("OK "), "{said}");
    ok(say(&format!("snapshot {packed} pk-1 before")));
    assert!(lv_packed.virsh(&["snapshot-list", "pk-1", "--name"]).contains("before"));
    ok(say("power-off hva web1"));
    assert_eq!(lva.virsh(&["domstate", "web1"]).trim(), "shut off");
    ok(say("start hva web1"));
    assert_eq!(lva.virsh(&["domstate", "web1"]).trim(), "running");
    let refused = say("migrate hva web1 hvc");
    assert!(
        refused.starts_with("REFUSED ") && refused.contains("hvc is not ready"),
        "{refused}"
    );
    ok(say("migrate hva web1 hvb"));
    assert_eq!(lvb.virsh(&["domstate", "web1"]).trim(), "running");
    assert!(!lva.virsh(&["list", "--all", "--name"]).contains("web1"));
    ok(say("reboot hvb web1"));
    assert_eq!(say("END"), "DONE");
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));
    // Each action is in the boot journal (typed), under the hypervisor it was asked of.
    let (body, _) = curl(&["-H", &bearer, "http://127.0.0.1:6767/api/events"]);
    let events: Vec<Value> = serde_json::from_str(&body).unwrap();
    let actions: Vec<(String, String, String)> = events
        .iter()
        .filter(|e| e["kind"] == "vm-action" && e["error"].is_null())
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (s("mac"), s("domain"), s("action"))
        })
        .collect();
    let (mac_a, mac_p) = (
        "52:54:00:00:96:0a",
        if packed == "hva" {
            "52:54:00:00:96:0a"
        } else {
            "52:54:00:00:96:0b"
        },
    );
    for (mac, domain, action) in [
        (mac_p, "pk-1", "snapshot"),
        (mac_a, "web1", "power-off"),
        (mac_a, "web1", "start"),
        (mac_a, "web1", "migrate to hvb"),
    ] {
        assert!(
            actions.contains(&(mac.into(), domain.into(), action.into())),
            "{domain} {action} not journaled under {mac}: {actions:?}"
        );
    }
}

/// The admin API's other VM verbs (issue 38), with curl as a script would use them, each
/// result checked with virsh: pause and resume and autostart of web1 (running on B); pk-1's
/// snapshots listed, a revert without a name or to a missing one refused (400, 404), the
/// revert and delete of "before" done; memory set on the shut-off pk-1 and vCPUs beyond its
/// maximum refused; a disk and a NIC attached to pk-1 and detached again (a bridge name that
/// would inject XML refused); a version of a template that is not sysprepped refused.
fn api_day_two_verbs(p: &Netns, state: &Path, lvb: &Libvirtd, lv_packed: &Libvirtd, packed: &str) {
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let api = "http://127.0.0.1:6767/api/vms";
    let post = |path: &str| common::curl_status(p, &["-X", "POST", "-H", &bearer, &format!("{api}/{path}")]);
    let ok = |path: &str| {
        let (body, code) = post(path);
        assert_eq!(code, "200", "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let state_of = |lv: &Libvirtd, d: &str| lv.virsh(&["domstate", d]).trim().to_string();
    let autostart = |lv: &Libvirtd, d: &str| {
        lv.virsh(&["dominfo", d])
            .lines()
            .any(|l| l.starts_with("Autostart:") && l.ends_with("enable"))
    };
    assert_eq!(ok("hvb/web1/pause")["vm"]["state"], "paused");
    assert_eq!(state_of(lvb, "web1"), "paused");
    ok("hvb/web1/resume");
    assert_eq!(state_of(lvb, "web1"), "running");
    ok("hvb/web1/autostart");
    assert!(autostart(lvb, "web1"));
    ok("hvb/web1/autostart-off");
    assert!(!autostart(lvb, "web1"));

    let (body, code) = common::curl_status(p, &["-H", &bearer, &format!("{api}/{packed}/pk-1/snapshots")]);
    assert_eq!(code, "200", "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["kind"].as_str()),
        (Some("before"), Some("internal")),
        "{list}"
    );
    let (body, code) = post(&format!("{packed}/pk-1/revert"));
    assert!(code == "400" && body.contains("needs snapshot"), "{code} {body}");
    let (body, code) = post(&format!("{packed}/pk-1/revert?snapshot=nosuch"));
    assert!(code == "404" && body.contains("no snapshot named"), "{code} {body}");
    ok(&format!("{packed}/pk-1/revert?snapshot=before"));
    ok(&format!("{packed}/pk-1/delete-snapshot?snapshot=before"));
    assert_eq!(lv_packed.virsh(&["snapshot-list", "pk-1", "--name"]).trim(), "");

    ok(&format!("{packed}/pk-1/set-memory?memory_mib=32"));
    assert!(
        lv_packed
            .virsh(&["dumpxml", "--inactive", "pk-1"])
            .contains("<currentMemory unit='KiB'>32768</currentMemory>")
    );
    let (body, code) = post(&format!("{packed}/pk-1/set-vcpus?vcpus=64"));
    assert!(code == "409" && body.contains("out of range"), "{code} {body}");

    // Hot-plug, on the shut-off pk-1 (its definition): a disk beside its own, a NIC.
    let config = || lv_packed.virsh(&["dumpxml", "--inactive", "pk-1"]);
    let (body, code) = post(&format!("{packed}/pk-1/attach-disk"));
    assert!(code == "400" && body.contains("needs size_gib"), "{code} {body}");
    let made = ok(&format!("{packed}/pk-1/attach-disk?size_gib=1"))["made"]
        .as_str()
        .unwrap()
        .to_string();
    let (dev, file) = made.split_once(' ').unwrap();
    assert!(dev == "vdb" && file.ends_with("/pk-1_vdb.qcow2"), "{made}");
    assert!(config().contains(file), "attached in the definition");
    ok(&format!("{packed}/pk-1/detach-disk?dev=vdb"));
    assert!(!config().contains(file), "detached");
    // Shut off, only its definition changes: the bridge is checked when it starts.
    let bridge = "tenant0";
    let (body, code) = post(&format!("{packed}/pk-1/attach-nic?bridge=br0%27%2F%3E%3Cx"));
    assert!(code == "400" && body.contains("bridge name"), "{code} {body}");
    let mac = ok(&format!("{packed}/pk-1/attach-nic?bridge={bridge}"))["made"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(config().contains(&mac), "{mac}");
    ok(&format!("{packed}/pk-1/detach-nic?mac={mac}"));
    assert!(!config().contains(&mac));
    // Versions are of sysprepped templates only: tmpl (defined by hand) is refused.
    let (body, code) = post("hva/tmpl/version");
    assert!(code == "409" && body.contains("is not a template"), "{code} {body}");
}

/// A batch deploy asked of the API (issue 38): two linked clones of tdisk on site pl's ready
/// hypervisors, defined (not started) with their seeds stored, checked with virsh and
/// `/api/nocloud`; a rerun makes nothing; a bad pattern, an unknown site or profile, and an
/// unknown field are refused with the reason; each VM is journaled as a "deploy".
fn api_batch_deploy(p: &Netns, state: &Path, lva: &Libvirtd, lvb: &Libvirtd) {
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let deploy = |body: Value| {
        let body = body.to_string();
        let url = "http://127.0.0.1:6767/api/vms/deploy";
        let args = [
            "-X",
            "POST",
            "-H",
            &bearer,
            "-H",
            "Content-Type: application/json",
            "-d",
            &body,
            url,
        ];
        let (text, code) = common::curl_status(p, &args);
        (
            serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
            code,
        )
    };
    let request = serde_json::json!({
        "from": "tdisk", "site": "pl", "count": 2, "name_pattern": "api-{n}",
        "linked": true, "no_start": true, "no_autostart": true,
        "ssh_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest api@provd"],
    });
    // No credential, no deploy (and nothing placed: the names are made below).
    let body = request.to_string();
    let unauthenticated = ["-X", "POST", "-H", "Content-Type: application/json", "-d", &body];
    let (_, code) = common::curl_status(
        p,
        &[&unauthenticated[..], &["http://127.0.0.1:6767/api/vms/deploy"]].concat(),
    );
    assert_eq!(code, "401");
    let (report, code) = deploy(request.clone());
    assert_eq!(code, "200", "{report}");
    assert_eq!(report["complete"], true, "{report}");
    // Each name's outcome, in order.
    let results = |r: &Value| -> Vec<String> {
        r["vms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["result"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(results(&report), ["deployed", "deployed"], "{report}");
    let defined = |name: &str| {
        [lva, lvb]
            .iter()
            .filter(|lv| lv.virsh(&["list", "--all", "--name"]).lines().any(|l| l.trim() == name))
            .count()
    };
    assert_eq!((defined("api-1"), defined("api-2")), (1, 1), "each defined once");
    let (seeds, _) = common::curl_status(p, &["-H", &bearer, "http://127.0.0.1:6767/api/nocloud"]);
    let seeds: Value = serde_json::from_str(&seeds).unwrap();
    let api1 = seeds
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["hostname"] == "api-1")
        .expect("api-1's seed");
    assert_eq!(api1["ssh_keys"][0], request["ssh_keys"][0]);
    assert_eq!(report["vms"][0]["deployed"]["seed"]["instance_id"], api1["instance_id"]);

    let (again, code) = deploy(request.clone());
    assert_eq!(code, "200", "{again}");
    assert_eq!(results(&again), ["exists", "exists"], "a rerun makes nothing: {again}");
    for (change, status, says) in [
        (serde_json::json!({"name_pattern": "api"}), "400", "{n}"),
        (
            serde_json::json!({"name_pattern": "web-{n}'/><x"}),
            "400",
            "not a DNS name",
        ),
        (
            serde_json::json!({"ssh_keys": ["ssh-ed25519 AAAA a\nssh-rsa BBBB evil"]}),
            "400",
            "not one line",
        ),
        (serde_json::json!({"site": "elsewhere"}), "404", "does not serve a site"),
        (serde_json::json!({"nic_profile": "nosuch"}), "400", "no NIC profile"),
        (
            serde_json::json!({"hypervisor": "qemu+tcp://10.0.0.1/system"}),
            "422",
            "unknown field",
        ),
    ] {
        let mut body = request.clone();
        body.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        let (answer, code) = deploy(body);
        assert!(
            code == status && answer.to_string().contains(says),
            "{change}: {code} {answer}"
        );
    }
    let (events, _) = common::curl_status(p, &["-H", &bearer, "http://127.0.0.1:6767/api/events"]);
    let events: Vec<Value> = serde_json::from_str(&events).unwrap();
    let deploys = events
        .iter()
        .filter(|e| e["kind"] == "vm-action" && e["action"] == "deploy" && e["error"].is_null())
        .count();
    assert_eq!(deploys, 2, "journaled once each");

    // NIC profiles by role: each VM lands on its hypervisor's tenant bridge (the bonded
    // profile's br-t100), without an option ROM; a role no hypervisor has is refused, and
    // says which lacks what.
    let mut tenant = request.clone();
    tenant["name_pattern"] = "nic-{n}".into();
    tenant["nic_profile"] = "tenant".into();
    let (report, code) = deploy(tenant.clone());
    assert_eq!(
        (code.as_str(), &report["complete"]),
        ("200", &Value::Bool(true)),
        "{report}"
    );
    for name in ["nic-1", "nic-2"] {
        let lv = [lva, lvb]
            .into_iter()
            .find(|lv| lv.virsh(&["list", "--all", "--name"]).lines().any(|l| l.trim() == name))
            .expect(name);
        let xml = lv.virsh(&["dumpxml", name]);
        assert!(
            xml.contains("<source bridge='br-t100'/>") && xml.contains("<rom enabled='no'/>"),
            "{name}: {xml}"
        );
        assert!(!xml.contains("bridge='br-boot'"), "never the boot bridge: {xml}");
    }
    tenant["name_pattern"] = "nas-{n}".into();
    tenant["nic_profile"] = "store".into();
    let (answer, code) = deploy(tenant);
    assert!(
        code == "409" && answer.to_string().contains("has no storage bridge"),
        "{code} {answer}"
    );
    for name in ["api-1", "api-2", "nic-1", "nic-2"] {
        for lv in [lva, lvb] {
            if lv.virsh(&["list", "--all", "--name"]).lines().any(|l| l.trim() == name) {
                lv.virsh(&["undefine", name]);
            }
        }
    }
}

/// An external snapshot of a running VM on A's TLS libvirtd (issue 38), through the API:
/// a running web-N gets an overlay; a pattern written into that overlay with qemu-io (its
/// disk has no file system: the bytes are the data) while the VM is off is gone after the
/// revert; started again, the snapshot's delete merges the overlay back (an active commit
/// and a pivot over the remote connection) and the VM runs on its own disk.
fn live_snapshot_over_tls(p: &Netns, state: &Path, lva: &Libvirtd) {
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let api = "http://127.0.0.1:6767/api/vms";
    let ok = |path: &str| {
        let (body, code) = common::curl_status(p, &["-X", "POST", "-H", &bearer, &format!("{api}/{path}")]);
        assert_eq!(code, "200", "{path}: {body}");
    };
    let running = lva.virsh(&["list", "--name"]);
    let vm = running
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("web-"))
        .expect("a running web-N on A");
    let disk = || {
        lva.virsh(&["domblklist", vm])
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    let own = disk();
    ok(&format!("hva/{vm}/snapshot?snapshot=live"));
    let overlay = disk();
    assert!(overlay.ends_with(&format!("/{vm}_vda.live.qcow2")), "{overlay}");
    let (body, _) = common::curl_status(p, &["-H", &bearer, &format!("{api}/hva/{vm}/snapshots")]);
    let list: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (list[0]["kind"].as_str(), list[0]["quiesced"].as_bool()),
        (Some("external"), Some(false)),
        "no agent: {list}"
    );
    ok(&format!("hva/{vm}/power-off"));
    let qemu_io = |cmd: &str| {
        lva.in_its_mounts("qemu-io")
            .args(["-f", "qcow2", "-c", cmd, &overlay])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap()
    };
    assert!(qemu_io("write -P 0x5a 0 64k").contains("wrote 65536/65536 bytes"));
    assert!(!qemu_io("read -P 0x5a 0 64k").contains("Pattern verification failed"));
    ok(&format!("hva/{vm}/revert?snapshot=live"));
    assert!(
        qemu_io("read -P 0x5a 0 64k").contains("Pattern verification failed"),
        "reverted"
    );
    ok(&format!("hva/{vm}/start"));
    ok(&format!("hva/{vm}/delete-snapshot?snapshot=live"));
    assert_eq!(disk(), own, "pivoted back onto its own disk");
    assert_eq!(lva.virsh(&["domstate", vm]).trim(), "running");
    let gone = !lva
        .in_its_mounts("test")
        .args(["-e", &overlay])
        .status()
        .unwrap()
        .success();
    assert!(gone, "{overlay} removed");
}

/// sha256sum (coreutils) of `data`: a checksum provd did not compute.
fn sha256(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let mut child = out.unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), data).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
