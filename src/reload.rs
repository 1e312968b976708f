//! `provd reload` and SIGHUP: read the config set again, check it exactly as `provd check`
//! and a start would (the same `config::load`, the templates every profile needs), refuse
//! it whole if anything is wrong or if it changes what only a restart can change
//! (`config::reload`), and otherwise swap it in: the inventory learns new and changed
//! hosts, then the next `Generation` (config, templates, DHCP topology, built together) is
//! published in one pointer swap. A request or packet that took the previous generation
//! finishes with it; the next takes the new one; none sees parts of both.
//!
//! What survives, by construction: leases (the lease table is state, not config, and is not
//! rebuilt), transfers in flight (each TFTP or HTTP request holds the boot policy it
//! started with), the failover connection and replication links (their config may not
//! change on a reload, so their tasks are not touched).
//!
//! Must never: apply half a config. Everything that can fail on bad input (parse,
//! validation, templates, restart-only keys) is done before the first change.

use crate::assets::images::Catalog;
use crate::boot::Boot;
use crate::config::{Config, ConfigErrors, HostIndex};
use crate::generation::{Generation, Generations};
use crate::inventory::Inventory;
use crate::render::Renderer;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config has {count} error(s); nothing changed:\n{0}", count = .0.0.len())]
    Invalid(ConfigErrors),
    #[error("loading templates from {}: {source}; nothing changed", dir.display())]
    Templates {
        dir: PathBuf,
        source: crate::render::RenderError,
    },
    /// A template is missing, or a profile's OS image (or its checksum) under the assets
    /// directory.
    #[error("{0}; nothing changed")]
    Startup(#[from] crate::boot::StartupError),
    #[error("reading the config set: {0}; nothing changed")]
    Task(#[from] tokio::task::JoinError),
    #[error("this change needs a restart of provd; nothing changed: {}", .0.join("; "))]
    RestartNeeded(Vec<String>),
    /// The new config is valid but the store refused a host record: the hosts written so
    /// far follow the new config, DHCP and boot scripts still the old one.
    #[error("the store failed while recording the new hosts ({0}); DHCP and boot still use the previous config")]
    Store(crate::store::Failure),
}

impl ReloadError {
    /// Re-indexing hosts fails only in the store; anything else is kept as text of kind
    /// "other" rather than lost.
    fn from_inventory(e: crate::inventory::InventoryError) -> Self {
        match e {
            crate::inventory::InventoryError::Store(f) => ReloadError::Store(f),
            other => ReloadError::Store(crate::store::Failure {
                kind: crate::store::ErrorKind::Other,
                message: other.to_string(),
            }),
        }
    }
}

/// What a reload did (`POST /api/reload` answers it; `provd reload` reads it).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReloadReport {
    /// The generation now current: how many reloads this daemon has applied since it
    /// started (this one included).
    pub generation: u64,
    pub files: Vec<PathBuf>,
    pub hosts_added: Vec<String>,
    pub hosts_removed: Vec<String>,
    /// Host records whose state changed to follow the config (new hosts included).
    pub records_changed: usize,
    pub notes: Vec<String>,
}

/// `POST /api/hosts/<mac>/adopt`: what the operator names for a discovered machine.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AdoptRequest {
    pub hostname: String,
    pub profile: Option<String>,
    pub ip: Option<std::net::Ipv4Addr>,
    pub site: Option<String>,
    /// The host entry's `bmc` table, as in the config.
    pub bmc: Option<toml::Table>,
}

/// What an adoption answers: the host as it is now, the file its entry went to and the
/// reload that took it in.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AdoptAnswer {
    pub host: Option<crate::inventory::HostRecord>,
    pub file: PathBuf,
    pub reload: ReloadReport,
}

/// Everything a reload reads and replaces.
pub struct Reloader {
    /// The paths `provd serve` was given (directories are read again: a new file counts).
    pub paths: Vec<PathBuf>,
    /// `--site` of `provd serve` (empty: every site).
    pub sites: Vec<String>,
    pub generations: Arc<Generations>,
    pub inventory: Arc<Inventory>,
    /// One reload at a time (a SIGHUP during `provd reload` waits for it): build, reindex
    /// and publish are one step for other reloads.
    running: tokio::sync::Mutex<()>,
    /// One adoption at a time (each is a file write and a reload).
    adopting: tokio::sync::Mutex<()>,
}

impl Reloader {
    pub fn new(
        paths: Vec<PathBuf>,
        sites: Vec<String>,
        generations: Arc<Generations>,
        inventory: Arc<Inventory>,
    ) -> Self {
        Reloader {
            paths,
            sites,
            generations,
            inventory,
            running: tokio::sync::Mutex::new(()),
            adopting: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let _one = self.running.lock().await;
        let current = self.generations.current();
        let paths = self.paths.clone();
        let (new, renderer, images) = tokio::task::spawn_blocking(move || read(&paths)).await??;
        let served_new: Vec<String> = match new.select_sites(&self.sites) {
            Ok(s) => s.iter().map(|s| s.name.clone()).collect(),
            Err(e) => return Err(ReloadError::RestartNeeded(vec![e.to_string()])),
        };
        let restart = crate::config::reload::restart_needed(&current.config, &new, &current.served, &served_new);
        if !restart.is_empty() {
            return Err(ReloadError::RestartNeeded(restart));
        }

        // Checked; now apply. Host records first: by the time a request of the new
        // generation names a new host, its record exists, as at start.
        let (hosts_added, hosts_removed) = host_changes(&current.config.hosts, &new.hosts, &current.served);
        let records_changed = self
            .inventory
            .reindex(&new.hosts)
            .await
            .map_err(ReloadError::from_inventory)?;
        let next = Generation::new(current.number + 1, Arc::new(new), served_new, renderer, images);
        let new = next.config.clone();
        let number = next.number;
        self.generations.publish(next);
        let report = ReloadReport {
            generation: number,
            files: new.files.clone(),
            hosts_added,
            hosts_removed,
            records_changed,
            notes: new.notes(),
        };
        tracing::info!(
            "config reloaded (generation {}): {} file(s), hosts added [{}], removed [{}], {} record(s) changed",
            report.generation,
            report.files.len(),
            report.hosts_added.join(", "),
            report.hosts_removed.join(", "),
            report.records_changed
        );
        Ok(report)
    }
}

/// Parse and validate the config set, load its templates and find its profiles' images
/// (blocking file reads).
fn read(paths: &[PathBuf]) -> Result<(Config, Renderer, Catalog), ReloadError> {
    let new = crate::config::load(paths).map_err(ReloadError::Invalid)?;
    let renderer = Renderer::load(&new.daemon.templates_dir).map_err(|source| ReloadError::Templates {
        dir: new.daemon.templates_dir.clone(),
        source,
    })?;
    Boot::check_templates(&new, &renderer)?;
    let images = Boot::load_images(&new)?;
    Ok((new, renderer, images))
}

/// Hostnames added and removed among the served sites' hosts.
fn host_changes(old: &HostIndex, new: &HostIndex, served: &[String]) -> (Vec<String>, Vec<String>) {
    let names = |i: &HostIndex| {
        i.iter()
            .filter(|e| served.contains(&e.site))
            .map(|e| e.host.hostname.clone())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let (a, b) = (names(old), names(new));
    (b.difference(&a).cloned().collect(), a.difference(&b).cloned().collect())
}

/// A host to add to the config files (`provd hosts adopt`).
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct NewHost {
    pub site: String,
    pub mac: crate::mac::MacAddr,
    pub hostname: String,
    pub profile: Option<String>,
    pub ip: Option<std::net::Ipv4Addr>,
    /// `{ driver, address, credentials }` as in a host entry.
    pub bmc: Option<toml::Table>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "provd serve was given config files, not a directory, and no [daemon] hosts_dir: adopt writes \
         hosts-<site>.toml into one of them (set hosts_dir, or start provd with --config DIR)"
    )]
    NoConfigDirectory,
    #[error("{0}: {1}")]
    Write(PathBuf, String),
    /// The file with the new entry did not reload: it was put back as it was.
    #[error("the new host entry was not accepted, and {0} is as it was: {1}")]
    Refused(PathBuf, ReloadError),
}

impl Reloader {
    /// Append `host` as a `[[hosts]]` entry to `<config dir>/hosts-<site>.toml` and reload.
    /// If the reload refuses it (a duplicate name or address, an unknown profile, ...), the
    /// file is put back as it was and nothing changed. The files stay the source of truth.
    pub async fn adopt(&self, host: &NewHost) -> Result<(ReloadReport, PathBuf), AdoptError> {
        let _one = self.adopting.lock().await;
        // `[daemon] hosts_dir` when the config names one (the package: /etc/provd is not
        // the daemon's to write), else the config directory.
        let hosts_dir = self.generations.current().config.daemon.hosts_dir.clone();
        let dir = match &hosts_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(|e| AdoptError::Write(d.clone(), e.to_string()))?;
                d
            }
            None => self
                .paths
                .iter()
                .find(|p| p.is_dir())
                .ok_or(AdoptError::NoConfigDirectory)?,
        };
        // The site name becomes part of a file name: only a plain name may.
        if host.site.is_empty() || host.site.starts_with('.') || host.site.contains(['/', '\\', '\0']) {
            return Err(AdoptError::Write(
                dir.clone(),
                format!("site name {:?} cannot name a file", host.site),
            ));
        }
        let file = dir.join(format!("hosts-{}.toml", host.site));
        let before = std::fs::read_to_string(&file).ok();
        let mut entry = toml::Table::new();
        entry.insert("site".into(), host.site.clone().into());
        entry.insert("mac".into(), host.mac.to_string().into());
        entry.insert("hostname".into(), host.hostname.clone().into());
        if let Some(p) = &host.profile {
            entry.insert("profile".into(), p.clone().into());
        }
        if let Some(ip) = host.ip {
            entry.insert("ip".into(), ip.to_string().into());
        }
        if let Some(b) = &host.bmc {
            entry.insert("bmc".into(), b.clone().into());
        }
        let mut doc = toml::Table::new();
        doc.insert("hosts".into(), toml::Value::Array(vec![entry.into()]));
        let text = toml::to_string(&doc).map_err(|e| AdoptError::Write(file.clone(), e.to_string()))?;
        let header = "# Hosts adopted with `provd hosts adopt` (one [[hosts]] entry each); edit freely.\n";
        let new = match &before {
            Some(old) => format!("{old}\n# adopted {}\n{text}", crate::clock::unix_now()),
            None => format!("{header}\n# adopted {}\n{text}", crate::clock::unix_now()),
        };
        write_atomically(&file, &new).map_err(|e| AdoptError::Write(file.clone(), e.to_string()))?;
        match self.reload().await {
            Ok(report) => Ok((report, file)),
            Err(e) => {
                let restored = match &before {
                    Some(old) => write_atomically(&file, old),
                    None => std::fs::remove_file(&file),
                };
                if let Err(w) = restored {
                    tracing::error!("adopt: could not put {} back: {w}", file.display());
                }
                Err(AdoptError::Refused(file, e))
            }
        }
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}
