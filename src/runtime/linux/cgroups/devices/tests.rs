//! The device program in the real kernel: a temporary cgroup in the host's cgroup2
//! hierarchy (`/sys/fs/cgroup` on a v2 host, the unified mount on a hybrid one), a
//! program attached with [`apply`], and a forked child that joins the cgroup and tries
//! to open or make device nodes. The child only makes raw system calls between fork
//! and `_exit`, and reports the errno as its exit status.
//!
//! On a hybrid host the test process stays in the root of every v1 hierarchy, whose
//! devices controller allows everything: what is refused here, the program refused.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, fork};

use super::super::layout::{CGROUP_ROOT, HYBRID_UNIFIED};
use super::super::tests::is_root;
use super::super::{CgroupMode, detect_mode};
use super::filter::tests::rules;
use super::insn::{Insn, Reg};
use super::*;

/// The cgroup2 mount, or `None` (after saying why) when these tests cannot run: not
/// root. A host without cgroup2 fails: the program cannot be tested there.
fn cgroup2_root() -> Option<&'static Path> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    match detect_mode() {
        CgroupMode::V2 => Some(Path::new(CGROUP_ROOT)),
        CgroupMode::Hybrid => Some(Path::new(HYBRID_UNIFIED)),
        CgroupMode::V1 => panic!("no cgroup2 mount: the eBPF device program cannot be tested"),
    }
}

/// A cgroup2 directory for one test, removed on drop.
struct TempCgroup(PathBuf);

impl TempCgroup {
    fn new(root: &Path) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("corral-test-devices-{}-{n}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self(dir)
    }

    fn apply(&self, list: &[&str]) {
        apply(&self.0, &rules(list)).unwrap_or_else(|e| panic!("{list:?}: {e}"));
    }

    fn attached(&self) -> Vec<u32> {
        attached(&self.0).unwrap()
    }
}

impl Drop for TempCgroup {
    fn drop(&mut self) {
        // Probes have exited and been reaped; the directory is empty.
        if let Err(e) = fs::remove_dir(&self.0) {
            eprintln!("rmdir {}: {e}", self.0.display());
        }
    }
}

/// What a child tries once in the cgroup.
enum Probe {
    Open(&'static str, libc::c_int),
    /// `mknod` a character device `major:minor` at this path (then removes it).
    Mknod(PathBuf, u32, u32),
}

/// Forks a child that moves itself into `cg` and runs `probe`: `Ok` if the call
/// succeeded, else its errno.
fn probe(cg: &TempCgroup, probe: &Probe) -> Result<(), Errno> {
    let procs = open(
        &cg.0.join("cgroup.procs"),
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    let (path, flags, dev) = match probe {
        Probe::Open(p, flags) => (CString::new(*p).unwrap(), *flags, None),
        Probe::Mknod(p, major, minor) => (
            CString::new(p.as_os_str().as_encoded_bytes()).unwrap(),
            0,
            Some(libc::makedev(*major, *minor)),
        ),
    };
    // SAFETY: the child makes only async-signal-safe system calls (write, open, close,
    // mknod, unlink, _exit) on memory prepared before the fork, then exits.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: raw system calls on valid fds and NUL-terminated paths.
            unsafe {
                let errno = || *libc::__errno_location();
                if libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                    libc::_exit(255);
                }
                let rc = match dev {
                    None => {
                        let fd = libc::open(path.as_ptr(), flags | libc::O_CLOEXEC);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                        fd
                    }
                    Some(dev) => {
                        let rc = libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o600, dev);
                        if rc == 0 {
                            libc::unlink(path.as_ptr());
                        }
                        rc
                    }
                };
                libc::_exit(if rc < 0 { errno() } else { 0 })
            }
        }
        ForkResult::Parent { child } => match waitpid(child, None).unwrap() {
            WaitStatus::Exited(_, 0) => Ok(()),
            WaitStatus::Exited(_, 255) => panic!("the probe could not join {}", cg.0.display()),
            WaitStatus::Exited(_, e) => Err(Errno::from_raw(e)),
            other => panic!("probe: {other:?}"),
        },
    }
}

const NULL_W: Probe = Probe::Open("/dev/null", libc::O_WRONLY);
const NULL_R: Probe = Probe::Open("/dev/null", libc::O_RDONLY);
const NULL_RW: Probe = Probe::Open("/dev/null", libc::O_RDWR);
const ZERO_R: Probe = Probe::Open("/dev/zero", libc::O_RDONLY);
const ZERO_W: Probe = Probe::Open("/dev/zero", libc::O_WRONLY);
const FULL_R: Probe = Probe::Open("/dev/full", libc::O_RDONLY);

#[track_caller]
fn expect(cg: &TempCgroup, cases: &[(&Probe, Result<(), Errno>)]) {
    for (i, (p, want)) in cases.iter().enumerate() {
        let what = match p {
            Probe::Open(path, flags) => format!("open {path} flags {flags:#o}"),
            Probe::Mknod(path, ma, mi) => format!("mknod c {ma}:{mi} {}", path.display()),
        };
        assert_eq!(probe(cg, p), *want, "case {i}: {what}");
    }
}

#[test]
fn an_allow_list_is_enforced() {
    let Some(root) = cgroup2_root() else { return };
    let cg = TempCgroup::new(root);
    let tmp = tempfile::tempdir().unwrap();
    // Sanity: without a program, everything opens.
    expect(&cg, &[(&NULL_W, Ok(())), (&FULL_R, Ok(()))]);
    cg.apply(&["deny a", "allow c 1:3 rw", "allow c 1:5 r"]);
    assert_eq!(cg.attached().len(), 1);
    let mknod_null = Probe::Mknod(tmp.path().join("null"), 1, 3);
    expect(
        &cg,
        &[
            (&NULL_W, Ok(())),
            (&NULL_R, Ok(())),
            (&NULL_RW, Ok(())),
            (&ZERO_R, Ok(())),
            (&ZERO_W, Err(Errno::EPERM)),
            (&FULL_R, Err(Errno::EPERM)),
            (&mknod_null, Err(Errno::EPERM)),
        ],
    );
}

#[test]
fn a_deny_list_refuses_any_overlap() {
    let Some(root) = cgroup2_root() else { return };
    let cg = TempCgroup::new(root);
    let tmp = tempfile::tempdir().unwrap();
    cg.apply(&["allow a", "deny c 1:3 w"]);
    expect(
        &cg,
        &[
            (&NULL_R, Ok(())),
            (&NULL_W, Err(Errno::EPERM)),
            // Read and write at once: the denied write refuses it.
            (&NULL_RW, Err(Errno::EPERM)),
            (&ZERO_W, Ok(())),
            (&Probe::Mknod(tmp.path().join("n"), 1, 3), Ok(())),
        ],
    );
}

#[test]
fn update_replaces_the_program_and_allow_all_removes_it() {
    let Some(root) = cgroup2_root() else { return };
    let cg = TempCgroup::new(root);
    cg.apply(&["deny a", "allow c 1:3 rwm"]);
    let first = cg.attached();
    assert_eq!(first.len(), 1);
    expect(&cg, &[(&NULL_W, Ok(())), (&ZERO_R, Err(Errno::EPERM))]);

    cg.apply(&["deny a", "allow c 1:3 r", "allow c 1:5 r"]);
    let second = cg.attached();
    assert_eq!(second.len(), 1, "the old program is still attached");
    assert_ne!(first, second);
    expect(
        &cg,
        &[
            (&NULL_W, Err(Errno::EPERM)),
            (&NULL_R, Ok(())),
            (&ZERO_R, Ok(())),
        ],
    );

    // An empty list is no request: the program stays.
    apply(&cg.0, &[]).unwrap();
    assert_eq!(cg.attached(), second);

    cg.apply(&["allow a"]);
    assert!(cg.attached().is_empty());
    expect(&cg, &[(&NULL_W, Ok(())), (&FULL_R, Ok(()))]);
    // Allow-all again: nothing to detach, nothing attached.
    cg.apply(&["deny c 1:3", "allow a"]);
    assert!(cg.attached().is_empty());
}

#[test]
fn programs_attached_by_others_are_replaced_too() {
    let Some(root) = cgroup2_root() else { return };
    let cg = TempCgroup::new(root);
    let dirfd: OwnedFd = open(&cg.0, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let deny_all = [Insn::mov64_imm(Reg::R0, 0), Insn::exit()];
    for _ in 0..2 {
        let prog = sys::prog_load(&deny_all, LICENSE, "corral_test", None).unwrap();
        sys::prog_attach(dirfd.as_fd(), prog.as_fd(), sys::BPF_F_ALLOW_MULTI, None).unwrap();
    }
    assert_eq!(cg.attached().len(), 2);
    expect(&cg, &[(&NULL_R, Err(Errno::EPERM))]);
    cg.apply(&["deny a", "allow c 1:3 r"]);
    assert_eq!(cg.attached().len(), 1);
    expect(&cg, &[(&NULL_R, Ok(())), (&NULL_W, Err(Errno::EPERM))]);
}

#[test]
fn numbers_beyond_i32_load_and_match_nothing_real() {
    let Some(root) = cgroup2_root() else { return };
    let cg = TempCgroup::new(root);
    cg.apply(&[
        "deny a",
        "allow c 4294967295:4294967295 rw",
        "allow b 2147483648:* r",
        "allow c 1:3 r",
    ]);
    expect(&cg, &[(&NULL_R, Ok(())), (&ZERO_R, Err(Errno::EPERM))]);
}

#[test]
fn a_verifier_refusal_says_why() {
    let Some(root) = cgroup2_root() else { return };
    // Returns R0 without setting it.
    let e = load(root, &[Insn::exit()]).unwrap_err().to_string();
    assert!(
        e.starts_with("linux.resources.devices: load the device program (BPF_PROG_LOAD)"),
        "{e}"
    );
    assert!(e.contains("the verifier said:") && e.contains("R0"), "{e}");
}

/// `BPF_F_REPLACE` (Linux 5.6): the new program takes the old one's place in one step.
/// On older kernels `apply` falls back to attach-then-detach, which the other tests
/// cover; here the kernel must say EINVAL.
#[test]
fn replace_swaps_in_place() {
    let Some(root) = cgroup2_root() else { return };
    let cg = TempCgroup::new(root);
    let dirfd = open(&cg.0, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let allow = [Insn::mov64_imm(Reg::R0, 1), Insn::exit()];
    let deny = [Insn::mov64_imm(Reg::R0, 0), Insn::exit()];
    let a = sys::prog_load(&allow, LICENSE, "corral_test", None).unwrap();
    let b = sys::prog_load(&deny, LICENSE, "corral_test", None).unwrap();
    sys::prog_attach(dirfd.as_fd(), a.as_fd(), sys::BPF_F_ALLOW_MULTI, None).unwrap();
    let before = cg.attached();
    let flags = sys::BPF_F_ALLOW_MULTI | sys::BPF_F_REPLACE;
    let replaced = sys::prog_attach(dirfd.as_fd(), b.as_fd(), flags, Some(a.as_fd()));
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse().unwrap_or(0));
    let version: (u32, u32) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if version >= (5, 6) {
        replaced.unwrap();
        let after = cg.attached();
        assert_eq!(after.len(), 1);
        assert_ne!(after, before);
        expect(&cg, &[(&NULL_R, Err(Errno::EPERM))]);
    } else {
        assert_eq!(replaced, Err(Errno::EINVAL), "Linux {release}");
    }
}
