//! Benchmark (ignored in the test suite; run by `lab/bench/template-push.sh`): pushing a
//! template with a qcow2 disk holding DATA_GIB GiB of data between two real libvirtds over
//! TLS, provd's `vm::push` (download stream -> upload stream, SHA-256 on the way and on a
//! read-back) against the shell way (`virsh vol-download | virsh vol-upload`, no check),
//! rounds alternated, wall time and MiB/s for each, and the ratio.

mod common;

use common::libvirtd::Libvirtd;
use common::libvirtd::{host_pki, test_ca};
use common::{Netns, NetnsHosts, Workdir, run, veth};
use std::process::Command;
use std::time::Instant;

#[test]
#[ignore = "a benchmark: lab/bench/template-push.sh"]
fn template_push_provd_vs_virsh_pipe() {
    let gib: u64 = std::env::var("DATA_GIB").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let rounds: u32 = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let w = Workdir::new();
    let ca = test_ca(&w);
    let (a, b) = (Netns::new("tpa"), Netns::new("tpb"));
    veth(&a, "ta", "10.233.0.1/24", &b, "tb", "10.233.0.2/24");
    let hosts = "127.0.0.1 localhost\n10.233.0.1 hva.b.test\n10.233.0.2 hvb.b.test\n";
    let (_ha, _hb) = (NetnsHosts::new(&a, hosts), NetnsHosts::new(&b, hosts));
    let (da, db) = (w.path("hva"), w.path("hvb"));
    for (d, fqdn, ip) in [(&da, "hva.b.test", "10.233.0.1"), (&db, "hvb.b.test", "10.233.0.2")] {
        std::fs::create_dir_all(d).unwrap();
        host_pki(&ca, &d.join("pki"), fqdn, ip);
    }
    let lva = Libvirtd::start_with(&a, &da, Some((&da.join("pki"), "10.233.0.1")));
    let lvb = Libvirtd::start_with(&b, &db, Some((&db.join("pki"), "10.233.0.2")));
    // Each libvirtd's /var/lib/libvirt is its own tmpfs: the same path on both hosts is two
    // files, as on two machines.
    for lv in [&lva, &lvb] {
        lv.virsh(&["pool-create-as", "tpool", "dir", "--target", "/var/lib/libvirt/images"]);
    }
    // The template's disk: a qcow2 with `gib` GiB written (a pattern: real data to move),
    // made here and uploaded into A's pool.
    let made = w.path("t.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&made)
        .arg(format!("{}G", gib * 2)));
    // qemu-io writes at most 2 GiB - 512 at once: a GiB per command.
    let mut io = Command::new("qemu-io");
    io.args(["-f", "qcow2"]);
    for g in 0..gib {
        io.args(["-c", &format!("write -P 0x5a {g}G 1G")]);
    }
    run(io.arg(&made));
    let bytes = std::fs::metadata(&made).unwrap().len();
    lva.virsh(&[
        "vol-create-as",
        "tpool",
        "t.qcow2",
        &bytes.to_string(),
        "--format",
        "qcow2",
    ]);
    lva.virsh(&["vol-upload", "--pool", "tpool", "t.qcow2", &made.display().to_string()]);
    std::fs::remove_file(&made).unwrap();
    let xml = w.write(
        "t.xml",
        "<domain type='qemu'><name>t</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
         <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>\
         <source file='/var/lib/libvirt/images/t.qcow2'/><target dev='vda' bus='virtio'/></disk></devices></domain>",
    );
    lva.virsh(&["define", &xml.display().to_string()]);
    let client = w.path("client");
    let uri = |h: &str| format!("qemu+tls://{h}.b.test/system?pkipath={}", client.display());

    let mut provd_secs = Vec::new();
    let mut shell_secs = Vec::new();
    for round in 1..=rounds {
        // provd: the library call `provd vm template push` makes per host, from A's network
        // namespace (a thread that joined it), by address (the certificates carry them).
        let ns_file = std::fs::File::open(format!("/var/run/netns/{}", a.name)).unwrap();
        let by_ip = |ip: &str| format!("qemu+tls://{ip}/system?pkipath={}", client.display());
        let (src_uri, dst_uri) = (by_ip("10.233.0.1"), by_ip("10.233.0.2"));
        let start = Instant::now();
        let pushed = std::thread::scope(|s| {
            s.spawn(|| {
                use std::os::fd::AsRawFd;
                // SAFETY: setns on this thread only, with a valid namespace fd.
                assert_eq!(unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                let src = provd::vm::Hypervisor::connect(&src_uri).unwrap();
                let dst = provd::vm::Hypervisor::connect(&dst_uri).unwrap();
                provd::vm::push::push(&src, "t", &dst, &mut |_| {}).unwrap()
            })
            .join()
            .unwrap()
        });
        let t = start.elapsed().as_secs_f64();
        assert_eq!(pushed[0].bytes, bytes);
        provd_secs.push(t);
        // Clean B for the next run.
        lvb.virsh(&["undefine", "t"]);
        lvb.virsh(&["vol-delete", "--pool", "tpool", "t.qcow2"]);

        // The shell way: create the volume, then download | upload (no check).
        let start = Instant::now();
        let sh = format!(
            "virsh -q -c '{b}' vol-create-as tpool t2.qcow2 {bytes} --format qcow2 >/dev/null && \
             virsh -q -c '{a}' vol-download --pool tpool t.qcow2 /dev/stdout | \
             virsh -q -c '{b}' vol-upload --pool tpool t2.qcow2 /dev/stdin",
            a = uri("hva"),
            b = uri("hvb"),
        );
        let out = a.cmd("sh").arg("-c").arg(&sh).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t2 = start.elapsed().as_secs_f64();
        shell_secs.push(t2);
        lvb.virsh(&["vol-delete", "--pool", "tpool", "t2.qcow2"]);
        let mib = bytes as f64 / (1 << 20) as f64;
        println!(
            "round {round}: provd {t:.1} s ({:.0} MiB/s, with SHA-256 and read-back), virsh pipe {t2:.1} s ({:.0} MiB/s, no check)",
            mib / t,
            mib / t2
        );
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    let (p, s) = (med(&mut provd_secs), med(&mut shell_secs));
    println!(
        "template push, {} MiB qcow2 file ({gib} GiB written), one destination, median of {rounds}: provd {p:.1} s, virsh pipe {s:.1} s, provd/virsh time ratio {:.2}",
        bytes >> 20,
        p / s
    );
    drop(lva);
    drop(lvb);
}
