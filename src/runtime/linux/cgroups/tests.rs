//! Tests against the host's real cgroups (root, v1 or hybrid host). Each test works in
//! its own `/corral-test-<pid>-<n>` and a [`Guard`] removes it, and kills its children,
//! even when the test fails. On other hosts (not root, pure v2) they skip.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::layout::Layout;
use super::*;

static N: AtomicUsize = AtomicUsize::new(0);

pub(super) fn unique_path(prefix: &str) -> CgroupPath {
    let n = N.fetch_add(1, Ordering::Relaxed);
    CgroupPath::parse(
        Some(&format!("/{prefix}-{}-{n}", std::process::id())),
        "x",
        false,
    )
    .unwrap()
}

/// Kills the children, thaws and deletes the cgroup, then removes any listed directory
/// still there, on drop.
pub(super) struct Guard {
    pub cg: Option<Cgroup>,
    pub children: Vec<Child>,
    /// Extra directories (outermost first) to remove at the end.
    pub extra: Vec<PathBuf>,
}

impl Guard {
    pub fn new(cg: Cgroup) -> Self {
        Self {
            cg: Some(cg),
            children: Vec::new(),
            extra: Vec::new(),
        }
    }

    pub fn cg(&self) -> &Cgroup {
        self.cg.as_ref().unwrap()
    }

    pub fn sleeper(&mut self) -> i32 {
        let child = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cg) = &self.cg {
            let _ = cg.thaw();
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(cg) = &self.cg {
            let _ = cg.delete();
            for d in cg.dirs() {
                let _ = fs::remove_dir(d);
            }
        }
        for d in self.extra.iter().rev() {
            let _ = fs::remove_dir(d);
        }
    }
}

pub(super) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A `create` that must fail. If it succeeds after all, what it made (and the listed
/// parents) is removed before the test fails.
pub(super) fn create_err(
    layout: &'static Layout,
    path: &CgroupPath,
    r: &LinuxResources,
    parents: &[&CgroupPath],
) -> CgroupError {
    match Cgroup::create_in(layout, path, Some(r)) {
        Ok(cg) => {
            let mut g = Guard::new(cg);
            for p in parents {
                g.extra.extend(Cgroup::at(layout, p).dirs().cloned());
            }
            panic!("creating {path} succeeded unexpectedly");
        }
        Err(e) => e,
    }
}

/// The host layout when these tests can run here (root, v1 or hybrid).
pub(super) fn v1_host() -> Option<&'static Layout> {
    if !is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    match Layout::host() {
        Ok(l) if l.mode != CgroupMode::V2 => Some(l),
        _ => {
            eprintln!("skipped: needs a cgroup v1 or hybrid host");
            None
        }
    }
}

pub(super) fn read(p: impl AsRef<Path>) -> String {
    fs::read_to_string(p.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
        .trim()
        .to_string()
}

pub(super) fn wait_exit(child: &mut Child) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

pub(super) fn dir_of(cg: &Cgroup, controller: &str) -> PathBuf {
    cg.v1_dir(controller).unwrap().to_path_buf()
}

pub(super) fn assert_gone(cg: &Cgroup) {
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn processes_stats_freeze_and_kill() {
    let Some(_) = v1_host() else { return };
    let r = LinuxResourcesBuilder::default()
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .memory(
            LinuxMemoryBuilder::default()
                .limit(128i64 << 20)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let mut g = Guard::new(Cgroup::create(&unique_path("corral-test"), Some(&r)).unwrap());
    let a = g.sleeper();
    let b = g.sleeper();
    g.cg().add_process(a).unwrap();
    g.cg().add_process(b).unwrap();
    let mut pids = g.cg().pids().unwrap();
    pids.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(pids, want);
    for d in g.cg().dirs() {
        let procs = read(d.join("cgroup.procs"));
        assert!(
            procs.lines().any(|l| l == a.to_string()),
            "{} lacks {a}",
            d.display()
        );
    }

    let s = g.cg().stats().unwrap();
    let pids_stats = s.pids.clone().unwrap();
    assert_eq!(pids_stats.current, 2);
    assert_eq!(pids_stats.limit, Some(10));
    let mem = s.memory.clone().unwrap();
    assert_eq!(mem.limit, Some(128 << 20));
    assert!(mem.peak.unwrap() >= mem.usage);
    assert_eq!(mem.oom_kill_count, Some(0));
    assert_eq!(g.cg().oom_kill_count().unwrap(), Some(0));
    // user/system are tick-sampled, the total is exact: no order between them to test.
    assert!(s.cpu.is_some());
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("\"oom_kill_count\":0"), "{json}");

    assert!(!g.cg().is_frozen().unwrap());
    g.cg().freeze().unwrap();
    assert!(g.cg().is_frozen().unwrap());
    g.cg().thaw().unwrap();
    assert!(!g.cg().is_frozen().unwrap());

    // SIGTERM: freeze, signal each, thaw.
    g.cg().kill_all(Signal::SIGTERM).unwrap();
    assert!(!g.cg().is_frozen().unwrap());
    for c in &mut g.children {
        assert!(wait_exit(c), "child survived SIGTERM");
    }
    // Delete right away: tasks may still be leaving, delete retries on EBUSY.
    g.cg().delete().unwrap();
    assert_gone(g.cg());
}

#[test]
fn sigkill_reaches_a_paused_container() {
    let Some(_) = v1_host() else { return };
    let mut g = Guard::new(Cgroup::create(&unique_path("corral-test"), None).unwrap());
    let pid = g.sleeper();
    g.cg().add_process(pid).unwrap();
    g.cg().freeze().unwrap();
    // A non-fatal signal leaves a paused container paused...
    g.cg().kill_all(Signal::SIGCONT).unwrap();
    assert!(g.cg().is_frozen().unwrap());
    // ...SIGKILL kills it.
    g.cg().kill_all(Signal::SIGKILL).unwrap();
    assert!(wait_exit(&mut g.children[0]), "child survived SIGKILL");
    g.cg().delete().unwrap();
    assert_gone(g.cg());
}

#[test]
fn nested_cpuset_inherits_and_existing_busy_cgroup_is_refused() {
    let Some(layout) = v1_host() else { return };
    let parent = unique_path("corral-test");
    let path = CgroupPath::parse(Some(&format!("{parent}/inner")), "x", false).unwrap();
    let mut g = Guard::new(Cgroup::create(&path, None).unwrap());
    g.extra = Cgroup::at(layout, &parent).dirs().cloned().collect();
    let root_cpus = read("/sys/fs/cgroup/cpuset/cpuset.cpus");
    let cpuset = dir_of(g.cg(), "cpuset");
    assert_eq!(read(cpuset.join("cpuset.cpus")), root_cpus);
    assert_eq!(
        read(cpuset.parent().unwrap().join("cpuset.cpus")),
        root_cpus
    );
    assert!(!read(cpuset.join("cpuset.mems")).is_empty());

    let pid = g.sleeper();
    g.cg().add_process(pid).unwrap();
    let e = Cgroup::create(&path, None).unwrap_err();
    assert!(matches!(e, CgroupError::NotEmpty { count: 1, .. }), "{e}");
    // The failed create did not remove the existing cgroup.
    assert!(g.cg().dirs().all(|d| d.is_dir()));

    // Re-open from the stored form and delete through it.
    let stored = serde_json::to_string(g.cg().path()).unwrap();
    let reopened = Cgroup::open(&serde_json::from_str(&stored).unwrap()).unwrap();
    assert_eq!(reopened.pids().unwrap(), vec![pid]);
    reopened.kill_all(Signal::SIGKILL).unwrap();
    assert!(wait_exit(&mut g.children[0]));
    reopened.delete().unwrap();
    assert_gone(&reopened);
}

/// The host's v1 hierarchies alone (no unified mount): the pure V1 code paths.
fn v1_only() -> Option<&'static Layout> {
    let mut l = v1_host()?.clone();
    l.mode = CgroupMode::V1;
    l.unified = None;
    Some(Box::leak(Box::new(l)))
}

#[test]
fn pure_v1_kill_paths_and_missing_hugetlb() {
    let Some(layout) = v1_only() else { return };
    let path = unique_path("corral-test-v1");
    let mut g = Guard::new(Cgroup::create_in(layout, &path, None).unwrap());
    assert_eq!(g.cg().mode(), CgroupMode::V1);
    assert!(g.cg().unified.is_none());
    // No cgroup.kill: SIGKILL on a paused container is freeze (already) / signal / thaw.
    let a = g.sleeper();
    g.cg().add_process(a).unwrap();
    g.cg().freeze().unwrap();
    g.cg().kill_all(Signal::SIGKILL).unwrap();
    assert!(
        wait_exit(&mut g.children[0]),
        "SIGKILL did not reach a frozen v1 task"
    );
    assert!(!g.cg().is_frozen().unwrap());
    let b = g.sleeper();
    g.cg().add_process(b).unwrap();
    g.cg().kill_all(Signal::SIGKILL).unwrap();
    assert!(wait_exit(&mut g.children[1]));

    if layout.v1_index("hugetlb").is_none() {
        let r: LinuxResources =
            serde_json::from_str(r#"{"hugepageLimits":[{"pageSize":"2MB","limit":2097152}]}"#)
                .unwrap();
        let e = g.cg().apply(&r).unwrap_err();
        assert_eq!(
            e.to_string(),
            "linux.resources.hugepageLimits: the hugetlb controller is not available: \
             neither a v1 hierarchy nor a cgroup2 mount has it"
        );
    }
    g.cg().delete().unwrap();
    assert_gone(g.cg());
}

#[test]
fn a_missing_cgroup_has_no_processes_and_deletes_fine() {
    let Some(_) = v1_host() else { return };
    let cg = Cgroup::open(&unique_path("corral-test-never")).unwrap();
    assert_eq!(cg.pids().unwrap(), Vec::<i32>::new());
    cg.kill_all(Signal::SIGKILL).unwrap();
    cg.kill_all(Signal::SIGTERM).unwrap();
    cg.delete().unwrap();
    let e = cg.freeze().unwrap_err();
    assert!(e.to_string().contains("corral-test-never"), "{e}");
    assert_gone(&cg);
}

/// `create_only` makes the cgroup in the named controllers' hierarchies only; `open`
/// (every hierarchy) still measures, lists and deletes it.
#[test]
fn create_only_uses_the_named_hierarchies() {
    let Some(host) = v1_host() else { return };
    let path = unique_path("corral-test-only");
    let r = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(10).build().unwrap())
        .build()
        .unwrap();
    let made = Cgroup::create_only(&path, Some(&r), &["memory", "pids", "freezer"]).unwrap();
    let mut g = Guard::new(Cgroup::open(&path).unwrap());
    let has = |controller: &str| {
        let i = host.v1_index(controller)?;
        Some(g.cg().v1[i].is_dir())
    };
    assert_eq!(has("memory"), Some(true));
    assert_eq!(has("pids"), Some(true));
    assert_eq!(has("freezer"), Some(true));
    for other in ["cpu", "cpuset", "blkio", "devices"] {
        assert_ne!(has(other), Some(true), "{other}: made but not asked for");
    }
    if let Some(unified) = &g.cg().unified {
        assert!(!unified.exists(), "made in the unified hierarchy");
    }
    let pid = g.sleeper();
    made.add_process(pid).unwrap();
    assert_eq!(g.cg().pids().unwrap(), vec![pid]);
    let stats = g.cg().stats().unwrap();
    assert!(stats.cpu.is_none(), "cpuacct was not asked for");
    assert_eq!(stats.memory.unwrap().limit, Some(64 << 20));
    assert_eq!(stats.pids.unwrap().current, 1);
    g.cg().kill_all(Signal::SIGKILL).unwrap();
    for c in &mut g.children {
        let _ = c.wait();
    }
    g.children.clear();
    g.cg().delete().unwrap();
    assert!(made.dirs().all(|d| !d.exists()), "left after delete");
}
