//! The named image store: `<data>/images/<name>/{info.json,rootfs/}`.
//!
//! Imports are built in a private temp dir of the store root and renamed to
//! their name as a whole (see `staging.rs`), so an image is
//! complete or absent, and two imports of one name cannot both succeed.
//! Images never change after import; containers write to their own layer
//! ([`ContainerRootfs`](super::ContainerRootfs)).
//!
//! All calls block (file system work, for imports a lot of it); an async
//! caller runs them on a blocking thread.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::blob::HashingReader;
use super::error::{ImageError, io_err};
use super::info::{ImageInfo, SOURCE_OCI_LAYOUT, SOURCE_RECIPE_PREFIX, SOURCE_ROOTFS_TAR};
use super::name::validate_name;
use super::staging::{Staging, remove_image_dir, remove_leftovers, remove_tree};
use super::{oci, recipe, tree};
use crate::bundle::extract::{Limits, extract};

/// Name of an image's root filesystem inside its directory.
const ROOTFS_DIR: &str = "rootfs";

/// The named image store under one root directory (`<data>/images`).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens the store at `root`, creating it (mode 0700) if needed, and
    /// removes what interrupted imports and deletions left behind.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err("creating image store", root))?;
        remove_leftovers(root)?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every image, sorted by name. An image whose metadata cannot be read
    /// is logged and left out rather than failing the whole listing.
    pub fn list(&self) -> Result<Vec<ImageInfo>, ImageError> {
        let mut images = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(io_err("listing", &self.root))? {
            let entry = entry.map_err(io_err("listing", &self.root))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if validate_name(&name).is_err() {
                continue; // temp dirs and strays
            }
            match ImageInfo::read(&name, &entry.path()) {
                Ok(info) => images.push(info),
                Err(error) => tracing::warn!(image = %name, %error, "skipping unreadable image"),
            }
        }
        images.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(images)
    }

    /// The image `name`, or `NotFound`.
    pub fn get(&self, name: &str) -> Result<ImageInfo, ImageError> {
        validate_name(name)?;
        ImageInfo::read(name, &self.root.join(name))
    }

    /// The read-only root filesystem directory of image `name`.
    pub fn rootfs(&self, name: &str) -> Result<PathBuf, ImageError> {
        self.get(name)?;
        Ok(self.root.join(name).join(ROOTFS_DIR))
    }

    /// Imports image `name` from a tar stream (plain or gzip): either a plain
    /// root filesystem, or an OCI image layout (`oci-layout`, `index.json`,
    /// `blobs/sha256/...`), told apart by content once the upload is
    /// extracted. Layouts: OCI and Docker v2 manifests and indexes, uncompressed
    /// and gzip layers, sha256 digests; the manifest is the only one, or the
    /// one for this host's platform (linux/amd64 here).
    ///
    /// `limits` bound the upload, and separately the sum of an OCI image's
    /// layers. Atomic: on any error nothing is left in the store.
    pub fn import_tar<R: Read>(
        &self,
        name: &str,
        reader: R,
        limits: &Limits,
    ) -> Result<ImageInfo, ImageError> {
        self.check_new(name)?;
        let mut staging = Staging::new(&self.root)?;
        let upload = staging.path().join("upload");
        make_dir(&upload)?;
        let mut hashing = HashingReader::new(reader);
        extract(&mut hashing, &upload, limits).map_err(|source| ImageError::Upload {
            name: name.to_owned(),
            source,
        })?;
        let upload_digest = format!("sha256:{}", hashing.hex());
        let rootfs = staging.path().join(ROOTFS_DIR);
        let (source, digest) = if oci::is_layout(&upload) {
            make_dir(&rootfs)?;
            let digest = oci::build_rootfs(&upload, &rootfs, name, limits)?;
            remove_tree(&upload)?;
            (SOURCE_OCI_LAYOUT, digest)
        } else {
            fs::rename(&upload, &rootfs).map_err(io_err("renaming", &upload))?;
            (SOURCE_ROOTFS_TAR, upload_digest)
        };
        self.register(&mut staging, name, source, Some(digest), BTreeMap::new())
    }

    /// Before an import from `dir`: `name` is free and `dir` is a directory (not a
    /// symlink to one).
    fn check_source(&self, name: &str, dir: &Path) -> Result<(), ImageError> {
        self.check_new(name)?;
        let meta = fs::symlink_metadata(dir).map_err(io_err("inspecting", dir))?;
        if !meta.is_dir() {
            return Err(ImageError::InvalidPath {
                path: dir.to_owned(),
                reason: "is not a directory",
            });
        }
        Ok(())
    }

    /// Registers the prepared root filesystem `dir` as image `name`: `dir` is
    /// MOVED (renamed) into the store, so it must be on the store's file
    /// system. On error `dir` is moved back where it was.
    pub fn import_dir(
        &self,
        name: &str,
        dir: &Path,
        source: &str,
    ) -> Result<ImageInfo, ImageError> {
        self.check_source(name, dir)?;
        let mut staging = Staging::new(&self.root)?;
        let rootfs = staging.path().join(ROOTFS_DIR);
        fs::rename(dir, &rootfs).map_err(|e| {
            if e.raw_os_error() == Some(libc::EXDEV) {
                ImageError::InvalidPath {
                    path: dir.to_owned(),
                    reason: "is not on the image store's file system",
                }
            } else {
                io_err("moving into the image store", dir)(e)
            }
        })?;
        // Move it back before the temp dir is dropped (and removed).
        self.register(&mut staging, name, source, None, BTreeMap::new())
            .inspect_err(|_| {
                if let Err(e) = fs::rename(&rootfs, dir) {
                    tracing::warn!(
                        error = %e,
                        dir = %dir.display(),
                        "moving a directory back after a failed import"
                    );
                }
            })
    }

    /// Imports a copy of the root filesystem `dir` as image `name`, with
    /// `labels`; `dir` is left as it is and may be on any file system.
    ///
    /// The tree is streamed as tar (never following a symlink, hard links
    /// kept, special files left out) through the same safe extractor as an
    /// upload, under `limits`: setuid/setgid bits are dropped, ownership is
    /// kept when running as root. Atomic: on error nothing is left in the store.
    pub fn import_tree(
        &self,
        name: &str,
        dir: &Path,
        source: &str,
        labels: BTreeMap<String, String>,
        limits: &Limits,
    ) -> Result<ImageInfo, ImageError> {
        self.check_source(name, dir)?;
        let mut staging = Staging::new(&self.root)?;
        let rootfs = staging.path().join(ROOTFS_DIR);
        make_dir(&rootfs)?;
        let (reader, writer) = std::io::pipe().map_err(io_err("creating a pipe to copy", dir))?;
        let (written, extracted) = std::thread::scope(|scope| {
            let walker = scope.spawn(move || tree::write_tar(dir, writer));
            // `extract` drops the reader when it returns: a walker still
            // writing then fails with EPIPE instead of blocking.
            let extracted = extract(reader, &rootfs, limits);
            (walker.join(), extracted)
        });
        let failed = |reason: String| ImageError::Copy {
            name: name.to_owned(),
            dir: dir.to_owned(),
            reason,
        };
        match (written, extracted) {
            (Err(_), _) => return Err(failed("the tree walker panicked".to_owned())),
            // The walker's own failure explains a truncated stream; a broken
            // pipe only means the extractor gave up first.
            (Ok(Err(e)), _) if e.kind() != ErrorKind::BrokenPipe => {
                return Err(failed(e.to_string()));
            }
            (_, Err(e)) => return Err(failed(e.to_string())),
            (Ok(Err(e)), Ok(_)) => return Err(failed(e.to_string())),
            (Ok(Ok(())), Ok(_)) => {}
        }
        self.register(&mut staging, name, source, None, labels)
    }

    /// Builds image `name` by running the recipe `script` (for example
    /// `rootfs-images/busybox/build.sh`) with a temp dir of the store as its
    /// OUTDIR, then registers the result with source `recipe:<recipe>`,
    /// `<recipe>` being the script's directory name.
    pub fn import_recipe(&self, name: &str, script: &Path) -> Result<ImageInfo, ImageError> {
        self.check_new(name)?;
        let mut staging = Staging::new(&self.root)?;
        let rootfs = staging.path().join(ROOTFS_DIR);
        let failed = |reason: String| ImageError::Recipe {
            name: name.to_owned(),
            script: script.to_owned(),
            reason,
        };
        recipe::run(script, &rootfs).map_err(failed)?;
        if !fs::symlink_metadata(&rootfs).is_ok_and(|m| m.is_dir()) {
            return Err(failed(
                "OUTDIR is not a directory after the recipe ran".to_owned(),
            ));
        }
        let source = format!("{SOURCE_RECIPE_PREFIX}{}", recipe::recipe_name(script));
        self.register(&mut staging, name, &source, None, BTreeMap::new())
    }

    /// Deletes image `name`, unless `in_use(name)` says a container uses it
    /// (`InUse`). The image vanishes atomically, then its files are removed.
    ///
    /// The check and the deletion are not atomic with respect to container
    /// creation: the caller serialises the two.
    pub fn delete(&self, name: &str, in_use: impl Fn(&str) -> bool) -> Result<(), ImageError> {
        self.get(name)?;
        if in_use(name) {
            return Err(ImageError::InUse {
                name: name.to_owned(),
            });
        }
        remove_image_dir(&self.root, name)
    }

    /// Refuses a bad or taken name before any work is done (the final
    /// rename checks again).
    fn check_new(&self, name: &str) -> Result<(), ImageError> {
        validate_name(name)?;
        match fs::symlink_metadata(self.root.join(name)) {
            Ok(_) => Err(ImageError::AlreadyExists {
                name: name.to_owned(),
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("inspecting", &self.root.join(name))(e)),
        }
    }

    /// Writes the metadata of the root filesystem in `staging` and renames
    /// the temp dir to `name`. On error the temp dir is still there (its
    /// drop removes it).
    fn register(
        &self,
        staging: &mut Staging,
        name: &str,
        source: &str,
        digest: Option<String>,
        labels: BTreeMap<String, String>,
    ) -> Result<ImageInfo, ImageError> {
        let rootfs = staging.path().join(ROOTFS_DIR);
        let info = ImageInfo::new(name, &rootfs, source, digest, labels)?;
        info.write(staging.path())?;
        staging.publish(&self.root, name)?;
        Ok(info)
    }
}

/// `mkdir path` with mode 0755, whatever the umask (an image root of 0700
/// would lock every unprivileged container user out of `/`).
fn make_dir(path: &Path) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .map_err(io_err("creating", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(io_err("setting the mode of", path))
}
