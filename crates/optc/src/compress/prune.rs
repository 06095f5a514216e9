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

use super::bias_correction;
use super::input_stats::InputStats;
use optc_egraph::convert::Converted;
use optc_egraph::lossy::Alternative;
use optc_egraph::{egg, CostModel, ENode, OptEGraph};
use optc_ir::{Data, Op, Tensor, TensorType};

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
    let base = match op {
        Op::Fused { base, .. } => &**base,
        op => op,
    };
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

/// Add a pruned alternative per amount to every candidate layer; costs from `model`.
pub fn add_alternatives(
    conv: &mut Converted,
    layers: &[(egg::Id, ENode, String)],
    amounts: &[PruneAmount],
    means: &InputStats,
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
            let Ok(t) = Tensor::new(w.shape().to_vec(), Data::F32(pruned.clone())) else {
                continue;
            };
            let c = conv.egraph.analysis.intern(t);
            let wid = conv.egraph.add(ENode {
                kind: optc_egraph::ENodeKind::Const(c),
                children: vec![],
            });
            let mut children = node.children.clone();
            children[1] = wid;
            let enode = ENode::from_op(op.clone(), children);
            let id = conv.egraph.add(enode.clone());
            conv.egraph.union(class, id);
            let cost = sparse_aware_cost(&conv.egraph, &enode, model, &pruned);
            out.push(Alternative {
                class,
                node: enode.clone(),
                layer: name.clone(),
                label: label.clone(),
                exact_cost,
                cost,
                error: None,
            });
            // The same with the bias corrected for the removed weights' mean contribution.
            let base = match &op {
                Op::Fused { base, .. } => &**base,
                op => op,
            };
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
                    layer: name.clone(),
                    label: format!("{label}, bias corrected"),
                    exact_cost,
                    cost,
                    error: None,
                });
            }
        }
    }
    conv.egraph.rebuild();
    for a in &mut out {
        a.class = conv.egraph.find(a.class);
        let eg = &conv.egraph;
        a.node = egg::Language::map_children(a.node.clone(), |c| eg.find(c));
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
