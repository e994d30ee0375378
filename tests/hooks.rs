//! OCI hooks (config.md#posix-platform-hooks, runtime.md#lifecycle): each phase runs at
//! its moment, in its namespace, with the state on stdin; failures are handled as the
//! spec says.
//!
//! Hooks append their name to a log in a host temp dir. That dir is also bound into the
//! container at /tmp/hooks (under a tmpfs), for startContainer hooks, whose path resolves
//! in the container after pivot_root.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Bundle, Corral, ns_link, processes_matching, tempdir};
use serde_json::{Value, json};

const IN_CONTAINER: &str = "/tmp/hooks";

/// A host-side hook: `/bin/sh -c <script>`.
fn host_hook(script: &str) -> Value {
    json!({"path": "/bin/sh", "args": ["sh", "-c", script]})
}

struct HookDir {
    dir: tempfile::TempDir,
}

impl HookDir {
    fn new() -> Self {
        HookDir {
            dir: tempdir("corral-hooks-"),
        }
    }

    fn host(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn host_str(&self, name: &str) -> String {
        self.host(name).to_string_lossy().into_owned()
    }

    /// A hook appending `name` to the log, from the host.
    fn log_hook(&self, name: &str) -> Value {
        host_hook(&format!("echo {name} >> {}", self.host_str("log")))
    }

    /// A startContainer hook: a script in the bound dir, which exists only at its
    /// container path, appending `name` to the log after `delay`.
    fn container_hook(&self, name: &str, delay: &str, script_tail: &str) -> Value {
        let file = format!("{name}.sh");
        std::fs::write(
            self.host(&file),
            format!("#!/bin/sh\nsleep {delay}\n{script_tail}\necho {name} >> {IN_CONTAINER}/log\n"),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.host(&file), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = format!("{IN_CONTAINER}/{file}");
        assert!(
            !Path::new(&path).exists(),
            "{path} must not exist on the host"
        );
        json!({"path": path, "args": [file]})
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.host("log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    fn bundle(&self) -> Bundle {
        let mut b = Bundle::new();
        b.tmpfs("/tmp", &[])
            .bind(self.dir.path(), IN_CONTAINER, &[])
            .args(&["sleep", "300"]);
        b
    }
}

#[test]
fn hooks_run_in_lifecycle_order() {
    let c = Corral::new("hk-order");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    for phase in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        b.hook(phase, h.log_hook(phase));
    }
    // Slow on purpose: poststart must still come after it (runtime.md#lifecycle 7-9).
    b.hook(
        "startContainer",
        h.container_hook("startContainer", "0.3", ""),
    );

    c.create(&id, &b).ok();
    assert_eq!(h.log(), ["prestart", "createRuntime", "createContainer"]);
    c.start(&id).ok();
    assert_eq!(
        h.log(),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart"
        ],
        "when start returns, startContainer and then poststart must have run"
    );
    c.kill(&id, "KILL").ok();
    c.wait_status(&id, "stopped", Duration::from_secs(5));
    assert_eq!(h.log().len(), 5, "poststop ran before delete");
    c.delete(&id).ok();
    assert_eq!(
        h.log(),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop"
        ]
    );
}

#[test]
fn hooks_receive_the_state_on_stdin() {
    let c = Corral::new("hk-state");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    let phases = [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ];
    for phase in phases {
        b.hook(
            phase,
            host_hook(&format!("cat > {}", h.host_str(&format!("{phase}.json")))),
        );
    }
    b.hook("startContainer", json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {IN_CONTAINER}/startContainer.json")]}));
    let pid = c.create_and_start(&id, &b);
    // startContainer runs in the container before its program: poll for its file.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.host("startContainer.json").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    c.delete_force(&id).ok();
    let bundle = b.canonical().to_string_lossy().into_owned();
    for phase in phases.iter().chain(&["startContainer"]) {
        let text = std::fs::read_to_string(h.host(&format!("{phase}.json")))
            .unwrap_or_else(|e| panic!("{phase} hook did not run: {e}"));
        let st: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{phase}: stdin is not JSON ({e}): {text:?}"));
        assert_eq!(st["id"], id.as_str(), "{phase}: {st}");
        assert_eq!(st["bundle"], bundle.as_str(), "{phase}: {st}");
        assert!(st["ociVersion"].is_string(), "{phase}: {st}");
        if *phase != "poststop" {
            assert_eq!(st["pid"].as_i64(), Some(pid as i64), "{phase}: {st}");
        }
    }
    let status = |phase: &str| -> Value {
        serde_json::from_str::<Value>(
            &std::fs::read_to_string(h.host(&format!("{phase}.json"))).unwrap(),
        )
        .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("poststart"), "running");
    assert_eq!(status("poststop"), "stopped");
}

#[test]
fn hooks_run_in_the_right_namespaces() {
    let c = Corral::new("hk-ns");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    let record = |phase: &str| {
        host_hook(&format!(
            "readlink /proc/self/ns/mnt /proc/self/ns/net > {}",
            h.host_str(&format!("{phase}.ns"))
        ))
    };
    b.hook("createRuntime", record("createRuntime"))
        .hook("createContainer", record("createContainer"));
    c.create(&id, &b).ok();
    let pid = c.pid(&id).to_string();
    let read = |phase: &str| -> Vec<String> {
        std::fs::read_to_string(h.host(&format!("{phase}.ns")))
            .unwrap_or_else(|e| panic!("{phase}: {e}"))
            .lines()
            .map(String::from)
            .collect()
    };
    // createRuntime: the runtime's namespaces; createContainer: the container's.
    assert_eq!(
        read("createRuntime"),
        [ns_link("self", "mnt"), ns_link("self", "net")]
    );
    assert_eq!(
        read("createContainer"),
        [ns_link(&pid, "mnt"), ns_link(&pid, "net")]
    );
}

#[test]
fn hook_env_and_args_are_exactly_the_configured_ones() {
    let c = Corral::new("hk-env");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    b.hook(
        "createRuntime",
        json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo \"$HOOK_VAR|$0|$1|${{CORRAL_TEST_HOST_ONLY-unset}}\" > {}", h.host_str("env")), "arg0", "arg1"],
            "env": ["HOOK_VAR=configured"]
        }),
    );
    b.write();
    let out = c
        .cmd()
        .env("CORRAL_TEST_HOST_ONLY", "leaked")
        .args(["create", "--bundle"])
        .arg(b.path())
        .arg(&id)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    assert_eq!(
        std::fs::read_to_string(h.host("env")).unwrap(),
        "configured|arg0|arg1|unset\n"
    );
}

fn assert_create_fails_on_hook(test: &str, phase: &str, hook: Value, needles: &[&str]) {
    let c = Corral::new(test);
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    b.cgroups_path(&format!("/corral-tests/{id}"))
        .hook(phase, hook);
    // A later phase must not run once one has failed.
    b.hook("poststart", h.log_hook("poststart"));
    let out = c.create(&id, &b);
    let mut all = vec![phase];
    all.extend_from_slice(needles);
    out.one_line_error(&all);
    c.assert_nothing_left(&id, Some(&b));
    assert!(h.log().is_empty(), "{:?}", h.log());
}

#[test]
fn failing_prestart_hook_fails_create() {
    assert_create_fails_on_hook(
        "hk-failpre",
        "prestart",
        host_hook("echo prestart-broke >&2; exit 7"),
        &["prestart-broke"],
    );
}

#[test]
fn failing_create_runtime_hook_fails_create() {
    assert_create_fails_on_hook(
        "hk-failcr",
        "createRuntime",
        host_hook("echo boom >&2; exit 3"),
        &["boom"],
    );
}

#[test]
fn failing_create_container_hook_fails_create() {
    assert_create_fails_on_hook(
        "hk-failcc",
        "createContainer",
        host_hook("exit 9"),
        &["exit status 9"],
    );
}

#[test]
fn missing_hook_program_fails_create() {
    assert_create_fails_on_hook(
        "hk-missing",
        "createRuntime",
        json!({"path": "/no/such/hook"}),
        &["/no/such/hook"],
    );
}

#[test]
fn hook_timeout_fails_create() {
    let marker = format!("9.{}", std::process::id());
    let t = Instant::now();
    assert_create_fails_on_hook(
        "hk-timeout",
        "createRuntime",
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!("exec sleep {marker}")], "timeout": 1}),
        &["timed out"],
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the timeout was not applied"
    );
    let left = processes_matching(|cmd| cmd.contains(&marker));
    assert!(
        left.is_empty(),
        "the timed-out hook is still running: {left:?}"
    );
}

#[test]
fn failing_start_container_hook_stops_the_container() {
    let c = Corral::new("hk-failsc");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    b.hook(
        "startContainer",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "exit 5"]}),
    )
    .hook("poststart", h.log_hook("poststart"))
    .sh(&format!(
        "echo program-ran >> {IN_CONTAINER}/log; sleep 300"
    ));
    c.create(&id, &b).ok();
    let out = c.start(&id);
    c.wait_status(&id, "stopped", Duration::from_secs(5));
    // runtime.md#lifecycle 7: generate an error, stop the container, never run the program.
    assert!(
        !h.log().contains(&"program-ran".to_string()),
        "the program ran: {:?}",
        h.log()
    );
    out.one_line_error(&["startContainer"]);
}

#[test]
fn failing_poststart_hook_is_only_a_warning() {
    let c = Corral::new("hk-failps");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    b.hook("poststart", host_hook("echo poststart-broke >&2; exit 1"))
        .hook("poststart", h.log_hook("second-poststart"));
    c.create(&id, &b).ok();
    let out = c.start(&id).ok();
    assert!(out.stderr.contains("poststart"), "no warning: {out}");
    assert_eq!(c.status(&id), "running");
    // config.md: "the remaining hooks and lifecycle continue as if the hook had succeeded".
    assert_eq!(h.log(), ["second-poststart"]);
}

#[test]
fn failing_poststop_hook_is_only_a_warning() {
    let c = Corral::new("hk-failpst");
    let id = c.id("a");
    let h = HookDir::new();
    let mut b = h.bundle();
    b.hook("poststop", host_hook("exit 1"))
        .hook("poststop", h.log_hook("second-poststop"));
    c.create_and_start(&id, &b);
    c.kill(&id, "KILL").ok();
    c.wait_status(&id, "stopped", Duration::from_secs(5));
    let out = c.delete(&id).ok();
    assert!(out.stderr.contains("poststop"), "no warning: {out}");
    c.assert_nothing_left(&id, Some(&b));
    assert_eq!(h.log(), ["second-poststop"]);
}
