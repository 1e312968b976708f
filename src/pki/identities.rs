//! provd's own certificates, kept in the registry like every other (so `provd pki list`
//! shows them and `provd pki revoke NAME` revokes them): the pool's libvirt client identity,
//! made once and renewed before it expires (not per start), and the records of what
//! `provd pki issue-client` made from the command line (`registry::INBOX`), imported.

use super::registry::{POOL_ROLE, Registry, RegistryError};
use super::{Ca, PkiError};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The pool identity is renewed when it has less than this left (or is revoked, or was
/// not signed by the current CA).
pub const RENEW_BEFORE_SECONDS: i64 = 30 * 86400;

/// Why the pool identity on disk cannot be kept, or None when it can.
fn replace_reason(dir: &Path, ca: &Ca, registry: &Registry, now: i64) -> Option<String> {
    let pem = match std::fs::read_to_string(dir.join("clientcert.pem")) {
        Ok(p) => p,
        Err(_) => return Some("none yet".into()),
    };
    if !dir.join("clientkey.pem").exists() {
        return Some("its key is missing".into());
    }
    let Ok((_, parsed)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return Some("it does not parse".into());
    };
    let Ok(cert) = parsed.parse_x509() else {
        return Some("it does not parse".into());
    };
    let signed_by_ca = x509_parser::pem::parse_x509_pem(ca.cert_pem().as_bytes())
        .ok()
        .is_some_and(|(_, ca_pem)| {
            ca_pem
                .parse_x509()
                .is_ok_and(|ca_cert| cert.verify_signature(Some(ca_cert.public_key())).is_ok())
        });
    if !signed_by_ca {
        return Some("it was not signed by the current CA".into());
    }
    let serial = super::serial_of_der(&parsed.contents).unwrap_or_default();
    match registry.by_serial(&serial) {
        Some(r) if r.revoked_at.is_some() => return Some("it is revoked".into()),
        None => return Some("the registry does not know it".into()),
        Some(_) => {}
    }
    let left = cert.validity().not_after.timestamp() - now;
    (left < RENEW_BEFORE_SECONDS).then(|| format!("it expires in {} days", left / 86400))
}

/// Why the pool's identity could not be kept or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("recording it: {0}")]
    Registry(#[from] RegistryError),
}

/// provd's libvirt client credentials for the pool (`cacert.pem`, `clientcert.pem`,
/// `clientkey.pem` 0600) in `<state_dir>/pool-pki`: kept across starts while valid, made
/// (and the previous one revoked) when missing, expiring, revoked or from another CA. The
/// certificate is `O=<CA>,CN=<cn>`, which hypervisors allow as provd's pool.
pub async fn pool_identity(ca: &Ca, registry: &Registry, state_dir: &Path, cn: &str) -> Result<PathBuf, IdentityError> {
    let dir = state_dir.join("pool-pki");
    let now = crate::clock::unix_now() as i64;
    let Some(why) = replace_reason(&dir, ca, registry, now) else {
        // The CA file may have been replaced by an identical copy: keep it current.
        let ca_file = dir.join("cacert.pem");
        std::fs::write(&ca_file, ca.cert_pem()).map_err(|source| {
            IdentityError::Pki(PkiError::Io {
                path: ca_file.clone(),
                source,
            })
        })?;
        return Ok(dir);
    };
    let (cert, key) = ca.issue_pool_client(cn, super::DEFAULT_LEAF_DAYS)?;
    let record = registry.record_minted(&cert, cn, POOL_ROLE, "pool").await?;
    super::write_client(&dir, ca, &cert, &key)?;
    // The one it replaces (any other valid pool identity of this name) is revoked.
    for old in registry.certificates() {
        if old.role == POOL_ROLE && old.host == cn && old.serial != record.serial && old.revoked_at.is_none() {
            registry.revoke_serial(&old.serial, now).await?;
        }
    }
    tracing::info!("pool identity {cn:?} made (serial {}): {why}", record.serial);
    Ok(dir)
}

/// Import the inbox of `pki_dir` now and every few seconds until `stop`.
pub async fn import_inbox_periodically(
    registry: std::sync::Arc<Registry>,
    pki_dir: PathBuf,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = None;
    loop {
        let modified = std::fs::metadata(pki_dir.join(super::registry::INBOX))
            .and_then(|m| m.modified())
            .ok();
        if modified.is_some() && modified != seen {
            match registry.import_inbox(&pki_dir).await {
                Ok(0) => {}
                Ok(n) => tracing::info!("pki: {n} certificate record(s) from `provd pki issue-client` imported"),
                Err(RegistryError::Gone) => return,
                Err(e) => tracing::error!("pki: importing {}: {e}", super::registry::INBOX),
            }
            seen = modified;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::registry::CertRecord;

    #[tokio::test]
    async fn the_pool_identity_is_kept_across_starts_and_replaced_when_revoked_or_from_another_ca() {
        let d = tempfile::tempdir().unwrap();
        let pki = d.path().join("pki");
        crate::pki::init(&pki, "provd", 3650, false).unwrap();
        let ca = Ca::load(&pki).unwrap();
        let registry = Registry::load(crate::store::Store::open(&d.path().join("state")).unwrap()).unwrap();
        let state = d.path().join("state");
        let serial = |dir: &Path| {
            let pem = std::fs::read_to_string(dir.join("clientcert.pem")).unwrap();
            CertRecord::minted(&pem, "x", "x", "x", 0).unwrap().serial
        };
        let dir = pool_identity(&ca, &registry, &state, "provd").await.unwrap();
        let first = serial(&dir);
        assert_eq!(registry.by_serial(&first).unwrap().role, POOL_ROLE);
        // A second start keeps it.
        pool_identity(&ca, &registry, &state, "provd").await.unwrap();
        assert_eq!(serial(&dir), first, "made once, not per start");
        assert_eq!(registry.certificates().len(), 1);
        // Revoked: replaced at the next start.
        registry.revoke_identity("provd", 10).await.unwrap();
        pool_identity(&ca, &registry, &state, "provd").await.unwrap();
        let second = serial(&dir);
        assert_ne!(second, first);
        // A new CA (`provd pki init --force`): replaced, and the old one revoked.
        crate::pki::init(&pki, "provd", 3650, true).unwrap();
        let ca2 = Ca::load(&pki).unwrap();
        pool_identity(&ca2, &registry, &state, "provd").await.unwrap();
        assert_ne!(serial(&dir), second);
        assert!(registry.by_serial(&second).unwrap().revoked_at.is_some());
    }

    #[tokio::test]
    async fn records_of_the_command_lines_certificates_are_imported_once() {
        let d = tempfile::tempdir().unwrap();
        crate::pki::init(d.path(), "provd", 30, false).unwrap();
        let ca = Ca::load(d.path()).unwrap();
        let registry = Registry::load(crate::store::Store::open(&d.path().join("state")).unwrap()).unwrap();
        let (cert, _) = ca.issue_client("alice", 30, true).unwrap();
        let record = CertRecord::minted(&cert, "alice", super::super::registry::ADMIN_ROLE, "issue-client", 5).unwrap();
        super::super::registry::append_inbox(d.path(), &record).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(d.path().join(super::super::registry::INBOX))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"{torn"))
            .unwrap();
        assert_eq!(registry.import_inbox(d.path()).await.unwrap(), 1);
        assert_eq!(registry.import_inbox(d.path()).await.unwrap(), 0, "once");
        assert_eq!(registry.by_serial(&record.serial), Some(record));
    }
}
