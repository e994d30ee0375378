//! Resource limits on the host's real v1/hybrid cgroups: written, read back, refused,
//! and cleaned up after a failure. Helpers and [`Guard`] are in `tests.rs`.

use std::fs;
use std::path::Path;

use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxNetworkBuilder, LinuxPidsBuilder,
    LinuxResources, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};

use super::tests::{Guard, assert_gone, create_err, dir_of, read, unique_path, v1_host};
use super::*;

fn block_device() -> Option<(i64, i64)> {
    let mut devs: Vec<_> = fs::read_dir("/sys/block").ok()?.flatten().collect();
    devs.sort_by_key(|d| d.file_name().to_string_lossy().starts_with("loop"));
    let dev = read(devs.first()?.path().join("dev"));
    let (ma, mi) = dev.split_once(':')?;
    Some((ma.parse().ok()?, mi.parse().ok()?))
}

/// Whether this host weighs block I/O by cgroup on v1: CFQ's or BFQ's weight files (BFQ
/// is a module, not loaded everywhere).
fn host_weighs_block_io() -> bool {
    // Looked up in a cgroup of our own: the root cgroup never has the weight files.
    let probe = Guard::new(Cgroup::create(&unique_path("corral-probe"), None).unwrap());
    let blk = dir_of(probe.cg(), "blkio");
    ["blkio.weight", "blkio.bfq.weight"]
        .iter()
        .any(|f| blk.join(f).exists())
}

/// Limits in every v1 controller; a block I/O weight when `weight`.
fn resources_with(weight: bool) -> LinuxResources {
    let mut mem = LinuxMemoryBuilder::default()
        .limit(64i64 << 20)
        .reservation(32i64 << 20)
        .swappiness(10u64)
        .disable_oom_killer(false);
    if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
        mem = mem.swap(128i64 << 20);
    }
    let mut b = LinuxResourcesBuilder::default()
        .memory(mem.build().unwrap())
        .pids(LinuxPidsBuilder::default().limit(42).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
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
                .access("rwm")
                .build()
                .unwrap(),
        ]);
    if let Some((major, minor)) = block_device() {
        b = b.block_io(
            LinuxBlockIoBuilder::default()
                .weight(if weight { 300u16 } else { 0 })
                .throttle_read_bps_device(vec![
                    LinuxThrottleDeviceBuilder::default()
                        .major(major)
                        .minor(minor)
                        .rate(1u64 << 20)
                        .build()
                        .unwrap(),
                ])
                .build()
                .unwrap(),
        );
    }
    b.build().unwrap()
}

#[test]
fn create_applies_limits_and_delete_removes_everything() {
    let Some(_) = v1_host() else { return };
    let path = unique_path("corral-test");
    let weighs = host_weighs_block_io() && block_device().is_some();
    if !weighs && block_device().is_some() {
        // No proportional I/O scheduler here: a weight is refused by name, not dropped.
        let e = Cgroup::create(&path, Some(&resources_with(true)))
            .map(Guard::new)
            .err()
            .expect("a blkio weight on a host without CFQ or BFQ was accepted");
        let msg = e.to_string();
        assert!(
            msg.starts_with("linux.resources.blockIO.weight") && msg.contains("BFQ"),
            "{msg}"
        );
    }
    let r = resources_with(weighs);
    let g = Guard::new(Cgroup::create(&path, Some(&r)).unwrap());
    let cg = g.cg();
    assert_ne!(cg.mode(), CgroupMode::V2);
    for d in cg.dirs() {
        assert!(d.is_dir(), "{} missing", d.display());
    }
    let mem = dir_of(cg, "memory");
    assert_eq!(
        read(mem.join("memory.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(mem.join("memory.soft_limit_in_bytes")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(mem.join("memory.swappiness")), "10");
    if r.memory().unwrap().swap().is_some() {
        assert_eq!(
            read(mem.join("memory.memsw.limit_in_bytes")),
            (128u64 << 20).to_string()
        );
    }
    assert_eq!(read(dir_of(cg, "pids").join("pids.max")), "42");
    let cpu = dir_of(cg, "cpu");
    assert_eq!(read(cpu.join("cpu.shares")), "512");
    assert_eq!(read(cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(dir_of(cg, "cpuset").join("cpuset.cpus")), "0");
    assert_eq!(
        read(dir_of(cg, "devices").join("devices.list")),
        "c 1:3 rwm"
    );
    // Hybrid: the same rules as an eBPF program on the unified cgroup too.
    if let Some(unified) = &cg.unified {
        assert_eq!(devices::attached(unified).unwrap().len(), 1);
    }
    if let Some((major, minor)) = block_device() {
        let blk = dir_of(cg, "blkio");
        if weighs {
            let w = ["blkio.weight", "blkio.bfq.weight"]
                .iter()
                .map(|f| blk.join(f))
                .find(|f| f.exists())
                .unwrap();
            assert!(read(w).ends_with("300"));
        }
        assert_eq!(
            read(blk.join("blkio.throttle.read_bps_device")),
            format!("{major}:{minor} 1048576")
        );
    }
    // Updating: grow memory+swap past the old values (swap must go first), then shrink.
    let grow = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(256i64 << 20)
                .swap(512i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    if r.memory().unwrap().swap().is_some() {
        cg.apply(&grow).unwrap();
        assert_eq!(
            read(mem.join("memory.limit_in_bytes")),
            (256u64 << 20).to_string()
        );
        let shrink = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(16i64 << 20)
                    .swap(16i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        cg.apply(&shrink).unwrap();
        assert_eq!(
            read(mem.join("memory.memsw.limit_in_bytes")),
            (16u64 << 20).to_string()
        );
    }
    let names: Vec<String> = cg.host_dirs().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().any(|n| n.split(',').any(|c| c == "memory")),
        "{names:?}"
    );
    if let (CgroupMode::Hybrid, Some(u)) = (cg.mode(), &cg.unified) {
        assert!(u.is_dir());
        assert!(cg.host_dirs().contains(&("unified".to_string(), u.clone())));
    }
    cg.delete().unwrap();
    assert_gone(cg);
    cg.delete().unwrap(); // idempotent
}

#[test]
fn failed_create_leaves_nothing_behind() {
    let Some(layout) = v1_host() else { return };
    // Refused before anything is made.
    let path = unique_path("corral-test");
    let net = LinuxResourcesBuilder::default()
        .network(
            LinuxNetworkBuilder::default()
                .class_id(1u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = create_err(layout, &path, &net, &[]);
    assert_eq!(
        e.to_string(),
        "linux.resources.network.classID: not supported"
    );
    assert_gone(&Cgroup::at(layout, &path));
    // Refused by the kernel half-way (a CPU that does not exist), with a nested path
    // whose parent is new too: both levels are removed in every hierarchy.
    let parent = unique_path("corral-test");
    let path = CgroupPath::parse(Some(&format!("{parent}/inner")), "x", false).unwrap();
    let bad = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .cpus("4000-4001")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let e = create_err(layout, &path, &bad, &[&parent]);
    let msg = e.to_string();
    assert!(
        msg.starts_with("write 4000-4001 to /sys/fs/cgroup/cpuset/"),
        "{msg}"
    );
    assert!(msg.contains("/inner/cpuset.cpus: "), "{msg}");
    assert_gone(&Cgroup::at(layout, &path));
    assert_gone(&Cgroup::at(layout, &parent));
}

#[test]
fn hugepage_limit_in_hybrid_layout() {
    let Some(layout) = v1_host() else { return };
    let has_2m = Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists();
    if !has_2m || (layout.v1_index("hugetlb").is_none() && layout.unified.is_none()) {
        eprintln!("skipped: no 2MB hugepages or no hugetlb controller");
        return;
    }
    let r = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("2MB")
                .limit(4i64 << 20)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let g = Guard::new(Cgroup::create(&unique_path("corral-test"), Some(&r)).unwrap());
    let cg = g.cg();
    let (dir, file) = match cg.v1_dir("hugetlb") {
        Some(d) => (d.to_path_buf(), "hugetlb.2MB.limit_in_bytes"),
        None => (cg.unified.clone().unwrap(), "hugetlb.2MB.max"),
    };
    assert_eq!(read(dir.join(file)), (4u64 << 20).to_string());
    let bad = LinuxResourcesBuilder::default()
        .hugepage_limits(vec![
            LinuxHugepageLimitBuilder::default()
                .page_size("3MB")
                .limit(1i64 << 20)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap();
    let e = cg.apply(&bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("linux.resources.hugepageLimits[0].pageSize: invalid value 3MB"),
        "{e}"
    );
    cg.delete().unwrap();
    assert_gone(cg);
}

#[test]
fn block_io_weights_go_to_cfq_or_bfq_files_or_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let e = super::v1::weight_files(dir.path()).unwrap_err().to_string();
    assert!(
        e.starts_with("linux.resources.blockIO.weight: not supported") && e.contains("BFQ"),
        "{e}"
    );
    fs::write(dir.path().join("blkio.bfq.weight"), "").unwrap();
    assert_eq!(
        super::v1::weight_files(dir.path()).unwrap(),
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    );
    fs::write(dir.path().join("blkio.weight"), "").unwrap();
    assert_eq!(
        super::v1::weight_files(dir.path()).unwrap(),
        ("blkio.weight", "blkio.weight_device")
    );
}
