//! The policy an uploaded (untrusted) `config.json` must satisfy before corral runs it.
//!
//! DESIGN.md, security model: "no host bind mounts outside the bundle, no host namespaces,
//! no added capabilities, no hooks, no devices, seccomp present. An admin token may relax the
//! policy; nothing else can." Defaults may be narrowed by a request, never widened, so every
//! field that would widen them is a [`Violation`] under [`Strictness::Enforce`].
//!
//! [`check`] is purely lexical: it never touches the file system. The bind-mount rule
//! compares paths as written, so the code that performs the mounts must still open every
//! source beneath the bundle directory without following symlinks (`openat2` with
//! `RESOLVE_IN_ROOT`/`RESOLVE_NO_SYMLINKS`), as DESIGN.md requires for any path a sandbox
//! could have written.
//!
//! Not checked here, because the policy has no host information: resource amounts (memory,
//! pids, CPU: the service clamps them to its own limits) and rlimits other than the two that
//! grant scheduling privilege (`RLIMIT_RTPRIO`, `RLIMIT_NICE`).

mod capabilities;
mod devices;
mod idmap;
mod mounts;
mod namespaces;
mod process;
mod rootfs;
mod seccomp;
mod service_owned;
mod sysctl;
pub mod system_paths;

#[cfg(test)]
mod prop_oracle;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;

use std::path::Path;

use oci_spec::runtime::Spec;

pub use self::capabilities::default_capabilities;

/// One rule an uploaded spec breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Violation {
    /// JSON path of the offending field, e.g. `mounts[2].source`, `linux.namespaces`,
    /// `process.capabilities.bounding`.
    pub field: String,
    /// Why the value is refused. Values taken from the spec appear quoted and escaped.
    pub reason: String,
}

impl Violation {
    /// A violation of `field` for `reason`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// How strictly [`check`] applies the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Every rule applies: the caller holds a user token.
    Enforce,
    /// No rule applies: the caller holds an admin token, who is root on the host anyway.
    Relaxed,
}

/// Checks `spec`, uploaded in the bundle at `bundle_dir`, against the policy.
///
/// Under [`Strictness::Enforce`] returns every violation found (not just the first), in a
/// stable order. Under [`Strictness::Relaxed`] always returns `Ok(())`, even for a spec
/// that bind-mounts `/` or joins the host's namespaces: an admin may do anything root may.
///
/// `bundle_dir` should be the absolute, canonical bundle directory chosen by the service;
/// bind sources are resolved lexically against it (see the module documentation).
pub fn check(spec: &Spec, bundle_dir: &Path, strictness: Strictness) -> Result<(), Vec<Violation>> {
    if strictness == Strictness::Relaxed {
        return Ok(());
    }
    let mut out = Vec::new();
    let linux = spec.linux().as_ref();

    rootfs::check(spec.root().as_ref(), linux, &mut out);
    mounts::check(
        spec.mounts().as_deref().unwrap_or_default(),
        bundle_dir,
        &mut out,
    );
    process::check(spec.process().as_ref(), &mut out);
    namespaces::check(linux, &mut out);
    idmap::check_linux(linux, &mut out);
    devices::check(linux, &mut out);
    sysctl::check(linux, &mut out);
    seccomp::check(linux, &mut out);
    service_owned::check(spec, &mut out);

    if out.is_empty() { Ok(()) } else { Err(out) }
}
