//! Freezing, thawing and signalling every process of a container's cgroup.
//!
//! The v1 freezer is driven through cgroups-rs's `FreezerController` (its v1 file
//! handling is right). v2 is ours: cgroups-rs reads a v2 cgroup's state from
//! `cgroup.freeze`, which is only the *requested* state; whether the cgroup is actually
//! frozen is `frozen` in `cgroup.events`.

use std::path::Path;
use std::time::{Duration, Instant};

use cgroups_rs::FreezerState;
use cgroups_rs::fs::freezer::FreezerController;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::cgroup::Cgroup;
use super::error::{CgroupError, RsContext};
use super::fsutil;

/// How long a v2 freeze may take to settle before it is reported as failed (runc: 10 s).
const V2_FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// v1 `FREEZING` retries (runc's empirically chosen numbers).
const V1_FREEZE_TRIES: u32 = 1000;

#[derive(Clone, Copy)]
enum Freezer<'a> {
    V1(&'a Path),
    V2(&'a Path),
}

impl Cgroup {
    /// The v1 freezer hierarchy if mounted; otherwise the cgroup2 core freezer (also on a
    /// hybrid host, where `cgroup.freeze` exists in the unified mount).
    fn freezer(&self) -> Result<Freezer<'_>, CgroupError> {
        if let Some(d) = self.v1_dir("freezer") {
            return Ok(Freezer::V1(d));
        }
        match self.unified.as_deref() {
            Some(d) => Ok(Freezer::V2(d)),
            None => Err(CgroupError::missing(
                "freeze",
                "freezer",
                "no v1 freezer hierarchy and no cgroup2 mount",
            )),
        }
    }

    /// Freezes every process; returns once the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            Freezer::V1(d) => freeze_v1(d),
            Freezer::V2(d) => freeze_v2(d),
        }
    }

    pub fn thaw(&self) -> Result<(), CgroupError> {
        match self.freezer()? {
            Freezer::V1(d) => v1_ctl(d).thaw().rs_ctx(d, &"THAWED"),
            Freezer::V2(d) => fsutil::write(&d.join("cgroup.freeze"), "0"),
        }
    }

    /// Whether the cgroup is frozen (a v1 cgroup still `FREEZING` is not).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.freezer()? {
            Freezer::V1(d) => Ok(matches!(
                v1_ctl(d).state().rs_read(d)?,
                FreezerState::Frozen
            )),
            Freezer::V2(d) => Ok(fsutil::read_keyed(&d.join("cgroup.events"), "frozen")? == 1),
        }
    }

    /// Sends `sig` to every process of the cgroup.
    ///
    /// SIGKILL uses `cgroup.kill` where the kernel has it (5.14+, in V2 mode and in the
    /// unified mount of a hybrid host): one write, no race with forks. Otherwise the
    /// cgroup is frozen (when not already) so that nothing forks in between, each pid is
    /// signalled, and it is thawed again. A cgroup that was already frozen (a paused
    /// container) stays frozen, except for SIGKILL, which needs the tasks to run to die.
    /// A cgroup that does not exist (any more) has nothing to signal.
    pub fn kill_all(&self, sig: Signal) -> Result<(), CgroupError> {
        if !self.primary_dir()?.exists() {
            return Ok(());
        }
        if sig == Signal::SIGKILL
            && let Some(kill_file) = self
                .unified
                .as_deref()
                .map(|d| d.join("cgroup.kill"))
                .filter(|f| f.exists())
        {
            fsutil::write(&kill_file, "1")?;
            // A v1-frozen task only dies once thawed (v2-frozen ones die anyway).
            return match self.freezer() {
                Ok(_) => self.thaw(),
                Err(_) => Ok(()),
            };
        }
        let freezer = self.freezer().ok();
        let was_frozen = match freezer {
            Some(_) => self.is_frozen()?,
            None => false,
        };
        let mut froze = false;
        if freezer.is_some() && !was_frozen {
            match self.freeze() {
                Ok(()) => froze = true,
                // Signalling unfrozen is racier but still right for a quiet container.
                Err(e) => {
                    tracing::warn!(error = %e, "kill_all: freezing failed; signalling anyway")
                }
            }
        }
        let result = self.signal_each(sig);
        if froze || (was_frozen && sig == Signal::SIGKILL) {
            let thawed = self.thaw();
            result?;
            return thawed;
        }
        result
    }

    fn signal_each(&self, sig: Signal) -> Result<(), CgroupError> {
        let me = std::process::id() as i32;
        let mut first = None;
        for pid in self.pids()? {
            if pid == me {
                tracing::warn!(
                    pid,
                    "kill_all: the runtime itself is in the cgroup; skipped"
                );
                continue;
            }
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(errno) => {
                    first.get_or_insert(CgroupError::Signal {
                        path: self.primary_dir()?.to_path_buf(),
                        pid,
                        signal: sig,
                        errno,
                    });
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

fn v1_ctl(dir: &Path) -> FreezerController {
    FreezerController::new(dir.to_path_buf(), dir.to_path_buf(), false)
}

/// runc's v1 loop: a v1 cgroup can stay `FREEZING` while tasks keep appearing, so write
/// `FROZEN` again until it sticks, with an occasional thaw + short sleep in between. If
/// it never settles it is thawed back, since a half-frozen cgroup is the worst outcome.
fn freeze_v1(dir: &Path) -> Result<(), CgroupError> {
    let fc = v1_ctl(dir);
    for i in 0..V1_FREEZE_TRIES {
        if i % 50 == 49 {
            let _ = fc.thaw();
            std::thread::sleep(Duration::from_millis(10));
        }
        fc.freeze().rs_ctx(dir, &"FROZEN")?;
        if i % 25 == 24 {
            std::thread::sleep(Duration::from_micros(10));
        }
        match fc.state().rs_read(dir)? {
            FreezerState::Frozen => return Ok(()),
            FreezerState::Freezing => continue,
            FreezerState::Thawed => {
                return Err(CgroupError::Freeze {
                    path: dir.to_path_buf(),
                    reason: "state went back to THAWED while freezing".into(),
                });
            }
        }
    }
    let _ = fc.thaw();
    Err(CgroupError::Freeze {
        path: dir.to_path_buf(),
        reason: format!("still FREEZING after {V1_FREEZE_TRIES} attempts; thawed again"),
    })
}

fn freeze_v2(dir: &Path) -> Result<(), CgroupError> {
    fsutil::write(&dir.join("cgroup.freeze"), "1")?;
    let events = dir.join("cgroup.events");
    let deadline = Instant::now() + V2_FREEZE_TIMEOUT;
    let mut delay = Duration::from_micros(50);
    loop {
        if fsutil::read_keyed(&events, "frozen")? == 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let _ = fsutil::write(&dir.join("cgroup.freeze"), "0");
            return Err(CgroupError::Freeze {
                path: dir.to_path_buf(),
                reason: format!("not frozen after {V2_FREEZE_TIMEOUT:?}; thawed again"),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
}
