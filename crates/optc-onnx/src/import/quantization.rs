//! ONNX quantization ops: `QuantizeLinear`, `DequantizeLinear`, `DynamicQuantizeLinear`,
//! `MatMulInteger` and `ConvInteger` map one to one onto their IR ops
//! ([`optc_ir::linear_quantization`]); `QLinearMatMul` and `QLinearConv` are decomposed
//! exactly, as onnxruntime computes them: the integer contraction (`MatMulInteger` /
//! `ConvInteger`, plus the i32 bias), cast to f32, multiplied by the f32 multiplier
//! `(a_scale * b_scale) / y_scale` (per output channel where the scales are), then
//! `QuantizeLinear` with scale 1 and `y`'s zero point (onnxruntime's requantization clamps,
//! rounds half to even and adds the zero point, which is the same thing).
//!
//! Not supported (refused with an error naming the node): blocked quantization
//! (`block_size`), element types other than u8/i8 (float8, int4, int16: their initializers
//! are refused when decoded), f16 scales, `DequantizeLinear` to anything but f32.

use super::{conv_attrs, norm_axis, Ctx, Val, R};
use crate::proto::{dtype_of, onnx_type_name, Attrs};
use optc_ir::{BinaryOp, DType, Op, Tensor, TensorType};
use tract_onnx::pb;

/// Input `k` of `node` (`None` when absent or given as an empty name).
fn required(ctx: &Ctx, node: &pb::NodeProto, k: usize, what: &str) -> R<Val> {
    ctx.input(node, k)
        .ok_or_else(|| format!("required input #{k} (the {what}) is missing"))
}

/// A zero of `dt` with `shape`.
fn zeros(dt: DType, shape: &[usize], name: String) -> Val {
    Val::constant(Tensor::zeros(dt, shape.to_vec()), name)
}

fn check_scale(what: &str, t: &TensorType) -> R<()> {
    if t.dtype != DType::F32 {
        return Err(format!(
            "{what} of type {} is not supported (f32 only)",
            t.dtype
        ));
    }
    Ok(())
}

/// Refuse blocked quantization (opset 21's `block_size`).
fn refuse_blocks(a: &Attrs) -> R<()> {
    match a.int_or("block_size", 0) {
        0 => Ok(()),
        b => Err(format!(
            "blocked quantization (block_size = {b}) is not supported"
        )),
    }
}

/// The IR axis of per-tensor or per-axis parameters `scale` of a tensor of type `x`.
fn param_axis(a: &Attrs, opset: i64, x: &TensorType, scale: &TensorType) -> R<usize> {
    check_scale("a scale", scale)?;
    if scale.numel() == 1 {
        return Ok(0);
    }
    if opset < 13 {
        return Err(format!(
            "per-axis parameters (scale {:?}) need opset 13 or later, the model has opset {opset}",
            scale.shape
        ));
    }
    norm_axis(a.int_or("axis", 1), x.rank(), "axis")
}

/// `v` reshaped to `shape` (folded when it is a constant).
fn reshaped(ctx: &mut Ctx, name: &str, v: Val, shape: Vec<usize>) -> R<Val> {
    if ctx.ty(&v).shape == shape {
        return Ok(v);
    }
    ctx.emit1(name, Op::Reshape { shape }, &[v], true)
}

/// A per-row parameter of a matmul operand (1-D, one per row) as `[M, 1]`; others as is.
fn per_row(ctx: &mut Ctx, name: &str, v: Val) -> R<Val> {
    let t = ctx.ty(&v);
    if t.rank() == 1 && t.numel() != 1 {
        return reshaped(ctx, name, v, vec![t.numel(), 1]);
    }
    Ok(v)
}

/// A per-channel parameter of a conv output of rank `rank` (1-D, one per channel) as
/// `[M, 1, ..]`; others as is.
fn per_channel(ctx: &mut Ctx, name: &str, v: Val, rank: usize) -> R<Val> {
    let t = ctx.ty(&v);
    if t.rank() == 1 && t.numel() != 1 {
        let mut s = vec![1; rank - 1];
        s[0] = t.numel();
        return reshaped(ctx, name, v, s);
    }
    Ok(v)
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let opset = ctx.opset;
    let one = |v: Val| Ok(vec![Some(v)]);
    match node.op_type.as_str() {
        "QuantizeLinear" => {
            refuse_blocks(&a)?;
            let x = required(ctx, node, 0, "input")?;
            let scale = required(ctx, node, 1, "scale")?;
            let (xt, st) = (ctx.ty(&x), ctx.ty(&scale));
            if xt.dtype != DType::F32 {
                return Err(format!(
                    "input of type {} is not supported (f32 only)",
                    xt.dtype
                ));
            }
            let axis = param_axis(&a, opset, &xt, &st)?;
            let zero = ctx.input(node, 2);
            let wanted = match a.int_or("output_dtype", 0) {
                0 => None,
                code => match dtype_of(code as i32) {
                    Some(dt @ (DType::U8 | DType::I8)) => Some(dt),
                    _ => {
                        return Err(format!(
                            "output_dtype {} is not supported (UINT8 or INT8)",
                            onnx_type_name(code as i32)
                        ))
                    }
                },
            };
            let zero = match (zero, wanted) {
                (Some(z), w) => {
                    let dt = ctx.ty(&z).dtype;
                    if !matches!(dt, DType::U8 | DType::I8) {
                        return Err(format!(
                            "a zero point of type {dt} is not supported (u8 or i8)"
                        ));
                    }
                    if w.is_some_and(|w| w != dt) {
                        return Err(format!(
                            "output_dtype {} disagrees with the zero point's type {dt}",
                            w.map_or("?", |d| d.name())
                        ));
                    }
                    z
                }
                (None, w) => zeros(w.unwrap_or(DType::U8), &st.shape, format!("{name}/zero")),
            };
            one(ctx.emit1(name, Op::QuantizeLinear { axis }, &[x, scale, zero], false)?)
        }
        "DequantizeLinear" => {
            refuse_blocks(&a)?;
            if let Some(code) = a.int("output_dtype").filter(|&c| c != 0 && c != 1) {
                return Err(format!(
                    "output_dtype {} is not supported (FLOAT only)",
                    onnx_type_name(code as i32)
                ));
            }
            let x = required(ctx, node, 0, "input")?;
            let scale = required(ctx, node, 1, "scale")?;
            let (xt, st) = (ctx.ty(&x), ctx.ty(&scale));
            if !matches!(xt.dtype, DType::U8 | DType::I8 | DType::I32) {
                return Err(format!(
                    "input of type {} is not supported (u8, i8 or i32)",
                    xt.dtype
                ));
            }
            let axis = param_axis(&a, opset, &xt, &st)?;
            let mut ins = vec![x, scale];
            ins.extend(ctx.input(node, 2));
            // Never folded here: int8 weights stay int8 until the optimizer decides.
            let mut v = ctx.emit_kept(name, Op::DequantizeLinear { axis }, &ins)?;
            one(v.remove(0))
        }
        "DynamicQuantizeLinear" => {
            let x = required(ctx, node, 0, "input")?;
            let xt = ctx.ty(&x);
            if xt.dtype != DType::F32 {
                return Err(format!(
                    "input of type {} is not supported (f32 only)",
                    xt.dtype
                ));
            }
            let v = ctx.emit(name, Op::DynamicQuantizeLinear, &[x], false)?;
            Ok(v.into_iter().map(Some).collect())
        }
        "MatMulInteger" => {
            let a_ = required(ctx, node, 0, "input A")?;
            let b = required(ctx, node, 1, "input B")?;
            let mut ins = vec![a_.clone(), b.clone()];
            let (za, zb) = (ctx.input(node, 2), ctx.input(node, 3));
            if za.is_some() || zb.is_some() {
                let za = match za {
                    Some(z) => per_row(ctx, &format!("{name}/a_zero"), z)?,
                    None => zeros(ctx.ty(&a_).dtype, &[], format!("{name}/a_zero")),
                };
                ins.push(za);
                ins.extend(zb);
            }
            one(ctx.emit1(name, Op::MatMulInteger, &ins, false)?)
        }
        "ConvInteger" => {
            let x = required(ctx, node, 0, "input")?;
            let w = required(ctx, node, 1, "weight")?;
            let (window, group) = conv_attrs(&a, &ctx.ty(&x), &ctx.ty(&w))?;
            let mut ins = vec![x.clone(), w];
            let (zx, zw) = (ctx.input(node, 2), ctx.input(node, 3));
            if zx.is_some() || zw.is_some() {
                ins.push(
                    zx.unwrap_or_else(|| zeros(ctx.ty(&x).dtype, &[], format!("{name}/x_zero"))),
                );
                ins.extend(zw);
            }
            one(ctx.emit1(name, Op::ConvInteger { window, group }, &ins, false)?)
        }
        "QLinearMatMul" => {
            let names = [
                "A",
                "A's scale",
                "A's zero point",
                "B",
                "B's scale",
                "B's zero point",
                "output scale",
                "output zero point",
            ];
            let v: Vec<Val> = (0..8)
                .map(|k| required(ctx, node, k, names[k]))
                .collect::<R<_>>()?;
            for k in [1, 4, 6] {
                check_scale(names[k], &ctx.ty(&v[k]))?;
            }
            let za = per_row(ctx, &format!("{name}/a_zero"), v[2].clone())?;
            let acc = ctx.emit1(
                &format!("{name}/integer"),
                Op::MatMulInteger,
                &[v[0].clone(), v[3].clone(), za, v[5].clone()],
                false,
            )?;
            let sa = per_row(ctx, &format!("{name}/a_scale"), v[1].clone())?;
            requantize(ctx, name, acc, sa, v[4].clone(), &v[6], &v[7])
        }
        "QLinearConv" => {
            let names = [
                "input",
                "input's scale",
                "input's zero point",
                "weight",
                "weight's scale",
                "weight's zero point",
                "output scale",
                "output zero point",
                "bias",
            ];
            let v: Vec<Val> = (0..8)
                .map(|k| required(ctx, node, k, names[k]))
                .collect::<R<_>>()?;
            for k in [1, 4, 6] {
                check_scale(names[k], &ctx.ty(&v[k]))?;
            }
            let (xt, wt) = (ctx.ty(&v[0]), ctx.ty(&v[3]));
            let (window, group) = conv_attrs(&a, &xt, &wt)?;
            let mut acc = ctx.emit1(
                &format!("{name}/integer"),
                Op::ConvInteger { window, group },
                &[v[0].clone(), v[3].clone(), v[2].clone(), v[5].clone()],
                false,
            )?;
            let rank = xt.rank();
            if let Some(b) = ctx.input(node, 8) {
                let bt = ctx.ty(&b);
                if bt.dtype != DType::I32 || bt.shape != [wt.shape[0]] {
                    return Err(format!("the bias must be i32[{}], got {bt}", wt.shape[0]));
                }
                let b = per_channel(ctx, &format!("{name}/bias"), b, rank)?;
                acc = ctx.emit1(
                    &format!("{name}/biased"),
                    Op::Binary(BinaryOp::Add),
                    &[acc, b],
                    false,
                )?;
            }
            let sw = per_channel(ctx, &format!("{name}/w_scale"), v[4].clone(), rank)?;
            requantize(ctx, name, acc, v[1].clone(), sw, &v[6], &v[7])
        }
        other => Err(format!("{other} is not a quantization op")),
    }
}

/// `QuantizeLinear(f32(acc) * ((sa * sb) / y_scale), 1, y_zero)`: onnxruntime's
/// requantization of an i32 accumulator (the multiplier in f32, one product, clamped,
/// rounded half to even, plus the zero point).
fn requantize(
    ctx: &mut Ctx,
    name: &str,
    acc: Val,
    sa: Val,
    sb: Val,
    y_scale: &Val,
    y_zero: &Val,
) -> R<Vec<Option<Val>>> {
    let (ys, yz) = (ctx.ty(y_scale), ctx.ty(y_zero));
    if ys.numel() != 1 || yz.numel() != 1 {
        return Err(format!(
            "the output scale and zero point must have one element each, got {:?} and {:?}",
            ys.shape, yz.shape
        ));
    }
    if !matches!(yz.dtype, DType::U8 | DType::I8) {
        return Err(format!(
            "an output zero point of type {} is not supported (u8 or i8)",
            yz.dtype
        ));
    }
    let ab = ctx.emit1(
        &format!("{name}/scales"),
        Op::Binary(BinaryOp::Mul),
        &[sa, sb],
        false,
    )?;
    let multiplier = ctx.emit1(
        &format!("{name}/multiplier"),
        Op::Binary(BinaryOp::Div),
        &[ab, y_scale.clone()],
        false,
    )?;
    let f = ctx.emit1(
        &format!("{name}/float"),
        Op::Cast { to: DType::F32 },
        &[acc],
        false,
    )?;
    let scaled = ctx.emit1(
        &format!("{name}/scaled"),
        Op::Binary(BinaryOp::Mul),
        &[f, multiplier],
        false,
    )?;
    let z = reshaped(ctx, &format!("{name}/zero"), y_zero.clone(), vec![])?;
    let unit = Val::constant(Tensor::scalar_f32(1.0), format!("{name}/unit"));
    let y = ctx.emit1(
        name,
        Op::QuantizeLinear { axis: 0 },
        &[scaled, unit, z],
        false,
    )?;
    Ok(vec![Some(y)])
}
