//! Process creation and identity: `clone3(2)` with namespace flags, a pidfd for the
//! child, and the start time that tells a live init from a recycled pid.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::Pid;

use super::error::{SysError, SysResult};

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

/// The command line a container's init shows in `/proc/<pid>/cmdline` until it execs
/// (and for good under the reaper): nothing of the host's paths, state or data dirs.
pub const INIT_CMDLINE: &[u8] = b"corral\0init\0";

/// Where the kernel keeps this process's argument strings (`arg_start`, `arg_end`:
/// fields 48 and 49 of `/proc/self/stat`), read once per process: a forked child has
/// the same addresses, so the runtime reads them before it clones an init.
pub fn argv_area() -> Option<(usize, usize)> {
    static AREA: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    *AREA.get_or_init(|| {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        // `rest` starts at field 3.
        let mut fields = rest.split(' ').skip(48 - 3);
        let start = fields.next()?.parse().ok()?;
        let end = fields.next()?.parse().ok()?;
        (start < end).then_some((start, end))
    })
}

/// Replaces this process's command line (as `/proc/<pid>/cmdline` shows it) with
/// `cmdline` (NUL-separated words), cut to the length of the original: the argument
/// strings are overwritten in place, and the rest of their area is zeroed.
pub fn set_cmdline(area: Option<(usize, usize)>, cmdline: &[u8]) {
    let Some((start, end)) = area else { return };
    let len = end - start;
    let n = cmdline.len().min(len);
    // SAFETY: [start, end) is the argument string area the kernel laid out on this
    // process's own stack (read from /proc/self/stat of this process or of the parent
    // it was forked from, whose address space this is a copy of); it is mapped and
    // writable. What still points into it (glibc's argv) reads the new strings.
    unsafe {
        let area = std::slice::from_raw_parts_mut(start as *mut u8, len);
        area[..n].copy_from_slice(&cmdline[..n]);
        area[n..].fill(0);
    }
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

    #[test]
    fn a_forked_child_shows_the_new_cmdline() {
        let area = argv_area();
        assert!(area.is_some(), "arg_start and arg_end must be readable");
        // SAFETY: the child only overwrites its own copy of the argument area, reads a
        // proc file and leaves with _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                set_cmdline(area, INIT_CMDLINE);
                let seen = std::fs::read("/proc/self/cmdline").unwrap_or_default();
                let ok = seen.starts_with(INIT_CMDLINE)
                    && seen.iter().skip(INIT_CMDLINE.len()).all(|b| *b == 0);
                // SAFETY: _exit ends the forked child without running the test harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
                let mine = std::fs::read("/proc/self/cmdline").expect("cmdline");
                assert!(
                    !mine.starts_with(INIT_CMDLINE),
                    "the parent's must not change"
                );
            }
        }
    }
}
