//! 2-D MaxPool split across tasks by planes (image x channel), separable: a vertical max of
//! the window rows into a row buffer, then a horizontal max along that row (stride 2 by an
//! even/odd `shufps` deinterleave, stride 1 by unaligned loads, others by lane gathers).
//!
//! Semantics are the reference's: padding and NaN cells are skipped (`acc = v > acc || acc
//! is NaN ? v : acc`, a max that ignores NaN unless every cell is NaN), which is associative
//! and commutative, so the separable order gives the same result. Each task copies its plane
//! into a NaN-padded buffer first.

use super::kernel_plan::KernelPlan;
use super::tasks::{acquire_slot, release_slot, task_units, KernelArgs};
use crate::builder::{fill, shuffle_lanes, tensor_flags, Emitter, F32X4};
use crate::ops::pool::MaxPoolGeometry;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};

/// Planes per work unit: about 32 units, at least 1 plane each.
pub(super) fn plane_rows(planes: usize) -> usize {
    planes.div_ceil(32).max(1)
}

/// Scratch bytes per task: the padded plane and the row buffer (with slack for the last
/// vector's over-read).
pub(super) fn task_bytes(g: &MaxPoolGeometry) -> usize {
    (g.hp * g.wp + g.wp + 32) * 4
}

/// `acc = (v > acc || acc is NaN) ? v : acc`.
pub(super) fn step(e: &mut Emitter, ty: Type, v: Value, acc: Value) -> Value {
    let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
    let un = e.b.ins().fcmp(FloatCC::Unordered, acc, acc);
    let take = e.b.ins().bor(gt, un);
    e.select_float(ty, take, v, acc)
}

/// The planes of task `t`.
pub(super) fn emit_task(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &MaxPoolGeometry,
    c: &KernelArgs,
    t: Value,
) {
    let (lo, hi) = task_units(e, p, t);
    let slot = acquire_slot(e, p, c);
    let o = e.b.ins().imul_imm_s(slot, task_bytes(g) as i64);
    let pbuf = e.b.ins().iadd(c.scratch, o);
    let vrow = e.b.ins().iadd_imm_s(pbuf, (g.hp * g.wp * 4) as i64);
    // Units are runs of `mrows` planes (the last one shorter).
    let p0 = e.b.ins().imul_imm_s(lo, p.mrows as i64);
    let p1 = e.b.ins().imul_imm_s(hi, p.mrows as i64);
    let cap = e.int_const(g.planes as i64);
    let p1 = e.b.ins().smin(p1, cap);
    e.loop_range(p0, p1, &mut |e, pl| plane(e, g, c, pbuf, vrow, pl));
    release_slot(e, p, c, slot);
}

pub(super) fn plane(
    e: &mut Emitter,
    g: &MaxPoolGeometry,
    c: &KernelArgs,
    pbuf: Value,
    vrow: Value,
    pl: Value,
) {
    let xplane = (g.h * g.w * 4) as i64;
    let oplane = (g.oh * g.ow * 4) as i64;
    let xo = e.b.ins().imul_imm_s(pl, xplane);
    let x = e.b.ins().iadd(c.ins[0], xo);
    let oo = e.b.ins().imul_imm_s(pl, oplane);
    let out = e.b.ins().iadd(c.out, oo);
    let nanv = e.float_const(F32X4, f32::NAN);
    let nans = e.float_const(types::F32, f32::NAN);
    let fill = |e: &mut Emitter, d: Value, from: usize, to: usize| fill(e, d, from, to, f32::NAN);
    // NaN-padded copy: rows [0, ph) and [ph + h, hp) all NaN; the rest NaN | row | NaN.
    let wrow = (g.wp * 4) as i64;
    e.loop_offsets(g.ph as i64, &[pbuf], &[wrow], &mut |e, _r, o| {
        fill(e, o[0], 0, g.wp)
    });
    let d0 = e.b.ins().iadd_imm_s(pbuf, g.ph as i64 * wrow);
    e.loop_offsets(
        g.h as i64,
        &[x, d0],
        &[(g.w * 4) as i64, wrow],
        &mut |e, _r, o| {
            let (s, d) = (o[0], o[1]);
            fill(e, d, 0, g.pw);
            for k in 0..g.w / 4 {
                let v = e.b.ins().load(F32X4, tensor_flags(), s, (k * 16) as i32);
                e.b.ins()
                    .store(tensor_flags(), v, d, ((g.pw + 4 * k) * 4) as i32);
            }
            for k in (g.w / 4) * 4..g.w {
                let v =
                    e.b.ins()
                        .load(types::F32, tensor_flags(), s, (k * 4) as i32);
                e.b.ins()
                    .store(tensor_flags(), v, d, ((g.pw + k) * 4) as i32);
            }
            fill(e, d, g.pw + g.w, g.wp);
        },
    );
    let d1 = e.b.ins().iadd_imm_s(pbuf, (g.ph + g.h) as i64 * wrow);
    e.loop_offsets(
        (g.hp - g.ph - g.h) as i64,
        &[d1],
        &[wrow],
        &mut |e, _r, o| fill(e, o[0], 0, g.wp),
    );
    // The row buffer's slack stays NaN (read by the last vector, never selected... but
    // keep it defined).
    fill(e, vrow, g.wp, g.wp + 32);
    let nvr = g.wp / 4;
    let nv = g.ow / 4;
    let z = e.int_const(0);
    e.loop_offsets(
        g.oh as i64,
        &[z, z],
        &[(g.sh * g.wp * 4) as i64, (g.ow * 4) as i64],
        &mut |e, _r, ro| {
            // Vertical max of the window's rows.
            let src = e.b.ins().iadd(pbuf, ro[0]);
            let vert = |e: &mut Emitter, ty: Type, off: i32| {
                let mut acc = e.b.ins().load(ty, tensor_flags(), src, off);
                for kh in 1..g.kh {
                    let o = off + (kh * g.dh * g.wp * 4) as i32;
                    let v = e.b.ins().load(ty, tensor_flags(), src, o);
                    acc = step(e, ty, v, acc);
                }
                acc
            };
            for k in 0..nvr {
                let v = vert(e, F32X4, (k * 16) as i32);
                e.b.ins().store(tensor_flags(), v, vrow, (k * 16) as i32);
            }
            for k in nvr * 4..g.wp {
                let v = vert(e, types::F32, (k * 4) as i32);
                e.b.ins().store(tensor_flags(), v, vrow, (k * 4) as i32);
            }
            // Horizontal max along the row buffer.
            let dst = e.b.ins().iadd(out, ro[1]);
            let z = e.int_const(0);
            e.loop_offsets(
                nv as i64,
                &[z, z],
                &[(4 * g.sw * 4) as i64, 16],
                &mut |e, _c, o| {
                    let s = e.b.ins().iadd(vrow, o[0]);
                    let mut acc = None;
                    for kw in 0..g.kw {
                        let off = (kw * g.dw * 4) as i32;
                        let v = match g.sw {
                            1 => e.b.ins().load(F32X4, tensor_flags(), s, off),
                            2 => {
                                let a = e.b.ins().load(F32X4, tensor_flags(), s, off);
                                let b = e.b.ins().load(F32X4, tensor_flags(), s, off + 16);
                                shuffle_lanes(e, a, b, [0, 2, 4, 6])
                            }
                            sw => e.gather4(s, off, sw),
                        };
                        acc = Some(match acc {
                            None => v,
                            Some(a) => step(e, F32X4, v, a),
                        });
                    }
                    let acc = acc.unwrap_or(nanv);
                    e.store(acc, dst, o[1]);
                },
            );
            for j in nv * 4..g.ow {
                let mut acc = nans;
                for kw in 0..g.kw {
                    let off = ((j * g.sw + kw * g.dw) * 4) as i32;
                    let v = e.b.ins().load(types::F32, tensor_flags(), vrow, off);
                    acc = step(e, types::F32, v, acc);
                }
                e.b.ins().store(tensor_flags(), acc, dst, (j * 4) as i32);
            }
        },
    );
}
