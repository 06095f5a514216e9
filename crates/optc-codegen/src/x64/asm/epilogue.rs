//! The epilogue a kernel applies to its tile before the store: bias, activation, residual,
//! scale, in order.

use super::int8::QuantizeStore;
use crate::ops::transcendental::{
    ERF_CLAMP, ERF_P, ERF_Q, EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC, EXP_OVERFLOW,
    EXP_POLY, TANH_POLY, TANH_SMALL,
};
use iced_x86::code_asm::*;
use optc_ir::linear_quantization::fake_quantize_bounds;
use optc_ir::{GELU_ERF_SCALE, GELU_TANH_CUBE, GELU_TANH_SCALE};
use std::f32::consts::LOG2_E;

/// One epilogue step, applied to the whole tile in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Epilogue {
    /// `+= bias[row]`
    BiasRow,
    /// `+= bias[col]`
    BiasCol,
    /// `max(x, 0)`
    Relu,
    /// `min(max(x, lo), hi)` (f32 bit patterns)
    Clip(u32, u32),
    /// `+= res[row][col]`
    Residual,
    /// `*= s` (f32 bit pattern)
    Scale(u32),
    /// `x * clamp(x / 6 + 0.5, 0, 1)`, rounded as the interpreter does (a division, an
    /// addition, the clamp, a multiplication). GEMM microkernels only (see
    /// [`Epilogue::gemm_only`]).
    HardSwish,
    /// `x * sigmoid(x)` (SiLU), the sigmoid as `Emitter::sigmoid` computes it (`exp` by
    /// Cody-Waite reduction and a degree-7 polynomial, then `1 / (1 + e)`). AVX-512 GEMM
    /// microkernels only.
    Silu,
    /// GELU (erf form) as `UnaryOp::Gelu` defines it, the erf as `Emitter::erf` computes it
    /// (the rational minimax on the argument clamped to [-4, 4]): `x * (1 + erf(x r)) * 0.5`.
    /// AVX-512 GEMM and int8 microkernels only.
    Gelu,
    /// GELU (tanh form) as `UnaryOp::GeluTanh` defines it, the cube as `(x x) x` and the
    /// tanh as `Emitter::tanh` computes them (the odd polynomial below 0.625, `1 - 2 / (exp(2
    /// |z|) + 1)` with the sign of `z` above): `(x 0.5) (1 + tanh((x + x^3 c) k))`. AVX-512
    /// GEMM and int8 microkernels only.
    GeluTanh,
    /// A QDQ pair's requantization, as `UnaryOp::FakeQuantize` rounds it (f32 bit patterns of
    /// the scale and the zero point): `(min(max(round_half_even(x / scale) + zero, lo), hi) -
    /// zero) * scale`, `[lo, hi]` the i8 or u8 range, NaN giving `lo`. The AVX-512 int8
    /// kernels only (VNNI and AMX: `kernel_plan::tile_steps` with `fake_quantize`).
    FakeQuantize { scale: u32, zero: u32, signed: bool },
}

/// A fake-quantize step on `x` (zmm), `t` scratch, `c` = the scale, the zero point and the
/// clamp bounds broadcast: the operations of the generic lowering (`ops/math.rs`), in order:
/// a division, rounding half to even, the zero point added, `max` with the low bound (which
/// `vmaxps` returns for a NaN: its second operand), `min` with the high one, the zero point
/// subtracted, the scale multiplied.
pub(crate) fn fake_quantize(
    a: &mut CodeAssembler,
    x: AsmRegisterZmm,
    t: AsmRegisterZmm,
    c: [AsmRegisterZmm; 4],
) -> Result<(), IcedError> {
    let [scale, zero, lo, hi] = c;
    a.vdivps(t, x, scale)?;
    a.vrndscaleps(t, t, 0)?;
    a.vaddps(t, t, zero)?;
    a.vmaxps(t, t, lo)?;
    a.vminps(t, t, hi)?;
    a.vsubps(t, t, zero)?;
    a.vmulps(x, t, scale)
}

/// The constants of a fake-quantize step broadcast into `regs` (the scale, the zero point, the
/// clamp bounds: [`fake_quantize`]'s `c`), placed by `konst`.
pub(crate) fn fake_quantize_constants(
    a: &mut CodeAssembler,
    (scale, zero, signed): (u32, u32, bool),
    regs: [AsmRegisterZmm; 4],
    konst: &mut dyn FnMut(&mut CodeAssembler, u32) -> CodeLabel,
) -> Result<(), IcedError> {
    let (lo, hi) = fake_quantize_bounds(signed);
    let bits = [scale, zero, (lo as f32).to_bits(), (hi as f32).to_bits()];
    for (r, b) in regs.into_iter().zip(bits) {
        let l = konst(a, b);
        a.vbroadcastss(r, dword_ptr(l))?;
    }
    Ok(())
}

/// The constants of a u8 tile store ([`QuantizeStore`]) broadcast into `regs`: the inverse
/// scale, the zero point, 0 and 255 ([`quantize_to_bytes`]'s `c`), placed by `konst`.
pub(crate) fn quantize_store_constants(
    a: &mut CodeAssembler,
    store: QuantizeStore,
    regs: [AsmRegisterZmm; 4],
    konst: &mut dyn FnMut(&mut CodeAssembler, u32) -> CodeLabel,
) -> Result<(), IcedError> {
    let bits = [store.inverse, store.zero, 0f32.to_bits(), 255f32.to_bits()];
    for (r, b) in regs.into_iter().zip(bits) {
        let l = konst(a, b);
        a.vbroadcastss(r, dword_ptr(l))?;
    }
    Ok(())
}

/// `x` (f32) to i32 in 0..=255 as `optc_ir::QuantParams::quantize` has it, `c` =
/// [`quantize_store_constants`]: a multiply by the inverse scale, rounding half to even, the
/// zero point added, `max` with 0 (which `vmaxps` returns for a NaN: its second operand),
/// `min` with 255, then the (exact) conversion. The u8 store follows (`vpmovusdb`).
pub(crate) fn quantize_to_bytes(
    a: &mut CodeAssembler,
    x: AsmRegisterZmm,
    c: [AsmRegisterZmm; 4],
) -> Result<(), IcedError> {
    let [inverse, zero, lo, hi] = c;
    a.vmulps(x, x, inverse)?;
    a.vrndscaleps(x, x, 0)?;
    a.vaddps(x, x, zero)?;
    a.vmaxps(x, x, lo)?;
    a.vminps(x, x, hi)?;
    a.vcvttps2dq(x, x)
}

impl Epilogue {
    /// Whether only the GEMM microkernels (AVX2 and AVX-512) apply this step: the sparse,
    /// Winograd, depthwise and direct-conv kernels end their epilogue before it, and the
    /// steps from there run after their tiles.
    pub fn gemm_only(&self) -> bool {
        matches!(
            self,
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh
        )
    }
}

/// An activation step of the AVX-512 microkernels (HardSwish, SiLU, the GELUs) with its constants,
/// placed once per kernel ([`Activation::new`]) and then applied to each tile register
/// ([`Activation::apply`]): the same instructions, so the same bits, in the f32 GEMM and the
/// int8 kernels, and the generic lowering's operations in its order.
pub(crate) struct Activation {
    step: Epilogue,
    /// The constants' labels, in the order `apply` reads them.
    consts: Vec<CodeLabel>,
}

impl Activation {
    /// The step's constants placed by `konst`; `None` for a step that is not an activation.
    pub fn new(
        a: &mut CodeAssembler,
        step: Epilogue,
        konst: &mut dyn FnMut(&mut CodeAssembler, u32) -> CodeLabel,
    ) -> Option<Activation> {
        let f = |v: &[f32]| -> Vec<u32> { v.iter().map(|v| v.to_bits()).collect() };
        let bits: Vec<u32> = match step {
            Epilogue::HardSwish => f(&[6.0, 0.5, 0.0, 1.0, SIXTH, SIXTH_FROM]),
            Epilogue::Silu => {
                let mut v = f(&[-1.0]);
                v.extend(exp_constants());
                v
            }
            Epilogue::Gelu => {
                let mut v = vec![GELU_ERF_SCALE, ERF_CLAMP, -ERF_CLAMP];
                v.extend(ERF_P);
                v.extend(ERF_Q);
                v.extend([1.0, 0.5]);
                f(&v)
            }
            Epilogue::GeluTanh => gelu_tanh_constants(),
            _ => return None,
        };
        let consts = bits.into_iter().map(|b| konst(a, b)).collect();
        Some(Activation { step, consts })
    }

    /// The step on `x` in place; `s` scratch registers (not `x`).
    pub fn apply(
        &self,
        a: &mut CodeAssembler,
        x: AsmRegisterZmm,
        s: [AsmRegisterZmm; 5],
    ) -> Result<(), IcedError> {
        let c = |i: usize| dword_bcst(self.consts[i]);
        let load = |a: &mut CodeAssembler, r: AsmRegisterZmm, i: usize| {
            a.vbroadcastss(r, dword_ptr(self.consts[i]))
        };
        match self.step {
            Epilogue::HardSwish => {
                // t = clamp(x / 6 + 0.5, 0, 1) (the clamps take their bound second: a NaN t
                // only comes from a NaN x, which the product keeps); x *= t. The quotient
                // without a division ([`sixth`]): y = min(x, 4) (a NaN x gives 4, the
                // product keeps the NaN), q = y / 6 by a product and two FMAs (the remainder
                // in y's register).
                a.vminps(s[0], x, c(5))?;
                a.vmulps(s[1], s[0], c(4))?;
                a.vfnmadd231ps(s[0], s[1], c(0))?;
                a.vfmadd231ps(s[1], s[0], c(4))?;
                a.vaddps(s[0], s[1], c(1))?;
                a.vmaxps(s[0], s[0], c(2))?;
                a.vminps(s[0], s[0], c(3))?;
                a.vmulps(x, x, s[0])
            }
            Epilogue::Silu => {
                let one = SILU_EXP + exp_at::ONE;
                // s0 = -x; s1 = e = exp(-x).
                a.vmulps(s[0], x, c(0))?;
                exp(a, (s[0], s[1]), [s[2], s[3], s[4]], SILU_EXP, &c, &load)?;
                // x / (1 + e), as x * (1 / (1 + e)).
                a.vaddps(s[1], s[1], c(one))?;
                load(a, s[2], one)?;
                a.vdivps(s[1], s[2], s[1])?;
                a.vmulps(x, x, s[1])
            }
            Epilogue::Gelu => {
                let p = 3..3 + ERF_P.len();
                let q = p.end..p.end + ERF_Q.len();
                let [one, half] = [q.end, q.end + 1];
                // s0 = z = clamp(x r, -4, 4) (a NaN z comes from a NaN x, which the product
                // keeps); s1 = z^2.
                a.vmulps(s[0], x, c(0))?;
                a.vminps(s[0], s[0], c(1))?;
                a.vmaxps(s[0], s[0], c(2))?;
                a.vmulps(s[1], s[0], s[0])?;
                // s2 = P(z^2), s0 = z P; s2 = Q(z^2) (Horner); s0 = erf = z P / Q.
                load(a, s[2], p.start)?;
                for k in p.start + 1..p.end {
                    a.vfmadd213ps(s[2], s[1], c(k))?;
                }
                a.vmulps(s[0], s[0], s[2])?;
                load(a, s[2], q.start)?;
                for k in q.start + 1..q.end {
                    a.vfmadd213ps(s[2], s[1], c(k))?;
                }
                a.vdivps(s[0], s[0], s[2])?;
                // x = (x (erf + 1)) 0.5.
                a.vaddps(s[0], s[0], c(one))?;
                a.vmulps(x, x, s[0])?;
                a.vmulps(x, x, c(half))
            }
            Epilogue::GeluTanh => gelu_tanh(a, x, s, &c, &load),
            _ => unreachable!("not an activation step"),
        }
    }
}

/// `1 / 6` rounded to f32.
const SIXTH: f32 = 1.0 / 6.0;
/// HardSwish's `t` is 1 from `x = 3` on: its quotient is taken of `min(x, SIXTH_FROM)`, so an
/// infinite `x` (whose remainder below would be NaN) gives `t = 1` as the division does.
const SIXTH_FROM: f32 = 4.0;

/// `y / 6` as HardSwish's epilogue computes it without a division (a `vdivps` is several
/// times the cost of an FMA, on one port): `q = y (1/6)`, the remainder `r = y - 6 q`
/// (exact, one FMA), `q + r (1/6)` (one FMA). Checked for every f32 `y` (a C program over
/// all 2^32 patterns): the correctly rounded quotient `y / 6` wherever that is normal (every
/// mantissa at three exponents in `tests::sixth_is_the_quotient` repeats the check); where it
/// is subnormal (|y| < 6 2^-126) it may differ in its last bits, which `t = q + 0.5` rounds
/// away (0.5 either way). So the epilogue's HardSwish has the bits of the generic
/// lowering's, which divides.
#[cfg(test)]
fn sixth(y: f32) -> f32 {
    let q = y * SIXTH;
    let r = (-q).mul_add(6.0, y);
    r.mul_add(SIXTH, q)
}

/// Where [`exp`] finds each constant in its block of an activation's constants
/// ([`exp_constants`]).
mod exp_at {
    pub const HI: usize = 0;
    pub const LO: usize = 1;
    pub const MAGIC: usize = 2;
    pub const LOG2E: usize = 3;
    pub const LN2_HI: usize = 4;
    pub const LN2_LO: usize = 5;
    pub const POLY: usize = 6;
    pub const ONE: usize = POLY + super::EXP_POLY.len();
    pub const OVERFLOW: usize = ONE + 1;
    pub const INFINITY: usize = ONE + 2;
    pub const BIAS: usize = ONE + 3;
}

/// The bits of [`exp`]'s constants, in [`exp_at`]'s order (the exponent bias an integer).
fn exp_constants() -> Vec<u32> {
    let mut v: Vec<u32> = [EXP_HI, EXP_LO, EXP_MAGIC, LOG2_E, EXP_LN2_HI, EXP_LN2_LO]
        .iter()
        .chain(&EXP_POLY)
        .chain(&[1.0, EXP_OVERFLOW, f32::INFINITY])
        .map(|v| v.to_bits())
        .collect();
    v.push((0x4B40_0000 - 126) as u32);
    v
}

/// `dst = exp(src)` as `Emitter::exp` computes it (`src` kept unless it is `dst`): k7 =
/// where `src` is past the overflow bound; the clamp; `t = xc log2(e) + magic`, `n = t -
/// magic`; `r = xc - n ln 2` (two steps); `p = poly(r)` (Horner); `y = p r^2 + (r + 1)`;
/// times 2^(n-1) from t's bits, doubled; infinite where k7. Scratch `[t, n, p]`; `at` the
/// exp block's offset in the activation's constants, `c` and `load` as in `apply`.
fn exp(
    a: &mut CodeAssembler,
    (src, dst): (AsmRegisterZmm, AsmRegisterZmm),
    [t, n, p]: [AsmRegisterZmm; 3],
    at: usize,
    c: &dyn Fn(usize) -> AsmMemoryOperand,
    load: &dyn Fn(&mut CodeAssembler, AsmRegisterZmm, usize) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    a.vcmpps(k7, src, c(at + exp_at::OVERFLOW), 0x1e)?;
    a.vminps(dst, src, c(at + exp_at::HI))?;
    a.vmaxps(dst, dst, c(at + exp_at::LO))?;
    load(a, t, at + exp_at::MAGIC)?;
    a.vfmadd231ps(t, dst, c(at + exp_at::LOG2E))?;
    a.vsubps(n, t, c(at + exp_at::MAGIC))?;
    a.vfmadd231ps(dst, n, c(at + exp_at::LN2_HI))?;
    a.vfmadd231ps(dst, n, c(at + exp_at::LN2_LO))?;
    load(a, p, at + exp_at::POLY)?;
    for k in at + exp_at::POLY + 1..at + exp_at::ONE {
        a.vfmadd213ps(p, dst, c(k))?;
    }
    a.vmulps(n, dst, dst)?;
    a.vaddps(dst, dst, c(at + exp_at::ONE))?;
    a.vfmadd231ps(dst, p, n)?;
    a.vpsubd(t, t, c(at + exp_at::BIAS))?;
    a.vpslld(t, t, 23)?;
    a.vmulps(dst, dst, t)?;
    a.vaddps(dst, dst, dst)?;
    load(a, dst.k7(), at + exp_at::INFINITY)
}

/// Where SiLU's exp block starts (after -1).
const SILU_EXP: usize = 1;

/// Where [`gelu_tanh`] finds each constant in the activation's list
/// ([`gelu_tanh_constants`]): its own, then tanh's polynomial, then exp's block.
mod tanh_gelu_at {
    pub const HALF: usize = 0;
    pub const CUBE: usize = 1;
    pub const SCALE: usize = 2;
    pub const ABS: usize = 3;
    pub const SMALL: usize = 4;
    pub const TWO: usize = 5;
    pub const SIGN: usize = 6;
    pub const TANH_POLY: usize = 7;
    pub const EXP: usize = TANH_POLY + super::TANH_POLY.len();
    pub const ONE: usize = EXP + super::exp_at::ONE;
}

/// The bits of the tanh GELU's constants, in [`tanh_gelu_at`]'s order.
fn gelu_tanh_constants() -> Vec<u32> {
    let mut v: Vec<u32> = [
        0.5,
        GELU_TANH_CUBE,
        GELU_TANH_SCALE,
        f32::from_bits(0x7fff_ffff),
        TANH_SMALL,
        2.0,
        f32::from_bits(0x8000_0000),
    ]
    .iter()
    .chain(&TANH_POLY)
    .map(|v| v.to_bits())
    .collect();
    v.extend(exp_constants());
    v
}

/// The tanh GELU on `x` in place, five scratch registers, mask k7 (free in every kernel that
/// applies activations): the generic lowering's operations in its order (`ops/math.rs`,
/// `Emitter::tanh`, `Emitter::exp`), so the same bits. `c(i)` is constant `i` broadcast from
/// memory, `load` puts it in a register.
fn gelu_tanh(
    a: &mut CodeAssembler,
    x: AsmRegisterZmm,
    s: [AsmRegisterZmm; 5],
    c: &dyn Fn(usize) -> AsmMemoryOperand,
    load: &dyn Fn(&mut CodeAssembler, AsmRegisterZmm, usize) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    use tanh_gelu_at as at;
    let [z, e, t, n, p] = s;
    // z = (x + (x x) x c) k.
    a.vmulps(z, x, x)?;
    a.vmulps(z, z, x)?;
    a.vmulps(z, z, c(at::CUBE))?;
    a.vaddps(z, x, z)?;
    a.vmulps(z, z, c(at::SCALE))?;
    // e = exp(2 |z|).
    a.vpandd(e, z, c(at::ABS))?;
    a.vaddps(e, e, e)?;
    exp(a, (e, e), [t, n, p], at::EXP, c, load)?;
    // e = 1 - 2 / (e + 1) with the sign of z.
    a.vaddps(e, e, c(at::ONE))?;
    load(a, t, at::TWO)?;
    a.vdivps(e, t, e)?;
    load(a, t, at::ONE)?;
    a.vsubps(e, t, e)?;
    a.vpandd(t, z, c(at::SIGN))?;
    a.vpord(e, e, t)?;
    // Where |z| < 0.625: p = poly(z^2) z^2 z + z.
    a.vmulps(n, z, z)?;
    load(a, p, at::TANH_POLY)?;
    for k in at::TANH_POLY + 1..at::TANH_POLY + TANH_POLY.len() {
        a.vfmadd213ps(p, n, c(k))?;
    }
    a.vmulps(p, p, n)?;
    a.vfmadd213ps(p, z, z)?;
    a.vpandd(n, z, c(at::ABS))?;
    load(a, t, at::SMALL)?;
    a.vcmpps(k7, t, n, 0x1e)?;
    a.vmovups(e.k7(), p)?;
    // x = (x 0.5) (tanh + 1).
    a.vaddps(e, e, c(at::ONE))?;
    a.vmulps(x, x, c(at::HALF))?;
    a.vmulps(x, x, e)
}

/// The epilogue's part of a kernel symbol.
pub(crate) fn epilogue_symbol(epilogue: &[Epilogue]) -> String {
    let mut s = String::new();
    for e in epilogue {
        match e {
            Epilogue::BiasRow => s.push_str("_br"),
            Epilogue::BiasCol => s.push_str("_bc"),
            Epilogue::Relu => s.push_str("_relu"),
            Epilogue::Clip(a, b) => s.push_str(&format!("_clip{a:08x}{b:08x}")),
            Epilogue::Residual => s.push_str("_res"),
            Epilogue::Scale(a) => s.push_str(&format!("_s{a:08x}")),
            Epilogue::HardSwish => s.push_str("_hswish"),
            Epilogue::Silu => s.push_str("_silu"),
            Epilogue::Gelu => s.push_str("_gelu"),
            Epilogue::GeluTanh => s.push_str("_gelutanh"),
            Epilogue::FakeQuantize {
                scale,
                zero,
                signed,
            } => s.push_str(&format!(
                "_fq{scale:08x}{zero:08x}{}",
                if *signed { "s" } else { "u" }
            )),
        }
    }
    s
}

/// A pointwise epilogue step (Relu, Clip, Scale, HardSwish) on `regs`, with `tmp` as scratch
/// and `konst` placing f32 constants after the code (the AVX2 GEMM, depthwise and
/// direct-conv kernels; a bias or residual step is the kernel's own).
pub(crate) fn epilogue_pointwise(
    a: &mut CodeAssembler,
    epilogue: Epilogue,
    regs: &[AsmRegisterYmm],
    tmp: AsmRegisterYmm,
    konst: &mut dyn FnMut(&mut CodeAssembler, u32) -> CodeLabel,
) -> Result<(), IcedError> {
    match epilogue {
        Epilogue::Relu => {
            a.vxorps(tmp, tmp, tmp)?;
            for &r in regs {
                a.vmaxps(r, tmp, r)?;
            }
        }
        Epilogue::Clip(lo, hi) => {
            let llo = konst(a, lo);
            let lhi = konst(a, hi);
            a.vbroadcastss(tmp, dword_ptr(llo))?;
            for &r in regs {
                a.vmaxps(r, tmp, r)?;
            }
            a.vbroadcastss(tmp, dword_ptr(lhi))?;
            for &r in regs {
                a.vminps(r, tmp, r)?;
            }
        }
        Epilogue::Scale(sc) => {
            let l = konst(a, sc);
            a.vbroadcastss(tmp, dword_ptr(l))?;
            for &r in regs {
                a.vmulps(r, r, tmp)?;
            }
        }
        Epilogue::HardSwish => {
            // t = clamp(x / 6 + 0.5, 0, 1) (8-float constants; the clamps take their bound
            // second: a NaN t only comes from a NaN x, which the product keeps); x *= t.
            let mut vector = |a: &mut CodeAssembler, v: f32| {
                let l = konst(a, v.to_bits());
                for _ in 1..8 {
                    konst(a, v.to_bits());
                }
                ymmword_ptr(l)
            };
            let (six, half, zero, one) = (
                vector(a, 6.0),
                vector(a, 0.5),
                vector(a, 0.0),
                vector(a, 1.0),
            );
            for &r in regs {
                a.vdivps(tmp, r, six)?;
                a.vaddps(tmp, tmp, half)?;
                a.vmaxps(tmp, tmp, zero)?;
                a.vminps(tmp, tmp, one)?;
                a.vmulps(r, r, tmp)?;
            }
        }
        Epilogue::BiasRow | Epilogue::BiasCol | Epilogue::Residual => {
            unreachable!("not a pointwise epilogue step")
        }
        Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh | Epilogue::FakeQuantize { .. } => {
            unreachable!("an AVX-512 GEMM-only epilogue step")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mantissa of both signs at exponents 2 and 3 (quotients subnormal, then normal
    /// from 2^-123 on) and 127 (y in [1, 2)): [`sixth`] is `y / 6` where that is normal, and
    /// gives HardSwish's `y / 6 + 0.5` where it is not.
    #[test]
    fn sixth_is_the_quotient() {
        for exponent in [2u32, 3, 127] {
            for mantissa in 0..1u32 << 23 {
                for sign in [0, 1u32 << 31] {
                    let y = f32::from_bits(sign | exponent << 23 | mantissa);
                    let (q, want) = (sixth(y), y / 6.0);
                    if want.abs() >= f32::MIN_POSITIVE {
                        assert_eq!(q.to_bits(), want.to_bits(), "{y:e}");
                    } else {
                        assert_eq!((q + 0.5).to_bits(), (want + 0.5).to_bits(), "{y:e}");
                    }
                }
            }
        }
    }
}
