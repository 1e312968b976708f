//! The RFC 2131 server state machine: one parsed request in, one decision out.
//!
//! Pure apart from the in-memory lease table it owns: no sockets, no store, time passed in.
//! A decision that changes a lease the client will rely on carries the `LeaseRecord` to
//! persist; the I/O layer must make it durable before sending the reply.

use crate::boot::firmware::{self, BootAnswer, DhcpAsk, DhcpBoot, DhcpPolicy, SitePolicy};
use crate::config::topology::{Ingress, Topology};
use crate::config::{Site, Subnet};
use crate::dhcp::leases::{ClientFacts, LeaseTable, Owner};
use crate::dhcp::packet::Request;
use crate::dhcp::reply::{self, Destination, Grant};
use crate::dhcp::rules::{PoolRules, Refusal};
use crate::store::LeaseRecord;
use dhcproto::v4::{Message, MessageType};
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Why a request got no answer. Each is counted; none is an error of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// giaddr or receiving interface matches no served subnet.
    NoSubnet,
    /// A relayed request (giaddr set) from a source the site does not list as a relay.
    UntrustedRelay,
    /// The boot policy ignores this client (an unknown MAC where the site ignores unknown clients).
    UnknownClient,
    PoolExhausted,
    /// REQUEST naming another server: the client chose someone else.
    OtherServer,
    /// INIT-REBOOT/RENEW for an address we have no record of and may not vouch for.
    NoRecord,
    /// RELEASE/DECLINE for a lease that is not this client's.
    NotClientsLease,
    /// A REQUEST with neither requested address nor ciaddr, and similar.
    Malformed,
    /// Message types a server does not answer (OFFER, ACK, ... sent to us).
    Unsupported,
    /// Failover: this server's state serves nobody (RECOVER, POTENTIAL-CONFLICT, ...).
    FailoverNoService,
    /// Failover: NORMAL, and load balancing gives this client to the partner.
    FailoverPartnersClient,
}

#[derive(Debug)]
pub enum Outcome {
    Reply {
        msg: Message,
        kind: MessageType,
        dest: Destination,
        persist: Option<LeaseRecord>,
    },
    /// RELEASE and DECLINE: persist, answer nothing.
    Persist(LeaseRecord),
    Drop(DropReason),
}

/// The decision core. Owned by `dhcp::Leases`, which holds it behind its lock; nothing else
/// reaches its fields.
pub struct Engine {
    table: LeaseTable,
    /// The served sites' names, in topology order: what site indices mean. Fixed for the
    /// life of the process (a reload that changes the served sites is refused), so every
    /// generation's topology has the same sites in the same order.
    sites: Vec<String>,
    /// Pool-sharing rules by site index (None: the site has no failover partner).
    rules: Vec<Option<Arc<dyn PoolRules>>>,
    /// Whom to answer and with which boot file (the boot policy's DHCP stage).
    policy: Arc<dyn DhcpPolicy>,
}

/// Everything decided about a client before looking at its message type.
struct Context<'a> {
    req: &'a Request,
    site: &'a Site,
    subnet: &'a Subnet,
    server_id: Ipv4Addr,
    reserved_ip: Option<Ipv4Addr>,
    hostname: Option<String>,
    boot: Option<BootAnswer>,
    rules: Option<&'a dyn PoolRules>,
    now: u64,
}

impl Engine {
    /// An engine for the served sites of `topology` (any generation: they share them),
    /// booting clients as the site config says (`SitePolicy`).
    pub fn new(topology: &Topology, table: LeaseTable) -> Self {
        Engine::with_policy(topology, table, Arc::new(SitePolicy))
    }

    /// An engine that asks `policy` whom to answer and what they boot.
    pub fn with_policy(topology: &Topology, table: LeaseTable, policy: Arc<dyn DhcpPolicy>) -> Self {
        let sites: Vec<String> = topology.sites.iter().map(|s| s.name.clone()).collect();
        let rules = vec![None; sites.len()];
        Engine {
            table,
            sites,
            rules,
            policy,
        }
    }

    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    pub fn table_mut(&mut self) -> &mut LeaseTable {
        &mut self.table
    }

    /// Replace the pool-sharing rules of `site`; false if this engine does not serve it.
    pub fn set_rules(&mut self, site: &str, rules: Arc<dyn PoolRules>) -> bool {
        match self.sites.iter().position(|s| s == site) {
            Some(i) => {
                self.rules[i] = Some(rules);
                true
            }
            None => false,
        }
    }

    /// The answer to one request under `topology` (the caller's config generation: taken
    /// once per packet, so a reload between two packets is never seen halfway).
    pub fn handle(&mut self, topology: &Topology, req: &Request, ingress: &Ingress, now: u64) -> Outcome {
        debug_assert!(
            topology.sites.iter().map(|s| &s.name).eq(self.sites.iter()),
            "a generation serves the sites the engine was made for"
        );
        let Engine {
            table, rules, policy, ..
        } = self;
        let giaddr = req.giaddr();
        let found = if giaddr.is_unspecified() {
            topology
                .subnet_for(ingress.listen.address)
                .filter(|(si, _)| *si == ingress.site)
        } else {
            topology.subnet_for(giaddr)
        };
        let Some((site_idx, subnet)) = found else {
            return Outcome::Drop(DropReason::NoSubnet);
        };
        let site = &topology.sites[site_idx];
        // A giaddr is only a claim: trust the relay by its source address and the config.
        if !giaddr.is_unspecified() && !req.source.is_some_and(|s| site.trusts_relay(s)) {
            return Outcome::Drop(DropReason::UntrustedRelay);
        }
        let host = topology.host(req.mac).map(|(_, h)| h);
        let boot = match policy.dhcp(&DhcpAsk {
            site,
            host,
            mac: req.mac,
            firmware: req.firmware_facts(),
        }) {
            DhcpBoot::Ignore => return Outcome::Drop(DropReason::UnknownClient),
            DhcpBoot::LeaseOnly => None,
            DhcpBoot::Boot(answer) => Some(answer),
        };
        let site_rules = rules.get(site_idx).and_then(Option::as_deref);
        if let Some(g) = site_rules
            && let Err(refusal) = g.admits(req)
        {
            return Outcome::Drop(match refusal {
                Refusal::NoService => DropReason::FailoverNoService,
                Refusal::PartnersClient => DropReason::FailoverPartnersClient,
            });
        }
        let ctx = Context {
            req,
            site,
            subnet,
            server_id: ingress.listen.address,
            reserved_ip: host.and_then(|h| h.ip).filter(|ip| subnet.prefix.contains(ip)),
            hostname: host.map(|h| h.hostname.clone()).or_else(|| req.hostname.clone()),
            boot,
            rules: site_rules,
            now,
        };
        let reserved = &topology.reserved;
        match req.msg_type {
            MessageType::Discover => discover(table, reserved, &ctx, now),
            MessageType::Request => request(table, reserved, &ctx, now),
            MessageType::Decline => match req.requested_ip {
                Some(ip) => table
                    .decline(ip, &req.client, site.dhcp.decline_quarantine, now, &site.name)
                    .map_or(Outcome::Drop(DropReason::NotClientsLease), Outcome::Persist),
                None => Outcome::Drop(DropReason::Malformed),
            },
            MessageType::Release => table
                .release(req.ciaddr(), &req.client, now, &site.name)
                .map_or(Outcome::Drop(DropReason::NotClientsLease), Outcome::Persist),
            MessageType::Inform => {
                // §4.3.5: configuration only; no yiaddr, no lease time.
                let msg = ctx.grant(MessageType::Ack, Ipv4Addr::UNSPECIFIED, None);
                let dest = reply::destination(req, MessageType::Ack, Ipv4Addr::UNSPECIFIED);
                Outcome::Reply {
                    msg,
                    kind: MessageType::Ack,
                    dest,
                    persist: None,
                }
            }
            _ => Outcome::Drop(DropReason::Unsupported),
        }
    }
}

impl Context<'_> {
    fn lease_time(&self) -> u32 {
        match self.req.requested_lease {
            Some(t) => t.clamp(60, self.subnet.max_lease_time),
            None => self.subnet.lease_time,
        }
    }

    /// The lease time for `ip`, within what failover allows (the partner's acknowledged
    /// time for this client's binding + MCLT).
    fn lease_time_for(&self, table: &LeaseTable, ip: Ipv4Addr) -> u32 {
        let wanted = self.lease_time();
        match self.rules {
            Some(g) if g.covers(ip) => {
                let tsfp = table
                    .get(ip)
                    .filter(|b| b.client == self.req.client)
                    .map_or(0, |b| b.tsfp);
                g.clamp_lease(wanted, tsfp, self.now)
            }
            _ => wanted,
        }
    }

    fn owner(&self) -> Owner<'_> {
        self.rules.map_or(Owner::Any, |g| g.owner(self.now))
    }

    fn grant(&self, kind: MessageType, yiaddr: Ipv4Addr, lease: Option<u32>) -> Message {
        reply::grant(
            self.req,
            &Grant {
                kind,
                yiaddr,
                server_id: self.server_id,
                subnet: self.subnet,
                lease,
                hostname: self.hostname.as_deref(),
                boot: self.boot.as_ref(),
                next_server: self.site.server_address,
                vendor_class: self
                    .boot
                    .as_ref()
                    .and_then(|_| firmware::vendor_class_reply(&self.req.firmware_facts(), &self.site.pxe)),
            },
        )
    }

    fn nak(&self, why: &str) -> Outcome {
        let msg = reply::nak(self.req, self.server_id, why);
        let dest = reply::destination(self.req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        Outcome::Reply {
            msg,
            kind: MessageType::Nak,
            dest,
            persist: None,
        }
    }

    /// May this client hold `ip` now? A client with a usable reservation may hold only that;
    /// otherwise any free pool address that is nobody's reservation.
    fn permitted(&self, table: &LeaseTable, reserved: &crate::dhcp::leases::Reserved, ip: Ipv4Addr, now: u64) -> bool {
        let client = &self.req.client;
        if let Some(r) = self.reserved_ip
            && table.available_for(r, client, now)
        {
            return ip == r;
        }
        let already_its = table
            .get(ip)
            .is_some_and(|b| &b.client == client && b.state == crate::dhcp::leases::BindState::Bound && b.ends > now);
        self.subnet.pools.iter().any(|p| p.contains(ip))
            && !reserved.contains(&ip)
            && table.available_for(ip, client, now)
            && (already_its || table.may_take(ip, self.owner()))
    }

    fn ack(&self, table: &mut LeaseTable, ip: Ipv4Addr, now: u64) -> Outcome {
        let lease = self.lease_time_for(table, ip);
        let facts = ClientFacts {
            mac: self.req.mac,
            hostname: self.hostname.clone(),
        };
        let record = table.bind(ip, &self.req.client, facts, lease, now, &self.site.name);
        let msg = self.grant(MessageType::Ack, ip, Some(lease));
        let dest = reply::destination(self.req, MessageType::Ack, ip);
        Outcome::Reply {
            msg,
            kind: MessageType::Ack,
            dest,
            persist: Some(record),
        }
    }
}

fn discover(table: &mut LeaseTable, reserved: &crate::dhcp::leases::Reserved, ctx: &Context, now: u64) -> Outcome {
    let client = &ctx.req.client;
    let ip = match ctx.reserved_ip {
        Some(r) if table.available_for(r, client, now) => Some(r),
        Some(r) => {
            tracing::warn!(
                "reserved address {r} for {} is held by another client; offering a pool address",
                ctx.req.mac.map(|m| m.to_string()).unwrap_or_default()
            );
            table.allocate_owned(ctx.subnet, client, ctx.req.requested_ip, reserved, now, ctx.owner())
        }
        None => table.allocate_owned(ctx.subnet, client, ctx.req.requested_ip, reserved, now, ctx.owner()),
    };
    let Some(ip) = ip else {
        return Outcome::Drop(DropReason::PoolExhausted);
    };
    table.offer(ip, client, ctx.req.mac, ctx.site.dhcp.offer_hold, now);
    let msg = ctx.grant(MessageType::Offer, ip, Some(ctx.lease_time_for(table, ip)));
    let dest = reply::destination(ctx.req, MessageType::Offer, ip);
    Outcome::Reply {
        msg,
        kind: MessageType::Offer,
        dest,
        persist: None,
    }
}

/// RFC 2131 §4.3.2: the client's state is told apart by server identifier, requested
/// address and ciaddr.
fn request(table: &mut LeaseTable, reserved: &crate::dhcp::leases::Reserved, ctx: &Context, now: u64) -> Outcome {
    let req = ctx.req;
    let ciaddr = req.ciaddr();
    if let Some(sid) = req.server_id {
        // SELECTING.
        if sid != ctx.server_id {
            table.withdraw_offer(&req.client);
            return Outcome::Drop(DropReason::OtherServer);
        }
        let ip = match req.requested_ip.or((!ciaddr.is_unspecified()).then_some(ciaddr)) {
            Some(ip) => ip,
            None => return Outcome::Drop(DropReason::Malformed),
        };
        return if ctx.permitted(table, reserved, ip, now) {
            ctx.ack(table, ip, now)
        } else {
            ctx.nak("requested address not available")
        };
    }
    if let Some(ip) = req.requested_ip.filter(|_| ciaddr.is_unspecified()) {
        // INIT-REBOOT: the client verifies an address it remembers.
        if !ctx.subnet.prefix.contains(&ip) {
            return ctx.nak("wrong network");
        }
        return verify(table, reserved, ctx, ip, now);
    }
    if !ciaddr.is_unspecified() {
        // RENEWING (unicast to us) or REBINDING (broadcast): same checks.
        if !ctx.subnet.prefix.contains(&ciaddr) {
            return ctx.nak("wrong network");
        }
        return verify(table, reserved, ctx, ciaddr, now);
    }
    Outcome::Drop(DropReason::Malformed)
}

/// Confirm or refuse an address the client believes it has.
fn verify(
    table: &mut LeaseTable,
    reserved: &crate::dhcp::leases::Reserved,
    ctx: &Context,
    ip: Ipv4Addr,
    now: u64,
) -> Outcome {
    if ctx.permitted(table, reserved, ip, now) {
        return ctx.ack(table, ip, now);
    }
    let ours_to_judge =
        table.get(ip).is_some() || table.address_of(&ctx.req.client).is_some() || ctx.reserved_ip.is_some();
    if ours_to_judge || ctx.site.dhcp.authoritative {
        ctx.nak("address not valid for this client")
    } else {
        // §4.3.2: with no record of the client, a non-authoritative server stays silent.
        Outcome::Drop(DropReason::NoRecord)
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod pxeclient_tests {
    use super::*;
    use crate::config;
    use crate::dhcp::packet;
    use dhcproto::v4::{DhcpOption, Message, OptionCode};
    use dhcproto::{Encodable, Encoder};

    fn offer_vendor_class(answer_pxeclient: bool) -> Option<Vec<u8>> {
        let toml = format!(
            "[sites.s]\nserver_address = \"10.0.0.1\"\nlisten = [{{ interface = \"eth0\", address = \"10.0.0.1\" }}]\n\
             [sites.s.pxe]\nanswer_pxeclient = {answer_pxeclient}\n\
             [[sites.s.subnets]]\nprefix = \"10.0.0.0/24\"\npools = [{{ start = \"10.0.0.100\", end = \"10.0.0.110\" }}]\n"
        );
        let cfg = config::load_from_strs(&[("t.toml".into(), toml)]).unwrap();
        let served = cfg.select_sites(&[]).unwrap();
        let topo = Topology::new(&cfg, &served);
        let ingress = topo.ingresses().remove(0);
        let mut engine = Engine::new(&topo, LeaseTable::new());
        let mut m = Message::default();
        m.set_chaddr(&[0x52, 0x54, 0, 0, 0, 9]);
        m.opts_mut().insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut().insert(DhcpOption::ClientSystemArchitecture(0.into()));
        m.opts_mut().insert(DhcpOption::ClassIdentifier(
            b"PXEClient:Arch:00000:UNDI:002001".to_vec(),
        ));
        let mut b = Vec::new();
        m.encode(&mut Encoder::new(&mut b)).unwrap();
        match engine.handle(&topo, &packet::parse(&b).unwrap(), &ingress, 1000) {
            Outcome::Reply { msg, .. } => match msg.opts().get(OptionCode::ClassIdentifier) {
                Some(DhcpOption::ClassIdentifier(v)) => Some(v.clone()),
                _ => None,
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pxeclient_is_answered_only_when_the_site_asks_for_it() {
        assert_eq!(offer_vendor_class(false), None);
        assert_eq!(offer_vendor_class(true), Some(b"PXEClient".to_vec()));
    }
}
