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
