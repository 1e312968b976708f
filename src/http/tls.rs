//! HTTPS for the admin listener (`[daemon] api_tls = true`): provd's CA signs a fresh server
//! certificate for the listener at every start (the key lives in memory only), and clients
//! may present a certificate from the same CA. A client certificate is a credential only
//! when its subject carries OU=`pki::ADMIN_UNIT` (`provd pki issue-client NAME --admin`):
//! hypervisors hold client certificates from this CA too (OU "site X"), and those must not
//! open the admin API. Without a certificate, the bearer token still works over HTTPS.

use crate::pki::{ADMIN_UNIT, Ca};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::sync::Arc;

/// The operator a verified client certificate names (its CN), when it is an admin one,
/// with the certificate's serial (checked against revocations on every request).
#[derive(Debug, Clone)]
pub struct Operator(pub String, pub String);

/// The request came over TLS (the admin listener with `api_tls`): cookies set in answer
/// to it are `Secure`.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("admin API TLS: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error("admin API TLS: {0}")]
    Rustls(String),
}

fn rustls_failed(e: impl std::fmt::Display) -> TlsError {
    TlsError::Rustls(e.to_string())
}

/// The admin listener's TLS configuration: a server certificate for `names` and
/// `addresses`, and client certificates from the CA (or from `region_root`, the region's
/// root certificate PEM, `[daemon] region_ca`) verified but optional.
/// Also returns the listener's certificate (PEM), for the registry.
pub fn server_config(
    ca: &Ca,
    names: &[String],
    addresses: &[IpAddr],
    region_root: Option<&str>,
) -> Result<(Arc<rustls::ServerConfig>, String), TlsError> {
    let (cert_pem, key_pem) = ca.issue_server(names, addresses, 30)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for pem in std::iter::once(ca.cert_pem()).chain(region_root) {
        for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(c.map_err(rustls_failed)?).map_err(rustls_failed)?;
        }
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(rustls_failed)?;
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(rustls_failed)?];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(rustls_failed)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rustls_failed)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(rustls_failed)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert_pem))
}

/// The operator named by a verified peer chain, if its leaf is an admin certificate
/// issued directly by a root this listener trusts (provd's CA or the region's root). A
/// chain that needed an intermediate CA (one not self-signed) names nobody: another site's
/// CA, cross-signed by the region so that hypervisors trust its migrations, must not make
/// that site's operators administrators here. (A client may send its own self-signed CA
/// after its certificate, as curl does with a bundle; that changes nothing.)
pub fn operator(chain: Option<&[CertificateDer<'_>]>) -> Option<Operator> {
    let chain = chain?;
    let through_intermediate = chain.iter().skip(1).any(|c| {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map(|(_, c)| c.is_ca() && c.issuer().as_raw() != c.subject().as_raw())
            .unwrap_or(true)
    });
    if through_intermediate {
        return None;
    }
    let leaf = chain.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let subject = cert.subject();
    let admin = subject
        .iter_organizational_unit()
        .any(|ou| ou.as_str().ok() == Some(ADMIN_UNIT));
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let serial = crate::pki::serial_of_der(leaf.as_ref())?;
    admin.then_some(Operator(name, serial))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admin_certificates_name_an_operator() {
        let d = tempfile::tempdir().unwrap();
        crate::pki::init(d.path(), "provd", 30, false).unwrap();
        let ca = Ca::load(d.path()).unwrap();
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (admin, _) = ca.issue_client("alice", 30, true).unwrap();
        let (plain, _) = ca.issue_client("provd", 30, false).unwrap();
        assert_eq!(operator(Some(&[der(&admin)])).map(|o| o.0).as_deref(), Some("alice"));
        assert!(operator(Some(&[der(&plain)])).is_none());
        assert!(operator(None).is_none());
        assert!(
            operator(Some(&[der(&admin), der(ca.cert_pem())])).is_some(),
            "its own CA sent along changes nothing"
        );
        // The same CA cross-signed by a region's root: an intermediate, so nobody.
        crate::pki::init_root(&d.path().join("root"), "region", 30, false).unwrap();
        let root = Ca::load(&d.path().join("root")).unwrap();
        let (cross, _) = root.cross_sign(ca.cert_pem(), 30).unwrap();
        assert!(
            operator(Some(&[der(&admin), der(&cross)])).is_none(),
            "a chain through a cross-signed CA names no operator"
        );
        server_config(&ca, &["provd.example".into()], &["10.0.0.1".parse().unwrap()], None).unwrap();
    }
}
