//! IPMI 2.0 over LAN (RMCP+) through `ipmitool -I lanplus`, the tool Ironic's ipmitool
//! driver and the fence agents Cobbler uses run. No maintained Rust crate speaks RMCP+
//! (session setup, RAKP authentication, integrity and confidentiality algorithms) with that
//! much field exposure, so provd drives the tool and parses its few stable lines.
//!
//! The password goes to ipmitool through its environment (`-E`, IPMI_PASSWORD), never on
//! the command line, where any local user could read it in `ps`. It runs without provd's
//! ambient capabilities (the unit gives provd CAP_NET_RAW, CAP_NET_ADMIN and
//! CAP_NET_BIND_SERVICE as ambient, which every child would otherwise inherit): a helper
//! that talks to a BMC needs none of them.

use super::secrets::Credential;
use super::{Action, BmcError, Outcome, PowerState};
use crate::config::Bmc;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run one `ipmitool ... <args>` against `bmc`; its stdout, or why it failed.
fn ipmitool(bmc: &Bmc, cred: &Credential, args: &[&str], timeout: Duration) -> Result<String, BmcError> {
    let (host, port) = match bmc.address.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_string(), p.to_string()),
        _ => (bmc.address.clone(), "623".to_string()),
    };
    let mut command = Command::new("ipmitool");
    command
        .args(["-I", "lanplus", "-H", &host, "-p", &port, "-U", &cred.username, "-E"])
        .args(["-C", &bmc.cipher_suite.to_string()])
        // Ironic's defaults are similar: a couple of retries, short per-try timeout.
        .args(["-N", "2", "-R", "3"])
        .args(args)
        .env("IPMI_PASSWORD", &cred.password)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only prctl(2), a plain system call (async-signal-safe),
    // runs; it allocates nothing and touches no lock.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| BmcError::Config(format!("cannot run ipmitool ({e}): install Debian's ipmitool")))?;
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| BmcError::Failed(e.to_string()))? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BmcError::Unreachable(format!(
                "ipmitool {} gave no answer in {} s",
                args.join(" "),
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    // ipmitool exits 0 for some refusals it only prints ("Set Chassis Boot Parameter 5
    // failed: Invalid data field in request"): a line saying "failed" is a failure.
    let refused_quietly = err
        .lines()
        .any(|l| l.contains("failed") || l.contains("Invalid data field"));
    if status.success() && !refused_quietly {
        return Ok(out);
    }
    let said = err
        .lines()
        .chain(out.lines())
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let said = if said.is_empty() {
        format!("ipmitool exited with {status}")
    } else {
        said.to_string()
    };
    Err(
        if said.contains("Unable to establish") || said.contains("RAKP") || said.contains("password") {
            BmcError::Refused(format!("{said} (wrong credentials, or no BMC at {})", bmc.address))
        } else if said.contains("Insufficient privilege") {
            BmcError::Refused(said)
        } else {
            BmcError::Failed(said)
        },
    )
}

/// "Chassis Power is on" -> On.
pub fn parse_power(out: &str) -> PowerState {
    let l = out.to_ascii_lowercase();
    if l.contains("power is on") {
        PowerState::On
    } else if l.contains("power is off") {
        PowerState::Off
    } else {
        PowerState::Unknown
    }
}

pub fn act(bmc: &Bmc, cred: &Credential, action: Action, timeout: Duration) -> Result<Outcome, BmcError> {
    let status = || ipmitool(bmc, cred, &["chassis", "power", "status"], timeout).map(|o| parse_power(&o));
    // The boot override does not depend on, or change, the power state: one command.
    if action == Action::PxeOnce {
        ipmitool(bmc, cred, &["chassis", "bootdev", "pxe"], timeout)?;
        return Ok(Outcome {
            detail: "next boot: PXE (once)".into(),
            ..Outcome::default()
        });
    }
    let before = status()?;
    let mut outcome = Outcome::default();
    match action {
        Action::Status => {}
        Action::On if before == PowerState::On => outcome.detail = "already on".into(),
        Action::On => {
            ipmitool(bmc, cred, &["chassis", "power", "on"], timeout)?;
        }
        Action::Off if before == PowerState::Off => outcome.detail = "already off".into(),
        Action::Off => {
            ipmitool(bmc, cred, &["chassis", "power", "off"], timeout)?;
        }
        // IPMI's power cycle does nothing for a machine that is off (spec 28.3).
        Action::Cycle if before == PowerState::Off => {
            ipmitool(bmc, cred, &["chassis", "power", "on"], timeout)?;
            outcome.detail = "was off: powered on".into();
        }
        Action::Cycle => {
            ipmitool(bmc, cred, &["chassis", "power", "cycle"], timeout)?;
        }
        // Answered above, before any status query.
        Action::PxeOnce => {}
    }
    outcome.state = status()?;
    // A BMC reports the new state a moment after it accepted the command (ipmi_sim restarts
    // the machine's process): wait briefly for "on" after on and cycle.
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(action, Action::On | Action::Cycle) && outcome.state != PowerState::On && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        outcome.state = status()?;
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_lines() {
        assert_eq!(parse_power("Chassis Power is on\n"), PowerState::On);
        assert_eq!(parse_power("Chassis Power is off\n"), PowerState::Off);
        assert_eq!(parse_power(""), PowerState::Unknown);
    }
}
