//! Images from a directory of built images (the `images_dir` option): every
//! `<dir>/<name>/rootfs` is imported (copied) into the store on start when the
//! store lacks `<name>`, or when `<dir>/<name>/rootfs.stamp` (written by the
//! recipes in `rootfs-images/`: a hash of the recipe and its inputs) differs
//! from the stamp recorded at the last import (label [`STAMP_LABEL`]). That is
//! the layout `make images` builds in `build/images`.
//!
//! A changed image that a container still uses is kept (and logged) until the
//! next start; without a stamp file, an image already in the store is kept.
//! A replacement deletes the old image and then imports the new one: this runs
//! before the API serves, so no request sees the gap.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use super::ServiceError;
use super::images::image_error;
use crate::bundle::extract::Limits as TarLimits;
use crate::images::{ImageError, ImageStore, SOURCE_RECIPE_PREFIX, validate_name};

/// The label holding the recipe stamp an image was imported with.
pub const STAMP_LABEL: &str = "org.corral.recipe-stamp";
/// `source` of an image imported from an images dir without a stamp.
pub const SOURCE_IMAGES_DIR: &str = "images-dir";
/// The root filesystem of an image in the dir, and its stamp next to it.
const ROOTFS: &str = "rootfs";
const STAMP: &str = "rootfs.stamp";
/// Longest stamp read (the recipes write about 250 bytes).
const MAX_STAMP_BYTES: u64 = 4096;

/// What [`sync`] did to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    Replaced,
    Unchanged,
    /// Changed in the dir, but a container uses the store's copy.
    KeptInUse,
}

/// Imports the images of `dir` into `store` (see the module doc); `in_use(name)`
/// says whether a container uses an image. Returns what happened to each image,
/// by name. Stops at the first failure: a configured image that cannot be
/// imported is an error of the service's start.
pub fn sync(
    store: &ImageStore,
    dir: &Path,
    limits: &TarLimits,
    in_use: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Outcome)>, ServiceError> {
    let io = |op: &str, p: &Path| {
        let what = format!("{op} {}", p.display());
        move |e| ServiceError::io(what, e)
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io("list the images dir", dir))? {
        let entry = entry.map_err(io("list the images dir", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with('.') {
            continue; // caches and temp dirs of the recipes
        }
        let rootfs = entry.path().join(ROOTFS);
        if !fs::symlink_metadata(&rootfs).is_ok_and(|m| m.is_dir()) {
            tracing::debug!(path = %rootfs.display(), "no root filesystem: not an image");
            continue;
        }
        if let Err(e) = validate_name(&name) {
            tracing::warn!(dir = %entry.path().display(), error = %e, "not importing");
            continue;
        }
        names.push(name);
    }
    names.sort();
    let mut done = Vec::new();
    for name in names {
        let outcome = sync_one(store, &dir.join(&name), &name, limits, &in_use)?;
        done.push((name, outcome));
    }
    Ok(done)
}

fn sync_one(
    store: &ImageStore,
    image_dir: &Path,
    name: &str,
    limits: &TarLimits,
    in_use: &impl Fn(&str) -> bool,
) -> Result<Outcome, ServiceError> {
    let stamp = read_stamp(&image_dir.join(STAMP))?;
    let outcome = match store.get(name) {
        Ok(info) => {
            if stamp.is_none() || info.labels.get(STAMP_LABEL) == stamp.as_ref() {
                return Ok(Outcome::Unchanged);
            }
            if in_use(name) {
                tracing::warn!(
                    image = name,
                    "the image was rebuilt but containers use it: keeping the old one until a restart with none"
                );
                return Ok(Outcome::KeptInUse);
            }
            store.delete(name, |_| false).map_err(image_error)?;
            Outcome::Replaced
        }
        Err(ImageError::NotFound { .. }) => Outcome::Imported,
        Err(e) => return Err(image_error(e)),
    };
    let (source, labels) = match stamp {
        Some(s) => (
            format!("{SOURCE_RECIPE_PREFIX}{name}"),
            BTreeMap::from([(STAMP_LABEL.to_owned(), s)]),
        ),
        None => (SOURCE_IMAGES_DIR.to_owned(), BTreeMap::new()),
    };
    let started = std::time::Instant::now();
    let info = store
        .import_tree(name, &image_dir.join(ROOTFS), &source, labels, limits)
        .map_err(image_error)?;
    tracing::info!(
        image = name,
        from = %image_dir.display(),
        size_bytes = info.size_bytes,
        languages = ?info.languages,
        ms = started.elapsed().as_millis() as u64,
        ?outcome,
        "image imported from the images dir"
    );
    Ok(outcome)
}

/// The stamp's content, trimmed; `None` when there is no stamp file.
fn read_stamp(path: &Path) -> Result<Option<String>, ServiceError> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ServiceError::io(format!("open {}", path.display()), e)),
    };
    let mut text = String::new();
    file.take(MAX_STAMP_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| ServiceError::io(format!("read {}", path.display()), e))?;
    Ok(Some(text.trim().to_owned()))
}
