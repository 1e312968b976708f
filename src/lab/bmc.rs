//! The lab's BMCs (`provd lab up --bmc ipmi`): one OpenIPMI `ipmi_sim` per VM, inside the
//! lab namespace, answering IPMI 2.0 over LAN (RMCP+) on 127.0.0.1:623N. The simulator owns
//! the VM: its `startcmd` is the VM's QEMU command line plus QEMU's `ipmi-bmc-extern`
//! device wired back to the simulator, so `chassis power on|off|cycle` start, kill and
//! restart QEMU as a real BMC powers a server. Nobody else touches the QEMU process.
//!
//! The lab's config gets, for each lab host, `bmc = { driver = "ipmi", ... }` and a
//! credentials file (0600): `effective_config` writes a copy of the config files with
//! those added (the lab's own files stay as they are).

use super::vm::VmSpec;
use anyhow::Context;
use std::path::{Path, PathBuf};

/// The simulated BMC's user (OpenIPMI's example user, admin privilege).
pub const USER: &str = "ipmiusr";
pub const PASSWORD: &str = "lab-bmc-password";
pub const CREDENTIALS: &str = "lab-ipmi";

/// IPMI-over-LAN port of VM `index` (on the namespace's loopback).
pub fn lan_port(index: usize) -> u16 {
    6230 + index as u16
}

/// Where the simulator listens for QEMU's `ipmi-bmc-extern` chardev.
fn chardev_port(index: usize) -> u16 {
    9100 + index as u16
}

/// ipmi_sim's command file: one management controller (from OpenIPMI's examples).
pub const CMD_EMU: &str = "mc_setbmc 0x20\n\
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
sel_enable 0x20 1000 0x0a\n\
mc_enable 0x20\n";

/// ipmi_sim's LAN config for `vm`: power on at start (the VM boots as soon as the lab is up);
/// power off kills QEMU at once (the lab's systems have no ACPI shutdown to wait for).
pub fn lan_conf(vm: &VmSpec) -> String {
    let mut qemu = vec!["/usr/bin/qemu-system-x86_64".to_string()];
    qemu.extend(vm.qemu_args());
    qemu.extend([
        "-chardev".into(),
        format!(
            "socket,id=ipmi0,host=127.0.0.1,port={},reconnect=10",
            chardev_port(vm.index)
        ),
        "-device".into(),
        "ipmi-bmc-extern,chardev=ipmi0,id=bmc0".into(),
        "-device".into(),
        "isa-ipmi-bt,bmc=bmc0".into(),
    ]);
    let auths = "none md2 md5 straight";
    format!(
        "name \"{name}-bmc\"\n\
         set_working_mc 0x20\n\
         \x20 startlan 1\n\
         \x20   addr 127.0.0.1 {lan}\n\
         \x20   priv_limit admin\n\
         \x20   allowed_auths_callback {auths}\n\
         \x20   allowed_auths_user {auths}\n\
         \x20   allowed_auths_operator {auths}\n\
         \x20   allowed_auths_admin {auths}\n\
         \x20   guid a1234567{index:08x}89abcdefa1234567\n\
         \x20 endlan\n\
         \x20 serial 15 127.0.0.1 {chardev} codec VM\n\
         \x20 startcmd \"{cmd}\"\n\
         \x20 startnow true\n\
         \x20 poweroff_wait 0\n\
         \x20 kill_wait 1\n\
         \x20 user 2 true \"{USER}\" \"{PASSWORD}\" admin 10 {auths}\n",
        name = vm.name,
        lan = lan_port(vm.index),
        index = vm.index,
        chardev = chardev_port(vm.index),
        cmd = qemu.join(" "),
    )
}

/// Write the simulator's files for `vm` under `dir`; returns the ipmi_sim arguments.
pub fn prepare(vm: &VmSpec, dir: &Path) -> anyhow::Result<Vec<String>> {
    let d = dir.join(format!("{}-bmc", vm.name));
    std::fs::create_dir_all(d.join("state"))?;
    std::fs::write(d.join("lan.conf"), lan_conf(vm))?;
    std::fs::write(d.join("cmd.emu"), CMD_EMU)?;
    Ok(vec![
        "-c".into(),
        d.join("lan.conf").display().to_string(),
        "-f".into(),
        d.join("cmd.emu").display().to_string(),
        // -n: keep running without a console on stdin.
        "-n".into(),
        "-s".into(),
        d.join("state").display().to_string(),
    ])
}

/// Lab host `index`'s `bmc` table (IPMI on the namespace's loopback).
pub fn host_bmc(index: usize) -> toml::Table {
    let mut bmc = toml::Table::new();
    bmc.insert("driver".into(), "ipmi".into());
    bmc.insert("address".into(), format!("127.0.0.1:{}", lan_port(index)).into());
    bmc.insert("credentials".into(), CREDENTIALS.into());
    bmc
}

/// The credentials file the lab's provd reads (0600): one `[credentials.NAME]`.
pub fn write_credentials(path: &Path, name: &str, user: &str, password: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    writeln!(
        f,
        "[credentials.{name}]\nusername = \"{user}\"\npassword = \"{password}\""
    )?;
    Ok(())
}

/// Copies of the config files in `out`, the directory the lab's provd is given (so `provd
/// hosts adopt` writes its `hosts-lab.toml` there, not into the source tree). With
/// `secrets`, the credentials file is named in `[daemon]`; every host entry gets the keys
/// `host_keys(hostname)` gives (its BMC, the profile of `--image`, its ports), and every
/// site the keys of `site_keys` (an image lab's `dns`). A file nothing changes
/// is copied as it is; others are re-written as TOML and lose their comments. The originals
/// are untouched.
pub fn effective_config(
    files: &[PathBuf],
    out: &Path,
    secrets: Option<&Path>,
    host_keys: impl Fn(&str) -> toml::Table,
    site_keys: &toml::Table,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    for (n, f) in files.iter().enumerate() {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let mut doc: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", f.display()))?;
        let mut changed = false;
        if let Some(secrets) = secrets
            && let Some(daemon) = doc.get_mut("daemon").and_then(|d| d.as_table_mut())
        {
            daemon.insert("bmc_secrets".into(), secrets.display().to_string().into());
            changed = true;
        }
        if let Some(sites) = doc.get_mut("sites").and_then(|s| s.as_table_mut()) {
            for (_, site) in sites.iter_mut() {
                if let Some(t) = site.as_table_mut() {
                    for (k, v) in site_keys {
                        t.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
                let hosts = site
                    .as_table_mut()
                    .and_then(|s| s.get_mut("hosts"))
                    .and_then(|h| h.as_array_mut());
                for h in hosts.into_iter().flatten() {
                    let Some(t) = h.as_table_mut() else { continue };
                    let name = t
                        .get("hostname")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string();
                    for (k, v) in host_keys(&name) {
                        t.insert(k, v);
                        changed = true;
                    }
                }
            }
        }
        let target = out.join(format!("{n:02}-{}", file_name(f)));
        if changed {
            std::fs::write(target, toml::to_string(&doc)?)?;
        } else {
            std::fs::write(target, text)?;
        }
    }
    Ok(out.to_path_buf())
}

fn file_name(f: &Path) -> String {
    f.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::vm::Firmware;

    #[test]
    fn the_simulator_starts_the_vm_with_the_bmc_device() {
        let vm = VmSpec::new(
            2,
            Firmware::Bios,
            "52:54:00:00:c0:02".parse().unwrap(),
            "lab-2",
            Path::new("/w"),
        );
        let conf = lan_conf(&vm);
        assert!(conf.contains("addr 127.0.0.1 6232"), "{conf}");
        assert!(conf.contains("serial 15 127.0.0.1 9102 codec VM"));
        assert!(conf.contains("port=9102,reconnect=10 -device ipmi-bmc-extern,chardev=ipmi0,id=bmc0"));
        assert!(conf.contains("startcmd \"/usr/bin/qemu-system-x86_64 -name lab-2 "));
        assert!(conf.contains("startnow true") && conf.contains("poweroff_wait 0"));
    }
}
