//! The admin API over HTTPS (`[daemon] api_tls`), black-box with real clients: curl and the
//! provd CLI from another namespace reach the API on a non-loopback address; an admin client
//! certificate from provd's CA or the bearer token is a credential; a hypervisor-style
//! client certificate from the same CA is not; a certificate from another CA does not get
//! through the handshake; `/metrics` stays open. Needs root, ip, curl, openssl.

mod common;

use common::builder::{self, SiteBuilder};
use common::{Daemon, Netns, Workdir, provd_bin, require_root_and_tools, veth, wait_until};
use std::path::Path;
use std::time::Duration;

use common::provd_ok as provd;

#[test]
fn https_admin_api_accepts_admin_certificates_and_the_token_only() {
    require_root_and_tools(&["ip", "curl", "openssl"]);
    let srv = Netns::new("tlss");
    let op = Netns::new("tlso");
    veth(&srv, "ts", "10.92.0.1/24", &op, "to", "10.92.0.2/24");
    let work = Workdir::new();
    let w = work.dir.path().to_path_buf();
    std::fs::create_dir(w.join("assets")).unwrap();
    let site =
        SiteBuilder::new("t", "10.92.0.1")
            .listen("ts")
            .subnet("10.92.0.0/24", ("10.92.0.100", "10.92.0.200"), &[]);
    let plain = builder::config(&w.join("assets"), &[site.toml()]);
    let text = plain.replace(
        "api_listen = \"127.0.0.1:6767\"",
        "api_listen = \"10.92.0.1:6767\"\napi_tls = true\napi_names = [\"provd.t.test\"]",
    );
    assert_ne!(text, plain);
    let cfg = work.write("site.toml", &text);
    let state = w.join("state");
    let pki = state.join("pki").display().to_string();

    // Without a CA, api_tls cannot start, and says why.
    let out = srv
        .cmd(provd_bin())
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--state-dir")
        .arg(&state)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("api_tls") && err.contains("provd pki init"),
        "{err}"
    );

    provd(&["pki", "init", "--pki-dir", &pki]);
    let dir = |n: &str| w.join(n).display().to_string();
    provd(&[
        "pki",
        "issue-client",
        "alice",
        "--admin",
        "--out",
        &dir("admin"),
        "--pki-dir",
        &pki,
    ]);
    provd(&[
        "pki",
        "issue-client",
        "provd",
        "--out",
        &dir("libvirt-client"),
        "--pki-dir",
        &pki,
    ]);
    provd(&["pki", "init", "--pki-dir", &dir("other-ca")]);
    provd(&[
        "pki",
        "issue-client",
        "mallory",
        "--admin",
        "--out",
        &dir("intruder"),
        "--pki-dir",
        &dir("other-ca"),
    ]);
    let _daemon = Daemon::start(&srv, &cfg, &state, &w.join("provd.log"));

    // curl from the operator's namespace, trusting provd's CA: (HTTP status or curl's exit).
    let curl = |cert: Option<&Path>, extra: &[&str], url: &str| -> String {
        let mut c = op.cmd("curl");
        c.args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(w.join("admin/cacert.pem"))
            .args(extra);
        if let Some(d) = cert {
            c.arg("--cert")
                .arg(d.join("clientcert.pem"))
                .arg("--key")
                .arg(d.join("clientkey.pem"));
        }
        let out = c.arg(url).output().unwrap();
        if out.status.success() {
            String::from_utf8_lossy(&out.stdout).to_string()
        } else {
            format!("curl exit {:?}", out.status.code())
        }
    };
    let api = "https://10.92.0.1:6767";
    assert_eq!(curl(None, &[], &format!("{api}/api/hosts")), "401");
    assert_eq!(curl(Some(&w.join("admin")), &[], &format!("{api}/api/hosts")), "200");
    assert_eq!(
        curl(Some(&w.join("libvirt-client")), &[], &format!("{api}/api/hosts")),
        "401",
        "a client certificate without the admin unit is not a credential"
    );
    let intruder = curl(Some(&w.join("intruder")), &[], &format!("{api}/api/hosts"));
    assert!(
        intruder.starts_with("curl exit"),
        "another CA's certificate got an answer: {intruder}"
    );
    let token = std::fs::read_to_string(state.join("api-token")).unwrap();
    let bearer = format!("authorization: Bearer {}", token.trim());
    assert_eq!(curl(None, &["-H", &bearer], &format!("{api}/api/hosts")), "200");
    assert_eq!(curl(None, &[], &format!("{api}/metrics")), "200");
    // The web console over HTTPS: its session cookie is Secure (never sent in the clear).
    let login = op
        .cmd("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--cacert"])
        .arg(w.join("admin/cacert.pem"))
        .args(["--data-urlencode", &format!("token={}", token.trim())])
        .arg(format!("{api}/console/login"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&login.stdout).to_lowercase();
    let cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie: provd_console="))
        .unwrap_or_else(|| panic!("no console cookie: {head}"));
    assert!(
        cookie.contains("; secure") && cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    // The certificate names the configured DNS name too.
    assert_eq!(
        curl(
            Some(&w.join("admin")),
            &["--resolve", "provd.t.test:6767:10.92.0.1"],
            "https://provd.t.test:6767/api/sites"
        ),
        "200"
    );
    // Plain HTTP gets nothing from a TLS listener.
    let plain_http = op
        .cmd("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://10.92.0.1:6767/metrics",
        ])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&plain_http.stdout), "200");

    // The CLI from the operator's namespace: HTTPS chosen from the config, the admin
    // certificate from --cert-dir, no token file.
    let cli = |cert_dir: &str| {
        op.cmd(provd_bin())
            .args(["hosts", "list", "--json", "--config"])
            .arg(&cfg)
            .args(["--state-dir", "/nonexistent", "--cert-dir", cert_dir])
            .output()
            .unwrap()
    };
    let ok = cli(&dir("admin"));
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap();
    let refused = cli(&dir("libvirt-client"));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("admin API token"), "{err}");

    // Every certificate provd made is in its registry: the two `issue-client` ones (read
    // from the PKI directory's inbox), the listener's own, the pool's identity.
    let as_alice = |args: &[&str]| {
        op.cmd(provd_bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--state-dir", "/nonexistent", "--cert-dir", &dir("admin")])
            .output()
            .unwrap()
    };
    let list = wait_until("the registry lists alice", Duration::from_secs(10), || {
        let out = as_alice(&["pki", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        list["certificates"]
            .as_array()?
            .iter()
            .any(|c| c["host"] == "alice")
            .then_some(list)
    });
    let mut roles: Vec<(String, String)> = list["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["host"].as_str().unwrap().to_string(),
                c["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            ("admin API 10.92.0.1:6767".to_string(), "api-server".to_string()),
            ("alice".into(), "admin".into()),
            ("provd".into(), "operator".into()),
            ("provd".into(), "pool".into()),
        ],
        "{list:#}"
    );

    // alice's console stream, open over her certificate while she is revoked (issue 34:
    // the stream asks again before every snapshot).
    let stream_log = w.join("stream.txt");
    let mut stream = common::ChildGuard::spawn(
        op.cmd("curl")
            .args(["-sSN", "--max-time", "60", "--cacert"])
            .arg(w.join("admin/cacert.pem"))
            .arg("--cert")
            .arg(w.join("admin/clientcert.pem"))
            .arg("--key")
            .arg(w.join("admin/clientkey.pem"))
            .arg(format!("{api}/api/console/stream"))
            .stdout(std::fs::File::create(&stream_log).unwrap()),
    );
    wait_until("alice's stream sends a snapshot", Duration::from_secs(20), || {
        std::fs::read_to_string(&stream_log)
            .ok()?
            .contains("event: snapshot")
            .then_some(())
    });

    // Revoked: alice's certificate opens nothing any more, at once; the token still does.
    let out = as_alice(&["pki", "revoke", "alice"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("alice: revoked admin certificate"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(curl(Some(&w.join("admin")), &[], &format!("{api}/api/hosts")), "401");
    assert_eq!(curl(None, &["-H", &bearer], &format!("{api}/api/hosts")), "200");
    // ... and the stream she had open ends, saying why, within one interval.
    let ended = wait_until("alice's open stream ends", Duration::from_secs(15), || {
        stream.exited().then(|| std::fs::read_to_string(&stream_log).unwrap())
    });
    assert!(ended.contains("event: ended") && ended.contains("revoked"), "{ended}");
    let stats = curl(None, &["-H", &bearer], &format!("{api}/api/stats"));
    assert_eq!(stats, "200");
}
