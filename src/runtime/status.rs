//! A container's status, derived from the kernel each time it is asked for: never from
//! a stored field that could be stale.

use std::fmt;

use super::linux::cgroups::{Cgroup, CgroupPath};
use super::linux::process::start_time;
use super::state::{EXEC_FIFO, Record, Store};

/// OCI statuses (state.md#state).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// The status of the container recorded in `rec`:
/// - stopped: the init is gone, or its pid now belongs to a process with another start
///   time (pid reuse);
/// - created: the init is alive and still waits on the exec fifo;
/// - paused: the init is alive and the container's cgroup is frozen (`pause`);
/// - running: the init is alive and `start` has released it.
pub fn status(store: &Store, rec: &Record) -> Status {
    if !init_alive(rec) {
        return Status::Stopped;
    }
    if frozen(rec) {
        return Status::Paused;
    }
    if store.dir(&rec.id).join(EXEC_FIFO).exists() {
        Status::Created
    } else {
        Status::Running
    }
}

/// Whether the container's cgroup is frozen. A cgroup that cannot be read is reported
/// as not frozen: `pause` and `resume` say why when they fail on it.
fn frozen(rec: &Record) -> bool {
    CgroupPath::parse(Some(&rec.cgroup_path), &rec.id, false)
        .and_then(|p| Cgroup::open(&p))
        .and_then(|cg| cg.is_frozen())
        .unwrap_or(false)
}

/// Whether the recorded init still runs (and is the same process).
pub fn init_alive(rec: &Record) -> bool {
    rec.pid > 0 && start_time(rec.pid) == Some(rec.init_start_time)
}
