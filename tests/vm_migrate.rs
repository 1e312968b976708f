//! `provd vm migrate` between two real libvirtds over TLS with provd's CA: live,
//! peer-to-peer, tunnelled. Two "hypervisors" are two network namespaces joined by a veth
//! pair, each with its own libvirtd (private mount namespace, TLS on 16514) holding a
//! server and a client certificate signed by provd's CA. provd, in the first namespace,
//! talks to both with a client certificate from `provd pki issue-client`; the source
//! libvirtd dials the destination with its own client certificate.

mod common;

use common::libvirtd::Libvirtd;
use common::libvirtd::{host_pki, test_ca};
use common::{Netns, NetnsHosts, Workdir, provd_bin, require_root_and_tools, veth, wait_until};
use std::time::Duration;

#[test]
fn live_peer_to_peer_tunnelled_migration_over_tls_and_a_refusal() {
    require_root_and_tools(&[
        "libvirtd",
        "virtlogd",
        "virsh",
        "openssl",
        "qemu-system-x86_64",
        "unshare",
    ]);
    let w = Workdir::new();
    let ca = test_ca(&w);

    let (a, b) = (Netns::new("mig-a"), Netns::new("mig-b"));
    veth(&a, "va", "10.232.0.1/24", &b, "vb", "10.232.0.2/24");
    let hosts = "127.0.0.1 localhost\n10.232.0.1 hva.m.test hva\n10.232.0.2 hvb.m.test hvb\n";
    let _ha = NetnsHosts::new(&a, hosts);
    let _hb = NetnsHosts::new(&b, hosts);
    let (da, db) = (w.path("hva"), w.path("hvb"));
    for (d, fqdn, ip) in [(&da, "hva.m.test", "10.232.0.1"), (&db, "hvb.m.test", "10.232.0.2")] {
        std::fs::create_dir_all(d).unwrap();
        host_pki(&ca, &d.join("pki"), fqdn, ip);
    }
    let lva = Libvirtd::start_with(&a, &da, Some((&da.join("pki"), "10.232.0.1")));
    let lvb = Libvirtd::start_with(&b, &db, Some((&db.join("pki"), "10.232.0.2")));

    // A diskless TCG guest: SeaBIOS finds nothing to boot and keeps trying; it runs.
    let xml = w.write(
        "guest.xml",
        "<domain type='qemu'><name>mover</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/></devices></domain>",
    );
    lva.virsh(&["define", &xml.display().to_string()]);
    lva.virsh(&["start", "mover"]);

    let client = w.path("client");
    let dest = format!("qemu+tls://hvb.m.test/system?pkipath={}", client.display());
    let vm = |args: &[&str]| {
        let out = a
            .cmd(provd_bin())
            .arg("vm")
            .args(args)
            .args(["--connect", &lva.uri])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    };

    // provd reaches B over TLS with its own client certificate.
    let out = a
        .cmd(provd_bin())
        .args(["vm", "host-info", "--json", "--connect", &dest])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "provd over TLS to hvb: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (ok, text) = vm(&["migrate", "mover", &dest]);
    assert!(
        ok,
        "migrate: {text}\nA's log:\n{}\nB's log:\n{}",
        lva.log_text(),
        lvb.log_text()
    );
    assert!(
        text.contains("mover: now running on qemu+tls://hvb.m.test/system"),
        "{text}"
    );
    // Exactly one place: running and persistent on B, gone from A.
    assert_eq!(lvb.virsh(&["domstate", "mover"]).trim(), "running");
    assert!(lvb.virsh(&["dominfo", "mover"]).contains("Persistent:     yes"));
    assert!(!lva.virsh(&["list", "--all", "--name"]).contains("mover"));

    // Back to A is refused when A already has a domain of that name.
    lva.virsh(&["define", &xml.display().to_string()]);
    let src_b = format!("qemu+tls://hvb.m.test/system?pkipath={}", client.display());
    let dest_a = format!("qemu+tls://hva.m.test/system?pkipath={}", client.display());
    let out = a
        .cmd(provd_bin())
        .args(["vm", "migrate", "mover", &dest_a, "--connect", &src_b])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already has a domain named \"mover\""),
        "{err}"
    );
    wait_until("mover still runs on B", Duration::from_secs(5), || {
        (lvb.virsh(&["domstate", "mover"]).trim() == "running").then_some(())
    });
    drop(lva);
    drop(lvb);
}

/// Two sites' hypervisors, each with its own site's CA, trust each other through the
/// region's root (`provd region add-site` cross-signs both CAs): a VM live-migrates from
/// dca's hypervisor to dcb's, whose libvirtd allows dca's migration role by name. Once
/// the region revokes dca's cross-certificate and dcb's hypervisor has the region's CRL,
/// dca's hypervisor can no longer migrate into it.
#[test]
fn a_vm_migrates_between_two_sites_over_the_regions_trust_until_the_site_is_revoked() {
    require_root_and_tools(&[
        "libvirtd",
        "virtlogd",
        "virsh",
        "openssl",
        "qemu-system-x86_64",
        "unshare",
    ]);
    use provd::pki::{self, Ca};
    use provd::region::trust::Trust;
    let w = Workdir::new();
    // The region's root; two sites' own CAs, cross-signed.
    let trust = Trust::new(w.path("region"));
    trust.init("eu", false).unwrap();
    let root_pem = std::fs::read_to_string(w.path("region/ca-cert.pem")).unwrap();
    let site_ca = |name: &str| {
        pki::init(&w.path(name), &format!("provd {name}"), 30, false).unwrap();
        let ca = Ca::load(&w.path(name)).unwrap();
        let (cross, _) = trust.add_site(name, ca.cert_pem()).unwrap();
        (ca, cross)
    };
    let ((ca_a, cross_a), (ca_b, cross_b)) = (site_ca("dca"), site_ca("dcb"));

    let (a, b) = (Netns::new("xmig-a"), Netns::new("xmig-b"));
    veth(&a, "va", "10.164.0.1/24", &b, "vb", "10.164.0.2/24");
    let hosts = "127.0.0.1 localhost\n10.164.0.1 hva.dca.test hva\n10.164.0.2 hvb.dcb.test hvb\n";
    let _ha = NetnsHosts::new(&a, hosts);
    let _hb = NetnsHosts::new(&b, hosts);
    let (da, db) = (w.path("hva"), w.path("hvb"));
    // Each hypervisor trusts the region's root and its own site's CA, and presents its
    // certificates with its site's cross-certificate.
    for (d, ca, cross, fqdn, ip, site) in [
        (&da, &ca_a, &cross_a, "hva.dca.test", "10.164.0.1", "dca"),
        (&db, &ca_b, &cross_b, "hvb.dcb.test", "10.164.0.2", "dcb"),
    ] {
        std::fs::create_dir_all(d).unwrap();
        let trusted = format!("{root_pem}{}", ca.cert_pem());
        common::libvirtd::host_pki_in_region(ca, &d.join("pki"), fqdn, ip, &trusted, cross, site);
    }
    // dcb's hypervisor allows its own site's migration role, dca's, and the region's
    // operators; nothing else.
    let allowed = "tls_allowed_dn_list = [\"O=provd dcb,OU=site dcb migration,CN=*\", \
                   \"O=provd dca,OU=site dca migration,CN=*\", \"O=provd region eu,OU=provd operator,CN=*\"]\n";
    let lva = Libvirtd::start_with(&a, &da, Some((&da.join("pki"), "10.164.0.1")));
    let mut lvb = Libvirtd::start_with_conf(&b, &db, Some((&db.join("pki"), "10.164.0.2")), allowed);

    // The operator: a certificate from the region's root (libvirt's operator OU).
    let root = Ca::load(&w.path("region")).unwrap();
    let (cert, key) = root.issue_client("alice", 30, false).unwrap();
    let client = w.path("operator");
    pki::write_client(&client, &root, &cert, &key).unwrap();
    let dest = format!("qemu+tls://hvb.dcb.test/system?pkipath={}", client.display());

    let xml = w.write(
        "guest.xml",
        "<domain type='qemu'><name>traveller</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/></devices></domain>",
    );
    lva.virsh(&["define", &xml.display().to_string()]);
    lva.virsh(&["start", "traveller"]);
    let migrate = |name: &str| {
        let out = a
            .cmd(provd_bin())
            .args(["vm", "migrate", name, &dest, "--connect", &lva.uri])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, text) = migrate("traveller");
    assert!(
        ok && text.contains("traveller: now running on qemu+tls://hvb.dcb.test/system"),
        "{text}\nA's log:\n{}\nB's log:\n{}",
        lva.log_text(),
        lvb.log_text()
    );
    assert_eq!(lvb.virsh(&["domstate", "traveller"]).trim(), "running");
    assert!(!lva.virsh(&["list", "--all", "--name"]).contains("traveller"));

    // The region revokes dca; dcb's hypervisor takes the region's CRL as its refresh-crl
    // installs it: one file, the site's own list first and the region's after it (libvirt
    // reads cacrl.pem when it starts). The revocation is in the second list: GnuTLS must
    // read both.
    trust.revoke_site("dca", provd::clock::unix_now()).unwrap();
    let site_list = ca_b.crl(&[], time::OffsetDateTime::now_utc()).unwrap();
    let region_list = std::fs::read_to_string(w.path("region/crl.pem")).unwrap();
    std::fs::write(db.join("pki/CA/cacrl.pem"), format!("{site_list}{region_list}")).unwrap();
    lvb.restart(false);
    let second = xml.display().to_string();
    std::fs::write(
        &second,
        std::fs::read_to_string(&xml).unwrap().replace("traveller", "latecomer"),
    )
    .unwrap();
    lva.virsh(&["define", &second]);
    lva.virsh(&["start", "latecomer"]);
    let (ok, text) = migrate("latecomer");
    assert!(!ok, "a revoked site's hypervisor migrated: {text}");
    assert_eq!(
        lva.virsh(&["domstate", "latecomer"]).trim(),
        "running",
        "it stays where it was"
    );
    assert!(
        lvb.log_text().contains("revoked"),
        "dcb's libvirtd refused it as revoked: {text}\nB's log:\n{}",
        lvb.log_text()
    );
    drop(lva);
    drop(lvb);
}
