//! `POST /v1/runs`: the request and its validation. Everything is checked before
//! anything is written: a bad request leaves nothing behind.

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::limits::{LimitsRequest, RunLimits};
use crate::images::validate_name as validate_image_name;

/// A judged run: files placed in the workspace, then steps in order.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// The image to run in (`GET /v1/images`).
    pub image: String,
    /// Files placed in the workspace `/box` before the first step.
    #[serde(default)]
    pub files: Vec<FileRequest>,
    /// `KEY=VALUE` entries for every step, over a default `PATH`, `HOME=/tmp` and
    /// `LANG=C.UTF-8`.
    #[serde(default)]
    pub env: Vec<String>,
    /// Run in order; once a step fails, the later ones are skipped.
    pub steps: Vec<StepRequest>,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileRequest {
    /// Relative to the workspace; no `..`, no absolute path.
    pub path: String,
    pub content: String,
    #[serde(default)]
    pub encoding: Encoding,
    /// Permission bits (for example `0o755` = 493); default 0644.
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Utf8,
    Base64,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// Unique within the run: letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// The program and its arguments (looked up in `PATH`; cwd is `/box`).
    pub args: Vec<String>,
    /// Standard input of a step without tests.
    pub stdin: Option<String>,
    #[serde(default)]
    pub limits: LimitsRequest,
    /// Run once per test case (workspace read-only) instead of once (workspace
    /// writable).
    pub tests: Option<Vec<TestRequest>>,
    /// How stdout is compared with `expected_stdout`.
    #[serde(default)]
    pub compare: CompareMode,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    #[serde(default)]
    pub stdin: String,
    /// When given, a different stdout is `WRONG_ANSWER`.
    pub expected_stdout: Option<String>,
}

/// `exact`: byte for byte. `trailing_whitespace` (default): trailing spaces and tabs of
/// each line, and trailing empty lines, are ignored (and `\r\n` equals `\n`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompareMode {
    Exact,
    #[default]
    TrailingWhitespace,
}

/// Caps on the shape of a request (the body limit caps its size).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub max_steps: usize,
    pub max_tests: usize,
    pub max_files: usize,
    pub max_files_bytes: u64,
}

/// A file to write, decoded and checked.
#[derive(Debug, Clone)]
pub struct WorkspaceFile {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// A step with its limits resolved.
#[derive(Debug, Clone)]
pub struct Step {
    pub name: String,
    pub args: Vec<String>,
    pub limits: RunLimits,
    pub compare: CompareMode,
    /// `None`: run once with this stdin. `Some`: once per test.
    pub stdin: Option<String>,
    pub tests: Option<Vec<TestRequest>>,
}

/// A request that passed every check.
#[derive(Debug, Clone)]
pub struct Checked {
    pub image: String,
    pub files: Vec<WorkspaceFile>,
    pub env: Vec<String>,
    pub steps: Vec<Step>,
}

impl RunRequest {
    /// Checks everything; the error names the field.
    pub fn check(
        self,
        shape: &Shape,
        defaults: &RunLimits,
        max: &RunLimits,
    ) -> Result<Checked, String> {
        validate_image_name(&self.image).map_err(|e| format!("image: {e}"))?;
        if self.steps.is_empty() {
            return Err("steps: at least one step is needed".into());
        }
        if self.steps.len() > shape.max_steps {
            return Err(format!(
                "steps: {} steps, at most {} are allowed",
                self.steps.len(),
                shape.max_steps
            ));
        }
        for (i, e) in self.env.iter().enumerate() {
            check_env(e).map_err(|why| format!("env[{i}]: {why}"))?;
        }
        let files = check_files(&self.files, shape)?;
        let mut names = HashSet::new();
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, s) in self.steps.into_iter().enumerate() {
            let at = |field: &str| format!("steps[{i}].{field}");
            check_name(&s.name).map_err(|why| format!("{}: {why}", at("name")))?;
            if !names.insert(s.name.clone()) {
                return Err(format!("{}: {:?} is used twice", at("name"), s.name));
            }
            if s.args.is_empty() || s.args[0].is_empty() {
                return Err(format!("{}: a program is needed", at("args")));
            }
            if s.args.iter().any(|a| a.contains('\0')) {
                return Err(format!("{}: contains a NUL byte", at("args")));
            }
            crate::service::exec_size::check(&[(&at("args"), &s.args), ("env", &self.env)])?;
            let limits = s
                .limits
                .resolve(defaults, max)
                .map_err(|why| format!("{}: {why}", at("limits")))?;
            if let Some(tests) = &s.tests {
                if tests.is_empty() {
                    return Err(format!(
                        "{}: empty (leave it out to run the step once)",
                        at("tests")
                    ));
                }
                if tests.len() > shape.max_tests {
                    return Err(format!(
                        "{}: {} tests, at most {} are allowed",
                        at("tests"),
                        tests.len(),
                        shape.max_tests
                    ));
                }
                if s.stdin.is_some() {
                    return Err(format!(
                        "{}: a step with tests takes stdin from each test",
                        at("stdin")
                    ));
                }
            }
            steps.push(Step {
                name: s.name,
                args: s.args,
                limits,
                compare: s.compare,
                stdin: s.stdin,
                tests: s.tests,
            });
        }
        Ok(Checked {
            image: self.image,
            files,
            env: self.env,
            steps,
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

fn check_env(e: &str) -> Result<(), String> {
    match e.split_once('=') {
        Some((k, _)) if !k.is_empty() && !e.contains('\0') => Ok(()),
        _ => Err(format!("{e:?}: expected KEY=VALUE without NUL bytes")),
    }
}

fn check_files(files: &[FileRequest], shape: &Shape) -> Result<Vec<WorkspaceFile>, String> {
    if files.len() > shape.max_files {
        return Err(format!(
            "files: {} files, at most {} are allowed",
            files.len(),
            shape.max_files
        ));
    }
    let mut total = 0u64;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let path = check_path(&f.path).map_err(|why| format!("files[{i}].path: {why}"))?;
        if !seen.insert(path.clone()) {
            return Err(format!("files[{i}].path: {:?} is given twice", f.path));
        }
        let content = match f.encoding {
            Encoding::Utf8 => f.content.as_bytes().to_vec(),
            Encoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(f.content.as_bytes())
                .map_err(|e| format!("files[{i}].content: invalid base64: {e}"))?,
        };
        total += content.len() as u64;
        if total > shape.max_files_bytes {
            return Err(format!(
                "files: more than {} bytes in all",
                shape.max_files_bytes
            ));
        }
        let mode = f.mode.unwrap_or(0o644);
        if mode & !0o777 != 0 {
            return Err(format!(
                "files[{i}].mode: {mode:#o} has bits beyond 0o777 (no setuid, setgid or sticky)"
            ));
        }
        out.push(WorkspaceFile {
            path,
            content,
            mode,
        });
    }
    // A file cannot also be a directory of another one (`a` and `a/b`).
    for f in &out {
        let mut parent = f.path.parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if seen.contains(p) {
                return Err(format!(
                    "files: {} is a file and a directory of {}",
                    p.display(),
                    f.path.display()
                ));
            }
            parent = p.parent();
        }
    }
    Ok(out)
}

/// A plain relative path: no `..`, `.`, root, empty or over-long component.
fn check_path(path: &str) -> Result<PathBuf, String> {
    if path.is_empty() || path.len() > 1024 || path.contains('\0') {
        return Err(format!("{path:?}: 1 to 1024 bytes, no NUL"));
    }
    let p = Path::new(path);
    let mut depth = 0;
    for c in p.components() {
        match c {
            Component::Normal(n) if n.len() <= 255 => depth += 1,
            Component::Normal(_) => return Err(format!("{path:?}: a name is over 255 bytes")),
            Component::ParentDir => return Err(format!("{path:?}: '..' is not allowed")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{path:?}: must be relative to the workspace"));
            }
            Component::CurDir => return Err(format!("{path:?}: '.' is not allowed")),
        }
    }
    if depth == 0 || depth > 32 || path.ends_with('/') {
        return Err(format!("{path:?}: not a file path"));
    }
    Ok(p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            max_steps: 4,
            max_tests: 3,
            max_files: 4,
            max_files_bytes: 100,
        }
    }

    fn req(json: serde_json::Value) -> Result<Checked, String> {
        let r: RunRequest = serde_json::from_value(json).map_err(|e| e.to_string())?;
        r.check(&shape(), &RunLimits::default(), &RunLimits::default_max())
    }

    #[test]
    fn a_typical_request_passes() {
        let c = req(serde_json::json!({
            "image": "gcc",
            "files": [{"path": "src/main.c", "content": "aGk=", "encoding": "base64", "mode": 420}],
            "steps": [
                {"name": "compile", "args": ["gcc", "main.c"]},
                {"name": "run", "args": ["./a.out"], "tests": [{"stdin": "1", "expected_stdout": "2"}]}
            ]
        }))
        .unwrap();
        assert_eq!(c.files[0].content, b"hi");
        assert_eq!(c.steps.len(), 2);
        assert_eq!(c.steps[1].limits, RunLimits::default());
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases = [
            (serde_json::json!({"image": "gcc", "steps": []}), "steps"),
            (
                serde_json::json!({"image": "../x", "steps": [{"name": "a", "args": ["x"]}]}),
                "image",
            ),
            (
                serde_json::json!({"image": "gcc", "files": [{"path": "../x", "content": ""}], "steps": [{"name": "a", "args": ["x"]}]}),
                "files[0].path",
            ),
            (
                serde_json::json!({"image": "gcc", "files": [{"path": "/etc/x", "content": ""}], "steps": [{"name": "a", "args": ["x"]}]}),
                "files[0].path",
            ),
            (
                serde_json::json!({"image": "gcc", "files": [{"path": "x", "content": "!!", "encoding": "base64"}], "steps": [{"name": "a", "args": ["x"]}]}),
                "invalid base64",
            ),
            (
                serde_json::json!({"image": "gcc", "files": [{"path": "x", "content": "", "mode": 2541}], "steps": [{"name": "a", "args": ["x"]}]}),
                "files[0].mode",
            ),
            (
                serde_json::json!({"image": "gcc", "files": [{"path": "a", "content": ""}, {"path": "a/b", "content": ""}], "steps": [{"name": "a", "args": ["x"]}]}),
                "is a file and a directory",
            ),
            (
                serde_json::json!({"image": "gcc", "steps": [{"name": "a", "args": []}]}),
                "steps[0].args",
            ),
            (
                serde_json::json!({"image": "gcc", "steps": [{"name": "a", "args": ["x"]}, {"name": "a", "args": ["x"]}]}),
                "used twice",
            ),
            (
                serde_json::json!({"image": "gcc", "steps": [{"name": "a", "args": ["x"], "limits": {"cpu_time_ms": 999999999}}]}),
                "steps[0].limits: cpu_time_ms",
            ),
            (
                serde_json::json!({"image": "gcc", "steps": [{"name": "a", "args": ["x"], "tests": []}]}),
                "steps[0].tests",
            ),
            (
                serde_json::json!({"image": "gcc", "steps": [{"name": "a", "args": ["x"], "tests": [{}, {}, {}, {}]}]}),
                "at most 3",
            ),
            (
                serde_json::json!({"image": "gcc", "env": ["NOEQUALS"], "steps": [{"name": "a", "args": ["x"]}]}),
                "env[0]",
            ),
            (
                serde_json::json!({"image": "gcc", "files": [{"path": "x", "content": "x".repeat(101)}], "steps": [{"name": "a", "args": ["x"]}]}),
                "bytes in all",
            ),
        ];
        for (json, want) in cases {
            let e = req(json.clone()).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }
}
