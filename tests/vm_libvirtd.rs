//! `provd vm` against a real libvirtd + virtlogd (started by the test, TCG guests), with
//! real libguestfs: a tiny CentOS-looking template image built by guestfish, virt-sysprep on
//! it, a linked and a full clone, both booted; then `provd vm deploy` of a clone that fetches
//! its NoCloud identity from a running provd over the bridge it is attached to.
//!
//! The guests boot Debian's cloud kernel with the lab's initramfs (direct kernel boot);
//! the disk holds the template's "OS" that virt-sysprep inspects and cleans.

mod common;

use common::builder::{self, SiteBuilder};
use common::libvirtd::Libvirtd;
use common::{Daemon, Netns, Workdir, repo, require_root_and_tools, run, wait_until};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TEMPLATE: &str = "centos.template";

fn provd_vm(uri: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(common::provd_bin())
        .arg("vm")
        .args(args)
        .args(["--connect", uri])
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn ok_vm(uri: &str, args: &[&str]) -> String {
    let (ok, out, err) = provd_vm(uri, args);
    assert!(ok, "provd vm {args:?} failed:\n{out}\n{err}");
    out + &err
}

/// A command's --json answer (stdout alone; progress goes to stderr).
fn json_vm(uri: &str, args: &[&str]) -> serde_json::Value {
    let (ok, out, err) = provd_vm(uri, args);
    assert!(ok, "provd vm {args:?} failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn sha256(p: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(p));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A 200 MB qcow2 with an ext4 file system that virt-sysprep inspects as CentOS Stream 9,
/// with what sysprep must remove: a machine-id and an SSH host key.
fn build_template_image(w: &Workdir, img: &Path) {
    std::fs::write(
        w.path("os-release"),
        "NAME=\"CentOS Stream\"\nID=centos\nVERSION_ID=9\nPRETTY_NAME=\"CentOS Stream 9\"\n",
    )
    .unwrap();
    std::fs::write(w.path("redhat-release"), "CentOS Stream release 9\n").unwrap();
    std::fs::write(w.path("fstab"), "/dev/sda1 / ext4 defaults 0 1\n").unwrap();
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(img)
        .arg("200M"));
    let script = format!(
        "run
part-disk /dev/sda mbr
mkfs ext4 /dev/sda1
mount /dev/sda1 /
mkdir-p /etc/ssh
mkdir-p /bin
upload {w}/os-release /etc/os-release
upload {w}/redhat-release /etc/redhat-release
upload {w}/fstab /etc/fstab
upload /bin/busybox /bin/sh
chmod 0755 /bin/sh
write /etc/machine-id \"0123456789abcdef0123456789abcdef\\n\"
write /etc/ssh/ssh_host_rsa_key \"template host key\"
",
        w = w.dir.path().display()
    );
    let mut child = Command::new("guestfish")
        .args(["--format=qcow2", "-a"])
        .arg(img)
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "guestfish could not build the template image"
    );
}

/// One file of the image, read with guestfish (None if it does not exist).
fn guest_file(img: &Path, path: &str) -> Option<String> {
    let out = Command::new("guestfish")
        .args(["--ro", "--format=qcow2", "-a"])
        .arg(img)
        .args(["-i", "cat", path])
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Write `text` to `path` inside the image's OS (the guest's own view of its disk).
fn write_guest_file(img: &Path, path: &str, text: &str) {
    let out = Command::new("guestfish")
        .args(["--rw", "--format=qcow2", "-a"])
        .arg(img)
        .args(["-i", "write", path, text])
        .env("LIBGUESTFS_BACKEND", "direct")
        .env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "guestfish write: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn qemu_img_info(p: &Path) -> serde_json::Value {
    let out = run(Command::new("qemu-img").args(["info", "-U", "--output=json"]).arg(p));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn console(w: &Workdir, name: &str) -> String {
    std::fs::read_to_string(w.path(&format!("console/{name}.log"))).unwrap_or_default()
}

/// A lab guest's domain: the lab kernel and initramfs by direct kernel boot, on br0, its
/// console in a file; `disk` for the template, `extra` appended to its kernel command line.
fn guest_xml(w: &Workdir, name: &str, disk: Option<&Path>, mac: &str, extra: &str) -> String {
    let disk = disk
        .map(|d| {
            format!(
                "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{}'/><target dev='vda' bus='virtio'/></disk>",
                d.display()
            )
        })
        .unwrap_or_default();
    format!(
        r#"<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{boot}/vmlinuz</kernel><initrd>{boot}/installer.cpio.gz</initrd>
    <cmdline>console=ttyS0 panic=-1{extra}</cmdline></os>
  <features><acpi/></features>
  <devices>
    {disk}
    <interface type='bridge'><mac address='{mac}'/><source bridge='br0'/><model type='virtio'/></interface>
    <serial type='file'><source path='{console}/{name}.log'/><target port='0'/></serial>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1'/>
  </devices>
</domain>"#,
        boot = w.path("boot").display(),
        console = w.path("console").display(),
    )
}

#[test]
fn sysprep_linked_and_full_clones_and_a_deploy_with_nocloud_identity_on_real_libvirtd() {
    require_root_and_tools(&[
        "libvirtd",
        "virtlogd",
        "virsh",
        "guestfish",
        "virt-sysprep",
        "qemu-img",
        "qemu-system-x86_64",
        "unshare",
    ]);
    let w = Workdir::new();
    // QEMU runs as libvirt's unprivileged user: it must be able to reach the images.
    std::fs::set_permissions(w.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let images = w.path("images");
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(w.path("console")).unwrap();
    // The lab's kernel and initramfs: with no inst.ks= it idles as a plain guest; with a
    // NoCloud serial it fetches its identity.
    let out = run(Command::new(repo("lab/build-installer.sh")).arg(w.path("boot")));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    let ns = Netns::new("vmlv");
    ns.sh("ip link add br0 type bridge && ip addr add 10.231.0.1/24 dev br0 && ip link set br0 up");
    let mut lv = Libvirtd::start(&ns, w.dir.path());
    let uri = lv.uri.clone();

    let tpl_disk = images.join(format!("{TEMPLATE}_system.qcow2"));
    build_template_image(&w, &tpl_disk);
    let xml = guest_xml(&w, TEMPLATE, Some(&tpl_disk), "52:54:00:77:00:01", "");
    let xml_file = w.write("template.xml", &xml);
    lv.virsh(&["define", &xml_file.display().to_string()]);

    // sysprep: real virt-sysprep; the machine-id is emptied, the host key gone, the domain marked.
    let out = ok_vm(&uri, &["sysprep", TEMPLATE]);
    assert!(
        out.contains("Performing \"machine-id\"") && out.contains("marked as a template"),
        "{out}"
    );
    assert_eq!(
        guest_file(&tpl_disk, "/etc/machine-id").as_deref().map(str::trim),
        Some("")
    );
    assert_eq!(
        guest_file(&tpl_disk, "/etc/ssh/ssh_host_rsa_key"),
        None,
        "host keys removed"
    );
    let meta = lv.virsh(&["metadata", TEMPLATE, "https://provd.dev/xmlns/vm/1"]);
    assert!(meta.contains("template") && meta.contains("machine-id"), "{meta}");
    let template_sum = sha256(&tpl_disk);

    // Clones, linked and full.
    let out = ok_vm(&uri, &["clone", TEMPLATE, "linked1", "--linked"]);
    assert!(out.contains("linked clone of"), "{out}");
    let out = ok_vm(&uri, &["clone", TEMPLATE, "full1", "--full"]);
    assert!(out.contains("vda: done"), "per-disk progress: {out}");
    let (linked_disk, full_disk) = (images.join("linked1_system.qcow2"), images.join("full1_system.qcow2"));
    let info = qemu_img_info(&linked_disk);
    assert_eq!(
        info["backing-filename"].as_str(),
        Some(tpl_disk.to_str().unwrap()),
        "{info}"
    );
    assert!(
        qemu_img_info(&full_disk).get("backing-filename").is_none(),
        "a full clone stands alone"
    );
    run(Command::new("qemu-img")
        .args(["compare", "-U"])
        .arg(&tpl_disk)
        .arg(&full_disk));
    let uuids: Vec<String> = [TEMPLATE, "linked1", "full1"]
        .iter()
        .map(|d| lv.virsh(&["domuuid", d]).trim().to_string())
        .collect();
    let macs: Vec<String> = [TEMPLATE, "linked1", "full1"]
        .iter()
        .map(|d| lv.virsh(&["domiflist", d]))
        .collect();
    for i in 0..3 {
        for j in i + 1..3 {
            assert_ne!(uuids[i], uuids[j]);
            assert_ne!(macs[i], macs[j], "MACs: {macs:?}");
        }
    }
    // The template is protected while linked1 depends on it.
    let (ok, _, err) = provd_vm(&uri, &["start", TEMPLATE]);
    assert!(!ok && err.contains("template of linked clones (linked1)"), "{err}");

    // Both clones boot and run (the lab kernel's plain-guest mode needs DHCP: provd serves it).
    let site = SiteBuilder::new("vm", "10.231.0.1")
        .listen("br0")
        .dhcp("unknown_clients = \"lease-only\"")
        .subnet("10.231.0.0/24", ("10.231.0.100", "10.231.0.200"), &[])
        .raw(&format!(
            "[vm.disk_profiles.web]\ndisks = [\n    {{ name = \"system\", size_gib = 1, dir = \"{images}\" }},\n    \
             {{ name = \"data\", size_gib = 2, dir = \"{images}\" }},\n]\n",
            images = images.display()
        ));
    let cfg = w.write("site.toml", &builder::config(&w.path("boot"), &[site.toml()]));
    let daemon = Daemon::start(&ns, &cfg, &w.path("state"), &w.path("provd.log"));
    // "deaf" ignores the ACPI power button (provd.no-acpi): the forced shutdown's guest.
    let deaf = w.write(
        "deaf.xml",
        &guest_xml(&w, "deaf", None, "52:54:00:77:00:0d", " provd.no-acpi"),
    );
    lv.virsh(&["define", &deaf.display().to_string()]);
    for clone in ["linked1", "full1", "deaf"] {
        ok_vm(&uri, &["start", clone]);
    }
    for clone in ["linked1", "full1", "deaf"] {
        wait_until(&format!("{clone} running as a guest"), Duration::from_secs(120), || {
            console(&w, clone).contains("running as a plain guest").then_some(())
        });
    }
    let out = ok_vm(&uri, &["console", "full1"]);
    assert!(out.contains("vnc://127.0.0.1:59"), "{out}");
    assert_eq!(sha256(&tpl_disk), template_sum, "the template's disk is unchanged");
    day_two_power_verbs(&w, &lv, &uri);
    snapshots_of_a_stopped_clone(&lv, &uri, &linked_disk, TEMPLATE);
    live_snapshots_of_a_running_clone(&lv, &uri, &images, &linked_disk);
    hotplug_on_a_running_clone(&lv, &uri, &images);
    autostart_brings_a_vm_back_when_libvirtd_starts(&mut lv, &uri);

    // deploy: placed (one hypervisor here), cloned with a NoCloud serial, started; the guest
    // fetches its identity from provd.
    let key = w.write("id.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtest deployer@provd\n");
    // Inside the namespace: the daemon's API is on that namespace's loopback.
    let out = ns
        .cmd(common::provd_bin())
        .args([
            "vm",
            "deploy",
            "web7",
            "--from",
            TEMPLATE,
            "--linked",
            "--memory",
            "192",
            "--disk-profile",
            "web",
            "--hypervisor",
            &uri,
        ])
        .arg("--ssh-key")
        .arg(&key)
        .arg("--config")
        .arg(&cfg)
        .args(["--server", "127.0.0.1:6767"])
        // The daemon's state directory: the CLI reads the admin API token there.
        .arg("--state-dir")
        .arg(w.path("state"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "deploy: {text}");
    assert!(
        text.contains("placed on") && text.contains("http://10.231.0.1:8080/nocloud/"),
        "{text}"
    );
    let line = wait_until("web7 fetched its identity", Duration::from_secs(120), || {
        console(&w, "web7")
            .lines()
            // A whole line (the console file may be read while the guest writes it).
            .find(|l| l.contains("provd-guest: identity:") && l.contains("ssh-keys="))
            .map(str::to_string)
    });
    assert!(
        line.contains("hostname=web7") && line.contains("ssh-keys=1") && line.contains("instance-id=i-"),
        "{line}"
    );
    // Deployed VMs come back after their hypervisor reboots (no --no-autostart given).
    assert!(text.contains("(started, autostart)"), "{text}");
    assert!(
        lv.virsh(&["dominfo", "web7"])
            .lines()
            .any(|l| l.starts_with("Autostart:") && l.ends_with("enable")),
        "web7 is set to autostart"
    );
    let dom = lv.virsh(&["dumpxml", "web7"]);
    assert!(
        dom.contains("ds=nocloud-net;s=http://10.231.0.1:8080/nocloud/"),
        "{dom}"
    );
    assert!(
        dom.contains("<memory unit='KiB'>196608</memory>"),
        "--memory 192: {dom}"
    );
    // --disk-profile web: the 200 MB template disk grown to 1 GiB, plus a 2 GiB data disk.
    let (web7_disk, web7_data) = (images.join("web7_system.qcow2"), images.join("web7_data.qcow2"));
    assert_eq!(qemu_img_info(&web7_disk)["virtual-size"], 1u64 << 30);
    assert_eq!(qemu_img_info(&web7_data)["virtual-size"], 2u64 << 30);
    assert!(
        dom.contains(web7_data.to_str().unwrap()) && dom.contains("dev='vdb'"),
        "{dom}"
    );
    let events = daemon.cli(&["stats", "--json"]);
    assert!(String::from_utf8_lossy(&events.stdout).contains("\"nocloud\""));

    // Purge: the clones' own disks go (linked1's with the overlay of the external snapshot
    // it still has, down to its own disk); the template's stays and is unprotected again.
    let live_overlay = images.join("linked1_vda.kept.qcow2");
    assert!(live_overlay.exists());
    for (clone, disk) in [("linked1", &linked_disk), ("full1", &full_disk)] {
        ok_vm(&uri, &["purge", clone, "--force"]);
        assert!(!disk.exists(), "{clone}'s disk removed");
    }
    assert!(!live_overlay.exists(), "the snapshot's overlay went with linked1");
    ok_vm(&uri, &["purge", "web7", "--force"]);
    assert!(
        !web7_disk.exists() && !web7_data.exists(),
        "purge removes web7's own disks"
    );
    assert!(tpl_disk.exists());
    assert_eq!(sha256(&tpl_disk), template_sum, "the template's disk is unchanged");
    template_versions(&lv, &uri, &images, &tpl_disk);
    ok_vm(&uri, &["start", TEMPLATE]);
    drop(daemon);
    drop(lv);
}

/// Day-2 verbs on the running clones (issue 38): pause/resume, reset and reboot (the guest
/// boots again: its console shows a new kernel boot id each time), autostart on and off, a
/// graceful shutdown (the lab guest powers off on the ACPI button, as acpid would), and a
/// shutdown of "deaf", whose guest ignores the button: refused after the wait without
/// --force, powered off with it. Each checked by virsh or the guest's console, not by
/// provd's own word.
fn day_two_power_verbs(w: &Workdir, lv: &Libvirtd, uri: &str) {
    let domstate = |d: &str| lv.virsh(&["domstate", d]).trim().to_string();
    ok_vm(uri, &["pause", "full1"]);
    assert_eq!(domstate("full1"), "paused");
    let (ok, _, err) = provd_vm(uri, &["pause", "full1"]);
    assert!(!ok && err.contains("is paused; pause needs it running"), "{err}");
    ok_vm(uri, &["resume", "full1"]);
    assert_eq!(domstate("full1"), "running");

    let boots = || console(w, "full1").matches("running as a plain guest").count();
    assert_eq!(boots(), 1);
    ok_vm(uri, &["reset", "full1"]);
    wait_until("full1 booted again after reset", Duration::from_secs(120), || {
        (boots() == 2).then_some(())
    });
    // A reboot through the guest (ACPI): libvirt powers it on again, with a new boot id.
    ok_vm(uri, &["reboot", "full1"]);
    wait_until("full1 booted again after reboot", Duration::from_secs(120), || {
        (boots() == 3).then_some(())
    });
    let text = console(w, "full1");
    assert!(
        text.contains("power button: powering off"),
        "the guest acted on ACPI:\n{text}"
    );
    let mut ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("provd-installer: boot id ").nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(ids.len(), 3, "{text}");
    ids.dedup();
    assert_eq!(ids.len(), 3, "each boot has its own id: {ids:?}");
    assert_eq!(domstate("full1"), "running");

    let autostart = |d: &str| {
        lv.virsh(&["dominfo", d])
            .lines()
            .find(|l| l.starts_with("Autostart:"))
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
    };
    assert_eq!(autostart("full1").as_deref(), Some("disable"));
    assert!(ok_vm(uri, &["autostart", "full1"]).contains("autostart on"));
    assert_eq!(autostart("full1").as_deref(), Some("enable"));
    ok_vm(uri, &["autostart", "full1", "--off"]);
    assert_eq!(autostart("full1").as_deref(), Some("disable"));

    let (ok, _, err) = provd_vm(uri, &["shutdown", "deaf", "--timeout", "3"]);
    assert!(!ok && err.contains("did not shut down within 3 s"), "{err}");
    assert_eq!(domstate("deaf"), "running", "left running without --force");
    let out = ok_vm(uri, &["shutdown", "deaf", "--timeout", "2", "--force", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).expect(&out);
    assert_eq!(v["outcome"], "forced", "{out}");
    assert_eq!(domstate("deaf"), "shut off");
    ok_vm(uri, &["undefine", "deaf"]);
    // A guest that acts on the button shuts down by itself, well within the wait.
    let out = ok_vm(uri, &["shutdown", "linked1", "--timeout", "60", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or("")).expect(&out);
    assert_eq!(v["outcome"], "graceful", "{out}");
    assert_eq!(domstate("linked1"), "shut off");
    let (ok, _, err) = provd_vm(uri, &["reboot", "linked1"]);
    assert!(!ok && err.contains("is shutoff; reboot needs it running"), "{err}");
}

/// Template versions (issue 38): v1 frozen, the template changed (a file written into its
/// disk), v2 frozen; a clone --from the template is of v2 (it has the file, read back with
/// guestfish, and its disk stands on v2's by qemu-img), one --from the v1 name is of v1;
/// `vm list` shows each one's version; a version is frozen (no start) and is not purged
/// while a clone of it runs or stands on it.
fn template_versions(lv: &Libvirtd, uri: &str, images: &Path, tpl_disk: &Path) {
    let v: serde_json::Value = json_vm(uri, &["template", "version", TEMPLATE, "--json"]);
    assert_eq!(
        (v["version"].as_u64(), v["domain"]["name"].as_str()),
        (Some(1), Some("centos.template-v1")),
        "{v}"
    );
    write_guest_file(tpl_disk, "/etc/provd-release", "2");
    let out = ok_vm(uri, &["template", "version", TEMPLATE]);
    assert!(
        out.contains("centos.template-v2: version 2 of centos.template"),
        "{out}"
    );
    assert!(
        lv.virsh(&["metadata", "centos.template-v2", "https://provd.dev/xmlns/vm/1"])
            .contains("version=\"2\"")
    );

    let out = ok_vm(uri, &["clone", TEMPLATE, "newer", "--full"]);
    assert!(
        out.contains("full clone of centos.template v2 (centos.template-v2)"),
        "{out}"
    );
    ok_vm(uri, &["clone", "centos.template-v1", "older", "--linked"]);
    let older_disk = images.join("older_system.qcow2");
    assert_eq!(
        qemu_img_info(&older_disk)["backing-filename"].as_str(),
        Some(images.join("centos.template-v1_system.qcow2").to_str().unwrap()),
        "older stands on v1's disk"
    );
    assert_eq!(
        guest_file(&images.join("newer_system.qcow2"), "/etc/provd-release")
            .as_deref()
            .map(str::trim),
        Some("2"),
        "newer is of the changed template"
    );
    let listed: Vec<serde_json::Value> = serde_json::from_value(json_vm(uri, &["list", "--json"])).unwrap();
    let version_of = |name: &str| {
        listed.iter().find(|d| d["name"] == name).map(|d| {
            (
                d["template"].as_str().map(str::to_string),
                d["template_version"].as_u64(),
            )
        })
    };
    let of_template = |n| Some((Some(TEMPLATE.to_string()), Some(n)));
    assert_eq!(version_of("newer"), of_template(2));
    assert_eq!(version_of("older"), of_template(1));
    assert_eq!(version_of("centos.template-v1"), of_template(1));
    assert!(
        ok_vm(uri, &["list"])
            .lines()
            .any(|l| l.starts_with("newer ") && l.contains("centos.template v2"))
    );

    ok_vm(uri, &["start", "newer"]);
    let (ok, _, err) = provd_vm(uri, &["purge", "centos.template-v2"]);
    assert!(!ok && err.contains("clones of it run (newer)"), "{err}");
    let (ok, _, err) = provd_vm(uri, &["purge", "centos.template-v1"]);
    assert!(!ok && err.contains("template of linked clones (older)"), "{err}");
    let (ok, _, err) = provd_vm(uri, &["start", "centos.template-v1"]);
    assert!(!ok && err.contains("is frozen"), "{err}");
    let versions: Vec<serde_json::Value> =
        serde_json::from_value(json_vm(uri, &["template", "versions", TEMPLATE, "--json"])).unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(
        versions[1]["running_clones"],
        serde_json::json!(["newer"]),
        "{versions:?}"
    );

    for d in ["newer", "older", "centos.template-v2", "centos.template-v1"] {
        ok_vm(uri, &["purge", d, "--force"]);
    }
    assert!(!images.join("centos.template-v1_system.qcow2").exists());
}

/// Snapshots (issue 38) of linked1, shut off by the verbs before: a file written inside
/// its disk after a snapshot is gone after the revert (read back with guestfish); a revert
/// past a newer snapshot needs --force; the template its clones stand on is refused;
/// `qemu-img snapshot -l` shows the snapshot inside the qcow2 (internal).
fn snapshots_of_a_stopped_clone(lv: &Libvirtd, uri: &str, disk: &Path, template: &str) {
    assert_eq!(lv.virsh(&["domstate", "linked1"]).trim(), "shut off");
    assert!(guest_file(disk, "/etc/provd-marker").is_none());
    ok_vm(uri, &["snapshot", "create", "linked1", "before"]);
    let (ok, _, err) = provd_vm(uri, &["snapshot", "create", "linked1", "before"]);
    assert!(!ok && err.contains("already has a snapshot named \"before\""), "{err}");
    let internal = run(Command::new("qemu-img").args(["snapshot", "-U", "-l"]).arg(disk));
    assert!(
        String::from_utf8_lossy(&internal.stdout).contains("before"),
        "inside the qcow2"
    );

    write_guest_file(disk, "/etc/provd-marker", "written after the snapshot");
    assert_eq!(
        guest_file(disk, "/etc/provd-marker").as_deref().map(str::trim),
        Some("written after the snapshot")
    );
    ok_vm(uri, &["snapshot", "create", "linked1", "after"]);
    let list: serde_json::Value =
        serde_json::from_str(&ok_vm(uri, &["snapshot", "list", "linked1", "--json"])).expect("snapshot list --json");
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before", "after"]);
    assert_eq!(list[0]["newer"], serde_json::json!(["after"]));
    assert_eq!(list[1]["parent"], "before");
    assert_eq!(list[1]["current"], true);

    let (ok, _, err) = provd_vm(uri, &["snapshot", "revert", "linked1", "before"]);
    assert!(!ok && err.contains("1 newer snapshot(s) (after)"), "{err}");
    assert!(
        guest_file(disk, "/etc/provd-marker").is_some(),
        "a refused revert changes nothing"
    );
    ok_vm(uri, &["snapshot", "revert", "linked1", "before", "--force"]);
    assert!(
        guest_file(disk, "/etc/provd-marker").is_none(),
        "the revert restored the disk"
    );
    ok_vm(uri, &["snapshot", "delete", "linked1", "after"]);
    let list: serde_json::Value =
        serde_json::from_str(&ok_vm(uri, &["snapshot", "list", "linked1", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    let (ok, _, err) = provd_vm(uri, &["snapshot", "create", template, "t1"]);
    assert!(!ok && err.contains("linked1"), "the template is protected: {err}");
}

/// Run `script` inside the running guest through its QEMU guest agent (guest-exec), and
/// wait for it to end successfully.
fn guest_exec(lv: &Libvirtd, vm: &str, script: &str) {
    let request = serde_json::json!({
        "execute": "guest-exec",
        "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": true}
    });
    let answer: serde_json::Value =
        serde_json::from_str(&lv.virsh(&["qemu-agent-command", vm, &request.to_string()])).unwrap();
    let pid = answer["return"]["pid"].as_i64().expect("guest-exec pid");
    let status = serde_json::json!({"execute": "guest-exec-status", "arguments": {"pid": pid}});
    let done = wait_until(&format!("{script:?} in {vm}"), Duration::from_secs(60), || {
        let v: serde_json::Value =
            serde_json::from_str(&lv.virsh(&["qemu-agent-command", vm, &status.to_string()])).ok()?;
        (v["return"]["exited"] == true).then_some(v)
    });
    assert_eq!(done["return"]["exitcode"], 0, "{script:?} in {vm}: {done}");
}

/// The guest agent of `vm` answers (it starts with the guest's init).
fn wait_for_agent(lv: &Libvirtd, vm: &str) {
    wait_until(&format!("{vm}'s guest agent"), Duration::from_secs(120), || {
        Command::new("virsh")
            .args([
                "-q",
                "-c",
                &lv.uri,
                "qemu-agent-command",
                vm,
                r#"{"execute":"guest-ping"}"#,
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    });
}

/// The disk file each of `vm`'s disks uses now (`virsh domblklist`), live or as defined.
fn disk_sources(lv: &Libvirtd, vm: &str, inactive: bool) -> Vec<String> {
    let mut args = vec!["domblklist", vm];
    if inactive {
        args.push("--inactive");
    }
    lv.virsh(&args)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// External snapshots (issue 38) of linked1 while it runs, with the guest agent of the lab
/// guest (qemu-ga) answering:
/// - refused while it still has an internal snapshot (two kinds on one chain);
/// - `live1` is quiesced: a file the guest wrote without sync is in the frozen disk below
///   the new overlay (read with guestfish): the freeze flushed it;
/// - `--no-quiesce` says so; a revert needs it shut off and --force past a newer one,
///   and brings back the disk of `live1` (the file written after it is gone), with the
///   newer snapshot's overlay removed;
/// - deleting a middle snapshot merges it (block commit) and the top one pivots the running
///   guest back onto its own disk, the definition too; deleting one of a shut-off VM starts
///   it paused for the merge and leaves it shut off.
///
/// It ends shut off with one external snapshot, `kept`, whose overlay purge must remove.
fn live_snapshots_of_a_running_clone(lv: &Libvirtd, uri: &str, images: &Path, own_disk: &Path) {
    let own = own_disk.display().to_string();
    let overlay = |s: &str| images.join(format!("linked1_vda.{s}.qcow2"));
    ok_vm(uri, &["start", "linked1"]);
    wait_for_agent(lv, "linked1");
    let (ok, _, err) = provd_vm(uri, &["snapshot", "create", "linked1", "live1"]);
    assert!(!ok && err.contains("it has internal snapshots"), "{err}");
    ok_vm(uri, &["snapshot", "delete", "linked1", "before"]);

    // Written by the guest into its page cache only: the quiesce must flush it.
    guest_exec(
        lv,
        "linked1",
        "mkdir -p /mnt && mount /dev/vda1 /mnt && echo cached > /mnt/etc/provd-live1",
    );
    let v = json_vm(uri, &["snapshot", "create", "linked1", "live1", "--json"]);
    assert_eq!(
        (v["kind"].as_str(), v["quiesced"].as_bool()),
        (Some("external"), Some(true)),
        "{v}"
    );
    assert_eq!(
        disk_sources(lv, "linked1", false),
        [overlay("live1").display().to_string()]
    );
    assert_eq!(
        disk_sources(lv, "linked1", true),
        [overlay("live1").display().to_string()]
    );
    assert_eq!(qemu_img_info(&overlay("live1"))["backing-filename"], own.as_str());
    assert_eq!(
        guest_file(own_disk, "/etc/provd-live1").as_deref().map(str::trim),
        Some("cached"),
        "the frozen disk holds what the guest had not synced"
    );
    guest_exec(lv, "linked1", "echo later > /mnt/etc/provd-live2 && sync");
    let out = ok_vm(uri, &["snapshot", "create", "linked1", "live2", "--no-quiesce"]);
    assert!(out.contains("external, not quiesced"), "{out}");
    assert_eq!(
        qemu_img_info(&overlay("live2"))["backing-filename"],
        overlay("live1").to_str().unwrap()
    );
    let list = json_vm(uri, &["snapshot", "list", "linked1", "--json"]);
    assert_eq!(list[0]["newer"], serde_json::json!(["live2"]), "{list}");
    assert_eq!(
        (list[1]["current"].as_bool(), list[1]["quiesced"].as_bool()),
        (Some(true), Some(false))
    );

    let (ok, _, err) = provd_vm(uri, &["snapshot", "revert", "linked1", "live1"]);
    assert!(!ok && err.contains("is running; revert needs it shut off"), "{err}");
    guest_exec(lv, "linked1", "umount /mnt");
    ok_vm(uri, &["destroy", "linked1"]);
    let (ok, _, err) = provd_vm(uri, &["snapshot", "revert", "linked1", "live1"]);
    assert!(!ok && err.contains("1 newer snapshot(s) (live2)"), "{err}");
    ok_vm(uri, &["snapshot", "revert", "linked1", "live1", "--force"]);
    assert!(!overlay("live2").exists(), "the abandoned overlay is removed");
    assert_eq!(
        disk_sources(lv, "linked1", true),
        [overlay("live1").display().to_string()]
    );
    assert_eq!(guest_file(&overlay("live1"), "/etc/provd-live2"), None, "reverted");
    assert!(guest_file(&overlay("live1"), "/etc/provd-live1").is_some());
    let list = json_vm(uri, &["snapshot", "list", "linked1", "--json"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["current"], true);

    // Merges: a middle snapshot (passive commit), then the top one (active commit + pivot).
    ok_vm(uri, &["start", "linked1"]);
    wait_for_agent(lv, "linked1");
    ok_vm(uri, &["snapshot", "create", "linked1", "live3"]);
    ok_vm(uri, &["snapshot", "delete", "linked1", "live1"]);
    assert!(!overlay("live1").exists());
    assert_eq!(qemu_img_info(&overlay("live3"))["backing-filename"], own.as_str());
    ok_vm(uri, &["snapshot", "delete", "linked1", "live3"]);
    assert!(!overlay("live3").exists());
    assert_eq!(disk_sources(lv, "linked1", false), [own.as_str()], "pivoted back");
    assert_eq!(disk_sources(lv, "linked1", true), [own.as_str()]);
    assert_eq!(lv.virsh(&["domstate", "linked1"]).trim(), "running");

    // A shut-off VM's external snapshot: merged with the VM started paused, left shut off.
    ok_vm(uri, &["snapshot", "create", "linked1", "live4"]);
    ok_vm(uri, &["snapshot", "create", "linked1", "kept"]);
    ok_vm(uri, &["destroy", "linked1"]);
    ok_vm(uri, &["snapshot", "delete", "linked1", "live4"]);
    assert!(!overlay("live4").exists());
    assert_eq!(lv.virsh(&["domstate", "linked1"]).trim(), "shut off");
    assert_eq!(qemu_img_info(&overlay("kept"))["backing-filename"], own.as_str());
    assert!(
        guest_file(&overlay("kept"), "/etc/provd-live1").is_some(),
        "merged, not lost"
    );
}

/// Hot-plug (issue 38) on full1, running: a new disk and a NIC show in the running domain's
/// XML and its definition, and go again on detach (the guest releases them); more vCPUs
/// than the definition's maximum are refused with the reason; memory is set in both.
fn hotplug_on_a_running_clone(lv: &Libvirtd, uri: &str, images: &Path) {
    let live = || lv.virsh(&["dumpxml", "full1"]);
    let config = || lv.virsh(&["dumpxml", "--inactive", "full1"]);
    let images_arg = images.display().to_string();
    let out = ok_vm(uri, &["attach-disk", "full1", "--size-gib", "1", "--dir", &images_arg]);
    assert!(out.contains("vdb attached"), "{out}");
    let new_disk = images.join("full1_vdb.qcow2");
    assert_eq!(qemu_img_info(&new_disk)["virtual-size"], 1u64 << 30);
    for (what, xml) in [("live", live()), ("definition", config())] {
        assert!(
            xml.contains(new_disk.to_str().unwrap()) && xml.contains("<target dev='vdb'"),
            "{what}: {xml}"
        );
    }
    ok_vm(uri, &["detach-disk", "full1", "vdb"]);
    assert!(!live().contains("<target dev='vdb'") && !config().contains("<target dev='vdb'"));
    assert!(new_disk.exists(), "a detached disk's file stays");

    let out = ok_vm(uri, &["attach-nic", "full1", "--bridge", "br0"]);
    let mac = out
        .split("NIC ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect(&out)
        .to_string();
    assert!(live().contains(&format!("<mac address='{mac}'/>")), "{mac} live");
    assert_eq!(live().matches("<interface ").count(), 2);
    ok_vm(uri, &["detach-nic", "full1", &mac]);
    assert!(!live().contains(&mac) && !config().contains(&mac));

    let (ok, _, err) = provd_vm(uri, &["set-vcpus", "full1", "2"]);
    assert!(!ok && err.contains("2 vCPUs is out of range (1 to 1)"), "{err}");
    ok_vm(uri, &["set-memory", "full1", "128"]);
    assert!(
        config().contains("<currentMemory unit='KiB'>131072</currentMemory>"),
        "{}",
        config()
    );
    let (ok, _, err) = provd_vm(uri, &["set-memory", "full1", "100000"]);
    assert!(!ok && err.contains("out of range"), "{err}");
}

/// Autostart (issue 38) does what it promises: full1, set to autostart and powered off, is
/// running again when libvirtd starts as after a host reboot (libvirt autostarts once per
/// boot: a plain restart does not, which is checked first); linked1, not set to, stays off.
fn autostart_brings_a_vm_back_when_libvirtd_starts(lv: &mut Libvirtd, uri: &str) {
    ok_vm(uri, &["autostart", "full1"]);
    ok_vm(uri, &["destroy", "full1"]);
    assert_eq!(lv.virsh(&["domstate", "full1"]).trim(), "shut off");
    assert_eq!(lv.virsh(&["domstate", "linked1"]).trim(), "shut off");
    lv.restart(false);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lv.virsh(&["domstate", "full1"]).trim(),
        "shut off",
        "not on a plain restart"
    );
    lv.restart(true);
    wait_until(
        "full1 started by the restarted libvirtd",
        Duration::from_secs(60),
        || (lv.virsh(&["domstate", "full1"]).trim() == "running").then_some(()),
    );
    assert_eq!(
        lv.virsh(&["domstate", "linked1"]).trim(),
        "shut off",
        "not set to autostart"
    );
    ok_vm(uri, &["autostart", "full1", "--off"]);
}

/// A NIC profile with `rom = false` reaches a real libvirtd as `<rom enabled='no'/>`, and
/// QEMU starts the VM that way (its virtio NIC then needs no ipxe-qemu ROM file).
#[test]
fn a_nic_profile_without_rom_is_what_libvirt_defines_and_qemu_runs() {
    require_root_and_tools(&[
        "libvirtd",
        "virtlogd",
        "virsh",
        "qemu-img",
        "qemu-system-x86_64",
        "unshare",
    ]);
    let w = Workdir::new();
    std::fs::set_permissions(w.dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let images = w.path("images");
    std::fs::create_dir_all(&images).unwrap();
    let cfg = w.write(
        "vm.toml",
        &format!(
            "[sites.a]\nserver_address = \"10.0.0.1\"\nlisten = [{{ interface = \"eth0\", address = \"10.0.0.1\" }}]\n\
             [vm.disk_profiles.tiny]\ndisks = [{{ name = \"system\", size_gib = 1, dir = \"{}\" }}]\n\
             [vm.nic_profiles.norom]\nnics = [{{ name = \"eth0\", bridge = \"br7\", rom = false }}]\n",
            images.display()
        ),
    );
    let ns = Netns::new("vmrom");
    ns.sh("ip link add br7 type bridge && ip link set br7 up");
    let lv = Libvirtd::start(&ns, w.dir.path());
    let cfg = cfg.display().to_string();
    ok_vm(
        &lv.uri,
        &[
            "init",
            "norom",
            "1",
            "128",
            "--disk-profile",
            "tiny",
            "--nic-profile",
            "norom",
            "--start",
            "--config",
            &cfg,
        ],
    );
    let xml = lv.virsh(&["dumpxml", "norom"]);
    assert!(
        xml.contains("<rom enabled='no'/>") && xml.contains("<source bridge='br7'/>"),
        "{xml}"
    );
    assert_eq!(lv.virsh(&["domstate", "norom"]).trim(), "running");
    ok_vm(&lv.uri, &["purge", "norom", "--force"]);
}
