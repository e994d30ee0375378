//! `process` of config.json: args, env, cwd, user and groups, umask, rlimits,
//! capabilities, noNewPrivileges, oomScoreAdj.

mod common;

use common::{Bundle, Corral, proc_status_field};
use serde_json::json;

fn status_of(out: &common::Outcome, key: &str) -> String {
    proc_status_field(&out.stdout, key).unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn args_env_and_cwd() {
    let c = Corral::new("proc-args");
    let mut b = Bundle::new();
    b.set(
        "/process/env",
        json!(["PATH=/bin:/usr/bin", "GREETING=hello world", "EMPTY="]),
    )
    .set("/process/cwd", json!("/etc"))
    .args(&[
        "sh",
        "-c",
        "echo \"$0|$1|$2\"; echo \"$GREETING\"; pwd; env | sort",
        "zero",
        "one",
        "two words",
    ]);
    let out = c
        .cmd()
        .env("CORRAL_TEST_HOST_ONLY", "leak")
        .args(["run", "--bundle"])
        .arg({
            b.write();
            b.path()
        })
        .arg(c.id("a"))
        .output()
        .unwrap();
    let out = common::Outcome::from_output("corral run", out).ok();
    let lines = out.lines();
    assert_eq!(lines[0], "zero|one|two words", "{out}");
    assert_eq!(lines[1], "hello world", "{out}");
    assert_eq!(lines[2], "/etc", "{out}");
    let env: Vec<&str> = lines[3..].iter().map(String::as_str).collect();
    for want in ["PATH=/bin:/usr/bin", "GREETING=hello world", "EMPTY="] {
        assert!(
            env.contains(&want),
            "{want} missing from the environment: {env:?}"
        );
    }
    // Only what the spec gives, plus what sh itself exports (PWD, SHLVL, ...).
    for var in &env {
        let name = var.split('=').next().unwrap();
        assert!(
            [
                "PATH", "GREETING", "EMPTY", "PWD", "SHLVL", "OLDPWD", "HOME", "_"
            ]
            .contains(&name),
            "unexpected variable {var} in the container (runtime environment leaked?)"
        );
    }
}

#[test]
fn program_is_found_in_the_containers_path() {
    let c = Corral::new("proc-path");
    let mut b = Bundle::new();
    // `hostname` is in /bin of the image; PATH names only /bin.
    b.set("/process/env", json!(["PATH=/bin"]))
        .args(&["hostname"]);
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout.trim(), "youki");
}

#[test]
fn user_and_groups() {
    let c = Corral::new("proc-user");
    let mut b = Bundle::new();
    b.set(
        "/process/user",
        json!({"uid": 1000, "gid": 1001, "additionalGids": [2000, 3000]}),
    )
    .sh("cat /proc/self/status; echo id=$(id -u):$(id -g)");
    let out = c.run(&c.id("a"), &b).ok();
    let nums = |k: &str| -> Vec<String> {
        status_of(&out, k)
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(nums("Uid"), ["1000"; 4], "{out}");
    assert_eq!(nums("Gid"), ["1001"; 4], "{out}");
    assert_eq!(nums("Groups"), ["2000", "3000"], "{out}");
    assert!(out.stdout.contains("id=1000:1001"), "{out}");
}

#[test]
fn root_user_has_no_supplementary_groups_by_default() {
    let c = Corral::new("proc-groups0");
    let mut b = Bundle::new();
    b.sh("grep Groups /proc/self/status");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(
        proc_status_field(&out.stdout, "Groups").as_deref(),
        Some(""),
        "{out}"
    );
}

#[test]
fn umask() {
    let c = Corral::new("proc-umask");
    let mut b = Bundle::new();
    b.set("/process/user/umask", json!(0o027))
        .tmpfs("/tmp", &[])
        .sh("umask; touch /tmp/f; mkdir /tmp/d; stat -c %a /tmp/f /tmp/d");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["0027", "640", "750"]);
}

#[test]
fn rlimits() {
    let c = Corral::new("proc-rlimit");
    let mut b = Bundle::new();
    b.set(
        "/process/rlimits",
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
            {"type": "RLIMIT_NPROC", "soft": 100, "hard": 200}
        ]),
    )
    .sh("ulimit -n; ulimit -Hn; ulimit -c; ulimit -Su; ulimit -Hu");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["512", "512", "0", "100", "200"]);
}

#[test]
fn rlimit_above_hard_limit_fails_clearly() {
    // Raising a hard limit needs CAP_SYS_RESOURCE, which this machine's root may lack;
    // where it fails, create must say which limit and why, and leave nothing.
    let c = Corral::new("proc-rlimhi");
    let id = c.id("a");
    let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let caps = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = u64::from_str_radix(&proc_status_field(&caps, "CapEff").unwrap(), 16).unwrap();
    let has_sys_resource = eff & (1 << 24) != 0; // CAP_SYS_RESOURCE
    let mut b = Bundle::new();
    b.set(
        "/process/rlimits",
        json!([{"type": "RLIMIT_NOFILE", "soft": hard + 1, "hard": hard + 1}]),
    )
    .sh("ulimit -Hn");
    let out = c.run(&id, &b);
    if has_sys_resource {
        assert_eq!(out.ok().stdout.trim(), (hard + 1).to_string());
    } else {
        out.one_line_error(&["RLIMIT_NOFILE", "not permitted"]);
        c.assert_nothing_left(&id, Some(&b));
    }
}

#[test]
fn capabilities_are_exactly_the_configured_sets() {
    let c = Corral::new("proc-caps");
    let mut b = Bundle::new();
    b.capabilities(&["CAP_CHOWN", "CAP_KILL"])
        .sh("cat /proc/self/status; chown 1:1 /dev/null && echo chown-ok");
    let out = c.run(&c.id("a"), &b).ok();
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_of(&out, k), "0000000000000021", "{k}: {out}");
    }
    assert!(
        out.stdout.ends_with("chown-ok\n"),
        "CAP_CHOWN does not work: {out}"
    );
}

#[test]
fn capabilities_can_be_empty() {
    let c = Corral::new("proc-caps0");
    let mut b = Bundle::new();
    b.capabilities(&[])
        .sh("cat /proc/self/status; chown 1:1 /dev/null; echo rc=$?");
    let out = c.run(&c.id("a"), &b).ok();
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_of(&out, k), "0000000000000000", "{k}: {out}");
    }
    // Root without capabilities cannot give its files away.
    assert!(out.stdout.ends_with("rc=1\n"), "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
}

#[test]
fn ambient_capabilities_reach_a_non_root_user() {
    let c = Corral::new("proc-ambient");
    let mut b = Bundle::new();
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}))
        .capabilities(&["CAP_NET_BIND_SERVICE"])
        .sh("cat /proc/self/status");
    let out = c.run(&c.id("a"), &b).ok();
    for k in ["CapEff", "CapPrm", "CapAmb", "CapBnd"] {
        assert_eq!(status_of(&out, k), "0000000000000400", "{k}: {out}");
    }
}

#[test]
fn capabilities_without_ambient_are_dropped_for_non_root() {
    let c = Corral::new("proc-noamb");
    let mut b = Bundle::new();
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}))
        .capabilities(&["CAP_NET_BIND_SERVICE"])
        .set("/process/capabilities/ambient", json!([]))
        .sh("cat /proc/self/status");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(status_of(&out, "CapEff"), "0000000000000000", "{out}");
    assert_eq!(status_of(&out, "CapBnd"), "0000000000000400", "{out}");
}

#[test]
fn no_new_privileges() {
    let c = Corral::new("proc-nnp");
    let mut b = Bundle::new();
    b.set("/process/noNewPrivileges", json!(true))
        .sh("grep NoNewPrivs /proc/self/status");
    let out = c.run(&c.id("on"), &b).ok();
    assert_eq!(status_of(&out, "NoNewPrivs"), "1");
    b.set("/process/noNewPrivileges", json!(false));
    let out = c.run(&c.id("off"), &b).ok();
    assert_eq!(status_of(&out, "NoNewPrivs"), "0");
}

#[test]
fn oom_score_adj() {
    let c = Corral::new("proc-oom");
    let mut b = Bundle::new();
    b.set("/process/oomScoreAdj", json!(100))
        .sh("cat /proc/self/oom_score_adj");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout.trim(), "100");
}

#[test]
fn missing_cwd_fails_create_naming_it() {
    let c = Corral::new("proc-cwd");
    let id = c.id("a");
    let mut b = Bundle::new();
    b.set("/process/cwd", json!("/no/such/dir")).args(&["true"]);
    c.create(&id, &b)
        .one_line_error(&["cwd", "/no/such/dir", "No such file"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn cwd_the_user_cannot_enter_fails_create() {
    let c = Corral::new("proc-cwdperm");
    let id = c.id("a");
    let mut b = Bundle::new();
    // /root is 0700 root in the image; uid 1000 without CAP_DAC_OVERRIDE cannot enter.
    b.set("/process/cwd", json!("/root"))
        .set("/process/user", json!({"uid": 1000, "gid": 1000}))
        .args(&["true"]);
    c.create(&id, &b)
        .one_line_error(&["cwd", "/root", "Permission denied"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn program_starts_with_default_signal_dispositions() {
    // The runtime (Rust) ignores SIGPIPE and blocks signals while it waits; ignored and
    // blocked signals would survive execve into the container's program.
    let c = Corral::new("proc-signals");
    let mut b = Bundle::new();
    b.args(&["cat", "/proc/self/status"]);
    let out = c.run(&c.id("a"), &b).ok();
    let field = |name: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("SigIgn:"), "0000000000000000", "{}", out.stdout);
    assert_eq!(field("SigBlk:"), "0000000000000000", "{}", out.stdout);
}

/// The reaper annotation: the program is pid 2 under a pid 1 that reports its wait
/// status on the preserved fd, so a signal the program sends itself kills it.
#[test]
fn reaper_runs_the_program_as_pid_2_and_reports_its_status() {
    let c = Corral::new("proc-reaper");
    let mut b = Bundle::new();
    b.set(
        "/annotations",
        json!({"org.corral.init.reaper-status-fd": "3"}),
    )
    .set("/process/user", json!({"uid": 1000, "gid": 1000}))
    .args(&["sh", "-c", "echo pid=$$; kill -TERM $$; echo survived"]);
    b.write();
    let status = tempfile::NamedTempFile::new().unwrap();
    let script = format!(
        "exec {} --root {} run --preserve-fds 1 --bundle {} {} 3>{}",
        common::CORRAL,
        c.root().display(),
        b.path().display(),
        c.id("a"),
        status.path().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let out = common::Outcome::from_output("corral run (reaper)", out).ok();
    assert_eq!(out.lines(), vec!["pid=2".to_string()], "{out}");
    let raw = std::fs::read(status.path()).unwrap();
    assert_eq!(raw.len(), 4, "no status reported: {raw:?}");
    let st = i32::from_ne_bytes(raw.try_into().unwrap());
    assert!(libc::WIFSIGNALED(st), "status {st:#x}");
    assert_eq!(libc::WTERMSIG(st), libc::SIGTERM);

    // Refused: the fd is not preserved; a root process.
    let out = c.exec(&["run", "--bundle", &b.path().to_string_lossy(), &c.id("b")]);
    out.fails()
        .one_line_error(&["org.corral.init.reaper-status-fd", "preserve"]);
    b.set("/process/user", json!({"uid": 0, "gid": 0}));
    b.write();
    let out = c.exec(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        &b.path().to_string_lossy(),
        &c.id("c"),
    ]);
    out.fails()
        .one_line_error(&["org.corral.init.reaper-status-fd", "non-root"]);
}
