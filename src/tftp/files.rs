//! Opening served files for TFTP: one trip to the blocking pool per request, and the small
//! files every machine of a rack asks for (undionly.kpxe, ipxe.efi, snponly.efi) kept in
//! memory.
//!
//! Why: a rack powering on asks for the same first-stage file thousands of times within a
//! second. Opening it with tokio's file API costs three blocking-pool trips per request
//! (open, metadata, the first read), and the storm benchmark (lab/bench/storm.sh) showed
//! the TFTP stage four times slower than tftpd-hpa's under 500 machines. Here a request is
//! answered from memory when the file was checked less than `RECHECK` ago; otherwise one
//! blocking call resolves the path, stats the file and reads it whole if it is small (or
//! hands back the open file if it is large).
//!
//! Must never: serve a path `served_root::resolve` refused (a name is cached only after it
//! resolved), or mix two versions of a file in one transfer (a transfer holds one snapshot:
//! `Arc<[u8]>`). A file replaced on disk is served new within `RECHECK`.

use crate::served_root::{self, Refusal};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Files up to this size are read whole and kept (iPXE binaries are 70 KiB to 1.1 MiB).
pub const SMALL_FILE: u64 = 4 << 20;
/// The most the cache holds in all; past it, small files are still read whole, not kept.
pub const CACHE_BYTES: usize = 64 << 20;
/// How long a kept file is served without looking at the disk again.
pub const RECHECK: Duration = Duration::from_secs(1);

/// A file ready to send.
pub enum Opened {
    /// The whole file (small): one snapshot for the whole transfer.
    Whole(Arc<[u8]>),
    /// A large file, open, with its length.
    File(std::fs::File, u64),
}

/// What identifies one version of a file on disk.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Version {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

struct Kept {
    bytes: Arc<[u8]>,
    version: Version,
    checked: Instant,
}

/// The served directory's small files, by requested name.
pub struct FileCache {
    root: PathBuf,
    kept: Mutex<HashMap<String, Kept>>,
}

impl FileCache {
    /// A cache over `root` (canonical: `served_root::canonical_root`).
    pub fn new(root: PathBuf) -> FileCache {
        FileCache {
            root,
            kept: Mutex::new(HashMap::new()),
        }
    }

    /// The file `name` under the root, as it is now (within `RECHECK`).
    pub async fn open(self: &Arc<Self>, name: &str) -> Result<Opened, Refusal> {
        if let Some(k) = self.kept.lock().expect("file cache").get(name)
            && k.checked.elapsed() < RECHECK
        {
            return Ok(Opened::Whole(k.bytes.clone()));
        }
        let (me, name) = (self.clone(), name.to_string());
        tokio::task::spawn_blocking(move || me.open_blocking(&name))
            .await
            .unwrap_or(Err(Refusal::NotFound))
    }

    fn open_blocking(&self, name: &str) -> Result<Opened, Refusal> {
        let path = served_root::resolve(&self.root, name)?;
        let file = std::fs::File::open(&path).map_err(|_| Refusal::NotFound)?;
        let meta = file.metadata().map_err(|_| Refusal::NotFound)?;
        if meta.len() > SMALL_FILE {
            self.kept.lock().expect("file cache").remove(name);
            return Ok(Opened::File(file, meta.len()));
        }
        let version = Version {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        };
        {
            let mut kept = self.kept.lock().expect("file cache");
            if let Some(k) = kept.get_mut(name)
                && k.version == version
            {
                k.checked = Instant::now();
                return Ok(Opened::Whole(k.bytes.clone()));
            }
        }
        let bytes: Arc<[u8]> = read_whole(file, meta.len())?.into();
        let mut kept = self.kept.lock().expect("file cache");
        kept.remove(name);
        let held: usize = kept.values().map(|k| k.bytes.len()).sum();
        if held + bytes.len() <= CACHE_BYTES {
            kept.insert(
                name.to_string(),
                Kept {
                    bytes: bytes.clone(),
                    version,
                    checked: Instant::now(),
                },
            );
        }
        Ok(Opened::Whole(bytes))
    }
}

/// The file's bytes (it may have changed size since the stat: what is read is what is sent).
fn read_whole(mut file: std::fs::File, hint: u64) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let mut bytes = Vec::with_capacity(hint as usize);
    file.read_to_end(&mut bytes).map_err(|_| Refusal::NotFound)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(o: Result<Opened, Refusal>) -> Vec<u8> {
        match o {
            Ok(Opened::Whole(b)) => b.to_vec(),
            Ok(Opened::File(..)) => panic!("a small file is read whole"),
            Err(e) => panic!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn small_files_are_kept_and_a_replaced_file_is_seen_after_the_recheck() {
        let d = tempfile::tempdir().unwrap();
        let root = served_root::canonical_root(d.path()).unwrap();
        std::fs::write(root.join("undionly.kpxe"), b"first").unwrap();
        let cache = Arc::new(FileCache::new(root.clone()));
        assert_eq!(whole(cache.open("undionly.kpxe").await), b"first");
        // Replaced by rename (as an update would): the kept copy serves until the recheck.
        std::fs::write(root.join("new"), b"second version").unwrap();
        std::fs::rename(root.join("new"), root.join("undionly.kpxe")).unwrap();
        assert_eq!(whole(cache.open("undionly.kpxe").await), b"first", "within RECHECK");
        cache.kept.lock().unwrap().get_mut("undionly.kpxe").unwrap().checked -= RECHECK;
        assert_eq!(whole(cache.open("undionly.kpxe").await), b"second version");
    }

    #[tokio::test]
    async fn refusals_are_never_kept_and_large_files_stay_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let root = served_root::canonical_root(&d.path().join("r")).err();
        assert!(root.is_some(), "a missing root does not resolve");
        std::fs::create_dir(d.path().join("r")).unwrap();
        std::fs::write(d.path().join("secret"), b"x").unwrap();
        let root = served_root::canonical_root(&d.path().join("r")).unwrap();
        let cache = Arc::new(FileCache::new(root.clone()));
        assert!(matches!(cache.open("../secret").await, Err(Refusal::OutsideRoot)));
        assert!(matches!(cache.open("missing").await, Err(Refusal::NotFound)));
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("link")).unwrap();
        assert!(matches!(cache.open("link").await, Err(Refusal::OutsideRoot)));
        assert!(cache.kept.lock().unwrap().is_empty());
        let big = std::fs::File::create(root.join("big")).unwrap();
        big.set_len(SMALL_FILE + 1).unwrap();
        match cache.open("big").await {
            Ok(Opened::File(_, len)) => assert_eq!(len, SMALL_FILE + 1),
            _ => panic!("a large file is streamed from disk"),
        }
        assert!(cache.kept.lock().unwrap().is_empty());
    }
}
