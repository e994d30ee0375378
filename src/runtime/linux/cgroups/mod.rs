//! Container cgroups: create, configure, populate, freeze, signal, measure and remove
//! the cgroup of one container, on cgroup v1, v2 and hybrid hosts (cgroupfs driver).
//!
//! - [`CgroupPath`] turns `linux.cgroupsPath` into a checked path (see `path.rs` for how
//!   absolute, relative and missing values are placed).
//! - [`Cgroup::create`] makes it in every hierarchy and applies `linux.resources`; every
//!   resource field is either written (with the v1 -> v2 conversions of runc/crun) or
//!   refused with an error naming its OCI path, never silently ignored.
//! - The host's hierarchies are discovered once per process ([`detect_mode`] plus, on
//!   v1/hybrid hosts, one read of `/proc/self/mountinfo`).
//!
//! cgroups-rs is used for v1 mount discovery, v2 detection, and the per-controller
//! file writers and readers where they are correct; the module docs of `layout.rs`,
//! `v1.rs`, `v2.rs`, `freezer.rs` and `stats.rs` say what is ours instead, and why.
//!
//! Device rules (`linux.resources.devices`) are written to `devices.allow`/`devices.deny`
//! on v1; on v2 they are compiled into an eBPF device program attached to the cgroup,
//! and on a hybrid host that program is attached to the unified cgroup as well as the
//! v1 files written (see `devices/mod.rs`).

mod cgroup;
mod common;
mod convert;
mod devices;
mod dynmods;
mod error;
mod freezer;
mod fsutil;
mod layout;
mod path;
mod stats;
mod v1;
mod v2;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_v2;

use serde::{Deserialize, Serialize};

pub use self::cgroup::Cgroup;
pub use self::devices::attached as attached_device_programs;
pub use self::dynmods::{DynMods, favor_dynmods};
pub use self::error::CgroupError;
pub use self::path::CgroupPath;
pub use self::stats::{CgroupStats, CpuStats, MemoryStats, PidsStats};

/// How the host's cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// Only v1 controller hierarchies.
    V1,
    /// v1 controller hierarchies plus a cgroup2 mount at `/sys/fs/cgroup/unified`
    /// (which may hold controllers not bound to v1, e.g. `hugetlb`).
    Hybrid,
    /// `/sys/fs/cgroup` is cgroup2.
    V2,
}

/// `V2` if `/sys/fs/cgroup` is a cgroup2 mount; `Hybrid` if not but
/// `/sys/fs/cgroup/unified` is; else `V1`. Computed once per process.
pub fn detect_mode() -> CgroupMode {
    layout::detect_mode()
}
