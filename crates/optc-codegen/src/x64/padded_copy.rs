//! The zero-padded input copy of a conv run by the packing kernels (im2col patches, the
//! direct-conv kernel, sparse convs), made in scratch before the tasks: each input plane
//! `[h, w]` becomes a plane `[hp, wp]` with the input at row `ph`, column `pw` and zeros
//! around it. For the stride-2 direct-conv kernel each padded row is deinterleaved (its even
//! columns, then its odd ones: [`KernelPlan::direct_conv_deinterleaved`]).
//!
//! The pad rows are zeroed before the tasks; the interior rows (each with its pad columns)
//! are copied there too, or, when the node has tasks and enough input, in
//! [`KernelPlan::copy_parts`] parallel parts of consecutive rows (`emit_copy_part`) before the
//! tasks, so a large copy is not serial work at two threads. Small planes ([`PLANE_ROWS`])
//! are copied whole, their pad rows with them, serially or in parallel parts of planes.
//!
//! On AVX-512 the rows (or whole planes) go through the assembled copy
//! ([`crate::x64::asm::padded_rows`]: 16 floats a move, a deinterleaved row by `vpermt2ps`),
//! one call per run of rows; elsewhere, and for rows over
//! [`padded_rows::MAX_ROW_FLOATS`], the Cranelift copy below in 16-byte vectors.

use super::asm::padded_rows::{self, PaddedRowsKey};
use super::asm::{Isa, Routine};
use super::kernel_plan::{KernelPlan, Strategy};
use super::sparse::SparseKind;
use super::tasks::{part_range, KernelArgs};
use crate::builder::{copy_span, shuffle_lanes, tensor_flags, zero_span, Emitter, F32X4};
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{types, FuncRef, InstBuilder, Value};

/// Floats of input per parallel part of the copy at the least: a part is a task (about half
/// a microsecond to dispatch; 64 KB copy in a few), and inputs under two parts are copied
/// serially. (RegNet's 160 x 14 x 14 inputs went in 16 parts of 0.3-1 us each: 9 us of a
/// 49 us conv at two threads.)
const PART_MIN_FLOATS: usize = 1 << 14;

/// Planes of at most this many padded rows (of at most [`PLANE_COLUMNS`] input columns) are
/// copied a whole plane an iteration, its rows unrolled, the pad rows with them: row by row,
/// the index arithmetic of each row and the serial zeroing of the pad rows cost more than
/// the copy (the MNIST-like CNN's 64 x 4 x 4 maps over 360 images: 23040 planes, 0.46 ms
/// before its 6 ms conv).
const PLANE_ROWS: usize = 16;
const PLANE_COLUMNS: usize = 64;

impl KernelPlan {
    /// The geometry of the conv whose input is copied zero-padded before the tasks, if the
    /// node has such a copy.
    pub(super) fn padded_copy(&self) -> Option<&ConvGeometry> {
        if self.taps.is_some() {
            // (Copied with the images innermost instead: `tap_classes::emit_copy`.)
            return None;
        }
        let g = match &self.kind {
            Strategy::ImplicitGemm(g) => g,
            Strategy::Sparse(s) => match &s.kind {
                SparseKind::Conv(g) => g,
                SparseKind::MatMul { .. } => return None,
            },
            _ => return None,
        };
        (g.hp != g.h || g.wp != g.w).then_some(g)
    }

    /// Parallel parts of the padded copy's interior rows, or of its planes when they are
    /// copied whole ([`copies_planes`]) (0: copied serially before the tasks): up to as many
    /// as tasks, of [`PART_MIN_FLOATS`] input floats or more, when the node has tasks and no
    /// shared patches (their packing is the parallel preparation and reads the copy).
    pub(super) fn copy_parts(&self) -> usize {
        let Some(g) = self.padded_copy() else {
            return 0;
        };
        let rows = g.n * g.c * g.h;
        let most = (rows * g.w) / PART_MIN_FLOATS;
        if self.tasks < 2 || self.shared_patches() || most < 2 {
            return 0;
        }
        let units = if copies_planes(g) { g.n * g.c } else { rows };
        self.tasks.min(units).min(most)
    }

    /// The assembled padded copy of the node, if it has a padded copy and the target one
    /// ([`padded_rows`]: AVX-512, rows of at most [`padded_rows::MAX_ROW_FLOATS`]).
    pub(super) fn padded_rows_key(&self) -> Option<PaddedRowsKey> {
        let g = self.padded_copy()?;
        let ok =
            self.isa == Isa::Avx512 && g.h > 0 && g.w > 0 && g.wp <= padded_rows::MAX_ROW_FLOATS;
        ok.then(|| PaddedRowsKey {
            w: g.w,
            wp: g.wp,
            pw: g.pw,
            h: g.h,
            hp: g.hp,
            ph: g.ph,
            deinterleaved: self.deinterleaves_copy(g),
            planes: copies_planes(g),
        })
    }

    /// Whether the padded rows are deinterleaved (for the stride-2 direct-conv kernel).
    fn deinterleaves_copy(&self, g: &ConvGeometry) -> bool {
        matches!(self.kind, Strategy::ImplicitGemm(_)) && self.direct_conv_deinterleaved(g)
    }
}

/// The assembled copy of the node's padded rows, if the module has it.
fn assembled(p: &KernelPlan, c: &KernelArgs) -> Option<FuncRef> {
    let key = p.padded_rows_key()?;
    c.microkernels.get(&Routine::PaddedRows(key)).copied()
}

/// Whether the padded copy goes a whole plane at a time ([`PLANE_ROWS`]).
fn copies_planes(g: &ConvGeometry) -> bool {
    g.hp <= PLANE_ROWS && g.w <= PLANE_COLUMNS
}

/// The serial part of the padded copy: the pad rows of every plane, and every interior row
/// unless [`KernelPlan::copy_parts`] splits them into parallel parts; planes copied whole
/// ([`copies_planes`]) all here or all in the parts.
pub(super) fn emit_copy(e: &mut Emitter, p: &KernelPlan, g: &ConvGeometry, c: &KernelArgs) {
    if copies_planes(g) {
        if p.copy_parts() == 0 {
            let (lo, hi) = (e.int_const(0), e.int_const((g.n * g.c) as i64));
            copy_planes(e, p, g, c, lo, hi);
        }
        return;
    }
    let plane_b = (g.hp * g.wp * 4) as i64;
    let row_b = (g.wp * 4) as i64;
    let z = e.int_const(0);
    e.loop_offsets((g.n * g.c) as i64, &[z], &[plane_b], &mut |e, _i, o| {
        let base = e.b.ins().iadd(c.scratch, o[0]);
        if g.h == 0 || g.w == 0 {
            zero_span(e, base, g.hp * g.wp);
            return;
        }
        zero_span(e, base, g.ph * g.wp);
        let bottom = e.b.ins().iadd_imm_s(base, (g.ph + g.h) as i64 * row_b);
        zero_span(e, bottom, (g.hp - g.ph - g.h) * g.wp);
    });
    if p.copy_parts() == 0 && g.h > 0 && g.w > 0 {
        let hi = e.int_const((g.n * g.c * g.h) as i64);
        copy_rows(e, p, g, c, z, hi);
    }
}

/// Part `t` of [`KernelPlan::copy_parts`]: consecutive interior rows (of all planes), or
/// consecutive whole planes.
pub(super) fn emit_copy_part(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    c: &KernelArgs,
    t: Value,
) {
    if copies_planes(g) {
        let (lo, hi) = part_range(e, t, g.n * g.c, p.copy_parts());
        copy_planes(e, p, g, c, lo, hi);
        return;
    }
    let (lo, hi) = part_range(e, t, g.n * g.c * g.h, p.copy_parts());
    copy_rows(e, p, g, c, lo, hi);
}

/// Whole padded planes `[lo, hi)` (of all images' channels), every row unrolled: the pad
/// rows zeroed, each interior row as [`copy_rows`] writes it.
fn copy_planes(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    c: &KernelArgs,
    lo: Value,
    hi: Value,
) {
    if let Some(f) = assembled(p, c) {
        let s = e.b.ins().imul_imm_s(lo, (g.h * g.w * 4) as i64);
        let src = e.b.ins().iadd(c.ins[0], s);
        let d = e.b.ins().imul_imm_s(lo, (g.hp * g.wp * 4) as i64);
        let dst = e.b.ins().iadd(c.scratch, d);
        let planes = e.b.ins().isub(hi, lo);
        let z = e.int_const(0);
        e.b.ins().call(f, &[src, dst, planes, z]);
        return;
    }
    let row_b = g.wp * 4;
    e.loop_range(lo, hi, &mut |e, i| {
        let s = e.b.ins().imul_imm_s(i, (g.h * g.w * 4) as i64);
        let src = e.b.ins().iadd(c.ins[0], s);
        let d = e.b.ins().imul_imm_s(i, (g.hp * row_b) as i64);
        let dst = e.b.ins().iadd(c.scratch, d);
        for r in 0..g.hp {
            let row = e.b.ins().iadd_imm_s(dst, (r * row_b) as i64);
            if r < g.ph || r >= g.ph + g.h {
                zero_span(e, row, g.wp);
            } else {
                let from = e.b.ins().iadd_imm_s(src, ((r - g.ph) * g.w * 4) as i64);
                padded_row(e, p, g, from, row);
            }
        }
    });
}

/// Interior rows `[lo, hi)` of all planes (row `i` is row `i % h` of plane `i / h`): the
/// row's pad columns zeroed, its `w` floats copied (deinterleaved for the stride-2 direct
/// conv).
fn copy_rows(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    c: &KernelArgs,
    lo: Value,
    hi: Value,
) {
    let row_b = (g.wp * 4) as i64;
    // Padded row `ph + i % h` of plane `i / h` is padded row `i + (i / h) (hp - h) + ph`.
    let padded = |e: &mut Emitter, i: Value| {
        let plane = e.b.ins().udiv_imm_u(i, g.h as i64);
        let skipped = e.b.ins().imul_imm_s(plane, (g.hp - g.h) as i64);
        let r = e.b.ins().iadd(i, skipped);
        let r = e.b.ins().iadd_imm_s(r, g.ph as i64);
        let d = e.b.ins().imul_imm_s(r, row_b);
        let dst = e.b.ins().iadd(c.scratch, d);
        let s = e.b.ins().imul_imm_s(i, (g.w * 4) as i64);
        let src = e.b.ins().iadd(c.ins[0], s);
        (src, dst)
    };
    if let Some(f) = assembled(p, c) {
        let (src, dst) = padded(e, lo);
        let rows = e.b.ins().isub(hi, lo);
        let row = e.b.ins().urem_imm_u(lo, g.h as i64);
        e.b.ins().call(f, &[src, dst, rows, row]);
        return;
    }
    e.loop_range(lo, hi, &mut |e, i| {
        let (src, dst) = padded(e, i);
        padded_row(e, p, g, src, dst);
    });
}

/// One interior row: its pad columns zeroed, its `w` floats from `src` copied
/// (deinterleaved for the stride-2 direct conv).
fn padded_row(e: &mut Emitter, p: &KernelPlan, g: &ConvGeometry, src: Value, dst: Value) {
    if p.deinterleaves_copy(g) {
        deinterleaved_row(e, g, src, dst);
    } else {
        zero_span(e, dst, g.pw);
        let right = e.b.ins().iadd_imm_s(dst, ((g.pw + g.w) * 4) as i64);
        zero_span(e, right, g.wp - g.pw - g.w);
        let interior = e.b.ins().iadd_imm_s(dst, (g.pw * 4) as i64);
        copy_span(e, src, interior, g.w);
    }
}

/// One padded row for the stride-2 direct-conv kernel ([`KernelPlan::direct_conv_key`]): its
/// `wp` floats hold the even padded columns, then the odd ones (`ceil(wp / 2)` and
/// `floor(wp / 2)` floats), so a tap of 8 stride-2 outputs is one contiguous load. The pad
/// columns are zeroed; the interior goes by f32x4 pairs split into even and odd lanes.
fn deinterleaved_row(e: &mut Emitter, g: &ConvGeometry, src: Value, dst: Value) {
    let half = g.wp.div_ceil(2);
    // Position of padded column j in its row.
    let pos = |j: usize| {
        if j.is_multiple_of(2) {
            j / 2
        } else {
            half + j / 2
        }
    };
    let zs = e.float_const(types::F32, 0.0);
    for j in (0..g.pw).chain(g.pw + g.w..g.wp) {
        e.b.ins()
            .store(tensor_flags(), zs, dst, (pos(j) * 4) as i32);
    }
    // x[i], x[i + 2], .. (padded columns i + pw, ..: one part) and x[i + 1], x[i + 3], ..
    // (the other), 4 consecutive positions each.
    let nv = g.w / 8;
    let even0 = pos(g.pw);
    let odd0 = pos(g.pw + 1);
    let z = e.int_const(0);
    e.loop_offsets(nv as i64, &[src, z], &[32, 16], &mut |e, _v, t| {
        let a = e.b.ins().load(F32X4, tensor_flags(), t[0], 0);
        let b = e.b.ins().load(F32X4, tensor_flags(), t[0], 16);
        let even = shuffle_lanes(e, a, b, [0, 2, 4, 6]);
        let odd = shuffle_lanes(e, a, b, [1, 3, 5, 7]);
        let d = e.b.ins().iadd(dst, t[1]);
        e.b.ins().store(tensor_flags(), even, d, (even0 * 4) as i32);
        e.b.ins().store(tensor_flags(), odd, d, (odd0 * 4) as i32);
    });
    for i in nv * 8..g.w {
        let x =
            e.b.ins()
                .load(types::F32, tensor_flags(), src, (i * 4) as i32);
        e.b.ins()
            .store(tensor_flags(), x, dst, (pos(i + g.pw) * 4) as i32);
    }
}
