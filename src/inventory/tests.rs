use super::*;
use crate::config::Config;

fn setup(dir: &std::path::Path) -> (Store, Config) {
    let toml = r#"
[profiles.p]
os = "el9"
kickstart = "kickstart/el-generic.ks.j2"
[sites.s]
server_address = "10.0.0.1"
listen = [{ interface = "eth0", address = "10.0.0.1" }]
[[sites.s.subnets]]
prefix = "10.0.0.0/24"
[[sites.s.hosts]]
mac = "52:54:00:00:00:01"
hostname = "hv1"
profile = "p"
[[sites.s.hosts]]
mac = "52:54:00:00:00:02"
hostname = "noprofile"
"#;
    let cfg = crate::config::load_from_strs(&[("t.toml".into(), toml.into())]).unwrap();
    (Store::open(dir).unwrap(), cfg)
}

fn mac(s: &str) -> MacAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn install_then_boot_local_until_reinstall() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
    let hv = mac("52:54:00:00:00:01");
    assert_eq!(inv.get(hv).await.unwrap().status, Status::Assigned);

    let BootDecision::Install { token } = inv.boot(hv).await.unwrap() else {
        panic!("should install")
    };
    assert_eq!(
        inv.boot(hv).await.unwrap(),
        BootDecision::Install { token: token.clone() },
        "same session on a re-boot"
    );
    assert_eq!(
        inv.kickstart_fetched(hv, "wrong").await,
        Err(InventoryError::TokenRefused)
    );
    assert_eq!(
        inv.kickstart_fetched(hv, &token).await.unwrap().status,
        Status::Installing
    );
    assert_eq!(
        inv.event(hv, &token, InstallEvent::PostStarted, "").await.unwrap(),
        Status::Installing
    );
    assert_eq!(
        inv.event(hv, &token, InstallEvent::Installed, "done").await.unwrap(),
        Status::Installed
    );
    assert_eq!(
        inv.event(hv, &token, InstallEvent::Installed, "").await,
        Err(InventoryError::TokenRefused),
        "token spent"
    );
    assert_eq!(
        inv.kickstart_fetched(hv, &token).await,
        Err(InventoryError::TokenRefused)
    );
    assert_eq!(inv.boot(hv).await.unwrap(), BootDecision::LocalDisk, "boot once");

    inv.reinstall(hv).await.unwrap();
    let BootDecision::Install { token: t2 } = inv.boot(hv).await.unwrap() else {
        panic!("reinstall")
    };
    assert_ne!(t2, token);
    let hist: Vec<String> = inv
        .get(hv)
        .await
        .unwrap()
        .history
        .iter()
        .map(|h| h.what.clone())
        .collect();
    assert!(hist.iter().any(|h| h.contains("operator: reinstall")), "{hist:?}");
}

#[tokio::test]
async fn state_survives_reload_and_unknown_macs_are_discovered() {
    let dir = tempfile::tempdir().unwrap();
    let hv = mac("52:54:00:00:00:01");
    let stranger = mac("52:54:00:99:99:99");
    {
        let (store, cfg) = setup(dir.path());
        let served = cfg.select_sites(&[]).unwrap();
        let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
        let BootDecision::Install { token } = inv.boot(hv).await.unwrap() else {
            panic!()
        };
        inv.event(hv, &token, InstallEvent::Installed, "").await.unwrap();
        inv.observe(
            stranger,
            Observation {
                arch: Some(7),
                uuid: Some("u-1".into()),
                vendor_class: Some("PXEClient".into()),
            },
        )
        .await
        .unwrap();
        assert_eq!(inv.boot(stranger).await.unwrap(), BootDecision::Menu);
        assert_eq!(
            inv.boot(mac("52:54:00:00:00:02")).await.unwrap(),
            BootDecision::LocalDisk,
            "no profile: nothing to install"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
    assert_eq!(inv.get(hv).await.unwrap().status, Status::Installed);
    assert_eq!(inv.boot(hv).await.unwrap(), BootDecision::LocalDisk);
    let s = inv.get(stranger).await.unwrap();
    assert_eq!(
        (s.status, s.arch, s.uuid.as_deref()),
        (Status::Discovered, Some(7), Some("u-1"))
    );
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 0).unwrap();
    let hv = mac("52:54:00:00:00:01");
    let BootDecision::Install { token } = inv.boot(hv).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        inv.kickstart_fetched(hv, &token).await,
        Err(InventoryError::TokenRefused)
    );
}

#[test]
fn tokens_are_random_and_compared_exactly() {
    let (a, b) = (crate::random::token(), crate::random::token());
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    assert!(token::equal(&a, &a.clone()));
    assert!(!token::equal(&a, &b));
    assert!(!token::equal(&a, &a[..31]));
}

#[tokio::test]
async fn signing_tokens_are_bound_to_host_single_use_per_role_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
    let hv = mac("52:54:00:00:00:01");
    let other = mac("52:54:00:00:00:02");
    let BootDecision::Install { token } = inv.boot(hv).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        inv.verify_signing_token(other, &token, "server").await,
        Err(InventoryError::TokenRefused),
        "bound to its host"
    );
    inv.verify_signing_token(hv, &token, "server").await.unwrap();
    inv.certificate_issued(hv, &token, "server").await.unwrap();
    assert_eq!(
        inv.verify_signing_token(hv, &token, "server").await,
        Err(InventoryError::TokenRefused),
        "once per role"
    );
    assert_eq!(
        inv.certificate_issued(hv, &token, "server").await,
        Err(InventoryError::TokenRefused)
    );
    inv.verify_signing_token(hv, &token, "client").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let expired = Inventory::load(store, &cfg.hosts, &served, 0).unwrap();
    let BootDecision::Install { token } = expired.boot(hv).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        expired.verify_signing_token(hv, &token, "server").await,
        Err(InventoryError::TokenRefused),
        "expired"
    );
}

/// A write that fails (a real full disk) changes nothing in memory: the caller gets the
/// error and every reader still sees the last durable record.
#[tokio::test]
async fn a_failed_write_leaves_memory_as_it_was() {
    let Some(fs) = crate::store::testing::SmallTmpfs::mount("4m") else {
        return;
    };
    let (store, cfg) = setup(fs.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
    let hv = mac("52:54:00:00:00:01");
    let before = inv.get(hv).await.unwrap();
    assert!(before.netboot);
    fs.fill();
    let r = inv.set_netboot(hv, false).await;
    assert!(matches!(r, Err(InventoryError::Store(_))), "{r:?}");
    assert_eq!(inv.get(hv).await.unwrap(), before, "memory unchanged");
    // A boot that would mint a token fails the same way and hands out no token.
    assert!(matches!(inv.boot(hv).await, Err(InventoryError::Store(_))));
    assert_eq!(inv.get(hv).await.unwrap().install, None);
}

/// Any MAC on the network can make the inventory write a record: the per-host write locks
/// must not pile up behind them.
#[tokio::test]
async fn write_locks_do_not_accumulate_per_mac() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
    for i in 0..50u8 {
        let m = crate::mac::MacAddr([0x52, 0x54, 0, 0x99, 0, i]);
        inv.observe(m, Observation::default()).await.unwrap();
        inv.boot(m).await.unwrap();
    }
    assert_eq!(inv.list().await.len(), 52, "two configured hosts and fifty strangers");
    assert!(inv.writers.lock().unwrap().is_empty(), "no lock left behind");
}
