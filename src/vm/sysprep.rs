//! `provd vm sysprep`: make a shut-off domain into a template with virt-sysprep (libguestfs),
//! then mark it as one in its libvirt metadata.
//!
//! The operations are a fixed, documented list: what makes two clones of one image
//! different machines (machine-id, SSH host keys, MAC-bound network config, DHCP leases)
//! and what leaks the template's past (logs, shell history, temp files, package caches).
//! virt-sysprep versions differ (Debian 12's 1.48 has no `lvm-system-devices`), so the list
//! is intersected with `virt-sysprep --list-operations` and what was skipped is reported.
//!
//! libguestfs runs its own small appliance VM. provd uses the `direct` backend unless the
//! environment says otherwise (`LIBGUESTFS_BACKEND`), so no libvirt network or session is
//! involved; where KVM is unusable set `LIBGUESTFS_BACKEND_SETTINGS=force_tcg`.

use super::metadata::TemplateMark;
use super::{Hypervisor, VmError};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The operations provd asks for, in the order of the issue that specified them.
pub const OPERATIONS: &[&str] = &[
    "machine-id",
    "ssh-hostkeys",
    "net-hwaddr",
    "net-nmconn",
    "udev-persistent-net",
    "logfiles",
    "dhcp-client-state",
    "bash-history",
    "lvm-system-devices",
    "tmp-files",
    "utmp",
    "package-manager-cache",
    "rpm-db",
    "yum-uuid",
    "crash-data",
    "mail-spool",
];

#[derive(Debug, Clone)]
pub struct SysprepReport {
    pub ran: Vec<String>,
    /// Asked for, but this virt-sysprep does not know them.
    pub skipped: Vec<String>,
}

fn tool_error(name: &str, message: String) -> VmError {
    VmError::Tool {
        tool: "virt-sysprep",
        name: name.into(),
        message,
    }
}

/// The operations this machine's virt-sysprep knows (`name`: the domain it is for, which
/// an error names).
fn known_operations(name: &str) -> Result<Vec<String>, VmError> {
    let out = Command::new("virt-sysprep")
        .arg("--list-operations")
        .output()
        .map_err(|e| tool_error(name, format!("cannot run virt-sysprep ({e}); install libguestfs-tools")))?;
    if !out.status.success() {
        return Err(tool_error(
            name,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect())
}

/// Split `OPERATIONS` into (known here, unknown here).
pub fn choose_operations(known: &[String]) -> (Vec<String>, Vec<String>) {
    OPERATIONS
        .iter()
        .map(|o| o.to_string())
        .partition(|o| known.contains(o))
}

impl Hypervisor {
    /// Run virt-sysprep on a shut-off domain; each line virt-sysprep prints goes to `on_line`
    /// as it comes (its own "[ 17.0] Performing ..." progress).
    pub fn sysprep(&self, name: &str, on_line: &mut dyn FnMut(&str)) -> Result<SysprepReport, VmError> {
        let d = self.domain(name)?;
        if self.is_active(&d, name)? {
            return Err(VmError::WrongState {
                name: name.into(),
                state: super::state_name(&d),
                what: "sysprep",
                needs: "shut off (libguestfs must not write a disk a running guest uses)",
            });
        }
        self.refuse_if_frozen(name, "sysprep")?;
        self.refuse_if_backing(name, "sysprep")?;
        let known = known_operations(name)?;
        let (ran, skipped) = choose_operations(&known);
        let mut cmd = Command::new("virt-sysprep");
        cmd.args(["--connect", &self.uri, "--domain", name, "--operations", &ran.join(",")])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("LIBGUESTFS_BACKEND").is_none() {
            cmd.env("LIBGUESTFS_BACKEND", "direct");
        }
        let mut child = cmd.spawn().map_err(|e| tool_error(name, e.to_string()))?;
        let stderr = child.stderr.take().expect("piped");
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
            match line {
                Ok(l) => on_line(&l),
                Err(_) => break,
            }
        }
        let status = child.wait().map_err(|e| tool_error(name, e.to_string()))?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            return Err(tool_error(name, errors.trim().to_string()));
        }
        let mut meta = self.meta(&d);
        meta.template = Some(TemplateMark {
            sysprepped: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            operations: ran.join(","),
            version: None,
        });
        self.set_meta(&d, name, &meta)?;
        Ok(SysprepReport { ran, skipped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_operations_are_skipped_not_fatal() {
        let known: Vec<String> = ["machine-id", "ssh-hostkeys", "logfiles", "customize"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (ran, skipped) = choose_operations(&known);
        assert_eq!(ran, ["machine-id", "ssh-hostkeys", "logfiles"]);
        assert!(skipped.contains(&"lvm-system-devices".to_string()));
        assert!(!ran.contains(&"customize".to_string()), "only what provd documents");
    }
}
