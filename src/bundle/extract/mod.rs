//! Safe extraction of untrusted tar archives: OCI bundles and image layers.
//!
//! Clients upload archives; nothing in them is trusted. The guarantees:
//!
//! * **Nothing is written outside the destination.** Entry paths and hard
//!   link targets that are absolute or contain `..` are refused. Every file is
//!   created with `*at()` calls relative to a directory descriptor reached
//!   with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or a
//!   component-by-component `O_NOFOLLOW` walk where openat2 is missing), so a
//!   symlink is never followed: `a -> /etc` then `a/passwd` fails with "path
//!   goes through a symlink". Final components are never followed either
//!   (`O_CREAT | O_EXCL | O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), and an existing
//!   name is unlinked before it is replaced, so writing to a name that is a
//!   hard link never modifies the other names of its inode.
//! * **Only plain content.** Regular files, directories, symlinks and hard
//!   links. Device nodes, fifos, sparse and unknown entries are refused.
//!   Symlink targets are stored verbatim, wherever they point: they are only
//!   resolved later, inside a container's root. Extended attributes (pax
//!   xattr records) are never restored.
//! * **No privilege bits.** setuid and setgid are dropped everywhere; the
//!   sticky bit is dropped on files and kept on directories (`/tmp` is
//!   `01777`, and sticky grants nothing). When running as root, ownership is
//!   restored from the header (images need root-owned files), never through
//!   a symlink; otherwise files belong to the caller. Mtimes are restored,
//!   on directories after their content.
//! * **Bounded work.** See [`Limits`]: decompressed bytes are counted as they
//!   are read (header sizes are not trusted), and so are entries, the gzip
//!   expansion ratio, path depth and length.
//!
//! Duplicate entries: a later entry replaces an earlier one of the same name
//! (a directory is removed with its content, and with the metadata it was to
//! get), except that a directory over a directory only updates its owner, mode
//! and mtime.
//!
//! The archive may be plain or gzip-compressed (detected from the magic bytes
//! `1f 8b`; concatenated gzip members are accepted). After the tar
//! end-of-archive marker the rest of the stream is read and discarded, so the
//! gzip checksum is verified and the reader is left at its end.
//!
//! Known limits: GNU long-name and pax header blocks are buffered in memory by
//! the tar crate; their size is bounded only by `max_total_bytes`. Layers that
//! write through a symlink of a lower layer (`lib -> usr/lib` below, then
//! `lib/x`) are refused rather than resolved inside the root.

mod error;
mod fsops;
mod limits;
mod meta;
mod path;
mod stream;
mod unpack;
mod whiteout;

#[cfg(test)]
mod prop;
#[cfg(test)]
mod regressions;
#[cfg(test)]
mod tests;

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

pub use error::{ExtractError, PathRule};
pub use limits::{Limits, RATIO_GRACE_BYTES};

use unpack::Flavor;

/// What an extraction produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Archive entries processed, whiteouts and pax global headers included.
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

/// Extracts a tar stream (plain or gzip, detected from the magic bytes 1f 8b)
/// into `dest`, which must be an existing EMPTY directory. On any error,
/// everything written under `dest` is removed (dest itself is left empty) —
/// nothing half-extracted stays on disk; if that removal fails as well the
/// error is [`ExtractError::Cleanup`].
///
/// `dest` itself keeps its owner, mode and mtime; a `./` entry is accepted
/// and ignored. Names starting with `.wh.` are refused: whiteouts only make
/// sense in image layers (see [`apply_layer`]).
pub fn extract<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    let dest_err = |e: nix::errno::Errno| ExtractError::Destination {
        path: dest.to_owned(),
        source: e.into(),
    };
    let root = fsops::open_root(dest).map_err(dest_err)?;
    if !fsops::list_dir(root.as_fd()).map_err(dest_err)?.is_empty() {
        return Err(ExtractError::DestinationNotEmpty {
            path: dest.to_owned(),
        });
    }
    let mut wipe = WipeOnUnwind(Some(root.as_fd()));
    let result = unpack::run(reader, root.as_fd(), limits, Flavor::Bundle);
    wipe.0 = None;
    result.map_err(|error| match fsops::clear_dir(root.as_fd()) {
        Ok(()) => error,
        Err(e) => ExtractError::Cleanup {
            error: Box::new(error),
            source: e.into(),
        },
    })
}

/// Same, for OCI image layers: applies whiteouts (`.wh.NAME` deletes NAME
/// from lower content already in dest; `.wh..wh..opq` makes the directory
/// opaque = removes existing children before adding this layer's), and does
/// NOT require dest to be empty.
///
/// Whiteouts hide lower content only: what this layer itself adds survives
/// them in whatever order the entries come. A whiteout in a directory that
/// does not exist hides nothing; other `.wh..wh.` names (AUFS metadata) are
/// ignored; a `.wh.` component anywhere but last is refused.
///
/// `limits` bound this one layer; bounding a whole image (the sum over its
/// layers) is the caller's job.
///
/// **On error, `dest` is left partly modified** (lower content may already be
/// deleted, this layer may be half applied) and the caller must discard the
/// whole `dest` — typically the snapshot being built for the image — rather
/// than use it or retry on top of it.
pub fn apply_layer<R: Read>(
    reader: R,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ExtractError> {
    let root = fsops::open_root(dest).map_err(|e| ExtractError::Destination {
        path: dest.to_owned(),
        source: e.into(),
    })?;
    unpack::run(reader, root.as_fd(), limits, Flavor::Layer)
}

/// Empties the destination if extraction panics (the service is built with
/// `panic = "abort"`, but tests and debug builds unwind).
struct WipeOnUnwind<'a>(Option<BorrowedFd<'a>>);

impl Drop for WipeOnUnwind<'_> {
    fn drop(&mut self) {
        if let Some(root) = self.0 {
            // Nothing to report a failure to while unwinding.
            let _ = fsops::clear_dir(root);
        }
    }
}
