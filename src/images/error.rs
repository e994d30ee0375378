//! Error type of the image store.
//!
//! Every variant names the image, the path or the digest it failed on, so the
//! HTTP layer can hand the message straight back to the client.

use std::io;
use std::path::{Path, PathBuf};

use crate::bundle::extract::ExtractError;

/// Everything that can make an [`ImageStore`](super::ImageStore) or a
/// [`ContainerRootfs`](super::ContainerRootfs) operation fail.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The image name breaks the naming rule (see [`validate_name`](super::validate_name)).
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// No image of that name.
    #[error("image {name:?} not found")]
    NotFound { name: String },
    /// An image of that name exists already.
    #[error("image {name:?} already exists")]
    AlreadyExists { name: String },
    /// `delete` was refused: a container uses the image.
    #[error("image {name:?} is in use")]
    InUse { name: String },
    /// The uploaded archive could not be extracted (limits, hostile paths,
    /// corrupt tar or gzip).
    #[error("image {name:?}: upload: {source}")]
    Upload {
        name: String,
        #[source]
        source: ExtractError,
    },
    /// An OCI layer could not be applied.
    #[error("image {name:?}: layer {digest}: {source}")]
    Layer {
        name: String,
        digest: String,
        #[source]
        source: ExtractError,
    },
    /// The upload looks like an OCI image layout but breaks the spec, or uses
    /// something this store does not support (zstd layers, sha512 digests, ...).
    #[error("image {name:?}: OCI layout: {reason}")]
    Layout { name: String, reason: String },
    /// A blob's content does not hash to the digest its descriptor names.
    #[error("image {name:?}: blob {digest} has digest sha256:{actual}")]
    DigestMismatch {
        name: String,
        digest: String,
        actual: String,
    },
    /// A blob's length differs from the size its descriptor names.
    #[error("image {name:?}: blob {digest} is {actual} bytes, its descriptor says {expected}")]
    SizeMismatch {
        name: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
    /// A recipe script failed or produced no root filesystem.
    #[error("image {name:?}: recipe {script:?}: {reason}")]
    Recipe {
        name: String,
        script: PathBuf,
        reason: String,
    },
    /// A directory could not be copied into the store.
    #[error("image {name:?}: copying {dir:?}: {reason}")]
    Copy {
        name: String,
        dir: PathBuf,
        reason: String,
    },
    /// An image's `info.json` cannot be read back.
    #[error("image metadata {path:?}: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A path that cannot be used (for example in overlay mount options).
    #[error("{path:?}: {reason}")]
    InvalidPath { path: PathBuf, reason: &'static str },
    /// A writable layer of zero bytes (tmpfs reads `size=0` as "unlimited").
    #[error("writable layer size must be at least one byte")]
    InvalidSize,
    /// A filesystem or mount operation failed; `op` says which.
    #[error("{op} {path:?}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `Io` error for a failed `op` on `path`, from an `io::Error`.
pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImageError {
    let path = path.to_owned();
    move |source| ImageError::Io { op, path, source }
}

/// `Io` error for a failed `op` on `path`, from an errno.
pub(super) fn errno_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(nix::errno::Errno) -> ImageError {
    let path = path.to_owned();
    move |errno| ImageError::Io {
        op,
        path,
        source: errno.into(),
    }
}
