//! `Op::Fused`: its semantics are exactly the unfused ops in sequence (interpreter),
//! the JIT computes the same, and the text format round-trips it.

mod common;

use common::Rng;
use optc_ir::{BinaryOp, FusedStep, Graph, Op, TensorType, UnaryOp, Value, Window};

fn conv_op() -> Op {
    Op::Conv {
        window: Window {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
        },
        group: 1,
    }
}

/// (fused graph, unfused graph) computing `steps` after `base`.
fn pair(
    r: &mut Rng,
    base: Op,
    base_in: &[Vec<usize>],
    base_const: &[bool],
    steps: &[FusedStep],
    extras: &[Vec<usize>],
) -> (Graph, Graph) {
    let consts: Vec<_> = base_in.iter().map(|s| r.tensor(s, -1.0, 1.0)).collect();
    let extra_t: Vec<_> = extras.iter().map(|s| r.tensor(s, -1.0, 1.0)).collect();
    let build = |fused: bool| {
        let mut g = Graph::new();
        let mut ins: Vec<Value> = vec![];
        for (i, (s, c)) in base_in.iter().zip(base_const).enumerate() {
            ins.push(if *c {
                g.add_const(&format!("c{i}"), consts[i].clone())
            } else {
                g.add_input(&format!("x{i}"), TensorType::f32(s))
            });
        }
        for (i, s) in extras.iter().enumerate() {
            // alternate: runtime extra inputs and constant ones
            ins.push(if i % 2 == 0 {
                g.add_input(&format!("e{i}"), TensorType::f32(s))
            } else {
                g.add_const(&format!("k{i}"), extra_t[i].clone())
            });
        }
        let nb = base_in.len();
        let y = if fused {
            let op = Op::Fused {
                base: Box::new(base.clone()),
                base_inputs: nb,
                steps: steps.to_vec(),
            };
            g.add("f", op, &ins).unwrap()
        } else {
            let mut acc = g.add("b", base.clone(), &ins[..nb]).unwrap();
            for (k, st) in steps.iter().enumerate() {
                acc = match st {
                    FusedStep::Unary(u) => g
                        .add(&format!("s{k}"), Op::Unary(u.clone()), &[acc])
                        .unwrap(),
                    FusedStep::Binary { op, input, swap } => {
                        let e = ins[*input];
                        let args = if *swap { [e, acc] } else { [acc, e] };
                        g.add(&format!("s{k}"), Op::Binary(*op), &args).unwrap()
                    }
                };
            }
            acc
        };
        g.add_output("y", y);
        g
    };
    (build(true), build(false))
}

fn check_pair(label: &str, fused: &Graph, plain: &Graph, seed: u64) {
    let inputs = optc::random_inputs(&fused.input_types(), seed);
    let a = optc_ir::interp::run(fused, &inputs).unwrap();
    let b = optc_ir::interp::run(plain, &inputs).unwrap();
    assert_eq!(a, b, "{label}: fused semantics differ from the unfused ops");
    let mut m = optc::compile_graph(
        fused.clone(),
        &optc::Options {
            opt_level: 0,
            ..Default::default()
        },
    )
    .unwrap();
    let c = m.run(&inputs).unwrap();
    let d = optc::compare(&c[0], &a[0], 1e-4, 1e-5).unwrap();
    assert!(
        d.allclose,
        "{label}: JIT differs from the interpreter: {d:?}"
    );
    let text = optc_ir::text::print(fused);
    let back = optc_ir::text::parse(&text, &fused.consts).unwrap();
    assert_eq!(
        optc_ir::text::print(&back),
        text,
        "{label}: text round trip"
    );
}

#[test]
fn fused_epilogues_and_chains() {
    use BinaryOp as B;
    use FusedStep as S;
    use UnaryOp as U;
    let mut r = Rng::new(5);
    let relu6 = U::Clip { min: 0.0, max: 6.0 };
    // conv + bias-free conv + residual + relu6
    let (f, p) = pair(
        &mut r,
        conv_op(),
        &[vec![1, 3, 7, 7], vec![5, 3, 3, 3], vec![5]],
        &[false, true, true],
        &[
            S::Binary {
                op: B::Add,
                input: 3,
                swap: false,
            },
            S::Unary(relu6.clone()),
        ],
        &[vec![1, 5, 7, 7]],
    );
    check_pair("conv+residual+relu6", &f, &p, 1);
    // gemm + per-column scale (constant) + gelu-ish chain with swapped operands
    let gemm = Op::Gemm {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    let (f, p) = pair(
        &mut r,
        gemm,
        &[vec![3, 9], vec![6, 9], vec![6]],
        &[false, true, true],
        &[
            S::Binary {
                op: B::Mul,
                input: 3,
                swap: true,
            },
            S::Binary {
                op: B::Sub,
                input: 4,
                swap: true,
            },
            S::Unary(U::Erf),
            S::Unary(U::Sigmoid),
            S::Binary {
                op: B::Div,
                input: 3,
                swap: false,
            },
        ],
        &[vec![6], vec![3, 6]],
    );
    check_pair("gemm chain", &f, &p, 2);
    // matmul (batched) + tanh + hard_swish
    let (f, p) = pair(
        &mut r,
        Op::MatMul,
        &[vec![2, 5, 7], vec![7, 3]],
        &[false, true],
        &[
            S::Unary(U::Tanh),
            S::Unary(U::HardSwish),
            S::Unary(U::LeakyRelu { alpha: 0.1 }),
        ],
        &[],
    );
    check_pair("matmul chain", &f, &p, 3);
    // elementwise chain on an elementwise base (odd sizes: scalar tails)
    let (f, p) = pair(
        &mut r,
        Op::Binary(B::Add),
        &[vec![3, 13], vec![13]],
        &[false, false],
        &[
            S::Unary(U::Exp),
            S::Binary {
                op: B::Max,
                input: 2,
                swap: false,
            },
            S::Unary(U::Log),
        ],
        &[vec![3, 1]],
    );
    check_pair("elementwise chain", &f, &p, 4);
}

#[test]
fn fused_type_errors() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[2, 3]));
    let big = g.add_input("big", TensorType::f32(&[4, 3]));
    let bad = Op::Fused {
        base: Box::new(Op::Unary(UnaryOp::Relu)),
        base_inputs: 1,
        steps: vec![FusedStep::Binary {
            op: BinaryOp::Add,
            input: 1,
            swap: false,
        }],
    };
    let e = g.add("f", bad, &[x, big]).unwrap_err();
    assert!(e.msg.contains("broadcast"), "{e}");
    let cmp = Op::Fused {
        base: Box::new(Op::Unary(UnaryOp::Relu)),
        base_inputs: 1,
        steps: vec![FusedStep::Binary {
            op: BinaryOp::Less,
            input: 1,
            swap: false,
        }],
    };
    assert!(g.add("g", cmp, &[x, x]).is_err());
}

/// SiLU after a conv, `c * sigmoid(c)`: the multiply's other operand reads the conv itself,
/// so fusing the conv into the multiply would compute it twice (once for the sigmoid, once
/// in the fused node; efficientnet_b0 did that at every block). Optimized at -O3, the conv
/// appears once, and the result still matches the interpreter on the original graph.
#[test]
fn silu_after_a_conv_computes_the_conv_once() {
    let mut r = Rng::new(11);
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, 4, 6, 6]));
    let w = g.add_const("w", r.tensor(&[8, 4, 3, 3], -1.0, 1.0));
    let c = g.add("conv", conv_op(), &[x, w]).unwrap();
    let s = g.add("sig", Op::Unary(UnaryOp::Sigmoid), &[c]).unwrap();
    let y = g.add("silu", Op::Binary(BinaryOp::Mul), &[c, s]).unwrap();
    g.add_output("y", y);
    let opt = optc::pipeline::optimize(g.clone(), 3).unwrap();
    let convs = opt
        .g
        .node_indices()
        .filter(|&n| {
            let op = &opt.g[n].op;
            let base = match op {
                Op::Fused { base, .. } => &**base,
                op => op,
            };
            matches!(base, Op::Conv { .. })
        })
        .count();
    assert_eq!(convs, 1, "{}", optc_ir::text::print(&opt));
    check_pair("silu", &opt, &g, 3);
}

/// BERT's GELU after a MatMul, `(x * (1 + erf(x / sqrt 2))) * 0.5` as exported, becomes one
/// `gelu` step in the MatMul's tiles (the chain reads `x` twice, so only the recognized op
/// can fuse); `gelu` is exactly the chain with the division as a multiply by 1/sqrt(2) in the
/// interpreter. The same chain with another factor than 0.5, or another erf scale, stays.
#[test]
fn gelu_after_a_matmul_fuses_into_its_tiles() {
    let build = |divide: bool, erf_scale: f32, half: f32| {
        let mut r = Rng::new(12);
        let mut g = Graph::new();
        let a = g.add_input("a", TensorType::f32(&[6, 16]));
        let w = g.add_const("w", r.tensor(&[16, 24], -1.0, 1.0));
        let x = g.add("mm", Op::MatMul, &[a, w]).unwrap();
        let c =
            |g: &mut Graph, name: &str, v: f32| g.add_const(name, optc_ir::Tensor::scalar_f32(v));
        let z = if divide {
            let d = c(&mut g, "sqrt2", 1.0 / erf_scale);
            g.add("div", Op::Binary(BinaryOp::Div), &[x, d]).unwrap()
        } else {
            let k = c(&mut g, "scale", erf_scale);
            g.add("scaled", Op::Binary(BinaryOp::Mul), &[x, k]).unwrap()
        };
        let one = c(&mut g, "one", 1.0);
        let h = c(&mut g, "half", half);
        let e = g.add("erf", Op::Unary(UnaryOp::Erf), &[z]).unwrap();
        let p = g.add("add", Op::Binary(BinaryOp::Add), &[e, one]).unwrap();
        let m = g.add("mul", Op::Binary(BinaryOp::Mul), &[x, p]).unwrap();
        let y = g.add("mul_1", Op::Binary(BinaryOp::Mul), &[m, h]).unwrap();
        g.add_output("y", y);
        g
    };
    let matmul_steps = |g: &Graph| -> Vec<String> {
        g.g.node_indices()
            .filter_map(|n| match &g.g[n].op {
                Op::Fused { base, steps, .. } if **base == Op::MatMul => Some(format!("{steps:?}")),
                _ => None,
            })
            .collect()
    };
    let gelu = vec![format!("{:?}", [FusedStep::Unary(UnaryOp::Gelu)])];
    let r = optc_ir::GELU_ERF_SCALE;
    for divide in [false, true] {
        let g = build(divide, r, 0.5);
        let opt = optc::pipeline::optimize(g.clone(), 2).unwrap();
        assert_eq!(matmul_steps(&opt), gelu, "{}", optc_ir::text::print(&opt));
        if !divide {
            check_pair("gelu", &opt, &g, 5);
        }
    }
    for (erf_scale, half) in [(r, 0.25), (0.7, 0.5)] {
        let g = build(false, erf_scale, half);
        let opt = optc::pipeline::optimize(g.clone(), 2).unwrap();
        let text = optc_ir::text::print(&opt);
        assert!(!text.contains("gelu"), "{erf_scale} {half}: {text}");
    }
}

/// GPT-2's tanh GELU after its `Gemm` and a reshape to 3-D, `(x * 0.5) * (1 + tanh((x +
/// pow(x, 3) * 0.044715) * sqrt(2/pi)))` as exported, becomes one `gelu_tanh` step in the
/// Gemm's tiles (the unary moves before the reshape; the chain reads `x` three times, so only
/// the recognized op can fuse); `gelu_tanh` is exactly the chain in the interpreter. The same
/// chain with another coefficient or exponent stays.
#[test]
fn tanh_gelu_after_a_gemm_and_a_reshape_fuses_into_its_tiles() {
    let build = |cube: f32, exponent: f32| {
        let mut r = Rng::new(13);
        let mut g = Graph::new();
        let a = g.add_input("a", TensorType::f32(&[6, 16]));
        let w = g.add_const("w", r.tensor(&[16, 24], -1.0, 1.0));
        let b = g.add_const("b", r.tensor(&[24], -1.0, 1.0));
        let gemm = Op::Gemm {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        };
        let y = g.add("gemm", gemm, &[a, w, b]).unwrap();
        let x = g
            .add(
                "to_3d",
                Op::Reshape {
                    shape: vec![1, 6, 24],
                },
                &[y],
            )
            .unwrap();
        let c =
            |g: &mut Graph, name: &str, v: f32| g.add_const(name, optc_ir::Tensor::scalar_f32(v));
        let (half, three) = (c(&mut g, "half", 0.5), c(&mut g, "three", exponent));
        let (k3, k) = (
            c(&mut g, "cube_k", cube),
            c(&mut g, "k", optc_ir::GELU_TANH_SCALE),
        );
        let one = c(&mut g, "one", 1.0);
        let bin = |g: &mut Graph, name: &str, op: BinaryOp, p: Value, q: Value| {
            g.add(name, Op::Binary(op), &[p, q]).unwrap()
        };
        let m = bin(&mut g, "mul", BinaryOp::Mul, x, half);
        let p = bin(&mut g, "pow", BinaryOp::Pow, x, three);
        let pk = bin(&mut g, "mul_1", BinaryOp::Mul, p, k3);
        let s = bin(&mut g, "add", BinaryOp::Add, x, pk);
        let z = bin(&mut g, "mul_2", BinaryOp::Mul, s, k);
        let t = g.add("tanh", Op::Unary(UnaryOp::Tanh), &[z]).unwrap();
        let d = bin(&mut g, "add_1", BinaryOp::Add, t, one);
        let y = bin(&mut g, "mul_3", BinaryOp::Mul, m, d);
        g.add_output("y", y);
        g
    };
    let gemm_steps = |g: &Graph| -> Vec<String> {
        g.g.node_indices()
            .filter_map(|n| match &g.g[n].op {
                Op::Fused { base, steps, .. } if matches!(**base, Op::Gemm { .. }) => {
                    Some(format!("{steps:?}"))
                }
                _ => None,
            })
            .collect()
    };
    let g = build(optc_ir::GELU_TANH_CUBE, 3.0);
    let opt = optc::pipeline::optimize(g.clone(), 2).unwrap();
    let want = vec![format!("{:?}", [FusedStep::Unary(UnaryOp::GeluTanh)])];
    assert_eq!(gemm_steps(&opt), want, "{}", optc_ir::text::print(&opt));
    check_pair("gelu_tanh", &opt, &g, 6);
    for (cube, exponent) in [(0.04, 3.0), (optc_ir::GELU_TANH_CUBE, 2.0)] {
        let opt = optc::pipeline::optimize(build(cube, exponent), 2).unwrap();
        let text = optc_ir::text::print(&opt);
        assert!(!text.contains("gelu_tanh"), "{cube} {exponent}: {text}");
    }
}

/// The conv's kernel in `g` (plain or fused).
fn conv_kernel(g: &Graph) -> Vec<usize> {
    g.g.node_indices()
        .find_map(|n| {
            let op = &g.g[n].op;
            let base = match op {
                Op::Fused { base, .. } => &**base,
                op => op,
            };
            match base {
                Op::Conv { window, .. } => Some(window.kernel.clone()),
                _ => None,
            }
        })
        .expect("a conv")
}

/// Kernel taps that read only padding, for every output position, are dropped
/// (`conv-padding-taps`): DeepLab's atrous convs on small maps (a dilation at least the
/// map's extent leaves a 1x1 conv, its bias and fused Relu kept), along one axis only (a 3x1
/// conv is left), with a stride of 2, in a 1-D conv, where only the first tap reads the
/// image; the same values as the interpreter's of the original graph, exactly, and compiled.
/// A NaN weight on such a tap keeps the kernel (`0 x NaN` is NaN at every output).
#[test]
fn convs_drop_the_taps_that_read_only_padding() {
    let win = |kernel: &[usize], strides: &[usize], pads: &[usize], dilations: &[usize]| Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dilations.to_vec(),
        ceil_mode: false,
    };
    let cases = [
        (
            vec![1, 8, 6, 6],
            win(&[3, 3], &[1, 1], &[6; 4], &[6, 6]),
            vec![1, 1],
        ),
        (
            vec![1, 8, 7, 5],
            win(&[3, 3], &[1, 1], &[1, 5, 1, 5], &[1, 5]),
            vec![3, 1],
        ),
        (
            vec![2, 4, 5, 5],
            win(&[3, 3], &[2, 2], &[5; 4], &[5, 5]),
            vec![1, 1],
        ),
        (vec![1, 4, 9], win(&[3], &[1], &[0, 18], &[9]), vec![1]),
        (vec![1, 4, 9], win(&[3], &[1], &[12, 12], &[3]), vec![3]),
    ];
    let mut r = Rng::new(21);
    for (k, (xs, window, want)) in cases.into_iter().enumerate() {
        for nan in [false, true] {
            let mut g = Graph::new();
            let x = g.add_input("x", TensorType::f32(&xs));
            let mut ws = vec![6, xs[1]];
            ws.extend(&window.kernel);
            let mut wt = r.tensor(&ws, -1.0, 1.0);
            if nan {
                // The last tap of the first weight: dropped in every case that drops one.
                let mut v = wt.as_f32().unwrap().to_vec();
                v[window.kernel.iter().product::<usize>() - 1] = f32::NAN;
                wt = optc_ir::Tensor::from_f32(ws.clone(), v).unwrap();
            }
            let w = g.add_const("w", wt);
            let b = g.add_const("b", r.tensor(&[6], -1.0, 1.0));
            let op = Op::Conv {
                window: window.clone(),
                group: 1,
            };
            let c = g.add("conv", op, &[x, w, b]).unwrap();
            let y = g.add("relu", Op::Unary(UnaryOp::Relu), &[c]).unwrap();
            g.add_output("y", y);
            let label = format!("case {k} nan {nan}");
            let opt = optc::pipeline::optimize(g.clone(), 2).unwrap();
            let dropped = want != window.kernel;
            let expect = if nan && dropped {
                window.kernel.clone()
            } else {
                want.clone()
            };
            assert_eq!(conv_kernel(&opt), expect, "{label}");
            if !nan {
                check_pair(&label, &opt, &g, k as u64);
            }
        }
    }
}
