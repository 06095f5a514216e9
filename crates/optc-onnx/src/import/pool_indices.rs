//! `MaxPool`'s second output: per output position, the flat index (over the whole input
//! tensor, `[0, N * C * spatial)`, padding not counted; column-major spatial order with
//! `storage_order` 1) of the window element that is its maximum, the first of equals in
//! the window's scan order. Imported as gathers over a table built at import time: every
//! window's input positions (a padding position reads a -inf appended after the input), the
//! first largest of each window (`ArgMax`), and its position looked up in the same table.

use super::steps::{i64_tensor, unflatten, Steps};
use super::{Val, R};
use optc_ir::{BinaryOp, DType, Data, Op, Tensor, Window};

/// The largest window table built (output positions times window elements).
const MAX_TABLE: usize = 1 << 24;

/// The indices output of a max pool of `x` [N, C, spatial..] over `window`.
pub(super) fn max_pool_indices(
    s: &mut Steps,
    x: &Val,
    window: &Window,
    storage_order: i64,
) -> R<Val> {
    let xt = s.ctx.ty(x);
    let (n, c) = (xt.shape[0], xt.shape[1]);
    let spatial = xt.shape[2..].to_vec();
    let nsp = spatial.len();
    let out: Vec<usize> = (0..nsp)
        .map(|i| window.out_dim(i, spatial[i]))
        .collect::<Result<_, _>>()
        .map_err(|e| e.msg)?;
    let pixels: usize = spatial.iter().product();
    let outputs: usize = out.iter().product();
    let taps: usize = window.kernel.iter().product();
    if outputs.saturating_mul(taps) > MAX_TABLE {
        return Err(format!(
            "the indices output of a pool of {outputs} positions with {taps}-element windows is not supported (at most {MAX_TABLE} in all)"
        ));
    }
    // Per output position and window element: the input's flat spatial position (row-major,
    // for the gather), or `pixels` (the appended -inf) in the padding.
    let mut table = Vec::with_capacity(outputs * taps);
    // The same positions as the output reports them (column-major with storage_order 1).
    let mut reported = Vec::with_capacity(outputs * taps);
    for o in 0..outputs {
        let at = unflatten(o, &out);
        for t in 0..taps {
            let tap = unflatten(t, &window.kernel);
            let pos: Vec<i64> = (0..nsp)
                .map(|i| {
                    (at[i] * window.strides[i] + tap[i] * window.dilations[i]) as i64
                        - window.pads[i] as i64
                })
                .collect();
            if (0..nsp).all(|i| pos[i] >= 0 && pos[i] < spatial[i] as i64) {
                let row_major = (0..nsp).fold(0, |f, i| f * spatial[i] as i64 + pos[i]);
                let column_major = (0..nsp)
                    .rev()
                    .fold(0, |f, i| f * spatial[i] as i64 + pos[i]);
                table.push(row_major);
                reported.push(if storage_order == 1 {
                    column_major
                } else {
                    row_major
                });
            } else {
                table.push(pixels as i64);
                reported.push(pixels as i64);
            }
        }
    }
    let planes = n * c;
    let low = match xt.dtype {
        DType::F32 => Data::F32(vec![f32::NEG_INFINITY]),
        DType::F64 => Data::F64(vec![f64::NEG_INFINITY]),
        d => {
            return Err(format!(
                "the indices output of a {d} max pool is not supported"
            ))
        }
    };
    let flat = s.reshape(x, vec![planes, pixels])?;
    let low = s.constant(Tensor::new(vec![], low).map_err(|e| e.msg)?);
    let low = s.op(
        Op::Expand {
            shape: vec![planes, 1],
        },
        &[low],
    )?;
    let extended = s.op(Op::Concat { axis: 1 }, &[flat, low])?;
    let table = s.constant(i64_tensor(table, vec![outputs * taps])?);
    let windows = s.op(Op::Gather { axis: 1 }, &[extended, table])?;
    let windows = s.reshape(&windows, vec![planes, outputs, taps])?;
    let largest = s.op(
        Op::Arg {
            largest: true,
            axis: 2,
            keepdims: true,
            select_last_index: false,
        },
        &[windows],
    )?;
    // The winner's entry of the reported table: row `o * taps + element`.
    let rows = s.constant(i64_tensor(
        (0..outputs as i64).map(|o| o * taps as i64).collect(),
        vec![1, outputs, 1],
    )?);
    let entry = s.binary(BinaryOp::Add, &largest, &rows)?;
    let reported = s.constant(i64_tensor(reported, vec![outputs * taps])?);
    let position = s.op(Op::Gather { axis: 0 }, &[reported, entry])?;
    let plane_start = s.constant(i64_tensor(
        (0..planes as i64).map(|p| p * pixels as i64).collect(),
        vec![planes, 1, 1],
    )?);
    let index = s.binary(BinaryOp::Add, &position, &plane_start)?;
    let mut shape = vec![n, c];
    shape.extend(&out);
    s.reshape(&index, shape)
}
