//! Every refusal and failure the admin API answers takes its shape here: `{"error": why}`
//! (plus `kind` for a store failure, and extra fields where a caller needs them), with the
//! status that says which kind of refusal it is. Handlers choose the status; they never
//! build the error body themselves.
//!
//! A failure of provd's own store: the kind the store saw (disk full, I/O, corruption)
//! chooses the status, so a full disk is a 507 an operator recognises rather than the same
//! 500 as a template bug. The kind is also a field of the admin API's JSON error and of the
//! log line.

use crate::store::{ErrorKind, Failure};
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// The status for a store failure of this kind.
pub fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        // RFC 4918 §11.5: the server cannot store what the request needs.
        ErrorKind::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
        // The database is held elsewhere or its writer stopped: try again later.
        ErrorKind::Other => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Io | ErrorKind::Corruption => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The admin API's refusal: `{"error": why}` with `status`.
pub fn refuse(status: StatusCode, why: impl std::fmt::Display) -> Response {
    refuse_with(status, why, serde_json::Map::new())
}

/// A refusal with more fields beside `error` (e.g. the domains a reinstall would destroy).
pub fn refuse_with(
    status: StatusCode,
    why: impl std::fmt::Display,
    mut extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    extra.insert("error".into(), why.to_string().into());
    (status, Json(serde_json::Value::Object(extra))).into_response()
}

/// A boot listener's refusal: one line of text (iPXE, curl in a kickstart and the
/// installer read text, not JSON).
pub fn line(status: StatusCode, why: impl std::fmt::Display) -> Response {
    (status, format!("{why}\n")).into_response()
}

/// provd itself failed (a task gone, a join error): 500, logged.
pub fn internal(why: impl std::fmt::Display) -> Response {
    tracing::error!("admin API: {why}");
    refuse(StatusCode::INTERNAL_SERVER_ERROR, why)
}

/// The admin API's answer to a store failure: `{"error": "...", "kind": "disk-full"}`.
pub fn json(what: &str, f: &Failure) -> Response {
    tracing::error!(kind = %f.kind, "{what}: {f}");
    (
        status(f.kind),
        Json(serde_json::json!({ "error": format!("{what}: {f}"), "kind": f.kind })),
    )
        .into_response()
}

/// A boot listener's answer: the kind in words, nothing of the store's own text (a machine
/// on the boot network learns only that provd could not record the step now).
pub fn plain(what: &str, f: &Failure) -> Response {
    tracing::error!(kind = %f.kind, "{what}: {f}");
    (
        status(f.kind),
        format!("provd could not record this now ({})\n", f.kind),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_error_plus_the_extra_fields() {
        let mut extra = serde_json::Map::new();
        extra.insert("running_domains".into(), serde_json::json!(["a"]));
        let r = refuse_with(StatusCode::CONFLICT, "busy", extra);
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let body = futures_body(r);
        assert_eq!(body, serde_json::json!({"error": "busy", "running_domains": ["a"]}));
        let body = futures_body(refuse(StatusCode::NOT_FOUND, "no such host"));
        assert_eq!(body, serde_json::json!({"error": "no such host"}));
    }

    fn futures_body(r: Response) -> serde_json::Value {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let bytes = rt.block_on(axum::body::to_bytes(r.into_body(), 1 << 20)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn each_kind_keeps_its_own_status() {
        assert_eq!(status(ErrorKind::DiskFull).as_u16(), 507);
        assert_eq!(status(ErrorKind::Other).as_u16(), 503);
        assert_eq!(status(ErrorKind::Io).as_u16(), 500);
        assert_eq!(status(ErrorKind::Corruption).as_u16(), 500);
    }
}
