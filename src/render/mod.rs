//! One minijinja environment over `templates/`, strict about undefined variables, and the
//! variable layering every template sees: built-in defaults < site < profile < host.
//!
//! Every template is loaded (and so syntax-checked) at start: a broken template stops the
//! daemon, not a host's install. A render either returns the whole text or an error naming
//! the template, the line and the variable; nothing half-rendered is ever served.

pub mod cache;

use crate::assets::images::Image;
use crate::config::{Config, Host, Profile, Site};
use crate::mac::MacAddr;
use minijinja::{Environment, UndefinedBehavior, Value};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, thiserror::Error)]
#[error("template {template}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct RenderError {
    pub template: String,
    pub line: Option<usize>,
    pub message: String,
}

impl RenderError {
    fn from_minijinja(name: &str, e: &minijinja::Error) -> Self {
        RenderError {
            template: e.name().unwrap_or(name).to_string(),
            line: e.line(),
            message: e.detail().map(str::to_string).unwrap_or_else(|| e.kind().to_string()),
        }
    }
}

pub struct Renderer {
    env: Environment<'static>,
    dir: PathBuf,
}

impl Renderer {
    /// Load every file under `dir` (recursively); names are paths relative to it.
    pub fn load(dir: &Path) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        // Kickstarts and scripts are shell text: keep their trailing newlines.
        // Block tags on their own line leave no blank line behind (trim_blocks).
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .trim_blocks(true)
            .build()
            .expect("static syntax config");
        env.set_syntax(syntax);
        let mut files = Vec::new();
        collect(dir, dir, &mut files).map_err(|e| RenderError {
            template: dir.display().to_string(),
            line: None,
            message: e.to_string(),
        })?;
        for (name, path) in files {
            let text = std::fs::read_to_string(&path).map_err(|e| RenderError {
                template: name.clone(),
                line: None,
                message: e.to_string(),
            })?;
            env.add_template_owned(name.clone(), text)
                .map_err(|e| RenderError::from_minijinja(&name, &e))?;
        }
        Ok(Renderer {
            env,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.env.templates().map(|(n, _)| n.to_string()).collect();
        v.sort();
        v
    }

    pub fn has(&self, name: &str) -> bool {
        self.env.get_template(name).is_ok()
    }

    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, RenderError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::from_minijinja(name, &e))?;
        t.render(ctx).map_err(|e| RenderError::from_minijinja(name, &e))
    }
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            collect(root, &p, out)?;
        } else if p.is_file() {
            let name = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            out.push((name, p));
        }
    }
    Ok(())
}

/// Built-in defaults, the lowest layer. Anything a shipped template needs and that has a
/// sensible value everywhere lives here; anything site-specific does not (so a missing
/// install URL is an error, not a guess).
fn default_vars() -> toml::Table {
    let mut t = toml::Table::new();
    for (k, v) in [
        ("lang", "en_US.UTF-8"),
        ("keyboard", "us"),
        ("timezone", "UTC"),
        ("bridge", "br0"),
        // What iPXE runs to leave the network boot: back to the firmware, which then boots
        // the next device (the disk) in its boot order. With a failure status: EDK2-based
        // UEFI firmware (OVMF, most servers) shows its boot manager menu when a boot option
        // returns success, and goes on to the next option only after a failure (seen in
        // the lab: `exit` left an installed UEFI VM in OVMF's setup menu). BIOS firmware
        // moves on either way.
        ("local_boot", "exit 1"),
        // The client certificate CN that provd's own tools use (`provd pki issue-client`).
        ("provd_client_cn", "provd"),
        // The CA's name (`provd pki init --name`): the O of every certificate it signs.
        ("pki_organization", "provd"),
    ] {
        t.insert(k.into(), toml::Value::String(v.into()));
    }
    t
}

/// What a boot script does: the inventory's decision as the templates see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Install,
    Local,
    Menu,
    /// An unknown machine boots the site's discovery image.
    Discover,
}

/// Everything a template may use for one host (or one unknown machine).
pub struct HostContext<'a> {
    pub config: &'a Config,
    pub site: &'a Site,
    pub host: Option<&'a Host>,
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub action: Action,
    pub token: Option<&'a str>,
    /// The install session the kickstart is for (kickstarts only).
    pub install: Option<InstallFacts>,
    /// The OS image the host's profile deploys (`image = ...`), as this generation found it.
    pub image: Option<&'a Image>,
    /// The host's static addresses (IPAM), for its profile's network (kickstarts only).
    pub static_addresses: Vec<crate::ipam::Assignment>,
}

/// What a kickstart knows about its own install: the id its marker carries, and whether an
/// operator allowed it to wipe an earlier install (`install.id`, `install.wipe_allowed`).
#[derive(Debug, Clone, Default)]
pub struct InstallFacts {
    pub id: String,
    pub wipe_allowed: bool,
}

impl HostContext<'_> {
    pub fn profile(&self) -> Option<&Profile> {
        self.config.profiles.get(self.host?.profile.as_ref()?)
    }

    pub fn to_value(&self) -> Value {
        let site = self.site;
        let base = site.boot_base_url();
        let profile = self.profile();
        let host_name = self.host.map(|h| h.hostname.clone());
        let domain = site.domain().map(str::to_string);
        let fqdn = host_name.as_deref().map(|h| site.fqdn(h));
        let mut vars = default_vars();
        merge(&mut vars, &site.vars);
        if let Some(p) = profile {
            merge(&mut vars, &p.vars);
        }
        if let Some(h) = self.host {
            merge(&mut vars, &h.vars);
        }
        let key = host_name.clone().unwrap_or_else(|| self.mac.hyphenated());
        let token = self.token.unwrap_or("");
        let asset = |p: &Option<String>| p.as_ref().map(|p| format!("{base}/assets/{p}"));
        let ctx = serde_json::json!({
            "action": self.action,
            "mac": self.mac.to_string(),
            "mac_hyphen": self.mac.hyphenated(),
            "token": token,
            "server": {
                "address": site.server_address.to_string(),
                "http_port": site.http_port,
                "http": base,
            },
            "site": { "name": site.name, "description": site.description, "domain": domain },
            "host": {
                "hostname": host_name,
                "fqdn": fqdn,
                "mac": self.mac.to_string(),
                "ip": self.ip.map(|i| i.to_string()),
                "known": self.host.is_some(),
            },
            "profile": profile.map(|p| serde_json::json!({
                "name": p.name, "os": p.os, "kernel": p.kernel, "initrd": p.initrd,
                "kernel_args": p.kernel_args, "kickstart": p.kickstart, "image": p.image,
                "disk": p.disk.installer_form(), "wipe": p.wipe, "secure_boot": p.secure_boot,
            })),
            "urls": {
                "script": format!("{base}/boot/{}.ipxe", self.mac.hyphenated()),
                "kernel": asset(&profile.and_then(|p| p.kernel.clone())),
                "initrd": asset(&profile.and_then(|p| p.initrd.clone())),
                "kickstart": format!("{base}/ks/{key}?token={token}"),
                "callback": format!("{base}/callback/{key}"),
                "assets": format!("{base}/assets"),
                "discover": format!("{base}/discover/{}", self.mac.hyphenated()),
            },
            "discovery": site.discovery.as_ref().map(|d| serde_json::json!({
                "kernel": format!("{base}/assets/{}", d.kernel),
                "initrd": format!("{base}/assets/{}", d.initrd),
                // Under the assets directory, as TFTP serves them (GRUB's and PXELINUX's paths).
                "kernel_file": d.kernel,
                "initrd_file": d.initrd,
                "kernel_args": d.kernel_args,
                "then": if d.poweroff { "poweroff" } else { "wait" },
            })),
            "vars": vars,
            // The deploy document's image: where the installer streams it from and the
            // checksum it must match (`assets::images`).
            "image": self.image.map(|i| serde_json::json!({
                "name": i.name, "url": format!("{base}/assets/{}", i.asset_path),
                "format": i.format.suffix(), "sha256": i.sha256, "size": i.size,
            })),
            "install": {
                "id": self.install.as_ref().map(|i| i.id.clone()).unwrap_or_default(),
                "wipe_allowed": self.install.as_ref().is_some_and(|i| i.wipe_allowed),
            },
            "network": self.host.and_then(|h| h.network.as_ref()).map(|m| self.network_value(m)),
            // In a region (`[daemon] region_ca` and `region_cross_cert`): other sites'
            // hypervisors are trusted for migration.
            "region": {
                "trust": self.config.daemon.region_ca.is_some() && self.config.daemon.region_cross_cert.is_some(),
            },
        });
        Value::from(minijinja::value::Serde(ctx))
    }
}

impl HostContext<'_> {
    /// The profile's network as the templates use it: each installer's rendering (EL
    /// kickstart `network` lines and the `%post` keyfiles; the Debian image's networkd
    /// units), with the host's IPAM addresses on the bridges of their roles.
    fn network_value(&self, m: &crate::netmodel::NetModel) -> serde_json::Value {
        use crate::netmodel::{Addressing, kickstart, networkd};
        let addresses: std::collections::BTreeMap<String, Addressing> = m
            .bridges
            .iter()
            .filter_map(|b| {
                let a = self.static_addresses.iter().find(|a| a.role == b.role)?;
                let address = ipnet::Ipv4Net::new(a.address, a.prefix_len).ok()?;
                Some((
                    b.name.clone(),
                    Addressing::Static {
                        address,
                        gateway: a.gateway,
                    },
                ))
            })
            .collect();
        let units: Vec<serde_json::Value> = networkd::units(m, &addresses, Some(self.mac))
            .into_iter()
            .map(|(file, text)| serde_json::json!({ "file": file, "text": text }))
            .collect();
        serde_json::json!({
            "boot_bridge": m.bridge_for(crate::netmodel::Role::Boot).map(|b| b.name.clone()),
            "bridges": m.bridges.iter().map(|b| serde_json::json!({
                "name": b.name, "role": b.role.as_str(),
                "address": match addresses.get(&b.name) {
                    Some(Addressing::Static { address, .. }) => Some(address.to_string()),
                    _ => None,
                },
            })).collect::<Vec<_>>(),
            "kickstart": {
                "lines": kickstart::network_lines(m, &addresses),
                "post": kickstart::post_script(m, &addresses),
            },
            "networkd": units,
        })
    }
}

/// Upper layer wins key by key; tables merge recursively (so a host can override one key of
/// a site's table without repeating the rest).
fn merge(into: &mut toml::Table, upper: &toml::Table) {
    for (k, v) in upper {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_override_in_order_and_tables_merge() {
        let mut base: toml::Table = toml::from_str("a = 1\nb = 1\n[t]\nx = 1\ny = 1").unwrap();
        merge(&mut base, &toml::from_str("b = 2\n[t]\ny = 2").unwrap());
        merge(&mut base, &toml::from_str("c = 3").unwrap());
        assert_eq!(
            base,
            toml::from_str::<toml::Table>("a = 1\nb = 2\nc = 3\n[t]\nx = 1\ny = 2").unwrap()
        );
    }

    #[test]
    fn undefined_variables_are_errors_naming_template_line_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("k")).unwrap();
        std::fs::write(dir.path().join("k/t.j2"), "line one\n{{ vars.disk }}\n").unwrap();
        let r = Renderer::load(dir.path()).unwrap();
        assert_eq!(r.names(), vec!["k/t.j2"]);
        let e = r
            .render(
                "k/t.j2",
                &Value::from(minijinja::value::Serde(serde_json::json!({ "vars": {} }))),
            )
            .unwrap_err();
        assert_eq!((e.template.as_str(), e.line), ("k/t.j2", Some(2)));
        assert!(e.to_string().contains("vars.disk"), "{e}");
    }

    #[test]
    fn a_syntax_error_fails_loading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.j2"), "{% if %}").unwrap();
        let e = Renderer::load(dir.path()).err().expect("must fail");
        assert_eq!(e.template, "bad.j2");
    }
}
