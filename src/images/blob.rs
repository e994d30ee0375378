//! Content-addressed blobs of an extracted OCI image layout
//! (`blobs/sha256/<hex>`): opened without following symlinks, checked
//! against their descriptor's size and sha256 digest before use.

use std::fs::{self, File};
use std::io::{self, Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::error::{ImageError, io_err};

/// The blobs of one extracted layout, for image `name`.
pub(super) struct Blobs<'a> {
    /// `<layout>/blobs/sha256`.
    dir: PathBuf,
    name: &'a str,
}

impl<'a> Blobs<'a> {
    /// Checks that `<layout>/blobs/sha256` is a real directory (the layout
    /// came from an untrusted upload: no symlinks are followed anywhere).
    pub(super) fn new(layout: &Path, name: &'a str) -> Result<Self, ImageError> {
        let mut dir = layout.to_owned();
        for part in ["blobs", "sha256"] {
            dir.push(part);
            let meta = fs::symlink_metadata(&dir)
                .map_err(|e| layout_err(name, &shown(layout, &dir), &e))?;
            if !meta.is_dir() {
                return Err(ImageError::Layout {
                    name: name.to_owned(),
                    reason: format!("{} is not a directory", shown(layout, &dir)),
                });
            }
        }
        Ok(Self { dir, name })
    }

    /// Opens the blob `digest`, after checking that it is `size` bytes long
    /// and hashes to `digest`. The file is positioned at its start.
    pub(super) fn open_verified(&self, digest: &str, size: u64) -> Result<File, ImageError> {
        let hex = parse_digest(self.name, digest)?;
        let path = self.dir.join(hex);
        let (mut file, actual) = open_regular(&path).map_err(|e| ImageError::Layout {
            name: self.name.to_owned(),
            reason: format!("blob {digest}: {e}"),
        })?;
        if actual != size {
            return Err(ImageError::SizeMismatch {
                name: self.name.to_owned(),
                digest: digest.to_owned(),
                expected: size,
                actual,
            });
        }
        let mut hasher = HashingReader::new(&mut file);
        io::copy(&mut hasher, &mut io::sink()).map_err(io_err("reading", &path))?;
        let got = hasher.hex();
        if got != hex {
            return Err(ImageError::DigestMismatch {
                name: self.name.to_owned(),
                digest: digest.to_owned(),
                actual: got,
            });
        }
        file.rewind().map_err(io_err("rewinding", &path))?;
        Ok(file)
    }

    /// Reads and parses the JSON blob `digest`, refusing descriptors larger
    /// than `max` bytes before reading anything.
    pub(super) fn read_json<T: DeserializeOwned>(
        &self,
        digest: &str,
        size: u64,
        max: u64,
    ) -> Result<T, ImageError> {
        if size > max {
            return Err(ImageError::Layout {
                name: self.name.to_owned(),
                reason: format!("blob {digest} is {size} bytes, over the limit of {max} for JSON"),
            });
        }
        let mut text = Vec::new();
        self.open_verified(digest, size)?
            .read_to_end(&mut text)
            .map_err(|e| layout_err(self.name, &format!("blob {digest}"), &e))?;
        parse_json(self.name, &format!("blob {digest}"), &text)
    }
}

/// The hex part of `sha256:<64 lowercase hex>`; anything else is refused
/// (which also keeps the blob path inside `blobs/sha256`).
pub(super) fn parse_digest<'d>(name: &str, digest: &'d str) -> Result<&'d str, ImageError> {
    let bad = |reason: &str| ImageError::Layout {
        name: name.to_owned(),
        reason: format!("digest {digest:?}: {reason}"),
    };
    let Some((algorithm, hex)) = digest.split_once(':') else {
        return Err(bad("not of the form algorithm:hex"));
    };
    if algorithm != "sha256" {
        return Err(bad("only sha256 digests are supported"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad("not 64 lowercase hex digits"));
    }
    Ok(hex)
}

/// Opens `path` for reading if it is a regular file, never following a
/// symlink in its last component; returns it with its length.
pub(super) fn open_regular(path: &Path) -> io::Result<(File, u64)> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => io::Error::other("is a symlink"),
            Some(libc::ENOENT) => io::Error::other("is missing"),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("is not a regular file"));
    }
    Ok((file, meta.len()))
}

/// Parses `text` (the content of `what`) as JSON.
pub(super) fn parse_json<T: DeserializeOwned>(
    name: &str,
    what: &str,
    text: &[u8],
) -> Result<T, ImageError> {
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| ImageError::Layout {
        name: name.to_owned(),
        reason: format!("{what}: invalid JSON at {}: {}", e.path(), e.inner()),
    })
}

/// A reader that hashes what passes through it with sha256.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// The lowercase hex sha256 of everything read so far.
    pub(super) fn hex(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// `Layout` error for a layout path (as shown) that cannot be inspected.
pub(super) fn layout_err(name: &str, path: &str, e: &io::Error) -> ImageError {
    let reason = if e.kind() == io::ErrorKind::NotFound {
        "is missing".to_owned()
    } else {
        e.to_string()
    };
    ImageError::Layout {
        name: name.to_owned(),
        reason: format!("{path}: {reason}"),
    }
}

/// `path` relative to the layout root, for messages.
fn shown(layout: &Path, path: &Path) -> String {
    path.strip_prefix(layout)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::parse_digest;

    #[test]
    fn digests_are_sha256_lowercase_hex_only() {
        let hex = "a".repeat(64);
        assert_eq!(parse_digest("i", &format!("sha256:{hex}")).unwrap(), hex);
        for bad in [
            String::new(),
            hex.clone(),
            format!("sha512:{hex}"),
            format!("sha256:{}", "A".repeat(64)),
            format!("sha256:{}", "a".repeat(63)),
            format!("sha256:../../../../etc/{}", "a".repeat(48)),
        ] {
            assert!(parse_digest("i", &bad).is_err(), "{bad}");
        }
    }
}
