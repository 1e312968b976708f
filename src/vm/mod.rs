//! VM lifecycle on libvirt, through libvirt's own Rust binding (the `virt` crate).
//!
//! This is the foundation of `provd vm`: a connection to any libvirt URI (`qemu:///system`,
//! `qemu+tls://host/system` with `?pkipath=` from `provd pki issue-client`, or the in-memory
//! `test:///default`), and the read and power operations: list, info, host-info, start,
//! stop (ACPI shutdown), destroy (power off), undefine; `lifecycle` adds autostart,
//! pause/resume, reboot/reset and a shutdown that waits. Profiles, sysprep, clones,
//! deployment with placement, migration and consoles build on it (issue 6).
//!
//! Every call blocks on libvirt: the CLI calls it directly (it has no runtime); async code
//! must call it from `spawn_blocking`. Errors name the URI and the domain and carry
//! libvirt's own message.

pub mod action;
pub mod batch;
pub mod batch_deploy;
mod blockjob;
pub mod clone;
pub mod clone_xml;
pub mod deploy;
pub mod hotplug;
pub mod lifecycle;
pub mod metadata;
pub mod migrate;
pub mod placement;
pub mod push;
pub mod snapshot;
mod snapshot_external;
pub mod storage;
pub mod sysprep;
pub mod version;
pub mod xml;

use crate::config::{DiskSpec, NicSpec};
use crate::mac::MacAddr;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use virt::connect::Connect;
use virt::domain::Domain;
use xml::{AttachedDisk, DomainSpec};

pub const DEFAULT_URI: &str = "qemu:///system";

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot connect to {uri}: {message}")]
    Connect { uri: String, message: String },
    #[error("no domain named {name:?} on {uri}")]
    NoDomain { uri: String, name: String },
    #[error("{what} {name:?} on {uri}: {message}")]
    Libvirt {
        what: &'static str,
        name: String,
        uri: String,
        message: String,
    },
    #[error(
        "{name:?} did not shut down within {waited} s (it is still running, still asked to); \
         `--force` powers it off after the wait, `provd vm destroy` at once"
    )]
    ShutdownTimedOut { name: String, waited: u64 },
    #[error("{name:?} has no free disk name left on bus {bus}")]
    NoFreeDiskName { name: String, bus: String },
    #[error("{name:?} has no device {device}")]
    NoDevice { name: String, device: String },
    #[error(
        "{name:?}: the guest did not release {device} within {waited} s (it is detached from the \
         definition; the guest may still release it, or the next restart removes it)"
    )]
    NotReleased { name: String, device: String, waited: u64 },
    #[error("{name:?}: {asked} {what} is out of range (1 to {max}): {how}")]
    OutOfRange {
        name: String,
        what: &'static str,
        asked: u64,
        max: u64,
        how: &'static str,
    },
    #[error("{name:?} has no snapshot named {snapshot:?}")]
    NoSnapshot { name: String, snapshot: String },
    #[error("{name:?} already has a snapshot named {snapshot:?}")]
    SnapshotExists { name: String, snapshot: String },
    #[error("snapshot name {name:?}: use letters, digits, '-', '_' and '.' (at most 64, not starting with '-')")]
    BadSnapshotName { name: String },
    #[error("snapshotting {name:?} refused: {why}")]
    SnapshotRefused { name: String, why: &'static str },
    #[error("reverting {name:?} to {snapshot:?} refused: {why}")]
    RevertRefused {
        name: String,
        snapshot: String,
        why: String,
    },
    #[error("{name:?} is {state}; {what} needs it {needs}")]
    WrongState {
        name: String,
        state: String,
        what: &'static str,
        needs: &'static str,
    },
    #[error("a domain named {name:?} already exists on {uri}")]
    Exists { name: String, uri: String },
    #[error("{action} of {name:?} needs {what}")]
    MissingArgument {
        name: String,
        action: &'static str,
        what: &'static str,
    },
    #[error("migrating {name:?}: no destination was given")]
    NoDestination { name: String },
    #[error("{name:?} is not a template (run `provd vm sysprep {name}` first)")]
    NotATemplate { name: String },
    #[error(
        "{name:?} is version {number} of template {family:?} and is frozen: {what} would change what its clones were made from (clone it, or change {family:?} and version it again)"
    )]
    Frozen {
        name: String,
        family: String,
        number: u32,
        what: &'static str,
    },
    #[error(
        "{name:?} is version {number} of template {family:?} and clones of it run ({}): stop or purge them first",
        running.join(", ")
    )]
    VersionInUse {
        name: String,
        family: String,
        number: u32,
        running: Vec<String>,
    },
    #[error("{name:?} is the template of linked clones ({}); {what} would corrupt them: purge or full-clone them first", clones.join(", "))]
    Protected {
        name: String,
        what: &'static str,
        clones: Vec<String>,
    },
    #[error("{tool} on {name:?}: {message}")]
    Tool {
        tool: &'static str,
        name: String,
        message: String,
    },
    #[error("disk {path}: {message}")]
    Disk { path: PathBuf, message: String },
    #[error("disk {disk}: {source}")]
    Storage {
        disk: PathBuf,
        source: storage::StorageError,
    },
    #[error("{name:?}'s definition: {source}")]
    Definition {
        name: String,
        source: clone_xml::CloneXmlError,
    },
    #[error("{path}: the copy's SHA-256 {copy} ({copy_bytes} bytes) is not the source's {sum} ({bytes} bytes)")]
    CopyMismatch {
        path: PathBuf,
        copy: String,
        copy_bytes: u64,
        sum: String,
        bytes: u64,
    },
    #[error("pushing {template:?} to {uri}: {source}")]
    Push {
        template: String,
        uri: String,
        source: Box<VmError>,
    },
    #[error("{name:?} is undefined, but its disk could not be removed: {source}")]
    DiskLeftBehind {
        name: String,
        source: storage::StorageError,
    },
}

impl VmError {
    /// A storage failure while making or reading the disk `disk` (which the error names,
    /// whichever volume libvirt complained about).
    pub(crate) fn on_disk(disk: &Path) -> impl Fn(storage::StorageError) -> VmError + '_ {
        move |source| VmError::Storage {
            disk: disk.to_path_buf(),
            source,
        }
    }
}

/// What `provd vm init` asks for.
pub struct InitRequest<'a> {
    pub name: &'a str,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Copied (converted) into the first disk, which is then grown to its profile size.
    pub image: Option<&'a Path>,
    pub disks: &'a [DiskSpec],
    pub nics: &'a [NicSpec],
    pub vnc: bool,
    pub start: bool,
    /// Override the libvirt domain type ("kvm", or "qemu" where KVM is not usable).
    pub domain_type: Option<&'a str>,
}

/// Run qemu-img about `path`; its standard output, or its complaint as the error.
fn qemu_img(args: &[&str], path: &Path) -> Result<Vec<u8>, VmError> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .map_err(|e| VmError::Disk {
            path: path.into(),
            message: format!("qemu-img: {e}"),
        })?;
    if !out.status.success() {
        return Err(VmError::Disk {
            path: path.into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

/// Whether `uri` names a hypervisor on another machine (a host after the scheme):
/// `qemu+tls://hv01/system` does; `qemu:///system` and `test:///default` do not.
pub(crate) fn is_remote_uri(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| !rest.is_empty() && !rest.starts_with('/'))
}

/// Where `init` puts a disk of a disk profile: `<dir>/<vm>_<disk>.<img|qcow2>`.
fn disk_path(vm: &str, spec: &DiskSpec) -> PathBuf {
    spec.dir.join(format!(
        "{vm}_{}.{}",
        spec.name,
        if spec.format == "raw" { "img" } else { "qcow2" }
    ))
}

/// A local image's virtual size in bytes (qemu-img info).
fn virtual_size(path: &Path) -> Result<u64, VmError> {
    let json = qemu_img(&["info", "--output=json", &path.display().to_string()], path)?;
    let info: serde_json::Value = serde_json::from_slice(&json).unwrap_or_default();
    info["virtual-size"].as_u64().ok_or_else(|| VmError::Disk {
        path: path.into(),
        message: "qemu-img info reported no virtual size".into(),
    })
}

/// A locally administered MAC in QEMU's 52:54:00 range, random in its last three bytes.
pub(crate) fn random_mac() -> MacAddr {
    let mut b = [0u8; 3];
    crate::random::fill(&mut b);
    MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
}

/// Removes the files it holds unless emptied: a failed init leaves no disk behind.
struct CreatedDisks(Vec<PathBuf>);
impl Drop for CreatedDisks {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// One domain as `provd vm list` shows it (and the admin API answers it).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DomainSummary {
    pub name: String,
    pub uuid: String,
    pub state: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// For a clone, the template it came from; for a template version, the template it is
    /// a version of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// That template's version (a clone of an unversioned template has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version: Option<u32>,
}

/// What `provd vm host-info` shows, and what placement will compare.
#[derive(Debug, Clone, Serialize)]
pub struct HostInfo {
    pub uri: String,
    pub hostname: String,
    pub cpu_model: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub free_memory_mib: u64,
    pub domains: usize,
}

pub struct Hypervisor {
    pub(crate) conn: Connect,
    pub(crate) uri: String,
}

pub(crate) fn state_name(d: &Domain) -> String {
    match d.state() {
        Ok((s, _)) => s.to_string().to_lowercase(),
        Err(_) => "unknown".into(),
    }
}

impl Hypervisor {
    pub fn connect(uri: &str) -> Result<Hypervisor, VmError> {
        // libvirt prints every error to stderr by default, even expected ones (a lookup that
        // finds no domain); provd reports errors itself.
        virt::error::clear_error_callback();
        let conn = Connect::open(Some(uri)).map_err(|e| VmError::Connect {
            uri: uri.to_string(),
            message: e.to_string(),
        })?;
        Ok(Hypervisor {
            conn,
            uri: uri.to_string(),
        })
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    pub(crate) fn err(&self, what: &'static str, name: &str) -> impl FnOnce(virt::error::Error) -> VmError + '_ {
        let name = name.to_string();
        move |e| VmError::Libvirt {
            what,
            name,
            uri: self.uri.clone(),
            message: e.to_string(),
        }
    }

    pub(crate) fn domain(&self, name: &str) -> Result<Domain, VmError> {
        self.conn.lookup_domain_by_name(name).map_err(|_| VmError::NoDomain {
            uri: self.uri.clone(),
            name: name.to_string(),
        })
    }

    pub(crate) fn summary(&self, d: &Domain) -> Result<DomainSummary, VmError> {
        let name = d.name().map_err(self.err("reading", "?"))?;
        let info = d.info().map_err(self.err("reading", &name))?;
        // Where it came from: a clone's template, or the template a version belongs to.
        let meta = self.meta(d);
        let (template, version) = match (meta.clone_of, meta.template) {
            (Some(c), _) => (
                Some(c.version.as_ref().map_or(c.template_name, |v| v.family.clone())),
                c.version,
            ),
            (None, Some(t)) => (t.version.as_ref().map(|v| v.family.clone()), t.version),
            (None, None) => (None, None),
        };
        Ok(DomainSummary {
            uuid: d.uuid_string().map_err(self.err("reading", &name))?,
            state: state_name(d),
            vcpus: info.nr_virt_cpu,
            memory_mib: info.max_mem / 1024,
            name,
            template,
            template_version: version.map(|v| v.number),
        })
    }

    /// Every domain, running or not, by name.
    pub fn list(&self) -> Result<Vec<DomainSummary>, VmError> {
        let domains = self.conn.list_all_domains(0).map_err(self.err("listing", "domains"))?;
        let mut v = domains.iter().map(|d| self.summary(d)).collect::<Result<Vec<_>, _>>()?;
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    pub fn info(&self, name: &str) -> Result<DomainSummary, VmError> {
        self.summary(&self.domain(name)?)
    }

    /// The domain's libvirt XML (what `virsh dumpxml` prints).
    pub fn xml(&self, name: &str) -> Result<String, VmError> {
        self.domain(name)?.xml_desc(0).map_err(self.err("reading", name))
    }

    pub fn host_info(&self) -> Result<HostInfo, VmError> {
        let node = self.conn.node_info().map_err(self.err("reading", "host"))?;
        Ok(HostInfo {
            uri: self.uri.clone(),
            hostname: self.conn.hostname().unwrap_or_default(),
            cpu_model: node.model,
            cpus: node.cpus,
            memory_mib: node.memory / 1024,
            free_memory_mib: self.conn.free_memory().map(|b| b / 1024 / 1024).unwrap_or(0),
            domains: self.conn.list_all_domains(0).map(|d| d.len()).unwrap_or(0),
        })
    }

    /// The names of the host's active storage pools.
    pub fn storage_pool_names(&self) -> Result<Vec<String>, VmError> {
        let pools = self
            .conn
            .list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
            .map_err(self.err("listing", "storage pools"))?;
        let mut names: Vec<String> = pools.iter().filter_map(|p| p.name().ok()).collect();
        names.sort();
        Ok(names)
    }

    pub(crate) fn is_active(&self, d: &Domain, name: &str) -> Result<bool, VmError> {
        d.is_active().map_err(self.err("reading", name))
    }

    /// Refuse `what` unless the domain is running (`running`) or not (`!running`), naming
    /// the state it is in and the one `what` needs.
    pub(crate) fn require_running(
        &self,
        d: &Domain,
        name: &str,
        running: bool,
        what: &'static str,
        needs: &'static str,
    ) -> Result<(), VmError> {
        if self.is_active(d, name)? == running {
            return Ok(());
        }
        Err(VmError::WrongState {
            name: name.into(),
            state: state_name(d),
            what,
            needs,
        })
    }

    pub fn start(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        self.require_running(&d, name, false, "start", "shut off")?;
        // Frozen first: it is the reason that stays when the clones are gone.
        self.refuse_if_frozen(name, "starting it")?;
        self.refuse_if_backing(name, "starting it")?;
        d.create().map_err(self.err("starting", name))
    }

    /// ACPI shutdown: asks the guest; it may take its time (or ignore it: then `destroy`).
    pub fn stop(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        self.require_running(&d, name, true, "stop", "running")?;
        d.shutdown().map_err(self.err("stopping", name))
    }

    /// Power off at once, like pulling the plug.
    pub fn destroy(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        self.require_running(&d, name, true, "destroy", "running")?;
        d.destroy().map_err(self.err("destroying", name))
    }

    /// Create the disks of a disk profile, define the domain, optionally start it. All or
    /// nothing up to the definition: a failure removes the disks this call created, and an
    /// existing file is never overwritten. On a remote hypervisor the disks are made through
    /// its libvirt (`init_remote`).
    pub fn init(&self, r: &InitRequest) -> Result<DomainSummary, VmError> {
        if self.conn.lookup_domain_by_name(r.name).is_ok() {
            return Err(VmError::Exists {
                name: r.name.into(),
                uri: self.uri.clone(),
            });
        }
        let domain_type = match r.domain_type {
            Some(t) => t.to_string(),
            None if self
                .conn
                .driver_type()
                .map(|t| t.eq_ignore_ascii_case("test"))
                .unwrap_or(false) =>
            {
                "test".into()
            }
            None => "kvm".into(),
        };
        if is_remote_uri(&self.uri) {
            return self.init_remote(r, domain_type);
        }
        let mut created = CreatedDisks(Vec::new());
        let mut disks = Vec::new();
        for (i, spec) in r.disks.iter().enumerate() {
            let path = disk_path(r.name, spec);
            if path.exists() {
                return Err(VmError::Disk {
                    path,
                    message: "already exists; refusing to overwrite it".into(),
                });
            }
            let size = format!("{}G", spec.size_gib);
            let p = path.display().to_string();
            match (i, r.image) {
                (0, Some(image)) => {
                    qemu_img(
                        &["convert", "-O", &spec.format, &image.display().to_string(), &p],
                        &path,
                    )?;
                    created.0.push(path.clone());
                    // Grow to the profile size; an image already larger keeps its size.
                    let _ = qemu_img(&["resize", "-f", &spec.format, &p, &size], &path);
                }
                _ => {
                    qemu_img(&["create", "-q", "-f", &spec.format, &p, &size], &path)?;
                    created.0.push(path.clone());
                }
            }
            disks.push(AttachedDisk {
                spec: spec.clone(),
                path,
            });
        }
        let d = self.define_new(r, domain_type, disks)?;
        created.0.clear(); // defined: the disks now belong to the domain
        self.start_new(r, d)
    }

    /// `init` on a hypervisor on another machine: the disks are made by that hypervisor's
    /// libvirt (storage API), the image converted here and streamed to it. Never overwrites
    /// a volume; a failure deletes the volumes this call made.
    fn init_remote(&self, r: &InitRequest, domain_type: String) -> Result<DomainSummary, VmError> {
        let disk_err = |path: &Path, message: String| VmError::Disk {
            path: path.into(),
            message,
        };
        let mut vols = storage::Volumes::new(&self.conn);
        let mut made: Vec<PathBuf> = Vec::new();
        let mut local_tmp = CreatedDisks(Vec::new());
        let result = (|| -> Result<Vec<AttachedDisk>, VmError> {
            let mut disks = Vec::new();
            for (i, spec) in r.disks.iter().enumerate() {
                let path = disk_path(r.name, spec);
                if vols.exists(&path) {
                    return Err(disk_err(
                        &path,
                        format!("already exists on {}; refusing to overwrite it", self.uri),
                    ));
                }
                let size = u64::from(spec.size_gib) << 30;
                match (i, r.image) {
                    (0, Some(image)) => {
                        // Converted and grown here, in the profile's format, then streamed.
                        let tmp = std::env::temp_dir().join(format!(
                            ".provd-init-{}-{}",
                            std::process::id(),
                            storage::file_name(&path)
                        ));
                        local_tmp.0.push(tmp.clone());
                        let t = tmp.display().to_string();
                        qemu_img(&["convert", "-O", &spec.format, &image.display().to_string(), &t], &tmp)?;
                        let _ = qemu_img(
                            &["resize", "-f", &spec.format, &t, &format!("{}G", spec.size_gib)],
                            &tmp,
                        );
                        let capacity = virtual_size(&tmp)?.max(size);
                        vols.upload_file(&path, &spec.format, capacity, &tmp)
                            .map_err(VmError::on_disk(&path))?;
                    }
                    _ => {
                        vols.create_empty(&path, &spec.format, size)
                            .map_err(VmError::on_disk(&path))?;
                    }
                }
                made.push(path.clone());
                disks.push(AttachedDisk {
                    spec: spec.clone(),
                    path,
                });
            }
            Ok(disks)
        })();
        let defined = result.and_then(|disks| self.define_new(r, domain_type, disks));
        match defined {
            Ok(d) => self.start_new(r, d),
            Err(e) => {
                for p in &made {
                    let _ = vols.delete(p);
                }
                Err(e)
            }
        }
    }

    /// Define a new domain from `init`'s request and its attached disks.
    fn define_new(&self, r: &InitRequest, domain_type: String, disks: Vec<AttachedDisk>) -> Result<Domain, VmError> {
        let nics = r
            .nics
            .iter()
            .map(|n| (n.clone(), n.mac.unwrap_or_else(random_mac)))
            .collect();
        let spec = DomainSpec {
            name: r.name.into(),
            domain_type,
            vcpus: r.vcpus,
            memory_mib: r.memory_mib,
            disks,
            nics,
            vnc: r.vnc,
        };
        self.conn
            .define_domain_xml(&xml::domain_xml(&spec))
            .map_err(self.err("defining", r.name))
    }

    fn start_new(&self, r: &InitRequest, d: Domain) -> Result<DomainSummary, VmError> {
        if r.start {
            d.create().map_err(self.err("starting (it is defined)", r.name))?;
        }
        self.summary(&d)
    }

    /// Undefine a domain and delete its own disk files (`xml::owned_disk_files`). A running
    /// domain is refused unless `force`, which powers it off first. Returns the files removed.
    pub fn purge(&self, name: &str, force: bool) -> Result<Vec<PathBuf>, VmError> {
        let d = self.domain(name)?;
        if self.is_active(&d, name)? {
            if !force {
                return Err(VmError::WrongState {
                    name: name.into(),
                    state: state_name(&d),
                    what: "purge (without --force)",
                    needs: "shut off",
                });
            }
            d.destroy().map_err(self.err("destroying", name))?;
        }
        self.refuse_if_backing(name, "purging it")?;
        self.refuse_if_version_in_use(name)?;
        // The overlays of its external snapshots too, down to its own disk.
        let mut files = self.own_files(&d, name)?;
        files.extend(xml::nvram_file(&d.xml_desc(0).map_err(self.err("reading", name))?));
        // The NVRAM file is the domain's own too: libvirt removes it with this flag.
        // Internal snapshots live inside the qcow2 files removed below, external ones in
        // the overlays among them: their metadata goes too.
        d.undefine_flags(
            virt::sys::VIR_DOMAIN_UNDEFINE_NVRAM
                | virt::sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | virt::sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
        )
        .or_else(|_| d.undefine())
        .map_err(self.err("undefining", name))?;
        // Through libvirt's storage API where it knows the file (works on remote hosts);
        // a file no pool can see (the test driver's view of local files) is removed here.
        let mut vols = storage::Volumes::new(&self.conn);
        let mut removed = Vec::new();
        for f in files {
            if vols.exists(&f) {
                vols.delete(&f).map_err(|source| VmError::DiskLeftBehind {
                    name: name.to_string(),
                    source,
                })?;
                removed.push(f);
                continue;
            }
            match std::fs::remove_file(&f) {
                Ok(()) => removed.push(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VmError::Disk {
                        path: f,
                        message: format!("undefined, but the disk could not be removed: {e}"),
                    });
                }
            }
        }
        Ok(removed)
    }

    /// The console address: (kind, "host:port"). VNC has no authentication.
    pub fn console(&self, name: &str) -> Result<(String, String), VmError> {
        let d = self.domain(name)?;
        let x = d.xml_desc(0).map_err(self.err("reading", name))?;
        let Some((kind, listen, port)) = xml::graphics(&x) else {
            return Err(VmError::Libvirt {
                what: "console of",
                name: name.into(),
                uri: self.uri.clone(),
                message: "it has no graphics device (create it with --vnc)".into(),
            });
        };
        let Some(port) = port else {
            return Err(VmError::WrongState {
                name: name.into(),
                state: state_name(&d),
                what: "a console port",
                needs: "running",
            });
        };
        Ok((kind, format!("{listen}:{port}")))
    }

    /// Remove the definition (disks stay). Refuses a running domain: stop or destroy it first.
    pub fn undefine(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        self.require_running(&d, name, false, "undefine", "shut off")?;
        self.refuse_if_backing(name, "undefining it")?;
        self.refuse_if_version_in_use(name)?;
        // Keep a UEFI domain's NVRAM (its disks stay too); plain undefine refuses one.
        d.undefine_flags(virt::sys::VIR_DOMAIN_UNDEFINE_KEEP_NVRAM)
            .or_else(|_| d.undefine())
            .map_err(self.err("undefining", name))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A private in-memory hypervisor (libvirt's test driver) with one running domain, "test".
    /// Not `test:///default`: within one process every connection to it shares one state, so
    /// parallel tests would see each other's domains. A node file opens its own instance.
    pub(crate) fn private_driver() -> (tempfile::TempDir, Hypervisor) {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(
            &node,
            "<node><domain type='test'><name>test</name><memory>524288</memory><vcpu>2</vcpu><os><type>hvm</type></os></domain></node>",
        )
        .unwrap();
        let h = Hypervisor::connect(&format!("test://{}", node.display())).unwrap();
        (dir, h)
    }

    #[test]
    fn power_operations_on_the_test_driver() {
        let (_node, h) = private_driver();
        let list = h.list().unwrap();
        assert_eq!(list.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["test"]);
        assert_eq!(list[0].state, "running");
        assert!(matches!(h.start("test"), Err(VmError::WrongState { .. })));
        assert!(
            matches!(h.undefine("test"), Err(VmError::WrongState { .. })),
            "a running domain is not undefined"
        );
        h.destroy("test").unwrap();
        assert_eq!(h.info("test").unwrap().state, "shutoff");
        assert!(matches!(h.stop("test"), Err(VmError::WrongState { .. })));
        h.start("test").unwrap();
        assert_eq!(h.info("test").unwrap().state, "running");
        h.destroy("test").unwrap();
        h.undefine("test").unwrap();
        assert!(h.list().unwrap().is_empty());
        assert!(matches!(h.info("test"), Err(VmError::NoDomain { .. })));
    }

    #[test]
    fn init_creates_profile_disks_defines_and_starts_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let disk = |name: &str, gib| DiskSpec {
            name: name.into(),
            size_gib: gib,
            format: "qcow2".into(),
            bus: "virtio".into(),
            dir: dir.path().into(),
        };
        let disks = [disk("system", 2), disk("data", 1)];
        let nics = vec![crate::config::NicSpec {
            name: "eth0".into(),
            bridge: "br0".into(),
            model: "virtio".into(),
            mac: None,
            rom: true,
        }];
        let (_node, h) = private_driver();
        let req = |name| InitRequest {
            name,
            vcpus: 2,
            memory_mib: 512,
            image: None,
            disks: &disks,
            nics: &nics,
            vnc: true,
            start: true,
            domain_type: None,
        };
        let d = h.init(&req("web")).unwrap();
        assert_eq!((d.state.as_str(), d.vcpus, d.memory_mib), ("running", 2, 512));
        let xml = h.xml("web").unwrap();
        assert!(
            xml.contains(&format!("{}/web_system.qcow2", dir.path().display())) && xml.contains("bridge='br0'"),
            "{xml}"
        );
        let info = Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(dir.path().join("web_system.qcow2"))
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["virtual-size"], 2u64 << 30);
        assert!(matches!(h.init(&req("web")), Err(VmError::Exists { .. })));
        // A disk file in the way: refused, and the disks made before it are removed again.
        std::fs::write(dir.path().join("db_data.qcow2"), b"precious").unwrap();
        assert!(matches!(h.init(&req("db")), Err(VmError::Disk { .. })));
        assert!(!dir.path().join("db_system.qcow2").exists(), "all or nothing");
        assert_eq!(std::fs::read(dir.path().join("db_data.qcow2")).unwrap(), b"precious");
        assert!(matches!(h.info("db"), Err(VmError::NoDomain { .. })));

        // purge: refused while running unless forced; removes the domain's own disks only.
        assert!(matches!(h.purge("web", false), Err(VmError::WrongState { .. })));
        let removed = h.purge("web", true).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!dir.path().join("web_system.qcow2").exists() && !dir.path().join("web_data.qcow2").exists());
        assert_eq!(
            std::fs::read(dir.path().join("db_data.qcow2")).unwrap(),
            b"precious",
            "not web's disk"
        );
        assert!(matches!(h.info("web"), Err(VmError::NoDomain { .. })));
    }

    #[test]
    fn remote_uris_name_a_host() {
        assert!(is_remote_uri("qemu+tls://hv01.example/system?pkipath=/x"));
        assert!(is_remote_uri("qemu+ssh://root@hv01/system"));
        assert!(!is_remote_uri("qemu:///system"));
        assert!(!is_remote_uri("test:///default"));
        assert!(!is_remote_uri("test:///tmp/node.xml"));
        assert!(!is_remote_uri("nonsense"));
    }

    #[test]
    fn host_info_and_clear_connection_errors() {
        let (_node, h) = private_driver();
        let info = h.host_info().unwrap();
        assert!(info.cpus > 0 && info.memory_mib > 0, "{info:?}");
        assert!(h.xml("test").unwrap().contains("<name>test</name>"));
        let e = Hypervisor::connect("nosuchdriver:///x").err().expect("must fail");
        assert!(e.to_string().starts_with("cannot connect to nosuchdriver:///x"), "{e}");
    }
}
