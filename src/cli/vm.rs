//! `provd vm`: VM lifecycle on any libvirt URI (default qemu:///system).

use crate::vm::{self, Hypervisor};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Target {
    /// libvirt URI: qemu:///system, qemu+tls://HOST/system?pkipath=DIR (see `provd pki
    /// issue-client`), test:///default, ...
    #[arg(long, short = 'C', default_value = vm::DEFAULT_URI)]
    connect: String,
}

#[derive(Subcommand)]
pub enum VmCommand {
    /// Every domain with its state, vCPUs and memory.
    List {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
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
    /// disk, eth0 bridged to br0), then define it (and start it with --start).
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
        VmCommand::List { target, json } => {
            let list = Hypervisor::connect(&target.connect)?.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!("{:<24} {:<10} {:>5} {:>10}  UUID", "NAME", "STATE", "VCPUS", "MEMORY");
                for d in &list {
                    println!(
                        "{:<24} {:<10} {:>5} {:>7} MiB  {}",
                        d.name, d.state, d.vcpus, d.memory_mib, d.uuid
                    );
                }
            }
        }
        VmCommand::Info {
            name,
            target,
            json,
            xml,
        } => {
            let h = Hypervisor::connect(&target.connect)?;
            if xml {
                print!("{}", h.xml(&name)?);
            } else {
                let d = h.info(&name)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&d)?);
                } else {
                    println!(
                        "name    {}\nuuid    {}\nstate   {}\nvcpus   {}\nmemory  {} MiB",
                        d.name, d.uuid, d.state, d.vcpus, d.memory_mib
                    );
                }
            }
        }
        VmCommand::HostInfo { target, json } => {
            let i = Hypervisor::connect(&target.connect)?.host_info()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&i)?);
            } else {
                println!(
                    "uri        {}\nhostname   {}\ncpu        {} x {}\nmemory     {} MiB ({} MiB free)\ndomains    {}",
                    i.uri, i.hostname, i.cpus, i.cpu_model, i.memory_mib, i.free_memory_mib, i.domains
                );
            }
        }
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
        } => {
            let profiles = if config.is_empty() {
                crate::config::VmProfiles::default()
            } else {
                crate::config::load(&config).map_err(|e| anyhow::anyhow!("{e}"))?.vm
            };
            fn known<T>(m: &std::collections::BTreeMap<String, T>) -> String {
                m.keys().cloned().collect::<Vec<String>>().join(", ")
            }
            let disks = profiles.disks.get(&disk_profile).ok_or_else(|| {
                anyhow::anyhow!("no disk profile {disk_profile:?} (known: {})", known(&profiles.disks))
            })?;
            let nics = profiles
                .nics
                .get(&nic_profile)
                .ok_or_else(|| anyhow::anyhow!("no NIC profile {nic_profile:?} (known: {})", known(&profiles.nics)))?;
            let d = Hypervisor::connect(&target.connect)?.init(&vm::InitRequest {
                name: &name,
                vcpus: cpus,
                memory_mib: memory,
                image: image.as_deref(),
                disks,
                nics,
                vnc,
                start,
                domain_type: domain_type.as_deref(),
            })?;
            println!(
                "{}: {} ({} vCPU, {} MiB, uuid {})",
                d.name, d.state, d.vcpus, d.memory_mib, d.uuid
            );
            if vnc {
                println!("warning: VNC has no authentication; it listens on 127.0.0.1 only");
            }
        }
        VmCommand::Start { name, target } => {
            Hypervisor::connect(&target.connect)?.start(&name)?;
            println!("{name}: started");
        }
        VmCommand::Stop { name, target } => {
            Hypervisor::connect(&target.connect)?.stop(&name)?;
            println!("{name}: shutdown requested (the guest decides when; `provd vm destroy` forces it)");
        }
        VmCommand::Destroy { name, target } => {
            Hypervisor::connect(&target.connect)?.destroy(&name)?;
            println!("{name}: powered off");
        }
        VmCommand::Purge { name, force, target } => {
            let removed = Hypervisor::connect(&target.connect)?.purge(&name, force)?;
            println!("{name}: undefined; removed {} disk(s)", removed.len());
            for f in removed {
                println!("  {}", f.display());
            }
        }
        VmCommand::Console { name, target } => {
            let (kind, addr) = Hypervisor::connect(&target.connect)?.console(&name)?;
            println!("{kind}://{addr}");
            if kind == "vnc" {
                eprintln!("warning: VNC has no authentication; reach it through an SSH tunnel, never expose it");
            }
        }
        VmCommand::Undefine { name, target } => {
            Hypervisor::connect(&target.connect)?.undefine(&name)?;
            println!("{name}: undefined (its disks were left in place)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
