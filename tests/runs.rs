//! Judged runs over HTTP (`POST /v1/runs`): every verdict from real programs, the
//! isolation between steps and test cases, limits, bad input, the queue and metrics.
//!
//! The busybox image is always there (the service builds it on first start); the
//! python and gcc images come from `make images` (CORRAL_TEST_IMAGES, set by the
//! Makefile) and their tests fail loudly when it is missing.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::server::{ADMIN, Server, USER, call, upload_image};
use serde_json::{Value, json};

async fn run(s: &Server, body: Value) -> (u16, Value) {
    call(
        reqwest::Method::POST,
        &s.url("/v1/runs"),
        Some(USER),
        Some(body),
    )
    .await
}

/// Runs `body` and returns the result, asserting a 200.
async fn run_ok(s: &Server, body: Value) -> Value {
    let (status, v) = run(s, body.clone()).await;
    assert_eq!(status, 200, "{body}\n-> {v}");
    v
}

/// The results of step `i`.
fn results(v: &Value, step: usize) -> &Vec<Value> {
    v["steps"][step]["results"].as_array().unwrap()
}

fn verdict(r: &Value) -> &str {
    r["verdict"].as_str().unwrap()
}

/// A one-step busybox run of `sh -c script` with `limits`; returns its one result.
async fn sh(s: &Server, script: &str, limits: Value) -> Value {
    let v = run_ok(
        s,
        json!({"image": "busybox", "steps": [{"name": "s", "args": ["sh", "-c", script], "limits": limits}]}),
    )
    .await;
    results(&v, 0)[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verdicts_from_busybox_programs() {
    let s = Server::start();
    let r = sh(&s, "echo hello; echo oops >&2", json!({})).await;
    assert_eq!(verdict(&r), "OK", "{r}");
    assert_eq!(r["stdout"], "hello\n");
    assert_eq!(r["stderr"], "oops\n");
    assert_eq!(r["exit_code"], 0);

    let r = sh(&s, "exit 3", json!({})).await;
    assert_eq!(verdict(&r), "RUNTIME_ERROR", "{r}");
    assert_eq!(r["exit_code"], 3);

    let r = sh(&s, "while :; do :; done", json!({"cpu_time_ms": 300})).await;
    assert_eq!(verdict(&r), "TIME_LIMIT", "{r}");
    let cpu = r["cpu_time_ms"].as_u64().unwrap();
    assert!(
        (300..600).contains(&cpu),
        "cpu time {cpu} not close to the limit: {r}"
    );

    let r = sh(&s, "sleep 30", json!({"wall_time_ms": 300})).await;
    assert_eq!(verdict(&r), "WALL_TIME_LIMIT", "{r}");
    let wall = r["wall_time_ms"].as_u64().unwrap();
    assert!((300..3000).contains(&wall), "wall time {wall}: {r}");

    let r = sh(
        &s,
        "x=a; while :; do x=$x$x; done",
        json!({"memory_bytes": 32 << 20}),
    )
    .await;
    assert_eq!(verdict(&r), "MEMORY_LIMIT", "{r}");
    assert!(r["memory_peak_bytes"].as_u64().unwrap() > 16 << 20, "{r}");

    let r = sh(&s, "yes", json!({"output_bytes": 1000})).await;
    assert_eq!(verdict(&r), "OUTPUT_LIMIT", "{r}");
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(r["stdout_truncated"], true);

    // A file past file_size_bytes: SIGXFSZ.
    let r = sh(
        &s,
        "head -c 100000 /dev/zero > /tmp/f",
        json!({"file_size_bytes": 4096}),
    )
    .await;
    assert_eq!(verdict(&r), "OUTPUT_LIMIT", "{r}");

    // The program is not pid 1 of its namespace: a signal it sends itself kills it.
    let r = sh(&s, "kill -SEGV $$", json!({})).await;
    assert_eq!(verdict(&r), "SIGNALED", "{r}");
    assert_eq!(r["signal"], libc::SIGSEGV);
    assert_eq!(r["exit_code"], Value::Null);

    let r = sh(&s, "printf '\\377\\376'", json!({})).await;
    assert_eq!(r["stdout_encoding"], "base64", "{r}");
    assert_eq!(r["stdout"], "//4=");

    // A program that cannot be started.
    let v = run_ok(
        &s,
        json!({"image": "busybox", "steps": [{"name": "s", "args": ["/no/such/program"]}]}),
    )
    .await;
    let r = &results(&v, 0)[0];
    assert_eq!(verdict(r), "RUNTIME_ERROR", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("/no/such/program"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_identity_and_isolation() {
    let s = Server::start();
    let r = sh(
        &s,
        "id -u; id -g; grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -s '\\t ' ' '; \
         ulimit -c; hostname; ls /sys 2>&1 | head -1; cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' '",
        json!({}),
    )
    .await;
    let out = r["stdout"].as_str().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "1000", "{out}");
    assert!(out.contains("CapEff: 0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs: 1"), "{out}");
    assert!(out.contains("Seccomp: 2"), "{out}");
    assert!(lines.contains(&"0"), "core dumps are not off: {out}");
    assert!(lines.contains(&"sandbox"), "{out}");
    // Only loopback in the network namespace.
    assert_eq!(lines.last(), Some(&"lo"), "{out}");

    // The image is read-only; the workspace of a step is writable.
    let r = sh(
        &s,
        "touch /etc/x 2>&1; touch /box/y && echo box-ok",
        json!({}),
    )
    .await;
    let out = r["stdout"].as_str().unwrap();
    assert!(out.contains("Read-only file system"), "{r}");
    assert!(out.contains("box-ok"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_carries_over_and_tests_cannot_see_each_other() {
    let s = Server::start();
    let v = run_ok(
        &s,
        json!({
            "image": "busybox",
            "files": [{"path": "src/in.txt", "content": "41\n"}, {"path": "run.sh", "content": "IyEvYmluL3NoCnJlYWQgeDsgZWNobyAkKCh4KzEpKQo=", "encoding": "base64", "mode": 493}],
            "steps": [
                {"name": "build", "args": ["sh", "-c", "cp src/in.txt built.txt && echo built"]},
                {"name": "run", "args": ["sh", "-c", "cat built.txt; ./run.sh; ls /tmp; echo mark > /tmp/mark; echo w > /box/w 2>/dev/null || echo ro"],
                 "tests": [
                    {"stdin": "1\n", "expected_stdout": "41\n2\nro\n"},
                    {"stdin": "2\n", "expected_stdout": "41\n3\nro\n"},
                    {"stdin": "2\n", "expected_stdout": "wrong"}
                 ]}
            ]
        }),
    )
    .await;
    assert_eq!(v["steps"][0]["status"], "ok", "{v}");
    let tests = results(&v, 1);
    // Each test starts with an empty /tmp (the first test's mark is not seen), and the
    // workspace is read-only.
    assert_eq!(verdict(&tests[0]), "OK", "{v}");
    assert_eq!(verdict(&tests[1]), "OK", "{v}");
    assert_eq!(verdict(&tests[2]), "WRONG_ANSWER", "{v}");
    assert_eq!(tests[2]["test"], 2);
    assert_eq!(v["steps"][1]["status"], "failed");
    assert_eq!(v["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_skips_the_rest() {
    let s = Server::start();
    let v = run_ok(
        &s,
        json!({"image": "busybox", "steps": [
            {"name": "compile", "args": ["sh", "-c", "echo 'main.c:1: error' >&2; exit 1"]},
            {"name": "run", "args": ["true"], "tests": [{"stdin": ""}]}
        ]}),
    )
    .await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["steps"][0]["status"], "failed");
    assert_eq!(results(&v, 0)[0]["stderr"], "main.c:1: error\n");
    assert_eq!(v["steps"][1]["status"], "skipped", "{v}");
    assert!(
        v["steps"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("compile"),
        "{v}"
    );
    assert!(results(&v, 1).is_empty());
}

/// A program the kernel refuses to execute: the failure is the run's (RUNTIME_ERROR,
/// exit code 126 and execve's reason), found when the program starts under the reaper;
/// the next execution is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_that_cannot_be_executed_is_a_runtime_error() {
    let s = Server::start();
    let v = run_ok(
        &s,
        json!({"image": "busybox",
        "files": [{"path": "notelf", "content": "not a program\n", "mode": 493}],
        "steps": [
            {"name": "exec", "args": ["./notelf"], "tests": [{"stdin": ""}, {"stdin": ""}]}
        ]}),
    )
    .await;
    for r in results(&v, 0) {
        // As a shell reports it: 126, and execve's reason on the program's stderr.
        assert_eq!(verdict(r), "RUNTIME_ERROR", "{v}");
        assert_eq!(r["exit_code"], 126, "{v}");
        let stderr = r["stderr"].as_str().unwrap();
        assert!(
            stderr.contains("exec ./notelf") && stderr.contains("ENOEXEC"),
            "no execve reason: {v}"
        );
    }
    let r = sh(&s, "echo fine", json!({})).await;
    assert_eq!(verdict(&r), "OK", "{r}");
    assert_no_containers_soon(&s).await;
}

/// The state root of the run containers of `s` (the runners' store, in the runs tmpfs).
fn run_store(s: &Server) -> PathBuf {
    corral::service::runs::container_root(&s.data())
}

/// The entries of the runs dir of `s`: run dirs (the runners' store left out).
fn run_dirs(s: &Server) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(s.data().join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".containers")
        .collect()
}

/// The ids of the warm containers of `s` (made by its runners ahead of requests).
fn warm_containers(s: &Server) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(run_store(s))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(corral::service::runs::WARM_PREFIX))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// Waits (up to 5 s) for the state roots of `s` (its own, and its runners') to hold no
/// container but warm ones: the runner removes a run's containers just after the answer.
/// The service's own directories (a leading dot) are no containers, but what is in its
/// `.trash` (containers deleted, not yet removed) counts.
async fn assert_no_containers_soon(s: &Server) {
    let run = s.dir.path().join("run");
    let roots = [run.clone(), run_store(s), run.join(".trash")];
    let mut left = Vec::new();
    for _ in 0..100 {
        left = roots
            .iter()
            .flat_map(|root| {
                std::fs::read_dir(root)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect())
                    .unwrap_or_else(|_| Vec::new())
            })
            .filter(|n| {
                let n = n.to_string_lossy();
                !n.starts_with('.') && !n.starts_with(corral::service::runs::WARM_PREFIX)
            })
            .collect::<Vec<_>>();
        if left.is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("containers left: {left:?}");
}

/// The pids of host processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_processes_and_fork_bombs_end_with_the_run() {
    let s = Server::start();
    let r = sh(&s, "sleep 4321 & sleep 4322 & echo started", json!({})).await;
    assert_eq!(verdict(&r), "OK", "{r}");
    assert!(
        processes_with("sleep 432").is_empty(),
        "background processes survived"
    );

    let r = sh(
        &s,
        "f() { f | f & }; f; sleep 2",
        json!({"pids": 32, "wall_time_ms": 1500}),
    )
    .await;
    assert!(
        ["WALL_TIME_LIMIT", "OK", "RUNTIME_ERROR"].contains(&verdict(&r)),
        "{r}"
    );
    // The next run is fine.
    let r = sh(&s, "echo fine", json!({})).await;
    assert_eq!(verdict(&r), "OK", "{r}");
    assert_eq!(r["stdout"], "fine\n");
    // Nothing is left: no container state (removed just after the answer), no run
    // directory, no workspace mount.
    assert_no_containers_soon(&s).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runs = run_dirs(&s);
    assert!(runs.is_empty(), "run dirs left: {runs:?}");
    let workspaces = format!("{}/", s.data().join("runs").display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&workspaces),
        "a workspace is still mounted"
    );
}

/// The mount points in this process's mount table that are tmpfs.
fn tmpfs_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            right.starts_with("tmpfs ").then(|| PathBuf::from(point))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_live_in_a_tmpfs_that_the_service_unmounts_when_it_stops() {
    let mut s = Server::start();
    let runs = s.data().join("runs");
    assert!(
        tmpfs_mounts().contains(&runs),
        "{} is no tmpfs",
        runs.display()
    );
    let v = run_ok(
        &s,
        json!({"image": "busybox", "steps": [{"name": "s", "args": ["true"], "tests": [{"stdin": ""}, {"stdin": ""}]}]}),
    )
    .await;
    assert_eq!(v["status"], "ok", "{v}");
    // The run's containers had their state in the runners' store, inside it.
    assert!(run_store(&s).starts_with(&runs));
    assert!(run_store(&s).is_dir(), "no runners' store");
    assert_no_containers_soon(&s).await;
    // Their cgroups are gone too, in every hierarchy.
    let prefix = format!("run-{}-", v["id"].as_str().unwrap());
    let hierarchies = std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten();
    for h in hierarchies {
        let parent = h.path().join("corral");
        for e in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !name.starts_with(&prefix),
                "cgroup left: {}",
                e.path().display()
            );
        }
    }
    s.stop();
    assert!(
        !tmpfs_mounts().contains(&runs),
        "{} still mounted after the service stopped",
        runs.display()
    );
}

/// The runner process executing a run for the server `s` (its copy of the launcher's
/// command line names `s`'s data dir; the containers' inits, also `corral-runner` until
/// they exec, are its children).
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn ppid(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// The runners of `s` (a warm container's init, a fork of its runner not yet exec'd,
/// has the runner's name and a runner as parent).
fn runners_of(s: &Server) -> Vec<i32> {
    let data = s.data().display().to_string();
    processes_with(&data)
        .into_iter()
        .filter(|&p| comm(p) == "corral-runner" && comm(ppid(p)) != "corral-runner")
        .collect()
}

/// The runner among the ancestors of `pid`.
fn runner_above(mut pid: i32) -> Option<i32> {
    while pid > 1 {
        if comm(pid) == "corral-runner" && comm(ppid(pid)) != "corral-runner" {
            return Some(pid);
        }
        pid = ppid(pid);
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_mid_run_fails_that_run_only() {
    let s = Server::start();
    // A first run starts a runner, which stays for the next ones.
    assert_eq!(verdict(&sh(&s, "true", json!({})).await), "OK");
    assert!(!runners_of(&s).is_empty(), "no idle runner after a run");
    // What a runner may leave of its earlier runs when it dies: a container that ran
    // (its init gone) and that it had not yet removed. Made here with the runtime's
    // CLI in the runners' store, so that the runner's timing does not decide.
    let leftover = "run-0123456789abcdef0123456789abcdef-0";
    let mut bundle = common::Bundle::new();
    bundle.args(&["true"]).write();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_corral"))
        .arg("--root")
        .arg(run_store(&s))
        .args(["run", "--detach", "--bundle"])
        .arg(bundle.path())
        .arg(leftover)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(run_store(&s).join(leftover).is_dir(), "{out:?}");
    let killer = async {
        for _ in 0..200 {
            if !processes_with("sleep 3141").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let program = processes_with("sleep 3141");
        assert!(!program.is_empty(), "the run never started");
        let runner = runner_above(program[0]).expect("the runner of the run");
        // SAFETY: kill(2) on a pid we just read; a stale pid only gets ESRCH.
        unsafe { libc::kill(runner, libc::SIGKILL) };
        runner
    };
    let body = json!({"image": "busybox", "steps": [{"name": "s", "args": ["sleep", "3141"], "limits": {"wall_time_ms": 60_000}}]});
    let ((status, v), first) = tokio::join!(run(&s, body), killer);
    assert_eq!(status, 500, "{v}");
    assert_eq!(v["type"], "urn:corral:problem:internal", "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("exited without reporting"),
        "{v}"
    );
    // Its container went with it: the program, the state.
    assert!(
        processes_with("sleep 3141").is_empty(),
        "the program survived"
    );
    assert_no_containers_soon(&s).await;
    // The next run gets a new runner.
    let r = sh(&s, "echo again", json!({})).await;
    assert_eq!(verdict(&r), "OK", "{r}");
    assert_eq!(r["stdout"], "again\n");
    assert!(!runners_of(&s).contains(&first));
}

/// The command that prints how many mounts are stacked at `/box`: 2 in a warm
/// container (its placeholder, then the workspace moved over it), 1 otherwise.
const BOX_MOUNTS: &str = "grep -c ' /box ' /proc/self/mountinfo";

/// Runs `body` until one of its executions (the first of step 0) ran in a warm
/// container, as `BOX_MOUNTS` at the end of its output tells: at most five times, a
/// little apart (runners take turns, and make warm containers between runs). Returns
/// every run's result.
async fn run_until_warm(s: &Server, body: Value) -> Vec<Value> {
    let mut all = Vec::new();
    for _ in 0..5 {
        let v = run_ok(s, body.clone()).await;
        let warm = results(&v, 0)[0]["stdout"]
            .as_str()
            .is_some_and(|o| o.lines().last() == Some("2"));
        all.push(v);
        if warm {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no run used a warm container: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_containers_give_each_run_its_own_workspace_and_stdin() {
    let s = Server::start();
    // Each run sees its own files and input, in a writable /box, as a non-root user,
    // warm container or not; and the program may be one of the workspace's files.
    let mut n = 0;
    let mut runs = Vec::new();
    while runs.len() < 2 {
        n += 1;
        let word = format!("word{n}");
        let body = json!({"image": "busybox",
            "files": [{"path": "word.txt", "content": word},
                      {"path": "prog.sh", "content": "#!/bin/sh\necho from-prog\n", "mode": 493}],
            "steps": [{"name": "s", "stdin": format!("in-{word}"), "args": ["sh", "-c",
                format!("pwd; cat word.txt; echo; cat; echo; ./prog.sh; ls /box; touch made && echo wrote; id -u; {BOX_MOUNTS}")]}]});
        let v = run_ok(&s, body).await;
        let r = results(&v, 0)[0].clone();
        assert_eq!(verdict(&r), "OK", "{r}");
        let out = r["stdout"].as_str().unwrap().to_string();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[..7],
            [
                "/box",
                &word,
                &format!("in-{word}"),
                "from-prog",
                "prog.sh",
                "word.txt",
                "wrote"
            ],
            "{r}"
        );
        assert_ne!(lines[7], "0", "{r}");
        if lines[8] == "2" {
            runs.push(r);
        }
        assert!(n < 8, "no run used a warm container");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Test cases: /box read-only, each test its own stdin (the first in a warm container).
    let tests = json!({"image": "busybox", "files": [{"path": "f", "content": "x"}],
        "steps": [{"name": "t", "args": ["sh", "-c",
            format!("cat; touch /box/y 2>/dev/null && echo writable || echo read-only; \
                     (echo x >> /proc/self/fd/0) 2>/dev/null && echo stdin-writable || echo stdin-kept; \
                     {BOX_MOUNTS}")],
                   "tests": [{"stdin": "one\n"}, {"stdin": "two\n"}]}]});
    for v in run_until_warm(&s, tests).await {
        let rs = results(&v, 0);
        let first = rs[0]["stdout"].as_str().unwrap();
        assert!(first.starts_with("one\nread-only\nstdin-kept\n"), "{v}");
        assert_eq!(rs[1]["stdout"], "two\nread-only\nstdin-kept\n1\n", "{v}");
    }

    // A program that is not there: found missing at create (the reason as the message),
    // or in a warm container at start (exit code 127 and the reason on stderr, as for a
    // program that cannot be executed).
    let missing = json!({"image": "busybox", "steps": [
        {"name": "m", "args": ["sh", "-c", format!("./missing 2>/dev/null || {BOX_MOUNTS}")]},
        {"name": "n", "args": ["./missing"]}]});
    let all = run_until_warm(&s, missing).await;
    // The run whose first step was warm had its second step warm too (a runner keeps
    // two configs warm).
    let last = &results(all.last().unwrap(), 1)[0];
    assert_eq!(last["exit_code"], 127, "{last}");
    for v in &all {
        let r = &results(v, 1)[0];
        assert_eq!(verdict(r), "RUNTIME_ERROR", "{r}");
        let said = |k: &str| {
            r[k].as_str()
                .is_some_and(|m| m.contains("./missing: ENOENT"))
        };
        match r["exit_code"].as_i64() {
            None => assert!(said("message"), "{r}"),
            Some(code) => assert!(code == 127 && said("stderr"), "{r}"),
        }
    }

    // At most two warm containers per runner (once the ones that ran are removed).
    let runners = runners_of(&s).len();
    let mut warm = Vec::new();
    for _ in 0..100 {
        warm = warm_containers(&s);
        if warm.len() <= 2 * runners {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        warm.len() <= 2 * runners,
        "{runners} runners, warm: {warm:?}"
    );
    assert_no_containers_soon(&s).await;
}

/// A rootfs tar for `POST /v1/images`: the test busybox rootfs, plus `/marker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_container_never_serves_an_image_replaced_since() {
    let s = Server::start();
    upload_image(&s, "marked", "one").await;
    let body = json!({"image": "marked", "steps": [{"name": "s", "args": ["sh", "-c",
        format!("cat /marker; echo; {BOX_MOUNTS}")]}]});
    let runs = run_until_warm(&s, body.clone()).await;
    let last = &results(runs.last().unwrap(), 0)[0];
    assert_eq!(last["stdout"], "one\n2\n", "{last}");
    // Let every runner make its warm container of the old image, then replace it: the
    // old image's directory goes, another takes its path. No run may see the old one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, v) = call(
        reqwest::Method::DELETE,
        &s.url("/v1/images/marked"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 204, "{v}");
    upload_image(&s, "marked", "two").await;
    for _ in 0..4 {
        let v = run_ok(&s, body.clone()).await;
        let r = &results(&v, 0)[0];
        assert!(r["stdout"].as_str().unwrap().starts_with("two\n"), "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_write_nothing() {
    let s = Server::start();
    let step = json!([{"name": "s", "args": ["true"]}]);
    let cases = [
        (json!({"image": "no-such-image", "steps": step}), "image"),
        (json!({"image": "busybox", "steps": []}), "steps"),
        (
            json!({"image": "busybox", "steps": [{"name": "s", "args": ["true"], "limits": {"memory_bytes": 1u64 << 40}}]}),
            "memory_bytes",
        ),
        (
            json!({"image": "busybox", "files": [{"path": "x", "content": "%%%", "encoding": "base64"}], "steps": step}),
            "base64",
        ),
        (
            json!({"image": "busybox", "files": [{"path": "../x", "content": ""}], "steps": step}),
            "files[0].path",
        ),
        (
            json!({"image": "busybox", "files": [{"path": "/etc/passwd", "content": ""}], "steps": step}),
            "files[0].path",
        ),
        (
            json!({"image": "busybox", "steps": step, "extra": 1}),
            "extra",
        ),
    ];
    for (body, needle) in cases {
        let (status, v) = run(&s, body.clone()).await;
        assert_eq!(status, 400, "{body} -> {v}");
        assert_eq!(v["type"], "urn:corral:problem:bad-request", "{v}");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{body} -> {v}"
        );
    }
    let runs = run_dirs(&s);
    assert!(runs.is_empty(), "a refused run wrote something: {runs:?}");

    // Wrong content type and no token.
    let resp = common::server::client()
        .post(s.url("/v1/runs"))
        .bearer_auth(USER)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    let (status, _) = call(
        reqwest::Method::POST,
        &s.url("/v1/runs"),
        None,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_is_429_and_metrics_count_verdicts() {
    let s = Server::start_with("[runs]\nmax_concurrent = 1\nmax_queued = 0\n");
    let slow = json!({"image": "busybox", "steps": [{"name": "s", "args": ["sleep", "2"]}]});
    let first = {
        let url = s.url("/v1/runs");
        let body = slow.clone();
        tokio::spawn(async move { call(reqwest::Method::POST, &url, Some(USER), Some(body)).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resp = common::server::client()
        .post(s.url("/v1/runs"))
        .bearer_auth(USER)
        .json(&slow)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let (status, v) = first.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(verdict(&results(&v, 0)[0]), "OK");

    // The run's container is removed just after the answer, while no request waits.
    let mut text = String::new();
    for _ in 0..100 {
        let resp = common::server::client()
            .get(s.url("/metrics"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        text = resp.text().await.unwrap();
        if text.contains("corral_containers_alive 0") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for needle in [
        "corral_executions_total{verdict=\"OK\"} 1",
        "corral_runs_total{outcome=\"rejected\"} 1",
        "corral_runs_total{outcome=\"ok\"} 1",
        "corral_run_duration_seconds_count 1",
        "corral_run_queue_depth 0",
        "corral_containers_alive 0",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// A server with the python and gcc images of `make images`.
fn server_with_language_images() -> Server {
    let dir = std::env::var("CORRAL_TEST_IMAGES").unwrap_or_else(|_| {
        panic!("CORRAL_TEST_IMAGES is not set: run `make images` and point it at build/images")
    });
    for name in ["python", "gcc"] {
        let rootfs = std::path::Path::new(&dir).join(name).join("rootfs");
        assert!(
            rootfs.is_dir(),
            "{} is missing: run `make images`",
            rootfs.display()
        );
    }
    Server::start_with(&format!("images_dir = \"{dir}\"\n"))
}

/// One python program per verdict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_verdicts() {
    let s = server_with_language_images();
    let py = |code: &str, limits: Value, tests: Option<Value>| {
        let mut step = json!({"name": "run", "args": ["python3", "main.py"], "limits": limits});
        if let Some(t) = tests {
            step["tests"] = t;
        }
        json!({"image": "python", "files": [{"path": "main.py", "content": code}], "steps": [step]})
    };
    let cases: Vec<(&str, Value, Option<Value>, &str)> = vec![
        ("print('hello')", json!({}), None, "OK"),
        (
            "print(int(input()) * 2)",
            json!({}),
            Some(
                json!([{"stdin": "2\n", "expected_stdout": "4\n"}, {"stdin": "3\n", "expected_stdout": "7"}]),
            ),
            "OK,WRONG_ANSWER",
        ),
        (
            "while True: pass",
            json!({"cpu_time_ms": 500}),
            None,
            "TIME_LIMIT",
        ),
        (
            "import time; time.sleep(30)",
            json!({"wall_time_ms": 500}),
            None,
            "WALL_TIME_LIMIT",
        ),
        (
            "a = []\nwhile True: a.append(bytearray(1 << 20))",
            json!({"memory_bytes": 64 << 20}),
            None,
            "MEMORY_LIMIT",
        ),
        (
            "while True: print('x' * 1000)",
            json!({"output_bytes": 10000}),
            None,
            "OUTPUT_LIMIT",
        ),
        ("import sys; sys.exit(3)", json!({}), None, "RUNTIME_ERROR"),
        (
            "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)",
            json!({}),
            None,
            "SIGNALED",
        ),
        (
            "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
            // A CPU limit out of reach: the bomb keeps every CPU busy, and with the
            // default (2 s) the two limits would race on a 2-CPU machine.
            json!({"pids": 32, "wall_time_ms": 1000, "cpu_time_ms": 20_000}),
            None,
            "WALL_TIME_LIMIT",
        ),
    ];
    for (code, limits, tests, want) in cases {
        let v = run_ok(&s, py(code, limits, tests)).await;
        let got: Vec<&str> = results(&v, 0).iter().map(verdict).collect();
        assert_eq!(got.join(","), want, "{code}: {v}");
        if want == "TIME_LIMIT" {
            let cpu = results(&v, 0)[0]["cpu_time_ms"].as_u64().unwrap();
            assert!((500..900).contains(&cpu), "cpu time {cpu}: {v}");
        }
    }
    // After the fork bomb, the next run is fine; a background process dies with its run.
    let v = run_ok(
        &s,
        py(
            "import subprocess; subprocess.Popen(['sleep', '4323']); print('bg')",
            json!({}),
            None,
        ),
    )
    .await;
    assert_eq!(verdict(&results(&v, 0)[0]), "OK", "{v}");
    assert!(
        processes_with("sleep 4323").is_empty(),
        "the background process survived"
    );
    // A test case cannot leave a file for the next one.
    let v = run_ok(
        &s,
        py(
            "import os\nprint(os.path.exists('/tmp/mark'))\nopen('/tmp/mark', 'w').write('1')\n\
             try:\n    open('/box/mark', 'w')\nexcept OSError as e:\n    print('ro', e.errno)",
            json!({}),
            Some(json!([{"expected_stdout": "False\nro 30\n"}, {"expected_stdout": "False\nro 30\n"}])),
        ),
    )
    .await;
    let got: Vec<&str> = results(&v, 0).iter().map(verdict).collect();
    assert_eq!(got, ["OK", "OK"], "{v}");
}

/// Compile once, run many; C programs for the verdicts that need a real process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcc_compile_then_run() {
    let s = server_with_language_images();
    let c = |code: &str, limits: Value, tests: Value| {
        json!({"image": "gcc", "files": [{"path": "main.c", "content": code}], "steps": [
            {"name": "compile", "args": ["gcc", "-O2", "-o", "main", "main.c"], "limits": {"cpu_time_ms": 10000, "wall_time_ms": 20000, "memory_bytes": 512 << 20}},
            {"name": "run", "args": ["./main"], "limits": limits, "tests": tests}
        ]})
    };
    let sum = "#include <stdio.h>\nint main(){int a,b;if(scanf(\"%d %d\",&a,&b)!=2)return 1;printf(\"%d\\n\",a+b);return 0;}";
    let v = run_ok(
        &s,
        c(
            sum,
            json!({}),
            json!([
                {"stdin": "1 2\n", "expected_stdout": "3\n"},
                {"stdin": "2 2\n", "expected_stdout": "5\n"},
                {"stdin": "x\n"}
            ]),
        ),
    )
    .await;
    assert_eq!(v["steps"][0]["status"], "ok", "{v}");
    let got: Vec<&str> = results(&v, 1).iter().map(verdict).collect();
    assert_eq!(got, ["OK", "WRONG_ANSWER", "RUNTIME_ERROR"], "{v}");

    let one = json!([{"stdin": ""}]);
    let cases: Vec<(&str, Value, &str)> = vec![
        ("int main(){*(volatile int*)0=1;}", json!({}), "SIGNALED"),
        (
            "#include <stdlib.h>\nint main(){abort();}",
            json!({}),
            "SIGNALED",
        ),
        (
            "int main(){for(;;);}",
            json!({"cpu_time_ms": 300}),
            "TIME_LIMIT",
        ),
        (
            "#include <stdlib.h>\n#include <string.h>\nint main(){for(;;){char*p=malloc(1<<20);if(p)memset(p,1,1<<20);}}",
            json!({"memory_bytes": 64 << 20}),
            "MEMORY_LIMIT",
        ),
        (
            "#include <stdio.h>\nint main(){for(;;)puts(\"spam\");}",
            json!({"output_bytes": 4096}),
            "OUTPUT_LIMIT",
        ),
        ("int main(){return 3;}", json!({}), "RUNTIME_ERROR"),
    ];
    for (code, limits, want) in cases {
        let v = run_ok(&s, c(code, limits, one.clone())).await;
        let r = &results(&v, 1)[0];
        assert_eq!(verdict(r), want, "{code}: {v}");
        if code.contains("abort") {
            assert_eq!(r["signal"], libc::SIGABRT, "{v}");
        }
    }

    // A compile error: the run step is skipped, the compiler's message is there.
    let v = run_ok(&s, c("int main(){ return x; }", json!({}), one.clone())).await;
    assert_eq!(v["steps"][0]["status"], "failed", "{v}");
    assert!(
        results(&v, 0)[0]["stderr"]
            .as_str()
            .unwrap()
            .contains("error"),
        "{v}"
    );
    assert_eq!(v["steps"][1]["status"], "skipped", "{v}");
}
