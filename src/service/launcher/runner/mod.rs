//! The runner: a process forked by the launcher that executes judged runs, one at a
//! time: for each, the run's plan (`plan.json` in the run's directory) step by step, one
//! fresh container per execution, then `result.json` there. The launcher keeps a runner
//! per run in flight and at most one more, and reuses idle ones in turn.
//!
//! Being the parent of every init it creates, the runner gets real exit statuses; being
//! single-threaded, it may call the runtime's `clone3`. For each execution it polls the
//! init's pidfd and the stdout and stderr pipes, reads the cgroup's CPU time, and kills
//! the init (so its whole pid namespace) at the first limit reached: CPU time, wall
//! time or output size. Memory limits are the kernel's (the cgroup's OOM counter).
//! Between runs, while no request waits, it makes the next run's network namespace
//! (`netns.rs`) and warm containers (`warm.rs`), and removes the containers that ran.
//!
//! This file: the runner process (its loop, fds, clean-up after a dead runner) and the
//! plan's steps; `execution.rs`: one container, from create to its measured result;
//! `reap.rs`: waiting for the inits of the containers removed without running.

mod execution;
mod netns;
mod reap;
mod warm;

use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::SigSet;
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use self::execution::{Execution, Finished, Loaded, Refusal, internal};
use super::error::LauncherError;
use super::monitor::{detach, fork_with, log_to};
use super::protocol::{
    MAX_PACKET, Outcome, RunRequest, decode, encode, packet_pair, recv_packet, send_packet,
};
use crate::runtime::ops;
use crate::runtime::state::Store;
use crate::service::runs::WARM_PREFIX;
use crate::service::runs::result::{
    ExecResult, PLAN_FILE, Plan, RESULT_FILE, RunResult, Status, StepPlan, StepResult,
};
use crate::service::runs::spec::STATUS_FD;
use crate::service::runs::verdict::Verdict;

/// Forks a runner. It executes the runs the launcher sends it on a `SOCK_SEQPACKET`
/// socket, one at a time: a [`RunRequest`] in, an [`Outcome`] out (`Ran` once
/// `result.json` is written, or the error). It exits when the launcher closes its end.
/// Returns its pid and the launcher's end of the socket.
///
/// A runner lives for many runs: forking one per run cost more CPU than the rest of a
/// trivial run's bookkeeping (its copy of the launcher faults in every page of code it
/// runs, and tears its memory down at exit).
pub fn spawn(root: &Path, blocked: &SigSet) -> Result<(Pid, OwnedFd), LauncherError> {
    let (ours, theirs) = packet_pair().map_err(LauncherError::sys("socketpair for a runner"))?;
    fork_with("a runner", ours, theirs, |sock| {
        if let Err(e) = detach(sock.as_raw_fd(), blocked, c"corral-runner") {
            let _ = send_outcome(&sock, &Outcome::error(&e));
            return 1;
        }
        // fd 3 is where each container's reaper gets its status pipe: hold it first, so
        // that no fd opened below (the log's) lands on it.
        let sock = match reserve_status_fd(sock) {
            Ok(s) => s,
            Err((sock, e)) => {
                let _ = send_outcome(&sock, &Outcome::error(&e));
                return 1;
            }
        };
        // fds 0-2 become each container's stdio in turn: the runner's own messages go
        // to a copy of the launcher's stderr.
        let _log = std::io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(|fd| log_to(std::fs::File::from(fd)));
        serve(root, &sock);
        0
    })
}

/// The runner's loop: one run per request, until the launcher is gone.
fn serve(root: &Path, sock: &OwnedFd) {
    let store = Store::new(root);
    let mut buf = vec![0u8; MAX_PACKET + 1];
    let mut spares = netns::Spares::new();
    let mut backlog = Backlog {
        finished: Vec::new(),
        trimmed: false,
        warm: warm::Pool::new(root),
    };
    loop {
        // Between runs: the work the last one left, a piece at a time while no request
        // waits (a request comes first: this work is off every request's path).
        while !readable(sock) && backlog.step(&store, &mut spares) {}
        if backlog.finished.len() > MAX_FINISHED {
            backlog.remove_all(&store);
        }
        reap::wait_readable(sock);
        let n = match recv_packet(sock.as_fd(), &mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => {
                backlog.remove_all(&store);
                return;
            }
            Err(e) => {
                tracing::error!("runner: receive a request: {e}");
                backlog.remove_all(&store);
                return;
            }
        };
        let mut session = Session {
            store: &store,
            spares: &mut spares,
            finished: &mut backlog.finished,
            warm: &mut backlog.warm,
            steps: Vec::new(),
        };
        let outcome = match decode::<RunRequest>(&buf[..n]) {
            Ok(r) => match session.execute(&r.dir) {
                Ok(()) => Outcome::Ran,
                Err(e) => Outcome::error(&e),
            },
            Err(e) => Outcome::error(&e),
        };
        let steps = std::mem::take(&mut session.steps);
        let sent = send_outcome(sock, &outcome);
        backlog.warm.remember(&steps);
        // The answer does not wait for the removal of the run's (exited) containers: they
        // are in the backlog.
        backlog.trimmed = false;
        if let Err(e) = sent {
            tracing::error!("runner: {e}");
            backlog.remove_all(&store);
            return;
        }
    }
}

/// Whether a request (or the launcher's hang-up) waits on `sock`.
fn readable(sock: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Finished containers a runner may leave for later (a run's are removed just after
/// its answer when no request waits): past this many they are removed at once.
const MAX_FINISHED: usize = 512;

/// What runs leave for the runner to do between them.
struct Backlog {
    /// Containers that ran (their inits were reaped), to remove.
    finished: Vec<Finished>,
    /// Whether the heap was trimmed since the last run.
    trimmed: bool,
    /// Warm containers for the next run.
    warm: warm::Pool,
}

impl Backlog {
    /// Does one piece of work: a spare network namespace for the next run first, then
    /// its warm containers, then a removal, then the heap. Returns false when nothing was
    /// left to do.
    fn step(&mut self, store: &Store, spares: &mut netns::Spares) -> bool {
        reap::reap_late();
        if spares.wants(SPARE_NETNS) {
            spares.fill(SPARE_NETNS);
        } else if self.warm.step(store, std::process::id()) {
        } else if let Some(x) = self.finished.pop() {
            x.remove(store);
        } else if !self.trimmed {
            // Each container's init is a copy of this process: give back what the run
            // freed (output buffers), so that the next clone has fewer pages to map.
            // SAFETY: malloc_trim only returns free heap memory to the kernel.
            unsafe { libc::malloc_trim(0) };
            self.trimmed = true;
        } else {
            return false;
        }
        true
    }

    fn remove_all(&mut self, store: &Store) {
        for x in self.finished.drain(..) {
            x.remove(store);
        }
        self.warm.remove_all(store);
    }
}

/// Network namespaces a runner keeps ready between runs: one serves a run of a single
/// execution entirely off the request's path; the executions of a larger run past the
/// first get theirs from the clone.
const SPARE_NETNS: usize = 1;

fn send_outcome(sock: &OwnedFd, outcome: &Outcome) -> Result<(), LauncherError> {
    let bytes = encode(outcome)?;
    send_packet(sock.as_fd(), &bytes).map_err(LauncherError::sys("send the outcome of a run"))
}

/// Moves `sock` above fd 3 (if it is fd 3) and holds fd 3 with `/dev/null`, so that
/// no fd the runner opens later lands on it.
fn reserve_status_fd(sock: OwnedFd) -> Result<OwnedFd, (OwnedFd, LauncherError)> {
    let sock = if sock.as_raw_fd() == STATUS_FD {
        match nix::fcntl::fcntl(&sock, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(STATUS_FD + 1)) {
            Ok(fd) => {
                drop(sock);
                // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
                unsafe { OwnedFd::from_raw_fd(fd) }
            }
            Err(e) => return Err((sock, LauncherError::sys("move the runner's socket")(e))),
        }
    } else {
        sock
    };
    match nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty()) {
        Ok(null) => {
            if null.as_raw_fd() != STATUS_FD {
                // SAFETY: fd 3 is free (no owner closes it later); it stays open, on
                // /dev/null, for the runner's lifetime.
                unsafe { libc::dup2(null.as_raw_fd(), STATUS_FD) };
            } else {
                // The open landed on fd 3 itself: that is the reservation; never close it.
                let _ = null.into_raw_fd();
            }
            Ok(sock)
        }
        Err(e) => Err((sock, LauncherError::sys("open /dev/null")(e))),
    }
}

/// One run's executions: the state store, the spare network namespaces, the warm
/// containers, and where the containers that ran (exited and waited for) go: the
/// runner's [`Backlog`].
struct Session<'a> {
    store: &'a Store,
    spares: &'a mut netns::Spares,
    finished: &'a mut Vec<Finished>,
    warm: &'a mut warm::Pool,
    /// The configs of the steps that ran, in order (what to keep warm next).
    steps: Vec<Loaded>,
}

impl Session<'_> {
    /// Executes the plan in `run_dir`; writes `result.json`.
    fn execute(&mut self, run_dir: &Path) -> Result<(), LauncherError> {
        let started = Instant::now();
        let plan: Plan = {
            let path = run_dir.join(PLAN_FILE);
            let bytes = std::fs::read(&path)
                .map_err(LauncherError::io(format!("read {}", path.display())))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| LauncherError::Protocol(format!("{}: {e}", path.display())))?
        };
        let null = nix::fcntl::open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(LauncherError::sys("open /dev/null"))?;
        let mut steps = Vec::with_capacity(plan.steps.len());
        let mut failed: Option<String> = None;
        for (i, step) in plan.steps.iter().enumerate() {
            if let Some(reason) = &failed {
                steps.push(StepResult {
                    name: step.name.clone(),
                    status: Status::Skipped,
                    reason: Some(reason.clone()),
                    results: Vec::new(),
                });
                continue;
            }
            let results = self.run_step(&plan, i, step, &null);
            let bad = results.iter().find(|r| r.verdict() != Verdict::Ok);
            let status = match bad {
                Some(r) => {
                    failed = Some(format!(
                        "step {:?} failed: {}",
                        step.name,
                        r.verdict().as_str()
                    ));
                    Status::Failed
                }
                None => Status::Ok,
            };
            steps.push(StepResult {
                name: step.name.clone(),
                status,
                reason: None,
                results,
            });
        }
        let status = if failed.is_some() {
            Status::Failed
        } else {
            Status::Ok
        };
        let result = RunResult {
            id: plan.id.clone(),
            image: plan.image.clone(),
            status,
            steps,
            wall_time_ms: started.elapsed().as_millis() as u64,
        };
        let bytes = serde_json::to_vec(&result)
            .map_err(|e| LauncherError::Protocol(format!("encode the result: {e}")))?;
        crate::runtime::atomic::write_atomic(&run_dir.join(RESULT_FILE), &bytes, 0o600).map_err(
            LauncherError::io(format!("write {RESULT_FILE} in {}", run_dir.display())),
        )
    }

    fn run_step(
        &mut self,
        plan: &Plan,
        index: usize,
        step: &StepPlan,
        null: &OwnedFd,
    ) -> Vec<ExecResult> {
        let id = |test: Option<usize>| match test {
            Some(t) => format!("run-{}-{index}-{t}", plan.id),
            None => format!("run-{}-{index}", plan.id),
        };
        let bundle = match execution::load(&step.bundle) {
            Ok(b) => b,
            Err(message) => return vec![internal(&id(None), message)],
        };
        self.steps.push(bundle.clone());
        match &step.tests {
            None => {
                vec![self.execute_one(&id(None), step, &bundle, step.stdin.as_deref(), None, null)]
            }
            Some(tests) => tests
                .iter()
                .enumerate()
                .map(|(t, test)| {
                    let mut r = self.execute_one(
                        &id(Some(t)),
                        step,
                        &bundle,
                        test.stdin.as_deref(),
                        test.expected_stdout.as_deref(),
                        null,
                    );
                    r.test = Some(t);
                    r
                })
                .collect(),
        }
    }

    /// One execution in a fresh container; never fails: what goes wrong is the result.
    fn execute_one(
        &mut self,
        id: &str,
        step: &StepPlan,
        bundle: &Loaded,
        stdin: Option<&Path>,
        expected: Option<&str>,
        null: &OwnedFd,
    ) -> ExecResult {
        let t0 = Instant::now();
        let created = match self.warm.claim(self.store, &bundle.1, stdin) {
            Some(claimed) => claimed,
            None => {
                let netns = self.spares.take();
                Execution::create(self.store, id, bundle, stdin, null, netns.as_ref())
            }
        };
        match created {
            Ok(mut x) => {
                let t1 = Instant::now();
                let r = x.supervise(step, expected);
                tracing::debug!(
                    "run container {id}: create+start {:?}, run {:?}",
                    t1 - t0,
                    t1.elapsed()
                );
                self.finished.push(x.finish());
                r
            }
            Err(Refusal::Program(message)) => ExecResult {
                verdict: Some(Verdict::RuntimeError),
                message: Some(message),
                ..Default::default()
            },
            Err(Refusal::Internal(message)) => internal(id, message),
        }
    }
}

/// Removes the run containers left by a runner that died: those of its run in flight,
/// which nothing else would kill at their limits, and those of its earlier runs that
/// it had not yet removed. Every run container whose run is not in `in_flight` (the
/// run directories of the live runners' runs) is such a leftover: a live runner
/// answers a run only once each of its containers is removed or has its init waited
/// for, and a swept container of the latter kind is one the runner finds gone.
pub fn sweep(root: &Path, in_flight: &[&Path]) {
    let runs: Vec<String> = in_flight
        .iter()
        .filter_map(|dir| dir.file_name()?.to_str())
        .map(|run| format!("run-{run}-"))
        .collect();
    remove_where(root, "left by a runner that died", |id| {
        id.starts_with("run-")
            && !id.starts_with(WARM_PREFIX)
            && !runs.iter().any(|run| id.starts_with(run.as_str()))
    });
}

/// Removes the warm containers of the runner `pid`, which is gone: they wait for a run
/// that will not come.
pub fn forget(root: &Path, pid: Pid) {
    let prefix = warm::prefix(pid.as_raw() as u32);
    remove_where(root, "of a runner that is gone", |id| {
        id.starts_with(&prefix)
    });
}

/// Force-deletes the containers of the store at `root` whose ids `pick` chooses.
fn remove_where(root: &Path, whose: &str, pick: impl Fn(&str) -> bool) {
    let store = Store::new(root);
    let ids = match store.ids() {
        Ok(ids) => ids,
        Err(e) => {
            tracing::error!("list the containers {whose} to remove them: {e}");
            return;
        }
    };
    for id in ids.into_iter().filter(|id| pick(id)) {
        if let Err(e) = ops::delete(&store, &id, true) {
            tracing::error!("remove container {id} {whose}: {e}");
        }
    }
}

/// The run directory must be a plain absolute path inside `data`.
pub fn check_dir(data: &Path, dir: &Path) -> Result<PathBuf, LauncherError> {
    let plain = dir.components().all(|c| {
        matches!(
            c,
            std::path::Component::RootDir | std::path::Component::Normal(_)
        )
    });
    if !plain || !dir.starts_with(data) || dir == data {
        return Err(LauncherError::bad_request(format!(
            "run dir {}: not a plain absolute path inside {}",
            dir.display(),
            data.display()
        )));
    }
    Ok(dir.to_path_buf())
}
