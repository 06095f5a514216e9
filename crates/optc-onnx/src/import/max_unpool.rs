//! ONNX `MaxUnpool`: puts each value of `X` at the flat position its index (as `MaxPool`'s
//! second output gives it, over the whole tensor) names in a zero tensor of the unpooled
//! shape, `(in - 1) * stride - pads + kernel` per spatial axis: a `ScatterElements` into
//! zeros along the flattened tensor (of duplicate indices the last value wins, as in the
//! ONNX reference). An `output_shape` input larger than that shape gets the result at its
//! start and zeros past it, as the ONNX reference places it.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{DType, Data, Op, PadMode, ScatterReduction, Tensor};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let indices = ctx.required(node, 1)?;
    let output_shape = ctx
        .constant_input(node, 2, "output_shape")?
        .map(|t| t.to_i64_vec());
    let (xt, it) = (ctx.ty(&x), ctx.ty(&indices));
    if xt.rank() < 3 || it.shape != xt.shape || it.dtype != DType::I64 {
        return Err(format!(
            "X {xt} must be [N, C, spatial..] and the indices int64 of its shape, they are {it}"
        ));
    }
    let nsp = xt.rank() - 2;
    let kernel = a
        .ints("kernel_shape")
        .ok_or("attribute 'kernel_shape' is required")?;
    let strides = a.ints("strides").unwrap_or_else(|| vec![1; nsp]);
    let pads = a.ints("pads").unwrap_or_else(|| vec![0; 2 * nsp]);
    const LIMIT: i64 = 1 << 20;
    let in_range = |v: &[i64], lo: i64| v.iter().all(|&e| (lo..=LIMIT).contains(&e));
    if kernel.len() != nsp
        || strides.len() != nsp
        || pads.len() != 2 * nsp
        || !in_range(&kernel, 1)
        || !in_range(&strides, 1)
        || !in_range(&pads, 0)
    {
        return Err(format!(
            "kernel_shape {kernel:?}, strides {strides:?} and pads {pads:?} must give {nsp} spatial axes (pads twice), kernel and strides at least 1"
        ));
    }
    let mut unpooled = xt.shape[..2].to_vec();
    for i in 0..nsp {
        let e = (xt.shape[i + 2] as i64 - 1) * strides[i] - pads[i] - pads[nsp + i] + kernel[i];
        if e < 1 {
            return Err(format!(
                "the unpooled extent of spatial axis {i} would be {e} (input {xt})"
            ));
        }
        unpooled.push(e as usize);
    }
    let total = optc_ir::checked_numel(&unpooled).map_err(|e| e.msg)?;
    let target = match output_shape {
        None => unpooled.clone(),
        Some(o) => {
            if o.len() != xt.rank()
                || o.iter()
                    .zip(&unpooled)
                    .any(|(&o, &u)| o < u as i64 || o > i64::from(i32::MAX))
            {
                return Err(format!(
                    "output_shape {o:?} must have rank {} and hold the unpooled shape {unpooled:?}",
                    xt.rank()
                ));
            }
            o.iter().map(|&v| v as usize).collect()
        }
    };
    optc_ir::checked_numel(&target).map_err(|e| e.msg)?;
    let zero = match xt.dtype {
        DType::F64 => Data::F64(vec![0.0]),
        DType::F32 => Data::F32(vec![0.0]),
        DType::I64 => Data::I64(vec![0]),
        DType::I32 => Data::I32(vec![0]),
        DType::U8 => Data::U8(vec![0]),
        DType::I8 => Data::I8(vec![0]),
        DType::Bool => return Err(format!("X of {} is not supported", xt.dtype)),
    };
    let mut s = Steps::new(ctx, name);
    let zero = s.constant(Tensor::new(vec![], zero).map_err(|e| e.msg)?);
    let zeros = s.op(Op::Expand { shape: vec![total] }, &[zero])?;
    let flat = xt.numel();
    let values = s.reshape(&x, vec![flat])?;
    let places = s.reshape(&indices, vec![flat])?;
    let scattered = s.op(
        Op::ScatterElements {
            axis: 0,
            reduction: ScatterReduction::Replace,
        },
        &[zeros, places, values],
    )?;
    let shaped = s.reshape(&scattered, unpooled.clone())?;
    if target == unpooled {
        return Ok(vec![Some(
            s.last(Op::Reshape { shape: target }, &[shaped])?,
        )]);
    }
    let mut p = vec![0i64; target.len()];
    p.extend(target.iter().zip(&unpooled).map(|(&t, &u)| (t - u) as i64));
    let out = s.last(
        Op::Pad {
            pads: p,
            mode: PadMode::Constant,
            value: 0.0,
        },
        &[shaped],
    )?;
    Ok(vec![Some(out)])
}
