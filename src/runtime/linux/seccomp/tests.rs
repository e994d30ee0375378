use super::*;

/// The example of config-linux.md#seccomp.
const OCI_EXAMPLE: &str = r#"{"defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": [{"names": ["getcwd", "chmod"], "action": "SCMP_ACT_ERRNO"}]}"#;

fn parse(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).expect("valid JSON")
}

fn compiled(json: &str) -> SeccompProgram {
    compile(&parse(json)).expect("compiles")
}

fn insns(p: &SeccompProgram) -> Vec<(u16, u8, u8, u32)> {
    p.filters
        .iter()
        .map(|f| (f.code, f.jt, f.jf, f.k))
        .collect()
}

#[test]
fn compiles_spec_examples() {
    let small = compiled(OCI_EXAMPLE);
    assert!(!small.is_empty() && small.flags() == 0 && small.skipped_syscalls().is_empty());
    let p = compiled(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "architectures": ["SCMP_ARCH_NATIVE", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                  "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["read", "exit_group"], "action": "SCMP_ACT_ALLOW"},
          {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0,
            "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
          {"names": ["socket"], "action": "SCMP_ACT_ALLOW", "args": [
            {"index": 0, "value": 40, "op": "SCMP_CMP_NE"},
            {"index": 1, "value": 3, "op": "SCMP_CMP_LT"}]},
          {"names": ["ptrace"], "action": "SCMP_ACT_TRACE", "errnoRet": 1},
          {"names": ["kexec_load"], "action": "SCMP_ACT_KILL_PROCESS"},
          {"names": ["acct"], "action": "SCMP_ACT_TRAP"},
          {"names": ["syslog"], "action": "SCMP_ACT_LOG"},
          {"names": ["reboot"], "action": "SCMP_ACT_KILL"}]}"#,
    );
    let all = libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_LOG
        | libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW;
    assert_eq!(p.flags(), all);
    assert!(p.len() > small.len());
}

const NOTIFY: &str = "seccomp notify is not supported";
const ERRNO_RET: &str = "errnoRet is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not";

/// (spec members after `"defaultAction":"SCMP_ACT_ALLOW"`, offending field, message part)
#[rustfmt::skip]
const INVALID: &[(&str, &str, &str)] = &[
    (r#""defaultAction":"SCMP_ACT_NOTIFY""#, "defaultAction", NOTIFY),
    (r#""listenerPath":"/run/agent.sock""#, "listenerPath", NOTIFY),
    (r#""listenerMetadata":"x""#, "listenerMetadata", NOTIFY),
    (r#""syscalls":[{"names":["a"],"action":"SCMP_ACT_NOTIFY"}]"#, "syscalls[0].action",
     NOTIFY),
    (r#""flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]"#, "flags[0]", "only applies to"),
    (r#""syscalls":[{"names":["a"],"action":"SCMP_ACT_LOG","errnoRet":1}]"#,
     "syscalls[0].errnoRet", ERRNO_RET),
    (r#""defaultErrnoRet":1"#, "defaultErrnoRet", "SCMP_ACT_TRACE, not SCMP_ACT_ALLOW"),
    (r#""defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":65536"#, "defaultErrnoRet",
     "65536 does not fit the 16-bit seccomp return data"),
    (r#""syscalls":[{"names":[],"action":"SCMP_ACT_ERRNO"}]"#, "syscalls[0].names",
     "must contain at least one syscall name"),
    (r#""syscalls":[{"names":["a"],"action":"SCMP_ACT_ERRNO",
        "args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]"#,
     "syscalls[0].args[0].index", "argument index 6 is out of range (0..6)"),
    // libseccomp < 2.6 lacks m68k; with a newer one this spec compiles.
    (r#""architectures":["SCMP_ARCH_M68K"]"#, "architectures[0]", "adding architecture"),
];

#[test]
fn invalid_specs_are_rejected_naming_the_field() {
    for (members, field, message) in INVALID {
        let json = match members.starts_with(r#""defaultAction""#) {
            true => format!("{{{members}}}"),
            false => format!(r#"{{"defaultAction":"SCMP_ACT_ALLOW",{members}}}"#),
        };
        let Err(err) = compile(&parse(&json)) else {
            assert_eq!(*field, "architectures[0]", "{json} compiled");
            continue;
        };
        let err = err.to_string();
        let prefix = format!("linux.seccomp.{field}: ");
        assert!(err.starts_with(&prefix) && err.contains(message), "{err}");
    }
}

#[test]
fn unknown_names_are_rejected_when_parsing() {
    for bad in [
        r#"{"defaultAction": "SCMP_ACT_FOO"}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_FOO"]}"#,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["kill"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1,
            "op": "SCMP_CMP_XX"}]}]}"#,
    ] {
        let err = serde_json::from_str::<LinuxSeccomp>(bad).expect_err(bad);
        assert!(err.to_string().contains("unknown variant"), "{err}");
    }
}

#[test]
fn unknown_syscalls_and_rules_equal_to_the_default_are_skipped() {
    let p = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["no_such_syscall", "getcwd", "chmod"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(p.skipped_syscalls(), ["no_such_syscall"]);
    let known = r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd", "chmod"], "action": "SCMP_ACT_ERRNO"}]}"#;
    assert_eq!(insns(&p), insns(&compiled(known)));

    let bare = compiled(r#"{"defaultAction": "SCMP_ACT_ERRNO"}"#);
    let rule = |errno| {
        format!(
            r#"{{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": {errno}}}]}}"#
        )
    };
    assert_eq!(insns(&bare), insns(&compiled(&rule(libc::EPERM))));
    assert_ne!(insns(&bare), insns(&compiled(&rule(libc::EACCES))));
}

// Kernel tests: each installs a filter in a forked child and reports through its exit
// status. The children make raw syscalls only and never allocate.

fn run_in_child(prog: &SeccompProgram, body: fn() -> i32) -> libc::c_int {
    // SAFETY: the child calls only async-signal-safe functions (raw syscalls, no
    // allocation, no locks) and leaves with _exit, so forking a threaded process is sound.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
    if pid == 0 {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        const ONE: libc::c_ulong = 1;
        const ZERO: libc::c_ulong = 0;
        // SAFETY: plain syscalls with valid arguments; no core dumps for SIGSYS deaths.
        let ready = unsafe {
            libc::setrlimit(libc::RLIMIT_CORE, &no_core) == 0
                && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, ONE, ZERO, ZERO, ZERO) == 0
        };
        let code = if !ready {
            100
        } else if prog.install().is_err() {
            101
        } else {
            body()
        };
        // SAFETY: ends the child at once, without unwinding or running exit handlers.
        unsafe { libc::_exit(code) }
    }
    let mut status = 0;
    // SAFETY: `pid` is our child and `status` a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", io::Error::last_os_error());
    status
}

fn assert_exited_ok(status: libc::c_int) {
    let code = libc::WEXITSTATUS(status);
    assert!(
        libc::WIFEXITED(status) && code == 0,
        "child: status {status:#x}, code {code}"
    );
}

/// 0 if every check passed, else 10 + the index of the first failed one.
fn exit_code(checks: &[bool]) -> i32 {
    checks
        .iter()
        .position(|ok| !ok)
        .map_or(0, |i| 10 + i as i32)
}

/// `syscall(nr, a, b)`, then `Some(errno)` if it failed.
fn sys2(nr: libc::c_long, a: u64, b: u64) -> Option<i32> {
    // SAFETY: only called with syscalls that take integers or valid pointers.
    let ret = unsafe { libc::syscall(nr, a, b) };
    (ret == -1).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Looks for `Seccomp:\t2` (filter mode) in /proc/self/status, without allocating.
fn in_filter_mode() -> bool {
    let (mut buf, mut len) = ([0u8; 8192], 0);
    // SAFETY: NUL-terminated literal path.
    let fd = unsafe { libc::open(c"/proc/self/status".as_ptr(), libc::O_RDONLY) };
    if fd < 0 {
        return false;
    }
    while len < buf.len() {
        let rest = &mut buf[len..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes.
        match unsafe { libc::read(fd, rest.as_mut_ptr().cast(), rest.len()) } {
            n if n > 0 => len += n as usize,
            _ => break,
        }
    }
    // SAFETY: `fd` is ours and not used afterwards.
    unsafe { libc::close(fd) };
    buf[..len].windows(12).any(|w| w == b"\nSeccomp:\t2\n")
}

#[test]
fn kernel_returns_errno_ret_and_default_eperm() {
    let p = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99},
        {"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO"}]}"#,
    );
    assert_exited_ok(run_in_child(&p, || {
        let mut buf = [0u8; 256];
        // Under a missing parent, so that even a broken filter creates nothing.
        let path = c"/nonexistent-corral-test/dir".as_ptr() as u64;
        let checks = [
            sys2(libc::SYS_getcwd, buf.as_mut_ptr() as u64, buf.len() as u64) == Some(99),
            sys2(libc::SYS_mkdirat, libc::AT_FDCWD as u64, path) == Some(libc::EPERM),
            sys2(libc::SYS_getppid, 0, 0).is_none(),
            in_filter_mode(),
        ];
        exit_code(&checks)
    }));
}

#[test]
fn kernel_applies_argument_conditions() {
    // personality: two conditions on arg0 → split into two rules (OR).
    // getpriority: conditions on arg0 and arg1 → one rule (AND).
    // umask: MASKED_EQ, value is the mask (0o70) and valueTwo the datum (0o20).
    let p = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77, "args": [
            {"index": 0, "value": 4294967295, "op": "SCMP_CMP_EQ"},
            {"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 78, "args": [
            {"index": 0, "value": 0, "op": "SCMP_CMP_EQ"},
            {"index": 1, "value": 12345, "op": "SCMP_CMP_EQ"}]},
        {"names": ["umask"], "action": "SCMP_ACT_ERRNO", "errnoRet": 79, "args": [
            {"index": 0, "value": 56, "valueTwo": 16, "op": "SCMP_CMP_MASKED_EQ"}]}]}"#,
    );
    assert_exited_ok(run_in_child(&p, || {
        let checks = [
            sys2(libc::SYS_personality, 0xffff_ffff, 0) == Some(77),
            sys2(libc::SYS_personality, 8, 0) == Some(77),
            sys2(libc::SYS_personality, 0, 0).is_none(),
            sys2(libc::SYS_getpriority, 0, 12345) == Some(78),
            sys2(libc::SYS_getpriority, 0, 0).is_none(),
            sys2(libc::SYS_getpriority, 1, 12345) != Some(78),
            sys2(libc::SYS_umask, 0o027, 0) == Some(79),
            sys2(libc::SYS_umask, 0o077, 0).is_none(),
        ];
        exit_code(&checks)
    }));
}

#[test]
fn kernel_kills_process_with_sigsys() {
    let p = compiled(
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["uname"], "action": "SCMP_ACT_KILL_PROCESS"}]}"#,
    );
    let status = run_in_child(&p, || {
        let mut uts = std::mem::MaybeUninit::<libc::utsname>::uninit();
        sys2(libc::SYS_uname, uts.as_mut_ptr() as u64, 0);
        0
    });
    let killed = libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS;
    assert!(killed, "child was not killed by SIGSYS: status {status:#x}");
}

#[test]
fn kernel_applies_default_errno_ret_with_flags() {
    let p = compiled(
        r#"{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                  "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [{"names": ["exit", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}"#,
    );
    assert_exited_ok(run_in_child(&p, || {
        let mut buf = [0u8; 256];
        let ret = sys2(libc::SYS_getcwd, buf.as_mut_ptr() as u64, buf.len() as u64);
        if ret == Some(libc::EACCES) { 0 } else { 1 }
    }));
}
