//! The runner's children: the init of every container it creates (the runtime clones
//! it from the runner), and nothing else. Each is waited for by pid, by the runner:
//! - an execution's init when it has exited ([`Execution::supervise`]: the exit status
//!   is part of the result);
//! - the init of a container removed before or instead of running (a warm container
//!   discarded or that failed its claim, a failed start) here, once the removal has
//!   killed it: [`reap_killed`].
//!
//! An init that has not exited [`EXIT_WAIT`] after it was killed (stuck in the kernel)
//! is not waited for on the spot, which would stall the runner: it is kept, and reaped
//! once it exits, between runs ([`reap_late`]) or while the runner waits for a request
//! ([`wait_readable`], which looks every [`LATE_POLL`]). Only these known pids are ever
//! waited for, never `-1`: the status of a live execution's init is its result's.
//!
//! Processes that an init forks stay in its pid namespace, which ends with it: nothing
//! else can be reparented to the runner. A runner that dies leaves its children to the
//! launcher, a subreaper.
//!
//! [`Execution::supervise`]: super::execution::Execution::supervise

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::runtime::ops::wait_exit;

/// How long a killed init may take to exit before it is left for later.
const EXIT_WAIT: Duration = Duration::from_secs(10);

/// While late inits are left, how often an idle runner looks for their exit.
const LATE_POLL: Duration = Duration::from_secs(1);

/// A killed init that had not exited in time: its container's id, and its pid.
struct Late {
    id: String,
    pid: Pid,
}

thread_local! {
    /// The runner is single-threaded: this is every child it still has to reap, but for
    /// the inits of the executions and warm containers it holds.
    static LATE: RefCell<Vec<Late>> = const { RefCell::new(Vec::new()) };
}

/// Reaps the init `pid` (its pidfd `pidfd`) of container `id`, which was sent SIGKILL:
/// waits up to [`EXIT_WAIT`] for it to exit; past that, keeps it for [`reap_late`].
pub(super) fn reap_killed(id: &str, pid: Pid, pidfd: &OwnedFd) {
    if wait_exit(pidfd, EXIT_WAIT) && reaped(id, pid) {
        return;
    }
    tracing::warn!(
        "runner: the init {pid} of container {id} has not exited {EXIT_WAIT:?} after \
         SIGKILL; it is reaped when it does"
    );
    LATE.with_borrow_mut(|late| {
        late.push(Late {
            id: id.to_string(),
            pid,
        })
    });
}

/// Waits for `pid` without blocking; whether it is reaped (or not a child any more).
fn reaped(id: &str, pid: Pid) -> bool {
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return false,
            Err(nix::Error::EINTR) => continue,
            Ok(_) => return true,
            Err(e) => {
                tracing::error!("runner: wait for the init {pid} of container {id}: {e}");
                return true;
            }
        }
    }
}

/// Reaps the late inits that have exited by now; whether any is left.
pub(super) fn reap_late() -> bool {
    LATE.with_borrow_mut(|late| {
        late.retain(|l| !reaped(&l.id, l.pid));
        !late.is_empty()
    })
}

/// Blocks until `sock` is readable (or hung up), reaping late inits meanwhile.
pub(super) fn wait_readable(sock: &OwnedFd) {
    while reap_late() {
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(LATE_POLL).unwrap_or(PollTimeout::MAX);
        if matches!(poll(&mut fds, timeout), Ok(n) if n > 0) {
            return;
        }
    }
}
