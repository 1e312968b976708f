//! Which certificate a hypervisor presents on its libvirt TLS port, read by provd itself
//! (libvirt's client API does not say): a TLS handshake with the pool's own credentials,
//! verified against provd's CA, and the leaf's serial. The pool then asks its registry
//! whether that serial is a valid server certificate of *this* host: a certificate the CA
//! signed for another host, or one provd revoked, is not good enough, whatever libvirt's
//! own checks (CA signature and, only after a CRL refresh, revocation) would say.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// libvirt's TLS port.
pub const LIBVIRT_TLS_PORT: u16 = 16514;

/// Why the presented certificate could not be read; `state` is the pool state it means.
#[derive(Debug, thiserror::Error)]
pub enum PresentedError {
    #[error("the pool's credentials {path}: {source}")]
    Credentials {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    #[error("{fqdn}: not a DNS name")]
    BadName { fqdn: String },
    #[error("{fqdn}:{port}: {source}")]
    Connect {
        fqdn: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("TLS handshake with {fqdn}: certificate refused: {source}")]
    Handshake { fqdn: String, source: std::io::Error },
    #[error("{fqdn} presented no certificate")]
    NoCertificate { fqdn: String },
    #[error("{fqdn}: its certificate does not parse")]
    Unparsable { fqdn: String },
    #[error("{fqdn}:{port}: timed out")]
    TimedOut { fqdn: String, port: u16 },
}

impl PresentedError {
    /// What the pool shows for this failure: no answer is "unreachable", anything about the
    /// certificates "tls", provd's own missing credentials "no-libvirt" (nothing to talk with).
    pub fn state(&self) -> super::PoolState {
        use super::PoolState;
        match self {
            PresentedError::Connect { .. } | PresentedError::TimedOut { .. } => PoolState::Unreachable,
            PresentedError::Credentials { .. } | PresentedError::Setup(_) | PresentedError::BadName { .. } => {
                PoolState::NoLibvirt
            }
            PresentedError::Handshake { .. }
            | PresentedError::NoCertificate { .. }
            | PresentedError::Unparsable { .. } => PoolState::Tls,
        }
    }
}

fn client_config(pki_dir: &Path) -> Result<rustls::ClientConfig, PresentedError> {
    let credentials = |f: &str| {
        let path = pki_dir.join(f);
        move |e: Box<dyn std::error::Error + Send + Sync>| PresentedError::Credentials { path, source: e }
    };
    let read = |f: &str| std::fs::read(pki_dir.join(f)).map_err(|e| credentials(f)(e.into()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&read("cacert.pem")?) {
        roots
            .add(c.map_err(|e| credentials("cacert.pem")(e.into()))?)
            .map_err(|e| credentials("cacert.pem")(e.into()))?;
    }
    let chain = vec![
        CertificateDer::from_pem_slice(&read("clientcert.pem")?)
            .map_err(|e| credentials("clientcert.pem")(e.into()))?,
    ];
    let key =
        PrivateKeyDer::from_pem_slice(&read("clientkey.pem")?).map_err(|e| credentials("clientkey.pem")(e.into()))?;
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(PresentedError::Setup)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| credentials("clientkey.pem")(e.into()))
}

/// The serial (registry form) of the certificate `fqdn` presents on its libvirt TLS port,
/// verified against the CA in `pki_dir` for that name.
pub async fn server_serial(fqdn: &str, pki_dir: &Path, timeout: Duration) -> Result<String, PresentedError> {
    server_serial_at(fqdn, LIBVIRT_TLS_PORT, pki_dir, timeout).await
}

/// `server_serial` on another port (tests).
pub async fn server_serial_at(
    fqdn: &str,
    port: u16,
    pki_dir: &Path,
    timeout: Duration,
) -> Result<String, PresentedError> {
    let config = Arc::new(client_config(pki_dir)?);
    let owned = || fqdn.to_string();
    let name = ServerName::try_from(owned()).map_err(|_| PresentedError::BadName { fqdn: owned() })?;
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((fqdn, port))
            .await
            .map_err(|source| PresentedError::Connect {
                fqdn: owned(),
                port,
                source,
            })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|source| PresentedError::Handshake { fqdn: owned(), source })?;
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| PresentedError::NoCertificate { fqdn: owned() })?;
        crate::pki::serial_of_der(leaf.as_ref()).ok_or_else(|| PresentedError::Unparsable { fqdn: owned() })
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| PresentedError::TimedOut { fqdn: owned(), port })?
}
