//! A node's serial work around its tasks: the conv's zero-padded input copy (or the swapped
//! 1x1 conv's input packing) before, Gemm's general C term and the fused steps the tiles did
//! not apply after.

use super::kernel_plan::{KernelPlan, Strategy};
use super::tasks::KernelArgs;
use super::{gemm, int8, padded_copy, pairs, small_map, winograd};
use crate::builder::{tensor_flags, Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::elementwise::Elementwise;
use crate::ops::fused::apply_chain;
use crate::ops::map::map;
use crate::ops::operand::Operand;
use cranelift_codegen::ir::{types, InstBuilder, Value};
use optc_ir::Op;

/// Serial work before the tasks: the zero-padded input copy of a conv (an int8 node's:
/// its activations quantized, see [`int8::emit_pre`]).
pub(crate) fn emit_pre(
    e: &mut Emitter,
    _info: &NodeInfo,
    p: &KernelPlan,
    c: &KernelArgs,
) -> Result<()> {
    // All buffer slots free.
    let z = e.int_const(0);
    e.b.ins()
        .store(tensor_flags(), z, c.scratch, p.mask_off() as i32);
    if let Strategy::SmallMap = p.kind {
        small_map::emit_pack(e, p, c);
        return Ok(());
    }
    if let Strategy::Int8(q) = &p.kind {
        int8::emit_pre(e, p, q, c);
        return Ok(());
    }
    // (Depthwise convs read their input in place: see `depthwise`.)
    if let Some(g) = p.padded_copy() {
        padded_copy::emit_copy(e, p, g, c);
    }
    // A pair's packing in one part.
    if p.depthwise_after.is_some() && p.prepare_parts() == 1 {
        let z = e.int_const(0);
        pairs::emit_pack_part(e, p, c, z);
    }
    // A shared Winograd transform in one part (more run in parallel, `emit_prepare`).
    if let Strategy::Winograd(g, r) = &p.kind {
        if winograd::shares_transform(p) && p.prepare_parts() == 1 {
            let z = e.int_const(0);
            winograd::emit_shared_part(e, p, g, *r, c, z);
        }
    }
    Ok(())
}

/// Part `t` of the parallel preparation (of [`KernelPlan::prepare_parts`]), run after
/// [`emit_pre`] and before the tasks.
pub(crate) fn emit_prepare(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    if let Strategy::Int8(q) = &p.kind {
        int8::emit_prepare(e, p, q, c, t);
    }
    if p.depthwise_after.is_some() {
        pairs::emit_pack_part(e, p, c, t);
    } else if p.shared_patches() {
        gemm::emit_pack_patches(e, p, c, t);
    }
    if let Strategy::Winograd(g, r) = &p.kind {
        if winograd::shares_transform(p) {
            winograd::emit_shared_part(e, p, g, *r, c, t);
        }
    }
    if let Some(g) = p.padded_copy().filter(|_| p.copy_parts() > 0) {
        padded_copy::emit_copy_part(e, p, g, c, t);
    }
}

impl KernelPlan {
    /// Whether work follows the tasks (Gemm's general C term, fused steps the tiles skipped).
    pub fn has_post(&self, info: &NodeInfo) -> bool {
        let steps = match info.op {
            Op::Fused { steps, .. } => steps.len(),
            _ => 0,
        };
        self.gemm_c_post.is_some() || self.rest < steps
    }
}

/// The work after the tasks: Gemm's general C term and fused steps the tile store skipped
/// (on all of the output, or on a task's slice of it with `Emitter::partition`).
/// A folded conv's output ([`KernelPlan::fold`]): its buffer `[m][images x pixels]` into
/// the output `[image][m][pixels]`, a run of `pixels` floats at a time.
fn unfold(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs) {
    let px = p.fold;
    let images = p.n / px;
    let buf = e.b.ins().iadd_imm_s(c.scratch, p.fold_off() as i64);
    let z = e.int_const(0);
    // Image `i`: its columns in every row of the buffer, its block of the output.
    e.loop_offsets(
        images as i64,
        &[z, z],
        &[(px * 4) as i64, (p.m * px * 4) as i64],
        &mut |e, _i, o| {
            let src = e.b.ins().iadd(buf, o[0]);
            let dst = e.b.ins().iadd(c.out, o[1]);
            e.loop_offsets(
                p.m as i64,
                &[src, dst],
                &[(p.n * 4) as i64, (px * 4) as i64],
                &mut |e, _r, q| {
                    for v in 0..px / 4 {
                        let x = e.b.ins().load(F32X4, tensor_flags(), q[0], (16 * v) as i32);
                        e.b.ins().store(tensor_flags(), x, q[1], (16 * v) as i32);
                    }
                    for j in px / 4 * 4..px {
                        let x =
                            e.b.ins()
                                .load(types::F32, tensor_flags(), q[0], (4 * j) as i32);
                        e.b.ins().store(tensor_flags(), x, q[1], (4 * j) as i32);
                    }
                },
            );
        },
    );
}

pub(crate) fn emit_post(
    e: &mut Emitter,
    info: &NodeInfo,
    p: &KernelPlan,
    c: &KernelArgs,
) -> Result<()> {
    let oty = &info.outs[0];
    if p.fold > 0 {
        unfold(e, p, c);
    }
    if let Some(beta) = p.gemm_c_post {
        let o = Operand::dense(c.out, oty);
        let cc = Operand::broadcast(c.ins[2], &info.ins[2], &oty.shape);
        map(
            e,
            info,
            &oty.shape,
            o.clone(),
            &[o, cc],
            &Elementwise::AddScaled(beta),
        )?;
    }
    if let Op::Fused { steps, .. } = info.op {
        if p.rest < steps.len() {
            apply_chain(e, info, c.ins, c.out, &steps[p.rest..])?;
        }
    }
    Ok(())
}
