//! ONNX `TensorScatter` (opset 24, a key/value cache update): `update`'s `S` positions
//! along `axis` are written into `past_cache` from each batch row's `write_indices` entry
//! on (`circular`: wrapping around the cache's `S_max` positions). Imported per cache
//! position `p`: its offset into the update `p - write_index` (plus `S_max` when negative,
//! `circular`), which is written when it lies in `0..S`: a `GatherElements` of the update
//! at the offsets and a `Where` between it and the past cache.

use super::steps::{i64_tensor, Steps};
use super::{norm_axis, Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Op};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let cache = ctx.required(node, 0)?;
    let update = ctx.required(node, 1)?;
    let write = ctx.input(node, 2);
    let (ct, ut) = (ctx.ty(&cache), ctx.ty(&update));
    let r = ct.rank();
    let axis = norm_axis(a.int_or("axis", -2), r, "axis")?;
    if axis == 0 {
        return Err("axis 0 is the batch axis, which write_indices index".into());
    }
    let circular = match a.string("mode").as_deref().unwrap_or("linear") {
        "linear" => false,
        "circular" => true,
        m => return Err(format!("mode '{m}' is not an ONNX value")),
    };
    let compatible = ut.rank() == r
        && ut.dtype == ct.dtype
        && (0..r).all(|i| {
            if i == axis {
                ut.shape[i] <= ct.shape[i]
            } else {
                ut.shape[i] == ct.shape[i]
            }
        });
    if !compatible {
        return Err(format!(
            "the update {ut} must match the past cache {ct} except along axis {axis}, where it may be shorter"
        ));
    }
    let (batch, max_len, len) = (ct.shape[0], ct.shape[axis], ut.shape[axis]);
    if let Some(w) = &write {
        let wt = ctx.ty(w);
        if wt.shape != [batch] || wt.dtype != DType::I64 {
            return Err(format!("write_indices must be int64[{batch}], it is {wt}"));
        }
    }
    let mut s = Steps::new(ctx, name);
    let mut along = vec![1; r];
    along[axis] = max_len;
    let positions = s.constant(i64_tensor((0..max_len as i64).collect(), along)?);
    let mut per_row = vec![1; r];
    per_row[0] = batch;
    let start = match write {
        Some(w) => s.reshape(&w, per_row)?,
        None => s.constant(i64_tensor(vec![0; batch], per_row)?),
    };
    let mut offset = s.binary(BinaryOp::Sub, &positions, &start)?;
    let zero = s.constant(i64_tensor(vec![0], vec![])?);
    if circular {
        let negative = s.binary(BinaryOp::Less, &offset, &zero)?;
        let wrap = s.constant(i64_tensor(vec![max_len as i64], vec![])?);
        let wrapped = s.binary(BinaryOp::Add, &offset, &wrap)?;
        offset = s.op(Op::Where, &[negative, wrapped, offset])?;
    }
    let end = s.constant(i64_tensor(vec![len as i64], vec![])?);
    let before_end = s.binary(BinaryOp::Less, &offset, &end)?;
    let after_start = s.binary(BinaryOp::GreaterOrEqual, &offset, &zero)?;
    let written = s.binary(BinaryOp::And, &before_end, &after_start)?;
    let read = s.op(Op::Where, &[written.clone(), offset, zero])?;
    let read = s.op(
        Op::Expand {
            shape: ct.shape.clone(),
        },
        &[read],
    )?;
    let gathered = s.op(Op::GatherElements { axis }, &[update, read])?;
    Ok(vec![Some(s.last(Op::Where, &[written, gathered, cache])?)])
}
