//! Where each lab VM is in the boot chain, derived (purely) from provd's boot journal and
//! the VM's serial console. The journal is the authority for what provd served; the console
//! adds what only the VM can see (the kernel starting, the disk booting).

use super::vm::Firmware;
use crate::inventory::InstallEvent;
use crate::journal::{BootEvent, Step};
use crate::render::Action;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// First DHCP ACK from provd.
    Dhcp,
    /// The first stage is running: UEFI fetched ipxe.efi/snponly.efi (or, with Secure
    /// Boot, shim) over TFTP, or over HTTP with UEFI HTTP boot; a BIOS VM's NIC ROM is
    /// iPXE already and got its script URL straight from DHCP.
    Ipxe,
    /// provd served the install script.
    Script,
    /// Kernel and initrd fetched (over HTTP by iPXE, over TFTP by GRUB).
    Kernel,
    Kickstart,
    /// The kickstart's %post reported in.
    Post,
    Installed,
    /// After `installed`, provd told the VM to boot its disk.
    LocalBoot,
    /// An image-deployed hypervisor: provd's pool reached its libvirt over TLS (read from
    /// the admin API, not the journal).
    Ready,
}

impl Stage {
    pub const ALL: [Stage; 9] = [
        Stage::Dhcp,
        Stage::Ipxe,
        Stage::Script,
        Stage::Kernel,
        Stage::Kickstart,
        Stage::Post,
        Stage::Installed,
        Stage::LocalBoot,
        Stage::Ready,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stage::Dhcp => "dhcp",
            Stage::Ipxe => "ipxe",
            Stage::Script => "script",
            Stage::Kernel => "kernel",
            Stage::Kickstart => "kickstart",
            Stage::Post => "%post",
            Stage::Installed => "installed",
            Stage::LocalBoot => "local boot",
            Stage::Ready => "ready",
        }
    }
}

/// What has happened to one VM so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Each stage reached, with the Unix time provd recorded it.
    pub reached: Vec<(Stage, u64, String)>,
    pub tftp_files: Vec<String>,
    pub kickstart_fetches: usize,
    /// Certificates provd signed for the VM's %post (libvirt server and client).
    #[serde(default)]
    pub certificates: Vec<String>,
    /// The installer or an install callback reported failure.
    pub failed: Option<String>,
    /// The console shows the installed system running: the mini-install's boot sector
    /// (BIOS VMs) or a deployed image's first-boot line (both firmwares).
    pub disk_booted: bool,
    /// The VM deploys a real OS image: it is done when the pool has verified it (`Ready`),
    /// not at the local boot.
    #[serde(default)]
    pub wants_ready: bool,
    /// UEFI HTTP boot: the first stage the firmware fetched over HTTP.
    #[serde(default)]
    pub http_first_stage: Option<String>,
    /// A Secure Boot VM succeeds only when what ran inside it said Secure Boot was enforced.
    #[serde(default)]
    pub needs_secure_boot: bool,
    #[serde(default)]
    pub secure_boot: SecureBootSeen,
}

/// What ran inside the VM said about Secure Boot, on its console: the installer environment
/// (from the firmware's SecureBoot variable) and the installed system (`mokutil --sb-state`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecureBootSeen {
    pub installer: bool,
    pub system: bool,
}

impl Progress {
    pub fn at(&self, s: Stage) -> Option<u64> {
        self.reached.iter().find(|(st, _, _)| *st == s).map(|(_, t, _)| *t)
    }
    pub fn last(&self) -> Option<Stage> {
        self.reached.iter().map(|(s, _, _)| *s).max()
    }
    /// The stage that ends this VM's run.
    pub fn goal(&self) -> Stage {
        if self.wants_ready {
            Stage::Ready
        } else {
            Stage::LocalBoot
        }
    }
    pub fn done(&self) -> bool {
        self.at(self.goal()).is_some() || self.failed.is_some()
    }
    pub fn succeeded(&self) -> bool {
        self.failed.is_none() && self.at(self.goal()).is_some() && self.secure_boot_proven()
    }
    /// It reached its goal, but its console has yet to show what the lab checks there: a
    /// BIOS or image VM's disk boot, a Secure Boot VM's word on Secure Boot. The pool can
    /// verify a hypervisor before its first-boot unit prints (that unit waits for the
    /// network), so the lab gives such a VM a moment more.
    pub fn settling(&self, firmware: Firmware) -> bool {
        let reached = self.failed.is_none() && self.at(self.goal()).is_some();
        let disk_mark_due = firmware == Firmware::Bios || self.wants_ready;
        reached && ((disk_mark_due && !self.disk_booted) || !self.secure_boot_proven())
    }
    /// A Secure Boot VM: the installer said it was enforced, and so did the installed
    /// system when the VM boots a real OS. Other VMs: nothing to prove.
    pub fn secure_boot_proven(&self) -> bool {
        !self.needs_secure_boot || (self.secure_boot.installer && (!self.wants_ready || self.secure_boot.system))
    }
}

/// Text the installed boot sector prints (lab/build-installer.sh).
pub const DISK_BOOT_MARK: &str = "provd-lab: booted from local disk";
/// What a deployed Debian image's first-boot unit prints (lab/images/debian12-kvm.sh).
pub const IMAGE_BOOT_MARK: &str = "provd-image: libvirtd active";
const INSTALLER_FAILED: &str = "provd-installer: FAILED";
/// What the installer environment prints when the firmware enforces Secure Boot
/// (lab/installer/init).
pub const INSTALLER_SECURE_BOOT_MARK: &str = "provd-installer: Secure Boot enforced";
/// What a deployed Debian image prints at first boot when `mokutil --sb-state` says so
/// (lab/images/debian12-kvm.sh).
pub const IMAGE_SECURE_BOOT_MARK: &str = "provd-image: SecureBoot enabled";

pub fn derive(events: &[BootEvent], console: &str, firmware: Firmware) -> Progress {
    let mut p = Progress::default();
    let reach = |p: &mut Progress, s: Stage, at: u64, detail: &str| {
        if p.at(s).is_none() {
            p.reached.push((s, at, detail.to_string()));
        }
    };
    let mut kernel = false;
    let mut initrd = false;
    for e in events {
        match &e.step {
            Step::DhcpAck { boot_file, .. } => {
                reach(&mut p, Stage::Dhcp, e.at, &e.detail);
                // A BIOS VM's NIC ROM is iPXE already: its first answer names the script.
                let http = boot_file.as_deref().is_some_and(|f| f.starts_with("http"));
                if firmware == Firmware::Bios && http {
                    reach(&mut p, Stage::Ipxe, e.at, "NIC option ROM (iPXE)");
                }
            }
            Step::Tftp { file, .. } => {
                if file.ends_with(".efi") || file.ends_with(".kpxe") {
                    reach(&mut p, Stage::Ipxe, e.at, &format!("TFTP {file}"));
                }
                kernel |= file.contains("vmlinuz");
                initrd |= file.contains("initrd") || file.contains("installer.cpio");
                if kernel && initrd {
                    reach(&mut p, Stage::Kernel, e.at, "kernel and initrd over TFTP");
                }
                p.tftp_files.push(file.clone());
            }
            Step::BootScript {
                action: Action::Install,
                ..
            } => reach(&mut p, Stage::Script, e.at, &e.detail),
            Step::BootScript {
                action: Action::Local, ..
            } if p.at(Stage::Installed).is_some() => reach(&mut p, Stage::LocalBoot, e.at, &e.detail),
            Step::HttpAsset { path, .. } => {
                // UEFI HTTP boot: the firmware fetched the first stage itself.
                if path.ends_with(".efi") {
                    reach(&mut p, Stage::Ipxe, e.at, &format!("HTTP {path}"));
                    p.http_first_stage.get_or_insert_with(|| path.clone());
                }
                kernel |= path.contains("vmlinuz");
                initrd |= path.contains("initrd") || path.contains("installer.cpio");
                if kernel && initrd {
                    reach(&mut p, Stage::Kernel, e.at, "kernel and initrd over HTTP");
                }
            }
            Step::Pki { .. } => p.certificates.push(e.detail.clone()),
            Step::Kickstart { .. } => {
                p.kickstart_fetches += 1;
                reach(&mut p, Stage::Kickstart, e.at, &e.detail);
            }
            Step::Callback {
                event: InstallEvent::PostStarted,
            } => reach(&mut p, Stage::Post, e.at, "%post started"),
            Step::Callback {
                event: InstallEvent::Installed,
            } => reach(&mut p, Stage::Installed, e.at, "installer reported installed"),
            Step::Callback {
                event: InstallEvent::Failed,
            } => p.failed = Some("installer reported failed".into()),
            _ => {}
        }
    }
    p.reached.sort_by_key(|(s, _, _)| *s);
    p.disk_booted = console.contains(DISK_BOOT_MARK) || console.contains(IMAGE_BOOT_MARK);
    p.needs_secure_boot = firmware == Firmware::SecureBoot;
    p.secure_boot = SecureBootSeen {
        installer: console.contains(INSTALLER_SECURE_BOOT_MARK),
        system: console.contains(IMAGE_SECURE_BOOT_MARK),
    };
    if p.failed.is_none()
        && let Some(line) = console.lines().find(|l| l.contains(INSTALLER_FAILED))
    {
        p.failed = Some(line.trim().to_string());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(at: u64, step: Step) -> BootEvent {
        BootEvent {
            at,
            mac: None,
            ip: None,
            detail: step.to_string(),
            step,
        }
    }
    fn ack(at: u64, file: &str) -> BootEvent {
        ev(
            at,
            Step::DhcpAck {
                address: "10.200.0.12".parse().unwrap(),
                boot_file: Some(file.into()),
            },
        )
    }
    fn tftp(at: u64, file: &str) -> BootEvent {
        ev(
            at,
            Step::Tftp {
                file: file.into(),
                bytes: 850_528,
            },
        )
    }
    fn script(at: u64, action: Action) -> BootEvent {
        ev(
            at,
            Step::BootScript {
                action,
                description: format!("{action:?}"),
            },
        )
    }
    fn asset(at: u64, path: &str) -> BootEvent {
        ev(
            at,
            Step::HttpAsset {
                method: "GET".into(),
                path: path.into(),
                range: None,
            },
        )
    }
    fn callback(at: u64, event: InstallEvent) -> BootEvent {
        ev(at, Step::Callback { event })
    }

    #[test]
    fn a_uefi_install_then_local_boot() {
        let events = [
            ack(10, "ipxe.efi"),
            tftp(11, "ipxe.efi"),
            ack(20, "http://x/boot/m.ipxe"),
            script(30, Action::Install),
            asset(30, "lab/vmlinuz"),
            asset(31, "lab/installer.cpio.gz"),
            ev(35, Step::Kickstart { bytes: 793 }),
            callback(35, InstallEvent::Installing),
            callback(35, InstallEvent::PostStarted),
            callback(36, InstallEvent::Installed),
            script(60, Action::Local),
        ];
        let p = derive(&events, "", Firmware::Uefi);
        assert_eq!(
            p.reached.iter().map(|r| r.0).collect::<Vec<_>>(),
            Stage::ALL[..Stage::ALL.len() - 1].to_vec()
        );
        assert_eq!(p.at(Stage::Ipxe), Some(11));
        assert_eq!(p.tftp_files, ["ipxe.efi"]);
        assert_eq!(p.kickstart_fetches, 1);
        assert!(p.done() && p.succeeded());
        // An image deploy is done only once the pool verified the hypervisor.
        let mut image = derive(&events, "provd-image: libvirtd active\n", Firmware::Uefi);
        image.wants_ready = true;
        assert!(image.disk_booted && !image.done() && !image.succeeded());
        image.reached.push((Stage::Ready, 90, "verified".into()));
        assert!(image.done() && image.succeeded());
    }

    #[test]
    fn bios_ipxe_rom_needs_no_tftp_and_local_boot_only_counts_after_install() {
        let events = [ack(1, "http://x/boot/m.ipxe"), script(2, Action::Local)];
        let p = derive(&events, "", Firmware::Bios);
        assert_eq!(p.at(Stage::Ipxe), Some(1));
        assert_eq!(
            p.at(Stage::LocalBoot),
            None,
            "a local-disk answer before any install is not the second boot"
        );
        let p = derive(&[], "x\nprovd-installer: FAILED: no DHCP lease\n", Firmware::Bios);
        assert_eq!(p.failed.as_deref(), Some("provd-installer: FAILED: no DHCP lease"));
        assert!(
            derive(
                &[],
                "\r\nprovd-lab: booted from local disk (installed by provd)",
                Firmware::Bios
            )
            .disk_booted
        );
    }

    /// The Secure Boot chain: shim and GRUB over TFTP, then kernel and initrd over TFTP too;
    /// the VM succeeds only when the installer (and, for an image, the installed system)
    /// said Secure Boot was enforced.
    #[test]
    fn a_secure_boot_install_succeeds_only_when_the_vm_says_it_was_enforced() {
        let events = [
            ack(10, "shimx64.efi"),
            tftp(11, "shimx64.efi"),
            tftp(12, "grubx64.efi"),
            tftp(13, "/grub/grub.cfg"),
            script(13, Action::Install),
            tftp(14, "/lab/vmlinuz"),
            tftp(16, "/lab/installer.cpio.gz"),
            ev(20, Step::Kickstart { bytes: 793 }),
            callback(21, InstallEvent::PostStarted),
            callback(22, InstallEvent::Installed),
            script(40, Action::Local),
        ];
        let installer = "provd-installer: Secure Boot enforced (kernel lockdown: none [integrity] confidentiality)\n";
        let p = derive(&events, installer, Firmware::SecureBoot);
        assert_eq!(p.at(Stage::Ipxe), Some(11));
        assert_eq!(p.at(Stage::Kernel), Some(16));
        assert!(p.succeeded(), "{p:?}");
        let off = derive(
            &events,
            "provd-installer: UEFI, Secure Boot off\n",
            Firmware::SecureBoot,
        );
        assert!(
            off.done() && !off.succeeded(),
            "the chain ran but nothing showed Secure Boot on"
        );
        assert!(
            derive(&events, "", Firmware::Uefi).succeeded(),
            "a plain UEFI VM has nothing to prove"
        );
        // An image: the installed system must say so too (mokutil --sb-state).
        let mut image = derive(&events, installer, Firmware::SecureBoot);
        image.wants_ready = true;
        image.reached.push((Stage::Ready, 90, "verified".into()));
        assert!(!image.succeeded());
        let both = format!("{installer}provd-image: SecureBoot enabled\nprovd-image: libvirtd active\n");
        let mut image = derive(&events, &both, Firmware::SecureBoot);
        image.wants_ready = true;
        image.reached.push((Stage::Ready, 90, "verified".into()));
        assert!(image.succeeded() && image.disk_booted && !image.settling(Firmware::SecureBoot));
        // Ready before the first-boot unit printed: the lab waits rather than fails.
        let mut early = derive(&events, installer, Firmware::SecureBoot);
        early.wants_ready = true;
        early.reached.push((Stage::Ready, 90, "verified".into()));
        assert!(early.settling(Firmware::SecureBoot) && !early.succeeded());
    }

    #[test]
    fn uefi_http_boot_reaches_the_first_stage_over_http() {
        let events = [
            ack(10, "http://10.200.0.1:8080/assets/snponly.efi"),
            asset(11, "snponly.efi"),
            ack(20, "http://x/boot/m.ipxe"),
            script(21, Action::Install),
        ];
        let p = derive(&events, "", Firmware::UefiHttp);
        assert_eq!(p.at(Stage::Ipxe), Some(11));
        assert_eq!(p.http_first_stage.as_deref(), Some("snponly.efi"));
        assert!(p.tftp_files.is_empty());
    }
}
