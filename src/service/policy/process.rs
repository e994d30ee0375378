//! The container process: no new privileges, capabilities listed and none added, no
//! security labels, and no scheduling privilege the runtime (running as root) would grant
//! on its behalf.

use oci_spec::runtime::{IOPriorityClass, LinuxSchedulerPolicy, PosixRlimitType, Process};

use super::{Violation, capabilities, system_paths};

/// `RLIMIT_NICE` is `20 - nice`: 20 allows nice 0, more allows raising priority.
const MAX_RLIMIT_NICE: u64 = 20;

pub(super) fn check(process: Option<&Process>, out: &mut Vec<Violation>) {
    // No process, nothing runs; the runtime rejects such a spec for `create`.
    let Some(process) = process else { return };

    if process.no_new_privileges() != Some(true) {
        out.push(Violation::new(
            "process.noNewPrivileges",
            "must be true (leaving it out means false)",
        ));
    }
    match process.capabilities() {
        // The runtime (as runc) then leaves the capabilities alone: a root process keeps
        // every capability the runtime has.
        None => out.push(Violation::new(
            "process.capabilities",
            "required: without it a root process keeps every capability (list the sets, \
             empty ones included)",
        )),
        Some(caps) => capabilities::check(Some(caps), out),
    }
    let cwd = process.cwd().to_string_lossy();
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    system_paths::check(
        &system_paths::ProcessPaths {
            cwd: Some(("process.cwd", &cwd)),
            args: Some(("process.args", &args)),
            env: Some(("process.env", &env)),
        },
        out,
    );

    if is_set(process.apparmor_profile().as_deref()) {
        out.push(Violation::new(
            "process.apparmorProfile",
            "not allowed: the service chooses security profiles",
        ));
    }
    if is_set(process.selinux_label().as_deref()) {
        out.push(Violation::new(
            "process.selinuxLabel",
            "not allowed: the service chooses security labels",
        ));
    }
    if process.oom_score_adj().is_some_and(|adj| adj < 0) {
        out.push(Violation::new(
            "process.oomScoreAdj",
            "negative values shield the container from the OOM killer",
        ));
    }
    if let Some(scheduler) = process.scheduler() {
        if matches!(
            scheduler.policy(),
            LinuxSchedulerPolicy::SchedFifo
                | LinuxSchedulerPolicy::SchedRr
                | LinuxSchedulerPolicy::SchedDeadline
        ) {
            out.push(Violation::new(
                "process.scheduler.policy",
                "real-time scheduling is not allowed",
            ));
        }
        if scheduler.nice().is_some_and(|nice| nice < 0) {
            out.push(Violation::new(
                "process.scheduler.nice",
                "negative nice values are not allowed",
            ));
        }
    }
    if process
        .io_priority()
        .is_some_and(|io| io.class() == IOPriorityClass::IoprioClassRt)
    {
        out.push(Violation::new(
            "process.ioPriority.class",
            "real-time I/O priority is not allowed",
        ));
    }
    for (index, rlimit) in process.rlimits().iter().flatten().enumerate() {
        let limit = rlimit.hard().max(rlimit.soft());
        let reason = match rlimit.typ() {
            PosixRlimitType::RlimitRtprio if limit > 0 => {
                "RLIMIT_RTPRIO above 0 lets the process schedule itself in real time"
            }
            PosixRlimitType::RlimitNice if limit > MAX_RLIMIT_NICE => {
                "RLIMIT_NICE above 20 lets the process raise its priority"
            }
            _ => continue,
        };
        out.push(Violation::new(format!("process.rlimits[{index}]"), reason));
    }
}

/// An empty string means the same as no value.
fn is_set(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty())
}
