//! The Debian package on a clean Debian 12: `contrib/deb/build.sh` packages this build's
//! binary; a fresh bookworm root made by debootstrap (from the mirror this machine's own apt
//! sources name) installs it with `apt-get install ./provd_*.deb`, which pulls its declared
//! dependencies. Then: `provd` on PATH, `--version` names the git revision, the starter
//! config passes `provd check /etc/provd`, `man provd-vm-clone` shows the page, bash
//! completes `provd vm cl` to `clone`, the state directory is provd's and 0700. Purge keeps
//! the state only when `/var/lib/provd/keep-on-purge` says so.
//!
//! Needs root, debootstrap, dpkg-deb and the Debian package registry. The root is removed
//! (and /proc unmounted) even when an assertion fails.

mod common;

use common::{Workdir, require_root_and_tools};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bookworm mirror this machine's apt uses (no address of our own in the repo).
fn debian_mirror() -> String {
    let deb822 = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    let from_deb822 = deb822
        .split("\n\n")
        .filter(|stanza| {
            stanza
                .lines()
                .any(|l| l.starts_with("Suites:") && l.contains("bookworm "))
        })
        .find_map(|stanza| stanza.lines().find_map(|l| l.strip_prefix("URIs:")))
        .map(|u| u.split_whitespace().next().unwrap_or_default().to_string());
    let list = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    let from_list = list.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 3 && f[0] == "deb" && f[2] == "bookworm").then(|| f[1].to_string())
    });
    from_deb822
        .or(from_list)
        .expect("no bookworm mirror in this machine's apt sources")
}

/// A Debian root with /proc mounted; unmounted and removed on drop.
struct Chroot {
    dir: PathBuf,
}

impl Chroot {
    fn create(dir: PathBuf) -> Chroot {
        let c = Chroot { dir };
        // Downloaded .debs are kept between runs on this machine (a second run only unpacks).
        let cache = Path::new("/var/cache/provd-tests/debootstrap");
        std::fs::create_dir_all(cache).unwrap();
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", "--include=ca-certificates"])
            .arg(format!("--cache-dir={}", cache.display()))
            .arg("bookworm")
            .arg(&c.dir)
            .arg(debian_mirror())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "debootstrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::run(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(c.dir.join("proc")),
        );
        c
    }

    /// `sh -c script` inside the root; its output whatever the exit status.
    fn sh(&self, script: &str) -> Output {
        Command::new("chroot")
            .arg(&self.dir)
            .args(["/bin/sh", "-c", script])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C")
            .output()
            .unwrap()
    }

    /// The same; it must succeed; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.join("proc")).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_package_installs_on_a_clean_debian_12_checks_its_config_and_purges() {
    require_root_and_tools(&["debootstrap", "dpkg-deb", "chroot"]);
    let work = Workdir::new();
    let built = common::run(
        Command::new(common::repo("contrib/deb/build.sh"))
            .args(["--binary", common::provd_bin(), "--out"])
            .arg(work.path("deb")),
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&built.stdout).trim().to_string());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("provd_") && name.ends_with("_amd64.deb"), "{name}");

    let root = Chroot::create(work.path("root"));
    std::fs::copy(&deb, root.dir.join("tmp").join(&name)).unwrap();
    root.ok("apt-get update -q");
    root.ok(&format!("apt-get install -y -q /tmp/{name} man-db"));

    // On PATH, naming its revision; the starter config passes the daemon's own check.
    let version = root.ok("provd --version");
    assert!(version.starts_with("provd ") && version.contains("(git "), "{version}");
    let check = root.sh("provd check /etc/provd");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Man pages per command, and shell completion.
    let page = root.ok("MANPAGER=cat COLUMNS=100 man provd-vm-clone");
    assert!(page.contains("provd-vm-clone") && page.contains("--linked"), "{page}");
    let completed = root.ok("bash -c '. /usr/share/bash-completion/completions/provd; \
         COMP_WORDS=(provd vm cl); COMP_CWORD=2; _provd provd cl vm; echo ${COMPREPLY[@]}'");
    assert!(completed.split_whitespace().any(|w| w == "clone"), "{completed}");
    // The service user, its state directory (0700), the unit and the templates.
    let state = root.ok("stat -c '%U %a' /var/lib/provd /var/lib/provd/state");
    assert_eq!(state, "provd 700\nprovd 700\n");
    root.ok("test -f /lib/systemd/system/provd.service && grep -q 'ExecStart=/usr/bin/provd serve' /lib/systemd/system/provd.service");
    root.ok("test -f /usr/share/provd/templates/ipxe/boot.ipxe.j2 && test -f /usr/share/provd/examples/site-configs/example.toml");
    root.ok("dpkg-query -W -f='${Conffiles}' provd | grep -q /etc/provd/provd.toml");

    // Purge with the admin's marker: the state stays; without it, it goes.
    root.ok("touch /var/lib/provd/state/leases-were-here /var/lib/provd/keep-on-purge");
    root.ok("apt-get purge -y -q provd");
    root.ok("test ! -e /usr/bin/provd && test -e /var/lib/provd/state/leases-were-here");
    root.ok(&format!("apt-get install -y -q /tmp/{name}"));
    root.ok("test -e /var/lib/provd/state/leases-were-here");
    root.ok("rm /var/lib/provd/keep-on-purge && apt-get purge -y -q provd");
    root.ok("test ! -e /var/lib/provd && test ! -e /etc/provd && ! getent passwd provd");
}
