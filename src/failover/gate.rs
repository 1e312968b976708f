//! What the DHCP engine asks failover before it answers (pure): does this server answer
//! this client now, which free addresses may it hand out, and how long may the lease be.
//!
//! The peer task keeps one `Gate` per relationship up to date (state, MCLT and HBA learnt
//! from the partner, the time partner-down began); the engine reads it under its lock.

use super::loadbalance::{self, Role};
use super::state::{Service, State};
use crate::config::Pool;
use crate::dhcp::leases::Owner;
use crate::dhcp::packet::Request;
use crate::dhcp::rules::PoolRules;
pub use crate::dhcp::rules::Refusal;
use dhcproto::v4::{DhcpOption, MessageType, OptionCode};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub role: Role,
    pub state: State,
    /// The primary's hash bucket assignment (the secondary's view too); None until known.
    pub hba: Option<[u8; 32]>,
    pub load_balance_max_secs: u16,
    /// Maximum client lead time; 0 until a secondary has heard the primary's.
    pub mclt: u32,
    pub pools: Vec<Pool>,
    /// When this server entered its current state (unix seconds).
    pub stos: u64,
}

impl Gate {
    pub fn service(&self) -> Service {
        super::state::service(self.state, self.role)
    }

    /// May this server answer `req` now? Load balancing applies to the messages by which a
    /// client looks for a server (DISCOVER, and REQUEST in INIT-REBOOT); a REQUEST naming
    /// this server, a RENEW unicast to it, RELEASE, DECLINE and INFORM are answered by
    /// whoever they reach.
    pub fn admits(&self, req: &Request) -> Result<(), Refusal> {
        match self.service() {
            Service::None => Err(Refusal::NoService),
            Service::All | Service::AllWithTakeover => Ok(()),
            Service::LoadBalanced => {
                let seeking = match req.msg_type {
                    MessageType::Discover => true,
                    MessageType::Request => req.server_id.is_none() && req.ciaddr().is_unspecified(),
                    _ => false,
                };
                if !seeking {
                    return Ok(());
                }
                let Some(hba) = &self.hba else {
                    // No bucket assignment yet: ISC answers nobody by the hash; neither do we.
                    return Err(Refusal::PartnersClient);
                };
                let client_id = match req.msg.opts().get(OptionCode::ClientIdentifier) {
                    Some(DhcpOption::ClientIdentifier(id)) if !id.is_empty() => Some(id.as_slice()),
                    _ => None,
                };
                let hlen = (req.msg.hlen() as usize).min(16);
                let chaddr = &req.msg.chaddr()[..hlen.min(req.msg.chaddr().len())];
                let key = loadbalance::key(client_id, chaddr);
                if loadbalance::serves(self.role, hba, self.load_balance_max_secs, req.msg.secs(), key) {
                    Ok(())
                } else {
                    Err(Refusal::PartnersClient)
                }
            }
        }
    }

    /// Which free addresses this server may hand out at `now`.
    pub fn owner(&self, now: u64) -> Owner<'_> {
        // PARTNER-DOWN: the partner's free addresses become ours once MCLT has passed since we
        // entered the state (it may have promised them to clients until then).
        if self.service() == Service::AllWithTakeover && now >= self.stos + u64::from(self.mclt) {
            return Owner::Any;
        }
        match self.role {
            Role::Primary => Owner::Primary(&self.pools),
            Role::Secondary => Owner::Secondary(&self.pools),
        }
    }

    pub fn covers(&self, ip: std::net::Ipv4Addr) -> bool {
        self.pools.iter().any(|p| p.contains(ip))
    }

    /// The lease time a client may get: never beyond what the partner has acknowledged
    /// (tsfp) plus MCLT, so that if this server dies the partner knows every lease that can
    /// still be in use within MCLT. PARTNER-DOWN is bound by the same rule.
    pub fn clamp_lease(&self, wanted: u32, tsfp: u64, now: u64) -> u32 {
        let limit = tsfp.max(now) + u64::from(self.mclt);
        let end = (now + u64::from(wanted)).min(limit);
        (end.saturating_sub(now)).max(1) as u32
    }
}

impl PoolRules for Gate {
    fn admits(&self, req: &Request) -> Result<(), Refusal> {
        Gate::admits(self, req)
    }
    fn owner(&self, now: u64) -> Owner<'_> {
        Gate::owner(self, now)
    }
    fn covers(&self, ip: std::net::Ipv4Addr) -> bool {
        Gate::covers(self, ip)
    }
    fn clamp_lease(&self, wanted: u32, tsfp: u64, now: u64) -> u32 {
        Gate::clamp_lease(self, wanted, tsfp, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::packet;
    use dhcproto::v4::{Message, Opcode};
    use dhcproto::{Encodable, Encoder};

    fn gate(role: Role, state: State) -> Gate {
        Gate {
            role,
            state,
            hba: Some(loadbalance::hba_from_split(128)),
            load_balance_max_secs: 3,
            mclt: 600,
            pools: vec![Pool {
                start: "10.0.0.100".parse().unwrap(),
                end: "10.0.0.199".parse().unwrap(),
            }],
            stos: 1000,
        }
    }

    fn discover(last: u8, secs: u16) -> Request {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, last];
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest).set_chaddr(&mac).set_secs(secs);
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).unwrap();
        packet::parse(&buf).unwrap()
    }

    #[test]
    fn in_normal_exactly_one_of_the_pair_admits_each_client_and_waiting_clients_get_both() {
        let (p, s) = (gate(Role::Primary, State::Normal), gate(Role::Secondary, State::Normal));
        let mut primary = 0;
        for last in 0..=255u8 {
            let req = discover(last, 0);
            let (a, b) = (p.admits(&req).is_ok(), s.admits(&req).is_ok());
            assert!(a != b, "client {last}");
            primary += a as u32;
            // The same decision as the bare hash on chaddr.
            let mac = [0x52, 0x54, 0, 0x12, 0x34, last];
            assert_eq!(a, loadbalance::serves(Role::Primary, &p.hba.unwrap(), 3, 0, &mac));
        }
        assert!((80..180).contains(&primary), "{primary}");
        let req = discover(7, 10);
        assert!(
            p.admits(&req).is_ok() && s.admits(&req).is_ok(),
            "secs 10 > 3: both answer"
        );
    }

    #[test]
    fn states_without_service_refuse_and_interrupted_ones_serve_all() {
        let req = discover(1, 0);
        assert_eq!(
            gate(Role::Primary, State::Recover).admits(&req),
            Err(Refusal::NoService)
        );
        assert_eq!(
            gate(Role::Secondary, State::PotentialConflict).admits(&req),
            Err(Refusal::NoService)
        );
        assert!(
            gate(Role::Primary, State::CommunicationsInterrupted)
                .admits(&req)
                .is_ok()
        );
        assert!(
            gate(Role::Secondary, State::CommunicationsInterrupted)
                .admits(&req)
                .is_ok()
        );
        let mut no_hba = gate(Role::Primary, State::Normal);
        no_hba.hba = None;
        assert_eq!(no_hba.admits(&req), Err(Refusal::PartnersClient));
    }

    #[test]
    fn takeover_waits_for_mclt_and_lease_times_respect_it() {
        let g = gate(Role::Secondary, State::PartnerDown);
        assert!(matches!(g.owner(1000 + 599), Owner::Secondary(_)));
        assert!(matches!(g.owner(1000 + 600), Owner::Any));
        assert!(matches!(
            gate(Role::Primary, State::Normal).owner(99_999),
            Owner::Primary(_)
        ));
        // Nothing acknowledged yet: MCLT at most. Acknowledged far ahead: the full time.
        assert_eq!(g.clamp_lease(3600, 0, 5000), 600);
        assert_eq!(g.clamp_lease(3600, 5000 + 3600, 5000), 3600);
        assert_eq!(g.clamp_lease(3600, 5000 + 1000, 5000), 1600);
        assert_eq!(g.clamp_lease(300, 0, 5000), 300);
    }
}
