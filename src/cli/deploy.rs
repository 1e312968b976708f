//! `provd vm deploy`: one VM placed on the best candidate hypervisor, or a batch
//! (`--count N --name-pattern web-{n}`) planned by `vm::batch` and deployed in parallel,
//! with a progress display and a result per VM; profiles and SSH keys resolved from the
//! site config. Also the clone progress display `vm clone` and `vm init` share.

use crate::vm::clone::CloneEvent;
use crate::vm::{self, Hypervisor};

pub use super::Target;

/// `provd vm deploy`'s arguments.
#[derive(clap::Args)]
pub struct DeployArgs {
    /// The VM's name (or --name-pattern with --count for a batch).
    #[arg(required_unless_present = "name_pattern", conflicts_with = "name_pattern")]
    pub name: Option<String>,
    /// The template to clone (a domain on the candidate hypervisors).
    #[arg(long)]
    pub from: String,
    /// Deploy a batch of this many VMs (with --name-pattern), in parallel, placed across the
    /// candidates. Names that already exist are left as they are, so rerunning a batch
    /// makes only what is missing.
    #[arg(long, requires = "name_pattern")]
    pub count: Option<u32>,
    /// The batch's names: {n} is replaced by the VM's number ({n:03} pads it to three
    /// digits), e.g. web-{n}.
    #[arg(long, requires = "count")]
    pub name_pattern: Option<String>,
    /// The first number of a batch.
    #[arg(long, default_value_t = 1)]
    pub first: u32,
    /// How a batch spreads over the hypervisors: spread (the most free memory first) or pack
    /// (fill the fullest host that still fits first). Default: the site config's
    /// `[vm] placement`, else spread.
    #[arg(long, value_enum)]
    pub placement: Option<vm::batch::Placement>,
    /// How many VMs of a batch are deployed at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,
    #[arg(long)]
    pub cpus: Option<u32>,
    /// Memory in MiB (default: the template's).
    #[arg(long)]
    pub memory: Option<u64>,
    /// Replace the template's NICs with this NIC profile's.
    #[arg(long)]
    pub nic_profile: Option<String>,
    /// A disk profile: its first disk is the template's (grown to the profile's size if
    /// smaller), the others are added as new empty disks.
    #[arg(long)]
    pub disk_profile: Option<String>,
    /// Candidate hypervisors (libvirt URIs, repeatable). Default: with --site, the site's
    /// ready, undrained hypervisors from the running provd (its pool); else --connect.
    #[arg(long = "hypervisor")]
    pub hypervisors: Vec<String>,
    /// With --site: the libvirt client credentials to reach the pool's hypervisors with
    /// (cacert.pem, clientcert.pem, clientkey.pem, as `provd pki issue-client` writes
    /// them). Default: libvirt's own (/etc/pki for root).
    #[arg(long)]
    pub pkipath: Option<std::path::PathBuf>,
    /// Overlay on the template's disk instead of a full copy.
    #[arg(long)]
    pub linked: bool,
    /// A public key file to authorise for SSH (repeatable).
    #[arg(long = "ssh-key")]
    pub ssh_keys: Vec<std::path::PathBuf>,
    /// The site to deploy to: its ready, undrained hypervisors are the candidates (unless
    /// --hypervisor names them), and its provd serves the NoCloud data.
    #[arg(long)]
    pub site: Option<String>,
    /// Define it but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Do not start it with its hypervisor's libvirtd (by default a deployed VM is set to
    /// autostart, so it comes back after the hypervisor reboots).
    #[arg(long)]
    pub no_autostart: bool,
    /// Print the result as JSON (the VM, its hypervisor, its NICs' MACs, its seed; for a
    /// batch, one entry per name); progress still goes to stderr.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub target: Target,
    #[command(flatten)]
    pub server: super::ServerTarget,
}

/// What every VM of a deploy shares: the template, its size and devices, the candidate
/// hypervisors, the SSH keys, and how to reach the running provd (for the seeds).
struct Common {
    from: String,
    cpus: Option<u32>,
    memory: Option<u64>,
    nics: Option<vm::deploy::NicsByUri>,
    disks: Option<Vec<crate::config::DiskSpec>>,
    hypervisors: Vec<String>,
    linked: bool,
    keys: Vec<String>,
    site: Option<String>,
    start: bool,
    autostart: bool,
    placement: vm::batch::Placement,
    api: super::client::Api,
}

impl Common {
    /// The command line's arguments, with the candidate hypervisors resolved (those named,
    /// else the site's ready ones from the running provd, else --connect), the profiles
    /// and the placement read from the site config, and the SSH keys read.
    fn resolve(a: &DeployArgs) -> anyhow::Result<Common> {
        // (host name, URI): the site's pool hosts by name; a named URI is its own name.
        let mut hypervisors: Vec<(String, String)> = match (a.hypervisors.is_empty(), &a.site) {
            (false, _) => a.hypervisors.iter().map(|u| (u.clone(), u.clone())).collect(),
            (true, Some(s)) => site_hypervisors(&a.server, s, a.pkipath.as_deref())?,
            (true, None) => vec![(a.target.uri().to_string(), a.target.uri().to_string())],
        };
        // Profiles come from the site config; the built-in defaults when there is none.
        let config = crate::config::load(&a.server.config);
        let profiles = match (&config, a.nic_profile.is_some() || a.disk_profile.is_some()) {
            (Ok(c), _) => c.vm.clone(),
            // A named profile must come from a config that loads: say why it does not.
            (Err(e), true) => anyhow::bail!("the site config (for the profile): {e}"),
            (Err(_), false) => crate::config::VmProfiles::default(),
        };
        let nics = match a.nic_profile.as_deref() {
            None => None,
            Some(p) => {
                let wants = profile(&profiles.nics, p, "NIC")?;
                let hosts: Vec<vm::deploy::NicHost> = hypervisors
                    .iter()
                    .map(|(name, uri)| vm::deploy::NicHost {
                        uri,
                        name,
                        network: match (&config, &a.site) {
                            (Ok(c), Some(site)) => c.host_network(site, name),
                            _ => None,
                        },
                    })
                    .collect();
                let (fit, lacking) = vm::deploy::nics_per_hypervisor(&wants, &hosts);
                for (uri, why) in &lacking {
                    eprintln!("warning: passing over {uri}: {why}");
                }
                if fit.is_empty() {
                    let why: Vec<String> = lacking.iter().map(|(_, w)| w.clone()).collect();
                    anyhow::bail!("no candidate hypervisor can take NIC profile {p:?}: {}", why.join("; "));
                }
                hypervisors.retain(|(_, uri)| fit.contains_key(uri));
                Some(fit)
            }
        };
        let hypervisors: Vec<String> = hypervisors.into_iter().map(|(_, uri)| uri).collect();
        let disks = a
            .disk_profile
            .as_deref()
            .map(|p| profile(&profiles.disks, p, "disk"))
            .transpose()?;
        let mut keys = Vec::new();
        for f in &a.ssh_keys {
            let text = std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        Ok(Common {
            from: a.from.clone(),
            cpus: a.cpus,
            memory: a.memory,
            nics,
            disks,
            hypervisors,
            linked: a.linked,
            keys,
            site: a.site.clone(),
            start: !a.no_start,
            autostart: !a.no_autostart,
            placement: a.placement.unwrap_or(profiles.placement),
            api: a.server.api()?,
        })
    }

    fn request<'a>(&'a self, name: &'a str, hypervisors: &'a [String]) -> vm::deploy::DeployRequest<'a> {
        vm::deploy::DeployRequest {
            name,
            template: &self.from,
            vcpus: self.cpus,
            memory_mib: self.memory,
            nics: self.nics.as_ref(),
            disks: self.disks.as_deref(),
            linked: self.linked,
            start: self.start,
            autostart: self.autostart,
            hypervisors,
        }
    }

    /// Store `name`'s NoCloud seed on the running provd.
    fn issue_seed(&self, name: &str) -> Result<crate::nocloud::Seed, vm::deploy::SeedIssueError> {
        let request = crate::nocloud::SeedRequest {
            hostname: name.to_string(),
            ssh_keys: self.keys.clone(),
            site: self.site.clone(),
        };
        self.api
            .post_body("/api/nocloud", &request)
            .and_then(|r| self.api.require::<crate::nocloud::Seed>(r))
            .map_err(vm::deploy::SeedIssueError::from)
    }
}

/// `provd vm deploy`: one VM, or a batch with --count.
pub fn run(a: DeployArgs) -> anyhow::Result<std::process::ExitCode> {
    let common = Common::resolve(&a)?;
    match (&a.name, &a.name_pattern) {
        (Some(name), None) => {
            deploy_one(&common, name, a.json)?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        (None, Some(pattern)) => {
            let names = vm::batch::names(pattern, a.count.unwrap_or(1), a.first)?;
            let deploy = |name: &str, uri: &str, report: &mut dyn FnMut(vm::deploy::DeployStep)| {
                // Placed already: deploy_on uses `h`, not the request's candidates.
                let h = Hypervisor::connect(uri)?;
                vm::deploy::deploy_on(&h, &common.request(name, &[]), || common.issue_seed(name), report)
            };
            let batch = vm::batch_deploy::Batch {
                hypervisors: &common.hypervisors,
                template: &common.from,
                memory_mib: common.memory,
                placement: common.placement,
                deploy: &deploy,
            };
            super::batch::run(&batch, &names, a.parallel, a.json)
        }
        // clap enforces one of the two.
        _ => anyhow::bail!("give a NAME or --name-pattern (with --count)"),
    }
}

/// The ready, undrained hypervisors of `site` in the running provd's pool, as URIs.
fn site_hypervisors(
    server: &super::ServerTarget,
    site: &str,
    pkipath: Option<&std::path::Path>,
) -> anyhow::Result<Vec<(String, String)>> {
    let uris = super::hypervisors::pool_hosts(server, site, pkipath, false)?;
    if uris.is_empty() {
        anyhow::bail!("site {site:?} has no ready, undrained hypervisor (see `provd hypervisors list --site {site}`)");
    }
    Ok(uris)
}

fn deploy_one(c: &Common, name: &str, json: bool) -> anyhow::Result<()> {
    let mut disk_progress = DiskProgress::default().callback();
    let deployed = vm::deploy::deploy(
        &c.request(name, &c.hypervisors),
        || c.issue_seed(name),
        &mut |step| match step {
            vm::deploy::DeployStep::PassedOver { uri, reason } => eprintln!("warning: passing over {uri}: {reason}"),
            vm::deploy::DeployStep::Placed {
                uri,
                free_memory_mib,
                need_mib,
            } => eprintln!("{name}: placed on {uri} ({free_memory_mib} MiB free, needs {need_mib} MiB)"),
            vm::deploy::DeployStep::Disk(e) => disk_progress(e),
        },
    )?;
    if json {
        println!("{}", serde_json::to_string_pretty(&deployed)?);
        return Ok(());
    }
    println!(
        "{}: deployed on {} ({}{}), instance {}, seed {}",
        deployed.vm.name,
        deployed.uri,
        if deployed.started { "started" } else { "defined" },
        if deployed.autostart { ", autostart" } else { "" },
        deployed.seed.instance_id,
        deployed.seed.url
    );
    Ok(())
}

/// Progress of a clone's disks: a bar per full copy on a terminal (the bytes written so far
/// are read from the new file when it is local), one line per disk otherwise.
#[derive(Default)]
pub(super) struct DiskProgress {
    poller: Option<(
        std::sync::Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
    started: Option<std::time::Instant>,
}

impl DiskProgress {
    pub(super) fn callback(mut self) -> impl FnMut(CloneEvent) {
        move |event| match event {
            CloneEvent::DiskStart { disk, linked, bytes } => {
                self.started = Some(std::time::Instant::now());
                if linked {
                    eprintln!(
                        "  {}: overlay {} on {}",
                        disk.target,
                        disk.dest.display(),
                        disk.source.display()
                    );
                    return;
                }
                eprintln!(
                    "  {}: copying {} ({} MiB used) to {}",
                    disk.target,
                    disk.source.display(),
                    bytes >> 20,
                    disk.dest.display()
                );
                let bar = indicatif::ProgressBar::new(bytes.max(1));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "  {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                    )
                    .expect("a valid template"),
                );
                let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (stop2, dest) = (stop.clone(), disk.dest.clone());
                let poll = std::thread::spawn(move || {
                    use std::os::unix::fs::MetadataExt;
                    while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                        if let Ok(m) = std::fs::metadata(&dest) {
                            bar.set_position(m.blocks() * 512);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(200));
                    }
                    bar.finish_and_clear();
                });
                self.poller = Some((stop, poll));
            }
            CloneEvent::DiskDone { disk } => {
                if let Some((stop, poll)) = self.poller.take() {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = poll.join();
                }
                let secs = self.started.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
                eprintln!("  {}: done in {secs:.1} s", disk.target);
            }
        }
    }
}

/// A named profile, or an error that lists the known ones.
pub(super) fn profile<T: Clone>(
    m: &std::collections::BTreeMap<String, T>,
    name: &str,
    kind: &str,
) -> anyhow::Result<T> {
    crate::config::VmProfiles::named(m, name, kind).map_err(anyhow::Error::msg)
}
