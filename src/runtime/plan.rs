//! The validated, precomputed form of a container's `config.json`.
//!
//! Everything that can be checked or computed before a process is forked is done here,
//! in the runtime's own process: a bad field fails before anything exists on the host,
//! and the child that sets up the container only executes a finished plan.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use caps::{Capability, CapsHashSet};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceType, LinuxIdMapping, LinuxNamespaceType, LinuxResources, Process, Spec,
};

use super::linux::cgroups::CgroupPath;
use super::linux::mount_opts::{self, MountOptions};
use super::linux::seccomp::{self, SeccompProgram};
use super::spec::SpecError;

/// A namespace to enter by path.
#[derive(Debug, Clone)]
pub struct JoinNamespace {
    pub kind: CloneFlags,
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct MountPlan {
    pub destination: PathBuf,
    pub typ: String,
    pub source: Option<PathBuf>,
    pub options: MountOptions,
}

#[derive(Debug, Clone)]
pub struct DevicePlan {
    pub path: PathBuf,
    /// `S_IFCHR`, `S_IFBLK` or `S_IFIFO`.
    pub kind: libc::mode_t,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Default)]
pub struct CapsPlan {
    pub bounding: CapsHashSet,
    pub effective: CapsHashSet,
    pub permitted: CapsHashSet,
    pub inheritable: CapsHashSet,
    pub ambient: CapsHashSet,
}

#[derive(Debug, Clone)]
pub struct Rlimit {
    pub resource: libc::__rlimit_resource_t,
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

#[derive(Debug, Clone)]
pub struct ProcessPlan {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    pub cwd: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub umask: Option<u32>,
    pub rlimits: Vec<Rlimit>,
    pub caps: Option<CapsPlan>,
    pub no_new_privileges: bool,
    pub oom_score_adj: Option<i32>,
    pub terminal: bool,
    pub console_size: Option<(u16, u16)>,
    /// `(class, priority)` for `ioprio_set(2)`.
    pub io_priority: Option<(i32, i32)>,
}

#[derive(Debug)]
pub struct Plan {
    pub rootfs: PathBuf,
    pub rootfs_readonly: bool,
    /// The config lists no mount namespace: the container stays in the runtime's. Its
    /// mounts are made there (under the rootfs), it enters its root with `chroot` (a
    /// `pivot_root` would move every process's root), and `delete` unmounts them.
    pub host_mount_ns: bool,
    /// Namespaces to create with `clone3` (never `CLONE_NEWCGROUP`, see `new_cgroup_ns`).
    pub clone_flags: CloneFlags,
    /// The cgroup namespace is unshared by init after it was placed in its cgroup.
    pub new_cgroup_ns: bool,
    /// A new time namespace, with its offsets (`monotonic`, `boottime`: secs, nanosecs).
    pub new_time_ns: Option<Vec<(String, i64, u32)>>,
    /// Namespaces joined by init itself (mount, uts, ipc, net, cgroup, user).
    pub join: Vec<JoinNamespace>,
    /// Namespaces that only apply to children (pid, time): the runtime enters them for
    /// the clone.
    pub join_for_children: Vec<JoinNamespace>,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    pub mounts: Vec<MountPlan>,
    pub rootfs_propagation: Option<MsFlags>,
    pub devices: Vec<DevicePlan>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctl: Vec<(String, String)>,
    pub process: ProcessPlan,
    pub seccomp: Option<SeccompProgram>,
    pub cgroup_path: CgroupPath,
    pub resources: Option<LinuxResources>,
    pub annotations: HashMap<String, String>,
    /// From the [`REAPER_ANNOTATION`]: the init stays as pid 1, reaps, and reports the
    /// program's wait status on this fd (one of the preserved fds).
    pub reaper_status_fd: Option<i32>,
    /// Resolve the process's cwd and program at `start` instead of during create (see
    /// [`CreateOptions::resolve_at_start`](super::create::CreateOptions)).
    pub resolve_at_start: bool,
    /// The process comes after create (see
    /// [`CreateOptions::late_process`](super::create::CreateOptions)).
    pub late_process: bool,
}

impl Plan {
    pub fn has_new(&self, ns: CloneFlags) -> bool {
        self.clone_flags.contains(ns)
    }

    /// Joins `path`, a network namespace made for this container ahead of time (fresh,
    /// never used), instead of creating one in the clone. Only when the container asks
    /// for a new network namespace; returns whether it does.
    pub fn use_fresh_netns(&mut self, path: PathBuf) -> bool {
        if !self.has_new(CloneFlags::CLONE_NEWNET) {
            return false;
        }
        self.clone_flags.remove(CloneFlags::CLONE_NEWNET);
        self.join.push(JoinNamespace {
            kind: CloneFlags::CLONE_NEWNET,
            path,
        });
        true
    }

    pub fn user_ns(&self) -> bool {
        self.has_new(CloneFlags::CLONE_NEWUSER)
            || self
                .join
                .iter()
                .any(|j| j.kind == CloneFlags::CLONE_NEWUSER)
    }
}

/// `org.corral.init.reaper-status-fd: "<fd>"`: the program runs as pid 2 under a small
/// pid 1 that reaps orphans and, when the program ends, writes its raw wait status (a
/// native-endian `i32`) to `<fd>` and exits. A program that is not pid 1 of its pid
/// namespace gets the ordinary signal semantics (`raise`, `abort`, `SIGXFSZ`,
/// `SIGXCPU` kill it), which judged runs rely on. Only for non-root processes: that pid
/// 1 is the runtime's own code, kept non-dumpable for its whole life.
pub const REAPER_ANNOTATION: &str = "org.corral.init.reaper-status-fd";

fn reaper_status_fd(spec: &Spec) -> Result<Option<i32>, SpecError> {
    let Some(value) = spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get(REAPER_ANNOTATION))
    else {
        return Ok(None);
    };
    let field = format!("annotations.{REAPER_ANNOTATION}");
    let fd: i32 = value.parse().ok().filter(|fd| *fd >= 3).ok_or_else(|| {
        SpecError::invalid(&field, format!("{value:?}: expected an fd number >= 3"))
    })?;
    let uid = spec.process().as_ref().map_or(0, |p| p.user().uid());
    if uid == 0 {
        return Err(SpecError::invalid(
            &field,
            "only for a non-root process (pid 1 stays the runtime's own code)",
        ));
    }
    if !spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
        })
    {
        return Err(SpecError::invalid(&field, "needs a new pid namespace"));
    }
    Ok(Some(fd))
}

fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Without a mount namespace of its own, a container's mounts are the runtime's: what
/// would change mounts outside its rootfs (the root remounted read-only is the mount the
/// rootfs sits on; masked and read-only paths are mounts over the host's /proc and /sys
/// once no pivot hides them; propagation applies to the runtime's root) is refused, as
/// runc refuses masked and read-only paths there.
fn refuse_in_host_mount_ns(spec: &Spec) -> Result<(), SpecError> {
    let why = "needs a mount namespace of the container's own: linux.namespaces lists none, \
               so the container shares the runtime's, whose mounts this would change";
    let linux = spec.linux().clone().unwrap_or_default();
    let set = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
    if set(linux.masked_paths()) {
        return Err(SpecError::invalid("linux.maskedPaths", why));
    }
    if set(linux.readonly_paths()) {
        return Err(SpecError::invalid("linux.readonlyPaths", why));
    }
    if spec.root().as_ref().and_then(|r| r.readonly()) == Some(true) {
        return Err(SpecError::invalid("root.readonly", why));
    }
    if linux
        .rootfs_propagation()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(SpecError::invalid("linux.rootfsPropagation", why));
    }
    Ok(())
}

/// Builds the plan. `bundle` is absolute; `id` names the default cgroup.
pub fn build(spec: &Spec, bundle: &Path, id: &str, systemd: bool) -> Result<Plan, SpecError> {
    refuse_unimplemented(spec)?;
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| SpecError::invalid("root", "missing"))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .map_err(|e| SpecError::invalid("root.path", format!("{}: {e}", rootfs.display())))?;
    if !rootfs.is_dir() {
        return Err(SpecError::invalid(
            "root.path",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    let linux = spec.linux().clone().unwrap_or_default();
    let (clone_flags, new_cgroup_ns, join, join_for_children, new_time) = namespaces(spec)?;
    // No mount namespace listed: the container inherits the runtime's (runtime spec,
    // "Namespaces"). What would then change the runtime's own mounts is refused below.
    let host_mount_ns = !clone_flags.contains(CloneFlags::CLONE_NEWNS)
        && !join.iter().any(|j| j.kind == CloneFlags::CLONE_NEWNS);
    if host_mount_ns {
        refuse_in_host_mount_ns(spec)?;
    }
    let user_ns = clone_flags.contains(CloneFlags::CLONE_NEWUSER);
    let uid_mappings = linux.uid_mappings().clone().unwrap_or_default();
    let gid_mappings = linux.gid_mappings().clone().unwrap_or_default();
    if user_ns && (uid_mappings.is_empty() || gid_mappings.is_empty()) {
        return Err(SpecError::invalid(
            "linux.uidMappings",
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if !user_ns && (!uid_mappings.is_empty() || !gid_mappings.is_empty()) {
        return Err(SpecError::invalid(
            "linux.uidMappings",
            "id mappings need a new user namespace",
        ));
    }
    let has_uts = clone_flags.contains(CloneFlags::CLONE_NEWUTS)
        || join.iter().any(|j| j.kind == CloneFlags::CLONE_NEWUTS);
    for (field, value) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) && !has_uts {
            return Err(SpecError::invalid(
                field,
                "setting it needs a uts namespace",
            ));
        }
    }
    let mut mounts = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let field = || format!("mounts[{i}]");
        if !m.destination().is_absolute() {
            return Err(SpecError::invalid(
                format!("{}.destination", field()),
                format!("{:?} is not an absolute path", m.destination()),
            ));
        }
        if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
            return Err(SpecError::invalid(
                format!("{}.uidMappings", field()),
                "id-mapped mounts are not supported",
            ));
        }
        let options = MountOptions::parse(m.options().as_deref().unwrap_or_default())
            .map_err(|e| SpecError::invalid(format!("{}.options", field()), e.to_string()))?;
        let typ = m.typ().clone().unwrap_or_default();
        let bind = options.bind || typ == "bind";
        if !bind && typ.is_empty() {
            return Err(SpecError::invalid(
                format!("{}.type", field()),
                "missing (and the options do not say bind)",
            ));
        }
        let source = m.source().as_ref().map(|s| {
            if bind && s.is_relative() {
                bundle.join(s)
            } else {
                s.clone()
            }
        });
        if bind && source.is_none() {
            return Err(SpecError::invalid(
                format!("{}.source", field()),
                "a bind mount needs a source",
            ));
        }
        mounts.push(MountPlan {
            destination: m.destination().clone(),
            typ: if bind { "bind".into() } else { typ },
            source,
            options,
        });
    }
    let rootfs_propagation = match linux.rootfs_propagation().as_deref() {
        None | Some("") => None,
        Some(v) => Some(mount_opts::rootfs_propagation(v).ok_or_else(|| {
            SpecError::invalid("linux.rootfsPropagation", format!("unknown value {v:?}"))
        })?),
    };
    let devices = devices(linux.devices().as_deref().unwrap_or_default())?;
    let sysctl = sysctls(linux.sysctl().as_ref(), &clone_flags, &join)?;
    let seccomp = match linux.seccomp() {
        Some(s) => Some(
            seccomp::compile(s).map_err(|e| SpecError::invalid("linux.seccomp", e.to_string()))?,
        ),
        None => None,
    };
    let cgroup_path = CgroupPath::parse(
        linux.cgroups_path().as_ref().and_then(|p| p.to_str()),
        id,
        systemd,
    )
    .map_err(|e| SpecError::invalid("linux.cgroupsPath", e.to_string()))?;
    Ok(Plan {
        rootfs,
        host_mount_ns,
        rootfs_readonly: root.readonly().unwrap_or(false),
        clone_flags,
        new_cgroup_ns,
        new_time_ns: new_time,
        join,
        join_for_children,
        uid_mappings,
        gid_mappings,
        mounts,
        rootfs_propagation,
        devices,
        masked_paths: linux
            .masked_paths()
            .iter()
            .flatten()
            .map(PathBuf::from)
            .collect(),
        readonly_paths: linux
            .readonly_paths()
            .iter()
            .flatten()
            .map(PathBuf::from)
            .collect(),
        hostname: spec.hostname().clone().filter(|h| !h.is_empty()),
        domainname: spec.domainname().clone().filter(|h| !h.is_empty()),
        sysctl,
        process: process(spec)?,
        seccomp,
        cgroup_path,
        resources: with_default_device_rules(linux.resources().clone()),
        annotations: spec.annotations().clone().unwrap_or_default(),
        reaper_status_fd: reaper_status_fd(spec)?,
        resolve_at_start: false,
        late_process: false,
    })
}

type Namespaces = (
    CloneFlags,
    bool,
    Vec<JoinNamespace>,
    Vec<JoinNamespace>,
    Option<Vec<(String, i64, u32)>>,
);

fn namespaces(spec: &Spec) -> Result<Namespaces, SpecError> {
    let mut flags = CloneFlags::empty();
    let mut new_cgroup = false;
    let mut join = Vec::new();
    let mut join_children = Vec::new();
    let mut seen = CloneFlags::empty();
    let mut new_time = None;
    let linux = spec.linux().as_ref();
    for (i, ns) in linux
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let flag = ns_flag(ns.typ());
        if seen.contains(flag) {
            return Err(SpecError::invalid(
                format!("linux.namespaces[{i}]"),
                format!("namespace {} is listed twice", ns.typ()),
            ));
        }
        seen |= flag;
        match ns.path() {
            Some(path) if !path.as_os_str().is_empty() => {
                if !path.exists() {
                    return Err(SpecError::invalid(
                        format!("linux.namespaces[{i}].path"),
                        format!("{}: no such file", path.display()),
                    ));
                }
                let j = JoinNamespace {
                    kind: flag,
                    path: path.clone(),
                };
                match ns.typ() {
                    LinuxNamespaceType::Pid | LinuxNamespaceType::Time => join_children.push(j),
                    _ => join.push(j),
                }
            }
            _ => match ns.typ() {
                LinuxNamespaceType::Cgroup => new_cgroup = true,
                LinuxNamespaceType::Time => new_time = Some(Vec::new()),
                _ => flags |= flag,
            },
        }
    }
    if let Some(offsets) = linux.and_then(|l| l.time_offsets().as_ref()) {
        let Some(list) = new_time.as_mut() else {
            return Err(SpecError::invalid(
                "linux.timeOffsets",
                "time offsets need a new time namespace",
            ));
        };
        for (clock, off) in offsets {
            if clock != "monotonic" && clock != "boottime" {
                return Err(SpecError::invalid(
                    format!("linux.timeOffsets.{clock}"),
                    "only monotonic and boottime can be offset",
                ));
            }
            list.push((
                clock.clone(),
                off.secs().unwrap_or(0),
                off.nanosecs().unwrap_or(0),
            ));
        }
    }
    if flags.contains(CloneFlags::CLONE_NEWUSER) && !join.is_empty() {
        return Err(SpecError::invalid(
            "linux.namespaces",
            "joining namespaces by path together with a new user namespace is not supported",
        ));
    }
    if join.iter().any(|j| j.kind == CloneFlags::CLONE_NEWUSER)
        && flags.contains(CloneFlags::CLONE_NEWPID)
    {
        return Err(SpecError::invalid(
            "linux.namespaces",
            "a new pid namespace inside a user namespace joined by path is not supported",
        ));
    }
    Ok((flags, new_cgroup, join, join_children, new_time))
}

fn devices(list: &[LinuxDevice]) -> Result<Vec<DevicePlan>, SpecError> {
    // The default devices of the runtime spec (config-linux.md#default-devices).
    let mut out: Vec<DevicePlan> = [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/random", 1, 8),
        ("/dev/urandom", 1, 9),
        ("/dev/tty", 5, 0),
    ]
    .into_iter()
    .map(|(path, major, minor)| DevicePlan {
        path: path.into(),
        kind: libc::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect();
    for (i, d) in list.iter().enumerate() {
        let field = format!("linux.devices[{i}]");
        if !d.path().starts_with("/dev") {
            return Err(SpecError::invalid(
                format!("{field}.path"),
                format!("{} is not under /dev", d.path().display()),
            ));
        }
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => libc::S_IFCHR,
            LinuxDeviceType::B => libc::S_IFBLK,
            LinuxDeviceType::P => libc::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(SpecError::invalid(
                    format!("{field}.type"),
                    "\"a\" is not a device type",
                ));
            }
        };
        let (major, minor) = (d.major(), d.minor());
        if kind != libc::S_IFIFO && (major < 0 || minor < 0) {
            return Err(SpecError::invalid(field, "major and minor must be set"));
        }
        out.retain(|o| o.path != *d.path());
        out.push(DevicePlan {
            path: d.path().clone(),
            kind,
            major: major.max(0) as u64,
            minor: minor.max(0) as u64,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        });
    }
    Ok(out)
}

/// Validates sysctls as runc does: only namespaced ones, and only with their namespace.
fn sysctls(
    map: Option<&HashMap<String, String>>,
    flags: &CloneFlags,
    join: &[JoinNamespace],
) -> Result<Vec<(String, String)>, SpecError> {
    let has = |f: CloneFlags| flags.contains(f) || join.iter().any(|j| j.kind == f);
    let mut out = Vec::new();
    for (key, value) in map.into_iter().flatten() {
        let field = || format!("linux.sysctl.{key}");
        if key.contains("..") || key.contains('\0') || key.starts_with('/') {
            return Err(SpecError::invalid(field(), "invalid name"));
        }
        let ipc = matches!(
            key.as_str(),
            "kernel.msgmax"
                | "kernel.msgmnb"
                | "kernel.msgmni"
                | "kernel.sem"
                | "kernel.shmall"
                | "kernel.shmmax"
                | "kernel.shmmni"
                | "kernel.shm_rmid_forced"
        ) || key.starts_with("fs.mqueue.");
        let needs = if ipc {
            (CloneFlags::CLONE_NEWIPC, "an ipc namespace")
        } else if key.starts_with("net.") {
            (CloneFlags::CLONE_NEWNET, "a network namespace")
        } else if key == "kernel.hostname" || key == "kernel.domainname" {
            (CloneFlags::CLONE_NEWUTS, "a uts namespace")
        } else {
            return Err(SpecError::invalid(field(), "not a namespaced sysctl"));
        };
        if !has(needs.0) {
            return Err(SpecError::invalid(field(), format!("needs {}", needs.1)));
        }
        out.push((key.clone(), value.clone()));
    }
    out.sort();
    Ok(out)
}

fn cstrings(field: &str, list: &[String]) -> Result<Vec<CString>, SpecError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            CString::new(s.as_bytes())
                .map_err(|_| SpecError::invalid(format!("{field}[{i}]"), "contains a NUL byte"))
        })
        .collect()
}

fn capset(
    field: &str,
    set: &Option<oci_spec::runtime::Capabilities>,
) -> Result<CapsHashSet, SpecError> {
    let mut out = CapsHashSet::new();
    for cap in set.iter().flatten() {
        let name = format!("CAP_{cap}");
        let parsed: Capability = name
            .parse()
            .map_err(|_| SpecError::invalid(field, format!("unknown capability {name}")))?;
        out.insert(parsed);
    }
    Ok(out)
}

fn process(spec: &Spec) -> Result<ProcessPlan, SpecError> {
    let p = spec
        .process()
        .as_ref()
        .ok_or_else(|| SpecError::invalid("process", "missing"))?;
    process_plan(p)
}

/// The plan of one process: the container's init, or a process that `exec` starts.
pub fn process_plan(p: &Process) -> Result<ProcessPlan, SpecError> {
    refuse_unimplemented_process(p)?;
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(SpecError::invalid("process.args", "must name a program"));
    }
    if !p.cwd().is_absolute() {
        return Err(SpecError::invalid(
            "process.cwd",
            format!("{:?} is not an absolute path", p.cwd()),
        ));
    }
    let caps = match p.capabilities() {
        None => None,
        Some(c) => {
            let mut plan = CapsPlan {
                bounding: capset("process.capabilities.bounding", c.bounding())?,
                effective: capset("process.capabilities.effective", c.effective())?,
                permitted: capset("process.capabilities.permitted", c.permitted())?,
                inheritable: capset("process.capabilities.inheritable", c.inheritable())?,
                ambient: capset("process.capabilities.ambient", c.ambient())?,
            };
            // The kernel raises an ambient capability only if it is permitted and
            // inheritable. runc's own `spec` lists ambient capabilities without
            // inheritable ones and runc skips them; do the same, visibly in --debug.
            let (inh, prm) = (&plan.inheritable, &plan.permitted);
            let skipped: Vec<String> = plan
                .ambient
                .iter()
                .filter(|c| !inh.contains(c) || !prm.contains(c))
                .map(|c| c.to_string())
                .collect();
            if !skipped.is_empty() {
                tracing::debug!(
                    "process.capabilities.ambient: {skipped:?} not raised: not in both inheritable and permitted"
                );
                plan.ambient.retain(|c| inh.contains(c) && prm.contains(c));
            }
            Some(plan)
        }
    };
    let mut rlimits = Vec::new();
    let mut seen = Vec::new();
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let name = r.typ().to_string();
        let field = format!("process.rlimits[{i}]");
        if seen.contains(&name) {
            return Err(SpecError::invalid(field, format!("{name} is given twice")));
        }
        let resource = rlimit_resource(&name)
            .ok_or_else(|| SpecError::invalid(&field, format!("unknown rlimit {name}")))?;
        if r.soft() > r.hard() {
            return Err(SpecError::invalid(
                field,
                "soft limit is above the hard limit",
            ));
        }
        seen.push(name.clone());
        rlimits.push(Rlimit {
            resource,
            name,
            soft: r.soft(),
            hard: r.hard(),
        });
    }
    if let Some(profile) = p.apparmor_profile().as_deref().filter(|s| !s.is_empty())
        && apparmor_enabled()
    {
        return Err(SpecError::invalid(
            "process.apparmorProfile",
            format!("{profile:?}: AppArmor profiles are not supported"),
        ));
    }
    let io_priority = p.io_priority().as_ref().map(|io| {
        use oci_spec::runtime::IOPriorityClass as C;
        let class = match io.class() {
            C::IoprioClassRt => 1,
            C::IoprioClassBe => 2,
            C::IoprioClassIdle => 3,
        };
        (class, io.priority() as i32)
    });
    Ok(ProcessPlan {
        args: cstrings("process.args", &args)?,
        env: cstrings("process.env", p.env().as_deref().unwrap_or_default())?,
        cwd: p.cwd().clone(),
        uid: p.user().uid(),
        gid: p.user().gid(),
        additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
        umask: p.user().umask(),
        rlimits,
        caps,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        oom_score_adj: p.oom_score_adj(),
        terminal: p.terminal().unwrap_or(false),
        console_size: p
            .console_size()
            .map(|b| (b.height() as u16, b.width() as u16)),
        io_priority,
    })
}

/// The device cgroup rules every container gets after its own (as runc's specconv does):
/// mknod of any node, and read/write/mknod of the default devices and of ptys. Without
/// them, a config that denies all devices (podman's) could not even create /dev/null.
fn with_default_device_rules(resources: Option<LinuxResources>) -> Option<LinuxResources> {
    use oci_spec::runtime::LinuxDeviceCgroup;
    let rule = |typ: LinuxDeviceType, major: Option<i64>, minor: Option<i64>, access: &str| {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(true);
        r.set_typ(Some(typ));
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    };
    let c = LinuxDeviceType::C;
    let defaults = [
        rule(c, None, None, "m"),
        rule(LinuxDeviceType::B, None, None, "m"),
        rule(c, Some(1), Some(3), "rwm"),
        rule(c, Some(1), Some(5), "rwm"),
        rule(c, Some(1), Some(7), "rwm"),
        rule(c, Some(1), Some(8), "rwm"),
        rule(c, Some(1), Some(9), "rwm"),
        rule(c, Some(5), Some(0), "rwm"),
        rule(c, Some(5), Some(2), "rwm"),
        rule(c, Some(136), None, "rwm"),
    ];
    let mut resources = resources.unwrap_or_default();
    let mut rules = resources.devices().clone().unwrap_or_default();
    if rules.is_empty() {
        // No rules: the cgroup allows every device; nothing to add.
        return Some(resources);
    }
    rules.extend(defaults);
    resources.set_devices(Some(rules));
    Some(resources)
}

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim() == "Y")
}

fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Fields of the spec that corral parses but does not implement: refused by name,
/// never silently ignored.
fn refuse_unimplemented(spec: &Spec) -> Result<(), SpecError> {
    let no = |field: &str| Err(SpecError::invalid(field, "not supported by corral"));
    if let Some(l) = spec.linux() {
        if l.intel_rdt().is_some() {
            return no("linux.intelRdt");
        }
        if l.memory_policy().is_some() {
            return no("linux.memoryPolicy");
        }
        if l.personality().is_some() {
            return no("linux.personality");
        }
        if l.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
            return no("linux.netDevices");
        }
        if l.mount_label().as_deref().is_some_and(|s| !s.is_empty()) {
            return no("linux.mountLabel (SELinux)");
        }
    }
    if spec.vm().is_some() {
        return no("vm");
    }
    Ok(())
}

/// The process fields corral parses but does not implement (for the init and for
/// `exec`'s process).
fn refuse_unimplemented_process(p: &Process) -> Result<(), SpecError> {
    let no = |field: &str| Err(SpecError::invalid(field, "not supported by corral"));
    if p.selinux_label().as_deref().is_some_and(|s| !s.is_empty()) {
        return no("process.selinuxLabel");
    }
    if p.scheduler().is_some() {
        return no("process.scheduler");
    }
    if p.exec_cpu_affinity().is_some() {
        return no("process.execCPUAffinity");
    }
    if p.command_line().as_deref().is_some_and(|s| !s.is_empty()) {
        return no("process.commandLine (Windows only)");
    }
    Ok(())
}
