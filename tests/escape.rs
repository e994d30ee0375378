//! Nothing starts outside its root (runc's CVE-2024-21626, "Leaky Vessels", and
//! CVE-2019-5736): for every way a process starts (`corral run`, `create` + `start`,
//! `exec`, `--preserve-fds`, a service container made at the request or claimed warm, a
//! judged run), a cwd or a program reached through `/proc/self/fd/N` (every N from 3 to
//! 64), `/proc/1/root/..`, `/proc/self/cwd/../..` or `/proc/self/exe` must either be
//! refused or stay inside the container's root. A canary directory on the host proves
//! that nothing climbed out: a process whose cwd escaped climbs to the host's root and
//! writes into it.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::server::{ADMIN, Server, USER, call, client};
use common::{Bundle, Corral, tempdir};
use serde_json::{Value, json};

/// Enough `..` to reach `/` from any directory of the host.
const CLIMB: &str = "../../../../../../../../../../../../../../../../../../../..";

/// The fd numbers a leaked fd could have.
const FDS: std::ops::RangeInclusive<i32> = 3..=64;

/// A host directory that an escaped process would write into.
struct Canary(tempfile::TempDir);

impl Canary {
    fn new() -> Self {
        Canary(tempdir("corral-canary-"))
    }

    /// A script that climbs from its cwd to the root and writes `tag` into the canary
    /// through a relative path: it lands in the canary only if the cwd was the host's.
    fn climb(&self, tag: &str) -> String {
        let rel = self.0.path().to_str().unwrap().trim_start_matches('/');
        format!("cd {CLIMB}; touch ./{rel}/{tag} 2>/dev/null; echo ran")
    }

    #[track_caller]
    fn assert_untouched(&self, how: &str) {
        let written: Vec<_> = std::fs::read_dir(self.0.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            written.is_empty(),
            "{how}: a container process wrote into the host's canary: {written:?}"
        );
    }
}

/// `dev:ino` of a host file, as `stat -L -c %d:%i` prints it inside a container.
fn identity(path: &Path) -> String {
    let m = std::fs::metadata(path).unwrap();
    format!("{}:{}", m.dev(), m.ino())
}

/// The program path that leads through fd `n` to the host's busybox.
fn program_through(n: i32) -> String {
    format!("/proc/self/fd/{n}/{CLIMB}/bin/busybox")
}

/// What a program reports of itself: the identity of its own binary.
const WHO_AM_I: &str = "stat -L -c %d:%i /proc/self/exe";

// ---------------------------------------------------------------------------------------
// The runtime's command line
// ---------------------------------------------------------------------------------------

#[test]
fn run_never_starts_in_a_cwd_outside_the_root() {
    let c = Corral::new("esc-cwd");
    let canary = Canary::new();
    let mut cwds: Vec<String> = FDS.map(|n| format!("/proc/self/fd/{n}")).collect();
    cwds.extend(["/proc/1/root/..".into(), "/proc/self/cwd/../..".into()]);
    for (i, cwd) in cwds.iter().enumerate() {
        let id = c.id(&format!("c{i}"));
        let mut b = Bundle::new();
        b.set("/process/cwd", json!(cwd))
            .sh(&canary.climb(&format!("cwd{i}")));
        let _ = c.run(&id, &b);
        canary.assert_untouched(&format!("corral run with cwd {cwd}"));
        let _ = c.exec(&["delete", "--force", &id]);
    }
}

#[test]
fn create_and_start_never_start_in_a_cwd_outside_the_root() {
    let c = Corral::new("esc-create");
    let canary = Canary::new();
    for n in FDS {
        let id = c.id(&format!("c{n}"));
        let mut b = Bundle::new();
        b.set("/process/cwd", json!(format!("/proc/self/fd/{n}")))
            .sh(&canary.climb(&format!("cwd{n}")));
        if c.create(&id, &b).success() {
            let _ = c.start(&id);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = c.exec(&["delete", "--force", &id]);
        canary.assert_untouched(&format!("create + start with cwd /proc/self/fd/{n}"));
    }
}

#[test]
fn run_never_execs_a_program_outside_the_root() {
    let c = Corral::new("esc-prog");
    let host = identity(Path::new("/bin/busybox"));
    for n in FDS {
        let id = c.id(&format!("p{n}"));
        let mut b = Bundle::new();
        b.args(&[&program_through(n), "sh", "-c", WHO_AM_I]);
        let out = c.run(&id, &b);
        assert!(
            !out.stdout.contains(&host),
            "the host's /bin/busybox ran in the container through fd {n}: {out}"
        );
        let _ = c.exec(&["delete", "--force", &id]);
    }
}

#[test]
fn the_runtimes_own_binary_is_never_the_program() {
    let c = Corral::new("esc-exe");
    for (i, program) in ["/proc/self/exe", "/proc/thread-self/exe", "/proc/1/exe"]
        .iter()
        .enumerate()
    {
        let id = c.id(&format!("x{i}"));
        let mut b = Bundle::new();
        b.args(&[program, "--version"]);
        let out = c.run(&id, &b);
        assert!(!out.success(), "{program} ran: {out}");
        assert!(
            !out.stdout.contains("corral"),
            "the runtime's binary ran in the container as {program}: {out}"
        );
        if *program != "/proc/1/exe" {
            out.one_line_error(&["runtime's own binary"]);
        }
        let _ = c.exec(&["delete", "--force", &id]);
    }
}

#[test]
fn a_cwd_the_root_cannot_reach_fails_the_start() {
    // The caller hands the container a host directory (--preserve-fds): the runtime
    // holds it at chdir, and only the getcwd check after chdir can refuse the cwd.
    use std::os::unix::process::CommandExt;
    let c = Corral::new("esc-getcwd");
    let canary = Canary::new();
    let id = c.id("g");
    let mut b = Bundle::new();
    b.set("/process/cwd", json!("/proc/self/fd/3"))
        .sh(&canary.climb("getcwd"));
    b.write();
    c.track(&id);
    let dir = std::fs::File::open(canary.0.path()).unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let mut cmd = c.cmd();
    cmd.args(["run", "--preserve-fds", "1", "--bundle"])
        .arg(b.path())
        .arg(&id);
    // SAFETY: only dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = common::Outcome::from_output("corral run --preserve-fds 1", cmd.output().unwrap());
    canary.assert_untouched("cwd /proc/self/fd/3 of a preserved host directory");
    assert!(!out.success(), "{out}");
    out.one_line_error(&["cwd /proc/self/fd/3", "outside the container's root"]);

    // Without a pid namespace, /proc/1/root is the host's: refused one way or another.
    let id = c.id("h");
    let mut b = Bundle::new();
    b.without_namespace("pid")
        .set("/process/cwd", json!("/proc/1/root/tmp"))
        .sh(&canary.climb("hostpid"));
    let out = c.run(&id, &b);
    canary.assert_untouched("cwd /proc/1/root/tmp in the host's pid namespace");
    assert!(!out.success(), "{out}");
}

#[test]
fn exec_never_starts_outside_the_root() {
    let c = Corral::new("esc-exec");
    let canary = Canary::new();
    let host = identity(Path::new("/bin/busybox"));
    let id = c.id("e");
    let mut b = Bundle::new();
    b.args(&["sleep", "300"]);
    c.create_and_start(&id, &b);
    for n in FDS {
        let cwd = format!("/proc/self/fd/{n}");
        let _ = c.exec(&[
            "exec",
            "--cwd",
            &cwd,
            &id,
            "sh",
            "-c",
            &canary.climb(&format!("e{n}")),
        ]);
        canary.assert_untouched(&format!("exec --cwd {cwd}"));
        let out = c.exec(&["exec", &id, &program_through(n), "sh", "-c", WHO_AM_I]);
        assert!(
            !out.stdout.contains(&host),
            "exec ran the host's busybox through fd {n}: {out}"
        );
    }
    let out = c.exec(&["exec", &id, "/proc/self/exe", "--version"]);
    assert!(!out.success() && !out.stdout.contains("corral"), "{out}");
    let _ = c.exec(&["delete", "--force", &id]);
}

#[test]
fn preserved_fds_lead_nowhere_outside() {
    use std::os::unix::process::CommandExt;
    let c = Corral::new("esc-preserve");
    let canary = Canary::new();
    let dir = tempdir("corral-preserve-");
    let file = std::fs::File::create(dir.path().join("f")).unwrap();
    for n in FDS {
        let id = c.id(&format!("f{n}"));
        let mut b = Bundle::new();
        b.set("/process/cwd", json!(format!("/proc/self/fd/{n}")))
            .sh(&canary.climb(&format!("f{n}")));
        b.write();
        c.track(&id);
        let mut cmd = c.cmd();
        cmd.args(["run", "--preserve-fds", "1", "--bundle"])
            .arg(b.path())
            .arg(&id);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: only dup2 between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = cmd.output().unwrap();
        canary.assert_untouched(&format!("run --preserve-fds 1 with cwd /proc/self/fd/{n}"));
        let _ = c.exec(&["delete", "--force", &id]);
    }
}

// ---------------------------------------------------------------------------------------
// The service
// ---------------------------------------------------------------------------------------

async fn post(s: &Server, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    call(reqwest::Method::POST, &s.url(path), Some(token), body).await
}

/// Creates, starts and waits for a container of `process` as the admin (whom the
/// policy does not stop: the runtime must); returns its stdout, if it ran.
async fn run_as_admin(s: &Server, id: &str, process: Value) -> Option<String> {
    let (st, v) = post(
        s,
        ADMIN,
        "/v1/containers",
        Some(json!({"id": id, "image": "busybox", "process": process})),
    )
    .await;
    let mut out = None;
    if st == 201 {
        let (st, _) = post(s, ADMIN, &format!("/v1/containers/{id}/start"), None).await;
        if st == 200 {
            let _ = post(
                s,
                ADMIN,
                &format!("/v1/containers/{id}/wait?timeout=10"),
                None,
            )
            .await;
            let logs = client()
                .get(s.url(&format!("/v1/containers/{id}/logs?stream=stdout")))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            out = Some(logs);
        }
    } else {
        assert!((400..500).contains(&st), "create {id}: {st} {v}");
    }
    let _ = call(
        reqwest::Method::DELETE,
        &s.url(&format!("/v1/containers/{id}?force=true")),
        Some(ADMIN),
        None,
    )
    .await;
    out
}

async fn service_containers_stay_inside(s: &Server, how: &str) {
    let canary = Canary::new();
    let host = identity(Path::new("/bin/busybox"));
    for n in FDS {
        let cwd = format!("/proc/self/fd/{n}");
        run_as_admin(
            s,
            &format!("cwd{n}"),
            json!({"args": ["sh", "-c", canary.climb(&format!("s{n}"))], "cwd": cwd}),
        )
        .await;
        canary.assert_untouched(&format!("{how}: cwd {cwd}"));
        let out = run_as_admin(
            s,
            &format!("prog{n}"),
            json!({"args": [program_through(n), "sh", "-c", WHO_AM_I]}),
        )
        .await;
        assert!(
            !out.unwrap_or_default().contains(&host),
            "{how}: the host's busybox ran through fd {n}"
        );
    }
    for cwd in ["/proc/1/root/..", "/proc/self/cwd/../.."] {
        run_as_admin(
            s,
            "other",
            json!({"args": ["sh", "-c", canary.climb("other")], "cwd": cwd}),
        )
        .await;
        canary.assert_untouched(&format!("{how}: cwd {cwd}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_containers_made_cold_stay_inside() {
    let s = Server::start_with("[limits]\nwarm_containers = 0\n");
    service_containers_stay_inside(&s, "cold").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_containers_claimed_warm_stay_inside() {
    let s = Server::start();
    service_containers_stay_inside(&s, "warm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_tokens_may_not_name_system_paths() {
    let s = Server::start();
    for (process, field) in [
        (
            json!({"args": ["sh"], "cwd": "/proc/self/fd/7"}),
            "process.cwd",
        ),
        (json!({"args": ["sh"], "cwd": "/tmp/../sys"}), "process.cwd"),
        (json!({"args": ["/proc/self/exe"]}), "process.args[0]"),
        (
            json!({"args": ["/dev/../proc/1/root/bin/sh"]}),
            "process.args[0]",
        ),
        (
            json!({"args": ["sh"], "env": ["PATH=/proc/self/fd/3"]}),
            "process.env[0]",
        ),
    ] {
        let (st, v) = post(
            &s,
            USER,
            "/v1/containers",
            Some(json!({"image": "busybox", "process": process})),
        )
        .await;
        assert_eq!(st, 403, "{process} -> {v}");
        assert!(
            v.to_string().contains(field),
            "{process}: {field} not named in {v}"
        );
    }
    let (st, v) = post(
        &s,
        USER,
        "/v1/runs",
        Some(json!({"image": "busybox", "steps": [{"name": "a", "args": ["/proc/self/exe"]}]})),
    )
    .await;
    assert_eq!(st, 403, "{v}");
    assert!(v.to_string().contains("steps[0].args[0]"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn judged_runs_never_exec_a_program_outside_the_root() {
    // The policy refuses such paths as written; a symlink made by an earlier step is
    // only seen by the runtime, at start.
    let s = Server::start();
    let host = identity(Path::new("/bin/busybox"));
    for n in FDS {
        let link = program_through(n);
        let (st, v) = post(
            &s,
            USER,
            "/v1/runs",
            Some(json!({"image": "busybox", "steps": [
                {"name": "link", "args": ["ln", "-s", link, "esc"]},
                {"name": "run", "args": ["./esc", "sh", "-c", WHO_AM_I]},
                {"name": "exe", "args": ["ln", "-sf", "/proc/self/exe", "esc"]},
                {"name": "again", "args": ["./esc", "--version"]}
            ]})),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let text = v.to_string();
        assert!(
            !text.contains(&host),
            "the host's busybox ran through fd {n}: {v}"
        );
        let again = &v["steps"][3]["results"][0];
        assert_ne!(again["verdict"], "OK", "the runtime's binary ran: {v}");
        assert!(
            !again["stdout"].as_str().unwrap_or("").contains("corral"),
            "the runtime's binary ran: {v}"
        );
    }
}
