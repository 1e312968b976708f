//! Draining a hypervisor: mark it drained (no new placements), then live-migrate each of
//! its running domains to another ready, undrained hypervisor of its site with the existing
//! migrate code (peer-to-peer, tunnelled, over the hosts' own TLS).
//!
//! Where each domain goes (`choose`, pure): the candidate with the most free memory that
//! fits it, ties broken by fewest running domains; the chosen host's free memory and count
//! are updated before the next domain is placed, so one drain does not pile everything
//! on the host that looked emptiest at the start.

use super::Capacity;
use serde::Serialize;

/// A hypervisor a domain may move to.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub host: String,
    /// `qemu+tls://<fqdn>/system` (the pool's own pkipath is added when connecting).
    pub uri: String,
    /// What the source's libvirtd dials instead: the candidate's migration address.
    pub via: Option<String>,
    pub capacity: Capacity,
}

/// The index of the candidate for a domain of `memory_mib`, if any fits.
pub fn choose(candidates: &[Candidate], memory_mib: u64) -> Option<usize> {
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.capacity.free_memory_mib >= memory_mib)
        .max_by(|(_, a), (_, b)| {
            a.capacity
                .free_memory_mib
                .cmp(&b.capacity.free_memory_mib)
                .then(b.capacity.running_domains.cmp(&a.capacity.running_domains))
        })
        .map(|(i, _)| i)
}

/// What happened to one domain.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Moved {
    pub domain: String,
    pub to: Option<String>,
    pub error: Option<String>,
}

/// Move every running domain of `source` (blocking: libvirt calls and migrations).
/// `pki` is the query the pool connects with (`?pkipath=...`).
pub fn migrate_all(
    source_uri: &str,
    candidates: &mut [Candidate],
    pki: &str,
) -> Result<Vec<Moved>, crate::vm::VmError> {
    let source = crate::vm::Hypervisor::connect(&format!("{source_uri}{pki}"))?;
    let running: Vec<_> = source.list()?.into_iter().filter(|d| d.state == "running").collect();
    let mut out = Vec::new();
    for d in running {
        let Some(i) = choose(candidates, d.memory_mib) else {
            out.push(Moved {
                domain: d.name.clone(),
                to: None,
                error: Some(format!(
                    "no ready, undrained hypervisor of the site has {} MiB free",
                    d.memory_mib
                )),
            });
            continue;
        };
        let dest = format!("{}{pki}", candidates[i].uri);
        match crate::vm::deploy::migrate_live(&source, &d.name, &dest, candidates[i].via.as_deref()) {
            Ok(_) => {
                let c = &mut candidates[i].capacity;
                c.free_memory_mib = c.free_memory_mib.saturating_sub(d.memory_mib);
                c.running_domains += 1;
                out.push(Moved {
                    domain: d.name.clone(),
                    to: Some(candidates[i].host.clone()),
                    error: None,
                });
            }
            Err(e) => out.push(Moved {
                domain: d.name.clone(),
                to: None,
                error: Some(e.to_string()),
            }),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(host: &str, free: u64, running: usize) -> Candidate {
        Candidate {
            host: host.into(),
            uri: format!("qemu+tls://{host}/system"),
            via: None,
            capacity: Capacity {
                free_memory_mib: free,
                running_domains: running,
                ..Default::default()
            },
        }
    }

    #[test]
    fn most_free_memory_that_fits_then_fewest_domains() {
        let c = [
            cand("a", 1000, 0),
            cand("b", 4000, 5),
            cand("c", 4000, 2),
            cand("d", 100, 0),
        ];
        assert_eq!(choose(&c, 512), Some(2), "b and c tie on memory; c runs fewer");
        assert_eq!(choose(&c, 4001), None, "nothing fits");
        assert_eq!(choose(&[], 1), None);
    }
}
