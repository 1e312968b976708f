//! The inventory's state machine as pure functions: the current record (or none) and the
//! time in, the next record (or a refusal) out. No locks, no store, no clock; the random
//! token of a new install session is passed in.
//!
//! `Inventory` calls these, persists the result, and only then publishes it in memory, so a
//! failed write leaves memory exactly as it was.

use super::{
    BootDecision, HistoryEntry, HostRecord, InstallEvent, InstallSession, InventoryError, Observation, Status, token,
};
use crate::config::Host;
use crate::mac::MacAddr;
use std::net::Ipv4Addr;

/// History entries kept per host (oldest dropped first).
const HISTORY_LIMIT: usize = 200;

impl HostRecord {
    pub(super) fn set_status(&mut self, status: Status, what: impl Into<String>, now: u64) {
        self.status = status;
        self.note(what, now);
    }

    pub(super) fn note(&mut self, what: impl Into<String>, now: u64) {
        self.updated = now;
        self.history.push(HistoryEntry {
            at: now,
            status: self.status,
            what: what.into(),
        });
        if self.history.len() > HISTORY_LIMIT {
            self.history.remove(0);
        }
    }

    /// The session in use, if open and unexpired.
    pub(super) fn open_session(&self, now: u64) -> Option<&InstallSession> {
        self.install.as_ref().filter(|s| !s.closed && s.expires > now)
    }
}

pub fn new_record(mac: MacAddr, now: u64) -> HostRecord {
    HostRecord {
        mac,
        hostname: None,
        site: None,
        profile: None,
        status: Status::Discovered,
        netboot: false,
        arch: None,
        uuid: None,
        vendor_class: None,
        first_seen: now,
        updated: now,
        history: Vec::new(),
        install: None,
        wipe_allowed: false,
        intent_at: 0,
        version: Default::default(),
        drained: false,
        facts: None,
    }
}

fn apply_config(r: &mut HostRecord, site: &str, host: &Host) {
    r.hostname = Some(host.hostname.clone());
    r.site = Some(site.to_string());
    r.profile = host.profile.clone();
}

/// Bring a stored record in line with the config: a new configured host becomes assigned
/// (netboot on when it has a profile); a discovered machine that now appears in the config
/// is adopted. None: nothing to change.
pub fn reconcile(current: Option<&HostRecord>, site: &str, host: &Host, now: u64) -> Option<HostRecord> {
    match current {
        // A host the config says is in service starts installed: a new or rebuilt server
        // must not offer it an install (its disks hold a system someone uses).
        None if host.installed => {
            let mut r = new_record(host.mac, now);
            r.set_status(
                Status::Installed,
                "in config as installed (state = \"installed\"): local boot until `provd hosts reinstall --force`",
                now,
            );
            apply_config(&mut r, site, host);
            Some(r)
        }
        None => {
            let mut r = new_record(host.mac, now);
            r.set_status(Status::Assigned, "in config", now);
            r.netboot = host.profile.is_some();
            apply_config(&mut r, site, host);
            Some(r)
        }
        Some(before) => {
            let mut r = before.clone();
            apply_config(&mut r, site, host);
            if r.status == Status::Discovered {
                r.netboot = host.profile.is_some();
                r.set_status(Status::Assigned, "adopted: now in config", now);
            }
            (r != *before).then_some(r)
        }
    }
}

/// What DHCP saw about a booting machine. None: nothing new.
pub fn observe(current: Option<&HostRecord>, mac: MacAddr, obs: Observation, now: u64) -> Option<HostRecord> {
    let mut r = match current {
        Some(r) => r.clone(),
        None => {
            let mut r = new_record(mac, now);
            r.note("seen booting", now);
            r
        }
    };
    r.arch = obs.arch.or(r.arch);
    r.uuid = obs.uuid.or(r.uuid.take());
    r.vendor_class = obs.vendor_class.or(r.vendor_class.take());
    match current {
        Some(before) if *before == r => None,
        Some(_) => {
            r.updated = now;
            Some(r)
        }
        None => Some(r),
    }
}

/// The boot-once decision. `configured`: the host is in the config of a served site.
/// `fresh_token` is called only when a new install session starts. Returns the decision and
/// the record to store first (None: nothing changes).
pub fn boot(
    current: Option<&HostRecord>,
    mac: MacAddr,
    configured: bool,
    token_ttl: u64,
    now: u64,
    from: Ipv4Addr,
    mut fresh_token: impl FnMut() -> String,
) -> Result<(BootDecision, Option<HostRecord>), InventoryError> {
    if !configured {
        let first = current.is_none().then(|| {
            let mut r = new_record(mac, now);
            r.note("asked for a boot script", now);
            r
        });
        return Ok((BootDecision::Menu, first));
    }
    let Some(r) = current else {
        // Configured hosts are reconciled at load; one missing here gets nothing to install.
        return Ok((BootDecision::LocalDisk, None));
    };
    // An installed host with netboot on (an operator's `netboot on`) is offered an install
    // too, but without permission to wipe (only `reinstall` gives that): its kickstart's
    // %pre finds the earlier install on its disks and refuses (the interlock).
    let installable = r.netboot && r.profile.is_some();
    if !installable {
        return Ok((BootDecision::LocalDisk, None));
    }
    if let Some(s) = r.open_session(now) {
        // The same script again, but only where the token was first used: that address
        // already had it (an iPXE retry, a reboot before the kickstart).
        return match s.bound_to {
            Some(bound) if bound != from => Err(InventoryError::BoundElsewhere { bound }),
            Some(_) => Ok((BootDecision::Install { token: s.token.clone() }, None)),
            None => {
                // A session stored before tokens were bound: bound now.
                let mut next = r.clone();
                next.install.as_mut().expect("open").bound_to = Some(from);
                Ok((BootDecision::Install { token: s.token.clone() }, Some(next)))
            }
        };
    }
    let token = fresh_token();
    let id: String = fresh_token().chars().take(12).collect();
    let mut next = r.clone();
    next.install = Some(InstallSession {
        token: token.clone(),
        issued: now,
        expires: now + token_ttl,
        kickstart_fetches: 0,
        closed: false,
        certificates_issued: Vec::new(),
        id: id.clone(),
        wipe_allowed: r.wipe_allowed,
        bound_to: Some(from),
        steps: Vec::new(),
    });
    next.note(
        format!(
            "install {id} token issued{}",
            if r.wipe_allowed {
                " (reinstall: may wipe an earlier install)"
            } else {
                ""
            }
        ),
        now,
    );
    Ok((BootDecision::Install { token }, Some(next)))
}

/// Is `token` the open install token of `r`, used from the address it is bound to?
pub fn check_token(r: &HostRecord, token: &str, from: Ipv4Addr, now: u64) -> Result<(), InventoryError> {
    match r.open_session(now) {
        Some(s) if token::equal(&s.token, token) => match s.bound_to {
            Some(bound) if bound != from => Err(InventoryError::BoundElsewhere { bound }),
            _ => Ok(()),
        },
        _ => Err(InventoryError::TokenRefused),
    }
}

/// `check_token`, and `step` not taken yet with this token.
pub fn check_step(r: &HostRecord, token: &str, from: Ipv4Addr, step: &str, now: u64) -> Result<(), InventoryError> {
    check_token(r, token, from, now)?;
    match &r.install {
        Some(s) if s.steps.iter().any(|x| x == step) => Err(InventoryError::StepTaken(step.to_string())),
        _ => Ok(()),
    }
}

/// May `token` have a `role` certificate signed? Open, unexpired, from its address, not
/// used for that role.
pub fn check_signing(r: &HostRecord, token: &str, from: Ipv4Addr, role: &str, now: u64) -> Result<(), InventoryError> {
    check_token(r, token, from, now)?;
    match &r.install {
        Some(s) if !s.certificates_issued.iter().any(|x| x == role) => Ok(()),
        _ => Err(InventoryError::StepTaken(format!("the {role} certificate"))),
    }
}

/// `token` was spent on a `role` certificate (each role once per session).
pub fn certificate_issued(
    r: &HostRecord,
    token: &str,
    from: Ipv4Addr,
    role: &str,
    now: u64,
) -> Result<HostRecord, InventoryError> {
    check_signing(r, token, from, role, now)?;
    let mut next = r.clone();
    next.install
        .as_mut()
        .expect("checked")
        .certificates_issued
        .push(role.to_string());
    next.note(format!("libvirt TLS {role} certificate issued"), now);
    Ok(next)
}

/// A kickstart fetch with `token`: counted; the host is installing from now on.
pub fn kickstart_fetched(r: &HostRecord, token: &str, from: Ipv4Addr, now: u64) -> Result<HostRecord, InventoryError> {
    check_step(r, token, from, super::STEP_KICKSTART, now)?;
    let mut next = r.clone();
    if let Some(s) = next.install.as_mut() {
        s.kickstart_fetches += 1;
        s.steps.push(super::STEP_KICKSTART.to_string());
    }
    if next.status != Status::Installing {
        next.set_status(Status::Installing, "kickstart fetched", now);
    } else {
        next.note("kickstart fetched", now);
    }
    Ok(next)
}

/// An installer callback. `installed` turns netboot off (boot once); `installed` and
/// `failed` spend the token.
pub fn event(
    r: &HostRecord,
    token: &str,
    from: Ipv4Addr,
    event: InstallEvent,
    detail: &str,
    now: u64,
) -> Result<HostRecord, InventoryError> {
    // Progress reports each once; the ends (installed, failed, refused) close the session.
    let step = format!("callback {}", event.as_str());
    check_step(r, token, from, &step, now)?;
    let mut next = r.clone();
    next.install.as_mut().expect("checked").steps.push(step);
    let detail = if detail.is_empty() {
        String::new()
    } else {
        // The installer's words reach `provd hosts show`: no terminal escapes.
        let detail: String = detail.chars().take(500).collect();
        format!(": {}", crate::printable::printable(&detail))
    };
    match event {
        InstallEvent::Installing => next.set_status(Status::Installing, format!("installer: installing{detail}"), now),
        InstallEvent::PostStarted => next.note(format!("installer: post-started{detail}"), now),
        InstallEvent::Installed => {
            next.netboot = false;
            next.install.as_mut().expect("checked").closed = true;
            next.set_status(
                Status::Installed,
                format!("installer: installed{detail}; netboot off"),
                now,
            );
        }
        InstallEvent::Failed => {
            // Netboot off too: a host that fails its install must not loop through installs
            // forever; an operator looks, then runs `provd hosts reinstall`.
            next.netboot = false;
            next.install.as_mut().expect("checked").closed = true;
            next.set_status(Status::Failed, format!("installer: failed{detail}; netboot off"), now);
        }
        InstallEvent::Refused => {
            // The disks hold an earlier provd install and nobody asked to wipe it: nothing
            // was touched, so the host is what its disks say, installed.
            next.netboot = false;
            next.install.as_mut().expect("checked").closed = true;
            next.set_status(
                Status::Installed,
                format!("installer refused to wipe an earlier install{detail}; netboot off"),
                now,
            );
        }
    }
    if matches!(
        event,
        InstallEvent::Installed | InstallEvent::Failed | InstallEvent::Refused
    ) {
        // The operator's permission to wipe was for one install.
        next.wipe_allowed = false;
    }
    Ok(next)
}

/// Operator: install again at the next network boot, and let that install wipe an earlier
/// one. An installed or ready host is refused without `force` (it may be in service),
/// unless it is drained (its VMs were moved away on purpose).
pub fn reinstall(r: &HostRecord, force: bool, now: u64) -> Result<HostRecord, InventoryError> {
    if matches!(r.status, Status::Installed | Status::Ready) && !force && !r.drained {
        // When the host entered its current status (the first of the latest run of
        // history entries with that status).
        let since = r
            .history
            .iter()
            .rev()
            .take_while(|h| h.status == r.status)
            .last()
            .map_or(r.updated, |h| h.at);
        return Err(InventoryError::Installed {
            host: r.hostname.clone().unwrap_or_else(|| r.mac.to_string()),
            status: r.status.as_str(),
            since: crate::clock::rfc3339(since),
        });
    }
    let mut next = r.clone();
    next.netboot = true;
    next.install = None;
    next.wipe_allowed = true;
    next.intent_at = now;
    next.set_status(
        Status::Assigned,
        if force {
            "operator: reinstall --force (may wipe the installed system)"
        } else {
            "operator: reinstall"
        },
        now,
    );
    Ok(next)
}

/// The pool reached (or lost) an installed host's libvirt: installed <-> ready. None when
/// the status does not change (the pool keeps its own details).
pub fn pool_verdict(r: &HostRecord, ready: bool, why: &str, now: u64) -> Option<HostRecord> {
    let next_status = match (r.status, ready) {
        (Status::Installed, true) => Status::Ready,
        (Status::Ready, false) => Status::Installed,
        _ => return None,
    };
    let mut next = r.clone();
    next.set_status(next_status, why.to_string(), now);
    Some(next)
}

/// Operator: drain (no new placements; its VMs are moved away) or undrain a hypervisor.
pub fn set_drained(r: &HostRecord, on: bool, now: u64) -> HostRecord {
    let mut next = r.clone();
    next.drained = on;
    next.intent_at = now;
    next.note(if on { "operator: drain" } else { "operator: undrain" }, now);
    next
}

/// Operator: the host is installed and in service; boot it from its disk.
pub fn mark_installed(r: &HostRecord, now: u64) -> HostRecord {
    let mut next = r.clone();
    next.netboot = false;
    next.wipe_allowed = false;
    next.intent_at = now;
    if let Some(s) = next.install.as_mut() {
        s.closed = true;
    }
    next.set_status(Status::Installed, "operator: marked installed; netboot off", now);
    next
}

/// Operator: allow or stop network installs without changing the state.
pub fn set_netboot(r: &HostRecord, on: bool, now: u64) -> HostRecord {
    let mut next = r.clone();
    next.netboot = on;
    next.intent_at = now;
    next.note(format!("operator: netboot {}", if on { "on" } else { "off" }), now);
    next
}

#[cfg(test)]
mod tests;
