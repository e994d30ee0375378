//! Who a request is: the role and the name of the token it presented.

use std::fmt;

/// What a token may do. `Admin` outranks `User`, so `role >= Role::User` admits both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May use the API under the policy.
    User,
    /// May also relax the policy (`policy::Strictness::Relaxed`).
    Admin,
}

impl Role {
    /// The role's name in the token file and in JSON: `user` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Admin => "admin",
        }
    }

    /// Parses `user` or `admin` (exactly, as in the token file).
    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller. Holds no token, so it is safe to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's role.
    pub role: Role,
    /// The token's name (from the token file, or `<role>-line<N>` when it gives none).
    pub name: String,
}
