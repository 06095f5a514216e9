#![allow(clippy::needless_range_loop)]
//! Depthwise conv (`Strategy::Depthwise`): one input channel per output channel, the epilogue
//! applied in registers, the input read in place (no padded copy), never outside a row of the
//! channel.
//!
//! When [`DepthwiseKey::supports`] the geometry and epilogue (stride 1 or 2, at most 9 taps, or
//! 49 on AVX-512, no fused residual), the whole unit is one call of an assembled ymm kernel
//! ([`crate::x64::asm::depthwise`]: 8 outputs per vector, borders by masked loads). Otherwise the
//! f32x4 code below:
//! - output rows run `ROWS` at a time ([`passes`]), each input vector load feeding every kernel row
//!   that uses it, the taps outside the input dropped at compile time,
//! - in a row, the columns whose vector loads stay in the input run `4 * NV` then 4 at a time
//!   (stride 2: two loads and one `shufps` give the even or odd lanes); a last partial group is
//!   recomputed as one vector overlapping the previous one (not with a fused residual, whose input
//!   may be the output buffer); the other columns are scalar, with the taps outside the input
//!   dropped, except with stride 1, where border vectors load the nearest in-row vector and shift
//!   zeros in (`palignr`), and for column 0 of a stride-2 pad-1 row.
//!
//! Cranelift's x64 FMA is destructive on a multiplicand, so every tap also costs a register copy;
//! measured alternatives that did not pay: 1-4 rows x 1-3 vectors per step, per-kernel-row partial
//! sums, weights reloaded per tap (more loads, worse).

use super::asm::depthwise::{input_rows, passes, DepthwiseGeometry, DepthwiseKey, RowTaps};
use super::asm::{Epilogue, Isa, Routine};
use super::kernel_plan::KernelPlan;
use super::tasks::KernelArgs;
use crate::builder::{shuffle_lanes, tensor_flags, Emitter, F32X4};
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Value};
use std::collections::HashMap;

/// Output rows computed together.
const ROWS: usize = 2;
/// Vectors (of 4 output pixels) per row per step.
const NV: usize = 2;

/// Per-channel state: weights and bias (scalars and splats).
pub(super) struct K<'a> {
    p: &'a KernelPlan,
    g: &'a ConvGeometry,
    ws: Vec<Value>,
    wv: Vec<Value>,
    bs: Option<Value>,
    bv: Option<Value>,
}

/// The assembled kernel's view of a depthwise conv.
pub(super) fn depthwise_geometry(g: &ConvGeometry) -> DepthwiseGeometry {
    DepthwiseGeometry {
        h: g.h,
        w: g.w,
        oh: g.oh,
        ow: g.ow,
        kh: g.kh,
        kw: g.kw,
        sh: g.sh,
        sw: g.sw,
        dh: g.dh,
        dw: g.dw,
        ph: g.ph,
        pw: g.pw,
    }
}

/// The assembled kernel of this node, if it can use one.
fn depthwise_key(p: &KernelPlan, g: &ConvGeometry) -> Option<DepthwiseKey> {
    if p.res_port.is_some() {
        return None;
    }
    DepthwiseKey::new(
        depthwise_geometry(g),
        p.kernel_epilogue(),
        p.isa == Isa::Avx512,
    )
}

/// The assembled kernel [`emit_depthwise`] calls, if any.
pub(super) fn routines(p: &KernelPlan, g: &ConvGeometry) -> Vec<DepthwiseKey> {
    depthwise_key(p, g).into_iter().collect()
}

/// Channels `[row0, row0 + nch)` of image `img`.
pub(super) fn emit_depthwise(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    c: &KernelArgs,
    img: Value,
    row0: Value,
    nch: usize,
) {
    let kk = g.kh * g.kw;
    let iplane = (g.h * g.w * 4) as i64;
    let oplane = (g.oh * g.ow * 4) as i64;
    let ich = e.b.ins().imul_imm_s(img, g.c as i64);
    let ch0 = e.b.ins().iadd(ich, row0);
    let io = e.b.ins().imul_imm_s(ch0, iplane);
    let oo = e.b.ins().imul_imm_s(ch0, oplane);
    let wo = e.b.ins().imul_imm_s(row0, (kk * 4) as i64);
    let bo = e.b.ins().imul_imm_s(row0, 4);
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    if let Some(&f) = depthwise_key(p, g).and_then(|k| c.microkernels.get(&Routine::Depthwise(k))) {
        let x = e.b.ins().iadd(c.ins[0], io);
        let o = e.b.ins().iadd(c.out, oo);
        let w = e.b.ins().iadd(c.ins[1], wo);
        let b = match bias {
            Some(bp) => e.b.ins().iadd(bp, bo),
            None => w,
        };
        let n = e.int_const(nch as i64);
        e.b.ins().call(f, &[x, o, w, b, n]);
        return;
    }
    let passes = passes(&depthwise_geometry(g), ROWS);
    e.loop_offsets(
        nch as i64,
        &[io, oo, wo, bo],
        &[iplane, oplane, (kk * 4) as i64, 4],
        &mut |e, _ch, o| {
            let xc = e.b.ins().iadd(c.ins[0], o[0]);
            let pw = e.b.ins().iadd(c.ins[1], o[2]);
            let ws: Vec<Value> = (0..kk)
                .map(|q| {
                    e.b.ins()
                        .load(types::F32, tensor_flags(), pw, (q * 4) as i32)
                })
                .collect();
            let wv: Vec<Value> = ws.iter().map(|&s| e.b.ins().splat(F32X4, s)).collect();
            let bs = bias.map(|bp| {
                let a = e.b.ins().iadd(bp, o[3]);
                e.b.ins().load(types::F32, tensor_flags(), a, 0)
            });
            let bv = bs.map(|s| e.b.ins().splat(F32X4, s));
            let k = K {
                p,
                g,
                ws,
                wv,
                bs,
                bv,
            };
            let op = e.b.ins().iadd(c.out, o[1]);
            let rp = match res {
                Some(r) => e.b.ins().iadd(r, o[1]),
                None => op,
            };
            // Pointers of output row `r` (input at its base row `r * sh - ph`, may be < 0).
            let at = |e: &mut Emitter, r: usize| {
                let xo = ((r * g.sh) as i64 - g.ph as i64) * g.w as i64 * 4;
                let x = e.b.ins().iadd_imm_s(xc, xo);
                let oo = (r * g.ow * 4) as i64;
                let o2 = e.b.ins().iadd_imm_s(op, oo);
                let r2 = e.b.ins().iadd_imm_s(rp, oo);
                (x, o2, r2)
            };
            for pass in &passes {
                let (x, o2, r2) = at(e, pass.first);
                if pass.count == 1 {
                    row_pass(e, &k, &pass.rows, x, o2, r2);
                    continue;
                }
                let rows = pass.rows.len();
                let ostep = (rows * g.ow * 4) as i64;
                e.loop_offsets(
                    pass.count as i64,
                    &[x, o2, r2],
                    &[(rows * g.sh * g.w * 4) as i64, ostep, ostep],
                    &mut |e, _r, q| row_pass(e, &k, &pass.rows, q[0], q[1], q[2]),
                );
            }
        },
    );
}

/// Highest input column a vector of output columns `[o0, o0 + 4)` loads (relative).
fn vec_reach(g: &ConvGeometry) -> usize {
    let span = (g.kw - 1) * g.dw;
    match g.sw {
        1 => span + 3,
        // The first tap reads pair `[a, a + 8)` (even lanes), later taps `[a - 1, a + 7)`.
        2 => (span + 6).max(7),
        s => span + 3 * s,
    }
}

/// One pass over the columns of `rows.len()` output rows: `xp` points at the base input row
/// (column 0), `op`/`rp` at the first output/residual row.
fn row_pass(e: &mut Emitter, k: &K, rows: &[RowTaps], xp: Value, op: Value, rp: Value) {
    let g = k.g;
    let all_kw: Vec<usize> = (0..g.kw).collect();
    // Input column of output column `o`, tap 0.
    let col = |o: usize| o as i64 * g.sw as i64 - g.pw as i64;
    let kws = |o: usize| -> Vec<usize> {
        (0..g.kw)
            .filter(|&kw| {
                let c = col(o) + (kw * g.dw) as i64;
                c >= 0 && c < g.w as i64
            })
            .collect()
    };
    // Vector starts o0 with every load inside the row: o_lo <= o0 <= o_max.
    let o_lo = g.pw.div_ceil(g.sw);
    let reach = vec_reach(g) as i64;
    let o_max = (g.w as i64 - 1 - reach + g.pw as i64).div_euclid(g.sw as i64);
    let o_max = o_max.min(g.ow as i64 - 4);
    let scalar = |e: &mut Emitter, o: usize| {
        let x = e.b.ins().iadd_imm_s(xp, col(o) * 4);
        let of = (o * 4) as i64;
        let oq = e.b.ins().iadd_imm_s(op, of);
        let rq = e.b.ins().iadd_imm_s(rp, of);
        px(e, k, rows, &kws(o), 0, None, x, oq, rq);
    };
    // Stride 1: border vectors shift their out-of-row taps in as zeros (see `px`), so every
    // column is in a vector; groups that would run past the row overlap the previous one.
    let edges = g.sw == 1 && g.w >= 4 && g.ow >= 4 && k.p.res_port.is_none();
    // Stride 2, pad 1: the vector at column 0 shifts a zero in for input column -1.
    let left2 = g.sw == 2
        && g.pw == 1
        && g.ow >= 8
        && k.p.res_port.is_none()
        && (g.kw - 1) * g.dw + 5 < g.w;
    let edge_at = |e: &mut Emitter, o: usize| {
        let o = o.min(g.ow - 4);
        let x = e.b.ins().iadd_imm_s(xp, col(o) * 4);
        let oq = e.b.ins().iadd_imm_s(op, (o * 4) as i64);
        px(e, k, rows, &all_kw, 1, Some(col(o)), x, oq, oq);
    };
    if edges && (o_max < o_lo.next_multiple_of(4) as i64) {
        for o in (0..g.ow).step_by(4) {
            edge_at(e, o);
        }
        return;
    }
    if o_max < o_lo as i64 {
        for o in 0..g.ow {
            scalar(e, o);
        }
        return;
    }
    let o_max = o_max as usize;
    let o_lo = if edges || (left2 && o_max >= 4) {
        for o in (0..o_lo).step_by(4) {
            edge_at(e, o);
        }
        o_lo.next_multiple_of(4)
    } else {
        for o in 0..o_lo {
            scalar(e, o);
        }
        o_lo
    };
    // Columns [o_lo, o_max + 4) by vectors.
    let ncols = o_max + 4 - o_lo;
    let step = 4 * NV;
    let nstep = ncols / step;
    let x0 = e.b.ins().iadd_imm_s(xp, col(o_lo) * 4);
    let o0 = e.b.ins().iadd_imm_s(op, (o_lo * 4) as i64);
    let r0 = e.b.ins().iadd_imm_s(rp, (o_lo * 4) as i64);
    e.loop_offsets(
        nstep as i64,
        &[x0, o0, r0],
        &[
            (step * g.sw * 4) as i64,
            (step * 4) as i64,
            (step * 4) as i64,
        ],
        &mut |e, _i, q| px(e, k, rows, &all_kw, NV, None, q[0], q[1], q[2]),
    );
    let mut done = o_lo + nstep * step;
    let vec_at = |e: &mut Emitter, o: usize| {
        let x = e.b.ins().iadd_imm_s(xp, col(o) * 4);
        let oq = e.b.ins().iadd_imm_s(op, (o * 4) as i64);
        let rq = e.b.ins().iadd_imm_s(rp, (o * 4) as i64);
        px(e, k, rows, &all_kw, 1, None, x, oq, rq);
    };
    while o_max + 4 - done >= 4 {
        vec_at(e, done);
        done += 4;
    }
    if edges {
        for o in (done..g.ow).step_by(4) {
            edge_at(e, o);
        }
        return;
    }
    if done < o_max + 4 {
        if k.p.res_port.is_none() && ncols >= 4 {
            vec_at(e, o_max);
        } else {
            for o in done..o_max + 4 {
                scalar(e, o);
            }
        }
    }
    for o in o_max + 4..g.ow {
        scalar(e, o);
    }
}

/// Input elements `[s, s + 8)` from `xp` as two vectors (loaded once per `px`).
fn load_pair(
    e: &mut Emitter,
    pairs: &mut HashMap<i64, (Value, Value)>,
    xp: Value,
    s: i64,
) -> (Value, Value) {
    *pairs.entry(s).or_insert_with(|| {
        let a = e.b.ins().load(F32X4, tensor_flags(), xp, (s * 4) as i32);
        let b =
            e.b.ins()
                .load(F32X4, tensor_flags(), xp, (s * 4 + 16) as i32);
        (a, b)
    })
}

/// Output rows `rows` x `nv` vectors (or one scalar pixel when `nv == 0`) with kernel columns
/// `kws`: `xp` at (base input row, first tap column), `op`/`rp` at the first output pixel.
/// `edge`: the input column of `xp` for a stride-1 vector (`nv == 1`) that may reach out of
/// the row: its taps load the in-row vector nearest and shift zeros in (or are dropped).
#[allow(clippy::too_many_arguments)]
fn px(
    e: &mut Emitter,
    k: &K,
    rows: &[RowTaps],
    kws: &[usize],
    nv: usize,
    edge: Option<i64>,
    xp: Value,
    op: Value,
    rp: Value,
) {
    let g = k.g;
    let vec = nv > 0;
    let ty = if vec { F32X4 } else { types::F32 };
    let nacc = nv.max(1);
    let z = e.float_const(ty, 0.0);
    // A leading bias step starts the sums (else the first tap is a multiply).
    let bias0 = match (k.p.epilogue.first(), if vec { k.bv } else { k.bs }) {
        (Some(Epilogue::BiasRow | Epilogue::BiasCol), Some(b)) => Some(b),
        _ => None,
    };
    let mut acc: Vec<Vec<Option<Value>>> = vec![vec![bias0; nacc]; rows.len()];
    // Stride-2 pairs loaded so far, by element offset.
    let mut pairs: HashMap<i64, (Value, Value)> = HashMap::new();
    let irs = input_rows(rows);
    let w = g.w as i64;
    for (ir, uses) in &irs {
        for &kw in kws {
            for v in 0..nacc {
                let s = ir * w + (v * 4 * g.sw + kw * g.dw) as i64;
                let xv = if !vec {
                    e.b.ins()
                        .load(types::F32, tensor_flags(), xp, (s * 4) as i32)
                } else if let Some(x0) = edge.filter(|_| g.sw == 1) {
                    // Columns [a, a + 4) of input row `ir`, zeros outside [0, w).
                    let a = x0 + (kw * g.dw) as i64;
                    let row = ir * w - x0;
                    if a + 3 < 0 || a >= w {
                        continue;
                    } else if a < 0 {
                        let v = e.b.ins().load(F32X4, tensor_flags(), xp, (row * 4) as i32);
                        let sh = (-a) as u8;
                        shuffle_lanes(e, z, v, [4 - sh, 5 - sh, 6 - sh, 7 - sh])
                    } else if a + 3 >= w {
                        let v =
                            e.b.ins()
                                .load(F32X4, tensor_flags(), xp, ((row + w - 4) * 4) as i32);
                        let ov = (a + 3 - (w - 1)) as u8;
                        shuffle_lanes(e, v, z, [ov, ov + 1, ov + 2, ov + 3])
                    } else {
                        e.b.ins().load(F32X4, tensor_flags(), xp, (s * 4) as i32)
                    }
                } else if g.sw == 1 {
                    e.b.ins().load(F32X4, tensor_flags(), xp, (s * 4) as i32)
                } else if g.sw == 2 {
                    // Columns a, a + 2, a + 4, a + 6: even lanes of the pair at `a` or odd
                    // lanes of the pair at `a - 1` (loaded for later taps: reach a + 6).
                    if edge.is_some_and(|x0| x0 + (kw * g.dw) as i64 == -1) {
                        // [0, x1, x3, x5]
                        let (a, b) = load_pair(e, &mut pairs, xp, s + 1);
                        let odd = shuffle_lanes(e, a, b, [1, 3, 5, 7]);
                        shuffle_lanes(e, z, odd, [3, 4, 5, 6])
                    } else if let Some(&(a, b)) = pairs.get(&s) {
                        shuffle_lanes(e, a, b, [0, 2, 4, 6])
                    } else if let Some(&(a, b)) = pairs.get(&(s - 1)) {
                        shuffle_lanes(e, a, b, [1, 3, 5, 7])
                    } else if kw == 0 {
                        let (a, b) = load_pair(e, &mut pairs, xp, s);
                        shuffle_lanes(e, a, b, [0, 2, 4, 6])
                    } else {
                        let (a, b) = load_pair(e, &mut pairs, xp, s - 1);
                        shuffle_lanes(e, a, b, [1, 3, 5, 7])
                    }
                } else {
                    e.gather4(xp, (s * 4) as i32, g.sw)
                };
                for &(j, kh) in uses {
                    let q = kh * g.kw + kw;
                    let wq = if vec { k.wv[q] } else { k.ws[q] };
                    let a = &mut acc[j][v];
                    *a = Some(match *a {
                        Some(a) => e.mul_add(wq, xv, a),
                        None => e.b.ins().fmul(wq, xv),
                    });
                }
            }
        }
    }
    let skip = bias0.is_some() as usize;
    for (j, row) in acc.into_iter().enumerate() {
        let ro = (j * g.ow * 4) as i32;
        for (v, a) in row.into_iter().enumerate() {
            let off = ro + (v * 16) as i32;
            let mut a = a.unwrap_or(z);
            for st in &k.p.epilogue[skip..] {
                a = match *st {
                    Epilogue::BiasRow | Epilogue::BiasCol => match if vec { k.bv } else { k.bs } {
                        Some(b) => e.b.ins().fadd(a, b),
                        None => a,
                    },
                    Epilogue::Relu => {
                        let zz = e.float_const(ty, 0.0);
                        e.clamp_lo(ty, a, zz)
                    }
                    Epilogue::Clip(lo, hi) => {
                        let l = e.float_const(ty, f32::from_bits(lo));
                        let h = e.float_const(ty, f32::from_bits(hi));
                        let t = e.clamp_lo(ty, a, l);
                        // `h < t ? h : t`: the operand order that x64 lowers to `minps`.
                        let c = e.b.ins().fcmp(FloatCC::LessThan, h, t);
                        e.select_float(ty, c, h, t)
                    }
                    Epilogue::Residual if k.p.res_port.is_some() => {
                        let r = e.b.ins().load(ty, tensor_flags(), rp, off);
                        e.b.ins().fadd(a, r)
                    }
                    Epilogue::Residual => a,
                    Epilogue::Scale(sc) => {
                        let f = e.float_const(ty, f32::from_bits(sc));
                        e.b.ins().fmul(a, f)
                    }
                    Epilogue::HardSwish
                    | Epilogue::Silu
                    | Epilogue::Gelu
                    | Epilogue::GeluTanh
                    | Epilogue::FakeQuantize { .. } => {
                        unreachable!("GEMM kernels only (`kernel_plan`)")
                    }
                };
            }
            e.b.ins().store(tensor_flags(), a, op, off);
        }
    }
}
