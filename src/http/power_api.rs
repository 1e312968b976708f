//! Admin routes for BMCs: `POST /api/hosts/{host}/power/{action}` (status, on, off, cycle,
//! pxe-once), `GET /api/bmc` (which configured hosts have a BMC, their site and tags, for
//! the CLI's selectors; never a credential), and the power half of `reinstall?power=true`.
//! Every action and its outcome go to the host's history and the boot journal.

use super::AppState;
use crate::bmc::{Action, Outcome};
use crate::config::Bmc;
use crate::mac::MacAddr;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/bmc", get(list))
        .route("/api/hosts/{host}/power/{action}", post(power))
}

/// One host's result, as the CLI's table and `--json` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PowerResult {
    pub host: String,
    pub action: String,
    pub ok: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub error: Option<String>,
    pub seconds: f64,
}

/// A configured host and its BMC, as `GET /api/bmc` lists them (the CLI selects by site
/// and tag from it).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct BmcEntry {
    pub host: String,
    pub mac: MacAddr,
    pub site: String,
    pub tags: Vec<String>,
    /// None: the host has no BMC.
    pub driver: Option<String>,
    pub address: Option<String>,
}

/// `POST /api/hosts/<host>/reinstall?power=true`: the host record with the power cycle's
/// result (and, when the cycle failed, why; the reinstall itself stands).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct PoweredReinstall {
    #[serde(flatten)]
    pub host: crate::inventory::HostRecord,
    pub power: PowerResult,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

async fn list(State(s): State<AppState>) -> Response {
    let boot = s.boot();
    let served = boot.served_sites();
    let mut out: Vec<BmcEntry> = boot
        .config()
        .hosts
        .iter()
        .filter(|e| served.contains(&e.site))
        .map(|e| BmcEntry {
            host: e.host.hostname.clone(),
            mac: e.host.mac,
            site: e.site.clone(),
            tags: e.host.tags.clone(),
            driver: e.host.bmc.as_ref().map(|b| b.driver.as_str().to_string()),
            address: e.host.bmc.as_ref().map(|b| b.address.clone()),
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    Json(out).into_response()
}

/// The configured host `name` of a served site and its BMC, in the request's generation.
#[allow(clippy::result_large_err)] // the error is the HTTP answer itself, built once per refused request
pub(super) fn host_bmc(boot: &crate::boot::Boot, name: &str) -> Result<(MacAddr, String, Bmc), Response> {
    use super::failure::refuse;
    let Some(entry) = boot
        .config()
        .hosts
        .by_name(name)
        .or_else(|| name.parse().ok().and_then(|m| boot.config().hosts.by_mac(m)))
        .filter(|e| boot.served_sites().contains(&e.site))
    else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            format!("no configured host {name:?} on this server"),
        ));
    };
    let Some(bmc) = entry.host.bmc.clone() else {
        return Err(refuse(
            StatusCode::CONFLICT,
            format!("{name} has no BMC in its host entry (bmc = {{ driver, address, credentials }})"),
        ));
    };
    Ok((entry.host.mac, entry.host.hostname.clone(), bmc))
}

async fn power(State(s): State<AppState>, Path((name, action)): Path<(String, String)>) -> Response {
    let action: Action = match action.parse() {
        Ok(a) => a,
        Err(e) => return super::failure::refuse(StatusCode::BAD_REQUEST, e),
    };
    // One generation for the request: the host's BMC and the secrets file it is read with.
    let boot = s.boot();
    let (mac, host, bmc) = match host_bmc(&boot, &name) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let result = act(&s, &boot, mac, &host, bmc, action).await;
    let code = if result.ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    (code, Json(result)).into_response()
}

/// Run one action and record it (history, journal); `boot` is the request's generation.
pub async fn act(
    s: &AppState,
    boot: &crate::boot::Boot,
    mac: MacAddr,
    host: &str,
    bmc: Bmc,
    action: Action,
) -> PowerResult {
    let started = std::time::Instant::now();
    let secrets = boot.config().daemon.bmc_secrets.clone();
    let driver = bmc.driver.as_str();
    let r = s.power.act(bmc, secrets, action).await;
    let seconds = started.elapsed().as_secs_f64();
    let (line, result) = match r {
        Ok(outcome) => (
            format!(
                "power {} via {driver}: ok, power {}{}",
                action.as_str(),
                outcome.state.as_str(),
                if outcome.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", outcome.detail)
                }
            ),
            PowerResult {
                host: host.to_string(),
                action: action.as_str().into(),
                ok: true,
                outcome,
                error: None,
                seconds,
            },
        ),
        Err(e) => (
            format!("power {} via {driver}: FAILED: {e}", action.as_str()),
            PowerResult {
                host: host.to_string(),
                action: action.as_str().into(),
                ok: false,
                outcome: Outcome::default(),
                error: Some(e.to_string()),
                seconds,
            },
        ),
    };
    // A status query is not an event worth a history line; every change is.
    if action != Action::Status
        && let Err(e) = s.inventory.note(mac, line.clone()).await
    {
        tracing::warn!("{host}: could not record the power action in its history: {e}");
    }
    s.journal.record(
        Some(mac),
        None,
        crate::journal::Step::Power {
            host: host.to_string(),
            action: result.action.clone(),
            ok: result.ok,
            state: result.ok.then(|| result.outcome.state.as_str().to_string()),
            error: result.error.clone(),
        },
    );
    result
}

/// `reinstall?power=true`, after the reinstall intent is durable: one-time PXE, then a
/// power cycle (on, if it was off). A BMC that refuses the boot override is a warning, not
/// a failure: provd decides what a network-booting machine gets, and machines that try
/// the network first (most provisioning setups) install anyway.
pub async fn reinstall_power(s: &AppState, boot: &crate::boot::Boot, name: &str) -> Result<PowerResult, Response> {
    let (mac, host, bmc) = host_bmc(boot, name)?;
    let pxe = act(s, boot, mac, &host, bmc.clone(), Action::PxeOnce).await;
    let mut cycle = act(s, boot, mac, &host, bmc, Action::Cycle).await;
    cycle.outcome.warnings.extend(pxe.outcome.warnings);
    if !pxe.ok {
        cycle.outcome.warnings.push(format!(
            "the one-time PXE boot was not set ({}): the machine installs only if it tries the network first",
            pxe.error.unwrap_or_default()
        ));
    }
    cycle.action = "pxe-once+cycle".into();
    cycle.seconds += pxe.seconds;
    Ok(cycle)
}
