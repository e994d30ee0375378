//! Process creation and identity: `clone3(2)` with namespace flags, a pidfd for the
//! child, and the start time that tells a live init from a recycled pid.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::error::{Context, SysError, SysResult};

/// `struct clone_args` of `<linux/sched.h>` (version 2, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Who we are after [`clone_process`].
pub enum Forked {
    Parent { pid: Pid, pidfd: OwnedFd },
    Child,
}

/// Forks the calling process into new namespaces (`flags`: `CLONE_NEW*`), fork-style:
/// the child continues on a copy of the caller's stack. The parent gets a pidfd.
///
/// The caller must be single-threaded: the child runs arbitrary (allocating) code.
pub fn clone_process(flags: CloneFlags) -> SysResult<Forked> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags.bits() as u64 | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 with a null stack behaves as fork(2): the child gets a copy of the
    // address space. `args` lives across the call and has the size we pass. The caller
    // guarantees a single-threaded process, so no lock can be held by a vanished thread.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        -1 => Err(SysError::new(
            format!("clone3 with flags {flags:?}"),
            Errno::last(),
        )),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent {
            pid: Pid::from_raw(pid as i32),
            // SAFETY: CLONE_PIDFD stored a fresh fd owned by nobody else in `pidfd`.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}

/// Plain fork for helpers (hooks), via clone3 without namespaces.
pub fn fork_process() -> SysResult<Forked> {
    clone_process(CloneFlags::empty())
}

/// The start time of `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`), or
/// `None` when the process does not exist or is a zombie (it has exited).
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // `rest` starts at field 3; start time is field 22.
    fields.nth(22 - 4)?.parse().ok()
}

/// Opens a pidfd for `pid`.
pub fn pidfd_open(pid: i32) -> SysResult<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(SysError::new(format!("pidfd_open {pid}"), Errno::last()));
    }
    // SAFETY: the syscall returned a new fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `sig` through a pidfd: immune to pid reuse.
pub fn pidfd_send_signal(pidfd: &OwnedFd, sig: i32) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: plain syscall on a valid fd with a null siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// The path of the currently running executable.
pub fn current_exe() -> SysResult<PathBuf> {
    std::fs::read_link("/proc/self/exe").ctx(|| "readlink /proc/self/exe".into())
}

/// Exits the current (forked) process immediately, without running destructors or
/// atexit handlers that belong to the parent.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_known_and_stable() {
        let me = std::process::id() as i32;
        let a = start_time(me).expect("start time of self");
        assert_eq!(Some(a), start_time(me));
        assert!(start_time(i32::MAX).is_none());
    }
}
