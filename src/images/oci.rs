//! OCI image layouts (image-spec `image-layout.md`): an upload that holds
//! `oci-layout`, `index.json` and `blobs/sha256/...` is turned into a root
//! filesystem by following index.json to one image manifest and applying
//! its layers in order.
//!
//! Supported: OCI and Docker v2 manifests and indexes (nested indexes too,
//! a few levels deep), uncompressed and gzip layers, sha256 digests. Every
//! blob that is read is first checked against its descriptor's size and
//! digest. Not supported (refused with a clear error): zstd layers, other
//! digest algorithms, layers that are only URLs (non-distributable).

use std::fs;
use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::blob::{Blobs, layout_err, open_regular, parse_json};
use super::error::ImageError;
use crate::bundle::extract::{ExtractError, Extracted, Limits, apply_layer};

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";

const MANIFEST_TYPES: [&str; 2] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const LAYER_TYPES: [&str; 6] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Largest `oci-layout`, `index.json` or manifest accepted.
const MAX_JSON_BYTES: u64 = 4 << 20;
/// Nested indexes followed before giving up.
const MAX_INDEX_DEPTH: usize = 4;
/// Bytes charged per archive entry against the image budget (one tar header).
const ENTRY_COST: u64 = 512;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayoutVersion {
    image_layout_version: String,
}

/// Whether the extracted upload at `dir` is an OCI image layout: it has
/// `oci-layout` and `index.json` as regular files (not symlinks).
pub(super) fn is_layout(dir: &Path) -> bool {
    [LAYOUT_FILE, INDEX_FILE]
        .iter()
        .all(|f| fs::symlink_metadata(dir.join(f)).is_ok_and(|m| m.is_file()))
}

/// Builds the root filesystem of image `name` in `rootfs` (an existing empty
/// directory) from the layout at `layout`. Returns the manifest digest.
///
/// `limits` bound the whole image: the layers share one budget of entries
/// and bytes (file content plus 512 bytes per entry).
///
/// On error `rootfs` is left partly built; the caller discards it.
pub(super) fn build_rootfs(
    layout: &Path,
    rootfs: &Path,
    name: &str,
    limits: &Limits,
) -> Result<String, ImageError> {
    let version: LayoutVersion = read_top_json(layout, LAYOUT_FILE, name)?;
    if !version.image_layout_version.starts_with("1.") {
        return Err(bad(
            name,
            format!(
                "{LAYOUT_FILE}: imageLayoutVersion {:?} is not supported (want 1.x)",
                version.image_layout_version
            ),
        ));
    }
    let index: Index = read_top_json(layout, INDEX_FILE, name)?;
    let blobs = Blobs::new(layout, name)?;
    let (digest, manifest) = find_manifest(&blobs, index, name)?;
    let mut budget = limits.clone();
    for layer in &manifest.layers {
        apply_one(&blobs, layer, rootfs, name, limits, &mut budget)?;
    }
    Ok(digest)
}

/// Follows `index` (and nested indexes) to one image manifest; returns its
/// digest and content.
fn find_manifest(
    blobs: &Blobs<'_>,
    mut index: Index,
    name: &str,
) -> Result<(String, Manifest), ImageError> {
    for _ in 0..MAX_INDEX_DEPTH {
        let chosen = select(&index.manifests, name)?;
        if INDEX_TYPES.contains(&chosen.media_type.as_str()) {
            index = blobs.read_json(&chosen.digest, chosen.size, MAX_JSON_BYTES)?;
            continue;
        }
        let manifest: Manifest = blobs.read_json(&chosen.digest, chosen.size, MAX_JSON_BYTES)?;
        if let Some(media_type) = &manifest.media_type
            && !MANIFEST_TYPES.contains(&media_type.as_str())
        {
            return Err(bad(
                name,
                format!(
                    "manifest {}: mediaType {media_type:?} is not an image manifest",
                    chosen.digest
                ),
            ));
        }
        return Ok((chosen.digest.clone(), manifest));
    }
    Err(bad(
        name,
        format!("indexes nested more than {MAX_INDEX_DEPTH} deep"),
    ))
}

/// Picks the manifest (or nested index) to follow among `manifests`: the only
/// one, or the first for this host's platform (`linux/amd64` on x86-64).
/// Descriptors of other media types (artifacts, ...) are ignored. The only
/// candidate is refused too when it names another platform.
fn select<'d>(manifests: &'d [Descriptor], name: &str) -> Result<&'d Descriptor, ImageError> {
    let candidates: Vec<&Descriptor> = manifests
        .iter()
        .filter(|d| {
            MANIFEST_TYPES.contains(&d.media_type.as_str())
                || INDEX_TYPES.contains(&d.media_type.as_str())
        })
        .collect();
    let arch = host_architecture();
    let matches = |d: &Descriptor| {
        d.platform
            .as_ref()
            .is_none_or(|p| p.os == "linux" && p.architecture == arch)
    };
    match candidates.as_slice() {
        [] => Err(bad(name, "index lists no image manifest".to_owned())),
        [only] if matches(only) => Ok(only),
        _ => candidates
            .iter()
            .copied()
            .find(|d| d.platform.is_some() && matches(d))
            .ok_or_else(|| {
                let seen: Vec<String> = candidates
                    .iter()
                    .map(|d| match &d.platform {
                        Some(p) => format!("{}/{}", p.os, p.architecture),
                        None => "no platform".to_owned(),
                    })
                    .collect();
                bad(
                    name,
                    format!(
                        "no manifest for linux/{arch} (index has: {})",
                        seen.join(", ")
                    ),
                )
            }),
    }
}

/// Verifies and applies one layer, charging it to `budget`.
fn apply_one(
    blobs: &Blobs<'_>,
    layer: &Descriptor,
    rootfs: &Path,
    name: &str,
    limits: &Limits,
    budget: &mut Limits,
) -> Result<(), ImageError> {
    if !LAYER_TYPES.contains(&layer.media_type.as_str()) {
        return Err(bad(
            name,
            format!(
                "layer {}: media type {:?} is not supported (uncompressed and gzip tar only)",
                layer.digest, layer.media_type
            ),
        ));
    }
    let file = blobs.open_verified(&layer.digest, layer.size)?;
    let done = apply_layer(file, rootfs, budget).map_err(|source| match source {
        // The budget is what is left of the image limit: say so.
        ExtractError::TooLarge { .. } => bad(
            name,
            format!(
                "layers exceed {} bytes in total (file content plus {ENTRY_COST} bytes per entry)",
                limits.max_total_bytes
            ),
        ),
        ExtractError::TooManyEntries { .. } => bad(
            name,
            format!(
                "layers have more than {} entries in total",
                limits.max_entries
            ),
        ),
        source => ImageError::Layer {
            name: name.to_owned(),
            digest: layer.digest.clone(),
            source,
        },
    })?;
    charge(budget, done);
    Ok(())
}

/// Subtracts what a layer used from the image budget.
fn charge(budget: &mut Limits, done: Extracted) {
    let cost = done
        .bytes
        .saturating_add(done.entries.saturating_mul(ENTRY_COST));
    budget.max_total_bytes = budget.max_total_bytes.saturating_sub(cost);
    budget.max_entries = budget.max_entries.saturating_sub(done.entries);
}

/// Reads and parses the layout's top-level `file` (never through a symlink).
fn read_top_json<T: serde::de::DeserializeOwned>(
    layout: &Path,
    file: &str,
    name: &str,
) -> Result<T, ImageError> {
    let (handle, len) = open_regular(&layout.join(file)).map_err(|e| layout_err(name, file, &e))?;
    if len > MAX_JSON_BYTES {
        return Err(bad(
            name,
            format!("{file} is {len} bytes, over the limit of {MAX_JSON_BYTES}"),
        ));
    }
    let mut text = Vec::new();
    handle
        .take(MAX_JSON_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| layout_err(name, file, &e))?;
    parse_json(name, file, &text)
}

/// The OCI name of the architecture this binary runs on.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        other => other,
    }
}

fn bad(name: &str, reason: String) -> ImageError {
    ImageError::Layout {
        name: name.to_owned(),
        reason,
    }
}
