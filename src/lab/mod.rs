//! The QEMU PXE lab: real BIOS and UEFI virtual machines network-boot against provd inside a
//! private network namespace, install through the mini-installer (lab/installer), and come
//! back to boot from their disks.
//!
//! `up` creates namespace `provd-lab` with bridge `labbr0` and one tap per VM, starts
//! `provd serve` there with the lab site config, boots the VMs (TCG), shows each VM's
//! progress as provd's journal and the VM's console report it, and prints a summary (also
//! written to `/var/lib/provd-lab/summary.json`). The lab keeps running until `down`, which
//! removes every namespace, process and file `up` made. Nothing touches a real network.

pub mod bmc;
pub mod progress;
pub mod redfish;
pub mod vm;

use crate::config::Config;
use crate::journal::BootEvent;
use crate::mac::MacAddr;
use anyhow::{Context, bail};
use progress::{Progress, Stage};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vm::{Firmware, VmSpec};

pub const NAMESPACE: &str = "provd-lab";
pub const BRIDGE: &str = "labbr0";
/// The lab's files (config copy, state, disks, consoles, pids). Not under /tmp: root runs the
/// lab and removes and recreates this directory, and in a world-writable directory any local
/// user could have made the path first (a symlink, or a directory holding their own config
/// and CA) before root's `lab up`. Only root can create entries in /var/lib. World-readable
/// (0755), because libvirt's QEMU (the Redfish mode) runs as its own user and opens disks here.
pub const WORK_DIR: &str = "/var/lib/provd-lab";
pub const MAX_VMS: usize = 8;

/// What `up` started, so `status` and `down` can find it.
#[derive(Debug, Serialize, Deserialize)]
pub struct LabState {
    pub started: u64,
    pub config: Vec<PathBuf>,
    pub api: String,
    pub provd_pid: u32,
    pub vms: Vec<VmSpec>,
    /// Unix time each VM was powered on.
    pub powered_on: Vec<u64>,
    /// "ipmi" or "redfish" when each VM sits behind a BMC (`--bmc`).
    #[serde(default)]
    pub bmc: Option<String>,
    /// The Redfish emulator's certificate fingerprint (what lab hosts' entries pin).
    #[serde(default)]
    pub bmc_fingerprint: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct VmSummary {
    pub name: String,
    pub firmware: Firmware,
    pub mac: MacAddr,
    pub powered_on: u64,
    pub progress: Progress,
    /// Seconds from power-on to `installed`, and to the local boot.
    pub to_installed: Option<u64>,
    pub to_local_boot: Option<u64>,
    pub ok: bool,
}

pub struct UpOptions {
    pub vms: usize,
    pub firmware: String,
    pub config: Vec<PathBuf>,
    pub timeout: Duration,
    pub install_packages: bool,
    /// Remove the lab once the summary is printed (`lab/run.sh` without `--keep`).
    pub remove_after: bool,
    /// Put each VM behind a BMC: "ipmi" (OpenIPMI's ipmi_sim).
    pub bmc: Option<String>,
}

fn work() -> PathBuf {
    PathBuf::from(WORK_DIR)
}

/// Whether only root can make entries in `dir` (owned by root, not group- or
/// world-writable): where the lab may put a directory it will remove and recreate as root.
pub fn only_root_writes(dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// (thing needed, Debian package that provides it)
fn prerequisites(firmwares: &[Firmware], bmc: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
        ("/usr/bin/qemu-img", "qemu-utils"),
        ("/bin/busybox", "busybox-static"),
        ("/usr/lib/ipxe/ipxe.efi", "ipxe"),
    ];
    if firmwares.contains(&Firmware::Bios) {
        v.push((vm::IPXE_ROM, "ipxe-qemu"));
    }
    if firmwares.contains(&Firmware::Uefi) {
        v.push((vm::OVMF_CODE, "ovmf"));
    }
    match bmc {
        Some("ipmi") => {
            v.push(("/usr/bin/ipmi_sim", "openipmi"));
            v.push(("/usr/bin/ipmitool", "ipmitool"));
        }
        Some(_) => {
            v.push(("/usr/sbin/libvirtd", "libvirt-daemon-system"));
            v.push(("/usr/bin/virsh", "libvirt-clients"));
            v.push(("/usr/bin/openssl", "openssl"));
        }
        None => {}
    }
    v
}

fn cloud_kernel_installed() -> bool {
    std::fs::read_dir("/boot")
        .map(|d| {
            d.flatten().any(|e| {
                e.file_name().to_string_lossy().ends_with("-cloud-amd64")
                    && e.file_name().to_string_lossy().starts_with("vmlinuz-")
            })
        })
        .unwrap_or(false)
}

/// Install what is missing (Debian), or say exactly what to install.
fn ensure_prerequisites(firmwares: &[Firmware], bmc: Option<&str>, install: bool) -> anyhow::Result<()> {
    let mut missing: Vec<&str> = prerequisites(firmwares, bmc)
        .into_iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(_, pkg)| pkg)
        .collect();
    if !cloud_kernel_installed() {
        missing.push("linux-image-cloud-amd64");
    }
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !install {
        bail!(
            "the lab needs Debian packages that are not installed; run:\n  {command}\n(or lab/deps.sh, which also handles the qemu-utils version pin)"
        );
    }
    println!("provd lab: installing {}", missing.join(" "));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("DEBIAN_FRONTEND=noninteractive {command}"))
        .status()?;
    if !status.success() {
        bail!("could not install the lab's packages; run `{command}` (or lab/deps.sh) yourself and try again");
    }
    Ok(())
}

/// iPXE binaries and the mini-installer in the assets directory, built if missing.
fn ensure_assets(config: &Config) -> anyhow::Result<()> {
    let assets = &config.daemon.assets_dir;
    if !assets.join("ipxe.efi").exists() {
        println!("provd lab: copying iPXE binaries into {}", assets.display());
        let failed: Vec<String> = crate::assets::install_ipxe(Path::new(crate::assets::DEBIAN_IPXE_DIR), assets)?
            .into_iter()
            .filter_map(|f| f.result.err().map(|e| format!("{}: {e}", f.name)))
            .collect();
        if !failed.is_empty() {
            bail!("iPXE binaries not installed: {}", failed.join("; "));
        }
    }
    if !assets.join("lab/vmlinuz").exists() || installer_outdated(&assets.join("lab/installer.cpio.gz")) {
        let script = Path::new("lab/build-installer.sh");
        if !script.exists() {
            bail!(
                "{} lacks lab/vmlinuz and lab/installer.cpio.gz, and lab/build-installer.sh is not here: run provd lab from the provd source tree",
                assets.display()
            );
        }
        println!("provd lab: building the mini-installer (lab/build-installer.sh)");
        run(Command::new("bash").arg(script).arg(assets.join("lab")))?;
    }
    Ok(())
}

/// The built installer is missing or older than its sources (lab/installer/*,
/// lab/build-installer.sh): a source tree that changed the installer rebuilds it.
fn installer_outdated(built: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built_at) = modified(built) else {
        return true;
    };
    let mut sources = vec![PathBuf::from("lab/build-installer.sh")];
    let mut dirs = vec![PathBuf::from("lab/installer")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                sources.push(p);
            }
        }
    }
    sources.iter().filter_map(|p| modified(p)).any(|t| t > built_at)
}

/// Run `f` on a thread inside the lab namespace (for talking to provd's API on loopback).
fn in_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let ns = File::open(format!("/var/run/netns/{NAMESPACE}")).context("the lab namespace is gone")?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is a valid namespace file.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow::anyhow!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

fn fetch_events(api: &str) -> anyhow::Result<Vec<BootEvent>> {
    let url = format!("http://{api}/api/events");
    // The lab's provd keeps its admin API token in the lab's state directory.
    let token = crate::http::auth::read_token(&crate::http::auth::token_path(&work().join("state")))?;
    in_namespace(move || -> anyhow::Result<Vec<BootEvent>> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let body = agent
            .get(&url)
            .header("authorization", &format!("Bearer {token}"))
            .call()?
            .body_mut()
            .read_to_string()?;
        Ok(serde_json::from_str(&body)?)
    })?
}

fn progress_of(vm: &VmSpec, events: &[BootEvent]) -> Progress {
    let mine: Vec<BootEvent> = events.iter().filter(|e| e.mac == Some(vm.mac)).cloned().collect();
    let console = std::fs::read(&vm.serial_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    progress::derive(&mine, &console, vm.firmware)
}

pub fn up(opts: UpOptions) -> anyhow::Result<bool> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces, taps): sudo provd lab up");
    }
    if opts.vms == 0 || opts.vms > MAX_VMS {
        bail!("--vms must be 1 to {MAX_VMS} (lab/lab.toml defines {MAX_VMS} lab hosts)");
    }
    if Path::new(&format!("/var/run/netns/{NAMESPACE}")).exists() {
        bail!("a lab is already running (namespace {NAMESPACE}); `provd lab down` first");
    }
    let config = crate::config::load(&opts.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let site = config.sites.values().next().context("the lab config has no site")?;
    let listen = site.listen.first().context("the lab site has no listen interface")?;
    if listen.interface != BRIDGE {
        bail!(
            "the lab site must listen on {BRIDGE} (it listens on {})",
            listen.interface
        );
    }
    let subnet = site
        .subnets
        .iter()
        .find(|s| s.prefix.contains(&listen.address))
        .context("no subnet holds the lab server address")?;
    if site.hosts.len() < opts.vms {
        bail!(
            "the lab config defines {} hosts; --vms {} needs as many",
            site.hosts.len(),
            opts.vms
        );
    }
    let firmwares: Vec<Firmware> = (1..=opts.vms).map(|i| vm::firmware_for(&opts.firmware, i)).collect();
    match opts.bmc.as_deref() {
        None | Some("ipmi") => {}
        Some("redfish") => {}
        Some(other) => bail!("--bmc {other:?}: ipmi or redfish"),
    }
    ensure_prerequisites(&firmwares, opts.bmc.as_deref(), opts.install_packages)?;
    ensure_assets(&config)?;

    let w = work();
    let parent = w.parent().expect("an absolute path");
    if !only_root_writes(parent) {
        bail!(
            "{} may be written by other users than root: the lab will not remove and recreate {} there",
            parent.display(),
            w.display()
        );
    }
    let _ = std::fs::remove_dir_all(&w);
    std::fs::create_dir_all(&w)?;

    // Network: namespace, bridge with provd's address, one tap per VM.
    ip(&["netns", "add", NAMESPACE])?;
    let setup = || -> anyhow::Result<()> {
        ip(&["-n", NAMESPACE, "link", "set", "lo", "up"])?;
        ip(&["-n", NAMESPACE, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&[
            "-n",
            NAMESPACE,
            "addr",
            "add",
            &format!("{}/{}", listen.address, subnet.prefix.prefix_len()),
            "dev",
            BRIDGE,
        ])?;
        ip(&["-n", NAMESPACE, "link", "set", BRIDGE, "up"])?;
        for i in 1..=opts.vms {
            let tap = format!("ltap{i}");
            ip(&["-n", NAMESPACE, "tuntap", "add", &tap, "mode", "tap"])?;
            ip(&["-n", NAMESPACE, "link", "set", &tap, "master", BRIDGE, "up"])?;
        }
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = down();
        return Err(e);
    }

    let result = start_and_watch(&opts, &config, &firmwares, &w);
    if result.is_err() {
        eprintln!("provd lab: stopping what was started (provd lab down)");
        let _ = down();
    } else if opts.remove_after {
        down()?;
        println!("The lab was removed (`sudo lab/run.sh --keep` leaves it running for `provd lab status`).");
    } else {
        println!("The lab keeps running: `provd lab status`, `provd lab down` (removes everything).");
    }
    result
}

fn spawn_in_namespace(program: &Path, args: &[String], log: &Path) -> anyhow::Result<u32> {
    let logf = File::create(log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", NAMESPACE])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        // Its own process group: a Ctrl-C at `provd lab up` must not kill the lab.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(child.id())
}

fn start_and_watch(opts: &UpOptions, config: &Config, firmwares: &[Firmware], w: &Path) -> anyhow::Result<bool> {
    let api = config.daemon.api_listen.to_string();
    let provd = std::env::current_exe()?;
    let mut args: Vec<String> = vec!["serve".into()];
    let site = config.sites.values().next().expect("checked");
    // The VMs-to-be (pure: names, MACs, files), so their BMCs can be set up first.
    let specs: Vec<VmSpec> = firmwares
        .iter()
        .enumerate()
        .map(|(i, fw)| VmSpec::new(i + 1, *fw, site.hosts[i].mac, &site.hosts[i].hostname, w))
        .collect();
    // provd serves a copy of the config (a directory `provd hosts adopt` may write to);
    // with --bmc each lab host gets its BMC in it (`lab::bmc`, `lab::redfish`).
    let secrets = w.join("bmc-secrets.toml");
    let fingerprint = match opts.bmc.as_deref() {
        Some("ipmi") => {
            bmc::write_credentials(&secrets, bmc::CREDENTIALS, bmc::USER, bmc::PASSWORD)?;
            None
        }
        Some(_) => {
            redfish::write_credentials_file(&secrets)?;
            redfish::start_libvirtd(w, spawn_in_namespace)?;
            Some(redfish::start_emulator(w, spawn_in_namespace)?)
        }
        None => None,
    };
    let bmc_of = |hostname: &str| -> Option<toml::Table> {
        let vm = specs.iter().find(|v| v.name == hostname)?;
        match (opts.bmc.as_deref(), &fingerprint) {
            (Some("ipmi"), _) => Some(bmc::host_bmc(vm.index)),
            (Some(_), Some(fp)) => Some(redfish::host_bmc(vm, fp)),
            _ => None,
        }
    };
    let configs = vec![bmc::effective_config(
        &config.files,
        &w.join("config"),
        opts.bmc.is_some().then_some(secrets.as_path()),
        bmc_of,
    )?];
    for c in &configs {
        args.push("--config".into());
        args.push(c.display().to_string());
    }
    args.extend(["--state-dir".into(), w.join("state").display().to_string()]);
    // The lab's own CA, so the hypervisor kickstart's %post can have its certificates signed.
    let pki_dir = config.daemon.pki_dir(&w.join("state"));
    crate::pki::init(&pki_dir, crate::pki::DEFAULT_CA_NAME, 30, false)?;
    let provd_log = w.join("provd.log");
    let provd_pid = spawn_in_namespace(&provd, &args, &provd_log)?;
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(&provd_log).unwrap_or_default();
        if log.contains("DHCP listening") {
            break;
        }
        if start.elapsed() > Duration::from_secs(20) || !Path::new(&format!("/proc/{provd_pid}")).exists() {
            bail!("provd did not start; its log ({}):\n{log}", provd_log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let mut vms = Vec::new();
    let mut powered_on = Vec::new();
    for spec in specs {
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&spec.disk)
            .arg("1G"))?;
        if let Some(vars) = &spec.vars {
            std::fs::copy(vm::OVMF_VARS, vars).context("copying the OVMF variable store")?;
        }
        power_on(opts.bmc.as_deref(), &spec, w)?;
        powered_on.push(crate::clock::unix_now());
        vms.push(spec);
    }
    let state = LabState {
        started: crate::clock::unix_now(),
        config: opts.config.clone(),
        api: api.clone(),
        provd_pid,
        vms,
        powered_on,
        bmc: opts.bmc.clone(),
        bmc_fingerprint: fingerprint.clone(),
    };
    std::fs::write(w.join("lab.json"), serde_json::to_vec_pretty(&state)?)?;

    let counts = |f: Firmware| firmwares.iter().filter(|x| **x == f).count();
    println!(
        "provd lab: {} VM(s) ({} bios, {} uefi) on {BRIDGE} in namespace {NAMESPACE}; provd at {} (log {})",
        state.vms.len(),
        counts(Firmware::Bios),
        counts(Firmware::Uefi),
        site.server_address,
        provd_log.display()
    );
    watch(&state, opts.timeout)
}

/// Print each VM's stages as they happen; returns whether every VM reached its local boot.
fn watch(state: &LabState, timeout: Duration) -> anyhow::Result<bool> {
    let start = Instant::now();
    let mut shown: Vec<Vec<Stage>> = vec![Vec::new(); state.vms.len()];
    let mut failed_shown = vec![false; state.vms.len()];
    let mut summaries;
    loop {
        let events = fetch_events(&state.api).unwrap_or_default();
        summaries = Vec::new();
        for (i, vm) in state.vms.iter().enumerate() {
            let p = progress_of(vm, &events);
            for (stage, at, detail) in &p.reached {
                if !shown[i].contains(stage) {
                    shown[i].push(*stage);
                    println!(
                        "[{:>4}s] {:<8} {:<5} {:<10} {}",
                        at.saturating_sub(state.powered_on[i]),
                        vm.name,
                        vm.firmware.name(),
                        stage.name(),
                        detail
                    );
                }
            }
            if let Some(f) = &p.failed
                && !failed_shown[i]
            {
                failed_shown[i] = true;
                println!(
                    "[{:>4}s] {:<8} {:<5} FAILED     {f}",
                    start.elapsed().as_secs(),
                    vm.name,
                    vm.firmware.name()
                );
            }
            summaries.push(summary(vm, state.powered_on[i], p));
        }
        if summaries.iter().all(|s| s.progress.done()) || start.elapsed() > timeout {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // A BIOS VM prints the installed boot sector's message a moment after provd says "local
    // disk"; give the consoles a few seconds to show it.
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(20)
        && state
            .vms
            .iter()
            .zip(&summaries)
            .any(|(vm, s)| vm.firmware == Firmware::Bios && s.ok && !s.progress.disk_booted)
    {
        std::thread::sleep(Duration::from_secs(1));
        let events = fetch_events(&state.api).unwrap_or_default();
        summaries = state
            .vms
            .iter()
            .enumerate()
            .map(|(i, vm)| summary(vm, state.powered_on[i], progress_of(vm, &events)))
            .collect();
    }

    print_summary(&summaries, start.elapsed() > timeout);
    std::fs::write(work().join("summary.json"), serde_json::to_vec_pretty(&summaries)?)?;
    let all_ok = summaries.iter().all(|s| s.ok);
    if !all_ok {
        for (vm, s) in state.vms.iter().zip(&summaries) {
            if !s.ok {
                let console = std::fs::read(&vm.serial_log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let tail: Vec<&str> = console
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                println!(
                    "--- last console lines of {} ({}) ---\n{}",
                    vm.name,
                    vm.serial_log.display(),
                    tail.join("\n")
                );
            }
        }
    }
    Ok(all_ok)
}

fn summary(vm: &VmSpec, powered_on: u64, p: Progress) -> VmSummary {
    let since = |s: Stage| p.at(s).map(|t| t.saturating_sub(powered_on));
    VmSummary {
        name: vm.name.clone(),
        firmware: vm.firmware,
        mac: vm.mac,
        powered_on,
        to_installed: since(Stage::Installed),
        to_local_boot: since(Stage::LocalBoot),
        ok: p.failed.is_none() && p.at(Stage::LocalBoot).is_some(),
        progress: p,
    }
}

fn print_summary(summaries: &[VmSummary], timed_out: bool) {
    println!();
    println!(
        "{:<8} {:<5} {:<22} {:>6} {:>10} {:>11} {:<9} RESULT",
        "VM", "FW", "FIRST STAGE FILE", "DHCP", "INSTALLED", "LOCAL BOOT", "DISK"
    );
    for s in summaries {
        let p = &s.progress;
        let file = p.tftp_files.first().cloned().unwrap_or_else(|| {
            if s.firmware == Firmware::Bios {
                "(iPXE option ROM)".into()
            } else {
                "-".into()
            }
        });
        let t = |v: Option<u64>| v.map(|x| format!("{x}s")).unwrap_or_else(|| "-".into());
        let result = if s.ok {
            "ok".to_string()
        } else if let Some(f) = &p.failed {
            format!("FAILED: {f}")
        } else {
            format!("stopped after {}", p.last().map(Stage::name).unwrap_or("power-on"))
        };
        println!(
            "{:<8} {:<5} {:<22} {:>6} {:>10} {:>11} {:<9} {}",
            s.name,
            s.firmware.name(),
            file,
            t(p.at(Stage::Dhcp).map(|x| x.saturating_sub(s.powered_on))),
            t(s.to_installed),
            t(s.to_local_boot),
            if p.disk_booted { "booted" } else { "-" },
            result
        );
    }
    if timed_out {
        println!("(timed out waiting for every VM)");
    }
}

pub fn status() -> anyhow::Result<bool> {
    let path = work().join("lab.json");
    let Ok(bytes) = std::fs::read(&path) else {
        println!("no lab is running (no {})", path.display());
        return Ok(false);
    };
    let state: LabState = serde_json::from_slice(&bytes)?;
    let alive = |pid: u32| Path::new(&format!("/proc/{pid}")).exists();
    println!(
        "lab started {}s ago; provd pid {} ({})",
        crate::clock::unix_now().saturating_sub(state.started),
        state.provd_pid,
        if alive(state.provd_pid) { "running" } else { "gone" }
    );
    let events = fetch_events(&state.api).unwrap_or_default();
    for vm in &state.vms {
        let running = std::fs::read_to_string(&vm.pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(alive);
        let p = progress_of(vm, &events);
        println!(
            "{:<8} {:<5} {:<17} {:<8} last stage: {}{}",
            vm.name,
            vm.firmware.name(),
            vm.mac,
            if running { "running" } else { "stopped" },
            p.last().map(Stage::name).unwrap_or("none yet"),
            if p.disk_booted { " (booted from disk)" } else { "" }
        );
    }
    Ok(true)
}

/// Power-cycle one running lab VM, as pulling its plug and plugging it back in would: QEMU
/// is stopped and started again with the same disk, NIC and firmware variables. Its
/// earlier console is kept as `<name>.serial.<n>.log`; the new one starts empty.
pub fn power_cycle(name: &str) -> anyhow::Result<()> {
    let path = work().join("lab.json");
    let bytes = std::fs::read(&path).with_context(|| format!("no lab is running (no {})", path.display()))?;
    let state: LabState = serde_json::from_slice(&bytes)?;
    let Some(vm) = state.vms.iter().find(|v| v.name == name) else {
        let names: Vec<&str> = state.vms.iter().map(|v| v.name.as_str()).collect();
        bail!("the lab has no VM named {name:?} (it has: {})", names.join(", "));
    };
    if let Some(b) = &state.bmc {
        bail!("{name} sits behind a simulated BMC ({b}): power it through the BMC, `provd power cycle {name}`");
    }
    let pid = std::fs::read_to_string(&vm.pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    if let Some(pid) = pid {
        // SAFETY: kill(2) on a pid QEMU wrote; a stale pid is at worst ESRCH.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let start = std::time::Instant::now();
        while Path::new(&format!("/proc/{pid}")).exists() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let mut n = 1;
    while vm.serial_log.with_extension(format!("{n}.log")).exists() {
        n += 1;
    }
    if vm.serial_log.exists() {
        std::fs::rename(&vm.serial_log, vm.serial_log.with_extension(format!("{n}.log")))?;
    }
    spawn_in_namespace(
        Path::new("/usr/bin/qemu-system-x86_64"),
        &vm.qemu_args(),
        &work().join(format!("{}.qemu.log", vm.name)),
    )?;
    Ok(())
}

/// Start `vm`: behind its simulated BMC (which starts QEMU itself and owns it from then
/// on), as a domain of the lab's libvirtd (Redfish), or as a plain QEMU process.
fn power_on(bmc_kind: Option<&str>, vm: &VmSpec, w: &Path) -> anyhow::Result<()> {
    match bmc_kind {
        Some("ipmi") => {
            spawn_in_namespace(
                Path::new("/usr/bin/ipmi_sim"),
                &bmc::prepare(vm, w)?,
                &w.join(format!("{}.bmc.log", vm.name)),
            )?;
        }
        Some(_) => redfish::start_vm(w, vm)?,
        None => {
            spawn_in_namespace(
                Path::new("/usr/bin/qemu-system-x86_64"),
                &vm.qemu_args(),
                &w.join(format!("{}.qemu.log", vm.name)),
            )?;
        }
    }
    Ok(())
}

/// Largest VM index `add_vm` goes to (taps ltapN, BMC ports 623N).
const MAX_INDEX: usize = 20;
/// Disk size of an added (unknown) VM: not the lab hosts' 1 GiB, so a test can tell whose
/// facts it reads.
pub const ADDED_DISK_GIB: u64 = 2;

/// Start one more VM in the running lab, with a MAC no config names (`new-N`, MAC
/// 52:54:00:00:c1:NN): provd treats it as an unknown machine (the lab site discovers
/// them). Behind a simulated BMC when the lab has them. Returns its spec and, with a BMC,
/// the `--bmc` argument for `provd hosts adopt`.
pub fn add_vm(firmware: Firmware) -> anyhow::Result<(VmSpec, Option<String>)> {
    let path = work().join("lab.json");
    let bytes = std::fs::read(&path).with_context(|| format!("no lab is running (no {})", path.display()))?;
    let mut state: LabState = serde_json::from_slice(&bytes)?;
    let index = state.vms.iter().map(|v| v.index).max().unwrap_or(0).max(MAX_VMS) + 1;
    if index > MAX_INDEX {
        bail!(
            "the lab runs {} VMs already; `provd lab down` and start again",
            state.vms.len()
        );
    }
    let mac: MacAddr = format!("52:54:00:00:c1:{index:02x}").parse().expect("valid MAC");
    let spec = VmSpec::new(index, firmware, mac, &format!("new-{index}"), &work());
    ip(&["-n", NAMESPACE, "tuntap", "add", &spec.tap, "mode", "tap"])?;
    ip(&["-n", NAMESPACE, "link", "set", &spec.tap, "master", BRIDGE, "up"])?;
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&spec.disk)
        .arg(format!("{ADDED_DISK_GIB}G")))?;
    if let Some(vars) = &spec.vars {
        std::fs::copy(vm::OVMF_VARS, vars).context("copying the OVMF variable store")?;
    }
    power_on(state.bmc.as_deref(), &spec, &work())?;
    let adopt_bmc = match (state.bmc.as_deref(), &state.bmc_fingerprint) {
        (Some("ipmi"), _) => Some(format!("ipmi,127.0.0.1:{},{}", bmc::lan_port(index), bmc::CREDENTIALS)),
        (Some(_), Some(fp)) => Some(format!(
            "redfish,https://127.0.0.1:{},{},fingerprint={fp},system={}",
            redfish::PORT,
            redfish::CREDENTIALS,
            redfish::system_id(&spec)
        )),
        _ => None,
    };
    state.vms.push(spec.clone());
    state.powered_on.push(crate::clock::unix_now());
    std::fs::write(&path, serde_json::to_vec_pretty(&state)?)?;
    Ok((spec, adopt_bmc))
}

/// Remove everything `up` made. Safe to run at any time, any number of times.
pub fn down() -> anyhow::Result<()> {
    // Every process in the namespace (provd, QEMU) goes, then the namespace with its bridge
    // and taps, then the work directory.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", NAMESPACE]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Ok(bytes) = std::fs::read(work().join("lab.json"))
        && let Ok(state) = serde_json::from_slice::<LabState>(&bytes)
    {
        unsafe { libc::kill(state.provd_pid as i32, libc::SIGKILL) };
        for vm in &state.vms {
            if let Some(pid) = std::fs::read_to_string(&vm.pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    if Path::new(&format!("/var/run/netns/{NAMESPACE}")).exists() {
        ip(&["netns", "del", NAMESPACE])?;
    }
    let _ = std::fs::remove_dir_all(work());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_work_directory_is_where_only_root_makes_entries() {
        let parent = std::path::Path::new(WORK_DIR).parent().unwrap();
        assert!(!parent.starts_with("/tmp") && !parent.starts_with("/var/tmp"));
        // On a machine where the lab runs (as root), the parent is root's alone.
        if unsafe { libc::geteuid() } == 0 {
            assert!(only_root_writes(parent), "{}", parent.display());
        }
        assert!(
            !only_root_writes(std::path::Path::new("/tmp")),
            "/tmp is world-writable"
        );
        assert!(!only_root_writes(std::path::Path::new("/nonexistent-provd")));
    }
}
