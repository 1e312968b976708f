//! provd's certificate authority (rcgen): the CA itself, and certificates for libvirt TLS.
//!
//! - `init` creates the CA: key written 0600 and never served; certificate 0644.
//! - `sign_host` turns a host's CSR into a libvirt server or client certificate (a host needs
//!   both: migration connects in both directions). Only the CSR's public key is used:
//!   subject and SANs come from the inventory (FQDN, short name, the host's addresses),
//!   never from the CSR; a CSR whose common name names another host is refused. The two
//!   roles take two keys because libvirt wants the client key readable by client tools
//!   (0644) and the server key by root only (0600), as `virt-pki-validate` checks.
//! - Leaf certificates carry the CA's common name as their organization (O): that is the
//!   pairing libvirt's tools expect (virt-pki-validate compares the CA's CN with the leaves'
//!   O). The default CA name is "provd"; the site goes in OU, for `tls_allowed_dn_list`.
//! - `issue_client` makes a key and client certificate for operators and `provd vm`.
//!
//! Key usages are what libvirt checks (virNetTLSContextCheckCertKeyUsage): digital signature
//! and key encipherment on both leaf certificates, serverAuth / clientAuth as extended key
//! usage, and a CA with basic constraints and keyCertSign.
//!
//! Renewing the CA: `provd pki init --force --dir NEW` makes a new CA; hosts get certificates
//! from it when they are reinstalled (or re-enrolled), and clients must trust both CAs
//! (concatenate them in cacert.pem) until every host has moved.

pub mod csr;
pub mod identities;
pub mod pair;
pub mod region_crl;
pub mod registry;
pub mod signer;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const DEFAULT_CA_DAYS: i64 = 3650;
pub const DEFAULT_LEAF_DAYS: i64 = 825;
/// The organizational unit of operator certificates that the admin API accepts
/// (`provd pki issue-client NAME --admin`). Hosts' certificates carry "site NAME".
pub const ADMIN_UNIT: &str = "provd admin";
/// The OU of the certificates operators get for libvirt (`provd pki issue-client NAME`):
/// hypervisors allow `O=<CA>,OU=provd operator,CN=*`.
pub const OPERATOR_UNIT: &str = "provd operator";
/// The OU of a hypervisor's install-time certificates (its libvirt TLS server certificate).
/// No hypervisor allows it as a client: an install token alone opens no hypervisor.
pub fn host_unit(site: &str) -> String {
    format!("site {site}")
}
/// The OU of a hypervisor's client certificate for live migration to the site's other
/// hypervisors (`tls_allowed_dn_list` allows `OU=site NAME migration,CN=*`). provd signs
/// one only for a host the pool has verified, against proof of its server key.
pub fn migration_unit(site: &str) -> String {
    format!("site {site} migration")
}
/// The OU of the certificates the two servers of `site`'s pair present to each other
/// (hosts' certificates carry "site NAME", operators' `ADMIN_UNIT`).
pub fn replication_unit(site: &str) -> String {
    format!("provd replication site {site}")
}

/// How long a CRL provd signs stays current.
pub const CRL_DAYS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0} already exists; refusing to replace a CA (use --force to make a new one)")]
    Exists(PathBuf),
    #[error("no CA in {dir}: run `provd pki init`")]
    NoCa { dir: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the CSR is not valid: {0}")]
    BadCsr(String),
    #[error("the CSR names {named:?}, not this host ({host})")]
    WrongHost { named: String, host: String },
    #[error("the CSR's key is refused: {0}")]
    WeakKey(String),
    #[error("certificate generation failed: {0}")]
    Generate(String),
    #[error("the CA certificate to certify: {0}")]
    BadCa(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn rcgen_failed(e: rcgen::Error) -> PkiError {
    PkiError::Generate(e.to_string())
}

/// The default CA name, and so the organization of every certificate it signs.
pub const DEFAULT_CA_NAME: &str = "provd";

/// Who a host certificate is for, as the inventory knows it.
#[derive(Debug, Clone)]
pub struct HostIdentity {
    pub fqdn: String,
    pub short: String,
    pub addresses: Vec<IpAddr>,
    /// Goes in OU (e.g. "site dc1").
    pub unit: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }
}

/// A certificate role provd does not issue.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("role must be server or client, not {0:?}")]
pub struct UnknownRole(pub String);

impl std::str::FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "server" => Ok(Role::Server),
            "client" => Ok(Role::Client),
            other => Err(UnknownRole(other.to_string())),
        }
    }
}

pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA's common name: the O of every certificate it signs.
    organization: String,
}

fn write_file(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    // mode() applies only when the file is created; make sure an existing file is tightened.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A little slack for hosts whose clock is behind before NTP runs.
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
}

/// Create a CA in `dir`: `ca-key.pem` (0600) and `ca-cert.pem`.
pub fn init(dir: &Path, name: &str, days: i64, force: bool) -> Result<(), PkiError> {
    make_ca(dir, name, days, force, 0)
}

/// Create a region's root CA in `dir` (as `init`), which may certify sites' CAs below it
/// (`Ca::cross_sign`): its path length allows one CA between it and a leaf.
pub fn init_root(dir: &Path, name: &str, days: i64, force: bool) -> Result<(), PkiError> {
    make_ca(dir, name, days, force, 1)
}

fn make_ca(dir: &Path, name: &str, days: i64, force: bool, path_len: u8) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::Exists(p.clone()));
            }
        }
    }
    let key = KeyPair::generate().map_err(rcgen_failed)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, name);
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days);
    let cert = params.self_signed(&key).map_err(rcgen_failed)?;
    write_file(&key_path, &key.serialize_pem(), 0o600)?;
    write_file(&cert_path, &cert.pem(), 0o644)?;
    Ok(())
}

impl Ca {
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
        if !cert_path.exists() || !key_path.exists() {
            return Err(PkiError::NoCa { dir: dir.to_path_buf() });
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key =
            KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?).map_err(rcgen_failed)?;
        let organization = ca_common_name(&cert_pem).unwrap_or_else(|| DEFAULT_CA_NAME.into());
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(rcgen_failed)?;
        Ok(Ca {
            cert_pem,
            issuer,
            organization,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Certify another CA (a site's, `site_ca_pem`) under this one: a certificate with
    /// that CA's own subject and public key, signed here, so that a chain from one of its
    /// leaves ends at this root (the site keeps its key; its existing certificates stay
    /// valid, for its own hypervisors and for anyone who trusts this root). Path length 0:
    /// the site's CA signs leaves only. Returns (certificate PEM, serial).
    pub fn cross_sign(&self, site_ca_pem: &str, days: i64) -> Result<(String, String), PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(site_ca_pem.as_bytes())
            .map_err(|e| PkiError::BadCa(format!("not a PEM certificate: {e}")))?;
        let site = pem.parse_x509().map_err(|e| PkiError::BadCa(e.to_string()))?;
        if !site.is_ca() {
            return Err(PkiError::BadCa("it is not a CA certificate".into()));
        }
        let mut dn = DistinguishedName::new();
        for rdn in site.subject().iter() {
            for attr in rdn.iter() {
                let value = attr
                    .as_str()
                    .map_err(|_| PkiError::BadCa("its subject has a value that is not text".into()))?;
                let kind = match attr.attr_type().to_id_string().as_str() {
                    "2.5.4.3" => DnType::CommonName,
                    "2.5.4.10" => DnType::OrganizationName,
                    "2.5.4.11" => DnType::OrganizationalUnitName,
                    "2.5.4.6" => DnType::CountryName,
                    "2.5.4.7" => DnType::LocalityName,
                    "2.5.4.8" => DnType::StateOrProvinceName,
                    other => {
                        return Err(PkiError::BadCa(format!(
                            "its subject has attribute {other}, which provd cannot copy"
                        )));
                    }
                };
                dn.push(kind, value);
            }
        }
        let spki = rcgen::SubjectPublicKeyInfo::from_der(site.public_key().raw).map_err(rcgen_failed)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        let serial = new_serial();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        validity(&mut params, days);
        let cert = params.signed_by(&spki, &self.issuer).map_err(rcgen_failed)?;
        let serial = serial_of_der(cert.der()).unwrap_or_default();
        Ok((cert.pem(), serial))
    }

    fn leaf(
        &self,
        cn: &str,
        unit: Option<&str>,
        sans: Vec<SanType>,
        purpose: ExtendedKeyUsagePurpose,
        days: i64,
    ) -> CertificateParams {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.organization.as_str());
        if let Some(u) = unit {
            dn.push(DnType::OrganizationalUnitName, u);
        }
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![purpose];
        params.use_authority_key_identifier_extension = true;
        // Each certificate its own random serial, so the registry and the CRL can name it.
        params.serial_number = Some(SerialNumber::from_slice(&new_serial()));
        validity(&mut params, days);
        params
    }

    /// A `role` certificate for the key in `csr_pem`, for `host`. The CSR's signature
    /// (rcgen) and key (`csr::inspect`) are checked first.
    pub fn sign_host(&self, csr_pem: &str, host: &HostIdentity, role: Role, days: i64) -> Result<Issued, PkiError> {
        let facts = csr::inspect(csr_pem)?;
        check_names(&facts, host)?;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::BadCsr(e.to_string()))?;
        let mut sans = vec![SanType::DnsName(host.fqdn.clone().try_into().map_err(rcgen_failed)?)];
        if host.short != host.fqdn {
            sans.push(SanType::DnsName(host.short.clone().try_into().map_err(rcgen_failed)?));
        }
        sans.extend(host.addresses.iter().map(|ip| SanType::IpAddress(*ip)));
        let purpose = match role {
            Role::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
        };
        let params = self.leaf(&host.fqdn, Some(host.unit.as_str()), sans, purpose, days);
        let serial = params.serial_number.as_ref().expect("leaf sets a serial").to_bytes();
        let not_after = params.not_after.unix_timestamp();
        let pem = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(rcgen_failed)?
            .pem();
        Ok(Issued {
            pem,
            serial: hex(&serial),
            not_after,
            key_id: facts.key_id,
        })
    }

    /// The CA's certificate revocation list (PEM) naming `revoked` (serial in hex, revocation
    /// time). A fresh list is signed on every call; its number is `now` (see `crl_numbered`).
    /// `next_update` is 30 days ahead: libvirt reads the list only when it starts, so
    /// hypervisors restart it for a new list only when the revoked serials changed or their
    /// installed list comes within 7 days of its next update (`refresh-crl`).
    pub fn crl(&self, revoked: &[(String, i64)], now: OffsetDateTime) -> Result<String, PkiError> {
        self.crl_numbered(revoked, now, now.unix_timestamp().max(0) as u64)
    }

    /// The same with CRL number `number`. Hypervisors install a list only when its number
    /// is higher than theirs, so a signer that made a list before passes
    /// `next_crl_number(previous, now)`: two lists signed in one second, or after the
    /// clock stepped back, must still count up.
    pub fn crl_numbered(
        &self,
        revoked: &[(String, i64)],
        now: OffsetDateTime,
        number: u64,
    ) -> Result<String, PkiError> {
        let revoked_certs = revoked
            .iter()
            .filter_map(|(serial, at)| {
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(serial)?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(*at).ok()?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .map_err(rcgen_failed)?
            .pem()
            .map_err(rcgen_failed)
    }

    /// A new key and client certificate named `name` for an operator. Without `admin` it
    /// carries OU=`OPERATOR_UNIT` (libvirt: `virsh`, `provd vm`); with `admin`, OU=
    /// `ADMIN_UNIT`, a credential for provd's admin API over HTTPS that no hypervisor
    /// allows. Returns (certificate PEM, key PEM).
    pub fn issue_client(&self, name: &str, days: i64, admin: bool) -> Result<(String, String), PkiError> {
        let unit = if admin { ADMIN_UNIT } else { OPERATOR_UNIT };
        self.client_leaf(name, Some(unit), days)
    }

    /// provd's own libvirt identity (the pool): `O=<CA>,CN=<cn>` with no OU, which only
    /// hypervisors' `provd_client_cn` entry allows. Returns (certificate PEM, key PEM).
    pub fn issue_pool_client(&self, cn: &str, days: i64) -> Result<(String, String), PkiError> {
        self.client_leaf(cn, None, days)
    }

    fn client_leaf(&self, name: &str, unit: Option<&str>, days: i64) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(rcgen_failed)?;
        let params = self.leaf(name, unit, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth, days);
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_failed)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A new key and certificate for one server of a failover pair, for the pair's mutual
    /// TLS (server and client at once): OU = `replication_unit(site)`, the server's address
    /// as IP SAN. Made at every start; the key stays in memory. Returns (certificate, key).
    pub fn issue_replication(&self, site: &str, address: IpAddr, days: i64) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(rcgen_failed)?;
        let unit = replication_unit(site);
        let mut params = self.leaf(
            "provd replication",
            Some(unit.as_str()),
            vec![SanType::IpAddress(address)],
            ExtendedKeyUsagePurpose::ServerAuth,
            days,
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_failed)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A new key and server certificate for provd's own admin listener: `names` as DNS
    /// SANs, `addresses` as IP SANs. Returns (certificate PEM, key PEM); provd makes a new
    /// one at every start and keeps the key in memory only.
    pub fn issue_server(
        &self,
        names: &[String],
        addresses: &[IpAddr],
        days: i64,
    ) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate().map_err(rcgen_failed)?;
        let mut sans = Vec::new();
        for n in names {
            sans.push(SanType::DnsName(n.clone().try_into().map_err(rcgen_failed)?));
        }
        sans.extend(addresses.iter().map(|a| SanType::IpAddress(*a)));
        let cn = names.first().cloned().unwrap_or_else(|| "provd admin API".into());
        let params = self.leaf(&cn, None, sans, ExtendedKeyUsagePurpose::ServerAuth, days);
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_failed)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The CSR's subject is not used, but a CSR made for another machine is a mistake worth
/// stopping: say so rather than certify the wrong key.
pub fn check_names(facts: &csr::CsrFacts, host: &HostIdentity) -> Result<(), PkiError> {
    match &facts.common_name {
        Some(named) if !named.eq_ignore_ascii_case(&host.fqdn) && !named.eq_ignore_ascii_case(&host.short) => {
            Err(PkiError::WrongHost {
                named: named.clone(),
                host: host.fqdn.clone(),
            })
        }
        _ => Ok(()),
    }
}

/// A certificate provd just signed, with what its registry keeps about it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Unix time the certificate stops being valid.
    pub not_after: i64,
    /// `csr::inspect`'s key id of the certified key.
    pub key_id: String,
}

/// 16 random bytes, top bit clear so the DER integer stays positive and at most 20 octets
/// (RFC 5280 4.1.2.2). rcgen's default serial is derived from the key, so a renewal with
/// the same key would repeat it; revocation needs each certificate's own.
fn new_serial() -> Vec<u8> {
    let mut b = [0u8; 16];
    crate::random::fill(&mut b);
    b[0] &= 0x7f;
    b[0] |= 0x01; // never a leading zero byte: the hex form is the DER form
    b.to_vec()
}

/// Check that `cross_pem` is this CA (`ca_pem`) as `root_pem` certified it
/// (`Ca::cross_sign`): the same subject and key, a CA, issued under the root's name. What a
/// site checks before handing the chain to its hypervisors, so a wrong file is an error at
/// start, not a migration refused months later.
pub fn check_cross_certificate(ca_pem: &str, cross_pem: &str, root_pem: &str) -> Result<(), PkiError> {
    let parse = |what: &str, pem: &str| -> Result<x509_parser::pem::Pem, PkiError> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .map(|(_, p)| p)
            .map_err(|e| PkiError::BadCa(format!("{what}: not a PEM certificate: {e}")))
    };
    let (ca, cross, root) = (
        parse("the CA", ca_pem)?,
        parse("the cross-certificate", cross_pem)?,
        parse("the root", root_pem)?,
    );
    let bad = |e: x509_parser::nom::Err<x509_parser::error::X509Error>| PkiError::BadCa(e.to_string());
    let (ca, cross, root) = (
        ca.parse_x509().map_err(bad)?,
        cross.parse_x509().map_err(bad)?,
        root.parse_x509().map_err(bad)?,
    );
    if cross.public_key().raw != ca.public_key().raw || cross.subject().as_raw() != ca.subject().as_raw() {
        return Err(PkiError::BadCa(format!(
            "the cross-certificate is for {}, not for this site's CA ({})",
            cross.subject(),
            ca.subject()
        )));
    }
    if !cross.is_ca() {
        return Err(PkiError::BadCa("the cross-certificate is not a CA certificate".into()));
    }
    if cross.issuer().as_raw() != root.subject().as_raw() {
        return Err(PkiError::BadCa(format!(
            "the cross-certificate was issued by {}, not by the region's root ({})",
            cross.issuer(),
            root.subject()
        )));
    }
    Ok(())
}

/// The number for the next CRL: the signing time, but always above the last list's.
pub fn next_crl_number(previous: Option<u64>, now: OffsetDateTime) -> u64 {
    let now = now.unix_timestamp().max(0) as u64;
    previous.map_or(now, |p| now.max(p + 1))
}

/// The CRL number of a PEM CRL, unverified (the signer's own last list).
pub fn crl_number(pem: &str) -> Option<u64> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&pem.contents).ok()?;
    number_of(&crl)
}

/// A parsed CRL's number, when it has one that fits 64 bits (provd's always do).
pub fn number_of(crl: &x509_parser::revocation_list::CertificateRevocationList<'_>) -> Option<u64> {
    let bytes = crl.crl_number()?.to_bytes_be();
    (bytes.len() <= 8).then(|| bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

/// The serial of a DER certificate as the registry writes it (lowercase hex).
pub fn serial_of_der(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(hex(cert.raw_serial()))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The subject CN of a PEM certificate (rcgen's `Issuer` does not expose it).
fn ca_common_name(pem: &str) -> Option<String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

/// Write an operator's client certificate and key where virsh looks for them in `dir`
/// (`clientcert.pem`, `clientkey.pem` 0600, `cacert.pem`).
pub fn write_client(dir: &Path, ca: &Ca, cert: &str, key: &str) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_file(&dir.join("cacert.pem"), ca.cert_pem(), 0o644)?;
    write_file(&dir.join("clientcert.pem"), cert, 0o644)?;
    write_file(&dir.join("clientkey.pem"), key, 0o600)
}

#[cfg(test)]
mod tests;
