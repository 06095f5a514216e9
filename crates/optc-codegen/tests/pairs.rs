//! An expansion 1x1 conv read only by a depthwise conv, compiled as one pair node (the
//! expanded channels a group at a time in a task buffer): against the reference interpreter
//! on every runnable x86-64 target at 1 and 2 threads; the pair is made where its kernels
//! apply every step, and not when the expansion is read elsewhere (a graph output).

mod common;
use common::*;
use optc_codegen::{compile_jit, Target};
use optc_ir::{Graph, Op, Value, Window};

const TOL: Tol = Tol {
    atol: 1e-4,
    rtol: 1e-4,
};

/// One inverted-residual front: `x [n, c, h, w]` -> 1x1 conv to `m` channels (+ bias, then
/// `expand_steps`) -> depthwise `k x k` conv of `window` (+ bias unless `!dw_bias`, then
/// `dw_steps`). With `expansion_out`, the expansion is a graph output too (no pair).
struct Case<'a> {
    x: [usize; 4],
    m: usize,
    k: usize,
    window: Window,
    expand_steps: &'a [&'a str],
    dw_steps: &'a [&'a str],
    dw_bias: bool,
    /// The targets that pair them: an expanded tensor of twice L2 or more (the named
    /// targets' L2: 512 KiB for AVX2, 1.25 MiB for AVX-512), every step in the kernels (AVX2's
    /// depthwise kernel applies Relu and Clip, not HardSwish or SiLU).
    pairs_on: &'a [&'a str],
}

fn fused(op: Op, base_inputs: usize, steps: Vec<optc_ir::FusedStep>) -> Op {
    if steps.is_empty() {
        op
    } else {
        Op::Fused {
            base: Box::new(op),
            base_inputs,
            steps,
        }
    }
}

fn graph(case: &Case, seed: u64, expansion_out: bool) -> Graph {
    let mut rng = Rng::new(seed);
    let [_, c, _, _] = case.x;
    let m = case.m;
    let mut g = Graph::new();
    let x = g.add_input("x", f(&case.x));
    let w1 = g.add_const("w1", f32t(&mut rng, &[m, c, 1, 1]));
    let b1 = g.add_const("b1", f32t(&mut rng, &[m]));
    let conv1 = Op::Conv {
        window: square_window(1, 1, 0),
        group: 1,
    };
    let t1 = conv1
        .infer(&[&f(&case.x), &f(&[m, c, 1, 1]), &f(&[m])])
        .unwrap()[0]
        .clone();
    let mut ins: Vec<Value> = vec![x, w1, b1];
    let s1 = fused_steps(
        &mut g,
        &mut ins,
        &mut rng,
        case.expand_steps,
        &t1,
        &[1, m, 1, 1],
        false,
    );
    let e = g.add("expand", fused(conv1, 3, s1), &ins).unwrap();
    let w2 = g.add_const("w2", f32t(&mut rng, &[m, 1, case.k, case.k]));
    let mut ins = vec![e, w2];
    let mut tys = vec![t1.clone(), f(&[m, 1, case.k, case.k])];
    if case.dw_bias {
        ins.push(g.add_const("b2", f32t(&mut rng, &[m])));
        tys.push(f(&[m]));
    }
    let conv2 = Op::Conv {
        window: case.window.clone(),
        group: m,
    };
    let refs: Vec<&optc_ir::TensorType> = tys.iter().collect();
    let t2 = conv2.infer(&refs).unwrap()[0].clone();
    let nb = ins.len();
    let s2 = fused_steps(
        &mut g,
        &mut ins,
        &mut rng,
        case.dw_steps,
        &t2,
        &[1, m, 1, 1],
        false,
    );
    let y = g.add("depthwise", fused(conv2, nb, s2), &ins).unwrap();
    g.add_output("y", y);
    if expansion_out {
        g.add_output("expanded", e);
    }
    g
}

/// Whether the compiled model of `g` on `t` has a pair kernel.
fn has_pair(g: &Graph, t: &Target) -> bool {
    let m = compile_jit(g, t).unwrap_or_else(|e| panic!("compile {}: {e}", t.name()));
    m.kernels().iter().any(|k| k.op.contains(", "))
}

fn check_case(case: &Case, seed: u64) {
    let g = graph(case, seed, false);
    let inputs = inputs_for(&g, seed);
    let targets = runnable_targets(4);
    check_targets(&g, &inputs, TOL, &targets);
    let apart = graph(case, seed, true);
    for t in &targets {
        if !case.pairs_on.contains(&t.name()) {
            assert!(!has_pair(&g, t), "{}: an unexpected pair", t.name());
            continue;
        }
        assert!(has_pair(&g, t), "{}: no pair made", t.name());
        assert!(
            !has_pair(&apart, t),
            "{}: a pair of a read expansion",
            t.name()
        );
    }
}

#[test]
fn expansion_then_depthwise() {
    // MobileNetV2's 16 -> 96 on 112x112 (4.8 MB), then the 3x3 stride-2 depthwise conv: row
    // parts of a few channels (a 50 KB plane each), the packing in 3 column runs.
    check_case(
        &Case {
            x: [1, 16, 112, 112],
            m: 96,
            k: 3,
            window: square_window(3, 2, 1),
            expand_steps: &["relu6"],
            dw_steps: &["relu6"],
            dw_bias: true,
            pairs_on: &["x86_64-avx512", "x86_64-avx2"],
        },
        1,
    );
    // Stride 1, a channel count whose last row part is short, two images, no depthwise
    // bias, HardSwish on both.
    check_case(
        &Case {
            x: [2, 24, 112, 112],
            m: 100,
            k: 3,
            window: square_window(3, 1, 1),
            expand_steps: &["hardswish"],
            dw_steps: &["hardswish"],
            dw_bias: false,
            pairs_on: &["x86_64-avx512"],
        },
        2,
    );
    // 5x5 stride 2 with SiLU (EfficientNet's), a map whose pixels end in a partial panel
    // (150 x 161 = 24150 = 1509 panels and 6 columns).
    check_case(
        &Case {
            x: [1, 40, 150, 161],
            m: 30,
            k: 5,
            window: square_window(5, 2, 2),
            expand_steps: &["silu"],
            dw_steps: &["silu"],
            dw_bias: true,
            pairs_on: &["x86_64-avx512"],
        },
        3,
    );
    // MobileNetV2's 14x14 stage: 96 -> 576 (450 KB expanded, in L2 between two nodes).
    check_case(
        &Case {
            x: [1, 96, 14, 14],
            m: 576,
            k: 3,
            window: square_window(3, 1, 1),
            expand_steps: &["relu6"],
            dw_steps: &["relu6"],
            dw_bias: true,
            pairs_on: &[],
        },
        4,
    );
}
