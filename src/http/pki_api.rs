//! Admin routes for provd's CA (behind the admin credential like every `/api/...` route):
//! `GET /api/pki` (certificates and waiting requests), `POST /api/pki/<host>/approve`,
//! `.../reject`, `.../revoke?role=`. Each decision goes to the boot journal.

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
