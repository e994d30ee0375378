//! Namespaces: new ones differ from the host's, settings inside them (hostname, id maps,
//! time offsets) are visible from inside, and namespaces can be joined by path.

mod common;

use std::time::Duration;

use common::{Bundle, Corral, ns_link};
use serde_json::json;

#[test]
fn hostname_from_config() {
    let c = Corral::new("iso-host");
    let mut b = Bundle::new();
    b.set("/hostname", json!("corral-test-box"))
        .sh("hostname; cat /proc/sys/kernel/hostname");
    let host_before = nix::unistd::gethostname().unwrap();
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["corral-test-box", "corral-test-box"]);
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host_before,
        "the host's hostname changed"
    );
}

#[test]
fn domainname_from_config() {
    let c = Corral::new("iso-domain");
    let mut b = Bundle::new();
    b.set("/domainname", json!("corral.example"))
        .sh("cat /proc/sys/kernel/domainname");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout.trim(), "corral.example");
}

#[test]
fn new_namespaces_differ_from_the_host() {
    let c = Corral::new("iso-ns");
    let names = ["uts", "ipc", "pid", "net", "mnt", "cgroup"];
    let mut b = Bundle::new();
    let script: String = names
        .iter()
        .map(|n| format!("readlink /proc/self/ns/{n}; "))
        .collect();
    b.sh(&script);
    let out = c.run(&c.id("a"), &b).ok();
    let inside = out.lines();
    assert_eq!(inside.len(), names.len(), "{out}");
    for (name, link) in names.iter().zip(&inside) {
        let host = ns_link("self", name);
        assert!(link.starts_with(&format!("{name}:[")), "{name}: {link}");
        assert_ne!(
            *link, host,
            "the container shares the host's {name} namespace"
        );
    }
}

#[test]
fn namespace_not_listed_is_shared_with_the_host() {
    let c = Corral::new("iso-share");
    let mut b = Bundle::new();
    b.without_namespace("network")
        .without_namespace("ipc")
        .sh("readlink /proc/self/ns/net; readlink /proc/self/ns/ipc");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(
        out.lines(),
        [ns_link("self", "net"), ns_link("self", "ipc")]
    );
}

#[test]
fn pid_namespace_makes_the_process_pid_1() {
    let c = Corral::new("iso-pid");
    let mut b = Bundle::new();
    // `echo` is a builtin: the shell is the only process, and it sees only itself.
    b.sh("echo $$; echo /proc/[0-9]*");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["1", "/proc/1"], "{out}");
}

#[test]
fn network_namespace_has_only_loopback() {
    let c = Corral::new("iso-net");
    let mut b = Bundle::new();
    b.sh("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["lo"]);
}

#[test]
fn mount_namespace_hides_host_mounts() {
    let c = Corral::new("iso-mnt");
    let mut b = Bundle::new();
    b.sh("cut -d' ' -f5 /proc/self/mountinfo");
    let out = c.run(&c.id("a"), &b).ok();
    let points = out.lines();
    assert_eq!(points[0], "/", "{out}");
    // Nothing of the host's tree (for example the rootfs' own location) is visible.
    let rootfs = common::rootfs().to_string_lossy().into_owned();
    for p in &points {
        assert!(
            !p.starts_with(&rootfs) && !p.starts_with("/work"),
            "host mount {p} visible"
        );
    }
    for want in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ] {
        assert!(
            points.iter().any(|p| p == want),
            "{want} not mounted: {points:?}"
        );
    }
}

fn user_ns_bundle() -> Bundle {
    let mut b = Bundle::new();
    b.namespace("user", None)
        .set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
        )
        .set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 200000, "size": 65536}]),
        );
    b
}

#[test]
fn user_namespace_maps_ids() {
    let c = Corral::new("iso-user");
    let id = c.id("a");
    let mut b = user_ns_bundle();
    b.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; readlink /proc/self/ns/user");
    let out = c.run(&id, &b).ok();
    let lines: Vec<Vec<String>> = out
        .lines()
        .iter()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "{out}");
    assert_eq!(lines[1], ["0", "200000", "65536"], "{out}");
    assert_eq!(lines[2], ["0"], "{out}");
    assert_eq!(lines[3], ["0"], "{out}");
    assert_ne!(lines[4][0], ns_link("self", "user"), "{out}");
}

#[test]
fn user_namespace_root_is_an_unprivileged_host_uid() {
    let c = Corral::new("iso-userh");
    let id = c.id("a");
    let mut b = user_ns_bundle();
    b.args(&["sleep", "300"]);
    let pid = c.create_and_start(&id, &b);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = common::proc_status_field(&status, "Uid").unwrap();
    let gid = common::proc_status_field(&status, "Gid").unwrap();
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        ["100000"; 4],
        "{status}"
    );
    assert_eq!(
        gid.split_whitespace().collect::<Vec<_>>(),
        ["200000"; 4],
        "{status}"
    );
}

#[test]
fn time_namespace_offsets() {
    let c = Corral::new("iso-time");
    let mut b = Bundle::new();
    b.namespace("time", None)
        .set(
            "/linux/timeOffsets",
            json!({"monotonic": {"secs": 864000, "nanosecs": 0}, "boottime": {"secs": 1728000, "nanosecs": 0}}),
        )
        .sh("cat /proc/self/timens_offsets; cut -d. -f1 /proc/uptime; readlink /proc/self/ns/time");
    let host_uptime = || -> u64 {
        std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let supported = std::path::Path::new("/proc/self/ns/time").exists();
    let before = host_uptime();
    let out = c.run(&c.id("a"), &b);
    let after = host_uptime();
    if !supported {
        // Without kernel support the request must fail, clearly, not be ignored.
        out.one_line_error(&["time"]);
        return;
    }
    let out = out.ok();
    let lines = out.lines();
    assert_ne!(
        lines[3],
        ns_link("self", "time"),
        "the container is in the host's time namespace"
    );
    let mut offsets: Vec<Vec<&str>> = lines[..2]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    offsets.sort();
    assert_eq!(
        offsets,
        [
            vec!["boottime", "1728000", "0"],
            vec!["monotonic", "864000", "0"]
        ],
        "{out}"
    );
    // /proc/uptime follows CLOCK_BOOTTIME of the reader's time namespace.
    let inside: u64 = lines[2].parse().unwrap();
    assert!(
        (before + 1728000..=after + 1728000 + 1).contains(&inside),
        "uptime inside {inside}, host {before}..{after}"
    );
}

#[test]
fn time_namespace_offsets_do_not_touch_the_host() {
    let c = Corral::new("iso-time2");
    let mut b = Bundle::new();
    b.namespace("time", None)
        .set(
            "/linux/timeOffsets",
            json!({"monotonic": {"secs": 1000, "nanosecs": 0}}),
        )
        .args(&["true"]);
    let before = ns_link("self", "time_for_children");
    c.run(&c.id("a"), &b).ok();
    assert_eq!(
        ns_link("self", "time"),
        ns_link("self", "time_for_children")
    );
    assert_eq!(ns_link("self", "time_for_children"), before);
}

#[test]
fn join_network_namespace_by_path() {
    let c = Corral::new("iso-join");
    let a = c.id("a");
    let mut ba = Bundle::new();
    ba.args(&["sleep", "300"]);
    c.create(&a, &ba).ok();
    let pid_a = c.pid(&a);
    let net_a = ns_link(&pid_a.to_string(), "net");
    assert_ne!(net_a, ns_link("self", "net"));

    let mut bb = Bundle::new();
    bb.namespace("network", Some(&format!("/proc/{pid_a}/ns/net")))
        .sh("readlink /proc/self/ns/net");
    let out = c.run(&c.id("b"), &bb).ok();
    assert_eq!(out.stdout.trim(), net_a);
}

#[test]
fn join_uts_and_ipc_namespaces_by_path() {
    let c = Corral::new("iso-joinuts");
    let a = c.id("a");
    let mut ba = Bundle::new();
    ba.set("/hostname", json!("alpha")).args(&["sleep", "300"]);
    let pid_a = c.create_and_start(&a, &ba);

    let mut bb = Bundle::new();
    bb.remove("/hostname")
        .namespace("uts", Some(&format!("/proc/{pid_a}/ns/uts")))
        .namespace("ipc", Some(&format!("/proc/{pid_a}/ns/ipc")))
        .sh("hostname; readlink /proc/self/ns/ipc");
    let out = c.run(&c.id("b"), &bb).ok();
    assert_eq!(
        out.lines(),
        ["alpha".to_string(), ns_link(&pid_a.to_string(), "ipc")]
    );
    assert_eq!(
        c.status(&a),
        "running",
        "the joined container was disturbed"
    );
}

#[test]
fn join_pid_namespace_by_path() {
    let c = Corral::new("iso-joinpid");
    let a = c.id("a");
    let mut ba = Bundle::new();
    ba.args(&["sleep", "300"]);
    let pid_a = c.create_and_start(&a, &ba);

    let mut bb = Bundle::new();
    bb.namespace("pid", Some(&format!("/proc/{pid_a}/ns/pid")))
        .sh("echo $$; cat /proc/1/cmdline | tr '\\0' ' '");
    let out = c.run(&c.id("b"), &bb).ok();
    let lines = out.lines();
    assert_ne!(lines[0], "1", "{out}");
    assert_eq!(lines[1].trim(), "sleep 300", "{out}");
    // The joiner's exit does not take the namespace's init with it.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(c.status(&a), "running");
}

/// The mount points beneath `dir` in this process's mount namespace (the host's).
fn mounts_below(dir: &std::path::Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&format!("{dir}/")))
        .map(String::from)
        .collect()
}

/// A config that lists no mount namespace: the container inherits the runtime's, as the
/// runtime spec says. It enters its rootfs with chroot (never pivot_root, which would
/// move the host's root), `exec` runs inside that root, and `delete` detaches the mounts
/// it made beneath the rootfs. What would change mounts outside it is refused by name.
#[test]
fn without_a_mount_namespace_the_container_shares_the_runtimes() {
    let c = Corral::new("iso-nomnt");
    let mut b = Bundle::with_rootfs_copy();
    let rootfs = std::fs::canonicalize(b.rootfs()).unwrap();
    std::fs::write(rootfs.join("marker"), "inside\n").unwrap();
    b.without_namespace("mount")
        .remove("/linux/maskedPaths")
        .remove("/linux/readonlyPaths")
        .set("/root/readonly", json!(false))
        .args(&["sleep", "300"]);
    let id = c.id("a");
    let pid = c.create_and_start(&id, &b);
    assert_eq!(
        ns_link(&pid.to_string(), "mnt"),
        ns_link("self", "mnt"),
        "the container got a mount namespace of its own"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).unwrap(),
        rootfs,
        "the init's root is not its rootfs"
    );
    let mounted = mounts_below(&rootfs);
    let proc_dir = format!("{}/proc", rootfs.display());
    assert!(mounted.contains(&proc_dir), "{mounted:?}");
    // exec runs in the container's root, not the host's.
    let out = c.exec(&["exec", &id, "cat", "/marker"]).ok();
    assert_eq!(out.stdout, "inside\n");
    let out = c.exec(&["exec", &id, "readlink", "/proc/self/root"]).ok();
    assert_eq!(out.stdout, "/\n");
    c.kill(&id, "SIGKILL").ok();
    c.wait_status(&id, "stopped", Duration::from_secs(10));
    c.delete(&id).ok();
    assert_eq!(mounts_below(&rootfs), Vec::<String>::new(), "mounts left");

    // What would change the runtime's mounts needs a mount namespace.
    for (pointer, value, field) in [
        (
            "/linux/maskedPaths",
            json!(["/proc/kcore"]),
            "linux.maskedPaths",
        ),
        (
            "/linux/readonlyPaths",
            json!(["/proc/sys"]),
            "linux.readonlyPaths",
        ),
        ("/root/readonly", json!(true), "root.readonly"),
        (
            "/linux/rootfsPropagation",
            json!("shared"),
            "linux.rootfsPropagation",
        ),
    ] {
        let mut bad = Bundle::new();
        bad.without_namespace("mount")
            .remove("/linux/maskedPaths")
            .remove("/linux/readonlyPaths")
            .set("/root/readonly", json!(false))
            .set(pointer, value)
            .args(&["true"]);
        c.run(&c.id("bad"), &bad)
            .one_line_error(&[field, "mount namespace"]);
    }
    assert_eq!(mounts_below(&rootfs), Vec::<String>::new());
}
