//! `Peers`: the pair's running parts, started from `Services` on listeners bound beforehand.
//! Per served site with a partner: the pair's mutual TLS (needs the CA; its certificate is
//! recorded), the failover relationship (DHCP feeds it durable lease changes) and the
//! inventory replication link. What comes back is handles: statuses as `watch` channels
//! for the API, the failover mailboxes for DHCP.

use super::Services;
use super::listeners::PairListeners;
use crate::dhcp::partner_updates::PartnerUpdates;
use crate::failover::peer::{self, Handle, PairAuth, Relationship};
use crate::pki::pair::PairTls;
use crate::pki::registry::REPLICATION_ROLE;
use crate::replication::link;
use anyhow::bail;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// Handles on the pair's running parts (empty for a server without a partner).
#[derive(Clone, Default)]
pub struct Peers {
    /// One per served site with a partner: status and the operator's commands.
    pub failover: Arc<Vec<Handle>>,
    /// By site: where DHCP sends each durable lease change for the partner (BNDUPD).
    pub failover_updates: Arc<HashMap<String, PartnerUpdates>>,
    /// One per served site whose partner is replicated to (needs the CA).
    pub replication: Arc<Vec<watch::Receiver<link::Status>>>,
}

impl Peers {
    /// Start every served site's failover relationship and replication link as tasks in
    /// `tasks`, stopping when `stop` turns true. Fails before starting anything on a config
    /// that cannot run (TLS asked without a CA).
    pub async fn start(
        services: &Services,
        mut listeners: PairListeners,
        stop: &watch::Receiver<bool>,
        tasks: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<Peers> {
        let generation = services.generations().current();
        let served: Vec<_> = generation.served_sites().collect();
        let registry = services.boot().certificates().clone();

        // The pair's mutual TLS, per site with a partner (needs the CA): the replication
        // link, and the failover conversation when `tls = true`.
        let pair_tls = pair_credentials(services, &served, &registry).await?;

        let mut failover = Vec::new();
        let mut failover_updates = HashMap::new();
        for site in &served {
            let Some(f) = &site.failover else { continue };
            let auth = pair_tls.get(&site.name).filter(|_| f.tls).map(|tls| PairAuth {
                tls: tls.clone(),
                registry: registry.clone(),
            });
            let (handle, updates) = peer::start(
                Relationship {
                    cfg: f.clone(),
                    site: site.name.clone(),
                    leases: services.leases().clone(),
                    store: services.store().clone(),
                    auth,
                    listener: listeners.failover.remove(&site.name),
                },
                stop.clone(),
                tasks,
            );
            failover.push(handle);
            failover_updates.insert(site.name.clone(), updates);
        }

        // The pair's shared inventory: one replication link per served site with a partner.
        let mut replication = Vec::new();
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
            let key = link::synced_key(&site.name);
            let synced_at: u64 = services
                .store()
                .meta_blocking(&key)?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if synced_at == 0 {
                tracing::warn!(
                    "site {}: never synchronised with the failover partner: no host of this site is offered an \
                     install until the first synchronisation",
                    site.name
                );
                services.inventory().hold_installs(&site.name, true);
            }
            let (status, status_rx) = watch::channel(link::Status {
                site: site.name.clone(),
                partner: format!("{}:{}", f.peer_address, f.replication_port),
                synced_at,
                ..Default::default()
            });
            replication.push(status_rx);
            tasks.spawn(link::run(
                site.name.clone(),
                f.clone(),
                creds,
                link::Shared {
                    inventory: services.inventory().clone(),
                    certificates: registry.clone(),
                    nocloud: services.nocloud().clone(),
                    store: services.store().clone(),
                },
                listeners.replication.remove(&site.name),
                status,
                link::Timing::default(),
                stop.clone(),
            ));
        }
        Ok(Peers {
            failover: Arc::new(failover),
            failover_updates: Arc::new(failover_updates),
            replication: Arc::new(replication),
        })
    }
}

/// The pair's TLS credentials per served site with a failover partner, each recorded in
/// the registry; a site that asks for `tls` without a CA is refused.
async fn pair_credentials(
    services: &Services,
    served: &[&crate::config::Site],
    registry: &Arc<crate::pki::registry::Registry>,
) -> anyhow::Result<HashMap<String, Arc<PairTls>>> {
    let mut pair_tls = HashMap::new();
    for site in served {
        let (Some(f), Some(ca)) = (&site.failover, &services.ca()) else {
            continue;
        };
        let tls =
            PairTls::new(ca, &site.name, f.address.into()).map_err(|e| anyhow::anyhow!("site {}: {e}", site.name))?;
        registry
            .record_minted(
                &tls.cert_pem,
                &format!("replication {} {}", site.name, f.address),
                REPLICATION_ROLE,
                "start",
            )
            .await?;
        pair_tls.insert(site.name.clone(), Arc::new(tls));
    }
    for site in served {
        if let Some(f) = &site.failover
            && f.tls
            && !pair_tls.contains_key(&site.name)
        {
            bail!(
                "site {}: [sites.{}.failover] tls = true needs provd's CA (the pair's certificates): run \
                 `provd pki init` and copy the CA to both servers",
                site.name,
                site.name
            );
        }
    }
    Ok(pair_tls)
}
