//! The token file: `<role> <token> [name]` lines, readable by its owner only.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::store::Builder;
use super::{AuthError, Role, TokenStore};

/// Others may neither read nor write the file: reading leaks every token, writing lets
/// anyone add an admin.
const OTHERS_RW: u32 = 0o006;

/// A token file is a few lines; refuse to slurp anything larger.
const MAX_SIZE: u64 = 1 << 20;

pub(super) fn load(path: &Path) -> Result<TokenStore, AuthError> {
    let error = |line: Option<usize>, reason: String| AuthError::File {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let file = File::open(path).map_err(|e| error(None, format!("open: {e}")))?;
    // fstat the opened file, not the path, so the checked file is the one read.
    let metadata = file
        .metadata()
        .map_err(|e| error(None, format!("stat: {e}")))?;
    if !metadata.is_file() {
        return Err(error(None, "not a regular file".into()));
    }
    let mode = metadata.permissions().mode();
    if mode & OTHERS_RW != 0 {
        return Err(error(
            None,
            format!(
                "mode {:04o} lets other users read or write the tokens; chmod o-rw it",
                mode & 0o7777
            ),
        ));
    }
    let mut text = String::new();
    file.take(MAX_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(|e| error(None, format!("read: {e}")))?;
    if text.len() as u64 > MAX_SIZE {
        return Err(error(None, format!("larger than {MAX_SIZE} bytes")));
    }
    parse(&text).map_err(|(line, reason)| error(Some(line), reason))
}

/// Parses the file's text; an error is `(1-based line, reason)`, the reason never
/// containing the token (nor any other field, in case the fields were swapped).
pub(super) fn parse(text: &str) -> Result<TokenStore, (usize, String)> {
    let mut builder = Builder::default();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        // Tokens cannot contain '#', so a word starting with one begins a comment.
        let mut words = line
            .split_ascii_whitespace()
            .take_while(|w| !w.starts_with('#'));
        let Some(role) = words.next() else { continue };
        let role = Role::parse(role).ok_or_else(|| {
            (
                number,
                "unknown role (expected `user` or `admin`)".to_string(),
            )
        })?;
        let token = words
            .next()
            .ok_or_else(|| (number, "missing token after the role".to_string()))?;
        let name = match words.next() {
            Some(name) => name.to_string(),
            None => format!("{role}-line{number}"),
        };
        if words.next().is_some() {
            return Err((number, "unexpected field after the name".into()));
        }
        builder
            .add(role, token, name, number, "line")
            .map_err(|reason| (number, reason))?;
    }
    Ok(builder.build())
}
