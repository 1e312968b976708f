//! The failover pair's shared inventory (see `link` for the connection, `merge` for the
//! rules, `wire` for the messages).
pub mod link;
pub mod merge;
pub mod wire;
