//! The OCI config of a judged run's containers (DESIGN.md, security model): the image
//! read-only, the workspace at `/box` (writable for a step without tests, read-only for
//! test cases), a private size-limited `/tmp`, new pid, ipc, uts, mount, network and
//! cgroup namespaces, the default seccomp profile, no capabilities, no_new_privs, a
//! non-root user, core dumps off, and the step's limits as cgroup limits and rlimits.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::json;

use super::limits::RunLimits;
use crate::runtime::plan::REAPER_ANNOTATION;

/// The fd on which the containers' reaper reports the program's wait status.
pub const STATUS_FD: i32 = 3;
use crate::service::sandbox::{MASKED_PATHS, Profile, READONLY_PATHS, default_seccomp};

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What one step's containers run.
pub struct StepSpec<'a> {
    pub rootfs: &'a Path,
    pub workspace: &'a Path,
    pub args: &'a [String],
    /// The request's `KEY=VALUE` entries, over the defaults.
    pub env: &'a [String],
    pub limits: &'a RunLimits,
    pub writable_workspace: bool,
    pub uid: u32,
    pub gid: u32,
}

/// The environment: defaults, then the request's entries (a later key wins).
fn environment(extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = vec![
        DEFAULT_PATH.into(),
        "HOME=/tmp".into(),
        "TMPDIR=/tmp".into(),
        "LANG=C.UTF-8".into(),
        "PYTHONDONTWRITEBYTECODE=1".into(),
    ];
    for e in extra {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    env
}

pub fn build(s: &StepSpec<'_>) -> Result<Spec, String> {
    let l = s.limits;
    // RLIMIT_CPU is a backstop only (per process): the runner watches the cgroup.
    let cpu_secs = l.cpu_time_ms.div_ceil(1000) + 1;
    let box_mode = if s.writable_workspace { "rw" } else { "ro" };
    let memory = i64::try_from(l.memory_bytes).map_err(|_| "memory_bytes too large")?;
    let pids = i64::try_from(l.pids).map_err(|_| "pids too large")?;
    let doc = json!({
        "ociVersion": crate::runtime::OCI_VERSION,
        "root": { "path": s.rootfs, "readonly": true },
        "hostname": "sandbox",
        // The program runs as pid 2 under a reaper that reports its status on fd 3:
        // signals it sends itself (abort, raise) and SIGXFSZ/SIGXCPU then act as usual.
        "annotations": { REAPER_ANNOTATION: STATUS_FD.to_string() },
        "process": {
            "terminal": false,
            "user": { "uid": s.uid, "gid": s.gid, "additionalGids": [] },
            "args": s.args,
            "env": environment(s.env),
            "cwd": "/box",
            "capabilities": { "bounding": [], "effective": [], "permitted": [] },
            "rlimits": [
                { "type": "RLIMIT_CORE", "hard": 0, "soft": 0 },
                { "type": "RLIMIT_CPU", "hard": cpu_secs + 1, "soft": cpu_secs },
                { "type": "RLIMIT_FSIZE", "hard": l.file_size_bytes, "soft": l.file_size_bytes },
                { "type": "RLIMIT_NOFILE", "hard": l.open_files, "soft": l.open_files },
                { "type": "RLIMIT_STACK", "hard": l.stack_bytes, "soft": l.stack_bytes }
            ],
            "noNewPrivileges": true
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=64k"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=16m"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777", format!("size={}", l.disk_bytes)] },
            { "destination": "/box", "type": "bind", "source": s.workspace, "options": ["bind", "nosuid", "nodev", box_mode] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "memory": { "limit": memory, "swap": memory },
                "pids": { "limit": pids }
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": default_seccomp(Profile::Run)
        }
    });
    serde_json::from_value(doc).map_err(|e| format!("internal run config: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_env_overrides_defaults_and_spec_parses() {
        let env = environment(&["PATH=/x".into(), "A=1".into()]);
        assert!(env.contains(&"PATH=/x".to_string()));
        assert!(!env.iter().any(|e| e == DEFAULT_PATH));
        assert!(env.contains(&"A=1".to_string()));
        let limits = RunLimits::default();
        let args = vec!["true".to_string()];
        let spec = build(&StepSpec {
            rootfs: Path::new("/img"),
            workspace: Path::new("/ws"),
            args: &args,
            env: &[],
            limits: &limits,
            writable_workspace: false,
            uid: 1000,
            gid: 1000,
        })
        .unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.no_new_privileges(), Some(true));
        let mounts = spec.mounts().as_ref().unwrap();
        let b = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/box"))
            .unwrap();
        assert!(b.options().as_ref().unwrap().iter().any(|o| o == "ro"));
    }
}
