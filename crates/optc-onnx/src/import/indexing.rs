//! ONNX `ArgMax`, `ArgMin`, `CumSum`, `TopK`, `GatherElements`, `GatherND`,
//! `ScatterElements` (and the deprecated `Scatter`) and `ScatterND`, each onto its IR op.
//! `CumSum`'s axis and `TopK`'s `k` must be constants; constant indices are checked here, so
//! a bad one is an import error naming the node rather than a failure at run time.

use super::{norm_axis, Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{Op, ScatterReduction};
use tract_onnx::pb;

/// A constant scalar (or one-element tensor) input as an integer.
fn scalar_input(ctx: &Ctx, node: &pb::NodeProto, k: usize, what: &str) -> R<i64> {
    let t = ctx
        .constant_input(node, k, what)?
        .ok_or_else(|| format!("the {what} input is missing"))?;
    match t.to_i64_vec()[..] {
        [v] => Ok(v),
        _ => Err(format!(
            "the {what} must hold one value, got shape {:?}",
            t.shape()
        )),
    }
}

/// Every index of constant `indices` (column `c` of rows of `q` when `q > 0`, else all)
/// must lie in `-n..n` for the extent `extent(c)` it indexes.
fn check_indices(indices: &Val, q: usize, extent: &dyn Fn(usize) -> usize) -> R<()> {
    let Val::Const { t, .. } = indices else {
        return Ok(());
    };
    for (p, k) in t.to_i64_vec().into_iter().enumerate() {
        let c = if q > 0 { p % q } else { 0 };
        let n = extent(c) as i64;
        if k < -n || k >= n {
            return Err(format!(
                "index {k} (element {p} of the indices) is out of range for an axis of extent {n}"
            ));
        }
    }
    Ok(())
}

fn reduction(a: &Attrs) -> R<ScatterReduction> {
    let r = a.string("reduction").unwrap_or_else(|| "none".into());
    ScatterReduction::from_name(&r).ok_or_else(|| format!("unknown reduction '{r}'"))
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let op_type = node.op_type.as_str();
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    let rank = xt.rank();
    let emit = |ctx: &mut Ctx, op: Op, ins: &[Val]| -> R<Vec<Option<Val>>> {
        Ok(ctx
            .emit(name, op, ins, false)?
            .into_iter()
            .map(Some)
            .collect())
    };
    match op_type {
        "ArgMax" | "ArgMin" => {
            let axis = norm_axis(a.int_or("axis", 0), rank, "axis")?;
            let op = Op::Arg {
                largest: op_type == "ArgMax",
                axis,
                keepdims: a.int_or("keepdims", 1) != 0,
                select_last_index: a.int_or("select_last_index", 0) != 0,
            };
            emit(ctx, op, &[x])
        }
        "CumSum" | "CumProd" => {
            let axis = norm_axis(scalar_input(ctx, node, 1, "axis")?, rank, "axis")?;
            let op = Op::Cumulative {
                product: op_type == "CumProd",
                axis,
                exclusive: a.int_or("exclusive", 0) != 0,
                reverse: a.int_or("reverse", 0) != 0,
            };
            emit(ctx, op, &[x])
        }
        "TopK" => {
            let axis = norm_axis(a.int_or("axis", -1), rank, "axis")?;
            let k = if ctx.opset >= 10 {
                scalar_input(ctx, node, 1, "k")?
            } else {
                a.int("k").ok_or("attribute k is missing")?
            };
            let k = usize::try_from(k).map_err(|_| format!("k = {k} is negative"))?;
            // `sorted = 0` leaves the order open; the sorted order is one of them.
            let op = Op::TopK {
                axis,
                k,
                largest: a.int_or("largest", 1) != 0,
            };
            emit(ctx, op, &[x])
        }
        "GatherElements" => {
            let i = ctx.required(node, 1)?;
            let axis = norm_axis(a.int_or("axis", 0), rank, "axis")?;
            check_indices(&i, 0, &|_| xt.shape[axis])?;
            emit(ctx, Op::GatherElements { axis }, &[x, i])
        }
        "GatherND" => {
            let i = ctx.required(node, 1)?;
            let batch_dims = usize::try_from(a.int_or("batch_dims", 0))
                .map_err(|_| "batch_dims must not be negative".to_string())?;
            let q = ctx.ty(&i).shape.last().copied().unwrap_or(0);
            if q > 0 && batch_dims + q <= rank {
                check_indices(&i, q, &|c| xt.shape[batch_dims + c])?;
            }
            emit(ctx, Op::GatherNd { batch_dims }, &[x, i])
        }
        "ScatterElements" | "Scatter" => {
            let (i, u) = (ctx.required(node, 1)?, ctx.required(node, 2)?);
            let axis = norm_axis(a.int_or("axis", 0), rank, "axis")?;
            let reduction = reduction(&a)?;
            check_indices(&i, 0, &|_| xt.shape[axis])?;
            emit(ctx, Op::ScatterElements { axis, reduction }, &[x, i, u])
        }
        "ScatterND" => {
            let (i, u) = (ctx.required(node, 1)?, ctx.required(node, 2)?);
            let reduction = reduction(&a)?;
            let q = ctx.ty(&i).shape.last().copied().unwrap_or(0);
            if q > 0 && q <= rank {
                check_indices(&i, q, &|c| xt.shape[c])?;
            }
            emit(ctx, Op::ScatterNd { reduction }, &[x, i, u])
        }
        _ => Err(format!("{op_type} is not an indexing op")),
    }
}
