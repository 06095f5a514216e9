//! The reference interpreter: slow, obviously correct semantics for every op.
//!
//! This module *defines* what each [`Op`] means; codegen and every rewrite are tested
//! against it.

use crate::{bail, Graph, Op, Result, Tensor};

/// Evaluate one op (not `Input`/`Constant`) on concrete inputs.
pub fn eval_op(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let _ = inputs;
    bail!("interpreter: {} is not implemented yet", op.name())
}

/// Run a whole graph. `inputs` are in graph-input order and must match their types.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    let _ = (graph, inputs);
    bail!("interpreter: not implemented yet")
}
