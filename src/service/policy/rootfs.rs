//! The root file system: the bundle's own `rootfs`, not shared with the host, with the
//! default masked and read-only paths at least.

use std::path::Path;

use oci_spec::runtime::{Linux, Root, get_default_maskedpaths, get_default_readonly_paths};

use super::Violation;

pub(super) fn check(root: Option<&Root>, linux: Option<&Linux>, out: &mut Vec<Violation>) {
    match root {
        None => out.push(Violation::new(
            "root",
            "required: the root must be the bundle's \"rootfs\"",
        )),
        Some(root) if root.path() != Path::new("rootfs") => out.push(Violation::new(
            "root.path",
            format!(
                "{:?} is not allowed: the root must be the bundle's \"rootfs\"",
                root.path()
            ),
        )),
        Some(_) => {}
    }

    let propagation = linux.and_then(|l| l.rootfs_propagation().as_deref());
    if matches!(propagation, Some("shared" | "rshared")) {
        out.push(Violation::new(
            "linux.rootfsPropagation",
            "shared propagation would connect the container's mounts with the host's",
        ));
    }

    let masked = linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or_default();
    check_superset("linux.maskedPaths", masked, &get_default_maskedpaths(), out);
    let readonly = linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or_default();
    check_superset(
        "linux.readonlyPaths",
        readonly,
        &get_default_readonly_paths(),
        out,
    );
}

/// A request may mask more, never less.
fn check_superset(field: &str, given: &[String], required: &[String], out: &mut Vec<Violation>) {
    let missing: Vec<&str> = required
        .iter()
        .filter(|r| !given.contains(r))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        out.push(Violation::new(
            field,
            format!("must include the defaults; missing {}", missing.join(", ")),
        ));
    }
}
