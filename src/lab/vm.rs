//! QEMU command lines for lab VMs (pure): BIOS VMs boot SeaBIOS with the NIC's iPXE option
//! ROM; UEFI VMs boot OVMF with the firmware's own PXE stack (`romfile=` empty), as a real
//! server's UEFI NIC would; Secure Boot VMs boot OVMF's Secure Boot build with Microsoft's
//! keys enrolled (what a data-center server ships with), which refuses any first stage no
//! trusted key signed; UEFI HTTP VMs have PXE switched off, so the firmware boots over HTTP
//! alone. Always TCG: KVM is not usable on the machines this runs on.

use crate::mac::MacAddr;
use std::path::{Path, PathBuf};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built with Secure Boot and SMM (the variable store is writable only from SMM, so a
/// guest OS cannot enrol its own keys), and a variable store with Microsoft's KEK and db
/// (the Windows and third-party UEFI CAs; shim is signed by the latter) and Secure Boot on.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";
/// QEMU's default ROM for virtio-net-pci (from Debian's ipxe-qemu): iPXE for BIOS and UEFI.
pub const IPXE_ROM: &str = "/usr/lib/ipxe/qemu/efi-virtio.rom";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Firmware {
    Bios,
    Uefi,
    /// OVMF with Secure Boot enforced and Microsoft's keys enrolled.
    #[serde(rename = "secureboot")]
    SecureBoot,
    /// OVMF with PXE off: the NIC boots over UEFI HTTP boot only (no TFTP at all).
    UefiHttp,
}

impl Firmware {
    pub const ALL: [Firmware; 4] = [Firmware::Bios, Firmware::Uefi, Firmware::SecureBoot, Firmware::UefiHttp];

    pub fn name(self) -> &'static str {
        match self {
            Firmware::Bios => "bios",
            Firmware::Uefi => "uefi",
            Firmware::SecureBoot => "secureboot",
            Firmware::UefiHttp => "uefi-http",
        }
    }

    pub fn is_uefi(self) -> bool {
        self != Firmware::Bios
    }

    /// The OVMF build and the variable store each VM starts from a copy of (UEFI only).
    pub fn ovmf(self) -> Option<(&'static str, &'static str)> {
        match self {
            Firmware::Bios => None,
            Firmware::Uefi | Firmware::UefiHttp => Some((OVMF_CODE, OVMF_VARS)),
            Firmware::SecureBoot => Some((OVMF_CODE_SECBOOT, OVMF_VARS_MS)),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct VmSpec {
    pub index: usize,
    pub name: String,
    pub firmware: Firmware,
    pub mac: MacAddr,
    pub tap: String,
    pub disk: PathBuf,
    pub serial_log: PathBuf,
    /// UEFI only: this VM's copy of the OVMF variable store.
    pub vars: Option<PathBuf>,
    pub pidfile: PathBuf,
    /// What the VM is sized for (older lab.json files: the mini-installer's size).
    #[serde(default)]
    pub size: Size,
    /// A bonded hypervisor VM's second uplink (the first is `mac` on `tap`).
    #[serde(default)]
    pub second_nic: Option<SecondNic>,
    /// The NIC and disk models (`provd lab up --hardware`: a server's, not virtio).
    #[serde(default)]
    pub hardware: Hardware,
}

/// What a lab VM's devices look like to its installer: virtio (a cloud VM's), or what real
/// servers carry, so the hardware installer environment must find the drivers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hardware {
    #[default]
    Virtio,
    /// Intel 82574 NICs (e1000e) and a SATA disk on an AHCI controller.
    E1000eAhci,
    /// virtio NICs and an NVMe disk.
    Nvme,
}

impl Hardware {
    /// `--hardware`: VM N of the lab takes these in turn (e1000e and AHCI first).
    pub fn for_vm(index: usize) -> Hardware {
        if index % 2 == 1 {
            Hardware::E1000eAhci
        } else {
            Hardware::Nvme
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Hardware::Virtio => "virtio",
            Hardware::E1000eAhci => "e1000e+ahci",
            Hardware::Nvme => "nvme",
        }
    }
    fn nic(self) -> &'static str {
        match self {
            Hardware::E1000eAhci => "e1000e",
            Hardware::Virtio | Hardware::Nvme => "virtio-net-pci",
        }
    }
}

/// The second NIC of a VM whose two uplinks its OS bonds (802.3ad against the lab's switch,
/// `lab::switch`: both NICs are then point-to-point links to its ports, not taps). No
/// option ROM and no boot index: the VM boots from its first NIC only, as a server
/// PXE-boots from one port of a port channel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SecondNic {
    pub mac: MacAddr,
}

/// What the ports report: a 25G port channel, full duplex (802.3ad aggregates only
/// full-duplex ports of one speed; a virtio NIC says nothing unless told).
pub const PORT_SPEED: &str = "speed=25000,duplex=full";

/// The UDP ports of the point-to-point link between VM `index`'s uplink `member` (0 or 1)
/// and its port on the lab's switch (`lab::switch`), on the namespace's loopback: (the VM's end, the switch's end).
pub fn link_ports(index: usize, member: usize) -> (u16, u16) {
    let n = (10 * index + member) as u16;
    (21000 + n, 22000 + n)
}

/// A QEMU netdev for one end of a point-to-point link.
pub fn link_netdev(id: &str, local: u16, remote: u16) -> String {
    format!("socket,id={id},udp=127.0.0.1:{remote},localaddr=127.0.0.1:{local}")
}

/// The MAC of the second uplink of the VM whose first NIC has `mac`: the fifth octet's second
/// bit flipped (lab-1's 52:54:00:00:c0:01 has 52:54:00:00:c2:01), unique across the lab.
pub fn second_mac(mac: MacAddr) -> MacAddr {
    let mut b = mac.0;
    b[4] ^= 0x02;
    MacAddr(b)
}

/// How big a lab VM is: the mini-installer needs little; a real OS written from an image
/// needs a disk that holds it (and room to grow), memory for Debian with libvirtd, and a CPU
/// model without SVM, so the installed hypervisor offers plain TCG guests and does not
/// load kvm_amd against an emulated CPU. Not `-cpu max,svm=off`: under TCG, with `max`,
/// Debian's static busybox aborts in glibc's start-up (`_dl_get_origin` wants /proc before
/// anything could mount it), so the installer environment never starts; qemu64 without
/// SVM runs both the installer and Debian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Size {
    #[default]
    MiniInstaller,
    Hypervisor,
}

impl Size {
    pub fn memory_mib(self) -> u32 {
        match self {
            Size::MiniInstaller => 768,
            Size::Hypervisor => 2048,
        }
    }
    pub fn disk(self) -> &'static str {
        match self {
            Size::MiniInstaller => "1G",
            Size::Hypervisor => "8G",
        }
    }
    pub fn cpus(self) -> u32 {
        match self {
            Size::MiniInstaller => 1,
            Size::Hypervisor => 2,
        }
    }
}

impl VmSpec {
    pub fn new(index: usize, firmware: Firmware, mac: MacAddr, hostname: &str, dir: &Path) -> VmSpec {
        VmSpec {
            index,
            name: hostname.to_string(),
            firmware,
            mac,
            tap: format!("ltap{index}"),
            disk: dir.join(format!("{hostname}.qcow2")),
            serial_log: dir.join(format!("{hostname}.serial.log")),
            vars: firmware.is_uefi().then(|| dir.join(format!("{hostname}.OVMF_VARS.fd"))),
            pidfile: dir.join(format!("{hostname}.pid")),
            size: Size::MiniInstaller,
            second_nic: None,
            hardware: Hardware::Virtio,
        }
    }

    pub fn with_hardware(mut self, hardware: Hardware) -> VmSpec {
        self.hardware = hardware;
        self
    }

    /// With a second uplink, for a VM that bonds its two NICs against the lab's switch.
    pub fn bonded(mut self) -> VmSpec {
        self.second_nic = Some(SecondNic {
            mac: second_mac(self.mac),
        });
        self
    }

    pub fn sized(mut self, size: Size) -> VmSpec {
        self.size = size;
        self
    }

    /// Arguments for qemu-system-x86_64. Network first, then the disk (bootindex), so the
    /// VM asks provd at every boot and provd decides install or local disk.
    pub fn qemu_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec![
            "-name".into(),
            self.name.clone(),
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            self.size.memory_mib().to_string(),
            "-smp".into(),
            self.size.cpus().to_string(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-serial".into(),
            format!("file:{}", self.serial_log.display()),
            "-pidfile".into(),
            self.pidfile.display().to_string(),
        ];
        // Bonded: both NICs are links to the lab switch's port channel (25G, full duplex,
        // as 802.3ad wants); else the NIC's tap on provd's bridge.
        let nic = self.hardware.nic();
        let port = if self.second_nic.is_some() {
            let (ours, theirs) = link_ports(self.index, 0);
            a.extend(["-netdev".into(), link_netdev("n0", ours, theirs)]);
            let (ours, theirs) = link_ports(self.index, 1);
            a.extend(["-netdev".into(), link_netdev("n1", ours, theirs)]);
            // e1000e reports its own 1G full duplex; virtio says nothing unless told.
            if nic == "virtio-net-pci" {
                format!(",{PORT_SPEED}")
            } else {
                String::new()
            }
        } else {
            a.extend([
                "-netdev".into(),
                format!("tap,id=n0,ifname={},script=no,downscript=no", self.tap),
            ]);
            String::new()
        };
        if self.size == Size::Hypervisor {
            a.extend(["-cpu".into(), "qemu64,svm=off".into()]);
        }
        match self.firmware {
            Firmware::Bios => {
                a.extend(["-machine".into(), "pc".into()]);
                a.extend([
                    "-device".into(),
                    format!("{nic},netdev=n0,mac={},bootindex=1{port}", self.mac),
                ]);
            }
            uefi => {
                let vars = self.vars.as_ref().expect("UEFI VMs have a vars file");
                let (code, _) = uefi.ovmf().expect("a UEFI firmware");
                if uefi == Firmware::SecureBoot {
                    // The Secure Boot build needs SMM, and its variable flash writable only
                    // from SMM (what makes the enrolled keys trustworthy).
                    a.extend(["-machine".into(), "q35,smm=on".into()]);
                    a.extend(["-global".into(), "driver=cfi.pflash01,property=secure,value=on".into()]);
                } else {
                    a.extend(["-machine".into(), "q35".into()]);
                }
                if uefi == Firmware::UefiHttp {
                    // OVMF's own switches: no PXE boot options, so HTTP boot is the first.
                    for knob in ["IPv4PXESupport", "IPv6PXESupport"] {
                        a.extend(["-fw_cfg".into(), format!("name=opt/org.tianocore/{knob},string=n")]);
                    }
                }
                a.extend([
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
                ]);
                a.extend([
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ]);
                // romfile= (empty): no iPXE ROM, so OVMF's own PXE does DHCP and TFTP.
                a.extend([
                    "-device".into(),
                    format!("{nic},netdev=n0,mac={},romfile=,bootindex=1{port}", self.mac),
                ]);
            }
        }
        if let Some(second) = &self.second_nic {
            a.extend([
                "-device".into(),
                format!("{nic},netdev=n1,mac={},romfile={port}", second.mac),
            ]);
        }
        a.extend([
            "-drive".into(),
            format!("file={},if=none,id=d0,format=qcow2", self.disk.display()),
        ]);
        // A disk serial, as real disks have (discovery reports it).
        let serial = format!("provd-{}", self.name);
        match self.hardware {
            Hardware::Virtio => a.extend([
                "-device".into(),
                format!("virtio-blk-pci,drive=d0,bootindex=2,serial={serial}"),
            ]),
            Hardware::E1000eAhci => a.extend([
                "-device".into(),
                "ahci,id=sata0".into(),
                "-device".into(),
                format!("ide-hd,drive=d0,bus=sata0.0,bootindex=2,serial={serial}"),
            ]),
            Hardware::Nvme => a.extend(["-device".into(), format!("nvme,drive=d0,bootindex=2,serial={serial}")]),
        }
        a
    }
}

/// Firmware of VM `index` (1-based) for a `--firmware` choice: one firmware for every VM;
/// mixed alternates BIOS and UEFI, BIOS first; a comma-separated list gives VM N the Nth
/// (the last one repeats), e.g. `bios,secureboot`.
pub fn firmware_for(choice: &str, index: usize) -> Result<Firmware, String> {
    if choice == "mixed" {
        return Ok(if index % 2 == 1 { Firmware::Bios } else { Firmware::Uefi });
    }
    let list: Vec<&str> = choice.split(',').map(str::trim).collect();
    let pick = list[(index.max(1) - 1).min(list.len() - 1)];
    Firmware::ALL.into_iter().find(|f| f.name() == pick).ok_or_else(|| {
        let names: Vec<&str> = Firmware::ALL.iter().map(|f| f.name()).collect();
        format!(
            "--firmware {choice:?}: {pick:?} is not a firmware ({}, mixed, or a comma-separated list)",
            names.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bios_uses_the_ipxe_rom_and_uefi_the_firmware_pxe_stack() {
        let mac: MacAddr = "52:54:00:00:c0:01".parse().unwrap();
        let bios = VmSpec::new(1, Firmware::Bios, mac, "lab-1", Path::new("/w"))
            .qemu_args()
            .join(" ");
        assert!(bios.contains("-accel tcg") && bios.contains("-machine pc"));
        assert!(bios.contains("virtio-net-pci,netdev=n0,mac=52:54:00:00:c0:01,bootindex=1"));
        assert!(!bios.contains("romfile") && !bios.contains("pflash"));
        assert!(bios.contains("tap,id=n0,ifname=ltap1,script=no,downscript=no"));
        let uefi = VmSpec::new(2, Firmware::Uefi, mac, "lab-2", Path::new("/w"))
            .qemu_args()
            .join(" ");
        assert!(
            uefi.contains("romfile=,bootindex=1") && uefi.contains(OVMF_CODE) && uefi.contains("/w/lab-2.OVMF_VARS.fd")
        );
        assert!(uefi.contains("virtio-blk-pci,drive=d0,bootindex=2"));
        assert!(uefi.contains("-m 768 -smp 1") && !uefi.contains("-cpu"));
    }

    #[test]
    fn a_hypervisor_vm_gets_memory_two_cpus_and_no_svm() {
        let mac = "52:54:00:00:c0:01".parse().unwrap();
        let vm = VmSpec::new(1, Firmware::Bios, mac, "lab-1", Path::new("/w")).sized(Size::Hypervisor);
        let args = vm.qemu_args().join(" ");
        assert!(
            args.contains("-m 2048 -smp 2") && args.contains("-cpu qemu64,svm=off"),
            "{args}"
        );
        // lab.json written before sizes existed still reads, as the mini-installer's size.
        let mut json = serde_json::to_value(&vm).unwrap();
        json.as_object_mut().unwrap().remove("size");
        assert_eq!(
            serde_json::from_value::<VmSpec>(json).unwrap().size,
            Size::MiniInstaller
        );
    }

    #[test]
    fn a_bonded_vm_has_a_second_uplink_without_rom_after_the_boot_nic() {
        let mac = "52:54:00:00:c0:02".parse().unwrap();
        let vm = VmSpec::new(2, Firmware::Uefi, mac, "lab-2", Path::new("/w")).bonded();
        let args = vm.qemu_args().join(" ");
        assert!(!args.contains("ltap"), "links to the switch, not taps: {args}");
        let (ours, theirs) = link_ports(2, 0);
        assert!(args.contains(&format!(
            "socket,id=n0,udp=127.0.0.1:{theirs},localaddr=127.0.0.1:{ours}"
        )));
        assert!(
            args.contains("virtio-net-pci,netdev=n1,mac=52:54:00:00:c2:02,romfile=,speed=25000,duplex=full "),
            "{args}"
        );
        assert!(args.contains("netdev=n0,mac=52:54:00:00:c0:02,romfile=,bootindex=1,speed=25000,duplex=full"));
        // An older lab.json (no second NIC) still reads.
        let mut json = serde_json::to_value(VmSpec::new(1, Firmware::Bios, mac, "l", Path::new("/w"))).unwrap();
        json.as_object_mut().unwrap().remove("second_nic");
        assert_eq!(serde_json::from_value::<VmSpec>(json).unwrap().second_nic, None);
    }

    #[test]
    fn mixed_alternates_starting_with_bios() {
        let f: Vec<Firmware> = (1..=4).map(|i| firmware_for("mixed", i).unwrap()).collect();
        assert_eq!(f, [Firmware::Bios, Firmware::Uefi, Firmware::Bios, Firmware::Uefi]);
        assert_eq!(firmware_for("uefi", 3), Ok(Firmware::Uefi));
        let listed: Vec<Firmware> = (1..=3).map(|i| firmware_for("bios,secureboot", i).unwrap()).collect();
        assert_eq!(listed, [Firmware::Bios, Firmware::SecureBoot, Firmware::SecureBoot]);
        assert_eq!(firmware_for("uefi-http", 1), Ok(Firmware::UefiHttp));
        let e = firmware_for("bios,sb", 2).unwrap_err();
        assert!(
            e.contains("\"sb\" is not a firmware") && e.contains("secureboot"),
            "{e}"
        );
    }

    #[test]
    fn hardware_vms_carry_a_servers_nics_and_disks() {
        let mac = "52:54:00:00:c0:01".parse().unwrap();
        let sata = VmSpec::new(1, Firmware::Bios, mac, "lab-1", Path::new("/w"))
            .bonded()
            .with_hardware(Hardware::for_vm(1));
        let args = sata.qemu_args().join(" ");
        assert!(
            args.contains("e1000e,netdev=n0,mac=52:54:00:00:c0:01,bootindex=1 "),
            "{args}"
        );
        assert!(
            args.contains("e1000e,netdev=n1,mac=52:54:00:00:c2:01,romfile= "),
            "{args}"
        );
        assert!(!args.contains("virtio-net") && !args.contains("speed="), "{args}");
        assert!(
            args.contains("-device ahci,id=sata0 -device ide-hd,drive=d0,bus=sata0.0,bootindex=2,serial=provd-lab-1")
        );
        let nvme =
            VmSpec::new(2, Firmware::SecureBoot, mac, "lab-2", Path::new("/w")).with_hardware(Hardware::for_vm(2));
        let args = nvme.qemu_args().join(" ");
        assert!(
            args.contains("-device nvme,drive=d0,bootindex=2,serial=provd-lab-2"),
            "{args}"
        );
        assert!(
            args.contains("virtio-net-pci,netdev=n0") && !args.contains("virtio-blk"),
            "{args}"
        );
        // lab.json from before hardware models reads as virtio.
        let mut json = serde_json::to_value(&nvme).unwrap();
        json.as_object_mut().unwrap().remove("hardware");
        assert_eq!(
            serde_json::from_value::<VmSpec>(json).unwrap().hardware,
            Hardware::Virtio
        );
    }

    #[test]
    fn secure_boot_vms_enforce_it_with_microsofts_keys_and_http_vms_have_no_pxe() {
        let mac: MacAddr = "52:54:00:00:c0:02".parse().unwrap();
        let sb = VmSpec::new(2, Firmware::SecureBoot, mac, "lab-2", Path::new("/w"));
        let args = sb.qemu_args().join(" ");
        assert!(args.contains("-machine q35,smm=on"), "{args}");
        assert!(args.contains("driver=cfi.pflash01,property=secure,value=on"), "{args}");
        assert!(args.contains(OVMF_CODE_SECBOOT) && args.contains("/w/lab-2.OVMF_VARS.fd"));
        assert_eq!(Firmware::SecureBoot.ovmf(), Some((OVMF_CODE_SECBOOT, OVMF_VARS_MS)));
        assert!(!args.contains("fw_cfg"));
        let http = VmSpec::new(2, Firmware::UefiHttp, mac, "lab-2", Path::new("/w"))
            .qemu_args()
            .join(" ");
        assert!(
            http.contains("name=opt/org.tianocore/IPv4PXESupport,string=n"),
            "{http}"
        );
        assert!(
            http.contains("name=opt/org.tianocore/IPv6PXESupport,string=n"),
            "{http}"
        );
        assert!(http.contains(&format!("readonly=on,file={OVMF_CODE} ")) && !http.contains("smm"));
        // lab.json names firmwares as the command line does.
        assert_eq!(serde_json::to_value(Firmware::SecureBoot).unwrap(), "secureboot");
        assert_eq!(serde_json::to_value(Firmware::UefiHttp).unwrap(), "uefi-http");
    }
}
