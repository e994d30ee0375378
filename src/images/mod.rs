//! The named image store: root filesystems imported once (from a rootfs tar,
//! an OCI image layout tar, or a recipe), kept read-only under
//! `<data>/images/<name>/rootfs`, and shared by containers through a
//! per-container overlay with a size-capped writable layer.
//!
//! * [`ImageStore`]: list, get, import (atomically: a temp dir renamed into
//!   place), delete.
//! * [`ContainerRootfs`]: the overlay of one container over one image.
//!
//! Uploads are untrusted: they are unpacked with
//! [`extract`](crate::bundle::extract::extract) and
//! [`apply_layer`](crate::bundle::extract::apply_layer), under the caller's
//! [`Limits`](crate::bundle::extract::Limits), and every OCI blob is checked
//! against its descriptor's digest and size before use.

mod blob;
mod error;
mod info;
mod metadata;
mod name;
mod oci;
mod overlay;
mod recipe;
mod staging;
mod store;
mod tree;

pub use error::ImageError;
pub use info::{ImageInfo, SOURCE_OCI_LAYOUT, SOURCE_RECIPE_PREFIX, SOURCE_ROOTFS_TAR};
pub use metadata::{Language, METADATA_DIR, METADATA_FILE};
pub use name::{MAX_NAME_LEN, validate_name};
pub use overlay::ContainerRootfs;
pub use store::ImageStore;
