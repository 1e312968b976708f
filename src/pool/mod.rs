//! The hypervisor pool: installed hosts become `ready` only once provd itself has reached
//! their libvirt over `qemu+tls://<fqdn>/system` with its own client certificate (from the
//! CA that signed the host, so the host's server certificate is checked against it) and
//! read their capacity. Failures leave the host `installed` with a visible pool state and
//! reason (`unreachable`, `tls`, `no-libvirt`) and are retried with backoff. A host whose
//! server certificate provd has revoked (or that expired) is not ready, whatever libvirt
//! says.
//!
//! This module owns the check results (capacity, when, why); the inventory owns the
//! status (`Inventory::set_ready`), so the pair replicates readiness like any other change.
//! Libvirt calls are blocking and run on the blocking pool, each bounded by a timeout.

pub mod drain;
pub mod presented;

use crate::inventory::{Inventory, Status};
use crate::mac::MacAddr;
use crate::pki::registry::{CertState, Registry};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Why a drain did not run. The inventory's own failure is kept whole: a store failure (a
/// full disk) is answered as such (`http::failure`), not as a conflict.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error("the pool is not running (provd has no CA)")]
    NoPool,
    #[error("{0}")]
    Inventory(crate::inventory::InventoryError),
    #[error("provd has not checked this host yet")]
    NotChecked,
    #[error("{host} is not ready ({state}): provd cannot reach its libvirt to move its domains")]
    NotReady { host: String, state: &'static str },
    /// The draining host's own libvirt could not be asked what runs there.
    #[error("{0}")]
    Source(crate::vm::VmError),
    #[error("the drain task ended: {0}")]
    Task(tokio::task::JoinError),
}

/// How provd reaches one ready hypervisor (`Pool::reach`).
#[derive(Debug, Clone)]
pub struct Reach {
    pub mac: MacAddr,
    pub site: String,
    /// `qemu+tls://<fqdn>/system?pkipath=<provd's client credentials>`.
    pub uri: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error("the pool is not running (provd has no CA)")]
    NoPool,
    #[error("no hypervisor named {0:?} in the pool")]
    Unknown(String),
    #[error("{host} is not ready ({state}): provd cannot reach its libvirt")]
    NotReady { host: String, state: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolState {
    Ready,
    Unreachable,
    Tls,
    NoLibvirt,
}

impl PoolState {
    /// The name the API and the CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Ready => "ready",
            PoolState::Unreachable => "unreachable",
            PoolState::Tls => "tls",
            PoolState::NoLibvirt => "no-libvirt",
        }
    }
}

/// What libvirt says about a reachable host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_mib: u64,
    pub free_memory_mib: u64,
    pub running_domains: usize,
    /// Names of the running domains (what a reinstall would destroy).
    #[serde(default)]
    pub running: Vec<String>,
    pub domains: usize,
    pub storage_pools: Vec<String>,
}

/// The last check of one host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub host: String,
    pub site: String,
    pub uri: String,
    pub state: PoolState,
    pub reason: Option<String>,
    pub checked_at: u64,
    pub capacity: Option<Capacity>,
    /// Consecutive failures (the backoff grows with them).
    pub failures: u32,
}

/// One hypervisor as `GET /api/hypervisors` shows it (and `provd hypervisors list` and the
/// VM commands read it): the pool's last check with the host's inventory status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HypervisorView {
    #[serde(flatten)]
    pub check: Check,
    /// None when the check names a host the inventory no longer knows.
    pub status: Option<crate::inventory::Status>,
    pub drained: bool,
}

/// What `POST /api/hypervisors/<host>/drain` answers: where each domain went, or why not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrainReport {
    pub host: String,
    pub moved: Vec<drain::Moved>,
}

impl DrainReport {
    /// Domains that could not be moved.
    pub fn failed(&self) -> usize {
        self.moved.iter().filter(|m| m.to.is_none()).count()
    }
}

/// Which pool state a libvirt connection error means (pure; libvirt's own words).
pub fn classify(message: &str) -> PoolState {
    let m = message.to_lowercase();
    let tls = [
        "certificate",
        "tls",
        "gnutls",
        "handshake",
        "issuer",
        "revoked",
        "verify",
    ];
    let unreachable = [
        "connection refused",
        "no route to host",
        "timed out",
        "network is unreachable",
        "name or service not known",
        "unable to connect to server",
        "could not resolve",
    ];
    if tls.iter().any(|w| m.contains(w)) {
        PoolState::Tls
    } else if unreachable.iter().any(|w| m.contains(w)) {
        PoolState::Unreachable
    } else {
        PoolState::NoLibvirt
    }
}

/// How long to wait before checking a host again. `coming_up`: its install has just
/// reported `installed` and it is booting its new system, so its libvirt should answer
/// within minutes: the backoff stops at 20 s, or a freshly installed hypervisor whose first
/// checks failed while it rebooted would wait minutes more to be found ready. A host that
/// was ready and is gone backs off up to ten minutes.
pub fn next_check_after(state: PoolState, failures: u32, coming_up: bool) -> Duration {
    let cap = if coming_up { 20 } else { 600 };
    match state {
        PoolState::Ready => Duration::from_secs(60),
        _ => Duration::from_secs((5u64 << failures.min(7)).min(cap)),
    }
}

/// Connect and read capacity (blocking).
fn probe(uri: &str) -> Result<Capacity, crate::vm::VmError> {
    let hv = crate::vm::Hypervisor::connect(uri)?;
    let info = hv.host_info()?;
    let running: Vec<String> = hv
        .list()
        .map(|l| l.into_iter().filter(|d| d.state == "running").map(|d| d.name).collect())
        .unwrap_or_default();
    Ok(Capacity {
        cpus: info.cpus,
        memory_mib: info.memory_mib,
        free_memory_mib: info.free_memory_mib,
        running_domains: running.len(),
        running,
        domains: info.domains,
        storage_pools: hv.storage_pool_names().unwrap_or_default(),
    })
}

/// The pool: check results by MAC, and the client credentials provd connects with.
#[derive(Default)]
pub struct Pool {
    checks: RwLock<HashMap<MacAddr, Check>>,
    pki_dir: RwLock<Option<PathBuf>>,
}

impl Pool {
    /// The domains running on `mac` now: asked of its libvirt when the pool reaches it
    /// (10 s at most), else what the last check saw (empty when unknown).
    pub async fn running_on(&self, mac: MacAddr) -> Vec<String> {
        let (uri, cached) = {
            let checks = self.checks.read().unwrap();
            let Some(c) = checks.get(&mac) else {
                return Vec::new();
            };
            let cached = c.capacity.as_ref().map(|c| c.running.clone()).unwrap_or_default();
            (c.uri.clone(), cached)
        };
        let Some(pki) = self.pki_dir.read().unwrap().clone() else {
            return cached;
        };
        let uri = format!("{uri}?pkipath={}", pki.display());
        let live = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::task::spawn_blocking(move || probe(&uri).map(|c| c.running)),
        )
        .await;
        match live {
            Ok(Ok(Ok(running))) => running,
            _ => cached,
        }
    }

    /// Where provd's libvirt client credentials are (set when the pool starts).
    pub fn set_pki_dir(&self, dir: PathBuf) {
        *self.pki_dir.write().unwrap() = Some(dir);
    }

    /// Drain `host` (MAC `mac`) of `site`: mark it drained, then move its running domains
    /// to the site's other ready, undrained hypervisors. The results, per domain.
    /// `ipam` gives each destination's migration address, which the source dials.
    pub async fn drain(
        &self,
        inventory: &Inventory,
        ipam: &crate::ipam::Ipam,
        mac: MacAddr,
    ) -> Result<Vec<drain::Moved>, DrainError> {
        let pki = self.pki_dir.read().unwrap().clone().ok_or(DrainError::NoPool)?;
        let record = inventory.set_drained(mac, true).await.map_err(DrainError::Inventory)?;
        let checks = self.checks.read().unwrap().clone();
        let source = checks.get(&mac).ok_or(DrainError::NotChecked)?;
        if source.state != PoolState::Ready {
            return Err(DrainError::NotReady {
                host: source.host.clone(),
                state: state_name(source.state),
            });
        }
        let mut candidates = Vec::new();
        for (m, c) in &checks {
            if *m == mac || c.site != source.site || c.state != PoolState::Ready {
                continue;
            }
            let Some(r) = inventory.get(*m).await else { continue };
            if r.drained || r.status != Status::Ready {
                continue;
            }
            if let Some(cap) = &c.capacity {
                candidates.push(drain::Candidate {
                    host: c.host.clone(),
                    uri: c.uri.clone(),
                    via: ipam
                        .address(*m, crate::netmodel::Role::Migration)
                        .map(crate::vm::deploy::migration_uri),
                    capacity: cap.clone(),
                });
            }
        }
        let source_uri = source.uri.clone();
        let query = format!("?pkipath={}", pki.display());
        let moved = tokio::task::spawn_blocking(move || drain::migrate_all(&source_uri, &mut candidates, &query))
            .await
            .map_err(DrainError::Task)?
            .map_err(DrainError::Source)?;
        tracing::info!(
            "drained {}: {} domain(s) moved, {} not",
            record.hostname.as_deref().unwrap_or("?"),
            moved.iter().filter(|m| m.to.is_some()).count(),
            moved.iter().filter(|m| m.to.is_none()).count()
        );
        Ok(moved)
    }

    /// Where provd reaches `host`'s libvirt with its own client certificate (the URI with
    /// `?pkipath=`), its MAC, and its site: only for a host the pool has found ready.
    pub fn reach(&self, host: &str) -> Result<Reach, ReachError> {
        let pki = self.pki_dir.read().unwrap().clone().ok_or(ReachError::NoPool)?;
        let checks = self.checks.read().unwrap();
        let (mac, c) = checks
            .iter()
            .find(|(_, c)| c.host == host)
            .ok_or_else(|| ReachError::Unknown(host.to_string()))?;
        if c.state != PoolState::Ready {
            return Err(ReachError::NotReady {
                host: host.to_string(),
                state: state_name(c.state),
            });
        }
        Ok(Reach {
            mac: *mac,
            site: c.site.clone(),
            uri: format!("{}?pkipath={}", c.uri, pki.display()),
        })
    }

    pub fn checks(&self) -> Vec<Check> {
        let mut v: Vec<Check> = self.checks.read().unwrap().values().cloned().collect();
        v.sort_by(|a, b| (&a.site, &a.host).cmp(&(&b.site, &b.host)));
        v
    }
}

/// How many hosts are checked at once (an unreachable host holds its slot for the timeout).
const PARALLEL_CHECKS: usize = 16;
/// The longest one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// One due check: who, where, and what provd's records say about its certificate.
struct Due {
    mac: MacAddr,
    host: String,
    site: String,
    fqdn: String,
    cert: Option<CertState>,
    failures: u32,
}

/// The certificate `due` presents must be one provd issued to it as a server and has not
/// revoked (the registry's word, at once; libvirt's own check sees a revocation only after
/// the host's CRL refresh).
async fn presented_is_its_own(
    due: &Due,
    pki_dir: &std::path::Path,
    registry: &Registry,
    now: u64,
) -> Result<(), (PoolState, String)> {
    let serial = presented::server_serial(&due.fqdn, pki_dir, CHECK_TIMEOUT)
        .await
        .map_err(|e| (e.state(), e.to_string()))?;
    judge_presented(&serial, &due.host, registry, now)
}

/// Pure: is `serial` a valid server certificate provd issued to `host`?
fn judge_presented(serial: &str, host: &str, registry: &Registry, now: u64) -> Result<(), (PoolState, String)> {
    match registry.by_serial(serial) {
        Some(c) if c.host == host && c.role == "server" => match c.state(now as i64) {
            CertState::Valid => Ok(()),
            CertState::Revoked => Err((
                PoolState::Tls,
                format!("it presents server certificate {serial}, which provd revoked"),
            )),
            CertState::Expired => Err((
                PoolState::Tls,
                format!("it presents server certificate {serial}, expired"),
            )),
        },
        Some(c) => Err((
            PoolState::Tls,
            format!(
                "it presents certificate {serial}, which provd issued to {} ({}), not to it as a server",
                c.host, c.role
            ),
        )),
        None => Err((
            PoolState::Tls,
            format!("it presents certificate {serial}, which provd's registry does not know"),
        )),
    }
}

/// Check `due` (blocking libvirt work on the blocking pool, bounded by a timeout).
async fn check(due: Due, pki_dir: PathBuf, registry: Arc<Registry>, now: u64) -> (MacAddr, Check) {
    let result = match due.cert {
        Some(CertState::Valid) if let Err(e) = presented_is_its_own(&due, &pki_dir, &registry, now).await => Err(e),
        Some(CertState::Valid) => {
            let uri = format!("qemu+tls://{}/system?pkipath={}", due.fqdn, pki_dir.display());
            match tokio::time::timeout(CHECK_TIMEOUT, tokio::task::spawn_blocking(move || probe(&uri))).await {
                // libvirt's remote driver reports connection and TLS failures in words only.
                Ok(Ok(r)) => r.map_err(|e| (classify(&e.to_string()), e.to_string())),
                Ok(Err(e)) => Err((PoolState::NoLibvirt, e.to_string())),
                Err(_) => Err((
                    PoolState::Unreachable,
                    format!("no answer within {} s", CHECK_TIMEOUT.as_secs()),
                )),
            }
        }
        Some(CertState::Revoked) => Err((PoolState::Tls, "its server certificate is revoked".into())),
        Some(CertState::Expired) => Err((PoolState::Tls, "its server certificate expired".into())),
        None => Err((PoolState::Tls, "provd issued it no server certificate".into())),
    };
    let (state, reason, capacity, failures) = match result {
        Ok(c) => (PoolState::Ready, None, Some(c), 0),
        Err((state, reason)) => (state, Some(reason), None, due.failures + 1),
    };
    let check = Check {
        host: due.host,
        site: due.site,
        uri: format!("qemu+tls://{}/system", due.fqdn),
        state,
        reason,
        checked_at: now,
        capacity,
        failures,
    };
    (due.mac, check)
}

/// The history line for a verdict.
fn verdict(check: &Check) -> String {
    match (&check.capacity, &check.reason) {
        (Some(c), _) => format!(
            "hypervisor verified over qemu+tls: {} CPUs, {} MiB ({} free), {} running domains",
            c.cpus, c.memory_mib, c.free_memory_mib, c.running_domains
        ),
        (None, Some(reason)) => format!("hypervisor check: {}: {reason}", state_name(check.state)),
        (None, None) => String::new(),
    }
}

/// Check every installed host of the served sites, each when it is due, until `stop`.
pub async fn run(
    pool: Arc<Pool>,
    inventory: Arc<Inventory>,
    generations: Arc<crate::generation::Generations>,
    certificates: Arc<Registry>,
    pki_dir: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    pool.set_pki_dir(pki_dir.clone());
    let mut next_at: HashMap<MacAddr, u64> = HashMap::new();
    loop {
        let now = crate::clock::unix_now();
        // Installed, not yet ready: booting their new system (`next_check_after`).
        let mut coming_up = std::collections::HashSet::new();
        let issued = certificates.certificates();
        let generation = generations.current();
        let config_now = &generation.config;
        let mut due = Vec::new();
        for r in inventory.list().await {
            if !matches!(r.status, Status::Installed | Status::Ready) {
                next_at.remove(&r.mac);
                continue;
            }
            let Some((site, host)) = config_now.host(r.mac) else {
                continue;
            };
            if r.status == Status::Installed {
                coming_up.insert(r.mac);
            }
            let cert = issued
                .iter()
                .filter(|c| c.host == host.hostname && c.role == "server")
                .max_by_key(|c| c.issued_at)
                .map(|c| c.state(now as i64));
            // A revoked or expired certificate ends readiness at once; otherwise when due.
            let cert_gone = r.status == Status::Ready && cert != Some(CertState::Valid);
            if !cert_gone && next_at.get(&r.mac).is_some_and(|t| *t > now) {
                continue;
            }
            due.push(Due {
                mac: r.mac,
                host: host.hostname.clone(),
                site: site.name.clone(),
                fqdn: site.fqdn(&host.hostname),
                cert,
                failures: pool.checks.read().unwrap().get(&r.mac).map_or(0, |c| c.failures),
            });
        }
        while !due.is_empty() {
            let mut set = tokio::task::JoinSet::new();
            for d in due.drain(..due.len().min(PARALLEL_CHECKS)) {
                set.spawn(check(d, pki_dir.clone(), certificates.clone(), now));
            }
            loop {
                let joined = tokio::select! {
                    j = set.join_next() => j,
                    // Dropping the set aborts the checks in flight.
                    _ = stop.changed() => return,
                };
                let Some(joined) = joined else { break };
                let Ok((mac, c)) = joined else { continue };
                next_at.insert(
                    mac,
                    now + next_check_after(c.state, c.failures, coming_up.contains(&mac)).as_secs(),
                );
                if let Err(e) = inventory
                    .set_ready(mac, c.state == PoolState::Ready, &verdict(&c))
                    .await
                {
                    tracing::error!("pool: {}: {e}", c.host);
                }
                pool.checks.write().unwrap().insert(mac, c);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

pub fn state_name(s: PoolState) -> &'static str {
    match s {
        PoolState::Ready => "ready",
        PoolState::Unreachable => "unreachable",
        PoolState::Tls => "tls",
        PoolState::NoLibvirt => "no-libvirt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real TLS handshake on loopback: the serial the pool reads is the one the server
    /// presents, and the verdict follows the registry: this host's valid server
    /// certificate passes; revoked, or another host's, does not; another CA's fails the
    /// handshake itself.
    #[tokio::test]
    async fn the_pool_judges_the_certificate_a_host_presents() {
        use crate::pki::registry::CertRecord;
        use rustls::pki_types::pem::PemObject;
        let d = tempfile::tempdir().unwrap();
        let pki = d.path().join("pki");
        crate::pki::init(&pki, "provd", 30, false).unwrap();
        let ca = crate::pki::Ca::load(&pki).unwrap();
        let registry = Registry::load(crate::store::Store::open(&d.path().join("state")).unwrap()).unwrap();
        let pool_dir = crate::pki::identities::pool_identity(&ca, &registry, &d.path().join("state"), "provd")
            .await
            .unwrap();
        // A "hypervisor" on loopback presenting a server certificate for localhost.
        let serve = |ca: &crate::pki::Ca| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(rcgen::DnType::CommonName, "localhost");
            let csr = params.serialize_request(&key).unwrap().pem().unwrap();
            let identity = crate::pki::HostIdentity {
                fqdn: "localhost".into(),
                short: "localhost".into(),
                addresses: vec!["127.0.0.1".parse().unwrap()],
                unit: "site t".into(),
            };
            let issued = ca.sign_host(&csr, &identity, crate::pki::Role::Server, 30).unwrap();
            let config =
                rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_no_client_auth()
                    .with_single_cert(
                        vec![rustls::pki_types::CertificateDer::from_pem_slice(issued.pem.as_bytes()).unwrap()],
                        rustls::pki_types::PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
                    )
                    .unwrap();
            (issued, Arc::new(config))
        };
        let listen = |config: Arc<rustls::ServerConfig>| async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = l.local_addr().unwrap().port();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = l.accept().await {
                    let _ = tokio_rustls::TlsAcceptor::from(config.clone()).accept(tcp).await;
                }
            });
            port
        };
        let (issued, config) = serve(&ca);
        let port = listen(config).await;
        let t = Duration::from_secs(5);
        let serial = presented::server_serial_at("localhost", port, &pool_dir, t)
            .await
            .unwrap();
        assert_eq!(serial, issued.serial);
        let now = crate::clock::unix_now();
        // Unknown to the registry: not its own.
        assert!(
            judge_presented(&serial, "hv1", &registry, now)
                .unwrap_err()
                .1
                .contains("does not know")
        );
        let record = |host: &str| CertRecord {
            serial: issued.serial.clone(),
            host: host.into(),
            role: "server".into(),
            issued_at: now as i64,
            not_after: issued.not_after,
            key_id: issued.key_id.clone(),
            how: "install".into(),
            revoked_at: None,
        };
        registry.issued(record("hv2")).await.unwrap();
        assert!(
            judge_presented(&serial, "hv1", &registry, now)
                .unwrap_err()
                .1
                .contains("issued to hv2")
        );
        registry.issued(record("hv1")).await.unwrap();
        judge_presented(&serial, "hv1", &registry, now).expect("its own, valid");
        registry.revoke_serial(&serial, now as i64).await.unwrap();
        let (state, why) = judge_presented(&serial, "hv1", &registry, now).unwrap_err();
        assert_eq!(state, PoolState::Tls);
        assert!(why.contains("revoked"), "{why}");
        // Another CA's certificate: the handshake itself fails, classified as TLS.
        let other = d.path().join("other");
        crate::pki::init(&other, "provd", 30, false).unwrap();
        let (_, config) = serve(&crate::pki::Ca::load(&other).unwrap());
        let port = listen(config).await;
        let e = presented::server_serial_at("localhost", port, &pool_dir, t)
            .await
            .unwrap_err();
        assert!(matches!(e, presented::PresentedError::Handshake { .. }), "{e}");
        assert_eq!(e.state(), PoolState::Tls, "{e}");
    }

    #[test]
    fn libvirt_errors_map_to_pool_states() {
        for (msg, want) in [
            (
                "unable to connect to server at 'hv1:16514': Connection refused",
                PoolState::Unreachable,
            ),
            (
                "authentication failed: Failed to verify peer's certificate",
                PoolState::Tls,
            ),
            ("The certificate hasn't got a known issuer.", PoolState::Tls),
            ("Cannot recv data: Connection reset by peer", PoolState::NoLibvirt),
        ] {
            assert_eq!(classify(msg), want, "{msg}");
        }
    }

    #[test]
    fn failures_back_off_up_to_ten_minutes() {
        assert_eq!(next_check_after(PoolState::Ready, 0, false), Duration::from_secs(60));
        assert_eq!(next_check_after(PoolState::Tls, 1, false), Duration::from_secs(10));
        assert_eq!(
            next_check_after(PoolState::Unreachable, 30, false),
            Duration::from_secs(600)
        );
        // A host booting its fresh install is looked at again within 20 s however often
        // it failed while it rebooted.
        assert_eq!(
            next_check_after(PoolState::Unreachable, 6, true),
            Duration::from_secs(20)
        );
        assert_eq!(
            next_check_after(PoolState::Unreachable, 1, true),
            Duration::from_secs(10)
        );
        assert_eq!(next_check_after(PoolState::Ready, 0, true), Duration::from_secs(60));
    }
}
