//! `provd vm deploy --count N --name-pattern web-{n}` (pure): the names a batch stands
//! for, and where each goes across the candidate hypervisors.
//!
//! A batch is idempotent by name: a name that already exists on any candidate is reported
//! as there and not made again, so rerunning a batch after a partial failure makes only
//! what is missing. Placement accounts for what the batch itself has already put on each
//! host (a plan never counts the same free memory twice):
//! - **spread**: each VM goes to the host with the most memory left, then the fewest
//!   domains (the single-VM `placement::choose` rule, applied N times);
//! - **pack**: each VM goes to the host with the least memory left that still fits it
//!   (best fit), so whole hosts stay empty for large VMs or maintenance.
//!
//! A name that fits nowhere is reported with the reason; the others are still placed.

use serde::Serialize;
use std::collections::BTreeMap;

pub use crate::config::Placement;

/// The largest batch one command makes (a typo such as `--count 5000` is refused, not
/// started).
pub const MAX_COUNT: u32 = 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("--name-pattern {0:?} has no {{n}} (e.g. web-{{n}}): every VM needs its own name")]
    NoNumber(String),
    #[error("--name-pattern {0:?} has {{n}} more than once")]
    TwoNumbers(String),
    #[error("--count must be between 1 and {MAX_COUNT} (got {0})")]
    Count(u32),
    #[error("--start must be at least 1 (got 0)")]
    Start,
}

/// The names of a batch: `pattern` with `{n}` replaced by `first`, `first + 1`, ...
/// `{n:03}` pads with zeros to three digits (so names sort as numbers do).
pub fn names(pattern: &str, count: u32, first: u32) -> Result<Vec<String>, BatchError> {
    if !(1..=MAX_COUNT).contains(&count) {
        return Err(BatchError::Count(count));
    }
    if first == 0 {
        return Err(BatchError::Start);
    }
    let (before, width, after) = split_pattern(pattern)?;
    Ok((first..first + count)
        .map(|n| format!("{before}{n:0width$}{after}"))
        .collect())
}

/// The text before `{n}` / `{n:0W}`, the width, and the text after.
fn split_pattern(pattern: &str) -> Result<(&str, usize, &str), BatchError> {
    let start = pattern.find("{n").ok_or_else(|| BatchError::NoNumber(pattern.into()))?;
    let rest = &pattern[start + 2..];
    let close = rest.find('}').ok_or_else(|| BatchError::NoNumber(pattern.into()))?;
    let width = match &rest[..close] {
        "" => 0,
        spec => spec
            .strip_prefix(":0")
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|w| (1..=9).contains(w))
            .ok_or_else(|| BatchError::NoNumber(pattern.into()))?,
    };
    let after = &rest[close + 1..];
    if after.contains("{n") {
        return Err(BatchError::TwoNumbers(pattern.into()));
    }
    Ok((&pattern[..start], width, after))
}

/// One candidate hypervisor as the batch planner sees it.
#[derive(Debug, Clone)]
pub struct Host {
    pub uri: String,
    pub free_memory_mib: u64,
    pub domains: usize,
    pub has_template: bool,
    /// Every domain name defined there.
    pub names: Vec<String>,
}

/// What happens to one name of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "plan", rename_all = "kebab-case")]
pub enum Slot {
    /// Already defined on this host: left alone.
    Exists { host: usize },
    /// To be deployed on this host.
    Place { host: usize },
    /// Nowhere to put it, and why.
    NoRoom { reason: String },
}

/// Where each name of the batch goes (in the order of `names`).
pub fn plan(names: &[String], hosts: &[Host], need_mib: u64, placement: Placement) -> Vec<(String, Slot)> {
    let existing: BTreeMap<&str, usize> = hosts
        .iter()
        .enumerate()
        .flat_map(|(i, h)| h.names.iter().map(move |n| (n.as_str(), i)))
        .collect();
    // Memory and domain counts as the plan fills them.
    let mut left: Vec<(u64, usize)> = hosts.iter().map(|h| (h.free_memory_mib, h.domains)).collect();
    names
        .iter()
        .map(|name| {
            if let Some(&host) = existing.get(name.as_str()) {
                return (name.clone(), Slot::Exists { host });
            }
            let fitting = (0..hosts.len()).filter(|&i| hosts[i].has_template && left[i].0 >= need_mib);
            let chosen = match placement {
                // On a full tie the first candidate wins (a plan is the same every run).
                Placement::Spread => fitting.max_by(|&a, &b| {
                    left[a]
                        .0
                        .cmp(&left[b].0)
                        .then(left[b].1.cmp(&left[a].1))
                        .then(b.cmp(&a))
                }),
                Placement::Pack => fitting.min_by(|&a, &b| {
                    left[a]
                        .0
                        .cmp(&left[b].0)
                        .then(left[b].1.cmp(&left[a].1))
                        .then(a.cmp(&b))
                }),
            };
            let slot = match chosen {
                Some(host) => {
                    left[host].0 -= need_mib;
                    left[host].1 += 1;
                    Slot::Place { host }
                }
                None => Slot::NoRoom {
                    reason: no_room_reason(hosts, &left, need_mib),
                },
            };
            (name.clone(), slot)
        })
        .collect()
}

fn no_room_reason(hosts: &[Host], left: &[(u64, usize)], need_mib: u64) -> String {
    let with_template: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].has_template).collect();
    match with_template.iter().max_by_key(|&&i| left[i].0) {
        None => "no candidate hypervisor holds the template".into(),
        Some(&i) => format!(
            "no hypervisor has {need_mib} MiB left for it (most left: {} MiB on {})",
            left[i].0, hosts[i].uri
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(uri: &str, free: u64, names: &[&str]) -> Host {
        Host {
            uri: uri.into(),
            free_memory_mib: free,
            domains: names.len(),
            has_template: true,
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn hosts_of(p: &[(String, Slot)]) -> Vec<Option<usize>> {
        p.iter()
            .map(|(_, s)| match s {
                Slot::Place { host } => Some(*host),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn names_from_a_pattern() {
        assert_eq!(names("web-{n}", 3, 1).unwrap(), ["web-1", "web-2", "web-3"]);
        assert_eq!(names("db{n:03}.lab", 2, 9).unwrap(), ["db009.lab", "db010.lab"]);
        assert_eq!(names("web", 2, 1), Err(BatchError::NoNumber("web".into())));
        assert_eq!(names("web-{n:x}", 2, 1), Err(BatchError::NoNumber("web-{n:x}".into())));
        assert_eq!(names("{n}-{n}", 2, 1), Err(BatchError::TwoNumbers("{n}-{n}".into())));
        assert_eq!(names("web-{n}", 0, 1), Err(BatchError::Count(0)));
        assert_eq!(
            names("web-{n}", MAX_COUNT + 1, 1),
            Err(BatchError::Count(MAX_COUNT + 1))
        );
        assert_eq!(names("web-{n}", 1, 0), Err(BatchError::Start));
    }

    #[test]
    fn spread_alternates_and_counts_what_it_placed() {
        let hosts = [host("a", 1000, &[]), host("b", 1000, &[])];
        let names = names("w{n}", 4, 1).unwrap();
        assert_eq!(
            hosts_of(&plan(&names, &hosts, 100, Placement::Spread)),
            [Some(0), Some(1), Some(0), Some(1)]
        );
        // A host with more room takes VMs until the two are level.
        let hosts = [host("a", 1000, &[]), host("b", 700, &[])];
        assert_eq!(
            hosts_of(&plan(&names, &hosts, 100, Placement::Spread)),
            [Some(0), Some(0), Some(0), Some(1)],
            "level at 700 MiB, b has fewer domains"
        );
    }

    #[test]
    fn pack_fills_the_fullest_host_that_still_fits() {
        let hosts = [host("a", 1000, &[]), host("b", 250, &[])];
        let names = names("w{n}", 4, 1).unwrap();
        // b fits two, then a takes the rest.
        assert_eq!(
            hosts_of(&plan(&names, &hosts, 100, Placement::Pack)),
            [Some(1), Some(1), Some(0), Some(0)]
        );
    }

    #[test]
    fn a_rerun_leaves_what_exists_and_places_the_rest() {
        let hosts = [host("a", 1000, &["w1", "other"]), host("b", 1000, &["w3"])];
        let p = plan(&names("w{n}", 4, 1).unwrap(), &hosts, 100, Placement::Spread);
        assert_eq!(p[0].1, Slot::Exists { host: 0 });
        assert_eq!(p[2].1, Slot::Exists { host: 1 });
        assert!(matches!(p[1].1, Slot::Place { .. }) && matches!(p[3].1, Slot::Place { .. }));
    }

    #[test]
    fn what_fits_nowhere_says_why_and_the_rest_is_placed() {
        let mut lacking = host("b", 9000, &[]);
        lacking.has_template = false;
        let hosts = [host("a", 250, &[]), lacking];
        let p = plan(&names("w{n}", 3, 1).unwrap(), &hosts, 100, Placement::Spread);
        assert_eq!(hosts_of(&p), [Some(0), Some(0), None]);
        match &p[2].1 {
            Slot::NoRoom { reason } => assert!(reason.contains("50 MiB on a"), "{reason}"),
            other => panic!("{other:?}"),
        }
        let p = plan(
            &names("w{n}", 1, 1).unwrap(),
            &[host("a", 1, &[])][..0],
            1,
            Placement::Pack,
        );
        assert!(matches!(&p[0].1, Slot::NoRoom { reason } if reason.contains("template")));
    }
}
