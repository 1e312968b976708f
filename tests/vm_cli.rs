//! `provd vm` through the real binary on libvirt's test driver (`test:///default`, an
//! in-memory hypervisor holding one running domain named "test"; every process gets a fresh
//! copy, so each command is checked on its own).

mod common;

use std::process::Command;

fn vm(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::provd_bin())
        .arg("vm")
        .args(args)
        .args(["--connect", "test:///default"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn vm_commands_report_state_and_refuse_with_clear_errors() {
    let (ok, out, _) = vm(&["list", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (list[0]["name"].as_str(), list[0]["state"].as_str()),
        (Some("test"), Some("running"))
    );
    let (ok, out, _) = vm(&["host-info", "--json"]);
    assert!(
        ok && serde_json::from_str::<serde_json::Value>(&out).unwrap()["cpus"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (ok, out, _) = vm(&["info", "test", "--xml"]);
    assert!(ok && out.contains("<domain type='test'"), "{out}");
    assert!(vm(&["destroy", "test"]).0);
    let (ok, _, err) = vm(&["start", "test"]);
    assert!(
        !ok && err.contains("\"test\" is running; start needs it shut off"),
        "{err}"
    );
    let (ok, _, err) = vm(&["undefine", "test"]);
    assert!(!ok && err.contains("undefine needs it shut off"), "{err}");
    let (ok, _, err) = vm(&["info", "nosuch"]);
    assert!(
        !ok && err.contains("no domain named \"nosuch\" on test:///default"),
        "{err}"
    );
    let out = Command::new(common::provd_bin())
        .args(["vm", "list", "--connect", "nosuchdriver:///"])
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot connect to nosuchdriver:///")
    );
}

#[test]
fn vm_init_uses_the_configs_profiles_and_names_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vm.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sites.a]\nserver_address = \"10.0.0.1\"\nlisten = [{{ interface = \"eth0\", address = \"10.0.0.1\" }}]\n\
             [vm.disk_profiles.small]\ndisks = [{{ name = \"system\", size_gib = 1, dir = \"{d}\" }}, {{ name = \"swap\", size_gib = 1, format = \"raw\", dir = \"{d}\" }}]\n\
             [vm.nic_profiles.lan]\nnics = [{{ name = \"eth0\", bridge = \"br0\" }}]\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let cfg = cfg.display().to_string();
    // The built-in NIC profile asks for the tenant network; a --connect URI's network is not
    // provd's to know, so it refuses rather than guess a bridge (the boot bridge, say).
    let (ok, _, err) = vm(&["init", "web", "1", "256", "--disk-profile", "small", "--config", &cfg]);
    assert!(
        !ok && err.contains("NIC profile \"default\": NIC eth0 asks for the tenant network")
            && err.contains("name a bridge in the NIC profile"),
        "{err}"
    );
    let (ok, out, err) = vm(&[
        "init",
        "web",
        "1",
        "256",
        "--disk-profile",
        "small",
        "--nic-profile",
        "lan",
        "--start",
        "--vnc",
        "--config",
        &cfg,
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("web: running (1 vCPU, 256 MiB") && out.contains("VNC has no authentication"),
        "{out}"
    );
    assert!(dir.path().join("web_system.qcow2").exists() && dir.path().join("web_swap.img").exists());
    let (ok, _, err) = vm(&["init", "db", "1", "256", "--disk-profile", "huge", "--config", &cfg]);
    assert!(
        !ok && err.contains("no disk profile \"huge\" (known: default, small)"),
        "{err}"
    );
}

#[test]
fn vm_purge_and_console_refuse_clearly_without_libvirt_noise() {
    let (ok, _, err) = vm(&["purge", "test"]);
    assert!(
        !ok && err.contains("purge (without --force) needs it shut off"),
        "{err}"
    );
    let (ok, out, err) = vm(&["purge", "test", "--force"]);
    assert!(ok && out.contains("test: undefined"), "{err}");
    let (ok, _, err) = vm(&["console", "test"]);
    assert!(!ok && err.contains("no graphics device"), "{err}");
    let (_, _, err) = vm(&["info", "nosuch"]);
    assert!(
        !err.contains("libvirt: "),
        "libvirt's own stderr printer must be silenced: {err}"
    );
}

#[test]
fn clone_sysprep_deploy_and_migrate_refuse_a_running_or_missing_source_clearly() {
    let (ok, _, err) = vm(&["clone", "test", "copy", "--linked"]);
    assert!(
        !ok && err.contains("\"test\" is running; clone needs it shut off"),
        "{err}"
    );
    let (ok, _, err) = vm(&["sysprep", "test"]);
    assert!(!ok && err.contains("sysprep needs it shut off"), "{err}");
    let (ok, _, err) = vm(&["clone", "nosuch", "copy"]);
    assert!(!ok && err.contains("no domain named \"nosuch\""), "{err}");
    let (ok, _, err) = vm(&["clone", "test", "copy", "--linked", "--full"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    // deploy checks placement before it asks provd for a seed: no daemon is needed to refuse.
    let (ok, _, err) = vm(&["deploy", "web1", "--from", "nosuch", "--server", "127.0.0.1:9"]);
    assert!(
        !ok && err.contains("no candidate hypervisor holds the template \"nosuch\"")
            && err.contains("provd vm template push nosuch"),
        "{err}"
    );
    let (ok, _, err) = vm(&["migrate", "test", "test:///default"]);
    assert!(!ok && err.contains("already has a domain named \"test\""), "{err}");
}
