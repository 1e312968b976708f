//! `provd vm template push`: a template's disks and definition copied to another
//! hypervisor through libvirt's storage streams (virStorageVolDownload on the source,
//! virStorageVolUpload on the destination): no ssh, no shared storage. Each disk is hashed
//! (SHA-256) while it streams and the copy is read back and hashed again; a mismatch is an
//! error. All or nothing per destination: any failure deletes the volumes this push made
//! there and defines nothing.
//!
//! The definition is the template's own, made host-neutral as a clone's is (`clone_xml`:
//! no UUID, new NIC MACs), keeping its name, disk paths and provd's template mark.

use super::clone_xml;
use super::storage::{StorageError, Volumes};
use super::{Hypervisor, VmError};
use serde::Serialize;
use virt::stream::Stream;

/// One disk as pushed.
#[derive(Debug, Clone, Serialize)]
pub struct PushedDisk {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stream `path`'s volume on `h` through `sink` (a chunk at a time); the SHA-256 and size.
fn read_volume(
    h: &Hypervisor,
    path: &std::path::Path,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), StorageError>,
) -> Result<(String, u64), StorageError> {
    let mut vols = Volumes::new(&h.conn);
    let vol = vols.volume(path)?;
    let stream = Stream::new(&h.conn, 0).map_err(StorageError::stream("opening a stream"))?;
    vol.download(&stream, 0, 0, 0)
        .map_err(StorageError::stream("starting the download"))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.recv(&mut buf).map_err(StorageError::stream("downloading"))?;
        if n <= 0 {
            break;
        }
        let chunk = &buf[..n as usize];
        ctx.update(chunk);
        sink(chunk)?;
        total += chunk.len() as u64;
    }
    stream
        .finish()
        .map_err(StorageError::stream("finishing the download"))?;
    Ok((hex(ctx.finish().as_ref()), total))
}

impl Hypervisor {
    /// The bytes a volume streams (its allocation) at `path`.
    pub fn volume_size(&self, path: &std::path::Path) -> Result<u64, VmError> {
        Volumes::new(&self.conn)
            .size(path)
            .map(|s| s.allocation)
            .map_err(VmError::on_disk(path))
    }
}

/// Copy `template` from `source` to `dest`; `progress(bytes_done)` as it streams.
pub fn push(
    source: &Hypervisor,
    template: &str,
    dest: &Hypervisor,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<PushedDisk>, VmError> {
    let fail = |source: VmError| VmError::Push {
        template: template.to_string(),
        uri: dest.uri.clone(),
        source: Box::new(source),
    };
    if dest.info(template).is_ok() {
        return Err(fail(VmError::Exists {
            name: template.to_string(),
            uri: dest.uri.clone(),
        }));
    }
    let src_domain = source.domain(template)?;
    let meta = source.meta(&src_domain);
    let xml = source.xml(template)?;
    let plan = clone_xml::plan_clone(&xml, template, false, &mut super::random_mac).map_err(|source| {
        fail(VmError::Definition {
            name: template.to_string(),
            source,
        })
    })?;

    let mut made: Vec<std::path::PathBuf> = Vec::new();
    let result = (|| -> Result<Vec<PushedDisk>, VmError> {
        let mut pushed = Vec::new();
        let mut done = 0u64;
        for disk in &plan.disks {
            let on_disk = VmError::on_disk(&disk.dest);
            let size = Volumes::new(&source.conn).size(&disk.source).map_err(&on_disk)?;
            let mut dest_vols = Volumes::new(&dest.conn);
            let vol = dest_vols
                .create_empty(&disk.dest, &disk.source_format, size.capacity)
                .map_err(&on_disk)?;
            made.push(disk.dest.clone());
            let up = Stream::new(&dest.conn, 0)
                .map_err(StorageError::stream("opening a stream"))
                .map_err(&on_disk)?;
            vol.upload(&up, 0, 0, 0)
                .map_err(StorageError::stream("starting the upload"))
                .map_err(&on_disk)?;
            let (sum, bytes) = read_volume(source, &disk.source, &mut |chunk| {
                super::storage::send_all(&up, chunk)?;
                done += chunk.len() as u64;
                progress(done);
                Ok(())
            })
            .map_err(&on_disk)?;
            up.finish()
                .map_err(StorageError::stream("finishing the upload"))
                .map_err(&on_disk)?;
            // Read the copy back: what the destination stored is what was sent.
            let (copy, copy_bytes) = read_volume(dest, &disk.dest, &mut |_| Ok(())).map_err(&on_disk)?;
            if copy != sum || copy_bytes != bytes {
                return Err(VmError::CopyMismatch {
                    path: disk.dest.clone(),
                    copy,
                    copy_bytes,
                    sum,
                    bytes,
                });
            }
            pushed.push(PushedDisk {
                path: disk.dest.display().to_string(),
                bytes,
                sha256: sum,
            });
        }
        let dom = dest
            .conn
            .define_domain_xml(&plan.xml)
            .map_err(dest.err("defining", template))?;
        if let Err(e) = dest.set_meta(&dom, template, &meta) {
            let _ = dom.undefine();
            return Err(e);
        }
        Ok(pushed)
    })();
    match result {
        Ok(p) => Ok(p),
        Err(e) => {
            let mut vols = Volumes::new(&dest.conn);
            for path in &made {
                let _ = vols.delete(path);
            }
            Err(fail(e))
        }
    }
}
