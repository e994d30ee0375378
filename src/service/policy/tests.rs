use std::path::Path;

use oci_spec::runtime::{Capability, Spec};
use serde_json::{Value, json};

use super::capabilities::cap_name;
use super::mounts::resolve_in_bundle;
use super::{Strictness, Violation, check, default_capabilities};

const BUNDLE: &str = "/var/lib/corral/bundles/b1";

/// What a careful client sends: runc's default spec (new pid, net, ipc, uts, mount and
/// cgroup namespaces, default capabilities, masked paths) plus a seccomp profile, a
/// device cgroup that denies every device, and a bind mount of the bundle's `data`
/// directory (index 7, after the 7 default mounts).
fn safe_json() -> Value {
    let mut v = serde_json::to_value(Spec::default()).unwrap();
    v["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mount", "umount2", "pivot_root"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kexec_load", "init_module"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]
    });
    v["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/data", "type": "bind", "source": "data", "options": ["rbind", "rw"]}));
    v["linux"]["resources"]["devices"] = json!([{"allow": false, "access": "rwm"}]);
    v
}

fn spec(v: Value) -> Spec {
    serde_json::from_value(v).unwrap()
}

fn patched_json(patch: impl FnOnce(&mut Value)) -> Value {
    let mut v = safe_json();
    patch(&mut v);
    v
}

fn patched(patch: impl FnOnce(&mut Value)) -> Spec {
    spec(patched_json(patch))
}

fn violations(spec: &Spec) -> Vec<Violation> {
    match check(spec, Path::new(BUNDLE), Strictness::Enforce) {
        Ok(()) => Vec::new(),
        Err(v) => {
            assert!(!v.is_empty(), "Err must carry violations");
            v
        }
    }
}

fn fields(spec: &Spec) -> Vec<String> {
    violations(spec).into_iter().map(|v| v.field).collect()
}

#[track_caller]
fn assert_only(spec: &Spec, field: &str) {
    let found = violations(spec);
    assert_eq!(
        found.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(),
        vec![field],
        "{found:#?}"
    );
}

#[test]
fn safe_spec_passes() {
    assert_eq!(violations(&spec(safe_json())), vec![]);
}

/// Sets the value at JSON pointer `at`, adding the key (or the next array element) if
/// needed; a `null` clears an optional field.
fn set(v: &mut Value, at: &str, value: &Value) {
    let (parent, key) = at.rsplit_once('/').unwrap();
    match v.pointer_mut(parent) {
        Some(Value::Object(map)) => drop(map.insert(key.to_string(), value.clone())),
        Some(Value::Array(list)) => match key.parse::<usize>().unwrap() {
            i if i == list.len() => list.push(value.clone()),
            i => list[i] = value.clone(),
        },
        _ => panic!("no {parent} in the safe spec"),
    }
}

#[test]
fn each_rule_alone_names_its_field() {
    let mut bounding = json!(default_capabilities());
    bounding
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    let mut namespaces = safe_json()["linux"]["namespaces"].clone();
    namespaces.as_array_mut().unwrap().remove(0);
    let nofile = json!({"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024});
    #[rustfmt::skip]
    let cases: Vec<(&str, &str, Value)> = vec![
        // mounts
        ("mounts[7].source", "/mounts/7/source", json!("../../etc")),
        ("mounts[7].source", "/mounts/7/source", json!("/etc")),
        ("mounts[7].source", "/mounts/7/source", json!("/var/lib/corral/bundles/b10/data")),
        ("mounts[7].source", "/mounts/7", json!({"destination": "/h", "type": "none", "source": "/", "options": ["rbind"]})),
        ("mounts[7].source", "/mounts/7", json!({"destination": "/x", "type": "bind"})),
        ("mounts[7].type", "/mounts/7", json!({"destination": "/x", "type": "ext4", "source": "/dev/sda1"})),
        ("mounts[7].type", "/mounts/7", json!({"destination": "/x", "type": "overlay", "source": "overlay"})),
        ("mounts[7].type", "/mounts/7", json!({"destination": "/x", "source": "x"})),
        ("mounts[7].source", "/mounts/7", json!({"destination": "/t", "type": "tmpfs", "source": "/dev/sda1"})),
        ("mounts[7].destination", "/mounts/7/destination", json!("data")),
        ("mounts[7].destination", "/mounts/7/destination", json!("/a/../proc")),
        ("mounts[7].destination", "/mounts/7/destination", json!("/proc/sys")),
        ("mounts[7].destination", "/mounts/7", json!({"destination": "/p", "type": "proc", "source": "proc"})),
        ("mounts[5].options", "/mounts/5/options", json!(["nosuid", "ro", "rw"])),
        ("mounts[6].options", "/mounts/6/options", json!(["nosuid"])),
        ("mounts[7].options", "/mounts/7/options", json!(["rbind", "rshared"])),
        ("mounts[7].uidMappings[0]", "/mounts/7/uidMappings", json!([{"containerID": 0, "hostID": 0, "size": 1}])),
        // namespaces
        ("linux.namespaces", "/linux/namespaces", namespaces),
        ("linux.namespaces", "/linux/namespaces/1/path", json!("/proc/1/ns/net")),
        ("linux.namespaces", "/linux/namespaces/5", json!({"type": "user", "path": "/proc/1/ns/user"})),
        // capabilities
        ("process.capabilities.bounding", "/process/capabilities/bounding", bounding),
        ("process.capabilities.ambient", "/process/capabilities/ambient", json!(["CAP_SYS_PTRACE"])),
        // hooks
        ("hooks", "/hooks", json!({"prestart": [{"path": "/bin/sh"}]})),
        ("hooks", "/hooks", json!({"createRuntime": [{"path": "/bin/sh"}]})),
        // devices
        ("linux.devices", "/linux/devices", json!([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}])),
        ("linux.resources.devices[1]", "/linux/resources/devices", json!([{"allow": false, "access": "rwm"},
            {"allow": true, "access": "rwm"}])),
        ("linux.resources.devices[1]", "/linux/resources/devices", json!([{"allow": false, "access": "rwm"},
            {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"}])),
        ("linux.resources.devices[1]", "/linux/resources/devices", json!([{"allow": false, "type": "a"},
            {"allow": true, "type": "c", "major": 1, "access": "rw"}])),
        ("linux.resources.devices[1]", "/linux/resources/devices", json!([{"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}])),
        // Without a leading deny-all the cgroup allows every device.
        ("linux.resources.devices", "/linux/resources/devices", json!([])),
        ("linux.resources.devices", "/linux/resources", Value::Null),
        ("linux.resources.devices", "/linux/resources/devices",
            json!([{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])),
        ("linux.resources.devices", "/linux/resources/devices",
            json!([{"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rwm"}])),
        // sysctl
        ("linux.sysctl[\"kernel.core_pattern\"]", "/linux/sysctl", json!({"kernel.core_pattern": "|/x"})),
        ("linux.sysctl[\"net./../kernel/core_pattern\"]", "/linux/sysctl", json!({"net./../kernel/core_pattern": "|/x"})),
        // seccomp
        ("linux.seccomp", "/linux/seccomp", Value::Null),
        ("linux.seccomp", "/linux/seccomp", json!({"defaultAction": "SCMP_ACT_ALLOW"})),
        ("linux.seccomp", "/linux/seccomp", json!({"defaultAction": "SCMP_ACT_LOG",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]})),
        ("linux.seccomp.listenerPath", "/linux/seccomp/listenerPath", json!("/run/containerd/s.sock")),
        ("linux.seccomp.flags", "/linux/seccomp/flags", json!(["SECCOMP_FILTER_FLAG_SPEC_ALLOW"])),
        // id mappings
        ("linux.uidMappings[0]", "/linux/uidMappings", json!([{"containerID": 0, "hostID": 0, "size": 65536}])),
        ("linux.gidMappings[1]", "/linux/gidMappings", json!([{"containerID": 0, "hostID": 100000, "size": 1000},
            {"containerID": 1000, "hostID": 0, "size": 1}])),
        // service-owned fields
        ("linux.cgroupsPath", "/linux/cgroupsPath", json!("/")),
        ("linux.mountLabel", "/linux/mountLabel", json!("system_u:object_r:container_file_t:s0")),
        ("linux.intelRdt", "/linux/intelRdt", json!({"closID": "x"})),
        ("linux.personality", "/linux/personality", json!({"domain": "LINUX32"})),
        ("linux.netDevices", "/linux/netDevices", json!({"eth0": {}})),
        ("linux.resources.unified", "/linux/resources/unified", json!({"memory.max": "max"})),
        // rootfs
        ("root.path", "/root/path", json!("/")),
        ("root.path", "/root/path", json!("../rootfs")),
        ("root", "/root", Value::Null),
        ("linux.rootfsPropagation", "/linux/rootfsPropagation", json!("rshared")),
        ("linux.maskedPaths", "/linux/maskedPaths", json!(["/proc/acpi"])),
        ("linux.readonlyPaths", "/linux/readonlyPaths", json!([])),
        // process
        // Without capabilities the runtime leaves a root process all of them.
        ("process.capabilities", "/process/capabilities", Value::Null),
        ("process.noNewPrivileges", "/process/noNewPrivileges", json!(false)),
        ("process.noNewPrivileges", "/process/noNewPrivileges", Value::Null),
        ("process.apparmorProfile", "/process/apparmorProfile", json!("unconfined")),
        ("process.selinuxLabel", "/process/selinuxLabel", json!("system_u:system_r:spc_t:s0")),
        ("process.oomScoreAdj", "/process/oomScoreAdj", json!(-1000)),
        ("process.scheduler.policy", "/process/scheduler", json!({"policy": "SCHED_FIFO", "priority": 99})),
        ("process.scheduler.nice", "/process/scheduler", json!({"policy": "SCHED_OTHER", "nice": -20})),
        ("process.ioPriority.class", "/process/ioPriority", json!({"class": "IOPRIO_CLASS_RT", "priority": 0})),
        ("process.rlimits[1]", "/process/rlimits", json!([nofile, {"type": "RLIMIT_RTPRIO", "hard": 9, "soft": 9}])),
        ("process.rlimits[1]", "/process/rlimits", json!([nofile, {"type": "RLIMIT_NICE", "hard": 40, "soft": 20}])),
    ];
    for (expected, at, value) in cases {
        let v = patched_json(|v| set(v, at, &value));
        let found = violations(&spec(v));
        let found_fields: Vec<&str> = found.iter().map(|x| x.field.as_str()).collect();
        assert_eq!(
            found_fields,
            vec![expected],
            "{at} = {value}\nviolations: {found:#?}"
        );
    }
}

#[test]
fn accepted_variants() {
    #[rustfmt::skip]
    let cases: Vec<(&str, Value)> = vec![
        ("/mounts/7/source", json!("./data/sub")),
        ("/mounts/7/source", json!(format!("{BUNDLE}/data"))),
        ("/mounts/7/source", json!(BUNDLE)),
        ("/mounts/7", json!({"destination": "/tmp", "type": "tmpfs", "source": "none", "options": ["size=1m"]})),
        ("/mounts/7/destination", json!("/sys/fs/cgroup/data")),
        ("/mounts/6/type", json!("cgroup2")),
        ("/linux/namespaces/6", json!({"type": "user"})),
        ("/linux/namespaces/5", json!({"type": "time"})), // replaces cgroup: optional
        ("/process/capabilities", json!({"bounding": default_capabilities(), "effective": ["CAP_CHOWN"]})),
        ("/process/capabilities", json!({})),
        ("/hooks", json!({"prestart": [], "poststop": []})),
        ("/linux/devices", json!([])),
        ("/linux/resources/devices", json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "access": "m"},
            {"allow": true, "type": "b", "major": -1, "minor": -1, "access": "m"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 9, "access": "rw"},
            {"allow": true, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rwm"}
        ])),
        ("/linux/sysctl", json!({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1024", "kernel.msgmax": "8192",
            "kernel.sem": "250 32000 32 128", "fs.mqueue.msg_max": "10"})),
        ("/linux/uidMappings", json!([{"containerID": 0, "hostID": 100000, "size": 65536}])),
        ("/linux/gidMappings", json!([{"containerID": 0, "hostID": 0, "size": 0}])),
        ("/linux/seccomp", json!({"defaultAction": "SCMP_ACT_ERRNO"})),
        ("/process/apparmorProfile", json!("")),
        ("/process/oomScoreAdj", json!(500)),
        ("/process/scheduler", json!({"policy": "SCHED_BATCH", "nice": 10})),
        ("/linux/maskedPaths/10", json!("/proc/interrupts")),
        ("/linux/rootfsPropagation", json!("rslave")),
        ("/root/path", json!("rootfs/")),
    ];
    for (at, value) in cases {
        let v = patched_json(|v| set(v, at, &value));
        assert_eq!(violations(&spec(v)), vec![], "{at} = {value}");
    }
}

#[test]
fn net_sysctl_needs_a_new_network_namespace() {
    let spec = patched(|v| {
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
        v["linux"]["sysctl"] = json!({"net.ipv4.ip_forward": "1"});
    });
    let found = violations(&spec);
    assert_eq!(
        fields(&spec),
        vec!["linux.namespaces", "linux.sysctl[\"net.ipv4.ip_forward\"]"]
    );
    assert!(found[0].reason.starts_with("network:"), "{found:?}");
    assert!(found[1].reason.contains("network namespace"), "{found:?}");
}

#[test]
fn namespace_reasons_name_the_type() {
    let spec = patched(|v| {
        v["linux"]["namespaces"] =
            json!([{"type": "pid", "path": "/proc/1/ns/pid"}, {"type": "mount"}])
    });
    let reasons: Vec<String> = violations(&spec).into_iter().map(|v| v.reason).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}"); // pid by path; ipc, uts, network missing
    assert!(reasons[0].starts_with("pid: joining"));
    for (reason, name) in reasons[1..].iter().zip(["ipc", "uts", "network"]) {
        assert!(
            reason.starts_with(&format!("{name}: a new namespace is required")),
            "{reason}"
        );
    }
}

#[test]
fn capability_violations_name_set_and_capability() {
    let spec = patched(|v| {
        v["process"]["capabilities"]["effective"] = json!(["CAP_SYS_ADMIN", "CAP_CHOWN", "CAP_BPF"])
    });
    let found = violations(&spec);
    let shown: Vec<String> = found.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "process.capabilities.effective: CAP_BPF is beyond the default capability set",
            "process.capabilities.effective: CAP_SYS_ADMIN is beyond the default capability set",
        ]
    );
}

#[test]
fn all_violations_are_reported() {
    let spec = patched(|v| {
        v["mounts"][7]["source"] = json!("/etc");
        v["hooks"] = json!({"poststart": [{"path": "/bin/true"}]});
        v["linux"]["cgroupsPath"] = json!("/system.slice");
        v["linux"].as_object_mut().unwrap().remove("seccomp");
        v["process"]["noNewPrivileges"] = json!(false);
        v["process"]["capabilities"]["permitted"] = json!(["CAP_NET_ADMIN"]);
    });
    let mut found = fields(&spec);
    found.sort();
    assert_eq!(
        found,
        vec![
            "hooks",
            "linux.cgroupsPath",
            "linux.seccomp",
            "mounts[7].source",
            "process.capabilities.permitted",
            "process.noNewPrivileges",
        ]
    );
}

#[test]
fn empty_spec_is_refused_with_every_missing_protection() {
    let found = fields(&spec(
        json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}}}),
    ));
    for field in [
        "root",
        "linux.namespaces",
        "linux.seccomp",
        "linux.maskedPaths",
        "linux.readonlyPaths",
        "process.noNewPrivileges",
    ] {
        assert!(
            found.iter().any(|f| f == field),
            "{field} missing from {found:?}"
        );
    }
}

#[test]
fn relaxed_passes_a_hostile_spec() {
    let hostile = patched(|v| {
        v["mounts"][7] = json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rshared"]});
        v["linux"]["namespaces"] = json!([{"type": "pid", "path": "/proc/1/ns/pid"}]);
        v["linux"].as_object_mut().unwrap().remove("seccomp");
        v["linux"]["sysctl"] = json!({"kernel.core_pattern": "|/evil"});
        v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 0, "size": 1}]);
        v["hooks"] = json!({"createRuntime": [{"path": "/bin/sh"}]});
        v["process"]["capabilities"]["bounding"] = json!(["CAP_SYS_ADMIN"]);
        v["process"]["noNewPrivileges"] = json!(false);
        v["root"]["path"] = json!("/");
    });
    assert!(fields(&hostile).len() >= 9);
    assert_eq!(
        check(&hostile, Path::new(BUNDLE), Strictness::Relaxed),
        Ok(())
    );
}

#[test]
fn bind_mount_sources() {
    assert_only(
        &patched(|v| v["mounts"][7]["source"] = json!("../../etc")),
        "mounts[7].source",
    );
    assert_only(
        &patched(|v| v["mounts"][7]["source"] = json!("/etc")),
        "mounts[7].source",
    );
    assert_eq!(
        violations(&patched(|v| v["mounts"][7]["source"] = json!("data"))),
        vec![]
    );
}

#[test]
fn bind_sources_resolve_lexically_inside_the_bundle() {
    let bundle = Path::new(BUNDLE);
    assert_eq!(
        resolve_in_bundle(Path::new("data"), bundle).unwrap(),
        bundle.join("data")
    );
    assert_eq!(
        resolve_in_bundle(Path::new("./data/./x"), bundle).unwrap(),
        bundle.join("data/x")
    );
    for bad in [
        "../../etc",
        "/etc",
        "data/../../b2",
        "data/..",
        "/var/lib/corral/bundles/b1/../b2",
        "/var/lib/corral/bundles",
        "",
    ] {
        assert!(
            resolve_in_bundle(Path::new(bad), bundle).is_err(),
            "{bad:?} accepted"
        );
    }
    assert!(resolve_in_bundle(Path::new("data"), Path::new("/a/../b")).is_err());
}

#[test]
fn violation_text_escapes_spec_values() {
    let spec = patched(|v| v["mounts"][7]["source"] = json!("/etc\n\u{1b}[31m"));
    let text = violations(&spec)[0].to_string();
    assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
    assert!(text.starts_with("mounts[7].source: \"/etc\\n"), "{text}");
}

#[test]
fn default_capabilities_are_runc_defaults_and_known_to_oci_spec() {
    let names = default_capabilities();
    assert_eq!(names.len(), 14);
    for name in names {
        let capability: Capability = serde_json::from_value(json!(name)).unwrap();
        assert_eq!(&cap_name(&capability), name);
    }
    assert_eq!(cap_name(&Capability::SysAdmin), "CAP_SYS_ADMIN");
}
