//! Boot-chain routes: what booting machines and installers fetch and report.

use super::AppState;
use crate::boot::{Boot, BootError, Format, SignOutcome};
use crate::inventory::InstallEvent;
use crate::journal::{CertificateAction, RefusalReason, Step};
use crate::mac::MacAddr;
use crate::pki::Role;
use crate::served_root::{self, Refusal};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use tower::ServiceExt;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/boot/{file}", get(boot_script))
        .route("/ks/{host}", get(kickstart))
        .route("/callback/{host}/{event}", post(callback))
        .route("/assets/{*path}", get(asset))
        .route("/pki/sign/{host}", post(sign))
        .route("/pki/renew/{host}", post(renew))
        .route("/pki/crl.pem", get(crl))
        .route("/pki/region-crl.pem", get(region_crl))
        .route("/nocloud/{token}/{file}", get(nocloud))
        .route(
            "/discover/{mac}",
            post(discover).layer(axum::extract::DefaultBodyLimit::max(crate::inventory::facts::MAX_BODY)),
        )
}

/// `POST /discover/<mac>`: hardware facts from the discovery image of an unknown machine
/// (JSON, at most 64 KiB). Accepted only from the address that MAC holds a lease on now:
/// a machine on the boot network cannot write facts for another one. The answer says
/// what the image does next ("poweroff" or "wait").
async fn discover(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(mac): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    use crate::inventory::facts::{HardwareFacts, MAX_BODY};
    let Ok(mac) = mac.parse::<MacAddr>() else {
        s.http_stats.not_found.inc();
        return line(StatusCode::NOT_FOUND, "not found");
    };
    let Some(from) = source(peer) else {
        return line(StatusCode::FORBIDDEN, "forbidden");
    };
    if !s.leases.holds(from, mac, crate::clock::unix_now()) {
        s.http_stats.refused_address.inc();
        s.journal.record(
            Some(mac),
            Some(from),
            Step::Refused {
                request: format!("discovery facts for {mac}"),
                why: RefusalReason::NotLeaseHolder { from },
            },
        );
        return line(StatusCode::FORBIDDEN, "forbidden");
    }
    if body.len() > MAX_BODY {
        return line(StatusCode::PAYLOAD_TOO_LARGE, "too large");
    }
    let facts: HardwareFacts = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(_) => return line(StatusCode::BAD_REQUEST, "facts are JSON"),
    };
    if let Err(e) = facts.check() {
        return line(StatusCode::BAD_REQUEST, e);
    }
    let boot = s.boot();
    let facts_summary = (
        facts.cpus.unwrap_or(0),
        facts.memory_mib.unwrap_or(0),
        facts.disks.len(),
        facts.nics.len(),
    );
    match s
        .inventory
        .set_facts(&boot.config().hosts, mac, s.listener_site.clone(), facts)
        .await
    {
        Ok(_) => {
            s.journal.record(
                Some(mac),
                Some(from),
                Step::Discovery {
                    cpus: facts_summary.0,
                    memory_mib: facts_summary.1,
                    disks: facts_summary.2,
                    nics: facts_summary.3,
                },
            );
            let then = s
                .listener_site
                .as_deref()
                .and_then(|n| boot.config().sites.get(n))
                .and_then(|site| site.discovery.as_ref())
                .map_or("poweroff", |d| if d.poweroff { "poweroff" } else { "wait" });
            (StatusCode::OK, format!("{then}\n")).into_response()
        }
        // A configured host, or a MAC provd never saw boot: nothing to record.
        Err(crate::inventory::InventoryError::UnknownHost) => line(StatusCode::NOT_FOUND, "not found"),
        Err(e) => refuse(&s, BootError::Inventory(e), "discovery"),
    }
}

/// `/nocloud/<token>/<file>`: a deployed VM's cloud-init NoCloud seed. Unknown tokens and
/// file names are a plain 404 (the token is the secret; nothing says which part was wrong).
async fn nocloud(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((token, file)): Path<(String, String)>,
) -> Response {
    let Some(seed) = s.nocloud.get(&token) else {
        s.http_stats.not_found.inc();
        return line(StatusCode::NOT_FOUND, "not found");
    };
    let Some(body) = seed.file(&file) else {
        s.http_stats.not_found.inc();
        return line(StatusCode::NOT_FOUND, "not found");
    };
    s.http_stats.nocloud.inc();
    if let IpAddr::V4(ip) = peer.ip() {
        s.journal.record_ip(
            ip,
            Step::Nocloud {
                hostname: seed.hostname.clone(),
                file: file.clone(),
            },
        );
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

use super::failure::line;

/// Map boot errors to responses that say nothing about why beyond the status.
fn refuse(s: &AppState, e: BootError, what: &str) -> Response {
    if let Some(f) = e.store_failure() {
        s.http_stats.store_errors.inc();
        return super::failure::plain(what, &f);
    }
    match e {
        BootError::WrongAddress { mac, from, ref holds } => {
            // A machine that is not where provd put this MAC: counted, and both addresses
            // go to the journal for the operator.
            s.http_stats.refused_address.inc();
            tracing::warn!("{what}: refused: {e}");
            s.journal.record(
                Some(mac),
                Some(from),
                Step::Refused {
                    request: what.to_string(),
                    why: RefusalReason::WrongAddress {
                        from,
                        holds: holds.clone(),
                    },
                },
            );
            line(StatusCode::FORBIDDEN, "forbidden")
        }
        BootError::UnknownHost => {
            s.http_stats.not_found.inc();
            line(StatusCode::NOT_FOUND, "not found")
        }
        BootError::BoundElsewhere { bound } => {
            // The host's own other address (its lease beside its reservation): a second
            // machine there, or a host that changed address mid-install. Either way the
            // operator hears of it.
            s.http_stats.refused_address.inc();
            tracing::warn!("{what}: refused: {e}");
            s.journal.record(
                None,
                None,
                Step::Refused {
                    request: what.to_string(),
                    why: RefusalReason::TokenBoundElsewhere { bound },
                },
            );
            line(StatusCode::FORBIDDEN, e)
        }
        BootError::StepTaken(ref step) => {
            // The asker holds the token: saying which step was taken tells it nothing new.
            s.http_stats.refused_token.inc();
            tracing::warn!("{what}: {e}");
            s.journal.record(
                None,
                None,
                Step::Refused {
                    request: what.to_string(),
                    why: RefusalReason::StepTaken { step: step.clone() },
                },
            );
            line(StatusCode::FORBIDDEN, e)
        }
        BootError::TooSoon { .. } | BootError::NotDue { .. } => {
            s.http_stats.refused_certificate.inc();
            tracing::warn!("{what}: {e}");
            line(StatusCode::TOO_MANY_REQUESTS, e)
        }
        BootError::Rejected
        | BootError::NotRenewable { .. }
        | BootError::NoCertificateRole { .. }
        | BootError::NotVerified { .. }
        | BootError::BadProof(_) => {
            s.http_stats.refused_certificate.inc();
            tracing::warn!("{what}: {e}");
            line(StatusCode::FORBIDDEN, e)
        }
        BootError::TokenRefused => {
            s.http_stats.refused_token.inc();
            tracing::warn!("{what}: token refused");
            line(StatusCode::FORBIDDEN, "forbidden")
        }
        BootError::Certificate(e) => {
            tracing::warn!("{what}: {e}");
            line(StatusCode::BAD_REQUEST, e)
        }
        BootError::NoCa => line(StatusCode::SERVICE_UNAVAILABLE, "this provd has no CA yet"),
        other => {
            s.http_stats.render_errors.inc();
            tracing::error!("{what}: {other}");
            line(
                StatusCode::INTERNAL_SERVER_ERROR,
                "provd could not produce this file; see its log",
            )
        }
    }
}

/// The IPv4 address a request came from (boot listeners are IPv4 site addresses).
pub(super) fn source(peer: SocketAddr) -> Option<std::net::Ipv4Addr> {
    match peer.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

/// `/boot/<mac>.ipxe`: the iPXE script for that MAC now (install, local disk, or menu),
/// only at an address the MAC holds when it is a configured host.
async fn boot_script(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
) -> Response {
    let Some(mac) = file.strip_suffix(".ipxe").and_then(|m| m.parse::<MacAddr>().ok()) else {
        s.http_stats.not_found.inc();
        return line(StatusCode::NOT_FOUND, "not found");
    };
    let Some(from) = source(peer) else {
        return line(StatusCode::FORBIDDEN, "forbidden");
    };
    // One config generation for the whole request: the plan, its script and its journal
    // line all come from the same config even when a reload lands in between.
    let boot = s.boot();
    let result = match boot.plan(mac, s.listener_site.as_deref(), from).await {
        Ok(plan) => {
            let text = boot.render_plan(Format::Ipxe, &plan);
            if text.is_ok() {
                let description = plan.describe(boot.config());
                s.journal.record(
                    Some(mac),
                    None,
                    Step::BootScript {
                        action: plan.action(),
                        description,
                    },
                );
            }
            text
        }
        Err(e) => Err(e),
    };
    boot_script_response(&s, mac, result)
}

fn boot_script_response(s: &AppState, mac: MacAddr, result: Result<String, BootError>) -> Response {
    let s = s.clone();
    match result {
        Ok(text) => {
            s.http_stats.boot_scripts.inc();
            ([("content-type", "text/plain; charset=utf-8")], text).into_response()
        }
        Err(e) => refuse(&s, e, &format!("boot script for {mac}")),
    }
}

async fn kickstart(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(host): Path<String>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let token = q.token.unwrap_or_default();
    let Some(from) = source(peer) else {
        return line(StatusCode::FORBIDDEN, "forbidden");
    };
    let boot = s.boot();
    match boot.kickstart(&host, &token, from).await {
        Ok(text) => {
            s.http_stats.kickstarts.inc();
            tracing::info!("kickstart served to {host}");
            let mac = boot.find(&host).await;
            s.journal.record(mac, None, Step::Kickstart { bytes: text.len() });
            ([("content-type", "text/plain; charset=utf-8")], text).into_response()
        }
        Err(e) => refuse(&s, e, &format!("kickstart for {host:?}")),
    }
}

/// `POST /callback/<host>/<event>?token=`: installing, post-started, installed, failed.
/// The body, if any, is a short free-text detail kept in the host's history.
async fn callback(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((host, event)): Path<(String, String)>,
    Query(q): Query<TokenQuery>,
    body: String,
) -> Response {
    let Ok(event) = event.parse::<InstallEvent>() else {
        return line(
            StatusCode::BAD_REQUEST,
            "event must be installing, post-started, installed or failed",
        );
    };
    let Some(from) = source(peer) else {
        return line(StatusCode::FORBIDDEN, "forbidden");
    };
    match s
        .boot()
        .callback(&host, &q.token.unwrap_or_default(), event, body.trim(), from)
        .await
    {
        Ok((mac, status)) => {
            s.http_stats.callbacks.inc();
            tracing::info!("install event from {host}: {event:?} -> {status:?}");
            s.journal.record(Some(mac), None, Step::Callback { event });
            axum::Json(serde_json::json!({ "status": status })).into_response()
        }
        Err(e) => refuse(&s, e, &format!("callback {event:?} from {host:?}")),
    }
}

#[derive(Deserialize)]
struct SignQuery {
    token: Option<String>,
    role: Option<String>,
}

/// The role a certificate request asks for (default server) and its IPv4 source, or the
/// answer refusing it.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself, built once per refused request
fn role_and_source(q: &SignQuery, peer: SocketAddr) -> Result<(Role, std::net::Ipv4Addr), Response> {
    let role = q
        .role
        .as_deref()
        .unwrap_or("server")
        .parse::<Role>()
        .map_err(|e| line(StatusCode::BAD_REQUEST, e))?;
    let from = source(peer).ok_or_else(|| line(StatusCode::FORBIDDEN, "forbidden"))?;
    Ok((role, from))
}

/// `POST /pki/sign/<host>?token=&role=server|client` with a PEM CSR as the body. The answer
/// is two PEM certificates, each after a `# provd: <what>` line: the CA, then the host's
/// certificate for that role (a shell splits it with awk). Each role is signed once per
/// install token.
async fn sign(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(host): Path<String>,
    Query(q): Query<SignQuery>,
    csr: String,
) -> Response {
    let (role, from) = match role_and_source(&q, peer) {
        Ok(x) => x,
        Err(refusal) => return refusal,
    };
    let boot = s.boot();
    match boot
        .sign_csr(&host, q.token.as_deref().unwrap_or_default(), role, &csr, from)
        .await
    {
        Ok(SignOutcome::Issued(cert)) => {
            certificate_response(&s, &boot, &host, role, cert, CertificateAction::Issued).await
        }
        Ok(SignOutcome::Waiting) => {
            s.http_stats.certificates_waiting.inc();
            (
                StatusCode::ACCEPTED,
                "waiting for an operator: provd pki approve (ask again later)\n",
            )
                .into_response()
        }
        Err(e) => refuse(&s, e, &format!("{} certificate request from {host:?}", role.name())),
    }
}

/// The CA, then the host's certificate, each after a `# provd: <what>` line.
async fn certificate_response(
    s: &AppState,
    boot: &Boot,
    host: &str,
    role: Role,
    cert: String,
    action: CertificateAction,
) -> Response {
    s.http_stats.certificates.inc();
    let mac = boot.find(host).await;
    s.journal.record(
        mac,
        None,
        Step::Pki {
            action,
            role: role.name().to_string(),
            key: None,
            serial: None,
        },
    );
    let ca = boot.ca_pem().unwrap_or_default();
    // In a region: the root beside the site's CA, and the site's cross-certificate after
    // the host's own (a peer that trusts only the root can then verify it).
    let (trusted, chain) = match boot.region_chain() {
        Some((root, cross)) => (format!("{ca}{root}"), cross),
        None => (ca.to_string(), String::new()),
    };
    let body = format!("# provd: ca\n{trusted}# provd: {}\n{cert}{chain}", role.name());
    ([("content-type", "application/x-pem-file")], body).into_response()
}

/// `POST /pki/renew/<host>?role=server|client` with a PEM CSR signed by the key of the
/// host's current, valid certificate for that role: the same answer as `/pki/sign`.
async fn renew(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(host): Path<String>,
    Query(q): Query<SignQuery>,
    csr: String,
) -> Response {
    let (role, from) = match role_and_source(&q, peer) {
        Ok(x) => x,
        Err(refusal) => return refusal,
    };
    let boot = s.boot();
    match boot.renew(&host, role, &csr, from).await {
        Ok(cert) => certificate_response(&s, &boot, &host, role, cert, CertificateAction::Renewed).await,
        Err(e) => refuse(&s, e, &format!("{} certificate renewal for {host:?}", role.name())),
    }
}

/// `/pki/crl.pem`: the CA's revocation list, signed now (public: it names serials only).
async fn crl(State(s): State<AppState>) -> Response {
    match s.boot().crl_pem() {
        Ok(pem) => {
            s.http_stats.crl.inc();
            ([("content-type", "application/pkix-crl")], pem).into_response()
        }
        Err(e) => refuse(&s, e, "CRL"),
    }
}

/// `/pki/region-crl.pem`: the region's revocation list this site keeps (public like
/// `/pki/crl.pem`; 404 while the region has given none).
async fn region_crl(State(s): State<AppState>) -> Response {
    match s.region_crl.pem() {
        Some(pem) => ([("content-type", "application/pkix-crl")], pem).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no region revocation list: this site is in no region, or its region revoked nothing\n",
        )
            .into_response(),
    }
}

/// `/assets/<path>`: files under the assets directory, with Range and HEAD (tower-http).
async fn asset(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    match served_root::resolve(&s.assets_root, &path) {
        Ok(file) => {
            let range = req.headers().get("range").and_then(|v| v.to_str().ok());
            note_asset(&s, peer, req.method().as_str(), &path, range);
            match tower_http::services::ServeFile::new(file).oneshot(req).await {
                Ok(resp) => resp.map(Body::new),
                Err(e) => match e {},
            }
        }
        Err(Refusal::OutsideRoot) => {
            s.http_stats.refused_outside_root.inc();
            tracing::warn!("assets: refused {path:?}: outside the served directory");
            line(StatusCode::FORBIDDEN, "forbidden")
        }
        Err(Refusal::NotFound) => {
            s.http_stats.not_found.inc();
            line(StatusCode::NOT_FOUND, "not found")
        }
    }
}

/// What serving a file under `/assets` counts and journals, whoever serves it (this
/// handler, or the zero-copy path in front of the router).
fn note_asset(s: &AppState, peer: SocketAddr, method: &str, path: &str, range: Option<&str>) {
    s.http_stats.assets.inc();
    if let IpAddr::V4(ip) = peer.ip() {
        s.journal.record_ip(
            ip,
            Step::HttpAsset {
                method: method.to_string(),
                path: path.to_string(),
                range: range.map(str::to_string),
            },
        );
    }
}

/// The zero-copy path serves exactly what this router's `/assets` route would: the same
/// root check, the same counters and journal.
impl super::zero_copy::AssetFiles for AppState {
    fn resolve(&self, path: &str) -> Option<std::path::PathBuf> {
        served_root::resolve(&self.assets_root, path).ok()
    }

    fn served(&self, peer: SocketAddr, head_only: bool, path: &str, range: Option<&str>) {
        self.http_stats.assets_sendfile.inc();
        note_asset(self, peer, if head_only { "HEAD" } else { "GET" }, path, range);
    }
}
