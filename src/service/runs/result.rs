//! The answer to `POST /v1/runs`, and the plan that the service hands the runner.

use std::path::PathBuf;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::request::{CompareMode, Encoding};
use super::verdict::Verdict;

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunResult {
    pub id: String,
    pub image: String,
    /// `ok` when every step is `ok`; `failed` otherwise.
    pub status: Status,
    pub steps: Vec<StepResult>,
    /// From accepting the request (after any wait in the queue) to the answer.
    pub wall_time_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StepResult {
    pub name: String,
    /// `ok`: every execution is `OK`. `failed`: one is not. `skipped`: an earlier step
    /// failed (see `reason`).
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// One per test case, or one for a step without tests.
    pub results: Vec<ExecResult>,
}

/// One execution: a step without tests, or one test case.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecResult {
    /// The index of the test case; absent for a step without tests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test: Option<usize>,
    pub verdict: Option<Verdict>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// CPU time of every process and thread of the execution (cgroup accounting).
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    /// Peak memory of the cgroup.
    pub memory_peak_bytes: u64,
    pub stdout: String,
    pub stdout_encoding: Encoding,
    pub stdout_truncated: bool,
    pub stderr: String,
    pub stderr_encoding: Encoding,
    pub stderr_truncated: bool,
    /// Why the service could not judge the program (`INTERNAL_ERROR`), or why it could
    /// not be started (`RUNTIME_ERROR` without an exit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ExecResult {
    pub fn verdict(&self) -> Verdict {
        self.verdict.unwrap_or(Verdict::InternalError)
    }

    pub fn set_stdout(&mut self, bytes: &[u8], truncated: bool) {
        (self.stdout, self.stdout_encoding) = encode(bytes);
        self.stdout_truncated = truncated;
    }

    pub fn set_stderr(&mut self, bytes: &[u8], truncated: bool) {
        (self.stderr, self.stderr_encoding) = encode(bytes);
        self.stderr_truncated = truncated;
    }
}

/// UTF-8 text as is; anything else in base64.
fn encode(bytes: &[u8]) -> (String, Encoding) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), Encoding::Utf8),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            Encoding::Base64,
        ),
    }
}

/// What the runner executes: written by the service as `plan.json` in the run's
/// directory; the runner answers with `result.json` there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub image: String,
    pub steps: Vec<StepPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepPlan {
    pub name: String,
    /// The bundle of this step's containers (its `config.json`).
    pub bundle: PathBuf,
    pub cpu_time_ms: u64,
    pub wall_time_ms: u64,
    pub output_bytes: u64,
    pub compare: CompareMode,
    /// `None`: one execution without a test index.
    pub tests: Option<Vec<TestPlan>>,
    /// The stdin of a step without tests (a file in the run's directory).
    pub stdin: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestPlan {
    pub stdin: Option<PathBuf>,
    pub expected_stdout: Option<String>,
}

pub const PLAN_FILE: &str = "plan.json";
pub const RESULT_FILE: &str = "result.json";
