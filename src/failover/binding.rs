//! Lease records and BNDUPD messages, both ways (pure): what provd tells its failover
//! partner about an address, and what it takes from the partner's updates.
//!
//! chaddr travels as hardware type + address (ISC's form). A client identifier is sent only
//! when the client sent option 61: a partner that stored one the client never sent would
//! no longer recognise the client by its hardware address.

use super::codec::{BindingStatus, Message, MessageType, Value, code};
use crate::dhcp::leases::PartnerBinding;
use crate::dhcp::packet::ClientKey;
use crate::mac::MacAddr;
use crate::store::{LeaseRecord, LeaseState};

fn status_code(s: LeaseState) -> BindingStatus {
    match s {
        LeaseState::Bound => BindingStatus::Active,
        LeaseState::Released => BindingStatus::Released,
        LeaseState::Expired => BindingStatus::Expired,
        LeaseState::Declined => BindingStatus::Abandoned,
        LeaseState::Free => BindingStatus::Free,
        LeaseState::Backup => BindingStatus::Backup,
    }
}

fn lease_state(s: BindingStatus) -> LeaseState {
    match s {
        BindingStatus::Active => LeaseState::Bound,
        BindingStatus::Released => LeaseState::Released,
        BindingStatus::Expired | BindingStatus::Reset => LeaseState::Expired,
        BindingStatus::Abandoned => LeaseState::Declined,
        BindingStatus::Free => LeaseState::Free,
        BindingStatus::Backup => LeaseState::Backup,
    }
}

/// A lease change as a BNDUPD. The potential expiry offered is the lease's end: once the
/// partner acknowledges it, a renewal may run up to that time + MCLT.
pub fn bndupd(r: &LeaseRecord, now: u64, xid: u32) -> Message {
    let mut m = Message::new(MessageType::BndUpd, now as u32, xid)
        .with(code::ASSIGNED_IP_ADDRESS, Value::Ip(r.ip))
        .with(code::BINDING_STATUS, Value::U8(status_code(r.state) as u8));
    let client = ClientKey::from_hex(&r.client_id).map(|k| k.0).unwrap_or_default();
    if let Some(mac) = r.mac {
        let mut chaddr = vec![1u8];
        chaddr.extend_from_slice(&mac.0);
        // A client identifier only when the client sent one (it is not htype + chaddr): a
        // partner that stores one would no longer match the client by hardware address.
        if !client.is_empty() && client != chaddr {
            m = m.with(code::CLIENT_IDENTIFIER, Value::Bytes(client.clone()));
        }
        m = m.with(code::CHADDR, Value::Bytes(chaddr));
    } else if !client.is_empty() {
        m = m.with(code::CLIENT_IDENTIFIER, Value::Bytes(client.clone()));
    }
    if matches!(
        r.state,
        LeaseState::Bound | LeaseState::Released | LeaseState::Expired | LeaseState::Declined
    ) {
        m = m
            .with(code::LEASE_EXPIRY, Value::U32(r.ends as u32))
            .with(code::POTENTIAL_EXPIRY, Value::U32(r.ends.max(now) as u32))
            .with(code::CLTT, Value::U32(r.cltt.max(r.starts) as u32));
    }
    m.with(code::STOS, Value::U32(r.starts as u32))
}

/// Why a BNDUPD carries no usable binding (answered with reject reason "missing binding
/// information", these words as its message).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    #[error("no assigned-IP-address")]
    NoAddress,
    #[error("no or unknown binding-status")]
    NoStatus,
    #[error("an active binding without a client")]
    NoClient,
}

/// A BNDUPD from the partner as a change to our lease table. Its times are clamped: no
/// expiry (lease or potential) beyond `now + horizon` (the session passes MCLT + the
/// longest lease: more than any server of the pair may promise), and no start or last
/// transaction in the future. A partner's clock or an impostor cannot make an address
/// unusable for years, or win a conflict by claiming a transaction that has not happened.
pub fn partner_binding(m: &Message, now: u64, horizon: u64) -> Result<PartnerBinding, BindingError> {
    let ip = m.ip(code::ASSIGNED_IP_ADDRESS).ok_or(BindingError::NoAddress)?;
    let status = m
        .u8(code::BINDING_STATUS)
        .and_then(BindingStatus::from_u8)
        .ok_or(BindingError::NoStatus)?;
    let chaddr = m.bytes(code::CHADDR);
    let mac = chaddr
        .filter(|c| c.len() == 7 && c[0] == 1)
        .map(|c| MacAddr([c[1], c[2], c[3], c[4], c[5], c[6]]));
    let client = m
        .bytes(code::CLIENT_IDENTIFIER)
        .or(chaddr)
        .filter(|c| !c.is_empty())
        .map(|c| ClientKey(c.to_vec()));
    let state = lease_state(status);
    if matches!(state, LeaseState::Bound) && client.is_none() {
        return Err(BindingError::NoClient);
    }
    let latest = now.saturating_add(horizon);
    let starts = m.u32(code::STOS).map_or(now, u64::from).min(now);
    Ok(PartnerBinding {
        ip,
        state,
        client,
        mac,
        starts,
        ends: m.u32(code::LEASE_EXPIRY).map_or(starts, u64::from).min(latest),
        tsfp: m.u32(code::POTENTIAL_EXPIRY).map_or(0, u64::from).min(latest),
        cltt: m.u32(code::CLTT).map_or(0, u64::from).min(now),
        // The session says (it knows how the connection was made).
        authenticated: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_records_and_bndupds_map_both_ways() {
        let mac = MacAddr([0x52, 0x54, 0, 1, 2, 3]);
        let mut htype_chaddr = vec![1u8];
        htype_chaddr.extend_from_slice(&mac.0);
        let r = LeaseRecord {
            ip: "10.0.0.7".parse().unwrap(),
            client_id: ClientKey(htype_chaddr.clone()).to_hex(),
            mac: Some(mac),
            hostname: None,
            state: LeaseState::Bound,
            starts: 1000,
            ends: 4600,
            site: "a".into(),
            tstp: 0,
            tsfp: 0,
            cltt: 1000,
            from_partner: false,
        };
        let m = bndupd(&r, 1000, 9);
        assert_eq!(m.u8(code::BINDING_STATUS), Some(BindingStatus::Active as u8));
        assert_eq!(m.bytes(code::CHADDR), Some(htype_chaddr.as_slice()));
        assert!(m.get(code::CLIENT_IDENTIFIER).is_none(), "the client sent no option 61");
        assert_eq!(m.u32(code::POTENTIAL_EXPIRY), Some(4600));
        let back = partner_binding(&Message::decode(&m.encode().unwrap()).unwrap(), 1000, 7200).unwrap();
        assert_eq!(
            (back.ip, back.state, back.mac, back.ends, back.tsfp),
            (r.ip, LeaseState::Bound, Some(mac), 4600, 4600)
        );
        assert_eq!(back.client, Some(ClientKey(htype_chaddr)));
        // A client with its own identifier keeps it.
        let mut with_id = r.clone();
        with_id.client_id = "ff00112233".into();
        let m = bndupd(&with_id, 1000, 10);
        assert_eq!(m.bytes(code::CLIENT_IDENTIFIER), Some(&[0xff, 0, 0x11, 0x22, 0x33][..]));
        assert_eq!(
            partner_binding(&m, 1000, 7200).unwrap().client,
            Some(ClientKey(vec![0xff, 0, 0x11, 0x22, 0x33]))
        );
        // BACKUP: no client, no times.
        let mut backup = r.clone();
        backup.state = LeaseState::Backup;
        backup.mac = None;
        backup.client_id.clear();
        let m = bndupd(&backup, 1000, 11);
        assert!(m.get(code::LEASE_EXPIRY).is_none() && m.get(code::CHADDR).is_none());
        assert_eq!(partner_binding(&m, 1000, 7200).unwrap().state, LeaseState::Backup);
        // An active binding without a client is refused.
        let bad = Message::new(MessageType::BndUpd, 0, 1)
            .with(code::ASSIGNED_IP_ADDRESS, Value::Ip("10.0.0.9".parse().unwrap()))
            .with(code::BINDING_STATUS, Value::U8(2));
        assert_eq!(partner_binding(&bad, 0, 7200).unwrap_err(), BindingError::NoClient);
    }
}
