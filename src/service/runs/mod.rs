//! Judged runs (`POST /v1/runs`): files into a fresh workspace, then steps in order,
//! each execution (a step, or one test case of it) in a fresh container, with verdicts
//! and measurements from the kernel (DESIGN.md, judged runs).
//!
//! The service checks the request, prepares the run's directory (workspace tmpfs, stdin
//! files, one bundle per step, `plan.json`) and asks the launcher to execute it: the
//! launcher hands it to a runner (`launcher/runner/`, reused across runs), which creates,
//! supervises and measures each container, writes `result.json`, answers, then (between
//! runs) removes the run's containers. Admission is a fixed number of runs at once
//! behind a bounded queue: past it the answer is 429 with `Retry-After`.

pub mod limits;
pub mod request;
pub mod result;
pub mod spec;
pub mod verdict;
mod workspace;

pub use workspace::WARM_PREFIX;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::launcher::{ErrorKind, Launcher};
use super::metrics::Metrics;
use super::{ServiceError, images::image_error};
use crate::images::ImageStore;
use limits::RunLimits;
use request::{Checked, RunRequest, Shape};
use result::{PLAN_FILE, Plan, RESULT_FILE, RunResult, StepPlan, TestPlan};
use workspace::{InMemory, RunDir};

/// The directory of the runs in the data directory (a tmpfs while the service runs).
pub fn runs_dir(data: &Path) -> PathBuf {
    data.join("runs")
}

/// The runtime state root of run containers (the runners' store), given the data dir.
pub fn container_root(data: &Path) -> PathBuf {
    runs_dir(data).join(workspace::CONTAINERS)
}

/// The `[runs]` section of the configuration.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunsConfig {
    /// Runs executing at once; 0 means the number of CPUs.
    pub max_concurrent: usize,
    /// Runs waiting for a slot; one more is refused with 429.
    pub max_queued: usize,
    /// The user and group that programs run as (never root).
    pub uid: u32,
    pub gid: u32,
    /// The limits of a step that asks for none.
    pub defaults: RunLimits,
    /// What a step may ask for at most.
    pub max: RunLimits,
    pub max_steps: usize,
    pub max_tests: usize,
    pub max_files: usize,
    /// All files of a request together, decoded.
    pub max_files_bytes: u64,
    /// The rest of a request's JSON besides its files' contents: the steps, their stdin,
    /// the tests' stdin and expected output, env, paths. A request body may be
    /// `max_files_bytes` as base64 plus this, at most (413 beyond it).
    pub max_json_bytes: u64,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            max_concurrent: 0,
            max_queued: 64,
            uid: 1000,
            gid: 1000,
            defaults: RunLimits::default(),
            max: RunLimits::default_max(),
            max_steps: 16,
            max_tests: 512,
            max_files: 256,
            max_files_bytes: 32 << 20,
            max_json_bytes: 16 << 20,
        }
    }
}

/// The least `max_json_bytes` may be: room for a small request.
const MIN_JSON_BYTES: u64 = 4 << 10;

impl RunsConfig {
    pub fn concurrency(&self) -> usize {
        match self.max_concurrent {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The largest `POST /v1/runs` body: the files at `max_files_bytes` in base64 (the
    /// larger of their two encodings for any content but text full of JSON escapes),
    /// plus `max_json_bytes` for the rest.
    pub fn max_request_bytes(&self) -> u64 {
        self.max_files_bytes
            .div_ceil(3)
            .saturating_mul(4)
            .saturating_add(self.max_json_bytes)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.max_json_bytes < MIN_JSON_BYTES {
            return Err(format!(
                "runs.max_json_bytes: {} is below {MIN_JSON_BYTES} (a request with one step and no files)",
                self.max_json_bytes
            ));
        }
        if self.uid == 0 || self.gid == 0 {
            return Err("runs: uid and gid must not be 0 (programs never run as root)".into());
        }
        self.defaults
            .check(&self.max)
            .map_err(|e| format!("runs.defaults: {e}"))
    }
}

/// The run use case.
pub struct Runs {
    cfg: RunsConfig,
    launcher: Arc<Launcher>,
    images: Arc<ImageStore>,
    dir: PathBuf,
    /// Whether this service mounted the tmpfs on `dir` (and unmounts it at the end).
    mounted: bool,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    metrics: Arc<Metrics>,
}

impl Runs {
    pub fn new(
        cfg: RunsConfig,
        data: &Path,
        launcher: Arc<Launcher>,
        images: Arc<ImageStore>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ServiceError> {
        let dir = runs_dir(data);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServiceError::io(format!("create {}", dir.display()), e))?;
        workspace::clean_stale(&dir);
        let mounted = match workspace::in_memory(&dir) {
            Ok(InMemory::Mounted) => {
                tracing::info!("runs in memory: mounted a tmpfs on {}", dir.display());
                true
            }
            Ok(InMemory::Already) => false,
            Err(e) => {
                tracing::warn!(
                    "mount a tmpfs on {}: {e}; runs keep their files on its filesystem (slower)",
                    dir.display()
                );
                false
            }
        };
        let slots = Arc::new(Semaphore::new(cfg.concurrency()));
        Ok(Runs {
            cfg,
            launcher,
            images,
            dir,
            mounted,
            slots,
            queued: AtomicUsize::new(0),
            metrics,
        })
    }

    /// Checks, queues and executes a run.
    pub async fn run(self: &Arc<Self>, req: RunRequest) -> Result<RunResult, ServiceError> {
        let shape = Shape {
            max_steps: self.cfg.max_steps,
            max_tests: self.cfg.max_tests,
            max_files: self.cfg.max_files,
            max_files_bytes: self.cfg.max_files_bytes,
        };
        let checked = req
            .check(&shape, &self.cfg.defaults, &self.cfg.max)
            .map_err(ServiceError::bad)?;
        let violations = system_path_violations(&checked);
        if !violations.is_empty() {
            return Err(ServiceError::policy(violations));
        }
        let rootfs = self.images.rootfs(&checked.image).map_err(|e| {
            let e = image_error(e);
            match e.kind {
                ErrorKind::NotFound => ServiceError::bad(format!("image: {}", e.message)),
                _ => e,
            }
        })?;
        let accepted = Instant::now();
        let permit = self.admit().await?;
        // The run goes on in its own task: a client that goes away does not cut it
        // short half way (its containers and directory are always cleaned up).
        let this = self.clone();
        let task = tokio::spawn(async move {
            this.metrics.running.inc();
            let r = this.execute(checked, rootfs, accepted).await;
            this.metrics.running.dec();
            drop(permit);
            r
        });
        let result = task
            .await
            .map_err(|e| ServiceError::internal(format!("run task failed: {e}")))?;
        match &result {
            Ok(r) => self.metrics.observe(r, accepted.elapsed().as_secs_f64()),
            Err(_) => self.metrics.count("error"),
        }
        result
    }

    /// At the service's end: stops the launcher (its runners exit with it, removing the
    /// containers they keep), then unmounts the runs tmpfs this service mounted once no
    /// run container remains. Left mounted, with a warning, if some do: the next service
    /// cleans them up and uses the tmpfs as it is.
    pub async fn close(&self) {
        // The runners exit with the launcher, removing the containers they keep warm.
        self.launcher.stop().await;
        if !self.mounted {
            return;
        }
        let store = workspace::container_store(&self.dir);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left = store.ids().map_or(0, |ids| ids.len());
            if left == 0 {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "{left} run containers still being removed: {} stays mounted",
                    self.dir.display()
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Err(e) = workspace::unmount(&self.dir) {
            tracing::warn!("unmount the runs tmpfs {}: {e}", self.dir.display());
        }
    }

    /// A slot at once, or after waiting in the queue; 429 when the queue is full.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, ServiceError> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        let waiting = self.queued.fetch_add(1, Ordering::SeqCst);
        if waiting >= self.cfg.max_queued {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            self.metrics.count("rejected");
            return Err(ServiceError::new(
                ErrorKind::Busy,
                format!(
                    "{} runs executing and {} waiting: retry later",
                    self.cfg.concurrency(),
                    self.cfg.max_queued
                ),
            ));
        }
        self.metrics.queued.inc();
        let permit = self.slots.clone().acquire_owned().await;
        self.metrics.queued.dec();
        self.queued.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| ServiceError::new(ErrorKind::Unavailable, "the service is stopping"))
    }

    async fn execute(
        &self,
        checked: Checked,
        rootfs: PathBuf,
        accepted: Instant,
    ) -> Result<RunResult, ServiceError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let budget = time_budget(&checked);
        let t0 = Instant::now();
        let (dir, image) = {
            let runs = self.dir.clone();
            let cfg = self.cfg.clone();
            let id = id.clone();
            blocking(move || prepare(&runs, &id, &checked, &rootfs, &cfg)).await??
        };
        let t1 = Instant::now();
        let outcome =
            tokio::time::timeout(budget, self.launcher.run(dir.path().to_path_buf())).await;
        let t2 = Instant::now();
        let result = match outcome {
            Ok(Ok(())) => {
                let path = dir.path().join(RESULT_FILE);
                let bytes = tokio::fs::read(&path)
                    .await
                    .map_err(|e| ServiceError::io(format!("read {}", path.display()), e))?;
                serde_json::from_slice::<RunResult>(&bytes)
                    .map_err(|e| ServiceError::internal(format!("{}: {e}", path.display())))
            }
            Ok(Err(e)) => Err(ServiceError::new(e.kind(), format!("run {id}: {e}"))),
            Err(_) => Err(ServiceError::internal(format!(
                "run {id}: no result after {budget:?}"
            ))),
        };
        tracing::debug!(
            "run {id}: admitted {:?}, prepared {:?}, executed {:?}, result read {:?}",
            t0 - accepted,
            t1 - t0,
            t2 - t1,
            t2.elapsed()
        );
        // The directory (and its tmpfs) goes in the background: the answer need not wait.
        tokio::task::spawn_blocking(move || drop(dir));
        let mut result = result?;
        result.image = image;
        result.wall_time_ms = accepted.elapsed().as_millis() as u64;
        Ok(result)
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::internal(format!("blocking task failed: {e}")))
}

/// The longest a run can take: every execution to its wall limit, plus setup.
fn time_budget(c: &Checked) -> Duration {
    let ms: u64 = c
        .steps
        .iter()
        .map(|s| {
            let n = s.tests.as_ref().map_or(1, |t| t.len() as u64);
            n * (s.limits.wall_time_ms + 1_000)
        })
        .sum();
    Duration::from_millis(ms) + Duration::from_secs(30)
}

/// Writes the run's directory: workspace with the files, stdin files, one bundle per
/// step, the plan.
fn prepare(
    runs: &Path,
    id: &str,
    c: &Checked,
    rootfs: &Path,
    cfg: &RunsConfig,
) -> Result<(RunDir, String), ServiceError> {
    let disk = c
        .steps
        .iter()
        .map(|s| s.limits.disk_bytes)
        .max()
        .unwrap_or(1);
    let dir = RunDir::create(runs, id, disk, cfg.uid, cfg.gid)?;
    dir.place(&c.files, cfg.uid, cfg.gid)?;
    let workspace = dir.workspace();
    let mut steps = Vec::with_capacity(c.steps.len());
    for (i, s) in c.steps.iter().enumerate() {
        let spec = spec::build(&spec::StepSpec {
            rootfs,
            workspace: &workspace,
            args: &s.args,
            env: &c.env,
            limits: &s.limits,
            writable_workspace: s.tests.is_none(),
            uid: cfg.uid,
            gid: cfg.gid,
        })
        .map_err(ServiceError::internal)?;
        let config = serde_json::to_vec(&spec)
            .map_err(|e| ServiceError::internal(format!("encode config.json: {e}")))?;
        let config = dir.write(&format!("steps/{i}/config.json"), &config, 0o600)?;
        let bundle = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| dir.path().to_path_buf());
        let stdin =
            |name: String, text: &str| dir.write(&format!("in/{name}"), text.as_bytes(), 0o400);
        let (stdin_file, tests) = match &s.tests {
            None => (
                s.stdin
                    .as_deref()
                    .map(|t| stdin(format!("{i}"), t))
                    .transpose()?,
                None,
            ),
            Some(tests) => {
                let mut out = Vec::with_capacity(tests.len());
                for (t, test) in tests.iter().enumerate() {
                    out.push(TestPlan {
                        stdin: Some(stdin(format!("{i}-{t}"), &test.stdin)?),
                        expected_stdout: test.expected_stdout.clone(),
                    });
                }
                (None, Some(out))
            }
        };
        steps.push(StepPlan {
            name: s.name.clone(),
            bundle,
            cpu_time_ms: s.limits.cpu_time_ms,
            wall_time_ms: s.limits.wall_time_ms,
            output_bytes: s.limits.output_bytes,
            compare: s.compare,
            tests,
            stdin: stdin_file,
        });
    }
    let plan = Plan {
        id: id.to_string(),
        image: c.image.clone(),
        steps,
    };
    let bytes = serde_json::to_vec(&plan)
        .map_err(|e| ServiceError::internal(format!("encode the plan: {e}")))?;
    dir.write(PLAN_FILE, &bytes, 0o600)?;
    Ok((dir, c.image.clone()))
}

/// A step's program may not be under `/proc`, `/sys` or `/dev`, for any token: no judged
/// program is, and those paths lead to what the runtime holds (see
/// [`super::policy::system_paths`]). Steps run in `/box`.
fn system_path_violations(run: &Checked) -> Vec<super::policy::Violation> {
    use super::policy::system_paths::{ProcessPaths, check};
    let mut out = Vec::new();
    check(
        &ProcessPaths {
            cwd: None,
            args: None,
            env: Some(("env", &run.env)),
        },
        &mut out,
    );
    for (i, step) in run.steps.iter().enumerate() {
        let field = format!("steps[{i}].args");
        check(
            &ProcessPaths {
                cwd: Some(("cwd", "/box")),
                args: Some((&field, &step.args)),
                env: None,
            },
            &mut out,
        );
    }
    out
}
