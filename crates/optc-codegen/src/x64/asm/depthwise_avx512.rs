//! Depthwise-conv kernels on AVX-512 (zmm): the geometry of [`super::depthwise`] (row passes,
//! input rows feeding every output row of a block, inner column groups in a loop, border
//! groups unrolled) with 16 output columns per vector instead of 8, so a 14-wide row is one
//! vector and a 28-wide row two (the ymm kernel's 8-lane groups ran these maps at about half
//! the zmm FMA rate).
//!
//! - weights: taps 0-7 in zmm8-15, 8-12 in zmm21-25, the rest read by embedded broadcasts;
//! - accumulators zmm0-7, epilogue activations' scratch zmm16-20 (and k7), zmm26/27 the
//!   stride-2 index vectors, zmm28-31 scratch;
//! - border loads masked to the row (`{k}{z}`: lanes outside it read as zeros, nothing read
//!   outside the plane), a row shorter than 16 stored masked; masks in k1-k6 for the whole
//!   kernel when there are at most six, else loaded at each use (k1 the loads', k2 the
//!   stores');
//! - stride 2: the 32 inputs from an even start, permuted (`vpermt2ps`) into their even or odd
//!   lanes, once per start for the taps that read it;
//! - every output's products are summed in the ymm kernel's order (bias, then the taps by
//!   kernel row and column), so both give the same bits.
//!
//! Same ABI as the ymm kernel: `dw(x, o, w, bias, nch)`, rbx and r12 saved and restored.

use super::depthwise::{emit_channels, input_rows, pass_groups, passes, DepthwiseKey, GroupAt};
use super::epilogue::{Activation, Epilogue};
use super::registers::zmm;
use iced_x86::code_asm::*;

/// Taps whose weights stay in registers.
const REGISTER_TAPS: usize = 13;

/// Outputs per vector.
const LANES: usize = 16;

fn weight_register(q: usize) -> Option<AsmRegisterZmm> {
    match q {
        0..8 => Some(zmm(8 + q)),
        8..REGISTER_TAPS => Some(zmm(21 + q - 8)),
        _ => None,
    }
}

/// `acc += w[q] x`.
fn fma(
    a: &mut CodeAssembler,
    acc: AsmRegisterZmm,
    q: usize,
    x: AsmRegisterZmm,
) -> Result<(), IcedError> {
    match weight_register(q) {
        Some(w) => a.vfmadd231ps(acc, w, x),
        None => a.vfmadd231ps(acc, x, dword_bcst(rdx + 4 * q as i32)),
    }
}

/// First output column of group `gi`: `16 gi`, except that a last partial group overlaps the
/// previous one (all 16 lanes valid) when the row has at least 16 outputs.
fn start(ow: usize, gi: usize) -> i64 {
    if ow >= 16 {
        (16 * gi).min(ow - 16) as i64
    } else {
        0
    }
}

/// Valid lanes of 16 consecutive columns from `c0` in a row of `w`.
fn lanes(c0: i64, w: usize) -> u16 {
    (0..16)
        .filter(|&l| c0 + l >= 0 && c0 + l < w as i64)
        .fold(0u16, |m, l| m | 1 << l)
}

/// The mask registers: the kernel's masks in k1-k6 when there are at most six, else loaded
/// before each use.
struct Masks {
    held: Vec<u16>,
}

const K: [AsmRegisterK; 6] = [k1, k2, k3, k4, k5, k6];

impl Masks {
    /// The register holding `mask` (loaded into k1 for `store` false, k2 for true, if not
    /// held).
    fn get(
        &self,
        a: &mut CodeAssembler,
        mask: u16,
        store: bool,
    ) -> Result<AsmRegisterK, IcedError> {
        if let Some(i) = self.held.iter().position(|&m| m == mask) {
            return Ok(K[i]);
        }
        let k = if store { k2 } else { k1 };
        a.mov(eax, mask as u32)?;
        a.kmovw(k, eax)?;
        Ok(k)
    }
}

fn zero_masked(v: AsmRegisterZmm, k: AsmRegisterK) -> AsmRegisterZmm {
    match k {
        k if k == k1 => v.k1().z(),
        k if k == k2 => v.k2().z(),
        k if k == k3 => v.k3().z(),
        k if k == k4 => v.k4().z(),
        k if k == k5 => v.k5().z(),
        _ => v.k6().z(),
    }
}

fn masked(m: AsmMemoryOperand, k: AsmRegisterK) -> AsmMemoryOperand {
    match k {
        k if k == k1 => m.k1(),
        k if k == k2 => m.k2(),
        k if k == k3 => m.k3(),
        k if k == k4 => m.k4(),
        k if k == k5 => m.k5(),
        _ => m.k6(),
    }
}

/// A column group ([`GroupAt`]). Emits the code when `a` is given; returns the masks it
/// uses.
fn group(
    mut a: Option<&mut CodeAssembler>,
    key: &DepthwiseKey,
    at: &GroupAt,
    masks: &Masks,
    consts: &mut Vec<(CodeLabel, u32)>,
) -> Result<Vec<u16>, IcedError> {
    let GroupAt {
        rows,
        nv,
        xb,
        ob,
        gi,
        edge,
    } = *at;
    let g = &key.g;
    let nr = rows.len();
    let in_row = (g.w * 4) as i64;
    let acc = |j: usize, v: usize| zmm(j * nv + v);
    let mut used: Vec<u16> = vec![];
    let mut note = |m: u16| {
        if m != u16::MAX && m != 0 && !used.contains(&m) {
            used.push(m);
        }
    };
    let bias0 = matches!(
        key.epilogue.first(),
        Some(Epilogue::BiasRow | Epilogue::BiasCol)
    );
    if let Some(a) = a.as_deref_mut() {
        for j in 0..nr {
            for v in 0..nv {
                if bias0 {
                    a.vbroadcastss(acc(j, v), dword_ptr(rcx))?;
                } else {
                    a.vxorps(acc(j, v), acc(j, v), acc(j, v))?;
                }
            }
        }
    }
    let irs = input_rows(rows);
    let o0 = start(g.ow, gi);
    if g.sw == 1 {
        for (ir, uses) in &irs {
            for kw in 0..g.kw {
                let s = (kw * g.dw) as i64;
                for v in 0..nv {
                    let c0 = o0 + 16 * v as i64 - g.pw as i64 + s;
                    let bits = if edge { lanes(c0, g.w) } else { u16::MAX };
                    if bits == 0 {
                        continue;
                    }
                    note(bits);
                    let Some(a) = a.as_deref_mut() else {
                        continue;
                    };
                    let m = zmmword_ptr(xb + (ir * in_row + 4 * c0) as i32);
                    let q0 = uses[0].1 * g.kw + kw;
                    if bits != u16::MAX {
                        let k = masks.get(a, bits, false)?;
                        a.vmovups(zero_masked(zmm31, k), m)?;
                    } else if let (1, Some(w)) = (uses.len(), weight_register(q0)) {
                        a.vfmadd231ps(acc(uses[0].0, v), w, m)?;
                        continue;
                    } else {
                        a.vmovups(zmm31, m)?;
                    }
                    for &(j, kh) in uses {
                        fma(a, acc(j, v), kh * g.kw + kw, zmm31)?;
                    }
                }
            }
        }
    } else {
        for (ir, uses) in &irs {
            for v in 0..nv {
                let ov = o0 + 16 * v as i64;
                let mut loaded: Option<i64> = None;
                for kw in 0..g.kw {
                    let s = (kw * g.dw) as i64;
                    // Columns c0 + s % 2 + 2i of the 32 from the even start c0.
                    let (even, odd) = (s - s % 2, s % 2 == 1);
                    let c0 = 2 * ov - g.pw as i64 + even;
                    let (b0, b1) = if edge {
                        (lanes(c0, g.w), lanes(c0 + 16, g.w))
                    } else {
                        (u16::MAX, u16::MAX)
                    };
                    if b0 == 0 && b1 == 0 {
                        continue;
                    }
                    note(b0);
                    note(b1);
                    let Some(a) = a.as_deref_mut() else {
                        continue;
                    };
                    let m = xb + (ir * in_row + 4 * c0) as i32;
                    if loaded != Some(even) {
                        for (half, bits, dst) in [(0, b0, zmm30), (64, b1, zmm31)] {
                            if bits == 0 {
                                a.vxorps(dst, dst, dst)?;
                            } else if bits == u16::MAX {
                                a.vmovups(dst, zmmword_ptr(m + half))?;
                            } else {
                                let k = masks.get(a, bits, false)?;
                                a.vmovups(zero_masked(dst, k), zmmword_ptr(m + half))?;
                            }
                        }
                        loaded = Some(even);
                    }
                    a.vmovaps(zmm28, zmm30)?;
                    a.vpermt2ps(zmm28, if odd { zmm27 } else { zmm26 }, zmm31)?;
                    for &(j, kh) in uses {
                        fma(a, acc(j, v), kh * g.kw + kw, zmm28)?;
                    }
                }
            }
        }
    }
    // Valid outputs of a vector: 16, or all of a row shorter than 16.
    let nvalid = (g.ow as i64 - o0).min(16) as usize;
    let store_mask = if nvalid < 16 {
        (1u16 << nvalid) - 1
    } else {
        u16::MAX
    };
    note(store_mask);
    let Some(a) = a else {
        return Ok(used);
    };
    let all: Vec<AsmRegisterZmm> = (0..nr)
        .flat_map(|j| (0..nv).map(move |v| acc(j, v)))
        .collect();
    let mut konst = |a: &mut CodeAssembler, bits: u32| {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for &step in &key.epilogue[bias0 as usize..] {
        match step {
            Epilogue::BiasRow | Epilogue::BiasCol => {
                a.vbroadcastss(zmm28, dword_ptr(rcx))?;
                for &r in &all {
                    a.vaddps(r, r, zmm28)?;
                }
            }
            Epilogue::Relu => {
                a.vxorps(zmm28, zmm28, zmm28)?;
                for &r in &all {
                    a.vmaxps(r, zmm28, r)?;
                }
            }
            Epilogue::Clip(lo, hi) => {
                let (llo, lhi) = (konst(a, lo), konst(a, hi));
                a.vbroadcastss(zmm28, dword_ptr(llo))?;
                for &r in &all {
                    a.vmaxps(r, zmm28, r)?;
                }
                a.vbroadcastss(zmm28, dword_ptr(lhi))?;
                for &r in &all {
                    a.vminps(r, zmm28, r)?;
                }
            }
            Epilogue::Scale(sc) => {
                let l = konst(a, sc);
                a.vbroadcastss(zmm28, dword_ptr(l))?;
                for &r in &all {
                    a.vmulps(r, r, zmm28)?;
                }
            }
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                let act = Activation::new(a, step, &mut konst).expect("an activation step");
                for &r in &all {
                    act.apply(a, r, [zmm16, zmm17, zmm18, zmm19, zmm20])?;
                }
            }
            Epilogue::Residual | Epilogue::FakeQuantize { .. } => {
                unreachable!("not a depthwise epilogue step (DepthwiseKey::supports)")
            }
        }
    }
    let out_row = (g.ow * 4) as i64;
    for j in 0..nr {
        for v in 0..nv {
            let d = (j as i64 * out_row + 4 * o0 + 64 * v as i64) as i32;
            let at = zmmword_ptr(ob + d);
            if store_mask == u16::MAX {
                a.vmovups(at, acc(j, v))?;
            } else {
                let k = masks.get(a, store_mask, true)?;
                a.vmovups(masked(at, k), acc(j, v))?;
            }
        }
    }
    Ok(used)
}

/// Assemble the zmm kernel of `key` (position independent, no relocations).
pub(crate) fn assemble(key: &DepthwiseKey) -> Result<Vec<u8>, IcedError> {
    let g = &key.g;
    assert!(
        DepthwiseKey::supports(g, &key.epilogue, true),
        "unsupported depthwise kernel"
    );
    let mut a = CodeAssembler::new(64)?;
    let kk = g.kh * g.kw;
    // The masks the groups use: held for the kernel when at most six.
    let none = Masks { held: vec![] };
    let mut all: Vec<u16> = vec![];
    for pass in &passes(g, g.rows()) {
        for at in pass_groups(g, LANES, pass) {
            for m in group(None, key, &at, &none, &mut vec![])? {
                if !all.contains(&m) {
                    all.push(m);
                }
            }
        }
    }
    let masks = Masks {
        held: if all.len() <= K.len() { all } else { vec![] },
    };
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let indexes = [a.create_label(), a.create_label()];
    a.push(rbx)?;
    a.push(r12)?;
    for (i, &m) in masks.held.iter().enumerate() {
        a.mov(eax, m as u32)?;
        a.kmovw(K[i], eax)?;
    }
    if g.sw == 2 {
        a.vmovups(zmm26, zmmword_ptr(indexes[0]))?;
        a.vmovups(zmm27, zmmword_ptr(indexes[1]))?;
    }
    emit_channels(
        &mut a,
        g,
        LANES,
        &mut |a| {
            for q in 0..kk {
                if let Some(w) = weight_register(q) {
                    a.vbroadcastss(w, dword_ptr(rdx + 4 * q as i32))?;
                }
            }
            Ok(())
        },
        &mut |a, at| group(Some(a), key, &at, &masks, &mut consts).map(|_| ()),
    )?;
    a.vzeroupper()?;
    a.pop(r12)?;
    a.pop(rbx)?;
    a.ret()?;
    for (mut l, parity) in indexes.into_iter().zip([0u32, 1]) {
        a.set_label(&mut l)?;
        let v: Vec<u32> = (0..16).map(|i| 2 * i + parity).collect();
        a.dd(&v)?;
    }
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}
