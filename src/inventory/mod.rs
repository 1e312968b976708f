//! Hosts and their provisioning state machine, install tokens, and the boot-once decision
//! ("what should this MAC boot now?").
//!
//! States: discovered (an unknown MAC booted; kept with arch, UUID and vendor class for
//! adoption) -> assigned (in the config, install wanted) -> installing (kickstart fetched or
//! the installer said so) -> installed (netboot turns off: the host boots from its disk) ->
//! ready (set by the hypervisor build-out once its TLS endpoint is verified); failed from
//! installing. `reinstall` goes back to assigned. Every change is recorded in the host's
//! history and made durable in the store before the caller answers anyone.
//!
//! Each change is a pure transition (`transition`): compute the next record, persist it,
//! then publish it in memory. Writers of one host are serialised by that host's own lock;
//! the map readers use is locked only to read or to publish (never across a write), so a
//! slow fsync delays no reader, and a failed write changes nothing in memory.
//!
//! Tokens: an install session is minted when an installable host asks for its boot script.
//! Its token authorises the kickstart fetch and the install events; it expires, and it is
//! spent by the terminal event (installed or failed): reuse after that is refused.
//!
//! Must never: hand a token to a host other than the one it was minted for, or decide an
//! install for a host whose netboot is off.

pub mod changelog;
pub mod facts;
pub mod merge;
pub mod token;
pub mod transition;

use crate::clock::unix_now;
use crate::config::{HostEntry, HostIndex, Site};
use crate::mac::MacAddr;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

/// How long an install token stays valid: long enough for a slow install over a WAN link.
pub const DEFAULT_TOKEN_TTL: u64 = 4 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Discovered,
    Assigned,
    Installing,
    Installed,
    Ready,
    Failed,
}

impl Status {
    /// The name the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Discovered => "discovered",
            Status::Assigned => "assigned",
            Status::Installing => "installing",
            Status::Installed => "installed",
            Status::Ready => "ready",
            Status::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: u64,
    pub status: Status,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSession {
    pub token: String,
    pub issued: u64,
    pub expires: u64,
    pub kickstart_fetches: u32,
    /// Spent by `installed` or `failed`; a closed session's token is refused.
    pub closed: bool,
    /// Certificate roles ("server", "client") already signed with this token: each once.
    #[serde(default)]
    pub certificates_issued: Vec<String>,
    /// Names this install in the marker it leaves on the installed system (not a secret).
    #[serde(default)]
    pub id: String,
    /// An operator asked for this install (`provd hosts reinstall`): the kickstart's %pre
    /// may clear disks that hold an earlier provd install. Otherwise it refuses to.
    #[serde(default)]
    pub wipe_allowed: bool,
    /// The address of the token's first use (the boot script that carried it): every later
    /// use must come from there. A host's reservation and its lease are both its addresses;
    /// one install uses one of them, so a second machine at the other gets nothing.
    #[serde(default)]
    pub bound_to: Option<std::net::Ipv4Addr>,
    /// Steps of the install already taken with this token (`STEP_*`): each once, so a
    /// machine that reaches the host's address later gets only what the host had not taken.
    #[serde(default)]
    pub steps: Vec<String>,
}

/// The kickstart (with every secret the profile's variables put in it).
pub const STEP_KICKSTART: &str = "kickstart";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub mac: MacAddr,
    pub hostname: Option<String>,
    pub site: Option<String>,
    pub profile: Option<String>,
    pub status: Status,
    pub netboot: bool,
    pub arch: Option<u16>,
    pub uuid: Option<String>,
    pub vendor_class: Option<String>,
    pub first_seen: u64,
    pub updated: u64,
    pub history: Vec<HistoryEntry>,
    pub install: Option<InstallSession>,
    /// Set by `provd hosts reinstall` until the next install ends: that install may wipe
    /// an earlier one (the interlock in the kickstart's %pre).
    #[serde(default)]
    pub wipe_allowed: bool,
    /// When an operator last acted on this host (reinstall, netboot, mark-installed): the
    /// pair's merge rule lets the latest operator word win (`replication::merge`).
    #[serde(default)]
    pub intent_at: u64,
    /// This copy's version, for the pair's merge rule.
    #[serde(default)]
    pub version: crate::clock::Version,
    /// An operator drained this hypervisor: its VMs were moved away and nothing new is
    /// placed on it until `undrain`.
    #[serde(default)]
    pub drained: bool,
    /// What the machine reported from the discovery image (unknown machines).
    #[serde(default)]
    pub facts: Option<facts::HardwareFacts>,
}

/// What a host's boot script should do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    /// Install its profile; the kickstart URL carries this token.
    Install { token: String },
    /// Boot from the local disk (installed, netboot off, or nothing to install).
    LocalDisk,
    /// An unknown machine: show the discovery menu.
    Menu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallEvent {
    Installing,
    PostStarted,
    Installed,
    Failed,
    /// The installer found an earlier provd install on the disks and stopped before
    /// touching them (the interlock): the host is installed, netboot goes off.
    Refused,
}

impl InstallEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallEvent::Installing => "installing",
            InstallEvent::PostStarted => "post-started",
            InstallEvent::Installed => "installed",
            InstallEvent::Failed => "failed",
            InstallEvent::Refused => "refused",
        }
    }
}

impl std::str::FromStr for InstallEvent {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "installing" => Ok(InstallEvent::Installing),
            "post-started" => Ok(InstallEvent::PostStarted),
            "installed" => Ok(InstallEvent::Installed),
            "failed" => Ok(InstallEvent::Failed),
            "refused" => Ok(InstallEvent::Refused),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("unknown host")]
    UnknownHost,
    /// Wrong, reused, expired, or for another host. One error on purpose: the caller learns
    /// nothing about which.
    #[error("token refused")]
    TokenRefused,
    /// The right token from another of the host's addresses than the one it was first used
    /// from.
    #[error("this install's token is bound to {bound}, the address of its first use")]
    BoundElsewhere { bound: std::net::Ipv4Addr },
    /// A step of the install asked for a second time with the same token.
    #[error("{0} was already taken with this install's token")]
    StepTaken(String),
    #[error("could not persist host state: {0}")]
    Store(crate::store::Failure),
    /// `reinstall` of a host the inventory says is installed, without `force`.
    #[error("{host} is {status} (since {since}): a reinstall wipes its disks; pass --force if that is what you want")]
    Installed {
        host: String,
        status: &'static str,
        since: String,
    },
}

pub struct Inventory {
    /// The published records: locked only to read or to publish, never across a write.
    hosts: RwLock<HashMap<MacAddr, HostRecord>>,
    /// One write lock per host: the read-compute-persist-publish of one host is serialised,
    /// different hosts proceed in parallel.
    writers: std::sync::Mutex<HashMap<MacAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// The sites this process serves (hosts of other sites are strangers here). Which
    /// hosts are configured is not kept here: it belongs to a config generation, and every
    /// question that needs it takes the asker's generation's `HostIndex`, so one request
    /// never mixes two generations' host lists.
    served: Vec<String>,
    store: Store,
    token_ttl: u64,
    /// Limits on records of machines nobody configured (any MAC on the wire makes one).
    discovery: DiscoveryLimits,
    /// Discovered records forgotten (the oldest first) to make room for a newer machine.
    discovered_evicted: std::sync::atomic::AtomicU64,
    /// Who writes here (the version origin of local writes; see `Store::server_id`).
    origin: String,
    /// Every record written locally, once durable (the failover partner's replication
    /// link sends them on). Records applied from the partner are not echoed.
    changes: tokio::sync::broadcast::Sender<HostRecord>,
    /// Every change to the published records, local or merged, in order (the region's feed).
    changelog: changelog::ChangeLog,
    /// Sites whose configured hosts get no install for now: a server of a pair that has
    /// never synchronised with its partner does not know which hosts are installed.
    held: RwLock<std::collections::HashSet<String>>,
}

/// How many unconfigured ("discovered") machines the inventory remembers, and for how long
/// after it last heard from one. Only machines that hold a lease are recorded (DHCP's ACK,
/// or a boot script asked from the address leased to that MAC), so spraying random MACs
/// costs a pool address each; when the cap is reached the machine heard from least recently
/// is forgotten for the newcomer (a real machine that boots now is the one an operator is
/// about to adopt). Known hosts are never affected.
#[derive(Debug, Clone, Copy)]
pub struct DiscoveryLimits {
    pub max_records: usize,
    pub forget_after_secs: u64,
}

pub const DEFAULT_DISCOVERY: DiscoveryLimits = DiscoveryLimits {
    max_records: 4096,
    forget_after_secs: 30 * 86400,
};

/// DHCP facts about a booting client, for discovery.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub arch: Option<u16>,
    pub uuid: Option<String>,
    pub vendor_class: Option<String>,
}

/// What a transition asks the inventory to do.
enum Change<T> {
    Keep(T),
    Write(Box<HostRecord>, T),
}

impl Inventory {
    /// Load stored state and reconcile it with the config of the served sites.
    pub fn load(store: Store, index: &HostIndex, served: &[&Site], token_ttl: u64) -> Result<Self, InventoryError> {
        let mut hosts = HashMap::new();
        for (key, json) in store.load_hosts().map_err(|e| InventoryError::Store(e.into()))? {
            match serde_json::from_slice::<HostRecord>(&json) {
                Ok(r) => {
                    hosts.insert(r.mac, r);
                }
                Err(e) => tracing::error!("ignoring unreadable host record {key}: {e}"),
            }
        }
        let store_origin = store
            .server_id_blocking()
            .map_err(|e| InventoryError::Store(e.into()))?;
        let inv = Inventory {
            hosts: RwLock::new(hosts),
            writers: std::sync::Mutex::new(HashMap::new()),
            served: served.iter().map(|s| s.name.clone()).collect(),
            store,
            token_ttl,
            discovery: DEFAULT_DISCOVERY,
            discovered_evicted: std::sync::atomic::AtomicU64::new(0),
            origin: store_origin,
            changes: tokio::sync::broadcast::channel(4096).0,
            changelog: changelog::ChangeLog::default(),
            held: RwLock::new(Default::default()),
        };
        inv.reconcile_blocking(index)?;
        inv.forget_stale_discovered_blocking(unix_now())?;
        Ok(inv)
    }

    /// Local changes, once durable (for the partner's replication link).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<HostRecord> {
        self.changes.subscribe()
    }

    /// Every published change, in order (local and merged; `changelog`).
    pub fn changelog(&self) -> &changelog::ChangeLog {
        &self.changelog
    }

    /// Hold (or release) installs for the configured hosts of `site`.
    pub fn hold_installs(&self, site: &str, hold: bool) {
        let mut held = self.held.write().unwrap_or_else(|p| p.into_inner());
        if hold {
            held.insert(site.to_string());
        } else {
            held.remove(site);
        }
    }

    pub fn installs_held(&self, site: &str) -> bool {
        self.held.read().unwrap_or_else(|p| p.into_inner()).contains(site)
    }

    /// A copy of a host's record from the partner: merged with ours by the pair's rule
    /// (`merge::host`), stored, published. Returns whether ours changed.
    pub async fn apply_remote(&self, theirs: HostRecord) -> Result<bool, InventoryError> {
        let mac = theirs.mac;
        let lock = self.writer(mac);
        let result = {
            let _serialised = lock.lock().await;
            let current = self.read().get(&mac).cloned();
            let merged = match &current {
                None => theirs,
                Some(ours) => merge::host(ours, &theirs),
            };
            if current.as_ref() == Some(&merged) {
                Ok(false)
            } else {
                match self.persist(&merged).await {
                    Ok(()) => {
                        self.publish(merged);
                        Ok(true)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        self.release_writer(mac, lock);
        result
    }

    /// Other discovery limits (tests; the defaults suit a fleet).
    pub fn with_discovery_limits(mut self, limits: DiscoveryLimits) -> Self {
        self.discovery = limits;
        self
    }

    /// How many unknown machines were not recorded because the cap was reached.
    pub fn discovered_evicted(&self) -> u64 {
        self.discovered_evicted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A record of a machine that is not configured here and never was (adopted or
    /// installed hosts are configured, or were, and are kept). The status says it: a
    /// configured host's record leaves `Discovered` when its config is reconciled (at load,
    /// and in `reindex` before a reload publishes the generation that lists it), and no
    /// transition returns to it.
    fn is_discovered_only(r: &HostRecord) -> bool {
        r.status == Status::Discovered
    }

    /// Discovered-only records not updated within `forget_after_secs`.
    fn stale_discovered(&self, now: u64) -> Vec<MacAddr> {
        let cutoff = now.saturating_sub(self.discovery.forget_after_secs);
        self.read()
            .values()
            .filter(|r| Self::is_discovered_only(r) && r.updated.max(r.first_seen) < cutoff)
            .map(|r| r.mac)
            .collect()
    }

    fn forget(&self, macs: &[MacAddr]) {
        let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        for mac in macs {
            hosts.remove(mac);
        }
        drop(hosts);
        for mac in macs {
            self.changelog.note(*mac);
        }
        if !macs.is_empty() {
            tracing::info!(
                "forgot {} discovered machine(s): not heard from for {} days, or the least recent when the table was full",
                macs.len(),
                self.discovery.forget_after_secs / 86400
            );
        }
    }

    /// At load: drop stale discovered-only records (store first, then memory).
    fn forget_stale_discovered_blocking(&self, now: u64) -> Result<(), InventoryError> {
        let stale = self.stale_discovered(now);
        let keys: Vec<String> = stale.iter().map(MacAddr::to_string).collect();
        self.store
            .delete_hosts_blocking(&keys)
            .map_err(|e| InventoryError::Store(e.into()))?;
        self.forget(&stale);
        Ok(())
    }

    /// Room for one more discovered-only record? When full, forgets stale ones, else the
    /// one heard from least recently.
    async fn room_for_discovered(&self, now: u64) -> bool {
        let count = || self.read().values().filter(|r| Self::is_discovered_only(r)).count();
        if count() < self.discovery.max_records {
            return true;
        }
        let mut stale = self.stale_discovered(now);
        if stale.is_empty() {
            let oldest = self
                .read()
                .values()
                .filter(|r| Self::is_discovered_only(r))
                .min_by_key(|r| (r.updated.max(r.first_seen), r.mac))
                .map(|r| r.mac);
            stale.extend(oldest);
            self.discovered_evicted
                .fetch_add(stale.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if stale.is_empty() {
            return false;
        }
        let keys: Vec<String> = stale.iter().map(MacAddr::to_string).collect();
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.delete_hosts_blocking(&keys)).await {
            Ok(Ok(())) => {
                self.forget(&stale);
                count() < self.discovery.max_records
            }
            Ok(Err(e)) => {
                tracing::error!("inventory: forgetting stale discovered machines: {e}");
                false
            }
            Err(e) => {
                tracing::error!("inventory: {e}");
                false
            }
        }
    }

    /// The site of a configured host of a served site, in `index` (the asker's generation).
    fn configured_site<'i>(&self, index: &'i HostIndex, mac: MacAddr) -> Option<&'i str> {
        index
            .by_mac(mac)
            .filter(|e| self.served.contains(&e.site))
            .map(|e| e.site.as_str())
    }

    /// A reloaded config's hosts: new hosts get their records (as at start), changed ones
    /// are reconciled with their new entry, each under its own write lock like any other
    /// change (and sent to the partner); hosts no longer in the config keep their records
    /// (history stays) but are strangers from now on. Returns how many records changed; on
    /// a store failure it stops there and says so (records written so far stay, each
    /// consistent with the new config).
    pub async fn reindex(&self, index: &HostIndex) -> Result<usize, InventoryError> {
        let entries: Vec<HostEntry> = index
            .iter()
            .filter(|e| self.served.contains(&e.site))
            .cloned()
            .collect();
        let mut changed = 0;
        for e in entries {
            let wrote = self
                .update(e.host.mac, |current, now| {
                    Ok(match transition::reconcile(current, &e.site, &e.host, now) {
                        Some(next) => Change::Write(Box::new(next), true),
                        None => Change::Keep(false),
                    })
                })
                .await?;
            changed += usize::from(wrote);
        }
        Ok(changed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<MacAddr, HostRecord>> {
        self.hosts.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Make `r` the record readers see, and note the change for followers (after it is
    /// visible, so a follower that reads the note finds the record).
    fn publish(&self, r: HostRecord) {
        let mac = r.mac;
        self.hosts.write().unwrap_or_else(|p| p.into_inner()).insert(mac, r);
        self.changelog.note(mac);
    }

    /// Bring stored records in line with the config (at load, before anyone else sees it).
    fn reconcile_blocking(&self, index: &HostIndex) -> Result<(), InventoryError> {
        let now = unix_now();
        let entries: Vec<HostEntry> = index
            .iter()
            .filter(|e| self.served.contains(&e.site))
            .cloned()
            .collect();
        for e in entries {
            let current = self.read().get(&e.host.mac).cloned();
            if let Some(mut next) = transition::reconcile(current.as_ref(), &e.site, &e.host, now) {
                let prev = current.map(|c| c.version).unwrap_or_default();
                next.version = crate::clock::Version::after(&prev, crate::clock::unix_now_ms(), &self.origin);
                self.persist_blocking(&next)?;
                self.publish(next);
            }
        }
        Ok(())
    }

    fn persist_blocking(&self, r: &HostRecord) -> Result<(), InventoryError> {
        let json = serde_json::to_vec(r).expect("host records serialize");
        self.store
            .put_host_blocking(&r.mac.to_string(), &json)
            .map_err(|e| InventoryError::Store(e.into()))
    }

    async fn persist(&self, r: &HostRecord) -> Result<(), InventoryError> {
        let (store, key, json) = (
            self.store.clone(),
            r.mac.to_string(),
            serde_json::to_vec(r).expect("serializes"),
        );
        tokio::task::spawn_blocking(move || store.put_host_blocking(&key, &json))
            .await
            .map_err(|e| {
                InventoryError::Store(crate::store::Failure {
                    kind: crate::store::ErrorKind::Other,
                    message: format!("the store's writer task failed: {e}"),
                })
            })?
            .map_err(|e| InventoryError::Store(e.into()))
    }

    fn writer(&self, mac: MacAddr) -> Arc<tokio::sync::Mutex<()>> {
        self.writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(mac)
            .or_default()
            .clone()
    }

    /// The one way a record changes: under the host's write lock, compute the next record
    /// from the published one (pure), make it durable, then publish it. An error anywhere
    /// leaves the published record as it was.
    async fn update<T>(
        &self,
        mac: MacAddr,
        f: impl FnOnce(Option<&HostRecord>, u64) -> Result<Change<T>, InventoryError>,
    ) -> Result<T, InventoryError> {
        let lock = self.writer(mac);
        let result = {
            let _serialised = lock.lock().await;
            let current = self.read().get(&mac).cloned();
            let now = unix_now();
            match f(current.as_ref(), now) {
                Err(e) => Err(e),
                Ok(Change::Keep(out)) => Ok(out),
                // A machine nobody configured, new to us, and no room could be made (the
                // store refused to forget one): answer as usual but do not remember it.
                Ok(Change::Write(next, out))
                    if current.is_none() && Self::is_discovered_only(&next) && !self.room_for_discovered(now).await =>
                {
                    tracing::warn!("discovery: no room made for {mac}; not recorded");
                    Ok(out)
                }
                Ok(Change::Write(mut next, out)) => {
                    let prev = current.as_ref().map(|c| c.version.clone()).unwrap_or_default();
                    next.version = crate::clock::Version::after(&prev, crate::clock::unix_now_ms(), &self.origin);
                    match self.persist(&next).await {
                        Ok(()) => {
                            let _ = self.changes.send((*next).clone());
                            self.publish(*next);
                            Ok(out)
                        }
                        Err(e) => Err(e),
                    }
                }
            }
        };
        self.release_writer(mac, lock);
        result
    }

    /// Forget a host's write lock once nobody else waits on it, so the map holds only the
    /// hosts being written now (any MAC on the network can make provd write a record).
    fn release_writer(&self, mac: MacAddr, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        // Two references: the map's and ours. More: another writer holds or awaits it.
        if Arc::strong_count(&lock) <= 2 {
            writers.remove(&mac);
        }
    }

    /// `update` for a host that must exist.
    async fn update_known(
        &self,
        mac: MacAddr,
        f: impl FnOnce(&HostRecord, u64) -> Result<HostRecord, InventoryError>,
    ) -> Result<HostRecord, InventoryError> {
        self.update(mac, |r, now| {
            let next = f(r.ok_or(InventoryError::UnknownHost)?, now)?;
            Ok(Change::Write(Box::new(next.clone()), next))
        })
        .await
    }

    /// Hostname or MAC (any separator) -> MAC of a host the inventory knows.
    /// `index`: the host index of the asker's config generation.
    pub async fn find(&self, index: &HostIndex, name: &str) -> Option<MacAddr> {
        if let Some(e) = index.by_name(name).filter(|e| self.served.contains(&e.site)) {
            return Some(e.host.mac);
        }
        let mac: MacAddr = name.trim_end_matches(".ipxe").parse().ok()?;
        self.read().contains_key(&mac).then_some(mac)
    }

    pub async fn get(&self, mac: MacAddr) -> Option<HostRecord> {
        self.read().get(&mac).cloned()
    }

    pub async fn list(&self) -> Vec<HostRecord> {
        let mut v: Vec<HostRecord> = self.read().values().cloned().collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.mac.cmp(&b.mac)));
        v
    }

    /// Is `mac` a configured host of a served site in `index` (the asker's generation)?
    pub fn is_configured(&self, index: &HostIndex, mac: MacAddr) -> bool {
        self.configured_site(index, mac).is_some()
    }

    /// Record what DHCP saw; an unknown MAC becomes a discovered host.
    pub async fn observe(&self, mac: MacAddr, obs: Observation) -> Result<(), InventoryError> {
        self.update(mac, |r, now| {
            Ok(match transition::observe(r, mac, obs, now) {
                Some(next) => Change::Write(Box::new(next), ()),
                None => Change::Keep(()),
            })
        })
        .await
    }

    /// The boot-once decision for `mac`, minting an install token when an install is due.
    /// `from`: the address the machine asks from (already checked to be one of the host's);
    /// a new token is bound to it.
    /// `index`: the host index of the asker's config generation.
    pub async fn boot(
        &self,
        index: &HostIndex,
        mac: MacAddr,
        from: std::net::Ipv4Addr,
    ) -> Result<BootDecision, InventoryError> {
        if let Some(site) = self.configured_site(index, mac)
            && self.installs_held(site)
        {
            // Not synchronised with the partner yet: maybe installed, maybe not. Local disk
            // is the answer that cannot destroy anything.
            return Ok(BootDecision::LocalDisk);
        }
        let configured = self.is_configured(index, mac);
        let ttl = self.token_ttl;
        self.update(mac, |r, now| {
            // Durable first: a minted token (or a first record) exists only once on disk.
            Ok(
                match transition::boot(r, mac, configured, ttl, now, from, crate::random::token)? {
                    (decision, Some(next)) => Change::Write(Box::new(next), decision),
                    (decision, None) => Change::Keep(decision),
                },
            )
        })
        .await
    }

    /// Is `token` the open install token of `mac`, used from `from`, with the kickstart
    /// not taken yet? Changes nothing.
    pub async fn verify_kickstart(
        &self,
        mac: MacAddr,
        token: &str,
        from: std::net::Ipv4Addr,
    ) -> Result<(), InventoryError> {
        let hosts = self.read();
        let r = hosts.get(&mac).ok_or(InventoryError::UnknownHost)?;
        transition::check_step(r, token, from, STEP_KICKSTART, unix_now())
    }

    /// May `token` have a `role` certificate signed for `mac`? Changes nothing (signing
    /// happens between this and `certificate_issued`).
    pub async fn verify_signing_token(
        &self,
        mac: MacAddr,
        token: &str,
        from: std::net::Ipv4Addr,
        role: &str,
    ) -> Result<(), InventoryError> {
        let hosts = self.read();
        let r = hosts.get(&mac).ok_or(InventoryError::UnknownHost)?;
        transition::check_signing(r, token, from, role, unix_now())
    }

    /// Record that `token` was spent on a `role` certificate. Checked again under the host's
    /// write lock, so of two racing requests only one gets its certificate.
    pub async fn certificate_issued(
        &self,
        mac: MacAddr,
        token: &str,
        from: std::net::Ipv4Addr,
        role: &str,
    ) -> Result<(), InventoryError> {
        self.update_known(mac, |r, now| transition::certificate_issued(r, token, from, role, now))
            .await
            .map(|_| ())
    }

    /// A kickstart fetch with `token` from `from`: once per session; counted.
    pub async fn kickstart_fetched(
        &self,
        mac: MacAddr,
        token: &str,
        from: std::net::Ipv4Addr,
    ) -> Result<HostRecord, InventoryError> {
        self.update_known(mac, |r, now| transition::kickstart_fetched(r, token, from, now))
            .await
    }

    /// An installer callback. `installed` turns netboot off (boot once); `installed` and
    /// `failed` spend the token.
    pub async fn event(
        &self,
        mac: MacAddr,
        token: &str,
        from: std::net::Ipv4Addr,
        event: InstallEvent,
        detail: &str,
    ) -> Result<Status, InventoryError> {
        self.update_known(mac, |r, now| transition::event(r, token, from, event, detail, now))
            .await
            .map(|r| r.status)
    }

    /// Operator: install this host again at its next network boot.
    /// Operator: install again at the next network boot, allowed to wipe the disks. An
    /// installed (or ready) host needs `force`.
    pub async fn reinstall(&self, mac: MacAddr, force: bool) -> Result<HostRecord, InventoryError> {
        self.update_known(mac, |r, now| transition::reinstall(r, force, now))
            .await
    }

    /// The pool's verdict on an installed host: ready (reached over qemu+tls) or not.
    /// Written only when the status changes (installed <-> ready); `why` goes to history.
    pub async fn set_ready(&self, mac: MacAddr, ready: bool, why: &str) -> Result<(), InventoryError> {
        self.update(mac, |r, now| {
            let Some(r) = r else {
                return Ok(Change::Keep(()));
            };
            Ok(match transition::pool_verdict(r, ready, why, now) {
                Some(next) => Change::Write(Box::new(next), ()),
                None => Change::Keep(()),
            })
        })
        .await
    }

    /// Operator: drain (or undrain) a hypervisor.
    pub async fn set_drained(&self, mac: MacAddr, on: bool) -> Result<HostRecord, InventoryError> {
        self.update_known(mac, |r, now| Ok(transition::set_drained(r, on, now)))
            .await
    }

    /// Facts a discovered machine reported about itself. Only for machines nobody
    /// configured (the discovery image is what unknown machines boot).
    pub async fn set_facts(
        &self,
        index: &HostIndex,
        mac: MacAddr,
        site: Option<String>,
        mut facts: facts::HardwareFacts,
    ) -> Result<HostRecord, InventoryError> {
        if self.is_configured(index, mac) {
            return Err(InventoryError::UnknownHost);
        }
        self.update_known(mac, |r, now| {
            facts.reported_at = now;
            let mut next = r.clone();
            let summary = format!(
                "discovery: {} CPU(s), {} MiB, {} disk(s), {} NIC(s) reported",
                facts.cpus.unwrap_or(0),
                facts.memory_mib.unwrap_or(0),
                facts.disks.len(),
                facts.nics.len()
            );
            next.facts = Some(facts);
            next.site = next.site.take().or(site);
            next.note(summary, now);
            Ok(next)
        })
        .await
    }

    /// Add a line to a host's history (a power action and its outcome) without changing
    /// its state.
    pub async fn note(&self, mac: MacAddr, what: String) -> Result<HostRecord, InventoryError> {
        self.update_known(mac, |r, now| {
            let mut next = r.clone();
            next.note(what, now);
            Ok(next)
        })
        .await
    }

    /// Operator: this host is installed and in service (boot it from its disk).
    pub async fn mark_installed(&self, mac: MacAddr) -> Result<HostRecord, InventoryError> {
        self.update_known(mac, |r, now| Ok(transition::mark_installed(r, now)))
            .await
    }

    /// Operator: allow or stop network installs without changing the state.
    pub async fn set_netboot(&self, mac: MacAddr, on: bool) -> Result<HostRecord, InventoryError> {
        self.update_known(mac, |r, now| Ok(transition::set_netboot(r, on, now)))
            .await
    }

    /// Counts by status, for metrics.
    pub async fn counts(&self) -> BTreeMap<Status, usize> {
        let mut m = BTreeMap::new();
        for r in self.read().values() {
            *m.entry(r.status).or_default() += 1;
        }
        m
    }
}

impl PartialOrd for Status {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Status {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (*self as u8).cmp(&(*other as u8))
    }
}

#[cfg(test)]
mod tests;
