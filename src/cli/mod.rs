//! The command line (clap). Thin: each command parses its arguments and calls the module
//! that does the work, or the running daemon's API. Exit codes: 0 success, 1 failure,
//! 2 usage error (clap's own).

mod batch;
pub mod client;
mod deploy;
mod dns;
mod docs;
mod failover;
mod hosts;
mod hypervisors;
mod leases;
mod network;
mod pki;
mod power;
mod region;
mod snapshot;
mod template;
mod vm;

use crate::config;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_CONFIG: &str = "/etc/provd";

/// `provd --version`: the release and the git revision it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (git ", env!("PROVD_GIT_REV"), ")");

#[derive(Parser)]
#[command(name = "provd", version = VERSION, about = "Network-boot bare servers into KVM hypervisors and run VMs on them.", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Send the command to the region (`provd region serve`) instead of one site's daemon.
    #[command(flatten)]
    region: region::RegionTarget,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: DHCP on the interfaces the config names, and the API.
    Serve {
        /// Site config files or directories of *.toml files.
        #[arg(long = "config", short = 'c', env = "PROVD_CONFIG", default_value = DEFAULT_CONFIG, num_args = 1..)]
        config: Vec<PathBuf>,
        /// Serve only this site (repeatable). Default: every site in the config.
        #[arg(long)]
        site: Vec<String>,
        /// Where leases are stored (overrides [daemon] state_dir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Address of the API (overrides [daemon] api_listen).
        #[arg(long)]
        api_listen: Option<SocketAddr>,
    },
    /// Validate site config files with the daemon's own checks; exit 1 on any error.
    Check {
        /// Files or directories of *.toml files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show leases.
    Leases {
        #[command(subcommand)]
        command: leases::LeasesCommand,
    },
    /// The inventory: hosts, their state and history, reinstall, netboot.
    Hosts {
        #[command(subcommand)]
        command: hosts::HostsCommand,
    },
    /// Print what a host would get, rendered offline from the config and templates (the
    /// token is a visible placeholder; no state changes). The host's static addresses
    /// (IPAM) come from the running daemon, else from its store in the state directory;
    /// without either its bridges render unaddressed (said on stderr).
    Render {
        /// ks (kickstart), ipxe, pxelinux or grub.
        #[arg(value_parser = ["ks", "kickstart", "ipxe", "pxelinux", "grub"])]
        kind: String,
        /// Hostname or MAC.
        host: String,
        /// Which boot script to show.
        #[arg(long, default_value = "install", value_parser = ["install", "local", "menu"])]
        action: String,
        #[command(flatten)]
        server: ServerTarget,
    },
    /// A profile's data-center network (bonds, VLANs, role bridges) as each installer gets
    /// it: kickstart lines and keyfiles, or systemd-networkd units.
    Network(network::NetworkArgs),
    /// Virtual machines on libvirt (any --connect URI).
    Vm {
        #[command(subcommand)]
        command: vm::VmCommand,
    },
    /// provd's certificate authority for libvirt TLS.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// Boot assets.
    Assets {
        #[command(subcommand)]
        command: AssetsCommand,
    },
    /// The QEMU PXE lab: real BIOS and UEFI VMs network-boot against provd in a private
    /// network namespace (needs root).
    Lab {
        #[command(subcommand)]
        command: LabCommand,
    },
    /// Print the shell completion script for SHELL (bash, zsh, fish, elvish, powershell),
    /// e.g. `provd completions bash > /etc/bash_completion.d/provd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write one man page per command into a directory (for packages).
    #[command(hide = true)]
    Manpages {
        #[arg(long)]
        out: PathBuf,
    },
    /// Show the daemon's packet and store counters.
    Stats {
        #[command(flatten)]
        target: ServerTarget,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The sites' DNS updates: names held, the queue still to send, the last error (exit
    /// status 1 while a site's server is failing).
    Dns {
        #[command(flatten)]
        target: ServerTarget,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Installed hypervisors as provd verified them over qemu+tls (the placement pool).
    Hypervisors {
        #[command(subcommand)]
        command: hypervisors::HypervisorsCommand,
    },
    /// Power control through hosts' BMCs (Redfish or IPMI, `bmc = {...}` in the host entry).
    Power {
        #[command(subcommand)]
        command: power::PowerCommand,
    },
    /// Make the running daemon read its config again (as SIGHUP does): the whole set is
    /// checked like `provd check`; hosts, profiles, variables, templates and subnet options
    /// apply at once, without dropping leases, transfers or the failover connection. A config
    /// with an error, or a change only a restart can make (listeners, [daemon], failover,
    /// pools), changes nothing and is reported.
    Reload {
        #[command(flatten)]
        target: ServerTarget,
        /// Print the daemon's JSON report.
        #[arg(long)]
        json: bool,
    },
    /// DHCP failover: the state of each relationship; declare a partner down.
    Failover {
        #[command(subcommand)]
        command: failover::FailoverCommand,
    },
    /// The region: one view over many sites, with writes forwarded to the owning site
    /// (`provd region serve`); `provd --region URL hosts ...` sends everyday commands there.
    Region {
        #[command(subcommand)]
        command: region::RegionCommand,
    },
}

#[derive(Subcommand)]
enum LabCommand {
    /// Create the lab network, start provd in it, boot the VMs, and show their progress
    /// (DHCP, iPXE, kernel, kickstart, %post, installed, local boot) until each boots from
    /// its disk. Installs missing Debian packages first unless --no-install.
    Up {
        /// How many VMs (1-8).
        #[arg(long, default_value_t = 2)]
        vms: usize,
        /// bios (SeaBIOS + iPXE ROM), uefi (OVMF's own PXE), secureboot (OVMF with Secure
        /// Boot enforced and Microsoft's keys: the host boots shim and signed GRUB, and
        /// only signed kernels), uefi-http (OVMF with PXE off: UEFI HTTP boot, no TFTP),
        /// mixed (bios and uefi alternating), or a comma-separated list, VM N taking the
        /// Nth (the last repeats), e.g. bios,secureboot.
        #[arg(long, default_value = "mixed")]
        firmware: String,
        #[arg(long = "config", short = 'c', default_value = "lab/lab.toml")]
        config: Vec<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 900)]
        timeout: u64,
        /// Only say which packages are missing; do not install them.
        #[arg(long)]
        no_install: bool,
        /// Remove the lab after the summary instead of leaving it running.
        #[arg(long)]
        down: bool,
        /// Put each VM behind a BMC: ipmi (OpenIPMI's ipmi_sim owns the VM's QEMU and
        /// answers IPMI over LAN) or redfish (the VMs are domains of a libvirtd in the lab
        /// namespace, sushy-tools' Redfish emulator answers for them over HTTPS). The lab's
        /// hosts get `bmc = {...}`, so `provd power` and `provd hosts reinstall --power`
        /// drive them.
        #[arg(long, value_parser = ["ipmi", "redfish"])]
        bmc: Option<String>,
        /// Deploy a real OS image instead of the mini-install: the VMs (2 CPUs, 2 GiB, 8 GiB
        /// disk, no SVM) take the lab config's profile with `image = NAME`; the installer
        /// environment streams, verifies and grows the image, runs the deploy document's
        /// %post inside it, and the VM reboots into it. The lab waits until provd's pool has
        /// verified each one's libvirt over TLS. Build the image first:
        /// `lab/images/debian12-kvm.sh boot-assets/images`.
        #[arg(long, value_name = "NAME")]
        image: Option<String>,
        /// With --image: give the VMs a server's devices instead of virtio, in turn: Intel
        /// e1000e NICs and a SATA disk on AHCI, then virtio NICs and an NVMe disk. The
        /// image profile's installer (Debian's generic kernel) must find and load their
        /// drivers itself.
        #[arg(long)]
        hardware: bool,
    },
    /// What the running lab's VMs are doing.
    Status,
    /// Power-cycle one lab VM (stop QEMU, start it again with the same disk): it boots
    /// from the network again, and provd decides what it gets.
    PowerCycle {
        /// The VM's name (lab-1, lab-2, ...).
        name: String,
    },
    /// Start one more VM that no config names (new-N, MAC 52:54:00:00:c1:NN, a 2 GiB disk):
    /// provd sees an unknown machine, which the lab site boots into the discovery image
    /// (its hardware then shows in `provd hosts list --discovered`). Behind a simulated BMC
    /// when the lab runs with --bmc.
    AddVm {
        /// bios, uefi, secureboot or uefi-http (see `lab up --firmware`).
        #[arg(long, default_value = "bios", value_parser = ["bios", "uefi", "secureboot", "uefi-http"])]
        firmware: String,
    },
    /// Remove every namespace, process and file the lab made.
    Down,
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// Copy the iPXE binaries (undionly.kpxe, ipxe.efi, snponly.efi) from Debian's ipxe
    /// package into the assets directory and check that each is what it claims to be.
    Init {
        /// Where the ipxe package put them.
        #[arg(long, default_value = "/usr/lib/ipxe")]
        from: PathBuf,
        /// The assets directory ([daemon] assets_dir).
        #[arg(long, default_value = "boot-assets")]
        dir: PathBuf,
        /// Also install the Secure Boot chain (shimx64.efi, grubx64.efi) from Debian's
        /// shim-signed and grub-efi-amd64-signed, installed (`/`, the default) or unpacked
        /// under this root (lab/signed-chain.sh unpacks them without installing). A file
        /// without an Authenticode signature is refused.
        #[arg(long, value_name = "ROOT", num_args = 0..=1, default_missing_value = "/")]
        signed_chain: Option<PathBuf>,
    },
    /// Make a disk image that profiles can deploy (`image = "NAME"`) from any image qemu-img
    /// reads (qcow2, raw, vmdk, vdi, ...): converted to raw, gzip'd to
    /// <dir>/images/NAME.raw.gz, with its SHA-256 in NAME.raw.gz.sha256. qcow2 cannot be
    /// streamed to a disk, so provd converts once here. The running daemon serves it after
    /// `provd reload`.
    ImportImage {
        /// The image's name, as profiles name it (letters, digits, '.', '_', '-').
        name: String,
        /// The source disk image.
        source: PathBuf,
        /// The assets directory ([daemon] assets_dir).
        #[arg(long, default_value = "boot-assets")]
        dir: PathBuf,
        /// The source's format (raw, qcow2, vmdk, vdi, vhdx, vpc). Default: read from the
        /// file's own header. Either way provd checks the header matches and refuses any image
        /// that would read another file (a backing file, data file or VMDK extent).
        #[arg(long)]
        format: Option<crate::assets::inspect::DiskFormat>,
        /// Replace an existing image of that name.
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Which hypervisor a `provd vm` command talks to (its libvirt URI).
#[derive(clap::Args)]
pub struct Target {
    /// libvirt URI: qemu:///system, qemu+tls://HOST/system?pkipath=DIR (see `provd pki
    /// issue-client`), test:///default, ...
    #[arg(long, short = 'C', default_value = crate::vm::DEFAULT_URI)]
    connect: String,
}

impl Target {
    pub fn uri(&self) -> &str {
        &self.connect
    }
}

/// How a client command finds the daemon (or, when it is down, its state directory).
#[derive(clap::Args, Clone)]
pub struct ServerTarget {
    /// The daemon's API address, e.g. 127.0.0.1:6767. Default: [daemon] api_listen of the config.
    #[arg(long)]
    server: Option<String>,
    /// Config used to find the API address and state directory.
    #[arg(long = "config", short = 'c', env = "PROVD_CONFIG", default_value = DEFAULT_CONFIG)]
    config: Vec<PathBuf>,
    /// State directory to read when the daemon is not running (and where the daemon's
    /// admin API token is read from).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// The admin API token, from a file (default: <state_dir>/api-token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// For an HTTPS admin API ([daemon] api_tls): a directory with cacert.pem (provd's CA)
    /// and, optionally, an admin clientcert.pem + clientkey.pem (`provd pki issue-client
    /// NAME --admin --out DIR`). Default: the CA of the config's pki_dir, no certificate.
    #[arg(long)]
    cert_dir: Option<PathBuf>,
}

impl ServerTarget {
    /// (API base URL, state dir). A missing or broken config falls back to the defaults:
    /// a client command should still work against a daemon started with flags only.
    fn resolve(&self) -> (String, PathBuf, Option<PathBuf>) {
        let cfg = config::load(&self.config).ok();
        let tls = cfg.as_ref().is_some_and(|c| c.daemon.api_tls);
        let api = self.server.clone().unwrap_or_else(|| {
            cfg.as_ref()
                .map(|c| c.daemon.api_listen.to_string())
                .unwrap_or_else(|| config::DEFAULT_API_LISTEN.to_string())
        });
        let base = if api.starts_with("http://") || api.starts_with("https://") {
            api
        } else if tls {
            format!("https://{api}")
        } else {
            format!("http://{api}")
        };
        let state = self.state_dir.clone().unwrap_or_else(|| {
            cfg.as_ref()
                .map(|c| c.daemon.state_dir.clone())
                .unwrap_or_else(|| PathBuf::from(config::DEFAULT_STATE_DIR))
        });
        let pki = cfg.map(|c| c.daemon.pki_dir(&state));
        (base, state, pki)
    }

    /// The daemon's API with its credential. An unreadable token is not an error here: the
    /// daemon's 401 then says what to do.
    fn api(&self) -> anyhow::Result<client::Api> {
        let (base, state, pki) = self.resolve();
        let file = self
            .token_file
            .clone()
            .unwrap_or_else(|| crate::http::auth::token_path(&state));
        let token = crate::http::auth::read_token(&file).ok();
        let tls = if base.starts_with("https://") {
            Some(self.tls(pki)?)
        } else {
            None
        };
        Ok(client::Api::with_tls(base, token, file.display().to_string(), tls))
    }

    /// --cert-dir, else the CA in the config's pki_dir (trust only; the token is the credential).
    fn tls(&self, pki: Option<PathBuf>) -> anyhow::Result<ureq::tls::TlsConfig> {
        if let Some(dir) = &self.cert_dir {
            return client::tls_from_dir(dir);
        }
        let Some(pki) = pki else {
            anyhow::bail!(
                "the admin API is HTTPS: pass --cert-dir DIR with provd's cacert.pem (and an admin certificate)"
            );
        };
        let ca = std::fs::read(pki.join(crate::pki::CA_CERT)).map_err(|e| {
            anyhow::anyhow!(
                "the admin API is HTTPS and provd's CA ({}) is not readable ({e}): pass --cert-dir DIR",
                pki.join(crate::pki::CA_CERT).display()
            )
        })?;
        let ca = ureq::tls::Certificate::from_pem(&ca)?;
        Ok(ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
            .build())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    if cli.region.region.is_some()
        || cli.region.region_config.is_some()
        || matches!(cli.command, Command::Region { .. })
    {
        return finish(region::via_region(cli.command, &cli.region));
    }
    let result = match cli.command {
        Command::Serve {
            config,
            site,
            state_dir,
            api_listen,
        } => serve(config, site, state_dir, api_listen),
        Command::Check { files } => check(&files),
        Command::Leases { command } => leases::run(command),
        Command::Stats { target, json } => leases::stats(&target, json),
        Command::Dns { target, json } => dns::status(&target, json),
        Command::Failover { command } => failover::run(command),
        Command::Region { .. } => unreachable!("handled above"),
        Command::Reload { target, json } => reload(&target, json),
        Command::Power { command } => power::run(command),
        Command::Hypervisors { command } => hypervisors::run(command),
        Command::Hosts { command } => hosts::run(command),
        Command::Network(a) => network::run(a),
        Command::Render {
            kind,
            host,
            action,
            server,
        } => render(&kind, &host, &action, &server),
        Command::Assets {
            command:
                AssetsCommand::Init {
                    from,
                    dir,
                    signed_chain,
                },
        } => assets_init(&from, &dir, signed_chain.as_deref()),
        Command::Assets {
            command:
                AssetsCommand::ImportImage {
                    name,
                    source,
                    dir,
                    format,
                    force,
                    json,
                },
        } => import_image(&name, &source, &dir, format, force, json),
        Command::Lab { command } => lab(command),
        Command::Pki { command } => pki::run(command),
        Command::Vm { command } => vm::run(command),
        Command::Completions { shell } => docs::completions(shell).map(|()| ExitCode::SUCCESS).map_err(Into::into),
        Command::Manpages { out } => docs::manpages(&out).map(|pages| {
            println!("{} man pages in {}", pages.len(), out.display());
            ExitCode::SUCCESS
        }),
    };
    finish(result)
}

fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("provd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PROVD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(
    config: Vec<PathBuf>,
    sites: Vec<String>,
    state_dir: Option<PathBuf>,
    api_listen: Option<SocketAddr>,
) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(&config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("provd: config has {} error(s); not starting", errors.0.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(crate::daemon::run(
        cfg,
        crate::daemon::ServeOptions {
            config_paths: config,
            sites,
            state_dir,
            api_listen,
        },
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn reload(target: &ServerTarget, json: bool) -> anyhow::Result<ExitCode> {
    let api = target.api()?;
    let report: crate::reload::ReloadReport = api.require(api.post("/api/reload")?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    println!(
        "reloaded (generation {}): {} file(s); hosts added: {}; removed: {}; {} host record(s) updated",
        report.generation,
        report.files.len(),
        list(&report.hosts_added),
        list(&report.hosts_removed),
        report.records_changed
    );
    for n in &report.notes {
        println!("note: {n}");
    }
    Ok(ExitCode::SUCCESS)
}

fn lab(cmd: LabCommand) -> anyhow::Result<ExitCode> {
    let ok = match cmd {
        LabCommand::Up {
            vms,
            firmware,
            config,
            timeout,
            no_install,
            down,
            bmc,
            image,
            hardware,
        } => crate::lab::up(crate::lab::UpOptions {
            bmc,
            image,
            hardware,
            vms,
            firmware,
            config,
            timeout: std::time::Duration::from_secs(timeout),
            install_packages: !no_install,
            remove_after: down,
        })?,
        LabCommand::Status => crate::lab::status()?,
        LabCommand::PowerCycle { name } => {
            crate::lab::power_cycle(&name)?;
            println!("provd lab: {name} power-cycled");
            true
        }
        LabCommand::AddVm { firmware } => {
            let fw = crate::lab::vm::firmware_for(&firmware, 1).map_err(anyhow::Error::msg)?;
            let (spec, bmc) = crate::lab::add_vm(fw)?;
            println!(
                "provd lab: {} ({}, {}) powered on; no config names it, so it boots the discovery image",
                spec.name,
                spec.mac,
                fw.name()
            );
            if let Some(b) = bmc {
                println!("its BMC, for `provd hosts adopt {} ... --bmc {b}`", spec.mac);
            }
            true
        }
        LabCommand::Down => {
            crate::lab::down()?;
            println!("provd lab: removed");
            true
        }
    };
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `provd assets init`: one line per file, failure if any file failed.
fn assets_init(
    from: &std::path::Path,
    dir: &std::path::Path,
    signed_chain: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut reports = crate::assets::install_ipxe(from, dir)?;
    if let Some(root) = signed_chain {
        reports.extend(crate::assets::install_signed_chain(root, dir)?);
    }
    for f in reports {
        match f.result {
            Ok(len) => println!("ok   {:<14} {:>8} bytes  {}", f.name, len, f.purpose),
            Err(e) => {
                failed = true;
                eprintln!("FAIL {:<14} {e}", f.name);
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `provd assets import-image`: a progress bar on stderr (hidden when it is not a terminal).
fn import_image(
    name: &str,
    source: &std::path::Path,
    dir: &std::path::Path,
    format: Option<crate::assets::inspect::DiskFormat>,
    force: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use crate::assets::import::{self, Phase};
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("{name}: qemu-img convert {}", source.display()));
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let mut compressing = false;
    let imported = import::import(dir, name, source, format, force, &mut |phase| {
        if let Phase::Compressing { done, total } = phase {
            if !compressing {
                compressing = true;
                bar.set_length(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}")
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_message(format!("{name}: gzip"));
            }
            bar.set_position(done);
        }
    });
    bar.finish_and_clear();
    let imported = imported?;
    if json {
        println!("{}", serde_json::to_string_pretty(&imported)?);
    } else {
        println!(
            "{}: {} from {} ({}, {} MiB disk), {} MiB gzip'd, sha256 {}",
            imported.name,
            imported.path.display(),
            source.display(),
            imported.source_format,
            imported.virtual_size >> 20,
            imported.bytes >> 20,
            imported.sha256
        );
        println!(
            "profiles deploy it with image = \"{}\"; a running provd serves it after `provd reload`",
            imported.name
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The static addresses IPAM gave: the running daemon's, else its store's (no daemon holds
/// it then), else none; stderr says which.
fn known_ipam(server: &ServerTarget) -> Vec<crate::ipam::Assignment> {
    let (base, state_dir, _) = server.resolve();
    let from_daemon = server
        .api()
        .and_then(|api| api.get::<Vec<crate::ipam::Assignment>>("/api/ipam"));
    match from_daemon {
        Ok(client::Fetch::Ok(all)) => {
            eprintln!("provd: static addresses from the daemon at {base}");
            return all;
        }
        Ok(client::Fetch::NoDaemon) => {}
        Err(e) => eprintln!("provd: the daemon at {base} did not give its IPAM ({e})"),
    }
    match crate::store::read_ipam_offline(&state_dir) {
        Ok(rows) => {
            eprintln!("provd: static addresses from the store in {}", state_dir.display());
            rows.into_iter()
                .filter_map(|(_, json)| serde_json::from_slice(&json).ok())
                .collect()
        }
        Err(e) => {
            eprintln!("provd: no static addresses known ({e}): bridges that IPAM addresses render without them");
            Vec::new()
        }
    }
}

fn render(kind: &str, host: &str, action: &str, server: &ServerTarget) -> anyhow::Result<ExitCode> {
    let cfg = match config::load(&server.config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let renderer = crate::render::Renderer::load(&cfg.daemon.templates_dir)?;
    let action = match action {
        "local" => crate::render::Action::Local,
        "menu" => crate::render::Action::Menu,
        _ => crate::render::Action::Install,
    };
    let ipam = known_ipam(server);
    match crate::boot::Boot::preview(&cfg, &renderer, kind, host, action, &ipam) {
        Ok(text) => {
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("provd: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    match config::load(files) {
        Ok(cfg) => {
            let hosts: usize = cfg.sites.values().map(|s| s.hosts.len()).sum();
            let subnets: usize = cfg.sites.values().map(|s| s.subnets.len()).sum();
            println!(
                "ok: {} file(s), {} site(s), {} subnet(s), {} host(s), {} profile(s)",
                cfg.files.len(),
                cfg.sites.len(),
                subnets,
                hosts,
                cfg.profiles.len()
            );
            for n in cfg.notes() {
                println!("note: {n}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(ExitCode::FAILURE)
        }
    }
}
