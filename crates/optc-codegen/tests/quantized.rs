//! The generic lowering of the quantization ops (`QuantizeLinear`, `DequantizeLinear`,
//! `DynamicQuantizeLinear`, `MatMulInteger`, `ConvInteger`) and of optc's int8 contractions
//! (`QuantizedMatMul`, `QuantizedConv`), bit for bit against the reference interpreter:
//! every dtype, per-tensor and per-axis parameters, special values, and shapes that reach
//! every tile, tail and column block of the integer GEMM; on every x86-64 target this host
//! runs, at 1 and 2 threads.

mod common;
use common::*;
use optc_ir::{
    ActivationQuantization as A, BinaryOp, DType, Data, FusedStep, Graph, Op, Tensor, TensorType,
    UnaryOp, Value, Window,
};

fn targets() -> Vec<optc_codegen::Target> {
    let t = runnable_targets(4);
    assert!(!t.is_empty());
    t
}

/// Check `g` on the given inputs everywhere, exactly.
fn exact(g: &Graph, inputs: &[Tensor]) {
    check_targets(g, inputs, EXACT, &targets());
}

fn t(shape: &[usize], d: Data) -> Tensor {
    Tensor::new(shape.to_vec(), d).unwrap()
}

/// A one-node graph: `ins` are (type, constant value if any); every output is a graph output.
fn one_node(op: Op, ins: &[(TensorType, Option<Tensor>)]) -> Graph {
    let mut g = Graph::new();
    let vs: Vec<Value> = ins
        .iter()
        .enumerate()
        .map(|(i, (ty, c))| match c {
            Some(c) => g.add_const(&format!("c{i}"), c.clone()),
            None => g.add_input(&format!("x{i}"), ty.clone()),
        })
        .collect();
    let outs = g
        .add_node("n", op.clone(), &vs)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    for (i, o) in outs.iter().enumerate() {
        g.add_output(&format!("y{i}"), *o);
    }
    g
}

fn input(ty: TensorType) -> (TensorType, Option<Tensor>) {
    (ty, None)
}

fn constant(c: Tensor) -> (TensorType, Option<Tensor>) {
    (c.ty(), Some(c))
}

/// f32 values with NaN, infinities, exact halves of `scale` and values far out of range.
fn special_floats(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|i| match i % 9 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => f32::NEG_INFINITY,
            3 => (r.int(-600, 600) as f32 + 0.5) * scale,
            4 => r.f32(-1e6, 1e6),
            _ => r.f32(-300.0, 300.0) * scale,
        })
        .collect()
}

#[test]
fn quantize_linear_dtypes_axes_and_special_values() {
    let mut r = Rng::new(1);
    for (shape, axis, per_axis) in [
        (vec![37], 0, false),
        (vec![3, 5, 7], 1, true),
        (vec![4, 6], 0, true),
        (vec![2, 3, 9], 2, true),
        (vec![], 0, false),
    ] {
        for dt in [DType::U8, DType::I8] {
            let n: usize = shape.iter().product();
            let x = t(&shape, Data::F32(special_floats(n, 0.5, n as u64)));
            let np = if per_axis { shape[axis] } else { 1 };
            let pshape: Vec<usize> = if per_axis { vec![np] } else { vec![] };
            let scale = t(
                &pshape,
                Data::F32((0..np).map(|_| r.f32(0.05, 3.0)).collect()),
            );
            let zero = rand_tensor(&mut r, &TensorType::new(dt, pshape.clone()));
            // parameters as constants, and as run-time inputs
            for runtime in [false, true] {
                let p = |c: &Tensor| {
                    if runtime {
                        input(c.ty())
                    } else {
                        constant(c.clone())
                    }
                };
                let g = one_node(
                    Op::QuantizeLinear { axis },
                    &[input(x.ty()), p(&scale), p(&zero)],
                );
                let mut inputs = vec![x.clone()];
                if runtime {
                    inputs.extend([scale.clone(), zero.clone()]);
                }
                exact(&g, &inputs);
            }
        }
        // without a zero point: u8
        let n: usize = shape.iter().product();
        let x = t(&shape, Data::F32(special_floats(n, 2.0, 7)));
        let g = one_node(
            Op::QuantizeLinear { axis: 0 },
            &[input(x.ty()), constant(Tensor::scalar_f32(2.0))],
        );
        exact(&g, &[x]);
    }
}

#[test]
fn dequantize_linear_dtypes_and_axes() {
    let mut r = Rng::new(2);
    for dt in [DType::U8, DType::I8, DType::I32] {
        for (shape, axis, per_axis) in [
            (vec![23], 0, false),
            (vec![3, 5, 7], 1, true),
            (vec![4, 6], 1, true),
            (vec![5, 2], 0, false),
        ] {
            let x = rand_tensor(&mut r, &TensorType::new(dt, shape.clone()));
            let x = if dt == DType::I32 {
                // large values: the difference rounds once to f32
                let v = x
                    .to_i64_vec()
                    .iter()
                    .map(|&v| (v * 40_000_000) as i32)
                    .collect();
                t(&shape, Data::I32(v))
            } else {
                x
            };
            let np = if per_axis { shape[axis] } else { 1 };
            let pshape: Vec<usize> = if per_axis { vec![np] } else { vec![] };
            let scale = t(
                &pshape,
                Data::F32((0..np).map(|_| r.f32(1e-3, 2.0)).collect()),
            );
            let zero = rand_tensor(&mut r, &TensorType::new(dt, pshape));
            let g = one_node(
                Op::DequantizeLinear { axis },
                &[input(x.ty()), constant(scale.clone()), input(zero.ty())],
            );
            exact(&g, &[x.clone(), zero]);
            let g = one_node(
                Op::DequantizeLinear { axis },
                &[input(x.ty()), constant(scale)],
            );
            exact(&g, &[x]);
        }
    }
}

#[test]
fn dynamic_quantize_linear_ranges() {
    let mut r = Rng::new(3);
    let cases: Vec<Vec<f32>> = vec![
        (0..37).map(|_| r.f32(-3.0, 5.0)).collect(),
        (0..16).map(|_| r.f32(0.5, 9.0)).collect(),
        (0..9).map(|_| r.f32(-7.0, -0.25)).collect(),
        vec![0.0; 11],
        vec![1.5],
        vec![f32::NAN, -1.0, 2.0, f32::NAN, 0.25],
        vec![f32::INFINITY, -1.0, 2.0],
        vec![f32::NEG_INFINITY, f32::INFINITY, 3.0, -3.0],
        vec![-0.0, 0.0, -0.0],
        special_floats(101, 0.01, 5),
    ];
    for v in cases {
        let x = t(&[v.len()], Data::F32(v));
        let g = one_node(Op::DynamicQuantizeLinear, &[input(x.ty())]);
        exact(&g, &[x]);
    }
    // rank 3
    let x = f32t(&mut r, &[2, 3, 5]);
    let g = one_node(Op::DynamicQuantizeLinear, &[input(x.ty())]);
    exact(&g, &[x]);
}

fn i8t(r: &mut Rng, shape: &[usize]) -> Tensor {
    rand_tensor(r, &ty(DType::I8, shape))
}

#[test]
fn matmul_integer_shapes_and_zero_points() {
    let mut r = Rng::new(4);
    // (a, b, a zero, b zero): every tile and tail of the GEMM (4x8 tiles, 4 columns, single
    // columns, row remainders), batches, rank-1 operands.
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        Vec<usize>,
        Vec<usize>,
        Option<Vec<usize>>,
        Option<Vec<usize>>,
    )> = vec![
        (vec![1, 1], vec![1, 1], None, None),
        (vec![4, 7], vec![7, 8], Some(vec![]), Some(vec![])),
        (vec![5, 9], vec![9, 13], Some(vec![5, 1]), Some(vec![13])),
        (vec![7, 16], vec![16, 29], Some(vec![]), Some(vec![1, 29])),
        (vec![2, 3, 17], vec![17, 12], Some(vec![2, 3, 1]), None),
        (
            vec![2, 1, 6, 5],
            vec![3, 5, 4],
            Some(vec![]),
            Some(vec![3, 1, 4]),
        ),
        (vec![9], vec![9, 5], Some(vec![]), Some(vec![5])),
        (vec![3, 11], vec![11], Some(vec![3, 1]), Some(vec![])),
        (
            vec![33, 70],
            vec![70, 45],
            Some(vec![33, 1]),
            Some(vec![45]),
        ),
    ];
    for (adt, bdt) in [
        (DType::U8, DType::I8),
        (DType::U8, DType::U8),
        (DType::I8, DType::I8),
    ] {
        for (sa, sb, za, zb) in &cases {
            let a = rand_tensor(&mut r, &ty(adt, sa));
            let b = rand_tensor(&mut r, &ty(bdt, sb));
            let mut ins = vec![input(a.ty()), input(b.ty())];
            let mut vals = vec![a, b];
            if za.is_some() || zb.is_some() {
                let za = rand_tensor(&mut r, &ty(adt, za.as_deref().unwrap_or(&[])));
                ins.push(input(za.ty()));
                vals.push(za);
                if let Some(zb) = zb {
                    let zb = rand_tensor(&mut r, &ty(bdt, zb));
                    ins.push(constant(zb));
                }
            }
            let g = one_node(Op::MatMulInteger, &ins);
            exact(&g, &vals);
        }
    }
}

#[test]
fn matmul_integer_wraps_like_the_interpreter() {
    // 40000 products of 255 * 255 overflow i32: both wrap.
    let k = 40_000;
    let a = t(&[1, k], Data::U8(vec![255; k]));
    let b = t(&[k, 5], Data::U8(vec![255; 5 * k]));
    let g = one_node(Op::MatMulInteger, &[input(a.ty()), input(b.ty())]);
    check(&g, &[a, b], EXACT);
}

fn win(kernel: &[usize], strides: &[usize], pads: &[usize], dil: &[usize]) -> Window {
    window(kernel, strides, pads, dil)
}

fn conv_cases() -> Vec<(Vec<usize>, usize, usize, Window)> {
    // (input shape, output channels, group, window)
    vec![
        (
            vec![1, 3, 6, 7],
            8,
            1,
            win(&[3, 3], &[1, 1], &[1; 4], &[1, 1]),
        ),
        (
            vec![2, 4, 7, 7],
            6,
            2,
            win(&[3, 2], &[2, 1], &[1, 0, 2, 1], &[1, 2]),
        ),
        (
            vec![1, 4, 5, 5],
            4,
            4,
            win(&[3, 3], &[1, 1], &[1; 4], &[1, 1]),
        ),
        (
            vec![1, 8, 4, 4],
            12,
            1,
            win(&[1, 1], &[1, 1], &[0; 4], &[1, 1]),
        ),
        (
            vec![1, 5, 9, 9],
            7,
            1,
            win(&[1, 1], &[2, 2], &[0; 4], &[1, 1]),
        ),
        (vec![2, 3, 11], 5, 1, win(&[3], &[2], &[2, 1], &[1])),
        (
            vec![1, 16, 10, 10],
            33,
            1,
            win(&[3, 3], &[1, 1], &[1; 4], &[1, 1]),
        ),
    ]
}

#[test]
fn conv_integer_variants() {
    let mut r = Rng::new(5);
    for (xdt, wdt) in [
        (DType::U8, DType::I8),
        (DType::U8, DType::U8),
        (DType::I8, DType::I8),
    ] {
        for (k, (xs, m, group, w)) in conv_cases().into_iter().enumerate() {
            let mut ws = vec![m, xs[1] / group];
            ws.extend(&w.kernel);
            let x = rand_tensor(&mut r, &ty(xdt, &xs));
            let wt = rand_tensor(&mut r, &ty(wdt, &ws));
            let op = Op::ConvInteger { window: w, group };
            let zx = rand_tensor(&mut r, &ty(xdt, &[]));
            let zw_shape: &[usize] = if k % 2 == 0 { &[] } else { &[m] };
            let zw = rand_tensor(&mut r, &ty(wdt, zw_shape));
            let g = one_node(
                op.clone(),
                &[
                    input(x.ty()),
                    constant(wt.clone()),
                    input(zx.ty()),
                    constant(zw),
                ],
            );
            exact(&g, &[x.clone(), zx]);
            // no zero points
            let g = one_node(op, &[input(x.ty()), input(wt.ty())]);
            exact(&g, &[x, wt]);
        }
    }
}

/// A quantized contraction graph: `x` an input, the weights and their scales constants, the
/// static parameters and the bias constants when asked.
fn quantized(op: Op, x: &TensorType, w: Tensor, channels: usize, bias: bool, r: &mut Rng) -> Graph {
    let per_channel = r.int(0, 2) == 1;
    let ws = if per_channel {
        t(
            &[channels],
            Data::F32((0..channels).map(|_| r.f32(0.001, 0.05)).collect()),
        )
    } else {
        Tensor::scalar_f32(r.f32(0.001, 0.05))
    };
    let mut ins = vec![input(x.clone()), constant(w), constant(ws)];
    let act = match &op {
        Op::QuantizedMatMul { activation } | Op::QuantizedConv { activation, .. } => *activation,
        _ => unreachable!(),
    };
    if act == A::Static {
        ins.push(constant(Tensor::scalar_f32(r.f32(0.01, 0.1))));
        ins.push(constant(t(&[], Data::U8(vec![r.int(0, 256) as u8]))));
    }
    if bias {
        ins.push(constant(f32t(r, &[channels])));
    }
    one_node(op, &ins)
}

#[test]
fn quantized_matmul_shapes_modes_and_epilogues() {
    let mut r = Rng::new(6);
    // (x shape, n): tiles, tails, several column blocks (k = 2000: 128-column blocks).
    for (xs, n) in [
        (vec![1, 1], 1),
        (vec![4, 7], 8),
        (vec![5, 9], 13),
        (vec![2, 3, 17], 12),
        (vec![33], 29),
        (vec![3, 2000], 300),
        (vec![1, 128, 64], 96),
    ] {
        let k = *xs.last().unwrap();
        for act in [A::Dynamic, A::Static] {
            for bias in [false, true] {
                let w = i8t(&mut r, &[k, n]);
                let g = quantized(
                    Op::QuantizedMatMul { activation: act },
                    &f(&xs),
                    w,
                    n,
                    bias,
                    &mut r,
                );
                let mut x = f32t(&mut r, &xs);
                if let Some(v) = x.as_f32() {
                    // a NaN and an out-of-range value among the activations
                    let mut v = v.to_vec();
                    v[0] = f32::NAN;
                    if v.len() > 1 {
                        v[1] = 1e6;
                    }
                    x = t(&xs, Data::F32(v));
                }
                exact(&g, &[x]);
            }
        }
    }
}

#[test]
fn quantized_conv_variants_and_fused_steps() {
    let mut r = Rng::new(7);
    for (xs, m, group, w) in conv_cases() {
        let mut ws = vec![m, xs[1] / group];
        ws.extend(&w.kernel);
        for act in [A::Dynamic, A::Static] {
            let bias = r.int(0, 2) == 1;
            let wt = i8t(&mut r, &ws);
            let op = Op::QuantizedConv {
                window: w.clone(),
                group,
                activation: act,
            };
            let g = quantized(op, &f(&xs), wt, m, bias, &mut r);
            let x = f32t(&mut r, &xs);
            exact(&g, &[x]);
        }
    }
    // A fused relu and residual add after the conv (the generic chain pass).
    let (xs, m, group, w) = conv_cases().remove(0);
    let wt = i8t(&mut r, &[m, xs[1] / group, 3, 3]);
    let base = Op::QuantizedConv {
        window: w,
        group,
        activation: A::Dynamic,
    };
    let mut g = Graph::new();
    let x = g.add_input("x", f(&xs));
    let wv = g.add_const("w", wt);
    let s = g.add_const("s", Tensor::scalar_f32(0.02));
    let b = g.add_const("b", f32t(&mut r, &[m]));
    let out = TensorType::f32(&[1, m, 6, 7]);
    let res = g.add_input("res", out.clone());
    let fused = Op::Fused {
        base: Box::new(base),
        base_inputs: 4,
        steps: vec![
            FusedStep::Unary(UnaryOp::Relu),
            FusedStep::Binary {
                op: BinaryOp::Add,
                input: 4,
                swap: false,
            },
        ],
    };
    let y = g.add("fused", fused, &[x, wv, s, b, res]).unwrap();
    g.add_output("y", y);
    let inputs = vec![f32t(&mut r, &xs), f32t(&mut r, &[1, m, 6, 7])];
    exact(&g, &inputs);
}

fn refused(g: &Graph) -> optc_codegen::CodegenError {
    match optc_codegen::compile_jit(g, &optc_codegen::Target::host().unwrap()) {
        Ok(_) => panic!("compiled"),
        Err(e) => e,
    }
}

#[test]
fn quantized_ops_refuse_what_they_cannot_lower() {
    // A static activation scale computed at run time; a conv of three spatial dims.
    let mut r = Rng::new(8);
    let w = i8t(&mut r, &[4, 3]);
    let g = one_node(
        Op::QuantizedMatMul {
            activation: A::Static,
        },
        &[
            input(f(&[2, 4])),
            constant(w),
            constant(Tensor::scalar_f32(0.1)),
            input(f(&[])),
            constant(t(&[], Data::U8(vec![3]))),
        ],
    );
    let e = refused(&g);
    assert!(
        e.to_string().contains("node n (quantized_matmul)")
            && e.to_string().contains("must be constants"),
        "{e}"
    );
    let op = Op::ConvInteger {
        window: win(&[1, 1, 1], &[1, 1, 1], &[0; 6], &[1, 1, 1]),
        group: 1,
    };
    let g = one_node(
        op,
        &[
            input(ty(DType::U8, &[1, 2, 3, 3, 3])),
            input(ty(DType::U8, &[2, 2, 1, 1, 1])),
        ],
    );
    let e = refused(&g);
    assert!(e.to_string().contains("3 spatial dims"), "{e}");
}
