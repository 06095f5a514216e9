//! `If` with a condition computed at run time, compiled: only the branch the condition picks
//! runs (a kernel only the other branch needs is not called: an index out of range there
//! does not fail the run), nested ones too; a branch that cannot be compiled for the
//! model's shapes fails only the runs that take it. Oracle: the spec's semantics written out
//! by hand (the IR interpreter evaluates both sides of a select, and tract refuses models
//! whose branches fail).

mod common;

use common::*;
use optc::{DType, Data, Options, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.shape(), want.shape(), "{what}");
    let d = optc::compare(got, want, RTOL, ATOL).unwrap();
    assert!(d.allclose, "{what}: {d:?}");
}

fn flag(v: bool) -> Tensor {
    Tensor::new(vec![], Data::Bool(vec![v])).unwrap()
}

fn run_error(m: &mut optc::CompiledModel, inputs: &[Tensor]) -> String {
    match m.run(inputs) {
        Ok(_) => panic!("the run should fail"),
        Err(e) => e.to_string(),
    }
}

fn if_node(
    m: &mut ModelBuilder,
    name: &str,
    cond: &str,
    out: &str,
    t: ModelBuilder,
    e: ModelBuilder,
) {
    m.node_named(
        name,
        "If",
        &[cond],
        &[out],
        vec![
            ("then_branch", Attr::Graph(Box::new(t))),
            ("else_branch", Attr::Graph(Box::new(e))),
        ],
    );
}

/// `y = c ? (d ? (2 x)[i] : max(x + 1)) : sum(x - 1)` over x: f32[8], i: i64 scalar, c and d
/// bool scalars: the gather's index is checked, and out of range only matters when c and d
/// both hold.
fn nested() -> Vec<u8> {
    let mut inner_then = ModelBuilder::new(13);
    inner_then
        .initializer("two", &Tensor::scalar_f32(2.0))
        .node("Mul", &["x", "two"], &["doubled"], vec![])
        .node("Gather", &["doubled", "i"], &["picked"], vec![])
        .output_typed("picked", DType::F32, &[]);
    let mut inner_else = ModelBuilder::new(13);
    inner_else
        .initializer("one", &Tensor::scalar_f32(1.0))
        .node("Add", &["x", "one"], &["plus"], vec![])
        .node(
            "ReduceMax",
            &["plus"],
            &["largest"],
            vec![("keepdims", Attr::Int(0))],
        )
        .output_typed("largest", DType::F32, &[]);
    let mut outer_then = ModelBuilder::new(13);
    if_node(
        &mut outer_then,
        "inner",
        "d",
        "chosen",
        inner_then,
        inner_else,
    );
    outer_then.output_typed("chosen", DType::F32, &[]);
    let mut outer_else = ModelBuilder::new(13);
    outer_else
        .initializer("one_e", &Tensor::scalar_f32(1.0))
        .node("Sub", &["x", "one_e"], &["minus"], vec![])
        .node(
            "ReduceSum",
            &["minus"],
            &["total"],
            vec![("keepdims", Attr::Int(0))],
        )
        .output_typed("total", DType::F32, &[]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[8])
        .input("i", DType::I64, &[])
        .input("c", DType::Bool, &[])
        .input("d", DType::Bool, &[]);
    if_node(&mut m, "outer", "c", "y", outer_then, outer_else);
    m.output("y");
    m.to_bytes()
}

#[test]
fn only_the_branch_the_condition_picks_runs() {
    let mut m = optc::compile_bytes(&nested(), &Options::default()).unwrap();
    assert!(m.report().warnings.is_empty(), "{:?}", m.report().warnings);
    let x = Rng::new(3).tensor(&[8], -1.0, 1.0);
    let xs: Vec<f64> = x.to_f64_vec();
    let index = |i: i64| Tensor::new(vec![], Data::I64(vec![i])).unwrap();
    let scalar = |v: f64| Tensor::new(vec![], Data::F32(vec![v as f32])).unwrap();
    let largest = xs.iter().map(|v| v + 1.0).fold(f64::MIN, f64::max);
    let total: f64 = xs.iter().map(|v| v - 1.0).sum();
    // (i, c, d, y): an index out of range (8) where the gather is not picked.
    for (i, c, d, want) in [
        (5, true, true, 2.0 * xs[5]),
        (8, true, false, largest),
        (8, false, true, total),
        (-1, true, true, 2.0 * xs[7]),
        (100, false, false, total),
    ] {
        let y = m
            .run(&[x.clone(), index(i), flag(c), flag(d)])
            .unwrap_or_else(|e| panic!("i {i}, c {c}, d {d}: {e}"));
        assert_close(&y[0], &scalar(want), &format!("i {i}, c {c}, d {d}"));
    }
    // Where the gather is picked, its index is still checked.
    let e = run_error(&mut m, &[x, index(8), flag(true), flag(true)]);
    assert!(e.contains("gather index out of range"), "{e}");
}

/// `If` on the input `c` whose else branch cannot be shaped for x's [2, 3] (a reshape to
/// [4, 4]); the then branch is x + 1.
fn half_shapeable() -> Vec<u8> {
    let mut t = ModelBuilder::new(13);
    t.initializer("one", &Tensor::scalar_f32(1.0))
        .node("Add", &["x", "one"], &["t0"], vec![])
        .output_typed("t0", DType::F32, &[2, 3]);
    let mut e = ModelBuilder::new(13);
    e.initializer("square", &Tensor::from_i64(vec![2], vec![4, 4]).unwrap())
        .node("Reshape", &["x", "square"], &["e0"], vec![])
        .output_typed("e0", DType::F32, &[4, 4]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .input("c", DType::Bool, &[]);
    if_node(&mut m, "branchy", "c", "y", t, e);
    m.output("y");
    m.to_bytes()
}

#[test]
fn a_branch_that_cannot_be_shaped_fails_only_the_runs_that_take_it() {
    let mut m = optc::compile_bytes(&half_shapeable(), &Options::default()).unwrap();
    let warnings = &m.report().warnings;
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("'branchy'") && warnings[0].contains("else_branch"),
        "{warnings:?}"
    );
    let x = Rng::new(7).tensor(&[2, 3], -1.0, 1.0);
    let y = m.run(&[x.clone(), flag(true)]).unwrap();
    let plus_one: Vec<f32> = x.to_f64_vec().iter().map(|v| *v as f32 + 1.0).collect();
    assert_close(
        &y[0],
        &Tensor::from_f32(vec![2, 3], plus_one).unwrap(),
        "then branch",
    );
    let e = run_error(&mut m, &[x, flag(false)]);
    assert!(
        e.contains("branchy") && e.contains(optc_ir::UNCOMPILED_BRANCH),
        "{e}"
    );
}
