//! The CA's memory: every certificate it issued (serial, host, role, expiry, revocation),
//! and certificate requests that wait for an operator (`[pki] sign = "approve"`).
//!
//! `Registry` is the one owner. Each change is written to the store (fsynced) before it is
//! visible in memory, so `provd pki list`, the CRL and the expiry metric never show a
//! certificate or a revocation that a crash would forget. Writers take one async lock (these
//! changes are rare: a few per installed host); readers take a snapshot.
//!
//! Records are JSON in the store's `certificates` (by serial) and `csr_requests` (by
//! `host/role`) tables. Requests are bounded by construction: one per configured host and
//! role, and only a request with a valid install token from the host's own address is kept.

use super::Role;
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};

/// One certificate provd's CA signed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CertRecord {
    /// Lowercase hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    pub host: String,
    pub role: String,
    pub issued_at: i64,
    pub not_after: i64,
    /// SHA-256 of the certified public key (see `csr::inspect`).
    pub key_id: String,
    /// How it was issued: "install" (token, automatic), "approved", "renewal".
    pub how: String,
    pub revoked_at: Option<i64>,
}

/// The file in the PKI directory where `provd pki issue-client` (which signs with the CA
/// key directly, daemon or not) leaves the record of each certificate it made; the daemon
/// imports it into the registry at start and every few seconds. One JSON record per line.
pub const INBOX: &str = "issued.jsonl";

/// Append a record to the PKI directory's inbox (0600, created if missing), durably.
pub fn append_inbox(pki_dir: &std::path::Path, record: &CertRecord) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(pki_dir.join(INBOX))?;
    let mut line = serde_json::to_vec(record).expect("certificate records serialize");
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_all()
}

/// The inbox's records; a line that does not parse (a torn write) is skipped.
pub fn read_inbox(pki_dir: &std::path::Path) -> Vec<CertRecord> {
    std::fs::read_to_string(pki_dir.join(INBOX))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Roles of certificates that name no host: operators' (`provd pki issue-client`, with
/// and without `--admin`), provd's own libvirt client (the pool), its admin listener and
/// its side of the pair's replication link.
pub const OPERATOR_ROLE: &str = "operator";
pub const ADMIN_ROLE: &str = "admin";
pub const POOL_ROLE: &str = "pool";
pub const API_SERVER_ROLE: &str = "api-server";
pub const REPLICATION_ROLE: &str = "replication";

/// A certificate provd just made that does not parse back: never expected, but such a
/// certificate is refused rather than handed out unrecorded (and so unrevocable).
#[derive(Debug, thiserror::Error)]
#[error("the certificate just made for {name:?} does not parse")]
pub struct UnparsableCertificate {
    pub name: String,
}

impl CertRecord {
    /// The record of a certificate provd minted without a CSR (operators, its own
    /// identities), read from the certificate itself.
    pub fn minted(
        pem: &str,
        name: &str,
        role: &str,
        how: &str,
        issued_at: i64,
    ) -> Result<CertRecord, UnparsableCertificate> {
        let unparsable = || UnparsableCertificate { name: name.to_string() };
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|_| unparsable())?;
        let cert = pem.parse_x509().map_err(|_| unparsable())?;
        Ok(CertRecord {
            serial: cert.raw_serial().iter().map(|b| format!("{b:02x}")).collect(),
            host: name.to_string(),
            role: role.to_string(),
            issued_at,
            not_after: cert.validity().not_after.timestamp(),
            key_id: super::csr::certificate_der_key_id(&pem.contents).ok_or_else(unparsable)?,
            how: how.to_string(),
            revoked_at: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    Valid,
    Expired,
    Revoked,
}

impl CertState {
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Valid => "valid",
            CertState::Expired => "expired",
            CertState::Revoked => "revoked",
        }
    }
}

impl CertRecord {
    pub fn state(&self, now: i64) -> CertState {
        if self.revoked_at.is_some() {
            CertState::Revoked
        } else if self.not_after <= now {
            CertState::Expired
        } else {
            CertState::Valid
        }
    }

    /// The pair's one record of a certificate from our copy and the partner's (pure; both
    /// servers apply it, so they converge): a revocation on either side stands, the earliest.
    pub fn merge(ours: &CertRecord, theirs: &CertRecord) -> CertRecord {
        let mut merged = ours.clone();
        merged.revoked_at = match (ours.revoked_at, theirs.revoked_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        merged
    }
}

/// A CSR that waits for `provd pki approve` (or was decided and not yet collected).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CsrRequest {
    pub host: String,
    pub role: String,
    pub csr: String,
    /// The install token it came with: collecting the certificate needs the same token.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub token: String,
    pub from: Ipv4Addr,
    pub asked_at: i64,
    pub decision: Decision,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Decision {
    Waiting,
    Approved { serial: String, certificate: String },
    Rejected { at: i64 },
}

impl CsrRequest {
    pub fn key(host: &str, role: Role) -> String {
        format!("{host}/{}", role.name())
    }

    fn own_key(&self) -> String {
        format!("{}/{}", self.host, self.role)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("certificate registry: {0}")]
    Store(#[from] StoreError),
    #[error("certificate registry: a stored record is not readable ({key}): {error}")]
    Corrupt { key: String, error: String },
    #[error("certificate registry: the store's writer is gone")]
    Gone,
    #[error("certificate registry: {0}")]
    Unparsable(#[from] UnparsableCertificate),
}

/// Every issued certificate and waiting request, backed by the store.
pub struct Registry {
    store: Store,
    certificates: RwLock<BTreeMap<String, CertRecord>>,
    requests: RwLock<BTreeMap<String, CsrRequest>>,
    /// Serialises writers so the store and memory change in the same order.
    writer: tokio::sync::Mutex<()>,
    /// Certificate records written here, once durable (for the partner's replication link).
    changes: tokio::sync::broadcast::Sender<CertRecord>,
}

fn decode<T: serde::de::DeserializeOwned>(rows: Vec<(String, Vec<u8>)>) -> Result<BTreeMap<String, T>, RegistryError> {
    rows.into_iter()
        .map(|(key, bytes)| match serde_json::from_slice(&bytes) {
            Ok(v) => Ok((key, v)),
            Err(e) => Err(RegistryError::Corrupt {
                key,
                error: e.to_string(),
            }),
        })
        .collect()
}

impl Registry {
    pub fn load(store: Store) -> Result<Arc<Registry>, RegistryError> {
        let certificates = decode(store.load_certificates()?)?;
        let requests = decode(store.load_csr_requests()?)?;
        Ok(Arc::new(Registry {
            store,
            certificates: RwLock::new(certificates),
            requests: RwLock::new(requests),
            writer: tokio::sync::Mutex::new(()),
            changes: tokio::sync::broadcast::channel(1024).0,
        }))
    }

    /// Every issued certificate, by serial.
    pub fn certificates(&self) -> Vec<CertRecord> {
        self.certificates.read().unwrap().values().cloned().collect()
    }

    /// Every kept request, by host/role.
    pub fn requests(&self) -> Vec<CsrRequest> {
        self.requests.read().unwrap().values().cloned().collect()
    }

    pub fn request(&self, host: &str, role: Role) -> Option<CsrRequest> {
        self.requests.read().unwrap().get(&CsrRequest::key(host, role)).cloned()
    }

    /// (serial, revocation time) of every revoked certificate that has not expired: what
    /// the CRL must name (an expired certificate is refused anyway).
    pub fn revoked(&self, now: i64) -> Vec<(String, i64)> {
        self.certificates
            .read()
            .unwrap()
            .values()
            .filter(|c| c.not_after > now)
            .filter_map(|c| c.revoked_at.map(|at| (c.serial.clone(), at)))
            .collect()
    }

    /// The valid certificate of `host`/`role` for the key `key_id`, if any (renewal: the
    /// requester proved it holds that key by signing its CSR with it).
    pub fn current(&self, host: &str, role: Role, key_id: &str, now: i64) -> Option<CertRecord> {
        self.certificates
            .read()
            .unwrap()
            .values()
            .filter(|c| c.host == host && c.role == role.name() && c.key_id == key_id)
            .filter(|c| c.state(now) == CertState::Valid)
            .max_by_key(|c| c.not_after)
            .cloned()
    }

    async fn write(
        &self,
        op: impl FnOnce(&Store) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), RegistryError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|_| RegistryError::Gone)??;
        Ok(())
    }

    /// The record of the certificate with this serial, if provd issued it.
    pub fn by_serial(&self, serial: &str) -> Option<CertRecord> {
        self.certificates.read().unwrap().get(serial).cloned()
    }

    /// Whether the certificate with this serial is revoked (an unknown serial is not: the
    /// TLS verifier already checked it was signed by provd's CA).
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.by_serial(serial).is_some_and(|c| c.revoked_at.is_some())
    }

    /// Records the CLI minted while the daemon was elsewhere (`INBOX` in the PKI
    /// directory), not known yet: remembered now. Returns how many were new.
    pub async fn import_inbox(&self, pki_dir: &std::path::Path) -> Result<usize, RegistryError> {
        let mut new = 0;
        for record in read_inbox(pki_dir) {
            if self.by_serial(&record.serial).is_none() {
                self.issued(record).await?;
                new += 1;
            }
        }
        Ok(new)
    }

    /// Remember a certificate the CA just signed.
    pub async fn issued(&self, record: CertRecord) -> Result<(), RegistryError> {
        let _w = self.writer.lock().await;
        let bytes = serde_json::to_vec(&record).expect("certificate records serialize");
        let serial = record.serial.clone();
        self.write(move |s| s.put_certificate_blocking(&serial, &bytes)).await?;
        self.certificates
            .write()
            .unwrap()
            .insert(record.serial.clone(), record.clone());
        let _ = self.changes.send(record);
        Ok(())
    }

    /// Record a certificate provd minted itself, without a CSR (its admin listener's, the
    /// pair's replication, the pool's libvirt client): the one way such a certificate enters
    /// the registry, durable before the certificate is used, so every certificate provd
    /// makes is listed and revocable. (Certificates signed from a CSR are recorded by the
    /// signer with what it signed; `provd pki issue-client` runs offline and leaves its
    /// `CertRecord::minted` in the inbox, which `import_inbox` brings here.)
    pub async fn record_minted(
        &self,
        pem: &str,
        name: &str,
        role: &str,
        how: &str,
    ) -> Result<CertRecord, RegistryError> {
        let record = CertRecord::minted(pem, name, role, how, crate::clock::unix_now() as i64)?;
        self.issued(record.clone()).await?;
        Ok(record)
    }

    /// Certificate records written here, once durable.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<CertRecord> {
        self.changes.subscribe()
    }

    /// The partner's copy of a certificate record, merged with ours
    /// (`CertRecord::merge`). Returns whether ours changed.
    pub async fn apply_remote(&self, theirs: CertRecord) -> Result<bool, RegistryError> {
        let _w = self.writer.lock().await;
        let ours = self.certificates.read().unwrap().get(&theirs.serial).cloned();
        let merged = match &ours {
            None => theirs,
            Some(o) => CertRecord::merge(o, &theirs),
        };
        if ours.as_ref() == Some(&merged) {
            return Ok(false);
        }
        let bytes = serde_json::to_vec(&merged).expect("certificate records serialize");
        let serial = merged.serial.clone();
        self.write(move |s| s.put_certificate_blocking(&serial, &bytes)).await?;
        self.certificates.write().unwrap().insert(merged.serial.clone(), merged);
        Ok(true)
    }

    /// Revoke every valid certificate of `host` (of `role` only, when given). Returns the
    /// records revoked now (already revoked or expired ones are left as they are).
    /// Revoke the valid certificates of an identity that is not a host (an operator, provd's
    /// pool or listeners), by the name they were issued to.
    pub async fn revoke_identity(&self, name: &str, now: i64) -> Result<Vec<CertRecord>, RegistryError> {
        self.revoke_matching(
            |c| {
                c.host == name
                    && [OPERATOR_ROLE, ADMIN_ROLE, POOL_ROLE, API_SERVER_ROLE, REPLICATION_ROLE]
                        .contains(&c.role.as_str())
            },
            now,
        )
        .await
    }

    pub async fn revoke(&self, host: &str, role: Option<Role>, now: i64) -> Result<Vec<CertRecord>, RegistryError> {
        self.revoke_matching(|c| c.host == host && role.is_none_or(|r| c.role == r.name()), now)
            .await
    }

    /// Revoke the valid certificate with this serial (a renewal's predecessor).
    pub async fn revoke_serial(&self, serial: &str, now: i64) -> Result<Vec<CertRecord>, RegistryError> {
        self.revoke_matching(|c| c.serial == serial, now).await
    }

    async fn revoke_matching(
        &self,
        chosen: impl Fn(&CertRecord) -> bool,
        now: i64,
    ) -> Result<Vec<CertRecord>, RegistryError> {
        let _w = self.writer.lock().await;
        let chosen: Vec<CertRecord> = self
            .certificates
            .read()
            .unwrap()
            .values()
            .filter(|c| chosen(c))
            .filter(|c| c.state(now) == CertState::Valid)
            .map(|c| CertRecord {
                revoked_at: Some(now),
                ..c.clone()
            })
            .collect();
        for c in &chosen {
            let bytes = serde_json::to_vec(c).expect("certificate records serialize");
            let serial = c.serial.clone();
            self.write(move |s| s.put_certificate_blocking(&serial, &bytes)).await?;
            self.certificates.write().unwrap().insert(c.serial.clone(), c.clone());
            let _ = self.changes.send(c.clone());
        }
        Ok(chosen)
    }

    /// Keep (or replace) a request.
    pub async fn put_request(&self, request: CsrRequest) -> Result<(), RegistryError> {
        let _w = self.writer.lock().await;
        let key = request.own_key();
        let bytes = serde_json::to_vec(&request).expect("requests serialize");
        let k = key.clone();
        self.write(move |s| s.put_csr_request_blocking(&k, Some(&bytes)))
            .await?;
        self.requests.write().unwrap().insert(key, request);
        Ok(())
    }

    /// Forget a request (collected, or superseded by a reinstall).
    pub async fn remove_request(&self, host: &str, role: Role) -> Result<(), RegistryError> {
        let _w = self.writer.lock().await;
        let key = CsrRequest::key(host, role);
        let k = key.clone();
        self.write(move |s| s.put_csr_request_blocking(&k, None)).await?;
        self.requests.write().unwrap().remove(&key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(serial: &str, host: &str, role: &str, not_after: i64) -> CertRecord {
        CertRecord {
            serial: serial.into(),
            host: host.into(),
            role: role.into(),
            issued_at: 0,
            not_after,
            key_id: format!("key-{serial}"),
            how: "install".into(),
            revoked_at: None,
        }
    }

    /// Every certificate provd mints itself enters through `record_minted`: it is listed,
    /// durable and revocable; one that does not parse is refused, never handed out unrecorded.
    #[tokio::test]
    async fn a_minted_certificate_is_recorded_durably_and_an_unparsable_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        crate::pki::init(&pki, "test CA", 30, false).unwrap();
        let ca = crate::pki::Ca::load(&pki).unwrap();
        let (cert, _key) = ca.issue_client("alice", 30, true).unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        let reg = Registry::load(store.clone()).unwrap();

        let record = reg.record_minted(&cert, "alice", ADMIN_ROLE, "start").await.unwrap();
        assert_eq!((record.host.as_str(), record.role.as_str()), ("alice", ADMIN_ROLE));
        assert!(record.not_after > record.issued_at);
        drop(reg);
        let reloaded = Registry::load(store.clone()).unwrap();
        assert_eq!(reloaded.by_serial(&record.serial), Some(record.clone()));
        assert_eq!(reloaded.revoke_identity("alice", 1).await.unwrap().len(), 1);

        let garbage = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
        for pem in [garbage, "", "not pem at all"] {
            match reloaded.record_minted(pem, "mallory", ADMIN_ROLE, "start").await {
                Err(RegistryError::Unparsable(e)) => assert_eq!(e.name, "mallory"),
                other => panic!("{pem:?}: {other:?}"),
            }
        }
        assert_eq!(
            reloaded.certificates().len(),
            1,
            "nothing recorded for a refused certificate"
        );
    }

    #[tokio::test]
    async fn revocation_is_durable_and_names_only_live_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reg = Registry::load(store.clone()).unwrap();
        reg.issued(record("01", "hv1", "server", 1000)).await.unwrap();
        reg.issued(record("02", "hv1", "client", 1000)).await.unwrap();
        reg.issued(record("03", "hv2", "client", 1000)).await.unwrap();
        reg.issued(record("04", "hv1", "client", 50)).await.unwrap(); // expired at 100

        let revoked = reg.revoke("hv1", Some(Role::Client), 100).await.unwrap();
        assert_eq!(revoked.iter().map(|c| c.serial.as_str()).collect::<Vec<_>>(), ["02"]);
        assert_eq!(reg.revoked(100), vec![("02".to_string(), 100)]);
        // A second revoke changes nothing; the whole host takes the server one too.
        assert!(reg.revoke("hv1", Some(Role::Client), 200).await.unwrap().is_empty());
        assert_eq!(reg.revoke("hv1", None, 200).await.unwrap().len(), 1);
        // Expired certificates leave the CRL.
        assert!(reg.revoked(1000).is_empty());

        drop(reg);
        let again = Registry::load(store).unwrap();
        let states: Vec<(String, CertState)> = again
            .certificates()
            .iter()
            .map(|c| (c.serial.clone(), c.state(300)))
            .collect();
        assert_eq!(
            states,
            [
                ("01".into(), CertState::Revoked),
                ("02".into(), CertState::Revoked),
                ("03".into(), CertState::Valid),
                ("04".into(), CertState::Expired)
            ]
        );
        assert_eq!(again.current("hv2", Role::Client, "key-03", 300).unwrap().serial, "03");
        assert!(again.current("hv2", Role::Client, "key-other", 300).is_none());
        assert!(again.current("hv1", Role::Server, "key-01", 300).is_none(), "revoked");
    }

    #[tokio::test]
    async fn requests_survive_a_restart_and_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let reg = Registry::load(store.clone()).unwrap();
        let req = CsrRequest {
            host: "hv1".into(),
            role: "server".into(),
            csr: "pem".into(),
            token: "t".into(),
            from: Ipv4Addr::new(10, 0, 0, 5),
            asked_at: 7,
            decision: Decision::Waiting,
        };
        reg.put_request(req.clone()).await.unwrap();
        let again = Registry::load(store.clone()).unwrap();
        assert_eq!(again.request("hv1", Role::Server), Some(req));
        again.remove_request("hv1", Role::Server).await.unwrap();
        assert!(Registry::load(store).unwrap().requests().is_empty());
    }

    #[test]
    fn a_revocation_on_either_side_stands() {
        let c = CertRecord {
            serial: "01".into(),
            host: "h".into(),
            role: "client".into(),
            issued_at: 1,
            not_after: 100,
            key_id: "k".into(),
            how: "install".into(),
            revoked_at: None,
        };
        let revoked = CertRecord {
            revoked_at: Some(50),
            ..c.clone()
        };
        assert_eq!(CertRecord::merge(&c, &revoked).revoked_at, Some(50));
        assert_eq!(CertRecord::merge(&revoked, &c).revoked_at, Some(50));
        let earlier = CertRecord {
            revoked_at: Some(40),
            ..c.clone()
        };
        assert_eq!(CertRecord::merge(&revoked, &earlier).revoked_at, Some(40));
    }
}
