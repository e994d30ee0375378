//! `linux.cgroupsPath`: where a container's cgroup lives inside every hierarchy.
//!
//! Interpretation (cgroupfs driver only; there is no systemd driver):
//! - absolute `/a/b`: `a/b` below the root of every hierarchy (`/sys/fs/cgroup/memory/a/b`, ...).
//! - relative `a/b`: also taken below the root of every hierarchy, i.e. exactly like `/a/b`.
//!   The runtime spec leaves relative paths implementation-defined. Note that runc resolves
//!   them against its *own* cgroup instead (v1: the runtime's cgroup in each hierarchy;
//!   v2: the parent of the runtime's cgroup); corral deliberately does not, so that the
//!   place of a container does not depend on where `corral` itself was started.
//! - missing or empty: `/corral/<container id>`.
//!
//! `..`, `.`, empty components (`a//b`, a trailing `/`), NUL bytes and the root itself are
//! refused. The systemd form `slice:prefix:name` is refused with a clear error, as is
//! `--systemd-cgroup`: corral has no systemd cgroup driver.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::CgroupError;

/// Where systemd, when it is the init system, keeps its runtime state (`sd_booted(3)`).
const SYSTEMD_RUNTIME_DIR: &str = "/run/systemd/system";

/// A validated `linux.cgroupsPath`. Serializes as the original string, so that it can be
/// stored in the container state and handed back to [`super::Cgroup::open`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CgroupPath(String);

impl CgroupPath {
    /// Parses the value of `linux.cgroupsPath` for container `container_id`.
    /// `systemd` is the runtime's `--systemd-cgroup` flag.
    pub fn parse(
        spec_value: Option<&str>,
        container_id: &str,
        systemd: bool,
    ) -> Result<Self, CgroupError> {
        if systemd {
            return Err(systemd_error());
        }
        match spec_value {
            None | Some("") => {
                validate_component(container_id).map_err(|reason| CgroupError::InvalidPath {
                    path: format!("/corral/{container_id}"),
                    reason: format!("container id {container_id:?} {reason}"),
                })?;
                Ok(Self(format!("/corral/{container_id}")))
            }
            Some(v) => Self::validate(v),
        }
    }

    fn validate(v: &str) -> Result<Self, CgroupError> {
        let invalid = |reason: String| CgroupError::InvalidPath {
            path: v.to_string(),
            reason,
        };
        let rel = v.strip_prefix('/').unwrap_or(v);
        if !v.starts_with('/') && rel.split(':').count() == 3 && !rel.contains('/') {
            // "system.slice:corral:<id>": the systemd driver's syntax.
            return Err(systemd_error());
        }
        if rel.is_empty() {
            return Err(invalid("the root cgroup cannot hold a container".into()));
        }
        for c in rel.split('/') {
            validate_component(c).map_err(|r| invalid(format!("component {c:?} {r}")))?;
        }
        Ok(Self(v.to_string()))
    }

    /// The path below the root of each hierarchy, without a leading `/`: `corral/x`.
    pub fn relative(&self) -> &Path {
        Path::new(self.0.strip_prefix('/').unwrap_or(&self.0))
    }

    /// The value as given (or derived), as stored in state.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn validate_component(c: &str) -> Result<(), &'static str> {
    match c {
        "" => Err("is empty"),
        "." | ".." => Err("is not allowed"),
        _ if c.contains('\0') => Err("contains a NUL byte"),
        _ if c.contains('/') => Err("contains '/'"),
        _ => Ok(()),
    }
}

fn systemd_error() -> CgroupError {
    CgroupError::SystemdUnavailable {
        reason: if Path::new(SYSTEMD_RUNTIME_DIR).is_dir() {
            "corral only implements the cgroupfs driver"
        } else {
            "systemd is not running"
        },
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for CgroupPath {
    type Error = CgroupError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Self::validate(&v)
    }
}

impl From<CgroupPath> for String {
    fn from(p: CgroupPath) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Option<&str>) -> Result<CgroupPath, CgroupError> {
        CgroupPath::parse(v, "ctr1", false)
    }

    #[test]
    fn default_is_corral_slash_id() {
        for v in [None, Some("")] {
            let p = parse(v).unwrap();
            assert_eq!(p.as_str(), "/corral/ctr1");
            assert_eq!(p.relative(), Path::new("corral/ctr1"));
        }
    }

    #[test]
    fn absolute_and_relative_are_below_each_root() {
        let a = parse(Some("/a/b")).unwrap();
        assert_eq!(a.relative(), Path::new("a/b"));
        assert_eq!(a.to_string(), "/a/b");
        let r = parse(Some("a/b")).unwrap();
        assert_eq!(r.relative(), Path::new("a/b"));
        assert_eq!(r.as_str(), "a/b");
        // Colons are fine in an absolute path and in a path with a '/'.
        assert!(parse(Some("/x:y:z")).is_ok());
        assert!(parse(Some("a/x:y:z")).is_ok());
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "/", "/a/../b", "..", "a/..", "/a//b", "/a/", "a/./b", "/a\0b", "//a",
        ] {
            let e = parse(Some(bad)).unwrap_err();
            assert!(
                matches!(e, CgroupError::InvalidPath { .. }),
                "{bad:?} gave {e}"
            );
        }
        for bad_id in ["", "..", "a/b", "x\0"] {
            assert!(
                CgroupPath::parse(None, bad_id, false).is_err(),
                "{bad_id:?}"
            );
        }
    }

    #[test]
    fn systemd_forms_are_refused() {
        let e = parse(Some("system.slice:corral:abc")).unwrap_err();
        assert!(matches!(e, CgroupError::SystemdUnavailable { .. }), "{e}");
        if !Path::new(SYSTEMD_RUNTIME_DIR).is_dir() {
            assert_eq!(
                e.to_string(),
                "systemd cgroup driver is not available: systemd is not running"
            );
        }
        let e = CgroupPath::parse(Some("/a/b"), "x", true).unwrap_err();
        assert!(matches!(e, CgroupError::SystemdUnavailable { .. }), "{e}");
        let e = CgroupPath::parse(None, "x", true).unwrap_err();
        assert!(matches!(e, CgroupError::SystemdUnavailable { .. }), "{e}");
    }

    #[test]
    fn serde_round_trip_validates() {
        let p = parse(Some("/a/b")).unwrap();
        let j = serde_json::to_string(&p).unwrap();
        assert_eq!(j, "\"/a/b\"");
        let back: CgroupPath = serde_json::from_str(&j).unwrap();
        assert_eq!(back, p);
        assert!(serde_json::from_str::<CgroupPath>("\"/a/../b\"").is_err());
    }
}
