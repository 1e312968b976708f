//! `provd pki ...`: the CA on disk (init, issue-client) and, through the daemon's admin API,
//! what it issued (list), the approval queue (pending, approve, reject) and revocation.

use super::{DEFAULT_CONFIG, ServerTarget};
use crate::config;
use crate::pki::signer::RequestView;
use crate::pki::signer::{CertificateList, Decisions, RequestState, Revoked};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PkiCommand {
    /// Create the CA: ca-key.pem (0600, never served) and ca-cert.pem in the PKI directory
    /// ([daemon] pki_dir, default <state_dir>/pki). Refuses to replace an existing CA.
    Init {
        #[command(flatten)]
        dir: PkiDir,
        /// How long the CA is valid.
        #[arg(long, default_value_t = crate::pki::DEFAULT_CA_DAYS)]
        days: i64,
        /// The CA's common name.
        #[arg(long, default_value = crate::pki::DEFAULT_CA_NAME)]
        name: String,
        /// Make a new CA even if one exists (see the pki module docs on renewal).
        #[arg(long)]
        force: bool,
    },
    /// Write a client certificate and key signed by the CA (for operators and `provd vm`):
    /// cacert.pem, clientcert.pem, clientkey.pem (0600) in --out. Without --admin it carries
    /// OU "provd operator", which hypervisors allow. Its record goes to <pki_dir>/issued.jsonl,
    /// which the daemon imports into its registry (`provd pki list`, `provd pki revoke NAME`).
    IssueClient {
        /// The certificate's common name.
        name: String,
        /// An operator certificate for the admin API over HTTPS ([daemon] api_tls):
        /// OU="provd admin". Without it, the certificate is for libvirt (`provd vm`).
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        dir: PkiDir,
        #[arg(long, default_value_t = crate::pki::DEFAULT_LEAF_DAYS)]
        days: i64,
    },
    /// Every certificate the CA issued (host, role, serial, state, expiry) and every
    /// certificate request kept for an operator. Asks the running daemon.
    List {
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Certificate requests waiting for `provd pki approve` ([pki] sign = "approve").
    Pending {
        #[command(flatten)]
        target: ServerTarget,
        #[arg(long)]
        json: bool,
    },
    /// Sign the host's waiting certificate requests; the host collects them on its next try.
    /// Compare the key fingerprint `provd pki pending` shows with the one the host's
    /// installer printed on its console first; --fingerprint approves only that key.
    Approve {
        host: String,
        /// Approve only the request whose key has this SHA-256 fingerprint (hex, as the
        /// console and `provd pki pending` print it).
        #[arg(long)]
        fingerprint: Option<String>,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Refuse the host's waiting certificate requests (its installer is told 403 and stops).
    Reject {
        host: String,
        #[command(flatten)]
        target: ServerTarget,
    },
    /// Revoke the valid certificates of NAME: a host (one role with --role), an operator
    /// (`issue-client NAME`), or one of provd's own ("provd" for the pool, "admin API ...",
    /// "replication ...", as `provd pki list` names them). The admin API and the replication
    /// link refuse them at once; the CRL served at /pki/crl.pem names them from now on, and
    /// hypervisors installed by provd fetch it hourly.
    Revoke {
        host: String,
        /// server or client (default: both).
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        target: ServerTarget,
    },
}

/// Where the CA lives: --pki-dir, else the config's.
#[derive(clap::Args)]
pub struct PkiDir {
    #[arg(long)]
    pki_dir: Option<PathBuf>,
    #[arg(long = "config", short = 'c', env = "PROVD_CONFIG", default_value = DEFAULT_CONFIG)]
    config: Vec<PathBuf>,
}

impl PkiDir {
    fn resolve(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.pki_dir {
            return Ok(d.clone());
        }
        let cfg = config::load(&self.config).map_err(|e| anyhow::anyhow!("{e}\n(or pass --pki-dir)"))?;
        Ok(cfg.daemon.pki_dir(&cfg.daemon.state_dir))
    }
}

pub fn run(cmd: PkiCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PkiCommand::Init { dir, days, name, force } => {
            let dir = dir.resolve()?;
            crate::pki::init(&dir, &name, days, force)?;
            println!(
                "CA created in {}: {} (key {}, mode 0600)",
                dir.display(),
                crate::pki::CA_CERT,
                crate::pki::CA_KEY
            );
        }
        PkiCommand::IssueClient {
            name,
            admin,
            out,
            dir,
            days,
        } => {
            let pki_dir = dir.resolve()?;
            let ca = crate::pki::Ca::load(&pki_dir)?;
            let (cert, key) = ca.issue_client(&name, days, admin)?;
            // Every certificate the CA makes is in the registry (and so revocable): the
            // daemon imports this record within seconds, or at its next start.
            let role = if admin {
                crate::pki::registry::ADMIN_ROLE
            } else {
                crate::pki::registry::OPERATOR_ROLE
            };
            let record = crate::pki::registry::CertRecord::minted(
                &cert,
                &name,
                role,
                "issue-client",
                crate::clock::unix_now() as i64,
            )?;
            crate::pki::registry::append_inbox(&pki_dir, &record)
                .map_err(|e| anyhow::anyhow!("{}: {e}", pki_dir.join(crate::pki::registry::INBOX).display()))?;
            crate::pki::write_client(&out, &ca, &cert, &key)?;
            println!(
                "client certificate for {name:?} (serial {}) in {}: cacert.pem, clientcert.pem, clientkey.pem; \
                 `provd pki revoke {name}` revokes it",
                record.serial,
                out.display()
            );
        }
        PkiCommand::List { target, json } => {
            let list = fetch_list(&target)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_certificates(&list);
                print_requests(&list);
            }
        }
        PkiCommand::Pending { target, json } => {
            let list = fetch_list(&target)?;
            let waiting: Vec<&RequestView> = list
                .requests
                .iter()
                .filter(|r| r.state == RequestState::Waiting)
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&waiting)?);
            } else if waiting.is_empty() {
                println!("no certificate request is waiting (policy: {})", list.policy.as_str());
            } else {
                for r in waiting {
                    println!(
                        "{} {} from {} ({}, key sha256 {}), asked {}: provd pki approve {} --fingerprint {} | reject {}",
                        r.host,
                        r.role,
                        r.from,
                        r.key,
                        r.fingerprint,
                        when(r.asked_at),
                        r.host,
                        r.fingerprint,
                        r.host,
                    );
                }
            }
        }
        PkiCommand::Approve {
            host,
            fingerprint,
            target,
        } => {
            let query = fingerprint
                .map(|f| format!("?fingerprint={}", f.trim()))
                .unwrap_or_default();
            decide(&target, &host, &format!("approve{query}"), "approved")?
        }
        PkiCommand::Reject { host, target } => decide(&target, &host, "reject", "rejected")?,
        PkiCommand::Revoke { host, role, target } => {
            if let Some(r) = &role {
                r.parse::<crate::pki::Role>()?;
            }
            let api = target.api()?;
            let name = super::client::segment(&host);
            let path = match &role {
                Some(r) => format!("/api/pki/{name}/revoke?role={r}"),
                None => format!("/api/pki/{name}/revoke"),
            };
            let answer: Revoked = api.require(api.post(&path)?)?;
            if answer.revoked.is_empty() {
                println!("{host}: no valid certificate to revoke");
            }
            for c in answer.revoked {
                println!(
                    "{host}: revoked {} certificate {} (the CRL at /pki/crl.pem names it now)",
                    c.role, c.serial
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn fetch_list(target: &ServerTarget) -> anyhow::Result<CertificateList> {
    let api = target.api()?;
    api.require(api.get("/api/pki")?)
}

fn when(t: i64) -> String {
    let now = crate::clock::unix_now() as i64;
    format!("{} s ago", (now - t).max(0))
}

fn days(seconds: i64) -> String {
    if seconds < 0 {
        format!("{} d ago", -seconds / 86400)
    } else {
        format!("in {} d", seconds / 86400)
    }
}

fn print_certificates(list: &CertificateList) {
    if list.certificates.is_empty() {
        println!("no certificate issued yet");
        return;
    }
    println!(
        "{:<24} {:<7} {:<34} {:<8} {:<10} EXPIRES",
        "HOST", "ROLE", "SERIAL", "STATE", "HOW"
    );
    for c in &list.certificates {
        println!(
            "{:<24} {:<7} {:<34} {:<8} {:<10} {}",
            c.record.host,
            c.record.role,
            c.record.serial,
            c.state.as_str(),
            c.record.how,
            days(c.expires_in)
        );
    }
}

fn print_requests(list: &CertificateList) {
    if list.requests.is_empty() {
        return;
    }
    println!("\nrequests (policy: {}):", list.policy.as_str());
    for r in &list.requests {
        println!(
            "  {} {} from {} ({}, key sha256 {}): {}",
            r.host,
            r.role,
            r.from,
            r.key,
            r.fingerprint,
            r.state.as_str()
        );
    }
}

fn decide(target: &ServerTarget, host: &str, verb: &str, done: &str) -> anyhow::Result<()> {
    let api = target.api()?;
    let answer: Decisions = api.require(api.post(&format!("/api/pki/{host}/{verb}"))?)?;
    let keys: Vec<String> = answer
        .keys
        .iter()
        .map(|k| format!("{} (key sha256 {})", k.role, k.fingerprint))
        .collect();
    if keys.is_empty() {
        anyhow::bail!("{host} has no waiting certificate request with that key (see `provd pki pending`)");
    }
    println!(
        "{host}: {done} {} (the host collects on its next try)",
        keys.join(" and ")
    );
    Ok(())
}
