//! 2-D f32 average pools with padding, over zero-padded planes (horizontal stride 1 or 2): each plane is
//! copied into a buffer whose padding cells are zeros, so that every output, at the border
//! as inside, is four outputs at a time: the window's cells added in the window's order
//! (a padding cell adds `+0.0`, as the reference's sum does), divided by the output's cell
//! count from a compile-time table (the cells inside the map, or inside the padded map with
//! `count_include_pad`). The same bits as [`super::pool::lower_avgpool`], which computes the
//! border cells one at a time (on Inception's 17x17 and 8x8 maps, a quarter to a half of
//! them). Large pools run as tasks, each a block of planes with its own buffer in scratch.

use crate::builder::{shuffle_lanes, tensor_flags, zero_span, Emitter, F32X4};
use crate::node::NodeInfo;
use crate::ops::parallel::{row_parts, task_rows};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use optc_ir::{DType, Op};

/// Largest padded plane buffer (bytes) a task holds.
const MAX_BUFFER_BYTES: usize = 1 << 20;
/// Most tasks of one pool.
const MAX_PARTS: usize = 8;

/// The extents of a pool this path takes.
pub(crate) struct AvgPoolGeometry {
    planes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    kh: usize,
    kw: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    pt: usize,
    pl: usize,
    /// Rows and row length (floats) of the padded plane buffer.
    rows: usize,
    cols: usize,
    /// Output counts per cell, row-major.
    counts: Vec<f32>,
}

/// Cells of one axis a window reads inside the map (`n` cells, leading padding `p`), or
/// inside the padded map (`padded` cells) with `include_pad`, for output `o`.
fn axis_counts(
    (n, padded, o, k, s, d, p): (usize, usize, usize, usize, usize, usize, usize),
    include_pad: bool,
) -> Vec<usize> {
    (0..o)
        .map(|j| {
            (0..k)
                .filter(|&t| {
                    let q = j * s + t * d;
                    if include_pad {
                        q < padded
                    } else {
                        (p..p + n).contains(&q)
                    }
                })
                .count()
        })
        .collect()
}

/// The geometry of a plain 2-D f32 average pool this path computes, or `None`.
pub(crate) fn geometry(info: &NodeInfo) -> Option<AvgPoolGeometry> {
    let Op::AveragePool {
        window: wnd,
        count_include_pad,
    } = info.op
    else {
        return None;
    };
    let (xs, os) = (&info.ins[0].shape, &info.outs[0].shape);
    if wnd.nsp() != 2
        || info.ins[0].dtype != DType::F32
        || info.outs.len() != 1
        || info.outs[0].numel() == 0
        || !matches!(wnd.strides[1], 1 | 2)
        || wnd.pads.iter().all(|&p| p == 0)
    {
        // (Without padding there is no border: `lower_avgpool` reads the map in place,
        // where the copy into a buffer would cost as much as the pool, measured on
        // DenseNet's 2x2 transitions.)
        return None;
    }
    let (h, w, oh, ow) = (xs[2], xs[3], os[2], os[3]);
    let (kh, kw) = (wnd.kernel[0], wnd.kernel[1]);
    let (sh, sw) = (wnd.strides[0], wnd.strides[1]);
    let (dh, dw) = (wnd.dilations[0], wnd.dilations[1]);
    let (pt, pl) = (wnd.pads[0], wnd.pads[1]);
    let (pb, pr) = (wnd.pads[2], wnd.pads[3]);
    let rc = axis_counts((h, h + pt + pb, oh, kh, sh, dh, pt), *count_include_pad);
    let cc = axis_counts((w, w + pl + pr, ow, kw, sw, dw, pl), *count_include_pad);
    if rc.contains(&0) || cc.contains(&0) {
        // (An output with no cell is 0, not 0 / 0: the cell-by-cell path.)
        return None;
    }
    let counts = rc
        .iter()
        .flat_map(|&r| cc.iter().map(move |&c| (r * c) as f32))
        .collect();
    // Rows every window reads; columns too, and 8 more: a stride-2 vector's second load
    // reads a cell past the last one it uses.
    let rows = (oh - 1) * sh + (kh - 1) * dh + 1;
    let cols = (ow - 1) * sw + (kw - 1) * dw + 1 + 8;
    if rows * cols * 4 > MAX_BUFFER_BYTES {
        return None;
    }
    Some(AvgPoolGeometry {
        planes: xs[0] * xs[1],
        h,
        w,
        oh,
        ow,
        kh,
        kw,
        sh,
        sw,
        dh,
        dw,
        pt,
        pl,
        rows,
        cols,
        counts,
    })
}

/// Tasks of a pool worth splitting (blocks of planes), for `parallel::task_split`.
pub(crate) fn parts(info: &NodeInfo) -> Option<usize> {
    let g = geometry(info)?;
    let adds = info.outs[0].numel() * g.kh * g.kw;
    if adds < 1 << 17 {
        return None;
    }
    row_parts(g.planes, MAX_PARTS)
}

/// Scratch bytes: a padded plane buffer per task.
pub(crate) fn scratch_bytes(info: &NodeInfo) -> Option<usize> {
    let g = geometry(info)?;
    Some(parts(info).unwrap_or(1) * buffer_bytes(&g))
}

fn buffer_bytes(g: &AvgPoolGeometry) -> usize {
    (g.rows * g.cols * 4).next_multiple_of(64)
}

/// The compile-time table: the cell count of every output, f32.
pub(crate) fn table(g: &AvgPoolGeometry) -> Vec<u8> {
    g.counts.iter().flat_map(|c| c.to_le_bytes()).collect()
}

/// The pool of `x` into `out`: this task's planes (all without a partition).
pub(crate) fn lower(
    e: &mut Emitter,
    g: &AvgPoolGeometry,
    x: Value,
    out: Value,
    scratch: Value,
    counts: Value,
) {
    // Each task's own padded buffer.
    let buffer = match e.partition.clone() {
        Some(sp) => {
            let o = e.b.ins().imul_imm_s(sp.t, buffer_bytes(g) as i64);
            e.b.ins().iadd(scratch, o)
        }
        None => scratch,
    };
    task_rows(e, g.planes, &|e, first, n| {
        planes(e, g, x, out, buffer, counts, first, n)
    });
}

/// `n` planes from plane `first` (an i64), through the padded buffer at `buffer`.
#[allow(clippy::too_many_arguments)]
fn planes(
    e: &mut Emitter,
    g: &AvgPoolGeometry,
    x: Value,
    out: Value,
    buffer: Value,
    counts: Value,
    first: Value,
    n: usize,
) {
    let (iplane, oplane) = ((g.h * g.w * 4) as i64, (g.oh * g.ow * 4) as i64);
    // The padding cells stay zero: every plane writes the same image cells.
    zero_span(e, buffer, g.rows * g.cols);
    let i0 = e.b.ins().imul_imm_s(first, iplane);
    let o0 = e.b.ins().imul_imm_s(first, oplane);
    // The image rows the windows read, and the columns of each.
    let image_rows: Vec<usize> = (0..g.h).filter(|&y| g.pt + y < g.rows).collect();
    let row_bytes = 4 * g.w.min(g.cols.saturating_sub(g.pl));
    let nv = g.ow / 4;
    e.loop_offsets(n as i64, &[i0, o0], &[iplane, oplane], &mut |e, _p, po| {
        for &y in &image_rows {
            let src = e.b.ins().iadd_imm_s(po[0], (y * g.w * 4) as i64);
            let dst = e.int_const((((g.pt + y) * g.cols + g.pl) * 4) as i64);
            e.copy_bytes(buffer, dst, x, src, row_bytes);
        }
        let z = e.int_const(0);
        e.loop_offsets(
            g.oh as i64,
            &[z, po[1], z],
            &[
                (g.sh * g.cols * 4) as i64,
                (g.ow * 4) as i64,
                (g.ow * 4) as i64,
            ],
            &mut |e, _r, ro| {
                let brow = e.b.ins().iadd(buffer, ro[0]);
                let orow = e.b.ins().iadd(out, ro[1]);
                let crow = e.b.ins().iadd(counts, ro[2]);
                let zero = e.float_const(F32X4, 0.0);
                e.loop_offsets(
                    nv as i64,
                    &[brow, orow, crow],
                    &[(16 * g.sw) as i64, 16, 16],
                    &mut |e, _v, o| {
                        let mut acc = zero;
                        for a in 0..g.kh {
                            for b in 0..g.kw {
                                let off = ((a * g.dh * g.cols + b * g.dw) * 4) as i32;
                                let v = if g.sw == 1 {
                                    e.b.ins().load(F32X4, tensor_flags(), o[0], off)
                                } else {
                                    let lo = e.b.ins().load(F32X4, tensor_flags(), o[0], off);
                                    let hi = e.b.ins().load(F32X4, tensor_flags(), o[0], off + 16);
                                    shuffle_lanes(e, lo, hi, [0, 2, 4, 6])
                                };
                                acc = e.b.ins().fadd(acc, v);
                            }
                        }
                        let c = e.b.ins().load(F32X4, tensor_flags(), o[2], 0);
                        let q = e.b.ins().fdiv(acc, c);
                        e.b.ins().store(tensor_flags(), q, o[1], 0);
                    },
                );
                // The last `ow % 4` outputs one at a time.
                for col in 4 * nv..g.ow {
                    let mut acc = e.float_const(types::F32, 0.0);
                    for a in 0..g.kh {
                        for b in 0..g.kw {
                            let off = ((a * g.dh * g.cols + col * g.sw + b * g.dw) * 4) as i32;
                            let v = e.b.ins().load(types::F32, tensor_flags(), brow, off);
                            acc = e.b.ins().fadd(acc, v);
                        }
                    }
                    let c =
                        e.b.ins()
                            .load(types::F32, tensor_flags(), crow, (col * 4) as i32);
                    let q = e.b.ins().fdiv(acc, c);
                    e.b.ins().store(tensor_flags(), q, orow, (col * 4) as i32);
                }
            },
        );
    });
}
