//! What calibration observes at the input of each contraction: the mean per channel (bias
//! correction) and, for MatMul/Gemm inputs of at most [`MAX_SECOND_MOMENT`] features, the
//! second moment `E[x x^T]` and covariance (activation-aware low-rank factorization).

use optc_ir::Tensor;
use std::collections::HashMap;

/// Largest feature count whose `K x K` second moment is collected.
pub const MAX_SECOND_MOMENT: usize = 2048;

#[derive(Default, Debug)]
struct Layer {
    sums: Vec<f64>,
    /// Upper triangle of `sum x x^T` (row-major, full `K x K` storage), MatMul inputs only.
    outer: Vec<f64>,
    rows: u64,
}

/// Per layer (by name), sums over the calibration sets.
#[derive(Default, Debug)]
pub struct InputStats {
    layers: HashMap<String, Layer>,
    /// A conv's patches (`C * KH * KW` values per output position, as its weight rows).
    patches: HashMap<String, Layer>,
    /// Collect second moments (MatMul inputs, conv patches) too: only the pruning and
    /// low-rank passes use them.
    pub moments: bool,
}

/// `sum x x^T` (upper triangle) of one vector into `outer` (`k x k`).
fn add_outer(outer: &mut [f64], x: &[f64]) {
    let k = x.len();
    for i in 0..k {
        let xi = x[i];
        if xi == 0.0 {
            continue;
        }
        let row = &mut outer[i * k + i..(i + 1) * k];
        for (o, &xj) in row.iter_mut().zip(&x[i..]) {
            *o += xi * xj;
        }
    }
}

/// The symmetric matrix of an upper triangle divided by `n`.
fn symmetric(outer: &[f64], k: usize, n: u64) -> Vec<f64> {
    let mut m = vec![0f64; k * k];
    for i in 0..k {
        for j in i..k {
            let v = outer[i * k + j] / n as f64;
            m[i * k + j] = v;
            m[j * k + i] = v;
        }
    }
    m
}

impl InputStats {
    pub fn new(moments: bool) -> InputStats {
        InputStats {
            moments,
            ..Default::default()
        }
    }

    /// Add the patches of a conv's input `x [N, C, H, W]` for a 2-D `window` (zero padding):
    /// their sums and second moment, in the weight's `(c, kh, kw)` order.
    pub fn add_patches(&mut self, layer: &str, x: &Tensor, window: &optc_ir::Window) {
        let (Some(v), s) = (x.as_f32(), x.shape()) else {
            return;
        };
        if !self.moments || s.len() != 4 || window.kernel.len() != 2 {
            return;
        }
        let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
        let (kh, kw) = (window.kernel[0], window.kernel[1]);
        let (sh, sw) = (window.strides[0], window.strides[1]);
        let (dh, dw) = (window.dilations[0], window.dilations[1]);
        let (pt, pl, pb, pr) = (
            window.pads[0],
            window.pads[1],
            window.pads[2],
            window.pads[3],
        );
        let k = c * kh * kw;
        if k > MAX_SECOND_MOMENT || kh == 0 || kw == 0 || sh == 0 || sw == 0 {
            return;
        }
        let span = |size: usize, pad: usize, kk: usize, d: usize, st: usize| {
            (size + pad)
                .checked_sub(d * (kk - 1) + 1)
                .map(|x| x / st + 1)
        };
        let (Some(oh), Some(ow)) = (span(h + pt, pb, kh, dh, sh), span(w + pl, pr, kw, dw, sw))
        else {
            return;
        };
        let e = self
            .patches
            .entry(layer.to_string())
            .or_insert_with(|| Layer {
                sums: vec![0.0; k],
                outer: vec![0.0; k * k],
                rows: 0,
            });
        if e.sums.len() != k {
            return;
        }
        let mut patch = vec![0f64; k];
        for img in 0..n {
            for y in 0..oh {
                for xo in 0..ow {
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (y * sh + ky * dh) as isize - pt as isize;
                                let ix = (xo * sw + kx * dw) as isize - pl as isize;
                                let inside =
                                    iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w;
                                patch[(ci * kh + ky) * kw + kx] = if inside {
                                    v[((img * c + ci) * h + iy as usize) * w + ix as usize] as f64
                                } else {
                                    0.0
                                };
                            }
                        }
                    }
                    for (sum, &p) in e.sums.iter_mut().zip(&patch) {
                        *sum += p;
                    }
                    add_outer(&mut e.outer, &patch);
                    e.rows += 1;
                }
            }
        }
    }

    /// Inputs observed of `layer` (rows of a MatMul's input) and patches of a conv's.
    pub fn samples(&self, layer: &str) -> (u64, u64) {
        (
            self.layers.get(layer).map_or(0, |e| e.rows),
            self.patches.get(layer).map_or(0, |e| e.rows),
        )
    }

    /// `E[p p^T]` of a conv's patches (`K x K`, `K = C * KH * KW`).
    pub fn patch_second_moment(&self, layer: &str) -> Option<Vec<f64>> {
        let e = self.patches.get(layer)?;
        (e.rows > 0).then(|| symmetric(&e.outer, e.sums.len(), e.rows))
    }

    /// Add one observed input `t` of `layer`: a conv's (channels on dim 1) or a MatMul's
    /// (features on the last dim).
    pub fn add(&mut self, layer: &str, t: &Tensor, conv: bool) {
        let Some(v) = t.as_f32() else { return };
        let s = t.shape();
        let (channels, inner) = if conv {
            if s.len() < 2 {
                return;
            }
            (s[1], s[2..].iter().product::<usize>())
        } else {
            match s.last() {
                Some(&k) if k > 0 => (k, 1),
                _ => return,
            }
        };
        if channels == 0 || v.is_empty() {
            return;
        }
        let e = self
            .layers
            .entry(layer.to_string())
            .or_insert_with(|| Layer {
                sums: vec![0.0; channels],
                outer: if self.moments && !conv && channels <= MAX_SECOND_MOMENT {
                    vec![0.0; channels * channels]
                } else {
                    vec![]
                },
                rows: 0,
            });
        if e.sums.len() != channels {
            return;
        }
        let block = channels * inner;
        for chunk in v.chunks(block) {
            for (c, sum) in e.sums.iter_mut().enumerate() {
                let part = &chunk[(c * inner).min(chunk.len())..((c + 1) * inner).min(chunk.len())];
                *sum += part.iter().map(|&x| x as f64).sum::<f64>();
            }
            if !e.outer.is_empty() && chunk.len() == channels {
                let x: Vec<f64> = chunk.iter().map(|&a| a as f64).collect();
                add_outer(&mut e.outer, &x);
            }
        }
        e.rows += (v.len() / channels) as u64;
    }

    /// The mean input per channel of `layer`.
    pub fn mean(&self, layer: &str) -> Option<Vec<f64>> {
        let e = self.layers.get(layer)?;
        (e.rows > 0).then(|| e.sums.iter().map(|x| x / e.rows as f64).collect())
    }

    /// The covariance `E[x x^T] - E[x] E[x]^T` (`K x K`, row-major, symmetric) of a MatMul's
    /// input: what a weight change costs in output variance (its mean shift is what bias
    /// correction removes).
    pub fn covariance(&self, layer: &str) -> Option<Vec<f64>> {
        let mut c = self.second_moment(layer)?;
        let mu = self.mean(layer)?;
        let k = mu.len();
        for i in 0..k {
            for j in 0..k {
                c[i * k + j] -= mu[i] * mu[j];
            }
        }
        Some(c)
    }

    /// `E[x x^T]` (`K x K`, row-major, symmetric) of a MatMul's input.
    pub fn second_moment(&self, layer: &str) -> Option<Vec<f64>> {
        let e = self.layers.get(layer)?;
        if e.outer.is_empty() || e.rows == 0 {
            return None;
        }
        Some(symmetric(&e.outer, e.sums.len(), e.rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use optc_ir::Data;

    #[test]
    fn means_and_second_moments() {
        let mut m = InputStats::new(true);
        let t = Tensor::new(vec![2, 2], Data::F32(vec![1.0, 2.0, 3.0, 6.0])).unwrap();
        m.add("l", &t, false);
        assert_eq!(m.mean("l"), Some(vec![2.0, 4.0]));
        // (x x^T of [1, 2] + of [3, 6]) / 2
        assert_eq!(m.second_moment("l"), Some(vec![5.0, 10.0, 10.0, 20.0]));
        // minus the mean's outer product [[4, 8], [8, 16]]
        assert_eq!(m.covariance("l"), Some(vec![1.0, 2.0, 2.0, 4.0]));
        let t = Tensor::new(vec![1, 2, 1, 2], Data::F32(vec![1.0, 3.0, 5.0, 7.0])).unwrap();
        m.add("c", &t, true);
        assert_eq!(m.mean("c"), Some(vec![2.0, 6.0]));
        assert_eq!(m.second_moment("c"), None);
        // Patches of a 1x2 map with a 1x2 window padded by one column on each side: three
        // positions [0, 1], [1, 2], [2, 0] of the one channel.
        let window = optc_ir::Window {
            kernel: vec![1, 2],
            strides: vec![1, 1],
            pads: vec![0, 1, 0, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        let t = Tensor::new(vec![1, 1, 1, 2], Data::F32(vec![1.0, 2.0])).unwrap();
        m.add_patches("p", &t, &window);
        // (0,1), (1,2), (2,0): E[p0^2] = 5/3, E[p0 p1] = 2/3, E[p1^2] = 5/3
        let got = m.patch_second_moment("p").unwrap();
        let want = [5.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 5.0 / 3.0];
        assert!(
            got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-12),
            "{got:?}"
        );
    }
}
