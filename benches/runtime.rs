//! Container start-up benchmark: corral against runc (harness-less, std only).
//!
//! Environment:
//! - `CORRAL_BIN`: the corral binary (required)
//! - `RUNC_BIN`: the runc binary to compare against (required)
//! - `CORRAL_BENCH_ROOTFS`: a busybox root filesystem (required)
//! - `CORRAL_BENCH_ITERS`: measured iterations per tool (default 50)
//!
//! A non-option command-line argument selects the scenarios whose name
//! contains it (`cargo bench --bench runtime -- run-true`); options such as
//! the `--bench` flag cargo passes are ignored.
//!
//! Each scenario runs a few warm-up iterations per tool, then interleaves the
//! measured iterations (alternating which tool goes first) so that drift in
//! machine load affects both tools alike. `bodies` (runtime/bodies.rs) measures the
//! service alone: the memory that refusing oversized request bodies costs it.

#[path = "runtime/bodies.rs"]
mod bodies;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WARMUP: usize = 5;
const DEFAULT_ITERS: usize = 50;

/// An OCI runtime under test, with its own private state directory.
struct Runtime {
    name: &'static str,
    bin: PathBuf,
    /// Passed as the global `--root` option.
    state: PathBuf,
    /// Container ids are `bench-<tag>-<n>`.
    tag: &'static str,
}

impl Runtime {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--root").arg(&self.state);
        cmd
    }

    /// Runs `self --root STATE ARGS...` with null stdin/stdout; fails with the
    /// captured stderr unless it exits 0.
    fn run(&self, args: &[&str]) -> Result<(), String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| format!("cannot execute {}: {e}", self.bin.display()))?;
        if out.status.success() {
            return Ok(());
        }
        Err(format!(
            "`{} --root {} {}` failed ({}):\n{}",
            self.bin.display(),
            self.state.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }

    /// Best-effort removal of a container left behind by a failed iteration.
    fn force_delete(&self, id: &str) {
        let _ = self
            .command()
            .args(["delete", "--force", id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One iteration of a scenario: runtime and container id.
type Step = Box<dyn Fn(&Runtime, &str) -> Result<(), String>>;

/// A benchmark scenario. `run` performs (and is timed for) one iteration.
struct Scenario {
    name: &'static str,
    description: &'static str,
    run: Step,
}

/// Removes the directory (recursively) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Result<TempDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = env::temp_dir().join(format!("{prefix}.{}.{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Quotes `s` as a JSON string.
fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `runc spec`'s default configuration (runc 1.1), non-terminal, with a
/// read-only absolute root and the given process arguments.
fn config_json(rootfs: &Path, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| json_string(a)).collect();
    CONFIG_TEMPLATE
        .replace("@ARGS@", &args.join(", "))
        .replace("@ROOT@", &json_string(&rootfs.to_string_lossy()))
}

const CONFIG_TEMPLATE: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": [@ARGS@],
    "env": [
      "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      "TERM=xterm"
    ],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{ "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }],
    "noNewPrivileges": true
  },
  "root": { "path": @ROOT@, "readonly": true },
  "hostname": "corral-bench",
  "mounts": [
    { "destination": "/proc", "type": "proc", "source": "proc" },
    { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
      "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
    { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
      "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
    { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
      "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
    { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
      "options": ["nosuid", "noexec", "nodev"] },
    { "destination": "/sys", "type": "sysfs", "source": "sysfs",
      "options": ["nosuid", "noexec", "nodev", "ro"] },
    { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
      "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
  ],
  "linux": {
    "resources": { "devices": [{ "allow": false, "access": "rwm" }] },
    "namespaces": [
      { "type": "pid" }, { "type": "network" }, { "type": "ipc" },
      { "type": "uts" }, { "type": "mount" }
    ],
    "maskedPaths": [
      "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
      "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
      "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
    ],
    "readonlyPaths": [
      "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
    ]
  }
}
"#;

/// Writes a bundle directory `dir` whose config runs `args`.
fn make_bundle(dir: &Path, rootfs: &Path, args: &[&str]) -> Result<PathBuf, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let config = dir.join("config.json");
    fs::write(&config, config_json(rootfs, args))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    Ok(dir.to_path_buf())
}

/// All scenarios; add new ones here.
fn scenarios(work: &Path, rootfs: &Path, corral: &Path) -> Result<Vec<Scenario>, String> {
    let true_bundle = make_bundle(&work.join("bundle-true"), rootfs, &["/bin/true"])?;
    let runc_bundle = true_bundle.clone();
    let server = std::rc::Rc::new(std::cell::RefCell::new(None::<Server>));
    let (work, corral) = (work.to_path_buf(), corral.to_path_buf());
    Ok(vec![
        Scenario {
            name: "run-true",
            description: "`run` of /bin/true (create, start, wait, delete)",
            run: Box::new(move |rt, id| {
                let bundle = true_bundle.to_string_lossy();
                rt.run(&["run", "--bundle", &bundle, id])
            }),
        },
        Scenario {
            name: "http-lifecycle",
            description: "/bin/true through `corral serve` (POST create, start, wait, DELETE over \
                          HTTP) vs `runc run` of the same bundle (create, start, wait, delete)",
            run: Box::new(move |rt, id| {
                if rt.name == "runc" {
                    let bundle = runc_bundle.to_string_lossy();
                    return rt.run(&["run", "--bundle", &bundle, id]);
                }
                let mut slot = server.borrow_mut();
                if slot.is_none() {
                    *slot = Some(Server::start(&corral, &work)?);
                }
                let srv = slot.as_ref().ok_or("server not started")?;
                let body = format!(
                    "{{\"id\":\"{id}\",\"image\":\"busybox\",\"process\":{{\"args\":[\"/bin/true\"]}}}}"
                );
                srv.call("POST", "/v1/containers", Some(&body), 201)?;
                srv.call("POST", &format!("/v1/containers/{id}/start"), None, 200)?;
                srv.call(
                    "POST",
                    &format!("/v1/containers/{id}/wait?timeout=30"),
                    None,
                    200,
                )?;
                srv.call("DELETE", &format!("/v1/containers/{id}"), None, 204)
            }),
        },
    ])
}

/// A `corral serve` on a random loopback port with its own root, data and token.
struct Server {
    child: std::process::Child,
    addr: String,
    token: String,
    /// The service's runs dir (a tmpfs it mounts, and unmounts when stopped gracefully).
    runs: PathBuf,
}

impl Server {
    fn start(corral: &Path, work: &Path) -> Result<Server, String> {
        use std::io::BufRead;
        let token = "bench-token-0123456789abcdefghijklmnopqrstuvwxyz".to_string();
        let dir = work.join("serve");
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let tokens = dir.join("tokens");
        fs::write(&tokens, format!("user {token} bench\n")).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&tokens, fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let config = dir.join("corral.toml");
        fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nroot = \"{}\"\ndata = \"{}\"\ntokens = \"{}\"\n",
                dir.join("run").display(),
                dir.join("data").display(),
                tokens.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut child = Command::new(corral)
            .args(["serve", "--config"])
            .arg(&config)
            .env("CORRAL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("start corral serve: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(l)) => {
                    if let Some(a) = l.strip_prefix("corral: listening on http://") {
                        break a.trim().to_string();
                    }
                }
                _ => return Err("corral serve exited before listening".into()),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let runs = dir.join("data").join("runs");
        Ok(Server {
            child,
            addr,
            token,
            runs,
        })
    }

    /// One HTTP/1.1 request (connection closed after it); fails unless the status is `want`.
    fn call(&self, method: &str, path: &str, body: Option<&str>, want: u16) -> Result<(), String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.addr)
            .map_err(|e| format!("connect {}: {e}", self.addr))?;
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)
            .map_err(|e| format!("{method} {path}: {e}"))?;
        let status: u16 = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if status != want {
            return Err(format!("{method} {path}: expected {want}, got: {resp}"));
        }
        Ok(())
    }
}

impl Drop for Server {
    /// Stops the service as an operator would (SIGTERM: it unmounts its runs tmpfs),
    /// with SIGKILL after 10 s; the tmpfs is unmounted here if it is still there.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = nix::mount::umount2(&self.runs, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// Nearest-rank percentile of sorted samples, in milliseconds.
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

fn run_scenario(scenario: &Scenario, runtimes: &[Runtime; 2], iters: usize) -> Result<(), String> {
    println!("\n== {}: {}", scenario.name, scenario.description);
    println!("   {WARMUP} warm-up runs per tool, then {iters} interleaved iterations");
    let step = |rt: &Runtime, id: String| -> Result<Duration, String> {
        let start = Instant::now();
        let result = (scenario.run)(rt, &id);
        let elapsed = start.elapsed();
        result.map(|()| elapsed).map_err(|e| {
            rt.force_delete(&id);
            format!("{} ({}, container {id}): {e}", scenario.name, rt.name)
        })
    };
    for i in 0..WARMUP {
        for rt in runtimes {
            step(rt, format!("bench-{}-w{i}", rt.tag))?;
        }
    }
    let mut samples: [Vec<Duration>; 2] = [Vec::with_capacity(iters), Vec::with_capacity(iters)];
    for i in 0..iters {
        // Alternate which tool goes first.
        let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let rt = &runtimes[k];
            samples[k].push(step(rt, format!("bench-{}-{i}", rt.tag))?);
        }
    }

    println!(
        "   {:<8} {:>10} {:>10} {:>10}",
        "tool", "median ms", "p10 ms", "p90 ms"
    );
    let mut medians = [0.0; 2];
    for (k, rt) in runtimes.iter().enumerate() {
        samples[k].sort();
        let s = &samples[k];
        medians[k] = percentile(s, 50.0);
        println!(
            "   {:<8} {:>10.2} {:>10.2} {:>10.2}",
            rt.name,
            medians[k],
            percentile(s, 10.0),
            percentile(s, 90.0)
        );
    }
    let ratio = medians[1] / medians[0];
    if ratio >= 1.0 {
        println!("   corral is {ratio:.1}x faster than runc (median runc/corral = {ratio:.3})");
    } else {
        println!(
            "   corral is {:.1}x slower than runc (median runc/corral = {ratio:.3})",
            1.0 / ratio
        );
    }
    println!(
        "RESULT scenario={} iters={iters} corral_median_ms={:.3} runc_median_ms={:.3} ratio={ratio:.3}",
        scenario.name, medians[0], medians[1]
    );
    Ok(())
}

/// `POST /v1/runs` of /bin/true at 1 and 2 concurrent clients, against `runc run` of
/// the same program by as many concurrent callers: runs per second, median and p99.
fn run_throughput(
    server: &Server,
    runc: &Runtime,
    bundle: &Path,
    total: usize,
) -> Result<(), String> {
    println!(
        "\n== runs: POST /v1/runs of /bin/true (one fresh container per run) vs `runc run` of"
    );
    println!("   the same program, {total} runs per tool and client count");
    let body = r#"{"image":"busybox","steps":[{"name":"run","args":["/bin/true"]}]}"#;
    let bundle = bundle.to_string_lossy().to_string();
    for clients in [1usize, 2] {
        println!(
            "   {:<8} {:>8} {:>8} {:>10} {:>10}",
            "tool", "clients", "runs/s", "median ms", "p99 ms"
        );
        let mut rates = [0.0; 2];
        for (k, name) in ["corral", "runc"].into_iter().enumerate() {
            let per = total / clients;
            let started = Instant::now();
            let results: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..clients)
                    .map(|c| {
                        let bundle = &bundle;
                        scope.spawn(move || {
                            let mut lat = Vec::with_capacity(per);
                            for i in 0..per {
                                let t = Instant::now();
                                if k == 0 {
                                    server.call("POST", "/v1/runs", Some(body), 200)?;
                                } else {
                                    let id = format!("bench-runs-{clients}-{c}-{i}");
                                    runc.run(&["run", "--bundle", bundle, &id]).inspect_err(
                                        |_| {
                                            runc.force_delete(&id);
                                        },
                                    )?;
                                }
                                lat.push(t.elapsed());
                            }
                            Ok(lat)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("client thread panicked".into()))
                    })
                    .collect()
            });
            let elapsed = started.elapsed().as_secs_f64();
            let mut lat = Vec::new();
            for r in results {
                lat.extend(r?);
            }
            lat.sort();
            rates[k] = lat.len() as f64 / elapsed;
            println!(
                "   {:<8} {:>8} {:>8.1} {:>10.2} {:>10.2}",
                name,
                clients,
                rates[k],
                percentile(&lat, 50.0),
                percentile(&lat, 99.0)
            );
            println!(
                "RESULT scenario=runs tool={name} clients={clients} runs_per_s={:.1} median_ms={:.3} p99_ms={:.3}",
                rates[k],
                percentile(&lat, 50.0),
                percentile(&lat, 99.0)
            );
        }
        println!(
            "   corral/runc throughput ratio at {clients} client(s): {:.2}",
            rates[0] / rates[1]
        );
    }
    Ok(())
}

fn required_path(var: &str) -> Result<PathBuf, String> {
    let value = env::var_os(var)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("{var} is not set"))?;
    fs::canonicalize(&value).map_err(|e| format!("{var}={}: {e}", PathBuf::from(&value).display()))
}

fn run() -> Result<(), String> {
    let corral = required_path("CORRAL_BIN")?;
    let runc = required_path("RUNC_BIN")?;
    let rootfs = required_path("CORRAL_BENCH_ROOTFS")?;
    if !rootfs.join("bin/true").exists() {
        return Err(format!("{} has no /bin/true", rootfs.display()));
    }
    let iters = match env::var("CORRAL_BENCH_ITERS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("CORRAL_BENCH_ITERS={v}: not a positive integer"))?,
        Err(_) => DEFAULT_ITERS,
    };
    let filter: Vec<String> = env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();

    let work = TempDir::new("corral-bench")?;
    let runtimes = [
        Runtime {
            name: "corral",
            bin: corral,
            state: work.0.join("state-corral"),
            tag: "c",
        },
        Runtime {
            name: "runc",
            bin: runc,
            state: work.0.join("state-runc"),
            tag: "r",
        },
    ];
    println!("corral: {}", runtimes[0].bin.display());
    println!("runc:   {}", runtimes[1].bin.display());
    println!("rootfs: {}", rootfs.display());

    let mut ran = 0;
    for scenario in scenarios(&work.0, &rootfs, &runtimes[0].bin)? {
        if filter.is_empty() || filter.iter().any(|f| scenario.name.contains(f.as_str())) {
            run_scenario(&scenario, &runtimes, iters)?;
            ran += 1;
        }
    }
    if filter.is_empty() || filter.iter().any(|f| "runs".contains(f.as_str())) {
        let server = Server::start(&runtimes[0].bin, &work.0.join("runs"))?;
        let bundle = make_bundle(&work.0.join("bundle-runs"), &rootfs, &["/bin/true"])?;
        run_throughput(&server, &runtimes[1], &bundle, iters.max(20) * 4)?;
        ran += 1;
    }
    if filter.is_empty() || filter.iter().any(|f| "bodies".contains(f.as_str())) {
        let server = Server::start(&runtimes[0].bin, &work.0.join("bodies"))?;
        bodies::run(&server.addr, &server.token, server.child.id())?;
        ran += 1;
    }
    if ran == 0 {
        return Err(format!("no scenario matches {filter:?}"));
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            ExitCode::FAILURE
        }
    }
}
