//! Template versions: `provd vm template version TEMPLATE` freezes the template as it is now
//! into a new domain `TEMPLATE-vN` (a full copy of its disks, marked as version N of
//! TEMPLATE), so the template itself can be started, patched and sysprepped again while the
//! clones of earlier versions keep running on their own frozen disks.
//!
//! - A clone or deploy `--from TEMPLATE` uses its newest version when it has any (naming a
//!   version, `--from TEMPLATE-v2`, pins that one); the clone records the version it came
//!   from, and `provd vm list` shows it.
//! - A version is frozen: it is never started or sysprepped (that would change what its
//!   clones were made from), and it is not purged or undefined while a clone of it runs
//!   (linked clones of it, in any state, protect it as any template's do).
//!
//! Versions are marks in libvirt metadata, found by reading them, never by parsing names;
//! like every mark they are per hypervisor (`vm template push` copies a version with its
//! mark).

use super::clone::CloneRequest;
use super::metadata::{TemplateMark, VersionMark, VmMeta};
use super::{DomainSummary, Hypervisor, VmError};

/// The domain name of version `number` of `family`.
pub fn version_name(family: &str, number: u32) -> String {
    format!("{family}-v{number}")
}

/// One version of a template on one hypervisor.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Version {
    pub name: String,
    pub number: u32,
    /// Its clones here that run (or are paused), and all of them.
    pub running_clones: Vec<String>,
    pub clones: Vec<String>,
}

/// The newest of a family's versions (pure): the highest number.
pub fn newest(marks: &[(String, VersionMark)], family: &str) -> Option<(String, u32)> {
    marks
        .iter()
        .filter(|(_, v)| v.family == family)
        .max_by_key(|(_, v)| v.number)
        .map(|(name, v)| (name.clone(), v.number))
}

impl Hypervisor {
    /// Every domain here that is a frozen template version, with its mark.
    fn version_marks(&self) -> Result<Vec<(String, VersionMark)>, VmError> {
        let all = self.conn.list_all_domains(0).map_err(self.err("listing", "domains"))?;
        Ok(all
            .iter()
            .filter_map(|d| {
                let v = self.meta(d).template?.version?;
                Some((d.name().ok()?, v))
            })
            .collect())
    }

    /// What a clone `--from name` is made from: the newest version of `name` when it has
    /// versions here, else `name` itself.
    pub fn resolve_template(&self, name: &str) -> Result<String, VmError> {
        Ok(newest(&self.version_marks()?, name)
            .map(|(n, _)| n)
            .unwrap_or_else(|| name.to_string()))
    }

    /// The versions of `family` here, oldest first, with who was cloned from each.
    pub fn template_versions(&self, family: &str) -> Result<Vec<Version>, VmError> {
        // One pass over the domains: each is a version of `family`, a clone, or neither.
        let all = self.conn.list_all_domains(0).map_err(self.err("listing", "domains"))?;
        let mut out: Vec<Version> = Vec::new();
        let mut clones: Vec<(String, String, bool)> = Vec::new();
        for d in &all {
            let meta = self.meta(d);
            let name = d.name().map_err(self.err("reading", "a domain"))?;
            if let Some(v) = meta.template.and_then(|t| t.version).filter(|v| v.family == family) {
                out.push(Version {
                    name,
                    number: v.number,
                    running_clones: Vec::new(),
                    clones: Vec::new(),
                });
            } else if let Some(c) = meta.clone_of {
                clones.push((name, c.template_name, d.is_active().unwrap_or(false)));
            }
        }
        for (name, template, running) in clones {
            if let Some(v) = out.iter_mut().find(|v| v.name == template) {
                if running {
                    v.running_clones.push(name.clone());
                }
                v.clones.push(name);
            }
        }
        // libvirt lists domains in no set order: by name, so the answer is the same each time.
        for v in &mut out {
            v.clones.sort();
            v.running_clones.sort();
        }
        out.sort_by_key(|v| v.number);
        Ok(out)
    }

    /// Freeze `template` into its next version: a full clone named `TEMPLATE-vN`, marked as
    /// version N. The template must be a sysprepped template (not a version), shut off.
    pub fn freeze_version(
        &self,
        template: &str,
        progress: &mut dyn FnMut(super::clone::CloneEvent),
    ) -> Result<(DomainSummary, u32), VmError> {
        let d = self.domain(template)?;
        let mark = self
            .meta(&d)
            .template
            .ok_or_else(|| VmError::NotATemplate { name: template.into() })?;
        if let Some(v) = &mark.version {
            return Err(VmError::Frozen {
                name: template.into(),
                family: v.family.clone(),
                number: v.number,
                what: "version it",
            });
        }
        let number = newest(&self.version_marks()?, template).map_or(1, |(_, n)| n + 1);
        let name = version_name(template, number);
        // Exactly this template, never its newest version (a version of a version).
        self.clone_exact(&CloneRequest::plain(template, &name, false), progress)?;
        let frozen = VmMeta {
            template: Some(TemplateMark {
                version: Some(VersionMark {
                    family: template.into(),
                    number,
                }),
                ..mark
            }),
            clone_of: None,
            nocloud: None,
        };
        let dom = self.domain(&name)?;
        if let Err(e) = self.set_meta(&dom, &name, &frozen) {
            // Not marked means not a version: take the copy back rather than leave a stray.
            let _ = self.purge(&name, true);
            return Err(e);
        }
        // As marked now (a version), not as the copy was made (a clone).
        Ok((self.info(&name)?, number))
    }

    /// Refuse `what` on a frozen version (starting or sysprepping it changes what its
    /// clones were made from).
    pub(super) fn refuse_if_frozen(&self, name: &str, what: &'static str) -> Result<(), VmError> {
        match self.metadata(name)?.template.and_then(|t| t.version) {
            Some(v) => Err(VmError::Frozen {
                name: name.into(),
                family: v.family,
                number: v.number,
                what,
            }),
            None => Ok(()),
        }
    }

    /// Refuse to remove a version whose clones run here.
    pub(super) fn refuse_if_version_in_use(&self, name: &str) -> Result<(), VmError> {
        let Some(v) = self.metadata(name)?.template.and_then(|t| t.version) else {
            return Ok(());
        };
        let running: Vec<String> = self
            .template_versions(&v.family)?
            .into_iter()
            .find(|x| x.name == name)
            .map(|x| x.running_clones)
            .unwrap_or_default();
        if running.is_empty() {
            return Ok(());
        }
        Err(VmError::VersionInUse {
            name: name.into(),
            number: v.number,
            family: v.family,
            running,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(family: &str, number: u32) -> VersionMark {
        VersionMark {
            family: family.into(),
            number,
        }
    }

    #[test]
    fn the_newest_is_the_highest_number_of_that_family() {
        let marks = vec![
            ("a-v1".to_string(), mark("a", 1)),
            ("a-v10".to_string(), mark("a", 10)),
            ("a-v9".to_string(), mark("a", 9)),
            ("renamed".to_string(), mark("a", 11)),
            ("b-v12".to_string(), mark("b", 12)),
        ];
        assert_eq!(
            newest(&marks, "a"),
            Some(("renamed".into(), 11)),
            "by mark, not by name"
        );
        assert_eq!(newest(&marks, "c"), None);
        assert_eq!(version_name("centos.template", 3), "centos.template-v3");
    }

    /// On libvirt's test driver (clone.rs's fixture): versions freeze, clones follow the
    /// newest, a version is frozen, and one with a running clone is not purged.
    #[test]
    fn versions_on_the_test_driver() {
        let (_d, h) = super::super::clone::tests::driver();
        let dom = h.domain("tpl").unwrap();
        let mark = TemplateMark {
            sysprepped: "2026-12-06T00:00:00Z".into(),
            operations: "machine-id".into(),
            version: None,
        };
        assert!(matches!(
            h.freeze_version("tpl", &mut |_| {}),
            Err(VmError::NotATemplate { .. })
        ));
        let meta = VmMeta {
            template: Some(mark),
            ..Default::default()
        };
        h.set_meta(&dom, "tpl", &meta).unwrap();

        let (v1, n) = h.freeze_version("tpl", &mut |_| {}).unwrap();
        assert_eq!((v1.name.as_str(), n), ("tpl-v1", 1));
        assert_eq!((v1.template.as_deref(), v1.template_version), (Some("tpl"), Some(1)));
        let web1 = h
            .clone_domain(&CloneRequest::plain("tpl", "web1", false), &mut |_| {})
            .unwrap();
        assert_eq!(
            (web1.template.as_deref(), web1.template_version),
            (Some("tpl"), Some(1))
        );
        assert_eq!(h.metadata("web1").unwrap().clone_of.unwrap().template_name, "tpl-v1");

        let (v2, n) = h.freeze_version("tpl", &mut |_| {}).unwrap();
        assert_eq!((v2.name.as_str(), n), ("tpl-v2", 2));
        let web2 = h
            .clone_domain(&CloneRequest::plain("tpl", "web2", false), &mut |_| {})
            .unwrap();
        assert_eq!(web2.template_version, Some(2), "a clone follows the newest version");
        let pinned = h
            .clone_domain(&CloneRequest::plain("tpl-v1", "web3", false), &mut |_| {})
            .unwrap();
        assert_eq!(pinned.template_version, Some(1), "naming a version pins it");

        for refused in [h.start("tpl-v1"), h.freeze_version("tpl-v1", &mut |_| {}).map(|_| ())] {
            assert!(matches!(refused, Err(VmError::Frozen { .. })), "{refused:?}");
        }
        let listed = h.template_versions("tpl").unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|v| (v.name.as_str(), v.clones.clone()))
                .collect::<Vec<_>>(),
            [
                ("tpl-v1", vec!["web1".to_string(), "web3".into()]),
                ("tpl-v2", vec!["web2".to_string()])
            ]
        );

        h.start("web2").unwrap();
        match h.purge("tpl-v2", false) {
            Err(e @ VmError::VersionInUse { .. }) => assert!(e.to_string().contains("web2"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(h.undefine("tpl-v2"), Err(VmError::VersionInUse { .. })));
        h.destroy("web2").unwrap();
        h.purge("tpl-v2", false).unwrap();
        // The newest left is v1 again; the template itself is free to change.
        assert_eq!(h.resolve_template("tpl").unwrap(), "tpl-v1");
        h.start("tpl").unwrap();
    }
}
