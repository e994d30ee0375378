//! From what the kernel measured to a verdict, and the output comparison.

use serde::{Deserialize, Serialize};

use super::request::CompareMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Verdict {
    /// Exit code 0 (and the expected stdout, when one was given).
    Ok,
    /// Exit code 0, but stdout differs from `expected_stdout`.
    WrongAnswer,
    /// CPU time (of the whole cgroup) reached the limit.
    TimeLimit,
    /// Wall-clock time reached the limit.
    WallTimeLimit,
    /// The kernel's OOM killer acted in the cgroup.
    MemoryLimit,
    /// stdout or stderr went past `output_bytes`, or a file past `file_size_bytes`.
    OutputLimit,
    /// A non-zero exit code (or a program that could not be started).
    RuntimeError,
    /// Killed by a signal that no limit explains.
    Signaled,
    /// The service failed; nothing is known about the program.
    InternalError,
}

impl Verdict {
    pub const ALL: [Verdict; 9] = [
        Verdict::Ok,
        Verdict::WrongAnswer,
        Verdict::TimeLimit,
        Verdict::WallTimeLimit,
        Verdict::MemoryLimit,
        Verdict::OutputLimit,
        Verdict::RuntimeError,
        Verdict::Signaled,
        Verdict::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::WrongAnswer => "WRONG_ANSWER",
            Verdict::TimeLimit => "TIME_LIMIT",
            Verdict::WallTimeLimit => "WALL_TIME_LIMIT",
            Verdict::MemoryLimit => "MEMORY_LIMIT",
            Verdict::OutputLimit => "OUTPUT_LIMIT",
            Verdict::RuntimeError => "RUNTIME_ERROR",
            Verdict::Signaled => "SIGNALED",
            Verdict::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// How one execution ended, as measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ending {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The cgroup's OOM kill counter went up.
    pub oom_killed: bool,
    /// CPU time reached the limit (the runner killed it, or the kernel's RLIMIT_CPU did).
    pub cpu_exceeded: bool,
    pub wall_exceeded: bool,
    /// stdout or stderr went past the cap.
    pub output_exceeded: bool,
}

/// The verdict; limits first (a program killed for its memory also dies by a signal),
/// then signals, exit code and output.
pub fn judge(end: &Ending, wrong_output: impl FnOnce() -> bool) -> Verdict {
    if end.oom_killed {
        return Verdict::MemoryLimit;
    }
    if end.output_exceeded || end.signal == Some(libc::SIGXFSZ) {
        return Verdict::OutputLimit;
    }
    if end.cpu_exceeded || end.signal == Some(libc::SIGXCPU) {
        return Verdict::TimeLimit;
    }
    if end.wall_exceeded {
        return Verdict::WallTimeLimit;
    }
    if end.signal.is_some() {
        return Verdict::Signaled;
    }
    match end.exit_code {
        Some(0) if wrong_output() => Verdict::WrongAnswer,
        Some(0) => Verdict::Ok,
        Some(_) => Verdict::RuntimeError,
        None => Verdict::InternalError,
    }
}

/// Whether `actual` matches `expected` under `mode`.
pub fn same_output(actual: &[u8], expected: &[u8], mode: CompareMode) -> bool {
    match mode {
        CompareMode::Exact => actual == expected,
        CompareMode::TrailingWhitespace => normalize(actual).eq(normalize(expected)),
    }
}

/// Lines with trailing blanks (and `\r`) removed, trailing empty lines dropped.
fn normalize(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\n')
        .map(|l| {
            let end = l
                .iter()
                .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'))
                .map_or(0, |i| i + 1);
            &l[..end]
        })
        .collect();
    let keep = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines.into_iter().take(keep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_come_before_signals_and_exit_codes() {
        let killed = Ending {
            signal: Some(libc::SIGKILL),
            ..Default::default()
        };
        assert_eq!(judge(&killed, || false), Verdict::Signaled);
        let oom = Ending {
            oom_killed: true,
            ..killed.clone()
        };
        assert_eq!(judge(&oom, || false), Verdict::MemoryLimit);
        let cpu = Ending {
            cpu_exceeded: true,
            ..killed.clone()
        };
        assert_eq!(judge(&cpu, || false), Verdict::TimeLimit);
        let wall = Ending {
            wall_exceeded: true,
            ..killed.clone()
        };
        assert_eq!(judge(&wall, || false), Verdict::WallTimeLimit);
        let xfsz = Ending {
            signal: Some(libc::SIGXFSZ),
            ..Default::default()
        };
        assert_eq!(judge(&xfsz, || false), Verdict::OutputLimit);
        let exit = |c| Ending {
            exit_code: Some(c),
            ..Default::default()
        };
        assert_eq!(judge(&exit(3), || true), Verdict::RuntimeError);
        assert_eq!(judge(&exit(0), || true), Verdict::WrongAnswer);
        assert_eq!(judge(&exit(0), || false), Verdict::Ok);
        assert_eq!(judge(&Ending::default(), || false), Verdict::InternalError);
    }

    #[test]
    fn comparison_modes() {
        let tw = CompareMode::TrailingWhitespace;
        assert!(same_output(b"1 2  \n3\t\n\n\n", b"1 2\n3", tw));
        assert!(same_output(b"a\r\nb\r\n", b"a\nb\n", tw));
        assert!(!same_output(b" 1\n", b"1\n", tw));
        assert!(!same_output(b"1\n\n2\n", b"1\n2\n", tw));
        assert!(same_output(b"", b"\n\n", tw));
        assert!(!same_output(b"1\n", b"1", CompareMode::Exact));
        assert!(same_output(b"1\n", b"1\n", CompareMode::Exact));
    }

    #[test]
    fn verdict_names_match_serde() {
        for v in Verdict::ALL {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
    }
}
