//! Depthwise conv (`Kind::Dw`): one input channel per output channel, vectorized along output
//! rows (f32x4), `ROWS` output rows per pass so every input vector load feeds up to `kh` of
//! them, the epilogue applied in registers.
//!
//! A padded conv copies each channel into one zero-bordered plane per work unit (the borders
//! are zeroed once per unit, only the interior is rewritten per channel). Reading from that
//! plane may run past a row (the lanes are dropped) and past the last plane (into the slack
//! that `Plan::pad_bytes` adds), which lets
//! - stride 2 gather its 4 pixels with two vector loads and one `shufps` (even/odd lanes),
//! - a row's last 1..3 pixels be computed as one vector and stored partially.
//!
//! An unpadded conv reads its input in place, never past a row: scalar tails, lane gathers.

use super::*;
use cranelift_codegen::ir::{ConstantData, Endianness, MemFlagsData};

/// Output rows computed together.
const ROWS: usize = 2;
/// Vectors (of 4 output pixels) per row per step.
const NV: usize = 2;

/// Bytes readable past the last padded plane (see the module docs).
pub(super) fn slack_bytes(g: &ConvGeom) -> usize {
    (8 * g.sw + 16) * 4
}

struct K<'a> {
    p: &'a Plan,
    g: &'a ConvGeom,
    padded: bool,
    /// Scalar weights and their splats.
    ws: Vec<Value>,
    wv: Vec<Value>,
    bs: Option<Value>,
    bv: Option<Value>,
}

/// Channels `[row0, row0 + nch)` of image `img`.
pub(super) fn emit_dw(
    e: &mut E,
    p: &Plan,
    g: &ConvGeom,
    c: &Ctx,
    img: Value,
    row0: Value,
    nch: usize,
) {
    let kk = g.kh * g.kw;
    let padded = p.pad_bytes() > 0;
    let xplane = (g.hp * g.wp * 4) as i64;
    let iplane = (g.h * g.w * 4) as i64;
    let oplane = (g.oh * g.ow * 4) as i64;
    let ich = e.b.ins().imul_imm_s(img, g.c as i64);
    let ch0 = e.b.ins().iadd(ich, row0);
    let io = e.b.ins().imul_imm_s(ch0, iplane);
    let oo = e.b.ins().imul_imm_s(ch0, oplane);
    let wo = e.b.ins().imul_imm_s(row0, (kk * 4) as i64);
    let bo = e.b.ins().imul_imm_s(row0, 4);
    // The unit's plane: the slot of its first channel (units own disjoint channels).
    let buf = if padded {
        let po = e.b.ins().imul_imm_s(ch0, xplane);
        let buf = e.b.ins().iadd(c.scratch, po);
        let plane = g.hp * g.wp;
        let zv = e.fc(F32X4, 0.0);
        let z = e.ic(0);
        e.loop_offs((plane / 4) as i64, &[z], &[16], &mut |e, _i, q| {
            e.st(zv, buf, q[0]);
        });
        let zs = e.fc(types::F32, 0.0);
        for t in (plane / 4) * 4..plane {
            e.b.ins().store(mf(), zs, buf, (t * 4) as i32);
        }
        Some(buf)
    } else {
        None
    };
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    e.loop_offs(
        nch as i64,
        &[io, oo, wo, bo],
        &[iplane, oplane, (kk * 4) as i64, 4],
        &mut |e, _ch, o| {
            let xc = match buf {
                Some(buf) => {
                    let d0 = e.ic(((g.ph * g.wp + g.pw) * 4) as i64);
                    e.loop_offs(
                        g.h as i64,
                        &[d0, o[0]],
                        &[g.wp as i64 * 4, g.w as i64 * 4],
                        &mut |e, _r, q| e.copy_bytes(buf, q[0], c.ins[0], q[1], g.w * 4),
                    );
                    buf
                }
                None => e.b.ins().iadd(c.ins[0], o[0]),
            };
            let pw = e.b.ins().iadd(c.ins[1], o[2]);
            let ws: Vec<Value> = (0..kk)
                .map(|q| e.b.ins().load(types::F32, mf(), pw, (q * 4) as i32))
                .collect();
            let wv: Vec<Value> = ws.iter().map(|&s| e.b.ins().splat(F32X4, s)).collect();
            let bs = bias.map(|bp| {
                let a = e.b.ins().iadd(bp, o[3]);
                e.b.ins().load(types::F32, mf(), a, 0)
            });
            let bv = bs.map(|s| e.b.ins().splat(F32X4, s));
            let k = K {
                p,
                g,
                padded,
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
            let rows = ROWS.min(g.oh);
            let nfull = g.oh / rows;
            let xstep = (rows * g.sh * g.wp * 4) as i64;
            let ostep = (rows * g.ow * 4) as i64;
            e.loop_offs(
                nfull as i64,
                &[xc, op, rp],
                &[xstep, ostep, ostep],
                &mut |e, _r, q| row_pass(e, &k, rows, q[0], q[1], q[2]),
            );
            for r in nfull * rows..g.oh {
                let x = e.b.ins().iadd_imm_s(xc, (r * g.sh * g.wp * 4) as i64);
                let oo = (r * g.ow * 4) as i64;
                let o2 = e.b.ins().iadd_imm_s(op, oo);
                let r2 = e.b.ins().iadd_imm_s(rp, oo);
                row_pass(e, &k, 1, x, o2, r2);
            }
        },
    );
}

/// `nr` output rows: input row pointer `xp` (of the first output row), output and residual
/// row pointers `op`, `rp`.
fn row_pass(e: &mut E, k: &K, nr: usize, xp: Value, op: Value, rp: Value) {
    let g = k.g;
    let step = 4 * NV;
    let nstep = g.ow / step;
    e.loop_offs(
        nstep as i64,
        &[xp, op, rp],
        &[
            (step * g.sw * 4) as i64,
            (step * 4) as i64,
            (step * 4) as i64,
        ],
        &mut |e, _i, q| px(e, k, nr, NV, 4, q[0], q[1], q[2]),
    );
    let mut done = nstep * step;
    let at = |e: &mut E, done: usize| {
        let x = e.b.ins().iadd_imm_s(xp, (done * g.sw * 4) as i64);
        let o = e.b.ins().iadd_imm_s(op, (done * 4) as i64);
        let r = e.b.ins().iadd_imm_s(rp, (done * 4) as i64);
        (x, o, r)
    };
    while g.ow - done >= 4 {
        let (x, o, r) = at(e, done);
        px(e, k, nr, 1, 4, x, o, r);
        done += 4;
    }
    let rest = g.ow - done;
    if rest == 0 {
        return;
    }
    let (x, o, r) = at(e, done);
    if k.padded {
        px(e, k, nr, 1, rest, x, o, r);
    } else {
        e.loop_offs(
            rest as i64,
            &[x, o, r],
            &[g.sw as i64 * 4, 4, 4],
            &mut |e, _i, q| px(e, k, nr, 0, 1, q[0], q[1], q[2]),
        );
    }
}

fn f32x4_to_bytes(e: &mut E, v: Value) -> Value {
    e.b.ins().bitcast(
        types::I8X16,
        MemFlagsData::new().with_endianness(Endianness::Little),
        v,
    )
}

/// Lanes `[l0, l1, l2, l3]` of the concatenation `a ++ b` (f32x4 each).
fn shuffle32(e: &mut E, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    let ab = f32x4_to_bytes(e, a);
    let bb = f32x4_to_bytes(e, b);
    let mask: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |i| l * 4 + i))
        .collect();
    let imm = e.b.func.dfg.immediates.push(ConstantData::from(mask));
    let s = e.b.ins().shuffle(ab, bb, imm);
    e.b.ins().bitcast(
        F32X4,
        MemFlagsData::new().with_endianness(Endianness::Little),
        s,
    )
}

/// `nr` output rows x `nv` vectors (or one scalar pixel when `nv == 0`) at input/output/
/// residual pointers; only the first `lanes` pixels of each vector are stored.
#[allow(clippy::too_many_arguments)]
fn px(e: &mut E, k: &K, nr: usize, nv: usize, lanes: usize, xp: Value, op: Value, rp: Value) {
    let g = k.g;
    let vec = nv > 0;
    let ty = if vec { F32X4 } else { types::F32 };
    let nacc = nv.max(1);
    let z = e.fc(ty, 0.0);
    let mut acc = vec![vec![z; nacc]; nr];
    // Stride-2 pairs loaded so far, by element offset.
    let mut pairs: HashMap<i64, (Value, Value)> = HashMap::new();
    let pair = |e: &mut E, pairs: &mut HashMap<i64, (Value, Value)>, s: i64| {
        *pairs.entry(s).or_insert_with(|| {
            let a = e.b.ins().load(F32X4, mf(), xp, (s * 4) as i32);
            let b = e.b.ins().load(F32X4, mf(), xp, (s * 4 + 16) as i32);
            (a, b)
        })
    };
    let in_rows = (nr - 1) * g.sh + (g.kh - 1) * g.dh + 1;
    for ir in 0..in_rows {
        // (output row, kernel row) pairs this input row feeds.
        let uses: Vec<(usize, usize)> = (0..nr)
            .filter_map(|j| {
                let d = ir.checked_sub(j * g.sh)?;
                (d % g.dh == 0 && d / g.dh < g.kh).then_some((j, d / g.dh))
            })
            .collect();
        if uses.is_empty() {
            continue;
        }
        for kw in 0..g.kw {
            for v in 0..nacc {
                let s = (ir * g.wp + v * 4 * g.sw + kw * g.dw) as i64;
                let xv = if !vec {
                    e.b.ins().load(types::F32, mf(), xp, (s * 4) as i32)
                } else if g.sw == 1 {
                    e.b.ins().load(F32X4, mf(), xp, (s * 4) as i32)
                } else if g.sw == 2 && k.padded {
                    if let Some(&(a, b)) = pairs.get(&(s - 1)) {
                        shuffle32(e, a, b, [1, 3, 5, 7])
                    } else {
                        let (a, b) = pair(e, &mut pairs, s);
                        shuffle32(e, a, b, [0, 2, 4, 6])
                    }
                } else {
                    let s0 = e.b.ins().load(types::F32, mf(), xp, (s * 4) as i32);
                    let mut x = e.b.ins().scalar_to_vector(F32X4, s0);
                    for l in 1..lanes {
                        let off = ((s + (l * g.sw) as i64) * 4) as i32;
                        let sl = e.b.ins().load(types::F32, mf(), xp, off);
                        x = e.b.ins().insertlane(x, sl, l as u8);
                    }
                    x
                };
                for &(j, khi) in &uses {
                    let q = khi * g.kw + kw;
                    let wq = if vec { k.wv[q] } else { k.ws[q] };
                    acc[j][v] = e.mul_add(wq, xv, acc[j][v]);
                }
            }
        }
    }
    for (j, row) in acc.into_iter().enumerate() {
        let ro = (j * g.ow * 4) as i32;
        for (v, mut a) in row.into_iter().enumerate() {
            let off = ro + (v * 16) as i32;
            for st in &k.p.ep {
                a = match *st {
                    Ep::BiasRow | Ep::BiasCol => match if vec { k.bv } else { k.bs } {
                        Some(b) => e.b.ins().fadd(a, b),
                        None => a,
                    },
                    Ep::Relu => {
                        let zz = e.fc(ty, 0.0);
                        e.clamp_lo(ty, a, zz)
                    }
                    Ep::Clip(lo, hi) => {
                        let l = e.fc(ty, f32::from_bits(lo));
                        let h = e.fc(ty, f32::from_bits(hi));
                        let t = e.clamp_lo(ty, a, l);
                        e.clamp_hi(ty, t, h)
                    }
                    Ep::Residual if k.p.res_port.is_some() => {
                        let r = if !vec || lanes == 4 {
                            e.b.ins().load(ty, mf(), rp, off)
                        } else {
                            let s0 = e.b.ins().load(types::F32, mf(), rp, off);
                            let mut r = e.b.ins().scalar_to_vector(F32X4, s0);
                            for l in 1..lanes {
                                let sl = e.b.ins().load(types::F32, mf(), rp, off + (l * 4) as i32);
                                r = e.b.ins().insertlane(r, sl, l as u8);
                            }
                            r
                        };
                        e.b.ins().fadd(a, r)
                    }
                    Ep::Residual => a,
                    Ep::Scale(sc) => {
                        let f = e.fc(ty, f32::from_bits(sc));
                        e.b.ins().fmul(a, f)
                    }
                };
            }
            store_lanes(e, a, vec, lanes, op, off);
        }
    }
}

/// Store the first `lanes` lanes of `a` (all of a scalar).
fn store_lanes(e: &mut E, a: Value, vec: bool, lanes: usize, p: Value, off: i32) {
    if !vec || lanes == 4 {
        e.b.ins().store(mf(), a, p, off);
        return;
    }
    if lanes >= 2 {
        let d = e.b.ins().bitcast(
            types::F64X2,
            MemFlagsData::new().with_endianness(Endianness::Little),
            a,
        );
        let lo = e.b.ins().extractlane(d, 0);
        e.b.ins().store(mf(), lo, p, off);
    }
    if lanes != 2 {
        let l = if lanes == 1 { 0 } else { 2 };
        let s = e.b.ins().extractlane(a, l as u8);
        e.b.ins().store(mf(), s, p, off + (l * 4) as i32);
    }
}
