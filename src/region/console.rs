//! The region's web console: one embedded page over every site (health, last contact, the
//! address that answered, hosts by site with a filter, a reinstall that asks first and
//! goes to the owning site). Signed in as the site console is: the region's API token
//! once, then a session cookie (`http::session`: random, HttpOnly, SameSite=Strict);
//! changes also need `X-Provd-Console: 1`. The page polls the region's API every 5 s.

use super::Region;
use crate::http::session::{CSRF_HEADER, session_of};
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");

/// Whether the request carries a live console session.
pub fn has_session(r: &Region, headers: &HeaderMap) -> bool {
    session_of(headers).is_some_and(|id| r.console.valid(id, crate::clock::unix_now()))
}

/// Whether a session's request may change something (the header a cross-site page cannot
/// make a browser send).
pub fn console_write(headers: &HeaderMap) -> bool {
    headers.get(CSRF_HEADER).is_some_and(|v| v == "1")
}

pub fn routes() -> Router<Arc<Region>> {
    Router::new()
        .route("/console", get(page))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let page = crate::http::console::LOGIN
        .replace("{{message}}", message)
        .replace("provd console", "provd region");
    (status, [(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

async fn page(State(r): State<Arc<Region>>, headers: HeaderMap) -> Response {
    if !has_session(&r, &headers) {
        return login_page(StatusCode::UNAUTHORIZED, "");
    }
    let page = INDEX.replace(
        "<span id=\"region\"></span>",
        &format!("<span id=\"region\">{}</span>", r.config.name),
    );
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

async fn script(State(r): State<Arc<Region>>, headers: HeaderMap) -> Response {
    if !has_session(&r, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

async fn style(State(r): State<Arc<Region>>, headers: HeaderMap) -> Response {
    if !has_session(&r, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::http::console::STYLE,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(r): State<Arc<Region>>, Form(f): Form<LoginForm>) -> Response {
    if !r.token.accepts(f.token.trim()) {
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That is not the region's token (it is in the region's &lt;state_dir&gt;/api-token).",
        );
    }
    let id = r.console.open(crate::clock::unix_now());
    let secure = r.config.tls;
    let cookie = crate::http::session::session_cookie(&id, secure);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

async fn logout(State(r): State<Arc<Region>>, headers: HeaderMap) -> Response {
    if let Some(id) = session_of(&headers) {
        r.console.close(id);
    }
    let cookie = crate::http::session::cleared_cookie();
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}
