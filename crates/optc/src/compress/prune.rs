//! Magnitude-pruning alternatives of the contractions with constant weights (`--prune F`,
//! or one global magnitude `--prune threshold=T`).
//!
//! Per layer, the fraction `F` of the weight's values smallest in magnitude become zeros
//! (unstructured: any position; ties at the threshold broken by position, so exactly
//! `round(F * len)` values are zeroed, counting values that were zero already). The pruned
//! node is an alternative of the layer's e-class like an int8 one; it pays only through the
//! sparse kernels (`optc_ir::sparsity`), so its cost is the cost model's sparse estimate and
//! a pruned layer the sparse kernel would not run faster is never chosen. Several fractions
//! (`--prune 0.5,0.7,0.9`) are several alternatives: the budget picks per layer.

use super::alternative::add_f32;
use super::bias_correction;
use super::input_stats::InputStats;
use optc_egraph::convert::Converted;
use optc_egraph::lossy::Alternative;
use optc_egraph::{egg, CostModel, ENode, OptEGraph};
use optc_ir::{Op, TensorType};

/// `w` with the `fraction` of its values smallest in magnitude set to zero.
pub fn prune_smallest(w: &[f32], fraction: f64) -> Vec<f32> {
    let zeroed = ((fraction.clamp(0.0, 1.0) * w.len() as f64).round() as usize).min(w.len());
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(a.cmp(&b)));
    let mut out = w.to_vec();
    for &i in &order[..zeroed] {
        out[i] = 0.0;
    }
    out
}

/// Estimated seconds of one e-node with its weight's sparsity (children excluded).
fn sparse_aware_cost(eg: &OptEGraph, n: &ENode, model: &CostModel, weight: &[f32]) -> f64 {
    let Some(op) = n.op() else { return 0.0 };
    let ins: Option<Vec<&TensorType>> = n.children.iter().map(|&c| eg[c].data.ty()).collect();
    let Some(ins) = ins else { return f64::INFINITY };
    let Ok(outs) = op.infer(&ins) else {
        return f64::INFINITY;
    };
    let nnz = optc_ir::sparsity::nonzeros(weight);
    model
        .sparse_op_cost(op, &ins, &outs, nnz, weight.len())
        .unwrap_or_else(|| model.op_cost(op, &ins, &outs))
}

/// Whether the layer's op may take a sparse kernel: MatMul, Gemm, an ungrouped conv.
fn prunable(op: &Op) -> bool {
    let base = op.base();
    matches!(
        base,
        Op::MatMul | Op::Gemm { .. } | Op::Conv { group: 1, .. }
    )
}

/// How much of a layer `--prune` zeroes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PruneAmount {
    /// This fraction of each layer's weights, the smallest in magnitude (`0.9`).
    Fraction(f64),
    /// Every weight below this magnitude, in every layer (`threshold=0.01`: one global
    /// threshold, so layers with many small weights lose more).
    Threshold(f64),
}

impl PruneAmount {
    /// `0.9` (a fraction in (0, 1)) or `threshold=T` (T > 0).
    pub fn parse(s: &str) -> Result<PruneAmount, String> {
        if let Some(t) = s.trim().strip_prefix("threshold=") {
            let v: f64 = t
                .trim()
                .parse()
                .map_err(|_| format!("--prune threshold '{t}' is not a number"))?;
            return if v > 0.0 && v.is_finite() {
                Ok(PruneAmount::Threshold(v))
            } else {
                Err(format!("--prune threshold {v} must be above 0"))
            };
        }
        parse_fraction(s).map(PruneAmount::Fraction)
    }

    /// `w` pruned.
    pub fn apply(self, w: &[f32]) -> Vec<f32> {
        match self {
            PruneAmount::Fraction(f) => prune_smallest(w, f),
            PruneAmount::Threshold(t) => w
                .iter()
                .map(|&v| if (v.abs() as f64) < t { 0.0 } else { v })
                .collect(),
        }
    }

    fn label(self, pruned: &[f32]) -> String {
        match self {
            PruneAmount::Fraction(f) => format!("pruned {:.0}%", 100.0 * f),
            PruneAmount::Threshold(t) => {
                let zeros = pruned.iter().filter(|v| **v == 0.0).count();
                format!(
                    "pruned |w| < {t} ({:.0}%)",
                    100.0 * zeros as f64 / pruned.len().max(1) as f64
                )
            }
        }
    }
}

/// The Cholesky factor `L` (lower, row-major) of a symmetric positive definite `n x n` `a`.
fn cholesky(mut a: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut v = a[i * n + j];
            for k in 0..j {
                v -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = v / d;
        }
    }
    Some(a)
}

/// Solve `L L^T x = b`.
fn cholesky_solve(l: &[f64], mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for i in 0..n {
        let mut v = b[i];
        for k in 0..i {
            v -= l[i * n + k] * b[k];
        }
        b[i] = v / l[i * n + i];
    }
    for i in (0..n).rev() {
        let mut v = b[i];
        for k in i + 1..n {
            v -= l[k * n + i] * b[k];
        }
        b[i] = v / l[i * n + i];
    }
    b
}

/// The kept weights re-fit by least squares so the layer's output on the calibration inputs
/// moves least (the pruning mask stays): per output, `w'_S = (C_SS + l I)^-1 (C_S: w + l w_S)` with
/// `C = E[x x^T]` of the inputs (`k x k`; a conv's patches) over `samples` inputs. The ridge
/// `l` is the mean diagonal times `0.01 + k / samples`: with fewer samples than inputs (a
/// classifier's FC layer on a few hundred calibration images) `C` is singular and the plain
/// fit would learn the calibration set; the ridge pulls it toward the pruned weights. `None`
/// when the layout is not known or the solves would be too large (about 1e10 flops).
pub fn reconstruct(
    base: &Op,
    shape: &[usize],
    w: &[f32],
    pruned: &[f32],
    c: &[f64],
    samples: u64,
) -> Option<Vec<f32>> {
    // (outputs, inputs per output, index of (output, input) in the weight)
    let (outs, k, row_major) = match base {
        Op::Conv { group: 1, .. } if shape.len() >= 3 => {
            (shape[0], shape[1..].iter().product(), true)
        }
        Op::Gemm { trans_b: true, .. } if shape.len() == 2 => (shape[0], shape[1], true),
        Op::MatMul | Op::Gemm { trans_b: false, .. } if shape.len() == 2 => {
            (shape[1], shape[0], false)
        }
        _ => return None,
    };
    if c.len() != k * k || w.len() != outs * k {
        return None;
    }
    let at = |o: usize, j: usize| if row_major { o * k + j } else { j * outs + o };
    // Outputs with the same kept inputs (all of them, after channel pruning) share one
    // factorization.
    let kept: Vec<Vec<usize>> = (0..outs)
        .map(|o| (0..k).filter(|&j| pruned[at(o, j)] != 0.0).collect())
        .collect();
    let mut distinct: Vec<&Vec<usize>> = kept.iter().collect();
    distinct.sort();
    distinct.dedup();
    let work: f64 = distinct
        .iter()
        .map(|s| (s.len() as f64).powi(3) / 3.0)
        .sum::<f64>()
        + kept
            .iter()
            .map(|s| (s.len() as f64).powi(2) * 2.0)
            .sum::<f64>();
    if work > 1e10 {
        return None;
    }
    let mean_diag = (0..k).map(|i| c[i * k + i]).sum::<f64>() / k.max(1) as f64;
    let ridge = mean_diag * (0.01 + k as f64 / samples.max(1) as f64) + 1e-12;
    let mut factors: std::collections::HashMap<&Vec<usize>, Option<Vec<f64>>> =
        std::collections::HashMap::new();
    let mut out = pruned.to_vec();
    for (o, keep) in kept.iter().enumerate() {
        let s = keep.len();
        if s == 0 || s == k {
            continue;
        }
        let l = factors.entry(keep).or_insert_with(|| {
            let mut a = vec![0f64; s * s];
            for (p, &i) in keep.iter().enumerate() {
                for (q, &j) in keep.iter().enumerate() {
                    a[p * s + q] = c[i * k + j];
                }
                a[p * s + p] += ridge;
            }
            cholesky(a, s)
        });
        let Some(l) = l else { continue };
        // Minimize the output error plus `ridge |w'_S - w_S|^2`: the ridge pulls toward
        // the kept weights as they were, not toward zero.
        let b: Vec<f64> = keep
            .iter()
            .map(|&i| {
                (0..k)
                    .map(|j| c[i * k + j] * w[at(o, j)] as f64)
                    .sum::<f64>()
                    + ridge * w[at(o, i)] as f64
            })
            .collect();
        let x = cholesky_solve(l, b, s);
        for (p, &i) in keep.iter().enumerate() {
            out[at(o, i)] = x[p] as f32;
        }
    }
    Some(out)
}

/// `node` with its weight (input 1) replaced by the f32 `values` of `shape`, added to the
/// e-graph and joined to `class`.
fn join_with_weight(
    conv: &mut Converted,
    class: egg::Id,
    node: &ENode,
    shape: &[usize],
    values: Vec<f32>,
) -> Option<ENode> {
    let mut children = node.children.clone();
    children[1] = add_f32(&mut conv.egraph, shape.to_vec(), values)?;
    let enode = ENode::from_op(node.op()?.clone(), children);
    let id = conv.egraph.add(enode.clone());
    conv.egraph.union(class, id);
    Some(enode)
}

/// Add a pruned alternative per amount to every candidate layer; costs from `model`.
pub fn add_alternatives(
    conv: &mut Converted,
    layers: &[(egg::Id, ENode, String)],
    amounts: &[PruneAmount],
    means: &InputStats,
    refit: bool,
    model: &CostModel,
) -> Vec<Alternative> {
    let mut out = vec![];
    for (class, node, name) in layers.iter().cloned() {
        let Some(op) = node.op().cloned() else {
            continue;
        };
        if !prunable(&op) {
            continue;
        }
        let Some(w) = optc_egraph::query::const_of(&conv.egraph, node.children[1]) else {
            continue;
        };
        let Some(values) = w.as_f32() else { continue };
        let exact_cost = sparse_aware_cost(&conv.egraph, &node, model, values);
        for &f in amounts {
            let pruned = f.apply(values);
            if pruned == values {
                continue;
            }
            let label = f.label(&pruned);
            let Some(enode) = join_with_weight(conv, class, &node, w.shape(), pruned.clone())
            else {
                continue;
            };
            let cost = sparse_aware_cost(&conv.egraph, &enode, model, &pruned);
            let first = out.len();
            out.push(Alternative {
                class,
                node: enode.clone(),
                also: vec![],
                layer: name.clone(),
                label: label.clone(),
                exact_cost,
                cost,
                error: None,
            });
            // The same with the bias corrected for the removed weights' mean contribution.
            let base = op.base();
            let delta: Vec<f32> = values.iter().zip(&pruned).map(|(a, b)| a - b).collect();
            let corrected = means
                .mean(&name)
                .and_then(|m| bias_correction::shift(base, w.shape(), &delta, &m))
                .and_then(|sh| bias_correction::corrected_children(&mut conv.egraph, &enode, &sh));
            if let Some(ch) = corrected {
                let e2 = ENode::from_op(op.clone(), ch);
                let id = conv.egraph.add(e2.clone());
                conv.egraph.union(class, id);
                out.push(Alternative {
                    class,
                    node: e2,
                    also: vec![],
                    layer: name.clone(),
                    label: format!("{label}, bias corrected"),
                    exact_cost,
                    cost,
                    error: None,
                });
            }
            // The kept weights re-fit to the calibration inputs (same zeros, same speed).
            let (rows, patches) = means.samples(&name);
            let moment = match base {
                Op::Conv { .. } => means.patch_second_moment(&name).map(|c| (c, patches)),
                _ => means.second_moment(&name).map(|c| (c, rows)),
            }
            .filter(|_| refit);
            let refit =
                moment.and_then(|(c, n)| reconstruct(base, w.shape(), values, &pruned, &c, n));
            let refit = refit.and_then(|r| join_with_weight(conv, class, &node, w.shape(), r));
            if let Some(e3) = refit {
                out.push(Alternative {
                    class,
                    node: e3,
                    also: vec![],
                    layer: name.clone(),
                    label: format!("{label}, reconstructed"),
                    exact_cost,
                    cost,
                    error: None,
                });
            }
            // The most accurate variant first: without a budget (no errors measured) the
            // choice among equally fast alternatives takes the first.
            out[first..].reverse();
        }
    }
    conv.egraph.rebuild();
    for a in &mut out {
        a.canonicalize(&conv.egraph);
    }
    out
}

/// Parse one `--prune` fraction, in (0, 1).
pub fn parse_fraction(p: &str) -> Result<f64, String> {
    let f: f64 = p
        .trim()
        .parse()
        .map_err(|_| format!("'{p}' is not a number (e.g. --prune 0.9 or 0.5,0.7,0.9)"))?;
    if f > 0.0 && f < 1.0 {
        Ok(f)
    } else {
        Err(format!("prune fraction {f} must be between 0 and 1"))
    }
}

/// Parse `--prune`: fractions in (0, 1), comma-separated.
pub fn parse_fractions(s: &str) -> Result<Vec<f64>, String> {
    s.split(',').map(parse_fraction).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(w - w')^T C (w - w')` per output, summed: the output error the reconstruction
    /// minimizes.
    fn output_error(w: &[f32], v: &[f32], c: &[f64], outs: usize, k: usize) -> f64 {
        (0..outs)
            .map(|o| {
                let d: Vec<f64> = (0..k)
                    .map(|j| (w[o * k + j] - v[o * k + j]) as f64)
                    .collect();
                (0..k)
                    .map(|i| (0..k).map(|j| d[i] * c[i * k + j] * d[j]).sum::<f64>())
                    .sum::<f64>()
            })
            .sum()
    }

    #[test]
    fn reconstruction_keeps_the_mask_and_lowers_the_output_error() {
        // Gemm (transB): 3 outputs of 4 inputs; correlated inputs.
        let (outs, k) = (3, 4);
        let w: Vec<f32> = vec![
            0.9, -0.2, 0.4, 0.1, -0.3, 0.8, 0.05, -0.6, 0.2, 0.2, -0.7, 0.5,
        ];
        let c: Vec<f64> = (0..k * k)
            .map(|i| {
                let (a, b) = (i / k, i % k);
                if a == b {
                    1.0
                } else {
                    0.6
                }
            })
            .collect();
        let pruned = prune_smallest(&w, 0.5);
        let op = Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: true,
        };
        let r = reconstruct(&op, &[outs, k], &w, &pruned, &c, 1 << 20).unwrap();
        for (a, b) in pruned.iter().zip(&r) {
            assert_eq!(*a == 0.0, *b == 0.0, "the mask stays");
        }
        let (before, after) = (
            output_error(&w, &pruned, &c, outs, k),
            output_error(&w, &r, &c, outs, k),
        );
        assert!(after < 0.8 * before, "{after} vs {before}");
        // Uncorrelated inputs: the kept weights are already the best fit.
        let eye: Vec<f64> = (0..k * k)
            .map(|i| f64::from(u8::from(i / k == i % k)))
            .collect();
        let r = reconstruct(&op, &[outs, k], &w, &pruned, &eye, 1 << 20).unwrap();
        assert!(r.iter().zip(&pruned).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn prunes_the_smallest_magnitudes() {
        let w = [0.5, -0.1, 0.0, 2.0, -3.0, 0.2, 0.1, -0.2];
        assert_eq!(
            prune_smallest(&w, 0.5),
            vec![0.5, 0.0, 0.0, 2.0, -3.0, 0.0, 0.0, -0.2]
        );
        assert_eq!(prune_smallest(&w, 0.0), w.to_vec());
        assert!(prune_smallest(&w, 1.0).iter().all(|&v| v == 0.0));
        assert_eq!(parse_fractions("0.5, 0.9").unwrap(), vec![0.5, 0.9]);
        let t = PruneAmount::parse("threshold=0.15").unwrap();
        assert_eq!(t, PruneAmount::Threshold(0.15));
        assert_eq!(t.apply(&w), vec![0.5, 0.0, 0.0, 2.0, -3.0, 0.2, 0.0, -0.2]);
        assert!(PruneAmount::parse("threshold=-1").is_err());
        assert_eq!(PruneAmount::parse("0.7"), Ok(PruneAmount::Fraction(0.7)));
        assert!(parse_fractions("1.5").is_err());
        assert!(parse_fractions("x").is_err());
    }
}
