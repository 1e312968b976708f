//! Which client addresses may read boot files at all: the trait TFTP and the boot HTTP
//! listeners ask, once per TFTP request and once per HTTP connection, before anything is
//! read. The daemon's rule (lease, reservation, `tftp_open`) is `boot::admission`; this
//! module only names the question, so that the protocols need not depend on the policy.

use std::net::Ipv4Addr;

/// Which client addresses may read at all.
pub trait Admission: Send + Sync {
    fn admits(&self, client: Ipv4Addr) -> bool;
}

/// Every address (tools and tests that serve a plain directory).
pub struct AdmitAll;
impl Admission for AdmitAll {
    fn admits(&self, _: Ipv4Addr) -> bool {
        true
    }
}
