//! Who may read boot files at all: the one rule TFTP and the boot HTTP listeners share. An
//! address with a lease (ours or the failover partner's: firmware reads before anything
//! secret), a configured host's reservation, or one inside a served site's `tftp_open`
//! prefixes. Everyone else on the boot network is closed out before a byte is read, so the
//! transfer and connection slots belong to machines provd put on the network.
//!
//! Asked once per TFTP request and once per HTTP connection, each time of the generation
//! current then (a reload that adds a reservation admits it at once).

use super::{Boot, BootSource};
use crate::admission::Admission;
use std::net::Ipv4Addr;

impl Boot {
    /// May `client` read boot files (TFTP, boot HTTP)? See the module header.
    pub fn admits(&self, client: Ipv4Addr) -> bool {
        self.state.leases.is_bound(client, crate::clock::unix_now())
            || self.generation.config.hosts.by_ip(client).is_some()
            || self
                .generation
                .served_sites()
                .any(|s| s.pxe.tftp_open.iter().any(|p| p.contains(&client)))
    }
}

impl Admission for BootSource {
    fn admits(&self, client: Ipv4Addr) -> bool {
        self.now().admits(client)
    }
}

/// TFTP's per-request scope: the generation current when the request arrived answers both
/// whether the client may read and what its generated files say.
impl crate::tftp::Scope for Boot {
    fn admits(&self, client: Ipv4Addr) -> bool {
        Boot::admits(self, client)
    }
    fn generate<'a>(&'a self, client: Ipv4Addr, path: &'a str) -> crate::tftp::GeneratedFuture<'a> {
        crate::tftp::GeneratedFiles::generate(self, client, path)
    }
}

impl crate::tftp::Scopes for BootSource {
    fn scope(&self) -> std::sync::Arc<dyn crate::tftp::Scope> {
        std::sync::Arc::new(self.now())
    }
}
