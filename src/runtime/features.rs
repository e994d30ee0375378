//! The OCI features document (`corral features`, `GET /v1/info`) (features.md), listing exactly what this
//! runtime implements; what it refuses is left out.

use serde_json::{Value, json};

use crate::runtime::OCI_VERSION;

/// Mount options that `config.json` may use (see runtime::linux::mount_opts).
const MOUNT_OPTIONS: &[&str] = &[
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "lazytime",
    "loud",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
];

/// Annotation of the features document: device cgroup rules work on cgroup v2 (eBPF).
pub const DEVICES_V2_ANNOTATION: &str = "org.corral.cgroup.v2.devices.enabled";

pub fn document() -> Value {
    let mut caps: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": { "v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false },
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [
                    "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64",
                    "SCMP_ARCH_MIPS64N32", "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64",
                    "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC", "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE",
                    "SCMP_ARCH_RISCV64", "SCMP_ARCH_S390", "SCMP_ARCH_S390X", "SCMP_ARCH_X32",
                    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64"
                ],
                "knownFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "supportedFlags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]
            },
            "apparmor": { "enabled": false },
            "selinux": { "enabled": false },
            "intelRdt": { "enabled": false },
            "mountExtensions": { "idmap": { "enabled": false } }
        },
        "annotations": {
            // Not a field of the features document: `linux.resources.devices` is enforced
            // on cgroup v2 too, by an eBPF device program (runtime/linux/cgroups/devices).
            DEVICES_V2_ANNOTATION: "true",
            "org.opencontainers.runtime.name": "corral",
            "org.opencontainers.runtime.version": env!("CARGO_PKG_VERSION")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::linux::mount_opts::MountOptions;

    /// The document lists what is implemented, and nothing that is refused.
    #[test]
    fn lists_exactly_what_is_implemented() {
        for opt in MOUNT_OPTIONS {
            assert!(MountOptions::parse(&[opt.to_string()]).is_ok(), "{opt}");
        }
        for refused in ["rro", "idmap"] {
            assert!(!MOUNT_OPTIONS.contains(&refused));
            assert!(
                MountOptions::parse(&[refused.to_string()]).is_err(),
                "{refused}"
            );
        }
        // Parsed, but refused when the mount is made (init/rootfs.rs).
        assert!(!MOUNT_OPTIONS.contains(&"tmpcopyup"));
        let doc = document();
        let linux = &doc["linux"];
        assert_eq!(linux["cgroup"]["systemd"], false);
        assert_eq!(linux["mountExtensions"]["idmap"]["enabled"], false);
        let actions = linux["seccomp"]["actions"].as_array().unwrap();
        assert!(!actions.iter().any(|a| a == "SCMP_ACT_NOTIFY"));
        assert_eq!(linux["cgroup"]["v2"], true);
        assert_eq!(doc["annotations"][DEVICES_V2_ANNOTATION], "true");
    }
}
