//! Filesystem primitives that never follow a symlink.
//!
//! Everything is relative to directory file descriptors. Directories are
//! reached with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` or, where
//! openat2 is unavailable or refuses, by walking one component at a time
//! with `O_NOFOLLOW | O_DIRECTORY`; both refuse a symlink anywhere on the
//! way (ELOOP), and callers only pass paths already validated by
//! [`EntryPath`](super::path::EntryPath) (no `..`, not absolute).

use std::ffi::CStr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::NixPath;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Flags for every directory we open: never a symlink, never inherited.
const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Set once openat2 answered ENOSYS (kernel < 5.6, or a seccomp filter).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens the destination. It is the caller's path, so symlinks in it are
/// honoured; nothing below it is ever followed.
pub(super) fn open_root(dest: &Path) -> nix::Result<OwnedFd> {
    openat(
        nix::fcntl::AT_FDCWD,
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Opens the directory `rel` (`a/b`, or empty for `root` itself) beneath
/// `root`. With `create`, missing components are made with mode 0755.
///
/// Errors: ELOOP when a component is a symlink, ENOTDIR when it is another
/// non-directory, ENOENT when it is missing and `create` is false.
pub(super) fn open_dir(root: BorrowedFd<'_>, rel: &[u8], create: bool) -> nix::Result<OwnedFd> {
    open_dir_with(root, rel, create, !NO_OPENAT2.load(Ordering::Relaxed))
}

/// [`open_dir`], trying openat2 first only if `try_openat2` (tests pass
/// false to exercise the component walk).
pub(super) fn open_dir_with(
    root: BorrowedFd<'_>,
    rel: &[u8],
    create: bool,
    try_openat2: bool,
) -> nix::Result<OwnedFd> {
    match open_dir_inner(root, rel, create, try_openat2) {
        // `O_DIRECTORY | O_NOFOLLOW` on a symlink says ENOTDIR, not ELOOP.
        Err(Errno::ENOTDIR) => Err(blocker(root, rel)),
        res => res,
    }
}

/// Says why `rel` cannot be walked: ELOOP if the first non-directory on the
/// way is a symlink, ENOTDIR otherwise. Only for error reporting.
fn blocker(root: BorrowedFd<'_>, rel: &[u8]) -> Errno {
    let mut dir = match openat(root, ".", DIR_FLAGS, Mode::empty()) {
        Ok(dir) => dir,
        Err(e) => return e,
    };
    for comp in rel.split(|&b| b == b'/') {
        match fstatat(&dir, comp, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK => {
                return Errno::ELOOP;
            }
            Ok(st) if is_dir(&st) => {}
            Ok(_) => return Errno::ENOTDIR,
            Err(e) => return e,
        }
        dir = match openat(&dir, comp, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(e) => return e,
        };
    }
    Errno::ENOTDIR
}

fn open_dir_inner(
    root: BorrowedFd<'_>,
    rel: &[u8],
    create: bool,
    try_openat2: bool,
) -> nix::Result<OwnedFd> {
    if rel.is_empty() {
        return openat(root, ".", DIR_FLAGS, Mode::empty());
    }
    if try_openat2 {
        let how = OpenHow::new().flags(DIR_FLAGS).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
        match openat2(root, rel, how) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
            // Definitive answers; anything else (ENOENT with `create`,
            // EAGAIN from a concurrent rename, EPERM from a seccomp filter)
            // is settled by the component walk, which is just as strict.
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR | Errno::EXDEV)) => return Err(e),
            Err(Errno::ENOENT) if !create => return Err(Errno::ENOENT),
            Err(_) => {}
        }
    }
    let mut dir = openat(root, ".", DIR_FLAGS, Mode::empty())?;
    for comp in rel.split(|&b| b == b'/') {
        dir = match openat(&dir, comp, DIR_FLAGS, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ENOENT) if create => {
                match mkdirat(&dir, comp, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                let next = openat(&dir, comp, DIR_FLAGS, Mode::empty())?;
                // Fixed mode for implied parents, whatever the umask.
                nix::sys::stat::fchmod(&next, Mode::from_bits_truncate(0o755))?;
                next
            }
            Err(e) => return Err(e),
        };
    }
    Ok(dir)
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(super) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `st` describes a directory.
pub(super) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` from `dir`, recursively if it is a directory. A missing
/// name is not an error. Symlinks are removed, never followed.
pub(super) fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR) => {}
        Err(e) => return Err(e),
    }
    let child = openat(dir, name, DIR_FLAGS, Mode::empty())?;
    clear_dir(child.as_fd())?;
    match unlinkat(dir, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes everything inside `dir`, leaving `dir` itself. Iterative, so a
/// deep tree costs one descriptor per level but no stack.
pub(super) fn clear_dir(dir: BorrowedFd<'_>) -> nix::Result<()> {
    struct Level {
        fd: OwnedFd,
        /// This directory's name in the level above (unused for the bottom).
        name: Vec<u8>,
        pending: Vec<Vec<u8>>,
    }
    let fd = openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    let pending = list_dir(fd.as_fd())?;
    let mut stack = vec![Level {
        fd,
        name: Vec::new(),
        pending,
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.pending.pop() else {
            let done = stack.pop();
            if let (Some(done), Some(parent)) = (done, stack.last()) {
                match unlinkat(&parent.fd, done.name.as_slice(), UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
            continue;
        };
        match unlinkat(&top.fd, name.as_slice(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) => {
                let fd = openat(&top.fd, name.as_slice(), DIR_FLAGS, Mode::empty())?;
                let pending = list_dir(fd.as_fd())?;
                stack.push(Level { fd, name, pending });
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The names in `dir`, without `.` and `..`.
pub(super) fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    // A fresh open file description, so the stream's offset is its own
    // (a dup would share the caller's).
    let fd = openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    let stream = DirStream::new(fd)?;
    let mut names = Vec::new();
    loop {
        Errno::clear();
        // SAFETY: `stream.0` is a live DIR* owned by `stream`, which is not
        // used from any other thread.
        let ent = unsafe { libc::readdir(stream.0.as_ptr()) };
        if ent.is_null() {
            return match Errno::last_raw() {
                0 => Ok(names),
                raw => Err(Errno::from_raw(raw)),
            };
        }
        // SAFETY: readdir returned a non-null pointer to a dirent that stays
        // valid until the next readdir/closedir on this stream; d_name is a
        // NUL-terminated array inside it, and we copy it out before either.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
}

/// An open `DIR*`, closed on drop.
struct DirStream(NonNull<libc::DIR>);

impl DirStream {
    fn new(fd: OwnedFd) -> nix::Result<Self> {
        let raw = fd.into_raw_fd();
        // SAFETY: `raw` is an open directory descriptor we own; on success
        // fdopendir takes ownership of it.
        let dir = unsafe { libc::fdopendir(raw) };
        match NonNull::new(dir) {
            Some(dir) => Ok(Self(dir)),
            None => {
                let err = Errno::last();
                // SAFETY: fdopendir failed, so `raw` is still ours and open;
                // wrapping it closes it exactly once.
                drop(unsafe { OwnedFd::from_raw_fd(raw) });
                Err(err)
            }
        }
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // SAFETY: the pointer came from a successful fdopendir and is closed
        // only here, once. closedir also closes the descriptor.
        unsafe { libc::closedir(self.0.as_ptr()) };
    }
}

/// `fchown(2)`. nix only offers it with its "user" feature, which this
/// module does not require.
pub(super) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> nix::Result<()> {
    // SAFETY: plain syscall on a descriptor borrowed for the call; no memory
    // is passed.
    Errno::result(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// `fchownat(2)` with `AT_SYMLINK_NOFOLLOW`: changes the owner of `name`
/// itself, even if it is a symlink.
pub(super) fn lchown_at(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> nix::Result<()> {
    let res = name.with_nix_path(|cname| {
        // SAFETY: `cname` is a NUL-terminated string that outlives the call;
        // `dir` is a descriptor borrowed for the call.
        unsafe {
            libc::fchownat(
                dir.as_raw_fd(),
                cname.as_ptr(),
                uid,
                gid,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        }
    })?;
    Errno::result(res).map(drop)
}

/// Whether we run as root, and so can and should restore ownership.
pub(super) fn running_as_root() -> bool {
    // SAFETY: geteuid takes no arguments, cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}
