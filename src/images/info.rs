//! What the store records about an image (`<root>/<name>/info.json`), and the
//! helpers that fill it in: creation time and size on disk.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{ImageError, io_err};
use super::metadata::{Language, read_languages};

/// `source` of an image imported from a plain root filesystem tar.
pub const SOURCE_ROOTFS_TAR: &str = "rootfs-tar";
/// `source` of an image imported from an OCI image layout tar.
pub const SOURCE_OCI_LAYOUT: &str = "oci-layout";
/// Prefix of the `source` of an image built by a recipe (`recipe:busybox`).
pub const SOURCE_RECIPE_PREFIX: &str = "recipe:";

/// One image of the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct ImageInfo {
    /// The image's name in the store.
    pub name: String,
    /// When the import finished, RFC 3339 in UTC (`2024-05-01T12:00:00Z`).
    pub created: String,
    /// Bytes of regular-file content in the root filesystem (hard links
    /// counted once).
    pub size_bytes: u64,
    /// `"rootfs-tar"`, `"oci-layout"`, `"recipe:<recipe>"`, or what the caller
    /// of [`ImageStore::import_dir`](super::ImageStore::import_dir) passed.
    pub source: String,
    /// `sha256:<hex>`: the manifest digest of an OCI image, the digest of the
    /// uploaded stream (as sent, compressed or not) of a rootfs tar, none for
    /// a directory import.
    pub digest: Option<String>,
    /// The languages the image carries, with their versions, as its
    /// `/etc/corral-image.json` declares them at import; empty when it
    /// declares none.
    #[serde(default)]
    pub languages: Vec<Language>,
    /// Free-form annotations. Images imported from a directory of built images
    /// have `org.corral.recipe-stamp` (the recipe's stamp, to notice a rebuild).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// File name of an image's metadata, next to its `rootfs/`.
pub(super) const INFO_FILE: &str = "info.json";

impl ImageInfo {
    /// A record for an import finishing now, with the languages the root
    /// filesystem declares.
    pub(super) fn new(
        name: &str,
        rootfs: &Path,
        source: &str,
        digest: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<Self, ImageError> {
        Ok(Self {
            name: name.to_owned(),
            created: crate::runtime::state::now_rfc3339(),
            size_bytes: tree_size(rootfs)?,
            source: source.to_owned(),
            digest,
            languages: read_languages(rootfs),
            labels,
        })
    }

    /// Writes the record as `dir/info.json` (mode 0644). `dir` is still a
    /// private temp dir: it is renamed into place as a whole afterwards.
    pub(super) fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let path = dir.join(INFO_FILE);
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| ImageError::Metadata {
            path: path.clone(),
            source,
        })?;
        text.push(b'\n');
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        file.write_all(&text).map_err(io_err("writing", &path))?;
        file.sync_all().map_err(io_err("syncing", &path))
    }

    /// Reads `dir/info.json`; a missing file is `NotFound` for `name`.
    pub(super) fn read(name: &str, dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join(INFO_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| ImageError::Metadata { path, source })
    }
}

/// Bytes of regular-file content under `root`, never following symlinks and
/// counting each inode once. Iterative, so depth costs heap, not stack.
pub(super) fn tree_size(root: &Path) -> Result<u64, ImageError> {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino())))
            {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}
