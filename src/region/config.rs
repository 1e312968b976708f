//! The region's own config (`region.toml`): where it listens, where it keeps its state and
//! its CA, and each site it follows with that site's admin API addresses (two for a
//! failover pair: the region follows whichever answers). Read once, checked whole; an
//! error names the file, the line and the key.
//!
//! ```toml
//! [region]
//! name = "eu"                      # the region's name (its certificates' CN)
//! listen = "127.0.0.1:7070"        # the region's API (loopback unless tls = true)
//! state_dir = "/var/lib/provd-region"
//! stale_after_secs = 30            # a site not heard from this long is shown stale
//!
//! [sites.dc1]
//! urls = ["https://10.1.0.1:6767", "https://10.1.0.2:6767"]
//! ```

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    region: WireRegion,
    #[serde(default)]
    sites: BTreeMap<String, WireSite>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireRegion {
    name: String,
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_stale")]
    stale_after_secs: u64,
    #[serde(default)]
    tls: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSite {
    urls: toml::Spanned<Vec<String>>,
}

fn default_listen() -> SocketAddr {
    "127.0.0.1:7070".parse().expect("a socket address")
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/provd-region")
}

fn default_stale() -> u64 {
    30
}

#[derive(Debug, Clone)]
pub struct RegionConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub state_dir: PathBuf,
    pub stale_after_secs: u64,
    /// HTTPS for the region's own API (a server certificate from the region's root).
    pub tls: bool,
    pub sites: Vec<SiteConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteConfig {
    pub name: String,
    /// The site's admin API base URLs, `https://ADDRESS:PORT` (or `http://` on loopback,
    /// for a site whose API is not TLS and the region on the same machine).
    pub urls: Vec<String>,
}

impl RegionConfig {
    /// The region's CA and its identities.
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegionConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{path}, line {line}, key {key}: {why}")]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        why: String,
    },
}

pub fn load(path: &Path) -> Result<RegionConfig, RegionConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| RegionConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<RegionConfig, RegionConfigError> {
    let wire: Wire = toml::from_str(text).map_err(|source| RegionConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let invalid = |offset: usize, key: String, why: String| RegionConfigError::Invalid {
        path: path.to_path_buf(),
        line: text[..offset.min(text.len())].matches('\n').count() + 1,
        key,
        why,
    };
    let line_of = |needle: &str| text.find(needle).unwrap_or(0);
    if !valid_name(&wire.region.name) {
        return Err(invalid(
            line_of("name"),
            "region.name".into(),
            "letters, digits, '-' and '_' only".into(),
        ));
    }
    if !wire.region.listen.ip().is_loopback() && !wire.region.tls {
        return Err(invalid(
            line_of("listen"),
            "region.listen".into(),
            format!(
                "{} is not a loopback address: without tls = true the region's API would be plain HTTP on the network",
                wire.region.listen
            ),
        ));
    }
    let mut sites = Vec::new();
    for (name, site) in wire.sites {
        let key = format!("sites.{name}.urls");
        if !valid_name(&name) {
            return Err(invalid(
                site.urls.span().start,
                format!("sites.{name}"),
                "a site name is letters, digits, '-' and '_' only".into(),
            ));
        }
        if site.urls.get_ref().is_empty() {
            return Err(invalid(site.urls.span().start, key, "at least one URL".into()));
        }
        for url in site.urls.get_ref() {
            if let Err(why) = check_url(url) {
                return Err(invalid(site.urls.span().start, key, format!("{url:?}: {why}")));
            }
        }
        sites.push(SiteConfig {
            name,
            urls: site
                .urls
                .into_inner()
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
        });
    }
    Ok(RegionConfig {
        name: wire.region.name,
        listen: wire.region.listen,
        state_dir: wire.region.state_dir,
        stale_after_secs: wire.region.stale_after_secs.max(1),
        tls: wire.region.tls,
        sites,
    })
}

/// `https://HOST:PORT`, or `http://` to a loopback address only (the credential, a
/// client certificate, needs TLS anywhere else).
fn check_url(url: &str) -> Result<(), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not a URL (https://ADDRESS:PORT)")?;
    let authority = rest.trim_end_matches('/');
    if authority.contains('/') {
        return Err("the site's API base only (no path)".into());
    }
    match scheme {
        "https" => Ok(()),
        "http" => {
            let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if loopback {
                Ok(())
            } else {
                Err("plain http only to a loopback address; use https".into())
            }
        }
        other => Err(format!("scheme {other:?}: https only")),
    }
}

/// A region or site name: it goes into URLs, keys and certificate names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_config_reads_and_its_errors_name_line_and_key() {
        let ok =
            "[region]\nname = \"eu\"\n\n[sites.dc1]\nurls = [\"https://10.1.0.1:6767/\", \"https://10.1.0.2:6767\"]\n";
        let c = parse(Path::new("r.toml"), ok).unwrap();
        assert_eq!(c.sites[0].urls, ["https://10.1.0.1:6767", "https://10.1.0.2:6767"]);
        assert_eq!(c.listen, default_listen());
        let bad = ok.replace("https://10.1.0.2", "http://10.1.0.2");
        let e = parse(Path::new("r.toml"), &bad).unwrap_err().to_string();
        assert!(
            e.contains("r.toml, line 5, key sites.dc1.urls") && e.contains("loopback"),
            "{e}"
        );
        let open = ok.replace("name = \"eu\"", "name = \"eu\"\nlisten = \"0.0.0.0:7070\"");
        let e = parse(Path::new("r.toml"), &open).unwrap_err().to_string();
        assert!(e.contains("key region.listen"), "{e}");
        let unknown = ok.replace("[sites.dc1]", "[sites.dc1]\nurl = \"x\"");
        assert!(
            parse(Path::new("r.toml"), &unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
    }
}
