//! Tests of `assets::import`.

use super::*;

fn tools_present() -> bool {
    ["qemu-img", "gzip"].iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An 8 MiB raw disk with data at its start, middle and end, holes between.
fn raw_disk(path: &Path) -> Vec<u8> {
    let mut disk = vec![0u8; 8 << 20];
    disk[..512].copy_from_slice(&[0xA5; 512]);
    disk[(3 << 20)..(3 << 20) + 11].copy_from_slice(b"provd image");
    let end = disk.len();
    disk[end - 4..].copy_from_slice(b"last");
    std::fs::write(path, &disk).unwrap();
    disk
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_qcow2_becomes_a_checked_raw_gz_the_catalog_serves() {
    assert!(
        tools_present(),
        "qemu-img and gzip are needed (lab/deps.sh installs them)"
    );
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    let raw = work.path().join("disk.raw");
    let disk = raw_disk(&raw);
    let qcow2 = work.path().join("disk.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        qcow2.to_str().unwrap(),
    ]);

    let mut phases = Vec::new();
    let got = import(&assets, "web", &qcow2, None, false, &mut |p| phases.push(p)).unwrap();
    assert_eq!((got.source_format, got.virtual_size), (DiskFormat::Qcow2, 8 << 20));
    assert!(matches!(phases[0], Phase::Converting));
    assert!(
        matches!(phases.last(), Some(Phase::Compressing { done, total }) if done == total),
        "{phases:?}"
    );
    let images = assets.join(IMAGES_DIR);
    assert_eq!(
        listing(&images),
        ["web.raw.gz", "web.raw.gz.sha256"],
        "no temporary file left"
    );

    // What the catalog will serve: the checksum of the bytes on disk, which decompress to
    // the source disk exactly.
    let catalog = images::Catalog::load(&assets, ["web"]).unwrap();
    let image = catalog.get("web").unwrap();
    let gz_bytes = std::fs::read(images.join("web.raw.gz")).unwrap();
    assert_eq!(image.sha256, sha256_hex(&gz_bytes));
    assert_eq!((image.sha256.as_str(), image.size), (got.sha256.as_str(), got.bytes));
    let plain = Command::new("gzip")
        .args(["-dc"])
        .arg(images.join("web.raw.gz"))
        .output()
        .unwrap();
    assert!(plain.status.success());
    assert!(plain.stdout == disk, "the decompressed image is the source disk");

    // The same name again: refused, and nothing changed; --force replaces it (and a stale
    // .qcow2 of that name goes with it).
    let e = import(&assets, "web", &raw, None, false, &mut |_| {}).unwrap_err();
    assert!(
        matches!(e, ImportError::Exists { .. }) && e.to_string().contains("--force"),
        "{e}"
    );
    assert_eq!(std::fs::read(images.join("web.raw.gz")).unwrap(), gz_bytes);
    std::fs::write(images.join("web.qcow2"), b"stale").unwrap();
    let again = import(&assets, "web", &raw, None, true, &mut |_| {}).unwrap();
    assert_eq!(again.source_format, DiskFormat::Raw);
    assert_eq!(listing(&images), ["web.raw.gz", "web.raw.gz.sha256"]);

    // A qcow2 in the images directory, converted where it lies (what the catalog's refusal
    // of it suggests): no --force needed, and the source stays.
    std::fs::copy(&qcow2, images.join("db.qcow2")).unwrap();
    let e = images::Catalog::load(&assets, ["db"]).unwrap_err().to_string();
    assert!(e.contains("provd assets import-image db "), "{e}");
    import(&assets, "db", &images.join("db.qcow2"), None, false, &mut |_| {}).unwrap();
    assert!(images.join("db.qcow2").exists());
    assert_eq!(
        images::Catalog::load(&assets, ["db"])
            .unwrap()
            .get("db")
            .unwrap()
            .format,
        images::Format::RawGz
    );
}

#[test]
fn bad_names_and_non_disks_are_refused_and_leave_nothing() {
    assert!(
        tools_present(),
        "qemu-img and gzip are needed (lab/deps.sh installs them)"
    );
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    let text = work.path().join("notes.txt");
    std::fs::write(&text, "not a disk\n").unwrap();
    let e = import(&assets, "notes", &text, None, false, &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("not a disk image"), "{e}");
    let e = import(
        &assets,
        "x",
        &work.path().join("missing.qcow2"),
        None,
        false,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(e.to_string().contains("missing.qcow2"), "{e}");
    let raw = work.path().join("d.raw");
    raw_disk(&raw);
    for bad in ["../escape", ".hidden", "a/b", ""] {
        assert!(
            matches!(
                import(&assets, bad, &raw, None, false, &mut |_| {}),
                Err(ImportError::Name(_))
            ),
            "{bad:?}"
        );
    }
    let images = assets.join(IMAGES_DIR);
    assert!(
        !images.exists() || listing(&images).is_empty(),
        "a refusal writes nothing"
    );
}

/// Every file under `dir`, with its bytes.
fn everything_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(everything_under(&p));
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The attacks of issue 34: images that would make qemu-img read another host file. Each
/// is refused with its reason, nothing is written, and the secret's bytes are nowhere
/// under the assets directory.
#[test]
fn images_that_point_at_other_files_are_refused_and_leak_nothing() {
    assert!(
        tools_present(),
        "qemu-img and gzip are needed (lab/deps.sh installs them)"
    );
    let work = tempfile::tempdir().unwrap();
    let assets = work.path().join("assets");
    // A "CA key": one 4 KiB block of a recognisable pattern (a whole number of sectors, so
    // qemu-img would happily take it as a raw backing file).
    let secret = work.path().join("ca.key");
    let marker = b"-----BEGIN PRIVATE KEY----- provd secret ";
    let secret_bytes: Vec<u8> = marker.iter().copied().cycle().take(4096).collect();
    let secret_s = secret.to_str().unwrap();

    // 1. qcow2 with an external data file that is the secret. (qemu-img create zeroes
    //    the data file it names, so this comes before the secret is written.)
    let data_file = work.path().join("datafile.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={secret_s},data_file_raw=on"),
        data_file.to_str().unwrap(),
        "4096",
    ]);
    std::fs::write(&secret, &secret_bytes).unwrap();
    // 2. qcow2 whose backing file is the secret (what issue 34 demonstrated).
    let backed = work.path().join("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        secret_s,
        "-F",
        "raw",
        backed.to_str().unwrap(),
    ]);
    // 3. A VMDK descriptor whose flat extent is the secret.
    let vmdk = work.path().join("flat.vmdk");
    std::fs::write(
        &vmdk,
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\nRW 8 FLAT \"{secret_s}\" 0\n\nddb.virtualHWVersion = \"4\"\n"
        ),
    )
    .unwrap();
    // Proof that each really is a trap: qemu-img itself reads the secret through it.
    for (trap, format) in [(&backed, "qcow2"), (&data_file, "qcow2"), (&vmdk, "vmdk")] {
        let out = work.path().join("probe.raw");
        qemu_img(&[
            "convert",
            "-f",
            format,
            "-O",
            "raw",
            trap.to_str().unwrap(),
            out.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&out).unwrap();
        assert!(
            bytes.windows(marker.len()).any(|w| w == marker),
            "{}: qemu-img did not follow it, so this case proves nothing",
            trap.display()
        );
        std::fs::remove_file(&out).unwrap();
    }
    // 4. A file named raw whose header is a qcow2 (with the secret as its backing file):
    //    written to a disk, whatever probes that disk next would follow it.
    let disguised = work.path().join("disguised.raw");
    let mut bytes = std::fs::read(&backed).unwrap();
    bytes.resize(bytes.len().div_ceil(512) * 512, 0);
    std::fs::write(&disguised, &bytes).unwrap();

    let cases: [(&Path, Option<DiskFormat>, &str); 6] = [
        (&backed, None, "backing file"),
        (&backed, Some(DiskFormat::Qcow2), "backing file"),
        (&data_file, None, "external data file"),
        (&vmdk, None, "VMDK descriptor"),
        (&vmdk, Some(DiskFormat::Vmdk), "VMDK descriptor"),
        (&disguised, Some(DiskFormat::Raw), "not the raw that was named"),
    ];
    for (source, format, reason) in cases {
        let e = import(&assets, "evil", source, format, true, &mut |_| {}).unwrap_err();
        assert!(
            matches!(e, ImportError::Refused { .. }) && e.to_string().contains(reason),
            "{} ({format:?}): {e}",
            source.display()
        );
    }
    let written = everything_under(&assets);
    assert!(
        written
            .iter()
            .all(|(_, b)| !b.windows(marker.len()).any(|w| w == marker)),
        "the secret leaked into {:?}",
        written.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    assert!(
        written.is_empty(),
        "a refusal writes nothing: {:?}",
        written.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );

    // The same bytes as a plain qcow2 still import, and a named format that matches works.
    let plain = work.path().join("plain.qcow2");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "raw",
        "-O",
        "qcow2",
        secret_s,
        plain.to_str().unwrap(),
    ]);
    let ok = import(&assets, "fine", &plain, Some(DiskFormat::Qcow2), false, &mut |_| {}).unwrap();
    assert_eq!(ok.source_format, DiskFormat::Qcow2);
}
