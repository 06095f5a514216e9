//! The floating-point work of a node, for profiles (GFLOP/s per node) and reports: 2 per
//! multiply-add of a contraction (Conv, MatMul, Gemm and their int8 and fused
//! forms), 0 for everything else (their time is memory traffic, not arithmetic).

use crate::{FusedStep, Graph, NodeId, Op};

/// FLOPs of one execution of node `n` (0 when its types are unknown).
pub fn node_flops(graph: &Graph, n: NodeId) -> f64 {
    let node = graph.node(n);
    let base = node.op.base();
    let shape = |port: usize| -> Vec<usize> {
        graph
            .node_inputs(n)
            .get(port)
            .and_then(|v| graph.value_type(*v).ok())
            .map(|t| t.shape.clone())
            .unwrap_or_default()
    };
    let out: f64 = node
        .outputs
        .first()
        .map(|t| t.numel() as f64)
        .unwrap_or(0.0);
    // Multiply-adds per output element.
    let per_output = match base {
        // w [M, C/group, *k]: C/group * prod(k) per output.
        Op::Conv { .. } | Op::QuantizedConv { .. } => {
            shape(1).iter().skip(1).product::<usize>() as f64
        }
        // A [..., M, K]: K per output.
        Op::MatMul | Op::QuantizedMatMul { .. } => shape(0).last().copied().unwrap_or(0) as f64,
        Op::Gemm { trans_a, .. } => {
            let a = shape(0);
            let k = if *trans_a { a.first() } else { a.last() };
            k.copied().unwrap_or(0) as f64
        }
        _ => 0.0,
    };
    2.0 * out * per_output
}

/// The op as a profile names it: a fused node as its base and steps (`Conv+Add+Relu`).
pub fn describe(op: &Op) -> String {
    match op {
        Op::Fused { base, steps, .. } => {
            let mut s = base.name().to_string();
            for step in steps {
                s.push('+');
                s.push_str(match step {
                    FusedStep::Unary(u) => Op::Unary(u.clone()).name(),
                    FusedStep::Binary { op, .. } => Op::Binary(*op).name(),
                });
            }
            s
        }
        op => op.name().to_string(),
    }
}
