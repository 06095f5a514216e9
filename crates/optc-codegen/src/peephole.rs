//! The two graph rewrites codegen still does itself, kept in this one place until they move
//! into `passes/` (the optimizer's job):
//!
//! - `Where(IsNaN(x), c, x)` with a one-element f32 `c` (BERT's masked-softmax cleanup) runs as
//!   one `NanTo` loop ([`nan_wheres`], [`lower_nan_where`]), the IsNaN node neither lowered
//!   nor called,
//! - `acc / c` followed by `erf` in a fused chain (GELU's `erf(x / sqrt 2)`) becomes one
//!   `erf(acc * (1 / c))` step ([`fold_erf_div`]).

use crate::builder::Emitter;
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::elementwise::Elementwise;
use crate::ops::fused::ChainStep;
use crate::ops::map::map;
use crate::ops::operand::Operand;
use cranelift_codegen::ir::Value;
use optc_ir::{BinaryOp, DType, Graph, NodeId, Op, UnaryOp, Value as IrValue};
use std::collections::HashMap;

/// `Where(IsNaN(s), c, s)` with a one-element f32 `c` and the IsNaN read by nobody else
/// (BERT's masked-softmax cleanup): the Where replaces NaNs itself in one pass and the IsNaN
/// is neither lowered nor called. Returns, per scheduled node, whether it is such a Where,
/// and whether it is an IsNaN folded into one (`aliased`: nodes already not called).
pub(crate) fn nan_wheres(
    graph: &Graph,
    schedule: &[NodeId],
    nodes: &[NodeInfo],
    aliased: &[bool],
) -> (Vec<bool>, Vec<bool>) {
    let pos: HashMap<NodeId, usize> = schedule.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut nan_where: Vec<bool> = vec![false; schedule.len()];
    let mut folded: Vec<bool> = vec![false; schedule.len()];
    let mut users: HashMap<IrValue, usize> = HashMap::new();
    for &n in schedule {
        for v in graph.node_inputs(n) {
            *users.entry(v).or_insert(0) += 1;
        }
    }
    for o in &graph.outputs {
        *users.entry(o.value).or_insert(0) += 1;
    }
    for (i, &n) in schedule.iter().enumerate() {
        let ins = graph.node_inputs(n);
        let (Op::Where, [cond, _, x]) = (&graph.node(n).op, ins.as_slice()) else {
            continue;
        };
        let Some(&j) = pos.get(&cond.node) else {
            continue;
        };
        let is_nan_of_x = matches!(graph.node(cond.node).op, Op::Unary(UnaryOp::IsNaN))
            && graph.node_inputs(cond.node).as_slice() == [*x];
        let info = &nodes[i];
        let f32_ok = info.ins[1].dtype == DType::F32
            && info.ins[1].numel() == 1
            && info.ins[2].dtype == DType::F32
            && info.ins[2].shape == info.outs[0].shape;
        if is_nan_of_x && f32_ok && users.get(cond) == Some(&1) && !aliased[j] && !folded[j] {
            nan_where[i] = true;
            folded[j] = true;
        }
    }
    (nan_where, folded)
}

/// The kernel of a Where found by [`nan_wheres`]: `isnan(x) ? c : x` (`params`: the kernel's
/// condition, `c`, `x`, output).
pub(crate) fn lower_nan_where(e: &mut Emitter, info: &NodeInfo, params: &[Value]) -> Result<()> {
    let oty = &info.outs[0];
    let c = Operand::broadcast(params[1], &info.ins[1], &oty.shape);
    let x = Operand::dense(params[2], &info.ins[2]);
    let out = Operand::dense(params[3], oty);
    map(e, info, &oty.shape, out, &[c, x], &Elementwise::NanTo)
}

/// Replace `acc / c` followed by `erf` (GELU's `erf(x / sqrt 2)`) by one `ErfMul(1/c)` step
/// when `c` is a finite, nonzero scalar constant: a multiply instead of a divide. `erf(x * r)`
/// differs from `erf(fl(x / c))` by under 1.5 ulp of the argument, which moves erf by at most
/// 1.5 * 2^-24 relative (`|y erf'(y)| <= erf(y)`); with `Emitter::erf`'s own 3.3e-7 the step stays
/// within 5e-7 relative (`erf_of_quotient_error_bound`).
pub(crate) fn fold_erf_div(
    info: &NodeInfo,
    ins: &[Value],
    operands: &[Operand],
    chain: &mut Vec<ChainStep>,
) {
    let mut i = 0;
    while i + 1 < chain.len() {
        let r = match (&chain[i], &chain[i + 1]) {
            (
                ChainStep::Binary {
                    op: BinaryOp::Div,
                    k,
                    swap: false,
                },
                ChainStep::Unary(UnaryOp::Erf),
            ) => ins
                .iter()
                .position(|&v| v == operands[*k].p)
                .and_then(|j| info.consts[j].as_ref())
                .filter(|c| c.dtype() == DType::F32 && c.numel() == 1)
                .map(|c| c.to_f64_vec()[0])
                .filter(|c| c.is_finite() && *c != 0.0)
                .map(|c| (1.0 / c) as f32)
                .filter(|r| r.is_normal()),
            _ => None,
        };
        if let Some(r) = r {
            chain.splice(i..i + 2, [ChainStep::ErfMul(r)]);
        }
        i += 1;
    }
}
