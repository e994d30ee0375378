//! Small file helpers for cgroupfs whose errors name the full path (and the value written).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use super::error::{CgroupError, errno_of};

/// Writes `value` to an existing interface file in one `write(2)` (no `O_CREAT`: a missing
/// file is `ENOENT`, which is what a missing controller looks like).
pub(super) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let err = |e: io::Error| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        errno: errno_of(&e),
    };
    let mut f = OpenOptions::new().write(true).open(path).map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// An interface file opened once for several writes, each `write(2)` one value (as
/// `devices.allow` takes one rule per write).
pub(super) struct Writer<'a> {
    path: &'a Path,
    file: Option<fs::File>,
}

impl<'a> Writer<'a> {
    /// Opens nothing yet: the first [`Writer::write`] does.
    pub(super) fn new(path: &'a Path) -> Self {
        Writer { path, file: None }
    }

    pub(super) fn write(&mut self, value: &str) -> Result<(), CgroupError> {
        let err = |e: io::Error| CgroupError::Write {
            path: self.path.to_path_buf(),
            value: value.to_string(),
            errno: errno_of(&e),
        };
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(
                OpenOptions::new()
                    .write(true)
                    .open(self.path)
                    .map_err(err)?,
            ),
        };
        file.write_all(value.as_bytes()).map_err(err)
    }
}

pub(super) fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| CgroupError::Read {
        path: path.to_path_buf(),
        errno: errno_of(&e),
    })
}

pub(super) fn parse_err(path: &Path, content: &str) -> CgroupError {
    CgroupError::Parse {
        path: path.to_path_buf(),
        content: content.trim().to_string(),
    }
}

pub(super) fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    let s = read(path)?;
    s.trim().parse().map_err(|_| parse_err(path, &s))
}

/// Reads a file holding a number or `max` (`None`).
pub(super) fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    let s = read(path)?;
    match s.trim() {
        "max" => Ok(None),
        t => t.parse().map(Some).map_err(|_| parse_err(path, &s)),
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line), if the key is present.
pub(super) fn flat_keyed(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Reads `key` from a flat-keyed file; a missing key is a parse error naming the file.
pub(super) fn read_keyed(path: &Path, key: &str) -> Result<u64, CgroupError> {
    let s = read(path)?;
    flat_keyed(&s, key).ok_or_else(|| parse_err(path, &s))
}

/// The pids listed in a `cgroup.procs` file.
pub(super) fn read_pids(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let path = dir.join("cgroup.procs");
    let s = read(&path)?;
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().map_err(|_| parse_err(&path, &s)))
        .collect()
}

/// Makes `root/rel` and every missing directory between, returning the directories it
/// created, outermost first. On error, what it created is removed again.
pub(super) fn mkdir_all(root: &Path, rel: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let mut created = Vec::new();
    let mut dir = root.to_path_buf();
    for c in rel.components() {
        dir.push(c);
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                remove_created(&created);
                return Err(CgroupError::Mkdir {
                    path: dir,
                    errno: errno_of(&e),
                });
            }
        }
    }
    Ok(created)
}

/// Best-effort removal of freshly created (hence empty) cgroups, innermost first.
pub(super) fn remove_created(created: &[PathBuf]) {
    for d in created.iter().rev() {
        if let Err(e) = fs::remove_dir(d) {
            tracing::warn!(path = %d.display(), error = %e, "cleanup of a new cgroup failed");
        }
    }
}

/// Removes a cgroup directory: its child cgroups first (a container may have made
/// some), retrying on `EBUSY` for a short while since exiting tasks leave a cgroup
/// asynchronously (like runc: 5 tries, 10 ms doubling, ~150 ms in total).
/// A missing directory is success.
pub(super) fn remove_cgroup(dir: &Path) -> Result<(), CgroupError> {
    let mut delay = Duration::from_millis(10);
    let mut tries = 0;
    loop {
        match rmdir_tree(dir) {
            Ok(()) => return Ok(()),
            Err(CgroupError::Rmdir { errno, .. }) if errno == Errno::EBUSY && tries < 4 => {
                tries += 1;
                std::thread::sleep(delay);
                delay *= 2;
            }
            Err(e) => return Err(e),
        }
    }
}

fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    let rmdir_err = |e: &io::Error| CgroupError::Rmdir {
        path: dir.to_path_buf(),
        errno: errno_of(e),
    };
    match fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        // cgroupfs answers EBUSY (not ENOTEMPTY) when child cgroups exist.
        Err(e) if matches!(errno_of(&e), Errno::EBUSY | Errno::ENOTEMPTY) => {
            let entries = match fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(_) => return Err(rmdir_err(&e)),
            };
            let mut had_children = false;
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    had_children = true;
                    rmdir_tree(&entry.path())?;
                }
            }
            if !had_children {
                return Err(rmdir_err(&e));
            }
        }
        Err(e) => return Err(rmdir_err(&e)),
    }
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(rmdir_err(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_parsing() {
        let s = "populated 1\nfrozen 0\n";
        assert_eq!(flat_keyed(s, "frozen"), Some(0));
        assert_eq!(flat_keyed(s, "populated"), Some(1));
        assert_eq!(flat_keyed(s, "missing"), None);
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(flat_keyed(oom, "oom_kill"), Some(3));
        assert_eq!(flat_keyed("oom_kill x\n", "oom_kill"), None);
    }

    #[test]
    fn mkdir_all_reports_created_and_cleans_up() {
        let base = std::env::temp_dir().join(format!("corral-fsutil-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir(&base).unwrap();
        let created = mkdir_all(&base, Path::new("a/b")).unwrap();
        assert_eq!(created, vec![base.join("a"), base.join("a/b")]);
        assert!(mkdir_all(&base, Path::new("a/b")).unwrap().is_empty());
        // A failure after "n1" was made: the error names the path, and "n1" is gone.
        let long = "x".repeat(300);
        let e = mkdir_all(&base, &Path::new("a/n1").join(&long)).unwrap_err();
        assert!(e.to_string().starts_with("mkdir "), "{e}");
        assert!(
            e.to_string()
                .ends_with(": ENAMETOOLONG: File name too long"),
            "{e}"
        );
        assert!(!base.join("a/n1").exists());
        remove_created(&created);
        assert!(!base.join("a").exists());
        let _ = fs::remove_dir_all(&base);
    }
}
