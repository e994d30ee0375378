//! Tokens: their syntax, their digests and the generation of new ones.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::AuthError;

/// The shortest token the store accepts.
pub(super) const MIN_LEN: usize = 32;

/// Bytes of randomness in a generated token (43 base64 characters).
const GENERATED_BYTES: usize = 32;

const RANDOM_SOURCE: &str = "/dev/urandom";

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// SHA-256 of a token: the store compares digests, so the comparison takes the same time
/// whatever the presented token's length or content.
pub(super) type TokenDigest = [u8; 32];

pub(super) fn digest(token: &str) -> TokenDigest {
    Sha256::digest(token.as_bytes()).into()
}

/// Checks a token for the store. The reason never contains the token.
pub(super) fn validate(token: &str) -> Result<(), String> {
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("the token has a character outside [A-Za-z0-9_-]".into());
    }
    if token.len() < MIN_LEN {
        return Err(format!("the token is shorter than {MIN_LEN} characters"));
    }
    Ok(())
}

/// 32 bytes from `/dev/urandom` as 43 characters of unpadded URL-safe base64.
pub(super) fn generate() -> Result<String, AuthError> {
    let fail = |reason: String| AuthError::File {
        path: RANDOM_SOURCE.into(),
        line: None,
        reason,
    };
    let mut file = File::open(Path::new(RANDOM_SOURCE)).map_err(|e| fail(format!("open: {e}")))?;
    let is_char_device = file
        .metadata()
        .map_err(|e| fail(format!("stat: {e}")))?
        .file_type()
        .is_char_device();
    if !is_char_device {
        return Err(fail("not a character device".into()));
    }
    let mut bytes = [0u8; GENERATED_BYTES];
    file.read_exact(&mut bytes)
        .map_err(|e| fail(format!("read: {e}")))?;
    Ok(base64url(&bytes))
}

/// Unpadded URL-safe base64 (RFC 4648 section 5).
pub(super) fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let group = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // A chunk of n bytes yields n + 1 characters without padding.
        for i in 0..=chunk.len() {
            let sextet = (group >> (18 - 6 * i)) & 0x3f;
            out.push(char::from(BASE64URL[sextet as usize]));
        }
    }
    out
}
