//! The lease table's side of the failover conversation. The session never writes the table:
//! it reads it through `LeaseView` (implemented here for `dhcp::Leases`) and asks for each
//! change as a `LeaseChange` effect. `apply` performs one on the `dhcp::Leases` handle, in
//! memory, and says what must then be stored, and what waits for that write: the driver
//! runs it as it reaches each effect, and the session's tests run the same function, so the
//! two cannot drift apart.

use super::codec::{Message, Value, code};
use crate::config::Pool;
use crate::dhcp::Leases;
use crate::dhcp::leases::PartnerBinding;
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

/// A change the session asks of the lease table.
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseChange {
    /// The partner's binding; stored, then `ack` (the BNDACK) goes.
    ApplyPartner {
        binding: PartnerBinding,
        ack: Message,
        now: u64,
    },
    /// The partner acknowledged `ip` up to `tsfp`.
    Acknowledged { ip: Ipv4Addr, tsfp: u64 },
    /// `tstp` (the potential expiry) goes to the partner for `ip`.
    NoteSent { ip: Ipv4Addr, tstp: u64 },
    /// The primary's pool balance: half the free addresses to the secondary (BACKUP, with
    /// `grace` = MCLT), stored, then queued as BNDUPDs; `answer` is a POOLRESP, sent after
    /// them with the count filled in.
    Balance {
        now: u64,
        grace: u64,
        answer: Option<Message>,
    },
}

/// What a change leaves to store, and what waits for the write.
#[derive(Debug, Clone, PartialEq)]
pub enum ToStore {
    Nothing,
    /// Store, then send (a BNDACK).
    ThenSend {
        records: Vec<LeaseRecord>,
        then: Message,
    },
    /// Store, then queue them as updates for the partner (and send `then`).
    ThenQueue {
        records: Vec<LeaseRecord>,
        then: Option<Message>,
    },
    /// Store; nobody waits (a tsfp lost in a crash only shortens a lease).
    Quietly(Vec<LeaseRecord>),
}

/// Perform `change` on the table; `pools` and `site` are the relationship's.
pub fn apply(change: LeaseChange, leases: &Leases, pools: &[Pool], site: &str) -> ToStore {
    match change {
        // Durable before the BNDACK: an acknowledged update is never lost.
        // A conflict with a binding granted here changes nothing and is answered at once
        // with the reason (nothing to store first).
        LeaseChange::ApplyPartner { binding, ack, now } => match leases.apply_partner(binding, site, now) {
            Ok(record) => ToStore::ThenSend {
                records: vec![record],
                then: ack,
            },
            Err(conflict) => {
                tracing::warn!("failover (site {site}): refused a partner update: {conflict}");
                ToStore::ThenSend {
                    records: Vec::new(),
                    then: ack
                        .with(code::REJECT_REASON, Value::U8(super::codec::reject::OUTDATED_BIND_INFO))
                        .with(code::MESSAGE, Value::Bytes(conflict.to_string().into_bytes())),
                }
            }
        },
        LeaseChange::Acknowledged { ip, tsfp } => match leases.acknowledged(ip, tsfp, site) {
            Some(r) => ToStore::Quietly(vec![r]),
            None => ToStore::Nothing,
        },
        LeaseChange::NoteSent { ip, tstp } => {
            leases.note_sent(ip, tstp);
            ToStore::Nothing
        }
        // The moved addresses are stored before their BNDUPDs go (and before the POOLRESP
        // that counts them).
        LeaseChange::Balance { now, grace, answer } => {
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
                    ToStore::ThenQueue {
                        records: moved,
                        then: Some(resp),
                    }
                }
                None if moved.is_empty() => ToStore::Nothing,
                None => ToStore::ThenQueue {
                    records: moved,
                    then: None,
                },
            }
        }
    }
}
