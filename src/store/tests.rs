//! Tests of `store`.

use super::*;

fn rec(ip: [u8; 4], client: &str) -> LeaseRecord {
    LeaseRecord {
        ip: Ipv4Addr::from(ip),
        client_id: client.into(),
        mac: None,
        hostname: None,
        state: LeaseState::Bound,
        starts: 100,
        ends: 200,
        tstp: 0,
        tsfp: 0,
        cltt: 0,
        from_partner: false,
        site: "s".into(),
    }
}

#[test]
fn persisted_leases_survive_reopen_and_last_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        store
            .persist_blocking(vec![rec([10, 0, 0, 5], "aa"), rec([10, 0, 0, 2], "bb")])
            .unwrap();
        let mut released = rec([10, 0, 0, 5], "aa");
        released.state = LeaseState::Released;
        store.persist_blocking(vec![released]).unwrap();
    }
    // The committer thread still holds the Arc<Database> until its channel closes; wait
    // for the lock to be released by retrying briefly.
    let mut leases = None;
    for _ in 0..100 {
        if let Ok(l) = read_leases_offline(dir.path()) {
            leases = Some(l);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let leases = leases.expect("database reopens once the store is dropped");
    assert_eq!(leases.len(), 2);
    assert_eq!(leases[0].ip, Ipv4Addr::new(10, 0, 0, 2), "address order");
    assert_eq!(leases[1].state, LeaseState::Released);
}

#[test]
fn the_state_directory_and_the_database_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _store = Store::open(&state).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&db_path(&state)), 0o600);
}

#[test]
fn error_kinds_survive_from_the_os_error_to_the_waiter() {
    let full = StoreError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC)));
    assert_eq!(full.kind(), ErrorKind::DiskFull);
    let quota = StoreError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(libc::EDQUOT)));
    assert_eq!(quota.kind(), ErrorKind::DiskFull);
    let eio = StoreError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(libc::EIO)));
    assert_eq!(eio.kind(), ErrorKind::Io);
    assert_eq!(StoreError::Db(redb::Error::PreviousIo).kind(), ErrorKind::Io);
    // After a full disk, redb's "PreviousIo" is reported as the disk that filled.
    let first = OnceLock::new();
    assert_eq!(
        remember(&first, StoreError::Db(redb::Error::PreviousIo)).kind(),
        ErrorKind::Io
    );
    let _ = remember(
        &first,
        StoreError::Db(redb::Error::Io(std::io::Error::from_raw_os_error(libc::ENOSPC))),
    );
    let later = remember(&first, StoreError::Db(redb::Error::PreviousIo));
    assert_eq!(later.kind(), ErrorKind::DiskFull, "{later}");
    let bad = StoreError::Db(redb::Error::Corrupted("checksum".into()));
    assert_eq!(bad.kind(), ErrorKind::Corruption);
    // What each waiter of a failed group commit receives keeps the kind and says it.
    let told = full.to_commit();
    assert_eq!(told.kind(), ErrorKind::DiskFull);
    assert!(told.to_string().contains("disk full"), "{told}");
    assert_eq!(told.to_commit().kind(), ErrorKind::DiskFull);
}

/// A real full disk: a 2 MiB tmpfs (root only; the suite runs as root). Commits fail as
/// "disk full", not as corruption, and nothing reports success that was not written.
#[test]
fn a_full_disk_is_reported_as_disk_full() {
    let Some(fs) = testing::SmallTmpfs::mount("2m") else {
        return;
    };
    let store = Store::open(fs.path()).unwrap();
    let mut failure = None;
    for batch in 0..400u32 {
        let records = (0..64u32)
            .map(|i| {
                let mut r = rec(Ipv4Addr::from(0x0a00_0000 + batch * 64 + i).octets(), "aa");
                r.hostname = Some("h".repeat(200));
                r
            })
            .collect();
        if let Err(e) = store.persist_blocking(records) {
            failure = Some(e);
            break;
        }
    }
    let e = failure.expect("2 MiB fills up");
    assert_eq!(e.kind(), ErrorKind::DiskFull, "{e}");
    assert!(
        store.failure().unwrap().contains("disk full"),
        "the store reports its failure"
    );
    assert!(store.stats.commit_failures.load(Ordering::Relaxed) >= 1);
}

#[test]
fn many_concurrent_persists_are_grouped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..2000u32 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                let ip = 0x0a00_0000 + i;
                s.persist(vec![rec(Ipv4Addr::from(ip).octets(), &format!("{i:x}"))])
                    .await
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
    assert_eq!(store.load_leases().unwrap().len(), 2000);
    let commits = store.stats.commits.load(Ordering::Relaxed);
    assert!(
        commits < 2000,
        "expected grouping, got {commits} commits for 2000 leases"
    );
}

#[test]
fn an_ipam_address_is_held_once_and_a_refused_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let one = ("a/migration/10.20.0.10".to_string(), b"hv1".to_vec());
    let two = ("a/migration/10.20.0.11".to_string(), b"hv2".to_vec());
    store.write_ipam_blocking(&[], std::slice::from_ref(&one)).unwrap();
    // The same address again, in a transaction that also assigns a free one: refused whole.
    let again = ("a/migration/10.20.0.10".to_string(), b"hv3".to_vec());
    let err = store.write_ipam_blocking(&[], &[two.clone(), again]).unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(
        store.load_ipam().unwrap(),
        vec![one.clone()],
        "nothing of the refused write landed"
    );
    // Released and taken in one transaction: fine. And the store still takes writes.
    let moved = ("a/migration/10.20.0.10".to_string(), b"hv3".to_vec());
    store
        .write_ipam_blocking(std::slice::from_ref(&one.0), &[moved.clone(), two.clone()])
        .unwrap();
    assert_eq!(store.load_ipam().unwrap(), vec![moved, two]);
}
