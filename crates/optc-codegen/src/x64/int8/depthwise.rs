//! Depthwise int8 convs (one input channel per output channel): the input planes are quantized
//! into the task's buffer as `xq - xz` in f32 by the AVX2 rows routine (padding quantizes to
//! `xz`: 0 here), then summed by the f32 depthwise kernel of `crate::x64::asm::depthwise`
//! (strides 1 and 2, up to 9 taps; it pads by itself) and dequantized in place with the fused
//! Relu/Clip; other geometries sum each channel's zero-padded plane 4 pixels at a time in
//! Cranelift code. Every product is an integer of magnitude at most 255 x 128 and a window has fewer
//! than 2^24 / 32640 taps (the plan checks it), so every partial sum is an exact f32 integer
//! in any order: the sums equal the interpreter's i32 ones. Then `acc * scale[c] (+ bias[c])`,
//! each rounded, and the leading Relu/Clip steps; further fused steps run afterwards.

use super::driver::tables;
use super::Int8Plan;
use crate::builder::{shuffle_lanes, tensor_flags, zero_span, Emitter, F32X4};
use crate::ops::conv::ConvGeometry;
use crate::x64::asm::depthwise::DepthwiseKey;
use crate::x64::asm::quantize::QuantizeKey;
use crate::x64::asm::{Epilogue, Routine};
use crate::x64::depthwise::depthwise_geometry;
use crate::x64::gemm::Unit;
use crate::x64::kernel_plan::KernelPlan;
use crate::x64::tasks::KernelArgs;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};

/// The f32 depthwise kernel (`crate::x64::asm::depthwise`, no epilogue) that sums the windows
/// of quantized planes, when it supports the geometry.
pub(super) fn sum_key(g: &ConvGeometry) -> Option<DepthwiseKey> {
    // (Windows of at most 9 taps: the int8 path's kernel is the AVX2 one.)
    DepthwiseKey::new(depthwise_geometry(g), vec![], false)
}

/// The routine quantizing to `q - zero` in f32: whole planes back to back for [`sum_key`]'s
/// kernel (which pads by itself), else rows into a zero-padded plane.
pub(super) fn rows_key(g: &ConvGeometry) -> QuantizeKey {
    let k = if sum_key(g).is_some() { g.h * g.w } else { g.w };
    QuantizeKey::Rows {
        element_bytes: 4,
        k,
    }
}

/// Bytes of a task's buffer: the unit's quantized planes, or one padded plane (and slack for
/// the rounded-up rows and the stride-2 loads).
pub(super) fn buffer_bytes(g: &ConvGeometry, mrows: usize) -> usize {
    if sum_key(g).is_some() {
        mrows * g.h * g.w * 4 + 64
    } else {
        g.hp * g.wp * 4 + 64
    }
}

/// The fused Relu / Clip steps, with the tile kernels' semantics (`vmaxps`, `vminps`).
fn pointwise_steps(e: &mut Emitter, ty: Type, mut y: Value, steps: &[Epilogue]) -> Value {
    let max = |e: &mut Emitter, y: Value, lo: Value| {
        let gt = e.b.ins().fcmp(FloatCC::GreaterThan, y, lo);
        e.select_float(ty, gt, y, lo)
    };
    for s in steps {
        match *s {
            Epilogue::Relu => {
                let z = e.float_const(ty, 0.0);
                y = max(e, y, z);
            }
            Epilogue::Clip(lo, hi) => {
                let lo = e.float_const(ty, f32::from_bits(lo));
                let hi = e.float_const(ty, f32::from_bits(hi));
                y = max(e, y, lo);
                let lt = e.b.ins().fcmp(FloatCC::LessThan, y, hi);
                y = e.select_float(ty, lt, y, hi);
            }
            _ => unreachable!("depthwise tile steps are Relu and Clip"),
        }
    }
    y
}

pub(super) fn emit_unit(
    e: &mut Emitter,
    p: &KernelPlan,
    q: &Int8Plan,
    g: &ConvGeometry,
    c: &KernelArgs,
    u: Unit,
) {
    let Unit {
        pack: buf,
        img,
        row0,
        mrows,
        ..
    } = u;
    let f32t = types::F32;
    let (params, _offsets, scales) = tables(e, q, c);
    let wts = c.extra[q.form_data()];
    let taps = g.kh * g.kw;
    if g.hp != g.h || g.wp != g.w {
        // The border stays 0 for every channel; the interior is rewritten per channel.
        zero_span(e, buf, g.hp * g.wp);
    }
    let (hw, ohw) = (g.h * g.w * 4, g.oh * g.ow * 4);
    let xo = e.b.ins().imul_imm_s(img, (g.c * hw) as i64);
    let xo2 = e.b.ins().imul_imm_s(row0, hw as i64);
    let xo = e.b.ins().iadd(xo, xo2);
    let yo = e.b.ins().imul_imm_s(img, (p.m * ohw) as i64);
    let yo2 = e.b.ins().imul_imm_s(row0, ohw as i64);
    let yo = e.b.ins().iadd(yo, yo2);
    let co = e.b.ins().imul_imm_s(row0, 4);
    let wo = e.b.ins().imul_imm_s(row0, (taps * 4) as i64);
    let bias = q.bias_port.map(|i| c.ins[i]);
    if let Some(key) = sum_key(g) {
        // The unit's planes quantized back to back (one row of h w floats per channel),
        // summed by the f32 kernel (no epilogue), then dequantized in place.
        let x = e.b.ins().iadd(c.ins[0], xo);
        let rows = e.int_const(mrows as i64);
        let ldd = e.int_const(hw as i64);
        let f = c.microkernels[&Routine::Quantize(rows_key(g))];
        e.b.ins().call(f, &[x, buf, rows, ldd, params]);
        let o = e.b.ins().iadd(c.out, yo);
        let w = e.b.ins().iadd(wts, wo);
        let f = c.microkernels[&Routine::Depthwise(key)];
        e.b.ins().call(f, &[buf, o, w, w, rows]);
        e.loop_offsets(
            mrows as i64,
            &[yo, co],
            &[ohw as i64, 4],
            &mut |e, _i, o| {
                let scale = e.load(f32t, scales, o[1]);
                let b = bias.map(|bv| e.load(f32t, bv, o[1]));
                let (s4, b4) = (
                    e.b.ins().splat(F32X4, scale),
                    b.map(|b| e.b.ins().splat(F32X4, b)),
                );
                let body = |e: &mut Emitter, ty: Type, at: &[Value]| {
                    let v = e.load(ty, c.out, at[0]);
                    let (s, b) = if ty == f32t { (scale, b) } else { (s4, b4) };
                    let mut y = e.b.ins().fmul(v, s);
                    if let Some(b) = b {
                        y = e.b.ins().fadd(y, b);
                    }
                    let y = pointwise_steps(e, ty, y, &q.steps);
                    e.store(y, c.out, at[0]);
                };
                e.vector_loop(
                    g.oh * g.ow,
                    &[o[0]],
                    &[true],
                    &mut |e, at| body(e, F32X4, at),
                    &mut |e, at| body(e, f32t, at),
                );
            },
        );
        return;
    }
    e.loop_offsets(
        mrows as i64,
        &[xo, yo, co, wo],
        &[hw as i64, ohw as i64, 4, (taps * 4) as i64],
        &mut |e, _i, o| {
            let (xo, yo, co, wo) = (o[0], o[1], o[2], o[3]);
            // The plane, quantized, into the buffer's interior (rows of `w` rounded up to 8
            // floats: the extra ones are 0, in the padding or in the next row, rewritten
            // after).
            let x = e.b.ins().iadd(c.ins[0], xo);
            let d = e.b.ins().iadd_imm_s(buf, ((g.ph * g.wp + g.pw) * 4) as i64);
            let rows = e.int_const(g.h as i64);
            let ldd = e.int_const((g.wp * 4) as i64);
            let f = c.microkernels[&Routine::Quantize(rows_key(g))];
            e.b.ins().call(f, &[x, d, rows, ldd, params]);
            let scale = e.load(f32t, scales, co);
            let scale4 = e.b.ins().splat(F32X4, scale);
            let b = bias.map(|bv| e.load(f32t, bv, co));
            let wp = e.b.ins().iadd(wts, wo);
            // The channel's weights, scalar and splatted, loaded once.
            let ws: Vec<(Value, Value)> = (0..taps)
                .map(|t| {
                    let w = e.b.ins().load(f32t, tensor_flags(), wp, (t * 4) as i32);
                    (w, e.b.ins().splat(F32X4, w))
                })
                .collect();
            let b4 = b.map(|bv| e.b.ins().splat(F32X4, bv));
            // Output pixel `ox` of row `oy` reads the buffer at `(oy sh + kh dh) wp + ox sw + kw dw`.
            let z = e.int_const(0);
            e.loop_offsets(
                g.oh as i64,
                &[z, yo],
                &[(g.sh * g.wp * 4) as i64, (g.ow * 4) as i64],
                &mut |e, _oy, r| {
                    let (src_row, dst_row) = (r[0], r[1]);
                    let pixel = |e: &mut Emitter, ty: Type, s: Value, d: Value| {
                        let vector = ty != f32t;
                        let src = e.b.ins().iadd(buf, s);
                        let mut acc = e.float_const(ty, 0.0);
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                let off = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                                let x = if !vector {
                                    e.b.ins().load(f32t, tensor_flags(), src, off)
                                } else if g.sw == 1 {
                                    e.b.ins().load(F32X4, tensor_flags(), src, off)
                                } else if g.sw == 2 {
                                    // Lanes 0, 2, 4, 6 of 8 floats (the buffer has slack).
                                    let lo = e.b.ins().load(F32X4, tensor_flags(), src, off);
                                    let hi = e.b.ins().load(F32X4, tensor_flags(), src, off + 16);
                                    shuffle_lanes(e, lo, hi, [0, 2, 4, 6])
                                } else {
                                    e.gather4(src, off, g.sw)
                                };
                                let (w1, w4) = ws[kh * g.kw + kw];
                                // Integers below 2^24: fused or not, exact.
                                acc = e.mul_add(x, if vector { w4 } else { w1 }, acc);
                            }
                        }
                        let sc = if vector { scale4 } else { scale };
                        let mut y = e.b.ins().fmul(acc, sc);
                        if let (Some(b1), Some(b4)) = (b, b4) {
                            y = e.b.ins().fadd(y, if vector { b4 } else { b1 });
                        }
                        let y = pointwise_steps(e, ty, y, &q.steps);
                        e.store(y, c.out, d);
                    };
                    let nv = g.ow / 4;
                    e.loop_offsets(
                        nv as i64,
                        &[src_row, dst_row],
                        &[(4 * g.sw * 4) as i64, 16],
                        &mut |e, _v, s| pixel(e, F32X4, s[0], s[1]),
                    );
                    let s = e.b.ins().iadd_imm_s(src_row, (nv * 4 * g.sw * 4) as i64);
                    let d = e.b.ins().iadd_imm_s(dst_row, (nv * 16) as i64);
                    e.loop_offsets(
                        (g.ow % 4) as i64,
                        &[s, d],
                        &[(g.sw * 4) as i64, 4],
                        &mut |e, _x, s| pixel(e, f32t, s[0], s[1]),
                    );
                },
            );
        },
    );
}
