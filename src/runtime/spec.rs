//! Reading `config.json` from a bundle, with errors that name the file, the field and
//! the reason (`config.json: process.user.uid: invalid type: string "x", expected u32`).

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

/// What can go wrong with a bundle and its `config.json`.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("bundle {path}: {err}")]
    Bundle { path: PathBuf, err: std::io::Error },
    #[error("{path}: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{path}: {field}: {reason}", field = if .field.is_empty() { "(document)" } else { .field })]
    Parse {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// A field that parsed but cannot be honoured.
    #[error("config.json: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl SpecError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The bundle directory, made absolute, and its parsed `config.json`.
pub fn load_bundle(bundle: &Path) -> Result<(PathBuf, Spec), SpecError> {
    let bundle = std::fs::canonicalize(bundle).map_err(|err| SpecError::Bundle {
        path: bundle.to_path_buf(),
        err,
    })?;
    if !bundle.is_dir() {
        return Err(SpecError::Bundle {
            path: bundle,
            err: std::io::Error::from_raw_os_error(libc::ENOTDIR),
        });
    }
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|err| SpecError::Read {
        path: path.clone(),
        err,
    })?;
    let spec = parse(&text).map_err(|(field, reason)| SpecError::Parse {
        path: path.clone(),
        field,
        reason,
    })?;
    Ok((bundle, spec))
}

/// Parses a `config.json` document; on failure returns `(field path, reason)`.
pub fn parse(text: &[u8]) -> Result<Spec, (String, String)> {
    // Tracking the path costs as much again as the parse: only a failed parse needs it.
    if let Ok(spec) = serde_json::from_slice(text) {
        return Ok(spec);
    }
    let de = &mut serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        (field, e.into_inner().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_type_names_the_field() {
        let (field, reason) =
            parse(br#"{"ociVersion":"1.0.2","process":{"user":{"uid":"x","gid":0},"cwd":"/"}}"#)
                .unwrap_err();
        assert_eq!(field, "process.user.uid");
        assert!(reason.contains("invalid type"), "{reason}");
    }

    #[test]
    fn malformed_json_is_reported() {
        let (_, reason) = parse(b"{\"ociVersion\": ").unwrap_err();
        assert!(reason.contains("EOF"), "{reason}");
    }

    #[test]
    fn missing_bundle_names_the_path() {
        let err = load_bundle(Path::new("/nonexistent/bundle")).unwrap_err();
        assert!(
            err.to_string().starts_with("bundle /nonexistent/bundle: "),
            "{err}"
        );
    }
}
