//! The lab's top-of-rack switch, for an image lab whose hypervisors bond two uplinks with
//! LACP: a small VM (Debian's cloud kernel and `lab/switch/init`, built by
//! `lab/build-installer.sh`) whose Linux bonding driver and VLAN-filtering bridge are the
//! switch, because the lab machine's own kernel may have neither 802.3ad bonding nor
//! 802.1Q. Each hypervisor VM's two NICs are point-to-point links (QEMU socket netdevs on
//! the namespace's loopback, which carry every frame, LACPDUs too) to two switch ports in
//! one port channel; the switch's uplink is a tap on provd's bridge and carries the
//! untagged boot network alone. The tenant VLAN's gateway and DHCP (busybox udhcpd) live on
//! the switch, as on a data-center router: a tenant VM gets an address there and has no
//! path to provd. The switch's second serial port is a root shell for the lab's checks
//! (`lab/switch.py`). Its command line is pure (`qemu_args`); starting it is not.

use super::vm::{PORT_SPEED, link_netdev, link_ports};
use crate::mac::MacAddr;
use anyhow::bail;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The tap of the switch's uplink, a port of provd's bridge.
pub const UPLINK_TAP: &str = "lswup";
/// The tenant network the switch serves on the tenant VLAN: its gateway and DHCP range.
pub const TENANT_GATEWAY: &str = "10.200.100.1/24";
pub const TENANT_RANGE: (&str, &str) = ("10.200.100.50", "10.200.100.99");
pub struct SwitchSpec {
    /// How many hypervisor VMs (each a port channel of two ports).
    pub vms: usize,
    /// The VLANs each port channel trunks (tagged).
    pub trunk: Vec<u16>,
    /// The tenant VLAN the switch serves addresses on, if any.
    pub tenant_vlan: Option<u16>,
    pub dir: PathBuf,
}

impl SwitchSpec {
    pub fn serial_log(&self) -> PathBuf {
        self.dir.join("serial.log")
    }
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }

    /// The switch VM's command line, with `kernel` and `initrd` (boot-assets/lab's).
    pub fn qemu_args(&self, kernel: &Path, initrd: &Path) -> Vec<String> {
        let trunk: Vec<String> = self.trunk.iter().map(u16::to_string).collect();
        let mut append = format!("console=ttyS0 provd.pairs={} provd.trunk={}", self.vms, trunk.join(","));
        if let Some(vid) = self.tenant_vlan {
            append.push_str(&format!(
                " provd.tenant={vid}:{TENANT_GATEWAY}:{}-{}",
                TENANT_RANGE.0, TENANT_RANGE.1
            ));
        }
        let mut a: Vec<String> = [
            "-name",
            "lab-switch",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-smp",
            "1",
            "-display",
            "none",
            "-monitor",
            "none",
        ]
        .map(String::from)
        .to_vec();
        a.extend(["-kernel".into(), kernel.display().to_string()]);
        a.extend(["-initrd".into(), initrd.display().to_string()]);
        a.extend(["-append".into(), append]);
        a.extend(["-serial".into(), format!("file:{}", self.serial_log().display())]);
        a.extend([
            "-chardev".into(),
            format!(
                "socket,id=shell,path={},server=on,wait=off",
                self.console_socket().display()
            ),
        ]);
        a.extend(["-serial".into(), "chardev:shell".into()]);
        a.extend(["-pidfile".into(), self.dir.join("qemu.pid").display().to_string()]);
        // eth0: the uplink; then each VM's two ports, in order (the init counts on it).
        a.extend([
            "-netdev".into(),
            format!("tap,id=up,ifname={UPLINK_TAP},script=no,downscript=no"),
        ]);
        a.extend([
            "-device".into(),
            format!("virtio-net-pci,netdev=up,mac={},romfile=", port_mac(0, 0)),
        ]);
        for vm in 1..=self.vms {
            for member in 0..2 {
                let (theirs, ours) = link_ports(vm, member);
                let id = format!("p{vm}m{member}");
                a.extend(["-netdev".into(), link_netdev(&id, ours, theirs)]);
                a.extend([
                    "-device".into(),
                    format!(
                        "virtio-net-pci,netdev={id},mac={},romfile=,{PORT_SPEED}",
                        port_mac(vm, member)
                    ),
                ]);
            }
        }
        a
    }
}

/// The switch's port MACs (52:54:00:5e:VM:MEMBER; the uplink is VM 0).
fn port_mac(vm: usize, member: usize) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x5e, vm as u8, member as u8 + 1])
}

/// Start the switch in the lab namespace (`spawn`) and wait until its init says every port
/// channel exists (3 minutes at most: TCG).
pub fn start(
    spec: &SwitchSpec,
    assets: &Path,
    spawn: impl Fn(&Path, &[String], &Path) -> anyhow::Result<u32>,
) -> anyhow::Result<()> {
    let kernel = assets.join("lab/vmlinuz");
    let initrd = assets.join("lab/switch.cpio.gz");
    if !initrd.exists() {
        bail!("{} is missing: lab/build-installer.sh builds it", initrd.display());
    }
    std::fs::create_dir_all(&spec.dir)?;
    let pid = spawn(
        Path::new("/usr/bin/qemu-system-x86_64"),
        &spec.qemu_args(&kernel, &initrd),
        &spec.dir.join("qemu.log"),
    )?;
    let started = Instant::now();
    loop {
        let log = std::fs::read(spec.serial_log()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        if let Some(line) = log.lines().find(|l| l.starts_with("provd-lab-switch: ready")) {
            println!("provd lab: switch up ({}s): {line}", started.elapsed().as_secs());
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(180) || !Path::new(&format!("/proc/{pid}")).exists() {
            bail!(
                "the lab switch did not come up; its console ({}) ends:\n{}",
                spec.serial_log().display(),
                super::report::console_tail(&log, 15)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vm_has_a_port_channel_of_two_links_and_the_uplink_is_eth0() {
        let spec = SwitchSpec {
            vms: 2,
            trunk: vec![20, 100],
            tenant_vlan: Some(100),
            dir: PathBuf::from("/w/switch"),
        };
        let args = spec
            .qemu_args(Path::new("/a/vmlinuz"), Path::new("/a/switch.cpio.gz"))
            .join(" ");
        assert!(args.contains(
            "console=ttyS0 provd.pairs=2 provd.trunk=20,100 provd.tenant=100:10.200.100.1/24:10.200.100.50-10.200.100.99"
        ));
        let up = args.find("ifname=lswup").unwrap();
        let first = args.find("id=p1m0").unwrap();
        assert!(up < first, "the uplink is the first NIC (eth0): {args}");
        // Each end names the other: VM 2's second uplink.
        let (vm_end, switch_end) = link_ports(2, 1);
        assert_eq!((vm_end, switch_end), (21021, 22021));
        assert!(args.contains(&format!(
            "socket,id=p2m1,udp=127.0.0.1:{vm_end},localaddr=127.0.0.1:{switch_end}"
        )));
        assert_eq!(
            args.matches(PORT_SPEED).count(),
            4,
            "every port-channel port is 25G full duplex"
        );
        assert!(args.contains("path=/w/switch/console.sock,server=on,wait=off"));
    }
}
