//! `provd serve`: build `Services` from the config and the state directory, bind
//! `Listeners`, then `serve` until SIGINT or SIGTERM. Startup failures (bad config, missing
//! templates or assets, an address or interface that cannot be bound) are reported and
//! fatal, before any task starts; nothing after startup is.
//!
//! - `services`: what provd is made of, bound to no socket.
//! - `listeners`: every socket, bound first.
//! - `peers`: the pair's failover and replication, started from `Services`.
//! - `serve`: runs the lot on the listeners until a shutdown future completes.

mod listeners;
mod peers;
mod serve;
mod services;

pub use listeners::{ApiListener, DhcpListeners, Listeners, PairListeners};
pub use peers::Peers;
pub use serve::serve;
pub use services::Services;

use crate::config::Config;
use crate::http;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub struct ServeOptions {
    /// The config paths as given (a reload reads them again).
    pub config_paths: Vec<PathBuf>,
    pub sites: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub api_listen: Option<SocketAddr>,
}

pub const TFTP_PORT: u16 = 69;

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
    check_region_trust(&config, &state_dir)?;
    for n in config.notes() {
        tracing::warn!("{n}");
    }
    let services = Services::build(config.clone(), &opts.config_paths, &opts.sites, &state_dir)?;
    // Every certificate provd makes is in the registry (`provd pki list`, revocable),
    // the admin listener's too.
    let api_tls = match api_tls {
        Some((tls, cert)) => {
            services
                .boot()
                .certificates()
                .record_minted(
                    &cert,
                    &format!("admin API {api_addr}"),
                    crate::pki::registry::API_SERVER_ROLE,
                    "start",
                )
                .await?;
            Some(tls)
        }
        None => None,
    };
    let listeners = Listeners::bind(&services, api_addr, api_tls).await?;
    serve(services, listeners, shutdown_signal()).await
}

/// `[daemon] region_cross_cert` must be this site's CA as `region_ca` certified it: a
/// wrong file is an error now, not a migration refused later.
fn check_region_trust(config: &Config, state_dir: &std::path::Path) -> anyhow::Result<()> {
    let d = &config.daemon;
    if d.region_ca.is_some() && !d.api_tls {
        bail!(
            "[daemon] region_ca lets the region's certificates open the admin API, which needs api_tls = true \
             (client certificates are only asked for over HTTPS)"
        );
    }
    let (Some(cross), root) = (&d.region_cross_cert, &d.region_ca) else {
        return Ok(());
    };
    let root = root
        .as_ref()
        .context("[daemon] region_cross_cert needs region_ca (the region's root certificate) beside it")?;
    let read = |p: &std::path::Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let ca = crate::pki::Ca::load(&d.pki_dir(state_dir))
        .context("[daemon] region_cross_cert certifies this site's CA, and there is none: run `provd pki init`")?;
    crate::pki::check_cross_certificate(ca.cert_pem(), &read(cross)?, &read(root)?)
        .with_context(|| format!("[daemon] region_cross_cert {}", cross.display()))?;
    Ok(())
}

/// The region's root certificate (PEM), when `[daemon] region_ca` names one.
pub(crate) fn region_root(config: &Config) -> anyhow::Result<Option<String>> {
    let Some(path) = &config.daemon.region_ca else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path).with_context(|| {
        format!(
            "[daemon] region_ca: reading {} (the region's root certificate)",
            path.display()
        )
    })?;
    Ok(Some(pem))
}

/// `[daemon] api_tls`: a server certificate from provd's CA for the API address (and
/// loopback, and `api_names`), made now; the key never touches the disk.
pub fn api_tls_config(
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
    let region_root = region_root(config)?;
    Ok(http::tls::server_config(
        &ca,
        &config.daemon.api_names,
        &addresses,
        region_root.as_deref(),
    )?)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
