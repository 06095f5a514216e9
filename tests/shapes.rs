//! Shapes (and values) taken from the data: a model with dynamic dims compiles once per
//! distinct set of input shapes it runs with and keeps the variants in a small LRU cache;
//! an input a node needs as a constant (an `If` condition, a loop's trip count) compiles
//! one variant per value, and a variant is never reused for another value. Oracle: tract
//! on the original model; for the control flow tract cannot run (branches of different
//! shapes, loops), the spec's arithmetic written out by hand.

mod common;

use common::*;
use optc::{DType, Data, Options, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use optc_onnx::oracle::run_tract;

/// y = relu(x @ w), x: [batch, 16].
fn dynamic_mlp() -> Vec<u8> {
    let mut r = Rng::new(11);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[-1, 16])
        .initializer("w", &r.tensor(&[16, 8], -1.0, 1.0))
        .node("MatMul", &["x", "w"], &["h"], vec![])
        .node("Relu", &["h"], &["y"], vec![])
        .output("y");
    b.to_bytes()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let d = optc::compare(got, want, RTOL, ATOL).unwrap();
    assert!(d.allclose, "{what}: {d:?}");
}

fn input_error(m: &mut optc::CompiledModel, inputs: &[Tensor]) -> String {
    match m.run(inputs) {
        Ok(_) => panic!("the run should fail"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn each_new_shape_compiles_once_and_is_cached() {
    let bytes = dynamic_mlp();
    let mut m = optc::compile_bytes(&bytes, &Options::default()).unwrap();
    // Nothing to compile for until the first run.
    assert_eq!(m.compile_count(), 0);
    assert!(m.compiled_shapes().is_empty() && m.input_types().is_empty());
    let declared = m.declared_inputs().unwrap();
    assert!(!declared[0].is_static());
    assert!(declared[0].admits(DType::F32, &[9, 16]) && !declared[0].admits(DType::F32, &[9, 15]));
    let mut r = Rng::new(1);
    for (batch, compiles) in [(3, 1), (5, 2), (3, 2), (5, 2), (1, 3), (3, 3)] {
        let x = r.tensor(&[batch, 16], -1.0, 1.0);
        let y = m.run(std::slice::from_ref(&x)).unwrap();
        let want = run_tract(&bytes, &[x]).unwrap();
        assert_close(&y[0], &want[0], &format!("batch {batch}"));
        assert_eq!(m.compile_count(), compiles, "batch {batch}");
        assert_eq!(m.input_types()[0].shape, vec![batch, 16]);
        assert_eq!(m.output_types()[0].shape, vec![batch, 8]);
    }
    assert_eq!(
        m.compiled_shapes(),
        vec![vec![vec![3, 16]], vec![vec![1, 16]], vec![vec![5, 16]]]
    );
}

#[test]
fn the_least_recently_used_variant_is_dropped() {
    let bytes = dynamic_mlp();
    let opts = Options {
        shape_cache: 2,
        ..Options::default()
    };
    let mut m = optc::compile_bytes(&bytes, &opts).unwrap();
    let mut r = Rng::new(2);
    for (batch, compiles) in [(1, 1), (2, 2), (1, 2), (3, 3), (1, 3), (2, 4)] {
        let x = r.tensor(&[batch, 16], -1.0, 1.0);
        let y = m.run(std::slice::from_ref(&x)).unwrap();
        assert_close(&y[0], &run_tract(&bytes, &[x]).unwrap()[0], "run");
        assert_eq!(m.compile_count(), compiles, "batch {batch}");
        assert!(m.compiled_shapes().len() <= 2);
    }
    assert_eq!(
        m.compiled_shapes(),
        vec![vec![vec![2, 16]], vec![vec![1, 16]]]
    );
}

#[test]
fn given_shapes_compile_at_once_and_others_still_run() {
    let bytes = dynamic_mlp();
    let mut opts = Options::default();
    opts.input_shapes.insert("x".into(), vec![4, 16]);
    let mut m = optc::compile_bytes(&bytes, &opts).unwrap();
    assert_eq!(m.compile_count(), 1);
    assert_eq!(m.input_types()[0].shape, vec![4, 16]);
    let x = Rng::new(3).tensor(&[6, 16], -1.0, 1.0);
    let y = m.run(std::slice::from_ref(&x)).unwrap();
    assert_close(&y[0], &run_tract(&bytes, &[x]).unwrap()[0], "batch 6");
    assert_eq!(m.compile_count(), 2);
}

#[test]
fn shapes_and_types_the_model_forbids_are_refused_naming_the_input() {
    let bytes = dynamic_mlp();
    let mut m = optc::compile_bytes(&bytes, &Options::default()).unwrap();
    let mut r = Rng::new(4);
    for bad in [
        r.tensor(&[3, 15], -1.0, 1.0),
        r.tensor(&[3, 16, 1], -1.0, 1.0),
        r.tensor_i64(&[3, 16], 0, 5),
    ] {
        let e = input_error(&mut m, &[bad]);
        assert!(e.contains("input 'x'") && e.contains(",16]"), "{e}");
    }
    let e = input_error(&mut m, &[]);
    assert!(e.contains("takes 1 input"), "{e}");
    assert_eq!(m.compile_count(), 0, "nothing compiled for refused inputs");
    // A static model refuses other shapes the same way.
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2, 3])
        .node("Relu", &["x"], &["y"], vec![])
        .output("y");
    let mut m = optc::compile_bytes(&b.to_bytes(), &Options::default()).unwrap();
    let e = input_error(&mut m, &[r.tensor(&[3, 2], -1.0, 1.0)]);
    assert!(e.contains("input 'x'") && e.contains("[2,3]"), "{e}");
    assert_eq!(m.compile_count(), 1);
}

/// `If` over branches of different shapes: x itself ([2, 3]) or its sum ([1, 1]), chosen
/// by the input `c`.
fn choose() -> Vec<u8> {
    let mut t = ModelBuilder::new(13);
    t.node("Identity", &["x"], &["t0"], vec![])
        .output_typed("t0", DType::F32, &[2, 3]);
    let mut e = ModelBuilder::new(13);
    e.node("ReduceSum", &["x"], &["e0"], vec![])
        .output_typed("e0", DType::F32, &[1, 1]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .input("c", DType::Bool, &[])
        .node_named(
            "choose",
            "If",
            &["c"],
            &["y"],
            vec![
                ("then_branch", Attr::Graph(Box::new(t))),
                ("else_branch", Attr::Graph(Box::new(e))),
            ],
        )
        .output("y");
    m.to_bytes()
}

fn flag(v: bool) -> Tensor {
    Tensor::new(vec![], Data::Bool(vec![v])).unwrap()
}

/// What `choose` computes, by hand: x, or the sum of x as a [1, 1] tensor.
fn chosen(x: &Tensor, c: bool) -> Tensor {
    if c {
        x.clone()
    } else {
        let sum: f64 = x.to_f64_vec().iter().sum();
        Tensor::from_f32(vec![1, 1], vec![sum as f32]).unwrap()
    }
}

#[test]
fn a_condition_on_an_input_compiles_one_variant_per_value() {
    let mut m = optc::compile_bytes(&choose(), &Options::default()).unwrap();
    let waits = m.waits_for_values().expect("the compile waits for c");
    assert_eq!(waits.needs_values(), ["c".to_string()]);
    assert!(waits.to_string().contains("'choose'"), "{waits}");
    let x = Rng::new(5).tensor(&[2, 3], -1.0, 1.0);
    for (c, compiles) in [(true, 1), (false, 2), (true, 2), (false, 2)] {
        let y = m.run(&[x.clone(), flag(c)]).unwrap();
        assert_close(&y[0], &chosen(&x, c), &format!("c = {c}"));
        assert_eq!(m.compile_count(), compiles, "c = {c}");
    }
}

#[test]
fn a_value_bound_at_compile_time_is_never_reused_for_another() {
    let mut opts = Options::default();
    opts.input_values.insert("c".into(), flag(true));
    let mut m = optc::compile_bytes(&choose(), &opts).unwrap();
    assert_eq!(m.compile_count(), 1);
    assert!(m.waits_for_values().is_none());
    let x = Rng::new(6).tensor(&[2, 3], -1.0, 1.0);
    let y = m.run(&[x.clone(), flag(false)]).unwrap();
    assert_close(
        &y[0],
        &chosen(&x, false),
        "c = false after compiling for c = true",
    );
    assert_eq!(m.compile_count(), 2);
}

/// acc = start + sum over i < trips of x * i, trips an input.
fn repeat() -> Vec<u8> {
    let mut body = ModelBuilder::new(13);
    body.input("i", DType::I64, &[])
        .input("cond_in", DType::Bool, &[])
        .input("acc_in", DType::F32, &[3])
        .node("Cast", &["i"], &["fi"], vec![("to", Attr::Int(1))])
        .node("Mul", &["x", "fi"], &["xi"], vec![])
        .node("Add", &["acc_in", "xi"], &["acc_out"], vec![])
        .node("Identity", &["cond_in"], &["cond_out"], vec![])
        .output_typed("cond_out", DType::Bool, &[])
        .output_typed("acc_out", DType::F32, &[3]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .input("trips", DType::I64, &[])
        .initializer(
            "start",
            &Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
        )
        .node(
            "Loop",
            &["trips", "", "start"],
            &["acc"],
            vec![("body", Attr::Graph(Box::new(body)))],
        )
        .output("acc");
    m.to_bytes()
}

#[test]
fn a_trip_count_given_at_run_time_compiles_per_count() {
    let mut m = optc::compile_bytes(&repeat(), &Options::default()).unwrap();
    assert_eq!(
        m.waits_for_values().map(|e| e.needs_values().to_vec()),
        Some(vec!["trips".to_string()])
    );
    let x = Rng::new(7).tensor(&[3], -1.0, 1.0);
    for n in [4, 0, 4, 9] {
        let y = m.run(&[x.clone(), Tensor::scalar_i64(n)]).unwrap();
        // start + x * (0 + 1 + ... + n-1)
        let steps = (n * (n - 1) / 2) as f64;
        let want: Vec<f32> = [1.0, 2.0, 3.0]
            .iter()
            .zip(x.to_f64_vec())
            .map(|(s, v)| (s + v * steps) as f32)
            .collect();
        let want = Tensor::from_f32(vec![3], want).unwrap();
        assert_close(&y[0], &want, &format!("{n} trips"));
    }
    assert_eq!(m.compile_count(), 3);
}

#[test]
fn unsupported_ops_of_a_model_compiled_later_are_reported_at_once() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[-1, 4])
        .node_named("u", "Unique", &["x"], &["y"], vec![])
        .output("y");
    let e = optc::compile_bytes(&b.to_bytes(), &Options::default())
        .err()
        .expect("Unique is not supported")
        .to_string();
    assert!(e.contains("Unique") && e.contains("u"), "{e}");
}
