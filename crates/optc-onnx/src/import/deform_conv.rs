//! ONNX `DeformConv` (opset 19, 2-D as the ONNX reference defines it): a convolution
//! whose every kernel tap reads the input at its regular position plus a learned offset
//! (per output position, per offset group), bilinearly interpolated with zeros outside
//! the input (`GridSample` with `align_corners`), optionally scaled by a mask. Imported as
//! an im2col over the offset positions (per tap and output position: the four neighbours'
//! flat indices and bilinear weights, gathered per channel with `GatherElements`) and one
//! batched `MatMul` per group with the weights, plus the bias.

use super::steps::{float_tensor, Steps};
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, Tensor, UnaryOp};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let w = ctx.required(node, 1)?;
    let offset = ctx.required(node, 2)?;
    let bias = ctx.input(node, 3);
    let mask = ctx.input(node, 4);
    let (xt, wt, ot) = (ctx.ty(&x), ctx.ty(&w), ctx.ty(&offset));
    let dtype = xt.dtype;
    if !matches!(dtype, DType::F32 | DType::F64) || xt.rank() != 4 {
        return Err(format!(
            "DeformConv is supported on 2-D f32 or f64 inputs [N, C, H, W], got {xt}"
        ));
    }
    let (n, ic, ih, iw) = (xt.shape[0], xt.shape[1], xt.shape[2], xt.shape[3]);
    let group = usize::try_from(a.int_or("group", 1)).unwrap_or(0);
    let offset_group = usize::try_from(a.int_or("offset_group", 1)).unwrap_or(0);
    // (Groups beyond the channels are refused before any product with them.)
    if wt.dtype != dtype
        || wt.rank() != 4
        || !(1..=ic).contains(&group)
        || !(1..=ic).contains(&offset_group)
    {
        return Err(format!(
            "the weight {wt} must be of the input's type [M, C / group, kH, kW], group and offset_group between 1 and the input's {ic} channels"
        ));
    }
    let (oc, kh, kw) = (wt.shape[0], wt.shape[2], wt.shape[3]);
    if ic != wt.shape[1] * group || oc % group != 0 || ic % offset_group != 0 {
        return Err(format!(
            "input {xt} and weight {wt} do not fit group {group} and offset_group {offset_group}"
        ));
    }
    if let Some(k) = a.ints("kernel_shape") {
        if k != [kh as i64, kw as i64] {
            return Err(format!("kernel_shape {k:?} does not match the weight {wt}"));
        }
    }
    const LIMIT: i64 = 1 << 20;
    let pair = |attr: &str, default: i64, count: usize, min: i64| -> R<Vec<i64>> {
        let v = a.ints(attr).unwrap_or_else(|| vec![default; count]);
        if v.len() != count || v.iter().any(|&e| !(min..=LIMIT).contains(&e)) {
            return Err(format!(
                "attribute '{attr}' {v:?} needs {count} entries, each at least {min} and at most {LIMIT}"
            ));
        }
        Ok(v)
    };
    let strides = pair("strides", 1, 2, 1)?;
    let dilations = pair("dilations", 1, 2, 1)?;
    let pads = pair("pads", 0, 4, 0)?;
    let out_dim = |i: usize, extent: usize, k: usize| -> i64 {
        let span = extent as i64 + pads[i] + pads[i + 2] - (k as i64 - 1) * dilations[i] - 1;
        if span < 0 {
            0
        } else {
            span / strides[i] + 1
        }
    };
    let (oh, ow) = (out_dim(0, ih, kh), out_dim(1, iw, kw));
    if oh < 1 || ow < 1 {
        return Err(format!(
            "the {kh}x{kw} kernel (dilations {dilations:?}) does not fit the input {xt} padded by {pads:?}"
        ));
    }
    let taps = kh * kw;
    if ot.dtype != dtype || ot.shape != [n, offset_group * taps * 2, oh as usize, ow as usize] {
        return Err(format!(
            "the offset {ot} must be [{n}, {}, {oh}, {ow}] of the input's type (offset_group x kernel taps x 2, the output's extent)",
            offset_group * taps * 2
        ));
    }
    let (oh, ow) = (oh as usize, ow as usize);
    let positions = oh * ow;
    if let Some(m) = &mask {
        let mt = ctx.ty(m);
        if mt.dtype != dtype || mt.shape != [n, offset_group * taps, oh, ow] {
            return Err(format!(
                "the mask {mt} must be [{n}, {}, {oh}, {ow}] of the input's type",
                offset_group * taps
            ));
        }
    }
    if let Some(b) = &bias {
        let bt = ctx.ty(b);
        if bt.dtype != dtype || bt.shape != [oc] {
            return Err(format!("the bias {bt} must be [{oc}] of the input's type"));
        }
    }
    let float = |v: Vec<f64>, shape: Vec<usize>| float_tensor(dtype, v, shape);
    let (g, per_offset_group) = (offset_group, ic / offset_group);
    let mut s = Steps::new(ctx, name);
    // Sampling coordinates [N, G, taps, positions]: the regular tap position plus the offset.
    let offset = s.reshape(&offset, vec![n, g, taps, 2, positions])?;
    let mut coordinate = vec![];
    for axis in 0..2 {
        let regular: Vec<f64> = (0..taps * positions)
            .map(|e| {
                let (tap, p) = (e / positions, e % positions);
                let (k, o) = if axis == 0 {
                    (tap / kw, p / ow)
                } else {
                    (tap % kw, p % ow)
                };
                (o as i64 * strides[axis] - pads[axis] + k as i64 * dilations[axis]) as f64
            })
            .collect();
        let regular = s.constant(float(regular, vec![taps, positions])?);
        let moved = s.slice_axis(&offset, 3, axis as i64, 1, 1)?;
        let moved = s.reshape(&moved, vec![n, g, taps, positions])?;
        coordinate.push(s.binary(BinaryOp::Add, &moved, &regular)?);
    }
    let one = s.constant(float(vec![1.0], vec![])?);
    let mut low = vec![];
    let mut fraction = vec![];
    for c in &coordinate {
        let floor = s.unary(UnaryOp::Floor, c)?;
        fraction.push(s.binary(BinaryOp::Sub, c, &floor)?);
        low.push(floor);
    }
    // The four neighbours: flat index (0 where outside) and weight (0 where outside).
    let data = s.reshape(&x, vec![n, g, per_offset_group, ih * iw])?;
    let zero_index = s.constant(Tensor::new(vec![], Data::I64(vec![0])).map_err(|e| e.msg)?);
    let zero = s.constant(float(vec![0.0], vec![])?);
    let mut sampled: Option<Val> = None;
    for corner in 0..4 {
        let mut index: Option<Val> = None;
        let mut weight: Option<Val> = None;
        let mut inside: Option<Val> = None;
        for (axis, extent) in [(0usize, ih), (1usize, iw)] {
            let upper = (corner >> (1 - axis)) & 1 == 1;
            let (at, share) = if upper {
                (
                    s.binary(BinaryOp::Add, &low[axis], &one)?,
                    fraction[axis].clone(),
                )
            } else {
                (
                    low[axis].clone(),
                    s.binary(BinaryOp::Sub, &one, &fraction[axis])?,
                )
            };
            let lo = s.binary(BinaryOp::GreaterOrEqual, &at, &zero)?;
            let end = s.constant(float(vec![extent as f64], vec![])?);
            let hi = s.binary(BinaryOp::Less, &at, &end)?;
            let ok = s.binary(BinaryOp::And, &lo, &hi)?;
            inside = Some(match inside {
                None => ok,
                Some(v) => s.binary(BinaryOp::And, &v, &ok)?,
            });
            let at = s.op(Op::Cast { to: DType::I64 }, &[at])?;
            index = Some(match index {
                None => {
                    let width = s.constant(
                        Tensor::new(vec![], Data::I64(vec![iw as i64])).map_err(|e| e.msg)?,
                    );
                    s.binary(BinaryOp::Mul, &at, &width)?
                }
                Some(row) => s.binary(BinaryOp::Add, &row, &at)?,
            });
            weight = Some(match weight {
                None => share,
                Some(v) => s.binary(BinaryOp::Mul, &v, &share)?,
            });
        }
        let inside = inside.expect("two axes");
        let index = s.op(
            Op::Where,
            &[inside.clone(), index.expect("two axes"), zero_index.clone()],
        )?;
        let weight = s.op(
            Op::Where,
            &[inside, weight.expect("two axes"), zero.clone()],
        )?;
        // Gathered per channel of the offset group: [N, G, C / G, taps * positions].
        let index = s.reshape(&index, vec![n, g, 1, taps * positions])?;
        let index = s.op(
            Op::Expand {
                shape: vec![n, g, per_offset_group, taps * positions],
            },
            &[index],
        )?;
        let values = s.op(Op::GatherElements { axis: 3 }, &[data.clone(), index])?;
        let weight = s.reshape(&weight, vec![n, g, 1, taps * positions])?;
        let term = s.binary(BinaryOp::Mul, &values, &weight)?;
        sampled = Some(match sampled {
            None => term,
            Some(v) => s.binary(BinaryOp::Add, &v, &term)?,
        });
    }
    let mut columns = sampled.expect("four corners");
    if let Some(m) = mask {
        let m = s.reshape(&m, vec![n, g, 1, taps * positions])?;
        columns = s.binary(BinaryOp::Mul, &columns, &m)?;
    }
    // [N, group, C / group * taps, positions] against [group, M / group, C / group * taps].
    let per_group = ic / group;
    let columns = s.reshape(&columns, vec![n, group, per_group * taps, positions])?;
    let weights = s.reshape(&w, vec![group, oc / group, per_group * taps])?;
    let out = s.op(Op::MatMul, &[weights, columns])?;
    let shape = vec![n, oc, oh, ow];
    match bias {
        None => Ok(vec![Some(s.last(Op::Reshape { shape }, &[out])?)]),
        Some(b) => {
            let out = s.reshape(&out, shape)?;
            let b = s.reshape(&b, vec![oc, 1, 1])?;
            Ok(vec![Some(s.last(Op::Binary(BinaryOp::Add), &[out, b])?)])
        }
    }
}
