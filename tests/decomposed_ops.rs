//! Ops imported as compositions of IR ops (`import/decompose.rs`): LRN, LpPool,
//! CenterCropPad, Swish, SwiGLU, the window functions, EyeLike and LayerNormalization's
//! statistics outputs. Against tract where it has the op, else against the spec's formula
//! computed here.

mod common;

use common::*;
use optc::{DType, Data, Options, Tensor};
use optc_onnx::builder::{Attr as A, ModelBuilder};

fn run_model(b: &ModelBuilder, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut m = optc::compile_bytes(&b.to_bytes(), &Options::default()).unwrap();
    m.run(inputs).unwrap()
}

fn close(got: &Tensor, want: &[f64], what: &str) {
    let g = got.to_f64_vec();
    assert_eq!(g.len(), want.len(), "{what}");
    for (k, (a, b)) in g.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
            "{what} [{k}]: {a} vs {b}"
        );
    }
}

#[test]
fn lrn_against_tract() {
    let mut r = Rng::new(1);
    for size in [1, 3, 4, 5] {
        check_op(
            &format!("LRN size {size}"),
            "LRN",
            13,
            &[("x", r.tensor(&[2, 6, 3, 4], -2.0, 2.0), false)],
            vec![
                ("size", A::Int(size)),
                ("alpha", A::Float(0.02)),
                ("beta", A::Float(0.6)),
                ("bias", A::Float(1.5)),
            ],
            1,
        );
    }
}

/// `(sum of |x|^p over the window)^(1/p)` by direct loops, for [1, 1, H, W].
fn lp_pool_reference(
    x: &Tensor,
    k: usize,
    stride: usize,
    pad: usize,
    p: i32,
) -> (Vec<usize>, Vec<f64>) {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let v = x.to_f64_vec();
    let oh = (h + 2 * pad - k) / stride + 1;
    let ow = (w + 2 * pad - k) / stride + 1;
    let mut out = vec![];
    for i in 0..oh {
        for j in 0..ow {
            let mut sum = 0.0;
            for di in 0..k {
                for dj in 0..k {
                    let (si, sj) = (
                        (i * stride + di) as i64 - pad as i64,
                        (j * stride + dj) as i64 - pad as i64,
                    );
                    if si >= 0 && sj >= 0 && (si as usize) < h && (sj as usize) < w {
                        sum += v[si as usize * w + sj as usize].abs().powi(p);
                    }
                }
            }
            out.push(sum.powf(1.0 / p as f64));
        }
    }
    (vec![1, 1, oh, ow], out)
}

#[test]
fn lp_pool_sums_powers_with_zero_padding() {
    let x = Rng::new(2).tensor(&[1, 1, 6, 7], -2.0, 2.0);
    for (k, stride, pad, p) in [(2, 1, 0, 2), (3, 2, 1, 2), (3, 1, 1, 3), (2, 2, 0, 1)] {
        let mut b = ModelBuilder::new(18);
        b.input("x", DType::F32, &[1, 1, 6, 7]);
        b.node(
            "LpPool",
            &["x"],
            &["y"],
            vec![
                ("kernel_shape", A::Ints(vec![k as i64; 2])),
                ("strides", A::Ints(vec![stride as i64; 2])),
                ("pads", A::Ints(vec![pad as i64; 4])),
                ("p", A::Int(p as i64)),
            ],
        );
        b.output("y");
        let y = run_model(&b, std::slice::from_ref(&x));
        let (shape, want) = lp_pool_reference(&x, k, stride, pad, p);
        assert_eq!(y[0].shape(), shape.as_slice());
        close(&y[0], &want, &format!("k{k} s{stride} p{pad} p={p}"));
    }
}

#[test]
fn center_crop_pad_crops_and_pads_around_the_center() {
    let x = Tensor::from_i64(vec![3, 4], (0..12).collect()).unwrap();
    let mut b = ModelBuilder::new(18);
    b.input("x", DType::I64, &[3, 4]);
    b.initializer("shape", &Tensor::from_i64(vec![2], vec![6, 1]).unwrap());
    b.node("CenterCropPad", &["x", "shape"], &["y"], vec![]);
    b.output("y");
    let y = run_model(&b, std::slice::from_ref(&x));
    // rows: 3 -> 6 pads 1 before, 2 after; cols: 4 -> 1 keeps column (4 - 1) / 2 = 1
    assert_eq!(y[0].shape(), &[6, 1]);
    assert_eq!(y[0].to_i64_vec(), vec![0, 1, 5, 9, 0, 0]);
}

#[test]
fn swish_and_swiglu_follow_their_formulas() {
    let mut r = Rng::new(3);
    let (a, g) = (r.tensor(&[2, 5], -4.0, 4.0), r.tensor(&[2, 5], -1.0, 1.0));
    let mut b = ModelBuilder::new(24);
    b.input("a", DType::F32, &[2, 5])
        .input("g", DType::F32, &[2, 5]);
    b.node("Swish", &["a"], &["s"], vec![("alpha", A::Float(1.5))]);
    b.node("SwiGLU", &["a", "g"], &["t"], vec![]);
    b.output("s").output("t");
    let y = run_model(&b, &[a.clone(), g.clone()]);
    let av = a.to_f64_vec();
    let swish: Vec<f64> = av.iter().map(|v| v / (1.0 + (-1.5 * v).exp())).collect();
    let glu: Vec<f64> = av
        .iter()
        .zip(g.to_f64_vec())
        .map(|(v, w)| v / (1.0 + (-v).exp()) * w)
        .collect();
    close(&y[0], &swish, "Swish");
    close(&y[1], &glu, "SwiGLU");
}

#[test]
fn window_functions_and_eye_like() {
    let n = 7usize;
    for (op, periodic) in [
        ("HannWindow", 1),
        ("HammingWindow", 0),
        ("BlackmanWindow", 1),
    ] {
        let mut b = ModelBuilder::new(17);
        b.initializer("size", &Tensor::scalar_i64(n as i64));
        b.node(op, &["size"], &["y"], vec![("periodic", A::Int(periodic))]);
        b.output("y");
        let y = run_model(&b, &[]);
        let len = if periodic == 1 {
            n as f64
        } else {
            n as f64 - 1.0
        };
        let pi = std::f64::consts::PI;
        let want: Vec<f64> = (0..n)
            .map(|i| {
                let t = i as f64 / len;
                match op {
                    "HannWindow" => 0.5 - 0.5 * (2.0 * pi * t).cos(),
                    "HammingWindow" => 0.543_478_26 - 0.456_521_74 * (2.0 * pi * t).cos(),
                    _ => 0.42 - 0.5 * (2.0 * pi * t).cos() + 0.08 * (4.0 * pi * t).cos(),
                }
            })
            .collect();
        close(&y[0], &want, op);
    }
    check_op(
        "EyeLike k=1",
        "EyeLike",
        13,
        &[("x", Rng::new(4).tensor(&[3, 5], -1.0, 1.0), false)],
        vec![("k", A::Int(1))],
        1,
    );
}

#[test]
fn layer_norm_statistics_outputs() {
    let x = Rng::new(5).tensor(&[2, 3, 4], -2.0, 2.0);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2, 3, 4]);
    b.initializer(
        "scale",
        &Tensor::from_f32(vec![3, 4], vec![1.0; 12]).unwrap(),
    );
    b.node(
        "LayerNormalization",
        &["x", "scale"],
        &["y", "mean", "inv"],
        vec![("axis", A::Int(1)), ("epsilon", A::Float(1e-3))],
    );
    b.output("y").output("mean").output("inv");
    let y = run_model(&b, std::slice::from_ref(&x));
    let v = x.to_f64_vec();
    let (mut means, mut invs, mut normed) = (vec![], vec![], vec![]);
    for row in v.chunks(12) {
        let m = row.iter().sum::<f64>() / 12.0;
        let var = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 12.0;
        let inv = 1.0 / (var + 1e-3).sqrt();
        means.push(m);
        invs.push(inv);
        normed.extend(row.iter().map(|a| (a - m) * inv));
    }
    assert_eq!(y[1].shape(), &[2, 1, 1]);
    close(&y[0], &normed, "Y");
    close(&y[1], &means, "Mean");
    close(&y[2], &invs, "InvStdDev");
}

#[test]
fn rounding_and_sign_against_tract() {
    let mut r = Rng::new(6);
    for op in ["Floor", "Ceil", "Round", "Sign"] {
        let mut x = r.tensor(&[3, 7], -4.0, 4.0);
        if op == "Round" {
            // ties: half-integers go to the even neighbour
            x = Tensor::from_f32(vec![8], vec![-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.49, -0.0])
                .unwrap();
        }
        check_op(op, op, 13, &[("x", x, false)], vec![], 1);
    }
    check_op(
        "Sign i64",
        "Sign",
        13,
        &[("x", r.tensor_i64(&[9], -3, 4), false)],
        vec![],
        1,
    );
}

#[test]
fn arg_extremes_reduce_min_and_hardmax_against_tract() {
    let mut r = Rng::new(7);
    // repeated values so that first and last occurrences differ
    let v: Vec<f32> = (0..60).map(|_| (r.below(5) as f32) - 2.0).collect();
    let x = Tensor::from_f32(vec![3, 4, 5], v).unwrap();
    for op in ["ArgMax", "ArgMin"] {
        for (axis, keepdims, last) in [(0, 1, 0), (1, 0, 1), (2, 1, 1), (-1, 0, 0)] {
            check_op(
                &format!("{op} axis {axis} keepdims {keepdims} last {last}"),
                op,
                13,
                &[("x", x.clone(), false)],
                vec![
                    ("axis", A::Int(axis)),
                    ("keepdims", A::Int(keepdims)),
                    ("select_last_index", A::Int(last)),
                ],
                1,
            );
        }
    }
    check_op(
        "ArgMax i64",
        "ArgMax",
        13,
        &[("x", r.tensor_i64(&[4, 6], -5, 5), false)],
        vec![("axis", A::Int(1))],
        1,
    );
    for axis in [0, 2] {
        check_op(
            &format!("Hardmax axis {axis}"),
            "Hardmax",
            13,
            &[("x", x.clone(), false)],
            vec![("axis", A::Int(axis))],
            1,
        );
    }
    check_op(
        "ReduceMin",
        "ReduceMin",
        13,
        &[("x", r.tensor(&[3, 4, 5], -2.0, 2.0), false)],
        vec![("axes", A::Ints(vec![0, 2])), ("keepdims", A::Int(0))],
        1,
    );
}

#[test]
fn integer_mod_and_float_cumsum_against_tract() {
    let a = Tensor::from_i64(vec![8], vec![7, -7, 7, -7, 0, 13, -13, 5]).unwrap();
    let b = Tensor::from_i64(vec![8], vec![3, 3, -3, -3, 4, 5, 5, -13]).unwrap();
    for fmod in [0, 1] {
        check_op(
            &format!("Mod fmod={fmod}"),
            "Mod",
            13,
            &[("a", a.clone(), false), ("b", b.clone(), false)],
            vec![("fmod", A::Int(fmod))],
            1,
        );
    }
    let x = Rng::new(8).tensor(&[2, 5, 3], -1.0, 1.0);
    for (axis, exclusive, reverse) in [(1, 0, 0), (1, 1, 0), (2, 0, 1), (0, 1, 1)] {
        check_op(
            &format!("CumSum axis {axis} exclusive {exclusive} reverse {reverse}"),
            "CumSum",
            14,
            &[
                ("x", x.clone(), false),
                ("axis", Tensor::scalar_i64(axis), true),
            ],
            vec![
                ("exclusive", A::Int(exclusive)),
                ("reverse", A::Int(reverse)),
            ],
            1,
        );
    }
}

/// CumProd (opset 26) against running products computed here: f32 (every direction, an
/// axis from the end) and int32 (wrapping).
#[test]
fn cumprod_follows_running_products() {
    let x = Rng::new(10).tensor(&[2, 5, 3], 0.5, 1.5);
    let xs = x.to_f64_vec();
    for (axis, exclusive, reverse) in [(1i64, 0, 0), (1, 1, 0), (2, 0, 1), (0, 1, 1), (-1, 1, 0)] {
        let mut b = ModelBuilder::new(26);
        b.input("x", DType::F32, &[2, 5, 3]);
        b.initializer("axis", &Tensor::scalar_i64(axis));
        b.node(
            "CumProd",
            &["x", "axis"],
            &["y"],
            vec![
                ("exclusive", A::Int(exclusive)),
                ("reverse", A::Int(reverse)),
            ],
        );
        b.output("y");
        let y = run_model(&b, std::slice::from_ref(&x))[0].to_f64_vec();
        let ax = axis.rem_euclid(3) as usize;
        let dims = [2usize, 5, 3];
        let stride = dims[ax + 1..].iter().product::<usize>();
        for (p, got) in y.iter().enumerate() {
            // The elements of p's line before it (after it, reversed), itself unless exclusive.
            let j = p / stride % dims[ax];
            let base = p - j * stride;
            let range: Vec<usize> = if reverse == 1 {
                (j + exclusive as usize..dims[ax]).collect()
            } else {
                (0..j + 1 - exclusive as usize).collect()
            };
            let want: f64 = range.iter().map(|&k| xs[base + k * stride]).product();
            let what = format!("axis {axis} exclusive {exclusive} reverse {reverse} at {p}");
            assert!(
                (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                "{what}: {got} vs {want}"
            );
        }
    }
    // int32 wraps: 2^31 becomes i32::MIN.
    let v = Tensor::from_i64(vec![6], vec![2, -3, 1 << 20, 1 << 11, 2, 5]).unwrap();
    let mut b = ModelBuilder::new(26);
    b.input("x", DType::I32, &[6]);
    b.initializer("axis", &Tensor::scalar_i64(0));
    b.node("CumProd", &["x", "axis"], &["y"], vec![]);
    b.output("y");
    let v32 = optc_ir::interp::eval_op(&optc_ir::Op::Cast { to: DType::I32 }, &[&v])
        .unwrap()
        .remove(0);
    let y = run_model(&b, &[v32])[0].to_f64_vec();
    let mut acc = 1i32;
    let want: Vec<f64> = [2, -3, 1 << 20, 1 << 11, 2, 5]
        .iter()
        .map(|&k: &i32| {
            acc = acc.wrapping_mul(k);
            acc as f64
        })
        .collect();
    assert_eq!(y, want);
}

#[test]
fn xor_and_is_inf_follow_their_definitions() {
    let mut r = Rng::new(9);
    let (p, q) = (r.tensor_bool(&[10]), r.tensor_bool(&[10]));
    let mut b = ModelBuilder::new(13);
    b.input("p", DType::Bool, &[10])
        .input("q", DType::Bool, &[10]);
    b.input("x", DType::F32, &[5]);
    b.node("Xor", &["p", "q"], &["y"], vec![]);
    b.node(
        "IsInf",
        &["x"],
        &["i"],
        vec![("detect_negative", A::Int(0))],
    );
    b.output("y").output("i");
    let x = Tensor::from_f32(
        vec![5],
        vec![1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0],
    )
    .unwrap();
    let y = run_model(&b, &[p.clone(), q.clone(), x]);
    let want: Vec<f64> = p
        .to_f64_vec()
        .iter()
        .zip(q.to_f64_vec())
        .map(|(a, b)| ((*a != 0.0) != (b != 0.0)) as u8 as f64)
        .collect();
    assert_eq!(y[0].to_f64_vec(), want);
    assert_eq!(y[1].to_f64_vec(), vec![0.0, 1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn bit_shifts_follow_the_reference_rules() {
    // int32: amounts outside 0..32 give 0, or -1 for a negative value shifted right.
    let x = Tensor::from_i64(vec![6], vec![5, -5, 1, -8, 7, -1]).unwrap();
    let k = Tensor::from_i64(vec![6], vec![1, 2, 31, 40, -1, 3]).unwrap();
    for (dir, want) in [
        ("LEFT", vec![10i64, -20, i32::MIN as i64, 0, 0, -8]),
        ("RIGHT", vec![2, -2, 0, -1, 0, -1]),
    ] {
        let mut b = ModelBuilder::new(28);
        b.input("x", DType::I32, &[6]).input("k", DType::I32, &[6]);
        b.node(
            "BitShift",
            &["x", "k"],
            &["y"],
            vec![("direction", A::Str(dir.into()))],
        );
        b.output("y");
        let cast = |t: &Tensor| {
            optc_ir::interp::eval_op(&optc_ir::Op::Cast { to: DType::I32 }, &[t])
                .unwrap()
                .remove(0)
        };
        let y = run_model(&b, &[cast(&x), cast(&k)]);
        assert_eq!(y[0].to_i64_vec(), want, "{dir}");
    }
    // uint16 (held widened): shifted out bits are gone.
    let mut b = ModelBuilder::new(18);
    b.input("x", DType::I64, &[3]).input("k", DType::I64, &[3]);
    b.node("Cast", &["x"], &["xu"], vec![("to", A::Int(4))]);
    b.node("Cast", &["k"], &["ku"], vec![("to", A::Int(4))]);
    b.node(
        "BitShift",
        &["xu", "ku"],
        &["y"],
        vec![("direction", A::Str("LEFT".into()))],
    );
    b.output("y");
    let y = run_model(
        &b,
        &[
            Tensor::from_i64(vec![3], vec![0x8001, 3, 1]).unwrap(),
            Tensor::from_i64(vec![3], vec![1, 15, 16]).unwrap(),
        ],
    );
    assert_eq!(y[0].to_i64_vec(), vec![2, 0x8000, 0]);
}

#[test]
fn gather_elements_and_gather_nd_against_tract() {
    let mut r = Rng::new(10);
    let data = r.tensor(&[3, 4, 5], -1.0, 1.0);
    for axis in [0i64, 1, 2, -1] {
        let ax = axis.rem_euclid(3) as usize;
        let mut ishape = vec![3, 4, 5];
        ishape[ax] = 6;
        let n = [3, 4, 5][ax] as i64;
        let idx = r.tensor_i64(&ishape, -n, n);
        check_op(
            &format!("GatherElements axis {axis}"),
            "GatherElements",
            13,
            &[("x", data.clone(), false), ("i", idx, false)],
            vec![("axis", A::Int(axis))],
            1,
        );
    }
    // smaller indices than the data in the other dims
    check_op(
        "GatherElements narrow",
        "GatherElements",
        13,
        &[
            ("x", data.clone(), false),
            ("i", r.tensor_i64(&[2, 3, 1], 0, 5), false),
        ],
        vec![("axis", A::Int(2))],
        1,
    );
    for (ishape, batch_dims, hi) in [
        (vec![4, 2], 0, 3),
        (vec![2, 3], 0, 3),
        (vec![2, 2, 1], 0, 3),
        (vec![3, 2, 1], 1, 4),
        (vec![3, 1], 1, 4),
    ] {
        check_op(
            &format!("GatherND {ishape:?} batch_dims {batch_dims}"),
            "GatherND",
            13,
            &[
                ("x", data.clone(), false),
                ("i", r.tensor_i64(&ishape, 0, hi), false),
            ],
            vec![("batch_dims", A::Int(batch_dims))],
            1,
        );
    }
}

#[test]
fn out_of_range_gather_indices_are_run_time_errors() {
    for (op, bad) in [
        ("GatherElements", 4i64),
        ("GatherElements", -5),
        ("GatherND", 3),
    ] {
        let mut b = ModelBuilder::new(13);
        b.input("x", DType::F32, &[3, 4])
            .input("i", DType::I64, &[3, 1]);
        b.node(op, &["x", "i"], &["y"], vec![]);
        b.output("y");
        let mut m = optc::compile_bytes(&b.to_bytes(), &Options::default()).unwrap();
        let x = Rng::new(1).tensor(&[3, 4], -1.0, 1.0);
        let i = Tensor::from_i64(vec![3, 1], vec![0, bad, 1]).unwrap();
        let e = m.run(&[x, i]).expect_err(op).to_string();
        assert!(
            e.to_lowercase().contains("index") || e.contains("range"),
            "{op}: {e}"
        );
    }
}

#[test]
fn top_k_against_tract() {
    let mut r = Rng::new(12);
    // repeated values: ties go to the lower index
    let v: Vec<f32> = (0..48).map(|_| (r.below(6) as f32) * 0.5 - 1.0).collect();
    let x = Tensor::from_f32(vec![4, 12], v).unwrap();
    for (k, axis, largest) in [(3, 1, 1), (1, 0, 1), (5, -1, 0), (4, 0, 0)] {
        check_op(
            &format!("TopK k={k} axis={axis} largest={largest}"),
            "TopK",
            11,
            &[
                ("x", x.clone(), false),
                ("k", Tensor::from_i64(vec![1], vec![k]).unwrap(), true),
            ],
            vec![("axis", A::Int(axis)), ("largest", A::Int(largest))],
            2,
        );
    }
    check_op(
        "TopK i64",
        "TopK",
        11,
        &[
            ("x", r.tensor_i64(&[3, 7], -4, 4), false),
            ("k", Tensor::from_i64(vec![1], vec![4]).unwrap(), true),
        ],
        vec![],
        2,
    );
}

#[test]
fn float_mod_against_tract_and_the_divisor_sign_rule() {
    let mut r = Rng::new(44);
    let a = r.tensor(&[3, 6], -20.0, 20.0);
    let mut b = r.tensor(&[6], 0.5, 4.0);
    if let optc::Data::F32(v) = b.data_mut() {
        for (k, x) in v.iter_mut().enumerate() {
            if k % 2 == 1 {
                *x = -*x;
            }
        }
    }
    // fmod = 1: C's fmod (the dividend's sign), against tract.
    check_op(
        "Mod f32 fmod=1",
        "Mod",
        13,
        &[("a", a.clone(), false), ("b", b.clone(), false)],
        vec![("fmod", A::Int(1))],
        1,
    );
    // fmod = 0: numpy's `mod` (the divisor's sign), computed here in f64.
    let mut m = ModelBuilder::new(13);
    m.input("a", DType::F32, &[3, 6])
        .input("b", DType::F32, &[6])
        .node("Mod", &["a", "b"], &["y"], vec![("fmod", A::Int(0))])
        .output("y");
    let got = run_model(&m, &[a.clone(), b.clone()]);
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let want: Vec<f64> = av
        .iter()
        .enumerate()
        .map(|(k, &x)| {
            let y = bv[k % 6];
            x - (x / y).floor() * y
        })
        .collect();
    close(&got[0], &want, "Mod f32 fmod=0");
}

/// RotaryEmbedding by its definition, for a [B, H, S, D] input with position ids.
fn rotary_reference(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    pos: &[i64],
    rd: usize,
    interleaved: bool,
) -> Vec<f64> {
    let [b, h, s, d] = x.shape() else { panic!() };
    let (b, h, s, d) = (*b, *h, *s, *d);
    let (xv, cv, sv) = (x.to_f64_vec(), cos.to_f64_vec(), sin.to_f64_vec());
    let half = rd / 2;
    let mut out = xv.clone();
    for bi in 0..b {
        for hi in 0..h {
            for si in 0..s {
                let p = pos[bi * s + si] as usize;
                let base = ((bi * h + hi) * s + si) * d;
                for j in 0..half {
                    let (i1, i2) = if interleaved {
                        (2 * j, 2 * j + 1)
                    } else {
                        (j, j + half)
                    };
                    let (x1, x2) = (xv[base + i1], xv[base + i2]);
                    let (c, sn) = (cv[p * half + j], sv[p * half + j]);
                    out[base + i1] = c * x1 - sn * x2;
                    out[base + i2] = sn * x1 + c * x2;
                }
            }
        }
    }
    out
}

#[test]
fn rotary_embedding_rotates_pairs_by_the_caches() {
    let mut r = Rng::new(13);
    let (b, h, s, d, rd, positions) = (2, 3, 4, 8, 6, 10);
    let x = r.tensor(&[b, h, s, d], -1.0, 1.0);
    let cos = r.tensor(&[positions, rd / 2], -1.0, 1.0);
    let sin = r.tensor(&[positions, rd / 2], -1.0, 1.0);
    let pos: Vec<i64> = (0..(b * s) as i64)
        .map(|k| (k * 3) % positions as i64)
        .collect();
    for interleaved in [0, 1] {
        let mut m = ModelBuilder::new(23);
        m.input("x", DType::F32, &[b as i64, h as i64, s as i64, d as i64]);
        m.initializer("cos", &cos).initializer("sin", &sin);
        m.initializer("pos", &Tensor::from_i64(vec![b, s], pos.clone()).unwrap());
        m.node(
            "RotaryEmbedding",
            &["x", "cos", "sin", "pos"],
            &["y"],
            vec![
                ("interleaved", A::Int(interleaved)),
                ("rotary_embedding_dim", A::Int(rd as i64)),
            ],
        );
        m.output("y");
        let y = run_model(&m, std::slice::from_ref(&x));
        let want = rotary_reference(&x, &cos, &sin, &pos, rd, interleaved == 1);
        close(&y[0], &want, &format!("interleaved {interleaved}"));
    }
}

/// GridSample on one [H, W] plane by the ONNX reference's rules, written out here.
fn grid_sample_reference(
    plane: &[f64],
    (h, w): (usize, usize),
    gx: f64,
    gy: f64,
    (linear, cubic): (bool, bool),
    padding: &str,
    align: bool,
) -> f64 {
    let denorm = |g: f64, len: usize| {
        if align {
            (g + 1.0) / 2.0 * (len as f64 - 1.0)
        } else {
            ((g + 1.0) * len as f64 - 1.0) / 2.0
        }
    };
    let border = |len: usize| {
        if align {
            (0.0, len as f64 - 1.0)
        } else {
            (-0.5, len as f64 - 0.5)
        }
    };
    let reflect = |x: f64, lo: f64, hi: f64| {
        let rng = hi - lo;
        if x < lo {
            let dx = lo - x;
            let n = (dx / rng).floor();
            let r = dx - n * rng;
            if n % 2.0 == 0.0 {
                lo + r
            } else {
                hi - r
            }
        } else if x > hi {
            let dx = x - hi;
            let n = (dx / rng).floor();
            let r = dx - n * rng;
            if n % 2.0 == 0.0 {
                hi - r
            } else {
                lo + r
            }
        } else {
            x
        }
    };
    let fix = |x: f64, len: usize| {
        let (lo, hi) = border(len);
        if x >= lo && x <= hi {
            return x;
        }
        match padding {
            "border" => x.clamp(0.0, len as f64 - 1.0),
            "reflection" => reflect(x, lo, hi),
            _ => x,
        }
    };
    let pixel = |i: i64, j: i64| -> f64 {
        let (ylo, yhi) = border(h);
        let (xlo, xhi) = border(w);
        let (i, j) = match padding {
            "zeros" => {
                if i < 0 || j < 0 || i >= h as i64 || j >= w as i64 {
                    return 0.0;
                }
                (i, j)
            }
            "border" => (i.clamp(0, h as i64 - 1), j.clamp(0, w as i64 - 1)),
            _ => (
                reflect(i as f64, ylo, yhi) as i64,
                reflect(j as f64, xlo, xhi) as i64,
            ),
        };
        plane[i as usize * w + j as usize]
    };
    let (mut y, mut x) = (denorm(gy, h), denorm(gx, w));
    if !linear {
        y = y.round_ties_even();
        x = x.round_ties_even();
    }
    let (y, x) = (fix(y, h), fix(x, w));
    if !linear {
        return pixel(y as i64, x as i64);
    }
    let (y0, x0) = (y.floor(), x.floor());
    let (wy, wx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as i64, x0 as i64);
    if cubic {
        // Keys' cubic convolution, a = -0.75, taps at -1..=2 from the floor
        let k = |d: f64| {
            let (a, d) = (-0.75, d.abs());
            if d <= 1.0 {
                ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
            } else {
                ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
            }
        };
        let mut v = 0.0;
        for i in -1..=2i64 {
            let mut row = 0.0;
            for j in -1..=2i64 {
                row += pixel(y0 + i, x0 + j) * k(j as f64 - wx);
            }
            v += row * k(i as f64 - wy);
        }
        return v;
    }
    let top = pixel(y0, x0) * (1.0 - wx) + pixel(y0, x0 + 1) * wx;
    let bottom = pixel(y0 + 1, x0) * (1.0 - wx) + pixel(y0 + 1, x0 + 1) * wx;
    top * (1.0 - wy) + bottom * wy
}

/// f32 within the f32 tolerance; f64 (values f32 cannot hold: every step in f64) within
/// 1e-12 of the reference computed in f64.
#[test]
fn grid_sample_follows_the_reference_rules() {
    let mut r = Rng::new(14);
    let (n, c, h, w, oh, ow) = (2, 3, 4, 5, 3, 4);
    let x32 = r.tensor(&[n, c, h, w], -1.0, 1.0);
    // coordinates inside and well outside [-1, 1]
    let grid32 = r.tensor(&[n, oh, ow, 2], -2.2, 2.2);
    let widen = |t: &Tensor| {
        let v = t.to_f64_vec();
        let v = v
            .iter()
            .enumerate()
            .map(|(i, a)| a + 1e-9 * (i as f64).sin())
            .collect();
        Tensor::new(t.shape().to_vec(), Data::F64(v)).unwrap()
    };
    for dtype in [DType::F32, DType::F64] {
        let (x, grid) = match dtype {
            DType::F64 => (widen(&x32), widen(&grid32)),
            _ => (x32.clone(), grid32.clone()),
        };
        for mode in ["bilinear", "nearest", "bicubic"] {
            for padding in ["zeros", "border", "reflection"] {
                for align in [0, 1] {
                    let mut m = ModelBuilder::new(16);
                    m.input("x", dtype, &[n as i64, c as i64, h as i64, w as i64]);
                    m.input("g", dtype, &[n as i64, oh as i64, ow as i64, 2]);
                    m.node(
                        "GridSample",
                        &["x", "g"],
                        &["y"],
                        vec![
                            ("mode", A::Str(mode.into())),
                            ("padding_mode", A::Str(padding.into())),
                            ("align_corners", A::Int(align)),
                        ],
                    );
                    m.output("y");
                    let y = run_model(&m, &[x.clone(), grid.clone()]);
                    assert_eq!(y[0].dtype(), dtype);
                    let (xv, gv) = (x.to_f64_vec(), grid.to_f64_vec());
                    let mut want = vec![];
                    for b in 0..n {
                        for ch in 0..c {
                            let plane = &xv[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                            for p in 0..oh * ow {
                                let g = (b * oh * ow + p) * 2;
                                want.push(grid_sample_reference(
                                    plane,
                                    (h, w),
                                    gv[g],
                                    gv[g + 1],
                                    (mode != "nearest", mode == "bicubic"),
                                    padding,
                                    align == 1,
                                ));
                            }
                        }
                    }
                    let what = format!("{dtype} {mode} {padding} align {align}");
                    if dtype == DType::F64 {
                        for (k, (a, b)) in y[0].to_f64_vec().iter().zip(&want).enumerate() {
                            assert!((a - b).abs() <= 1e-12, "{what} [{k}]: {a} vs {b}");
                        }
                    } else {
                        close(&y[0], &want, &what);
                    }
                }
            }
        }
    }
}
