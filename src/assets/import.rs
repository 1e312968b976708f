//! `provd assets import-image NAME SOURCE`: any disk image qemu-img reads (qcow2, raw, vmdk,
//! vdi, vhdx...) made into what an installer environment streams to a disk,
//! `<assets_dir>/images/NAME.raw.gz` with its `.sha256` sidecar (the catalog's format,
//! `images`).
//!
//! Why convert here: qcow2 cannot be streamed to a disk (its clusters come in any order and
//! may point at a backing file), and a busybox installer has no qemu-img. So provd converts
//! once, on the server, and every installer streams gzip'd raw, checked against the checksum
//! computed here while the compressed bytes were written.
//!
//! All or nothing: the work happens in hidden temporary files in the images directory, which
//! are removed on any failure; the image is renamed into place first and its sidecar second,
//! so a reader between the two sees a checksum mismatch (which the installer refuses), never
//! an unverified image. An existing image of that name is replaced only when asked to.
//! The running daemon serves the new checksum after `provd reload` (the catalog belongs to a
//! config generation).

use super::images::{self, IMAGES_DIR};
use super::inspect::{self, DiskFormat};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What an import produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub name: String,
    pub path: PathBuf,
    /// The source's format, as named or read from its header (and given to qemu-img).
    pub source_format: DiskFormat,
    /// The disk's size (what the installer needs at least).
    pub virtual_size: u64,
    /// The size of the .raw.gz written.
    pub bytes: u64,
    pub sha256: String,
}

/// Where an import is, for a progress display.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// qemu-img is writing the raw disk (it reports no progress here).
    Converting,
    /// Compressing: raw bytes read so far, of the total.
    Compressing { done: u64, total: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Name(#[from] images::ImageError),
    #[error("{path}: {message}")]
    Source { path: PathBuf, message: String },
    #[error(
        "image {name} already exists ({}); --force replaces it",
        existing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Exists { name: String, existing: Vec<PathBuf> },
    #[error("{}: refused: {refusal}", path.display())]
    Refused { path: PathBuf, refusal: inspect::Refusal },
    #[error("{what}: {message}")]
    Io { what: String, message: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImportError {
    let what = what.into();
    move |e| ImportError::Io {
        what,
        message: e.to_string(),
    }
}

/// Temporary files of one import, removed unless the import completed.
struct Scratch(Vec<PathBuf>);
impl Drop for Scratch {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The source's format and virtual size, after two independent checks that it reads no other
/// file: provd's own header inspection (`inspect`, which also decides the format: qemu-img
/// never probes), then `qemu-img info -f FORMAT` asked the same question about what it would
/// open (backing file, data file, extents).
fn examine(source: &Path, named: Option<DiskFormat>) -> Result<(DiskFormat, u64), ImportError> {
    let fail = |message: String| ImportError::Source {
        path: source.to_path_buf(),
        message,
    };
    let meta = std::fs::metadata(source).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a plain file".into()));
    }
    let mut header = Vec::with_capacity(inspect::HEADER_BYTES);
    std::fs::File::open(source)
        .and_then(|f| f.take(inspect::HEADER_BYTES as u64).read_to_end(&mut header))
        .map_err(|e| fail(e.to_string()))?;
    let format = inspect::inspect(&header, named).map_err(|refusal| ImportError::Refused {
        path: source.to_path_buf(),
        refusal,
    })?;
    let out = Command::new("qemu-img")
        .args(["info", "--output=json", "-f", format.qemu_name()])
        .arg(source)
        .output()
        .map_err(|e| fail(format!("qemu-img: {e} (install qemu-utils)")))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("qemu-img info: {e}")))?;
    if let Some(other) = files_beyond(&info, source) {
        return Err(fail(format!("qemu-img would also read {other}; refusing to import it")));
    }
    // For a raw file qemu-img rounds the size up to whole sectors; the file's own length is
    // what tells a disk from something else.
    let size = match format {
        DiskFormat::Raw => meta.len(),
        _ => info["virtual-size"].as_u64().unwrap_or(0),
    };
    // Every file is "raw" to qemu-img; a disk is whole sectors. This refuses a text file or
    // an archive given by mistake instead of deploying it as a disk.
    if size == 0 || size % 512 != 0 {
        return Err(fail(format!(
            "not a disk image ({format}, {size} bytes: not whole 512-byte sectors)"
        )));
    }
    Ok((format, size))
}

/// A file other than `source` that qemu-img's `info` says the image refers to: a backing
/// file, an external data file, or a VMDK extent elsewhere.
fn files_beyond(info: &serde_json::Value, source: &Path) -> Option<String> {
    for key in ["backing-filename", "full-backing-filename"] {
        if let Some(b) = info[key].as_str() {
            return Some(format!("backing file {b}"));
        }
    }
    let specific = &info["format-specific"]["data"];
    if let Some(d) = specific["data-file"].as_str() {
        return Some(format!("data file {d}"));
    }
    let own = source.to_string_lossy();
    specific["extents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["filename"].as_str())
        .find(|f| *f != own)
        .map(|f| format!("extent {f}"))
}

/// Files that would make NAME ambiguous or stale next to the new NAME.raw.gz: never the
/// source itself (`images/NAME.qcow2` converted in place is what the catalog's refusal of a
/// qcow2 suggests; it is kept).
fn existing_files(dir: &Path, name: &str, source: &Path) -> Vec<PathBuf> {
    let source = std::fs::canonicalize(source).ok();
    ["raw.gz", "raw", "qcow2", "raw.gz.sha256", "raw.sha256"]
        .iter()
        .map(|s| dir.join(format!("{name}.{s}")))
        .filter(|p| p.exists() && std::fs::canonicalize(p).ok() != source)
        .collect()
}

/// Convert `source` into `<assets_dir>/images/NAME.raw.gz` + `.sha256`.
pub fn import(
    assets_dir: &Path,
    name: &str,
    source: &Path,
    format: Option<DiskFormat>,
    force: bool,
    progress: &mut dyn FnMut(Phase),
) -> Result<Imported, ImportError> {
    images::check_name(name)?;
    // Absolute, so that qemu-img never reads a name like "json:{...}" or "nbd:..." as a
    // protocol instead of a file.
    let source = &std::fs::canonicalize(source).map_err(|e| ImportError::Source {
        path: source.to_path_buf(),
        message: e.to_string(),
    })?;
    let (source_format, virtual_size) = examine(source, format)?;
    let dir = assets_dir.join(IMAGES_DIR);
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let existing = existing_files(&dir, name, source);
    if !existing.is_empty() && !force {
        return Err(ImportError::Exists {
            name: name.into(),
            existing,
        });
    }

    let tag = format!(".{name}.import-{}", std::process::id());
    let raw = dir.join(format!("{tag}.raw"));
    let gz = dir.join(format!("{tag}.raw.gz"));
    let sidecar_tmp = dir.join(format!("{tag}.sha256"));
    let mut scratch = Scratch(vec![raw.clone(), gz.clone(), sidecar_tmp.clone()]);

    progress(Phase::Converting);
    // The format is given, never probed; `examine` has refused any chain to other files. The
    // output is sparse where the source has holes.
    let out = Command::new("qemu-img")
        .args(["convert", "-f", source_format.qemu_name(), "-O", "raw"])
        .arg(source)
        .arg(&raw)
        .output()
        .map_err(io("qemu-img convert"))?;
    if !out.status.success() {
        return Err(ImportError::Source {
            path: source.to_path_buf(),
            message: format!("qemu-img convert: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }

    let (sha256, bytes) = compress(&raw, &gz, virtual_size, progress)?;

    let file_name = format!("{name}.raw.gz");
    let final_gz = dir.join(&file_name);
    let final_sidecar = dir.join(format!("{file_name}.sha256"));
    let mut f = std::fs::File::create(&sidecar_tmp).map_err(io(format!("writing {}", sidecar_tmp.display())))?;
    f.write_all(format!("{sha256}  {file_name}\n").as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(format!("writing {}", sidecar_tmp.display())))?;
    // Other formats of NAME would be stale beside it (a .raw is looked up after .raw.gz, but
    // an operator reading the directory should not have to know that).
    for p in existing_files(&dir, name, source) {
        std::fs::remove_file(&p).map_err(io(format!("removing the old {}", p.display())))?;
    }
    std::fs::rename(&gz, &final_gz).map_err(io(format!("renaming into {}", final_gz.display())))?;
    std::fs::rename(&sidecar_tmp, &final_sidecar).map_err(io(format!("renaming into {}", final_sidecar.display())))?;
    // The directory entry of both renames, durable.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    scratch.0.retain(|p| p == &raw);
    Ok(Imported {
        name: name.into(),
        path: final_gz,
        source_format,
        virtual_size,
        bytes,
        sha256,
    })
}

/// gzip `raw` into `gz` (the gzip program, at its fastest level: the image is written once
/// and streamed through a busybox gunzip, where the level barely matters), hashing the
/// compressed bytes as they are written. Returns (SHA-256, compressed size).
fn compress(raw: &Path, gz: &Path, total: u64, progress: &mut dyn FnMut(Phase)) -> Result<(String, u64), ImportError> {
    let mut child = Command::new("gzip")
        .args(["-1", "-c", "-n"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(io("starting gzip"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut input = std::fs::File::open(raw).map_err(io(format!("reading {}", raw.display())))?;
    // The reader runs in its own thread so that gzip's output never blocks its input.
    let out_path = gz.to_path_buf();
    let reader = std::thread::spawn(move || -> Result<(String, u64), ImportError> {
        let mut file = std::fs::File::create(&out_path).map_err(io(format!("writing {}", out_path.display())))?;
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut n_total = 0u64;
        loop {
            let n = stdout.read(&mut buf).map_err(io("reading gzip's output"))?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(io(format!("writing {}", out_path.display())))?;
            n_total += n as u64;
        }
        file.sync_all().map_err(io(format!("writing {}", out_path.display())))?;
        let hex = ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect();
        Ok((hex, n_total))
    });
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let fed = loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(io(format!("reading {}", raw.display()))(e)),
        };
        if let Err(e) = stdin.write_all(&buf[..n]) {
            break Err(io("feeding gzip")(e));
        }
        done += n as u64;
        progress(Phase::Compressing { done, total });
    };
    drop(stdin);
    let status = child.wait().map_err(io("waiting for gzip"))?;
    let written = reader.join().expect("the gzip reader panicked");
    fed?;
    if !status.success() {
        return Err(ImportError::Io {
            what: "gzip".into(),
            message: status.to_string(),
        });
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools_present() -> bool {
        ["qemu-img", "gzip"].iter().all(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    fn sha256_hex(data: &[u8]) -> String {
        ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// An 8 MiB raw disk with data at its start, middle and end, holes between.
    fn raw_disk(path: &Path) -> Vec<u8> {
        let mut disk = vec![0u8; 8 << 20];
        disk[..512].copy_from_slice(&[0xA5; 512]);
        disk[(3 << 20)..(3 << 20) + 11].copy_from_slice(b"provd image");
        let end = disk.len();
        disk[end - 4..].copy_from_slice(b"last");
        std::fs::write(path, &disk).unwrap();
        disk
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_qcow2_becomes_a_checked_raw_gz_the_catalog_serves() {
        assert!(
            tools_present(),
            "qemu-img and gzip are needed (lab/deps.sh installs them)"
        );
        let work = tempfile::tempdir().unwrap();
        let assets = work.path().join("assets");
        let raw = work.path().join("disk.raw");
        let disk = raw_disk(&raw);
        let qcow2 = work.path().join("disk.qcow2");
        qemu_img(&[
            "convert",
            "-f",
            "raw",
            "-O",
            "qcow2",
            raw.to_str().unwrap(),
            qcow2.to_str().unwrap(),
        ]);

        let mut phases = Vec::new();
        let got = import(&assets, "web", &qcow2, None, false, &mut |p| phases.push(p)).unwrap();
        assert_eq!((got.source_format, got.virtual_size), (DiskFormat::Qcow2, 8 << 20));
        assert!(matches!(phases[0], Phase::Converting));
        assert!(
            matches!(phases.last(), Some(Phase::Compressing { done, total }) if done == total),
            "{phases:?}"
        );
        let images = assets.join(IMAGES_DIR);
        assert_eq!(
            listing(&images),
            ["web.raw.gz", "web.raw.gz.sha256"],
            "no temporary file left"
        );

        // What the catalog will serve: the checksum of the bytes on disk, which decompress to
        // the source disk exactly.
        let catalog = images::Catalog::load(&assets, ["web"]).unwrap();
        let image = catalog.get("web").unwrap();
        let gz_bytes = std::fs::read(images.join("web.raw.gz")).unwrap();
        assert_eq!(image.sha256, sha256_hex(&gz_bytes));
        assert_eq!((image.sha256.as_str(), image.size), (got.sha256.as_str(), got.bytes));
        let plain = Command::new("gzip")
            .args(["-dc"])
            .arg(images.join("web.raw.gz"))
            .output()
            .unwrap();
        assert!(plain.status.success());
        assert!(plain.stdout == disk, "the decompressed image is the source disk");

        // The same name again: refused, and nothing changed; --force replaces it (and a stale
        // .qcow2 of that name goes with it).
        let e = import(&assets, "web", &raw, None, false, &mut |_| {}).unwrap_err();
        assert!(
            matches!(e, ImportError::Exists { .. }) && e.to_string().contains("--force"),
            "{e}"
        );
        assert_eq!(std::fs::read(images.join("web.raw.gz")).unwrap(), gz_bytes);
        std::fs::write(images.join("web.qcow2"), b"stale").unwrap();
        let again = import(&assets, "web", &raw, None, true, &mut |_| {}).unwrap();
        assert_eq!(again.source_format, DiskFormat::Raw);
        assert_eq!(listing(&images), ["web.raw.gz", "web.raw.gz.sha256"]);

        // A qcow2 in the images directory, converted where it lies (what the catalog's refusal
        // of it suggests): no --force needed, and the source stays.
        std::fs::copy(&qcow2, images.join("db.qcow2")).unwrap();
        let e = images::Catalog::load(&assets, ["db"]).unwrap_err().to_string();
        assert!(e.contains("provd assets import-image db "), "{e}");
        import(&assets, "db", &images.join("db.qcow2"), None, false, &mut |_| {}).unwrap();
        assert!(images.join("db.qcow2").exists());
        assert_eq!(
            images::Catalog::load(&assets, ["db"])
                .unwrap()
                .get("db")
                .unwrap()
                .format,
            images::Format::RawGz
        );
    }

    #[test]
    fn bad_names_and_non_disks_are_refused_and_leave_nothing() {
        assert!(
            tools_present(),
            "qemu-img and gzip are needed (lab/deps.sh installs them)"
        );
        let work = tempfile::tempdir().unwrap();
        let assets = work.path().join("assets");
        let text = work.path().join("notes.txt");
        std::fs::write(&text, "not a disk\n").unwrap();
        let e = import(&assets, "notes", &text, None, false, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("not a disk image"), "{e}");
        let e = import(
            &assets,
            "x",
            &work.path().join("missing.qcow2"),
            None,
            false,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(e.to_string().contains("missing.qcow2"), "{e}");
        let raw = work.path().join("d.raw");
        raw_disk(&raw);
        for bad in ["../escape", ".hidden", "a/b", ""] {
            assert!(
                matches!(
                    import(&assets, bad, &raw, None, false, &mut |_| {}),
                    Err(ImportError::Name(_))
                ),
                "{bad:?}"
            );
        }
        let images = assets.join(IMAGES_DIR);
        assert!(
            !images.exists() || listing(&images).is_empty(),
            "a refusal writes nothing"
        );
    }

    /// Every file under `dir`, with its bytes.
    fn everything_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    out.extend(everything_under(&p));
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
                }
            }
        }
        out
    }

    fn qemu_img(args: &[&str]) {
        let out = Command::new("qemu-img").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The attacks of issue 34: images that would make qemu-img read another host file. Each
    /// is refused with its reason, nothing is written, and the secret's bytes are nowhere
    /// under the assets directory.
    #[test]
    fn images_that_point_at_other_files_are_refused_and_leak_nothing() {
        assert!(
            tools_present(),
            "qemu-img and gzip are needed (lab/deps.sh installs them)"
        );
        let work = tempfile::tempdir().unwrap();
        let assets = work.path().join("assets");
        // A "CA key": one 4 KiB block of a recognisable pattern (a whole number of sectors, so
        // qemu-img would happily take it as a raw backing file).
        let secret = work.path().join("ca.key");
        let marker = b"-----BEGIN PRIVATE KEY----- provd secret ";
        let secret_bytes: Vec<u8> = marker.iter().copied().cycle().take(4096).collect();
        let secret_s = secret.to_str().unwrap();

        // 1. qcow2 with an external data file that is the secret. (qemu-img create zeroes
        //    the data file it names, so this comes before the secret is written.)
        let data_file = work.path().join("datafile.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            &format!("data_file={secret_s},data_file_raw=on"),
            data_file.to_str().unwrap(),
            "4096",
        ]);
        std::fs::write(&secret, &secret_bytes).unwrap();
        // 2. qcow2 whose backing file is the secret (what issue 34 demonstrated).
        let backed = work.path().join("backed.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            secret_s,
            "-F",
            "raw",
            backed.to_str().unwrap(),
        ]);
        // 3. A VMDK descriptor whose flat extent is the secret.
        let vmdk = work.path().join("flat.vmdk");
        std::fs::write(
            &vmdk,
            format!(
                "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 8 FLAT \"{secret_s}\" 0\n\nddb.virtualHWVersion = \"4\"\n"
            ),
        )
        .unwrap();
        // Proof that each really is a trap: qemu-img itself reads the secret through it.
        for (trap, format) in [(&backed, "qcow2"), (&data_file, "qcow2"), (&vmdk, "vmdk")] {
            let out = work.path().join("probe.raw");
            qemu_img(&[
                "convert",
                "-f",
                format,
                "-O",
                "raw",
                trap.to_str().unwrap(),
                out.to_str().unwrap(),
            ]);
            let bytes = std::fs::read(&out).unwrap();
            assert!(
                bytes.windows(marker.len()).any(|w| w == marker),
                "{}: qemu-img did not follow it, so this case proves nothing",
                trap.display()
            );
            std::fs::remove_file(&out).unwrap();
        }
        // 4. A file named raw whose header is a qcow2 (with the secret as its backing file):
        //    written to a disk, whatever probes that disk next would follow it.
        let disguised = work.path().join("disguised.raw");
        let mut bytes = std::fs::read(&backed).unwrap();
        bytes.resize(bytes.len().div_ceil(512) * 512, 0);
        std::fs::write(&disguised, &bytes).unwrap();

        let cases: [(&Path, Option<DiskFormat>, &str); 6] = [
            (&backed, None, "backing file"),
            (&backed, Some(DiskFormat::Qcow2), "backing file"),
            (&data_file, None, "external data file"),
            (&vmdk, None, "VMDK descriptor"),
            (&vmdk, Some(DiskFormat::Vmdk), "VMDK descriptor"),
            (&disguised, Some(DiskFormat::Raw), "not the raw that was named"),
        ];
        for (source, format, reason) in cases {
            let e = import(&assets, "evil", source, format, true, &mut |_| {}).unwrap_err();
            assert!(
                matches!(e, ImportError::Refused { .. }) && e.to_string().contains(reason),
                "{} ({format:?}): {e}",
                source.display()
            );
        }
        let written = everything_under(&assets);
        assert!(
            written
                .iter()
                .all(|(_, b)| !b.windows(marker.len()).any(|w| w == marker)),
            "the secret leaked into {:?}",
            written.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );
        assert!(
            written.is_empty(),
            "a refusal writes nothing: {:?}",
            written.iter().map(|(p, _)| p).collect::<Vec<_>>()
        );

        // The same bytes as a plain qcow2 still import, and a named format that matches works.
        let plain = work.path().join("plain.qcow2");
        qemu_img(&[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            secret_s,
            plain.to_str().unwrap(),
        ]);
        let ok = import(&assets, "fine", &plain, Some(DiskFormat::Qcow2), false, &mut |_| {}).unwrap();
        assert_eq!(ok.source_format, DiskFormat::Qcow2);
    }
}
