//! The forked child of `exec`: already in the container's pid (and time) namespace, it
//! joins the other namespaces, takes the process's identity and limits, and execs.
//!
//! The same rules as the init (DESIGN.md): non-dumpable until exec, every fd the process
//! is not meant to have closed before it can run container code, seccomp and capability
//! drop last. On failure it sends the reason to the runtime and exits.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::sched::{CloneFlags, setns};

use crate::runtime::init::confine;
use crate::runtime::init::exec as program;
use crate::runtime::init::{
    close_fds_except, close_range_cloexec, reset_signals, setgroups_allowed,
};
use crate::runtime::linux::error::{Context, SysError, SysResult};
use crate::runtime::linux::process::exit_now;
use crate::runtime::linux::seccomp::SeccompProgram;
use crate::runtime::linux::sync::{Channel, Message, dup_above};
use crate::runtime::linux::{console, identity};
use crate::runtime::plan::ProcessPlan;

/// What the child needs: the plan and the fds handed down by the runtime.
pub struct ChildContext<'a> {
    pub plan: &'a ProcessPlan,
    pub seccomp: Option<&'a SeccompProgram>,
    pub sync: Channel,
    pub console_socket: Option<OwnedFd>,
    /// The container's namespaces to join here (user first), opened by the runtime.
    pub namespaces: Vec<(CloneFlags, OwnedFd)>,
    /// The init's root, for a container in the runtime's mount namespace: entered with
    /// `chroot` once the namespaces are joined.
    pub root: Option<OwnedFd>,
    pub preserve_fds: i32,
}

/// Runs the child; never returns.
pub fn run(mut ctx: ChildContext<'_>) -> ! {
    let config_error = std::cell::Cell::new(false);
    match setup(&mut ctx, &config_error) {
        Ok(prog) => launch(&ctx, &prog),
        Err(e) => {
            let msg = if config_error.get() {
                Message::ConfigError(e.to_string())
            } else {
                Message::Error(e.to_string())
            };
            let _ = ctx.sync.send(&msg);
            exit_now(1)
        }
    }
}

fn launch(ctx: &ChildContext<'_>, prog: &CString) -> ! {
    let p = ctx.plan;
    if p.no_new_privileges
        && let Some(s) = ctx.seccomp
        && let Err(e) = s.install()
    {
        let _ = ctx
            .sync
            .send(&Message::Error(format!("install seccomp filter: {e}")));
        exit_now(1)
    }
    reset_signals();
    let e = program::execve(prog, &p.args, &p.env);
    let msg = format!("exec {}: {e}", prog.to_string_lossy());
    // The filter may forbid sendmsg; stderr is the fallback.
    let _ = ctx.sync.send(&Message::Error(msg.clone()));
    let _ = writeln!(std::io::stderr(), "corral: {msg}");
    exit_now(if e == nix::Error::ENOENT { 127 } else { 126 })
}

fn setup(ctx: &mut ChildContext<'_>, config_error: &std::cell::Cell<bool>) -> SysResult<CString> {
    // Keep the host's runtime binary out of reach (/proc/<pid>/exe, ptrace) until exec.
    nix::sys::prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE, 0)".into())?;
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .ctx(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    // Taken while the host's /proc is still the one mounted here.
    let exe = confine::RuntimeExe::current();
    let keep_below = 3 + ctx.preserve_fds;
    ctx.sync.move_above(keep_below)?;
    if let Some(s) = ctx.console_socket.take() {
        ctx.console_socket = Some(dup_above(&s, keep_below)?);
    }
    let mut moved = Vec::new();
    for (kind, fd) in ctx.namespaces.drain(..) {
        moved.push((kind, dup_above(&fd, keep_below)?));
    }
    ctx.namespaces = moved;
    if let Some(r) = ctx.root.take() {
        ctx.root = Some(dup_above(&r, keep_below)?);
    }
    // Everything else the runtime had open (the state lock, the pidfd, ...) goes now.
    let mut keep = vec![ctx.sync.as_fd().as_raw_fd()];
    keep.extend(ctx.console_socket.as_ref().map(|f| f.as_raw_fd()));
    keep.extend(ctx.namespaces.iter().map(|(_, f)| f.as_raw_fd()));
    keep.extend(ctx.root.as_ref().map(|f| f.as_raw_fd()));
    close_fds_except(keep_below, &keep)?;

    // The runtime has put us in the container's cgroup.
    match ctx.sync.recv()? {
        Some(Message::Continue { .. }) => {}
        other => {
            return Err(SysError::invalid(format!(
                "unexpected sync message {other:?}"
            )));
        }
    }
    let mut user_ns = false;
    for (kind, fd) in ctx.namespaces.drain(..) {
        setns(fd.as_fd(), kind).ctx(|| format!("join the container's {kind:?} namespace"))?;
        user_ns |= kind == CloneFlags::CLONE_NEWUSER;
    }
    // setns(CLONE_NEWNS) put root and cwd at the container's root; without a mount
    // namespace of its own, the container's root is the init's chroot.
    if let Some(root) = ctx.root.take() {
        nix::unistd::fchdir(&root).ctx(|| "chdir to the init's root".into())?;
        nix::unistd::chroot(".").ctx(|| "chroot to the init's root".into())?;
    }
    let ctx: &ChildContext<'_> = ctx;
    let p = ctx.plan;
    if let Some(sock) = &ctx.console_socket {
        console::setup(sock, p.console_size)?;
    }
    if let Some(adj) = p.oom_score_adj {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("write oom_score_adj {adj}"))?;
    }
    if let Some((class, prio)) = p.io_priority {
        // SAFETY: ioprio_set(IOPRIO_WHO_PROCESS, 0 = self, value) takes plain integers.
        let r = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, (class << 13) | prio) };
        nix::errno::Errno::result(r).ctx(|| format!("ioprio_set class {class} level {prio}"))?;
    }
    for r in &p.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit reads a valid rlimit struct.
        let ret = unsafe { libc::setrlimit(r.resource, &lim) };
        nix::errno::Errno::result(ret)
            .ctx(|| format!("setrlimit {} {}:{}", r.name, r.soft, r.hard))?;
    }
    // Every fd the process is not meant to have becomes close-on-exec before a filter is
    // in place: what the runtime does after it must not depend on what the profile
    // allows (close_range is missing from many).
    close_range_cloexec(keep_below)?;
    nix::sys::prctl::set_pdeathsig(None).ctx(|| "clear PR_SET_PDEATHSIG".into())?;
    let setgroups_ok = !user_ns || setgroups_allowed();
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we hold it.
    if !p.no_new_privileges
        && let Some(s) = ctx.seccomp
    {
        s.install().ctx(|| "install seccomp filter".into())?;
    }
    identity::switch(
        p.uid,
        p.gid,
        &p.additional_gids,
        setgroups_ok,
        p.caps.as_ref(),
    )?;
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    // Inside the container's root, or the exec fails (CVE-2024-21626).
    confine::chdir_inside(&p.cwd).inspect_err(|_| config_error.set(true))?;
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    }
    let prog =
        confine::find_program(&p.args[0], &p.env, exe).inspect_err(|_| config_error.set(true))?;
    Ok(prog)
}
