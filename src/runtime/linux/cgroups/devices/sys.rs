//! The five `bpf(2)` commands a cgroup device program needs, with the `union bpf_attr`
//! layouts and constants of include/uapi/linux/bpf.h that libc does not define.
//!
//! Each command takes a pointer to its own member of `union bpf_attr` and that
//! member's size: the kernel copies what we pass, treats the rest as zero, and refuses
//! (`E2BIG`) non-zero bytes past the fields it knows. Each attr struct below is that
//! member up to the last field we use, padding spelled out as zeroed fields.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

use super::insn::Insn;

// `enum bpf_cmd`.
/// Verify and load a program; returns its fd.
const BPF_PROG_LOAD: libc::c_int = 5;
/// Attach a program to a target (here: a cgroup directory fd).
const BPF_PROG_ATTACH: libc::c_int = 8;
/// Detach a program from a target.
const BPF_PROG_DETACH: libc::c_int = 9;
/// A new fd for a loaded program, by its id.
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
/// The ids of the programs attached to a target.
const BPF_PROG_QUERY: libc::c_int = 16;

/// `enum bpf_prog_type`: a program run on device access by the cgroup's processes
/// (Linux 4.15).
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `enum bpf_attach_type`: the cgroup device hook.
const BPF_CGROUP_DEVICE: u32 = 6;

/// Attach flag: more than one program may be attached to the cgroup, and programs
/// attached below it run too; all must allow (Linux 4.15).
pub(super) const BPF_F_ALLOW_MULTI: u32 = 1 << 1;
/// Attach flag: atomically replace the program given as `replace_bpf_fd` (Linux 5.6;
/// older kernels answer `EINVAL`).
pub(super) const BPF_F_REPLACE: u32 = 1 << 2;

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    /// `const struct bpf_insn *`.
    insns: u64,
    /// `const char *`, NUL-terminated.
    license: u64,
    /// 0: no verifier log; 1: the log of a failed verification.
    log_level: u32,
    log_size: u32,
    /// `char *` of `log_size` bytes.
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    /// Shown by bpftool; alphanumerics, `_` and `.`, NUL-terminated (Linux 4.15).
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` member, up to `replace_bpf_fd`.
#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// The `BPF_PROG_QUERY` member, up to `prog_cnt` (which the kernel writes back).
#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    /// `__u32 *` of `prog_cnt` entries.
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

/// The `BPF_*_GET_FD_BY_ID` member.
#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

const _: () = {
    assert!(std::mem::size_of::<ProgLoadAttr>() == 72);
    assert!(std::mem::size_of::<AttachAttr>() == 20);
    assert!(std::mem::size_of::<QueryAttr>() == 32);
    assert!(std::mem::size_of::<GetFdByIdAttr>() == 12);
};

/// `bpf(cmd, attr, sizeof *attr)`.
fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> Result<libc::c_long, Errno> {
    // SAFETY: `attr` is a valid, exclusively borrowed `#[repr(C)]` struct of the layout
    // `cmd` expects, passed with its exact size; the kernel reads it (and, for
    // BPF_PROG_QUERY, writes `prog_cnt` back into it) only during the call. Pointers
    // inside it are set by the callers to buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    Errno::result(rc)
}

/// Loads `insns` as a cgroup device program. `log`, if given, receives the
/// verifier's log when verification fails (log level 1).
pub(super) fn prog_load(
    insns: &[Insn],
    license: &CStr,
    name: &str,
    log: Option<&mut [u8]>,
) -> Result<OwnedFd, Errno> {
    let mut prog_name = [0u8; 16];
    let n = name.len().min(prog_name.len() - 1);
    prog_name[..n].copy_from_slice(&name.as_bytes()[..n]);
    let (log_level, log_size, log_buf) = match log {
        Some(buf) if !buf.is_empty() => {
            buf[0] = 0;
            (1, buf.len() as u32, buf.as_mut_ptr() as u64)
        }
        _ => (0, 0, 0),
    };
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).map_err(|_| Errno::E2BIG)?,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        prog_name,
        expected_attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    // SAFETY: on success BPF_PROG_LOAD returns a new file descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches `prog` to the cgroup `target` with `flags`; with `replace`, in place of
/// that program (`BPF_F_REPLACE` must be in `flags`).
pub(super) fn prog_attach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    flags: u32,
    replace: Option<BorrowedFd<'_>>,
) -> Result<(), Errno> {
    let mut attr = AttachAttr {
        target_fd: target.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        replace_bpf_fd: replace.map_or(0, |r| r.as_raw_fd() as u32),
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// Detaches `prog` from the cgroup `target`.
pub(super) fn prog_detach(target: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut attr = AttachAttr {
        target_fd: target.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}

/// The ids of the device programs attached to the cgroup `target` itself (not those
/// inherited from its parents).
pub(super) fn prog_query(target: BorrowedFd<'_>) -> Result<Vec<u32>, Errno> {
    let mut ids: Vec<u32> = Vec::new();
    // The count can change between two calls: the kernel says ENOSPC when the buffer
    // is too small, and writes the count it needs.
    for _ in 0..10 {
        let mut attr = QueryAttr {
            target_fd: target.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            prog_ids: if ids.is_empty() {
                0
            } else {
                ids.as_mut_ptr() as u64
            },
            prog_cnt: ids.len() as u32,
            ..Default::default()
        };
        match bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) if attr.prog_cnt as usize <= ids.len() => {
                ids.truncate(attr.prog_cnt as usize);
                return Ok(ids);
            }
            // A first call without a buffer (only counts), or a count that grew.
            Ok(_) | Err(Errno::ENOSPC) => ids = vec![0; attr.prog_cnt as usize],
            Err(e) => return Err(e),
        }
    }
    Err(Errno::EAGAIN)
}

/// A new fd for the loaded program `id` (to detach it, or to replace it).
pub(super) fn prog_fd_by_id(id: u32) -> Result<OwnedFd, Errno> {
    let mut attr = GetFdByIdAttr {
        prog_id: id,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: on success the command returns a new file descriptor that nothing else
    // owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
