//! `provd serve`: wires config, store, inventory, DHCP, TFTP and HTTP together and runs
//! until SIGINT or SIGTERM. Startup failures (bad config, missing templates or assets, an
//! address or interface that cannot be bound) are reported and fatal; nothing after
//! startup is.
//!
//! Listeners: DHCP on each configured interface; TFTP (port 69) and boot HTTP
//! (`http_port`) on each served site's `server_address`; the admin API on `api_listen`.

use crate::boot::{Boot, BootSource, BootState};
use crate::config::Config;
use crate::dhcp::Leases;
use crate::dhcp::leases::LeaseTable;
use crate::dhcp::server::{self, Shared};
use crate::dhcp::stats::DhcpStats;
use crate::generation::{Generation, Generations};
use crate::http::{self, AppState, HttpStats};
use crate::inventory::{self, Inventory, Observation};
use crate::mac::MacAddr;
use crate::render::Renderer;
use crate::store::Store;
use crate::tftp::{TftpServer, TftpStats};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct ServeOptions {
    /// The config paths as given (a reload reads them again).
    pub config_paths: Vec<PathBuf>,
    pub sites: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub api_listen: Option<SocketAddr>,
}

pub const TFTP_PORT: u16 = 69;

/// Everything `provd serve` is made of, built from the config and the state directory but
/// bound to no socket: the daemon adds listeners; in-process tests call the routers, the
/// TFTP server and the DHCP loop on it directly.
pub struct Services {
    /// The config generation as of the last start or reload (config, templates, DHCP
    /// topology: swapped as one).
    pub generations: Arc<Generations>,
    pub served: Vec<String>,
    pub store: Store,
    pub leases: Leases,
    pub inventory: Arc<Inventory>,
    /// The boot policy over the current generation.
    pub boot: BootSource,
    /// The cap on BMC calls in flight.
    pub power: Arc<crate::bmc::Power>,
    /// `provd reload` and SIGHUP.
    pub reloader: Arc<crate::reload::Reloader>,
    pub journal: Arc<crate::journal::Journal>,
    pub nocloud: Arc<crate::nocloud::Registry>,
    pub dhcp_stats: Arc<DhcpStats>,
    pub tftp_stats: Arc<TftpStats>,
    pub http_stats: Arc<HttpStats>,
    pub assets_root: PathBuf,
    pub api_token: Arc<crate::http::auth::ApiToken>,
    /// The pair's inventory replication, one status per site with a partner (filled by
    /// `run` when it starts the links).
    pub replication: Arc<std::sync::RwLock<Vec<watch::Receiver<crate::replication::link::Status>>>>,
    /// The CA, when there is one (the pair's replication certificates come from it).
    pub ca: Option<Arc<crate::pki::Ca>>,
    /// Installed hypervisors as provd verified them.
    pub pool: Arc<crate::pool::Pool>,
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
        let config_paths = if config_paths.is_empty() {
            &config.files[..]
        } else {
            config_paths
        };
        let served = config.select_sites(sites).map_err(anyhow::Error::msg)?;
        let served_names: Vec<String> = served.iter().map(|s| s.name.clone()).collect();

        let renderer = Renderer::load(&config.daemon.templates_dir)
            .with_context(|| format!("loading templates from {}", config.daemon.templates_dir.display()))?;
        Boot::check_templates(&config, &renderer).map_err(anyhow::Error::msg)?;
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
        let generation = Generation::new(0, config.clone(), served_names.clone(), renderer);
        let leases = Leases::new(&generation.topology, LeaseTable::restore(&records));
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
        let nocloud =
            Arc::new(crate::nocloud::Registry::load(store.clone()).map_err(|e| anyhow::anyhow!("nocloud seeds: {e}"))?);
        let generations = Arc::new(Generations::new(generation));
        let boot = BootSource::new(
            generations.clone(),
            Arc::new(BootState::new(
                inventory.clone(),
                Arc::new(leases.clone()),
                Arc::new(crate::pki::signer::Signer::new(ca.clone(), certificates)),
            )),
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
            dhcp_stats: Arc::new(crate::dhcp::stats::counters()),
            tftp_stats: Arc::new(TftpStats::new(crate::tftp::COUNTERS)),
            http_stats: Arc::new(HttpStats::new(crate::http::COUNTERS)),
            assets_root,
            api_token,
            generations,
            replication: Default::default(),
            ca,
            pool: Default::default(),
        })
    }

    /// What the HTTP handlers of one listener share (`listener_site`: None for the API).
    pub fn app_state(
        &self,
        failover: Arc<Vec<crate::failover::peer::Handle>>,
        listener_site: Option<String>,
    ) -> AppState {
        AppState {
            boot: self.boot.clone(),
            inventory: self.inventory.clone(),
            certificates: self.boot.state.signer.certificates().clone(),
            store: self.store.clone(),
            leases: self.leases.clone(),
            dhcp_stats: self.dhcp_stats.clone(),
            tftp_stats: self.tftp_stats.clone(),
            http_stats: self.http_stats.clone(),
            assets_root: self.assets_root.clone(),
            journal: self.journal.clone(),
            nocloud: self.nocloud.clone(),
            failover,
            listener_site,
            api_token: self.api_token.clone(),
            // The links are started before any listener's state is made (see `run`).
            replication: Arc::new(self.replication.read().expect("replication list").clone()),
            pool: self.pool.clone(),
            reloader: self.reloader.clone(),
            power: self.power.clone(),
        }
    }

    /// The TFTP server (read-only assets plus per-host generated files).
    pub fn tftp(&self) -> anyhow::Result<TftpServer> {
        Ok(TftpServer::new(
            self.assets_root.clone(),
            Arc::new(self.boot.clone()),
            self.tftp_stats.clone(),
        )?
        .with_admission(Arc::new(self.boot.clone()))
        .with_journal(self.journal.clone()))
    }
}

pub async fn run(config: Config, opts: ServeOptions) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let api_addr = opts.api_listen.unwrap_or(config.daemon.api_listen);
    if !api_addr.ip().is_loopback() && !config.daemon.api_tls {
        bail!(
            "[daemon] api_listen (or --api-listen) is {api_addr}: without [daemon] api_tls = true the admin API \
             speaks plain HTTP, so provd serves it on a loopback address only; set api_tls = true (HTTPS with a \
             certificate from provd's CA; operators use `provd pki issue-client NAME --admin`) or use e.g. \
             api_listen = \"127.0.0.1:6767\""
        );
    }
    let state_dir = opts
        .state_dir
        .clone()
        .unwrap_or_else(|| config.daemon.state_dir.clone());
    let api_tls = if config.daemon.api_tls {
        Some(api_tls_config(&config, &state_dir, api_addr)?)
    } else {
        None
    };
    for n in config.notes() {
        tracing::warn!("{n}");
    }
    let services = Services::build(config.clone(), &opts.config_paths, &opts.sites, &state_dir)?;
    let served = config.select_sites(&opts.sites).map_err(anyhow::Error::msg)?;
    let (store, leases, inventory) = (
        services.store.clone(),
        services.leases.clone(),
        services.inventory.clone(),
    );
    let (journal, dhcp_stats, assets_root) = (
        services.journal.clone(),
        services.dhcp_stats.clone(),
        services.assets_root.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // Every certificate provd makes is in the registry (`provd pki list`, revocable): the
    // admin listener's, and what `provd pki issue-client` made while we were not looking.
    let registry = services.boot.state.signer.certificates().clone();
    let now = crate::clock::unix_now() as i64;
    let api_tls = match api_tls {
        Some((tls, cert)) => {
            let record = crate::pki::registry::CertRecord::of_pem(
                &cert,
                &format!("admin API {api_addr}"),
                crate::pki::registry::API_SERVER_ROLE,
                "start",
                now,
            );
            if let Some(r) = record {
                registry.issued(r).await?;
            }
            Some(tls)
        }
        None => None,
    };
    let pki_dir = config.daemon.pki_dir(&state_dir);
    if services.ca.is_some() {
        tasks.spawn(crate::pki::identities::import_inbox_periodically(
            registry.clone(),
            pki_dir.clone(),
            stop_rx.clone(),
        ));
    }

    // The pair's mutual TLS, per site with a partner (needs the CA): the replication link,
    // and the failover conversation when `tls = true`. Its certificate is recorded.
    let mut pair_tls = std::collections::HashMap::new();
    for site in &served {
        let (Some(f), Some(ca)) = (&site.failover, &services.ca) else {
            continue;
        };
        let tls = crate::pki::pair::PairTls::new(ca, &site.name, f.address.into())
            .map_err(|e| anyhow::anyhow!("site {}: {e}", site.name))?;
        if let Some(r) = crate::pki::registry::CertRecord::of_pem(
            &tls.cert_pem,
            &format!("replication {} {}", site.name, f.address),
            crate::pki::registry::REPLICATION_ROLE,
            "start",
            crate::clock::unix_now() as i64,
        ) {
            registry.issued(r).await?;
        }
        pair_tls.insert(site.name.clone(), Arc::new(tls));
    }

    // Failover relationships: one peer task per served site that has a partner.
    let mut failover_handles = Vec::new();
    let mut failover_updates = std::collections::HashMap::new();
    for site in &served {
        if let Some(f) = &site.failover {
            let auth = match (f.tls, pair_tls.get(&site.name)) {
                (false, _) => None,
                (true, Some(tls)) => Some(crate::failover::peer::PairAuth {
                    tls: tls.clone(),
                    registry: registry.clone(),
                }),
                (true, None) => bail!(
                    "site {}: [sites.{}.failover] tls = true needs provd's CA (the pair's certificates): run \
                     `provd pki init` and copy the CA to both servers",
                    site.name,
                    site.name
                ),
            };
            let (handle, updates) = crate::failover::peer::start(
                crate::failover::peer::Relationship {
                    cfg: f.clone(),
                    site: site.name.clone(),
                    leases: leases.clone(),
                    store: store.clone(),
                    auth,
                },
                stop_rx.clone(),
                &mut tasks,
            );
            failover_handles.push(handle);
            failover_updates.insert(site.name.clone(), updates);
        }
    }
    let failover_handles = Arc::new(failover_handles);

    // The hypervisor pool: installed hosts verified over qemu+tls with provd's own client
    // certificate (needs the CA that signed them).
    match &services.ca {
        Some(ca) => {
            let dir = crate::pki::identities::pool_identity(ca, &registry, &state_dir, "provd")
                .await
                .map_err(|e| anyhow::anyhow!("the pool's libvirt client certificate: {e}"))?;
            tasks.spawn(crate::pool::run(
                services.pool.clone(),
                inventory.clone(),
                services.generations.clone(),
                services.boot.state.signer.certificates().clone(),
                dir,
                stop_rx.clone(),
            ));
        }
        None => tracing::info!("no CA: installed hosts are not verified as hypervisors (no `ready`)"),
    }

    // The pair's shared inventory: one replication link per served site with a partner.
    for site in &served {
        let Some(f) = &site.failover else { continue };
        let Some(creds) = pair_tls.get(&site.name).cloned() else {
            tracing::warn!(
                "site {}: no CA, so no inventory replication with the failover partner (run `provd pki init` \
                 and copy the CA to both servers)",
                site.name
            );
            continue;
        };
        let key = crate::replication::link::synced_key(&site.name);
        let synced_at: u64 = store.meta_blocking(&key)?.and_then(|v| v.parse().ok()).unwrap_or(0);
        if synced_at == 0 {
            tracing::warn!(
                "site {}: never synchronised with the failover partner: no host of this site is offered an \
                 install until the first synchronisation",
                site.name
            );
            inventory.hold_installs(&site.name, true);
        }
        let (status, status_rx) = watch::channel(crate::replication::link::Status {
            site: site.name.clone(),
            partner: format!("{}:{}", f.peer_address, f.replication_port),
            synced_at,
            ..Default::default()
        });
        services.replication.write().unwrap().push(status_rx);
        tasks.spawn(crate::replication::link::run(
            site.name.clone(),
            f.clone(),
            creds,
            crate::replication::link::Shared {
                inventory: inventory.clone(),
                certificates: services.boot.state.signer.certificates().clone(),
                nocloud: services.nocloud.clone(),
                store: store.clone(),
            },
            status,
            stop_rx.clone(),
        ));
    }

    // Boot listeners (TFTP + HTTP) on each served site's server address.
    let mut site_addrs: BTreeMap<(Ipv4Addr, u16), String> = BTreeMap::new();
    for s in &served {
        site_addrs
            .entry((s.server_address, s.http_port))
            .or_insert_with(|| s.name.clone());
    }
    let state = |listener_site: Option<String>| services.app_state(failover_handles.clone(), listener_site);
    let tftp = Arc::new(services.tftp()?);
    let mut tftp_bound = std::collections::BTreeSet::new();
    for ((addr, port), site) in &site_addrs {
        if tftp_bound.insert(*addr) {
            let sock = crate::tftp::bind(SocketAddr::from((*addr, TFTP_PORT)))
                .with_context(|| format!("cannot listen for TFTP on {addr}:{TFTP_PORT} (site {site})"))?;
            tracing::info!("TFTP on {addr}:{TFTP_PORT} serving {}", assets_root.display());
            tasks.spawn(tftp.clone().serve(sock, stop_rx.clone()));
        }
        let http_addr = SocketAddr::from((*addr, *port));
        let api = opts.api_listen.unwrap_or(config.daemon.api_listen);
        if http_addr == api {
            bail!(
                "site {site}'s boot HTTP address {http_addr} is also the API address: give [daemon] api_listen another port"
            );
        }
        let listener = tokio::net::TcpListener::bind(http_addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {http_addr} (site {site})"))?;
        tracing::info!("boot HTTP on http://{http_addr} for site {site}");
        let site_state = state(Some(site.clone()));
        let assets: http::zero_copy::Files = Arc::new(site_state.clone());
        tasks.spawn(serve_http(
            listener,
            http::boot_router(site_state),
            http::listen::BOOT_LIMITS,
            services.http_stats.clone(),
            stop_rx.clone(),
            http::listen::Transport::Plain { assets: Some(assets) },
        ));
    }

    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("cannot listen for the API on {api_addr}"))?;
    tracing::info!(
        "API on {}://{api_addr}",
        if api_tls.is_some() { "https" } else { "http" }
    );
    tasks.spawn(serve_http(
        listener,
        http::api_router(state(None)),
        http::listen::API_LIMITS,
        services.http_stats.clone(),
        stop_rx.clone(),
        match api_tls {
            Some(tls) => http::listen::Transport::Tls(tls),
            None => http::listen::Transport::Plain { assets: None },
        },
    ));

    // DHCP tells the inventory about machines that network-boot (discovery).
    let (observe_tx, observe_rx) = mpsc::channel(1024);
    tasks.spawn(record_observations(inventory.clone(), observe_rx));
    let shared = Shared {
        ports: server::ReplyPorts::STANDARD,
        leases,
        generations: services.generations.clone(),
        store,
        stats: dhcp_stats.clone(),
        observer: Some(observe_tx),
        journal: Some(journal),
        failover_updates: Arc::new(failover_updates),
        persists: Default::default(),
    };
    let mut dhcp = tokio::spawn(server::serve(shared, stop_rx.clone()));
    tasks.spawn(reload_on_sighup(services.reloader.clone(), stop_rx.clone()));
    tasks.spawn(log_stats_periodically(dhcp_stats, stop_rx));

    let failed_store = services.store.clone();
    let outcome: anyhow::Result<()> = tokio::select! {
        r = &mut dhcp => {
            // The DHCP side returns early only when an interface could not be bound or a
            // receive loop panicked: either way the daemon must not go on half-serving.
            match r {
                Ok(Ok(())) => Err(anyhow::anyhow!("the DHCP server stopped")),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(anyhow::anyhow!("the DHCP task panicked: {e}")),
            }
        }
        why = failed_store.failed() => {
            // A store that failed a write (full disk, I/O error) acknowledges nothing more:
            // /healthz says why until the listeners close, then provd exits non-zero.
            tracing::error!("the lease store failed ({why}): no lease is acknowledged any more; stopping");
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err(anyhow::anyhow!("the lease store failed: {why}"))
        }
        _ = shutdown_signal() => {
            tracing::info!("shutting down");
            Ok(())
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    outcome
}

/// One HTTP listener with its limits; peer addresses reach handlers (secrets follow the
/// lease; the journal maps addresses to MACs).
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: http::listen::Limits,
    stats: Arc<HttpStats>,
    stop: watch::Receiver<bool>,
    transport: http::listen::Transport,
) {
    http::listen::serve(
        listener,
        app,
        limits,
        stop,
        move || stats.inc("refused_connections"),
        transport,
    )
    .await;
}

/// `[daemon] api_tls`: a server certificate from provd's CA for the API address (and
/// loopback, and `api_names`), made now; the key never touches the disk.
fn api_tls_config(
    config: &Config,
    state_dir: &std::path::Path,
    api_addr: SocketAddr,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, String)> {
    let pki_dir = config.daemon.pki_dir(state_dir);
    let ca = crate::pki::Ca::load(&pki_dir)
        .with_context(|| "[daemon] api_tls = true needs provd's CA for the API's certificate: run `provd pki init`")?;
    let mut addresses = vec![std::net::IpAddr::from(std::net::Ipv4Addr::LOCALHOST)];
    if !api_addr.ip().is_unspecified() && !addresses.contains(&api_addr.ip()) {
        addresses.push(api_addr.ip());
    }
    Ok(http::tls::server_config(&ca, &config.daemon.api_names, &addresses)?)
}

async fn record_observations(inventory: Arc<Inventory>, mut rx: mpsc::Receiver<(MacAddr, Observation)>) {
    while let Some((mac, obs)) = rx.recv().await {
        if let Err(e) = inventory.observe(mac, obs).await {
            tracing::error!("inventory: {e}");
        }
    }
}

/// SIGHUP = `provd reload`: the outcome goes to the log (the CLI shows it to the operator).
async fn reload_on_sighup(reloader: Arc<crate::reload::Reloader>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install a SIGHUP handler: use `provd reload`");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {}
            _ = stop.changed() => return,
        }
        tracing::info!("SIGHUP: reloading the config");
        if let Err(e) = reloader.reload().await {
            tracing::error!("reload refused: {e}");
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// One log line a minute when anything changed: enough to see drops and malformed packets in
/// the logs without a metrics system.
async fn log_stats_periodically(stats: Arc<DhcpStats>, mut stop: watch::Receiver<bool>) {
    let mut last = stats.snapshot();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            _ = stop.changed() => return,
        }
        let now = stats.snapshot();
        if now != last {
            let changed: Vec<String> = now
                .iter()
                .filter(|(k, v)| last.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            tracing::info!("dhcp counters: {}", changed.join(" "));
            last = now;
        }
    }
}
