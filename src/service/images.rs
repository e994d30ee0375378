//! Image use cases: the image store behind the API, and the default `busybox` image
//! built from its recipe (embedded in the binary) on first start.

use std::path::Path;
use std::sync::Arc;

use super::ServiceError;
use super::launcher::ErrorKind;
use crate::bundle::extract::Limits as TarLimits;
use crate::images::{ImageError, ImageInfo, ImageStore};

/// The recipe of the default image (rootfs-images/busybox/build.sh).
const BUSYBOX_RECIPE: &str = include_str!("../../rootfs-images/busybox/build.sh");
pub const DEFAULT_IMAGE: &str = "busybox";

pub struct Images {
    store: Arc<ImageStore>,
}

impl Images {
    pub fn new(store: Arc<ImageStore>) -> Self {
        Images { store }
    }

    pub fn store(&self) -> &Arc<ImageStore> {
        &self.store
    }

    /// Builds the default image if the store does not have it yet.
    pub fn bootstrap(&self, data: &Path) -> Result<(), ServiceError> {
        if self.store.get(DEFAULT_IMAGE).is_ok() {
            return Ok(());
        }
        let work = tempfile_dir(data)?;
        let script = work.join("build.sh");
        std::fs::write(&script, BUSYBOX_RECIPE)
            .map_err(|e| ServiceError::io(format!("write {}", script.display()), e))?;
        let out = work.join("rootfs");
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg(&out)
            .stdout(std::process::Stdio::null())
            .output()
            .map_err(|e| ServiceError::io("run the busybox image recipe".into(), e))?;
        if !status.status.success() {
            let _ = std::fs::remove_dir_all(&work);
            return Err(ServiceError::internal(format!(
                "build the busybox image: {}",
                String::from_utf8_lossy(&status.stderr).trim()
            )));
        }
        let result = self.store.import_dir(DEFAULT_IMAGE, &out, "recipe:busybox");
        let _ = std::fs::remove_dir_all(&work);
        result.map(drop).map_err(image_error)
    }

    /// Imports the new and rebuilt images of an images dir (see [`super::images_dir`]),
    /// with the service's upload limits; `data` is the service's data dir (to see which
    /// images its containers use).
    pub fn sync_dir(
        &self,
        dir: &Path,
        data: &Path,
        limits: &super::config::Limits,
    ) -> Result<(), ServiceError> {
        let tar_limits = TarLimits {
            max_total_bytes: limits.max_upload_bytes,
            max_entries: limits.max_upload_entries,
            ..TarLimits::default()
        };
        let done = super::images_dir::sync(&self.store, dir, &tar_limits, |name| {
            super::containers::image_in_use(data, name)
        })?;
        if done.is_empty() {
            tracing::warn!(dir = %dir.display(), "the images dir holds no image (<name>/rootfs)");
        }
        Ok(())
    }

    pub fn list(&self) -> Result<Vec<ImageInfo>, ServiceError> {
        self.store.list().map_err(image_error)
    }

    pub fn get(&self, name: &str) -> Result<ImageInfo, ServiceError> {
        self.store.get(name).map_err(image_error)
    }

    pub fn import(
        &self,
        name: &str,
        body: impl std::io::Read,
        limits: &TarLimits,
    ) -> Result<ImageInfo, ServiceError> {
        self.store
            .import_tar(name, body, limits)
            .map_err(image_error)
    }

    pub fn delete(&self, name: &str, in_use: impl Fn(&str) -> bool) -> Result<(), ServiceError> {
        self.store.delete(name, in_use).map_err(image_error)
    }
}

fn tempfile_dir(data: &Path) -> Result<std::path::PathBuf, ServiceError> {
    let dir = data.join(format!(".build-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| ServiceError::io(format!("create {}", dir.display()), e))?;
    Ok(dir)
}

/// Maps image store errors to kinds: a missing image is 404, a name in use or taken 409,
/// an upload over a size limit 413, a bad upload 400, an extraction that failed on the
/// host's side 500.
pub fn image_error(e: ImageError) -> ServiceError {
    let kind = match &e {
        ImageError::NotFound { .. } => ErrorKind::NotFound,
        ImageError::AlreadyExists { .. } | ImageError::InUse { .. } => ErrorKind::Conflict,
        ImageError::Upload { source, .. } | ImageError::Layer { source, .. } => {
            super::extract_error_kind(source)
        }
        ImageError::InvalidName { .. }
        | ImageError::Layout { .. }
        | ImageError::DigestMismatch { .. }
        | ImageError::SizeMismatch { .. } => ErrorKind::BadRequest,
        _ => ErrorKind::Internal,
    };
    ServiceError::new(kind, e.to_string())
}
