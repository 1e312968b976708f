//! The region's read model: its copy of every followed site's host records, journal tail,
//! pool and lease counts, with when each site was last heard from. An embedded redb
//! database in the region's state directory, written only by the sites' followers (one
//! transaction per feed page, so a page is applied whole or not at all) and read by the
//! region's API. The region owns none of this data: a site's record here is only ever
//! replaced by what that site sent.
//!
//! Must never: hold anything a site did not send, or keep a record a site's relist page
//! no longer names.

use crate::http::feed::{FeedCursor, LeaseSummary, Page};
use crate::inventory::HostRecord;
use crate::journal::BootEvent;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Host records, keyed `site \0 mac`.
const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("region_hosts");
/// One `SiteRecord` per site.
const SITES: TableDefinition<&str, &[u8]> = TableDefinition::new("region_sites");
/// Journal events, keyed `site \0 number` (zero-padded: ordered).
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("region_events");

/// redb's page cache for the read model.
const CACHE_BYTES: usize = 64 << 20;

/// Journal events kept per site (the newest).
pub const EVENTS_KEPT: u64 = 5000;

/// What the region knows of one site besides its hosts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Where to follow from (None: list everything at the next contact).
    pub cursor: Option<FeedCursor>,
    /// When the site last answered (region clock, unix seconds).
    pub last_contact: Option<u64>,
    /// The address that answered last (one of a pair's two).
    pub reached: Option<String>,
    /// Why the last attempt failed (cleared by the next success).
    pub error: Option<String>,
    /// The kind of that failure (`unreachable`, `tls`, `refused`, `revoked`, `bad-answer`).
    pub error_kind: Option<String>,
    /// The sites the daemon that answered serves.
    pub served: Vec<String>,
    pub hypervisors: Vec<crate::pool::HypervisorView>,
    pub leases: LeaseSummary,
    /// How many of the site's hosts are in each status (kept with every page, so a view of
    /// all sites reads one record per site, not every host).
    #[serde(default)]
    pub by_status: std::collections::BTreeMap<String, u64>,
    /// The next event number (region-local keys for the journal tail).
    pub events_next: u64,
    /// Feed pages applied, relists among them, records received (for the benchmark and
    /// `provd region sites --json`).
    pub pages: u64,
    pub relists: u64,
    pub records_received: u64,
    /// The number of the region's CRL every address of the site has taken
    /// (`follow::deliver_crl`); None until one has.
    #[serde(default)]
    pub crl_number: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegionStoreError {
    #[error("the region's store: {0}")]
    Db(#[from] redb::Error),
    #[error("the region's store holds an unreadable record {key}: {source}")]
    Unreadable { key: String, source: serde_json::Error },
}

fn db<E: Into<redb::Error>>(e: E) -> RegionStoreError {
    RegionStoreError::Db(e.into())
}

/// What one page changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    pub written: usize,
    pub removed: usize,
    pub events: usize,
}

pub struct ReadModel {
    db: Database,
}

fn host_key(site: &str, mac: &str) -> String {
    format!("{site}\0{mac}")
}

/// The key range of one site's rows.
fn site_range(site: &str) -> (String, String) {
    (format!("{site}\0"), format!("{site}\u{1}"))
}

impl ReadModel {
    pub fn open(state_dir: &Path) -> Result<ReadModel, RegionStoreError> {
        std::fs::create_dir_all(state_dir).map_err(|e| db(redb::StorageError::Io(e)))?;
        // The read model is read by the API and written a page at a time: a small cache
        // keeps the region's memory near what it follows (redb's default is 1 GiB).
        let database = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(state_dir.join("region.redb"))
            .map_err(db)?;
        let txn = database.begin_write().map_err(db)?;
        txn.open_table(HOSTS).map_err(db)?;
        txn.open_table(SITES).map_err(db)?;
        txn.open_table(EVENTS).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(ReadModel { db: database })
    }

    /// Apply one feed page from `site`, answered by `url` at `now`, in one transaction.
    pub fn apply(&self, site: &str, url: &str, page: &Page, now: u64) -> Result<Applied, RegionStoreError> {
        let mut applied = Applied::default();
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut sites = txn.open_table(SITES).map_err(db)?;
            let mut record: SiteRecord = match sites.get(site).map_err(db)? {
                Some(v) => decode(site, v.value())?,
                None => SiteRecord::default(),
            };
            let mut hosts = txn.open_table(HOSTS).map_err(db)?;
            if page.relist {
                // Counted again from the list itself below.
                record.by_status.clear();
                let named: std::collections::HashSet<String> =
                    page.hosts.iter().map(|h| host_key(site, &h.mac.to_string())).collect();
                let (from, to) = site_range(site);
                let mut stale = Vec::new();
                for row in hosts.range(from.as_str()..to.as_str()).map_err(db)? {
                    let (k, _) = row.map_err(db)?;
                    if !named.contains(k.value()) {
                        stale.push(k.value().to_string());
                    }
                }
                for k in &stale {
                    hosts.remove(k.as_str()).map_err(db)?;
                }
                applied.removed += stale.len();
            }
            for mac in &page.gone {
                if let Some(old) = hosts.remove(host_key(site, &mac.to_string()).as_str()).map_err(db)? {
                    uncount(&mut record.by_status, old.value());
                    applied.removed += 1;
                }
            }
            for h in &page.hosts {
                let json = serde_json::to_vec(h).expect("host records serialize");
                let old = hosts
                    .insert(host_key(site, &h.mac.to_string()).as_str(), json.as_slice())
                    .map_err(db)?;
                if let Some(old) = old
                    && !page.relist
                {
                    uncount(&mut record.by_status, old.value());
                }
                *record.by_status.entry(h.status.as_str().to_string()).or_insert(0) += 1;
                applied.written += 1;
            }
            let mut events = txn.open_table(EVENTS).map_err(db)?;
            for e in &page.events {
                let json = serde_json::to_vec(e).expect("events serialize");
                events
                    .insert(format!("{site}\0{:020}", record.events_next).as_str(), json.as_slice())
                    .map_err(db)?;
                record.events_next += 1;
                applied.events += 1;
            }
            // Keep the newest EVENTS_KEPT.
            if record.events_next > EVENTS_KEPT && applied.events > 0 {
                let (from, _) = site_range(site);
                let below = format!("{site}\0{:020}", record.events_next - EVENTS_KEPT);
                events
                    .retain_in(from.as_str()..below.as_str(), |_, _| false)
                    .map_err(db)?;
            }
            record.cursor = Some(page.cursor);
            record.last_contact = Some(now);
            record.reached = Some(url.to_string());
            record.error = None;
            record.error_kind = None;
            record.served = page.sites.clone();
            record.hypervisors = page.hypervisors.clone();
            record.leases = page.leases;
            record.pages += 1;
            record.relists += u64::from(page.relist);
            record.records_received += page.hosts.len() as u64;
            let json = serde_json::to_vec(&record).expect("site records serialize");
            sites.insert(site, json.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(applied)
    }

    /// A failed attempt to reach `site`: the copy stays as it was, marked with why.
    pub fn failed(&self, site: &str, kind: &str, why: &str) -> Result<(), RegionStoreError> {
        self.update_site(site, |record| {
            if record.error.as_deref() == Some(why) {
                return false; // nothing new to write
            }
            record.error = Some(why.to_string());
            record.error_kind = Some(kind.to_string());
            true
        })
    }

    /// Every address of `site` has taken the region's CRL numbered `number`.
    pub fn crl_held(&self, site: &str, number: u64) -> Result<(), RegionStoreError> {
        self.update_site(site, |record| record.crl_number.replace(number) != Some(number))
    }

    /// Change `site`'s record in one transaction; `change` says whether it changed it.
    fn update_site(&self, site: &str, change: impl FnOnce(&mut SiteRecord) -> bool) -> Result<(), RegionStoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut sites = txn.open_table(SITES).map_err(db)?;
            let mut record: SiteRecord = match sites.get(site).map_err(db)? {
                Some(v) => decode(site, v.value())?,
                None => SiteRecord::default(),
            };
            if !change(&mut record) {
                return Ok(());
            }
            let json = serde_json::to_vec(&record).expect("site records serialize");
            sites.insert(site, json.as_slice()).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    pub fn site(&self, site: &str) -> Result<Option<SiteRecord>, RegionStoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let sites = txn.open_table(SITES).map_err(db)?;
        match sites.get(site).map_err(db)? {
            Some(v) => Ok(Some(decode(site, v.value())?)),
            None => Ok(None),
        }
    }

    /// Every site's host records (or one site's), with their site.
    pub fn hosts(&self, site: Option<&str>) -> Result<Vec<(String, HostRecord)>, RegionStoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let hosts = txn.open_table(HOSTS).map_err(db)?;
        let mut out = Vec::new();
        let mut push = |k: &str, v: &[u8]| -> Result<(), RegionStoreError> {
            let site = k.split('\0').next().unwrap_or_default().to_string();
            out.push((site, decode(k, v)?));
            Ok(())
        };
        match site {
            Some(s) => {
                let (from, to) = site_range(s);
                for row in hosts.range(from.as_str()..to.as_str()).map_err(db)? {
                    let (k, v) = row.map_err(db)?;
                    push(k.value(), v.value())?;
                }
            }
            None => {
                for row in hosts.iter().map_err(db)? {
                    let (k, v) = row.map_err(db)?;
                    push(k.value(), v.value())?;
                }
            }
        }
        Ok(out)
    }

    /// The newest `limit` journal events of one site (or every site), oldest first.
    pub fn events(&self, site: &str, limit: usize) -> Result<Vec<BootEvent>, RegionStoreError> {
        let txn = self.db.begin_read().map_err(db)?;
        let events = txn.open_table(EVENTS).map_err(db)?;
        let (from, to) = site_range(site);
        let mut out = Vec::new();
        for row in events.range(from.as_str()..to.as_str()).map_err(db)?.rev().take(limit) {
            let (k, v) = row.map_err(db)?;
            out.push(decode(k.value(), v.value())?);
        }
        out.reverse();
        Ok(out)
    }
}

/// Take a replaced or removed record out of the status counts.
fn uncount(counts: &mut std::collections::BTreeMap<String, u64>, old: &[u8]) {
    #[derive(Deserialize)]
    struct JustStatus {
        status: crate::inventory::Status,
    }
    if let Ok(r) = serde_json::from_slice::<JustStatus>(old) {
        let key = r.status.as_str().to_string();
        if let Some(n) = counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, RegionStoreError> {
    serde_json::from_slice(v).map_err(|source| RegionStoreError::Unreadable {
        key: key.replace('\0', "/"),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(relist: bool, macs: &[u8], gone: &[u8], seq: u64) -> Page {
        let mac = |n: &u8| format!("52:54:00:00:00:{n:02x}").parse().unwrap();
        Page {
            sites: vec!["dc1".into()],
            cursor: FeedCursor {
                epoch: 7,
                seq,
                events: 0,
            },
            relist,
            hosts: macs
                .iter()
                .map(|n| crate::inventory::transition::new_record(mac(n), u64::from(*n)))
                .collect(),
            gone: gone.iter().map(mac).collect(),
            events: vec![],
            more: false,
            hypervisors: vec![],
            leases: LeaseSummary { bound: 3, known: 4 },
            at: 1,
        }
    }

    #[test]
    fn pages_apply_whole_repeats_change_nothing_and_a_relist_drops_what_it_does_not_name() {
        let d = tempfile::tempdir().unwrap();
        let m = ReadModel::open(d.path()).unwrap();
        m.apply("dc1", "https://a", &page(true, &[1, 2, 3], &[], 5), 100)
            .unwrap();
        m.apply("dc2", "https://b", &page(true, &[1], &[], 1), 100).unwrap();
        // The same page again (a retry after a lost answer): the same copy.
        m.apply("dc1", "https://a", &page(false, &[2], &[], 6), 101).unwrap();
        m.apply("dc1", "https://a", &page(false, &[2], &[], 6), 101).unwrap();
        assert_eq!(m.hosts(Some("dc1")).unwrap().len(), 3);
        assert_eq!(m.hosts(None).unwrap().len(), 4);
        let gone = m.apply("dc1", "https://a", &page(false, &[], &[3], 7), 102).unwrap();
        assert_eq!(gone.removed, 1);
        let relisted = m.apply("dc1", "https://a", &page(true, &[2, 9], &[], 1), 103).unwrap();
        assert_eq!((relisted.written, relisted.removed), (2, 1));
        let macs: Vec<String> = m
            .hosts(Some("dc1"))
            .unwrap()
            .iter()
            .map(|(_, h)| h.mac.to_string())
            .collect();
        assert_eq!(macs, ["52:54:00:00:00:02", "52:54:00:00:00:09"]);
        assert_eq!(m.hosts(Some("dc2")).unwrap().len(), 1, "another site untouched");
        let s = m.site("dc1").unwrap().unwrap();
        assert_eq!((s.pages, s.relists, s.last_contact), (5, 2, Some(103)));
        let discovered = crate::inventory::Status::Discovered.as_str().to_string();
        assert_eq!(
            s.by_status,
            [(discovered.clone(), 2)].into_iter().collect(),
            "counted as held"
        );
        let mut changed = page(false, &[2], &[], 8);
        changed.hosts[0].status = crate::inventory::Status::Installed;
        m.apply("dc1", "https://a", &changed, 104).unwrap();
        let s = m.site("dc1").unwrap().unwrap();
        let installed = crate::inventory::Status::Installed.as_str().to_string();
        assert_eq!(s.by_status, [(discovered, 1), (installed, 1)].into_iter().collect());
        m.failed("dc1", "unreachable", "connection refused").unwrap();
        let s = m.site("dc1").unwrap().unwrap();
        assert_eq!(s.error.as_deref(), Some("connection refused"));
        assert_eq!(s.last_contact, Some(104), "a failure keeps the last contact");
        assert_eq!(m.hosts(Some("dc1")).unwrap().len(), 2, "and the copy");
    }

    #[test]
    fn the_journal_tail_keeps_the_newest_events() {
        let d = tempfile::tempdir().unwrap();
        let m = ReadModel::open(d.path()).unwrap();
        let mut p = page(true, &[], &[], 1);
        let event = |n: u64| BootEvent {
            at: n,
            mac: None,
            ip: None,
            step: crate::journal::Step::Tftp {
                file: "f".into(),
                bytes: n,
            },
            detail: String::new(),
        };
        p.events = (0..EVENTS_KEPT + 10).map(event).collect();
        m.apply("dc1", "u", &p, 1).unwrap();
        let kept = m.events("dc1", usize::MAX).unwrap();
        assert_eq!(kept.len() as u64, EVENTS_KEPT);
        assert_eq!(kept[0].at, 10);
        assert_eq!(
            m.events("dc1", 2).unwrap().iter().map(|e| e.at).collect::<Vec<_>>(),
            [EVENTS_KEPT + 8, EVENTS_KEPT + 9]
        );
    }
}
