//! provd's marks in a domain's libvirt metadata (namespace `clone_xml::METADATA_NS`):
//! `<template>` once `provd vm sysprep` has prepared it (with `family` and `version` on a
//! frozen version of a template, `provd vm template version`), `<clone-of>` on every clone,
//! naming its template by UUID (names can change), the template version it came from, and
//! whether it is linked (depends on the template's disk), and `<nocloud>` with the seed URL
//! a deployed VM was given.
//!
//! They live in libvirt, not in provd's store, so they travel with the domain (migration,
//! `virsh dumpxml`) and any provd pointed at that hypervisor sees them.

use xmltree::{Element, XMLNode};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmMeta {
    pub template: Option<TemplateMark>,
    pub clone_of: Option<CloneMark>,
    pub nocloud: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateMark {
    /// When virt-sysprep ran (RFC 3339).
    pub sysprepped: String,
    /// The virt-sysprep operations that ran, comma-separated.
    pub operations: String,
    /// On a frozen version: the template it is a version of, and its number (from 1).
    pub version: Option<VersionMark>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMark {
    pub family: String,
    pub number: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneMark {
    pub template_name: String,
    pub template_uuid: String,
    pub linked: bool,
    /// The version the template was, when it was a frozen version.
    pub version: Option<VersionMark>,
}

fn attr(e: &Element, name: &str) -> String {
    e.attributes.get(name).cloned().unwrap_or_default()
}

/// `family` and `version` together, or no version (a number that does not parse is none).
fn version_of(e: &Element) -> Option<VersionMark> {
    let family = e.attributes.get("family")?;
    let number = e.attributes.get("version")?.parse().ok().filter(|&n| n > 0)?;
    Some(VersionMark {
        family: family.clone(),
        number,
    })
}

impl VmMeta {
    /// Read what libvirt returns for our namespace; anything unreadable counts as no mark.
    pub fn parse(xml: &str) -> VmMeta {
        let Ok(root) = Element::parse(xml.as_bytes()) else {
            return VmMeta::default();
        };
        VmMeta {
            template: root.get_child("template").map(|t| TemplateMark {
                sysprepped: attr(t, "sysprepped"),
                operations: attr(t, "operations"),
                version: version_of(t),
            }),
            clone_of: root.get_child("clone-of").map(|c| CloneMark {
                template_name: attr(c, "name"),
                template_uuid: attr(c, "uuid"),
                linked: attr(c, "linked") == "yes",
                version: version_of(c),
            }),
            nocloud: root.get_child("nocloud").map(|n| attr(n, "url")),
        }
    }

    /// The element libvirt stores (it adds the namespace prefix itself).
    pub fn to_xml(&self) -> String {
        let mut root = Element::new("vm");
        let mut push = |name: &str, attrs: &[(&str, &str)]| {
            let mut e = Element::new(name);
            for (k, v) in attrs {
                e.attributes.insert((*k).into(), (*v).into());
            }
            root.children.push(XMLNode::Element(e));
        };
        if let Some(t) = &self.template {
            let number = t.version.as_ref().map(|v| v.number.to_string());
            let mut attrs = vec![("sysprepped", t.sysprepped.as_str()), ("operations", &t.operations)];
            if let (Some(v), Some(n)) = (&t.version, &number) {
                attrs.extend([("family", v.family.as_str()), ("version", n.as_str())]);
            }
            push("template", &attrs);
        }
        if let Some(c) = &self.clone_of {
            let number = c.version.as_ref().map(|v| v.number.to_string());
            let mut attrs = vec![
                ("name", c.template_name.as_str()),
                ("uuid", &c.template_uuid),
                ("linked", if c.linked { "yes" } else { "no" }),
            ];
            if let (Some(v), Some(n)) = (&c.version, &number) {
                attrs.extend([("family", v.family.as_str()), ("version", n.as_str())]);
            }
            push("clone-of", &attrs);
        }
        if let Some(url) = &self.nocloud {
            push("nocloud", &[("url", url)]);
        }
        let mut out = Vec::new();
        root.write_with_config(
            &mut out,
            xmltree::EmitterConfig::new().write_document_declaration(false),
        )
        .expect("writing XML to memory cannot fail");
        String::from_utf8(out).expect("UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_round_trip_and_garbage_means_none() {
        let m = VmMeta {
            template: Some(TemplateMark {
                sysprepped: "2026-11-24T01:00:00Z".into(),
                operations: "machine-id,ssh-hostkeys".into(),
                version: Some(VersionMark {
                    family: "centos.template".into(),
                    number: 3,
                }),
            }),
            clone_of: Some(CloneMark {
                template_name: "centos.template".into(),
                template_uuid: "0b6ff8a8-4b38-4a3a-8f0a-3f4e0a6f6d11".into(),
                linked: true,
                version: Some(VersionMark {
                    family: "centos.template".into(),
                    number: 2,
                }),
            }),
            nocloud: Some("http://10.0.0.1:8080/nocloud/t/".into()),
        };
        assert_eq!(VmMeta::parse(&m.to_xml()), m);
        // libvirt hands the element back with its prefix and namespace.
        let from_libvirt = "<provd:vm xmlns:provd=\"https://provd.dev/xmlns/vm/1\"><provd:clone-of name=\"t\" uuid=\"u\" linked=\"no\"/></provd:vm>";
        let back = VmMeta::parse(from_libvirt);
        let c = back.clone_of.unwrap();
        assert!(
            !c.linked && c.version.is_none(),
            "marks from before versions read as unversioned"
        );
        let bad = "<vm><template sysprepped=\"x\" operations=\"\" family=\"f\" version=\"0\"/></vm>";
        assert_eq!(VmMeta::parse(bad).template.unwrap().version, None, "version 0 is none");
        assert_eq!(VmMeta::parse("not xml"), VmMeta::default());
    }
}
