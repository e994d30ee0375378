//! Focused tests of what the property tests (`prop`) found.

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::PermissionsExt;

use super::*;

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_cksum();
    h
}

/// A directory that a later entry replaces forgets its metadata: before, its mode (and
/// mtime) still landed, at the end, on the implied directory a deeper entry made at its
/// place.
#[test]
fn a_replaced_directory_does_not_lend_its_mode_to_an_implied_one() {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |mode| header(tar::EntryType::Directory, mode, 0);
    b.append_data(&mut dir(0o711), "d/a", &b""[..]).unwrap();
    // Replaces d, and d/a with it.
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0),
        "d",
        &b""[..],
    )
    .unwrap();
    b.append_data(&mut dir(0o755), "d", &b""[..]).unwrap();
    // d/a comes back implied.
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 1),
        "d/a/x",
        &b"x"[..],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    extract(
        Cursor::new(b.into_inner().unwrap()),
        tmp.path(),
        &Limits::default(),
    )
    .unwrap();
    let mode = fs::metadata(tmp.path().join("d/a"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o755, "d/a has mode {mode:o}");
}

/// Which failures the service answers with a 500: only its own.
#[test]
fn only_the_hosts_failures_are_service_faults() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |archive: Vec<u8>, dest: &std::path::Path| {
        extract(Cursor::new(archive), dest, &Limits::default()).unwrap_err()
    };
    // A name over NAME_MAX: the archive's fault (it was reported as is, with ENAMETOOLONG).
    let mut b = tar::Builder::new(Vec::new());
    let long = "n".repeat(300);
    b.append_data(
        &mut header(tar::EntryType::Regular, 0o644, 0),
        &long,
        &b""[..],
    )
    .unwrap();
    let e = run(b.into_inner().unwrap(), tmp.path());
    assert!(!e.is_service_fault(), "{e}");
    // A symlink target the kernel refuses (over 4095 bytes).
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "l", "t".repeat(4096)).unwrap();
    let e = run(b.into_inner().unwrap(), tmp.path());
    assert!(!e.is_service_fault(), "{e}");
    // No destination: the service's fault.
    let e = run(Vec::new(), &tmp.path().join("missing"));
    assert!(e.is_service_fault(), "{e}");
}
