//! Hosts' libvirt certificates: the signing policy (`[pki] sign`), approval, revocation and
//! the CRL, renewal. The CA (`pki::Ca`) only signs; the registry (`pki::registry`) only
//! remembers; this module decides who gets what, with the same host checks as every other
//! install secret (the host's own address, its install token).
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
use crate::config::{Host, SignPolicy, Site};
use crate::mac::MacAddr;
use crate::pki::registry::{CertRecord, CsrRequest, Decision};
use crate::pki::{Ca, HostIdentity, Role, csr};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The answer to a certificate request.
#[derive(Debug)]
pub enum SignOutcome {
    /// The certificate (PEM).
    Issued(String),
    /// Kept for an operator (`approve` policy): ask again later.
    Waiting,
}

/// `provd pki list`: every issued certificate and every kept request. `GET /api/pki`
/// answers this; the CLI reads the same type back.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateList {
    pub policy: SignPolicy,
    pub now: i64,
    pub certificates: Vec<CertView>,
    pub requests: Vec<RequestView>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CertView {
    #[serde(flatten)]
    pub record: CertRecord,
    pub state: crate::pki::registry::CertState,
    /// Seconds until `not_after` (negative once expired).
    pub expires_in: i64,
}

/// A request as the API shows it (the CSR and token stay inside).
#[derive(Debug, Serialize, Deserialize)]
pub struct RequestView {
    pub host: String,
    pub role: String,
    pub from: Ipv4Addr,
    pub asked_at: i64,
    pub key: String,
    /// SHA-256 of the CSR's public key (SubjectPublicKeyInfo, DER), hex: what the host's
    /// installer prints on its console, for the operator to compare before approving.
    pub fingerprint: String,
    pub state: RequestState,
}

/// Where a kept request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    Waiting,
    Approved,
    Rejected,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Waiting => "waiting",
            RequestState::Approved => "approved",
            RequestState::Rejected => "rejected",
        }
    }
}

/// One decision on a kept request, as `provd pki approve/reject` reports it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Decided {
    pub role: String,
    pub fingerprint: String,
}

/// The answer to `POST /api/pki/<host>/approve|reject`: the decisions taken (none when no
/// waiting request matched).
#[derive(Debug, Serialize, Deserialize)]
pub struct Decisions {
    pub host: String,
    pub keys: Vec<Decided>,
}

/// The answer to `POST /api/pki/<host>/revoke`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Revoked {
    pub host: String,
    pub revoked: Vec<CertRecord>,
}

/// At most one token-free certificate (migration, renewal) per host and role in this time.
pub const REISSUE_SECONDS: i64 = 60;

fn now() -> i64 {
    crate::clock::unix_now() as i64
}

impl Boot {
    fn ca(&self) -> Result<&Ca, BootError> {
        self.state.ca.as_deref().ok_or(BootError::NoCa)
    }

    /// Who the certificate is for: names from the config, addresses where provd knows the
    /// host (its reservation, its lease) plus the checked address the request came from.
    fn identity(&self, mac: MacAddr, site: &Site, host: &Host, from: Ipv4Addr, role: Role) -> HostIdentity {
        let mut known = self.known_addresses(mac, host);
        if !known.contains(&from) {
            known.push(from);
        }
        HostIdentity {
            fqdn: site.fqdn(&host.hostname),
            short: host.hostname.split('.').next().unwrap_or(&host.hostname).to_string(),
            addresses: known.into_iter().map(Into::into).collect(),
            unit: match role {
                Role::Server => crate::pki::host_unit(&site.name),
                Role::Client => crate::pki::migration_unit(&site.name),
            },
        }
    }

    /// Sign and remember (the record is durable before the certificate leaves provd).
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        mac: MacAddr,
        site: &Site,
        host: &Host,
        from: Ipv4Addr,
        csr_pem: &str,
        role: Role,
        how: &str,
    ) -> Result<crate::pki::Issued, BootError> {
        let identity = self.identity(mac, site, host, from, role);
        let issued = self
            .ca()?
            .sign_host(csr_pem, &identity, role, crate::pki::DEFAULT_LEAF_DAYS)?;
        self.state
            .certificates
            .issued(CertRecord {
                serial: issued.serial.clone(),
                host: host.hostname.clone(),
                role: role.name().into(),
                issued_at: now(),
                not_after: issued.not_after,
                key_id: issued.key_id.clone(),
                how: how.into(),
                revoked_at: None,
            })
            .await?;
        Ok(issued)
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
        self.ca()?;
        let profile = host
            .profile
            .as_deref()
            .and_then(|p| self.generation.config.profiles.get(p));
        if !profile.is_some_and(|p| p.signs(role.name())) {
            return Err(BootError::NoCertificateRole {
                host: host.hostname.clone(),
                profile: host.profile.clone().unwrap_or_else(|| "(none)".into()),
                role: role.name(),
            });
        }
        match role {
            Role::Server => self.sign_install(mac, site, host, token, body, from).await,
            Role::Client => self
                .sign_migration(mac, site, host, body, from)
                .await
                .map(SignOutcome::Issued),
        }
    }

    /// The client certificate for migration: the host is ready (the pool verified it), the
    /// body is the CSR and then a proof, made with the key of the host's valid server
    /// certificate, that vouches for the CSR's key.
    async fn sign_migration(
        &self,
        mac: MacAddr,
        site: &Site,
        host: &Host,
        body: &str,
        from: Ipv4Addr,
    ) -> Result<String, BootError> {
        let status = self.state.inventory.get(mac).await.map(|r| r.status);
        if status != Some(crate::inventory::Status::Ready) {
            return Err(BootError::NotVerified {
                host: host.hostname.clone(),
                status: status.map_or("unknown", |s| s.as_str()),
            });
        }
        let parts = csr::split_requests(body);
        let [csr_pem, proof_pem] = parts.as_slice() else {
            return Err(BootError::BadProof(format!(
                "send the CSR and then the proof (two PEM certificate requests), not {}",
                parts.len()
            )));
        };
        let facts = csr::inspect(csr_pem)?;
        crate::pki::check_names(&facts, &self.identity(mac, site, host, from, Role::Client))?;
        let proof = csr::proof(proof_pem)?;
        let now = now();
        if self
            .state
            .certificates
            .current(&host.hostname, Role::Server, &proof.key_id, now)
            .is_none()
        {
            return Err(BootError::BadProof(
                "the proof is not signed by the key of this host's valid server certificate".into(),
            ));
        }
        if proof.vouches_for != facts.key_id {
            return Err(BootError::BadProof(
                "the proof vouches for another key than the CSR's".into(),
            ));
        }
        self.not_too_soon(&host.hostname, Role::Client, "migration", now)?;
        // One migration identity per host: the new one replaces (and revokes) the old.
        let replaced = self
            .state
            .certificates
            .revoke(&host.hostname, Some(Role::Client), now)
            .await?;
        for c in &replaced {
            tracing::info!("{}: client certificate {} revoked: replaced", host.hostname, c.serial);
        }
        let issued = self
            .issue(mac, site, host, from, csr_pem, Role::Client, "migration")
            .await?;
        Ok(issued.pem)
    }

    /// Certificates that need no token (migration, renewal) are rate-limited per host and
    /// role: one per `REISSUE_SECONDS`, so a machine holding a host's key cannot grow the
    /// registry and the CRL without bound.
    fn not_too_soon(&self, host: &str, role: Role, how: &str, now: i64) -> Result<(), BootError> {
        let last = self
            .state
            .certificates
            .certificates()
            .into_iter()
            // Per way of issuing: an install's own certificate does not delay the host's
            // first renewal, nor a migration certificate its renewal.
            .filter(|c| c.host == host && c.role == role.name() && c.how == how)
            .map(|c| c.issued_at)
            .max();
        match last {
            Some(at) if now - at < REISSUE_SECONDS => Err(BootError::TooSoon {
                role: role.name(),
                ago: now - at,
                wait: REISSUE_SECONDS - (now - at),
            }),
            _ => Ok(()),
        }
    }

    /// The server certificate with the install token, under `[pki] sign`.
    async fn sign_install(
        &self,
        mac: MacAddr,
        site: &Site,
        host: &Host,
        token: &str,
        csr_pem: &str,
        from: Ipv4Addr,
    ) -> Result<SignOutcome, BootError> {
        let role = Role::Server;
        self.state
            .inventory
            .verify_signing_token(mac, token, from, role.name())
            .await?;
        // Key type, size and names are refused before anything is kept or signed.
        let facts = csr::inspect(csr_pem)?;
        crate::pki::check_names(&facts, &self.identity(mac, site, host, from, role))?;
        match self.generation.config.pki_sign {
            SignPolicy::Auto => {
                let issued = self.issue(mac, site, host, from, csr_pem, role, "install").await?;
                self.state
                    .inventory
                    .certificate_issued(mac, token, from, role.name())
                    .await?;
                Ok(SignOutcome::Issued(issued.pem))
            }
            SignPolicy::Approve => {
                let kept = self
                    .state
                    .certificates
                    .request(&host.hostname, role)
                    .filter(|r| r.token == token);
                match kept.map(|r| r.decision) {
                    Some(Decision::Approved { certificate, .. })
                        if csr::certificate_key_id(&certificate).as_deref() == Some(facts.key_id.as_str()) =>
                    {
                        self.state
                            .inventory
                            .certificate_issued(mac, token, from, role.name())
                            .await?;
                        self.state.certificates.remove_request(&host.hostname, role).await?;
                        Ok(SignOutcome::Issued(certificate))
                    }
                    Some(Decision::Rejected { .. }) => Err(BootError::Rejected),
                    Some(Decision::Waiting)
                        if self
                            .state
                            .certificates
                            .request(&host.hostname, role)
                            .map(|r| r.csr)
                            .as_deref()
                            == Some(csr_pem) =>
                    {
                        Ok(SignOutcome::Waiting)
                    }
                    // New, or a new key for the same token: this CSR is the one to decide.
                    _ => {
                        self.state
                            .certificates
                            .put_request(CsrRequest {
                                host: host.hostname.clone(),
                                role: role.name().into(),
                                csr: csr_pem.to_string(),
                                token: token.to_string(),
                                from,
                                asked_at: now(),
                                decision: Decision::Waiting,
                            })
                            .await?;
                        tracing::info!(
                            "{} certificate request from {} ({from}) waits: provd pki approve {}",
                            role.name(),
                            host.hostname,
                            host.hostname
                        );
                        Ok(SignOutcome::Waiting)
                    }
                }
            }
        }
    }

    /// `provd pki approve HOST [--fingerprint F]`: sign the host's waiting requests (only
    /// the one whose key has fingerprint F, when given). Returns what was decided.
    pub async fn approve(&self, name: &str, fingerprint: Option<&str>) -> Result<Vec<Decided>, BootError> {
        self.decide(name, true, fingerprint).await
    }

    /// `provd pki reject HOST`: refuse every waiting request of the host.
    pub async fn reject(&self, name: &str) -> Result<Vec<Decided>, BootError> {
        self.decide(name, false, None).await
    }

    async fn decide(&self, name: &str, approve: bool, only: Option<&str>) -> Result<Vec<Decided>, BootError> {
        let mac = self
            .state
            .inventory
            .find(&self.generation.config.hosts, name)
            .await
            .ok_or(BootError::UnknownHost)?;
        let (site, host) = self.configured(mac).ok_or(BootError::UnknownHost)?;
        let mut done = Vec::new();
        for role in [Role::Server, Role::Client] {
            let Some(req) = self.state.certificates.request(&host.hostname, role) else {
                continue;
            };
            if req.decision != Decision::Waiting {
                continue;
            }
            let fingerprint = csr::inspect(&req.csr)?.key_id;
            if only.is_some_and(|f| {
                !f.trim()
                    .trim_start_matches("sha256:")
                    .eq_ignore_ascii_case(&fingerprint)
            }) {
                continue;
            }
            let decision = if approve {
                let issued = self
                    .issue(mac, site, host, req.from, &req.csr, role, "approved")
                    .await?;
                Decision::Approved {
                    serial: issued.serial,
                    certificate: issued.pem,
                }
            } else {
                Decision::Rejected { at: now() }
            };
            self.state
                .certificates
                .put_request(CsrRequest { decision, ..req })
                .await?;
            done.push(Decided {
                role: role.name().to_string(),
                fingerprint,
            });
        }
        Ok(done)
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
            Some(host) => Ok(self.state.certificates.revoke(&host, role, now()).await?),
            None => {
                let known = self.state.certificates.certificates().iter().any(|c| c.host == name);
                if !known {
                    return Err(BootError::UnknownHost);
                }
                Ok(self.state.certificates.revoke_identity(name, now()).await?)
            }
        }
    }

    /// The CA's CRL, signed now.
    pub fn crl_pem(&self) -> Result<String, BootError> {
        let now = time::OffsetDateTime::now_utc();
        Ok(self
            .ca()?
            .crl(&self.state.certificates.revoked(now.unix_timestamp()), now)?)
    }

    /// `POST /pki/renew`: a new certificate for the key the host already holds a valid
    /// `role` certificate for (new serial, new validity), from the host's own address. The
    /// certificate it replaces is revoked; one renewal per role per `REISSUE_SECONDS`.
    pub async fn renew(&self, name: &str, role: Role, csr_pem: &str, from: Ipv4Addr) -> Result<String, BootError> {
        let (mac, site, host) = self.host_asked_from(name, from).await?;
        self.ca()?;
        let facts = csr::inspect(csr_pem)?;
        let now = now();
        let Some(current) = self
            .state
            .certificates
            .current(&host.hostname, role, &facts.key_id, now)
        else {
            return Err(BootError::NotRenewable { role: role.name() });
        };
        self.not_too_soon(&host.hostname, role, "renewal", now)?;
        let issued = self.issue(mac, site, host, from, csr_pem, role, "renewal").await?;
        self.state.certificates.revoke_serial(&current.serial, now).await?;
        Ok(issued.pem)
    }

    /// Every certificate and request, for `provd pki list` and the metrics.
    pub fn certificate_list(&self) -> CertificateList {
        let now = now();
        CertificateList {
            policy: self.generation.config.pki_sign,
            now,
            certificates: self
                .state
                .certificates
                .certificates()
                .into_iter()
                .map(|record| CertView {
                    state: record.state(now),
                    expires_in: record.not_after - now,
                    record,
                })
                .collect(),
            requests: self
                .state
                .certificates
                .requests()
                .into_iter()
                .map(|r| RequestView {
                    key: csr::inspect(&r.csr).map(|f| f.key.to_string()).unwrap_or_default(),
                    fingerprint: csr::inspect(&r.csr).map(|f| f.key_id).unwrap_or_default(),
                    state: match r.decision {
                        Decision::Waiting => RequestState::Waiting,
                        Decision::Approved { .. } => RequestState::Approved,
                        Decision::Rejected { .. } => RequestState::Rejected,
                    },
                    host: r.host,
                    role: r.role,
                    from: r.from,
                    asked_at: r.asked_at,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `GET /api/pki` is read back by the CLI into the same types (a flattened record, the
    /// states as words): what the server writes, the client reads, field for field.
    #[test]
    fn the_certificate_list_round_trips_between_server_and_cli() {
        let record = CertRecord {
            serial: "0a1b".into(),
            host: "hv1".into(),
            role: "server".into(),
            issued_at: 10,
            not_after: 20,
            key_id: "ab".repeat(32),
            how: "install".into(),
            revoked_at: None,
        };
        let list = CertificateList {
            policy: SignPolicy::Approve,
            now: 15,
            certificates: vec![CertView {
                record: record.clone(),
                state: crate::pki::registry::CertState::Valid,
                expires_in: 5,
            }],
            requests: vec![RequestView {
                host: "hv2".into(),
                role: "server".into(),
                from: Ipv4Addr::new(10, 0, 0, 2),
                asked_at: 12,
                key: "EC P-256".into(),
                fingerprint: "cd".repeat(32),
                state: RequestState::Waiting,
            }],
        };
        let wire = serde_json::to_value(&list).unwrap();
        assert_eq!(
            wire["certificates"][0]["serial"], "0a1b",
            "the record is flat on the wire"
        );
        assert_eq!(wire["certificates"][0]["state"], "valid");
        assert_eq!(wire["requests"][0]["state"], "waiting");
        assert_eq!(wire["policy"], "approve");
        let back: CertificateList = serde_json::from_value(wire).unwrap();
        assert_eq!(back.certificates[0].record, record);
        assert_eq!(back.requests[0].state, RequestState::Waiting);
        assert_eq!(back.policy.as_str(), "approve");
    }
}
