//! No zombies under the service: every process that the launcher, a monitor or a runner
//! forks is waited for, and the launcher is a child subreaper, so that what a dead
//! runner leaves is reparented to it (and reaped), never to the host's init.
//!
//! Judged runs alternate between two step configurations (so that each runner discards
//! the warm containers it made for the last run), with a mix of verdicts (time, memory,
//! output and wall-time limits) and a runner killed mid-run; then no process in the
//! service's tree may be a zombie.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::server::{Server, USER, call};
use serde_json::{Value, json};

/// One line of `/proc/<pid>/stat`, the fields the test needs.
#[derive(Clone, Debug)]
struct Proc {
    pid: i32,
    ppid: i32,
    state: char,
    comm: String,
    /// Clock ticks since boot: tells a process from a later one with the same pid.
    start: u64,
}

fn stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        // Field 22; `fields` starts at field 3.
        start: fields.get(22 - 3)?.parse().ok()?,
        comm,
    })
}

fn table() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

/// Every process below `root` (not `root` itself).
fn descendants(root: i32) -> Vec<Proc> {
    let all = table();
    let mut children: HashMap<i32, Vec<&Proc>> = HashMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        for c in children.get(&pid).into_iter().flatten() {
            todo.push(c.pid);
            out.push((*c).clone());
        }
    }
    out
}

fn zombies_under(root: i32) -> Vec<Proc> {
    descendants(root)
        .into_iter()
        .filter(|p| p.state == 'Z')
        .collect()
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .unwrap_or_default()
}

/// The service's launcher: its child `corral launcher ...`.
fn launcher_of(service: i32) -> i32 {
    let found: Vec<i32> = table()
        .into_iter()
        .filter(|p| p.ppid == service && cmdline(p.pid).contains(" launcher "))
        .map(|p| p.pid)
        .collect();
    assert_eq!(found.len(), 1, "launchers of {service}: {found:?}");
    found[0]
}

async fn run(s: &Server, body: &Value) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        &s.url("/v1/runs"),
        Some(USER),
        Some(body.clone()),
    )
    .await
}

/// The verdicts of every result of a run, in order.
fn verdicts(v: &Value) -> Vec<String> {
    v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["results"].as_array().into_iter().flatten())
        .map(|r| r["verdict"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Run `n` of a stream: mostly one of two step configurations, alternately (their
/// limits differ, so the warm containers made for one are discarded by the other);
/// every fifth a run that ends at a limit. Returns the request and the verdicts.
fn nth_run(n: usize) -> (Value, Vec<&'static str>) {
    let step = |name: &str, script: &str, limits: Value| json!({"name": name, "args": ["sh", "-c", script], "limits": limits});
    if n % 5 == 4 {
        let (script, limits, verdict) = match (n / 5) % 4 {
            0 => (
                "while :; do :; done",
                json!({"cpu_time_ms": 200}),
                "TIME_LIMIT",
            ),
            1 => (
                "x=a; while :; do x=$x$x; done",
                json!({"memory_bytes": 32 << 20}),
                "MEMORY_LIMIT",
            ),
            2 => ("yes", json!({"output_bytes": 1000}), "OUTPUT_LIMIT"),
            _ => ("sleep 30", json!({"wall_time_ms": 300}), "WALL_TIME_LIMIT"),
        };
        let body = json!({"image": "busybox", "steps": [step("limit", script, limits)]});
        return (body, vec![verdict]);
    }
    if n.is_multiple_of(2) {
        let body = json!({"image": "busybox", "steps": [
            step("a", "echo a", json!({"memory_bytes": 64 << 20}))
        ]});
        (body, vec!["OK"])
    } else {
        let mut test = step("test", "cat out; cat", json!({"memory_bytes": 96 << 20}));
        test["tests"] = json!([{"stdin": "1\n", "expected_stdout": "b\n1\n"},
                               {"stdin": "2\n", "expected_stdout": "b\n2\n"}]);
        let body = json!({"image": "busybox", "steps": [
            step("build", "echo b > out", json!({"cpu_time_ms": 2000})),
            test
        ]});
        (body, vec!["OK", "OK", "OK"])
    }
}

/// `count` runs of [`nth_run`] from `first` on, one after the other.
async fn stream(s: &Server, first: usize, count: usize) {
    for n in first..first + count {
        let (body, want) = nth_run(n);
        let (status, v) = run(s, &body).await;
        assert_eq!(status, 200, "{body}\n-> {v}");
        assert_eq!(verdicts(&v), want, "{body}\n-> {v}");
    }
}

/// What became of the children of a runner after it was killed: every sighting of one
/// of `children` (pid, start time) with a parent other than `runner`, as
/// `(pid, ppid, state)`, until each is gone (or `limit`).
fn watch_orphans(children: &[Proc], runner: i32, limit: Duration) -> Vec<(i32, i32, char)> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    let mut left: Vec<&Proc> = children.iter().collect();
    while !left.is_empty() && Instant::now() < deadline {
        left.retain(|c| match stat(c.pid) {
            // Being reaped (dead, its parent shown as 0): gone.
            Some(p) if p.state == 'X' => false,
            Some(p) if p.start == c.start => {
                if p.ppid != runner && !seen.contains(&(p.pid, p.ppid, p.state)) {
                    seen.push((p.pid, p.ppid, p.state));
                }
                true
            }
            _ => false,
        });
    }
    seen
}

/// Kills the runner of a run in flight with SIGKILL; its children (the run's init and
/// its warm containers' inits) must be reparented to the launcher, which reaps them.
async fn kill_a_runner_mid_run(s: &Server, launcher: i32) {
    let service = s.pid().expect("the service runs") as i32;
    let killer = async {
        let program = loop {
            let found = descendants(service)
                .into_iter()
                .find(|p| cmdline(p.pid).starts_with("sleep 2718"));
            if let Some(p) = found {
                break p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut runner = program;
        while runner.ppid != launcher {
            runner = stat(runner.ppid).expect("an ancestor of the program");
        }
        assert_eq!(runner.comm, "corral-runner", "{runner:?}");
        let children: Vec<Proc> = table()
            .into_iter()
            .filter(|p| p.ppid == runner.pid)
            .collect();
        let watcher = std::thread::spawn({
            let children = children.clone();
            move || watch_orphans(&children, runner.pid, Duration::from_secs(10))
        });
        // SAFETY: kill(2) on the runner's pid, read just above: it cannot be reaped
        // (and the pid reused) before its parent, the launcher, sees a run fail.
        unsafe { libc::kill(runner.pid, libc::SIGKILL) };
        let seen = tokio::task::spawn_blocking(move || watcher.join().unwrap())
            .await
            .unwrap();
        (children, seen)
    };
    let body = json!({"image": "busybox", "steps": [{"name": "s", "args": ["sleep", "2718"],
                      "limits": {"wall_time_ms": 60_000}}]});
    let ((status, v), (children, seen)) = tokio::join!(run(s, &body), killer);
    assert_eq!(status, 500, "{v}");
    assert!(
        !seen.is_empty(),
        "no child of the killed runner ({children:?}) was seen after its death"
    );
    let astray: Vec<_> = seen
        .iter()
        .filter(|(_, ppid, _)| *ppid != launcher)
        .collect();
    assert!(
        astray.is_empty(),
        "children of the killed runner were reparented outside the service \
         (launcher {launcher}): {astray:?}"
    );
}

/// Waits (up to 5 s: runners remove the last runs' containers, and make warm ones, just
/// after the answers) for no process under `service` to be a zombie.
fn assert_no_zombies_soon(service: i32, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut zombies = zombies_under(service);
    let first = zombies.len();
    while !zombies.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        zombies = zombies_under(service);
    }
    eprintln!(
        "{when}: {first} zombies under the service, {} after settling",
        zombies.len()
    );
    assert!(
        zombies.is_empty(),
        "{when}: {} zombies under the service (pid {service}): {zombies:?}",
        zombies.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_zombies_under_the_service_after_varied_runs() {
    let s = Server::start();
    let service = s.pid().expect("the service runs") as i32;
    let t0 = Instant::now();
    // Two streams at once (so two runners or more), 300 runs in all, a runner killed
    // half way.
    tokio::join!(stream(&s, 0, 75), stream(&s, 1000, 75));
    assert_no_zombies_soon(service, "after 150 runs");
    let launcher = launcher_of(service);
    kill_a_runner_mid_run(&s, launcher).await;
    tokio::join!(stream(&s, 75, 75), stream(&s, 1075, 75));
    eprintln!("300 runs in {:?}", t0.elapsed());
    assert_no_zombies_soon(service, "after 300 runs and a runner killed");
    // The service's processes are all still there: one launcher, its runners.
    assert_eq!(launcher_of(service), launcher);
}
