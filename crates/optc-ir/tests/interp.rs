//! Reference interpreter tests. Oracles: mathematical identities on random inputs, naive
//! loops written here, and small cases worked out by hand.

use optc_ir::interp::{eval_op, run};
use optc_ir::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
    fn tensor(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), self.vec(n)).unwrap()
    }
}

fn t(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}
fn ti(shape: &[usize], v: Vec<i64>) -> Tensor {
    Tensor::from_i64(shape.to_vec(), v).unwrap()
}
fn tb(shape: &[usize], v: Vec<bool>) -> Tensor {
    Tensor::new(shape.to_vec(), Data::Bool(v)).unwrap()
}
fn ev(op: Op, ins: &[&Tensor]) -> Tensor {
    let mut r = eval_op(&op, ins).unwrap();
    assert_eq!(r.len(), 1);
    r.remove(0)
}
fn f(x: &Tensor) -> Vec<f32> {
    x.as_f32().unwrap().to_vec()
}
fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "element {i}: got {g}, want {w}"
        );
    }
}
fn win(kernel: &[usize], strides: &[usize], pads: &[usize], dil: &[usize], ceil: bool) -> Window {
    Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dil.to_vec(),
        ceil_mode: ceil,
    }
}

// ------------------------------------------------------------------------------------------
// Elementwise.

#[test]
fn unary_float_formulas() {
    let mut r = Rng(7);
    let x = t(&[64], r.vec(64).iter().map(|v| v * 5.0).collect());
    let xs = f(&x);
    let check = |u: UnaryOp, g: &dyn Fn(f64) -> f64| {
        let y = ev(Op::Unary(u.clone()), &[&x]);
        let want: Vec<f32> = xs.iter().map(|&v| g(v as f64) as f32).collect();
        assert_close(&f(&y), &want, 1e-6);
    };
    check(UnaryOp::Relu, &|v| if v > 0.0 { v } else { 0.0 });
    check(UnaryOp::LeakyRelu { alpha: 0.1 }, &|v| {
        if v > 0.0 {
            v
        } else {
            0.1f32 as f64 * v
        }
    });
    check(
        UnaryOp::Clip {
            min: -1.0,
            max: 2.0,
        },
        &|v| v.clamp(-1.0, 2.0),
    );
    check(UnaryOp::Sigmoid, &|v| (v / 2.0).tanh() / 2.0 + 0.5);
    check(
        UnaryOp::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        &|v| (0.2f32 as f64 * v + 0.5).clamp(0.0, 1.0),
    );
    check(UnaryOp::Silu, &|v| v / (1.0 + (-v).exp()));
    check(UnaryOp::HardSwish, &|v| {
        if v <= -3.0 {
            0.0
        } else if v >= 3.0 {
            v
        } else {
            v * (v + 3.0) / 6.0
        }
    });
    check(UnaryOp::Tanh, &|v| {
        let e = (2.0 * v).exp();
        (e - 1.0) / (e + 1.0)
    });
    check(UnaryOp::Exp, &|v| std::f64::consts::E.powf(v));
    check(UnaryOp::Neg, &|v| -v);
    check(UnaryOp::Abs, &|v| if v < 0.0 { -v } else { v });
    check(UnaryOp::Identity, &|v| v);
    // log(exp(x)) = x, sqrt(x)^2 = |x|
    let e = ev(Op::Unary(UnaryOp::Exp), &[&x]);
    assert_close(&f(&ev(Op::Unary(UnaryOp::Log), &[&e])), &xs, 1e-5);
    let a = ev(Op::Unary(UnaryOp::Abs), &[&x]);
    let s = ev(Op::Unary(UnaryOp::Sqrt), &[&a]);
    let sq: Vec<f32> = f(&s).iter().map(|v| v * v).collect();
    assert_close(&sq, &f(&a), 1e-6);
}

#[test]
fn erf_known_values_and_symmetry() {
    let xs = [0.5f32, 1.0, 2.0, -0.5, -1.0, -2.0, 0.0, 5.0];
    let want = [
        0.5204998778130465f64,
        0.8427007929497149,
        0.9953222650189527,
        -0.5204998778130465,
        -0.8427007929497149,
        -0.9953222650189527,
        0.0,
        1.0,
    ];
    let y = ev(Op::Unary(UnaryOp::Erf), &[&t(&[8], xs.to_vec())]);
    for (g, w) in f(&y).iter().zip(want) {
        assert_eq!(*g, w as f32);
    }
    let mut r = Rng(3);
    let v: Vec<f32> = r.vec(100).iter().map(|v| v * 4.0).collect();
    let neg: Vec<f32> = v.iter().map(|x| -x).collect();
    let a = f(&ev(Op::Unary(UnaryOp::Erf), &[&t(&[100], v)]));
    let b = f(&ev(Op::Unary(UnaryOp::Erf), &[&t(&[100], neg)]));
    for (p, q) in a.iter().zip(&b) {
        assert_eq!(*p, -*q);
        assert!(p.abs() <= 1.0);
    }
}

/// GELU against `0.5 x (1 + erf(x / sqrt 2))` in f64 (values from Python's `math.erf`): the
/// f32 chain it rounds like is within a few ulp, and on the far negative side, where
/// `1 + erf` cancels in f32, within 1e-7 of 0.
#[test]
fn gelu_known_values() {
    let xs = [0.5f32, 1.0, 2.0, -0.5, -1.0, -2.0, 0.0, 6.0, -6.0];
    let want = [
        0.34573123063700656f64,
        0.8413447460685429,
        1.9544997361036416,
        -0.15426876936299344,
        -0.15865525393145707,
        -0.04550026389635842,
        0.0,
        5.999999994080474,
        -5.919525869479969e-09,
    ];
    let y = ev(Op::Unary(UnaryOp::Gelu), &[&t(&[9], xs.to_vec())]);
    for ((g, w), x) in f(&y).iter().zip(want).zip(xs) {
        let d = (*g as f64 - w).abs();
        assert!(d <= 1e-7 + 4e-7 * w.abs(), "gelu({x}) = {g}, want {w}");
    }
}

/// The tanh GELU against `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` in f64 (values
/// from Python's `math.tanh`): the f32 chain it rounds like is within a few ulp; and against
/// the erf GELU, which it approximates to 1e-3.
#[test]
fn gelu_tanh_known_values() {
    let xs = [0.5f32, 1.0, 2.0, -0.5, -1.0, -3.0, 0.0, 6.0, -6.0];
    let want = [
        0.34571400982514394f64,
        0.8411919906082768,
        1.954597694087775,
        -0.15428599017485606,
        -0.15880800939172324,
        -0.0036373920817729943,
        0.0,
        5.9999999999156035,
        -8.43964897967453e-11,
    ];
    let x = t(&[9], xs.to_vec());
    let y = ev(Op::Unary(UnaryOp::GeluTanh), &[&x]);
    let erf = ev(Op::Unary(UnaryOp::Gelu), &[&x]);
    for (((g, w), e), x) in f(&y).iter().zip(want).zip(f(&erf)).zip(xs) {
        let d = (*g as f64 - w).abs();
        assert!(d <= 1e-7 + 4e-7 * w.abs(), "gelu_tanh({x}) = {g}, want {w}");
        assert!((g - e).abs() < 1e-3, "gelu_tanh({x}) = {g}, gelu {e}");
    }
}

#[test]
fn unary_int_bool_nan() {
    let x = Tensor::new(vec![4], Data::I32(vec![-5, 0, 3, i32::MIN])).unwrap();
    let y = ev(
        Op::Unary(UnaryOp::Clip {
            min: -2.0,
            max: 2.0,
        }),
        &[&x],
    );
    assert_eq!(y.data(), &Data::I32(vec![-2, 0, 2, -2]));
    let y = ev(Op::Unary(UnaryOp::Relu), &[&x]);
    assert_eq!(y.data(), &Data::I32(vec![0, 0, 3, 0]));
    let y = ev(Op::Unary(UnaryOp::Neg), &[&x]);
    assert_eq!(y.data(), &Data::I32(vec![5, 0, -3, i32::MIN]));
    let y = ev(Op::Unary(UnaryOp::Not), &[&tb(&[2], vec![true, false])]);
    assert_eq!(y.data(), &Data::Bool(vec![false, true]));
    let y = ev(
        Op::Unary(UnaryOp::IsNaN),
        &[&t(&[3], vec![1.0, f32::NAN, f32::INFINITY])],
    );
    assert_eq!(y.data(), &Data::Bool(vec![false, true, false]));
    // Type errors come from inference, not panics.
    assert!(eval_op(&Op::Unary(UnaryOp::Exp), &[&x]).is_err());
}

#[test]
fn binary_broadcast_by_hand() {
    // [2,3] + [3]
    let a = t(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3], vec![10.0, 20.0, 30.0]);
    let y = ev(Op::Binary(BinaryOp::Add), &[&a, &b]);
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(f(&y), vec![11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    // [2,1] - [1,3] -> [2,3]: y[i][j] = c[i] - d[j]
    let c = t(&[2, 1], vec![1.0, 2.0]);
    let d = t(&[1, 3], vec![10.0, 20.0, 30.0]);
    let y = ev(Op::Binary(BinaryOp::Sub), &[&c, &d]);
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(
        f(&y),
        vec![
            1.0 - 10.0,
            1.0 - 20.0,
            1.0 - 30.0,
            2.0 - 10.0,
            2.0 - 20.0,
            2.0 - 30.0
        ]
    );
    // scalar * tensor
    let s = Tensor::scalar_f32(2.0);
    assert_eq!(
        f(&ev(Op::Binary(BinaryOp::Mul), &[&s, &a])),
        vec![2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    );
    let y = ev(Op::Binary(BinaryOp::Div), &[&a, &b]);
    assert_eq!(
        f(&y),
        vec![
            1.0 / 10.0,
            2.0 / 20.0,
            3.0 / 30.0,
            4.0 / 10.0,
            5.0 / 20.0,
            6.0 / 30.0
        ]
    );
    // comparisons
    let p = t(&[3], vec![1.0, 2.0, 3.0]);
    let q = t(&[3], vec![2.0, 2.0, 2.0]);
    let cmp = |op| ev(Op::Binary(op), &[&p, &q]).data().clone();
    assert_eq!(cmp(BinaryOp::Equal), Data::Bool(vec![false, true, false]));
    assert_eq!(cmp(BinaryOp::Greater), Data::Bool(vec![false, false, true]));
    assert_eq!(cmp(BinaryOp::Less), Data::Bool(vec![true, false, false]));
    assert_eq!(
        cmp(BinaryOp::GreaterOrEqual),
        Data::Bool(vec![false, true, true])
    );
    assert_eq!(
        cmp(BinaryOp::LessOrEqual),
        Data::Bool(vec![true, true, false])
    );
    assert_eq!(cmp(BinaryOp::Max).clone(), Data::F32(vec![2.0, 2.0, 3.0]));
    assert_eq!(cmp(BinaryOp::Min).clone(), Data::F32(vec![1.0, 2.0, 2.0]));
    // logical
    let u = tb(&[4], vec![true, true, false, false]);
    let v = tb(&[4], vec![true, false, true, false]);
    assert_eq!(
        ev(Op::Binary(BinaryOp::And), &[&u, &v]).data(),
        &Data::Bool(vec![true, false, false, false])
    );
    assert_eq!(
        ev(Op::Binary(BinaryOp::Or), &[&u, &v]).data(),
        &Data::Bool(vec![true, true, true, false])
    );
    assert_eq!(
        ev(Op::Binary(BinaryOp::Equal), &[&u, &v]).data(),
        &Data::Bool(vec![true, false, false, true])
    );
}

#[test]
fn binary_random_broadcast_matches_naive() {
    let mut r = Rng(11);
    let a = r.tensor(&[2, 1, 4]);
    let b = r.tensor(&[3, 1]);
    let y = ev(Op::Binary(BinaryOp::Mul), &[&a, &b]);
    assert_eq!(y.shape(), &[2, 3, 4]);
    let (av, bv, yv) = (f(&a), f(&b), f(&y));
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(yv[i * 12 + j * 4 + k], av[i * 4 + k] * bv[j]);
            }
        }
    }
}

#[test]
fn integer_arithmetic() {
    let a = ti(&[4], vec![7, -7, 7, -7]);
    let b = ti(&[4], vec![2, 2, -2, -2]);
    // truncation toward zero
    assert_eq!(
        ev(Op::Binary(BinaryOp::Div), &[&a, &b]).data(),
        &Data::I64(vec![3, -3, -3, 3])
    );
    let z = ti(&[4], vec![1, 0, 1, 1]);
    let e = eval_op(&Op::Binary(BinaryOp::Div), &[&a, &z]).unwrap_err();
    assert!(e.msg.contains("div") && e.msg.contains("zero"), "{}", e.msg);
    // wrapping
    let x = Tensor::new(vec![2], Data::I8(vec![127, -128])).unwrap();
    let one = Tensor::new(vec![], Data::I8(vec![1])).unwrap();
    assert_eq!(
        ev(Op::Binary(BinaryOp::Add), &[&x, &one]).data(),
        &Data::I8(vec![-128, -127])
    );
    let u = Tensor::new(vec![2], Data::U8(vec![200, 3])).unwrap();
    assert_eq!(
        ev(Op::Binary(BinaryOp::Mul), &[&u, &u]).data(),
        &Data::U8(vec![(200u32 * 200 % 256) as u8, 9])
    );
    // pow: int base, int exponent; float base, int exponent
    let base = ti(&[3], vec![2, -3, 5]);
    let ex = Tensor::new(vec![3], Data::I32(vec![10, 3, 0])).unwrap();
    assert_eq!(
        ev(Op::Binary(BinaryOp::Pow), &[&base, &ex]).data(),
        &Data::I64(vec![1024, -27, 1])
    );
    let fb = t(&[3], vec![2.0, 9.0, 0.5]);
    let fe = t(&[3], vec![3.0, 0.5, -2.0]);
    assert_eq!(
        f(&ev(Op::Binary(BinaryOp::Pow), &[&fb, &fe])),
        vec![8.0, 3.0, 4.0]
    );
    let fe_i = ti(&[1], vec![2]);
    assert_eq!(
        f(&ev(Op::Binary(BinaryOp::Pow), &[&fb, &fe_i])),
        vec![4.0, 81.0, 0.25]
    );
    // max / min on ints
    assert_eq!(
        ev(Op::Binary(BinaryOp::Max), &[&a, &b]).data(),
        &Data::I64(vec![7, 2, 7, -2])
    );
}

#[test]
fn where_and_cast() {
    let c = tb(&[2, 1], vec![true, false]);
    let a = t(&[3], vec![1.0, 2.0, 3.0]);
    let b = Tensor::scalar_f32(-1.0);
    let y = ev(Op::Where, &[&c, &a, &b]);
    assert_eq!(y.shape(), &[2, 3]);
    assert_eq!(f(&y), vec![1.0, 2.0, 3.0, -1.0, -1.0, -1.0]);

    let x = t(&[5], vec![1.7, -1.7, f32::NAN, 0.0, 3e10]);
    let to = |d| ev(Op::Cast { to: d }, &[&x]).data().clone();
    assert_eq!(to(DType::I32), Data::I32(vec![1, -1, 0, 0, i32::MAX]));
    assert_eq!(to(DType::I64), Data::I64(vec![1, -1, 0, 0, 30_000_001_024])); // 3e10 is 30000001024 in f32
    assert_eq!(
        to(DType::Bool),
        Data::Bool(vec![true, true, true, false, true])
    );
    let bools = tb(&[2], vec![true, false]);
    assert_eq!(
        ev(Op::Cast { to: DType::F32 }, &[&bools]).data(),
        &Data::F32(vec![1.0, 0.0])
    );
    let big = ti(&[2], vec![300, -1]);
    assert_eq!(
        ev(Op::Cast { to: DType::I8 }, &[&big]).data(),
        &Data::I8(vec![44, -1])
    );
    assert_eq!(
        ev(Op::Cast { to: DType::U8 }, &[&big]).data(),
        &Data::U8(vec![44, 255])
    );
}

#[test]
fn bitcast_reads_the_ieee_bits() {
    // IEEE 754 encodings: 1.0f32 = 0x3f80_0000, -2.0f32 = 0xc000_0000, 1.0f64 =
    // 0x3ff0_0000_0000_0000; the smallest f32 subnormal is bit pattern 1.
    let x = t(&[3], vec![1.0, -2.0, 0.0]);
    assert_eq!(
        ev(Op::Bitcast { to: DType::I32 }, &[&x]).data(),
        &Data::I32(vec![0x3f80_0000, 0xc000_0000_u32 as i32, 0])
    );
    let i = Tensor::new(vec![2], Data::I32(vec![1, 0x7f80_0000])).unwrap();
    assert_eq!(
        ev(Op::Bitcast { to: DType::F32 }, &[&i]).data(),
        &Data::F32(vec![1e-45, f32::INFINITY])
    );
    let d = Tensor::new(vec![1], Data::F64(vec![1.0])).unwrap();
    assert_eq!(
        ev(Op::Bitcast { to: DType::I64 }, &[&d]).data(),
        &Data::I64(vec![0x3ff0_0000_0000_0000])
    );
    let bytes = Tensor::new(vec![2], Data::I8(vec![-1, 5])).unwrap();
    assert_eq!(
        ev(Op::Bitcast { to: DType::U8 }, &[&bytes]).data(),
        &Data::U8(vec![255, 5])
    );
    let wide = Tensor::new(vec![1], Data::I64(vec![1])).unwrap();
    assert!(Op::Bitcast { to: DType::F32 }.infer(&[&wide.ty()]).is_err());
}

// ------------------------------------------------------------------------------------------
// Linear algebra.

fn naive_mm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                s += a[i * k + p] as f64 * b[p * n + j] as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

#[test]
fn matmul_by_hand_and_naive() {
    let a = t(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], vec![5.0, 6.0, 7.0, 8.0]);
    assert_eq!(
        f(&ev(Op::MatMul, &[&a, &b])),
        vec![
            1.0 * 5.0 + 2.0 * 7.0,
            1.0 * 6.0 + 2.0 * 8.0,
            3.0 * 5.0 + 4.0 * 7.0,
            3.0 * 6.0 + 4.0 * 8.0
        ]
    );
    let mut r = Rng(5);
    let a = r.tensor(&[5, 7]);
    let b = r.tensor(&[7, 3]);
    assert_close(
        &f(&ev(Op::MatMul, &[&a, &b])),
        &naive_mm(&f(&a), &f(&b), 5, 7, 3),
        1e-6,
    );
    // batch broadcast: [2,1,3,4] @ [3,4,5] -> [2,3,3,5]
    let a = r.tensor(&[2, 1, 3, 4]);
    let b = r.tensor(&[3, 4, 5]);
    let y = ev(Op::MatMul, &[&a, &b]);
    assert_eq!(y.shape(), &[2, 3, 3, 5]);
    let (av, bv, yv) = (f(&a), f(&b), f(&y));
    for i in 0..2 {
        for j in 0..3 {
            let want = naive_mm(&av[i * 12..i * 12 + 12], &bv[j * 20..j * 20 + 20], 3, 4, 5);
            let o = (i * 3 + j) * 15;
            assert_close(&yv[o..o + 15], &want, 1e-6);
        }
    }
    // rank-1 promotion: [4] @ [4,5] -> [5]; [3,4] @ [4] -> [3]
    let v = r.tensor(&[4]);
    let m = r.tensor(&[4, 5]);
    let y = ev(Op::MatMul, &[&v, &m]);
    assert_eq!(y.shape(), &[5]);
    assert_close(&f(&y), &naive_mm(&f(&v), &f(&m), 1, 4, 5), 1e-6);
    let m2 = r.tensor(&[3, 4]);
    let y = ev(Op::MatMul, &[&m2, &v]);
    assert_eq!(y.shape(), &[3]);
    assert_close(&f(&y), &naive_mm(&f(&m2), &f(&v), 3, 4, 1), 1e-6);
}

fn transpose2(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut o = vec![0.0; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            o[j * rows + i] = v[i * cols + j];
        }
    }
    o
}

#[test]
fn gemm_against_naive() {
    let mut r = Rng(9);
    let (m, k, n) = (3, 4, 5);
    for (ta, tb_) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = r.tensor(&if ta { [k, m] } else { [m, k] });
        let b = r.tensor(&if tb_ { [n, k] } else { [k, n] });
        let c = r.tensor(&[n]);
        let op = Op::Gemm {
            alpha: 0.5,
            beta: 2.0,
            trans_a: ta,
            trans_b: tb_,
        };
        let y = ev(op, &[&a, &b, &c]);
        assert_eq!(y.shape(), &[m, n]);
        let av = if ta { transpose2(&f(&a), k, m) } else { f(&a) };
        let bv = if tb_ { transpose2(&f(&b), n, k) } else { f(&b) };
        let mm = naive_mm(&av, &bv, m, k, n);
        let cv = f(&c);
        let want: Vec<f32> = (0..m * n).map(|i| 0.5 * mm[i] + 2.0 * cv[i % n]).collect();
        assert_close(&f(&y), &want, 1e-6);
    }
}

// ------------------------------------------------------------------------------------------
// Conv and pools.

#[test]
fn conv_3x3_input_2x2_kernel_by_hand() {
    // x = [[1,2,3],[4,5,6],[7,8,9]], w = [[1,0],[0,-1]] (x[i][j] - x[i+1][j+1]), bias 10
    let x = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
    let w = t(&[1, 1, 2, 2], vec![1.0, 0.0, 0.0, -1.0]);
    let b = t(&[1], vec![10.0]);
    let op = Op::Conv {
        window: win(&[2, 2], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
        group: 1,
    };
    let y = ev(op, &[&x, &w, &b]);
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(
        f(&y),
        vec![
            1.0 - 5.0 + 10.0,
            2.0 - 6.0 + 10.0,
            4.0 - 8.0 + 10.0,
            5.0 - 9.0 + 10.0
        ]
    );
    // Same input, all-ones 2x2 kernel, pads 1, stride 2 -> 2x2 output of window sums:
    // window at (-1,-1): 1; (-1,1): 2+3; (1,-1): 4+7; (1,1): 5+6+8+9
    let w1 = t(&[1, 1, 2, 2], vec![1.0; 4]);
    let op = Op::Conv {
        window: win(&[2, 2], &[2, 2], &[1, 1, 1, 1], &[1, 1], false),
        group: 1,
    };
    let y = ev(op, &[&x, &w1]);
    assert_eq!(y.shape(), &[1, 1, 2, 2]);
    assert_eq!(
        f(&y),
        vec![1.0, 2.0 + 3.0, 4.0 + 7.0, 5.0 + 6.0 + 8.0 + 9.0]
    );
    // Dilation 2, 2x2 kernel on 3x3: only one position, corners 1+3+7+9
    let op = Op::Conv {
        window: win(&[2, 2], &[1, 1], &[0, 0, 0, 0], &[2, 2], false),
        group: 1,
    };
    assert_eq!(f(&ev(op, &[&x, &w1])), vec![1.0 + 3.0 + 7.0 + 9.0]);
}

#[test]
fn conv_1d_by_hand() {
    // x = [1,2,3,4,5], w = [1,2,3] stride 2 pad (1, 1):
    // padded = [0,1,2,3,4,5,0]; windows start at 0,2,4
    let x = t(&[1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let w = t(&[1, 1, 3], vec![1.0, 2.0, 3.0]);
    let op = Op::Conv {
        window: win(&[3], &[2], &[1, 1], &[1], false),
        group: 1,
    };
    let y = ev(op, &[&x, &w]);
    assert_eq!(
        f(&y),
        vec![
            0.0 + 2.0 * 1.0 + 3.0 * 2.0,
            2.0 + 2.0 * 3.0 + 3.0 * 4.0,
            4.0 + 2.0 * 5.0 + 0.0
        ]
    );
}

#[test]
fn conv_1x1_equals_matmul() {
    let mut r = Rng(21);
    let (n, c, m, h, wd) = (2, 5, 4, 3, 6);
    let x = r.tensor(&[n, c, h, wd]);
    let w = r.tensor(&[m, c, 1, 1]);
    let op = Op::Conv {
        window: win(&[1, 1], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
        group: 1,
    };
    let y = ev(op, &[&x, &w]);
    assert_eq!(y.shape(), &[n, m, h, wd]);
    let (xv, wv, yv) = (f(&x), f(&w), f(&y));
    for b in 0..n {
        // y[b] = W [m,c] @ X[b] [c, h*w]
        let want = naive_mm(&wv, &xv[b * c * h * wd..(b + 1) * c * h * wd], m, c, h * wd);
        assert_close(&yv[b * m * h * wd..(b + 1) * m * h * wd], &want, 1e-6);
    }
}

/// A direct 2-D conv written plainly here, used as the oracle for random cases.
#[allow(clippy::too_many_arguments)]
fn naive_conv2d(
    x: &[f32],
    xs: [usize; 4],
    w: &[f32],
    ws: [usize; 4],
    stride: [usize; 2],
    pad: [usize; 4],
    dil: [usize; 2],
    group: usize,
) -> (Vec<f32>, [usize; 4]) {
    let [n, c, h, wd] = xs;
    let [m, cg, kh, kw] = ws;
    let oh = (h + pad[0] + pad[2] - (dil[0] * (kh - 1) + 1)) / stride[0] + 1;
    let ow = (wd + pad[1] + pad[3] - (dil[1] * (kw - 1) + 1)) / stride[1] + 1;
    let mut y = vec![0.0f32; n * m * oh * ow];
    for b in 0..n {
        for oc in 0..m {
            let g = oc / (m / group);
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = 0.0f64;
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for u in 0..kh {
                            for v in 0..kw {
                                let yy = (i * stride[0] + u * dil[0]) as isize - pad[0] as isize;
                                let xx = (j * stride[1] + v * dil[1]) as isize - pad[1] as isize;
                                if yy < 0 || xx < 0 || yy >= h as isize || xx >= wd as isize {
                                    continue;
                                }
                                let xi = ((b * c + ic) * h + yy as usize) * wd + xx as usize;
                                let wi = ((oc * cg + ci) * kh + u) * kw + v;
                                s += x[xi] as f64 * w[wi] as f64;
                            }
                        }
                    }
                    y[((b * m + oc) * oh + i) * ow + j] = s as f32;
                }
            }
        }
    }
    (y, [n, m, oh, ow])
}

#[test]
fn conv_random_vs_naive_including_groups_and_depthwise() {
    let mut r = Rng(33);
    #[allow(clippy::type_complexity)]
    let cases: &[(
        [usize; 4],
        [usize; 4],
        [usize; 2],
        [usize; 4],
        [usize; 2],
        usize,
    )] = &[
        ([1, 3, 7, 6], [4, 3, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 1),
        ([2, 4, 8, 8], [6, 2, 3, 2], [2, 1], [0, 1, 2, 0], [1, 2], 2),
        ([1, 4, 5, 5], [4, 1, 3, 3], [1, 1], [1, 1, 1, 1], [1, 1], 4), // depthwise
        ([1, 2, 9, 9], [4, 1, 3, 3], [2, 2], [2, 2, 2, 2], [2, 2], 2),
    ];
    for &(xs, ws, st, pd, dl, g) in cases {
        let x = r.tensor(&xs);
        let w = r.tensor(&ws);
        let op = Op::Conv {
            window: win(&ws[2..], &st, &pd, &dl, false),
            group: g,
        };
        let y = ev(op, &[&x, &w]);
        let (want, shape) = naive_conv2d(&f(&x), xs, &f(&w), ws, st, pd, dl, g);
        assert_eq!(y.shape(), &shape);
        assert_close(&f(&y), &want, 1e-5);
    }
}

#[test]
fn batch_norm_formula() {
    let mut r = Rng(4);
    let x = r.tensor(&[2, 3, 2, 2]);
    let sc = t(&[3], vec![1.0, 2.0, -1.0]);
    let bi = t(&[3], vec![0.0, 0.5, 1.0]);
    let me = t(&[3], vec![0.1, -0.2, 0.3]);
    let va = t(&[3], vec![1.0, 4.0, 0.25]);
    let y = ev(Op::BatchNorm { epsilon: 0.0 }, &[&x, &sc, &bi, &me, &va]);
    let xv = f(&x);
    let (s, b, m, sd) = (
        [1.0, 2.0, -1.0],
        [0.0, 0.5, 1.0],
        [0.1, -0.2, 0.3],
        [1.0, 2.0, 0.5],
    );
    let want: Vec<f32> = (0..24)
        .map(|i| {
            let c = (i / 4) % 3;
            s[c] * (xv[i] - m[c]) / sd[c] + b[c]
        })
        .collect();
    assert_close(&f(&y), &want, 1e-6);
}

#[test]
fn maxpool_identity_and_by_hand() {
    let mut r = Rng(8);
    let x = r.tensor(&[2, 3, 4, 5]);
    let op = Op::MaxPool {
        window: win(&[1, 1], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
    };
    assert_eq!(ev(op, &[&x]), x);
    // 3x3 input 1..9, 2x2 kernel stride 1 -> max of each window = bottom-right element
    let x = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
    let op = Op::MaxPool {
        window: win(&[2, 2], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
    };
    assert_eq!(f(&ev(op, &[&x])), vec![5.0, 6.0, 8.0, 9.0]);
    // padding never wins: negative input with pads 1
    let neg = t(&[1, 1, 2, 2], vec![-1.0, -2.0, -3.0, -4.0]);
    let op = Op::MaxPool {
        window: win(&[2, 2], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
    };
    let y = ev(op, &[&neg]);
    assert_eq!(y.shape(), &[1, 1, 3, 3]);
    assert_eq!(
        f(&y),
        vec![-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -3.0, -3.0, -4.0]
    );
    // ceil_mode: 1-D [1..5] kernel 2 stride 2 -> floor gives 2 outputs, ceil 3 (last = [5])
    let x = t(&[1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let op = Op::MaxPool {
        window: win(&[2], &[2], &[0, 0], &[1], true),
    };
    assert_eq!(f(&ev(op, &[&x])), vec![2.0, 4.0, 5.0]);
    // dilation 2 kernel 2: windows {0,2},{1,3},{2,4}
    let op = Op::MaxPool {
        window: win(&[2], &[1], &[0, 0], &[2], false),
    };
    let x = t(&[1, 1, 5], vec![5.0, 1.0, 2.0, 4.0, 3.0]);
    assert_eq!(f(&ev(op, &[&x])), vec![5.0, 4.0, 3.0]);
}

#[test]
fn avgpool_divisors() {
    // 1-D x = [1,2,3,4,5], kernel 3, stride 2, pads (1,1) -> windows over padded [0,1,2,3,4,5,0]:
    // [0,1,2], [2,3,4], [4,5,0]
    let x = t(&[1, 1, 5], vec![1.0, 2.0, 3.0, 4.0, 5.0]);
    let mk = |inc: bool, ceil: bool, pads: [usize; 2]| Op::AveragePool {
        window: win(&[3], &[2], &pads, &[1], ceil),
        count_include_pad: inc,
    };
    assert_eq!(
        f(&ev(mk(true, false, [1, 1]), &[&x])),
        vec![
            (1.0 + 2.0) / 3.0,
            (2.0 + 3.0 + 4.0) / 3.0,
            (4.0 + 5.0) / 3.0
        ]
    );
    assert_eq!(
        f(&ev(mk(false, false, [1, 1]), &[&x])),
        vec![
            (1.0 + 2.0) / 2.0,
            (2.0 + 3.0 + 4.0) / 3.0,
            (4.0 + 5.0) / 2.0
        ]
    );
    // ceil_mode with pads (1,0): padded = [0,1,2,3,4,5] (extent 6), span 3, windows at 0,2,4:
    // [0,1,2] [2,3,4] [4,5,(beyond)] -> the cell beyond the padded extent is never counted.
    let y = ev(mk(true, true, [1, 0]), &[&x]);
    assert_eq!(
        f(&y),
        vec![
            (1.0 + 2.0) / 3.0,
            (2.0 + 3.0 + 4.0) / 3.0,
            (4.0 + 5.0) / 2.0
        ]
    );
    let y = ev(mk(false, true, [1, 0]), &[&x]);
    assert_eq!(
        f(&y),
        vec![
            (1.0 + 2.0) / 2.0,
            (2.0 + 3.0 + 4.0) / 3.0,
            (4.0 + 5.0) / 2.0
        ]
    );
    // 2-D global average equals the mean
    let mut r = Rng(1);
    let x = r.tensor(&[1, 2, 3, 4]);
    let op = Op::AveragePool {
        window: win(&[3, 4], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
        count_include_pad: false,
    };
    let xv = f(&x);
    let want: Vec<f32> = (0..2)
        .map(|c| xv[c * 12..c * 12 + 12].iter().sum::<f32>() / 12.0)
        .collect();
    assert_close(&f(&ev(op, &[&x])), &want, 1e-6);
}

// ------------------------------------------------------------------------------------------
// Reductions and normalizations.

#[test]
fn reductions() {
    let x = t(&[2, 3], vec![1.0, -2.0, 3.0, 4.0, 5.0, -6.0]);
    let red = |kind, axes: &[usize], keep| {
        ev(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
                keepdims: keep,
            },
            &[&x],
        )
    };
    let y = red(ReduceKind::Sum, &[1], false);
    assert_eq!(y.shape(), &[2]);
    assert_eq!(f(&y), vec![1.0 - 2.0 + 3.0, 4.0 + 5.0 - 6.0]);
    let y = red(ReduceKind::Sum, &[0], true);
    assert_eq!(y.shape(), &[1, 3]);
    assert_eq!(f(&y), vec![5.0, 3.0, -3.0]);
    let y = red(ReduceKind::Mean, &[0, 1], false);
    assert_eq!(y.shape(), &[] as &[usize]);
    assert_eq!(f(&y), vec![5.0 / 6.0]);
    assert_eq!(f(&red(ReduceKind::Max, &[1], false)), vec![3.0, 5.0]);
    let l2 = f(&red(ReduceKind::L2, &[1], false));
    assert_close(
        &l2,
        &[(1.0f32 + 4.0 + 9.0).sqrt(), (16.0f32 + 25.0 + 36.0).sqrt()],
        1e-6,
    );
    // ints
    let xi = Tensor::new(vec![2, 2], Data::I32(vec![1, 2, 3, 4])).unwrap();
    let op = Op::Reduce {
        kind: ReduceKind::Sum,
        axes: vec![0],
        keepdims: false,
    };
    assert_eq!(ev(op, &[&xi]).data(), &Data::I32(vec![4, 6]));
    let op = Op::Reduce {
        kind: ReduceKind::Mean,
        axes: vec![1],
        keepdims: false,
    };
    assert_eq!(ev(op, &[&xi]).data(), &Data::I32(vec![1, 3]));
    // random: sum over all axes equals the plain total
    let mut r = Rng(12);
    let x = r.tensor(&[3, 4, 5]);
    let op = Op::Reduce {
        kind: ReduceKind::Sum,
        axes: vec![0, 2],
        keepdims: false,
    };
    let y = f(&ev(op, &[&x]));
    let total: f32 = f(&x).iter().sum();
    assert!((y.iter().sum::<f32>() - total).abs() < 1e-4);
}

#[test]
fn softmax_properties() {
    let mut r = Rng(13);
    let x = r.tensor(&[3, 4, 5]);
    for axis in 0..3 {
        let y = f(&ev(Op::Softmax { axis }, &[&x]));
        let shifted: Vec<f32> = f(&x).iter().map(|v| v + 100.0).collect();
        let y2 = f(&ev(Op::Softmax { axis }, &[&t(&[3, 4, 5], shifted)]));
        assert_close(&y, &y2, 1e-5);
        // sums along the axis are 1
        let red = Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![axis],
            keepdims: false,
        };
        let s = f(&ev(red, &[&t(&[3, 4, 5], y.clone())]));
        for v in s {
            assert!((v - 1.0).abs() < 1e-6);
        }
        assert!(y.iter().all(|&v| v > 0.0 && v < 1.0));
    }
    // by hand: softmax([0, ln 3]) = [1/4, 3/4]
    let y = f(&ev(
        Op::Softmax { axis: 0 },
        &[&t(&[2], vec![0.0, 3f32.ln()])],
    ));
    assert_close(&y, &[0.25, 0.75], 1e-6);
}

#[test]
fn layer_norm_properties() {
    let mut r = Rng(14);
    let x = r.tensor(&[4, 3, 8]);
    let ones = t(&[8], vec![1.0; 8]);
    let y = f(&ev(
        Op::LayerNorm {
            axis: 2,
            epsilon: 0.0,
        },
        &[&x, &ones],
    ));
    for row in y.chunks(8) {
        let mean: f32 = row.iter().sum::<f32>() / 8.0;
        let var: f32 = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 8.0;
        assert!(mean.abs() < 1e-5, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-4, "var {var}");
    }
    // scale and bias applied elementwise after normalization (axis = 1 normalizes [3, 8])
    let sc = r.tensor(&[3, 8]);
    let bi = r.tensor(&[8]);
    let plain = f(&ev(
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        },
        &[&x, &t(&[1], vec![1.0])],
    ));
    let y = f(&ev(
        Op::LayerNorm {
            axis: 1,
            epsilon: 1e-5,
        },
        &[&x, &sc, &bi],
    ));
    let (s, b) = (f(&sc), f(&bi));
    let want: Vec<f32> = (0..96).map(|i| plain[i] * s[i % 24] + b[i % 8]).collect();
    assert_close(&y, &want, 1e-5);
    // by hand: [1, 3] -> mean 2, var 1 -> [-1, 1]
    let y = f(&ev(
        Op::LayerNorm {
            axis: 0,
            epsilon: 0.0,
        },
        &[&t(&[2], vec![1.0, 3.0]), &t(&[2], vec![1.0, 1.0])],
    ));
    assert_eq!(y, vec![-1.0, 1.0]);
}

// ------------------------------------------------------------------------------------------
// Data movement.

#[test]
fn reshape_transpose_roundtrips() {
    let mut r = Rng(15);
    let x = r.tensor(&[2, 3, 4]);
    let y = ev(Op::Reshape { shape: vec![4, 6] }, &[&x]);
    assert_eq!(y.shape(), &[4, 6]);
    assert_eq!(f(&y), f(&x));
    let perm = vec![2, 0, 1];
    let y = ev(Op::Transpose { perm: perm.clone() }, &[&x]);
    assert_eq!(y.shape(), &[4, 2, 3]);
    let (xv, yv) = (f(&x), f(&y));
    for i in 0..2 {
        for j in 0..3 {
            for k in 0..4 {
                assert_eq!(yv[k * 6 + i * 3 + j], xv[i * 12 + j * 4 + k]);
            }
        }
    }
    let back = ev(
        Op::Transpose {
            perm: vec![1, 2, 0],
        },
        &[&y],
    );
    assert_eq!(back, x);
}

#[test]
fn split_concat_roundtrip() {
    let mut r = Rng(16);
    let x = r.tensor(&[3, 7, 2]);
    let parts = eval_op(
        &Op::Split {
            axis: 1,
            sizes: vec![2, 4, 1],
        },
        &[&x],
    )
    .unwrap();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1].shape(), &[3, 4, 2]);
    // part 1 element [i][j][k] = x[i][2 + j][k]
    let (xv, pv) = (f(&x), f(&parts[1]));
    for i in 0..3 {
        for j in 0..4 {
            for k in 0..2 {
                assert_eq!(pv[i * 8 + j * 2 + k], xv[i * 14 + (2 + j) * 2 + k]);
            }
        }
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    assert_eq!(ev(Op::Concat { axis: 1 }, &refs), x);
    // concat of ints by hand
    let a = ti(&[1, 2], vec![1, 2]);
    let b = ti(&[1, 1], vec![3]);
    assert_eq!(
        ev(Op::Concat { axis: 1 }, &[&a, &b]).data(),
        &Data::I64(vec![1, 2, 3])
    );
}

#[test]
fn pad_slice() {
    let mut r = Rng(17);
    let x = r.tensor(&[3, 4]);
    let padded = ev(
        Op::Pad {
            pads: vec![1, 2, 3, 0],
            mode: PadMode::Constant,
            value: 7.0,
        },
        &[&x],
    );
    assert_eq!(padded.shape(), &[7, 6]);
    let pv = f(&padded);
    assert_eq!(pv[0], 7.0);
    assert_eq!(pv[6 * 6 + 5], 7.0);
    let back = ev(
        Op::Slice {
            dims: vec![
                SliceDim {
                    start: 1,
                    step: 1,
                    len: 3,
                },
                SliceDim {
                    start: 2,
                    step: 1,
                    len: 4,
                },
            ],
        },
        &[&padded],
    );
    assert_eq!(back, x);
    // negative pads crop: same as slicing
    let cropped = ev(
        Op::Pad {
            pads: vec![-1, 0, 0, -2],
            mode: PadMode::Constant,
            value: 0.0,
        },
        &[&x],
    );
    let xv = f(&x);
    assert_eq!(f(&cropped), vec![xv[4], xv[5], xv[8], xv[9]]);
    // reflect, edge and wrap, by hand (numpy): [1,2,3] pad (2,2)
    let v = t(&[3], vec![1.0, 2.0, 3.0]);
    let p = |mode| {
        f(&ev(
            Op::Pad {
                pads: vec![2, 2],
                mode,
                value: 0.0,
            },
            &[&v],
        ))
    };
    assert_eq!(p(PadMode::Reflect), vec![3.0, 2.0, 1.0, 2.0, 3.0, 2.0, 1.0]);
    assert_eq!(p(PadMode::Edge), vec![1.0, 1.0, 1.0, 2.0, 3.0, 3.0, 3.0]);
    assert_eq!(p(PadMode::Wrap), vec![2.0, 3.0, 1.0, 2.0, 3.0, 1.0, 2.0]);
    assert_eq!(
        p(PadMode::Constant),
        vec![0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0]
    );
    // slice with a negative step reverses
    let rev = ev(
        Op::Slice {
            dims: vec![SliceDim {
                start: 2,
                step: -1,
                len: 3,
            }],
        },
        &[&v],
    );
    assert_eq!(f(&rev), vec![3.0, 2.0, 1.0]);
    let every2 = ev(
        Op::Slice {
            dims: vec![
                SliceDim {
                    start: 0,
                    step: 2,
                    len: 2,
                },
                SliceDim {
                    start: 3,
                    step: -3,
                    len: 2,
                },
            ],
        },
        &[&x],
    );
    assert_eq!(f(&every2), vec![xv[3], xv[0], xv[11], xv[8]]);
}

#[test]
fn gather_expand() {
    let mut r = Rng(18);
    let x = r.tensor(&[3, 4, 2]);
    let ar = ti(&[4], vec![0, 1, 2, 3]);
    assert_eq!(ev(Op::Gather { axis: 1 }, &[&x, &ar]), x);
    // negative index and 2-D indices
    let idx = Tensor::new(vec![2, 2], Data::I32(vec![-1, 0, 2, 2])).unwrap();
    let y = ev(Op::Gather { axis: 0 }, &[&x, &idx]);
    assert_eq!(y.shape(), &[2, 2, 4, 2]);
    let (xv, yv) = (f(&x), f(&y));
    for (p, &row) in [2usize, 0, 2, 2].iter().enumerate() {
        assert_eq!(&yv[p * 8..p * 8 + 8], &xv[row * 8..row * 8 + 8]);
    }
    let bad = ti(&[2], vec![0, 4]);
    let e = eval_op(&Op::Gather { axis: 1 }, &[&x, &bad]).unwrap_err();
    assert!(e.msg.contains("index 4"), "{}", e.msg);
    let bad = ti(&[1], vec![-5]);
    assert!(eval_op(&Op::Gather { axis: 1 }, &[&x, &bad]).is_err());
    // expand [3,1] to [2,3,4]
    let c = t(&[3, 1], vec![1.0, 2.0, 3.0]);
    let y = ev(
        Op::Expand {
            shape: vec![2, 1, 4],
        },
        &[&c],
    );
    assert_eq!(y.shape(), &[2, 3, 4]);
    let yv = f(&y);
    assert_eq!(yv.len(), 24);
    for (i, v) in yv.iter().enumerate() {
        assert_eq!(*v, ((i / 4) % 3 + 1) as f32);
    }
}

// ------------------------------------------------------------------------------------------
// Whole graphs.

fn small_graph() -> Graph {
    // y = relu(x @ w + b); (s0, s1) = split(y, axis 1)
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[2, 3]));
    let w = g.add_const("w", t(&[3, 4], (0..12).map(|v| v as f32 - 6.0).collect()));
    let b = g.add_const("b", t(&[4], vec![1.0, -1.0, 0.5, 0.0]));
    let mm = g.add("mm", Op::MatMul, &[x, w]).unwrap();
    let add = g.add("add", Op::Binary(BinaryOp::Add), &[mm, b]).unwrap();
    let y = g.add("relu", Op::Unary(UnaryOp::Relu), &[add]).unwrap();
    let s = g
        .add_node(
            "split",
            Op::Split {
                axis: 1,
                sizes: vec![1, 3],
            },
            &[y],
        )
        .unwrap();
    g.add_output("y", y);
    g.add_output("s1", s[1]);
    g.add_output("y_again", y);
    g
}

#[test]
fn run_graph() {
    let g = small_graph();
    let x = t(&[2, 3], vec![1.0, 2.0, 3.0, -1.0, 0.0, 1.0]);
    let out = run(&g, std::slice::from_ref(&x)).unwrap();
    assert_eq!(out.len(), 3);
    let w: Vec<f32> = (0..12).map(|v| v as f32 - 6.0).collect();
    let mm = naive_mm(&f(&x), &w, 2, 3, 4);
    let b = [1.0, -1.0, 0.5, 0.0];
    let want: Vec<f32> = (0..8).map(|i| (mm[i] + b[i % 4]).max(0.0)).collect();
    assert_eq!(f(&out[0]), want);
    assert_eq!(out[1].shape(), &[2, 3]);
    assert_eq!(
        f(&out[1]),
        vec![want[1], want[2], want[3], want[5], want[6], want[7]]
    );
    assert_eq!(out[2], out[0]);
}

#[test]
fn run_input_errors() {
    let g = small_graph();
    let e = run(&g, &[]).unwrap_err();
    assert!(e.msg.contains("1 inputs, got 0"), "{}", e.msg);
    let e = run(&g, &[t(&[3, 2], vec![0.0; 6])]).unwrap_err();
    assert!(
        e.msg.contains("x") && e.msg.contains("f32[2,3]") && e.msg.contains("f32[3,2]"),
        "{}",
        e.msg
    );
    let e = run(&g, &[ti(&[2, 3], vec![0; 6])]).unwrap_err();
    assert!(e.msg.contains("i64[2,3]"), "{}", e.msg);
}

#[test]
fn run_error_names_the_node() {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::new(DType::I64, vec![2]));
    let z = g.add_const("zero", ti(&[2], vec![1, 0]));
    let d = g
        .add("the_div", Op::Binary(BinaryOp::Div), &[a, z])
        .unwrap();
    g.add_output("d", d);
    let e = run(&g, &[ti(&[2], vec![4, 5])]).unwrap_err();
    assert!(
        e.msg.contains("the_div") && e.msg.contains("zero"),
        "{}",
        e.msg
    );

    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[3]));
    let i = g.add_input("i", TensorType::new(DType::I64, vec![1]));
    let y = g.add("gat", Op::Gather { axis: 0 }, &[x, i]).unwrap();
    g.add_output("y", y);
    let e = run(&g, &[t(&[3], vec![1.0, 2.0, 3.0]), ti(&[1], vec![3])]).unwrap_err();
    assert!(
        e.msg.contains("gat") && e.msg.contains("index 3"),
        "{}",
        e.msg
    );
    let ok = run(&g, &[t(&[3], vec![1.0, 2.0, 3.0]), ti(&[1], vec![-3])]).unwrap();
    assert_eq!(f(&ok[0]), vec![1.0]);
}

#[test]
fn conv3d_with_unit_depth_equals_conv2d() {
    let mut r = Rng(44);
    let x2 = r.tensor(&[1, 2, 5, 4]);
    let w2 = r.tensor(&[3, 2, 3, 2]);
    let x3 = x2.reshaped(vec![1, 2, 1, 5, 4]).unwrap();
    let w3 = w2.reshaped(vec![3, 2, 1, 3, 2]).unwrap();
    let y2 = ev(
        Op::Conv {
            window: win(&[3, 2], &[2, 1], &[1, 0, 1, 1], &[1, 2], false),
            group: 1,
        },
        &[&x2, &w2],
    );
    let y3 = ev(
        Op::Conv {
            window: win(
                &[1, 3, 2],
                &[1, 2, 1],
                &[0, 1, 0, 0, 1, 1],
                &[1, 1, 2],
                false,
            ),
            group: 1,
        },
        &[&x3, &w3],
    );
    let mut s = y2.shape().to_vec();
    s.insert(2, 1);
    assert_eq!(y3.shape(), &s[..]);
    assert_eq!(f(&y3), f(&y2));
    // and the 2-D result agrees with the naive oracle
    let (want, shape) = naive_conv2d(
        &f(&x2),
        [1, 2, 5, 4],
        &f(&w2),
        [3, 2, 3, 2],
        [2, 1],
        [1, 0, 1, 1],
        [1, 2],
        1,
    );
    assert_eq!(y2.shape(), &shape);
    assert_close(&f(&y2), &want, 1e-5);
}

#[test]
fn pow_int_base_float_exponent_and_nan_max() {
    let base = ti(&[3], vec![4, 9, 2]);
    let ex = t(&[3], vec![0.5, 0.5, -1.0]);
    // 4^0.5 = 2, 9^0.5 = 3, 2^-1 = 0.5 truncates to 0
    assert_eq!(
        ev(Op::Binary(BinaryOp::Pow), &[&base, &ex]).data(),
        &Data::I64(vec![2, 3, 0])
    );
    let a = t(&[2], vec![f32::NAN, 1.0]);
    let b = t(&[2], vec![0.0, f32::NAN]);
    for op in [BinaryOp::Max, BinaryOp::Min] {
        let y = f(&ev(Op::Binary(op), &[&a, &b]));
        assert!(y[0].is_nan() && y[1].is_nan());
    }
}

/// A pair is its two ops one after the other: a 1x1 conv with Relu, then a depthwise conv
/// (with its bias after the first op's inputs), against the two ops evaluated apart; the
/// type of each side checked.
#[test]
fn pair_is_its_two_ops() {
    let mut r = Rng(7);
    let x = r.tensor(&[1, 3, 5, 6]);
    let w1 = r.tensor(&[8, 3, 1, 1]);
    let b1 = r.tensor(&[8]);
    let w2 = r.tensor(&[8, 1, 3, 3]);
    let b2 = r.tensor(&[8]);
    let first = Op::Fused {
        base: Box::new(Op::Conv {
            window: win(&[1, 1], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
            group: 1,
        }),
        base_inputs: 3,
        steps: vec![FusedStep::Unary(UnaryOp::Relu)],
    };
    let second = Op::Conv {
        window: win(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1], false),
        group: 8,
    };
    let mid = ev(first.clone(), &[&x, &w1, &b1]);
    let want = ev(second.clone(), &[&mid, &w2, &b2]);
    let pair = Op::Pair {
        first: Box::new(first),
        first_inputs: 3,
        second: Box::new(second),
    };
    let got = ev(pair.clone(), &[&x, &w1, &b1, &w2, &b2]);
    assert_eq!(got.shape(), &[1, 8, 3, 3]);
    assert_eq!(f(&got), f(&want));
    // The second op's weights must fit the first op's output (8 channels, not 4).
    let w4 = r.tensor(&[4, 1, 3, 3]);
    let e = eval_op(&pair, &[&x, &w1, &b1, &w4, &b2]).unwrap_err();
    assert!(e.msg.contains("pair, second op"), "{}", e.msg);
    // Too few inputs for the first op.
    assert!(eval_op(&pair, &[&x, &w1]).is_err());
}
