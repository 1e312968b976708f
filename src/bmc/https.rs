//! A small blocking HTTPS/1.1 client for Redfish, with the certificate policy a BMC needs:
//! BMCs mostly present self-signed certificates, so besides the web PKI and a CA file, a host
//! entry may pin the exact certificate (SHA-256 of its DER, as `openssl x509 -fingerprint
//! -sha256` prints it) or, explicitly, accept any. A general client (ureq) offers "verify"
//! or "do not verify" only; pinning needs the certificate in hand during the handshake.
//!
//! One request per connection (`Connection: close`): a power action is a handful of
//! requests, and each is bounded by the timeout.

use crate::config::BmcTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Why a request to a BMC failed; `is_certificate` tells a refused certificate from an
/// unreachable BMC without reading the words.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("bad {part} in BMC address {address:?}")]
    Address { address: String, part: &'static str },
    #[error("BMC CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("TLS setup: {0}")]
    Setup(rustls::Error),
    #[error("{host}: {source}")]
    Resolve { host: String, source: std::io::Error },
    #[error("{host}: no address")]
    NoAddress { host: String },
    #[error("connect {addr}: {source}")]
    Connect { addr: SocketAddr, source: std::io::Error },
    #[error("{addr}: {}", certificate_text(.source))]
    Certificate { addr: SocketAddr, source: rustls::Error },
    #[error("{addr}: {source}")]
    Transport { addr: SocketAddr, source: std::io::Error },
    #[error("{addr}: response larger than {MAX_BODY} bytes")]
    TooLarge { addr: SocketAddr },
    #[error("{addr}: {source}")]
    Malformed { addr: SocketAddr, source: ResponseError },
}

impl HttpsError {
    /// The BMC's certificate was refused (by the pin, the CA, or its names).
    pub fn is_certificate(&self) -> bool {
        matches!(self, HttpsError::Certificate { .. })
    }

    /// An I/O failure during the exchange; a certificate refused during the handshake
    /// arrives this way too (rustls wraps it in the I/O error), and is told apart here.
    fn exchange(addr: SocketAddr) -> impl Fn(std::io::Error) -> HttpsError {
        move |source| match source.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(e @ rustls::Error::InvalidCertificate(_)) => HttpsError::Certificate {
                addr,
                source: e.clone(),
            },
            _ => HttpsError::Transport { addr, source },
        }
    }
}

/// What is wrong with a BMC's answer as HTTP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("no complete HTTP header in the response")]
    NoHeader,
    #[error("response header is not text")]
    HeaderNotText,
    #[error("bad status line {0:?}")]
    StatusLine(String),
    #[error("body cut short ({got} of {expected} bytes)")]
    BodyCutShort { got: usize, expected: usize },
    #[error("bad chunk size {0:?}")]
    ChunkSize(String),
    #[error("chunk cut short")]
    ChunkCutShort,
}

/// The pinned certificate is not the one the BMC presented.
#[derive(Debug, thiserror::Error)]
#[error("the BMC's certificate (SHA-256 {}) is not the pinned one ({})", fingerprint_text(.presented), fingerprint_text(.pinned))]
pub struct PinMismatch {
    presented: [u8; 32],
    pinned: [u8; 32],
}

/// A refused certificate in words: the pin's own message rather than rustls's debug form.
fn certificate_text(e: &rustls::Error) -> String {
    if let rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) = e
        && let Some(pin) = other.0.downcast_ref::<PinMismatch>()
    {
        return pin.to_string();
    }
    e.to_string()
}

/// Largest response body read from a BMC (a Redfish resource is a few KiB).
const MAX_BODY: usize = 4 << 20;

pub struct Https {
    host: String,
    port: u16,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
    timeout: Duration,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

impl Https {
    /// `address`: `host[:port]` or `https://host[:port]` (port 443 by default).
    pub fn new(address: &str, policy: &BmcTls, timeout: Duration) -> Result<Https, HttpsError> {
        let bad = |part| HttpsError::Address {
            address: address.to_string(),
            part,
        };
        let rest = address
            .strip_prefix("https://")
            .unwrap_or(address)
            .trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse::<u16>().map_err(|_| bad("port"))?,
            ),
            _ => (rest.trim_matches(['[', ']']).to_string(), 443),
        };
        let server_name = ServerName::try_from(host.clone()).map_err(|_| bad("host"))?;
        Ok(Https {
            host,
            port,
            server_name,
            tls: client_config(policy)?,
            timeout,
        })
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, HttpsError> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|source| HttpsError::Resolve {
                host: self.host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| HttpsError::NoAddress {
                host: self.host.clone(),
            })?;
        let tcp =
            TcpStream::connect_timeout(&addr, self.timeout).map_err(|source| HttpsError::Connect { addr, source })?;
        tcp.set_read_timeout(Some(self.timeout)).ok();
        tcp.set_write_timeout(Some(self.timeout)).ok();
        let conn =
            rustls::ClientConnection::new(self.tls.clone(), self.server_name.clone()).map_err(HttpsError::Setup)?;
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: application/json\r\nUser-Agent: provd\r\n",
            self.host, self.port
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        let exchange = HttpsError::exchange(addr);
        stream.write_all(&out).map_err(&exchange)?;
        stream.flush().map_err(&exchange)?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    if raw.len() > MAX_BODY {
                        return Err(HttpsError::TooLarge { addr });
                    }
                }
                // Servers that close without close_notify (werkzeug, many BMCs): what
                // arrived is the whole response when it parses.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(exchange(e)),
            }
        }
        parse_response(&raw).map_err(|source| HttpsError::Malformed { addr, source })
    }
}

/// Status line, headers, and the body (by Content-Length, chunked, or to the end).
pub fn parse_response(raw: &[u8]) -> Result<Response, ResponseError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(ResponseError::NoHeader)?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| ResponseError::HeaderNotText)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ResponseError::StatusLine(status_line.to_string()))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &raw[end + 4..];
    let header = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v);
    let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(rest)?
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return Err(ResponseError::BodyCutShort {
                got: rest.len(),
                expected: len,
            });
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, headers, body })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ResponseError> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or(ResponseError::ChunkCutShort)?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| ResponseError::ChunkSize(size_text.to_string()))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err(ResponseError::ChunkCutShort);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn client_config(policy: &BmcTls) -> Result<Arc<rustls::ClientConfig>, HttpsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(HttpsError::Setup)?;
    let config = match policy {
        BmcTls::WebPki => {
            let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        BmcTls::CaFile(path) => {
            let ca_file = |e: Box<dyn std::error::Error + Send + Sync>| HttpsError::CaFile {
                path: path.clone(),
                source: e,
            };
            let pem = std::fs::read(path).map_err(|e| ca_file(e.into()))?;
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(&pem) {
                let c = c.map_err(|e| ca_file(e.into()))?;
                roots.add(c).map_err(|e| ca_file(e.into()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        BmcTls::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: Some(*pin),
                provider,
            }))
            .with_no_client_auth(),
        BmcTls::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { pin: None, provider }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Accepts exactly the pinned certificate (or, with no pin, any: `insecure = true`). The
/// handshake signature is still checked against the presented certificate's key, so a
/// peer must hold that certificate's private key.
#[derive(Debug)]
struct Pinned {
    pin: Option<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        };
        let got = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == pin {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            let mut presented = [0u8; 32];
            presented.copy_from_slice(got.as_ref());
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch { presented, pinned: pin })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// "AB:CD:..." as openssl prints a fingerprint.
pub fn fingerprint_text(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_by_length_chunked_and_to_the_end() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Auth-Token: t\r\n\r\n{}junk").unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("x-auth-token")),
            (200, &b"{}"[..], Some("t"))
        );
        let r = parse_response(
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = parse_response(b"HTTP/1.0 204 NO CONTENT\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc").unwrap_err(),
            ResponseError::BodyCutShort { got: 3, expected: 10 }
        );
        assert_eq!(parse_response(b"garbage").unwrap_err(), ResponseError::NoHeader);
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").unwrap_err(),
            ResponseError::ChunkSize("zz".into())
        );
    }
}
