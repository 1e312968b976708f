//! RFC 2136 update messages for one name's change, signed with TSIG (RFC 8945), and the
//! reading of the server's answer. Pure: the caller gives the message id and the time, and
//! sends the bytes.
//!
//! Per change, one message per zone it touches:
//! - the forward zone: delete the name's A RRset (RFC 2136 section 2.5.2), then add the new A,
//!   so a moved host never has two addresses, even for an instant (one message is applied
//!   atomically, section 3.4);
//! - each reverse zone: delete the old address's PTR *to this name only* (section 2.5.4: by
//!   RDATA, so another host that took the old address keeps its PTR), delete whatever PTR the
//!   new address still has (its previous owner's), then add ours.
//!
//! An answer counts only when it is NOERROR and carries a valid TSIG from the same key: an
//! unsigned "success" from whoever can spoof the server's address is a failure.

use super::key::TsigKey;
use super::records::{Change, reverse_name, zone_of};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, TSigVerifier, TSigner};

/// The clock skew the server may see between provd and itself (BIND's default fudge).
const FUDGE_SECONDS: u16 = 300;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum UpdateError {
    #[error("{0:?} is not a DNS name")]
    BadName(String),
    #[error("could not sign or encode the update: {0}")]
    Encode(String),
    #[error("the answer is not a DNS message: {0}")]
    Undecodable(String),
    #[error("the answer is for another message (id {got}, sent {sent})")]
    WrongId { got: u16, sent: u16 },
    #[error("the server refused the update: {0}")]
    Refused(String),
    #[error("the answer's TSIG does not verify: {0}")]
    BadSignature(String),
}

/// One update message for one zone, ready to send.
pub struct Signed {
    pub zone: String,
    pub id: u16,
    pub bytes: Vec<u8>,
    verifier: TSigVerifier,
}

/// What `change` needs, one unsigned message per zone touched: the forward zone's first.
pub fn messages(
    change: &Change,
    zone: &str,
    reverse_zones: &[String],
    ttl: u32,
) -> Result<Vec<(String, Message)>, UpdateError> {
    let fqdn = name(&change.fqdn)?;
    let mut forward = update_for(zone)?;
    forward.add_update(delete_rrset(fqdn.clone(), RecordType::A));
    if let Some(to) = change.to {
        forward.add_update(Record::from_rdata(fqdn.clone(), ttl, RData::A(A(to))));
    }
    let mut out = vec![(zone.to_string(), forward)];

    let mut reverse: Vec<(String, Vec<Record>)> = Vec::new();
    let mut add = |rev: String, records: Vec<Record>| -> Result<(), UpdateError> {
        let Some(z) = zone_of(&rev, reverse_zones) else {
            return Ok(());
        };
        match reverse.iter_mut().find(|(zone, _)| zone == z) {
            Some((_, existing)) => existing.extend(records),
            None => reverse.push((z.to_string(), records)),
        }
        Ok(())
    };
    if let Some(from) = change.from.filter(|f| Some(*f) != change.to) {
        let rev = name(&reverse_name(from))?;
        let mut ours = Record::from_rdata(rev.clone(), 0, RData::PTR(PTR(fqdn.clone())));
        ours.dns_class = DNSClass::NONE;
        add(reverse_name(from), vec![ours])?;
    }
    if let Some(to) = change.to {
        let rev = name(&reverse_name(to))?;
        add(
            reverse_name(to),
            vec![
                delete_rrset(rev.clone(), RecordType::PTR),
                Record::from_rdata(rev, ttl, RData::PTR(PTR(fqdn.clone()))),
            ],
        )?;
    }
    for (z, records) in reverse {
        let mut m = update_for(&z)?;
        for r in records {
            m.add_update(r);
        }
        out.push((z, m));
    }
    Ok(out)
}

/// Sign `message` as message `id` at `now` (seconds since the epoch).
pub fn sign(zone: String, mut message: Message, id: u16, key: &TsigKey, now: u64) -> Result<Signed, UpdateError> {
    message.metadata.id = id;
    let signer = signer(key)?;
    let verifier = message
        .finalize(&signer, now)
        .map_err(|e| UpdateError::Encode(e.to_string()))?
        .ok_or_else(|| UpdateError::Encode("no TSIG verifier for the answer".into()))?;
    let bytes = message.to_vec().map_err(|e| UpdateError::Encode(e.to_string()))?;
    Ok(Signed {
        zone,
        id,
        bytes,
        verifier,
    })
}

/// Read the server's answer to `sent`: Ok only for a NOERROR signed by the same key.
pub fn check_answer(sent: &mut Signed, answer: &[u8]) -> Result<(), UpdateError> {
    let message = Message::from_vec(answer).map_err(|e| UpdateError::Undecodable(e.to_string()))?;
    if message.metadata.id != sent.id || message.metadata.message_type != MessageType::Response {
        return Err(UpdateError::WrongId {
            got: message.metadata.id,
            sent: sent.id,
        });
    }
    if message.metadata.response_code != ResponseCode::NoError {
        // BIND answers a bad key or time unsigned (RFC 8945 section 5.3.2), so the code is
        // all there is to say; it is still a failure either way.
        let tsig_error = message
            .signature()
            .map(|s| {
                format!(
                    " (TSIG error {})",
                    s.data.error.map(|e| format!("{e:?}")).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        return Err(UpdateError::Refused(format!(
            "{}{tsig_error}",
            message.metadata.response_code
        )));
    }
    sent.verifier
        .verify(answer)
        .map(|_| ())
        .map_err(|e| UpdateError::BadSignature(e.to_string()))
}

fn signer(key: &TsigKey) -> Result<TSigner, UpdateError> {
    TSigner::new(
        key.secret.clone(),
        key.algorithm.clone(),
        name(&key.name)?,
        FUDGE_SECONDS,
    )
    .map_err(|e| UpdateError::Encode(e.to_string()))
}

/// An update for `zone`: its zone section names the zone's SOA (RFC 2136 section 2.3).
fn update_for(zone: &str) -> Result<Message, UpdateError> {
    let mut m = Message::new(0, MessageType::Query, OpCode::Update);
    let mut q = Query::new();
    q.set_name(name(zone)?)
        .set_query_class(DNSClass::IN)
        .set_query_type(RecordType::SOA);
    m.add_zone(q);
    Ok(m)
}

/// "Delete an RRset" (RFC 2136 section 2.5.2): class ANY, TTL 0, no RDATA.
fn delete_rrset(owner: Name, rtype: RecordType) -> Record {
    let mut r = Record::update0(owner, 0, rtype);
    r.dns_class = DNSClass::ANY;
    r
}

fn name(s: &str) -> Result<Name, UpdateError> {
    let mut n = Name::from_ascii(s).map_err(|_| UpdateError::BadName(s.to_string()))?;
    n.set_fqdn(true);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::tsig::TsigAlgorithm;

    fn key() -> TsigKey {
        TsigKey {
            name: "provd-a".into(),
            algorithm: TsigAlgorithm::HmacSha256,
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
        }
    }

    fn zones() -> Vec<String> {
        vec!["0.10.in-addr.arpa".into()]
    }

    #[test]
    fn a_move_replaces_the_a_and_both_ptrs() {
        let change = Change {
            fqdn: "hv1.a.test".into(),
            from: Some("10.0.0.21".parse().unwrap()),
            to: Some("10.0.0.31".parse().unwrap()),
        };
        let msgs = messages(&change, "a.test", &zones(), 300).unwrap();
        assert_eq!(
            msgs.len(),
            2,
            "forward, then the one reverse zone both addresses are in"
        );
        let (zone, fwd) = &msgs[0];
        assert_eq!(zone, "a.test");
        assert_eq!(fwd.metadata.op_code, OpCode::Update);
        assert_eq!(fwd.queries[0].query_type(), RecordType::SOA, "the zone section");
        let updates = &fwd.authorities;
        assert_eq!(updates.len(), 2);
        assert_eq!(
            (updates[0].dns_class, updates[0].ttl),
            (DNSClass::ANY, 0),
            "delete the A RRset"
        );
        assert_eq!(updates[1].data, RData::A(A("10.0.0.31".parse().unwrap())));
        let (rzone, rev) = &msgs[1];
        assert_eq!(rzone, "0.10.in-addr.arpa");
        let kinds: Vec<(String, DNSClass)> = rev
            .authorities
            .iter()
            .map(|r| (r.name.to_string(), r.dns_class))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("21.0.0.10.in-addr.arpa.".to_string(), DNSClass::NONE),
                ("31.0.0.10.in-addr.arpa.".to_string(), DNSClass::ANY),
                ("31.0.0.10.in-addr.arpa.".to_string(), DNSClass::IN),
            ]
        );
    }

    #[test]
    fn a_removal_outside_the_reverse_zones_touches_only_the_forward_zone() {
        let change = Change {
            fqdn: "hv1.a.test".into(),
            from: Some("192.168.1.5".parse().unwrap()),
            to: None,
        };
        let msgs = messages(&change, "a.test", &zones(), 300).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].1.authorities.len(), 1, "only the A RRset's deletion");
    }

    #[test]
    fn answers_count_only_when_signed_and_matching() {
        let change = Change {
            fqdn: "hv1.a.test".into(),
            from: None,
            to: Some("10.0.0.21".parse().unwrap()),
        };
        let (zone, m) = messages(&change, "a.test", &zones(), 300).unwrap().remove(0);
        let now = 1_800_000_000;
        let mut sent = sign(zone, m, 4242, &key(), now).unwrap();
        let request = Message::from_vec(&sent.bytes).unwrap();
        assert!(request.signature().is_some(), "the update carries a TSIG");

        // What a server that knows the key answers: NOERROR, signed over the request's MAC.
        let mut answer = Message::new(4242, MessageType::Response, OpCode::Update);
        answer.add_zone(request.queries[0].clone());
        let unsigned = answer.to_vec().unwrap();
        assert!(
            matches!(check_answer(&mut sent, &unsigned), Err(UpdateError::BadSignature(_))),
            "unsigned"
        );

        let mut other = answer.clone();
        other.metadata.id = 1;
        assert!(matches!(
            check_answer(&mut sent, &other.to_vec().unwrap()),
            Err(UpdateError::WrongId { .. })
        ));

        let mut refused = answer.clone();
        refused.metadata.response_code = ResponseCode::NotAuth;
        let err = check_answer(&mut sent, &refused.to_vec().unwrap()).unwrap_err();
        assert!(
            matches!(err, UpdateError::Refused(ref why) if why.contains("Not authorized")),
            "{err}"
        );
        assert!(check_answer(&mut sent, b"\x00\x01").is_err());
    }
}
