//! Usage statistics of a container's cgroup (for `corral events --stats` and the like).
//!
//! The pids numbers come from cgroups-rs's `PidController`, which reports read errors.
//! CPU and memory are read here: cgroups-rs's `CpuAcctController::cpuacct()` and
//! `MemController::memory_stat()` turn every unreadable file into a silent `0`, which
//! would make "no data" look like "no usage".

use std::path::Path;

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::pid::PidController;
use serde::{Deserialize, Serialize};

use super::CgroupMode;
use super::cgroup::Cgroup;
use super::error::{CgroupError, RsContext};
use super::{fsutil, v2};

/// A section is `None` when its controller is not available to the cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub pids: Option<PidsStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuStats {
    pub usage_total_ns: u64,
    pub usage_user_ns: u64,
    pub usage_system_ns: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Bytes in use now (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage: u64,
    /// Highest usage seen (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`, which
    /// kernels before 5.19 lack: then `None`).
    pub peak: Option<u64>,
    /// `None` when unlimited.
    pub limit: Option<u64>,
    /// Processes killed by the OOM killer (v1 `oom_kill` of `memory.oom_control`,
    /// v2 of `memory.events`); `None` on kernels that do not count them.
    pub oom_kill_count: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidsStats {
    pub current: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
}

/// v1 reports "unlimited" as the largest page-aligned `i64` (0x7FFFFFFFFFFFF000 with
/// 4 KiB pages); anything this large is no real limit.
const V1_UNLIMITED: u64 = 1 << 62;

impl Cgroup {
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        match self.layout.mode {
            CgroupMode::V2 => stats_v2(self.v2_dir()?),
            CgroupMode::V1 | CgroupMode::Hybrid => self.stats_v1(),
        }
    }

    /// The CPU time used by every task of the cgroup so far, in ns: one small read (v1
    /// `cpuacct.usage`, v2 `usage_usec` of `cpu.stat`), cheap enough to poll.
    pub fn cpu_usage_ns(&self) -> Result<u64, CgroupError> {
        match self.layout.mode {
            CgroupMode::V2 => {
                let file = self.v2_dir()?.join("cpu.stat");
                let text = fsutil::read(&file)?;
                fsutil::flat_keyed(&text, "usage_usec")
                    .map(|v| v.saturating_mul(1000))
                    .ok_or_else(|| fsutil::parse_err(&file, &text))
            }
            CgroupMode::V1 | CgroupMode::Hybrid => {
                let dir = self.v1_dir("cpuacct").ok_or_else(|| {
                    CgroupError::NoHierarchy(format!("cpuacct for cgroup {}", self.path))
                })?;
                fsutil::read_u64(&dir.join("cpuacct.usage"))
            }
        }
    }

    /// Processes of the cgroup the OOM killer killed (v1 `oom_kill` of
    /// `memory.oom_control`, v2 of `memory.events`): one read, for a monitor that needs
    /// no other figure. `None` on kernels that do not count them.
    pub fn oom_kill_count(&self) -> Result<Option<u64>, CgroupError> {
        let file = match self.layout.mode {
            CgroupMode::V2 => self.v2_dir()?.join("memory.events"),
            CgroupMode::V1 | CgroupMode::Hybrid => self
                .v1_dir("memory")
                .ok_or_else(|| {
                    CgroupError::NoHierarchy(format!("memory for cgroup {}", self.path))
                })?
                .join("memory.oom_control"),
        };
        Ok(fsutil::flat_keyed(&fsutil::read(&file)?, "oom_kill"))
    }

    /// The cgroup's directory in V2 mode.
    fn v2_dir(&self) -> Result<&Path, CgroupError> {
        self.unified
            .as_deref()
            .ok_or_else(|| CgroupError::NoHierarchy("no cgroup2 mount".into()))
    }

    /// Each controller's figures from its hierarchy; `None` for a controller whose
    /// hierarchy is not mounted or does not hold the cgroup ([`Cgroup::create_only`]).
    fn stats_v1(&self) -> Result<CgroupStats, CgroupError> {
        let dir = |controller| self.v1_dir(controller).filter(|d| d.is_dir());
        let cpu = match dir("cpuacct") {
            Some(d) => Some(CpuStats {
                usage_total_ns: fsutil::read_u64(&d.join("cpuacct.usage"))?,
                usage_user_ns: fsutil::read_u64(&d.join("cpuacct.usage_user"))?,
                usage_system_ns: fsutil::read_u64(&d.join("cpuacct.usage_sys"))?,
            }),
            None => None,
        };
        let memory = match dir("memory") {
            Some(d) => Some(MemoryStats {
                usage: fsutil::read_u64(&d.join("memory.usage_in_bytes"))?,
                peak: Some(fsutil::read_u64(&d.join("memory.max_usage_in_bytes"))?),
                limit: Some(fsutil::read_u64(&d.join("memory.limit_in_bytes"))?)
                    .filter(|l| *l < V1_UNLIMITED),
                oom_kill_count: fsutil::flat_keyed(
                    &fsutil::read(&d.join("memory.oom_control"))?,
                    "oom_kill",
                ),
            }),
            None => None,
        };
        let pids = dir("pids").map(|d| pids_stats(d, false)).transpose()?;
        Ok(CgroupStats { cpu, memory, pids })
    }
}

fn stats_v2(dir: &Path) -> Result<CgroupStats, CgroupError> {
    let avail = v2::controllers(dir)?;
    let has = |c: &str| avail.iter().any(|a| a == c);
    // cpu.stat's usage fields are core: present even without the cpu controller.
    let cpu_stat = fsutil::read(&dir.join("cpu.stat"))?;
    let usec = |key: &str| {
        fsutil::flat_keyed(&cpu_stat, key)
            .map(|v| v.saturating_mul(1000))
            .ok_or_else(|| fsutil::parse_err(&dir.join("cpu.stat"), &cpu_stat))
    };
    let cpu = Some(CpuStats {
        usage_total_ns: usec("usage_usec")?,
        usage_user_ns: usec("user_usec")?,
        usage_system_ns: usec("system_usec")?,
    });
    let memory = if has("memory") {
        let peak = dir.join("memory.peak");
        Some(MemoryStats {
            usage: fsutil::read_u64(&dir.join("memory.current"))?,
            peak: if peak.exists() {
                Some(fsutil::read_u64(&peak)?)
            } else {
                None
            },
            limit: fsutil::read_max(&dir.join("memory.max"))?,
            oom_kill_count: fsutil::flat_keyed(
                &fsutil::read(&dir.join("memory.events"))?,
                "oom_kill",
            ),
        })
    } else {
        None
    };
    let pids = if has("pids") {
        Some(pids_stats(dir, true)?)
    } else {
        None
    };
    Ok(CgroupStats { cpu, memory, pids })
}

fn pids_stats(dir: &Path, v2: bool) -> Result<PidsStats, CgroupError> {
    let pc = PidController::new(dir.to_path_buf(), dir.to_path_buf(), v2);
    Ok(PidsStats {
        current: pc.get_pid_current().rs_read(dir)?,
        limit: match pc.get_pid_max().rs_read(dir)? {
            MaxValue::Max => None,
            MaxValue::Value(v) => u64::try_from(v).ok(),
        },
    })
}
