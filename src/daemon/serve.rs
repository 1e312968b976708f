//! `serve(services, listeners, shutdown)`: run provd on sockets bound beforehand until
//! `shutdown` completes, the lease store fails, or a DHCP receive loop dies. The daemon
//! calls it with the config's `Listeners` and SIGINT/SIGTERM; in-process tests with
//! loopback sockets and a channel, two of them side by side for a failover pair.
//!
//! Started here, in this order: the pair (failover publishes its rules to DHCP before the
//! first packet), the pool, the CA's inbox import, TFTP, boot HTTP, the API, discovery,
//! DHCP, SIGHUP reloads and the counters' log line.

use super::listeners::{ApiListener, Listeners};
use super::{Peers, Services};
use crate::dhcp::server::{self, Shared};
use crate::dhcp::stats::DhcpStats;
use crate::http::{self, HttpStats};
use crate::inventory::{Inventory, Observation};
use crate::mac::MacAddr;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Serve until `shutdown` completes (Ok), or until DHCP or the store fails (Err, after the
/// listeners had a moment to say why on /healthz). Every task is stopped before it returns.
pub async fn serve(services: Services, listeners: Listeners, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let started = start(&services, listeners, &stop_rx, &mut tasks).await;
    let outcome = match started {
        Err(e) => Err(e),
        Ok(mut dhcp) => {
            let store = services.store().clone();
            tokio::select! {
                r = &mut dhcp => {
                    // The DHCP side returns early only when a receive loop panicked: the
                    // daemon must not go on half-serving.
                    match r {
                        Ok(Ok(())) => Err(anyhow::anyhow!("the DHCP server stopped")),
                        Ok(Err(e)) => Err(e.into()),
                        Err(e) => Err(anyhow::anyhow!("the DHCP task panicked: {e}")),
                    }
                }
                why = store.failed() => {
                    // A store that failed a write (full disk, I/O error) acknowledges nothing
                    // more: /healthz says why until the listeners close, then provd exits
                    // non-zero.
                    tracing::error!("the lease store failed ({why}): no lease is acknowledged any more; stopping");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Err(anyhow::anyhow!("the lease store failed: {why}"))
                }
                _ = shutdown => {
                    tracing::info!("shutting down");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    outcome
}

/// Start everything on `listeners`; returns the DHCP task (whose end is the daemon's).
async fn start(
    services: &Services,
    listeners: Listeners,
    stop: &watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<tokio::task::JoinHandle<Result<(), server::ServeError>>> {
    let peers = Peers::start(services, listeners.pair, stop, tasks).await?;
    start_pool(services, stop, tasks).await?;
    if services.ca().is_some() {
        let pki_dir = services
            .generations()
            .current()
            .config
            .daemon
            .pki_dir(services.state_dir());
        tasks.spawn(crate::pki::identities::import_inbox_periodically(
            services.boot().certificates().clone(),
            pki_dir,
            stop.clone(),
        ));
    }

    let tftp = Arc::new(services.tftp()?);
    for sock in listeners.tftp {
        tasks.spawn(tftp.clone().serve(sock, stop.clone()));
    }
    for (site, listener) in listeners.boot_http {
        let state = services.app_state(&peers, Some(site));
        let assets: http::zero_copy::Files = Arc::new(state.clone());
        tasks.spawn(serve_http(
            listener,
            http::boot_router(state),
            http::listen::BOOT_LIMITS,
            services.http_stats().clone(),
            stop.clone(),
            http::listen::Transport::Plain { assets: Some(assets) },
            // The same addresses TFTP answers: leased, reserved, or in `tftp_open`.
            Some(Arc::new(services.boot().clone())),
        ));
    }
    let ApiListener { socket, tls } = listeners.api;
    tasks.spawn(serve_http(
        socket,
        http::api_router(services.app_state(&peers, None)),
        http::listen::API_LIMITS,
        services.http_stats().clone(),
        stop.clone(),
        match tls {
            Some(tls) => http::listen::Transport::Tls(tls),
            None => http::listen::Transport::Plain { assets: None },
        },
        None,
    ));

    // DHCP tells the inventory about machines that network-boot (discovery).
    let (observe_tx, observe_rx) = mpsc::channel(1024);
    tasks.spawn(record_observations(services.inventory().clone(), observe_rx));
    let shared = Shared {
        ports: listeners.dhcp.reply_ports,
        leases: services.leases().clone(),
        generations: services.generations().clone(),
        store: services.store().clone(),
        stats: services.dhcp_stats().clone(),
        observer: Some(observe_tx),
        journal: Some(services.journal().clone()),
        failover_updates: peers.failover_updates.clone(),
        persists: Default::default(),
    };
    let dhcp = tokio::spawn(server::serve(shared, listeners.dhcp.sockets, stop.clone()));
    tasks.spawn(reconcile_ipam_after_reloads(
        services.ipam().clone(),
        services.generations().clone(),
        stop.clone(),
    ));
    tasks.spawn(crate::dns::updater::run(
        services.dns().clone(),
        services.ipam().clone(),
        services.generations().clone(),
        services.leases().clone(),
        services.store().clone(),
        stop.clone(),
    ));
    tasks.spawn(reload_on_sighup(services.reloader().clone(), stop.clone()));
    tasks.spawn(log_stats_periodically(services.dhcp_stats().clone(), stop.clone()));
    Ok(dhcp)
}

/// The hypervisor pool: installed hosts verified over qemu+tls with provd's own client
/// certificate (needs the CA that signed them).
async fn start_pool(
    services: &Services,
    stop: &watch::Receiver<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> anyhow::Result<()> {
    let Some(ca) = &services.ca() else {
        tracing::info!("no CA: installed hosts are not verified as hypervisors (no `ready`)");
        return Ok(());
    };
    let registry = services.boot().certificates();
    let dir = crate::pki::identities::pool_identity(ca, registry, services.state_dir(), "provd")
        .await
        .map_err(|e| anyhow::anyhow!("the pool's libvirt client certificate: {e}"))?;
    tasks.spawn(crate::pool::run(
        services.pool().clone(),
        services.inventory().clone(),
        services.generations().clone(),
        registry.clone(),
        dir,
        stop.clone(),
    ));
    Ok(())
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
    admission: Option<Arc<dyn crate::admission::Admission>>,
) {
    http::listen::serve(
        listener,
        app,
        limits,
        stop,
        move |why: http::listen::Refused| why.counter(&stats).inc(),
        transport,
        admission,
    )
    .await;
}

async fn record_observations(inventory: Arc<Inventory>, mut rx: mpsc::Receiver<(MacAddr, Observation)>) {
    while let Some((mac, obs)) = rx.recv().await {
        if let Err(e) = inventory.observe(mac, obs).await {
            tracing::error!("inventory: {e}");
        }
    }
}

/// SIGHUP = `provd reload`: the outcome goes to the log (the CLI shows it to the operator).
/// IPAM follows the config: after each reload (the start's is done in `Services::build`);
/// a failed store write is tried again a second later.
async fn reconcile_ipam_after_reloads(
    ipam: Arc<crate::ipam::Ipam>,
    generations: Arc<crate::generation::Generations>,
    mut stop: watch::Receiver<bool>,
) {
    let mut done = generations.current().number;
    loop {
        let generation = generations.current();
        if generation.number != done {
            let (ipam, config, served) = (ipam.clone(), generation.config.clone(), generation.served.clone());
            match tokio::task::spawn_blocking(move || ipam.reconcile_blocking(&config, &served)).await {
                Ok(Ok(_)) => done = generation.number,
                Ok(Err(e)) => tracing::error!("ipam: the store refused: {e}"),
                Err(e) => tracing::error!("ipam: {e}"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

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
