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

/// The address families a sandbox may open sockets in: `AF_UNIX`, `AF_INET`, `AF_INET6`.
/// Every other family is refused with EAFNOSUPPORT, `AF_VSOCK` above all: it is not
/// confined by network namespaces and leads to the hypervisor's side. A container made
/// from an image may also open `AF_NETLINK` sockets of `NETLINK_ROUTE` (what `ip` and
/// glibc's `getifaddrs` use); a judged run may not.
pub const SOCKET_FAMILIES: [u64; 3] = [
    libc::AF_UNIX as u64,
    libc::AF_INET as u64,
    libc::AF_INET6 as u64,
];

/// Which kind of sandbox a default profile is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A long-running container from an image: `AF_NETLINK` route sockets too.
    Container,
    /// A judged run's execution.
    Run,
}

/// The default seccomp profile (`linux.seccomp`) of `profile`.
pub fn default_seccomp(profile: Profile) -> Value {
    let mut rules = vec![
        json!({ "names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM }),
        // clone(2) with CLONE_NEWUSER (0x10000000): no user namespaces from inside.
        json!({ "names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EPERM,
          "args": [{ "index": 0, "value": 0x1000_0000u64, "valueTwo": 0x1000_0000u64, "op": "SCMP_CMP_MASKED_EQ" }] }),
        // clone3 passes flags in memory that seccomp cannot read: refuse it with ENOSYS
        // so that libc falls back to clone(2), which the rule above checks.
        json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS }),
    ];
    let mut allowed: Vec<u64> = SOCKET_FAMILIES.to_vec();
    if profile == Profile::Container {
        allowed.push(libc::AF_NETLINK as u64);
        // Netlink of any protocol but NETLINK_ROUTE (0): arguments 0 and 2 in one rule.
        rules.push(
            json!({ "names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EAFNOSUPPORT,
            "args": [
                { "index": 0, "value": libc::AF_NETLINK as u64, "op": "SCMP_CMP_EQ" },
                { "index": 2, "value": libc::NETLINK_ROUTE as u64, "op": "SCMP_CMP_NE" }
            ] }),
        );
    }
    // The default action allows, so the refused families are listed: each one below
    // the highest allowed, and every one above it (a family the kernel adds later too).
    // The family is an int: only its low 32 bits count (SCMP_CMP_MASKED_EQ).
    let top = allowed.iter().copied().max().unwrap_or(0);
    for family in (0..top).filter(|f| !allowed.contains(f)) {
        rules.push(json!({ "names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::EAFNOSUPPORT,
            "args": [{ "index": 0, "value": 0xffff_ffffu64, "valueTwo": family, "op": "SCMP_CMP_MASKED_EQ" }] }));
    }
    rules.push(
        json!({ "names": ["socket", "socketpair"], "action": "SCMP_ACT_ERRNO",
        "errnoRet": libc::EAFNOSUPPORT,
        "args": [{ "index": 0, "value": top + 1, "op": "SCMP_CMP_GE" }] }),
    );
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules
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
            "seccomp": default_seccomp(Profile::Container)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `socket(family, type, protocol)` answers under `profile`'s filter: 0 for a
    /// socket, else the errno. The filter is installed in a forked child.
    fn socket_under(profile: Profile, family: i32, typ: i32, protocol: i32) -> i32 {
        let spec: oci_spec::runtime::LinuxSeccomp =
            serde_json::from_value(default_seccomp(profile)).expect("the profile parses");
        let prog = crate::runtime::linux::seccomp::compile(&spec).expect("the profile compiles");
        // SAFETY: the child installs the filter, makes one socket call and leaves with
        // _exit; glibc keeps malloc usable after fork.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                let _ = nix::sys::prctl::set_no_new_privs();
                let code = match prog.install() {
                    // SAFETY: socket(2) with plain integers.
                    Ok(()) => match unsafe { libc::socket(family, typ, protocol) } {
                        fd if fd >= 0 => 0,
                        _ => nix::errno::Errno::last_raw(),
                    },
                    Err(_) => 255,
                };
                // SAFETY: _exit ends the forked child without running the test harness.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                match nix::sys::wait::waitpid(child, None).expect("waitpid") {
                    nix::sys::wait::WaitStatus::Exited(_, code) => code,
                    other => panic!("the probe ended with {other:?}"),
                }
            }
        }
    }

    #[test]
    fn sockets_only_in_the_allowed_families() {
        let stream = libc::SOCK_STREAM;
        let dgram = libc::SOCK_DGRAM;
        for profile in [Profile::Container, Profile::Run] {
            for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
                assert_eq!(
                    socket_under(profile, family, stream, 0),
                    0,
                    "{profile:?} {family}"
                );
            }
            for (family, typ) in [
                (libc::AF_VSOCK, stream),
                (libc::AF_PACKET, dgram),
                (libc::AF_KEY, libc::SOCK_RAW),
                (libc::AF_ALG, libc::SOCK_SEQPACKET),
                (libc::AF_BLUETOOTH, stream),
                (libc::AF_XDP, libc::SOCK_RAW),
                (0, stream),
                (200, stream),
                (-1, stream),
            ] {
                assert_eq!(
                    socket_under(profile, family, typ, 0),
                    libc::EAFNOSUPPORT,
                    "{profile:?} family {family}"
                );
            }
        }
        let raw = libc::SOCK_RAW;
        let route = libc::NETLINK_ROUTE;
        assert_eq!(
            socket_under(Profile::Container, libc::AF_NETLINK, raw, route),
            0
        );
        for protocol in [libc::NETLINK_AUDIT, libc::NETLINK_KOBJECT_UEVENT] {
            assert_eq!(
                socket_under(Profile::Container, libc::AF_NETLINK, raw, protocol),
                libc::EAFNOSUPPORT
            );
        }
        assert_eq!(
            socket_under(Profile::Run, libc::AF_NETLINK, raw, route),
            libc::EAFNOSUPPORT
        );
    }
}
