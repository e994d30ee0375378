//! The one error type of the syscall layer: what was attempted, on what, and the errno.

use std::fmt;

/// A failed system call, with enough context to say what failed, on what, and why:
/// `mount proc on /run/corral/x/rootfs/proc: EPERM: Operation not permitted`.
#[derive(Debug, thiserror::Error)]
pub struct SysError {
    what: String,
    errno: nix::Error,
    /// The failure is the container's own: its configuration or its rootfs content
    /// (see [`SysError::in_content`]), not the host's.
    content: bool,
}

impl SysError {
    pub fn new(what: impl Into<String>, errno: nix::Error) -> Self {
        Self {
            what: what.into(),
            errno,
            content: false,
        }
    }

    /// Marks the error as caused by the container's configuration or rootfs content
    /// when its errno says that a path holds something else than what the setup needs
    /// there: a non-directory on the way or where a directory goes (`ENOTDIR`), a symlink
    /// loop (`ELOOP`), a name too long (`ENAMETOOLONG`), another file in the way
    /// (`EEXIST`). For errors of the steps that work on paths of the rootfs (mounts,
    /// devices, masked paths), whose message names the path.
    pub fn in_content(self) -> Self {
        use nix::Error as E;
        match self.errno {
            E::ENOTDIR | E::ELOOP | E::ENAMETOOLONG | E::EEXIST => self.as_content(),
            _ => self,
        }
    }

    /// Marks the error as caused by the container's configuration or rootfs content.
    pub fn as_content(mut self) -> Self {
        self.content = true;
        self
    }

    /// Whether the failure is the container's own (see [`SysError::in_content`]).
    pub fn is_content(&self) -> bool {
        self.content
    }

    /// A failure that is not an errno but a violated rule (for example a path that
    /// leaves the root); reported with `EINVAL`.
    pub fn invalid(what: impl Into<String>) -> Self {
        Self::new(what, nix::Error::EINVAL)
    }

    pub fn errno(&self) -> nix::Error {
        self.errno
    }
}

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.errno)
    }
}

pub type SysResult<T> = Result<T, SysError>;

/// Attaches context to a `nix` result: `mount(...).ctx(|| format!("mount {src} on {dst}"))`.
pub trait Context<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> SysResult<T>;
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> SysResult<T> {
        self.map_err(|e| SysError::new(what(), e))
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx<F: FnOnce() -> String>(self, what: F) -> SysResult<T> {
        self.map_err(|e| {
            let errno = e
                .raw_os_error()
                .map(nix::Error::from_raw)
                .unwrap_or(nix::Error::EIO);
            SysError::new(what(), errno)
        })
    }
}
