//! Admin API for VMs (behind the admin credential, like every `/api/...` route):
//! - `GET /api/vms`: every domain of every hypervisor the pool has found ready, asked of
//!   its libvirt now (with provd's own client certificate), and the hosts that did not
//!   answer;
//! - `GET /api/vms/<host>/<name>/snapshots`: its snapshots (`vm snapshot list --json`);
//! - `POST /api/vms/<host>/<name>/<action>`: start, shutdown, power-off, reboot, reset,
//!   pause, resume, autostart, autostart-off, snapshot (`?snapshot=NAME`, default
//!   `console-<time>`), revert (`?snapshot=NAME[&force=true]`), delete-snapshot
//!   (`?snapshot=NAME`), set-vcpus (`?vcpus=N`), set-memory (`?memory_mib=N`), attach-disk
//!   (`?size_gib=N[&bus=virtio|scsi|sata]`, beside the VM's first disk: the caller never
//!   names a path), detach-disk (`?dev=vdb`), attach-nic (`?bridge=BR[&model=virtio]`),
//!   detach-nic (`?mac=MAC`), version (a template's next frozen version) or migrate
//!   (`?to=HOST`, a ready, undrained hypervisor of the same site): `vm::action::VmAction`,
//!   the same calls `provd vm` makes; `made` in the answer names a new disk, MAC or version. The answer is the VM as libvirt shows it afterwards; a
//!   refusal says why (409 for a VM in the wrong state or a protected template, 404 for
//!   a name that is not there, 502 when libvirt itself failed). Each action is journaled
//!   under the hypervisor.
//!
//! A VM is addressed by its hypervisor's host name as the pool knows it, never by a URI
//! from the request: a caller cannot make provd dial an address of its choosing.

use super::AppState;
use super::failure::refuse;
use crate::clock::unix_now;
use crate::pool::{Reach, ReachError};
use crate::vm::action::{self, ActionArgs, ActionDone, VmAction};
use crate::vm::{DomainSummary, Hypervisor, VmError};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long one hypervisor may take to list its domains, or to answer an action other than
/// a migration (a migration takes as long as the memory takes to move).
const LIBVIRT_TIMEOUT: Duration = Duration::from_secs(60);
/// How many hypervisors one `GET /api/vms` asks at once (the pool's own checks use 16 too).
const LIST_PARALLEL: usize = 16;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/vms", get(list))
        .route("/api/vms/deploy", post(super::vm_deploy_api::deploy))
        .route("/api/vms/{host}/{name}/snapshots", get(snapshots))
        .route("/api/vms/{host}/{name}/{action}", post(act))
}

/// `GET /api/vms/<host>/<name>/snapshots`: the VM's snapshots as `provd vm snapshot list
/// --json` shows them.
async fn snapshots(State(s): State<AppState>, Path((host, name)): Path<(String, String)>) -> Response {
    let uri = match s.pool.reach(&host) {
        Ok(r) => r.uri,
        Err(e) => return reach_refusal(e),
    };
    match blocking(Some(LIBVIRT_TIMEOUT), move || {
        Hypervisor::connect(&uri)?.snapshot_list(&name)
    })
    .await
    {
        Ok(list) => Json(list).into_response(),
        Err(e) => refuse(e.status(), e),
    }
}

/// One domain and the hypervisor it is on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRow {
    pub host: String,
    pub site: String,
    #[serde(flatten)]
    pub vm: DomainSummary,
}

/// A ready hypervisor that did not answer, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unanswered {
    pub host: String,
    pub error: String,
}

/// `GET /api/vms`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmList {
    pub vms: Vec<VmRow>,
    pub unanswered: Vec<Unanswered>,
}

/// Why a libvirt job gave no result.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("libvirt did not answer within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("the libvirt task ended: {0}")]
    Task(tokio::task::JoinError),
}

impl JobError {
    /// The answer's status: the VM's own refusal as `status_of` says, a timeout as 504.
    fn status(&self) -> StatusCode {
        match self {
            JobError::Vm(e) => status_of(e),
            JobError::TimedOut(_) => StatusCode::GATEWAY_TIMEOUT,
            JobError::Task(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Run a blocking libvirt job, bounded by `limit` when there is one.
async fn blocking<T: Send + 'static>(
    limit: Option<Duration>,
    job: impl FnOnce() -> Result<T, VmError> + Send + 'static,
) -> Result<T, JobError> {
    let task = tokio::task::spawn_blocking(job);
    let joined = match limit {
        Some(d) => tokio::time::timeout(d, task).await.map_err(|_| JobError::TimedOut(d))?,
        None => task.await,
    };
    Ok(joined.map_err(JobError::Task)??)
}

async fn list(State(s): State<AppState>) -> Json<VmList> {
    let ready: Vec<(String, Reach)> = s
        .pool
        .checks()
        .into_iter()
        .filter_map(|c| s.pool.reach(&c.host).ok().map(|r| (c.host, r)))
        .collect();
    // Several hosts at once, so one slow hypervisor does not hold up the others' answers,
    // but never more than LIST_PARALLEL: every console tab asks this every 10 s, and the
    // blocking pool is shared with the store's writes.
    use futures_util::StreamExt;
    let answers: Vec<_> = futures_util::stream::iter(ready.into_iter().map(|(host, reach)| async move {
        let uri = reach.uri.clone();
        let listed = blocking(Some(LIBVIRT_TIMEOUT), move || Hypervisor::connect(&uri)?.list()).await;
        (host, reach.site, listed)
    }))
    .buffer_unordered(LIST_PARALLEL)
    .collect()
    .await;
    let mut out = VmList {
        vms: Vec::new(),
        unanswered: Vec::new(),
    };
    for (host, site, listed) in answers {
        match listed {
            Ok(vms) => out.vms.extend(vms.into_iter().map(|vm| VmRow {
                host: host.clone(),
                site: site.clone(),
                vm,
            })),
            Err(e) => out.unanswered.push(Unanswered {
                host,
                error: e.to_string(),
            }),
        }
    }
    // Answers come in as hosts finish: by host and name, so the list reads the same each time.
    out.vms
        .sort_by(|a, b| (&a.host, &a.vm.name).cmp(&(&b.host, &b.vm.name)));
    out.unanswered.sort_by(|a, b| a.host.cmp(&b.host));
    Json(out)
}

#[derive(Debug, Deserialize)]
struct ActQuery {
    snapshot: Option<String>,
    to: Option<String>,
    #[serde(default)]
    force: bool,
    vcpus: Option<u32>,
    memory_mib: Option<u64>,
    size_gib: Option<u32>,
    bus: Option<String>,
    dev: Option<String>,
    bridge: Option<String>,
    model: Option<String>,
    mac: Option<crate::mac::MacAddr>,
}

/// The answer status for a VM operation that failed.
fn status_of(e: &VmError) -> StatusCode {
    match e {
        VmError::NoDomain { .. } => StatusCode::NOT_FOUND,
        VmError::Connect { .. } | VmError::Libvirt { .. } => StatusCode::BAD_GATEWAY,
        VmError::BadSnapshotName { .. } | VmError::NoDestination { .. } | VmError::MissingArgument { .. } => {
            StatusCode::BAD_REQUEST
        }
        VmError::NoSnapshot { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    }
}

fn reach_refusal(e: ReachError) -> Response {
    let status = match e {
        ReachError::NoPool => StatusCode::SERVICE_UNAVAILABLE,
        ReachError::Unknown(_) => StatusCode::NOT_FOUND,
        ReachError::NotReady { .. } => StatusCode::CONFLICT,
    };
    refuse(status, e)
}

async fn act(
    State(s): State<AppState>,
    Path((host, name, action)): Path<(String, String, String)>,
    Query(q): Query<ActQuery>,
) -> Response {
    let Some(action) = VmAction::parse(&action) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            format!("unknown action {action:?}: one of {}", VmAction::names()),
        );
    };
    let source = match s.pool.reach(&host) {
        Ok(r) => r,
        Err(e) => return reach_refusal(e),
    };
    // A migration goes to a ready hypervisor of the same site, named as the pool names it.
    let dest = match (action, q.to.as_deref()) {
        (VmAction::Migrate, None) => return refuse(StatusCode::BAD_REQUEST, "migrate needs ?to=HOST"),
        (VmAction::Migrate, Some(to)) if to == host => {
            return refuse(StatusCode::BAD_REQUEST, format!("{name} is already on {host}"));
        }
        (VmAction::Migrate, Some(to)) => match s.pool.reach(to) {
            Ok(d) if d.site != source.site => {
                return refuse(
                    StatusCode::CONFLICT,
                    format!(
                        "{to} is in site {}, {host} in site {}: a migration stays in its site",
                        d.site, source.site
                    ),
                );
            }
            Ok(d) => {
                // Drained means no new VMs there, whoever asks.
                if s.inventory.get(d.mac).await.is_some_and(|r| r.drained) {
                    return refuse(StatusCode::CONFLICT, format!("{to} is drained: no VM is moved there"));
                }
                // The source dials the destination's migration address when IPAM gave it one.
                let via = s
                    .ipam
                    .address(d.mac, crate::netmodel::Role::Migration)
                    .map(crate::vm::deploy::migration_uri);
                Some((to.to_string(), d.uri, via))
            }
            Err(e) => return reach_refusal(e),
        },
        _ => None,
    };
    // A new snapshot gets a name when the caller gives none; a revert or delete must name one.
    let snapshot = match (action, q.snapshot) {
        (VmAction::Snapshot, None) => Some(format!("console-{}", unix_now())),
        (_, given) => given,
    };
    let args = ActionArgs {
        snapshot,
        force: q.force,
        dest: dest.as_ref().map(|d| d.1.clone()),
        dest_via: dest.as_ref().and_then(|d| d.2.clone()),
        vcpus: q.vcpus,
        memory_mib: q.memory_mib,
        size_gib: q.size_gib,
        bus: q.bus,
        dev: q.dev,
        bridge: q.bridge,
        model: q.model,
        mac: q.mac,
    };
    // A migration or a snapshot's merge runs as long as the disk takes.
    let unbounded = matches!(action, VmAction::Migrate | VmAction::DeleteSnapshot | VmAction::Version);
    let limit = (!unbounded).then_some(LIBVIRT_TIMEOUT);
    let (uri, vm) = (source.uri.clone(), name.clone());
    let done = blocking(limit, move || {
        let h = Hypervisor::connect(&uri)?;
        action::apply(&h, &vm, action, &args)
    })
    .await;
    let step = |error: Option<String>| crate::journal::Step::VmAction {
        domain: name.clone(),
        action: match &dest {
            Some((to, _, _)) => format!("migrate to {to}"),
            None => action.as_str().to_string(),
        },
        error,
    };
    match done {
        Ok((vm, made)) => {
            s.journal.record(Some(source.mac), None, step(None));
            Json(ActionDone {
                action,
                host: dest.map(|d| d.0).unwrap_or(host),
                vm,
                made,
            })
            .into_response()
        }
        Err(e) => {
            s.journal.record(Some(source.mac), None, step(Some(e.to_string())));
            refuse(e.status(), e)
        }
    }
}
