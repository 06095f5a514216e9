//! Generic lowering: every op as Cranelift IR (f32x4 vectors where they apply, scalar code
//! otherwise), for every target. [`lower_node`] dispatches a node to its op family;
//! [`scratch_bytes`] and [`kernel_data`] say what else the node's kernel needs.
//!
//! - `operand.rs`, `map.rs`: the index-mapped loop every elementwise and movement op runs
//!   (`out[i] = f(in_k[i]...)` over strided, broadcast operands, vectorized on the innermost
//!   contiguous dim),
//! - `elementwise.rs` (with `math.rs`, the per-element float/int functions), `fused.rs`
//!   (fused step chains), `movement.rs`, `matmul.rs`, `conv.rs`, `pool.rs`, `reduce.rs`,
//!   `norm.rs` (softmax, layernorm), `quantize.rs` (QuantizeLinear, DequantizeLinear,
//!   DynamicQuantizeLinear), `integer.rs` (MatMulInteger, ConvInteger, QuantizedMatMul,
//!   QuantizedConv on one i32 GEMM), `indexing.rs` (ArgMax/ArgMin, CumSum, TopK, the
//!   element and ND gathers and scatters), `recurrent.rs` (an LSTM step's gates): the op
//!   families,
//! - `parallel.rs`: which generic nodes are split across tasks.

pub(crate) mod avg_pool;
pub(crate) mod conv;
pub(crate) mod elementwise;
pub(crate) mod fused;
pub(crate) mod indexing;
pub(crate) mod integer;
pub(crate) mod map;
pub(crate) mod math;
pub(crate) mod matmul;
pub(crate) mod movement;
pub(crate) mod norm;
pub(crate) mod operand;
pub(crate) mod parallel;
pub(crate) mod pool;
pub(crate) mod quantize;
pub(crate) mod recurrent;
pub(crate) mod reduce;
pub(crate) mod transcendental;

use crate::builder::Emitter;
use crate::error::Result;
use crate::node::{base_info, NodeInfo};
use crate::ops::conv::{conv_kernel_data, conv_scratch_bytes, lower_conv};
use crate::ops::elementwise::{
    lower_batchnorm, lower_binary, lower_cast, lower_unary, lower_where,
};
use crate::ops::fused::{apply_chain, elementwise_base, lower_elementwise_chain};
use crate::ops::matmul::{lower_gemm, lower_matmul, pack_b, NR};
use crate::ops::movement::{
    lower_concat, lower_expand, lower_gather, lower_guard, lower_pad, lower_reshape, lower_slice,
    lower_split, lower_transpose, pad_table,
};
use crate::ops::norm::{lower_layernorm, lower_softmax};
use crate::ops::pool::{lower_avgpool, lower_maxpool2d, lower_pool, maxpool2d_geometry};
use crate::ops::reduce::lower_reduce;
use cranelift_codegen::ir::{InstBuilder, Value};
use optc_ir::{DType, Op};

// ---------------------------------------------------------------------------------------------
// Node lowering.

pub(crate) fn lower_node(
    e: &mut Emitter,
    info: &NodeInfo,
    p: &[Value],
    extra: &[Value],
) -> Result<()> {
    let nin = info.ins.len();
    let outp = &p[nin..nin + info.outs.len()];
    let scratch = p[nin + info.outs.len()];
    let ins = &p[..nin];
    match info.op {
        Op::Input { .. } | Op::Constant { .. } => Ok(()),
        Op::Fused {
            base: bn, steps, ..
        } if matches!(**bn, Op::BatchNorm { .. }) && extra.len() == 2 => {
            fused::lower_affine_chain(e, info, ins, outp[0], extra, steps)
        }
        Op::Fused {
            base,
            base_inputs,
            steps,
        } if elementwise_base(info, base, *base_inputs) => {
            lower_elementwise_chain(e, info, ins, outp[0], base, *base_inputs, steps)
        }
        Op::Fused {
            base_inputs, steps, ..
        } => {
            // Generic path: the base kernel writes the output, then one pass applies the
            // whole step chain in registers (no intermediate tensors).
            let sub = base_info(info).ok_or_else(|| info.err("fused node without base"))?;
            let mut bp: Vec<Value> = ins[..*base_inputs].to_vec();
            if info.outs[0].dtype == DType::F32 {
                bp.extend_from_slice(outp);
                bp.push(scratch);
                lower_node(e, &sub, &bp, extra)?;
                return apply_chain(e, info, ins, outp[0], steps);
            }
            // The last step quantizes to u8: the base's f32 output held in scratch.
            let held = scratch_bytes(&sub)?.next_multiple_of(64) as i64;
            let base_out = e.b.ins().iadd_imm_s(scratch, held);
            bp.push(base_out);
            bp.push(scratch);
            lower_node(e, &sub, &bp, extra)?;
            fused::apply_chain_into(e, info, &sub.outs[0], ins, base_out, outp[0], steps)
        }
        // Made only where the x64 plan computes it (`x64::pairs`).
        Op::Pair { .. } => Err(info.err("a pair has no generic lowering")),
        Op::Unary(u) => lower_unary(e, info, ins[0], outp[0], u),
        Op::Binary(op) => lower_binary(e, info, ins, outp[0], *op),
        Op::Where => lower_where(e, info, ins, outp[0]),
        Op::Cast { .. } | Op::Bitcast { .. } => lower_cast(e, info, ins[0], outp[0]),
        Op::BatchNorm { epsilon } => lower_batchnorm(e, info, ins, outp[0], *epsilon, extra),
        Op::Reshape { .. } => lower_reshape(e, info, ins[0], outp[0]),
        Op::LstmCell => recurrent::lower_lstm_cell(e, info, ins, outp),
        Op::Guard { expect, length } => {
            lower_guard(e, info, ins[0], ins[1], outp[0], *expect, *length)
        }
        Op::Expand { .. } => lower_expand(e, info, ins[0], outp[0]),
        Op::Transpose { perm } => lower_transpose(e, info, ins[0], outp[0], perm),
        Op::Slice { dims } => lower_slice(e, info, ins[0], outp[0], dims),
        Op::Concat { axis } => lower_concat(e, info, ins, outp[0], *axis),
        Op::Split { axis, .. } => lower_split(e, info, ins[0], outp, *axis),
        Op::Pad { value, .. } => lower_pad(e, info, ins[0], outp[0], extra[0], *value),
        Op::Gather { axis } => lower_gather(e, info, ins[0], ins[1], outp[0], *axis),
        Op::MatMul => lower_matmul(e, info, ins, outp[0], extra),
        Op::Gemm { .. } => lower_gemm(e, info, ins, outp[0], extra),
        Op::Conv { .. } => lower_conv(e, info, ins, outp[0], scratch, extra),
        Op::MaxPool { window } => match maxpool2d_geometry(info) {
            Some(g) => lower_maxpool2d(e, info, &g, ins[0], outp[0], scratch),
            None => lower_pool(e, info, ins[0], outp[0], window, None),
        },
        Op::AveragePool {
            window,
            count_include_pad,
        } => match avg_pool::geometry(info) {
            Some(g) => {
                avg_pool::lower(e, &g, ins[0], outp[0], scratch, extra[0]);
                Ok(())
            }
            None => lower_avgpool(e, info, ins[0], outp[0], window, *count_include_pad),
        },
        Op::Reduce {
            kind,
            axes,
            keepdims: _,
        } => lower_reduce(e, info, ins[0], outp[0], *kind, axes),
        Op::Softmax { axis } => lower_softmax(e, info, ins[0], outp[0], *axis),
        Op::LayerNorm { axis, epsilon } => lower_layernorm(e, info, ins, outp[0], *axis, *epsilon),
        Op::QuantizedMatMul { activation } => {
            integer::lower_quantized_matmul(e, info, ins, outp[0], scratch, *activation)
        }
        Op::QuantizedConv { activation, .. } => {
            integer::lower_quantized_conv(e, info, ins, outp[0], scratch, *activation)
        }
        Op::MatMulInteger => integer::lower_matmul_integer(e, info, ins, outp[0], scratch),
        Op::ConvInteger { .. } => integer::lower_conv_integer(e, info, ins, outp[0], scratch),
        Op::QuantizeLinear { axis } => {
            quantize::lower_quantize_linear(e, info, ins, outp[0], *axis)
        }
        Op::DequantizeLinear { axis } => {
            quantize::lower_dequantize_linear(e, info, ins, outp[0], *axis)
        }
        Op::DynamicQuantizeLinear => quantize::lower_dynamic_quantize_linear(e, info, ins[0], outp),
        Op::Arg {
            largest,
            axis,
            select_last_index,
            ..
        } => indexing::lower_arg(
            e,
            info,
            ins[0],
            outp[0],
            *largest,
            *axis,
            *select_last_index,
        ),
        Op::Cumulative {
            product,
            axis,
            exclusive,
            reverse,
        } => indexing::lower_cumulative(
            e, info, ins[0], outp[0], *product, *axis, *exclusive, *reverse,
        ),
        Op::TopK { axis, k, largest } => {
            indexing::lower_top_k(e, info, ins[0], outp, *axis, *k, *largest)
        }
        Op::GatherElements { axis } => {
            indexing::lower_gather_elements(e, info, ins[0], ins[1], outp[0], *axis)
        }
        Op::GatherNd { batch_dims } => {
            indexing::lower_gather_nd(e, info, ins[0], ins[1], outp[0], *batch_dims)
        }
        Op::ScatterElements { axis, reduction } => {
            indexing::lower_scatter_elements(e, info, ins, outp[0], *axis, *reduction)
        }
        Op::ScatterNd { reduction } => {
            indexing::lower_scatter_nd(e, info, ins, outp[0], *reduction)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Per-node planning facts.

/// Bytes of scratch a node needs during its execution.
pub(crate) fn scratch_bytes(info: &NodeInfo) -> Result<usize> {
    if let Some(b) = base_info(info) {
        // A fused node storing u8 holds its base's f32 output in scratch, after the base's.
        let held = match info.outs[0].dtype {
            DType::F32 => 0,
            _ => 4 * info.outs[0].numel(),
        };
        return Ok(scratch_bytes(&b)?.next_multiple_of(64) + held);
    }
    if let Some(g) = maxpool2d_geometry(info) {
        return Ok(g.planes * g.hp * g.wp * 4);
    }
    if let Some(bytes) = avg_pool::scratch_bytes(info) {
        return Ok(bytes);
    }
    match info.op {
        Op::Conv { .. } => conv_scratch_bytes(info),
        Op::MatMulInteger
        | Op::ConvInteger { .. }
        | Op::QuantizedMatMul { .. }
        | Op::QuantizedConv { .. } => integer::scratch_bytes(info),
        _ => Ok(0),
    }
}

/// Constant data a kernel needs besides its inputs (packed weights, index tables).
pub(crate) fn kernel_data(info: &NodeInfo) -> Result<Vec<Vec<u8>>> {
    if let Some(b) = base_info(info) {
        return kernel_data(&b);
    }
    match info.op {
        Op::Conv { .. } => conv_kernel_data(info),
        Op::Gemm { trans_b, .. } => match &info.consts[1] {
            Some(b) => Ok(vec![pack_b(info, b, *trans_b, NR)?]),
            None => Ok(vec![]),
        },
        Op::MatMul => match &info.consts[1] {
            Some(b) if b.shape().len() == 2 && b.dtype() == DType::F32 => {
                Ok(vec![pack_b(info, b, false, NR)?])
            }
            _ => Ok(vec![]),
        },
        Op::Pad { pads, mode, .. } => Ok(vec![pad_table(info, pads, *mode)]),
        Op::AveragePool { .. } => Ok(avg_pool::geometry(info)
            .map(|g| vec![avg_pool::table(&g)])
            .unwrap_or_default()),
        Op::BatchNorm { .. } => Ok(match elementwise::batchnorm_affine(info) {
            Some((s, t)) => [s, t]
                .iter()
                .map(|v| v.iter().flat_map(|x| x.to_le_bytes()).collect())
                .collect(),
            None => vec![],
        }),
        _ => Ok(vec![]),
    }
}
