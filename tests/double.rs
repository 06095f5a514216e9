//! ONNX double (f64): stored and computed in f64, not narrowed to f32. Oracle: the same
//! arithmetic on Rust's f64 (its functions for exp, log and the trigonometric ones; the
//! compiled code calls libm's f64 functions), on values that f32 cannot hold (1 + 1e-12
//! steps), so a result computed in f32 anywhere on the way fails.

use optc::{DType, Data, Options, Tensor};
use optc_onnx::builder::{Attr as A, ModelBuilder};

const DOUBLE: i64 = 11;

fn f64s(shape: &[usize], v: Vec<f64>) -> Tensor {
    Tensor::new(shape.to_vec(), Data::F64(v)).unwrap()
}

/// Values around 1 and 3 apart by steps of 1e-12 (f32 rounds them all together), a few
/// negatives, zeros and larger magnitudes.
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            match i % 4 {
                0 => 1.0 + (i as f64) * 1e-12,
                1 => 3.0 - u * 1e-9,
                2 => (u - 0.5) * 8.0,
                _ => (u - 0.3) * 1e3,
            }
        })
        .collect()
}

/// An op of two inputs, its attributes and its f64 oracle.
type F2 = fn(f64, f64) -> f64;
type Case = (&'static str, Vec<(&'static str, A)>, F2);

fn run(b: &ModelBuilder, inputs: &[Tensor]) -> Vec<Tensor> {
    let mut m = optc::compile_bytes(&b.to_bytes(), &Options::default()).unwrap();
    m.run(inputs).unwrap()
}

fn as_f64(t: &Tensor, what: &str) -> Vec<f64> {
    assert_eq!(t.dtype(), DType::F64, "{what}: output type");
    t.as_f64().unwrap().to_vec()
}

/// Equal, or within `ulps` units in the last place (both NaN counts as equal).
fn assert_close(got: &[f64], want: &[f64], ulps: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan())
            || g == w
            || (g - w).abs() <= ulps * f64::EPSILON * w.abs().max(f64::MIN_POSITIVE);
        assert!(ok, "{what} [{k}]: got {g:e}, want {w:e}");
    }
}

#[test]
fn double_arithmetic_is_exact_f64() {
    let n = 64;
    let (a, mut b) = (values(n, 1), values(n, 2));
    b[5] = f64::NAN;
    b[6] = 0.0;
    let (ta, tb) = (f64s(&[n], a.clone()), f64s(&[n], b.clone()));
    type F = fn(f64, f64) -> f64;
    let ops: [(&str, F); 6] = [
        ("Add", |x, y| x + y),
        ("Sub", |x, y| x - y),
        ("Mul", |x, y| x * y),
        ("Div", |x, y| x / y),
        // NaN-propagating, as numpy's maximum / minimum.
        ("Max", |x, y| {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.max(y)
            }
        }),
        ("Min", |x, y| {
            if x.is_nan() || y.is_nan() {
                f64::NAN
            } else {
                x.min(y)
            }
        }),
    ];
    for (op, f) in ops {
        let mut m = ModelBuilder::new(17);
        m.input("a", DType::F64, &[n as i64])
            .input("b", DType::F64, &[n as i64]);
        m.node(op, &["a", "b"], &["y"], vec![]);
        m.output("y");
        let y = run(&m, &[ta.clone(), tb.clone()]);
        let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &z)| f(x, z)).collect();
        assert_close(&as_f64(&y[0], op), &want, 0.0, op);
    }
}

#[test]
fn double_math_in_f64() {
    let n = 40;
    let x: Vec<f64> = values(n, 3).iter().map(|v| v / 300.0).collect();
    let pos: Vec<f64> = x.iter().map(|v| v.abs() + 1e-3).collect();
    type F = fn(f64) -> f64;
    let ops: [(&str, F, bool); 14] = [
        ("Exp", f64::exp, false),
        ("Log", f64::ln, true),
        ("Tanh", f64::tanh, false),
        ("Sqrt", f64::sqrt, true),
        ("Sin", f64::sin, false),
        ("Cos", f64::cos, false),
        ("Atan", f64::atan, false),
        ("Sigmoid", |v| 1.0 / (1.0 + (-v).exp()), false),
        ("Abs", f64::abs, false),
        ("Neg", |v| -v, false),
        ("Floor", f64::floor, false),
        ("Ceil", f64::ceil, false),
        ("Round", f64::round_ties_even, false),
        ("Relu", |v| v.max(0.0), false),
    ];
    for (op, f, positive) in ops {
        let v = if positive { pos.clone() } else { x.clone() };
        let mut m = ModelBuilder::new(17);
        m.input("x", DType::F64, &[n as i64]);
        m.node(op, &["x"], &["y"], vec![]);
        m.output("y");
        let y = run(&m, &[f64s(&[n], v.clone())]);
        let want: Vec<f64> = v.iter().map(|&e| f(e)).collect();
        // libm and Rust's functions may differ in the last place.
        assert_close(&as_f64(&y[0], op), &want, 2.0, op);
    }
    // Pow and Mod (C's fmod, and Python's sign rule), of two f64 inputs.
    let (a, b): (Vec<f64>, Vec<f64>) = (pos.clone(), values(n, 4));
    let b: Vec<f64> = b.iter().map(|v| v / 100.0 + 0.25).collect();
    let cases: [Case; 3] = [
        ("Pow", vec![], f64::powf),
        ("Mod", vec![("fmod", A::Int(1))], |x, y| x % y),
        ("Mod", vec![("fmod", A::Int(0))], |x, y| {
            let r = x % y;
            if r != 0.0 && (r < 0.0) != (y < 0.0) {
                r + y
            } else {
                r
            }
        }),
    ];
    for (op, attrs, f) in cases {
        let neg: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, v)| if i % 3 == 0 { -v } else { *v })
            .collect();
        let lhs = if op == "Pow" { a.clone() } else { neg };
        let mut m = ModelBuilder::new(17);
        m.input("a", DType::F64, &[n as i64])
            .input("b", DType::F64, &[n as i64]);
        m.node(op, &["a", "b"], &["y"], attrs);
        m.output("y");
        let y = run(&m, &[f64s(&[n], lhs.clone()), f64s(&[n], b.clone())]);
        let want: Vec<f64> = lhs.iter().zip(&b).map(|(&x, &z)| f(x, z)).collect();
        assert_close(&as_f64(&y[0], op), &want, 2.0, op);
    }
}

#[test]
fn double_reductions_and_cumsum_accumulate_in_f64() {
    let (r, c) = (5, 37);
    let x = values(r * c, 5);
    let t = f64s(&[r, c], x.clone());
    let row = |i: usize| &x[i * c..(i + 1) * c];
    type F = fn(&[f64]) -> f64;
    let reductions: [(&str, F); 5] = [
        ("ReduceSum", |v| v.iter().fold(0.0, |a, b| a + b)),
        ("ReduceMean", |v| {
            v.iter().fold(0.0, |a, b| a + b) / v.len() as f64
        }),
        ("ReduceMax", |v| {
            v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        }),
        ("ReduceMin", |v| {
            v.iter().copied().fold(f64::INFINITY, f64::min)
        }),
        ("ReduceLogSumExp", |v| {
            let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            v.iter().map(|e| (e - m).exp()).fold(0.0, |a, b| a + b).ln() + m
        }),
    ];
    for (op, f) in reductions {
        let mut m = ModelBuilder::new(18);
        m.input("x", DType::F64, &[r as i64, c as i64]);
        m.initializer("axes", &Tensor::new(vec![1], Data::I64(vec![1])).unwrap());
        m.node(op, &["x", "axes"], &["y"], vec![("keepdims", A::Int(0))]);
        m.output("y");
        let y = run(&m, std::slice::from_ref(&t));
        let want: Vec<f64> = (0..r).map(|i| f(row(i))).collect();
        assert_close(&as_f64(&y[0], op), &want, 4.0, op);
    }
    for (exclusive, reverse) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let mut m = ModelBuilder::new(14);
        m.input("x", DType::F64, &[r as i64, c as i64]);
        m.initializer("axis", &Tensor::new(vec![], Data::I64(vec![1])).unwrap());
        m.node(
            "CumSum",
            &["x", "axis"],
            &["y"],
            vec![
                ("exclusive", A::Int(exclusive)),
                ("reverse", A::Int(reverse)),
            ],
        );
        m.output("y");
        let y = run(&m, std::slice::from_ref(&t));
        let mut want = vec![0.0; r * c];
        for i in 0..r {
            let mut acc = 0.0;
            let order: Vec<usize> = if reverse == 1 {
                (0..c).rev().collect()
            } else {
                (0..c).collect()
            };
            for j in order {
                let before = acc;
                acc += x[i * c + j];
                want[i * c + j] = if exclusive == 1 { before } else { acc };
            }
        }
        let what = format!("CumSum exclusive={exclusive} reverse={reverse}");
        assert_close(&as_f64(&y[0], &what), &want, 0.0, &what);
    }
}

#[test]
fn casts_to_and_from_double() {
    let n = 24;
    let x = values(n, 6);
    // f64 -> f32 rounds to nearest, f32 -> f64 is exact, f64 -> i64 truncates, i64 -> f64.
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F64, &[n as i64]);
    m.node("Cast", &["x"], &["f"], vec![("to", A::Int(1))]);
    m.node("Cast", &["f"], &["d"], vec![("to", A::Int(DOUBLE))]);
    m.node("Cast", &["x"], &["i"], vec![("to", A::Int(7))]);
    m.node("Cast", &["i"], &["di"], vec![("to", A::Int(DOUBLE))]);
    m.node("Cast", &["x"], &["b"], vec![("to", A::Int(9))]);
    m.output("f")
        .output("d")
        .output("i")
        .output("di")
        .output("b");
    let mut xs = x.clone();
    xs[3] = 0.0;
    let y = run(&m, &[f64s(&[n], xs.clone())]);
    let f: Vec<f32> = xs.iter().map(|&v| v as f32).collect();
    assert_eq!(y[0].as_f32().unwrap(), f.as_slice(), "f64 -> f32");
    let d: Vec<f64> = f.iter().map(|&v| v as f64).collect();
    assert_close(&as_f64(&y[1], "f32 -> f64"), &d, 0.0, "f32 -> f64");
    let i: Vec<i64> = xs.iter().map(|&v| v as i64).collect();
    assert_eq!(y[2].as_i64().unwrap(), i.as_slice(), "f64 -> i64");
    let di: Vec<f64> = i.iter().map(|&v| v as f64).collect();
    assert_close(&as_f64(&y[3], "i64 -> f64"), &di, 0.0, "i64 -> f64");
    let b: Vec<bool> = xs.iter().map(|&v| v != 0.0).collect();
    assert_eq!(y[4].data(), &Data::Bool(b), "f64 -> bool");
}

/// Where and comparisons on f64, and a double initializer (ONNX `double_data`).
#[test]
fn double_comparisons_select_and_initializers() {
    let n = 16;
    let x = values(n, 7);
    let c: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64) * 1e-12 + 5e-13).collect();
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F64, &[n as i64]);
    m.initializer_typed_fields("c", &f64s(&[n], c.clone()));
    m.node("Greater", &["x", "c"], &["g"], vec![]);
    m.node("Where", &["g", "x", "c"], &["y"], vec![]);
    m.output("y");
    let y = run(&m, &[f64s(&[n], x.clone())]);
    let want: Vec<f64> = x
        .iter()
        .zip(&c)
        .map(|(&a, &b)| if a > b { a } else { b })
        .collect();
    assert_close(&as_f64(&y[0], "where"), &want, 0.0, "where");
}

/// Ops without an f64 form are refused at compile time, naming the node.
#[test]
fn double_conv_is_refused_naming_the_node() {
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F64, &[1, 1, 4, 4])
        .input("w", DType::F64, &[1, 1, 3, 3]);
    m.node_named("cv", "Conv", &["x", "w"], &["y"], vec![]);
    m.output("y");
    let err = optc::compile_bytes(&m.to_bytes(), &Options::default())
        .err()
        .expect("a double Conv is refused")
        .to_string();
    assert!(err.contains("cv") && err.contains("f64"), "{err}");
}

/// A batched MatMul (B broadcast over the batch) and a Softmax in f64: each product summed
/// in k order, each softmax `exp(x - max) / sum`.
#[test]
fn double_matmul_and_softmax() {
    let (bt, m_, k, n) = (2, 3, 7, 5);
    let a = values(bt * m_ * k, 9);
    let b = values(k * n, 10);
    let mut m = ModelBuilder::new(17);
    m.input("a", DType::F64, &[bt as i64, m_ as i64, k as i64])
        .input("b", DType::F64, &[k as i64, n as i64]);
    m.node("MatMul", &["a", "b"], &["y"], vec![]);
    m.node("Softmax", &["y"], &["s"], vec![("axis", A::Int(-1))]);
    m.output("y").output("s");
    let y = run(
        &m,
        &[f64s(&[bt, m_, k], a.clone()), f64s(&[k, n], b.clone())],
    );
    let mut want = vec![];
    for p in 0..bt {
        for i in 0..m_ {
            for j in 0..n {
                let mut acc = 0.0;
                for q in 0..k {
                    acc += a[(p * m_ + i) * k + q] * b[q * n + j];
                }
                want.push(acc);
            }
        }
    }
    assert_close(&as_f64(&y[0], "matmul"), &want, 0.0, "matmul");
    let soft: Vec<f64> = want
        .chunks(n)
        .flat_map(|row| {
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum = row.iter().fold(0.0, |s, v| s + (v - mx).exp());
            row.iter()
                .map(move |v| (v - mx).exp() / sum)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_close(&as_f64(&y[1], "softmax"), &soft, 4.0, "softmax");
}

/// Movement and indexing ops move f64 values whole: Transpose, Concat, Slice, Gather, Pad
/// (an f32-exact value), TopK and ArgMax, against the same moves by hand.
#[test]
fn double_movement_and_indexing() {
    let (r, c) = (3, 5);
    let x = values(r * c, 8);
    let t = f64s(&[r, c], x.clone());
    let i64t = |shape: Vec<usize>, v: Vec<i64>| Tensor::new(shape, Data::I64(v)).unwrap();
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F64, &[r as i64, c as i64]);
    m.initializer("idx", &i64t(vec![2], vec![2, 0]));
    m.initializer("starts", &i64t(vec![1], vec![1]));
    m.initializer("ends", &i64t(vec![1], vec![4]));
    m.initializer("axes", &i64t(vec![1], vec![1]));
    m.initializer("pads", &i64t(vec![4], vec![0, 1, 0, 2]));
    m.initializer_typed_fields("pv", &f64s(&[], vec![0.5]));
    m.initializer("k", &i64t(vec![1], vec![2]));
    m.node(
        "Transpose",
        &["x"],
        &["tr"],
        vec![("perm", A::Ints(vec![1, 0]))],
    );
    m.node("Concat", &["x", "x"], &["cat"], vec![("axis", A::Int(1))]);
    m.node("Slice", &["x", "starts", "ends", "axes"], &["sl"], vec![]);
    m.node("Gather", &["x", "idx"], &["ga"], vec![("axis", A::Int(0))]);
    m.node("Pad", &["x", "pads", "pv"], &["pa"], vec![]);
    m.node("TopK", &["x", "k"], &["tv", "ti"], vec![]);
    m.node("ArgMax", &["x"], &["am"], vec![("axis", A::Int(1))]);
    for o in ["tr", "cat", "sl", "ga", "pa", "tv", "ti", "am"] {
        m.output(o);
    }
    let y = run(&m, &[t]);
    let at = |i: usize, j: usize| x[i * c + j];
    let tr: Vec<f64> = (0..c)
        .flat_map(|j| (0..r).map(move |i| (i, j)))
        .map(|(i, j)| at(i, j))
        .collect();
    assert_close(&as_f64(&y[0], "transpose"), &tr, 0.0, "transpose");
    let cat: Vec<f64> = (0..r)
        .flat_map(|i| (0..2 * c).map(move |j| (i, j % c)))
        .map(|(i, j)| at(i, j))
        .collect();
    assert_close(&as_f64(&y[1], "concat"), &cat, 0.0, "concat");
    let sl: Vec<f64> = (0..r)
        .flat_map(|i| (1..4).map(move |j| (i, j)))
        .map(|(i, j)| at(i, j))
        .collect();
    assert_close(&as_f64(&y[2], "slice"), &sl, 0.0, "slice");
    let ga: Vec<f64> = [2, 0]
        .iter()
        .flat_map(|&i| (0..c).map(move |j| (i, j)))
        .map(|(i, j)| at(i, j))
        .collect();
    assert_close(&as_f64(&y[3], "gather"), &ga, 0.0, "gather");
    let pa: Vec<f64> = (0..r)
        .flat_map(|i| (0..c + 3).map(move |j| (i, j)))
        .map(|(i, j)| {
            if (1..=c).contains(&j) {
                at(i, j - 1)
            } else {
                0.5
            }
        })
        .collect();
    assert_close(&as_f64(&y[4], "pad"), &pa, 0.0, "pad");
    for i in 0..r {
        let mut order: Vec<usize> = (0..c).collect();
        order.sort_by(|&p, &q| at(i, q).total_cmp(&at(i, p)).then(p.cmp(&q)));
        let tv = as_f64(&y[5], "topk");
        assert_eq!(
            &tv[2 * i..2 * i + 2],
            &[at(i, order[0]), at(i, order[1])],
            "topk values"
        );
        let ti = y[6].as_i64().unwrap();
        assert_eq!(
            &ti[2 * i..2 * i + 2],
            &[order[0] as i64, order[1] as i64],
            "topk indices"
        );
        assert_eq!(y[7].as_i64().unwrap()[i], order[0] as i64, "argmax");
    }
    // A pad value f32 cannot hold is refused, not rounded.
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F64, &[r as i64, c as i64]);
    m.initializer("pads", &i64t(vec![4], vec![0, 1, 0, 0]));
    m.initializer_typed_fields("pv", &f64s(&[], vec![0.1]));
    m.node_named("pad", "Pad", &["x", "pads", "pv"], &["y"], vec![]);
    m.output("y");
    let err = optc::compile_bytes(&m.to_bytes(), &Options::default())
        .err()
        .expect("an inexact pad value is refused")
        .to_string();
    assert!(err.contains("pad") && err.contains("0.1"), "{err}");
}

/// Gemm in f64 (imported as its definition: transposes, MatMul, alpha, beta C).
#[test]
fn double_gemm() {
    let (m_, k, n) = (4, 6, 3);
    let a = values(k * m_, 11); // transA: stored [k, m]
    let b = values(n * k, 12); // transB: stored [n, k]
    let c = values(n, 13);
    let mut m = ModelBuilder::new(13);
    m.input("a", DType::F64, &[k as i64, m_ as i64])
        .input("b", DType::F64, &[n as i64, k as i64])
        .input("c", DType::F64, &[n as i64]);
    m.node(
        "Gemm",
        &["a", "b", "c"],
        &["y"],
        vec![
            ("transA", A::Int(1)),
            ("transB", A::Int(1)),
            ("alpha", A::Float(0.5)),
            ("beta", A::Float(2.0)),
        ],
    );
    m.output("y");
    let y = run(
        &m,
        &[
            f64s(&[k, m_], a.clone()),
            f64s(&[n, k], b.clone()),
            f64s(&[n], c.clone()),
        ],
    );
    let mut want = vec![];
    for i in 0..m_ {
        for j in 0..n {
            let mut acc = 0.0;
            for q in 0..k {
                acc += a[q * m_ + i] * b[j * k + q];
            }
            want.push(acc * 0.5 + c[j] * 2.0);
        }
    }
    assert_close(&as_f64(&y[0], "gemm"), &want, 0.0, "gemm");
}

/// Pow of an integer or f32 base by an f64 exponent keeps the exponent whole: `x^y` in f64,
/// then truncated (integers) or rounded once (f32).
#[test]
fn pow_by_a_double_exponent() {
    let n = 6;
    let ex = vec![0.7, 1.5, 2.0, -0.5, 3.25, 0.0];
    let xi = vec![2i64, 3, 5, 4, 2, 7];
    let xf: Vec<f32> = vec![2.5, 3.0, 1.1, 4.0, 0.5, 9.0];
    let mut m = ModelBuilder::new(15);
    m.input("xi", DType::I64, &[n])
        .input("xf", DType::F32, &[n])
        .input("e", DType::F64, &[n]);
    m.node("Pow", &["xi", "e"], &["yi"], vec![]);
    m.node("Pow", &["xf", "e"], &["yf"], vec![]);
    m.output("yi").output("yf");
    let y = run(
        &m,
        &[
            Tensor::new(vec![n as usize], Data::I64(xi.clone())).unwrap(),
            Tensor::new(vec![n as usize], Data::F32(xf.clone())).unwrap(),
            f64s(&[n as usize], ex.clone()),
        ],
    );
    let wi: Vec<i64> = xi
        .iter()
        .zip(&ex)
        .map(|(&x, &e)| (x as f64).powf(e) as i64)
        .collect();
    assert_eq!(y[0].as_i64().unwrap(), wi.as_slice(), "integer base");
    let wf: Vec<f32> = xf
        .iter()
        .zip(&ex)
        .map(|(&x, &e)| (x as f64).powf(e) as f32)
        .collect();
    assert_eq!(y[1].as_f32().unwrap(), wf.as_slice(), "f32 base");
}
