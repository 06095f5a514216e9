//! Bias correction after a lossy weight change: the output's mean shift, `(W - W')` applied
//! to the layer's mean input on the calibration sets, folded into the layer's bias so the
//! changed layer keeps the original's mean output per channel. Offered as its own alternative
//! (label `..., bias corrected`) next to the uncorrected one, so the report shows both
//! errors and the budget picks.

use optc_egraph::{egg::Id, ENode, ENodeKind, OptEGraph};
use optc_ir::{BinaryOp, Data, FusedStep, Op, Tensor};

/// The bias shift per output channel: `delta = W - W'` (in the weight's layout for `base`)
/// applied to `mean`.
pub fn shift(base: &Op, wshape: &[usize], delta: &[f32], mean: &[f64]) -> Option<Vec<f32>> {
    match base {
        Op::MatMul | Op::Gemm { trans_b: false, .. } if wshape.len() == 2 => {
            let (k, n) = (wshape[0], wshape[1]);
            (mean.len() == k).then(|| {
                (0..n)
                    .map(|j| {
                        (0..k)
                            .map(|i| delta[i * n + j] as f64 * mean[i])
                            .sum::<f64>() as f32
                    })
                    .collect()
            })
        }
        Op::Gemm { trans_b: true, .. } if wshape.len() == 2 => {
            let (n, k) = (wshape[0], wshape[1]);
            (mean.len() == k).then(|| {
                (0..n)
                    .map(|j| {
                        (0..k)
                            .map(|i| delta[j * k + i] as f64 * mean[i])
                            .sum::<f64>() as f32
                    })
                    .collect()
            })
        }
        Op::Conv { group: 1, .. } if wshape.len() >= 3 => {
            let (m, c) = (wshape[0], wshape[1]);
            let taps: usize = wshape[2..].iter().product();
            (mean.len() == c).then(|| {
                (0..m)
                    .map(|o| {
                        (0..c)
                            .map(|ci| {
                                let w = &delta[(o * c + ci) * taps..(o * c + ci + 1) * taps];
                                w.iter().map(|&x| x as f64).sum::<f64>() * mean[ci]
                            })
                            .sum::<f64>() as f32
                    })
                    .collect()
            })
        }
        _ => None,
    }
}

/// The children of `node` (whose second child is the weight, already replaced) with its bias
/// raised by `shift`: the base op's bias input (a Gemm's C of `[N]` or `[1, N]`, a conv's
/// bias), or the first fused step's Add of a constant of `shift.len()` values. `None` when
/// the layer has no such bias.
pub fn corrected_children(eg: &mut OptEGraph, node: &ENode, shift: &[f32]) -> Option<Vec<Id>> {
    let op = node.op()?;
    let (base, base_inputs, steps) = op.fused_parts(node.children.len());
    let port = match base {
        Op::Gemm { beta, .. } if base_inputs > 2 && *beta == 1.0 => Some(2),
        Op::Conv { .. } if base_inputs > 2 => Some(2),
        _ => None,
    }
    .or_else(|| match steps.first() {
        Some(FusedStep::Binary {
            op: BinaryOp::Add,
            input,
            ..
        }) => Some(*input),
        _ => None,
    })?;
    let b = optc_egraph::query::const_of(eg, *node.children.get(port)?)?;
    let v = b.as_f32()?;
    // One value per output channel, broadcast along the right axis: a conv's `[M]` bias or
    // `[.., M, 1, 1]` Add; a MatMul/Gemm's `[.., N]`.
    let s = b.shape();
    let n = shift.len();
    let only =
        |axis: usize| s.iter().enumerate().all(|(i, &d)| d == 1 || i == axis) && s[axis] == n;
    let ok = v.len() == n
        && match base {
            Op::Conv { .. } if port == 2 => s == [n],
            Op::Conv { .. } => s.len() >= 3 && only(s.len() - 3),
            _ => !s.is_empty() && only(s.len() - 1),
        };
    if !ok {
        return None;
    }
    let new: Vec<f32> = v.iter().zip(shift).map(|(a, d)| a + d).collect();
    let t = Tensor::new(b.shape().to_vec(), Data::F32(new)).ok()?;
    let c = eg.analysis.intern(t);
    let id = eg.add(ENode {
        kind: ENodeKind::Const(c),
        children: vec![],
    });
    let mut ch = node.children.clone();
    ch[port] = id;
    Some(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_is_the_removed_weights_on_the_mean_input() {
        // MatMul W [2, 3], mean input [1, 2]: removing W[1][2] = 0.5 lowers output 2's mean
        // by 0.5 * 2.
        let delta = [0.0, 0.0, 0.0, 0.0, 0.0, 0.5];
        assert_eq!(
            shift(&Op::MatMul, &[2, 3], &delta, &[1.0, 2.0]),
            Some(vec![0.0, 0.0, 1.0])
        );
    }
}
