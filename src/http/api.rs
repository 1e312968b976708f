//! Admin routes (API listener only): hosts, leases, sites, stats, events (behind the bearer
//! token, see `auth`), and metrics (open).

use super::AppState;
use crate::clock::unix_now;
use crate::inventory::{HostRecord, InventoryError};
use crate::store::LeaseRecord;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/hosts", get(hosts))
        .route("/api/hosts/{host}", get(host))
        .route("/api/hosts/{host}/reinstall", post(reinstall))
        .route("/api/hosts/{host}/mark-installed", post(mark_installed))
        .route("/api/hosts/{host}/netboot/{onoff}", post(netboot))
        .route("/api/nocloud", get(nocloud_list).post(nocloud_create))
        .route("/api/failover", get(failover_status))
        .route("/api/replication", get(replication_status))
        .route("/api/hypervisors", get(hypervisors))
        .route("/api/hypervisors/{host}/drain", post(drain))
        .route("/api/hypervisors/{host}/undrain", post(undrain))
        .route("/api/failover/{name}/partner-down", post(failover_partner_down))
        .route("/api/leases", get(leases))
        .route("/api/sites", get(sites))
        .route("/api/stats", get(stats))
        .route("/api/dns", get(dns_status))
        .route("/api/ipam", get(ipam_list))
        .route("/api/events", get(events))
        .route("/api/reload", post(reload))
        .route("/api/hosts/{host}/adopt", post(adopt))
}

use crate::reload::{AdoptAnswer, AdoptRequest};

/// `POST /api/hosts/<mac>/adopt`: a discovered machine becomes a configured host: an entry
/// in `<config dir>/hosts-<site>.toml`, then a reload (which validates it like any config).
async fn adopt(State(s): State<AppState>, Path(name): Path<String>, Json(req): Json<AdoptRequest>) -> Response {
    use super::failure::refuse;
    use crate::reload::AdoptError;
    let boot = s.boot();
    let Some(mac) = boot.find(&name).await else {
        return not_found();
    };
    let Some(record) = s.inventory.get(mac).await else {
        return not_found();
    };
    if record.status != crate::inventory::Status::Discovered || s.inventory.is_configured(&boot.config().hosts, mac) {
        return refuse(
            StatusCode::CONFLICT,
            format!(
                "{mac} is not a discovered machine (it is {}): nothing to adopt",
                record.status.as_str()
            ),
        );
    }
    let served = boot.served_sites();
    let site = match req.site.or(record.site.clone()) {
        Some(site) => site,
        None if served.len() == 1 => served[0].clone(),
        None => return refuse(StatusCode::BAD_REQUEST, "which site? pass --site"),
    };
    if !served.contains(&site) {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("this server does not serve a site named {site:?}"),
        );
    }
    let new = crate::reload::NewHost {
        site,
        mac,
        hostname: req.hostname,
        profile: req.profile,
        ip: req.ip,
        bmc: req.bmc,
    };
    match s.reloader.adopt(&new).await {
        Ok((report, file)) => {
            let record = s.inventory.get(mac).await;
            s.journal.record(
                Some(mac),
                None,
                crate::journal::Step::Adopted {
                    hostname: new.hostname.clone(),
                    file: file.display().to_string(),
                },
            );
            Json(AdoptAnswer {
                host: record,
                file,
                reload: report,
            })
            .into_response()
        }
        Err(e @ AdoptError::NoConfigDirectory) => refuse(StatusCode::CONFLICT, e),
        Err(AdoptError::Refused(_, crate::reload::ReloadError::Store(f))) => super::failure::json("adopt", &f),
        Err(e @ AdoptError::Refused(..)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => internal(e),
    }
}

/// `POST /api/reload`: read the config set again and apply it (`reload`), or change nothing
/// and say why (422: the config or a restart-only key; 500: the store).
async fn reload(State(s): State<AppState>) -> Response {
    use crate::reload::ReloadError;
    match s.reloader.reload().await {
        Ok(report) => Json(report).into_response(),
        Err(ReloadError::Store(f)) => super::failure::json("reload", &f),
        Err(e) => super::failure::refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

/// Admin-listener routes that need no credential: Prometheus counters, no secrets.
pub fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
}

/// `/healthz`: 200 while the store commits, 503 with the reason once a commit failed (the
/// daemon then stops acknowledging leases and exits).
async fn healthz(State(s): State<AppState>) -> Response {
    match s.store.failure() {
        None => (StatusCode::OK, "ok\n").into_response(),
        Some(why) => super::failure::line(StatusCode::SERVICE_UNAVAILABLE, format_args!("store failed: {why}")),
    }
}

fn not_found() -> Response {
    super::failure::refuse(StatusCode::NOT_FOUND, "no such host")
}

use super::failure::internal;

/// `POST /api/nocloud` {hostname, ssh_keys, site?}: store a first-boot seed for a VM about
/// to be deployed; answers the seed with its URL on the site's boot listener.
async fn nocloud_create(State(s): State<AppState>, Json(req): Json<crate::nocloud::SeedRequest>) -> Response {
    let bad = |e: String| super::failure::refuse(StatusCode::BAD_REQUEST, e);
    let boot = s.boot();
    let served = boot.served_sites();
    let site = match (&req.site, served) {
        (Some(name), _) if served.contains(name) => name.clone(),
        (Some(name), _) => {
            return bad(format!(
                "this provd does not serve a site named {name:?} (it serves: {})",
                served.join(", ")
            ));
        }
        (None, [only]) => only.clone(),
        (None, _) => {
            return bad(format!(
                "this provd serves several sites ({}): say which",
                served.join(", ")
            ));
        }
    };
    let Some(cfg) = boot.config().sites.get(&site) else {
        return bad(format!("no site {site:?}"));
    };
    let base = cfg.boot_base_url();
    let reg = s.nocloud.clone();
    match tokio::task::spawn_blocking(move || reg.create_blocking(&req, &site, &base)).await {
        Ok(Ok(seed)) => Json(seed).into_response(),
        Ok(Err(crate::nocloud::SeedError::Store(e))) => super::failure::json("nocloud seed", &e.into()),
        Ok(Err(e)) => bad(e.to_string()),
        Err(e) => internal(e),
    }
}

/// `GET /api/hypervisors`: every installed host provd has checked, with its status.
async fn hypervisors(State(s): State<AppState>) -> Json<Vec<crate::pool::HypervisorView>> {
    Json(hypervisor_views(&s).await)
}

/// Every checked hypervisor with its inventory status (the API's and the console's).
pub(super) async fn hypervisor_views(s: &AppState) -> Vec<crate::pool::HypervisorView> {
    let mut out = Vec::new();
    let boot = s.boot();
    for check in s.pool.checks() {
        let record = match boot.find(&check.host).await {
            Some(mac) => s.inventory.get(mac).await,
            None => None,
        };
        out.push(crate::pool::HypervisorView {
            check,
            status: record.as_ref().map(|r| r.status),
            drained: record.is_some_and(|r| r.drained),
        });
    }
    out
}

/// `POST /api/hypervisors/<host>/drain`: no new placements, and every running domain
/// live-migrated to the site's other ready hypervisors. Answers per domain where it went
/// (or why not) once all moved.
async fn drain(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let inv = &s.inventory;
    let Some(mac) = s.boot().find(&name).await else {
        return not_found();
    };
    match s.pool.drain(inv, &s.ipam, mac).await {
        Ok(moved) => {
            for m in &moved {
                let step = crate::journal::Step::Drained {
                    domain: m.domain.clone(),
                    to: m.to.clone(),
                    error: m.error.clone(),
                };
                s.journal.record(Some(mac), None, step);
            }
            Json(crate::pool::DrainReport { host: name, moved }).into_response()
        }
        Err(crate::pool::DrainError::Inventory(e)) => host_result(Err(e)),
        Err(e) => super::failure::refuse(StatusCode::CONFLICT, e),
    }
}

async fn undrain(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let inv = &s.inventory;
    let Some(mac) = s.boot().find(&name).await else {
        return not_found();
    };
    host_result(inv.set_drained(mac, false).await)
}

/// `GET /api/replication`: each site's link to its partner (connected, synchronised, counts).
async fn replication_status(State(s): State<AppState>) -> Json<Vec<crate::replication::link::Status>> {
    Json(s.replication.iter().map(|st| st.borrow().clone()).collect())
}

async fn failover_status(State(s): State<AppState>) -> Json<Vec<crate::failover::peer::Status>> {
    Json(s.failover.iter().map(|h| h.status.borrow().clone()).collect())
}

/// `POST /api/failover/<name>/partner-down`: what omshell's `set local-state = 4` does for
/// ISC. Refused (409) where it would be unsafe.
async fn failover_partner_down(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let Some(h) = s.failover.iter().find(|h| h.status.borrow().name == name) else {
        return super::failure::refuse(
            StatusCode::NOT_FOUND,
            format!("no failover relationship named {name:?}"),
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    if h.commands
        .send(crate::failover::peer::Command::PartnerDown(tx))
        .await
        .is_err()
    {
        return internal("the failover task is not running");
    }
    match rx.await {
        Ok(Ok(status)) => Json(status).into_response(),
        Ok(Err(why)) => super::failure::refuse(StatusCode::CONFLICT, why),
        Err(_) => internal("the failover task did not answer"),
    }
}

async fn nocloud_list(State(s): State<AppState>) -> Json<Vec<crate::nocloud::Seed>> {
    Json(s.nocloud.all())
}

async fn hosts(State(s): State<AppState>) -> Json<Vec<HostRecord>> {
    Json(s.inventory.list().await)
}

async fn host(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let inv = &s.inventory;
    match s.boot().find(&name).await {
        Some(mac) => Json(inv.get(mac).await).into_response(),
        None => not_found(),
    }
}

fn host_result(r: Result<HostRecord, InventoryError>) -> Response {
    match r {
        Ok(h) => Json(h).into_response(),
        Err(InventoryError::UnknownHost) => not_found(),
        Err(e @ InventoryError::Installed { .. }) => super::failure::refuse(StatusCode::CONFLICT, e),
        Err(InventoryError::Store(f)) => super::failure::json("host record", &f),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
struct ForceQuery {
    #[serde(default)]
    force: bool,
    /// Then make it happen: one-time PXE and a power cycle through the host's BMC.
    #[serde(default)]
    power: bool,
}

/// `POST /api/hosts/<host>/reinstall[?force=true]`: 409 for an installed host without force.
async fn reinstall(
    State(s): State<AppState>,
    Path(name): Path<String>,
    axum::extract::Query(q): axum::extract::Query<ForceQuery>,
) -> Response {
    let inv = &s.inventory;
    let boot = s.boot();
    let Some(mac) = boot.find(&name).await else {
        return not_found();
    };
    // --power without a BMC: say so before changing anything.
    if q.power
        && let Err(refusal) = super::power_api::host_bmc(&boot, &name)
    {
        return refusal;
    }
    match inv.reinstall(mac, q.force).await {
        // Name what a reinstall would destroy, when the pool saw it running.
        Err(e @ InventoryError::Installed { .. }) => {
            let running = s.pool.running_on(mac).await;
            let also = if running.is_empty() {
                String::new()
            } else {
                format!(" It runs {} domain(s): {}.", running.len(), running.join(", "))
            };
            let mut extra = serde_json::Map::new();
            extra.insert("running_domains".into(), running.into());
            super::failure::refuse_with(StatusCode::CONFLICT, format!("{e}.{also}"), extra)
        }
        Ok(record) if q.power => match super::power_api::reinstall_power(&s, &boot, &name).await {
            Ok(power) => {
                let code = if power.ok {
                    StatusCode::OK
                } else {
                    StatusCode::BAD_GATEWAY
                };
                let error = power
                    .error
                    .as_ref()
                    .map(|e| format!("reinstall set, but the power cycle failed: {e}"));
                let body = super::power_api::PoweredReinstall {
                    host: record,
                    power,
                    error,
                };
                (code, Json(body)).into_response()
            }
            Err(refusal) => refusal,
        },
        other => host_result(other),
    }
}

/// `POST /api/hosts/<host>/mark-installed`: in service; boot from disk.
async fn mark_installed(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    let inv = &s.inventory;
    let Some(mac) = s.boot().find(&name).await else {
        return not_found();
    };
    host_result(inv.mark_installed(mac).await)
}

async fn netboot(State(s): State<AppState>, Path((name, onoff)): Path<(String, String)>) -> Response {
    let on = match onoff.as_str() {
        "on" => true,
        "off" => false,
        _ => {
            return super::failure::refuse(StatusCode::BAD_REQUEST, "use on or off");
        }
    };
    let inv = &s.inventory;
    let Some(mac) = s.boot().find(&name).await else {
        return not_found();
    };
    host_result(inv.set_netboot(mac, on).await)
}

#[derive(Deserialize)]
struct EventsQuery {
    mac: Option<String>,
}

/// The boot journal, all of it or one MAC's (`?mac=52:54:00:..`).
async fn events(State(s): State<AppState>, axum::extract::Query(q): axum::extract::Query<EventsQuery>) -> Response {
    let mac = match q.mac.as_deref().map(str::parse::<crate::mac::MacAddr>) {
        None => None,
        Some(Ok(m)) => Some(m),
        Some(Err(e)) => {
            return super::failure::refuse(StatusCode::BAD_REQUEST, e);
        }
    };
    Json(s.journal.events(mac)).into_response()
}

async fn leases(State(s): State<AppState>) -> Response {
    let store = s.store.clone();
    match tokio::task::spawn_blocking(move || store.load_leases()).await {
        Ok(Ok(l)) => Json::<Vec<LeaseRecord>>(l).into_response(),
        Ok(Err(e)) => super::failure::json("leases", &e.into()),
        Err(e) => internal(e),
    }
}

/// One site as `GET /api/sites` shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct SiteView {
    pub name: String,
    pub description: String,
    pub server_address: std::net::Ipv4Addr,
    pub http_port: u16,
    /// "interface (address)" for each DHCP interface.
    pub listen: Vec<String>,
    pub subnets: Vec<String>,
    pub hosts: usize,
}

async fn sites(State(s): State<AppState>) -> Json<Vec<SiteView>> {
    Json(site_views(&s))
}

/// Every site of the current config (the API's and the console's).
pub(super) fn site_views(s: &AppState) -> Vec<SiteView> {
    s.boot()
        .config()
        .sites
        .values()
        .map(|site| SiteView {
            name: site.name.clone(),
            description: site.description.clone(),
            server_address: site.server_address,
            http_port: site.http_port,
            listen: site
                .listen
                .iter()
                .map(|l| format!("{} ({})", l.interface, l.address))
                .collect(),
            subnets: site.subnets.iter().map(|n| n.prefix.to_string()).collect(),
            hosts: site.hosts.len(),
        })
        .collect()
}

/// The DNS updaters' counters and, per site, its queue and names.
fn dns_metrics(v: &crate::dns::updater::DnsView, out: &mut String) {
    out.push_str(&format!(
        "# TYPE provd_dns_updates_total counter\nprovd_dns_updates_total{{result=\"accepted\"}} {}\nprovd_dns_updates_total{{result=\"failed\"}} {}\n",
        v.accepted, v.failed
    ));
    out.push_str("# TYPE provd_dns_pending gauge\n");
    for (site, st) in &v.sites {
        out.push_str(&format!("provd_dns_pending{{site=\"{site}\"}} {}\n", st.pending.len()));
    }
    out.push_str("# TYPE provd_dns_names gauge\n");
    for (site, st) in &v.sites {
        out.push_str(&format!("provd_dns_names{{site=\"{site}\"}} {}\n", st.names));
    }
}

/// What `/api/stats` returns (and `provd stats` prints).
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsView {
    pub dhcp: BTreeMap<String, u64>,
    pub store: BTreeMap<String, u64>,
    #[serde(default)]
    pub tftp: BTreeMap<String, u64>,
    #[serde(default)]
    pub http: BTreeMap<String, u64>,
    #[serde(default)]
    pub hosts: BTreeMap<String, u64>,
    pub leases_bound: u64,
    pub leases_known: u64,
}

async fn stats_view(s: &AppState) -> StatsView {
    let st = &s.store.stats;
    let store = [
        ("commits", st.commits.load(Ordering::Relaxed)),
        ("records_committed", st.records_committed.load(Ordering::Relaxed)),
        ("commit_failures", st.commit_failures.load(Ordering::Relaxed)),
        ("largest_batch", st.largest_batch.load(Ordering::Relaxed)),
    ];
    let counts = s.leases.counts(unix_now());
    let (bound, known) = (counts.bound as u64, counts.known as u64);
    let owned = |v: Vec<(&'static str, u64)>| v.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let hosts = s
        .inventory
        .counts()
        .await
        .into_iter()
        .map(|(k, v)| {
            (
                serde_json::to_value(k)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                v as u64,
            )
        })
        .collect();
    StatsView {
        dhcp: s.dhcp_stats.snapshot(),
        store: owned(store.to_vec()),
        tftp: s.tftp_stats.snapshot(),
        http: s.http_stats.snapshot(),
        hosts,
        leases_bound: bound,
        leases_known: known,
    }
}

/// Every static address IPAM assigned (site, role, host, address).
async fn ipam_list(State(s): State<AppState>) -> Json<Vec<crate::ipam::Assignment>> {
    let mut all = s.ipam.all();
    all.sort_by(|a, b| (&a.site, a.role, a.address).cmp(&(&b.site, b.role, b.address)));
    Json(all)
}

/// Each site's DNS updates: server, names held, the queue, the last error.
async fn dns_status(State(s): State<AppState>) -> Json<crate::dns::updater::DnsView> {
    Json(s.dns.view())
}

async fn stats(State(s): State<AppState>) -> Json<StatsView> {
    Json(stats_view(&s).await)
}

async fn metrics(State(s): State<AppState>) -> Response {
    let v = stats_view(&s).await;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, label: &str, map: &BTreeMap<String, u64>| {
        out.push_str(&format!("# TYPE {name} {kind}\n"));
        for (k, n) in map {
            out.push_str(&format!("{name}{{{label}=\"{k}\"}} {n}\n"));
        }
    };
    family("provd_dhcp_events_total", "counter", "event", &v.dhcp);
    family("provd_store_total", "counter", "what", &v.store);
    family("provd_tftp_total", "counter", "what", &v.tftp);
    family("provd_http_total", "counter", "what", &v.http);
    family("provd_hosts", "gauge", "status", &v.hosts);
    out.push_str(&format!(
        "# TYPE provd_leases_bound gauge\nprovd_leases_bound {}\n",
        v.leases_bound
    ));
    out.push_str(&format!(
        "# TYPE provd_discovered_evicted_total counter\nprovd_discovered_evicted_total {}\n",
        s.inventory.discovered_evicted()
    ));
    // Seconds until each valid certificate expires: alert on the smallest.
    out.push_str("# TYPE provd_certificate_expiry_seconds gauge\n");
    let list = s.boot().certificate_list();
    for c in list
        .certificates
        .iter()
        .filter(|c| c.state == crate::pki::registry::CertState::Valid)
    {
        out.push_str(&format!(
            "provd_certificate_expiry_seconds{{host=\"{}\",role=\"{}\",serial=\"{}\"}} {}\n",
            c.record.host, c.record.role, c.record.serial, c.expires_in
        ));
    }
    out.push_str("# TYPE provd_certificate_requests_waiting gauge\n");
    out.push_str(&format!(
        "provd_certificate_requests_waiting {}\n",
        list.requests
            .iter()
            .filter(|r| r.state == crate::pki::signer::RequestState::Waiting)
            .count()
    ));
    dns_metrics(&s.dns.view(), &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
