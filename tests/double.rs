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

/// Within `rel` of each value (relative to its magnitude, or absolute below 1): results of
/// f32 steps against the same steps by hand.
fn assert_near(got: &[f64], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * w.abs().max(1.0),
            "{what} [{k}]: {g} vs {w}"
        );
    }
}

/// Dims as ONNX attribute values.
fn i64s(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&d| d as i64).collect()
}

/// Elements of a shape.
fn count(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// The multi-index of row-major element `i` of `dims`.
fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut v = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        v[d] = i % dims[d];
        i /= dims[d];
    }
    v
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

/// A linear Resize of a double input interpolates in f64 (its weights too): 2x2 to 6x4
/// (scales 3 and 2) with half-pixel coordinates against the ONNX reference's rule by hand
/// (per axis: `x = (i + 1/2) / scale - 1/2` clamped to the edges, `(1 - r) a + r b` with
/// `r` the fraction of `x`, all in f64), on values 1e-12 apart that f32 would merge; the
/// thirds of the first axis are not f32 values either.
#[test]
fn double_linear_resize() {
    let mut m = ModelBuilder::new(19);
    m.input("x", DType::F64, &[1, 1, 2, 2]);
    m.initializer(
        "scales",
        &Tensor::new(vec![4], Data::F32(vec![1.0, 1.0, 3.0, 2.0])).unwrap(),
    );
    m.node(
        "Resize",
        &["x", "", "scales"],
        &["y"],
        vec![("mode", A::Str("linear".into()))],
    );
    m.output("y");
    let x = vec![1.0, 1.0 + 4e-12, 1.0 + 8e-12, 1.0 + 2e-12];
    let y = run(&m, &[f64s(&[1, 1, 2, 2], x.clone())]);
    let axis = |a: f64, b: f64, scale: f64, i: usize| -> f64 {
        let p = ((i as f64 + 0.5) / scale - 0.5).clamp(0.0, 1.0);
        let r = p - p.floor();
        if p >= 1.0 {
            b
        } else {
            (1.0 - r) * a + r * b
        }
    };
    let mut want = vec![];
    for i in 0..6 {
        for j in 0..4 {
            let top = axis(x[0], x[1], 2.0, j);
            let bottom = axis(x[2], x[3], 2.0, j);
            want.push(axis(top, bottom, 3.0, i));
        }
    }
    assert_close(&as_f64(&y[0], "resize"), &want, 4.0, "resize");
}

/// Attention of double inputs computes in f64: causal, two heads, the default scale, against
/// `softmax(q k^T / sqrt(d) + causal mask) v` by hand in f64, on values 1e-12 apart that
/// f32 would merge.
#[test]
fn double_attention() {
    let (h, n, d) = (2usize, 3usize, 4usize);
    let mut m = ModelBuilder::new(23);
    for name in ["q", "k", "v"] {
        m.input(name, DType::F64, &[1, h as i64, n as i64, d as i64]);
    }
    m.node(
        "Attention",
        &["q", "k", "v"],
        &["y"],
        vec![("is_causal", A::Int(1))],
    );
    m.output("y");
    let tiny = |seed: u64| -> Vec<f64> {
        values(h * n * d, seed)
            .iter()
            .map(|v| 1.0 + v * 1e-12)
            .collect()
    };
    let (q, k, v) = (tiny(1), tiny(2), values(h * n * d, 3));
    let y = run(
        &m,
        &[
            f64s(&[1, h, n, d], q.clone()),
            f64s(&[1, h, n, d], k.clone()),
            f64s(&[1, h, n, d], v.clone()),
        ],
    );
    let at = |x: &[f64], hh: usize, i: usize, c: usize| x[(hh * n + i) * d + c];
    let mut want = vec![];
    for hh in 0..h {
        for i in 0..n {
            // Keys 0..=i are visible (causal).
            let scores: Vec<f64> = (0..=i)
                .map(|j| {
                    (0..d)
                        .map(|c| at(&q, hh, i, c) * at(&k, hh, j, c))
                        .sum::<f64>()
                        / (d as f64).sqrt()
                })
                .collect();
            let top = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|s| (s - top).exp()).collect();
            let total: f64 = e.iter().sum();
            for c in 0..d {
                want.push(
                    (0..=i)
                        .map(|j| e[j] / total * at(&v, hh, j, c))
                        .sum::<f64>(),
                );
            }
        }
    }
    assert_near(&as_f64(&y[0], "attention"), &want, 1e-14, "attention");
}

/// RotaryEmbedding of a double input and caches: `[B, H, S, D]`, halves rotated by the
/// spec's formula by hand in f64 (`x1 cos - x2 sin`, `x1 sin + x2 cos`), exactly.
#[test]
fn double_rotary_embedding() {
    let (b, h, n, d) = (1usize, 2usize, 3usize, 4usize);
    let half = d / 2;
    let mut m = ModelBuilder::new(23);
    m.input("x", DType::F64, &[b as i64, h as i64, n as i64, d as i64]);
    m.input("cos", DType::F64, &[b as i64, n as i64, half as i64]);
    m.input("sin", DType::F64, &[b as i64, n as i64, half as i64]);
    m.node("RotaryEmbedding", &["x", "cos", "sin"], &["y"], vec![]);
    m.output("y");
    let x: Vec<f64> = values(b * h * n * d, 30)
        .iter()
        .map(|v| 1.0 + v * 1e-12)
        .collect();
    let (cos, sin) = (values(n * half, 31), values(n * half, 32));
    let y = run(
        &m,
        &[
            f64s(&[b, h, n, d], x.clone()),
            f64s(&[b, n, half], cos.clone()),
            f64s(&[b, n, half], sin.clone()),
        ],
    );
    let mut want = vec![0.0; x.len()];
    for hh in 0..h {
        for i in 0..n {
            let row = (hh * n + i) * d;
            for j in 0..half {
                let (x1, x2) = (x[row + j], x[row + half + j]);
                let (c, s) = (cos[i * half + j], sin[i * half + j]);
                want[row + j] = c * x1 - s * x2;
                want[row + half + j] = s * x1 + c * x2;
            }
        }
    }
    assert_close(&as_f64(&y[0], "rotary"), &want, 0.0, "rotary");
}

/// Ops without an f64 form (the quantized ones: ONNX gives them none) are refused at
/// compile time, naming the node.
#[test]
fn double_quantize_linear_is_refused_naming_the_node() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F64, &[2, 3]);
    m.initializer("s", &f64s(&[], vec![0.5]));
    m.node_named("quantizer", "QuantizeLinear", &["x", "s"], &["y"], vec![]);
    m.output("y");
    let err = optc::compile_bytes(&m.to_bytes(), &Options::default())
        .err()
        .expect("a double QuantizeLinear is refused")
        .to_string();
    assert!(err.contains("quantizer") && err.contains("f64"), "{err}");
}

/// Smooth values in (-0.6, 0.6) with full f64 mantissas (f32 would round every one).
fn weights(n: usize, seed: u64) -> Vec<f64> {
    values(n, seed)
        .iter()
        .map(|v| 0.6 * (v * 0.37).sin())
        .collect()
}

/// `x [n, i] @ w[rows, i]^T` for rows `r0..r0 + h` of `w`.
fn project(x: &[f64], w: &[f64], inputs: usize, r0: usize, h: usize) -> Vec<f64> {
    let n = x.len() / inputs;
    let mut y = vec![0.0; n * h];
    for b in 0..n {
        for j in 0..h {
            y[b * h + j] = (0..inputs)
                .map(|k| x[b * inputs + k] * w[(r0 + j) * inputs + k])
                .sum();
        }
    }
    y
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// LSTM (with and without peepholes, initial states), GRU (both reset forms) and RNN of
/// double inputs, forward over 3 steps: every step in f64 (no fused f32 cell), against the
/// spec's equations by hand in f64 (gates i, o, f, c; z, r, h).
#[test]
fn double_recurrent_layers() {
    let (t, n, inputs, h) = (3usize, 2usize, 3usize, 2usize);
    let cases = [
        ("LSTM", 4, 0, true),
        ("LSTM", 4, 0, false),
        ("GRU", 3, 0, false),
        ("GRU", 3, 1, false),
        ("RNN", 1, 0, false),
    ];
    for (op, gates, lbr, peepholes) in cases {
        let lstm = op == "LSTM";
        let x = weights(t * n * inputs, 1);
        let w = weights(gates * h * inputs, 2);
        let r = weights(gates * h * h, 3);
        let bias = weights(2 * gates * h, 4);
        let h0 = weights(n * h, 5);
        let c0 = weights(n * h, 6);
        let peep = if peepholes {
            weights(3 * h, 7)
        } else {
            vec![0.0; 3 * h]
        };
        let mut m = ModelBuilder::new(14);
        m.input("x", DType::F64, &[t as i64, n as i64, inputs as i64]);
        m.input("h0", DType::F64, &[1, n as i64, h as i64]);
        m.initializer("w", &f64s(&[1, gates * h, inputs], w.clone()));
        m.initializer("r", &f64s(&[1, gates * h, h], r.clone()));
        m.initializer("b", &f64s(&[1, 2 * gates * h], bias.clone()));
        let mut ins = vec!["x", "w", "r", "b", "", "h0"];
        let mut feeds = vec![
            f64s(&[t, n, inputs], x.clone()),
            f64s(&[1, n, h], h0.clone()),
        ];
        if lstm {
            m.input("c0", DType::F64, &[1, n as i64, h as i64]);
            ins.push("c0");
            if peepholes {
                m.initializer("p", &f64s(&[1, 3 * h], peep.clone()));
                ins.push("p");
            }
            feeds.push(f64s(&[1, n, h], c0.clone()));
        }
        let mut attrs = vec![("hidden_size", A::Int(h as i64))];
        if lbr == 1 {
            attrs.push(("linear_before_reset", A::Int(1)));
        }
        m.node_named("cell", op, &ins, &["y"], attrs);
        m.output("y");
        let got = as_f64(&run(&m, &feeds)[0], op);

        // Gate g's input and recurrent bias, per unit.
        let wb = |g: usize, j: usize| bias[g * h + j];
        let rb = |g: usize, j: usize| bias[(gates + g) * h + j];
        let (mut hs, mut cs) = (h0.clone(), c0.clone());
        let mut want = vec![];
        for step in 0..t {
            let xt = &x[step * n * inputs..(step + 1) * n * inputs];
            let xp: Vec<Vec<f64>> = (0..gates)
                .map(|g| project(xt, &w, inputs, g * h, h))
                .collect();
            let hp: Vec<Vec<f64>> = (0..gates).map(|g| project(&hs, &r, h, g * h, h)).collect();
            let mut next = vec![0.0; n * h];
            for b in 0..n {
                let pre = |g: usize, j: usize| {
                    let k = b * h + j;
                    xp[g][k] + hp[g][k] + wb(g, j) + rb(g, j)
                };
                // GRU: (r (.) Ht-1) Rh^T + Rbh without linear_before_reset, else
                // r (.) (Ht-1 Rh^T + Rbh).
                let reset: Vec<f64> = if op == "GRU" {
                    (0..h).map(|j| sigmoid(pre(1, j))).collect()
                } else {
                    vec![]
                };
                for j in 0..h {
                    let k = b * h + j;
                    next[k] = match op {
                        "LSTM" => {
                            let i = sigmoid(pre(0, j) + peep[j] * cs[k]);
                            let f = sigmoid(pre(2, j) + peep[2 * h + j] * cs[k]);
                            let c = f * cs[k] + i * pre(3, j).tanh();
                            let o = sigmoid(pre(1, j) + peep[h + j] * c);
                            cs[k] = c;
                            o * c.tanh()
                        }
                        "GRU" => {
                            let z = sigmoid(pre(0, j));
                            let recurrent = if lbr == 1 {
                                reset[j] * (hp[2][k] + rb(2, j))
                            } else {
                                (0..h)
                                    .map(|q| reset[q] * hs[b * h + q] * r[(2 * h + j) * h + q])
                                    .sum::<f64>()
                                    + rb(2, j)
                            };
                            let candidate = (xp[2][k] + wb(2, j) + recurrent).tanh();
                            (1.0 - z) * candidate + z * hs[k]
                        }
                        _ => pre(0, j).tanh(),
                    };
                }
            }
            hs = next;
            want.extend(&hs);
        }
        assert_near(&got, &want, 1e-13, op);
    }
}

/// NegativeLogLikelihoodLoss (class weights, an ignored class, the weighted mean),
/// SoftmaxCrossEntropyLoss (per element, and its log-probabilities), Mean and IsInf in f64,
/// against the spec's formulas by hand.
#[test]
fn double_losses() {
    let (n, c, d) = (3usize, 4usize, 5usize);
    let x = values(n * c * d, 90);
    let x: Vec<f64> = x.iter().map(|v| v.clamp(-20.0, 20.0)).collect();
    let t: Vec<i64> = (0..n * d).map(|i| ((i * 7 + 3) % c) as i64).collect();
    let w: Vec<f64> = values(c, 91).iter().map(|v| v.abs() + 0.5).collect();
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F64, &[n as i64, c as i64, d as i64])
        .input("t", DType::I64, &[n as i64, d as i64]);
    m.initializer("w", &f64s(&[c], w.clone()));
    m.node(
        "NegativeLogLikelihoodLoss",
        &["x", "t", "w"],
        &["nll"],
        vec![("ignore_index", A::Int(1))],
    );
    m.node(
        "SoftmaxCrossEntropyLoss",
        &["x", "t"],
        &["ce", "lp"],
        vec![("reduction", A::Str("none".into()))],
    );
    m.output("nll").output("ce").output("lp");
    let y = run(
        &m,
        &[
            f64s(&[n, c, d], x.clone()),
            Tensor::new(vec![n, d], Data::I64(t.clone())).unwrap(),
        ],
    );
    let at = |i: usize, k: usize, j: usize| x[(i * c + k) * d + j];
    let (mut total, mut weights) = (0.0, 0.0);
    let (mut ce, mut lp) = (vec![], vec![0.0; x.len()]);
    for i in 0..n {
        for j in 0..d {
            let tk = t[i * d + j] as usize;
            if tk != 1 {
                total += -at(i, tk, j) * w[tk];
                weights += w[tk];
            }
            let mx = (0..c)
                .map(|k| at(i, k, j))
                .fold(f64::NEG_INFINITY, f64::max);
            let l = (0..c).fold(0.0, |s, k| s + (at(i, k, j) - mx).exp()).ln();
            for k in 0..c {
                lp[(i * c + k) * d + j] = (at(i, k, j) - mx) - l;
            }
            ce.push(-((at(i, tk, j) - mx) - l));
        }
    }
    assert_close(
        &as_f64(&y[0], "nll"),
        &[total / weights],
        8.0,
        "NegativeLogLikelihoodLoss",
    );
    assert_close(&as_f64(&y[1], "ce"), &ce, 4.0, "SoftmaxCrossEntropyLoss");
    assert_close(&as_f64(&y[2], "lp"), &lp, 4.0, "log-probabilities");
    // Mean of three inputs and IsInf (both signs, and positive only).
    let v = |seed| values(6, seed);
    let (a, b) = (v(92), v(93));
    let mut e = v(94);
    e[1] = f64::INFINITY;
    e[4] = f64::NEG_INFINITY;
    let mut m = ModelBuilder::new(20);
    for name in ["a", "b", "e"] {
        m.input(name, DType::F64, &[6]);
    }
    m.node("Mean", &["a", "b", "e"], &["mean"], vec![]);
    m.node("IsInf", &["e"], &["inf"], vec![]);
    m.node(
        "IsInf",
        &["e"],
        &["pos"],
        vec![("detect_negative", A::Int(0))],
    );
    m.output("mean").output("inf").output("pos");
    let y = run(
        &m,
        &[
            f64s(&[6], a.clone()),
            f64s(&[6], b.clone()),
            f64s(&[6], e.clone()),
        ],
    );
    let mean: Vec<f64> = (0..6).map(|i| (a[i] + b[i] + e[i]) / 3.0).collect();
    assert_close(&as_f64(&y[0], "mean"), &mean, 0.0, "Mean");
    let flags = |t: &Tensor| t.to_i64_vec();
    assert_eq!(flags(&y[1]), vec![0, 1, 0, 0, 1, 0], "IsInf");
    assert_eq!(flags(&y[2]), vec![0, 1, 0, 0, 0, 0], "IsInf, positive only");
}

/// The mean of `v` and `1 / sqrt(mean((v - mean)^2) + eps)`, in f64 or (`f32`) each step
/// rounded to f32.
fn moments(v: &[f64], eps: f64, f32: bool) -> (f64, f64) {
    let r = |x: f64| if f32 { x as f32 as f64 } else { x };
    let v: Vec<f64> = v.iter().map(|&x| r(x)).collect();
    let n = v.len() as f64;
    let mean = r(v.iter().fold(0.0, |a, &b| r(a + b)) / n);
    let var = r(v
        .iter()
        .fold(0.0, |a, &b| r(a + r(r(b - mean) * r(b - mean))))
        / n);
    (mean, r(1.0 / r(r(var + r(eps)).sqrt())))
}

/// The normalizations in f64, as their spec functions compute them, against the same
/// steps by hand: BatchNormalization `(x - mean) / sqrt(var + eps) * scale + B` (exact);
/// LayerNormalization (with its Mean and InvStdDev outputs), InstanceNormalization and
/// GroupNormalization-21 with `stash_type` double in f64, and GroupNormalization-21's
/// default float32 statistics in f32 (cast back to f64 before the scale).
#[test]
fn double_normalizations() {
    let (n, c, hw) = (2usize, 4usize, 6usize);
    let x = values(n * c * hw, 60);
    let p = |seed| values(c, seed);
    let (scale, bias, mean, var) = (p(61), p(62), p(63), p(64));
    let var: Vec<f64> = var.iter().map(|v| v.abs() + 0.5).collect();
    let xt = f64s(&[n, c, 2, 3], x.clone());
    let eps = 1e-3f32;
    // BatchNormalization.
    let mut m = ModelBuilder::new(15);
    m.input("x", DType::F64, &[n as i64, c as i64, 2, 3]);
    for (name, v) in [("s", &scale), ("b", &bias), ("m", &mean), ("v", &var)] {
        m.initializer(name, &f64s(&[c], v.clone()));
    }
    m.node(
        "BatchNormalization",
        &["x", "s", "b", "m", "v"],
        &["y"],
        vec![("epsilon", A::Float(eps))],
    );
    m.output("y");
    let y = run(&m, std::slice::from_ref(&xt));
    let want: Vec<f64> = (0..n * c * hw)
        .map(|i| {
            let ch = (i / hw) % c;
            (x[i] - mean[ch]) / (var[ch] + eps as f64).sqrt() * scale[ch] + bias[ch]
        })
        .collect();
    assert_close(&as_f64(&y[0], "batch norm"), &want, 0.0, "batch norm");
    // LayerNormalization over the last two dims, InstanceNormalization, and
    // GroupNormalization-21 (2 groups) with double and with float32 statistics.
    let ln_scale = values(hw, 65);
    let ln_bias = values(hw, 66);
    let mut m = ModelBuilder::new(21);
    m.input("x", DType::F64, &[n as i64, c as i64, 2, 3]);
    m.initializer("ls", &f64s(&[2, 3], ln_scale.clone()))
        .initializer("lb", &f64s(&[2, 3], ln_bias.clone()))
        .initializer("s", &f64s(&[c], scale.clone()))
        .initializer("b", &f64s(&[c], bias.clone()));
    let e = ("epsilon", A::Float(eps));
    m.node(
        "LayerNormalization",
        &["x", "ls", "lb"],
        &["ln", "ln_mean", "ln_inv"],
        vec![("axis", A::Int(-2)), e.clone(), ("stash_type", A::Int(11))],
    );
    m.node(
        "InstanceNormalization",
        &["x", "s", "b"],
        &["in"],
        vec![e.clone()],
    );
    let gn = |stash| {
        vec![
            ("num_groups", A::Int(2)),
            ("epsilon", A::Float(eps)),
            ("stash_type", A::Int(stash)),
        ]
    };
    m.node("GroupNormalization", &["x", "s", "b"], &["gn64"], gn(11));
    m.node("GroupNormalization", &["x", "s", "b"], &["gn32"], gn(1));
    m.output("ln")
        .output("ln_mean")
        .output("ln_inv")
        .output("in")
        .output("gn64")
        .output("gn32");
    let y = run(&m, std::slice::from_ref(&xt));
    let (mut ln, mut ln_mean, mut ln_inv, mut inst) = (vec![], vec![], vec![], vec![]);
    for (k, v) in x.chunks(hw).enumerate() {
        let (mu, inv) = moments(v, eps as f64, false);
        ln_mean.push(mu);
        ln_inv.push(inv);
        for (j, &e) in v.iter().enumerate() {
            ln.push((e - mu) * inv * ln_scale[j] + ln_bias[j]);
            inst.push((e - mu) * inv * scale[k % c] + bias[k % c]);
        }
    }
    let (mut gn64, mut gn32) = (vec![], vec![]);
    for (k, v) in x.chunks(hw * c / 2).enumerate() {
        for (f32, out) in [(false, &mut gn64), (true, &mut gn32)] {
            let (mu, inv) = moments(v, eps as f64, f32);
            for (j, &e) in v.iter().enumerate() {
                let normed = if f32 {
                    ((e as f32 - mu as f32) * inv as f32) as f64
                } else {
                    (e - mu) * inv
                };
                let ch = (k % 2) * (c / 2) + j / hw;
                out.push(normed * scale[ch] + bias[ch]);
            }
        }
    }
    assert_close(&as_f64(&y[0], "layer norm"), &ln, 8.0, "layer norm");
    assert_close(&as_f64(&y[1], "mean"), &ln_mean, 8.0, "layer norm mean");
    assert_close(&as_f64(&y[2], "inv"), &ln_inv, 8.0, "layer norm inv std");
    assert_close(&as_f64(&y[3], "instance norm"), &inst, 8.0, "instance norm");
    assert_close(
        &as_f64(&y[4], "group norm"),
        &gn64,
        8.0,
        "group norm, double statistics",
    );
    // (f32 statistics: within f32 rounding of the same steps, far from the f64 result.)
    let got32 = as_f64(&y[5], "group norm f32");
    assert_near(&got32, &gn32, 1e-5, "group norm f32");
    assert!(
        got32.iter().zip(&gn64).any(|(a, b)| a != b),
        "float32 statistics"
    );
}

/// `erf` by its Maclaurin series (for |x| <= 1.5 it converges to the last bits of f64).
fn erf_series(x: f64) -> f64 {
    let (mut term, mut sum, mut n) = (x, x, 0.0);
    loop {
        n += 1.0;
        term *= -x * x / n;
        let t = term / (2.0 * n + 1.0);
        sum += t;
        if t.abs() < 1e-18 * sum.abs() {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

/// The activations imported as compositions, in f64 (constants as the spec's functions
/// cast their float constants to double), against their formulas by hand.
#[test]
fn double_activations() {
    let n = 48;
    // Within -1..2 for Gelu (its erf series is exact to the last bits there, and 1 + erf
    // does not cancel much), larger ones for the rest.
    let x: Vec<f64> = values(n, 70).iter().map(|v| v.clamp(-1.0, 2.0)).collect();
    let wide = values(n, 71);
    let softplus = |v: f64| v.max(0.0) + (1.0 + (-v.abs()).exp()).ln();
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    let elu = |v: f64, a: f64| if v > 0.0 { v } else { a * (v.exp() - 1.0) };
    let f32c = |v: f32| v as f64;
    // (op, attributes, formula, inputs, ulps)
    type Activation<'a> = (
        &'a str,
        Vec<(&'a str, A)>,
        Box<dyn Fn(f64) -> f64>,
        &'a Vec<f64>,
        f64,
    );
    let cases: Vec<Activation> = vec![
        (
            "Elu",
            vec![("alpha", A::Float(0.7))],
            Box::new(move |v| elu(v, f32c(0.7))),
            &wide,
            4.0,
        ),
        (
            "Selu",
            vec![],
            Box::new(move |v| f32c(1.050_701) * elu(v, f32c(1.673_263_2))),
            &wide,
            4.0,
        ),
        (
            "Celu",
            vec![("alpha", A::Float(1.3))],
            Box::new(move |v| {
                let a = f32c(1.3);
                v.max(0.0) + elu(v * (1.0 / a), a).min(0.0)
            }),
            &wide,
            4.0,
        ),
        ("Softplus", vec![], Box::new(softplus), &wide, 4.0),
        (
            "Softsign",
            vec![],
            Box::new(|v| v / (1.0 + v.abs())),
            &wide,
            0.0,
        ),
        (
            "Mish",
            vec![],
            Box::new(move |v| v * softplus(v).tanh()),
            &wide,
            4.0,
        ),
        (
            "ThresholdedRelu",
            vec![("alpha", A::Float(0.5))],
            Box::new(|v| if v > 0.5 { v } else { 0.0 }),
            &wide,
            0.0,
        ),
        (
            "Gelu",
            vec![],
            Box::new(|v| 0.5 * v * (1.0 + erf_series(v / std::f64::consts::SQRT_2))),
            &x,
            8.0,
        ),
        (
            "Gelu",
            vec![("approximate", A::Str("tanh".into()))],
            Box::new(move |v| {
                let k = f32c(2.0 / std::f32::consts::PI).sqrt();
                let inner = k * (v + f32c(0.044_715) * v.powf(3.0));
                0.5 * v * (1.0 + inner.tanh())
            }),
            &x,
            4.0,
        ),
        (
            "Swish",
            vec![("alpha", A::Float(1.5))],
            Box::new(move |v| v * sigmoid(1.5 * v)),
            &wide,
            4.0,
        ),
    ];
    for (op, attrs, f, v, ulps) in cases {
        let mut m = ModelBuilder::new(24);
        m.input("x", DType::F64, &[n as i64]);
        m.node(op, &["x"], &["y"], attrs);
        m.output("y");
        let y = run(&m, &[f64s(&[n], v.clone())]);
        let want: Vec<f64> = v.iter().map(|&e| f(e)).collect();
        assert_close(&as_f64(&y[0], op), &want, ulps, op);
    }
    // PRelu (a slope per column) and LogSoftmax along the last axis.
    let slope = values(8, 72);
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F64, &[6, 8]);
    m.initializer("slope", &f64s(&[8], slope.clone()));
    m.node("PRelu", &["x", "slope"], &["p"], vec![]);
    m.node("LogSoftmax", &["x"], &["l"], vec![("axis", A::Int(-1))]);
    m.output("p").output("l");
    let y = run(&m, &[f64s(&[6, 8], wide.clone())]);
    let prelu: Vec<f64> = wide
        .iter()
        .enumerate()
        .map(|(i, &e)| if e < 0.0 { e * slope[i % 8] } else { e })
        .collect();
    let logsm: Vec<f64> = wide
        .chunks(8)
        .flat_map(|row| {
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let l = row.iter().fold(0.0, |s, e| s + (e - mx).exp()).ln();
            row.iter().map(move |e| (e - mx) - l).collect::<Vec<_>>()
        })
        .collect();
    assert_close(&as_f64(&y[0], "prelu"), &prelu, 0.0, "PRelu");
    assert_close(&as_f64(&y[1], "logsoftmax"), &logsm, 4.0, "LogSoftmax");
    // LpNormalization (p = 1 and 2) and MeanVarianceNormalization over the last axis.
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F64, &[6, 8]);
    let axis = ("axis", A::Int(1));
    m.node(
        "LpNormalization",
        &["x"],
        &["l1"],
        vec![axis.clone(), ("p", A::Int(1))],
    );
    m.node(
        "LpNormalization",
        &["x"],
        &["l2"],
        vec![axis, ("p", A::Int(2))],
    );
    m.node(
        "MeanVarianceNormalization",
        &["x"],
        &["mvn"],
        vec![("axes", A::Ints(vec![1]))],
    );
    m.output("l1").output("l2").output("mvn");
    let y = run(&m, &[f64s(&[6, 8], wide.clone())]);
    let per_row =
        |f: &dyn Fn(&[f64]) -> Vec<f64>| -> Vec<f64> { wide.chunks(8).flat_map(f).collect() };
    let l1 = per_row(&|r| {
        let n = r.iter().fold(0.0, |s, e| s + e.abs());
        r.iter().map(|e| e / n).collect()
    });
    let l2 = per_row(&|r| {
        let n = r.iter().fold(0.0, |s, e| s + e * e).sqrt();
        r.iter().map(|e| e / n).collect()
    });
    let mvn = per_row(&|r| {
        let mean = r.iter().fold(0.0, |s, e| s + e) / 8.0;
        let var = r.iter().fold(0.0, |s, e| s + (e - mean) * (e - mean)) / 8.0;
        let sd = (var + f32c(1e-9)).sqrt();
        r.iter().map(|e| (e - mean) / sd).collect()
    });
    // RMSNormalization with double statistics and with float32 ones (the default).
    let rms_scale = values(8, 73);
    let mut outs = vec![];
    for stash in [11, 1] {
        let mut r = ModelBuilder::new(23);
        r.input("x", DType::F64, &[6, 8]);
        r.initializer("s", &f64s(&[8], rms_scale.clone()));
        r.node(
            "RMSNormalization",
            &["x", "s"],
            &["y"],
            vec![("stash_type", A::Int(stash))],
        );
        r.output("y");
        let got = as_f64(&run(&r, &[f64s(&[6, 8], wide.clone())])[0], "rms");
        let f32s = stash == 1;
        let q = |v: f64| if f32s { v as f32 as f64 } else { v };
        let want = per_row(&|row| {
            let ms = q(row.iter().fold(0.0, |s, e| q(s + q(q(*e) * q(*e)))) / 8.0);
            let rms = q(q(ms + q(1e-5f32 as f64)).sqrt());
            row.iter()
                .enumerate()
                .map(|(j, e)| q(q(*e) / rms) * rms_scale[j])
                .collect()
        });
        if f32s {
            assert_near(&got, &want, 1e-6, "rms f32");
        } else {
            assert_close(&got, &want, 8.0, "RMSNormalization");
        }
        outs.push(got);
    }
    assert!(outs[0] != outs[1], "RMSNormalization's float32 statistics");
    assert_close(&as_f64(&y[0], "l1"), &l1, 4.0, "LpNormalization p=1");
    assert_close(&as_f64(&y[1], "l2"), &l2, 4.0, "LpNormalization p=2");
    assert_close(
        &as_f64(&y[2], "mvn"),
        &mvn,
        8.0,
        "MeanVarianceNormalization",
    );
}

/// Shrink, Hardmax, LpPool (p = 3, padded, strided) and LRN in f64, against their
/// formulas by hand (the float attributes cast to double).
#[test]
fn double_shrink_hardmax_lppool_lrn() {
    let (n, c, h, w) = (2usize, 5usize, 4usize, 5usize);
    let x = values(n * c * h * w, 80);
    let x: Vec<f64> = x.iter().map(|v| v.clamp(-5.0, 5.0)).collect();
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F64, &[n as i64, c as i64, h as i64, w as i64]);
    let f = |v: f32| A::Float(v);
    m.node(
        "Shrink",
        &["x"],
        &["shrink"],
        vec![("lambd", f(0.7)), ("bias", f(0.3))],
    );
    m.node("Hardmax", &["x"], &["hardmax"], vec![("axis", A::Int(1))]);
    m.node(
        "LpPool",
        &["x"],
        &["lppool"],
        vec![
            ("kernel_shape", A::Ints(vec![3, 2])),
            ("strides", A::Ints(vec![2, 1])),
            ("pads", A::Ints(vec![1, 0, 1, 1])),
            ("p", A::Int(3)),
        ],
    );
    m.node(
        "LRN",
        &["x"],
        &["lrn"],
        vec![
            ("size", A::Int(3)),
            ("alpha", f(2e-4)),
            ("beta", f(0.8)),
            ("bias", f(1.5)),
        ],
    );
    m.output("shrink")
        .output("hardmax")
        .output("lppool")
        .output("lrn");
    let y = run(&m, &[f64s(&[n, c, h, w], x.clone())]);
    let at = |ni: usize, ci: usize, r: usize, q: usize| x[((ni * c + ci) * h + r) * w + q];
    let (l, b) = (0.7f32 as f64, 0.3f32 as f64);
    let shrink: Vec<f64> = x
        .iter()
        .map(|&v| {
            if v < -l {
                v + b
            } else if v > l {
                v - b
            } else {
                0.0
            }
        })
        .collect();
    let mut hardmax = vec![0.0; x.len()];
    let mut lrn = vec![0.0; x.len()];
    for ni in 0..n {
        for r in 0..h {
            for q in 0..w {
                let best = (0..c).fold(0, |k, ci| {
                    if at(ni, ci, r, q) > at(ni, k, r, q) {
                        ci
                    } else {
                        k
                    }
                });
                hardmax[((ni * c + best) * h + r) * w + q] = 1.0;
                for ci in 0..c {
                    let lo = ci.saturating_sub(1);
                    let hi = (ci + 1).min(c - 1);
                    let sum = (lo..=hi).fold(0.0, |s, k| s + at(ni, k, r, q) * at(ni, k, r, q));
                    let base = 2e-4f32 as f64 / 3.0 * sum + 1.5;
                    lrn[((ni * c + ci) * h + r) * w + q] =
                        at(ni, ci, r, q) * base.powf(-(0.8f32 as f64));
                }
            }
        }
    }
    // LpPool: windows of 3 x 2 from row 2i - 1, column j (rows padded 1 / 1, columns 0 / 1).
    let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 1 - 2) + 1);
    let mut lppool = vec![];
    for ni in 0..n {
        for ci in 0..c {
            for i in 0..oh {
                for j in 0..ow {
                    let mut sum = 0.0;
                    for a in 0..3 {
                        for bq in 0..2 {
                            let (r, q) = ((2 * i + a) as i64 - 1, j + bq);
                            if r >= 0 && (r as usize) < h && q < w {
                                sum += at(ni, ci, r as usize, q).abs().powf(3.0);
                            }
                        }
                    }
                    lppool.push(sum.powf(1.0 / 3.0));
                }
            }
        }
    }
    assert_close(&as_f64(&y[0], "shrink"), &shrink, 0.0, "Shrink");
    assert_close(&as_f64(&y[1], "hardmax"), &hardmax, 0.0, "Hardmax");
    assert_close(&as_f64(&y[2], "lppool"), &lppool, 8.0, "LpPool");
    assert_close(&as_f64(&y[3], "lrn"), &lrn, 8.0, "LRN");
}

/// ConvTranspose in f64 (two groups, strides, dilations, pads, output padding, a bias;
/// 1-D) against its definition by hand: every input cell times every kernel tap added into
/// the output cell it lands on (the sums in another order: within 1e-13 of the largest).
#[test]
fn double_conv_transpose() {
    // (x dims, w dims, group, strides, dilations, pads, output padding, bias)
    type Case = (
        Vec<usize>,
        Vec<usize>,
        usize,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        Vec<usize>,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            vec![2, 4, 3, 5],
            vec![4, 1, 3, 2],
            2,
            vec![2, 1],
            vec![1, 2],
            vec![1, 0, 0, 1],
            vec![1, 0],
            true,
        ),
        (
            vec![1, 3, 6],
            vec![3, 2, 4],
            1,
            vec![3],
            vec![1],
            vec![0, 0],
            vec![0],
            false,
        ),
    ];
    for (ci, (xd, wd, group, st, dil, pads, opad, bias)) in cases.into_iter().enumerate() {
        let nsp = xd.len() - 2;
        let xv = values(xd.iter().product(), 100 + ci as u64);
        let wv = values(wd.iter().product(), 110 + ci as u64);
        let (cg, mg) = (xd[1] / group, wd[1]);
        let m_out = mg * group;
        let bv = values(m_out, 120 + ci as u64);
        let osp: Vec<usize> = (0..nsp)
            .map(|d| {
                st[d] * (xd[2 + d] - 1) + opad[d] + (wd[2 + d] - 1) * dil[d] + 1
                    - pads[d]
                    - pads[nsp + d]
            })
            .collect();
        let mut m = ModelBuilder::new(17);
        m.input("x", DType::F64, &i64s(&xd));
        m.initializer("w", &f64s(&wd, wv.clone()));
        let mut ins = vec!["x", "w"];
        if bias {
            m.initializer("b", &f64s(&[m_out], bv.clone()));
            ins.push("b");
        }
        m.node(
            "ConvTranspose",
            &ins,
            &["y"],
            vec![
                ("group", A::Int(group as i64)),
                ("strides", A::Ints(i64s(&st))),
                ("dilations", A::Ints(i64s(&dil))),
                ("pads", A::Ints(i64s(&pads))),
                ("output_padding", A::Ints(i64s(&opad))),
            ],
        );
        m.output("y");
        let y = run(&m, &[f64s(&xd, xv.clone())]);
        let (isp, ksp) = (&xd[2..], &wd[2..]);
        let mut want = vec![0.0; xd[0] * m_out * count(&osp)];
        for n in 0..xd[0] {
            for oc in 0..m_out {
                for o in 0..count(&osp) {
                    want[(n * m_out + oc) * count(&osp) + o] = if bias { bv[oc] } else { 0.0 };
                }
            }
            for c in 0..xd[1] {
                let g = c / cg;
                for ii in 0..count(isp) {
                    let i = unravel(ii, isp);
                    for co in 0..mg {
                        for ki in 0..count(ksp) {
                            let k = unravel(ki, ksp);
                            let mut off = Some(0usize);
                            for d in 0..nsp {
                                let p = (i[d] * st[d] + k[d] * dil[d]) as i64 - pads[d] as i64;
                                off = match off {
                                    Some(f) if p >= 0 && (p as usize) < osp[d] => {
                                        Some(f * osp[d] + p as usize)
                                    }
                                    _ => None,
                                };
                            }
                            if let Some(f) = off {
                                let oc = g * mg + co;
                                want[(n * m_out + oc) * count(&osp) + f] += xv
                                    [(n * xd[1] + c) * count(isp) + ii]
                                    * wv[(c * mg + co) * count(ksp) + ki];
                            }
                        }
                    }
                }
            }
        }
        let got = as_f64(&y[0], "conv transpose");
        assert_eq!(got.len(), want.len(), "case {ci}: output size");
        let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
        for (k, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-13 * scale,
                "case {ci} [{k}]: {g} vs {w}"
            );
        }
    }
}

/// Conv in f64 (two groups, strides, dilations, asymmetric pads; a bias and none; 1-D and
/// 3-D): each output the bias, then its products in (input channel, kernel offset) order,
/// each product and sum rounded in f64, against the same sums by hand (taps over padding
/// add nothing: the weights are finite).
#[test]
fn double_conv() {
    struct Case {
        x: Vec<usize>,
        w: Vec<usize>,
        group: usize,
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<usize>,
        bias: bool,
    }
    let cases = [
        Case {
            x: vec![2, 4, 7, 9],
            w: vec![6, 2, 3, 2],
            group: 2,
            strides: vec![2, 1],
            dilations: vec![1, 2],
            pads: vec![1, 0, 2, 1],
            bias: true,
        },
        Case {
            x: vec![1, 3, 11],
            w: vec![4, 3, 4],
            group: 1,
            strides: vec![3],
            dilations: vec![1],
            pads: vec![2, 1],
            bias: false,
        },
        Case {
            x: vec![1, 2, 4, 3, 5],
            w: vec![3, 2, 2, 3, 3],
            group: 1,
            strides: vec![1, 1, 2],
            dilations: vec![1, 1, 1],
            pads: vec![1, 1, 0, 0, 1, 1],
            bias: true,
        },
    ];
    for (ci, c) in cases.iter().enumerate() {
        let nsp = c.x.len() - 2;
        let xv = values(c.x.iter().product(), 20 + ci as u64);
        let wv = values(c.w.iter().product(), 30 + ci as u64);
        let bv = values(c.w[0], 40 + ci as u64);
        let mut m = ModelBuilder::new(17);
        m.input("x", DType::F64, &i64s(&c.x))
            .input("w", DType::F64, &i64s(&c.w));
        let mut ins = vec!["x", "w"];
        if c.bias {
            m.input("b", DType::F64, &[c.w[0] as i64]);
            ins.push("b");
        }
        let kernel = c.w[2..].to_vec();
        m.node(
            "Conv",
            &ins,
            &["y"],
            vec![
                ("group", A::Int(c.group as i64)),
                ("strides", A::Ints(i64s(&c.strides))),
                ("dilations", A::Ints(i64s(&c.dilations))),
                ("pads", A::Ints(i64s(&c.pads))),
                ("kernel_shape", A::Ints(i64s(&kernel))),
            ],
        );
        m.output("y");
        let mut inputs = vec![f64s(&c.x, xv.clone()), f64s(&c.w, wv.clone())];
        if c.bias {
            inputs.push(f64s(&[c.w[0]], bv.clone()));
        }
        let y = run(&m, &inputs);
        // By hand: output extents, then every output's sum.
        let isp = &c.x[2..];
        let osp: Vec<usize> = (0..nsp)
            .map(|d| {
                let span = (kernel[d] - 1) * c.dilations[d] + 1;
                (isp[d] + c.pads[d] + c.pads[nsp + d] - span) / c.strides[d] + 1
            })
            .collect();
        let (cg, mg) = (c.w[1], c.w[0] / c.group);
        let mut want = vec![];
        for n in 0..c.x[0] {
            for (oc, &b) in bv.iter().enumerate() {
                let g = oc / mg;
                for oi in 0..count(&osp) {
                    let o = unravel(oi, &osp);
                    let mut acc = if c.bias { b } else { 0.0 };
                    for ic in 0..cg {
                        for ki in 0..count(&kernel) {
                            let k = unravel(ki, &kernel);
                            let mut off = Some(0usize);
                            for d in 0..nsp {
                                let p = (o[d] * c.strides[d] + k[d] * c.dilations[d]) as i64
                                    - c.pads[d] as i64;
                                off = match off {
                                    Some(f) if p >= 0 && (p as usize) < isp[d] => {
                                        Some(f * isp[d] + p as usize)
                                    }
                                    _ => None,
                                };
                            }
                            if let Some(f) = off {
                                let xi = (n * c.x[1] + g * cg + ic) * count(isp) + f;
                                let wi = (oc * cg + ic) * count(&kernel) + ki;
                                acc += xv[xi] * wv[wi];
                            }
                        }
                    }
                    want.push(acc);
                }
            }
        }
        assert_close(
            &as_f64(&y[0], "conv"),
            &want,
            0.0,
            &format!("conv case {ci}"),
        );
    }
}

/// MaxPool and AveragePool in f64 (padding, ceil mode, count_include_pad both ways): the
/// largest value of each window's cells in the map, and the sum of its cells in order
/// divided by their count (or by the window's size over the padded map).
#[test]
fn double_pools() {
    let (h, w) = (7usize, 8usize);
    let xv = values(2 * 3 * h * w, 50);
    let (k, s, p) = (3usize, 2usize, 1usize);
    let oh = (h + 2 * p - k).div_ceil(s) + 1;
    let ow = (w + 2 * p - k).div_ceil(s) + 1;
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F64, &[2, 3, h as i64, w as i64]);
    let window = |ceil: i64| {
        vec![
            ("kernel_shape", A::Ints(vec![k as i64; 2])),
            ("strides", A::Ints(vec![s as i64; 2])),
            ("pads", A::Ints(vec![p as i64; 4])),
            ("ceil_mode", A::Int(ceil)),
        ]
    };
    m.node("MaxPool", &["x"], &["max"], window(1));
    let mut inc = window(0);
    inc.push(("count_include_pad", A::Int(1)));
    m.node("AveragePool", &["x"], &["avg_in"], inc);
    m.node("AveragePool", &["x"], &["avg_ex"], window(0));
    m.output("max").output("avg_in").output("avg_ex");
    let y = run(&m, &[f64s(&[2, 3, h, w], xv.clone())]);
    // Floor mode for the averages.
    let (fh, fw) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let (mut max, mut avg_in, mut avg_ex) = (vec![], vec![], vec![]);
    for plane in 0..6 {
        for (rows, cols, out) in [(oh, ow, 0), (fh, fw, 1)] {
            for i in 0..rows {
                for j in 0..cols {
                    let mut cells = vec![];
                    for a in 0..k {
                        for b in 0..k {
                            let (r, c) =
                                ((i * s + a) as i64 - p as i64, (j * s + b) as i64 - p as i64);
                            if r >= 0 && c >= 0 && (r as usize) < h && (c as usize) < w {
                                cells.push(xv[plane * h * w + r as usize * w + c as usize]);
                            }
                        }
                    }
                    if out == 0 {
                        max.push(cells.iter().copied().fold(f64::NEG_INFINITY, f64::max));
                    } else {
                        let sum = cells.iter().fold(0.0, |t, v| t + v);
                        avg_in.push(sum / (k * k) as f64);
                        avg_ex.push(sum / cells.len() as f64);
                    }
                }
            }
        }
    }
    assert_close(&as_f64(&y[0], "max"), &max, 0.0, "max pool");
    assert_close(
        &as_f64(&y[1], "avg_in"),
        &avg_in,
        0.0,
        "average pool, padding counted",
    );
    assert_close(&as_f64(&y[2], "avg_ex"), &avg_ex, 0.0, "average pool");
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
