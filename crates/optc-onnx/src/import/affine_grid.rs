//! ONNX `AffineGrid` (opset 20): the sampling grid `theta` maps an output pixel's
//! normalized coordinates to. For `size` = [N, C, H, W] the base grid holds, per pixel,
//! `(x, y, 1)` with `x` and `y` evenly spaced in [-1, 1] (pixel centers, or the corners with
//! `align_corners`), as the ONNX reference's grid, and the output is `theta` times it:
//! `grid[n, h, w] = x[w] theta[n, :, 0] + y[h] theta[n, :, 1] + theta[n, :, 2]`, built as
//! broadcast products of the per-axis coordinates (constants of one axis' length) with
//! theta's columns. 3-D (`size` [N, C, D, H, W], `theta` [N, 3, 4]) likewise with `z[d]`.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, Tensor};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let theta = ctx.required(node, 0)?;
    let size = ctx
        .constant_input(node, 1, "size")?
        .ok_or("required input #1 (size) is missing")?
        .to_i64_vec();
    let tt = ctx.ty(&theta);
    if !matches!(tt.dtype, DType::F32 | DType::F64) {
        return Err(format!("theta must be f32 or f64, it is {tt}"));
    }
    let d = size.len().saturating_sub(2);
    if !(2..=3).contains(&d) {
        return Err(format!(
            "size {size:?} must be [N, C, H, W] or [N, C, D, H, W]"
        ));
    }
    if tt.shape != [size[0] as usize, d, d + 1] || size[0] < 0 {
        return Err(format!(
            "theta {tt} must be [N, {d}, {}] with N = {} from size {size:?}",
            d + 1,
            size[0]
        ));
    }
    let spatial: Vec<usize> = size[2..]
        .iter()
        .map(|&v| {
            usize::try_from(v)
                .ok()
                .filter(|&v| (1..=super::LIMIT_DIM).contains(&v))
        })
        .collect::<Option<_>>()
        .ok_or_else(|| {
            format!(
                "size {size:?} has a spatial extent outside 1..={}",
                super::LIMIT_DIM
            )
        })?;
    let align_corners = a.int_or("align_corners", 0) != 0;
    let n = tt.shape[0];
    let mut s = Steps::new(ctx, name);
    // theta^T: [N, d + 1, d]; row k is what the (k+1)-th innermost coordinate (or, last,
    // the 1) contributes to every output coordinate.
    let columns = s.transpose(&theta, vec![0, 2, 1])?;
    let mut sum: Option<Val> = None;
    for k in 0..=d {
        let row = s.slice_axis(&columns, 1, k as i64, 1, 1)?;
        let mut lifted = vec![n];
        lifted.extend(std::iter::repeat_n(1, d));
        lifted.push(d);
        let row = s.reshape(&row, lifted)?;
        let term = if k < d {
            // The coordinate along spatial axis `d - 1 - k`, shaped to broadcast along it.
            let axis = d - 1 - k;
            let coordinates = normalized(spatial[axis], align_corners);
            let mut shape = vec![1; d + 2];
            shape[axis + 1] = spatial[axis];
            let data = match tt.dtype {
                DType::F64 => Data::F64(coordinates),
                _ => Data::F32(coordinates.into_iter().map(|v| v as f32).collect()),
            };
            let c = s.constant(Tensor::new(shape, data).map_err(|e| e.msg)?);
            s.binary(BinaryOp::Mul, &c, &row)?
        } else {
            row
        };
        sum = Some(match sum {
            None => term,
            Some(acc) if k < d => s.binary(BinaryOp::Add, &acc, &term)?,
            Some(acc) => s.last(Op::Binary(BinaryOp::Add), &[acc, term])?,
        });
    }
    Ok(vec![sum])
}

/// The normalized coordinates of an axis of `n` pixels: their centers evenly spaced in
/// [-1, 1], or with `align_corners` the first and last pixel at -1 and 1 (a single pixel
/// at -1), as the ONNX reference's `arange` gives them.
fn normalized(n: usize, align_corners: bool) -> Vec<f64> {
    (0..n)
        .map(|i| {
            if align_corners {
                if n == 1 {
                    -1.0
                } else {
                    -1.0 + i as f64 * (2.0 / (n - 1) as f64)
                }
            } else {
                let step = 2.0 / n as f64;
                -1.0 + step / 2.0 + i as f64 * step
            }
        })
        .collect()
}
