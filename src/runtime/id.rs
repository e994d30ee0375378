//! Container ids: `[A-Za-z0-9_+.-]+`, never `.` or `..` (they name a directory under the
//! state root, so anything else could reach outside it).

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid container id {id:?}: {reason}")]
pub struct InvalidId {
    pub id: String,
    pub reason: &'static str,
}

pub const MAX_ID_LEN: usize = 1024;

pub fn validate(id: &str) -> Result<(), InvalidId> {
    let bad = |reason| {
        Err(InvalidId {
            id: id.chars().take(80).collect(),
            reason,
        })
    };
    if id.is_empty() {
        return bad("empty");
    }
    if id == "." || id == ".." {
        return bad("\".\" and \"..\" are not ids");
    }
    if id.len() > MAX_ID_LEN {
        return bad("longer than 1024 bytes");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
    {
        return bad("only letters, digits and _ + . - are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_runc_style_ids() {
        for id in ["a", "abc-123", "x_y+z.w", "0", "..."] {
            assert!(validate(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn refuses_paths_and_odd_bytes() {
        for id in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "a\0",
            "é",
            &"x".repeat(1025),
        ] {
            assert!(validate(id).is_err(), "{id:?}");
        }
    }
}
