//! Elementwise ops: the functions a `map` applies ([`Elementwise`]), and the Unary, Binary, Where,
//! Cast and BatchNorm nodes.

use crate::builder::Emitter;
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::fused::ChainStep;
use crate::ops::map::map;
use crate::ops::operand::Operand;
use cranelift_codegen::ir::Value;
use optc_ir::{BinaryOp, DType, Op, UnaryOp};

/// Elementwise functions of a `map`.
#[derive(Clone, Debug)]
pub(crate) enum Elementwise {
    Copy,
    Unary(UnaryOp),
    Binary(BinaryOp),
    PowConst(f32),
    Where,
    Cast,
    /// The operand's bits read as the output's type (of the same width).
    Bitcast,
    BatchNorm(f32),
    /// `out = a + beta * b` (Gemm's C term).
    AddScaled(f32),
    /// A fused step chain on f32: operand 0 is the running value, each step applies a
    /// unary op or a binary op with operand `k` (swapped: `operand op acc`).
    Chain(Vec<ChainStep>),
    /// `QuantizeLinear`: operands x (f32), scale (f32), zero point (u8/i8, when `zero`);
    /// `clamp(round_half_even(x / scale) + zero, lo, hi)` (see `optc_ir::linear_quantization`).
    Quantize {
        lo: i32,
        hi: i32,
        zero: bool,
    },
    /// `DequantizeLinear`: operands x (u8/i8/i32), scale, zero point (when `zero`);
    /// `f32(x - zero) * scale`.
    Dequantize {
        zero: bool,
    },
    /// `i32(x) - i32(zero)` of two integer operands: a zero point taken off (integer
    /// contractions work on the shifted values).
    Shift,
}

/// The f32 binary ops with an f32x4 form (the others run scalar).
pub(super) fn is_vector_binary(b: BinaryOp) -> bool {
    matches!(
        b,
        BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Max
            | BinaryOp::Min
    )
}

pub(super) fn vectorizable(f: &Elementwise, dts: &[DType], out: DType) -> bool {
    if matches!(f, Elementwise::Copy) {
        return true;
    }
    if out != DType::F32 || dts.iter().any(|&d| d != DType::F32) {
        return false;
    }
    match f {
        Elementwise::Unary(u) => {
            !matches!(
                u,
                UnaryOp::Log | UnaryOp::Not | UnaryOp::IsNaN | UnaryOp::QuantizeActivation { .. }
            ) && crate::ops::math::libm_code(u).is_none()
        }
        Elementwise::Binary(b) => is_vector_binary(*b),
        Elementwise::PowConst(c) => [1.0, 2.0, 3.0, 0.5].contains(c),
        Elementwise::BatchNorm(_) | Elementwise::AddScaled(_) => true,
        Elementwise::Chain(steps) => steps.iter().all(|st| match st {
            ChainStep::Unary(u) => {
                vectorizable(&Elementwise::Unary(u.clone()), &[DType::F32], DType::F32)
            }
            ChainStep::Binary { op, .. } => vectorizable(
                &Elementwise::Binary(*op),
                &[DType::F32, DType::F32],
                DType::F32,
            ),
        }),
        _ => false,
    }
}

/// Lanes of the vector path of an elementwise function over bools mixed with f32 (`Where`
/// with a bool condition, `IsNaN`: 4 lanes), over bools only (`And`/`Or`: 16 lanes), or
/// over u8/i8 mixed with f32 (`Quantize`, `Dequantize`: 4 lanes). Bool and byte vectors are
/// `I32X4` lanes (4 lanes) or `I8X16` bytes (16 lanes).
pub(super) fn mixed_lanes(f: &Elementwise, dts: &[DType], out: DType) -> Option<i64> {
    use DType::{Bool, F32};
    match f {
        Elementwise::Where if dts == [Bool, F32, F32] && out == F32 => Some(4),
        Elementwise::Unary(UnaryOp::IsNaN) if dts == [F32] && out == Bool => Some(4),
        Elementwise::Binary(BinaryOp::And | BinaryOp::Or) if dts == [Bool, Bool] && out == Bool => {
            Some(16)
        }
        // Quantization: bytes widened to i32x4 lanes (and narrowed back) next to f32x4.
        Elementwise::Quantize { .. }
            if dts[..2] == [F32, F32]
                && dts[2..].iter().all(|&d| d == out)
                && matches!(out, DType::U8 | DType::I8) =>
        {
            Some(4)
        }
        Elementwise::Dequantize { .. }
            if matches!(dts[0], DType::U8 | DType::I8)
                && dts[1] == F32
                && dts[2..].iter().all(|&d| d == dts[0])
                && out == F32 =>
        {
            Some(4)
        }
        _ => None,
    }
}

pub(super) fn lower_unary(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    u: &UnaryOp,
) -> Result<()> {
    let oty = &info.outs[0];
    let f = if *u == UnaryOp::Identity {
        Elementwise::Copy
    } else {
        Elementwise::Unary(u.clone())
    };
    let x = Operand::broadcast(x, &info.ins[0], &oty.shape);
    map(e, info, &oty.shape, Operand::dense(out, oty), &[x], &f)
}

pub(super) fn lower_binary(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    bop: BinaryOp,
) -> Result<()> {
    let oty = &info.outs[0];
    let f = match (bop, &info.consts[1]) {
        (BinaryOp::Pow, Some(c)) if c.numel() == 1 && info.ins[0].dtype == DType::F32 => {
            Elementwise::PowConst(c.to_f64_vec()[0] as f32)
        }
        _ => Elementwise::Binary(bop),
    };
    let a = Operand::broadcast(ins[0], &info.ins[0], &oty.shape);
    let b = Operand::broadcast(ins[1], &info.ins[1], &oty.shape);
    map(e, info, &oty.shape, Operand::dense(out, oty), &[a, b], &f)
}

pub(super) fn lower_where(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
) -> Result<()> {
    let oty = &info.outs[0];
    let v: Vec<Operand> = (0..3)
        .map(|k| Operand::broadcast(ins[k], &info.ins[k], &oty.shape))
        .collect();
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &v,
        &Elementwise::Where,
    )
}

pub(super) fn lower_cast(e: &mut Emitter, info: &NodeInfo, x: Value, out: Value) -> Result<()> {
    let oty = &info.outs[0];
    let f = if info.ins[0].dtype == oty.dtype {
        Elementwise::Copy
    } else if matches!(info.op, Op::Bitcast { .. }) {
        Elementwise::Bitcast
    } else {
        Elementwise::Cast
    };
    let x = Operand::broadcast(x, &info.ins[0], &oty.shape);
    map(e, info, &oty.shape, Operand::dense(out, oty), &[x], &f)
}

/// Inference BatchNorm: `(x - mean) / sqrt(var + eps) * scale + bias`, per channel (dim 1);
/// with constant parameters, `x * s + t` from the compile-time [`batchnorm_affine`] in
/// `extra` (a square root and a division per element otherwise).
pub(super) fn lower_batchnorm(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    eps: f32,
    extra: &[Value],
) -> Result<()> {
    let oty = &info.outs[0];
    if extra.len() == 2 {
        return super::fused::lower_affine_chain(e, info, ins, out, extra, &[]);
    }
    let mut v = vec![Operand::broadcast(ins[0], &info.ins[0], &oty.shape)];
    for &p in &ins[1..5] {
        v.push(Operand::per_channel(p, oty.rank()));
    }
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &v,
        &Elementwise::BatchNorm(eps),
    )
}

/// A BatchNorm's per-channel `(s, t)` with `y = x * s + t` (`s = scale / sqrt(var + eps)`,
/// `t = bias - mean * s`), when its parameters are f32 constants; the same folding as the
/// `conv-bn` rule, rounded differently from the reference's `(x - mean) / sd * scale + bias`
/// by a few ulp.
pub(crate) fn batchnorm_affine(info: &NodeInfo) -> Option<(Vec<f32>, Vec<f32>)> {
    let Op::BatchNorm { epsilon } = info.op else {
        return None;
    };
    if info.ins[0].dtype != DType::F32 || info.ins[0].rank() < 2 || info.consts.len() < 5 {
        return None;
    }
    let c = info.ins[0].shape[1];
    let p: Vec<&[f32]> = info.consts[1..5]
        .iter()
        .map(|t| t.as_ref().and_then(|t| t.as_f32()).filter(|v| v.len() == c))
        .collect::<Option<_>>()?;
    let s: Vec<f32> = (0..c)
        .map(|i| p[0][i] / (p[3][i] + epsilon).sqrt())
        .collect();
    let t = (0..c).map(|i| p[1][i] - p[2][i] * s[i]).collect();
    Some((s, t))
}
