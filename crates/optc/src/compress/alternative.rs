//! What every builder of lossy alternatives needs from the e-graph: a node's estimated cost
//! and new constants.

use optc_egraph::{egg, CostModel, ENode, ENodeKind, OptEGraph};
use optc_ir::{Data, Tensor, TensorType};

/// Estimated seconds of one e-node (its own cost, children excluded); infinity when its
/// operand types are unknown or do not fit it.
pub(crate) fn node_cost(eg: &OptEGraph, n: &ENode, model: &CostModel) -> f64 {
    let Some(op) = n.op() else { return 0.0 };
    let ins: Option<Vec<&TensorType>> = n.children.iter().map(|&c| eg[c].data.ty()).collect();
    let Some(ins) = ins else { return f64::INFINITY };
    match op.infer(&ins) {
        Ok(outs) => model.op_cost(op, &ins, &outs),
        Err(_) => f64::INFINITY,
    }
}

/// A constant class holding `t`.
pub(crate) fn add_tensor(eg: &mut OptEGraph, t: Tensor) -> egg::Id {
    let c = eg.analysis.intern(t);
    eg.add(ENode {
        kind: ENodeKind::Const(c),
        children: vec![],
    })
}

/// A constant class holding the f32 `values` of `shape` (`None` when they do not fit it).
pub(crate) fn add_f32(eg: &mut OptEGraph, shape: Vec<usize>, values: Vec<f32>) -> Option<egg::Id> {
    Tensor::new(shape, Data::F32(values))
        .ok()
        .map(|t| add_tensor(eg, t))
}
