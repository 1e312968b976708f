//! How the pair's two copies of one host record become one (pure). Both servers of a pair
//! apply the same rule to the same two copies, so they converge whatever order updates
//! arrive in (the replication link ships the copies; the rule lives here, beside the record).
//!
//! The documented rule for concurrent changes:
//! 1. An operator's latest word wins: when the copies disagree on the last operator action
//!    (`intent_at`: reinstall, netboot, mark-installed), the copy with the newer one wins,
//!    unless the other copy's install session was issued after that action (it is then the
//!    install that action asked for, so it is newer). So `provd hosts reinstall` on one
//!    server and `installed` from an install that started earlier, reported to the other
//!    server during a partition, end as "reinstall": the host installs again.
//! 2. Otherwise the newer version wins (`clock::Version`: a hybrid clock, causally later local
//!    writes always compare greater; concurrent ones by wall clock, then server).
//! 3. Either way, the winner carries the history of both copies (merged by time, deduplicated,
//!    capped), so a human reading `provd hosts show` sees everything that happened.

use super::{HistoryEntry, HostRecord};

/// History entries kept after a merge (as many as one server keeps).
const HISTORY_LIMIT: usize = 200;

/// The one record both servers keep for a host, from our copy and the partner's.
pub fn host(ours: &HostRecord, theirs: &HostRecord) -> HostRecord {
    let (winner, other) = if host_wins(theirs, ours) {
        (theirs, ours)
    } else {
        (ours, theirs)
    };
    let mut merged = winner.clone();
    merged.history = merge_history(&winner.history, &other.history);
    merged
}

/// Does `a` win over `b`?
fn host_wins(a: &HostRecord, b: &HostRecord) -> bool {
    let issued = |r: &HostRecord| r.install.as_ref().map_or(0, |s| s.issued);
    if a.intent_at != b.intent_at {
        let (newer_intent, older) = if a.intent_at > b.intent_at { (a, b) } else { (b, a) };
        // The other copy's install began after the newer intent: it is that intent's install.
        let newer = if issued(older) > newer_intent.intent_at {
            older
        } else {
            newer_intent
        };
        return std::ptr::eq(newer, a);
    }
    a.version > b.version
}

fn merge_history(a: &[HistoryEntry], b: &[HistoryEntry]) -> Vec<HistoryEntry> {
    let mut all: Vec<HistoryEntry> = a.iter().chain(b.iter()).cloned().collect();
    all.sort_by(|x, y| (x.at, &x.what).cmp(&(y.at, &y.what)));
    all.dedup_by(|x, y| x.at == y.at && x.what == y.what);
    let excess = all.len().saturating_sub(HISTORY_LIMIT);
    all.drain(..excess);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Version;
    use crate::inventory::{InstallSession, Status};

    fn record(status: Status, intent_at: u64, version_ms: u64, origin: &str) -> HostRecord {
        let mut r = crate::inventory::transition::new_record("52:54:00:00:00:01".parse().unwrap(), 1);
        r.status = status;
        r.intent_at = intent_at;
        r.version = Version {
            at_ms: version_ms,
            origin: origin.into(),
        };
        r
    }

    fn session(issued: u64) -> InstallSession {
        InstallSession {
            token: "t".into(),
            issued,
            expires: issued + 100,
            kickstart_fetches: 1,
            closed: true,
            certificates_issued: vec![],
            id: "i".into(),
            wipe_allowed: false,
            bound_to: None,
            steps: vec![],
        }
    }

    #[test]
    fn an_operators_reinstall_beats_the_end_of_an_older_install_in_either_order() {
        // A: the installer reported installed at 105 (session issued at 100, intent 50).
        let mut installed = record(Status::Installed, 50, 105_000, "a");
        installed.install = Some(session(100));
        installed.history.push(HistoryEntry {
            at: 105,
            status: Status::Installed,
            what: "installer: installed".into(),
        });
        // B: an operator asked for a reinstall at 103, during the partition.
        let mut reinstall = record(Status::Assigned, 103, 103_000, "b");
        reinstall.netboot = true;
        reinstall.history.push(HistoryEntry {
            at: 103,
            status: Status::Assigned,
            what: "operator: reinstall".into(),
        });
        for m in [host(&installed, &reinstall), host(&reinstall, &installed)] {
            assert_eq!((m.status, m.netboot), (Status::Assigned, true));
            let what: Vec<&str> = m.history.iter().map(|h| h.what.as_str()).collect();
            assert_eq!(what, ["operator: reinstall", "installer: installed"]);
        }
        // The install that reinstall asked for (issued at 110) is newer than the intent.
        let mut reinstalled = record(Status::Installed, 103, 120_000, "a");
        reinstalled.install = Some(session(110));
        assert_eq!(host(&reinstall, &reinstalled).status, Status::Installed);
        assert_eq!(host(&reinstalled, &reinstall).status, Status::Installed);
    }

    #[test]
    fn otherwise_the_newer_version_wins_and_ties_break_by_server() {
        let old = record(Status::Installing, 0, 100, "b");
        let new = record(Status::Installed, 0, 200, "a");
        assert_eq!(host(&old, &new).status, Status::Installed);
        assert_eq!(host(&new, &old).status, Status::Installed);
        let a = record(Status::Installing, 0, 300, "a");
        let b = record(Status::Failed, 0, 300, "b");
        assert_eq!(host(&a, &b).status, Status::Failed);
        assert_eq!(host(&b, &a).status, Status::Failed);
    }
}
