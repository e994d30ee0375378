//! Pure conversions from OCI resource values to cgroup file values, shared by the v1
//! and v2 writers and unit-tested without a cgroup filesystem.
//!
//! Conventions follow runc's spec conversion: for memory limit/reservation/swap, CPU
//! shares/quota/period and the pids limit, `0` means "not set" (nothing is written) and
//! `-1` (any negative value, for pids) means "unlimited".

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::CgroupError;

/// A memory-ish value: `None` (absent or 0), `Some(-1)` (unlimited) or `Some(n > 0)`.
pub(super) fn mem_value(field: &str, v: Option<i64>) -> Result<Option<i64>, CgroupError> {
    match v {
        None | Some(0) => Ok(None),
        Some(-1) => Ok(Some(-1)),
        Some(n) if n > 0 => Ok(Some(n)),
        Some(n) => Err(CgroupError::invalid(
            field,
            n,
            "must be -1 (unlimited) or > 0",
        )),
    }
}

/// `-1` as `max`, anything else as the number (cgroup v2 files).
pub(super) fn max_str(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// The value for v2 `memory.swap.max` from OCI `limit` and `swap`, which in OCI (and v1
/// `memory.memsw.limit_in_bytes`) is memory *plus* swap; v2 limits swap alone, so
/// `swap.max = swap - limit` (runc/crun). `-1` means `max`; `None` means "leave alone".
pub(super) fn swap_v2(limit: Option<i64>, swap: Option<i64>) -> Result<Option<i64>, CgroupError> {
    const F: &str = "linux.resources.memory.swap";
    match (limit, swap) {
        // v1 compatibility: an unlimited memory limit with no swap value means both unlimited.
        (Some(-1), None) => Ok(Some(-1)),
        (_, None) => Ok(None),
        (_, Some(-1)) => Ok(Some(-1)),
        (None | Some(-1), Some(s)) => Err(CgroupError::invalid(
            F,
            s,
            "a swap limit needs a memory limit (linux.resources.memory.limit) on cgroup v2",
        )),
        (Some(l), Some(s)) if s < l => Err(CgroupError::invalid(
            F,
            s,
            format!("memory+swap must be >= the memory limit {l}"),
        )),
        (Some(l), Some(s)) => Ok(Some(s - l)),
    }
}

/// Checks OCI `swap` against `limit` for v1 `memory.memsw.limit_in_bytes` (memory+swap).
pub(super) fn check_swap_v1(limit: Option<i64>, swap: Option<i64>) -> Result<(), CgroupError> {
    match (limit, swap) {
        (Some(l), Some(s)) if l > 0 && s > 0 && s < l => Err(CgroupError::invalid(
            "linux.resources.memory.swap",
            s,
            format!("memory+swap must be >= the memory limit {l}"),
        )),
        _ => Ok(()),
    }
}

/// cgroup v1 `cpu.shares` (2..=262144, default 1024) to v2 `cpu.weight` (1..=10000,
/// default 100), with the quadratic-in-log2 formula of crun (also runc >= 1.3,
/// opencontainers/cgroups): maps 2 -> 1, 1024 -> 100 and 262144 -> 10000. `0` is "unset".
pub(super) fn shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        1..=2 => 1,
        262_144.. => 10_000,
        _ => {
            let l = (shares as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            // Rounded to 1e-9 first so that float noise (10^2.0000000000000004) does not
            // push an exact result (1024 -> 100) up by one through ceil().
            let w = (10f64.powf(exponent) * 1e9).round() / 1e9;
            w.ceil() as u64
        }
    }
}

/// blkio weight (10..=1000) to v2 `io.weight` (1..=10000), runc's linear scheme, used
/// when the BFQ `io.bfq.weight` file (which takes blkio weights as they are) is absent.
pub(super) fn blkio_weight_to_io_weight(w: u16) -> u64 {
    if w == 0 {
        return 0;
    }
    1 + (u64::from(w).saturating_sub(10)) * 9999 / 990
}

/// One `devices.allow` / `devices.deny` rule, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DeviceRule {
    pub allow: bool,
    /// `a`, `b` or `c`.
    pub typ: char,
    /// `None` is `*`.
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Non-empty subset of `rwm`, in that order.
    pub access: String,
}

impl DeviceRule {
    pub(super) fn from_oci(i: usize, d: &LinuxDeviceCgroup) -> Result<Self, CgroupError> {
        let field = |f: &str| format!("linux.resources.devices[{i}].{f}");
        let typ = match d.typ() {
            None | Some(LinuxDeviceType::A) => 'a',
            Some(LinuxDeviceType::B) => 'b',
            // 'u' (unbuffered char) is a char device for the device cgroup.
            Some(LinuxDeviceType::C | LinuxDeviceType::U) => 'c',
            Some(LinuxDeviceType::P) => {
                return Err(CgroupError::invalid(
                    field("type"),
                    "p",
                    "the device cgroup has no rules for FIFOs",
                ));
            }
        };
        // The kernel's device numbers (and its rules' numbers) are u32.
        let num = |f: &str, v: Option<i64>| match v {
            None | Some(-1) => Ok(None),
            Some(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n)),
            Some(n) => Err(CgroupError::invalid(
                field(f),
                n,
                "must be 0..=4294967295, or -1 (any)",
            )),
        };
        let access = match d.access().as_deref() {
            None | Some("") => "rwm".to_string(),
            Some(a) => {
                if a.chars().any(|c| !"rwm".contains(c)) {
                    return Err(CgroupError::invalid(
                        field("access"),
                        a,
                        "must be made of r, w and m",
                    ));
                }
                "rwm".chars().filter(|c| a.contains(*c)).collect()
            }
        };
        Ok(Self {
            allow: d.allow(),
            typ,
            major: num("major", d.major())?,
            minor: num("minor", d.minor())?,
            access,
        })
    }

    /// The rule covers every device: the kernel ignores numbers and access for type `a`.
    pub(super) fn is_all(&self) -> bool {
        self.typ == 'a'
    }
}

impl std::fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |v: Option<i64>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        write!(
            f,
            "{} {}:{} {}",
            self.typ,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// Checks a `linux.resources.unified` key: a plain interface file name of a controller
/// (`memory.high`, `io.max`, ...), never a path and never a core `cgroup.*` file other
/// than the `cgroup.max.*` limits.
pub(super) fn check_unified_key(key: &str, value: &str) -> Result<(), CgroupError> {
    let field = format!("linux.resources.unified[{key:?}]");
    if key.is_empty() || key.contains('/') || key.contains('\0') || key.starts_with('.') {
        return Err(CgroupError::invalid(
            field,
            key,
            "not a cgroup interface file name",
        ));
    }
    if !key.contains('.') {
        return Err(CgroupError::invalid(
            field,
            key,
            "expected <controller>.<file>",
        ));
    }
    if key.starts_with("cgroup.") && !matches!(key, "cgroup.max.depth" | "cgroup.max.descendants") {
        return Err(CgroupError::invalid(
            field,
            key,
            "core cgroup files are not resources",
        ));
    }
    if value.contains('\0') {
        return Err(CgroupError::invalid(
            field,
            value.escape_debug(),
            "contains a NUL byte",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn shares_to_weight_matches_crun() {
        let cases = [
            (0, 0),
            (1, 1),
            (2, 1),
            (128, 21),
            (512, 59),
            (1024, 100),
            (2048, 174),
            (4096, 303),
            (262_144, 10_000),
            (1_000_000, 10_000),
        ];
        for (shares, weight) in cases {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
        // Monotonic over the whole range.
        let mut last = 0;
        for s in (2..=262_144).step_by(97) {
            let w = shares_to_weight(s);
            assert!(w >= last && (1..=10_000).contains(&w));
            last = w;
        }
    }

    #[test]
    fn blkio_weight_conversion() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn swap_semantics() {
        const M: i64 = 1 << 20;
        assert_eq!(swap_v2(Some(64 * M), Some(96 * M)).unwrap(), Some(32 * M));
        assert_eq!(swap_v2(Some(64 * M), Some(64 * M)).unwrap(), Some(0));
        assert_eq!(swap_v2(Some(64 * M), Some(-1)).unwrap(), Some(-1));
        assert_eq!(swap_v2(Some(-1), None).unwrap(), Some(-1));
        assert_eq!(swap_v2(Some(64 * M), None).unwrap(), None);
        assert_eq!(swap_v2(None, None).unwrap(), None);
        assert!(swap_v2(Some(64 * M), Some(32 * M)).is_err());
        let e = swap_v2(None, Some(32 * M)).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("linux.resources.memory.swap: invalid value"),
            "{e}"
        );
        assert!(check_swap_v1(Some(64 * M), Some(32 * M)).is_err());
        assert!(check_swap_v1(Some(64 * M), Some(64 * M)).is_ok());
        assert!(check_swap_v1(Some(64 * M), Some(-1)).is_ok());
    }

    #[test]
    fn mem_values() {
        let f = "linux.resources.memory.limit";
        assert_eq!(mem_value(f, None).unwrap(), None);
        assert_eq!(mem_value(f, Some(0)).unwrap(), None);
        assert_eq!(mem_value(f, Some(-1)).unwrap(), Some(-1));
        assert_eq!(mem_value(f, Some(4096)).unwrap(), Some(4096));
        assert!(mem_value(f, Some(-2)).is_err());
        assert_eq!(max_str(-1), "max");
        assert_eq!(max_str(4096), "4096");
    }

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        mm: Option<(i64, i64)>,
        a: &str,
    ) -> DeviceRule {
        let mut b = LinuxDeviceCgroupBuilder::default().allow(allow).access(a);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some((ma, mi)) = mm {
            b = b.major(ma).minor(mi);
        }
        DeviceRule::from_oci(0, &b.build().unwrap()).unwrap()
    }

    #[test]
    fn device_rules() {
        let deny_all = rule(false, None, None, "rwm");
        assert_eq!(deny_all.to_string(), "a *:* rwm");
        assert!(deny_all.is_all());
        let null = rule(true, Some(LinuxDeviceType::C), Some((1, 3)), "wr");
        assert_eq!(null.to_string(), "c 1:3 rw");
        assert!(!null.is_all());
        let u = rule(true, Some(LinuxDeviceType::U), Some((5, 0)), "");
        assert_eq!(u.to_string(), "c 5:0 rwm");
        let fifo = LinuxDeviceCgroupBuilder::default()
            .typ(LinuxDeviceType::P)
            .build()
            .unwrap();
        let e = DeviceRule::from_oci(3, &fifo).unwrap_err();
        assert!(
            e.to_string().starts_with("linux.resources.devices[3].type"),
            "{e}"
        );
        let bad = LinuxDeviceCgroupBuilder::default()
            .access("rwx")
            .build()
            .unwrap();
        assert!(DeviceRule::from_oci(0, &bad).is_err());
        let big = LinuxDeviceCgroupBuilder::default()
            .major(1i64 << 32)
            .build()
            .unwrap();
        let e = DeviceRule::from_oci(2, &big).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("linux.resources.devices[2].major"),
            "{e}"
        );
        let max = LinuxDeviceCgroupBuilder::default()
            .typ(LinuxDeviceType::B)
            .major(i64::from(u32::MAX))
            .minor(-1)
            .build()
            .unwrap();
        assert_eq!(
            DeviceRule::from_oci(0, &max).unwrap().to_string(),
            "b 4294967295:* rwm"
        );
    }

    #[test]
    fn unified_keys() {
        assert!(check_unified_key("memory.high", "1000").is_ok());
        assert!(check_unified_key("cgroup.max.depth", "3").is_ok());
        for bad in [
            "",
            "memory",
            "../memory.max",
            "a/b.c",
            "cgroup.procs",
            ".x",
            "cgroup.kill",
        ] {
            assert!(check_unified_key(bad, "1").is_err(), "{bad:?}");
        }
        assert!(check_unified_key("memory.max", "1\0").is_err());
    }
}
