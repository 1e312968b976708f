//! Test support: a real small filesystem that can be filled, to prove what provd does on a
//! full disk (root only: the suite runs as root; without it the caller skips).

use std::path::{Path, PathBuf};

/// A tmpfs of `size` (e.g. "2m") mounted on a fresh temporary directory; unmounted on drop.
pub struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// None when not root (mounting needs it).
    pub fn mount(size: &str) -> Option<Self> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "provd-test-tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount tmpfs");
        Some(SmallTmpfs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Take every free byte with a filler file; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let p = self.path().join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let chunk = vec![0xa5u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // Smaller writes take what the big ones left.
        while f.write_all(&chunk[..512]).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
