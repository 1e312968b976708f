//! The installer environment's disk choice (lab/installer/disks.sh), run by busybox's sh as
//! the installer runs it, against sysfs trees made here the way the kernel lays them out: an
//! AHCI (SATA) disk behind its SCSI device, an NVMe namespace under its controller, a
//! virtio disk, and what an install must never pick (a loop device, an optical drive, a
//! removable USB stick), each smaller than every real disk.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// One block device: its sysfs directory under `devices`, `/sys/block/NAME` pointing at it.
fn block(sys: &Path, devices_path: &str, name: &str, bytes: u64, removable: bool) -> std::path::PathBuf {
    let dir = sys.join("devices").join(devices_path).join("block").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("size"), format!("{}\n", bytes / 512)).unwrap();
    std::fs::write(dir.join("removable"), if removable { "1\n" } else { "0\n" }).unwrap();
    std::fs::create_dir_all(sys.join("block")).unwrap();
    symlink(&dir, sys.join("block").join(name)).unwrap();
    dir
}

fn fake_sysfs(sys: &Path) {
    // SATA on AHCI port 3 (ata3): its serial in VPD page 0x80, after the 4-byte header.
    let sda = block(
        sys,
        "pci0000:00/0000:00:1f.2/ata3/host2/target2:0:0/2:0:0:0",
        "sda",
        2_000_000_000_000,
        false,
    );
    symlink(sda.parent().unwrap().parent().unwrap(), sda.join("device")).unwrap();
    let mut page = vec![0u8, 0x80, 0, 12];
    page.extend_from_slice(b"WD-WCC4N1234");
    std::fs::write(sda.parent().unwrap().parent().unwrap().join("vpd_pg80"), page).unwrap();
    // NVMe namespace 1 of the controller at 0000:3b:00.0; the serial is the controller's.
    let nvme = block(
        sys,
        "pci0000:3a/0000:3a:00.0/0000:3b:00.0/nvme/nvme0",
        "nvme0n1",
        480_103_981_056,
        false,
    );
    std::fs::write(nvme.join("nsid"), "1\n").unwrap();
    let controller = nvme.parent().unwrap().parent().unwrap();
    symlink(controller, nvme.join("device")).unwrap();
    std::fs::write(controller.join("serial"), "S4EVNX0N123456      \n").unwrap();
    // virtio-blk at 0000:00:04.0, its serial in its own directory.
    let vda = block(sys, "pci0000:00/0000:00:04.0/virtio2", "vda", 1_000_000_000_000, false);
    std::fs::write(vda.join("serial"), "provd-lab-1").unwrap();
    // Never candidates: smaller than every disk, so "smallest" would take them.
    block(sys, "virtual", "loop0", 1 << 20, false);
    block(
        sys,
        "pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/0:0:0:0",
        "sr0",
        1 << 20,
        true,
    );
    block(
        sys,
        "pci0000:00/0000:00:14.0/usb1/1-1/host6/target6:0:0/6:0:0:0",
        "sdb",
        8 << 30,
        true,
    );
}

fn run(sys: &Path, script: &str) -> String {
    let out = Command::new("/bin/busybox")
        .args(["sh", "-c", &format!(". lab/installer/disks.sh; {script}")])
        .env("SYS", sys)
        .output()
        .expect("busybox (busybox-static) runs the installer's shell");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn each_rule_picks_its_disk_and_never_removable_loop_or_optical_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let sys = tmp.path();
    fake_sysfs(sys);
    assert_eq!(run(sys, "disks | tr '\\n' ' '"), "nvme0n1 sda vda");
    for (rule, disk) in [
        ("smallest", "nvme0n1"),
        ("largest", "sda"),
        ("serial:S4EVNX0N123456", "nvme0n1"),
        ("serial:WD-WCC4N1234", "sda"),
        ("serial:provd-lab-1", "vda"),
        ("path:/dev/disk/by-path/pci-0000:00:1f.2-ata-3.0", "sda"),
        ("path:/dev/disk/by-path/pci-0000:3b:00.0-nvme-1", "nvme0n1"),
        ("path:/dev/disk/by-path/pci-0000:00:04.0", "vda"),
        ("path:/dev/vda", "vda"),
        // 900 GB to 1.1 TB: the virtio disk; 1.5 TB and up: the SATA disk.
        ("size:900000000000-1100000000000", "vda"),
        ("size:1500000000000-", "sda"),
        // Nothing matches: no disk rather than a guess.
        ("serial:nope", ""),
        ("path:/dev/sdb", ""),
        ("path:/dev/disk/by-path/pci-0000:00:1f.2-ata-1.0", ""),
        ("size:0-100000000", ""),
    ] {
        assert_eq!(run(sys, &format!("pick_disk {rule}")), disk, "rule {rule}");
    }
    // NVMe and MMC partitions take a "p"; others do not.
    assert_eq!(
        run(
            sys,
            "part_dev /dev/nvme0n1 3; part_dev /dev/vda 3; part_dev /dev/mmcblk0 1"
        )
        .replace('\n', " "),
        "/dev/nvme0n1p3 /dev/vda3 /dev/mmcblk0p1"
    );
}

/// The wipe guard's question: does a disk (or a partition of it) hold a file system? Asked
/// of files standing in for /dev nodes (blkid reads them alike).
#[test]
fn a_disk_holding_a_file_system_is_told_apart_from_a_blank_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path();
    let blank = dev.join("vdb");
    std::fs::write(&blank, vec![0u8; 4 << 20]).unwrap();
    let used = dev.join("vdc");
    std::fs::write(&used, vec![0u8; 4 << 20]).unwrap();
    // A partition of vdd holds the file system, the disk node itself does not.
    std::fs::write(dev.join("vdd"), vec![0u8; 4 << 20]).unwrap();
    let part = dev.join("vdd1");
    std::fs::write(&part, vec![0u8; 4 << 20]).unwrap();
    for f in [&used, &part] {
        let mk = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(f).output().unwrap();
        assert!(mk.status.success(), "{}", String::from_utf8_lossy(&mk.stderr));
    }
    let holds = |disk: &str| {
        Command::new("/bin/busybox")
            .args([
                "sh",
                "-c",
                &format!(". lab/installer/disks.sh; holds_filesystem {disk}"),
            ])
            .env("DEV", dev)
            .status()
            .unwrap()
            .success()
    };
    assert!(!holds("vdb"), "a blank disk");
    assert!(holds("vdc"), "a file system on the whole disk");
    assert!(holds("vdd"), "a file system on a partition");
}
