//! The last checks before a container's process runs: its cwd and its program must be
//! inside the container's root (runc's CVE-2024-21626 and CVE-2019-5736 classes).
//!
//! The runtime holds no directory fd that leads out of the root when it changes to the
//! cwd (the init reports a late failure through a file, not the state directory), so
//! `/proc/self/fd/N` has nowhere outside to go. These checks are the second layer: they
//! catch whatever path still leads out, a magic link of another process (`/proc/1/root`
//! of a container that shares the host's pid namespace), a preserved fd, a kernel that
//! resolves differently than assumed.

use std::ffi::CStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::runtime::linux::error::{Context, SysError, SysResult};

/// The identity (device and inode) of the runtime's own binary, taken while the host's
/// `/proc` is still the one mounted: the container's program must never be it (it would
/// run the host's binary in the container, where `/proc/<pid>/exe` leads back to the
/// host file, CVE-2019-5736).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeExe {
    dev: u64,
    ino: u64,
}

impl RuntimeExe {
    /// The identity of `/proc/self/exe`; `None` where it cannot be read (no `/proc`),
    /// in which case no path leads to it through `/proc` either.
    pub fn current() -> Option<Self> {
        let st = nix::sys::stat::stat("/proc/self/exe").ok()?;
        Some(RuntimeExe {
            dev: st.st_dev,
            ino: st.st_ino,
        })
    }
}

/// Changes to `cwd`, then checks that it is inside the root: the kernel's `getcwd`
/// answers a path that is not reachable from the root with `(unreachable)...` (and glibc
/// turns that into ENOENT); a cwd outside fails the start with a clear error.
pub fn chdir_inside(cwd: &Path) -> SysResult<()> {
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to cwd {}", cwd.display()))?;
    verify_cwd(cwd)
}

/// Fails unless the current directory is reachable from the root.
pub fn verify_cwd(cwd: &Path) -> SysResult<()> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: the raw getcwd system call writes at most `buf.len()` bytes into `buf`
    // (glibc's wrapper is bypassed: it hides the kernel's "(unreachable)" prefix behind
    // an errno only on some versions).
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    let outside = || {
        SysError::new(
            format!(
                "cwd {}: resolves outside the container's root",
                cwd.display()
            ),
            nix::Error::EPERM,
        )
    };
    match nix::errno::Errno::result(r) {
        // A deleted directory or one that no path from the root reaches.
        Err(nix::Error::ENOENT) => Err(outside()),
        Err(e) => Err(SysError::new(
            format!("getcwd after chdir to {}", cwd.display()),
            e,
        )),
        Ok(_) if buf[0] != b'/' => Err(outside()),
        Ok(_) => Ok(()),
    }
}

/// Looks `arg0` up with the container's `PATH` ([`super::exec::lookup`]) and checks that
/// the program found is not the runtime's own binary ([`check_program`]).
pub fn find_program(
    arg0: &CStr,
    env: &[std::ffi::CString],
    exe: Option<RuntimeExe>,
) -> SysResult<std::ffi::CString> {
    let program = super::exec::lookup(arg0, env)?;
    check_program(&program, exe)?;
    Ok(program)
}

/// Fails if `program` (as the container's process would exec it) is the runtime's own
/// binary, whatever path leads there (`/proc/self/exe`, `/proc/thread-self/exe`, a
/// symlink to either).
pub fn check_program(program: &CStr, exe: Option<RuntimeExe>) -> SysResult<()> {
    let Some(exe) = exe else { return Ok(()) };
    let path = Path::new(std::ffi::OsStr::from_bytes(program.to_bytes()));
    match nix::sys::stat::stat(path) {
        Ok(st) if st.st_dev == exe.dev && st.st_ino == exe.ino => Err(SysError::new(
            format!(
                "exec {}: the program is the runtime's own binary, outside the container's root",
                path.display()
            ),
            nix::Error::EPERM,
        )),
        // Anything else is for execve(2) to judge.
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_exe_is_refused_by_every_path() {
        let exe = RuntimeExe::current();
        assert!(exe.is_some(), "/proc/self/exe must be readable in tests");
        for p in [c"/proc/self/exe", c"/proc/thread-self/exe"] {
            let e = check_program(p, exe).expect_err("the runtime's binary must be refused");
            assert_eq!(e.errno(), nix::Error::EPERM);
            assert!(e.to_string().contains("runtime's own binary"), "{e}");
        }
        check_program(c"/bin/sh", exe).expect("another program passes");
        check_program(c"/does/not/exist", exe).expect("a missing program is execve's to report");
    }

    #[test]
    fn cwd_inside_the_root_passes() {
        // In a forked child: chdir changes the whole test process's cwd otherwise.
        // SAFETY: the child only calls async-signal-safe system calls and _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let ok = chdir_inside(Path::new("/tmp")).is_ok();
                // SAFETY: _exit ends the forked child without running the test harness.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn cwd_outside_the_root_is_refused() {
        // A child chroots into a temp dir holding an fd of the directory above it, then
        // changes to that fd's /proc/self/fd link: the kernel follows it out of the root.
        let outer = tempfile::tempdir().expect("tempdir");
        let inner = outer.path().join("root");
        std::fs::create_dir(&inner).expect("mkdir");
        // The directory above the root, held open across the chroot as a leaked fd would.
        let up = nix::fcntl::open(
            outer.path(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open the outer directory");
        // SAFETY: the child only makes system calls (glibc keeps malloc usable after
        // fork) and leaves with _exit.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let code = (|| -> Option<i32> {
                    nix::unistd::chroot(&inner).ok()?;
                    nix::unistd::chdir("/").ok()?;
                    verify_cwd(Path::new("/")).ok()?;
                    nix::unistd::fchdir(&up).ok()?;
                    let e = verify_cwd(Path::new("/proc/self/fd/N")).err()?;
                    let named = e.to_string().contains("outside the container's root");
                    Some(if named { 0 } else { 2 })
                })()
                .unwrap_or(3);
                // SAFETY: _exit ends the forked child without running the test harness.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
