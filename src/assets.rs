//! Boot assets: fill the assets directory with iPXE binaries from Debian's `ipxe` package
//! and check that each is what it claims to be (`provd assets init`, and the lab when its
//! assets directory is empty). Nothing binary lives in the repository.
//!
//! Library code: it reports per file and never prints; the CLI and the lab decide how to show it.
//! OS images that profiles deploy are `images` (the catalog) and `import` (making one from
//! any disk image).

pub mod images;
pub mod import;
pub mod inspect;

use std::path::{Path, PathBuf};

/// (file, what it is for, how to recognise it)
const IPXE_FILES: &[(&str, &str, Kind)] = &[
    ("undionly.kpxe", "BIOS PXE (option 93 = 0)", Kind::Pxe),
    (
        "ipxe.efi",
        "x64 UEFI, iPXE's own NIC drivers (option 93 = 7, 9)",
        Kind::Efi,
    ),
    ("snponly.efi", "x64 UEFI, the firmware's NIC driver (SNP)", Kind::Efi),
];

#[derive(Clone, Copy)]
enum Kind {
    /// A PXE network bootstrap program: no header to check, but never empty or tiny.
    Pxe,
    /// A PE/COFF image: starts with "MZ" and carries a "PE\0\0" header where MZ points.
    Efi,
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
}

fn check(bytes: &[u8], kind: Kind) -> Result<(), FileRefusal> {
    if bytes.len() < 16 * 1024 {
        return Err(FileRefusal::TooSmall(bytes.len()));
    }
    if let Kind::Efi = kind {
        if &bytes[..2] != b"MZ" {
            return Err(FileRefusal::NoMz);
        }
        let pe = u32::from_le_bytes(bytes[0x3c..0x40].try_into().expect("4 bytes")) as usize;
        if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(FileRefusal::NoPe);
        }
    }
    Ok(())
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
    std::fs::create_dir_all(dir).map_err(|source| AssetsError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut reports = Vec::new();
    for (name, what, kind) in IPXE_FILES {
        let src: PathBuf = from.join(name);
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
        reports.push(FileReport {
            name,
            purpose: what,
            result,
        });
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
}
