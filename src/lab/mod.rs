//! The QEMU PXE lab: real BIOS and UEFI virtual machines network-boot against provd inside a
//! private network namespace, install through the mini-installer (lab/installer), and come
//! back to boot from their disks.
//!
//! `up` creates namespace `provd-lab` with bridge `labbr0` and one tap per VM, starts
//! `provd serve` there with the lab site config, boots the VMs (TCG), shows each VM's
//! progress as provd's journal and the VM's console report it, and prints a summary (also
//! written to `/var/lib/provd-lab/summary.json`). The lab keeps running until `down`, which
//! removes every namespace, process and file `up` made. Nothing touches a real network.
//!
//! With `--image`, the VMs become hypervisors on the image profile's data-center network:
//! when it bonds two ports, each VM gets two NICs on a port channel of the lab's switch
//! (`switch`) instead of a tap on provd's bridge, and the lab's BIND (`dns`) holds the names
//! provd publishes, which the namespace resolves through.

pub mod bmc;
pub mod dns;
pub mod netns;
pub mod prerequisites;
pub mod progress;
pub mod redfish;
pub mod report;
pub mod switch;
pub mod vm;

use crate::config::Config;
use crate::journal::BootEvent;
use crate::mac::MacAddr;
use anyhow::{Context, bail};
pub use netns::{BRIDGE, NAMESPACE};
use netns::{ip, run, spawn_in_namespace};
use progress::{Progress, Stage};
pub use report::VmSummary;
use report::summary;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use vm::{Firmware, VmSpec};
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
    /// Deploy this OS image (a name under `<assets>/images/`) instead of the mini-install:
    /// the lab hosts take the lab config's profile with `image = NAME`.
    pub image: Option<String>,
    /// Give the VMs a server's NICs and disks instead of virtio (`vm::Hardware::for_vm`).
    pub hardware: bool,
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

fn fetch_events(api: &str) -> anyhow::Result<Vec<BootEvent>> {
    Ok(serde_json::from_str(&api_get(api, "/api/events")?)?)
}

/// Hosts provd's pool has verified (status `ready`), with when their record became ready.
fn fetch_ready(api: &str) -> anyhow::Result<Vec<(MacAddr, u64)>> {
    use crate::inventory::Status;
    let hosts: Vec<crate::inventory::HostRecord> = serde_json::from_str(&api_get(api, "/api/hosts")?)?;
    Ok(hosts
        .into_iter()
        .filter(|h| h.status == Status::Ready)
        .map(|h| {
            let at = h
                .history
                .iter()
                .rev()
                .find(|e| e.status == Status::Ready)
                .map_or(0, |e| e.at);
            (h.mac, at)
        })
        .collect())
}

/// GET `path` from the lab provd's admin API (inside the namespace), as text.
fn api_get(api: &str, path: &str) -> anyhow::Result<String> {
    let url = format!("http://{api}{path}");
    // The lab's provd keeps its admin API token in the lab's state directory.
    let token = crate::http::auth::read_token(&crate::http::auth::token_path(&work().join("state")))?;
    netns::in_namespace(move || -> anyhow::Result<String> {
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
        Ok(body)
    })?
}

/// Where `vm` is: provd's journal and the VM's console, and for a VM that deploys an image,
/// whether the pool has verified it (`ready`: the MACs `fetch_ready` found, when it was asked).
fn progress_of(vm: &VmSpec, events: &[BootEvent], ready: &[(MacAddr, u64)]) -> Progress {
    let mine: Vec<BootEvent> = events.iter().filter(|e| e.mac == Some(vm.mac)).cloned().collect();
    let console = std::fs::read(&vm.serial_log)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let mut p = progress::derive(&mine, &console, vm.firmware);
    p.wants_ready = vm.size == vm::Size::Hypervisor;
    if p.wants_ready
        && p.at(Stage::Installed).is_some()
        && let Some((_, at)) = ready.iter().find(|(mac, _)| *mac == vm.mac)
    {
        p.reached
            .push((Stage::Ready, *at, "provd's pool verified its libvirt over TLS".into()));
    }
    p
}

/// What `up` will build, decided from the options and the lab config before anything is
/// touched: provd's address on the bridge and each VM's firmware.
#[derive(Debug, PartialEq)]
pub struct UpPlan {
    pub address: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub firmwares: Vec<Firmware>,
    /// With `--image`: the lab config's profile that deploys it.
    pub image_profile: Option<String>,
    /// How the VMs meet the lab's switch: bonded when the image profile's network bonds two
    /// ports in 802.3ad (the VMs get two NICs, the switch an LACP bond per VM).
    pub uplinks: netns::Uplinks,
    /// Bonded: the profile's two member ports, which each lab host's two NICs are.
    pub bond_members: Option<[String; 2]>,
}

/// Bonded uplinks when `profile`'s network has an 802.3ad bond of two ports (which the lab's
/// switch trunks the model's VLANs to), unless the VMs run under libvirt (the Redfish mode
/// defines one NIC per VM).
fn uplinks_for(config: &Config, profile: Option<&str>, bmc: Option<&str>) -> (netns::Uplinks, Option<[String; 2]>) {
    let net = profile
        .and_then(|p| config.profiles.get(p))
        .and_then(|p| p.network.as_ref());
    let bond = net.and_then(|n| {
        n.bonds
            .iter()
            .find(|b| b.mode == crate::netmodel::BondMode::Lacp && b.members.len() == 2)
    });
    match (net, bond, bmc) {
        (Some(net), Some(bond), None | Some("ipmi")) => {
            let mut trunk: Vec<u16> = net.vlans.iter().filter(|v| v.on == bond.name).map(|v| v.id).collect();
            trunk.sort_unstable();
            trunk.dedup();
            let tenant_vlan = net
                .bridge_for(crate::netmodel::Role::Tenant)
                .and_then(|b| net.vlans.iter().find(|v| v.device() == b.on))
                .map(|v| v.id);
            (
                netns::Uplinks::Bonded { trunk, tenant_vlan },
                Some([bond.members[0].clone(), bond.members[1].clone()]),
            )
        }
        _ => (netns::Uplinks::One, None),
    }
}

/// Check the options against the config: a clear refusal for each thing that cannot work.
pub fn plan(opts: &UpOptions, config: &Config) -> anyhow::Result<UpPlan> {
    if opts.vms == 0 || opts.vms > MAX_VMS {
        bail!("--vms must be 1 to {MAX_VMS} (lab/lab.toml defines {MAX_VMS} lab hosts)");
    }
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
    match opts.bmc.as_deref() {
        None | Some("ipmi") | Some("redfish") => {}
        Some(other) => bail!("--bmc {other:?}: ipmi or redfish"),
    }
    let image_profile = match &opts.image {
        None => None,
        Some(image) => {
            let profile = config
                .profiles
                .values()
                .find(|p| p.image.as_deref() == Some(image.as_str()))
                .with_context(|| {
                    format!(
                        "--image {image}: no profile in the lab config deploys it (a profile with image = {image:?})"
                    )
                })?;
            Some(profile.name.clone())
        }
    };
    if opts.hardware && image_profile.is_none() {
        bail!(
            "--hardware needs --image: the mini-install's installer (the cloud kernel) has virtio drivers only; an image profile's installer is the hardware one"
        );
    }
    if opts.hardware && opts.bmc.as_deref() == Some("redfish") {
        bail!("--hardware with --bmc redfish: the Redfish lab's libvirt domains have virtio devices only");
    }
    if image_profile.is_some() && site.domain().is_none() {
        bail!("an image lab names its hypervisors in DNS: the lab site's subnet needs a domain");
    }
    let (uplinks, bond_members) = uplinks_for(config, image_profile.as_deref(), opts.bmc.as_deref());
    let firmwares = (1..=opts.vms)
        .map(|i| vm::firmware_for(&opts.firmware, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    if opts.bmc.as_deref() == Some("redfish")
        && let Some(f) = firmwares.iter().find(|f| !matches!(f, Firmware::Bios | Firmware::Uefi))
    {
        bail!(
            "--bmc redfish: the emulated BMC's VMs are libvirt domains, which the lab defines as bios or uefi only (not {})",
            f.name()
        );
    }
    Ok(UpPlan {
        address: listen.address,
        prefix_len: subnet.prefix.prefix_len(),
        firmwares,
        image_profile,
        uplinks,
        bond_members,
    })
}

pub fn up(opts: UpOptions) -> anyhow::Result<bool> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the lab needs root (network namespaces, taps): sudo provd lab up");
    }
    if netns::exists() {
        bail!("a lab is already running (namespace {NAMESPACE}); `provd lab down` first");
    }
    let config = crate::config::load(&opts.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = plan(&opts, &config)?;
    let firmwares = plan.firmwares.clone();
    prerequisites::ensure(&firmwares, opts.bmc.as_deref(), opts.install_packages)?;
    prerequisites::ensure_assets(&config, &firmwares, plan.image_profile.is_some())?;
    if let Some(image) = &opts.image {
        crate::assets::images::Catalog::load(&config.daemon.assets_dir, [image.as_str()]).map_err(|e| {
            anyhow::anyhow!(
                "{e}\nBuild it first: lab/images/{image}.sh {}",
                config
                    .daemon
                    .assets_dir
                    .join(crate::assets::images::IMAGES_DIR)
                    .display()
            )
        })?;
    }

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

    // Network: namespace, bridge with provd's address, one tap per VM (or the switch's).
    ip(&["netns", "add", NAMESPACE])?;
    if let Err(e) = netns::ip_all(&netns::network_commands(
        plan.address,
        plan.prefix_len,
        opts.vms,
        &plan.uplinks,
    )) {
        let _ = down();
        return Err(e);
    }

    let result = start_and_watch(&opts, &config, &plan, &w);
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

/// provd in the lab's namespace, once its log says DHCP listens (20 s at most).
fn start_provd(provd: &Path, args: &[String], provd_log: &Path) -> anyhow::Result<u32> {
    let provd_pid = spawn_in_namespace(provd, args, provd_log)?;
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(provd_log).unwrap_or_default();
        if log.contains("DHCP listening") {
            return Ok(provd_pid);
        }
        if start.elapsed() > Duration::from_secs(20) || !Path::new(&format!("/proc/{provd_pid}")).exists() {
            bail!("provd did not start; its log ({}):\n{log}", provd_log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A UEFI VM's own copy of its firmware's variable store (Secure Boot VMs: the one with
/// Microsoft's keys enrolled).
fn copy_vars(spec: &VmSpec) -> anyhow::Result<()> {
    if let (Some(vars), Some((_, template))) = (&spec.vars, spec.firmware.ovmf()) {
        std::fs::copy(template, vars).with_context(|| format!("copying the OVMF variable store {template}"))?;
    }
    Ok(())
}

/// Each VM's disk (and UEFI variable store), then power on (through its BMC with --bmc);
/// the VMs and when each was powered on.
fn create_and_power_on(specs: Vec<VmSpec>, bmc: Option<&str>, w: &Path) -> anyhow::Result<(Vec<VmSpec>, Vec<u64>)> {
    let mut vms = Vec::new();
    let mut powered_on = Vec::new();
    for spec in specs {
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&spec.disk)
            .arg(spec.size.disk()))?;
        copy_vars(&spec)?;
        power_on(bmc, &spec, w)?;
        powered_on.push(crate::clock::unix_now());
        vms.push(spec);
    }
    Ok((vms, powered_on))
}

fn start_and_watch(opts: &UpOptions, config: &Config, plan: &UpPlan, w: &Path) -> anyhow::Result<bool> {
    let firmwares = &plan.firmwares[..];
    let api = config.daemon.api_listen.to_string();
    let provd = std::env::current_exe()?;
    let mut args: Vec<String> = vec!["serve".into()];
    let site = config.sites.values().next().expect("checked");
    // The VMs-to-be (pure: names, MACs, files), so their BMCs can be set up first.
    let specs: Vec<VmSpec> = firmwares
        .iter()
        .enumerate()
        .map(|(i, fw)| {
            let size = match plan.image_profile {
                Some(_) => vm::Size::Hypervisor,
                None => vm::Size::MiniInstaller,
            };
            let hardware = if opts.hardware {
                vm::Hardware::for_vm(i + 1)
            } else {
                vm::Hardware::Virtio
            };
            let spec = VmSpec::new(i + 1, *fw, site.hosts[i].mac, &site.hosts[i].hostname, w)
                .sized(size)
                .with_hardware(hardware);
            match plan.uplinks {
                netns::Uplinks::Bonded { .. } => spec.bonded(),
                netns::Uplinks::One => spec,
            }
        })
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
    let host_keys = |hostname: &str| -> toml::Table {
        let mut keys = toml::Table::new();
        if let Some(bmc) = bmc_of(hostname) {
            keys.insert("bmc".into(), bmc.into());
        }
        if let Some(profile) = &plan.image_profile {
            keys.insert("profile".into(), profile.clone().into());
        }
        // A Secure Boot VM is a Secure Boot host: provd answers it with the signed chain.
        if specs
            .iter()
            .any(|v| v.name == hostname && v.firmware == Firmware::SecureBoot)
        {
            keys.insert("secure_boot".into(), true.into());
        }
        // Which of the host's NICs are its profile's bonded ports.
        if let (Some([first, second]), Some(vm)) = (&plan.bond_members, specs.iter().find(|v| v.name == hostname))
            && let Some(nic2) = &vm.second_nic
        {
            let port = |name: &str, mac: MacAddr| -> toml::Value {
                let mut t = toml::Table::new();
                t.insert("name".into(), name.into());
                t.insert("mac".into(), mac.to_string().into());
                t.into()
            };
            keys.insert(
                "ports".into(),
                toml::Value::Array(vec![port(first, vm.mac), port(second, nic2.mac)]),
            );
        }
        keys
    };
    // An image lab's hypervisors are named in the lab's BIND, which provd keeps current and
    // the namespace resolves through: the pool reaches each at qemu+tls://<fqdn>/system by
    // the name provd published (the namespace's /etc/hosts names only localhost).
    let mut site_keys = toml::Table::new();
    if plan.image_profile.is_some() {
        let domain = site.domain().expect("checked by plan");
        let mut networks: Vec<ipnet::Ipv4Net> = site.subnets.iter().map(|s| s.prefix).collect();
        networks.extend(site.networks.values().map(|n| n.prefix));
        let lab_dns = dns::start(
            &w.join("dns"),
            domain,
            site.server_address,
            &networks,
            spawn_in_namespace,
        )?;
        site_keys.insert("dns".into(), lab_dns.site_table(site.server_address).into());
        netns::write_resolver(site.server_address, domain)?;
    }
    let configs = vec![bmc::effective_config(
        &config.files,
        &w.join("config"),
        opts.bmc.is_some().then_some(secrets.as_path()),
        host_keys,
        &site_keys,
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
    let provd_pid = start_provd(&provd, &args, &provd_log)?;
    // Bonded uplinks: the switch comes up before any VM boots from the network through it.
    if let netns::Uplinks::Bonded { trunk, tenant_vlan } = &plan.uplinks {
        let spec = switch::SwitchSpec {
            vms: specs.len(),
            trunk: trunk.clone(),
            tenant_vlan: *tenant_vlan,
            dir: w.join("switch"),
        };
        switch::start(&spec, &config.daemon.assets_dir, spawn_in_namespace)?;
    }
    let (vms, powered_on) = create_and_power_on(specs, opts.bmc.as_deref(), w)?;
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

    let kinds: Vec<String> = Firmware::ALL
        .iter()
        .map(|f| (f, firmwares.iter().filter(|x| *x == f).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(f, n)| format!("{n} {}", f.name()))
        .collect();
    println!(
        "provd lab: {} VM(s) ({}) on {BRIDGE} in namespace {NAMESPACE}; provd at {} (log {})",
        state.vms.len(),
        kinds.join(", "),
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
        let ready = fetch_ready(&state.api).unwrap_or_default();
        summaries = Vec::new();
        for (i, vm) in state.vms.iter().enumerate() {
            let p = progress_of(vm, &events, &ready);
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
    // disk", and an image hypervisor its first-boot lines a moment after the pool verified
    // it: give the consoles time to show them (`Progress::settling`).
    let grace = Instant::now();
    while grace.elapsed() < Duration::from_secs(120)
        && state
            .vms
            .iter()
            .zip(&summaries)
            .any(|(vm, s)| s.progress.settling(vm.firmware))
    {
        std::thread::sleep(Duration::from_secs(1));
        let events = fetch_events(&state.api).unwrap_or_default();
        let ready = fetch_ready(&state.api).unwrap_or_default();
        summaries = state
            .vms
            .iter()
            .enumerate()
            .map(|(i, vm)| summary(vm, state.powered_on[i], progress_of(vm, &events, &ready)))
            .collect();
    }

    println!();
    print!("{}", report::table(&summaries, start.elapsed() > timeout));
    std::fs::write(work().join("summary.json"), serde_json::to_vec_pretty(&summaries)?)?;
    let all_ok = summaries.iter().all(|s| s.ok);
    if !all_ok {
        for (vm, s) in state.vms.iter().zip(&summaries) {
            if !s.ok {
                let console = std::fs::read(&vm.serial_log)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                println!(
                    "--- last console lines of {} ({}) ---\n{}",
                    vm.name,
                    vm.serial_log.display(),
                    report::console_tail(&console, 15)
                );
            }
        }
    }
    Ok(all_ok)
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
    let ready = fetch_ready(&state.api).unwrap_or_default();
    for vm in &state.vms {
        let running = std::fs::read_to_string(&vm.pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(alive);
        let p = progress_of(vm, &events, &ready);
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
    netns::ip_all(&netns::tap_commands(&spec.tap))?;
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&spec.disk)
        .arg(format!("{ADDED_DISK_GIB}G")))?;
    copy_vars(&spec)?;
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
    // Every process the lab started (provd, QEMU, BMCs) goes, then the namespace with its
    // bridge and taps (and whatever still runs there), then the work directory.
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
    netns::remove()?;
    let _ = std::fs::remove_dir_all(work());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab_config() -> Config {
        crate::config::load(&[PathBuf::from("lab/lab.toml")]).unwrap()
    }

    fn options(vms: usize, firmware: &str, bmc: Option<&str>) -> UpOptions {
        UpOptions {
            vms,
            firmware: firmware.into(),
            config: vec![PathBuf::from("lab/lab.toml")],
            timeout: Duration::from_secs(1),
            install_packages: false,
            remove_after: true,
            bmc: bmc.map(String::from),
            image: None,
            hardware: false,
        }
    }

    #[test]
    fn the_plan_puts_provd_on_the_bridge_and_alternates_firmwares() {
        let p = plan(&options(3, "mixed", None), &lab_config()).unwrap();
        assert_eq!(
            p,
            UpPlan {
                address: std::net::Ipv4Addr::new(10, 200, 0, 1),
                prefix_len: 24,
                firmwares: vec![Firmware::Bios, Firmware::Uefi, Firmware::Bios],
                image_profile: None,
                uplinks: netns::Uplinks::One,
                bond_members: None,
            }
        );
        let uefi = plan(&options(2, "uefi", Some("redfish")), &lab_config()).unwrap();
        assert_eq!(uefi.firmwares, [Firmware::Uefi, Firmware::Uefi]);
        let listed = plan(&options(2, "bios,secureboot", None), &lab_config()).unwrap();
        assert_eq!(listed.firmwares, [Firmware::Bios, Firmware::SecureBoot]);
        let e = plan(&options(2, "bios,both", None), &lab_config())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"both\" is not a firmware"), "{e}");
        let e = plan(&options(1, "secureboot", Some("redfish")), &lab_config())
            .unwrap_err()
            .to_string();
        assert!(e.contains("bios or uefi only (not secureboot)"), "{e}");
    }

    #[test]
    fn an_image_lab_takes_the_profile_that_deploys_it_or_says_there_is_none() {
        let mut o = options(2, "mixed", None);
        o.image = Some("debian12-kvm".into());
        let p = plan(&o, &lab_config()).unwrap();
        assert_eq!(p.image_profile.as_deref(), Some("lab-debian12-kvm"));
        // Its network bonds two ports with LACP: two NICs per VM, the switch trunks the
        // profile's VLANs.
        assert_eq!(
            p.uplinks,
            netns::Uplinks::Bonded {
                trunk: vec![20, 100],
                tenant_vlan: Some(100)
            }
        );
        assert_eq!(p.bond_members, Some(["uplink0".to_string(), "uplink1".to_string()]));
        // Under libvirt (Redfish) a VM has one NIC: not bonded.
        o.bmc = Some("redfish".into());
        assert_eq!(plan(&o, &lab_config()).unwrap().uplinks, netns::Uplinks::One);
        o.bmc = None;
        o.image = Some("el7-vintage".into());
        let e = plan(&o, &lab_config()).unwrap_err().to_string();
        assert!(e.contains("no profile in the lab config deploys it"), "{e}");
    }

    #[test]
    fn the_plan_refuses_what_cannot_work_and_says_why() {
        let cfg = lab_config();
        let refusal = |o: UpOptions| plan(&o, &cfg).unwrap_err().to_string();
        assert!(refusal(options(0, "both", None)).contains("--vms must be 1 to 8"));
        assert!(refusal(options(MAX_VMS + 1, "both", None)).contains("--vms must be 1 to 8"));
        assert!(refusal(options(1, "both", Some("smbus"))).contains("ipmi or redfish"));
        // A config whose site does not listen on the lab's bridge.
        let mut other = lab_config();
        let site = other.sites.values_mut().next().unwrap();
        site.listen[0].interface = "eth0".into();
        assert!(
            plan(&options(1, "both", None), &other)
                .unwrap_err()
                .to_string()
                .contains("must listen on labbr0 (it listens on eth0)")
        );
        // Fewer hosts than VMs.
        let mut few = lab_config();
        few.sites.values_mut().next().unwrap().hosts.truncate(1);
        assert!(
            plan(&options(2, "both", None), &few)
                .unwrap_err()
                .to_string()
                .contains("defines 1 hosts; --vms 2")
        );
    }

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
