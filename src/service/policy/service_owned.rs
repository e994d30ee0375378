//! Fields an uploaded bundle may not set at all: they run code on the host (hooks), move
//! host resources into the container, or belong to the service.

use oci_spec::runtime::{Hooks, Spec};

use super::Violation;

pub(super) fn check(spec: &Spec, out: &mut Vec<Violation>) {
    if spec.hooks().as_ref().is_some_and(has_any_hook) {
        out.push(Violation::new("hooks", "not allowed in uploaded bundles"));
    }
    let Some(linux) = spec.linux() else { return };

    if linux.cgroups_path().is_some() {
        out.push(Violation::new(
            "linux.cgroupsPath",
            "not allowed: the service chooses the cgroup",
        ));
    }
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        out.push(Violation::new(
            "linux.mountLabel",
            "not allowed: the service chooses security labels",
        ));
    }
    if linux.intel_rdt().is_some() {
        out.push(Violation::new(
            "linux.intelRdt",
            "not allowed in uploaded bundles",
        ));
    }
    if linux.personality().is_some() {
        out.push(Violation::new(
            "linux.personality",
            "not allowed in uploaded bundles",
        ));
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        out.push(Violation::new(
            "linux.netDevices",
            "not allowed: it moves host network devices into the container",
        ));
    }
    let unified = linux
        .resources()
        .as_ref()
        .and_then(|r| r.unified().as_ref());
    if unified.is_some_and(|u| !u.is_empty()) {
        out.push(Violation::new(
            "linux.resources.unified",
            "not allowed: raw cgroup v2 files would bypass the service's limits",
        ));
    }
}

#[allow(deprecated)] // `prestart` is deprecated but still run by runtimes: it must be seen.
fn has_any_hook(hooks: &Hooks) -> bool {
    [
        hooks.prestart(),
        hooks.create_runtime(),
        hooks.create_container(),
        hooks.start_container(),
        hooks.poststart(),
        hooks.poststop(),
    ]
    .into_iter()
    .any(|list| list.as_ref().is_some_and(|l| !l.is_empty()))
}
