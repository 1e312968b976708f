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
//! - A machine configured for Secure Boot (`secure_boot` on its host, its profile, or its
//!   site's `[sites.X.pxe]`, which also covers unknown machines being discovered) gets the
//!   site's signed first stage (shim) for x64 UEFI PXE instead: firmware that enforces
//!   Secure Boot refuses iPXE, which no key it trusts has signed. Shim loads the signed GRUB
//!   beside it, whose per-host config (`grub/grub.cfg`) the boot policy renders as it renders
//!   iPXE scripts. Over UEFI HTTP boot such a machine gets no file: Debian's signed GRUB
//!   reads nothing over HTTP, so the chain would stop there; its firmware goes on to PXE.
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
/// architecture is not mapped. `secure_boot`: the machine enforces Secure Boot (its host's
/// or profile's `secure_boot`).
pub fn answer(req: &FirmwareFacts, site: &Site, mac: Option<MacAddr>, secure_boot: bool) -> Option<BootAnswer> {
    if req.is_ipxe {
        return Some(BootAnswer::Http(script_url(&site.pxe, site, mac)));
    }
    let arch = req.arch.or_else(|| is_pxe_client(req).then_some(arch::BIOS_X86))?;
    if secure_boot {
        return match arch {
            arch::EFI_BC | arch::EFI_X64 => Some(BootAnswer::Tftp(site.pxe.secure_boot_x64.clone())),
            arch::EFI_X64_HTTP => None,
            // BIOS and other architectures have no Secure Boot: their usual file.
            _ => site.pxe.arch_files.get(&arch).map(|f| plain_answer(f, site, mac)),
        };
    }
    site.pxe.arch_files.get(&arch).map(|f| plain_answer(f, site, mac))
}

/// A mapped first stage: a URL (UEFI HTTP boot) or a TFTP name.
fn plain_answer(file: &str, site: &Site, mac: Option<MacAddr>) -> BootAnswer {
    if file.starts_with("http://") || file.starts_with("https://") {
        BootAnswer::Http(fill(file, site, mac))
    } else {
        BootAnswer::Tftp(file.to_string())
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
        // An unknown machine has no host or profile to say: the site does.
        let secure_boot = ask.host.map_or(ask.site.pxe.secure_boot, |h| h.secure_boot);
        answer(&ask.firmware, ask.site, ask.mac, secure_boot).map_or(DhcpBoot::LeaseOnly, DhcpBoot::Boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, load_from_strs};

    const SITE: &str = r#"
[profiles.sb]
os = "debian12"
secure_boot = true

[profiles.plain]
os = "debian12"

[sites.a]
server_address = "10.0.0.1"
listen = [{ interface = "eth0", address = "10.0.0.1" }]
[[sites.a.subnets]]
prefix = "10.0.0.0/24"
pools = [{ start = "10.0.0.100", end = "10.0.0.200" }]
[[sites.a.hosts]]
mac = "52:54:00:00:00:01"
hostname = "by-profile"
profile = "sb"
[[sites.a.hosts]]
mac = "52:54:00:00:00:02"
hostname = "host-says-no"
profile = "sb"
secure_boot = false
[[sites.a.hosts]]
mac = "52:54:00:00:00:03"
hostname = "host-says-yes"
profile = "plain"
secure_boot = true
[[sites.a.hosts]]
mac = "52:54:00:00:00:04"
hostname = "plain"
profile = "plain"
"#;

    fn config() -> Config {
        load_from_strs(&[("site.toml".into(), SITE.into())]).unwrap()
    }

    /// Site a's answer to configured host `hostname` (or, with None, to an unknown machine).
    fn ask_as(config: &Config, hostname: Option<&str>, arch: u16, vendor_class: &'static [u8]) -> DhcpBoot {
        let site = &config.sites["a"];
        let host = hostname.map(|n| site.hosts.iter().find(|h| h.hostname == n).unwrap());
        SitePolicy.dhcp(&DhcpAsk {
            site,
            host,
            mac: Some(host.map_or("52:54:00:00:00:99".parse().unwrap(), |h| h.mac)),
            firmware: FirmwareFacts {
                arch: Some(arch),
                is_ipxe: false,
                vendor_class: Some(vendor_class),
            },
        })
    }

    fn ask(config: &Config, hostname: &str, arch: u16, vendor_class: &'static [u8]) -> DhcpBoot {
        ask_as(config, Some(hostname), arch, vendor_class)
    }

    fn ask_unknown(config: &Config, arch: u16, vendor_class: &'static [u8]) -> DhcpBoot {
        ask_as(config, None, arch, vendor_class)
    }

    fn tftp(f: &str) -> DhcpBoot {
        DhcpBoot::Boot(BootAnswer::Tftp(f.into()))
    }

    #[test]
    fn secure_boot_machines_get_shim_by_profile_or_per_host() {
        let c = config();
        let pxe = b"PXEClient:Arch:00007:UNDI:003016";
        assert_eq!(ask(&c, "by-profile", arch::EFI_X64, pxe), tftp("shimx64.efi"));
        assert_eq!(ask(&c, "by-profile", arch::EFI_BC, pxe), tftp("shimx64.efi"));
        assert_eq!(ask(&c, "host-says-yes", arch::EFI_X64, pxe), tftp("shimx64.efi"));
        assert_eq!(
            ask(&c, "host-says-no", arch::EFI_X64, pxe),
            tftp("ipxe.efi"),
            "the host's secure_boot = false wins over its profile's"
        );
        assert_eq!(ask(&c, "plain", arch::EFI_X64, pxe), tftp("ipxe.efi"));
        // BIOS has no Secure Boot: a Secure Boot host's BIOS boot gets the usual file.
        assert_eq!(
            ask(&c, "by-profile", arch::BIOS_X86, b"PXEClient:Arch:00000"),
            tftp("undionly.kpxe")
        );
    }

    #[test]
    fn uefi_http_boot_gets_the_first_stage_as_a_url_and_secure_boot_hosts_get_none() {
        let c = config();
        let http = b"HTTPClient:Arch:00016:UNDI:003001";
        assert_eq!(
            ask(&c, "plain", arch::EFI_X64_HTTP, http),
            DhcpBoot::Boot(BootAnswer::Http("http://10.0.0.1:8080/assets/ipxe.efi".into()))
        );
        assert_eq!(
            vendor_class_reply(
                &FirmwareFacts {
                    vendor_class: Some(http),
                    ..Default::default()
                },
                &c.sites["a"].pxe
            ),
            Some("HTTPClient")
        );
        // Debian's signed GRUB reads nothing over HTTP: no file, so the firmware goes on to PXE.
        assert_eq!(ask(&c, "by-profile", arch::EFI_X64_HTTP, http), DhcpBoot::LeaseOnly);
    }

    /// `[sites.X.pxe] secure_boot = true`: what hosts and profiles leave unsaid, and every
    /// unknown machine (discovery has no host or profile to ask).
    #[test]
    fn a_site_wide_default_covers_unknown_machines_and_yields_to_hosts_and_profiles() {
        let text =
            SITE.replace(
                "[profiles.plain]\nos = \"debian12\"",
                "[profiles.plain]\nos = \"debian12\"\nsecure_boot = false\n[profiles.unsaid]\nos = \"debian12\"",
            )
            .replace(
                "[[sites.a.subnets]]",
                "[sites.a.pxe]\nsecure_boot = true\n[[sites.a.subnets]]",
            ) + "[[sites.a.hosts]]\nmac = \"52:54:00:00:00:05\"\nhostname = \"unsaid\"\nprofile = \"unsaid\"\n";
        let c = load_from_strs(&[("site.toml".into(), text)]).unwrap();
        let pxe = b"PXEClient:Arch:00007";
        assert_eq!(
            ask(&c, "unsaid", arch::EFI_X64, pxe),
            tftp("shimx64.efi"),
            "the site's default"
        );
        assert_eq!(
            ask(&c, "plain", arch::EFI_X64, pxe),
            tftp("ipxe.efi"),
            "the profile says no"
        );
        assert_eq!(
            ask(&c, "host-says-no", arch::EFI_X64, pxe),
            tftp("ipxe.efi"),
            "the host says no"
        );
        assert_eq!(
            ask_unknown(&c, arch::EFI_X64, pxe),
            tftp("shimx64.efi"),
            "an unknown machine at a Secure Boot site"
        );
        // Without the site's word, an unknown machine gets iPXE.
        assert_eq!(ask_unknown(&config(), arch::EFI_X64, pxe), tftp("ipxe.efi"));
    }

    #[test]
    fn the_signed_first_stage_and_the_http_boot_url_follow_the_site() {
        let text = SITE.replace(
            "[[sites.a.subnets]]",
            "[sites.a.pxe]\nsecure_boot_x64 = \"signed/shimx64.efi\"\nuefi_x64 = \"snponly.efi\"\n[[sites.a.subnets]]",
        );
        let c = load_from_strs(&[("site.toml".into(), text)]).unwrap();
        let pxe = b"PXEClient:Arch:00007";
        assert_eq!(ask(&c, "by-profile", arch::EFI_X64, pxe), tftp("signed/shimx64.efi"));
        assert_eq!(
            ask(&c, "plain", arch::EFI_X64_HTTP, b"HTTPClient:Arch:00016"),
            DhcpBoot::Boot(BootAnswer::Http("http://10.0.0.1:8080/assets/snponly.efi".into()))
        );
    }
}
