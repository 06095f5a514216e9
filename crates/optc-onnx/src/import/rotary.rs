//! ONNX `RotaryEmbedding` (opset 23), imported as the composition the spec defines: the
//! input as `[batch, sequence, heads, head_size]` (a 4-D input `[B, H, S, D]` transposed,
//! a 3-D one `[B, S, hidden]` split into `num_heads`), the first `rotary_embedding_dim`
//! channels rotated pairwise (halves, or even/odd channels when `interleaved`) by the
//! cos/sin caches (gathered at `position_ids` when given), the rest passed through, and
//! the original layout restored. f32 or f64 (input and caches of one type).

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Op};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let cos = ctx.required(node, 1)?;
    let sin = ctx.required(node, 2)?;
    let positions = ctx.input(node, 3);
    let xt = ctx.ty(&x);
    if !matches!(xt.dtype, DType::F32 | DType::F64) {
        return Err(format!(
            "RotaryEmbedding is supported on f32 and f64, got {xt}"
        ));
    }
    for (what, c) in [("cos", &cos), ("sin", &sin)] {
        let ct = ctx.ty(c);
        if ct.dtype != xt.dtype {
            return Err(format!(
                "the {what} cache {ct} must have the input's type {}",
                xt.dtype
            ));
        }
    }
    let mut s = Steps::new(ctx, name);
    // [B, S, H, D]
    let (x4, shape4) = match xt.rank() {
        4 => {
            let t = s.transpose(&x, vec![0, 2, 1, 3])?;
            let sh = vec![xt.shape[0], xt.shape[2], xt.shape[1], xt.shape[3]];
            (t, sh)
        }
        3 => {
            let heads = a.int_or("num_heads", 0);
            let heads = usize::try_from(heads)
                .ok()
                .filter(|&h| h > 0 && xt.shape[2].is_multiple_of(h))
                .ok_or_else(|| {
                    format!(
                        "a 3-D input needs num_heads dividing its hidden size {}, got {heads}",
                        xt.shape[2]
                    )
                })?;
            let sh = vec![xt.shape[0], xt.shape[1], heads, xt.shape[2] / heads];
            (s.reshape(&x, sh.clone())?, sh)
        }
        _ => return Err(format!("the input {xt} must have rank 3 or 4")),
    };
    let d = shape4[3];
    let rd = match a.int_or("rotary_embedding_dim", 0) {
        0 => d,
        r if r > 0 && (r as usize) <= d && r % 2 == 0 => r as usize,
        r => {
            return Err(format!(
                "rotary_embedding_dim {r} must be even and at most {d}"
            ))
        }
    };
    let half = rd / 2;
    let (cos, sin) = match positions {
        Some(p) => (
            s.op(Op::Gather { axis: 0 }, &[cos, p.clone()])?,
            s.op(Op::Gather { axis: 0 }, &[sin, p])?,
        ),
        None => (cos, sin),
    };
    let want = vec![shape4[0], shape4[1], half];
    for (what, v) in [("cos", &cos), ("sin", &sin)] {
        let t = s.shape(v);
        if t != want {
            return Err(format!(
                "the {what} cache (at the positions) is {t:?}, it must be {want:?}"
            ));
        }
    }
    let cos = s.reshape(&cos, vec![shape4[0], shape4[1], 1, half])?;
    let sin = s.reshape(&sin, vec![shape4[0], shape4[1], 1, half])?;
    let interleaved = a.int_or("interleaved", 0) != 0;
    let (x1, x2) = if interleaved {
        (
            s.slice_axis(&x4, 3, 0, 2, half)?,
            s.slice_axis(&x4, 3, 1, 2, half)?,
        )
    } else {
        (
            s.slice_axis(&x4, 3, 0, 1, half)?,
            s.slice_axis(&x4, 3, half as i64, 1, half)?,
        )
    };
    let c1 = s.binary(BinaryOp::Mul, &cos, &x1)?;
    let s2 = s.binary(BinaryOp::Mul, &sin, &x2)?;
    let real = s.binary(BinaryOp::Sub, &c1, &s2)?;
    let s1 = s.binary(BinaryOp::Mul, &sin, &x1)?;
    let c2 = s.binary(BinaryOp::Mul, &cos, &x2)?;
    let imag = s.binary(BinaryOp::Add, &s1, &c2)?;
    let mut rotated_shape = shape4.clone();
    rotated_shape[3] = rd;
    let rotated = if interleaved {
        let mut pair = shape4.clone();
        pair[3] = half;
        pair.push(1);
        let r = s.reshape(&real, pair.clone())?;
        let i = s.reshape(&imag, pair)?;
        let both = s.op(Op::Concat { axis: 4 }, &[r, i])?;
        s.reshape(&both, rotated_shape)?
    } else {
        s.op(Op::Concat { axis: 3 }, &[real, imag])?
    };
    let out4 = if rd < d {
        let rest = s.slice_axis(&x4, 3, rd as i64, 1, d - rd)?;
        s.op(Op::Concat { axis: 3 }, &[rotated, rest])?
    } else {
        rotated
    };
    let out = if xt.rank() == 4 {
        s.last(
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[out4],
        )?
    } else {
        s.reshape(&out4, xt.shape.clone())?
    };
    Ok(vec![Some(out)])
}
