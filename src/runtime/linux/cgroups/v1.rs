//! Applying `linux.resources` on cgroup v1 (and hybrid: v1 controllers, plus `hugetlb`
//! in the unified mount when it is not a v1 controller).
//!
//! The interface files are written through cgroups-rs's controller types, pointed at our
//! directories, wherever its setter writes the right file with the right value and
//! reports errors. Its `Cgroup::apply(&Resources)` is not used: memory, cpuset and blkio
//! writes there go through `let _ =` (a refused memory limit is silently dropped), other
//! failures become a path-less `Error::Other` from a read-back comparison, the CFS pair
//! lacks runc's EINVAL retry, and real-time settings are ignored. Written here instead:
//! files it has no setter for (`cpu.cfs_burst_us`, `cpu.idle`, `memory.oom_control` = 0,
//! `memory.use_hierarchy`), the blkio weight files (it only knows `blkio.weight`, which
//! kernels without CFQ (5.0+) lack in favour of `blkio.bfq.weight`), and the cpuset
//! inheritance (its `post_create` logs and ignores failures).

use std::path::Path;

use cgroups_rs::fs::blkio::BlkIoController;
use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources,
};

use super::cgroup::Cgroup;
use super::convert::mem_value;
use super::devices as devices_bpf;
use super::error::{CgroupError, RsContext};
use super::{CgroupMode, common, fsutil, v2, validate};

const R: &str = "linux.resources";

pub(super) fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    if let Some(m) = r.memory() {
        memory(cg, m)?;
    }
    if let Some(c) = r.cpu() {
        cpu(cg, c)?;
        cpuset(cg, c)?;
    }
    if let Some(p) = r.pids() {
        pids(cg, p)?;
    }
    if let Some(b) = r.block_io() {
        blkio(cg, b)?;
    }
    if let Some(h) = r.hugepage_limits().as_deref().filter(|h| !h.is_empty()) {
        hugetlb(cg, h)?;
    }
    devices(cg, r)?;
    unified_devices(cg, r);
    Ok(())
}

/// The cgroup's directory in the hierarchy of `controller`, needed for `field`.
fn need<'a>(cg: &'a Cgroup, controller: &str, field: &str) -> Result<&'a Path, CgroupError> {
    cg.v1_dir(controller).ok_or_else(|| {
        CgroupError::missing(
            format!("{R}.{field}"),
            controller,
            "no v1 hierarchy is mounted",
        )
    })
}

fn memory(cg: &Cgroup, m: &LinuxMemory) -> Result<(), CgroupError> {
    let limit = mem_value(&format!("{R}.memory.limit"), m.limit())?;
    let reservation = mem_value(&format!("{R}.memory.reservation"), m.reservation())?;
    let mut swap = mem_value(&format!("{R}.memory.swap"), m.swap())?;
    let tcp = mem_value(&format!("{R}.memory.kernelTCP"), m.kernel_tcp())?;
    #[allow(deprecated)] // applied where the kernel still has it
    let kernel = mem_value(&format!("{R}.memory.kernel"), m.kernel())?;
    if limit.is_none()
        && reservation.is_none()
        && swap.is_none()
        && tcp.is_none()
        && kernel.is_none()
        && m.swappiness().is_none()
        && m.disable_oom_killer().is_none()
        && m.use_hierarchy().is_none()
    {
        // checkBeforeUpdate alone: v1 refuses a limit below usage (EBUSY) by itself.
        return Ok(());
    }
    let dir = need(cg, "memory", "memory")?;
    let mc = MemController::new(dir.to_path_buf(), dir.to_path_buf(), false);
    let set_limit = |v: i64| mc.set_limit(v).rs_ctx(dir, &v);
    let set_swap = |v: i64| mc.set_memswap_limit(v).rs_ctx(dir, &v);

    // runc: an unlimited memory limit with swap unset means memory+swap unlimited too.
    if limit == Some(-1) && swap.is_none() && dir.join("memory.memsw.limit_in_bytes").exists() {
        swap = Some(-1);
    }
    match (limit, swap) {
        (Some(l), Some(s)) => {
            // memsw.limit >= limit must hold after every single write: raise memsw
            // first when growing, lower the limit first when shrinking (runc's order).
            let current = fsutil::read_u64(&dir.join("memory.limit_in_bytes"))?;
            if s == -1 || current < s as u64 {
                set_swap(s)?;
                set_limit(l)?;
            } else {
                set_limit(l)?;
                set_swap(s)?;
            }
        }
        (Some(l), None) => set_limit(l)?,
        (None, Some(s)) => set_swap(s)?,
        (None, None) => {}
    }
    if let Some(v) = reservation {
        mc.set_soft_limit(v).rs_ctx(dir, &v)?;
    }
    if let Some(v) = kernel {
        kernel_limit(dir, "memory.kernel", "memory.kmem.limit_in_bytes", v)?;
    }
    if let Some(v) = tcp {
        kernel_limit(dir, "memory.kernelTCP", "memory.kmem.tcp.limit_in_bytes", v)?;
    }
    if let Some(v) = m.swappiness() {
        mc.set_swappiness(v).rs_ctx(dir, &v)?;
    }
    if let Some(d) = m.disable_oom_killer() {
        fsutil::write(&dir.join("memory.oom_control"), bool_str(d))?;
    }
    if let Some(h) = m.use_hierarchy() {
        fsutil::write(&dir.join("memory.use_hierarchy"), bool_str(h))?;
    }
    Ok(())
}

/// The kernel's `ENOTSUPP` (524), which `memory.kmem.limit_in_bytes` answers on kernels
/// that keep the file but no longer limit kernel memory (5.16 to 6.0).
const ENOTSUPP: i32 = 524;

/// Writes a kernel memory limit (`field` of `memory`, the interface file `file`) where the
/// kernel still has one. A kernel without it (no file: built without kmem accounting, or
/// 6.1 and later for `kmem.limit_in_bytes`; or a file that answers "not supported") gets
/// a warning and the limit is ignored, as runc does: engines and spec generators still
/// send the field. Any other failure to write it is an error.
fn kernel_limit(dir: &Path, field: &str, file: &str, v: i64) -> Result<(), CgroupError> {
    use std::io::Write as _;
    let path = dir.join(file);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|mut f| f.write_all(v.to_string().as_bytes()));
    match written {
        Ok(()) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EOPNOTSUPP | ENOTSUPP)
            ) =>
        {
            tracing::warn!(
                "{R}.{field}: this kernel does not limit kernel memory ({}: {e}); ignored",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(CgroupError::Write {
            path,
            value: v.to_string(),
            errno: super::error::errno_of(&e),
        }),
    }
}

fn bool_str(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn cpu(cg: &Cgroup, c: &LinuxCpu) -> Result<(), CgroupError> {
    let shares = c.shares().filter(|v| *v != 0);
    let quota = c.quota().filter(|v| *v != 0);
    let period = c.period().filter(|v| *v != 0);
    let rt_period = c.realtime_period().filter(|v| *v != 0);
    let rt_runtime = c.realtime_runtime().filter(|v| *v != 0);
    if shares.is_none()
        && quota.is_none()
        && period.is_none()
        && rt_period.is_none()
        && rt_runtime.is_none()
        && c.burst().is_none()
        && c.idle().is_none()
    {
        return Ok(());
    }
    let dir = need(cg, "cpu", "cpu")?;
    let cc = &CpuController::new(dir.to_path_buf(), dir.to_path_buf(), false);
    if let Some(s) = shares {
        cc.set_shares(s).rs_ctx(dir, &s)?;
        // The kernel clamps to [2, 262144] without an error; say so instead.
        let got = cc.shares().rs_read(dir)?;
        if got != s {
            return Err(CgroupError::NotApplied {
                path: dir.join("cpu.shares"),
                wanted: s.to_string(),
                got: got.to_string(),
            });
        }
    }
    common::period_then_value(
        period.map(|p| move || cc.set_cfs_period(p).rs_ctx(dir, &p)),
        quota.map(|q| move || cc.set_cfs_quota(q).rs_ctx(dir, &q)),
    )?;
    if let Some(b) = c.burst() {
        fsutil::write(&dir.join("cpu.cfs_burst_us"), &b.to_string())?;
    }
    common::period_then_value(
        rt_period.map(|p| move || cc.set_rt_period_us(p).rs_ctx(dir, &p)),
        rt_runtime.map(|r| move || cc.set_rt_runtime(r).rs_ctx(dir, &r)),
    )?;
    if let Some(i) = c.idle() {
        fsutil::write(&dir.join("cpu.idle"), &i.to_string())?;
    }
    Ok(())
}

fn cpuset(cg: &Cgroup, c: &LinuxCpu) -> Result<(), CgroupError> {
    let cpus = c.cpus().as_deref().filter(|s| !s.is_empty());
    let mems = c.mems().as_deref().filter(|s| !s.is_empty());
    if cpus.is_none() && mems.is_none() {
        return Ok(());
    }
    let dir = need(cg, "cpuset", "cpu.cpus")?;
    common::set_cpuset(dir, false, cpus, mems)
}

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus` and `cpuset.mems`, and a task
/// cannot join it until both are set. Like runc, copy the parent's values down every
/// level from the mount point to the cgroup where they are still empty.
pub(super) fn cpuset_inherit(mount: &Path, rel: &Path) -> Result<(), CgroupError> {
    let mut parent = mount.to_path_buf();
    for c in rel.components() {
        let dir = parent.join(c);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let own = fsutil::read(&dir.join(file))?;
            if own.trim().is_empty() {
                let inherited = fsutil::read(&parent.join(file))?;
                fsutil::write(&dir.join(file), inherited.trim())?;
            }
        }
        parent = dir;
    }
    Ok(())
}

fn pids(cg: &Cgroup, p: &LinuxPids) -> Result<(), CgroupError> {
    if p.limit() == 0 {
        return Ok(());
    }
    common::set_pids(need(cg, "pids", "pids")?, false, p)
}

fn blkio(cg: &Cgroup, b: &LinuxBlockIo) -> Result<(), CgroupError> {
    let weight = b.weight().filter(|w| *w != 0);
    let leaf = b.leaf_weight().filter(|w| *w != 0);
    let devices = b.weight_device().as_deref().unwrap_or_default();
    if weight.is_none() && leaf.is_none() && devices.is_empty() && !common::has_throttles(b) {
        return Ok(());
    }
    let dir = need(cg, "blkio", "blockIO")?;
    let bc = BlkIoController::new(dir.to_path_buf(), dir.to_path_buf(), false);
    let weighted = weight.is_some() || devices.iter().any(|d| d.weight().is_some_and(|w| w != 0));
    let (weight_file, weight_device_file) = if weighted {
        weight_files(dir)?
    } else {
        ("", "")
    };
    if let Some(w) = weight {
        fsutil::write(&dir.join(weight_file), &w.to_string())?;
    }
    if let Some(w) = leaf {
        bc.set_leaf_weight(w.into()).rs_ctx(dir, &w)?;
    }
    for d in devices {
        let (major, minor) = (d.major() as u64, d.minor() as u64);
        if let Some(w) = d.weight().filter(|w| *w != 0) {
            fsutil::write(
                &dir.join(weight_device_file),
                &format!("{major}:{minor} {w}"),
            )?;
        }
        if let Some(w) = d.leaf_weight().filter(|w| *w != 0) {
            let v = format!("{major}:{minor} {w}");
            bc.set_leaf_weight_for_device(major, minor, w.into())
                .rs_ctx(dir, &v)?;
        }
    }
    common::throttle(dir, &bc, b)
}

/// The blkio files of proportional weights in the blkio directory `dir`: CFQ's, or BFQ's
/// on kernels that no longer have CFQ (5.0 and later), as runc picks them. Without
/// either, no scheduler of this kernel weighs block I/O by cgroup (BFQ is a module, often
/// not loaded): the weight is refused, naming the field and the missing feature, rather
/// than written to a missing file or dropped.
pub(super) fn weight_files(dir: &Path) -> Result<(&'static str, &'static str), CgroupError> {
    if dir.join("blkio.weight").exists() {
        Ok(("blkio.weight", "blkio.weight_device"))
    } else if dir.join("blkio.bfq.weight").exists() {
        Ok(("blkio.bfq.weight", "blkio.bfq.weight_device"))
    } else {
        Err(no_weights("blkio.bfq.weight"))
    }
}

/// A block I/O weight on a kernel without a proportional I/O scheduler (`missing`: the
/// interface file it would have).
pub(super) fn no_weights(missing: &str) -> CgroupError {
    CgroupError::unsupported(
        format!("{R}.blockIO.weight"),
        format!(
            "this kernel weighs block I/O only with the BFQ I/O scheduler (CFQ is gone since \
             Linux 5.0), and BFQ is not available here (no {missing}; `modprobe bfq` loads it)"
        ),
    )
}

/// The v1 hugetlb hierarchy if mounted, else (hybrid) the unified mount, where the
/// container's cgroup exists too.
fn hugetlb(cg: &Cgroup, limits: &[LinuxHugepageLimit]) -> Result<(), CgroupError> {
    if let Some(dir) = cg.v1_dir("hugetlb") {
        return common::hugetlb_limits(dir, false, limits);
    }
    match cg.unified.as_deref() {
        Some(dir) => {
            v2::need(dir, &v2::controllers(dir)?, "hugetlb", "hugepageLimits")?;
            common::hugetlb_limits(dir, true, limits)
        }
        None => Err(CgroupError::missing(
            format!("{R}.hugepageLimits"),
            "hugetlb",
            "neither a v1 hierarchy nor a cgroup2 mount has it",
        )),
    }
}

/// On a hybrid host whose unified hierarchy holds the container's cgroup: the eBPF
/// device program of the same rules, attached there as on a v2 host, so that an access
/// must pass both it and the v1 controller (see `devices/mod.rs`). The v1 controller
/// already enforces the rules, so a failure here (a kernel without cgroup eBPF, a rule
/// list v1 takes but the compiler refuses) is logged, not fatal, and any program of
/// earlier rules is detached.
fn unified_devices(cg: &Cgroup, r: &LinuxResources) {
    let Some(dir) = cg
        .unified
        .as_deref()
        .filter(|_| cg.layout.mode == CgroupMode::Hybrid)
    else {
        return;
    };
    let applied = validate::device_rules(r).and_then(|rules| devices_bpf::apply(dir, &rules));
    if let Err(e) = applied {
        // Leave no program of earlier rules behind: the v1 controller decides alone.
        let detached = devices_bpf::detach_all(dir);
        tracing::warn!(
            cgroup = %cg.path,
            error = %e,
            detached = detached.is_ok(),
            "no eBPF device program in the unified hierarchy; the v1 devices controller \
             enforces linux.resources.devices alone"
        );
    }
}

/// `devices.allow` / `devices.deny`, one write per rule, in the order given (each file
/// opened once). Note that a leading "deny all" briefly denies everything when
/// re-applied to a running container (`update`); runc avoids that with a rule emulator,
/// which corral does not have.
fn devices(cg: &Cgroup, r: &LinuxResources) -> Result<(), CgroupError> {
    let rules = validate::device_rules(r)?;
    if rules.is_empty() {
        return Ok(());
    }
    let dir = need(cg, "devices", "devices")?;
    let (allow, deny) = (dir.join("devices.allow"), dir.join("devices.deny"));
    let (mut allow, mut deny) = (fsutil::Writer::new(&allow), fsutil::Writer::new(&deny));
    for rule in &rules {
        let file = if rule.allow { &mut allow } else { &mut deny };
        file.write(&rule.to_string())?;
    }
    Ok(())
}
