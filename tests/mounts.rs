//! The container's filesystem: the spec's mounts and their options, the read-only root,
//! masked and read-only paths, /dev and extra devices, sysctls, rootfs propagation.
//!
//! The shared rootfs is never written: new mount points are created under a tmpfs that
//! the test mounts first (at /tmp, which exists in the image).

mod common;

use common::{Bundle, Corral, tempdir};
use serde_json::json;

/// `awk` program printing the mount options (field 6) of the mount at `point`.
fn opts_of(point: &str) -> String {
    format!("awk '$5==\"{point}\" {{print $6}}' /proc/self/mountinfo")
}

/// The super options (after the ` - fstype source` separator) of the mount at `point`.
fn super_opts_of(point: &str) -> String {
    format!(
        "awk '$5==\"{point}\" {{for (i=7; $i!=\"-\"; i++); print $(i+1), $(i+3)}}' /proc/self/mountinfo"
    )
}

#[test]
fn tmpfs_with_size_and_mode() {
    let c = Corral::new("mnt-tmpfs");
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &["size=1m", "mode=1770", "nosuid"])
        .sh(&format!(
            "stat -c %a /tmp; {}; echo data > /tmp/f && cat /tmp/f",
            super_opts_of("/tmp")
        ));
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    assert_eq!(lines[0], "1770", "{out}");
    let mut sup = lines[1].split_whitespace();
    assert_eq!(sup.next(), Some("tmpfs"), "{out}");
    let opts: Vec<&str> = sup.next().unwrap_or("").split(',').collect();
    assert!(opts.contains(&"size=1024k"), "{out}");
    assert!(opts.contains(&"mode=1770"), "{out}");
    assert_eq!(
        lines[2], "data",
        "a tmpfs on a read-only root is writable: {out}"
    );
}

#[test]
fn tmpfs_size_is_enforced() {
    let c = Corral::new("mnt-tmpfsz");
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &["size=64k"])
        .sh("dd if=/dev/zero of=/tmp/big bs=1k count=256 2>&1; echo rc=$?");
    let out = c.run(&c.id("a"), &b).ok();
    assert!(out.stdout.contains("No space left on device"), "{out}");
    assert!(out.stdout.ends_with("rc=1\n"), "{out}");
}

#[test]
fn bind_mount_read_write() {
    let c = Corral::new("mnt-bindrw");
    let host = tempdir("corral-bind-");
    std::fs::write(host.path().join("in"), "from-host\n").unwrap();
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &[])
        .bind(host.path(), "/tmp/data", &[])
        .sh("cat /tmp/data/in; echo from-container > /tmp/data/out");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout, "from-host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "from-container\n"
    );
}

#[test]
fn bind_mount_read_only() {
    let c = Corral::new("mnt-bindro");
    let host = tempdir("corral-bind-");
    std::fs::write(host.path().join("in"), "visible\n").unwrap();
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &[])
        .bind(host.path(), "/tmp/data", &["ro"])
        .sh(&format!(
            "cat /tmp/data/in; echo x > /tmp/data/out; echo rc=$?; {}",
            opts_of("/tmp/data")
        ));
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    assert_eq!(lines[0], "visible", "{out}");
    assert_eq!(lines[1], "rc=1", "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(lines[2].split(',').any(|o| o == "ro"), "{out}");
    assert!(
        !host.path().join("out").exists(),
        "a read-only bind was written through"
    );
}

#[test]
fn bind_mount_of_a_file() {
    let c = Corral::new("mnt-bindf");
    let host = tempdir("corral-bind-");
    let file = host.path().join("greeting");
    std::fs::write(&file, "hello file\n").unwrap();
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &[])
        .bind(&file, "/tmp/sub/greeting", &["ro"])
        .sh("cat /tmp/sub/greeting; stat -c %F /tmp/sub/greeting");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["hello file", "regular file"]);
}

#[test]
fn mount_flags_are_applied() {
    let c = Corral::new("mnt-flags");
    let host = tempdir("corral-bind-");
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &[])
        .mount(
            json!({"destination": "/tmp/t", "type": "tmpfs", "source": "tmpfs",
                      "options": ["nosuid", "nodev", "noexec", "noatime"]}),
        )
        .bind(host.path(), "/tmp/b", &["nosuid", "nodev", "noexec", "ro"])
        .sh(&format!(
            "{}; {}; cp /bin/busybox /tmp/t/bb && /tmp/t/bb true; echo exec-rc=$?",
            opts_of("/tmp/t"),
            opts_of("/tmp/b")
        ));
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    let t: Vec<&str> = lines[0].split(',').collect();
    for f in ["nosuid", "nodev", "noexec", "noatime"] {
        assert!(t.contains(&f), "tmpfs lacks {f}: {out}");
    }
    let bo: Vec<&str> = lines[1].split(',').collect();
    for f in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(bo.contains(&f), "bind mount lacks {f}: {out}");
    }
    assert_eq!(lines[2], "exec-rc=126", "noexec must stop exec: {out}");
}

#[test]
fn readonly_root() {
    let c = Corral::new("mnt-roroot");
    let mut b = Bundle::new();
    b.sh(&format!("touch /x; echo rc=$?; {}", opts_of("/")));
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    assert_eq!(lines[0], "rc=1", "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(lines[1].split(',').any(|o| o == "ro"), "{out}");
}

#[test]
fn writable_root_when_not_readonly() {
    let c = Corral::new("mnt-rwroot");
    let mut b = Bundle::with_rootfs_copy();
    b.set("/root/readonly", json!(false))
        .sh("echo written > /x && cat /x");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout, "written\n");
    assert_eq!(
        std::fs::read_to_string(b.rootfs().join("x")).unwrap(),
        "written\n"
    );
}

#[test]
fn masked_paths() {
    let c = Corral::new("mnt-masked");
    let mut b = Bundle::new();
    // The spec's defaults mask /proc/kcore, /proc/keys, /proc/timer_list (files) and
    // /proc/acpi, /sys/firmware (directories); add a file of the image.
    b.push("/linux/maskedPaths", json!("/etc/hostname")).sh(
        "for f in /proc/kcore /proc/keys /proc/timer_list /etc/hostname; do \
           [ -e $f ] && echo \"$f $(wc -c < $f)\"; done; \
         for d in /proc/acpi /sys/firmware; do [ -d $d ] && echo \"$d $(ls -A $d | wc -l)\"; done; \
         echo x > /sys/firmware/x; echo rc=$?",
    );
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    let host_has = |p: &str| std::path::Path::new(p).exists();
    let mut checked = 0;
    for l in &lines[..lines.len() - 1] {
        let (path, n) = l.split_once(' ').unwrap();
        assert_eq!(n, "0", "{path} is not masked: {out}");
        checked += 1;
    }
    // Every masked path that exists in the image / on this kernel was seen.
    let expected = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/acpi",
        "/sys/firmware",
    ]
    .iter()
    .filter(|p| host_has(p))
    .count()
        + 1;
    assert_eq!(checked, expected, "{out}");
    assert_eq!(
        lines.last().unwrap(),
        "rc=1",
        "masked dir is writable: {out}"
    );
}

#[test]
fn readonly_paths() {
    let c = Corral::new("mnt-ropaths");
    let mut b = Bundle::new();
    b.sh(&format!(
        "echo changed > /proc/sys/kernel/hostname; echo rc=$?; hostname; {}",
        opts_of("/proc/sys")
    ));
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    assert_eq!(lines[0], "rc=1", "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert_eq!(
        lines[1], "youki",
        "hostname changed through a read-only path: {out}"
    );
    assert!(lines[2].split(',').any(|o| o == "ro"), "{out}");
}

#[test]
fn dev_has_the_default_devices_and_links() {
    let c = Corral::new("mnt-dev");
    let mut b = Bundle::new();
    b.sh(
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         for l in ptmx fd stdin stdout stderr; do echo \"$l -> $(readlink /dev/$l)\"; done; \
         echo ls $(ls -A /dev); \
         head -c 3 /dev/zero | wc -c; echo x > /dev/null && echo null-ok; \
         echo x > /dev/full; echo full-rc=$?",
    );
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    let want = [
        "/dev/null character special file 1:3 666",
        "/dev/zero character special file 1:5 666",
        "/dev/full character special file 1:7 666",
        "/dev/random character special file 1:8 666",
        "/dev/urandom character special file 1:9 666",
        "/dev/tty character special file 5:0 666",
        "ptmx -> pts/ptmx",
        "fd -> /proc/self/fd",
        "stdin -> /proc/self/fd/0",
        "stdout -> /proc/self/fd/1",
        "stderr -> /proc/self/fd/2",
    ];
    assert_eq!(lines[..want.len()], want, "{out}");
    let mut listed: Vec<&str> = lines[want.len()].split_whitespace().skip(1).collect();
    listed.retain(|n| *n != "core"); // only where the host has /proc/kcore
    listed.sort();
    assert_eq!(
        listed,
        [
            "fd", "full", "mqueue", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin",
            "stdout", "tty", "urandom", "zero"
        ],
        "/dev must be minimal: {out}"
    );
    assert_eq!(
        lines[want.len() + 1..],
        ["3", "null-ok", "full-rc=1"],
        "{out}"
    );
    assert!(out.stderr.contains("No space left on device"), "{out}");
}

#[test]
fn dev_pts_is_a_private_devpts() {
    let c = Corral::new("mnt-pts");
    let mut b = Bundle::new();
    b.sh(&format!("{}; ls /dev/pts", super_opts_of("/dev/pts")));
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    assert!(lines[0].starts_with("devpts "), "{out}");
    // A new instance: none of the host's ptys are visible.
    assert_eq!(lines[1..], ["ptmx"], "{out}");
}

#[test]
fn extra_devices() {
    let c = Corral::new("mnt-devices");
    let mut b = Bundle::new();
    b.set(
        "/linux/devices",
        json!([
            {"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 0, "gid": 0},
            {"path": "/dev/sub/myzero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o604, "uid": 1000, "gid": 2000},
            {"path": "/dev/myfifo", "type": "p", "fileMode": 0o620}
        ]),
    )
    .sh(
        "stat -c '%F %t:%T %a %u:%g' /dev/mynull /dev/sub/myzero; stat -c '%F %a' /dev/myfifo; \
         echo hi > /dev/mynull && echo write-ok; head -c 2 /dev/sub/myzero | wc -c",
    );
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(
        out.lines(),
        [
            "character special file 1:3 600 0:0",
            "character special file 1:5 604 1000:2000",
            "fifo 620",
            "write-ok",
            "2"
        ],
        "{out}"
    );
}

#[test]
fn sysctl_in_new_namespaces() {
    let c = Corral::new("mnt-sysctl");
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_shm = std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let mut b = Bundle::new();
    b.set(
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}),
    )
    .sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["1", "1"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_fwd
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_shm
    );
}

#[test]
fn rootfs_propagation() {
    let c = Corral::new("mnt-prop");
    // Optional fields (7 up to "-") of the root mount: shared:N / master:N / none.
    let script = "awk '$5==\"/\" {s=\"\"; for (i=7; $i!=\"-\"; i++) s=s\" \"$i; print \"tags\"s}' /proc/self/mountinfo";
    // (value, tag the root must carry, tag it must not carry). The host's / may be
    // private, so a slave root need not show a master: it must just not be shared.
    for (prop, has, lacks) in [
        ("shared", Some("shared:"), None),
        ("rshared", Some("shared:"), None),
        ("private", None, Some(":")),
        ("rprivate", None, Some(":")),
        ("slave", None, Some("shared:")),
        ("rslave", None, Some("shared:")),
        ("unbindable", Some("unbindable"), Some("shared:")),
    ] {
        let mut b = Bundle::new();
        b.set("/linux/rootfsPropagation", json!(prop)).sh(script);
        let out = c.run(&c.id(prop), &b).ok();
        let tags = out.stdout.trim();
        assert!(tags.starts_with("tags"), "{out}");
        if let Some(t) = has {
            assert!(
                tags.contains(t),
                "rootfsPropagation {prop}: root has {tags:?}"
            );
        }
        if let Some(t) = lacks {
            assert!(
                !tags.contains(t),
                "rootfsPropagation {prop}: root has {tags:?}"
            );
        }
    }
}

#[test]
fn mounts_do_not_leak_to_the_host() {
    let c = Corral::new("mnt-leak");
    let id = c.id("a");
    let host = tempdir("corral-bind-");
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &[])
        .bind(host.path(), "/tmp/data", &[])
        .args(&["sleep", "300"]);
    c.create_and_start(&id, &b);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let rootfs = common::rootfs().to_string_lossy().into_owned();
    let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&rootfs)).collect();
    assert!(
        leaked.is_empty(),
        "container mounts visible on the host: {leaked:?}"
    );
}
