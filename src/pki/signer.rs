//! The signer: what provd's CA signs for hosts, and the records of it. Signing under the
//! `[pki] sign` policy, operators' approval and rejection of kept requests, revocation, the
//! CRL and renewal. It owns the CA (`Ca` only signs) and the certificate registry
//! (`registry` only remembers).
//!
//! It never decides *whether a host may ask*: that is the boot policy's job
//! (`boot::certificates`: the host's own address, its install token, its profile's
//! certificate roles, the pool's verification). The signer gets an `Applicant` the policy
//! has checked, and checks what is about certificates: key type and names, proofs of
//! possession, the current certificate a renewal replaces, the reissue rate.

use super::registry::{CertRecord, CertState, CsrRequest, Decision, Registry, RegistryError};
use super::{Ca, HostIdentity, Issued, PkiError, Role, csr};
use crate::config::SignPolicy;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// At most one token-free certificate (migration, renewal) per host and role in this time.
pub const REISSUE_SECONDS: i64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("this provd has no CA: run `provd pki init`")]
    NoCa,
    #[error("{0}")]
    Certificate(#[from] PkiError),
    /// The proof of the host's server key is missing or does not hold.
    #[error("{0}")]
    BadProof(String),
    /// Asked again too soon (renewals and migration certificates are rate-limited).
    #[error("a {role} certificate was issued to this host {ago} s ago; ask again in {wait} s")]
    TooSoon { role: &'static str, ago: i64, wait: i64 },
    /// An operator rejected this host's certificate request (`provd pki reject`).
    #[error("the certificate request was rejected by an operator")]
    Rejected,
    /// A renewal for a key provd holds no valid certificate of this host and role for.
    #[error("no valid {role} certificate of this host for that key: renewal needs the current key")]
    NotRenewable { role: &'static str },
    /// A renewal before the certificate's renewal window opens (`renew`).
    #[error("the {role} certificate is not due for renewal: ask again in {opens_in} s (in its last {window} s)")]
    NotDue {
        role: &'static str,
        opens_in: i64,
        window: i64,
    },
    #[error("{0}")]
    Registry(#[from] RegistryError),
}

/// A host whose request the boot policy has accepted: its names from the config and the
/// addresses provd knows for it (reservation, lease). The address a request came from is
/// added per request (it was checked to be one of the host's).
#[derive(Debug, Clone)]
pub struct Applicant {
    pub hostname: String,
    pub fqdn: String,
    pub site: String,
    pub known: Vec<Ipv4Addr>,
}

impl Applicant {
    /// Who a certificate of `role` asked from `from` is for.
    fn identity(&self, from: Ipv4Addr, role: Role) -> HostIdentity {
        let mut addresses = self.known.clone();
        if !addresses.contains(&from) {
            addresses.push(from);
        }
        HostIdentity {
            fqdn: self.fqdn.clone(),
            short: self.hostname.split('.').next().unwrap_or(&self.hostname).to_string(),
            addresses: addresses.into_iter().map(Into::into).collect(),
            unit: match role {
                Role::Server => super::host_unit(&self.site),
                Role::Client => super::migration_unit(&self.site),
            },
        }
    }
}

/// The answer to an install's certificate request.
#[derive(Debug, PartialEq, Eq)]
pub enum InstallAnswer {
    /// Signed now (`auto`): the caller spends the role on the token.
    Issued(String),
    /// Signed earlier by an operator and collected now: the caller spends the role on the
    /// token, then `collected` forgets the request.
    Approved(String),
    /// Kept for an operator (`approve`): ask again later.
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
    pub state: CertState,
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

fn now() -> i64 {
    crate::clock::unix_now() as i64
}

pub struct Signer {
    /// The CA that signs hosts' libvirt certificates, when `provd pki init` has made one.
    ca: Option<Arc<Ca>>,
    /// What the CA issued and which requests wait for an operator.
    certificates: Arc<Registry>,
    /// The last CRL signed, with what it names: `/pki/crl.pem` is unauthenticated, and
    /// signing afresh for every GET would let anyone on the boot network spend the CA's
    /// CPU.
    crl: std::sync::Mutex<Option<SignedCrl>>,
}

/// A CRL as signed: what it names (sorted), when it was made and its number.
struct SignedCrl {
    names: Vec<(String, i64)>,
    made: i64,
    number: u64,
    pem: String,
}

/// A cached CRL is signed again after this long, well before its nextUpdate
/// (`pki::CRL_DAYS`), even when nothing was revoked.
const CRL_RESIGN_SECONDS: i64 = super::CRL_DAYS * 86_400 / 3;

impl Signer {
    pub fn new(ca: Option<Arc<Ca>>, certificates: Arc<Registry>) -> Signer {
        Signer {
            ca,
            certificates,
            crl: std::sync::Mutex::new(None),
        }
    }

    pub fn certificates(&self) -> &Arc<Registry> {
        &self.certificates
    }

    pub fn ca(&self) -> Result<&Ca, SignError> {
        self.ca.as_deref().ok_or(SignError::NoCa)
    }

    /// The CA certificate (PEM), when there is a CA.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca.as_deref().map(Ca::cert_pem)
    }

    /// Sign and remember (the record is durable before the certificate leaves provd).
    async fn issue(
        &self,
        who: &Applicant,
        from: Ipv4Addr,
        csr_pem: &str,
        role: Role,
        how: &str,
    ) -> Result<Issued, SignError> {
        let issued = self
            .ca()?
            .sign_host(csr_pem, &who.identity(from, role), role, super::DEFAULT_LEAF_DAYS)?;
        self.certificates
            .issued(CertRecord {
                serial: issued.serial.clone(),
                host: who.hostname.clone(),
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

    /// The server certificate of an install whose token the policy accepted, under
    /// `policy`. Key type, size and names are refused before anything is kept or signed.
    pub async fn install(
        &self,
        who: &Applicant,
        token: &str,
        csr_pem: &str,
        from: Ipv4Addr,
        policy: SignPolicy,
    ) -> Result<InstallAnswer, SignError> {
        let role = Role::Server;
        self.ca()?;
        let facts = csr::inspect(csr_pem)?;
        super::check_names(&facts, &who.identity(from, role))?;
        match policy {
            SignPolicy::Auto => {
                let issued = self.issue(who, from, csr_pem, role, "install").await?;
                Ok(InstallAnswer::Issued(issued.pem))
            }
            SignPolicy::Approve => {
                let kept = self
                    .certificates
                    .request(&who.hostname, role)
                    .filter(|r| r.token == token);
                match kept {
                    Some(CsrRequest {
                        decision: Decision::Approved { certificate, .. },
                        ..
                    }) if csr::certificate_key_id(&certificate).as_deref() == Some(facts.key_id.as_str()) => {
                        Ok(InstallAnswer::Approved(certificate))
                    }
                    Some(CsrRequest {
                        decision: Decision::Rejected { .. },
                        ..
                    }) => Err(SignError::Rejected),
                    Some(CsrRequest {
                        decision: Decision::Waiting,
                        csr,
                        ..
                    }) if csr == csr_pem => Ok(InstallAnswer::Waiting),
                    // New, or a new key for the same token: this CSR is the one to decide.
                    _ => {
                        self.certificates
                            .put_request(CsrRequest {
                                host: who.hostname.clone(),
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
                            who.hostname,
                            who.hostname
                        );
                        Ok(InstallAnswer::Waiting)
                    }
                }
            }
        }
    }

    /// An approved certificate was handed to its host: the request is done.
    pub async fn collected(&self, hostname: &str, role: Role) -> Result<(), SignError> {
        Ok(self.certificates.remove_request(hostname, role).await?)
    }

    /// The client certificate for migration of a host the pool has verified: the body is
    /// the CSR and then a proof, made with the key of the host's valid server certificate,
    /// that vouches for the CSR's key. It replaces (and revokes) the host's earlier ones.
    pub async fn migration(&self, who: &Applicant, body: &str, from: Ipv4Addr) -> Result<String, SignError> {
        self.ca()?;
        let parts = csr::split_requests(body);
        let [csr_pem, proof_pem] = parts.as_slice() else {
            return Err(SignError::BadProof(format!(
                "send the CSR and then the proof (two PEM certificate requests), not {}",
                parts.len()
            )));
        };
        let facts = csr::inspect(csr_pem)?;
        super::check_names(&facts, &who.identity(from, Role::Client))?;
        let proof = csr::proof(proof_pem)?;
        let now = now();
        if self
            .certificates
            .current(&who.hostname, Role::Server, &proof.key_id, now)
            .is_none()
        {
            return Err(SignError::BadProof(
                "the proof is not signed by the key of this host's valid server certificate".into(),
            ));
        }
        if proof.vouches_for != facts.key_id {
            return Err(SignError::BadProof(
                "the proof vouches for another key than the CSR's".into(),
            ));
        }
        self.not_too_soon(&who.hostname, Role::Client, "migration", now)?;
        // One migration identity per host: the new one replaces (and revokes) the old.
        let replaced = self.certificates.revoke(&who.hostname, Some(Role::Client), now).await?;
        for c in &replaced {
            tracing::info!("{}: client certificate {} revoked: replaced", who.hostname, c.serial);
        }
        let issued = self.issue(who, from, csr_pem, Role::Client, "migration").await?;
        Ok(issued.pem)
    }

    /// Certificates that need no token (migration, renewal) are rate-limited per host and
    /// role: one per `REISSUE_SECONDS`, so a machine holding a host's key cannot grow the
    /// registry and the CRL without bound.
    fn not_too_soon(&self, host: &str, role: Role, how: &str, now: i64) -> Result<(), SignError> {
        let last = self
            .certificates
            .certificates()
            .into_iter()
            // Per way of issuing: an install's own certificate does not delay the host's
            // first renewal, nor a migration certificate its renewal.
            .filter(|c| c.host == host && c.role == role.name() && c.how == how)
            .map(|c| c.issued_at)
            .max();
        match last {
            Some(at) if now - at < REISSUE_SECONDS => Err(SignError::TooSoon {
                role: role.name(),
                ago: now - at,
                wait: REISSUE_SECONDS - (now - at),
            }),
            _ => Ok(()),
        }
    }

    /// `provd pki approve|reject HOST`: sign (approve) or refuse the host's waiting
    /// requests; with `only`, just the one whose key has that fingerprint. Returns what was
    /// decided.
    pub async fn decide(&self, who: &Applicant, approve: bool, only: Option<&str>) -> Result<Vec<Decided>, SignError> {
        let mut done = Vec::new();
        for role in [Role::Server, Role::Client] {
            let Some(req) = self.certificates.request(&who.hostname, role) else {
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
                let issued = self.issue(who, req.from, &req.csr, role, "approved").await?;
                Decision::Approved {
                    serial: issued.serial,
                    certificate: issued.pem,
                }
            } else {
                Decision::Rejected { at: now() }
            };
            self.certificates.put_request(CsrRequest { decision, ..req }).await?;
            done.push(Decided {
                role: role.name().to_string(),
                fingerprint,
            });
        }
        Ok(done)
    }

    /// A host's valid certificates (of `role`, or all) become revoked.
    pub async fn revoke_host(&self, hostname: &str, role: Option<Role>) -> Result<Vec<CertRecord>, SignError> {
        Ok(self.certificates.revoke(hostname, role, now()).await?)
    }

    /// An identity that is not a host (an operator's `issue-client` name, the pool's
    /// "provd", "admin API ...", "replication ..."): its valid certificates become revoked.
    /// None when provd never issued to that name.
    pub async fn revoke_identity(&self, name: &str) -> Result<Option<Vec<CertRecord>>, SignError> {
        if !self.certificates.certificates().iter().any(|c| c.host == name) {
            return Ok(None);
        }
        Ok(Some(self.certificates.revoke_identity(name, now()).await?))
    }

    /// The CA's CRL, signed now.
    pub fn crl_pem(&self) -> Result<String, SignError> {
        let now = time::OffsetDateTime::now_utc();
        let ca = self.ca()?;
        let mut names = self.certificates.revoked(now.unix_timestamp());
        names.sort();
        let mut cache = self.crl.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.as_ref()
            && c.names == names
            && now.unix_timestamp() - c.made < CRL_RESIGN_SECONDS
        {
            return Ok(c.pem.clone());
        }
        let number = crate::pki::next_crl_number(cache.as_ref().map(|c| c.number), now);
        let pem = ca.crl_numbered(&names, now, number)?;
        *cache = Some(SignedCrl {
            names,
            made: now.unix_timestamp(),
            number,
            pem: pem.clone(),
        });
        Ok(pem)
    }

    /// A new certificate for the key the host already holds a valid `role` certificate for
    /// (new serial, new validity). The certificate it replaces is revoked; one renewal per
    /// role per `REISSUE_SECONDS`, and only once the current certificate is in its renewal
    /// window: its last `within` seconds (None: the last third of its life). Without the
    /// window a machine holding a host's key could renew once a minute forever, each
    /// renewal a new CRL entry.
    pub async fn renew(
        &self,
        who: &Applicant,
        role: Role,
        csr_pem: &str,
        from: Ipv4Addr,
        within: Option<i64>,
    ) -> Result<String, SignError> {
        self.ca()?;
        let facts = csr::inspect(csr_pem)?;
        let now = now();
        let Some(current) = self.certificates.current(&who.hostname, role, &facts.key_id, now) else {
            return Err(SignError::NotRenewable { role: role.name() });
        };
        let window = within.unwrap_or((current.not_after - current.issued_at) / 3);
        let opens = current.not_after - window;
        if now < opens {
            return Err(SignError::NotDue {
                role: role.name(),
                opens_in: opens - now,
                window,
            });
        }
        self.not_too_soon(&who.hostname, role, "renewal", now)?;
        let issued = self.issue(who, from, csr_pem, role, "renewal").await?;
        self.certificates.revoke_serial(&current.serial, now).await?;
        Ok(issued.pem)
    }

    /// Every certificate and request, for `provd pki list` and the metrics.
    pub fn list(&self, policy: SignPolicy) -> CertificateList {
        let now = now();
        CertificateList {
            policy,
            now,
            certificates: self
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
mod tests;
