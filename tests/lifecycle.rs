//! The OCI lifecycle through corral's runc-style command line: create, start, state,
//! kill, delete, run, list, spec, features.

mod common;

use std::time::{Duration, Instant};

use common::{Bundle, CORRAL, Corral, alive, tempdir, wait_gone};
use serde_json::Value;

const STOP: Duration = Duration::from_secs(5);

#[test]
fn create_start_kill_delete() {
    let c = Corral::new("lc-basic");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);

    c.create(&id, &b).ok();
    let st = c.state(&id);
    assert_eq!(st["status"], "created", "{st}");
    assert_eq!(st["id"], id.as_str(), "{st}");
    assert_eq!(st["bundle"], b.canonical().to_str().unwrap(), "{st}");
    assert!(
        st["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{st}"
    );
    let pid = st["pid"].as_i64().expect("created container has a pid") as i32;
    assert!(pid > 0 && alive(pid), "init {pid} should be alive");

    c.start(&id).ok();
    assert_eq!(c.status(&id), "running");
    assert_eq!(c.pid(&id), pid, "start must not change the init's pid");

    c.kill(&id, "SIGKILL").ok();
    c.wait_status(&id, "stopped", STOP);
    assert!(wait_gone(pid, STOP), "init {pid} still alive after SIGKILL");

    c.delete(&id).ok();
    let gone = c.exec(&["state", &id]);
    gone.one_line_error(&[&id, "does not exist"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn run_exit_codes() {
    let c = Corral::new("lc-exit");
    let mut b = Bundle::new();

    b.args(&["true"]);
    c.run(&c.id("zero"), &b).code_is(0);

    b.sh("exit 3");
    c.run(&c.id("three"), &b).code_is(3);

    b.sh("echo out; echo err >&2; exit 42");
    let out = c.run(&c.id("io"), &b).code_is(42);
    assert_eq!(out.stdout, "out\n");
    assert!(out.stderr.contains("err\n"), "{out}");

    for id in [c.id("zero"), c.id("three"), c.id("io")] {
        c.assert_nothing_left(&id, Some(&b));
    }
}

#[test]
fn run_killed_by_signal_exits_128_plus_n() {
    let c = Corral::new("lc-sig");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    b.write();
    let child = c
        .cmd()
        .args(["run", "--bundle"])
        .arg(b.path())
        .arg(&id)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn corral run");
    // Wait for the container to be running, then kill it from outside.
    let deadline = Instant::now() + STOP;
    loop {
        let st = c.exec(&["state", &id]);
        if st.success() && st.stdout.contains("\"running\"") {
            break;
        }
        assert!(Instant::now() < deadline, "container never ran: {st}");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill(&id, "KILL").ok();
    let out = common::Outcome::from_output("corral run", child.wait_with_output().unwrap());
    out.code_is(128 + 9);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn delete_running_needs_force() {
    let c = Corral::new("lc-del");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    let pid = c.create_and_start(&id, &b);

    c.delete(&id).one_line_error(&[&id, "running"]);
    assert_eq!(
        c.status(&id),
        "running",
        "a failed delete must leave it running"
    );
    assert!(alive(pid));

    c.delete_force(&id).ok();
    assert!(
        wait_gone(pid, STOP),
        "delete --force left the init {pid} alive"
    );
    c.exec(&["state", &id]).one_line_error(&["does not exist"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn delete_created_container_kills_init() {
    let c = Corral::new("lc-delc");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    c.create(&id, &b).ok();
    let pid = c.pid(&id);
    c.delete(&id).ok();
    assert!(wait_gone(pid, STOP), "init {pid} survived delete");
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn start_twice_fails() {
    let c = Corral::new("lc-start2");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.sh("echo started; sleep 300");
    c.create_and_start(&id, &b);
    c.start(&id).one_line_error(&["running"]);
    assert_eq!(c.status(&id), "running");
    // The process ran exactly once.
    c.wait_output(&id, 1);
    assert_eq!(c.container_output(&id).0, "started\n");
}

#[test]
fn kill_created_container() {
    let c = Corral::new("lc-killc");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.sh("echo must-not-run");
    c.create(&id, &b).ok();
    let pid = c.pid(&id);
    c.kill(&id, "KILL").ok();
    c.wait_status(&id, "stopped", STOP);
    assert!(wait_gone(pid, STOP));
    c.start(&id).fails();
    c.delete(&id).ok();
    assert_eq!(
        c.container_output(&id).0,
        "",
        "the process must never have run"
    );
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn kill_accepts_names_and_numbers() {
    let c = Corral::new("lc-killn");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    for (i, sig) in ["KILL", "SIGKILL", "9", "sigkill"].iter().enumerate() {
        let id = c.id(&format!("k{i}"));
        let pid = c.create_and_start(&id, &b);
        c.kill(&id, sig).ok();
        c.wait_status(&id, "stopped", STOP);
        assert!(wait_gone(pid, STOP), "kill {sig} did not kill {pid}");
        c.delete(&id).ok();
    }
}

#[test]
fn kill_delivers_a_handled_signal() {
    let c = Corral::new("lc-killu");
    let id = c.id("a");
    let mut b = Bundle::new();
    // pid 1 only gets signals it handles: trap USR1 and report it.
    b.sh("trap 'echo got-usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done");
    c.create_and_start(&id, &b);
    let deadline = Instant::now() + STOP;
    while !c.container_output(&id).0.contains("ready") {
        assert!(Instant::now() < deadline, "container never got ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    c.kill(&id, "USR1").ok();
    c.wait_status(&id, "stopped", STOP);
    assert_eq!(c.container_output(&id).0, "ready\ngot-usr1\n");
}

#[test]
fn kill_unknown_signal_fails() {
    let c = Corral::new("lc-killbad");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    let pid = c.create_and_start(&id, &b);
    for sig in ["SIGFOO", "NOPE", "0", "65"] {
        let out = c.exec(&["kill", &id, sig]);
        out.one_line_error(&["signal"]);
    }
    assert_eq!(c.status(&id), "running");
    assert!(alive(pid));
}

#[test]
fn kill_stopped_container_fails() {
    let c = Corral::new("lc-killst");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["true"]);
    c.create(&id, &b).ok();
    c.start(&id).ok();
    c.wait_status(&id, "stopped", STOP);
    c.kill(&id, "KILL").one_line_error(&["not running"]);
}

#[test]
fn pid_file_is_written() {
    let c = Corral::new("lc-pidfile");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    let dir = tempdir("corral-pidfile-");
    let pf = dir.path().join("init.pid");
    c.create_with(&id, &b, &["--pid-file", pf.to_str().unwrap()])
        .ok();
    let text = std::fs::read_to_string(&pf).expect("pid file written");
    let pid: i32 = text.trim().parse().expect("pid file holds a number");
    assert_eq!(pid, c.pid(&id));
    // Written atomically: no temp file left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("init.pid")]);

    // `run --detach` writes it too.
    let id2 = c.id("b");
    let pf2 = dir.path().join("run.pid");
    c.run_detached_with(&id2, &b, &["--pid-file", pf2.to_str().unwrap()])
        .ok();
    let pid2: i32 = std::fs::read_to_string(&pf2)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid2, c.pid(&id2));
}

#[test]
fn list_table_json_and_quiet() {
    let c = Corral::new("lc-list");
    let (a, r) = (c.id("created"), c.id("running"));
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    c.create(&a, &b).ok();
    c.create_and_start(&r, &b);
    let bundle = b.canonical().to_string_lossy().into_owned();

    let table = c.exec(&["list"]).ok();
    let lines = table.lines();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    for (id, status) in [(&a, "created"), (&r, "running")] {
        let row = lines
            .iter()
            .find(|l| l.split_whitespace().next() == Some(id.as_str()))
            .unwrap_or_else(|| panic!("{id} missing from list:\n{table}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[1], c.pid(id).to_string(), "{row}");
        assert_eq!(cols[2], status, "{row}");
        assert_eq!(cols[3], bundle, "{row}");
    }

    let json = c.exec(&["list", "--format", "json"]).ok();
    let v: Value = serde_json::from_str(&json.stdout).expect("list --format json is JSON");
    let arr = v.as_array().expect("an array");
    assert_eq!(arr.len(), 2, "{v}");
    for (id, status) in [(&a, "created"), (&r, "running")] {
        let e = arr
            .iter()
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} missing: {v}"));
        assert_eq!(e["status"], status, "{e}");
        assert_eq!(e["pid"].as_i64(), Some(c.pid(id) as i64), "{e}");
        assert_eq!(e["bundle"], bundle.as_str(), "{e}");
    }

    let quiet = c.exec(&["list", "-q"]).ok();
    let mut ids = quiet.lines();
    ids.sort();
    let mut want = vec![a.clone(), r.clone()];
    want.sort();
    assert_eq!(ids, want);
}

#[test]
fn run_detach_returns_while_running() {
    let c = Corral::new("lc-detach");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.sh("echo detached; exec sleep 300");
    let t = Instant::now();
    c.run_detached(&id, &b).ok();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "run --detach did not return"
    );
    assert_eq!(c.status(&id), "running");
    let pid = c.pid(&id);
    c.wait_output(&id, 1);
    assert_eq!(c.container_output(&id).0, "detached\n");
    c.delete_force(&id).ok();
    assert!(wait_gone(pid, STOP));
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn state_of_unknown_container_fails() {
    let c = Corral::new("lc-unknown");
    let id = c.id("never");
    for args in [
        vec!["state", &id],
        vec!["start", &id],
        vec!["kill", &id, "KILL"],
        vec!["delete", &id],
    ] {
        c.exec(&args).one_line_error(&[&id, "does not exist"]);
    }
    // runc: delete --force of a missing container succeeds.
    c.exec(&["delete", "--force", &id]).ok();
}

#[test]
fn spec_writes_once_and_refuses_to_overwrite() {
    common::require_root();
    let dir = tempdir("corral-spec-");
    let spec = |d: &std::path::Path| {
        std::process::Command::new(CORRAL)
            .args(["spec", "--bundle"])
            .arg(d)
            .output()
            .expect("run corral spec")
    };
    let first = common::Outcome::from_output("corral spec", spec(dir.path())).ok();
    assert!(first.stdout.is_empty());
    let path = dir.path().join("config.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .expect("config.json is JSON");
    assert!(v["ociVersion"].is_string(), "{v}");
    assert!(v["process"]["args"].is_array(), "{v}");
    assert_eq!(v["root"]["path"], "rootfs", "{v}");
    // runc's device rules: deny all (the runtime appends the standard devices).
    assert_eq!(
        v["linux"]["resources"]["devices"],
        serde_json::json!([{"allow": false, "access": "rwm"}]),
        "{v}"
    );

    std::fs::write(&path, "precious").unwrap();
    let second = common::Outcome::from_output("corral spec", spec(dir.path()));
    second.one_line_error(&["config.json", "exists"]);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[test]
fn features_prints_json() {
    common::require_root();
    let out = std::process::Command::new(CORRAL)
        .arg("features")
        .output()
        .unwrap();
    let out = common::Outcome::from_output("corral features", out).ok();
    let v: Value = serde_json::from_str(&out.stdout).expect("features is JSON");
    let max = v["ociVersionMax"].as_str().expect("ociVersionMax");
    assert!(max.starts_with("1."), "{max}");
    assert!(v["ociVersionMin"].is_string(), "{v}");
    let hooks: Vec<&str> = v["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for h in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "{h} missing from {hooks:?}");
    }
    let ns: Vec<&str> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for n in ["mount", "pid", "network", "ipc", "uts", "user", "cgroup"] {
        assert!(ns.contains(&n), "{n} missing from {ns:?}");
    }
}
