//! The failover pair's shared inventory (see `link` for the connection and `wire` for the
//! messages). The merge rules live beside their records: `inventory::merge::host`,
//! `pki::registry::CertRecord::merge`; NoCloud seeds never change once made, so a seed is
//! kept if either side has it.
pub mod link;
pub mod wire;
