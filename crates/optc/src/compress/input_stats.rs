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
}

impl InputStats {
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
                outer: if !conv && channels <= MAX_SECOND_MOMENT {
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
                for i in 0..channels {
                    let xi = x[i];
                    let row = &mut e.outer[i * channels + i..(i + 1) * channels];
                    for (o, &xj) in row.iter_mut().zip(&x[i..]) {
                        *o += xi * xj;
                    }
                }
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
        let k = e.sums.len();
        let mut m = vec![0f64; k * k];
        for i in 0..k {
            for j in i..k {
                let v = e.outer[i * k + j] / e.rows as f64;
                m[i * k + j] = v;
                m[j * k + i] = v;
            }
        }
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use optc_ir::Data;

    #[test]
    fn means_and_second_moments() {
        let mut m = InputStats::default();
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
    }
}
