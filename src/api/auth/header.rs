//! The `Authorization: Bearer <token>` header.

use super::AuthError;

/// The token in an `Authorization` header value: `Bearer <token>`, the scheme in any case,
/// surrounding and separating whitespace tolerated. `None` (no header) is
/// [`AuthError::Missing`]; anything else that is not exactly a scheme and one token is
/// [`AuthError::Malformed`].
pub(super) fn bearer_token(header: Option<&str>) -> Result<&str, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let mut words = value.split_ascii_whitespace();
    let scheme = words.next().ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    let token = words.next().ok_or(AuthError::Malformed)?;
    if words.next().is_some() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}
