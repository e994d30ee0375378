//! Atomic file replacement, the one helper for every record corral rewrites: the
//! runtime's `state.json` and pid files, and the service's container records, exit
//! records and bundle `config.json`.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The temp file next to `path` that [`write_atomic`] renames over it:
/// `<dir>/.<name>.tmp`.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `data` as `path` atomically: a temp file in the same directory (created with
/// `mode`, never through a symlink, never inherited), renamed over `path`, so that a
/// reader sees the old content or the new, never a part.
///
/// Not fsync'd: these records must survive a restart of the runtime or the service, not
/// of the host, after which no container survives either; two fsyncs cost about a
/// millisecond on every create and exit. On failure the temp file is removed.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    if path.file_name().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{}: not a file name", path.display()),
        ));
    }
    let tmp = temp_path(path);
    // The temp file may exist, empty, made ahead (see the service's warm containers) or
    // left by a crash: truncated only if it holds something. Truncating an existing
    // file to 0 (O_TRUNC) makes ext4 flush it when closed (auto_da_alloc).
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&tmp)
        .and_then(|mut f| {
            if f.metadata()?.len() > 0 {
                f.set_len(0)?;
            }
            f.write_all(data)
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rec.json");
        write_atomic(&p, b"first, longer", 0o600).unwrap();
        write_atomic(&p, b"second", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert!(!temp_path(&p).exists());
        assert_eq!(temp_path(&p), dir.path().join(".rec.json.tmp"));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn never_writes_through_a_symlinked_temp() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let p = dir.path().join("rec");
        std::os::unix::fs::symlink(&target, temp_path(&p)).unwrap();
        assert!(write_atomic(&p, b"evil", 0o600).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert!(!p.exists());
    }
}
