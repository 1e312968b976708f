//! The admin API's credential: a bearer token made at the daemon's first start and kept in
//! `<state_dir>/api-token` (0600, in a 0700 state directory), so only someone who can read
//! the daemon's state (root, or the provd user) can drive it. The CLI on the same machine
//! reads the file by itself; elsewhere `--token-file` points at a copy.
//!
//! Every `/api/...` route asks for `Authorization: Bearer <token>` or, on an HTTPS admin
//! listener (`api_tls`), an admin client certificate from provd's CA (`tls::Operator`);
//! without either the answer is 401 and the refusal is counted. `/metrics` stays open on the admin listener (counters,
//! no secrets), and boot routes never need it. The API never returns the token.

use super::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const TOKEN_FILE: &str = "api-token";

/// Where the token of the daemon with state directory `state_dir` lives.
pub fn token_path(state_dir: &Path) -> PathBuf {
    state_dir.join(TOKEN_FILE)
}

#[derive(Clone)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(..)") // never in logs
    }
}

impl ApiToken {
    /// The token in `<state_dir>/api-token`, made (0600) if there is none yet. A token file
    /// others could read is refused: the daemon must not run with a leaked credential.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<ApiToken> {
        let path = token_path(state_dir);
        match std::fs::metadata(&path) {
            Ok(meta) => {
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        format!(
                            "{} is readable by others (mode {:o}): chmod 600 it, or remove it to make a new token",
                            path.display(),
                            meta.permissions().mode() & 0o777
                        ),
                    ));
                }
                read_token(&path).map(ApiToken)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = format!("{}{}", crate::random::token(), crate::random::token());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                f.write_all(token.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()?;
                tracing::info!("admin API token created in {}", path.display());
                Ok(ApiToken(token))
            }
            Err(e) => Err(e),
        }
    }

    pub fn accepts(&self, presented: &str) -> bool {
        crate::inventory::token::equal(&self.0, presented)
    }

    /// For in-process tests: the header value that passes.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// Read a token file (the CLI's `--token-file`, or the daemon's own).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let t = text.trim();
    if t.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(t.to_string())
}

/// The token of an `Authorization: Bearer ...` header, if the request has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// Which credential a request to the admin listener carries: the one rule the API's
/// middleware and the console's pages both follow.
pub enum Credential<'a> {
    /// A verified admin client certificate (HTTPS listener), not revoked.
    Certificate(&'a super::tls::Operator),
    /// An admin certificate provd revoked (`provd pki revoke NAME`: asked per request, so
    /// a revocation holds at once, also on connections already open).
    Revoked,
    /// The bearer token.
    Token,
    /// A bearer header with something else in it: refused, whatever else is there.
    WrongToken,
    /// A console session's cookie (`console`), with no bearer header.
    Session,
    None,
}

pub fn credential<'a>(s: &AppState, headers: &HeaderMap, extensions: &'a axum::http::Extensions) -> Credential<'a> {
    if let Some(op) = extensions.get::<super::tls::Operator>() {
        return if s.boot.certificates().is_revoked(&op.1) {
            Credential::Revoked
        } else {
            Credential::Certificate(op)
        };
    }
    let presented = bearer(headers);
    match presented {
        Some(t) if s.api_token.accepts(t) => Credential::Token,
        Some(_) => Credential::WrongToken,
        None if super::session::session_of(headers).is_some_and(|id| s.console.valid(id, crate::clock::unix_now())) => {
            Credential::Session
        }
        None => Credential::None,
    }
}

/// The middleware on every `/api/...` route.
pub async fn require_token(State(s): State<AppState>, req: Request, next: Next) -> Response {
    match credential(&s, req.headers(), req.extensions()) {
        Credential::Certificate(op) => {
            tracing::debug!(
                "admin API: {} {} by certificate {:?}",
                req.method(),
                req.uri().path(),
                op.0
            );
            next.run(req).await
        }
        Credential::Token => next.run(req).await,
        Credential::Session => {
            // A console session: its own page's reads, and changes only with the header a
            // cross-site form or link cannot add (the cookie is SameSite=Strict as well).
            let read_only = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
            if !read_only && req.headers().get(super::session::CSRF_HEADER).is_none_or(|v| v != "1") {
                s.http_stats.refused_unauthenticated.inc();
                return super::failure::refuse(
                    StatusCode::FORBIDDEN,
                    "a console session changes things only from the console (X-Provd-Console: 1)",
                );
            }
            next.run(req).await
        }
        Credential::Revoked => {
            s.http_stats.refused_revoked.inc();
            super::failure::refuse(StatusCode::UNAUTHORIZED, "this client certificate is revoked")
        }
        Credential::WrongToken | Credential::None => {
            s.http_stats.refused_unauthenticated.inc();
            (
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"provd\"")],
                super::failure::refuse(
                    StatusCode::UNAUTHORIZED,
                    "the admin API needs `Authorization: Bearer <token>` (the token is in <state_dir>/api-token) or, over HTTPS, an admin client certificate from provd's CA",
                ),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_private_reused_and_refused_when_others_can_read_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = ApiToken::load_or_create(dir.path()).unwrap();
        let path = token_path(dir.path());
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(a.0.len(), 64);
        let b = ApiToken::load_or_create(dir.path()).unwrap();
        assert_eq!(a.0, b.0, "the same token after a restart");
        assert!(a.accepts(&b.0) && !a.accepts("nope") && !a.accepts(&a.0[..63]));
        assert_eq!(format!("{a:?}"), "ApiToken(..)");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ApiToken::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("readable by others"), "{e}");
    }
}
