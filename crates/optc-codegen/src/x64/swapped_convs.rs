//! 1x1 convs on small maps with the GEMM's roles swapped, on the AVX-512 tiles: a conv's
//! output pixels are its microkernel columns, and a 7x7 map's 49 pixels fill the `mr x 32`
//! wide tiles badly (a 32-column tile and a partial one of 17: 64 columns computed for 49).
//! With pixels as the rows and output channels as the columns the same conv wastes almost
//! nothing (49 rows: eight 6-row tiles and a 1-row one; 1152 channels: 36 wide tiles).
//!
//! Before lowering, such a conv (`x [1, K, H, W]`, constant `w [M, K, 1, 1]`, stride 1, no
//! padding, one group, its fused steps elementwise) becomes the graph
//! `reshape(transpose(gemm(transpose(reshape(x, [K, N])), w, bias)), [1, M, H, W])`:
//! a Gemm with the constant weight packed at compile time (`trans_b`, the
//! [`super::kernel_plan::Strategy::GemmConstantB`] tiles: bias per column, the fused
//! activations in the tile), between two transposes of a few hundred KB (4x4 blocks in
//! registers, `ops::movement`); a fused residual add runs after the second transpose. The
//! products are the conv's, summed in the same order; taken when the columns the conv's tiles
//! compute exceed the swapped tiles' work by [`MARGIN`] (the transposes' price), on maps of
//! 2 to 256 pixels (a one-pixel map's conv, squeeze-excitation's, is already a GEMM of the
//! channel vector with the weights packed transposed: `one_pixel_gemm`).
//! (The AVX2 path has its own swapped-roles kernels with transposed stores, `small_map.rs`.)

use super::asm::{Isa, MR, NR};
use crate::error::Result;
use crate::graph_rewrite::rewrite_picked;
use crate::target::Target;
use optc_ir::{BinaryOp, DType, FusedStep, Graph, Op, Tensor, Value};
use std::sync::Arc;

/// Swap when the conv's tiles compute this much more than the swapped ones.
const MARGIN: f64 = 1.15;

/// The graph with every eligible conv swapped, or `None` when there is none (or the target
/// has no AVX-512 tiles).
pub(crate) fn swap_small_map_convs(graph: &Graph, target: &Target) -> Result<Option<Graph>> {
    if !target.has_avx2_fma() || target.microkernel_isa() != Isa::Avx512 {
        return Ok(None);
    }
    rewrite_picked(graph, "swapping a conv's roles", eligible, swap)
}

/// The conv's `(m, k, n)`, its unary steps and its trailing residual add (`(input, swap)`)
/// when it takes the swapped form.
struct Eligible {
    m: usize,
    k: usize,
    base_inputs: usize,
    unary: Vec<FusedStep>,
    residual: Option<(usize, bool)>,
}

fn eligible(graph: &Graph, n: optc_ir::NodeId) -> Option<Eligible> {
    let node = graph.node(n);
    let ins = graph.node_inputs(n);
    let (base, base_inputs, steps) = node.op.fused_parts(ins.len());
    let Op::Conv { window, group } = base else {
        return None;
    };
    let xt = graph.value_type(ins[0]).ok()?;
    let w = graph.const_value(ins[1])?;
    let one = |v: &[usize]| v.iter().all(|&x| x == 1);
    if *group != 1
        || xt.dtype != DType::F32
        || xt.rank() != 4
        || xt.shape[0] != 1
        || w.dtype() != DType::F32
        || !one(&window.kernel)
        || !one(&window.strides)
        || window.pads.iter().any(|&p| p != 0)
        || node.outputs.len() != 1
    {
        return None;
    }
    if base_inputs == 3 && graph.const_value(ins[2]).is_none() {
        return None;
    }
    // Unary steps, then at most one residual add of a full-size tensor, last.
    let mut unary = vec![];
    let mut residual = None;
    for (i, s) in steps.iter().enumerate() {
        match s {
            FusedStep::Unary(_) if residual.is_none() => unary.push(s.clone()),
            FusedStep::Binary {
                op: BinaryOp::Add,
                input,
                swap,
            } if i + 1 == steps.len()
                && graph.value_type(ins[*input]).ok()?.shape == node.outputs[0].shape =>
            {
                residual = Some((*input, *swap))
            }
            _ => return None,
        }
    }
    let (m, k) = (w.shape()[0], w.shape()[1]);
    let npix = xt.shape[2] * xt.shape[3];
    let as_conv = m.div_ceil(MR) * MR * conv_columns(npix);
    let as_gemm = swapped_rows(npix) * m.div_ceil(2 * NR) * 2 * NR;
    (as_conv as f64 > MARGIN * as_gemm as f64 && (2..=256).contains(&npix)).then_some(Eligible {
        m,
        k,
        base_inputs,
        unary,
        residual,
    })
}

/// Columns the AVX-512 tiles compute for `n` (`KernelPlan::column_tiles`: wide tiles of 32,
/// the last panel pair partial, a lone panel as a 16-column tile).
fn conv_columns(n: usize) -> usize {
    let (full, rest) = (n / NR, n % NR);
    full / 2 * 2 * NR
        + match (full % 2 == 1, rest > 0) {
            (true, true) => 2 * NR,
            (true, false) | (false, true) => NR,
            (false, false) => 0,
        }
}

/// Rows the swapped tiles cost for `n` pixels: `MR`-row tiles, a last short tile costing
/// at least 2 rows (its loads bound it).
fn swapped_rows(n: usize) -> usize {
    n / MR * MR
        + match n % MR {
            0 => 0,
            r => r.max(2),
        }
}

/// Conv `n` (its [`eligible`] shape `e`, found in the graph before any swap: a swap only
/// adds nodes and redirects uses to a value of the same type, which leaves what `eligible`
/// found of the other convs true) replaced by the swapped form.
fn swap(g: &mut Graph, n: optc_ir::NodeId, e: Eligible) -> std::result::Result<(), String> {
    let ins = g.node_inputs(n);
    let xt = g.value_type(ins[0]).map_err(|e| e.msg.clone())?;
    let (h, w) = (xt.shape[2], xt.shape[3]);
    let npix = h * w;
    let name = g.node(n).name.clone();
    let err = |e: optc_ir::IrError| e.msg;
    let r1 = g
        .add(
            &format!("{name}/pixels"),
            Op::Reshape {
                shape: vec![e.k, npix],
            },
            &[ins[0]],
        )
        .map_err(err)?;
    let t1 = g
        .add(
            &format!("{name}/pixel_rows"),
            Op::Transpose { perm: vec![1, 0] },
            &[r1],
        )
        .map_err(err)?;
    let wt = g.const_value(ins[1]).ok_or("weight")?.clone();
    let w2 = Tensor::from_f32(vec![e.m, e.k], wt.as_f32().ok_or("f32 weight")?.to_vec())
        .map_err(|e| e.msg)?;
    let wv = g.add_const(&format!("{name}/weight"), Arc::new(w2));
    let bias: Vec<f32> = match e.base_inputs {
        3 => g
            .const_value(ins[2])
            .and_then(|b| b.as_f32())
            .ok_or("constant f32 bias")?
            .to_vec(),
        _ => vec![0.0; e.m],
    };
    let bv = g.add_const(
        &format!("{name}/bias"),
        Arc::new(Tensor::from_f32(vec![e.m], bias).map_err(|e| e.msg)?),
    );
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    let op = if e.unary.is_empty() {
        gemm
    } else {
        Op::Fused {
            base: Box::new(gemm),
            base_inputs: 3,
            steps: e.unary,
        }
    };
    let mm = g
        .add(&format!("{name}/gemm"), op, &[t1, wv, bv])
        .map_err(err)?;
    let t2 = g
        .add(
            &format!("{name}/channel_rows"),
            Op::Transpose { perm: vec![1, 0] },
            &[mm],
        )
        .map_err(err)?;
    let mut y = g
        .add(
            &format!("{name}/output"),
            Op::Reshape {
                shape: vec![1, e.m, h, w],
            },
            &[t2],
        )
        .map_err(err)?;
    if let Some((input, swap)) = e.residual {
        let r = ins[input];
        let pair = if swap { [r, y] } else { [y, r] };
        y = g
            .add(&name, Op::Binary(BinaryOp::Add), &pair)
            .map_err(err)?;
    }
    g.replace_uses(Value::new(n, 0), y);
    Ok(())
}
