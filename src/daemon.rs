//! `provd serve`: wires config, store, DHCP and the API together and runs until SIGINT or
//! SIGTERM. Startup failures (bad config, unusable state dir, an interface that cannot be
//! bound, the API port taken) are reported and fatal; nothing after startup is.

use crate::config::Config;
use crate::dhcp::engine::Engine;
use crate::dhcp::leases::LeaseTable;
use crate::dhcp::server::{self, Shared};
use crate::dhcp::stats::DhcpStats;
use crate::dhcp::topology::Topology;
use crate::http::{self, ApiState};
use crate::store::LeaseStore;
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub struct ServeOptions {
    pub sites: Vec<String>,
    pub state_dir: Option<PathBuf>,
    pub api_listen: Option<SocketAddr>,
}

pub async fn run(config: Config, opts: ServeOptions) -> anyhow::Result<()> {
    let served = config.select_sites(&opts.sites).map_err(anyhow::Error::msg)?;
    let state_dir = opts.state_dir.unwrap_or_else(|| config.daemon.state_dir.clone());
    let store = LeaseStore::open(&state_dir)?;
    let records = store.load_leases()?;
    tracing::info!("loaded {} lease records from {}", records.len(), state_dir.display());
    let topology = Topology::new(&config, &served);
    let engine = Arc::new(Mutex::new(Engine::new(topology, LeaseTable::restore(&records))));
    let stats = Arc::new(DhcpStats::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let api_addr = opts.api_listen.unwrap_or(config.daemon.api_listen);
    let listener = tokio::net::TcpListener::bind(api_addr)
        .await
        .with_context(|| format!("cannot listen for the API on {api_addr}"))?;
    tracing::info!("API on http://{api_addr}");
    let app = http::router(ApiState {
        store: store.clone(),
        dhcp_stats: stats.clone(),
        engine: engine.clone(),
    });
    let mut api_stop = stop_rx.clone();
    let api = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = api_stop.changed().await;
            })
            .await
    });

    let shared = Shared {
        engine,
        store,
        stats: stats.clone(),
    };
    let dhcp = tokio::spawn(server::serve(shared, stop_rx.clone()));
    tokio::spawn(log_stats_periodically(stats, stop_rx));

    let mut dhcp = dhcp;
    tokio::select! {
        r = &mut dhcp => {
            // The DHCP side only returns early when an interface could not be bound.
            r.context("DHCP task panicked")??;
        }
        _ = shutdown_signal() => tracing::info!("shutting down"),
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
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
