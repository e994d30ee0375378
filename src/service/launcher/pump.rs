//! The monitor's loop: carry the container's stdout and stderr pipes into the capped
//! log files, and wait for the init to exit (its pidfd becomes readable), then reap it
//! and read the cgroup's OOM counter.
//!
//! The loop ends when the init has exited and both pipes are at EOF. Processes that
//! outlive the init (a container without its own pid namespace can leave some) may hold
//! the pipes open: the monitor then drains for [`DRAIN_GRACE`] more and stops.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitStatus, waitpid};

use super::files::{ExitRecord, LogSink};
use crate::runtime::create::Created;
use crate::runtime::linux::cgroups::{Cgroup, CgroupPath};
use crate::runtime::state::{Record, now_rfc3339};

/// How long to go on draining after the init has exited while a pipe stays open.
pub const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Read size: the pipes are drained in chunks of this many bytes.
const CHUNK: usize = 64 * 1024;

/// The read end of one pipe and the log it goes to.
pub struct Stream {
    /// `None` at EOF.
    fd: Option<OwnedFd>,
    pub sink: LogSink,
}

impl Stream {
    pub fn new(fd: OwnedFd, sink: LogSink) -> Self {
        Stream { fd: Some(fd), sink }
    }

    /// Reads one chunk into the log; at EOF (or on a read error) the stream closes.
    fn drain_once(&mut self, id: &str, buf: &mut [u8]) {
        let Some(fd) = &self.fd else { return };
        match nix::unistd::read(fd, buf) {
            Ok(0) => self.fd = None,
            Ok(n) => {
                if let Err(e) = self.sink.write(&buf[..n]) {
                    tracing::error!(
                        "container {id}: write {}: {e}; dropping output",
                        self.sink.name()
                    );
                }
            }
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
            Err(e) => {
                tracing::error!("container {id}: read {} pipe: {e}", self.sink.name());
                self.fd = None;
            }
        }
    }
}

/// Runs until the container is done; returns how its init ended.
pub fn run(streams: &mut [Stream; 2], created: &Created) -> ExitRecord {
    let id = created.record.id.as_str();
    let mut buf = vec![0u8; CHUNK];
    let mut exited: Option<(ExitRecord, Instant)> = None;
    loop {
        let timeout = match &exited {
            None => PollTimeout::NONE,
            Some(_) if streams.iter().all(|s| s.fd.is_none()) => break,
            Some((_, deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(
                        "container {id}: output still open {DRAIN_GRACE:?} after its init \
                         exited; no longer read"
                    );
                    break;
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
        };
        let (ready, init_done) = match wait(streams, created, exited.is_none(), timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("container {id}: poll: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        for (s, r) in streams.iter_mut().zip(ready) {
            if r {
                s.drain_once(id, &mut buf);
            }
        }
        if init_done {
            exited = Some((reap(created), Instant::now() + DRAIN_GRACE));
        }
    }
    match exited {
        Some((rec, _)) => rec,
        // Unreachable: the loop only breaks once the init has exited.
        None => reap(created),
    }
}

/// Polls the open streams (and the init's pidfd when `watch_init`); returns which
/// streams are readable (or hung up) and whether the init has exited.
fn wait(
    streams: &[Stream; 2],
    created: &Created,
    watch_init: bool,
    timeout: PollTimeout,
) -> nix::Result<([bool; 2], bool)> {
    let mut fds = Vec::with_capacity(3);
    let mut which = Vec::with_capacity(2);
    for (i, s) in streams.iter().enumerate() {
        if let Some(fd) = &s.fd {
            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            which.push(i);
        }
    }
    if watch_init {
        fds.push(PollFd::new(created.pidfd.as_fd(), PollFlags::POLLIN));
    }
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(e) => return Err(e),
    }
    let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
    let mut ready = [false; 2];
    for (fd, &i) in fds.iter().zip(&which) {
        ready[i] = is_ready(fd);
    }
    let init_done = watch_init && fds.last().is_some_and(is_ready);
    Ok((ready, init_done))
}

/// Collects the exit status of the exited init. The OOM counter is read first, while the
/// cgroup certainly exists (the runtime removes it on `delete`).
fn reap(created: &Created) -> ExitRecord {
    let finished_at = now_rfc3339();
    let oom_killed = oom_killed(&created.record);
    let status = loop {
        match waitpid(created.pid, None) {
            Err(nix::Error::EINTR) => continue,
            other => break other,
        }
    };
    let (exit_code, signal) = match status {
        Ok(WaitStatus::Exited(_, code)) => (Some(code), None),
        Ok(WaitStatus::Signaled(_, sig, _)) => (None, Some(sig as i32)),
        other => {
            tracing::error!(
                "container {}: wait for init {}: {other:?}",
                created.record.id,
                created.pid
            );
            (None, None)
        }
    };
    ExitRecord {
        exit_code,
        signal,
        oom_killed,
        finished_at,
    }
}

/// Whether the OOM killer killed a process of the container: v1 `memory.oom_control`
/// or v2 `memory.events`, `oom_kill`.
fn oom_killed(rec: &Record) -> bool {
    let count = CgroupPath::parse(Some(&rec.cgroup_path), &rec.id, rec.systemd_cgroup)
        .and_then(|p| Cgroup::open_only(&p, &["memory"]))
        .and_then(|cg| cg.oom_kill_count());
    match count {
        Ok(n) => n.unwrap_or(0) > 0,
        Err(e) => {
            // Usually a `delete --force` that removed the cgroup while the init died.
            tracing::debug!("container {}: read the OOM kill count: {e}", rec.id);
            false
        }
    }
}
