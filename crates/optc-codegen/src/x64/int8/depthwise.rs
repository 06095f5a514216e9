//! Depthwise int8 convs (one input channel per output channel), vectorized by Cranelift:
//! per channel, the input plane is quantized into the task's buffer as `xq - xz` in f32
//! (zero-padded: padding quantizes to `xz`), then each output row is summed 4 pixels at a
//! time. Every product is an integer of magnitude at most 255 x 128 and a window has fewer
//! than 2^24 / 32640 taps (the plan checks it), so every partial sum is an exact f32 integer
//! in any order: the sums equal the interpreter's i32 ones. Then `acc * scale[c] (+ bias[c])`,
//! each rounded; fused steps run afterwards.

use super::driver::tables;
use super::Int8Plan;
use crate::builder::{tensor_flags, zero_span, Emitter, F32X4};
use crate::ops::conv::ConvGeometry;
use crate::x64::asm::quantize::{PARAM_INVERSE, PARAM_ZERO_F32};
use crate::x64::gemm::Unit;
use crate::x64::kernel_plan::KernelPlan;
use crate::x64::tasks::KernelArgs;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};

/// Quantize `v` (f32 or f32x4) to `q - zero` in f32 (see `optc_ir::quantized`).
fn quantize(e: &mut Emitter, ty: Type, v: Value, inv: Value, zf: Value) -> Value {
    let zero = e.float_const(ty, 0.0);
    let c255 = e.float_const(ty, 255.0);
    let r = e.b.ins().fmul(v, inv);
    let r = e.b.ins().nearest(r);
    let r = e.b.ins().fadd(r, zf);
    // r > 0 ? r : 0 (a NaN gives 0), then r < 255 ? r : 255.
    let pos = e.b.ins().fcmp(FloatCC::GreaterThan, r, zero);
    let r = e.select_float(ty, pos, r, zero);
    let below = e.b.ins().fcmp(FloatCC::LessThan, r, c255);
    let r = e.select_float(ty, below, r, c255);
    e.b.ins().fsub(r, zf)
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
    let inv = e.b.ins().load(f32t, tensor_flags(), params, PARAM_INVERSE);
    let zf = e.b.ins().load(f32t, tensor_flags(), params, PARAM_ZERO_F32);
    let inv4 = e.b.ins().splat(F32X4, inv);
    let zf4 = e.b.ins().splat(F32X4, zf);
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
    e.loop_offsets(
        mrows as i64,
        &[xo, yo, co, wo],
        &[hw as i64, ohw as i64, 4, (taps * 4) as i64],
        &mut |e, _i, o| {
            let (xo, yo, co, wo) = (o[0], o[1], o[2], o[3]);
            // The plane, quantized, into the buffer's interior.
            let d0 = e.int_const(((g.ph * g.wp + g.pw) * 4) as i64);
            e.loop_offsets(
                g.h as i64,
                &[xo, d0],
                &[(g.w * 4) as i64, (g.wp * 4) as i64],
                &mut |e, _y, r| {
                    e.vector_loop(
                        g.w,
                        &[r[0], r[1]],
                        &[true, true],
                        &mut |e, s| {
                            let v = e.load(F32X4, c.ins[0], s[0]);
                            let qv = quantize(e, F32X4, v, inv4, zf4);
                            e.store(qv, buf, s[1]);
                        },
                        &mut |e, s| {
                            let v = e.load(f32t, c.ins[0], s[0]);
                            let qv = quantize(e, f32t, v, inv, zf);
                            e.store(qv, buf, s[1]);
                        },
                    );
                },
            );
            let scale = e.load(f32t, scales, co);
            let scale4 = e.b.ins().splat(F32X4, scale);
            let b = bias.map(|bv| e.load(f32t, bv, co));
            let wp = e.b.ins().iadd(wts, wo);
            // Output pixel `ox` of row `oy` reads the buffer at `(oy sh + kh dh) wp + ox sw + kw dw`.
            let z = e.int_const(0);
            e.loop_offsets(
                g.oh as i64,
                &[z, yo],
                &[(g.sh * g.wp * 4) as i64, (g.ow * 4) as i64],
                &mut |e, _oy, r| {
                    let (src_row, dst_row) = (r[0], r[1]);
                    let pixel = |e: &mut Emitter, ty: Type, s: Value, d: Value| {
                        let src = e.b.ins().iadd(buf, s);
                        let mut acc = e.float_const(ty, 0.0);
                        for kh in 0..g.kh {
                            for kw in 0..g.kw {
                                let off = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                                let x = if ty == f32t {
                                    e.b.ins().load(f32t, tensor_flags(), src, off)
                                } else if g.sw == 1 {
                                    e.b.ins().load(F32X4, tensor_flags(), src, off)
                                } else {
                                    e.gather4(src, off, g.sw)
                                };
                                let wv = e.b.ins().load(
                                    f32t,
                                    tensor_flags(),
                                    wp,
                                    ((kh * g.kw + kw) * 4) as i32,
                                );
                                let wv = if ty == f32t {
                                    wv
                                } else {
                                    e.b.ins().splat(F32X4, wv)
                                };
                                let prod = e.b.ins().fmul(x, wv);
                                acc = e.b.ins().fadd(acc, prod);
                            }
                        }
                        let sc = if ty == f32t { scale } else { scale4 };
                        let mut y = e.b.ins().fmul(acc, sc);
                        if let Some(bv) = b {
                            let bv = if ty == f32t {
                                bv
                            } else {
                                e.b.ins().splat(F32X4, bv)
                            };
                            y = e.b.ins().fadd(y, bv);
                        }
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
    let _ = taps;
}
