//! The lab's private network and the processes in it: namespace `provd-lab` with bridge
//! `labbr0` (provd's address) and one tap per VM (or the lab switch's uplink), its
//! resolver and hosts files, commands run there, processes started
//! there in their own process group, and threads that enter it to talk to provd's API.
//! Which `ip` commands build the network is pure (`network_commands`); running them is not.

use anyhow::{Context, bail};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

pub const NAMESPACE: &str = "provd-lab";
pub const BRIDGE: &str = "labbr0";

/// Run `cmd`; its stderr is the error when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// The tap of VM `index` (1-based).
pub fn tap(index: usize) -> String {
    format!("ltap{index}")
}

/// How the VMs meet provd's bridge: each VM's one NIC on a bridge port (the mini-installer
/// lab), or through the lab's switch (`lab::switch`), whose port channels take each VM's
/// two bonded uplinks and trunk these VLANs, and whose uplink alone is on provd's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplinks {
    One,
    /// `tenant_vlan`: the VLAN the switch serves tenant addresses on (the profile's tenant
    /// bridge's).
    Bonded {
        trunk: Vec<u16>,
        tenant_vlan: Option<u16>,
    },
}

/// The commands (program, then arguments) that build the lab's network inside the
/// namespace, after `ip netns add`: loopback up (the switch's links run over it), the
/// bridge with provd's `address/prefix_len`, and a tap per VM or the switch's uplink tap.
pub fn network_commands(
    address: std::net::Ipv4Addr,
    prefix_len: u8,
    vms: usize,
    uplinks: &Uplinks,
) -> Vec<Vec<String>> {
    let ns = |rest: &[&str]| -> Vec<String> {
        ["ip", "-n", NAMESPACE]
            .iter()
            .chain(rest)
            .map(|s| s.to_string())
            .collect()
    };
    let mut cmds = vec![
        ns(&["link", "set", "lo", "up"]),
        ns(&["link", "add", BRIDGE, "type", "bridge"]),
        ns(&["addr", "add", &format!("{address}/{prefix_len}"), "dev", BRIDGE]),
        ns(&["link", "set", BRIDGE, "up"]),
    ];
    match uplinks {
        Uplinks::One => {
            for i in 1..=vms {
                cmds.extend(tap_commands(&tap(i)));
            }
        }
        Uplinks::Bonded { .. } => cmds.extend(tap_commands(crate::lab::switch::UPLINK_TAP)),
    }
    cmds
}

/// Add `tap` to the bridge (VMs started later, `provd lab add-vm`, get theirs this way).
pub fn tap_commands(tap: &str) -> Vec<Vec<String>> {
    [
        vec!["tuntap", "add", tap, "mode", "tap"],
        vec!["link", "set", tap, "master", BRIDGE, "up"],
    ]
    .into_iter()
    .map(|rest| {
        ["ip", "-n", NAMESPACE]
            .into_iter()
            .chain(rest)
            .map(String::from)
            .collect()
    })
    .collect()
}

/// Run each of `commands` (program, then arguments) in order; the first failure stops.
pub fn ip_all(commands: &[Vec<String>]) -> anyhow::Result<()> {
    for c in commands {
        run(Command::new(&c[0]).args(&c[1..]))?;
    }
    Ok(())
}

pub fn exists() -> bool {
    Path::new(&format!("/var/run/netns/{NAMESPACE}")).exists()
}

/// Run `f` on a thread inside the lab namespace (for talking to provd's API on loopback).
pub fn in_namespace<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> anyhow::Result<T> {
    let ns = File::open(format!("/var/run/netns/{NAMESPACE}")).context("the lab namespace is gone")?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is a valid namespace file.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow::anyhow!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
}

/// Start `program` in the namespace with its output in `log`; its pid.
pub fn spawn_in_namespace(program: &Path, args: &[String], log: &Path) -> anyhow::Result<u32> {
    let logf = File::create(log)?;
    let child = Command::new("ip")
        .args(["netns", "exec", NAMESPACE])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(logf.try_clone()?)
        .stderr(logf)
        // Its own process group: a Ctrl-C at `provd lab up` must not kill the lab.
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(child.id())
}

/// Where `ip netns exec` finds the namespace's own /etc/hosts.
fn hosts_dir() -> std::path::PathBuf {
    std::path::PathBuf::from("/etc/netns").join(NAMESPACE)
}

/// Names for processes in the namespace come from the lab's DNS server at `server` alone
/// (`ip netns exec` bind-mounts these files over /etc): its resolv.conf names that server
/// and searches `domain`, its hosts file names only localhost, so a host's name resolves
/// only as provd published it.
pub fn write_resolver(server: std::net::Ipv4Addr, domain: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(hosts_dir())?;
    std::fs::write(hosts_dir().join("hosts"), "127.0.0.1 localhost\n")?;
    std::fs::write(
        hosts_dir().join("resolv.conf"),
        format!("nameserver {server}\nsearch {domain}\n"),
    )?;
    Ok(())
}

/// SIGKILL every process in the namespace, then remove it (with its bridge and taps).
pub fn remove() -> anyhow::Result<()> {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", NAMESPACE]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) on pids the kernel listed for the namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    if exists() {
        ip(&["netns", "del", NAMESPACE])?;
    }
    let _ = std::fs::remove_dir_all(hosts_dir());
    let _ = std::fs::remove_dir("/etc/netns"); // only if now empty
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_is_a_bridge_with_provds_address_and_a_tap_per_vm() {
        let cmds = network_commands(std::net::Ipv4Addr::new(10, 66, 0, 1), 24, 2, &Uplinks::One);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            text,
            [
                "ip -n provd-lab link set lo up",
                "ip -n provd-lab link add labbr0 type bridge",
                "ip -n provd-lab addr add 10.66.0.1/24 dev labbr0",
                "ip -n provd-lab link set labbr0 up",
                "ip -n provd-lab tuntap add ltap1 mode tap",
                "ip -n provd-lab link set ltap1 master labbr0 up",
                "ip -n provd-lab tuntap add ltap2 mode tap",
                "ip -n provd-lab link set ltap2 master labbr0 up",
            ]
        );
        // Every command stays inside the lab's namespace.
        assert!(cmds.iter().all(|c| c[1..3] == ["-n", NAMESPACE]));
    }

    #[test]
    fn bonded_vms_meet_provd_only_through_the_switch_uplink() {
        let uplinks = Uplinks::Bonded {
            trunk: vec![20, 100],
            tenant_vlan: Some(100),
        };
        let cmds = network_commands(std::net::Ipv4Addr::new(10, 66, 0, 1), 24, 2, &uplinks);
        let text: Vec<String> = cmds.iter().map(|c| c[3..].join(" ")).collect();
        assert_eq!(
            &text[4..],
            ["tuntap add lswup mode tap", "link set lswup master labbr0 up"]
        );
        assert!(
            !text.iter().any(|t| t.contains("ltap")),
            "no VM is on provd's bridge itself"
        );
    }
}
