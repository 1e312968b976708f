//! DHCP failover with the ISC dhcpd protocol (draft-ietf-dhc-failover-12 as ISC DHCP 4.4
//! speaks it), so that two provd servers, or a provd and an ISC dhcpd, share a pool and
//! neither strands a client when the other dies.
//!
//! - `codec`: the TCP message format, every message type and option (pure).
//! - `binding`: lease records to BNDUPDs and back (pure).
//! - `peer`: the TCP conversation with the partner and the durable relationship state.
//! - `state`: the failover state machine and what each state may serve (pure).
//! - `loadbalance`: which server answers a client in NORMAL state: RFC 3074's hash exactly
//!   as ISC computes it (pure).
//! - `gate`: what the DHCP engine may answer, hand out and for how long, by state (pure).

pub mod binding;
pub mod codec;
pub mod gate;
pub mod loadbalance;
pub mod peer;
pub mod state;
