//! int8 alternatives of the contractions with constant weights (`--quantize int8`).
//!
//! Weights: symmetric per output channel, `scale = max |w| / qmax`, `q = round_half_even(w /
//! scale)`, with `qmax` 127 (8-bit) or 63 (7-bit). 7-bit weights can never saturate the
//! AVX2 kernels' `vpmaddubsw` pair sums (`255 * (63 + 63) < 32767`), so every layer gets the
//! fast scheme; 8-bit weights halve the rounding error but a layer whose packed pairs could
//! saturate takes an exact scheme about 0.75x as fast. Both are alternatives, and the budget
//! decides per layer.
//!
//! Activations: dynamic (scale per tensor at run time) for MatMul/Gemm, the transformer
//! case; static for convs, from the calibration data's range of the conv's input (min-max).

use super::alternative::node_cost;
use optc_egraph::convert::Converted;
use optc_egraph::lossy::Alternative;
use optc_egraph::rules::{add_build, Build};
use optc_egraph::{CostModel, ENode, OptEGraph};
use optc_ir::{ActivationQuantization, Data, FusedStep, Op, QuantParams, Tensor, TensorType};
use std::collections::HashMap;

/// Bits of the weights of an alternative.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightBits {
    Eight,
    Seven,
}

impl WeightBits {
    fn qmax(self) -> f32 {
        match self {
            WeightBits::Eight => 127.0,
            WeightBits::Seven => 63.0,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            WeightBits::Eight => "int8 (8-bit weights)",
            WeightBits::Seven => "int8 (7-bit weights)",
        }
    }
}

/// `w` (`channels` rows of `per` values each) quantized per row: the i8 values and the
/// scale of each row.
pub fn quantize_rows(w: &[f32], channels: usize, bits: WeightBits) -> (Vec<i8>, Vec<f32>) {
    let per = w.len() / channels.max(1);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(channels);
    for c in 0..channels {
        let row = &w[c * per..(c + 1) * per];
        let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if m > 0.0 && m.is_finite() {
            m / bits.qmax()
        } else {
            1.0
        };
        for &v in row {
            q.push(
                (v / scale)
                    .round_ties_even()
                    .clamp(-bits.qmax(), bits.qmax()) as i8,
            );
        }
        scales.push(scale);
    }
    (q, scales)
}

/// A contraction with constant weights that has an int8 alternative.
struct Layer {
    /// The op (a Conv, Gemm or MatMul) and, when fused, its steps and base input count.
    base: Op,
    base_inputs: usize,
    steps: Option<Vec<FusedStep>>,
    children: Vec<egg::Id>,
}

use optc_egraph::egg;

fn layer_of(eg: &OptEGraph, n: &ENode) -> Option<Layer> {
    let op = n.op()?;
    let (base, base_inputs, steps) = match op {
        Op::Fused {
            base,
            base_inputs,
            steps,
        } => ((**base).clone(), *base_inputs, Some(steps.clone())),
        op => (op.clone(), n.children.len(), None),
    };
    let weight = *n.children.get(1)?;
    eg[weight].data.konst?;
    let ok = match &base {
        Op::Conv { .. } | Op::MatMul => true,
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            ..
        } => *alpha == 1.0 && (*beta == 1.0 || base_inputs == 2) && !trans_a,
        _ => false,
    };
    ok.then_some(Layer {
        base,
        base_inputs,
        steps,
        children: n.children.clone(),
    })
}

fn f32_tensor(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
    Tensor::new(shape, Data::F32(v)).expect("length matches")
}

/// The int8 version of `layer` with `bits` weights, as a build, and whether its weights pair
/// safely; `range`: the activation range of a conv's input (static quantization).
fn int8_build(
    eg: &OptEGraph,
    layer: &Layer,
    bits: WeightBits,
    range: Option<(f32, f32)>,
) -> Option<(Build, bool)> {
    let w = optc_egraph::query::const_of(eg, layer.children[1])?;
    let wv = w.as_f32()?;
    let class_ty = |c: egg::Id| eg[c].data.ty().cloned();
    let x_ty: TensorType = class_ty(layer.children[0])?;
    if x_ty.dtype != optc_ir::DType::F32 {
        return None;
    }
    // The bias (a constant per output channel) when the op has one.
    let bias_of = |idx: usize, n: usize| -> Option<Option<Tensor>> {
        if layer.base_inputs <= idx {
            return Some(None);
        }
        let b = optc_egraph::query::const_of(eg, layer.children[idx])?;
        let v = b.as_f32()?;
        match v.len() {
            1 => Some(Some(f32_tensor(vec![n], vec![v[0]; n]))),
            l if l == n && b.shape().iter().rev().skip(1).all(|&d| d == 1) => {
                Some(Some(f32_tensor(vec![n], v.to_vec())))
            }
            _ => None,
        }
    };
    let (op, wq_shape, channels, rows_of_w, bias, activation): (
        Op,
        Vec<usize>,
        usize,
        Vec<f32>,
        _,
        _,
    ) = match &layer.base {
        Op::Conv { window, group } => {
            let m = w.shape()[0];
            let bias = bias_of(2, m)?;
            let (lo, hi) = range?;
            (
                Op::QuantizedConv {
                    window: window.clone(),
                    group: *group,
                    activation: ActivationQuantization::Static,
                },
                w.shape().to_vec(),
                m,
                wv.to_vec(),
                bias,
                Some(QuantParams::from_range(lo.min(0.0), hi.max(0.0))),
            )
        }
        Op::MatMul | Op::Gemm { .. } => {
            let trans_b = matches!(layer.base, Op::Gemm { trans_b: true, .. });
            if w.shape().len() != 2 {
                return None;
            }
            let (k, n) = if trans_b {
                (w.shape()[1], w.shape()[0])
            } else {
                (w.shape()[0], w.shape()[1])
            };
            // Rows per output column (n rows of k values) for the per-channel scales.
            let mut rows = vec![0f32; k * n];
            for kk in 0..k {
                for nn in 0..n {
                    rows[nn * k + kk] = if trans_b {
                        wv[nn * k + kk]
                    } else {
                        wv[kk * n + nn]
                    };
                }
            }
            let bias = bias_of(2, n)?;
            (
                Op::QuantizedMatMul {
                    activation: ActivationQuantization::Dynamic,
                },
                vec![k, n],
                n,
                rows,
                bias,
                None,
            )
        }
        _ => return None,
    };
    let (q, scales) = quantize_rows(&rows_of_w, channels, bits);
    // The op's weight layout: conv [M, C/g, k...] is the row layout; matmul wants [K, N].
    let wq: Vec<i8> = match &layer.base {
        Op::Conv { .. } => q,
        _ => {
            let (k, n) = (wq_shape[0], wq_shape[1]);
            let mut t = vec![0i8; k * n];
            for nn in 0..n {
                for kk in 0..k {
                    t[kk * n + nn] = q[nn * k + kk];
                }
            }
            t
        }
    };
    let wq = Tensor::new(wq_shape, Data::I8(wq)).ok()?;
    // The pairing rule of the x64 kernels (the exact 16-bit scheme otherwise).
    let safe = optc_codegen::pairs_never_saturate(&op, &wq);
    let mut children = vec![
        Build::Class(layer.children[0]),
        Build::Const(wq),
        Build::Const(f32_tensor(vec![channels], scales)),
    ];
    if let Some(p) = activation {
        children.push(Build::Const(f32_tensor(vec![], vec![p.scale])));
        children.push(Build::Const(
            Tensor::new(vec![], Data::U8(vec![p.zero])).ok()?,
        ));
    }
    if let Some(b) = bias {
        children.push(Build::Const(b));
    }
    let build = match &layer.steps {
        None => Build::Node(op, children),
        Some(steps) => {
            let new_bi = children.len();
            let delta = new_bi as isize - layer.base_inputs as isize;
            let steps = steps
                .iter()
                .map(|s| match s {
                    FusedStep::Binary { op, input, swap } => FusedStep::Binary {
                        op: *op,
                        input: (*input as isize + delta) as usize,
                        swap: *swap,
                    },
                    u => u.clone(),
                })
                .collect();
            for &c in &layer.children[layer.base_inputs..] {
                children.push(Build::Class(c));
            }
            Build::Node(
                Op::Fused {
                    base: Box::new(op),
                    base_inputs: new_bi,
                    steps,
                },
                children,
            )
        }
    };
    Some((build, safe))
}

/// What each candidate layer computes, by layer name: `conv 3x3/2 64->128` (kernel, stride
/// when not 1, channels, groups when not 1) or `matmul 384x1536` (the weight's K x N); a
/// fused layer's name is usually its last step's (`.../relu/Relu`), this says what it is.
pub fn descriptions(conv: &Converted) -> HashMap<String, String> {
    let eg = &conv.egraph;
    let mut out = HashMap::new();
    for (_, node, name) in candidates(conv) {
        let Some(layer) = layer_of(eg, &node) else {
            continue;
        };
        let Some(w) = eg[layer.children[1]].data.ty() else {
            continue;
        };
        let what = match &layer.base {
            Op::Conv { window, group } => {
                let k: Vec<String> = window.kernel.iter().map(|d| d.to_string()).collect();
                let mut d = format!("conv {}", k.join("x"));
                if window.strides.iter().any(|&s| s != 1) {
                    let s: Vec<String> = window.strides.iter().map(|d| d.to_string()).collect();
                    d += &format!("/{}", s.join("x"));
                }
                d += &format!(" {}->{}", w.shape[1] * group, w.shape[0]);
                if *group > 1 {
                    d += &format!(" groups {group}");
                }
                d
            }
            Op::Gemm { trans_b: true, .. } => format!("matmul {}x{}", w.shape[1], w.shape[0]),
            _ => format!(
                "matmul {}",
                w.shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
            ),
        };
        out.insert(name, what);
    }
    out
}

/// The layers of a converted graph that can take an int8 alternative, by class, with the
/// class's node and its name.
pub fn candidates(conv: &Converted) -> Vec<(egg::Id, ENode, String)> {
    let eg = &conv.egraph;
    let mut out = vec![];
    for class in eg.classes() {
        for n in &class.nodes {
            if layer_of(eg, n).is_some() {
                let name = conv.names.get(&class.id).cloned().unwrap_or_default();
                out.push((class.id, n.clone(), name));
                break;
            }
        }
    }
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

/// The activation ranges calibration observed at a conv's input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ActivationRange {
    /// The smallest and largest value seen.
    pub min_max: (f32, f32),
    /// The 0.01th and 99.99th percentiles (outliers clipped: a finer step for the rest), when
    /// they are narrower than `min_max`.
    pub percentile: Option<(f32, f32)>,
    /// The range whose quantized histogram is closest to the observed one (least KL
    /// divergence, `entropy_threshold`), when it is narrower than `min_max`.
    pub entropy: Option<(f32, f32)>,
}

/// Add the int8 alternatives of every candidate layer to the e-graph: 7-bit and 8-bit weights
/// (the 8-bit one only when it differs), and for convs one per activation range (min-max,
/// percentile, entropy). `ranges`: activation ranges of conv inputs by layer name (convs without one
/// get none). Costs from `model`; an 8-bit layer whose pairs could saturate runs at the exact
/// 16-bit scheme's rate, unless the target sums with VNNI (`dot_product`), where no weight
/// can saturate and 8-bit weights are the only alternative.
pub fn add_alternatives(
    conv: &mut Converted,
    ranges: &HashMap<String, ActivationRange>,
    model: &CostModel,
    dot_product: bool,
) -> Vec<Alternative> {
    let mut out = vec![];
    for (class, node, name) in candidates(conv) {
        let Some(layer) = layer_of(&conv.egraph, &node) else {
            continue;
        };
        let exact_cost = node_cost(&conv.egraph, &node, model);
        let observed = ranges.get(&name);
        let mut variants: Vec<(Option<(f32, f32)>, &str)> = vec![(observed.map(|r| r.min_max), "")];
        if let Some(p) = observed.and_then(|r| r.percentile) {
            variants.push((Some(p), ", percentile range"));
        }
        if let Some(p) = observed.and_then(|r| r.entropy) {
            variants.push((Some(p), ", entropy range"));
        }
        let mut builds = vec![];
        for (range, suffix) in variants {
            // 8-bit weights that pair safely are as fast as 7-bit ones and more accurate:
            // then they are the only alternative.
            let eight = int8_build(&conv.egraph, &layer, WeightBits::Eight, range)
                .map(|(b, safe)| (b, safe || dot_product));
            match eight {
                Some((b, true)) => builds.push((WeightBits::Eight, suffix, b, true)),
                Some((b, false)) => {
                    if let Some((b7, s7)) =
                        int8_build(&conv.egraph, &layer, WeightBits::Seven, range)
                    {
                        builds.push((WeightBits::Seven, suffix, b7, s7));
                    }
                    builds.push((WeightBits::Eight, suffix, b, false));
                }
                None => {}
            }
        }
        for (bits, suffix, build, safe) in builds {
            let Build::Node(op, ch) = &build else {
                continue;
            };
            let children: Vec<egg::Id> =
                ch.iter().map(|b| add_build(&mut conv.egraph, b)).collect();
            let enode = ENode::from_op(op.clone(), children);
            let id = conv.egraph.add(enode.clone());
            conv.egraph.union(class, id);
            let mut cost = node_cost(&conv.egraph, &enode, model);
            if !safe {
                cost *= model.int8_ops_per_s / model.int8_exact_pairs_ops_per_s;
            }
            out.push(Alternative {
                class,
                node: enode,
                also: vec![],
                layer: name.clone(),
                label: if safe {
                    format!("{}{suffix}", bits.label())
                } else {
                    format!(
                        "{}{suffix} (exact 16-bit scheme: pairs could saturate)",
                        bits.label()
                    )
                },
                exact_cost,
                cost,
                error: None,
            });
        }
    }
    conv.egraph.rebuild();
    for a in &mut out {
        a.canonicalize(&conv.egraph);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_per_channel() {
        let w = [0.5, -1.0, 0.25, 2.0, 0.0, -0.5];
        let (q, s) = quantize_rows(&w, 2, WeightBits::Eight);
        assert_eq!(s, vec![1.0 / 127.0, 2.0 / 127.0]);
        assert_eq!(q, vec![64, -127, 32, 127, 0, -32]);
        let (q7, s7) = quantize_rows(&w, 2, WeightBits::Seven);
        assert_eq!(s7, vec![1.0 / 63.0, 2.0 / 63.0]);
        // 0.5 / fl(1/63) = 31.499998 in f32: 31, not a tie
        assert_eq!(q7, vec![31, -63, 16, 63, 0, -16]);
        // a zero row keeps scale 1
        let (q, s) = quantize_rows(&[0.0, 0.0], 1, WeightBits::Eight);
        assert_eq!((q, s), (vec![0, 0], vec![1.0]));
    }
}
