//! Block commit on a domain's disk: the one libvirt call the `virt` crate does not wrap
//! (virDomainBlockCommit, virDomainGetBlockJobInfo, virDomainBlockJobAbort), used to merge
//! an external snapshot's overlay into the file below it when the snapshot is deleted.
//!
//! This is the only unsafe code of `vm`: three FFI calls on a live `Domain` handle with
//! C strings that outlive the call. Everything else (which files, in which order) is decided
//! by `snapshot_chain`'s pure plan.

use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};
use virt::domain::Domain;
use virt::sys;

/// Why a merge did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BlockJobError {
    #[error("{0}")]
    Libvirt(#[from] virt::error::Error),
    #[error("a path holds a NUL byte")]
    Nul(#[from] std::ffi::NulError),
    #[error("the merge did not finish within {0} s")]
    TimedOut(u64),
}

/// How long a merge may take before provd gives up on it (the job then goes on in libvirt;
/// `virsh blockjob` shows it).
const MERGE_LIMIT: Duration = Duration::from_secs(600);

fn c_path(p: &Path) -> Result<CString, BlockJobError> {
    Ok(CString::new(p.as_os_str().as_encoded_bytes())?)
}

/// The disk's block job: `Some((cur, end))` while one runs, `None` when there is none.
fn job(d: &Domain, disk: &CString) -> Result<Option<(u64, u64)>, BlockJobError> {
    let mut info = sys::virDomainBlockJobInfo {
        type_: 0,
        bandwidth: 0,
        cur: 0,
        end: 0,
    };
    // SAFETY: `d` is a live domain handle, `disk` a NUL-terminated string and `info` a
    // properly sized struct; all outlive the call, which keeps no pointer to them.
    let r = unsafe { sys::virDomainGetBlockJobInfo(d.as_ptr(), disk.as_ptr(), &mut info, 0) };
    match r {
        r if r < 0 => Err(virt::error::Error::last_error().into()),
        0 => Ok(None),
        _ => Ok(Some((info.cur, info.end))),
    }
}

/// Merge `top` into `base` (its direct backing file) on the disk `target` of the running
/// domain `d`, and wait until it is done. `active` says `top` is the file the domain
/// writes to now: then the merge is an active commit, and the domain is switched
/// ("pivoted") onto `base` once the two hold the same data. Afterwards `top` is no longer
/// in the chain (the caller deletes the file).
pub fn commit(d: &Domain, target: &str, base: &Path, top: &Path, active: bool) -> Result<(), BlockJobError> {
    let (disk, base, top) = (CString::new(target)?, c_path(base)?, c_path(top)?);
    let flags = if active { sys::VIR_DOMAIN_BLOCK_COMMIT_ACTIVE } else { 0 };
    // SAFETY: as in `job`: a live handle and C strings that outlive the call.
    let r = unsafe { sys::virDomainBlockCommit(d.as_ptr(), disk.as_ptr(), base.as_ptr(), top.as_ptr(), 0, flags) };
    if r < 0 {
        return Err(virt::error::Error::last_error().into());
    }
    let started = Instant::now();
    loop {
        match job(d, &disk)? {
            // A passive commit ends by itself; its job is then gone.
            None => return Ok(()),
            // An active commit waits, mirrored ("ready"), until it is told to pivot.
            Some((cur, end)) if active && end > 0 && cur == end => {
                // SAFETY: as in `job`.
                let r = unsafe {
                    sys::virDomainBlockJobAbort(d.as_ptr(), disk.as_ptr(), sys::VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT)
                };
                if r < 0 {
                    // Not ready after all (libvirt reports readiness by event, the cursor
                    // can run ahead of it): try again on the next round.
                    if started.elapsed() > MERGE_LIMIT {
                        return Err(virt::error::Error::last_error().into());
                    }
                } else {
                    // The pivot completes asynchronously: wait for the job to go.
                    wait_gone(d, &disk, started)?;
                    return Ok(());
                }
            }
            Some(_) => {}
        }
        if started.elapsed() > MERGE_LIMIT {
            return Err(BlockJobError::TimedOut(MERGE_LIMIT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_gone(d: &Domain, disk: &CString, started: Instant) -> Result<(), BlockJobError> {
    while job(d, disk)?.is_some() {
        if started.elapsed() > MERGE_LIMIT {
            return Err(BlockJobError::TimedOut(MERGE_LIMIT.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
