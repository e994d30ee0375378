//! `corral exec`: a new process in a running container, with the container's namespaces,
//! cgroup, seccomp filter, capabilities and rlimits; and every way to get it wrong.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Bundle, Corral, alive, ns_link, proc_status_field, tempdir};
use serde_json::json;

/// A running `sleep 300` container with a tmpfs /tmp; returns its id and init pid.
fn running(c: &Corral, name: &str, edit: impl FnOnce(&mut Bundle)) -> (String, i32, Bundle) {
    let id = c.id(name);
    let mut b = Bundle::new();
    b.tmpfs("/tmp", &[]).args(&["sleep", "300"]);
    edit(&mut b);
    let pid = c.create_and_start(&id, &b);
    (id, pid, b)
}

/// `corral exec --detach --pid-file F <id> <args>` with stdio on /dev/null; the pid.
fn exec_detached(c: &Corral, id: &str, args: &[&str]) -> i32 {
    let dir = tempdir("corral-exec-pid-");
    let pf = dir.path().join("pid");
    let st = c
        .cmd()
        .arg("exec")
        .arg("--detach")
        .arg("--pid-file")
        .arg(&pf)
        .arg(id)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn corral exec");
    assert!(st.success(), "corral exec --detach {args:?} failed: {st}");
    std::fs::read_to_string(&pf)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid in pid file")
}

fn status_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status")
}

#[test]
fn output_and_exit_code() {
    let c = Corral::new("ex-code");
    let (id, _, _) = running(&c, "a", |_| {});
    let out = c
        .exec(&["exec", &id, "sh", "-c", "echo out; echo err >&2; exit 7"])
        .code_is(7);
    assert_eq!(out.stdout, "out\n", "{out}");
    assert!(out.stderr.contains("err\n"), "{out}");
    c.exec(&["exec", &id, "true"]).code_is(0);
    // A signal is reported as 128+N, like `run`.
    c.exec(&["exec", &id, "sh", "-c", "kill -9 $$"])
        .code_is(137);
}

#[test]
fn joins_every_namespace_and_the_cgroup() {
    let c = Corral::new("ex-ns");
    let (id, init, _) = running(&c, "a", |b| {
        b.namespace("network", None)
            .namespace("uts", None)
            .namespace("ipc", None);
    });
    let pid = exec_detached(&c, &id, &["sleep", "301"]);
    c.kill_on_drop("sleep 301");
    for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup", "user"] {
        assert_eq!(
            ns_link(&pid.to_string(), ns),
            ns_link(&init.to_string(), ns),
            "exec'd process {pid} is not in the container's {ns} namespace"
        );
    }
    let cg = |p: i32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(
        cg(pid),
        cg(init),
        "exec'd process is not in the container's cgroup"
    );
    // It is listed by ps, and inside the container it sees the init as pid 1.
    let ps = c.exec(&["ps", "--format", "json", &id]).ok();
    let pids: Vec<i32> = serde_json::from_str(&ps.stdout).expect("ps json");
    assert!(pids.contains(&pid) && pids.contains(&init), "{ps}");
    let out = c.exec(&["exec", &id, "cat", "/proc/1/cmdline"]).ok();
    assert_eq!(out.stdout, "sleep\x00300\x00", "{out}");
    // Only stdio: no fd of the runtime reaches the process.
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut fds = fds;
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"], "fds of the exec'd process");
}

#[test]
fn gets_the_containers_seccomp_caps_and_rlimits() {
    let c = Corral::new("ex-sec");
    let (id, init, _) = running(&c, "a", |b| {
        b.set(
            "/linux/seccomp",
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}),
        )
        .set(
            "/process/rlimits",
            json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]),
        );
    });
    let out = c
        .exec(&[
            "exec",
            &id,
            "sh",
            "-c",
            "mkdir /tmp/x; echo rc=$?; ulimit -n",
        ])
        .ok();
    assert_eq!(out.lines(), ["rc=1", "123"], "{out}");
    let pid = exec_detached(&c, &id, &["sleep", "302"]);
    c.kill_on_drop("sleep 302");
    let (mine, theirs) = (status_of(pid), status_of(init));
    for key in ["CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp"] {
        assert_eq!(
            proc_status_field(&mine, key),
            proc_status_field(&theirs, key),
            "{key} of the exec'd process differs from the init's"
        );
    }
    assert_eq!(proc_status_field(&mine, "Seccomp").as_deref(), Some("2"));
}

#[test]
fn flags_set_user_cwd_env_and_caps() {
    let c = Corral::new("ex-flags");
    let (id, _, _) = running(&c, "a", |_| {});
    let out = c
        .exec(&[
            "exec",
            "--user",
            "1000:1001",
            "--cwd",
            "/tmp",
            "--env",
            "GREETING=hi",
            "--env",
            "PATH=/bin",
            &id,
            "sh",
            "-c",
            "id -u; id -g; pwd; echo $GREETING; echo $PATH",
        ])
        .ok();
    assert_eq!(out.lines(), ["1000", "1001", "/tmp", "hi", "/bin"], "{out}");
    // CAP_NET_ADMIN (bit 12) is not in the default set; --cap adds it.
    let has_net_admin = |out: &common::Outcome| {
        let v = proc_status_field(&out.stdout, "CapEff").expect("CapEff");
        u64::from_str_radix(&v, 16).unwrap() & (1 << 12) != 0
    };
    let plain = c
        .exec(&["exec", &id, "grep", "CapEff", "/proc/self/status"])
        .ok();
    assert!(!has_net_admin(&plain), "{plain}");
    let added = c
        .exec(&[
            "exec",
            "--cap",
            "CAP_NET_ADMIN",
            &id,
            "grep",
            "CapEff",
            "/proc/self/status",
        ])
        .ok();
    assert!(has_net_admin(&added), "{added}");
}

#[test]
fn process_file() {
    let c = Corral::new("ex-proc");
    let (id, _, _) = running(&c, "a", |_| {});
    let dir = tempdir("corral-exec-proc-");
    let file = dir.path().join("process.json");
    std::fs::write(
        &file,
        json!({"args": ["sh", "-c", "id -u; pwd; echo $X"], "cwd": "/tmp",
               "user": {"uid": 65534, "gid": 65534}, "env": ["PATH=/bin", "X=from-file"]})
        .to_string(),
    )
    .unwrap();
    let out = c
        .exec(&["exec", "--process", file.to_str().unwrap(), &id])
        .ok();
    assert_eq!(out.lines(), ["65534", "/tmp", "from-file"], "{out}");
}

/// Processes in the container's cgroup, from the host.
fn pids_of(c: &Corral, id: &str) -> Vec<i32> {
    let out = c.exec(&["ps", "--format", "json", id]).ok();
    serde_json::from_str(&out.stdout).expect("ps json")
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    let c = Corral::new("ex-bad");
    let (id, init, _) = running(&c, "a", |_| {});
    let before = pids_of(&c, &id);
    let dir = tempdir("corral-exec-bad-");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };

    let malformed = write("malformed.json", r#"{"args": "sh", "cwd": "/"}"#);
    c.exec(&["exec", "--process", &malformed, &id])
        .one_line_error(&["malformed.json", "args", "invalid type"]);
    let truncated = write("truncated.json", r#"{"args": ["sh"], "cwd""#);
    c.exec(&["exec", "--process", &truncated, &id])
        .one_line_error(&["truncated.json", "EOF"]);
    let relative = write(
        "relative.json",
        r#"{"args": ["true"], "cwd": "tmp", "user": {}}"#,
    );
    c.exec(&["exec", "--process", &relative, &id])
        .one_line_error(&["process.cwd", "absolute"]);
    let selinux = write(
        "selinux.json",
        r#"{"args": ["true"], "cwd": "/", "user": {}, "selinuxLabel": "system_u:x"}"#,
    );
    c.exec(&["exec", "--process", &selinux, &id])
        .one_line_error(&["process.selinuxLabel", "not supported"]);
    let missing = dir.path().join("missing.json");
    c.exec(&["exec", "--process", missing.to_str().unwrap(), &id])
        .one_line_error(&["missing.json"]);
    c.exec(&["exec", &id]).one_line_error(&["command"]);
    c.exec(&["exec", &id, "/no/such/program"])
        .one_line_error(&[&id, "/no/such/program"]);
    c.exec(&["exec", "--cwd", "/no/such/dir", &id, "true"])
        .one_line_error(&["/no/such/dir"]);
    c.exec(&["exec", "--user", "nobody", &id, "true"])
        .one_line_error(&["--user", "uid"]);
    c.exec(&["exec", "--cap", "CAP_BOGUS", &id, "true"])
        .one_line_error(&["CAP_BOGUS"]);
    c.exec(&["exec", "--apparmor", "unconfined", &id, "true"])
        .one_line_error(&["--apparmor", "not supported"]);
    c.exec(&["exec", "--process-label", "x", &id, "true"])
        .one_line_error(&["--process-label", "not supported"]);
    c.exec(&["exec", "--detach", "--tty", &id, "sh"])
        .one_line_error(&["--console-socket"]);

    // None of it left a process behind or touched the container.
    assert_eq!(pids_of(&c, &id), before);
    assert_eq!(c.status(&id), "running");
    assert!(alive(init));

    c.exec(&["exec", "no-such-container", "true"])
        .one_line_error(&["no-such-container", "does not exist"]);
}

#[test]
fn into_a_created_container_works_and_a_stopped_one_fails() {
    let c = Corral::new("ex-state");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    c.create(&id, &b).ok();
    // runc allows exec before start: the process runs next to the waiting init.
    let out = c.exec(&["exec", &id, "echo", "before-start"]).ok();
    assert_eq!(out.stdout, "before-start\n");
    assert_eq!(c.status(&id), "created");
    c.start(&id).ok();
    c.kill(&id, "SIGKILL").ok();
    c.wait_status(&id, "stopped", Duration::from_secs(5));
    c.exec(&["exec", &id, "true"]).one_line_error(&["stopped"]);
}

#[test]
fn into_a_paused_container_needs_ignore_paused() {
    let c = Corral::new("ex-paused");
    let (id, _, _) = running(&c, "a", |_| {});
    c.exec(&["pause", &id]).ok();
    c.exec(&["exec", &id, "true"])
        .one_line_error(&["paused", "--ignore-paused"]);
    c.exec(&["resume", &id]).ok();
    c.exec(&["exec", &id, "true"]).ok();
}

#[test]
fn detached_process_outlives_the_runtime() {
    let c = Corral::new("ex-detach");
    let (id, _, _) = running(&c, "a", |_| {});
    let start = Instant::now();
    let pid = exec_detached(&c, &id, &["sleep", "303"]);
    c.kill_on_drop("sleep 303");
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(alive(pid), "detached process {pid} is gone");
    // Deleting the container takes it along.
    c.delete_force(&id).ok();
    assert!(
        common::wait_gone(pid, Duration::from_secs(5)),
        "{pid} survived delete"
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || !alive(pid));
}
