//! ONNX `Col2Im` (opset 18): the inverse of im2col. The input [N, C * prod(block), L]
//! holds, for each of the `L` sliding blocks, a column of `C` blocks of `block_shape`;
//! every block element is added into the image pixel it covers. Imported as a sum over
//! the block's elements: element `k` of every block forms an [N, C, blocks..] map, spread
//! `strides` apart (zeros inserted: a reshape, a pad and a reshape) and shifted by its
//! `dilations`-scaled offset into the padded image (a pad), and the padded image is
//! cropped by `pads` at the end. The terms are added in the block's element order, as the
//! ONNX reference accumulates them, onto zeros everywhere else: the same sums.

use super::steps::{unflatten, Steps};
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Op, PadMode};
use tract_onnx::pb;

/// The most block elements imported (one pad and add each).
const MAX_BLOCK: usize = 1024;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let image = ctx
        .constant_input(node, 1, "image_shape")?
        .ok_or("required input #1 (image_shape) is missing")?
        .to_i64_vec();
    let block = ctx
        .constant_input(node, 2, "block_shape")?
        .ok_or("required input #2 (block_shape) is missing")?
        .to_i64_vec();
    let xt = ctx.ty(&x);
    if !matches!(xt.dtype, DType::F32 | DType::F64) || xt.rank() != 3 {
        return Err(format!(
            "the input must be f32 or f64 [N, C * block, L], it is {xt}"
        ));
    }
    let nd = image.len();
    if nd == 0 || block.len() != nd {
        return Err(format!(
            "image_shape {image:?} and block_shape {block:?} must have one entry per spatial axis"
        ));
    }
    const LIMIT: i64 = 1 << 20;
    let per_axis = |n: &str, default: i64, count: usize| -> R<Vec<i64>> {
        let v = a.ints(n).unwrap_or_else(|| vec![default; count]);
        if v.len() != count || v.iter().any(|&e| !(default..=LIMIT).contains(&e)) {
            return Err(format!(
                "attribute '{n}' {v:?} needs {count} entries, each at least {default} and at most {LIMIT}"
            ));
        }
        Ok(v)
    };
    let dilations = per_axis("dilations", 1, nd)?;
    let strides = per_axis("strides", 1, nd)?;
    let pads = per_axis("pads", 0, 2 * nd)?;
    let positive = |v: &[i64]| v.iter().all(|&e| (1..=LIMIT).contains(&e));
    if !positive(&image) || !positive(&block) {
        return Err(format!(
            "image_shape {image:?} and block_shape {block:?} must be positive (at most {LIMIT})"
        ));
    }
    // Per axis: the padded image's extent and the number of blocks along it.
    let padded: Vec<i64> = (0..nd).map(|i| image[i] + pads[i] + pads[nd + i]).collect();
    let blocks: Vec<i64> = (0..nd)
        .map(|i| (padded[i] - dilations[i] * (block[i] - 1) - 1).div_euclid(strides[i]) + 1)
        .collect();
    let product = |v: &[i64]| v.iter().try_fold(1i64, |a, &b| a.checked_mul(b));
    let (Some(block_len), Some(block_count)) = (product(&block), product(&blocks)) else {
        return Err(format!(
            "blocks of {block:?} over an image of {image:?} have more elements than optc counts"
        ));
    };
    if blocks.iter().any(|&b| b < 1)
        || block_len as usize > MAX_BLOCK
        || xt.shape[1] as i64 % block_len != 0
        || xt.shape[2] as i64 != block_count
    {
        return Err(format!(
            "input {xt} does not hold blocks of {block:?} ({block_len} elements, at most {MAX_BLOCK}) for an image of {image:?} (pads {pads:?}, dilations {dilations:?}, strides {strides:?}: {blocks:?} blocks)"
        ));
    }
    let n = xt.shape[0];
    let c = xt.shape[1] / block_len as usize;
    let mut s = Steps::new(ctx, name);
    // [N, C, block elements, blocks along each axis..].
    let mut split = vec![n, c, block_len as usize];
    split.extend(blocks.iter().map(|&b| b as usize));
    let columns = s.reshape(&x, split)?;
    let mut sum: Option<Val> = None;
    let block_shape: Vec<usize> = block.iter().map(|&b| b as usize).collect();
    for k in 0..block_len as usize {
        let offset: Vec<i64> = unflatten(k, &block_shape)
            .into_iter()
            .map(|o| o as i64)
            .collect();
        let element = s.slice_axis(&columns, 2, k as i64, 1, 1)?;
        // Zeros inserted: [N, C, b0, 1, b1, 1, ..] padded to [.., b0, s0, ..] and merged.
        let mut spread_shape = vec![n, c];
        let mut ends = vec![0i64; 2];
        for i in 0..nd {
            spread_shape.extend([blocks[i] as usize, 1]);
            ends.extend([0, strides[i] - 1]);
        }
        let mut t = s.reshape(&element, spread_shape)?;
        if strides.iter().any(|&v| v > 1) {
            let mut p = vec![0i64; ends.len()];
            p.extend(ends);
            t = s.op(
                Op::Pad {
                    pads: p,
                    mode: PadMode::Constant,
                    value: 0.0,
                },
                &[t],
            )?;
        }
        let mut merged = vec![n, c];
        merged.extend((0..nd).map(|i| (blocks[i] * strides[i]) as usize));
        t = s.reshape(&t, merged)?;
        // Element k of block b lands at padded position b * stride + offset * dilation.
        let mut begin = vec![0i64; nd + 2];
        let mut end = vec![0i64; nd + 2];
        for i in 0..nd {
            let shift = offset[i] * dilations[i];
            let span = (blocks[i] - 1) * strides[i] + 1;
            if span < blocks[i] * strides[i] {
                t = s.slice_axis(&t, i + 2, 0, 1, span as usize)?;
            }
            begin[i + 2] = shift;
            end[i + 2] = padded[i] - shift - span;
        }
        if begin.iter().chain(&end).any(|&p| p != 0) {
            begin.extend(end);
            t = s.op(
                Op::Pad {
                    pads: begin,
                    mode: PadMode::Constant,
                    value: 0.0,
                },
                &[t],
            )?;
        }
        sum = Some(match sum {
            None => t,
            Some(acc) => s.binary(BinaryOp::Add, &acc, &t)?,
        });
    }
    let mut out = sum.expect("at least one block element");
    for i in 0..nd {
        if pads[i] != 0 || pads[nd + i] != 0 {
            out = s.slice_axis(&out, i + 2, pads[i], 1, image[i] as usize)?;
        }
    }
    // The node's own name on its output.
    let mut shape = vec![n, c];
    shape.extend(image.iter().map(|&v| v as usize));
    Ok(vec![Some(s.last(Op::Reshape { shape }, &[out])?)])
}
