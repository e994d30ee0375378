//! What the store records about an image (`<root>/<name>/info.json`), and the
//! helpers that fill it in: creation time and size on disk.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::error::{ImageError, io_err};

/// `source` of an image imported from a plain root filesystem tar.
pub const SOURCE_ROOTFS_TAR: &str = "rootfs-tar";
/// `source` of an image imported from an OCI image layout tar.
pub const SOURCE_OCI_LAYOUT: &str = "oci-layout";
/// Prefix of the `source` of an image built by a recipe (`recipe:busybox`).
pub const SOURCE_RECIPE_PREFIX: &str = "recipe:";

/// One image of the store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct ImageInfo {
    /// The image's name in the store.
    pub name: String,
    /// When the import finished, RFC 3339 in UTC (`2024-05-01T12:00:00Z`).
    pub created: String,
    /// Bytes of regular-file content in the root filesystem (hard links
    /// counted once).
    pub size_bytes: u64,
    /// `"rootfs-tar"`, `"oci-layout"`, `"recipe:<recipe>"`, or what the caller
    /// of [`ImageStore::import_dir`](super::ImageStore::import_dir) passed.
    pub source: String,
    /// `sha256:<hex>`: the manifest digest of an OCI image, the digest of the
    /// uploaded stream (as sent, compressed or not) of a rootfs tar, none for
    /// a directory import.
    pub digest: Option<String>,
    /// Free-form annotations (languages, versions, ...); empty on import.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// File name of an image's metadata, next to its `rootfs/`.
pub(super) const INFO_FILE: &str = "info.json";

impl ImageInfo {
    /// A record for an import finishing now.
    pub(super) fn new(
        name: &str,
        rootfs: &Path,
        source: &str,
        digest: Option<String>,
    ) -> Result<Self, ImageError> {
        Ok(Self {
            name: name.to_owned(),
            created: rfc3339(SystemTime::now()),
            size_bytes: tree_size(rootfs)?,
            source: source.to_owned(),
            digest,
            labels: BTreeMap::new(),
        })
    }

    /// Writes the record as `dir/info.json` (mode 0644). `dir` is still a
    /// private temp dir: it is renamed into place as a whole afterwards.
    pub(super) fn write(&self, dir: &Path) -> Result<(), ImageError> {
        let path = dir.join(INFO_FILE);
        let mut text = serde_json::to_vec_pretty(self).map_err(|source| ImageError::Metadata {
            path: path.clone(),
            source,
        })?;
        text.push(b'\n');
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        file.write_all(&text).map_err(io_err("writing", &path))?;
        file.sync_all().map_err(io_err("syncing", &path))
    }

    /// Reads `dir/info.json`; a missing file is `NotFound` for `name`.
    pub(super) fn read(name: &str, dir: &Path) -> Result<Self, ImageError> {
        let path = dir.join(INFO_FILE);
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ImageError::NotFound {
                    name: name.to_owned(),
                });
            }
            Err(e) => return Err(io_err("reading", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| ImageError::Metadata { path, source })
    }
}

/// Bytes of regular-file content under `root`, never following symlinks and
/// counting each inode once. Iterative, so depth costs heap, not stack.
pub(super) fn tree_size(root: &Path) -> Result<u64, ImageError> {
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
            if meta.is_dir() {
                dirs.push(path);
            } else if meta.is_file() && (meta.nlink() == 1 || seen.insert((meta.dev(), meta.ino())))
            {
                total = total.saturating_add(meta.len());
            }
        }
    }
    Ok(total)
}

/// `time` as RFC 3339 in UTC, to the second: `1970-01-01T00:00:00Z`.
pub(super) fn rfc3339(time: SystemTime) -> String {
    // Times before 1970 do not happen here; they print as the epoch.
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, restricted to non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::rfc3339;

    #[test]
    fn formats_rfc3339() {
        let at = |s| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
