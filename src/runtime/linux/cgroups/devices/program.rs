//! The `BPF_PROG_TYPE_CGROUP_DEVICE` program of a [`DeviceFilter`].
//!
//! The kernel runs it on every device access (open, mknod) by a process of the cgroup
//! (or of a cgroup below it) with a `struct bpf_cgroup_dev_ctx` in `R1`:
//!
//! ```text
//! struct bpf_cgroup_dev_ctx {
//!     __u32 access_type;  /* (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_* */
//!     __u32 major;
//!     __u32 minor;
//! };
//! ```
//!
//! and allows the access if it returns 1, refuses it (`EPERM`) if it returns 0. The
//! shape is runc's and crun's (from systemd): load the four values once, then one block
//! per exception that jumps to the next block at the first mismatch, else returns the
//! exception's verdict; the last block returns the default.
//!
//! ```text
//!     r2 = *(u32 *)(r1 + 0); w2 &= 0xffff     type
//!     r3 = *(u32 *)(r1 + 0); w3 >>= 16        access
//!     r4 = *(u32 *)(r1 + 4)                   major
//!     r5 = *(u32 *)(r1 + 8)                   minor
//! block i (exception i):
//!     if r2 != TYPE goto block i+1
//!     w1 = w3; w1 &= ACCESS                   (left out when ACCESS is rwm)
//!       default deny:  if r1 != r3 goto block i+1   (the exception grants all of it)
//!       default allow: if r1 == 0 goto block i+1    (the exception names some of it)
//!     if r4 != MAJOR goto block i+1           (left out for *)
//!     if r5 != MINOR goto block i+1           (left out for *)
//!     r0 = !DEFAULT; exit
//! block n:
//!     r0 = DEFAULT; exit
//! ```
//!
//! Two differences from runc's program: with a default of allow, an exception matches
//! a request that shares *any* access mode with it (runc requires all, so that
//! `open(O_RDWR)` passes a rule that denies only `w`); and a number above `i32::MAX` is
//! compared through a register loaded with a 32-bit move (an immediate operand of a
//! 64-bit jump is sign-extended, so it could never equal the zero-extended u32 field).

use super::filter::{Access, DeviceFilter};
use super::insn::{Insn, Reg};

/// The program for `filter`, or `None` when it allows everything (nothing to attach).
pub(crate) fn build(filter: &DeviceFilter) -> Option<Vec<Insn>> {
    if filter.is_allow_all() {
        return None;
    }
    let default = i32::from(filter.default_allow);
    let mut p = Vec::new();
    if !filter.exceptions.is_empty() {
        p.extend([
            Insn::load_u32(Reg::R2, Reg::R1, 0),
            Insn::and32_imm(Reg::R2, 0xffff),
            Insn::load_u32(Reg::R3, Reg::R1, 0),
            Insn::rsh32_imm(Reg::R3, 16),
            Insn::load_u32(Reg::R4, Reg::R1, 4),
            Insn::load_u32(Reg::R5, Reg::R1, 8),
        ]);
    }
    for (m, access) in &filter.exceptions {
        let start = p.len();
        p.push(Insn::jne_imm(Reg::R2, m.typ as i32, 0));
        if *access != Access::ALL {
            p.push(Insn::mov32_reg(Reg::R1, Reg::R3));
            p.push(Insn::and32_imm(Reg::R1, i32::from(access.bits())));
            p.push(if filter.default_allow {
                Insn::jeq_imm(Reg::R1, 0, 0)
            } else {
                Insn::jne_reg(Reg::R1, Reg::R3, 0)
            });
        }
        for (reg, value) in [(Reg::R4, m.major), (Reg::R5, m.minor)] {
            match value.map(|v| (v, i32::try_from(v))) {
                None => {}
                Some((_, Ok(v))) => p.push(Insn::jne_imm(reg, v, 0)),
                Some((v, Err(_))) => {
                    p.push(Insn::mov32_imm(Reg::R1, v));
                    p.push(Insn::jne_reg(reg, Reg::R1, 0));
                }
            }
        }
        p.push(Insn::mov64_imm(Reg::R0, 1 - default));
        p.push(Insn::exit());
        // Every jump of the block goes to the first instruction after it.
        let next = p.len();
        for (i, insn) in p.iter_mut().enumerate().skip(start) {
            if insn.is_cond_jump() {
                // A block has at most 10 instructions.
                insn.off = (next - i - 1) as i16;
            }
        }
    }
    p.push(Insn::mov64_imm(Reg::R0, default));
    p.push(Insn::exit());
    Some(p)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::filter::tests::rules;
    use super::super::filter::{DevType, DeviceFilter};
    use super::super::insn::{BPF_ALU, BPF_ALU64, BPF_JMP, BPF_LDX};
    use super::*;
    use proptest::prelude::*;

    /// Runs `prog` for one request, interpreting exactly the instructions [`build`]
    /// emits (anything else panics), with the kernel's semantics: 32-bit ALU results
    /// are zero-extended, jump immediates are sign-extended, `R1` starts as the context
    /// pointer and only 32-bit loads at offsets 0, 4 and 8 may read through it.
    pub(crate) fn run(prog: &[Insn], typ: DevType, major: u32, minor: u32, access: Access) -> u64 {
        let ctx = [(u32::from(access.bits()) << 16) | typ as u32, major, minor];
        let mut r = [0u64; 11];
        let mut r1_is_ctx = true;
        let mut pc = 0usize;
        for _ in 0..10_000 {
            let i = prog[pc];
            pc += 1;
            let (dst, src) = (i.dst() as usize, i.src() as usize);
            let operand = |r: &[u64; 11]| {
                if i.code & 0x08 != 0 {
                    r[src]
                } else {
                    i.imm as i64 as u64
                }
            };
            match (i.code & 0x07, i.code & 0xf0) {
                (BPF_LDX, 0x60) => {
                    assert!(src == 1 && r1_is_ctx, "load through a non-context register");
                    assert_eq!(i.code & 0x18, 0, "not a 32-bit load");
                    r[dst] = u64::from(ctx[usize::try_from(i.off / 4).unwrap()]);
                }
                (BPF_ALU, op) => {
                    let a = r[dst] as u32;
                    let b = operand(&r) as u32;
                    r[dst] = u64::from(match op {
                        0x50 => a & b,
                        0x70 => a >> b,
                        0xb0 => b,
                        _ => panic!("unexpected ALU op {op:#x}"),
                    });
                }
                (BPF_ALU64, 0xb0) => r[dst] = operand(&r),
                (BPF_JMP, 0x90) => return r[0],
                (BPF_JMP, op) => {
                    let taken = match op {
                        0x10 => r[dst] == operand(&r),
                        0x50 => r[dst] != operand(&r),
                        _ => panic!("unexpected jump op {op:#x}"),
                    };
                    if taken {
                        pc = (pc as isize + isize::from(i.off)) as usize;
                    }
                }
                (class, op) => panic!("unexpected instruction class {class:#x} op {op:#x}"),
            }
            if dst == 1 && i.code & 0x07 != BPF_JMP {
                r1_is_ctx = false;
            }
        }
        panic!("the program did not end");
    }

    fn program(list: &[&str]) -> (DeviceFilter, Option<Vec<Insn>>) {
        let f = DeviceFilter::compile(&rules(list)).unwrap();
        let p = build(&f);
        (f, p)
    }

    /// Every request over the given numbers (and their neighbours, and u32::MAX).
    fn agree(f: &DeviceFilter, prog: &[Insn], numbers: &[u32]) {
        let mut ns: Vec<u32> = numbers
            .iter()
            .flat_map(|n| [*n, n.wrapping_add(1), n.saturating_sub(1)])
            .chain([0, u32::MAX])
            .collect();
        ns.sort_unstable();
        ns.dedup();
        for typ in [DevType::Block, DevType::Char] {
            for &major in &ns {
                for &minor in &ns {
                    for bits in 1..=7 {
                        let a = Access::from_bits(bits);
                        let want = u64::from(f.allows(typ, major, minor, a));
                        let got = run(prog, typ, major, minor, a);
                        assert_eq!(got, want, "{typ:?} {major}:{minor} {a}: {f:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn allow_all_needs_no_program() {
        assert!(program(&["allow a"]).1.is_none());
        assert!(program(&["deny c 1:3", "allow a 1:3 r"]).1.is_none());
        assert!(
            program(&["allow a", "deny c 1:3 w", "allow c 1:3 w"])
                .1
                .is_none()
        );
    }

    #[test]
    fn deny_all_is_two_instructions() {
        let (_, p) = program(&["deny a"]);
        assert_eq!(
            p.unwrap(),
            [Insn::mov64_imm(Reg::R0, 0), Insn::exit()],
            "no exception: no loads"
        );
        let (_, p) = program(&[]);
        assert_eq!(p.unwrap().len(), 2);
    }

    #[test]
    fn the_layout_of_one_block() {
        let (_, p) = program(&["deny a", "allow c 1:3 rw"]);
        let p = p.unwrap();
        assert_eq!(
            p[6..],
            [
                Insn::jne_imm(Reg::R2, 2, 7),
                Insn::mov32_reg(Reg::R1, Reg::R3),
                Insn::and32_imm(Reg::R1, 6),
                Insn::jne_reg(Reg::R1, Reg::R3, 4),
                Insn::jne_imm(Reg::R4, 1, 3),
                Insn::jne_imm(Reg::R5, 3, 2),
                Insn::mov64_imm(Reg::R0, 1),
                Insn::exit(),
                Insn::mov64_imm(Reg::R0, 0),
                Insn::exit(),
            ]
        );
        // rwm and wildcards: only the type test.
        let (_, p) = program(&["deny a", "allow b *:* rwm"]);
        assert_eq!(p.unwrap().len(), 6 + 3 + 2);
    }

    #[test]
    fn decisions_match_the_filter() {
        let lists: &[&[&str]] = &[
            &["deny a"],
            &["deny a", "allow c 1:3 rwm"],
            &[
                "deny a",
                "allow c 1:3 r",
                "allow c 1:5 rw",
                "allow c 136:* rwm",
            ],
            &[
                "deny a",
                "allow c *:* m",
                "allow b *:* m",
                "allow c 1:3 rwm",
            ],
            &["allow a", "deny c 1:3 w"],
            &["allow a", "deny c 1:3 w", "deny b 8:* rwm", "deny c *:7 m"],
            &["deny a", "allow c 1:3 rwm", "deny c 1:3 w"],
            &["deny a", "allow c 1:3 r", "allow c 1:* w"],
            &["allow c 1:3 rw"],
            &[
                "deny a",
                "allow c 4294967295:4294967294 rw",
                "allow b 2147483648:* r",
            ],
            &["allow a", "deny c 2147483647:2147483648 w"],
        ];
        for list in lists {
            let (f, p) = program(list);
            let p = p.unwrap();
            let numbers: Vec<u32> = f
                .exceptions
                .keys()
                .flat_map(|m| [m.major, m.minor])
                .flatten()
                .collect();
            agree(&f, &p, &numbers);
        }
    }

    fn arb_rule() -> impl Strategy<Value = String> {
        let num = prop_oneof![Just("*".to_string()), (0u32..4).prop_map(|n| n.to_string())];
        (
            any::<bool>(),
            prop_oneof![Just('a'), Just('b'), Just('c'), Just('c')],
            num.clone(),
            num,
            1u8..=7,
        )
            .prop_map(|(allow, t, ma, mi, acc)| {
                let verb = if allow { "allow" } else { "deny" };
                format!("{verb} {t} {ma}:{mi} {}", Access::from_bits(acc))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// For any rule list the compiler accepts, the program decides every request as
        /// the filter does.
        #[test]
        fn programs_decide_as_their_filters(list in prop::collection::vec(arb_rule(), 0..8)) {
            let list: Vec<&str> = list.iter().map(String::as_str).collect();
            if let Ok(f) = DeviceFilter::compile(&rules(&list)) {
                match build(&f) {
                    None => prop_assert!(f.is_allow_all()),
                    Some(p) => agree(&f, &p, &[0, 1, 2, 3]),
                }
            }
        }
    }
}
