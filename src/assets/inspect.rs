//! What a disk image file says about itself, read from its own header by provd, before any
//! tool opens it: the format, and whether the image would make a reader open *another* file
//! (a qcow2 backing file or external data file, a VMDK descriptor's extents or parent).
//!
//! Why this exists: `qemu-img convert` follows a qcow2's backing file, so a qcow2 made with
//! `-b /var/lib/provd/ca/ca.key -F raw` would be flattened into an image that `/assets/`
//! serves to the whole boot network (the class of bug OpenStack's format inspector closes).
//! provd never lets qemu-img probe: the format is named (`--format`) or read here, checked
//! against the header, and then given to qemu-img with `-f`.
//!
//! Pure: bytes in, a verdict out. Must never do I/O or trust a format a caller merely names
//! without comparing it with the header.

/// The formats provd converts. Anything else (qed, luks, parallels, bochs, cloop, dmg...) is
/// refused: each is either rare or can point at other files, and none is needed to bring a
/// disk image in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    Raw,
    Qcow2,
    Vmdk,
    Vdi,
    Vhdx,
    /// VirtualPC/Hyper-V VHD (qemu's name: vpc).
    Vpc,
}

impl DiskFormat {
    pub const ALL: [DiskFormat; 6] = [
        DiskFormat::Raw,
        DiskFormat::Qcow2,
        DiskFormat::Vmdk,
        DiskFormat::Vdi,
        DiskFormat::Vhdx,
        DiskFormat::Vpc,
    ];

    /// qemu-img's driver name (what `-f` takes).
    pub fn qemu_name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vdi => "vdi",
            DiskFormat::Vhdx => "vhdx",
            DiskFormat::Vpc => "vpc",
        }
    }
}

/// A format name provd does not convert.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown image format {0:?} (provd converts {known})", known = DiskFormat::ALL.map(|f| f.qemu_name()).join(", "))]
pub struct UnknownFormat(pub String);

impl std::str::FromStr for DiskFormat {
    type Err = UnknownFormat;
    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        DiskFormat::ALL
            .into_iter()
            .find(|f| f.qemu_name() == s || (s == "vhd" && *f == DiskFormat::Vpc))
            .ok_or_else(|| UnknownFormat(s.to_string()))
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.qemu_name())
    }
}

/// Why an image is refused before anything reads it as a disk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "its header is {found}, not the {named} that was named; refusing to read it as {named} (name --format {found} if that is what it is)"
    )]
    FormatMismatch { named: DiskFormat, found: String },
    #[error("its format is {0}, which provd does not import (only raw, qcow2, vmdk, vdi, vhdx, vpc)")]
    Unsupported(&'static str),
    #[error(
        "it is a qcow2 with a backing file (offset {offset}, {size} bytes): importing it would copy whatever file that names into a served image; flatten it yourself where you trust the backing file (qemu-img convert -O qcow2)"
    )]
    Qcow2Backing { offset: u64, size: u32 },
    #[error(
        "it is a qcow2 with an external data file: its bytes live in another file; make a self-contained copy first"
    )]
    Qcow2DataFile,
    #[error(
        "it is a VMDK descriptor: its data lives in extent files it names; import a monolithic VMDK (monolithicSparse or streamOptimized)"
    )]
    VmdkDescriptor,
    #[error("it is a VMDK whose embedded descriptor names {0}: {1}")]
    VmdkReference(&'static str, String),
    #[error("its header is too short to be a {0} image")]
    Truncated(DiskFormat),
}

/// How many leading bytes `inspect` wants (the VMDK embedded descriptor sits in the first
/// sectors; 64 KiB covers the descriptor qemu writes and every header here).
pub const HEADER_BYTES: usize = 64 * 1024;

/// What a header's magic says the file is: one of ours, a format we refuse, or no magic at
/// all (raw).
fn magic(header: &[u8]) -> Result<DiskFormat, Refusal> {
    let starts = |m: &[u8]| header.starts_with(m);
    if starts(b"QFI\xfb") {
        return Ok(DiskFormat::Qcow2);
    }
    if starts(b"KDMV") || starts(b"COWD") || starts(b"# Disk DescriptorFile") {
        return Ok(DiskFormat::Vmdk);
    }
    if header.len() >= 68 && header[64..68] == 0xbeda_107f_u32.to_le_bytes() {
        return Ok(DiskFormat::Vdi);
    }
    if starts(b"vhdxfile") {
        return Ok(DiskFormat::Vhdx);
    }
    if starts(b"conectix") {
        return Ok(DiskFormat::Vpc);
    }
    for (m, name) in [
        (&b"QED\0"[..], "qed"),
        (&b"LUKS\xba\xbe"[..], "luks"),
        (&b"WithoutFreeSpace"[..], "parallels"),
        (&b"WithouFreSpacExt"[..], "parallels"),
        (&b"XenVM"[..], "parallels"),
        (&b"Bochs Virtual HD Image"[..], "bochs"),
        (&b"#!/bin/sh\n#V2.0 Format"[..], "cloop"),
    ] {
        if starts(m) {
            return Err(Refusal::Unsupported(name));
        }
    }
    Ok(DiskFormat::Raw)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// qcow2 header (QEMU's docs/interop/qcow2.txt): backing_file_offset at 8 (u64),
/// backing_file_size at 16 (u32); from version 3, incompatible_features at 72, whose bit 2
/// is "external data file".
fn check_qcow2(header: &[u8]) -> Result<(), Refusal> {
    let short = || Refusal::Truncated(DiskFormat::Qcow2);
    let version = be_u32(header, 4).ok_or_else(short)?;
    let offset = be_u64(header, 8).ok_or_else(short)?;
    let size = be_u32(header, 16).ok_or_else(short)?;
    if offset != 0 || size != 0 {
        return Err(Refusal::Qcow2Backing { offset, size });
    }
    if version >= 3 {
        let incompatible = be_u64(header, 72).ok_or_else(short)?;
        if incompatible & (1 << 2) != 0 {
            return Err(Refusal::Qcow2DataFile);
        }
    }
    Ok(())
}

/// A VMDK is accepted only as one self-contained sparse file ("KDMV": monolithicSparse or
/// streamOptimized). Its embedded descriptor (descriptorOffset/Size at 28/36, in sectors,
/// little-endian) may still name a parent or other extents: refused.
fn check_vmdk(header: &[u8]) -> Result<(), Refusal> {
    if !header.starts_with(b"KDMV") {
        // A text descriptor (extents in other files) or VMware's old COWD format.
        return Err(Refusal::VmdkDescriptor);
    }
    let short = || Refusal::Truncated(DiskFormat::Vmdk);
    let desc_sector = le_u64(header, 28).ok_or_else(short)?;
    let desc_sectors = le_u64(header, 36).ok_or_else(short)?;
    if desc_sector == 0 || desc_sectors == 0 {
        return Ok(());
    }
    let start = usize::try_from(desc_sector.saturating_mul(512)).unwrap_or(usize::MAX);
    let len = usize::try_from(desc_sectors.saturating_mul(512)).unwrap_or(usize::MAX);
    // A descriptor beyond what was read cannot be checked: refuse rather than trust it.
    let Some(text) = header.get(start..start.saturating_add(len)) else {
        return Err(Refusal::VmdkReference(
            "a descriptor",
            "past the first 64 KiB, where provd cannot check it".into(),
        ));
    };
    let text = String::from_utf8_lossy(text.split(|b| *b == 0).next().unwrap_or_default());
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("parentFileNameHint") {
            return Err(Refusal::VmdkReference(
                "a parent",
                rest.trim_start_matches([' ', '=']).to_string(),
            ));
        }
        let is_extent = ["RW ", "RDONLY ", "NOACCESS "].iter().any(|p| line.starts_with(p));
        if is_extent && !line.contains(" SPARSE") {
            return Err(Refusal::VmdkReference("an extent outside itself", line.to_string()));
        }
    }
    Ok(())
}

/// The format of an image whose first bytes are `header` (at most `HEADER_BYTES`), checked
/// against the one the operator `named` (if any), and refused if it would read other files.
pub fn inspect(header: &[u8], named: Option<DiskFormat>) -> Result<DiskFormat, Refusal> {
    let found = magic(header).map_err(|e| match (named, e) {
        // Naming raw does not make a LUKS or qed header safe to serve as a disk either.
        (Some(named), Refusal::Unsupported(found)) => Refusal::FormatMismatch {
            named,
            found: found.to_string(),
        },
        (_, e) => e,
    })?;
    // A "raw" file that carries a qcow2 header is the classic trap: written to a disk it is
    // later probed as qcow2 by whatever reads it next, backing file and all.
    if let Some(named) = named
        && named != found
    {
        return Err(Refusal::FormatMismatch {
            named,
            found: found.to_string(),
        });
    }
    match found {
        DiskFormat::Qcow2 => check_qcow2(header)?,
        DiskFormat::Vmdk => check_vmdk(header)?,
        _ => {}
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qcow2(version: u32, backing: (u64, u32), incompatible: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..4].copy_from_slice(b"QFI\xfb");
        h[4..8].copy_from_slice(&version.to_be_bytes());
        h[8..16].copy_from_slice(&backing.0.to_be_bytes());
        h[16..20].copy_from_slice(&backing.1.to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h
    }

    fn kdmv(descriptor: &str) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"KDMV");
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&4u64.to_le_bytes());
        h[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
        h
    }

    #[test]
    fn a_plain_qcow2_passes_and_backing_or_data_files_are_refused() {
        assert_eq!(inspect(&qcow2(3, (0, 0), 0), None), Ok(DiskFormat::Qcow2));
        assert_eq!(
            inspect(&qcow2(2, (0, 0), 0), Some(DiskFormat::Qcow2)),
            Ok(DiskFormat::Qcow2)
        );
        assert_eq!(
            inspect(&qcow2(3, (0x200, 24), 0), None),
            Err(Refusal::Qcow2Backing {
                offset: 0x200,
                size: 24
            })
        );
        assert_eq!(inspect(&qcow2(3, (0, 0), 1 << 2), None), Err(Refusal::Qcow2DataFile));
        // Version 2 has no feature bits: the bytes at 72 are something else.
        assert_eq!(inspect(&qcow2(2, (0, 0), 1 << 2), None), Ok(DiskFormat::Qcow2));
        assert_eq!(
            inspect(b"QFI\xfb\0\0\0\x03", None),
            Err(Refusal::Truncated(DiskFormat::Qcow2))
        );
    }

    #[test]
    fn a_named_format_must_match_the_header() {
        let e = inspect(&qcow2(3, (0, 0), 0), Some(DiskFormat::Raw)).unwrap_err();
        assert!(matches!(&e, Refusal::FormatMismatch { named: DiskFormat::Raw, found } if found == "qcow2"));
        assert!(e.to_string().contains("--format qcow2"), "{e}");
        assert_eq!(inspect(&[0u8; 4096], Some(DiskFormat::Raw)), Ok(DiskFormat::Raw));
        assert!(matches!(
            inspect(&[0u8; 4096], Some(DiskFormat::Qcow2)),
            Err(Refusal::FormatMismatch {
                named: DiskFormat::Qcow2,
                ..
            })
        ));
        assert!(matches!(
            inspect(b"LUKS\xba\xbe\0\x01", Some(DiskFormat::Raw)),
            Err(Refusal::FormatMismatch { .. })
        ));
        assert_eq!(inspect(b"QED\0rest", None), Err(Refusal::Unsupported("qed")));
    }

    #[test]
    fn vmdk_only_as_one_self_contained_sparse_file() {
        let own = "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicSparse\"\nRW 2048 SPARSE \"disk.vmdk\"\n";
        assert_eq!(inspect(&kdmv(own), None), Ok(DiskFormat::Vmdk));
        let flat = format!("{own}RW 16 FLAT \"/etc/provd/ca.key\" 0\n");
        assert!(matches!(inspect(&kdmv(&flat), None), Err(Refusal::VmdkReference(..))));
        let parent = format!("{own}parentFileNameHint=\"/var/lib/secret.vmdk\"\n");
        let e = inspect(&kdmv(&parent), None).unwrap_err();
        assert!(e.to_string().contains("/var/lib/secret.vmdk"), "{e}");
        let text = b"# Disk DescriptorFile\nRW 16 FLAT \"secret\" 0\n";
        assert_eq!(inspect(text, None), Err(Refusal::VmdkDescriptor));
        assert_eq!(inspect(text, Some(DiskFormat::Vmdk)), Err(Refusal::VmdkDescriptor));
    }

    #[test]
    fn other_magics_and_names() {
        let mut vdi = vec![0u8; 512];
        vdi[64..68].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        assert_eq!(inspect(&vdi, None), Ok(DiskFormat::Vdi));
        assert_eq!(inspect(b"vhdxfile........", None), Ok(DiskFormat::Vhdx));
        assert_eq!(inspect(b"conectix........", None), Ok(DiskFormat::Vpc));
        assert_eq!("vhd".parse::<DiskFormat>(), Ok(DiskFormat::Vpc));
        assert_eq!("qcow2".parse::<DiskFormat>(), Ok(DiskFormat::Qcow2));
        let e = "qed".parse::<DiskFormat>().unwrap_err();
        assert_eq!(e, UnknownFormat("qed".into()));
        assert!(e.to_string().contains("raw, qcow2"), "{e}");
    }
}
