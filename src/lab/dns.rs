//! The lab's DNS server: Debian's BIND 9 (`named`) inside the lab namespace, primary for the
//! lab site's domain and the reverse zones of its networks, taking RFC 2136 updates signed
//! with a `tsig-keygen` key, and nothing else. provd keeps the hosts' names there
//! (`[sites.lab.dns]`, added to the lab's effective config), and the namespace resolves
//! through it (`/etc/netns/provd-lab/resolv.conf`), so the pool reaches each hypervisor at
//! `qemu+tls://<fqdn>` by the name provd published. The lab's hypervisors get the same
//! server from DHCP. What the files say is pure (`named_conf`, `zone_file`,
//! `reverse_zone`); starting named is not.

use anyhow::{Context, bail};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The TSIG key's name (BIND's and provd's key file are the same file).
pub const KEY_NAME: &str = "provd-lab";

/// The reverse zone of a network on an octet boundary (/8, /16, /24); None otherwise (the
/// lab's networks are /24s).
pub fn reverse_zone(net: Ipv4Net) -> Option<String> {
    let o = net.network().octets();
    match net.prefix_len() {
        24 => Some(format!("{}.{}.{}.in-addr.arpa", o[2], o[1], o[0])),
        16 => Some(format!("{}.{}.in-addr.arpa", o[1], o[0])),
        8 => Some(format!("{}.in-addr.arpa", o[0])),
        _ => None,
    }
}

/// A zone as named first loads it: its SOA and NS (the server itself, `ns.<domain>`, whose
/// address the forward zone holds); provd's updates add everything else.
pub fn zone_file(zone: &str, domain: &str, server: Ipv4Addr) -> String {
    let mut text =
        format!("$TTL 60\n@ IN SOA ns.{domain}. hostmaster.{domain}. 1 60 60 600 60\n@ IN NS ns.{domain}.\n");
    if zone == domain {
        text.push_str(&format!("ns IN A {server}\n"));
    }
    text
}

/// named.conf: the key, the zones (each updatable with the key and nothing else), on
/// `listen` port 53 and loopback, no recursion (it answers for the lab's zones only).
pub fn named_conf(dir: &Path, key_file: &Path, listen: Ipv4Addr, zones: &[String]) -> String {
    let mut conf = format!(
        "include \"{}\";\ncontrols {{ }};\noptions {{\n  directory \"{}\";\n  listen-on port 53 {{ {listen}; 127.0.0.1; }};\n  \
         listen-on-v6 {{ none; }};\n  pid-file none;\n  recursion no;\n  dnssec-validation no;\n}};\n",
        key_file.display(),
        dir.display()
    );
    for z in zones {
        conf.push_str(&format!(
            "zone \"{z}\" {{ type primary; file \"{z}.db\"; allow-update {{ key \"{KEY_NAME}\"; }}; }};\n"
        ));
    }
    conf
}

/// What `start` made: the key provd signs with and the zones it serves.
pub struct LabDns {
    pub key_file: PathBuf,
    pub forward: String,
    pub reverse: Vec<String>,
}

impl LabDns {
    /// `[sites.<lab>.dns]` for the lab's effective config.
    pub fn site_table(&self, server: Ipv4Addr) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("server".into(), server.to_string().into());
        t.insert("zone".into(), self.forward.clone().into());
        t.insert(
            "reverse_zones".into(),
            toml::Value::Array(self.reverse.iter().cloned().map(toml::Value::from).collect()),
        );
        t.insert("key_file".into(), self.key_file.display().to_string().into());
        t.insert("ttl".into(), 60.into());
        t
    }
}

/// Write the key, the zones and named.conf under `dir`, and start named in the lab
/// namespace (its log `dir/named.log`); returns once it answers for `domain`.
pub fn start(
    dir: &Path,
    domain: &str,
    server: Ipv4Addr,
    networks: &[Ipv4Net],
    spawn: impl Fn(&Path, &[String], &Path) -> anyhow::Result<u32>,
) -> anyhow::Result<LabDns> {
    std::fs::create_dir_all(dir)?;
    let key = Command::new("tsig-keygen")
        .args(["-a", "hmac-sha256", KEY_NAME])
        .output()
        .context("running tsig-keygen (bind9)")?;
    if !key.status.success() {
        bail!("tsig-keygen failed: {}", String::from_utf8_lossy(&key.stderr).trim());
    }
    let key_file = dir.join(format!("{KEY_NAME}.key"));
    std::fs::write(&key_file, &key.stdout)?;
    // provd refuses a key others can read.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let mut reverse: Vec<String> = networks.iter().filter_map(|n| reverse_zone(*n)).collect();
    reverse.dedup();
    let mut zones = vec![domain.to_string()];
    zones.extend(reverse.iter().cloned());
    for z in &zones {
        std::fs::write(dir.join(format!("{z}.db")), zone_file(z, domain, server))?;
    }
    let conf = dir.join("named.conf");
    std::fs::write(&conf, named_conf(dir, &key_file, server, &zones))?;
    let named = which("named").context("named (bind9) is not installed: lab/deps.sh installs it")?;
    let log = dir.join("named.log");
    let pid = spawn(
        &named,
        &["-g".into(), "-4".into(), "-c".into(), conf.display().to_string()],
        &log,
    )?;
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("running") {
            break;
        }
        if started.elapsed() > Duration::from_secs(30) || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!("named did not start; its log ({}):\n{text}", log.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(LabDns {
        key_file,
        forward: domain.to_string(),
        reverse,
    })
}

fn which(program: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_zones_are_on_octet_boundaries() {
        assert_eq!(
            reverse_zone("10.200.0.0/24".parse().unwrap()).as_deref(),
            Some("0.200.10.in-addr.arpa")
        );
        assert_eq!(
            reverse_zone("10.200.0.0/16".parse().unwrap()).as_deref(),
            Some("200.10.in-addr.arpa")
        );
        assert_eq!(reverse_zone("10.200.0.0/23".parse().unwrap()), None);
    }

    #[test]
    fn named_takes_signed_updates_for_the_lab_zones_only() {
        let zones = vec!["lab.provd".to_string(), "0.200.10.in-addr.arpa".to_string()];
        let conf = named_conf(
            Path::new("/w/dns"),
            Path::new("/w/dns/k.key"),
            "10.200.0.1".parse().unwrap(),
            &zones,
        );
        assert!(conf.starts_with("include \"/w/dns/k.key\";"));
        assert!(conf.contains("listen-on port 53 { 10.200.0.1; 127.0.0.1; };") && conf.contains("recursion no;"));
        assert!(conf.contains(
            "zone \"0.200.10.in-addr.arpa\" { type primary; file \"0.200.10.in-addr.arpa.db\"; allow-update { key \"provd-lab\"; }; };"
        ));
        assert_eq!(conf.matches("allow-update").count(), 2);
        let forward = zone_file("lab.provd", "lab.provd", "10.200.0.1".parse().unwrap());
        assert!(
            forward.contains("@ IN NS ns.lab.provd.\nns IN A 10.200.0.1\n"),
            "{forward}"
        );
        assert!(!zone_file("0.200.10.in-addr.arpa", "lab.provd", "10.200.0.1".parse().unwrap()).contains(" A "));
    }
}
