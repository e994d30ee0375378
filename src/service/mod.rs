//! Use cases of the HTTP service: containers, images, policy, and the launcher that
//! forks containers on the service's behalf. Knows nothing of HTTP.

pub mod config;
pub mod containers;
mod dir_watch;
pub mod exec_size;
pub mod images;
pub mod images_dir;
pub mod launcher;
pub mod metrics;
pub mod policy;
pub mod runs;
pub mod sandbox;

pub use launcher::ErrorKind;

use crate::bundle::extract::ExtractError;

/// The kind of an upload's extraction failure: over a size limit (413), caused by the
/// archive (400), or the service's own failure (500).
pub fn extract_error_kind(e: &ExtractError) -> ErrorKind {
    if e.is_over_limit() {
        ErrorKind::TooLarge
    } else if e.is_service_fault() {
        ErrorKind::Internal
    } else {
        ErrorKind::BadRequest
    }
}

/// The error of a use case: a kind (the HTTP layer maps it to a status) and a one-line
/// message naming the thing and the reason.
#[derive(Debug)]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
    /// Policy violations, one per field.
    pub violations: Vec<policy::Violation>,
    /// The request timed out waiting (for `wait`).
    pub timed_out: bool,
}

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ServiceError {
            kind,
            message: message.into(),
            violations: Vec::new(),
            timed_out: false,
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn not_found(id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("container {id} does not exist"),
        )
    }

    pub fn io(op: String, e: std::io::Error) -> Self {
        Self::internal(format!("{op}: {e}"))
    }

    pub fn policy(violations: Vec<policy::Violation>) -> Self {
        let n = violations.len();
        let first = violations
            .first()
            .map(|v| v.to_string())
            .unwrap_or_default();
        ServiceError {
            kind: ErrorKind::BadRequest,
            message: format!(
                "config.json refused by policy ({n} violation{}): {first}",
                if n == 1 { "" } else { "s" }
            ),
            violations,
            timed_out: false,
        }
    }

    pub fn timeout(mut self) -> Self {
        self.timed_out = true;
        self
    }
}

impl std::fmt::Display for ServiceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
