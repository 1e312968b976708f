//! A TFTP file name from any machine: resolving it never panics and never leaves the root
//! (parent directories, absolute paths, symlinks out are refused); the names rendered per
//! client parse without panicking and name a real MAC or address.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

/// A served root with a file, a directory, and a symlink leading out of it.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("provd-fuzz-tftp-{}", std::process::id()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("el9")).unwrap();
        std::fs::write(root.join("ipxe.efi"), b"x").unwrap();
        std::fs::write(root.join("el9/vmlinuz"), b"k").unwrap();
        std::fs::write(base.join("secret"), b"s").unwrap();
        let _ = std::os::unix::fs::symlink(base.join("secret"), root.join("escape"));
        provd::served_root::canonical_root(&root).unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let _ = provd::boot::generated_name(name);
    if let Ok(path) = provd::served_root::resolve(root(), name) {
        assert!(path.starts_with(root()), "{name:?} resolved to {path:?}, outside the root");
        if let Ok(real) = std::fs::canonicalize(&path) {
            assert!(real.starts_with(root()), "{name:?} leads to {real:?}");
        }
    }
});
