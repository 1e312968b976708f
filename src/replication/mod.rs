//! The failover pair's shared inventory (see `link` for the connection, `merge` for the
//! rules, `wire` for the messages).
pub mod merge;
