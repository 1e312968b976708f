//! The site-config file format exactly as written on disk ("wire" structs).
//!
//! These structs only describe syntax: every table denies unknown keys so that a typo is an
//! error, and fields that later checks must point at are `Spanned` so an error can name the
//! line. Nothing here decides whether a value makes sense; `model` does that.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use toml::Spanned;

/// One config file. Several files are merged: sites and profiles must be unique across them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileWire {
    pub daemon: Option<Spanned<DaemonWire>>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Spanned<ProfileWire>>,
    #[serde(default)]
    pub sites: BTreeMap<String, Spanned<SiteWire>>,
    pub vm: Option<Spanned<VmWire>>,
    pub pki: Option<Spanned<PkiWire>>,
    /// Hosts kept outside their site's table, each naming its site (`site = "dc1"`): the
    /// per-site files `provd hosts adopt` writes (`hosts-<site>.toml`).
    #[serde(default)]
    pub hosts: Vec<Spanned<HostWire>>,
}

/// `[pki]`: how provd's CA treats hosts' certificate requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiWire {
    #[serde(default)]
    pub sign: super::model::SignPolicy,
    /// Renewal is accepted when a certificate has at most this many days left (default: the
    /// last third of its life).
    pub renew_within_days: Option<u32>,
}

/// `[vm]`: disk and NIC profiles for `provd vm`, shared by every site (Salt Virt's
/// `virt:disk` and `virt:nic`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmWire {
    #[serde(default)]
    pub disk_profiles: BTreeMap<String, Spanned<DiskProfileWire>>,
    #[serde(default)]
    pub nic_profiles: BTreeMap<String, Spanned<NicProfileWire>>,
    /// "spread" or "pack": how a batch deploy places its VMs.
    pub placement: Option<super::model::Placement>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskProfileWire {
    pub disks: Vec<Spanned<DiskWire>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskWire {
    pub name: String,
    pub size_gib: u32,
    pub format: Option<String>,
    pub bus: Option<String>,
    pub dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicProfileWire {
    pub nics: Vec<NicWire>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicWire {
    pub name: String,
    /// One of: a bridge by name, the hypervisor's bridge of a role, or its bridge on a VLAN.
    pub bridge: Option<String>,
    pub role: Option<toml::Spanned<String>>,
    pub vlan: Option<u16>,
    pub model: Option<String>,
    pub mac: Option<String>,
    /// false: `<rom enabled='no'/>`, the NIC boots no option ROM (a hypervisor without
    /// ipxe-qemu cannot load one, and a VM that boots from its disk needs none).
    pub rom: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonWire {
    pub state_dir: Option<String>,
    pub api_listen: Option<SocketAddr>,
    pub templates_dir: Option<String>,
    pub assets_dir: Option<String>,
    pub pki_dir: Option<String>,
    #[serde(default)]
    pub api_tls: bool,
    #[serde(default)]
    pub api_names: Vec<String>,
    /// The region's root certificate: its admin certificates open this admin API too.
    pub region_ca: Option<String>,
    /// This site's CA as the region's root certified it (`provd region add-site`).
    pub region_cross_cert: Option<String>,
    /// The BMC credentials file (0600; never part of the site configs).
    pub bmc_secrets: Option<String>,
    /// Where `provd hosts adopt` writes `hosts-<site>.toml`, read as part of the config.
    pub hosts_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileWire {
    pub os: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    #[serde(default)]
    pub kernel_args: String,
    pub kickstart: Option<String>,
    /// An OS image under `<assets_dir>/images/` that the installer environment writes to
    /// the disk (`assets::images`); the kickstart is then its deploy document.
    pub image: Option<toml::Spanned<String>>,
    /// The libvirt certificate roles provd signs for this profile's hosts ("server",
    /// "client"); none: their install tokens sign nothing.
    #[serde(default)]
    pub certificates: Vec<toml::Spanned<String>>,
    #[serde(default)]
    pub vars: toml::Table,
    /// The hosts' data-center network: ports, bonds, VLANs, role bridges (`netmodel`).
    pub network: Option<toml::Spanned<crate::netmodel::NetModel>>,
    /// The hosts boot with UEFI Secure Boot enforced: their DHCP answer names the signed
    /// first stage (`[sites.X.pxe] secure_boot_x64`, shim) instead of iPXE.
    pub secure_boot: Option<bool>,
    /// Image profiles: which disk the installer writes (`config::disk_rule`).
    pub disk: Option<toml::Spanned<String>>,
    /// Image profiles: the installer may overwrite a disk that holds a file system.
    pub wipe: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteWire {
    #[serde(default)]
    pub description: String,
    pub server_address: Ipv4Addr,
    pub http_port: Option<u16>,
    /// Empty for a site reached only through relays of another site's interface.
    #[serde(default)]
    pub listen: Vec<Spanned<ListenWire>>,
    #[serde(default)]
    pub dhcp: DhcpWire,
    #[serde(default)]
    pub pxe: PxeWire,
    #[serde(default)]
    pub subnets: Vec<Spanned<SubnetWire>>,
    #[serde(default)]
    pub hosts: Vec<Spanned<HostWire>>,
    #[serde(default)]
    pub vars: toml::Table,
    /// DHCP failover with a partner (ISC's `failover peer` block).
    pub failover: Option<Spanned<FailoverWire>>,
    pub discovery: Option<Spanned<DiscoveryWire>>,
    /// The site's DNS server that takes provd's RFC 2136 updates (`dns`).
    pub dns: Option<Spanned<DnsWire>>,
    /// Statically addressed networks by role (`management`, `migration`, `storage`): the
    /// pools provd's IPAM gives hosts their addresses on those bridges from.
    #[serde(default)]
    pub networks: BTreeMap<String, Spanned<NetworkWire>>,
}

/// `[sites.X.networks.ROLE]`: a role's network at this site and the pool provd assigns from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkWire {
    pub prefix: Spanned<String>,
    pub pool: Spanned<PoolWire>,
    pub gateway: Option<Spanned<Ipv4Addr>>,
}

/// `[sites.X.dns]`: where provd keeps the site's host names current (RFC 2136, TSIG).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsWire {
    /// The primary server for the zones, `address` or `address:port` (53).
    pub server: Spanned<String>,
    /// The forward zone (default: the site's domain).
    pub zone: Option<Spanned<String>>,
    /// Reverse zones provd keeps PTR records in (`10.in-addr.arpa`, ...).
    #[serde(default)]
    pub reverse_zones: Vec<Spanned<String>>,
    /// The TSIG key, as `tsig-keygen` writes it (a secret: never under the assets).
    pub key_file: Spanned<String>,
    pub ttl: Option<u32>,
}

/// Mirrors ISC dhcpd's `failover peer "NAME" { ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverWire {
    /// The relationship name; both partners must use the same one.
    pub name: Spanned<String>,
    pub role: Spanned<String>,
    pub address: Ipv4Addr,
    pub port: Option<u16>,
    pub peer_address: Spanned<Ipv4Addr>,
    pub peer_port: Option<u16>,
    pub max_response_delay: Option<Spanned<u32>>,
    pub max_unacked_updates: Option<Spanned<u32>>,
    /// Primary only: the secondary learns it from the primary's CONNECT.
    pub mclt: Option<Spanned<u32>>,
    /// Primary only: buckets 0..split are the primary's (0..=255).
    pub split: Option<Spanned<u32>>,
    /// Primary only: the hash bucket assignment as 64 hex digits (instead of split).
    pub hba: Option<Spanned<String>>,
    pub load_balance_max_seconds: Option<u16>,
    /// The pools this relationship covers, as "START-END" of the site's pools; default all.
    pub pools: Option<Vec<Spanned<String>>>,
    /// TCP port of the pair's inventory replication (mutual TLS with the site's CA), on
    /// `address` and `peer_address`. Default 6769.
    pub replication_port: Option<u16>,
    /// Speak the failover protocol inside mutual TLS with the pair's replication
    /// certificates (both servers provd; ISC dhcpd has no such thing). Default false.
    pub tls: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenWire {
    pub interface: Spanned<String>,
    pub address: Spanned<Ipv4Addr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpWire {
    pub unknown_clients: Option<UnknownClientsWire>,
    pub offer_hold: Option<u32>,
    pub decline_quarantine: Option<u32>,
    pub authoritative: Option<bool>,
    /// Relay agents trusted to forward requests (addresses or prefixes).
    pub relays: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownClientsWire {
    Boot,
    LeaseOnly,
    Ignore,
    Discover,
}

/// `[sites.X.discovery]`: the image unknown machines boot with `unknown_clients =
/// "discover"`; it posts the machine's hardware facts to provd.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryWire {
    /// Paths under the assets directory.
    pub kernel: String,
    pub initrd: String,
    #[serde(default)]
    pub kernel_args: String,
    /// After posting: "poweroff" (default) or "wait" (stay up, asking again).
    pub then: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PxeWire {
    pub bios: Option<String>,
    pub uefi_x64: Option<String>,
    /// Extra or overriding mappings: option 93 architecture number (as a string key) -> file.
    #[serde(default)]
    pub arch: BTreeMap<String, Spanned<String>>,
    pub ipxe_script_url: Option<String>,
    /// The first stage for x64 UEFI machines that boot with Secure Boot (default
    /// "shimx64.efi", Debian's shim signed by Microsoft's UEFI CA).
    pub secure_boot_x64: Option<String>,
    /// The site's machines enforce Secure Boot unless their host or profile says otherwise;
    /// also unknown machines (discovery), which have neither.
    pub secure_boot: Option<bool>,
    pub answer_pxeclient: Option<bool>,
    /// Prefixes whose machines may read over TFTP without a lease or reservation here
    /// (machines another DHCP server gives addresses to).
    #[serde(default)]
    pub tftp_open: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetWire {
    pub prefix: Spanned<String>,
    #[serde(default)]
    pub pools: Vec<Spanned<PoolWire>>,
    pub router: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time: Option<u32>,
    pub max_lease_time: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolWire {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostWire {
    /// Only in a top-level `[[hosts]]` entry: the site the host belongs to.
    pub site: Option<Spanned<String>>,
    pub mac: Spanned<String>,
    pub hostname: Spanned<String>,
    pub ip: Option<Spanned<Ipv4Addr>>,
    pub profile: Option<Spanned<String>>,
    /// `state = "installed"`: the host is in service (see `model::Host::installed`).
    pub state: Option<HostStateWire>,
    #[serde(default)]
    pub vars: toml::Table,
    /// Free labels for selecting hosts (`provd power ... --tag rack7`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// The host's BMC: `{ driver = "redfish" | "ipmi", address = "...", credentials = "NAME" }`.
    pub bmc: Option<Spanned<BmcWire>>,
    /// This host's own ports of its profile's network (`[profiles.X.network]`), by name:
    /// `ports = [{ name = "uplink0", mac = "..." }]`. The profile says the topology once;
    /// each host says which of its NICs are which (MACs differ per machine).
    pub ports: Option<Spanned<Vec<crate::netmodel::Port>>>,
    /// Overrides the profile's `secure_boot` for this machine.
    pub secure_boot: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcWire {
    pub driver: Spanned<String>,
    /// Redfish: `host[:port]` or `https://host[:port]`; IPMI: `host[:port]` (UDP 623).
    pub address: Spanned<String>,
    /// A name in the `[daemon] bmc_secrets` file.
    pub credentials: Spanned<String>,
    /// Redfish: the SHA-256 of the BMC's certificate (hex, colons allowed): a self-signed
    /// certificate is accepted when it is exactly this one.
    pub fingerprint: Option<Spanned<String>>,
    /// Redfish: a PEM file with the CA that signed the BMC's certificate.
    pub ca_file: Option<String>,
    /// Redfish: accept any certificate (says so in every result). Explicit on purpose.
    #[serde(default)]
    pub insecure: bool,
    /// Redfish: the ComputerSystem to drive (default: the only one the BMC lists).
    pub system: Option<String>,
    /// IPMI: the RMCP+ cipher suite (default 3: HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128).
    pub cipher_suite: Option<u8>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HostStateWire {
    Installed,
}
