//! A defined domain's day-to-day power verbs beyond start/stop/destroy: autostart, pause
//! and resume, reboot (asked of the guest) and reset (forced), and a shutdown that waits
//! for the guest and, when told to, powers it off after the wait.
//!
//! Each verb checks the state it needs first and refuses with `VmError::WrongState`
//! (naming the state it found), so a script learns why rather than getting libvirt's
//! message about an inactive domain. The waiting policy of `shutdown` is pure
//! (`ShutdownPlan::next`), the libvirt calls are the thin part around it.

use super::{Hypervisor, VmError, state_name};
use serde::Serialize;
use std::time::{Duration, Instant};
use virt::domain::{Domain, DomainState};

/// How a `shutdown` ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownOutcome {
    /// The guest shut itself down after the ACPI request.
    Graceful,
    /// The guest did not within the wait; it was powered off (`--force`).
    Forced,
}

/// What `shutdown` does next, given whether the domain is still running and how long it
/// has waited: the whole policy, kept apart from libvirt so it is tested alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownStep {
    Done(ShutdownOutcome),
    Wait,
    PowerOff,
    GiveUp,
}

#[derive(Debug, Clone, Copy)]
pub struct ShutdownPlan {
    pub timeout: Duration,
    pub force: bool,
}

impl ShutdownPlan {
    pub fn next(&self, running: bool, waited: Duration) -> ShutdownStep {
        match (running, waited >= self.timeout, self.force) {
            (false, _, _) => ShutdownStep::Done(ShutdownOutcome::Graceful),
            (true, false, _) => ShutdownStep::Wait,
            (true, true, true) => ShutdownStep::PowerOff,
            (true, true, false) => ShutdownStep::GiveUp,
        }
    }
}

/// How often `shutdown` looks at the domain while it waits.
const POLL: Duration = Duration::from_millis(250);

fn known_state(d: &Domain) -> Option<DomainState> {
    d.state().ok().and_then(|(s, _)| Result::<DomainState, _>::from(s).ok())
}

impl Hypervisor {
    /// The domain, if it is in one of `states`; otherwise why `what` cannot run.
    fn domain_in(
        &self,
        name: &str,
        states: &[DomainState],
        what: &'static str,
        needs: &'static str,
    ) -> Result<Domain, VmError> {
        let d = self.domain(name)?;
        match known_state(&d) {
            Some(s) if states.contains(&s) => Ok(d),
            _ => Err(VmError::WrongState {
                name: name.into(),
                state: state_name(&d),
                what,
                needs,
            }),
        }
    }

    /// Start the domain with its hypervisor's libvirtd (`on`), or no longer (`!on`).
    pub fn set_autostart(&self, name: &str, on: bool) -> Result<(), VmError> {
        let d = self.domain(name)?;
        d.set_autostart(on).map_err(self.err("setting autostart of", name))
    }

    pub fn autostart(&self, name: &str) -> Result<bool, VmError> {
        let d = self.domain(name)?;
        d.autostart().map_err(self.err("reading autostart of", name))
    }

    /// Freeze a running domain's vCPUs (its memory stays allocated).
    pub fn pause(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain_in(name, &[DomainState::Running], "pause", "running")?;
        d.suspend().map_err(self.err("pausing", name))
    }

    pub fn resume(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain_in(name, &[DomainState::Paused], "resume", "paused")?;
        d.resume().map_err(self.err("resuming", name))
    }

    /// Ask the guest to reboot (ACPI, or the guest agent where libvirt prefers it): the
    /// guest decides, as with `stop`; `reset` forces it.
    pub fn reboot(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain_in(name, &[DomainState::Running], "reboot", "running")?;
        d.reboot(0).map_err(self.err("rebooting", name))
    }

    /// Reset the virtual machine at once, like its reset button: no guest shutdown.
    pub fn reset(&self, name: &str) -> Result<(), VmError> {
        let d = self.domain_in(
            name,
            &[DomainState::Running, DomainState::Paused],
            "reset",
            "running or paused",
        )?;
        d.reset().map_err(self.err("resetting", name))
    }

    /// ACPI shutdown, then wait up to `plan.timeout` for the domain to stop; after that,
    /// power it off when `plan.force`, or refuse with `ShutdownTimedOut` (it is still
    /// running, and still asked to shut down). `waiting` is called on every look, with the
    /// time waited so far (for a progress display).
    pub fn shutdown(
        &self,
        name: &str,
        plan: ShutdownPlan,
        mut waiting: impl FnMut(Duration),
    ) -> Result<ShutdownOutcome, VmError> {
        let d = self.domain_in(name, &[DomainState::Running], "shut down", "running")?;
        d.shutdown().map_err(self.err("shutting down", name))?;
        let started = Instant::now();
        loop {
            let running = self.is_active(&d, name)?;
            match plan.next(running, started.elapsed()) {
                ShutdownStep::Done(outcome) => return Ok(outcome),
                ShutdownStep::Wait => {
                    waiting(started.elapsed());
                    std::thread::sleep(POLL);
                }
                ShutdownStep::PowerOff => {
                    // It may have stopped between the look and now: that is the outcome asked.
                    return match d.destroy() {
                        Ok(()) => Ok(ShutdownOutcome::Forced),
                        Err(_) if !self.is_active(&d, name)? => Ok(ShutdownOutcome::Graceful),
                        Err(e) => Err(self.err("powering off", name)(e)),
                    };
                }
                ShutdownStep::GiveUp => {
                    return Err(VmError::ShutdownTimedOut {
                        name: name.into(),
                        waited: plan.timeout.as_secs(),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The verbs against libvirt's test driver (a private instance with one running domain):
    /// each moves the state it should, and refuses the states it should not.
    #[test]
    fn each_verb_needs_its_state_and_moves_it() {
        let (_dir, h) = crate::vm::tests::private_driver();
        let state = |h: &Hypervisor| state_name(&h.domain("test").unwrap());
        assert_eq!(state(&h), "running");
        assert!(matches!(h.resume("test"), Err(VmError::WrongState { .. })));
        h.pause("test").unwrap();
        assert_eq!(state(&h), "paused");
        assert!(matches!(h.pause("test"), Err(VmError::WrongState { .. })));
        assert!(matches!(h.reboot("test"), Err(VmError::WrongState { .. })));
        h.resume("test").unwrap();
        assert_eq!(state(&h), "running");
        h.set_autostart("test", true).unwrap();
        assert!(h.autostart("test").unwrap());
        h.set_autostart("test", false).unwrap();
        assert!(!h.autostart("test").unwrap());
        // The test driver's guest shuts down at once when asked.
        let plan = ShutdownPlan {
            timeout: Duration::from_secs(5),
            force: false,
        };
        assert_eq!(h.shutdown("test", plan, |_| {}).unwrap(), ShutdownOutcome::Graceful);
        assert_eq!(state(&h), "shutoff");
        match h.shutdown("test", plan, |_| {}) {
            Err(VmError::WrongState { state, needs, .. }) => {
                assert_eq!((state.as_str(), needs), ("shutoff", "running"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(h.reset("test"), Err(VmError::WrongState { .. })));
        assert!(matches!(h.pause("nope"), Err(VmError::NoDomain { .. })));
    }

    #[test]
    fn shutdown_waits_then_powers_off_only_when_forced() {
        let s = Duration::from_secs;
        let polite = ShutdownPlan {
            timeout: s(10),
            force: false,
        };
        let forced = ShutdownPlan { force: true, ..polite };
        for plan in [polite, forced] {
            assert_eq!(plan.next(false, s(0)), ShutdownStep::Done(ShutdownOutcome::Graceful));
            assert_eq!(plan.next(false, s(60)), ShutdownStep::Done(ShutdownOutcome::Graceful));
            assert_eq!(plan.next(true, s(9)), ShutdownStep::Wait);
        }
        assert_eq!(polite.next(true, s(10)), ShutdownStep::GiveUp);
        assert_eq!(forced.next(true, s(10)), ShutdownStep::PowerOff);
        // A zero wait with --force is `destroy` after one ACPI request.
        let now = ShutdownPlan {
            timeout: s(0),
            force: true,
        };
        assert_eq!(now.next(true, s(0)), ShutdownStep::PowerOff);
    }
}
