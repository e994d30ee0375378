//! `linux.seccomp`: deny rules on top of an allow-by-default filter, seen from inside.

mod common;

use common::{Bundle, Corral, proc_status_field};
use serde_json::{Value, json};

/// Allow everything except `rules`.
fn filter(rules: Value) -> Value {
    json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})
}

fn bundle_with(seccomp: Value, script: &str) -> Bundle {
    let mut b = Bundle::new();
    b.set("/linux/seccomp", seccomp)
        .tmpfs("/tmp", &[])
        .sh(script);
    b
}

#[test]
fn no_filter_without_seccomp() {
    let c = Corral::new("sc-none");
    let mut b = Bundle::new();
    b.sh("grep Seccomp: /proc/self/status");
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(
        proc_status_field(&out.stdout, "Seccomp").as_deref(),
        Some("0"),
        "{out}"
    );
}

#[test]
fn deny_mkdir_with_eperm() {
    let c = Corral::new("sc-eperm");
    let b = bundle_with(
        filter(json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}])),
        "grep Seccomp: /proc/self/status; mkdir /tmp/x; echo mkdir-rc=$?; \
         touch /tmp/y && echo touch-ok; ls /tmp",
    );
    let out = c.run(&c.id("a"), &b).ok();
    let lines = out.lines();
    assert_eq!(
        proc_status_field(&lines[0], "Seccomp").as_deref(),
        Some("2"),
        "{out}"
    );
    assert_eq!(lines[1..], ["mkdir-rc=1", "touch-ok", "y"], "{out}");
    assert!(
        out.stderr
            .contains("can't create directory '/tmp/x': Operation not permitted"),
        "{out}"
    );
}

#[test]
fn deny_mkdir_with_a_chosen_errno() {
    let c = Corral::new("sc-errno");
    let b = bundle_with(
        filter(
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EDQUOT}]),
        ),
        "mkdir /tmp/x; echo rc=$?",
    );
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout, "rc=1\n");
    assert!(out.stderr.contains("Disk quota exceeded"), "{out}");
}

#[test]
fn filter_applies_without_no_new_privileges() {
    let c = Corral::new("sc-nonnp");
    let mut b = bundle_with(
        filter(
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EROFS}]),
        ),
        "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/x; echo rc=$?",
    );
    b.set("/process/noNewPrivileges", json!(false));
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(
        proc_status_field(&out.stdout, "NoNewPrivs").as_deref(),
        Some("0"),
        "{out}"
    );
    assert_eq!(
        proc_status_field(&out.stdout, "Seccomp").as_deref(),
        Some("2"),
        "{out}"
    );
    assert!(out.stdout.ends_with("rc=1\n"), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
}

#[test]
fn rule_with_an_argument_condition() {
    let c = Corral::new("sc-args");
    // kill(pid, SIGUSR1) is refused; kill(pid, 0) is not.
    let b = bundle_with(
        filter(json!([{
            "names": ["kill"],
            "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 1, "value": libc::SIGUSR1, "op": "SCMP_CMP_EQ"}]
        }])),
        "trap '' USR1; kill -0 $$ && echo probe-ok; kill -USR1 $$; echo usr1-rc=$?",
    );
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.lines(), ["probe-ok", "usr1-rc=1"], "{out}");
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
}

#[test]
fn kill_action_kills_the_caller() {
    let c = Corral::new("sc-kill");
    let mut b = bundle_with(
        filter(json!([{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}])),
        "",
    );
    b.args(&["uname", "-r"]);
    // The container's process dies of SIGSYS: `run` exits 128 + 31, having printed nothing.
    let out = c.run(&c.id("a"), &b).code_is(128 + libc::SIGSYS);
    assert_eq!(out.stdout, "", "{out}");
}

#[test]
fn rule_with_the_default_action_is_harmless() {
    // A deny rule whose action is the default action is simply redundant (runc drops
    // it); the filter still loads and nothing is denied.
    let c = Corral::new("sc-redund");
    let b = bundle_with(
        filter(json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ALLOW"}])),
        "mkdir /tmp/x && echo mkdir-ok",
    );
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout, "mkdir-ok\n");
}

#[test]
fn unknown_action_is_refused() {
    let c = Corral::new("sc-badact");
    let id = c.id("a");
    let b = bundle_with(
        filter(json!([{"names": ["mkdir"], "action": "SCMP_ACT_BOGUS"}])),
        "true",
    );
    c.create(&id, &b)
        .one_line_error(&["linux.seccomp", "SCMP_ACT_BOGUS"]);
    c.assert_nothing_left(&id, Some(&b));
}

#[test]
fn notify_is_refused() {
    let c = Corral::new("sc-notify");
    let id = c.id("a");
    let b = bundle_with(
        filter(json!([{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}])),
        "true",
    );
    c.create(&id, &b)
        .one_line_error(&["linux.seccomp", "notify"]);
    c.assert_nothing_left(&id, Some(&b));
}

/// What a static busybox `echo` calls, and nothing else: the runtime must not need more
/// once the filter is in place.
const ECHO_SYSCALLS: &[&str] = &[
    "execve",
    "arch_prctl",
    "set_tid_address",
    "set_robust_list",
    "rseq",
    "prlimit64",
    "mprotect",
    "getrandom",
    "brk",
    "readlink",
    "getuid",
    "prctl",
    "write",
    "exit_group",
];

#[test]
fn a_profile_without_close_range_runs() {
    // Many real profiles predate close_range(2): what the runtime does after the filter
    // is in place must not depend on it. Without no_new_privileges the filter is loaded
    // while the init still holds CAP_SYS_ADMIN, before it drops capabilities.
    let c = Corral::new("sc-closerange");
    let without = filter(json!([{"names": ["close_range"], "action": "SCMP_ACT_ERRNO"}]));
    for nnp in [false, true] {
        let mut b = bundle_with(without.clone(), "echo ran");
        b.set("/process/noNewPrivileges", json!(nnp));
        let out = c.run(&c.id(&format!("a{nnp}")), &b).ok();
        assert_eq!(out.stdout, "ran\n", "noNewPrivileges {nnp}: {out}");
    }
    // exec into a container with that profile.
    let id = c.id("e");
    let mut b = bundle_with(without, "exec sleep 300");
    b.set("/process/noNewPrivileges", json!(false));
    c.create_and_start(&id, &b);
    let out = c.exec(&["exec", &id, "echo", "exec-ran"]).ok();
    assert_eq!(out.stdout, "exec-ran\n", "{out}");
    let _ = c.exec(&["delete", "--force", &id]);
}

#[test]
fn a_profile_of_only_echos_syscalls_runs_echo() {
    // With no_new_privileges the filter comes right before execve: execve is all the
    // runtime calls under it.
    let c = Corral::new("sc-minimal");
    let mut b = Bundle::new();
    b.set(
        "/linux/seccomp",
        json!({"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": ECHO_SYSCALLS, "action": "SCMP_ACT_ALLOW"}]}),
    )
    .set("/process/noNewPrivileges", json!(true))
    .args(&["echo", "minimal"]);
    let out = c.run(&c.id("a"), &b).ok();
    assert_eq!(out.stdout, "minimal\n", "{out}");
}
