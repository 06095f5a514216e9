//! Fused nodes (`Op::Fused`): a base op and a chain of unary/binary steps applied in registers,
//! one pass, no intermediate tensors.

use crate::builder::Emitter;
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::elementwise::{is_vector_binary, Elementwise};
use crate::ops::map::map;
use crate::ops::operand::Operand;
use cranelift_codegen::ir::Value;
use optc_ir::{BinaryOp, DType, FusedStep, Op, UnaryOp};
use std::collections::HashMap;

/// Apply fused `steps` in place on the output `out` of a fused node (one pass).
/// Whether a fused node's base is an f32 elementwise op that can run as the first step
/// of its chain (Pow keeps its own kernel: constant exponents have a fast path there).
pub(super) fn elementwise_base(info: &NodeInfo, base: &Op, base_inputs: usize) -> bool {
    let f32_ins = info.ins[..base_inputs]
        .iter()
        .all(|t| t.dtype == DType::F32);
    f32_ins
        && info.outs[0].dtype == DType::F32
        && match base {
            Op::Unary(u) => !matches!(u, UnaryOp::Not | UnaryOp::IsNaN | UnaryOp::Identity),
            Op::Binary(b) => is_vector_binary(*b),
            _ => false,
        }
}

/// The fused `steps` as a chain over `operands`: each extra input a step reads is appended to
/// `operands` once (broadcast to the output) and referred to by its position there.
fn chain_steps(
    info: &NodeInfo,
    ins: &[Value],
    steps: &[FusedStep],
    operands: &mut Vec<Operand>,
) -> Vec<ChainStep> {
    let oty = &info.outs[0];
    let mut kmap: HashMap<usize, usize> = HashMap::new();
    steps
        .iter()
        .map(|st| match st {
            FusedStep::Unary(u) => ChainStep::Unary(u.clone()),
            FusedStep::Binary { op, input, swap } => {
                let k = *kmap.entry(*input).or_insert_with(|| {
                    operands.push(Operand::broadcast(
                        ins[*input],
                        &info.ins[*input],
                        &oty.shape,
                    ));
                    operands.len() - 1
                });
                ChainStep::Binary {
                    op: *op,
                    k,
                    swap: *swap,
                }
            }
        })
        .collect()
}

pub(crate) fn apply_chain(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    steps: &[FusedStep],
) -> Result<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let operands = vec![Operand::dense(out, &info.outs[0])];
    chain_pass(e, info, ins, out, operands, vec![], steps)
}

/// The fused `steps` applied to the base's output `base_out` (of type `base_type`), written
/// to the node's output `out` (of another type: a last step that quantizes).
pub(crate) fn apply_chain_into(
    e: &mut Emitter,
    info: &NodeInfo,
    base_type: &optc_ir::TensorType,
    ins: &[Value],
    base_out: Value,
    out: Value,
    steps: &[FusedStep],
) -> Result<()> {
    let mut operands = vec![Operand::dense(base_out, base_type)];
    let chain = chain_steps(info, ins, steps, &mut operands);
    let oty = &info.outs[0];
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &operands,
        &Elementwise::Chain(chain),
    )
}

/// One pass over the output `out` of the chain `first` over `operands`, then a fused node's
/// `steps` (their extra inputs appended to `operands`, see [`chain_steps`]).
fn chain_pass(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    mut operands: Vec<Operand>,
    mut first: Vec<ChainStep>,
    steps: &[FusedStep],
) -> Result<()> {
    let oty = &info.outs[0];
    first.extend(chain_steps(info, ins, steps, &mut operands));
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &operands,
        &Elementwise::Chain(first),
    )
}

#[derive(Clone, Debug)]
pub(crate) enum ChainStep {
    Unary(UnaryOp),
    Binary { op: BinaryOp, k: usize, swap: bool },
}

/// Evaluate a chain with `one(f, args)` computing one unfused op.
pub(super) fn eval_chain<X: Copy>(
    steps: &[ChainStep],
    args: &[X],
    mut one: impl FnMut(&Elementwise, &[X]) -> Option<X>,
) -> Option<X> {
    let mut acc = args[0];
    for st in steps {
        acc = match st {
            ChainStep::Unary(u) => one(&Elementwise::Unary(u.clone()), &[acc])?,
            ChainStep::Binary { op, k, swap } => {
                let pair = if *swap {
                    [args[*k], acc]
                } else {
                    [acc, args[*k]]
                };
                one(&Elementwise::Binary(*op), &pair)?
            }
        };
    }
    Some(acc)
}

/// A fused node whose base is an f32 elementwise op: the base is the chain's first step, one
/// loop for the whole chain.
pub(super) fn lower_elementwise_chain(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    base: &Op,
    base_inputs: usize,
    steps: &[FusedStep],
) -> Result<()> {
    let oty = &info.outs[0];
    let operands: Vec<Operand> = (0..base_inputs)
        .map(|k| Operand::broadcast(ins[k], &info.ins[k], &oty.shape))
        .collect();
    let first = match base {
        Op::Unary(u) => ChainStep::Unary(u.clone()),
        Op::Binary(b) => ChainStep::Binary {
            op: *b,
            k: 1,
            swap: false,
        },
        _ => return Err(info.err("elementwise fused base expected")),
    };
    chain_pass(e, info, ins, out, operands, vec![first], steps)
}

/// A BatchNorm with constant parameters as the chain `x * s + t` (the per-channel `s`, `t`
/// in `extra`, see [`super::elementwise::batchnorm_affine`]), then a fused node's `steps`:
/// one pass, split across tasks like any elementwise chain.
pub(super) fn lower_affine_chain(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    extra: &[Value],
    steps: &[FusedStep],
) -> Result<()> {
    let oty = &info.outs[0];
    let operands = vec![
        Operand::broadcast(ins[0], &info.ins[0], &oty.shape),
        Operand::per_channel(extra[0], oty.rank()),
        Operand::per_channel(extra[1], oty.rank()),
    ];
    let scale_shift = vec![
        ChainStep::Binary {
            op: BinaryOp::Mul,
            k: 1,
            swap: false,
        },
        ChainStep::Binary {
            op: BinaryOp::Add,
            k: 2,
            swap: false,
        },
    ];
    chain_pass(e, info, ins, out, operands, scale_shift, steps)
}
