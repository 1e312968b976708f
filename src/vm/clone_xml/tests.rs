//! Tests of `vm::clone_xml`.

use super::*;

const TEMPLATE: &str = r#"<domain type='kvm'>
  <name>centos.template</name>
  <uuid>0b6ff8a8-4b38-4a3a-8f0a-3f4e0a6f6d11</uuid>
  <metadata>
<provd:vm xmlns:provd="https://provd.dev/xmlns/vm/1"><provd:template sysprepped="2026-11-24T00:00:00Z"/></provd:vm>
<other:app xmlns:other="https://example.org/app"><keep/></other:app>
  </metadata>
  <memory unit='KiB'>1048576</memory>
  <os>
<type arch='x86_64' machine='q35'>hvm</type>
<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE_4M.fd</loader>
<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>/var/lib/libvirt/qemu/nvram/centos.template_VARS.fd</nvram>
  </os>
  <devices>
<disk type='file' device='disk'>
  <driver name='qemu' type='raw'/>
  <source file='/var/lib/libvirt/images/centos.template_system.img'/>
  <target dev='vda' bus='virtio'/>
</disk>
<disk type='file' device='disk'>
  <driver name='qemu' type='qcow2'/>
  <source file='/data/extra.qcow2'/>
  <backingStore/>
  <target dev='vdb' bus='virtio'/>
</disk>
<disk type='file' device='disk'>
  <driver name='qemu' type='raw'/>
  <source file='/data/shared.raw'/>
  <target dev='vdc' bus='virtio'/>
  <shareable/>
</disk>
<disk type='file' device='cdrom'>
  <source file='/iso/tools.iso'/>
  <target dev='sda' bus='sata'/>
  <readonly/>
</disk>
<interface type='bridge'>
  <mac address='52:54:00:aa:bb:01'/>
  <source bridge='br0'/>
  <target dev='vnet0'/>
  <model type='virtio'/>
</interface>
<interface type='bridge'>
  <mac address='52:54:00:aa:bb:02'/>
  <source bridge='br1'/>
  <model type='virtio'/>
</interface>
<graphics type='vnc' port='5900' autoport='no' websocket='5700' listen='127.0.0.1'/>
<serial type='file'><source path='/var/log/vm/centos.template.log'/><target port='0'/></serial>
  </devices>
</domain>"#;

fn macs() -> impl FnMut() -> MacAddr {
    let mut n = 0u8;
    move || {
        n += 1;
        MacAddr([0x52, 0x54, 0x00, 0x10, 0x20, n])
    }
}

#[test]
fn a_clone_gets_new_identity_and_own_disks_and_shares_the_rest() {
    let plan = plan_clone(TEMPLATE, "web1", false, &mut macs()).unwrap();
    let x = &plan.xml;
    assert!(
        x.contains("<name>web1</name>") && !x.contains("centos.template</name>"),
        "{x}"
    );
    assert!(!x.contains("<uuid>"), "libvirt gives the clone a new UUID");
    assert!(!x.contains("52:54:00:aa:bb:0"), "no MAC of the template survives: {x}");
    assert_eq!(plan.macs.len(), 2);
    assert!(x.contains("52:54:00:10:20:01") && x.contains("52:54:00:10:20:02"));
    assert!(!x.contains("vnet0"), "the template's tap name is dropped");
    assert!(x.contains("autoport=\"yes\"") && x.contains("port=\"-1\"") && !x.contains("websocket"));
    assert_eq!(
        plan.disks,
        [
            DiskCopy {
                target: "vda".into(),
                source: "/var/lib/libvirt/images/centos.template_system.img".into(),
                source_format: "raw".into(),
                dest: "/var/lib/libvirt/images/web1_system.img".into(),
            },
            DiskCopy {
                target: "vdb".into(),
                source: "/data/extra.qcow2".into(),
                source_format: "qcow2".into(),
                dest: "/data/web1-extra.qcow2".into(),
            },
        ]
    );
    assert!(x.contains("/var/lib/libvirt/images/web1_system.img") && x.contains("/data/web1-extra.qcow2"));
    assert!(!x.contains("<backingStore"), "libvirt reads the chain from the image");
    assert!(
        x.contains("/data/shared.raw") && x.contains("/iso/tools.iso"),
        "shared disks stay"
    );
    assert_eq!(
        plan.nvram,
        Some((
            "/var/lib/libvirt/qemu/nvram/centos.template_VARS.fd".into(),
            "/var/lib/libvirt/qemu/nvram/web1_VARS.fd".into()
        ))
    );
    assert!(x.contains(">/var/lib/libvirt/qemu/nvram/web1_VARS.fd<"), "{x}");
    assert!(!x.contains("sysprepped"), "the template mark is not inherited");
    assert!(
        x.contains("/var/log/vm/web1.log") && !x.contains("centos.template.log"),
        "own console log"
    );
    assert!(x.contains("https://example.org/app"), "others' metadata is kept");
}

#[test]
fn a_linked_clone_is_a_qcow2_overlay_whatever_the_template_format() {
    let plan = plan_clone(TEMPLATE, "web2", true, &mut macs()).unwrap();
    assert_eq!(
        plan.disks[0].dest,
        PathBuf::from("/var/lib/libvirt/images/web2_system.qcow2")
    );
    assert_eq!(plan.disks[0].source_format, "raw");
    assert!(
        !plan
            .xml
            .contains("type=\"raw\"/>\n      <source file=\"/var/lib/libvirt/images/web2")
    );
    let parsed = Element::parse(plan.xml.as_bytes()).unwrap();
    let first_disk = parsed.get_child("devices").unwrap().get_child("disk").unwrap();
    assert_eq!(first_disk.get_child("driver").unwrap().attributes["type"], "qcow2");
}

#[test]
fn block_disks_are_refused_with_the_device_named() {
    let xml = "<domain><name>t</name><devices><disk type='block' device='disk'><source dev='/dev/sdb'/><target dev='vdb' bus='virtio'/></disk></devices></domain>";
    assert_eq!(
        plan_clone(xml, "c", false, &mut macs()).unwrap_err(),
        CloneXmlError::UnclonableDisk {
            target: "vdb".into(),
            kind: "block".into()
        }
    );
    assert!(matches!(
        plan_clone("<domain", "c", false, &mut macs()),
        Err(CloneXmlError::Parse(_))
    ));
}

#[test]
fn resizing_sets_vcpus_and_both_memory_elements() {
    let x = "<domain><name>t</name><memory unit='KiB'>1048576</memory><currentMemory unit='KiB'>1048576</currentMemory><vcpu placement='static'>1</vcpu></domain>";
    let y = set_size(x, Some(4), Some(2048)).unwrap();
    assert!(
        y.contains("<memory unit=\"MiB\">2048</memory>")
            && y.contains("<currentMemory unit=\"MiB\">2048</currentMemory>"),
        "{y}"
    );
    assert!(y.contains("<vcpu placement=\"static\">4</vcpu>"), "{y}");
    assert_eq!(set_size(x, None, None).unwrap().matches("1048576").count(), 2);
}

#[test]
fn a_nic_profile_replaces_the_templates_nics() {
    let nic = crate::config::NicSpec {
        name: "eth0".into(),
        bridge: "br9".into(),
        model: "e1000".into(),
        mac: None,
        rom: true,
    };
    let x = set_nics(TEMPLATE, &[(nic.clone(), MacAddr([0x52, 0x54, 0, 9, 9, 9]))]).unwrap();
    assert_eq!(x.matches("<interface").count(), 1, "{x}");
    assert!(x.contains("bridge=\"br9\"") && x.contains("52:54:00:09:09:09") && x.contains("type=\"e1000\""));
    assert!(!x.contains("br1"));
    assert!(
        !x.contains("<rom"),
        "libvirt's default unless the profile says rom = false"
    );
    let no_rom = crate::config::NicSpec { rom: false, ..nic };
    let x = set_nics(TEMPLATE, &[(no_rom, MacAddr([0x52, 0x54, 0, 9, 9, 9]))]).unwrap();
    assert!(x.contains("<rom enabled=\"no\""), "{x}");
}

#[test]
fn data_disks_take_the_next_free_device_names() {
    let disk = |name: &str, bus: &str| super::super::xml::AttachedDisk {
        spec: crate::config::DiskSpec {
            name: name.into(),
            size_gib: 1,
            format: "qcow2".into(),
            bus: bus.into(),
            dir: "/img".into(),
        },
        path: format!("/img/web1_{name}.qcow2").into(),
    };
    let x = add_disks(
        TEMPLATE,
        &[disk("data", "virtio"), disk("logs", "virtio"), disk("old", "sata")],
    )
    .unwrap();
    // The template uses vda, vdb, vdc (virtio) and sda (the CD-ROM).
    assert!(
        x.contains("<target dev=\"vdd\" bus=\"virtio\"") && x.contains("<target dev=\"vde\" bus=\"virtio\""),
        "{x}"
    );
    assert!(x.contains("<target dev=\"sdb\" bus=\"sata\""), "{x}");
    assert!(x.contains("/img/web1_logs.qcow2"));
}

#[test]
fn smbios_serial_points_at_the_nocloud_seed() {
    let x = set_smbios_serial(TEMPLATE, "ds=nocloud-net;s=http://10.0.0.1:8080/nocloud/abc/").unwrap();
    assert!(x.contains("<smbios mode=\"sysinfo\""), "{x}");
    assert!(x.contains("<entry name=\"serial\">ds=nocloud-net;s=http://10.0.0.1:8080/nocloud/abc/</entry>"));
    let again = set_smbios_serial(&x, "ds=nocloud-net;s=http://other/").unwrap();
    assert_eq!(again.matches("<sysinfo").count(), 1, "replaced, not added");
}
