//! VM lifecycle on libvirt, through libvirt's own Rust binding (the `virt` crate).
//!
//! This is the foundation of `provd vm`: a connection to any libvirt URI (`qemu:///system`,
//! `qemu+tls://host/system` with `?pkipath=` from `provd pki issue-client`, or the in-memory
//! `test:///default`), and the read and power operations: list, info, host-info, start,
//! stop (ACPI shutdown), destroy (power off), undefine. Profiles, sysprep, clones,
//! deployment with placement, migration and consoles build on it (issue 6).
//!
//! Every call blocks on libvirt: the CLI calls it directly (it has no runtime); async code
//! must call it from `spawn_blocking`. Errors name the URI and the domain and carry
//! libvirt's own message.

use serde::Serialize;
use virt::connect::Connect;
use virt::domain::Domain;

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
    #[error("{name:?} is {state}; {what} needs it {needs}")]
    WrongState {
        name: String,
        state: String,
        what: &'static str,
        needs: &'static str,
    },
}

/// One domain as `provd vm list` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DomainSummary {
    pub name: String,
    pub uuid: String,
    pub state: String,
    pub vcpus: u32,
    pub memory_mib: u64,
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
    conn: Connect,
    uri: String,
}

fn state_name(d: &Domain) -> String {
    match d.state() {
        Ok((s, _)) => s.to_string().to_lowercase(),
        Err(_) => "unknown".into(),
    }
}

impl Hypervisor {
    pub fn connect(uri: &str) -> Result<Hypervisor, VmError> {
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

    fn err(&self, what: &'static str, name: &str) -> impl FnOnce(virt::error::Error) -> VmError + '_ {
        let name = name.to_string();
        move |e| VmError::Libvirt {
            what,
            name,
            uri: self.uri.clone(),
            message: e.to_string(),
        }
    }

    fn domain(&self, name: &str) -> Result<Domain, VmError> {
        self.conn.lookup_domain_by_name(name).map_err(|_| VmError::NoDomain {
            uri: self.uri.clone(),
            name: name.to_string(),
        })
    }

    fn summary(&self, d: &Domain) -> Result<DomainSummary, VmError> {
        let name = d.name().map_err(self.err("reading", "?"))?;
        let info = d.info().map_err(self.err("reading", &name))?;
        Ok(DomainSummary {
            uuid: d.uuid_string().map_err(self.err("reading", &name))?,
            state: state_name(d),
            vcpus: info.nr_virt_cpu,
            memory_mib: info.max_mem / 1024,
            name,
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

    fn is_active(&self, d: &Domain, name: &str) -> Result<bool, VmError> {
        d.is_active().map_err(self.err("reading", name))
    }

    pub fn start(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        if self.is_active(&d, name)? {
            return Err(VmError::WrongState {
                name: name.into(),
                state: state_name(&d),
                what: "start",
                needs: "shut off",
            });
        }
        d.create().map_err(self.err("starting", name))
    }

    /// ACPI shutdown: asks the guest; it may take its time (or ignore it: then `destroy`).
    pub fn stop(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        if !self.is_active(&d, name)? {
            return Err(VmError::WrongState {
                name: name.into(),
                state: state_name(&d),
                what: "stop",
                needs: "running",
            });
        }
        d.shutdown().map_err(self.err("stopping", name))
    }

    /// Power off at once, like pulling the plug.
    pub fn destroy(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        if !self.is_active(&d, name)? {
            return Err(VmError::WrongState {
                name: name.into(),
                state: state_name(&d),
                what: "destroy",
                needs: "running",
            });
        }
        d.destroy().map_err(self.err("destroying", name))
    }

    /// Remove the definition (disks stay). Refuses a running domain: stop or destroy it first.
    pub fn undefine(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain(name)?;
        if self.is_active(&d, name)? {
            return Err(VmError::WrongState {
                name: name.into(),
                state: state_name(&d),
                what: "undefine",
                needs: "shut off",
            });
        }
        d.undefine().map_err(self.err("undefining", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libvirt's test driver: an in-memory hypervisor with one running domain, "test".
    /// Each `test:///default` connection is its own fresh copy.
    #[test]
    fn power_operations_on_the_test_driver() {
        let h = Hypervisor::connect("test:///default").unwrap();
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
    fn host_info_and_clear_connection_errors() {
        let h = Hypervisor::connect("test:///default").unwrap();
        let info = h.host_info().unwrap();
        assert!(info.cpus > 0 && info.memory_mib > 0, "{info:?}");
        assert!(h.xml("test").unwrap().contains("<name>test</name>"));
        let e = Hypervisor::connect("nosuchdriver:///x").err().expect("must fail");
        assert!(e.to_string().starts_with("cannot connect to nosuchdriver:///x"), "{e}");
    }
}
