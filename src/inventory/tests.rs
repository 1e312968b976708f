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

/// The address the host asks from.
const A: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 11);

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

    let BootDecision::Install { token } = inv.boot(&cfg.hosts, hv, A).await.unwrap() else {
        panic!("should install")
    };
    assert_eq!(
        inv.boot(&cfg.hosts, hv, A).await.unwrap(),
        BootDecision::Install { token: token.clone() },
        "same session on a re-boot"
    );
    assert_eq!(
        inv.kickstart_fetched(hv, "wrong", A).await,
        Err(InventoryError::TokenRefused)
    );
    assert_eq!(
        inv.kickstart_fetched(hv, &token, A).await.unwrap().status,
        Status::Installing
    );
    assert_eq!(
        inv.event(hv, &token, A, InstallEvent::PostStarted, "").await.unwrap(),
        Status::Installing
    );
    assert_eq!(
        inv.event(hv, &token, A, InstallEvent::Installed, "done").await.unwrap(),
        Status::Installed
    );
    assert_eq!(
        inv.event(hv, &token, A, InstallEvent::Installed, "").await,
        Err(InventoryError::TokenRefused),
        "token spent"
    );
    assert_eq!(
        inv.kickstart_fetched(hv, &token, A).await,
        Err(InventoryError::TokenRefused)
    );
    assert_eq!(
        inv.boot(&cfg.hosts, hv, A).await.unwrap(),
        BootDecision::LocalDisk,
        "boot once"
    );

    assert!(matches!(
        inv.reinstall(hv, false).await,
        Err(InventoryError::Installed { .. })
    ));
    inv.reinstall(hv, true).await.unwrap();
    let BootDecision::Install { token: t2 } = inv.boot(&cfg.hosts, hv, A).await.unwrap() else {
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
        let BootDecision::Install { token } = inv.boot(&cfg.hosts, hv, A).await.unwrap() else {
            panic!()
        };
        inv.event(hv, &token, A, InstallEvent::Installed, "").await.unwrap();
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
        assert_eq!(inv.boot(&cfg.hosts, stranger, A).await.unwrap(), BootDecision::Menu);
        assert_eq!(
            inv.boot(&cfg.hosts, mac("52:54:00:00:00:02"), A).await.unwrap(),
            BootDecision::LocalDisk,
            "no profile: nothing to install"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store, &cfg.hosts, &served, 60).unwrap();
    assert_eq!(inv.get(hv).await.unwrap().status, Status::Installed);
    assert_eq!(inv.boot(&cfg.hosts, hv, A).await.unwrap(), BootDecision::LocalDisk);
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
    let BootDecision::Install { token } = inv.boot(&cfg.hosts, hv, A).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        inv.kickstart_fetched(hv, &token, A).await,
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
    let BootDecision::Install { token } = inv.boot(&cfg.hosts, hv, A).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        inv.verify_signing_token(other, &token, A, "server").await,
        Err(InventoryError::TokenRefused),
        "bound to its host"
    );
    inv.verify_signing_token(hv, &token, A, "server").await.unwrap();
    inv.certificate_issued(hv, &token, A, "server").await.unwrap();
    assert_eq!(
        inv.verify_signing_token(hv, &token, A, "server").await,
        Err(InventoryError::StepTaken("the server certificate".into())),
        "once per role"
    );
    assert_eq!(
        inv.certificate_issued(hv, &token, A, "server").await,
        Err(InventoryError::StepTaken("the server certificate".into()))
    );
    inv.verify_signing_token(hv, &token, A, "client").await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let served = cfg.select_sites(&[]).unwrap();
    let expired = Inventory::load(store, &cfg.hosts, &served, 0).unwrap();
    let BootDecision::Install { token } = expired.boot(&cfg.hosts, hv, A).await.unwrap() else {
        panic!()
    };
    assert_eq!(
        expired.verify_signing_token(hv, &token, A, "server").await,
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
    assert!(matches!(
        inv.boot(&cfg.hosts, hv, A).await,
        Err(InventoryError::Store(_))
    ));
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
        inv.boot(&cfg.hosts, m, A).await.unwrap();
    }
    assert_eq!(inv.list().await.len(), 52, "two configured hosts and fifty strangers");
    assert!(inv.writers.lock().unwrap().is_empty(), "no lock left behind");
}

#[tokio::test]
async fn discovered_machines_are_capped_and_forgotten_when_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (store, cfg) = setup(dir.path());
    let now = unix_now();
    let stranger = |n: u8| mac(&format!("52:54:00:aa:00:{n:02x}"));
    // On disk before the start: three machines seen 50 s ago, one seen in 1970.
    let put = |m: MacAddr, t: u64| {
        let r = transition::observe(None, m, Observation::default(), t).unwrap();
        store
            .put_host_blocking(&m.to_string(), &serde_json::to_vec(&r).unwrap())
            .unwrap();
    };
    for n in 1..=3 {
        put(stranger(n), now - 50);
    }
    put(stranger(99), 1000);
    let served = cfg.select_sites(&[]).unwrap();
    let inv = Inventory::load(store.clone(), &cfg.hosts, &served, 60).unwrap();
    assert!(inv.get(stranger(99)).await.is_none(), "forgotten at start");
    assert!(
        inv.get(stranger(1)).await.is_some(),
        "seen 50 s ago: kept by the 30-day default"
    );

    // A cap of 3 with a 10 s memory: the three from 50 s ago make room for a newcomer.
    let inv = inv.with_discovery_limits(DiscoveryLimits {
        max_records: 3,
        forget_after_secs: 10,
    });
    inv.observe(stranger(10), Observation::default()).await.unwrap();
    assert!(inv.get(stranger(10)).await.is_some());
    assert!(
        inv.get(stranger(1)).await.is_none(),
        "stale ones forgotten to make room"
    );
    inv.observe(stranger(11), Observation::default()).await.unwrap();
    inv.observe(stranger(12), Observation::default()).await.unwrap();
    // Full of fresh records: a newcomer is recorded and the machine heard from least
    // recently is forgotten (ties: the lowest MAC), each time.
    inv.observe(stranger(13), Observation::default()).await.unwrap();
    assert_eq!(inv.boot(&cfg.hosts, stranger(14), A).await.unwrap(), BootDecision::Menu);
    assert!(inv.get(stranger(13)).await.is_some() && inv.get(stranger(14)).await.is_some());
    assert!(inv.get(stranger(10)).await.is_none() && inv.get(stranger(11)).await.is_none());
    assert_eq!(inv.discovered_evicted(), 2);
    // Configured hosts are never capped.
    inv.observe(mac("52:54:00:00:00:01"), Observation::default())
        .await
        .unwrap();
    assert!(matches!(
        inv.boot(&cfg.hosts, mac("52:54:00:00:00:01"), A).await.unwrap(),
        BootDecision::Install { .. }
    ));

    // The store agrees: only the three newest strangers and the configured hosts remain.
    drop(inv);
    let mut keys: Vec<String> = store.load_hosts().unwrap().into_iter().map(|(k, _)| k).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "52:54:00:00:00:01",
            "52:54:00:00:00:02",
            "52:54:00:aa:00:0c",
            "52:54:00:aa:00:0d",
            "52:54:00:aa:00:0e"
        ]
    );
}
