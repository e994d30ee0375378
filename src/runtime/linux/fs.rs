//! Path resolution confined to a root directory.
//!
//! Every path that comes from `config.json` or from the image is resolved with
//! `openat2(RESOLVE_IN_ROOT)`, so that a symlink in the image (`/proc -> /`, `etc ->
//! ../../../host`) can never send a mount or a write outside the container's root. The
//! resulting fd is then used as `/proc/self/fd/N` for `mount(2)`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, fstat, mkdirat};

use super::error::{SysError, SysResult};

const RESOLVE: ResolveFlag = ResolveFlag::RESOLVE_IN_ROOT.union(ResolveFlag::RESOLVE_NO_MAGICLINKS);

/// Opens `path` (absolute or relative; either way taken inside `root`) without ever
/// leaving `root`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(RESOLVE);
    loop {
        match openat2(root, relative(path).as_path(), how) {
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Whether `path` inside `root` is an ordinary directory: reached without following any
/// symlink on the way (`RESOLVE_NO_SYMLINKS`). `Ok(false)` when it is missing; `ELOOP`
/// (a symlink on the way) and `ENOTDIR` (not a directory) are errors for the caller to
/// name.
pub fn is_plain_dir_in_root(root: BorrowedFd<'_>, path: &Path) -> nix::Result<bool> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(RESOLVE | ResolveFlag::RESOLVE_NO_SYMLINKS);
    loop {
        match openat2(root, relative(path).as_path(), how) {
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// What to create at the end of a path when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

/// Resolves `path` inside `root`, creating the missing directories on the way and, at the
/// end, a directory or an empty file. Returns an `O_PATH` fd of the result, suitable as a
/// mount target through [`proc_fd_path`]. `shown` names the path in errors.
///
/// Symlinks are resolved by hand, one component at a time from directory fds opened with
/// `O_NOFOLLOW`, with absolute targets and `..` clamped at `root`: a dangling link in the
/// image (`/mnt/x -> /etc/host-dir`) leads to a directory created inside the root, never
/// outside it.
pub fn mkdir_all_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    last: Kind,
    shown: &Path,
) -> SysResult<OwnedFd> {
    let err = |what: &str, e: nix::Error| SysError::new(format!("{what} {}", shown.display()), e);
    match open_in_root(root, path, OFlag::O_PATH) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(err("resolve", e)),
    }
    let mut todo: VecDeque<OsString> = relative(path).iter().map(OsStr::to_os_string).collect();
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    let nofollow = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    while let Some(name) = todo.pop_front() {
        if name == "." {
            continue;
        }
        if name == ".." {
            stack.pop();
            continue;
        }
        let is_last = todo.is_empty();
        let cur = stack.last().map(|f| f.as_fd()).unwrap_or(root);
        match openat(cur, name.as_os_str(), nofollow, Mode::empty()) {
            Ok(fd) => {
                let st = fstat(&fd).map_err(|e| err("stat", e))?;
                match st.st_mode & libc::S_IFMT {
                    libc::S_IFLNK => {
                        links += 1;
                        if links > 40 {
                            return Err(err("resolve", Errno::ELOOP));
                        }
                        let target =
                            readlinkat(cur, name.as_os_str()).map_err(|e| err("readlink", e))?;
                        let target = Path::new(&target);
                        if target.is_absolute() {
                            stack.clear();
                        }
                        for c in relative(target).iter().rev() {
                            todo.push_front(c.to_os_string());
                        }
                    }
                    libc::S_IFDIR => stack.push(fd),
                    _ if is_last => stack.push(fd),
                    _ => return Err(err("resolve", Errno::ENOTDIR)),
                }
            }
            Err(Errno::ENOENT) => {
                if is_last && last == Kind::File {
                    openat(
                        cur,
                        name.as_os_str(),
                        OFlag::O_CREAT
                            | OFlag::O_EXCL
                            | OFlag::O_WRONLY
                            | OFlag::O_NOFOLLOW
                            | OFlag::O_CLOEXEC,
                        Mode::from_bits_truncate(0o644),
                    )
                    .map_err(|e| err("create file", e))?;
                } else {
                    match mkdirat(cur, name.as_os_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(err("create directory", e)),
                    }
                }
                let fd = openat(cur, name.as_os_str(), nofollow, Mode::empty())
                    .map_err(|e| err("open", e))?;
                stack.push(fd);
            }
            Err(e) => return Err(err("resolve", e)),
        }
    }
    match stack.pop() {
        Some(fd) => Ok(fd),
        None => root.try_clone_to_owned().map_err(|e| {
            SysError::new(
                format!("dup root fd for {}", shown.display()),
                Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
            )
        }),
    }
}

/// `path` with its root and prefix components removed, and `.` dropped: the form that
/// `openat2(RESOLVE_IN_ROOT)` takes. `..` is kept: the kernel clamps it at the root.
pub fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// `/proc/self/fd/N`: the path by which `mount(2)` and friends reach what `fd` refers to.
pub fn proc_fd_path(fd: &impl AsFd) -> String {
    format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::symlink;

    #[test]
    fn relative_strips_root_and_dots() {
        assert_eq!(relative(Path::new("/a/./b")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("/")), PathBuf::from("."));
        assert_eq!(relative(Path::new("../x")), PathBuf::from("../x"));
    }

    #[test]
    fn symlinks_cannot_escape_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // An absolute symlink and a relative one that climbs: both must stay inside.
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../../outside", root.join("rel")).unwrap();
        let rootfd = File::open(&root).unwrap();
        for link in ["abs/x/y", "rel/x/y"] {
            mkdir_all_in_root(rootfd.as_fd(), Path::new(link), Kind::Dir, Path::new(link)).unwrap();
        }
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        // The directories were created inside the root, where the links resolve to.
        let inside = root.join(outside.strip_prefix("/").unwrap()).join("x/y");
        assert!(inside.is_dir(), "{} missing", inside.display());
        assert!(root.join("outside/x/y").is_dir());
    }

    #[test]
    fn creates_a_file_at_the_end() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfd = File::open(tmp.path()).unwrap();
        mkdir_all_in_root(
            rootfd.as_fd(),
            Path::new("/dev/null"),
            Kind::File,
            Path::new("x"),
        )
        .unwrap();
        assert!(tmp.path().join("dev/null").is_file());
    }
}
