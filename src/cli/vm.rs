//! `provd vm`: VM lifecycle on any libvirt URI (default qemu:///system).

use crate::vm::clone::CloneRequest;
use crate::vm::{self, Hypervisor};
use clap::Subcommand;
use std::process::ExitCode;

pub use super::Target;

/// What an operator does to a VM after its first day: power, autostart, devices and size.
#[derive(Subcommand)]
pub enum DayTwoCommand {
    /// Ask a running domain to shut down (ACPI) and wait for it; after the wait, power it
    /// off with --force, or fail (exit 1) leaving it running.
    Shutdown {
        name: String,
        /// Seconds to wait for the guest.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
        /// Power it off when the wait is over.
        #[arg(long)]
        force: bool,
        /// One JSON object: the domain and how it stopped ("graceful" or "forced").
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Ask a running domain's guest to reboot (ACPI; the guest decides, `vm reset` forces it).
    Reboot {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Reset a running or paused domain at once, like its reset button.
    Reset {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Freeze a running domain's vCPUs (memory stays allocated).
    Pause {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Let a paused domain run again.
    Resume {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Add a new empty disk (live when the VM runs, and in its definition).
    AttachDisk {
        name: String,
        #[arg(long)]
        size_gib: u32,
        /// Where the new disk file goes (a directory a libvirt storage pool covers).
        #[arg(long, default_value = crate::config::DEFAULT_IMAGE_DIR)]
        dir: std::path::PathBuf,
        #[arg(long, default_value = "qcow2")]
        format: String,
        #[arg(long, default_value = "virtio")]
        bus: String,
        #[command(flatten)]
        target: Target,
    },
    /// Detach the disk named DEV (vdb, ...); its file stays. Live, the guest must release it.
    DetachDisk {
        name: String,
        dev: String,
        #[command(flatten)]
        target: Target,
    },
    /// Add a NIC on a bridge of the hypervisor, with a fresh MAC.
    AttachNic {
        name: String,
        #[arg(long)]
        bridge: String,
        #[arg(long, default_value = "virtio")]
        model: String,
        #[command(flatten)]
        target: Target,
    },
    /// Detach the NIC with this MAC.
    DetachNic {
        name: String,
        mac: crate::mac::MacAddr,
        #[command(flatten)]
        target: Target,
    },
    /// Set the vCPUs (live when running), up to the definition's maximum.
    SetVcpus {
        name: String,
        vcpus: u32,
        #[command(flatten)]
        target: Target,
    },
    /// Set the memory in MiB (the balloon, live when running), up to the definition's maximum.
    SetMemory {
        name: String,
        mib: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Start the domain whenever its hypervisor's libvirtd starts (--off: no longer).
    Autostart {
        name: String,
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Snapshots of a VM, running or not: create, list, revert, delete.
    Snapshot {
        #[command(subcommand)]
        command: super::snapshot::SnapshotCommand,
    },
    /// Templates across a site's hypervisors (`push`).
    Template {
        #[command(subcommand)]
        command: super::template::TemplateCommand,
    },
    /// Every domain with its state, vCPUs and memory.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
        /// Every domain on the site's ready hypervisors in provd's pool (drained ones too:
        /// their VMs are still somewhere), instead of --connect's.
        #[arg(long)]
        site: Option<String>,
        /// With --site: the libvirt client credentials (as for `deploy --site`).
        #[arg(long)]
        pkipath: Option<std::path::PathBuf>,
        #[command(flatten)]
        server: super::ServerTarget,
    },
    /// One domain (`--xml` for its libvirt XML).
    Info {
        name: String,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        xml: bool,
    },
    /// The hypervisor: CPUs, memory, free memory, domains.
    HostInfo {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Create a VM: disks from a disk profile (the first from --image if given), NICs from a
    /// NIC profile ([vm] in the site config; "default" is Salt Virt's: one 8 GiB qcow2 virtio
    /// disk, eth0 bridged to br0), then define it (and start it with --start). On a remote
    /// hypervisor (qemu+tls://HOST/...) the disks are made by its libvirt and the image,
    /// converted here, is streamed to it: a template's first copy needs no ssh.
    Init {
        name: String,
        /// Virtual CPUs.
        cpus: u32,
        /// Memory in MiB.
        memory: u64,
        /// A disk image to copy into the first disk.
        #[arg(long)]
        image: Option<std::path::PathBuf>,
        #[arg(long, default_value = "default")]
        disk_profile: String,
        #[arg(long, default_value = "default")]
        nic_profile: String,
        /// A VNC console on 127.0.0.1 (autoport). VNC has no authentication.
        #[arg(long)]
        vnc: bool,
        #[arg(long)]
        start: bool,
        /// libvirt domain type: kvm (default) or qemu (TCG, where KVM is not usable).
        #[arg(long)]
        domain_type: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Site config with [vm] profiles; without one, the built-in defaults are used.
        #[arg(long = "config", short = 'c', env = "PROVD_CONFIG")]
        config: Vec<std::path::PathBuf>,
    },
    /// Make a shut-off domain into a template: virt-sysprep (libguestfs) removes what makes
    /// it one machine (machine-id, SSH host keys, MAC-bound network config, DHCP leases, logs,
    /// history; `provd vm sysprep --help` lists all), then provd marks it as a template.
    /// libguestfs uses its direct backend unless LIBGUESTFS_BACKEND says otherwise; set
    /// LIBGUESTFS_BACKEND_SETTINGS=force_tcg where KVM is unusable.
    Sysprep {
        template: String,
        #[command(flatten)]
        target: Target,
    },
    /// Clone a shut-off domain (virt-clone's semantics): new name, UUID, MACs, disk files and
    /// NVRAM; graphics on autoport; read-only, shareable and CD-ROM disks shared. --linked
    /// makes qcow2 overlays on the template's disks (instant; the template is then protected
    /// while clones depend on it); --full (default) copies them. All or nothing.
    Clone {
        template: String,
        name: String,
        #[arg(long, conflicts_with = "full")]
        linked: bool,
        #[arg(long)]
        full: bool,
        /// Where the template is (a libvirt URI); same as --connect.
        #[arg(long)]
        hypervisor: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Clone a template onto the hypervisor with the most free memory that fits, give the VM
    /// its first-boot identity (cloud-init NoCloud data served by the running provd, found
    /// through the SMBIOS serial), and start it.
    Deploy(super::deploy::DeployArgs),
    /// Live-migrate a running domain to DEST (a libvirt URI, e.g.
    /// qemu+tls://hv02.example/system?pkipath=DIR): peer-to-peer and tunnelled through
    /// libvirt's own connection, so over TLS when DEST is qemu+tls. The source hypervisor
    /// connects to DEST itself with its own client certificate (the query part of DEST, e.g.
    /// pkipath, is provd's and is not passed on). Refused when DEST lacks the memory.
    /// Move a running domain live from the source (-C) to DEST, peer-to-peer and tunnelled
    /// through libvirt's TLS. With --site, DEST may be a pool hypervisor's name, and the
    /// memory crosses DEST's migration network (its IPAM address on the migration bridge)
    /// when it has one, while provd reads DEST where the pool reaches it.
    Migrate {
        name: String,
        /// A libvirt URI, or with --site the name of one of the site's ready hypervisors.
        dest: String,
        /// The site whose pool knows DEST (its URI, and its migration-network address from
        /// the running provd's IPAM).
        #[arg(long)]
        site: Option<String>,
        /// The URI the source libvirtd dials instead (default with --site: DEST's
        /// migration-network address, qemu+tls://ADDRESS/system, when it has one).
        #[arg(long)]
        via: Option<String>,
        /// With --site: the libvirt client credentials to reach DEST with (as for deploy).
        #[arg(long)]
        pkipath: Option<std::path::PathBuf>,
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        server: super::ServerTarget,
    },
    /// Start a shut-off domain.
    Start {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Ask a running domain to shut down (ACPI).
    Stop {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Power a running domain off at once.
    Destroy {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// The day-2 verbs of a VM that exists (power, autostart, devices, size).
    #[command(flatten)]
    DayTwo(DayTwoCommand),
    /// Undefine a domain and delete its own disks (not shared, read-only or CD-ROM ones).
    Purge {
        name: String,
        /// Power a running domain off first.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Where the domain's graphical console listens (VNC or SPICE).
    Console {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a shut-off domain's definition (its disks stay).
    Undefine {
        name: String,
        #[command(flatten)]
        target: Target,
    },
}

pub fn run(cmd: VmCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        VmCommand::Snapshot { command } => super::snapshot::run(command)?,
        VmCommand::Template { command } => {
            if !super::template::run(command)? {
                return Ok(ExitCode::FAILURE);
            }
        }
        VmCommand::List {
            site: Some(site),
            pkipath,
            json,
            server,
            ..
        } => list_site(&server, &site, pkipath.as_deref(), json)?,
        VmCommand::List { target, json, .. } => list(target.uri(), json)?,
        VmCommand::Info {
            name,
            target,
            json,
            xml,
        } => info(target.uri(), &name, json, xml)?,
        VmCommand::HostInfo { target, json } => host_info(target.uri(), json)?,
        VmCommand::Init {
            name,
            cpus,
            memory,
            image,
            disk_profile,
            nic_profile,
            vnc,
            start,
            domain_type,
            target,
            config,
        } => init(
            &vm::InitRequest {
                name: &name,
                vcpus: cpus,
                memory_mib: memory,
                image: image.as_deref(),
                disks: &[],
                nics: &[],
                vnc,
                start,
                domain_type: domain_type.as_deref(),
            },
            &config,
            &disk_profile,
            &nic_profile,
            target.uri(),
        )?,
        VmCommand::Sysprep { template, target } => sysprep(target.uri(), &template)?,
        VmCommand::Clone {
            template,
            name,
            linked,
            full: _,
            hypervisor,
            target,
        } => clone(hypervisor.as_deref().unwrap_or(target.uri()), &template, &name, linked)?,
        VmCommand::Deploy(args) => return super::deploy::run(args),
        VmCommand::Migrate {
            name,
            dest,
            site,
            via,
            pkipath,
            target,
            server,
        } => {
            let (dest, found_via) = match &site {
                None => (dest, None),
                Some(site) => {
                    let pool = super::hypervisors::pool_hosts(&server, site, pkipath.as_deref(), true)?;
                    let api = server.api()?;
                    let ipam: Vec<crate::ipam::Assignment> = api.require(api.get("/api/ipam")?)?;
                    migration_target(&dest, site, &pool, &ipam)?
                }
            };
            let via = via.or(found_via);
            let src = Hypervisor::connect(target.uri())?;
            eprintln!(
                "{name}: migrating live to {} (peer-to-peer, tunnelled){}",
                vm::deploy::uri_for_source(&dest),
                via.as_deref().map(|v| format!(", memory over {v}")).unwrap_or_default()
            );
            let d = vm::deploy::migrate_live(&src, &name, &dest, via.as_deref())?;
            println!("{name}: now {} on {}", d.state, vm::deploy::uri_for_source(&dest));
        }
        VmCommand::Start { name, target } => {
            Hypervisor::connect(target.uri())?.start(&name)?;
            println!("{name}: started");
        }
        VmCommand::Stop { name, target } => {
            Hypervisor::connect(target.uri())?.stop(&name)?;
            println!("{name}: shutdown requested (the guest decides when; `provd vm destroy` forces it)");
        }
        VmCommand::DayTwo(cmd) => day_two(cmd)?,
        VmCommand::Destroy { name, target } => {
            Hypervisor::connect(target.uri())?.destroy(&name)?;
            println!("{name}: powered off");
        }
        VmCommand::Purge { name, force, target } => {
            let removed = Hypervisor::connect(target.uri())?.purge(&name, force)?;
            println!("{name}: undefined; removed {} disk(s)", removed.len());
            for f in removed {
                println!("  {}", f.display());
            }
        }
        VmCommand::Console { name, target } => {
            let (kind, addr) = Hypervisor::connect(target.uri())?.console(&name)?;
            println!("{kind}://{addr}");
            if kind == "vnc" {
                eprintln!("warning: VNC has no authentication; reach it through an SSH tunnel, never expose it");
            }
        }
        VmCommand::Undefine { name, target } => {
            Hypervisor::connect(target.uri())?.undefine(&name)?;
            println!("{name}: undefined (its disks were left in place)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `provd vm list` on one hypervisor.
/// DEST of a migration at `site`, as the pool (`pool`: host names and URIs) and IPAM know it:
/// its URI (DEST itself when it is one), and the source's URI for its migration-network
/// address when it has one. A name the pool does not know is refused.
fn migration_target(
    dest: &str,
    site: &str,
    pool: &[(String, String)],
    ipam: &[crate::ipam::Assignment],
) -> anyhow::Result<(String, Option<String>)> {
    let bare = |u: &str| vm::deploy::uri_for_source(u).to_string();
    let found = pool.iter().find(|(host, uri)| host == dest || bare(uri) == bare(dest));
    let Some((host, uri)) = found else {
        if dest.contains("://") {
            return Ok((dest.to_string(), None));
        }
        let known: Vec<&str> = pool.iter().map(|(h, _)| h.as_str()).collect();
        anyhow::bail!(
            "site {site:?} has no ready hypervisor {dest:?} (its pool: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let uri = if dest.contains("://") {
        dest.to_string()
    } else {
        uri.clone()
    };
    let via = ipam
        .iter()
        .find(|a| a.site == site && &a.hostname == host && a.role == crate::netmodel::Role::Migration)
        .map(|a| vm::deploy::migration_uri(a.address));
    Ok((uri, via))
}

fn list(uri: &str, json: bool) -> anyhow::Result<()> {
    let list = Hypervisor::connect(uri)?.list()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<24} {:<10} {:>5} {:>10}  {:<28} UUID",
            "NAME", "STATE", "VCPUS", "MEMORY", "TEMPLATE"
        );
        for d in &list {
            println!(
                "{:<24} {:<10} {:>5} {:>7} MiB  {:<28} {}",
                d.name,
                d.state,
                d.vcpus,
                d.memory_mib,
                template_column(d),
                d.uuid
            );
        }
    }
    Ok(())
}

/// "centos.template v3" for a clone of version 3 or for version 3 itself, the template's
/// name for a clone of an unversioned template, "-" otherwise.
fn template_column(d: &vm::DomainSummary) -> String {
    match (&d.template, d.template_version) {
        (Some(t), Some(v)) => format!("{t} v{v}"),
        (Some(t), None) => t.clone(),
        (None, _) => "-".into(),
    }
}

/// `provd vm info`: the domain, its provd metadata (template, clone of, seed), or its XML.
fn info(uri: &str, name: &str, json: bool, xml: bool) -> anyhow::Result<()> {
    let h = Hypervisor::connect(uri)?;
    if xml {
        print!("{}", h.xml(name)?);
    } else {
        let d = h.info(name)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            println!(
                "name    {}\nuuid    {}\nstate   {}\nvcpus   {}\nmemory  {} MiB",
                d.name, d.uuid, d.state, d.vcpus, d.memory_mib
            );
            let meta = h.metadata(name)?;
            if let Some(t) = meta.template {
                println!("template sysprepped {} ({})", t.sysprepped, t.operations);
                let clones = h.linked_clones_of(name)?;
                if !clones.is_empty() {
                    println!("linked clones {} (protected while they exist)", clones.join(", "));
                }
            }
            if let Some(c) = meta.clone_of {
                println!(
                    "clone of {} ({}, template uuid {})",
                    c.template_name,
                    if c.linked { "linked" } else { "full" },
                    c.template_uuid
                );
            }
            if let Some(url) = meta.nocloud {
                println!("nocloud {url}");
            }
        }
    }
    Ok(())
}

/// `provd vm host-info`.
fn host_info(uri: &str, json: bool) -> anyhow::Result<()> {
    let i = Hypervisor::connect(uri)?.host_info()?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
    } else {
        println!(
            "uri        {}\nhostname   {}\ncpu        {} x {}\nmemory     {} MiB ({} MiB free)\ndomains    {}",
            i.uri, i.hostname, i.cpus, i.cpu_model, i.memory_mib, i.free_memory_mib, i.domains
        );
    }
    Ok(())
}

/// `provd vm init`: `request` with the disks and NICs of the named profiles (from the
/// config set `config`, or the built-in defaults without one).
fn init(
    request: &vm::InitRequest,
    config: &[std::path::PathBuf],
    disk_profile: &str,
    nic_profile: &str,
    uri: &str,
) -> anyhow::Result<()> {
    let profiles = if config.is_empty() {
        crate::config::VmProfiles::default()
    } else {
        crate::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?.vm
    };
    let disks = &super::deploy::profile(&profiles.disks, disk_profile, "disk")?;
    let wants = super::deploy::profile(&profiles.nics, nic_profile, "NIC")?;
    // A `--connect` URI's network is not provd's to know: a NIC by role or VLAN is refused.
    let nics = &crate::config::nics_on(&wants, None, vm::deploy::uri_for_source(uri))
        .map_err(|why| anyhow::anyhow!("NIC profile {nic_profile:?}: {why}"))?;
    let d = Hypervisor::connect(uri)?.init(&vm::InitRequest {
        disks,
        nics,
        ..*request
    })?;
    println!(
        "{}: {} ({} vCPU, {} MiB, uuid {})",
        d.name, d.state, d.vcpus, d.memory_mib, d.uuid
    );
    if request.vnc {
        println!("warning: VNC has no authentication; it listens on 127.0.0.1 only");
    }
    Ok(())
}

/// `provd vm sysprep`.
fn sysprep(uri: &str, template: &str) -> anyhow::Result<()> {
    let h = Hypervisor::connect(uri)?;
    eprintln!("{template}: running virt-sysprep (one libguestfs appliance boot; under TCG this takes a minute)");
    let report = h.sysprep(template, &mut |line| eprintln!("  {line}"))?;
    if !report.skipped.is_empty() {
        eprintln!("note: this virt-sysprep lacks {}; skipped", report.skipped.join(", "));
    }
    println!(
        "{template}: sysprepped ({} operations) and marked as a template",
        report.ran.len()
    );
    Ok(())
}

/// `provd vm clone`.
fn clone(uri: &str, template: &str, name: &str, linked: bool) -> anyhow::Result<()> {
    let h = Hypervisor::connect(uri)?;
    let d = h.clone_domain(
        &CloneRequest::plain(template, name, linked),
        &mut super::deploy::DiskProgress::default().callback(),
    )?;
    // Of the template's newest version when it has versions: say which.
    let of = match (&d.template, d.template_version) {
        (Some(family), Some(v)) => format!("{family} v{v} ({})", vm::version::version_name(family, v)),
        _ => template.to_string(),
    };
    println!(
        "{}: {} clone of {of} ({}, uuid {})",
        d.name,
        if linked { "linked" } else { "full" },
        d.state,
        d.uuid
    );
    Ok(())
}

/// `vm list --site`: the domains of every ready hypervisor of `site`, with where they run.
fn list_site(
    server: &super::ServerTarget,
    site: &str,
    pkipath: Option<&std::path::Path>,
    json: bool,
) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for uri in super::hypervisors::pool_uris(server, site, pkipath, true)? {
        let host = vm::deploy::uri_for_source(&uri).to_string();
        match Hypervisor::connect(&uri).and_then(|h| h.list()) {
            Ok(list) => rows.extend(list.into_iter().map(|d| (host.clone(), d))),
            Err(e) => eprintln!("provd: {host}: {e}"),
        }
    }
    if json {
        /// One domain with the hypervisor it runs on.
        #[derive(serde::Serialize)]
        struct Row<'a, D: serde::Serialize> {
            #[serde(flatten)]
            domain: &'a D,
            hypervisor: &'a str,
        }
        let v: Vec<_> = rows
            .iter()
            .map(|(h, d)| Row {
                domain: d,
                hypervisor: h,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{:<24} {:<10} {:>5} {:>10}  {:<28} HYPERVISOR",
            "NAME", "STATE", "VCPUS", "MEMORY", "TEMPLATE"
        );
        for (h, d) in &rows {
            println!(
                "{:<24} {:<10} {:>5} {:>7} MiB  {:<28} {h}",
                d.name,
                d.state,
                d.vcpus,
                d.memory_mib,
                template_column(d)
            );
        }
    }
    Ok(())
}

/// The day-2 verbs of a VM that exists: power, autostart, devices and size.
fn day_two(cmd: DayTwoCommand) -> anyhow::Result<()> {
    match cmd {
        DayTwoCommand::Shutdown {
            name,
            timeout,
            force,
            json,
            target,
        } => shutdown(&name, timeout, force, json, &target)?,
        DayTwoCommand::Reboot { name, target } => {
            Hypervisor::connect(target.uri())?.reboot(&name)?;
            println!("{name}: reboot requested (the guest decides; `provd vm reset` forces it)");
        }
        DayTwoCommand::Reset { name, target } => {
            Hypervisor::connect(target.uri())?.reset(&name)?;
            println!("{name}: reset");
        }
        DayTwoCommand::Pause { name, target } => {
            Hypervisor::connect(target.uri())?.pause(&name)?;
            println!("{name}: paused");
        }
        DayTwoCommand::Resume { name, target } => {
            Hypervisor::connect(target.uri())?.resume(&name)?;
            println!("{name}: running");
        }
        DayTwoCommand::AttachDisk {
            name,
            size_gib,
            dir,
            format,
            bus,
            target,
        } => {
            let (dev, file) =
                Hypervisor::connect(target.uri())?.attach_new_disk(&name, size_gib, &dir, &format, &bus)?;
            println!("{name}: {dev} attached ({size_gib} GiB, {})", file.display());
        }
        DayTwoCommand::DetachDisk { name, dev, target } => {
            let file = Hypervisor::connect(target.uri())?.detach_disk(&name, &dev)?;
            println!("{name}: {dev} detached (its file {} stays)", file.display());
        }
        DayTwoCommand::AttachNic {
            name,
            bridge,
            model,
            target,
        } => {
            let mac = Hypervisor::connect(target.uri())?.attach_nic(&name, &bridge, &model)?;
            println!("{name}: NIC {mac} attached on {bridge}");
        }
        DayTwoCommand::DetachNic { name, mac, target } => {
            Hypervisor::connect(target.uri())?.detach_nic(&name, mac)?;
            println!("{name}: NIC {mac} detached");
        }
        DayTwoCommand::SetVcpus { name, vcpus, target } => {
            Hypervisor::connect(target.uri())?.set_vcpus(&name, vcpus)?;
            println!("{name}: {vcpus} vCPU(s)");
        }
        DayTwoCommand::SetMemory { name, mib, target } => {
            Hypervisor::connect(target.uri())?.set_memory(&name, mib)?;
            println!("{name}: memory {mib} MiB");
        }
        DayTwoCommand::Autostart { name, off, target } => {
            let h = Hypervisor::connect(target.uri())?;
            h.set_autostart(&name, !off)?;
            let on = h.autostart(&name)?;
            println!(
                "{name}: autostart {}",
                if on { "on (started with its libvirtd)" } else { "off" }
            );
        }
    }
    Ok(())
}

/// `provd vm shutdown`: ask, wait with a line of progress on a terminal, report how it ended.
fn shutdown(name: &str, timeout: u64, force: bool, json: bool, target: &Target) -> anyhow::Result<()> {
    use crate::vm::lifecycle::{ShutdownOutcome, ShutdownPlan};
    use std::io::IsTerminal;
    let h = Hypervisor::connect(target.uri())?;
    let plan = ShutdownPlan {
        timeout: std::time::Duration::from_secs(timeout),
        force,
    };
    let progress = std::io::stderr().is_terminal() && !json;
    let outcome = h.shutdown(name, plan, |waited| {
        if progress {
            eprint!(
                "\r{name}: waiting for the guest to shut down: {} s of {timeout} s",
                waited.as_secs()
            );
        }
    });
    if progress {
        eprintln!();
    }
    let outcome = outcome?;
    if json {
        println!("{}", serde_json::json!({ "name": name, "outcome": outcome }));
    } else {
        match outcome {
            ShutdownOutcome::Graceful => println!("{name}: shut down by its guest"),
            ShutdownOutcome::Forced => {
                println!("{name}: powered off (the guest did not shut down within {timeout} s)")
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_to_a_pool_host_goes_over_its_migration_address() {
        let pool = vec![
            ("hv1".to_string(), "qemu+tls://hv1.a.test/system?pkipath=/p".to_string()),
            ("hv2".to_string(), "qemu+tls://hv2.a.test/system?pkipath=/p".to_string()),
        ];
        let ipam = vec![crate::ipam::Assignment {
            site: "a".into(),
            role: crate::netmodel::Role::Migration,
            mac: "52:54:00:00:00:02".parse().unwrap(),
            hostname: "hv2".into(),
            address: "10.0.20.12".parse().unwrap(),
            prefix_len: 24,
            gateway: None,
        }];
        // By name: the pool's URI (with the credentials), the memory over VLAN 20.
        let (uri, via) = migration_target("hv2", "a", &pool, &ipam).unwrap();
        assert_eq!(uri, "qemu+tls://hv2.a.test/system?pkipath=/p");
        assert_eq!(via.as_deref(), Some("qemu+tls://10.0.20.12/system"));
        // By URI, the same host.
        let (uri, via) = migration_target("qemu+tls://hv2.a.test/system", "a", &pool, &ipam).unwrap();
        assert_eq!(uri, "qemu+tls://hv2.a.test/system");
        assert!(via.is_some());
        // A host without a migration address: its own address; another site's address is
        // not this one's.
        assert_eq!(migration_target("hv1", "a", &pool, &ipam).unwrap().1, None);
        assert_eq!(migration_target("hv2", "b", &pool, &ipam).unwrap().1, None);
        let e = migration_target("hv9", "a", &pool, &ipam).unwrap_err().to_string();
        assert!(e.contains("no ready hypervisor \"hv9\" (its pool: hv1, hv2)"), "{e}");
    }
}
