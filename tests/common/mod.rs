//! Shared harness of the integration tests: they run the real `corral` binary, as root,
//! against the busybox rootfs, and look at the results from inside the container (its
//! output) and from the host (state dirs, cgroups, /proc).
//!
//! - [`Bundle`]: a temp bundle dir whose `config.json` starts as what `corral spec`
//!   writes (terminal off, the shared busybox rootfs, read-only), edited as JSON.
//! - [`Corral`]: runs `corral --root <private temp dir> ...`; hands out unique container
//!   ids and force-deletes them (and whatever they left) when dropped, even on panic.
//! - [`Outcome`]: one finished command, with assertions that print everything on failure.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

pub mod server;

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// The binary under test.
pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// Containers need root: fail loudly, never skip.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the corral integration tests create containers and must run as root \
         (for example: sudo -E cargo test --release)"
    );
}

/// The busybox root filesystem shared (read-only) by the tests.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let p = std::env::var_os("CORRAL_TEST_ROOTFS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("build/rootfs/busybox"));
        assert!(
            p.join("bin/busybox").is_file(),
            "no busybox rootfs at {} (no bin/busybox): run `make rootfs`, or set \
             CORRAL_TEST_ROOTFS to a busybox root filesystem",
            p.display()
        );
        std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("canonicalize {}: {e}", p.display()))
    })
}

/// The document `corral spec` writes, generated once per test binary.
pub fn base_spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("corral-spec-")
            .tempdir()
            .expect("temp dir");
        let out = Command::new(CORRAL)
            .arg("spec")
            .arg("--bundle")
            .arg(dir.path())
            .output()
            .expect("run corral spec");
        assert!(
            out.status.success(),
            "corral spec failed: {}",
            Outcome::from_output("corral spec", out)
        );
        let text = std::fs::read_to_string(dir.path().join("config.json")).expect("read spec");
        serde_json::from_str(&text).expect("corral spec wrote invalid JSON")
    })
}

// ---------------------------------------------------------------------------------------
// Outcome
// ---------------------------------------------------------------------------------------

/// A finished command: exit code (or signal), stdout and stderr.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub cmd: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn from_output(cmd: impl Into<String>, out: Output) -> Self {
        use std::os::unix::process::ExitStatusExt;
        Outcome {
            cmd: cmd.into(),
            code: out.status.code(),
            signal: out.status.signal(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Asserts exit code 0.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Asserts a non-zero exit code (a crash by signal is not a clean failure).
    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit code:\n{self}"
        );
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "unexpected exit code:\n{self}");
        self
    }

    /// Asserts a failure reported as exactly one line on stderr that contains every one
    /// of `needles` (case-insensitive); returns that line.
    #[track_caller]
    pub fn one_line_error(&self, needles: &[&str]) -> String {
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "expected a non-zero exit code:\n{self}"
        );
        let text = self.stderr.trim_end();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "expected one line of error on stderr:\n{self}"
        );
        let line = lines[0].to_string();
        let lower = line.to_lowercase();
        for n in needles {
            assert!(
                lower.contains(&n.to_lowercase()),
                "the error should mention {n:?}:\n{self}"
            );
        }
        line
    }

    /// Stdout split into trimmed lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout
            .lines()
            .map(|l| l.trim_end().to_string())
            .collect()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  command: {}", self.cmd)?;
        match (self.code, self.signal) {
            (Some(c), _) => writeln!(f, "  exit code: {c}")?,
            (_, Some(s)) => writeln!(f, "  killed by signal {s}")?,
            _ => writeln!(f, "  no exit status")?,
        }
        writeln!(f, "  stdout: {:?}", self.stdout)?;
        write!(f, "  stderr: {:?}", self.stderr)
    }
}

// ---------------------------------------------------------------------------------------
// Bundle
// ---------------------------------------------------------------------------------------

/// A bundle directory with a `config.json` built from [`base_spec`].
pub struct Bundle {
    dir: TempDir,
    /// The document written to `config.json` by [`Bundle::write`] (and by every
    /// [`Corral`] command that takes a bundle).
    pub config: Value,
}

impl Default for Bundle {
    fn default() -> Self {
        Self::new()
    }
}

impl Bundle {
    /// The base config: `corral spec`, terminal off, root = the shared rootfs, read-only.
    pub fn new() -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("corral-bundle-")
            .tempdir()
            .expect("temp dir");
        let mut b = Bundle {
            dir,
            config: base_spec().clone(),
        };
        b.set("/process/terminal", json!(false))
            .set(
                "/root/path",
                json!(rootfs().to_str().expect("utf-8 rootfs path")),
            )
            .set("/root/readonly", json!(true));
        b
    }

    /// Like [`Bundle::new`], with a private copy (`cp -a`) of the rootfs in the bundle,
    /// for tests that write into the image.
    pub fn with_rootfs_copy() -> Self {
        let mut b = Self::new();
        let copy = b.dir.path().join("rootfs");
        let st = Command::new("cp")
            .arg("-a")
            .arg(rootfs())
            .arg(&copy)
            .status()
            .expect("run cp");
        assert!(
            st.success(),
            "cp -a {} {} failed",
            rootfs().display(),
            copy.display()
        );
        b.set("/root/path", json!(copy.to_str().expect("utf-8 path")));
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The rootfs this bundle uses (absolute).
    pub fn rootfs(&self) -> PathBuf {
        PathBuf::from(self.config["root"]["path"].as_str().expect("root.path"))
    }

    /// Sets the value at a JSON pointer (`/process/user/uid`), creating missing objects.
    pub fn set(&mut self, pointer: &str, value: Value) -> &mut Self {
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let (last, path) = parts.split_last().expect("non-empty pointer");
        let mut cur = &mut self.config;
        for p in path {
            cur = match cur {
                Value::Array(a) => &mut a[p.parse::<usize>().expect("array index")],
                Value::Object(o) => o.entry(p.to_string()).or_insert_with(|| json!({})),
                other => panic!("{pointer}: {p} is inside a non-object {other}"),
            };
        }
        match cur {
            Value::Array(a) => a[last.parse::<usize>().expect("array index")] = value,
            Value::Object(o) => {
                o.insert(last.to_string(), value);
            }
            other => panic!("{pointer}: cannot set a field of {other}"),
        }
        self
    }

    /// Removes the field at a JSON pointer, if present.
    pub fn remove(&mut self, pointer: &str) -> &mut Self {
        let (parent, last) = pointer.rsplit_once('/').expect("pointer with a /");
        if let Some(Value::Object(o)) = self.config.pointer_mut(parent) {
            o.remove(last);
        }
        self
    }

    /// Appends to the array at a JSON pointer, creating it if missing.
    pub fn push(&mut self, pointer: &str, value: Value) -> &mut Self {
        if !self.config.pointer(pointer).is_some_and(Value::is_array) {
            self.set(pointer, json!([]));
        }
        self.config
            .pointer_mut(pointer)
            .and_then(Value::as_array_mut)
            .expect("array")
            .push(value);
        self
    }

    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.set("/process/args", json!(args))
    }

    /// `sh -c <script>`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    pub fn mount(&mut self, m: Value) -> &mut Self {
        self.push("/mounts", m)
    }

    /// A tmpfs at `dest` (the shared rootfs is never written: mount points created under
    /// such a tmpfs live in the container's own memory).
    pub fn tmpfs(&mut self, dest: &str, options: &[&str]) -> &mut Self {
        self.mount(
            json!({"destination": dest, "type": "tmpfs", "source": "tmpfs", "options": options}),
        )
    }

    pub fn bind(&mut self, source: &Path, dest: &str, options: &[&str]) -> &mut Self {
        let mut opts = vec!["rbind"];
        opts.extend_from_slice(options);
        self.mount(json!({"destination": dest, "type": "bind", "source": source, "options": opts}))
    }

    /// Adds (or replaces) a namespace; `path` joins an existing one.
    pub fn namespace(&mut self, typ: &str, path: Option<&str>) -> &mut Self {
        self.without_namespace(typ);
        let ns = match path {
            Some(p) => json!({"type": typ, "path": p}),
            None => json!({"type": typ}),
        };
        self.push("/linux/namespaces", ns)
    }

    pub fn without_namespace(&mut self, typ: &str) -> &mut Self {
        if let Some(list) = self
            .config
            .pointer_mut("/linux/namespaces")
            .and_then(Value::as_array_mut)
        {
            list.retain(|n| n["type"] != typ);
        }
        self
    }

    /// Appends a hook to a phase (`prestart`, `createRuntime`, ..., `poststop`).
    pub fn hook(&mut self, phase: &str, hook: Value) -> &mut Self {
        self.push(&format!("/hooks/{phase}"), hook)
    }

    pub fn resources(&mut self, r: Value) -> &mut Self {
        self.set("/linux/resources", r)
    }

    pub fn cgroups_path(&mut self, p: &str) -> &mut Self {
        self.set("/linux/cgroupsPath", json!(p))
    }

    /// Every capability set of the process set to `caps`.
    pub fn capabilities(&mut self, caps: &[&str]) -> &mut Self {
        let set = json!(caps);
        self.set(
            "/process/capabilities",
            json!({"bounding": set, "effective": set, "permitted": set, "inheritable": set, "ambient": set}),
        )
    }

    /// Writes `config.json`.
    pub fn write(&self) {
        let text = serde_json::to_string_pretty(&self.config).expect("serialize config");
        self.write_raw(&text);
    }

    /// Writes `text` as `config.json` (for malformed documents).
    pub fn write_raw(&self, text: &str) {
        std::fs::write(self.path().join("config.json"), text).expect("write config.json");
    }

    /// The value the runtime records as `bundle` (the canonical path).
    pub fn canonical(&self) -> PathBuf {
        std::fs::canonicalize(self.path()).expect("canonicalize bundle")
    }
}

// ---------------------------------------------------------------------------------------
// Corral
// ---------------------------------------------------------------------------------------

/// The runtime, with a private state root. Containers whose ids came from [`Corral::id`]
/// are force-deleted on drop, and whatever they left (cgroups, processes) removed.
pub struct Corral {
    root: TempDir,
    logs: TempDir,
    test: String,
    ids: RefCell<Vec<String>>,
    /// id -> cgroupsPath of the bundle it was created from.
    cgroups: RefCell<HashMap<String, String>>,
    /// id -> (stdout, stderr) files of the first create / detached run.
    log_files: RefCell<HashMap<String, (PathBuf, PathBuf)>>,
    seq: RefCell<u32>,
    /// Command lines of processes to kill on drop (see [`Corral::kill_on_drop`]).
    kill_cmdlines: RefCell<Vec<String>>,
}

impl Corral {
    /// `test` names the test in container ids (keep it short).
    pub fn new(test: &str) -> Self {
        require_root();
        let _ = rootfs();
        let root = tempfile::Builder::new()
            .prefix("corral-root-")
            .tempdir()
            .expect("temp dir");
        let logs = tempfile::Builder::new()
            .prefix("corral-logs-")
            .tempdir()
            .expect("temp dir");
        Corral {
            root,
            logs,
            test: test.replace(|c: char| !c.is_ascii_alphanumeric(), "-"),
            ids: RefCell::new(Vec::new()),
            cgroups: RefCell::new(HashMap::new()),
            log_files: RefCell::new(HashMap::new()),
            seq: RefCell::new(0),
            kill_cmdlines: RefCell::new(Vec::new()),
        }
    }

    /// A fresh container id, unique to this test and process, cleaned up on drop.
    pub fn id(&self, name: &str) -> String {
        let id = format!("{}-{}-{}", self.test, name, std::process::id());
        self.track(&id);
        id
    }

    /// On drop, also kill processes whose command line is exactly `cmdline`: for
    /// container processes that name neither the id nor the state root, in case the
    /// runtime fails to kill them.
    pub fn kill_on_drop(&self, cmdline: &str) {
        self.kill_cmdlines.borrow_mut().push(cmdline.to_string());
    }

    /// Registers an id (made some other way) for cleanup.
    pub fn track(&self, id: &str) {
        let mut ids = self.ids.borrow_mut();
        if !ids.iter().any(|i| i == id) {
            ids.push(id.to_string());
        }
    }

    /// The `--root` state directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// `corral --root <root>` with stdin from /dev/null.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(CORRAL);
        c.arg("--root").arg(self.root()).stdin(Stdio::null());
        c
    }

    /// Runs `corral --root <root> <args>` and collects its output through pipes. Only
    /// for commands that leave no container process holding the pipes.
    pub fn exec(&self, args: &[&str]) -> Outcome {
        let mut c = self.cmd();
        c.args(args);
        let out = c.output().expect("spawn corral");
        Outcome::from_output(format!("corral {}", args.join(" ")), out)
    }

    fn remember_bundle(&self, id: &str, bundle: &Bundle) {
        self.track(id);
        if let Some(p) = bundle
            .config
            .pointer("/linux/cgroupsPath")
            .and_then(Value::as_str)
        {
            self.cgroups
                .borrow_mut()
                .insert(id.to_string(), p.to_string());
        }
    }

    /// Runs a command whose container outlives it (create, run --detach): its stdout and
    /// stderr go to files, which the container inherits (read them with
    /// [`Corral::container_output`]).
    fn exec_logged(&self, id: &str, args: &[String]) -> Outcome {
        let n = {
            let mut s = self.seq.borrow_mut();
            *s += 1;
            *s
        };
        let out_path = self.logs.path().join(format!("{n}.out"));
        let err_path = self.logs.path().join(format!("{n}.err"));
        let out = File::create(&out_path).expect("create log");
        let err = File::create(&err_path).expect("create log");
        let status = self
            .cmd()
            .args(args)
            .stdout(out)
            .stderr(err)
            .status()
            .expect("spawn corral");
        self.log_files
            .borrow_mut()
            .entry(id.to_string())
            .or_insert((out_path.clone(), err_path.clone()));
        Outcome::from_output(
            format!("corral {}", args.join(" ")),
            Output {
                status,
                stdout: std::fs::read(&out_path).unwrap_or_default(),
                stderr: std::fs::read(&err_path).unwrap_or_default(),
            },
        )
    }

    /// What the container created (or detached-run) as `id` has written so far to its
    /// stdout and stderr (after corral's own messages, if any).
    pub fn container_output(&self, id: &str) -> (String, String) {
        let files = self.log_files.borrow();
        let (o, e) = files.get(id).unwrap_or_else(|| panic!("no logs for {id}"));
        (
            String::from_utf8_lossy(&std::fs::read(o).unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(&std::fs::read(e).unwrap_or_default()).into_owned(),
        )
    }

    /// Waits (at most 5 s) until the container `id` has written `lines` lines to its
    /// stdout; returns that output.
    #[track_caller]
    pub fn wait_output(&self, id: &str, lines: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (out, err) = self.container_output(id);
            if out.lines().count() >= lines {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} wrote {out:?} (stderr {err:?}), expected {lines} lines"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `corral create --bundle <bundle> <id>` (writes config.json first).
    pub fn create(&self, id: &str, bundle: &Bundle) -> Outcome {
        self.create_with(id, bundle, &[])
    }

    pub fn create_with(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Outcome {
        bundle.write();
        self.remember_bundle(id, bundle);
        let mut args = vec!["create".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--bundle".into());
        args.push(bundle.path().to_string_lossy().into_owned());
        args.push(id.into());
        self.exec_logged(id, &args)
    }

    /// `corral run --bundle <bundle> <id>`: waits for the container, collects its output.
    pub fn run(&self, id: &str, bundle: &Bundle) -> Outcome {
        self.run_with(id, bundle, &[])
    }

    pub fn run_with(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Outcome {
        bundle.write();
        self.remember_bundle(id, bundle);
        let b = bundle.path().to_string_lossy().into_owned();
        let mut args = vec!["run"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--bundle", &b, id]);
        self.exec(&args)
    }

    /// `corral run --detach`: the container keeps running; its output goes to files.
    pub fn run_detached(&self, id: &str, bundle: &Bundle) -> Outcome {
        self.run_detached_with(id, bundle, &[])
    }

    pub fn run_detached_with(&self, id: &str, bundle: &Bundle, extra: &[&str]) -> Outcome {
        bundle.write();
        self.remember_bundle(id, bundle);
        let mut args = vec!["run".to_string(), "--detach".to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push("--bundle".into());
        args.push(bundle.path().to_string_lossy().into_owned());
        args.push(id.into());
        self.exec_logged(id, &args)
    }

    pub fn start(&self, id: &str) -> Outcome {
        self.exec(&["start", id])
    }

    /// `corral state <id>`, asserted to succeed, parsed.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.exec(&["state", id]).ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state of {id} is not JSON ({e}):\n{out}"))
    }

    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_else(|| panic!("state of {id} has no status"))
            .to_string()
    }

    #[track_caller]
    pub fn pid(&self, id: &str) -> i32 {
        let st = self.state(id);
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state of {id} has no pid: {st}")) as i32
    }

    pub fn kill(&self, id: &str, signal: &str) -> Outcome {
        self.exec(&["kill", id, signal])
    }

    pub fn delete(&self, id: &str) -> Outcome {
        self.exec(&["delete", id])
    }

    pub fn delete_force(&self, id: &str) -> Outcome {
        self.exec(&["delete", "--force", id])
    }

    /// Polls `state` until the status is `want`; panics after `limit`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.status(id);
            if st == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} is still {st:?} after {limit:?}, expected {want:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// create + start, both asserted to succeed; returns the init's pid.
    #[track_caller]
    pub fn create_and_start(&self, id: &str, bundle: &Bundle) -> i32 {
        self.create(id, bundle).ok();
        self.start(id).ok();
        self.pid(id)
    }

    /// The cgroupsPath the container `id` uses: its bundle's, or corral's default.
    pub fn cgroup_path(&self, id: &str) -> String {
        self.cgroups
            .borrow()
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("/corral/{id}"))
    }

    /// Asserts that a container that failed to be created (or was deleted) left nothing:
    /// no state dir, no cgroup dir in any hierarchy, no process naming it or this
    /// test's state root, no host mount under `bundle`.
    #[track_caller]
    pub fn assert_nothing_left(&self, id: &str, bundle: Option<&Bundle>) {
        let dir = self.root().join(id);
        assert!(!dir.exists(), "state dir {} was left behind", dir.display());
        let left = cgroup_dirs_present(&self.cgroup_path(id));
        assert!(
            left.is_empty(),
            "cgroup dirs of {id} were left behind: {left:?}"
        );
        let root = self.root().to_string_lossy().into_owned();
        let procs = processes_matching(|cmdline| names(cmdline, id, &root));
        assert!(
            procs.is_empty(),
            "processes of {id} were left behind: {procs:?}"
        );
        if let Some(b) = bundle {
            let path = b.path().to_string_lossy().into_owned();
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
            let leaked: Vec<&str> = mounts.lines().filter(|l| l.contains(&path)).collect();
            assert!(
                leaked.is_empty(),
                "host mounts under the bundle: {leaked:?}"
            );
        }
    }
}

impl Drop for Corral {
    fn drop(&mut self) {
        let ids = self.ids.borrow().clone();
        for id in &ids {
            let _ = self.cmd().args(["delete", "--force", id]).output();
        }
        // Whatever a buggy runtime left: processes, then cgroup dirs.
        let root = self.root().to_string_lossy().into_owned();
        for id in &ids {
            for (pid, _) in processes_matching(|c| names(c, id, &root)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            remove_cgroup(&self.cgroup_path(id));
        }
        let exact = self.kill_cmdlines.borrow().clone();
        for (pid, _) in processes_matching(|c| exact.iter().any(|e| e == c)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether a command line belongs to container `id` of the state root `root`: one of its
/// arguments is the id, or mentions the root (a runtime process, or an init before exec).
fn names(cmdline: &str, id: &str, root: &str) -> bool {
    cmdline.split(' ').any(|arg| arg == id) || cmdline.contains(root)
}

// ---------------------------------------------------------------------------------------
// Host-side inspection
// ---------------------------------------------------------------------------------------

/// The cgroup hierarchies mounted under /sys/fs/cgroup (v1 controllers, named ones and
/// the unified one), or /sys/fs/cgroup itself on a pure v2 host.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_path_buf()];
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(base)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.join("cgroup.procs").exists())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// `/sys/fs/cgroup/<hierarchy>/<cgroups_path>` for every hierarchy where it exists.
pub fn cgroup_dirs_present(cgroups_path: &str) -> Vec<PathBuf> {
    let rel = cgroups_path.trim_start_matches('/');
    cgroup_hierarchies()
        .into_iter()
        .map(|h| h.join(rel))
        .filter(|d| d.exists())
        .collect()
}

/// The host directory of a cgroup in one v1 hierarchy (`memory`, `pids`, `cpu`, ...).
pub fn cgroup_dir(controller: &str, cgroups_path: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(cgroups_path.trim_start_matches('/'))
}

fn remove_cgroup(cgroups_path: &str) {
    for dir in cgroup_dirs_present(cgroups_path) {
        // Children first (a runtime may nest), then the dir itself.
        let mut dirs = vec![dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = std::fs::read_dir(&dirs[i]) {
                dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            i += 1;
        }
        for d in dirs.iter().rev() {
            for _ in 0..50 {
                if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                    for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Live (non-zombie) processes other than this one whose command line (arguments joined
/// by spaces) satisfies `pred`: `(pid, cmdline)`.
pub fn processes_matching(pred: impl Fn(&str) -> bool) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || !alive(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if pred(cmdline.trim_end()) {
            out.push((pid, cmdline.trim_end().to_string()));
        }
    }
    out
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s != "Z" && s != "X"),
        Err(_) => false,
    }
}

/// Waits until `pid` is gone (or a zombie); false after `limit`.
pub fn wait_gone(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `readlink /proc/<pid>/ns/<name>` (`net:[4026531840]`), `self` for this process.
pub fn ns_link(pid: &str, name: &str) -> String {
    let p = format!("/proc/{pid}/ns/{name}");
    std::fs::read_link(&p)
        .unwrap_or_else(|e| panic!("readlink {p}: {e}"))
        .to_string_lossy()
        .into_owned()
}

/// A line of `/proc/<pid>/status` (`CapEff`), its value trimmed.
pub fn proc_status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// A fresh host temp dir.
pub fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
}
