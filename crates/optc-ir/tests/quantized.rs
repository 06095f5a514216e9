//! The quantized contractions' semantics (`optc_ir::quantized`): the activation parameters
//! follow ONNX `DynamicQuantizeLinear`, and the results agree with the f32 `matmul` / `conv`
//! of the dequantized operands (an independent computation) up to f32 rounding.

use optc_ir::interp::eval_op;
use optc_ir::{
    ActivationQuantization as A, DType, Data, FusedStep, Op, QuantParams, Tensor, UnaryOp, Window,
};

fn lcg(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn i8s(seed: u64, n: usize) -> Vec<i8> {
    lcg(seed, n)
        .iter()
        .map(|v| (v * 127.0).round() as i8)
        .collect()
}

fn tensor(shape: &[usize], d: Data) -> Tensor {
    Tensor::new(shape.to_vec(), d).unwrap()
}

#[test]
fn dynamic_parameters_follow_dynamic_quantize_linear() {
    // ONNX DynamicQuantizeLinear's own example: x = [0, 2, -3, -2.5, 1.34, 0.5].
    let p = QuantParams::dynamic(&[0.0, 2.0, -3.0, -2.5, 1.34, 0.5]);
    assert_eq!(p.scale, 5.0 / 255.0);
    assert_eq!(p.zero, 153);
    let inv = p.inverse();
    let q: Vec<u8> = [0.0, 2.0, -3.0, -2.5, 1.34, 0.5]
        .iter()
        .map(|&v| p.quantize(v, inv))
        .collect();
    // ONNX divides (-2.5 / scale rounds to -127.49999 -> 26); the quantized ops multiply by
    // the f32 reciprocal (-2.5 * 51 = -127.5, half to even -> 25): part of their definition.
    assert_eq!(q, [153, 255, 0, 25, 221, 179]);
    assert_eq!(inv, 51.0);
    // The range always holds 0; an all-zero tensor gets scale 1.
    let p = QuantParams::dynamic(&[1.0, 3.0]);
    assert_eq!((p.scale, p.zero), (3.0 / 255.0, 0));
    let p = QuantParams::dynamic(&[-1.0, -3.0]);
    assert_eq!((p.scale, p.zero), (3.0 / 255.0, 255));
    assert_eq!(QuantParams::dynamic(&[0.0, 0.0]).scale, 1.0);
    // NaNs are ignored by the range and quantize to 0; out-of-range values saturate; halves
    // round to even.
    let p = QuantParams::dynamic(&[f32::NAN, -1.0, 1.0]);
    assert_eq!((p.scale, p.zero), (2.0 / 255.0, 127));
    let q = QuantParams {
        scale: 1.0,
        zero: 10,
    };
    assert_eq!(q.quantize(f32::NAN, 1.0), 0);
    assert_eq!(q.quantize(1e9, 1.0), 255);
    assert_eq!(q.quantize(-1e9, 1.0), 0);
    assert_eq!(q.quantize(2.5, 1.0), 12);
    assert_eq!(q.quantize(3.5, 1.0), 14);
}

/// `(q - zero) * scale`: the activation as the quantized op sees it.
fn dequantized(x: &[f32], p: QuantParams) -> Vec<f32> {
    let inv = p.inverse();
    x.iter()
        .map(|&v| (p.quantize(v, inv) as f32 - p.zero as f32) * p.scale)
        .collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    let range = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * range.max(1.0),
            "{what}: element {i}: {g} vs {w}"
        );
    }
}

#[test]
fn quantized_matmul_is_the_matmul_of_the_dequantized_operands() {
    for (seed, m, k, n) in [(1u64, 4, 7, 5), (2, 1, 16, 3), (3, 9, 33, 17)] {
        let x = lcg(seed, m * k).iter().map(|v| v * 3.0).collect::<Vec<_>>();
        let w = i8s(seed + 100, k * n);
        let ws: Vec<f32> = (0..n).map(|j| 0.01 + 0.001 * j as f32).collect();
        let bias: Vec<f32> = lcg(seed + 200, n);
        for act in [A::Dynamic, A::Static] {
            let p = match act {
                A::Dynamic => QuantParams::dynamic(&x),
                A::Static => QuantParams {
                    scale: 0.02,
                    zero: 120,
                },
            };
            let mut ins = vec![
                tensor(&[m, k], Data::F32(x.clone())),
                tensor(&[k, n], Data::I8(w.clone())),
                tensor(&[n], Data::F32(ws.clone())),
            ];
            if act == A::Static {
                ins.push(tensor(&[], Data::F32(vec![p.scale])));
                ins.push(tensor(&[], Data::U8(vec![p.zero])));
            }
            ins.push(tensor(&[n], Data::F32(bias.clone())));
            let refs: Vec<&Tensor> = ins.iter().collect();
            let got = eval_op(&Op::QuantizedMatMul { activation: act }, &refs).unwrap();
            assert_eq!(got[0].shape(), &[m, n]);
            // Independent: f32 matmul of the dequantized operands, plus the bias.
            let xd = tensor(&[m, k], Data::F32(dequantized(&x, p)));
            let wd: Vec<f32> = (0..k * n).map(|i| w[i] as f32 * ws[i % n]).collect();
            let wd = tensor(&[k, n], Data::F32(wd));
            let want = eval_op(&Op::MatMul, &[&xd, &wd]).unwrap();
            let want: Vec<f32> = want[0]
                .as_f32()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, v)| v + bias[i % n])
                .collect();
            assert_close(
                got[0].as_f32().unwrap(),
                &want,
                &format!("{act:?} {m}x{k}x{n}"),
            );
        }
    }
}

#[test]
fn quantized_conv_is_the_conv_of_the_dequantized_operands() {
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![2, 1],
        pads: vec![1, 0, 1, 2],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    for group in [1, 2] {
        let (n, c, h, wd, m) = (2, 4, 6, 5, 6);
        let x = lcg(7, n * c * h * wd);
        let wshape = [m, c / group, 3, 3];
        let wn: usize = wshape.iter().product();
        let w = i8s(8, wn);
        let ws: Vec<f32> = (0..m).map(|j| 0.02 - 0.001 * j as f32).collect();
        let p = QuantParams::dynamic(&x);
        let ins = [
            tensor(&[n, c, h, wd], Data::F32(x.clone())),
            tensor(&wshape, Data::I8(w.clone())),
            tensor(&[m], Data::F32(ws.clone())),
        ];
        let refs: Vec<&Tensor> = ins.iter().collect();
        let op = Op::QuantizedConv {
            window: window.clone(),
            group,
            activation: A::Dynamic,
        };
        let got = eval_op(&op, &refs).unwrap();
        let xd = tensor(&[n, c, h, wd], Data::F32(dequantized(&x, p)));
        let per = wn / m;
        let wf: Vec<f32> = (0..wn).map(|i| w[i] as f32 * ws[i / per]).collect();
        let wf = tensor(&wshape, Data::F32(wf));
        let want = eval_op(
            &Op::Conv {
                window: window.clone(),
                group,
            },
            &[&xd, &wf],
        )
        .unwrap();
        assert_eq!(got[0].shape(), want[0].shape());
        assert_close(got[0].as_f32().unwrap(), want[0].as_f32().unwrap(), "conv");
    }
}

#[test]
fn quantized_ops_check_their_inputs() {
    let x = tensor(&[2, 3], Data::F32(vec![0.0; 6]));
    let wf = tensor(&[3, 4], Data::F32(vec![0.0; 12]));
    let w = tensor(&[3, 4], Data::I8(vec![0; 12]));
    let ws = tensor(&[4], Data::F32(vec![1.0; 4]));
    let ws3 = tensor(&[3], Data::F32(vec![1.0; 3]));
    let op = Op::QuantizedMatMul {
        activation: A::Dynamic,
    };
    let e = |ins: &[&Tensor]| eval_op(&op, ins).unwrap_err().to_string();
    assert!(e(&[&x, &wf, &ws]).contains("i8 weights"));
    assert!(e(&[&x, &w, &ws3]).contains("one per output channel"));
    assert!(e(&[&w, &w, &ws]).contains("f32 activations"));
    let st = Op::QuantizedMatMul {
        activation: A::Static,
    };
    let e = eval_op(&st, &[&x, &w, &ws]).unwrap_err().to_string();
    assert!(e.contains("takes 5 or 6 inputs"), "{e}");
    // A static scale that is not positive is refused when run.
    let xs = tensor(&[], Data::F32(vec![0.0]));
    let xz = tensor(&[], Data::U8(vec![0]));
    let e = eval_op(&st, &[&x, &w, &ws, &xs, &xz])
        .unwrap_err()
        .to_string();
    assert!(e.contains("positive"), "{e}");
}

/// `quantize_activation` is step 2 of the quantized contractions (`QuantParams::quantize`,
/// the reciprocal, ties to even, NaN to 0, clamped), f32 to u8; it checks its parameters.
#[test]
fn quantize_activation_is_the_contractions_quantization() {
    let p = QuantParams {
        scale: 0.05,
        zero: 131,
    };
    let mut x = lcg(3, 200);
    x.iter_mut().for_each(|v| *v *= 12.0);
    // Ties under the reciprocal (2.5 and -0.5 steps), infinities, NaN, signed zeros.
    x.extend([
        0.125,
        -0.025,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -0.0,
    ]);
    let op = Op::Unary(UnaryOp::QuantizeActivation {
        scale: p.scale,
        zero: p.zero as f32,
    });
    let xt = tensor(&[x.len()], Data::F32(x.clone()));
    let got = eval_op(&op, &[&xt]).unwrap().remove(0);
    let inv = p.inverse();
    let want: Vec<u8> = x.iter().map(|&v| p.quantize(v, inv)).collect();
    assert_eq!(got.data(), &Data::U8(want));
    // By hand: 0.125 / 0.05 = 2.5 -> 2 (even) + 131; infinities clamp; NaN gives 0.
    let Data::U8(q) = got.data() else { panic!() };
    assert_eq!(&q[200..], &[133, 131, 255, 0, 0, 131]);
    let bad = |u: UnaryOp, x: &Tensor| eval_op(&Op::Unary(u), &[x]).unwrap_err().to_string();
    let qa = |scale, zero| UnaryOp::QuantizeActivation { scale, zero };
    assert!(bad(qa(0.0, 1.0), &xt).contains("positive"));
    assert!(bad(qa(0.1, 1.5), &xt).contains("zero point"));
    assert!(bad(qa(0.1, 256.0), &xt).contains("zero point"));
    let xi = tensor(&[2], Data::I64(vec![1, 2]));
    assert!(bad(qa(0.1, 1.0), &xi).contains("needs f32"));
}

/// A static contraction's u8 activation is already quantized: the same result as its f32
/// activation through `quantize_activation`. A fused node may end with that step (its
/// output u8) and only end with it; a dynamic contraction refuses a u8 activation.
#[test]
fn quantized_activations_hand_off_as_bytes() {
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1, 1, 1, 1],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let (n, c, h, wd, m) = (1, 4, 5, 6, 3);
    let x: Vec<f32> = lcg(11, n * c * h * wd).iter().map(|v| v * 4.0).collect();
    let p = QuantParams {
        scale: 0.03,
        zero: 17,
    };
    let w = tensor(&[m, c, 3, 3], Data::I8(i8s(12, m * c * 9)));
    let ws = tensor(&[m], Data::F32(vec![0.01, 0.02, 0.03]));
    let xs = tensor(&[], Data::F32(vec![p.scale]));
    let xz = tensor(&[], Data::U8(vec![p.zero]));
    let xf = tensor(&[n, c, h, wd], Data::F32(x.clone()));
    let inv = p.inverse();
    let xq = tensor(
        &[n, c, h, wd],
        Data::U8(x.iter().map(|&v| p.quantize(v, inv)).collect()),
    );
    let conv = Op::QuantizedConv {
        window,
        group: 1,
        activation: A::Static,
    };
    let from_f32 = eval_op(&conv, &[&xf, &w, &ws, &xs, &xz]).unwrap();
    let from_u8 = eval_op(&conv, &[&xq, &w, &ws, &xs, &xz]).unwrap();
    assert_eq!(from_f32[0].data(), from_u8[0].data());
    // The f32 result differs when the bytes are quantized otherwise (the test can fail).
    let other = tensor(
        &[n, c, h, wd],
        Data::U8(
            x.iter()
                .map(|&v| p.quantize(v, inv).saturating_add(1))
                .collect(),
        ),
    );
    let shifted = eval_op(&conv, &[&other, &w, &ws, &xs, &xz]).unwrap();
    assert_ne!(shifted[0].data(), from_f32[0].data());
    // A fused relu then quantize_activation: u8, the unfused ops' bytes.
    let quantize = UnaryOp::QuantizeActivation {
        scale: p.scale,
        zero: p.zero as f32,
    };
    let fused = Op::Fused {
        base: Box::new(conv.clone()),
        base_inputs: 5,
        steps: vec![
            FusedStep::Unary(UnaryOp::Relu),
            FusedStep::Unary(quantize.clone()),
        ],
    };
    let y = eval_op(&fused, &[&xf, &w, &ws, &xs, &xz])
        .unwrap()
        .remove(0);
    let relu = eval_op(&Op::Unary(UnaryOp::Relu), &[&from_f32[0]]).unwrap();
    let want = eval_op(&Op::Unary(quantize.clone()), &[&relu[0]]).unwrap();
    assert_eq!(y.dtype(), DType::U8);
    assert_eq!(y.data(), want[0].data());
    let early = Op::Fused {
        base: Box::new(conv),
        base_inputs: 5,
        steps: vec![FusedStep::Unary(quantize), FusedStep::Unary(UnaryOp::Relu)],
    };
    let e = eval_op(&early, &[&xf, &w, &ws, &xs, &xz])
        .unwrap_err()
        .to_string();
    assert!(e.contains("changes the type"), "{e}");
    let dynamic = Op::QuantizedConv {
        window: Window {
            kernel: vec![1, 1],
            strides: vec![1, 1],
            pads: vec![0; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
        },
        group: 1,
        activation: A::Dynamic,
    };
    let w1 = tensor(&[m, c, 1, 1], Data::I8(vec![1; m * c]));
    let e = eval_op(&dynamic, &[&xq, &w1, &ws]).unwrap_err().to_string();
    assert!(e.contains("static"), "{e}");
}
