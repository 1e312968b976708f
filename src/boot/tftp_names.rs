//! The TFTP names that are rendered per client rather than read from disk (the names
//! PXELINUX and GRUB ask for), and the boot policy as TFTP's source of generated files.
//!
//! Debian's signed network GRUB (the Secure Boot chain: shim, then `grubx64.efi`) reads one
//! fixed name, `grub/grub.cfg` under the TFTP root (its built-in prefix is `/grub`), and
//! never the per-MAC names: that name is rendered for whoever asks, by the lease its
//! source address holds.

use super::{Boot, Format};
use crate::journal::Step;
use crate::mac::MacAddr;
use crate::tftp::{GenerateError, GeneratedFile, GeneratedFiles, GeneratedFuture};
use std::net::Ipv4Addr;

/// A name by IP address whose address holds no lease here.
#[derive(Debug, thiserror::Error)]
#[error("no lease for {0}")]
struct NoLease(Ipv4Addr);

/// TFTP names that are rendered per client instead of read from disk (public for the
/// fuzz target `tftp_names`).
#[derive(Debug, PartialEq, Eq)]
pub enum Generated {
    ByMac(Format, MacAddr),
    ByIp(Format, Ipv4Addr),
    /// The same name for every machine: rendered for the lease of the asking address.
    ByClient(Format),
}

/// What Debian's signed network GRUB reads (its prefix `/grub`, then `grub.cfg`).
const SIGNED_GRUB_CONFIG: &str = "grub/grub.cfg";

/// `pxelinux.cfg/01-<mac>`, `pxelinux.cfg/<8 hex digits>`, `...grub.cfg-01-<mac>`,
/// `...grub.cfg-<8 hex digits>` (the names PXELINUX and GRUB ask for, in that order).
pub fn generated_name(path: &str) -> Option<Generated> {
    let path = path.trim_start_matches('/');
    if path == SIGNED_GRUB_CONFIG {
        return Some(Generated::ByClient(Format::Grub));
    }
    let (format, tail) = if let Some(t) = path.strip_prefix("pxelinux.cfg/") {
        (Format::Pxelinux, t)
    } else if let Some(i) = path.rfind("grub.cfg-") {
        (Format::Grub, &path[i + "grub.cfg-".len()..])
    } else {
        return None;
    };
    if let Some(mac) = tail.strip_prefix("01-") {
        return mac.parse().ok().map(|m| Generated::ByMac(format, m));
    }
    if tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u32::from_str_radix(tail, 16)
            .ok()
            .map(|n| Generated::ByIp(format, Ipv4Addr::from(n)));
    }
    None
}

impl GeneratedFiles for Boot {
    fn generate<'a>(&'a self, client: Ipv4Addr, path: &'a str) -> GeneratedFuture<'a> {
        Box::pin(async move {
            let (format, mac) = match generated_name(path)? {
                Generated::ByMac(f, m) => (f, m),
                Generated::ByIp(f, ip) => match self.state.leases.mac_of(ip) {
                    Some(m) => (f, m),
                    None => return Some(Err(Box::new(NoLease(ip)) as GenerateError)),
                },
                // The asker's lease, else the host whose reservation it is (a reserved host
                // may ask before its first lease here, e.g. after a server change).
                Generated::ByClient(f) => {
                    let reserved = || self.generation.config.hosts.by_ip(client).map(|e| e.host.mac);
                    match self.state.leases.mac_of(client).or_else(reserved) {
                        Some(m) => (f, m),
                        None => return Some(Err(Box::new(NoLease(client)) as GenerateError)),
                    }
                }
            };
            // The script's decision goes to the journal as the HTTP route records iPXE's.
            Some(
                self.script(format, mac, None, client)
                    .await
                    .map(|(plan, text)| GeneratedFile {
                        journal: Some((
                            Some(mac),
                            Step::BootScript {
                                action: plan.action(),
                                description: plan.describe(self.config()),
                            },
                        )),
                        bytes: text.into_bytes(),
                    })
                    .map_err(|e| Box::new(e) as GenerateError),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names() {
        let mac: MacAddr = "52:54:00:aa:bb:cc".parse().unwrap();
        assert_eq!(
            generated_name("pxelinux.cfg/01-52-54-00-aa-bb-cc"),
            Some(Generated::ByMac(Format::Pxelinux, mac))
        );
        assert_eq!(
            generated_name("/pxelinux.cfg/C0A8000B"),
            Some(Generated::ByIp(Format::Pxelinux, Ipv4Addr::new(192, 168, 0, 11)))
        );
        assert_eq!(
            generated_name("grub/grub.cfg-01-52-54-00-aa-bb-cc"),
            Some(Generated::ByMac(Format::Grub, mac))
        );
        assert_eq!(
            generated_name("grub.cfg-0A000001"),
            Some(Generated::ByIp(Format::Grub, Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert_eq!(
            generated_name("pxelinux.cfg/default"),
            None,
            "served from disk if present"
        );
        assert_eq!(
            generated_name("pxelinux.cfg/C0A8"),
            None,
            "partial hex prefixes fall through to disk"
        );
        assert_eq!(generated_name("undionly.kpxe"), None);
        assert_eq!(
            generated_name("/grub/grub.cfg"),
            Some(Generated::ByClient(Format::Grub)),
            "signed GRUB's one name"
        );
        assert_eq!(
            generated_name("grub/x86_64-efi/grub.cfg"),
            None,
            "GRUB asks this first; from disk if present, so not found and GRUB reads grub/grub.cfg"
        );
    }
}
