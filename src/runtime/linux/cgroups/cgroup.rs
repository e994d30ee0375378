//! [`Cgroup`]: one container's cgroup, made in every hierarchy of the host.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::LinuxResources;

use super::error::CgroupError;
use super::layout::Layout;
use super::path::CgroupPath;
use super::{CgroupMode, fsutil, v1, v2, validate};

/// A handle to a container's cgroup across hierarchies. It holds no file descriptors;
/// to find it again later, store [`Cgroup::path`] (it serializes as a string) and call
/// [`Cgroup::open`].
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub(super) path: CgroupPath,
    pub(super) layout: &'static Layout,
    /// The cgroup's directory in each v1 hierarchy, index for index with `layout.v1`.
    pub(super) v1: Vec<PathBuf>,
    /// The cgroup's directory in the cgroup2 hierarchy (V2, or hybrid's unified mount).
    pub(super) unified: Option<PathBuf>,
}

impl Cgroup {
    /// Creates the cgroup in every hierarchy (runc does the same: every mounted v1
    /// controller hierarchy plus `name=systemd`, and in hybrid mode the unified mount),
    /// then applies `resources`. On error everything this call created is removed again.
    ///
    /// An existing cgroup may be reused, but only while it holds no process.
    pub fn create(
        path: &CgroupPath,
        resources: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        Self::create_in(Layout::host()?, path, resources)
    }

    /// [`Cgroup::create`] in fewer hierarchies: on cgroup v1 (and hybrid) hosts only those
    /// of `controllers`, without the named `systemd` and unified ones; in V2 mode the
    /// same as `create`. For short-lived sandboxes (judged runs) that need no more:
    /// each hierarchy costs a directory, its files and a migration per container.
    /// [`Cgroup::open`] still finds it (it looks in every hierarchy, and a missing
    /// directory holds nothing); `linux.resources` must not need other controllers.
    pub fn create_only(
        path: &CgroupPath,
        resources: Option<&LinuxResources>,
        controllers: &[&str],
    ) -> Result<Self, CgroupError> {
        Self::create_in(Layout::host_subset(controllers)?, path, resources)
    }

    /// Re-opens a cgroup made earlier by [`Cgroup::create`]. Nothing is checked on disk:
    /// a cgroup that is (partly) gone can still be deleted.
    pub fn open(path: &CgroupPath) -> Result<Self, CgroupError> {
        Ok(Self::at(Layout::host()?, path))
    }

    /// Re-opens a cgroup made by [`Cgroup::create_only`] with the same `controllers`:
    /// only their hierarchies are read and removed.
    pub fn open_only(path: &CgroupPath, controllers: &[&str]) -> Result<Self, CgroupError> {
        Ok(Self::at(Layout::host_subset(controllers)?, path))
    }

    pub(super) fn at(layout: &'static Layout, path: &CgroupPath) -> Self {
        let rel = path.relative();
        Self {
            path: path.clone(),
            layout,
            v1: layout.v1.iter().map(|h| h.mount_point.join(rel)).collect(),
            unified: layout.unified.as_ref().map(|u| u.join(rel)),
        }
    }

    pub(super) fn create_in(
        layout: &'static Layout,
        path: &CgroupPath,
        resources: Option<&LinuxResources>,
    ) -> Result<Self, CgroupError> {
        if let Some(r) = resources {
            validate::validate(r, layout.mode)?;
        }
        let cg = Self::at(layout, path);
        let mut created = Vec::new();
        let result = cg.make_dirs(&mut created).and_then(|()| match resources {
            Some(r) => cg.apply_checked(r),
            None => Ok(()),
        });
        match result {
            Ok(()) => {
                tracing::debug!(cgroup = %path, mode = ?layout.mode, "cgroup created");
                Ok(cg)
            }
            Err(e) => {
                fsutil::remove_created(&created);
                Err(e)
            }
        }
    }

    fn make_dirs(&self, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
        let rel = self.path.relative();
        let mut pre_existing = Vec::new();
        for (h, dir) in self.layout.v1.iter().zip(&self.v1) {
            let new = fsutil::mkdir_all(&h.mount_point, rel)?;
            if new.last() != Some(dir) {
                pre_existing.push(dir);
            }
            created.extend(new);
            if h.controllers.iter().any(|c| c == "cpuset") {
                v1::cpuset_inherit(&h.mount_point, rel)?;
            }
        }
        if let (Some(root), Some(dir)) = (&self.layout.unified, &self.unified) {
            let new = fsutil::mkdir_all(root, rel)?;
            if new.last() != Some(dir) {
                pre_existing.push(dir);
            }
            created.extend(new);
            v2::enable_controllers(root, rel)?;
        }
        for dir in pre_existing {
            let pids = fsutil::read_pids(dir)?;
            if !pids.is_empty() {
                return Err(CgroupError::NotEmpty {
                    path: dir.clone(),
                    count: pids.len(),
                });
            }
        }
        Ok(())
    }

    /// Moves process `pid` (all its threads) into the cgroup, hierarchy by hierarchy.
    pub fn add_process(&self, pid: i32) -> Result<(), CgroupError> {
        let pid = pid.to_string();
        for dir in self.dirs() {
            fsutil::write(&dir.join("cgroup.procs"), &pid)?;
        }
        Ok(())
    }

    /// Applies `resources` (for `create` and for `update`). The whole set is checked
    /// first; a field that cannot be honoured fails before anything is written.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        validate::validate(resources, self.layout.mode)?;
        self.apply_checked(resources)
    }

    fn apply_checked(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        match self.layout.mode {
            CgroupMode::V2 => v2::apply(self, r),
            CgroupMode::V1 | CgroupMode::Hybrid => v1::apply(self, r),
        }
    }

    /// The processes in the cgroup (as seen from this pid namespace). Read from one
    /// hierarchy: the unified one in V2 mode, else the freezer's (the one `kill_all`
    /// freezes), as a process is in the container's cgroup in every hierarchy.
    /// A cgroup that does not exist (any more) holds no process.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = self.primary_dir()?;
        match fsutil::read_pids(dir) {
            Err(e) if e.errno() == Some(Errno::ENOENT) && !dir.exists() => Ok(Vec::new()),
            res => res,
        }
    }

    /// Removes the cgroup from every hierarchy (child cgroups first), retrying briefly
    /// while exiting tasks leave. Missing directories are not an error. All hierarchies
    /// are tried; the first error is returned.
    pub fn delete(&self) -> Result<(), CgroupError> {
        let mut first = None;
        for dir in self.dirs() {
            if let Err(e) = fsutil::remove_cgroup(dir) {
                tracing::warn!(error = %e, "cgroup removal failed");
                first.get_or_insert(e);
            }
        }
        match first {
            None => {
                tracing::debug!(cgroup = %self.path, "cgroup deleted");
                Ok(())
            }
            Some(e) => Err(e),
        }
    }

    pub fn mode(&self) -> CgroupMode {
        self.layout.mode
    }

    /// The path to store in state and pass to [`Cgroup::open`].
    pub fn path(&self) -> &CgroupPath {
        &self.path
    }

    /// The cgroup's directory in each hierarchy, named like the hierarchy's mount below
    /// `/sys/fs/cgroup` (`cpu`, `cpu,cpuacct`, `systemd`, hybrid's `unified`), for
    /// binding into the container's own `cgroup` mount. In V2 mode: one entry, named "".
    pub fn host_dirs(&self) -> Vec<(String, PathBuf)> {
        if self.layout.mode == CgroupMode::V2 {
            return self
                .unified
                .iter()
                .map(|d| (String::new(), d.clone()))
                .collect();
        }
        let name = |mount: &Path| {
            mount
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let v1 = self.layout.v1.iter().zip(&self.v1);
        let v1 = v1.map(|(h, d)| (name(&h.mount_point), d.clone()));
        let unified = self.layout.unified.as_deref().zip(self.unified.as_ref());
        v1.chain(unified.map(|(m, d)| (name(m), d.clone())))
            .collect()
    }

    /// Every directory of the cgroup: the v1 ones, then the unified one.
    pub(super) fn dirs(&self) -> impl Iterator<Item = &PathBuf> {
        self.v1.iter().chain(self.unified.as_ref())
    }

    /// The cgroup's directory in the v1 hierarchy carrying `controller`.
    pub(super) fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.layout
            .v1_index(controller)
            .map(|i| self.v1[i].as_path())
    }

    pub(super) fn primary_dir(&self) -> Result<&Path, CgroupError> {
        self.v1_dir("freezer")
            .or_else(|| self.v1.first().map(PathBuf::as_path))
            .or(self.unified.as_deref())
            .ok_or_else(|| CgroupError::NoHierarchy(format!("for cgroup {}", self.path)))
    }
}
