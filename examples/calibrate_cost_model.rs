//! Measures the cost model's machine constants on this machine, with optc's own generated
//! code, and prints them for `crates/optc-egraph/src/cost.rs`:
//! `cargo run --release --example calibrate_cost_model`.
//!
//! Each constant is the median of repeated runs of a small graph compiled at -O0,
//! single-threaded, so it measures the kernels the cost model is choosing between.

use optc::{Options, Tensor, TensorType};
use optc_ir::{BinaryOp, Graph, Op, UnaryOp};
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

    println!("measured on this machine (single thread, optc's generated code):");
    println!("CostModel {{");
    println!("    dense_flops_per_s: {:.3e},", dense);
    println!("    elementwise_per_s: {:.3e},", elem);
    println!("    transcendental_ops: {:.1},", trans);
    println!("    bytes_per_s: {:.3e},", bw);
    println!("    kernel_overhead_s: {:.3e},", overhead);
    println!("}}");
}
