//! The oracle of the policy property test ([`super::prop_tests`], whose docs list the
//! rules): the fields a user-token upload must be refused on, read from the JSON document
//! itself (not through oci-spec), one rule after another.

use std::collections::BTreeSet;

use oci_spec::runtime::{get_default_maskedpaths, get_default_readonly_paths};
use serde_json::Value;

use super::default_capabilities;

const PSEUDO_FS: &[&str] = &[
    "proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2",
];
const REQUIRED_NAMESPACES: &[&str] = &["pid", "ipc", "uts", "mount", "network"];
const STANDARD_CHAR_DEVICES: &[(i64, i64)] =
    &[(1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2)];

/// The fields `doc` must be refused on (empty: it may run).
pub(super) fn refused_fields(doc: &Value, bundle: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut refuse = |field: String| {
        out.insert(field);
    };
    let linux = &doc["linux"];

    match doc["root"].get("path").and_then(Value::as_str) {
        _ if doc["root"].is_null() => refuse("root".into()),
        Some("rootfs" | "rootfs/") => {}
        _ => refuse("root.path".into()),
    }
    if matches!(
        linux["rootfsPropagation"].as_str(),
        Some("shared" | "rshared")
    ) {
        refuse("linux.rootfsPropagation".into());
    }
    for (field, defaults) in [
        ("maskedPaths", get_default_maskedpaths()),
        ("readonlyPaths", get_default_readonly_paths()),
    ] {
        let given = strings(&linux[field]);
        if !defaults.iter().all(|d| given.contains(d)) {
            refuse(format!("linux.{field}"));
        }
    }

    for (i, m) in array(&doc["mounts"]).iter().enumerate() {
        mount(i, m, bundle, &mut refuse);
    }

    let p = &doc["process"];
    if !p.is_null() {
        process(p, &mut refuse);
    }

    let namespaces = array(&linux["namespaces"]);
    if namespaces.iter().any(|n| !n["path"].is_null()) {
        refuse("linux.namespaces".into());
    }
    let listed = |t: &str| namespaces.iter().any(|n| n["type"] == t);
    let new = |t: &str| {
        namespaces
            .iter()
            .any(|n| n["type"] == t && n["path"].is_null())
    };
    if !REQUIRED_NAMESPACES.iter().all(|t| listed(t)) {
        refuse("linux.namespaces".into());
    }
    for which in ["uidMappings", "gidMappings"] {
        for j in root_mappings(&linux[which]) {
            refuse(format!("linux.{which}[{j}]"));
        }
    }

    if !array(&linux["devices"]).is_empty() {
        refuse("linux.devices".into());
    }
    let rules = array(&linux["resources"]["devices"]);
    let denies_all =
        |r: &Value| r["allow"] == false && matches!(r["type"].as_str(), None | Some("a"));
    if !rules.first().is_some_and(denies_all) {
        refuse("linux.resources.devices".into());
    }
    for (i, r) in rules.iter().enumerate() {
        if r["allow"] == true && !allowed_device_rule(r) {
            refuse(format!("linux.resources.devices[{i}]"));
        }
    }

    if let Some(sysctl) = linux["sysctl"].as_object() {
        for key in sysctl.keys() {
            let well_formed = key.split('.').all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            });
            let ns = if key.starts_with("kernel.msg")
                || key == "kernel.sem"
                || key.starts_with("kernel.shm")
                || key.starts_with("fs.mqueue.")
            {
                Some("ipc")
            } else if key.starts_with("net.") {
                Some("network")
            } else {
                None
            };
            if !well_formed || !ns.is_some_and(new) {
                refuse(format!("linux.sysctl[{key:?}]"));
            }
        }
    }

    let seccomp = &linux["seccomp"];
    if seccomp.is_null() {
        refuse("linux.seccomp".into());
    } else {
        let permissive = |a: &Value| matches!(a.as_str(), Some("SCMP_ACT_ALLOW" | "SCMP_ACT_LOG"));
        let restricts = !permissive(&seccomp["defaultAction"])
            || array(&seccomp["syscalls"])
                .iter()
                .any(|r| !permissive(&r["action"]));
        if !restricts {
            refuse("linux.seccomp".into());
        }
        if !seccomp["listenerPath"].is_null() {
            refuse("linux.seccomp.listenerPath".into());
        }
        if strings(&seccomp["flags"])
            .iter()
            .any(|f| f == "SECCOMP_FILTER_FLAG_SPEC_ALLOW")
        {
            refuse("linux.seccomp.flags".into());
        }
    }

    if let Some(hooks) = doc["hooks"].as_object()
        && hooks.values().any(|list| !array(list).is_empty())
    {
        refuse("hooks".into());
    }
    let non_empty = |v: &Value| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    for (field, present) in [
        ("linux.cgroupsPath", !linux["cgroupsPath"].is_null()),
        ("linux.mountLabel", non_empty(&linux["mountLabel"])),
        ("linux.intelRdt", !linux["intelRdt"].is_null()),
        ("linux.personality", !linux["personality"].is_null()),
        ("linux.netDevices", non_empty(&linux["netDevices"])),
        (
            "linux.resources.unified",
            non_empty(&linux["resources"]["unified"]),
        ),
    ] {
        if present {
            refuse(field.into());
        }
    }
    out
}

fn array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    array(v)
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Indexes of the id mappings that map host id 0.
fn root_mappings(v: &Value) -> Vec<usize> {
    array(v)
        .iter()
        .enumerate()
        .filter(|(_, m)| m["hostID"] == 0 && m["size"].as_u64().is_some_and(|s| s > 0))
        .map(|(j, _)| j)
        .collect()
}

/// `/a/./b` as `["a", "b"]`, or `None` when it is relative or has a `..`.
fn absolute_components(path: &str) -> Option<Vec<&str>> {
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return None;
    }
    Some(
        path.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect(),
    )
}

fn mount(i: usize, m: &Value, bundle: &str, refuse: &mut impl FnMut(String)) {
    let field = |name: &str| format!("mounts[{i}].{name}");
    let options = strings(&m["options"]);
    let typ = m["type"].as_str();
    let is_bind = typ == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
    let destination = m["destination"].as_str().and_then(absolute_components);
    if destination.is_none() {
        refuse(field("destination"));
    }
    let source = m["source"].as_str();
    if is_bind {
        let inside = match source {
            None | Some("") => false,
            Some(s) if s.split('/').any(|c| c == "..") => false,
            Some(s) if s.starts_with('/') => absolute_components(s)
                .zip(absolute_components(bundle))
                .is_some_and(|(s, b)| s.starts_with(&b)),
            Some(_) => true,
        };
        if !inside {
            refuse(field("source"));
        }
    } else {
        match typ {
            Some(t) if PSEUDO_FS.contains(&t) => {
                if source.is_some_and(|s| s.contains('/')) {
                    refuse(field("source"));
                }
            }
            _ => refuse(field("type")),
        }
    }
    if let Some(dest) = destination {
        let under = |dir: &[&str]| dest.starts_with(dir);
        let read_only = options
            .iter()
            .rev()
            .find(|o| *o == "ro" || *o == "rw")
            .is_some_and(|o| o == "ro");
        let placement_ok = match if is_bind { "bind" } else { typ.unwrap_or("") } {
            "proc" => dest == ["proc"],
            "sysfs" => dest == ["sys"],
            "cgroup" | "cgroup2" => under(&["sys", "fs", "cgroup"]),
            _ => !under(&["proc"]),
        };
        if !placement_ok {
            refuse(field("destination"));
        } else if matches!(typ, Some("sysfs" | "cgroup" | "cgroup2")) && !is_bind && !read_only {
            refuse(field("options"));
        }
    }
    if options.iter().any(|o| o == "shared" || o == "rshared") {
        refuse(field("options"));
    }
    for which in ["uidMappings", "gidMappings"] {
        for j in root_mappings(&m[which]) {
            refuse(field(&format!("{which}[{j}]")));
        }
    }
}

fn process(p: &Value, refuse: &mut impl FnMut(String)) {
    if p["noNewPrivileges"] != true {
        refuse("process.noNewPrivileges".into());
    }
    let caps = &p["capabilities"];
    if caps.is_null() {
        refuse("process.capabilities".into());
    }
    for set in [
        "bounding",
        "effective",
        "permitted",
        "inheritable",
        "ambient",
    ] {
        if strings(&caps[set])
            .iter()
            .any(|c| !default_capabilities().contains(&c.as_str()))
        {
            refuse(format!("process.capabilities.{set}"));
        }
    }
    let set = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    if set(&p["apparmorProfile"]) {
        refuse("process.apparmorProfile".into());
    }
    if set(&p["selinuxLabel"]) {
        refuse("process.selinuxLabel".into());
    }
    if p["oomScoreAdj"].as_i64().is_some_and(|a| a < 0) {
        refuse("process.oomScoreAdj".into());
    }
    let sched = &p["scheduler"];
    if matches!(
        sched["policy"].as_str(),
        Some("SCHED_FIFO" | "SCHED_RR" | "SCHED_DEADLINE")
    ) {
        refuse("process.scheduler.policy".into());
    }
    if sched["nice"].as_i64().is_some_and(|n| n < 0) {
        refuse("process.scheduler.nice".into());
    }
    if p["ioPriority"]["class"] == "IOPRIO_CLASS_RT" {
        refuse("process.ioPriority.class".into());
    }
    for (i, r) in array(&p["rlimits"]).iter().enumerate() {
        let limit = r["hard"]
            .as_u64()
            .unwrap_or(0)
            .max(r["soft"].as_u64().unwrap_or(0));
        let bad = match r["type"].as_str() {
            Some("RLIMIT_RTPRIO") => limit > 0,
            Some("RLIMIT_NICE") => limit > 20,
            _ => false,
        };
        if bad {
            refuse(format!("process.rlimits[{i}]"));
        }
    }
}

/// An allow rule within the standard set: mknod only, or read/write of a standard
/// character device or of the pts slaves.
fn allowed_device_rule(r: &Value) -> bool {
    let access = match r["access"].as_str() {
        None | Some("") => "rwm",
        Some(a) => a,
    };
    if !access.chars().all(|c| "rwm".contains(c)) {
        return false;
    }
    let typ = r["type"].as_str().unwrap_or("a");
    if typ == "a" {
        return false;
    }
    if access.chars().all(|c| c == 'm') {
        return true;
    }
    let number = |v: &Value| v.as_i64().filter(|n| *n >= 0);
    let (major, minor) = (number(&r["major"]), number(&r["minor"]));
    matches!(typ, "c" | "u")
        && match (major, minor) {
            (Some(136), _) => true,
            (Some(major), Some(minor)) => STANDARD_CHAR_DEVICES.contains(&(major, minor)),
            _ => false,
        }
}
