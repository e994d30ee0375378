//! The one error type of the cgroup layer. Every variant names what it was working on
//! (a file, a directory, a controller or an OCI field), so that a message read in a
//! log is enough to act on:
//! `write 1048576 to /sys/fs/cgroup/memory/corral/x/memory.limit_in_bytes: EBUSY: Device or resource busy`.

use std::fmt::Display;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `linux.cgroupsPath` (or the default derived from the container id) is unusable.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// A systemd-style path (`slice:prefix:name`) or `--systemd-cgroup` was given.
    #[error("systemd cgroup driver is not available: {reason}")]
    SystemdUnavailable { reason: &'static str },

    /// No usable cgroup hierarchy was found on this host.
    #[error("no cgroup hierarchy found: {0}")]
    NoHierarchy(String),

    #[error("mkdir {path}: {errno}")]
    Mkdir { path: PathBuf, errno: Errno },

    #[error("rmdir {path}: {errno}")]
    Rmdir { path: PathBuf, errno: Errno },

    #[error("write {value} to {path}: {errno}")]
    Write {
        path: PathBuf,
        value: String,
        errno: Errno,
    },

    /// Opening an interface file for writing failed before anything was written.
    #[error("open {path} for writing: {errno}")]
    OpenWrite { path: PathBuf, errno: Errno },

    #[error("read {path}: {errno}")]
    Read { path: PathBuf, errno: Errno },

    #[error("parse {path}: unexpected content {content:?}")]
    Parse { path: PathBuf, content: String },

    /// The kernel accepted a write but kept a different value (for example a clamped
    /// `cpu.shares`).
    #[error("{path}: wrote {wanted} but the kernel kept {got}")]
    NotApplied {
        path: PathBuf,
        wanted: String,
        got: String,
    },

    /// An OCI resource field this runtime (or this cgroup mode) does not implement.
    #[error("{field}: not supported{}", fmt_reason(.reason))]
    Unsupported { field: String, reason: String },

    /// An OCI resource field with a value that cannot be applied.
    #[error("{field}: invalid value {value}: {reason}")]
    InvalidValue {
        field: String,
        value: String,
        reason: String,
    },

    /// A resource field needs a controller that is not mounted / not enabled.
    #[error("{field}: the {controller} controller is not available{}", fmt_reason(.detail))]
    ControllerMissing {
        field: String,
        controller: String,
        detail: String,
    },

    /// `create` found an existing cgroup that already holds processes.
    #[error("cgroup {path} already exists and holds {count} process(es)")]
    NotEmpty { path: PathBuf, count: usize },

    #[error("freeze {path}: {reason}")]
    Freeze { path: PathBuf, reason: String },

    #[error("send {signal} to pid {pid} of cgroup {path}: {errno}")]
    Signal {
        path: PathBuf,
        pid: i32,
        signal: nix::sys::signal::Signal,
        errno: Errno,
    },

    /// The eBPF device program that enforces `linux.resources.devices` on a cgroup2
    /// directory could not be loaded, attached or swapped; `hint` says what the kernel
    /// most likely lacks.
    #[error("linux.resources.devices: {op} for cgroup {path}: {errno}: {hint}")]
    DeviceFilter {
        op: &'static str,
        path: PathBuf,
        errno: Errno,
        hint: String,
    },

    /// An error reported by cgroups-rs that is not a plain read or write failure.
    #[error("{path}: {detail}")]
    Other { path: PathBuf, detail: String },
}

fn fmt_reason(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl CgroupError {
    /// The errno behind a failed syscall, if this error is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Mkdir { errno, .. }
            | Self::Rmdir { errno, .. }
            | Self::Write { errno, .. }
            | Self::OpenWrite { errno, .. }
            | Self::Read { errno, .. }
            | Self::Signal { errno, .. }
            | Self::DeviceFilter { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn invalid(
        field: impl Into<String>,
        value: impl Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidValue {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(super) fn missing(
        field: impl Into<String>,
        controller: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self::ControllerMissing {
            field: field.into(),
            controller: controller.into(),
            detail: detail.into(),
        }
    }
}

/// The errno of an `io::Error` (EIO if it carries none, which file I/O never does).
pub(super) fn errno_of(e: &io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// Turns an error of a cgroups-rs controller rooted at `dir` into a [`CgroupError`] that
/// names the full path. cgroups-rs only records the bare file name (`memory.max`) and
/// a debug-formatted value, so the call site passes the value it asked to write.
pub(super) fn from_rs(
    dir: &Path,
    value: Option<&dyn Display>,
    e: cgroups_rs::fs::error::Error,
) -> CgroupError {
    use cgroups_rs::fs::error::ErrorKind;
    let errno = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(errno_of);
    match (e.kind(), errno) {
        // cgroups-rs reports a failed open(2) of the file as WriteFailed(<full path>, "[CREATE FILE]").
        (ErrorKind::WriteFailed(file, v), Some(errno)) if v == "[CREATE FILE]" => {
            CgroupError::OpenWrite {
                path: dir.join(file),
                errno,
            }
        }
        // `dir.join` keeps `file` as is when cgroups-rs already gave a full path (devices).
        (ErrorKind::WriteFailed(file, v), Some(errno)) => CgroupError::Write {
            path: dir.join(file),
            value: value.map_or_else(|| v.clone(), |v| v.to_string()),
            errno,
        },
        // Some of its readers only know "FIXME: can't get path ..." as the file name.
        (ErrorKind::ReadFailed(file), Some(errno)) => CgroupError::Read {
            path: if file.starts_with("FIXME") {
                dir.to_path_buf()
            } else {
                dir.join(file)
            },
            errno,
        },
        _ => CgroupError::Other {
            path: dir.to_path_buf(),
            detail: e.to_string(),
        },
    }
}

/// `result.rs_ctx(dir, value)`: attaches the directory and written value to a cgroups-rs result.
pub(super) trait RsContext<T> {
    fn rs_ctx(self, dir: &Path, value: &dyn Display) -> Result<T, CgroupError>;
    fn rs_read(self, dir: &Path) -> Result<T, CgroupError>;
}

impl<T> RsContext<T> for cgroups_rs::fs::error::Result<T> {
    fn rs_ctx(self, dir: &Path, value: &dyn Display) -> Result<T, CgroupError> {
        self.map_err(|e| from_rs(dir, Some(value), e))
    }
    fn rs_read(self, dir: &Path) -> Result<T, CgroupError> {
        self.map_err(|e| from_rs(dir, None, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_path_value_and_errno() {
        let e = CgroupError::Write {
            path: PathBuf::from("/sys/fs/cgroup/memory/corral/x/memory.limit_in_bytes"),
            value: "1048576".into(),
            errno: Errno::EBUSY,
        };
        assert_eq!(
            e.to_string(),
            "write 1048576 to /sys/fs/cgroup/memory/corral/x/memory.limit_in_bytes: \
             EBUSY: Device or resource busy"
        );
        assert_eq!(e.errno(), Some(Errno::EBUSY));
        let e = CgroupError::unsupported("linux.resources.network", "");
        assert_eq!(e.to_string(), "linux.resources.network: not supported");
        let e = CgroupError::unsupported("linux.resources.unified", "cgroup v1");
        assert_eq!(
            e.to_string(),
            "linux.resources.unified: not supported: cgroup v1"
        );
    }

    #[test]
    fn cgroups_rs_errors_get_full_paths() {
        let dir = PathBuf::from("/nonexistent-corral-dir");
        let mem = cgroups_rs::fs::memory::MemController::new(dir.clone(), dir.clone(), false);
        let err = mem.set_limit(4096).rs_ctx(&dir, &4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            "open /nonexistent-corral-dir/memory.limit_in_bytes for writing: \
             ENOENT: No such file or directory"
        );
    }
}
