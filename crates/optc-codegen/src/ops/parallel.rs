//! Which generic nodes are worth splitting across tasks, and into how many parts.

use crate::builder::{if_else, Emitter};
use crate::node::NodeInfo;
use cranelift_codegen::ir::{condcodes::IntCC, InstBuilder, Value};
use optc_ir::{DType, Op, TensorType};

/// Whether a generic node runs as tasks: `(dim, parts)`, each task a slice of the output
/// along `dim` (elementwise nodes) or a block of rows (softmax, layernorm: `dim` 0) or of
/// planes (average pools, `ops::avg_pool`: `dim` 0).
pub(crate) fn task_split(info: &NodeInfo) -> Option<(usize, usize)> {
    elementwise_split(info)
        .or_else(|| pad_split(info))
        .or_else(|| softmax_split(info).map(|p| (0, p)))
        .or_else(|| layernorm_split(info).map(|p| (0, p)))
        .or_else(|| crate::ops::avg_pool::parts(info).map(|p| (0, p)))
        .or_else(|| reduce_split(info).map(|p| (0, p)))
}

/// A reduction over trailing axes (a global average pool's `h, w`: squeeze-excitation
/// blocks) of a large f32 input: blocks of its outputs, up to 8. EfficientNet-B0's 16 pools
/// ran on one thread of two, 300 us of its 7 ms at 2 threads.
fn reduce_split(info: &NodeInfo) -> Option<usize> {
    let Op::Reduce { axes, .. } = info.op else {
        return None;
    };
    let x = &info.ins[0];
    let r = x.rank();
    let trailing = axes.len() <= r && axes.iter().all(|&a| a >= r - axes.len());
    if x.dtype != DType::F32 || !trailing || x.numel() < 1 << 16 {
        return None;
    }
    let outer: usize = x.shape[..r - axes.len()].iter().product();
    row_parts(outer, 8)
}

/// A large f32 elementwise node worth splitting across threads: `(dim, parts)` such that
/// `parts` divides the output's extent along `dim`.
fn elementwise_split(info: &NodeInfo) -> Option<(usize, usize)> {
    let ok = match info.op {
        Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } | Op::Bitcast { .. } => true,
        Op::Fused { base, .. } => {
            matches!(**base, Op::Unary(_) | Op::Binary(_)) || {
                // A BatchNorm base with constant parameters runs as a chain too.
                crate::node::base_info(info)
                    .is_some_and(|b| crate::ops::elementwise::batchnorm_affine(&b).is_some())
            }
        }
        Op::BatchNorm { .. } => true,
        Op::Transpose { .. } => return transpose_split(info),
        &Op::Concat { axis } => return concat_split(info, axis),
        Op::Slice { .. } => return slice_split(info),
        _ => false,
    };
    if !ok || info.outs.len() != 1 {
        return None;
    }
    if !info
        .ins
        .iter()
        .chain(&info.outs)
        .all(|t| t.dtype == DType::F32)
    {
        return None;
    }
    output_split(&info.outs[0]).or_else(|| uneven_split(&info.outs[0], |_| true))
}

/// Where no dim splits evenly (ViT's 197 tokens, a dim of 3): the longest dim that `allowed`
/// admits, in up to 8 parts of `ceil(n / parts)` and a shorter last one (`row_parts`; the
/// copies and maps of a part take its length from `Partition::lengths`).
fn uneven_split(o: &TensorType, allowed: impl Fn(usize) -> bool) -> Option<(usize, usize)> {
    uneven_split_above(o, 1 << 16, allowed)
}

/// [`uneven_split`] for outputs of at least `above` elements.
fn uneven_split_above(
    o: &TensorType,
    above: usize,
    allowed: impl Fn(usize) -> bool,
) -> Option<(usize, usize)> {
    if o.dtype != DType::F32 || o.numel() < above {
        return None;
    }
    let (d, &n) = o
        .shape
        .iter()
        .enumerate()
        .filter(|&(d, _)| allowed(d))
        .max_by_key(|&(d, &n)| (n, std::cmp::Reverse(d)))?;
    row_parts(n, 8).map(|p| (d, p))
}

/// A large f32 slice: slices of its output (each read at its strides from the input).
fn slice_split(info: &NodeInfo) -> Option<(usize, usize)> {
    let o = &info.outs[0];
    if info.ins[0].dtype != DType::F32 {
        return None;
    }
    output_split(o).or_else(|| uneven_split(o, |_| true))
}

/// A split of a large f32 output into `parts` slices along `dim` (`parts` divides that
/// extent): an elementwise node's, or the fused steps a kernel's tiles left for after them
/// (see `x64::KernelPlan::has_post`).
pub(crate) fn output_split(o: &optc_ir::TensorType) -> Option<(usize, usize)> {
    if o.dtype != DType::F32 || o.numel() < (1 << 16) {
        return None;
    }
    for parts in [8, 4, 2] {
        for (d, &n) in o.shape.iter().enumerate() {
            if n >= parts && n % parts == 0 {
                return Some((d, parts));
            }
        }
    }
    None
}

/// Transposes of this many elements and more run as tasks (other nodes from 65,536). A
/// transpose's input was mostly written by the previous node's tasks on every thread, so on
/// one thread it reads half of it from the other core's cache: MobileNet-style 1x1 convs
/// with swapped roles on 7x7 maps (`x64::swapped_convs`, 56,448 floats) spent 60 us in
/// each transpose back to channel rows at 2 threads against 8 us at 1 (`bench --trace`);
/// split in 8, 20 us.
const TRANSPOSE_SPLIT_ABOVE: usize = 1 << 12;

/// A large f32 transpose: slices along its outermost dim that splits (not the last: its
/// rows are the copy's vectors).
fn transpose_split(info: &NodeInfo) -> Option<(usize, usize)> {
    let o = &info.outs[0];
    if o.dtype != DType::F32 || o.numel() < TRANSPOSE_SPLIT_ABOVE || o.rank() < 2 {
        return None;
    }
    let rank = o.rank();
    o.shape[..rank - 1]
        .iter()
        .enumerate()
        .find_map(|(d, &n)| {
            [8, 4, 2]
                .into_iter()
                .find(|&p| n >= p && n.is_multiple_of(p))
                .map(|p| (d, p))
        })
        .or_else(|| uneven_split_above(o, TRANSPOSE_SPLIT_ABOVE, |d| d + 1 < rank))
}

/// A large f32 concat: the same slice of every input along the outermost dim that splits,
/// other than the concat's axis (each input's part copied into the output's).
fn concat_split(info: &NodeInfo, axis: usize) -> Option<(usize, usize)> {
    let o = &info.outs[0];
    if o.dtype != DType::F32 || o.numel() < (1 << 16) {
        return None;
    }
    o.shape
        .iter()
        .enumerate()
        .find_map(|(d, &n)| {
            if d == axis {
                return None;
            }
            [8, 4, 2]
                .into_iter()
                .find(|&p| n >= p && n.is_multiple_of(p))
                .map(|p| (d, p))
        })
        .or_else(|| uneven_split(o, |d| d != axis))
}

/// A large f32 Pad (a ConvTranspose's zero-inserted input is one): slices of its output,
/// each filled from the table of source offsets (`movement::lower_pad`).
fn pad_split(info: &NodeInfo) -> Option<(usize, usize)> {
    if !matches!(info.op, Op::Pad { .. }) || info.outs.len() != 1 {
        return None;
    }
    output_split(&info.outs[0])
}

/// A softmax over contiguous rows worth splitting across threads: the number of parts (row
/// blocks of ~8K elements, ~10 us each, dividing the row count).
fn softmax_split(info: &NodeInfo) -> Option<usize> {
    let &Op::Softmax { axis } = info.op else {
        return None;
    };
    if info.ins[0].dtype != DType::F32 {
        return None;
    }
    let s = &info.ins[0].shape;
    if s[axis + 1..].iter().product::<usize>() != 1 {
        return None;
    }
    let rows: usize = s[..axis].iter().product();
    row_parts(rows, (info.ins[0].numel() / 8192).min(8))
}

/// A LayerNorm over the last dim (scale and bias per element of the row or single values)
/// worth splitting across threads: the number of row blocks (of ~8K elements).
fn layernorm_split(info: &NodeInfo) -> Option<usize> {
    let &Op::LayerNorm { axis, .. } = info.op else {
        return None;
    };
    let s = &info.ins[0].shape;
    if axis + 1 != s.len() {
        return None;
    }
    let d = s[axis];
    let per_row = |t: &TensorType| t.numel() == 1 || (t.shape.len() == 1 && t.shape[0] == d);
    if !info.ins[1..].iter().all(per_row) {
        return None;
    }
    let rows: usize = s[..axis].iter().product();
    row_parts(rows, (info.ins[0].numel() / 8192).min(8))
}

/// Row blocks of a softmax or LayerNorm split: up to `want` parts of `rows` rows, the most
/// that divide them, else (a prime count: ViT's 197 tokens) `ceil(rows / parts)` rows a
/// block and a shorter last one ([`task_rows`]).
pub(crate) fn row_parts(rows: usize, want: usize) -> Option<usize> {
    if let Some(p) = (2..=want).rev().find(|&p| rows.is_multiple_of(p)) {
        return Some(p);
    }
    (2..=want)
        .rev()
        .find(|&p| rows.div_ceil(p) * (p - 1) < rows)
}

/// `body(e, first, rows)` for the rows of this task's block of a node whose `outer` rows are
/// split into blocks (softmax and LayerNorm rows, average pools' planes): `ceil(outer /
/// parts)` rows a block from row `first` (an i64), the last block the rest (a body for each
/// length, chosen by the task index); without a split, all `outer` rows from row 0.
pub(crate) fn task_rows(e: &mut Emitter, outer: usize, body: &dyn Fn(&mut Emitter, Value, usize)) {
    let Some(sp) = e.partition.clone() else {
        let z = e.int_const(0);
        body(e, z, outer);
        return;
    };
    let rows = outer.div_ceil(sp.parts);
    let first = e.b.ins().imul_imm_s(sp.t, rows as i64);
    let last = outer - rows * (sp.parts - 1);
    if last == rows {
        body(e, first, rows);
    } else {
        let is_last =
            e.b.ins()
                .icmp_imm_s(IntCC::Equal, sp.t, sp.parts as i64 - 1);
        if_else(e, is_last, &mut |e| body(e, first, last), &mut |e| {
            body(e, first, rows)
        });
    }
}
