//! The state store: `<root>/<id>/state.json`, written to a temp file and renamed, with a
//! file lock on the container's directory held by every mutation.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::{Hooks, LinuxSeccomp, Process};
use serde::{Deserialize, Serialize};

/// What the store can fail on; each names the container or the path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container {0} does not exist")]
    NotExist(String),
    #[error("container with id {0} already exists")]
    Exists(String),
    #[error("{op} {path}: {err}")]
    Io {
        op: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("{path}: corrupt state: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |err| StateError::Io {
        op,
        path: path.to_path_buf(),
        err,
    }
}

/// What corral records about a container. The status is not stored: it is derived from
/// the kernel each time (see `status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub oci_version: String,
    pub id: String,
    /// The init's pid in the runtime's pid namespace.
    pub pid: i32,
    /// The init's start time (clock ticks since boot): a pid whose start time differs is
    /// another process that reused the number.
    pub init_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339, UTC.
    pub created: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The container's cgroup, as its path below each hierarchy's root.
    pub cgroup_path: String,
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// Hooks still to run (poststart, poststop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<Hooks>,
    /// Whether the container has its own pid namespace (then killing init kills all).
    #[serde(default)]
    pub own_pid_ns: bool,
    /// The container shares the runtime's mount namespace (its config lists none): its
    /// mounts, beneath `rootfs`, are the host's, and `delete` detaches them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_mount_ns: bool,
    /// The container's `process`, as created: `exec` starts from it (flags mode) and
    /// takes its capabilities and rlimits when the exec'd process names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    /// The container's `linux.seccomp`: every exec'd process gets it too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<LinuxSeccomp>,
}

/// The state root (`--root`, default `/run/corral`).
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// An exclusive lock on one container's directory, released on drop.
pub struct Lock {
    _lock: Flock<File>,
    dir: PathBuf,
}

impl Lock {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// Made empty at create, and written by the init when it fails between `start` and exec
/// (a startContainer hook, a late seccomp filter, execve itself).
pub const EXEC_ERROR: &str = "exec.error";

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Creates the container's directory (failing if the id is taken) and locks it.
    pub fn create(&self, id: &str) -> Result<Lock, StateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .map_err(io("create state root", &self.root))?;
        let dir = self.dir(id);
        match std::fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StateError::Exists(id.to_string()));
            }
            Err(e) => return Err(io("create", &dir)(e)),
        }
        self.lock(id)
    }

    /// Locks an existing container's directory.
    pub fn lock(&self, id: &str) -> Result<Lock, StateError> {
        let dir = self.dir(id);
        let f = File::open(&dir).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotExist(id.to_string())
            } else {
                io("open", &dir)(e)
            }
        })?;
        let lock = Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| StateError::Io {
            op: "lock",
            path: dir.clone(),
            err: e.into(),
        })?;
        Ok(Lock { _lock: lock, dir })
    }

    pub fn load(&self, id: &str) -> Result<Record, StateError> {
        let path = self.dir(id).join(STATE_FILE);
        let data = std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StateError::NotExist(id.to_string())
            } else {
                io("read", &path)(e)
            }
        })?;
        serde_json::from_slice(&data).map_err(|e| StateError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Writes the record atomically (a temp file in the same directory, renamed; see
    /// [`super::atomic::write_atomic`]).
    pub fn save(&self, _lock: &Lock, rec: &Record) -> Result<(), StateError> {
        let path = self.dir(&rec.id).join(STATE_FILE);
        let data = serde_json::to_vec(rec).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        super::atomic::write_atomic(&path, &data, 0o600).map_err(io("write", &path))
    }

    /// Removes the container's directory and everything in it.
    pub fn remove(&self, lock: Lock) -> Result<(), StateError> {
        let dir = lock.dir.clone();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &dir)(e)),
        }
    }

    /// The ids of every container directory under the root, sorted.
    pub fn ids(&self) -> Result<Vec<String>, StateError> {
        let rd = match std::fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("read", &self.root)(e)),
        };
        let mut ids: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// Now, as RFC 3339 UTC with nanoseconds (`2026-11-29T16:04:05.123456789Z`).
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

fn rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_795_968_000, 0), "2026-11-29T16:00:00.000000000Z");
    }

    #[test]
    fn create_twice_is_refused_and_save_is_atomic() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path());
        let lock = store.create("c1").unwrap();
        assert!(matches!(store.create("c1"), Err(StateError::Exists(_))));
        let rec = Record {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            pid: 42,
            init_start_time: 7,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            annotations: HashMap::new(),
            cgroup_path: "/corral/c1".into(),
            systemd_cgroup: false,
            hooks: None,
            own_pid_ns: true,
            host_mount_ns: false,
            process: None,
            seccomp: None,
        };
        store.save(&lock, &rec).unwrap();
        assert_eq!(store.load("c1").unwrap().pid, 42);
        assert_eq!(store.ids().unwrap(), vec!["c1".to_string()]);
        assert!(!store.dir("c1").join(".state.json.tmp").exists());
        store.remove(lock).unwrap();
        assert!(matches!(store.load("c1"), Err(StateError::NotExist(_))));
    }
}
