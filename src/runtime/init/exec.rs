//! Finding the container's program (with the container's own `PATH`) and executing it.

use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::unistd::{AccessFlags, access};

use crate::runtime::linux::error::{SysError, SysResult};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Resolves `arg0` as execvp(3) would, but with the `PATH` of the container's `env`
/// rather than the runtime's. Done before `start`, so that a missing program fails
/// `create` with a clear error, as with runc.
pub fn lookup(arg0: &CStr, env: &[CString]) -> SysResult<CString> {
    let name = arg0.to_bytes();
    if name.contains(&b'/') {
        check(Path::new(std::ffi::OsStr::from_bytes(name)))?;
        return Ok(arg0.to_owned());
    }
    let path = env
        .iter()
        .find_map(|e| e.to_bytes().strip_prefix(b"PATH="))
        .unwrap_or(DEFAULT_PATH.as_bytes());
    let mut last = nix::Error::ENOENT;
    for dir in path.split(|b| *b == b':') {
        let dir = if dir.is_empty() { &b"."[..] } else { dir };
        let candidate =
            Path::new(std::ffi::OsStr::from_bytes(dir)).join(std::ffi::OsStr::from_bytes(name));
        match check(&candidate) {
            Ok(()) => {
                return CString::new(candidate.as_os_str().as_bytes())
                    .map_err(|_| SysError::invalid("program path contains NUL"));
            }
            Err(e) if e.errno() == nix::Error::EACCES => last = nix::Error::EACCES,
            Err(_) => {}
        }
    }
    Err(SysError::new(
        format!(
            "exec: {:?}: executable file not found in $PATH",
            String::from_utf8_lossy(name)
        ),
        last,
    ))
}

fn check(p: &Path) -> SysResult<()> {
    let meta = std::fs::metadata(p).map_err(|e| {
        SysError::new(
            format!("exec: {}", p.display()),
            nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT)),
        )
    })?;
    if meta.is_dir() {
        return Err(SysError::new(
            format!("exec: {}: is a directory", p.display()),
            nix::Error::EACCES,
        ));
    }
    access(p, AccessFlags::X_OK).map_err(|e| SysError::new(format!("exec: {}", p.display()), e))
}

/// execve(2); returns only on failure.
pub fn execve(program: &CStr, args: &[CString], env: &[CString]) -> nix::Error {
    match nix::unistd::execve(program, args, env) {
        Err(e) => e,
        Ok(never) => match never {},
    }
}

/// Starts `program` as a child that shares this process's memory until it execs
/// (`CLONE_VM | CLONE_VFORK`, what posix_spawn(3) does): this process is suspended
/// meanwhile, and the child neither copies its page tables nor faults in its pages,
/// which a fork would. The child only closes `close_fd` and calls execve(2) with
/// pointer arrays built here; it touches no lock, allocator or signal handler of ours
/// (the caller has reset every disposition to the default). Returns the child's pid,
/// or why it did not start (a failed execve's child is reaped).
pub fn spawn(
    program: &CStr,
    args: &[CString],
    env: &[CString],
    close_fd: i32,
) -> Result<nix::unistd::Pid, SpawnError> {
    use std::sync::atomic::{AtomicI32, Ordering};

    struct Job {
        program: *const libc::c_char,
        argv: *const *const libc::c_char,
        envp: *const *const libc::c_char,
        close_fd: i32,
        errno: AtomicI32,
    }

    extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the parent's `Job`, alive and unaliased while the parent is
        // suspended (CLONE_VFORK); the calls below are plain system calls.
        unsafe {
            let job = &*(arg as *const Job);
            libc::close(job.close_fd);
            libc::execve(job.program, job.argv, job.envp);
            job.errno
                .store(*libc::__errno_location(), Ordering::Relaxed);
        }
        127
    }

    let argv: Vec<*const libc::c_char> = args
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let job = Job {
        program: program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        close_fd,
        errno: AtomicI32::new(0),
    };
    // The child's stack: it runs `child` and the execve wrapper only.
    const STACK: usize = 64 * 1024;
    let mut stack = vec![0u128; STACK / 16];
    // SAFETY: the stack grows down from the end of `stack` (16-byte aligned: u128
    // elements); `job`, `argv` and `envp` outlive the child's use of them, since
    // CLONE_VFORK returns only once the child has exec'd or exited.
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(stack.len()).cast::<libc::c_void>();
        libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&job as *const Job).cast_mut().cast(),
        )
    };
    if pid < 0 {
        return Err(SpawnError::Clone(nix::Error::last()));
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    match job.errno.load(Ordering::Relaxed) {
        0 => Ok(pid),
        errno => {
            let _ = nix::sys::wait::waitpid(pid, None);
            Err(SpawnError::Exec(nix::Error::from_raw(errno)))
        }
    }
}

/// Why [`spawn`] started no program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpawnError {
    /// No child: clone(2) failed.
    Clone(nix::Error),
    /// The child's execve(2) failed.
    Exec(nix::Error),
}
