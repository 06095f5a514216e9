//! Semantics of ONNX's linear quantization ops (see [`crate::linear_quantization`] for the
//! definition this code follows).

use super::{bcast_index, f32s, window_cells};
use crate::linear_quantization::{dequantize, quantize, range};
use crate::{bail, broadcast_shapes, DType, Data, QuantParams, Result, Tensor, Window};

/// Index into per-tensor or per-axis parameters of each element of a tensor of `shape`.
fn param_index(shape: &[usize], axis: usize, per_axis: bool) -> impl Fn(usize) -> usize {
    let inner: usize = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    let n = shape.get(axis).copied().unwrap_or(1);
    move |i| {
        if per_axis {
            (i / inner.max(1)) % n.max(1)
        } else {
            0
        }
    }
}

/// A zero point's values as i64, one per scale (0 when absent).
fn zeros_of(t: Option<&&Tensor>, scales: usize) -> Vec<i64> {
    t.map_or(vec![0; scales], |z| z.to_i64_vec())
}

pub(super) fn quantize_linear(x: &[&Tensor], axis: usize, out: DType) -> Result<Data> {
    let v = f32s(x[0])?;
    let scale = f32s(x[1])?;
    let zero = zeros_of(x.get(2), scale.len());
    let Some((lo, hi)) = range(out) else {
        bail!("cannot quantize to {out}");
    };
    let at = param_index(x[0].shape(), axis, scale.len() != 1);
    let q = v
        .iter()
        .enumerate()
        .map(|(i, &e)| quantize(e, scale[at(i)], zero[at(i)] as i32, lo, hi));
    Ok(match out {
        DType::U8 => Data::U8(q.map(|r| r as u8).collect()),
        _ => Data::I8(q.map(|r| r as i8).collect()),
    })
}

pub(super) fn dequantize_linear(x: &[&Tensor], axis: usize) -> Result<Data> {
    let v = x[0].to_i64_vec();
    let scale = f32s(x[1])?;
    let zero = zeros_of(x.get(2), scale.len());
    let at = param_index(x[0].shape(), axis, scale.len() != 1);
    Ok(Data::F32(
        v.iter()
            .enumerate()
            .map(|(i, &e)| dequantize(e, zero[at(i)], scale[at(i)]))
            .collect(),
    ))
}

pub(super) fn dynamic_quantize_linear(x: &Tensor) -> Result<Vec<Data>> {
    let v = f32s(x)?;
    let p = QuantParams::dynamic(v);
    let y = v
        .iter()
        .map(|&e| quantize(e, p.scale, p.zero as i32, 0, 255) as u8)
        .collect();
    Ok(vec![
        Data::U8(y),
        Data::F32(vec![p.scale]),
        Data::U8(vec![p.zero]),
    ])
}

pub(super) fn matmul_integer(x: &[&Tensor]) -> Result<Data> {
    let (a, b) = (x[0], x[1]);
    let (av, bv) = (a.to_i64_vec(), b.to_i64_vec());
    let mut sa = a.shape().to_vec();
    let mut sb = b.shape().to_vec();
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    // Zero points broadcast to their operand (as promoted), one value per element.
    let zero_of = |z: Option<&&Tensor>, s: &[usize]| -> Vec<i64> {
        match z {
            None => vec![0; s.iter().product()],
            Some(z) => {
                let zv = z.to_i64_vec();
                bcast_index(s, z.shape()).iter().map(|&i| zv[i]).collect()
            }
        }
    };
    let za = zero_of(x.get(2), &sa);
    let zb = zero_of(x.get(3), &sb);
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let batch = broadcast_shapes(ba, bb)?;
    let oa = bcast_index(&batch, ba);
    let ob = bcast_index(&batch, bb);
    let mut out = Vec::with_capacity(oa.len() * m * n);
    for (&pa, &pb) in oa.iter().zip(&ob) {
        let (a0, b0) = (pa * m * k, pb * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0i32;
                for p in 0..k {
                    let (ia, ib) = (a0 + i * k + p, b0 + p * n + j);
                    let d = (av[ia] - za[ia]) * (bv[ib] - zb[ib]);
                    acc = acc.wrapping_add(d as i32);
                }
                out.push(acc);
            }
        }
    }
    Ok(Data::I32(out))
}

pub(super) fn conv_integer(
    x: &[&Tensor],
    window: &Window,
    group: usize,
    out: &[usize],
) -> Result<Data> {
    let (xv, wv) = (x[0].to_i64_vec(), x[1].to_i64_vec());
    let xz = zeros_of(x.get(2), 1)[0];
    let wz = zeros_of(x.get(3), 1);
    let xs = x[0].shape();
    let ws = x[1].shape();
    let (nb, c, m) = (xs[0], xs[1], ws[0]);
    let cg = ws[1];
    let mg = m / group;
    let isz: usize = xs[2..].iter().product();
    let ksz: usize = window.kernel.iter().product();
    let cells = window_cells(window, &xs[2..], &out[2..]);
    let mut y = Vec::with_capacity(nb * m * cells.len());
    for b in 0..nb {
        for oc in 0..m {
            let g = oc / mg;
            let z = wz[if wz.len() == 1 { 0 } else { oc }];
            for (cl, _) in &cells {
                let mut acc = 0i32;
                for ci in 0..cg {
                    let xb = (b * c + g * cg + ci) * isz;
                    let wb = (oc * cg + ci) * ksz;
                    for &(ki, off) in cl {
                        let d = (xv[xb + off] - xz) * (wv[wb + ki] - z);
                        acc = acc.wrapping_add(d as i32);
                    }
                }
                y.push(acc);
            }
        }
    }
    Ok(Data::I32(y))
}
