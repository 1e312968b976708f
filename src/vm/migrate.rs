//! `provd vm migrate NAME DEST`: live, peer-to-peer, tunnelled migration. The source
//! libvirtd connects to DEST itself (peer-to-peer) and carries QEMU's migration stream inside
//! that libvirt connection (tunnelled), so with a `qemu+tls://` DEST the memory travels over
//! libvirt's TLS with provd's certificates and no extra port is opened. The definition moves
//! with it (persistent on DEST, undefined on the source).
//!
//! Refused before anything moves: a domain that is not running, a DEST that already has a
//! domain of that name, a DEST without the memory the domain needs, a linked clone whose
//! template disk DEST cannot see.

use super::{Hypervisor, VmError};

/// The libvirt flags: live, peer-to-peer, tunnelled; persist on the destination and
/// undefine on the source, so the VM exists in exactly one place afterwards.
pub const FLAGS: u32 = virt::sys::VIR_MIGRATE_LIVE
    | virt::sys::VIR_MIGRATE_PEER2PEER
    | virt::sys::VIR_MIGRATE_TUNNELLED
    | virt::sys::VIR_MIGRATE_PERSIST_DEST
    | virt::sys::VIR_MIGRATE_UNDEFINE_SOURCE;

/// Why DEST cannot take the VM, if it cannot (pure: for tests and for the check below).
pub fn refuse_reason(need_mib: u64, dest_free_mib: u64, dest_has_name: bool, name: &str, dest: &str) -> Option<String> {
    if dest_has_name {
        return Some(format!("{dest} already has a domain named {name:?}"));
    }
    if dest_free_mib < need_mib {
        return Some(format!(
            "{dest} has {dest_free_mib} MiB free; {name:?} needs {need_mib} MiB"
        ));
    }
    None
}

impl Hypervisor {
    /// Migrate a running domain to `dest` (a libvirt URI the *source* libvirtd can reach,
    /// e.g. `qemu+tls://hv02.example/system`). `dest_view` is provd's own connection to DEST,
    /// used to check that it can hold the VM.
    pub fn migrate(&self, name: &str, dest_uri: &str, dest_view: &Hypervisor) -> Result<(), VmError> {
        let d = self.domain(name)?;
        if !self.is_active(&d, name)? {
            return Err(VmError::WrongState {
                name: name.into(),
                state: super::state_name(&d),
                what: "live migration",
                needs: "running",
            });
        }
        self.refuse_if_backing(name, "migrating it")?;
        let need = d.info().map_err(self.err("reading", name))?.max_mem / 1024;
        let free = dest_view.host_info()?.free_memory_mib;
        let taken = dest_view.conn.lookup_domain_by_name(name).is_ok();
        if let Some(why) = refuse_reason(need, free, taken, name, dest_uri) {
            return Err(VmError::Libvirt {
                what: "migrating",
                name: name.into(),
                uri: self.uri.clone(),
                message: format!("refused: {why}"),
            });
        }
        d.migrate_to_uri(dest_uri, FLAGS, None, 0)
            .map_err(self.err("migrating", name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_reason() {
        assert_eq!(refuse_reason(1024, 4096, false, "vm", "d"), None);
        assert!(
            refuse_reason(8192, 4096, false, "vm", "d")
                .unwrap()
                .contains("4096 MiB free; \"vm\" needs 8192 MiB")
        );
        assert!(refuse_reason(1, 4096, true, "vm", "d").unwrap().contains("already has"));
        assert_eq!(
            FLAGS & virt::sys::VIR_MIGRATE_TUNNELLED,
            virt::sys::VIR_MIGRATE_TUNNELLED
        );
        assert_eq!(
            FLAGS & virt::sys::VIR_MIGRATE_PEER2PEER,
            virt::sys::VIR_MIGRATE_PEER2PEER
        );
    }
}

#[cfg(test)]
mod driver_tests {
    use super::*;

    fn driver(domain_mib: u64) -> (tempfile::TempDir, Hypervisor) {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("node.xml");
        std::fs::write(
            &node,
            format!(
                "<node><domain type='test'><name>vm</name><memory unit='MiB'>{domain_mib}</memory><vcpu>1</vcpu><os><type>hvm</type></os></domain></node>"
            ),
        )
        .unwrap();
        let h = Hypervisor::connect(&format!("test://{}", node.display())).unwrap();
        (dir, h)
    }

    #[test]
    fn a_destination_that_cannot_hold_the_vm_is_refused_before_anything_moves() {
        let (_a, src) = driver(64 << 20); // 64 TiB: no test host has that free
        let (_b, dest) = driver(1);
        dest.destroy("vm").unwrap();
        dest.undefine("vm").unwrap();
        let e = src.migrate("vm", "test:///elsewhere", &dest).unwrap_err().to_string();
        assert!(e.contains("refused") && e.contains("MiB free"), "{e}");
        assert_eq!(src.info("vm").unwrap().state, "running", "nothing moved");

        let (_c, src) = driver(1);
        let (_d, dest) = driver(1); // already has a domain named "vm"
        let e = src.migrate("vm", "test:///elsewhere", &dest).unwrap_err().to_string();
        assert!(e.contains("already has a domain named"), "{e}");
        src.destroy("vm").unwrap();
        assert!(matches!(
            src.migrate("vm", "test:///elsewhere", &dest),
            Err(VmError::WrongState { .. })
        ));
    }
}
