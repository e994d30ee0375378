//! `linux.resources` and `linux.cgroupsPath` on this cgroup v1 (hybrid) host: limits are
//! visible inside the container (through the `cgroup` mount of the default spec) and on
//! the host, the container's processes are in its cgroup, and delete removes it.

mod common;

use std::time::Duration;

use common::{Bundle, Corral, cgroup_dir, cgroup_dirs_present, processes_matching, wait_gone};
use serde_json::json;

const STOP: Duration = Duration::from_secs(5);

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A bundle with its own cgroupsPath, so every test knows where to look.
fn bundle(id: &str) -> (Bundle, String) {
    let path = format!("/corral-tests/{id}");
    let mut b = Bundle::new();
    b.cgroups_path(&path);
    (b, path)
}

#[test]
fn the_default_spec_mounts_the_containers_cgroups_read_only() {
    let c = Corral::new("cg-mount");
    let mut b = Bundle::new();
    b.sh(
        "ls /sys/fs/cgroup; grep -c . /sys/fs/cgroup/pids/cgroup.procs; \
         echo 1 > /sys/fs/cgroup/pids/pids.max; echo rc=$?",
    );
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    for ctrl in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        assert!(
            lines.iter().any(|l| l == ctrl),
            "{ctrl} missing from /sys/fs/cgroup: {out}"
        );
    }
    // The container sees its own cgroup, holding just its shell (and grep).
    assert!(lines.iter().any(|l| l == "2"), "{out}");
    assert_eq!(
        lines.last().unwrap(),
        "rc=1",
        "the cgroup mount is writable: {out}"
    );
    assert!(out.stderr.contains("Read-only file system"), "{out}");
}

#[test]
fn memory_limit() {
    let c = Corral::new("cg-mem");
    let id = c.id("a");
    let (mut b, path) = bundle(&id);
    b.resources(json!({"memory": {"limit": 64 * 1024 * 1024}}))
        .sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes; exec sleep 300");
    let pid = c.create_and_start(&id, &b);
    let host = cgroup_dir("memory", &path);
    assert_eq!(read(&host.join("memory.limit_in_bytes")), "67108864");
    let procs = read(&host.join("cgroup.procs"));
    assert!(
        procs.split_whitespace().any(|p| p == pid.to_string()),
        "init {pid} not in {procs:?}"
    );
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.lines().any(|l| l.ends_with(&format!(":memory:{path}"))),
        "{cg}"
    );
    c.wait_output(&id, 1);
    assert_eq!(c.container_output(&id).0.trim(), "67108864");
}

#[test]
fn memory_limit_is_enforced() {
    let c = Corral::new("cg-oom");
    let id = c.id("a");
    let (mut b, _) = bundle(&id);
    // No swap beyond the limit (swap = limit): the shell reads 64 MiB into a variable,
    // which cannot fit in 16 MiB.
    b.resources(json!({"memory": {"limit": 16 * 1024 * 1024, "swap": 16 * 1024 * 1024}}))
        .sh("x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}");
    let out = c.run(&id, &b);
    // The shell, by far the biggest process, is OOM-killed (SIGKILL).
    assert!(
        !out.stdout.contains("survived"),
        "the limit was not enforced: {out}"
    );
    assert_eq!(out.code, Some(128 + 9), "{out}");
}

#[test]
fn pids_limit() {
    let c = Corral::new("cg-pids");
    let id = c.id("a");
    let (mut b, path) = bundle(&id);
    b.resources(json!({"pids": {"limit": 32}}))
        .sh("cat /sys/fs/cgroup/pids/pids.max; exec sleep 300");
    c.create_and_start(&id, &b);
    assert_eq!(read(&cgroup_dir("pids", &path).join("pids.max")), "32");
    assert_eq!(c.wait_output(&id, 1).trim(), "32", "pids.max seen inside");
}

#[test]
fn fork_bomb_is_bounded_by_the_pids_limit() {
    let c = Corral::new("cg-fork");
    let id = c.id("a");
    let (mut b, _) = bundle(&id);
    // `[`, `echo` and arithmetic are builtins: the only forks are the sleeps.
    b.resources(json!({"pids": {"limit": 10}}))
        .sh("i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); echo $i; done; echo all-forked");
    let out = c.run(&id, &b);
    let started: Vec<u32> = out.lines().iter().filter_map(|l| l.parse().ok()).collect();
    assert!(
        !out.stdout.contains("all-forked"),
        "40 processes in a cgroup limited to 10: {out}"
    );
    let n = started.last().copied().unwrap_or(0);
    // The shell plus at most 9 sleeps.
    assert!(n <= 9, "{n} children with pids.max = 10: {out}");
    assert!(out.stderr.contains("can't fork"), "{out}");
}

#[test]
fn cpu_shares_and_quota() {
    let c = Corral::new("cg-cpu");
    let id = c.id("a");
    let (mut b, path) = bundle(&id);
    b.resources(json!({"cpu": {"shares": 512, "quota": 50000, "period": 100000}}))
        .sh("cd /sys/fs/cgroup/cpu && cat cpu.shares cpu.cfs_quota_us cpu.cfs_period_us");
    let id2 = c.id("b");
    let (mut b2, path2) = bundle(&id2);
    b2.config["linux"]["resources"] = b.config["linux"]["resources"].clone();
    b2.args(&["sleep", "300"]);
    c.create_and_start(&id2, &b2);
    let host = cgroup_dir("cpu", &path2);
    assert_eq!(read(&host.join("cpu.shares")), "512");
    assert_eq!(read(&host.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(&host.join("cpu.cfs_period_us")), "100000");

    let out = c.run(&id, &b).ok();
    assert_eq!(out.lines(), ["512", "50000", "100000"]);
    assert!(
        cgroup_dirs_present(&path).is_empty(),
        "run left cgroups behind"
    );
}

#[test]
fn cgroup_dirs_exist_while_alive_and_are_removed_by_delete() {
    let c = Corral::new("cg-life");
    let id = c.id("a");
    let (mut b, path) = bundle(&id);
    b.args(&["sleep", "300"]);
    c.create(&id, &b).ok();
    for ctrl in ["memory", "pids", "cpu", "devices", "freezer"] {
        let d = cgroup_dir(ctrl, &path);
        assert!(
            d.is_dir(),
            "no {ctrl} cgroup at {} for a created container",
            d.display()
        );
    }
    c.start(&id).ok();
    c.kill(&id, "KILL").ok();
    c.wait_status(&id, "stopped", STOP);
    c.delete(&id).ok();
    let left = cgroup_dirs_present(&path);
    assert!(left.is_empty(), "delete left cgroups behind: {left:?}");
}

#[test]
fn default_cgroup_path_is_under_corral() {
    let c = Corral::new("cg-default");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    let pid = c.create_and_start(&id, &b);
    let d = cgroup_dir("pids", &format!("/corral/{id}"));
    let procs = read(&d.join("cgroup.procs"));
    assert!(
        procs.split_whitespace().any(|p| p == pid.to_string()),
        "{pid} not in {}",
        d.display()
    );
    c.delete_force(&id).ok();
    assert!(cgroup_dirs_present(&format!("/corral/{id}")).is_empty());
}

#[test]
fn run_removes_its_cgroups() {
    let c = Corral::new("cg-run");
    let id = c.id("a");
    let (mut b, path) = bundle(&id);
    b.resources(json!({"pids": {"limit": 20}})).args(&["true"]);
    c.run(&id, &b).ok();
    c.assert_nothing_left(&id, Some(&b));
    assert!(cgroup_dirs_present(&path).is_empty());
}

#[test]
fn failed_create_removes_its_cgroups() {
    let c = Corral::new("cg-fail");
    let id = c.id("a");
    let (mut b, _) = bundle(&id);
    b.resources(json!({"pids": {"limit": 20}}))
        .args(&["/no/such/program"]);
    c.create(&id, &b).one_line_error(&["/no/such/program"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn kill_all_signals_every_process() {
    let c = Corral::new("cg-killall");
    let id = c.id("a");
    let (mut b, path) = bundle(&id);
    // No pid namespace: killing the init alone would leave the background sleep.
    let secs = format!("{}", 200_000 + std::process::id());
    c.kill_on_drop(&format!("sleep {secs}"));
    b.without_namespace("pid")
        .sh(&format!("sleep {secs} & exec sleep {secs}"));
    c.create_and_start(&id, &b);
    let deadline = std::time::Instant::now() + STOP;
    while processes_matching(|cmd| cmd == format!("sleep {secs}")).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two sleeps never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.exec(&["kill", "--all", &id, "KILL"]).ok();
    c.wait_status(&id, "stopped", STOP);
    let deadline = std::time::Instant::now() + STOP;
    while !processes_matching(|cmd| cmd == format!("sleep {secs}")).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "kill --all missed a process"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(read(&cgroup_dir("pids", &path).join("cgroup.procs")), "");
}

#[test]
fn delete_kills_processes_outside_a_pid_namespace() {
    let c = Corral::new("cg-delall");
    let id = c.id("a");
    let (mut b, _) = bundle(&id);
    let secs = format!("{}", 300_000 + std::process::id());
    c.kill_on_drop(&format!("sleep {secs}"));
    b.without_namespace("pid")
        .sh(&format!("sleep {secs} & exec sleep {secs}"));
    let pid = c.create_and_start(&id, &b);
    let deadline = std::time::Instant::now() + STOP;
    while processes_matching(|cmd| cmd == format!("sleep {secs}")).len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the two sleeps never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.delete_force(&id).ok();
    assert!(wait_gone(pid, STOP));
    let deadline = std::time::Instant::now() + STOP;
    loop {
        let left = processes_matching(|cmd| cmd == format!("sleep {secs}"));
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delete left {left:?} running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    c.assert_nothing_left(&id, Some(&b));
}
