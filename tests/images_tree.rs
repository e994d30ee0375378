//! `ImageStore::import_tree`: a directory copied into the store through the safe
//! extractor (as root, on the real file system), and the languages read from the copy's
//! `/etc/corral-image.json` without following symlinks.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use corral::bundle::extract::Limits;
use corral::images::{ImageError, ImageStore};
use serde_json::json;

use common::{require_root, tempdir};

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

#[test]
fn copies_the_tree_and_reads_its_languages() {
    require_root();
    let tmp = tempdir("corral-tree-");
    let src = tmp.path().join("src");
    write(
        &src.join("etc/corral-image.json"),
        r#"{"name":"x","languages":[{"name":"python","version":"3.11.2","command":"python3"}]}"#,
    );
    write(&src.join("usr/bin/tool"), "#!/bin/sh\n");
    fs::set_permissions(src.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(src.join("usr/bin/tool"), src.join("usr/bin/tool2")).unwrap();
    symlink("tool", src.join("usr/bin/alias")).unwrap();
    fs::create_dir_all(src.join("tmp")).unwrap();
    fs::set_permissions(src.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();

    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
    let info = store
        .import_tree("x", &src, "recipe:x", labels.clone(), &Limits::default())
        .unwrap();
    assert_eq!(
        serde_json::to_value(&info.languages).unwrap(),
        json!([{"name": "python", "version": "3.11.2", "command": "python3"}])
    );
    assert_eq!(info.labels, labels);
    assert_eq!(info.source, "recipe:x");
    assert_eq!(store.get("x").unwrap(), info, "info.json round-trips");

    let root = store.rootfs("x").unwrap();
    let tool = fs::metadata(root.join("usr/bin/tool")).unwrap();
    assert_eq!(tool.mode() & 0o7777, 0o755, "setuid dropped");
    assert_eq!(
        tool.ino(),
        fs::metadata(root.join("usr/bin/tool2")).unwrap().ino(),
        "hard link kept"
    );
    assert_eq!(
        fs::read_link(root.join("usr/bin/alias")).unwrap(),
        Path::new("tool")
    );
    assert_eq!(
        fs::metadata(root.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert!(
        fs::symlink_metadata(root.join("fifo")).is_err(),
        "special files are left out"
    );
    // The source is untouched.
    assert!(src.join("etc/corral-image.json").is_file());
    assert_eq!(
        fs::metadata(src.join("usr/bin/tool")).unwrap().mode() & 0o7777,
        0o4755
    );
}

#[test]
fn a_symlinked_metadata_file_is_not_followed() {
    require_root();
    let tmp = tempdir("corral-tree-");
    let host = tmp.path().join("host.json");
    write(&host, r#"{"languages":[{"name":"secret","version":"1"}]}"#);
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();

    // The file a symlink (absolute, to a host file).
    let a = tmp.path().join("a");
    fs::create_dir_all(a.join("etc")).unwrap();
    symlink(&host, a.join("etc/corral-image.json")).unwrap();
    let info = store
        .import_tree("a", &a, "t", BTreeMap::new(), &Limits::default())
        .unwrap();
    assert!(info.languages.is_empty(), "{info:?}");

    // /etc a symlink to a directory holding one.
    let b = tmp.path().join("b");
    write(
        &b.join("real/corral-image.json"),
        r#"{"languages":[{"name":"via-link","version":"1"}]}"#,
    );
    symlink("real", b.join("etc")).unwrap();
    let info = store
        .import_tree("b", &b, "t", BTreeMap::new(), &Limits::default())
        .unwrap();
    assert!(info.languages.is_empty(), "{info:?}");
}

#[test]
fn failures_leave_nothing_in_the_store() {
    require_root();
    let tmp = tempdir("corral-tree-");
    let src = tmp.path().join("src");
    for i in 0..20 {
        write(&src.join(format!("f{i}")), "x");
    }
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let tight = Limits {
        max_entries: 5,
        ..Limits::default()
    };
    let err = store
        .import_tree("x", &src, "t", BTreeMap::new(), &tight)
        .unwrap_err();
    assert!(matches!(err, ImageError::Copy { .. }), "{err}");
    assert!(err.to_string().contains("entries"), "{err}");
    let err = store
        .import_tree(
            "y",
            &tmp.path().join("missing"),
            "t",
            BTreeMap::new(),
            &tight,
        )
        .unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err}");
    assert!(
        fs::read_dir(store.root()).unwrap().next().is_none(),
        "the store is empty"
    );
}
