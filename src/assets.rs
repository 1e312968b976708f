//! Boot assets: fill the assets directory with iPXE binaries from Debian's `ipxe` package,
//! and the Secure Boot chain from Debian's `shim-signed` and `grub-efi-amd64-signed`, and
//! check that each is what it claims to be (`provd assets init`, and the lab when its assets
//! directory lacks them). A file of the signed chain must carry an Authenticode signature:
//! an unsigned shim would be refused by every Secure Boot firmware, so it is refused here
//! first, with a clear reason. Nothing binary lives in the repository.
//!
//! Library code: it reports per file and never prints; the CLI and the lab decide how to show it.
//! OS images that profiles deploy are `images` (the catalog) and `import` (making one from
//! any disk image).

pub mod images;
pub mod import;
pub mod inspect;

use std::path::{Path, PathBuf};

/// One file `provd assets init` installs.
struct AssetFile {
    /// Where it is, under the directory it is copied from.
    source: &'static str,
    /// The name provd serves it as.
    name: &'static str,
    /// What it is for.
    purpose: &'static str,
    kind: Kind,
}

const IPXE_FILES: &[AssetFile] = &[
    AssetFile {
        source: "undionly.kpxe",
        name: "undionly.kpxe",
        purpose: "BIOS PXE (option 93 = 0)",
        kind: Kind::Pxe,
    },
    AssetFile {
        source: "ipxe.efi",
        name: "ipxe.efi",
        purpose: "x64 UEFI, iPXE's own NIC drivers (option 93 = 7, 9)",
        kind: Kind::Efi,
    },
    AssetFile {
        source: "snponly.efi",
        name: "snponly.efi",
        purpose: "x64 UEFI, the firmware's NIC driver (SNP)",
        kind: Kind::Efi,
    },
];

/// The Secure Boot chain, under the root Debian's packages unpack to (`/` when installed).
const SIGNED_CHAIN_FILES: &[AssetFile] = &[
    AssetFile {
        source: "usr/lib/shim/shimx64.efi.signed",
        name: "shimx64.efi",
        purpose: "Secure Boot first stage (shim-signed; Microsoft's UEFI CA signed it)",
        kind: Kind::SignedEfi,
    },
    AssetFile {
        source: "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        name: "grubx64.efi",
        purpose: "network GRUB that shim loads (grub-efi-amd64-signed; Debian signed it)",
        kind: Kind::SignedEfi,
    },
];

/// Where lab/signed-chain.sh unpacks Debian's shim-signed and grub-efi-amd64-signed.
pub const SIGNED_CHAIN_CACHE: &str = "/var/cache/provd-lab/signed-chain/root";

/// The names the signed chain is served as (the site's `secure_boot_x64` default first).
pub fn signed_chain_names() -> impl Iterator<Item = &'static str> {
    SIGNED_CHAIN_FILES.iter().map(|f| f.name)
}

#[derive(Clone, Copy)]
enum Kind {
    /// A PXE network bootstrap program: no header to check, but never empty or tiny.
    Pxe,
    /// A PE/COFF image: starts with "MZ" and carries a "PE\0\0" header where MZ points.
    Efi,
    /// A PE/COFF image with an Authenticode signature (a certificate table in its
    /// security data directory), as Secure Boot firmware and shim require.
    SignedEfi,
}

/// Why one iPXE file was not installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileRefusal {
    #[error("only {0} bytes: not an iPXE build")]
    TooSmall(usize),
    #[error("no MZ header: not an EFI executable")]
    NoMz,
    #[error("no PE header: not an EFI executable")]
    NoPe,
    #[error("no Authenticode signature: Secure Boot firmware would refuse it")]
    Unsigned,
}

fn check(bytes: &[u8], kind: Kind) -> Result<(), FileRefusal> {
    if bytes.len() < 16 * 1024 {
        return Err(FileRefusal::TooSmall(bytes.len()));
    }
    if let Kind::Efi | Kind::SignedEfi = kind {
        if &bytes[..2] != b"MZ" {
            return Err(FileRefusal::NoMz);
        }
        let pe = u32::from_le_bytes(bytes[0x3c..0x40].try_into().expect("4 bytes")) as usize;
        if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(FileRefusal::NoPe);
        }
        if let Kind::SignedEfi = kind
            && !has_certificate_table(bytes, pe)
        {
            return Err(FileRefusal::Unsigned);
        }
    }
    Ok(())
}

/// Whether the PE image whose "PE\0\0" is at `pe` has a certificate table (data directory
/// 4, IMAGE_DIRECTORY_ENTRY_SECURITY) that lies inside the file: where Authenticode
/// signatures live (PE/COFF spec, "The Attribute Certificate Table"). Whether the
/// signature verifies is the firmware's and shim's business; an image without one is
/// certain to be refused.
fn has_certificate_table(bytes: &[u8], pe: usize) -> bool {
    let u32_at = |at: usize| {
        bytes
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let optional = pe + 24;
    let directories = match bytes.get(optional..optional + 2) {
        Some([0x0b, 0x01]) => optional + 96,  // PE32
        Some([0x0b, 0x02]) => optional + 112, // PE32+
        _ => return false,
    };
    let security = directories + 4 * 8;
    match (u32_at(security), u32_at(security + 4)) {
        (Some(offset), Some(size)) => size >= 8 && (offset as usize).saturating_add(size as usize) <= bytes.len(),
        _ => false,
    }
}

/// Why one iPXE file was not installed (the others still are).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Refused(#[from] FileRefusal),
    #[error("{} differs from {} after copying", copy.display(), source_file.display())]
    Differs { copy: PathBuf, source_file: PathBuf },
}

/// Where the iPXE binaries come from by default (Debian's `ipxe` package).
pub const DEBIAN_IPXE_DIR: &str = "/usr/lib/ipxe";

#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    #[error("{0} does not exist: install Debian's ipxe package (apt-get install ipxe) or pass --from")]
    NoSource(PathBuf),
    #[error(
        "{0} holds no usr/lib/shim/shimx64.efi.signed: install shim-signed and grub-efi-amd64-signed, or unpack them there (apt-get download shim-signed grub-efi-amd64-signed; dpkg-deb -x FILE.deb DIR)"
    )]
    NoSignedChain(PathBuf),
    #[error("cannot create {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
}

/// What happened to one file.
#[derive(Debug)]
pub struct FileReport {
    pub name: &'static str,
    /// What the file is for.
    pub purpose: &'static str,
    /// Bytes copied, or why the file was not installed.
    pub result: Result<usize, FileError>,
}

/// Copy and check every iPXE binary from `from` into `dir`. A file that fails is reported,
/// and the others are still installed.
pub fn install_ipxe(from: &Path, dir: &Path) -> Result<Vec<FileReport>, AssetsError> {
    if !from.is_dir() {
        return Err(AssetsError::NoSource(from.to_path_buf()));
    }
    install_files(from, dir, IPXE_FILES)
}

/// Copy and check the Secure Boot chain (shim and network GRUB, each signed) from the root
/// Debian's `shim-signed` and `grub-efi-amd64-signed` are installed or unpacked under.
pub fn install_signed_chain(root: &Path, dir: &Path) -> Result<Vec<FileReport>, AssetsError> {
    if !root.join(SIGNED_CHAIN_FILES[0].source).exists() {
        return Err(AssetsError::NoSignedChain(root.to_path_buf()));
    }
    install_files(root, dir, SIGNED_CHAIN_FILES)
}

fn install_files(from: &Path, dir: &Path, files: &'static [AssetFile]) -> Result<Vec<FileReport>, AssetsError> {
    std::fs::create_dir_all(dir).map_err(|source| AssetsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut reports = Vec::new();
    for AssetFile {
        source,
        name,
        purpose,
        kind,
    } in files
    {
        let src: PathBuf = from.join(source);
        let dst = dir.join(name);
        let written_to = |source| FileError::Write {
            path: dst.clone(),
            source,
        };
        let result = std::fs::read(&src)
            .map_err(|source| FileError::Read {
                path: src.clone(),
                source,
            })
            .and_then(|bytes| {
                check(&bytes, *kind)?;
                std::fs::write(&dst, &bytes).map_err(written_to)?;
                // Read back: a short write or a full disk must not leave a broken boot file.
                let written = std::fs::read(&dst).map_err(written_to)?;
                if written != bytes {
                    return Err(FileError::Differs {
                        copy: dst.clone(),
                        source_file: src.clone(),
                    });
                }
                Ok(bytes.len())
            });
        reports.push(FileReport { name, purpose, result });
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_pe_images_and_rejects_junk() {
        let mut efi = vec![0u8; 32 * 1024];
        efi[..2].copy_from_slice(b"MZ");
        efi[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        efi[0x80..0x84].copy_from_slice(b"PE\0\0");
        assert!(check(&efi, Kind::Efi).is_ok());
        efi[0x80] = b'X';
        assert_eq!(check(&efi, Kind::Efi), Err(FileRefusal::NoPe));
        efi[0] = b'X';
        assert_eq!(check(&efi, Kind::Efi), Err(FileRefusal::NoMz));
        assert_eq!(check(&[0u8; 100], Kind::Pxe), Err(FileRefusal::TooSmall(100)));
        assert!(check(&vec![1u8; 64 * 1024], Kind::Pxe).is_ok());
    }

    /// A minimal PE32+ image: MZ, PE at 0x80, optional header magic 0x20b, and a certificate
    /// table (data directory 4) of `cert_size` bytes at the file's end.
    fn pe32_plus(cert_size: u32) -> Vec<u8> {
        let mut efi = vec![0u8; 32 * 1024];
        efi[..2].copy_from_slice(b"MZ");
        efi[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        efi[0x80..0x84].copy_from_slice(b"PE\0\0");
        let optional = 0x80 + 24;
        efi[optional..optional + 2].copy_from_slice(&[0x0b, 0x02]);
        let security = optional + 112 + 32;
        let offset = efi.len() as u32 - cert_size;
        efi[security..security + 4].copy_from_slice(&offset.to_le_bytes());
        efi[security + 4..security + 8].copy_from_slice(&cert_size.to_le_bytes());
        efi
    }

    #[test]
    fn the_signed_chain_must_carry_a_signature() {
        assert!(check(&pe32_plus(1472), Kind::SignedEfi).is_ok());
        assert!(check(&pe32_plus(0), Kind::Efi).is_ok(), "iPXE need not be signed");
        assert_eq!(check(&pe32_plus(0), Kind::SignedEfi), Err(FileRefusal::Unsigned));
        // A table that claims to run past the file's end is no signature.
        let mut lying = pe32_plus(1472);
        let at = 0x80 + 24 + 112 + 32 + 4;
        lying[at..at + 4].copy_from_slice(&100_000u32.to_le_bytes());
        assert_eq!(check(&lying, Kind::SignedEfi), Err(FileRefusal::Unsigned));
    }

    /// Debian's real packages (lab/signed-chain.sh unpacks them; lab/test.sh runs it
    /// first, and under lab/test.sh their absence fails): both pass, and Debian's unsigned
    /// iPXE does not.
    #[test]
    fn debians_signed_files_pass_and_its_ipxe_does_not() {
        let root = Path::new(SIGNED_CHAIN_CACHE);
        if !root.join(SIGNED_CHAIN_FILES[0].source).exists() {
            assert!(
                std::env::var_os("PROVD_TEST_SUITE").is_none(),
                "lab/test.sh ran lab/deps.sh, which unpacks the signed chain under {SIGNED_CHAIN_CACHE}"
            );
            eprintln!("no signed chain under {SIGNED_CHAIN_CACHE}: skipped (lab/signed-chain.sh fetches it)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for r in install_signed_chain(root, dir.path()).unwrap() {
            assert!(r.result.is_ok(), "{}: {:?}", r.name, r.result);
        }
        if let Ok(ipxe) = std::fs::read("/usr/lib/ipxe/snponly.efi") {
            assert_eq!(check(&ipxe, Kind::SignedEfi), Err(FileRefusal::Unsigned));
        }
        let e = install_signed_chain(dir.path(), dir.path()).unwrap_err();
        assert!(e.to_string().contains("apt-get download shim-signed"), "{e}");
    }
}
