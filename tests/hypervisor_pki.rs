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
use common::{Daemon, Netns, NetnsHosts, Workdir, require_root_and_tools, run, veth, wait_until};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const MAC: &str = "52:54:00:00:90:01";
const FQDN: &str = "hv01.h.test";
/// A second host of the site, assigned and never booted: the impostor takes its address.
const MAC2: &str = "52:54:00:00:90:02";

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

use common::provd_ok as provd;

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
        .host(MAC, "hv01", &["ip = \"10.90.0.11\"", "profile = \"el9-kvm\""])
        .host(MAC2, "hv02", &["ip = \"10.90.0.12\"", "profile = \"el9-kvm\""]);
    // Renewal is accepted only in a certificate's last days (`renew_within_days`, default
    // the last third of its life); this test renews its fresh ones, so its window is longer
    // than their life. (The refusal before the window is the signer's unit test.)
    let text = builder::config(&w.join("assets"), &[site.toml()]) + "\n[pki]\nrenew_within_days = 1000\n";
    let cfg = work.write("site.toml", &text);
    let state = w.join("state");
    provd(&["pki", "init", "--pki-dir", &state.join("pki").display().to_string()]);
    // provd (and virsh later) find the hypervisor by name, as a site's DNS would answer.
    let _hosts = NetnsHosts::new(&srv, &format!("127.0.0.1 localhost\n10.90.0.11 {FQDN} hv01\n"));
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
            // The main %post (Anaconda runs it in the installed system); the --nochroot one
            // writes the install marker under /mnt/sysimage and is not run here.
            if l.starts_with("%post") && !l.contains("--nochroot") {
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
        let url = format!("{base}/pki/sign/{host}?role=server&token={tok}");
        let (body, code) = common::curl_status(&hv, &["--data-binary", csr, &url]);
        (code, body)
    };
    let foreign = common::openssl_csr("hv99.h.test", "rsa:2048");
    assert_eq!(sign("hv01", "0000", &foreign).0, "403");
    let (code, body) = sign("hv01", &token, "not a certificate request");
    assert!(code == "400" && body.contains("the CSR is not valid"), "{code} {body}");
    let (code, body) = sign("hv01", &token, &foreign);
    assert!(
        code == "400" && body.contains("names \"hv99.h.test\", not this host"),
        "{code} {body}"
    );
    assert_eq!(sign("ghost", &token, &foreign).0, "404");
    // The token never buys the client (migration) certificate: only a host the pool verified.
    let client_csr = common::openssl_csr(FQDN, "rsa:2048");
    let out = hv
        .cmd("curl")
        .args(["-s", "-w", "\n%{http_code}", "--data-binary", &client_csr])
        .arg(format!("{base}/pki/sign/hv01?role=client&token={token}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.ends_with("403") && text.contains("once the pool has verified it"),
        "{text}"
    );

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
grep '^tls_allowed_dn_list' /etc/libvirt/virtproxyd.conf >> $W/libvirtd.conf
start() {{ libvirtd --listen -p /run/libvirt/libvirtd.pid -f $W/libvirtd.conf >> $W/libvirtd.log 2>&1 & pid=$!; }}
start
# Later phases, asked for by the test with a file: the host's own maintenance scripts (as
# their systemd units would run them), then libvirtd restarted as the scripts asked.
while :; do
  for job in "renew-certs:sh /etc/provd/renew-certs --now" "refresh-crl:sh /etc/provd/refresh-crl" \
      "migration-cert:sh /etc/provd/migration-cert" "validate:virt-pki-validate" \
      "refresh-crl-old:env PROVD_CRL_URL=file://$W/old-crl.pem sh /etc/provd/refresh-crl"; do
    name=${{job%%:*}}
    if [ -e $W/go.$name ]; then
      rm -f $W/go.$name
      PATH=$W/shims:$PATH ${{job#*:}} > $W/$name.log 2>&1 || echo "exit $?" >> $W/$name.log
      kill $pid; wait $pid || true
      start
      touch $W/$name.done
    fi
  done
  sleep 0.2
done
"#,
            w = w.display(),
            interpreter = interpreter
        ),
    )
    .unwrap();
    let libvirtd = Kill(
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
    let shim_calls = std::fs::read_to_string(&shim_log).unwrap();
    assert!(
        shim_calls.contains("systemctl enable virtqemud.socket virtproxyd.socket virtproxyd-tls.socket"),
        "{shim_calls}"
    );

    // provd's side: the server certificate issued once; the token spent by `installed`.
    let h: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["hosts", "show", "hv01", "--json"]).stdout).unwrap();
    assert_eq!(h["status"], "installed");
    assert_eq!(h["install"]["certificates_issued"], serde_json::json!(["server"]));
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

    // libvirtd over TLS, from provd's namespace: an operator's client certificate (OU
    // "provd operator") is accepted ...
    let operator = w.join("operator");
    provd(&[
        "pki",
        "issue-client",
        "alice",
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
                "libvirtd never accepted the operator's client over TLS; virsh: {}\nlibvirtd log:\n{}",
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

    // The pool: provd reaches the installed host's libvirt over qemu+tls with its own client
    // certificate, by itself, and marks it ready with what libvirt reports.
    let ready = wait_until("provd marks hv01 ready", Duration::from_secs(90), || {
        let out = daemon.cli(&["hypervisors", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let h = list.as_array()?.iter().find(|h| h["host"] == "hv01")?.clone();
        (h["status"] == "ready").then_some(h)
    });
    assert_eq!(ready["state"], "ready", "{ready}");
    assert!(ready["capacity"]["cpus"].as_u64().unwrap() > 0, "{ready}");
    assert!(ready["capacity"]["memory_mib"].as_u64().unwrap() > 0, "{ready}");
    assert_eq!(ready["uri"], format!("qemu+tls://{FQDN}/system"));
    let shown: serde_json::Value =
        serde_json::from_slice(&daemon.cli(&["hosts", "show", "hv01", "--json"]).stdout).unwrap();
    assert_eq!(shown["status"], "ready");
    assert!(
        shown["history"].as_array().unwrap().iter().any(|h| h["what"]
            .as_str()
            .unwrap()
            .contains("hypervisor verified over qemu+tls")),
        "{shown}"
    );

    let phase = Phase {
        hv: &hv,
        srv: &srv,
        daemon: &daemon,
        w: &w,
        base,
        operator: &operator,
    };
    // Verified: the host's own migration-cert script (its first-boot timer) gets the client
    // certificate with a proof of its server key; then virt-pki-validate is satisfied.
    let restarts = || {
        std::fs::read_to_string(w.join("shims.log"))
            .unwrap_or_default()
            .matches("systemctl try-restart")
            .count()
    };
    let restarts_before = restarts();
    let got = phase.run_on_host("migration-cert");
    assert!(
        got.contains("migration certificate installed") && !got.contains("exit "),
        "{got}"
    );
    // Installing it restarts nothing: libvirt reads its client certificate at each dial
    // (tests/pool.rs migrates with one written after libvirtd started), and a restart would
    // cut the connections open to the host right when it turns ready (the image lab's guest
    // stage lost its virsh session to one).
    assert_eq!(restarts(), restarts_before, "migration-cert restarted libvirt: {got}");
    let validate = phase.run_on_host("validate");
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

    impostor_at_an_assigned_hosts_address(&phase, &state);
    revocation_and_renewal(&phase);
    drop(libvirtd);
}

/// The impostor of issue 20: a machine on hv01's segment takes hv02's reserved address while
/// hv02 is assigned and has not booted. It gets what hv02 had not taken yet (its boot script,
/// kickstart and server certificate), each once; no migration certificate; and neither what
/// it got nor what every token used to buy (a client certificate with OU "site h") is
/// accepted by hv01's real libvirtd.
fn impostor_at_an_assigned_hosts_address(p: &Phase, state: &Path) {
    let me = "10.90.0.12";
    assert!(p.hv.sh(&format!("ip addr add {me}/24 dev vh")).status.success());
    let curl = |args: &[&str]| -> (String, String) {
        let (body, code) = common::curl_status(p.hv, &[&["--interface", me], args].concat());
        (code, body)
    };
    let (code, script) = curl(&[&format!("{}/boot/{}.ipxe", p.base, MAC2.replace(':', "-"))]);
    assert_eq!(code, "200", "{script}");
    let token = script[script.find("?token=").unwrap() + 7..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let ks = format!("{}/ks/hv02?token={token}", p.base);
    assert_eq!(curl(&[&ks]).0, "200");
    // Each step once: the kickstart (and the secrets in it) cannot be fetched again.
    let (code, body) = curl(&[&ks]);
    assert!(
        code == "403" && body.contains("kickstart was already taken"),
        "{code} {body}"
    );

    let dir = p.w.join("impostor");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("clientkey.pem");
    run(Command::new("openssl").args(["genrsa", "-out"]).arg(&key).arg("2048"));
    let csr = |key: &Path, subj: &str| {
        String::from_utf8(
            run(Command::new("openssl")
                .args(["req", "-new", "-subj", subj, "-key"])
                .arg(key))
            .stdout,
        )
        .unwrap()
    };
    std::fs::write(dir.join("server.csr"), csr(&key, "/CN=hv02.h.test")).unwrap();
    let sign = |query: &str, body: &Path| {
        curl(&[
            "--data-binary",
            &format!("@{}", body.display()),
            &format!("{}/pki/sign/hv02?{query}", p.base),
        ])
    };
    let (code, answer) = sign(&format!("role=server&token={token}"), &dir.join("server.csr"));
    assert_eq!(code, "200", "{answer}");
    let server_cert = answer.split("# provd: server\n").nth(1).unwrap().to_string();

    // No migration certificate: hv02 was never verified by the pool, whatever the impostor
    // proves (here: the key of the server certificate it just got).
    let client_key = dir.join("other.key");
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&client_key)
        .arg("2048"));
    let id = run(Command::new("sh").arg("-c").arg(format!(
        "openssl pkey -in {} -pubout -outform DER | sha256sum | cut -d' ' -f1",
        client_key.display()
    )));
    let id = String::from_utf8(id.stdout).unwrap();
    let bundle =
        csr(&client_key, "/CN=hv02.h.test") + &csr(&key, &format!("/CN=hv02.h.test/serialNumber={}", id.trim()));
    std::fs::write(dir.join("bundle"), bundle).unwrap();
    for query in ["role=client".to_string(), format!("role=client&token={token}")] {
        let (code, body) = sign(&query, &dir.join("bundle"));
        assert!(
            code == "403" && body.contains("hv02 is installing") && body.contains("once the pool has verified it"),
            "{query}: {code} {body}"
        );
    }

    // hv01's libvirtd, over TLS. The impostor's server certificate as a client: refused.
    std::fs::copy(p.operator.join("cacert.pem"), dir.join("cacert.pem")).unwrap();
    std::fs::write(dir.join("clientcert.pem"), &server_cert).unwrap();
    let libvirtd_log = || std::fs::read_to_string(p.w.join("libvirtd.log")).unwrap_or_default();
    let before = libvirtd_log().len();
    // (s_client's own exit status depends on when libvirtd closes: not asserted.)
    let s_client = p
        .srv
        .cmd("sh")
        .arg("-c")
        .arg(format!(
            "echo | timeout 10 openssl s_client -connect 10.90.0.11:16514 -CAfile {d}/cacert.pem -cert {d}/clientcert.pem -key {d}/clientkey.pem",
            d = dir.display()
        ))
        .output()
        .unwrap();
    let said = wait_until(
        "libvirtd's word on the server certificate as a client",
        Duration::from_secs(10),
        || {
            let log = libvirtd_log();
            let new = log[before..].to_string();
            new.contains("error").then_some(new)
        },
    );
    // (libvirtd checks the DN first: "OU=site h" is on no list; the purpose would refuse next.)
    assert!(
        said.contains("Failed to verify peer's certificate")
            && (said.contains("tls_allowed_dn_list") || said.contains("purpose does not allow use")),
        "libvirtd must refuse a server certificate as a client; s_client: {}; libvirtd:\n{said}",
        String::from_utf8_lossy(&s_client.stdout)
    );

    // What every install token bought before: a client certificate of the site's unit. The
    // real libvirtd refuses it: "OU=site h" is not in its tls_allowed_dn_list any more.
    let ca = provd::pki::Ca::load(&state.join("pki")).unwrap();
    let old = ca
        .sign_host(
            &csr(&client_key, "/CN=hv02.h.test"),
            &provd::pki::HostIdentity {
                fqdn: "hv02.h.test".into(),
                short: "hv02".into(),
                addresses: vec![me.parse().unwrap()],
                unit: provd::pki::host_unit("h"),
            },
            provd::pki::Role::Client,
            30,
        )
        .unwrap();
    std::fs::write(dir.join("clientcert.pem"), &old.pem).unwrap();
    std::fs::copy(&client_key, dir.join("clientkey.pem")).unwrap();
    let before = libvirtd_log().len();
    let err = p
        .virsh_until_up(&dir)
        .expect_err("libvirtd accepted a client certificate of OU \"site h\"");
    let new = libvirtd_log()[before..].to_string();
    assert!(
        new.contains("tls_allowed_dn_list"),
        "the refusal must be libvirtd's allow list; virsh: {err}\nlibvirtd:\n{new}"
    );
    eprintln!(
        "hv01's libvirtd refused the impostor: {}",
        new.lines()
            .filter(|l| l.contains("error"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(p.hv.sh(&format!("ip addr del {me}/24 dev vh")).status.success());
}

struct Phase<'a> {
    hv: &'a Netns,
    srv: &'a Netns,
    daemon: &'a Daemon,
    w: &'a Path,
    base: &'a str,
    operator: &'a Path,
}

impl Phase<'_> {
    /// Run one of the host's maintenance scripts inside its namespace (see hypervisor.sh)
    /// and wait for libvirtd to come back; returns the script's output.
    fn run_on_host(&self, script: &str) -> String {
        let _ = std::fs::remove_file(self.w.join(format!("{script}.done")));
        std::fs::write(self.w.join(format!("go.{script}")), "").unwrap();
        wait_until(script, Duration::from_secs(60), || {
            self.w.join(format!("{script}.done")).exists().then_some(())
        });
        std::fs::read_to_string(self.w.join(format!("{script}.log"))).unwrap()
    }

    fn virsh(&self, pki: &Path) -> std::process::Output {
        self.srv
            .cmd("virsh")
            .args([
                "-c",
                &format!("qemu+tls://{FQDN}/system?pkipath={}", pki.display()),
                "list",
                "--all",
            ])
            .output()
            .unwrap()
    }

    /// virsh until it connects (libvirtd was just restarted), or its last failure.
    fn virsh_until_up(&self, pki: &Path) -> Result<(), String> {
        let start = std::time::Instant::now();
        loop {
            let out = self.virsh(pki);
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            // Connection refused while libvirtd restarts; anything else is an answer.
            if !err.contains("Connection refused") || start.elapsed() > Duration::from_secs(30) {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn pki_list(&self) -> serde_json::Value {
        let out = self.daemon.cli(&["pki", "list", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The host's own client credentials (as its %post installed them) in a virsh pkipath.
    fn host_client(&self) -> std::path::PathBuf {
        let up = self.w.join("etc-up/pki");
        let dir = self.w.join("host-client");
        std::fs::create_dir_all(&dir).unwrap();
        for (from, to) in [
            ("CA/cacert.pem", "cacert.pem"),
            ("libvirt/clientcert.pem", "clientcert.pem"),
            ("libvirt/private/clientkey.pem", "clientkey.pem"),
        ] {
            std::fs::copy(up.join(from), dir.join(to)).unwrap();
        }
        dir
    }

    fn serial_of(&self, cert: &Path) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-serial", "-in"])
            .arg(cert)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase()
    }
}

/// After install: the CA's records and metric, renewal with the host's current keys, then
/// revocation of its client certificate reaching libvirtd through the host's CRL refresh.
fn revocation_and_renewal(p: &Phase) {
    // The %post installed a CRL and enabled the refresh and renewal timers.
    let crl = std::fs::read_to_string(p.w.join("etc-up/pki/CA/cacrl.pem")).unwrap();
    assert!(crl.contains("BEGIN X509 CRL"), "{crl}");
    let shims = std::fs::read_to_string(p.w.join("shims.log")).unwrap();
    assert!(
        shims.contains("systemctl enable provd-crl.timer provd-renew.timer"),
        "{shims}"
    );

    // The operator's certificate reaches the registry through the inbox, which provd reads
    // every 2 s: wait for it (a loaded machine may not have read it yet).
    let mut list = p.pki_list();
    for _ in 0..50 {
        if list["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["host"] == "alice")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        list = p.pki_list();
    }
    let mut certs: Vec<(&str, &str, &str, &str)> = list["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert!(c["expires_in"].as_i64().unwrap() > 800 * 86400, "{c}");
            (
                c["host"].as_str().unwrap(),
                c["role"].as_str().unwrap(),
                c["state"].as_str().unwrap(),
                c["how"].as_str().unwrap(),
            )
        })
        .collect();
    certs.sort();
    assert_eq!(
        certs,
        [
            // The operator's and the pool's own are in the registry too (revocable).
            ("alice", "operator", "valid", "issue-client"),
            ("hv01", "client", "valid", "migration"),
            ("hv01", "server", "valid", "install"),
            ("hv02", "server", "valid", "install"),
            ("provd", "pool", "valid", "pool"),
        ],
        "{list}"
    );
    let metrics = p
        .srv
        .cmd("curl")
        .args(["-fsS", "http://127.0.0.1:6767/metrics"])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains("provd_certificate_expiry_seconds{host=\"hv01\",role=\"client\""),
        "{metrics}"
    );

    // The host's own migration certificate is accepted by libvirtd (OU "site h migration") ...
    let before = p.serial_of(&p.host_client().join("clientcert.pem"));
    p.virsh_until_up(&p.host_client())
        .expect("the host's own client certificate");

    // ... renewal: same keys, new certificates, no token (the CSR's signature is the proof).
    let renew = p.run_on_host("renew-certs");
    assert!(
        renew.contains("server certificate renewed") && renew.contains("client certificate renewed"),
        "{renew}"
    );
    let renewed = p.host_client();
    let after = p.serial_of(&renewed.join("clientcert.pem"));
    assert_ne!(before, after, "renewal gave a new certificate");
    let shims = std::fs::read_to_string(p.w.join("shims.log")).unwrap();
    assert!(shims.contains("systemctl try-restart virtproxyd.service"), "{shims}");
    p.virsh_until_up(&renewed)
        .expect("libvirtd accepts the renewed client certificate");
    let list = p.pki_list();
    let how: Vec<&str> = list["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["how"].as_str())
        .collect();
    assert_eq!(how.iter().filter(|h| **h == "renewal").count(), 2, "{list}");

    // A key provd never certified for this host cannot renew.
    let foreign = common::openssl_csr(FQDN, "rsa:2048");
    let refused =
        p.hv.cmd("curl")
            .args(["-s", "-w", "\n%{http_code}", "--data-binary"])
            .arg(&foreign)
            .arg(format!("{}/pki/renew/hv01?role=client", p.base))
            .output()
            .unwrap();
    let refused = String::from_utf8_lossy(&refused.stdout).to_string();
    assert!(
        refused.ends_with("403") && refused.contains("renewal needs the current key"),
        "{refused}"
    );

    // The list the host has now (from its %post, before any revocation), kept for a replay.
    std::fs::copy(p.w.join("etc-up/pki/CA/cacrl.pem"), p.w.join("old-crl.pem")).unwrap();

    // Revoke the client certificates; the CRL names them; the host's hourly refresh
    // installs it and restarts libvirtd, which then refuses the revoked certificate.
    let out = p.daemon.cli(&["pki", "revoke", "hv01", "--role", "client"]);
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && said.contains(&after),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crl =
        p.hv.cmd("curl")
            .args(["-fsS", &format!("{}/pki/crl.pem", p.base)])
            .output()
            .unwrap();
    std::fs::write(p.w.join("crl.pem"), &crl.stdout).unwrap();
    let text = Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(p.w.join("crl.pem"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout).to_lowercase();
    assert!(text.contains(&after) && text.contains(&before), "{text}");

    let log_before = std::fs::read_to_string(p.w.join("libvirtd.log"))
        .unwrap_or_default()
        .len();
    let refresh = p.run_on_host("refresh-crl");
    assert!(
        refresh.contains("CRL updated") && !refresh.contains("exit "),
        "{refresh}"
    );
    let err = p
        .virsh_until_up(&renewed)
        .expect_err("libvirtd accepted a revoked client certificate");
    let log = std::fs::read_to_string(p.w.join("libvirtd.log")).unwrap_or_default();
    assert!(
        log[log_before..].contains("revoked"),
        "the refusal must be libvirtd's revocation check; virsh: {err}\nlibvirtd:\n{}",
        &log[log_before..]
    );
    // A machine on the boot network replays the older list (signed by the CA, valid, but
    // without the revocation): the host keeps the newer one, and the certificate stays out.
    let installed = std::fs::read(p.w.join("etc-up/pki/CA/cacrl.pem")).unwrap();
    let replay = p.run_on_host("refresh-crl-old");
    assert!(
        replay.contains("not higher than the installed one's") && replay.contains("exit 1"),
        "{replay}"
    );
    assert_eq!(std::fs::read(p.w.join("etc-up/pki/CA/cacrl.pem")).unwrap(), installed);
    p.virsh_until_up(&renewed)
        .expect_err("libvirtd accepted a revoked client certificate after a replayed CRL");
    // provd's operator certificate is not revoked and still works.
    p.virsh_until_up(p.operator)
        .expect("the operator's certificate after the CRL");
    // A second refresh with nothing new leaves libvirtd alone.
    let again = p.run_on_host("refresh-crl");
    assert!(!again.contains("CRL updated"), "{again}");

    // A host whose server certificate is revoked is not ready any more, and says why.
    let out = p.daemon.cli(&["pki", "revoke", "hv01", "--role", "server"]);
    assert!(out.status.success());
    let h = wait_until("hv01 leaves the pool", Duration::from_secs(30), || {
        let out = p.daemon.cli(&["hypervisors", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let h = list.as_array()?.iter().find(|h| h["host"] == "hv01")?.clone();
        (h["status"] == "installed").then_some(h)
    });
    assert_eq!(h["state"], "tls", "{h}");
    assert!(h["reason"].as_str().unwrap().contains("revoked"), "{h}");
}

/// `[pki] sign = "approve"`: a CSR with a valid token from the host's address waits (202)
/// until `provd pki approve`, then the host's next identical request collects it; a
/// rejected request is refused; weak keys are refused before anything is kept.
#[test]
fn approve_mode_keeps_requests_until_an_operator_decides() {
    require_root_and_tools(&["ip", "curl", "openssl"]);
    let srv = Netns::new("pkas");
    let hv = Netns::new("pkah");
    veth(&srv, "vs", "10.91.0.1/24", &hv, "vh", "10.91.0.11/24");
    let work = Workdir::new();
    let w = work.dir.path().to_path_buf();
    std::fs::create_dir(w.join("assets")).unwrap();
    let site = SiteBuilder::new("h", "10.91.0.1")
        .listen("vs")
        .subnet("10.91.0.0/24", ("10.91.0.100", "10.91.0.200"), &["domain = \"h.test\""])
        .host(MAC, "hv01", &["ip = \"10.91.0.11\"", "profile = \"el9-kvm\""])
        .host(MAC2, "hv02", &["ip = \"10.91.0.12\"", "profile = \"el9-kvm\""]);
    let text = builder::config(&w.join("assets"), &[site.toml()]) + "\n[pki]\nsign = \"approve\"\n";
    let cfg = work.write("site.toml", &text);
    let state = w.join("state");
    provd(&["pki", "init", "--pki-dir", &state.join("pki").display().to_string()]);
    let daemon = Daemon::start(&srv, &cfg, &state, &w.join("provd.log"));
    let base = "http://10.91.0.1:8080";
    let script = hv
        .cmd("curl")
        .args(["-fsS", &format!("{base}/boot/{}.ipxe", MAC.replace(':', "-"))])
        .output()
        .unwrap();
    let script = String::from_utf8(script.stdout).unwrap();
    let token = script[script.find("?token=").unwrap() + 7..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let csr = |newkey: &str, keyout: &str| {
        let out = Command::new("openssl")
            .args(["req", "-new", "-newkey", newkey, "-nodes", "-keyout", keyout])
            .args(["-subj", &format!("/CN={FQDN}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let sign = |role: &str, csr: &str| {
        let url = format!("{base}/pki/sign/hv01?role={role}&token={token}");
        let (body, code) = common::curl_status(&hv, &["--data-binary", csr, &url]);
        (code, body)
    };
    let pending = || -> Vec<serde_json::Value> {
        serde_json::from_slice(&daemon.cli(&["pki", "pending", "--json"]).stdout).unwrap()
    };

    // A weak key is refused at once and nothing waits.
    let (code, body) = sign("server", &csr("rsa:1024", "/dev/null"));
    assert!(code == "400" && body.contains("RSA-1024"), "{code} {body}");
    assert!(pending().is_empty());

    // The server request waits, also when asked again; the operator sees it.
    let key = w.join("server.key");
    let server_csr = {
        let out = Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
            ])
            .arg(&key)
            .args(["-subj", &format!("/CN={FQDN}")])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(sign("server", &server_csr).0, "202");
    assert_eq!(sign("server", &server_csr).0, "202");
    let waiting = pending();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        (
            waiting[0]["host"].as_str(),
            waiting[0]["role"].as_str(),
            waiting[0]["key"].as_str(),
            waiting[0]["from"].as_str()
        ),
        (Some("hv01"), Some("server"), Some("EC P-256"), Some("10.91.0.11"))
    );
    // The same request from another address is refused like every install secret.
    let other = hv.sh("ip addr add 10.91.0.50/24 dev vh");
    assert!(other.status.success());
    let from_other = hv
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--interface",
            "10.91.0.50",
            "--data-binary",
        ])
        .arg(&server_csr)
        .arg(format!("{base}/pki/sign/hv01?role=server&token={token}"))
        .output()
        .unwrap();
    // (An address with no lease here: the boot listener closes the connection at accept,
    // before the request is read; curl says "000".)
    assert_eq!(String::from_utf8_lossy(&from_other.stdout), "000");

    // The key's fingerprint, as the kickstart prints it on the host's console (SHA-256 of
    // the public key), is what `pki pending` shows; approving another key approves nothing.
    let console = run(Command::new("sh").arg("-c").arg(format!(
        "openssl pkey -in {} -pubout -outform DER | sha256sum | cut -d' ' -f1",
        key.display()
    )));
    let console = String::from_utf8(console.stdout).unwrap().trim().to_string();
    assert_eq!(
        waiting[0]["fingerprint"].as_str(),
        Some(console.as_str()),
        "{waiting:?}"
    );
    let text = String::from_utf8(daemon.cli(&["pki", "pending"]).stdout).unwrap();
    assert!(text.contains(&format!("key sha256 {console}")), "{text}");
    let wrong = daemon.cli_output(&["pki", "approve", "hv01", "--fingerprint", &"0".repeat(64)]);
    assert!(
        !wrong.status.success()
            && String::from_utf8_lossy(&wrong.stderr).contains("no waiting certificate request with that key"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert_eq!(pending().len(), 1, "still waiting");
    let out = daemon.cli(&["pki", "approve", "hv01", "--fingerprint", &console]);
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains(&format!("approved server (key sha256 {console})")),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, body) = sign("server", &server_csr);
    assert_eq!(code, "200", "{body}");
    let cert = body.split("# provd: server\n").nth(1).unwrap();
    std::fs::write(w.join("server.pem"), cert).unwrap();
    std::fs::write(w.join("ca.pem"), std::fs::read(state.join("pki/ca-cert.pem")).unwrap()).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(w.join("ca.pem"))
        .arg(w.join("server.pem"))
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    // Collected: the token's server role is spent.
    assert_eq!(sign("server", &server_csr).0, "403");

    // The client (migration) certificate is never for a token, approved or not.
    let client_csr = csr("rsa:2048", "/dev/null");
    let (code, body) = sign("client", &client_csr);
    assert!(
        code == "403" && body.contains("once the pool has verified it"),
        "{code} {body}"
    );

    // hv02's request is rejected: its installer is told so and nothing is signed.
    assert!(hv.sh("ip addr add 10.91.0.12/24 dev vh").status.success());
    let hv02 = |args: &[&str]| {
        let (body, code) = common::curl_status(&hv, &[&["--interface", "10.91.0.12"], args].concat());
        (code, body)
    };
    let (_, script) = hv02(&[&format!("{base}/boot/{}.ipxe", MAC2.replace(':', "-"))]);
    let token2 = script[script.find("?token=").unwrap() + 7..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let csr2 = common::openssl_csr("hv02.h.test", "rsa:2048");
    let url2 = format!("{base}/pki/sign/hv02?role=server&token={token2}");
    assert_eq!(hv02(&["--data-binary", &csr2, &url2]).0, "202");
    let out = daemon.cli(&["pki", "reject", "hv02"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (code, body) = hv02(&["--data-binary", &csr2, &url2]);
    assert!(
        code == "403" && body.contains("rejected by an operator"),
        "{code} {body}"
    );
    let list: serde_json::Value = serde_json::from_slice(&daemon.cli(&["pki", "list", "--json"]).stdout).unwrap();
    let how: Vec<(&str, &str)> = list["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["role"].as_str().unwrap(), c["how"].as_str().unwrap()))
        .filter(|(role, _)| *role != "pool")
        .collect();
    assert_eq!(how, [("server", "approved")], "{list}");
}
