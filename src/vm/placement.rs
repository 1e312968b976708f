//! Where `provd vm deploy` puts a new VM (pure): among the hypervisors that hold the
//! template and have no domain of that name yet, the one with the most free memory,
//! provided the VM's memory fits in it (Salt's `virt.init` places the same way); on equal
//! free memory, the one with fewer domains.

#[derive(Debug, Clone)]
pub struct Candidate {
    pub uri: String,
    pub free_memory_mib: u64,
    pub has_template: bool,
    pub name_taken: bool,
    /// Domains defined there (the tie-break).
    pub domains: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlacementError {
    #[error("no hypervisor was given")]
    NoCandidates,
    #[error(
        "no candidate hypervisor holds the template {0:?} (copy it there first: provd vm template push {0} --site SITE)"
    )]
    NoTemplate(String),
    #[error("a domain named {name:?} already exists on {uris}")]
    NameTaken { name: String, uris: String },
    #[error("no hypervisor has {need} MiB free (most free: {best} MiB on {uri})")]
    NoRoom { need: u64, best: u64, uri: String },
}

/// The index of the chosen candidate.
pub fn choose(cands: &[Candidate], template: &str, name: &str, need_mib: u64) -> Result<usize, PlacementError> {
    if cands.is_empty() {
        return Err(PlacementError::NoCandidates);
    }
    let taken: Vec<&str> = cands.iter().filter(|c| c.name_taken).map(|c| c.uri.as_str()).collect();
    if !taken.is_empty() {
        // One name, one VM across the pool: a second "web1" elsewhere is a mistake.
        return Err(PlacementError::NameTaken {
            name: name.into(),
            uris: taken.join(", "),
        });
    }
    let (i, best) = cands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.has_template)
        .max_by(|(_, a), (_, b)| {
            a.free_memory_mib
                .cmp(&b.free_memory_mib)
                .then(b.domains.cmp(&a.domains))
        })
        .ok_or_else(|| PlacementError::NoTemplate(template.into()))?;
    if best.free_memory_mib < need_mib {
        return Err(PlacementError::NoRoom {
            need: need_mib,
            best: best.free_memory_mib,
            uri: best.uri.clone(),
        });
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(uri: &str, free: u64, has_template: bool) -> Candidate {
        Candidate {
            uri: uri.into(),
            free_memory_mib: free,
            has_template,
            name_taken: false,
            domains: 0,
        }
    }

    #[test]
    fn equal_free_memory_goes_to_the_host_with_fewer_domains() {
        let mut a = c("a", 8000, true);
        a.domains = 5;
        let mut b = c("b", 8000, true);
        b.domains = 2;
        assert_eq!(choose(&[a.clone(), b.clone()], "t", "vm", 1), Ok(1));
        assert_eq!(choose(&[b, a], "t", "vm", 1), Ok(0));
    }

    #[test]
    fn most_free_memory_among_those_with_the_template() {
        let cands = [c("a", 4000, true), c("b", 16000, false), c("c", 8000, true)];
        assert_eq!(
            choose(&cands, "t", "vm", 1024),
            Ok(2),
            "b is emptiest but lacks the template"
        );
        assert_eq!(
            choose(&cands, "t", "vm", 9000),
            Err(PlacementError::NoRoom {
                need: 9000,
                best: 8000,
                uri: "c".into()
            })
        );
        assert_eq!(
            choose(&[c("b", 1, false)], "t", "vm", 1),
            Err(PlacementError::NoTemplate("t".into()))
        );
        assert_eq!(choose(&[], "t", "vm", 1), Err(PlacementError::NoCandidates));
        let mut taken = c("a", 4000, true);
        taken.name_taken = true;
        assert!(matches!(
            choose(&[taken, c("c", 8000, true)], "t", "vm", 1),
            Err(PlacementError::NameTaken { .. })
        ));
    }
}
