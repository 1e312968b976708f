//! Resolving a client-supplied path inside a served directory (TFTP and HTTP `/assets`).
//!
//! One function, one rule: the answer is a regular file whose canonical path lies inside the
//! canonical root. `..` components, absolute paths and symlinks that lead outside are
//! refused (not "not found"), so the refusal can be logged and counted.

use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path leaves the served directory")]
    OutsideRoot,
    #[error("no such file")]
    NotFound,
}

/// `root` must already be canonical (see `canonical_root`).
pub fn resolve(root: &Path, requested: &str) -> Result<PathBuf, Refusal> {
    // Windows-derived PXE clients send backslashes; they mean directory separators.
    let requested = requested.replace('\\', "/");
    if requested.is_empty() {
        return Err(Refusal::NotFound);
    }
    let rel = Path::new(&requested);
    for c in rel.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return Err(Refusal::OutsideRoot),
        }
    }
    let canonical = root.join(rel).canonicalize().map_err(|_| Refusal::NotFound)?;
    if !canonical.starts_with(root) {
        return Err(Refusal::OutsideRoot);
    }
    if !canonical.is_file() {
        return Err(Refusal::NotFound);
    }
    Ok(canonical)
}

pub fn canonical_root(root: &Path) -> std::io::Result<PathBuf> {
    root.canonicalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_traversal_absolute_and_escaping_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        let root = canonical_root(root_dir.path()).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/file"), "ok").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/file"), root.join("inside-link")).unwrap();

        assert_eq!(resolve(&root, "sub/file").unwrap(), root.join("sub/file"));
        assert_eq!(resolve(&root, "./sub/file").unwrap(), root.join("sub/file"));
        assert_eq!(resolve(&root, "sub\\file").unwrap(), root.join("sub/file"));
        assert_eq!(resolve(&root, "inside-link").unwrap(), root.join("sub/file"));
        assert_eq!(resolve(&root, "../x"), Err(Refusal::OutsideRoot));
        assert_eq!(resolve(&root, "sub/../../x"), Err(Refusal::OutsideRoot));
        assert_eq!(resolve(&root, "/etc/passwd"), Err(Refusal::OutsideRoot));
        assert_eq!(resolve(&root, "escape"), Err(Refusal::OutsideRoot));
        assert_eq!(
            resolve(&root, "sub"),
            Err(Refusal::NotFound),
            "directories are not served"
        );
        assert_eq!(resolve(&root, "missing"), Err(Refusal::NotFound));
        assert_eq!(resolve(&root, ""), Err(Refusal::NotFound));
    }
}
