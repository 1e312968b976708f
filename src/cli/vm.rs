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
        VmCommand::Undefine { name, target } => {
            Hypervisor::connect(&target.connect)?.undefine(&name)?;
            println!("{name}: undefined (its disks were left in place)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
