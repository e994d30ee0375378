//! The one error type of the launcher module, and the kinds the HTTP layer maps to
//! status codes.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::runtime::Error as RuntimeError;
use crate::runtime::linux::cgroups::CgroupError;
use crate::runtime::state::StateError;

/// What kind of failure a request met: the HTTP layer picks the status code from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The container id is not a valid id (400).
    InvalidId,
    /// The bundle, its `config.json` or another part of the request is unusable (400).
    BadRequest,
    /// No container with that id (404).
    NotFound,
    /// A container with that id exists already (409).
    AlreadyExists,
    /// The container's status does not allow the operation (409).
    Conflict,
    /// The launcher is not running and could not be started (503).
    Unavailable,
    /// Over capacity: every slot is taken and the queue is full (429).
    Busy,
    /// The launcher (or the container's monitor) did not finish in time (504).
    Timeout,
    /// An upload over a size limit: uncompressed bytes, entries, gzip ratio (413).
    TooLarge,
    /// Anything else: the host, the kernel or corral itself failed (500).
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    /// A request the launcher (or the container's monitor) refused or failed; the message
    /// is the runtime's one-line error.
    #[error("{message}")]
    Refused { kind: ErrorKind, message: String },
    /// A runtime operation run by the service itself (start, kill, delete, state).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("start launcher {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    /// The launcher process exited or closed its socket.
    #[error("launcher (pid {pid}) is gone: {reason}")]
    Gone { pid: u32, reason: String },
    /// `corral launcher` was not started the way `corral serve` starts it.
    #[error("launcher: {0}")]
    Setup(String),
    /// A message that does not decode, or one that was not expected.
    #[error("launcher protocol: {0}")]
    Protocol(String),
    /// A system call failed; `op` says what it was doing, on what.
    #[error("{op}: {errno}")]
    Sys { op: String, errno: nix::Error },
    #[error("{op}: {source}")]
    Io { op: String, source: std::io::Error },
    /// A blocking runtime operation panicked or was cancelled.
    #[error("{op}: blocking task failed: {source}")]
    Join {
        op: String,
        source: tokio::task::JoinError,
    },
}

impl LauncherError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            LauncherError::Refused { kind, .. } => *kind,
            LauncherError::Runtime(e) => kind_of(e),
            LauncherError::Spawn { .. } | LauncherError::Gone { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }

    pub(crate) fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> Self {
        move |errno| LauncherError::Sys {
            op: op.into(),
            errno,
        }
    }

    pub(crate) fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        move |source| LauncherError::Io {
            op: op.into(),
            source,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        LauncherError::Refused {
            kind: ErrorKind::BadRequest,
            message: message.into(),
        }
    }
}

/// The kind of a runtime error: the request's fault (bad id, bad bundle, duplicate id,
/// wrong status) or the host's.
pub fn kind_of(e: &RuntimeError) -> ErrorKind {
    match e {
        RuntimeError::InvalidId(_) => ErrorKind::InvalidId,
        RuntimeError::State(StateError::Exists(_)) => ErrorKind::AlreadyExists,
        RuntimeError::State(StateError::NotExist(_)) => ErrorKind::NotFound,
        RuntimeError::Spec(_) | RuntimeError::Usage(_) | RuntimeError::InitConfig { .. } => {
            ErrorKind::BadRequest
        }
        RuntimeError::Cgroup(
            CgroupError::InvalidPath { .. }
            | CgroupError::SystemdUnavailable { .. }
            | CgroupError::Unsupported { .. }
            | CgroupError::InvalidValue { .. }
            | CgroupError::ControllerMissing { .. },
        ) => ErrorKind::BadRequest,
        RuntimeError::Status { .. } => ErrorKind::Conflict,
        _ => ErrorKind::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_map_to_kinds() {
        let exists = RuntimeError::State(StateError::Exists("a".into()));
        assert_eq!(kind_of(&exists), ErrorKind::AlreadyExists);
        let bad_id = crate::runtime::id::validate("../x").map_err(RuntimeError::from);
        assert_eq!(kind_of(&bad_id.unwrap_err()), ErrorKind::InvalidId);
        let spec = crate::runtime::spec::SpecError::invalid("process.args", "empty");
        assert_eq!(kind_of(&spec.into()), ErrorKind::BadRequest);
        assert_eq!(
            kind_of(&RuntimeError::status("not running")),
            ErrorKind::Conflict
        );
        let refused = LauncherError::Refused {
            kind: ErrorKind::AlreadyExists,
            message: "container with id a already exists".into(),
        };
        assert_eq!(refused.to_string(), "container with id a already exists");
        assert_eq!(refused.kind(), ErrorKind::AlreadyExists);
    }
}
