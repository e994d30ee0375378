//! Namespaces: a container gets new pid, ipc, uts, mount and network namespaces and joins
//! none of the host's (or anyone else's) by path.

use oci_spec::runtime::{Linux, LinuxNamespaceType};

use super::Violation;

const FIELD: &str = "linux.namespaces";

/// Namespaces that must be new; cgroup, user and time ones are optional.
const REQUIRED: &[LinuxNamespaceType] = &[
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Network,
];

pub(super) fn check(linux: Option<&Linux>, out: &mut Vec<Violation>) {
    let namespaces = linux
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default();
    for namespace in namespaces {
        if namespace.path().is_some() {
            out.push(Violation::new(
                FIELD,
                format!(
                    "{}: joining an existing namespace by path is not allowed",
                    name(namespace.typ())
                ),
            ));
        }
    }
    for required in REQUIRED {
        if !namespaces.iter().any(|n| n.typ() == *required) {
            out.push(Violation::new(
                FIELD,
                format!(
                    "{}: a new namespace is required (leaving it out shares the host's)",
                    name(*required)
                ),
            ));
        }
    }
}

/// Whether the spec asks for a new namespace of type `typ` (listed, without a path).
pub(super) fn is_new(linux: Option<&Linux>, typ: LinuxNamespaceType) -> bool {
    linux
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default()
        .iter()
        .any(|n| n.typ() == typ && n.path().is_none())
}

/// The namespace's name as written in config.json.
pub(super) fn name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}
