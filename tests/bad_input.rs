//! Bad input: every refusal exits non-zero with one line on stderr naming the thing and
//! the reason, and leaves nothing behind (state dir, cgroups, processes, mounts).

mod common;

use std::time::Duration;

use common::{Bundle, Corral, tempdir};
use serde_json::json;

/// A test that `create` refuses the edited config with an error containing `needles`.
macro_rules! bad_config {
    ($name:ident, |$b:ident| $edit:expr, [$($needle:expr),* $(,)?]) => {
        #[test]
        fn $name() {
            let c = Corral::new(stringify!($name));
            let id = c.id("a");
            let mut $b = Bundle::new();
            $b.cgroups_path(&format!("/corral-tests/{id}")).args(&["sleep", "300"]);
            $edit;
            c.create(&id, &$b).one_line_error(&[$($needle),*]);
            c.assert_nothing_left(&id, Some(&$b));
        }
    };
}

#[test]
fn missing_bundle_dir() {
    let c = Corral::new("bad-nobundle");
    let id = c.id("a");
    let dir = tempdir("corral-gone-");
    let missing = dir.path().join("no-such-bundle");
    let out = c.exec(&["create", "--bundle", missing.to_str().unwrap(), &id]);
    out.one_line_error(&[missing.to_str().unwrap(), "No such file"]);
    c.assert_nothing_left(&id, None);
}

#[test]
fn bundle_is_a_file() {
    let c = Corral::new("bad-bundlefile");
    let id = c.id("a");
    let b = Bundle::new();
    b.write();
    let file = b.path().join("config.json");
    let out = c.exec(&["create", "--bundle", file.to_str().unwrap(), &id]);
    out.one_line_error(&[file.to_str().unwrap()]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn bundle_without_config_json() {
    let c = Corral::new("bad-noconfig");
    let id = c.id("a");
    let b = Bundle::new();
    let out = c.exec(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    out.one_line_error(&["config.json", "No such file"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn malformed_json() {
    let c = Corral::new("bad-json");
    let id = c.id("a");
    let b = Bundle::new();
    b.write_raw("{\"ociVersion\": \"1.0.2\", \"process\": ");
    let out = c.exec(&["create", "--bundle", b.path().to_str().unwrap(), &id]);
    out.one_line_error(&["config.json", "EOF", "line 1"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn run_refuses_bad_config_the_same_way() {
    let c = Corral::new("bad-run");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.set("/process/user/uid", json!("x"));
    c.run(&id, &b)
        .one_line_error(&["process.user.uid", "invalid type"]);
    c.assert_nothing_left(&id, Some(&b));
}

bad_config!(
    wrong_type_uid,
    |b| b.set("/process/user/uid", json!("x")),
    ["config.json", "process.user.uid", "invalid type"]
);
bad_config!(
    wrong_type_args,
    |b| b.set("/process/args", json!("sh -c true")),
    ["process.args", "invalid type"]
);
bad_config!(
    wrong_type_readonly,
    |b| b.set("/root/readonly", json!("yes")),
    ["root.readonly"]
);
bad_config!(
    unknown_namespace_type,
    |b| b.push("/linux/namespaces", json!({"type": "bogus"})),
    ["linux.namespaces", "bogus"]
);
bad_config!(
    missing_rootfs,
    |b| b.set("/root/path", json!("/no/such/rootfs")),
    ["root.path", "/no/such/rootfs"]
);
bad_config!(missing_process, |b| b.remove("/process"), ["process"]);
bad_config!(empty_args, |b| b.args(&[]), ["process.args"]);
bad_config!(
    relative_cwd,
    |b| b.set("/process/cwd", json!("tmp")),
    ["process.cwd", "absolute"]
);
bad_config!(
    program_not_in_path,
    |b| b.args(&["no-such-program"]),
    ["no-such-program", "executable file not found"]
);
bad_config!(
    program_missing_by_path,
    |b| b.args(&["/bin/no-such-program"]),
    ["/bin/no-such-program", "No such file"]
);
bad_config!(
    program_not_executable,
    |b| b.args(&["/etc/hostname"]),
    ["/etc/hostname", "Permission denied"]
);
bad_config!(
    program_is_a_directory,
    |b| b.args(&["/etc"]),
    ["/etc", "directory"]
);
bad_config!(
    relative_mount_destination,
    |b| b.mount(json!({"destination": "relative/dir", "type": "tmpfs", "source": "tmpfs"})),
    ["mounts[7].destination", "relative/dir", "absolute"]
);
bad_config!(
    filesystem_refuses_a_mount_option,
    |b| b.tmpfs("/tmp", &["bogus-opt"]),
    ["mount", "/tmp", "Invalid argument"]
);
bad_config!(
    unsupported_mount_option,
    |b| b.tmpfs("/tmp", &["rro"]),
    ["mounts[7].options", "rro", "not supported"]
);
bad_config!(
    bind_mount_source_missing,
    |b| {
        b.tmpfs("/tmp", &[]).mount(json!({"destination": "/tmp/x", "type": "bind", "source": "/no/such/src", "options": ["rbind"]}))
    },
    ["/no/such/src", "No such file"]
);
bad_config!(
    hostname_without_uts_namespace,
    |b| b.without_namespace("uts").set("/hostname", json!("box")),
    ["hostname", "uts namespace"]
);
bad_config!(
    user_namespace_without_mappings,
    |b| b.namespace("user", None),
    ["uidMappings"]
);
bad_config!(
    mappings_without_user_namespace,
    |b| b.set(
        "/linux/uidMappings",
        json!([{"containerID": 0, "hostID": 100000, "size": 1}])
    ),
    ["uidMappings", "user namespace"]
);
bad_config!(
    namespace_path_missing,
    |b| b.namespace("network", Some("/proc/999999999/ns/net")),
    ["linux.namespaces", "/proc/999999999/ns/net"]
);
bad_config!(
    namespace_path_of_the_wrong_type,
    |b| b.namespace("uts", Some("/proc/self/ns/net")),
    ["/proc/self/ns/net"]
);
bad_config!(
    duplicate_namespace,
    |b| b.push("/linux/namespaces", json!({"type": "pid"})),
    ["linux.namespaces", "twice"]
);
bad_config!(
    sysctl_not_namespaced,
    |b| b.set("/linux/sysctl", json!({"kernel.panic": "1"})),
    ["linux.sysctl.kernel.panic", "not a namespaced sysctl"]
);
bad_config!(
    sysctl_without_its_namespace,
    |b| b
        .without_namespace("network")
        .set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"})),
    ["linux.sysctl.net.ipv4.ip_forward", "network namespace"]
);
bad_config!(
    unknown_rlimit,
    |b| b.set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}])
    ),
    ["process.rlimits", "RLIMIT_BOGUS"]
);
bad_config!(
    rlimit_soft_above_hard,
    |b| b.set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": 100, "hard": 10}])
    ),
    ["process.rlimits[0]", "soft"]
);
bad_config!(
    unknown_capability,
    |b| b.capabilities(&["CAP_BOGUS"]),
    ["capabilities", "CAP_BOGUS"]
);
bad_config!(
    device_outside_dev,
    |b| b.set(
        "/linux/devices",
        json!([{"path": "/etc/evil", "type": "c", "major": 1, "minor": 3}])
    ),
    ["linux.devices[0].path", "/etc/evil"]
);
bad_config!(
    time_offsets_without_time_namespace,
    |b| b.set(
        "/linux/timeOffsets",
        json!({"monotonic": {"secs": 1, "nanosecs": 0}})
    ),
    ["linux.timeOffsets", "time namespace"]
);
bad_config!(
    unsupported_field_is_refused_not_ignored,
    |b| b.set("/linux/personality", json!({"domain": "LINUX32"})),
    ["linux.personality", "not supported"]
);

#[test]
fn unknown_signal_leaves_the_container_alone() {
    let c = Corral::new("bad-signal");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    c.create(&id, &b).ok();
    let pid = c.pid(&id);
    c.kill(&id, "SIGBOGUS")
        .one_line_error(&["signal", "SIGBOGUS"]);
    assert_eq!(c.status(&id), "created");
    assert_eq!(c.pid(&id), pid);
    c.start(&id).ok();
    assert_eq!(c.status(&id), "running");
}

#[test]
fn duplicate_id() {
    let c = Corral::new("bad-dup");
    let id = c.id("a");
    let mut first = Bundle::new();
    first.args(&["sleep", "300"]);
    c.create(&id, &first).ok();
    let before = c.state(&id);
    let cgroups_before = common::cgroup_dirs_present(&c.cgroup_path(&id));

    let mut second = Bundle::new();
    second.sh("echo second-ran");
    let out = c
        .cmd()
        .args(["create", "--bundle"])
        .arg({
            second.write();
            second.path()
        })
        .arg(&id)
        .output()
        .unwrap();
    let out = common::Outcome::from_output("corral create (duplicate)", out);
    out.one_line_error(&[&id, "already exists"]);

    // The first container is untouched: same state, cgroups, and it still starts.
    assert_eq!(c.state(&id), before);
    assert_eq!(
        common::cgroup_dirs_present(&c.cgroup_path(&id)),
        cgroups_before
    );
    c.start(&id).ok();
    assert_eq!(c.status(&id), "running");
    assert_eq!(c.state(&id)["bundle"], first.canonical().to_str().unwrap());
}

#[test]
fn start_of_a_stopped_container() {
    let c = Corral::new("bad-startstop");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.sh("echo ran");
    c.create(&id, &b).ok();
    c.start(&id).ok();
    c.wait_status(&id, "stopped", Duration::from_secs(5));
    c.start(&id).one_line_error(&["stopped"]);
    assert_eq!(c.status(&id), "stopped");
    assert_eq!(
        c.container_output(&id).0,
        "ran\n",
        "the process must have run exactly once"
    );
    c.delete(&id).ok();
    c.start(&id).one_line_error(&[&id, "does not exist"]);
}

#[test]
fn invalid_ids() {
    let c = Corral::new("bad-ids");
    let b = Bundle::new();
    b.write();
    let escape = format!("corral-escape-{}", std::process::id());
    let outside = c.root().parent().unwrap().join(&escape);
    let bad = [
        format!("../{escape}"),
        "a/b".into(),
        ".".into(),
        "..".into(),
        String::new(),
        "a b".into(),
    ];
    for id in &bad {
        let out = c.exec(&["create", "--bundle", b.path().to_str().unwrap(), id]);
        out.one_line_error(&["invalid container id"]);
        for cmd in [
            vec!["state", id],
            vec!["start", id],
            vec!["kill", id, "KILL"],
            vec!["delete", id],
        ] {
            c.exec(&cmd).one_line_error(&["invalid container id"]);
        }
    }
    assert!(
        !outside.exists(),
        "{} was created outside the state root",
        outside.display()
    );
    let left: Vec<_> = std::fs::read_dir(c.root())
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "the state root is not empty: {left:?}");
}
