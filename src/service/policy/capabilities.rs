//! Capabilities: no set may hold anything beyond the default set for long-running
//! containers.

use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::Violation;

/// runc's and Docker's default capability set, the most a long-running container gets.
const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The default capability set for long-running containers (runc's and Docker's list), as
/// `CAP_*` names. Runs (judged executions) get none.
pub fn default_capabilities() -> &'static [&'static str] {
    DEFAULT_CAPABILITIES
}

pub(super) fn check(capabilities: Option<&LinuxCapabilities>, out: &mut Vec<Violation>) {
    let Some(caps) = capabilities else { return };
    let sets: [(&str, &Option<Capabilities>); 5] = [
        ("bounding", caps.bounding()),
        ("effective", caps.effective()),
        ("permitted", caps.permitted()),
        ("inheritable", caps.inheritable()),
        ("ambient", caps.ambient()),
    ];
    for (set, capabilities) in sets {
        let mut extra: Vec<String> = capabilities
            .iter()
            .flatten()
            .map(cap_name)
            .filter(|name| !DEFAULT_CAPABILITIES.contains(&name.as_str()))
            .collect();
        // A HashSet iterates in random order; report in a stable one.
        extra.sort();
        for name in extra {
            out.push(Violation::new(
                format!("process.capabilities.{set}"),
                format!("{name} is beyond the default capability set"),
            ));
        }
    }
}

/// `CAP_SYS_ADMIN` for [`Capability::SysAdmin`] (oci-spec displays it as `SYS_ADMIN`).
pub(super) fn cap_name(capability: &Capability) -> String {
    format!("CAP_{capability}")
}
