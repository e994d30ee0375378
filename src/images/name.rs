//! Image names: `[A-Za-z0-9_.-]`, 1 to 128 bytes, not starting with `.`.
//!
//! A name is a directory under the store root, so it must not reach outside
//! it (`/`, `.`, `..`). Names starting with `.` are refused as well: hidden
//! entries of the root are the store's own (temp dirs of imports in progress).

use super::error::ImageError;

/// Longest image name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks `name` against the naming rule.
pub fn validate_name(name: &str) -> Result<(), ImageError> {
    let bad = |reason| {
        Err(ImageError::InvalidName {
            name: name.chars().take(80).collect(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 128 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with \".\" (\".\", \"..\" and hidden names are reserved)");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return bad("only letters, digits and _ . - are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate_name;

    #[test]
    fn accepts_plain_names() {
        for name in ["a", "busybox", "gcc-13.2_x", "A.b-c_9", &"x".repeat(128)] {
            assert!(validate_name(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_paths_hidden_and_odd_bytes() {
        for name in [
            "",
            ".",
            "..",
            ".tmp-1",
            "a/b",
            "../x",
            "a b",
            "a+b",
            "a\0",
            "é",
            &"x".repeat(129),
        ] {
            assert!(validate_name(name).is_err(), "{name:?}");
        }
    }
}
