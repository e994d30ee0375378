//! The container's init: the child of `clone3` that turns a [`Plan`] into a running
//! container, in the order the anchors learned the hard way (DESIGN.md): id maps and
//! cgroup (done by the parent before it says go), namespaces, rootfs mounts, hooks,
//! pivot_root, masked and read-only paths, hostname, sysctls, rlimits, identity and
//! capabilities, no_new_privs, fds, seccomp, cwd; then it waits for `start` and execs.
//!
//! This code runs in a forked copy of the single-threaded runtime process; on error it
//! sends the message to the parent and exits.

pub(super) mod confine;
pub(super) mod exec;
mod rootfs;
mod trim;

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sched::{CloneFlags, setns, unshare};
use oci_spec::runtime::Hook;

use super::linux::error::{Context, SysError, SysResult};
use super::linux::process::{self, exit_now};
use super::linux::sync::{Channel, Message, dup_above};
use super::linux::{console, identity};
use super::plan::{Plan, ProcessPlan};

/// What the init needs besides the plan: the fds handed down by the runtime.
pub struct InitContext<'a> {
    pub plan: &'a Plan,
    pub sync: Channel,
    /// The read end of the exec fifo: `start` writes one byte into it.
    pub fifo: Option<OwnedFd>,
    /// `exec.error` in the container's state directory, opened for writing: a failure
    /// after `start` is written there for `start` to report. A file, never the
    /// directory: no fd the init holds may lead out of the root (see [`confine`]).
    pub exec_error: Option<OwnedFd>,
    /// Where this process's argument strings are ([`process::argv_area`]), read by the
    /// runtime before the clone: the init shows a neutral command line.
    pub argv_area: Option<(usize, usize)>,
    pub console_socket: Option<OwnedFd>,
    pub preserve_fds: i32,
    pub no_pivot: bool,
    /// Set when setup fails on the container's own configuration (see
    /// `Message::ConfigError`).
    pub config_error: std::cell::Cell<bool>,
    /// `(hierarchy name, host directory of the container's cgroup)` for `cgroup` mounts.
    pub cgroup_dirs: Vec<(String, PathBuf)>,
    /// The parent runs prestart/createRuntime hooks when told to.
    pub runtime_hooks: bool,
    pub create_container_hooks: Vec<Hook>,
    pub start_container_hooks: Vec<Hook>,
}

/// Runs the init; never returns. Exits 1 after reporting a setup failure.
pub fn run(mut ctx: InitContext<'_>) -> ! {
    match setup(&mut ctx) {
        Ok(ready) => launch(&ctx, &ready),
        Err(e) => {
            let msg = if ctx.config_error.get() || e.is_content() {
                Message::ConfigError(e.to_string())
            } else {
                Message::Error(e.to_string())
            };
            let _ = ctx.sync.send(&msg);
            exit_now(1)
        }
    }
}

/// What setup hands to the last step.
struct Ready {
    program: CString,
    /// The OCI state given to hooks that run inside the container.
    state: String,
    /// The process given after create (a warm container), in place of the plan's.
    late: Option<ProcessPlan>,
    /// The runtime's own binary, which the program must not be.
    exe: Option<confine::RuntimeExe>,
}

/// Waits for `start`, runs startContainer hooks, loads a late seccomp filter and execs.
/// Errors go to stderr: the runtime that created the container is gone by now.
fn launch(ctx: &InitContext<'_>, ready: &Ready) -> ! {
    let plan = ctx.plan;
    let process = ready.late.as_ref().unwrap_or(&plan.process);
    // After `start`, a failure is written to <state>/exec.error before the fifo closes
    // (at exit), so that `start`, which waits for the fifo to close, can report it.
    let fail = |e: &dyn std::fmt::Display, code: i32| -> ! {
        let msg = e.to_string();
        if let Some(file) = &ctx.exec_error {
            let _ = nix::unistd::write(file, msg.as_bytes());
        }
        let _ = writeln!(std::io::stderr(), "corral: {msg}");
        exit_now(code)
    };
    // The runtime's dispositions must not reach the program: Rust ignores SIGPIPE, and
    // ignored signals survive execve (handled signals reset themselves at exec). Reset
    // before the wait, off `start`'s path, unless startContainer hooks run after it (a
    // hook is fed its state through a pipe: SIGPIPE stays ignored for that).
    let reset_early = ctx.start_container_hooks.is_empty();
    if reset_early {
        reset_signals();
    }
    if ctx.fifo.is_some() {
        // The exec after `start` then has little address space to tear down.
        trim::drop_read_only_mappings();
    }
    if let Some(fifo) = &ctx.fifo
        && let Err(e) = wait_for_start(fifo)
    {
        // `start` never came: the container was deleted before it started.
        let _ = ctx.sync.send(&Message::Error(e.to_string()));
        exit_now(0);
    }
    let late;
    let program = if plan.resolve_at_start {
        late = match resolve(process, ready.exe) {
            Ok(p) => p,
            Err(e) => fail(
                &e,
                if e.errno() == nix::Error::ENOENT {
                    127
                } else {
                    126
                },
            ),
        };
        &late
    } else {
        &ready.program
    };
    if let Err(e) = super::hooks::run(
        "startContainer",
        &ctx.start_container_hooks,
        ready.state.as_bytes(),
    ) {
        fail(&e, 1);
    }
    if process.no_new_privileges
        && let Some(prog) = &plan.seccomp
        && let Err(e) = prog.install()
    {
        fail(&format!("install seccomp filter: {e}"), 1);
    }
    if !reset_early {
        reset_signals();
    }
    let e = match plan.reaper_status_fd {
        // The program is pid 2, without the reaper's status fd.
        Some(status_fd) => match exec::spawn(program, &process.args, &process.env, status_fd) {
            Ok(program) => reap(program, status_fd),
            Err(exec::SpawnError::Exec(e)) => e,
            Err(exec::SpawnError::Clone(e)) => {
                fail(&format!("start the program under the reaper: {e}"), 1)
            }
        },
        None => exec::execve(program, &process.args, &process.env),
    };
    let code = if e == nix::Error::ENOENT { 127 } else { 126 };
    fail(&format!("exec {}: {e}", program.to_string_lossy()), code)
}

/// Changes to the process's cwd and looks its program up: the last steps of setup, or
/// the first after `start` under [`Plan::resolve_at_start`]. Both must stay inside the
/// container's root ([`confine`]).
fn resolve(p: &ProcessPlan, exe: Option<confine::RuntimeExe>) -> Result<CString, SysError> {
    // After pivot_root "/" is the container's root, so cwd resolves inside it; chdir as
    // the final user so that permissions apply.
    confine::chdir_inside(&p.cwd)?;
    confine::find_program(&p.args[0], &p.env, exe)
}

/// pid 1 under the reaper annotation: holds no fd but `status_fd` (so the exec fifo,
/// stdio and the rest close with the program's), reaps every child until `program`
/// exits, writes its raw wait status to `status_fd` and exits, taking the pid
/// namespace (and whatever the program left running) with it.
fn reap(program: nix::unistd::Pid, status_fd: i32) -> ! {
    close_all_but(status_fd);
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: waitpid with a valid pointer to a c_int.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == program.as_raw() {
            let bytes = status.to_ne_bytes();
            // SAFETY: writing a 4-byte buffer to our own fd.
            let _ = unsafe { libc::write(status_fd, bytes.as_ptr().cast(), bytes.len()) };
            exit_now(0);
        }
        if pid < 0 && nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            // ECHILD: the program is gone without a status for us (cannot happen).
            exit_now(1);
        }
    }
}

/// Closes every fd but `keep`.
fn close_all_but(keep: i32) {
    for (first, last) in [(0, keep - 1), (keep + 1, i32::MAX)] {
        if first <= last {
            // SAFETY: close_range on our own fd table; nothing in this process uses the
            // closed fds again (the reaper only waits and writes to `keep`).
            unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
        }
    }
}

fn setup(ctx: &mut InitContext<'_>) -> Result<Ready, SysError> {
    // The container sees the init as its pid 1 (for good under the reaper): its command
    // line must not show the runtime's, with the host's paths in it.
    process::set_cmdline(ctx.argv_area, process::INIT_CMDLINE);
    // Keep the host's runtime binary out of reach (/proc/<pid>/exe, ptrace) until exec,
    // which resets dumpability from the new program's credentials.
    nix::sys::prctl::set_dumpable(false).ctx(|| "prctl(PR_SET_DUMPABLE, 0)".into())?;
    // Die with the runtime while it still supervises the setup.
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .ctx(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    // Taken while the host's /proc is still mounted here.
    let exe = confine::RuntimeExe::current();
    // Internal fds go above the ones the container keeps, close-on-exec.
    let keep_below = 3 + ctx.preserve_fds;
    ctx.sync.move_above(keep_below)?;
    if let Some(f) = ctx.fifo.take() {
        ctx.fifo = Some(dup_above(&f, keep_below)?);
    }
    if let Some(s) = ctx.console_socket.take() {
        ctx.console_socket = Some(dup_above(&s, keep_below)?);
    }
    if let Some(f) = ctx.exec_error.take() {
        ctx.exec_error = Some(dup_above(&f, keep_below)?);
    }
    // Everything else the runtime had open (the state lock, pidfds, ...) is closed now:
    // the init outlives the runtime, and must not hold its files.
    let mut keep = vec![ctx.sync.as_fd().as_raw_fd()];
    keep.extend(ctx.fifo.as_ref().map(|f| f.as_raw_fd()));
    keep.extend(ctx.console_socket.as_ref().map(|f| f.as_raw_fd()));
    keep.extend(ctx.exec_error.as_ref().map(|f| f.as_raw_fd()));
    close_fds_except(keep_below, &keep)?;
    let ctx: &InitContext<'_> = ctx;
    let plan = ctx.plan;

    // The parent has written the id maps and put us in the cgroup.
    let state = match ctx.sync.recv()? {
        Some(Message::Continue { state }) => state,
        other => {
            return Err(SysError::invalid(format!(
                "unexpected sync message {other:?}"
            )));
        }
    };
    if plan.has_new(CloneFlags::CLONE_NEWUSER) {
        // Become root of the new user namespace (our host uid may be unmapped).
        let root_u = nix::unistd::Uid::from_raw(0);
        let root_g = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g)
            .ctx(|| "setresgid 0 in the user namespace".into())?;
        nix::unistd::setresuid(root_u, root_u, root_u)
            .ctx(|| "setresuid 0 in the user namespace".into())?;
    }
    for j in &plan.join {
        let fd =
            std::fs::File::open(&j.path).ctx(|| format!("open namespace {}", j.path.display()))?;
        setns(fd.as_fd(), j.kind).ctx(|| format!("setns {}", j.path.display()))?;
    }
    if plan.new_cgroup_ns {
        unshare(CloneFlags::CLONE_NEWCGROUP).ctx(|| "unshare cgroup namespace".into())?;
    }

    let root = rootfs::prepare(plan)?;
    for m in &plan.mounts {
        rootfs::mount_one(&root, m, &ctx.cgroup_dirs)?;
    }
    rootfs::create_devices(&root, &plan.devices, plan.user_ns())?;

    if ctx.runtime_hooks {
        ctx.sync.send(&Message::RunCreateRuntimeHooks)?;
        match ctx.sync.recv()? {
            Some(Message::HooksDone) => {}
            Some(Message::Error(e)) => return Err(SysError::invalid(e)),
            other => {
                return Err(SysError::invalid(format!(
                    "unexpected sync message {other:?}"
                )));
            }
        }
    }
    if !ctx.create_container_hooks.is_empty() {
        super::hooks::run(
            "createContainer",
            &ctx.create_container_hooks,
            state.as_bytes(),
        )
        .map_err(|e| SysError::invalid(e.to_string()))?;
    }

    rootfs::enter(&root, ctx.no_pivot)?;
    drop(root);
    if let Some(p) = plan.rootfs_propagation {
        super::linux::mount::set_propagation("/", p, std::path::Path::new("/"))?;
    }
    for (key, value) in &plan.sysctl {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        std::fs::write(&path, value).ctx(|| format!("write sysctl {key}={value}"))?;
    }
    rootfs::mask_and_protect(plan)?;
    if plan.rootfs_readonly {
        rootfs::make_root_readonly()?;
    }
    // Nothing above depends on the process: a warm container waits for it here.
    let late = if plan.late_process {
        Some(take_late_process(ctx)?)
    } else {
        None
    };
    let (p, hostname) = match &late {
        Some((p, h)) => (p, h.as_ref().or(plan.hostname.as_ref())),
        None => (&plan.process, plan.hostname.as_ref()),
    };
    if let Some(h) = hostname {
        nix::unistd::sethostname(h).ctx(|| format!("sethostname {h}"))?;
    }
    if let Some(d) = &plan.domainname {
        // SAFETY: setdomainname reads `len` bytes from a valid buffer.
        let r = unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) };
        nix::errno::Errno::result(r).ctx(|| format!("setdomainname {d}"))?;
    }
    if let Some(sock) = &ctx.console_socket {
        console::setup(sock, plan.process.console_size)?;
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
    // Every fd the container is not meant to have becomes close-on-exec, before a
    // filter is in place: what the runtime does after it must not depend on what the
    // profile allows (close_range is missing from many).
    close_range_cloexec(keep_below)?;
    nix::sys::prctl::set_pdeathsig(None).ctx(|| "clear PR_SET_PDEATHSIG".into())?;
    let setgroups_allowed = !plan.user_ns() || setgroups_allowed();
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we hold it.
    if !p.no_new_privileges
        && let Some(prog) = &plan.seccomp
    {
        prog.install().ctx(|| "install seccomp filter".into())?;
    }
    identity::switch(
        p.uid,
        p.gid,
        &p.additional_gids,
        setgroups_allowed,
        p.caps.as_ref(),
    )?;
    if let Some(mask) = p.umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if p.no_new_privileges {
        nix::sys::prctl::set_no_new_privs().ctx(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
    }
    let program = if plan.resolve_at_start {
        p.args[0].clone()
    } else {
        resolve(p, exe).inspect_err(|_| ctx.config_error.set(true))?
    };
    ctx.sync.send(&Message::Ready)?;
    Ok(Ready {
        program,
        state,
        late: late.map(|(p, _)| p),
        exe,
    })
}

/// The process of a warm container ([`Plan::late_process`]): tells the parent that the
/// rest of setup is done, then waits for the process and makes its plan from the
/// bundle's (whose capabilities, rlimits and the like it keeps). Exits quietly if the
/// parent goes away first: the warm container was discarded unused.
fn take_late_process(ctx: &InitContext<'_>) -> Result<(ProcessPlan, Option<String>), SysError> {
    ctx.sync.send(&Message::Ready)?;
    // Most of what the init mapped is of no more use; what the claim runs faults back in.
    trim::drop_read_only_mappings();
    let late = match ctx.sync.recv()? {
        Some(Message::Process(p)) => p,
        None => exit_now(0),
        other => {
            return Err(SysError::invalid(format!(
                "unexpected sync message {other:?}"
            )));
        }
    };
    let invalid = |why: String| {
        ctx.config_error.set(true);
        SysError::invalid(why)
    };
    let strings = |what: &str, v: &[String]| -> Result<Vec<CString>, SysError> {
        v.iter()
            .map(|s| {
                CString::new(s.as_str())
                    .map_err(|_| invalid(format!("process.{what}: {s:?} holds a NUL byte")))
            })
            .collect()
    };
    if late.args.is_empty() {
        return Err(invalid("process.args: must name a program".into()));
    }
    if !late.cwd.is_absolute() {
        return Err(invalid(format!(
            "process.cwd: {} is not an absolute path",
            late.cwd.display()
        )));
    }
    let mut p = ctx.plan.process.clone();
    p.args = strings("args", &late.args)?;
    p.env = strings("env", &late.env)?;
    p.cwd = late.cwd;
    p.uid = late.uid;
    p.gid = late.gid;
    p.additional_gids = late.additional_gids;
    Ok((p, late.hostname))
}

/// Every signal back to its default disposition, and none blocked.
pub(super) fn reset_signals() {
    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours in a signal context.
        let _ = unsafe { signal(sig, SigHandler::SigDfl) };
    }
    // The real-time signals too, 32 and 33 included (glibc refuses to touch those, so
    // rt_sigaction directly): an ignore inherited from whatever started the runtime must
    // not reach the container either.
    #[repr(C)]
    struct KernelSigaction {
        handler: libc::c_ulong,
        flags: libc::c_ulong,
        restorer: libc::c_ulong,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL as libc::c_ulong,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 32..=64 {
        // SAFETY: rt_sigaction reads a kernel sigaction of the size we pass; SIG_DFL
        // installs no code of ours.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                std::mem::size_of::<u64>(),
            )
        };
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

pub(super) fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "allow")
}

/// Closes every fd at or above `first` except those in `keep`.
pub(super) fn close_fds_except(first: i32, keep: &[i32]) -> SysResult<()> {
    let mut open = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").ctx(|| "read /proc/self/fd".into())? {
        let entry = entry.ctx(|| "read /proc/self/fd".into())?;
        if let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        {
            open.push(fd);
        }
    }
    // The directory's own fd is closed by now; closing it again gives EBADF, ignored.
    for fd in open {
        if fd >= first && !keep.contains(&fd) {
            // SAFETY: closing an fd number of our own table that nothing below uses.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

pub(super) fn close_range_cloexec(first: i32) -> SysResult<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on our own fds.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    nix::errno::Errno::result(r).ctx(|| format!("close_range({first}, ~0, CLOEXEC)"))?;
    Ok(())
}

/// Blocks until `start` opens the fifo and writes a byte. The fifo was opened read-only
/// and non-blocking before any writer existed: poll(2) does not report a hang-up for a
/// fifo that never had a writer, so it waits for `start`.
fn wait_for_start(fifo: &OwnedFd) -> SysResult<()> {
    let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => break,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(SysError::new("wait on exec fifo", e)),
        }
    }
    let mut b = [0u8; 1];
    let n = nix::unistd::read(fifo, &mut b).ctx(|| "read exec fifo".into())?;
    if n != 1 {
        return Err(SysError::invalid("exec fifo closed without start"));
    }
    Ok(())
}
