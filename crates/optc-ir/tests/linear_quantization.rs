//! ONNX's linear quantization ops in the interpreter (`optc_ir::linear_quantization`):
//! the examples of the ONNX operator documentation, and the integer contractions against
//! the f32 ops on the zero-point-shifted operands (an independent computation, exact for
//! these small integers). onnxruntime's own outputs are checked in `tests/quantized_onnx.rs`
//! at the workspace root.

use optc_ir::interp::{eval_op, run};
use optc_ir::text::{parse, print};
use optc_ir::{DType, Data, Graph, Op, Tensor, TensorType, Window};

fn t(shape: &[usize], d: Data) -> Tensor {
    Tensor::new(shape.to_vec(), d).unwrap()
}

fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    t(shape, Data::F32(v.to_vec()))
}

fn eval1(op: &Op, ins: &[&Tensor]) -> Tensor {
    eval_op(op, ins)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"))
        .remove(0)
}

struct Lcg(u64);

impl Lcg {
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + ((self.0 >> 33) % (hi - lo) as u64) as i64
    }
    fn tensor(&mut self, dt: DType, shape: &[usize]) -> Tensor {
        let n: usize = shape.iter().product();
        let d = match dt {
            DType::U8 => Data::U8((0..n).map(|_| self.int(0, 256) as u8).collect()),
            DType::I8 => Data::I8((0..n).map(|_| self.int(-128, 128) as i8).collect()),
            _ => unreachable!(),
        };
        t(shape, d)
    }
}

#[test]
fn quantize_linear_onnx_examples() {
    // QuantizeLinear's documented example: per tensor, u8.
    let x = f32s(&[6], &[0.0, 2.0, 3.0, 1000.0, -254.0, -1000.0]);
    let s = f32s(&[], &[2.0]);
    let z = t(&[], Data::U8(vec![128]));
    let y = eval1(&Op::QuantizeLinear { axis: 0 }, &[&x, &s, &z]);
    assert_eq!(y.data(), &Data::U8(vec![128, 129, 130, 255, 1, 0]));
    // Without a zero point: u8 with zero 0; halves round to even.
    let x = f32s(&[5], &[0.5, 1.5, 2.5, -0.5, 511.0]);
    let y = eval1(&Op::QuantizeLinear { axis: 0 }, &[&x, &f32s(&[], &[1.0])]);
    assert_eq!(y.data(), &Data::U8(vec![0, 2, 2, 0, 255]));
    // i8, NaN and infinities.
    let x = f32s(
        &[5],
        &[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -3.0, 3.0],
    );
    let z = t(&[], Data::I8(vec![-1]));
    let y = eval1(
        &Op::QuantizeLinear { axis: 0 },
        &[&x, &f32s(&[], &[2.0]), &z],
    );
    assert_eq!(y.data(), &Data::I8(vec![-128, 127, -128, -3, 1]));
    // Per axis (the documented axis example): x [1, 3, 3, 2], scale and zero point per channel.
    let x = f32s(
        &[1, 3, 3, 2],
        &[
            -162.0, 10.0, -100.0, 232.0, -20.0, -50.0, -76.0, 0.0, 0.0, 252.0, 32.0, -44.0, 245.0,
            485.0, -960.0, -270.0, -375.0, -470.0,
        ],
    );
    let s = f32s(&[3], &[2.0, 4.0, 5.0]);
    let z = t(&[3], Data::U8(vec![84, 24, 196]));
    let y = eval1(&Op::QuantizeLinear { axis: 1 }, &[&x, &s, &z]);
    assert_eq!(
        y.data(),
        &Data::U8(vec![
            3, 89, 34, 200, 74, 59, 5, 24, 24, 87, 32, 13, 245, 255, 4, 142, 121, 102
        ])
    );
}

#[test]
fn dequantize_linear_onnx_examples() {
    let x = t(&[4], Data::U8(vec![0, 3, 128, 255]));
    let y = eval1(
        &Op::DequantizeLinear { axis: 0 },
        &[&x, &f32s(&[], &[2.0]), &t(&[], Data::U8(vec![128]))],
    );
    assert_eq!(y.data(), &Data::F32(vec![-256.0, -250.0, 0.0, 254.0]));
    // Per axis: x [1, 3, 3, 2] u8.
    let x = t(
        &[1, 3, 3, 2],
        Data::U8(vec![
            3, 89, 34, 200, 74, 59, 5, 24, 24, 87, 32, 13, 245, 255, 4, 142, 121, 102,
        ]),
    );
    let s = f32s(&[3], &[2.0, 4.0, 5.0]);
    let z = t(&[3], Data::U8(vec![84, 24, 196]));
    let y = eval1(&Op::DequantizeLinear { axis: 1 }, &[&x, &s, &z]);
    // (485 saturated to 255 when quantized: 295)
    assert_eq!(
        y.data(),
        &Data::F32(vec![
            -162.0, 10.0, -100.0, 232.0, -20.0, -50.0, -76.0, 0.0, 0.0, 252.0, 32.0, -44.0, 245.0,
            295.0, -960.0, -270.0, -375.0, -470.0,
        ])
    );
    // Per axis without a zero point.
    let x = t(&[2, 2], Data::I8(vec![1, -2, 3, -4]));
    let y = eval1(
        &Op::DequantizeLinear { axis: 1 },
        &[&x, &f32s(&[2], &[0.5, 2.0])],
    );
    assert_eq!(y.data(), &Data::F32(vec![0.5, -4.0, 1.5, -8.0]));
    // i32 (a bias): no zero point; a large difference rounds once to f32.
    let x = t(&[3], Data::I32(vec![i32::MAX, -7, i32::MIN]));
    let y = eval1(&Op::DequantizeLinear { axis: 0 }, &[&x, &f32s(&[], &[0.5])]);
    assert_eq!(
        y.data(),
        &Data::F32(vec![1073741824.0, -3.5, -1073741824.0])
    );
}

#[test]
fn dynamic_quantize_linear_onnx_example() {
    let x = f32s(&[6], &[0.0, 2.0, -3.0, -2.5, 1.34, 0.5]);
    let r = eval_op(&Op::DynamicQuantizeLinear, &[&x]).unwrap();
    // ONNX divides: -2.5 / (5 / 255) = -127.49999 rounds to -127, + 153 = 26.
    assert_eq!(r[0].data(), &Data::U8(vec![153, 255, 0, 26, 221, 179]));
    assert_eq!(r[1].data(), &Data::F32(vec![5.0 / 255.0]));
    assert_eq!(r[2].data(), &Data::U8(vec![153]));
    assert_eq!(r[1].shape(), &[] as &[usize]);
}

#[test]
fn matmul_integer_onnx_example() {
    let a = t(
        &[4, 3],
        Data::U8(vec![11, 7, 3, 10, 6, 2, 9, 5, 1, 8, 4, 0]),
    );
    let b = t(&[3, 2], Data::U8(vec![1, 4, 2, 5, 3, 6]));
    let za = t(&[], Data::U8(vec![12]));
    let zb = t(&[], Data::U8(vec![0]));
    let y = eval1(&Op::MatMulInteger, &[&a, &b, &za, &zb]);
    assert_eq!(
        y.data(),
        &Data::I32(vec![-38, -83, -44, -98, -50, -113, -56, -128])
    );
}

/// `x` minus its zero point `z` (broadcast), as f32.
fn shifted(x: &Tensor, z: Option<&Tensor>) -> Tensor {
    let v = x.to_f64_vec();
    let zv: Vec<f64> = match z {
        None => vec![0.0; v.len()],
        Some(z) => {
            // broadcast z to x by evaluating a cast + expand in the interpreter
            let zf = eval1(&Op::Cast { to: DType::F32 }, &[z]);
            let e = eval1(
                &Op::Expand {
                    shape: x.shape().to_vec(),
                },
                &[&zf],
            );
            e.to_f64_vec()
        }
    };
    f32s(
        x.shape(),
        &v.iter()
            .zip(&zv)
            .map(|(a, b)| (a - b) as f32)
            .collect::<Vec<_>>(),
    )
}

fn as_i32(y: &Tensor) -> Tensor {
    eval1(&Op::Cast { to: DType::I32 }, &[y])
}

#[test]
fn matmul_integer_is_the_matmul_of_the_shifted_operands() {
    let mut r = Lcg(5);
    // (a shape, b shape, a zero shape, b zero shape)
    #[allow(clippy::type_complexity)]
    let cases: Vec<(
        Vec<usize>,
        Vec<usize>,
        Option<Vec<usize>>,
        Option<Vec<usize>>,
    )> = vec![
        (vec![4, 3], vec![3, 5], None, None),
        (vec![4, 3], vec![3, 5], Some(vec![]), Some(vec![])),
        (vec![4, 3], vec![3, 5], Some(vec![4, 1]), Some(vec![5])),
        (vec![2, 4, 7], vec![7, 3], Some(vec![1]), Some(vec![1, 3])),
        (
            vec![2, 1, 4, 7],
            vec![3, 7, 2],
            Some(vec![2, 1, 4, 1]),
            Some(vec![3, 1, 2]),
        ),
        (vec![7], vec![7, 3], Some(vec![]), Some(vec![3])),
        (vec![2, 7], vec![7], None, Some(vec![])),
        (vec![1, 33], vec![33, 17], Some(vec![]), Some(vec![17])),
    ];
    for (a_dt, b_dt) in [
        (DType::U8, DType::I8),
        (DType::U8, DType::U8),
        (DType::I8, DType::I8),
    ] {
        for (sa, sb, za, zb) in &cases {
            let a = r.tensor(a_dt, sa);
            let b = r.tensor(b_dt, sb);
            let za = za.as_ref().map(|s| r.tensor(a_dt, s));
            let zb_t = zb.as_ref().map(|s| r.tensor(b_dt, s));
            // an a-zero without a b-zero is written as a zero b-zero
            let zb = match (&za, zb_t) {
                (Some(_), None) => Some(Tensor::zeros(b_dt, vec![])),
                (_, z) => z,
            };
            let mut ins = vec![&a, &b];
            if let Some(z) = &za {
                ins.push(z);
            }
            if let Some(z) = &zb {
                if za.is_none() {
                    continue;
                }
                ins.push(z);
            }
            let y = eval1(&Op::MatMulInteger, &ins);
            let want = eval1(
                &Op::MatMul,
                &[&shifted(&a, za.as_ref()), &shifted(&b, zb.as_ref())],
            );
            assert_eq!(y.dtype(), DType::I32);
            assert_eq!(y, as_i32(&want), "{sa:?} x {sb:?} {a_dt}/{b_dt}");
        }
    }
}

fn window(k: &[usize], s: &[usize], p: &[usize], d: &[usize]) -> Window {
    Window {
        kernel: k.to_vec(),
        strides: s.to_vec(),
        pads: p.to_vec(),
        dilations: d.to_vec(),
        ceil_mode: false,
    }
}

#[test]
fn conv_integer_onnx_example() {
    let x = t(&[1, 1, 3, 3], Data::U8((2..11).collect()));
    let w = t(&[1, 1, 2, 2], Data::U8(vec![1; 4]));
    let z = t(&[], Data::U8(vec![1]));
    let op = Op::ConvInteger {
        window: window(&[2, 2], &[1, 1], &[0; 4], &[1, 1]),
        group: 1,
    };
    let y = eval1(&op, &[&x, &w, &z]);
    assert_eq!(y.data(), &Data::I32(vec![12, 16, 24, 28]));
    // With padding 1: padded cells are the zero point (they add nothing).
    let op = Op::ConvInteger {
        window: window(&[2, 2], &[1, 1], &[1; 4], &[1, 1]),
        group: 1,
    };
    let y = eval1(&op, &[&x, &w, &z]);
    assert_eq!(
        y.data(),
        &Data::I32(vec![1, 3, 5, 3, 5, 12, 16, 9, 11, 24, 28, 15, 7, 15, 17, 9])
    );
}

#[test]
fn conv_integer_is_the_conv_of_the_shifted_operands() {
    let mut r = Lcg(9);
    for (x_dt, w_dt) in [(DType::U8, DType::I8), (DType::I8, DType::U8)] {
        for (group, win, wz_per_channel) in [
            (1, window(&[3, 3], &[1, 1], &[1; 4], &[1, 1]), false),
            (2, window(&[3, 2], &[2, 1], &[1, 0, 2, 1], &[1, 2]), true),
            (4, window(&[3, 3], &[1, 1], &[1; 4], &[1, 1]), true),
            (1, window(&[3], &[2], &[1, 1], &[1]), true),
        ] {
            let nsp = win.nsp();
            let (c, m) = (4, 8);
            let mut xs = vec![2, c];
            xs.extend(std::iter::repeat_n(6, nsp));
            let mut ws = vec![m, c / group];
            ws.extend(&win.kernel);
            let x = r.tensor(x_dt, &xs);
            let w = r.tensor(w_dt, &ws);
            let xz = r.tensor(x_dt, &[]);
            let wz = r.tensor(w_dt, if wz_per_channel { &[8] } else { &[] });
            let op = Op::ConvInteger {
                window: win.clone(),
                group,
            };
            let y = eval1(&op, &[&x, &w, &xz, &wz]);
            // Independent: f32 conv of the shifted operands (padding of x - x_zero is 0).
            let wz_b = if wz_per_channel {
                let mut s = vec![m];
                s.extend(std::iter::repeat_n(1, ws.len() - 1));
                wz.reshaped(s).unwrap()
            } else {
                wz.clone()
            };
            let want = eval1(
                &Op::Conv {
                    window: win.clone(),
                    group,
                },
                &[&shifted(&x, Some(&xz)), &shifted(&w, Some(&wz_b))],
            );
            assert_eq!(y, as_i32(&want), "group {group} {win:?}");
        }
    }
}

#[test]
fn bad_inputs_are_errors_naming_the_problem() {
    let x = f32s(&[2, 3], &[0.0; 6]);
    let u = t(&[2, 3], Data::U8(vec![0; 6]));
    let s = f32s(&[], &[1.0]);
    let e = |op: Op, ins: &[&Tensor]| eval_op(&op, ins).unwrap_err().to_string();
    let q = || Op::QuantizeLinear { axis: 1 };
    assert!(e(q(), &[&u, &s]).contains("f32 input"));
    assert!(e(q(), &[&x, &f32s(&[2], &[1.0, 1.0])]).contains("one per index of axis 1"));
    assert!(e(Op::QuantizeLinear { axis: 2 }, &[&x, &s]).contains("axis 2 is out of range"));
    let zi = t(&[], Data::I32(vec![0]));
    assert!(e(q(), &[&x, &s, &zi]).contains("u8 or i8"));
    let z2 = t(&[2], Data::U8(vec![0, 0]));
    assert!(e(q(), &[&x, &s, &z2]).contains("the scale's shape"));
    let dq = Op::DequantizeLinear { axis: 0 };
    assert!(e(dq.clone(), &[&x, &s]).contains("u8, i8 or i32"));
    let zs = t(&[], Data::I8(vec![0]));
    assert!(e(dq, &[&u, &s, &zs]).contains("must be u8 like the input"));
    assert!(e(Op::DynamicQuantizeLinear, &[&u]).contains("f32 input"));
    let b = t(&[3, 4], Data::I8(vec![0; 12]));
    assert!(e(Op::MatMulInteger, &[&x, &b]).contains("a must be u8 or i8"));
    let za = t(&[3], Data::U8(vec![0; 3]));
    assert!(e(Op::MatMulInteger, &[&u, &b, &za]).contains("one per row"));
    let zb = t(&[3, 1], Data::I8(vec![0; 3]));
    let z0 = t(&[], Data::U8(vec![0]));
    assert!(e(Op::MatMulInteger, &[&u, &b, &z0, &zb]).contains("one per column"));
    let e2 = e(Op::MatMulInteger, &[&u, &u]);
    assert!(e2.contains("inner dims differ"), "{e2}");
}

#[test]
fn the_ops_round_trip_through_the_text_format() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, 2, 4, 4]));
    let s = g.add_const("s", f32s(&[2], &[0.5, 0.25]));
    let z = g.add_const("z", t(&[2], Data::I8(vec![3, -4])));
    let q = g
        .add("q", Op::QuantizeLinear { axis: 1 }, &[x, s, z])
        .unwrap();
    let d = g
        .add("d", Op::DequantizeLinear { axis: 1 }, &[q, s, z])
        .unwrap();
    let dq = g.add_node("dq", Op::DynamicQuantizeLinear, &[d]).unwrap();
    let w = g.add_const(
        "w",
        t(&[3, 2, 3, 3], Data::I8((0..54).map(|i| i - 27).collect())),
    );
    let c = g
        .add(
            "c",
            Op::ConvInteger {
                window: window(&[3, 3], &[1, 1], &[1; 4], &[1, 1]),
                group: 1,
            },
            &[dq[0], w, dq[2]],
        )
        .unwrap();
    let b = g.add_const("b", t(&[4, 5], Data::U8((0..20).collect())));
    let m = g.add("m", Op::MatMulInteger, &[dq[0], b, dq[2]]).unwrap();
    g.add_output("c", c);
    g.add_output("m", m);
    g.add_output("scale", dq[1]);
    g.verify().unwrap();
    let text = print(&g);
    for name in [
        "= quantize_linear(%x, %s, %z) {axis=1}",
        "= dequantize_linear(%q, %s, %z) {axis=1}",
        "= dynamic_quantize_linear(%d)",
        "= conv_integer(",
        "= matmul_integer(",
    ] {
        assert!(text.contains(name), "{name} missing from\n{text}");
    }
    let g2 = parse(&text, &g.consts).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&g2), text);
    let input = f32s(
        &[1, 2, 4, 4],
        &(0..32).map(|i| i as f32 * 0.3 - 4.0).collect::<Vec<_>>(),
    );
    assert_eq!(
        run(&g, std::slice::from_ref(&input)).unwrap(),
        run(&g2, &[input]).unwrap()
    );
}
