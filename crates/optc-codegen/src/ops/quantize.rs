//! Quantization on the generic path: `QuantizeLinear` and `DequantizeLinear` (elementwise
//! maps with per-tensor or per-axis parameters), `DynamicQuantizeLinear`, and the pieces the
//! quantized contractions share: the dynamic parameters of a tensor ([`dynamic_params`]) and
//! the quantization of an f32 tensor into shifted i32 values ([`quantize_shifted`]).

use crate::builder::{Emitter, F32X4, I32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::elementwise::Elementwise;
use crate::ops::map::map;
use crate::ops::math::round_add_clamp;
use crate::ops::operand::Operand;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};
use optc_ir::linear_quantization::range;
use optc_ir::{DType, TensorType};

/// A scale or zero point of a tensor of shape `x`: one value, or one per index of `axis`.
fn param(p: Value, ty: &TensorType, x: &[usize], axis: usize) -> Operand {
    let mut strides = vec![0i64; x.len()];
    if ty.numel() != 1 {
        strides[axis] = 1;
    }
    Operand {
        p,
        dt: ty.dtype,
        base: 0,
        strides,
    }
}

pub(super) fn lower_quantize_linear(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    axis: usize,
) -> Result<()> {
    let oty = &info.outs[0];
    let (lo, hi) = range(oty.dtype).ok_or_else(|| info.err("quantizes to u8 or i8 only"))?;
    let x = &info.ins[0].shape;
    let mut v = vec![Operand::dense(ins[0], &info.ins[0])];
    for (&p, t) in ins.iter().zip(&info.ins).skip(1) {
        v.push(param(p, t, x, axis));
    }
    let f = Elementwise::Quantize {
        lo,
        hi,
        zero: ins.len() > 2,
    };
    map(e, info, &oty.shape, Operand::dense(out, oty), &v, &f)
}

pub(super) fn lower_dequantize_linear(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    axis: usize,
) -> Result<()> {
    let oty = &info.outs[0];
    let x = &info.ins[0].shape;
    let mut v = vec![Operand::dense(ins[0], &info.ins[0])];
    for (&p, t) in ins.iter().zip(&info.ins).skip(1) {
        v.push(param(p, t, x, axis));
    }
    let f = Elementwise::Dequantize {
        zero: ins.len() > 2,
    };
    map(e, info, &oty.shape, Operand::dense(out, oty), &v, &f)
}

/// `x < m ? x : m` (and `>` for the maximum): NaN never wins.
fn keep_smaller(e: &mut Emitter, ty: Type, x: Value, m: Value, larger: bool) -> Value {
    let cc = if larger {
        FloatCC::GreaterThan
    } else {
        FloatCC::LessThan
    };
    let c = e.b.ins().fcmp(cc, x, m);
    e.select_float(ty, c, x, m)
}

/// The parameters `DynamicQuantizeLinear` chooses for the `n` floats at `x`
/// (`optc_ir::QuantParams::dynamic`, step by step): the range `[min(0, min x), max(0, max x)]`
/// ignoring NaNs, `scale = (hi - lo) / 255` (1 when 0), `zero = clamp(round_half_even(-lo /
/// scale), 0, 255)`. Returns the scale and the zero point as an f32 (an integer value).
pub(crate) fn dynamic_params(e: &mut Emitter, x: Value, n: usize) -> (Value, Value) {
    let zv = e.float_const(F32X4, 0.0);
    let (lo_v, hi_v) = (e.b.declare_var(F32X4), e.b.declare_var(F32X4));
    e.b.def_var(lo_v, zv);
    e.b.def_var(hi_v, zv);
    let z = e.float_const(types::F32, 0.0);
    let (lo_s, hi_s) = (e.b.declare_var(types::F32), e.b.declare_var(types::F32));
    e.b.def_var(lo_s, z);
    e.b.def_var(hi_s, z);
    let start = e.int_const(0);
    e.vector_loop(
        n,
        &[start],
        &[true],
        &mut |e, o| {
            let v = e.load(F32X4, x, o[0]);
            let (l, h) = (e.b.use_var(lo_v), e.b.use_var(hi_v));
            let l = keep_smaller(e, F32X4, v, l, false);
            let h = keep_smaller(e, F32X4, v, h, true);
            e.b.def_var(lo_v, l);
            e.b.def_var(hi_v, h);
        },
        &mut |e, o| {
            let v = e.load(types::F32, x, o[0]);
            let (l, h) = (e.b.use_var(lo_s), e.b.use_var(hi_s));
            let l = keep_smaller(e, types::F32, v, l, false);
            let h = keep_smaller(e, types::F32, v, h, true);
            e.b.def_var(lo_s, l);
            e.b.def_var(hi_s, h);
        },
    );
    let (mut lo, mut hi) = (e.b.use_var(lo_s), e.b.use_var(hi_s));
    let (lv, hv) = (e.b.use_var(lo_v), e.b.use_var(hi_v));
    for lane in 0..4u8 {
        let l = e.b.ins().extractlane(lv, lane);
        let h = e.b.ins().extractlane(hv, lane);
        lo = keep_smaller(e, types::F32, l, lo, false);
        hi = keep_smaller(e, types::F32, h, hi, true);
    }
    let range = e.b.ins().fsub(hi, lo);
    let steps = e.float_const(types::F32, 255.0);
    let scale = e.b.ins().fdiv(range, steps);
    let empty = e.b.ins().fcmp(FloatCC::Equal, scale, z);
    let one = e.float_const(types::F32, 1.0);
    let scale = e.b.ins().select(empty, one, scale);
    let nlo = e.b.ins().fneg(lo);
    let q = e.b.ins().fdiv(nlo, scale);
    let r = e.b.ins().nearest(q);
    let r = e.b.ins().fmax(r, z);
    let r = e.b.ins().fmin(r, steps);
    // through an integer, as `as u8` does (a NaN becomes 0)
    let zi = e.b.ins().fcvt_to_sint_sat(types::I32, r);
    let zero = e.b.ins().fcvt_from_sint(types::F32, zi);
    (scale, zero)
}

pub(super) fn lower_dynamic_quantize_linear(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    outs: &[Value],
) -> Result<()> {
    let xt = &info.ins[0];
    let (scale, zero) = dynamic_params(e, x, xt.numel());
    let z0 = e.int_const(0);
    e.store(scale, outs[1], z0);
    let zi = e.b.ins().fcvt_to_sint_sat(types::I32, zero);
    let zb = e.b.ins().ireduce(types::I8, zi);
    e.store(zb, outs[2], z0);
    let rank = xt.rank();
    let one = |p: Value, dt: DType| Operand {
        p,
        dt,
        base: 0,
        strides: vec![0; rank],
    };
    let ops = [
        Operand::dense(x, xt),
        one(outs[1], DType::F32),
        one(outs[2], DType::U8),
    ];
    let f = Elementwise::Quantize {
        lo: 0,
        hi: 255,
        zero: true,
    };
    map(
        e,
        info,
        &xt.shape,
        Operand::dense(outs[0], &info.outs[0]),
        &ops,
        &f,
    )
}

/// Quantize the `n` floats at `x` into i32 at `out`: `q - zero` with
/// `q = clamp(round_half_even(x * inverse) + zero, 0, 255)` (optc's int8 ops multiply by the
/// reciprocal, see `optc_ir::quantized`), f32x4 then scalar.
pub(crate) fn quantize_shifted(
    e: &mut Emitter,
    x: Value,
    out: Value,
    n: usize,
    inverse: Value,
    zero: Value,
) {
    let inv_v = e.b.ins().splat(F32X4, inverse);
    let zero_v = e.b.ins().splat(F32X4, zero);
    let zi = e.b.ins().fcvt_to_sint_sat(types::I32, zero);
    let zi_v = e.b.ins().splat(I32X4, zi);
    let start = e.int_const(0);
    e.vector_loop(
        n,
        &[start],
        &[true],
        &mut |e, o| {
            let v = e.load(F32X4, x, o[0]);
            let q = e.b.ins().fmul(v, inv_v);
            let r = round_add_clamp(e, F32X4, q, zero_v, 0, 255);
            let i = e.b.ins().fcvt_to_sint_sat(I32X4, r);
            let s = e.b.ins().isub(i, zi_v);
            e.store(s, out, o[0]);
        },
        &mut |e, o| {
            let v = e.load(types::F32, x, o[0]);
            let q = e.b.ins().fmul(v, inverse);
            let r = round_add_clamp(e, types::F32, q, zero, 0, 255);
            let i = e.b.ins().fcvt_to_sint_sat(types::I32, r);
            let s = e.b.ins().isub(i, zi);
            e.store(s, out, o[0]);
        },
    );
}
