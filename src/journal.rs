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
    /// Certificates: signed for a host, or an operator's decision.
    Pki { what: String },
    /// A cloud-init seed file served to a VM.
    Nocloud { hostname: String, file: String },
    /// A discovery report stored.
    Discovery { what: String },
    /// An operator adopted a discovered machine into the config.
    Adopted { hostname: String, file: String },
    /// A BMC action.
    Power { host: String, outcome: String },
    /// The hypervisor pool moved something (drain).
    Pool { what: String },
    /// A request refused, and why.
    Refused { reason: String },
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
            Step::Power { host, outcome } => write!(f, "{host}: {outcome}"),
            Step::Pki { what } | Step::Discovery { what } | Step::Pool { what } => f.write_str(what),
            Step::Refused { reason } => f.write_str(reason),
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
        drop(q);
        self.recorded.send_modify(|n| *n += 1);
    }

    /// Record an event seen from an address; the MAC comes from the lease table.
    pub fn record_ip(&self, ip: Ipv4Addr, step: Step) {
        self.record(self.holders.mac_of(ip), Some(ip), step);
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
