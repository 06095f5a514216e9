//! ONNX's linear quantization ops in the IR: `QuantizeLinear`, `DequantizeLinear`,
//! `DynamicQuantizeLinear`, `MatMulInteger` and `ConvInteger`, with ONNX semantics (what
//! onnxruntime computes on x86-64). The importer maps `QLinearMatMul` and `QLinearConv` onto
//! them; `passes/quantize` turns the patterns quantization tools emit into optc's own int8
//! contractions ([`crate::quantized`]).
//!
//! Semantics (the interpreter follows them step by step, every lowering bit for bit):
//!
//! - **Parameters.** A scale is f32, with one element (per tensor) or of shape `[n]` where
//!   `n` is the extent of dim `axis` of the quantized tensor (per axis). A zero point has the
//!   scale's shape and the quantized dtype. `axis` is below the rank (0 for a scalar); the
//!   importer writes 0 for per-tensor parameters.
//! - **`quantize_linear(x, scale[, zero])`**: `x` f32; the output's dtype is the zero point's
//!   (u8 or i8; u8 without one). `y = clamp(round_half_even(x / scale) + zero, lo, hi)`, the
//!   division and the addition in f32 ([`quantize`]); NaN gives `lo`.
//! - **`dequantize_linear(x, scale[, zero])`**: `x` u8, i8 or i32, the zero point of the same
//!   dtype. `y = f32(x - zero) * scale`: the difference exact (in i64), rounded to f32, then one
//!   f32 multiply ([`dequantize`]).
//! - **`dynamic_quantize_linear(x)`**: `x` f32; outputs `y` u8 (x's shape), `scale` f32 and
//!   `zero` u8 (scalars): the parameters by [`QuantParams::dynamic`], `y` by
//!   [`quantize`] with them (dividing, as ONNX does; optc's own int8 ops multiply by the
//!   reciprocal instead).
//! - **`matmul_integer(a, b[, a_zero[, b_zero]])`**: `a`, `b` u8 or i8 (numpy `matmul`
//!   shapes: rank-1 operands promoted, batch dims broadcast), zero points of their operand's
//!   dtype. `a_zero` broadcasts to `a`'s shape and is constant along K (its last dim is 1, or
//!   it has one element: one per row, or per tensor); `b_zero` broadcasts to `b`'s shape and
//!   is constant along K (its second-to-last dim is 1: one per column, or per tensor).
//!   `y[.., i, j] = Σ_k (a[.., i, k] - a_zero) * (b[.., k, j] - b_zero)` in i32, wrapping.
//! - **`conv_integer(x, w[, x_zero[, w_zero]])`**: `x`, `w` u8 or i8 (conv shapes), `x_zero`
//!   one element of x's dtype, `w_zero` one element or one per output channel of w's dtype.
//!   A conv of `x - x_zero` and `w - w_zero` in i32, wrapping; padding contributes 0 (it is
//!   `x_zero` before the subtraction, as in onnxruntime).
//!
//! [`QuantParams::dynamic`]: crate::QuantParams::dynamic

use crate::op::{conv_shape, matmul_shape};
use crate::{bail, broadcast_shapes, DType, Result, TensorType, Window};

/// Smallest and largest value of a quantized dtype.
pub fn range(dt: DType) -> Option<(i32, i32)> {
    match dt {
        DType::U8 => Some((0, 255)),
        DType::I8 => Some((-128, 127)),
        _ => None,
    }
}

/// The clamp bounds of `UnaryOp::FakeQuantize`: i8's range when `signed`, else u8's.
pub fn fake_quantize_bounds(signed: bool) -> (i32, i32) {
    let dt = if signed { DType::I8 } else { DType::U8 };
    range(dt).expect("i8 and u8 have ranges")
}

/// `clamp(round_half_even(x / scale) + zero, lo, hi)` in f32; NaN gives `lo`.
pub fn quantize(x: f32, scale: f32, zero: i32, lo: i32, hi: i32) -> i32 {
    let r = (x / scale).round_ties_even() + zero as f32;
    // `max` before `min`, NaN falling to `lo` (onnxruntime clamps with `maxps` first).
    let r = if r > lo as f32 { r } else { lo as f32 };
    r.min(hi as f32) as i32
}

/// `f32(x - zero) * scale`: the difference exact, rounded to f32 once, then multiplied.
pub fn dequantize(x: i64, zero: i64, scale: f32) -> f32 {
    (x - zero) as f32 * scale
}

/// The parameters of `quantize_linear`/`dequantize_linear` on a tensor of type `x` along
/// `axis`: checks scale and zero point, returns the zero point's dtype (if given).
fn check_params(
    what: &str,
    axis: usize,
    x: &TensorType,
    scale: &TensorType,
    zero: Option<&TensorType>,
) -> Result<Option<DType>> {
    if axis >= x.rank().max(1) {
        bail!("{what}: axis {axis} is out of range for {x}");
    }
    if scale.dtype != DType::F32 {
        bail!("{what}: the scale must be f32, got {}", scale.dtype);
    }
    let per_axis = scale.numel() != 1;
    if per_axis && (x.rank() == 0 || scale.shape != [x.shape[axis]]) {
        bail!(
            "{what}: the scale must have one element or one per index of axis {axis} of {x}, got {:?}",
            scale.shape
        );
    }
    let Some(z) = zero else {
        return Ok(None);
    };
    if z.numel() != scale.numel() || (per_axis && z.shape != scale.shape) {
        bail!(
            "{what}: the zero point {:?} must have the scale's shape {:?}",
            z.shape,
            scale.shape
        );
    }
    Ok(Some(z.dtype))
}

/// Output type of `quantize_linear`.
pub fn infer_quantize(axis: usize, inputs: &[&TensorType]) -> Result<TensorType> {
    let what = "quantize_linear";
    let x = inputs[0];
    if x.dtype != DType::F32 {
        bail!("{what} needs an f32 input, got {}", x.dtype);
    }
    let dt = check_params(what, axis, x, inputs[1], inputs.get(2).copied())?.unwrap_or(DType::U8);
    if range(dt).is_none() {
        bail!("{what}: the zero point must be u8 or i8, got {dt}");
    }
    Ok(TensorType::new(dt, x.shape.clone()))
}

/// Output type of `dequantize_linear`.
pub fn infer_dequantize(axis: usize, inputs: &[&TensorType]) -> Result<TensorType> {
    let what = "dequantize_linear";
    let x = inputs[0];
    if !matches!(x.dtype, DType::U8 | DType::I8 | DType::I32) {
        bail!("{what} needs a u8, i8 or i32 input, got {}", x.dtype);
    }
    if let Some(dt) = check_params(what, axis, x, inputs[1], inputs.get(2).copied())? {
        if dt != x.dtype {
            bail!(
                "{what}: the zero point must be {} like the input, got {dt}",
                x.dtype
            );
        }
    }
    Ok(TensorType::f32(&x.shape))
}

/// Output types of `dynamic_quantize_linear`: `y`, scale, zero point.
pub fn infer_dynamic(x: &TensorType) -> Result<Vec<TensorType>> {
    if x.dtype != DType::F32 {
        bail!(
            "dynamic_quantize_linear needs an f32 input, got {}",
            x.dtype
        );
    }
    Ok(vec![
        TensorType::new(DType::U8, x.shape.clone()),
        TensorType::f32(&[]),
        TensorType::new(DType::U8, vec![]),
    ])
}

fn check_integer_operand(what: &str, name: &str, t: &TensorType) -> Result<()> {
    if range(t.dtype).is_none() {
        bail!("{what}: {name} must be u8 or i8, got {}", t.dtype);
    }
    Ok(())
}

fn check_zero_dtype(what: &str, name: &str, z: &TensorType, of: &TensorType) -> Result<()> {
    if z.dtype != of.dtype {
        bail!(
            "{what}: {name} must be {} like its operand, got {}",
            of.dtype,
            z.dtype
        );
    }
    Ok(())
}

/// Output type of `matmul_integer`.
pub fn infer_matmul_integer(inputs: &[&TensorType]) -> Result<TensorType> {
    let what = "matmul_integer";
    let (a, b) = (inputs[0], inputs[1]);
    check_integer_operand(what, "a", a)?;
    check_integer_operand(what, "b", b)?;
    let s = matmul_shape(what, a, b)?;
    if let Some(z) = inputs.get(2) {
        check_zero_dtype(what, "a's zero point", z, a)?;
        let fits = broadcast_shapes(&z.shape, &a.shape).is_ok_and(|s| s == a.shape);
        if !fits || (z.numel() != 1 && z.shape.last() != Some(&1)) {
            bail!(
                "{what}: a's zero point {:?} must have one element or one per row of a {:?} (last dim 1)",
                z.shape,
                a.shape
            );
        }
    }
    if let Some(z) = inputs.get(3) {
        check_zero_dtype(what, "b's zero point", z, b)?;
        let fits = broadcast_shapes(&z.shape, &b.shape).is_ok_and(|s| s == b.shape);
        let along_k = b.rank() >= 2 && z.rank() >= 2 && z.shape[z.rank() - 2] != 1;
        if !fits || (z.numel() != 1 && (b.rank() < 2 || along_k)) {
            bail!(
                "{what}: b's zero point {:?} must have one element or one per column of b {:?}",
                z.shape,
                b.shape
            );
        }
    }
    Ok(TensorType::new(DType::I32, s))
}

/// Output type of `conv_integer`.
pub fn infer_conv_integer(
    window: &Window,
    group: usize,
    inputs: &[&TensorType],
) -> Result<TensorType> {
    let what = "conv_integer";
    let (x, w) = (inputs[0], inputs[1]);
    check_integer_operand(what, "the input", x)?;
    check_integer_operand(what, "the weight", w)?;
    let s = conv_shape(what, window, group, x, w)?;
    if let Some(z) = inputs.get(2) {
        check_zero_dtype(what, "the input's zero point", z, x)?;
        if z.numel() != 1 {
            bail!(
                "{what}: the input's zero point must have one element, got {:?}",
                z.shape
            );
        }
    }
    if let Some(z) = inputs.get(3) {
        check_zero_dtype(what, "the weight's zero point", z, w)?;
        if z.numel() != 1 && z.shape != [w.shape[0]] {
            bail!(
                "{what}: the weight's zero point must have one element or one per output channel ({}), got {:?}",
                w.shape[0],
                z.shape
            );
        }
    }
    Ok(TensorType::new(DType::I32, s))
}
