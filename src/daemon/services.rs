//! `Services`: everything `provd serve` is made of, built from the config and the state
//! directory (templates, assets, store, leases, inventory, CA, journal, counters) and bound
//! to no socket. `daemon::serve` runs it on `Listeners`; in-process tests call its routers,
//! its TFTP server and its DHCP loop directly.

use super::Peers;
use crate::boot::policy::{BootPolicy, StandardPolicy};
use crate::boot::{Boot, BootSource, BootState};
use crate::config::Config;
use crate::dhcp::Leases;
use crate::dhcp::leases::LeaseTable;
use crate::dhcp::stats::DhcpStats;
use crate::generation::{Generation, Generations};
use crate::http::{AppParts, AppState, HttpStats};
use crate::inventory::{self, Inventory};
use crate::render::Renderer;
use crate::store::Store;
use crate::tftp::{TftpServer, TftpStats};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::sync::Arc;

/// Everything `provd serve` is made of, built from the config and the state directory but
/// bound to no socket: the daemon adds listeners; in-process tests call the routers, the
/// TFTP server and the DHCP loop on it directly.
pub struct Services {
    /// The config generation as of the last start or reload (config, templates, DHCP
    /// topology: swapped as one).
    generations: Arc<Generations>,
    served: Vec<String>,
    store: Store,
    leases: Leases,
    inventory: Arc<Inventory>,
    /// The boot policy over the current generation.
    boot: BootSource,
    /// The cap on BMC calls in flight.
    power: Arc<crate::bmc::Power>,
    /// `provd reload` and SIGHUP.
    reloader: Arc<crate::reload::Reloader>,
    journal: Arc<crate::journal::Journal>,
    nocloud: Arc<crate::nocloud::Registry>,
    dhcp_stats: Arc<DhcpStats>,
    tftp_stats: Arc<TftpStats>,
    http_stats: Arc<HttpStats>,
    assets_root: PathBuf,
    api_token: Arc<crate::http::auth::ApiToken>,
    /// Where the store, the API token and (by default) the CA live.
    state_dir: PathBuf,
    /// The CA, when there is one (the pair's replication certificates come from it).
    ca: Option<Arc<crate::pki::Ca>>,
    /// Installed hypervisors as provd verified them.
    pool: Arc<crate::pool::Pool>,
    /// The web console's sessions.
    console: Arc<crate::http::session::Sessions>,
    /// The sites' DNS updates (status; the task runs in `serve`).
    dns: Arc<crate::dns::updater::DnsUpdater>,
    /// Hosts' static addresses (the reconcile task runs in `serve`).
    ipam: Arc<crate::ipam::Ipam>,
    /// The region's revocation list this site keeps for its hypervisors.
    region_crl: Arc<crate::pki::region_crl::RegionCrl>,
}

impl Services {
    /// Load templates, check assets, open the store and the inventory, restore leases, and
    /// load the CA if there is one. Every failure here is a startup failure.
    /// `config_paths`: what a reload reads again (the config's own files when empty).
    pub fn build(
        config: Arc<Config>,
        config_paths: &[PathBuf],
        sites: &[String],
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Services> {
        Services::build_with(config, config_paths, sites, state_dir, None)
    }

    /// `build` with another boot policy than the config's and the inventory's: every
    /// protocol asks it (DHCP for the first stage, HTTP and TFTP for the script). For tests
    /// that show each protocol follows the policy, as pixiecore's `booterFunc` does.
    pub fn build_with_policy(
        config: Arc<Config>,
        state_dir: &std::path::Path,
        policy: Arc<dyn BootPolicy>,
    ) -> anyhow::Result<Services> {
        Services::build_with(config, &[], &[], state_dir, Some(policy))
    }

    fn build_with(
        config: Arc<Config>,
        config_paths: &[PathBuf],
        sites: &[String],
        state_dir: &std::path::Path,
        policy: Option<Arc<dyn BootPolicy>>,
    ) -> anyhow::Result<Services> {
        let config_paths = if config_paths.is_empty() {
            &config.files[..]
        } else {
            config_paths
        };
        let served = config.select_sites(sites)?;
        let served_names: Vec<String> = served.iter().map(|s| s.name.clone()).collect();

        let renderer = Renderer::load(&config.daemon.templates_dir)
            .with_context(|| format!("loading templates from {}", config.daemon.templates_dir.display()))?;
        Boot::check_templates(&config, &renderer)?;
        let images = Boot::load_images(&config)?;
        let assets_root = crate::served_root::canonical_root(&config.daemon.assets_dir).with_context(|| {
            format!(
                "assets directory {} (create it, or run `provd assets init`)",
                config.daemon.assets_dir.display()
            )
        })?;

        // Files under the assets directory are served to anyone on the boot network.
        if let Some(what) = crate::config::secrets_under_assets(&assets_root, &config.daemon, state_dir) {
            bail!(
                "{what} is inside [daemon] assets_dir {}, which TFTP and HTTP serve to every machine on \
                 the boot network: move it out (set [daemon] state_dir / pki_dir / bmc_secrets, or --state-dir)",
                assets_root.display()
            );
        }
        let store = Store::open(state_dir)?;
        let api_token = Arc::new(crate::http::auth::ApiToken::load_or_create(state_dir).with_context(|| {
            format!(
                "the admin API token ({})",
                crate::http::auth::token_path(state_dir).display()
            )
        })?);
        let records = store.load_leases()?;
        tracing::info!("loaded {} lease records from {}", records.len(), state_dir.display());
        let inventory = Arc::new(Inventory::load(
            store.clone(),
            &config.hosts,
            &served,
            inventory::DEFAULT_TOKEN_TTL,
        )?);
        let ipam = Arc::new(crate::ipam::Ipam::load(store.clone())?);
        // Before anything is served: a host's first certificate request already names its
        // static addresses (reloads are followed by `ipam::run`).
        ipam.reconcile_blocking(&config, &served_names)?;
        let generation = Generation::new(0, config.clone(), served_names.clone(), renderer, images);
        let policy = policy.unwrap_or_else(|| Arc::new(StandardPolicy::new(inventory.clone())));
        let leases = Leases::with_policy(&generation.topology, LeaseTable::restore(&records), policy.clone());
        let journal = Arc::new(crate::journal::Journal::new(leases.clone()));
        let certificates = crate::pki::registry::Registry::load(store.clone())?;
        let pki_dir = config.daemon.pki_dir(state_dir);
        let ca = match crate::pki::Ca::load(&pki_dir) {
            Ok(ca) => {
                tracing::info!(
                    "CA loaded from {}: hosts can have libvirt certificates signed",
                    pki_dir.display()
                );
                Some(Arc::new(ca))
            }
            Err(crate::pki::PkiError::NoCa { .. }) => {
                tracing::info!(
                    "no CA in {}: certificate requests are refused until `provd pki init`",
                    pki_dir.display()
                );
                None
            }
            Err(e) => return Err(e.into()),
        };
        let nocloud = Arc::new(crate::nocloud::Registry::load(store.clone()).context("nocloud seeds")?);
        let region_root = super::region_root(&config)?;
        let region_crl = Arc::new(crate::pki::region_crl::RegionCrl::load(
            crate::pki::region_crl::path_in(state_dir),
            region_root,
        ));
        let generations = Arc::new(Generations::new(generation));
        let boot = BootSource::new(
            generations.clone(),
            Arc::new(
                BootState::new(
                    inventory.clone(),
                    Arc::new(leases.clone()),
                    Arc::new(crate::pki::signer::Signer::new(ca.clone(), certificates)),
                    policy,
                )
                .with_ipam(ipam.clone()),
            ),
        );
        let reloader = Arc::new(crate::reload::Reloader::new(
            config_paths.to_vec(),
            sites.to_vec(),
            generations.clone(),
            inventory.clone(),
        ));
        Ok(Services {
            served: served_names,
            store,
            leases,
            inventory,
            boot,
            power: Default::default(),
            reloader,
            journal,
            nocloud,
            dhcp_stats: Arc::new(DhcpStats::default()),
            tftp_stats: Arc::new(TftpStats::default()),
            http_stats: Arc::new(HttpStats::default()),
            assets_root,
            api_token,
            generations,
            state_dir: state_dir.to_path_buf(),
            ca,
            pool: Default::default(),
            console: Default::default(),
            dns: Default::default(),
            ipam,
            region_crl,
        })
    }

    /// What the HTTP handlers of one listener share (`listener_site`: None for the API);
    /// `peers`: the pair's running parts, whose status the API shows (`Peers::default()`
    /// for a server without a partner).
    pub fn app_state(&self, peers: &Peers, listener_site: Option<String>) -> AppState {
        AppState::new(AppParts {
            boot: self.boot.clone(),
            inventory: self.inventory.clone(),
            store: self.store.clone(),
            leases: self.leases.clone(),
            dhcp_stats: self.dhcp_stats.clone(),
            tftp_stats: self.tftp_stats.clone(),
            http_stats: self.http_stats.clone(),
            assets_root: self.assets_root.clone(),
            journal: self.journal.clone(),
            nocloud: self.nocloud.clone(),
            failover: peers.failover.clone(),
            listener_site,
            api_token: self.api_token.clone(),
            replication: peers.replication.clone(),
            pool: self.pool.clone(),
            reloader: self.reloader.clone(),
            power: self.power.clone(),
            console: self.console.clone(),
            dns: self.dns.clone(),
            ipam: self.ipam.clone(),
            region_crl: self.region_crl.clone(),
        })
    }

    /// The TFTP server (read-only assets plus per-host generated files).
    pub fn tftp(&self) -> anyhow::Result<TftpServer> {
        // One generation per request: admission and generated files from one scope.
        Ok(TftpServer::new(
            self.assets_root.clone(),
            Arc::new(crate::tftp::NoGenerated),
            self.tftp_stats.clone(),
        )?
        .with_scopes(Arc::new(self.boot.clone()))
        .with_journal(self.journal.clone()))
    }
}

/// Read-only views: `Services` is the one owner of these parts; listeners and tests get
/// references or clones, never a way to swap one out from under the others.
impl Services {
    /// Hosts' static addresses.
    pub fn ipam(&self) -> &Arc<crate::ipam::Ipam> {
        &self.ipam
    }

    /// The sites' DNS updates.
    pub fn dns(&self) -> &Arc<crate::dns::updater::DnsUpdater> {
        &self.dns
    }

    /// The config generation as of the last start or reload.
    pub fn generations(&self) -> &Arc<Generations> {
        &self.generations
    }

    /// The names of the sites this server serves.
    pub fn served(&self) -> &[String] {
        &self.served
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.inventory
    }

    /// The boot policy over the current generation.
    pub fn boot(&self) -> &BootSource {
        &self.boot
    }

    /// The cap on BMC calls in flight.
    pub fn power(&self) -> &Arc<crate::bmc::Power> {
        &self.power
    }

    /// `provd reload` and SIGHUP.
    pub fn reloader(&self) -> &Arc<crate::reload::Reloader> {
        &self.reloader
    }

    pub fn journal(&self) -> &Arc<crate::journal::Journal> {
        &self.journal
    }

    pub fn nocloud(&self) -> &Arc<crate::nocloud::Registry> {
        &self.nocloud
    }

    pub fn dhcp_stats(&self) -> &Arc<DhcpStats> {
        &self.dhcp_stats
    }

    pub fn tftp_stats(&self) -> &Arc<TftpStats> {
        &self.tftp_stats
    }

    pub fn http_stats(&self) -> &Arc<HttpStats> {
        &self.http_stats
    }

    pub fn assets_root(&self) -> &std::path::Path {
        &self.assets_root
    }

    pub fn api_token(&self) -> &Arc<crate::http::auth::ApiToken> {
        &self.api_token
    }

    /// Where the store, the API token and (by default) the CA live.
    pub fn state_dir(&self) -> &std::path::Path {
        &self.state_dir
    }

    /// The CA, when there is one.
    pub fn ca(&self) -> Option<&Arc<crate::pki::Ca>> {
        self.ca.as_ref()
    }

    /// Installed hypervisors as provd verified them.
    pub fn pool(&self) -> &Arc<crate::pool::Pool> {
        &self.pool
    }

    /// The web console's sessions.
    pub fn console(&self) -> &Arc<crate::http::session::Sessions> {
        &self.console
    }
}
