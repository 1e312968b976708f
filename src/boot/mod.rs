//! The boot policy ("given this client, what does it boot now?", pixiecore's `Booter`) and
//! the boot chain's answers built on it, shared by HTTP, TFTP and the CLI.
//!
//! `Boot::plan` is the one place that decides: it asks the inventory for the boot-once
//! decision (install with a token, local disk, or the menu for an unknown machine) and
//! resolves the site, host and address the answer is for. Every protocol asks it and gets
//! a `Plan` value back; scripts (iPXE, pxelinux, GRUB) are rendered *from* the plan, and the
//! journal records the plan's own description; nothing reads a decision back out of
//! rendered text. The firmware stage (which first-stage file the DHCP answer names) is
//! `firmware`, a pure function of what the client said and its site: every chain reaches
//! the per-host script through iPXE, so the inventory is asked once, at the script.
//!
//! This module knows leases only through `LeaseLookup` (which `dhcp::Leases` implements),
//! so DHCP can ask the boot policy without a dependency cycle.
//!
//! Which site's URLs a machine gets: a configured host always gets its own site's server
//! (even when it asks through another site's listener); an unknown machine gets the site
//! of the listener it asked, or of the subnet its address is in.

pub mod admission;
pub mod certificates;
pub mod firmware;
mod lookup;
pub mod policy;
mod preview;
pub mod startup;
mod tftp_names;

pub use certificates::SignOutcome;
pub use lookup::LeaseLookup;
pub use preview::PreviewError;
pub use startup::StartupError;
pub use tftp_names::{Generated, generated_name};

use crate::assets::images::Image;
use crate::config::{Config, Host, Site};
use crate::generation::{Generation, Generations};
use crate::inventory::{BootDecision, Inventory, InventoryError};
use crate::mac::MacAddr;
use crate::pki::PkiError;
use crate::pki::signer::Signer;
use crate::render::cache::RenderKey;
use crate::render::{Action, HostContext, InstallFacts, RenderError};
use std::net::Ipv4Addr;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ipxe,
    Pxelinux,
    Grub,
}

impl Format {
    pub fn template(self) -> &'static str {
        match self {
            Format::Ipxe => "ipxe/boot.ipxe.j2",
            Format::Pxelinux => "pxelinux/boot.cfg.j2",
            Format::Grub => "grub/grub.cfg.j2",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("unknown host")]
    UnknownHost,
    /// A configured host's boot script, kickstart, callback or certificate asked for from an
    /// address that is neither its reservation nor one of its leases.
    #[error("{mac} asked from {from}; it holds {}", fmt_addresses(.holds))]
    WrongAddress {
        mac: MacAddr,
        from: Ipv4Addr,
        holds: Vec<Ipv4Addr>,
    },
    #[error("token refused")]
    TokenRefused,
    /// The install token used from another of the host's addresses than its first use.
    #[error("this install's token is bound to {bound}, the address of its first use")]
    BoundElsewhere { bound: Ipv4Addr },
    /// A step of the install (the kickstart, a callback, a certificate) asked again.
    #[error("{0} was already taken with this install's token")]
    StepTaken(String),
    /// The host's profile declares no certificate of this role (`certificates = [...]`).
    #[error("profile {profile:?} of {host} declares no {role} certificate")]
    NoCertificateRole {
        host: String,
        profile: String,
        role: &'static str,
    },
    /// A migration (client) certificate for a host the pool has not verified.
    #[error("{host} is {status}: provd signs its migration certificate once the pool has verified it (ready)")]
    NotVerified { host: String, status: &'static str },
    /// The proof of the host's server key is missing or does not hold.
    #[error("{0}")]
    BadProof(String),
    /// Asked again too soon (renewals and migration certificates are rate-limited).
    #[error("a {role} certificate was issued to this host {ago} s ago; ask again in {wait} s")]
    TooSoon { role: &'static str, ago: i64, wait: i64 },
    #[error("host {0} has no profile with a kickstart")]
    NoKickstart(String),
    #[error("{0}")]
    Render(#[from] RenderError),
    #[error("{0}")]
    Inventory(InventoryError),
    #[error("this provd has no CA: run `provd pki init`")]
    NoCa,
    #[error("{0}")]
    Certificate(#[from] PkiError),
    /// An operator rejected this host's certificate request (`provd pki reject`).
    #[error("the certificate request was rejected by an operator")]
    Rejected,
    /// A renewal for a key provd holds no valid certificate of this host and role for.
    #[error("no valid {role} certificate of this host for that key: renewal needs the current key")]
    NotRenewable { role: &'static str },
    /// A renewal before the certificate's renewal window opens.
    #[error("the {role} certificate is not due for renewal: ask again in {opens_in} s (in its last {window} s)")]
    NotDue {
        role: &'static str,
        opens_in: i64,
        window: i64,
    },
    #[error("{0}")]
    Registry(#[from] crate::pki::registry::RegistryError),
}

impl BootError {
    /// When provd's own store failed under this request: its kind and text (HTTP answers
    /// by the kind; nothing about the asker was wrong).
    pub fn store_failure(&self) -> Option<crate::store::Failure> {
        match self {
            BootError::Inventory(InventoryError::Store(f)) => Some(f.clone()),
            BootError::Registry(crate::pki::registry::RegistryError::Store(e)) => Some(crate::store::Failure {
                kind: e.kind(),
                message: e.to_string(),
            }),
            _ => None,
        }
    }
}

/// `a, b` or, for none, "no lease and no reservation" (errors and the journal).
pub use crate::journal::fmt_addresses;

impl From<InventoryError> for BootError {
    fn from(e: InventoryError) -> Self {
        match e {
            InventoryError::UnknownHost => BootError::UnknownHost,
            InventoryError::TokenRefused => BootError::TokenRefused,
            InventoryError::BoundElsewhere { bound } => BootError::BoundElsewhere { bound },
            InventoryError::StepTaken(step) => BootError::StepTaken(step),
            other => BootError::Inventory(other),
        }
    }
}

/// What the boot policy keeps across config generations: state, not config.
pub struct BootState {
    pub inventory: Arc<Inventory>,
    /// Which MAC holds an address (pxelinux/GRUB names made of a hex address) and which
    /// addresses a MAC holds (certificate SANs).
    leases: Arc<dyn LeaseLookup>,
    /// Hosts' certificates: the CA (when `provd pki init` has made one) and the registry of
    /// what it issued and which requests wait for an operator.
    pub signer: Arc<Signer>,
    /// What a machine's script says (the same policy DHCP asks for its first stage).
    policy: Arc<dyn policy::BootPolicy>,
    /// Hosts' static addresses, for their kickstarts' networks (none: unaddressed bridges).
    ipam: Option<Arc<crate::ipam::Ipam>>,
}

impl BootState {
    pub fn new(
        inventory: Arc<Inventory>,
        leases: Arc<dyn LeaseLookup>,
        signer: Arc<Signer>,
        policy: Arc<dyn policy::BootPolicy>,
    ) -> BootState {
        BootState {
            inventory,
            leases,
            signer,
            policy,
            ipam: None,
        }
    }

    /// Kickstarts carry the hosts' IPAM addresses.
    pub fn with_ipam(mut self, ipam: Arc<crate::ipam::Ipam>) -> BootState {
        self.ipam = Some(ipam);
        self
    }
}

/// The boot policy of one config generation, over the shared state. Made per request or
/// packet (`BootSource::now`: two `Arc` clones) and kept to its end, so everything one
/// answer is built from (host list, profiles, templates) comes from the same generation.
#[derive(Clone)]
pub struct Boot {
    pub generation: Arc<Generation>,
    state: Arc<BootState>,
}

/// Where requests take their `Boot` from: the current generation over the shared state.
#[derive(Clone)]
pub struct BootSource {
    pub generations: Arc<Generations>,
    state: Arc<BootState>,
}

impl BootSource {
    pub fn new(generations: Arc<Generations>, state: Arc<BootState>) -> BootSource {
        BootSource { generations, state }
    }

    /// The registry of every certificate provd's CA made (the signer owns it; this is the
    /// one way to it from outside the boot policy).
    pub fn certificates(&self) -> &Arc<crate::pki::registry::Registry> {
        self.state.signer.certificates()
    }

    /// The boot policy as of now: one generation, to be used for the whole request.
    pub fn now(&self) -> Boot {
        Boot {
            generation: self.generations.current(),
            state: self.state.clone(),
        }
    }
}

/// The decision for one machine, with the facts every protocol needs to answer it.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub decision: BootDecision,
    pub mac: MacAddr,
    pub site: &'a Site,
    /// The configured host (None for an unknown machine).
    pub host: Option<&'a Host>,
    /// The address the machine asked from, or its reservation.
    pub ip: Option<Ipv4Addr>,
}

impl Plan<'_> {
    pub fn action(&self) -> Action {
        match self.decision {
            BootDecision::Install { .. } => Action::Install,
            BootDecision::LocalDisk => Action::Local,
            // An unknown machine on a site that commissions them boots the discovery image.
            BootDecision::Menu if self.site.dhcp.unknown_clients == crate::config::UnknownClients::Discover => {
                Action::Discover
            }
            BootDecision::Menu => Action::Menu,
        }
    }

    pub fn token(&self) -> Option<&str> {
        match &self.decision {
            BootDecision::Install { token } => Some(token),
            _ => None,
        }
    }

    /// One line saying what the machine was told (the journal's "boot-script" entry; the
    /// lab's progress and its test read it).
    pub fn describe(&self, config: &Config) -> String {
        let name = self.host.map_or_else(|| self.mac.to_string(), |h| h.hostname.clone());
        match &self.decision {
            BootDecision::Install { .. } => {
                let profile = self.host.and_then(|h| h.profile.as_deref()).unwrap_or("?");
                let profile = config.profiles.get(profile).map_or(profile, |p| p.name.as_str());
                format!("installing {name} with profile {profile} (site {})", self.site.name)
            }
            BootDecision::LocalDisk => format!("{name} boots from its local disk"),
            BootDecision::Menu if self.action() == Action::Discover => format!(
                "machine {} is not in the inventory of site {}: booting the discovery image",
                self.mac, self.site.name
            ),
            BootDecision::Menu => format!(
                "machine {} is not in the inventory of site {}.",
                self.mac, self.site.name
            ),
        }
    }
}

pub const PREVIEW_TOKEN: &str = "PREVIEW-NOT-A-TOKEN";

impl Boot {
    /// The policy of `generation` over `state` (tests, and `BootSource::now`).
    pub fn new(generation: Arc<Generation>, state: Arc<BootState>) -> Boot {
        Boot { generation, state }
    }

    /// The config of this generation.
    pub fn config(&self) -> &Config {
        &self.generation.config
    }

    /// The sites this daemon serves (has listeners for), in config order.
    pub fn served_sites(&self) -> &[String] {
        &self.generation.served
    }

    pub fn inventory(&self) -> &Arc<Inventory> {
        &self.state.inventory
    }

    pub fn certificates(&self) -> &Arc<crate::pki::registry::Registry> {
        self.state.signer.certificates()
    }

    pub fn signer(&self) -> &Signer {
        &self.state.signer
    }

    /// The MAC of the host `name` (hostname or MAC) in this generation's inventory.
    pub async fn find(&self, name: &str) -> Option<MacAddr> {
        self.state.inventory.find(&self.generation.config.hosts, name).await
    }

    /// The addresses `host` is known at: its reservation and the address its MAC holds a
    /// lease on now (ours or, through failover, the partner's).
    pub fn known_addresses(&self, mac: MacAddr, host: &Host) -> Vec<Ipv4Addr> {
        let mut a: Vec<Ipv4Addr> = host.ip.into_iter().collect();
        if let Some(ip) = self.state.leases.address_of_mac(mac, crate::clock::unix_now())
            && !a.contains(&ip)
        {
            a.push(ip);
        }
        a
    }

    /// `mac`'s IPAM addresses (none without an IPAM).
    pub fn static_addresses(&self, mac: MacAddr) -> Vec<crate::ipam::Assignment> {
        self.state.ipam.as_ref().map(|i| i.of_host(mac)).unwrap_or_default()
    }

    /// A secret of `host` goes only to the address provd leased or reserved for it: any
    /// machine can claim any MAC, not the address provd gave that MAC. One lookup per
    /// request (this runs for every boot script, kickstart and callback).
    fn check_source(&self, mac: MacAddr, host: &Host, from: Ipv4Addr) -> Result<(), BootError> {
        if host.ip == Some(from) || self.state.leases.holds(from, mac, crate::clock::unix_now()) {
            Ok(())
        } else {
            Err(BootError::WrongAddress {
                mac,
                from,
                holds: self.known_addresses(mac, host),
            })
        }
    }

    /// The configured host named `name` (hostname or MAC) in this generation.
    async fn configured_named(&self, name: &str) -> Result<(MacAddr, &Site, &Host), BootError> {
        let mac = self
            .state
            .inventory
            .find(&self.generation.config.hosts, name)
            .await
            .ok_or(BootError::UnknownHost)?;
        let (site, host) = self.configured(mac).ok_or(BootError::UnknownHost)?;
        Ok((mac, site, host))
    }

    /// The configured host named `name` (hostname or MAC), asked about from `from`.
    async fn host_asked_from(&self, name: &str, from: Ipv4Addr) -> Result<(MacAddr, &Site, &Host), BootError> {
        let (mac, site, host) = self.configured_named(name).await?;
        self.check_source(mac, host, from)?;
        Ok((mac, site, host))
    }

    /// `POST /callback`: an installer's event for host `name`, from its own address, with
    /// its open install token.
    pub async fn callback(
        &self,
        name: &str,
        token: &str,
        event: crate::inventory::InstallEvent,
        detail: &str,
        from: Ipv4Addr,
    ) -> Result<(MacAddr, crate::inventory::Status), BootError> {
        let (mac, _, _) = self.host_asked_from(name, from).await?;
        Ok((mac, self.state.inventory.event(mac, token, from, event, detail).await?))
    }

    /// The CA certificate hosts and clients must trust, if this provd has a CA.
    pub fn ca_pem(&self) -> Option<&str> {
        self.state.signer.ca_pem()
    }

    /// The region's trust a hypervisor gets with its certificates, when the config names
    /// it (`[daemon] region_ca` and `region_cross_cert`, checked at start): the region's
    /// root (for its CA file) and this site's cross-certificate (after its own
    /// certificate), so other sites' hypervisors verify it and it verifies them. Read
    /// when asked: a certificate request is rare, and the files are small.
    pub fn region_chain(&self) -> Option<(String, String)> {
        let d = &self.generation.config.daemon;
        let read = |p: &std::path::Path| match std::fs::read_to_string(p) {
            Ok(t) => Some(if t.ends_with('\n') { t } else { t + "\n" }),
            Err(e) => {
                tracing::error!("{}: {e}; certificates go out without the region's chain", p.display());
                None
            }
        };
        Some((read(d.region_ca.as_deref()?)?, read(d.region_cross_cert.as_deref()?)?))
    }

    /// The image `host`'s profile deploys, if it names one.
    fn image_of(&self, host: Option<&Host>) -> Option<&Image> {
        let profile = self.generation.config.profiles.get(host?.profile.as_deref()?)?;
        self.generation.images.get(profile.image.as_deref()?)
    }

    fn configured(&self, mac: MacAddr) -> Option<(&Site, &Host)> {
        self.generation.config.host(mac)
    }

    /// The site for an unknown machine: the listener's, else the served site whose subnet
    /// holds `ip`, else the first served site.
    fn site_for_unknown(&self, listener_site: Option<&str>, ip: Option<Ipv4Addr>) -> &Site {
        if let Some(s) = listener_site.and_then(|n| self.generation.config.sites.get(n)) {
            return s;
        }
        let served = || self.generation.served_sites();
        ip.and_then(|ip| served().find(|s| s.subnets.iter().any(|n| n.prefix.contains(&ip))))
            .or_else(|| served().next())
            .expect("a daemon serves at least one site")
    }

    /// Render with this generation's templates, or answer from what it rendered already
    /// for the same facts (`render::cache`: only per-request facts vary within one).
    fn render(&self, template: &str, ctx: HostContext) -> Result<String, RenderError> {
        let g = &self.generation;
        g.rendered.get_or_render(RenderKey::of(template, &ctx), || {
            g.renderer.render(template, &ctx.to_value())
        })
    }

    /// What `mac` boots now, asked through `listener_site` from address `from`: the site,
    /// host and address the answer is for, and the boot policy's decision. A configured
    /// host is answered only at an address it holds (checked before the policy may mint a
    /// token); what an unknown machine gets is the policy's (`policy::StandardPolicy`).
    pub async fn plan(&self, mac: MacAddr, listener_site: Option<&str>, from: Ipv4Addr) -> Result<Plan<'_>, BootError> {
        let (site, host) = match self.configured(mac) {
            Some((s, h)) => {
                self.check_source(mac, h, from)?;
                (s, Some(h))
            }
            None => (self.site_for_unknown(listener_site, Some(from)), None),
        };
        let ask = policy::ScriptAsk {
            hosts: &self.generation.config.hosts,
            mac,
            from,
            configured: host.is_some(),
            leased: self.state.leases.holds(from, mac, crate::clock::unix_now()),
        };
        let decision = self.state.policy.script(ask).await?;
        Ok(Plan {
            decision,
            mac,
            site,
            host,
            // The reservation; else the address it asked from (its lease, checked above).
            ip: host.and_then(|h| h.ip).or(Some(from)),
        })
    }

    /// A boot script in `format` for a plan.
    pub fn render_plan(&self, format: Format, plan: &Plan) -> Result<String, BootError> {
        Ok(self.render(
            format.template(),
            HostContext {
                config: &self.generation.config,
                site: plan.site,
                host: plan.host,
                mac: plan.mac,
                ip: plan.ip,
                action: plan.action(),
                token: plan.token(),
                install: None,
                image: self.image_of(plan.host),
                static_addresses: Vec::new(),
            },
        )?)
    }

    /// The boot script `mac` gets now, asked from `from`, and the plan it was rendered from.
    pub async fn script(
        &self,
        format: Format,
        mac: MacAddr,
        listener_site: Option<&str>,
        from: Ipv4Addr,
    ) -> Result<(Plan<'_>, String), BootError> {
        let plan = self.plan(mac, listener_site, from).await?;
        let text = self.render_plan(format, &plan)?;
        Ok((plan, text))
    }

    /// The kickstart of host `name` (hostname or MAC), asked from one of its addresses with
    /// its open install token. The fetch is counted only after the whole text rendered.
    pub async fn kickstart(&self, name: &str, token: &str, from: Ipv4Addr) -> Result<String, BootError> {
        let (mac, site, host) = self.host_asked_from(name, from).await?;
        self.state.inventory.verify_kickstart(mac, token, from).await?;
        let ks = self
            .generation
            .config
            .profiles
            .get(host.profile.as_deref().unwrap_or(""))
            .and_then(|p| p.kickstart.clone());
        let ks = ks.ok_or_else(|| BootError::NoKickstart(host.hostname.clone()))?;
        let install = self
            .state
            .inventory
            .get(mac)
            .await
            .and_then(|r| r.install)
            .map(|s| InstallFacts {
                id: s.id,
                wipe_allowed: s.wipe_allowed,
            });
        let ctx = HostContext {
            config: &self.generation.config,
            site,
            host: Some(host),
            mac,
            ip: host.ip,
            action: Action::Install,
            token: Some(token),
            install,
            image: self.image_of(Some(host)),
            static_addresses: self.static_addresses(mac),
        };
        let text = self.render(&ks, ctx)?;
        self.state.inventory.kickstart_fetched(mac, token, from).await?;
        Ok(text)
    }
}
