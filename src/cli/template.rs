//! `provd vm template push`: a template onto every ready hypervisor of a site that lacks
//! it, in parallel, through libvirt's storage streams (`vm::push`), with a progress bar per
//! host and a result table (or `--json`). `version` and `versions`: freeze a template's
//! current state as its next version, and list its versions with their clones
//! (`vm::version`).

use crate::vm::{self, Hypervisor};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum TemplateCommand {
    /// Copy TEMPLATE (its disks and definition) to every ready hypervisor of --site that
    /// lacks it. Each copy is checked by SHA-256 and is all or nothing per host.
    Push {
        template: String,
        #[arg(long)]
        site: String,
        /// Where the template is (a libvirt URI). Default: the first ready hypervisor of the
        /// site that has it.
        #[arg(long)]
        from: Option<String>,
        /// The libvirt client credentials to reach the site's hypervisors with.
        #[arg(long)]
        pkipath: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: super::ServerTarget,
    },
    /// Freeze TEMPLATE as it is now into its next version, TEMPLATE-vN (a full copy of its
    /// disks). Clones and deploys --from TEMPLATE then use the newest version, and TEMPLATE
    /// itself may be started, changed and sysprepped again without touching them.
    Version {
        template: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: super::Target,
    },
    /// TEMPLATE's versions on one hypervisor, with their clones (running and all).
    Versions {
        template: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: super::Target,
    },
}

#[derive(serde::Serialize)]
struct Outcome {
    hypervisor: String,
    ok: bool,
    disks: Vec<vm::push::PushedDisk>,
    error: Option<String>,
}

pub fn run(cmd: TemplateCommand) -> anyhow::Result<bool> {
    match cmd {
        TemplateCommand::Push {
            template,
            site,
            from,
            pkipath,
            json,
            server,
        } => push(&template, &site, from, pkipath, json, &server),
        TemplateCommand::Version { template, json, target } => {
            freeze(&template, json, &target)?;
            Ok(true)
        }
        TemplateCommand::Versions { template, json, target } => {
            versions(&template, json, &target)?;
            Ok(true)
        }
    }
}

/// `vm template version`: the copy's progress per disk, then the version made.
fn freeze(template: &str, json: bool, target: &super::Target) -> anyhow::Result<()> {
    let h = Hypervisor::connect(target.uri())?;
    let mut progress = super::deploy::DiskProgress::default().callback();
    let (d, number) = h.freeze_version(template, &mut progress)?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "template": template, "version": number, "domain": d })
        );
    } else {
        println!(
            "{}: version {number} of {template} (clones and deploys --from {template} now use it)",
            d.name
        );
    }
    Ok(())
}

/// `vm template versions`: one line per version, oldest first.
fn versions(template: &str, json: bool, target: &super::Target) -> anyhow::Result<()> {
    let list = Hypervisor::connect(target.uri())?.template_versions(template)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("{template} has no versions here (`provd vm template version {template}` makes one)");
        return Ok(());
    }
    println!("{:<32} {:>7} {:>7} {:>7}", "VERSION", "NUMBER", "CLONES", "RUNNING");
    for v in &list {
        println!(
            "{:<32} {:>7} {:>7} {:>7}",
            v.name,
            v.number,
            v.clones.len(),
            v.running_clones.len()
        );
    }
    Ok(())
}

fn push(
    template: &str,
    site: &str,
    from: Option<String>,
    pkipath: Option<PathBuf>,
    json: bool,
    server: &super::ServerTarget,
) -> anyhow::Result<bool> {
    let uris = super::hypervisors::pool_uris(server, site, pkipath.as_deref(), true)?;
    if uris.is_empty() {
        anyhow::bail!("site {site:?} has no ready hypervisor (see `provd hypervisors list --site {site}`)");
    }
    let mut lacking = Vec::new();
    let mut source = from;
    for uri in &uris {
        let has = Hypervisor::connect(uri)?.info(template).is_ok();
        if has && source.is_none() {
            source = Some(uri.clone());
        } else if !has {
            lacking.push(uri.clone());
        }
    }
    let Some(source) = source else {
        anyhow::bail!("no ready hypervisor of site {site:?} has a template named {template:?} (or pass --from URI)");
    };
    if lacking.is_empty() {
        println!("every ready hypervisor of site {site} has {template}");
        return Ok(true);
    }
    // The size to show progress against: the template's disks as the source reports them.
    let total: u64 = {
        let h = Hypervisor::connect(&source)?;
        let xml = h.xml(template)?;
        let plan = vm::clone_xml::plan_clone(&xml, template, false, &mut || crate::mac::MacAddr([0; 6]))?;
        plan.disks.iter().filter_map(|d| h.volume_size(&d.source).ok()).sum()
    };
    let bars = indicatif::MultiProgress::new();
    if json {
        bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let jobs: Vec<_> = lacking
            .iter()
            .map(|dest| {
                let bar = bars.add(indicatif::ProgressBar::new(total.max(1)));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{prefix:<28} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_prefix(vm::deploy::uri_for_source(dest).to_string());
                let source = &source;
                s.spawn(move || {
                    let result = Hypervisor::connect(source).and_then(|src| {
                        let dst = Hypervisor::connect(dest)?;
                        vm::push::push(&src, template, &dst, &mut |done| bar.set_position(done))
                    });
                    bar.finish();
                    match result {
                        Ok(disks) => Outcome {
                            hypervisor: vm::deploy::uri_for_source(dest).to_string(),
                            ok: true,
                            disks,
                            error: None,
                        },
                        Err(e) => Outcome {
                            hypervisor: vm::deploy::uri_for_source(dest).to_string(),
                            ok: false,
                            disks: Vec::new(),
                            error: Some(e.to_string()),
                        },
                    }
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().expect("a push thread panicked"))
            .collect()
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for o in &outcomes {
            match &o.error {
                None => println!(
                    "{}: {template} pushed ({} disk(s), {} MiB, SHA-256 checked)",
                    o.hypervisor,
                    o.disks.len(),
                    o.disks.iter().map(|d| d.bytes).sum::<u64>() >> 20
                ),
                Some(e) => println!("{}: FAILED: {e}", o.hypervisor),
            }
        }
    }
    Ok(outcomes.iter().all(|o| o.ok))
}
