//! Measures the cost model's machine constants on this machine, with optc's own generated
//! code, and prints them for `crates/optc-egraph/src/cost.rs`:
//! `cargo run --release --example calibrate_cost_model`.
//!
//! Each constant is the median of repeated runs of a small graph compiled at -O0,
//! single-threaded, so it measures the kernels the cost model is choosing between. The int8,
//! Winograd and depthwise rates are printed as multiples of the dense rate, the form
//! `CostModel::host` writes them in.

use optc::{Options, Tensor, TensorType};
use optc_ir::quantized::ActivationQuantization;
use optc_ir::{BinaryOp, Data, Graph, Op, UnaryOp, Window};
use std::time::Instant;

fn median_secs(g: &Graph, reps: usize) -> f64 {
    let opts = Options {
        opt_level: 0,
        threads: 1,
        ..Default::default()
    };
    let mut m = optc::compile_graph(g.clone(), &opts).expect("compiles");
    let inputs = optc::random_inputs(&m.input_types(), 1);
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut outs: Vec<Tensor> = m
        .output_types()
        .iter()
        .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
        .collect();
    for _ in 0..3 {
        m.run_into(&refs, &mut outs).expect("runs");
    }
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            m.run_into(&refs, &mut outs).expect("runs");
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[reps / 2]
}

fn unary_chain(n: usize, len: usize, u: UnaryOp) -> Graph {
    let mut g = Graph::new();
    let mut x = g.add_input("x", TensorType::f32(&[n]));
    for i in 0..len {
        x = g.add(&format!("u{i}"), Op::Unary(u.clone()), &[x]).unwrap();
    }
    g.add_output("y", x);
    g
}

/// Deterministic values in `[-lim, lim]` (i8) or `[-1, 1)` (f32).
fn i8s(n: usize, lim: i64) -> Vec<i8> {
    (0..n)
        .map(|i| ((i as i64 * 7919) % (2 * lim + 1) - lim).clamp(-128, 127) as i8)
        .collect()
}

fn f32s(n: usize) -> Tensor {
    optc::random_inputs(&[TensorType::f32(&[n])], 3).remove(0)
}

/// `QuantizedMatMul` (dynamic activations) with weights in `[-lim, lim]`: 64 keeps every byte
/// pair safe (`vpmaddubsw`), 128 takes the exact 16-bit kernels.
fn quantized_matmul(m: usize, k: usize, n: usize, lim: i64) -> Graph {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::f32(&[m, k]));
    let w = Tensor::new(vec![k, n], Data::I8(i8s(k * n, lim))).unwrap();
    let w = g.add_const("w", w);
    let ws = g.add_const("ws", f32s(n));
    let op = Op::QuantizedMatMul {
        activation: ActivationQuantization::Dynamic,
    };
    let y = g.add("qmm", op, &[a, w, ws]).unwrap();
    g.add_output("y", y);
    g
}

/// A 3x3 stride-1 conv `c -> m` (`m` = 0: depthwise) on `hw x hw` maps, f32 or int8 (static
/// activations, 7-bit weights).
fn conv(c: usize, m: usize, hw: usize, int8: bool) -> Graph {
    let (group, m) = if m == 0 { (c, c) } else { (1, m) };
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, c, hw, hw]));
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let n = m * (c / group) * 9;
    let shape = vec![m, c / group, 3, 3];
    let y = if int8 {
        let w = g.add_const("w", Tensor::new(shape, Data::I8(i8s(n, 63))).unwrap());
        let ws = g.add_const("ws", f32s(m));
        let xs = g.add_const("xs", Tensor::scalar_f32(1.0 / 128.0));
        let xz = g.add_const("xz", Tensor::new(vec![], Data::U8(vec![128])).unwrap());
        let op = Op::QuantizedConv {
            window,
            group,
            activation: ActivationQuantization::Static,
        };
        g.add("conv", op, &[x, w, ws, xs, xz]).unwrap()
    } else {
        let w = g.add_const("w", f32s(n).reshaped(shape).unwrap());
        g.add("conv", Op::Conv { window, group }, &[x, w]).unwrap()
    };
    g.add_output("y", y);
    g
}

fn main() {
    // Dense: a 256x1024 @ 1024x1024 GEMM with constant weights.
    let (m, k, n) = (256, 1024, 1024);
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::f32(&[m, k]));
    let w = optc::random_inputs(&[TensorType::f32(&[k, n])], 2).remove(0);
    let b = g.add_const("w", w);
    let y = g.add("mm", Op::MatMul, &[a, b]).unwrap();
    g.add_output("y", y);
    let dense = 2.0 * (m * k * n) as f64 / median_secs(&g, 9);

    // Elementwise: a chain of cheap ops on data that stays in L1/L2 (64 KiB).
    let len = 32;
    let small = 16 * 1024;
    let t_mul = median_secs(&unary_chain(small, len, UnaryOp::Abs), 31);
    let elem = (small * len) as f64 / t_mul;
    // Transcendentals, relative to a cheap op.
    let t_exp = median_secs(&unary_chain(small, len, UnaryOp::Exp), 31);
    let trans = t_exp / t_mul;

    // Bandwidth: an add of two 16 Mi-element tensors (192 MiB moved).
    let big = 16 << 20;
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[big]));
    let z = g.add_input("z", TensorType::f32(&[big]));
    let y = g.add("add", Op::Binary(BinaryOp::Add), &[x, z]).unwrap();
    g.add_output("y", y);
    let bw = (3 * 4 * big) as f64 / median_secs(&g, 5);

    // Per-kernel overhead: a chain of 200 ops on one element.
    let t_tiny = median_secs(&unary_chain(1, 200, UnaryOp::Neg), 51);
    let overhead = t_tiny / 200.0;

    // Int8 and conv rates, each as a multiple of `dense` (the cost model's form).
    let int8 = 2.0 * (m * k * n) as f64 / median_secs(&quantized_matmul(m, k, n, 64), 9);
    let exact = 2.0 * (m * k * n) as f64 / median_secs(&quantized_matmul(m, k, n, 128), 9);
    // ResNet-18's first stage: 64 -> 64 channels, 3x3, 56x56 (Winograd in f32).
    let conv_flops = 2.0 * (64 * 64 * 9 * 56 * 56) as f64;
    let winograd = conv_flops / median_secs(&conv(64, 64, 56, false), 9);
    let int8_conv = conv_flops / median_secs(&conv(64, 64, 56, true), 9);
    let efficiency = winograd / dense / optc_egraph::cost::winograd_multiply_ratio(56, 56);
    // MobileNet-v2's 56x56 depthwise conv, 144 channels.
    let dw_flops = 2.0 * (144 * 9 * 56 * 56) as f64;
    let depthwise = dw_flops / median_secs(&conv(144, 0, 56, false), 21);
    let int8_depthwise = dw_flops / median_secs(&conv(144, 0, 56, true), 21);

    println!("measured on this machine (single thread, optc's generated code):");
    println!("CostModel {{");
    println!("    dense_flops_per_s: {:.3e},", dense);
    println!("    int8_ops_per_s: {:.2} * dense,", int8 / dense);
    println!("    int8_conv_ops_per_s: {:.2} * dense,", int8_conv / dense);
    println!(
        "    int8_exact_pairs_ops_per_s: {:.2} * dense,",
        exact / dense
    );
    println!("    winograd_efficiency: {efficiency:.2},");
    println!(
        "    depthwise_flops_per_s: {:.2} * dense,",
        depthwise / dense
    );
    println!(
        "    int8_depthwise_ops_per_s: {:.2} * dense,",
        int8_depthwise / dense
    );
    println!("    elementwise_per_s: {:.3e},", elem);
    println!("    transcendental_ops: {:.1},", trans);
    println!("    bytes_per_s: {:.3e},", bw);
    println!("    kernel_overhead_s: {:.3e},", overhead);
    println!("}}");
}
