//! Sysctls: only namespaced ones, and only with the namespace they belong to.

use oci_spec::runtime::{Linux, LinuxNamespaceType};

use super::{Violation, namespaces};

pub(super) fn check(linux: Option<&Linux>, out: &mut Vec<Violation>) {
    let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) else {
        return;
    };
    // A HashMap iterates in random order; report in a stable one.
    let mut keys: Vec<&String> = sysctl.keys().collect();
    keys.sort();
    for key in keys {
        let field = format!("linux.sysctl[{key:?}]");
        if !is_well_formed(key) {
            // Keys become paths under /proc/sys: `net./../kernel/core_pattern` must never
            // reach the runtime.
            out.push(Violation::new(
                field,
                "not a sysctl name (dot-separated words of [A-Za-z0-9_-])",
            ));
            continue;
        }
        match namespace_of(key) {
            None => out.push(Violation::new(
                field,
                "not a namespaced sysctl (allowed: kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.*)",
            )),
            Some(typ) if !namespaces::is_new(linux, typ) => out.push(Violation::new(
                field,
                format!("needs a new {} namespace", namespaces::name(typ)),
            )),
            Some(_) => {}
        }
    }
}

/// The namespace a sysctl belongs to, if it is namespaced at all.
fn namespace_of(key: &str) -> Option<LinuxNamespaceType> {
    let ipc = key.starts_with("kernel.msg")
        || key == "kernel.sem"
        || key.starts_with("kernel.shm")
        || key.starts_with("fs.mqueue.");
    if ipc {
        Some(LinuxNamespaceType::Ipc)
    } else if key.starts_with("net.") {
        Some(LinuxNamespaceType::Network)
    } else {
        None
    }
}

fn is_well_formed(key: &str) -> bool {
    key.split('.').all(|word| {
        !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}
