//! Checks a whole `linux.resources` against what corral implements for a cgroup mode,
//! before anything is created or written: a field that cannot be honoured is refused
//! with an error naming its OCI path, never silently skipped.

use oci_spec::runtime::LinuxResources;

use super::CgroupMode;
use super::convert::{self, DeviceRule};
use super::devices;
use super::error::CgroupError;

const R: &str = "linux.resources";

pub(super) fn validate(r: &LinuxResources, mode: CgroupMode) -> Result<(), CgroupError> {
    let v2 = mode == CgroupMode::V2;
    let v2_only = |field: &str| {
        CgroupError::unsupported(
            format!("{R}.{field}"),
            "it has no cgroup v2 equivalent, and this host uses cgroup v2",
        )
    };

    if let Some(n) = r.network() {
        if n.class_id().is_some() {
            return Err(CgroupError::unsupported(format!("{R}.network.classID"), ""));
        }
        if n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(CgroupError::unsupported(
                format!("{R}.network.priorities"),
                "",
            ));
        }
    }
    if r.rdma().as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CgroupError::unsupported(format!("{R}.rdma"), ""));
    }
    if let Some(u) = r.unified().as_ref().filter(|u| !u.is_empty()) {
        if !v2 {
            return Err(CgroupError::unsupported(
                format!("{R}.unified"),
                "it needs cgroup v2, and this host uses cgroup v1 controllers",
            ));
        }
        for (k, v) in u {
            convert::check_unified_key(k, v)?;
        }
    }

    if let Some(m) = r.memory() {
        #[allow(deprecated)] // kernel memory limits: checked like the others, see v1.rs
        convert::mem_value(&format!("{R}.memory.kernel"), m.kernel())?;
        convert::mem_value(&format!("{R}.memory.kernelTCP"), m.kernel_tcp())?;
        let limit = convert::mem_value(&format!("{R}.memory.limit"), m.limit())?;
        convert::mem_value(&format!("{R}.memory.reservation"), m.reservation())?;
        let swap = convert::mem_value(&format!("{R}.memory.swap"), m.swap())?;
        if v2 {
            convert::swap_v2(limit, swap)?;
        } else {
            convert::check_swap_v1(limit, swap)?;
        }
        if let Some(s) = m.swappiness() {
            if v2 {
                return Err(v2_only("memory.swappiness"));
            }
            if s > 100 {
                return Err(CgroupError::invalid(
                    format!("{R}.memory.swappiness"),
                    s,
                    "must be 0..=100",
                ));
            }
        }
        if v2 && m.disable_oom_killer() == Some(true) {
            return Err(v2_only("memory.disableOOMKiller"));
        }
        if v2 && m.use_hierarchy() == Some(false) {
            return Err(CgroupError::unsupported(
                format!("{R}.memory.useHierarchy"),
                "cgroup v2 memory accounting is always hierarchical",
            ));
        }
    }

    if let Some(c) = r.cpu() {
        if let Some(q) = c.quota().filter(|q| *q < -1) {
            return Err(CgroupError::invalid(
                format!("{R}.cpu.quota"),
                q,
                "must be -1 (unlimited), 0 (unset) or > 0",
            ));
        }
        if v2 && c.realtime_runtime().is_some() {
            return Err(v2_only("cpu.realtimeRuntime"));
        }
        if v2 && c.realtime_period().is_some() {
            return Err(v2_only("cpu.realtimePeriod"));
        }
        if let Some(i) = c.idle().filter(|i| !(0..=1).contains(i)) {
            return Err(CgroupError::invalid(
                format!("{R}.cpu.idle"),
                i,
                "must be 0 or 1",
            ));
        }
    }

    if let Some(b) = r.block_io() {
        let weight = |field: String, w: Option<u16>| match w {
            Some(w) if w > 1000 => Err(CgroupError::invalid(field, w, "must be 10..=1000")),
            _ => Ok(()),
        };
        weight(format!("{R}.blockIO.weight"), b.weight())?;
        weight(format!("{R}.blockIO.leafWeight"), b.leaf_weight())?;
        if v2 && b.leaf_weight().is_some_and(|w| w != 0) {
            return Err(v2_only("blockIO.leafWeight"));
        }
        for (i, d) in b.weight_device().iter().flatten().enumerate() {
            weight(format!("{R}.blockIO.weightDevice[{i}].weight"), d.weight())?;
            weight(
                format!("{R}.blockIO.weightDevice[{i}].leafWeight"),
                d.leaf_weight(),
            )?;
            if v2 && d.leaf_weight().is_some_and(|w| w != 0) {
                return Err(v2_only(&format!("blockIO.weightDevice[{i}].leafWeight")));
            }
            if d.major() < 0 || d.minor() < 0 {
                return Err(CgroupError::invalid(
                    format!("{R}.blockIO.weightDevice[{i}]"),
                    format!("{}:{}", d.major(), d.minor()),
                    "device numbers must be >= 0",
                ));
            }
        }
        let lists = [
            ("throttleReadBpsDevice", b.throttle_read_bps_device()),
            ("throttleWriteBpsDevice", b.throttle_write_bps_device()),
            ("throttleReadIOPSDevice", b.throttle_read_iops_device()),
            ("throttleWriteIOPSDevice", b.throttle_write_iops_device()),
        ];
        for (name, list) in lists {
            for (i, d) in list.iter().flatten().enumerate() {
                if d.major() < 0 || d.minor() < 0 {
                    return Err(CgroupError::invalid(
                        format!("{R}.blockIO.{name}[{i}]"),
                        format!("{}:{}", d.major(), d.minor()),
                        "device numbers must be >= 0",
                    ));
                }
            }
        }
    }

    for (i, h) in r.hugepage_limits().iter().flatten().enumerate() {
        if h.limit() < 0 {
            return Err(CgroupError::invalid(
                format!("{R}.hugepageLimits[{i}].limit"),
                h.limit(),
                "must be >= 0",
            ));
        }
    }

    let rules = device_rules(r)?;
    if v2 {
        // Compiled as a whole for the eBPF device program; refuses holes in wildcards.
        devices::check(&rules)?;
    }
    Ok(())
}

/// The checked device rules of `linux.resources.devices`, in order.
pub(super) fn device_rules(r: &LinuxResources) -> Result<Vec<DeviceRule>, CgroupError> {
    r.devices()
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, d)| DeviceRule::from_oci(i, d))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNetworkBuilder,
        LinuxResourcesBuilder, LinuxWeightDeviceBuilder,
    };
    use std::collections::HashMap;

    fn err(r: &LinuxResources, mode: CgroupMode) -> String {
        validate(r, mode).unwrap_err().to_string()
    }

    #[test]
    fn refuses_unimplemented_fields_by_name() {
        let net = LinuxResourcesBuilder::default()
            .network(
                LinuxNetworkBuilder::default()
                    .class_id(7u32)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(
            err(&net, CgroupMode::V1),
            "linux.resources.network.classID: not supported"
        );
        let rdma: LinuxResources =
            serde_json::from_str(r#"{"rdma":{"mlx5_1":{"hcaHandles":3}}}"#).unwrap();
        assert_eq!(
            err(&rdma, CgroupMode::V2),
            "linux.resources.rdma: not supported"
        );
        let unified = LinuxResourcesBuilder::default()
            .unified(HashMap::from([(
                "memory.high".to_string(),
                "1M".to_string(),
            )]))
            .build()
            .unwrap();
        assert!(
            err(&unified, CgroupMode::Hybrid).starts_with("linux.resources.unified: not supported")
        );
        assert!(validate(&unified, CgroupMode::V2).is_ok());
        // Present but empty is not a request.
        let empty: LinuxResources =
            serde_json::from_str(r#"{"network":{},"rdma":{},"unified":{}}"#).unwrap();
        assert!(validate(&empty, CgroupMode::V1).is_ok());
    }

    #[test]
    #[allow(deprecated)]
    fn memory_rules() {
        let kmem = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .kernel(1i64 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        // Accepted everywhere (applied or ignored with a warning when set), as by runc.
        for mode in [CgroupMode::V1, CgroupMode::Hybrid, CgroupMode::V2] {
            assert!(validate(&kmem, mode).is_ok(), "{mode:?}");
        }
        let bad_kmem = LinuxResourcesBuilder::default()
            .memory(LinuxMemoryBuilder::default().kernel(-7i64).build().unwrap())
            .build()
            .unwrap();
        assert!(
            err(&bad_kmem, CgroupMode::V1)
                .starts_with("linux.resources.memory.kernel: invalid value -7")
        );
        let mem = |b: LinuxMemoryBuilder| {
            LinuxResourcesBuilder::default()
                .memory(b.build().unwrap())
                .build()
                .unwrap()
        };
        let swappy = mem(LinuxMemoryBuilder::default().swappiness(60u64));
        assert!(validate(&swappy, CgroupMode::V1).is_ok());
        assert!(err(&swappy, CgroupMode::V2).starts_with("linux.resources.memory.swappiness"));
        let tcp = mem(LinuxMemoryBuilder::default().kernel_tcp(1i64 << 20));
        assert!(validate(&tcp, CgroupMode::Hybrid).is_ok());
        assert!(validate(&tcp, CgroupMode::V2).is_ok());
        let oom = mem(LinuxMemoryBuilder::default().disable_oom_killer(true));
        assert!(validate(&oom, CgroupMode::V1).is_ok());
        assert!(err(&oom, CgroupMode::V2).contains("disableOOMKiller"));
        let swap_only = mem(LinuxMemoryBuilder::default().swap(1i64 << 20));
        assert!(validate(&swap_only, CgroupMode::V1).is_ok());
        assert!(validate(&swap_only, CgroupMode::V2).is_err());
        let neg = mem(LinuxMemoryBuilder::default().limit(-5i64));
        assert!(
            err(&neg, CgroupMode::V1).starts_with("linux.resources.memory.limit: invalid value -5")
        );
    }

    #[test]
    fn cpu_and_blkio_rules() {
        let rt = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .realtime_runtime(950i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(validate(&rt, CgroupMode::V1).is_ok());
        assert!(
            err(&rt, CgroupMode::V2)
                .starts_with("linux.resources.cpu.realtimeRuntime: not supported")
        );
        let leaf = LinuxResourcesBuilder::default()
            .block_io(
                LinuxBlockIoBuilder::default()
                    .weight_device(vec![
                        LinuxWeightDeviceBuilder::default()
                            .major(8)
                            .minor(0)
                            .leaf_weight(300u16)
                            .build()
                            .unwrap(),
                    ])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert!(validate(&leaf, CgroupMode::V1).is_ok());
        assert!(err(&leaf, CgroupMode::V2).contains("blockIO.weightDevice[0].leafWeight"));
    }
}
