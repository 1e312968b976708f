//! OS images that profiles deploy (`image = "NAME"`): whole-disk images under
//! `<assets_dir>/images/`, served at `/assets/images/...` like every asset (Range, HEAD,
//! sendfile), each with a `.sha256` beside it in sha256sum's format.
//!
//! The catalog is read when a config generation is built (start and every reload), so a
//! rendered deploy document names the checksum of the file provd serves; an image replaced
//! without a reload fails the installer's check instead of being written unverified. provd
//! does not hash the image itself at start (hundreds of MB per reload): the sidecar is the
//! claim, and the installer environment checks the bytes it actually received against it.
//!
//! Formats: what a busybox installer can stream straight to a disk, raw and gzip'd raw.
//! qcow2 cannot be streamed (its clusters come in any order); it is refused with the command
//! that converts it (`provd assets import-image`, module `import`).
//!
//! Must never: read anything outside `<assets_dir>/images/` (names are checked to be one
//! plain file name), or depend on the config model (config checks names with `check_name`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The directory under the assets directory that holds images.
pub const IMAGES_DIR: &str = "images";

/// How an image file is encoded, in the order a name is looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// gzip'd raw disk: the installer pipes it through gunzip.
    RawGz,
    /// raw disk bytes.
    Raw,
}

impl Format {
    pub const ALL: [Format; 2] = [Format::RawGz, Format::Raw];

    /// The file name suffix, and what the deploy document tells the installer.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::RawGz => "raw.gz",
            Format::Raw => "raw",
        }
    }
}

/// One image as the catalog found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    /// Path relative to the assets directory (what `/assets/` serves): `images/NAME.raw.gz`.
    pub asset_path: String,
    pub format: Format,
    /// Lowercase hex SHA-256 of the file as served (the compressed bytes for `RawGz`).
    pub sha256: String,
    /// Bytes of the file as served.
    pub size: u64,
}

/// Why an image named by a profile cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image name {0:?}: use letters, digits, '.', '_' and '-' (at most 64, not starting with '.'); the file is {IMAGES_DIR}/NAME.raw.gz or {IMAGES_DIR}/NAME.raw under the assets directory"
    )]
    BadName(String),
    #[error("image {name}: {} is not a plain file", path.display())]
    NotAFile { name: String, path: PathBuf },
    #[error(
        "image {name}: cannot read its checksum {} ({source}); make it with: cd {} && sha256sum {file_name} > {file_name}.sha256",
        sidecar.display(),
        sidecar.parent().unwrap_or(Path::new(".")).display()
    )]
    NoChecksum {
        name: String,
        sidecar: PathBuf,
        file_name: String,
        source: std::io::Error,
    },
    #[error("image {name}: {}: {source}", sidecar.display())]
    BadChecksum {
        name: String,
        sidecar: PathBuf,
        source: SidecarError,
    },
    #[error(
        "image {name}: only {name}.qcow2 exists, and qcow2 cannot be streamed to a disk; convert it once: provd assets import-image {name} {}",
        qcow2.display()
    )]
    OnlyQcow2 { name: String, qcow2: PathBuf },
    #[error(
        "image {name}: neither {name}.raw.gz nor {name}.raw in {} (lab/images/debian12-kvm.sh builds one)",
        dir.display()
    )]
    Missing { name: String, dir: PathBuf },
}

/// What is wrong with a `.sha256` file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SidecarError {
    #[error("empty checksum file")]
    Empty,
    #[error("{0:?} is not a SHA-256 (64 hex digits)")]
    NotSha256(String),
    #[error("the checksum is for {named:?}, not {file_name:?}")]
    OtherFile { named: String, file_name: String },
}

/// Every image a set of profiles names that cannot be served, all at once.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct CatalogError(pub Vec<ImageError>);

/// The images a generation's profiles name, by name.
#[derive(Debug, Default)]
pub struct Catalog {
    images: BTreeMap<String, Image>,
}

impl Catalog {
    /// Find each of `names` under `<assets_dir>/images/`. Every missing file, missing or
    /// malformed checksum is reported, all at once.
    pub fn load<'a>(assets_dir: &Path, names: impl IntoIterator<Item = &'a str>) -> Result<Catalog, CatalogError> {
        let mut images = BTreeMap::new();
        let mut errors = Vec::new();
        for name in names {
            if images.contains_key(name) {
                continue;
            }
            match find(assets_dir, name) {
                Ok(image) => {
                    images.insert(name.to_string(), image);
                }
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(Catalog { images })
        } else {
            Err(CatalogError(errors))
        }
    }

    pub fn get(&self, name: &str) -> Option<&Image> {
        self.images.get(name)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// An image name is one plain file name stem: letters, digits, '.', '_', '-', not starting
/// with '.', at most 64 characters (it becomes a path under the assets directory).
pub fn check_name(name: &str) -> Result<(), ImageError> {
    let ok_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if name.is_empty() || name.len() > 64 || !ok_chars || name.starts_with('.') {
        return Err(ImageError::BadName(name.to_string()));
    }
    Ok(())
}

fn find(assets_dir: &Path, name: &str) -> Result<Image, ImageError> {
    check_name(name)?;
    let dir = assets_dir.join(IMAGES_DIR);
    for format in Format::ALL {
        let file_name = format!("{name}.{}", format.suffix());
        let path = dir.join(&file_name);
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if !meta.is_file() {
            return Err(ImageError::NotAFile {
                name: name.to_string(),
                path,
            });
        }
        let sidecar = dir.join(format!("{file_name}.sha256"));
        let text = match std::fs::read_to_string(&sidecar) {
            Ok(text) => text,
            Err(source) => {
                return Err(ImageError::NoChecksum {
                    name: name.to_string(),
                    sidecar,
                    file_name,
                    source,
                });
            }
        };
        let sha256 = match parse_sidecar(&text, &file_name) {
            Ok(sha256) => sha256,
            Err(source) => {
                return Err(ImageError::BadChecksum {
                    name: name.to_string(),
                    sidecar,
                    source,
                });
            }
        };
        return Ok(Image {
            name: name.to_string(),
            asset_path: format!("{IMAGES_DIR}/{file_name}"),
            format,
            sha256,
            size: meta.len(),
        });
    }
    let qcow2 = dir.join(format!("{name}.qcow2"));
    if qcow2.is_file() {
        return Err(ImageError::OnlyQcow2 {
            name: name.to_string(),
            qcow2,
        });
    }
    Err(ImageError::Missing {
        name: name.to_string(),
        dir,
    })
}

/// The checksum in a sha256sum line (`HEX  NAME` or `HEX *NAME`, or the bare hex). A name,
/// when present, must be the image's own: a sidecar copied from another image is an error.
pub fn parse_sidecar(text: &str, file_name: &str) -> Result<String, SidecarError> {
    let line = text.lines().find(|l| !l.trim().is_empty()).ok_or(SidecarError::Empty)?;
    let mut parts = line.split_whitespace();
    let hex = parts.next().unwrap_or_default();
    if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SidecarError::NotSha256(hex.to_string()));
    }
    if let Some(named) = parts.next() {
        let named = named.trim_start_matches('*');
        let base = named.rsplit('/').next().unwrap_or(named);
        if base != file_name {
            return Err(SidecarError::OtherFile {
                named: named.to_string(),
                file_name: file_name.to_string(),
            });
        }
    }
    Ok(hex.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn names_are_single_plain_file_stems() {
        for ok in ["debian12-kvm", "el9.2_x", "A1"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "../etc", "a/b", ".hidden", "sp ace", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sidecars_in_sha256sum_format_name_the_image() {
        assert_eq!(parse_sidecar(&format!("{HEX}  d.raw.gz\n"), "d.raw.gz").unwrap(), HEX);
        assert_eq!(
            parse_sidecar(&format!("{HEX} *out/d.raw.gz\n"), "d.raw.gz").unwrap(),
            HEX
        );
        assert_eq!(parse_sidecar(&HEX.to_uppercase(), "d.raw.gz").unwrap(), HEX);
        assert_eq!(
            parse_sidecar(&format!("{HEX}  other.raw.gz"), "d.raw.gz").unwrap_err(),
            SidecarError::OtherFile {
                named: "other.raw.gz".into(),
                file_name: "d.raw.gz".into()
            }
        );
        assert_eq!(
            parse_sidecar("abc  d.raw.gz", "d.raw.gz").unwrap_err(),
            SidecarError::NotSha256("abc".into())
        );
        assert_eq!(parse_sidecar("\n\n", "d.raw.gz").unwrap_err(), SidecarError::Empty);
    }

    #[test]
    fn the_catalog_finds_gzip_first_and_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join(IMAGES_DIR);
        std::fs::create_dir(&images).unwrap();
        std::fs::write(images.join("a.raw.gz"), b"gz bytes").unwrap();
        std::fs::write(images.join("a.raw.gz.sha256"), format!("{HEX}  a.raw.gz\n")).unwrap();
        std::fs::write(images.join("a.raw"), b"raw").unwrap();
        std::fs::write(images.join("b.raw"), b"raw").unwrap();
        std::fs::write(images.join("c.qcow2"), b"QFI").unwrap();

        let catalog = Catalog::load(dir.path(), ["a", "a"]).unwrap();
        let a = catalog.get("a").unwrap();
        assert_eq!(
            (a.asset_path.as_str(), a.format, a.size),
            ("images/a.raw.gz", Format::RawGz, 8)
        );
        assert_eq!(a.sha256, HEX);
        assert_eq!(catalog.len(), 1);

        let e = Catalog::load(dir.path(), ["a", "b", "c", "missing"]).unwrap_err();
        assert!(
            matches!(
                &e.0[..],
                [
                    ImageError::NoChecksum { .. },
                    ImageError::OnlyQcow2 { .. },
                    ImageError::Missing { .. }
                ]
            ),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains("b.raw.sha256"), "{e}");
        assert!(e.contains("provd assets import-image c "), "{e}");
        assert!(e.contains("neither missing.raw.gz nor missing.raw"), "{e}");
    }
}
