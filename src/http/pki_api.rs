//! Admin routes for provd's CA (behind the admin credential like every `/api/...` route):
//! `GET /api/pki` (certificates and waiting requests), `POST /api/pki/<host>/approve`,
//! `.../reject`, `.../revoke?role=`. Each decision goes to the boot journal. And
//! `POST /api/pki/region-crl`: the region hands over its revocation list
//! (`pki::region_crl`, which keeps only a newer list its root signed).

use super::AppState;
use crate::boot::BootError;
use crate::journal::{CertificateAction, Step};
use crate::pki::Role;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/pki", get(list))
        .route("/api/pki/{host}/approve", post(approve))
        .route("/api/pki/{host}/reject", post(reject))
        .route("/api/pki/{host}/revoke", post(revoke))
        .route("/api/pki/region-crl", post(region_crl))
}

/// `POST /api/pki/region-crl` with the region's CRL (PEM): kept when the region's root
/// signed it and it is newer than the kept one; served to hypervisors at
/// `/pki/region-crl.pem`.
async fn region_crl(State(s): State<AppState>, pem: String) -> Response {
    use crate::pki::region_crl::{Offered, RegionCrlError};
    let keeper = s.region_crl.clone();
    let offered = tokio::task::spawn_blocking(move || keeper.offer(&pem)).await;
    match offered {
        Ok(Ok(offered)) => {
            if let Offered::Kept(facts) = &offered {
                tracing::info!(
                    "the region's revocation list {} kept ({} revoked)",
                    facts.number,
                    facts.revoked.len()
                );
            }
            Json(offered).into_response()
        }
        Ok(Err(e @ RegionCrlError::Older { kept, .. })) => {
            let mut extra = serde_json::Map::new();
            extra.insert(crate::pki::region_crl::KEPT_NUMBER.into(), kept.into());
            super::failure::refuse_with(StatusCode::CONFLICT, e, extra)
        }
        Ok(Err(e @ RegionCrlError::NoRegion)) => super::failure::refuse(StatusCode::CONFLICT, e),
        Ok(Err(e @ RegionCrlError::Invalid(_))) => super::failure::refuse(StatusCode::UNPROCESSABLE_ENTITY, e),
        Ok(Err(e @ RegionCrlError::Io { .. })) => super::failure::refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => super::failure::refuse(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn list(State(s): State<AppState>) -> Response {
    Json(s.boot().certificate_list()).into_response()
}

fn error(e: BootError) -> Response {
    let status = match e {
        BootError::UnknownHost => StatusCode::NOT_FOUND,
        BootError::NoCa => StatusCode::SERVICE_UNAVAILABLE,
        BootError::Certificate(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    super::failure::refuse(status, e)
}

async fn decided(
    s: &AppState,
    boot: &crate::boot::Boot,
    host: &str,
    action: CertificateAction,
    decided: Vec<crate::pki::signer::Decided>,
) -> Response {
    let mac = boot.find(host).await;
    for d in &decided {
        s.journal.record(
            mac,
            None,
            Step::Pki {
                action,
                role: d.role.to_string(),
                key: Some(d.fingerprint.clone()),
                serial: None,
            },
        );
    }
    Json(crate::pki::signer::Decisions {
        host: host.to_string(),
        keys: decided,
    })
    .into_response()
}

#[derive(Deserialize)]
struct ApproveQuery {
    fingerprint: Option<String>,
}

async fn approve(State(s): State<AppState>, Path(host): Path<String>, Query(q): Query<ApproveQuery>) -> Response {
    let boot = s.boot();
    match boot.approve(&host, q.fingerprint.as_deref()).await {
        Ok(roles) => decided(&s, &boot, &host, CertificateAction::Approved, roles).await,
        Err(e) => error(e),
    }
}

async fn reject(State(s): State<AppState>, Path(host): Path<String>) -> Response {
    let boot = s.boot();
    match boot.reject(&host).await {
        Ok(roles) => decided(&s, &boot, &host, CertificateAction::Rejected, roles).await,
        Err(e) => error(e),
    }
}

#[derive(Deserialize)]
struct RoleQuery {
    role: Option<String>,
}

async fn revoke(State(s): State<AppState>, Path(host): Path<String>, Query(q): Query<RoleQuery>) -> Response {
    let role = match q.role.as_deref().map(str::parse::<Role>).transpose() {
        Ok(r) => r,
        Err(e) => return super::failure::refuse(StatusCode::BAD_REQUEST, e),
    };
    let boot = s.boot();
    match boot.revoke(&host, role).await {
        Ok(revoked) => {
            let mac = boot.find(&host).await;
            for c in &revoked {
                s.journal.record(
                    mac,
                    None,
                    Step::Pki {
                        action: CertificateAction::Revoked,
                        role: c.role.to_string(),
                        key: None,
                        serial: Some(c.serial.clone()),
                    },
                );
            }
            Json(crate::pki::signer::Revoked { host, revoked }).into_response()
        }
        Err(e) => error(e),
    }
}
