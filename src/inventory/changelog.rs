//! Which host records changed, in order, for followers that read them later (the region's
//! feed, `GET /api/feed`). Every change to the published inventory, local, merged from the
//! partner or forgotten, is noted here after it is published, with the next sequence
//! number. A follower holds a cursor (`epoch`, `seq`) and asks what changed after it; the
//! answer names the MACs (their records are read then, so a record changed twice is sent
//! once, in its latest form) or, when the log cannot tell, says "list everything again".
//!
//! The log is memory only and bounded: a follower that fell further behind than it keeps,
//! or whose cursor is from another run of the daemon (another `epoch`), is told to relist.
//! That is the whole recovery rule, so a restart, an overflow and a new follower are one
//! path (Kubernetes' "resource version too old" relist). The ring is pure; the
//! `watch` only wakes long-polling followers.
//!
//! Must never: block a writer (one short lock, no I/O) or grow past its capacity.

use crate::mac::MacAddr;
use std::collections::VecDeque;
use std::sync::Mutex;

/// How many changes the log keeps: a fleet's worth of hosts changing several times over.
pub const CAPACITY: usize = 65_536;

/// Where a follower is: the daemon run it read (`epoch`) and the last change it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub epoch: u64,
    pub seq: u64,
}

/// The answer to "what changed after this cursor?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// These MACs changed (each once, oldest change first); `upto` is the new cursor.
    Changed { macs: Vec<MacAddr>, upto: Cursor },
    /// The log cannot say: list every record, and go on from `upto` (read *before* the
    /// records are listed, so a change made while listing is sent again, never lost).
    Relist { upto: Cursor },
}

/// The ring of (sequence, MAC), pure.
#[derive(Debug)]
struct Ring {
    entries: VecDeque<(u64, MacAddr)>,
    capacity: usize,
    last: u64,
}

impl Ring {
    fn new(capacity: usize) -> Ring {
        Ring {
            entries: VecDeque::new(),
            capacity,
            last: 0,
        }
    }

    fn note(&mut self, mac: MacAddr) -> u64 {
        self.last += 1;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((self.last, mac));
        self.last
    }

    /// The MACs changed after `seq`, or None when the ring no longer holds everything
    /// after it (or `seq` is from the future: not ours).
    fn after(&self, seq: u64) -> Option<Vec<MacAddr>> {
        if seq > self.last {
            return None;
        }
        let oldest_kept = self.entries.front().map_or(self.last + 1, |(s, _)| *s);
        // Everything after `seq` is kept when the first change after it is in the ring.
        if seq + 1 < oldest_kept {
            return None;
        }
        let mut seen = std::collections::HashSet::new();
        let mut macs = Vec::new();
        for (_, mac) in self.entries.iter().rev().take_while(|(s, _)| *s > seq) {
            if seen.insert(*mac) {
                macs.push(*mac);
            }
        }
        macs.reverse();
        Some(macs)
    }
}

pub struct ChangeLog {
    epoch: u64,
    ring: Mutex<Ring>,
    /// The last sequence number: long-polling followers wait on it.
    last: tokio::sync::watch::Sender<u64>,
}

impl Default for ChangeLog {
    fn default() -> Self {
        ChangeLog::with_capacity(CAPACITY)
    }
}

impl ChangeLog {
    pub fn with_capacity(capacity: usize) -> ChangeLog {
        // A random epoch per run: a cursor from before a restart never matches.
        let epoch = u64::from_str_radix(&crate::random::token()[..15], 16).unwrap_or(1);
        ChangeLog {
            epoch,
            ring: Mutex::new(Ring::new(capacity.max(1))),
            last: tokio::sync::watch::Sender::new(0),
        }
    }

    /// `mac`'s record changed (and is published).
    pub fn note(&self, mac: MacAddr) {
        let seq = self.ring.lock().unwrap_or_else(|p| p.into_inner()).note(mac);
        self.last.send_replace(seq);
    }

    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: self.ring.lock().unwrap_or_else(|p| p.into_inner()).last,
        }
    }

    /// What changed after `from` (None: a new follower).
    pub fn since(&self, from: Option<Cursor>) -> Since {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let upto = Cursor {
            epoch: self.epoch,
            seq: ring.last,
        };
        match from.filter(|c| c.epoch == self.epoch).and_then(|c| ring.after(c.seq)) {
            Some(macs) => Since::Changed { macs, upto },
            None => Since::Relist { upto },
        }
    }

    /// Wakes when a change is noted.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.last.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        format!("52:54:00:00:00:{n:02x}").parse().unwrap()
    }

    #[test]
    fn a_follower_gets_each_changed_mac_once_in_order_of_its_last_change() {
        let log = ChangeLog::with_capacity(8);
        let start = log.cursor();
        log.note(mac(1));
        log.note(mac(2));
        log.note(mac(1));
        match log.since(Some(start)) {
            Since::Changed { macs, upto } => {
                assert_eq!(macs, vec![mac(2), mac(1)]);
                assert_eq!(upto.seq, 3);
                assert!(matches!(log.since(Some(upto)), Since::Changed { macs, .. } if macs.is_empty()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_follower_too_far_behind_another_run_or_a_new_one_relists() {
        let log = ChangeLog::with_capacity(2);
        let start = log.cursor();
        assert!(matches!(log.since(None), Since::Relist { .. }));
        log.note(mac(1));
        log.note(mac(2));
        // Two kept, and only two changes after `start`: still complete.
        assert!(matches!(log.since(Some(start)), Since::Changed { macs, .. } if macs.len() == 2));
        log.note(mac(3));
        // The change right after `start` fell out of the ring.
        assert!(matches!(log.since(Some(start)), Since::Relist { upto } if upto.seq == 3));
        let other_run = Cursor {
            epoch: start.epoch ^ 1,
            seq: 3,
        };
        assert!(matches!(log.since(Some(other_run)), Since::Relist { .. }));
        let future = Cursor {
            epoch: start.epoch,
            seq: 99,
        };
        assert!(matches!(log.since(Some(future)), Since::Relist { .. }));
    }
}
