//! Bearer-token authentication with two roles, `user` and `admin`.
//!
//! DESIGN.md: "Every API call needs a bearer token, except health checks. Tokens are
//! compared in constant time and never logged." The store keeps only SHA-256 digests of
//! the tokens, so no token is left in memory after loading, and nothing here can print one:
//! error messages name the file and line, never the token.

mod error;
mod file;
mod header;
mod identity;
mod store;
mod token;

#[cfg(test)]
mod tests;

pub use self::error::AuthError;
pub use self::identity::{Identity, Role};
pub use self::store::TokenStore;
