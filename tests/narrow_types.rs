//! ONNX float16, bfloat16, int16, uint16 and uint32: held widened, every produced value
//! rounded or wrapped back into its type (`optc_ir::narrow`). Oracle: the same arithmetic
//! in f64 / i128, rounded with `optc_ir::narrow`'s functions (tested exhaustively in
//! optc-ir) or wrapped by hand.

mod common;

use common::*;
use optc::{DType, Options, Tensor};
use optc_ir::narrow::round_to_half;
use optc_onnx::builder::{Attr as A, ModelBuilder};

const FLOAT16: i64 = 10;
const BFLOAT16: i64 = 16;
const INT16: i64 = 5;
const UINT16: i64 = 4;
const UINT32: i64 = 12;

/// A model whose inputs and output are declared with ONNX element type `code`, built by
/// casting f32 / i64 inputs (the builder's types) to it.
fn typed_model(code: i64, wide: DType, op: &str, n: usize) -> Vec<u8> {
    let mut b = ModelBuilder::new(17);
    b.input("a", wide, &[n as i64])
        .input("b", wide, &[n as i64]);
    b.node("Cast", &["a"], &["an"], vec![("to", A::Int(code))]);
    b.node("Cast", &["b"], &["bn"], vec![("to", A::Int(code))]);
    b.node(op, &["an", "bn"], &["y"], vec![]);
    b.output("y");
    b.to_bytes()
}

fn run(bytes: &[u8], inputs: &[Tensor]) -> Tensor {
    let mut m = optc::compile_bytes(bytes, &Options::default()).unwrap();
    m.run(inputs).unwrap().remove(0)
}

#[test]
fn half_precision_arithmetic_rounds_every_result() {
    let n = 300;
    let mut r = Rng::new(1);
    let a = r.tensor(&[n], -70.0, 70.0);
    let b = r.tensor(&[n], -3.0, 3.0);
    for (code, bfloat) in [(FLOAT16, false), (BFLOAT16, true)] {
        for op in ["Add", "Mul", "Div", "Sub"] {
            let y = run(
                &typed_model(code, DType::F32, op, n),
                &[a.clone(), b.clone()],
            );
            let want: Vec<f64> = a
                .to_f64_vec()
                .iter()
                .zip(b.to_f64_vec())
                .map(|(&x, z)| {
                    let (x, z) = (
                        round_to_half(x as f32, bfloat),
                        round_to_half(z as f32, bfloat),
                    );
                    let v = match op {
                        "Add" => x + z,
                        "Mul" => x * z,
                        "Div" => x / z,
                        _ => x - z,
                    };
                    round_to_half(v, bfloat) as f64
                })
                .collect();
            assert_eq!(y.to_f64_vec(), want, "{op} bfloat={bfloat}");
        }
    }
}

#[test]
fn float16_overflows_to_infinity_and_casts_back_exactly() {
    let x = Tensor::from_f32(vec![4], vec![60000.0, 1.0e-7, 3.0e-8, 1.0 / 3.0]).unwrap();
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[4]);
    b.node("Cast", &["x"], &["h"], vec![("to", A::Int(FLOAT16))]);
    b.node("Add", &["h", "h"], &["s"], vec![]);
    b.node("Cast", &["s"], &["y"], vec![("to", A::Int(1))]);
    b.output("y");
    let y = run(&b.to_bytes(), &[x]).to_f64_vec();
    // 120000 > 65504: inf; 1e-7 is 2^-24 * 1.68 -> 2 * 2^-24 -> sum 4 * 2^-24;
    // 3e-8 rounds to 2^-24 (0.5 ulp * 1.006) -> 2^-23; 1/3 -> 0.33325195 -> 0.6665039
    let ulp = 2f64.powi(-24);
    assert_eq!(y[0], f64::INFINITY);
    assert_eq!(y[1], 4.0 * ulp);
    assert_eq!(y[2], 2.0 * ulp);
    assert_eq!(y[3], 2.0 * 0.333_251_953_125);
}

#[test]
fn narrow_integers_wrap() {
    let a = Tensor::from_i64(vec![4], vec![30000, -30000, 65535, 4_000_000_000]).unwrap();
    let b = Tensor::from_i64(vec![4], vec![10000, -10000, 2, 500_000_000]).unwrap();
    type Wrap = fn(i128) -> i64;
    let cases: [(i64, &str, Wrap); 4] = [
        (INT16, "Add", |v| v as i16 as i64),
        (UINT16, "Mul", |v| v as u16 as i64),
        (UINT32, "Add", |v| v as u32 as i64),
        (UINT32, "Mul", |v| v as u32 as i64),
    ];
    for (code, op, wrap) in cases {
        let y = run(
            &typed_model(code, DType::I64, op, 4),
            &[a.clone(), b.clone()],
        );
        let want: Vec<i64> = a
            .to_i64_vec()
            .iter()
            .zip(b.to_i64_vec())
            .map(|(&x, z)| {
                let (x, z) = (wrap(x as i128) as i128, wrap(z as i128) as i128);
                wrap(if op == "Add" { x + z } else { x * z })
            })
            .collect();
        assert_eq!(y.to_i64_vec(), want, "{op} type {code}");
    }
}

#[test]
fn narrow_tensors_round_trip_through_tensor_protos() {
    let halfs = Tensor::from_f32(vec![3], vec![1.5, -65504.0, 2f32.powi(-24)]).unwrap();
    let ints = Tensor::from_i64(vec![3], vec![-32768, 0, 32767]).unwrap();
    let uints = Tensor::from_i64(vec![2], vec![0, 4_294_967_295]).unwrap();
    for (t, code) in [
        (&halfs, FLOAT16),
        (&halfs, BFLOAT16),
        (&ints, INT16),
        (&ints.clone(), UINT16),
        (&uints, UINT32),
    ] {
        let pb = optc_onnx::tensor_to_pb_as(t, "t", code as i32).unwrap();
        let back = optc_onnx::tensor_from_pb(&pb).unwrap();
        let want: Vec<f64> = match code {
            UINT16 => t
                .to_f64_vec()
                .iter()
                .map(|&v| (v as i64) as u16 as f64)
                .collect(),
            // bfloat16 holds 65504 as 65536
            BFLOAT16 => t
                .to_f64_vec()
                .iter()
                .map(|&v| round_to_half(v as f32, true) as f64)
                .collect(),
            _ => t.to_f64_vec(),
        };
        assert_eq!(back.to_f64_vec(), want, "type {code}");
    }
}

const UINT64: i64 = 13;

#[test]
fn uint64_orders_by_its_unsigned_value() {
    // the bits of 1, 2^63 + 5, 2^64 - 1 and of 2^63, 3, 2^64 - 2
    let a = Tensor::from_i64(vec![3], vec![1, i64::MIN + 5, -1]).unwrap();
    let b = Tensor::from_i64(vec![3], vec![i64::MIN, 3, -2]).unwrap();
    let mut m = ModelBuilder::new(17);
    m.input("a", DType::I64, &[3]).input("b", DType::I64, &[3]);
    m.node("Cast", &["a"], &["au"], vec![("to", A::Int(UINT64))]);
    m.node("Cast", &["b"], &["bu"], vec![("to", A::Int(UINT64))]);
    m.node("Greater", &["au", "bu"], &["g"], vec![]);
    m.node("Max", &["au", "bu"], &["mx"], vec![]);
    m.node("Add", &["au", "bu"], &["s"], vec![]);
    m.node("ArgMax", &["au"], &["i"], vec![("keepdims", A::Int(0))]);
    m.output("g").output("mx").output("s").output("i");
    let mut c = optc::compile_bytes(&m.to_bytes(), &Options::default()).unwrap();
    let y = c.run(&[a.clone(), b.clone()]).unwrap();
    let (ua, ub): (Vec<u64>, Vec<u64>) = (
        a.to_i64_vec().iter().map(|&v| v as u64).collect(),
        b.to_i64_vec().iter().map(|&v| v as u64).collect(),
    );
    let greater: Vec<f64> = ua
        .iter()
        .zip(&ub)
        .map(|(x, z)| (x > z) as u8 as f64)
        .collect();
    assert_eq!(y[0].to_f64_vec(), greater);
    let max: Vec<i64> = ua.iter().zip(&ub).map(|(x, z)| *x.max(z) as i64).collect();
    assert_eq!(y[1].to_i64_vec(), max);
    let sum: Vec<i64> = ua
        .iter()
        .zip(&ub)
        .map(|(x, z)| x.wrapping_add(*z) as i64)
        .collect();
    assert_eq!(y[2].to_i64_vec(), sum);
    assert_eq!(y[3].to_i64_vec(), vec![2]);
    // Division would read the bits as signed: refused, naming the node.
    let mut m = ModelBuilder::new(17);
    m.input("a", DType::I64, &[3]);
    m.node("Cast", &["a"], &["au"], vec![("to", A::Int(UINT64))]);
    m.node_named("halve", "Div", &["au", "au"], &["y"], vec![]);
    m.output("y");
    let e = optc::compile_bytes(&m.to_bytes(), &Options::default())
        .err()
        .expect("Div on uint64")
        .to_string();
    assert!(e.contains("'halve'") && e.contains("uint64"), "{e}");
}

/// A float16 scatter that adds computes new values: they are rounded back to float16.
#[test]
fn half_scatter_add_rounds() {
    let mut r = Rng::new(5);
    let data = r.tensor(&[6], -70.0, 70.0);
    let upd = r.tensor(&[3], -3.0, 3.0);
    let mut b = ModelBuilder::new(18);
    b.input("d", DType::F32, &[6]).input("u", DType::F32, &[3]);
    b.initializer("i", &Tensor::from_i64(vec![3], vec![4, 0, -1]).unwrap());
    b.node("Cast", &["d"], &["dn"], vec![("to", A::Int(FLOAT16))]);
    b.node("Cast", &["u"], &["un"], vec![("to", A::Int(FLOAT16))]);
    b.node(
        "ScatterElements",
        &["dn", "i", "un"],
        &["y"],
        vec![("reduction", A::Str("add".into()))],
    );
    b.output("y");
    let y = run(&b.to_bytes(), &[data.clone(), upd.clone()]);
    let h = |v: f64| round_to_half(v as f32, false) as f64;
    let mut want: Vec<f64> = data.to_f64_vec().iter().map(|&v| h(v)).collect();
    for (k, &at) in [4usize, 0, 5].iter().enumerate() {
        let u = h(upd.to_f64_vec()[k]);
        want[at] = h(want[at] + u);
    }
    assert_eq!(y.to_f64_vec(), want);
}
