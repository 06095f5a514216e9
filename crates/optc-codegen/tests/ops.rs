//! Every op lowered by codegen, compared with the reference interpreter.

mod common;
use common::*;
use optc_ir::{
    BinaryOp, DType, Data, FusedStep, Graph, Op, PadMode, ReduceKind, SliceDim, Tensor, TensorType,
    UnaryOp, Window,
};

fn unaries() -> Vec<(UnaryOp, Tol)> {
    vec![
        (UnaryOp::Identity, EXACT),
        (UnaryOp::Relu, EXACT),
        (UnaryOp::LeakyRelu { alpha: 0.1 }, ARITH),
        (
            UnaryOp::Clip {
                min: -0.5,
                max: 1.5,
            },
            EXACT,
        ),
        (
            UnaryOp::Clip {
                min: 0.0,
                max: f32::INFINITY,
            },
            EXACT,
        ),
        (UnaryOp::Sigmoid, TRANS),
        (
            UnaryOp::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
            ARITH,
        ),
        (UnaryOp::HardSwish, ARITH),
        (UnaryOp::Silu, TRANS),
        (UnaryOp::Gelu, TRANS),
        (UnaryOp::Tanh, TRANS),
        (UnaryOp::Erf, TRANS),
        (UnaryOp::Exp, TRANS),
        (
            UnaryOp::FakeQuantize {
                scale: 0.037,
                zero: 120.0,
                signed: false,
            },
            EXACT,
        ),
        (
            UnaryOp::FakeQuantize {
                scale: 0.011,
                zero: -7.0,
                signed: true,
            },
            EXACT,
        ),
        (UnaryOp::Sqrt, ARITH),
        (UnaryOp::Neg, EXACT),
        (UnaryOp::Abs, EXACT),
        (UnaryOp::IsNaN, EXACT),
        (UnaryOp::NanTo { value: -2.5 }, EXACT),
        (UnaryOp::Sin, TRANS),
        (UnaryOp::Cos, TRANS),
        (UnaryOp::Tan, TRANS),
        (UnaryOp::Asin, TRANS),
        (UnaryOp::Acos, TRANS),
        (UnaryOp::Atan, TRANS),
        (UnaryOp::Sinh, TRANS),
        (UnaryOp::Cosh, TRANS),
        (UnaryOp::Asinh, TRANS),
        (UnaryOp::Acosh, TRANS),
        (UnaryOp::Atanh, TRANS),
        (UnaryOp::Floor, EXACT),
        (UnaryOp::Ceil, EXACT),
        (UnaryOp::Round, EXACT),
        (UnaryOp::RoundToHalf { bfloat: false }, EXACT),
        (UnaryOp::RoundToHalf { bfloat: true }, EXACT),
    ]
}

/// Values where rounding to binary16 / bfloat16 is delicate: ties, the subnormal range,
/// the largest finite values and past them, infinities and NaN; every lane position of the
/// vector loop and the scalar tail.
#[test]
fn round_to_half_at_the_edges_of_each_format() {
    let mut v: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0 + 1.0 / 2048.0, // tie between 1 and 1 + 2^-10: stays 1 (even)
        1.0 + 3.0 / 2048.0, // tie: rounds up to the even 1 + 2^-9
        65504.0,
        65519.0,
        65520.0, // tie past the largest finite value: infinity
        -70000.0,
        6.0e-5,            // just below the smallest normal: subnormal spacing
        3.0e-8,            // below half the smallest subnormal: zero
        2.98e-8,           // to zero
        6.0e-8,            // to the smallest subnormal 2^-24
        1.0 + 1.0 / 256.0, // bfloat16 tie
        3.4e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MIN_POSITIVE,
    ];
    let mut r = Rng::new(9);
    for _ in 0..45 {
        let e = (r.f32(-30.0, 20.0)) as i32;
        v.push(r.f32(-1.0, 1.0) * 2f32.powi(e));
    }
    let n = v.len();
    let t = Tensor::from_f32(vec![n], v).unwrap();
    for bfloat in [false, true] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[n]));
        let y = g
            .add("r", Op::Unary(UnaryOp::RoundToHalf { bfloat }), &[x])
            .unwrap();
        g.add_output("y", y);
        check(&g, std::slice::from_ref(&t), EXACT);
    }
}

#[test]
fn wrap_keeps_the_low_bits() {
    let v: Vec<i64> = vec![
        0,
        1,
        -1,
        32767,
        32768,
        -32768,
        -32769,
        65535,
        65536,
        1 << 40,
        -(1 << 33) + 7,
        4_294_967_295,
        4_294_967_296,
    ];
    let n = v.len();
    let t = Tensor::from_i64(vec![n], v).unwrap();
    for (bits, signed) in [(16, true), (16, false), (32, false), (8, true)] {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::I64, vec![n]));
        let y = g
            .add("w", Op::Unary(UnaryOp::Wrap { bits, signed }), &[x])
            .unwrap();
        g.add_output("y", y);
        check(&g, std::slice::from_ref(&t), EXACT);
    }
}

#[test]
fn nan_to_replaces_nans_alone_and_as_a_fused_step() {
    let v: Vec<f32> = (0..37)
        .map(|i| match i % 5 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            _ => i as f32 * 0.25 - 3.0,
        })
        .collect();
    let t = Tensor::from_f32(vec![37], v).unwrap();
    let nan_to = UnaryOp::NanTo { value: 0.0 };
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[37]));
    let y = g.add("n", Op::Unary(nan_to.clone()), &[x]).unwrap();
    g.add_output("y", y);
    check(&g, std::slice::from_ref(&t), EXACT);
    // sqrt then nan_to as one fused chain: the NaNs sqrt makes are replaced too
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[37]));
    let fused = Op::Fused {
        base: Box::new(Op::Unary(UnaryOp::Sqrt)),
        base_inputs: 1,
        steps: vec![FusedStep::Unary(nan_to)],
    };
    let y = g.add("n", fused, &[x]).unwrap();
    g.add_output("y", y);
    check(&g, &[t], ARITH);
}

/// Bit for bit the interpreter's QuantizeLinear then DequantizeLinear: ties, both ends of
/// the range, NaN and infinities; alone, and as the fused step of a conv whose sums are exact
/// (integer inputs and weights), on the x64 path and the generic one.
#[test]
fn fake_quantize_is_exactly_quantize_then_dequantize() {
    let scale = 0.25f32;
    let v: Vec<f32> = (0..61)
        .map(|i| match i % 7 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            _ => (i as f32 - 30.0) * 2.5 + 0.125, // ties at x / scale = k + 0.5
        })
        .collect();
    let t = Tensor::from_f32(vec![61], v).unwrap();
    for (zero, signed) in [(100.0, false), (-20.0, true)] {
        let fq = UnaryOp::FakeQuantize {
            scale,
            zero,
            signed,
        };
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[61]));
        let y = g.add("fq", Op::Unary(fq), &[x]).unwrap();
        g.add_output("y", y);
        // the oracle: the interpreter's own QuantizeLinear -> DequantizeLinear
        let mut r = Graph::new();
        let x = r.add_input("x", f(&[61]));
        let s = r.add_const("s", Tensor::scalar_f32(scale));
        let z = if signed {
            Tensor::new(vec![], Data::I8(vec![zero as i8])).unwrap()
        } else {
            Tensor::new(vec![], Data::U8(vec![zero as u8])).unwrap()
        };
        let z = r.add_const("z", z);
        let q = r
            .add("q", Op::QuantizeLinear { axis: 0 }, &[x, s, z])
            .unwrap();
        let d = r
            .add("d", Op::DequantizeLinear { axis: 0 }, &[q, s, z])
            .unwrap();
        r.add_output("y", d);
        let want = optc_ir::interp::run(&r, std::slice::from_ref(&t)).unwrap();
        let got = optc_ir::interp::run(&g, std::slice::from_ref(&t)).unwrap();
        assert_eq!(
            format!("{:?}", want[0].data()),
            format!("{:?}", got[0].data()),
            "interpreter: fake_quantize against QuantizeLinear -> DequantizeLinear"
        );
        check(&g, std::slice::from_ref(&t), EXACT);
        // conv + fake_quantize: integer sums, exact in f32 whatever their order
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[1, 16, 6, 6]));
        let w: Vec<f32> = (0..32 * 16 * 9)
            .map(|i| ((i * 7) % 5) as f32 - 2.0)
            .collect();
        let w = g.add_const("w", Tensor::from_f32(vec![32, 16, 3, 3], w).unwrap());
        let window = optc_ir::Window {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        let fused = Op::Fused {
            base: Box::new(Op::Conv { window, group: 1 }),
            base_inputs: 2,
            steps: vec![
                FusedStep::Unary(UnaryOp::Relu),
                FusedStep::Unary(UnaryOp::FakeQuantize {
                    scale: 2.0,
                    zero,
                    signed,
                }),
            ],
        };
        let y = g.add("conv", fused, &[x, w]).unwrap();
        g.add_output("y", y);
        let xs: Vec<f32> = (0..16 * 36).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
        let xs = Tensor::from_f32(vec![1, 16, 6, 6], xs).unwrap();
        // (direct convolution: Winograd's transforms round)
        check_targets(&g, &[xs], EXACT, &runnable_targets(0));
    }
}

#[test]
fn unary_f32_shapes() {
    for (k, (u, tol)) in unaries().into_iter().enumerate() {
        for (s, shape) in [
            vec![1],
            vec![3],
            vec![4],
            vec![17],
            vec![2, 3, 5],
            vec![64, 3],
        ]
        .iter()
        .enumerate()
        {
            check_op(Op::Unary(u.clone()), &[f(shape)], tol, (k * 10 + s) as u64);
        }
    }
}

#[test]
fn log_positive_inputs() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[37]));
    let a = g.add("abs", Op::Unary(UnaryOp::Abs), &[x]).unwrap();
    let y = g.add("log", Op::Unary(UnaryOp::Log), &[a]).unwrap();
    g.add_output("y", y);
    check(&g, &inputs_for(&g, 3), TRANS);
}

#[test]
fn transcendentals_wide_range() {
    // Exercise exp/tanh/erf/sigmoid over large magnitudes and near zero.
    let mut v: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.25).collect();
    v.extend([
        1e-6, -1e-6, 1e-3, -1e-3, 0.0, 0.49, 0.51, 0.62, 0.63, 87.0, 88.5, 89.0, -87.0, -90.0,
        -104.0,
    ]);
    let n = v.len();
    for u in [UnaryOp::Exp, UnaryOp::Tanh, UnaryOp::Erf, UnaryOp::Sigmoid] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[n]));
        let y = g.add("u", Op::Unary(u.clone()), &[x]).unwrap();
        g.add_output("y", y);
        let t = Tensor::from_f32(vec![n], v.clone()).unwrap();
        check(
            &g,
            &[t],
            Tol {
                atol: 1e-6,
                rtol: 2e-6,
            },
        );
    }
}

#[test]
fn unary_int() {
    for dt in [DType::I64, DType::I32, DType::I8] {
        for u in [
            UnaryOp::Relu,
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Identity,
            UnaryOp::Clip {
                min: -7.5,
                max: 20.0,
            },
        ] {
            check_op(Op::Unary(u), &[ty(dt, &[5, 7])], EXACT, 9);
        }
    }
    check_op(Op::Unary(UnaryOp::Not), &[ty(DType::Bool, &[19])], EXACT, 4);
}

const BIN_F: [BinaryOp; 11] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Equal,
    BinaryOp::Greater,
    BinaryOp::Less,
    BinaryOp::GreaterOrEqual,
    BinaryOp::LessOrEqual,
];

fn bcast_cases() -> Vec<(Vec<usize>, Vec<usize>)> {
    vec![
        (vec![7], vec![7]),
        (vec![2, 3, 4], vec![2, 3, 4]),
        (vec![3, 5], vec![5]),
        (vec![5], vec![3, 5]),
        (vec![3, 1], vec![1, 6]),
        (vec![1], vec![13]),
        (vec![13], vec![]),
        (vec![], vec![]),
        (vec![2, 1, 5], vec![3, 1]),
        (vec![4, 3, 1, 1], vec![3, 11, 9]),
    ]
}

#[test]
fn binary_f32_broadcast() {
    for (k, op) in BIN_F.iter().enumerate() {
        for (s, (a, b)) in bcast_cases().into_iter().enumerate() {
            check_op(
                Op::Binary(*op),
                &[f(&a), f(&b)],
                ARITH,
                (k * 100 + s) as u64,
            );
        }
    }
}

#[test]
fn binary_int_broadcast() {
    for dt in [DType::I64, DType::I32, DType::U8, DType::I8] {
        for op in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Max,
            BinaryOp::Min,
            BinaryOp::Equal,
            BinaryOp::Greater,
            BinaryOp::Less,
            BinaryOp::GreaterOrEqual,
            BinaryOp::LessOrEqual,
        ] {
            for (a, b) in [
                (vec![3, 5], vec![5]),
                (vec![4, 1], vec![1, 7]),
                (vec![9], vec![9]),
            ] {
                check_op(Op::Binary(op), &[ty(dt, &a), ty(dt, &b)], EXACT, 5);
            }
        }
    }
    for op in [BinaryOp::And, BinaryOp::Or, BinaryOp::Equal] {
        check_op(
            Op::Binary(op),
            &[ty(DType::Bool, &[3, 6]), ty(DType::Bool, &[6])],
            EXACT,
            6,
        );
    }
}

#[test]
fn int_div_truncates_and_div_by_zero_errors() {
    let mut g = Graph::new();
    let a = g.add_input("a", ty(DType::I64, &[6]));
    let b = g.add_input("b", ty(DType::I64, &[6]));
    let y = g.add("div", Op::Binary(BinaryOp::Div), &[a, b]).unwrap();
    g.add_output("y", y);
    let x = Tensor::from_i64(vec![6], vec![7, -7, 7, -7, i64::MIN, 0]).unwrap();
    let d = Tensor::from_i64(vec![6], vec![2, 2, -2, -2, -1, 5]).unwrap();
    check(&g, &[x.clone(), d], EXACT);
    let m = compile(&g);
    let z = Tensor::from_i64(vec![6], vec![2, 2, 0, -2, -1, 5]).unwrap();
    let err = run_jit(&m, &[x, z]).unwrap_err().to_string();
    assert!(err.contains("div") && err.contains("zero"), "{err}");
}

#[test]
fn pow_variants() {
    let mut rng = Rng::new(11);
    for e in [2.0f32, 0.5, 3.0, 1.0, 1.7] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[3, 7]));
        let a = g.add("abs", Op::Unary(UnaryOp::Abs), &[x]).unwrap();
        let c = g.add_const("e", Tensor::scalar_f32(e));
        let y = g.add("pow", Op::Binary(BinaryOp::Pow), &[a, c]).unwrap();
        g.add_output("y", y);
        check(&g, &[f32t(&mut rng, &[3, 7])], TRANS);
    }
    // Non-constant exponent, f32 and i64.
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[2, 5]));
    let e = g.add_input("e", f(&[5]));
    let a = g.add("abs", Op::Unary(UnaryOp::Abs), &[x]).unwrap();
    let y = g.add("pow", Op::Binary(BinaryOp::Pow), &[a, e]).unwrap();
    g.add_output("y", y);
    check(&g, &inputs_for(&g, 12), TRANS);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[2, 5]));
    let e = g.add_const(
        "e",
        Tensor::from_i64(vec![5], vec![0, 1, 2, 3, -1]).unwrap(),
    );
    let y = g.add("pow", Op::Binary(BinaryOp::Pow), &[x, e]).unwrap();
    g.add_output("y", y);
    check(&g, &inputs_for(&g, 13), TRANS);
}

#[test]
fn where_broadcast() {
    for dt in [DType::F32, DType::I64] {
        check_op(
            Op::Where,
            &[ty(DType::Bool, &[3, 1]), ty(dt, &[4]), ty(dt, &[1, 1])],
            EXACT,
            7,
        );
        check_op(
            Op::Where,
            &[ty(DType::Bool, &[2, 9]), ty(dt, &[2, 9]), ty(dt, &[9])],
            EXACT,
            8,
        );
    }
}

#[test]
fn bitcast_same_width_pairs() {
    for (from, to) in [
        (DType::F32, DType::I32),
        (DType::I32, DType::F32),
        (DType::F64, DType::I64),
        (DType::I64, DType::F64),
        (DType::I8, DType::U8),
        (DType::U8, DType::I8),
    ] {
        check_op(Op::Bitcast { to }, &[ty(from, &[23])], EXACT, 4);
    }
    // Special float values, and their bits back.
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[6]));
    let bits = g.add("bits", Op::Bitcast { to: DType::I32 }, &[x]).unwrap();
    let back = g
        .add("back", Op::Bitcast { to: DType::F32 }, &[bits])
        .unwrap();
    g.add_output("bits", bits);
    g.add_output("back", back);
    let t = Tensor::from_f32(
        vec![6],
        vec![-0.0, f32::INFINITY, -f32::INFINITY, 1e-42, -3.5, f32::MAX],
    )
    .unwrap();
    check(&g, &[t], EXACT);
}

#[test]
fn cast_all_pairs() {
    for from in DType::ALL {
        for to in DType::ALL {
            check_op(Op::Cast { to }, &[ty(from, &[23])], EXACT, 3);
        }
    }
    // Special float values.
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[8]));
    for (i, to) in [DType::I64, DType::I32, DType::U8, DType::I8, DType::Bool]
        .iter()
        .enumerate()
    {
        let y = g.add(&format!("c{i}"), Op::Cast { to: *to }, &[x]).unwrap();
        g.add_output(&format!("y{i}"), y);
    }
    let t = Tensor::from_f32(
        vec![8],
        vec![
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            1e20,
            -1e20,
            300.7,
            -200.2,
            -0.9,
        ],
    )
    .unwrap();
    check(&g, &[t], EXACT);
}

#[test]
fn batch_norm() {
    for shape in [vec![2, 3, 5, 5], vec![1, 4, 7], vec![3, 6]] {
        let c = shape[1];
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let mut rng = Rng::new(5);
        let mut ps = vec![x];
        for (i, lo) in [-1.0, -1.0, -1.0, 0.1].iter().enumerate() {
            let v: Vec<f32> = (0..c).map(|_| rng.f32(*lo, 2.0)).collect();
            ps.push(g.add_const(&format!("p{i}"), Tensor::from_f32(vec![c], v).unwrap()));
        }
        let y = g.add("bn", Op::BatchNorm { epsilon: 1e-5 }, &ps).unwrap();
        g.add_output("y", y);
        check(&g, &inputs_for(&g, 1), ARITH);
    }
}

/// BatchNorm as `x * s + t` from its constant parameters (alone, and as the base of a fused
/// chain with a Relu and a residual add, large enough to split across tasks: 1 and 2 threads
/// on every runnable target), and with parameters given at run time (the reference's formula).
#[test]
fn batch_norm_constant_fused_and_run_time() {
    let targets = runnable_targets(4);
    for (shape, steps) in [
        (vec![1, 64, 56, 56], vec!["relu"]),
        (vec![2, 24, 30, 31], vec!["relu", "res"]),
        (vec![1, 5, 9], vec![]),
    ] {
        let c = shape[1];
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let mut rng = Rng::new(9);
        let mut ps = vec![x];
        for (i, lo) in [-1.0, -1.0, -1.0, 0.1].iter().enumerate() {
            let v: Vec<f32> = (0..c).map(|_| rng.f32(*lo, 2.0)).collect();
            ps.push(g.add_const(&format!("p{i}"), Tensor::from_f32(vec![c], v).unwrap()));
        }
        let base = Op::BatchNorm { epsilon: 1e-5 };
        let y = if steps.is_empty() {
            g.add("bn", base, &ps).unwrap()
        } else {
            let out = f(&shape);
            let fsteps = fused_steps(&mut g, &mut ps, &mut rng, &steps, &out, &[], false);
            let op = Op::Fused {
                base: Box::new(base),
                base_inputs: 5,
                steps: fsteps,
            };
            g.add("bn_fused", op, &ps).unwrap()
        };
        g.add_output("y", y);
        check_targets(&g, &inputs_for(&g, 2), ARITH, &targets);
    }
    let shape = [2, 8, 20, 20];
    check_op(
        Op::BatchNorm { epsilon: 1e-3 },
        &[f(&shape), f(&[8]), f(&[8]), f(&[8]), f(&[8])],
        ARITH,
        3,
    );
}

#[test]
fn matmul_shapes() {
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![1, 1], vec![1, 1]),
        (vec![3, 5], vec![5, 7]),
        (vec![4, 8], vec![8, 8]),
        (vec![9, 13], vec![13, 21]),
        (vec![5, 3], vec![3, 4]),
        (vec![2, 3, 7, 5], vec![2, 3, 5, 6]),
        (vec![2, 1, 7, 5], vec![3, 5, 11]),
        (vec![7, 5], vec![4, 5, 9]),
        (vec![5], vec![5, 3]),
        (vec![2, 4, 5], vec![5]),
        (vec![6], vec![6]),
        (vec![17, 64], vec![64, 33]),
    ];
    for (i, (a, b)) in cases.into_iter().enumerate() {
        check_op(Op::MatMul, &[f(&a), f(&b)], ARITH, i as u64);
    }
}

#[test]
fn matmul_with_transposed_operand() {
    // Q @ K^T as in attention: B comes from a Transpose node.
    let mut g = Graph::new();
    let q = g.add_input("q", f(&[2, 5, 8]));
    let k = g.add_input("k", f(&[2, 7, 8]));
    let kt = g
        .add(
            "kt",
            Op::Transpose {
                perm: vec![0, 2, 1],
            },
            &[k],
        )
        .unwrap();
    let y = g.add("mm", Op::MatMul, &[q, kt]).unwrap();
    g.add_output("y", y);
    check(&g, &inputs_for(&g, 2), ARITH);
}

#[test]
fn gemm_variants() {
    let mut rng = Rng::new(21);
    for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (8, 16, 12), (5, 9, 17)] {
            for cshape in [
                None,
                Some(vec![n]),
                Some(vec![m, n]),
                Some(vec![m, 1]),
                Some(vec![]),
            ] {
                for const_b in [false, true] {
                    let op = Op::Gemm {
                        alpha: 0.7,
                        beta: 1.3,
                        trans_a: ta,
                        trans_b: tb,
                    };
                    let ashape = if ta { vec![k, m] } else { vec![m, k] };
                    let bshape = if tb { vec![n, k] } else { vec![k, n] };
                    let mut g = Graph::new();
                    let a = g.add_input("a", f(&ashape));
                    let b = if const_b {
                        g.add_const("b", f32t(&mut rng, &bshape))
                    } else {
                        g.add_input("b", f(&bshape))
                    };
                    let mut ins = vec![a, b];
                    if let Some(cs) = &cshape {
                        ins.push(g.add_const("c", f32t(&mut rng, cs)));
                    }
                    let y = g.add("gemm", op, &ins).unwrap();
                    g.add_output("y", y);
                    check(&g, &inputs_for(&g, 4), ARITH);
                }
            }
        }
    }
}

/// [`window`] with or without ceil mode.
fn win(kernel: &[usize], strides: &[usize], pads: &[usize], dil: &[usize], ceil: bool) -> Window {
    Window {
        ceil_mode: ceil,
        ..window(kernel, strides, pads, dil)
    }
}

fn conv_case(
    x: &[usize],
    w: &[usize],
    window: Window,
    group: usize,
    bias: bool,
    const_w: bool,
    seed: u64,
) {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let xv = g.add_input("x", f(x));
    let wv = if const_w {
        g.add_const("w", f32t(&mut rng, w))
    } else {
        g.add_input("w", f(w))
    };
    let mut ins = vec![xv, wv];
    if bias {
        ins.push(g.add_const("b", f32t(&mut rng, &[w[0]])));
    }
    let y = g.add("conv", Op::Conv { window, group }, &ins).unwrap();
    g.add_output("y", y);
    check(
        &g,
        &inputs_for(&g, seed),
        Tol {
            atol: 2e-5,
            rtol: 1e-4,
        },
    );
}

#[test]
fn conv2d_variants() {
    let mut s = 0;
    for const_w in [true, false] {
        for bias in [true, false] {
            s += 1;
            // plain 3x3 pad 1
            conv_case(
                &[1, 3, 7, 9],
                &[16, 3, 3, 3],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
                1,
                bias,
                const_w,
                s,
            );
            // stride 2, asymmetric pads, channels not a multiple of 16
            conv_case(
                &[2, 5, 11, 10],
                &[19, 5, 3, 3],
                win(&[3, 3], &[2, 2], &[1, 0, 2, 1], &[1, 1], false),
                1,
                bias,
                const_w,
                s + 10,
            );
            // 1x1
            conv_case(
                &[1, 8, 5, 6],
                &[12, 8, 1, 1],
                win(&[1, 1], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
                1,
                bias,
                const_w,
                s + 20,
            );
            // 1x1 as GEMM with batch 2
            conv_case(
                &[2, 9, 3, 5],
                &[7, 9, 1, 1],
                win(&[1, 1], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
                1,
                bias,
                const_w,
                s + 25,
            );
            // dilation, non-square kernel
            conv_case(
                &[1, 4, 12, 13],
                &[9, 4, 2, 3],
                win(&[2, 3], &[1, 2], &[0, 1, 1, 0], &[2, 2], false),
                1,
                bias,
                const_w,
                s + 30,
            );
            // groups
            conv_case(
                &[1, 6, 8, 8],
                &[24, 3, 3, 3],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
                2,
                bias,
                const_w,
                s + 40,
            );
            // groups with 40 channels per group (two full blocks of 16 and a partial one)
            conv_case(
                &[1, 4, 6, 7],
                &[80, 2, 3, 3],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
                2,
                bias,
                const_w,
                s + 45,
            );
            // depthwise, stride 1 and 2
            conv_case(
                &[1, 7, 9, 10],
                &[7, 1, 3, 3],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
                7,
                bias,
                const_w,
                s + 50,
            );
            conv_case(
                &[2, 8, 9, 11],
                &[8, 1, 3, 3],
                win(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1], false),
                8,
                bias,
                const_w,
                s + 60,
            );
            // depthwise multiplier 2
            conv_case(
                &[1, 3, 6, 7],
                &[6, 1, 5, 5],
                win(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1], false),
                3,
                bias,
                const_w,
                s + 70,
            );
            // 7x7 stride 2 pad 3 (ResNet stem, small)
            conv_case(
                &[1, 3, 17, 17],
                &[16, 3, 7, 7],
                win(&[7, 7], &[2, 2], &[3, 3, 3, 3], &[1, 1], false),
                1,
                bias,
                const_w,
                s + 80,
            );
            // 1x1 output
            conv_case(
                &[1, 2, 3, 3],
                &[5, 2, 3, 3],
                win(&[3, 3], &[1, 1], &[0, 0, 0, 0], &[1, 1], false),
                1,
                bias,
                const_w,
                s + 90,
            );
        }
    }
}

/// 1x1 convs on small maps (7x7, 5x5, 9x11) lowered with the roles swapped on the AVX-512
/// tiles (pixels as rows: a transpose, a Gemm with the weight packed at compile time, a
/// transpose back): with and without bias, fused activations in the Gemm's tiles, a fused
/// residual add after it, channel counts off the tiles; at 1 and 2 threads on every runnable
/// target (the others keep the conv).
#[test]
fn small_map_convs_with_roles_swapped() {
    let targets = runnable_targets(0);
    let tol = Tol {
        atol: 2e-5,
        rtol: 1e-4,
    };
    for (i, (c, m, h, w, bias, steps)) in [
        (192, 1152, 7, 7, true, vec!["silu"]),
        (96, 200, 7, 7, false, vec!["relu", "res"]),
        (40, 64, 5, 5, true, vec![]),
        (24, 100, 9, 11, true, vec!["hardswish"]),
        (300, 50, 7, 7, true, vec!["res"]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut rng = Rng::new(40 + i as u64);
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[1, c, h, w]));
        let wv = g.add_const("w", f32t(&mut rng, &[m, c, 1, 1]));
        let mut ins = vec![x, wv];
        if bias {
            ins.push(g.add_const("b", f32t(&mut rng, &[m])));
        }
        let base_inputs = ins.len();
        let conv = Op::Conv {
            window: square_window(1, 1, 0),
            group: 1,
        };
        let out = f(&[1, m, h, w]);
        let fsteps = fused_steps(&mut g, &mut ins, &mut rng, &steps, &out, &[], i % 2 == 0);
        let op = if fsteps.is_empty() {
            conv
        } else {
            Op::Fused {
                base: Box::new(conv),
                base_inputs,
                steps: fsteps,
            }
        };
        let y = g.add("conv", op, &ins).unwrap();
        g.add_output("y", y);
        check_targets(&g, &inputs_for(&g, 9), tol, &targets);
    }
}

#[test]
fn conv1d_variants() {
    conv_case(
        &[2, 3, 17],
        &[8, 3, 3],
        win(&[3], &[1], &[1, 1], &[1], false),
        1,
        true,
        true,
        1,
    );
    conv_case(
        &[1, 4, 20],
        &[10, 2, 5],
        win(&[5], &[2], &[2, 1], &[2], false),
        2,
        false,
        false,
        2,
    );
    conv_case(
        &[1, 16, 13],
        &[32, 16, 1],
        win(&[1], &[1], &[0, 0], &[1], false),
        1,
        true,
        true,
        3,
    );
}

fn pool_case(x: &[usize], window: Window, avg: Option<bool>, seed: u64) {
    let op = match avg {
        None => Op::MaxPool { window },
        Some(c) => Op::AveragePool {
            window,
            count_include_pad: c,
        },
    };
    check_op(op, &[f(x)], ARITH, seed);
}

#[test]
fn pools() {
    let mut s = 0;
    for avg in [None, Some(false), Some(true)] {
        for ceil in [false, true] {
            s += 1;
            pool_case(
                &[1, 3, 8, 8],
                win(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1], ceil),
                avg,
                s,
            );
            pool_case(
                &[2, 2, 9, 10],
                win(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1], ceil),
                avg,
                s,
            );
            pool_case(
                &[1, 4, 11, 7],
                win(&[3, 2], &[2, 3], &[1, 0, 1, 1], &[1, 1], ceil),
                avg,
                s,
            );
            pool_case(
                &[1, 2, 7, 7],
                win(&[7, 7], &[1, 1], &[0, 0, 0, 0], &[1, 1], ceil),
                avg,
                s,
            );
            pool_case(&[1, 3, 13], win(&[3], &[2], &[1, 1], &[1], ceil), avg, s);
            if avg.is_none() {
                pool_case(
                    &[1, 2, 10, 10],
                    win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[2, 2], ceil),
                    avg,
                    s,
                );
            }
        }
    }
}

/// Average pools on maps wide enough for the vector rows (four outputs at a time: stride 1
/// by unaligned loads, stride 2 by the even-lane shuffle, stride 3 by gathers), with the
/// border cells around them (padding counted or not, ceil mode, dilation) and maps with no
/// window inside at all.
#[test]
fn average_pools_inside_and_border() {
    let mut s = 100;
    for include_pad in [false, true] {
        for (x, window) in [
            (
                vec![1, 3, 56, 56],
                win(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1], false),
            ),
            (
                vec![2, 2, 23, 29],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
            ),
            (
                vec![1, 2, 19, 40],
                win(&[3, 2], &[2, 3], &[1, 2, 0, 1], &[1, 1], true),
            ),
            (
                vec![1, 2, 21, 33],
                win(&[3, 3], &[1, 2], &[2, 2, 2, 2], &[2, 2], false),
            ),
            (
                vec![1, 4, 14, 14],
                win(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1], true),
            ),
            (
                vec![1, 2, 15, 17],
                win(&[2, 2], &[2, 2], &[1, 1, 1, 1], &[1, 1], true),
            ),
            (
                vec![1, 2, 3, 4],
                win(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1], false),
            ),
            (
                vec![1, 1, 9, 70],
                win(&[1, 5], &[1, 1], &[0, 2, 0, 2], &[1, 1], false),
            ),
        ] {
            s += 1;
            pool_case(&x, window, Some(include_pad), s);
        }
    }
}

/// Average pools over zero-padded planes (`ops::avg_pool`, horizontal stride 1 or 2): every
/// output four at a time, border included, against the interpreter (which sums in f64 and
/// rounds once; the kernels add in f32 in the window's order): Inception's 3x3 pools
/// of stride 1 on 17x17 and 8x8 maps (as tasks: blocks of planes; 251 planes leave an uneven
/// last block),
/// stride 2, a row tail of 1-3 outputs, dilation, asymmetric padding, ceil mode, padding
/// counted or not, a window larger than the map, a 1-D-like map, a single plane.
#[test]
fn average_pools_over_padded_planes() {
    let mut s = 300;
    for include_pad in [false, true] {
        for (x, window) in [
            (
                vec![1, 64, 17, 17],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
            ),
            (
                vec![1, 251, 8, 8],
                win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
            ),
            (
                vec![2, 5, 13, 18],
                win(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1], true),
            ),
            (
                vec![1, 3, 9, 11],
                win(&[3, 2], &[1, 2], &[2, 0, 1, 1], &[2, 1], false),
            ),
            (
                vec![1, 4, 6, 7],
                win(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1], false),
            ),
            (
                vec![1, 1, 1, 23],
                win(&[1, 3], &[1, 1], &[0, 1, 0, 1], &[1, 1], false),
            ),
            (
                vec![1, 2, 5, 5],
                win(&[7, 7], &[1, 1], &[3, 3, 3, 3], &[1, 1], false),
            ),
        ] {
            s += 1;
            let op = Op::AveragePool {
                window,
                count_include_pad: include_pad,
            };
            check_op(op, &[f(&x)], ARITH, s);
        }
    }
}

#[test]
fn reductions() {
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![5], vec![0]),
        (vec![3, 7], vec![1]),
        (vec![3, 7], vec![0]),
        (vec![2, 3, 33], vec![2]),
        (vec![2, 3, 4, 5], vec![2, 3]),
        (vec![2, 3, 4, 5], vec![0, 2]),
        (vec![2, 3, 4, 5], vec![0, 1, 2, 3]),
        (vec![1, 64, 7, 7], vec![2, 3]),
    ];
    for kind in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::L2,
    ] {
        for (shape, axes) in &cases {
            for keepdims in [false, true] {
                check_op(
                    Op::Reduce {
                        kind,
                        axes: axes.clone(),
                        keepdims,
                    },
                    &[f(shape)],
                    ARITH,
                    3,
                );
            }
        }
    }
    for dt in [DType::I64, DType::I32] {
        for kind in [ReduceKind::Sum, ReduceKind::Mean, ReduceKind::Max] {
            check_op(
                Op::Reduce {
                    kind,
                    axes: vec![1],
                    keepdims: false,
                },
                &[ty(dt, &[3, 9, 2])],
                EXACT,
                4,
            );
        }
    }
}

/// Contiguous f32 rows long enough for the four vector accumulators (runs of 16 elements,
/// the vectors left over, the scalar tail), every kind; Max/Min with NaNs in some lanes of
/// some accumulators, and a row of NaNs.
#[test]
fn reductions_over_long_rows() {
    for n in [8, 15, 16, 17, 31, 32, 47, 64, 67, 100, 3136] {
        for kind in [
            ReduceKind::Sum,
            ReduceKind::Mean,
            ReduceKind::Max,
            ReduceKind::Min,
            ReduceKind::Prod,
            ReduceKind::L2,
        ] {
            let op = Op::Reduce {
                kind,
                axes: vec![1],
                keepdims: true,
            };
            let mut g = Graph::new();
            let x = g.add_input("x", f(&[3, n]));
            let y = g.add("r", op, &[x]).unwrap();
            g.add_output("y", y);
            // Values near 1 so that products of thousands stay finite.
            let mut v: Vec<f32> = (0..3 * n)
                .map(|i| 1.0 + (((i * 7919) % 23) as f32 - 11.0) / 4096.0)
                .collect();
            if matches!(kind, ReduceKind::Max | ReduceKind::Min) {
                for i in (0..n).step_by(5) {
                    v[i] = f32::NAN;
                }
                for x in &mut v[n..2 * n] {
                    *x = f32::NAN;
                }
            }
            let t = Tensor::from_f32(vec![3, n], v).unwrap();
            check(&g, &[t], ARITH);
        }
    }
}

#[test]
fn softmax_axes() {
    for (shape, axis) in [
        (vec![7], 0),
        (vec![3, 10], 1),
        (vec![3, 10], 0),
        (vec![2, 4, 5, 17], 3),
        (vec![2, 4, 5], 1),
    ] {
        check_op(Op::Softmax { axis }, &[f(&shape)], TRANS, 5);
    }
    // Large logits must not overflow.
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[2, 3]));
    let y = g.add("sm", Op::Softmax { axis: 1 }, &[x]).unwrap();
    g.add_output("y", y);
    let t = Tensor::from_f32(vec![2, 3], vec![1000.0, 999.0, -1000.0, 50.0, 50.0, 50.0]).unwrap();
    check(&g, &[t], TRANS);
}

#[test]
fn layer_norm_variants() {
    let mut rng = Rng::new(8);
    for (shape, axis, sshape, bias) in [
        (vec![2, 5, 16], 2, vec![16], true),
        (vec![2, 5, 7], 1, vec![5, 7], false),
        (vec![3, 4, 6], 1, vec![1, 6], true),
        (vec![4, 9], 1, vec![1], true),
        (vec![3, 45], 1, vec![45], true),
        (vec![2, 3, 128], 2, vec![128], true),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let s = g.add_const("s", f32t(&mut rng, &sshape));
        let mut ins = vec![x, s];
        if bias {
            ins.push(g.add_const("b", f32t(&mut rng, &sshape)));
        }
        let y = g
            .add(
                "ln",
                Op::LayerNorm {
                    axis,
                    epsilon: 1e-5,
                },
                &ins,
            )
            .unwrap();
        g.add_output("y", y);
        check(
            &g,
            &inputs_for(&g, 6),
            Tol {
                atol: 1e-5,
                rtol: 1e-4,
            },
        );
    }
}

/// Transposes whose output rows run along the input's contiguous dim (4 x 4 blocks in
/// registers, the edges element by element; on AVX-512 matrices in 16 x 16 tiles, strips of
/// input rows or of input columns, full and partial): a key's `[.., S, D] -> [.., D, S]`,
/// NCHW to NHWC and back, an outer dim moved innermost, square and uneven blocks, several
/// images, i32 too; large ones split across tasks (1 and 2 threads on every runnable
/// target).
#[test]
fn transposes_by_blocks() {
    let targets = runnable_targets(0);
    for (dt, shape, perm) in [
        (DType::F32, vec![1, 6, 197, 64], vec![0, 1, 3, 2]),
        (DType::F32, vec![3, 20, 50], vec![0, 2, 1]),
        (DType::F32, vec![2, 50, 20], vec![0, 2, 1]),
        (DType::F32, vec![1, 33, 7, 5], vec![0, 2, 3, 1]),
        (DType::F32, vec![1, 7, 5, 33], vec![0, 3, 1, 2]),
        (DType::F32, vec![49, 960], vec![1, 0]),
        (DType::F32, vec![960, 49], vec![1, 0]),
        (DType::F32, vec![2, 37, 45], vec![0, 2, 1]),
        (DType::F32, vec![64, 197], vec![1, 0]),
        (DType::F32, vec![3, 5, 8], vec![1, 2, 0]),
        (DType::F32, vec![4, 4], vec![1, 0]),
        (DType::F32, vec![2, 96, 33, 4], vec![0, 3, 2, 1]),
        (DType::I32, vec![3, 10, 13], vec![0, 2, 1]),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", ty(dt, &shape));
        let y = g.add("t", Op::Transpose { perm }, &[x]).unwrap();
        g.add_output("y", y);
        check_targets(&g, &inputs_for(&g, 4), EXACT, &targets);
    }
}

/// Large concats split across tasks along a dim other than their axis (each input's part
/// copied into the output's), along every axis, at 1 and 2 threads on every runnable target.
#[test]
fn concats_split_across_tasks() {
    let targets = runnable_targets(0);
    for (shapes, axis) in [
        (
            vec![vec![1, 24, 48, 40], vec![1, 8, 48, 40], vec![1, 40, 48, 40]],
            1,
        ),
        (vec![vec![2, 16, 30, 64], vec![2, 16, 2, 64]], 2),
        (vec![vec![1, 128, 300], vec![1, 128, 36]], 2),
        (vec![vec![96, 700], vec![64, 700]], 0),
    ] {
        let mut g = Graph::new();
        let xs: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, sh)| g.add_input(&format!("x{i}"), f(sh)))
            .collect();
        let y = g.add("c", Op::Concat { axis }, &xs).unwrap();
        g.add_output("y", y);
        check_targets(&g, &inputs_for(&g, 6), EXACT, &targets);
    }
}

/// LayerNorm and softmax over a prime number of rows (ViT's 197 tokens) split across tasks
/// in blocks of `ceil(rows / parts)` and a shorter last one, at 1 and 2 threads on every
/// runnable target.
#[test]
fn norms_in_uneven_row_blocks() {
    let targets = runnable_targets(0);
    for shape in [vec![197, 384], vec![1, 211, 320]] {
        let d = *shape.last().unwrap();
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let mut rng = Rng::new(12);
        let sc = g.add_const("sc", rand_tensor(&mut rng, &f(&[d])));
        let bi = g.add_const("bi", rand_tensor(&mut rng, &f(&[d])));
        let axis = shape.len() - 1;
        let y = g
            .add(
                "ln",
                Op::LayerNorm {
                    axis,
                    epsilon: 1e-5,
                },
                &[x, sc, bi],
            )
            .unwrap();
        let z = g.add("sm", Op::Softmax { axis }, &[x]).unwrap();
        g.add_output("y", y);
        g.add_output("z", z);
        check_targets(&g, &inputs_for(&g, 8), TRANS, &targets);
    }
}

#[test]
fn data_movement() {
    for dt in [DType::F32, DType::I64, DType::Bool, DType::I32] {
        let t = |s: &[usize]| ty(dt, s);
        check_op(
            Op::Reshape { shape: vec![6, 5] },
            &[t(&[2, 3, 5])],
            EXACT,
            1,
        );
        check_op(Op::Transpose { perm: vec![1, 0] }, &[t(&[7, 9])], EXACT, 1);
        check_op(
            Op::Transpose {
                perm: vec![0, 2, 3, 1],
            },
            &[t(&[2, 3, 4, 5])],
            EXACT,
            2,
        );
        check_op(
            Op::Transpose {
                perm: vec![2, 0, 1],
            },
            &[t(&[1, 6, 3])],
            EXACT,
            2,
        );
        check_op(
            Op::Concat { axis: 1 },
            &[t(&[2, 3, 4]), t(&[2, 1, 4]), t(&[2, 5, 4])],
            EXACT,
            3,
        );
        check_op(Op::Concat { axis: 0 }, &[t(&[3, 5]), t(&[2, 5])], EXACT, 3);
        check_op(
            Op::Concat { axis: 2 },
            &[t(&[2, 3, 4]), t(&[2, 3, 7])],
            EXACT,
            3,
        );
        check_op(
            Op::Split {
                axis: 1,
                sizes: vec![2, 3, 1],
            },
            &[t(&[3, 6, 5])],
            EXACT,
            4,
        );
        check_op(
            Op::Split {
                axis: 0,
                sizes: vec![1, 1],
            },
            &[t(&[2, 9])],
            EXACT,
            4,
        );
        check_op(
            Op::Expand {
                shape: vec![3, 4, 5],
            },
            &[t(&[4, 1])],
            EXACT,
            5,
        );
        check_op(Op::Expand { shape: vec![2, 1] }, &[t(&[1, 7])], EXACT, 5);
        check_op(
            Op::Slice {
                dims: vec![
                    SliceDim {
                        start: 1,
                        step: 2,
                        len: 3,
                    },
                    SliceDim {
                        start: 6,
                        step: -2,
                        len: 3,
                    },
                    SliceDim {
                        start: 0,
                        step: 1,
                        len: 5,
                    },
                ],
            },
            &[t(&[7, 8, 5])],
            EXACT,
            6,
        );
        for mode in [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ] {
            check_op(
                Op::Pad {
                    pads: vec![1, 2, 2, 0],
                    mode,
                    value: 1.5,
                },
                &[t(&[3, 4])],
                EXACT,
                7,
            );
            check_op(
                Op::Pad {
                    pads: vec![0, 1, 0, 1, 0, 3],
                    mode,
                    value: -2.0,
                },
                &[t(&[2, 3, 5])],
                EXACT,
                7,
            );
        }
        check_op(
            Op::Pad {
                pads: vec![-1, 2, 1, -2],
                mode: PadMode::Constant,
                value: 0.0,
            },
            &[t(&[4, 5])],
            EXACT,
            8,
        );
        // Outputs of >= 2^16 floats run in tasks, each a slice along dim 1 (8 parts).
        for mode in [
            PadMode::Constant,
            PadMode::Reflect,
            PadMode::Edge,
            PadMode::Wrap,
        ] {
            check_op(
                Op::Pad {
                    pads: vec![0, 0, 1, 2, 0, 0, 3, 1],
                    mode,
                    value: 0.5,
                },
                &[t(&[2, 8, 60, 70])],
                EXACT,
                9,
            );
        }
    }
}

#[test]
fn gather_variants() {
    for dt in [DType::F32, DType::I64] {
        for ity in [DType::I64, DType::I32] {
            for (dshape, axis, idx) in [
                (vec![10, 4], 0usize, vec![0i64, 9, -1, 3, 3]),
                (vec![3, 5, 2], 1, vec![4, -5, 2]),
                (vec![3, 6], 1, vec![5]),
                (vec![7], 0, vec![-7, 6, 0]),
            ] {
                let mut g = Graph::new();
                let d = g.add_input("d", ty(dt, &dshape));
                let n = idx.len();
                let it = match ity {
                    DType::I64 => Tensor::from_i64(vec![n], idx.clone()).unwrap(),
                    _ => Tensor::new(
                        vec![n],
                        optc_ir::Data::I32(idx.iter().map(|&v| v as i32).collect()),
                    )
                    .unwrap(),
                };
                let i = g.add_input("i", it.ty());
                let y = g.add("gather", Op::Gather { axis }, &[d, i]).unwrap();
                g.add_output("y", y);
                let mut ins = inputs_for(&g, 3);
                ins[1] = it;
                check(&g, &ins, EXACT);
            }
        }
    }
    // 2-D indices (embedding lookup).
    let mut g = Graph::new();
    let d = g.add_input("d", f(&[30, 8]));
    let i = g.add_input("i", ty(DType::I64, &[2, 5]));
    let y = g.add("gather", Op::Gather { axis: 0 }, &[d, i]).unwrap();
    g.add_output("y", y);
    let mut ins = inputs_for(&g, 3);
    ins[1] = Tensor::from_i64(vec![2, 5], vec![0, 1, 29, -1, -30, 5, 6, 7, 8, 9]).unwrap();
    check(&g, &ins, EXACT);
}

#[test]
fn gather_out_of_range_is_an_error() {
    let mut g = Graph::new();
    let d = g.add_input("d", f(&[10, 4]));
    let i = g.add_input("i", ty(DType::I64, &[3]));
    let y = g.add("emb", Op::Gather { axis: 0 }, &[d, i]).unwrap();
    g.add_output("y", y);
    let m = compile(&g);
    let mut rng = Rng::new(1);
    let data = f32t(&mut rng, &[10, 4]);
    for bad in [10i64, -11, i64::MAX] {
        let idx = Tensor::from_i64(vec![3], vec![0, bad, 1]).unwrap();
        let err = run_jit(&m, &[data.clone(), idx]).unwrap_err().to_string();
        assert!(
            err.contains("emb") && err.contains("gather") && err.contains("range"),
            "{err}"
        );
    }
}

#[test]
fn pow_integer_base() {
    for dt in [DType::I64, DType::I32, DType::U8, DType::I8] {
        for edt in [DType::I64, DType::I32, DType::F32] {
            let mut g = Graph::new();
            let x = g.add_input("x", ty(dt, &[4, 6]));
            let e = g.add_input("e", ty(edt, &[6]));
            let y = g.add("pow", Op::Binary(BinaryOp::Pow), &[x, e]).unwrap();
            g.add_output("y", y);
            let mut ins = inputs_for(&g, 17);
            ins[1] = match edt {
                DType::F32 => {
                    Tensor::from_f32(vec![6], vec![0.0, 1.0, 2.0, 3.0, -1.0, 0.5]).unwrap()
                }
                DType::I64 => Tensor::from_i64(vec![6], vec![0, 1, 2, 3, -1, 7]).unwrap(),
                _ => Tensor::new(vec![6], optc_ir::Data::I32(vec![0, 1, 2, 5, -2, 9])).unwrap(),
            };
            check(&g, &ins, EXACT);
        }
    }
}

#[test]
fn conv3d_generic_path() {
    conv_case(
        &[1, 2, 5, 6, 4],
        &[3, 2, 3, 2, 2],
        win(
            &[3, 2, 2],
            &[1, 2, 1],
            &[1, 0, 1, 1, 1, 0],
            &[1, 1, 2],
            false,
        ),
        1,
        true,
        true,
        4,
    );
    conv_case(
        &[2, 4, 4, 4, 4],
        &[4, 2, 2, 2, 2],
        win(&[2, 2, 2], &[1, 1, 1], &[0; 6], &[1, 1, 1], false),
        2,
        false,
        false,
        5,
    );
}

#[test]
fn empty_tensors() {
    for dt in [DType::F32, DType::I64] {
        check_op(
            Op::Concat { axis: 1 },
            &[ty(dt, &[2, 0, 3]), ty(dt, &[2, 4, 3])],
            EXACT,
            1,
        );
        check_op(Op::Unary(UnaryOp::Neg), &[ty(dt, &[0, 5])], EXACT, 1);
        check_op(
            Op::Binary(BinaryOp::Add),
            &[ty(dt, &[0, 5]), ty(dt, &[5])],
            EXACT,
            1,
        );
        check_op(
            Op::Transpose { perm: vec![1, 0] },
            &[ty(dt, &[3, 0])],
            EXACT,
            1,
        );
        check_op(
            Op::Slice {
                dims: vec![
                    SliceDim {
                        start: 0,
                        step: 1,
                        len: 0,
                    },
                    SliceDim {
                        start: 0,
                        step: 1,
                        len: 2,
                    },
                ],
            },
            &[ty(dt, &[3, 2])],
            EXACT,
            1,
        );
        check_op(
            Op::Split {
                axis: 0,
                sizes: vec![0, 3],
            },
            &[ty(dt, &[3, 2])],
            EXACT,
            1,
        );
    }
    check_op(Op::MatMul, &[f(&[0, 4]), f(&[4, 3])], EXACT, 1);
    // Empty inputs, non-empty outputs: nothing may be read from the (dangling) input buffer.
    check_op(
        Op::Pad {
            pads: vec![1, 2, 0, 1],
            mode: PadMode::Constant,
            value: 3.0,
        },
        &[f(&[0, 2])],
        EXACT,
        1,
    );
    for avg in [None, Some(true), Some(false)] {
        pool_case(
            &[1, 2, 0, 3],
            win(&[2, 2], &[1, 1], &[1, 0, 1, 0], &[1, 1], false),
            avg,
            1,
        );
    }
    conv_case(
        &[1, 2, 0, 3, 2],
        &[3, 2, 2, 1, 1],
        win(
            &[2, 1, 1],
            &[1, 1, 1],
            &[1, 0, 0, 1, 0, 0],
            &[1, 1, 1],
            false,
        ),
        1,
        true,
        true,
        1,
    );
    check_op(Op::MatMul, &[f(&[2, 0]), f(&[0, 3])], EXACT, 1);
    check_op(
        Op::Gather { axis: 0 },
        &[f(&[5, 2]), ty(DType::I64, &[0])],
        EXACT,
        1,
    );
    check_op(
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keepdims: false,
        },
        &[f(&[3, 0])],
        EXACT,
        1,
    );
}

#[test]
fn max_ignores_nan_like_the_interpreter() {
    let nan = f32::NAN;
    let mut v: Vec<f32> = (0..40).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
    for i in [0, 3, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 25] {
        v[i] = nan;
    }
    // Row 1 (elements 10..20) is all NaN.
    let t = Tensor::from_f32(vec![4, 10], v.clone()).unwrap();
    for axes in [vec![1], vec![0], vec![0, 1]] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[4, 10]));
        let y = g
            .add(
                "rmax",
                Op::Reduce {
                    kind: ReduceKind::Max,
                    axes,
                    keepdims: false,
                },
                &[x],
            )
            .unwrap();
        g.add_output("y", y);
        check(&g, std::slice::from_ref(&t), EXACT);
    }
    let t = Tensor::from_f32(vec![1, 1, 4, 10], v).unwrap();
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1, 1, 4, 10]));
    let y = g
        .add(
            "pool",
            Op::MaxPool {
                window: win(&[2, 2], &[1, 2], &[0, 0, 0, 0], &[1, 1], false),
            },
            &[x],
        )
        .unwrap();
    g.add_output("y", y);
    check(&g, &[t], EXACT);
    // Windows entirely in the padding.
    check_op(
        Op::MaxPool {
            window: win(&[1, 1], &[1, 1], &[2, 1, 0, 0], &[1, 1], false),
        },
        &[f(&[1, 2, 3, 3])],
        EXACT,
        3,
    );
}

#[test]
fn elementwise_on_sse42_target() {
    let t = optc_codegen::Target::parse("x86_64-sse4.2").unwrap();
    for (k, (u, tol)) in unaries().into_iter().enumerate() {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[3, 13]));
        let y = g.add("u", Op::Unary(u), &[x]).unwrap();
        g.add_output("y", y);
        check_with(&g, &inputs_for(&g, k as u64), tol, &t);
    }
    for (k, op) in BIN_F.iter().enumerate() {
        let mut g = Graph::new();
        let a = g.add_input("a", f(&[3, 13]));
        let b = g.add_input("b", f(&[13]));
        let y = g.add("bin", Op::Binary(*op), &[a, b]).unwrap();
        g.add_output("y", y);
        check_with(&g, &inputs_for(&g, k as u64), ARITH, &t);
    }
}

/// Dense sweep of the polynomial transcendentals against f64 math: max relative error
/// (with a tiny absolute floor near zero) stays within a few f32 ulps.
#[test]
fn transcendental_error_bounds() {
    let mut v: Vec<f32> = (0..200_001).map(|i| -100.0 + i as f32 * 0.001).collect();
    for k in 0..200 {
        let x = 1e-30f32 * 1.4f32.powi(k);
        v.push(x);
        v.push(-x);
    }
    let n = v.len();
    type Case = (UnaryOp, fn(f64) -> f64, f64);
    let refs: [Case; 4] = [
        (UnaryOp::Exp, f64::exp, 1e-6),
        (UnaryOp::Tanh, f64::tanh, 1e-6),
        (UnaryOp::Sigmoid, |x| 1.0 / (1.0 + (-x).exp()), 1e-6),
        (UnaryOp::Erf, erf_series, 4e-7),
    ];
    for (u, f64f, bound) in refs {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[n]));
        let y = g.add("u", Op::Unary(u.clone()), &[x]).unwrap();
        g.add_output("y", y);
        let m = compile(&g);
        let t = Tensor::from_f32(vec![n], v.clone()).unwrap();
        let got = run_jit(&m, &[t]).unwrap();
        let got = got[0].as_f32().unwrap();
        let mut worst = (0.0f64, 0.0f32);
        for (i, &xv) in v.iter().enumerate() {
            let want = f64f(xv as f64);
            if want.abs() < 1e-37 || !(want as f32).is_finite() {
                continue; // denormal/overflow region: checked by the interpreter test
            }
            let err = (got[i] as f64 - want).abs() / want.abs().max(1e-30);
            if err > worst.0 {
                worst = (err, xv);
            }
        }
        assert!(
            worst.0 <= bound,
            "{u:?}: max rel error {:e} at x = {}",
            worst.0,
            worst.1
        );
    }
}

/// erf in f64: Taylor series for |x| < 3, else `1 - erfc` by its continued fraction.
fn erf_series(x: f64) -> f64 {
    let a = x.abs();
    let r = if a < 3.0 {
        let mut term = a;
        let mut sum = a;
        let mut k = 0.0;
        loop {
            k += 1.0;
            term *= -a * a / k;
            let t = term / (2.0 * k + 1.0);
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = a;
        for k in (1..60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / f
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

/// The vector paths of bool-valued elementwise ops (IsNaN, And/Or over bytes, Where with a
/// bool condition), with broadcasts and vector tails, against the interpreter.
#[test]
fn bool_elementwise_vector_paths() {
    let nan = f32::NAN;
    let v: Vec<f32> = (0..3 * 37)
        .map(|i| match i % 7 {
            0 => nan,
            3 => f32::INFINITY,
            5 => f32::NEG_INFINITY,
            _ => i as f32 * 0.25 - 9.0,
        })
        .collect();
    let t = Tensor::from_f32(vec![3, 37], v).unwrap();
    // Where(IsNaN(x), 0, x), as after BERT's softmax.
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[3, 37]));
    let z = g.add_input("z", f(&[1]));
    let m = g.add("isnan", Op::Unary(UnaryOp::IsNaN), &[x]).unwrap();
    let y = g.add("where", Op::Where, &[m, z, x]).unwrap();
    g.add_output("m", m);
    g.add_output("y", y);
    let zt = Tensor::from_f32(vec![1], vec![0.0]).unwrap();
    check(&g, &[t, zt], EXACT);
    for (k, (a, b)) in [
        (vec![3, 37], vec![37]),
        (vec![3, 1], vec![3, 37]),
        (vec![2, 3, 40], vec![2, 3, 40]),
        (vec![5], vec![5]),
        (vec![1], vec![2, 33]),
    ]
    .into_iter()
    .enumerate()
    {
        for op in [BinaryOp::And, BinaryOp::Or] {
            check_op(
                Op::Binary(op),
                &[ty(DType::Bool, &a), ty(DType::Bool, &b)],
                EXACT,
                20 + k as u64,
            );
        }
        check_op(
            Op::Where,
            &[ty(DType::Bool, &a), f(&b), f(&[1])],
            EXACT,
            30 + k as u64,
        );
        check_op(
            Op::Where,
            &[ty(DType::Bool, &b), f(&a), f(&b)],
            EXACT,
            40 + k as u64,
        );
        check_op(Op::Unary(UnaryOp::IsNaN), &[f(&a)], EXACT, 50 + k as u64);
    }
}

/// Softmax rows holding NaN, +-inf and fully masked (all -inf) rows, on the vectorized row
/// path (lengths with and without a 16-element remainder).
#[test]
fn softmax_special_rows() {
    for n in [37usize, 128] {
        let mut v: Vec<f32> = (0..5 * n)
            .map(|i| ((i * 13) % 17) as f32 * 0.5 - 4.0)
            .collect();
        v[3] = f32::NAN; // row 0
        for x in &mut v[n..2 * n] {
            *x = f32::NEG_INFINITY; // row 1: fully masked
        }
        v[2 * n + n - 1] = f32::INFINITY; // row 2
        for i in (3 * n..4 * n).step_by(3) {
            v[i] = f32::NEG_INFINITY; // row 3: partly masked
        }
        v[5 * n - 1] = f32::NAN; // row 4: NaN in the scalar tail or last vector
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[5, n]));
        let y = g.add("sm", Op::Softmax { axis: 1 }, &[x]).unwrap();
        g.add_output("y", y);
        check(&g, &[Tensor::from_f32(vec![5, n], v).unwrap()], TRANS);
    }
}

/// Softmax outputs below 2^-126 are 0, never subnormal (a subnormal makes each multiply that
/// reads it take a microcode assist: attention's probabilities times V ran 100x slower), and
/// still match the interpreter; both the contiguous rows and the strided axis.
#[test]
fn softmax_outputs_are_never_subnormal() {
    // Rows spread over 0..-200: exp(x - max) reaches the subnormal range; a row of equal
    // values (sum 64) makes exp(-85) / 64 subnormal too.
    let n = 64usize;
    let mut v: Vec<f32> = (0..3 * n).map(|i| -((i % n) as f32) * 3.2).collect();
    for (j, x) in v[2 * n..].iter_mut().enumerate() {
        *x = if j == 0 { -85.0 } else { 0.0 };
    }
    for (shape, axis) in [(vec![3, n], 1), (vec![n, 3], 0)] {
        let input = if axis == 1 {
            v.clone()
        } else {
            // Transposed: the softmax axis is the strided one.
            (0..3 * n).map(|i| v[(i % 3) * n + i / 3]).collect()
        };
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let y = g.add("sm", Op::Softmax { axis }, &[x]).unwrap();
        g.add_output("y", y);
        let t = Tensor::from_f32(shape.clone(), input).unwrap();
        check(&g, std::slice::from_ref(&t), TRANS);
        let out = run_jit(&compile(&g), &[t]).unwrap();
        let out = out[0].as_f32().unwrap();
        assert!(out.contains(&0.0), "{shape:?}: nothing flushed");
        for &p in out {
            assert!(
                p == 0.0 || p >= f32::MIN_POSITIVE,
                "{shape:?}: subnormal {p:e}"
            );
        }
    }
}

/// Reshapes that take over their input's workspace block (input dead after them), chained,
/// next to ones that must copy (input read again later, graph input, graph output).
#[test]
fn reshape_aliasing_cases() {
    let rs = |shape: &[usize]| Op::Reshape {
        shape: shape.to_vec(),
    };
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[4, 6]));
    let a = g.add("a", Op::Unary(UnaryOp::Relu), &[x]).unwrap();
    let r1 = g.add("r1", rs(&[2, 12]), &[a]).unwrap(); // a dies here: aliased
    let r2 = g.add("r2", rs(&[24]), &[r1]).unwrap(); // chained alias
    let b = g.add("b", Op::Unary(UnaryOp::Neg), &[r2]).unwrap();
    let c = g.add("c", Op::Unary(UnaryOp::Abs), &[x]).unwrap();
    let r3 = g.add("r3", rs(&[6, 4]), &[c]).unwrap(); // c read again below: copy
    let d = g.add("d", Op::Binary(BinaryOp::Add), &[r3, r3]).unwrap();
    let c2 = g.add("c2", Op::Unary(UnaryOp::Neg), &[c]).unwrap();
    let r4 = g.add("r4", rs(&[24]), &[x]).unwrap(); // graph input
    let e = g.add("e", Op::Unary(UnaryOp::Neg), &[b]).unwrap();
    let r5 = g.add("r5", rs(&[3, 8]), &[e]).unwrap(); // graph output
    for (k, v) in [b, d, c2, r4, r5].into_iter().enumerate() {
        g.add_output(&format!("y{k}"), v);
    }
    check(&g, &inputs_for(&g, 9), EXACT);
}

/// Concats whose producers write their inputs in place (contiguous pieces of 64-byte
/// multiples, each read once, by the concat): channels at batch 1, blocks of rows along a
/// leading axis; next to ones that must copy (a piece that is such a concat's output, an
/// input read again, a graph input, a concat along an inner axis, pieces not a multiple of
/// 64 bytes, a graph output). Against the interpreter, and the in-place ones' kernels not
/// called.
#[test]
fn concats_in_place_and_copied() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1, 4, 8, 16]));
    let u = |g: &mut Graph, name: &str, op: UnaryOp, v| g.add(name, Op::Unary(op), &[v]).unwrap();
    let cat = |g: &mut Graph, name: &str, axis: usize, ins: &[optc_ir::Value]| {
        g.add(name, Op::Concat { axis }, ins).unwrap()
    };
    // In place: two pieces of 4 x 8 x 16 floats along the channels (batch 1).
    let a = u(&mut g, "a", UnaryOp::Relu, x);
    let b = u(&mut g, "b", UnaryOp::Neg, x);
    let c1 = cat(&mut g, "channels", 1, &[a, b]);
    // Copied: that concat's output a piece of another.
    let e = u(&mut g, "e", UnaryOp::Abs, x);
    let c2 = cat(&mut g, "nested", 1, &[c1, e]);
    let y0 = u(&mut g, "y0", UnaryOp::Neg, c2);
    // Copied: `h` is read again after the concat; the graph input; an inner axis.
    let h = u(&mut g, "h", UnaryOp::Relu, x);
    let k = u(&mut g, "k", UnaryOp::Neg, x);
    let c3 = cat(&mut g, "read_again", 1, &[h, k]);
    let y1 = g.add("y1", Op::Binary(BinaryOp::Add), &[c3, c3]).unwrap();
    let y2 = g.add("y2", Op::Binary(BinaryOp::Mul), &[h, h]).unwrap();
    let n = u(&mut g, "n", UnaryOp::Neg, x);
    let c4 = cat(&mut g, "with_input", 1, &[x, n]);
    let y3 = u(&mut g, "y3", UnaryOp::Neg, c4);
    let p = u(&mut g, "p", UnaryOp::Relu, x);
    let q = u(&mut g, "q", UnaryOp::Neg, x);
    let c5 = cat(&mut g, "inner_axis", 3, &[p, q]);
    let y4 = u(&mut g, "y4", UnaryOp::Neg, c5);
    // Copied: pieces of 3 x 5 floats; a graph output.
    let z = g.add_input("z", f(&[1, 3, 5]));
    let r = u(&mut g, "r", UnaryOp::Relu, z);
    let s = u(&mut g, "s", UnaryOp::Neg, z);
    let c6 = cat(&mut g, "unaligned", 1, &[r, s]);
    let y5 = u(&mut g, "y5", UnaryOp::Neg, c6);
    let v = u(&mut g, "v", UnaryOp::Relu, x);
    let w = u(&mut g, "w", UnaryOp::Neg, x);
    let c7 = cat(&mut g, "output", 1, &[v, w]);
    let t = g.add_input("t", f(&[1, 1, 8, 16]));
    let t1 = u(&mut g, "t1", UnaryOp::Relu, t);
    let t2 = u(&mut g, "t2", UnaryOp::Neg, t);
    let c8 = cat(&mut g, "rows", 2, &[t1, t2]);
    let y6 = u(&mut g, "y6", UnaryOp::Neg, c8);
    for (k, o) in [y0, y1, y2, y3, y4, y5, c7, y6].into_iter().enumerate() {
        g.add_output(&format!("y{k}_out"), o);
    }
    check(&g, &inputs_for(&g, 11), EXACT);
    let m = compile(&g);
    let skipped: Vec<&str> = m
        .kernels()
        .iter()
        .filter(|k| k.skipped)
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(skipped, ["channels", "rows"]);
}

/// Slices read in place (a consecutive range of their input starting at a multiple of 64
/// bytes: heads cut out along a leading axis, blocks of rows, with the input read again
/// after them and reshaped), next to ones that must copy (an inner axis, a step of 2, a
/// start off 64 bytes, a slice of a slice read in place, a graph input, a graph output).
/// Workspace reuse while the sliced input lives would overwrite what the slices read: the
/// nodes between them allocate and free values. Against the interpreter, and exactly the
/// in-place slices' kernels not called.
#[test]
fn slices_in_place_and_copied() {
    let sl = |dims: &[(i64, i64, usize)]| Op::Slice {
        dims: dims
            .iter()
            .map(|&(start, step, len)| SliceDim { start, step, len })
            .collect(),
    };
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[3, 8, 16]));
    let u = |g: &mut Graph, name: &str, op: UnaryOp, v| g.add(name, Op::Unary(op), &[v]).unwrap();
    let q = u(&mut g, "q", UnaryOp::Relu, x);
    // In place: head 1, then rows 4..8 of head 2 (dims of 1 before the rows).
    let h1 = g
        .add("head", sl(&[(1, 1, 1), (0, 1, 8), (0, 1, 16)]), &[q])
        .unwrap();
    let a = u(&mut g, "a", UnaryOp::Neg, h1);
    let b = u(&mut g, "b", UnaryOp::Abs, a);
    let rows = g
        .add("rows", sl(&[(2, 1, 1), (4, 1, 4), (0, 1, 16)]), &[q])
        .unwrap();
    let c = u(&mut g, "c", UnaryOp::Neg, rows);
    let s = g.add("sum", Op::Binary(BinaryOp::Add), &[b, h1]).unwrap();
    // Copied: an inner axis, a step of 2, a start 4 floats in, a slice of `head`.
    let inner = g
        .add("inner", sl(&[(0, 1, 3), (0, 1, 8), (0, 1, 8)]), &[q])
        .unwrap();
    let step = g
        .add("step", sl(&[(0, 2, 2), (0, 1, 8), (0, 1, 16)]), &[q])
        .unwrap();
    let off = g
        .add("off", sl(&[(0, 1, 1), (0, 1, 1), (4, 1, 8)]), &[q])
        .unwrap();
    let twice = g
        .add("twice", sl(&[(0, 1, 1), (0, 1, 4), (0, 1, 16)]), &[h1])
        .unwrap();
    let input = g
        .add("of_input", sl(&[(1, 1, 1), (0, 1, 8), (0, 1, 16)]), &[x])
        .unwrap();
    // `q` read again after all of them, reshaped, for the last time; then new values whose
    // blocks would reuse `q`'s were it freed there, then `late`, a slice of `q`, read.
    let late = g
        .add("late", sl(&[(2, 1, 1), (0, 1, 8), (0, 1, 16)]), &[q])
        .unwrap();
    let r = g
        .add(
            "r",
            Op::Reshape {
                shape: vec![24, 16],
            },
            &[q],
        )
        .unwrap();
    let t = u(&mut g, "t", UnaryOp::Neg, r);
    let z1 = u(&mut g, "z1", UnaryOp::Neg, x);
    let z2 = u(&mut g, "z2", UnaryOp::Abs, z1);
    let y = u(&mut g, "y", UnaryOp::Neg, late);
    let outs = [s, c, inner, step, off, twice, input, t, z2, y];
    for (k, o) in outs.into_iter().enumerate() {
        g.add_output(&format!("y{k}"), o);
    }
    check(&g, &inputs_for(&g, 12), EXACT);
    let m = compile(&g);
    let skipped: Vec<&str> = m
        .kernels()
        .iter()
        .filter(|k| k.skipped)
        .map(|k| k.name.as_str())
        .collect();
    assert_eq!(skipped, ["head", "rows", "late"]);
}

/// A fused `erf(x / c)` (GELU's `erf(x / sqrt 2)`, lowered as `erf(x * (1/c))`) stays within
/// 5e-7 relative of `erf(fl(x / c))` over a dense sweep, for a few constants `c`.
#[test]
fn erf_of_quotient_error_bound() {
    // (x = 0 is left out: `erf_series` needs x != 0.)
    let mut v: Vec<f32> = (0..80_000).map(|i| -19.99987 + i as f32 * 0.0005).collect();
    for k in 0..200 {
        let x = 1e-30f32 * 1.4f32.powi(k);
        v.push(x);
        v.push(-x);
    }
    let n = v.len();
    for c in [std::f32::consts::SQRT_2, 3.0, 0.7, -1.3] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[n]));
        let cv = g.add_const("c", Tensor::from_f32(vec![], vec![c]).unwrap());
        let y = g
            .add(
                "gelu_erf",
                Op::Fused {
                    base: Box::new(Op::Binary(BinaryOp::Div)),
                    base_inputs: 2,
                    steps: vec![FusedStep::Unary(UnaryOp::Erf)],
                },
                &[x, cv],
            )
            .unwrap();
        g.add_output("y", y);
        let m = compile(&g);
        let got = run_jit(&m, &[Tensor::from_f32(vec![n], v.clone()).unwrap()]).unwrap();
        let got = got[0].as_f32().unwrap();
        let mut worst = (0.0f64, 0.0f32);
        for (i, &xv) in v.iter().enumerate() {
            let want = erf_series((xv / c) as f64);
            if want.abs() < 1e-37 {
                continue;
            }
            let err = (got[i] as f64 - want).abs() / want.abs();
            if err > worst.0 {
                worst = (err, xv);
            }
        }
        assert!(
            worst.0 <= 5e-7,
            "erf(x / {c}): max rel error {:e} at x = {}",
            worst.0,
            worst.1
        );
    }
}

/// Softmax row lengths around the AVX-512 routine's steps (16-float vectors, 64 floats a loop
/// step: short rows, a masked last vector alone or after whole steps), on every target this
/// host runs (the routine on AVX-512, the generic rows elsewhere), with a fused step after
/// the rows (BERT's `nan_to`) and enough rows for tasks.
#[test]
fn softmax_row_lengths() {
    for (k, n) in [1usize, 5, 16, 17, 48, 63, 64, 65, 100, 128, 257]
        .into_iter()
        .enumerate()
    {
        let rows = if n == 128 { 300 } else { 7 };
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[rows, n]));
        let op = Op::Fused {
            base: Box::new(Op::Softmax { axis: 1 }),
            base_inputs: 1,
            steps: vec![FusedStep::Unary(UnaryOp::NanTo { value: 0.0 })],
        };
        let y = g.add("sm", op, &[x]).unwrap();
        g.add_output("y", y);
        let mut inputs = inputs_for(&g, 90 + k as u64);
        if let optc_ir::Data::F32(v) = inputs[0].data_mut() {
            // Logits spread wide (outputs flushed to 0), a NaN row (made 0 by the step).
            for (i, x) in v.iter_mut().enumerate() {
                *x *= 1.0 + (i % 7) as f32 * 20.0;
            }
            v[n] = f32::NAN;
        }
        check_targets(&g, &inputs, TRANS, &runnable_targets(4));
    }
}

/// Softmaxes large enough to run as row blocks on several threads (`softmax_split`): 8 and 3
/// blocks, on 1 thread and on all cores.
#[test]
fn softmax_split_across_tasks() {
    for shape in [vec![2, 4, 64, 128], vec![3, 8192]] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let y = g
            .add(
                "sm",
                Op::Softmax {
                    axis: shape.len() - 1,
                },
                &[x],
            )
            .unwrap();
        g.add_output("y", y);
        let inputs = inputs_for(&g, 77);
        let want = optc_ir::interp::run(&g, &inputs).unwrap();
        let mut m = compile(&g);
        for threads in [1, 0] {
            m.set_threads(threads);
            let got = run_jit(&m, &inputs).unwrap();
            compare("softmax", &got[0], &want[0], TRANS);
        }
    }
}

/// Transposes that run as 4x4 register tiles (input contiguous along an outer output dim,
/// both extents multiples of 4) and ones that do not fit the tiles, in f32 and i32.
#[test]
fn transpose_tiles() {
    for (k, (shape, perm)) in [
        (vec![8, 12], vec![1, 0]),
        (vec![1, 16, 2, 8], vec![0, 2, 3, 1]),
        (vec![3, 4, 5, 8], vec![0, 3, 1, 2]),
        (vec![2, 4, 4, 3], vec![0, 2, 1, 3]),
        (vec![6, 8], vec![1, 0]),
        (vec![4, 4, 4], vec![2, 1, 0]),
    ]
    .into_iter()
    .enumerate()
    {
        for dt in [DType::F32, DType::I32] {
            check_op(
                Op::Transpose { perm: perm.clone() },
                &[ty(dt, &shape)],
                EXACT,
                60 + k as u64,
            );
        }
    }
}

/// LayerNorms large enough to run as row blocks on several threads (`layernorm_split`), with
/// per-element and single-value scale/bias, on 1 thread and on all cores.
#[test]
fn layer_norm_split_across_tasks() {
    let mut rng = Rng::new(12);
    for (shape, sshape, bias) in [
        (vec![4, 16, 256], vec![256], true),
        (vec![3, 8192], vec![1], false),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let s = g.add_const("s", f32t(&mut rng, &sshape));
        let mut ins = vec![x, s];
        if bias {
            ins.push(g.add_const("b", f32t(&mut rng, &sshape)));
        }
        let ln = Op::LayerNorm {
            axis: shape.len() - 1,
            epsilon: 1e-5,
        };
        let y = g.add("ln", ln, &ins).unwrap();
        g.add_output("y", y);
        let inputs = inputs_for(&g, 13);
        let want = optc_ir::interp::run(&g, &inputs).unwrap();
        let mut m = compile(&g);
        for threads in [1, 0] {
            m.set_threads(threads);
            let got = run_jit(&m, &inputs).unwrap();
            let tol = Tol {
                atol: 1e-5,
                rtol: 1e-4,
            };
            compare("layer_norm", &got[0], &want[0], tol);
        }
    }
}

/// `Where(IsNaN(x), c, x)` with the IsNaN read only by the Where runs as one NaN-replacing
/// pass; variants that must not fuse (IsNaN of another tensor, IsNaN also an output) too.
#[test]
fn where_isnan_fused_pass() {
    let v: Vec<f32> = (0..2 * 45)
        .map(|i| match i % 5 {
            0 => f32::NAN,
            2 => f32::NEG_INFINITY,
            _ => i as f32 * 0.5 - 20.0,
        })
        .collect();
    let t = Tensor::from_f32(vec![2, 45], v.clone()).unwrap();
    let w = Tensor::from_f32(vec![2, 45], v.iter().rev().copied().collect()).unwrap();
    for case in 0..3 {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[2, 45]));
        let other = g.add_input("w", f(&[2, 45]));
        let c = g.add_const("c", Tensor::from_f32(vec![1], vec![-7.25]).unwrap());
        let src = if case == 1 { other } else { x };
        let m = g.add("isnan", Op::Unary(UnaryOp::IsNaN), &[src]).unwrap();
        let y = g.add("where", Op::Where, &[m, c, x]).unwrap();
        g.add_output("y", y);
        if case == 2 {
            g.add_output("m", m);
        }
        check(&g, &[t.clone(), w.clone()], EXACT);
    }
}

#[test]
fn bitwise_ops_on_every_integer_type() {
    let a: Vec<i64> = vec![0, 1, -1, 5, -128, 127, 85, -86, 3, 64, -7, 100];
    let b: Vec<i64> = vec![1, 0, 3, 7, 1, 2, 15, 4, 9, 6, 33, 70];
    let n = a.len();
    for dt in [DType::I64, DType::I32, DType::I8, DType::U8] {
        let cast = |v: &[i64]| {
            optc_ir::interp::eval_op(
                &Op::Cast { to: dt },
                &[&Tensor::from_i64(vec![n], v.to_vec()).unwrap()],
            )
            .unwrap()
            .remove(0)
        };
        let (ta, tb) = (cast(&a), cast(&b));
        for op in [
            BinaryOp::BitAnd,
            BinaryOp::BitOr,
            BinaryOp::BitXor,
            BinaryOp::ShiftLeft,
            BinaryOp::ShiftRight,
        ] {
            let mut g = Graph::new();
            let x = g.add_input("x", TensorType::new(dt, vec![n]));
            let y = g.add_input("y", TensorType::new(dt, vec![n]));
            let z = g.add("b", Op::Binary(op), &[x, y]).unwrap();
            g.add_output("z", z);
            check(&g, &[ta.clone(), tb.clone()], EXACT);
        }
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(dt, vec![n]));
        let z = g.add("n", Op::Unary(UnaryOp::BitNot), &[x]).unwrap();
        g.add_output("z", z);
        check(&g, std::slice::from_ref(&ta), EXACT);
    }
}

#[test]
fn fmod_is_exact_on_edge_values() {
    let v = [
        7.5f32,
        -7.5,
        0.0,
        -0.0,
        1e30,
        -3.25,
        f32::INFINITY,
        f32::NAN,
        5.0,
        2.5,
        -1e-30,
        123.456,
    ];
    let d = [
        2.0f32,
        2.0,
        3.0,
        -3.0,
        7.0,
        -0.5,
        2.0,
        1.0,
        0.0,
        f32::INFINITY,
        3.0,
        -0.1,
    ];
    let x = Tensor::from_f32(vec![v.len()], v.to_vec()).unwrap();
    let y = Tensor::from_f32(vec![d.len()], d.to_vec()).unwrap();
    let mut g = Graph::new();
    let a = g.add_input("a", f(&[v.len()]));
    let b = g.add_input("b", f(&[d.len()]));
    let r = g.add("fmod", Op::Binary(BinaryOp::FMod), &[a, b]).unwrap();
    g.add_output("y", r);
    check(&g, &[x, y], EXACT);
    for (a, b) in bcast_cases() {
        check_op(Op::Binary(BinaryOp::FMod), &[f(&a), f(&b)], EXACT, 31);
    }
}

/// Convs whose windows read mostly padding (split into border regions before lowering:
/// DeepLab's dilation 12 on a 16x16 map, a strided grouped one, a 5x5 with uneven pads over
/// two images, one with a fused Relu and residual add) against the interpreter, at 1 and 2
/// threads on every runnable target.
#[test]
fn convs_reading_mostly_padding() {
    let targets = runnable_targets(0);
    let mut rng = Rng::new(77);
    for (x, m, group, k, s, pads, d, residual) in [
        ([1, 16, 16, 16], 8, 1, 3, 1, [12; 4], 12, true),
        ([1, 6, 12, 10], 6, 3, 3, 2, [5; 4], 5, false),
        ([2, 3, 7, 7], 4, 1, 5, 1, [4, 5, 4, 3], 3, false),
    ] {
        let mut g = Graph::new();
        let xv = g.add_input("x", f(&x));
        let w = g.add_const("w", f32t(&mut rng, &[m, x[1] / group, k, k]));
        let b = g.add_const("b", f32t(&mut rng, &[m]));
        let conv = Op::Conv {
            window: window(&[k, k], &[s, s], &pads, &[d, d]),
            group,
        };
        let y = if residual {
            let out = conv
                .infer(&[&f(&x), &f(&[m, x[1], k, k]), &f(&[m])])
                .unwrap()[0]
                .clone();
            let r = g.add_input("r", out);
            let op = Op::Fused {
                base: Box::new(conv),
                base_inputs: 3,
                steps: vec![
                    FusedStep::Unary(UnaryOp::Relu),
                    FusedStep::Binary {
                        op: BinaryOp::Add,
                        input: 3,
                        swap: false,
                    },
                ],
            };
            g.add("conv", op, &[xv, w, b, r]).unwrap()
        } else {
            g.add("conv", conv, &[xv, w, b]).unwrap()
        };
        g.add_output("y", y);
        check_targets(&g, &inputs_for(&g, 78), ARITH, &targets);
    }
}
