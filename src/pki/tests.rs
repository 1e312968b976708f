//! The CA against real OpenSSL: keys and CSRs made by `openssl`, chains and purposes checked
//! by `openssl verify`, fields read back by `openssl x509`.

use super::*;
use std::process::Command;

fn openssl(args: &[&str], dir: &Path) -> String {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn csr(dir: &Path, cn: &str) -> String {
    openssl(
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "host.key",
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            "host.csr",
        ],
        dir,
    );
    std::fs::read_to_string(dir.join("host.csr")).unwrap()
}

fn hv() -> HostIdentity {
    HostIdentity {
        fqdn: "hv01.dc1.example.net".into(),
        short: "hv01".into(),
        addresses: vec!["10.10.0.11".parse().unwrap()],
        unit: "site dc1".into(),
    }
}

#[test]
fn ca_key_is_private_and_never_replaced_silently() {
    let d = tempfile::tempdir().unwrap();
    init(d.path(), "provd", 30, false).unwrap();
    let mode = std::fs::metadata(d.path().join(CA_KEY)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(matches!(init(d.path(), "again", 30, false), Err(PkiError::Exists(_))));
    let text = openssl(&["x509", "-in", CA_CERT, "-noout", "-text"], d.path());
    assert!(text.contains("CA:TRUE") && text.contains("Certificate Sign"), "{text}");
    assert!(matches!(Ca::load(&d.path().join("nope")), Err(PkiError::NoCa { .. })));
}

#[test]
fn host_certificates_carry_inventory_names_and_libvirt_usages_and_verify() {
    let d = tempfile::tempdir().unwrap();
    init(d.path(), "provd", 30, false).unwrap();
    let ca = Ca::load(d.path()).unwrap();
    let server = ca.sign_host(&csr(d.path(), "hv01"), &hv(), Role::Server, 30).unwrap();
    std::fs::write(d.path().join("server.pem"), &server.pem).unwrap();
    let client = ca.sign_host(&csr(d.path(), "hv01"), &hv(), Role::Client, 30).unwrap();
    std::fs::write(d.path().join("client.pem"), &client.pem).unwrap();
    let server = openssl(&["x509", "-in", "server.pem", "-noout", "-text"], d.path());
    for want in [
        "DNS:hv01.dc1.example.net",
        "DNS:hv01",
        "IP Address:10.10.0.11",
        "TLS Web Server Authentication",
        "Digital Signature, Key Encipherment",
        "CN = hv01.dc1.example.net",
    ] {
        assert!(server.contains(want), "server cert lacks {want}:\n{server}");
    }
    let client = openssl(&["x509", "-in", "client.pem", "-noout", "-text"], d.path());
    assert!(
        client.contains("TLS Web Client Authentication") && !client.contains("TLS Web Server"),
        "{client}"
    );
    openssl(
        &["verify", "-CAfile", CA_CERT, "-purpose", "sslserver", "server.pem"],
        d.path(),
    );
    openssl(
        &["verify", "-CAfile", CA_CERT, "-purpose", "sslclient", "client.pem"],
        d.path(),
    );
    // The certificate is for the key the host made: its public key matches host.key's
    // (the client CSR above was made last, so host.key is the client's key now).
    let cert_key = openssl(&["x509", "-in", "client.pem", "-noout", "-pubkey"], d.path());
    let host_key = openssl(&["pkey", "-in", "host.key", "-pubout"], d.path());
    assert_eq!(cert_key, host_key);
}

#[test]
fn bad_csrs_and_csrs_for_other_hosts_are_refused() {
    let d = tempfile::tempdir().unwrap();
    init(d.path(), "provd", 30, false).unwrap();
    let ca = Ca::load(d.path()).unwrap();
    assert!(matches!(
        ca.sign_host("not a csr", &hv(), Role::Server, 30),
        Err(PkiError::BadCsr(_))
    ));
    let mut tampered = csr(d.path(), "hv01");
    // Flip one character inside the base64 body: the signature no longer verifies.
    let i = tampered.find("MII").unwrap() + 40;
    let c = tampered.as_bytes()[i];
    tampered.replace_range(i..i + 1, if c == b'A' { "B" } else { "A" });
    assert!(matches!(
        ca.sign_host(&tampered, &hv(), Role::Server, 30),
        Err(PkiError::BadCsr(_))
    ));
    let other = csr(d.path(), "hv99.dc1.example.net");
    match ca.sign_host(&other, &hv(), Role::Server, 30) {
        Err(PkiError::WrongHost { named, .. }) => assert_eq!(named, "hv99.dc1.example.net"),
        r => panic!("{:?}", r.map(|_| ())),
    }
}

#[test]
fn operator_client_certificates_verify_as_clients() {
    let d = tempfile::tempdir().unwrap();
    init(d.path(), "provd", 30, false).unwrap();
    let ca = Ca::load(d.path()).unwrap();
    let (cert, key) = ca.issue_client("operator", 30, false).unwrap();
    let out = d.path().join("client");
    write_client(&out, &ca, &cert, &key).unwrap();
    assert_eq!(
        std::fs::metadata(out.join("clientkey.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    openssl(
        &[
            "verify",
            "-CAfile",
            "client/cacert.pem",
            "-purpose",
            "sslclient",
            "client/clientcert.pem",
        ],
        d.path(),
    );
}

/// What `openssl verify` says (stdout and stderr), without asserting success.
fn verify(args: &[&str], dir: &Path) -> (bool, String) {
    let out = Command::new("openssl")
        .arg("verify")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_crl_names_revoked_serials_and_openssl_refuses_them() {
    let d = tempfile::tempdir().unwrap();
    init(d.path(), "provd", 30, false).unwrap();
    let ca = Ca::load(d.path()).unwrap();
    let key_csr = csr(d.path(), "hv01");
    let first = ca.sign_host(&key_csr, &hv(), Role::Client, 30).unwrap();
    // The same key signed again (a renewal) gets its own serial: revoking one is not
    // revoking the other.
    let second = ca.sign_host(&key_csr, &hv(), Role::Client, 30).unwrap();
    assert_ne!(first.serial, second.serial);
    assert_eq!(first.key_id, second.key_id);
    std::fs::write(d.path().join("first.pem"), &first.pem).unwrap();
    std::fs::write(d.path().join("second.pem"), &second.pem).unwrap();
    let serial = openssl(&["x509", "-in", "first.pem", "-noout", "-serial"], d.path());
    assert_eq!(serial.trim().to_lowercase(), format!("serial={}", first.serial));

    let now = time::OffsetDateTime::now_utc();
    let crl = ca.crl(&[(first.serial.clone(), now.unix_timestamp())], now).unwrap();
    std::fs::write(d.path().join("crl.pem"), &crl).unwrap();
    let text = openssl(
        &["crl", "-in", "crl.pem", "-noout", "-text", "-CAfile", CA_CERT],
        d.path(),
    );
    assert!(text.to_lowercase().contains(&first.serial), "{text}");
    let (ok, said) = verify(
        &["-crl_check", "-CAfile", CA_CERT, "-CRLfile", "crl.pem", "first.pem"],
        d.path(),
    );
    assert!(!ok && said.contains("certificate revoked"), "{said}");
    let (ok, said) = verify(
        &["-crl_check", "-CAfile", CA_CERT, "-CRLfile", "crl.pem", "second.pem"],
        d.path(),
    );
    assert!(ok, "{said}");
    // An empty list is still a valid, signed CRL (what a fresh hypervisor installs).
    std::fs::write(d.path().join("empty.pem"), ca.crl(&[], now).unwrap()).unwrap();
    let (ok, said) = verify(
        &["-crl_check", "-CAfile", CA_CERT, "-CRLfile", "empty.pem", "first.pem"],
        d.path(),
    );
    assert!(ok, "{said}");
}
