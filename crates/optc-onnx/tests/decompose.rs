//! Ops imported as compositions of other ops (`import/decompose.rs`) compute what the ONNX
//! spec's formula computes, written here independently in f64 per element, and what tract
//! computes where tract implements the op.

mod common;

use common::{import, run_tract};
use optc_ir::{DType, Data, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

fn rand_t(shape: &[usize], seed: &mut u64, scale: f32) -> Tensor {
    common::rand_scaled(shape, seed, scale)
}

fn interp(m: &ModelBuilder, inputs: &[Tensor]) -> Vec<Tensor> {
    optc_ir::interp::run(&import(m), inputs).unwrap_or_else(|e| panic!("{e}"))
}

fn assert_close(ours: &Tensor, want: &[f64], shape: &[usize], what: &str) {
    assert_eq!(ours.shape(), shape, "{what}");
    for (i, (x, y)) in ours.to_f64_vec().iter().zip(want).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
            "{what} [{i}]: {x} vs {y}"
        );
    }
}

fn against_tract(m: &ModelBuilder, inputs: &[Tensor], what: &str) {
    let ours = interp(m, inputs);
    let theirs = run_tract(&m.to_bytes(), inputs);
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_close(a, &b.to_f64_vec(), b.shape(), what);
    }
}

fn unary(opset: i64, op: &str, attrs: Vec<(&str, Attr)>, shape: &[i64]) -> ModelBuilder {
    let mut m = ModelBuilder::new(opset);
    m.input("x", DType::F32, shape)
        .node(op, &["x"], &["y"], attrs)
        .output("y");
    m
}

#[test]
fn activations_follow_their_formulas() {
    type Case<'a> = (&'a str, i64, Vec<(&'a str, Attr)>, fn(f64) -> f64);
    let cases: Vec<Case> = vec![
        (
            "Elu",
            13,
            vec![],
            |x| if x > 0.0 { x } else { x.exp() - 1.0 },
        ),
        ("Elu", 13, vec![("alpha", Attr::Float(0.5))], |x| {
            if x > 0.0 {
                x
            } else {
                0.5 * (x.exp() - 1.0)
            }
        }),
        ("Selu", 13, vec![], |x| {
            let (a, g) = (1.673_263_242_354_377_3, 1.050_700_987_355_480_5);
            if x > 0.0 {
                g * x
            } else {
                g * a * (x.exp() - 1.0)
            }
        }),
        ("Celu", 13, vec![("alpha", Attr::Float(2.0))], |x| {
            x.max(0.0) + (2.0 * ((x / 2.0).exp() - 1.0)).min(0.0)
        }),
        ("Softplus", 13, vec![], softplus_f),
        ("Softsign", 13, vec![], |x| x / (1.0 + x.abs())),
        ("Mish", 18, vec![], |x| x * ((1.0 + x.exp()).ln()).tanh()),
        (
            "ThresholdedRelu",
            13,
            vec![("alpha", Attr::Float(0.3))],
            |x| {
                if x > 0.3 {
                    x
                } else {
                    0.0
                }
            },
        ),
        (
            "Shrink",
            13,
            vec![("lambd", Attr::Float(0.4)), ("bias", Attr::Float(0.1))],
            |x| {
                if x < -0.4 {
                    x + 0.1
                } else if x > 0.4 {
                    x - 0.1
                } else {
                    0.0
                }
            },
        ),
        ("Gelu", 20, vec![], |x| {
            0.5 * x * (1.0 + erf(x / 2f64.sqrt()))
        }),
        (
            "Gelu",
            20,
            vec![("approximate", Attr::Str("tanh".into()))],
            |x| {
                let k = (2.0 / std::f64::consts::PI).sqrt();
                0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
            },
        ),
    ];
    let mut s = 11u64;
    for (op, opset, attrs, f) in cases {
        let m = unary(opset, op, attrs, &[4, 25]);
        let mut x = rand_t(&[4, 25], &mut s, 6.0);
        if let Data::F32(v) = x.data_mut() {
            // Large magnitudes, where naive softplus overflows.
            v[0] = 100.0;
            v[1] = -100.0;
        }
        let want: Vec<f64> = x.to_f64_vec().into_iter().map(f).collect();
        let got = interp(&m, &[x]);
        assert_close(&got[0], &want, &[4, 25], op);
    }
}

fn softplus_f(x: f64) -> f64 {
    // ln(1 + e^x) without overflow.
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// erf by its series / continued fraction is overkill here: Abramowitz-Stegun 7.1.26 is
/// accurate to 1.5e-7, enough for a 1e-5 comparison.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let y = 1.0
        - (((((1.061_405_429 * t - 1.453_152_027) * t) + 1.421_413_741) * t - 0.284_496_736) * t
            + 0.254_829_592)
            * t
            * (-x * x).exp();
    y.copysign(x)
}

#[test]
fn prelu_broadcasts_its_slope_like_tract() {
    let mut s = 2u64;
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3, 4])
        .initializer("slope", &rand_t(&[3, 1], &mut s, 1.0))
        .node("PRelu", &["x", "slope"], &["y"], vec![])
        .output("y");
    against_tract(&m, &[rand_t(&[2, 3, 4], &mut s, 3.0)], "PRelu");
}

#[test]
fn log_softmax_matches_tract_at_both_opsets() {
    let mut s = 3u64;
    for (opset, axis) in [(13, -1), (13, 1), (11, 1), (11, 2)] {
        let m = unary(
            opset,
            "LogSoftmax",
            vec![("axis", Attr::Int(axis))],
            &[2, 3, 5],
        );
        against_tract(
            &m,
            &[rand_t(&[2, 3, 5], &mut s, 30.0)],
            &format!("LogSoftmax opset {opset} axis {axis}"),
        );
    }
}

#[test]
fn derived_reductions_match_tract() {
    let mut s = 4u64;
    for op in [
        "ReduceL1",
        "ReduceSumSquare",
        "ReduceLogSum",
        "ReduceLogSumExp",
    ] {
        for keepdims in [0, 1] {
            let m = unary(
                13,
                op,
                vec![
                    ("axes", Attr::Ints(vec![-1, 0])),
                    ("keepdims", Attr::Int(keepdims)),
                ],
                &[3, 2, 4],
            );
            let mut x = rand_t(&[3, 2, 4], &mut s, 4.0);
            if op == "ReduceLogSum" {
                // log of a sum: keep the sums positive.
                x = Tensor::from_f32(
                    vec![3, 2, 4],
                    x.to_f64_vec()
                        .iter()
                        .map(|v| v.abs() as f32 + 0.1)
                        .collect(),
                )
                .unwrap();
            }
            against_tract(&m, &[x], &format!("{op} keepdims {keepdims}"));
        }
    }
    // opset 18: axes as an input.
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F32, &[3, 4])
        .initializer("axes", &Tensor::from_i64(vec![1], vec![1]).unwrap())
        .node("ReduceSumSquare", &["x", "axes"], &["y"], vec![])
        .output("y");
    against_tract(
        &m,
        &[rand_t(&[3, 4], &mut s, 2.0)],
        "ReduceSumSquare opset 18",
    );
}

#[test]
fn movement_ops_match_tract() {
    let mut s = 5u64;
    // Tile
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .initializer("r", &Tensor::from_i64(vec![2], vec![3, 2]).unwrap())
        .node("Tile", &["x", "r"], &["y"], vec![])
        .output("y");
    against_tract(&m, &[rand_t(&[2, 3], &mut s, 1.0)], "Tile");
    // DepthToSpace both modes, SpaceToDepth
    for mode in ["DCR", "CRD"] {
        let m = unary(
            13,
            "DepthToSpace",
            vec![
                ("blocksize", Attr::Int(2)),
                ("mode", Attr::Str(mode.into())),
            ],
            &[1, 8, 2, 3],
        );
        against_tract(&m, &[rand_t(&[1, 8, 2, 3], &mut s, 1.0)], mode);
    }
    let m = unary(
        13,
        "SpaceToDepth",
        vec![("blocksize", Attr::Int(2))],
        &[1, 2, 4, 6],
    );
    against_tract(&m, &[rand_t(&[1, 2, 4, 6], &mut s, 1.0)], "SpaceToDepth");
}

#[test]
fn trilu_keeps_the_triangle() {
    let mut s = 6u64;
    for upper in [0, 1] {
        for k in [-1i64, 0, 2] {
            let mut m = ModelBuilder::new(14);
            m.input("x", DType::F32, &[2, 3, 4])
                .initializer("k", &Tensor::scalar_i64(k))
                .node(
                    "Trilu",
                    &["x", "k"],
                    &["y"],
                    vec![("upper", Attr::Int(upper))],
                )
                .output("y");
            let x = rand_t(&[2, 3, 4], &mut s, 1.0);
            let xv = x.to_f64_vec();
            let want: Vec<f64> = (0..24)
                .map(|i| {
                    let (r, c) = (((i / 4) % 3) as i64, (i % 4) as i64);
                    let keep = if upper == 1 { c - r >= k } else { c - r <= k };
                    if keep {
                        xv[i]
                    } else {
                        0.0
                    }
                })
                .collect();
            let got = interp(&m, &[x]);
            assert_close(&got[0], &want, &[2, 3, 4], &format!("upper {upper} k {k}"));
        }
    }
}

#[test]
fn one_hot_with_negative_indices_and_an_axis() {
    let mut m = ModelBuilder::new(11);
    m.input("i", DType::I64, &[2, 2])
        .initializer("depth", &Tensor::scalar_i64(4))
        .initializer(
            "values",
            &Tensor::from_f32(vec![2], vec![-1.0, 5.0]).unwrap(),
        )
        .node(
            "OneHot",
            &["i", "depth", "values"],
            &["y"],
            vec![("axis", Attr::Int(1))],
        )
        .output("y");
    let idx = Tensor::from_i64(vec![2, 2], vec![0, 3, -1, 7]).unwrap();
    let got = interp(&m, &[idx]);
    // out[a][d][b] = on if index[a][b] (wrapped) == d.
    let wrapped = [[0i64, 3], [3, 7]];
    let mut want = vec![];
    for row in wrapped {
        for d in 0..4 {
            for v in row {
                want.push(if v == d { 5.0 } else { -1.0 });
            }
        }
    }
    assert_close(&got[0], &want, &[2, 4, 2], "OneHot");
}

#[test]
fn instance_and_lp_normalization_match_tract() {
    let mut s = 7u64;
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3, 4, 5])
        .initializer("scale", &rand_t(&[3], &mut s, 1.0))
        .initializer("bias", &rand_t(&[3], &mut s, 1.0))
        .node(
            "InstanceNormalization",
            &["x", "scale", "bias"],
            &["y"],
            vec![("epsilon", Attr::Float(1e-3))],
        )
        .output("y");
    against_tract(
        &m,
        &[rand_t(&[2, 3, 4, 5], &mut s, 3.0)],
        "InstanceNormalization",
    );
    for p in [1, 2] {
        let m = unary(
            13,
            "LpNormalization",
            vec![("p", Attr::Int(p)), ("axis", Attr::Int(1))],
            &[3, 4],
        );
        against_tract(&m, &[rand_t(&[3, 4], &mut s, 1.0)], &format!("Lp {p}"));
    }
}

#[test]
fn group_normalization_by_the_formula() {
    let mut s = 8u64;
    let (n, c, hw, groups) = (2usize, 4usize, 3usize, 2usize);
    let x = rand_t(&[n, c, hw], &mut s, 2.0);
    let scale = rand_t(&[c], &mut s, 1.0);
    let bias = rand_t(&[c], &mut s, 1.0);
    let mut m = ModelBuilder::new(21);
    m.input("x", DType::F32, &[n as i64, c as i64, hw as i64])
        .initializer("scale", &scale)
        .initializer("bias", &bias)
        .node(
            "GroupNormalization",
            &["x", "scale", "bias"],
            &["y"],
            vec![("num_groups", Attr::Int(groups as i64))],
        )
        .output("y");
    let (xv, sv, bv) = (x.to_f64_vec(), scale.to_f64_vec(), bias.to_f64_vec());
    let per = c / groups * hw;
    let mut want = vec![0.0; xv.len()];
    for b in 0..n {
        for g in 0..groups {
            let base = b * c * hw + g * per;
            let v = &xv[base..base + per];
            let mean = v.iter().sum::<f64>() / per as f64;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / per as f64;
            for i in 0..per {
                let ch = g * (c / groups) + i / hw;
                want[base + i] = (v[i] - mean) / (var + 1e-5).sqrt() * sv[ch] + bv[ch];
            }
        }
    }
    let got = interp(&m, &[x]);
    assert_close(&got[0], &want, &[n, c, hw], "GroupNormalization");
}

#[test]
fn mean_and_cast_like_match_tract() {
    let mut s = 9u64;
    let mut m = ModelBuilder::new(13);
    m.input("a", DType::F32, &[2, 3])
        .input("b", DType::F32, &[3])
        .input("c", DType::F32, &[2, 1])
        .node("Mean", &["a", "b", "c"], &["y"], vec![])
        .output("y");
    against_tract(
        &m,
        &[
            rand_t(&[2, 3], &mut s, 1.0),
            rand_t(&[3], &mut s, 1.0),
            rand_t(&[2, 1], &mut s, 1.0),
        ],
        "Mean",
    );
    let mut m = ModelBuilder::new(15);
    m.input("x", DType::F32, &[4])
        .initializer("like", &Tensor::scalar_i64(0))
        .node("CastLike", &["x", "like"], &["y"], vec![])
        .output("y");
    let got = interp(
        &m,
        &[Tensor::from_f32(vec![4], vec![1.7, -2.2, 3.0, 0.4]).unwrap()],
    );
    assert_eq!(got[0].to_i64_vec(), vec![1, -2, 3, 0]);
}

/// NegativeLogLikelihoodLoss / SoftmaxCrossEntropyLoss by the spec's loops: per element the
/// negated (log-softmaxed) input at the target class, times the target's weight; ignored
/// targets count neither loss nor weight; `mean` divides by the weights picked.
fn loss_reference(
    x: &[f64],
    (n, c, d): (usize, usize, usize),
    target: &[i64],
    weight: Option<&[f64]>,
    ignore: Option<i64>,
    softmax: bool,
) -> (Vec<f64>, f64, f64) {
    let mut losses = vec![0.0; n * d];
    let (mut total, mut weights) = (0.0, 0.0);
    for b in 0..n {
        for k in 0..d {
            let at = |cls: usize| x[(b * c + cls) * d + k];
            let t = target[b * d + k];
            if Some(t) == ignore {
                continue;
            }
            let mut v = at(t as usize);
            if softmax {
                let m = (0..c).map(at).fold(f64::NEG_INFINITY, f64::max);
                let lse = (0..c).map(|j| (at(j) - m).exp()).sum::<f64>().ln() + m;
                v -= lse;
            }
            let w = weight.map_or(1.0, |w| w[t as usize]);
            losses[b * d + k] = -v * w;
            total += -v * w;
            weights += w;
        }
    }
    (losses, total, weights)
}

#[test]
fn losses_follow_the_spec() {
    let mut s = 12u64;
    let (n, c, d) = (3usize, 4usize, 5usize);
    let x = rand_t(&[n, c, d], &mut s, 3.0);
    let target: Vec<i64> = (0..n * d).map(|i| ((i * 7 + 1) % c) as i64).collect();
    let weight = rand_t(&[c], &mut s, 1.0);
    let wv: Vec<f64> = weight.to_f64_vec().iter().map(|w| w.abs() + 0.1).collect();
    let weight = Tensor::from_f32(vec![c], wv.iter().map(|&w| w as f32).collect()).unwrap();
    let xv = x.to_f64_vec();
    let ti = Tensor::from_i64(vec![n, d], target.clone()).unwrap();
    for softmax in [false, true] {
        let op = if softmax {
            "SoftmaxCrossEntropyLoss"
        } else {
            "NegativeLogLikelihoodLoss"
        };
        for (reduction, ignore, weighted) in [
            ("mean", Some(0), true),
            ("sum", None, false),
            ("none", Some(2), true),
            ("mean", None, false),
        ] {
            let mut m = ModelBuilder::new(13);
            m.input("x", DType::F32, &[n as i64, c as i64, d as i64])
                .input("t", DType::I64, &[n as i64, d as i64]);
            let mut ins = vec!["x", "t"];
            if weighted {
                m.initializer("w", &weight);
                ins.push("w");
            }
            let mut attrs = vec![("reduction", Attr::Str(reduction.into()))];
            if let Some(i) = ignore {
                attrs.push(("ignore_index", Attr::Int(i)));
            }
            m.node(op, &ins, &["y"], attrs).output("y");
            let got = interp(&m, &[x.clone(), ti.clone()]);
            let (losses, total, weights) = loss_reference(
                &xv,
                (n, c, d),
                &target,
                weighted.then_some(&wv[..]),
                ignore,
                softmax,
            );
            let what = format!("{op} {reduction} {ignore:?} {weighted}");
            match reduction {
                "none" => assert_close(&got[0], &losses, &[n, d], &what),
                "sum" => assert_close(&got[0], &[total], &[], &what),
                _ => assert_close(&got[0], &[total / weights], &[], &what),
            }
        }
    }
}
