//! The validated configuration model. Every value here has passed `validate`: prefixes are
//! network addresses, pools lie inside their subnet and do not overlap, MACs, hostnames and
//! reserved IPs are unique, every host's profile exists.

use crate::mac::MacAddr;
use ipnet::Ipv4Net;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

pub const DEFAULT_STATE_DIR: &str = "/var/lib/provd";
pub const DEFAULT_API_LISTEN: &str = "127.0.0.1:6767";
pub const DEFAULT_HTTP_PORT: u16 = 8080;
pub const DEFAULT_LEASE_TIME: u32 = 3600;
/// RFC 2131 leaves the offer hold time to the server; ISC and Kea hold for tens of seconds.
pub const DEFAULT_OFFER_HOLD: u32 = 30;
/// How long a DECLINEd address stays out of the pool (RFC 2131 §3.1.5: "mark the address as
/// not available"); Kea's default probation period is one day, ISC's is an hour.
pub const DEFAULT_DECLINE_QUARANTINE: u32 = 3600;
pub const DEFAULT_IPXE_SCRIPT_URL: &str = "http://{server}:{port}/boot/{mac}.ipxe";

#[derive(Debug, Clone)]
pub struct Config {
    pub files: Vec<PathBuf>,
    pub daemon: Daemon,
    pub profiles: BTreeMap<String, Profile>,
    pub sites: BTreeMap<String, Site>,
    pub vm: VmProfiles,
    /// `[pki]`: the signing policy for hosts' certificate requests.
    pub pki_sign: SignPolicy,
    /// `[pki] renew_within_days` in seconds: renewal is accepted when a certificate has at
    /// most this long left. None: the last third of its life.
    pub pki_renew_within: Option<i64>,
    /// Every configured host by MAC, name and reserved IP (built once from `sites`).
    pub hosts: super::HostIndex,
}

/// Who decides that a host's CSR is signed. `auto`: provd, when the request carries the
/// host's install token and comes from the address provd leased or reserved for it (the
/// default: an unattended install needs no operator). `approve`: the request waits until an
/// operator runs `provd pki approve HOST` (for boot networks where a lease is not proof
/// enough, e.g. shared with machines nobody vouches for).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SignPolicy {
    #[default]
    Auto,
    Approve,
}

impl SignPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SignPolicy::Auto => "auto",
            SignPolicy::Approve => "approve",
        }
    }
}

/// Disk and NIC profiles for `provd vm init`/`deploy`. "default" always exists: Salt Virt's
/// defaults (one 8 GiB qcow2 virtio system disk; eth0 bridged to br0, virtio) unless the
/// config defines its own "default".
#[derive(Debug, Clone)]
pub struct VmProfiles {
    pub disks: BTreeMap<String, Vec<DiskSpec>>,
    pub nics: BTreeMap<String, Vec<NicWant>>,
    /// How `provd vm deploy --count` spreads a batch (`[vm] placement`, default spread).
    pub placement: Placement,
}

impl VmProfiles {
    /// A named profile of `m` (`kind` says which, for the message), or why not: the
    /// message lists the known ones. The CLI and the admin API both ask through this.
    pub fn named<T: Clone>(m: &BTreeMap<String, T>, name: &str, kind: &str) -> Result<T, String> {
        m.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = m.keys().map(String::as_str).collect();
            format!("no {kind} profile {name:?} (known: {})", known.join(", "))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub name: String,
    pub size_gib: u32,
    /// qcow2 or raw.
    pub format: String,
    /// virtio, scsi, sata or ide.
    pub bus: String,
    pub dir: PathBuf,
}

/// Which network a NIC profile's NIC joins: a bridge by name, or the hypervisor's bridge of
/// a role or on a VLAN, as its profile's network model says (`NicWant::on`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicNetwork {
    Bridge(String),
    Role(crate::netmodel::Role),
    Vlan(u16),
}

/// A NIC as a NIC profile asks for it; `on` makes it a `NicSpec` for one hypervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicWant {
    pub name: String,
    pub network: NicNetwork,
    pub model: String,
    pub mac: Option<MacAddr>,
    pub rom: bool,
}

impl NicWant {
    /// This NIC on the hypervisor `host`, whose network is `net` (None: provd does not know
    /// it: a `--connect` URI, or a host whose profile has no `[profiles.X.network]`).
    pub fn on(&self, net: Option<&crate::netmodel::NetModel>, host: &str) -> Result<NicSpec, String> {
        let bridge = match &self.network {
            NicNetwork::Bridge(b) => b.clone(),
            NicNetwork::Role(role) => net
                .ok_or_else(|| unknown_network(host, &self.name, &format!("the {} network", role.as_str())))?
                .bridge_for(*role)
                .map(|b| b.name.clone())
                .ok_or_else(|| format!("{host} has no {} bridge (NIC {})", role.as_str(), self.name))?,
            NicNetwork::Vlan(id) => {
                let net = net.ok_or_else(|| unknown_network(host, &self.name, &format!("VLAN {id}")))?;
                let devices: Vec<String> = net.vlans.iter().filter(|v| v.id == *id).map(|v| v.device()).collect();
                net.bridges
                    .iter()
                    .find(|b| devices.contains(&b.on))
                    .map(|b| b.name.clone())
                    .ok_or_else(|| format!("{host} has no bridge on VLAN {id} (NIC {})", self.name))?
            }
        };
        Ok(NicSpec {
            name: self.name.clone(),
            bridge,
            model: self.model.clone(),
            mac: self.mac,
            rom: self.rom,
        })
    }
}

fn unknown_network(host: &str, nic: &str, what: &str) -> String {
    format!(
        "NIC {nic} asks for {what}, and provd does not know {host}'s network (only a pool \
         hypervisor whose profile has [profiles.X.network] says it): name a bridge in the NIC profile"
    )
}

/// Every NIC of a profile on one hypervisor, or the first reason it cannot be.
pub fn nics_on(wants: &[NicWant], net: Option<&crate::netmodel::NetModel>, host: &str) -> Result<Vec<NicSpec>, String> {
    wants.iter().map(|w| w.on(net, host)).collect()
}

/// A NIC as libvirt gets it: on a named bridge of the hypervisor it is defined on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    pub name: String,
    pub bridge: String,
    pub model: String,
    pub mac: Option<MacAddr>,
    /// Whether the NIC loads its option ROM (libvirt's default); `rom = false` turns it off.
    pub rom: bool,
}

/// How `provd vm deploy --count` spreads a batch over the hypervisors (`vm::batch`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Spread,
    Pack,
}

pub const DEFAULT_IMAGE_DIR: &str = "/var/lib/libvirt/images";

impl Default for VmProfiles {
    fn default() -> Self {
        let disk = DiskSpec {
            name: "system".into(),
            size_gib: 8,
            format: "qcow2".into(),
            bus: "virtio".into(),
            dir: DEFAULT_IMAGE_DIR.into(),
        };
        // The tenant network: never the boot bridge a hypervisor installs over.
        let nic = NicWant {
            name: "eth0".into(),
            network: NicNetwork::Role(crate::netmodel::Role::Tenant),
            model: "virtio".into(),
            mac: None,
            rom: true,
        };
        VmProfiles {
            disks: [("default".to_string(), vec![disk])].into(),
            nics: [("default".to_string(), vec![nic])].into(),
            placement: Default::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Daemon {
    pub state_dir: PathBuf,
    pub api_listen: SocketAddr,
    /// minijinja templates (iPXE, pxelinux, GRUB, kickstarts). Relative paths are taken
    /// from the directory provd is started in.
    pub templates_dir: PathBuf,
    /// Files served read-only over TFTP and HTTP `/assets` (iPXE binaries, kernels).
    pub assets_dir: PathBuf,
    /// The CA (`provd pki init`); default `<state_dir>/pki`. Never under `assets_dir`.
    pub pki_dir: Option<PathBuf>,
    /// Serve the admin API over HTTPS (certificate from provd's CA; admin client
    /// certificates accepted as credentials). Required for a non-loopback `api_listen`.
    pub api_tls: bool,
    /// DNS names the admin listener's certificate carries (its address always is one).
    pub api_names: Vec<String>,
    /// The region's root CA certificate (`provd region init`): admin client certificates
    /// it issued directly are credentials on this admin API (`api_tls` only), so the region
    /// can follow this site and forward operators' writes to it.
    pub region_ca: Option<PathBuf>,
    /// This site's CA cross-signed by the region's root (`provd region add-site` writes it).
    /// With `region_ca`, hypervisors get the root beside the site's CA and this certificate
    /// after their own, and allow other sites' migration certificates: VMs migrate between
    /// sites over the region's trust.
    pub region_cross_cert: Option<PathBuf>,
    /// The BMC credentials file (`bmc::secrets`), if any host has a BMC.
    pub bmc_secrets: Option<PathBuf>,
    /// Where `provd hosts adopt` writes `hosts-<site>.toml` (None: the config directory).
    /// Its `*.toml` files are read with the config given (`config::load`), so a packaged
    /// daemon whose /etc/provd is read-only to it keeps adopted hosts under its state
    /// directory.
    pub hosts_dir: Option<PathBuf>,
}

impl Daemon {
    pub fn pki_dir(&self, state_dir: &std::path::Path) -> PathBuf {
        self.pki_dir.clone().unwrap_or_else(|| state_dir.join("pki"))
    }
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub os: String,
    pub kernel: Option<String>,
    pub initrd: Option<String>,
    pub kernel_args: String,
    pub kickstart: Option<String>,
    /// The OS image (a name in `<assets_dir>/images/`, `assets::images`) this profile's
    /// installer environment writes to the disk before the kickstart's %post runs in it.
    pub image: Option<String>,
    /// The certificate roles (`CERTIFICATE_ROLES`) provd signs for this profile's hosts.
    pub certificates: Vec<String>,
    pub vars: toml::Table,
    /// The hosts' network (`[profiles.X.network]`), checked by `netmodel::check`; None: one
    /// bridge on the boot NIC, as before.
    pub network: Option<std::sync::Arc<crate::netmodel::NetModel>>,
    /// The hosts boot with UEFI Secure Boot enforced (`secure_boot = true`); None: as
    /// their site says.
    pub secure_boot: Option<bool>,
    /// Which disk an image profile's installer writes (default: the smallest).
    pub disk: super::disk_rule::DiskRule,
    /// The installer may overwrite a disk that already holds a file system (`wipe = true`);
    /// otherwise it refuses, unless an operator forced the reinstall.
    pub wipe: bool,
}

/// The roles a profile may declare in `certificates`: a libvirt TLS server certificate
/// (signed with the install token) and a client certificate for migration between the
/// site's hypervisors (signed only once the pool has verified the host).
pub const CERTIFICATE_ROLES: [&str; 2] = ["server", "client"];

impl Profile {
    /// Does this profile's host get a `role` certificate?
    pub fn signs(&self, role: &str) -> bool {
        self.certificates.iter().any(|r| r == role)
    }
}

#[derive(Debug, Clone)]
pub struct Site {
    pub name: String,
    pub description: String,
    /// The address clients are told about: server identifier fallback, next-server, URLs.
    pub server_address: Ipv4Addr,
    pub http_port: u16,
    pub listen: Vec<Listen>,
    pub dhcp: DhcpPolicy,
    pub pxe: PxePolicy,
    pub subnets: Vec<Subnet>,
    pub hosts: Vec<Host>,
    pub vars: toml::Table,
    pub failover: Option<Failover>,
    /// The discovery image (`unknown_clients = "discover"`).
    pub discovery: Option<Discovery>,
    /// Where the site's host names are kept current (`[sites.X.dns]`).
    pub dns: Option<SiteDns>,
    /// The statically addressed networks, by role: IPAM gives each host whose profile has
    /// a bridge of that role one address from the pool (`[sites.X.networks.ROLE]`).
    pub networks: BTreeMap<crate::netmodel::Role, StaticNetwork>,
}

/// A statically addressed network of a site (management, migration, storage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNetwork {
    pub prefix: Ipv4Net,
    /// What IPAM assigns from (inside `prefix`, outside every DHCP range and reservation).
    pub pool: Pool,
    pub gateway: Option<Ipv4Addr>,
}

/// The DNS server that takes the site's RFC 2136 updates, signed with a TSIG key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteDns {
    pub server: SocketAddr,
    /// The forward zone, absolute without the final dot (`a.example.net`).
    pub zone: String,
    /// Reverse zones (`0.10.in-addr.arpa`); an address in none of them gets no PTR.
    pub reverse_zones: Vec<String>,
    /// A `tsig-keygen` key file; read when the daemon starts.
    pub key_file: PathBuf,
    pub ttl: u32,
}

/// TTL of the records provd writes unless `[sites.X.dns] ttl` says otherwise.
pub const DEFAULT_DNS_TTL: u32 = 300;

/// What an unknown machine boots to report its hardware (`[sites.X.discovery]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub kernel: String,
    pub initrd: String,
    pub kernel_args: String,
    /// Power off after posting the facts (else wait, asking provd again now and then).
    pub poweroff: bool,
}

/// ISC's defaults for a failover peer (dhcpd.conf(5)).
pub const DEFAULT_FAILOVER_PORT: u16 = 647;
pub const DEFAULT_MAX_RESPONSE_DELAY: u32 = 30;
pub const DEFAULT_MAX_UNACKED_UPDATES: u32 = 10;
pub const DEFAULT_MCLT: u32 = 3600;
pub const DEFAULT_LOAD_BALANCE_MAX_SECONDS: u16 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverRole {
    Primary,
    Secondary,
}

/// A failover relationship with one partner (provd or ISC dhcpd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failover {
    pub name: String,
    pub role: FailoverRole,
    pub address: Ipv4Addr,
    pub port: u16,
    pub peer_address: Ipv4Addr,
    pub peer_port: u16,
    pub max_response_delay: u32,
    pub max_unacked_updates: u32,
    /// The primary's; a secondary's is 0 until the primary's CONNECT says.
    pub mclt: u32,
    /// The primary's hash bucket assignment; None on a secondary (learnt from CONNECT).
    pub hba: Option<[u8; 32]>,
    pub load_balance_max_seconds: u16,
    pub pools: Vec<Pool>,
    /// The pair's inventory replication port (both sides), see `replication`.
    pub replication_port: u16,
    /// The failover conversation runs inside mutual TLS with the pair's certificates (two
    /// provds): the partner is authenticated, and bindings it sends count as leases.
    pub tls: bool,
    /// The longest lease (seconds, `max_lease_time`) of the subnets this relationship's
    /// pools lie in: no partner update may promise an expiry beyond now + MCLT + this.
    pub longest_lease: u32,
}

/// The hash bucket assignment of ISC's `split N` (RFC 3074 load balancing, 256 buckets as
/// 32 bytes): bit b of byte b/8 set means bucket b is the primary's; buckets 0..N are.
pub fn hba_from_split(split: u8) -> [u8; 32] {
    let mut hba = [0u8; 32];
    for i in 0..split as usize {
        hba[i / 8] |= 1 << (i % 8);
    }
    hba
}

/// The default `replication_port` of `[sites.X.failover]`.
pub const DEFAULT_REPLICATION_PORT: u16 = 6769;

/// An interface provd answers DHCP on, and the address it answers from (option 54).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub interface: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownClients {
    /// Lease and boot file, like a known host without a profile.
    Boot,
    /// A lease only: no next-server or boot file.
    LeaseOnly,
    /// No answer at all: only hosts listed in the config are served.
    Ignore,
    /// Lease and boot file, and the boot script boots the discovery image, which posts
    /// the machine's hardware facts (`[sites.X.discovery]`).
    Discover,
}

impl UnknownClients {
    /// Whether an unknown machine gets a boot file.
    pub fn boots(self) -> bool {
        matches!(self, UnknownClients::Boot | UnknownClients::Discover)
    }
}

#[derive(Debug, Clone)]
pub struct DhcpPolicy {
    pub unknown_clients: UnknownClients,
    pub offer_hold: u32,
    pub decline_quarantine: u32,
    /// Authoritative servers NAK an INIT-REBOOT for an address they know is wrong for the
    /// client (RFC 2131 §4.3.2); non-authoritative ones stay silent.
    pub authoritative: bool,
    /// Relay agents this site trusts (the source address of a relayed packet must be in
    /// one of these). Empty: relayed requests are dropped (nothing is trusted by default).
    pub relays: Vec<Ipv4Net>,
}

#[derive(Debug, Clone)]
pub struct PxePolicy {
    /// Option 93 architecture number -> boot file (or an http:// URL for UEFI HTTP boot).
    pub arch_files: BTreeMap<u16, String>,
    /// URL template handed to iPXE: `{server}`, `{port}`, `{mac}` (hyphenated), `{site}`.
    pub ipxe_script_url: String,
    /// The first stage for x64 UEFI machines that enforce Secure Boot: a signed shim (TFTP
    /// name), which loads the signed GRUB beside it (`grubx64.efi`), which reads its
    /// per-host config (`grub/grub.cfg`, rendered by the boot policy).
    pub secure_boot_x64: String,
    /// Machines enforce Secure Boot unless their host or profile says otherwise, and
    /// unknown machines do (`[sites.X.pxe] secure_boot = true`).
    pub secure_boot: bool,
    /// Put vendor class "PXEClient" (option 60) in answers to PXE firmware. Off by default:
    /// EDK2/OVMF treat a PXEClient offer without PXE boot-item options as a BINL offer and
    /// ask port 4011 for the boot file (PXE-E16 when nothing answers there); a plain offer
    /// with a boot file is what ISC dhcpd and dnsmasq send and every firmware accepts.
    pub answer_pxeclient: bool,
    /// TFTP reads are answered for addresses that hold a lease or a reservation of this
    /// provd, and for these prefixes (`tftp_open`); others are refused. A spoofed source
    /// then costs the spoofer a lease, and cannot aim transfers at arbitrary addresses.
    pub tftp_open: Vec<Ipv4Net>,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub prefix: Ipv4Net,
    pub pools: Vec<Pool>,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub lease_time: u32,
    pub max_lease_time: u32,
}

/// An inclusive address range inside a subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

impl Pool {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }
    pub fn overlaps(&self, other: &Pool) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub mac: MacAddr,
    pub hostname: String,
    pub ip: Option<Ipv4Addr>,
    pub profile: Option<String>,
    pub vars: toml::Table,
    /// `state = "installed"`: the host is already in service. A server that has no record
    /// of it (new, or its state directory lost) starts it as installed, booting from its
    /// disk, instead of offering an install.
    pub installed: bool,
    pub tags: Vec<String>,
    pub bmc: Option<Bmc>,
    /// This host's network: its profile's model (shared, not copied), or a model of its own
    /// when it names its `ports` (their MACs); None when its profile has none.
    pub network: Option<std::sync::Arc<crate::netmodel::NetModel>>,
    /// The machine boots with UEFI Secure Boot enforced: the host's own `secure_boot`, else
    /// its profile's, else its site's (`[sites.X.pxe] secure_boot`). Its DHCP answer names the signed chain (shim, GRUB), which firmware
    /// that enforces Secure Boot accepts, never iPXE, which it refuses.
    pub secure_boot: bool,
}

/// How provd reaches a host's BMC. The credentials are a name: the secret itself lives in
/// the `[daemon] bmc_secrets` file, never in a site config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmc {
    pub driver: BmcDriver,
    pub address: String,
    pub credentials: String,
    pub tls: BmcTls,
    pub system: Option<String>,
    /// IPMI's RMCP+ cipher suite.
    pub cipher_suite: u8,
}

/// IPMI cipher suite 3 (HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128): what every IPMI 2.0 BMC
/// offers. Naming it also spares ipmitool's cipher-suite query, which costs 10 s against
/// BMCs that do not answer it.
pub const DEFAULT_IPMI_CIPHER_SUITE: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BmcDriver {
    Redfish,
    Ipmi,
}

impl BmcDriver {
    pub fn as_str(self) -> &'static str {
        match self {
            BmcDriver::Redfish => "redfish",
            BmcDriver::Ipmi => "ipmi",
        }
    }
}

/// Which certificate a Redfish BMC may present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BmcTls {
    /// Signed by a CA the web PKI trusts.
    WebPki,
    /// Signed by the CA in this PEM file.
    CaFile(PathBuf),
    /// Exactly this certificate (SHA-256 of its DER).
    Pinned([u8; 32]),
    /// Any certificate (`insecure = true`).
    Insecure,
}

/// Option 93 values from RFC 4578 §2.1 and the IANA registry that firmware sends in practice.
pub mod arch {
    pub const BIOS_X86: u16 = 0;
    pub const EFI_IA32: u16 = 6;
    pub const EFI_BC: u16 = 7;
    pub const EFI_X64: u16 = 9;
    pub const EFI_ARM64: u16 = 11;
    pub const EFI_X64_HTTP: u16 = 16;
}

impl Site {
    /// May a relayed request that arrived from `source` be served? Trust comes from the
    /// config (`[sites.X.dhcp] relays`), never from what the packet says (its giaddr).
    pub fn trusts_relay(&self, source: Ipv4Addr) -> bool {
        self.dhcp.relays.iter().any(|r| r.contains(&source))
    }

    /// Subnets no listen interface of this site is on: reachable only through a relay.
    pub fn relayed_subnets(&self) -> impl Iterator<Item = &Subnet> {
        self.subnets
            .iter()
            .filter(|n| !self.listen.iter().any(|l| n.prefix.contains(&l.address)))
    }

    /// Where this site's boot HTTP listener is reached: the base of every URL a booting
    /// machine, an installer or a deployed VM is given.
    pub fn boot_base_url(&self) -> String {
        format!("http://{}:{}", self.server_address, self.http_port)
    }

    /// The DNS domain of the site (the first subnet that names one).
    pub fn domain(&self) -> Option<&str> {
        self.subnets.iter().find_map(|s| s.domain.as_deref())
    }

    /// A host's fully qualified name: its hostname, qualified with the site's domain unless
    /// it already has dots.
    pub fn fqdn(&self, hostname: &str) -> String {
        match self.domain() {
            Some(d) if !hostname.contains('.') => format!("{hostname}.{d}"),
            _ => hostname.to_string(),
        }
    }
}

/// Why a process cannot serve the sites it was asked to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SiteSelectionError {
    #[error("no site named {name:?} (known: {})", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
    #[error("sites {first} and {second} both listen on {interface}; serve one of them with --site NAME")]
    SharedInterface {
        first: String,
        second: String,
        interface: String,
    },
    #[error("none of the selected sites has a listen interface: nothing to serve")]
    NothingToServe,
}

impl Config {
    /// The network model of host `hostname` at `site`, as its profile gives it.
    pub fn host_network(&self, site: &str, hostname: &str) -> Option<&crate::netmodel::NetModel> {
        let host = self.sites.get(site)?.hosts.iter().find(|h| h.hostname == hostname)?;
        host.network.as_deref()
    }

    /// What `provd check` and `provd serve` should point out about a valid config: choices
    /// whose consequences a reader might not expect.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        for s in self.sites.values() {
            let relayed: Vec<String> = s.relayed_subnets().map(|n| n.prefix.to_string()).collect();
            if !relayed.is_empty() && s.dhcp.relays.is_empty() {
                notes.push(format!(
                    "site {}: {} reached only through a relay, and no relay is trusted: relayed \
                     requests are dropped until [sites.{}.dhcp] relays lists the relays' addresses \
                     (provd trusts relays by configuration, never by a packet's giaddr)",
                    s.name,
                    relayed.join(", "),
                    s.name
                ));
            }
        }
        notes
    }

    /// The configured host with this MAC and its site.
    pub fn host(&self, mac: MacAddr) -> Option<(&Site, &Host)> {
        let e = self.hosts.by_mac(mac)?;
        Some((self.sites.get(&e.site)?, &e.host))
    }

    /// The configured host named `name` (hostname or MAC) and its site.
    pub fn find_host(&self, name: &str) -> Option<(&Site, &Host)> {
        let e = self.hosts.find(name)?;
        Some((self.sites.get(&e.site)?, &e.host))
    }

    /// The sites this process serves: the named ones, or every site when none is named.
    /// One process cannot serve two sites on the same interface: say which to pick.
    pub fn select_sites(&self, names: &[String]) -> Result<Vec<&Site>, SiteSelectionError> {
        let sites: Vec<&Site> = if names.is_empty() {
            self.sites.values().collect()
        } else {
            names
                .iter()
                .map(|n| {
                    self.sites.get(n).ok_or_else(|| SiteSelectionError::Unknown {
                        name: n.clone(),
                        known: self.sites.keys().cloned().collect(),
                    })
                })
                .collect::<Result<_, _>>()?
        };
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for s in &sites {
            for l in &s.listen {
                if let Some(other) = owner.insert(&l.interface, &s.name) {
                    return Err(SiteSelectionError::SharedInterface {
                        first: other.to_string(),
                        second: s.name.clone(),
                        interface: l.interface.clone(),
                    });
                }
            }
        }
        if sites.iter().all(|s| s.listen.is_empty()) {
            return Err(SiteSelectionError::NothingToServe);
        }
        Ok(sites)
    }
}

#[cfg(test)]
mod nic_tests {
    use super::*;
    use crate::netmodel::{NetModel, Role};

    fn want(network: NicNetwork) -> NicWant {
        NicWant {
            name: "eth0".into(),
            network,
            model: "virtio".into(),
            mac: None,
            rom: false,
        }
    }

    fn bonded() -> NetModel {
        toml::from_str(
            r#"
ports = [{ name = "p0" }, { name = "p1" }]
bonds = [{ name = "bond0", members = ["p0", "p1"], mode = "active-backup" }]
vlans = [{ id = 100, on = "bond0" }, { id = 30, on = "bond0" }]
bridges = [
  { name = "br-boot", on = "bond0", role = "boot" },
  { name = "br-t100", on = "bond0.100", role = "tenant" },
]
"#,
        )
        .unwrap()
    }

    #[test]
    fn a_nic_by_role_or_vlan_lands_on_that_hypervisors_bridge_or_says_why_not() {
        let net = bonded();
        let on = |w: NicNetwork, net: Option<&NetModel>| want(w).on(net, "hv1");
        assert_eq!(
            on(NicNetwork::Role(Role::Tenant), Some(&net)).unwrap().bridge,
            "br-t100"
        );
        assert_eq!(on(NicNetwork::Vlan(100), Some(&net)).unwrap().bridge, "br-t100");
        assert!(
            !on(NicNetwork::Role(Role::Tenant), Some(&net)).unwrap().rom,
            "rom carried over"
        );
        assert_eq!(on(NicNetwork::Bridge("br9".into()), None).unwrap().bridge, "br9");
        let e = on(NicNetwork::Role(Role::Storage), Some(&net)).unwrap_err();
        assert!(e.contains("hv1 has no storage bridge"), "{e}");
        let e = on(NicNetwork::Vlan(30), Some(&net)).unwrap_err();
        assert!(
            e.contains("hv1 has no bridge on VLAN 30"),
            "a VLAN without a bridge: {e}"
        );
        let e = on(NicNetwork::Role(Role::Tenant), None).unwrap_err();
        assert!(e.contains("does not know hv1's network"), "{e}");
        // The built-in default never picks the boot bridge.
        let default = &VmProfiles::default().nics["default"];
        assert_eq!(nics_on(default, Some(&net), "hv1").unwrap()[0].bridge, "br-t100");
        assert!(nics_on(default, None, "hv1").is_err());
    }
}
