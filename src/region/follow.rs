//! One follower per site: a thread that long-polls the site's `GET /api/feed` over mutual
//! TLS (`trust::Trust::site_tls`) and applies each page to the read model. A pair's two
//! addresses are tried in turn, the one that answered last first. A failure changes
//! nothing in the copy: it is recorded with its kind, and the follower retries with a
//! growing pause (`backoff`, pure). The cursor lives in the read model beside the copy it
//! describes, so a region restart continues where it stopped, and a page lost in flight
//! is asked for again (applying it twice changes nothing).
//!
//! After each page the follower also hands the region's revocation list to every address
//! of the site that does not have it yet (`deliver_crl`): a site passes it to its
//! hypervisors, which trust the root and so must learn which sites it revoked.
//!
//! Must never: write anything into the copy but what a site sent, or send a site anything
//! but reads and the region's own CRL.

use super::config::SiteConfig;
use super::store::ReadModel;
use super::trust::{Trust, TrustError};
use crate::http::feed::{FeedCursor, Page};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a page may wait at the site for something new.
pub const WAIT_SECS: u64 = 10;
/// The largest page the region reads (a relist of a big site).
const MAX_PAGE: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("{url}: unreachable: {why}")]
    Unreachable { url: String, why: String },
    #[error("{url}: TLS: {why}")]
    Tls { url: String, why: String },
    #[error("{url}: refused (HTTP {status}): {body}")]
    Refused { url: String, status: u16, body: String },
    #[error("{url}: an unreadable feed page: {why}")]
    BadAnswer { url: String, why: String },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

impl FollowError {
    /// The kind the region shows (`provd region sites`).
    pub fn kind(&self) -> &'static str {
        match self {
            FollowError::Unreachable { .. } => "unreachable",
            FollowError::Tls { .. } => "tls",
            FollowError::Refused { .. } => "refused",
            FollowError::BadAnswer { .. } => "bad-answer",
            FollowError::Trust(TrustError::Revoked { .. }) => "revoked",
            FollowError::Trust(_) => "trust",
        }
    }
}

/// The pause after `failures` failed rounds in a row: 1 s, doubling, at most 10 s.
pub fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(4)).min(Duration::from_secs(10))
}

/// `urls` in the order to try them: the one that answered last first.
pub fn order<'a>(urls: &'a [String], reached: Option<&str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = urls.iter().map(String::as_str).collect();
    if let Some(pos) = reached.and_then(|r| v.iter().position(|u| *u == r)) {
        let first = v.remove(pos);
        v.insert(0, first);
    }
    v
}

/// The feed URL for a follower at `cursor`.
pub fn feed_url(base: &str, cursor: Option<FeedCursor>, wait: u64) -> String {
    match cursor {
        Some(c) => format!(
            "{base}/api/feed?epoch={}&seq={}&events={}&wait={wait}",
            c.epoch, c.seq, c.events
        ),
        None => format!("{base}/api/feed?wait=0"),
    }
}

/// Classify a ureq failure: a refused TLS handshake is not an unreachable site.
pub fn classify(url: &str, e: ureq::Error) -> FollowError {
    let why = e.to_string();
    match e {
        ureq::Error::Rustls(_) | ureq::Error::Tls(_) | ureq::Error::Pem(_) => FollowError::Tls {
            url: url.to_string(),
            why,
        },
        // ureq hands a failed handshake up as I/O with rustls' error inside.
        ureq::Error::Io(ref io) if io.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => FollowError::Tls {
            url: url.to_string(),
            why,
        },
        _ => FollowError::Unreachable {
            url: url.to_string(),
            why,
        },
    }
}

/// An agent for one site: its TLS, a deadline, and HTTP errors as answers (the site's
/// refusal is passed on, not turned into a transport error).
pub fn agent(tls: ureq::tls::TlsConfig, timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .tls_config(tls)
        .build()
        .into()
}

/// One page from `url`.
fn fetch(agent: &ureq::Agent, url: &str) -> Result<Page, FollowError> {
    let mut resp = agent.get(url).call().map_err(|e| classify(url, e))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_PAGE)
        .read_to_vec()
        .map_err(|e| classify(url, e))?;
    if status != 200 {
        return Err(FollowError::Refused {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    serde_json::from_slice(&body).map_err(|e| FollowError::BadAnswer {
        url: url.to_string(),
        why: e.to_string(),
    })
}

/// Follow `site` until `stop`. Runs on its own thread (blocking HTTP).
pub fn follow(site: SiteConfig, model: Arc<ReadModel>, trust: Arc<Trust>, stop: Arc<AtomicBool>, wait: u64) {
    let mut failures = 0u32;
    let mut delivered = Delivered::default();
    while !stop.load(Ordering::Relaxed) {
        match round(&site, &model, &trust, wait) {
            Ok(()) => {
                failures = 0;
                deliver_crl(&site, &trust, &model, &mut delivered);
            }
            Err(e) => {
                failures += 1;
                tracing::warn!("region: site {}: {e}", site.name);
                if let Err(se) = model.failed(&site.name, e.kind(), &e.to_string()) {
                    tracing::error!("region: {se}");
                }
                let pause = backoff(failures);
                let until = std::time::Instant::now() + pause;
                while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// One round: a page from the first address that answers, applied.
fn round(site: &SiteConfig, model: &ReadModel, trust: &Trust, wait: u64) -> Result<(), FollowError> {
    let tls = trust.site_tls(&site.name)?;
    let agent = agent(tls, Duration::from_secs(wait + 20));
    let record = model.site(&site.name).map_err(|e| FollowError::BadAnswer {
        url: String::new(),
        why: e.to_string(),
    })?;
    let cursor = record.as_ref().and_then(|r| r.cursor);
    let reached = record.as_ref().and_then(|r| r.reached.clone());
    let mut last = None;
    for base in order(&site.urls, reached.as_deref()) {
        let url = feed_url(base, cursor, wait);
        match fetch(&agent, &url) {
            Ok(page) => {
                model
                    .apply(&site.name, base, &page, crate::clock::unix_now())
                    .map_err(|e| FollowError::BadAnswer {
                        url: url.clone(),
                        why: format!("applying it: {e}"),
                    })?;
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("a site has at least one URL"))
}

/// Per address of a site: the CRL it acknowledged, and the last failure said (so an
/// address that stays down is logged once, not every round) with when to try it again.
#[derive(Default)]
struct Delivered {
    crl: HashMap<String, String>,
    failed: HashMap<String, (String, std::time::Instant)>,
}

/// How long an address that did not take the CRL is left alone: a pair's dead server
/// must not hold up every feed round of its site for a connect timeout.
const CRL_RETRY: Duration = Duration::from_secs(60);

/// Hand the region's current CRL to each of `site`'s addresses that has not acknowledged
/// it. A site keeps it only when the root signed it and it is newer than its own copy
/// (`pki::region_crl`); one that already holds a newer list is not asked again.
fn deliver_crl(site: &SiteConfig, trust: &Trust, model: &ReadModel, delivered: &mut Delivered) {
    let crl = match trust.current_crl(time::OffsetDateTime::now_utc()) {
        Ok(Some(crl)) => crl,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("region: the CRL for site {}: {e}", site.name);
            return;
        }
    };
    let now = std::time::Instant::now();
    let pending: Vec<&String> = site
        .urls
        .iter()
        .filter(|u| delivered.crl.get(*u) != Some(&crl))
        .filter(|u| delivered.failed.get(*u).is_none_or(|(_, retry)| now >= *retry))
        .collect();
    if pending.is_empty() {
        return;
    }
    let agent = match trust.site_tls(&site.name) {
        Ok(tls) => agent(tls, Duration::from_secs(10)),
        Err(_) => return, // revoked or removed: `round` reports it
    };
    for base in pending.iter().copied() {
        let url = format!("{base}/api/pki/region-crl");
        let answer = agent
            .post(&url)
            .content_type("application/pkix-crl")
            .send(crl.as_bytes())
            .map_err(|e| classify(&url, e).to_string())
            .and_then(|mut r| {
                let status = r.status().as_u16();
                let body = r.body_mut().read_to_string().unwrap_or_default();
                let kept_newer = || {
                    serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get(crate::pki::region_crl::KEPT_NUMBER)?.as_u64())
                };
                match status {
                    200 => Ok(()),
                    // The site holds a newer list than this one (a region restored from
                    // an older backup): asking again would not change that.
                    409 if kept_newer().is_some() => {
                        tracing::warn!(
                            "region: site {} at {base} keeps a newer CRL than the region's: {body}",
                            site.name
                        );
                        Ok(())
                    }
                    _ => Err(format!("{url}: HTTP {status}: {}", body.trim())),
                }
            });
        match answer {
            Ok(()) => {
                tracing::info!("region: site {} at {base} has the region's CRL", site.name);
                delivered.failed.remove(base);
                delivered.crl.insert(base.clone(), crl.clone());
            }
            Err(why) => {
                if delivered.failed.get(base).is_none_or(|(said, _)| *said != why) {
                    tracing::warn!("region: handing the CRL to site {}: {why}", site.name);
                }
                delivered.failed.insert(base.clone(), (why, now + CRL_RETRY));
            }
        }
    }
    let everywhere = site.urls.iter().all(|u| delivered.crl.get(u) == Some(&crl));
    if let (true, Some(number)) = (everywhere, crate::pki::crl_number(&crl))
        && let Err(e) = model.crl_held(&site.name, number)
    {
        tracing::error!("region: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_grows_to_ten_seconds_and_the_address_that_answered_goes_first() {
        let s: Vec<u64> = (1..=7).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(s, [1, 2, 4, 8, 10, 10, 10]);
        let urls = vec!["https://a".to_string(), "https://b".to_string()];
        assert_eq!(order(&urls, Some("https://b")), ["https://b", "https://a"]);
        assert_eq!(order(&urls, Some("https://gone")), ["https://a", "https://b"]);
        assert_eq!(order(&urls, None), ["https://a", "https://b"]);
        let c = FeedCursor {
            epoch: 1,
            seq: 2,
            events: 3,
        };
        assert_eq!(
            feed_url("https://a", Some(c), 10),
            "https://a/api/feed?epoch=1&seq=2&events=3&wait=10"
        );
        assert_eq!(feed_url("https://a", None, 10), "https://a/api/feed?wait=0");
    }

    #[test]
    fn a_refused_handshake_is_tls_not_unreachable() {
        let handshake = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(classify("u", ureq::Error::Io(handshake)).kind(), "tls");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify("u", ureq::Error::Io(refused)).kind(), "unreachable");
    }
}
