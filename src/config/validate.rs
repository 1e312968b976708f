//! Turns wire structs into the model, collecting every problem with its file, line and key.
//!
//! Checks that span files (duplicate MACs, hostnames, reserved IPs, overlapping subnets) run
//! after every file is parsed, so an error points at the second occurrence and names the first.

use super::model::*;
use super::wire::*;
use super::{ConfigError, ConfigErrors};
use crate::mac::MacAddr;
use ipnet::Ipv4Net;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Maps byte offsets of one file to line numbers and builds errors for it.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn error(&self, span: Option<Range<usize>>, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Where something was first seen, for "duplicate of ..." messages.
    fn place(&self, span: &Range<usize>) -> String {
        format!("{}:{}", self.file.display(), self.line_of(span.start))
    }
}

pub(super) fn build(sources: &[(PathBuf, String)]) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut parsed = Vec::new();
    for (file, text) in sources {
        let src = Source { file, text };
        match parse_file(&src) {
            Ok(wire) => parsed.push((src, wire)),
            Err(e) => errors.push(e),
        }
    }

    let mut daemon: Option<(Daemon, String)> = None;
    let mut profiles: BTreeMap<String, (Profile, String)> = BTreeMap::new();
    let mut sites: BTreeMap<String, (Site, String)> = BTreeMap::new();
    let mut uniq = Uniqueness::default();
    let mut vm = VmProfiles::default();
    let mut vm_seen: Option<String> = None;
    let mut pki: Option<(SignPolicy, Option<u32>, String)> = None;

    for (src, wire) in &parsed {
        if let Some(d) = &wire.daemon {
            if let Some((_, first)) = &daemon {
                errors.push(src.error(
                    Some(d.span()),
                    "daemon",
                    format!("[daemon] given twice (first at {first})"),
                ));
            } else {
                let converted = convert_daemon(d.get_ref());
                check_assets_dir(src, &d.span(), &converted, sources, &mut errors);
                daemon = Some((converted, src.place(&d.span())));
            }
        }
        if let Some(v) = &wire.vm {
            if let Some(first) = &vm_seen {
                errors.push(src.error(Some(v.span()), "vm", format!("[vm] given twice (first at {first})")));
            } else {
                vm_seen = Some(src.place(&v.span()));
                convert_vm(src, v.get_ref(), &mut vm, &mut errors);
            }
        }
        if let Some(p) = &wire.pki {
            if let Some((_, _, first)) = &pki {
                errors.push(src.error(Some(p.span()), "pki", format!("[pki] given twice (first at {first})")));
            } else {
                pki = Some((p.get_ref().sign, p.get_ref().renew_within_days, src.place(&p.span())));
            }
        }
        for (name, p) in &wire.profiles {
            if let Some((_, first)) = profiles.get(name) {
                errors.push(src.error(
                    Some(p.span()),
                    format!("profiles.{name}"),
                    format!("profile defined twice (first at {first})"),
                ));
                continue;
            }
            check_profile(src, name, p.get_ref(), &mut errors);
            profiles.insert(name.clone(), (convert_profile(name, p.get_ref()), src.place(&p.span())));
        }
    }
    // Sites second, so host profile references can be checked against every file's profiles.
    for (src, wire) in &parsed {
        for (name, s) in &wire.sites {
            if let Some((_, first)) = sites.get(name) {
                errors.push(src.error(
                    Some(s.span()),
                    format!("sites.{name}"),
                    format!("site defined twice (first at {first})"),
                ));
                continue;
            }
            let assets_dir = daemon
                .as_ref()
                .map(|d| d.0.assets_dir.clone())
                .unwrap_or_else(|| default_daemon().assets_dir);
            if let Some(site) = convert_site(src, name, s.get_ref(), &assets_dir, &profiles, &mut uniq, &mut errors) {
                sites.insert(name.clone(), (site, src.place(&s.span())));
            }
        }
    }

    // Top-level [[hosts]] (per-site host files) join their site once every site is known.
    join_top_level_hosts(&parsed, &mut sites, &profiles, &mut uniq, &mut errors);

    networks::check_against_dhcp(&uniq.ipam_pools, sites.values().map(|(s, _)| s), &mut errors);
    check_something_served(sources, &sites, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let sites: BTreeMap<String, Site> = sites.into_iter().map(|(k, v)| (k, v.0)).collect();
    Ok(Config {
        hosts: super::HostIndex::build(&sites),
        files: sources.iter().map(|s| s.0.clone()).collect(),
        daemon: daemon.map(|d| d.0).unwrap_or_else(default_daemon),
        profiles: profiles.into_iter().map(|(k, v)| (k, v.0)).collect(),
        sites,
        vm,
        pki_sign: pki.as_ref().map(|p| p.0).unwrap_or_default(),
        pki_renew_within: pki.and_then(|p| p.1).map(|d| i64::from(d) * 86_400),
    })
}

/// What a config without a `[daemon]` table runs with.
fn default_daemon() -> Daemon {
    convert_daemon(&DaemonWire {
        state_dir: None,
        api_listen: None,
        templates_dir: None,
        assets_dir: None,
        pki_dir: None,
        api_tls: false,
        api_names: Vec::new(),
        region_ca: None,
        region_cross_cert: None,
        bmc_secrets: None,
        hosts_dir: None,
    })
}

/// The assets directory is served to every machine on the boot network: no secret and no
/// config file may live under it.
fn check_assets_dir(
    src: &Source,
    span: &std::ops::Range<usize>,
    converted: &Daemon,
    sources: &[(PathBuf, String)],
    errors: &mut Vec<ConfigError>,
) {
    if let Some(what) = super::secrets_under_assets(&converted.assets_dir, converted, &converted.state_dir) {
        errors.push(src.error(
            Some(span.clone()),
            "daemon.assets_dir",
            format!(
                "{} holds {what}: TFTP and HTTP serve the assets directory to every machine on \
                 the boot network; put state_dir, pki_dir and bmc_secrets outside it",
                converted.assets_dir.display()
            ),
        ));
    }
    for (file, _) in sources {
        if super::is_under_assets(&converted.assets_dir, file) {
            errors.push(src.error(
                Some(span.clone()),
                "daemon.assets_dir",
                format!(
                    "{} holds the config file {}: TFTP and HTTP serve the assets directory to every \
                     machine on the boot network; keep the configuration outside it",
                    converted.assets_dir.display(),
                    file.display()
                ),
            ));
        }
    }
}

/// A profile's certificate roles and image.
fn check_profile(src: &Source, name: &str, p: &ProfileWire, errors: &mut Vec<ConfigError>) {
    for role in &p.certificates {
        if !super::model::CERTIFICATE_ROLES.contains(&role.get_ref().as_str()) {
            errors.push(src.error(
                Some(role.span()),
                format!("profiles.{name}.certificates"),
                format!(
                    "unknown certificate role {:?}: use {}",
                    role.get_ref(),
                    super::model::CERTIFICATE_ROLES.join(" or ")
                ),
            ));
        }
    }
    if let Some(network) = &p.network {
        // Each problem at the network table (a model's parts refer to each other by name:
        // the table, not one entry, is where the operator looks).
        for problem in crate::netmodel::check::check(network.get_ref()) {
            errors.push(src.error(
                Some(network.span()),
                format!("profiles.{name}.network"),
                problem.to_string(),
            ));
        }
    }
    if let Some(disk) = &p.disk {
        let key = format!("profiles.{name}.disk");
        if let Err(why) = super::disk_rule::DiskRule::parse(disk.get_ref()) {
            errors.push(src.error(Some(disk.span()), key, why));
        } else if p.image.is_none() {
            errors.push(src.error(
                Some(disk.span()),
                key,
                "only an image profile's installer chooses a disk (a kickstart's own disk commands choose for Anaconda)",
            ));
        }
    }
    if let Some(image) = &p.image {
        let key = format!("profiles.{name}.image");
        if let Err(e) = crate::assets::images::check_name(image.get_ref()) {
            errors.push(src.error(Some(image.span()), key, e.to_string()));
        } else if p.kickstart.is_none() || p.kernel.is_none() || p.initrd.is_none() {
            errors.push(src.error(
                Some(image.span()),
                key,
                "an image profile needs kernel and initrd (the installer environment that writes the image) and kickstart (its deploy document)",
            ));
        }
    }
}

/// Top-level `[[hosts]]` entries (per-site host files) join the site they name.
fn join_top_level_hosts(
    parsed: &[(Source, FileWire)],
    sites: &mut BTreeMap<String, (Site, String)>,
    profiles: &BTreeMap<String, (Profile, String)>,
    uniq: &mut Uniqueness,
    errors: &mut Vec<ConfigError>,
) {
    for (src, wire) in parsed {
        for (i, h) in wire.hosts.iter().enumerate() {
            let hw = h.get_ref();
            let Some(site_name) = &hw.site else {
                errors.push(src.error(
                    Some(h.span()),
                    format!("hosts[{i}].site"),
                    "a top-level [[hosts]] entry names its site: site = \"NAME\"",
                ));
                continue;
            };
            let Some((site, _)) = sites.get_mut(site_name.get_ref()) else {
                let known: Vec<&str> = sites.keys().map(String::as_str).collect();
                errors.push(src.error(
                    Some(site_name.span()),
                    format!("hosts[{i}].site"),
                    format!("no site named {:?} (known: {})", site_name.get_ref(), known.join(", ")),
                ));
                continue;
            };
            let subnets = site.subnets.clone();
            let ctx = HostContext {
                site: site_name.get_ref(),
                key: format!("hosts[{i}]"),
                subnets: &subnets,
                profiles,
                secure_boot: site.pxe.secure_boot,
            };
            if let Some(host) = convert_host(src, &ctx, hw, uniq, errors) {
                site.hosts.push(host);
            }
        }
    }
}

/// A config set that is otherwise valid must serve something: a site, with a listener.
fn check_something_served(
    sources: &[(PathBuf, String)],
    sites: &BTreeMap<String, (Site, String)>,
    errors: &mut Vec<ConfigError>,
) {
    if errors.is_empty() && !sites.is_empty() && sites.values().all(|(s, _)| s.listen.is_empty()) {
        let (_, (_, first)) = sites.iter().next().expect("not empty");
        errors.push(ConfigError {
            file: sources.first().map(|s| s.0.clone()).unwrap_or_default(),
            line: None,
            key: "listen".into(),
            message: format!(
                "no site has a listen interface (first site at {first}): provd only serves interfaces named in `listen`"
            ),
        });
    }
    if sites.is_empty() && errors.is_empty() {
        let file = sources.first().map(|s| s.0.clone()).unwrap_or_default();
        errors.push(ConfigError {
            file,
            line: None,
            key: "sites".into(),
            message: "no [sites.NAME] table in any file".into(),
        });
    }
}

fn parse_file(src: &Source) -> Result<FileWire, ConfigError> {
    let de = toml::Deserializer::parse(src.text).map_err(|e| src.error(e.span(), "", e.message().to_string()))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        src.error(inner.span(), clean_key_path(&key), inner.message().to_string())
    })
}

/// serde_path_to_error sees `toml::Spanned`'s private wrapper fields and prints "." for the
/// root; neither means anything to a user editing the file.
fn clean_key_path(path: &str) -> String {
    if path == "." {
        return String::new();
    }
    path.split('.')
        .filter(|seg| !seg.starts_with("$__serde_spanned"))
        .collect::<Vec<_>>()
        .join(".")
}

fn convert_daemon(d: &DaemonWire) -> Daemon {
    Daemon {
        state_dir: PathBuf::from(d.state_dir.clone().unwrap_or_else(|| DEFAULT_STATE_DIR.into())),
        api_listen: d
            .api_listen
            .unwrap_or_else(|| DEFAULT_API_LISTEN.parse::<SocketAddr>().expect("constant")),
        templates_dir: PathBuf::from(d.templates_dir.clone().unwrap_or_else(|| "templates".into())),
        assets_dir: PathBuf::from(d.assets_dir.clone().unwrap_or_else(|| "boot-assets".into())),
        pki_dir: d.pki_dir.as_ref().map(PathBuf::from),
        api_tls: d.api_tls,
        api_names: d.api_names.clone(),
        region_ca: d.region_ca.as_ref().map(PathBuf::from),
        region_cross_cert: d.region_cross_cert.as_ref().map(PathBuf::from),
        bmc_secrets: d.bmc_secrets.as_ref().map(PathBuf::from),
        hosts_dir: d.hosts_dir.as_ref().map(PathBuf::from),
    }
}

/// Relay addresses or prefixes ("10.0.0.1" means 10.0.0.1/32).
fn convert_relays(src: &Source, key: &str, w: &[Spanned<String>], errors: &mut Vec<ConfigError>) -> Vec<Ipv4Net> {
    let mut out = Vec::new();
    for (i, r) in w.iter().enumerate() {
        let text = r.get_ref().trim();
        let parsed = text
            .parse::<Ipv4Net>()
            .or_else(|_| text.parse::<Ipv4Addr>().map(Ipv4Net::from));
        match parsed {
            Ok(n) => out.push(n),
            Err(_) => errors.push(src.error(
                Some(r.span()),
                format!("{key}[{i}]"),
                format!("{text:?} is not an IPv4 address or prefix (e.g. \"10.0.1.1\" or \"10.0.1.0/24\")"),
            )),
        }
    }
    out
}

fn convert_vm(src: &Source, w: &VmWire, out: &mut VmProfiles, errors: &mut Vec<ConfigError>) {
    out.placement = w.placement.unwrap_or_default();
    for (name, p) in &w.disk_profiles {
        let key = format!("vm.disk_profiles.{name}");
        let mut disks = Vec::new();
        for (i, d) in p.get_ref().disks.iter().enumerate() {
            let span = d.span();
            let d = d.get_ref();
            let format = d.format.clone().unwrap_or_else(|| "qcow2".into());
            let bus = d.bus.clone().unwrap_or_else(|| "virtio".into());
            let mut bad = |what: String| errors.push(src.error(Some(span.clone()), format!("{key}.disks[{i}]"), what));
            if !["qcow2", "raw"].contains(&format.as_str()) {
                bad(format!("format {format:?}: use qcow2 or raw"));
            }
            if !["virtio", "scsi", "sata", "ide"].contains(&bus.as_str()) {
                bad(format!("bus {bus:?}: use virtio, scsi, sata or ide"));
            }
            if d.size_gib == 0 {
                bad("size_gib must be at least 1".into());
            }
            if disks.iter().any(|x: &DiskSpec| x.name == d.name) {
                bad(format!("disk name {:?} used twice", d.name));
            }
            disks.push(DiskSpec {
                name: d.name.clone(),
                size_gib: d.size_gib,
                format,
                bus,
                dir: PathBuf::from(d.dir.clone().unwrap_or_else(|| DEFAULT_IMAGE_DIR.into())),
            });
        }
        if disks.is_empty() {
            errors.push(src.error(Some(p.span()), key.clone(), "a disk profile needs at least one disk"));
        }
        out.disks.insert(name.clone(), disks);
    }
    for (name, p) in &w.nic_profiles {
        let key = format!("vm.nic_profiles.{name}");
        let mut nics = Vec::new();
        for (i, n) in p.get_ref().nics.iter().enumerate() {
            let mac = match n.mac.as_deref().map(str::parse::<MacAddr>) {
                None => None,
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => {
                    errors.push(src.error(Some(p.span()), format!("{key}.nics[{i}].mac"), e.to_string()));
                    None
                }
            };
            let nic_key = format!("{key}.nics[{i}]");
            let Some(network) = nic_network(src, &nic_key, p.span(), n, errors) else {
                continue;
            };
            nics.push(NicWant {
                name: n.name.clone(),
                network,
                model: n.model.clone().unwrap_or_else(|| "virtio".into()),
                mac,
                rom: n.rom.unwrap_or(true),
            });
        }
        out.nics.insert(name.clone(), nics);
    }
}

/// Exactly one of `bridge`, `role` (not boot: a VM on the boot network names its bridge)
/// and `vlan`.
fn nic_network(
    src: &Source,
    key: &str,
    span: Range<usize>,
    n: &NicWire,
    errors: &mut Vec<ConfigError>,
) -> Option<NicNetwork> {
    let given = usize::from(n.bridge.is_some()) + usize::from(n.role.is_some()) + usize::from(n.vlan.is_some());
    if given != 1 {
        errors.push(src.error(Some(span), key, "give exactly one of bridge, role or vlan"));
        return None;
    }
    if let Some(b) = &n.bridge {
        return Some(NicNetwork::Bridge(b.clone()));
    }
    if let Some(id) = n.vlan {
        if !(1..=4094).contains(&id) {
            errors.push(src.error(
                Some(span),
                format!("{key}.vlan"),
                format!("VLAN {id} is outside 1-4094"),
            ));
            return None;
        }
        return Some(NicNetwork::Vlan(id));
    }
    let role = n.role.as_ref().expect("counted");
    let parsed = match role.get_ref().as_str() {
        "tenant" => crate::netmodel::Role::Tenant,
        "migration" => crate::netmodel::Role::Migration,
        "storage" => crate::netmodel::Role::Storage,
        "management" => crate::netmodel::Role::Management,
        "boot" => {
            errors.push(src.error(
                Some(role.span()),
                format!("{key}.role"),
                "a VM on the boot network sees provd's DHCP and PXE: name that bridge with bridge = \"...\" if it must",
            ));
            return None;
        }
        other => {
            errors.push(src.error(
                Some(role.span()),
                format!("{key}.role"),
                format!("unknown role {other:?}: tenant, storage, migration or management"),
            ));
            return None;
        }
    };
    Some(NicNetwork::Role(parsed))
}

fn convert_profile(name: &str, p: &ProfileWire) -> Profile {
    Profile {
        name: name.to_string(),
        os: p.os.clone(),
        kernel: p.kernel.clone(),
        initrd: p.initrd.clone(),
        kernel_args: p.kernel_args.clone(),
        kickstart: p.kickstart.clone(),
        image: p.image.as_ref().map(|i| i.get_ref().clone()),
        certificates: p.certificates.iter().map(|r| r.get_ref().clone()).collect(),
        vars: p.vars.clone(),
        network: p.network.as_ref().map(|n| std::sync::Arc::new(n.get_ref().clone())),
        secure_boot: p.secure_boot,
        // Checked by `check_profile`.
        disk: p
            .disk
            .as_ref()
            .and_then(|d| super::disk_rule::DiskRule::parse(d.get_ref()).ok())
            .unwrap_or_default(),
        wipe: p.wipe.unwrap_or(false),
    }
}

/// Values that must be unique across every site of every file, with where each was first seen.
#[derive(Default)]
struct Uniqueness {
    macs: HashMap<MacAddr, String>,
    hostnames: HashMap<String, String>,
    reserved: HashMap<Ipv4Addr, String>,
    subnets: Vec<(Ipv4Net, String)>,
    /// IPAM pools, checked against every site's DHCP once all are known.
    ipam_pools: Vec<networks::PoolAt>,
}

fn convert_site(
    src: &Source,
    name: &str,
    w: &SiteWire,
    assets_dir: &Path,
    profiles: &BTreeMap<String, (Profile, String)>,
    uniq: &mut Uniqueness,
    errors: &mut Vec<ConfigError>,
) -> Option<Site> {
    let before = errors.len();
    let key = |rest: &str| format!("sites.{name}.{rest}");

    let listen = convert_listen(src, name, w, errors);

    let mut subnets = Vec::new();
    for (i, s) in w.subnets.iter().enumerate() {
        if let Some(subnet) = convert_subnet(src, &key(&format!("subnets[{i}]")), s, uniq, errors) {
            subnets.push(subnet);
        }
    }
    for (i, l) in w.listen.iter().enumerate() {
        let addr = *l.get_ref().address.get_ref();
        if !subnets.is_empty() && !subnets.iter().any(|s| s.prefix.contains(&addr)) {
            // Not fatal by itself for a relay-only interface, but then direct clients on it
            // would have no subnet: say so now rather than drop their packets silently later.
            errors.push(src.error(
                Some(l.get_ref().address.span()),
                key(&format!("listen[{i}].address")),
                format!("{addr} is in none of this site's subnets"),
            ));
        }
    }

    let mut hosts = Vec::new();
    for (i, h) in w.hosts.iter().enumerate() {
        if let Some(site) = &h.get_ref().site {
            errors.push(src.error(
                Some(site.span()),
                key(&format!("hosts[{i}].site")),
                "`site` belongs in a top-level [[hosts]] entry; inside [sites.NAME] the site is NAME",
            ));
        }
        let ctx = HostContext {
            site: name,
            key: key(&format!("hosts[{i}]")),
            subnets: &subnets,
            profiles,
            secure_boot: w.pxe.secure_boot.unwrap_or(false),
        };
        if let Some(host) = convert_host(src, &ctx, h.get_ref(), uniq, errors) {
            hosts.push(host);
        }
    }

    let pxe = convert_pxe(src, &key("pxe"), &w.pxe, errors);
    let dhcp = DhcpPolicy {
        unknown_clients: match w.dhcp.unknown_clients.unwrap_or(UnknownClientsWire::Boot) {
            UnknownClientsWire::Boot => UnknownClients::Boot,
            UnknownClientsWire::LeaseOnly => UnknownClients::LeaseOnly,
            UnknownClientsWire::Ignore => UnknownClients::Ignore,
            UnknownClientsWire::Discover => UnknownClients::Discover,
        },
        offer_hold: w.dhcp.offer_hold.unwrap_or(DEFAULT_OFFER_HOLD),
        decline_quarantine: w.dhcp.decline_quarantine.unwrap_or(DEFAULT_DECLINE_QUARANTINE),
        authoritative: w.dhcp.authoritative.unwrap_or(true),
        relays: convert_relays(
            src,
            &key("dhcp.relays"),
            w.dhcp.relays.as_deref().unwrap_or(&[]),
            errors,
        ),
    };
    let failover = w
        .failover
        .as_ref()
        .and_then(|f| convert_failover(src, &key("failover"), f, &subnets, errors));

    let discovery = w
        .discovery
        .as_ref()
        .and_then(|d| convert_discovery(src, name, d.get_ref(), errors));
    if dhcp.unknown_clients == UnknownClients::Discover && w.discovery.is_none() {
        errors.push(src.error(
            None,
            key("dhcp.unknown_clients"),
            "\"discover\" needs the discovery image: [sites.NAME.discovery] kernel = ..., initrd = ... (assets paths)",
        ));
    }

    let domain = subnets.iter().find_map(|s| s.domain.as_deref());
    let dns = w
        .dns
        .as_ref()
        .and_then(|d| dns::convert_dns(src, name, domain, assets_dir, d, errors));
    let networks = networks::convert_networks(src, name, &w.networks, errors, &mut uniq.ipam_pools);

    if errors.len() > before {
        return None;
    }
    Some(Site {
        name: name.to_string(),
        description: w.description.clone(),
        server_address: w.server_address,
        http_port: w.http_port.unwrap_or(DEFAULT_HTTP_PORT),
        listen,
        dhcp,
        pxe,
        subnets,
        hosts,
        vars: w.vars.clone(),
        failover,
        discovery,
        dns,
        networks,
    })
}

/// A site's listen interfaces (valid Linux names, each once).
fn convert_listen(src: &Source, name: &str, w: &SiteWire, errors: &mut Vec<ConfigError>) -> Vec<Listen> {
    let key = |rest: &str| format!("sites.{name}.{rest}");
    let mut listen = Vec::new();
    // Interfaces are unique per site only: sites usually run on different machines, each
    // with its own eth1. Sites served by one process are checked in `Config::select_sites`.
    let mut site_ifaces: HashMap<String, String> = HashMap::new();
    for (i, l) in w.listen.iter().enumerate() {
        let l = l.get_ref();
        let iface = l.interface.get_ref();
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            errors.push(src.error(
                Some(l.interface.span()),
                key(&format!("listen[{i}].interface")),
                format!("{iface:?} is not a valid Linux interface name"),
            ));
        }
        if let Some(first) = site_ifaces.insert(iface.clone(), src.place(&l.interface.span())) {
            errors.push(src.error(
                Some(l.interface.span()),
                key(&format!("listen[{i}].interface")),
                format!("interface {iface} is listed twice (first at {first})"),
            ));
        }
        listen.push(Listen {
            interface: iface.clone(),
            address: *l.address.get_ref(),
        });
    }
    listen
}

/// A site's discovery image and what it does after reporting.
fn convert_discovery(src: &Source, name: &str, dw: &DiscoveryWire, errors: &mut Vec<ConfigError>) -> Option<Discovery> {
    let key = |rest: &str| format!("sites.{name}.{rest}");
    let poweroff = match dw.then.as_ref().map(|t| t.get_ref().as_str()) {
        None | Some("poweroff") => true,
        Some("wait") => false,
        Some(other) => {
            let t = dw.then.as_ref().expect("matched");
            errors.push(src.error(
                Some(t.span()),
                key("discovery.then"),
                format!("{other:?}: poweroff or wait"),
            ));
            return None;
        }
    };
    Some(Discovery {
        kernel: dw.kernel.clone(),
        initrd: dw.initrd.clone(),
        kernel_args: dw.kernel_args.clone(),
        poweroff,
    })
}

/// Where a host entry sits: its site, its key prefix (for errors), and what it may refer to.
struct HostContext<'a> {
    site: &'a str,
    key: String,
    subnets: &'a [Subnet],
    profiles: &'a BTreeMap<String, (Profile, String)>,
    /// The site's `[sites.X.pxe] secure_boot`: what a host and its profile leave unsaid.
    secure_boot: bool,
}

/// One host entry (inside its site's table or a top-level `[[hosts]]`), with every
/// uniqueness check across the whole config set.
fn convert_host(
    src: &Source,
    ctx: &HostContext,
    h: &HostWire,
    uniq: &mut Uniqueness,
    errors: &mut Vec<ConfigError>,
) -> Option<Host> {
    let hkey = |rest: &str| format!("{}.{rest}", ctx.key);
    let bmc = h.bmc.as_ref().and_then(|b| convert_bmc(src, &hkey("bmc"), b, errors));
    let mac = match h.mac.get_ref().parse::<MacAddr>() {
        Ok(m) => m,
        Err(e) => {
            errors.push(src.error(Some(h.mac.span()), hkey("mac"), e.to_string()));
            return None;
        }
    };
    if let Some(first) = uniq.macs.insert(mac, src.place(&h.mac.span())) {
        errors.push(src.error(
            Some(h.mac.span()),
            hkey("mac"),
            format!("duplicate MAC {mac} (first at {first})"),
        ));
    }
    let hostname = h.hostname.get_ref().to_ascii_lowercase();
    if !valid_hostname(&hostname) {
        errors.push(src.error(
            Some(h.hostname.span()),
            hkey("hostname"),
            format!("{hostname:?} is not a valid host name (letters, digits, '-', '.' labels)"),
        ));
    }
    if let Some(first) = uniq.hostnames.insert(hostname.clone(), src.place(&h.hostname.span())) {
        errors.push(src.error(
            Some(h.hostname.span()),
            hkey("hostname"),
            format!("duplicate hostname {hostname} (first at {first})"),
        ));
    }
    let ip = h.ip.as_ref().map(|ip| {
        let addr = *ip.get_ref();
        if let Some(first) = uniq.reserved.insert(addr, src.place(&ip.span())) {
            errors.push(src.error(
                Some(ip.span()),
                hkey("ip"),
                format!("duplicate reserved IP {addr} (first at {first})"),
            ));
        }
        if !ctx.subnets.iter().any(|s| s.prefix.contains(&addr)) {
            errors.push(src.error(
                Some(ip.span()),
                hkey("ip"),
                format!("reserved IP {addr} is outside every subnet of site {}", ctx.site),
            ));
        } else if ctx
            .subnets
            .iter()
            .any(|s| addr == s.prefix.network() || addr == s.prefix.broadcast())
        {
            errors.push(src.error(
                Some(ip.span()),
                hkey("ip"),
                format!("reserved IP {addr} is a network or broadcast address"),
            ));
        }
        addr
    });
    if let Some(p) = &h.profile
        && !ctx.profiles.contains_key(p.get_ref())
    {
        let known: Vec<&str> = ctx.profiles.keys().map(String::as_str).collect();
        errors.push(src.error(
            Some(p.span()),
            hkey("profile"),
            format!("no profile named {:?} (known: {})", p.get_ref(), known.join(", ")),
        ));
    }
    let profile_network = h
        .profile
        .as_ref()
        .and_then(|p| ctx.profiles.get(p.get_ref()))
        .and_then(|(p, _)| p.network.as_ref());
    let secure_boot = h
        .secure_boot
        .or_else(|| {
            h.profile
                .as_ref()
                .and_then(|p| ctx.profiles.get(p.get_ref()))
                .and_then(|(p, _)| p.secure_boot)
        })
        .unwrap_or(ctx.secure_boot);
    let network = match (&h.ports, profile_network) {
        (None, net) => net.cloned(),
        (Some(ports), net) => match crate::netmodel::with_ports(net.map(|n| &**n), ports.get_ref()) {
            Ok(net) => Some(std::sync::Arc::new(net)),
            Err(why) => {
                errors.push(src.error(Some(ports.span()), hkey("ports"), why));
                None
            }
        },
    };
    Some(Host {
        mac,
        hostname,
        ip,
        profile: h.profile.as_ref().map(|p| p.get_ref().clone()),
        vars: h.vars.clone(),
        installed: h.state == Some(HostStateWire::Installed),
        tags: h.tags.clone(),
        bmc,
        network,
        secure_boot,
    })
}

/// `bmc = { driver, address, credentials, fingerprint | ca_file | insecure }`.
fn convert_bmc(src: &Source, key: &str, b: &Spanned<BmcWire>, errors: &mut Vec<ConfigError>) -> Option<Bmc> {
    let w = b.get_ref();
    let k = |rest: &str| format!("{key}.{rest}");
    let driver = match w.driver.get_ref().as_str() {
        "redfish" => BmcDriver::Redfish,
        "ipmi" => BmcDriver::Ipmi,
        other => {
            errors.push(src.error(
                Some(w.driver.span()),
                k("driver"),
                format!("unknown BMC driver {other:?} (redfish or ipmi)"),
            ));
            return None;
        }
    };
    let address = w.address.get_ref().trim().to_string();
    if address.is_empty() || address.contains(char::is_whitespace) {
        errors.push(src.error(Some(w.address.span()), k("address"), "a BMC address is host[:port]"));
        return None;
    }
    if driver == BmcDriver::Ipmi && address.contains("://") {
        errors.push(src.error(
            Some(w.address.span()),
            k("address"),
            "an IPMI address is host[:port] (UDP), not a URL",
        ));
        return None;
    }
    let choices = [w.fingerprint.is_some(), w.ca_file.is_some(), w.insecure];
    if choices.iter().filter(|c| **c).count() > 1 {
        errors.push(src.error(
            Some(b.span()),
            key.to_string(),
            "give at most one of fingerprint, ca_file and insecure",
        ));
        return None;
    }
    if driver == BmcDriver::Ipmi && choices.iter().any(|c| *c) {
        errors.push(src.error(
            Some(b.span()),
            key.to_string(),
            "fingerprint, ca_file and insecure are for Redfish (HTTPS); IPMI over LAN has no certificate",
        ));
        return None;
    }
    let tls = if let Some(f) = &w.fingerprint {
        match parse_fingerprint(f.get_ref()) {
            Some(d) => BmcTls::Pinned(d),
            None => {
                errors.push(src.error(
                    Some(f.span()),
                    k("fingerprint"),
                    "a SHA-256 fingerprint is 64 hex digits (colons allowed), e.g. from `openssl x509 -noout -fingerprint -sha256`",
                ));
                return None;
            }
        }
    } else if let Some(ca) = &w.ca_file {
        BmcTls::CaFile(PathBuf::from(ca))
    } else if w.insecure {
        BmcTls::Insecure
    } else {
        BmcTls::WebPki
    };
    if address.starts_with("http://") {
        errors.push(src.error(
            Some(w.address.span()),
            k("address"),
            "Redfish credentials travel in the clear over http://: use https:// (pin a self-signed certificate with `fingerprint`)",
        ));
        return None;
    }
    Some(Bmc {
        driver,
        address,
        credentials: w.credentials.get_ref().clone(),
        tls,
        system: w.system.clone(),
        cipher_suite: w.cipher_suite.unwrap_or(DEFAULT_IPMI_CIPHER_SUITE),
    })
}

/// "AB:CD:..." or "abcd..." (optionally prefixed "sha256:") -> 32 bytes.
pub(crate) fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let hex: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// A failover peer block, with ISC's rules: mclt, split and hba belong to the primary.
fn convert_failover(
    src: &Source,
    key: &str,
    f: &Spanned<FailoverWire>,
    subnets: &[Subnet],
    errors: &mut Vec<ConfigError>,
) -> Option<Failover> {
    let before = errors.len();
    let k = |rest: &str| format!("{key}.{rest}");
    let w = f.get_ref();
    let role = match w.role.get_ref().as_str() {
        "primary" => FailoverRole::Primary,
        "secondary" => FailoverRole::Secondary,
        other => {
            errors.push(src.error(
                Some(w.role.span()),
                k("role"),
                format!("{other:?} is not a role: primary or secondary"),
            ));
            FailoverRole::Primary
        }
    };
    let name = w.name.get_ref();
    if name.is_empty() || name.len() > 255 {
        errors.push(src.error(
            Some(w.name.span()),
            k("name"),
            "the relationship name must be 1 to 255 bytes",
        ));
    }
    if *w.peer_address.get_ref() == w.address {
        errors.push(src.error(
            Some(w.peer_address.span()),
            k("peer_address"),
            "the peer's address is this server's own address",
        ));
    }
    let secondary_may_not = |v: Option<Range<usize>>, field: &str, errors: &mut Vec<ConfigError>| {
        if let Some(span) = v
            && role == FailoverRole::Secondary
        {
            errors.push(src.error(
                Some(span),
                k(field),
                format!("a secondary may not set {field}: it takes the primary's (from its CONNECT)"),
            ));
        }
    };
    secondary_may_not(w.mclt.as_ref().map(|m| m.span()), "mclt", errors);
    secondary_may_not(w.split.as_ref().map(|m| m.span()), "split", errors);
    secondary_may_not(w.hba.as_ref().map(|m| m.span()), "hba", errors);
    let mut hba = None;
    if role == FailoverRole::Primary {
        hba = Some(failover_hba(src, key, w, errors));
    }
    let mclt = match (&w.mclt, role) {
        (Some(m), FailoverRole::Primary) => {
            if *m.get_ref() == 0 {
                errors.push(src.error(Some(m.span()), k("mclt"), "mclt must be above 0 seconds"));
            }
            *m.get_ref()
        }
        (None, FailoverRole::Primary) => DEFAULT_MCLT,
        (_, FailoverRole::Secondary) => 0,
    };
    let positive = |v: &Option<Spanned<u32>>, field: &str, default: u32, errors: &mut Vec<ConfigError>| match v {
        Some(x) if *x.get_ref() == 0 => {
            errors.push(src.error(Some(x.span()), k(field), format!("{field} must be above 0")));
            default
        }
        Some(x) => *x.get_ref(),
        None => default,
    };
    let max_response_delay = positive(
        &w.max_response_delay,
        "max_response_delay",
        DEFAULT_MAX_RESPONSE_DELAY,
        errors,
    );
    let max_unacked_updates = positive(
        &w.max_unacked_updates,
        "max_unacked_updates",
        DEFAULT_MAX_UNACKED_UPDATES,
        errors,
    );
    let all_pools: Vec<Pool> = subnets.iter().flat_map(|s| s.pools.iter().copied()).collect();
    let pools = failover_pools(src, key, w, &all_pools, errors);
    if pools.is_empty() && errors.len() == before {
        errors.push(src.error(
            Some(f.span()),
            key,
            "the relationship covers no pool (the site has none)",
        ));
    }
    let longest_lease = subnets
        .iter()
        .filter(|s| s.pools.iter().any(|p| pools.contains(p)))
        .map(|s| s.max_lease_time.max(s.lease_time))
        .max()
        .unwrap_or(0);
    (errors.len() == before).then(|| Failover {
        name: name.clone(),
        role,
        address: w.address,
        port: w.port.unwrap_or(DEFAULT_FAILOVER_PORT),
        peer_address: *w.peer_address.get_ref(),
        peer_port: w.peer_port.unwrap_or(DEFAULT_FAILOVER_PORT),
        max_response_delay,
        max_unacked_updates,
        mclt,
        hba,
        load_balance_max_seconds: w.load_balance_max_seconds.unwrap_or(DEFAULT_LOAD_BALANCE_MAX_SECONDS),
        pools,
        replication_port: w.replication_port.unwrap_or(DEFAULT_REPLICATION_PORT),
        tls: w.tls.unwrap_or(false),
        longest_lease,
    })
}

/// The primary's hash bucket assignment: `split` or `hba` (64 hex digits), ISC's 128 by
/// default.
fn failover_hba(src: &Source, key: &str, w: &FailoverWire, errors: &mut Vec<ConfigError>) -> [u8; 32] {
    let k = |rest: &str| format!("{key}.{rest}");
    match (&w.split, &w.hba) {
        (Some(_), Some(h)) => {
            errors.push(src.error(Some(h.span()), k("hba"), "give split or hba, not both"));
            [0; 32]
        }
        (Some(split), None) => {
            let n = *split.get_ref();
            if n > 255 {
                errors.push(src.error(
                    Some(split.span()),
                    k("split"),
                    format!("split {n} is above 255 (ISC's limit; use hba for every bucket)"),
                ));
            }
            super::model::hba_from_split(n.min(255) as u8)
        }
        (None, Some(h)) => {
            let text = h.get_ref();
            let bytes: Option<Vec<u8>> = (text.len() == 64)
                .then(|| {
                    (0..32)
                        .map(|i| u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok())
                        .collect()
                })
                .flatten();
            match bytes {
                Some(b) => b.try_into().expect("32 bytes"),
                None => {
                    errors.push(src.error(Some(h.span()), k("hba"), "hba must be 64 hex digits (256 bits)"));
                    [0; 32]
                }
            }
        }
        (None, None) => super::model::hba_from_split(128),
    }
}

/// The pools a relationship covers: those it names (each must be one of the site's, as
/// START-END), or all of the site's.
fn failover_pools(
    src: &Source,
    key: &str,
    w: &FailoverWire,
    all_pools: &[Pool],
    errors: &mut Vec<ConfigError>,
) -> Vec<Pool> {
    let k = |rest: &str| format!("{key}.{rest}");
    match &w.pools {
        None => all_pools.to_vec(),
        Some(list) => {
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                let text = p.get_ref();
                let found = text.split_once('-').and_then(|(a, b)| {
                    let (a, b) = (a.trim().parse::<Ipv4Addr>().ok()?, b.trim().parse::<Ipv4Addr>().ok()?);
                    all_pools.iter().find(|p| p.start == a && p.end == b).copied()
                });
                match found {
                    Some(pool) => out.push(pool),
                    None => errors.push(src.error(
                        Some(p.span()),
                        k(&format!("pools[{i}]")),
                        format!("{text:?} is not one of this site's pools (write START-END as in the pool)"),
                    )),
                }
            }
            out
        }
    }
}

fn convert_subnet(
    src: &Source,
    key: &str,
    s: &Spanned<SubnetWire>,
    uniq: &mut Uniqueness,
    errors: &mut Vec<ConfigError>,
) -> Option<Subnet> {
    let w = s.get_ref();
    let prefix: Ipv4Net = match w.prefix.get_ref().parse() {
        Ok(p) => p,
        Err(_) => {
            errors.push(src.error(
                Some(w.prefix.span()),
                format!("{key}.prefix"),
                format!("{:?} is not an IPv4 prefix like 10.0.0.0/24", w.prefix.get_ref()),
            ));
            return None;
        }
    };
    if prefix.network() != prefix.addr() {
        errors.push(src.error(
            Some(w.prefix.span()),
            format!("{key}.prefix"),
            format!("{prefix} has host bits set; did you mean {}?", prefix.trunc()),
        ));
        return None;
    }
    if prefix.prefix_len() > 30 {
        errors.push(src.error(
            Some(w.prefix.span()),
            format!("{key}.prefix"),
            format!("{prefix} is too small to hold clients (longest allowed is /30)"),
        ));
        return None;
    }
    for (other, first) in &uniq.subnets {
        if other.contains(&prefix) || prefix.contains(other) {
            errors.push(src.error(
                Some(w.prefix.span()),
                format!("{key}.prefix"),
                format!("{prefix} overlaps subnet {other} (at {first}); a relay's giaddr would be ambiguous"),
            ));
        }
    }
    uniq.subnets.push((prefix, src.place(&w.prefix.span())));

    let mut pools: Vec<Pool> = Vec::new();
    for (j, p) in w.pools.iter().enumerate() {
        let pkey = format!("{key}.pools[{j}]");
        let pool = Pool {
            start: p.get_ref().start,
            end: p.get_ref().end,
        };
        if pool.start > pool.end {
            errors.push(src.error(
                Some(p.span()),
                &pkey,
                format!("pool start {} is after its end {}", pool.start, pool.end),
            ));
            continue;
        }
        if !prefix.contains(&pool.start) || !prefix.contains(&pool.end) {
            errors.push(src.error(
                Some(p.span()),
                &pkey,
                format!("pool {}-{} is not inside subnet {prefix}", pool.start, pool.end),
            ));
            continue;
        }
        if pool.contains(prefix.network()) || pool.contains(prefix.broadcast()) {
            errors.push(src.error(
                Some(p.span()),
                &pkey,
                format!(
                    "pool {}-{} includes the network or broadcast address of {prefix}",
                    pool.start, pool.end
                ),
            ));
            continue;
        }
        if let Some((k, other)) = pools.iter().enumerate().find(|(_, o)| o.overlaps(&pool)) {
            errors.push(src.error(
                Some(p.span()),
                &pkey,
                format!(
                    "pool {}-{} overlaps pools[{k}] {}-{}",
                    pool.start, pool.end, other.start, other.end
                ),
            ));
            continue;
        }
        pools.push(pool);
    }
    let lease_time = w.lease_time.unwrap_or(DEFAULT_LEASE_TIME);
    if lease_time < 60 {
        errors.push(src.error(
            Some(s.span()),
            format!("{key}.lease_time"),
            "lease_time must be at least 60 seconds",
        ));
    }
    let max_lease_time = w.max_lease_time.unwrap_or(lease_time);
    if max_lease_time < lease_time {
        errors.push(src.error(
            Some(s.span()),
            format!("{key}.max_lease_time"),
            "max_lease_time is shorter than lease_time",
        ));
    }
    Some(Subnet {
        prefix,
        pools,
        router: w.router,
        dns: w.dns.clone(),
        domain: w.domain.clone(),
        lease_time,
        max_lease_time,
    })
}

fn convert_pxe(src: &Source, key: &str, w: &PxeWire, errors: &mut Vec<ConfigError>) -> PxePolicy {
    let mut arch_files = BTreeMap::new();
    arch_files.insert(arch::BIOS_X86, w.bios.clone().unwrap_or_else(|| "undionly.kpxe".into()));
    let uefi = w.uefi_x64.clone().unwrap_or_else(|| "ipxe.efi".into());
    arch_files.insert(arch::EFI_BC, uefi.clone());
    // UEFI HTTP boot (no TFTP at all): the same first stage, as a URL on provd's HTTP
    // listener; a `uefi_x64` that is already a URL is used as it is.
    let http_boot = if uefi.contains("://") {
        uefi.clone()
    } else {
        format!("http://{{server}}:{{port}}/assets/{uefi}")
    };
    arch_files.insert(arch::EFI_X64, uefi);
    arch_files.insert(arch::EFI_X64_HTTP, http_boot);
    for (code, file) in &w.arch {
        match code.parse::<u16>() {
            Ok(n) => {
                arch_files.insert(n, file.get_ref().clone());
            }
            Err(_) => errors.push(src.error(
                Some(file.span()),
                format!("{key}.arch.{code}"),
                format!("{code:?} is not an option 93 architecture number (0-65535)"),
            )),
        }
    }
    let mut tftp_open = Vec::new();
    for p in &w.tftp_open {
        match p.get_ref().parse::<Ipv4Net>() {
            Ok(net) => tftp_open.push(net.trunc()),
            Err(_) => errors.push(src.error(
                Some(p.span()),
                format!("{key}.tftp_open"),
                format!("{:?} is not an IPv4 prefix (e.g. \"10.1.0.0/16\")", p.get_ref()),
            )),
        }
    }
    PxePolicy {
        arch_files,
        ipxe_script_url: w
            .ipxe_script_url
            .clone()
            .unwrap_or_else(|| DEFAULT_IPXE_SCRIPT_URL.into()),
        secure_boot_x64: w.secure_boot_x64.clone().unwrap_or_else(|| "shimx64.efi".into()),
        secure_boot: w.secure_boot.unwrap_or(false),
        answer_pxeclient: w.answer_pxeclient.unwrap_or(false),
        tftp_open,
    }
}

/// A hostname DNS (RFC 1123 labels) and cloud-init both accept: the one rule for hosts in
/// the config and for deployed VMs' NoCloud seeds.
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

mod dns;
mod networks;
#[cfg(test)]
mod tests;
