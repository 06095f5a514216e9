//! The cost model: estimated seconds per node on a target.
//!
//! `cost = max(flops / flops_per_s, bytes / bytes_per_s) + kernel_overhead_s`.
//! All machine constants live here; which formula prices an op is its
//! [`optc_ir::CostClass`] in the op table.

use crate::analysis::OptEGraph;
use crate::lang::{ENode, ENodeKind};
use optc_ir::CostClass::{self, Transcendental};
use optc_ir::{FusedStep, Op, TensorType};

/// Machine constants of a target.
#[derive(Clone, Debug)]
pub struct CostModel {
    /// Attainable f32 FLOP/s of dense kernels (GEMM, conv).
    pub dense_flops_per_s: f64,
    /// Attainable int8 multiply-add pairs (as FLOPs: 2 per multiply-add) per second of the
    /// quantized contractions.
    pub int8_ops_per_s: f64,
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
            // Not measured yet: twice the f32 rate (vpmaddubsw does 32 multiply-adds per
            // instruction against 8 for an f32 FMA, at half the issue rate).
            int8_ops_per_s: 2.0 * 5.394e10,
            elementwise_per_s: 4.219e9,
            transcendental_ops: 6.1,
            // Not measured: `vdivps` has about 4x the reciprocal throughput of `vmulps`.
            division_ops: 4.0,
            bytes_per_s: 2.148e10,
            kernel_overhead_s: 3.405e-9,
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
                Op::Conv { window, .. } => {
                    let cin_g = ins
                        .get(1)
                        .and_then(|w| w.shape.get(1))
                        .copied()
                        .unwrap_or(1);
                    let k: usize = window.kernel.iter().product();
                    (2.0 * out_n as f64 * (cin_g * k) as f64, out_n as f64)
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

/// An egg cost function over an e-graph: tree cost in estimated seconds. Ill-typed
/// terms cost infinity so they are never extracted.
pub struct EGraphCost<'a> {
    pub egraph: &'a OptEGraph,
    pub model: CostModel,
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
                    (Some(ins), Some(outs)) => self.model.op_cost(&k.op, &ins, &outs),
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
