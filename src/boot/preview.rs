//! What `provd render` prints: a host's boot script or kickstart rendered offline from the
//! config (and the static addresses IPAM gave, when the caller knows them), with a
//! placeholder token, touching no state.

use super::{Boot, Format, PREVIEW_TOKEN};
use crate::assets::images::{Catalog, CatalogError};
use crate::config::Config;
use crate::render::{Action, HostContext, InstallFacts, RenderError, Renderer};

/// Why a preview cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("no host named {0:?} in the config")]
    NoHost(String),
    #[error("host {0} has no profile with a kickstart")]
    NoKickstart(String),
    #[error("unknown kind {0:?}: use ipxe, pxelinux, grub or ks")]
    UnknownKind(String),
    #[error(transparent)]
    Images(#[from] CatalogError),
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl Boot {
    /// What `provd render` prints: offline, with a placeholder token, touching no state.
    /// `ipam`: the assignments known (the daemon's, or its store's); the host's own are
    /// rendered on its bridges.
    pub fn preview(
        config: &Config,
        renderer: &Renderer,
        what: &str,
        name: &str,
        action: Action,
        ipam: &[crate::ipam::Assignment],
    ) -> Result<String, PreviewError> {
        let (site, host) = config
            .find_host(name)
            .ok_or_else(|| PreviewError::NoHost(name.to_string()))?;
        let template = match what {
            "ipxe" => Format::Ipxe.template().to_string(),
            "pxelinux" => Format::Pxelinux.template().to_string(),
            "grub" => Format::Grub.template().to_string(),
            "ks" | "kickstart" => config
                .profiles
                .get(host.profile.as_deref().unwrap_or(""))
                .and_then(|p| p.kickstart.clone())
                .ok_or_else(|| PreviewError::NoKickstart(host.hostname.clone()))?,
            other => return Err(PreviewError::UnknownKind(other.to_string())),
        };
        // Only this host's image: a preview needs no other profile's files.
        let image_name = config
            .profiles
            .get(host.profile.as_deref().unwrap_or(""))
            .and_then(|p| p.image.as_deref());
        let images = Catalog::load(&config.daemon.assets_dir, image_name)?;
        let ctx = HostContext {
            config,
            site,
            host: Some(host),
            mac: host.mac,
            ip: host.ip,
            action,
            token: Some(PREVIEW_TOKEN),
            install: Some(InstallFacts {
                id: "PREVIEW".into(),
                wipe_allowed: false,
            }),
            image: image_name.and_then(|n| images.get(n)),
            static_addresses: ipam
                .iter()
                .filter(|a| a.mac == host.mac && a.site == site.name)
                .cloned()
                .collect(),
        };
        Ok(renderer.render(&template, &ctx.to_value())?)
    }
}
