//! One compiled model for every sequence length of a range (`optc::dynamic_length`): the
//! masked graph at the longest length, run with a shorter length and garbage past it, must
//! give on the first positions what the model gives at that length. Oracle: tract on the
//! original model at each length. The refusals name every node that cannot be masked.

mod common;

use common::*;
use optc::dynamic_length::{masked_graph, LengthSpec, LENGTH_INPUT};
use optc::{DType, Options, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use optc_onnx::oracle::run_tract;
use std::collections::HashMap;

const MAX: usize = 12;
const D: usize = 8;
const VOCAB: usize = 11;

fn ints(name: &str, v: &[i64]) -> (String, Tensor) {
    (
        name.to_string(),
        Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap(),
    )
}

/// A small encoder over `ids` and `mask` (`[1, seq]`): embeddings plus position embeddings
/// sliced to the length, attention with the mask as a bias, a residual LayerNorm, a conv and
/// a max pool along the sequence, and outputs that read the length every way the masks
/// cover: the tokens, their mean and max, a running sum of the mask, the first token.
fn encoder() -> Vec<u8> {
    let mut r = Rng::new(5);
    let mut b = ModelBuilder::new(17);
    b.input("ids", DType::I64, &[1, -1])
        .input("mask", DType::I64, &[1, -1]);
    b.initializer("table", &r.tensor(&[VOCAB, D], -1.0, 1.0))
        .initializer("positions", &r.tensor(&[MAX, D], -0.5, 0.5));
    for w in ["wq", "wk", "wv"] {
        b.initializer(w, &r.tensor(&[D, D], -0.5, 0.5));
    }
    b.initializer("conv_w", &r.tensor(&[D, D, 3], -0.4, 0.4))
        .initializer("gamma", &r.tensor(&[D], 0.5, 1.5))
        .initializer("beta", &r.tensor(&[D], -0.2, 0.2))
        .initializer("scale", &Tensor::scalar_f32(0.35))
        .initializer("one", &Tensor::scalar_f32(1.0))
        .initializer("big", &Tensor::scalar_f32(-10000.0));
    for (n, t) in [
        ints("one_i", &[1]),
        ints("zero_i", &[0]),
        ints("axis0", &[0]),
    ] {
        b.initializer(&n, &t);
    }
    b.initializer("first", &Tensor::scalar_i64(0))
        .initializer("seq_axis", &Tensor::scalar_i64(1));
    b.node("Shape", &["ids"], &["shape"], vec![])
        .node("Gather", &["shape", "one_i"], &["len1"], vec![])
        .node(
            "Slice",
            &["positions", "zero_i", "len1", "axis0"],
            &["pos"],
            vec![],
        )
        .node(
            "Gather",
            &["table", "ids"],
            &["emb"],
            vec![("axis", Attr::Int(0))],
        )
        .node("Add", &["emb", "pos"], &["x"], vec![]);
    for (w, o) in [("wq", "q"), ("wk", "k"), ("wv", "v")] {
        b.node("MatMul", &["x", w], &[o], vec![]);
    }
    b.node(
        "Transpose",
        &["k"],
        &["kt"],
        vec![("perm", Attr::Ints(vec![0, 2, 1]))],
    )
    .node("MatMul", &["q", "kt"], &["scores"], vec![])
    .node("Mul", &["scores", "scale"], &["scaled"], vec![])
    .node("Cast", &["mask"], &["maskf"], vec![("to", Attr::Int(1))])
    .node("Unsqueeze", &["maskf", "one_i"], &["mask3"], vec![])
    .node("Sub", &["one", "mask3"], &["inverted"], vec![])
    .node("Mul", &["inverted", "big"], &["bias"], vec![])
    .node("Add", &["scaled", "bias"], &["biased"], vec![])
    .node(
        "Softmax",
        &["biased"],
        &["p"],
        vec![("axis", Attr::Int(-1))],
    )
    .node("MatMul", &["p", "v"], &["context"], vec![])
    .node("Add", &["context", "x"], &["residual"], vec![])
    .node(
        "LayerNormalization",
        &["residual", "gamma", "beta"],
        &["h"],
        vec![("axis", Attr::Int(-1))],
    )
    .node(
        "Transpose",
        &["h"],
        &["channels"],
        vec![("perm", Attr::Ints(vec![0, 2, 1]))],
    )
    .node(
        "Conv",
        &["channels", "conv_w"],
        &["conv"],
        vec![("pads", Attr::Ints(vec![1, 1]))],
    )
    .node(
        "MaxPool",
        &["conv"],
        &["pooled"],
        vec![
            ("kernel_shape", Attr::Ints(vec![3])),
            ("pads", Attr::Ints(vec![1, 1])),
        ],
    )
    .node(
        "Transpose",
        &["pooled"],
        &["tokens"],
        vec![("perm", Attr::Ints(vec![0, 2, 1]))],
    )
    .node(
        "ReduceMean",
        &["tokens"],
        &["mean"],
        vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))],
    )
    .node(
        "ReduceMax",
        &["h"],
        &["max"],
        vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))],
    )
    .node("CumSum", &["maskf", "seq_axis"], &["running"], vec![])
    .node(
        "Gather",
        &["h", "first"],
        &["cls"],
        vec![("axis", Attr::Int(1))],
    );
    for o in ["tokens", "mean", "max", "running", "cls"] {
        b.output(o);
    }
    b.to_bytes()
}

fn spec(names: &[&str]) -> LengthSpec {
    LengthSpec {
        min: 1,
        max: MAX,
        axes: names.iter().map(|n| (n.to_string(), vec![1])).collect(),
    }
}

fn at_max(names: &[&str]) -> Options {
    let mut o = Options::default();
    for n in names {
        o.input_shapes.insert(n.to_string(), vec![1, MAX]);
    }
    o
}

/// Inputs of length `len`: ids in the vocabulary, a mask with its last position 0 (when
/// there are two), and the same padded to `MAX` with garbage (ids far outside the
/// vocabulary, mask values that are not 0 or 1) plus the length.
fn inputs(len: usize, seed: u64) -> (Vec<Tensor>, Vec<Tensor>) {
    let mut r = Rng::new(seed);
    let ids: Vec<i64> = (0..len).map(|_| r.below(VOCAB as u64) as i64).collect();
    let mask: Vec<i64> = (0..len)
        .map(|i| i64::from(len < 2 || i + 1 < len))
        .collect();
    let pad = |v: &[i64], junk: i64| -> Tensor {
        let mut p = v.to_vec();
        p.resize(MAX, junk);
        Tensor::from_i64(vec![1, MAX], p).unwrap()
    };
    let short = vec![
        Tensor::from_i64(vec![1, len], ids.clone()).unwrap(),
        Tensor::from_i64(vec![1, len], mask.clone()).unwrap(),
    ];
    let long = vec![
        pad(&ids, 1_000_000),
        pad(&mask, 7),
        Tensor::scalar_i64(len as i64),
    ];
    (short, long)
}

/// The first `len` positions along `axes` of `t`.
fn head(t: &Tensor, axes: &[usize], len: usize) -> Tensor {
    let dims = t
        .shape()
        .iter()
        .enumerate()
        .map(|(d, &n)| optc_ir::SliceDim::whole(if axes.contains(&d) { len } else { n }))
        .collect();
    optc_ir::interp::eval_op(&optc_ir::Op::Slice { dims }, &[t])
        .unwrap()
        .remove(0)
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let d = optc::compare(got, want, 1e-4, 1e-5).unwrap();
    assert!(d.allclose, "{what}: {d:?}");
}

#[test]
fn every_length_matches_the_model_at_that_length() {
    let bytes = encoder();
    let names = ["ids", "mask"];
    let (graph, axes) = masked_graph(&bytes, &at_max(&names), &spec(&["ids"])).unwrap();
    // The mask follows the ids: the model names both dims `d1`.
    assert_eq!(axes.inputs, vec![vec![1], vec![1]]);
    assert_eq!(axes.outputs, vec![vec![1], vec![], vec![], vec![1], vec![]]);
    assert_eq!(graph.inputs.last().unwrap().name, LENGTH_INPUT);
    let mut jit = optc::compile_graph(graph.clone(), &Options::default()).unwrap();
    for (len, seed) in [(1, 1), (2, 2), (5, 3), (11, 4), (MAX, 5)] {
        let (short, long) = inputs(len, seed);
        let want = run_tract(&bytes, &short).unwrap();
        let interpreted = optc_ir::interp::run(&graph, &long).unwrap();
        let compiled = jit.run(&long).unwrap();
        for (i, w) in want.iter().enumerate() {
            let what = format!("length {len}, output {i}");
            assert_close(&head(&interpreted[i], &axes.outputs[i], len), w, &what);
            assert_close(&head(&compiled[i], &axes.outputs[i], len), w, &what);
        }
    }
}

#[test]
fn a_length_outside_the_range_fails_the_run() {
    let bytes = encoder();
    let names = ["ids", "mask"];
    let mut s = spec(&names);
    s.min = 3;
    let (graph, _) = masked_graph(&bytes, &at_max(&names), &s).unwrap();
    let mut jit = optc::compile_graph(graph, &Options::default()).unwrap();
    let (_, mut long) = inputs(4, 9);
    assert!(jit.run(&long).is_ok());
    for bad in [2, 0, -1, MAX as i64 + 1] {
        long[2] = Tensor::scalar_i64(bad);
        let e = jit.run(&long).expect_err("outside the range");
        assert!(
            e.to_string().contains("optc_length_checked")
                && e.to_string().contains(optc_ir::LENGTH_OUT_OF_RANGE),
            "{e}"
        );
    }
}

/// `x [1, seq, 4]` through `body` (nodes reading `x`, producing `y`).
fn refused(body: impl FnOnce(&mut ModelBuilder)) -> String {
    let mut r = Rng::new(3);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, -1, 4])
        .initializer("w", &r.tensor(&[4, 4], -1.0, 1.0));
    body(&mut b);
    b.output("y");
    let mut o = Options::default();
    o.input_shapes.insert("x".into(), vec![1, MAX, 4]);
    let s = LengthSpec {
        min: 1,
        max: MAX,
        axes: HashMap::from([("x".to_string(), vec![1])]),
    };
    match masked_graph(&b.to_bytes(), &o, &s) {
        Ok(_) => panic!("the model should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn ops_that_read_past_the_length_are_refused_by_name_all_at_once() {
    // The last token (an index computed from the length) and a concat along the length.
    let e = refused(|b| {
        b.initializer("last", &Tensor::scalar_i64(-1))
            .node(
                "Gather",
                &["x", "last"],
                &["final"],
                vec![("axis", Attr::Int(1))],
            )
            .node(
                "Concat",
                &["x", "x"],
                &["twice"],
                vec![("axis", Attr::Int(1))],
            )
            .node("ReduceSum", &["twice", "axis1"], &["sums"], vec![])
            .initializer("axis1", &Tensor::from_i64(vec![1], vec![1]).unwrap())
            .node("Add", &["final", "sums"], &["y"], vec![]);
    });
    assert!(e.contains("final") && e.contains("twice"), "{e}");
    assert!(e.contains("lengths 1..12"), "{e}");
    // A value computed from the length (a mean written out by hand).
    let e = refused(|b| {
        b.node("Shape", &["x"], &["s"], vec![])
            .initializer("i1", &Tensor::from_i64(vec![1], vec![1]).unwrap())
            .node("Gather", &["s", "i1"], &["n"], vec![])
            .node("Cast", &["n"], &["nf"], vec![("to", Attr::Int(1))])
            .node("Div", &["x", "nf"], &["y"], vec![]);
    });
    assert!(e.contains("depends on the length"), "{e}");
    // The extent 2L is not the length.
    let e = refused(|b| {
        b.node("Concat", &["x", "x"], &["y"], vec![("axis", Attr::Int(1))]);
    });
    assert!(e.contains("extent 24 at length 12"), "{e}");
}

#[test]
fn a_graph_whose_nodes_depend_on_the_length_is_refused() {
    // An LSTM is unrolled over the sequence: one step per position.
    let mut r = Rng::new(4);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[-1, 1, 2])
        .initializer("w", &r.tensor(&[1, 12, 2], -0.5, 0.5))
        .initializer("r", &r.tensor(&[1, 12, 3], -0.5, 0.5))
        .node(
            "LSTM",
            &["x", "w", "r"],
            &["y"],
            vec![("hidden_size", Attr::Int(3))],
        )
        .output("y");
    let mut o = Options::default();
    o.input_shapes.insert("x".into(), vec![MAX, 1, 2]);
    let s = LengthSpec {
        min: 1,
        max: MAX,
        axes: HashMap::from([("x".to_string(), vec![0])]),
    };
    let e = masked_graph(&b.to_bytes(), &o, &s).unwrap_err().to_string();
    assert!(e.contains("differs between lengths 2 and 12"), "{e}");
}
