//! The indexing and ordering ops: ArgMax/ArgMin, CumSum, TopK, GatherElements, GatherND,
//! ScatterElements and ScatterND.
//!
//! Out-of-range indices are errors (negative ones count from the end of their axis).
//! Scatters apply their updates in row-major order of the indices, so the last of duplicate
//! indices wins a plain scatter.

use super::{multi_indices, sl, Elem, Num};
use crate::{bail, strides, DType, Data, Result, ScatterReduction, Tensor};

/// `k` as an index into an axis of extent `n` (negative counts from the end).
fn resolve(what: &str, k: i64, n: usize) -> Result<usize> {
    let j = if k < 0 { k + n as i64 } else { k };
    if j < 0 || j >= n as i64 {
        bail!("{what}: index {k} is out of range for an axis of extent {n}");
    }
    Ok(j as usize)
}

/// `(outer, extent, inner)` of `shape` around `axis`.
fn split_at(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// `a` comes strictly before `b` in the order of `largest` (descending) or smallest
/// (ascending) with NaN greater than every number.
fn before<T: Num>(a: T, b: T, largest: bool) -> bool {
    let (hi, lo) = if largest { (a, b) } else { (b, a) };
    match (hi.is_nan(), lo.is_nan()) {
        (true, false) => true,
        (_, true) => false,
        _ => hi > lo,
    }
}

fn same<T: Num>(a: T, b: T) -> bool {
    (a.is_nan() && b.is_nan()) || a == b
}

pub(super) fn arg(x: &Tensor, largest: bool, axis: usize, last: bool) -> Result<Data> {
    let (outer, n, inner) = split_at(x.shape(), axis);
    with_num_type!(x.dtype(), "arg", T => {
        let v = sl::<T>(x)?;
        let mut r = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| v[(o * n + j) * inner + i];
                let mut best = 0usize;
                for j in 1..n {
                    let (a, b) = (at(j), at(best));
                    if before(a, b, largest) || (last && same(a, b)) {
                        best = j;
                    }
                }
                r.push(best as i64);
            }
        }
        Ok(Data::I64(r))
    })
}

pub(super) fn cumulative(
    x: &Tensor,
    product: bool,
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> Result<Data> {
    let (outer, n, inner) = split_at(x.shape(), axis);
    let order = |j: usize| if reverse { n - 1 - j } else { j };
    if x.dtype() == DType::F32 {
        // f32 runs in f64, each output rounded once.
        let v = sl::<f32>(x)?;
        let mut r = vec![0f32; v.len()];
        let step = |acc: f64, x: f32| {
            if product {
                acc * x as f64
            } else {
                acc + x as f64
            }
        };
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = if product { 1f64 } else { 0f64 };
                for j in 0..n {
                    let p = (o * n + order(j)) * inner + i;
                    if exclusive {
                        r[p] = acc as f32;
                        acc = step(acc, v[p]);
                    } else {
                        acc = step(acc, v[p]);
                        r[p] = acc as f32;
                    }
                }
            }
        }
        return Ok(Data::F32(r));
    }
    with_num_type!(x.dtype(), "cumulative", T => {
        let v = sl::<T>(x)?;
        let mut r = vec![T::zero(); v.len()];
        // Integers wrap.
        let step = |acc: T, x: T| if product { acc.mul(x) } else { acc.add(x) };
        for o in 0..outer {
            for i in 0..inner {
                let mut acc = if product { T::from_f64(1.0) } else { T::zero() };
                for j in 0..n {
                    let p = (o * n + order(j)) * inner + i;
                    if exclusive {
                        r[p] = acc;
                        acc = step(acc, v[p]);
                    } else {
                        acc = step(acc, v[p]);
                        r[p] = acc;
                    }
                }
            }
        }
        Ok(T::wrap(r))
    })
}

pub(super) fn top_k(x: &Tensor, axis: usize, k: usize, largest: bool) -> Result<Vec<Data>> {
    let (outer, n, inner) = split_at(x.shape(), axis);
    with_num_type!(x.dtype(), "top_k", T => {
        let v = sl::<T>(x)?;
        let mut values = vec![T::zero(); outer * k * inner];
        let mut indices = vec![0i64; outer * k * inner];
        for o in 0..outer {
            for i in 0..inner {
                let at = |j: usize| v[(o * n + j) * inner + i];
                let mut order: Vec<usize> = (0..n).collect();
                // Stable: equal elements keep index order.
                order.sort_by(|&a, &b| {
                    if before(at(a), at(b), largest) {
                        std::cmp::Ordering::Less
                    } else if before(at(b), at(a), largest) {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                });
                for (j, &src) in order[..k].iter().enumerate() {
                    let p = (o * k + j) * inner + i;
                    values[p] = at(src);
                    indices[p] = src as i64;
                }
            }
        }
        Ok(vec![T::wrap(values), Data::I64(indices)])
    })
}

/// For every element of `indices` (row-major): the data offset it addresses along `axis`.
fn element_offsets(
    what: &str,
    data: &[usize],
    indices: &Tensor,
    axis: usize,
) -> Result<Vec<usize>> {
    let st = strides(data);
    let ks = indices.to_i64_vec();
    multi_indices(indices.shape())
        .iter()
        .zip(ks)
        .map(|(m, k)| {
            let j = resolve(what, k, data[axis])?;
            Ok((0..data.len())
                .map(|d| if d == axis { j } else { m[d] } * st[d])
                .sum())
        })
        .collect()
}

/// For every row of `[b..., m..., q]` indices: the data offset of the slice it addresses,
/// and the slice's length.
fn row_offsets(
    what: &str,
    data: &[usize],
    indices: &Tensor,
    batch: usize,
) -> Result<(Vec<usize>, usize)> {
    let is = indices.shape();
    let q = is[is.len() - 1];
    let st = strides(data);
    let slice: usize = data[batch + q..].iter().product();
    let batches: usize = is[..batch].iter().product();
    let rows: usize = is[batch..is.len() - 1].iter().product();
    let ks = indices.to_i64_vec();
    let batch_stride: usize = data[batch..].iter().product();
    let mut out = Vec::with_capacity(batches * rows);
    for b in 0..batches {
        for r in 0..rows {
            let row = &ks[(b * rows + r) * q..(b * rows + r + 1) * q];
            let mut off = b * batch_stride;
            for (d, &k) in row.iter().enumerate() {
                off += resolve(what, k, data[batch + d])? * st[batch + d];
            }
            out.push(off);
        }
    }
    Ok((out, slice))
}

pub(super) fn gather_elements(d: &Tensor, i: &Tensor, axis: usize) -> Result<Data> {
    let offs = element_offsets("gather_elements", d.shape(), i, axis)?;
    with_type!(d.dtype(), T => {
        let v = sl::<T>(d)?;
        Ok(T::wrap(offs.iter().map(|&o| v[o]).collect()))
    })
}

pub(super) fn gather_nd(d: &Tensor, i: &Tensor, batch: usize) -> Result<Data> {
    let (offs, slice) = row_offsets("gather_nd", d.shape(), i, batch)?;
    with_type!(d.dtype(), T => {
        let v = sl::<T>(d)?;
        Ok(T::wrap(offs.iter().flat_map(|&o| v[o..o + slice].iter().copied()).collect()))
    })
}

/// `a (reduction) u` for a numeric element.
fn combine<T: Num>(r: ScatterReduction, a: T, u: T) -> T {
    match r {
        ScatterReduction::Replace => u,
        ScatterReduction::Add => a.add(u),
        ScatterReduction::Mul => a.mul(u),
        ScatterReduction::Max | ScatterReduction::Min => {
            // NaN on either side wins; otherwise the greater (smaller) one.
            let wins = u != a && (r == ScatterReduction::Max) == (u > a);
            if !a.is_nan() && (u.is_nan() || wins) {
                u
            } else {
                a
            }
        }
    }
}

/// `data` with `updates[k]` combined into the `len` elements at `offs[k]`, in order.
fn scatter(
    d: &Tensor,
    u: &Tensor,
    offs: &[usize],
    len: usize,
    r: ScatterReduction,
) -> Result<Data> {
    if d.dtype() == DType::Bool {
        if r != ScatterReduction::Replace {
            bail!("scatter: reduction {} does not take bool", r.name());
        }
        let mut out = sl::<bool>(d)?.to_vec();
        let up = sl::<bool>(u)?;
        for (k, &o) in offs.iter().enumerate() {
            out[o..o + len].copy_from_slice(&up[k * len..(k + 1) * len]);
        }
        return Ok(Data::Bool(out));
    }
    with_num_type!(d.dtype(), "scatter", T => {
        let mut out = sl::<T>(d)?.to_vec();
        let up = sl::<T>(u)?;
        for (k, &o) in offs.iter().enumerate() {
            for e in 0..len {
                out[o + e] = combine(r, out[o + e], up[k * len + e]);
            }
        }
        Ok(T::wrap(out))
    })
}

pub(super) fn scatter_elements(
    d: &Tensor,
    i: &Tensor,
    u: &Tensor,
    axis: usize,
    r: ScatterReduction,
) -> Result<Data> {
    let offs = element_offsets("scatter_elements", d.shape(), i, axis)?;
    scatter(d, u, &offs, 1, r)
}

pub(super) fn scatter_nd(d: &Tensor, i: &Tensor, u: &Tensor, r: ScatterReduction) -> Result<Data> {
    let (offs, slice) = row_offsets("scatter_nd", d.shape(), i, 0)?;
    scatter(d, u, &offs, slice, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_index_order_of_ties_and_puts_nan_first() {
        let x = Tensor::from_f32(vec![5], vec![1.0, f32::NAN, 3.0, 3.0, -1.0]).unwrap();
        let r = top_k(&x, 0, 3, true).unwrap();
        assert_eq!(r[1], Data::I64(vec![1, 2, 3]));
        let r = top_k(&x, 0, 2, false).unwrap();
        assert_eq!(r[1], Data::I64(vec![4, 0]));
        assert_eq!(arg(&x, true, 0, false).unwrap(), Data::I64(vec![1]));
        let y = Tensor::from_f32(vec![4], vec![2.0, 7.0, 7.0, 1.0]).unwrap();
        assert_eq!(arg(&y, true, 0, true).unwrap(), Data::I64(vec![2]));
        assert_eq!(arg(&y, true, 0, false).unwrap(), Data::I64(vec![1]));
    }

    #[test]
    fn scatter_max_propagates_nan_and_rejects_bad_indices() {
        let d = Tensor::from_f32(vec![3], vec![1.0, 5.0, f32::NAN]).unwrap();
        let i = Tensor::from_i64(vec![3], vec![0, -2, 2]).unwrap();
        let u = Tensor::from_f32(vec![3], vec![4.0, 2.0, 9.0]).unwrap();
        let r = scatter_elements(&d, &i, &u, 0, ScatterReduction::Max).unwrap();
        match r {
            Data::F32(v) => {
                assert_eq!(&v[..2], &[4.0, 5.0]);
                assert!(v[2].is_nan());
            }
            other => panic!("{other:?}"),
        }
        let bad = Tensor::from_i64(vec![3], vec![0, 3, 1]).unwrap();
        assert!(scatter_elements(&d, &bad, &u, 0, ScatterReduction::Replace).is_err());
    }
}
