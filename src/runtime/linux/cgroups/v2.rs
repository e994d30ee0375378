//! cgroup v2: enabling controllers down to the container's cgroup, and applying
//! `linux.resources` with the v1 -> v2 conversions of runc/crun.
//!
//! cgroups-rs's own v2 hierarchy is hard-wired to `/sys/fs/cgroup`, so its controller
//! types are pointed at our directories with `v2 = true` instead, and used where their
//! setters are right: `memory.max`, `memory.swap.max`, `cpu.weight`, `cpu.max` (which it
//! updates keeping the half not given), `cpuset.*`, `pids.max`, `io.max`, `hugetlb.*`.
//! Not used: its `set_swappiness` (on v2 it writes the swappiness into
//! `memory.swap.max`), `set_soft_limit` (writes `-1` verbatim into `memory.low`) and
//! `set_weight` (always `io.bfq.weight`, unconverted).
//!
//! `linux.resources.devices` has no interface file on v2: it becomes an eBPF device
//! program attached to the cgroup (`devices/mod.rs`).

use std::path::Path;

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use nix::errno::Errno;
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxResources};

use super::cgroup::Cgroup;
use super::convert::{self, max_str, mem_value};
use super::error::{CgroupError, RsContext};
use super::{common, devices, fsutil, validate};

const R: &str = "linux.resources";

/// The controllers available to the cgroup at `dir` (its `cgroup.controllers`).
pub(super) fn controllers(dir: &Path) -> Result<Vec<String>, CgroupError> {
    Ok(fsutil::read(&dir.join("cgroup.controllers"))?
        .split_whitespace()
        .map(String::from)
        .collect())
}

pub(super) fn need<'a>(
    dir: &'a Path,
    available: &[String],
    controller: &str,
    field: &str,
) -> Result<&'a Path, CgroupError> {
    if available.iter().any(|c| c == controller) {
        Ok(dir)
    } else {
        Err(CgroupError::missing(
            format!("{R}.{field}"),
            controller,
            format!(
                "{}/cgroup.controllers has only [{}]",
                dir.display(),
                available.join(" ")
            ),
        ))
    }
}

/// Enables, in the mount root and every cgroup above the container's, each controller
/// the level offers (`cgroup.controllers`) but does not yet pass down
/// (`cgroup.subtree_control`), as runc does. On a hybrid host this writes `+hugetlb`
/// to the unified root, which only makes `hugetlb.*` files appear in child cgroups.
/// A controller that cannot be enabled (e.g. a parent that holds processes) is logged,
/// not fatal: a resource that needs it then fails with `ControllerMissing`.
pub(super) fn enable_controllers(root: &Path, rel: &Path) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    let levels: Vec<_> = rel.components().collect();
    for (i, c) in levels.iter().enumerate() {
        let available = controllers(&dir)?;
        let enabled = fsutil::read(&dir.join("cgroup.subtree_control"))?;
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let missing: Vec<String> = available
            .iter()
            .filter(|c| !enabled.contains(&c.as_str()))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() {
            let file = dir.join("cgroup.subtree_control");
            if fsutil::write(&file, &missing.join(" ")).is_err() {
                for m in &missing {
                    if let Err(e) = fsutil::write(&file, m) {
                        tracing::warn!(error = %e, "cannot enable a cgroup v2 controller");
                    }
                }
            }
        }
        if i + 1 < levels.len() {
            dir.push(c);
        }
    }
    Ok(())
}

pub(super) fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    let dir = cg
        .unified
        .as_deref()
        .ok_or_else(|| CgroupError::NoHierarchy("no cgroup2 mount".into()))?;
    let avail = controllers(dir)?;
    if let Some(m) = r.memory() {
        memory(dir, &avail, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(dir, &avail, c)?;
        let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
        let mems = c.mems().as_deref().filter(|s| !s.is_empty());
        if cpus.is_some() || mems.is_some() {
            common::set_cpuset(need(dir, &avail, "cpuset", "cpu.cpus")?, true, cpus, mems)?;
        }
    }
    if let Some(p) = r.pids().filter(|p| p.limit() != 0) {
        common::set_pids(need(dir, &avail, "pids", "pids")?, true, &p)?;
    }
    if let Some(b) = r.block_io() {
        io(dir, &avail, b)?;
    }
    if let Some(h) = r.hugepage_limits().as_deref().filter(|h| !h.is_empty()) {
        common::hugetlb_limits(need(dir, &avail, "hugetlb", "hugepageLimits")?, true, h)?;
    }
    devices::apply(dir, &validate::device_rules(r)?)?;
    // Last, so that raw values win over the structured fields (runc's order).
    let mut unified: Vec<_> = r.unified().iter().flatten().collect();
    unified.sort();
    for (k, v) in unified {
        let controller = k.split('.').next().unwrap_or_default();
        if controller != "cgroup" {
            need(dir, &avail, controller, &format!("unified[{k:?}]"))?;
        }
        fsutil::write(&dir.join(k), v)?;
    }
    Ok(())
}

fn memory(dir: &Path, avail: &[String], m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = mem_value(&format!("{R}.memory.limit"), m.limit())?;
    let reservation = mem_value(&format!("{R}.memory.reservation"), m.reservation())?;
    let swap = convert::swap_v2(limit, mem_value(&format!("{R}.memory.swap"), m.swap())?)?;
    #[allow(deprecated)] // read to say that it is ignored
    let kernel = [("kernel", m.kernel()), ("kernelTCP", m.kernel_tcp())];
    for (field, _) in kernel.iter().filter(|(_, v)| v.is_some_and(|v| v != 0)) {
        // runc ignores them too: v2 charges kernel memory to memory.max, with no limit of
        // its own; engines and generators still send the field.
        tracing::warn!(
            "{R}.memory.{field}: cgroup v2 has no separate kernel memory limit (kernel \
             memory counts against memory.max); ignored"
        );
    }
    if limit.is_none() && reservation.is_none() && swap.is_none() {
        return Ok(()); // useHierarchy=true holds by itself; the rest was refused by validate
    }
    let dir = need(dir, avail, "memory", "memory")?;
    if let (Some(true), Some(l)) = (m.check_before_update(), limit.filter(|l| *l > 0)) {
        let current = fsutil::read_u64(&dir.join("memory.current"))?;
        if current > l as u64 {
            return Err(CgroupError::invalid(
                format!("{R}.memory.limit"),
                l,
                format!("below the current usage {current} (checkBeforeUpdate)"),
            ));
        }
    }
    let mc = MemController::new(dir.to_path_buf(), dir.to_path_buf(), true);
    if let Some(s) = swap {
        match mc.set_memswap_limit(s).rs_ctx(dir, &max_str(s)) {
            // No swap accounting (no swap): "max" or "0" are what the kernel does anyway (runc).
            Err(e) if e.errno() == Some(Errno::ENOENT) && (s == -1 || s == 0) => {
                tracing::debug!(error = %e, "no memory.swap.max; swap limit already in effect");
            }
            res => res?,
        }
    }
    if let Some(l) = limit {
        mc.set_limit(l).rs_ctx(dir, &max_str(l))?;
    }
    if let Some(v) = reservation {
        fsutil::write(&dir.join("memory.low"), &max_str(v))?;
    }
    Ok(())
}

fn cpu(dir: &Path, avail: &[String], c: &LinuxCpu) -> Result<(), CgroupError> {
    let weight = c
        .shares()
        .map(convert::shares_to_weight)
        .filter(|w| *w != 0);
    let quota = c.quota().filter(|v| *v != 0);
    let period = c.period().filter(|v| *v != 0);
    if weight.is_none()
        && quota.is_none()
        && period.is_none()
        && c.burst().is_none()
        && c.idle().is_none()
    {
        return Ok(());
    }
    let dir = need(dir, avail, "cpu", "cpu")?;
    let cc = CpuController::new(dir.to_path_buf(), dir.to_path_buf(), true);
    if let Some(w) = weight {
        // On v2 cgroups-rs's set_shares writes cpu.weight; the conversion is ours.
        cc.set_shares(w).rs_ctx(dir, &w)?;
    }
    if quota.is_some() || period.is_some() {
        let v = format!(
            "{} {}",
            quota.map_or_else(|| "(kept)".into(), max_str),
            period.map_or_else(|| "(kept)".into(), |p| p.to_string())
        );
        cc.set_cfs_quota_and_period(quota, period).rs_ctx(dir, &v)?;
    }
    if let Some(b) = c.burst() {
        fsutil::write(&dir.join("cpu.max.burst"), &b.to_string())?;
    }
    if let Some(i) = c.idle() {
        fsutil::write(&dir.join("cpu.idle"), &i.to_string())?;
    }
    Ok(())
}

fn io(dir: &Path, avail: &[String], b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let weight = b.weight().filter(|w| *w != 0);
    let devices = b.weight_device().as_deref().unwrap_or_default();
    if weight.is_none() && devices.is_empty() && !common::has_throttles(b) {
        return Ok(());
    }
    let dir = need(dir, avail, "io", "blockIO")?;
    // BFQ takes blkio weights as they are; without it, io.weight (1..=10000) gets
    // runc's linear conversion. Both accept "MAJ:MIN WEIGHT" per-device overrides.
    let bfq = dir.join("io.bfq.weight");
    let plain = dir.join("io.weight");
    let (file, conv): (_, fn(u16) -> u64) = if bfq.exists() {
        (bfq, u64::from)
    } else {
        (plain, convert::blkio_weight_to_io_weight)
    };
    let weighted = weight.is_some() || devices.iter().any(|d| d.weight().is_some_and(|w| w != 0));
    if weighted && !file.exists() {
        // Neither BFQ nor the io.weight of blk-iocost.
        return Err(super::v1::no_weights("io.bfq.weight or io.weight"));
    }
    if let Some(w) = weight {
        fsutil::write(&file, &conv(w).to_string())?;
    }
    for d in devices {
        if let Some(w) = d.weight().filter(|w| *w != 0) {
            fsutil::write(&file, &format!("{}:{} {}", d.major(), d.minor(), conv(w)))?;
        }
    }
    let bc = BlkIoController::new(dir.to_path_buf(), dir.to_path_buf(), true);
    common::throttle(dir, &bc, b)
}
