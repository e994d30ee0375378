//! Mount rules: bind sources stay inside the bundle, every other mount is one of the
//! kernel's pseudo file systems, and nothing hides or duplicates the masked `/proc`.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use super::Violation;
use super::idmap;

/// File systems an uploaded bundle may mount (besides binds from inside the bundle).
const PSEUDO_FS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];

pub(super) fn check(mounts: &[Mount], bundle_dir: &Path, out: &mut Vec<Violation>) {
    for (index, mount) in mounts.iter().enumerate() {
        check_mount(index, mount, bundle_dir, out);
    }
}

fn check_mount(index: usize, mount: &Mount, bundle_dir: &Path, out: &mut Vec<Violation>) {
    let field = |name: &str| format!("mounts[{index}].{name}");
    let options = mount.options().as_deref().unwrap_or_default();
    let typ = mount.typ().as_deref();
    let is_bind = typ == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");

    let destination = match normalize_destination(mount.destination()) {
        Ok(destination) => Some(destination),
        Err(reason) => {
            out.push(Violation::new(field("destination"), reason));
            None
        }
    };

    if is_bind {
        match mount.source() {
            None => out.push(Violation::new(
                field("source"),
                "a bind mount needs a source inside the bundle",
            )),
            Some(source) => {
                if let Err(reason) = resolve_in_bundle(source, bundle_dir) {
                    out.push(Violation::new(field("source"), reason));
                }
            }
        }
    } else {
        match typ {
            Some(t) if PSEUDO_FS.contains(&t) => {
                if mount.source().as_ref().is_some_and(|s| is_path_like(s)) {
                    out.push(Violation::new(
                        field("source"),
                        format!("a {t} mount takes a name, not a host path"),
                    ));
                }
            }
            Some(t) => out.push(Violation::new(
                field("type"),
                format!(
                    "{t:?} is not allowed (only binds from inside the bundle and {})",
                    PSEUDO_FS.join(", ")
                ),
            )),
            None => out.push(Violation::new(
                field("type"),
                "missing (only binds from inside the bundle and pseudo file systems are allowed)",
            )),
        }
    }

    if let Some(destination) = destination {
        let typ = if is_bind {
            "bind"
        } else {
            typ.unwrap_or_default()
        };
        if let Err((name, reason)) = check_placement(typ, &destination, options) {
            out.push(Violation::new(field(name), reason));
        }
    }

    if options.iter().any(|o| o == "shared" || o == "rshared") {
        out.push(Violation::new(
            field("options"),
            "shared propagation would connect the container's mounts with the host's",
        ));
    }

    idmap::check_mappings(&field("uidMappings"), mount.uid_mappings().as_deref(), out);
    idmap::check_mappings(&field("gidMappings"), mount.gid_mappings().as_deref(), out);
}

/// Where each pseudo file system may go; nothing but `proc` may be mounted at or under
/// `/proc` (an over-mount there would hide or dodge the masked paths, the CVE-2019-16884
/// class), and the writable-to-root host views, `sysfs` and `cgroup`, must be read-only.
fn check_placement(
    typ: &str,
    destination: &Path,
    options: &[String],
) -> Result<(), (&'static str, String)> {
    let under = |dir: &str| destination.starts_with(dir);
    let misplaced = |reason: String| Err(("destination", reason));
    match typ {
        "proc" if destination != Path::new("/proc") => {
            misplaced("proc may only be mounted at /proc".into())
        }
        "sysfs" if destination != Path::new("/sys") => {
            misplaced("sysfs may only be mounted at /sys".into())
        }
        "cgroup" | "cgroup2" if !under("/sys/fs/cgroup") => misplaced(format!(
            "{typ} may only be mounted at or under /sys/fs/cgroup"
        )),
        "sysfs" | "cgroup" | "cgroup2" if !is_read_only(options) => Err((
            "options",
            format!("{typ} must be mounted read-only (option \"ro\")"),
        )),
        "proc" | "sysfs" | "cgroup" | "cgroup2" => Ok(()),
        _ if under("/proc") => misplaced("only proc may be mounted at or under /proc".into()),
        _ => Ok(()),
    }
}

/// The last of `ro`/`rw` wins, as when the runtime turns options into mount flags.
fn is_read_only(options: &[String]) -> bool {
    options
        .iter()
        .rev()
        .find(|o| *o == "ro" || *o == "rw")
        .is_some_and(|o| o == "ro")
}

/// A source that names a host path rather than a file system instance.
fn is_path_like(source: &Path) -> bool {
    source.as_os_str().as_encoded_bytes().contains(&b'/')
}

/// The destination as an absolute path without `.` components; no `..` allowed.
fn normalize_destination(destination: &Path) -> Result<PathBuf, String> {
    if !destination.is_absolute() {
        return Err(format!("{destination:?} is not an absolute path"));
    }
    if has_parent_component(destination) {
        return Err(format!("{destination:?} contains a `..` component"));
    }
    Ok(without_cur_dir(destination))
}

/// Resolves a bind-mount `source` lexically against `bundle_dir` (relative sources are
/// relative to it) and returns it if it lies inside the bundle directory.
///
/// No symlink is followed and none can be seen from here: the mounting code must open the
/// result beneath the bundle with `RESOLVE_IN_ROOT`/`RESOLVE_NO_SYMLINKS`.
pub(super) fn resolve_in_bundle(source: &Path, bundle_dir: &Path) -> Result<PathBuf, String> {
    if source.as_os_str().is_empty() {
        return Err("empty source".into());
    }
    if has_parent_component(source) {
        return Err(format!("{source:?} contains a `..` component"));
    }
    if has_parent_component(bundle_dir) {
        return Err("the bundle directory is not a normalized path".into());
    }
    let bundle = without_cur_dir(bundle_dir);
    let resolved = without_cur_dir(&bundle.join(source));
    if resolved.starts_with(&bundle) {
        Ok(resolved)
    } else {
        Err(format!("{source:?} is outside the bundle directory"))
    }
}

fn has_parent_component(path: &Path) -> bool {
    path.components().any(|c| c == Component::ParentDir)
}

fn without_cur_dir(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}
