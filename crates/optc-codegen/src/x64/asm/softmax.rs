//! Softmax over contiguous rows (AVX-512, zmm): `rows` rows of `key.n` floats, each in three
//! passes over the row, 64 floats a step with four independent accumulators and a masked
//! last vector: the row maximum (`v > max ? v : max`, so a NaN is skipped there and reaches
//! every output through the sum), `exp(x - max)` stored and summed, then the outputs times
//! `1 / sum`, those under `sum * 2^-126` flushed to 0 first (they would be subnormal). The
//! exponential is the generic lowering's `exp_nonpos` step by step (`ops::transcendental`:
//! the clamp at the low end that keeps a NaN, Cody-Waite reduction, the degree-7
//! polynomial, the scale built in the exponent bits); only the order of the sums differs.
//!
//! System-V ABI, no return value: `softmax(x, out, rows)`, row `r` at `x + r * 4 n` and
//! `out + r * 4 n` (`out` may be `x`).

use crate::ops::transcendental::{EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC, EXP_POLY};
use iced_x86::code_asm::*;

use super::registers::zmm;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SoftmaxKey {
    /// Row length (floats), at least 1.
    pub n: usize,
}

impl SoftmaxKey {
    pub fn symbol(&self) -> String {
        format!("optc_softmax_avx512_{}", self.n)
    }
}

pub(crate) const SOFTMAX_PARAMS: usize = 3;

// Constants broadcast once (zmm16-22), the row's maximum, flush threshold and reciprocal
// (zmm23-25), the sum accumulators (zmm26-29).
const LO: AsmRegisterZmm = zmm16;
const LOG2E: AsmRegisterZmm = zmm17;
const MAGIC: AsmRegisterZmm = zmm18;
const LN2_HI: AsmRegisterZmm = zmm19;
const LN2_LO: AsmRegisterZmm = zmm20;
const ONE: AsmRegisterZmm = zmm21;
const BIAS: AsmRegisterZmm = zmm22;
const MAX: AsmRegisterZmm = zmm23;
const TINY: AsmRegisterZmm = zmm24;
const INV: AsmRegisterZmm = zmm25;

fn sum(j: usize) -> AsmRegisterZmm {
    [zmm26, zmm27, zmm28, zmm29][j]
}

/// A pass's work on one vector: `(assembler, j, byte offset, masked)`.
type VectorStep<'a> = dyn FnMut(&mut CodeAssembler, usize, i32, bool) -> Result<(), IcedError> + 'a;

/// One pass over a row from `rax` (and `r8`): `body(a, j, offset, masked)` for vector `j`
/// (0-3, its register group) at byte `offset`, four vectors a loop step, then the remaining
/// whole vectors, then the masked last one (`k1`).
fn pass(a: &mut CodeAssembler, n: usize, body: &mut VectorStep) -> Result<(), IcedError> {
    let full = n / 16;
    let (groups, rest) = (full / 4, full % 4);
    if groups > 0 {
        a.mov(rcx, groups as u64)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        for j in 0..4 {
            body(a, j, 64 * j as i32, false)?;
        }
        a.add(rax, 256)?;
        a.add(r8, 256)?;
        a.dec(rcx)?;
        a.jnz(top)?;
    }
    for j in 0..rest {
        body(a, j, 64 * j as i32, false)?;
    }
    if !n.is_multiple_of(16) {
        body(a, 0, 64 * rest as i32, true)?;
    }
    Ok(())
}

/// What [`horizontal`] reduces with.
#[derive(Clone, Copy)]
enum Reduce {
    /// `vmaxps x, y, x`: the lane of `y` where either is NaN (the order the row pass uses).
    Max,
    Sum,
}

/// `reduce` across the 16 lanes of zmm0 into every lane of `dst` (zmm1 scratch).
fn horizontal(a: &mut CodeAssembler, dst: AsmRegisterZmm, reduce: Reduce) -> Result<(), IcedError> {
    let op = |a: &mut CodeAssembler| match reduce {
        Reduce::Max => a.vmaxps(xmm0, xmm1, xmm0),
        Reduce::Sum => a.vaddps(xmm0, xmm0, xmm1),
    };
    a.vextractf64x4(ymm1, zmm0, 1)?;
    match reduce {
        Reduce::Max => a.vmaxps(ymm0, ymm1, ymm0)?,
        Reduce::Sum => a.vaddps(ymm0, ymm0, ymm1)?,
    }
    a.vextractf128(xmm1, ymm0, 1)?;
    op(a)?;
    a.vpermilps(xmm1, xmm0, 0x4e)?;
    op(a)?;
    a.vpermilps(xmm1, xmm0, 0xb1)?;
    op(a)?;
    a.vbroadcastss(dst, xmm0)
}

pub(crate) fn assemble(key: &SoftmaxKey) -> Result<Vec<u8>, IcedError> {
    let n = key.n;
    assert!(n > 0, "an empty softmax row");
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for (r, v) in [
        (LO, EXP_LO),
        (LOG2E, std::f32::consts::LOG2_E),
        (MAGIC, EXP_MAGIC),
        (LN2_HI, EXP_LN2_HI),
        (LN2_LO, EXP_LN2_LO),
        (ONE, 1.0),
    ] {
        let l = konst(&mut a, v.to_bits());
        a.vbroadcastss(r, dword_ptr(l))?;
    }
    let bias = konst(&mut a, (0x4B40_0000 - 127) as u32);
    a.vbroadcastss(BIAS, dword_ptr(bias))?;
    let neg_inf = konst(&mut a, f32::NEG_INFINITY.to_bits());
    let min_positive = konst(&mut a, f32::MIN_POSITIVE.to_bits());
    let one = konst(&mut a, 1f32.to_bits());
    let poly: Vec<CodeLabel> = EXP_POLY
        .iter()
        .map(|v| konst(&mut a, v.to_bits()))
        .collect();
    if !n.is_multiple_of(16) {
        a.mov(eax, (1u32 << (n % 16)) - 1)?;
        a.kmovw(k1, eax)?;
    }
    let mut done = a.create_label();
    a.test(rdx, rdx)?;
    a.jz(done)?;
    let mut row = a.create_label();
    a.set_label(&mut row)?;

    // The maximum: zmm0-3 accumulate (-inf at first), zmm4-7 the loaded vectors.
    for j in 0..4 {
        a.vbroadcastss(zmm(j), dword_ptr(neg_inf))?;
    }
    a.mov(rax, rdi)?;
    pass(&mut a, n, &mut |a, j, off, masked| {
        if masked {
            a.vmovups(zmm(4 + j).k1().z(), zmmword_ptr(rax + off))?;
            a.vmaxps(zmm(j).k1(), zmm(4 + j), zmm(j))
        } else {
            a.vmovups(zmm(4 + j), zmmword_ptr(rax + off))?;
            a.vmaxps(zmm(j), zmm(4 + j), zmm(j))
        }
    })?;
    a.vmaxps(zmm0, zmm1, zmm0)?;
    a.vmaxps(zmm2, zmm3, zmm2)?;
    a.vmaxps(zmm0, zmm2, zmm0)?;
    horizontal(&mut a, MAX, Reduce::Max)?;

    // exp(x - max), stored and summed: vector j in zmm(4j) with zmm(4j+1..4j+3) scratch.
    for j in 0..4 {
        a.vpxord(sum(j), sum(j), sum(j))?;
    }
    a.mov(rax, rdi)?;
    a.mov(r8, rsi)?;
    pass(&mut a, n, &mut |a, j, off, masked| {
        let (x, p, r2, t) = (zmm(4 * j), zmm(4 * j + 1), zmm(4 * j + 2), zmm(4 * j + 3));
        if masked {
            a.vmovups(x.k1().z(), zmmword_ptr(rax + off))?;
        } else {
            a.vmovups(x, zmmword_ptr(rax + off))?;
        }
        // xc = max(x - max, lo), a NaN kept (`lo > d ? lo : d`).
        a.vsubps(x, x, MAX)?;
        a.vmaxps(x, LO, x)?;
        // t = xc log2(e) + magic; n = t - magic (in p); r = xc - n ln 2 (two steps, in x).
        a.vmovaps(t, MAGIC)?;
        a.vfmadd231ps(t, x, LOG2E)?;
        a.vsubps(p, t, MAGIC)?;
        a.vfmadd231ps(x, p, LN2_HI)?;
        a.vfmadd231ps(x, p, LN2_LO)?;
        // p(r) by Horner; y = p r^2 + (r + 1); times 2^n from t's bits.
        a.vbroadcastss(p, dword_ptr(poly[0]))?;
        for &c in &poly[1..] {
            a.vfmadd213ps(p, x, dword_bcst(c))?;
        }
        a.vmulps(r2, x, x)?;
        a.vaddps(x, x, ONE)?;
        a.vfmadd231ps(x, p, r2)?;
        a.vpsubd(t, t, BIAS)?;
        a.vpslld(t, t, 23)?;
        a.vmulps(x, x, t)?;
        if masked {
            a.vmovups(zmmword_ptr(r8 + off).k1(), x)?;
            a.vaddps(sum(j).k1(), sum(j), x)
        } else {
            a.vmovups(zmmword_ptr(r8 + off), x)?;
            a.vaddps(sum(j), sum(j), x)
        }
    })?;
    a.vaddps(zmm0, sum(0), sum(1))?;
    a.vaddps(zmm1, sum(2), sum(3))?;
    a.vaddps(zmm0, zmm0, zmm1)?;
    horizontal(&mut a, zmm2, Reduce::Sum)?;
    // tiny = sum 2^-126, inv = 1 / sum (scalars, then broadcast).
    a.vmulss(xmm1, xmm0, dword_ptr(min_positive))?;
    a.vbroadcastss(TINY, xmm1)?;
    a.vmovss(xmm1, dword_ptr(one))?;
    a.vdivss(xmm1, xmm1, xmm0)?;
    a.vbroadcastss(INV, xmm1)?;

    // out = (out < tiny ? 0 : out) * inv; `k(2 + j)` = not below tiny (a NaN is not).
    a.mov(rax, rsi)?;
    a.mov(r8, rsi)?;
    pass(&mut a, n, &mut |a, j, off, masked| {
        let v = zmm(j);
        let (k, v_k) = match j {
            0 => (k2, v.k2().z()),
            1 => (k3, v.k3().z()),
            2 => (k4, v.k4().z()),
            _ => (k5, v.k5().z()),
        };
        if masked {
            a.vmovups(v.k1().z(), zmmword_ptr(rax + off))?;
        } else {
            a.vmovups(v, zmmword_ptr(rax + off))?;
        }
        a.vcmpps(k, v, TINY, 5)?;
        a.vmulps(v_k, v, INV)?;
        if masked {
            a.vmovups(zmmword_ptr(rax + off).k1(), v)
        } else {
            a.vmovups(zmmword_ptr(rax + off), v)
        }
    })?;
    a.add(rdi, (4 * n) as i32)?;
    a.add(rsi, (4 * n) as i32)?;
    a.dec(rdx)?;
    a.jnz(row)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}
