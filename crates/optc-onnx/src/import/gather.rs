//! ONNX `GatherElements` and `GatherND`, imported as one `Gather` from the flattened data
//! at linear indices computed from the given ones (constant offsets for the other
//! coordinates plus the given index times its stride). An index outside its dim (after
//! counting negative ones from the end) is sent past the data's end, so the `Gather`
//! reports it at run time instead of reading another element.

use super::steps::Steps;
use super::{norm_axis, Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Op, SliceDim, Tensor};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let data = ctx.required(node, 0)?;
    let indices = ctx.required(node, 1)?;
    let (dt, it) = (ctx.ty(&data), ctx.ty(&indices));
    if !matches!(it.dtype, DType::I64 | DType::I32) {
        return Err(format!("indices must be int64 or int32, got {it}"));
    }
    let mut s = Steps::new(ctx, name);
    let indices = if it.dtype == DType::I32 {
        s.op(Op::Cast { to: DType::I64 }, &[indices])?
    } else {
        indices
    };
    let total = dt.numel();
    let out = if node.op_type == "GatherElements" {
        let r = dt.rank();
        if it.rank() != r || r == 0 {
            return Err(format!(
                "indices {it} must have the data's rank ({dt}), at least 1"
            ));
        }
        let axis = norm_axis(a.int_or("axis", 0), r, "axis")?;
        if (0..r).any(|d| d != axis && it.shape[d] > dt.shape[d]) {
            return Err(format!(
                "indices {it} exceed the data {dt} in a dim other than axis {axis}"
            ));
        }
        let strides = optc_ir::strides(&dt.shape);
        // Offsets of every other coordinate of each index position.
        let n = it.numel();
        let istrides = optc_ir::strides(&it.shape);
        let offsets: Vec<i64> = (0..n)
            .map(|p| {
                (0..r)
                    .filter(|&d| d != axis)
                    .map(|d| ((p / istrides[d]) % it.shape[d] * strides[d]) as i64)
                    .sum()
            })
            .collect();
        let offsets = s.constant(Tensor::from_i64(it.shape.clone(), offsets).map_err(|e| e.msg)?);
        let idx = checked(&mut s, &indices, dt.shape[axis])?;
        let stride = s.constant(Tensor::scalar_i64(strides[axis] as i64));
        let scaled = s.binary(BinaryOp::Mul, &idx, &stride)?;
        let linear = s.binary(BinaryOp::Add, &scaled, &offsets)?;
        let bad = out_of_range(&mut s, &idx, dt.shape[axis])?;
        let past = s.constant(Tensor::scalar_i64(-(total as i64) - 1));
        let linear = s.op(Op::Where, &[bad, past, linear])?;
        let flat = s.reshape(&data, vec![total])?;
        s.last(Op::Gather { axis: 0 }, &[flat, linear])?
    } else {
        let b = usize::try_from(a.int_or("batch_dims", 0)).map_err(|_| "batch_dims is negative")?;
        let q = *it.shape.last().ok_or("indices must have rank 1 or more")?;
        if b + q > dt.rank() || b >= it.rank() || it.shape[..b] != dt.shape[..b] {
            return Err(format!(
                "indices {it} with batch_dims {b} do not fit the data {dt}"
            ));
        }
        let lead = &it.shape[..it.rank() - 1];
        let rest = &dt.shape[b + q..];
        let block: usize = rest.iter().product();
        let per_batch: usize = dt.shape[b..b + q].iter().product();
        // Batch offsets of each index position.
        let m: usize = lead.iter().product();
        let inner: usize = lead[b..].iter().product();
        let batch = s.constant(
            Tensor::from_i64(
                lead.to_vec(),
                (0..m)
                    .map(|p| ((p / inner.max(1)) * per_batch) as i64)
                    .collect(),
            )
            .map_err(|e| e.msg)?,
        );
        let mut linear = batch;
        let mut any_bad: Option<Val> = None;
        let strides = optc_ir::strides(&dt.shape[b..b + q]);
        for (j, &stride) in strides.iter().enumerate() {
            // indices[..., j]
            let mut dims: Vec<SliceDim> = it
                .shape
                .iter()
                .map(|&n| SliceDim {
                    start: 0,
                    step: 1,
                    len: n,
                })
                .collect();
            let last = dims.len() - 1;
            dims[last] = SliceDim {
                start: j as i64,
                step: 1,
                len: 1,
            };
            let col = s.op(Op::Slice { dims }, std::slice::from_ref(&indices))?;
            let col = s.reshape(&col, lead.to_vec())?;
            let extent = dt.shape[b + j];
            let idx = checked(&mut s, &col, extent)?;
            let bad = out_of_range(&mut s, &idx, extent)?;
            any_bad = Some(match any_bad {
                None => bad,
                Some(prev) => s.binary(BinaryOp::Or, &prev, &bad)?,
            });
            let stride = s.constant(Tensor::scalar_i64(stride as i64));
            let scaled = s.binary(BinaryOp::Mul, &idx, &stride)?;
            linear = s.binary(BinaryOp::Add, &linear, &scaled)?;
        }
        if let Some(bad) = any_bad {
            let past = s.constant(Tensor::scalar_i64(-(total as i64) - 1));
            linear = s.op(Op::Where, &[bad, past, linear])?;
        }
        let rows = total / block.max(1);
        let mut flat_shape = vec![rows];
        flat_shape.extend(rest);
        let flat = s.reshape(&data, flat_shape)?;
        s.last(Op::Gather { axis: 0 }, &[flat, linear])?
    };
    Ok(vec![Some(out)])
}

/// Negative indices counted from the end of a dim of `extent`.
fn checked(s: &mut Steps, idx: &Val, extent: usize) -> R<Val> {
    let zero = s.constant(Tensor::scalar_i64(0));
    let n = s.constant(Tensor::scalar_i64(extent as i64));
    let negative = s.binary(BinaryOp::Less, idx, &zero)?;
    let wrapped = s.binary(BinaryOp::Add, idx, &n)?;
    s.op(Op::Where, &[negative, wrapped, idx.clone()])
}

/// Whether a (normalized) index lies outside `0..extent`.
fn out_of_range(s: &mut Steps, idx: &Val, extent: usize) -> R<Val> {
    let zero = s.constant(Tensor::scalar_i64(0));
    let n = s.constant(Tensor::scalar_i64(extent as i64));
    let low = s.binary(BinaryOp::Less, idx, &zero)?;
    let high = s.binary(BinaryOp::GreaterOrEqual, idx, &n)?;
    s.binary(BinaryOp::Or, &low, &high)
}
