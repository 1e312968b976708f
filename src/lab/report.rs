//! What the lab tells its operator: per-VM summaries (seconds from power-on to `installed`
//! and to the local boot, and whether the VM made it), the table printed at the end of
//! `provd lab up` (also written as `summary.json`), and the console lines shown for a VM that
//! did not make it. All pure: the watch loop in `lab` feeds them.

use super::progress::{Progress, Stage};
use super::vm::{Firmware, VmSpec};
use crate::mac::MacAddr;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct VmSummary {
    pub name: String,
    pub firmware: Firmware,
    pub mac: MacAddr,
    pub powered_on: u64,
    pub progress: Progress,
    /// Seconds from power-on to `installed`, to the local boot, and (a VM that deploys an
    /// image) to provd's pool verifying it.
    pub to_installed: Option<u64>,
    pub to_local_boot: Option<u64>,
    #[serde(default)]
    pub to_ready: Option<u64>,
    /// Reached the local boot without a failure.
    pub ok: bool,
}

pub fn summary(vm: &VmSpec, powered_on: u64, p: Progress) -> VmSummary {
    let since = |s: Stage| p.at(s).map(|t| t.saturating_sub(powered_on));
    VmSummary {
        name: vm.name.clone(),
        firmware: vm.firmware,
        mac: vm.mac,
        powered_on,
        to_installed: since(Stage::Installed),
        to_local_boot: since(Stage::LocalBoot),
        to_ready: since(Stage::Ready),
        ok: p.succeeded(),
        progress: p,
    }
}

/// The end-of-run table, one line per VM and a note when the run timed out. A READY column
/// (provd's pool verified the installed hypervisor) only when some VM deploys an image: the
/// mini-install's hosts never become ready, and a column of dashes would say they failed to.
pub fn table(summaries: &[VmSummary], timed_out: bool) -> String {
    let with_ready = summaries.iter().any(|s| s.progress.wants_ready);
    let ready_head = if with_ready {
        format!(" {:>6}", "READY")
    } else {
        String::new()
    };
    let mut out = format!(
        "{:<8} {:<10} {:<22} {:>6} {:>10} {:>11}{ready_head} {:<9} RESULT\n",
        "VM", "FW", "FIRST STAGE FILE", "DHCP", "INSTALLED", "LOCAL BOOT", "DISK"
    );
    for s in summaries {
        let p = &s.progress;
        let file = match (p.tftp_files.first(), &p.http_first_stage) {
            (Some(f), _) => f.clone(),
            (None, Some(url)) => format!("HTTP {}", url.rsplit('/').next().unwrap_or(url)),
            (None, None) if s.firmware == Firmware::Bios => "(iPXE option ROM)".into(),
            (None, None) => "-".into(),
        };
        let t = |v: Option<u64>| v.map(|x| format!("{x}s")).unwrap_or_else(|| "-".into());
        let result = if s.ok {
            "ok".to_string()
        } else if let Some(f) = &p.failed {
            format!("FAILED: {f}")
        } else if p.at(p.goal()).is_some() && !p.secure_boot_proven() {
            format!(
                "FAILED: Secure Boot not shown enforced (installer: {}, installed system: {})",
                yes_no(p.secure_boot.installer),
                yes_no(p.secure_boot.system)
            )
        } else {
            format!("stopped after {}", p.last().map(Stage::name).unwrap_or("power-on"))
        };
        let ready = if with_ready {
            format!(" {:>6}", t(s.to_ready))
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{:<8} {:<10} {:<22} {:>6} {:>10} {:>11}{ready} {:<9} {}\n",
            s.name,
            s.firmware.name(),
            file,
            t(p.at(Stage::Dhcp).map(|x| x.saturating_sub(s.powered_on))),
            t(s.to_installed),
            t(s.to_local_boot),
            if p.disk_booted { "booted" } else { "-" },
            result
        ));
    }
    if timed_out {
        out.push_str("(timed out waiting for every VM)\n");
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The last `n` lines of a console, in order.
pub fn console_tail(console: &str, n: usize) -> String {
    let lines: Vec<&str> = console.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(firmware: Firmware) -> VmSpec {
        VmSpec::new(
            1,
            firmware,
            "52:54:00:00:66:01".parse().unwrap(),
            "lab-1",
            std::path::Path::new("/w"),
        )
    }

    fn reached(stages: &[(Stage, u64)]) -> Progress {
        Progress {
            reached: stages.iter().map(|(s, t)| (*s, *t, String::new())).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_vm_is_ok_only_when_it_booted_locally_without_a_failure() {
        let done = reached(&[(Stage::Dhcp, 103), (Stage::Installed, 160), (Stage::LocalBoot, 175)]);
        let s = summary(&spec(Firmware::Uefi), 100, done.clone());
        assert_eq!((s.to_installed, s.to_local_boot, s.ok), (Some(60), Some(75), true));

        let mut failed = done;
        failed.failed = Some("installer: disk too small".into());
        assert!(!summary(&spec(Firmware::Uefi), 100, failed).ok);

        let stuck = reached(&[(Stage::Dhcp, 103), (Stage::Kernel, 120)]);
        let s = summary(&spec(Firmware::Bios), 100, stuck);
        assert_eq!((s.to_installed, s.to_local_boot, s.ok), (None, None, false));
    }

    #[test]
    fn the_table_says_where_each_vm_stopped_and_why() {
        let ok = summary(
            &spec(Firmware::Uefi),
            100,
            Progress {
                tftp_files: vec!["snponly.efi".into()],
                disk_booted: true,
                ..reached(&[(Stage::Dhcp, 102), (Stage::Installed, 150), (Stage::LocalBoot, 170)])
            },
        );
        let stuck = summary(
            &spec(Firmware::Bios),
            100,
            reached(&[(Stage::Dhcp, 104), (Stage::Kernel, 130)]),
        );
        let failed = summary(
            &spec(Firmware::Bios),
            100,
            Progress {
                failed: Some("%post: exit 1".into()),
                ..reached(&[(Stage::Dhcp, 104)])
            },
        );
        let text = table(&[ok, stuck, failed], true);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("VM ") && lines[0].ends_with("RESULT"));
        assert!(
            lines[1].contains("snponly.efi")
                && lines[1].contains("2s")
                && lines[1].contains("50s")
                && lines[1].contains("70s")
                && lines[1].contains("booted")
                && lines[1].ends_with(" ok"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("(iPXE option ROM)") && lines[2].ends_with("stopped after kernel"),
            "{}",
            lines[2]
        );
        assert!(lines[3].ends_with("FAILED: %post: exit 1"), "{}", lines[3]);
        assert_eq!(lines[4], "(timed out waiting for every VM)");
        assert!(!lines[0].contains("READY"), "no image VM, no READY column");
    }

    #[test]
    fn an_image_lab_shows_when_each_hypervisor_became_ready() {
        let image = |stages: &[(Stage, u64)]| Progress {
            wants_ready: true,
            disk_booted: true,
            ..reached(stages)
        };
        let ready = summary(
            &spec(Firmware::Bios),
            100,
            image(&[
                (Stage::Dhcp, 106),
                (Stage::Installed, 244),
                (Stage::LocalBoot, 263),
                (Stage::Ready, 393),
            ]),
        );
        let not_yet = summary(
            &spec(Firmware::Uefi),
            100,
            image(&[(Stage::Dhcp, 107), (Stage::Installed, 260), (Stage::LocalBoot, 285)]),
        );
        assert_eq!((ready.to_ready, ready.ok), (Some(293), true));
        assert_eq!(
            (not_yet.to_ready, not_yet.ok),
            (None, false),
            "an image VM is ok only when ready"
        );
        let text = table(&[ready, not_yet], false);
        let lines: Vec<&str> = text.lines().collect();
        let col = lines[0].find("READY").expect("a READY column");
        assert_eq!(&lines[1][col - 1..col + 5], "  293s", "{text}");
        assert_eq!(lines[2][col..col + 5].trim(), "-", "{text}");
        assert!(lines[2].ends_with("stopped after local boot"), "{text}");
    }

    #[test]
    fn the_console_tail_keeps_the_last_lines_in_order() {
        let console: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        assert_eq!(console_tail(&console, 3), "line 18\nline 19\nline 20");
        assert_eq!(console_tail("only\n", 15), "only");
        assert_eq!(console_tail("", 15), "");
    }
}
