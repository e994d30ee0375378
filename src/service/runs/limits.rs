//! The limits of one step of a run: what a request may ask for, the service's defaults
//! and the per-service maximum that no request can exceed.

use serde::{Deserialize, Serialize};

/// Limits of every execution of a step (each test case gets the full amount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct RunLimits {
    /// CPU time of all processes and threads together (from the cgroup), in ms.
    pub cpu_time_ms: u64,
    /// Wall-clock time from start to exit, in ms; past it every process is killed.
    pub wall_time_ms: u64,
    /// Memory of the whole cgroup (page cache and tmpfs included), in bytes; no swap.
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub pids: u64,
    /// Bytes kept of each of stdout and stderr; more ends the run with `OUTPUT_LIMIT`.
    pub output_bytes: u64,
    /// Largest file a process may write (`RLIMIT_FSIZE`), in bytes.
    pub file_size_bytes: u64,
    /// Open files per process (`RLIMIT_NOFILE`).
    pub open_files: u64,
    /// Stack size (`RLIMIT_STACK`), in bytes.
    pub stack_bytes: u64,
    /// Size of the writable disk: the workspace `/box` and the private `/tmp`, in bytes.
    pub disk_bytes: u64,
}

impl Default for RunLimits {
    /// The defaults of a step that asks for nothing.
    fn default() -> Self {
        RunLimits {
            cpu_time_ms: 2_000,
            wall_time_ms: 5_000,
            memory_bytes: 256 << 20,
            pids: 64,
            output_bytes: 64 << 10,
            file_size_bytes: 16 << 20,
            open_files: 256,
            stack_bytes: 8 << 20,
            disk_bytes: 64 << 20,
        }
    }
}

impl RunLimits {
    /// The default maximum: what the service allows any step at most.
    pub fn default_max() -> Self {
        RunLimits {
            cpu_time_ms: 30_000,
            wall_time_ms: 60_000,
            memory_bytes: 2 << 30,
            pids: 512,
            output_bytes: 16 << 20,
            file_size_bytes: 256 << 20,
            open_files: 4096,
            stack_bytes: 256 << 20,
            disk_bytes: 512 << 20,
        }
    }

    /// Each field with its name, for checks and messages.
    fn fields(&self) -> [(&'static str, u64); 9] {
        [
            ("cpu_time_ms", self.cpu_time_ms),
            ("wall_time_ms", self.wall_time_ms),
            ("memory_bytes", self.memory_bytes),
            ("pids", self.pids),
            ("output_bytes", self.output_bytes),
            ("file_size_bytes", self.file_size_bytes),
            ("open_files", self.open_files),
            ("stack_bytes", self.stack_bytes),
            ("disk_bytes", self.disk_bytes),
        ]
    }

    /// The first field of `self` above the same field of `max`, or zero.
    pub fn check(&self, max: &RunLimits) -> Result<(), String> {
        for ((name, v), (_, m)) in self.fields().into_iter().zip(max.fields()) {
            if v == 0 {
                return Err(format!("{name}: must be at least 1"));
            }
            if v > m {
                return Err(format!("{name}: {v} is above the service's maximum {m}"));
            }
        }
        if self.memory_bytes < MIN_MEMORY {
            return Err(format!(
                "memory_bytes: {} is below the minimum {MIN_MEMORY}",
                self.memory_bytes
            ));
        }
        Ok(())
    }
}

/// Below this a container cannot even start (the runtime's own setup is charged too).
pub const MIN_MEMORY: u64 = 4 << 20;

/// The limits a step asks for; a missing field takes the service's default.
#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    pub cpu_time_ms: Option<u64>,
    pub wall_time_ms: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub output_bytes: Option<u64>,
    pub file_size_bytes: Option<u64>,
    pub open_files: Option<u64>,
    pub stack_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
}

impl LimitsRequest {
    /// Fills the gaps from `defaults` and checks the result against `max`.
    pub fn resolve(&self, defaults: &RunLimits, max: &RunLimits) -> Result<RunLimits, String> {
        let d = defaults;
        let limits = RunLimits {
            cpu_time_ms: self.cpu_time_ms.unwrap_or(d.cpu_time_ms),
            wall_time_ms: self.wall_time_ms.unwrap_or(d.wall_time_ms),
            memory_bytes: self.memory_bytes.unwrap_or(d.memory_bytes),
            pids: self.pids.unwrap_or(d.pids),
            output_bytes: self.output_bytes.unwrap_or(d.output_bytes),
            file_size_bytes: self.file_size_bytes.unwrap_or(d.file_size_bytes),
            open_files: self.open_files.unwrap_or(d.open_files),
            stack_bytes: self.stack_bytes.unwrap_or(d.stack_bytes),
            disk_bytes: self.disk_bytes.unwrap_or(d.disk_bytes),
        };
        limits.check(max)?;
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_gaps_and_maximum_is_enforced() {
        let max = RunLimits::default_max();
        let req = LimitsRequest {
            cpu_time_ms: Some(100),
            ..Default::default()
        };
        let l = req.resolve(&RunLimits::default(), &max).unwrap();
        assert_eq!(l.cpu_time_ms, 100);
        assert_eq!(l.wall_time_ms, RunLimits::default().wall_time_ms);
        let too_much = LimitsRequest {
            memory_bytes: Some(max.memory_bytes + 1),
            ..Default::default()
        };
        let e = too_much.resolve(&RunLimits::default(), &max).unwrap_err();
        assert!(e.contains("memory_bytes") && e.contains("maximum"), "{e}");
        let zero = LimitsRequest {
            pids: Some(0),
            ..Default::default()
        };
        assert!(zero.resolve(&RunLimits::default(), &max).is_err());
        RunLimits::default().check(&max).unwrap();
    }
}
