//! The durable store (redb): lease records and inventory host state (tokens and issued
//! certificates join later).
//!
//! Durability contract: `Store::persist` resolves only after the record is in a redb
//! transaction committed with `Durability::Immediate` (checksummed and fsynced). The DHCP
//! server sends a DHCPACK only after that, so a kill -9 can never lose an acknowledged lease.
//!
//! Speed comes from group commit: a single committer thread takes everything queued while
//! the previous fsync ran and writes it in one transaction, so under load one fsync covers
//! hundreds of leases. Callers never block the async runtime: they await a oneshot.
//!
//! This module knows nothing about DHCP rules; it stores what it is given.

mod lease;
#[cfg(test)]
pub(crate) mod testing;

pub use lease::{LeaseRecord, LeaseState};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::{mpsc, oneshot};

/// Leases keyed by IPv4 address (as u32, so the table iterates in address order); the value
/// is the JSON form of `LeaseRecord` (small, readable with any redb tool, easy to evolve).
const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("leases");

/// Inventory state per host, keyed by MAC (`52:54:00:..`); the value is JSON owned by the
/// inventory module, which this module does not interpret.
const HOSTS: TableDefinition<&str, &[u8]> = TableDefinition::new("hosts");
/// NoCloud seeds of deployed VMs, by their URL token (JSON values, see `crate::nocloud`).
const NOCLOUD: TableDefinition<&str, &[u8]> = TableDefinition::new("nocloud");
/// Failover relationship state, by relationship name (JSON, see `crate::failover::peer`).
const FAILOVER: TableDefinition<&str, &[u8]> = TableDefinition::new("failover");

/// Certificates provd's CA issued, by serial (JSON, see `crate::pki::registry`): what
/// `provd pki list`, revocation and the CRL read.
const CERTIFICATES: TableDefinition<&str, &[u8]> = TableDefinition::new("certificates");
/// Certificate requests waiting for an operator (`[pki] sign = "approve"`), by host/role.
const CSR_REQUESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("csr_requests");

/// Names provd published in a site's DNS and the server accepted, by fully qualified
/// name (JSON, see `crate::dns::updater`): what the next update diffs against.
const DNS_NAMES: TableDefinition<&str, &[u8]> = TableDefinition::new("dns_names");

/// IPAM assignments, keyed `site/role/address` (JSON, see `crate::ipam`): one key per
/// address, so an address is held by one host at most.
const IPAM: TableDefinition<&str, &[u8]> = TableDefinition::new("ipam");

/// Whether `apply_blocking` may replace a key that is still there.
#[derive(Clone, Copy)]
enum Overwrite {
    Yes,
    Refuse(&'static str),
}

/// Small facts about this server (its replication id; whether each site's pair has
/// synchronised once), by name.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// How many commit requests may wait for the committer. A full queue makes the sender wait
/// (the DHCP loop stops acknowledging) instead of growing memory while a disk stalls.
pub const COMMIT_QUEUE: usize = 16_384;

/// The most records one transaction takes; bounds commit latency under a flood.
const MAX_BATCH: usize = 4096;

/// Group commit's delay (PostgreSQL's `commit_delay`): when the last commit held more than
/// one request, writers are arriving concurrently, and waiting this long for more before
/// the fsync puts more records in each. A commit's fixed cost (the fsync, redb's page
/// bookkeeping) was about half the DHCP server's CPU per ACK at 12,000 DORA/s in
/// `lab/bench/dhcp-profile.sh`; a millisecond more on an ACK is nothing to a DHCP client.
/// An idle server (one write at a time) never waits.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// A batch this big stops lingering: its fsync is amortised already.
const LINGER_ENOUGH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("lease database {path}: {source}")]
    Open { path: PathBuf, source: redb::DatabaseError },
    #[error("lease database: {0}")]
    Db(#[from] redb::Error),
    #[error("corrupt lease record for {ip}: {source}")]
    Record { ip: Ipv4Addr, source: serde_json::Error },
    #[error("the lease committer has stopped")]
    CommitterGone,
    /// `submit` found the commit queue full (the store is behind; nothing was queued).
    #[error("the lease commit queue is full")]
    QueueFull,
    /// A group commit failed; every waiter gets the same kind and text.
    #[error("commit failed ({kind}): {message}")]
    Commit { kind: ErrorKind, message: String },
    /// redb refuses every write after one failed I/O ("PreviousIo"); this keeps the kind of
    /// that first failure, so a full disk is still reported as one.
    #[error("an earlier write failed ({kind}); the database takes no more writes until provd restarts")]
    Previous { kind: ErrorKind },
    /// A write that would break a uniqueness the store guards (nothing was written).
    #[error("{0}")]
    Conflict(String),
}

/// What kind of failure a store error is, kept from the OS error up to callers and logs: a
/// full disk is not corruption, and an operator acts differently on each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// No space left (ENOSPC, EDQUOT): free space; nothing on disk is damaged.
    DiskFull,
    /// Any other I/O error (the device, permissions, a previous I/O failure).
    Io,
    /// redb found a bad checksum or an impossible structure, or a record does not decode.
    Corruption,
    /// Everything else (the database is held by another process, the committer stopped...).
    Other,
}

/// A store error as callers keep it: its kind and its text, cloneable (one failed write may
/// answer many waiters) and comparable. HTTP turns the kind into a status, the log prints it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub kind: ErrorKind,
    pub message: String,
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::DiskFull => "disk full",
            ErrorKind::Io => "I/O error",
            ErrorKind::Corruption => "corruption",
            ErrorKind::Other => "database error",
        })
    }
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::DiskFull,
        _ if e.kind() == std::io::ErrorKind::StorageFull => ErrorKind::DiskFull,
        _ => ErrorKind::Io,
    }
}

fn redb_kind(e: &redb::Error) -> ErrorKind {
    match e {
        redb::Error::Io(io) => io_kind(io),
        redb::Error::PreviousIo => ErrorKind::Io,
        redb::Error::Corrupted(_) => ErrorKind::Corruption,
        _ => ErrorKind::Other,
    }
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::StateDir { source, .. } => io_kind(source),
            StoreError::Open { source, .. } => match source {
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) => io_kind(io),
                redb::DatabaseError::Storage(redb::StorageError::Corrupted(_)) => ErrorKind::Corruption,
                _ => ErrorKind::Other,
            },
            StoreError::Db(e) => redb_kind(e),
            StoreError::Record { .. } => ErrorKind::Corruption,
            StoreError::CommitterGone | StoreError::QueueFull | StoreError::Conflict(_) => ErrorKind::Other,
            StoreError::Commit { kind, .. } | StoreError::Previous { kind } => *kind,
        }
    }

    /// The committer's answer to its waiters (cloneable: one failure, many waiters).
    fn to_commit(&self) -> StoreError {
        match self {
            StoreError::Commit { kind, message } => StoreError::Commit {
                kind: *kind,
                message: message.clone(),
            },
            other => StoreError::Commit {
                kind: other.kind(),
                message: other.to_string(),
            },
        }
    }
}

impl From<redb::TransactionError> for StoreError {
    fn from(e: redb::TransactionError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::TableError> for StoreError {
    fn from(e: redb::TableError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::CommitError> for StoreError {
    fn from(e: redb::CommitError) -> Self {
        StoreError::Db(e.into())
    }
}
impl From<redb::SetDurabilityError> for StoreError {
    fn from(e: redb::SetDurabilityError) -> Self {
        // Only raised for durability modes provd never asks for; not an I/O failure.
        StoreError::Commit {
            kind: ErrorKind::Other,
            message: e.to_string(),
        }
    }
}

/// Counters a stats view can show.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub commits: AtomicU64,
    pub records_committed: AtomicU64,
    pub commit_failures: AtomicU64,
    pub largest_batch: AtomicU64,
}

struct CommitRequest {
    records: Vec<LeaseRecord>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// Records queued by `Store::submit`; `durable` resolves once their transaction is fsynced
/// (or failed). Commits finish in the order they were queued, so awaiting several in that
/// order wakes the waiter about once per group commit, not once per record.
pub struct PendingCommit(oneshot::Receiver<Result<(), StoreError>>);

impl PendingCommit {
    pub async fn durable(self) -> Result<(), StoreError> {
        match self.0.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::CommitterGone),
        }
    }
}

#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    queue: mpsc::Sender<CommitRequest>,
    pub stats: Arc<StoreStats>,
    /// The first lease commit that failed (None while healthy). A store that failed to
    /// write is not trusted again in this process: the daemon reports it and exits.
    health: Arc<tokio::sync::watch::Sender<Option<String>>>,
    /// The kind of the first failed write (what a later "PreviousIo" really is).
    first_failure: Arc<OnceLock<ErrorKind>>,
}

/// Keep the kind of the first I/O failure and report redb's later "PreviousIo" as that
/// kind: the disk that filled is why every later write fails.
fn remember(first: &OnceLock<ErrorKind>, e: StoreError) -> StoreError {
    match e {
        StoreError::Db(redb::Error::PreviousIo) => StoreError::Previous {
            kind: first.get().copied().unwrap_or(ErrorKind::Io),
        },
        e => {
            if matches!(e.kind(), ErrorKind::DiskFull | ErrorKind::Io) {
                let _ = first.set(e.kind());
            }
            e
        }
    }
}

/// Tighten `path` to `mode` (a directory or file provd owns); a failure is logged, not fatal
/// (e.g. a state directory an operator manages with its own rights).
fn private(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(m) if m.permissions().mode() & 0o777 == mode => {}
        Ok(_) => {
            if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
                tracing::warn!("cannot restrict {} to mode {mode:o}: {e}", path.display());
            }
        }
        Err(e) => tracing::warn!("{}: {e}", path.display()),
    }
}

pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("provd.redb")
}

impl Store {
    /// Open (or create) the database under `state_dir` and start the committer thread.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        // Leases, tokens and the API credential live here: nobody else reads them.
        private(state_dir, 0o700);
        let path = db_path(state_dir);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        private(&path, 0o600);
        // Create the table up front so readers never see "table does not exist".
        let txn = db.begin_write()?;
        txn.open_table(LEASES)?;
        txn.open_table(HOSTS)?;
        txn.open_table(NOCLOUD)?;
        txn.open_table(FAILOVER)?;
        txn.open_table(CERTIFICATES)?;
        txn.open_table(CSR_REQUESTS)?;
        txn.open_table(META)?;
        txn.open_table(DNS_NAMES)?;
        txn.open_table(IPAM)?;
        txn.commit()?;
        let db = Arc::new(db);
        let stats = Arc::new(StoreStats::default());
        let (queue, rx) = mpsc::channel(COMMIT_QUEUE);
        let health = Arc::new(tokio::sync::watch::Sender::new(None));
        let first_failure = Arc::new(OnceLock::new());
        let (db2, stats2, health2, first2) = (db.clone(), stats.clone(), health.clone(), first_failure.clone());
        std::thread::Builder::new()
            .name("lease-committer".into())
            .spawn(move || committer(db2, rx, stats2, health2, first2))
            .expect("spawn committer thread");
        Ok(Store {
            db,
            queue,
            stats,
            health,
            first_failure,
        })
    }

    /// Why the store failed, if it did (the first failed commit, with its kind).
    pub fn failure(&self) -> Option<String> {
        self.health.borrow().clone()
    }

    /// Resolves when a commit fails (at once if one already has).
    pub async fn failed(&self) -> String {
        let mut rx = self.health.subscribe();
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Every stored lease, in address order.
    pub fn load_leases(&self) -> Result<Vec<LeaseRecord>, StoreError> {
        read_all(self.db.as_ref())
    }

    /// Persist records durably; resolves after the fsync of the transaction holding them.
    pub async fn persist(&self, records: Vec<LeaseRecord>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .send(CommitRequest { records, done })
            .await
            .map_err(|_| StoreError::CommitterGone)?;
        PendingCommit(wait).durable().await
    }

    /// Queue records for the next group commit without waiting, for a caller that must never
    /// wait on the store (the DHCP receive loop): the commit is then awaited elsewhere, many
    /// in turn by one task. `QueueFull` if the committer is that far behind (nothing queued).
    pub fn submit(&self, records: Vec<LeaseRecord>) -> Result<PendingCommit, StoreError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .try_send(CommitRequest { records, done })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => StoreError::QueueFull,
                mpsc::error::TrySendError::Closed(_) => StoreError::CommitterGone,
            })?;
        Ok(PendingCommit(wait))
    }

    /// Durably write one host's state (its own transaction, fsynced before returning).
    /// Blocking: call from `spawn_blocking` in async code. Host changes are rare (boot
    /// decisions, install events), so they do not need the lease path's group commit.
    pub fn put_host_blocking(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_blocking(HOSTS, key, value)
    }

    /// Forget hosts' state in one transaction (discovered machines that expired).
    pub fn delete_hosts_blocking(&self, keys: &[String]) -> Result<(), StoreError> {
        self.delete_blocking(HOSTS, keys)
    }

    /// Durably record names the DNS server accepted (`put`) and removed (`delete`), in one
    /// transaction (blocking, like `put_host_blocking`).
    pub fn write_dns_names_blocking(&self, delete: &[String], put: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.apply_blocking(DNS_NAMES, delete, put, Overwrite::Yes)
    }

    /// Release and assign IPAM addresses in one transaction, fsynced before returning. An
    /// assignment whose key is already held is refused (the table is the guard against an
    /// address given twice, whatever the caller computed).
    pub fn write_ipam_blocking(&self, release: &[String], assign: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        self.apply_blocking(
            IPAM,
            release,
            assign,
            Overwrite::Refuse("the address {key} is already assigned"),
        )
    }

    /// Every IPAM assignment as (key, JSON).
    pub fn load_ipam(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(IPAM)
    }

    /// Every published DNS name as (fqdn, JSON).
    pub fn load_dns_names(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(DNS_NAMES)
    }

    /// Every stored host state as (key, JSON).
    pub fn load_hosts(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(HOSTS)
    }

    /// Durably write one NoCloud seed (blocking, like `put_host_blocking`).
    pub fn put_nocloud_blocking(&self, token: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_blocking(NOCLOUD, token, value)
    }

    /// Every stored NoCloud seed as (token, JSON).
    pub fn load_nocloud(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(NOCLOUD)
    }

    /// Durably write a failover relationship's state (blocking).
    pub fn put_failover_blocking(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_blocking(FAILOVER, name, value)
    }

    pub fn load_failover(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(FAILOVER)
    }

    /// Durably write one issued certificate's record (blocking).
    pub fn put_certificate_blocking(&self, serial: &str, value: &[u8]) -> Result<(), StoreError> {
        self.put_blocking(CERTIFICATES, serial, value)
    }

    pub fn load_certificates(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(CERTIFICATES)
    }

    /// Durably write (or, with `None`, remove) a waiting certificate request (blocking).
    pub fn put_csr_request_blocking(&self, key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.put_blocking(CSR_REQUESTS, key, v),
            None => self.write(|db| {
                let mut txn = db.begin_write()?;
                txn.set_durability(Durability::Immediate)?;
                txn.open_table(CSR_REQUESTS)?.remove(key)?;
                txn.commit()?;
                Ok(())
            }),
        }
    }

    pub fn load_csr_requests(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.load_all(CSR_REQUESTS)
    }

    /// One fact about this server (blocking).
    pub fn meta_blocking(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .load_all(META)?
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(&v).to_string()))
    }

    pub fn set_meta_blocking(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.put_blocking(META, key, value.as_bytes())
    }

    /// This server's id for record versions: made once, kept in the store (a server whose
    /// state directory is rebuilt is a new writer, which is what it is).
    pub fn server_id_blocking(&self) -> Result<String, StoreError> {
        if let Some(id) = self.meta_blocking("server-id")? {
            return Ok(id);
        }
        let id = crate::random::token()[..12].to_string();
        self.set_meta_blocking("server-id", &id)?;
        Ok(id)
    }

    fn put_blocking(&self, table: TableDefinition<&str, &[u8]>, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.open_table(table)?.insert(key, value)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Remove `keys` from `table` in one transaction, fsynced before returning.
    fn delete_blocking(&self, table: TableDefinition<&str, &[u8]>, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.apply_blocking(table, keys, &[], Overwrite::Yes)
    }

    /// Remove `delete`, then write `put`, in one transaction fsynced before returning. With
    /// `Overwrite::Refuse`, a key `put` finds still present fails the whole transaction
    /// (nothing is written) with that message, `{key}` replaced by the key.
    fn apply_blocking(
        &self,
        table: TableDefinition<&str, &[u8]>,
        delete: &[String],
        put: &[(String, Vec<u8>)],
        overwrite: Overwrite,
    ) -> Result<(), StoreError> {
        self.write(|db| {
            let mut txn = db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            {
                let mut table = txn.open_table(table)?;
                for k in delete {
                    table.remove(k.as_str())?;
                }
                for (k, v) in put {
                    if let Overwrite::Refuse(why) = overwrite
                        && table.get(k.as_str())?.is_some()
                    {
                        return Err(StoreError::Conflict(why.replace("{key}", k)));
                    }
                    table.insert(k.as_str(), v.as_slice())?;
                }
            }
            txn.commit()?;
            Ok(())
        })
    }

    /// Every write goes through here, so its failure keeps the first failure's kind.
    fn write<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        f(&self.db).map_err(|e| remember(&self.first_failure, e))
    }

    fn load_all(&self, table: TableDefinition<&str, &[u8]>) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        string_rows(self.db.as_ref(), table)
    }

    /// Blocking variant for code that is not async (tests, tools).
    pub fn persist_blocking(&self, records: Vec<LeaseRecord>) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        self.queue
            .blocking_send(CommitRequest { records, done })
            .map_err(|_| StoreError::CommitterGone)?;
        match wait.blocking_recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::CommitterGone),
        }
    }
}

/// Read the leases of a database that no daemon holds open (for `provd leases list` when
/// the daemon is down). Opened read-write on purpose: after a kill -9 redb must repair the
/// file before anything can be read, and a read-only open refuses to. redb's exclusive lock
/// makes this fail (rather than race) while a daemon holds the database.
pub fn read_leases_offline(state_dir: &Path) -> Result<Vec<LeaseRecord>, StoreError> {
    match open_offline(state_dir)? {
        Some(db) => read_all(&db),
        None => Ok(Vec::new()),
    }
}

/// The IPAM table as (key, JSON) of a store no daemon holds open (`provd render`); empty
/// when there is no store yet. Opened as `read_leases_offline` says.
pub fn read_ipam_offline(state_dir: &Path) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    match open_offline(state_dir)? {
        Some(db) => string_rows(&db, IPAM),
        None => Ok(Vec::new()),
    }
}

/// The database in `state_dir` for a reader while no daemon runs; None when there is none.
fn open_offline(state_dir: &Path) -> Result<Option<Database>, StoreError> {
    let path = db_path(state_dir);
    if !path.exists() {
        return Ok(None);
    }
    Database::open(&path)
        .map(Some)
        .map_err(|source| StoreError::Open { path, source })
}

/// Every row of a string-keyed table as (key, bytes); a table never written is empty.
fn string_rows(
    db: &impl ReadableDatabase,
    table: TableDefinition<&str, &[u8]>,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(table) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(out)
}

fn read_all(db: &impl ReadableDatabase) -> Result<Vec<LeaseRecord>, StoreError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(LEASES) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for row in table.iter()? {
        let (k, v) = row?;
        let ip = Ipv4Addr::from(k.value());
        let rec: LeaseRecord = serde_json::from_slice(v.value()).map_err(|source| StoreError::Record { ip, source })?;
        out.push(rec);
    }
    Ok(out)
}

/// The group-commit loop: block for the first request, take whatever else is already queued,
/// write it all in one durable transaction, then answer every waiter.
fn committer(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<CommitRequest>,
    stats: Arc<StoreStats>,
    health: Arc<tokio::sync::watch::Sender<Option<String>>>,
    first_failure: Arc<OnceLock<ErrorKind>>,
) {
    let mut busy = false;
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        let mut count = batch[0].records.len();
        let linger_until = busy.then(|| std::time::Instant::now() + LINGER);
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.records.len();
                    batch.push(req);
                }
                Err(mpsc::error::TryRecvError::Empty)
                    if count < LINGER_ENOUGH && linger_until.is_some_and(|t| std::time::Instant::now() < t) =>
                {
                    std::thread::sleep(LINGER / 8);
                }
                Err(_) => break,
            }
        }
        busy = batch.len() > 1;
        let result = write_batch(&db, &batch).map_err(|e| remember(&first_failure, e));
        match &result {
            Ok(()) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.records_committed.fetch_add(count as u64, Ordering::Relaxed);
                stats.largest_batch.fetch_max(count as u64, Ordering::Relaxed);
            }
            Err(e) => {
                stats.commit_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(kind = %e.kind(), "lease commit failed, {count} leases not acknowledged: {e}");
                health.send_if_modified(|h| {
                    let first = h.is_none();
                    if first {
                        *h = Some(e.to_commit().to_string());
                    }
                    first
                });
            }
        }
        for req in batch {
            let _ = req.done.send(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(e.to_commit()),
            });
        }
    }
}

fn write_batch(db: &Database, batch: &[CommitRequest]) -> Result<(), StoreError> {
    let mut txn = db.begin_write()?;
    txn.set_durability(Durability::Immediate)?;
    {
        let mut table = txn.open_table(LEASES)?;
        for rec in batch.iter().flat_map(|r| &r.records) {
            let bytes = serde_json::to_vec(rec).expect("lease records always serialize");
            table.insert(u32::from(rec.ip), bytes.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests;
