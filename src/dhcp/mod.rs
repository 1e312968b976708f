//! The DHCPv4 server: sockets, decode/encode (dhcproto), lease allocation, PXE/iPXE
//! answers, relays.
//!
//! Layers, each with one job:
//! - `packet`: bytes -> checked `Request` (pure)
//! - which site/subnet/host a request belongs to: `config::topology` (pure, per generation)
//! - `leases`: the in-memory lease table and allocation (pure)
//! - what a booting client loads is the boot policy's firmware stage (`boot::firmware`)
//! - `engine`: RFC 2131 decisions (pure but for the lease table it owns)
//! - `rules`: the trait through which failover restricts the engine (one-way dependency)
//! - `handle`: `Leases`, the one owner of the engine and its lock; everyone else calls it
//! - `reply`: building replies and choosing their destination (pure)
//! - `socket`, `server`: the only I/O; `stats`: counters; `partner_updates`: durable lease
//!   changes for the failover partner, coalesced by address; `persist_gate`: the bound on
//!   lease writes in flight
//!
//! Must never: answer on an interface the config does not name, send an ACK before its
//! lease is durable, or panic on a packet.

pub mod engine;
pub mod handle;
pub mod leases;
pub mod packet;
pub mod partner_updates;
pub mod persist_gate;
pub mod reply;
pub mod rules;
pub mod server;
pub mod socket;
pub mod stats;

pub use handle::{LeaseCounts, Leases};
