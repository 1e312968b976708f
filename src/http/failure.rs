//! How a failure of provd's own store reaches an HTTP client and the log: the kind the
//! store saw (disk full, I/O, corruption) chooses the status, so a full disk is a 507 an
//! operator recognises rather than the same 500 as a template bug. The kind is also a field
//! of the admin API's JSON error and of the log line.

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

/// The admin API's answer: `{"error": "...", "kind": "disk-full"}`.
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
    fn each_kind_keeps_its_own_status() {
        assert_eq!(status(ErrorKind::DiskFull).as_u16(), 507);
        assert_eq!(status(ErrorKind::Other).as_u16(), 503);
        assert_eq!(status(ErrorKind::Io).as_u16(), 500);
        assert_eq!(status(ErrorKind::Corruption).as_u16(), 500);
    }
}
