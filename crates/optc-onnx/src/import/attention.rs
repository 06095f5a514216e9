//! ONNX `Attention` (opsets 23-24, and 25's sliding window), imported as the composition
//! the spec defines: heads split from 3-D inputs, the key/value cache concatenated, grouped
//! query heads repeated, `(Q * sqrt(scale)) @ (K * sqrt(scale))^T`, the soft cap, one
//! additive bias (attention mask, causal mask, sliding window, per-batch key padding),
//! softmax (rows whose bias masks every key give zeros, as the spec says), `@ V`, heads
//! joined again. The masks that depend only on shapes are constants; a boolean or float
//! `attn_mask` and `nonpad_kv_seqlen` may be computed at run time.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, ReduceKind, Tensor, UnaryOp};
use tract_onnx::pb;

impl Steps<'_> {
    /// `[B, S, heads * size]` -> `[B, heads, S, size]`.
    fn split_heads(&mut self, x: &Val, heads: usize, what: &str) -> R<Val> {
        let s = self.shape(x);
        if heads == 0 || !s[2].is_multiple_of(heads) {
            return Err(format!(
                "{what}'s hidden size {} is not a multiple of its {heads} heads",
                s[2]
            ));
        }
        let r = self.reshape(x, vec![s[0], s[1], heads, s[2] / heads])?;
        self.transpose(&r, vec![0, 2, 1, 3])
    }

    /// A constant additive mask of `rows x cols`: 0 where `allowed(i, j)`, -inf elsewhere.
    fn additive_mask(
        &mut self,
        rows: usize,
        cols: usize,
        dtype: DType,
        allowed: impl Fn(i64, i64) -> bool,
    ) -> R<Val> {
        let v: Vec<f64> = (0..rows * cols)
            .map(|k| {
                if allowed((k / cols) as i64, (k % cols) as i64) {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        let data = match dtype {
            DType::F64 => Data::F64(v),
            _ => Data::F32(v.iter().map(|&x| x as f32).collect()),
        };
        Ok(self.constant(Tensor::new(vec![rows, cols], data).map_err(|e| e.msg)?))
    }

    /// Scalar 0 and -inf of `dtype` (f32 or f64).
    fn zero_and_minus_infinity(&mut self, dtype: DType) -> R<(Val, Val)> {
        Ok((
            self.scalar(0.0, dtype)?,
            self.scalar(f32::NEG_INFINITY, dtype)?,
        ))
    }

    /// `x + y`, where `None` is zero.
    fn add_bias(&mut self, x: Option<Val>, y: Val) -> R<Val> {
        match x {
            None => Ok(y),
            Some(x) => self.binary(BinaryOp::Add, &x, &y),
        }
    }
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let q = ctx.input(node, 0).ok_or("Q (input #0) is missing")?;
    let k = ctx.input(node, 1).ok_or("K (input #1) is missing")?;
    let v = ctx.input(node, 2).ok_or("V (input #2) is missing")?;
    let mask = ctx.input(node, 3);
    let past_key = ctx.input(node, 4);
    let past_value = ctx.input(node, 5);
    let nonpad = ctx.input(node, 6);
    // f32, or f64 throughout (the scale, masks and softcap of Q's type).
    let dtype = ctx.ty(&q).dtype;
    for (x, what) in [(&q, "Q"), (&k, "K"), (&v, "V")] {
        let t = ctx.ty(x);
        if !matches!(t.dtype, DType::F32 | DType::F64) || t.dtype != dtype {
            return Err(format!(
                "{what} of type {} is not supported (Q, K and V all f32 or all f64)",
                t.dtype
            ));
        }
    }
    if past_key.is_some() != past_value.is_some() {
        return Err("past_key and past_value must be given together".into());
    }
    if nonpad.is_some() && past_key.is_some() {
        return Err("nonpad_kv_seqlen cannot be combined with past_key / past_value".into());
    }
    let rank = ctx.ty(&q).rank();
    if rank != ctx.ty(&k).rank() || rank != ctx.ty(&v).rank() || !(rank == 3 || rank == 4) {
        return Err(format!(
            "Q, K and V must all have rank 3 or all rank 4, they are {}, {} and {}",
            ctx.ty(&q),
            ctx.ty(&k),
            ctx.ty(&v)
        ));
    }
    let mode = a.int_or("qk_matmul_output_mode", 0);
    if !(0..=3).contains(&mode) {
        return Err(format!(
            "qk_matmul_output_mode {mode} is not supported (0-3)"
        ));
    }
    let softcap = a.float_or("softcap", 0.0);
    let is_causal = a.int_or("is_causal", 0) != 0;
    let left = a.int_or("left_window_size", -1);
    let right = a.int_or("right_window_size", -1);
    if left < -1 || right < -1 {
        return Err("left_window_size / right_window_size must be -1 or nonnegative".into());
    }
    let mut s = Steps::new(ctx, name);

    // 1. Heads.
    let (q, k, v) = if rank == 3 {
        let qh = a.int("q_num_heads").ok_or("3-D inputs need q_num_heads")?;
        let kvh = a
            .int("kv_num_heads")
            .ok_or("3-D inputs need kv_num_heads")?;
        let (qh, kvh) = (qh.max(0) as usize, kvh.max(0) as usize);
        (
            s.split_heads(&q, qh, "Q")?,
            s.split_heads(&k, kvh, "K")?,
            s.split_heads(&v, kvh, "V")?,
        )
    } else {
        (q, k, v)
    };
    let (qs, ks, vs) = (s.shape(&q), s.shape(&k), s.shape(&v));
    if qs[0] != ks[0] || ks[0] != vs[0] || qs[3] != ks[3] || ks[1] != vs[1] || ks[2] != vs[2] {
        return Err(format!(
            "Q {qs:?}, K {ks:?} and V {vs:?} (batch, heads, sequence, head size) do not fit"
        ));
    }
    let batch = qs[0];
    let q_heads = qs[1];
    let q_len = qs[2];

    // 2. The cache.
    let (k, v, past_len) = match (past_key, past_value) {
        (Some(pk), Some(pv)) => {
            let past_len = s.shape(&pk).get(2).copied().unwrap_or(0);
            let k = s.op(Op::Concat { axis: 2 }, &[pk, k])?;
            let v = s.op(Op::Concat { axis: 2 }, &[pv, v])?;
            (k, v, past_len)
        }
        _ => (k, v, 0),
    };
    let present_key = k.clone();
    let present_value = v.clone();
    let (ks, vs) = (s.shape(&k), s.shape(&v));
    let kv_len = ks[2];

    // 3. Grouped query heads: each key/value head serves q_heads / kv_heads query heads.
    let kv_heads = ks[1];
    let (k, v) = if q_heads != kv_heads {
        if kv_heads == 0 || q_heads % kv_heads != 0 {
            return Err(format!(
                "{q_heads} query heads are not a multiple of {kv_heads} key/value heads"
            ));
        }
        let reps = q_heads / kv_heads;
        let mut repeat = |x: &Val, shape: &[usize]| -> R<Val> {
            let r = s.reshape(x, vec![batch, kv_heads, 1, shape[2], shape[3]])?;
            let e = s.op(
                Op::Expand {
                    shape: vec![batch, kv_heads, reps, shape[2], shape[3]],
                },
                &[r],
            )?;
            s.reshape(&e, vec![batch, q_heads, shape[2], shape[3]])
        };
        (repeat(&k, &ks)?, repeat(&v, &vs)?)
    } else {
        (k, v)
    };

    // 4. Scores.
    // The root of the scale multiplies Q and K. f32: the scale and its root in f32, as
    // before. f64, as the spec's function and the reference compute it: a given scale's root
    // in float (the attribute's type) then widened; the default 1 / sqrt(head size) and its
    // root in f64.
    let (root32, root64) = match a.float("scale") {
        Some(x) => (x.sqrt(), x.sqrt() as f64),
        None => (
            (1.0 / (qs[3] as f32).sqrt()).sqrt(),
            (1.0 / (qs[3] as f64).sqrt()).sqrt(),
        ),
    };
    let root = s.float(root32, root64, &q);
    let q = s.binary(BinaryOp::Mul, &q, &root)?;
    let k = s.binary(BinaryOp::Mul, &k, &root)?;
    let kt = s.transpose(&k, vec![0, 1, 3, 2])?;
    let mut scores = s.op(Op::MatMul, &[q, kt])?;
    if softcap > 0.0 {
        let inv = s.float(1.0 / softcap, 1.0 / softcap as f64, &scores);
        let cap = s.float(softcap, softcap as f64, &scores);
        let d = s.binary(BinaryOp::Mul, &scores, &inv)?;
        let t = s.op(Op::Unary(UnaryOp::Tanh), &[d])?;
        scores = s.binary(BinaryOp::Mul, &t, &cap)?;
    }

    // 5. The bias.
    let mut bias: Option<Val> = None;
    if let Some(m) = mask {
        let mt = s.ctx.ty(&m);
        let last = *mt.shape.last().ok_or("attn_mask must have rank >= 1")?;
        let m = if last < kv_len {
            // Shorter masks are padded with "masked" up to the key length.
            let mut pad_shape = mt.shape.clone();
            *pad_shape.last_mut().expect("rank >= 1") = kv_len - last;
            let n: usize = pad_shape.iter().product();
            let pad = match mt.dtype {
                DType::Bool => Tensor::new(pad_shape, Data::Bool(vec![false; n])),
                DType::F64 => Tensor::new(pad_shape, Data::F64(vec![f64::NEG_INFINITY; n])),
                _ => Tensor::from_f32(pad_shape, vec![f32::NEG_INFINITY; n]),
            }
            .map_err(|e| e.msg)?;
            let pad = s.constant(pad);
            s.op(
                Op::Concat {
                    axis: mt.rank() - 1,
                },
                &[m, pad],
            )?
        } else {
            m
        };
        let m = match mt.dtype {
            DType::Bool => {
                let (zero, minus) = s.zero_and_minus_infinity(dtype)?;
                s.op(Op::Where, &[m, zero, minus])?
            }
            d if d == dtype => m,
            d => {
                return Err(format!(
                    "attn_mask of type {d} is not supported (bool, or Q's type {dtype})"
                ))
            }
        };
        bias = Some(m);
    }
    let nonpad = match nonpad {
        Some(n) => {
            let nt = s.ctx.ty(&n);
            if nt.numel() != batch {
                return Err(format!(
                    "nonpad_kv_seqlen must hold {batch} lengths, it is {nt}"
                ));
            }
            let n = if nt.dtype == DType::I64 {
                n
            } else {
                s.op(Op::Cast { to: DType::I64 }, &[n])?
            };
            Some(s.reshape(&n, vec![batch, 1, 1])?)
        }
        None => None,
    };
    if is_causal {
        // Key j is visible to query i when j <= i + offset.
        match &nonpad {
            None => {
                let offset = past_len as i64;
                let c = s.additive_mask(q_len, kv_len, dtype, |i, j| j <= i + offset)?;
                bias = Some(s.add_bias(bias, c)?);
            }
            Some(n) => {
                // offset = nonpad[b] - q_len: visible when j - i + q_len <= nonpad[b].
                let c = per_batch_mask(
                    &mut s,
                    dtype,
                    n,
                    (batch, q_len, kv_len),
                    |i, j| j - i + q_len as i64,
                    BinaryOp::LessOrEqual,
                )?;
                bias = Some(s.add_bias(bias, c)?);
            }
        }
    }
    if left >= 0 || right >= 0 {
        let allowed = move |diff: i64| (left < 0 || diff <= left) && (right < 0 || -diff <= right);
        match &nonpad {
            None => {
                let offset = past_len as i64;
                let w = s.additive_mask(q_len, kv_len, dtype, |i, j| allowed(i + offset - j))?;
                bias = Some(s.add_bias(bias, w)?);
            }
            Some(n) => {
                // offset = nonpad[b] - q_len, diff = i + offset - j:
                // diff <= left  <=>  nonpad[b] <= left - i + j + q_len,
                // -diff <= right <=> j - i + q_len - right <= nonpad[b].
                let q = q_len as i64;
                if left >= 0 {
                    let w = per_batch_mask(
                        &mut s,
                        dtype,
                        n,
                        (batch, q_len, kv_len),
                        |i, j| left - i + j + q,
                        BinaryOp::GreaterOrEqual,
                    )?;
                    bias = Some(s.add_bias(bias, w)?);
                }
                if right >= 0 {
                    let w = per_batch_mask(
                        &mut s,
                        dtype,
                        n,
                        (batch, q_len, kv_len),
                        |i, j| j - i + q - right,
                        BinaryOp::LessOrEqual,
                    )?;
                    bias = Some(s.add_bias(bias, w)?);
                }
            }
        }
    }
    if let Some(n) = &nonpad {
        // Keys at or past a batch entry's length are masked.
        let range = s.constant(
            Tensor::from_i64(vec![1, 1, kv_len], (0..kv_len as i64).collect())
                .map_err(|e| e.msg)?,
        );
        let visible = s.binary(BinaryOp::Less, &range, n)?;
        let (zero, minus) = s.zero_and_minus_infinity(dtype)?;
        let p = s.op(Op::Where, &[visible, zero, minus])?;
        let p = s.reshape(&p, vec![batch, 1, 1, kv_len])?;
        bias = Some(s.add_bias(bias, p)?);
    }

    // 6. Softmax; rows whose bias masks every key are zero.
    let with_bias = match &bias {
        Some(b) => s.binary(BinaryOp::Add, &scores, b)?,
        None => scores.clone(),
    };
    let last_axis = s.shape(&with_bias).len() - 1;
    let mut probs = s.op(
        Op::Softmax { axis: last_axis },
        std::slice::from_ref(&with_bias),
    )?;
    if let Some(b) = &bias {
        let brank = s.shape(b).len();
        let m = s.op(
            Op::Reduce {
                kind: ReduceKind::Max,
                axes: vec![brank - 1],
                keepdims: true,
            },
            std::slice::from_ref(b),
        )?;
        let (zero, minus) = s.zero_and_minus_infinity(dtype)?;
        let all_masked = s.binary(BinaryOp::Equal, &m, &minus)?;
        probs = s.op(Op::Where, &[all_masked, zero, probs])?;
    }
    let qk_output = match mode {
        2 => with_bias,
        3 => probs.clone(),
        _ => scores,
    };

    // 7. Values, heads joined.
    let y = s.op(Op::MatMul, &[probs, v])?;
    let y = if rank == 3 {
        let ys = s.shape(&y);
        let t = s.transpose(&y, vec![0, 2, 1, 3])?;
        s.reshape(&t, vec![ys[0], ys[2], ys[1] * ys[3]])?
    } else {
        y
    };
    Ok(vec![
        Some(y),
        Some(present_key),
        Some(present_value),
        Some(qk_output),
    ])
}

/// An additive mask `[batch, 1, rows, cols]`: 0 where `cmp(value(i, j), lengths[b])`, -inf
/// elsewhere, `lengths` an i64 `[batch, 1, 1]` computed at run time.
fn per_batch_mask(
    s: &mut Steps,
    dtype: DType,
    lengths: &Val,
    (batch, rows, cols): (usize, usize, usize),
    value: impl Fn(i64, i64) -> i64,
    cmp: BinaryOp,
) -> R<Val> {
    let v: Vec<i64> = (0..rows * cols)
        .map(|k| value((k / cols) as i64, (k % cols) as i64))
        .collect();
    let grid = s.constant(Tensor::from_i64(vec![1, rows, cols], v).map_err(|e| e.msg)?);
    let visible = s.binary(cmp, &grid, lengths)?;
    let (zero, minus) = s.zero_and_minus_infinity(dtype)?;
    let m = s.op(Op::Where, &[visible, zero, minus])?;
    s.reshape(&m, vec![batch, 1, rows, cols])
}
