//! One axum router for everything provd serves over HTTP.
//!
//! - Boot routes, on every site's boot listener: `/boot/<mac>.ipxe`, `/ks/<host>?token=`,
//!   `POST /callback/<host>/<event>?token=`, `/assets/...` (Range and HEAD),
//!   `/nocloud/<token>/<file>` (first-boot identity of deployed VMs).
//! - Admin routes, only on the API listener (`[daemon] api_listen`; loopback unless
//!   `api_tls`):
//!   `/api/hosts...`, `/api/nocloud`, `/api/failover`, `/api/replication`,
//!   `/api/hypervisors`, `/api/pki...`, `/api/leases`, `/api/sites`, `/api/stats`,
//!   `/api/events`, each behind the bearer token or an admin client certificate (`auth`,
//!   `tls`), and `/metrics` and `/healthz` (open: counters only). They are simply absent
//!   from boot listeners, so a machine on the provisioning network cannot call them.
//!
//! Handlers never block the runtime (store reads go to the blocking pool) and never leak
//! why a request was refused beyond its status code.

mod activity;
mod api;
mod asset_head;
pub mod auth;
mod boot;
pub mod console;
pub mod failure;
pub mod feed;
pub mod listen;
mod pki_api;
pub mod power_api;
pub mod session;
pub mod tls;
pub mod vm_api;
pub mod vm_deploy_api;
pub mod zero_copy;

use crate::boot::Boot;
use crate::dhcp::Leases;
use crate::dhcp::stats::DhcpStats;
use crate::journal::Journal;
use crate::store::Store;
use crate::tftp::TftpStats;
use axum::Router;
use std::path::PathBuf;
use std::sync::Arc;

pub use api::StatsView;

crate::counter_set! {
    /// Every HTTP counter; the field names are the exported names.
    pub struct HttpStats {
        boot_scripts,
        kickstarts,
        callbacks,
        assets,
        certificates,
        refused_token,
        not_found,
        refused_outside_root,
        nocloud,
        render_errors,
        refused_unauthenticated,
        refused_revoked,
        refused_address,
        refused_connections,
        refused_no_lease,
        certificates_waiting,
        refused_certificate,
        crl,
        store_errors,
        assets_sendfile,
    }
}

/// Everything handlers share, behind one `Arc`: axum clones the state for every request,
/// and a clone of the parts themselves (twenty `Arc`s, a path and a site name) was a tenth
/// of a cached boot script's serving time in a profile (BENCHMARKS.md).
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> AppState {
        AppState(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What `AppState` holds. `listener_site` is the site whose address this listener is bound
/// to (None for the API listener). The fields are the crate's, not the library's: the daemon
/// (`daemon::Services::app_state`, which owns every part) fills them, handlers read them, and
/// nothing outside the crate sees or swaps one.
pub struct AppParts {
    /// The boot policy over the current config generation (`provd reload` publishes the next).
    pub(crate) boot: crate::boot::BootSource,
    /// Hosts and their state: shared by every config generation (state, not config).
    pub(crate) inventory: Arc<crate::inventory::Inventory>,
    pub(crate) store: Store,
    pub(crate) leases: Leases,
    pub(crate) dhcp_stats: Arc<DhcpStats>,
    pub(crate) tftp_stats: Arc<TftpStats>,
    pub(crate) http_stats: Arc<HttpStats>,
    pub(crate) assets_root: PathBuf,
    pub(crate) journal: Arc<Journal>,
    pub(crate) nocloud: Arc<crate::nocloud::Registry>,
    pub(crate) failover: Arc<Vec<crate::failover::peer::Handle>>,
    pub(crate) listener_site: Option<String>,
    /// The admin API's bearer token (checked on every `/api/...` route).
    pub(crate) api_token: Arc<auth::ApiToken>,
    /// Installed hypervisors as provd verified them.
    pub(crate) pool: Arc<crate::pool::Pool>,
    /// The cap on BMC calls in flight.
    pub(crate) power: Arc<crate::bmc::Power>,
    /// The sites' DNS updates: their queues and errors (`/api/dns`, `/metrics`).
    pub(crate) dns: Arc<crate::dns::updater::DnsUpdater>,
    /// Hosts' static addresses (`/api/ipam`).
    pub(crate) ipam: Arc<crate::ipam::Ipam>,
    /// `provd reload` (admin API only).
    pub(crate) reloader: Arc<crate::reload::Reloader>,
    /// The pair's inventory replication, per site with a partner.
    pub(crate) replication: Arc<Vec<tokio::sync::watch::Receiver<crate::replication::link::Status>>>,
    /// The web console's sessions (admin listener).
    pub(crate) console: Arc<session::Sessions>,
    /// The region's revocation list (`/pki/region-crl.pem`; the region posts it).
    pub(crate) region_crl: Arc<crate::pki::region_crl::RegionCrl>,
}

impl AppState {
    /// The boot policy of the current generation; a request takes it once and keeps it
    /// across a reload, so its answer is built from one config.
    pub fn boot(&self) -> Boot {
        self.boot.now()
    }
}

/// Boot routes only (a site's boot listener).
/// `name` as one URL path segment: every byte outside RFC 3986's unreserved set
/// percent-escaped (identity names such as "replication dc1 10.0.0.1" carry spaces; a
/// forwarded host name must not carry a `?` or `/` into the site's URL).
pub fn url_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn boot_router(state: AppState) -> Router {
    boot::routes().with_state(state)
}

/// Boot and admin routes (the API listener). Every `/api/...` route needs the bearer token;
/// `/metrics` does not.
pub fn api_router(state: AppState) -> Router {
    let admin = api::routes()
        .merge(pki_api::routes())
        .merge(power_api::routes())
        .merge(vm_api::routes())
        .merge(console::api_routes())
        .merge(feed::routes())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_token));
    boot::routes()
        .merge(admin)
        .merge(api::open_routes())
        .merge(console::routes())
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// The exported names (`/metrics`, the stats view) are what dashboards and alerts select on: the typed sets must
    /// export exactly the names the string-keyed counters did.
    #[test]
    fn exported_counter_names_are_unchanged() {
        assert_eq!(
            crate::dhcp::stats::DhcpStats::NAMES,
            [
                "received_discover",
                "received_request",
                "received_decline",
                "received_release",
                "received_inform",
                "received_other",
                "sent_offer",
                "sent_ack",
                "sent_nak",
                "send_errors",
                "persist_failures",
                "malformed_truncated",
                "malformed_bad_cookie",
                "malformed_bad_hlen",
                "malformed_not_request",
                "malformed_bad_options",
                "malformed_no_message_type",
                "dropped_no_subnet",
                "dropped_untrusted_relay",
                "dropped_unknown_client",
                "dropped_pool_exhausted",
                "dropped_other_server",
                "dropped_no_record",
                "dropped_not_clients_lease",
                "dropped_malformed_request",
                "dropped_unsupported_type",
                "dropped_failover_no_service",
                "dropped_failover_partners_client",
                "dropped_persist_in_flight",
                "dropped_persist_backlog",
            ]
        );
        assert_eq!(
            crate::tftp::TftpStats::NAMES,
            [
                "requests",
                "completed",
                "aborted_by_client",
                "timed_out",
                "failed",
                "refused_outside_root",
                "not_found",
                "malformed",
                "bytes_sent",
                "refused_per_client",
                "refused_no_lease",
                "deferred_busy",
            ]
        );
        assert_eq!(
            crate::http::HttpStats::NAMES,
            [
                "boot_scripts",
                "kickstarts",
                "callbacks",
                "assets",
                "certificates",
                "refused_token",
                "not_found",
                "refused_outside_root",
                "nocloud",
                "render_errors",
                "refused_unauthenticated",
                "refused_revoked",
                "refused_address",
                "refused_connections",
                "refused_no_lease",
                "certificates_waiting",
                "refused_certificate",
                "crl",
                "store_errors",
                "assets_sendfile",
            ]
        );
    }
}
