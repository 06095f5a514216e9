//! Whole-graph behaviour: memory plan, graph outputs, run-time checks, targets.

mod common;
use common::*;
use optc_codegen::{compile_jit, Target};
use optc_ir::{BinaryOp, DType, Graph, Op, Tensor, UnaryOp};

#[test]
fn long_chain_reuses_workspace() {
    let n = 1000;
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[n]));
    let mut v = x;
    let ops = [
        UnaryOp::Relu,
        UnaryOp::Neg,
        UnaryOp::Tanh,
        UnaryOp::Abs,
        UnaryOp::Sigmoid,
    ];
    for i in 0..40 {
        v = g
            .add(
                &format!("n{i}"),
                Op::Unary(ops[i % ops.len()].clone()),
                &[v],
            )
            .unwrap();
    }
    g.add_output("y", v);
    let m = compile(&g);
    let sum_of_intermediates = 39 * n * 4;
    assert!(
        m.workspace_size() <= 2 * n * 4 + 128,
        "workspace {} vs intermediates {}",
        m.workspace_size(),
        sum_of_intermediates
    );
    check(&g, &inputs_for(&g, 1), TRANS);
}

#[test]
fn diamond_and_output_used_by_another_node() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[3, 17]));
    let a = g.add("a", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    let b = g.add("b", Op::Unary(UnaryOp::Neg), &[a]).unwrap();
    let c = g.add("c", Op::Binary(BinaryOp::Mul), &[a, b]).unwrap();
    let d = g.add("d", Op::Binary(BinaryOp::Add), &[c, x]).unwrap();
    g.add_output("a", a); // also read by b and c
    g.add_output("d", d);
    g.add_output("c", c); // also read by d
    check(&g, &inputs_for(&g, 2), TRANS);
}

#[test]
fn special_outputs() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[5]));
    let k = g.add_const("k", Tensor::from_f32(vec![2], vec![1.5, -2.5]).unwrap());
    let i = g.add_const("i", Tensor::from_i64(vec![3], vec![1, 2, 3]).unwrap());
    let y = g.add("y", Op::Unary(UnaryOp::Relu), &[x]).unwrap();
    g.add_output("input", x);
    g.add_output("const", k);
    g.add_output("y1", y);
    g.add_output("y2", y);
    g.add_output("int_const", i);
    g.add_output("input_again", x);
    check(&g, &inputs_for(&g, 3), EXACT);
}

#[test]
fn constants_feed_ops() {
    let mut rng = Rng::new(4);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[4, 6]));
    let w = g.add_const("w", f32t(&mut rng, &[6, 5]));
    let b = g.add_const("b", f32t(&mut rng, &[5]));
    let h = g.add("mm", Op::MatMul, &[x, w]).unwrap();
    let h = g.add("add", Op::Binary(BinaryOp::Add), &[h, b]).unwrap();
    let h = g.add("relu", Op::Unary(UnaryOp::Relu), &[h]).unwrap();
    let s = g.add("sm", Op::Softmax { axis: 1 }, &[h]).unwrap();
    g.add_output("s", s);
    check(&g, &inputs_for(&g, 5), TRANS);
}

#[test]
fn small_cnn_end_to_end() {
    let g = small_cnn();
    check(
        &g,
        &inputs_for(&g, 1),
        Tol {
            atol: 1e-4,
            rtol: 1e-4,
        },
    );
}

fn small_cnn() -> Graph {
    let mut rng = Rng::new(9);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1, 3, 16, 16]));
    let w1 = g.add_const("w1", f32t(&mut rng, &[16, 3, 3, 3]));
    let b1 = g.add_const("b1", f32t(&mut rng, &[16]));
    let win = square_window;
    let c1 = g
        .add(
            "c1",
            Op::Conv {
                window: win(3, 1, 1),
                group: 1,
            },
            &[x, w1, b1],
        )
        .unwrap();
    let r1 = g
        .add("r1", Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }), &[c1])
        .unwrap();
    let p1 = g
        .add(
            "p1",
            Op::MaxPool {
                window: win(2, 2, 0),
            },
            &[r1],
        )
        .unwrap();
    let wd = g.add_const("wd", f32t(&mut rng, &[16, 1, 3, 3]));
    let dw = g
        .add(
            "dw",
            Op::Conv {
                window: win(3, 1, 1),
                group: 16,
            },
            &[p1, wd],
        )
        .unwrap();
    let add = g.add("res", Op::Binary(BinaryOp::Add), &[dw, p1]).unwrap();
    let gap = g
        .add(
            "gap",
            Op::Reduce {
                kind: optc_ir::ReduceKind::Mean,
                axes: vec![2, 3],
                keepdims: false,
            },
            &[add],
        )
        .unwrap();
    let fc = g.add_const("fc", f32t(&mut rng, &[10, 16]));
    let fb = g.add_const("fb", f32t(&mut rng, &[10]));
    let y = g
        .add(
            "gemm",
            Op::Gemm {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: true,
            },
            &[gap, fc, fb],
        )
        .unwrap();
    let sm = g.add("sm", Op::Softmax { axis: 1 }, &[y]).unwrap();
    let sg = g.add("sig", Op::Unary(UnaryOp::Sigmoid), &[y]).unwrap();
    let ls = g.add_const("ls", f32t(&mut rng, &[10]));
    let ln = g
        .add(
            "ln",
            Op::LayerNorm {
                axis: 1,
                epsilon: 1e-5,
            },
            &[sg, ls],
        )
        .unwrap();
    g.add_output("y", y);
    g.add_output("sm", sm);
    g.add_output("ln", ln);
    g
}

#[test]
fn wrong_inputs_are_errors() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[2, 3]));
    let y = g.add("relu", Op::Unary(UnaryOp::Relu), &[x]).unwrap();
    g.add_output("y", y);
    let m = compile(&g);
    assert_eq!(m.input_types(), &[f(&[2, 3])]);
    assert_eq!(m.output_types(), &[f(&[2, 3])]);
    let good = Tensor::zeros(DType::F32, vec![2, 3]);
    let mut out = vec![Tensor::zeros(DType::F32, vec![2, 3])];
    let mut ws = m.new_workspace();
    // count
    let e = m.run(&[], &mut out, &mut ws).unwrap_err().to_string();
    assert!(e.contains("inputs"), "{e}");
    // shape
    let bad = Tensor::zeros(DType::F32, vec![3, 2]);
    let e = m.run(&[&bad], &mut out, &mut ws).unwrap_err().to_string();
    assert!(e.contains("input 0") && e.contains("f32[2,3]"), "{e}");
    // dtype
    let bad = Tensor::zeros(DType::I64, vec![2, 3]);
    let e = m.run(&[&bad], &mut out, &mut ws).unwrap_err().to_string();
    assert!(e.contains("input 0"), "{e}");
    // output shape
    let mut bad_out = vec![Tensor::zeros(DType::F32, vec![6])];
    let e = m
        .run(&[&good], &mut bad_out, &mut ws)
        .unwrap_err()
        .to_string();
    assert!(e.contains("output 0"), "{e}");
    // output count
    let e = m.run(&[&good], &mut [], &mut ws).unwrap_err().to_string();
    assert!(e.contains("outputs"), "{e}");
    m.run(&[&good], &mut out, &mut ws).unwrap();
}

#[test]
fn workspace_too_small_is_an_error() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[64]));
    let a = g.add("a", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    let y = g.add("b", Op::Unary(UnaryOp::Neg), &[a]).unwrap();
    g.add_output("y", y);
    let m = compile(&g);
    assert!(m.workspace_size() >= 256);
    let mut ws = optc_codegen::Workspace::new(16);
    let xin = Tensor::zeros(DType::F32, vec![64]);
    let mut out = vec![Tensor::zeros(DType::F32, vec![64])];
    let e = m.run(&[&xin], &mut out, &mut ws).unwrap_err().to_string();
    assert!(e.contains("workspace"), "{e}");
}

#[test]
fn absurd_sizes_are_errors_not_panics() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1 << 20, 1 << 14]));
    // A value of 2^34 elements is refused where it would be made...
    let e = g
        .add("relu", Op::Unary(UnaryOp::Relu), &[x])
        .unwrap_err()
        .to_string();
    assert!(e.contains("relu") && e.contains("limit"), "{e}");
    // ...and an input that large by the code generator, before any workspace is sized; so
    // is one of 2^30 elements (4 GiB: kernels address a tensor with 32-bit offsets).
    let reduce = Op::Reduce {
        kind: optc_ir::ReduceKind::Sum,
        axes: vec![1],
        keepdims: false,
    };
    let z = g.add("sum", reduce.clone(), &[x]).unwrap();
    g.add_output("z", z);
    let e = compile_jit(&g, &Target::host().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("input 0 ('x')") && e.contains("limit"), "{e}");
    let mut g = Graph::new();
    let big = g.add_input("big", f(&[1 << 16, 1 << 14]));
    let z = g.add("sum", reduce, &[big]).unwrap();
    g.add_output("z", z);
    let e = compile_jit(&g, &Target::host().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("'big'") && e.contains("2 GiB"), "{e}");
}

#[test]
fn targets() {
    assert_eq!(Target::parse("native").unwrap().name(), "native");
    let e = Target::parse("x86_64-avx9000").unwrap_err().to_string();
    assert!(
        e.contains("x86_64-sse4.2") && e.contains("x86_64-avx2") && e.contains("native"),
        "{e}"
    );
    let mut rng = Rng::new(2);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[5, 19]));
    let w = g.add_const("w", f32t(&mut rng, &[19, 13]));
    let h = g.add("mm", Op::MatMul, &[x, w]).unwrap();
    let t = g.add("tanh", Op::Unary(UnaryOp::Tanh), &[h]).unwrap();
    let s = g.add("sig", Op::Unary(UnaryOp::Erf), &[t]).unwrap();
    g.add_output("s", s);
    let inputs = inputs_for(&g, 1);
    for name in ["x86_64-sse4.2", "x86_64-avx2"] {
        let t = Target::parse(name).unwrap();
        assert_eq!(t.name(), name);
        if name == "x86_64-avx2" && !std::is_x86_feature_detected!("avx2") {
            assert!(compile_jit(&g, &t).is_err());
            continue;
        }
        check_with(&g, &inputs, TRANS, &t);
        let cnn = small_cnn();
        check_with(
            &cnn,
            &inputs_for(&cnn, 2),
            Tol {
                atol: 1e-4,
                rtol: 1e-4,
            },
            &t,
        );
    }
}

#[test]
fn model_is_send_and_sync_and_reusable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<optc_codegen::JitModel>();
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[33]));
    let y = g.add("e", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
    g.add_output("y", y);
    let m = std::sync::Arc::new(compile(&g));
    let hs: Vec<_> = (0..2)
        .map(|t| {
            let m = m.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(t);
                for _ in 0..3 {
                    let x = f32t(&mut rng, &[33]);
                    let got = run_jit(&m, std::slice::from_ref(&x)).unwrap();
                    let want: Vec<f32> = x.as_f32().unwrap().iter().map(|v| v.exp()).collect();
                    compare(
                        "exp",
                        &got[0],
                        &Tensor::from_f32(vec![33], want).unwrap(),
                        TRANS,
                    );
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
}

/// A BERT-style encoder layer: embeddings (Gather), attention mask (Equal, Cast, Where, Expand),
/// batched MatMul, Softmax, LayerNorm, GELU with Erf.
#[test]
fn transformer_block() {
    let (b, s, h, heads, vocab) = (2usize, 7usize, 16usize, 2usize, 50usize);
    let dh = h / heads;
    let mut rng = Rng::new(77);
    let mut g = Graph::new();
    let ids = g.add_input("ids", optc_ir::TensorType::new(DType::I64, vec![b, s]));
    let mask = g.add_input("mask", optc_ir::TensorType::new(DType::I64, vec![b, s]));
    let emb = g.add_const("emb", f32t(&mut rng, &[vocab, h]));
    let x = g.add("embed", Op::Gather { axis: 0 }, &[emb, ids]).unwrap();
    let ln_s = g.add_const("ln_s", f32t(&mut rng, &[h]));
    let ln_b = g.add_const("ln_b", f32t(&mut rng, &[h]));
    let x = g
        .add(
            "ln0",
            Op::LayerNorm {
                axis: 2,
                epsilon: 1e-12,
            },
            &[x, ln_s, ln_b],
        )
        .unwrap();
    let mut proj = |g: &mut Graph, name: &str, x| {
        let w = g.add_const(&format!("{name}_w"), f32t(&mut rng, &[h, h]));
        let bb = g.add_const(&format!("{name}_b"), f32t(&mut rng, &[h]));
        let y = g.add(&format!("{name}_mm"), Op::MatMul, &[x, w]).unwrap();
        g.add(&format!("{name}_add"), Op::Binary(BinaryOp::Add), &[y, bb])
            .unwrap()
    };
    let heads_of = |g: &mut Graph, name: &str, v| {
        let r = g
            .add(
                &format!("{name}_r"),
                Op::Reshape {
                    shape: vec![b, s, heads, dh],
                },
                &[v],
            )
            .unwrap();
        g.add(
            &format!("{name}_t"),
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[r],
        )
        .unwrap()
    };
    let q = proj(&mut g, "q", x);
    let k = proj(&mut g, "k", x);
    let v = proj(&mut g, "v", x);
    let q = heads_of(&mut g, "qh", q);
    let k = heads_of(&mut g, "kh", k);
    let v = heads_of(&mut g, "vh", v);
    let kt = g
        .add(
            "kt",
            Op::Transpose {
                perm: vec![0, 1, 3, 2],
            },
            &[k],
        )
        .unwrap();
    let sc = g.add("qk", Op::MatMul, &[q, kt]).unwrap();
    let scale = g.add_const("scale", Tensor::scalar_f32(1.0 / (dh as f32).sqrt()));
    let sc = g
        .add("scale_mul", Op::Binary(BinaryOp::Mul), &[sc, scale])
        .unwrap();
    // mask: [b, s] → [b, 1, 1, s], where(mask == 0, -1e4, scores)
    let zero = g.add_const("zero", Tensor::scalar_i64(0));
    let is0 = g
        .add("is0", Op::Binary(BinaryOp::Equal), &[mask, zero])
        .unwrap();
    let m4 = g
        .add(
            "m4",
            Op::Reshape {
                shape: vec![b, 1, 1, s],
            },
            &[is0],
        )
        .unwrap();
    let m4 = g
        .add(
            "mexp",
            Op::Expand {
                shape: vec![b, heads, s, s],
            },
            &[m4],
        )
        .unwrap();
    let neg = g.add_const("neg", Tensor::scalar_f32(-1e4));
    let sc = g.add("masked", Op::Where, &[m4, neg, sc]).unwrap();
    let p = g.add("softmax", Op::Softmax { axis: 3 }, &[sc]).unwrap();
    let ctx = g.add("pv", Op::MatMul, &[p, v]).unwrap();
    let ctx = g
        .add(
            "ctx_t",
            Op::Transpose {
                perm: vec![0, 2, 1, 3],
            },
            &[ctx],
        )
        .unwrap();
    let ctx = g
        .add(
            "ctx_r",
            Op::Reshape {
                shape: vec![b, s, h],
            },
            &[ctx],
        )
        .unwrap();
    let o = proj(&mut g, "o", ctx);
    let x = g.add("res1", Op::Binary(BinaryOp::Add), &[o, x]).unwrap();
    // GELU(x) = 0.5 * x * (1 + erf(x / sqrt(2)))
    let r2 = g.add_const("r2", Tensor::scalar_f32(std::f32::consts::FRAC_1_SQRT_2));
    let half = g.add_const("half", Tensor::scalar_f32(0.5));
    let one = g.add_const("one", Tensor::scalar_f32(1.0));
    let t = g.add("gx", Op::Binary(BinaryOp::Mul), &[x, r2]).unwrap();
    let t = g.add("erf", Op::Unary(UnaryOp::Erf), &[t]).unwrap();
    let t = g.add("erf1", Op::Binary(BinaryOp::Add), &[t, one]).unwrap();
    let t = g.add("gm", Op::Binary(BinaryOp::Mul), &[x, t]).unwrap();
    let t = g.add("gh", Op::Binary(BinaryOp::Mul), &[t, half]).unwrap();
    let maskf = g
        .add("maskf", Op::Cast { to: DType::F32 }, &[mask])
        .unwrap();
    g.add_output("gelu", t);
    g.add_output("maskf", maskf);
    let mut inputs = inputs_for(&g, 3);
    inputs[0] = Tensor::from_i64(
        vec![b, s],
        (0..(b * s) as i64)
            .map(|i| (i * 7) % vocab as i64)
            .collect(),
    )
    .unwrap();
    inputs[1] =
        Tensor::from_i64(vec![b, s], vec![1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 1]).unwrap();
    check(
        &g,
        &inputs,
        Tol {
            atol: 1e-4,
            rtol: 1e-4,
        },
    );
}

/// ResNet-style basic block with BatchNorm, and a MobileNetV2-style inverted residual.
#[test]
fn resnet_and_mobilenet_blocks() {
    let mut rng = Rng::new(31);
    let win = square_window;
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1, 16, 12, 12]));
    let mut bn = |g: &mut Graph, name: &str, v, c: usize| {
        let mut ps = vec![v];
        for (i, lo) in [0.5f32, -1.0, -1.0, 0.5].iter().enumerate() {
            let t = Tensor::from_f32(vec![c], (0..c).map(|_| rng.f32(*lo, 1.5)).collect()).unwrap();
            ps.push(g.add_const(&format!("{name}_p{i}"), t));
        }
        g.add(name, Op::BatchNorm { epsilon: 1e-5 }, &ps).unwrap()
    };
    let mut rng2 = Rng::new(32);
    let mut wt = |g: &mut Graph, name: &str, s: &[usize]| {
        let t = f32t(&mut rng2, s);
        let scale = 1.0 / ((s[1] * s[2] * s[3]) as f32).sqrt();
        let t = Tensor::from_f32(
            s.to_vec(),
            t.as_f32().unwrap().iter().map(|v| v * scale).collect(),
        )
        .unwrap();
        g.add_const(name, t)
    };
    // ResNet basic block
    let w1 = wt(&mut g, "w1", &[16, 16, 3, 3]);
    let c1 = g
        .add(
            "c1",
            Op::Conv {
                window: win(3, 1, 1),
                group: 1,
            },
            &[x, w1],
        )
        .unwrap();
    let c1 = bn(&mut g, "bn1", c1, 16);
    let r1 = g.add("r1", Op::Unary(UnaryOp::Relu), &[c1]).unwrap();
    let w2 = wt(&mut g, "w2", &[16, 16, 3, 3]);
    let c2 = g
        .add(
            "c2",
            Op::Conv {
                window: win(3, 1, 1),
                group: 1,
            },
            &[r1, w2],
        )
        .unwrap();
    let c2 = bn(&mut g, "bn2", c2, 16);
    let a = g.add("add", Op::Binary(BinaryOp::Add), &[c2, x]).unwrap();
    let a = g.add("r2", Op::Unary(UnaryOp::Relu), &[a]).unwrap();
    // MobileNetV2 inverted residual: expand 1x1 → depthwise 3x3 s2 → project 1x1
    let we = wt(&mut g, "we", &[96, 16, 1, 1]);
    let e1 = g
        .add(
            "expand",
            Op::Conv {
                window: win(1, 1, 0),
                group: 1,
            },
            &[a, we],
        )
        .unwrap();
    let e1 = g
        .add(
            "relu6a",
            Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }),
            &[e1],
        )
        .unwrap();
    let wd = wt(&mut g, "wd", &[96, 1, 3, 3]);
    let d = g
        .add(
            "dw",
            Op::Conv {
                window: win(3, 2, 1),
                group: 96,
            },
            &[e1, wd],
        )
        .unwrap();
    let d = g
        .add(
            "relu6b",
            Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }),
            &[d],
        )
        .unwrap();
    let wp = wt(&mut g, "wp", &[24, 96, 1, 1]);
    let p = g
        .add(
            "project",
            Op::Conv {
                window: win(1, 1, 0),
                group: 1,
            },
            &[d, wp],
        )
        .unwrap();
    let gp = g
        .add(
            "gap",
            Op::AveragePool {
                window: win(6, 1, 0),
                count_include_pad: false,
            },
            &[p],
        )
        .unwrap();
    let fl = g
        .add("flat", Op::Reshape { shape: vec![1, 24] }, &[gp])
        .unwrap();
    g.add_output("y", fl);
    g.add_output("block", a);
    check(
        &g,
        &inputs_for(&g, 8),
        Tol {
            atol: 1e-4,
            rtol: 1e-4,
        },
    );
}

/// Kernels with the same compile-time data (the packed weights of an unrolled recurrence's
/// steps, all multiplying by one constant) share one data object: an object file with 12 such
/// steps is about as large as one with 2 (one packed copy of the 512 KiB weight), not 10
/// copies larger; the steps still compute what the interpreter does.
#[test]
fn identical_packed_weights_are_one_object() {
    let steps = |n: usize| {
        let mut rng = Rng::new(5);
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[1, 256]));
        // Small weights: a contracting recurrence (random +-1 weights would amplify the
        // summation order's rounding step after step).
        let mut wt = f32t(&mut rng, &[256, 256]);
        if let optc_ir::Data::F32(v) = wt.data_mut() {
            v.iter_mut().for_each(|x| *x *= 0.05);
        }
        let w = g.add_const("w", wt);
        let mut h = x;
        for i in 0..n {
            let m = g.add(&format!("m{i}"), Op::MatMul, &[h, w]).unwrap();
            h = g
                .add(&format!("t{i}"), Op::Unary(UnaryOp::Tanh), &[m])
                .unwrap();
        }
        g.add_output("y", h);
        g
    };
    let target = Target::parse("x86_64-avx2").unwrap();
    let size = |g: &Graph| {
        let opts = optc_codegen::aot::AotOptions {
            name: "m".to_string(),
            ..Default::default()
        };
        optc_codegen::aot::compile_object(g, &target, &opts)
            .unwrap()
            .object
            .len()
    };
    let (two, twelve) = (size(&steps(2)), size(&steps(12)));
    assert!(
        twelve < two + 128 * 1024,
        "12 steps {twelve} bytes, 2 steps {two}: the packed weights are not shared"
    );
    let g = steps(12);
    check_targets(&g, &inputs_for(&g, 6), TRANS, &runnable_targets(4));
}
