//! What a rule asks the e-graph: the ops in a class, a class's type, its constant value.
//! Shared by the Rust rules of every pass and by the pattern matcher.

use crate::analysis::OptEGraph;
use egg::Id;
use optc_ir::{Op, Tensor, TensorType};
use std::sync::Arc;

/// The op nodes in class `id`, each with its children.
pub fn ops_in(eg: &OptEGraph, id: Id) -> impl Iterator<Item = (&Op, &[Id])> {
    eg[id]
        .nodes
        .iter()
        .filter_map(|n| Some((n.op()?, n.children.as_slice())))
}

/// The single type of a value class (`None` for a multi-output op's tuple or an ill-typed
/// term).
pub fn ty_of(eg: &OptEGraph, id: Id) -> Option<&TensorType> {
    eg[id].data.ty()
}

/// The constant tensor of a class, if it is one.
pub fn const_of(eg: &OptEGraph, id: Id) -> Option<Arc<Tensor>> {
    eg[id].data.konst.map(|c| eg.analysis.tensor(c).clone())
}

/// The value of a one-element constant class.
pub fn scalar_of(eg: &OptEGraph, id: Id) -> Option<f32> {
    let t = const_of(eg, id)?;
    (t.numel() == 1).then(|| t.to_f64_vec()[0] as f32)
}

/// Whether `a` and `b` are the same class.
pub fn same(eg: &OptEGraph, a: Id, b: Id) -> bool {
    eg.find(a) == eg.find(b)
}

/// Whether `t` has elements and all of them equal `v`.
pub fn all_equal(t: &Tensor, v: f64) -> bool {
    t.numel() > 0 && t.to_f64_vec().iter().all(|&x| x == v)
}
