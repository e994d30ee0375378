//! The OCI config of a container made from a named image: the service's sandbox
//! defaults (DESIGN.md, security model), narrowed by the request, never widened.

use std::path::Path;

use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use super::policy::default_capabilities;

/// Syscalls the default seccomp profile refuses with EPERM: kernel modules, keyrings,
/// mounts and namespaces, tracing and other processes' memory, clock and reboot, bpf,
/// perf, userfaultfd, and the new mount API. Everything else is allowed; only the native
/// architecture is in the filter, so foreign-ABI system calls are killed.
pub const DENIED_SYSCALLS: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "quotactl_fd",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "stime",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// Paths hidden from every sandbox (`linux.maskedPaths`; absent ones are skipped).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/powercap",
];

/// Paths every sandbox sees read-only (`linux.readonlyPaths`).
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The default seccomp profile (`linux.seccomp`).
pub fn default_seccomp() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            { "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1 },
            // clone(2) with CLONE_NEWUSER (0x10000000): no user namespaces from inside.
            { "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
              "args": [{ "index": 0, "value": 0x1000_0000u64, "valueTwo": 0x1000_0000u64, "op": "SCMP_CMP_MASKED_EQ" }] },
            // clone3 passes flags in memory that seccomp cannot read: refuse it with ENOSYS
            // so that libc falls back to clone(2), which the rule above checks.
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }
        ]
    })
}

/// What a request may set on the process and its limits.
pub struct SandboxRequest<'a> {
    pub id: &'a str,
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub memory_bytes: i64,
    pub pids: i64,
    pub cpus: f64,
    pub capabilities: &'a [&'a str],
}

/// What a request sets, owned: the service sends it to the launcher for a warm
/// container (see `launcher::warm`), which builds the same config from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Params {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub memory_bytes: i64,
    pub pids: i64,
    /// CPU time per [`CPU_PERIOD_US`], in microseconds.
    pub cpu_quota_us: i64,
}

/// The CFS period of every sandbox container, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

impl Params {
    /// The config of container `id` with these parameters and the default capabilities,
    /// with `rootfs` as its root.
    pub fn spec(&self, id: &str, rootfs: &Path) -> Result<Spec, String> {
        let caps = default_caps();
        spec(
            &SandboxRequest {
                id,
                args: &self.args,
                env: &self.env,
                cwd: &self.cwd,
                uid: self.uid,
                gid: self.gid,
                memory_bytes: self.memory_bytes,
                pids: self.pids,
                cpus: self.cpu_quota_us as f64 / CPU_PERIOD_US as f64,
                capabilities: &caps,
            },
            rootfs,
        )
    }
}

/// Writes `spec` as `<bundle>/config.json` (atomically), creating `bundle`.
pub fn write_config(bundle: &Path, spec: &Spec) -> std::io::Result<()> {
    std::fs::create_dir_all(bundle)?;
    let data = serde_json::to_vec_pretty(spec).map_err(std::io::Error::other)?;
    crate::runtime::atomic::write_atomic(&bundle.join("config.json"), &data, 0o600)
}

/// Builds the config for `req` with `rootfs` as its root.
pub fn spec(req: &SandboxRequest<'_>, rootfs: &Path) -> Result<Spec, String> {
    let caps: Vec<&str> = req.capabilities.to_vec();
    let period = CPU_PERIOD_US;
    let quota = (req.cpus * period as f64).round() as i64;
    let doc = json!({
        "ociVersion": crate::runtime::OCI_VERSION,
        "root": { "path": rootfs, "readonly": false },
        "hostname": short_hostname(req.id),
        "process": {
            "terminal": false,
            "user": { "uid": req.uid, "gid": req.gid },
            "args": req.args,
            "env": req.env,
            "cwd": req.cwd,
            "capabilities": { "bounding": caps, "effective": caps, "permitted": caps },
            "rlimits": [{ "type": "RLIMIT_CORE", "hard": 0, "soft": 0 }],
            "noNewPrivileges": true
        },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
                { "type": "uts" }, { "type": "mount" }, { "type": "cgroup" }
            ],
            "resources": {
                "devices": [{ "allow": false, "access": "rwm" }],
                "memory": { "limit": req.memory_bytes, "swap": req.memory_bytes },
                "pids": { "limit": req.pids },
                "cpu": { "quota": quota, "period": period }
            },
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": default_seccomp()
        }
    });
    serde_json::from_value(doc).map_err(|e| format!("internal sandbox config: {e}"))
}

/// The capabilities of a long-running container: the policy's default set.
pub fn default_caps() -> Vec<&'static str> {
    default_capabilities().to_vec()
}

/// The hostname of container `id`: its id, cut to the 63 bytes a hostname may hold.
pub fn short_hostname(id: &str) -> String {
    id.chars().take(63).collect()
}
