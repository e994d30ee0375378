//! Seccomp: a filter must be present, must filter something, and must not hand its
//! notifications to a host socket.

use oci_spec::runtime::{Linux, LinuxSeccompAction, LinuxSeccompFilterFlag};

use super::Violation;

pub(super) fn check(linux: Option<&Linux>, out: &mut Vec<Violation>) {
    let Some(seccomp) = linux.and_then(|l| l.seccomp().as_ref()) else {
        out.push(Violation::new(
            "linux.seccomp",
            "required: uploaded bundles must carry a seccomp profile",
        ));
        return;
    };
    let restricts_something = !is_permissive(seccomp.default_action())
        || seccomp
            .syscalls()
            .iter()
            .flatten()
            .any(|rule| !is_permissive(rule.action()));
    if !restricts_something {
        out.push(Violation::new(
            "linux.seccomp",
            "disabled: the default action allows every call and no rule restricts one",
        ));
    }
    if seccomp.listener_path().is_some() {
        out.push(Violation::new(
            "linux.seccomp.listenerPath",
            "not allowed: the runtime would send the filter to a host socket",
        ));
    }
    if seccomp
        .flags()
        .iter()
        .flatten()
        .any(|f| *f == LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow)
    {
        out.push(Violation::new(
            "linux.seccomp.flags",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW turns off speculative-execution mitigations",
        ));
    }
}

/// Actions that let the call through.
fn is_permissive(action: LinuxSeccompAction) -> bool {
    matches!(
        action,
        LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
    )
}
