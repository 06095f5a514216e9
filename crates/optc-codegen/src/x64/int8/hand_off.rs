//! The int8 hand-off: int8 stays int8 between quantized convs. A conv's f32 output that
//! only static quantized convs read, all with the same activation scale and zero point,
//! is quantized once, in the producer's tile store (`UnaryOp::QuantizeActivation` as its
//! last fused step: the node's output becomes u8), and the consumers read it as already
//! quantized (a u8 `x`, `optc_ir::quantized`). Exact: the step is the consumers' own
//! quantization (step 2), moved. The producer writes a quarter of the bytes and each
//! consumer's pre-pass moves bytes instead of quantizing floats.
//!
//! Taken only where both ends have kernels for it (`plan` with the rewritten node says so:
//! VNNI convs of one K block whose steps all run in the tile, no residual add; consumers
//! that are ungrouped int8 convs); anywhere else the graph is left as it was.

use super::build_plan;
use crate::error::{CodegenError, Result};
use crate::node::NodeInfo;
use crate::target::Target;
use optc_ir::quantized::ActivationQuantization;
use optc_ir::{DType, Data, FusedStep, Graph, NodeId, Op, UnaryOp};

/// The graph with every eligible hand-off made, or `None` when there is none.
pub(crate) fn hand_off_bytes(graph: &Graph, target: &Target) -> Result<Option<Graph>> {
    if !target.has_int8_dot_product() {
        return Ok(None);
    }
    let order = graph
        .topo_order()
        .map_err(|e| CodegenError::new(e.msg.clone()))?;
    let mut g = graph.clone();
    let mut changed = false;
    for n in order {
        let Some((scale, zero)) = consumers_quantize(&g, n) else {
            continue;
        };
        let node = g.node(n);
        let (old_op, old_type) = (node.op.clone(), node.outputs[0].clone());
        let step = FusedStep::Unary(UnaryOp::QuantizeActivation {
            scale,
            zero: zero as f32,
        });
        let op = match &old_op {
            Op::Fused {
                base,
                base_inputs,
                steps,
            } => Op::Fused {
                base: base.clone(),
                base_inputs: *base_inputs,
                steps: steps.iter().cloned().chain([step]).collect(),
            },
            base => Op::Fused {
                base: Box::new(base.clone()),
                base_inputs: g.node_inputs(n).len(),
                steps: vec![step],
            },
        };
        let node = g.node_mut(n);
        node.op = op;
        node.outputs[0].dtype = DType::U8;
        if both_ends_planned(&g, n, target)? {
            changed = true;
        } else {
            let node = g.node_mut(n);
            node.op = old_op;
            node.outputs[0] = old_type;
        }
    }
    Ok(changed.then_some(g))
}

/// The activation scale and zero point with which every reader of node `n`'s f32 output
/// quantizes it, when `n` is a quantized conv (plain or fused) with one output, not a graph
/// output, read only as the activation of static quantized convs with equal parameters.
fn consumers_quantize(g: &Graph, n: NodeId) -> Option<(f32, u8)> {
    let node = g.node(n);
    let base = node.op.base();
    if !matches!(base, Op::QuantizedConv { .. })
        || node.outputs.len() != 1
        || node.outputs[0].dtype != DType::F32
        || g.outputs.iter().any(|o| o.value.node == n)
    {
        return None;
    }
    let users = g.node_users(n);
    let mut params: Option<(u32, u8)> = None;
    for &(user, _src, dst) in &users {
        let op = &g.node(user).op;
        let base = op.base();
        let Op::QuantizedConv {
            activation: ActivationQuantization::Static,
            ..
        } = base
        else {
            return None;
        };
        if dst != 0 {
            return None;
        }
        let ins = g.node_inputs(user);
        let scale = g.const_value(ins[3])?.as_f32()?.first().copied()?;
        let Data::U8(z) = g.const_value(ins[4])?.data() else {
            return None;
        };
        let zero = *z.first()?;
        let p = (scale.to_bits(), zero);
        if params.is_some_and(|q| q != p) {
            return None;
        }
        params = Some(p);
    }
    params.map(|(s, z)| (f32::from_bits(s), z))
}

/// Whether producer `n` (rewritten) stores u8 in its tiles and each of its readers takes
/// the u8 input in its kernels.
fn both_ends_planned(g: &Graph, n: NodeId, target: &Target) -> Result<bool> {
    let planned = |m: NodeId, check: &dyn Fn(&super::Int8Plan) -> bool| -> Result<bool> {
        let info = NodeInfo::of(g, m)?;
        Ok(match build_plan(&info, target)? {
            Some(p) => match &p.kind {
                super::Strategy::Int8(q) => check(q),
                _ => false,
            },
            None => false,
        })
    };
    if !planned(n, &|q| q.quantized_output.is_some())? {
        return Ok(false);
    }
    for (user, _, _) in g.node_users(n) {
        if !planned(user, &|q| q.quantized_input)? {
            return Ok(false);
        }
    }
    Ok(true)
}
