//! The monitor: one small process per container, forked by the launcher, that creates
//! the container and then owns its stdio and its exit status.
//!
//! The monitor is the parent of the container's init (it calls the runtime's
//! `create_with` itself, in a fresh single-threaded fork, so the runtime's `clone3` is
//! sound), so `waitpid` gives it the real exit status. It runs in its own session and
//! holds no fd of the launcher or the service: when either exits, the monitor and the
//! container go on; the monitor is then reparented to the host's init (or the nearest
//! subreaper), which reaps it when it is done.
//!
//! Lifetime: fork -> [`detach`] -> pipes on fds 1 and 2 -> create -> open the logs ->
//! report `Created { pid }` (or the error) to the launcher on a pipe -> pump the pipes
//! into the logs and wait for the init -> `exit.json` -> exit.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use tracing::subscriber::DefaultGuard;
use tracing_subscriber::EnvFilter;

use super::error::{LauncherError, kind_of};
use super::files::{self, LogSink, MONITOR_LOG, STDERR_LOG, STDOUT_LOG};
use super::protocol::{CreateRequest, Outcome, encode};
use super::pump::{self, Stream};
use crate::runtime::create::{CreateOptions, Created, create_with};
use crate::runtime::linux::process::{Forked, exit_now, fork_process, pidfd_send_signal};
use crate::runtime::ops;
use crate::runtime::state::Store;

/// Forks the monitor of a new container. Returns its pid and the read end of the pipe
/// on which it reports the outcome of the create (one [`Outcome`], then EOF).
///
/// The caller must be single-threaded (the launcher is), and `blocked` is the signal
/// mask it blocks (the monitor and so the container start with none blocked).
pub fn spawn(
    root: &Path,
    req: &CreateRequest,
    blocked: &SigSet,
) -> Result<(Pid, OwnedFd), LauncherError> {
    fork_reporter(&format!("the monitor of container {}", req.id), |report| {
        run(root, req, report, blocked)
    })
}

/// Forks a child that runs `body` with the write end of a report pipe and exits with
/// the code it returns (2 if it panics). Returns the child's pid and the read end
/// (non-blocking) of the pipe.
pub(super) fn fork_reporter(
    what: &str,
    body: impl FnOnce(OwnedFd) -> i32,
) -> Result<(Pid, OwnedFd), LauncherError> {
    let (report_r, report_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LauncherError::sys("pipe for a report"))?;
    let (pid, report_r) = fork_with(what, report_r, report_w, body)?;
    nix::fcntl::fcntl(&report_r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map_err(LauncherError::sys("set the report pipe non-blocking"))?;
    Ok((pid, report_r))
}

/// Forks a child that runs `body` with `child_end` and exits with the code it returns
/// (2 if it panics); the parent keeps `parent_end`. Returns the child's pid and
/// `parent_end`.
pub(super) fn fork_with(
    what: &str,
    parent_end: OwnedFd,
    child_end: OwnedFd,
    body: impl FnOnce(OwnedFd) -> i32,
) -> Result<(Pid, OwnedFd), LauncherError> {
    match fork_process() {
        Ok(Forked::Child) => {
            drop(parent_end);
            // Never returns: the launcher's state in this copy of its memory (sockets,
            // pending requests) is never touched again, nor dropped.
            let code = std::panic::catch_unwind(AssertUnwindSafe(|| body(child_end))).unwrap_or(2);
            exit_now(code)
        }
        Ok(Forked::Parent { pid, pidfd }) => {
            drop(pidfd);
            drop(child_end);
            Ok((pid, parent_end))
        }
        Err(e) => Err(LauncherError::Sys {
            op: format!("fork {what}"),
            errno: e.errno(),
        }),
    }
}

/// The monitor's life; returns its exit code.
fn run(root: &Path, req: &CreateRequest, report: OwnedFd, blocked: &SigSet) -> i32 {
    let running = match start(root, req, report.as_raw_fd(), blocked) {
        Ok(r) => r,
        Err(e) => {
            send_report(report, &Outcome::error(&e));
            return 0;
        }
    };
    send_report(
        report,
        &Outcome::Created {
            pid: running.created.pid.as_raw(),
        },
    );
    supervise(running, &req.id)
}

/// Carries the container's output to its logs until its init exits, then writes its
/// `exit.json` in its data dir; returns the monitor's exit code.
pub(super) fn supervise(mut running: Running, id: &str) -> i32 {
    let data_dir = running.data_dir();
    let exit = pump::run(&mut running.streams, &running.created);
    for s in &mut running.streams {
        if let Err(e) = s.sink.finish() {
            tracing::warn!(
                "container {id}: record the truncation of {}: {e}",
                s.sink.name()
            );
        }
    }
    if let Err(e) = files::write_exit(&data_dir, &exit) {
        tracing::error!(
            "container {id}: write {}/{}: {e}",
            data_dir.display(),
            files::EXIT_FILE
        );
        return 1;
    }
    0
}

/// A created container whose output the monitor now carries to the logs.
pub(super) struct Running {
    created: Created,
    /// Held until the monitor exits, after `exit.json` (see
    /// [`Created::hold_mount_namespace`]).
    _mount_ns: Option<OwnedFd>,
    streams: [Stream; 2],
    /// The monitor's messages go to `monitor.log` while this lives.
    _log: DefaultGuard,
    /// The container's data dir (`O_PATH`): its records are written there wherever the
    /// directory is by then (a deleted container's is moved aside before removal).
    dir: OwnedFd,
}

impl Running {
    pub(super) fn pid(&self) -> Pid {
        self.created.pid
    }

    /// A path to the data dir that follows it: `/proc/self/fd/<dir>`.
    fn data_dir(&self) -> std::path::PathBuf {
        format!("/proc/self/fd/{}", self.dir.as_raw_fd()).into()
    }
}

/// Sends this process's `tracing` events to `file` (with times, without colours) while
/// the guard lives. The monitor is single-threaded: the thread's default is all of it.
pub(super) fn log_to(file: File) -> DefaultGuard {
    let filter = EnvFilter::try_from_env("CORRAL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .finish();
    tracing::subscriber::set_default(subscriber)
}

fn start(
    root: &Path,
    req: &CreateRequest,
    keep: RawFd,
    blocked: &SigSet,
) -> Result<Running, LauncherError> {
    detach(keep, blocked, c"corral-monitor")?;
    // Until the container exists, the monitor's messages (and the runtime's) go where
    // the launcher's go; the container's stderr is the container's.
    let create_log = log_to_launcher()?;
    let output = container_stdio()?;
    let store = Store::new(root);
    let opts = CreateOptions {
        id: req.id.clone(),
        bundle: req.bundle.clone(),
        systemd_cgroup: req.systemd_cgroup,
        cgroup_controllers: req.sandbox.then_some(super::protocol::SANDBOX_CONTROLLERS),
        ..CreateOptions::default()
    };
    let created = create_with(&store, &opts, None).map_err(|e| LauncherError::Refused {
        kind: kind_of(&e),
        message: e.to_string(),
    })?;
    // The logs are opened only now, so that a refused create leaves nothing behind
    // (and never touches the data of an existing container with the same id).
    attach_logs(
        &store,
        created,
        output,
        (&req.data_dir, req.log_limit),
        create_log,
    )
}

/// Sends the monitor's messages (and the runtime's) to where the launcher's go, while
/// the guard lives: the monitor's stderr becomes the container's.
pub(super) fn log_to_launcher() -> Result<DefaultGuard, LauncherError> {
    let launcher_stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(LauncherError::io("dup the launcher's stderr"))?;
    Ok(log_to(File::from(launcher_stderr)))
}

/// The container's stdio: /dev/null in, a pipe for each of stdout and stderr, all
/// inherited by the init through fds 0-2 (the runtime closes everything above), until
/// [`attach_logs`]. Returns the pipes' read ends.
pub(super) fn container_stdio() -> Result<[OwnedFd; 2], LauncherError> {
    let (out_r, out_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LauncherError::sys("pipe for stdout"))?;
    let (err_r, err_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(LauncherError::sys("pipe for stderr"))?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(LauncherError::sys("open /dev/null"))?;
    nix::unistd::dup2_stdin(&null).map_err(LauncherError::sys("dup /dev/null to stdin"))?;
    nix::unistd::dup2_stdout(&out_w).map_err(LauncherError::sys("dup the stdout pipe"))?;
    nix::unistd::dup2_stderr(&err_w).map_err(LauncherError::sys("dup the stderr pipe"))?;
    Ok([out_r, err_r])
}

/// Opens the container's logs in `data_dir` (see [`Logs::open`]) and hands its output
/// to them (see [`into_running`]). On failure the container is removed from `store`.
pub(super) fn attach_logs(
    store: &Store,
    created: Created,
    output: [OwnedFd; 2],
    (data_dir, log_limit): (&Path, u64),
    until_now: DefaultGuard,
) -> Result<Running, LauncherError> {
    let logs = match Logs::open(data_dir, log_limit) {
        Ok(l) => l,
        Err(e) => {
            abandon(store, &created);
            return Err(e);
        }
    };
    into_running(store, created, output, logs, until_now)
}

/// A container's data dir and its logs, open.
pub(super) struct Logs {
    /// The directory (`O_PATH`): the logs and records are reached through it, so they
    /// follow it wherever it moves.
    dir: OwnedFd,
    diag: File,
    sinks: [LogSink; 2],
}

impl Logs {
    /// Creates `data_dir` if it is not there and opens its logs.
    pub(super) fn open(data_dir: &Path, log_limit: u64) -> Result<Logs, LauncherError> {
        create_dir(data_dir)?;
        let dir = nix::fcntl::open(
            data_dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(LauncherError::sys(format!("open {}", data_dir.display())))?;
        let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let (diag, sinks) = open_logs(Path::new(&path), data_dir, log_limit)?;
        files::prepare_exit(Path::new(&path)).map_err(LauncherError::io(format!(
            "create the exit record's temp file in {}",
            data_dir.display()
        )))?;
        Ok(Logs { dir, diag, sinks })
    }
}

/// Makes `monitor.log` the monitor's stdout and stderr, which also lets go of the
/// pipes' write ends (the container holds the only ones, and EOF means that every
/// process that could write has gone), and hands the container's `output` to its logs;
/// `until_now` is where the monitor's messages went so far. On failure the container
/// is removed from `store`.
pub(super) fn into_running(
    store: &Store,
    created: Created,
    [out_r, err_r]: [OwnedFd; 2],
    logs: Logs,
    until_now: DefaultGuard,
) -> Result<Running, LauncherError> {
    let Logs { dir, diag, sinks } = logs;
    let redirect = nix::unistd::dup2_stdout(&diag).and_then(|()| nix::unistd::dup2_stderr(&diag));
    if let Err(e) = redirect {
        abandon(store, &created);
        return Err(LauncherError::sys("dup monitor.log to stdout and stderr")(
            e,
        ));
    }
    let [stdout, stderr] = sinks;
    drop(until_now);
    Ok(Running {
        _mount_ns: created.hold_mount_namespace(),
        created,
        streams: [Stream::new(out_r, stdout), Stream::new(err_r, stderr)],
        _log: log_to(diag),
        dir,
    })
}

/// Leaves the launcher's world: no blocked signals (the container inherits the mask),
/// a session of our own (no terminal or process-group signal aimed at the service
/// reaches us), and no fd but `keep` above stdio (the launcher's socket to the service,
/// its signalfd, the report pipes of other creates).
pub(super) fn detach(
    keep: RawFd,
    blocked: &SigSet,
    name: &std::ffi::CStr,
) -> Result<(), LauncherError> {
    blocked
        .thread_unblock()
        .map_err(LauncherError::sys("unblock signals"))?;
    nix::unistd::setsid().map_err(LauncherError::sys("setsid"))?;
    // Only the name shown by ps; failure does not matter.
    let _ = nix::sys::prctl::set_name(name);
    close_fds_except(keep)
}

/// Closes every fd above stdio except `keep`.
fn close_fds_except(keep: RawFd) -> Result<(), LauncherError> {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(LauncherError::io("read /proc/self/fd"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    // The directory's own fd is closed by now; closing it again gives EBADF, ignored.
    for fd in open {
        if fd > 2 && fd != keep {
            // SAFETY: closing an fd of our own table. This process is a fork that never
            // returns to the code that owns these fds, so nothing uses or closes them
            // again.
            unsafe { libc::close(fd) };
        }
    }
    Ok(())
}

/// Creates the container's data directory (0700) if it is not there yet.
fn create_dir(dir: &Path) -> Result<(), LauncherError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(LauncherError::io(format!("create {}", dir.display())))
}

/// `(monitor.log, [stdout.log, stderr.log])` in the container's data directory `dir`
/// (named `shown` in errors).
fn open_logs(
    dir: &Path,
    shown: &Path,
    log_limit: u64,
) -> Result<(File, [LogSink; 2]), LauncherError> {
    let ctx = |what: &str| LauncherError::io(format!("{what} {}", shown.display()));
    // An exit record left by an earlier container of this id would describe this one
    // as finished. (Its logs are appended to; the service may clear the dir first.)
    match std::fs::remove_file(dir.join(files::EXIT_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ctx("remove the stale exit.json in")(e)),
    }
    let diag = files::open_append(dir, MONITOR_LOG).map_err(ctx("open monitor.log in"))?;
    let stdout = LogSink::open(dir, STDOUT_LOG, log_limit).map_err(ctx("open stdout.log in"))?;
    let stderr = LogSink::open(dir, STDERR_LOG, log_limit).map_err(ctx("open stderr.log in"))?;
    Ok((diag, [stdout, stderr]))
}

/// Removes a container that the monitor cannot serve (from `store`, where it is now),
/// and reaps its init: killed first, so that the wait ends even should the delete fail
/// before it kills.
pub(super) fn abandon(store: &Store, created: &Created) {
    let _ = pidfd_send_signal(&created.pidfd, libc::SIGKILL);
    if let Err(e) = ops::delete(store, &created.record.id, true) {
        tracing::error!("remove container {}: {e}", created.record.id);
    }
    let _ = nix::sys::wait::waitpid(created.pid, None);
}

/// Writes the outcome for the launcher and closes the pipe. If the launcher is gone the
/// write fails (EPIPE; `SIGPIPE` is ignored) and the container goes on regardless: the
/// service finds it from the state on disk.
pub(super) fn send_report(report: OwnedFd, outcome: &Outcome) {
    // The launcher reads up to EOF: the size of one write does not matter.
    let Ok(bytes) = encode(outcome) else { return };
    let _ = File::from(report).write_all(&bytes);
}
