//! Bad input gives a clear error naming the node and the problem: never a panic, never
//! wrong output.

mod common;

use common::*;
use optc::{DType, Options, Tensor};
use optc_onnx::builder::{Attr as A, ModelBuilder};

fn small_model() -> Vec<u8> {
    let mut r = Rng::new(7);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 3, 8, 8]);
    b.initializer("w", &r.tensor(&[4, 3, 3, 3], -1.0, 1.0));
    b.node_named(
        "conv0",
        "Conv",
        &["x", "w"],
        &["c"],
        vec![("pads", A::Ints(vec![1; 4]))],
    );
    b.node_named("relu0", "Relu", &["c"], &["y"], vec![]);
    b.output("y");
    b.to_bytes()
}

fn compile_err(bytes: &[u8], opts: &Options) -> String {
    match optc::compile_bytes(bytes, opts) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn truncated_file_is_an_error_at_every_length() {
    let bytes = small_model();
    assert!(optc::compile_bytes(&bytes, &Options::default()).is_ok());
    for cut in (0..bytes.len()).step_by(7) {
        // Some prefixes of a protobuf are valid protobufs of a smaller model; those must
        // then fail for a model-level reason. None may panic or succeed silently with the
        // full model's outputs.
        if let Ok(mut m) = optc::compile_bytes(&bytes[..cut], &Options::default()) {
            let _ = m.run(&optc::random_inputs(&m.input_types(), 0));
        }
    }
    let e = compile_err(&bytes[..bytes.len() / 2], &Options::default());
    assert!(!e.is_empty());
}

#[test]
fn corrupted_bytes_never_panic() {
    let bytes = small_model();
    let mut r = Rng::new(3);
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..1 + r.below(4) {
            let i = r.below(b.len() as u64) as usize;
            b[i] = r.next_u64() as u8;
        }
        if let Ok(mut m) = optc::compile_bytes(&b, &Options::default()) {
            let _ = m.run(&optc::random_inputs(&m.input_types(), 0));
        }
    }
    let e = compile_err(b"this is not an onnx model at all", &Options::default());
    assert!(!e.is_empty());
}

#[test]
fn all_unsupported_ops_in_one_error() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 4]);
    b.node_named("lstm_a", "FancyOp", &["x"], &["a"], vec![]);
    b.node_named("lstm_b", "FancyOp", &["a"], &["b"], vec![]);
    b.node_named("relu", "Relu", &["b"], &["c"], vec![]);
    b.node_named("weird", "Unique", &["c"], &["d"], vec![]);
    b.output("d");
    let e = compile_err(&b.to_bytes(), &Options::default());
    for needle in ["FancyOp", "lstm_a", "lstm_b", "Unique", "weird", "17"] {
        assert!(e.contains(needle), "error does not mention {needle}: {e}");
    }
    assert!(!e.contains("relu"), "Relu is supported: {e}");
}

#[test]
fn missing_initializer_names_the_node() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2, 3]);
    b.node_named("the_matmul", "MatMul", &["x", "nowhere"], &["y"], vec![]);
    b.output("y");
    let e = compile_err(&b.to_bytes(), &Options::default());
    assert!(e.contains("the_matmul") && e.contains("nowhere"), "{e}");
}

#[test]
fn cycle_is_an_error() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2]);
    b.node_named("n1", "Add", &["x", "b"], &["a"], vec![]);
    b.node_named("n2", "Relu", &["a"], &["b"], vec![]);
    b.output("b");
    let e = compile_err(&b.to_bytes(), &Options::default());
    assert!(
        e.contains("cycle") && e.contains("n1") && e.contains("n2"),
        "{e}"
    );
}

#[test]
fn dynamic_dims_are_sized_by_an_override_or_by_the_run() {
    let mut b = ModelBuilder::new(17);
    b.input("tokens", DType::F32, &[-1, 16]);
    b.node("Relu", &["tokens"], &["y"], vec![]);
    b.output("y");
    let bytes = b.to_bytes();
    // Without sizes nothing is compiled until a run gives them (tests/shapes.rs).
    let m = optc::compile_bytes(&bytes, &Options::default()).unwrap();
    assert_eq!(m.compile_count(), 0);
    let mut opts = Options::default();
    opts.input_shapes.insert("tokens".into(), vec![3, 16]);
    let mut m = optc::compile_bytes(&bytes, &opts).unwrap();
    let x = Rng::new(1).tensor(&[3, 16], -1.0, 1.0);
    let y = m.run(std::slice::from_ref(&x)).unwrap();
    let want = optc_onnx::oracle::run_tract(&bytes, &[x]).unwrap();
    let d = optc::compare(&y[0], &want[0], RTOL, ATOL).unwrap();
    assert!(d.allclose && y[0].shape() == [3, 16], "{d:?}");
    // contradicting a static dim
    opts.input_shapes.insert("tokens".into(), vec![3, 15]);
    let e = compile_err(&bytes, &opts);
    assert!(
        e.contains("tokens") && e.contains("16") && e.contains("15"),
        "{e}"
    );
    // an input that does not exist
    let mut opts = Options::default();
    opts.input_shapes.insert("tokenz".into(), vec![3, 16]);
    let e = compile_err(&bytes, &opts);
    assert!(e.contains("tokenz") && e.contains("tokens"), "{e}");
}

#[test]
fn absurd_sizes_are_errors() {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[-1, -1]);
    b.node("Relu", &["x"], &["y"], vec![]);
    b.output("y");
    let mut opts = Options::default();
    opts.input_shapes.insert("x".into(), vec![1 << 40, 1 << 40]);
    let e = compile_err(&b.to_bytes(), &opts);
    assert!(!e.is_empty());
    opts.input_shapes.insert("x".into(), vec![1 << 31, 1 << 10]);
    let e = compile_err(&b.to_bytes(), &opts);
    assert!(!e.is_empty());
    // an initializer whose data does not match its dims
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::I64, &[2]);
    b.initializer("big", &Tensor::from_f32(vec![3], vec![1.0; 3]).unwrap());
    b.node("Reshape", &["big", "x"], &["y"], vec![]);
    b.output("y");
    // The shape is an input: compiled at the run, for its value, and refused there.
    let mut m = optc::compile_bytes(&b.to_bytes(), &Options::default()).unwrap();
    assert!(m.waits_for_values().is_some());
    let shape = Tensor::from_i64(vec![2], vec![1 << 40, 1 << 40]).unwrap();
    let e = m.run(&[shape]).unwrap_err().to_string();
    assert!(!e.is_empty());
    assert_eq!(m.compile_count(), 0);
}

#[test]
fn wrong_run_inputs_are_errors() {
    let bytes = small_model();
    let mut m = optc::compile_bytes(&bytes, &Options::default()).unwrap();
    let mut r = Rng::new(9);
    let e = m.run(&[]).unwrap_err().to_string();
    assert!(e.contains("1 input") && e.contains('x'), "{e}");
    let e = m
        .run(&[r.tensor(&[1, 3, 8, 9], -1.0, 1.0)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("'x'") && e.contains("f32[1,3,8,8]") && e.contains("f32[1,3,8,9]"),
        "{e}"
    );
    let e = m
        .run(&[r.tensor_i64(&[1, 3, 8, 8], 0, 3)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'x'") && e.contains("i64"), "{e}");
    let e = m
        .run_named(&[("y", r.tensor(&[1, 3, 8, 8], -1.0, 1.0))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'x'"), "{e}");
    // an input given twice is an error, not "the first one wins"
    let x = r.tensor(&[1, 3, 8, 8], -1.0, 1.0);
    let e = m
        .run_named(&[("x", x.clone()), ("x", x)])
        .unwrap_err()
        .to_string();
    assert!(e.contains("'x' is given twice"), "{e}");
    // the model still works after the errors
    let x = r.tensor(&[1, 3, 8, 8], -1.0, 1.0);
    check("after errors", &bytes, std::slice::from_ref(&x));
    assert!(m.run(&[x]).is_ok());
}

#[test]
fn gather_out_of_range_at_run_time() {
    let mut b = ModelBuilder::new(17);
    b.initializer("table", &Rng::new(1).tensor(&[5, 3], -1.0, 1.0));
    b.input("ids", DType::I64, &[4]);
    b.node_named("embed", "Gather", &["table", "ids"], &["y"], vec![]);
    b.output("y");
    let mut m = optc::compile_bytes(&b.to_bytes(), &Options::default()).unwrap();
    let e = m
        .run(&[Tensor::from_i64(vec![4], vec![0, 1, 5, 2]).unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("embed"), "{e}");
    let ok = m.run(&[Tensor::from_i64(vec![4], vec![0, -1, 4, -5]).unwrap()]);
    assert!(ok.is_ok());
}

/// Constant indices out of range are import errors naming the node (the data computed at
/// run time); the same indices given at run time make the run fail, naming the node.
#[test]
fn indexing_ops_check_indices() {
    let bad = Tensor::from_i64(vec![2, 2], vec![0, 1, 2, 3]).unwrap();
    let good = Tensor::from_i64(vec![2, 2], vec![0, 1, -3, 2]).unwrap();
    for (op, with_updates) in [
        ("GatherElements", false),
        ("ScatterElements", true),
        ("GatherND", false),
        ("ScatterND", true),
    ] {
        let build = |constant: bool| {
            let mut b = ModelBuilder::new(16);
            b.input("x", DType::F32, &[3, 3]);
            if constant {
                b.initializer("i", &bad);
            } else {
                b.input("i", DType::I64, &[2, 2]);
            }
            let upd_shape: &[i64] = if op == "ScatterND" { &[2] } else { &[2, 2] };
            let mut ins = vec!["x", "i"];
            if with_updates {
                b.input("u", DType::F32, upd_shape);
                ins.push("u");
            }
            b.node_named("picker", op, &ins, &["y"], vec![]);
            b.output("y");
            b.to_bytes()
        };
        let e = compile_err(&build(true), &Options::default());
        assert!(e.contains("picker") && e.contains("range"), "{op}: {e}");
        let mut m = optc::compile_bytes(&build(false), &Options::default()).unwrap();
        let mut r = Rng::new(2);
        let mut inputs = vec![r.tensor(&[3, 3], -1.0, 1.0), bad.clone()];
        if with_updates {
            let shape = if op == "ScatterND" {
                vec![2]
            } else {
                vec![2, 2]
            };
            inputs.push(r.tensor(&shape, -1.0, 1.0));
        }
        let e = m.run(&inputs).unwrap_err().to_string();
        assert!(e.contains("picker") && e.contains("range"), "{op}: {e}");
        inputs[1] = good.clone();
        assert!(m.run(&inputs).is_ok(), "{op}");
    }
}

/// What Einsum's composition cannot do is an error naming the node.
#[test]
fn einsum_limits_are_errors() {
    for (eq, dtype, shapes, needle) in [
        ("ij,jk->ik", DType::I64, vec![vec![2, 3], vec![3, 2]], "f32"),
        (
            "ij,jk->ik",
            DType::F32,
            vec![vec![2, 3], vec![1, 2]],
            "extents",
        ),
        ("ij->k", DType::F32, vec![vec![2, 3]], "'k'"),
        ("ijk->i", DType::F32, vec![vec![2, 3]], "labels"),
    ] {
        let mut b = ModelBuilder::new(12);
        let names = ["a", "b"];
        for (n, s) in names.iter().zip(&shapes) {
            b.input(n, dtype, s);
        }
        b.node_named(
            "contraction",
            "Einsum",
            &names[..shapes.len()],
            &["y"],
            vec![("equation", A::Str(eq.into()))],
        );
        b.output("y");
        let e = compile_err(&b.to_bytes(), &Options::default());
        assert!(e.contains("contraction") && e.contains(needle), "{eq}: {e}");
    }
}

#[test]
fn unknown_target_is_an_error() {
    let opts = Options {
        target: "pdp11".into(),
        ..Default::default()
    };
    let e = compile_err(&small_model(), &opts);
    assert!(e.contains("pdp11") && e.contains("x86_64-avx2"), "{e}");
}

#[test]
fn known_input_values_are_bound_only_where_a_constant_is_needed() {
    // pads arrive as a graph input (as in the ONNX node tests): without its value the
    // model cannot be compiled; with it, only `pads` is bound and `x` stays an input.
    let mut b = ModelBuilder::new(13);
    b.input("x", DType::F32, &[2, 3]);
    b.input("pads", DType::I64, &[4]);
    b.node_named("pad", "Pad", &["x", "pads"], &["y"], vec![]);
    b.output("y");
    let bytes = b.to_bytes();
    // Without its value the compile waits for the first run's.
    let m = optc::compile_bytes(&bytes, &Options::default()).unwrap();
    let e = m.waits_for_values().unwrap();
    assert!(
        e.to_string().contains("pad") && e.to_string().contains("constant"),
        "{e}"
    );
    assert_eq!(e.needs_values(), ["pads".to_string()]);
    let pads = Tensor::from_i64(vec![4], vec![0, 1, 1, 0]).unwrap();
    let mut opts = Options::default();
    opts.input_values.insert("pads".into(), pads.clone());
    let mut m = optc::compile_bytes(&bytes, &opts).unwrap();
    assert_eq!(m.input_names(), ["x", "pads"]);
    let x = Rng::new(4).tensor(&[2, 3], -1.0, 1.0);
    // oracle: tract on the same model with `pads` as an initializer (tract cannot take
    // runtime pads either)
    let mut sb = ModelBuilder::new(13);
    sb.input("x", DType::F32, &[2, 3]);
    sb.initializer("pads", &pads);
    sb.node_named("pad", "Pad", &["x", "pads"], &["y"], vec![]);
    sb.output("y");
    let want = optc_onnx::oracle::run_tract(&sb.to_bytes(), std::slice::from_ref(&x)).unwrap();
    let got = m.run(&[x, pads]).unwrap();
    let d = optc::compare(&got[0], &want[0], RTOL, ATOL).unwrap();
    assert!(d.allclose && got[0].shape() == [3, 4], "{d:?}");
    // a value of the wrong type is an error naming the input
    let mut opts = Options::default();
    opts.input_values.insert(
        "pads".into(),
        Tensor::from_i64(vec![2], vec![1, 1]).unwrap(),
    );
    let e = compile_err(&bytes, &opts);
    assert!(e.contains("'pads'"), "{e}");
}
