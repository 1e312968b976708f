//! provd: one daemon that network-boots bare servers into KVM hypervisors and then runs
//! virtual machines on them. See README.md for the tour and `docs/architecture.md` for
//! the data flow this crate follows.
//!
//! The library holds every module; `main.rs` is the thin command-line edge.

pub mod admission;
pub mod assets;
pub mod bmc;
pub mod boot;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counters;
pub mod daemon;
pub mod dhcp;
pub mod dns;
pub mod failover;
pub mod generation;
pub mod http;
pub mod inventory;
pub mod ipam;
pub mod journal;
pub mod lab;
pub mod live;
pub mod mac;
pub mod netmodel;
pub mod nocloud;
pub mod pki;
pub mod pool;
pub mod printable;
pub mod random;
pub mod region;
pub mod reload;
pub mod render;
pub mod replication;
pub mod served_root;
pub mod store;
pub mod tftp;
pub mod vm;
