//! The runtime's own binary out of every container's reach (runc's CVE-2019-5736).
//!
//! A container's init is a copy of the runtime process until it execs, and the kernel
//! resolves `/proc/self/exe` of the exec'ing process, in the program path, a `#!` line
//! or an ELF interpreter, to the runtime's binary. A container process that gets hold of
//! that file (it runs as the program, or another process opens `/proc/<pid>/exe` once it
//! does) could write it, as root, and replace the host's runtime. So the commands that
//! make container processes (`create`, `run`, `exec`, `serve` and its launcher) run from
//! a sealed copy of the binary in memory: every path to "the runtime's binary" from a
//! container then leads to a memfd that nothing can write (`F_SEAL_WRITE`), and the host
//! file is never mapped by a process a container can see.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use super::error::{Context, SysError, SysResult};

/// The seals of the copy: no writes, no size change, no more seal changes.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// `memfd_create`'s `MFD_EXEC` (Linux 6.3): an executable memfd even where
/// `vm.memfd_noexec` would make new memfds non-executable.
const MFD_EXEC: libc::c_uint = 0x10;

/// Whether this process already runs from a sealed copy.
pub fn running_sealed() -> bool {
    let Ok(exe) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fcntl(F_GET_SEALS) on our own fd; EINVAL for a file that is no memfd.
    let seals = unsafe { libc::fcntl(exe.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & SEALS == SEALS
}

/// A sealed in-memory copy of this process's binary.
pub fn sealed_copy() -> SysResult<OwnedFd> {
    let name = c"corral";
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: memfd_create with a NUL-terminated name and flags; returns a new fd or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && nix::errno::Errno::last() == nix::errno::Errno::EINVAL {
        // A kernel before 6.3, which does not know MFD_EXEC (its memfds are executable).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(SysError::new("memfd_create corral", nix::Error::last()));
    }
    // SAFETY: memfd_create returned a new fd that nothing else owns.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut src = std::fs::File::open("/proc/self/exe").ctx(|| "open /proc/self/exe".into())?;
    let mut dst = std::fs::File::from(memfd);
    // copy_file_range or sendfile: the bytes stay in the kernel.
    std::io::copy(&mut src, &mut dst).ctx(|| "copy /proc/self/exe into a memfd".into())?;
    // SAFETY: fcntl(F_ADD_SEALS) on our own memfd with an int argument.
    let r = unsafe { libc::fcntl(dst.as_raw_fd(), libc::F_ADD_SEALS, SEALS) };
    nix::errno::Errno::result(r).ctx(|| "seal the memfd copy of the runtime".into())?;
    Ok(OwnedFd::from(dst))
}

/// Re-executes this process (same arguments and environment) from a sealed copy of its
/// binary, unless it runs from one already. Returns only on failure.
pub fn reexec_sealed() -> SysResult<()> {
    if running_sealed() {
        // The kernel named the process after the fd it was executed from ("3"): give it
        // back the name of its binary, as ps and the tests know it.
        if let Some(name) = std::env::args_os().next().and_then(|a| {
            let base = std::path::Path::new(&a).file_name()?.as_bytes().to_vec();
            CString::new(base).ok()
        }) {
            let _ = nix::sys::prctl::set_name(&name);
        }
        return Ok(());
    }
    let copy = sealed_copy()?;
    let cstr = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).ok();
    let args: Vec<CString> = std::env::args_os().filter_map(|a| cstr(&a)).collect();
    let env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    // The fd is close-on-exec: the kernel opens the binary before it closes such fds,
    // and the new program holds no fd of it.
    match nix::unistd::fexecve(&copy, &args, &env) {
        Err(e) => Err(SysError::new(
            "re-exec from the sealed copy of the runtime",
            e,
        )),
        Ok(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_is_the_binary_and_cannot_be_written() {
        let copy = sealed_copy().expect("sealed copy");
        let mine = std::fs::read("/proc/self/exe").expect("read /proc/self/exe");
        let path = format!("/proc/self/fd/{}", copy.as_raw_fd());
        assert_eq!(std::fs::read(&path).expect("read the copy"), mine);
        // Reopened for writing, as a container would through /proc/<pid>/exe: the
        // open may succeed, no write does.
        use std::io::Write;
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(&path) {
            let e = w
                .write_all(b"\x7fELF overwritten")
                .expect_err("a write got through");
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        }
        assert_eq!(std::fs::read(&path).expect("read the copy"), mine);
        assert!(!running_sealed(), "the test binary runs from its file");
    }
}
