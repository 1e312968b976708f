//! Config validation against fixture files: every good fixture loads; every bad fixture
//! fails with an error naming the file, the line and the key its first line promises
//! (`# expect: LINE | KEY | MESSAGE SUBSTRING`). Also runs the real `provd check` binary.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(kind);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

/// Every config the repository ships: the example set, the lab's and the benchmark's.
fn shipped_configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("site-configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v.push(root.join("lab/lab.toml"));
    v.push(root.join("lab/bench/bench.toml"));
    v
}

#[test]
fn good_fixtures_and_shipped_site_configs_load() {
    let mut files = fixtures("good");
    files.extend(shipped_configs());
    for f in files {
        if let Err(e) = provd::config::load(std::slice::from_ref(&f)) {
            panic!("{} should load:\n{e}", f.display());
        }
    }
}

#[test]
fn each_bad_fixture_names_file_line_and_key() {
    for f in fixtures("bad") {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .unwrap()
            .strip_prefix("# expect:")
            .expect("fixture header");
        let parts: Vec<&str> = expect.split('|').map(str::trim).collect();
        let (line, key, msg) = (parts[0].parse::<usize>().unwrap(), parts[1], parts[2]);
        let errors = match provd::config::load(std::slice::from_ref(&f)) {
            Ok(_) => panic!("{} should fail", f.display()),
            Err(e) => e.0,
        };
        // Line 0 in a fixture means "an error about the whole file set, without a line".
        let want_line = (line > 0).then_some(line);
        let hit = errors
            .iter()
            .any(|e| e.file == f && e.line == want_line && e.key == key && e.message.contains(msg));
        assert!(
            hit,
            "{}: wanted line {line} key {key:?} message ~{msg:?}, got:\n{errors:#?}",
            f.display()
        );
    }
}

#[test]
fn duplicates_across_files_point_at_the_first_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    let site = |name: &str, net: u8| {
        format!(
            "[sites.{name}]\nserver_address = \"10.{net}.0.1\"\nlisten = [{{ interface = \"eth0\", address = \"10.{net}.0.1\" }}]\n\
             [[sites.{name}.subnets]]\nprefix = \"10.{net}.0.0/24\"\n[[sites.{name}.hosts]]\nmac = \"52:54:00:00:00:01\"\nhostname = \"h{net}\"\n"
        )
    };
    std::fs::write(&a, site("one", 1)).unwrap();
    std::fs::write(&b, site("two", 2)).unwrap();
    let errors = provd::config::load(&[dir.path().to_path_buf()]).unwrap_err().0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].file, b);
    assert_eq!(errors[0].line, Some(7));
    assert!(
        errors[0].message.contains(&format!("{}:7", a.display())),
        "{}",
        errors[0].message
    );
}

#[test]
fn provd_check_exit_status_and_output() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let good = fixtures("good");
    let out = Command::new(bin).arg("check").args(&good).output().unwrap();
    // Two good files that each define [daemon]/sites can conflict; check them one at a time.
    for f in &good {
        let out = Command::new(bin).arg("check").arg(f).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok:"));
    }
    drop(out);
    let bad = fixtures("bad")
        .into_iter()
        .find(|f| f.ends_with("dup_mac.toml"))
        .unwrap();
    let out = Command::new(bin).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:12: key `sites.a.hosts[1].mac`", bad.display())),
        "{err}"
    );
}

/// What example.toml tells a new user to run, exactly: the shipped directory is one set of
/// site configs and checks cleanly (the lab's and the benchmark's configs live beside their
/// scripts, each a set of its own, and check cleanly alone).
#[test]
fn provd_check_passes_on_the_shipped_directory_as_the_docs_say() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("site-configs/example.toml")).unwrap();
    assert!(
        example.contains("provd check site-configs/"),
        "the documented command changed"
    );
    let out = Command::new(bin)
        .current_dir(root)
        .args(["check", "site-configs/"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["lab/lab.toml", "lab/bench/bench.toml"] {
        let out = Command::new(bin).current_dir(root).args(["check", f]).output().unwrap();
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn serving_two_sites_on_one_interface_is_refused_with_advice() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("site-configs/example.toml");
    let cfg = provd::config::load(&[f]).unwrap();
    let err = cfg.select_sites(&[]).unwrap_err();
    assert_eq!(
        err,
        provd::config::SiteSelectionError::SharedInterface {
            first: "dc1".into(),
            second: "dc2".into(),
            interface: "eth1".into()
        }
    );
    let err = err.to_string();
    assert!(err.contains("both listen on eth1") && err.contains("--site"), "{err}");
    assert_eq!(cfg.select_sites(&["dc2".into()]).unwrap().len(), 1);
    assert!(
        cfg.select_sites(&["nope".into()])
            .unwrap_err()
            .to_string()
            .contains("known: dc1, dc2")
    );
}

/// The admin API speaks plain HTTP: `provd serve` refuses to put it anywhere but loopback,
/// and says which key to change (before it binds or opens anything).
#[test]
fn serve_refuses_a_non_loopback_api_listen_naming_the_key() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("provd.toml");
    std::fs::write(
        &cfg,
        "[daemon]\napi_listen = \"0.0.0.0:6767\"\n[sites.a]\nserver_address = \"10.0.0.1\"\n\
         listen = [{ interface = \"eth0\", address = \"10.0.0.1\" }]\n[[sites.a.subnets]]\nprefix = \"10.0.0.0/24\"\n",
    )
    .unwrap();
    let state = work.path().join("state");
    for extra in [&[][..], &["--api-listen", "10.0.0.1:6767"][..]] {
        let out = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("[daemon] api_listen") && err.contains("loopback"), "{err}");
        assert!(!state.exists(), "refused before anything was created");
    }
}

/// `provd check` explains the relay default: a site whose subnets only a relay reaches, with
/// no relay trusted, gets a note saying its relayed requests are dropped.
#[test]
fn provd_check_notes_relayed_subnets_without_trusted_relays() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let work = tempfile::tempdir().unwrap();
    let cfg = work.path().join("provd.toml");
    let site = |relays: &str| {
        format!(
            "[sites.a]\nserver_address = \"10.0.0.1\"\nlisten = [{{ interface = \"eth0\", address = \"10.0.0.1\" }}]\n\
             [sites.a.dhcp]\n{relays}\n[[sites.a.subnets]]\nprefix = \"10.0.0.0/24\"\n\
             [[sites.a.subnets]]\nprefix = \"10.0.1.0/24\"\n"
        )
    };
    std::fs::write(&cfg, site("")).unwrap();
    let out = Command::new(bin).arg("check").arg(&cfg).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("note: site a: 10.0.1.0/24 reached only through a relay, and no relay is trusted"),
        "{text}"
    );
    std::fs::write(&cfg, site("relays = [\"10.0.0.254\"]")).unwrap();
    let out = Command::new(bin).arg("check").arg(&cfg).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("note:"));
}

/// The assets directory is served to every machine on the boot network: `provd serve`
/// refuses a state or PKI directory inside it, saying which key to change.
#[test]
fn serve_refuses_a_state_directory_inside_the_assets_directory() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    let cfg = work.path().join("provd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nassets_dir = \"{}\"\ntemplates_dir = \"{}\"\n[sites.a]\nserver_address = \"10.0.0.1\"\n\
             listen = [{{ interface = \"eth0\", address = \"10.0.0.1\" }}]\n[[sites.a.subnets]]\nprefix = \"10.0.0.0/24\"\n",
            assets.display(),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").display()
        ),
    )
    .unwrap();
    for state in [assets.join("state"), assets.join("x/../state2")] {
        let out = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--state-dir")
            .arg(&state)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("inside [daemon] assets_dir"), "{err}");
        assert!(
            !assets.join("state").join("provd.redb").exists(),
            "nothing written under assets"
        );
    }
}

/// A config file inside the assets directory would be served to every machine on the boot
/// network (it names BMC credential files and the whole site layout): `provd check` refuses
/// it, naming the file.
#[test]
fn check_refuses_a_config_file_inside_the_assets_directory() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    std::fs::create_dir(&assets).unwrap();
    let text = format!(
        "[daemon]\nassets_dir = \"{}\"\nstate_dir = \"{}\"\n[sites.a]\nserver_address = \"10.0.0.1\"\n\
         listen = [{{ interface = \"eth0\", address = \"10.0.0.1\" }}]\n[[sites.a.subnets]]\nprefix = \"10.0.0.0/24\"\n",
        assets.display(),
        work.path().join("state").display()
    );
    let inside = assets.join("provd.toml");
    let outside = work.path().join("provd.toml");
    std::fs::write(&inside, &text).unwrap();
    std::fs::write(&outside, &text).unwrap();
    let out = Command::new(bin).arg("check").arg(&inside).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds the config file") && err.contains(&inside.display().to_string()),
        "{err}"
    );
    let out = Command::new(bin).arg("check").arg(&outside).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `provd network PROFILE` (issue 35) renders a profile's network offline: the kickstart
/// lines and the %post with the VLANs' keyfiles, the networkd units, both as JSON; a profile
/// without a network, or an unknown one, is a clear error.
#[test]
fn network_renders_a_profiles_model_for_both_installers() {
    let bin = env!("CARGO_BIN_EXE_provd");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/good");
    let net = dir.join("network.toml");
    let provd = |args: &[&str], cfg: &std::path::Path| {
        Command::new(bin)
            .arg("network")
            .args(args)
            .arg("-c")
            .arg(cfg)
            .output()
            .unwrap()
    };
    let out = provd(&["kvm"], &net);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("network --device=bond0 --bondslaves=ens1f0,ens1f1 --bondopts=mode=802.3ad,"),
        "{text}"
    );
    assert!(
        text.contains("/etc/NetworkManager/system-connections/bond0.20.nmconnection")
            && text.trim_end().ends_with("%end"),
        "{text}"
    );
    let out = provd(&["kvm", "--format", "networkd"], &net);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# /etc/systemd/network/10-bond0.netdev\n[NetDev]\nName=bond0\nKind=bond"),
        "{text}"
    );
    let out = provd(&["kvm", "--json"], &net);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kickstart"]["lines"].as_array().map(Vec::len), Some(2), "{v}");
    assert!(
        v["networkd"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["file"] == "40-br-mig.network"),
        "{v}"
    );
    let out = provd(&["el9-kvm"], &dir.join("example.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [profiles.el9-kvm.network]"));
    let out = provd(&["nosuch"], &net);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile \"nosuch\" (known: kvm)"));
}
