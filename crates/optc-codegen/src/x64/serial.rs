//! A node's serial work around its tasks: the conv's zero-padded input copy (or the swapped
//! 1x1 conv's input packing) before, Gemm's general C term and the fused steps the tiles did
//! not apply after.

use super::direct_conv::emit_deinterleaved_copy;
use super::kernel_plan::{KernelPlan, Strategy};
use super::sparse::SparseKind;
use super::tasks::KernelArgs;
use super::{gemm, int8, small_map};
use crate::builder::{copy_span, tensor_flags, zero_span, Emitter, F32X4};
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
    let g = match &p.kind {
        Strategy::ImplicitGemm(g) => g,
        Strategy::Sparse(s) => match &s.kind {
            SparseKind::Conv(g) => g,
            SparseKind::MatMul { .. } => return Ok(()),
        },
        _ => return Ok(()),
    };
    if p.pad_bytes() == 0 {
        return Ok(());
    }
    if matches!(p.kind, Strategy::ImplicitGemm(_)) && p.direct_conv_deinterleaved(g) {
        emit_deinterleaved_copy(e, g, c);
        return Ok(());
    }
    // Zero only the border: per plane, the span before the first interior row's data,
    // the gaps between interior rows (right pad + next left pad) and the span after the
    // last one.
    let plane_b = (g.hp * g.wp * 4) as i64;
    let head = g.ph * g.wp + g.pw;
    let gap = g.wp - g.w;
    let tail_at = (g.ph + g.h.max(1) - 1) * g.wp + g.pw + g.w;
    let z = e.int_const(0);
    e.loop_offsets((g.n * g.c) as i64, &[z], &[plane_b], &mut |e, _i, o| {
        let base = e.b.ins().iadd(c.scratch, o[0]);
        if g.h == 0 || g.w == 0 {
            zero_span(e, base, g.hp * g.wp);
            return;
        }
        zero_span(e, base, head);
        if gap > 0 && g.h > 1 {
            let first = ((head + g.w) * 4) as i64;
            let r0 = e.b.ins().iadd_imm_s(base, first);
            e.loop_offsets(
                (g.h - 1) as i64,
                &[r0],
                &[(g.wp * 4) as i64],
                &mut |e, _r, q| {
                    zero_span(e, q[0], gap);
                },
            );
        }
        let t = e.b.ins().iadd_imm_s(base, (tail_at * 4) as i64);
        zero_span(e, t, g.hp * g.wp - tail_at);
    });
    // The interior, row by row.
    let d0 =
        e.b.ins()
            .iadd_imm_s(c.scratch, ((g.ph * g.wp + g.pw) * 4) as i64);
    e.loop_offsets(
        (g.n * g.c) as i64,
        &[c.ins[0], d0],
        &[(g.h * g.w * 4) as i64, plane_b],
        &mut |e, _i, o| {
            e.loop_offsets(
                g.h as i64,
                &[o[0], o[1]],
                &[(g.w * 4) as i64, (g.wp * 4) as i64],
                &mut |e, _r, q| copy_span(e, q[0], q[1], g.w),
            );
        },
    );
    Ok(())
}

/// Part `t` of the parallel preparation (of [`KernelPlan::prepare_parts`]), run after
/// [`emit_pre`] and before the tasks.
pub(crate) fn emit_prepare(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    if let Strategy::Int8(q) = &p.kind {
        int8::emit_prepare(e, p, q, c, t);
    }
    if p.shared_patches() {
        gemm::emit_pack_patches(e, p, c, t);
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
