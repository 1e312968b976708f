//! The DHCP I/O loop: receive, parse, decide, persist, send.
//!
//! One task per interface socket shares one `Leases` handle, whose lock is held only for the
//! decision (microseconds). A decision that binds a lease queues its write for the store's
//! group commit and hands the answer to the socket's `answer_when_durable` task, which sends
//! it *after* the commit is durable: the receive loop never waits for an fsync, and many
//! leases share one commit and one wake-up. Only socket setup failures are fatal; every bad packet
//! is counted and dropped.

use crate::clock::unix_now;
use crate::config::topology::Ingress;
use crate::dhcp::Leases;
use crate::dhcp::engine::Outcome;
use crate::dhcp::packet;
use crate::dhcp::reply::Destination;
use crate::dhcp::socket::{self, CLIENT_PORT, SERVER_PORT};
use crate::dhcp::stats::DhcpStats;
use crate::inventory::Observation;
use crate::journal::Journal;
use crate::journal::Step;
use crate::mac::MacAddr;
use crate::store::LeaseRecord;
use crate::store::Store;
use dhcproto::v4::{Message, MessageType};
use dhcproto::{Encodable, Encoder};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// BOOTP's minimum message size (RFC 1542 §3.4); some relays and old clients drop less.
const MIN_REPLY_LEN: usize = 300;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for DHCP on interface {interface} ({address}): {source}")]
pub struct ListenError {
    pub interface: String,
    pub address: Ipv4Addr,
    pub source: std::io::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("a DHCP receive loop panicked: {0}")]
    Panicked(String),
}

/// Where replies go: DHCP's own ports (RFC 2131 §4.1), or other ports for in-process tests
/// that play client and relay on loopback without privileges or conflicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyPorts {
    /// Clients listen here (68).
    pub client: u16,
    /// Relays listen here (67).
    pub server: u16,
}

impl ReplyPorts {
    pub const STANDARD: ReplyPorts = ReplyPorts {
        client: CLIENT_PORT,
        server: SERVER_PORT,
    };
}

#[derive(Clone)]
pub struct Shared {
    pub ports: ReplyPorts,
    pub leases: Leases,
    /// The config generations: each packet is decided under the one current when it came.
    pub generations: Arc<crate::generation::Generations>,
    pub store: Store,
    pub stats: Arc<DhcpStats>,
    /// Where facts about network-booting machines go (the inventory's discovery). Sent with
    /// `try_send`: a full queue loses an observation, never delays a DHCP answer.
    pub observer: Option<mpsc::Sender<(MacAddr, Observation)>>,
    pub journal: Option<Arc<Journal>>,
    /// Failover, by site: every lease change, once durable, goes to the partner (BNDUPD).
    pub failover_updates: Arc<std::collections::HashMap<String, crate::dhcp::partner_updates::PartnerUpdates>>,
    /// The bound on lease writes waiting for the store (one per address, a cap on all).
    pub persists: Arc<crate::dhcp::persist_gate::PersistGate>,
}

impl Shared {
    /// A copy for the failover partner, only where the site has one (no clone otherwise).
    fn partner_copy(&self, record: &LeaseRecord) -> Option<LeaseRecord> {
        self.failover_updates.contains_key(&record.site).then(|| record.clone())
    }

    fn tell_partner(&self, record: Option<LeaseRecord>) {
        if let Some(r) = record
            && let Some(updates) = self.failover_updates.get(&r.site)
        {
            updates.push(r);
        }
    }
}

/// Bind one socket per ingress (its interface, SO_BINDTODEVICE). All or nothing: the
/// first interface that cannot be bound is the error, naming it.
pub fn bind(ingresses: &[Ingress]) -> Result<Vec<(UdpSocket, Ingress)>, ListenError> {
    ingresses
        .iter()
        .map(|ing| {
            let sock = socket::bind_interface(&ing.listen.interface).map_err(|source| ListenError {
                interface: ing.listen.interface.clone(),
                address: ing.listen.address,
                source,
            })?;
            Ok((sock, ing.clone()))
        })
        .collect()
}

/// Serve bound sockets (`bind`'s, or a test's on loopback) until `shutdown` turns true.
pub async fn serve(
    shared: Shared,
    sockets: Vec<(UdpSocket, Ingress)>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (sock, ing) in sockets {
        tasks.spawn(receive_loop(shared.clone(), Arc::new(sock), ing, shutdown.clone()));
    }
    supervise(tasks).await
}

/// Wait for every receive loop; the first that panics ends them all with an error (a
/// panicking loop would otherwise leave its interface silently unserved while the daemon
/// looks healthy). `provd serve` then exits non-zero.
async fn supervise(mut tasks: tokio::task::JoinSet<()>) -> Result<(), ServeError> {
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done
            && e.is_panic()
        {
            tasks.abort_all();
            return Err(ServeError::Panicked(e.to_string()));
        }
    }
    Ok(())
}

/// Serve one already-bound socket as `ingress` until `shutdown` turns true (what `serve`
/// does per interface; in-process tests bind 127.0.0.1 port 0 themselves).
pub async fn serve_socket(shared: Shared, sock: UdpSocket, ingress: Ingress, shutdown: watch::Receiver<bool>) {
    receive_loop(shared, Arc::new(sock), ingress, shutdown).await
}

async fn receive_loop(shared: Shared, sock: Arc<UdpSocket>, ingress: Ingress, mut shutdown: watch::Receiver<bool>) {
    let (durable, waiting) = mpsc::unbounded_channel();
    // Ends once this loop has returned and everything queued is answered (or refused).
    tokio::spawn(answer_when_durable(
        shared.clone(),
        sock.clone(),
        ingress.clone(),
        waiting,
    ));
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, peer) = tokio::select! {
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("recv on {}: {e}", ingress.listen.interface);
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let source = match peer.ip() {
            std::net::IpAddr::V4(ip) => Some(ip),
            std::net::IpAddr::V6(_) => None,
        };
        handle_datagram(&shared, &sock, &ingress, &durable, &buf[..n], source);
    }
}

/// A lease write queued for the group commit, and what to do once it is durable.
struct AwaitingCommit {
    commit: crate::store::PendingCommit,
    /// The ACK to send (none for a RELEASE or DECLINE, which get no answer).
    reply: Option<(Message, MessageType, Destination)>,
    for_partner: Option<LeaseRecord>,
    /// Holds the address's slot in the persist gate until the answer is out.
    _permit: crate::dhcp::persist_gate::Permit,
}

/// Answer queued writes in order, each once its commit is durable. One task per socket
/// instead of one per ACK: commits finish in queue order, so after the first of a group
/// commit wakes this task the rest are already done, and a batch of hundreds of ACKs costs
/// one wake-up instead of hundreds. The queue is unbounded in type only: every entry holds
/// a persist-gate permit, so it is bounded by `persist_gate::MAX_IN_FLIGHT`.
async fn answer_when_durable(
    shared: Shared,
    sock: Arc<UdpSocket>,
    ingress: Ingress,
    mut waiting: mpsc::UnboundedReceiver<AwaitingCommit>,
) {
    while let Some(w) = waiting.recv().await {
        match w.commit.durable().await {
            Ok(()) => {
                // The ACK leaves only once the lease is durable: a crash before this point
                // loses an unacknowledged lease, which the client simply asks for again.
                if let Some((msg, kind, dest)) = &w.reply {
                    send(&shared, &sock, &ingress, msg, *kind, *dest);
                }
                shared.tell_partner(w.for_partner);
            }
            Err(e) => {
                shared.stats.persist_failures.inc();
                match w.reply {
                    Some(_) => tracing::error!("lease not persisted, ACK withheld: {e}"),
                    None => tracing::error!("could not persist release/decline: {e}"),
                }
            }
        }
    }
}

fn handle_datagram(
    shared: &Shared,
    sock: &Arc<UdpSocket>,
    ingress: &Ingress,
    durable: &mpsc::UnboundedSender<AwaitingCommit>,
    bytes: &[u8],
    source: Option<Ipv4Addr>,
) {
    let mut req = match packet::parse(bytes) {
        Ok(r) => r,
        Err(e) => {
            shared.stats.malformed(e).inc();
            tracing::debug!("dropped malformed packet on {}: {e}", ingress.listen.interface);
            return;
        }
    };
    req.source = source;
    shared.stats.received(req.msg_type).inc();
    let generation = shared.generations.current();
    let outcome = shared.leases.decide(&generation.topology, &req, ingress, unix_now());
    // Discovery hears of a booting machine once it holds a lease (this ACK): a DISCOVER with
    // a made-up MAC costs nothing, a lease costs a pool address.
    let acked = matches!(
        &outcome,
        Outcome::Reply {
            kind: MessageType::Ack,
            persist: Some(_),
            ..
        }
    );
    if let (true, Some(tx), Some(mac)) = (acked, &shared.observer, req.mac)
        && req.is_booting()
    {
        let obs = Observation {
            arch: req.arch,
            uuid: req.client_uuid.clone(),
            vendor_class: req
                .vendor_class
                .as_ref()
                .map(|v| crate::printable::printable(&String::from_utf8_lossy(v)).into_owned()),
        };
        let _ = tx.try_send((mac, obs));
    }
    let (record, reply) = match outcome {
        Outcome::Drop(reason) => {
            shared.stats.dropped(reason).inc();
            return;
        }
        Outcome::Reply {
            msg,
            kind,
            dest,
            persist: None,
        } => {
            send(shared, sock, ingress, &msg, kind, dest);
            return;
        }
        Outcome::Persist(record) => (record, None),
        Outcome::Reply {
            msg,
            kind,
            dest,
            persist: Some(record),
        } => (record, Some((msg, kind, dest))),
    };
    let Some(permit) = admit_write(shared, &record) else {
        return;
    };
    let for_partner = shared.partner_copy(&record);
    match shared.store.submit(vec![record]) {
        Ok(commit) => {
            let _ = durable.send(AwaitingCommit {
                commit,
                reply,
                for_partner,
                _permit: permit,
            });
        }
        // The committer is behind (or gone): no answer, the client retransmits.
        Err(e) => {
            shared.stats.dropped_persist_backlog.inc();
            tracing::debug!("lease write not queued: {e}");
        }
    }
}

/// No task waits on the store without a permit, so those tasks are bounded whatever a
/// client sends. Not admitted: counted, and no answer (the client retransmits).
fn admit_write(shared: &Shared, record: &LeaseRecord) -> Option<crate::dhcp::persist_gate::Permit> {
    shared
        .persists
        .admit(record.ip)
        .map_err(|busy| shared.stats.not_persisted(busy).inc())
        .ok()
}

fn send(shared: &Shared, sock: &UdpSocket, ingress: &Ingress, msg: &Message, kind: MessageType, dest: Destination) {
    let mut bytes = Vec::with_capacity(MIN_REPLY_LEN);
    if let Err(e) = msg.encode(&mut Encoder::new(&mut bytes)) {
        shared.stats.send_errors.inc();
        tracing::error!("could not encode reply: {e}");
        return;
    }
    if bytes.len() < MIN_REPLY_LEN {
        bytes.resize(MIN_REPLY_LEN, 0);
    }
    let to = match dest {
        Destination::Relay(ip) => SocketAddrV4::new(ip, shared.ports.server),
        Destination::Unicast(ip) => SocketAddrV4::new(ip, shared.ports.client),
        Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, shared.ports.client),
        Destination::Hardware { ip, mac } => match socket::set_arp_entry(sock, &ingress.listen.interface, ip, mac) {
            Ok(()) => SocketAddrV4::new(ip, shared.ports.client),
            Err(e) => {
                tracing::debug!("ARP entry for {ip} failed ({e}); broadcasting instead");
                SocketAddrV4::new(Ipv4Addr::BROADCAST, shared.ports.client)
            }
        },
    };
    // try_send_to: the socket is non-blocking and replies are small; if the kernel buffer
    // is full the client retransmits, which is better than stalling every other client.
    match sock.try_send_to(&bytes, to.into()) {
        Ok(_) => {
            shared.stats.sent(kind).inc();
            if let (Some(j), MessageType::Ack) = (&shared.journal, kind)
                && !msg.yiaddr().is_unspecified()
            {
                let boot_file = msg
                    .fname_str()
                    .and_then(|r| r.ok())
                    .map(|f| f.trim_end_matches('\0').to_string());
                let address = msg.yiaddr();
                j.record(
                    MacAddr::from_chaddr(msg.chaddr()),
                    Some(address),
                    Step::DhcpAck { address, boot_file },
                );
            }
        }
        Err(e) => {
            shared.stats.send_errors.inc();
            tracing::debug!("send to {to} failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_loop_ends_the_others_with_an_error() {
        let mut tasks = tokio::task::JoinSet::new();
        let (_keep, mut never) = watch::channel(false);
        tasks.spawn(async move {
            let _ = never.changed().await; // a healthy loop: would run forever
        });
        tasks.spawn(async { panic!("receive loop bug") });
        let r = tokio::time::timeout(std::time::Duration::from_secs(5), supervise(tasks))
            .await
            .expect("supervise returns without waiting for the healthy loop");
        assert!(matches!(r, Err(ServeError::Panicked(_))), "{r:?}");

        let mut fine = tokio::task::JoinSet::new();
        fine.spawn(async {});
        assert!(supervise(fine).await.is_ok());
    }
}
