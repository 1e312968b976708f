//! What the lab needs on the host before anything starts: Debian packages (QEMU, iPXE, OVMF,
//! the BMC simulators, a kernel for the mini-installer) and the assets provd serves (iPXE
//! binaries, the mini-installer, rebuilt when its sources changed). Which packages a lab
//! needs is decided by pure functions; installing and building are the thin I/O around them.

use super::vm::{self, Firmware};
use crate::config::Config;
use anyhow::bail;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (file the lab uses, Debian package that provides it) for these VMs and BMC kind.
pub fn prerequisites(firmwares: &[Firmware], bmc: Option<&str>) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
        ("/usr/bin/qemu-img", "qemu-utils"),
        ("/bin/busybox", "busybox-static"),
        // The mini-installer carries the guest agent (lab/build-installer.sh).
        ("/usr/sbin/qemu-ga", "qemu-guest-agent"),
        ("/usr/lib/ipxe/ipxe.efi", "ipxe"),
    ];
    if firmwares.contains(&Firmware::Bios) {
        v.push((vm::IPXE_ROM, "ipxe-qemu"));
    }
    for fw in firmwares {
        if let Some((code, vars)) = fw.ovmf() {
            v.push((code, "ovmf"));
            v.push((vars, "ovmf"));
        }
    }
    v.dedup();
    match bmc {
        Some("ipmi") => {
            v.push(("/usr/bin/ipmi_sim", "openipmi"));
            v.push(("/usr/bin/ipmitool", "ipmitool"));
        }
        Some(_) => {
            v.push(("/usr/sbin/libvirtd", "libvirt-daemon-system"));
            v.push(("/usr/bin/virsh", "libvirt-clients"));
            v.push(("/usr/bin/openssl", "openssl"));
        }
        None => {}
    }
    v
}

/// The kernel package the mini-installer boots (`lab/build-installer.sh` takes its vmlinuz).
pub const INSTALLER_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// The packages to install: those whose file `exists` says is missing, and the installer's
/// kernel when there is none. Each package once, in the order needed.
pub fn missing_packages(
    firmwares: &[Firmware],
    bmc: Option<&str>,
    exists: impl Fn(&Path) -> bool,
    has_installer_kernel: bool,
) -> Vec<&'static str> {
    let mut missing: Vec<&str> = Vec::new();
    for (file, package) in prerequisites(firmwares, bmc) {
        if !exists(Path::new(file)) && !missing.contains(&package) {
            missing.push(package);
        }
    }
    if !has_installer_kernel {
        missing.push(INSTALLER_KERNEL_PACKAGE);
    }
    missing
}

/// Whether /boot has a Debian cloud kernel.
fn cloud_kernel_installed() -> bool {
    std::fs::read_dir("/boot")
        .map(|d| {
            d.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("vmlinuz-") && name.ends_with("-cloud-amd64")
            })
        })
        .unwrap_or(false)
}

/// Install what is missing (Debian), or say exactly what to install.
pub fn ensure(firmwares: &[Firmware], bmc: Option<&str>, install: bool) -> anyhow::Result<()> {
    let missing = missing_packages(firmwares, bmc, |p| p.exists(), cloud_kernel_installed());
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!("apt-get install -y --no-install-recommends {}", missing.join(" "));
    if !install {
        bail!(
            "the lab needs Debian packages that are not installed; run:\n  {command}\n(or lab/deps.sh, which also handles the qemu-utils version pin)"
        );
    }
    println!("provd lab: installing {}", missing.join(" "));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("DEBIAN_FRONTEND=noninteractive {command}"))
        .status()?;
    if !status.success() {
        bail!("could not install the lab's packages; run `{command}` (or lab/deps.sh) yourself and try again");
    }
    Ok(())
}

/// iPXE binaries, the mini-installer and the lab switch's initramfs in the assets
/// directory, built if missing or older than their sources; with Secure Boot VMs, the
/// signed chain (shim and GRUB from Debian's archive, lab/signed-chain.sh).
pub fn ensure_assets(config: &Config, firmwares: &[Firmware], image_lab: bool) -> anyhow::Result<()> {
    let assets = &config.daemon.assets_dir;
    if firmwares.contains(&Firmware::SecureBoot)
        && crate::assets::signed_chain_names().any(|n| !assets.join(n).exists())
    {
        let cache = Path::new(crate::assets::SIGNED_CHAIN_CACHE);
        let script = Path::new("lab/signed-chain.sh");
        if !cache.join("usr/lib/shim").exists() && script.exists() {
            println!("provd lab: fetching the Secure Boot chain (lab/signed-chain.sh)");
            super::netns::run(Command::new("bash").arg(script))?;
        }
        println!("provd lab: copying the Secure Boot chain into {}", assets.display());
        let failed: Vec<String> = crate::assets::install_signed_chain(cache, assets)?
            .into_iter()
            .filter_map(|f| f.result.err().map(|e| format!("{}: {e}", f.name)))
            .collect();
        if !failed.is_empty() {
            bail!("the Secure Boot chain was not installed: {}", failed.join("; "));
        }
    }
    if !assets.join("ipxe.efi").exists() {
        println!("provd lab: copying iPXE binaries into {}", assets.display());
        let failed: Vec<String> = crate::assets::install_ipxe(Path::new(crate::assets::DEBIAN_IPXE_DIR), assets)?
            .into_iter()
            .filter_map(|f| f.result.err().map(|e| format!("{}: {e}", f.name)))
            .collect();
        if !failed.is_empty() {
            bail!("iPXE binaries not installed: {}", failed.join("; "));
        }
    }
    let built = assets.join("lab/installer.cpio.gz");
    let switch_missing = !assets.join("lab/switch.cpio.gz").exists();
    if !assets.join("lab/vmlinuz").exists() || switch_missing || installer_outdated(&built, Path::new(".")) {
        let script = Path::new("lab/build-installer.sh");
        if !script.exists() {
            bail!(
                "{} lacks lab/vmlinuz and lab/installer.cpio.gz, and lab/build-installer.sh is not here: run provd lab from the provd source tree",
                assets.display()
            );
        }
        println!("provd lab: building the mini-installer (lab/build-installer.sh)");
        super::netns::run(Command::new("bash").arg(script).arg(assets.join("lab")))?;
    }
    // An image lab's profile boots the hardware installer (Debian's generic kernel).
    let hardware = assets.join("lab/hardware/installer.cpio.gz");
    if image_lab && installer_outdated(&hardware, Path::new(".")) && Path::new("lab/build-installer.sh").exists() {
        println!("provd lab: building the hardware installer (lab/build-installer.sh --hardware)");
        super::netns::run(
            Command::new("bash")
                .arg("lab/build-installer.sh")
                .arg("--hardware")
                .arg(assets.join("lab")),
        )?;
    }
    Ok(())
}

/// The built installer is missing or older than one of its sources under `tree`
/// (`lab/installer/**`, `lab/switch/**`, `lab/build-installer.sh`, which builds both): a
/// source tree that changed either rebuilds them.
pub fn installer_outdated(built: &Path, tree: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let Some(built_at) = modified(built) else {
        return true;
    };
    let mut sources = vec![tree.join("lab/build-installer.sh")];
    let mut dirs: Vec<PathBuf> = vec![tree.join("lab/installer"), tree.join("lab/switch")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                sources.push(p);
            }
        }
    }
    sources.iter().filter_map(|p| modified(p)).any(|t| t > built_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn the_packages_follow_the_firmwares_and_the_bmc() {
        let none = |_: &Path| false;
        let bios = missing_packages(&[Firmware::Bios], None, none, true);
        assert!(bios.contains(&"ipxe-qemu") && !bios.contains(&"ovmf"), "{bios:?}");
        assert!(
            bios.contains(&"qemu-guest-agent"),
            "the mini-installer's agent: {bios:?}"
        );
        let uefi = missing_packages(&[Firmware::Uefi], None, none, true);
        assert!(uefi.contains(&"ovmf") && !uefi.contains(&"ipxe-qemu"), "{uefi:?}");
        let ipmi = missing_packages(&[Firmware::Bios], Some("ipmi"), none, true);
        assert!(ipmi.contains(&"openipmi") && ipmi.contains(&"ipmitool") && !ipmi.contains(&"libvirt-daemon-system"));
        let redfish = missing_packages(&[Firmware::Uefi], Some("redfish"), none, true);
        assert!(redfish.contains(&"libvirt-daemon-system") && !redfish.contains(&"openipmi"));
        assert_eq!(
            missing_packages(&[Firmware::Bios, Firmware::Uefi], None, none, false).last(),
            Some(&INSTALLER_KERNEL_PACKAGE)
        );
    }

    #[test]
    fn nothing_is_installed_when_every_file_is_there() {
        let all = |_: &Path| true;
        assert!(missing_packages(&[Firmware::Bios, Firmware::Uefi], Some("redfish"), all, true).is_empty());
        // One missing file names its package once.
        let only_qemu_img = |p: &Path| p != Path::new("/usr/bin/qemu-img");
        assert_eq!(
            missing_packages(&[Firmware::Bios], None, only_qemu_img, true),
            ["qemu-utils"]
        );
    }

    #[test]
    fn the_installer_is_rebuilt_when_a_source_is_newer() {
        let tree = tempfile::tempdir().unwrap();
        let t = tree.path();
        std::fs::create_dir_all(t.join("lab/installer/sub")).unwrap();
        std::fs::write(t.join("lab/build-installer.sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(t.join("lab/installer/sub/init"), "x").unwrap();
        let built = t.join("installer.cpio.gz");
        assert!(installer_outdated(&built, t), "not built yet");
        std::fs::write(&built, "cpio").unwrap();
        let set = |p: &Path, at: SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        let now = SystemTime::now();
        for p in [t.join("lab/build-installer.sh"), t.join("lab/installer/sub/init")] {
            set(&p, now - Duration::from_secs(60));
        }
        set(&built, now);
        assert!(!installer_outdated(&built, t), "every source older than the build");
        // A source in a subdirectory changed after the build.
        set(&t.join("lab/installer/sub/init"), now + Duration::from_secs(5));
        assert!(installer_outdated(&built, t));
        // The switch's init is a source too (the same script builds its initramfs).
        set(&t.join("lab/installer/sub/init"), now - Duration::from_secs(60));
        std::fs::create_dir_all(t.join("lab/switch")).unwrap();
        std::fs::write(t.join("lab/switch/init"), "x").unwrap();
        set(&t.join("lab/switch/init"), now + Duration::from_secs(5));
        assert!(installer_outdated(&built, t));
    }
}
