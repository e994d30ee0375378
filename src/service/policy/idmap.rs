//! User-namespace id mappings: host root must never be mapped into a container.

use oci_spec::runtime::{Linux, LinuxIdMapping};

use super::Violation;

pub(super) fn check_linux(linux: Option<&Linux>, out: &mut Vec<Violation>) {
    let Some(linux) = linux else { return };
    check_mappings("linux.uidMappings", linux.uid_mappings().as_deref(), out);
    check_mappings("linux.gidMappings", linux.gid_mappings().as_deref(), out);
}

/// Flags every range of `mappings` (at JSON path `field`) that covers host id 0.
pub(super) fn check_mappings(
    field: &str,
    mappings: Option<&[LinuxIdMapping]>,
    out: &mut Vec<Violation>,
) {
    for (index, mapping) in mappings.unwrap_or_default().iter().enumerate() {
        if covers_host_root(mapping) {
            out.push(Violation::new(
                format!("{field}[{index}]"),
                "privileged id mappings: the range covers host id 0 (root)",
            ));
        }
    }
}

/// A range `[hostID, hostID + size)` covers 0 exactly when it starts at 0 and is non-empty.
fn covers_host_root(mapping: &LinuxIdMapping) -> bool {
    mapping.host_id() == 0 && mapping.size() > 0
}
