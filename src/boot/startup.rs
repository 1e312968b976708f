//! Checks made before a config generation is used (at start and at every reload): every
//! template the boot chain and the profiles need exists, and every image a configured
//! host's profile deploys is under the assets directory with its checksum.

use super::{Boot, Format};
use crate::assets::images::{Catalog, CatalogError};
use crate::config::Config;
use crate::render::Renderer;
use std::path::PathBuf;

/// Why a config generation cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("missing templates in {}: {}", dir.display(), missing.join(", "))]
    MissingTemplates { dir: PathBuf, missing: Vec<String> },
    #[error("profile images: {0}")]
    Images(#[from] CatalogError),
}

impl Boot {
    /// Every profile's kickstart must exist as a template: checked at start, not at the
    /// first install.
    pub fn check_templates(config: &Config, renderer: &Renderer) -> Result<(), StartupError> {
        let mut missing = Vec::new();
        for f in [Format::Ipxe, Format::Pxelinux, Format::Grub] {
            if !renderer.has(f.template()) {
                missing.push(format!("{} (boot scripts)", f.template()));
            }
        }
        for p in config.profiles.values() {
            if let Some(ks) = &p.kickstart
                && !renderer.has(ks)
            {
                missing.push(format!("{ks} (profile {})", p.name));
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StartupError::MissingTemplates {
                dir: renderer.dir().to_path_buf(),
                missing,
            })
        }
    }

    /// The OS images that configured hosts' profiles deploy, found under the assets
    /// directory with their checksums: at start and at every reload (so a host moved to an
    /// image profile whose image is missing is a refused reload, not a failed install). A
    /// profile no host uses needs no image yet.
    pub fn load_images(config: &Config) -> Result<Catalog, StartupError> {
        let used = config
            .hosts
            .iter()
            .filter_map(|e| config.profiles.get(e.host.profile.as_deref()?)?.image.as_deref());
        Ok(Catalog::load(&config.daemon.assets_dir, used)?)
    }
}
