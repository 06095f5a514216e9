//! The floating-point work of a node, for profiles (GFLOP/s per node) and reports: 2 per
//! multiply-add of a contraction (Conv, MatMul, Gemm and their int8 and fused
//! forms), 0 for everything else (their time is memory traffic, not arithmetic).

use crate::{FusedStep, Graph, NodeId, Op, TensorType};

/// FLOPs of one execution of node `n` (0 when its types are unknown).
pub fn node_flops(graph: &Graph, n: NodeId) -> f64 {
    let node = graph.node(n);
    let ins: Vec<TensorType> = graph
        .node_inputs(n)
        .iter()
        .map(|v| graph.value_type(*v).cloned().unwrap_or_else(|_| unknown()))
        .collect();
    match node.outputs.first() {
        Some(out) => op_flops(&node.op, &ins, out),
        None => 0.0,
    }
}

fn unknown() -> TensorType {
    TensorType::new(crate::DType::F32, vec![])
}

/// FLOPs of `op` on inputs of types `ins` giving (first) output `out`.
fn op_flops(op: &Op, ins: &[TensorType], out: &TensorType) -> f64 {
    if let Op::Pair {
        first,
        first_inputs,
        second,
    } = op
    {
        let refs: Vec<&TensorType> = ins.iter().collect();
        let Some(mid) = refs
            .get(..*first_inputs)
            .and_then(|r| first.infer(r).ok())
            .and_then(|m| m.into_iter().next())
        else {
            return 0.0;
        };
        let rest: Vec<TensorType> = std::iter::once(mid.clone())
            .chain(ins[*first_inputs..].iter().cloned())
            .collect();
        return op_flops(first, &ins[..*first_inputs], &mid) + op_flops(second, &rest, out);
    }
    let shape =
        |port: usize| -> Vec<usize> { ins.get(port).map(|t| t.shape.clone()).unwrap_or_default() };
    let out = out.numel() as f64;
    // Multiply-adds per output element.
    let per_output = match op.base() {
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
        // `Conv+Clip, Conv+Clip`.
        Op::Pair { first, second, .. } => format!("{}, {}", describe(first), describe(second)),
        op => op.name().to_string(),
    }
}
