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
mod tests;
