//! Disk files through libvirt's storage API, so that clones (and `vm init` on a remote
//! hypervisor) work the same on a local `qemu:///system` and on a remote `qemu+tls://`
//! hypervisor (provd never touches the remote file system itself).
//!
//! libvirt only manages files inside a storage pool. A template's disk often lives in a
//! directory no pool covers (virt-clone meets the same problem); then a *transient* `dir`
//! pool is created for that directory and destroyed again when this `Volumes` is dropped:
//! destroying a transient dir pool forgets it and leaves its files alone.

use std::path::{Path, PathBuf};
use virt::connect::Connect;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;

/// What went wrong with a volume: which path, what provd was doing, and libvirt's (or the
/// file system's) own words.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("no storage pool covers {dir}, and one could not be made: {source}")]
    NoPool { dir: PathBuf, source: virt::error::Error },
    #[error("{path}: not found by the hypervisor ({source})")]
    NotFound { path: PathBuf, source: virt::error::Error },
    #[error("{path}: has no directory")]
    NoDirectory { path: PathBuf },
    #[error("{path}: {action}: {source}")]
    Libvirt {
        path: PathBuf,
        action: &'static str,
        source: virt::error::Error,
    },
    #[error("{path}: the hypervisor's description cannot be read: {source}")]
    Description { path: PathBuf, source: xmltree::ParseError },
    #[error("{path}: {source}")]
    LocalFile { path: PathBuf, source: std::io::Error },
    #[error("{action}: {source}")]
    Stream {
        action: &'static str,
        source: virt::error::Error,
    },
    #[error("the hypervisor closed the stream")]
    StreamClosed,
}

impl StorageError {
    fn libvirt<'p>(path: &'p Path, action: &'static str) -> impl FnOnce(virt::error::Error) -> StorageError + 'p {
        move |source| StorageError::Libvirt {
            path: path.to_path_buf(),
            action,
            source,
        }
    }

    pub(crate) fn stream(action: &'static str) -> impl FnOnce(virt::error::Error) -> StorageError {
        move |source| StorageError::Stream { action, source }
    }
}

/// The directory `path` lives in (its pool's target).
fn parent_of(path: &Path) -> Result<&Path, StorageError> {
    path.parent().ok_or_else(|| StorageError::NoDirectory {
        path: path.to_path_buf(),
    })
}

pub struct Volumes<'a> {
    conn: &'a Connect,
    transient_pools: Vec<StoragePool>,
}

/// Capacity and space really used, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct VolumeSize {
    pub capacity: u64,
    pub allocation: u64,
}

use super::xml::esc;

/// A plain volume of `capacity` bytes, not preallocated (allocation 0: sparse).
fn volume_xml(dest: &Path, format: &str, capacity: u64) -> String {
    format!(
        "<volume><name>{}</name><capacity>{capacity}</capacity><allocation>0</allocation>\
         <target><format type='{}'/></target></volume>",
        esc(&file_name(dest)),
        esc(format)
    )
}

/// The last component of `p` (a volume's name in its pool).
pub(crate) fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A pool's target directory, from its XML.
fn pool_target(pool: &StoragePool) -> Option<PathBuf> {
    let xml = pool.xml_desc(0).ok()?;
    let dom = xmltree::Element::parse(xml.as_bytes()).ok()?;
    let path = dom.get_child("target")?.get_child("path")?.get_text()?;
    Some(PathBuf::from(path.trim()))
}

impl<'a> Volumes<'a> {
    pub fn new(conn: &'a Connect) -> Volumes<'a> {
        Volumes {
            conn,
            transient_pools: Vec::new(),
        }
    }

    /// The pool that holds `dir`, making a transient one if no pool does.
    fn pool_for_dir(&mut self, dir: &Path) -> Result<StoragePool, StorageError> {
        let d = dir.display().to_string();
        // Not every driver implements lookup by target path (the test driver does not), so
        // fall back to reading each active pool's target.
        let found = self.conn.lookup_storage_pool_by_target_path(&d).ok().or_else(|| {
            self.conn
                .list_all_storage_pools(virt::sys::VIR_CONNECT_LIST_STORAGE_POOLS_ACTIVE)
                .unwrap_or_default()
                .into_iter()
                .find(|p| pool_target(p).as_deref() == Some(dir))
        });
        if let Some(pool) = found
            && pool.is_active().unwrap_or(false)
        {
            let _ = pool.refresh(0);
            return Ok(pool);
        }
        let name = format!("provd-{}-{}", std::process::id(), self.transient_pools.len());
        let xml = format!(
            "<pool type='dir'><name>{name}</name><target><path>{}</path></target></pool>",
            esc(&d)
        );
        let pool = self
            .conn
            .create_storage_pool_xml(&xml, 0)
            .map_err(|source| StorageError::NoPool {
                dir: dir.to_path_buf(),
                source,
            })?;
        self.transient_pools.push(pool.clone());
        Ok(pool)
    }

    /// The volume at `path` (which must exist).
    pub fn volume(&mut self, path: &Path) -> Result<StorageVol, StorageError> {
        if let Ok(v) = self.conn.lookup_storage_vol_by_path(&path.display().to_string()) {
            return Ok(v);
        }
        let pool = self.pool_for_dir(parent_of(path)?)?;
        pool.lookup_storage_vol_by_name(&file_name(path))
            .map_err(|source| StorageError::NotFound {
                path: path.to_path_buf(),
                source,
            })
    }

    pub fn exists(&mut self, path: &Path) -> bool {
        self.volume(path).is_ok()
    }

    pub fn size(&mut self, path: &Path) -> Result<VolumeSize, StorageError> {
        let info = self
            .volume(path)?
            .info()
            .map_err(StorageError::libvirt(path, "reading its size"))?;
        Ok(VolumeSize {
            capacity: info.capacity,
            allocation: info.allocation,
        })
    }

    /// A qcow2 overlay at `dest` whose backing file is `backing`: a linked clone's disk.
    /// It costs the same whatever the size of the backing image.
    pub fn create_overlay(
        &mut self,
        backing: &Path,
        backing_format: &str,
        dest: &Path,
    ) -> Result<StorageVol, StorageError> {
        let capacity = self.size(backing)?.capacity;
        let pool = self.pool_for_dir(parent_of(dest)?)?;
        let xml = format!(
            "<volume><name>{}</name><capacity>{capacity}</capacity><target><format type='qcow2'/></target>\
             <backingStore><path>{}</path><format type='{}'/></backingStore></volume>",
            esc(&file_name(dest)),
            esc(&backing.display().to_string()),
            esc(backing_format)
        );
        StorageVol::create_xml(&pool, &xml, 0).map_err(StorageError::libvirt(dest, "creating the overlay"))
    }

    /// A full, independent copy of `source` at `dest`, in `format`: libvirt clones the volume
    /// (a reflink where the pool's file system can, else a sparse copy: allocation 0 asks
    /// for no preallocation). Blocks until the copy is done.
    pub fn copy_full(&mut self, source: &Path, format: &str, dest: &Path) -> Result<StorageVol, StorageError> {
        let src = self.volume(source)?;
        let capacity = self.size(source)?.capacity;
        let pool = self.pool_for_dir(parent_of(dest)?)?;
        let xml = volume_xml(dest, format, capacity);
        // libvirt refuses the reflink flag where it cannot honour it (qemu-img-made formats,
        // file systems without reflink, the test driver): then copy.
        match StorageVol::create_xml_from(&pool, &xml, &src, virt::sys::VIR_STORAGE_VOL_CREATE_REFLINK) {
            Ok(v) => Ok(v),
            Err(_) => StorageVol::create_xml_from(&pool, &xml, &src, 0).map_err(StorageError::libvirt(dest, "copying")),
        }
    }

    /// A new empty volume (a data disk).
    pub fn create_empty(&mut self, dest: &Path, format: &str, capacity: u64) -> Result<StorageVol, StorageError> {
        let pool = self.pool_for_dir(parent_of(dest)?)?;
        let xml = volume_xml(dest, format, capacity);
        StorageVol::create_xml(&pool, &xml, 0).map_err(StorageError::libvirt(dest, "creating"))
    }

    /// A new volume at `dest` holding exactly the bytes of the local file `file` (a disk image
    /// in `format`, whose virtual size is `capacity`), streamed through libvirt
    /// (virStorageVolUpload): how a disk reaches a remote hypervisor without ssh. On any
    /// failure the volume is deleted again.
    pub fn upload_file(
        &mut self,
        dest: &Path,
        format: &str,
        capacity: u64,
        file: &Path,
    ) -> Result<StorageVol, StorageError> {
        use std::io::Read;
        let vol = self.create_empty(dest, format, capacity)?;
        let local = |source| StorageError::LocalFile {
            path: file.to_path_buf(),
            source,
        };
        let result = (|| -> Result<(), StorageError> {
            let mut input = std::fs::File::open(file).map_err(local)?;
            let stream = virt::stream::Stream::new(self.conn, 0).map_err(StorageError::stream("opening a stream"))?;
            vol.upload(&stream, 0, 0, 0)
                .map_err(StorageError::libvirt(dest, "starting the upload"))?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = input.read(&mut buf).map_err(local)?;
                if n == 0 {
                    break;
                }
                send_all(&stream, &buf[..n])?;
            }
            stream.finish().map_err(StorageError::stream("finishing the upload"))
        })();
        match result {
            Ok(()) => Ok(vol),
            Err(e) => {
                let _ = vol.delete(0);
                Err(e)
            }
        }
    }

    /// Grow a volume to `capacity` bytes if it is smaller (never shrinks).
    pub fn grow(&mut self, path: &Path, capacity: u64) -> Result<(), StorageError> {
        if self.size(path)?.capacity >= capacity {
            return Ok(());
        }
        self.volume(path)?
            .resize(capacity, 0)
            .map_err(StorageError::libvirt(path, "growing"))
    }

    /// Delete a volume this run created (clean-up after a failure).
    pub fn delete(&mut self, path: &Path) -> Result<(), StorageError> {
        self.volume(path)?
            .delete(0)
            .map_err(StorageError::libvirt(path, "deleting"))
    }

    /// The direct backing file of a volume, as libvirt reports it.
    pub fn backing_path(&mut self, path: &Path) -> Result<Option<PathBuf>, StorageError> {
        Ok(self.backing(path)?.map(|(p, _)| p))
    }

    /// The direct backing file of a volume and its format (`qcow2` unless libvirt says
    /// otherwise: an overlay on it must name the format, qemu refuses to guess).
    pub fn backing(&mut self, path: &Path) -> Result<Option<(PathBuf, String)>, StorageError> {
        let xml = self
            .volume(path)?
            .xml_desc(0)
            .map_err(StorageError::libvirt(path, "reading its description"))?;
        let dom = xmltree::Element::parse(xml.as_bytes()).map_err(|source| StorageError::Description {
            path: path.to_path_buf(),
            source,
        })?;
        let Some(store) = dom.get_child("backingStore") else {
            return Ok(None);
        };
        let format = store
            .get_child("format")
            .and_then(|f| f.attributes.get("type").cloned())
            .unwrap_or_else(|| "qcow2".into());
        Ok(store
            .get_child("path")
            .and_then(|p| p.get_text())
            .map(|t| (PathBuf::from(t.into_owned()), format)))
    }
}

/// Send all of `chunk` on an upload stream (libvirt may take less than it is given).
pub fn send_all(stream: &virt::stream::Stream, chunk: &[u8]) -> Result<(), StorageError> {
    let mut off = 0;
    while off < chunk.len() {
        let sent = stream.send(&chunk[off..]).map_err(StorageError::stream("uploading"))?;
        if sent <= 0 {
            return Err(StorageError::StreamClosed);
        }
        off += sent as usize;
    }
    Ok(())
}

impl Drop for Volumes<'_> {
    fn drop(&mut self) {
        for pool in &self.transient_pools {
            let _ = pool.destroy();
        }
    }
}
