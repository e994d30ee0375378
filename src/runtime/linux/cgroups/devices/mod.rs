//! `linux.resources.devices` on cgroup v2: an eBPF device program attached to the
//! container's cgroup2 directory, as runc, crun and youki do. cgroup v2 has no
//! `devices.allow` / `devices.deny`; instead the kernel runs every
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached (with `BPF_F_ALLOW_MULTI`) to the
//! process's cgroup and its ancestors on each device open and mknod, and refuses the
//! access (`EPERM`) unless all of them allow it.
//!
//! - `filter.rs`: the rule list -> a default and exceptions (runc's emulation of the v1
//!   devices controller);
//! - `program.rs`: those -> eBPF instructions (`insn.rs`: their encoding);
//! - `sys.rs`: `bpf(2)`: load, attach, query, detach;
//! - [`apply`] here: make the program of a rule list the one on a cgroup, replacing
//!   what corral attached before (`update` goes through it too).
//!
//! Where it applies: on a cgroup v2 host, always (it is the only enforcement). On a
//! hybrid host, when the container's cgroup is also made in the unified hierarchy
//! (`Cgroup::create`, not `create_only`): the v1 devices controller enforces the rules
//! there, and the same program is attached to the unified cgroup too, so that both
//! must allow an access (the kernel runs the eBPF programs before the v1 check). That
//! second layer is best effort (a kernel without cgroup eBPF logs a warning there), as
//! the v1 controller already enforces the rules.
//!
//! The rule list is compiled as a whole, starting from "deny every device" (runc's
//! semantics): an `update` with `devices` replaces the whole list. An absent or empty
//! list changes nothing; a list that allows everything detaches corral's program.

mod filter;
mod insn;
mod program;
mod sys;

#[cfg(test)]
mod tests;

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use self::filter::DeviceFilter;
use self::insn::Insn;
use super::convert::DeviceRule;
use super::error::CgroupError;

/// The license the program is loaded under. It only decides whether the program may
/// call GPL-only kernel helpers; a device program calls none. corral's own license.
const LICENSE: &CStr = c"Apache-2.0";

/// The program's name, as `bpftool prog` and `/proc/<pid>/fdinfo` show it.
const PROG_NAME: &str = "corral_devices";

/// The verifier log buffer for a failed load (the kernel wants at least 128 bytes).
const LOG_SIZE: usize = 64 * 1024;

/// Checks that `rules` compile (a rule that would punch a hole in a wildcard exception
/// is refused, naming it), without touching the host.
pub(super) fn check(rules: &[DeviceRule]) -> Result<(), CgroupError> {
    DeviceFilter::compile(rules).map(drop)
}

/// Makes the program of `rules` the only device program attached to the cgroup2
/// directory `dir`: loads it, attaches it (in place of the one attached before, where
/// the kernel can replace atomically), then detaches the programs attached before.
/// There is never a moment without a program: the old one goes only once the new one
/// is in place. No rules: nothing is done. Rules that allow everything: the programs
/// attached before are detached and none is attached.
pub(super) fn apply(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    if rules.is_empty() {
        return Ok(());
    }
    let filter = DeviceFilter::compile(rules)?;
    install(dir, program::build(&filter).as_deref())
}

/// Detaches every device program from the cgroup2 directory `dir`: no device is
/// refused by eBPF any more.
pub(super) fn detach_all(dir: &Path) -> Result<(), CgroupError> {
    install(dir, None)
}

/// Attaches `program` (none: nothing) to `dir` and detaches the ones attached before.
fn install(dir: &Path, program: Option<&[Insn]>) -> Result<(), CgroupError> {
    let fail = |op: &'static str, errno: Errno, hint: String| CgroupError::DeviceFilter {
        op,
        path: dir.to_path_buf(),
        errno,
        hint,
    };
    let dirfd = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| CgroupError::Read {
        path: dir.to_path_buf(),
        errno,
    })?;
    let ids = sys::prog_query(dirfd.as_fd()).map_err(|e| {
        fail(
            "query the attached device programs (BPF_PROG_QUERY)",
            e,
            hint(e),
        )
    })?;
    let mut old = Vec::with_capacity(ids.len());
    for id in ids {
        match sys::prog_fd_by_id(id) {
            Ok(fd) => old.push(fd),
            // Detached meanwhile.
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(fail(
                    "open an attached device program (BPF_PROG_GET_FD_BY_ID)",
                    e,
                    hint(e),
                ));
            }
        }
    }
    if let Some(insns) = program {
        let prog = load(dir, insns)?;
        let mut replaced = false;
        if let [only] = old.as_slice() {
            let flags = sys::BPF_F_ALLOW_MULTI | sys::BPF_F_REPLACE;
            match sys::prog_attach(dirfd.as_fd(), prog.as_fd(), flags, Some(only.as_fd())) {
                Ok(()) => replaced = true,
                // A kernel before 5.6: attach, then detach the old one.
                Err(Errno::EINVAL) => {}
                Err(e) => {
                    return Err(fail(
                        "attach the device program in place of the previous one \
                         (BPF_PROG_ATTACH, BPF_F_REPLACE)",
                        e,
                        hint(e),
                    ));
                }
            }
        }
        if replaced {
            old.clear();
        } else {
            sys::prog_attach(dirfd.as_fd(), prog.as_fd(), sys::BPF_F_ALLOW_MULTI, None).map_err(
                |e| {
                    fail(
                        "attach the device program (BPF_PROG_ATTACH, BPF_F_ALLOW_MULTI)",
                        e,
                        hint(e),
                    )
                },
            )?;
        }
        tracing::debug!(cgroup = %dir.display(), instructions = insns.len(), replaced,
            "device program attached");
    }
    for prog in &old {
        match sys::prog_detach(dirfd.as_fd(), prog.as_fd()) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(fail(
                    "detach the previous device program (BPF_PROG_DETACH)",
                    e,
                    hint(e),
                ));
            }
        }
    }
    Ok(())
}

/// Loads `insns`; on a verifier refusal, loads again with a log to say why.
fn load(dir: &Path, insns: &[Insn]) -> Result<OwnedFd, CgroupError> {
    let fail = |errno: Errno, hint: String| CgroupError::DeviceFilter {
        op: "load the device program (BPF_PROG_LOAD)",
        path: dir.to_path_buf(),
        errno,
        hint,
    };
    match with_memlock_retry(|| sys::prog_load(insns, LICENSE, PROG_NAME, None)) {
        Ok(fd) => Ok(fd),
        Err(e @ (Errno::EINVAL | Errno::EACCES)) => {
            let mut log = vec![0u8; LOG_SIZE];
            let again = sys::prog_load(insns, LICENSE, PROG_NAME, Some(&mut log));
            let log = verifier_log(&log);
            match again {
                Ok(fd) => Ok(fd),
                Err(e2) if log.is_empty() => Err(fail(e2, hint(e))),
                Err(e2) => Err(fail(e2, format!("the verifier said: {log}"))),
            }
        }
        Err(e) => Err(fail(e, hint(e))),
    }
}

/// Kernels before 5.11 charge eBPF programs to `RLIMIT_MEMLOCK` (often 64 KiB) and say
/// `EPERM` when it is exhausted. On `EPERM`, try once more with the limit lifted, then
/// put the limit back (the program's memory is charged at load; later loads and the
/// container, which inherits this process's limits, are not affected).
fn with_memlock_retry<T>(f: impl Fn() -> Result<T, Errno>) -> Result<T, Errno> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let first = f();
    if !matches!(first, Err(Errno::EPERM)) {
        return first;
    }
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_MEMLOCK) else {
        return first;
    };
    let inf = libc::RLIM_INFINITY;
    if soft == inf || setrlimit(Resource::RLIMIT_MEMLOCK, inf, inf).is_err() {
        return first;
    }
    let second = f();
    if let Err(e) = setrlimit(Resource::RLIMIT_MEMLOCK, soft, hard) {
        tracing::warn!(error = %e, "cannot restore RLIMIT_MEMLOCK after loading a device program");
    }
    second
}

/// The verifier's log: the text up to the first NUL, its last lines if long.
fn verifier_log(buf: &[u8]) -> String {
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let text = String::from_utf8_lossy(&buf[..end]);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &lines[lines.len().saturating_sub(8)..];
    tail.join("; ")
}

/// What an errno from `bpf(2)` most likely means for a device program.
fn hint(errno: Errno) -> String {
    const NEEDS: &str = "device rules on cgroup v2 need an eBPF device program \
                         (BPF_PROG_TYPE_CGROUP_DEVICE: Linux 4.15 or later, built with \
                         CONFIG_BPF_SYSCALL and CONFIG_CGROUP_BPF)";
    match errno {
        Errno::ENOSYS => format!("this kernel has no bpf(2) system call; {NEEDS}"),
        Errno::EPERM | Errno::EACCES => format!(
            "bpf(2) was refused: it needs CAP_SYS_ADMIN (or CAP_BPF and CAP_NET_ADMIN) in \
             the initial user namespace, and may be blocked by a seccomp filter or kernel \
             lockdown; {NEEDS}"
        ),
        Errno::EINVAL | Errno::EOPNOTSUPP => {
            format!("the kernel does not support this eBPF program or attach type; {NEEDS}")
        }
        Errno::E2BIG => "the rule list makes a program larger than the kernel accepts".into(),
        _ => NEEDS.into(),
    }
}

/// The ids of the device programs attached to the cgroup2 directory `dir` itself
/// (`BPF_PROG_QUERY`, attach type `BPF_CGROUP_DEVICE`).
pub fn attached(dir: &Path) -> Result<Vec<u32>, CgroupError> {
    let fd = open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| CgroupError::Read {
        path: dir.to_path_buf(),
        errno,
    })?;
    sys::prog_query(fd.as_fd()).map_err(|errno| CgroupError::Read {
        path: dir.to_path_buf(),
        errno,
    })
}
