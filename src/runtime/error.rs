//! The runtime's error type: every variant names the container or the thing that failed.

use super::exec::ExecError;
use super::hooks::HookError;
use super::id::InvalidId;
use super::linux::cgroups::CgroupError;
use super::linux::error::SysError;
use super::spec::SpecError;
use super::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The container's init reported a setup failure (the text says what and why).
    #[error("container {id}: init: {reason}")]
    Init { id: String, reason: String },
    /// The init could not set up the container as configured: its program or cwd does
    /// not exist in its rootfs, or its rootfs holds something else where a mount or a
    /// device goes (the message names the path).
    #[error("container {id}: init: {reason}")]
    InitConfig { id: String, reason: String },
    /// An operation that the container's status does not allow.
    #[error("{message}")]
    Status { message: String },
    #[error("{0}")]
    Usage(String),
}

impl Error {
    pub fn status(message: impl Into<String>) -> Self {
        Error::Status {
            message: message.into(),
        }
    }

    /// True when the error says the container does not exist (runc's wording, which
    /// clients such as containerd look for).
    pub fn is_not_exist(&self) -> bool {
        matches!(self, Error::State(StateError::NotExist(_)))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
