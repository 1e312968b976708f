//! `[sites.X.dns]`: the server, zones and TSIG key provd updates a site's names with. Only
//! the shape is checked here (addresses, DNS names, reverse zones, the key file's place);
//! the key itself is read when the daemon starts (`dns::key`), so `provd check` can run on
//! a machine that does not hold the secret.

use super::super::ConfigError;
use super::super::model::{DEFAULT_DNS_TTL, SiteDns};
use super::super::wire::DnsWire;
use super::Source;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The port of an update server given without one.
const DNS_PORT: u16 = 53;

pub(super) fn convert_dns(
    src: &Source,
    site: &str,
    domain: Option<&str>,
    assets_dir: &Path,
    w: &toml::Spanned<DnsWire>,
    errors: &mut Vec<ConfigError>,
) -> Option<SiteDns> {
    let before = errors.len();
    let key = |rest: &str| format!("sites.{site}.dns.{rest}");
    let d = w.get_ref();
    let server = parse_server(d.server.get_ref());
    if server.is_none() {
        errors.push(src.error(
            Some(d.server.span()),
            key("server"),
            format!(
                "{:?} is not an address or address:port (an address, so updates do not depend on DNS)",
                d.server.get_ref()
            ),
        ));
    }
    let zone = match (&d.zone, domain) {
        (Some(z), _) => {
            let name = absolute(z.get_ref());
            if !super::valid_hostname(&name) {
                errors.push(src.error(
                    Some(z.span()),
                    key("zone"),
                    format!("{:?} is not a DNS name", z.get_ref()),
                ));
            }
            name
        }
        (None, Some(domain)) => absolute(domain),
        (None, None) => {
            errors.push(src.error(
                Some(w.span()),
                key("zone"),
                "no zone: name one here, or give a subnet of the site a domain",
            ));
            String::new()
        }
    };
    let mut reverse_zones = Vec::new();
    for (i, z) in d.reverse_zones.iter().enumerate() {
        let name = absolute(z.get_ref());
        if !is_reverse_zone(&name) {
            errors.push(src.error(
                Some(z.span()),
                key(&format!("reverse_zones[{i}]")),
                format!(
                    "{:?} is not an IPv4 reverse zone (like \"0.10.in-addr.arpa\")",
                    z.get_ref()
                ),
            ));
        }
        reverse_zones.push(name);
    }
    let key_file = PathBuf::from(d.key_file.get_ref());
    if crate::config::is_under_assets(assets_dir, &key_file) {
        errors.push(src.error(
            Some(d.key_file.span()),
            key("key_file"),
            format!(
                "{} is under the assets directory, which TFTP and HTTP serve to every machine on \
                 the boot network: keep the TSIG key outside it",
                key_file.display()
            ),
        ));
    }
    if errors.len() > before {
        return None;
    }
    Some(SiteDns {
        server: server.expect("checked"),
        zone,
        reverse_zones,
        key_file,
        ttl: d.ttl.unwrap_or(DEFAULT_DNS_TTL),
    })
}

fn parse_server(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, DNS_PORT)))
}

/// Lower case, without the root's final dot.
fn absolute(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `<1 to 4 octets, reversed>.in-addr.arpa`.
fn is_reverse_zone(name: &str) -> bool {
    let Some(octets) = name.strip_suffix(".in-addr.arpa") else {
        return false;
    };
    let labels: Vec<&str> = octets.split('.').collect();
    labels.len() <= 4
        && labels
            .iter()
            .all(|l| !l.is_empty() && l.len() <= 3 && l.parse::<u8>().is_ok() && (l.len() == 1 || !l.starts_with('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_names_and_reverse_zones() {
        assert_eq!(parse_server("10.0.0.53"), Some("10.0.0.53:53".parse().unwrap()));
        assert_eq!(parse_server("127.0.0.1:5353"), Some("127.0.0.1:5353".parse().unwrap()));
        assert_eq!(parse_server("ns1.example.net"), None);
        assert!(is_reverse_zone("0.10.in-addr.arpa"));
        assert!(is_reverse_zone("10.in-addr.arpa"));
        assert!(!is_reverse_zone("256.in-addr.arpa"));
        assert!(!is_reverse_zone("1.2.3.4.5.in-addr.arpa"));
        assert!(!is_reverse_zone("example.net"));
        assert!(!is_reverse_zone("01.10.in-addr.arpa"));
        assert_eq!(absolute("A.Example.NET."), "a.example.net");
    }
}
