//! Rendered scripts and kickstarts kept for one config generation, so a host that fetches
//! the same text again (an iPXE retry, a firmware that asks twice, an installer that
//! re-reads its kickstart) is answered without rendering it again.
//!
//! Safe because a render is a pure function of the template, the generation's config and
//! the per-request facts in `HostContext` (site, host, MAC, address, action, token,
//! install session): the key is exactly those per-request facts and the template name, and
//! the cache lives in the `Generation`, so a reload (new config or templates) starts an
//! empty one. The templates get no clock or other outside input (`Renderer::load` adds no
//! functions). Failed renders are not kept: the error is returned every time.
//!
//! Must never: grow without bound whatever machines ask (it is keyed by what a client
//! claims: its MAC and address), or serve one host's text to another key.

use super::{Action, HostContext, RenderError};
use crate::mac::MacAddr;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Entries kept at most; past it (or past `MAX_BYTES`) the cache starts over empty, which
/// costs only re-renders (tens of microseconds each).
pub const MAX_ENTRIES: usize = 4096;
/// Rendered bytes kept at most.
pub const MAX_BYTES: usize = 32 << 20;

/// Everything that makes one render differ from another within a generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RenderKey {
    template: String,
    site: String,
    host: Option<String>,
    mac: MacAddr,
    ip: Option<Ipv4Addr>,
    action: Action,
    token: Option<String>,
    install: Option<(String, bool)>,
    /// IPAM addresses change the kickstart's network.
    static_addresses: Vec<(crate::netmodel::Role, Ipv4Addr)>,
}

impl RenderKey {
    pub fn of(template: &str, ctx: &HostContext) -> RenderKey {
        RenderKey {
            template: template.to_string(),
            site: ctx.site.name.clone(),
            host: ctx.host.map(|h| h.hostname.clone()),
            mac: ctx.mac,
            ip: ctx.ip,
            action: ctx.action,
            token: ctx.token.map(str::to_string),
            install: ctx.install.as_ref().map(|i| (i.id.clone(), i.wipe_allowed)),
            static_addresses: ctx.static_addresses.iter().map(|a| (a.role, a.address)).collect(),
        }
    }
}

#[derive(Default)]
pub struct RenderCache {
    inner: Mutex<Kept>,
    hits: AtomicU64,
    renders: AtomicU64,
}

#[derive(Default)]
struct Kept {
    texts: HashMap<RenderKey, std::sync::Arc<str>>,
    bytes: usize,
}

impl RenderCache {
    /// The text for `key`: kept, or rendered by `render` now (and kept if it rendered).
    /// The lock is not held while rendering: two first fetches of one key may both render,
    /// which is harmless (same text) and keeps one slow template from stalling the rest.
    pub fn get_or_render(
        &self,
        key: RenderKey,
        render: impl FnOnce() -> Result<String, RenderError>,
    ) -> Result<String, RenderError> {
        if let Some(text) = self.inner.lock().expect("render cache lock").texts.get(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(text.to_string());
        }
        let text = render()?;
        self.renders.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.inner.lock().expect("render cache lock");
        if kept.texts.len() >= MAX_ENTRIES || kept.bytes + text.len() > MAX_BYTES {
            kept.texts.clear();
            kept.bytes = 0;
        }
        if text.len() <= MAX_BYTES {
            kept.bytes += text.len();
            if let Some(old) = kept.texts.insert(key, text.as_str().into()) {
                kept.bytes -= old.len();
            }
        }
        Ok(text)
    }

    /// (answered from the cache, rendered) since the generation started.
    pub fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.renders.load(Ordering::Relaxed))
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("render cache lock").texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(mac: u8, token: Option<&str>) -> RenderKey {
        RenderKey {
            template: "ipxe/boot.ipxe.j2".into(),
            site: "s".into(),
            host: None,
            mac: MacAddr([0x52, 0x54, 0, 0, 0, mac]),
            ip: Some(Ipv4Addr::new(10, 0, 0, mac)),
            action: Action::Install,
            token: token.map(str::to_string),
            install: None,
            static_addresses: Vec::new(),
        }
    }

    #[test]
    fn the_same_key_renders_once_and_any_other_fact_renders_again() {
        let cache = RenderCache::default();
        let renders = std::cell::Cell::new(0);
        let render = |text: &str| {
            let text = text.to_string();
            let renders = &renders;
            move || {
                renders.set(renders.get() + 1);
                Ok(text)
            }
        };
        assert_eq!(cache.get_or_render(key(1, Some("t1")), render("a")).unwrap(), "a");
        assert_eq!(cache.get_or_render(key(1, Some("t1")), render("b")).unwrap(), "a");
        assert_eq!(renders.get(), 1);
        // A new token, another MAC, no token: each its own text.
        assert_eq!(cache.get_or_render(key(1, Some("t2")), render("c")).unwrap(), "c");
        assert_eq!(cache.get_or_render(key(2, Some("t1")), render("d")).unwrap(), "d");
        assert_eq!(cache.get_or_render(key(1, None), render("e")).unwrap(), "e");
        let mut other_template = key(1, Some("t1"));
        other_template.template = "grub/grub.cfg.j2".into();
        assert_eq!(cache.get_or_render(other_template, render("f")).unwrap(), "f");
        // A new IPAM address is a new network in the kickstart.
        let mut addressed = key(1, Some("t1"));
        addressed.static_addresses = vec![(crate::netmodel::Role::Migration, Ipv4Addr::new(10, 20, 0, 10))];
        assert_eq!(cache.get_or_render(addressed, render("g")).unwrap(), "g");
        assert_eq!(renders.get(), 6);
        assert_eq!(cache.counts(), (1, 6));
    }

    #[test]
    fn a_failed_render_is_not_kept() {
        let cache = RenderCache::default();
        let fail = || {
            Err(RenderError {
                template: "t".into(),
                line: Some(1),
                message: "no".into(),
            })
        };
        assert!(cache.get_or_render(key(1, None), fail).is_err());
        assert!(cache.is_empty());
        assert_eq!(cache.get_or_render(key(1, None), || Ok("ok".into())).unwrap(), "ok");
    }

    #[test]
    fn machines_that_make_up_macs_cannot_grow_it_past_its_bounds() {
        let cache = RenderCache::default();
        for i in 0..(3 * MAX_ENTRIES as u32) {
            let mut k = key(0, None);
            k.mac = MacAddr([0x52, 0x54, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            cache.get_or_render(k, || Ok("x".repeat(100))).unwrap();
            assert!(cache.len() <= MAX_ENTRIES);
        }
        // Byte bound: texts of a quarter of the budget each, at most four kept.
        let big = "y".repeat(MAX_BYTES / 4);
        for i in 0..10u8 {
            cache.get_or_render(key(i, Some("big")), || Ok(big.clone())).unwrap();
            let kept = cache.inner.lock().unwrap();
            assert!(kept.bytes <= MAX_BYTES, "{}", kept.bytes);
            assert_eq!(kept.bytes, kept.texts.values().map(|t| t.len()).sum::<usize>());
        }
    }
}
