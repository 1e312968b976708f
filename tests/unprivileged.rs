//! provd as the systemd unit runs it: `systemd-analyze verify` accepts
//! `contrib/systemd/provd.service`, and provd started as a non-root user with exactly the
//! unit's capabilities (read from the unit, applied with setpriv: ambient, inheritable and
//! bounding set, no_new_privs) still serves DHCP (busybox udhcpc gets a lease), TFTP (curl)
//! and HTTP (curl), and keeps its state directory 0700 and its store 0600; the ipmitool it
//! runs for a BMC inherits none of its capabilities. Needs root, ip, setpriv,
//! systemd-analyze, busybox, curl.

mod common;

use common::builder::{self, SiteBuilder};
use common::{Netns, Workdir, provd_bin, repo, require_root_and_tools, veth, wait_until};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// An unprivileged uid/gid with no passwd entry (nothing on the machine is changed).
const UID: u32 = 64_999;

fn unit_capabilities(unit: &str) -> Vec<String> {
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities");
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    assert_eq!(line, bounding, "ambient and bounding sets differ");
    line.split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect()
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_systemd_unit_verifies_and_its_capabilities_are_enough_to_serve() {
    require_root_and_tools(&["ip", "setpriv", "systemd-analyze", "busybox", "curl"]);
    let unit = std::fs::read_to_string(repo("contrib/systemd/provd.service")).unwrap();
    assert!(unit.contains("\nUser=provd\n") && unit.contains("\nNoNewPrivileges=yes\n"));
    let work = Workdir::new();
    let w = work.dir.path().to_path_buf();
    // Everything the unprivileged provd reads must be readable by it: its own copies.
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = w.join("provd");
    std::fs::copy(provd_bin(), &bin).unwrap();

    // systemd-analyze verify: exit 0 and not one complaint (unknown keys only warn).
    let verified = w.join("provd.service");
    std::fs::write(
        &verified,
        unit.replace("/usr/local/bin/provd", &bin.display().to_string()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&verified)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !said.contains("provd.service"),
        "systemd-analyze verify: {said}"
    );

    let caps = unit_capabilities(&unit);
    assert_eq!(caps, ["net_bind_service", "net_raw", "net_admin"]);
    let srv = Netns::new("uprs");
    let cli = Netns::new("uprc");
    veth(&srv, "us", "10.93.0.1/24", &cli, "uc", "");
    let assets = w.join("assets");
    std::fs::create_dir(&assets).unwrap();
    std::fs::write(assets.join("hello.bin"), vec![7u8; 70_000]).unwrap();
    Command::new("cp")
        .arg("-r")
        .arg(repo("templates"))
        .arg(w.join("templates"))
        .status()
        .unwrap();
    let site = SiteBuilder::new("u", "10.93.0.1")
        .listen("us")
        .subnet("10.93.0.0/24", ("10.93.0.100", "10.93.0.200"), &[])
        .host(
            "52:54:00:93:00:01",
            "u1",
            &["bmc = { driver = \"ipmi\", address = \"127.0.0.1\", credentials = \"u\" }"],
        );
    // An `ipmitool` first on provd's PATH that records the capabilities it was started with.
    let out = w.join("out");
    std::fs::create_dir(&out).unwrap();
    let fake = w.join("bin");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(
        fake.join("ipmitool"),
        format!(
            "#!/bin/sh\ngrep -E '^Cap(Eff|Amb)' /proc/self/status > {}/ipmitool-caps\necho 'Chassis Power is on'\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(fake.join("ipmitool"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secrets = w.join("bmc.toml");
    std::fs::write(&secrets, "[credentials.u]\nusername = \"admin\"\npassword = \"pw\"\n").unwrap();
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
    for p in [&out, &secrets] {
        Command::new("chown")
            .arg(format!("{UID}:{UID}"))
            .arg(p)
            .status()
            .unwrap();
    }
    let text = builder::config(&assets, &[site.toml()])
        .replace(
            &repo("templates").display().to_string(),
            &w.join("templates").display().to_string(),
        )
        .replacen(
            "[daemon]\n",
            &format!("[daemon]\nbmc_secrets = \"{}\"\n", secrets.display()),
            1,
        );
    // As packaged: the config directory is root's (the service may not write it), adopted
    // hosts go to `hosts_dir` under the state directory.
    let state = w.join("state");
    let text = text.replacen(
        "[daemon]\n",
        &format!("[daemon]\nhosts_dir = \"{}\"\n", state.join("hosts").display()),
        1,
    );
    let etc = w.join("etc");
    std::fs::create_dir(&etc).unwrap();
    std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = etc.join("site.toml");
    std::fs::write(&cfg, &text).unwrap();
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::create_dir(&state).unwrap();
    Command::new("chown")
        .arg(format!("{UID}:{UID}"))
        .arg(&state)
        .status()
        .unwrap();

    let set = caps.iter().map(|c| format!("+{c}")).collect::<Vec<_>>().join(",");
    let log = std::fs::File::create(w.join("provd.log")).unwrap();
    let _provd = Kill(
        srv.cmd("setpriv")
            .arg(format!("--reuid={UID}"))
            .arg(format!("--regid={UID}"))
            .arg("--clear-groups")
            .arg(format!("--inh-caps=-all,{set}"))
            .arg(format!("--ambient-caps=-all,{set}"))
            .arg(format!("--bounding-set=-all,{set}"))
            .arg("--no-new-privs")
            .arg(&bin)
            .args(["serve", "--config"])
            .arg(&etc)
            .arg("--state-dir")
            .arg(&state)
            .env("PROVD_LOG", "info")
            .env(
                "PATH",
                format!("{}:{}", fake.display(), std::env::var("PATH").unwrap_or_default()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log_text = || std::fs::read_to_string(w.join("provd.log")).unwrap_or_default();
    wait_until("provd serving as a non-root user", Duration::from_secs(20), || {
        let l = log_text();
        assert!(
            !l.contains("Error") && !l.contains("ermission denied"),
            "provd failed:\n{l}"
        );
        l.contains("DHCP listening").then_some(())
    });
    // Really unprivileged: its uid and capability sets, from /proc.
    let pid = String::from_utf8(
        Command::new("pgrep")
            .args(["-f", &format!("{} serve", bin.display())])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
    assert!(
        status.contains(&format!("Uid:\t{UID}\t{UID}\t{UID}\t{UID}")),
        "{status}"
    );
    assert!(status.contains("CapEff:\t0000000000003400"), "{status}");

    // DHCP: busybox udhcpc gets a lease (provd unicasts to an address the client does not
    // have yet: the ARP entry needs CAP_NET_ADMIN).
    let got = cli
        .cmd("busybox")
        .args([
            "udhcpc",
            "-i",
            "uc",
            "-n",
            "-q",
            "-f",
            "-t",
            "5",
            "-T",
            "2",
            "-s",
            "/bin/true",
            // A network-booting machine (option 60): provd records it as discovered.
            "-V",
            "PXEClient:Arch:00000:UNDI:002001",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&got.stdout).to_string() + &String::from_utf8_lossy(&got.stderr);
    assert!(
        got.status.success() && said.contains("lease of 10.93.0."),
        "udhcpc: {said}\n{}",
        log_text()
    );
    let ip = said
        .split("lease of ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap()
        .to_string();
    // The reply went by unicast to the new address through the ARP entry provd added (with
    // CAP_NET_ADMIN; without it provd falls back to broadcast): the entry is there before
    // the client has sent anything from that address.
    let neigh = srv.sh(&format!("ip neigh show to {ip} dev us"));
    let mac = String::from_utf8_lossy(&cli.sh("cat /sys/class/net/uc/address").stdout)
        .trim()
        .to_string();
    assert!(
        String::from_utf8_lossy(&neigh.stdout).contains(&mac),
        "no ARP entry for {ip}: {}",
        String::from_utf8_lossy(&neigh.stdout)
    );
    cli.sh(&format!("ip addr add {ip}/24 dev uc"));

    // TFTP and HTTP from the leased address.
    let tftp = cli
        .cmd("curl")
        .args(["-sS", "-o"])
        .arg(w.join("tftp.bin"))
        .arg("tftp://10.93.0.1/hello.bin")
        .output()
        .unwrap();
    assert!(tftp.status.success(), "{}", String::from_utf8_lossy(&tftp.stderr));
    assert_eq!(std::fs::read(w.join("tftp.bin")).unwrap(), vec![7u8; 70_000]);
    let http = cli
        .cmd("curl")
        .args(["-fsS", "-o"])
        .arg(w.join("http.bin"))
        .arg("http://10.93.0.1:8080/assets/hello.bin")
        .output()
        .unwrap();
    assert!(http.status.success(), "{}", String::from_utf8_lossy(&http.stderr));
    assert_eq!(std::fs::read(w.join("http.bin")).unwrap().len(), 70_000);

    // The CLI against this daemon (as root, in its namespace); it must succeed.
    let cli_ok = |args: &[&str]| {
        let out = srv
            .cmd(provd_bin())
            .args(args)
            .arg("--config")
            .arg(&etc)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "provd {args:?}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            log_text()
        );
    };
    // A BMC action: provd runs ipmitool, which gets none of provd's ambient capabilities.
    cli_ok(&["power", "status", "u1"]);
    let caps = std::fs::read_to_string(out.join("ipmitool-caps")).expect("provd ran ipmitool");
    assert!(
        caps.contains("CapEff:\t0000000000000000") && caps.contains("CapAmb:\t0000000000000000"),
        "ipmitool inherited capabilities: {caps}"
    );

    // Adoption under the unit's rules: the udhcpc client (discovered) becomes host u2. The
    // daemon cannot write its config directory; the entry lands in hosts_dir, and what
    // `provd check` reads of the config directory includes it.
    cli_ok(&["hosts", "adopt", &mac, "--hostname", "u2"]);
    let adopted = state.join("hosts/hosts-u.toml");
    let entry = std::fs::read_to_string(&adopted).expect("the entry in hosts_dir");
    assert!(entry.contains("hostname = \"u2\""), "{entry}");
    assert!(!etc.join("hosts-u.toml").exists());
    let check = Command::new(provd_bin()).arg("check").arg(&etc).output().unwrap();
    let said = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(
        check.status.success() && said.contains("2 file(s)") && said.contains("2 host(s)"),
        "{said}"
    );

    // Its state: owned by the service user, private.
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("provd.redb")), 0o600);
    assert_eq!(mode(&state.join("api-token")), 0o600);
}

/// Every path the packaged daemon writes (the packaged config's state directory, PKI
/// directory and hosts_dir) lies where the packaged unit lets it write under
/// ProtectSystem=strict: its StateDirectory (or a ReadWritePaths entry). This machine has
/// no systemd to run the unit itself, so the unit and the config are read and compared.
#[test]
fn the_packaged_unit_lets_provd_write_every_path_it_writes() {
    let unit = std::fs::read_to_string(repo("contrib/systemd/provd.service")).unwrap();
    assert!(
        unit.contains("\nProtectSystem=strict\n"),
        "the test assumes a strict unit"
    );
    let mut writable: Vec<std::path::PathBuf> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("StateDirectory="))
        .flat_map(|v| {
            v.split_whitespace()
                .map(|d| std::path::Path::new("/var/lib").join(d))
                .collect::<Vec<_>>()
        })
        .collect();
    writable.extend(
        unit.lines()
            .filter_map(|l| l.strip_prefix("ReadWritePaths="))
            .flat_map(|v| v.split_whitespace().map(std::path::PathBuf::from).collect::<Vec<_>>()),
    );
    assert!(!writable.is_empty(), "{unit}");
    let cfg = provd::config::load(&[repo("contrib/deb/provd.toml")]).expect("the packaged config is valid");
    let d = &cfg.daemon;
    let hosts_dir = d
        .hosts_dir
        .clone()
        .expect("the packaged config sets hosts_dir: /etc/provd is not the service's to write");
    for (what, path) in [
        ("state_dir", d.state_dir.clone()),
        ("pki_dir", d.pki_dir(&d.state_dir)),
        ("hosts_dir", hosts_dir),
    ] {
        assert!(
            writable.iter().any(|w| path.starts_with(w)),
            "{what} {} is not writable under the unit ({writable:?})",
            path.display()
        );
    }
}
