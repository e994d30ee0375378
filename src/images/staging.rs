//! Temp dirs of the store: every import is built in `<root>/.tmp-<random>`
//! and renamed into place as a whole, so an image is either complete or
//! absent; a crash leaves only `.tmp-*` entries, which `open` removes.

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};

use super::error::{ImageError, errno_err, io_err};

/// Prefix of the store's temp dirs (image names cannot start with `.`).
pub(super) const TEMP_PREFIX: &str = ".tmp-";

/// A private temp dir under the store root, removed on drop unless it was
/// published (renamed to an image name).
#[derive(Debug)]
pub(super) struct Staging {
    path: PathBuf,
    /// Set once the dir is gone or renamed: nothing left to remove.
    done: bool,
}

impl Staging {
    /// Creates `<root>/.tmp-<random>`, mode 0700.
    pub(super) fn new(root: &Path) -> Result<Self, ImageError> {
        loop {
            let path = root.join(temp_name());
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path, done: false }),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("creating temp dir", &path)(e)),
            }
        }
    }

    /// The temp dir.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the temp dir to `<root>/<name>`, never replacing anything:
    /// an existing `name` is `AlreadyExists` (the temp dir stays until drop).
    pub(super) fn publish(&mut self, root: &Path, name: &str) -> Result<(), ImageError> {
        let target = root.join(name);
        rename_noreplace(&self.path, &target).map_err(|errno| match errno {
            Errno::EEXIST | Errno::ENOTEMPTY => ImageError::AlreadyExists {
                name: name.to_owned(),
            },
            errno => errno_err("renaming temp dir to", &target)(errno),
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.done
            && let Err(e) = remove_tree(&self.path)
        {
            // Nothing else to report to; `open` retries at the next start.
            tracing::warn!(error = %e, "removing image temp dir");
        }
    }
}

/// `rename(from, to)` that fails with EEXIST instead of replacing `to`.
/// Falls back to a plain rename (which cannot replace a non-empty
/// directory) on filesystems without `RENAME_NOREPLACE`.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Err(Errno::EINVAL) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(Errno::EEXIST);
            }
            nix::fcntl::renameat(AT_FDCWD, from, AT_FDCWD, to)
        }
        other => other,
    }
}

/// Removes `path` and everything under it (symlinks are removed, never
/// followed); a missing path is fine.
pub(super) fn remove_tree(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

/// Moves `<root>/<name>` out of sight (to a temp name), then removes it, so
/// that a failure or a crash halfway never leaves a half-deleted image.
pub(super) fn remove_image_dir(root: &Path, name: &str) -> Result<(), ImageError> {
    let dir = root.join(name);
    let doomed = root.join(temp_name());
    rename_noreplace(&dir, &doomed).map_err(|errno| match errno {
        Errno::ENOENT => ImageError::NotFound {
            name: name.to_owned(),
        },
        errno => errno_err("moving image dir away", &dir)(errno),
    })?;
    remove_tree(&doomed)
}

/// Removes every `.tmp-*` entry of `root`: imports and deletions that a
/// crash interrupted.
pub(super) fn remove_leftovers(root: &Path) -> Result<(), ImageError> {
    for entry in fs::read_dir(root).map_err(io_err("listing", root))? {
        let entry = entry.map_err(io_err("listing", root))?;
        if entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing leftover of an interrupted import");
            remove_tree(&path)?;
        }
    }
    Ok(())
}

/// `.tmp-<16 hex digits>`, unpredictable enough that two processes sharing a
/// store do not collide (creation is exclusive anyway).
fn temp_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded from the OS's randomness once per thread.
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{TEMP_PREFIX}{:016x}", hasher.finish())
}
