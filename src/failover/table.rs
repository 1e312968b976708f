//! The lease table's side of the failover conversation. The session never writes the table:
//! it reads it through `LeaseView` and asks for changes as effects (`ApplyPartner`,
//! `Acknowledged`, `NoteSent`, `Balance`). `apply` performs one on the `dhcp::Leases`
//! handle, in memory, and says what must then be stored and sent: the driver runs it as it
//! reaches each effect, and the session's tests run the same function, so the two cannot
//! drift apart.

use super::codec::{Value, code};
use super::session::Effect;
use crate::config::Pool;
use crate::dhcp::Leases;
use crate::store::LeaseRecord;
use std::net::Ipv4Addr;

/// What the session may read of the lease table.
pub trait LeaseView {
    /// Every binding and BACKUP address of `pools` (an UPDREQALL answer).
    fn records_in(&self, pools: &[Pool], site: &str) -> Vec<LeaseRecord>;
    /// What the partner is told about each of `ips` (in order; unknown skipped).
    fn failover_records(&self, ips: &[Ipv4Addr], site: &str) -> Vec<LeaseRecord>;
}

impl LeaseView for Leases {
    fn records_in(&self, pools: &[Pool], site: &str) -> Vec<LeaseRecord> {
        Leases::records_in(self, pools, site)
    }

    fn failover_records(&self, ips: &[Ipv4Addr], site: &str) -> Vec<LeaseRecord> {
        Leases::failover_records(self, ips, site)
    }
}

/// Perform `effect` if it changes the lease table, and return what follows from it (a
/// write, then an acknowledgement or queued updates); any other effect comes back as it
/// was. `pools` and `site` are the relationship's.
pub fn apply(effect: Effect, leases: &Leases, pools: &[Pool], site: &str) -> Vec<Effect> {
    match effect {
        // Durable before the BNDACK: an acknowledged update is never lost.
        Effect::ApplyPartner { binding, ack } => vec![Effect::PersistThenSend {
            records: vec![leases.apply_partner(binding, site)],
            then: ack,
        }],
        // A tsfp lost in a crash only shortens a lease: nobody waits for it.
        Effect::Acknowledged { ip, tsfp } => leases
            .acknowledged(ip, tsfp, site)
            .map(|r| Effect::Persist(vec![r]))
            .into_iter()
            .collect(),
        Effect::NoteSent { ip, tstp } => {
            leases.note_sent(ip, tstp);
            Vec::new()
        }
        // The moved addresses are stored before their BNDUPDs go (and before the POOLRESP
        // that counts them).
        Effect::Balance { now, grace, answer } => {
            let moved = leases.balance(pools, now, grace, site);
            if !moved.is_empty() {
                tracing::info!(
                    "failover (site {site}): {} address(es) moved to the secondary",
                    moved.len()
                );
            }
            match answer {
                Some(resp) => {
                    let resp = resp.with(code::ADDRESSES_TRANSFERRED, Value::U32(moved.len() as u32));
                    vec![Effect::PersistThenQueue {
                        records: moved,
                        then: Some(resp),
                    }]
                }
                None if moved.is_empty() => Vec::new(),
                None => vec![Effect::PersistThenQueue {
                    records: moved,
                    then: None,
                }],
            }
        }
        other => vec![other],
    }
}
