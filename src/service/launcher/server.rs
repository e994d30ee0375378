//! The launcher process, `corral launcher --root <state root> --data <data dir>`,
//! started by the service with its end of a `SOCK_SEQPACKET` socketpair as fd 3.
//!
//! It stays single-threaded (it forks), and runs one `poll` loop over: the service's
//! socket (requests; EOF means the service is gone, and the launcher exits), a signalfd
//! for `SIGCHLD` (it reaps its children, the monitors and runners), the report pipe of
//! every create in flight (each create runs in its own monitor, so creates overlap), and
//! the socket of every runner executing a run (a run goes to an idle runner, or to a new
//! one: runs overlap too; the service bounds how many).
//!
//! What survives what: the launcher holds nothing that a container needs. When it exits
//! (or is killed), the monitors, which are in sessions of their own, go on; they are
//! reparented to the host's init (or the nearest subreaper), which reaps them.
//!
//! Reaping: the launcher is a child subreaper, so that nothing it starts ends up
//! anywhere else while it lives: the inits of a runner or a monitor that died (killed,
//! or crashed) are reparented to it, and it reaps them with its own children. Its
//! SIGCHLD handler reaps every child that has exited (`waitpid(-1)`): no exit status is
//! taken from anyone that way, as nothing in the launcher waits for one by pid (monitors
//! and runners report on their pipe or socket; an orphaned init's status is nobody's;
//! a hook that a forced delete runs is waited for before the delete returns, with no
//! reaping in between; `Pool::close` waits by pid only to delay the exit, and takes
//! an `ECHILD` as gone).
//! Runners and monitors do wait for their own children by pid: the subreaper flag is
//! not inherited, and a child's status goes to its parent only.

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::sockopt;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::error::{ErrorKind, LauncherError};
use super::pool::Pool;
use super::protocol::{
    CreateRequest, MAX_PACKET, Message, Op, Outcome, PROTOCOL_VERSION, Request, RunRequest, decode,
    encode, recv_packet, send_packet,
};
use super::{monitor, runner};

/// The fd on which the launcher finds its socket to the service.
pub const SERVICE_FD: RawFd = 3;

/// Runs the launcher until the service closes its socket.
pub fn run(root: &Path, data: &Path) -> Result<(), LauncherError> {
    ensure_single_threaded()?;
    let sock = take_service_socket()?;
    let root = std::path::absolute(root)
        .map_err(LauncherError::io(format!("resolve {}", root.display())))?;
    // Lexically absolute, not canonical: the service builds the containers' data dirs
    // by joining onto the path it passed.
    let data = std::path::absolute(data)
        .map_err(LauncherError::io(format!("resolve {}", data.display())))?;
    std::fs::create_dir_all(&data)
        .map_err(LauncherError::io(format!("create {}", data.display())))?;
    // Hold no directory of the service's: monitors inherit the cwd for their lifetime.
    nix::unistd::chdir("/").map_err(LauncherError::sys("chdir /"))?;
    // Whatever a runner or a monitor leaves behind when it dies is reparented here, and
    // reaped (see `Server::reap`), rather than to the host's init.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(LauncherError::sys("prctl(PR_SET_CHILD_SUBREAPER)"))?;
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGCHLD);
    blocked
        .thread_block()
        .map_err(LauncherError::sys("block SIGCHLD"))?;
    let sigfd = SignalFd::with_flags(&blocked, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(LauncherError::sys("signalfd for SIGCHLD"))?;
    let mut server = Server {
        run_root: crate::service::runs::container_root(&data),
        pool: Pool::new(&root, &data),
        root,
        data,
        sock,
        sigfd,
        blocked,
        pending: Vec::new(),
        runners: Vec::new(),
    };
    server.send(&Message::Hello {
        version: PROTOCOL_VERSION,
        pid: std::process::id() as i32,
    })?;
    server.serve()
}

/// A create in flight: its monitor has not reported yet.
struct Pending {
    seq: u64,
    id: String,
    monitor: Pid,
    report: OwnedFd,
    buf: Vec<u8>,
}

/// A runner process (see [`runner::spawn`]) and the run it executes, if any.
struct Runner {
    pid: Pid,
    sock: OwnedFd,
    /// `(seq, run dir)` of the run in progress.
    busy: Option<(u64, PathBuf)>,
    /// When it last answered (or was spawned): after answering, a runner does the work
    /// its run left and makes warm containers for the next one.
    idle_since: std::time::Instant,
}

/// How long a runner takes, after answering, to be ready for the next run (its warm
/// containers made): a run goes to a runner idle for longer, when there is one.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(10);

struct Server {
    root: PathBuf,
    /// The state root of run containers (in the runs tmpfs), the runners' store.
    run_root: PathBuf,
    data: PathBuf,
    sock: OwnedFd,
    sigfd: SignalFd,
    blocked: SigSet,
    pending: Vec<Pending>,
    runners: Vec<Runner>,
    /// Warm containers for creates from images.
    pool: Pool,
}

/// What woke the launcher up (see [`Server::wait`]).
#[derive(Default)]
struct Ready {
    from_service: bool,
    child_exited: bool,
    /// Indexes of readable report pipes.
    reports: Vec<usize>,
    /// Indexes of runners with something to say (or gone).
    runners: Vec<usize>,
    /// Indexes of warm monitors with something to say (or gone).
    warm: Vec<usize>,
}

impl Server {
    fn serve(&mut self) -> Result<(), LauncherError> {
        let mut buf = vec![0u8; MAX_PACKET + 1];
        loop {
            let Some(ready) = self.wait()? else {
                continue;
            };
            if ready.child_exited {
                self.reap();
            }
            // Back to front, as below.
            for i in ready.warm.into_iter().rev() {
                if let Some((seq, outcome)) = self.pool.on_ready(i, &mut buf) {
                    self.reply(seq, outcome)?;
                    self.pool.answered(seq, &self.blocked);
                }
            }
            for i in ready.runners.into_iter().rev() {
                self.on_runner(i, &mut buf)?;
            }
            // Back to front, so that removing one does not shift the others.
            for i in ready.reports.into_iter().rev() {
                if let Some(outcome) = read_report(&mut self.pending[i]) {
                    let p = self.pending.swap_remove(i);
                    self.reply(p.seq, outcome)?;
                }
            }
            if ready.from_service {
                match recv_packet(self.sock.as_fd(), &mut buf) {
                    Ok(Some(n)) => self.on_request(&buf[..n])?,
                    Ok(None) => {
                        self.pool.close();
                        return Ok(());
                    }
                    Err(nix::Error::EMSGSIZE) => {
                        tracing::warn!("dropped a request larger than {MAX_PACKET} bytes");
                    }
                    Err(e) => return Err(LauncherError::sys("receive from the service")(e)),
                }
            }
        }
    }

    /// Waits for work; `None` when interrupted.
    fn wait(&self) -> Result<Option<Ready>, LauncherError> {
        let mut fds = vec![
            PollFd::new(self.sock.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
        ];
        fds.extend(
            self.pending
                .iter()
                .map(|p| PollFd::new(p.report.as_fd(), PollFlags::POLLIN)),
        );
        // Every runner: a busy one answers; an idle one that goes away leaves warm
        // containers to remove.
        fds.extend(
            self.runners
                .iter()
                .map(|r| PollFd::new(r.sock.as_fd(), PollFlags::POLLIN)),
        );
        fds.extend(self.pool.fds());
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => return Ok(None),
            Err(e) => return Err(LauncherError::sys("poll")(e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        let at = |first: usize, n: usize| (0..n).filter(|&i| ready[first + i]).collect();
        let first_runner = 2 + self.pending.len();
        let first_warm = first_runner + self.runners.len();
        Ok(Some(Ready {
            from_service: ready[0],
            child_exited: ready[1],
            reports: at(2, self.pending.len()),
            runners: at(first_runner, self.runners.len()),
            warm: at(first_warm, self.pool.len()),
        }))
    }

    fn on_request(&mut self, bytes: &[u8]) -> Result<(), LauncherError> {
        let req: Request = match decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                // Answer what can be answered, so that the caller does not wait forever.
                let seq = serde_json::from_slice::<serde_json::Value>(bytes)
                    .ok()
                    .and_then(|v| v.get("seq")?.as_u64());
                tracing::warn!("bad request: {e}");
                return match seq {
                    Some(seq) => self.reply(seq, Outcome::error(&e)),
                    None => Ok(()),
                };
            }
        };
        match req.op {
            Op::Ping => self.reply(req.seq, Outcome::Pong),
            Op::Run(r) => {
                let dispatched =
                    runner::check_dir(&self.data, &r.dir).and_then(|dir| self.dispatch(dir));
                match dispatched {
                    Ok((i, dir)) => {
                        self.runners[i].busy = Some((req.seq, dir));
                        Ok(())
                    }
                    Err(e) => self.reply(req.seq, Outcome::error(&e)),
                }
            }
            Op::Claim(c) => match self.check_data_dir(&c.data_dir) {
                Ok(()) if !c.image_rootfs.is_absolute() => self.reply(
                    req.seq,
                    Outcome::error(&LauncherError::bad_request(format!(
                        "image rootfs {}: not an absolute path",
                        c.image_rootfs.display()
                    ))),
                ),
                Ok(()) => {
                    if self.pool.claim(req.seq, &c, &self.blocked) {
                        Ok(())
                    } else {
                        self.reply(req.seq, Outcome::NotWarm)
                    }
                }
                Err(e) => self.reply(req.seq, Outcome::error(&e)),
            },
            Op::Create(c) => {
                let spawned = self
                    .check(&c)
                    .and_then(|()| monitor::spawn(&self.root, &c, &self.blocked));
                match spawned {
                    Ok((monitor, report)) => {
                        self.pending.push(Pending {
                            seq: req.seq,
                            id: c.id,
                            monitor,
                            report,
                            buf: Vec::new(),
                        });
                        Ok(())
                    }
                    Err(e) => self.reply(req.seq, Outcome::error(&e)),
                }
            }
        }
    }

    /// Sends the run in `dir` to an idle runner, or to a new one; returns its index.
    ///
    /// The idle runner that answered longest ago is chosen: it has had the most time to
    /// make its warm containers. When every idle runner answered less than [`SETTLE`]
    /// ago, and fewer than two runners are idle, a new runner is spawned instead, so
    /// that runners take turns (at most one more runner than runs in flight). An idle
    /// runner that is gone (the send fails) is dropped.
    fn dispatch(&mut self, dir: PathBuf) -> Result<(usize, PathBuf), LauncherError> {
        let bytes = encode(&RunRequest { dir: dir.clone() })?;
        let now = std::time::Instant::now();
        loop {
            let idle = || self.runners.iter().filter(|r| r.busy.is_none());
            let Some(i) = (0..self.runners.len())
                .filter(|&i| self.runners[i].busy.is_none())
                .min_by_key(|&i| self.runners[i].idle_since)
            else {
                break;
            };
            let settling = now.duration_since(self.runners[i].idle_since) < SETTLE;
            if settling && idle().count() < 2 {
                break;
            }
            match send_packet(self.runners[i].sock.as_fd(), &bytes) {
                Ok(()) => return Ok((i, dir)),
                Err(e) => {
                    let gone = self.runners.swap_remove(i);
                    tracing::warn!("runner {} is gone ({e}); using another", gone.pid);
                    self.runner_gone(gone.pid);
                }
            }
        }
        let (pid, sock) = runner::spawn(&self.run_root, &self.blocked)?;
        send_packet(sock.as_fd(), &bytes).map_err(LauncherError::sys(format!(
            "send a run to the new runner {pid}"
        )))?;
        self.runners.push(Runner {
            pid,
            sock,
            busy: None,
            idle_since: now,
        });
        Ok((self.runners.len() - 1, dir))
    }

    /// Relays what runner `i` sent (the outcome of its run); a runner that exited
    /// instead is dropped, its warm containers removed, and its run (if it had one)
    /// answered with an error.
    fn on_runner(&mut self, i: usize, buf: &mut [u8]) -> Result<(), LauncherError> {
        let outcome = match recv_packet(self.runners[i].sock.as_fd(), buf) {
            Ok(Some(n)) => Some(decode(&buf[..n]).unwrap_or_else(|e| Outcome::error(&e))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("receive from runner {}: {e}", self.runners[i].pid);
                None
            }
        };
        match outcome {
            Some(outcome) => {
                self.runners[i].idle_since = std::time::Instant::now();
                match self.runners[i].busy.take() {
                    Some((seq, _)) => self.reply(seq, outcome),
                    None => Ok(()),
                }
            }
            None => {
                let gone = self.runners.swap_remove(i);
                self.runner_gone(gone.pid);
                match gone.busy {
                    Some((seq, dir)) => self.reply(
                        seq,
                        internal(format!(
                            "the runner (pid {}) of the run in {} exited without reporting",
                            gone.pid,
                            dir.display()
                        )),
                    ),
                    None => Ok(()),
                }
            }
        }
    }

    /// Removes what the runner `pid`, which is gone (and no longer in `runners`), left:
    /// its warm containers and every run container no live runner's run owns.
    fn runner_gone(&self, pid: Pid) {
        runner::forget(&self.run_root, pid);
        let in_flight: Vec<&Path> = self
            .runners
            .iter()
            .filter_map(|r| r.busy.as_ref().map(|(_, dir)| dir.as_path()))
            .collect();
        runner::sweep(&self.run_root, &in_flight);
    }

    /// The bundle must be absolute (the launcher's cwd is `/`, not the service's), and
    /// the data directory strictly inside `--data`, without `.` or `..`.
    fn check(&self, c: &CreateRequest) -> Result<(), LauncherError> {
        if !c.bundle.is_absolute() {
            return Err(LauncherError::bad_request(format!(
                "bundle {}: not an absolute path",
                c.bundle.display()
            )));
        }
        self.check_data_dir(&c.data_dir)
    }

    fn check_data_dir(&self, dir: &Path) -> Result<(), LauncherError> {
        let plain = dir
            .components()
            .all(|x| matches!(x, Component::RootDir | Component::Normal(_)));
        if !plain || !dir.starts_with(&self.data) || dir == self.data {
            return Err(LauncherError::bad_request(format!(
                "data dir {}: not a plain absolute path inside {}",
                dir.display(),
                self.data.display()
            )));
        }
        Ok(())
    }

    fn reply(&self, seq: u64, outcome: Outcome) -> Result<(), LauncherError> {
        self.send(&Message::Reply { seq, outcome })
    }

    fn send(&self, msg: &Message) -> Result<(), LauncherError> {
        let bytes = encode(msg)?;
        send_packet(self.sock.as_fd(), &bytes).map_err(LauncherError::sys("send to the service"))
    }

    /// Reaps every exited child: monitors and runners, and the orphans reparented to the
    /// launcher (the inits of a runner or monitor that died). Monitors exit 0 once they
    /// wrote `exit.json` (or reported a failed create), runners once the launcher's
    /// socket closes; anything else is worth a line in the log. SIGCHLDs coalesce, so
    /// one wake-up reaps all there are.
    fn reap(&self) {
        while let Ok(Some(_)) = self.sigfd.read_signal() {}
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(nix::Error::ECHILD) => return,
                Ok(WaitStatus::Exited(_, 0)) => {}
                Ok(WaitStatus::Exited(pid, code)) => {
                    tracing::warn!(
                        "child {pid} (monitor, runner or orphan) exited with code {code}"
                    );
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    tracing::warn!("child {pid} (monitor, runner or orphan) killed by {sig}");
                }
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    tracing::warn!("waitpid: {e}");
                    return;
                }
            }
        }
    }
}

/// Reads what the monitor has written; at EOF returns its outcome.
fn read_report(p: &mut Pending) -> Option<Outcome> {
    let mut chunk = [0u8; 4096];
    loop {
        match nix::unistd::read(&p.report, &mut chunk) {
            Ok(0) => break,
            Ok(n) if p.buf.len() + n <= MAX_PACKET => p.buf.extend_from_slice(&chunk[..n]),
            Ok(_) => {
                return Some(internal(format!(
                    "the monitor of container {} sent a report larger than {MAX_PACKET} bytes",
                    p.id
                )));
            }
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => return None,
            Err(e) => {
                return Some(internal(format!(
                    "read the report of the monitor of container {}: {e}",
                    p.id
                )));
            }
        }
    }
    if p.buf.is_empty() {
        return Some(internal(format!(
            "the monitor of container {} (pid {}) exited without reporting",
            p.id, p.monitor
        )));
    }
    Some(decode(&p.buf).unwrap_or_else(|e| Outcome::error(&e)))
}

fn internal(message: String) -> Outcome {
    Outcome::Error {
        kind: ErrorKind::Internal,
        message,
    }
}

/// The launcher forks: it must have no other thread (one could hold a lock that the
/// child then waits for forever).
fn ensure_single_threaded() -> Result<(), LauncherError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(LauncherError::io("read /proc/self/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    match threads {
        Some(1) => Ok(()),
        other => Err(LauncherError::Setup(format!(
            "must be single-threaded to fork, but has {other:?} threads"
        ))),
    }
}

/// Fd 3, checked to be a `SOCK_SEQPACKET` socket, made close-on-exec.
fn take_service_socket() -> Result<OwnedFd, LauncherError> {
    let not_started = |why: String| {
        LauncherError::Setup(format!(
            "fd {SERVICE_FD}: {why} (corral launcher is started by corral serve)"
        ))
    };
    // SAFETY: F_GETFD on a plain fd number only reads its flags.
    if unsafe { libc::fcntl(SERVICE_FD, libc::F_GETFD) } < 0 {
        return Err(not_started("not open".into()));
    }
    // SAFETY: fd 3 is open (checked above) and was handed to this process by the service
    // to own; nothing else in this process opened it or will close it.
    let fd = unsafe { OwnedFd::from_raw_fd(SERVICE_FD) };
    match nix::sys::socket::getsockopt(&fd, sockopt::SockType) {
        Ok(nix::sys::socket::SockType::SeqPacket) => {}
        Ok(other) => return Err(not_started(format!("a {other:?} socket, not SeqPacket"))),
        Err(e) => return Err(not_started(format!("not a socket ({e})"))),
    }
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(LauncherError::sys("set fd 3 close-on-exec"))?;
    Ok(fd)
}
