//! Hypervisor PKI end to end, with real peers: provd serves a host its EL9 hypervisor
//! kickstart; the kickstart's own %post runs (real openssl and curl, shims only for
//! systemctl/restorecon/hostnamectl) in a private mount + UTS namespace whose /etc is an
//! overlay, so the machine's /etc is never written; Debian's virt-pki-validate checks the
//! result; Debian's libvirtd starts with those certificates and the %post's
//! tls_allowed_dn_list; `virsh -c qemu+tls://<fqdn>/system` from provd's namespace works with
//! provd's client certificate and fails with one from another CA. Needs root, libvirt,
//! gnutls-bin, openssl.

mod common;

use common::builder::{self, SiteBuilder};
use common::{Daemon, Netns, NetnsHosts, Workdir, provd_bin, require_root_and_tools, veth, wait_until};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MAC: &str = "52:54:00:00:90:01";
const FQDN: &str = "hv01.h.test";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn provd(args: &[&str]) {
    let out = Command::new(provd_bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "provd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shim(dir: &Path, name: &str, log: &Path) {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("#!/bin/sh\necho \"{name} $*\" >> {}\nexit 0\n", log.display()),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&p).status().unwrap();
}

#[test]
fn a_kickstarted_hypervisor_gets_certificates_that_libvirt_accepts_over_tls() {
    require_root_and_tools(&[
        "ip",
        "curl",
        "openssl",
        "certtool",
        "virt-pki-validate",
        "libvirtd",
        "virsh",
        "unshare",
    ]);
    let srv = Netns::new("pkis");
    let hv = Netns::new("pkih");
    veth(&srv, "vs", "10.90.0.1/24", &hv, "vh", "10.90.0.11/24");
    hv.sh(&format!("ip link set vh address {MAC}"));
    let work = Workdir::new();
    let w = work.dir.path().to_path_buf();
    std::fs::create_dir(w.join("assets")).unwrap();
    let site = SiteBuilder::new("h", "10.90.0.1")
        .listen("vs")
        .subnet("10.90.0.0/24", ("10.90.0.100", "10.90.0.200"), &["domain = \"h.test\""])
        .host(MAC, "hv01", &["ip = \"10.90.0.11\"", "profile = \"el9-kvm\""]);
    let cfg = work.write("site.toml", &builder::config(&w.join("assets"), &[site.toml()]));
    let state = w.join("state");
    provd(&["pki", "init", "--pki-dir", &state.join("pki").display().to_string()]);
    let daemon = Daemon::start(&srv, &cfg, &state, &w.join("provd.log"));
    let base = "http://10.90.0.1:8080";

    // The host's boot script carries its install token; its kickstart comes with it.
    let get = |url: &str| String::from_utf8(hv.cmd("curl").args(["-fsS", url]).output().unwrap().stdout).unwrap();
    let script = get(&format!("{base}/boot/{}.ipxe", MAC.replace(':', "-")));
    let token = script[script.find("?token=").unwrap() + 7..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let ks = get(&format!("{base}/ks/hv01?token={token}"));
    assert!(ks.contains("%post --interpreter=/bin/bash --erroronfail"), "{ks}");
    // Like Anaconda: the %post body, run by the interpreter its header names (default sh).
    let mut interpreter = "/bin/sh".to_string();
    let post: String = {
        let mut on = false;
        let mut lines = Vec::new();
        for l in ks.lines() {
            if l.starts_with("%post") {
                on = true;
                if let Some(i) = l.split_whitespace().find_map(|a| a.strip_prefix("--interpreter=")) {
                    interpreter = i.to_string();
                }
            } else if on && l.trim() == "%end" {
                break;
            } else if on {
                lines.push(l);
            }
        }
        lines.join("\n") + "\n"
    };
    std::fs::write(w.join("post.sh"), &post).unwrap();

    // Refusals, each with a clear answer and without spending the token: a wrong token, no
    // CSR, a CSR made for another host, an unknown host.
    let sign = |host: &str, tok: &str, csr: &str| {
        let out = hv
            .cmd("curl")
            .args(["-s", "-w", "\n%{http_code}", "--data-binary", csr])
            .arg(format!("{base}/pki/sign/{host}?role=server&token={tok}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    let foreign = {
        let out = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "/dev/null",
                "-subj",
                "/CN=hv99.h.test",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sign("hv01", "0000", &foreign).0, "403");
    let (code, body) = sign("hv01", &token, "not a certificate request");
    assert!(code == "400" && body.contains("the CSR is not valid"), "{code} {body}");
    let (code, body) = sign("hv01", &token, &foreign);
    assert!(
        code == "400" && body.contains("names \"hv99.h.test\", not this host"),
        "{code} {body}"
    );
    assert_eq!(sign("ghost", &token, &foreign).0, "404");

    // The "installed system": an overlay on /etc in a private mount namespace, shims for
    // what only a booted EL host has, then virt-pki-validate, then libvirtd on TLS.
    let shims = w.join("shims");
    std::fs::create_dir(&shims).unwrap();
    let shim_log = w.join("shims.log");
    for s in ["systemctl", "restorecon", "hostnamectl"] {
        shim(&shims, s, &shim_log);
    }
    for d in ["etc-up", "etc-work", "run"] {
        std::fs::create_dir(w.join(d)).unwrap();
    }
    std::fs::write(
        w.join("libvirtd.conf"),
        format!(
            "listen_tls = 1\nlisten_tcp = 0\nlisten_addr = \"10.90.0.11\"\nauth_tls = \"none\"\nunix_sock_dir = \"{run}\"\n",
            run = w.join("run").display()
        ),
    )
    .unwrap();
    let hv_script = w.join("hypervisor.sh");
    std::fs::write(
        &hv_script,
        format!(
            r#"set -e
W={w}
mount -t overlay overlay -o lowerdir=/etc,upperdir=$W/etc-up,workdir=$W/etc-work /etc
for d in /run/libvirt /var/lib/libvirt /var/cache/libvirt /var/log/libvirt; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
rm -f /etc/libvirt/qemu/networks/autostart/default.xml
hostname {FQDN}
PATH=$W/shims:$PATH {interpreter} $W/post.sh > $W/post.log 2>&1 || {{ echo "post failed: $?" >> $W/post.log; exit 1; }}
touch $W/post.done
virt-pki-validate > $W/validate.log 2>&1 || echo "exit $?" >> $W/validate.log
touch $W/validate.done
grep '^tls_allowed_dn_list' /etc/libvirt/virtproxyd.conf >> $W/libvirtd.conf
exec libvirtd --listen -p /run/libvirt/libvirtd.pid -f $W/libvirtd.conf > $W/libvirtd.log 2>&1
"#,
            w = w.display(),
            interpreter = interpreter
        ),
    )
    .unwrap();
    let _libvirtd = Kill(
        hv.cmd("unshare")
            .args(["--mount", "--uts", "--propagation", "private", "sh"])
            .arg(&hv_script)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("%post to finish", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(w.join("post.log")).unwrap_or_default();
        assert!(!log.contains("post failed"), "%post failed:\n{log}");
        w.join("post.done").exists().then_some(())
    });
    wait_until("virt-pki-validate", Duration::from_secs(30), || {
        w.join("validate.done").exists().then_some(())
    });

    // virt-pki-validate: everything found, nothing to fix.
    let validate = std::fs::read_to_string(w.join("validate.log")).unwrap();
    for want in [
        "Found CA certificate",
        "Found client certificate",
        "Found client private key",
        "Found server certificate",
        "Found server private key",
    ] {
        assert!(validate.contains(want), "virt-pki-validate lacks {want:?}:\n{validate}");
    }
    for bad in [
        "as root do",
        "do not match",
        "does not seem to match",
        "Missing",
        "exit ",
    ] {
        assert!(
            !validate.contains(bad),
            "virt-pki-validate complains ({bad:?}):\n{validate}"
        );
    }
    let shim_calls = std::fs::read_to_string(&shim_log).unwrap();
    assert!(
        shim_calls.contains("systemctl enable virtqemud.socket virtproxyd.socket virtproxyd-tls.socket"),
        "{shim_calls}"
    );

    // provd's side: both roles issued once, the token spent by `installed`.
    let h: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["hosts", "show", "hv01", "--json"]).stdout).unwrap();
    assert_eq!(h["status"], "installed");
    assert_eq!(
        h["install"]["certificates_issued"],
        serde_json::json!(["server", "client"])
    );
    let resign = hv
        .cmd("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data-binary", "x"])
        .arg(format!("{base}/pki/sign/hv01?role=server&token={token}"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&resign.stdout),
        "403",
        "a spent token signs nothing"
    );

    // libvirtd over TLS, from provd's namespace: provd's client certificate is accepted ...
    let _hosts = NetnsHosts::new(&srv, &format!("127.0.0.1 localhost\n10.90.0.11 {FQDN} hv01\n"));
    let operator = w.join("operator");
    provd(&[
        "pki",
        "issue-client",
        "provd",
        "--out",
        &operator.display().to_string(),
        "--pki-dir",
        &state.join("pki").display().to_string(),
    ]);
    let virsh = |pki: &Path| {
        srv.cmd("virsh")
            .args([
                "-c",
                &format!("qemu+tls://{FQDN}/system?pkipath={}", pki.display()),
                "list",
                "--all",
            ])
            .output()
            .unwrap()
    };
    let start = std::time::Instant::now();
    let ok = loop {
        let out = virsh(&operator);
        if out.status.success() {
            break out;
        }
        if start.elapsed() > Duration::from_secs(30) {
            panic!(
                "libvirtd never accepted provd's client over TLS; virsh: {}\nlibvirtd log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(w.join("libvirtd.log")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("Name"),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // ... and a client certificate from another CA is refused.
    let other = w.join("other-ca");
    // Same CA name, so the intruder's DN is exactly ours: only the signature can refuse it.
    provd(&["pki", "init", "--pki-dir", &other.display().to_string()]);
    let intruder = w.join("intruder");
    provd(&[
        "pki",
        "issue-client",
        "provd",
        "--out",
        &intruder.display().to_string(),
        "--pki-dir",
        &other.display().to_string(),
    ]);
    // virsh checks its own certificate against its CA file before connecting, so the intruder
    // lists both CAs: virsh is satisfied and trusts our server; libvirtd trusts only provd's.
    let both = std::fs::read_to_string(operator.join("cacert.pem")).unwrap()
        + &std::fs::read_to_string(other.join("ca-cert.pem")).unwrap();
    std::fs::write(intruder.join("cacert.pem"), both).unwrap();
    let log_before = std::fs::read_to_string(w.join("libvirtd.log"))
        .unwrap_or_default()
        .len();
    let refused = virsh(&intruder);
    assert!(
        !refused.status.success(),
        "libvirtd accepted a client certificate from another CA"
    );
    let log = std::fs::read_to_string(w.join("libvirtd.log")).unwrap_or_default();
    let new = &log[log_before..];
    assert!(
        new.contains("hasn't got a known issuer") && new.contains("Failed to verify peer's certificate"),
        "the refusal must come from libvirtd's certificate check; virsh said {}; libvirtd logged:\n{new}",
        String::from_utf8_lossy(&refused.stderr)
    );
    eprintln!(
        "libvirtd refused the other CA's client: {}",
        new.lines()
            .filter(|l| l.contains("error"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
}
