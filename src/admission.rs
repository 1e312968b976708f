//! Which client addresses may read boot files at all: the question the boot HTTP listeners
//! ask once per connection, before anything is read (TFTP asks the same rule per request
//! through `tftp::Scope`). The daemon's answer (lease, reservation, `tftp_open`) is
//! `boot::admission`; this module only names the question, so that `http::listen` need not
//! depend on the policy.

use std::net::Ipv4Addr;

/// Which client addresses may read at all.
pub trait Admission: Send + Sync {
    fn admits(&self, client: Ipv4Addr) -> bool;
}
