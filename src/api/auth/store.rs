//! The token store: digests of the accepted tokens, with their roles and names.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::token::{self, TokenDigest};
use super::{AuthError, Identity, Role, file, header};

struct Entry {
    digest: TokenDigest,
    role: Role,
    name: String,
}

/// The accepted bearer tokens. Holds SHA-256 digests only; its `Debug` prints counts.
pub struct TokenStore {
    entries: Vec<Entry>,
}

impl TokenStore {
    /// Loads a token file: one `<role> <token> [name]` per line, `role` being `user` or
    /// `admin`, tokens at least 32 characters of `[A-Za-z0-9_-]`; `#` starts a comment;
    /// blank lines are skipped. The file must not be readable or writable by others
    /// (`mode & 0o006 == 0`). Duplicate tokens or names are refused. A file without tokens
    /// loads as an empty store, which authenticates nobody (see [`Self::is_empty`]).
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        file::load(path)
    }

    /// A store from `(role, token, name)` triples, checked as [`Self::load`] checks lines.
    pub fn from_entries(entries: Vec<(Role, String, String)>) -> Result<Self, AuthError> {
        let mut builder = Builder::default();
        for (index, (role, token, name)) in entries.into_iter().enumerate() {
            builder
                .add(role, &token, name, index, "entry")
                .map_err(|reason| AuthError::Entry { index, reason })?;
        }
        Ok(builder.build())
    }

    /// Whether the store holds no token (and so refuses every request).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Authenticates an `Authorization` header value (`Bearer <token>`, scheme in any
    /// case): `None` is [`AuthError::Missing`], another shape [`AuthError::Malformed`], an
    /// unknown token [`AuthError::Invalid`].
    ///
    /// The SHA-256 digest of the presented token is compared in constant time with the
    /// digest of every stored token, with no early exit, so the time taken depends neither
    /// on which token matched nor on how much of one did.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Identity, AuthError> {
        let presented = token::digest(header::bearer_token(header)?);
        let mut found = Choice::from(0);
        let mut index = 0u64;
        for (i, entry) in self.entries.iter().enumerate() {
            let hit = entry.digest.ct_eq(&presented);
            index.conditional_assign(&(i as u64), hit);
            found |= hit;
        }
        if !bool::from(found) {
            return Err(AuthError::Invalid);
        }
        let entry = usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .ok_or(AuthError::Invalid)?;
        Ok(Identity {
            role: entry.role,
            name: entry.name.clone(),
        })
    }

    /// A new random token: 43 characters of URL-safe base64 from 32 bytes of
    /// `/dev/urandom`. Fails only if `/dev/urandom` cannot be read.
    pub fn generate_token() -> Result<String, AuthError> {
        token::generate()
    }

    fn count(&self, role: Role) -> usize {
        self.entries.iter().filter(|e| e.role == role).count()
    }
}

impl fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenStore")
            .field("users", &self.count(Role::User))
            .field("admins", &self.count(Role::Admin))
            .finish()
    }
}

/// Collects entries, refusing bad tokens and names and duplicates of either.
#[derive(Default)]
pub(super) struct Builder {
    entries: Vec<Entry>,
    /// Where each digest and name was first seen (line or entry number), to name it in
    /// the error for a duplicate.
    tokens_seen: HashMap<TokenDigest, usize>,
    names_seen: HashMap<String, usize>,
}

impl Builder {
    /// Adds one entry found at `position` (a `kind` such as "line"). The error is a reason
    /// that never contains the token.
    pub(super) fn add(
        &mut self,
        role: Role,
        token: &str,
        name: String,
        position: usize,
        kind: &str,
    ) -> Result<(), String> {
        token::validate(token)?;
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err("the name is empty or has control characters".into());
        }
        let digest = token::digest(token);
        if let Some(first) = self.tokens_seen.get(&digest) {
            return Err(format!("the same token as {kind} {first}"));
        }
        if let Some(first) = self.names_seen.get(&name) {
            return Err(format!("the same name as {kind} {first}"));
        }
        self.tokens_seen.insert(digest, position);
        self.names_seen.insert(name.clone(), position);
        self.entries.push(Entry { digest, role, name });
        Ok(())
    }

    pub(super) fn build(self) -> TokenStore {
        TokenStore {
            entries: self.entries,
        }
    }
}
