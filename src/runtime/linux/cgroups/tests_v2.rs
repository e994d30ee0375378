//! The cgroup v2 code path against a real cgroup2 hierarchy: the host's own on a v2
//! host, or, on a hybrid host, the unified mount treated as a pure v2 layout. There
//! only core files (`cgroup.procs`, `cgroup.freeze`, `cgroup.kill`, `cpu.stat`) and the
//! controllers the unified mount holds (here `hugetlb`) can be exercised; the other
//! v2 conversions are unit-tested in `convert.rs`.

use std::collections::HashMap;
use std::path::Path;

use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResourcesBuilder,
};

use super::layout::{HYBRID_UNIFIED, Layout};
use super::tests::{Guard, assert_gone, create_err, is_root, read, unique_path, wait_exit};
use super::*;

fn v2_layout() -> Option<&'static Layout> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    match detect_mode() {
        CgroupMode::V2 => Layout::host().ok(),
        CgroupMode::Hybrid => Some(Box::leak(Box::new(Layout::v2_at(Path::new(
            HYBRID_UNIFIED,
        ))))),
        CgroupMode::V1 => {
            eprintln!("skipped: no cgroup2 mount");
            None
        }
    }
}

fn has(dir: &Path, controller: &str) -> bool {
    read(dir.join("cgroup.controllers"))
        .split_whitespace()
        .any(|c| c == controller)
}

#[test]
fn v2_lifecycle_freeze_kill_and_delete() {
    let Some(layout) = v2_layout() else { return };
    let path = unique_path("corral-test-v2");
    let mut g = Guard::new(Cgroup::create_in(layout, &path, None).unwrap());
    assert_eq!(g.cg().mode(), CgroupMode::V2);
    let dir = g.cg().unified.clone().unwrap();
    assert!(dir.is_dir());
    assert_eq!(g.cg().host_dirs(), vec![(String::new(), dir.clone())]);
    let a = g.sleeper();
    let b = g.sleeper();
    g.cg().add_process(a).unwrap();
    g.cg().add_process(b).unwrap();
    let mut pids = g.cg().pids().unwrap();
    pids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(pids, want);

    let s = g.cg().stats().unwrap();
    assert!(s.cpu.is_some());
    assert_eq!(s.memory.is_some(), has(&dir, "memory"));
    if let Some(p) = s.pids {
        assert_eq!(p.current, 2);
    }

    assert!(!g.cg().is_frozen().unwrap());
    g.cg().freeze().unwrap();
    assert!(g.cg().is_frozen().unwrap());
    assert_eq!(read(dir.join("cgroup.freeze")), "1");
    g.cg().thaw().unwrap();
    // Thawing is asynchronous too; it settles quickly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while g.cg().is_frozen().unwrap() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(!g.cg().is_frozen().unwrap());

    // SIGTERM goes through freeze / signal each / thaw, SIGKILL through cgroup.kill.
    g.cg().kill_all(Signal::SIGTERM).unwrap();
    assert!(wait_exit(&mut g.children[0]) && wait_exit(&mut g.children[1]));
    let c = g.sleeper();
    g.cg().add_process(c).unwrap();
    g.cg().freeze().unwrap();
    g.cg().kill_all(Signal::SIGKILL).unwrap();
    assert!(
        wait_exit(&mut g.children[2]),
        "SIGKILL did not kill a frozen v2 task"
    );

    g.cg().delete().unwrap();
    assert_gone(g.cg());
}

#[test]
fn v2_hugetlb_and_unified_keys() {
    let Some(layout) = v2_layout() else { return };
    let root = layout.unified.as_deref().unwrap();
    if !has(root, "hugetlb") || !Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists() {
        eprintln!("skipped: no hugetlb controller or no 2MB pages in the cgroup2 hierarchy");
        return;
    }
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(8i64 << 20)
                .build()
                .unwrap(),
        ])
        .unified(HashMap::from([(
            "hugetlb.2MB.rsvd.max".to_string(),
            (2u64 << 20).to_string(),
        )]))
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rw")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let g =
        Guard::new(Cgroup::create_in(layout, &unique_path("corral-test-v2"), Some(&r)).unwrap());
    let dir = g.cg().unified.clone().unwrap();
    assert_eq!(read(dir.join("hugetlb.2MB.max")), (8u64 << 20).to_string());
    // The structured limit also set rsvd.max; the unified key, applied last, won.
    if dir.join("hugetlb.2MB.rsvd.max").exists() {
        assert_eq!(
            read(dir.join("hugetlb.2MB.rsvd.max")),
            (2u64 << 20).to_string()
        );
    }
    g.cg().delete().unwrap();
    assert_gone(g.cg());
}

#[test]
fn v2_missing_controllers_and_refused_fields_leave_nothing() {
    let Some(layout) = v2_layout() else { return };
    let root = layout.unified.as_deref().unwrap();
    let path = unique_path("corral-test-v2");
    let probe = Cgroup::at(layout, &path);

    if !has(root, "pids") {
        let r = LinuxResourcesBuilder::default()
            .pids(LinuxPidsBuilder::default().limit(5).build().unwrap())
            .build()
            .unwrap();
        let e = create_err(layout, &path, &r, &[]);
        assert!(
            e.to_string()
                .starts_with("linux.resources.pids: the pids controller is not available"),
            "{e}"
        );
        assert_gone(&probe);
    }
    // v1-only fields are refused before anything is made.
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .swappiness(10u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = create_err(layout, &path, &r, &[]);
    assert!(
        e.to_string()
            .starts_with("linux.resources.memory.swappiness: not supported"),
        "{e}"
    );
    // A rule that would punch a hole in a wildcard exception: refused by name.
    let rule = |allow: bool, typ: LinuxDeviceType, major: Option<i64>, access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m).minor(0);
        }
        b.build().unwrap()
    };
    let r = LinuxResourcesBuilder::default()
        .devices(vec![
            rule(true, LinuxDeviceType::A, None, "rwm"),
            rule(false, LinuxDeviceType::B, None, "w"),
            rule(true, LinuxDeviceType::B, Some(8), "w"),
        ])
        .build()
        .unwrap();
    let e = create_err(layout, &path, &r, &[]);
    assert!(
        e.to_string()
            .starts_with("linux.resources.devices[2]: invalid value b 8:0 w: cannot allow part"),
        "{e}"
    );
    assert_gone(&probe);
}

/// Device rules on the v2 path: `create` attaches the eBPF program to the cgroup,
/// `apply` (update) replaces it, and rules that allow everything remove it. What the
/// program allows and refuses is tested in `devices/tests.rs`.
#[test]
fn v2_device_rules_attach_and_replace_a_program() {
    let Some(layout) = v2_layout() else { return };
    let rules = |list: serde_json::Value| -> oci_spec::runtime::LinuxResources {
        serde_json::from_value(serde_json::json!({ "devices": list })).unwrap()
    };
    let deny_all_but_null = rules(serde_json::json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"},
    ]));
    let g = Guard::new(
        Cgroup::create_in(
            layout,
            &unique_path("corral-test-v2"),
            Some(&deny_all_but_null),
        )
        .unwrap(),
    );
    let dir = g.cg().unified.clone().unwrap();
    let first = devices::attached(&dir).unwrap();
    assert_eq!(first.len(), 1);
    g.cg()
        .apply(&rules(
            serde_json::json!([{"allow": false, "access": "rwm"}]),
        ))
        .unwrap();
    let second = devices::attached(&dir).unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(first, second);
    // No devices field: the program stays.
    g.cg()
        .apply(&serde_json::from_str(r#"{"pids": {"limit": 0}}"#).unwrap())
        .unwrap();
    assert_eq!(devices::attached(&dir).unwrap(), second);
    g.cg()
        .apply(&rules(
            serde_json::json!([{"allow": true, "access": "rwm"}]),
        ))
        .unwrap();
    assert!(devices::attached(&dir).unwrap().is_empty());
    g.cg().delete().unwrap();
    assert_gone(g.cg());
}
