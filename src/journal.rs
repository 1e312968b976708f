//! The boot journal: a bounded, in-memory record of each step every machine took through
//! the boot chain (DHCP ACK with its boot file, TFTP files, HTTP assets, the boot-script
//! decision, kickstart fetches, installer callbacks), keyed by MAC.
//!
//! It is provd's own account of a boot, for operators (`/api/events`) and for the lab's
//! progress display and tests. Recording never blocks and never fails; the oldest entries
//! fall off when it is full. It is not durable: the store holds what must survive.

use crate::clock::unix_now;
use crate::inventory::InstallEvent;
use crate::mac::MacAddr;
use crate::render::Action;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::Mutex;

const CAPACITY: usize = 20_000;

/// One entry: when, which machine (when known), and the step it took. On the wire
/// (`/api/events`) the step's fields sit beside `at`/`mac`/`ip` with its `kind`, and
/// `detail` is the step's one-line description for people; programs match on the fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEvent {
    pub at: u64,
    pub mac: Option<MacAddr>,
    pub ip: Option<Ipv4Addr>,
    #[serde(flatten)]
    pub step: Step,
    pub detail: String,
}

/// What happened, typed: the lab's progress and the tests match on these, never on text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Step {
    /// A DHCPACK with an address, and the boot file it named (TFTP name or HTTP URL).
    DhcpAck {
        address: Ipv4Addr,
        boot_file: Option<String>,
    },
    /// A TFTP transfer that completed.
    Tftp { file: String, bytes: u64 },
    /// A GET or HEAD under `/assets` (the Range header when there was one).
    HttpAsset {
        method: String,
        path: String,
        range: Option<String>,
    },
    /// The per-host boot script: what the machine was told, and the sentence for people.
    BootScript { action: Action, description: String },
    /// A kickstart served.
    Kickstart { bytes: usize },
    /// An installer's progress callback.
    Callback { event: InstallEvent },
    /// A certificate: issued or renewed for a host, or an operator's decision on it.
    Pki {
        action: CertificateAction,
        role: String,
        /// The SHA-256 of the key an operator approved or rejected.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// The serial of a revoked certificate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        serial: Option<String>,
    },
    /// A cloud-init seed file served to a VM.
    Nocloud { hostname: String, file: String },
    /// A discovery report stored: what the machine said it has.
    Discovery {
        cpus: u32,
        memory_mib: u64,
        disks: usize,
        nics: usize,
    },
    /// An operator adopted a discovered machine into the config.
    Adopted { hostname: String, file: String },
    /// A BMC action and its result.
    Power {
        host: String,
        action: String,
        ok: bool,
        /// The power state after it, when the BMC said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        state: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The hypervisor pool moved a domain off a draining host (or could not).
    Drained {
        domain: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An operator's action on a VM through the admin API (the console's buttons).
    VmAction {
        domain: String,
        action: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A request refused: which request, and why.
    Refused { request: String, why: RefusalReason },
}

/// What happened to a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateAction {
    Issued,
    Renewed,
    Approved,
    Rejected,
    Revoked,
}

impl CertificateAction {
    pub fn as_str(self) -> &'static str {
        match self {
            CertificateAction::Issued => "issued",
            CertificateAction::Renewed => "renewed",
            CertificateAction::Approved => "approved",
            CertificateAction::Rejected => "rejected",
            CertificateAction::Revoked => "revoked",
        }
    }
}

/// A host's addresses in words ("no lease and no reservation" when it has none).
pub fn fmt_addresses(a: &[Ipv4Addr]) -> String {
    if a.is_empty() {
        "no lease and no reservation".into()
    } else {
        a.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", ")
    }
}

/// Why the boot listener refused a request (the journal's record; the asker learns less).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum RefusalReason {
    /// Asked from an address that is neither the host's reservation nor one of its leases.
    WrongAddress { from: Ipv4Addr, holds: Vec<Ipv4Addr> },
    /// The install token was first used from another of the host's addresses.
    TokenBoundElsewhere { bound: Ipv4Addr },
    /// A step of the install asked for a second time with the same token.
    StepTaken { step: String },
    /// Discovery facts from an address that does not hold the MAC's lease.
    NotLeaseHolder { from: Ipv4Addr },
}

impl fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefusalReason::WrongAddress { from, holds } => {
                write!(f, "asked from {from}; the host holds {}", fmt_addresses(holds))
            }
            RefusalReason::TokenBoundElsewhere { bound } => {
                write!(f, "the install token is bound to {bound}, the address of its first use")
            }
            RefusalReason::StepTaken { step } => write!(f, "{step} was already taken with this install's token"),
            RefusalReason::NotLeaseHolder { from } => write!(f, "sent from {from}, which does not hold its lease"),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::DhcpAck {
                address,
                boot_file: Some(file),
            } => write!(f, "{address} boot file {file}"),
            Step::DhcpAck {
                address,
                boot_file: None,
            } => write!(f, "{address} (no boot file)"),
            Step::Tftp { file, bytes } => write!(f, "{file} ({bytes} bytes)"),
            Step::HttpAsset {
                method,
                path,
                range: Some(r),
            } => write!(f, "{method} {path} {r}"),
            Step::HttpAsset {
                method,
                path,
                range: None,
            } => write!(f, "{method} {path}"),
            Step::BootScript { description, .. } => f.write_str(description),
            Step::Kickstart { bytes } => write!(f, "{bytes} bytes"),
            Step::Callback { event } => f.write_str(event.as_str()),
            Step::Nocloud { hostname, file } => write!(f, "{hostname} {file}"),
            Step::Adopted { hostname, file } => write!(f, "adopted as {hostname} ({file})"),
            Step::Power {
                host,
                action,
                ok: true,
                state,
                ..
            } => write!(
                f,
                "{host}: power {action}: ok{}",
                state.as_deref().map(|s| format!(", power {s}")).unwrap_or_default()
            ),
            Step::Power {
                host, action, error, ..
            } => {
                write!(f, "{host}: power {action}: failed: {}", error.as_deref().unwrap_or("?"))
            }
            Step::Pki {
                action: action @ (CertificateAction::Issued | CertificateAction::Renewed),
                role,
                ..
            } => write!(f, "{role} certificate {}", action.as_str()),
            Step::Pki {
                action: CertificateAction::Revoked,
                role,
                serial,
                ..
            } => write!(
                f,
                "operator: revoked {role} certificate {}",
                serial.as_deref().unwrap_or("?")
            ),
            Step::Pki { action, role, key, .. } => write!(
                f,
                "operator: {} {role}{}",
                action.as_str(),
                key.as_deref().map(|k| format!(" (key sha256 {k})")).unwrap_or_default()
            ),
            Step::Discovery {
                cpus,
                memory_mib,
                disks,
                nics,
            } => write!(
                f,
                "discovery: {cpus} CPU(s), {memory_mib} MiB, {disks} disk(s), {nics} NIC(s) reported"
            ),
            Step::Drained {
                domain, to: Some(to), ..
            } => write!(f, "drain: {domain} moved to {to}"),
            Step::Drained { domain, error, .. } => {
                write!(f, "drain: {domain} not moved: {}", error.as_deref().unwrap_or("?"))
            }
            Step::VmAction {
                domain,
                action,
                error: None,
            } => write!(f, "vm {domain}: {action}"),
            Step::VmAction {
                domain,
                action,
                error: Some(e),
            } => write!(f, "vm {domain}: {action} refused: {e}"),
            Step::Refused { request, why } => write!(f, "{request}: {why}"),
        }
    }
}

/// Who holds an address now: the DHCP lease table answers it (TFTP and HTTP only see
/// addresses). A trait so the journal, which everything records into, depends on no
/// serving module (`dhcp::Leases` implements it).
pub trait AddressHolders: Send + Sync {
    fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr>;
}

pub struct Journal {
    events: Mutex<VecDeque<BootEvent>>,
    holders: Box<dyn AddressHolders>,
    /// How many events were ever recorded: watchers (the console's live stream) wake on a
    /// change instead of polling.
    recorded: tokio::sync::watch::Sender<u64>,
}

impl Journal {
    pub fn new(holders: impl AddressHolders + 'static) -> Self {
        Journal {
            events: Mutex::new(VecDeque::new()),
            holders: Box::new(holders),
            recorded: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Changes whenever an event is recorded (its value: how many ever were).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recorded.subscribe()
    }

    pub fn record(&self, mac: Option<MacAddr>, ip: Option<Ipv4Addr>, step: Step) {
        let e = BootEvent {
            at: unix_now(),
            mac,
            ip,
            detail: step.to_string(),
            step,
        };
        let mut q = self.events.lock().expect("journal lock");
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(e);
        // Counted under the lock, so `since` sees the count and the queue agree.
        self.recorded.send_modify(|n| *n += 1);
        drop(q);
    }

    /// Record an event seen from an address; the MAC comes from the lease table.
    pub fn record_ip(&self, ip: Ipv4Addr, step: Step) {
        self.record(self.holders.mac_of(ip), Some(ip), step);
    }

    /// The events recorded after the first `after` ever recorded (those still kept), oldest
    /// first, at most `limit` of them, and the count the next call continues from. A
    /// follower that fell behind the journal's capacity gets what is left.
    pub fn since(&self, after: u64, limit: usize) -> (Vec<BootEvent>, u64) {
        let q = self.events.lock().expect("journal lock");
        let total = *self.recorded.borrow();
        let first_kept = total - q.len() as u64;
        let skip = after.saturating_sub(first_kept).min(q.len() as u64) as usize;
        let events: Vec<BootEvent> = q.iter().skip(skip).take(limit).cloned().collect();
        let next = first_kept.max(after.min(total)) + events.len() as u64;
        (events, next)
    }

    /// How many events were ever recorded (what `since` counts in).
    pub fn recorded(&self) -> u64 {
        *self.recorded.borrow()
    }

    /// Events, oldest first, optionally only one MAC's.
    pub fn events(&self, mac: Option<MacAddr>) -> Vec<BootEvent> {
        let q = self.events.lock().expect("journal lock");
        q.iter().filter(|e| mac.is_none() || e.mac == mac).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_continues_where_the_follower_stopped_and_skips_what_is_gone() {
        struct Nobody;
        impl AddressHolders for Nobody {
            fn mac_of(&self, _: Ipv4Addr) -> Option<MacAddr> {
                None
            }
        }
        let j = Journal::new(Nobody);
        let step = |n: u64| Step::Tftp {
            file: format!("f{n}"),
            bytes: n,
        };
        for n in 0..3 {
            j.record(None, None, step(n));
        }
        let (first, next) = j.since(0, 2);
        assert_eq!(
            first.iter().map(|e| e.step.clone()).collect::<Vec<_>>(),
            vec![step(0), step(1)]
        );
        assert_eq!(next, 2);
        let (rest, next) = j.since(next, 10);
        assert_eq!((rest.len(), next), (1, 3));
        assert_eq!(j.since(3, 10), (vec![], 3));
        // Fall behind the capacity: what is kept, from the oldest kept.
        for n in 3..(CAPACITY as u64 + 5) {
            j.record(None, None, step(n));
        }
        let (kept, next) = j.since(1, 1);
        assert_eq!(kept[0].step, step(5));
        assert_eq!(next, 6);
    }

    #[test]
    fn steps_carry_fields_for_programs_and_a_sentence_for_people() {
        let refused = Step::Refused {
            request: "kickstart".into(),
            why: RefusalReason::WrongAddress {
                from: Ipv4Addr::new(10, 0, 0, 77),
                holds: vec![Ipv4Addr::new(10, 0, 0, 11)],
            },
        };
        let v = serde_json::to_value(&refused).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "refused",
                "request": "kickstart",
                "why": {"reason": "wrong-address", "from": "10.0.0.77", "holds": ["10.0.0.11"]}
            })
        );
        assert_eq!(serde_json::from_value::<Step>(v).unwrap(), refused);
        assert_eq!(
            refused.to_string(),
            "kickstart: asked from 10.0.0.77; the host holds 10.0.0.11"
        );

        let revoked = Step::Pki {
            action: CertificateAction::Revoked,
            role: "server".into(),
            key: None,
            serial: Some("0a".into()),
        };
        assert_eq!(
            serde_json::to_value(&revoked).unwrap(),
            serde_json::json!({"kind": "pki", "action": "revoked", "role": "server", "serial": "0a"})
        );
        assert_eq!(revoked.to_string(), "operator: revoked server certificate 0a");
        let power = Step::Power {
            host: "lab-1".into(),
            action: "off".into(),
            ok: true,
            state: Some("off".into()),
            error: None,
        };
        assert_eq!(power.to_string(), "lab-1: power off: ok, power off");
        let drained = Step::Drained {
            domain: "web".into(),
            to: None,
            error: Some("no room".into()),
        };
        assert_eq!(drained.to_string(), "drain: web not moved: no room");
    }

    #[test]
    fn records_by_mac_resolving_addresses_through_the_holders() {
        let m: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        struct OneLease(Ipv4Addr, MacAddr);
        impl AddressHolders for OneLease {
            fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
                (ip == self.0).then_some(self.1)
            }
        }
        let leases = OneLease(Ipv4Addr::new(10, 0, 0, 5), m);
        let j = Journal::new(leases);
        j.record(Some(m), None, Step::Kickstart { bytes: 10 });
        let tftp = |file: &str| Step::Tftp {
            file: file.into(),
            bytes: 1,
        };
        j.record_ip(Ipv4Addr::new(10, 0, 0, 5), tftp("undionly.kpxe"));
        j.record_ip(Ipv4Addr::new(10, 0, 0, 6), tftp("other"));
        let mine = j.events(Some(m));
        assert_eq!(
            mine.iter().map(|e| e.step.clone()).collect::<Vec<_>>(),
            [Step::Kickstart { bytes: 10 }, tftp("undionly.kpxe")]
        );
        assert_eq!(j.events(None).len(), 3);
    }

    /// The wire shape `/api/events` serves: `kind` and the step's fields flat beside the
    /// event's, `detail` for people; a client reads it back into the same step.
    #[test]
    fn an_event_round_trips_through_its_json() {
        let e = BootEvent {
            at: 7,
            mac: Some("52:54:00:00:00:01".parse().unwrap()),
            ip: None,
            step: Step::Callback {
                event: InstallEvent::PostStarted,
            },
            detail: "post-started".into(),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["kind"], "callback");
        assert_eq!(v["event"], "post-started");
        assert_eq!(v["detail"], "post-started");
        assert_eq!(serde_json::from_value::<BootEvent>(v).unwrap(), e);
        let ack = Step::DhcpAck {
            address: Ipv4Addr::new(10, 0, 0, 5),
            boot_file: None,
        };
        assert_eq!(ack.to_string(), "10.0.0.5 (no boot file)");
        let v = serde_json::to_value(&ack).unwrap();
        assert_eq!((v["kind"].as_str(), v["boot_file"].is_null()), (Some("dhcp-ack"), true));
        let script = Step::BootScript {
            action: Action::Install,
            description: "installing x".into(),
        };
        assert_eq!(serde_json::to_value(&script).unwrap()["action"], "install");
    }
}
