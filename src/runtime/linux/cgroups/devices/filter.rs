//! What an ordered list of device rules means: a default (allow or deny every device)
//! and exceptions to it, computed the way runc's devices emulator does
//! (opencontainers/cgroups `devices/devices_emulator.go`), which replays the rules the
//! way the cgroup v1 devices controller applies writes to `devices.allow` and
//! `devices.deny`:
//!
//! - the state starts as "deny every device" (the OCI list is an allowlist);
//! - a rule of type `a` resets everything: default allow (`allow: true`) or default
//!   deny, no exceptions; its numbers and access are ignored, as the kernel does;
//! - a rule whose action differs from the default adds an exception for its exact
//!   `type major:minor`, merging its access into an existing one;
//! - a rule whose action equals the default removes its access from the exception with
//!   exactly the same `type major:minor`, if there is one, and nothing else;
//! - a rule that would remove access from part of a wildcard exception (`c 1:3 w`
//!   while `c *:* rw` or `c 1:* w` is an exception) is refused: the v1 kernel silently
//!   keeps the wildcard whole, and runc refuses it rather than let a rule that does
//!   nothing look like it does something.
//!
//! A request (type, major, minor, access) is then decided like the v1 kernel does:
//! - default deny: allowed if one exception matches the device and grants *all* of the
//!   requested access;
//! - default allow: denied if one exception matches the device and names *any* of the
//!   requested access (`open(O_RDWR)` asks for read and write at once, and a denied
//!   write must deny it).
//!
//! [`DeviceFilter::allows`] is that decision; the eBPF program (`program.rs`) computes
//! the same one in the kernel, and the tests check the two against each other.

use std::collections::BTreeMap;
use std::fmt;

use super::super::convert::DeviceRule;
use super::super::error::CgroupError;

/// The device type of a request or an exception, numbered as the kernel's
/// `BPF_DEVCG_DEV_BLOCK` (1) and `BPF_DEVCG_DEV_CHAR` (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum DevType {
    Block = 1,
    Char = 2,
}

impl DevType {
    fn letter(self) -> char {
        match self {
            DevType::Block => 'b',
            DevType::Char => 'c',
        }
    }
}

/// A set of access modes: a bit mask with the values of the kernel's
/// `BPF_DEVCG_ACC_MKNOD` (1), `BPF_DEVCG_ACC_READ` (2) and `BPF_DEVCG_ACC_WRITE` (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);

    /// From a checked `rwm` subset (see [`DeviceRule`]); other letters are ignored.
    pub fn parse(s: &str) -> Self {
        let mut a = Access(0);
        for c in s.chars() {
            a = a.union(match c {
                'r' => Self::READ,
                'w' => Self::WRITE,
                'm' => Self::MKNOD,
                _ => Access(0),
            });
        }
        a
    }

    #[cfg(test)]
    pub const fn from_bits(bits: u8) -> Self {
        Access(bits & 7)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn union(self, o: Access) -> Self {
        Access(self.0 | o.0)
    }

    pub const fn minus(self, o: Access) -> Self {
        Access(self.0 & !o.0)
    }

    pub const fn intersects(self, o: Access) -> bool {
        self.0 & o.0 != 0
    }

    /// Every mode of `o` is in `self`.
    pub const fn covers(self, o: Access) -> bool {
        o.0 & !self.0 == 0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(Self::READ, 'r'), (Self::WRITE, 'w'), (Self::MKNOD, 'm')] {
            if self.covers(bit) {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// The devices an exception covers: one type, a major and a minor number, each
/// either a number or every number (`None`, `*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct DevMatch {
    pub typ: DevType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
}

impl DevMatch {
    #[cfg(test)]
    pub fn matches(&self, typ: DevType, major: u32, minor: u32) -> bool {
        self.typ == typ
            && self.major.is_none_or(|m| m == major)
            && self.minor.is_none_or(|m| m == minor)
    }
}

impl fmt::Display for DevMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        write!(
            f,
            "{} {}:{}",
            self.typ.letter(),
            n(self.major),
            n(self.minor)
        )
    }
}

/// The meaning of a device rule list: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceFilter {
    /// What happens to a device no exception matches.
    pub default_allow: bool,
    /// Devices that get the opposite of the default, with the access modes concerned.
    /// Never empty sets; ordered, so that the same rules always give the same program.
    pub exceptions: BTreeMap<DevMatch, Access>,
}

impl DeviceFilter {
    /// Replays `rules` (already checked one by one) from "deny every device". The
    /// only error is a rule that would punch a hole in a wildcard exception; it names
    /// the rule by its index in `linux.resources.devices`.
    pub fn compile(rules: &[DeviceRule]) -> Result<Self, CgroupError> {
        let mut f = DeviceFilter {
            default_allow: false,
            exceptions: BTreeMap::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            f.apply(i, rule)?;
        }
        Ok(f)
    }

    /// No device is denied anything: nothing to enforce.
    pub fn is_allow_all(&self) -> bool {
        self.default_allow && self.exceptions.is_empty()
    }

    /// Whether a request for `access` to device `typ major:minor` is allowed: the
    /// reference the program is tested against.
    #[cfg(test)]
    pub fn allows(&self, typ: DevType, major: u32, minor: u32, access: Access) -> bool {
        let mut matching = self
            .exceptions
            .iter()
            .filter(|(m, _)| m.matches(typ, major, minor));
        if self.default_allow {
            !matching.any(|(_, a)| a.intersects(access))
        } else {
            matching.any(|(_, a)| a.covers(access))
        }
    }

    fn apply(&mut self, index: usize, rule: &DeviceRule) -> Result<(), CgroupError> {
        if rule.is_all() {
            // The kernel resets the cgroup, whatever the numbers and access say.
            self.default_allow = rule.allow;
            self.exceptions.clear();
            return Ok(());
        }
        let typ = if rule.typ == 'b' {
            DevType::Block
        } else {
            DevType::Char
        };
        // DeviceRule::from_oci checked that the numbers fit the kernel's u32.
        let num = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
        let m = DevMatch {
            typ,
            major: num(rule.major),
            minor: num(rule.minor),
        };
        let access = Access::parse(&rule.access);
        if rule.allow != self.default_allow {
            let e = self.exceptions.entry(m).or_default();
            *e = e.union(access);
            return Ok(());
        }
        // Removal. Refuse to take access away from part of a wildcard exception.
        let wider = [
            DevMatch { major: None, ..m },
            DevMatch { minor: None, ..m },
            DevMatch {
                major: None,
                minor: None,
                ..m
            },
        ];
        for w in wider.iter().filter(|w| **w != m) {
            if let Some(a) = self.exceptions.get(w).filter(|a| a.intersects(access)) {
                let (verb, what) = if rule.allow {
                    ("allow", "denies")
                } else {
                    ("deny", "allows")
                };
                return Err(CgroupError::invalid(
                    format!("linux.resources.devices[{index}]"),
                    rule,
                    format!(
                        "cannot {verb} part of the wildcard exception {w} {a} that an earlier \
                         rule {what}: the device cgroup keeps a wildcard exception whole, so \
                         this rule would have no effect (list the devices one by one instead)"
                    ),
                ));
            }
        }
        if let Some(e) = self.exceptions.get_mut(&m) {
            *e = e.minus(access);
            if e.is_empty() {
                self.exceptions.remove(&m);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A rule from its devices.allow-style text, e.g. `"allow c 1:3 rw"`, `"deny a"`.
    pub(crate) fn rule(s: &str) -> DeviceRule {
        let mut words = s.split_whitespace();
        let allow = match words.next() {
            Some("allow") => true,
            Some("deny") => false,
            w => panic!("bad rule {s:?}: {w:?}"),
        };
        let typ = words.next().and_then(|t| t.chars().next()).unwrap();
        let (major, minor) = match words.next() {
            Some(mm) => {
                let (a, b) = mm.split_once(':').unwrap();
                let n = |v: &str| (v != "*").then(|| v.parse().unwrap());
                (n(a), n(b))
            }
            None => (None, None),
        };
        let access = words.next().unwrap_or("rwm").to_string();
        DeviceRule {
            allow,
            typ,
            major,
            minor,
            access,
        }
    }

    pub(crate) fn rules(list: &[&str]) -> Vec<DeviceRule> {
        list.iter().map(|s| rule(s)).collect()
    }

    fn compile(list: &[&str]) -> DeviceFilter {
        DeviceFilter::compile(&rules(list)).unwrap()
    }

    const C: DevType = DevType::Char;
    const B: DevType = DevType::Block;
    const R: Access = Access::READ;
    const W: Access = Access::WRITE;
    const M: Access = Access::MKNOD;
    const RW: Access = Access::READ.union(Access::WRITE);

    #[test]
    fn access_sets() {
        assert_eq!(Access::parse("rwm"), Access::ALL);
        assert_eq!(Access::parse("mr").to_string(), "rm");
        assert!(RW.covers(R) && !R.covers(RW) && RW.intersects(W));
        assert_eq!(Access::ALL.minus(W), Access::parse("rm"));
    }

    #[test]
    fn starts_denying_everything() {
        let f = compile(&[]);
        assert!(!f.default_allow && f.exceptions.is_empty());
        assert!(!f.allows(C, 1, 3, R));
        let f = compile(&["allow c 1:3 rw"]);
        assert!(f.allows(C, 1, 3, RW));
        assert!(!f.allows(C, 1, 3, M));
        assert!(!f.allows(C, 1, 5, R));
    }

    #[test]
    fn type_a_resets() {
        let f = compile(&["allow c 1:3 rw", "allow a"]);
        assert!(f.is_allow_all());
        let f = compile(&["allow a", "deny c 1:3 w", "deny a 1:3 r"]);
        assert!(!f.default_allow && f.exceptions.is_empty());
        assert!(!f.allows(C, 1, 3, R) && !f.allows(B, 8, 0, R));
    }

    #[test]
    fn the_default_spec_list() {
        // `corral spec` (runc's): deny all; plus the rules the runtime appends.
        let f = compile(&[
            "deny a",
            "allow c *:* m",
            "allow b *:* m",
            "allow c 1:3 rwm",
            "allow c 1:5 rwm",
            "allow c 136:* rwm",
        ]);
        assert!(!f.default_allow);
        assert!(f.allows(C, 1, 3, RW) && f.allows(C, 1, 5, R));
        assert!(f.allows(C, 136, 7, RW));
        assert!(f.allows(C, 10, 200, M) && f.allows(B, 8, 0, M));
        assert!(!f.allows(C, 10, 200, R) && !f.allows(B, 8, 0, W));
        assert!(!f.allows(C, 1, 1, R));
    }

    #[test]
    fn deny_list_denies_any_overlap() {
        let f = compile(&["allow a", "deny c 1:3 w", "deny b 8:* rwm"]);
        assert!(f.default_allow);
        assert!(f.allows(C, 1, 3, R));
        assert!(!f.allows(C, 1, 3, W));
        // O_RDWR asks for read and write together: the write part denies it.
        assert!(!f.allows(C, 1, 3, RW));
        assert!(!f.allows(B, 8, 1, R) && f.allows(B, 9, 1, R));
    }

    #[test]
    fn allow_list_needs_one_exception_covering_the_request() {
        let f = compile(&["deny a", "allow c 1:3 r", "allow c 1:* w"]);
        assert!(f.allows(C, 1, 3, R) && f.allows(C, 1, 3, W));
        // Like the v1 kernel: no single exception grants both.
        assert!(!f.allows(C, 1, 3, RW));
    }

    #[test]
    fn later_rules_take_access_away_exactly() {
        let f = compile(&["deny a", "allow c 1:3 rwm", "deny c 1:3 w"]);
        assert_eq!(f.exceptions.len(), 1);
        assert!(f.allows(C, 1, 3, R) && !f.allows(C, 1, 3, W) && !f.allows(C, 1, 3, RW));
        let f = compile(&["deny a", "allow c 1:3 rw", "deny c 1:3 rw"]);
        assert!(f.exceptions.is_empty());
        // Removing what is not there is a no-op, as in the kernel.
        let f = compile(&["deny a", "deny c 1:3 rw"]);
        assert!(f.exceptions.is_empty());
        let f = compile(&["allow a", "deny c 1:3", "allow c 1:3 r"]);
        assert!(f.allows(C, 1, 3, R) && !f.allows(C, 1, 3, W));
    }

    #[test]
    fn holes_in_wildcards_are_refused() {
        for list in [
            &["deny a", "allow c *:* rwm", "deny c 1:3 w"][..],
            &["deny a", "allow c 1:* r", "deny c 1:3 r"],
            &["deny a", "allow c *:3 m", "deny c 1:3 rwm"],
            &["allow a", "deny b *:* w", "allow b 8:0 rw"],
        ] {
            let e = DeviceFilter::compile(&rules(list)).unwrap_err().to_string();
            assert!(
                e.starts_with("linux.resources.devices[2]: invalid value"),
                "{list:?}: {e}"
            );
            assert!(e.contains("wildcard exception"), "{e}");
        }
        // No overlap in access, or the exact wildcard: fine.
        compile(&["deny a", "allow c *:* m", "deny c 1:3 w"]);
        compile(&["deny a", "allow c 1:* rw", "deny c 1:* w"]);
        // A narrower exception under a removed wildcard is kept (runc and the kernel
        // do the same: removal only touches the exact match).
        let f = compile(&["deny a", "allow c 1:3 rw", "deny c *:* w"]);
        assert!(f.allows(C, 1, 3, W));
    }
}
