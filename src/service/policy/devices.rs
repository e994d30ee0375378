//! Devices: no device nodes in the spec, and cgroup device rules that deny every device
//! first and then allow no more than the standard set (mknod of anything; read/write of
//! null, zero, full, random, urandom, tty, ptmx and the pts slaves).
//!
//! The leading deny-all is required: without it the container's device cgroup keeps its
//! parent's "every device" whatever the allow rules say, and a process holding
//! `CAP_MKNOD` (in the default set) could make and open the host's disks.

use oci_spec::runtime::{Linux, LinuxDeviceCgroup, LinuxDeviceType};

use super::Violation;

/// Character devices that may be read and written: null, zero, full, random, urandom,
/// tty, ptmx.
const STANDARD_CHAR_DEVICES: &[(i64, i64)] =
    &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)];

/// Major number of the devpts slaves, `/dev/pts/*`.
const PTS_MAJOR: i64 = 136;

pub(super) fn check(linux: Option<&Linux>, out: &mut Vec<Violation>) {
    if linux.is_some_and(|l| l.devices().as_ref().is_some_and(|d| !d.is_empty())) {
        out.push(Violation::new(
            "linux.devices",
            "device nodes are not allowed in uploaded bundles",
        ));
    }
    let rules = linux
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.devices().as_deref())
        .unwrap_or_default();
    // Type "a" (or none) covers every device: the kernel ignores numbers and access then.
    let denies_all_first = rules
        .first()
        .is_some_and(|r| !r.allow() && matches!(r.typ(), None | Some(LinuxDeviceType::A)));
    if !denies_all_first {
        out.push(Violation::new(
            "linux.resources.devices",
            "must begin with a rule denying every device ({\"allow\": false, \"access\": \"rwm\"}): \
             without it the container may use every device of the host",
        ));
    }
    for (index, rule) in rules.iter().enumerate() {
        // Deny rules only narrow; an allow rule must stay inside the standard set, so the
        // order of the rules cannot matter.
        if rule.allow()
            && let Err(reason) = check_allow_rule(rule)
        {
            out.push(Violation::new(
                format!("linux.resources.devices[{index}]"),
                reason,
            ));
        }
    }
}

fn check_allow_rule(rule: &LinuxDeviceCgroup) -> Result<(), String> {
    // The runtime spec's defaults: no type means "a", no access means "rwm"; runc also
    // reads a negative number as a wildcard.
    let typ = rule.typ().unwrap_or(LinuxDeviceType::A);
    let access = rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm");
    let major = rule.major().filter(|m| *m >= 0);
    let minor = rule.minor().filter(|m| *m >= 0);
    let describe = || {
        format!(
            "{} {}:{} {access}",
            typ.as_str(),
            number(major),
            number(minor)
        )
    };

    if !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(format!(
            "access {access:?} is not a combination of r, w and m"
        ));
    }
    if typ == LinuxDeviceType::A {
        return Err(format!("allows every device ({})", describe()));
    }
    if access.chars().all(|c| c == 'm') {
        // mknod alone grants no access to the node it creates.
        return Ok(());
    }
    let standard = matches!(typ, LinuxDeviceType::C | LinuxDeviceType::U)
        && match (major, minor) {
            (Some(PTS_MAJOR), _) => true,
            (Some(major), Some(minor)) => STANDARD_CHAR_DEVICES.contains(&(major, minor)),
            _ => false,
        };
    if standard {
        Ok(())
    } else {
        Err(format!(
            "allows {} beyond the standard devices (null, zero, full, random, urandom, tty, ptmx, pts)",
            describe()
        ))
    }
}

fn number(n: Option<i64>) -> String {
    n.map_or_else(|| "*".to_string(), |n| n.to_string())
}
