//! One config generation: everything `provd reload` replaces, as one value. The validated
//! config (with its host index), the sites this process serves, the templates it renders
//! with (and what it rendered with them) and DHCP's lookup tables over them are built together and published together, so
//! whoever takes a generation (one per HTTP request, TFTP request or DHCP packet) sees one
//! config from start to end, never the templates of one and the hosts of another.
//!
//! State is not in here: leases, host records, tokens and certificates outlive a reload and
//! are owned by `dhcp::Leases`, `inventory` and `pki::registry`.
//!
//! Must never: be changed after it is published (a reload builds the next one beside it and
//! swaps the pointer once: `Generations::publish`).

use crate::assets::images::Catalog;
use crate::config::topology::Topology;
use crate::config::{Config, Site};
use crate::live::Live;
use crate::render::Renderer;
use crate::render::cache::RenderCache;
use std::sync::Arc;

pub struct Generation {
    /// 0 for the config the daemon started with, +1 per applied reload.
    pub number: u64,
    pub config: Arc<Config>,
    /// The sites this process serves (has listeners for), in config order. Fixed for the
    /// life of the process (a reload that changes them is refused), repeated here so a
    /// generation answers "which sites" without another source.
    pub served: Vec<String>,
    pub renderer: Renderer,
    /// Texts rendered with this generation's config and templates (empty in a new one).
    pub rendered: RenderCache,
    /// The OS images this generation's profiles deploy, with the checksums its deploy
    /// documents name (read with the config: a replaced image needs a reload).
    pub images: Catalog,
    /// DHCP's view of the served sites (subnets, hosts by MAC, reserved addresses).
    pub topology: Topology,
}

impl Generation {
    /// The generation of `config` serving `served` (names of sites in `config`).
    pub fn new(
        number: u64,
        config: Arc<Config>,
        served: Vec<String>,
        renderer: Renderer,
        images: Catalog,
    ) -> Generation {
        let topology = {
            let sites: Vec<&Site> = served.iter().filter_map(|n| config.sites.get(n)).collect();
            Topology::new(&config, &sites)
        };
        Generation {
            number,
            config,
            served,
            renderer,
            rendered: RenderCache::default(),
            images,
            topology,
        }
    }

    /// The served sites' models, in config order.
    pub fn served_sites(&self) -> impl Iterator<Item = &Site> {
        self.served.iter().filter_map(|n| self.config.sites.get(n))
    }
}

/// The current generation. Readers take one (`current`) and keep it to the end of their
/// request or packet; a reload publishes the next.
pub struct Generations {
    live: Live<Generation>,
}

impl Generations {
    pub fn new(first: Generation) -> Generations {
        Generations {
            live: Live::new(Arc::new(first)),
        }
    }

    pub fn current(&self) -> Arc<Generation> {
        self.live.get()
    }

    /// Make `next` current. Its number must follow the current one's (one writer: the
    /// reloader, which holds its own lock around build-and-publish).
    pub fn publish(&self, next: Generation) {
        debug_assert!(next.number > self.current().number, "generations only move forward");
        self.live.set(Arc::new(next));
    }
}
