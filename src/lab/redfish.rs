//! The lab's Redfish BMC (`provd lab up --bmc redfish`): the VMs become libvirt domains of a
//! libvirtd that runs inside the lab namespace (in a private mount namespace, so nothing of
//! it outlives the lab), and sushy-tools' Redfish emulator (the one OpenStack Ironic is
//! tested with; `lab/deps.sh` installs it in a venv) answers for them over HTTPS with a
//! self-signed certificate and HTTP Basic credentials. provd pins that certificate's
//! SHA-256 in each lab host's `bmc` entry. Power and boot overrides then go Redfish ->
//! sushy -> libvirt -> QEMU, as Redfish -> BMC -> server does.

use super::vm::{Firmware, VmSpec};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

pub const SUSHY: &str = "/opt/provd-test/sushy/bin";
pub const PORT: u16 = 8443;
pub const USER: &str = "admin";
pub const PASSWORD: &str = "lab-redfish-password";
pub const CREDENTIALS: &str = "lab-redfish";

/// The lab libvirtd's URI (its socket in the lab's work directory).
pub fn libvirt_uri(work: &Path) -> String {
    format!("qemu:///system?socket={}/libvirt-run/libvirt-sock", work.display())
}

/// A stable UUID per lab VM: the Redfish system id provd's host entry names.
pub fn system_id(vm: &VmSpec) -> String {
    let m = vm.mac.to_string().replace(':', "");
    format!("00000000-0000-4000-8000-{m}")
}

/// The VM as a libvirt domain (pure): the same machine `VmSpec::qemu_args` describes, TCG,
/// network first, then the disk.
pub fn domain_xml(vm: &VmSpec) -> String {
    let (machine, loader, rom) = match vm.firmware {
        Firmware::Bios => ("pc", String::new(), ""),
        // `lab::plan` refuses the other firmwares with a Redfish BMC.
        _ => (
            "q35",
            format!(
                "<loader readonly='yes' type='pflash'>{}</loader><nvram>{}</nvram>",
                super::vm::OVMF_CODE,
                vm.vars.as_ref().expect("UEFI VMs have a vars file").display()
            ),
            // No iPXE ROM: OVMF's own PXE, as with QEMU directly.
            "<rom enabled='no'/>",
        ),
    };
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>768</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='{machine}'>hvm</type>{loader}</os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
      <serial>provd-{name}</serial>
      <boot order='2'/>
    </disk>
    <interface type='ethernet'>
      <mac address='{mac}'/>
      <target dev='{tap}' managed='no'/>
      <model type='virtio'/>
      {rom}
      <boot order='1'/>
    </interface>
    <serial type='file'><source path='{serial}' append='off'/><target port='0'/></serial>
  </devices>
</domain>
",
        name = vm.name,
        uuid = system_id(vm),
        disk = vm.disk.display(),
        mac = vm.mac,
        tap = vm.tap,
        serial = vm.serial_log.display(),
    )
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

fn virsh(work: &Path, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("virsh").args(["-q", "-c", &libvirt_uri(work)]).args(args))
}

/// Start libvirtd (and virtlogd) inside the lab namespace, private mounts, sockets under
/// `work/libvirt-run`; wait until it answers.
pub fn start_libvirtd(
    work: &Path,
    spawn: impl Fn(&Path, &[String], &Path) -> anyhow::Result<u32>,
) -> anyhow::Result<()> {
    let run_dir = work.join("libvirt-run");
    std::fs::create_dir_all(&run_dir)?;
    let conf = work.join("libvirtd.conf");
    std::fs::write(&conf, "listen_tcp = 0\nlisten_tls = 0\n")?;
    let script = format!(
        "set -e
mkdir -p /run/libvirt
mount --bind {run} /run/libvirt
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt/qemu; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
mkdir -p /var/lib/libvirt/qemu/nvram /var/log/libvirt/qemu
virtlogd -d -p /run/libvirt/virtlogd.pid
exec libvirtd -p /run/libvirt/libvirtd.pid -f {conf}",
        run = run_dir.display(),
        conf = conf.display(),
    );
    spawn(
        Path::new("/usr/bin/unshare"),
        &[
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
        &work.join("libvirtd.log"),
    )?;
    let start = Instant::now();
    while virsh(work, &["list"]).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!(
                "the lab's libvirtd did not answer (log {})",
                work.join("libvirtd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Define and start `vm` as a domain of the lab's libvirtd.
pub fn start_vm(work: &Path, vm: &VmSpec) -> anyhow::Result<()> {
    let xml = work.join(format!("{}.xml", vm.name));
    std::fs::write(&xml, domain_xml(vm))?;
    virsh(work, &["define", &xml.display().to_string()])?;
    virsh(work, &["start", &vm.name])?;
    Ok(())
}

/// The emulator's certificate (self-signed, as a BMC's), its SHA-256 fingerprint, the
/// htpasswd file (bcrypt, sushy's only format), and the emulator itself on
/// 127.0.0.1:`PORT` inside the namespace. Returns the fingerprint.
pub fn start_emulator(
    work: &Path,
    spawn: impl Fn(&Path, &[String], &Path) -> anyhow::Result<u32>,
) -> anyhow::Result<String> {
    let emulator = PathBuf::from(SUSHY).join("sushy-emulator");
    if !emulator.exists() {
        bail!("--bmc redfish needs sushy-tools in {SUSHY}: run lab/deps.sh");
    }
    let (cert, key) = (work.join("redfish.crt"), work.join("redfish.key"));
    let fingerprint = self_signed_certificate(&cert, &key)?;
    let line = htpasswd_line(USER, PASSWORD)?;
    std::fs::write(work.join("redfish.htpasswd"), line)?;
    std::fs::write(
        work.join("sushy.conf"),
        format!(
            "SUSHY_EMULATOR_AUTH_FILE = '{}'\n",
            work.join("redfish.htpasswd").display()
        ),
    )?;
    let args: Vec<String> = [
        "-i",
        "127.0.0.1",
        "-p",
        &PORT.to_string(),
        "--libvirt-uri",
        &libvirt_uri(work),
        "--config",
        &work.join("sushy.conf").display().to_string(),
        "--ssl-certificate",
        &cert.display().to_string(),
        "--ssl-key",
        &key.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn(&emulator, &args, &work.join("sushy.log"))?;
    Ok(fingerprint)
}

/// A self-signed certificate for 127.0.0.1 (as a BMC has) made by openssl into `cert` and
/// `key`; returns its SHA-256 fingerprint as openssl prints it (what a host entry pins).
pub fn self_signed_certificate(cert: &Path, key: &Path) -> anyhow::Result<String> {
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(key)
        .arg("-out")
        .arg(cert))?;
    let fp = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert))?;
    Ok(fp
        .trim()
        .split('=')
        .nth(1)
        .context("openssl printed no fingerprint")?
        .to_string())
}

/// One htpasswd line for sushy-tools' auth file (bcrypt, its only format; hashed by the
/// bcrypt module of sushy's own venv).
pub fn htpasswd_line(user: &str, password: &str) -> anyhow::Result<String> {
    let hash = run(Command::new(format!("{SUSHY}/python")).args([
        "-c",
        &format!("import bcrypt; print(bcrypt.hashpw(b'{password}', bcrypt.gensalt()).decode())"),
    ]))?;
    Ok(format!("{user}:{}\n", hash.trim()))
}

/// The credentials file the lab's provd reads (0600).
pub fn write_credentials_file(path: &Path) -> anyhow::Result<()> {
    super::bmc::write_credentials(path, CREDENTIALS, USER, PASSWORD)
}

/// Lab host `vm`'s `bmc` table: the emulator, its pinned certificate, the VM's system id.
pub fn host_bmc(vm: &VmSpec, fingerprint: &str) -> toml::Table {
    let mut bmc = toml::Table::new();
    bmc.insert("driver".into(), "redfish".into());
    bmc.insert("address".into(), format!("https://127.0.0.1:{PORT}").into());
    bmc.insert("credentials".into(), CREDENTIALS.into());
    bmc.insert("fingerprint".into(), fingerprint.into());
    bmc.insert("system".into(), system_id(vm).into());
    bmc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lab_vm_as_a_domain() {
        let vm = VmSpec::new(
            1,
            Firmware::Bios,
            "52:54:00:00:c0:01".parse().unwrap(),
            "lab-1",
            Path::new("/w"),
        );
        let xml = domain_xml(&vm);
        assert!(
            xml.contains("<uuid>00000000-0000-4000-8000-52540000c001</uuid>"),
            "{xml}"
        );
        assert!(xml.contains("<target dev='ltap1' managed='no'/>") && xml.contains("<boot order='1'/>"));
        assert!(xml.contains("<domain type='qemu'>") && !xml.contains("rom enabled"));
        let uefi = VmSpec::new(
            2,
            Firmware::Uefi,
            "52:54:00:00:c0:02".parse().unwrap(),
            "lab-2",
            Path::new("/w"),
        );
        let xml = domain_xml(&uefi);
        assert!(
            xml.contains("<rom enabled='no'/>")
                && xml.contains("machine='q35'")
                && xml.contains("/w/lab-2.OVMF_VARS.fd")
        );
    }
}
