//! A real libvirtd (with virtlogd) for one test, isolated from the machine's own: it runs in
//! the test's network namespace and in a private mount namespace where tmpfs covers
//! /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt and /etc/libvirt/qemu (so no
//! stored domain or autostart network of the host is seen, and nothing it writes
//! survives), and where the test's own directory is bind-mounted on /run/libvirt: its
//! socket is then reachable from outside as `qemu:///system?socket=<dir>/libvirt-sock`.
//!
//! Drop kills every process in the network namespace (QEMU guests, libvirtd, virtlogd),
//! which also ends the mount namespace; the Netns guard then deletes the namespace.

use super::{Netns, run};
use provd::pki::{Ca, HostIdentity, Role};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Libvirtd {
    child: Option<Child>,
    pub uri: String,
    pub run_dir: PathBuf,
    pub log: PathBuf,
    ns: String,
    /// How libvirtd itself was started (`restart` runs it again).
    exec: String,
}

impl Libvirtd {
    /// A libvirtd on its local socket only.
    pub fn start(ns: &Netns, dir: &Path) -> Libvirtd {
        Self::start_with(ns, dir, None)
    }

    /// With `tls = Some((pki, address))`, libvirtd also listens for TLS on `address`:16514
    /// with the certificates in `pki`, laid out as /etc/pki (CA/cacert.pem,
    /// libvirt/servercert.pem, libvirt/clientcert.pem, libvirt/private/*.pem), which is
    /// bind-mounted there; the client certificate is what this libvirtd presents when it
    /// dials a peer itself (peer-to-peer migration).
    pub fn start_with(ns: &Netns, dir: &Path, tls: Option<(&Path, &str)>) -> Libvirtd {
        Self::start_with_conf(ns, dir, tls, "")
    }

    /// The same, with more lines for libvirtd.conf (e.g. `tls_allowed_dn_list`).
    pub fn start_with_conf(ns: &Netns, dir: &Path, tls: Option<(&Path, &str)>, extra: &str) -> Libvirtd {
        let run_dir = dir.join("libvirt-run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let conf = dir.join("libvirtd.conf");
        let (conf_text, pki_mount, listen) = match tls {
            None => ("listen_tcp = 0\nlisten_tls = 0\n".to_string(), String::new(), ""),
            Some((pki, addr)) => (
                format!("listen_tcp = 0\nlisten_tls = 1\nlisten_addr = \"{addr}\"\n"),
                format!("mount --bind {} /etc/pki", pki.display()),
                "--listen",
            ),
        };
        std::fs::write(&conf, format!("{conf_text}{extra}")).unwrap();
        let log = dir.join("libvirtd.log");
        let exec = format!(
            "exec libvirtd {listen} -p /run/libvirt/libvirtd.pid -f {conf} >> {log} 2>&1",
            conf = conf.display(),
            log = log.display()
        );
        let script = format!(
            "set -e
mkdir -p /run/libvirt /etc/pki
mount --bind {run} /run/libvirt
{pki_mount}
for d in /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /etc/libvirt/qemu; do mkdir -p $d; mount -t tmpfs tmpfs $d; done
mkdir -p /var/lib/libvirt/qemu/nvram /var/log/libvirt/qemu /var/lib/libvirt/images
virtlogd -d -p /run/libvirt/virtlogd.pid
{exec}",
            run = run_dir.display(),
        );
        let child = ns
            .cmd("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let uri = format!("qemu:///system?socket={}/libvirt-sock", run_dir.display());
        let mut d = Libvirtd {
            child: Some(child),
            uri,
            run_dir,
            log,
            ns: ns.name.clone(),
            exec,
        };
        d.wait_answering();
        d
    }

    /// Stop libvirtd (SIGTERM, as a service stop does) and start it again in the same
    /// namespaces: its guests keep running, and what it keeps on the namespace's tmpfs
    /// (definitions, autostart links) stays, because virtlogd holds the mount namespace.
    /// `as_after_boot`: also clear what a host reboot clears from /run, the driver's
    /// `autostarted` mark (libvirt autostarts domains once per boot, not per restart).
    pub fn restart(&mut self, as_after_boot: bool) {
        let virtlogd = std::fs::read_to_string(self.run_dir.join("virtlogd.pid")).expect("virtlogd's pid file");
        let mut old = self.child.take().expect("libvirtd running");
        unsafe { libc::kill(old.id() as i32, libc::SIGTERM) };
        old.wait().unwrap();
        if as_after_boot {
            let mark = self.run_dir.join("qemu/autostarted");
            assert!(
                mark.exists(),
                "libvirtd's once-per-boot autostart mark at {}",
                mark.display()
            );
            std::fs::remove_file(mark).unwrap();
        }
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "nsenter",
                "--target",
                virtlogd.trim(),
                "--mount",
                "--",
            ])
            .args(["sh", "-c", &self.exec])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        // The old socket answers no more; wait for the new libvirtd.
        self.wait_answering();
    }

    fn wait_answering(&mut self) {
        let d = self;
        let start = Instant::now();
        loop {
            let ok = Command::new("virsh")
                .args(["-q", "-c", &d.uri, "list"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("libvirtd exited ({status}); log:\n{}", d.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "libvirtd did not answer; log:\n{}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A command run where this libvirtd sees its files (its mount namespace, which
    /// virtlogd holds): its /var/lib/libvirt is not the machine's.
    pub fn in_its_mounts(&self, program: &str) -> Command {
        let virtlogd = std::fs::read_to_string(self.run_dir.join("virtlogd.pid")).expect("virtlogd's pid file");
        let mut c = Command::new("nsenter");
        c.args(["--target", virtlogd.trim(), "--mount", "--", program]);
        c
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `virsh -c <this libvirtd> args...`, which must succeed.
    pub fn virsh(&self, args: &[&str]) -> String {
        let out = run(Command::new("virsh").args(["-q", "-c", &self.uri]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        // Everything this libvirtd started lives in the namespace: guests, virtlogd, itself.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.ns]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- libvirtd log ---\n{}", self.log_text());
        }
    }
}

/// /etc/pki for one host: provd's CA, a server and a client certificate for `fqdn`.
pub fn host_pki(ca: &Ca, dir: &Path, fqdn: &str, ip: &str) {
    host_pki_trusting(ca, dir, fqdn, ip, ca.cert_pem(), "", "site test", "site test");
}

/// /etc/pki for a hypervisor of a site in a region: its site's CA signs its certificates,
/// each file carrying `chain` (the site CA's cross-certificate) after the leaf so a peer
/// that trusts only the region's root can verify it; `trusted` is its CA file (the
/// region's root and its own CA). The client certificate has the site's migration OU.
pub fn host_pki_in_region(ca: &Ca, dir: &Path, fqdn: &str, ip: &str, trusted: &str, chain: &str, site: &str) {
    let (server, client) = (provd::pki::host_unit(site), provd::pki::migration_unit(site));
    host_pki_trusting(ca, dir, fqdn, ip, trusted, chain, &server, &client);
}

#[allow(clippy::too_many_arguments)]
fn host_pki_trusting(
    ca: &Ca,
    dir: &Path,
    fqdn: &str,
    ip: &str,
    trusted: &str,
    chain: &str,
    server_unit: &str,
    client_unit: &str,
) {
    let private = dir.join("libvirt/private");
    std::fs::create_dir_all(&private).unwrap();
    std::fs::create_dir_all(dir.join("CA")).unwrap();
    std::fs::write(dir.join("CA/cacert.pem"), trusted).unwrap();
    for (role, name, unit) in [
        (Role::Server, "server", server_unit),
        (Role::Client, "client", client_unit),
    ] {
        let host = HostIdentity {
            fqdn: fqdn.into(),
            short: fqdn.split('.').next().unwrap().into(),
            addresses: vec![ip.parse().unwrap()],
            unit: unit.into(),
        };
        let key = private.join(format!("{name}key.pem"));
        run(Command::new("openssl").args(["genrsa", "-out"]).arg(&key).arg("2048"));
        let csr = run(Command::new("openssl")
            .args(["req", "-new", "-subj", &format!("/CN={fqdn}"), "-key"])
            .arg(&key));
        let cert = ca
            .sign_host(&String::from_utf8_lossy(&csr.stdout), &host, role, 30)
            .unwrap();
        std::fs::write(
            dir.join(format!("libvirt/{name}cert.pem")),
            format!("{}{chain}", cert.pem),
        )
        .unwrap();
    }
}

/// A CA made by `provd pki init` in `<w>/ca`, and provd's libvirt client credentials from it
/// (`provd pki issue-client provd`) in `<w>/client`.
pub fn test_ca(w: &super::Workdir) -> Ca {
    let pki = w.path("ca");
    run(Command::new(super::provd_bin())
        .args(["pki", "init", "--pki-dir"])
        .arg(&pki));
    run(Command::new(super::provd_bin())
        .args(["pki", "issue-client", "provd", "--pki-dir"])
        .arg(&pki)
        .arg("--out")
        .arg(w.path("client")));
    Ca::load(&pki).unwrap()
}
