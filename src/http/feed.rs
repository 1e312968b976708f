//! `GET /api/feed`: this daemon's changes for a follower that keeps a copy (the region,
//! `region::follow`). A page carries the host records that changed after the follower's
//! cursor (`inventory::changelog`), the journal events after its count, and the state
//! that is cheap to send whole each time (the pool's hypervisors, lease counts).
//!
//! The follower's rule is "apply the page, keep its cursor": records are whole and keyed
//! by MAC, so a record sent twice is the same record, and a `relist` page is everything
//! (whatever the follower holds for this daemon and the page does not name is gone). A
//! page with nothing new waits up to `wait` seconds (at most `MAX_WAIT`) for a change, so
//! a follower hears of an install within a moment without polling hard.
//!
//! Read-only, behind the admin API's credential like every `/api` route. A follower gets
//! no install token: a record's live token is a secret for the host's own address, and a
//! region holding every site's would be a place to steal installs from.

use super::AppState;
use crate::inventory::HostRecord;
use crate::inventory::changelog::{Cursor, Since};
use crate::journal::BootEvent;
use crate::mac::MacAddr;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest a page waits for something new.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
/// Journal events per page; a follower further behind asks again at once (`more`).
pub const EVENTS_PER_PAGE: usize = 2000;

/// Where a follower is: the inventory's cursor and how many journal events it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedCursor {
    pub epoch: u64,
    pub seq: u64,
    pub events: u64,
}

#[derive(Debug, Deserialize, Default)]
pub struct FeedQuery {
    pub epoch: Option<u64>,
    pub seq: Option<u64>,
    pub events: Option<u64>,
    /// Seconds to wait when nothing is new (0: answer at once).
    pub wait: Option<u64>,
}

impl FeedQuery {
    fn cursor(&self) -> Option<FeedCursor> {
        Some(FeedCursor {
            epoch: self.epoch?,
            seq: self.seq?,
            events: self.events.unwrap_or(0),
        })
    }
}

/// Lease counts (the table is too large to send; the region shows the numbers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseSummary {
    pub bound: u64,
    pub known: u64,
}

/// One answer of the feed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    /// The sites this daemon serves.
    pub sites: Vec<String>,
    /// Ask with this next.
    pub cursor: FeedCursor,
    /// `hosts` is every record this daemon has; anything else the follower holds is gone.
    pub relist: bool,
    /// Records that changed (each once, in its latest form).
    pub hosts: Vec<HostRecord>,
    /// Records forgotten since the cursor (discovered machines evicted).
    pub gone: Vec<MacAddr>,
    /// Journal events after the follower's count.
    pub events: Vec<BootEvent>,
    /// More events wait: ask again without waiting.
    pub more: bool,
    pub hypervisors: Vec<crate::pool::HypervisorView>,
    pub leases: LeaseSummary,
    /// When the page was made (unix seconds, this daemon's clock).
    pub at: u64,
}

pub(super) fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/api/feed", axum::routing::get(feed))
}

async fn feed(State(s): State<AppState>, Query(q): Query<FeedQuery>) -> Response {
    let from = q.cursor();
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    let log = s.inventory.changelog();
    let (mut changed, mut journal) = (log.watch(), s.journal.watch());
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        changed.borrow_and_update();
        journal.borrow_and_update();
        let page = page(&s, from).await;
        let quiet = !page.relist && page.hosts.is_empty() && page.gone.is_empty() && page.events.is_empty();
        if !quiet || tokio::time::Instant::now() >= deadline {
            return Json(page).into_response();
        }
        // Wake on a change of either; a timeout answers the quiet page.
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = changed.changed() => r.is_ok(),
                r = journal.changed() => r.is_ok(),
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            return Json(page).into_response();
        }
    }
}

/// The page for a follower at `from` (None: a new follower).
async fn page(s: &AppState, from: Option<FeedCursor>) -> Page {
    let log = s.inventory.changelog();
    let since = log.since(from.map(|c| Cursor {
        epoch: c.epoch,
        seq: c.seq,
    }));
    let (relist, upto, hosts, gone) = match since {
        Since::Relist { upto } => (
            true,
            upto,
            s.inventory.list().await.into_iter().map(without_secrets).collect(),
            Vec::new(),
        ),
        Since::Changed { macs, upto } => {
            let (mut hosts, mut gone) = (Vec::new(), Vec::new());
            for mac in macs {
                match s.inventory.get(mac).await {
                    Some(r) => hosts.push(without_secrets(r)),
                    None => gone.push(mac),
                }
            }
            (false, upto, hosts, gone)
        }
    };
    // The journal's count belongs to this run too: another epoch starts from its beginning.
    let events_after = from.filter(|c| c.epoch == upto.epoch).map_or(0, |c| c.events);
    let (events, next_events) = s.journal.since(events_after, EVENTS_PER_PAGE);
    let more = next_events < s.journal.recorded();
    let counts = s.leases.counts(crate::clock::unix_now());
    Page {
        sites: s.boot().served_sites().to_vec(),
        cursor: FeedCursor {
            epoch: upto.epoch,
            seq: upto.seq,
            events: next_events,
        },
        relist,
        hosts,
        gone,
        events,
        more,
        hypervisors: super::api::hypervisor_views(s).await,
        leases: LeaseSummary {
            bound: counts.bound as u64,
            known: counts.known as u64,
        },
        at: crate::clock::unix_now(),
    }
}

/// A host record as a follower gets it: the install token blanked (the rest of the install
/// session, its times and state, stays).
pub fn without_secrets(mut r: HostRecord) -> HostRecord {
    if let Some(install) = &mut r.install {
        install.token.clear();
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_never_gets_an_install_token() {
        let mut r = crate::inventory::transition::new_record("52:54:00:00:00:01".parse().unwrap(), 5);
        r.install = Some(crate::inventory::InstallSession {
            token: "s3cret".into(),
            issued: 1,
            expires: 2,
            kickstart_fetches: 0,
            closed: false,
            certificates_issued: vec![],
            id: "i1".into(),
            wipe_allowed: false,
            bound_to: None,
            steps: vec![],
        });
        let sent = serde_json::to_string(&without_secrets(r)).unwrap();
        assert!(!sent.contains("s3cret") && sent.contains("\"id\":\"i1\""), "{sent}");
    }
}
