//! A container's private root filesystem over an image:
//!
//! ```text
//! <container_dir>/layer    tmpfs, size=<size_bytes>, mode 0700
//!                 layer/upper  the container's writes (overlay upperdir)
//!                 layer/work   overlay workdir
//! <container_dir>/rootfs   overlay: lowerdir=<image rootfs>, upperdir, workdir
//! ```
//!
//! The image is the read-only lower layer and never changes; every write
//! lands in `upper`, on a tmpfs whose size caps the writable layer (a write
//! past it fails with ENOSPC). The tmpfs also caps inodes (one per KiB of
//! size, at least 1024), so tiny files cannot pin unbounded kernel memory.
//!
//! Both mounts are made in the caller's (the service's) mount namespace; the
//! runtime later bind-mounts `rootfs` into the container. They are not tied
//! to this value's lifetime: a container outlives a service restart, and
//! [`ContainerRootfs::unmount`] is what removes them (on delete, or when
//! recovery finds a dead container).

use std::ffi::OsString;
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::unistd::{Gid, Uid, chown};

use super::error::{ImageError, errno_err, io_err};

const LAYER_DIR: &str = "layer";
const ROOTFS_DIR: &str = "rootfs";
const UPPER_DIR: &str = "upper";
const WORK_DIR: &str = "work";

/// Fewest inodes a writable layer gets, however small.
const MIN_INODES: u64 = 1024;
/// Mount options must fit in one page, NUL included.
const MAX_OPTIONS_LEN: usize = 4095;
/// Stacked mounts removed from one path before giving up.
const MAX_STACKED_MOUNTS: usize = 32;

/// A mounted container root filesystem (see the module docs).
#[derive(Debug)]
pub struct ContainerRootfs {
    rootfs: PathBuf,
    upper: PathBuf,
}

impl ContainerRootfs {
    /// Mounts a writable layer of `size_bytes` at `<container_dir>/layer`
    /// and the overlay at `<container_dir>/rootfs`. `container_dir` must
    /// exist and hold neither. Paths with `,`, `:` or `\` are refused (overlay
    /// options cannot carry them). On error everything made so far is undone.
    pub fn mount(
        image_rootfs: &Path,
        container_dir: &Path,
        size_bytes: u64,
    ) -> Result<Self, ImageError> {
        if size_bytes == 0 {
            return Err(ImageError::InvalidSize);
        }
        let lower = fs::canonicalize(image_rootfs)
            .map_err(io_err("resolving image rootfs", image_rootfs))?;
        let lower_meta = fs::metadata(&lower).map_err(io_err("inspecting image rootfs", &lower))?;
        if !lower_meta.is_dir() {
            return Err(ImageError::InvalidPath {
                path: lower,
                reason: "image rootfs is not a directory",
            });
        }
        let dir = fs::canonicalize(container_dir)
            .map_err(io_err("resolving container dir", container_dir))?;
        let layer = dir.join(LAYER_DIR);
        let rootfs = dir.join(ROOTFS_DIR);
        let upper = layer.join(UPPER_DIR);
        let work = layer.join(WORK_DIR);
        let options = overlay_options(&lower, &upper, &work)?;

        let mut undo = Undo(Vec::new());
        make_dir(&layer, 0o700)?;
        undo.0.push(Step::Rmdir(layer.clone()));
        let inodes = (size_bytes / 1024).max(MIN_INODES);
        let tmpfs_options = format!("size={size_bytes},nr_inodes={inodes},mode=0700");
        mount(
            Some("tmpfs"),
            &layer,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(tmpfs_options.as_str()),
        )
        .map_err(errno_err("mounting the writable layer (tmpfs) on", &layer))?;
        undo.0.push(Step::Unmount(layer.clone()));
        // The merged root directory takes its owner and mode from upper.
        make_dir(&upper, lower_meta.mode() & 0o7777)?;
        fs::set_permissions(
            &upper,
            fs::Permissions::from_mode(lower_meta.mode() & 0o7777),
        )
        .map_err(io_err("setting the mode of", &upper))?;
        chown(
            &upper,
            Some(Uid::from_raw(lower_meta.uid())),
            Some(Gid::from_raw(lower_meta.gid())),
        )
        .map_err(errno_err("setting the owner of", &upper))?;
        make_dir(&work, 0o700)?;
        make_dir(&rootfs, 0o755)?;
        undo.0.push(Step::Rmdir(rootfs.clone()));
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_os_str()),
        )
        .map_err(errno_err("mounting the overlay on", &rootfs))?;
        undo.0.clear();
        Ok(Self { rootfs, upper })
    }

    /// The merged, writable root filesystem (`<container_dir>/rootfs`).
    pub fn path(&self) -> &Path {
        &self.rootfs
    }

    /// Where the container's writes land (`<container_dir>/layer/upper`).
    pub fn upper(&self) -> &Path {
        &self.upper
    }

    /// Unmounts the overlay, then the writable layer (lazily, `MNT_DETACH`:
    /// processes still inside keep their view until they exit), and removes
    /// both mount points. Idempotent: what is already gone is skipped, so it
    /// also cleans up after a crash halfway through `mount` or `unmount`.
    /// Never removes anything recursively: a mount point that is not empty
    /// after unmounting is an error, not something to delete through.
    pub fn unmount(container_dir: &Path) -> Result<(), ImageError> {
        for name in [ROOTFS_DIR, LAYER_DIR] {
            let path = container_dir.join(name);
            detach_all(&path)?;
            remove_empty_dir(&path)?;
        }
        Ok(())
    }
}

/// `lowerdir=..,upperdir=..,workdir=..`, refusing paths overlay would split.
fn overlay_options(lower: &Path, upper: &Path, work: &Path) -> Result<OsString, ImageError> {
    let mut options = OsString::new();
    for (key, path) in [
        ("lowerdir=", lower),
        (",upperdir=", upper),
        (",workdir=", work),
    ] {
        if path
            .as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\'))
        {
            return Err(ImageError::InvalidPath {
                path: path.to_owned(),
                reason: "overlay mount options cannot hold a path with ',', ':' or '\\'",
            });
        }
        options.push(key);
        options.push(path);
    }
    if options.len() > MAX_OPTIONS_LEN {
        return Err(ImageError::InvalidPath {
            path: lower.to_owned(),
            reason: "paths too long for overlay mount options (one page)",
        });
    }
    Ok(options)
}

/// Unmounts `path` until it is no mount point any more (mounts can stack).
fn detach_all(path: &Path) -> Result<(), ImageError> {
    for _ in 0..MAX_STACKED_MOUNTS {
        match umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // EINVAL: not a mount point (any more); ENOENT: not there at all.
            Err(Errno::EINVAL | Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(errno_err("unmounting", path)(e)),
        }
    }
    Err(ImageError::Io {
        op: "unmounting",
        path: path.to_owned(),
        source: std::io::Error::other(format!("still mounted after {MAX_STACKED_MOUNTS} unmounts")),
    })
}

/// `rmdir path`; a missing path is fine.
fn remove_empty_dir(path: &Path) -> Result<(), ImageError> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

/// `mkdir path` with `mode` (the umask still applies: callers that need the
/// exact mode set it afterwards).
fn make_dir(path: &Path, mode: u32) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .map_err(io_err("creating", path))
}

/// What to undo if `mount` fails halfway.
enum Step {
    Unmount(PathBuf),
    Rmdir(PathBuf),
}

/// Undoes the recorded steps, last first, when dropped (cleared on success).
struct Undo(Vec<Step>);

impl Drop for Undo {
    fn drop(&mut self) {
        // Best effort: the error that made us undo is the one reported.
        for step in self.0.drain(..).rev() {
            let result = match &step {
                Step::Unmount(path) => detach_all(path),
                Step::Rmdir(path) => remove_empty_dir(path),
            };
            if let Err(error) = result {
                tracing::warn!(%error, "undoing a failed container rootfs mount");
            }
        }
    }
}
