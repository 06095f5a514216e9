//! Transposes that swap a matrix's rows and columns (`[.., S, D] -> [.., D, S]`, NCHW to
//! NHWC and back, the swapped convs' `[K, N] -> [N, K]`), on the AVX-512 routine of
//! [`super::asm::matrix_transpose`]; other targets, and other permutations, keep the
//! Cranelift lowering (`ops::movement`: 4x4 blocks).
//!
//! The output's dims are merged where the input holds them contiguously; what is left must
//! be `[images, A, B]` (or `[A, B]`) with A contiguous in the input: each image is a
//! matrix of `B` input rows of `A` floats. A task's units are strips of 16 input rows (or
//! of 16 input columns, when that gives more strips) of one image, one routine call each.

use super::asm::matrix_transpose::MatrixTransposeKey;
use super::asm::{Isa, Routine};
use super::kernel_plan::{rows_plan, KernelPlan, Strategy};
use super::tasks::{task_units, KernelArgs};
use crate::builder::{if_else, Emitter};
use crate::node::NodeInfo;
use crate::target::Target;
use cranelift_codegen::ir::{condcodes::IntCC, InstBuilder, Value};
use optc_ir::Op;

/// Transposes below this many elements keep the Cranelift lowering (a call per strip does
/// not pay for a few vectors).
const MIN_ELEMENTS: usize = 256;

/// Split across tasks from this many elements (128 KB: 5-10 us at one thread).
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// A transpose as matrices: `images` of them, `image_in` floats apart in the input (the
/// output's are dense, `rows * cols` apart), each `rows` input rows of `cols` floats,
/// `in_stride` floats apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatrixGeometry {
    pub images: usize,
    pub image_in: usize,
    pub rows: usize,
    pub cols: usize,
    pub in_stride: usize,
    /// Strips of input rows (else of input columns).
    pub along_rows: bool,
}

impl MatrixGeometry {
    /// Strips per image, and the rows (columns) of the last.
    fn strips(&self) -> (usize, usize) {
        let extent = if self.along_rows {
            self.rows
        } else {
            self.cols
        };
        (extent.div_ceil(16), extent - 16 * (extent.div_ceil(16) - 1))
    }

    fn key(&self, strip: usize) -> MatrixTransposeKey {
        MatrixTransposeKey {
            rows: self.rows,
            cols: self.cols,
            in_stride: self.in_stride,
            out_stride: self.rows,
            along_rows: self.along_rows,
            strip,
        }
    }
}

/// The transpose of `info` as matrices, when it is one (a plain 4-byte `Transpose`).
pub(super) fn geometry(info: &NodeInfo) -> Option<MatrixGeometry> {
    let Op::Transpose { perm } = info.op else {
        return None;
    };
    let (x, out) = (&info.ins[0], &info.outs[0]);
    if out.dtype.size() != 4 || x.dtype != out.dtype || out.numel() < MIN_ELEMENTS {
        return None;
    }
    // The input's element strides along the output's dims, merged where contiguous.
    let mut xs = vec![1usize; x.rank()];
    for d in (0..x.rank().saturating_sub(1)).rev() {
        xs[d] = xs[d + 1] * x.shape[d + 1];
    }
    let mut dims: Vec<(usize, usize)> = vec![];
    for (&q, &size) in perm.iter().zip(&out.shape) {
        if size == 1 {
            continue;
        }
        let stride = xs[q];
        match dims.last_mut() {
            Some(last) if last.1 == stride * size => *last = (last.0 * size, stride),
            _ => dims.push((size, stride)),
        }
    }
    // Output `[.., a, b]`, `a` contiguous in the input: input element `(j, i)` (output row
    // `i`, column `j`) at `j * b_stride + i`, so the input rows are the output's columns.
    let (images, image_in, (a, a_stride), (b, b_stride)) = match dims[..] {
        [a, b] => (1, 0, a, b),
        [(n, s), a, b] => (n, s, a, b),
        _ => return None,
    };
    if a_stride != 1 || a < 4 || b < 4 {
        return None;
    }
    let (rows, cols) = (b, a);
    let g = MatrixGeometry {
        images,
        image_in,
        rows,
        cols,
        in_stride: b_stride,
        along_rows: rows.div_ceil(16) >= cols.div_ceil(16),
    };
    (g.in_stride >= g.cols).then_some(g)
}

/// The plan: `m` units (strips of all images), split across tasks when the transpose is
/// large enough.
pub(super) fn plan(g: MatrixGeometry, target: &Target) -> KernelPlan {
    let units = g.images * g.strips().0;
    let parallel = g.images * g.rows * g.cols >= PARALLEL_ELEMENTS;
    rows_plan(
        Strategy::MatrixTranspose(g),
        Isa::Avx512,
        (units, 1, 0),
        1,
        parallel,
        target,
    )
}

/// The routines: the full strips' and the last strip's when it is shorter.
pub(super) fn routines(g: &MatrixGeometry) -> Vec<Routine> {
    let (n, last) = g.strips();
    let mut keys = vec![];
    if n > 1 || last == 16 {
        keys.push(Routine::MatrixTranspose(g.key(16)));
    }
    if last < 16 {
        keys.push(Routine::MatrixTranspose(g.key(last)));
    }
    keys
}

/// The strips of task `t`, one call each.
pub(super) fn emit_task(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &MatrixGeometry,
    c: &KernelArgs,
    t: Value,
) {
    let (lo, hi) = task_units(e, p, t);
    let (n, last) = g.strips();
    let full = c
        .microkernels
        .get(&Routine::MatrixTranspose(g.key(16)))
        .copied();
    let tail = (last < 16).then(|| c.microkernels[&Routine::MatrixTranspose(g.key(last))]);
    // Bytes per strip along the input and the output, per image along each.
    let (strip_in, strip_out) = if g.along_rows {
        (16 * g.in_stride * 4, 16 * 4)
    } else {
        (16 * 4, 16 * g.rows * 4)
    };
    let (image_in, image_out) = (g.image_in * 4, g.rows * g.cols * 4);
    e.loop_range(lo, hi, &mut |e, u| {
        let img = e.b.ins().udiv_imm_u(u, n as i64);
        let s = e.b.ins().urem_imm_u(u, n as i64);
        let at = |e: &mut Emitter, base: Value, per_image: usize, per_strip: usize| {
            let i = e.b.ins().imul_imm_s(img, per_image as i64);
            let k = e.b.ins().imul_imm_s(s, per_strip as i64);
            let o = e.b.ins().iadd(i, k);
            e.b.ins().iadd(base, o)
        };
        let src = at(e, c.ins[0], image_in, strip_in);
        let dst = at(e, c.out, image_out, strip_out);
        let one = e.int_const(1);
        match (full, tail) {
            (Some(f), None) => {
                e.b.ins().call(f, &[src, dst, one]);
            }
            (None, Some(f)) => {
                e.b.ins().call(f, &[src, dst, one]);
            }
            (Some(f), Some(l)) => {
                let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, s, n as i64 - 1);
                if_else(
                    e,
                    is_last,
                    &mut |e| {
                        e.b.ins().call(l, &[src, dst, one]);
                    },
                    &mut |e| {
                        e.b.ins().call(f, &[src, dst, one]);
                    },
                );
            }
            (None, None) => unreachable!("a transpose plan without routines"),
        }
    });
}
