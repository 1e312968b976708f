//! provd's Redfish driver against a Redfish implementation nobody here wrote: sushy-tools'
//! emulator (the one OpenStack Ironic is tested with), over HTTPS with a self-signed
//! certificate and HTTP Basic credentials (bcrypt htpasswd), in front of libvirt's
//! `test:///default` hypervisor. Checks: power status/off/cycle/pxe-once through
//! `provd power`, each confirmed by a Redfish GET made with curl (not provd); the pinned
//! certificate is accepted and any other refused; an unpinned self-signed certificate is
//! refused; `insecure = true` works and says so; wrong credentials are refused; the
//! credentials file must be 0600; no password in the API or the log. Needs root.

mod common;

use common::{Daemon, Netns, Workdir, require_root_and_tools};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const SUSHY: &str = "/opt/provd-test/sushy/bin";
const PASSWORD: &str = "redfish-pw-4711";

struct Emulator(Child);
impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The system as curl sees it (Basic auth, certificate not checked: this is the witness,
/// not the thing under test).
fn redfish_get(ns: &Netns, path: &str) -> serde_json::Value {
    let out = sh_ok(
        ns.cmd("curl")
            .args(["-sk", "-u", &format!("admin:{PASSWORD}")])
            .arg(format!("https://127.0.0.1:8443{path}")),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
}

#[test]
fn provd_drives_a_redfish_bmc_with_a_pinned_certificate() {
    require_root_and_tools(&["ip", "openssl", "curl"]);
    assert!(
        std::path::Path::new(&format!("{SUSHY}/sushy-emulator")).exists(),
        "sushy-tools is not installed in {SUSHY}: run lab/deps.sh"
    );
    let (srv, _cli) = common::ns_pair("rf", 92, 24);
    let work = Workdir::new();
    let (cert, key) = (work.path("bmc.crt"), work.path("bmc.key"));
    let fingerprint = provd::lab::redfish::self_signed_certificate(&cert, &key).unwrap();
    let htpasswd = provd::lab::redfish::htpasswd_line("admin", PASSWORD).unwrap();
    let auth = work.write("htpasswd", &htpasswd);
    let conf = work.write(
        "sushy.conf",
        &format!("SUSHY_EMULATOR_AUTH_FILE = '{}'\n", auth.display()),
    );
    let emulator = Emulator(
        srv.cmd(&format!("{SUSHY}/sushy-emulator"))
            .args([
                "-i",
                "127.0.0.1",
                "-p",
                "8443",
                "--libvirt-uri",
                "test:///default",
                "--config",
            ])
            .arg(&conf)
            .arg("--ssl-certificate")
            .arg(&cert)
            .arg("--ssl-key")
            .arg(&key)
            .stdout(std::fs::File::create(work.path("sushy.log")).unwrap())
            .stderr(std::fs::File::create(work.path("sushy.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while !srv
        .cmd("curl")
        .args(["-sk", "-o", "/dev/null", "https://127.0.0.1:8443/redfish/v1/"])
        .status()
        .unwrap()
        .success()
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "sushy-emulator did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = &emulator;

    let secrets = work.write(
        "bmc-secrets.toml",
        &format!(
            "[credentials.rack]\nusername = \"admin\"\npassword = \"{PASSWORD}\"\n\n\
             [credentials.wrong]\nusername = \"admin\"\npassword = \"not-it\"\n"
        ),
    );
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    let assets = work.path("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let bmc = |name: &str, mac: &str, extra: &str, creds: &str| {
        format!(
            "[[sites.rf.hosts]]\nmac = \"{mac}\"\nhostname = \"{name}\"\ntags = [\"rack9\"]\n\
             bmc = {{ driver = \"redfish\", address = \"https://127.0.0.1:8443\", credentials = \"{creds}\"{extra} }}\n"
        )
    };
    let wrong_pin = "00:".repeat(31) + "00";
    let config = format!(
        "{}bmc_secrets = \"{}\"\n\n[sites.rf]\nserver_address = \"10.92.0.1\"\nlisten = [{{ interface = \"vs\", address = \"10.92.0.1\" }}]\n\n\
         [[sites.rf.subnets]]\nprefix = \"10.92.0.0/24\"\npools = [{{ start = \"10.92.0.100\", end = \"10.92.0.200\" }}]\n\n{}{}{}{}{}",
        common::daemon_toml(&assets),
        secrets.display(),
        bmc(
            "rf1",
            "52:54:00:00:92:01",
            &format!(", fingerprint = \"{fingerprint}\""),
            "rack"
        ),
        bmc(
            "rf2",
            "52:54:00:00:92:02",
            &format!(", fingerprint = \"{wrong_pin}\""),
            "rack"
        ),
        bmc("rf3", "52:54:00:00:92:03", "", "rack"),
        bmc("rf4", "52:54:00:00:92:04", ", insecure = true", "rack"),
        bmc(
            "rf5",
            "52:54:00:00:92:05",
            &format!(", fingerprint = \"{fingerprint}\""),
            "wrong"
        ),
    );
    let cfg = work.write("site.toml", &config);
    let daemon = Daemon::start(&srv, &cfg, &work.path("state"), &work.path("provd.log"));
    let power = |args: &[&str]| -> (bool, Vec<serde_json::Value>) {
        let mut a = vec!["power"];
        a.extend_from_slice(args);
        a.push("--json");
        let out = daemon.cli_output(&a);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{a:?}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), rows)
    };
    let system = redfish_get(&srv, "/redfish/v1/Systems")["Members"][0]["@odata.id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(redfish_get(&srv, &system)["PowerState"], "On");

    // Every host of the tag, in one command: only the pinned and the insecure one succeed.
    let (ok, rows) = power(&["status", "--tag", "rack9"]);
    assert!(!ok, "some hosts must fail: {rows:#?}");
    let row = |h: &str| rows.iter().find(|r| r["host"] == h).unwrap().clone();
    assert_eq!(
        (row("rf1")["ok"].as_bool(), row("rf1")["state"].as_str()),
        (Some(true), Some("on")),
        "{rows:#?}"
    );
    // Both are told apart from an unreachable BMC by the error's type, not by its words.
    let rf2 = row("rf2")["error"].as_str().unwrap().to_string();
    assert!(
        rf2.starts_with("BMC certificate not accepted") && rf2.contains("is not the pinned one"),
        "{rows:#?}"
    );
    assert!(
        row("rf3")["error"]
            .as_str()
            .unwrap()
            .starts_with("BMC certificate not accepted"),
        "{rows:#?}"
    );
    assert_eq!(row("rf4")["ok"], true);
    assert!(row("rf4")["warnings"].to_string().contains("not checked"), "{rows:#?}");
    assert!(
        row("rf5")["error"].as_str().unwrap().contains("credentials refused"),
        "{rows:#?}"
    );

    // Off, then cycle (which powers on a stopped system), then a one-time PXE boot: each
    // confirmed by the emulator's own answer.
    let (ok, rows) = power(&["off", "rf1"]);
    assert!(ok && rows[0]["state"] == "off", "{rows:#?}");
    assert_eq!(redfish_get(&srv, &system)["PowerState"], "Off");
    let (ok, rows) = power(&["cycle", "rf1"]);
    assert!(ok && rows[0]["state"] == "on", "{rows:#?}");
    assert_eq!(redfish_get(&srv, &system)["PowerState"], "On");
    // sushy's libvirt backend stores a boot override as Continuous whatever it is asked:
    // provd reads back what the BMC recorded and says so rather than claiming "once".
    let (ok, rows) = power(&["pxe-once", "rf1"]);
    assert!(ok, "{rows:#?}");
    let boot = &redfish_get(&srv, &system)["Boot"];
    assert_eq!(boot["BootSourceOverrideTarget"], "Pxe", "{boot:#}");
    assert_eq!(boot["BootSourceOverrideEnabled"], "Continuous", "{boot:#}");
    assert!(rows[0]["warnings"].to_string().contains("Continuous"), "{rows:#?}");

    // History and journal; no password anywhere provd writes or answers.
    let shown = daemon.cli(&["hosts", "show", "rf1", "--json"]);
    let history = String::from_utf8_lossy(&shown.stdout).to_string();
    assert!(history.contains("power off via redfish: ok, power off"), "{history}");
    assert!(history.contains("power pxe-once via redfish: ok"), "{history}");
    let listed = daemon.cli_output(&["power", "status", "--all", "--json"]);
    for text in [
        String::from_utf8_lossy(&listed.stdout).to_string(),
        daemon.log_text(),
        history,
    ] {
        assert!(
            !text.contains(PASSWORD) && !text.contains("not-it"),
            "a password leaked:\n{text}"
        );
    }

    // A credentials file others can read is refused, saying how to fix it.
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, rows) = power(&["status", "rf1"]);
    assert!(
        !ok && rows[0]["error"].as_str().unwrap().contains("chmod 600"),
        "{rows:#?}"
    );
}
