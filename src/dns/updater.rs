//! The one task that keeps each served site's names in its DNS server (RFC 2136 + TSIG).
//!
//! It owns the published state (what the server last accepted, durable in the store) and
//! the queue (the diff to what the site should have now). It wakes when asked
//! (`DnsUpdater::wake`) and every few seconds (a reload, a new lease or an IPAM assignment
//! shows up there); then, per site, it sends each change as its signed update messages and
//! records each one the server accepted before the next. A failure (no answer, a refusal,
//! a bad key) stops that site's round, is shown in the status and counted, and the site is
//! tried again after a growing pause. Nothing waits for this task: DHCP answers and
//! installs go on with the DNS server down, and the queue catches up when it is back.
//!
//! Addresses come from the site config (reservations) or, for a host without one, from its
//! current lease, and from IPAM. Names come from the config (`hosts adopt` writes there),
//! never from a packet (a
//! client's option 12 is not trusted), so a machine on the boot network cannot name itself.

use super::key;
use super::records::{self, Change, Names};
use super::update::{self, UpdateError};
use crate::clock::unix_now;
use crate::config::{Site, SiteDns};
use crate::dhcp::Leases;
use crate::generation::Generations;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

/// How often the wanted names are recomputed without a wake-up (leases and reloads).
const POLL: Duration = Duration::from_secs(3);
/// How long one update waits for its answer, per try; two tries.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest pause between two tries of a failing site.
const MAX_BACKOFF_SECS: u64 = 60;

/// One site's DNS state, as `/api/dns` and `provd dns` show it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SiteStatus {
    pub server: String,
    pub zone: String,
    /// Names the server holds from provd.
    pub names: usize,
    /// Changes still to send (the queue), in order.
    pub pending: Vec<Change>,
    pub last_error: Option<String>,
    pub last_error_at: Option<u64>,
    pub last_success_at: Option<u64>,
    /// When a failing site is tried next.
    pub retry_at: Option<u64>,
}

/// What `/api/dns` returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DnsView {
    pub sites: BTreeMap<String, SiteStatus>,
    /// Changes the servers accepted, and tries that failed, since the daemon started.
    pub accepted: u64,
    pub failed: u64,
}

/// The shared face of the task: its status, counters and wake-up.
#[derive(Default)]
pub struct DnsUpdater {
    status: std::sync::Mutex<BTreeMap<String, SiteStatus>>,
    accepted: AtomicU64,
    failed: AtomicU64,
    wake: tokio::sync::Notify,
}

impl DnsUpdater {
    pub fn view(&self) -> DnsView {
        DnsView {
            sites: self.status.lock().expect("dns status").clone(),
            accepted: self.accepted.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Recompute now (after a reload or an operator's change).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn set_status(&self, site: &str, f: impl FnOnce(&mut SiteStatus)) {
        f(self
            .status
            .lock()
            .expect("dns status")
            .entry(site.to_string())
            .or_default());
    }
}

/// A published name as the store keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Published {
    site: String,
    address: Ipv4Addr,
}

/// What each site should have: its hosts at their reservation, else their lease, then each
/// IPAM address as `<hostname>-<role>` (`hv1-migration`), first name and first address
/// winning (`records::desired`). Only configured hosts have names (`hosts adopt` writes
/// adopted ones to the config): a host removed from the config is retired.
pub fn wanted(
    site: &Site,
    dns: &SiteDns,
    static_addresses: &[crate::ipam::Assignment],
    lease_of: impl Fn(crate::mac::MacAddr) -> Option<Ipv4Addr>,
) -> Names {
    let configured = site
        .hosts
        .iter()
        .filter_map(|h| Some((h.hostname.as_str(), h.ip.or_else(|| lease_of(h.mac))?)));
    let role_names: Vec<(String, Ipv4Addr)> = static_addresses
        .iter()
        .filter(|a| a.site == site.name)
        .map(|a| {
            (
                format!(
                    "{}-{}",
                    a.hostname.split('.').next().unwrap_or_default(),
                    a.role.as_str()
                ),
                a.address,
            )
        })
        .collect();
    let roles = role_names.iter().map(|(n, a)| (n.as_str(), *a));
    records::desired(&dns.zone, configured.chain(roles))
}

/// Run until `stop`.
pub async fn run(
    updater: Arc<DnsUpdater>,
    ipam: Arc<crate::ipam::Ipam>,
    generations: Arc<Generations>,
    leases: Leases,
    store: Store,
    mut stop: watch::Receiver<bool>,
) {
    let mut published = match load_published(&store).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("DNS updates are off: the published names could not be read: {e}");
            return;
        }
    };
    let mut backoff: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    loop {
        let generation = generations.current();
        let static_addresses = ipam.all();
        for site in generation.served_sites() {
            let Some(dns) = &site.dns else { continue };
            let now = unix_now();
            let names = published.entry(site.name.clone()).or_default();
            let want = wanted(site, dns, &static_addresses, |mac| leases.address_of_mac(mac, now));
            let queue = records::diff(names, &want);
            updater.set_status(&site.name, |s| {
                s.server = dns.server.to_string();
                s.zone = dns.zone.clone();
                s.names = names.len();
                s.pending = queue.clone();
            });
            if queue.is_empty() || backoff.get(&site.name).is_some_and(|(until, _)| *until > now) {
                continue;
            }
            let (started, count) = (std::time::Instant::now(), queue.len());
            match send_queue(&updater, &store, &site.name, dns, names, queue).await {
                Ok(()) => {
                    tracing::info!(
                        "DNS for site {}: {count} change(s) accepted by {} in {:.3} s",
                        site.name,
                        dns.server,
                        started.elapsed().as_secs_f64()
                    );
                    backoff.remove(&site.name);
                    updater.set_status(&site.name, |s| s.retry_at = None);
                }
                Err(why) => {
                    let pause = backoff
                        .get(&site.name)
                        .map_or(2, |(_, p)| (p * 2).min(MAX_BACKOFF_SECS));
                    backoff.insert(site.name.clone(), (now + pause, pause));
                    tracing::warn!(
                        "DNS updates for site {} to {}: {why}; retrying in {pause} s",
                        site.name,
                        dns.server
                    );
                    updater.failed.fetch_add(1, Ordering::Relaxed);
                    updater.set_status(&site.name, |s| {
                        s.last_error = Some(why);
                        s.last_error_at = Some(now);
                        s.retry_at = Some(now + pause);
                    });
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = updater.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// How many accepted changes are recorded in one store transaction. Losing the record of
/// an accepted change (a crash before the write) only makes provd send it again: every
/// update is a delete-then-add of the whole RRset, so a resend changes nothing.
const REMEMBER_BATCH: usize = 64;

/// Send `queue` in order, recording what the server accepted (in batches, and always
/// before returning); the first failure ends the round.
async fn send_queue(
    updater: &DnsUpdater,
    store: &Store,
    site: &str,
    dns: &SiteDns,
    names: &mut Names,
    queue: Vec<Change>,
) -> Result<(), String> {
    let key = key::load(&dns.key_file).map_err(|e| e.to_string())?;
    let mut accepted: Vec<Change> = Vec::new();
    let mut outcome = Ok(());
    for change in queue {
        if records::zone_of(&change.fqdn, std::slice::from_ref(&dns.zone)).is_none() {
            // Published under a zone the site no longer uses: not this server's to change.
            tracing::warn!("forgetting {} (not in zone {} any more)", change.fqdn, dns.zone);
        } else if let Err(e) = send_change(dns, &key, &change).await {
            outcome = Err(format!("{}: {e}", change.fqdn));
            break;
        }
        accepted.push(change);
        if accepted.len() == REMEMBER_BATCH {
            record(updater, store, site, names, std::mem::take(&mut accepted)).await?;
        }
    }
    record(updater, store, site, names, accepted).await?;
    outcome
}

/// Make `accepted` durable, then the published names and the status say so.
async fn record(
    updater: &DnsUpdater,
    store: &Store,
    site: &str,
    names: &mut Names,
    accepted: Vec<Change>,
) -> Result<(), String> {
    if accepted.is_empty() {
        return Ok(());
    }
    remember(store, site, &accepted)
        .await
        .map_err(|e| format!("the store: {e}"))?;
    for change in &accepted {
        match change.to {
            Some(to) => names.insert(change.fqdn.clone(), to),
            None => names.remove(&change.fqdn),
        };
    }
    updater.accepted.fetch_add(accepted.len() as u64, Ordering::Relaxed);
    let now = unix_now();
    updater.set_status(site, |s| {
        s.names = names.len();
        s.pending.retain(|c| !accepted.iter().any(|a| a.fqdn == c.fqdn));
        s.last_success_at = Some(now);
    });
    Ok(())
}

/// Every message `change` needs, each signed, sent and answered in turn.
async fn send_change(dns: &SiteDns, key: &key::TsigKey, change: &Change) -> Result<(), UpdateError> {
    for (zone, message) in update::messages(change, &dns.zone, &dns.reverse_zones, dns.ttl)? {
        let mut id = [0u8; 2];
        crate::random::fill(&mut id);
        let mut signed = update::sign(zone, message, u16::from_be_bytes(id), key, unix_now())?;
        let answer = exchange(dns.server, &signed.bytes)
            .await
            .map_err(|e| UpdateError::Refused(format!("zone {}: no answer from {}: {e}", signed.zone, dns.server)))?;
        update::check_answer(&mut signed, &answer).map_err(|e| match e {
            UpdateError::Refused(why) => UpdateError::Refused(format!("zone {}: {why}", signed.zone)),
            other => other,
        })?;
    }
    Ok(())
}

/// One UDP request and its answer (from the server's address only: the socket is
/// connected), tried twice.
async fn exchange(server: std::net::SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: std::net::SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(server).await?;
    let mut buf = vec![0u8; 4096];
    let mut last = std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    for _ in 0..2 {
        socket.send(request).await?;
        match tokio::time::timeout(ANSWER_TIMEOUT, socket.recv(&mut buf)).await {
            Ok(Ok(n)) => return Ok(buf[..n].to_vec()),
            Ok(Err(e)) => last = e,
            Err(_) => {}
        }
    }
    Err(last)
}

async fn remember(store: &Store, site: &str, changes: &[Change]) -> Result<(), crate::store::StoreError> {
    let mut delete = Vec::new();
    let mut put = Vec::new();
    for c in changes {
        match c.to {
            Some(address) => {
                let published = Published {
                    site: site.to_string(),
                    address,
                };
                put.push((c.fqdn.clone(), serde_json::to_vec(&published).expect("plain data")));
            }
            None => delete.push(c.fqdn.clone()),
        }
    }
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.write_dns_names_blocking(&delete, &put))
        .await
        .expect("the store task")
}

async fn load_published(store: &Store) -> Result<BTreeMap<String, Names>, crate::store::StoreError> {
    let store = store.clone();
    let rows = tokio::task::spawn_blocking(move || store.load_dns_names())
        .await
        .expect("the store task")?;
    let mut out: BTreeMap<String, Names> = BTreeMap::new();
    for (fqdn, json) in rows {
        match serde_json::from_slice::<Published>(&json) {
            Ok(p) => {
                out.entry(p.site).or_default().insert(fqdn, p.address);
            }
            Err(e) => tracing::error!("ignoring unreadable DNS record {fqdn}: {e}"),
        }
    }
    Ok(out)
}
