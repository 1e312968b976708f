//! Tests of `inventory::transition`.

/// The address the host asks from in these tests.
const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
use super::*;

fn host(profile: Option<&str>) -> Host {
    Host {
        mac: "52:54:00:00:00:01".parse().unwrap(),
        hostname: "hv1".into(),
        ip: None,
        profile: profile.map(str::to_string),
        vars: Default::default(),
        installed: false,
        tags: Vec::new(),
        bmc: None,
        network: None,
        secure_boot: false,
    }
}

#[test]
fn a_session_is_minted_once_and_spent_by_installed() {
    let h = host(Some("p"));
    let r = reconcile(None, "s", &h, 10).unwrap();
    assert_eq!((r.status, r.netboot), (Status::Assigned, true));
    assert!(reconcile(Some(&r), "s", &h, 11).is_none(), "nothing changes twice");

    let (d, next) = boot(Some(&r), h.mac, true, 100, 20, A, || "t1".into()).unwrap();
    assert_eq!(d, BootDecision::Install { token: "t1".into() });
    let r = next.expect("a new session is stored first");
    let (d, next) = boot(Some(&r), h.mac, true, 100, 21, A, || panic!("no second token")).unwrap();
    assert_eq!((d, next), (BootDecision::Install { token: "t1".into() }, None));

    assert_eq!(kickstart_fetched(&r, "t2", A, 22), Err(InventoryError::TokenRefused));
    let r = kickstart_fetched(&r, "t1", A, 22).unwrap();
    assert_eq!(r.status, Status::Installing);
    let r = certificate_issued(&r, "t1", A, "server", 23).unwrap();
    assert_eq!(
        certificate_issued(&r, "t1", A, "server", 23),
        Err(InventoryError::StepTaken("the server certificate".into())),
        "each role once"
    );
    let r = event(&r, "t1", A, InstallEvent::Installed, "ok", 24).unwrap();
    assert_eq!((r.status, r.netboot), (Status::Installed, false));
    assert_eq!(
        event(&r, "t1", A, InstallEvent::Failed, "", 25),
        Err(InventoryError::TokenRefused)
    );
    let (d, _) = boot(Some(&r), h.mac, true, 100, 26, A, || panic!("boot once")).unwrap();
    assert_eq!(d, BootDecision::LocalDisk);
    // An expired session is refused.
    let again = reinstall(&r, true, 30).unwrap();
    let (_, next) = boot(Some(&again), h.mac, true, 5, 30, A, || "t3".into()).unwrap();
    assert_eq!(
        check_token(&next.unwrap(), "t3", A, 36),
        Err(InventoryError::TokenRefused)
    );
}

#[test]
fn a_token_is_bound_to_its_first_address_and_each_step_is_taken_once() {
    let other = Ipv4Addr::new(10, 0, 0, 150);
    let h = host(Some("p"));
    let r = reconcile(None, "s", &h, 10).unwrap();
    let (_, next) = boot(Some(&r), h.mac, true, 100, 20, A, || "t1".into()).unwrap();
    let r = next.unwrap();
    assert_eq!(r.install.as_ref().unwrap().bound_to, Some(A));
    // The host's other address (its lease beside its reservation) gets nothing.
    let bound = Err(InventoryError::BoundElsewhere { bound: A });
    assert_eq!(
        boot(Some(&r), h.mac, true, 100, 21, other, || panic!()).map(|_| ()),
        bound
    );
    assert_eq!(kickstart_fetched(&r, "t1", other, 21).map(|_| ()), bound);
    assert_eq!(certificate_issued(&r, "t1", other, "server", 21).map(|_| ()), bound);
    assert_eq!(
        event(&r, "t1", other, InstallEvent::Installed, "", 21).map(|_| ()),
        bound
    );
    // From the bound address: each step once.
    let r = kickstart_fetched(&r, "t1", A, 22).unwrap();
    assert_eq!(
        kickstart_fetched(&r, "t1", A, 23),
        Err(InventoryError::StepTaken(crate::inventory::STEP_KICKSTART.into()))
    );
    let r = event(&r, "t1", A, InstallEvent::Installing, "", 24).unwrap();
    assert!(matches!(
        event(&r, "t1", A, InstallEvent::Installing, "", 25),
        Err(InventoryError::StepTaken(_))
    ));
    let r = event(&r, "t1", A, InstallEvent::PostStarted, "", 26).unwrap();
    let r = event(&r, "t1", A, InstallEvent::Installed, "", 27).unwrap();
    assert_eq!(r.status, Status::Installed);

    // A session stored before binding existed is bound at its next use.
    let mut legacy = reconcile(None, "s", &h, 10).unwrap();
    let (_, next) = boot(Some(&legacy), h.mac, true, 100, 20, A, || "t2".into()).unwrap();
    legacy = next.unwrap();
    legacy.install.as_mut().unwrap().bound_to = None;
    let (d, next) = boot(Some(&legacy), h.mac, true, 100, 21, other, || panic!()).unwrap();
    assert_eq!(d, BootDecision::Install { token: "t2".into() });
    assert_eq!(next.unwrap().install.unwrap().bound_to, Some(other));
}

#[test]
fn an_installers_message_reaches_the_history_without_terminal_escapes() {
    let h = host(Some("p"));
    let r = reconcile(None, "s", &h, 10).unwrap();
    let (_, next) = boot(Some(&r), h.mac, true, 100, 20, A, || "t1".into()).unwrap();
    let r = event(
        &next.unwrap(),
        "t1",
        A,
        InstallEvent::PostStarted,
        "step\u{1b}[1A\u{1b}[2Kdone",
        21,
    )
    .unwrap();
    let last = &r.history.last().unwrap().what;
    assert_eq!(last, "installer: post-started: step\u{FFFD}[1A\u{FFFD}[2Kdone");
}

#[test]
fn only_an_operators_reinstall_may_wipe_an_installed_host() {
    let h = host(Some("p"));
    let r = reconcile(None, "s", &h, 10).unwrap();
    let (_, r) = boot(Some(&r), h.mac, true, 100, 11, A, || "t1".into()).unwrap();
    let r = event(&r.unwrap(), "t1", A, InstallEvent::Installed, "", 12).unwrap();

    // `reinstall` of an installed host needs force, and says why without it.
    match reinstall(&r, false, 13) {
        Err(InventoryError::Installed { status, .. }) => assert_eq!(status, "installed"),
        other => panic!("{other:?}"),
    }
    // `netboot on` (an operator's mistake): an install is offered, without permission
    // to wipe; the installer's %pre refuses and the host stays installed.
    let on = set_netboot(&r, true, 14);
    let (d, next) = boot(Some(&on), h.mac, true, 100, 15, A, || "t2".into()).unwrap();
    assert_eq!(d, BootDecision::Install { token: "t2".into() });
    let next = next.unwrap();
    assert!(!next.install.as_ref().unwrap().wipe_allowed);
    let refused = event(&next, "t2", A, InstallEvent::Refused, "marker found", 16).unwrap();
    assert_eq!((refused.status, refused.netboot), (Status::Installed, false));
    assert!(refused.history.last().unwrap().what.contains("refused to wipe"));

    // `reinstall --force`: this install may wipe, once.
    let forced = reinstall(&refused, true, 17).unwrap();
    assert!(forced.wipe_allowed && forced.netboot);
    let (_, next) = boot(Some(&forced), h.mac, true, 100, 18, A, || "t3".into()).unwrap();
    let next = next.unwrap();
    assert!(next.install.as_ref().unwrap().wipe_allowed);
    let done = event(&next, "t3", A, InstallEvent::Installed, "", 19).unwrap();
    assert!(!done.wipe_allowed, "the permission was for one install");
    // A drained one was taken out of service on purpose: no force needed either.
    let drained = set_drained(&done, true, 20);
    assert!(reinstall(&drained, false, 20).is_ok());
    // A failed host is not in service: no force needed.
    let failed = {
        let (_, n) = boot(Some(&set_netboot(&done, true, 20)), h.mac, true, 100, 21, A, || {
            "t4".into()
        })
        .unwrap();
        event(&n.unwrap(), "t4", A, InstallEvent::Failed, "", 22).unwrap()
    };
    assert!(reinstall(&failed, false, 23).is_ok());
}

#[test]
fn a_host_the_config_says_is_in_service_starts_installed() {
    let mut h = host(Some("p"));
    h.installed = true;
    let r = reconcile(None, "s", &h, 10).unwrap();
    assert_eq!((r.status, r.netboot), (Status::Installed, false));
    let (d, _) = boot(Some(&r), h.mac, true, 100, 11, A, || panic!("no install")).unwrap();
    assert_eq!(d, BootDecision::LocalDisk);
    let m = mark_installed(&reinstall(&r, true, 12).unwrap(), 13);
    assert_eq!((m.status, m.netboot, m.wipe_allowed), (Status::Installed, false, false));
}

#[test]
fn unknown_machines_get_the_menu_and_one_record() {
    let mac: MacAddr = "52:54:00:00:00:99".parse().unwrap();
    let (d, first) = boot(None, mac, false, 100, 1, A, || panic!("no token for strangers")).unwrap();
    assert_eq!(d, BootDecision::Menu);
    let first = first.unwrap();
    assert_eq!(first.status, Status::Discovered);
    assert_eq!(boot(Some(&first), mac, false, 100, 2, A, || panic!()).unwrap().1, None);
    let seen = observe(
        Some(&first),
        mac,
        Observation {
            arch: Some(7),
            ..Default::default()
        },
        3,
    )
    .unwrap();
    assert_eq!(seen.arch, Some(7));
    assert!(
        observe(
            Some(&seen),
            mac,
            Observation {
                arch: Some(7),
                ..Default::default()
            },
            4
        )
        .is_none()
    );
}
