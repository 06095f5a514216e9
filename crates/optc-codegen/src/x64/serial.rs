//! A node's serial work around its tasks: the conv's zero-padded input copy (or the swapped
//! 1x1 conv's input packing) before, Gemm's general C term and the fused steps the tiles did
//! not apply after.

use super::kernel_plan::{KernelPlan, Strategy};
use super::tap_classes::{self, TapClasses};
use super::tasks::{part_range, KernelArgs};
use super::{gemm, int8, padded_copy, pairs, small_map, winograd};
use crate::builder::{tensor_flags, transpose4, Emitter, F32X4};
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
    if let Some(g) = p.tap_geometry() {
        if tap_classes::parts(p, g) == 0 {
            let (lo, hi) = (e.int_const(0), e.int_const(g.c as i64));
            tap_classes::emit_copy(e, g, c, lo, hi);
        }
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
    if let Some(g) = p.tap_geometry() {
        let (lo, hi) = part_range(e, t, g.c, tap_classes::parts(p, g));
        tap_classes::emit_copy(e, g, c, lo, hi);
    }
}

/// Part `t` of a folded conv's reorder into its output when it runs in parallel parts
/// ([`KernelPlan::unfold_parts`]): rows of the output channels.
pub(crate) fn emit_unfold_part(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    if let Some(tc) = &p.taps {
        let (lo, hi) = part_range(e, t, p.m, p.unfold_parts());
        unfold_classes(e, p, c, tc, lo, hi);
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
    /// Parallel parts of a folded conv's reorder into the output, after the tasks and before
    /// the rest of the work after them (0: that work does it, serially). Only a conv run by
    /// tap classes ([`super::tap_classes`]).
    pub fn unfold_parts(&self) -> usize {
        self.tap_geometry()
            .map_or(0, |g| tap_classes::parts(self, g))
    }
    /// Whether the work after the tasks may run in slices of the output: not a folded
    /// conv's, whose reorder into the output must precede every slice.
    pub fn post_in_slices(&self, info: &NodeInfo) -> bool {
        self.has_post(info) && self.fold == 0
    }
}

/// The work after the tasks: Gemm's general C term and fused steps the tile store skipped
/// (on all of the output, or on a task's slice of it with `Emitter::partition`).
/// A folded conv's output ([`KernelPlan::fold`]): its buffer `[m][images x pixels]` into
/// the output `[image][m][pixels]`, a run of `pixels` floats at a time.
fn unfold(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs) {
    if let Some(t) = &p.taps {
        let (lo, hi) = (e.int_const(0), e.int_const(p.m as i64));
        return unfold_classes(e, p, c, t, lo, hi);
    }
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

/// [`unfold`] of a conv computed by tap classes, output rows (channels) `[lo, hi)`: each
/// output pixel's columns are the images in order ([`TapClasses::pixel_columns`]: per
/// pixel, its first column).
/// Four images at a time, row by row: per four consecutive pixels, their four vectors (four
/// images each) transposed into the four images' runs of those pixels, so the output is
/// written in order (the rows' columns read stay in L2 across the images).
fn unfold_classes(
    e: &mut Emitter,
    p: &KernelPlan,
    c: &KernelArgs,
    t: &TapClasses,
    lo: Value,
    hi: Value,
) {
    let pixels = &t.pixel_columns()[..];
    let buf = e.b.ins().iadd_imm_s(c.scratch, p.fold_off() as i64);
    let px = p.fold;
    let images = t.real_columns() / px;
    let image_bytes = (p.m * px * 4) as i64;
    let row_bytes = (p.n * 4) as i64;
    // Rows `[lo, hi)` of the images from buffer column offset `src` (bytes) and output
    // image `dst`: `body(e, src_row, dst_row)` per row.
    let rows = |e: &mut Emitter,
                src: Value,
                dst: Value,
                body: &mut dyn FnMut(&mut Emitter, Value, Value)| {
        e.loop_range(lo, hi, &mut |e, r| {
            let so = e.b.ins().imul_imm_s(r, row_bytes);
            let doff = e.b.ins().imul_imm_s(r, (px * 4) as i64);
            let s = e.b.ins().iadd(src, so);
            let d = e.b.ins().iadd(dst, doff);
            body(e, s, d);
        });
    };
    let z = e.int_const(0);
    e.loop_offsets(
        (images / 4) as i64,
        &[z, z],
        &[16, 4 * image_bytes],
        &mut |e, _i, o| {
            let src = e.b.ins().iadd(buf, o[0]);
            let dst = e.b.ins().iadd(c.out, o[1]);
            rows(e, src, dst, &mut |e, s, d| {
                let load = |e: &mut Emitter, q0: usize| {
                    let from = e.b.ins().iadd_imm_s(s, (q0 * 4) as i64);
                    e.b.ins().load(F32X4, tensor_flags(), from, 0)
                };
                let mut k = 0;
                while k < pixels.len() {
                    let (x, q0) = pixels[k];
                    let to = |e: &mut Emitter, l: usize| {
                        e.b.ins()
                            .iadd_imm_s(d, (x * 4) as i64 + l as i64 * image_bytes)
                    };
                    if k + 4 <= pixels.len() && (1..4).all(|j| pixels[k + j].0 == x + j) {
                        let v = [0, 1, 2, 3].map(|j| load(e, pixels[k + j].1));
                        let runs = transpose4(e, v);
                        for (l, r) in runs.into_iter().enumerate() {
                            let a = to(e, l);
                            e.b.ins().store(tensor_flags(), r, a, 0);
                        }
                        k += 4;
                    } else {
                        let v = load(e, q0);
                        for l in 0..4 {
                            let x = e.b.ins().extractlane(v, l as u8);
                            let a = to(e, l);
                            e.b.ins().store(tensor_flags(), x, a, 0);
                        }
                        k += 1;
                    }
                }
            });
        },
    );
    // The last images, one at a time.
    for i in images / 4 * 4..images {
        let src = e.b.ins().iadd_imm_s(buf, (i * 4) as i64);
        let dst = e.b.ins().iadd_imm_s(c.out, i as i64 * image_bytes);
        rows(e, src, dst, &mut |e, s, d| {
            for &(x, q0) in pixels {
                let from = e.b.ins().iadd_imm_s(s, (q0 * 4) as i64);
                let v = e.b.ins().load(types::F32, tensor_flags(), from, 0);
                let to = e.b.ins().iadd_imm_s(d, (x * 4) as i64);
                e.b.ins().store(tensor_flags(), v, to, 0);
            }
        });
    }
}

pub(crate) fn emit_post(
    e: &mut Emitter,
    info: &NodeInfo,
    p: &KernelPlan,
    c: &KernelArgs,
) -> Result<()> {
    let oty = &info.outs[0];
    if p.fold > 0 && p.unfold_parts() == 0 {
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
