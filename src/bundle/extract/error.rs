//! Error type of the extractor.
//!
//! Every variant that concerns one archive entry carries the entry's path (as
//! it appeared in the archive, lossily decoded) and says which rule it broke,
//! so the HTTP layer can hand the message straight back to the client.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why an entry path (or a hard link target, or a symlink target) was refused.
///
/// The `Display` form is a predicate that completes "path …" or
/// "hard link target "x" …", e.g. "leaves the destination".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathRule {
    /// The name is empty.
    Empty,
    /// The name contains a NUL byte (possible through pax or GNU long names).
    Nul,
    /// The name is absolute, has a `..` component, or resolution left the
    /// destination.
    Escapes,
    /// The raw name is longer than [`Limits::max_path_len`](super::Limits).
    TooLong { len: usize, limit: usize },
    /// The name has more components than [`Limits::max_path_depth`](super::Limits).
    TooDeep { depth: usize, limit: usize },
    /// The name is `.` (or `./`) but the entry is not a directory.
    IsRoot,
    /// A parent component is a symlink; symlinks are never followed.
    ThroughSymlink,
    /// A parent component exists and is not a directory.
    ThroughNonDirectory,
    /// The path (hard link target) does not exist.
    Missing,
    /// The path (hard link target) is a directory.
    IsDirectory,
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("is empty"),
            Self::Nul => f.write_str("contains a NUL byte"),
            Self::Escapes => f.write_str("leaves the destination"),
            Self::TooLong { len, limit } => {
                write!(f, "is {len} bytes long, over the limit of {limit}")
            }
            Self::TooDeep { depth, limit } => {
                write!(f, "is {depth} components deep, over the limit of {limit}")
            }
            Self::IsRoot => f.write_str("names the destination itself"),
            Self::ThroughSymlink => f.write_str("goes through a symlink"),
            Self::ThroughNonDirectory => f.write_str("goes through a non-directory"),
            Self::Missing => f.write_str("does not exist"),
            Self::IsDirectory => f.write_str("is a directory"),
        }
    }
}

/// Everything that can make [`extract`](super::extract) or
/// [`apply_layer`](super::apply_layer) fail.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The destination could not be opened or listed.
    #[error("destination {path:?}: {source}")]
    Destination {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// [`extract`](super::extract) was given a destination that has content.
    #[error("destination {path:?} is not empty")]
    DestinationNotEmpty { path: PathBuf },
    /// The reader handed to us failed.
    #[error("reading archive: {0}")]
    Read(#[source] io::Error),
    /// The gzip layer is corrupt or truncated.
    #[error("gzip stream: {0}")]
    Gzip(#[source] io::Error),
    /// The tar layer is malformed (bad checksum, short header, ...).
    #[error("tar stream: {0}")]
    Tar(#[source] io::Error),
    /// More than `Limits::max_total_bytes` bytes came out of the decompressor.
    #[error("archive exceeds {limit} bytes uncompressed")]
    TooLarge { limit: u64 },
    /// More than `Limits::max_entries` entries.
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    /// The gzip stream expands more than `Limits::max_compression_ratio` times.
    #[error(
        "gzip stream expands more than {limit} times \
         ({uncompressed} bytes out of {compressed} compressed bytes)"
    )]
    CompressionRatio {
        limit: u64,
        compressed: u64,
        uncompressed: u64,
    },
    /// The entry's own path broke a rule.
    #[error("entry {path:?}: path {rule}")]
    Path { path: String, rule: PathRule },
    /// A hard link's target broke a rule.
    #[error("entry {path:?}: hard link target {target:?} {rule}")]
    LinkTarget {
        path: String,
        target: String,
        rule: PathRule,
    },
    /// A symlink's target is empty, has a NUL byte or is too long (where it
    /// points is never checked: it is only resolved inside a container).
    #[error("entry {path:?}: symlink target {rule}")]
    SymlinkTarget { path: String, rule: PathRule },
    /// Device nodes, fifos and the like.
    #[error("entry {path:?}: {kind} are not allowed")]
    ForbiddenType { path: String, kind: &'static str },
    /// A type flag this extractor does not know.
    #[error("entry {path:?}: entry type {} is not supported", TypeFlag(*.flag))]
    UnsupportedType { path: String, flag: u8 },
    /// A whiteout where none is allowed, or a malformed one.
    #[error("entry {path:?}: {reason}")]
    Whiteout { path: String, reason: &'static str },
    /// A numeric header field is corrupt or out of range.
    #[error("entry {path:?}: invalid header: {reason}")]
    InvalidHeader { path: String, reason: String },
    /// The stream ended inside an entry's data.
    #[error("entry {path:?}: archive ends after {written} of {expected} data bytes")]
    Truncated {
        path: String,
        written: u64,
        expected: u64,
    },
    /// A filesystem operation failed; `op` says which.
    #[error("entry {path:?}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// Extraction failed and removing what it had written failed too, so the
    /// destination may still hold part of the archive.
    #[error("{error}; removing the partial extraction also failed: {source}")]
    Cleanup {
        error: Box<ExtractError>,
        #[source]
        source: io::Error,
    },
}

impl ExtractError {
    /// Whether the archive broke a size limit (uncompressed bytes, entries, gzip ratio):
    /// too large rather than malformed.
    pub fn is_over_limit(&self) -> bool {
        match self {
            ExtractError::TooLarge { .. }
            | ExtractError::TooManyEntries { .. }
            | ExtractError::CompressionRatio { .. } => true,
            ExtractError::Cleanup { error, .. } => error.is_over_limit(),
            _ => false,
        }
    }
}

impl ExtractError {
    /// Whether the failure is the host's or corral's own rather than the archive's: the
    /// destination cannot be used, a file system call failed for a reason that no
    /// content explains (EIO, ENOSPC, EACCES, ...), or removing a partial extraction
    /// failed. Everything else (a path or link rule, a limit, a malformed or cut stream,
    /// a name over NAME_MAX, a symlink target or a link count the kernel refuses) is
    /// caused by the archive. The service answers the first kind with a 500, the second
    /// with a 4xx.
    pub fn is_service_fault(&self) -> bool {
        match self {
            ExtractError::Destination { .. }
            | ExtractError::DestinationNotEmpty { .. }
            | ExtractError::Cleanup { .. } => true,
            // Errors of the stream under the tar reader come without an errno.
            ExtractError::Io { source, .. } => source.raw_os_error().is_some_and(|errno| {
                !matches!(
                    nix::errno::Errno::from_raw(errno),
                    nix::errno::Errno::ENAMETOOLONG | nix::errno::Errno::EMLINK
                )
            }),
            _ => false,
        }
    }
}

/// Renders a tar type flag readably: `'V'` for printable ASCII, `0x80` otherwise.
struct TypeFlag(u8);

impl fmt::Display for TypeFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_ascii_graphic() {
            write!(f, "'{}'", char::from(self.0))
        } else {
            write!(f, "{:#04x}", self.0)
        }
    }
}

/// `Io` error for a failed `op` on entry `path`.
pub(super) fn io_err(
    path: &str,
    op: &'static str,
) -> impl FnOnce(nix::errno::Errno) -> ExtractError {
    move |errno| ExtractError::Io {
        path: path.to_owned(),
        op,
        source: errno.into(),
    }
}

/// Maps a failure to reach an entry's parent directory: a symlink or a
/// non-directory on the way breaks a path rule; anything else is an `Io`
/// error for `op`.
pub(super) fn parent_err(
    path: &str,
    op: &'static str,
) -> impl FnOnce(nix::errno::Errno) -> ExtractError {
    move |errno| {
        let rule = match errno {
            nix::errno::Errno::ELOOP => PathRule::ThroughSymlink,
            nix::errno::Errno::ENOTDIR => PathRule::ThroughNonDirectory,
            nix::errno::Errno::EXDEV => PathRule::Escapes,
            _ => return io_err(path, op)(errno),
        };
        ExtractError::Path {
            path: path.to_owned(),
            rule,
        }
    }
}
