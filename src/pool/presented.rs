//! Which certificate a hypervisor presents on its libvirt TLS port, read by provd itself
//! (libvirt's client API does not say): a TLS handshake with the pool's own credentials,
//! verified against provd's CA, and the leaf's serial. The pool then asks its registry
//! whether that serial is a valid server certificate of *this* host: a certificate the CA
//! signed for another host, or one provd revoked, is not good enough, whatever libvirt's
//! own checks (CA signature and, only after a CRL refresh, revocation) would say.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// libvirt's TLS port.
pub const LIBVIRT_TLS_PORT: u16 = 16514;

fn client_config(pki_dir: &Path) -> Result<rustls::ClientConfig, String> {
    let read = |f: &str| std::fs::read(pki_dir.join(f)).map_err(|e| format!("{}: {e}", pki_dir.join(f).display()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("cacert.pem")?) {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let chain = vec![CertificateDer::from_pem_slice(&read("clientcert.pem")?).map_err(|e| e.to_string())?];
    let key = PrivateKeyDer::from_pem_slice(&read("clientkey.pem")?).map_err(|e| e.to_string())?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| e.to_string())
}

/// The serial (registry form) of the certificate `fqdn` presents on its libvirt TLS port,
/// verified against the CA in `pki_dir` for that name. Errors say why, in words that
/// `pool::classify` maps (unreachable, certificate).
pub async fn server_serial(fqdn: &str, pki_dir: &Path, timeout: Duration) -> Result<String, String> {
    server_serial_at(fqdn, LIBVIRT_TLS_PORT, pki_dir, timeout).await
}

/// `server_serial` on another port (tests).
pub async fn server_serial_at(fqdn: &str, port: u16, pki_dir: &Path, timeout: Duration) -> Result<String, String> {
    let config = Arc::new(client_config(pki_dir)?);
    let name = ServerName::try_from(fqdn.to_string()).map_err(|e| format!("{fqdn}: {e}"))?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((fqdn, port))
            .await
            .map_err(|e| format!("{fqdn}:{port}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {fqdn}: certificate refused: {e}"))?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| format!("{fqdn} presented no certificate"))?;
        crate::pki::serial_of_der(leaf.as_ref()).ok_or_else(|| format!("{fqdn}: its certificate does not parse"))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("{fqdn}:{port}: timed out"))?
}
