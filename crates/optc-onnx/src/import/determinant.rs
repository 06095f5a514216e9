//! ONNX `Det`: the determinant of each trailing [n, n] matrix, by Gaussian elimination
//! with partial pivoting (LU, as LAPACK's `getrf` behind the reference's
//! `numpy.linalg.det`), unrolled over the `n` columns at import time. Step `k`: the row at
//! or below `k` of the largest magnitude in column `k` (the first of equals) is swapped
//! into row `k` (a `GatherElements` of the rows; a swap flips the sign), its entry is the
//! pivot the determinant multiplies in, and the rows below lose their multiple of it. A
//! zero pivot (the column is zero from `k` down) makes the determinant 0; the elimination
//! then divides by 1 instead, so no NaN from 0/0 reaches later steps.

use super::steps::{float_tensor, Steps};
use super::{Ctx, Val, R};
use optc_ir::{BinaryOp, DType, Data, Op, Tensor, UnaryOp};
use tract_onnx::pb;

/// The largest matrix imported (its elimination is `n` unrolled steps).
const MAX_ORDER: usize = 64;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    let r = xt.rank();
    if !matches!(xt.dtype, DType::F32 | DType::F64) || r < 2 || xt.shape[r - 1] != xt.shape[r - 2] {
        return Err(format!(
            "the input must be f32 or f64 [.., n, n] (square matrices), it is {xt}"
        ));
    }
    let n = xt.shape[r - 1];
    if n > MAX_ORDER {
        return Err(format!(
            "matrices of order {n} are not supported (at most {MAX_ORDER})"
        ));
    }
    let outer = xt.shape[..r - 2].to_vec();
    let b: usize = outer.iter().product();
    let dtype = xt.dtype;
    let float = |v: Vec<f64>, shape: Vec<usize>| float_tensor(dtype, v, shape);
    let mut s = Steps::new(ctx, name);
    if n == 0 || b == 0 {
        let ones = s.constant(float(vec![1.0; b], outer.clone())?);
        return Ok(vec![Some(s.last(Op::Reshape { shape: outer }, &[ones])?)]);
    }
    let mut a = s.reshape(&x, vec![b, n, n])?;
    let rows =
        s.constant(Tensor::new(vec![1, n], Data::I64((0..n as i64).collect())).map_err(|e| e.msg)?);
    let one = s.constant(float(vec![1.0], vec![])?);
    let minus_one = s.constant(float(vec![-1.0], vec![])?);
    let zero = s.constant(float(vec![0.0], vec![])?);
    let mut det: Option<Val> = None;
    for k in 0..n {
        // Column k's magnitudes, rows above k out of the running (-1).
        let column = s.slice_axis(&a, 2, k as i64, 1, 1)?;
        let column = s.reshape(&column, vec![b, n])?;
        let magnitude = s.unary(UnaryOp::Abs, &column)?;
        let below = s.constant(
            Tensor::new(vec![1, n], Data::Bool((0..n).map(|i| i >= k).collect()))
                .map_err(|e| e.msg)?,
        );
        let candidates = s.op(Op::Where, &[below, magnitude, minus_one.clone()])?;
        let p = s.op(
            Op::Arg {
                largest: true,
                axis: 1,
                keepdims: true,
                select_last_index: false,
            },
            &[candidates],
        )?;
        // Rows k and p swapped: row i reads row k for i == p, row p for i == k.
        let kk = s.constant(Tensor::new(vec![], Data::I64(vec![k as i64])).map_err(|e| e.msg)?);
        let is_k = s.constant(
            Tensor::new(vec![1, n], Data::Bool((0..n).map(|i| i == k).collect()))
                .map_err(|e| e.msg)?,
        );
        let is_p = s.binary(BinaryOp::Equal, &rows, &p)?;
        let others = s.op(Op::Where, &[is_p, kk.clone(), rows.clone()])?;
        let order = s.op(Op::Where, &[is_k, p.clone(), others])?;
        let order = s.reshape(&order, vec![b, n, 1])?;
        let order = s.op(
            Op::Expand {
                shape: vec![b, n, n],
            },
            &[order],
        )?;
        a = s.op(Op::GatherElements { axis: 1 }, &[a, order])?;
        let stayed = s.binary(BinaryOp::Equal, &p, &kk)?;
        let sign = s.op(Op::Where, &[stayed, one.clone(), minus_one.clone()])?;
        let sign = s.reshape(&sign, vec![b, 1, 1])?;
        let pivot_row = s.slice_axis(&a, 1, k as i64, 1, 1)?;
        let pivot = s.slice_axis(&pivot_row, 2, k as i64, 1, 1)?;
        let signed = s.binary(BinaryOp::Mul, &pivot, &sign)?;
        det = Some(match det {
            None => signed,
            Some(d) => s.binary(BinaryOp::Mul, &d, &signed)?,
        });
        if k + 1 == n {
            break;
        }
        // Rows below k lose (their column-k entry / pivot) times the pivot row.
        let is_zero = s.binary(BinaryOp::Equal, &pivot, &zero)?;
        let divisor = s.op(Op::Where, &[is_zero, one.clone(), pivot])?;
        let column = s.slice_axis(&a, 2, k as i64, 1, 1)?;
        let factors = s.binary(BinaryOp::Div, &column, &divisor)?;
        let lower = s.constant(float(
            (0..n).map(|i| if i > k { 1.0 } else { 0.0 }).collect(),
            vec![1, n, 1],
        )?);
        let factors = s.binary(BinaryOp::Mul, &factors, &lower)?;
        let removed = s.binary(BinaryOp::Mul, &factors, &pivot_row)?;
        a = s.binary(BinaryOp::Sub, &a, &removed)?;
    }
    let det = det.expect("n >= 1");
    Ok(vec![Some(s.last(Op::Reshape { shape: outer }, &[det])?)])
}
