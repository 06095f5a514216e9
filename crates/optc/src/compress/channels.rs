//! Structured channel pruning (`--prune-channels F`): output channels of a layer removed with
//! the consumer's matching input channels, so both tensors physically shrink.
//!
//! A dependency group here is a chain: a producer `P` (a conv, Gemm or MatMul with constant
//! weights, its bias and per-channel fused steps), then only per-channel ops (pools,
//! elementwise unary ops, a flatten of `[N, C, H, W]` into `[N, C*H*W]`), then a consumer `B`
//! (an ungrouped conv, or a Gemm/MatMul with constant weights), every value in between used
//! once. The fraction `F` of `P`'s output channels with the smallest L1 weight norm goes, with
//! the bias and per-channel constants that follow them and `B`'s input channels (features,
//! after a flatten) that read them. The alternative joins `B`'s class: `B'(chain'(P'(x)))`.
//! Groups that branch (residual adds, concat) are not pruned yet.

use super::alternative::{add_f32, node_cost};
use super::input_stats::InputStats;
use super::prune::reconstruct;
use optc_egraph::convert::Converted;
use optc_egraph::lossy::Alternative;
use optc_egraph::{egg, CostModel, ENode, OptEGraph};
use optc_ir::{Data, Op, Tensor, TensorType};
use std::collections::HashMap;

/// Users of each class (e-nodes naming it as a child, graph outputs).
fn users(conv: &Converted) -> HashMap<egg::Id, usize> {
    let eg = &conv.egraph;
    let mut n: HashMap<egg::Id, usize> = HashMap::new();
    for class in eg.classes() {
        for node in &class.nodes {
            for &c in &node.children {
                *n.entry(eg.find(c)).or_default() += 1;
            }
        }
    }
    for (_, r) in &conv.roots {
        *n.entry(eg.find(*r)).or_default() += 1;
    }
    n
}

fn base_of(op: &Op) -> &Op {
    match op {
        Op::Fused { base, .. } => base,
        op => op,
    }
}

/// The only node of a class (alternatives are added to a graph converted without rewrites).
fn only_node(eg: &OptEGraph, id: egg::Id) -> Option<ENode> {
    let class = &eg[id];
    (class.nodes.len() == 1).then(|| class.nodes[0].clone())
}

fn ty(eg: &OptEGraph, id: egg::Id) -> Option<TensorType> {
    eg[id].data.ty().cloned()
}

fn f32_const(eg: &OptEGraph, id: egg::Id) -> Option<std::sync::Arc<Tensor>> {
    let t = optc_egraph::query::const_of(eg, id)?;
    t.as_f32()?;
    Some(t)
}

/// Keep the `keep` (sorted) entries of `axis` of a row-major tensor.
fn slice_axis(t: &Tensor, axis: usize, keep: &[usize]) -> Option<(Vec<usize>, Vec<f32>)> {
    let v = t.as_f32()?;
    let s = t.shape();
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * keep.len() * inner);
    for o in 0..outer {
        for &k in keep {
            let at = (o * s[axis] + k) * inner;
            out.extend_from_slice(&v[at..at + inner]);
        }
    }
    let mut shape = s.to_vec();
    shape[axis] = keep.len();
    Some((shape, out))
}

/// The producer's output channels: count and the L1 norm of each one's weights.
fn channel_norms(base: &Op, w: &Tensor) -> Option<Vec<f64>> {
    let v = w.as_f32()?;
    let s = w.shape();
    match base {
        Op::Conv { group: 1, .. } | Op::Gemm { trans_b: true, .. } => {
            let m = s[0];
            let per = v.len() / m.max(1);
            Some(
                (0..m)
                    .map(|c| {
                        v[c * per..(c + 1) * per]
                            .iter()
                            .map(|x| x.abs() as f64)
                            .sum()
                    })
                    .collect(),
            )
        }
        Op::MatMul | Op::Gemm { trans_b: false, .. } if s.len() == 2 => {
            let (k, n) = (s[0], s[1]);
            Some(
                (0..n)
                    .map(|c| (0..k).map(|r| v[r * n + c].abs() as f64).sum())
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Axis of a producer's weight holding its output channels, and of a consumer's weight
/// holding its input channels (features).
fn weight_axes(base: &Op) -> Option<(usize, usize)> {
    match base {
        Op::Conv { group: 1, .. } => Some((0, 1)),
        Op::Gemm {
            trans_a: false,
            trans_b: true,
            ..
        } => Some((0, 1)),
        Op::Gemm {
            trans_a: false,
            trans_b: false,
            ..
        }
        | Op::MatMul => Some((1, 0)),
        _ => None,
    }
}

/// The producer with only `keep` output channels: its weight, its base bias and every
/// per-channel constant of its fused steps sliced. `None` when an input is not a constant
/// per channel (e.g. a residual).
fn pruned_producer(eg: &mut OptEGraph, p: &ENode, keep: &[usize], m: usize) -> Option<ENode> {
    let op = p.op()?.clone();
    let base = base_of(&op).clone();
    let (out_axis, _) = weight_axes(&base)?;
    let mut children = p.children.clone();
    let w = f32_const(eg, p.children[1])?;
    let (ws, wv) = slice_axis(&w, out_axis, keep)?;
    children[1] = add_f32(eg, ws, wv)?;
    for (i, &c) in p.children.iter().enumerate().skip(2) {
        let t = f32_const(eg, c)?;
        if t.numel() == 1 {
            continue;
        }
        if t.numel() != m {
            return None;
        }
        // The channel axis of a constant broadcast against the output: its one non-1 dim.
        let axis = t.shape().iter().position(|&d| d == m)?;
        let (s, v) = slice_axis(&t, axis, keep)?;
        children[i] = add_f32(eg, s, v)?;
    }
    Some(ENode::from_op(op, children))
}

/// Add a channel-pruned alternative per fraction to every chain's consumer; also returns the
/// chains' producer classes (a group's alternative rebuilds its producer, so the producer's
/// own alternatives cannot combine with it).
pub fn add_alternatives(
    conv: &mut Converted,
    layers: &[(egg::Id, ENode, String)],
    fractions: &[f64],
    means: &InputStats,
    refit: bool,
    model: &CostModel,
) -> (Vec<Alternative>, Vec<egg::Id>) {
    let mut out = vec![];
    let uses = users(conv);
    // The groups first, on the graph as converted (every class one node); a layer is the
    // consumer of at most one group and then not the producer of another (the two
    // alternatives would each assume the other layer unchanged).
    let mut groups: Vec<(egg::Id, ENode, String, Vec<ENode>, ENode, egg::Id)> = vec![];
    let mut consumers: Vec<egg::Id> = vec![];
    let mut order: Vec<&(egg::Id, ENode, String)> = layers.iter().collect();
    order.sort_by_key(|l| usize::from(l.0));
    for (class, node, name) in order.into_iter().cloned() {
        let eg = &conv.egraph;
        let Some(bop) = node.op().cloned() else {
            continue;
        };
        if weight_axes(base_of(&bop)).is_none() {
            continue;
        }
        let mut chain: Vec<ENode> = vec![];
        let mut cur = eg.find(node.children[0]);
        let producer = loop {
            if uses.get(&cur).copied().unwrap_or(0) != 1 {
                break None;
            }
            let Some(n) = only_node(eg, cur) else {
                break None;
            };
            match n.op() {
                Some(op)
                    if weight_axes(base_of(op)).is_some()
                        && f32_const(eg, n.children[1]).is_some() =>
                {
                    break Some((cur, n))
                }
                Some(Op::MaxPool { .. } | Op::AveragePool { .. } | Op::Unary(_)) => {}
                Some(Op::Reshape { shape }) => {
                    // Only a flatten [N, C, *sp] -> [N, C * prod(sp)].
                    let Some(src) = ty(eg, n.children[0]) else {
                        break None;
                    };
                    let flat = shape.len() == 2
                        && src.shape.len() >= 3
                        && shape[0] == src.shape[0]
                        && shape[1] == src.shape[1..].iter().product::<usize>();
                    if !flat
                        || chain
                            .iter()
                            .any(|c: &ENode| matches!(c.op(), Some(Op::Reshape { .. })))
                    {
                        break None;
                    }
                }
                _ => break None,
            }
            chain.push(n.clone());
            cur = eg.find(n.children[0]);
        };
        let Some((pclass, p)) = producer else {
            continue;
        };
        if consumers.contains(&pclass) {
            continue;
        }
        consumers.push(eg.find(class));
        groups.push((class, node, name, chain, p, pclass));
    }
    let producers: Vec<egg::Id> = groups.iter().map(|g| g.5).collect();
    for (class, node, name, chain, p, _) in groups {
        let eg = &conv.egraph;
        let bop = node.op().cloned().expect("an op");
        let bbase = base_of(&bop).clone();
        let Some((_, in_axis)) = weight_axes(&bbase) else {
            continue;
        };
        let producer = Some(p);
        let Some(p) = producer else { continue };
        let pop = p.op().cloned().expect("an op");
        let pbase = base_of(&pop).clone();
        let Some(pw) = f32_const(eg, p.children[1]) else {
            continue;
        };
        let Some(norms) = channel_norms(&pbase, &pw) else {
            continue;
        };
        let m = norms.len();
        let Some(bw) = f32_const(eg, node.children[1]) else {
            continue;
        };
        // Consumer input features per producer channel (a flatten spreads each over H*W).
        let per = bw.shape()[in_axis] / m.max(1);
        if per == 0 || per * m != bw.shape()[in_axis] {
            continue;
        }
        if chain
            .iter()
            .any(|c| matches!(c.op(), Some(Op::Reshape { .. })))
            != (per > 1)
        {
            continue;
        }
        let exact_cost: f64 = std::iter::once(&p)
            .chain(&chain)
            .chain(std::iter::once(&node))
            .map(|n| node_cost(&conv.egraph, n, model))
            .sum();
        for &f in fractions {
            let keep_n = ((1.0 - f) * m as f64).round().max(1.0) as usize;
            if keep_n >= m {
                continue;
            }
            let mut order: Vec<usize> = (0..m).collect();
            order.sort_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
            let mut keep: Vec<usize> = order[..keep_n].to_vec();
            keep.sort_unstable();
            let eg = &mut conv.egraph;
            let Some(p2) = pruned_producer(eg, &p, &keep, m) else {
                break;
            };
            let mut cost = node_cost(eg, &p2, model);
            let mut below = eg.add(p2);
            // The chain again, from the producer up, on the narrower tensors.
            let mut ok = true;
            for c in chain.iter().rev() {
                let op = match c.op() {
                    Some(Op::Reshape { shape }) => Op::Reshape {
                        shape: vec![shape[0], shape[1] / m * keep_n],
                    },
                    Some(op) => op.clone(),
                    None => {
                        ok = false;
                        break;
                    }
                };
                let mut ch = c.children.clone();
                ch[0] = below;
                let n2 = ENode::from_op(op, ch);
                cost += node_cost(eg, &n2, model);
                below = eg.add(n2);
            }
            if !ok {
                continue;
            }
            let feats: Vec<usize> = keep
                .iter()
                .flat_map(|&c| (c * per..(c + 1) * per).collect::<Vec<_>>())
                .collect();
            // The consumer's weights on the kept inputs: as they are, and re-fit by least
            // squares to its inputs' second moment (the removed channels' share taken over
            // by the kept ones, where they correlate).
            let (rows, patches) = means.samples(&name);
            let moment = match &bbase {
                Op::Conv { .. } => means.patch_second_moment(&name).map(|c| (c, patches)),
                _ => means.second_moment(&name).map(|c| (c, rows)),
            }
            .filter(|_| refit);
            let refit = moment.and_then(|(c, samples)| {
                let bv = bw.as_f32()?;
                let outer: usize = bw.shape()[..in_axis].iter().product();
                let inner: usize = bw.shape()[in_axis + 1..].iter().product();
                let n_in = bw.shape()[in_axis];
                let mut masked = bv.to_vec();
                for o in 0..outer {
                    for j in 0..n_in {
                        if feats.binary_search(&j).is_err() {
                            let at = (o * n_in + j) * inner;
                            masked[at..at + inner].fill(0.0);
                        }
                    }
                }
                let r = reconstruct(&bbase, bw.shape(), bv, &masked, &c, samples)?;
                Tensor::new(bw.shape().to_vec(), Data::F32(r)).ok()
            });
            // The re-fit one first: without a budget the first of equally fast ones is taken.
            let mut variants = vec![];
            if let Some(t) = refit {
                variants.push((std::sync::Arc::new(t), ", reconstructed"));
            }
            variants.push((bw.clone(), ""));
            for (weights, suffix) in variants {
                let Some((bs, bv)) = slice_axis(&weights, in_axis, &feats) else {
                    continue;
                };
                let Some(wid) = add_f32(eg, bs, bv) else {
                    continue;
                };
                let mut ch = node.children.clone();
                ch[0] = below;
                ch[1] = wid;
                let b2 = ENode::from_op(bop.clone(), ch);
                let ins: Option<Vec<&TensorType>> =
                    b2.children.iter().map(|&c| eg[c].data.ty()).collect();
                let same = ins
                    .and_then(|ins| b2.op()?.infer(&ins).ok())
                    .is_some_and(|o| Some(&o[0]) == eg[class].data.ty());
                if !same {
                    continue;
                }
                let total = cost + node_cost(eg, &b2, model);
                let id = eg.add(b2.clone());
                eg.union(class, id);
                out.push(Alternative {
                    class,
                    node: b2,
                    layer: name.clone(),
                    label: format!(
                        "channels pruned {:.0}% ({keep_n} of {m} kept){suffix}",
                        100.0 * f
                    ),
                    exact_cost,
                    cost: total,
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
    let producers = producers.iter().map(|&p| conv.egraph.find(p)).collect();
    (out, producers)
}
