//! The QEMU PXE lab end to end: one BIOS VM (SeaBIOS + iPXE ROM) and one UEFI VM (OVMF's own
//! PXE stack) network-boot against provd, install through the mini-installer and come back
//! to boot from their disks. Asserted from provd's own records (journal, inventory, leases)
//! and from the VMs' serial consoles. A watchdog bounds it; `provd lab down` runs even when
//! an assertion fails. Needs root, QEMU, OVMF, the iPXE ROMs and the cloud kernel (lab/deps.sh).

mod common;

use common::{provd_bin, require_root_and_tools, wait_until};
use std::process::Command;
use std::time::{Duration, Instant};

const WATCHDOG: Duration = Duration::from_secs(900);

/// The lab is one namespace and one work directory: its tests take turns.
static ONE_LAB: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The console driver (tests/browser/console.py) inside the lab's namespace, with its
/// Chromium: one process group, killed on drop (pass or panic).
struct ConsoleWatch(common::ChildGuard);

impl ConsoleWatch {
    /// Start it once the lab's provd answers on its API; None until then.
    fn start_when_ready(host: &str, shot: &std::path::Path) -> Option<ConsoleWatch> {
        let token = std::fs::read_to_string(format!("{LAB_STATE}/api-token")).ok()?;
        let up = Command::new("ip")
            .args([
                "netns",
                "exec",
                "provd-lab",
                "curl",
                "-sf",
                "http://127.0.0.1:6767/healthz",
            ])
            .output()
            .ok()?;
        if !up.status.success() {
            return None;
        }
        let mut child = common::ChildGuard::spawn(
            Command::new("ip")
                .args(["netns", "exec", "provd-lab", "/usr/bin/python3"])
                .arg(common::repo("tests/browser/console.py"))
                .args(["http://127.0.0.1:6767/console", token.trim(), host])
                .arg(shot)
                .env("CONSOLE_WAIT", "900")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped()),
        );
        // Nothing to do between READY and the watch: the lab installs by itself.
        std::io::Write::write_all(child.child().stdin.as_mut().unwrap(), b"GO\n").unwrap();
        Some(ConsoleWatch(child))
    }

    /// Every line it said, once it ended (it ends at INSTALLED or FAIL).
    fn finish(mut self) -> Vec<String> {
        let mut out = String::new();
        std::io::Read::read_to_string(self.0.child().stdout.as_mut().unwrap(), &mut out).unwrap();
        let _ = self.0.child().wait();
        out.lines().map(String::from).collect()
    }
}

struct LabGuard;
impl Drop for LabGuard {
    fn drop(&mut self) {
        let _ = Command::new(provd_bin()).args(["lab", "down"]).output();
    }
}

/// A provd client command inside the lab namespace.
fn in_lab(args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["netns", "exec", "provd-lab", provd_bin()])
        .args(args)
        // The lab's state directory holds the admin API token the CLI presents.
        .args(["--server", "127.0.0.1:6767", "--state-dir", LAB_STATE, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const LAB_STATE: &str = "/var/lib/provd-lab/state";

fn events(mac: &str) -> Vec<serde_json::Value> {
    let token = std::fs::read_to_string(format!("{LAB_STATE}/api-token")).unwrap();
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "provd-lab",
            "curl",
            "-s",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
            &format!("http://127.0.0.1:6767/api/events?mac={mac}"),
        ])
        .output()
        .unwrap();
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[test]
fn a_bios_and_a_uefi_vm_install_through_provd_and_then_boot_locally() {
    require_root_and_tools(&[
        "ip",
        "curl",
        "qemu-system-x86_64",
        "qemu-img",
        "chromium",
        "/usr/bin/python3",
    ]);
    let _turn = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Command::new(provd_bin()).args(["lab", "down"]).output();
    let _guard = LabGuard;
    // The web console in headless Chromium, open from the moment provd answers, watches
    // lab-1 install (tests/browser/console.py): it must turn installed without a reload.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("lab-console.png");
    let mut browser: Option<ConsoleWatch> = None;
    // BIOS (the NIC's iPXE ROM), UEFI PXE (OVMF fetches snponly.efi over TFTP) and UEFI
    // HTTP boot (OVMF with PXE off fetches it over HTTP: no TFTP at all).
    let output = lab_up_with(&["--vms", "3", "--firmware", "bios,uefi,uefi-http"], || {
        if browser.is_none() {
            browser = ConsoleWatch::start_when_ready("lab-1", &shot);
        }
    });
    let watched = browser
        .expect("the console was never opened while the lab ran")
        .finish();
    assert_eq!(watched[0], "REFUSED", "without credentials: {watched:?}");
    assert!(
        watched[1].starts_with("LIVE ") && watched[1] != "LIVE installed",
        "the console was open before lab-1 installed: {watched:?}"
    );
    assert_eq!(watched[2..], ["READY", "INSTALLED"], "{watched:?}");
    // Without --down the lab stays, and says so (with --down it says it was removed).
    assert!(output.contains("The lab keeps running"), "{output}");

    let summary: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read("/var/lib/provd-lab/summary.json").unwrap()).unwrap();
    assert_eq!(summary.len(), 3);
    let leases = in_lab(&["leases", "list"]);
    for (vm, firmware, ip) in [
        (&summary[0], "bios", "10.200.0.11"),
        (&summary[1], "uefi", "10.200.0.12"),
        (&summary[2], "uefi-http", "10.200.0.13"),
    ] {
        let name = vm["name"].as_str().unwrap();
        let mac = vm["mac"].as_str().unwrap();
        assert_eq!(vm["firmware"], firmware);
        assert_eq!(vm["ok"], true, "{name}: {vm:#}");

        // The lease: the host's reserved address, bound in provd's store.
        let lease = leases
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["mac"] == mac)
            .unwrap_or_else(|| panic!("no lease for {mac}"));
        assert_eq!(
            (lease["ip"].as_str(), lease["state"].as_str()),
            (Some(ip), Some("bound"))
        );

        let ev = events(mac);
        let kinds = |k: &str| {
            ev.iter()
                .filter(|e| e["kind"] == k)
                .map(|e| e["detail"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        // The right first-stage file per firmware: OVMF's PXE fetched snponly.efi over TFTP
        // (the lab site's uefi_x64); the BIOS VM's NIC ROM is iPXE already, so DHCP gave it
        // the script URL and no TFTP file.
        // UEFI HTTP boot: DHCP named the same file as a URL (vendor class HTTPClient), the
        // firmware fetched it over HTTP, and the machine never asked TFTP for anything.
        let acks = kinds("dhcp-ack");
        if firmware == "uefi" {
            assert!(acks[0].ends_with("boot file snponly.efi"), "{acks:?}");
            assert!(kinds("tftp").iter().any(|t| t.starts_with("snponly.efi (")), "{ev:#?}");
        } else if firmware == "uefi-http" {
            assert!(
                acks[0].ends_with("boot file http://10.200.0.1:8080/assets/snponly.efi"),
                "{acks:?}"
            );
            assert!(kinds("http-asset").iter().any(|a| a == "GET snponly.efi"), "{ev:#?}");
            assert!(kinds("tftp").is_empty(), "{ev:#?}");
        } else {
            assert!(
                acks[0].contains(&format!(
                    "boot file http://10.200.0.1:8080/boot/{}.ipxe",
                    mac.replace(':', "-")
                )),
                "{acks:?}"
            );
            assert!(kinds("tftp").is_empty(), "{ev:#?}");
        }
        // The per-host iPXE script, the kernel and initrd over HTTP, the kickstart once.
        assert!(
            kinds("boot-script")
                .iter()
                .any(|s| s.starts_with(&format!("installing {name} with profile lab-hypervisor")))
        );
        let assets = kinds("http-asset");
        assert!(
            assets.iter().any(|a| a == "GET lab/vmlinuz") && assets.iter().any(|a| a == "GET lab/installer.cpio.gz"),
            "{assets:?}"
        );
        assert_eq!(kinds("kickstart").len(), 1, "the kickstart is fetched exactly once");
        assert_eq!(kinds("callback"), ["installing", "post-started", "installed"]);
        // The hypervisor kickstart's real %post had its server certificate signed (the
        // migration certificate needs the pool's verification, which the lab's installer
        // does not reach: it installs no libvirt).
        assert_eq!(kinds("pki"), ["server certificate issued"]);
        // The second boot was told to boot locally (after `installed`, in journal order).
        let installed_at = ev
            .iter()
            .position(|e| e["kind"] == "callback" && e["detail"] == "installed")
            .unwrap();
        assert!(
            ev[installed_at..]
                .iter()
                .any(|e| e["kind"] == "boot-script"
                    && e["detail"].as_str().unwrap().contains("boots from its local disk"))
        );

        // The inventory: installed, netboot off, the token spent, one kickstart fetch.
        let host = in_lab(&["hosts", "show", name]);
        assert_eq!(
            (host["status"].as_str(), host["netboot"].as_bool()),
            (Some("installed"), Some(false))
        );
        assert_eq!(
            (
                host["install"]["closed"].as_bool(),
                host["install"]["kickstart_fetches"].as_u64()
            ),
            (Some(true), Some(1))
        );
        assert_eq!(host["install"]["certificates_issued"], serde_json::json!(["server"]));

        // The console: the installer ran %pre and %post, and the local boot happened.
        let console = String::from_utf8_lossy(&std::fs::read(format!("/var/lib/provd-lab/{name}.serial.log")).unwrap())
            .to_string();
        for line in [
            "provd-installer: running %pre (/bin/sh)",
            "provd-installer: %pre done",
            "provd-installer: running %post --nochroot (/bin/sh)",
            "provd-installer: %post --nochroot done",
            "provd-installer: running %post (/bin/bash)",
            "provd-installer: shim: systemctl enable virtqemud.socket virtproxyd.socket virtproxyd-tls.socket",
            "provd-installer: %post done",
            "provd-installer: install complete; rebooting",
        ] {
            assert!(console.contains(line), "{name} console lacks {line:?}");
        }
        if firmware == "bios" {
            assert!(
                console.contains("provd-lab: booted from local disk"),
                "{name}: the installed boot sector did not run"
            );
        } else {
            assert!(
                console.contains(&format!("provd: {name} boots from its local disk")),
                "{name}: iPXE did not print the local-boot script"
            );
        }
    }

    // Secure Boot's check is real: a machine whose firmware enforces it (OVMF's Secure Boot
    // build, Microsoft's keys) but that provd does not know as a Secure Boot host is
    // answered with iPXE, which no trusted key signed, and the firmware refuses to run it.
    let added = Command::new(provd_bin())
        .args(["lab", "add-vm", "--firmware", "secureboot"])
        .output()
        .unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let name = String::from_utf8_lossy(&added.stdout)
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    wait_console(&name, "): Access Denied");
    let refused = console(&name);
    assert!(
        refused.contains("failed to load Boot") && refused.contains("UEFI PXEv4"),
        "{refused}"
    );
    assert!(
        !refused.contains("iPXE initialising"),
        "iPXE ran under Secure Boot: {refused}"
    );
    let mac = format!(
        "52:54:00:00:c1:{:02x}",
        name.trim_start_matches("new-").parse::<u8>().unwrap()
    );
    let served: Vec<String> = events(&mac)
        .iter()
        .filter(|e| e["kind"] == "tftp")
        .map(|e| e["detail"].as_str().unwrap().to_string())
        .collect();
    assert!(
        served.iter().any(|t| t.starts_with("snponly.efi (")),
        "provd served the unsigned first stage whole, and the firmware refused it: {served:?}"
    );

    // The interlock, on the BIOS VM. An operator turns netboot on for an installed host
    // without `reinstall`: its next boot reaches the installer, whose %pre finds the marker
    // the first install left on /boot and stops before touching the disk.
    let before = sector0("lab-1");
    lab_cli(&["hosts", "netboot", "lab-1", "on"]);
    power_cycle("lab-1");
    wait_console("lab-1", "provd-installer: FAILED: %pre --erroronfail");
    wait_stopped("lab-1");
    let said = console("lab-1");
    assert!(
        said.contains("refusing to clear disks that hold a provd install: /dev/vda1: install_id="),
        "{said}"
    );
    assert_eq!(sector0("lab-1"), before, "the refused install changed the disk");
    let host = in_lab(&["hosts", "show", "lab-1"]);
    assert_eq!(
        (host["status"].as_str(), host["netboot"].as_bool()),
        (Some("installed"), Some(false)),
        "{host:#}"
    );
    let last = host["history"].as_array().unwrap().last().unwrap()["what"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.contains("refused to wipe") && last.contains("/dev/vda1"), "{last}");

    // `reinstall` of an installed host needs --force; with it, the install may wipe.
    let refused = lab_command(&["hosts", "reinstall", "lab-1"]);
    assert!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("--force"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    lab_cli(&["hosts", "reinstall", "lab-1", "--force"]);
    power_cycle("lab-1");
    wait_console("lab-1", "provd-lab: booted from local disk");
    let said = console("lab-1");
    assert!(
        said.contains("an operator asked for this reinstall; clearing the earlier install"),
        "{said}"
    );
    assert_ne!(
        sector0("lab-1"),
        before,
        "the forced reinstall wrote a new disk signature"
    );
    let host = in_lab(&["hosts", "show", "lab-1"]);
    assert_eq!(host["status"], "installed");
}

/// `provd lab up` with `args` (and a timeout, no package installs), under the watchdog;
/// its output, after it succeeded.
fn lab_up(args: &[&str]) -> String {
    lab_up_with(args, || {})
}

/// `lab_up`, calling `tick` about once a second while the lab runs.
fn lab_up_with(args: &[&str], mut tick: impl FnMut()) -> String {
    let mut child = Command::new(provd_bin())
        .args(["lab", "up", "--timeout", "600", "--no-install"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WATCHDOG {
            let _ = child.kill();
            panic!("provd lab up exceeded the {WATCHDOG:?} watchdog");
        }
        tick();
        std::thread::sleep(Duration::from_secs(1));
    };
    let mut output = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut output).unwrap();
    println!("{output}");
    assert!(status.success(), "provd lab up failed:\n{output}");
    output
}

/// What the simulated BMC itself says (ipmitool, not provd).
fn ipmitool_power(port: u16) -> String {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "provd-lab",
            "ipmitool",
            "-I",
            "lanplus",
            "-H",
            "127.0.0.1",
            "-p",
        ])
        .arg(port.to_string())
        .args(["-U", "ipmiusr", "-E", "-C", "3", "chassis", "power", "status"])
        .env("IPMI_PASSWORD", "lab-bmc-password")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A VM behind OpenIPMI's simulated BMC (`--bmc ipmi`): installed once by the lab, then
/// `provd hosts reinstall --power` makes it install again with nobody touching QEMU, and
/// `provd power off` stops it; ipmitool (not provd) confirms the power state each time.
#[test]
fn a_vm_behind_an_ipmi_bmc_is_reinstalled_and_powered_off_by_provd() {
    require_root_and_tools(&["ip", "curl", "qemu-system-x86_64", "qemu-img", "ipmi_sim", "ipmitool"]);
    let _turn = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Command::new(provd_bin()).args(["lab", "down"]).output();
    let _guard = LabGuard;
    lab_up(&["--vms", "1", "--firmware", "bios", "--bmc", "ipmi"]);
    assert_eq!(ipmitool_power(6231), "Chassis Power is on");
    let status = in_lab(&["power", "status", "lab-1"]);
    assert_power(&status, "on");

    // The host is installed: --power without --force changes nothing.
    let refused = lab_command(&["hosts", "reinstall", "lab-1", "--power"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stdout).contains("--force"));
    let first_qemu = std::fs::read_to_string("/var/lib/provd-lab/lab-1.pid").unwrap();
    let installs_before = callbacks("52:54:00:00:c0:01", "installed");
    assert_eq!(installs_before, 1);

    let done = in_lab(&["hosts", "reinstall", "lab-1", "--force", "--power"]);
    assert_eq!(done[0]["ok"], true, "{done:#}");
    // ipmi_sim refuses the boot override ("Invalid data field"): said as a warning; the lab's
    // VMs try the network first, so the install happens anyway.
    assert!(done[0]["warnings"].to_string().contains("PXE"), "{done:#}");
    wait_until("a second install", Duration::from_secs(300), || {
        (callbacks("52:54:00:00:c0:01", "installed") >= 2).then_some(())
    });
    let second_qemu = std::fs::read_to_string("/var/lib/provd-lab/lab-1.pid").unwrap();
    assert_ne!(first_qemu, second_qemu, "the BMC restarted the VM (a new QEMU)");
    let host = in_lab(&["hosts", "show", "lab-1"]);
    let history = host["history"].to_string();
    assert!(history.contains("power cycle via ipmi: ok"), "{history}");
    assert_eq!(host["status"], "installed");
    assert_eq!(ipmitool_power(6231), "Chassis Power is on");

    let off = in_lab(&["power", "off", "lab-1"]);
    assert_power(&off, "off");
    assert_eq!(ipmitool_power(6231), "Chassis Power is off");
    let pid = second_qemu.trim();
    wait_until("QEMU gone after power off", Duration::from_secs(10), || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let history = in_lab(&["hosts", "show", "lab-1"])["history"].to_string();
    assert!(history.contains("power off via ipmi: ok, power off"), "{history}");
    // The journal has each power action too.
    let power_events: Vec<serde_json::Value> = events("52:54:00:00:c0:01")
        .into_iter()
        .filter(|e| e["kind"] == "power")
        .collect();
    assert!(power_events.len() >= 3, "{power_events:#?}");

    // Discovery: a machine no config names boots the discovery image and reports itself;
    // what it reports is what QEMU was given (768 MiB, a 2 GiB disk with its serial).
    let added = Command::new(provd_bin()).args(["lab", "add-vm"]).output().unwrap();
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let said = String::from_utf8_lossy(&added.stdout).to_string();
    assert!(said.contains("--bmc ipmi,127.0.0.1:6239,lab-ipmi"), "{said}");
    let mac = "52:54:00:00:c1:09";
    let found = wait_until("facts from the added VM", Duration::from_secs(180), || {
        let list = in_lab(&["hosts", "list", "--discovered"]);
        list.as_array()
            .unwrap()
            .iter()
            .find(|h| h["mac"] == mac && !h["facts"].is_null())
            .cloned()
    });
    let facts = &found["facts"];
    assert_eq!(facts["memory_mib"], 768, "{facts:#}");
    assert_eq!(facts["disks"][0]["size_bytes"], 2u64 << 30, "{facts:#}");
    assert_eq!(facts["disks"][0]["serial"], "provd-new-9", "{facts:#}");
    assert_eq!(
        (facts["nics"][0]["mac"].as_str(), facts["nics"][0]["link"].as_str()),
        (Some(mac), Some("up"))
    );
    assert_eq!(found["status"], "discovered");
    // It powered itself off after reporting (the site says then = "poweroff").
    wait_until("the discovered VM powered off", Duration::from_secs(60), || {
        (ipmitool_power(6239) == "Chassis Power is off").then_some(())
    });
    // Adopted with its BMC and installed through it, nobody touching QEMU.
    let adopted = lab_command(&[
        "hosts",
        "adopt",
        mac,
        "--hostname",
        "lab-9",
        "--profile",
        "lab-hypervisor",
        "--ip",
        "10.200.0.19",
        "--bmc",
        "ipmi,127.0.0.1:6239,lab-ipmi",
        "--power",
    ]);
    assert!(
        adopted.status.success(),
        "{}{}",
        String::from_utf8_lossy(&adopted.stdout),
        String::from_utf8_lossy(&adopted.stderr)
    );
    let file = std::fs::read_to_string("/var/lib/provd-lab/config/hosts-lab.toml").unwrap();
    assert!(
        file.contains("hostname = \"lab-9\"") && file.contains("127.0.0.1:6239"),
        "{file}"
    );
    wait_until("lab-9 installed", Duration::from_secs(300), || {
        (callbacks(mac, "installed") >= 1).then_some(())
    });
    let host = in_lab(&["hosts", "show", "lab-9"]);
    assert_eq!(host["status"], "installed");
    assert_eq!(host["facts"]["memory_mib"], 768, "the facts stay with the adopted host");
}

/// The Redfish emulator's own answer about lab-1 (curl, not provd).
fn redfish_system() -> serde_json::Value {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            "provd-lab",
            "curl",
            "-sk",
            "-u",
            "admin:lab-redfish-password",
        ])
        .arg("https://127.0.0.1:8443/redfish/v1/Systems/00000000-0000-4000-8000-52540000c001")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// A VM that is a libvirt domain behind sushy-tools' Redfish emulator (`--bmc redfish`,
/// HTTPS with a pinned self-signed certificate): installed by the lab, reinstalled by
/// `provd hosts reinstall --power`, stopped by `provd power off`; the emulator's own
/// Redfish answer (curl) and libvirt (virsh) confirm each state.
#[test]
fn a_vm_behind_a_redfish_bmc_is_reinstalled_and_powered_off_by_provd() {
    require_root_and_tools(&[
        "ip",
        "curl",
        "qemu-system-x86_64",
        "qemu-img",
        "libvirtd",
        "virsh",
        "openssl",
    ]);
    let _turn = ONE_LAB.lock().unwrap_or_else(|p| p.into_inner());
    let _ = Command::new(provd_bin()).args(["lab", "down"]).output();
    let _guard = LabGuard;
    lab_up(&["--vms", "1", "--firmware", "bios", "--bmc", "redfish"]);
    assert_eq!(redfish_system()["PowerState"], "On");
    let mac = "52:54:00:00:c0:01";
    assert_eq!(callbacks(mac, "installed"), 1);

    let done = in_lab(&["hosts", "reinstall", "lab-1", "--force", "--power"]);
    assert_eq!(done[0]["ok"], true, "{done:#}");
    // sushy's libvirt backend keeps the override "Continuous": provd says so.
    assert!(done[0]["warnings"].to_string().contains("Continuous"), "{done:#}");
    assert_eq!(redfish_system()["Boot"]["BootSourceOverrideTarget"], "Pxe");
    wait_until("a second install", Duration::from_secs(300), || {
        (callbacks(mac, "installed") >= 2).then_some(())
    });
    let history = in_lab(&["hosts", "show", "lab-1"])["history"].to_string();
    assert!(history.contains("power cycle via redfish: ok"), "{history}");

    let off = in_lab(&["power", "off", "lab-1"]);
    assert_power(&off, "off");
    assert_eq!(redfish_system()["PowerState"], "Off");
    let state = Command::new("virsh")
        .args([
            "-c",
            "qemu:///system?socket=/var/lib/provd-lab/libvirt-run/libvirt-sock",
            "domstate",
            "lab-1",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "shut off");
}

/// A one-host `provd power --json` answer: succeeded, and the BMC reports `state`.
fn assert_power(rows: &serde_json::Value, state: &str) {
    assert_eq!(
        (rows[0]["ok"].as_bool(), rows[0]["state"].as_str()),
        (Some(true), Some(state)),
        "{rows:#}"
    );
}

fn callbacks(mac: &str, what: &str) -> usize {
    events(mac)
        .iter()
        .filter(|e| e["kind"] == "callback" && e["detail"] == what)
        .count()
}

/// A provd command in the lab namespace (the lab's state directory holds the API token).
fn lab_command(args: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", "provd-lab", provd_bin()])
        .args(args)
        .args(["--server", "127.0.0.1:6767", "--state-dir", LAB_STATE])
        .output()
        .unwrap()
}

fn lab_cli(args: &[&str]) {
    let out = lab_command(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn power_cycle(name: &str) {
    let out = Command::new(provd_bin())
        .args(["lab", "power-cycle", name])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn console(name: &str) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/var/lib/provd-lab/{name}.serial.log")).unwrap_or_default())
        .to_string()
}

fn wait_console(name: &str, needle: &str) {
    let start = Instant::now();
    while !console(name).contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{name}: no {needle:?} on the console within 300 s:\n{}",
            console(name)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Until the VM's QEMU has exited (the installer powers off after a refusal).
fn wait_stopped(name: &str) {
    let pid = std::fs::read_to_string(format!("/var/lib/provd-lab/{name}.pid")).unwrap();
    let start = Instant::now();
    while std::path::Path::new(&format!("/proc/{}", pid.trim())).exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "{name} did not power off");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The first sector of a lab VM's disk (boot code, disk signature, partition table), read
/// from the host side (-U: the VM may still hold its image open).
fn sector0(name: &str) -> Vec<u8> {
    let out = format!("/var/lib/provd-lab/{name}.sector0");
    let st = Command::new("qemu-img")
        .args(["dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", "count=1"])
        .arg(format!("if=/var/lib/provd-lab/{name}.qcow2"))
        .arg(format!("of={out}"))
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let bytes = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(bytes.len(), 512);
    bytes
}
