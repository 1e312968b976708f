//! The region's API: reads from the read model (every site's hosts, journal tail, pool and
//! health) and writes forwarded to the site that owns the record. A forwarded request is
//! sent once, with the region's admin certificate, to the site's address that answered
//! last (then its partner); the site authorises it and its answer is returned as it came
//! (status and body, with `X-Provd-Site`). A site that cannot be reached is reported, and
//! nothing is queued: the operator decides whether to try again.
//!
//! Which writes may be forwarded is one pure list (`forwardable`); anything else is 404,
//! so the region can never be used as a general proxy into a site's API.

use super::follow::{self, FollowError};
use super::store::{ReadModel, SiteRecord};
use super::{Region, config::SiteConfig};
use crate::http::failure::refuse;
use crate::inventory::HostRecord;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub fn router(region: Arc<Region>) -> Router {
    let api = Router::new()
        .route("/api/region/sites", get(sites))
        .route("/api/region/hosts", get(hosts))
        .route("/api/region/events", get(events))
        .route("/api/region/sites/{site}/vms", get(vms))
        .route("/api/region/sites/{site}/{*rest}", post(forward))
        .route_layer(axum::middleware::from_fn_with_state(region.clone(), require_token));
    Router::new()
        .merge(api)
        .merge(super::console::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(region)
}

async fn require_token(State(r): State<Arc<Region>>, req: Request, next: Next) -> Response {
    let presented = crate::http::auth::bearer(req.headers());
    let read_only = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    match presented {
        Some(t) if r.token.accepts(t) => next.run(req).await,
        // A console session: reads, and changes only with the console's own header.
        None if super::console::has_session(&r, req.headers()) => {
            if read_only || super::console::console_write(req.headers()) {
                next.run(req).await
            } else {
                refuse(
                    StatusCode::FORBIDDEN,
                    "a console session changes things only from the console (X-Provd-Console: 1)",
                )
            }
        }
        _ => refuse(
            StatusCode::UNAUTHORIZED,
            "the region's API needs `Authorization: Bearer <token>` (the token is in the region's <state_dir>/api-token)",
        ),
    }
}

/// How a site looks from the region.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SiteView {
    pub name: String,
    pub urls: Vec<String>,
    /// fresh (heard from within `stale_after_secs`), stale, or never (not heard from yet).
    pub health: Health,
    pub last_contact: Option<u64>,
    /// Seconds since the last contact, by the region's clock.
    pub age_secs: Option<u64>,
    pub reached: Option<String>,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub served: Vec<String>,
    pub hosts: usize,
    pub by_status: BTreeMap<String, u64>,
    pub hypervisors: usize,
    pub hypervisors_ready: usize,
    pub leases: crate::http::feed::LeaseSummary,
    pub pages: u64,
    pub relists: u64,
    pub records_received: u64,
    /// The region's CRL every address of the site has taken (its number).
    #[serde(default)]
    pub crl_number: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Fresh,
    Stale,
    Never,
}

/// Fresh or stale, from the last contact (pure).
pub fn health(last_contact: Option<u64>, now: u64, stale_after: u64) -> Health {
    match last_contact {
        None => Health::Never,
        Some(t) if now.saturating_sub(t) <= stale_after => Health::Fresh,
        Some(_) => Health::Stale,
    }
}

/// One host as the region shows it: the site's record, with its site and freshness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionHost {
    pub site: String,
    pub health: Health,
    /// When the region last heard from the site (the record is at least this fresh).
    pub as_of: Option<u64>,
    /// The site's own record, as it sent it.
    #[serde(rename = "host")]
    pub record: HostRecord,
}

fn view(site: &SiteConfig, record: Option<SiteRecord>, now: u64, stale_after: u64) -> SiteView {
    let r = record.unwrap_or_default();
    SiteView {
        name: site.name.clone(),
        urls: site.urls.clone(),
        health: health(r.last_contact, now, stale_after),
        last_contact: r.last_contact,
        age_secs: r.last_contact.map(|t| now.saturating_sub(t)),
        reached: r.reached,
        error: r.error,
        error_kind: r.error_kind,
        served: r.served,
        hosts: r.by_status.values().sum::<u64>() as usize,
        by_status: r.by_status,
        hypervisors: r.hypervisors.len(),
        hypervisors_ready: r
            .hypervisors
            .iter()
            .filter(|h| matches!(h.check.state, crate::pool::PoolState::Ready))
            .count(),
        leases: r.leases,
        pages: r.pages,
        relists: r.relists,
        records_received: r.records_received,
        crl_number: r.crl_number,
    }
}

/// Run a read of the model off the runtime.
async fn read<T: Send + 'static>(
    model: &Arc<ReadModel>,
    f: impl FnOnce(&ReadModel) -> Result<T, super::store::RegionStoreError> + Send + 'static,
) -> Result<T, Response> {
    let m = model.clone();
    match tokio::task::spawn_blocking(move || f(&m)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, e)),
        Err(e) => Err(refuse(StatusCode::INTERNAL_SERVER_ERROR, e)),
    }
}

async fn sites(State(r): State<Arc<Region>>) -> Response {
    let names: Vec<String> = r.config.sites.iter().map(|s| s.name.clone()).collect();
    let got = read(&r.model, move |m| {
        names.iter().map(|n| m.site(n)).collect::<Result<Vec<_>, _>>()
    })
    .await;
    let records = match got {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let now = crate::clock::unix_now();
    let views: Vec<SiteView> = r
        .config
        .sites
        .iter()
        .zip(records)
        .map(|(s, rec)| view(s, rec, now, r.config.stale_after_secs))
        .collect();
    axum::Json(views).into_response()
}

#[derive(Debug, Deserialize)]
struct HostsQuery {
    site: Option<String>,
    /// A hostname or MAC: only that host (at every site that has one by that name).
    name: Option<String>,
}

async fn hosts(State(r): State<Arc<Region>>, Query(q): Query<HostsQuery>) -> Response {
    if let Some(s) = &q.site
        && r.site(s).is_none()
    {
        return refuse(StatusCode::NOT_FOUND, format!("the region follows no site {s:?}"));
    }
    let site = q.site.clone();
    let got = read(&r.model, move |m| {
        let hosts = m.hosts(site.as_deref())?;
        let mut contacts = BTreeMap::new();
        for (s, _) in &hosts {
            if !contacts.contains_key(s) {
                contacts.insert(s.clone(), m.site(s)?.and_then(|r| r.last_contact));
            }
        }
        Ok((hosts, contacts))
    })
    .await;
    let (hosts, contacts) = match got {
        Ok(v) => v,
        Err(resp) => return resp,
    };
    let now = crate::clock::unix_now();
    let wanted = q.name.as_deref().map(|n| n.to_ascii_lowercase());
    let out: Vec<RegionHost> = hosts
        .into_iter()
        .filter(|(_, h)| {
            wanted.as_deref().is_none_or(|w| {
                h.hostname.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(w)) || h.mac.to_string() == w
            })
        })
        .map(|(site, record)| {
            let as_of = contacts.get(&site).copied().flatten();
            RegionHost {
                health: health(as_of, now, r.config.stale_after_secs),
                site,
                as_of,
                record,
            }
        })
        .collect();
    axum::Json(out).into_response()
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    site: String,
    limit: Option<usize>,
}

async fn events(State(r): State<Arc<Region>>, Query(q): Query<EventsQuery>) -> Response {
    if r.site(&q.site).is_none() {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("the region follows no site {:?}", q.site),
        );
    }
    let limit = q.limit.unwrap_or(200).min(super::store::EVENTS_KEPT as usize);
    match read(&r.model, move |m| m.events(&q.site, limit)).await {
        Ok(e) => axum::Json(e).into_response(),
        Err(resp) => resp,
    }
}

/// How long a forwarded write may take at the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// An inventory or BMC change: answered in seconds.
    Short,
    /// A drain, a deploy, a VM action: live migrations may take long.
    Long,
}

/// Whether `rest` (the site API path after `/api/`) is a write the region forwards.
pub fn forwardable(rest: &str) -> Option<Patience> {
    let parts: Vec<&str> = rest.split('/').collect();
    let plain = |s: &str| !s.is_empty() && s != "." && s != "..";
    if !parts.iter().all(|p| plain(p)) {
        return None;
    }
    match parts.as_slice() {
        ["hosts", _, "reinstall" | "mark-installed"] => Some(Patience::Short),
        ["hosts", _, "netboot", "on" | "off"] => Some(Patience::Short),
        ["hosts", _, "power", _] => Some(Patience::Short),
        ["hypervisors", _, "drain" | "undrain"] => Some(Patience::Long),
        ["vms", "deploy"] => Some(Patience::Long),
        ["vms", _, _, _] => Some(Patience::Long),
        _ => None,
    }
}

async fn forward(
    State(r): State<Arc<Region>>,
    Path((site, rest)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(config) = r.site(&site).cloned() else {
        return refuse(StatusCode::NOT_FOUND, format!("the region follows no site {site:?}"));
    };
    let Some(patience) = forwardable(&rest) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("/api/{rest} is not a write the region forwards"),
        );
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let region = r.clone();
    let sent = tokio::task::spawn_blocking(move || {
        send(
            &region,
            &config,
            &rest,
            query.as_deref(),
            content_type.as_deref(),
            &body,
            patience,
        )
    })
    .await;
    match sent {
        Ok(Ok((url, status, content_type, body))) => {
            tracing::info!("region: forwarded to {site} ({url}): HTTP {status}");
            let mut resp = (StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), body).into_response();
            let h = resp.headers_mut();
            if let Some(ct) = content_type.and_then(|c| c.parse().ok()) {
                h.insert(header::CONTENT_TYPE, ct);
            }
            if let Ok(v) = site.parse() {
                h.insert("x-provd-site", v);
            }
            resp
        }
        Ok(Err(e)) => {
            let last = region_last_contact(&r, &site).await;
            let status = match e {
                FollowError::Trust(_) | FollowError::Tls { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            refuse(
                status,
                format!(
                    "site {site} was not reached ({e}; last contact: {last}): the request was not sent and nothing was queued"
                ),
            )
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// `GET /api/region/sites/<site>/vms`: the site's VMs, asked of the site now (libvirt on
/// every hypervisor is too costly to follow; the answer is live, or the site is not reached).
async fn vms(State(r): State<Arc<Region>>, Path(site): Path<String>) -> Response {
    let Some(config) = r.site(&site).cloned() else {
        return refuse(StatusCode::NOT_FOUND, format!("the region follows no site {site:?}"));
    };
    let region = r.clone();
    let asked = tokio::task::spawn_blocking(move || {
        ask_site(&region, &config, Duration::from_secs(120), |agent, base| {
            let url = format!("{base}/api/vms");
            let resp = agent.get(&url).call().map_err(|e| follow::classify(&url, e))?;
            read_answer(&url, resp).map(|(status, _, body)| (status, body))
        })
    })
    .await;
    match asked {
        Ok(Ok((status, body))) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Ok(Err(e)) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("site {site} was not reached: {e}"),
        ),
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn region_last_contact(r: &Arc<Region>, site: &str) -> String {
    let site = site.to_string();
    match read(&r.model, move |m| m.site(&site)).await {
        Ok(Some(SiteRecord {
            last_contact: Some(t), ..
        })) => crate::clock::rfc3339(t),
        _ => "never".into(),
    }
}

/// Ask `site`'s addresses in turn, the one that answered last first, until one answers:
/// a connection that fails before anything was sent tries the partner; an answer, whatever
/// it says, is the site's.
fn ask_site<T>(
    r: &Region,
    site: &SiteConfig,
    timeout: Duration,
    ask: impl Fn(&ureq::Agent, &str) -> Result<T, FollowError>,
) -> Result<T, FollowError> {
    let agent = follow::agent(r.trust.site_tls(&site.name)?, timeout);
    let reached = r.model.site(&site.name).ok().flatten().and_then(|s| s.reached);
    let mut last = None;
    for base in follow::order(&site.urls, reached.as_deref()) {
        match ask(&agent, base) {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("a site has at least one URL"))
}

/// A site's answer: status, content type, body (bounded).
fn read_answer(
    url: &str,
    mut resp: ureq::http::Response<ureq::Body>,
) -> Result<(u16, Option<String>, Vec<u8>), FollowError> {
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .map_err(|e| follow::classify(url, e))?;
    Ok((status, content_type, body))
}

/// Send one forwarded write to the site (`ask_site`).
fn send(
    r: &Region,
    site: &SiteConfig,
    rest: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
    patience: Patience,
) -> Result<(String, u16, Option<String>, Vec<u8>), FollowError> {
    let timeout = match patience {
        Patience::Short => Duration::from_secs(60),
        Patience::Long => Duration::from_secs(3600),
    };
    // Each segment escaped again (axum decoded them): a `?` or `#` in a host name stays in
    // its segment.
    let rest: Vec<String> = rest.split('/').map(crate::http::url_segment).collect();
    let rest = rest.join("/");
    ask_site(r, site, timeout, |agent, base| {
        let mut url = format!("{base}/api/{rest}");
        if let Some(q) = query {
            url.push('?');
            url.push_str(q);
        }
        let mut req = agent.post(&url);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send(body).map_err(|e| follow::classify(&url, e))?;
        let (status, ct, body) = read_answer(&url, resp)?;
        Ok((url, status, ct, body))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_writes_are_forwarded() {
        assert_eq!(forwardable("hosts/lab-3/reinstall"), Some(Patience::Short));
        assert_eq!(forwardable("hosts/lab-3/power/cycle"), Some(Patience::Short));
        assert_eq!(forwardable("hypervisors/hv1/drain"), Some(Patience::Long));
        assert_eq!(forwardable("vms/deploy"), Some(Patience::Long));
        assert_eq!(forwardable("vms/hv1/web1/migrate"), Some(Patience::Long));
        for refused in [
            "reload",
            "pki/alice/revoke",
            "hosts/lab-3/adopt",
            "hosts/../reload/x",
            "hosts//reinstall",
            "failover/dc1/partner-down",
            "hosts/lab-3/reinstall/extra",
        ] {
            assert_eq!(forwardable(refused), None, "{refused}");
        }
    }

    #[test]
    fn a_site_is_stale_once_not_heard_from_for_longer_than_the_limit() {
        assert_eq!(health(None, 100, 30), Health::Never);
        assert_eq!(health(Some(70), 100, 30), Health::Fresh);
        assert_eq!(health(Some(69), 100, 30), Health::Stale);
    }
}
