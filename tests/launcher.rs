//! The launcher of `corral serve`, with real containers (as root): creates go through
//! `corral launcher` and a per-container monitor; output lands in capped log files and
//! the exit status in `exit.json`; containers outlive the launcher.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{Bundle, alive, cgroup_dirs_present, require_root, wait_gone};
use corral::runtime::ops;
use corral::runtime::state::Store;
use corral::service::launcher::{
    CreateRequest, DEFAULT_LOG_LIMIT, ErrorKind, ExitRecord, Launcher, STDERR_LOG, STDOUT_LOG,
    log_truncated, read_exit,
};
use nix::sys::signal::Signal;
use tempfile::TempDir;

const EXE: &str = env!("CARGO_BIN_EXE_corral");

/// A private state root and data dir. Every container whose id came from [`Env::id`] is
/// force-deleted on drop, even when the test failed.
struct Env {
    root: TempDir,
    data: TempDir,
    name: String,
    ids: Mutex<Vec<String>>,
}

impl Env {
    fn new(name: &str) -> Self {
        require_root();
        let tmp = |prefix| {
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .expect("temp dir")
        };
        Env {
            root: tmp("corral-lroot-"),
            data: tmp("corral-ldata-"),
            name: name.to_string(),
            ids: Mutex::new(Vec::new()),
        }
    }

    fn id(&self, what: &str) -> String {
        let id = format!("l{}-{}-{what}", std::process::id(), self.name);
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    fn store(&self) -> Store {
        Store::new(self.root.path())
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.data.path().join("containers").join(id)
    }

    async fn launcher(&self) -> Launcher {
        Launcher::spawn(Path::new(EXE), self.root.path(), self.data.path())
            .await
            .expect("spawn the launcher")
    }

    fn request(&self, id: &str, bundle: &Bundle) -> CreateRequest {
        CreateRequest {
            id: id.to_string(),
            bundle: bundle.path().to_path_buf(),
            data_dir: self.dir(id),
            systemd_cgroup: false,
            log_limit: DEFAULT_LOG_LIMIT,
            sandbox: false,
        }
    }

    fn status(&self, id: &str) -> String {
        ops::state(&self.store(), id)
            .expect("state")
            .oci
            .status
            .clone()
    }

    fn read(&self, id: &str, name: &str) -> String {
        let p = self.dir(id).join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let store = self.store();
        for id in self.ids.lock().map(|v| v.clone()).unwrap_or_default() {
            if let Err(e) = ops::delete(&store, &id, true) {
                eprintln!("cleanup: delete {id}: {e}");
            }
        }
    }
}

fn bundle(script: &str) -> Bundle {
    let mut b = Bundle::new();
    b.sh(script);
    b.write();
    b
}

/// Waits (bounded) for the monitor to write `exit.json`.
async fn wait_exit(dir: &Path, limit: Duration) -> ExitRecord {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(rec) = read_exit(dir) {
            return rec;
        }
        assert!(
            Instant::now() < deadline,
            "no exit.json in {} after {limit:?}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_goes_to_the_logs_and_the_exit_code_to_exit_json() {
    let env = Env::new("logs");
    let launcher = env.launcher().await;
    let b = bundle("echo out; echo err >&2; exit 7");
    let id = env.id("a");
    let pid = launcher.create(env.request(&id, &b)).await.expect("create");
    assert!(alive(pid), "init {pid} is not running");
    assert_eq!(
        launcher.state(&id).await.expect("state").oci.status,
        "created"
    );
    assert!(read_exit(&env.dir(&id)).is_none(), "exit.json before start");
    launcher.start(&id).await.expect("start");
    let exit = wait_exit(&env.dir(&id), Duration::from_secs(20)).await;
    assert_eq!(exit.exit_code, Some(7), "{exit:?}");
    assert_eq!(exit.signal, None, "{exit:?}");
    assert!(!exit.oom_killed, "{exit:?}");
    assert_eq!(env.read(&id, STDOUT_LOG), "out\n");
    assert_eq!(env.read(&id, STDERR_LOG), "err\n");
    assert!(!log_truncated(&env.dir(&id), STDOUT_LOG));
    launcher.delete(&id, false).await.expect("delete");
    launcher.shutdown().await;
}

/// `detach` frees a stopped container's id at once and leaves its cleanup for later:
/// its state moves to `<root>/.trash`, and its cgroup stays until then unless it is the
/// id's default one (which a new container of that id would get). What a service that
/// stopped abruptly left there goes at the next start (`clean_detached`). A container
/// that has not stopped is left alone, for `delete`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_frees_the_id_and_leaves_the_cleanup_for_later() {
    let env = Env::new("detach");
    let launcher = env.launcher().await;
    let trash = env.root.path().join(".trash");
    let entries = || -> Vec<PathBuf> {
        std::fs::read_dir(&trash)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    launcher.clean_detached().expect("make <root>/.trash");
    let (own, default) = (env.id("own"), env.id("default"));
    let cgroup = format!("/corral-tests/{own}");
    let mut b = Bundle::new();
    b.sh("exit 0").cgroups_path(&cgroup);
    b.write();
    let plain = bundle("exit 0");
    for (id, b) in [(&own, &b), (&default, &plain)] {
        launcher.create(env.request(id, b)).await.expect("create");
        launcher.start(id).await.expect("start");
        wait_exit(&env.dir(id), Duration::from_secs(20)).await;
    }
    let running = env.id("running");
    let sleeper = bundle("exec sleep 1000");
    launcher
        .create(env.request(&running, &sleeper))
        .await
        .expect("create");
    launcher.start(&running).await.expect("start");
    assert!(launcher.detach(&running).await.expect("detach").is_none());
    assert_eq!(env.status(&running), "running");
    assert!(entries().is_empty(), "{:?}", entries());

    // A cgroup of its own stays until the removal; the id is free at once.
    let own_detached = launcher
        .detach(&own)
        .await
        .expect("detach")
        .expect("stopped");
    assert!(
        ops::state(&env.store(), &own).is_err(),
        "{own} still in the store"
    );
    assert_eq!(entries().len(), 1, "{:?}", entries());
    assert!(
        !cgroup_dirs_present(&cgroup).is_empty(),
        "cgroup {cgroup} went early"
    );
    tokio::task::spawn_blocking(move || own_detached.remove())
        .await
        .unwrap()
        .expect("remove");
    assert!(entries().is_empty(), "{:?}", entries());
    assert!(
        cgroup_dirs_present(&cgroup).is_empty(),
        "{:?}",
        cgroup_dirs_present(&cgroup)
    );

    // The id's default cgroup goes with the detach; the state stays behind as an
    // abrupt stop would leave it, and goes at the next start.
    let default_cgroup = format!("/corral/{default}");
    assert!(!cgroup_dirs_present(&default_cgroup).is_empty());
    let left = launcher
        .detach(&default)
        .await
        .expect("detach")
        .expect("stopped");
    assert!(
        cgroup_dirs_present(&default_cgroup).is_empty(),
        "{:?}",
        cgroup_dirs_present(&default_cgroup)
    );
    drop(left);
    assert_eq!(entries().len(), 1, "{:?}", entries());
    launcher.clean_detached().expect("clean");
    assert!(entries().is_empty(), "{:?}", entries());
    // The ids are free for new containers.
    launcher
        .create(env.request(&own, &plain))
        .await
        .expect("create with a detached container's id");
    launcher.delete(&own, true).await.expect("delete");
    launcher.delete(&running, true).await.expect("delete");
    launcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_the_launcher() {
    let env = Env::new("restart");
    let launcher = env.launcher().await;
    let b = bundle("exec sleep 1000");
    let id = env.id("a");
    let pid = launcher.create(env.request(&id, &b)).await.expect("create");
    launcher.start(&id).await.expect("start");
    let old = launcher.pid().await.expect("launcher pid") as i32;
    // A crash of the service: its launcher is killed, and its client goes.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL)
        .expect("kill the launcher");
    drop(launcher);
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "launcher {old} lives"
    );
    assert!(alive(pid), "the container died with its launcher");
    assert_eq!(env.status(&id), "running");

    let launcher = env.launcher().await;
    assert_ne!(launcher.pid().await, Some(old as u32));
    launcher.ping().await.expect("ping the new launcher");
    assert_eq!(
        launcher.state(&id).await.expect("state").oci.status,
        "running"
    );
    launcher
        .kill(&id, Signal::SIGKILL, false)
        .await
        .expect("kill the container");
    // The monitor, orphaned by the old launcher, still reaps the init and records it.
    let exit = wait_exit(&env.dir(&id), Duration::from_secs(20)).await;
    assert_eq!((exit.exit_code, exit.signal), (None, Some(9)), "{exit:?}");
    assert!(!exit.oom_killed, "{exit:?}");
    launcher.delete(&id, false).await.expect("delete");
    launcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_launcher_is_replaced_on_the_next_call() {
    let env = Env::new("respawn");
    let launcher = env.launcher().await;
    let old = launcher.pid().await.expect("launcher pid") as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old), Signal::SIGKILL)
        .expect("kill the launcher");
    assert!(
        wait_gone(old, Duration::from_secs(10)),
        "launcher {old} lives"
    );
    let b = bundle("exit 0");
    let id = env.id("a");
    launcher
        .create(env.request(&id, &b))
        .await
        .expect("create through a new launcher");
    let new = launcher.pid().await.expect("new launcher pid");
    assert_ne!(new as i32, old);
    launcher.delete(&id, false).await.expect("delete");
    launcher.shutdown().await;
    assert!(
        wait_gone(new as i32, Duration::from_secs(10)),
        "launcher {new} lives"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_overlap() {
    let env = Env::new("many");
    let launcher = env.launcher().await;
    let bundles: Vec<Bundle> = (0..3).map(|i| bundle(&format!("echo {i}"))).collect();
    let ids: Vec<String> = (0..3).map(|i| env.id(&i.to_string())).collect();
    let req = |i: usize| env.request(&ids[i], &bundles[i]);
    // Three requests in flight on one socket, answered by sequence number.
    let (a, b, c) = tokio::join!(
        launcher.create(req(0)),
        launcher.create(req(1)),
        launcher.create(req(2))
    );
    let pids = [a, b, c].map(|r| r.expect("create"));
    assert!(pids[0] != pids[1] && pids[1] != pids[2], "{pids:?}");
    for (i, id) in ids.iter().enumerate() {
        launcher.start(id).await.expect("start");
        let exit = wait_exit(&env.dir(id), Duration::from_secs(20)).await;
        assert_eq!(exit.exit_code, Some(0), "{id}: {exit:?}");
        assert_eq!(env.read(id, STDOUT_LOG), format!("{i}\n"));
    }
    launcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_creates_have_their_kind_and_leave_nothing() {
    let env = Env::new("refuse");
    let launcher = env.launcher().await;
    let b = bundle("exec sleep 1000");
    let id = env.id("a");
    launcher.create(env.request(&id, &b)).await.expect("create");

    let err = launcher
        .create(env.request(&id, &b))
        .await
        .expect_err("a second create with the same id");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(
        env.status(&id),
        "created",
        "the first container was touched"
    );
    assert!(
        !env.dir(&id).join("exit.json").exists(),
        "the duplicate wrote into the first container's data"
    );

    // A bundle without config.json.
    let empty = Bundle::new();
    let bad = env.id("bad");
    let err = launcher
        .create(env.request(&bad, &empty))
        .await
        .expect_err("create from a bundle without config.json");
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
    assert!(
        !env.root.path().join(&bad).exists(),
        "state dir left behind"
    );
    assert!(!env.dir(&bad).exists(), "data dir left behind");
    let left = cgroup_dirs_present(&format!("/corral/{bad}"));
    assert!(left.is_empty(), "cgroups left behind: {left:?}");

    let mut req = env.request("../x", &b);
    req.data_dir = env.dir("x");
    let err = launcher
        .create(req)
        .await
        .expect_err("create with a bad id");
    assert_eq!(err.kind(), ErrorKind::InvalidId, "{err}");

    let mut req = env.request(&env.id("out"), &b);
    req.data_dir = PathBuf::from("/tmp/../etc/corral-test");
    let err = launcher
        .create(req)
        .await
        .expect_err("data dir outside --data");
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err}");

    launcher.delete(&id, true).await.expect("delete");
    launcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_capped_and_the_container_still_finishes() {
    let env = Env::new("cap");
    let launcher = env.launcher().await;
    let b = bundle("head -c 10485760 /dev/zero; echo done >&2");
    let id = env.id("a");
    let cap = 1024 * 1024;
    let mut req = env.request(&id, &b);
    req.log_limit = cap;
    launcher.create(req).await.expect("create");
    launcher.start(&id).await.expect("start");
    let exit = wait_exit(&env.dir(&id), Duration::from_secs(60)).await;
    assert_eq!(exit.exit_code, Some(0), "{exit:?}");
    let size = std::fs::metadata(env.dir(&id).join(STDOUT_LOG))
        .expect("stdout.log")
        .len();
    assert_eq!(size, cap, "stdout.log is not filled up to the cap");
    assert!(log_truncated(&env.dir(&id), STDOUT_LOG));
    assert_eq!(env.read(&id, STDERR_LOG), "done\n");
    assert!(!log_truncated(&env.dir(&id), STDERR_LOG));
    launcher.delete(&id, false).await.expect("delete");
    launcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_recorded_from_the_cgroup() {
    let env = Env::new("oom");
    let launcher = env.launcher().await;
    let mut b = Bundle::new();
    // 16 MiB and no swap beyond it: the shell reading 64 MiB into a variable is killed.
    b.resources(serde_json::json!({"memory": {"limit": 16 << 20, "swap": 16 << 20}}))
        .sh("x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}");
    b.write();
    let id = env.id("a");
    launcher.create(env.request(&id, &b)).await.expect("create");
    launcher.start(&id).await.expect("start");
    let exit = wait_exit(&env.dir(&id), Duration::from_secs(60)).await;
    assert!(exit.oom_killed, "{exit:?}");
    assert_eq!(exit.signal, Some(9), "{exit:?}");
    assert_eq!(env.read(&id, STDOUT_LOG), "");
    launcher.delete(&id, false).await.expect("delete");
    launcher.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_held_open_by_a_leftover_process_does_not_block_the_exit_record() {
    let env = Env::new("leftover");
    let launcher = env.launcher().await;
    // Without its own pid namespace, the container's background sleep outlives its init
    // and keeps the stdout pipe open.
    let mut b = Bundle::new();
    b.without_namespace("pid")
        .sh("sleep 300 & echo started; exit 3");
    b.write();
    let id = env.id("a");
    launcher.create(env.request(&id, &b)).await.expect("create");
    launcher.start(&id).await.expect("start");
    let t = Instant::now();
    let exit = wait_exit(&env.dir(&id), Duration::from_secs(20)).await;
    assert_eq!(exit.exit_code, Some(3), "{exit:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(env.read(&id, STDOUT_LOG), "started\n");
    // delete kills what is left in the cgroup.
    launcher.delete(&id, false).await.expect("delete");
    launcher.shutdown().await;
}
