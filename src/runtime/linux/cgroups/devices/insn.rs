//! eBPF instruction encoding: the few instructions a device program needs, as the
//! kernel's `struct bpf_insn` (include/uapi/linux/bpf.h, Documentation/bpf/standardization/
//! instruction-set.rst):
//!
//! ```text
//! struct bpf_insn {
//!     __u8  code;        /* opcode: class | size/op | mode/source */
//!     __u8  dst_reg:4;   /* destination register */
//!     __u8  src_reg:4;   /* source register */
//!     __s16 off;         /* signed offset: memory offset, or jump distance */
//!     __s32 imm;         /* signed immediate */
//! };
//! ```
//!
//! Jump offsets count instructions from the one after the jump (`off = 0` falls through).

/// One eBPF instruction, laid out exactly as `struct bpf_insn` (8 bytes), so that a
/// `&[Insn]` can be handed to `BPF_PROG_LOAD` as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(super) struct Insn {
    pub code: u8,
    /// `dst_reg:4, src_reg:4`, as the C bitfield lays them out (see [`regs`]).
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == 8);

/// Registers: `R0` holds the return value, `R1` the context pointer on entry
/// (`struct bpf_cgroup_dev_ctx *`), `R2`..`R5` are free scratch registers here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Reg {
    R0 = 0,
    R1 = 1,
    R2 = 2,
    R3 = 3,
    R4 = 4,
    R5 = 5,
}

// Instruction classes (the low 3 bits of `code`).
/// Load into a register from memory (`dst = *(size *)(src + off)`).
pub(super) const BPF_LDX: u8 = 0x01;
/// 32-bit arithmetic: operates on the low halves and zeroes the upper 32 bits of `dst`.
pub(super) const BPF_ALU: u8 = 0x04;
/// 64-bit jumps (compare whole registers; an immediate is sign-extended to 64 bits).
pub(super) const BPF_JMP: u8 = 0x05;
/// 64-bit arithmetic.
pub(super) const BPF_ALU64: u8 = 0x07;

// Load size and mode (for BPF_LDX).
/// 32-bit word.
pub(super) const BPF_W: u8 = 0x00;
/// Memory at `src + off`.
pub(super) const BPF_MEM: u8 = 0x60;

// Operand source (for ALU and JMP).
/// The operand is `imm`.
pub(super) const BPF_K: u8 = 0x00;
/// The operand is register `src`.
pub(super) const BPF_X: u8 = 0x08;

// ALU operations.
pub(super) const BPF_AND: u8 = 0x50;
pub(super) const BPF_RSH: u8 = 0x70;
pub(super) const BPF_MOV: u8 = 0xb0;

// JMP operations.
/// Jump if `dst == operand`.
pub(super) const BPF_JEQ: u8 = 0x10;
/// Jump if `dst != operand`.
pub(super) const BPF_JNE: u8 = 0x50;
/// Return `R0` to the caller.
pub(super) const BPF_EXIT: u8 = 0x90;

/// The `dst_reg:4, src_reg:4` byte. C bitfields are allocated from the least
/// significant bit on little-endian targets and from the most significant one on
/// big-endian ones, which is how the kernel's own headers read it.
const fn regs(dst: Reg, src: Reg) -> u8 {
    let (dst, src) = (dst as u8, src as u8);
    if cfg!(target_endian = "little") {
        dst | (src << 4)
    } else {
        (dst << 4) | src
    }
}

const fn insn(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: regs(dst, src),
        off,
        imm,
    }
}

impl Insn {
    /// `dst = *(u32 *)(src + off)` (zero-extended to 64 bits).
    pub const fn load_u32(dst: Reg, src: Reg, off: i16) -> Self {
        insn(BPF_LDX | BPF_W | BPF_MEM, dst, src, off, 0)
    }

    /// `w(dst) &= imm` (32-bit).
    pub const fn and32_imm(dst: Reg, imm: i32) -> Self {
        insn(BPF_ALU | BPF_AND | BPF_K, dst, Reg::R0, 0, imm)
    }

    /// `w(dst) >>= imm` (32-bit, logical).
    pub const fn rsh32_imm(dst: Reg, imm: i32) -> Self {
        insn(BPF_ALU | BPF_RSH | BPF_K, dst, Reg::R0, 0, imm)
    }

    /// `w(dst) = w(src)` (32-bit: the upper half of `dst` becomes 0).
    pub const fn mov32_reg(dst: Reg, src: Reg) -> Self {
        insn(BPF_ALU | BPF_MOV | BPF_X, dst, src, 0, 0)
    }

    /// `dst = (u32)imm`: a 32-bit move, so the value is zero-extended, not
    /// sign-extended. This is how a number above `i32::MAX` gets into a register intact.
    pub const fn mov32_imm(dst: Reg, imm: u32) -> Self {
        insn(BPF_ALU | BPF_MOV | BPF_K, dst, Reg::R0, 0, imm as i32)
    }

    /// `dst = imm` (64-bit; `imm` sign-extended).
    pub const fn mov64_imm(dst: Reg, imm: i32) -> Self {
        insn(BPF_ALU64 | BPF_MOV | BPF_K, dst, Reg::R0, 0, imm)
    }

    /// `if dst != (s64)imm goto +off`.
    pub const fn jne_imm(dst: Reg, imm: i32, off: i16) -> Self {
        insn(BPF_JMP | BPF_JNE | BPF_K, dst, Reg::R0, off, imm)
    }

    /// `if dst == (s64)imm goto +off`.
    pub const fn jeq_imm(dst: Reg, imm: i32, off: i16) -> Self {
        insn(BPF_JMP | BPF_JEQ | BPF_K, dst, Reg::R0, off, imm)
    }

    /// `if dst != src goto +off`.
    pub const fn jne_reg(dst: Reg, src: Reg, off: i16) -> Self {
        insn(BPF_JMP | BPF_JNE | BPF_X, dst, src, off, 0)
    }

    /// `return R0`.
    pub const fn exit() -> Self {
        insn(BPF_JMP | BPF_EXIT, Reg::R0, Reg::R0, 0, 0)
    }

    #[cfg(test)]
    pub fn dst(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs & 0x0f
        } else {
            self.regs >> 4
        }
    }

    #[cfg(test)]
    pub fn src(&self) -> u8 {
        if cfg!(target_endian = "little") {
            self.regs >> 4
        } else {
            self.regs & 0x0f
        }
    }

    /// Whether this is a jump with an offset (to be patched by the program builder).
    pub fn is_cond_jump(&self) -> bool {
        self.code & 0x07 == BPF_JMP && matches!(self.code & 0xf0, BPF_JEQ | BPF_JNE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings checked against the kernel's macros (BPF_LDX_MEM, BPF_ALU32_IMM, ...)
    /// as printed by `bpftool prog dump xlated opcodes` / llvm-objdump for the same
    /// instructions.
    #[test]
    fn encodings() {
        let bytes = |i: Insn| -> [u8; 8] {
            let mut b = [0u8; 8];
            b[0] = i.code;
            b[1] = i.regs;
            b[2..4].copy_from_slice(&i.off.to_ne_bytes());
            b[4..8].copy_from_slice(&i.imm.to_ne_bytes());
            b
        };
        if cfg!(target_endian = "little") {
            // r2 = *(u32 *)(r1 + 0)
            assert_eq!(
                bytes(Insn::load_u32(Reg::R2, Reg::R1, 0)),
                [0x61, 0x12, 0, 0, 0, 0, 0, 0]
            );
            // r4 = *(u32 *)(r1 + 4)
            assert_eq!(
                bytes(Insn::load_u32(Reg::R4, Reg::R1, 4)),
                [0x61, 0x14, 4, 0, 0, 0, 0, 0]
            );
            // w2 &= 0xffff
            assert_eq!(
                bytes(Insn::and32_imm(Reg::R2, 0xffff)),
                [0x54, 0x02, 0, 0, 0xff, 0xff, 0, 0]
            );
            // w3 >>= 16
            assert_eq!(
                bytes(Insn::rsh32_imm(Reg::R3, 16)),
                [0x74, 0x03, 0, 0, 16, 0, 0, 0]
            );
            // w1 = w3
            assert_eq!(
                bytes(Insn::mov32_reg(Reg::R1, Reg::R3)),
                [0xbc, 0x31, 0, 0, 0, 0, 0, 0]
            );
            // if r2 != 2 goto +5
            assert_eq!(
                bytes(Insn::jne_imm(Reg::R2, 2, 5)),
                [0x55, 0x02, 5, 0, 2, 0, 0, 0]
            );
            // if r1 == 0 goto +4
            assert_eq!(
                bytes(Insn::jeq_imm(Reg::R1, 0, 4)),
                [0x15, 0x01, 4, 0, 0, 0, 0, 0]
            );
            // if r1 != r3 goto +3
            assert_eq!(
                bytes(Insn::jne_reg(Reg::R1, Reg::R3, 3)),
                [0x5d, 0x31, 3, 0, 0, 0, 0, 0]
            );
            // r0 = 1
            assert_eq!(
                bytes(Insn::mov64_imm(Reg::R0, 1)),
                [0xb7, 0x00, 0, 0, 1, 0, 0, 0]
            );
            // w1 = 0xffffffff
            assert_eq!(
                bytes(Insn::mov32_imm(Reg::R1, u32::MAX)),
                [0xb4, 0x01, 0, 0, 0xff, 0xff, 0xff, 0xff]
            );
            // exit
            assert_eq!(bytes(Insn::exit()), [0x95, 0, 0, 0, 0, 0, 0, 0]);
        }
        let j = Insn::jne_reg(Reg::R4, Reg::R1, -2);
        assert_eq!((j.dst(), j.src(), j.off), (4, 1, -2));
        assert!(j.is_cond_jump() && Insn::jne_imm(Reg::R2, 1, 0).is_cond_jump());
        assert!(!Insn::exit().is_cond_jump());
    }
}
