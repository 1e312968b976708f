//! Test configs: named fixture files under `tests/fixtures/sites/` plus a small builder for
//! the parts a test varies (in the way dora's `bin/tests/common/builder.rs` builds its
//! configs), so tests do not each carry an inline copy of a whole site.
//!
//! `Config::fixture("loopback")` reads a fixture; `SiteBuilder` writes one site's TOML;
//! either is joined with the `[daemon]` table a test needs.

use std::fmt::Write;
use std::path::Path;

/// The text of `tests/fixtures/sites/<name>.toml`.
pub fn fixture(name: &str) -> String {
    let p = super::repo(&format!("tests/fixtures/sites/{name}.toml"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A config file's text: the `[daemon]` table for `assets`, the shared profiles fixture,
/// then `sites` (each a `SiteBuilder::toml()` or a fixture).
pub fn config(assets: &Path, sites: &[String]) -> String {
    format!(
        "{}\n{}\n{}",
        super::daemon_toml(assets),
        fixture("profiles"),
        sites.join("\n")
    )
}

/// A whole config: the `[daemon]` table for `assets` and `state`, then `sites`.
pub fn config_with(assets: &Path, state: &Path, sites: &str) -> String {
    format!(
        "{}state_dir = \"{}\"\n\n{sites}",
        super::daemon_toml(assets),
        state.display()
    )
}

/// One `[sites.NAME]` with its subnets, hosts and policy tables.
pub struct SiteBuilder {
    name: String,
    server: String,
    fields: Vec<String>,
    listen: Vec<(String, String)>,
    dhcp: Vec<String>,
    pxe: Vec<String>,
    subnets: Vec<String>,
    hosts: Vec<String>,
    extra: String,
}

impl SiteBuilder {
    pub fn new(name: &str, server: &str) -> Self {
        SiteBuilder {
            name: name.into(),
            server: server.into(),
            fields: Vec::new(),
            listen: Vec::new(),
            dhcp: Vec::new(),
            pxe: Vec::new(),
            subnets: Vec::new(),
            hosts: Vec::new(),
            extra: String::new(),
        }
    }

    /// A key of the site table itself, e.g. `http_port = 8081`.
    pub fn field(mut self, line: &str) -> Self {
        self.fields.push(line.into());
        self
    }

    /// Answer DHCP on `interface` from the server address.
    pub fn listen(mut self, interface: &str) -> Self {
        self.listen.push((interface.into(), self.server.clone()));
        self
    }

    /// A `[sites.NAME.dhcp]` line, e.g. `unknown_clients = "ignore"`.
    pub fn dhcp(mut self, line: &str) -> Self {
        self.dhcp.push(line.into());
        self
    }

    /// A `[sites.NAME.pxe]` line, e.g. `uefi_x64 = "snponly.efi"`.
    pub fn pxe(mut self, line: &str) -> Self {
        self.pxe.push(line.into());
        self
    }

    /// A subnet with one pool; `more` are extra lines (router, dns, lease_time...).
    pub fn subnet(mut self, prefix: &str, pool: (&str, &str), more: &[&str]) -> Self {
        let mut s = format!(
            "prefix = \"{prefix}\"\npools = [{{ start = \"{}\", end = \"{}\" }}]\n",
            pool.0, pool.1
        );
        for l in more {
            s.push_str(l);
            s.push('\n');
        }
        self.subnets.push(s);
        self
    }

    /// A host; `more` are extra lines (ip, profile, vars...).
    pub fn host(mut self, mac: &str, hostname: &str, more: &[&str]) -> Self {
        let mut s = format!("mac = \"{mac}\"\nhostname = \"{hostname}\"\n");
        for l in more {
            s.push_str(l);
            s.push('\n');
        }
        self.hosts.push(s);
        self
    }

    /// Anything else, verbatim after the site (a failover table, another site...).
    pub fn raw(mut self, toml: &str) -> Self {
        self.extra.push_str(toml);
        self
    }

    pub fn toml(&self) -> String {
        let n = &self.name;
        let mut t = format!("[sites.{n}]\nserver_address = \"{}\"\n", self.server);
        for f in &self.fields {
            t.push_str(f);
            t.push('\n');
        }
        if !self.listen.is_empty() {
            let l: Vec<String> = self
                .listen
                .iter()
                .map(|(i, a)| format!("{{ interface = \"{i}\", address = \"{a}\" }}"))
                .collect();
            writeln!(t, "listen = [{}]", l.join(", ")).unwrap();
        }
        for (table, lines) in [("dhcp", &self.dhcp), ("pxe", &self.pxe)] {
            if !lines.is_empty() {
                writeln!(t, "[sites.{n}.{table}]\n{}", lines.join("\n")).unwrap();
            }
        }
        for s in &self.subnets {
            write!(t, "[[sites.{n}.subnets]]\n{s}").unwrap();
        }
        for h in &self.hosts {
            write!(t, "[[sites.{n}.hosts]]\n{h}").unwrap();
        }
        t.push_str(&self.extra);
        t
    }
}
