//! The region's two-tier trust, as files in `<state_dir>/pki`:
//!
//! - `ca-cert.pem`, `ca-key.pem` (0600): the region's root (`provd region init`), which
//!   may certify one CA below it.
//! - `client/`: the region's own admin certificate, issued by the root (OU `provd admin`).
//!   Sites list the root as `[daemon] region_ca`, so this certificate opens their admin
//!   APIs: the region follows their feeds and forwards operators' writes with it.
//! - `sites/NAME.pem`: site NAME's CA, cross-signed by the root (`provd region add-site`):
//!   the site keeps its key and every certificate it issued. The region trusts that site's
//!   admin listener through this certificate only (a site cannot answer for another), and
//!   anyone who trusts the root can verify the site's certificates through it.
//! - `revoked.json` and `crl.pem`: sites whose cross-certificate the region revoked
//!   (`provd region revoke-site`); the region stops following and forwarding to them at
//!   once, and the CRL (signed by the root) names the certificate for everyone else. The
//!   followers hand it to every site they follow (`follow::deliver_crl`), whose
//!   hypervisors take it from there; `current_crl` signs it again before it runs out.
//!
//! Rollover: a new root (`init --force` in a new state directory), every site added again
//! (`add-site` cross-signs with the new root), both roots in the sites' `region_ca` file
//! until the old one is retired; sites' own CAs and hypervisors are untouched.

use crate::pki::{self, Ca, PkiError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const CLIENT_DIR: &str = "client";
const SITES_DIR: &str = "sites";
const REVOKED: &str = "revoked.json";
pub const CRL: &str = "crl.pem";
/// How long a cross-certificate and the region's client certificate last.
const DAYS: i64 = 825;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("site {0} is not certified by this region: run `provd region add-site {0} --ca SITE-CA.pem`")]
    NotAdded(String),
    #[error("site {site}'s certificate {serial} was revoked at the region ({at}): the region does not follow it")]
    Revoked { site: String, serial: String, at: String },
    #[error("the region's TLS material in {path}: {why}")]
    Unusable { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustError + '_ {
    move |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Revocation {
    pub site: String,
    pub serial: String,
    pub at: u64,
}

/// A CRL is signed again when it has less than this left (hypervisors take a new list
/// when theirs has 7 days left; this leaves the sites time to pass it on).
const CRL_RESIGN_SECS: i64 = 10 * 86_400;

/// The region's certificates, read from its pki directory when asked (so a revocation or
/// a newly added site counts at the next request, without a restart).
pub struct Trust {
    dir: PathBuf,
    /// One signer of `crl.pem` at a time within this process (the followers share it).
    crl_signing: std::sync::Mutex<()>,
}

impl Trust {
    pub fn new(dir: PathBuf) -> Trust {
        Trust {
            dir,
            crl_signing: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Make the root and the region's client certificate (`provd region init`).
    pub fn init(&self, region: &str, force: bool) -> Result<(), TrustError> {
        pki::init_root(&self.dir, &format!("provd region {region}"), 3650, force)?;
        let ca = Ca::load(&self.dir)?;
        let (cert, key) = ca.issue_client(&format!("region {region}"), DAYS, true)?;
        pki::write_client(&self.dir.join(CLIENT_DIR), &ca, &cert, &key)?;
        Ok(())
    }

    /// Cross-sign site `site`'s CA (PEM) and keep it as the site's trust anchor. Adding a
    /// site again (a new CA, a new root) replaces the old certificate.
    pub fn add_site(&self, site: &str, site_ca_pem: &str) -> Result<(String, String), TrustError> {
        let ca = Ca::load(&self.dir)?;
        let (pem, serial) = ca.cross_sign(site_ca_pem, DAYS)?;
        let dir = self.dir.join(SITES_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{site}.pem"));
        std::fs::write(&path, &pem).map_err(io(&path))?;
        Ok((pem, serial))
    }

    /// Revoke site `site`'s cross-certificate: the region stops following it, and the
    /// CRL names it. Returns the serial revoked.
    pub fn revoke_site(&self, site: &str, now: u64) -> Result<String, TrustError> {
        let serial = self.site_serial(site)?;
        let mut revoked = self.revocations()?;
        if !revoked.iter().any(|r| r.serial == serial) {
            revoked.push(Revocation {
                site: site.to_string(),
                serial: serial.clone(),
                at: now,
            });
        }
        let path = self.dir.join(REVOKED);
        let json = serde_json::to_vec_pretty(&revoked).expect("revocations serialize");
        std::fs::write(&path, json).map_err(io(&path))?;
        let _one = self.crl_signing.lock().unwrap();
        self.sign_crl(&revoked, time::OffsetDateTime::now_utc())?;
        Ok(serial)
    }

    /// Sign the CRL naming `revoked` and put it in place whole (a follower reading it
    /// meanwhile sees the old list or the new one).
    fn sign_crl(&self, revoked: &[Revocation], now: time::OffsetDateTime) -> Result<String, TrustError> {
        let ca = Ca::load(&self.dir)?;
        let list: Vec<(String, i64)> = revoked.iter().map(|r| (r.serial.clone(), r.at as i64)).collect();
        let (tmp, path) = (self.dir.join(format!("{CRL}.new")), self.dir.join(CRL));
        // Above the last list's number, or the sites would keep the last one.
        let previous = std::fs::read_to_string(&path).ok().and_then(|p| pki::crl_number(&p));
        let crl = ca.crl_numbered(&list, now, pki::next_crl_number(previous, now))?;
        std::fs::write(&tmp, &crl).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(crl)
    }

    /// The region's CRL as the sites should have it: None while nothing was revoked; the
    /// list in `crl.pem`, signed again first when it has less than `CRL_RESIGN_SECS` left
    /// (or is missing or unreadable).
    pub fn current_crl(&self, now: time::OffsetDateTime) -> Result<Option<String>, TrustError> {
        let revoked = self.revocations()?;
        if revoked.is_empty() {
            return Ok(None);
        }
        let _one = self.crl_signing.lock().unwrap();
        let path = self.dir.join(CRL);
        if let Ok(pem) = std::fs::read_to_string(&path)
            && crl_next_update(&pem).is_some_and(|next| next - now.unix_timestamp() > CRL_RESIGN_SECS)
        {
            return Ok(Some(pem));
        }
        self.sign_crl(&revoked, now).map(Some)
    }

    pub fn revocations(&self) -> Result<Vec<Revocation>, TrustError> {
        let path = self.dir.join(REVOKED);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TrustError::Unusable {
                path,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn site_pem(&self, site: &str) -> Result<String, TrustError> {
        let path = self.dir.join(SITES_DIR).join(format!("{site}.pem"));
        match std::fs::read_to_string(&path) {
            Ok(p) => Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(TrustError::NotAdded(site.to_string())),
            Err(e) => Err(io(&path)(e)),
        }
    }

    fn site_serial(&self, site: &str) -> Result<String, TrustError> {
        let pem = self.site_pem(site)?;
        let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| TrustError::Unusable {
            path: self.dir.join(SITES_DIR),
            why: e.to_string(),
        })?;
        pki::serial_of_der(&parsed.contents).ok_or_else(|| TrustError::Unusable {
            path: self.dir.join(SITES_DIR),
            why: format!("{site}.pem is not a certificate"),
        })
    }

    /// The TLS client configuration for talking to `site`: its cross-certificate as the
    /// only trust anchor, the region's admin certificate as the credential. Refused when
    /// the site was never added or its certificate is revoked.
    pub fn site_tls(&self, site: &str) -> Result<ureq::tls::TlsConfig, TrustError> {
        use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};
        let serial = self.site_serial(site)?;
        if let Some(r) = self.revocations()?.into_iter().find(|r| r.serial == serial) {
            return Err(TrustError::Revoked {
                site: site.to_string(),
                serial,
                at: crate::clock::rfc3339(r.at),
            });
        }
        let unusable = |path: &Path, e: &dyn std::fmt::Display| TrustError::Unusable {
            path: path.to_path_buf(),
            why: e.to_string(),
        };
        let anchor_pem = self.site_pem(site)?;
        let anchor = Certificate::from_pem(anchor_pem.as_bytes())
            .map_err(|e| unusable(&self.dir.join(SITES_DIR), &e))?
            .to_owned();
        let client = self.dir.join(CLIENT_DIR);
        let read = |name: &str| std::fs::read(client.join(name)).map_err(io(&client));
        let cert = Certificate::from_pem(&read("clientcert.pem")?)
            .map_err(|e| unusable(&client, &e))?
            .to_owned();
        let key = PrivateKey::from_pem(&read("clientkey.pem")?)
            .map_err(|e| unusable(&client, &e))?
            .to_owned();
        Ok(TlsConfig::builder()
            .root_certs(RootCerts::new_with_certs(&[anchor]))
            .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
            .build())
    }
}

/// A PEM CRL's next update (unix seconds), if it parses.
fn crl_next_update(pem: &str) -> Option<i64> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents).ok()?;
    Some(crl.next_update()?.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_site_accepts_only_its_own_cross_certificate_from_its_region() {
        let d = tempfile::tempdir().unwrap();
        let (eu, us) = (Trust::new(d.path().join("eu")), Trust::new(d.path().join("us")));
        eu.init("eu", false).unwrap();
        us.init("us", false).unwrap();
        let ca = |name: &str| {
            pki::init(&d.path().join(name), &format!("provd {name}"), 30, false).unwrap();
            Ca::load(&d.path().join(name)).unwrap()
        };
        let (dc1, dc2) = (ca("dc1"), ca("dc2"));
        let (cross, _) = eu.add_site("dc1", dc1.cert_pem()).unwrap();
        let root = |t: &Trust| std::fs::read_to_string(t.dir().join(pki::CA_CERT)).unwrap();
        pki::check_cross_certificate(dc1.cert_pem(), &cross, &root(&eu)).unwrap();
        let e = pki::check_cross_certificate(dc2.cert_pem(), &cross, &root(&eu)).unwrap_err();
        assert!(e.to_string().contains("not for this site's CA"), "{e}");
        let e = pki::check_cross_certificate(dc1.cert_pem(), &cross, &root(&us)).unwrap_err();
        assert!(e.to_string().contains("not by the region's root"), "{e}");
        assert!(pki::check_cross_certificate(dc1.cert_pem(), "junk", &root(&eu)).is_err());
    }

    /// openssl, a peer nobody here wrote, agrees that a site's leaf chains to the region's
    /// root through the cross-certificate, and stops agreeing once the CRL names it.
    #[test]
    fn a_site_leaf_verifies_against_the_root_through_its_cross_certificate() {
        if std::process::Command::new("openssl").arg("version").output().is_err() {
            eprintln!("skipped: no openssl");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let trust = Trust::new(d.path().join("region"));
        trust.init("eu", false).unwrap();
        assert!(matches!(
            trust.init("eu", false),
            Err(TrustError::Pki(PkiError::Exists(_)))
        ));
        let site_dir = d.path().join("site");
        pki::init(&site_dir, "provd dc1", 30, false).unwrap();
        let site = Ca::load(&site_dir).unwrap();
        let (leaf, _) = site.issue_client("alice", 30, false).unwrap();
        let (cross, serial) = trust.add_site("dc1", site.cert_pem()).unwrap();
        let write = |n: &str, t: &str| {
            let p = d.path().join(n);
            std::fs::write(&p, t).unwrap();
            p
        };
        let (leaf_p, cross_p) = (write("leaf.pem", &leaf), write("cross.pem", &cross));
        let root_p = trust.dir().join(pki::CA_CERT);
        let verify = |extra: &[&str]| {
            std::process::Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(&root_p)
                .arg("-untrusted")
                .arg(&cross_p)
                .args(extra)
                .arg(&leaf_p)
                .output()
                .unwrap()
        };
        let ok = verify(&[]);
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stdout) + String::from_utf8_lossy(&ok.stderr)
        );
        // Without the cross-certificate the root knows nothing of the site.
        let alone = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&root_p)
            .arg(&leaf_p)
            .output()
            .unwrap();
        assert!(!alone.status.success());
        assert!(trust.site_tls("dc1").is_ok());
        assert!(matches!(trust.site_tls("dc2"), Err(TrustError::NotAdded(_))));
        assert_eq!(trust.revoke_site("dc1", 1_700_000_000).unwrap(), serial);
        assert!(matches!(trust.site_tls("dc1"), Err(TrustError::Revoked { .. })));
        // The CRL, signed by the root, revokes the cross-certificate for openssl too.
        let mut root_and_crl = std::fs::read_to_string(&root_p).unwrap();
        root_and_crl.push_str(&std::fs::read_to_string(trust.dir().join(CRL)).unwrap());
        let bundle = write("root-crl.pem", &root_and_crl);
        let refused = std::process::Command::new("openssl")
            .args(["verify", "-crl_check", "-CAfile"])
            .arg(&bundle)
            .arg(&cross_p)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&refused.stdout) + String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && said.contains("revoked"), "{said}");
    }

    /// Nothing revoked, no list; a revocation's list is handed out as signed until it
    /// nears its next update, then signed again (a higher number, the same serials).
    #[test]
    fn the_crl_is_signed_again_before_it_runs_out() {
        use crate::pki::region_crl::check;
        let d = tempfile::tempdir().unwrap();
        let trust = Trust::new(d.path().join("region"));
        trust.init("eu", false).unwrap();
        let now = time::OffsetDateTime::now_utc();
        assert_eq!(trust.current_crl(now).unwrap(), None);
        let site = d.path().join("dc1");
        pki::init(&site, "provd dc1", 30, false).unwrap();
        let (_, serial) = trust.add_site("dc1", Ca::load(&site).unwrap().cert_pem()).unwrap();
        trust.revoke_site("dc1", 1_800_000_000).unwrap();
        let root = std::fs::read_to_string(trust.dir().join(pki::CA_CERT)).unwrap();
        let first = trust.current_crl(now).unwrap().unwrap();
        assert_eq!(
            trust.current_crl(now + time::Duration::days(19)).unwrap().as_ref(),
            Some(&first)
        );
        let later = now + time::Duration::days(21);
        let second = trust.current_crl(later).unwrap().unwrap();
        assert_ne!(second, first);
        let (a, b) = (check(&first, &root).unwrap(), check(&second, &root).unwrap());
        assert!(b.number > a.number, "{a:?} {b:?}");
        assert_eq!((a.revoked, b.revoked.clone()), (vec![serial.clone()], vec![serial]));
        assert_eq!(std::fs::read_to_string(trust.dir().join(CRL)).unwrap(), second);
        // Two revocations in one second still count up (the sites keep only a higher one).
        let (_, other) = trust.add_site("dc2", Ca::load(&site).unwrap().cert_pem()).unwrap();
        trust.revoke_site("dc2", 1_800_000_001).unwrap();
        let third = check(&std::fs::read_to_string(trust.dir().join(CRL)).unwrap(), &root).unwrap();
        assert!(third.number > check(&second, &root).unwrap().number);
        assert!(third.revoked.contains(&other));
    }
}
