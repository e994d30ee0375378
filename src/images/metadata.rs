//! What an image says about itself: `/etc/corral-image.json` in its root
//! filesystem, written by the recipes in `rootfs-images/` from the installed
//! programs' own version output:
//!
//! ```json
//! {"name": "python", "distribution": "debian 12.11",
//!  "languages": [{"name": "python", "version": "3.11.2", "command": "python3"}]}
//! ```
//!
//! Only `languages` is used. Image content is semi-trusted (uploads are not
//! trusted at all), so the file is read by descriptor, one component at a
//! time with `O_NOFOLLOW` (a symlink at `etc` or at the file is refused, never
//! followed), only when it is a regular file, and at most
//! [`MAX_METADATA_BYTES`]. A missing file means no languages; a file that is
//! refused or malformed is logged and also means no languages: metadata never
//! makes an import fail.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, fstat};
use serde::{Deserialize, Serialize};

/// Where the metadata lives, relative to the image's root.
pub const METADATA_DIR: &str = "etc";
pub const METADATA_FILE: &str = "corral-image.json";

/// Largest metadata file read.
pub const MAX_METADATA_BYTES: u64 = 64 * 1024;
/// Most languages kept from one image.
const MAX_LANGUAGES: usize = 32;
/// Longest name, version or command kept.
const MAX_FIELD_LEN: usize = 128;

/// A language (compiler or interpreter) an image carries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, utoipa::ToSchema)]
pub struct Language {
    /// The language: `python`, `c`, `c++`.
    pub name: String,
    /// The version its compiler or interpreter reports (`3.11.2`, `12.2.0`).
    pub version: String,
    /// The program that runs or compiles it (`python3`, `gcc`, `g++`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// The part of `/etc/corral-image.json` the store uses.
#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    languages: Vec<Language>,
}

/// Why a metadata file was not used.
#[derive(Debug, thiserror::Error)]
enum MetadataError {
    #[error("open {what}: {errno}")]
    Open { what: &'static str, errno: Errno },
    #[error("is not a regular file")]
    NotRegular,
    #[error("is larger than {MAX_METADATA_BYTES} bytes")]
    TooLarge,
    #[error("read: {0}")]
    Read(#[from] std::io::Error),
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("more than {MAX_LANGUAGES} languages")]
    TooManyLanguages,
    #[error("a language field is empty, longer than {MAX_FIELD_LEN} bytes or not printable")]
    BadField,
}

/// The languages that the image whose root filesystem is `rootfs` declares;
/// empty when it declares none or its metadata cannot be used (logged).
pub(super) fn read_languages(rootfs: &Path) -> Vec<Language> {
    match read(rootfs) {
        Ok(languages) => languages,
        Err(error) => {
            tracing::warn!(
                rootfs = %rootfs.display(),
                file = %format!("/{METADATA_DIR}/{METADATA_FILE}"),
                %error,
                "ignoring the image's metadata"
            );
            Vec::new()
        }
    }
}

fn read(rootfs: &Path) -> Result<Vec<Language>, MetadataError> {
    let dir_flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let root = open(rootfs, dir_flags | OFlag::O_RDONLY, Mode::empty()).map_err(|errno| {
        MetadataError::Open {
            what: "the root filesystem",
            errno,
        }
    })?;
    let Some(etc) = open_optional(&root, METADATA_DIR, dir_flags | OFlag::O_RDONLY, "/etc")? else {
        return Ok(Vec::new());
    };
    // O_NONBLOCK: opening a fifo must not hang the service.
    let file_flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let Some(fd) = open_optional(&etc, METADATA_FILE, file_flags, "the metadata file")? else {
        return Ok(Vec::new());
    };
    let st = fstat(&fd).map_err(|errno| MetadataError::Open {
        what: "the metadata file",
        errno,
    })?;
    if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Err(MetadataError::NotRegular);
    }
    let mut text = Vec::new();
    File::from(fd)
        .take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut text)?;
    if text.len() as u64 > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge);
    }
    parse(&text)
}

/// `openat(dir, name, flags)`; a missing name is `None`. A symlink is ELOOP
/// (`O_NOFOLLOW`), or ENOTDIR for a directory open: an error either way.
fn open_optional(
    dir: &impl AsFd,
    name: &str,
    flags: OFlag,
    what: &'static str,
) -> Result<Option<OwnedFd>, MetadataError> {
    match openat(dir.as_fd(), name, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(MetadataError::Open { what, errno }),
    }
}

/// The languages of a metadata document, checked.
fn parse(text: &[u8]) -> Result<Vec<Language>, MetadataError> {
    let meta: Metadata = serde_json::from_slice(text)?;
    if meta.languages.len() > MAX_LANGUAGES {
        return Err(MetadataError::TooManyLanguages);
    }
    let ok =
        |s: &str| !s.is_empty() && s.len() <= MAX_FIELD_LEN && !s.chars().any(char::is_control);
    for l in &meta.languages {
        if !ok(&l.name) || !ok(&l.version) || l.command.as_deref().is_some_and(|c| !ok(c)) {
            return Err(MetadataError::BadField);
        }
    }
    Ok(meta.languages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn rootfs_with(content: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc").join(METADATA_FILE), content).unwrap();
        dir
    }

    #[test]
    fn reads_the_languages() {
        let dir = rootfs_with(
            br#"{"name":"gcc","languages":[{"name":"c","version":"12.2.0","command":"gcc"},
                {"name":"c++","version":"12.2.0"}]}"#,
        );
        let langs = read(dir.path()).unwrap();
        assert_eq!(langs.len(), 2);
        assert_eq!(langs[0].command.as_deref(), Some("gcc"));
        assert_eq!(langs[1].name, "c++");
        assert_eq!(langs[1].command, None);
    }

    #[test]
    fn missing_file_or_dir_means_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn symlinks_are_not_followed() {
        let outside = rootfs_with(br#"{"languages":[{"name":"x","version":"1"}]}"#);
        // The file itself a symlink.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        symlink(
            outside.path().join("etc").join(METADATA_FILE),
            dir.path().join("etc").join(METADATA_FILE),
        )
        .unwrap();
        assert!(matches!(read(dir.path()), Err(MetadataError::Open { .. })));
        assert!(read_languages(dir.path()).is_empty());
        // /etc a symlink.
        let dir = tempfile::tempdir().unwrap();
        symlink(outside.path().join("etc"), dir.path().join("etc")).unwrap();
        assert!(matches!(read(dir.path()), Err(MetadataError::Open { .. })));
    }

    #[test]
    fn bad_content_is_refused() {
        let big = vec![b' '; MAX_METADATA_BYTES as usize + 1];
        assert!(matches!(
            read(rootfs_with(&big).path()),
            Err(MetadataError::TooLarge)
        ));
        assert!(matches!(
            read(rootfs_with(b"{").path()),
            Err(MetadataError::Json(_))
        ));
        assert!(matches!(
            read(rootfs_with(br#"{"languages":[{"name":"","version":"1"}]}"#).path()),
            Err(MetadataError::BadField)
        ));
        assert!(matches!(
            read(rootfs_with(br#"{"languages":[{"name":"a\nb","version":"1"}]}"#).path()),
            Err(MetadataError::BadField)
        ));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc").join(METADATA_FILE)).unwrap();
        assert!(matches!(read(dir.path()), Err(MetadataError::NotRegular)));
    }
}
