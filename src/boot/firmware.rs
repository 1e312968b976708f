//! The firmware stage of the boot policy: which first-stage file a network-booting client
//! is told to load in its DHCP answer, in one pure function of what the client said and its
//! site. (The script stage, install or local disk or menu, is `Boot::plan`: every chain
//! reaches it through iPXE, so the inventory is asked once, there.)
//!
//! - Firmware PXE (option 93, or vendor class "PXEClient" alone, as old BIOS ROMs send) gets
//!   a TFTP file chosen by architecture (RFC 4578 §2.1): BIOS -> undionly.kpxe, x64 UEFI ->
//!   ipxe.efi, anything else as the site maps it. A mapping to an http:// URL is UEFI HTTP
//!   boot, which must be answered with vendor class "HTTPClient" (UEFI spec 2.x §24.7).
//! - iPXE itself (user class "iPXE" or option 175) gets the URL of its per-host script, so
//!   the chain does not loop back into loading iPXE again.
//! - Anything else (an OS's dhclient) gets no boot file.
//!
//! DHCP asks this stage through `DhcpPolicy` (ignore the client, lease only, or lease with
//! a boot file), one small trait as pixiecore's `Booter`: the engine holds a policy and
//! never reads `unknown_clients` itself, and its tests can give it a fake one.

use crate::config::{Host, PxePolicy, Site, arch};
use crate::mac::MacAddr;

/// What a DHCP request says about the firmware that sent it.
#[derive(Debug, Clone, Copy, Default)]
pub struct FirmwareFacts<'a> {
    /// Option 93 (client system architecture).
    pub arch: Option<u16>,
    /// iPXE itself is asking (user class "iPXE" or option 175).
    pub is_ipxe: bool,
    /// Option 60 (vendor class identifier).
    pub vendor_class: Option<&'a [u8]>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAnswer {
    /// TFTP file name; next-server is the site's server address.
    Tftp(String),
    /// An http:// URL (iPXE script, or UEFI HTTP boot image).
    Http(String),
}

impl BootAnswer {
    pub fn file(&self) -> &str {
        match self {
            BootAnswer::Tftp(f) | BootAnswer::Http(f) => f,
        }
    }
}

/// Decide the boot answer for a client, or `None` when it is not booting or its
/// architecture is not mapped.
pub fn answer(req: &FirmwareFacts, site: &Site, mac: Option<MacAddr>) -> Option<BootAnswer> {
    if req.is_ipxe {
        return Some(BootAnswer::Http(script_url(&site.pxe, site, mac)));
    }
    let arch = req.arch.or_else(|| is_pxe_client(req).then_some(arch::BIOS_X86))?;
    let file = site.pxe.arch_files.get(&arch)?;
    if file.starts_with("http://") || file.starts_with("https://") {
        Some(BootAnswer::Http(fill(file, site, mac)))
    } else {
        Some(BootAnswer::Tftp(file.clone()))
    }
}

/// The vendor class (option 60) to put in the answer. UEFI HTTP boot only accepts an offer
/// that says "HTTPClient" (UEFI spec 2.x §24.7). "PXEClient" is answered only when the site
/// asks for it (`pxe.answer_pxeclient`; see `PxePolicy` for why it is off by default).
pub fn vendor_class_reply(req: &FirmwareFacts, pxe: &PxePolicy) -> Option<&'static str> {
    let vc = req.vendor_class?;
    if vc.starts_with(b"PXEClient") {
        pxe.answer_pxeclient.then_some("PXEClient")
    } else if vc.starts_with(b"HTTPClient") {
        Some("HTTPClient")
    } else {
        None
    }
}

fn is_pxe_client(req: &FirmwareFacts) -> bool {
    req.vendor_class.is_some_and(|v| v.starts_with(b"PXEClient"))
}

fn script_url(pxe: &PxePolicy, site: &Site, mac: Option<MacAddr>) -> String {
    fill(&pxe.ipxe_script_url, site, mac)
}

fn fill(template: &str, site: &Site, mac: Option<MacAddr>) -> String {
    template
        .replace("{server}", &site.server_address.to_string())
        .replace("{port}", &site.http_port.to_string())
        .replace("{site}", &site.name)
        .replace(
            "{mac}",
            &mac.map(|m| m.hyphenated()).unwrap_or_else(|| "unknown".into()),
        )
}

/// What DHCP asks the boot policy about one client of `site`.
#[derive(Debug, Clone, Copy)]
pub struct DhcpAsk<'a> {
    pub site: &'a Site,
    /// The configured host with this MAC (None: an unknown machine).
    pub host: Option<&'a Host>,
    pub mac: Option<MacAddr>,
    pub firmware: FirmwareFacts<'a>,
}

/// The boot policy's answer for a DHCP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhcpBoot {
    /// No answer at all (an unknown machine where the site ignores them).
    Ignore,
    /// An address, no boot file (an OS's own DHCP client, an unmapped architecture, an
    /// unknown machine where the site gives them leases only).
    LeaseOnly,
    /// An address and this first-stage file.
    Boot(BootAnswer),
}

/// The DHCP stage of the boot policy. Called under the lease engine's lock for every
/// packet: pure and quick (config only, no inventory, no I/O).
pub trait DhcpPolicy: Send + Sync {
    fn dhcp(&self, ask: &DhcpAsk<'_>) -> DhcpBoot;
}

/// The policy the site config states: `[sites.X.dhcp] unknown_clients` for machines not
/// in the config, then `answer` for the firmware.
#[derive(Debug, Clone, Copy, Default)]
pub struct SitePolicy;

impl DhcpPolicy for SitePolicy {
    fn dhcp(&self, ask: &DhcpAsk<'_>) -> DhcpBoot {
        let unknown = ask.site.dhcp.unknown_clients;
        if ask.host.is_none() && unknown == crate::config::UnknownClients::Ignore {
            return DhcpBoot::Ignore;
        }
        if ask.host.is_none() && !unknown.boots() {
            return DhcpBoot::LeaseOnly;
        }
        answer(&ask.firmware, ask.site, ask.mac).map_or(DhcpBoot::LeaseOnly, DhcpBoot::Boot)
    }
}
