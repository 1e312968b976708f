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
use super::storage::Volumes;
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

fn libvirt(what: &str) -> impl FnOnce(virt::error::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Stream `path`'s volume on `h` through `sink` (a chunk at a time); the SHA-256 and size.
fn read_volume(
    h: &Hypervisor,
    path: &std::path::Path,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<(String, u64), String> {
    let mut vols = Volumes::new(&h.conn);
    let vol = vols.volume(path)?;
    let stream = Stream::new(&h.conn, 0).map_err(libvirt("opening a stream"))?;
    vol.download(&stream, 0, 0, 0)
        .map_err(libvirt("starting the download"))?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.recv(&mut buf).map_err(libvirt("downloading"))?;
        if n <= 0 {
            break;
        }
        let chunk = &buf[..n as usize];
        ctx.update(chunk);
        sink(chunk)?;
        total += chunk.len() as u64;
    }
    stream.finish().map_err(libvirt("finishing the download"))?;
    Ok((hex(ctx.finish().as_ref()), total))
}

impl Hypervisor {
    /// The bytes a volume streams (its allocation) at `path`.
    pub fn volume_size(&self, path: &std::path::Path) -> Result<u64, VmError> {
        Volumes::new(&self.conn)
            .size(path)
            .map(|s| s.allocation)
            .map_err(|message| VmError::Libvirt {
                what: "reading",
                name: path.display().to_string(),
                uri: self.uri.clone(),
                message,
            })
    }
}

/// Copy `template` from `source` to `dest`; `progress(bytes_done)` as it streams.
pub fn push(
    source: &Hypervisor,
    template: &str,
    dest: &Hypervisor,
    progress: &mut dyn FnMut(u64),
) -> Result<Vec<PushedDisk>, VmError> {
    let fail = |message: String| VmError::Libvirt {
        what: "pushing",
        name: template.to_string(),
        uri: dest.uri.clone(),
        message,
    };
    if dest.info(template).is_ok() {
        return Err(fail(format!("{} already has a domain named {template:?}", dest.uri)));
    }
    let src_domain = source.domain(template)?;
    let meta = source.meta(&src_domain);
    let xml = source.xml(template)?;
    let plan = clone_xml::plan_clone(&xml, template, false, &mut super::random_mac).map_err(|e| fail(e.to_string()))?;

    let mut made: Vec<std::path::PathBuf> = Vec::new();
    let result = (|| -> Result<Vec<PushedDisk>, String> {
        let mut pushed = Vec::new();
        let mut done = 0u64;
        for disk in &plan.disks {
            let size = Volumes::new(&source.conn).size(&disk.source)?;
            let mut dest_vols = Volumes::new(&dest.conn);
            let vol = dest_vols.create_empty(&disk.dest, &disk.source_format, size.capacity)?;
            made.push(disk.dest.clone());
            let up = Stream::new(&dest.conn, 0).map_err(libvirt("opening a stream"))?;
            vol.upload(&up, 0, 0, 0).map_err(libvirt("starting the upload"))?;
            let (sum, bytes) = read_volume(source, &disk.source, &mut |chunk| {
                super::storage::send_all(&up, chunk)?;
                done += chunk.len() as u64;
                progress(done);
                Ok(())
            })?;
            up.finish().map_err(libvirt("finishing the upload"))?;
            // Read the copy back: what the destination stored is what was sent.
            let (copy, copy_bytes) = read_volume(dest, &disk.dest, &mut |_| Ok(()))?;
            if copy != sum || copy_bytes != bytes {
                return Err(format!(
                    "{}: the copy's SHA-256 {copy} ({copy_bytes} bytes) is not the source's {sum} ({bytes} bytes)",
                    disk.dest.display()
                ));
            }
            pushed.push(PushedDisk {
                path: disk.dest.display().to_string(),
                bytes,
                sha256: sum,
            });
        }
        let dom = dest.conn.define_domain_xml(&plan.xml).map_err(libvirt("defining"))?;
        if let Err(e) = dest.set_meta(&dom, template, &meta) {
            let _ = dom.undefine();
            return Err(e.to_string());
        }
        Ok(pushed)
    })();
    match result {
        Ok(p) => Ok(p),
        Err(message) => {
            let mut vols = Volumes::new(&dest.conn);
            for path in &made {
                let _ = vols.delete(path);
            }
            Err(fail(message))
        }
    }
}
