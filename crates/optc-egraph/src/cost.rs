//! The cost model: estimated seconds per node on a target.
//!
//! `cost = max(flops / flops_per_s, bytes / bytes_per_s) + kernel_overhead_s`.
//! All machine constants live here; which formula prices an op is its
//! [`optc_ir::CostClass`] in the op table.

use crate::analysis::OptEGraph;
use crate::lang::{ENode, ENodeKind};
use optc_ir::CostClass::{self, Transcendental};
use optc_ir::{FusedStep, Op, TensorType};
use std::collections::HashMap;

/// Machine constants of a target.
#[derive(Clone, Debug)]
pub struct CostModel {
    /// Attainable f32 FLOP/s of dense kernels (GEMM, conv).
    pub dense_flops_per_s: f64,
    /// Attainable int8 multiply-add pairs (as FLOPs: 2 per multiply-add) per second of the
    /// quantized contractions.
    pub int8_ops_per_s: f64,
    /// The same for int8 convs (implicit GEMM: patches quantized and packed on the fly).
    pub int8_conv_ops_per_s: f64,
    /// The same with exact 16-bit products (`vpmaddwd`), for int8 weights whose byte pairs
    /// could saturate `vpmaddubsw`.
    pub int8_exact_pairs_ops_per_s: f64,
    /// The share of the multiplies Winograd saves on f32 3x3 stride-1 convs that shows as
    /// speed (the transforms cost the rest): F(4x4, 3x3) multiplies 4x less, and such convs
    /// ran 2x faster than direct ones on large maps.
    pub winograd_efficiency: f64,
    /// Effective FLOP/s of f32 depthwise convs (one input channel per group: memory-bound).
    pub depthwise_flops_per_s: f64,
    /// Effective operations per second of int8 depthwise convs (a quantization pass, then
    /// exact integer sums in f32).
    pub int8_depthwise_ops_per_s: f64,
    /// Attainable elementwise f32 ops per second.
    pub elementwise_per_s: f64,
    /// Cost of a transcendental (exp, tanh, erf, ...) in elementwise ops.
    pub transcendental_ops: f64,
    /// Cost of a division in elementwise ops.
    pub division_ops: f64,
    /// Memory bandwidth in bytes per second.
    pub bytes_per_s: f64,
    /// Fixed cost of launching one kernel (a call, loop setup), in seconds.
    pub kernel_overhead_s: f64,
}

impl CostModel {
    /// Constants for this machine (AMD EPYC Zen 3, one core), measured with optc's own
    /// generated code by `cargo run --release --example calibrate_cost_model`
    /// (2026-11-22): a 256x1024x1024 GEMM with constant weights, a chain of cheap and of
    /// `exp` elementwise ops in cache, a 16 Mi-element add, a chain of 200 one-element ops.
    /// Re-run it when the kernels change and paste its output here.
    pub fn host() -> CostModel {
        CostModel {
            dense_flops_per_s: 5.394e10,
            // The ratios to the f32 GEMM measured by `cargo bench --bench int8` (benches/
            // README.md, 2026-12-03, one thread, fastest samples): int8 GEMM 1.7-2.3x
            // (vpmaddubsw kernels), f32 Winograd 3x3 convs 1.7-2.0x the direct rate on 14x14
            // to 56x56 maps, depthwise f32 0.4-0.7x, int8 depthwise half of f32. The
            // calibration example prints the same ratios (three runs on 2026-12-04: int8 GEMM
            // 1.5-1.6, int8 conv 1.7-2.1, exact pairs 1.2-1.8, Winograd efficiency 0.52-0.64,
            // depthwise 0.7-1.0 and 0.2-0.4: this VM varies by ~30% between runs, so take
            // several).
            int8_ops_per_s: 1.9 * 5.394e10,
            // Convs (3x3 stride 1 and 2, 7x7, 1x1): 1.1-1.8x, most near 1.3x.
            int8_conv_ops_per_s: 1.3 * 5.394e10,
            // Exact 16-bit pairs: 0.7-0.85x the byte-pair rate (same bench).
            int8_exact_pairs_ops_per_s: 1.45 * 5.394e10,
            winograd_efficiency: 0.5,
            depthwise_flops_per_s: 0.55 * 5.394e10,
            int8_depthwise_ops_per_s: 0.27 * 5.394e10,
            elementwise_per_s: 4.219e9,
            transcendental_ops: 6.1,
            // Not measured: `vdivps` has about 4x the reciprocal throughput of `vmulps`.
            division_ops: 4.0,
            bytes_per_s: 2.148e10,
            kernel_overhead_s: 3.405e-9,
        }
    }

    /// The int8 rates of a target whose int8 kernels sum with AVX-512 VNNI (`vpdpbusd`, 64
    /// multiply-adds per instruction against 16 for an f32 FMA, and no saturating pairs), as
    /// multiples of the f32 rates of this model: measured with
    /// `cargo run --release --example calibrate_cost_model` on an AVX-512 VNNI Xeon
    /// (2026-12-05, three runs): int8 GEMM 3.4-3.65x the f32 GEMM, int8 conv 3.2-3.5x, int8
    /// depthwise 0.6x the f32 depthwise rate, Winograd efficiency 0.41-0.44 (the f32 side is
    /// left as it is: it prices f32 against f32, which the VNNI machine ranks the same).
    pub fn with_int8_dot_product(self) -> CostModel {
        let dense = self.dense_flops_per_s;
        CostModel {
            int8_ops_per_s: 3.5 * dense,
            int8_conv_ops_per_s: 3.3 * dense,
            // Every 8-bit weight runs at the full rate: there are no pairs to saturate.
            int8_exact_pairs_ops_per_s: 3.5 * dense,
            int8_depthwise_ops_per_s: 0.6 * self.depthwise_flops_per_s,
            ..self
        }
    }

    /// Estimated seconds for `op` with these input and output types.
    pub fn op_cost(&self, op: &Op, ins: &[&TensorType], outs: &[TensorType]) -> f64 {
        if let Op::Fused {
            base,
            base_inputs,
            steps,
        } = op
        {
            // The base's cost, plus the steps' arithmetic and their extra operands' reads;
            // no extra kernel and no intermediate tensor traffic.
            let n = *base_inputs.min(&ins.len());
            let base_cost = self.op_cost(base, &ins[..n], outs);
            let out_n: usize = outs.iter().map(|t| t.numel()).sum();
            let extra_bytes: usize = ins[n..].iter().map(|t| t.size_bytes()).sum();
            let step_ops: f64 = steps
                .iter()
                .map(|s| match s {
                    FusedStep::Unary(u) if Op::Unary(u.clone()).info().cost == Transcendental => {
                        self.transcendental_ops
                    }
                    FusedStep::Binary {
                        op: optc_ir::BinaryOp::Div,
                        ..
                    } => self.division_ops,
                    _ => 1.0,
                })
                .sum();
            return base_cost
                + step_ops * out_n as f64 / self.elementwise_per_s
                + extra_bytes as f64 / self.bytes_per_s;
        }
        let out_n: usize = outs.iter().map(|t| t.numel()).sum();
        let bytes: usize = ins.iter().map(|t| t.size_bytes()).sum::<usize>()
            + outs.iter().map(|t| t.size_bytes()).sum::<usize>();
        let mut int8 = 0.0;
        let (dense, elem) = match op.info().cost {
            CostClass::Dense => match op {
                Op::MatMul => {
                    let k = ins
                        .first()
                        .and_then(|t| t.shape.last())
                        .copied()
                        .unwrap_or(1);
                    (2.0 * out_n as f64 * k as f64, 0.0)
                }
                Op::Gemm { trans_a, .. } => {
                    let a = ins.first().map(|t| t.shape.clone()).unwrap_or_default();
                    let k = if *trans_a { a.first() } else { a.get(1) }
                        .copied()
                        .unwrap_or(1);
                    (2.0 * out_n as f64 * k as f64, out_n as f64)
                }
                Op::Conv { window, group } => {
                    let cin_g = ins
                        .get(1)
                        .and_then(|w| w.shape.get(1))
                        .copied()
                        .unwrap_or(1);
                    let k: usize = window.kernel.iter().product();
                    let flops = 2.0 * out_n as f64 * (cin_g * k) as f64;
                    let rate = if is_depthwise(*group, cin_g) {
                        self.depthwise_flops_per_s
                    } else if *group == 1 && cin_g >= 16 {
                        self.dense_flops_per_s * self.winograd_gain(window, outs)
                    } else {
                        self.dense_flops_per_s
                    };
                    // In units of dense FLOPs.
                    (flops * self.dense_flops_per_s / rate, out_n as f64)
                }
                Op::QuantizedMatMul { .. } | Op::QuantizedConv { .. } => {
                    // The reduction length is the weights' row length (matmul: w is
                    // [K, N]; conv: [M, C/group, k...]); quantizing the input while packing
                    // costs about one elementwise op per input element, the dequantizing
                    // epilogue one per output element.
                    let w = ins.get(1).map(|t| t.shape.clone()).unwrap_or_default();
                    let k = match op {
                        Op::QuantizedMatMul { .. } => w.first().copied().unwrap_or(1),
                        _ => w.iter().skip(1).product(),
                    };
                    int8 = 2.0 * out_n as f64 * k as f64;
                    if let Op::QuantizedConv { group, .. } = op {
                        // In units of the int8 GEMM rate.
                        int8 *= if is_depthwise(*group, w.get(1).copied().unwrap_or(1)) {
                            self.int8_ops_per_s / self.int8_depthwise_ops_per_s
                        } else {
                            self.int8_ops_per_s / self.int8_conv_ops_per_s
                        };
                    }
                    let x_n = ins.first().map(|t| t.numel()).unwrap_or(0);
                    (0.0, (x_n + out_n) as f64)
                }
                Op::MatMulInteger => {
                    let k = ins
                        .first()
                        .and_then(|t| t.shape.last())
                        .copied()
                        .unwrap_or(1);
                    int8 = 2.0 * out_n as f64 * k as f64;
                    (0.0, 0.0)
                }
                Op::ConvInteger { .. } => {
                    let k: usize = ins
                        .get(1)
                        .map(|w| w.shape.iter().skip(1).product())
                        .unwrap_or(1);
                    int8 = 2.0 * out_n as f64 * k as f64;
                    (0.0, 0.0)
                }
                _ => (0.0, 0.0),
            },
            CostClass::Elementwise => (0.0, out_n as f64),
            Transcendental => (0.0, self.transcendental_ops * out_n as f64),
            CostClass::Division => (0.0, self.division_ops * out_n as f64),
            CostClass::Softmax => (0.0, (self.transcendental_ops + 3.0) * out_n as f64),
            CostClass::Normalization => (0.0, 6.0 * out_n as f64),
            CostClass::Window => match op {
                Op::MaxPool { window } | Op::AveragePool { window, .. } => (
                    0.0,
                    (out_n * window.kernel.iter().product::<usize>()) as f64,
                ),
                _ => (0.0, 0.0),
            },
            CostClass::Reduction => (0.0, ins.first().map(|t| t.numel()).unwrap_or(0) as f64),
            CostClass::Memory | CostClass::Fused => (0.0, 0.0),
        };
        let compute = dense / self.dense_flops_per_s
            + int8 / self.int8_ops_per_s
            + elem / self.elementwise_per_s;
        compute.max(bytes as f64 / self.bytes_per_s) + self.kernel_overhead_s
    }
}

impl CostModel {
    /// The speedup of Winograd on an f32 conv with this window (1 when it does not apply): 3x3,
    /// stride 1, no dilation, at least 4x4 outputs. Like codegen (`x64/winograd.rs`), tiles of
    /// F(2x2) or F(4x4) (tile columns rounded up to 4) are computed in units of 16, the better
    /// of the two counts, and small maps gain nothing.
    fn winograd_gain(&self, window: &optc_ir::Window, outs: &[TensorType]) -> f64 {
        let s = outs.first().map(|t| t.shape.as_slice()).unwrap_or(&[]);
        let applies = window.kernel == [3, 3]
            && window.strides == [1, 1]
            && window.dilations == [1, 1]
            && s.len() == 4
            && s[2] >= 4
            && s[3] >= 4;
        if !applies {
            return 1.0;
        }
        (self.winograd_efficiency * winograd_multiply_ratio(s[2], s[3])).max(1.0)
    }
}

/// How many times fewer multiplies Winograd does than direct convolution on an `h x w` output
/// map of a 3x3 conv: F(2x2) or F(4x4), whichever needs fewer, with tile columns rounded up to
/// 4 and tiles computed in units of 16 (as codegen does).
pub fn winograd_multiply_ratio(h: usize, w: usize) -> f64 {
    let gemm = |r: usize| {
        let tiles = h.div_ceil(r) * w.div_ceil(r).div_ceil(4) * 4;
        (r + 2) * (r + 2) * tiles.div_ceil(16) * 16
    };
    (9 * h * w) as f64 / gemm(2).min(gemm(4)) as f64
}

/// An f32 contraction a sparse kernel may run: MatMul, Gemm, an ungrouped Conv (fused or not).
fn is_contraction(op: &Op) -> bool {
    let base = op.base();
    matches!(
        base,
        Op::MatMul | Op::Gemm { trans_a: false, .. } | Op::Conv { group: 1, .. }
    )
}

impl CostModel {
    /// The cost of the contraction `op` (MatMul, Gemm, ungrouped Conv, fused or not) when its
    /// constant weight stores `nonzeros` of `len` values and the sparse kernel pays
    /// ([`optc_ir::sparsity::sparse_pays`], the rule codegen follows): the dense
    /// contraction's time replaced by the sparse one's; `None` when the dense kernel stays.
    pub fn sparse_op_cost(
        &self,
        op: &Op,
        ins: &[&TensorType],
        outs: &[TensorType],
        nonzeros: usize,
        len: usize,
    ) -> Option<f64> {
        let base = op.base();
        let out = outs.first()?;
        let out_n = out.numel();
        let w = &ins.get(1)?.shape;
        // Dense flops, their rate as op_cost prices them, and the sparse kernel's columns.
        let (flops, rate, columns) = match base {
            Op::MatMul | Op::Gemm { .. } => {
                let n = *out.shape.last()?;
                let k = w.iter().product::<usize>() / n.max(1);
                (
                    2.0 * (out_n * k) as f64,
                    self.dense_flops_per_s,
                    out_n / n.max(1),
                )
            }
            Op::Conv { window, group: 1 } => {
                let k: usize = w.iter().skip(1).product();
                let pixels: usize = out.shape.iter().skip(2).product();
                if pixels < 8 {
                    // (Convs take the sparse kernels on 8 pixels or more.)
                    return None;
                }
                let rate = if w.get(1).copied().unwrap_or(1) >= 16 {
                    self.dense_flops_per_s * self.winograd_gain(window, outs)
                } else {
                    self.dense_flops_per_s
                };
                (2.0 * (out_n * k) as f64, rate, pixels)
            }
            _ => return None,
        };
        if !optc_ir::sparsity::sparse_pays_over(
            nonzeros,
            len,
            columns,
            rate / self.dense_flops_per_s,
        ) {
            return None;
        }
        let ratio = optc_ir::sparsity::sparse_cost_ratio(nonzeros, len, columns);
        let dense = self.op_cost(op, ins, outs);
        let sparse = flops * ratio / self.dense_flops_per_s;
        Some((dense - flops / rate + sparse).max(sparse + self.kernel_overhead_s))
    }
}

/// A conv with one input channel per group, more than one group.
fn is_depthwise(group: usize, cin_per_group: usize) -> bool {
    group > 1 && cin_per_group == 1
}

/// An egg cost function over an e-graph: tree cost in estimated seconds. Ill-typed
/// terms cost infinity so they are never extracted.
pub struct EGraphCost<'a> {
    pub egraph: &'a OptEGraph,
    pub model: CostModel,
    /// Nonzeros and length of constant classes already counted (weights' sparsity).
    pub nonzeros: HashMap<egg::Id, (usize, usize)>,
}

impl<'a> EGraphCost<'a> {
    pub fn new(egraph: &'a OptEGraph, model: CostModel) -> Self {
        EGraphCost {
            egraph,
            model,
            nonzeros: HashMap::new(),
        }
    }

    /// Nonzeros and length of the f32 constant class `id`, if it is one.
    fn nonzeros_of(&mut self, id: egg::Id) -> Option<(usize, usize)> {
        let id = self.egraph.find(id);
        if let Some(&v) = self.nonzeros.get(&id) {
            return Some(v);
        }
        let t = crate::query::const_of(self.egraph, id)?;
        let v = t.as_f32()?;
        let counted = (optc_ir::sparsity::nonzeros(v), v.len());
        self.nonzeros.insert(id, counted);
        Some(counted)
    }
}

impl egg::CostFunction<ENode> for EGraphCost<'_> {
    type Cost = f64;
    fn cost<C: FnMut(egg::Id) -> f64>(&mut self, enode: &ENode, mut costs: C) -> f64 {
        let own = match &enode.kind {
            ENodeKind::Input(_) | ENodeKind::Const(_) | ENodeKind::Proj(_) => 0.0,
            ENodeKind::Op(k) => {
                let ins: Option<Vec<&TensorType>> = enode
                    .children
                    .iter()
                    .map(|&c| self.egraph[c].data.ty())
                    .collect();
                let outs = k.op.infer(ins.as_deref().unwrap_or(&[])).ok();
                match (ins, outs) {
                    (Some(ins), Some(outs)) => {
                        let weight = match enode.children.get(1) {
                            Some(&w) if is_contraction(&k.op) => self.nonzeros_of(w),
                            _ => None,
                        };
                        weight
                            .and_then(|(nnz, len)| {
                                self.model.sparse_op_cost(&k.op, &ins, &outs, nnz, len)
                            })
                            .unwrap_or_else(|| self.model.op_cost(&k.op, &ins, &outs))
                    }
                    _ => f64::INFINITY,
                }
            }
        };
        // Sum the children in a canonical order so that commuted forms (add(a, b) and
        // add(b, a)) cost exactly the same and ties break by e-node order, not by
        // floating-point rounding.
        let mut cs: Vec<f64> = enode.children.iter().map(|&c| costs(c)).collect();
        cs.sort_by(|a, b| a.total_cmp(b));
        cs.into_iter().fold(own, |acc, c| acc + c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use optc_ir::quantized::ActivationQuantization;
    use optc_ir::{DType, Window};

    fn window(k: usize, s: usize) -> Window {
        Window {
            kernel: vec![k, k],
            strides: vec![s, s],
            pads: vec![k / 2; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
        }
    }

    /// f32 and int8 cost of a conv `c -> m` (m = 0: depthwise) with `k x k` taps on `hw` maps.
    fn conv_costs(cm: &CostModel, c: usize, m: usize, hw: usize, k: usize, s: usize) -> (f64, f64) {
        let (group, m) = if m == 0 { (c, c) } else { (1, m) };
        let x = TensorType::f32(&[1, c, hw, hw]);
        let o = vec![TensorType::f32(&[1, m, hw / s, hw / s])];
        let w = TensorType::f32(&[m, c / group, k, k]);
        let wq = TensorType::new(DType::I8, w.shape.clone());
        let ws = TensorType::f32(&[m]);
        let f32_op = Op::Conv {
            window: window(k, s),
            group,
        };
        let int8_op = Op::QuantizedConv {
            window: window(k, s),
            group,
            activation: ActivationQuantization::Static,
        };
        (
            cm.op_cost(&f32_op, &[&x, &w], &o),
            cm.op_cost(&int8_op, &[&x, &wq, &ws], &o),
        )
    }

    /// The pricing follows `cargo bench --bench int8`: int8 wins on GEMMs and strided convs,
    /// loses to Winograd on 3x3 stride-1 convs and on depthwise convs.
    #[test]
    fn int8_against_f32_as_measured() {
        let cm = CostModel::host();
        let x = TensorType::f32(&[128, 384]);
        let o = vec![TensorType::f32(&[128, 1536])];
        let f = cm.op_cost(&Op::MatMul, &[&x, &TensorType::f32(&[384, 1536])], &o);
        let q = cm.op_cost(
            &Op::QuantizedMatMul {
                activation: ActivationQuantization::Dynamic,
            },
            &[
                &x,
                &TensorType::new(DType::I8, vec![384, 1536]),
                &TensorType::f32(&[1536]),
            ],
            &o,
        );
        assert!(q < f / 1.5, "int8 GEMM {q} vs f32 {f}");
        let (f, q) = conv_costs(&cm, 64, 64, 56, 3, 1);
        assert!(q > f, "3x3 stride 1: Winograd f32 {f} vs int8 {q}");
        let (f, q) = conv_costs(&cm, 128, 256, 28, 3, 2);
        assert!(q < f, "3x3 stride 2: f32 {f} vs int8 {q}");
        let (f, q) = conv_costs(&cm, 144, 0, 56, 3, 1);
        assert!(q > f, "depthwise: f32 {f} vs int8 {q}");
        let (f, q) = conv_costs(&cm, 64, 128, 56, 1, 1);
        assert!(q < f, "1x1: f32 {f} vs int8 {q}");
    }

    /// With VNNI (`vpdpbusd`) the int8 convs run at 3.2-3.5x the f32 GEMM rate (the
    /// calibration example on an AVX-512 VNNI Xeon): int8 wins on 3x3 stride-1 convs over
    /// Winograd too, and still loses on depthwise convs.
    #[test]
    fn int8_with_dot_products_as_measured() {
        let cm = CostModel::host().with_int8_dot_product();
        let (f, q) = conv_costs(&cm, 64, 64, 56, 3, 1);
        assert!(q < f / 1.5, "3x3 stride 1: Winograd f32 {f} vs int8 {q}");
        let (f, q) = conv_costs(&cm, 512, 512, 7, 3, 1);
        assert!(q < f / 2.0, "3x3 on 7x7 maps: f32 {f} vs int8 {q}");
        let (f, q) = conv_costs(&cm, 144, 0, 56, 3, 1);
        assert!(q > f, "depthwise: f32 {f} vs int8 {q}");
        assert_eq!(cm.int8_exact_pairs_ops_per_s, cm.int8_ops_per_s);
    }
}
