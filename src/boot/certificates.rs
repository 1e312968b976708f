//! Who may ask for a libvirt certificate: the boot policy's half of certificates. It checks
//! the host as for every other install secret (the host's own address, its install token,
//! its profile, the pool's verification) and hands an `Applicant` to `pki::Signer`, which
//! signs, keeps requests for approval, revokes and makes the CRL.
//!
//! Which certificates a host gets is its profile's word (`certificates = ["server",
//! "client"]`); a profile that declares none (a plain EL install) gets none, whatever its
//! token. The two roles are earned differently, because they open different doors:
//! - **server** (`O=<CA>,OU=site S,CN=<fqdn>`): with the install token, from the address the
//!   token is bound to, once per install. It lets the host *be* itself over TLS; no
//!   hypervisor allows it as a client, so a machine that steals the token before the host
//!   uses it gets a certificate that opens nothing.
//! - **client** (`OU=site S migration`), what hypervisors allow for peer-to-peer migration:
//!   never with the token. Only once the pool has verified the host (provd reached libvirt
//!   at the host's address over TLS and it presented the server certificate provd issued),
//!   from the host's address, with a proof of the server key (`csr::proof`). Issuing one
//!   revokes the host's earlier client certificates; one per minute at most.
//!
//! For the server role, `[pki] sign` decides:
//! - `auto`: a CSR with the host's install token, from its leased or reserved address, is
//!   signed at once (each role once per token).
//! - `approve`: the same request is kept (one per host and role) and answered 202 until an
//!   operator approves it; the host's next identical request collects the certificate
//!   (and spends the role on its token). A rejected request is answered 403 until the host
//!   is reinstalled (a new token makes a new request).
//! - Renewal needs no token: the CSR must be signed by a key that provd certified for this
//!   host and role, and that certificate must still be valid (not expired, not revoked).
//!   A CSR's self-signature proves possession of its key (rcgen verifies it), so "the host
//!   proves itself with its current certificate" without TLS on the boot listener.
//! - Revocation marks records; the CRL (`/pki/crl.pem`) is signed fresh from them on request.

use super::{Boot, BootError};
use crate::config::{Host, Site};
use crate::mac::MacAddr;
use crate::pki::Role;
use crate::pki::registry::CertRecord;
use crate::pki::signer::{Applicant, CertificateList, Decided, InstallAnswer, SignError};
use std::net::Ipv4Addr;

/// The answer to a certificate request.
#[derive(Debug)]
pub enum SignOutcome {
    /// The certificate (PEM).
    Issued(String),
    /// Kept for an operator (`approve` policy): ask again later.
    Waiting,
}

impl From<SignError> for BootError {
    fn from(e: SignError) -> Self {
        match e {
            SignError::NoCa => BootError::NoCa,
            SignError::Certificate(e) => BootError::Certificate(e),
            SignError::BadProof(why) => BootError::BadProof(why),
            SignError::TooSoon { role, ago, wait } => BootError::TooSoon { role, ago, wait },
            SignError::Rejected => BootError::Rejected,
            SignError::NotRenewable { role } => BootError::NotRenewable { role },
            SignError::NotDue { role, opens_in, window } => BootError::NotDue { role, opens_in, window },
            SignError::Registry(e) => BootError::Registry(e),
        }
    }
}

impl Boot {
    /// The host as the signer sees it: names from this generation's config, the addresses
    /// provd knows for it, and its static (IPAM) ones: a peer-to-peer migration dials the
    /// destination at its migration address, whose certificate must name it.
    fn applicant(&self, mac: MacAddr, site: &Site, host: &Host) -> Applicant {
        let mut known = self.known_addresses(mac, host);
        for a in self.static_addresses(mac) {
            if !known.contains(&a.address) {
                known.push(a.address);
            }
        }
        Applicant {
            hostname: host.hostname.clone(),
            fqdn: site.fqdn(&host.hostname),
            site: site.name.clone(),
            known,
        }
    }

    /// `POST /pki/sign`: a libvirt `role` certificate for host `name`, asked from `from`.
    /// Server: the CSR with the install token (see the module header); client (migration):
    /// the CSR followed by a proof made with the host's server key, no token.
    pub async fn sign_csr(
        &self,
        name: &str,
        token: &str,
        role: Role,
        body: &str,
        from: Ipv4Addr,
    ) -> Result<SignOutcome, BootError> {
        let (mac, site, host) = self.host_asked_from(name, from).await?;
        self.signer().ca()?;
        self.profile_signs(host, role)?;
        let who = self.applicant(mac, site, host);
        match role {
            Role::Server => self.sign_install(mac, &who, token, body, from).await,
            Role::Client => {
                // Only once the pool has verified the host (see the module header).
                let status = self.state.inventory.get(mac).await.map(|r| r.status);
                if status != Some(crate::inventory::Status::Ready) {
                    return Err(BootError::NotVerified {
                        host: host.hostname.clone(),
                        status: status.map_or("unknown", |s| s.as_str()),
                    });
                }
                Ok(SignOutcome::Issued(self.signer().migration(&who, body, from).await?))
            }
        }
    }

    /// Whether the host's profile (in this generation) declares certificates of `role`:
    /// asked for every signature and every renewal, so a profile that drops a role stops
    /// its renewals too.
    fn profile_signs(&self, host: &Host, role: Role) -> Result<(), BootError> {
        let profile = host
            .profile
            .as_deref()
            .and_then(|p| self.generation.config.profiles.get(p));
        if profile.is_some_and(|p| p.signs(role.name())) {
            return Ok(());
        }
        Err(BootError::NoCertificateRole {
            host: host.hostname.clone(),
            profile: host.profile.clone().unwrap_or_else(|| "(none)".into()),
            role: role.name(),
        })
    }

    /// The server certificate with the install token, under `[pki] sign`: the token is
    /// checked first, and spent (for this role) once the certificate is handed out.
    async fn sign_install(
        &self,
        mac: MacAddr,
        who: &Applicant,
        token: &str,
        csr_pem: &str,
        from: Ipv4Addr,
    ) -> Result<SignOutcome, BootError> {
        let role = Role::Server;
        let inventory = &self.state.inventory;
        inventory.verify_signing_token(mac, token, from, role.name()).await?;
        let policy = self.generation.config.pki_sign;
        match self.signer().install(who, token, csr_pem, from, policy).await? {
            InstallAnswer::Issued(pem) => {
                inventory.certificate_issued(mac, token, from, role.name()).await?;
                Ok(SignOutcome::Issued(pem))
            }
            InstallAnswer::Approved(pem) => {
                inventory.certificate_issued(mac, token, from, role.name()).await?;
                self.signer().collected(&who.hostname, role).await?;
                Ok(SignOutcome::Issued(pem))
            }
            InstallAnswer::Waiting => Ok(SignOutcome::Waiting),
        }
    }

    /// `provd pki approve HOST [--fingerprint F]`: sign the host's waiting requests (only
    /// the one whose key has fingerprint F, when given). Returns what was decided.
    pub async fn approve(&self, name: &str, fingerprint: Option<&str>) -> Result<Vec<Decided>, BootError> {
        let who = self.configured_applicant(name).await?;
        Ok(self.signer().decide(&who, true, fingerprint).await?)
    }

    /// `provd pki reject HOST`: refuse every waiting request of the host.
    pub async fn reject(&self, name: &str) -> Result<Vec<Decided>, BootError> {
        let who = self.configured_applicant(name).await?;
        Ok(self.signer().decide(&who, false, None).await?)
    }

    /// The configured host `name` (hostname or MAC) as an applicant, for an operator's
    /// decision (no address check: the operator asks, not the host).
    async fn configured_applicant(&self, name: &str) -> Result<Applicant, BootError> {
        let (mac, site, host) = self.configured_named(name).await?;
        Ok(self.applicant(mac, site, host))
    }

    /// `provd pki revoke HOST [--role]`: the host's valid certificates become revoked and
    /// the next CRL names them. Returns the revoked records.
    /// NAME may also be an identity that is not a host (an operator's `issue-client` name,
    /// the pool's "provd", "admin API ...", "replication ..."): its valid certificates are
    /// revoked, and the admin and replication listeners and (after their CRL refresh) the
    /// hypervisors refuse them.
    pub async fn revoke(&self, name: &str, role: Option<Role>) -> Result<Vec<CertRecord>, BootError> {
        let host = match self.state.inventory.find(&self.generation.config.hosts, name).await {
            Some(mac) => self.configured(mac).map(|(_, h)| h.hostname.clone()),
            None => None,
        };
        match host {
            Some(host) => Ok(self.signer().revoke_host(&host, role).await?),
            None => self.signer().revoke_identity(name).await?.ok_or(BootError::UnknownHost),
        }
    }

    /// The CA's CRL, signed now.
    pub fn crl_pem(&self) -> Result<String, BootError> {
        Ok(self.signer().crl_pem()?)
    }

    /// `POST /pki/renew`: a new certificate for the key the host already holds a valid
    /// `role` certificate for, from the host's own address, if its profile still declares
    /// the role and the certificate is in its renewal window (`Signer::renew`).
    pub async fn renew(&self, name: &str, role: Role, csr_pem: &str, from: Ipv4Addr) -> Result<String, BootError> {
        let (mac, site, host) = self.host_asked_from(name, from).await?;
        self.profile_signs(host, role)?;
        let who = self.applicant(mac, site, host);
        let within = self.generation.config.pki_renew_within;
        Ok(self.signer().renew(&who, role, csr_pem, from, within).await?)
    }

    /// Every certificate and request, for `provd pki list` and the metrics.
    pub fn certificate_list(&self) -> CertificateList {
        self.signer().list(self.generation.config.pki_sign)
    }
}
