//! Authentication errors. None of them carries a token.

use std::path::PathBuf;

/// Why a request or the token file was refused. The message never contains a token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header (HTTP 401).
    #[error("missing bearer token")]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>` (HTTP 401).
    #[error("malformed Authorization header: expected `Bearer <token>`")]
    Malformed,
    /// A well-formed header with a token that is not in the store (HTTP 401).
    #[error("invalid bearer token")]
    Invalid,
    /// The token file (or `/dev/urandom`, for [`TokenStore::generate_token`]) could not be
    /// used; `line` is 1-based.
    ///
    /// [`TokenStore::generate_token`]: super::TokenStore::generate_token
    #[error("{}{}: {reason}", .path.display(), line_suffix(*.line))]
    File {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    /// Entry `index` (0-based) given to [`TokenStore::from_entries`] was refused.
    ///
    /// [`TokenStore::from_entries`]: super::TokenStore::from_entries
    #[error("token entry {index}: {reason}")]
    Entry { index: usize, reason: String },
}

impl AuthError {
    /// The HTTP status for this error: 401 for a refused request, 500 otherwise.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Missing | Self::Malformed | Self::Invalid => 401,
            Self::File { .. } | Self::Entry { .. } => 500,
        }
    }
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|n| format!(":{n}")).unwrap_or_default()
}
