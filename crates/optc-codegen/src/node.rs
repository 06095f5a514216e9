//! The op node being lowered: its op, input and output types and constant inputs, and the
//! size limits every kernel relies on.

use crate::error::{CodegenError, Result};
use optc_ir::{DType, Graph, NodeId, Op, Tensor, TensorType};
use std::sync::Arc;

/// Largest single tensor: kernels address within a tensor with 32-bit displacements.
pub(crate) const MAX_TENSOR_BYTES: usize = (1 << 31) - 1;

pub(crate) fn bytes_of(ty: &TensorType) -> Result<usize> {
    let n = optc_ir::checked_numel(&ty.shape).map_err(|e| CodegenError::new(e.msg))?;
    match n.checked_mul(ty.dtype.size()) {
        Some(b) if b <= MAX_TENSOR_BYTES => Ok(b),
        _ => Err(CodegenError::new(format!(
            "tensor {ty} is larger than {MAX_TENSOR_BYTES} bytes (2 GiB), which codegen does not support"
        ))),
    }
}

/// Information about one op node handed to its lowering.
pub(crate) struct NodeInfo<'g> {
    pub name: &'g str,
    pub op: &'g Op,
    pub ins: Vec<TensorType>,
    pub outs: Vec<TensorType>,
    pub consts: Vec<Option<Arc<Tensor>>>,
}

impl<'g> NodeInfo<'g> {
    /// Node `n` of `graph`.
    pub fn of(graph: &'g Graph, n: NodeId) -> Result<NodeInfo<'g>> {
        let node = graph.node(n);
        let inputs = graph.node_inputs(n);
        Ok(NodeInfo {
            name: &node.name,
            op: &node.op,
            ins: inputs
                .iter()
                .map(|v| graph.value_type(*v).cloned())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| CodegenError::at(&node.name, node.op.name(), e.msg))?,
            outs: node.outputs.clone(),
            consts: inputs
                .iter()
                .map(|v| graph.const_value(*v).cloned())
                .collect(),
        })
    }

    pub fn err(&self, msg: impl Into<String>) -> CodegenError {
        CodegenError::at(self.name, self.op.name(), msg)
    }
}

/// The base op of a fused node, as a node of its own writing the fused node's output.
pub(crate) fn base_info<'g>(info: &NodeInfo<'g>) -> Option<NodeInfo<'g>> {
    match info.op {
        Op::Fused {
            base, base_inputs, ..
        } => Some(NodeInfo {
            name: info.name,
            op: base,
            ins: info.ins[..*base_inputs].to_vec(),
            // (A base produces f32; a fused node whose last step quantizes gives u8.)
            outs: info
                .outs
                .iter()
                .map(|t| TensorType::new(DType::F32, t.shape.clone()))
                .collect(),
            consts: info.consts[..*base_inputs].to_vec(),
        }),
        _ => None,
    }
}

/// The two ops of a pair ([`Op::Pair`]) as nodes of their own: the first writing the
/// tensor between them (f32), the second reading it as input 0, then the pair's other inputs.
pub(crate) fn pair_infos<'g>(info: &NodeInfo<'g>) -> Option<(NodeInfo<'g>, NodeInfo<'g>)> {
    let Op::Pair {
        first,
        first_inputs,
        second,
    } = info.op
    else {
        return None;
    };
    let fi = *first_inputs;
    let refs: Vec<&TensorType> = info.ins.get(..fi)?.iter().collect();
    let mid = first.infer(&refs).ok()?.into_iter().next()?;
    let a = NodeInfo {
        name: info.name,
        op: first,
        ins: info.ins[..fi].to_vec(),
        outs: vec![mid.clone()],
        consts: info.consts[..fi].to_vec(),
    };
    let b = NodeInfo {
        name: info.name,
        op: second,
        ins: std::iter::once(mid)
            .chain(info.ins[fi..].iter().cloned())
            .collect(),
        outs: info.outs.clone(),
        consts: std::iter::once(None)
            .chain(info.consts[fi..].iter().cloned())
            .collect(),
    };
    Some((a, b))
}
