//! The web console on the admin listener: one page (embedded: no build step, no CDN) that
//! shows the fleet per site with each host's progress through DHCP -> script -> kernel ->
//! kickstart -> %post -> installed, the boot journal live, leases with search, the failover
//! relationships and the hypervisor pool, and asks for confirmation before it reinstalls,
//! switches netboot or power-cycles a host (through the same admin API the CLI uses).
//!
//! Authentication is the API's: a browser cannot send the bearer header on a page load,
//! so `POST /console/login` takes the token once and answers with a session cookie
//! (random, not the token; HttpOnly, SameSite=Strict, 12 hours, at most 64 at once). The
//! API accepts that cookie like the token, and for anything but GET it also wants the
//! `X-Provd-Console: 1` header, which no other site's page can make a browser send.
//!
//! Live: `GET /api/console/stream` is one server-sent-events stream per open tab. It sends a
//! snapshot of everything the page shows when the journal records something, and at least
//! every 5 s, never more than one a second: one request per tab, however busy the fleet.
//! The credential the stream was opened with is asked again before every snapshot: a
//! session signed out or expired, or a client certificate revoked, ends the stream with an
//! `ended` event (the page then shows the sign-in), so an open tab never outlives its
//! credential by more than one interval.

use super::AppState;
use super::session::session_of;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use std::time::Duration;

const INDEX: &str = include_str!("console/index.html");
pub const LOGIN: &str = include_str!("console/login.html");
const SCRIPT: &str = include_str!("console/app.js");
pub const STYLE: &str = include_str!("console/app.css");

/// Journal entries a snapshot carries (newest).
const EVENTS: usize = 300;

/// Whether a request may see the console: the API's credentials (`auth::credential`),
/// a console session among them.
fn authenticated(s: &AppState, headers: &HeaderMap, extensions: &axum::http::Extensions) -> bool {
    use super::auth::Credential;
    matches!(
        super::auth::credential(s, headers, extensions),
        Credential::Certificate(_) | Credential::Token | Credential::Session
    )
}

/// `/console...` (the page and its assets) on the admin listener.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(page))
        .route("/console/app.js", get(script))
        .route("/console/app.css", get(style))
        .route("/console/login", post(login))
        .route("/console/logout", post(logout))
}

/// `/api/console/stream`: behind the API's own authentication.
pub fn api_routes() -> Router<AppState> {
    Router::new().route("/api/console/stream", get(stream))
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let page = LOGIN.replace("{{message}}", message);
    (status, [(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

async fn page(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    if !authenticated(&s, req.headers(), req.extensions()) {
        s.http_stats.refused_unauthenticated.inc();
        return login_page(StatusCode::UNAUTHORIZED, "");
    }
    ([(header::CACHE_CONTROL, "no-store")], Html(INDEX)).into_response()
}

async fn script(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    if !authenticated(&s, req.headers(), req.extensions()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

async fn style(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    if !authenticated(&s, req.headers(), req.extensions()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(s): State<AppState>,
    tls: Option<axum::Extension<super::tls::OverTls>>,
    Form(f): Form<LoginForm>,
) -> Response {
    if !s.api_token.accepts(f.token.trim()) {
        s.http_stats.refused_unauthenticated.inc();
        return login_page(
            StatusCode::UNAUTHORIZED,
            "That is not this server's token (it is in &lt;state_dir&gt;/api-token).",
        );
    }
    let id = s.console.open(crate::clock::unix_now());
    // Over HTTPS (`api_tls`) the browser must never send it in the clear.
    let secure = tls.is_some();
    let cookie = super::session::session_cookie(&id, secure);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

async fn logout(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = session_of(&headers) {
        s.console.close(id);
    }
    let cookie = super::session::cleared_cookie();
    ([(header::SET_COOKIE, cookie)], Redirect::to("/console")).into_response()
}

/// Everything the page shows, at one moment.
#[derive(Serialize, Deserialize)]
pub struct Snapshot {
    pub at: u64,
    pub sites: Vec<super::api::SiteView>,
    /// Install tokens left out: the page never needs them.
    pub hosts: Vec<crate::inventory::HostRecord>,
    /// The newest journal entries, oldest first.
    pub events: Vec<crate::journal::BootEvent>,
    pub leases: Vec<crate::store::LeaseRecord>,
    pub failover: Vec<crate::failover::peer::Status>,
    pub replication: Vec<crate::replication::link::Status>,
    pub hypervisors: Vec<crate::pool::HypervisorView>,
}

pub async fn snapshot(s: &AppState) -> Snapshot {
    let mut hosts = s.inventory.list().await;
    for h in &mut hosts {
        h.install = None;
    }
    let events = s.journal.events(None);
    let events = events[events.len().saturating_sub(EVENTS)..].to_vec();
    let store = s.store.clone();
    let leases = tokio::task::spawn_blocking(move || store.load_leases())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    Snapshot {
        at: crate::clock::unix_now(),
        sites: super::api::site_views(s),
        hosts,
        events,
        leases,
        failover: s.failover.iter().map(|h| h.status.borrow().clone()).collect(),
        replication: s.replication.iter().map(|r| r.borrow().clone()).collect(),
        hypervisors: super::api::hypervisor_views(s).await,
    }
}

/// Who opened a console stream, asked again before every snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    /// A console session (its id).
    Session(String),
    /// An admin client certificate (its serial).
    Certificate(String),
    /// The bearer token (fixed for the daemon's life).
    Token,
}

impl Holder {
    /// The credential a request carries, as the API's middleware already accepted it.
    fn of(s: &AppState, headers: &HeaderMap, extensions: &axum::http::Extensions) -> Option<Holder> {
        use super::auth::Credential;
        match super::auth::credential(s, headers, extensions) {
            Credential::Certificate(op) => Some(Holder::Certificate(op.1.clone())),
            Credential::Token => Some(Holder::Token),
            Credential::Session => session_of(headers).map(|id| Holder::Session(id.to_string())),
            Credential::Revoked | Credential::WrongToken | Credential::None => None,
        }
    }

    /// Why the credential no longer holds at `now`, if it does not.
    fn lapsed(&self, s: &AppState, now: u64) -> Option<&'static str> {
        match self {
            Holder::Session(id) if !s.console.valid(id, now) => {
                Some("the console session ended (signed out or expired)")
            }
            Holder::Certificate(serial) if s.boot.certificates().is_revoked(serial) => {
                Some("the client certificate was revoked")
            }
            _ => None,
        }
    }
}

async fn stream(State(s): State<AppState>, req: axum::extract::Request) -> Response {
    let Some(holder) = Holder::of(&s, req.headers(), req.extensions()) else {
        // The middleware lets nothing else through; this is the belt to its braces.
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let journal = s.journal.watch();
    // (state, whether a snapshot went already, whether the stream is over)
    let events = futures_util::stream::unfold(
        (s, journal, holder, false, false),
        |(s, mut journal, holder, sent, over)| async move {
            if over {
                return None;
            }
            if sent {
                // At most one a second; sooner than 5 s only when the journal moved.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let _ = tokio::time::timeout(Duration::from_secs(4), journal.changed()).await;
            }
            if let Some(why) = holder.lapsed(&s, crate::clock::unix_now()) {
                let ended = Event::default().event("ended").data(why);
                return Some((
                    Ok::<_, std::convert::Infallible>(ended),
                    (s, journal, holder, true, true),
                ));
            }
            journal.borrow_and_update();
            let snap = snapshot(&s).await;
            let event = Event::default()
                .event("snapshot")
                .json_data(&snap)
                .unwrap_or_else(|_| Event::default().event("error").data("snapshot"));
            Some((Ok(event), (s, journal, holder, true, false)))
        },
    );
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}
