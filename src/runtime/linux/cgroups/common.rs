//! Interface-file writers shared by the v1 and v2 paths (same cgroups-rs controller,
//! `v2` flag chosen by the caller), and runc's ordering of interdependent pairs.

use std::path::Path;

use cgroups_rs::fs::MaxValue;
use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpuset::CpuSetController;
use cgroups_rs::fs::hugetlb::HugeTlbController;
use cgroups_rs::fs::pid::PidController;
use nix::errno::Errno;
use oci_spec::runtime::{LinuxBlockIo, LinuxHugepageLimit, LinuxPids};

use super::error::{CgroupError, RsContext};
use super::fsutil;

const R: &str = "linux.resources";

/// Writes a (period, value) pair the kernel checks against each other (CFS
/// period/quota, RT period/runtime) in runc's order: the period first; if the kernel
/// refuses it with EINVAL (the old value does not fit the new period) and a value is
/// coming too, the value first and the period after it.
pub(super) fn period_then_value<P, V>(
    period: Option<P>,
    value: Option<V>,
) -> Result<(), CgroupError>
where
    P: Fn() -> Result<(), CgroupError>,
    V: FnOnce() -> Result<(), CgroupError>,
{
    let mut period_after_value = false;
    if let Some(p) = &period
        && let Err(e) = p()
    {
        if e.errno() != Some(Errno::EINVAL) || value.is_none() {
            return Err(e);
        }
        period_after_value = true;
    }
    if let Some(v) = value {
        v()?;
        if period_after_value && let Some(p) = &period {
            p()?;
        }
    }
    Ok(())
}

/// Writes `cpuset.cpus` / `cpuset.mems` (the same files in v1 and v2).
pub(super) fn set_cpuset(
    dir: &Path,
    v2: bool,
    cpus: Option<&str>,
    mems: Option<&str>,
) -> Result<(), CgroupError> {
    let cs = CpuSetController::new(dir.to_path_buf(), dir.to_path_buf(), v2);
    if let Some(v) = cpus {
        cs.set_cpus(v).rs_ctx(dir, &v)?;
    }
    if let Some(v) = mems {
        cs.set_mems(v).rs_ctx(dir, &v)?;
    }
    Ok(())
}

/// Writes `pids.max` (v1 and v2): 0 leaves it alone, a negative limit is `max`.
pub(super) fn set_pids(dir: &Path, v2: bool, p: &LinuxPids) -> Result<(), CgroupError> {
    let max = match p.limit() {
        0 => return Ok(()),
        n if n < 0 => MaxValue::Max,
        n => MaxValue::Value(n),
    };
    let pc = PidController::new(dir.to_path_buf(), dir.to_path_buf(), v2);
    pc.set_pid_max(max).rs_ctx(dir, &max)
}

pub(super) fn has_throttles(b: &LinuxBlockIo) -> bool {
    [
        b.throttle_read_bps_device(),
        b.throttle_write_bps_device(),
        b.throttle_read_iops_device(),
        b.throttle_write_iops_device(),
    ]
    .iter()
    .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
}

/// The four throttle lists, through cgroups-rs (v1 `blkio.throttle.*_device`, v2 `io.max`).
pub(super) fn throttle(
    dir: &Path,
    bc: &BlkIoController,
    b: &LinuxBlockIo,
) -> Result<(), CgroupError> {
    type Setter = fn(&BlkIoController, u64, u64, u64) -> cgroups_rs::fs::error::Result<()>;
    let lists: [(_, Setter); 4] = [
        (
            b.throttle_read_bps_device(),
            BlkIoController::throttle_read_bps_for_device,
        ),
        (
            b.throttle_write_bps_device(),
            BlkIoController::throttle_write_bps_for_device,
        ),
        (
            b.throttle_read_iops_device(),
            BlkIoController::throttle_read_iops_for_device,
        ),
        (
            b.throttle_write_iops_device(),
            BlkIoController::throttle_write_iops_for_device,
        ),
    ];
    for (list, set) in lists {
        for d in list.iter().flatten() {
            let (major, minor) = (d.major() as u64, d.minor() as u64);
            let v = format!("{major}:{minor} {}", d.rate());
            set(bc, major, minor, d.rate()).rs_ctx(dir, &v)?;
        }
    }
    Ok(())
}

/// Writes `hugetlb.<size>.limit_in_bytes` (v1) or `hugetlb.<size>.max` (v2) through
/// cgroups-rs, then the same value to the `rsvd` variant where the kernel has it (runc).
pub(super) fn hugetlb_limits(
    dir: &Path,
    v2: bool,
    limits: &[LinuxHugepageLimit],
) -> Result<(), CgroupError> {
    let hc = HugeTlbController::new(dir.to_path_buf(), dir.to_path_buf(), v2);
    for (i, h) in limits.iter().enumerate() {
        let size = h.page_size();
        if !hc.size_supported(size) {
            return Err(CgroupError::invalid(
                format!("{R}.hugepageLimits[{i}].pageSize"),
                size,
                format!("this host supports {}", hc.get_sizes().join(", ")),
            ));
        }
        let limit = h.limit() as u64;
        hc.set_limit_in_bytes(size, limit).rs_ctx(dir, &limit)?;
        let rsvd = if v2 {
            format!("hugetlb.{size}.rsvd.max")
        } else {
            format!("hugetlb.{size}.rsvd.limit_in_bytes")
        };
        let rsvd = dir.join(rsvd);
        if rsvd.exists() {
            fsutil::write(&rsvd, &limit.to_string())?;
        }
    }
    Ok(())
}
