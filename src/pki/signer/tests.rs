//! Tests of `pki::signer`.

use super::*;

/// A signer with a fresh CA and registry in `dir`.
fn signer(dir: &std::path::Path) -> Signer {
    super::super::init(&dir.join("pki"), "provd test", 30, false).unwrap();
    let ca = Ca::load(&dir.join("pki")).unwrap();
    let store = crate::store::Store::open(&dir.join("state")).unwrap();
    Signer::new(Some(Arc::new(ca)), Registry::load(store).unwrap())
}

/// A CSR for `cn` made by openssl, with a new key (`name`.key in `dir`).
fn openssl_csr(dir: &std::path::Path, name: &str, cn: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-keyout", &format!("{name}.key"), "-subj", &format!("/CN={cn}")])
        .args(["-out", &format!("{name}.csr")])
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(dir.join(format!("{name}.csr"))).unwrap()
}

fn hv1() -> Applicant {
    Applicant {
        hostname: "hv1".into(),
        fqdn: "hv1.dc1.example.net".into(),
        site: "dc1".into(),
        known: vec![Ipv4Addr::new(10, 0, 0, 11)],
    }
}

const FROM: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);

#[tokio::test]
async fn auto_signs_and_records_the_host_and_its_addresses() {
    let d = tempfile::tempdir().unwrap();
    let s = signer(d.path());
    let csr = openssl_csr(d.path(), "a", "hv1.dc1.example.net");
    let InstallAnswer::Issued(pem) = s.install(&hv1(), "t", &csr, FROM, SignPolicy::Auto).await.unwrap() else {
        panic!("auto signs at once");
    };
    std::fs::write(d.path().join("a.pem"), &pem).unwrap();
    let text = std::process::Command::new("openssl")
        .args(["x509", "-in", "a.pem", "-noout", "-text"])
        .current_dir(d.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("OU = site dc1") && text.contains("IP Address:10.0.0.11"),
        "{text}"
    );
    let list = s.list(SignPolicy::Auto);
    assert_eq!(list.certificates.len(), 1);
    assert_eq!(
        (
            list.certificates[0].record.host.as_str(),
            list.certificates[0].record.how.as_str()
        ),
        ("hv1", "install")
    );
}

#[tokio::test]
async fn a_csr_named_for_another_host_is_refused_before_anything_is_kept() {
    let d = tempfile::tempdir().unwrap();
    let s = signer(d.path());
    let csr = openssl_csr(d.path(), "a", "hv2.dc1.example.net");
    for policy in [SignPolicy::Auto, SignPolicy::Approve] {
        let e = s.install(&hv1(), "t", &csr, FROM, policy).await.unwrap_err();
        assert!(matches!(e, SignError::Certificate(PkiError::WrongHost { .. })), "{e}");
    }
    let list = s.list(SignPolicy::Approve);
    assert!(list.certificates.is_empty() && list.requests.is_empty());
}

/// `approve`: kept, signed by the operator's decision (only the fingerprint named),
/// collected by the same key and token; another token does not collect it.
#[tokio::test]
async fn approve_keeps_the_request_until_an_operator_signs_it() {
    let d = tempfile::tempdir().unwrap();
    let s = signer(d.path());
    let csr = openssl_csr(d.path(), "a", "hv1");
    let ask = |token: &'static str| {
        let (s, csr) = (&s, csr.clone());
        async move { s.install(&hv1(), token, &csr, FROM, SignPolicy::Approve).await }
    };
    assert_eq!(ask("t").await.unwrap(), InstallAnswer::Waiting);
    assert_eq!(
        ask("t").await.unwrap(),
        InstallAnswer::Waiting,
        "asked again: still waiting"
    );
    let fingerprint = s.list(SignPolicy::Approve).requests[0].fingerprint.clone();
    assert!(s.decide(&hv1(), true, Some("sha256:00")).await.unwrap().is_empty());
    let decided = s.decide(&hv1(), true, Some(&fingerprint.to_uppercase())).await.unwrap();
    assert_eq!(decided.len(), 1);
    assert!(s.decide(&hv1(), true, None).await.unwrap().is_empty(), "decided once");
    let InstallAnswer::Approved(pem) = ask("t").await.unwrap() else {
        panic!("the approved certificate is collected");
    };
    assert_eq!(csr::certificate_key_id(&pem), Some(fingerprint));
    s.collected("hv1", Role::Server).await.unwrap();
    assert!(s.list(SignPolicy::Approve).requests.is_empty());
    // A new install (another token) asks anew.
    assert_eq!(ask("t2").await.unwrap(), InstallAnswer::Waiting);
    s.decide(&hv1(), false, None).await.unwrap();
    assert!(matches!(ask("t2").await, Err(SignError::Rejected)));
}

/// Renewal needs the key of a valid certificate, only in its renewal window (the last
/// third of its life, or `[pki] renew_within_days`), at most once a minute, and revokes
/// the certificate it replaces.
#[tokio::test]
async fn renewal_needs_the_current_key_its_window_and_is_rate_limited() {
    let d = tempfile::tempdir().unwrap();
    let s = signer(d.path());
    let csr = openssl_csr(d.path(), "a", "hv1");
    s.install(&hv1(), "t", &csr, FROM, SignPolicy::Auto).await.unwrap();
    let other = openssl_csr(d.path(), "b", "hv1");
    assert!(matches!(
        s.renew(&hv1(), Role::Server, &other, FROM, None).await,
        Err(SignError::NotRenewable { .. })
    ));
    // Fresh (825 days left): not due, whether the window is the default third or 30 days.
    for within in [None, Some(30 * 86_400)] {
        let e = s.renew(&hv1(), Role::Server, &csr, FROM, within).await.unwrap_err();
        assert!(
            matches!(e, SignError::NotDue { opens_in, .. } if opens_in > 500 * 86_400),
            "{e}"
        );
    }
    assert_eq!(
        s.list(SignPolicy::Auto).certificates.len(),
        1,
        "nothing issued or revoked"
    );
    // A window longer than the life: due now.
    let longer = Some(1000 * 86_400);
    s.renew(&hv1(), Role::Server, &csr, FROM, longer).await.unwrap();
    let states: Vec<CertState> = s.list(SignPolicy::Auto).certificates.iter().map(|c| c.state).collect();
    assert_eq!(
        states.iter().filter(|st| **st == CertState::Revoked).count(),
        1,
        "the replaced one is revoked: {states:?}"
    );
    assert!(matches!(
        s.renew(&hv1(), Role::Server, &csr, FROM, longer).await,
        Err(SignError::TooSoon { .. })
    ));
    // The CRL names the replaced certificate; it is signed once and served from then on
    // until what it names changes.
    let crl = s.crl_pem().unwrap();
    assert!(crl.starts_with("-----BEGIN X509 CRL-----"), "{crl}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(s.crl_pem().unwrap(), crl, "the same CRL, not signed again");
    assert!(s.revoke_identity("nobody").await.unwrap().is_none());
    assert_eq!(s.crl_pem().unwrap(), crl, "nothing revoked, nothing new");
    assert_eq!(s.revoke_host("hv1", None).await.unwrap().len(), 1);
    let second = s.crl_pem().unwrap();
    assert_ne!(second, crl, "a revocation makes a new CRL");
    // Another revocation within the same second: its list still counts up (a hypervisor
    // installs only a higher number).
    let other = openssl_csr(d.path(), "c", "hv2");
    let hv2 = Applicant {
        hostname: "hv2".into(),
        fqdn: "hv2.dc1.example.net".into(),
        ..hv1()
    };
    s.install(&hv2, "t2", &other, FROM, SignPolicy::Auto).await.unwrap();
    assert_eq!(s.revoke_host("hv2", None).await.unwrap().len(), 1);
    let third = s.crl_pem().unwrap();
    let numbers: Vec<u64> = [&crl, &second, &third]
        .iter()
        .map(|p| crate::pki::crl_number(p).unwrap())
        .collect();
    assert!(numbers[0] < numbers[1] && numbers[1] < numbers[2], "{numbers:?}");
}

#[tokio::test]
async fn without_a_ca_nothing_is_signed_or_kept() {
    let d = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(d.path()).unwrap();
    let s = Signer::new(None, Registry::load(store).unwrap());
    let csr = openssl_csr(d.path(), "a", "hv1");
    for policy in [SignPolicy::Auto, SignPolicy::Approve] {
        assert!(matches!(
            s.install(&hv1(), "t", &csr, FROM, policy).await,
            Err(SignError::NoCa)
        ));
    }
    assert!(matches!(s.crl_pem(), Err(SignError::NoCa)));
    assert!(s.list(SignPolicy::Approve).requests.is_empty());
}

/// `GET /api/pki` is read back by the CLI into the same types (a flattened record, the
/// states as words): what the server writes, the client reads, field for field.
#[test]
fn the_certificate_list_round_trips_between_server_and_cli() {
    let record = CertRecord {
        serial: "0a1b".into(),
        host: "hv1".into(),
        role: "server".into(),
        issued_at: 10,
        not_after: 20,
        key_id: "ab".repeat(32),
        how: "install".into(),
        revoked_at: None,
    };
    let list = CertificateList {
        policy: SignPolicy::Approve,
        now: 15,
        certificates: vec![CertView {
            record: record.clone(),
            state: CertState::Valid,
            expires_in: 5,
        }],
        requests: vec![RequestView {
            host: "hv2".into(),
            role: "server".into(),
            from: Ipv4Addr::new(10, 0, 0, 2),
            asked_at: 12,
            key: "EC P-256".into(),
            fingerprint: "cd".repeat(32),
            state: RequestState::Waiting,
        }],
    };
    let wire = serde_json::to_value(&list).unwrap();
    assert_eq!(
        wire["certificates"][0]["serial"], "0a1b",
        "the record is flat on the wire"
    );
    assert_eq!(wire["certificates"][0]["state"], "valid");
    assert_eq!(wire["requests"][0]["state"], "waiting");
    assert_eq!(wire["policy"], "approve");
    let back: CertificateList = serde_json::from_value(wire).unwrap();
    assert_eq!(back.certificates[0].record, record);
    assert_eq!(back.requests[0].state, RequestState::Waiting);
    assert_eq!(back.policy.as_str(), "approve");
}
