//! The region's revocation list, as a site keeps it for its hypervisors. When the region
//! revokes a site (`provd region revoke-site`), the root's CRL names that site's
//! cross-certificate; every other site's hypervisors trust the root, so they must learn
//! it too, or they would still accept the revoked site's migration certificates. The
//! region hands the list to each site it follows (`POST /api/pki/region-crl`); the site
//! keeps it here and serves it at `/pki/region-crl.pem`, where the hypervisors' hourly
//! `refresh-crl` takes it beside the site's own list.
//!
//! The admin credential is not trusted for the contents: a list is kept only when the
//! region's root (`[daemon] region_ca`) signed it and its CRL number is higher than the
//! one kept, so neither a site operator nor a replay can un-revoke what the region revoked.
//!
//! `check` is the pure part; `RegionCrl` owns the file (one writer: the admin API).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The field of the site's 409 that names the number it keeps, when it refuses an older
/// list (the region then stops offering it).
pub const KEPT_NUMBER: &str = "kept_number";

/// What a verified list says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CrlFacts {
    /// The CRL number (provd: the signing time), which only grows.
    pub number: u64,
    /// The revoked serials, lowercase hex as the registry writes them.
    pub revoked: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RegionCrlError {
    #[error("this site has no region ([daemon] region_ca is not set): there is no region list to keep")]
    NoRegion,
    #[error("not the region's revocation list: {0}")]
    Invalid(String),
    #[error("an older list: its number ({offered}) is not higher than the one this site keeps ({kept})")]
    Older { offered: u64, kept: u64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Verify `crl_pem` against the region's root (`root_pem`): a PEM CRL the root issued and
/// signed, with a CRL number.
pub fn check(crl_pem: &str, root_pem: &str) -> Result<CrlFacts, RegionCrlError> {
    use x509_parser::prelude::FromDer;
    use x509_parser::revocation_list::CertificateRevocationList;
    let invalid = |why: String| RegionCrlError::Invalid(why);
    let (_, root) = x509_parser::pem::parse_x509_pem(root_pem.as_bytes())
        .map_err(|e| invalid(format!("the region's root is not a PEM certificate: {e}")))?;
    let root = root
        .parse_x509()
        .map_err(|e| invalid(format!("the region's root: {e}")))?;
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(crl_pem.as_bytes()).map_err(|e| invalid(format!("not PEM: {e}")))?;
    if pem.label != "X509 CRL" {
        return Err(invalid(format!("a PEM {:?}, not an X509 CRL", pem.label)));
    }
    let (_, crl) = CertificateRevocationList::from_der(&pem.contents).map_err(|e| invalid(format!("{e}")))?;
    if crl.issuer().as_raw() != root.subject().as_raw() {
        return Err(invalid(format!(
            "issued by {}, not by the region's root ({})",
            crl.issuer(),
            root.subject()
        )));
    }
    crl.verify_signature(root.public_key())
        .map_err(|e| invalid(format!("its signature does not verify with the region's root: {e}")))?;
    let number =
        super::number_of(&crl).ok_or_else(|| invalid("it has no CRL number, or one larger than 64 bits".into()))?;
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| super::hex(r.raw_serial()))
        .collect();
    Ok(CrlFacts { number, revoked })
}

/// What `RegionCrl::offer` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Offered {
    /// The list is kept now.
    Kept(CrlFacts),
    /// The site already keeps this list (the region sent it again).
    AlreadyKept(CrlFacts),
}

/// The list this site keeps: `<state_dir>/region-crl.pem`.
pub struct RegionCrl {
    path: PathBuf,
    /// The region's root; None: this site is in no region.
    root: Option<String>,
    kept: Mutex<Option<(CrlFacts, String)>>,
}

/// Where a site keeps the region's list.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("region-crl.pem")
}

impl RegionCrl {
    /// The kept list at `path`, if any. One that no longer verifies against `root` (the
    /// region's root was replaced) is not served.
    pub fn load(path: PathBuf, root: Option<String>) -> RegionCrl {
        let kept = match (&root, std::fs::read_to_string(&path)) {
            (Some(root), Ok(pem)) => match check(&pem, root) {
                Ok(facts) => Some((facts, pem)),
                Err(e) => {
                    tracing::warn!("{}: {e}; not served", path.display());
                    None
                }
            },
            _ => None,
        };
        RegionCrl {
            path,
            root,
            kept: Mutex::new(kept),
        }
    }

    /// The list to serve, if the site keeps one.
    pub fn pem(&self) -> Option<String> {
        self.kept.lock().unwrap().as_ref().map(|(_, pem)| pem.clone())
    }

    /// Keep `pem` if the region's root signed it and it is newer than the kept one.
    pub fn offer(&self, pem: &str) -> Result<Offered, RegionCrlError> {
        let root = self.root.as_deref().ok_or(RegionCrlError::NoRegion)?;
        let facts = check(pem, root)?;
        let mut kept = self.kept.lock().unwrap();
        if let Some((held, held_pem)) = kept.as_ref() {
            if held.number == facts.number && held_pem == pem {
                return Ok(Offered::AlreadyKept(facts));
            }
            if facts.number <= held.number {
                return Err(RegionCrlError::Older {
                    offered: facts.number,
                    kept: held.number,
                });
            }
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| RegionCrlError::Io { path, source }
        };
        // Written beside and renamed: a reader sees the old list or the new, never half.
        let tmp = self.path.with_extension("pem.new");
        std::fs::write(&tmp, pem).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        *kept = Some((facts.clone(), pem.to_string()));
        Ok(Offered::Kept(facts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, Ca};
    use time::OffsetDateTime;

    fn ca(dir: &Path, name: &str) -> Ca {
        pki::init(dir, name, 30, false).unwrap();
        Ca::load(dir).unwrap()
    }

    #[test]
    fn only_the_roots_newer_lists_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let root = ca(&d.path().join("root"), "provd region eu");
        let site = ca(&d.path().join("site"), "provd dc1");
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let first = root.crl(&[("0a1b".into(), 1_799_999_000)], t0).unwrap();
        let second = root
            .crl(
                &[("0a1b".into(), 1_799_999_000), ("0c".into(), 1_800_000_500)],
                t0 + time::Duration::seconds(600),
            )
            .unwrap();

        let facts = check(&first, root.cert_pem()).unwrap();
        assert_eq!(facts.number, 1_800_000_000);
        assert_eq!(facts.revoked, ["0a1b"]);
        // The site's own list, or one offered against another root, is not the region's.
        let forged = site.crl(&[], t0 + time::Duration::seconds(900)).unwrap();
        let e = check(&forged, root.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("not by the region's root"), "{e}");
        let e = check(&first, site.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("not by the region's root"), "{e}");
        assert!(matches!(
            check("junk", root.cert_pem()),
            Err(RegionCrlError::Invalid(_))
        ));
        let e = check(root.cert_pem(), root.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("not an X509 CRL"), "{e}");
        // A list whose signature was tampered with.
        let mut der = x509_parser::pem::parse_x509_pem(first.as_bytes()).unwrap().1.contents;
        let last = der.len() - 1;
        der[last] ^= 1;
        let tampered = pem_of(&der);
        let e = check(&tampered, root.cert_pem()).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");

        let path = d.path().join("state/region-crl.pem");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let none = RegionCrl::load(path.clone(), None);
        assert!(matches!(none.offer(&first), Err(RegionCrlError::NoRegion)));

        let kept = RegionCrl::load(path.clone(), Some(root.cert_pem().to_string()));
        assert_eq!(kept.pem(), None);
        assert!(matches!(kept.offer(&first), Ok(Offered::Kept(_))));
        assert!(matches!(kept.offer(&first), Ok(Offered::AlreadyKept(_))));
        assert!(matches!(kept.offer(&second), Ok(Offered::Kept(f)) if f.revoked.len() == 2));
        // The older list again (a replay): refused, and the newer one stays.
        let e = kept.offer(&first).unwrap_err();
        assert!(matches!(e, RegionCrlError::Older { .. }), "{e}");
        assert!(matches!(kept.offer(&forged), Err(RegionCrlError::Invalid(_))));
        assert_eq!(kept.pem().as_deref(), Some(second.as_str()));
        // A restart serves what was kept; under another root it serves nothing.
        let again = RegionCrl::load(path.clone(), Some(root.cert_pem().to_string()));
        assert_eq!(again.pem().as_deref(), Some(second.as_str()));
        let other = RegionCrl::load(path, Some(site.cert_pem().to_string()));
        assert_eq!(other.pem(), None);
    }

    fn pem_of(der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            lines.join("\n")
        )
    }
}
