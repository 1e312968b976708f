//! The region (`provd region serve`): one view over many sites, and one place to act on
//! them. Each site stays the only owner of its data and keeps serving DHCP, boot,
//! inventory, BMCs and its pool with the region gone; the region follows each site's
//! change feed (`http::feed`) into its own read model (`store`) and forwards writes to the
//! site that owns the record (`api`), over the two-tier trust (`trust`: the region's root
//! cross-signs each site's CA). No consensus of its own: the region holds copies, never
//! the truth, so losing it loses nothing a site needs.
//!
//! - `config`: `region.toml` (the sites and their admin API addresses).
//! - `trust`: the root, the region's admin certificate, the sites' cross-certificates,
//!   revocation.
//! - `follow`: a thread per site long-polling its feed.
//! - `store`: the read model (redb).
//! - `api`: reads and forwarded writes.
//! - `console`: the web page over all sites.

pub mod api;
pub mod config;
pub mod console;
pub mod follow;
pub mod store;
pub mod trust;

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Region {
    pub config: config::RegionConfig,
    pub model: Arc<store::ReadModel>,
    pub trust: Arc<trust::Trust>,
    pub token: crate::http::auth::ApiToken,
    /// The web console's sessions.
    pub console: crate::http::session::Sessions,
}

impl Region {
    pub fn site(&self, name: &str) -> Option<&config::SiteConfig> {
        self.config.sites.iter().find(|s| s.name == name)
    }
}

/// Open the region's state (read model, token, trust), failing with what to do.
pub fn open(config: config::RegionConfig) -> anyhow::Result<Region> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&config.state_dir).with_context(|| format!("creating {}", config.state_dir.display()))?;
    std::fs::set_permissions(&config.state_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 700 {}", config.state_dir.display()))?;
    let trust = trust::Trust::new(config.pki_dir());
    crate::pki::Ca::load(trust.dir()).with_context(|| "the region has no root CA yet: run `provd region init`")?;
    let token = crate::http::auth::ApiToken::load_or_create(&config.state_dir)?;
    let model = store::ReadModel::open(&config.state_dir)?;
    Ok(Region {
        config,
        model: Arc::new(model),
        trust: Arc::new(trust),
        token,
        console: Default::default(),
    })
}

/// Serve the region until SIGTERM or Ctrl-C.
pub async fn serve(region: Region) -> anyhow::Result<()> {
    let region = Arc::new(region);
    let stop_followers = Arc::new(AtomicBool::new(false));
    for site in &region.config.sites {
        let (site, model, trust, stop) = (
            site.clone(),
            region.model.clone(),
            region.trust.clone(),
            stop_followers.clone(),
        );
        std::thread::Builder::new()
            .name(format!("follow-{}", site.name))
            .spawn(move || follow::follow(site, model, trust, stop, follow::WAIT_SECS))
            .context("starting a follower thread")?;
    }
    let listener = tokio::net::TcpListener::bind(region.config.listen)
        .await
        .with_context(|| format!("binding the region's API on {}", region.config.listen))?;
    let transport = if region.config.tls {
        let ca = crate::pki::Ca::load(region.trust.dir())?;
        let (tls, _) = crate::http::tls::server_config(&ca, &[], &[region.config.listen.ip()], None)?;
        crate::http::listen::Transport::Tls(tls)
    } else {
        crate::http::listen::Transport::Plain { assets: None }
    };
    tracing::info!(
        "region {} serving on {} ({}), following {} site(s)",
        region.config.name,
        region.config.listen,
        if region.config.tls { "https" } else { "http" },
        region.config.sites.len()
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let app = api::router(region.clone());
    let server = tokio::spawn(crate::http::listen::serve(
        listener,
        app,
        crate::http::listen::API_LIMITS,
        stop_rx,
        |_| {},
        transport,
        None,
    ));
    shutdown_signal().await;
    stop_followers.store(true, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
