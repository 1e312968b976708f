//! What provd accepts in a certificate signing request, decided from the request's bytes
//! alone (pure: no CA, no inventory). The CSR's signature is checked by rcgen when the
//! request is signed; this module checks the key: RSA of at least 2048 bits or EC on P-256
//! or P-384, the keys libvirt's GnuTLS and every EL release accept without a policy change.
//! Anything else (DSA, RSA-1024, a curve nobody here tests) is refused before signing.
//!
//! `key_id` is the SHA-256 of the request's SubjectPublicKeyInfo: the same key gives the
//! same id in a CSR and in the certificate provd issued for it, which is how renewal
//! recognises "the key you already hold a certificate for".

use super::PkiError;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// The smallest RSA modulus provd signs (NIST SP 800-57: 2048 bits until 2030).
pub const MIN_RSA_BITS: usize = 2048;

const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa(usize),
    EcP256,
    EcP384,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa(bits) => write!(f, "RSA-{bits}"),
            KeyKind::EcP256 => f.write_str("EC P-256"),
            KeyKind::EcP384 => f.write_str("EC P-384"),
        }
    }
}

/// What provd reads from a CSR before deciding to sign it.
#[derive(Debug, Clone)]
pub struct CsrFacts {
    pub key: KeyKind,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub key_id: String,
    /// The subject's common name, when there is one.
    pub common_name: Option<String>,
}

/// Parse a PEM CSR and check its key.
pub fn inspect(pem: &str) -> Result<CsrFacts, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| PkiError::BadCsr(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(PkiError::BadCsr(format!(
            "a PEM {:?}, not a CERTIFICATE REQUEST",
            pem.label
        )));
    }
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| PkiError::BadCsr(e.to_string()))?;
    let info = &csr.certification_request_info;
    let spki = &info.subject_pki;
    let key = match spki.parsed() {
        Ok(PublicKey::RSA(rsa)) => {
            let bits = modulus_bits(rsa.modulus);
            if bits < MIN_RSA_BITS {
                return Err(PkiError::WeakKey(format!(
                    "RSA-{bits}: provd signs RSA keys of at least {MIN_RSA_BITS} bits"
                )));
            }
            KeyKind::Rsa(bits)
        }
        Ok(PublicKey::EC(_)) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => KeyKind::EcP256,
                OID_P384 => KeyKind::EcP384,
                other => {
                    return Err(PkiError::WeakKey(format!(
                        "an EC key on curve {other:?}: provd signs P-256 and P-384"
                    )));
                }
            }
        }
        Ok(_) | Err(_) => {
            return Err(PkiError::WeakKey(format!(
                "a key of type {}: provd signs RSA (>= {MIN_RSA_BITS} bits) and EC P-256/P-384",
                spki.algorithm.algorithm.to_id_string()
            )));
        }
    };
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    Ok(CsrFacts {
        key,
        key_id: key_id(spki.raw),
        common_name,
    })
}

/// The PEM `CERTIFICATE REQUEST` blocks of `text`, in order (a request body may carry two:
/// a CSR and the proof that goes with it).
pub fn split_requests(text: &str) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE REQUEST-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(END) {
        let block = &rest[..i + END.len()];
        if let Some(start) = block.find("-----BEGIN") {
            out.push(format!("{}\n", &block[start..]));
        }
        rest = &rest[i + END.len()..];
    }
    out
}

/// OID of the X.520 serialNumber attribute, where a proof names the key it vouches for.
const OID_SERIAL_NUMBER: &str = "2.5.4.5";

/// A proof of possession: a CSR made with the key of a certificate provd already issued
/// (its signature proves the sender holds that key), whose subject's serialNumber names
/// the key id of the request it goes with. So a proof copied off the wire vouches only for
/// the key it was made for, never for the copier's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The key that signed the proof (`key_id` form).
    pub key_id: String,
    /// The key id the proof vouches for.
    pub vouches_for: String,
}

/// Parse and verify a proof (see `Proof`).
pub fn proof(pem: &str) -> Result<Proof, PkiError> {
    let bad = |why: String| PkiError::BadCsr(format!("the proof: {why}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| bad(e.to_string()))?;
    csr.verify_signature()
        .map_err(|e| bad(format!("its signature does not verify ({e})")))?;
    let info = &csr.certification_request_info;
    let vouches_for = info
        .subject
        .iter_attributes()
        .find(|a| a.attr_type().to_id_string() == OID_SERIAL_NUMBER)
        .and_then(|a| a.as_str().ok())
        .map(|s| s.trim().to_ascii_lowercase())
        .ok_or_else(|| bad("its subject has no serialNumber naming the key it vouches for".into()))?;
    Ok(Proof {
        key_id: key_id(info.subject_pki.raw),
        vouches_for,
    })
}

/// The key id of a PEM certificate's public key (same as `inspect` gives for its CSR).
pub fn certificate_key_id(pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(key_id(cert.public_key().raw))
}

/// The key id of a DER certificate's public key.
pub fn certificate_der_key_id(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(key_id(cert.public_key().raw))
}

fn key_id(spki_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Bits in a big-endian unsigned modulus (DER integers carry a leading zero byte when the
/// top bit is set; that byte is not part of the size).
fn modulus_bits(m: &[u8]) -> usize {
    let m = match m.iter().position(|b| *b != 0) {
        Some(i) => &m[i..],
        None => return 0,
    };
    (m.len() - 1) * 8 + (8 - m[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl_csr(newkey: &[&str]) -> String {
        let out = std::process::Command::new("openssl")
            .args([
                "req",
                "-new",
                "-nodes",
                "-keyout",
                "/dev/null",
                "-subj",
                "/CN=hv01.example",
            ])
            .args(newkey)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn modulus_sizes_ignore_the_der_sign_byte() {
        assert_eq!(modulus_bits(&[0x00, 0x80, 0, 0]), 24);
        assert_eq!(modulus_bits(&[0x01, 0xff]), 9);
        assert_eq!(modulus_bits(&[0, 0]), 0);
    }

    #[test]
    fn accepted_and_refused_keys_made_by_openssl() {
        let rsa = inspect(&openssl_csr(&["-newkey", "rsa:2048"])).unwrap();
        assert_eq!(rsa.key, KeyKind::Rsa(2048));
        assert_eq!(rsa.common_name.as_deref(), Some("hv01.example"));
        assert_eq!(rsa.key_id.len(), 64);
        let p256 = inspect(&openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])).unwrap();
        assert_eq!(p256.key, KeyKind::EcP256);
        let p384 = inspect(&openssl_csr(&["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"])).unwrap();
        assert_eq!(p384.key, KeyKind::EcP384);
        for (weak, says) in [
            (vec!["-newkey", "rsa:1024"], "RSA-1024"),
            (vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"], "curve"),
            (vec!["-newkey", "ed25519"], "type"),
        ] {
            let e = inspect(&openssl_csr(&weak)).unwrap_err();
            assert!(
                matches!(e, PkiError::WeakKey(_)) && e.to_string().contains(says),
                "{weak:?}: {e}"
            );
        }
        assert!(matches!(inspect("junk"), Err(PkiError::BadCsr(_))));
    }

    fn run(cmd: &str) -> String {
        let out = std::process::Command::new("sh").args(["-c", cmd]).output().unwrap();
        assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// The proof the hypervisor's `migration-cert` script makes, with openssl: its key id is
    /// the signing key's, it vouches for the request's key, and a tampered one is refused.
    #[test]
    fn a_proof_made_by_openssl_names_both_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().display();
        run(&format!("openssl genrsa -out {p}/server.key 2048 2>/dev/null"));
        let client = run(&format!(
            "openssl req -new -newkey rsa:2048 -nodes -keyout {p}/client.key -subj /CN=hv01.example 2>/dev/null"
        ));
        let client_id = run(&format!(
            "openssl pkey -in {p}/client.key -pubout -outform DER | sha256sum | cut -d' ' -f1"
        ));
        let client_id = client_id.trim();
        assert_eq!(inspect(&client).unwrap().key_id, client_id, "the id the shell computes");
        let server_id = run(&format!(
            "openssl pkey -in {p}/server.key -pubout -outform DER | sha256sum | cut -d' ' -f1"
        ));
        let proof_pem = run(&format!(
            "openssl req -new -key {p}/server.key -subj /CN=hv01.example/serialNumber={client_id}"
        ));
        let body = format!("{client}{proof_pem}");
        let parts = split_requests(&body);
        assert_eq!(parts.len(), 2);
        assert_eq!(inspect(&parts[0]).unwrap().key_id, client_id);
        let pr = proof(&parts[1]).unwrap();
        assert_eq!(
            (pr.key_id.as_str(), pr.vouches_for.as_str()),
            (server_id.trim(), client_id)
        );

        // One byte changed inside the signed part: the signature no longer verifies.
        let (_, der) = x509_parser::pem::parse_x509_pem(proof_pem.as_bytes()).unwrap();
        let mut der = der.contents.clone();
        let at = der.len() / 3;
        der[at] ^= 0x01;
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let tampered = format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
        assert!(proof(&tampered).is_err());
        // A proof without the serialNumber vouches for nothing.
        let bare = run(&format!("openssl req -new -key {p}/server.key -subj /CN=hv01.example"));
        assert!(proof(&bare).unwrap_err().to_string().contains("serialNumber"));
    }
}
