//! The sparse kernels (`--sparse`, exact) and magnitude pruning (`--prune`, lossy).
//!
//! Sparse against dense: on integer-valued weights and inputs every partial sum is exact in
//! f32, so the sparse kernels (which skip the zero weights and sum in their own order) must
//! give the dense kernels' output bit for bit; on real values they must agree with tract
//! within rounding. Each case checks that the sparse kernel really ran (`sparse_plans`).

mod common;

use common::Rng;
use optc::compress::prune::PruneAmount;
use optc::compress::{Budget, CompressOptions};
use optc::{DType, Options, Tensor};
use optc_ir::sparsity::SparseMode;
use optc_onnx::builder::{Attr as A, ModelBuilder};

/// Values in `{-3..3}` (`integers`) or uniform in [-1, 1], each zero with probability
/// `1 - density`.
fn sparse_tensor(r: &mut Rng, shape: &[usize], density: f64, integers: bool) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            let keep = (r.below(1000) as f64) < density * 1000.0;
            let x = if integers {
                r.below(7) as f32 - 3.0
            } else {
                r.f32(-1.0, 1.0)
            };
            if keep {
                x
            } else {
                0.0
            }
        })
        .collect();
    Tensor::new(shape.to_vec(), optc_ir::Data::F32(v)).unwrap()
}

fn dense_tensor(r: &mut Rng, shape: &[usize], integers: bool) -> Tensor {
    sparse_tensor(r, shape, 1.0, integers)
}

/// A model: `kind` "matmul" (x[m,k] @ w[k,n] + b, relu), "gemm" (transB, bias), "conv3"
/// (3x3 pad 1, bias, relu) or "conv1" (1x1, no bias).
fn model(
    kind: &str,
    dims: [usize; 3],
    density: f64,
    integers: bool,
    seed: u64,
) -> (Vec<u8>, Tensor) {
    let mut r = Rng::new(seed);
    let mut b = ModelBuilder::new(17);
    let [m, k, n] = dims;
    let x = match kind {
        "matmul" => {
            b.input("x", DType::F32, &[m as i64, k as i64]);
            b.initializer("w", &sparse_tensor(&mut r, &[k, n], density, integers));
            b.initializer("b", &dense_tensor(&mut r, &[n], integers));
            b.node("MatMul", &["x", "w"], &["mm"], vec![]);
            b.node("Add", &["mm", "b"], &["a"], vec![]);
            b.node("Relu", &["a"], &["y"], vec![]);
            dense_tensor(&mut r, &[m, k], integers)
        }
        "gemm" => {
            b.input("x", DType::F32, &[m as i64, k as i64]);
            b.initializer("w", &sparse_tensor(&mut r, &[n, k], density, integers));
            b.initializer("b", &dense_tensor(&mut r, &[n], integers));
            b.node(
                "Gemm",
                &["x", "w", "b"],
                &["y"],
                vec![("transB", A::Int(1))],
            );
            dense_tensor(&mut r, &[m, k], integers)
        }
        "conv3" | "conv1" => {
            // m: images, k: input channels, n: output channels; 7x9 maps.
            let kk = if kind == "conv3" { 3 } else { 1 };
            b.input("x", DType::F32, &[m as i64, k as i64, 7, 9]);
            b.initializer(
                "w",
                &sparse_tensor(&mut r, &[n, k, kk, kk], density, integers),
            );
            let p = (kk / 2) as i64;
            let attrs = vec![
                ("pads", A::Ints(vec![p; 4])),
                ("kernel_shape", A::Ints(vec![kk as i64; 2])),
            ];
            if kind == "conv3" {
                b.initializer("b", &dense_tensor(&mut r, &[n], integers));
                b.node("Conv", &["x", "w", "b"], &["c"], attrs);
                b.node("Relu", &["c"], &["y"], vec![]);
            } else {
                b.node("Conv", &["x", "w"], &["y"], attrs);
            }
            dense_tensor(&mut r, &[m, k, 7, 9], integers)
        }
        _ => unreachable!(),
    };
    b.output("y");
    (b.to_bytes(), x)
}

fn with_sparse(mode: SparseMode) -> Options {
    Options {
        sparse: mode,
        target: "x86_64-avx2".into(),
        ..Options::default()
    }
}

fn host_runs_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

const CASES: &[(&str, [usize; 3])] = &[
    ("matmul", [128, 64, 48]),
    ("matmul", [37, 20, 29]),
    ("matmul", [9, 129, 8]),
    ("gemm", [50, 96, 130]),
    ("gemm", [16, 8, 3]),
    ("matmul", [1, 40, 33]),
    ("gemm", [3, 64, 20]),
    ("gemm", [7, 13, 9]),
    ("conv3", [2, 5, 19]),
    ("conv1", [3, 16, 24]),
];

#[test]
fn sparse_kernels_match_dense_bit_for_bit_on_integer_values() {
    if !host_runs_avx2() {
        return;
    }
    for (i, &(kind, dims)) in CASES.iter().enumerate() {
        for density in [0.05, 0.3, 0.9] {
            let (bytes, x) = model(kind, dims, density, true, 10 + i as u64);
            let mut sparse = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Always)).unwrap();
            let mut dense = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Off)).unwrap();
            let target = optc_codegen::Target::parse("x86_64-avx2").unwrap();
            let plans = optc_codegen::sparse_plans(
                sparse.graph(),
                &target.clone().with_sparse(SparseMode::Always),
            )
            .unwrap();
            assert_eq!(plans.len(), 1, "{kind} {dims:?} {density}: {plans:?}");
            assert!(optc_codegen::sparse_plans(
                dense.graph(),
                &target.clone().with_sparse(SparseMode::Off)
            )
            .unwrap()
            .is_empty());
            let s = sparse.run(std::slice::from_ref(&x)).unwrap();
            let d = dense.run(std::slice::from_ref(&x)).unwrap();
            let (s, d) = (s[0].as_f32().unwrap(), d[0].as_f32().unwrap());
            for (j, (a, b)) in s.iter().zip(d).enumerate() {
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{kind} {dims:?} {density}: element {j}: sparse {a} dense {b}"
                );
            }
            // Not trivially zero.
            assert!(s.iter().any(|v| *v != 0.0), "{kind} {dims:?}");
        }
    }
}

/// A skipped zero weight still multiplies: `0 x inf` and `0 x NaN` are NaN. With infinities
/// and NaNs in the dense operand, a sparse output is NaN where the row has a zero weight at a
/// non-finite value and the kernel's own sum (+-inf, or finite) where every such value met a
/// stored weight: the dense kernels' result, NaN for NaN and bit for bit otherwise (integer
/// values: every finite partial sum is exact).
#[test]
fn skipped_zero_weights_times_non_finite_values_are_nan() {
    if !host_runs_avx2() {
        return;
    }
    let mut kinds = [0usize; 3];
    for (i, &(kind, dims)) in CASES.iter().enumerate() {
        for (density, specials) in [
            (0.3, [f32::INFINITY, f32::NEG_INFINITY, f32::NAN]),
            (0.05, [f32::INFINITY; 3]),
        ] {
            let (bytes, x) = model(kind, dims, density, true, 40 + i as u64);
            let mut v = x.as_f32().unwrap().to_vec();
            let len = v.len();
            // A few specials, at most one per 7 values: some columns meet none.
            for (j, s) in specials.iter().enumerate() {
                v[(j * 7919 + 3) % len] = *s;
            }
            let x = Tensor::new(x.shape().to_vec(), optc_ir::Data::F32(v)).unwrap();
            let mut sparse = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Always)).unwrap();
            let mut dense = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Off)).unwrap();
            let s = sparse.run(std::slice::from_ref(&x)).unwrap();
            let d = dense.run(std::slice::from_ref(&x)).unwrap();
            let (s, d) = (s[0].as_f32().unwrap(), d[0].as_f32().unwrap());
            for (j, (a, b)) in s.iter().zip(d).enumerate() {
                assert!(
                    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits(),
                    "{kind} {dims:?} {density}: element {j}: sparse {a} dense {b}"
                );
                kinds[usize::from(b.is_infinite()) + 2 * usize::from(b.is_nan())] += 1;
            }
        }
    }
    // Every kind of output occurs: finite, infinite (each non-finite value met a stored
    // weight) and NaN.
    assert!(kinds.iter().all(|&n| n > 0), "finite, inf, NaN: {kinds:?}");
}

/// Two sparse layers of different K in one model: their kernels of the same width are one
/// routine (a second definition of the same symbol was an error compiling resnet18 pruned).
#[test]
fn sparse_layers_of_different_widths_share_kernels() {
    if !host_runs_avx2() {
        return;
    }
    // 1x1 convs over 48 pixels: calls of 32 and 16 columns; K = 8 and 16.
    let mut r = Rng::new(5);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 8, 4, 12]);
    b.initializer("w1", &sparse_tensor(&mut r, &[16, 8, 1, 1], 0.3, true));
    b.initializer("w2", &sparse_tensor(&mut r, &[8, 16, 1, 1], 0.3, true));
    let attrs = || vec![("kernel_shape", A::Ints(vec![1, 1]))];
    b.node("Conv", &["x", "w1"], &["h"], attrs());
    b.node("Relu", &["h"], &["a"], vec![]);
    b.node("Conv", &["a", "w2"], &["c"], attrs());
    b.node("Relu", &["c"], &["y"], vec![]);
    b.output("y");
    let bytes = b.to_bytes();
    let x = dense_tensor(&mut r, &[1, 8, 4, 12], true);
    let mut sparse = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Always)).unwrap();
    let mut dense = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Off)).unwrap();
    let target = optc_codegen::Target::parse("x86_64-avx2").unwrap();
    let plans = optc_codegen::sparse_plans(sparse.graph(), &target.with_sparse(SparseMode::Always))
        .unwrap();
    assert_eq!(plans.len(), 2, "{plans:?}");
    let s = sparse.run(std::slice::from_ref(&x)).unwrap();
    let d = dense.run(std::slice::from_ref(&x)).unwrap();
    assert_eq!(s[0].as_f32().unwrap(), d[0].as_f32().unwrap());
}

#[test]
fn sparse_kernels_match_tract_on_real_values() {
    if !host_runs_avx2() {
        return;
    }
    for (i, &(kind, dims)) in CASES.iter().enumerate() {
        let (bytes, x) = model(kind, dims, 0.2, false, 40 + i as u64);
        let mut m = optc::compile_bytes(&bytes, &with_sparse(SparseMode::Auto)).unwrap();
        let got = m.run(std::slice::from_ref(&x)).unwrap();
        let want = optc_onnx::oracle::run_tract(&bytes, std::slice::from_ref(&x)).unwrap();
        let d = optc::compare(&got[0], &want[0], 1e-4, 1e-5).unwrap();
        assert!(d.allclose, "{kind} {dims:?}: {d:?}");
    }
}

#[test]
fn auto_takes_the_sparse_kernel_only_on_sparse_weights() {
    let target = optc_codegen::Target::parse("x86_64-avx2").unwrap();
    let opts = || Options {
        target: "x86_64-avx2".into(),
        ..Options::default()
    };
    for (density, sparse) in [(0.1, true), (0.9, false)] {
        let (bytes, _) = model("matmul", [64, 128, 128], density, false, 3);
        let g = optc::compile_bytes(&bytes, &opts()).unwrap();
        let plans = optc_codegen::sparse_plans(g.graph(), &target).unwrap();
        assert_eq!(!plans.is_empty(), sparse, "density {density}: {plans:?}");
    }
}

#[test]
fn pruning_is_measured_and_reported() {
    let (bytes, x) = model("matmul", [64, 128, 96], 1.0, false, 7);
    let d = std::env::temp_dir().join(format!("optc-prune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("input_0.pb"), optc_onnx::tensor_to_pb(&x, "x")).unwrap();
    let opts = |budget: &str| Options {
        compress: CompressOptions {
            prune: vec![PruneAmount::Fraction(0.5), PruneAmount::Fraction(0.9)],
            calibrate: vec![d.clone()],
            max_error: Budget::parse(budget).unwrap(),
            ..Default::default()
        },
        ..Options::default()
    };
    // No budget: the fastest alternative (90% zeros) is taken; the report's error is the
    // pruned graph's, measured independently by the interpreter.
    let m = optc::compile_bytes(&bytes, &opts("")).unwrap();
    let r = m.report().compression.clone().expect("a report");
    assert_eq!(r.layers.len(), 1);
    // (The most accurate variant of it: re-fit to the calibration inputs.)
    assert_eq!(
        r.layers[0].choice, "pruned 90%, reconstructed",
        "{:?}",
        r.layers
    );
    let want = optc_onnx::oracle::run_tract(&bytes, std::slice::from_ref(&x)).unwrap();
    let got = optc_ir::interp::run(m.graph(), std::slice::from_ref(&x)).unwrap();
    let max_abs = want[0]
        .as_f32()
        .unwrap()
        .iter()
        .zip(got[0].as_f32().unwrap())
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max);
    assert!(max_abs > 0.0);
    assert!(
        (r.outputs[0].max_abs - max_abs).abs() <= 1e-4 * max_abs,
        "{} vs {max_abs}",
        r.outputs[0].max_abs
    );
    let w_of = |m: &optc::CompiledModel| {
        m.graph()
            .g
            .node_weights()
            .find_map(|n| match &n.op {
                optc_ir::Op::Constant { id } => m
                    .graph()
                    .const_tensor(*id)
                    .filter(|t| t.numel() == 128 * 96)
                    .cloned(),
                _ => None,
            })
            .expect("the weight")
    };
    let w = w_of(&m);
    let zeros = w.as_f32().unwrap().iter().filter(|v| **v == 0.0).count();
    assert_eq!(zeros, (0.9f64 * 128.0 * 96.0).round() as usize);
    // One global threshold: exactly the weights below it go.
    let threshold = Options {
        compress: CompressOptions {
            prune: vec![PruneAmount::Threshold(0.9)],
            ..opts("").compress
        },
        ..Options::default()
    };
    let m2 = optc::compile_bytes(&bytes, &threshold).unwrap();
    let r2 = m2.report().compression.clone().expect("a report");
    assert!(
        r2.layers[0].choice.starts_with("pruned |w| < 0.9"),
        "{:?}",
        r2.layers
    );
    let original = w_of(&optc::compile_bytes(&bytes, &Options::default()).unwrap());
    let small = original
        .as_f32()
        .unwrap()
        .iter()
        .filter(|v| v.abs() < 0.9)
        .count();
    let zeros2 = w_of(&m2)
        .as_f32()
        .unwrap()
        .iter()
        .filter(|v| **v == 0.0)
        .count();
    assert_eq!(zeros2, small);
    // A tight budget keeps the layer exact.
    let m = optc::compile_bytes(&bytes, &opts("cos=0.99999")).unwrap();
    let r = m.report().compression.clone().expect("a report");
    assert_eq!(r.layers[0].choice, "f32", "{:?}", r.layers);
    let _ = std::fs::remove_dir_all(&d);
}

/// A MatMul + bias whose weight has rank 3 exactly, and a conv whose `[M, C*9]` weight does.
fn low_rank_models() -> Vec<(Vec<u8>, Tensor)> {
    let mut r = Rng::new(21);
    let mut out = vec![];
    // x [32, 40] @ W [40, 36] + b, W = U V with U [40, 3], V [3, 36].
    let (k, n, rank) = (40, 36, 3);
    let u: Vec<f32> = (0..k * rank).map(|_| r.f32(-1.0, 1.0)).collect();
    let v: Vec<f32> = (0..rank * n).map(|_| r.f32(-1.0, 1.0)).collect();
    let w: Vec<f32> = (0..k * n)
        .map(|i| {
            (0..rank)
                .map(|j| u[(i / n) * rank + j] * v[j * n + i % n])
                .sum()
        })
        .collect();
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[32, k as i64]);
    b.initializer("w", &Tensor::from_f32(vec![k, n], w).unwrap());
    b.initializer("b", &dense_tensor(&mut r, &[n], false));
    b.node("MatMul", &["x", "w"], &["mm"], vec![]);
    b.node("Add", &["mm", "b"], &["y"], vec![]);
    b.output("y");
    out.push((b.to_bytes(), dense_tensor(&mut r, &[32, k], false)));
    // Conv 3x3, 8 -> 24 channels, weight rank 2 as [24, 72].
    let (m, c) = (24, 8);
    let u: Vec<f32> = (0..m * 2).map(|_| r.f32(-1.0, 1.0)).collect();
    let v: Vec<f32> = (0..2 * c * 9).map(|_| r.f32(-1.0, 1.0)).collect();
    let w: Vec<f32> = (0..m * c * 9)
        .map(|i| {
            (0..2)
                .map(|j| u[(i / (c * 9)) * 2 + j] * v[j * c * 9 + i % (c * 9)])
                .sum()
        })
        .collect();
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, c as i64, 12, 12]);
    b.initializer("w", &Tensor::from_f32(vec![m, c, 3, 3], w).unwrap());
    b.initializer("b", &dense_tensor(&mut r, &[m], false));
    b.node(
        "Conv",
        &["x", "w", "b"],
        &["c"],
        vec![("pads", A::Ints(vec![1; 4]))],
    );
    b.node("Relu", &["c"], &["y"], vec![]);
    b.output("y");
    out.push((b.to_bytes(), dense_tensor(&mut r, &[1, c, 12, 12], false)));
    out
}

#[test]
fn low_rank_factors_an_exactly_low_rank_weight() {
    use optc::compress::lowrank::LowRank;
    for (i, (bytes, x)) in low_rank_models().into_iter().enumerate() {
        let opts = Options {
            compress: CompressOptions {
                low_rank: Some(LowRank::Energy(0.9999)),
                ..Default::default()
            },
            ..Options::default()
        };
        let mut m = optc::compile_bytes(&bytes, &opts).unwrap();
        let r = m.report().compression.clone().expect("a report");
        assert!(
            r.layers[0].choice.starts_with("low-rank r=3")
                || r.layers[0].choice.starts_with("low-rank r=2"),
            "model {i}: {:?}",
            r.layers
        );
        assert!(r.after.flops < r.before.flops, "model {i}");
        // Two contractions now, and the same function (the weight had that rank): tract on
        // the original model is the oracle.
        let contractions = m
            .graph()
            .g
            .node_weights()
            .filter(|n| {
                let base = match &n.op {
                    optc_ir::Op::Fused { base, .. } => &**base,
                    op => op,
                };
                matches!(
                    base,
                    optc_ir::Op::MatMul | optc_ir::Op::Gemm { .. } | optc_ir::Op::Conv { .. }
                )
            })
            .count();
        assert_eq!(
            contractions,
            2,
            "model {i}: {}",
            optc_ir::text::print(m.graph())
        );
        let got = m.run(std::slice::from_ref(&x)).unwrap();
        let want = optc_onnx::oracle::run_tract(&bytes, std::slice::from_ref(&x)).unwrap();
        let d = optc::compare(&got[0], &want[0], 1e-3, 1e-4).unwrap();
        assert!(d.allclose, "model {i}: {d:?}");
    }
}

/// Channel pruning against an independent computation: removing a producer's output channels
/// (and the consumer's inputs that read them) computes what the original model computes when
/// the consumer's weights on those channels are zero, which tract runs on the original model.
#[test]
fn channel_pruning_matches_zeroed_consumer_weights() {
    for flatten in [false, true] {
        let mut r = Rng::new(if flatten { 31 } else { 30 });
        let (c, m, hw) = (3usize, 8usize, 6usize);
        let w1 = dense_tensor(&mut r, &[m, c, 3, 3], false);
        let b1 = dense_tensor(&mut r, &[m], false);
        // Consumer: a 3x3 conv 8 -> 5 after a 2x2 max pool, or a Gemm on the flattened map.
        let (w2_shape, per): (Vec<usize>, usize) = if flatten {
            (vec![10, m * hw * hw], hw * hw)
        } else {
            (vec![5, m, 3, 3], 1)
        };
        let w2 = dense_tensor(&mut r, &w2_shape, false);
        let build = |w2: &Tensor| {
            let mut b = ModelBuilder::new(17);
            b.input("x", DType::F32, &[2, c as i64, hw as i64, hw as i64]);
            b.initializer("w1", &w1);
            b.initializer("b1", &b1);
            b.initializer("w2", w2);
            let pads = ("pads", A::Ints(vec![1; 4]));
            b.node("Conv", &["x", "w1", "b1"], &["c1"], vec![pads.clone()]);
            b.node("Relu", &["c1"], &["r1"], vec![]);
            if flatten {
                b.node("Flatten", &["r1"], &["f"], vec![]);
                b.node("Gemm", &["f", "w2"], &["y"], vec![("transB", A::Int(1))]);
            } else {
                b.node(
                    "MaxPool",
                    &["r1"],
                    &["p"],
                    vec![
                        ("kernel_shape", A::Ints(vec![2, 2])),
                        ("strides", A::Ints(vec![2, 2])),
                    ],
                );
                b.node("Conv", &["p", "w2"], &["y"], vec![pads]);
            }
            b.output("y");
            b.to_bytes()
        };
        let bytes = build(&w2);
        let opts = |reconstruct: bool| Options {
            compress: CompressOptions {
                prune_channels: vec![0.5],
                reconstruct,
                ..Default::default()
            },
            ..Options::default()
        };
        let mut m8 = optc::compile_bytes(&bytes, &opts(false)).unwrap();
        let rep = m8.report().compression.clone().expect("a report");
        assert!(
            rep.layers
                .iter()
                .any(|l| l.choice == "channels pruned 50% (4 of 8 kept)"),
            "flatten {flatten}: {:?}",
            rep.layers
        );
        assert!(rep.after.parameters < rep.before.parameters);
        // The channels with the smallest L1 norm of w1, zeroed in w2 instead.
        let v1 = w1.as_f32().unwrap();
        let norm = |o: usize| {
            v1[o * c * 9..(o + 1) * c * 9]
                .iter()
                .map(|x| x.abs())
                .sum::<f32>()
        };
        let mut order: Vec<usize> = (0..m).collect();
        order.sort_by(|&a, &b| norm(a).total_cmp(&norm(b)));
        let removed = &order[..m / 2];
        let mut z = w2.as_f32().unwrap().to_vec();
        let inner = z.len() / w2_shape[0];
        for o in 0..w2_shape[0] {
            for &ch in removed {
                let span = if flatten {
                    ch * per..(ch + 1) * per
                } else {
                    ch * 9..(ch + 1) * 9
                };
                for i in span {
                    z[o * inner + i] = 0.0;
                }
            }
        }
        let zeroed = build(&Tensor::new(w2_shape.clone(), optc_ir::Data::F32(z)).unwrap());
        let x = dense_tensor(&mut r, &[2, c, hw, hw], false);
        let got = m8.run(std::slice::from_ref(&x)).unwrap();
        let want = optc_onnx::oracle::run_tract(&zeroed, std::slice::from_ref(&x)).unwrap();
        let d = optc::compare(&got[0], &want[0], 1e-4, 1e-5).unwrap();
        assert!(d.allclose, "flatten {flatten}: {d:?}");
        // And not the unpruned model's output.
        let orig = optc_onnx::oracle::run_tract(&bytes, std::slice::from_ref(&x)).unwrap();
        assert!(
            !optc::compare(&got[0], &orig[0], 1e-4, 1e-5)
                .unwrap()
                .allclose
        );
        // By default the consumer's kept weights are re-fit to its calibration inputs: the
        // same channels go, and on those inputs the output moves less than with the plain
        // cut (calibration: x itself).
        let d =
            std::env::temp_dir().join(format!("optc-channels-{}-{flatten}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("input_0.pb"), optc_onnx::tensor_to_pb(&x, "x")).unwrap();
        let mut with_cal = opts(true);
        with_cal.compress.calibrate = vec![d.clone()];
        let mut mr = optc::compile_bytes(&bytes, &with_cal).unwrap();
        let rep = mr.report().compression.clone().expect("a report");
        assert!(
            rep.layers
                .iter()
                .any(|l| l.choice == "channels pruned 50% (4 of 8 kept), reconstructed"),
            "{:?}",
            rep.layers
        );
        let refit = mr.run(std::slice::from_ref(&x)).unwrap();
        let err = |a: &Tensor| {
            a.as_f32()
                .unwrap()
                .iter()
                .zip(orig[0].as_f32().unwrap())
                .map(|(p, q)| ((p - q) as f64).powi(2))
                .sum::<f64>()
        };
        assert!(
            err(&refit[0]) < err(&got[0]),
            "{} vs {}",
            err(&refit[0]),
            err(&got[0])
        );
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// `--prune-channels 0.5`, the plain cut (no re-fit).
fn half_the_channels() -> Options {
    Options {
        compress: CompressOptions {
            prune_channels: vec![0.5],
            reconstruct: false,
            ..Default::default()
        },
        ..Options::default()
    }
}

/// A dependency group across a residual add, a depthwise follower and a concat: the stem
/// conv A and the block's last conv C write the residual stream (C through the add), the
/// depthwise conv E follows it channel for channel, the concat joins E's channels with conv
/// G's; B, D and H read them. Pruning the group removes the same stream channels from A, C,
/// the add and E, and G's own weakest ones; the chain B -> C is pruned too, so B loses
/// inputs and outputs. The oracle is the original model run by tract with every consumer's
/// weights on the removed channels zeroed (every other path of a removed channel ends in
/// those consumers). A group that reaches a graph output is not pruned.
#[test]
fn channel_groups_prune_across_residual_depthwise_and_concat() {
    let mut r = Rng::new(41);
    let (c, s, hw) = (3usize, 8usize, 6usize);
    let wa = dense_tensor(&mut r, &[s, c, 3, 3], false);
    let ba = dense_tensor(&mut r, &[s], false);
    let wb = dense_tensor(&mut r, &[6, s, 3, 3], false);
    let wc = dense_tensor(&mut r, &[s, 6, 1, 1], false);
    let wd = dense_tensor(&mut r, &[5, s, 1, 1], false);
    let we = dense_tensor(&mut r, &[s, 1, 3, 3], false);
    let be = dense_tensor(&mut r, &[s], false);
    let wg = dense_tensor(&mut r, &[4, c, 1, 1], false);
    let wh = dense_tensor(&mut r, &[5, s + 4, 1, 1], false);
    let build = |wb: &Tensor, wc: &Tensor, wd: &Tensor, wh: &Tensor, stream_out: bool| {
        let mut b = ModelBuilder::new(17);
        b.input("x", DType::F32, &[2, c as i64, hw as i64, hw as i64]);
        for (n, t) in [
            ("wa", &wa),
            ("ba", &ba),
            ("wb", wb),
            ("wc", wc),
            ("wd", wd),
            ("we", &we),
            ("be", &be),
            ("wg", &wg),
            ("wh", wh),
        ] {
            b.initializer(n, t);
        }
        let pads = ("pads", A::Ints(vec![1; 4]));
        b.node("Conv", &["x", "wa", "ba"], &["a"], vec![pads.clone()]);
        b.node("Relu", &["a"], &["s1"], vec![]);
        b.node("Conv", &["s1", "wb"], &["b0"], vec![pads.clone()]);
        b.node("Relu", &["b0"], &["h"], vec![]);
        b.node("Conv", &["h", "wc"], &["c0"], vec![]);
        b.node("Add", &["c0", "s1"], &["sum"], vec![]);
        b.node("Relu", &["sum"], &["s2"], vec![]);
        b.node("Conv", &["s2", "wd"], &["y1"], vec![]);
        b.node(
            "Conv",
            &["s2", "we", "be"],
            &["e0"],
            vec![pads, ("group", A::Int(s as i64))],
        );
        b.node("Relu", &["e0"], &["e"], vec![]);
        b.node("Conv", &["x", "wg"], &["g"], vec![]);
        b.node("Concat", &["e", "g"], &["cat"], vec![("axis", A::Int(1))]);
        b.node("Conv", &["cat", "wh"], &["y2"], vec![]);
        b.output("y1");
        b.output("y2");
        if stream_out {
            b.output("s2");
        }
        b.to_bytes()
    };
    let opts = half_the_channels();
    let bytes = build(&wb, &wc, &wd, &wh, false);
    let mut m = optc::compile_bytes(&bytes, &opts).unwrap();
    let rep = m.report().compression.clone().expect("a report");
    // The positions ranked as the group ranks them: stream channel j by |A_j| + |C_j|,
    // G's channel j by |G_j|; the 6 weakest of the 12 go.
    let l1 = |t: &Tensor, o: usize| {
        let v = t.as_f32().unwrap();
        let per = v.len() / t.shape()[0];
        v[o * per..(o + 1) * per]
            .iter()
            .map(|x| x.abs() as f64)
            .sum::<f64>()
    };
    let importance: Vec<f64> = (0..s)
        .map(|j| l1(&wa, j) + l1(&wc, j))
        .chain((0..4).map(|j| l1(&wg, j)))
        .collect();
    let mut order: Vec<usize> = (0..s + 4).collect();
    order.sort_by(|&a, &b| importance[a].total_cmp(&importance[b]));
    // The 6 weakest go, but every concat input keeps a channel: G's strongest if all 4 of
    // its would go.
    let mut removed = order[..6].to_vec();
    if (s..s + 4).all(|p| removed.contains(&p)) {
        let best = *order.iter().rev().find(|&&p| p >= s).unwrap();
        removed.retain(|&p| p != best);
    }
    let label = format!(
        "channels pruned 50% ({} of 12 kept; a group of 3 producers, 3 consumers)",
        12 - removed.len()
    );
    // The chain B -> C inside the block is a group of its own; B is its producer and the
    // stream's consumer, narrowed on both sides.
    let mut choices: Vec<&str> = rep.layers.iter().map(|l| l.choice.as_str()).collect();
    choices.sort_unstable();
    assert_eq!(
        choices,
        ["channels pruned 50% (3 of 6 kept)", label.as_str()],
        "{:?}",
        rep.layers
    );
    assert!(rep.after.parameters < rep.before.parameters);
    let zero_inputs = |t: &Tensor, removed: &[usize], offset: usize, count: usize| {
        let mut v = t.as_f32().unwrap().to_vec();
        let (outs, ins) = (t.shape()[0], t.shape()[1]);
        let per = v.len() / (outs * ins);
        for o in 0..outs {
            for &p in removed {
                if p >= offset && p < offset + count {
                    let at = (o * ins + p - offset) * per;
                    v[at..at + per].fill(0.0);
                }
            }
        }
        Tensor::new(t.shape().to_vec(), optc_ir::Data::F32(v)).unwrap()
    };
    // B and D read the stream (positions 0..8); H reads E's channels (0..8) then G's (8..12).
    let mut chain: Vec<usize> = (0..6).collect();
    chain.sort_by(|&a, &b| l1(&wb, a).total_cmp(&l1(&wb, b)));
    let zeroed = build(
        &zero_inputs(&wb, &removed, 0, s),
        &zero_inputs(&wc, &chain[..3], 0, 6),
        &zero_inputs(&wd, &removed, 0, s),
        &zero_inputs(&wh, &removed, 0, s + 4),
        false,
    );
    let x = dense_tensor(&mut r, &[2, c, hw, hw], false);
    let got = m.run(std::slice::from_ref(&x)).unwrap();
    let want = optc_onnx::oracle::run_tract(&zeroed, std::slice::from_ref(&x)).unwrap();
    let orig = optc_onnx::oracle::run_tract(&bytes, std::slice::from_ref(&x)).unwrap();
    for k in 0..2 {
        let d = optc::compare(&got[k], &want[k], 1e-4, 1e-5).unwrap();
        assert!(d.allclose, "output {k}: {d:?}");
        let same = optc::compare(&got[k], &orig[k], 1e-4, 1e-5).unwrap();
        assert!(!same.allclose, "output {k} unpruned");
    }
    // The stream is a graph output: none of its channels can go, so the group is not
    // pruned; the chain B -> C inside the block still is (B's 3 weakest outputs, C's inputs).
    let exposed = build(&wb, &wc, &wd, &wh, true);
    let mut m = optc::compile_bytes(&exposed, &opts).unwrap();
    let rep = m.report().compression.clone().expect("a report");
    let choices: Vec<&str> = rep.layers.iter().map(|l| l.choice.as_str()).collect();
    assert_eq!(
        choices,
        ["channels pruned 50% (3 of 6 kept)"],
        "{:?}",
        rep.layers
    );
    let zeroed = build(&wb, &zero_inputs(&wc, &chain[..3], 0, 6), &wd, &wh, true);
    let got = m.run(std::slice::from_ref(&x)).unwrap();
    let want = optc_onnx::oracle::run_tract(&zeroed, &[x]).unwrap();
    for k in 0..3 {
        let d = optc::compare(&got[k], &want[k], 1e-4, 1e-5).unwrap();
        assert!(d.allclose, "output {k}: {d:?}");
    }
}

/// A grouped conv whose groups have as many outputs as inputs follows a group by whole conv
/// groups: channels go two at a time (a group's output channels read both), ranked by the
/// mean L1 norm of the producer's channels in it. Oracle: the original model with the
/// consumer's weights on the removed channels zeroed, run by tract.
#[test]
fn channel_groups_remove_whole_groups_of_a_grouped_conv() {
    let mut r = Rng::new(43);
    let (c, m, hw) = (3usize, 8usize, 6usize);
    let wa = dense_tensor(&mut r, &[m, c, 3, 3], false);
    let ba = dense_tensor(&mut r, &[m], false);
    let we = dense_tensor(&mut r, &[m, 2, 3, 3], false);
    let be = dense_tensor(&mut r, &[m], false);
    let wh = dense_tensor(&mut r, &[5, m, 1, 1], false);
    let build = |wh: &Tensor| {
        let mut b = ModelBuilder::new(17);
        b.input("x", DType::F32, &[2, c as i64, hw as i64, hw as i64]);
        for (n, t) in [
            ("wa", &wa),
            ("ba", &ba),
            ("we", &we),
            ("be", &be),
            ("wh", wh),
        ] {
            b.initializer(n, t);
        }
        let pads = ("pads", A::Ints(vec![1; 4]));
        b.node("Conv", &["x", "wa", "ba"], &["a"], vec![pads.clone()]);
        b.node("Relu", &["a"], &["s"], vec![]);
        b.node(
            "Conv",
            &["s", "we", "be"],
            &["e0"],
            vec![pads, ("group", A::Int(4))],
        );
        b.node("Relu", &["e0"], &["e"], vec![]);
        b.node("Conv", &["e", "wh"], &["y"], vec![]);
        b.output("y");
        b.to_bytes()
    };
    let opts = half_the_channels();
    let bytes = build(&wh);
    let mut model = optc::compile_bytes(&bytes, &opts).unwrap();
    let rep = model.report().compression.clone().expect("a report");
    let choices: Vec<&str> = rep.layers.iter().map(|l| l.choice.as_str()).collect();
    assert_eq!(
        choices,
        ["channels pruned 50% (4 of 8 kept)"],
        "{:?}",
        rep.layers
    );
    // The two conv groups (channel pairs) of A with the smallest mean L1 norm go.
    let v = wa.as_f32().unwrap();
    let per = v.len() / m;
    let l1 = |o: usize| {
        v[o * per..(o + 1) * per]
            .iter()
            .map(|x| x.abs() as f64)
            .sum::<f64>()
    };
    let mut pairs: Vec<usize> = (0..4).collect();
    pairs.sort_by(|&a, &b| (l1(2 * a) + l1(2 * a + 1)).total_cmp(&(l1(2 * b) + l1(2 * b + 1))));
    let mut z = wh.as_f32().unwrap().to_vec();
    for o in 0..5 {
        for &g in &pairs[..2] {
            z[o * m + 2 * g] = 0.0;
            z[o * m + 2 * g + 1] = 0.0;
        }
    }
    let zeroed = build(&Tensor::new(vec![5, m, 1, 1], optc_ir::Data::F32(z)).unwrap());
    let x = dense_tensor(&mut r, &[2, c, hw, hw], false);
    let got = model.run(std::slice::from_ref(&x)).unwrap();
    let want = optc_onnx::oracle::run_tract(&zeroed, std::slice::from_ref(&x)).unwrap();
    let d = optc::compare(&got[0], &want[0], 1e-4, 1e-5).unwrap();
    assert!(d.allclose, "{d:?}");
    let orig = optc_onnx::oracle::run_tract(&bytes, &[x]).unwrap();
    assert!(
        !optc::compare(&got[0], &orig[0], 1e-4, 1e-5)
            .unwrap()
            .allclose
    );
}
