//! OCI whiteouts, for [`apply_layer`](super::apply_layer) only.
//!
//! Per the image spec a whiteout hides content of *lower* layers only, so
//! whatever this layer itself created (tracked in `ours`, ancestors
//! included) survives a whiteout or an opaque marker, whichever order the
//! entries come in.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;

use super::error::{ExtractError, io_err, parent_err};
use super::fsops;
use super::path::{EntryPath, Whiteout, join};

/// Applies the whiteout entry at `path` (classified as `kind`) to the tree
/// under `root`. A whiteout whose directory does not exist hides nothing.
pub(super) fn apply(
    root: BorrowedFd<'_>,
    path: &EntryPath,
    kind: &Whiteout<'_>,
    ours: &HashSet<Vec<u8>>,
    shown: &str,
) -> Result<(), ExtractError> {
    let Some((parent, _)) = path.split_last() else {
        return Ok(());
    };
    let dir = match fsops::open_dir(root, parent, false) {
        Ok(dir) => dir,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(parent_err(shown, "opening whiteout directory")(e)),
    };
    match kind {
        Whiteout::Remove(hidden) => {
            if ours.contains(&join(parent, hidden)) {
                return Ok(());
            }
            fsops::remove_at(dir.as_fd(), hidden).map_err(io_err(shown, "removing hidden file"))
        }
        Whiteout::Opaque => remove_lower(dir.as_fd(), parent, ours)
            .map_err(io_err(shown, "emptying opaque directory")),
        Whiteout::Meta | Whiteout::No => Ok(()),
    }
}

/// Removes from `dir` (at `dir_path`) everything not in `ours`, descending
/// into the directories this layer has content in.
fn remove_lower(dir: BorrowedFd<'_>, dir_path: &[u8], ours: &HashSet<Vec<u8>>) -> nix::Result<()> {
    for name in fsops::list_dir(dir)? {
        let child_path = join(dir_path, &name);
        if !ours.contains(&child_path) {
            fsops::remove_at(dir, &name)?;
            continue;
        }
        // Depth is bounded by this layer's own (validated) paths.
        if let Some(st) = fsops::lstat_at(dir, &name)?
            && fsops::is_dir(&st)
        {
            let child = fsops::open_dir(dir, &name, false)?;
            remove_lower(child.as_fd(), &child_path, ours)?;
        }
    }
    Ok(())
}
