//! The network model's kickstart (issue 35) read by pykickstart's own validator, for both
//! EL versions provd installs: the README's worked example (LACP bond, management,
//! migration and tenant VLANs, a bridge on each) with a static migration address, as
//! `network` lines and the %post that writes the VLANs' keyfiles. Two VLANs on one bond as
//! `network --vlanid` lines are refused by the same validator: the reason the model renders
//! VLANs as keyfiles.

use provd::netmodel::{Addressing, NetModel, kickstart};
use std::collections::BTreeMap;
use std::process::Command;

const EXAMPLE: &str = r#"
ports = [{ name = "ens1f0" }, { name = "ens1f1" }]
bonds = [{ name = "bond0", members = ["ens1f0", "ens1f1"], mode = "802.3ad", lacp_rate = "fast", xmit_hash = "layer3+4" }]
vlans = [{ id = 10, on = "bond0" }, { id = 20, on = "bond0" }, { id = 100, on = "bond0" }]
bridges = [
  { name = "br-boot", on = "bond0", role = "boot" },
  { name = "br-mgmt", on = "bond0.10", role = "management" },
  { name = "br-mig", on = "bond0.20", role = "migration" },
  { name = "br-t100", on = "bond0.100", role = "tenant" },
]
"#;

fn validate(version: &str, lines: &[String], post: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("net.ks");
    let text = format!(
        "text\nlang en_US.UTF-8\nkeyboard us\ntimezone UTC --utc\nrootpw --lock\n{}\nreboot\n%packages\n@core\n%end\n%post\n{post}%end\n",
        lines.join("\n")
    );
    std::fs::write(&ks, &text).unwrap();
    let out = Command::new("ksvalidator")
        .args(["-v", version])
        .arg(&ks)
        .output()
        .expect("ksvalidator (pip's pykickstart; lab/deps.sh installs it)");
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        format!("{said}\n--- {version} kickstart:\n{text}"),
    )
}

#[test]
fn the_worked_example_is_valid_el8_and_el9_kickstart() {
    let model: NetModel = toml::from_str(EXAMPLE).unwrap();
    assert_eq!(provd::netmodel::check::check(&model), []);
    let mut addresses = BTreeMap::new();
    addresses.insert(
        "br-mig".to_string(),
        Addressing::Static {
            address: "10.20.0.11/24".parse().unwrap(),
            gateway: None,
        },
    );
    let lines = kickstart::network_lines(&model, &addresses);
    let post = kickstart::post_script(&model, &addresses);
    for version in ["RHEL8", "RHEL9"] {
        let (ok, said) = validate(version, &lines, &post);
        assert!(ok, "{said}");
    }
    // The %post, run by sh into a scratch root: each keyfile lands byte for byte, 0600.
    let root = tempfile::tempdir().unwrap();
    let script = post.replace("/etc/NetworkManager", &root.path().join("nm").display().to_string());
    let out = Command::new("sh").args(["-e", "-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for (name, text) in kickstart::nm_keyfiles(&model, &addresses) {
        let path = root.path().join("nm/system-connections").join(&name);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "{name}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600,
            "{name}"
        );
    }
    // What the model does not render, and why: a second VLAN line on the same bond.
    let mut vlan_lines = lines.clone();
    for id in [10, 20] {
        vlan_lines.push(format!(
            "network --device=bond0 --vlanid={id} --interfacename=bond0.{id} --noipv4 --noipv6"
        ));
    }
    let (ok, said) = validate("RHEL9", &vlan_lines, &post);
    assert!(!ok && said.contains("already been defined"), "{said}");
}
