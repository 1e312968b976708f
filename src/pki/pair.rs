//! Mutual TLS between the two provds of a site's pair: the replication link, and the
//! failover conversation when `[sites.X.failover] tls = true`. Each side presents a
//! certificate with OU "provd replication site NAME", made from the CA at start (and
//! recorded in the registry); each checks the other's chains to its own CA (so both hold
//! the same CA), carries that OU (so a hypervisor's or an operator's certificate from the
//! same CA is refused) and is not revoked (the registry, asked per connection).

use super::Ca;
use super::registry::Registry;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PairTlsError {
    #[error("the pair's certificate: {0}")]
    Pki(#[from] super::PkiError),
    #[error("the pair's TLS: {0}")]
    Rustls(String),
}

fn tls_failed(e: impl std::fmt::Display) -> PairTlsError {
    PairTlsError::Rustls(e.to_string())
}

/// One server's side of the pair's mutual TLS: our certificate and the CA we trust.
pub struct PairTls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// Our certificate (PEM), for the registry: every certificate provd makes is there.
    pub cert_pem: String,
}

impl PairTls {
    pub fn new(ca: &Ca, site: &str, address: IpAddr) -> Result<PairTls, PairTlsError> {
        let (cert, key) = ca.issue_replication(site, address, 30)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.cert_pem().as_bytes()) {
            roots.add(c.map_err(tls_failed)?).map_err(tls_failed)?;
        }
        let roots = Arc::new(roots);
        let chain = vec![CertificateDer::from_pem_slice(cert.as_bytes()).map_err(tls_failed)?];
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(tls_failed)?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(tls_failed)?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_failed)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(tls_failed)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(tls_failed)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(tls_failed)?;
        Ok(PairTls {
            server: Arc::new(server),
            client: Arc::new(client),
            cert_pem: cert,
        })
    }

    /// For accepting the partner (it must present a certificate).
    pub fn server(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// For dialling the partner (we present ours).
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

/// Is the verified peer chain a replication certificate of `site` that provd has not
/// revoked (`provd pki revoke`: the registry is what the CRL is made of)?
pub fn is_partner(chain: Option<&[CertificateDer<'_>]>, site: &str, registry: &Registry) -> bool {
    partner_serial(chain, site, registry).is_some()
}

/// The serial of the partner's certificate when `is_partner` holds (a long-lived link keeps
/// it, to end itself when that certificate is revoked later).
pub fn partner_serial(chain: Option<&[CertificateDer<'_>]>, site: &str, registry: &Registry) -> Option<String> {
    let leaf = chain.and_then(|c| c.first())?;
    let serial = super::serial_of_der(leaf.as_ref())?;
    if registry.is_revoked(&serial) {
        tracing::warn!("site {site}: the partner's certificate is revoked");
        return None;
    }
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let want = super::replication_unit(site);
    cert.subject()
        .iter_organizational_unit()
        .any(|ou| ou.as_str().ok() == Some(want.as_str()))
        .then_some(serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_sites_unrevoked_replication_certificates_are_partners() {
        let d = tempfile::tempdir().unwrap();
        crate::pki::init(d.path(), "provd", 30, false).unwrap();
        let ca = crate::pki::Ca::load(d.path()).unwrap();
        let registry = Registry::load(crate::store::Store::open(&d.path().join("store")).unwrap()).unwrap();
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let (partner, _) = ca.issue_replication("dc1", ip, 30).unwrap();
        let (other_site, _) = ca.issue_replication("dc2", ip, 30).unwrap();
        let (admin, _) = ca.issue_client("alice", 30, true).unwrap();
        let (libvirt, _) = ca.issue_client("provd", 30, false).unwrap();
        assert!(is_partner(Some(&[der(&partner)]), "dc1", &registry));
        for (what, c) in [
            ("another site's", other_site),
            ("an operator's", admin),
            ("a libvirt client's", libvirt),
        ] {
            assert!(
                !is_partner(Some(&[der(&c)]), "dc1", &registry),
                "{what} certificate accepted"
            );
        }
        assert!(!is_partner(None, "dc1", &registry));
        // Revoked (`provd pki revoke`): no longer the partner.
        let name = "replication dc1 10.0.0.1";
        let record = crate::pki::registry::CertRecord::minted(
            &partner,
            name,
            crate::pki::registry::REPLICATION_ROLE,
            "start",
            0,
        )
        .unwrap();
        registry.issued(record).await.unwrap();
        assert!(is_partner(Some(&[der(&partner)]), "dc1", &registry));
        assert_eq!(registry.revoke_identity(name, 1).await.unwrap().len(), 1);
        assert!(!is_partner(Some(&[der(&partner)]), "dc1", &registry));
        PairTls::new(&ca, "dc1", ip).unwrap();
    }
}
