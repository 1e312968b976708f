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
//! Tokens: an install session is minted when an installable host asks for its boot script.
//! Its token authorises the kickstart fetch and the install events; it expires, and it is
//! spent by the terminal event (installed or failed): reuse after that is refused.
//!
//! Must never: hand a token to a host other than the one it was minted for, or decide an
//! install for a host whose netboot is off.

pub mod token;

use crate::clock::unix_now;
use crate::config::Site;
use crate::mac::MacAddr;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use tokio::sync::Mutex;

/// How long an install token stays valid: long enough for a slow install over a WAN link.
pub const DEFAULT_TOKEN_TTL: u64 = 4 * 3600;
/// History entries kept per host (oldest dropped first).
const HISTORY_LIMIT: usize = 200;

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
}

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
}

impl HostRecord {
    fn set_status(&mut self, status: Status, what: impl Into<String>, now: u64) {
        self.status = status;
        self.note(what, now);
    }
    fn note(&mut self, what: impl Into<String>, now: u64) {
        self.updated = now;
        self.history.push(HistoryEntry {
            at: now,
            status: self.status,
            what: what.into(),
        });
        if self.history.len() > HISTORY_LIMIT {
            self.history.remove(0);
        }
    }
    /// The token in use, if a session is open and unexpired.
    fn open_session(&self, now: u64) -> Option<&InstallSession> {
        self.install.as_ref().filter(|s| !s.closed && s.expires > now)
    }
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallEvent {
    Installing,
    PostStarted,
    Installed,
    Failed,
}

impl InstallEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            InstallEvent::Installing => "installing",
            InstallEvent::PostStarted => "post-started",
            InstallEvent::Installed => "installed",
            InstallEvent::Failed => "failed",
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
    #[error("could not persist host state: {0}")]
    Store(String),
}

/// What the config says about a host (the config wins over stored copies of these fields).
#[derive(Debug, Clone)]
struct Configured {
    hostname: String,
    site: String,
    profile: Option<String>,
}

pub struct Inventory {
    hosts: Mutex<HashMap<MacAddr, HostRecord>>,
    configured: HashMap<MacAddr, Configured>,
    names: HashMap<String, MacAddr>,
    store: Store,
    token_ttl: u64,
}

/// DHCP facts about a booting client, for discovery.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    pub arch: Option<u16>,
    pub uuid: Option<String>,
    pub vendor_class: Option<String>,
}

impl Inventory {
    /// Load stored state and reconcile it with the config of the served sites.
    pub fn load(store: Store, served: &[&Site], token_ttl: u64) -> Result<Self, InventoryError> {
        let mut configured = HashMap::new();
        let mut names = HashMap::new();
        for site in served {
            for h in &site.hosts {
                configured.insert(
                    h.mac,
                    Configured {
                        hostname: h.hostname.clone(),
                        site: site.name.clone(),
                        profile: h.profile.clone(),
                    },
                );
                names.insert(h.hostname.clone(), h.mac);
            }
        }
        let mut hosts = HashMap::new();
        for (key, json) in store.load_hosts().map_err(|e| InventoryError::Store(e.to_string()))? {
            match serde_json::from_slice::<HostRecord>(&json) {
                Ok(r) => {
                    hosts.insert(r.mac, r);
                }
                Err(e) => tracing::error!("ignoring unreadable host record {key}: {e}"),
            }
        }
        let inv = Inventory {
            hosts: Mutex::new(hosts),
            configured,
            names,
            store,
            token_ttl,
        };
        inv.reconcile_blocking()?;
        Ok(inv)
    }

    /// Bring stored records in line with the config: new configured hosts become assigned,
    /// discovered machines that now appear in the config are adopted.
    fn reconcile_blocking(&self) -> Result<(), InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.try_lock().expect("not shared yet");
        for (mac, c) in &self.configured {
            let changed = match hosts.get_mut(mac) {
                None => {
                    let mut r = new_record(*mac, now);
                    r.set_status(Status::Assigned, "in config", now);
                    r.netboot = c.profile.is_some();
                    apply_config(&mut r, c);
                    hosts.insert(*mac, r);
                    true
                }
                Some(r) => {
                    let before = r.clone();
                    apply_config(r, c);
                    if r.status == Status::Discovered {
                        r.netboot = c.profile.is_some();
                        r.set_status(Status::Assigned, "adopted: now in config", now);
                    }
                    *r != before
                }
            };
            if changed {
                self.persist_blocking(&hosts[mac])?;
            }
        }
        Ok(())
    }

    fn persist_blocking(&self, r: &HostRecord) -> Result<(), InventoryError> {
        let json = serde_json::to_vec(r).expect("host records serialize");
        self.store
            .put_host_blocking(&r.mac.to_string(), &json)
            .map_err(|e| InventoryError::Store(e.to_string()))
    }

    async fn persist(&self, r: &HostRecord) -> Result<(), InventoryError> {
        let (store, key, json) = (
            self.store.clone(),
            r.mac.to_string(),
            serde_json::to_vec(r).expect("serializes"),
        );
        tokio::task::spawn_blocking(move || store.put_host_blocking(&key, &json))
            .await
            .map_err(|e| InventoryError::Store(e.to_string()))?
            .map_err(|e| InventoryError::Store(e.to_string()))
    }

    /// Hostname or MAC (any separator) -> MAC of a host the inventory knows.
    pub async fn find(&self, name: &str) -> Option<MacAddr> {
        if let Some(mac) = self.names.get(&name.to_ascii_lowercase()) {
            return Some(*mac);
        }
        let mac: MacAddr = name.trim_end_matches(".ipxe").parse().ok()?;
        self.hosts.lock().await.contains_key(&mac).then_some(mac)
    }

    pub async fn get(&self, mac: MacAddr) -> Option<HostRecord> {
        self.hosts.lock().await.get(&mac).cloned()
    }

    pub async fn list(&self) -> Vec<HostRecord> {
        let mut v: Vec<HostRecord> = self.hosts.lock().await.values().cloned().collect();
        v.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.mac.cmp(&b.mac)));
        v
    }

    pub fn is_configured(&self, mac: MacAddr) -> bool {
        self.configured.contains_key(&mac)
    }

    /// Record what DHCP saw; an unknown MAC becomes a discovered host.
    pub async fn observe(&self, mac: MacAddr, obs: Observation) -> Result<(), InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        let r = hosts.entry(mac).or_insert_with(|| {
            let mut r = new_record(mac, now);
            r.note("seen booting", now);
            r
        });
        let before = r.clone();
        r.arch = obs.arch.or(r.arch);
        r.uuid = obs.uuid.or(r.uuid.take());
        r.vendor_class = obs.vendor_class.or(r.vendor_class.take());
        if *r != before {
            r.updated = now;
            let r = r.clone();
            self.persist(&r).await?;
        }
        Ok(())
    }

    /// The boot-once decision for `mac`, minting an install token when an install is due.
    pub async fn boot(&self, mac: MacAddr) -> Result<BootDecision, InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        if !self.configured.contains_key(&mac) {
            if let std::collections::hash_map::Entry::Vacant(slot) = hosts.entry(mac) {
                let mut r = new_record(mac, now);
                r.note("asked for a boot script", now);
                // Durable first: the record exists in memory only once it is on disk.
                self.persist(&r).await?;
                slot.insert(r);
            }
            return Ok(BootDecision::Menu);
        }
        let r = hosts.get_mut(&mac).expect("configured hosts are reconciled at load");
        let installable = r.netboot
            && r.profile.is_some()
            && matches!(r.status, Status::Assigned | Status::Installing | Status::Failed);
        if !installable {
            return Ok(BootDecision::LocalDisk);
        }
        if let Some(s) = r.open_session(now) {
            return Ok(BootDecision::Install { token: s.token.clone() });
        }
        let token = crate::random::token();
        r.install = Some(InstallSession {
            token: token.clone(),
            issued: now,
            expires: now + self.token_ttl,
            kickstart_fetches: 0,
            closed: false,
            certificates_issued: Vec::new(),
        });
        r.note("install token issued", now);
        let r = r.clone();
        self.persist(&r).await?;
        Ok(BootDecision::Install { token })
    }

    fn check_token(r: &HostRecord, token: &str, now: u64) -> Result<(), InventoryError> {
        match r.open_session(now) {
            Some(s) if token::equal(&s.token, token) => Ok(()),
            _ => Err(InventoryError::TokenRefused),
        }
    }

    /// Is `token` the open install token of `mac`? Changes nothing.
    pub async fn verify_token(&self, mac: MacAddr, token: &str) -> Result<(), InventoryError> {
        let hosts = self.hosts.lock().await;
        let r = hosts.get(&mac).ok_or(InventoryError::UnknownHost)?;
        Self::check_token(r, token, unix_now())
    }

    /// May `token` have a `role` certificate signed for `mac`? Open, unexpired, and not used
    /// for that role yet. Changes nothing (signing happens between this and
    /// `certificate_issued`).
    pub async fn verify_signing_token(&self, mac: MacAddr, token: &str, role: &str) -> Result<(), InventoryError> {
        let hosts = self.hosts.lock().await;
        let r = hosts.get(&mac).ok_or(InventoryError::UnknownHost)?;
        Self::check_token(r, token, unix_now())?;
        match &r.install {
            Some(s) if !s.certificates_issued.iter().any(|x| x == role) => Ok(()),
            _ => Err(InventoryError::TokenRefused),
        }
    }

    /// Record that `token` was spent on a `role` certificate. Checks again under the lock,
    /// so of two racing requests only one gets its certificate.
    pub async fn certificate_issued(&self, mac: MacAddr, token: &str, role: &str) -> Result<(), InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        let r = hosts.get_mut(&mac).ok_or(InventoryError::UnknownHost)?;
        Self::check_token(r, token, now)?;
        let s = r.install.as_mut().expect("checked");
        if s.certificates_issued.iter().any(|x| x == role) {
            return Err(InventoryError::TokenRefused);
        }
        s.certificates_issued.push(role.to_string());
        r.note(format!("libvirt TLS {role} certificate issued"), now);
        let r = r.clone();
        self.persist(&r).await
    }

    /// A kickstart fetch with `token`: allowed while the session is open; counted.
    pub async fn kickstart_fetched(&self, mac: MacAddr, token: &str) -> Result<HostRecord, InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        let r = hosts.get_mut(&mac).ok_or(InventoryError::UnknownHost)?;
        Self::check_token(r, token, now)?;
        if let Some(s) = r.install.as_mut() {
            s.kickstart_fetches += 1;
        }
        if r.status != Status::Installing {
            r.set_status(Status::Installing, "kickstart fetched", now);
        } else {
            r.note("kickstart fetched", now);
        }
        let r = r.clone();
        self.persist(&r).await?;
        Ok(r)
    }

    /// An installer callback. `installed` turns netboot off (boot once); `installed` and
    /// `failed` spend the token.
    pub async fn event(
        &self,
        mac: MacAddr,
        token: &str,
        event: InstallEvent,
        detail: &str,
    ) -> Result<Status, InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        let r = hosts.get_mut(&mac).ok_or(InventoryError::UnknownHost)?;
        Self::check_token(r, token, now)?;
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(": {}", detail.chars().take(500).collect::<String>())
        };
        match event {
            InstallEvent::Installing => r.set_status(Status::Installing, format!("installer: installing{detail}"), now),
            InstallEvent::PostStarted => r.note(format!("installer: post-started{detail}"), now),
            InstallEvent::Installed => {
                r.netboot = false;
                r.install.as_mut().expect("checked").closed = true;
                r.set_status(
                    Status::Installed,
                    format!("installer: installed{detail}; netboot off"),
                    now,
                );
            }
            InstallEvent::Failed => {
                // Netboot off too: a host that fails its install must not loop through
                // installs forever; an operator looks, then runs `provd hosts reinstall`.
                r.netboot = false;
                r.install.as_mut().expect("checked").closed = true;
                r.set_status(Status::Failed, format!("installer: failed{detail}; netboot off"), now);
            }
        }
        let r = r.clone();
        self.persist(&r).await?;
        Ok(r.status)
    }

    /// Operator: install this host again at its next network boot.
    pub async fn reinstall(&self, mac: MacAddr) -> Result<HostRecord, InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        let r = hosts.get_mut(&mac).ok_or(InventoryError::UnknownHost)?;
        r.netboot = true;
        r.install = None;
        r.set_status(Status::Assigned, "operator: reinstall", now);
        let r = r.clone();
        self.persist(&r).await?;
        Ok(r)
    }

    /// Operator: allow or stop network installs without changing the state.
    pub async fn set_netboot(&self, mac: MacAddr, on: bool) -> Result<HostRecord, InventoryError> {
        let now = unix_now();
        let mut hosts = self.hosts.lock().await;
        let r = hosts.get_mut(&mac).ok_or(InventoryError::UnknownHost)?;
        r.netboot = on;
        r.note(format!("operator: netboot {}", if on { "on" } else { "off" }), now);
        let r = r.clone();
        self.persist(&r).await?;
        Ok(r)
    }

    /// Counts by status, for metrics.
    pub async fn counts(&self) -> BTreeMap<Status, usize> {
        let mut m = BTreeMap::new();
        for r in self.hosts.lock().await.values() {
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

fn new_record(mac: MacAddr, now: u64) -> HostRecord {
    HostRecord {
        mac,
        hostname: None,
        site: None,
        profile: None,
        status: Status::Discovered,
        netboot: false,
        arch: None,
        uuid: None,
        vendor_class: None,
        first_seen: now,
        updated: now,
        history: Vec::new(),
        install: None,
    }
}

fn apply_config(r: &mut HostRecord, c: &Configured) {
    r.hostname = Some(c.hostname.clone());
    r.site = Some(c.site.clone());
    r.profile = c.profile.clone();
}

#[cfg(test)]
mod tests;
