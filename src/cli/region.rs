//! `provd region ...` (the region's own commands: serve, init, add-site, revoke-site,
//! sites, hosts, events) and `provd --region URL <command>`: the everyday commands
//! (`hosts list|show|reinstall|mark-installed|netboot`, `power`, `hypervisors
//! drain|undrain`) sent to the region instead of one site's daemon. A read shows every
//! site; a write finds the site that owns the host (`--site` when two sites have one by
//! that name) and the region forwards it there.

use super::client::{self, Api};
use crate::inventory::HostRecord;
use crate::region::api::{Health, RegionHost, SiteView};
use crate::region::config as region_config;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

const DEFAULT_REGION_CONFIG: &str = "/etc/provd/region.toml";

/// How a client command finds the region: `--region URL` (or the config's listen address)
/// and its token (`--region-token-file`, or the config's `<state_dir>/api-token`).
#[derive(clap::Args, Clone, Default)]
pub struct RegionTarget {
    /// The region's API, e.g. http://127.0.0.1:7070 (default: listen of the region config).
    #[arg(long, global = true, env = "PROVD_REGION")]
    pub region: Option<String>,
    /// The region's API token (default: <state_dir>/api-token of the region config).
    #[arg(long, global = true)]
    pub region_token_file: Option<PathBuf>,
    /// The region's config (for its address and token when not given).
    #[arg(long, global = true, env = "PROVD_REGION_CONFIG")]
    pub region_config: Option<PathBuf>,
}

impl RegionTarget {
    pub fn api(&self) -> anyhow::Result<Api> {
        let config_path = self
            .region_config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_REGION_CONFIG));
        let cfg = region_config::load(&config_path).ok();
        let base = match (&self.region, &cfg) {
            (Some(u), _) if u.contains("://") => u.trim_end_matches('/').to_string(),
            (Some(a), _) => format!("http://{a}"),
            (None, Some(c)) => format!("{}://{}", if c.tls { "https" } else { "http" }, c.listen),
            (None, None) => anyhow::bail!(
                "where is the region? pass --region URL (or --region-config FILE; {DEFAULT_REGION_CONFIG} is not readable)"
            ),
        };
        let file = self
            .region_token_file
            .clone()
            .or_else(|| cfg.as_ref().map(|c| crate::http::auth::token_path(&c.state_dir)))
            .unwrap_or_else(|| PathBuf::from("/var/lib/provd-region/api-token"));
        let token = crate::http::auth::read_token(&file).ok();
        let tls = match &cfg {
            Some(c) if base.starts_with("https://") => {
                let ca = std::fs::read(c.pki_dir().join(crate::pki::CA_CERT))?;
                Some(
                    ureq::tls::TlsConfig::builder()
                        .root_certs(ureq::tls::RootCerts::new_with_certs(&[
                            ureq::tls::Certificate::from_pem(&ca)?.to_owned(),
                        ]))
                        .build(),
                )
            }
            _ => None,
        };
        Ok(Api::with_tls(base, token, file.display().to_string(), tls))
    }
}

#[derive(Subcommand)]
pub enum RegionCommand {
    /// Run the region: follow every site of the config over mutual TLS, keep a copy of
    /// their hosts, journal, pool and lease counts, serve one API over all of them and
    /// forward writes to the site that owns the record. Sites keep working without it.
    Serve {
        #[arg(long = "config", short = 'c', default_value = DEFAULT_REGION_CONFIG)]
        config: PathBuf,
    },
    /// Make the region's root CA and its admin certificate (in <state_dir>/pki). Give
    /// each site the root (`[daemon] region_ca = "region-root.pem"`), then `add-site`.
    Init {
        #[arg(long = "config", short = 'c', default_value = DEFAULT_REGION_CONFIG)]
        config: PathBuf,
        /// Make a new root even though one exists (a rollover: add every site again).
        #[arg(long)]
        force: bool,
    },
    /// Certify a site's CA under the region's root (a cross-signature: the site keeps its
    /// key and certificates) and trust that site's admin API through it.
    AddSite {
        /// The site's name in the region config ([sites.NAME]).
        name: String,
        /// The site's CA certificate (its pki_dir's ca-cert.pem).
        #[arg(long)]
        ca: PathBuf,
        #[arg(long = "config", short = 'c', default_value = DEFAULT_REGION_CONFIG)]
        config: PathBuf,
    },
    /// Revoke a site's cross-certificate: the region stops following it and forwarding to
    /// it at once; the root's CRL (<state_dir>/pki/crl.pem) names the certificate.
    RevokeSite {
        name: String,
        #[arg(long = "config", short = 'c', default_value = DEFAULT_REGION_CONFIG)]
        config: PathBuf,
    },
    /// Every site: health (fresh, stale, never), last contact, the address that answered,
    /// hosts by status, hypervisors, leases, the region's CRL it holds (its number, once
    /// every address of the site has it), the last error. Exit status 1 when a site is
    /// not fresh.
    Sites {
        #[arg(long)]
        json: bool,
    },
    /// Every site's hosts (or one site's), with their site and freshness.
    Hosts {
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A site's journal as the region last copied it, newest last.
    Events {
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: RegionCommand, target: &RegionTarget) -> anyhow::Result<ExitCode> {
    match cmd {
        RegionCommand::Serve { config } => {
            let cfg = region_config::load(&config)?;
            let region = crate::region::open(cfg)?;
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(crate::region::serve(region))?;
            Ok(ExitCode::SUCCESS)
        }
        RegionCommand::Init { config, force } => {
            let cfg = region_config::load(&config)?;
            let trust = crate::region::trust::Trust::new(cfg.pki_dir());
            trust.init(&cfg.name, force)?;
            println!(
                "region {}: root CA {} and the region's admin certificate in {}; give each site the root as [daemon] region_ca, then `provd region add-site NAME --ca SITE-CA.pem`",
                cfg.name,
                cfg.pki_dir().join(crate::pki::CA_CERT).display(),
                cfg.pki_dir().join("client").display()
            );
            Ok(ExitCode::SUCCESS)
        }
        RegionCommand::AddSite { name, ca, config } => {
            let cfg = region_config::load(&config)?;
            if !cfg.sites.iter().any(|s| s.name == name) {
                anyhow::bail!(
                    "{} has no [sites.{name}]: add it (with its urls) first",
                    config.display()
                );
            }
            let pem = std::fs::read_to_string(&ca).with_context(|| format!("reading {}", ca.display()))?;
            let (_, serial) = crate::region::trust::Trust::new(cfg.pki_dir()).add_site(&name, &pem)?;
            println!("site {name}: its CA is certified by the region's root (cross-certificate {serial})");
            Ok(ExitCode::SUCCESS)
        }
        RegionCommand::RevokeSite { name, config } => {
            let cfg = region_config::load(&config)?;
            let serial =
                crate::region::trust::Trust::new(cfg.pki_dir()).revoke_site(&name, crate::clock::unix_now())?;
            println!("site {name}: cross-certificate {serial} revoked; the region no longer follows or forwards to it");
            Ok(ExitCode::SUCCESS)
        }
        RegionCommand::Sites { json } => sites(target, json),
        RegionCommand::Hosts { site, json } => {
            let api = target.api()?;
            let path = match &site {
                Some(s) => format!("/api/region/hosts?site={}", client::segment(s)),
                None => "/api/region/hosts".to_string(),
            };
            let hosts: Vec<RegionHost> = api.require(api.get(&path)?)?;
            print_hosts(&hosts, json)?;
            Ok(ExitCode::SUCCESS)
        }
        RegionCommand::Events { site, limit, json } => {
            let api = target.api()?;
            let events: Vec<crate::journal::BootEvent> = api.require(api.get(&format!(
                "/api/region/events?site={}&limit={limit}",
                client::segment(&site)
            ))?)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
            } else {
                for e in &events {
                    println!(
                        "{} {:<18} {}",
                        crate::clock::rfc3339(e.at),
                        e.mac.map_or("-".to_string(), |m| m.to_string()),
                        e.detail
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn sites(target: &RegionTarget, json: bool) -> anyhow::Result<ExitCode> {
    let api = target.api()?;
    let sites: Vec<SiteView> = api.require(api.get("/api/region/sites")?)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&sites)?);
    } else {
        println!(
            "{:<12} {:<7} {:>9} {:>6} {:>5} {:>6} {:>10} {:<28} ERROR",
            "SITE", "HEALTH", "CONTACT", "HOSTS", "HV", "LEASES", "CRL", "REACHED"
        );
        for s in &sites {
            println!(
                "{:<12} {:<7} {:>9} {:>6} {:>5} {:>6} {:>10} {:<28} {}",
                s.name,
                health_word(s.health),
                s.age_secs.map_or("never".into(), |a| format!("{a}s ago")),
                s.hosts,
                format!("{}/{}", s.hypervisors_ready, s.hypervisors),
                s.leases.bound,
                s.crl_number.map_or("-".into(), |n| n.to_string()),
                s.reached.as_deref().unwrap_or("-"),
                s.error.as_deref().unwrap_or("")
            );
        }
    }
    Ok(if sites.iter().all(|s| s.health == Health::Fresh) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn health_word(h: Health) -> &'static str {
    match h {
        Health::Fresh => "fresh",
        Health::Stale => "STALE",
        Health::Never => "never",
    }
}

fn print_hosts(hosts: &[RegionHost], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(hosts)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<20} {:<18} {:<11} {:<8} {:<7} UPDATED",
        "SITE", "HOST", "MAC", "STATUS", "NETBOOT", "COPY"
    );
    for h in hosts {
        println!(
            "{:<10} {:<20} {:<18} {:<11} {:<8} {:<7} {}",
            h.site,
            h.record.hostname.as_deref().unwrap_or("-"),
            h.record.mac,
            h.record.status.as_str(),
            if h.record.netboot { "on" } else { "off" },
            health_word(h.health),
            crate::clock::rfc3339(h.record.updated)
        );
    }
    Ok(())
}

/// The one site that has `host` (or the one `site` names).
fn owner(api: &Api, host: &str, site: Option<&str>) -> anyhow::Result<RegionHost> {
    let mut path = format!("/api/region/hosts?name={}", client::segment(host));
    if let Some(s) = site {
        path.push_str(&format!("&site={}", client::segment(s)));
    }
    let mut found: Vec<RegionHost> = api.require(api.get(&path)?)?;
    match found.len() {
        0 => anyhow::bail!("no site the region follows has a host {host:?}"),
        1 => Ok(found.remove(0)),
        _ => anyhow::bail!(
            "{host:?} is at sites {}: say which with --site",
            found.iter().map(|h| h.site.as_str()).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A write forwarded to the host's site; the site's JSON answer.
fn forward(api: &Api, site: &str, path: &str, long: bool) -> anyhow::Result<serde_json::Value> {
    let url = format!("/api/region/sites/{}/{path}", client::segment(site));
    let answer = if long { api.post_long(&url)? } else { api.post(&url)? };
    api.require(answer)
}

/// `provd --region URL <command>`: the commands that make sense over every site.
pub fn via_region(command: super::Command, target: &RegionTarget) -> anyhow::Result<ExitCode> {
    use super::Command;
    use super::hosts::HostsCommand;
    use super::hypervisors::HypervisorsCommand;
    use super::power::PowerCommand;
    if let Command::Region { command } = command {
        return run(command, target);
    }
    let api = target.api()?;
    match command {
        Command::Hosts {
            command: HostsCommand::List { discovered, json, .. },
        } => {
            let mut hosts: Vec<RegionHost> = api.require(api.get("/api/region/hosts")?)?;
            if discovered {
                hosts.retain(|h| h.record.status == crate::inventory::Status::Discovered);
            }
            print_hosts(&hosts, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hosts {
            command: HostsCommand::Show { host, json, .. },
        } => {
            let h = owner(&api, &host, None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&h)?);
            } else {
                print_hosts(std::slice::from_ref(&h), false)?;
                for e in &h.record.history {
                    println!("  {}", serde_json::to_string(e)?);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Hosts {
            command: HostsCommand::Reinstall {
                select, force, power, ..
            },
        } => {
            if select.all || !select.tag.is_empty() || select.hosts.is_empty() {
                anyhow::bail!("through the region, name the hosts to reinstall (not --all or --tag)");
            }
            let mut query = Vec::new();
            if force {
                query.push("force=true");
            }
            if power {
                query.push("power=true");
            }
            let q = if query.is_empty() {
                String::new()
            } else {
                format!("?{}", query.join("&"))
            };
            each_host(
                &api,
                &select.hosts,
                select.site.as_deref(),
                select.json,
                |h| format!("hosts/{}/reinstall{q}", client::segment(h)),
                power,
            )
        }
        Command::Hosts {
            command: HostsCommand::MarkInstalled { host, .. },
        } => each_host(
            &api,
            &[host],
            None,
            false,
            |h| format!("hosts/{}/mark-installed", client::segment(h)),
            false,
        ),
        Command::Hosts {
            command: HostsCommand::Netboot { host, state, .. },
        } => each_host(
            &api,
            &[host],
            None,
            false,
            |h| format!("hosts/{}/netboot/{state}", client::segment(h)),
            false,
        ),
        Command::Power { command } => {
            let (action, select) = match command {
                PowerCommand::On { select, .. } => ("on", select),
                PowerCommand::Off { select, .. } => ("off", select),
                PowerCommand::Cycle { select, .. } => ("cycle", select),
                _ => anyhow::bail!("through the region: power on, off or cycle"),
            };
            if select.all || !select.tag.is_empty() || select.hosts.is_empty() {
                anyhow::bail!("through the region, name the hosts (not --all or --tag)");
            }
            each_host(
                &api,
                &select.hosts,
                select.site.as_deref(),
                select.json,
                |h| format!("hosts/{}/power/{action}", client::segment(h)),
                true,
            )
        }
        Command::Hypervisors {
            command: HypervisorsCommand::Drain { host, json, .. },
        } => each_host(
            &api,
            &[host],
            None,
            json,
            |h| format!("hypervisors/{}/drain", client::segment(h)),
            true,
        ),
        Command::Hypervisors {
            command: HypervisorsCommand::Undrain { host, .. },
        } => each_host(
            &api,
            &[host],
            None,
            false,
            |h| format!("hypervisors/{}/undrain", client::segment(h)),
            false,
        ),
        Command::Vm {
            command: super::vm::VmCommand::Deploy(args),
        } => deploy(&api, &args),
        _ => anyhow::bail!(
            "this command does not go through the region; with --region: hosts list|show|reinstall|mark-installed|netboot, power on|off|cycle, hypervisors drain|undrain, vm deploy --site S --count N --name-pattern P, region sites|hosts|events"
        ),
    }
}

/// `provd --region URL vm deploy --site S --count N --name-pattern P --from T ...`: the
/// batch goes to site S's `POST /api/vms/deploy`, which places it on that site's ready
/// hypervisors (the API's batch; one VM is `--count 1 --name-pattern NAME{n}`).
fn deploy(api: &Api, a: &super::deploy::DeployArgs) -> anyhow::Result<ExitCode> {
    let Some(site) = a.site.as_deref() else {
        anyhow::bail!("through the region, say which site deploys: --site S");
    };
    let (Some(count), Some(pattern)) = (a.count, a.name_pattern.as_deref()) else {
        anyhow::bail!("through the region, deploy a batch: --count N --name-pattern NAME-{{n}} (a site places it)");
    };
    if !a.hypervisors.is_empty() || a.pkipath.is_some() {
        anyhow::bail!("through the region, the site places the VMs: --hypervisor and --pkipath are not used");
    }
    let ssh_keys = a
        .ssh_keys
        .iter()
        .map(|p| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let body = serde_json::json!({
        "from": a.from, "site": site, "count": count, "name_pattern": pattern, "first": a.first,
        "placement": a.placement, "parallel": a.parallel, "cpus": a.cpus, "memory_mib": a.memory,
        "nic_profile": a.nic_profile, "disk_profile": a.disk_profile, "linked": a.linked,
        "ssh_keys": ssh_keys, "no_start": a.no_start, "no_autostart": a.no_autostart,
    });
    let url = format!("/api/region/sites/{}/vms/deploy", client::segment(site));
    let answer: serde_json::Value = api.require(api.post_body_long(&url, &body)?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        for vm in answer["vms"].as_array().into_iter().flatten() {
            println!(
                "{:<20} {:<10} {}",
                vm["name"].as_str().unwrap_or("?"),
                vm["result"].as_str().unwrap_or("?"),
                vm["hypervisor"].as_str().or(vm["error"].as_str()).unwrap_or("")
            );
        }
    }
    Ok(if answer["complete"] == true {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Forward `path(host)` for each host to its owning site; print each site's answer.
fn each_host(
    api: &Api,
    hosts: &[String],
    site: Option<&str>,
    json: bool,
    path: impl Fn(&str) -> String,
    long: bool,
) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut answers = Vec::new();
    for host in hosts {
        let result = owner(api, host, site).and_then(|h| {
            let answer = forward(api, &h.site, &path(host), long)?;
            Ok((h.site, answer))
        });
        match result {
            Ok((site, answer)) => {
                if !json {
                    let state = serde_json::from_value::<HostRecord>(answer.clone())
                        .map(|r| {
                            format!(
                                "{} (netboot {})",
                                r.status.as_str(),
                                if r.netboot { "on" } else { "off" }
                            )
                        })
                        .unwrap_or_else(|_| answer.to_string());
                    println!("{host} at site {site}: {state}");
                }
                answers.push(serde_json::json!({"host": host, "site": site, "answer": answer}));
            }
            Err(e) => {
                failed = true;
                if !json {
                    eprintln!("{host}: {e:#}");
                }
                answers.push(serde_json::json!({"host": host, "error": format!("{e:#}")}));
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&answers)?);
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
