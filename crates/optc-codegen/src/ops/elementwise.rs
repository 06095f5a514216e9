//! Elementwise ops: the functions a `map` applies ([`Ew`]), and the Unary, Binary, Where,
//! Cast and BatchNorm nodes.

use crate::emit::E;
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::fused::ChainStep;
use crate::ops::map::map;
use crate::ops::operand::Opd;
use cranelift_codegen::ir::Value;
use optc_ir::{BinaryOp, DType, UnaryOp};

/// Elementwise functions of a `map`.
#[derive(Clone, Debug)]
pub(crate) enum Ew {
    Copy,
    Unary(UnaryOp),
    Binary(BinaryOp),
    PowConst(f32),
    Where,
    Cast,
    BatchNorm(f32),
    /// `out = a + beta * b` (Gemm's C term).
    AddScaled(f32),
    /// `erf(x * r)`.
    ErfMul(f32),
    /// `isnan(b) ? a : b` (a fused `Where(IsNaN(b), a, b)`).
    NanTo,
    /// A fused step chain on f32: operand 0 is the running value, each step applies a
    /// unary op or a binary op with operand `k` (swapped: `operand op acc`).
    Chain(Vec<ChainStep>),
}

pub(super) fn ew_vectorizable(f: &Ew, dts: &[DType], out: DType) -> bool {
    if matches!(f, Ew::Copy) {
        return true;
    }
    if out != DType::F32 || dts.iter().any(|&d| d != DType::F32) {
        return false;
    }
    match f {
        Ew::Unary(u) => !matches!(u, UnaryOp::Log | UnaryOp::Not | UnaryOp::IsNaN),
        Ew::Binary(b) => matches!(
            b,
            BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Max
                | BinaryOp::Min
        ),
        Ew::PowConst(c) => [1.0, 2.0, 3.0, 0.5].contains(c),
        Ew::BatchNorm(_) | Ew::AddScaled(_) | Ew::ErfMul(_) | Ew::NanTo => true,
        Ew::Chain(steps) => steps.iter().all(|st| match st {
            ChainStep::Unary(u) => {
                ew_vectorizable(&Ew::Unary(u.clone()), &[DType::F32], DType::F32)
            }
            ChainStep::Binary { op, .. } => {
                ew_vectorizable(&Ew::Binary(*op), &[DType::F32, DType::F32], DType::F32)
            }
            ChainStep::ErfMul(_) => true,
        }),
        _ => false,
    }
}

/// Lanes of the vector path of an elementwise function over bools mixed with f32 (`Where`
/// with a bool condition, `IsNaN`: 4 lanes) or over bools only (`And`/`Or`: 16 lanes).
/// Bool vectors are `I32X4` lanes of 0/1 (4 lanes) or `I8X16` bytes (16 lanes).
pub(super) fn mixed_lanes(f: &Ew, dts: &[DType], out: DType) -> Option<i64> {
    use DType::{Bool, F32};
    match f {
        Ew::Where if dts == [Bool, F32, F32] && out == F32 => Some(4),
        Ew::Unary(UnaryOp::IsNaN) if dts == [F32] && out == Bool => Some(4),
        Ew::Binary(BinaryOp::And | BinaryOp::Or) if dts == [Bool, Bool] && out == Bool => Some(16),
        _ => None,
    }
}

pub(super) fn lower_unary(
    e: &mut E,
    info: &NodeInfo,
    x: Value,
    out: Value,
    u: &UnaryOp,
) -> Result<()> {
    let oty = &info.outs[0];
    let f = if *u == UnaryOp::Identity {
        Ew::Copy
    } else {
        Ew::Unary(u.clone())
    };
    let x = Opd::bcast(x, &info.ins[0], &oty.shape);
    map(e, info, &oty.shape, Opd::dense(out, oty), &[x], &f)
}

pub(super) fn lower_binary(
    e: &mut E,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    bop: BinaryOp,
) -> Result<()> {
    let oty = &info.outs[0];
    let f = match (bop, &info.consts[1]) {
        (BinaryOp::Pow, Some(c)) if c.numel() == 1 && info.ins[0].dtype == DType::F32 => {
            Ew::PowConst(c.to_f64_vec()[0] as f32)
        }
        _ => Ew::Binary(bop),
    };
    let a = Opd::bcast(ins[0], &info.ins[0], &oty.shape);
    let b = Opd::bcast(ins[1], &info.ins[1], &oty.shape);
    map(e, info, &oty.shape, Opd::dense(out, oty), &[a, b], &f)
}

pub(super) fn lower_where(e: &mut E, info: &NodeInfo, ins: &[Value], out: Value) -> Result<()> {
    let oty = &info.outs[0];
    let v: Vec<Opd> = (0..3)
        .map(|k| Opd::bcast(ins[k], &info.ins[k], &oty.shape))
        .collect();
    map(e, info, &oty.shape, Opd::dense(out, oty), &v, &Ew::Where)
}

pub(super) fn lower_cast(e: &mut E, info: &NodeInfo, x: Value, out: Value) -> Result<()> {
    let oty = &info.outs[0];
    let f = if info.ins[0].dtype == oty.dtype {
        Ew::Copy
    } else {
        Ew::Cast
    };
    let x = Opd::bcast(x, &info.ins[0], &oty.shape);
    map(e, info, &oty.shape, Opd::dense(out, oty), &[x], &f)
}

/// Inference BatchNorm: `(x - mean) / sqrt(var + eps) * scale + bias`, per channel (dim 1).
pub(super) fn lower_batchnorm(
    e: &mut E,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    eps: f32,
) -> Result<()> {
    let oty = &info.outs[0];
    let mut v = vec![Opd::bcast(ins[0], &info.ins[0], &oty.shape)];
    for &p in &ins[1..5] {
        let mut st = vec![0i64; oty.rank()];
        st[1] = 1;
        v.push(Opd {
            p,
            dt: DType::F32,
            base: 0,
            strides: st,
        });
    }
    map(
        e,
        info,
        &oty.shape,
        Opd::dense(out, oty),
        &v,
        &Ew::BatchNorm(eps),
    )
}
