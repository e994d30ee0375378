//! One execution of a judged run: a fresh container created with the run's stdio,
//! supervised to its first limit, measured from its cgroup.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitStatus, waitpid};

use super::netns::Fresh;
use super::reap;
use crate::runtime::Error as RuntimeError;
use crate::runtime::create::{CreateOptions, Created, create_with};
use crate::runtime::linux::cgroups::{Cgroup, CgroupPath};
use crate::runtime::linux::process::pidfd_send_signal;
use crate::runtime::ops;
use crate::runtime::state::{StateError, Store};
use crate::service::runs::result::{ExecResult, StepPlan};
use crate::service::runs::spec::STATUS_FD;
use crate::service::runs::verdict::{Ending, Verdict, judge, same_output};

/// After the init has exited, how long to wait for the pipes to close (its pid
/// namespace is gone with it, so this is only reached by a process that left it).
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// The cgroup v1 controllers of a run container: limits (memory, pids, devices), the
/// measures (cpuacct, memory) and freezer (what `delete` and `kill_all` use). The other
/// hierarchies would only cost a directory and a migration per execution.
const RUN_CONTROLLERS: &[&str] = &["cpuacct", "memory", "pids", "devices", "freezer"];

/// Read size of the output pipes.
const CHUNK: usize = 64 * 1024;

pub(super) fn internal(id: &str, message: String) -> ExecResult {
    tracing::error!("run container {id}: {message}");
    ExecResult {
        verdict: Some(Verdict::InternalError),
        message: Some(message),
        ..Default::default()
    }
}

/// Why an execution did not start: the program's fault (missing, not executable) or
/// the service's.
pub(super) enum Refusal {
    Program(String),
    Internal(String),
}

impl From<RuntimeError> for Refusal {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::InitConfig { reason, .. } | RuntimeError::Init { reason, .. } => {
                Refusal::Program(reason)
            }
            other => Refusal::Internal(other.to_string()),
        }
    }
}

/// A step's bundle, loaded once for all its executions (its directory, canonical, and
/// its `config.json`).
pub(super) type Loaded = std::sync::Arc<(std::path::PathBuf, oci_spec::runtime::Spec)>;

/// Loads the bundle of a step (the service wrote it: a failure is internal).
pub(super) fn load(bundle: &Path) -> Result<Loaded, String> {
    crate::runtime::spec::load_bundle(bundle)
        .map(std::sync::Arc::new)
        .map_err(|e| e.to_string())
}

/// A created container, its pipes and its cgroup.
pub(super) struct Execution {
    pub(super) id: String,
    created: Created,
    /// Held until the container is removed, between runs (see
    /// [`Created::hold_mount_namespace`]).
    mount_ns: Option<OwnedFd>,
    cgroup: Option<Cgroup>,
    /// The reaper writes the program's raw wait status here.
    status: OwnedFd,
    out: Output,
    err: Output,
    started: Instant,
    /// Why the init could not execute the program, as `start` found it.
    exec_failure: Option<String>,
}

impl Execution {
    /// Creates the container with `stdin` (or /dev/null) and two pipes as its stdio,
    /// and starts it.
    pub(super) fn create(
        store: &Store,
        id: &str,
        bundle: &Loaded,
        stdin: Option<&Path>,
        null: &OwnedFd,
        netns: Option<&Fresh>,
    ) -> Result<Self, Refusal> {
        let input = match stdin {
            Some(p) => open_input(p).map_err(Refusal::Internal)?,
            None => null
                .try_clone()
                .map_err(|e| Refusal::Internal(format!("dup /dev/null: {e}")))?,
        };
        let mut x = Self::prepare(store, id, bundle, input, null, netns, false)?;
        x.start(store)?;
        Ok(x)
    }

    /// Creates the container with `input` as its stdin and two pipes as its stdout and
    /// stderr; its init waits for [`Execution::start`] (and resolves the program's cwd
    /// and path then, under `resolve_at_start`).
    pub(super) fn prepare(
        store: &Store,
        id: &str,
        bundle: &Loaded,
        input: OwnedFd,
        null: &OwnedFd,
        netns: Option<&Fresh>,
        resolve_at_start: bool,
    ) -> Result<Self, Refusal> {
        let sys =
            |what: &'static str| move |e: nix::Error| Refusal::Internal(format!("{what}: {e}"));
        let (status_r, status_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
        // The init inherits fds 0-2 (the runtime closes everything above).
        nix::unistd::dup2_stdin(&input).map_err(sys("dup2 stdin"))?;
        nix::unistd::dup2_stdout(&out_w).map_err(sys("dup2 stdout"))?;
        nix::unistd::dup2_stderr(&err_w).map_err(sys("dup2 stderr"))?;
        // SAFETY: fd 3 is kept free for this (see `reserve_status_fd`).
        let status_fd = unsafe { libc::dup2(status_w.as_raw_fd(), STATUS_FD) };
        if status_fd != STATUS_FD {
            return Err(Refusal::Internal(format!(
                "dup2 the status pipe to fd {STATUS_FD}: {}",
                nix::Error::last()
            )));
        }
        drop((input, out_w, err_w, status_w));
        let opts = CreateOptions {
            id: id.to_string(),
            bundle: bundle.0.clone(),
            preserve_fds: STATUS_FD - 2,
            cgroup_controllers: Some(RUN_CONTROLLERS),
            loaded: Some(bundle.clone()),
            fresh_netns: netns.map(Fresh::path),
            resolve_at_start,
            ..CreateOptions::default()
        };
        let created = create_with(store, &opts, None);
        // Let go of the write ends: EOF then means every writer is gone.
        let _ = nix::unistd::dup2_stdin(null);
        let _ = nix::unistd::dup2_stdout(null);
        let _ = nix::unistd::dup2_stderr(null);
        // SAFETY: fd 3 is ours (the status pipe's write end, just handed to the init).
        unsafe { libc::dup2(null.as_raw_fd(), STATUS_FD) };
        let created = created?;
        let cgroup = CgroupPath::parse(
            Some(&created.record.cgroup_path),
            id,
            created.record.systemd_cgroup,
        )
        .and_then(|p| Cgroup::open_only(&p, RUN_CONTROLLERS));
        let mut x = Execution {
            id: id.to_string(),
            exec_failure: None,
            cgroup: None,
            mount_ns: created.hold_mount_namespace(),
            created,
            status: status_r,
            out: Output::new(out_r),
            err: Output::new(err_r),
            started: Instant::now(),
        };
        match cgroup {
            Ok(c) => x.cgroup = Some(c),
            Err(e) => {
                x.remove(store);
                return Err(Refusal::Internal(format!("open the cgroup: {e}")));
            }
        }
        Ok(x)
    }

    /// Starts the program of a container [`Execution::prepare`] created; the wall time
    /// counts from here. On failure the container is removed.
    pub(super) fn start(&mut self, store: &Store) -> Result<(), Refusal> {
        self.started = Instant::now();
        // Created by this process: started without reading its state back.
        let started = store
            .lock(&self.id)
            .map_err(RuntimeError::from)
            .and_then(|lock| ops::start_created(&lock, &self.created.record));
        // The program could not be executed (the init's report, from exec.error): that
        // is the run's result, judged like any other exit (126 or 127, the reason on
        // stderr and in the message), not a refusal.
        let started = match started {
            Err(RuntimeError::InitConfig { reason, .. }) => {
                self.exec_failure = Some(reason.trim().to_string());
                Ok(())
            }
            other => other,
        };
        if let Err(e) = started {
            self.remove(store);
            return Err(e.into());
        }
        Ok(())
    }

    /// The init's mount namespace, if it could be opened.
    pub(super) fn mount_ns(&self) -> Option<&OwnedFd> {
        self.mount_ns.as_ref()
    }

    /// Waits for the init to exit, enforcing the limits; then measures.
    pub(super) fn supervise(&mut self, step: &StepPlan, expected: Option<&str>) -> ExecResult {
        let cpu_limit_ns = step.cpu_time_ms.saturating_mul(1_000_000);
        let wall_deadline = self.started + Duration::from_millis(step.wall_time_ms);
        let cpus = cpus();
        let mut end = Ending::default();
        let mut buf = vec![0u8; CHUNK];
        let mut exited_at: Option<Instant> = None;
        let mut killed = false;
        loop {
            let now = Instant::now();
            // One read of the cgroup's CPU time per wake-up, for the check and the wait.
            let cpu_used = match exited_at {
                None if !killed => self.cpu_used(),
                _ => None,
            };
            if exited_at.is_none() && !killed {
                if now >= wall_deadline {
                    end.wall_exceeded = true;
                    self.kill();
                    killed = true;
                } else if let Some(used) = cpu_used
                    && used >= cpu_limit_ns
                {
                    end.cpu_exceeded = true;
                    self.kill();
                    killed = true;
                }
            }
            if let Some(t) = exited_at
                && (self.out.closed() && self.err.closed() || t.elapsed() >= DRAIN_GRACE)
            {
                break;
            }
            let timeout = match exited_at {
                Some(t) => DRAIN_GRACE.saturating_sub(t.elapsed()),
                None if killed => Duration::from_millis(100),
                None => {
                    // CPU time grows at most `cpus` times as fast as wall time: poll the
                    // cgroup no later than the limit could be reached.
                    let cpu_left = cpu_limit_ns.saturating_sub(cpu_used.unwrap_or(0));
                    let cpu_wait = Duration::from_nanos(cpu_left / cpus)
                        .clamp(Duration::from_millis(1), Duration::from_millis(250));
                    cpu_wait.min(wall_deadline.saturating_duration_since(now))
                }
            };
            let (out_ready, err_ready, init_done) = self.wait(exited_at.is_none(), timeout);
            let over_out = out_ready && self.out.read(&mut buf, step.output_bytes);
            let over_err = err_ready && self.err.read(&mut buf, step.output_bytes);
            if (over_out || over_err) && !killed {
                end.output_exceeded = true;
                // Past the init's exit the pipes just stop being read.
                if exited_at.is_none() {
                    self.kill();
                    killed = true;
                }
            }
            if init_done && exited_at.is_none() {
                exited_at = Some(Instant::now());
            }
        }
        let wall = exited_at.unwrap_or_else(Instant::now) - self.started;
        let status = loop {
            match waitpid(self.created.pid, None) {
                Err(nix::Error::EINTR) => continue,
                other => break other,
            }
        };
        // The program's own status, from the reaper; without one (the init was killed
        // at a limit, or the program never started), the init's.
        let program = self.program_status();
        match (program, status) {
            (Some(raw), _) if libc::WIFEXITED(raw) => end.exit_code = Some(libc::WEXITSTATUS(raw)),
            (Some(raw), _) if libc::WIFSIGNALED(raw) => end.signal = Some(libc::WTERMSIG(raw)),
            (_, Ok(WaitStatus::Exited(_, code))) => end.exit_code = Some(code),
            (_, Ok(WaitStatus::Signaled(_, sig, _))) => end.signal = Some(sig as i32),
            (_, other) => {
                return internal(&self.id, format!("wait for the init: {other:?}"));
            }
        }
        let mut r = ExecResult {
            wall_time_ms: wall.as_millis() as u64,
            exit_code: end.exit_code,
            signal: end.signal,
            ..Default::default()
        };
        if program.is_none() && !killed {
            // The init reports why the program could not be executed (not found, not an
            // executable, arguments too long, ...) in the state's exec.error, which
            // `start` read.
            r.message = self.exec_failure.take();
        }
        match self.cgroup.as_ref().map(|c| c.stats()) {
            Some(Ok(s)) => {
                let cpu_ns = s.cpu.map_or(0, |c| c.usage_total_ns);
                r.cpu_time_ms = cpu_ns / 1_000_000;
                if cpu_ns >= cpu_limit_ns {
                    end.cpu_exceeded = true;
                }
                if let Some(m) = s.memory {
                    r.memory_peak_bytes = m.peak.unwrap_or(m.usage);
                    end.oom_killed = m.oom_kill_count.unwrap_or(0) > 0;
                }
            }
            Some(Err(e)) => return internal(&self.id, format!("read the cgroup's usage: {e}")),
            None => {}
        }
        let compare = step.compare;
        let stdout = &self.out.data;
        r.verdict = Some(judge(&end, || {
            expected.is_some_and(|e| !same_output(stdout, e.as_bytes(), compare))
        }));
        r.set_stdout(&self.out.data, self.out.truncated);
        r.set_stderr(&self.err.data, self.err.truncated);
        r
    }

    /// Done with: what remains to remove.
    pub(super) fn finish(self) -> Finished {
        Finished {
            id: self.id,
            cgroup: self.cgroup,
            mount_ns: self.mount_ns,
        }
    }

    /// The wait status the reaper reported, if it did (the init has exited).
    fn program_status(&self) -> Option<libc::c_int> {
        let mut buf = [0u8; 4];
        match nix::unistd::read(&self.status, &mut buf) {
            Ok(4) => Some(libc::c_int::from_ne_bytes(buf)),
            _ => None,
        }
    }

    fn cpu_used(&self) -> Option<u64> {
        self.cgroup.as_ref()?.cpu_usage_ns().ok()
    }

    /// Kills the init; its pid namespace, so every process of the execution, goes too.
    fn kill(&self) {
        if let Err(e) = pidfd_send_signal(&self.created.pidfd, libc::SIGKILL)
            && e != nix::Error::ESRCH
        {
            tracing::warn!("run container {}: kill: {e}", self.id);
        }
    }

    /// Polls the open pipes (and the pidfd while `watch_init`).
    fn wait(&self, watch_init: bool, timeout: Duration) -> (bool, bool, bool) {
        let mut fds = Vec::with_capacity(3);
        let mut which = Vec::with_capacity(3);
        for (i, o) in [&self.out, &self.err].into_iter().enumerate() {
            if let Some(fd) = &o.fd {
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                which.push(i);
            }
        }
        if watch_init {
            fds.push(PollFd::new(self.created.pidfd.as_fd(), PollFlags::POLLIN));
            which.push(2);
        }
        let ms = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        if let Err(e) = poll(&mut fds, ms)
            && e != nix::Error::EINTR
        {
            tracing::warn!("run container {}: poll: {e}", self.id);
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut ready = [false; 3];
        for (fd, &i) in fds.iter().zip(&which) {
            ready[i] = fd.revents().is_some_and(|r| !r.is_empty());
        }
        (ready[0], ready[1], ready[2])
    }

    /// Kills and removes the container (its cgroup and state), and reaps its init. For
    /// a container whose init was not waited for ([`Execution::supervise`] does that):
    /// one that is discarded, or failed to start.
    pub(super) fn remove(&mut self, store: &Store) {
        self.kill();
        // The forced delete waits for the init to exit; it stays a zombie until reaped.
        if let Err(e) = ops::delete(store, &self.id, true) {
            tracing::error!("remove run container {}: {e}", self.id);
        }
        reap::reap_killed(&self.id, self.created.pid, &self.created.pidfd);
    }
}

/// An execution whose init was waited for: its container, to remove.
pub(super) struct Finished {
    id: String,
    cgroup: Option<Cgroup>,
    /// Dropped last: the container's mounts are released then.
    mount_ns: Option<OwnedFd>,
}

impl Finished {
    /// Removes the container. Its pid namespace ended with its init, so nothing of it
    /// runs and there is no state to read or status to check: its cgroup directories go,
    /// then its state directory. Should that fail (a process left in the cgroup), the
    /// runtime's forced delete does the rest. A container already gone was swept by the
    /// launcher (after another runner died), which is not an error.
    pub(super) fn remove(self, store: &Store) {
        let quick = match store.lock(&self.id) {
            Err(StateError::NotExist(_)) => Ok(()),
            Err(e) => Err(e.to_string()),
            Ok(lock) => self
                .cgroup
                .as_ref()
                .map_or(Ok(()), |cg| cg.delete().map_err(|e| e.to_string()))
                .and_then(|()| store.remove(lock).map_err(|e| e.to_string())),
        };
        if let Err(e) = quick {
            tracing::warn!(
                "remove run container {}: {e}; deleting it by force",
                self.id
            );
            if let Err(e) = ops::delete(store, &self.id, true) {
                tracing::error!("remove run container {}: {e}", self.id);
            }
        }
        drop(self.mount_ns);
    }
}

/// Opens a test's stdin file (written by the service, never a symlink).
pub(super) fn open_input(path: &Path) -> Result<OwnedFd, String> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", path.display()))
}

/// The CPUs this process may use (read once: it reads cgroup and affinity files).
fn cpus() -> u64 {
    static CPUS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()) as u64)
}

/// One output pipe and what was read of it.
struct Output {
    /// `None` at EOF.
    fd: Option<OwnedFd>,
    data: Vec<u8>,
    truncated: bool,
}

impl Output {
    fn new(fd: OwnedFd) -> Self {
        let _ = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        Output {
            fd: Some(fd),
            data: Vec::new(),
            truncated: false,
        }
    }

    fn closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Reads what is there; returns whether the cap was just passed. Past the cap the
    /// pipe is closed: a writer then gets `EPIPE` (and `SIGPIPE`).
    fn read(&mut self, buf: &mut [u8], cap: u64) -> bool {
        let Some(fd) = &self.fd else { return false };
        loop {
            match nix::unistd::read(fd, buf) {
                Ok(0) => {
                    self.fd = None;
                    return false;
                }
                Ok(n) => {
                    let room = (cap as usize).saturating_sub(self.data.len());
                    if n > room {
                        self.data.extend_from_slice(&buf[..room]);
                        self.truncated = true;
                        self.fd = None;
                        return true;
                    }
                    self.data.extend_from_slice(&buf[..n]);
                }
                Err(nix::Error::EINTR) => continue,
                Err(_) => return false,
            }
        }
    }
}
