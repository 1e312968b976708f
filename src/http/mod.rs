//! The daemon's HTTP API (axum). Today: the admin views the CLI reads (`/api/leases`,
//! `/api/stats`) and `/metrics` in Prometheus text format. The boot-chain endpoints (iPXE
//! scripts, kickstarts, assets, callbacks) join this router later.
//!
//! Handlers only read: leases come from the durable store (what survives a crash), counters
//! from atomics. Nothing here blocks the runtime: store reads run on the blocking pool.

use crate::clock::unix_now;
use crate::dhcp::engine::Engine;
use crate::dhcp::stats::DhcpStats;
use crate::store::{LeaseRecord, LeaseStore};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct ApiState {
    pub store: LeaseStore,
    pub dhcp_stats: Arc<DhcpStats>,
    pub engine: Arc<Mutex<Engine>>,
}

/// What `/api/stats` returns (and `provd stats` prints).
#[derive(Debug, Serialize, Deserialize)]
pub struct StatsView {
    pub dhcp: BTreeMap<String, u64>,
    pub store: BTreeMap<String, u64>,
    pub leases_bound: u64,
    pub leases_known: u64,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/leases", get(leases))
        .route("/api/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn leases(State(s): State<ApiState>) -> Result<Json<Vec<LeaseRecord>>, (StatusCode, String)> {
    let store = s.store.clone();
    tokio::task::spawn_blocking(move || store.load_leases())
        .await
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map(Json)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

fn stats_view(s: &ApiState) -> StatsView {
    let st = &s.store.stats;
    let store = [
        ("commits", st.commits.load(Ordering::Relaxed)),
        ("records_committed", st.records_committed.load(Ordering::Relaxed)),
        ("commit_failures", st.commit_failures.load(Ordering::Relaxed)),
        ("largest_batch", st.largest_batch.load(Ordering::Relaxed)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let (bound, known) = {
        let e = s.engine.lock().expect("engine lock");
        (e.table.count_bound(unix_now()) as u64, e.table.len() as u64)
    };
    StatsView {
        dhcp: s.dhcp_stats.snapshot(),
        store,
        leases_bound: bound,
        leases_known: known,
    }
}

async fn stats(State(s): State<ApiState>) -> Json<StatsView> {
    Json(stats_view(&s))
}

async fn metrics(State(s): State<ApiState>) -> Response {
    let v = stats_view(&s);
    let mut out = String::new();
    out.push_str("# TYPE provd_dhcp_events_total counter\n");
    for (k, n) in &v.dhcp {
        out.push_str(&format!("provd_dhcp_events_total{{event=\"{k}\"}} {n}\n"));
    }
    out.push_str("# TYPE provd_store_total counter\n");
    for (k, n) in &v.store {
        out.push_str(&format!("provd_store_total{{what=\"{k}\"}} {n}\n"));
    }
    out.push_str(&format!(
        "# TYPE provd_leases_bound gauge\nprovd_leases_bound {}\n",
        v.leases_bound
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
