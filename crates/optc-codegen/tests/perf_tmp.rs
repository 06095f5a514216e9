mod common;
use common::*;
use optc_ir::{Graph, Op, Window};
use std::time::Instant;

fn conv(c: usize, m: usize, h: usize, k: usize, s: usize, p: usize, group: usize) {
    let mut rng = Rng::new(1);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1, c, h, h]));
    let w = g.add_const("w", f32t(&mut rng, &[m, c / group, k, k]));
    let b = g.add_const("b", f32t(&mut rng, &[m]));
    let win = Window {
        kernel: vec![k, k],
        strides: vec![s, s],
        pads: vec![p; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let y = g
        .add("c", Op::Conv { window: win, group }, &[x, w, b])
        .unwrap();
    g.add_output("y", y);
    let m_ = compile(&g);
    let ins = inputs_for(&g, 1);
    let oty = &m_.output_types()[0];
    let flops = 2.0 * oty.numel() as f64 * (c / group * k * k) as f64;
    run_jit(&m_, &ins).unwrap();
    let t = Instant::now();
    let n = 5;
    for _ in 0..n {
        run_jit(&m_, &ins).unwrap();
    }
    let dt = t.elapsed().as_secs_f64() / n as f64;
    println!(
        "conv c{c} m{m} h{h} k{k} s{s} g{group}: {:.2} ms, {:.1} GFLOP/s",
        dt * 1e3,
        flops / dt / 1e9
    );
}

fn mm(m: usize, k: usize, n: usize) {
    let mut rng = Rng::new(1);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[m, k]));
    let w = g.add_const("w", f32t(&mut rng, &[k, n]));
    let y = g.add("mm", Op::MatMul, &[x, w]).unwrap();
    g.add_output("y", y);
    let m_ = compile(&g);
    let ins = inputs_for(&g, 1);
    run_jit(&m_, &ins).unwrap();
    let t = Instant::now();
    let it = 5;
    for _ in 0..it {
        run_jit(&m_, &ins).unwrap();
    }
    let dt = t.elapsed().as_secs_f64() / it as f64;
    println!(
        "mm {m}x{k}x{n}: {:.2} ms, {:.1} GFLOP/s",
        dt * 1e3,
        2.0 * (m * k * n) as f64 / dt / 1e9
    );
}

#[test]
fn one() {
    un(optc_ir::UnaryOp::Exp);
}

fn un(u: optc_ir::UnaryOp) {
    let n = 1 << 20;
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[n]));
    let y = g.add("u", Op::Unary(u.clone()), &[x]).unwrap();
    g.add_output("y", y);
    let m_ = compile(&g);
    let ins = inputs_for(&g, 1);
    run_jit(&m_, &ins).unwrap();
    let t = Instant::now();
    for _ in 0..5 { run_jit(&m_, &ins).unwrap(); }
    let dt = t.elapsed().as_secs_f64() / 5.0;
    println!("unary {u:?}: {:.2} ns/elem", dt * 1e9 / n as f64);
}

#[test]
fn perf() {
    for u in [optc_ir::UnaryOp::Exp, optc_ir::UnaryOp::Erf, optc_ir::UnaryOp::Tanh, optc_ir::UnaryOp::Relu] { un(u); }
    conv(3, 64, 224, 7, 2, 3, 1);
    conv(64, 64, 56, 3, 1, 1, 1);
    conv(128, 128, 28, 3, 1, 1, 1);
    conv(256, 256, 14, 3, 1, 1, 1);
    conv(512, 512, 7, 3, 1, 1, 1);
    conv(64, 128, 56, 1, 2, 0, 1);
    conv(144, 144, 56, 3, 1, 1, 144);
    conv(96, 96, 112, 3, 2, 1, 96);
    conv(32, 192, 28, 1, 1, 0, 1);
    mm(128, 128, 512);
    mm(128, 512, 128);
    mm(1, 512, 1000);
}
