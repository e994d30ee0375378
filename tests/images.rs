//! The named image store and per-container overlays, on the real file system and with
//! real mounts (as root): imports of rootfs tars, OCI layouts built here in memory and
//! recipes; atomicity on failure; the overlay's writable layer and its size cap.

mod common;

use std::fs;
use std::io::{Cursor, ErrorKind, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use corral::bundle::extract::Limits;
use corral::images::{ContainerRootfs, ImageError, ImageInfo, ImageStore};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};
use tempfile::TempDir;

use common::{require_root, rootfs, tempdir};

// ---------------------------------------------------------------------------------------
// Helpers

/// A fresh store under a temp dir (kept alive by the returned guard).
fn store() -> (TempDir, ImageStore) {
    let tmp = tempdir("corral-images-");
    let store = ImageStore::open(&tmp.path().join("images")).expect("open store");
    (tmp, store)
}

/// The names in the store's root, temp dirs included.
fn entries(store: &ImageStore) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(store.root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// A tar of the tree at `dir` (symlinks kept as symlinks).
fn tar_of_dir(dir: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    b.into_inner().unwrap()
}

/// A tar of directories (names ending in `/`) and files, in memory.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = Header::new_gnu();
        let dir = path.ends_with('/');
        h.set_entry_type(if dir {
            EntryType::Directory
        } else {
            EntryType::Regular
        });
        h.set_mode(if dir { 0o755 } else { 0o644 });
        h.set_mtime(1_600_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An OCI image layout, built in memory and tarred with [`Layout::tar`].
#[derive(Default)]
struct Layout {
    blobs: Vec<(String, Vec<u8>)>,
}

impl Layout {
    /// Adds a blob; returns its descriptor with `media_type`.
    fn blob(&mut self, media_type: &str, data: Vec<u8>) -> Value {
        let desc = json!({
            "mediaType": media_type,
            "digest": format!("sha256:{}", sha256(&data)),
            "size": data.len(),
        });
        self.blobs.push((sha256(&data), data));
        desc
    }

    /// Adds a config and a manifest over `layers`; returns the manifest's descriptor.
    fn manifest(&mut self, layers: Vec<Value>) -> Value {
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "rootfs": {}}))
                .unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            serde_json::to_vec(&manifest).unwrap(),
        )
    }

    /// The layout as a tar: `oci-layout`, `index.json` listing `manifests`, the blobs.
    fn tar(&self, manifests: Vec<Value>) -> Vec<u8> {
        let index =
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap();
        let mut entries: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion": "1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index),
            ("blobs/".into(), Vec::new()),
            ("blobs/sha256/".into(), Vec::new()),
        ];
        for (hex, data) in &self.blobs {
            entries.push((format!("blobs/sha256/{hex}"), data.clone()));
        }
        let refs: Vec<(&str, &[u8])> = entries
            .iter()
            .map(|(p, d)| (p.as_str(), d.as_slice()))
            .collect();
        tar_of(&refs)
    }
}

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Two layers: an uncompressed base, then a gzip layer deleting `etc/gone` (whiteout)
/// and adding `etc/new`.
fn two_layers(layout: &mut Layout) -> Vec<Value> {
    let base = tar_of(&[
        ("etc/", b""),
        ("etc/hello", b"hello\n"),
        ("etc/gone", b"doomed\n"),
        ("bin/", b""),
        ("bin/tool", b"#!/bin/sh\n"),
    ]);
    let top = gzip(&tar_of(&[("etc/.wh.gone", b""), ("etc/new", b"new\n")]));
    vec![layout.blob(LAYER_TAR, base), layout.blob(LAYER_GZIP, top)]
}

fn import(store: &ImageStore, name: &str, data: &[u8]) -> Result<ImageInfo, ImageError> {
    store.import_tar(name, Cursor::new(data), &Limits::default())
}

/// Mount points of this process at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|p| p == &dir || p.starts_with(&format!("{dir}/")))
        .collect()
}

/// Unmounts a container dir when dropped, so a failing test leaves no mounts behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = ContainerRootfs::unmount(&self.0);
    }
}

/// A small image root: `etc/hello`, `etc/keep`, root dir mode 0755.
fn small_image() -> TempDir {
    let img = tempdir("corral-image-root-");
    fs::set_permissions(img.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir(img.path().join("etc")).unwrap();
    fs::write(img.path().join("etc/hello"), "hello\n").unwrap();
    fs::write(img.path().join("etc/keep"), "keep\n").unwrap();
    img
}

// ---------------------------------------------------------------------------------------
// Imports

#[test]
fn imports_a_busybox_rootfs_tar() {
    let (_tmp, store) = store();
    let data = tar_of_dir(rootfs());
    let info = import(&store, "busybox", &data).expect("import");
    assert_eq!(info.name, "busybox");
    assert_eq!(info.source, "rootfs-tar");
    assert_eq!(info.digest, Some(format!("sha256:{}", sha256(&data))));
    assert!(info.size_bytes > 100_000, "{info:?}");
    assert!(
        info.created.ends_with('Z') && info.created.starts_with("20") && info.created.len() >= 20,
        "{info:?}"
    );

    assert_eq!(store.list().unwrap(), vec![info.clone()]);
    assert_eq!(store.get("busybox").unwrap(), info);
    let root = store.rootfs("busybox").unwrap();
    assert!(root.join("bin/busybox").is_file());
    assert!(
        fs::symlink_metadata(root.join("bin/sh"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(entries(&store), ["busybox"]);

    // A store opened again sees the same image.
    let again = ImageStore::open(store.root()).unwrap();
    assert_eq!(again.get("busybox").unwrap(), info);
}

#[test]
fn imports_an_oci_layout_with_a_whiteout_and_a_gzip_layer() {
    let (_tmp, store) = store();
    let mut layout = Layout::default();
    // A decoy for another platform comes first: it must not be chosen.
    let decoy_layer = layout.blob(LAYER_TAR, tar_of(&[("decoy", b"x")]));
    let mut decoy = layout.manifest(vec![decoy_layer]);
    decoy["platform"] = json!({"os": "plan9", "architecture": "amd64"});
    let layers = two_layers(&mut layout);
    let mut manifest = layout.manifest(layers);
    manifest["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let digest = manifest["digest"].as_str().unwrap().to_owned();

    let info = import(&store, "layered", &layout.tar(vec![decoy, manifest])).expect("import");
    assert_eq!(info.source, "oci-layout");
    assert_eq!(info.digest.as_deref(), Some(digest.as_str()));
    let root = store.rootfs("layered").unwrap();
    assert_eq!(
        fs::read_to_string(root.join("etc/hello")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read_to_string(root.join("etc/new")).unwrap(), "new\n");
    assert!(!root.join("etc/gone").exists(), "whiteout not applied");
    assert!(!root.join("etc/.wh.gone").exists());
    assert!(!root.join("decoy").exists(), "decoy manifest applied");
    assert!(!root.join("index.json").exists() && !root.join("blobs").exists());
    assert_eq!(info.size_bytes, 6 + 4 + 10);
    assert_eq!(entries(&store), ["layered"]);
}

#[test]
fn a_tampered_layer_is_refused_and_leaves_nothing() {
    let (_tmp, store) = store();
    let mut layout = Layout::default();
    let layers = two_layers(&mut layout);
    let manifest = layout.manifest(layers);
    // Same length, other content, under the original digest.
    let layer = &mut layout.blobs[0].1;
    let at = layer.iter().position(|&b| b == b'h').unwrap();
    layer[at] = b'j';
    let err = import(&store, "tampered", &layout.tar(vec![manifest])).unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains("tampered"), "{err}");
    assert!(entries(&store).is_empty(), "{:?}", entries(&store));
    assert!(matches!(
        store.get("tampered"),
        Err(ImageError::NotFound { .. })
    ));
}

#[test]
fn a_wrong_size_or_missing_blob_is_refused() {
    let (_tmp, store) = store();
    let mut layout = Layout::default();
    let mut layers = two_layers(&mut layout);
    layers[1]["size"] = json!(3);
    let manifest = layout.manifest(layers);
    let err = import(&store, "short", &layout.tar(vec![manifest])).unwrap_err();
    assert!(matches!(err, ImageError::SizeMismatch { .. }), "{err}");

    let mut layout = Layout::default();
    let layers = two_layers(&mut layout);
    let manifest = layout.manifest(layers);
    layout.blobs.remove(1);
    let err = import(&store, "missing", &layout.tar(vec![manifest])).unwrap_err();
    assert!(
        matches!(&err, ImageError::Layout { reason, .. } if reason.contains("is missing")),
        "{err}"
    );
    assert!(entries(&store).is_empty(), "{:?}", entries(&store));
}

#[test]
fn a_hostile_upload_is_refused_and_leaves_nothing() {
    let (_tmp, store) = store();
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(1);
    h.as_old_mut().name[..4].copy_from_slice(b"../x");
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"x"[..]).unwrap();
    let err = import(&store, "evil", &b.into_inner().unwrap()).unwrap_err();
    assert!(matches!(err, ImageError::Upload { .. }), "{err}");
    assert!(entries(&store).is_empty());
    assert!(!store.root().parent().unwrap().join("x").exists());
}

#[test]
fn duplicate_names_are_refused() {
    let (_tmp, store) = store();
    let first = import(&store, "dup", &tar_of(&[("a", b"1")])).unwrap();
    let err = import(&store, "dup", &tar_of(&[("b", b"2")])).unwrap_err();
    assert!(
        matches!(err, ImageError::AlreadyExists { ref name } if name == "dup"),
        "{err}"
    );
    assert_eq!(store.get("dup").unwrap(), first);
    assert!(store.rootfs("dup").unwrap().join("a").is_file());
    assert_eq!(entries(&store), ["dup"]);
}

#[test]
fn invalid_names_are_refused() {
    let (_tmp, store) = store();
    let long = "x".repeat(129);
    for name in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../up",
        "a b",
        "é",
        long.as_str(),
    ] {
        let err = import(&store, name, &tar_of(&[("a", b"1")])).unwrap_err();
        assert!(
            matches!(err, ImageError::InvalidName { .. }),
            "{name:?}: {err}"
        );
        assert!(
            matches!(store.get(name), Err(ImageError::InvalidName { .. })),
            "{name:?}"
        );
        assert!(matches!(
            store.delete(name, |_| false),
            Err(ImageError::InvalidName { .. })
        ));
    }
    assert!(entries(&store).is_empty());
    import(&store, &"y".repeat(128), &tar_of(&[("a", b"1")])).expect("128 bytes is fine");
    import(&store, "Ab_c.d-9", &tar_of(&[("a", b"1")])).expect("all allowed bytes");
}

#[test]
fn delete_refuses_an_image_in_use() {
    let (_tmp, store) = store();
    import(&store, "used", &tar_of(&[("a", b"1")])).unwrap();
    let err = store.delete("used", |n| n == "used").unwrap_err();
    assert!(
        matches!(err, ImageError::InUse { ref name } if name == "used"),
        "{err}"
    );
    assert!(store.get("used").is_ok());

    store.delete("used", |_| false).unwrap();
    assert!(matches!(
        store.get("used"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        store.rootfs("used"),
        Err(ImageError::NotFound { .. })
    ));
    assert!(matches!(
        store.delete("used", |_| false),
        Err(ImageError::NotFound { .. })
    ));
    assert!(store.list().unwrap().is_empty());
    assert!(entries(&store).is_empty());
}

#[test]
fn open_removes_leftovers_of_interrupted_imports() {
    let (_tmp, store) = store();
    import(&store, "kept", &tar_of(&[("a", b"1")])).unwrap();
    let leftover = store.root().join(".tmp-0123456789abcdef");
    fs::create_dir_all(leftover.join("upload/deep")).unwrap();
    fs::write(leftover.join("upload/deep/file"), "x").unwrap();
    let store = ImageStore::open(store.root()).unwrap();
    assert_eq!(entries(&store), ["kept"]);
}

#[test]
fn import_dir_moves_a_prepared_directory() {
    let (tmp, store) = store();
    let dir = tmp.path().join("prepared");
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::write(dir.join("bin/tool"), "12345").unwrap();
    let info = store.import_dir("prepared", &dir, "recipe:test").unwrap();
    assert_eq!(
        (info.source.as_str(), info.digest.as_ref()),
        ("recipe:test", None)
    );
    assert_eq!(info.size_bytes, 5);
    assert!(!dir.exists(), "not moved");
    assert!(store.rootfs("prepared").unwrap().join("bin/tool").is_file());

    // A failed import (taken name) gives the directory back.
    let other = tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let err = store.import_dir("prepared", &other, "x").unwrap_err();
    assert!(matches!(err, ImageError::AlreadyExists { .. }), "{err}");
    assert!(other.is_dir());
    assert_eq!(entries(&store), ["prepared"]);
}

#[test]
fn import_recipe_runs_the_script_into_a_temp_dir() {
    let (tmp, store) = store();
    let recipe = tmp.path().join("tiny");
    fs::create_dir(&recipe).unwrap();
    let script = recipe.join("build.sh");
    fs::write(
        &script,
        "#!/bin/sh\nset -e\nmkdir -p \"$1/bin\"\necho hi > \"$1/bin/hi\"\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let info = store.import_recipe("tiny", &script).unwrap();
    assert_eq!(info.source, "recipe:tiny");
    assert!(store.rootfs("tiny").unwrap().join("bin/hi").is_file());

    let failing = recipe.join("fail.sh");
    fs::write(
        &failing,
        "#!/bin/sh\nmkdir \"$1\"\necho 'no compiler here' >&2\nexit 3\n",
    )
    .unwrap();
    fs::set_permissions(&failing, fs::Permissions::from_mode(0o755)).unwrap();
    let err = store.import_recipe("broken", &failing).unwrap_err();
    assert!(matches!(err, ImageError::Recipe { .. }), "{err}");
    assert!(err.to_string().contains("no compiler here"), "{err}");
    assert_eq!(entries(&store), ["tiny"]);
}

// ---------------------------------------------------------------------------------------
// Container root filesystems

#[test]
fn writes_land_in_the_upper_layer_never_in_the_image() {
    require_root();
    let img = small_image();
    let ctr = tempdir("corral-ctr-");
    let _guard = Mounted(ctr.path().to_owned());
    let fs_ = ContainerRootfs::mount(img.path(), ctr.path(), 4 << 20).expect("mount");
    let root = fs_.path().to_owned();
    assert_eq!(root, fs::canonicalize(ctr.path()).unwrap().join("rootfs"));
    assert_eq!(
        fs::read_to_string(root.join("etc/hello")).unwrap(),
        "hello\n"
    );
    let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755, "merged root takes the image root's mode");

    fs::write(root.join("etc/written"), "mine\n").unwrap();
    fs::write(root.join("etc/hello"), "changed\n").unwrap();
    fs::remove_file(root.join("etc/keep")).unwrap();

    assert_eq!(
        fs::read_to_string(fs_.upper().join("etc/written")).unwrap(),
        "mine\n"
    );
    assert!(!img.path().join("etc/written").exists());
    assert_eq!(
        fs::read_to_string(img.path().join("etc/hello")).unwrap(),
        "hello\n"
    );
    assert!(img.path().join("etc/keep").exists());
    assert!(!root.join("etc/keep").exists());
    let layer_mode = fs::metadata(ctr.path().join("layer"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(layer_mode & 0o777, 0o700);
    assert_eq!(
        mounts_under(ctr.path()).len(),
        2,
        "{:?}",
        mounts_under(ctr.path())
    );
}

#[test]
fn the_writable_layer_is_size_capped() {
    require_root();
    let img = small_image();
    let ctr = tempdir("corral-ctr-");
    let _guard = Mounted(ctr.path().to_owned());
    let size = 1 << 20;
    let fs_ = ContainerRootfs::mount(img.path(), ctr.path(), size).expect("mount");
    let err = fs::write(fs_.path().join("big"), vec![0u8; 2 * size as usize]).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
}

#[test]
fn unmount_is_idempotent_and_leaves_nothing_mounted() {
    require_root();
    let img = small_image();
    let ctr = tempdir("corral-ctr-");
    let _guard = Mounted(ctr.path().to_owned());
    let fs_ = ContainerRootfs::mount(img.path(), ctr.path(), 1 << 20).expect("mount");
    fs::write(fs_.path().join("f"), "x").unwrap();
    assert!(!mounts_under(ctr.path()).is_empty());

    ContainerRootfs::unmount(ctr.path()).expect("unmount");
    ContainerRootfs::unmount(ctr.path()).expect("unmount again");
    assert!(
        mounts_under(ctr.path()).is_empty(),
        "{:?}",
        mounts_under(ctr.path())
    );
    assert!(!ctr.path().join("rootfs").exists() && !ctr.path().join("layer").exists());
    assert!(img.path().join("etc/hello").exists() && !img.path().join("f").exists());

    // Mounting again after an unmount works; so does unmounting a never-mounted dir.
    ContainerRootfs::mount(img.path(), ctr.path(), 1 << 20).expect("mount again");
    ContainerRootfs::unmount(ctr.path()).unwrap();
    let never = tempdir("corral-ctr-");
    ContainerRootfs::unmount(never.path()).expect("never mounted");
    assert!(mounts_under(ctr.path()).is_empty());
}

#[test]
fn mount_refuses_bad_input_and_leaves_nothing() {
    require_root();
    let img = small_image();
    let ctr = tempdir("corral-ctr-");
    let _guard = Mounted(ctr.path().to_owned());
    let err = ContainerRootfs::mount(img.path(), ctr.path(), 0).unwrap_err();
    assert!(matches!(err, ImageError::InvalidSize), "{err}");

    let odd = tempdir("corral-ctr-");
    let comma = odd.path().join("a,b");
    fs::create_dir(&comma).unwrap();
    let err = ContainerRootfs::mount(img.path(), &comma, 1 << 20).unwrap_err();
    assert!(matches!(err, ImageError::InvalidPath { .. }), "{err}");
    assert_eq!(fs::read_dir(&comma).unwrap().count(), 0);

    // A failure halfway (the mount point is taken) undoes the tmpfs mount.
    fs::write(ctr.path().join("rootfs"), "in the way").unwrap();
    let err = ContainerRootfs::mount(img.path(), ctr.path(), 1 << 20).unwrap_err();
    assert!(matches!(err, ImageError::Io { .. }), "{err}");
    assert!(
        mounts_under(ctr.path()).is_empty(),
        "{:?}",
        mounts_under(ctr.path())
    );
    assert!(!ctr.path().join("layer").exists());
}

#[test]
fn a_container_rootfs_over_a_stored_image() {
    require_root();
    let (_tmp, store) = store();
    import(&store, "busybox", &tar_of_dir(rootfs())).unwrap();
    let image = store.rootfs("busybox").unwrap();
    let ctr = tempdir("corral-ctr-");
    let _guard = Mounted(ctr.path().to_owned());
    let fs_ = ContainerRootfs::mount(&image, ctr.path(), 1 << 20).expect("mount");
    assert!(fs_.path().join("bin/busybox").is_file());
    fs::write(fs_.path().join("tmp/x"), "x").unwrap();
    assert!(!image.join("tmp/x").exists());
    let err = store.delete("busybox", |_| true).unwrap_err();
    assert!(matches!(err, ImageError::InUse { .. }));
    ContainerRootfs::unmount(ctr.path()).unwrap();
    store.delete("busybox", |_| false).unwrap();
    assert!(matches!(fs::metadata(&image), Err(e) if e.kind() == ErrorKind::NotFound));
}
