//! Semantics of the quantized contractions (see [`crate::quantized`] for the definition this
//! code follows step by step).

use super::{f32s, sl, window_cells};
use crate::quantized::{ActivationQuantization, QuantParams};
use crate::{bail, Data, Result, Tensor, Window};

/// The activation's parameters (from the inputs, or from `x`), `x` quantized, and the
/// per-channel scale products and biases of `channels` output channels.
struct Prepared {
    xq: Vec<u8>,
    zero: i32,
    scale: Vec<f32>,
    bias: Option<Vec<f32>>,
}

fn prepare(x: &[&Tensor], act: ActivationQuantization, channels: usize) -> Result<Prepared> {
    let params = match act {
        ActivationQuantization::Dynamic => QuantParams::dynamic(f32s(x[0])?),
        ActivationQuantization::Static => {
            let scale = f32s(x[3])?[0];
            let zero = sl::<u8>(x[4])?[0];
            if !(scale > 0.0 && scale.is_finite()) {
                bail!("the activation scale must be positive and finite, got {scale}");
            }
            QuantParams { scale, zero }
        }
    };
    // A u8 `x` (static only) is already quantized with these parameters: step 2 is skipped.
    let xq = match x[0].data() {
        Data::U8(q) => q.clone(),
        _ => {
            let inverse = params.inverse();
            let xv = f32s(x[0])?;
            xv.iter().map(|&v| params.quantize(v, inverse)).collect()
        }
    };
    let ws = f32s(x[2])?;
    let scale = (0..channels)
        .map(|c| params.scale * ws[if ws.len() == 1 { 0 } else { c }])
        .collect();
    let bias = match x.get(act.fixed_inputs()) {
        Some(b) => Some(f32s(b)?.to_vec()),
        None => None,
    };
    Ok(Prepared {
        xq,
        zero: params.zero as i32,
        scale,
        bias,
    })
}

impl Prepared {
    /// `acc * scale + bias` of channel `c`, each step rounded to f32 (no fused multiply-add;
    /// no add at all without a bias).
    fn output(&self, acc: i32, c: usize) -> f32 {
        let p = acc as f32 * self.scale[c];
        match &self.bias {
            Some(b) => p + b[c],
            None => p,
        }
    }
}

pub(super) fn matmul(x: &[&Tensor], act: ActivationQuantization) -> Result<Data> {
    let w = sl::<i8>(x[1])?;
    let (k, n) = (x[1].shape()[0], x[1].shape()[1]);
    let p = prepare(x, act, n)?;
    let m = p.xq.len() / k.max(1);
    let mut y = Vec::with_capacity(m * n);
    for i in 0..m {
        let row = &p.xq[i * k..(i + 1) * k];
        for j in 0..n {
            let mut acc = 0i32;
            for (t, &q) in row.iter().enumerate() {
                acc += (q as i32 - p.zero) * w[t * n + j] as i32;
            }
            y.push(p.output(acc, j));
        }
    }
    Ok(Data::F32(y))
}

pub(super) fn conv(
    x: &[&Tensor],
    window: &Window,
    group: usize,
    act: ActivationQuantization,
    out: &[usize],
) -> Result<Data> {
    let w = sl::<i8>(x[1])?;
    let xs = x[0].shape();
    let ws = x[1].shape();
    let (nb, c, m) = (xs[0], xs[1], ws[0]);
    let p = prepare(x, act, m)?;
    let cg = ws[1];
    let mg = m / group;
    let isz: usize = xs[2..].iter().product();
    let ksz: usize = window.kernel.iter().product();
    let cells = window_cells(window, &xs[2..], &out[2..]);
    let mut y = Vec::with_capacity(nb * m * cells.len());
    for b in 0..nb {
        for oc in 0..m {
            let g = oc / mg;
            for (cl, _) in &cells {
                let mut acc = 0i32;
                for ci in 0..cg {
                    let xb = (b * c + g * cg + ci) * isz;
                    let wb = (oc * cg + ci) * ksz;
                    for &(ki, off) in cl {
                        acc += (p.xq[xb + off] as i32 - p.zero) * w[wb + ki] as i32;
                    }
                }
                y.push(p.output(acc, oc));
            }
        }
    }
    Ok(Data::F32(y))
}
