//! DHCP failover with the ISC dhcpd protocol (draft-ietf-dhc-failover-12 as ISC DHCP 4.4
//! speaks it), so that two provd servers, or a provd and an ISC dhcpd, share a pool and
//! neither strands a client when the other dies.
//!
//! - `codec`: the TCP message format, every message type and option (pure).
//! - `connection`: whole messages over one TCP connection (framing only).
//! - `binding`: lease records to BNDUPDs and back (pure).
//! - `session`: the conversation as a pure state machine, `(input, now) -> effects`.
//! - `table`: the lease table's side: what the session reads (`LeaseView`) and asks
//!   (`LeaseChange`), performed on `dhcp::Leases` (`apply`), by the driver and the tests alike.
//! - `peer`: the driver: sockets, timers, and performing the session's effects.
//! - `state`: the failover state machine and what each state may serve (pure).
//! - `loadbalance`: which server answers a client in NORMAL state: RFC 3074's hash exactly
//!   as ISC computes it (pure).
//! - `gate`: what the DHCP engine may answer, hand out and for how long, by state (pure);
//!   given to the engine as its `dhcp::rules::PoolRules`.

pub mod binding;
pub mod codec;
pub mod connection;
pub mod gate;
pub mod loadbalance;
pub mod peer;
pub mod queue;
pub mod session;
pub mod state;
pub mod table;

/// Why a failover conversation failed (the connection is dropped and retried; nothing here
/// stops the DHCP server).
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad message: {0}")]
    Decode(#[from] codec::DecodeError),
    #[error("{0}")]
    Closed(&'static str),
    #[error("{0} received, but this server is the {1}")]
    WrongRole(&'static str, &'static str),
    #[error("refused the partner's CONNECT: {0}")]
    RefusedConnect(&'static str),
    #[error("the partner refused our CONNECT (reason {reason}): {text}")]
    PartnerRefused { reason: u8, text: String },
    /// The partner must CONNECT (we are the secondary) or answer our CONNECT (we are the
    /// primary) before anything else: a BNDUPD from a connection that never identified
    /// itself is not the partner's.
    #[error("{0} before the CONNECT/CONNECTACK exchange")]
    BeforeConnect(&'static str),
    #[error("STATE without a known server-state")]
    BadState,
    #[error("the partner disconnected")]
    PartnerDisconnected,
    #[error("could not store failover state: {0}")]
    Store(#[from] crate::store::StoreError),
}
