//! Where the cgroup hierarchies of this host are mounted.
//!
//! cgroups-rs finds v1 hierarchies well (`hierarchies::mountinfo_self()` keeps every
//! `cgroup` mount with its super options, so separately mounted `cpu` and `cpuacct`, or a
//! co-mounted `cpu,cpuacct`, are both found), and we use it for that, once per process.
//! What it cannot describe is the *hybrid* layout: its `V1` hierarchy ignores `cgroup2`
//! mounts, and its `V2` hierarchy is hard-wired to `/sys/fs/cgroup` (both the mount point
//! and the `cgroup.controllers` it reads). On a hybrid host the unified mount at
//! `/sys/fs/cgroup/unified` (which may hold controllers, e.g. `hugetlb`) is therefore
//! invisible to it. This module adds that piece: one [`Layout`] listing every v1 hierarchy
//! and, separately, the cgroup2 mount if there is one.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::CgroupMode;
use super::error::CgroupError;

pub(super) const CGROUP_ROOT: &str = "/sys/fs/cgroup";
pub(super) const HYBRID_UNIFIED: &str = "/sys/fs/cgroup/unified";

/// v1 controllers a container's cgroup is created in (runc's list), plus the named
/// `systemd` hierarchy, which has no controller but is joined so that tools that look
/// there find the container.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "perf_event",
    "rdma",
    "misc",
    "name=systemd",
];

/// One mounted v1 hierarchy and the controllers bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct V1Hierarchy {
    pub mount_point: PathBuf,
    pub controllers: Vec<String>,
}

/// Every hierarchy a container's cgroup is made in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub mode: CgroupMode,
    /// Empty in [`CgroupMode::V2`].
    pub v1: Vec<V1Hierarchy>,
    /// The cgroup2 mount: `/sys/fs/cgroup` in V2 mode, `/sys/fs/cgroup/unified` in hybrid.
    pub unified: Option<PathBuf>,
}

static MODE: OnceLock<CgroupMode> = OnceLock::new();
static LAYOUT: OnceLock<Layout> = OnceLock::new();

fn is_cgroup2(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// See [`super::detect_mode`]. Two `statfs(2)` calls, cached.
pub(super) fn detect_mode() -> CgroupMode {
    *MODE.get_or_init(|| {
        if cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode() {
            CgroupMode::V2
        } else if is_cgroup2(HYBRID_UNIFIED) {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        }
    })
}

impl Layout {
    /// The host's layout, discovered on first use (one read of `/proc/self/mountinfo`
    /// in V1/hybrid mode, none in V2 mode) and kept for the life of the process.
    pub(super) fn host() -> Result<&'static Layout, CgroupError> {
        let l = LAYOUT.get_or_init(Self::discover);
        if l.v1.is_empty() && l.unified.is_none() {
            return Err(CgroupError::NoHierarchy(format!(
                "neither cgroup v1 controllers nor cgroup2 are mounted at {CGROUP_ROOT}"
            )));
        }
        Ok(l)
    }

    fn discover() -> Layout {
        let mode = detect_mode();
        match mode {
            CgroupMode::V2 => Layout {
                mode,
                v1: Vec::new(),
                unified: Some(PathBuf::from(CGROUP_ROOT)),
            },
            CgroupMode::Hybrid | CgroupMode::V1 => {
                let mounts = cgroups_rs::fs::hierarchies::mountinfo_self()
                    .into_iter()
                    .map(|m| (m.mount_point, m.super_opts));
                Layout {
                    mode,
                    v1: v1_hierarchies(mounts),
                    unified: (mode == CgroupMode::Hybrid).then(|| PathBuf::from(HYBRID_UNIFIED)),
                }
            }
        }
    }

    /// The host's layout cut down to the v1 hierarchies that carry one of `controllers`
    /// (and, on a hybrid host, without the unified mount); the host's layout itself in
    /// V2 mode, where one hierarchy carries every controller. Cached per controller set
    /// for the life of the process (callers use a few fixed sets).
    pub(super) fn host_subset(controllers: &[&str]) -> Result<&'static Layout, CgroupError> {
        static SUBSETS: std::sync::Mutex<Vec<(Vec<String>, &'static Layout)>> =
            std::sync::Mutex::new(Vec::new());
        let host = Self::host()?;
        if host.mode == CgroupMode::V2 {
            return Ok(host);
        }
        let key: Vec<String> = controllers.iter().map(|c| c.to_string()).collect();
        let mut cache = SUBSETS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, l)) = cache.iter().find(|(k, _)| *k == key) {
            return Ok(l);
        }
        let layout: &'static Layout = Box::leak(Box::new(Layout {
            mode: host.mode,
            v1: host
                .v1
                .iter()
                .filter(|h| h.controllers.iter().any(|c| key.contains(c)))
                .cloned()
                .collect(),
            unified: None,
        }));
        cache.push((key, layout));
        Ok(layout)
    }

    /// A pure cgroup v2 layout rooted at `root` (tests run the v2 code on the hybrid
    /// host's unified mount this way).
    #[cfg(test)]
    pub(super) fn v2_at(root: &Path) -> Layout {
        Layout {
            mode: CgroupMode::V2,
            v1: Vec::new(),
            unified: Some(root.to_path_buf()),
        }
    }

    /// Index in `v1` of the hierarchy that carries `controller`.
    pub(super) fn v1_index(&self, controller: &str) -> Option<usize> {
        self.v1
            .iter()
            .position(|h| h.controllers.iter().any(|c| c == controller))
    }
}

/// Picks one mount per v1 hierarchy from `(mount point, super options)` pairs of `cgroup`
/// mounts. A hierarchy mounted twice (bind mounts, a container's view propagated back)
/// is taken once, preferring a mount point directly below `/sys/fs/cgroup`.
fn v1_hierarchies(mounts: impl Iterator<Item = (PathBuf, Vec<String>)>) -> Vec<V1Hierarchy> {
    let mut candidates: Vec<V1Hierarchy> = mounts
        .map(|(mount_point, opts)| V1Hierarchy {
            mount_point,
            controllers: opts
                .into_iter()
                .filter(|o| V1_CONTROLLERS.contains(&o.as_str()))
                .collect(),
        })
        .filter(|h| !h.controllers.is_empty())
        .collect();
    // Stable: keeps mountinfo order among equals.
    candidates.sort_by_key(|h| h.mount_point.parent() != Some(Path::new(CGROUP_ROOT)));
    let mut out: Vec<V1Hierarchy> = Vec::new();
    for h in candidates {
        let seen = out
            .iter()
            .any(|o| o.controllers.iter().any(|c| h.controllers.contains(c)));
        if !seen {
            out.push(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(s: &str) -> Vec<String> {
        s.split(',').map(String::from).collect()
    }

    #[test]
    fn separate_and_comounted_hierarchies() {
        let mounts = vec![
            (PathBuf::from("/sys/fs/cgroup/cpu"), opts("rw,cpu")),
            (PathBuf::from("/sys/fs/cgroup/cpuacct"), opts("rw,cpuacct")),
            (
                PathBuf::from("/sys/fs/cgroup/systemd"),
                opts("rw,xattr,name=systemd"),
            ),
            (
                PathBuf::from("/sys/fs/cgroup/net_cls,net_prio"),
                opts("rw,net_cls,net_prio"),
            ),
            (PathBuf::from("/sys/fs/cgroup/other"), opts("rw,name=other")),
        ];
        let h = v1_hierarchies(mounts.into_iter());
        let names: Vec<_> = h.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(
            names,
            ["cpu", "cpuacct", "name=systemd", "net_cls,net_prio"]
        );
    }

    #[test]
    fn duplicate_mounts_prefer_sys_fs_cgroup() {
        let mounts = vec![
            (
                PathBuf::from("/run/c/rootfs/sys/fs/cgroup/memory"),
                opts("rw,memory"),
            ),
            (PathBuf::from("/sys/fs/cgroup/memory"), opts("rw,memory")),
            (PathBuf::from("/sys/fs/cgroup/memory2"), opts("ro,memory")),
        ];
        let h = v1_hierarchies(mounts.into_iter());
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].mount_point, Path::new("/sys/fs/cgroup/memory"));
    }

    #[test]
    fn host_layout_is_consistent_with_mode() {
        let Ok(l) = Layout::host() else { return };
        assert_eq!(l.mode, detect_mode());
        match l.mode {
            CgroupMode::V2 => assert!(l.v1.is_empty() && l.unified.is_some()),
            CgroupMode::Hybrid => assert!(l.unified.is_some()),
            CgroupMode::V1 => assert!(l.unified.is_none()),
        }
    }
}
