//! `If`, `Loop` and `Scan`: the imported graphs compute what tract computes on the original
//! model (IR interpreter vs tract), or, for what tract does not run, what a plain-Rust
//! loop over the spec's semantics computes.

mod common;

use common::{import, ops, run_tract};
use optc_ir::{DType, Data, Graph, Op, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use optc_onnx::{import_bytes, ImportOptions};

fn rand_t(shape: &[usize], seed: &mut u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 33) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).unwrap()
}

fn close(ours: &[Tensor], theirs: &[Tensor]) {
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(theirs) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

fn interp(g: &Graph, inputs: &[Tensor]) -> Vec<Tensor> {
    optc_ir::interp::run(g, inputs).unwrap_or_else(|e| panic!("{e}"))
}

fn import_err(m: &ModelBuilder) -> String {
    match import_bytes(&m.to_bytes(), &ImportOptions::default()) {
        Ok(_) => panic!("the import should fail"),
        Err(e) => e.to_string(),
    }
}

/// `then`: x + 1 (and x * 3 as a second output); `else`: x * 2 (and x - 1). Both read the
/// outer `x`.
fn branches() -> (ModelBuilder, ModelBuilder) {
    let mut t = ModelBuilder::new(13);
    t.initializer("one", &Tensor::scalar_f32(1.0))
        .initializer("three", &Tensor::scalar_f32(3.0))
        .node("Add", &["x", "one"], &["t0"], vec![])
        .node("Mul", &["x", "three"], &["t1"], vec![])
        .output_typed("t0", DType::F32, &[2, 3])
        .output_typed("t1", DType::F32, &[2, 3]);
    let mut e = ModelBuilder::new(13);
    e.initializer("two", &Tensor::scalar_f32(2.0))
        .initializer("one_e", &Tensor::scalar_f32(1.0))
        .node("Mul", &["x", "two"], &["e0"], vec![])
        .node("Sub", &["x", "one_e"], &["e1"], vec![])
        .output_typed("e0", DType::F32, &[2, 3])
        .output_typed("e1", DType::F32, &[2, 3]);
    (t, e)
}

fn if_attrs(t: ModelBuilder, e: ModelBuilder) -> Vec<(&'static str, Attr)> {
    vec![
        ("then_branch", Attr::Graph(Box::new(t))),
        ("else_branch", Attr::Graph(Box::new(e))),
    ]
}

#[test]
fn if_with_a_constant_condition_imports_only_the_branch_taken() {
    let mut s = 1u64;
    for cond in [true, false] {
        let (t, e) = branches();
        let mut m = ModelBuilder::new(13);
        m.input("x", DType::F32, &[2, 3])
            .initializer("c", &Tensor::new(vec![], Data::Bool(vec![cond])).unwrap())
            .node("Relu", &["x"], &["r"], vec![])
            .node("If", &["c"], &["y0", "y1"], if_attrs(t, e))
            .node("Add", &["y0", "r"], &["z"], vec![])
            .output("z")
            .output("y1");
        let g = import(&m);
        // Relu, the branch's two ops, the final Add.
        let mut names: Vec<&str> = ops(&g).iter().map(|op| op.name()).collect();
        names.sort();
        let want = if cond {
            vec!["add", "add", "mul", "relu"]
        } else {
            vec!["add", "mul", "relu", "sub"]
        };
        assert_eq!(names, want, "cond {cond}");
        let x = rand_t(&[2, 3], &mut s);
        close(
            &interp(&g, std::slice::from_ref(&x)),
            &run_tract(&m.to_bytes(), &[x]),
        );
    }
}

#[test]
fn if_with_a_condition_computed_at_run_time_selects_between_both_branches() {
    let (t, e) = branches();
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .initializer("zero", &Tensor::scalar_f32(0.0))
        .node(
            "ReduceSum",
            &["x"],
            &["s"],
            vec![("keepdims", Attr::Int(0))],
        )
        .node("Greater", &["s", "zero"], &["c"], vec![])
        .node("If", &["c"], &["y0", "y1"], if_attrs(t, e))
        .output("y0")
        .output("y1");
    let g = import(&m);
    assert!(ops(&g).contains(&Op::Where));
    let mut s = 5u64;
    let mut seen = [false, false];
    for _ in 0..12 {
        let x = rand_t(&[2, 3], &mut s);
        let positive = x.to_f64_vec().iter().sum::<f64>() > 0.0;
        seen[positive as usize] = true;
        close(
            &interp(&g, std::slice::from_ref(&x)),
            &run_tract(&m.to_bytes(), &[x]),
        );
    }
    assert_eq!(seen, [true, true], "both branches taken");
}

#[test]
fn if_with_branches_of_different_shapes_needs_a_known_condition() {
    let mut t = ModelBuilder::new(13);
    t.node("Identity", &["x"], &["t0"], vec![])
        .output_typed("t0", DType::F32, &[2, 3]);
    let mut e = ModelBuilder::new(13);
    e.node("ReduceSum", &["x"], &["e0"], vec![])
        .output_typed("e0", DType::F32, &[1, 1]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .input("c", DType::Bool, &[])
        .node_named("choose", "If", &["c"], &["y"], if_attrs(t, e))
        .output("y");
    let err = import_err(&m);
    assert!(err.contains("'choose'"), "{err}");
    assert!(err.contains("computed at run time"), "{err}");
    assert!(
        err.contains("f32[2,3]") && err.contains("f32[1,1]"),
        "{err}"
    );
}

#[test]
fn a_branch_that_cannot_be_shaped_is_guarded_not_refused() {
    // then: x + 1 and x * 3; else: a reshape of x ([2, 3]) to [4, 4], and x - 1.
    let (t, _) = branches();
    let mut e = ModelBuilder::new(13);
    e.initializer("square", &Tensor::from_i64(vec![2], vec![4, 4]).unwrap())
        .initializer("one_e", &Tensor::scalar_f32(1.0))
        .node("Reshape", &["x", "square"], &["e0"], vec![])
        .node("Sub", &["x", "one_e"], &["e1"], vec![])
        .output_typed("e0", DType::F32, &[4, 4])
        .output_typed("e1", DType::F32, &[2, 3]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .input("c", DType::Bool, &[])
        .node_named("branchy", "If", &["c"], &["y0", "y1"], if_attrs(t, e))
        .output("y0")
        .output("y1");
    let imported = optc_onnx::import_bytes_bound(&m.to_bytes(), &ImportOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let w = &imported.warnings;
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("'branchy'") && w[0].contains("else_branch") && w[0].contains("Reshape"),
        "{w:?}"
    );
    let g = &imported.graph;
    assert!(
        !ops(g).contains(&Op::Where),
        "the else branch is not compiled"
    );
    let x = rand_t(&[2, 3], &mut 3u64);
    let flag = |v| Tensor::new(vec![], Data::Bool(vec![v])).unwrap();
    let ys = interp(g, &[x.clone(), flag(true)]);
    let by_hand = |f: fn(f64) -> f64| {
        let v = x.to_f64_vec().into_iter().map(|v| f(v) as f32).collect();
        Tensor::new(vec![2, 3], Data::F32(v)).unwrap()
    };
    close(&ys, &[by_hand(|v| v + 1.0), by_hand(|v| v * 3.0)]);
    let err = optc_ir::interp::run(g, &[x.clone(), flag(false)])
        .expect_err("the run that takes the else branch fails")
        .to_string();
    assert!(err.contains(optc_ir::UNCOMPILED_BRANCH), "{err}");
}

#[test]
fn if_whose_branches_both_cannot_be_shaped_is_refused_with_both_reasons() {
    let branch = |out: &str| {
        let mut b = ModelBuilder::new(13);
        b.initializer("square", &Tensor::from_i64(vec![2], vec![4, 4]).unwrap())
            .node("Reshape", &["x", "square"], &[out], vec![])
            .output_typed(out, DType::F32, &[4, 4]);
        b
    };
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .input("c", DType::Bool, &[])
        .node_named(
            "branchy",
            "If",
            &["c"],
            &["y"],
            if_attrs(branch("t0"), branch("e0")),
        )
        .output("y");
    let err = import_err(&m);
    assert!(
        err.contains("'branchy'") && err.contains("then_branch") && err.contains("else_branch"),
        "{err}"
    );
}

#[test]
fn unsupported_ops_inside_branches_are_listed_with_the_others() {
    let mut t = ModelBuilder::new(13);
    t.node("NoSuchOp", &["x"], &["t0"], vec![])
        .output_typed("t0", DType::F32, &[2]);
    let mut e = ModelBuilder::new(13);
    e.node("Identity", &["x"], &["e0"], vec![])
        .output_typed("e0", DType::F32, &[2]);
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2])
        .input("c", DType::Bool, &[])
        .node_named("branch", "If", &["c"], &["y"], if_attrs(t, e))
        .node("AlsoMissing", &["y"], &["z"], vec![])
        .output("z");
    let err = import_err(&m);
    assert!(err.contains("2 unsupported op types"), "{err}");
    assert!(err.contains("branch/then_branch/t0"), "{err}");
    assert!(err.contains("AlsoMissing"), "{err}");
}

/// Loop body: (i, cond, acc) -> (cond, acc + x * i, acc * 1) with `acc * 1` as a scan output.
fn loop_body() -> ModelBuilder {
    let mut b = ModelBuilder::new(13);
    b.input("i", DType::I64, &[])
        .input("cond_in", DType::Bool, &[])
        .input("acc_in", DType::F32, &[3])
        .initializer("unit", &Tensor::scalar_f32(1.0))
        .node("Cast", &["i"], &["fi"], vec![("to", Attr::Int(1))])
        .node("Mul", &["x", "fi"], &["xi"], vec![])
        .node("Add", &["acc_in", "xi"], &["acc_out"], vec![])
        .node("Mul", &["acc_out", "unit"], &["scan"], vec![])
        .node("Identity", &["cond_in"], &["cond_out"], vec![])
        .output_typed("cond_out", DType::Bool, &[])
        .output_typed("acc_out", DType::F32, &[3])
        .output_typed("scan", DType::F32, &[3]);
    b
}

#[test]
fn loop_with_a_constant_trip_count_is_unrolled() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .initializer("trips", &Tensor::scalar_i64(4))
        .initializer(
            "start",
            &Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
        )
        .node(
            "Loop",
            &["trips", "", "start"],
            &["acc", "scans"],
            vec![("body", Attr::Graph(Box::new(loop_body())))],
        )
        .output("acc")
        .output("scans");
    let g = import(&m);
    let mut s = 9u64;
    let x = rand_t(&[3], &mut s);
    let outs = interp(&g, std::slice::from_ref(&x));
    // The spec's loop, by hand: acc += x * i for i in 0..4, each acc stacked.
    let xv = x.to_f64_vec();
    let mut acc = vec![1.0, 2.0, 3.0];
    let mut scans = vec![];
    for i in 0..4 {
        for k in 0..3 {
            acc[k] += xv[k] * i as f64;
        }
        scans.extend(acc.iter().copied());
    }
    assert_eq!(outs[0].shape(), &[3]);
    assert_eq!(outs[1].shape(), &[4, 3]);
    for (a, b) in outs[0].to_f64_vec().iter().zip(&acc) {
        assert!((a - b).abs() < 1e-5);
    }
    for (a, b) in outs[1].to_f64_vec().iter().zip(&scans) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn loop_whose_count_is_only_known_at_run_time_is_refused() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .input("trips", DType::I64, &[])
        .initializer(
            "start",
            &Tensor::from_f32(vec![3], vec![1.0, 2.0, 3.0]).unwrap(),
        )
        .node_named(
            "repeat",
            "Loop",
            &["trips", "", "start"],
            &["acc", "scans"],
            vec![("body", Attr::Graph(Box::new(loop_body())))],
        )
        .output("acc");
    let err = import_err(&m);
    assert!(err.contains("'repeat'"), "{err}");
    assert!(err.contains("trip count"), "{err}");
}

/// Scan body: (state, row) -> (state + row, state + row) : a cumulative sum.
fn cumulative_body() -> ModelBuilder {
    let mut b = ModelBuilder::new(13);
    b.input("state", DType::F32, &[2])
        .input("row", DType::F32, &[2])
        .node("Add", &["state", "row"], &["next"], vec![])
        .node("Identity", &["next"], &["out"], vec![])
        .output_typed("next", DType::F32, &[2])
        .output_typed("out", DType::F32, &[2]);
    b
}

#[test]
fn scan_runs_forward_and_backward_like_tract() {
    let mut s = 3u64;
    for reverse in [0, 1] {
        let mut m = ModelBuilder::new(13);
        m.input("init", DType::F32, &[2])
            .input("xs", DType::F32, &[5, 2])
            .node(
                "Scan",
                &["init", "xs"],
                &["last", "all"],
                vec![
                    ("body", Attr::Graph(Box::new(cumulative_body()))),
                    ("num_scan_inputs", Attr::Int(1)),
                    ("scan_input_directions", Attr::Ints(vec![reverse])),
                ],
            )
            .output("last")
            .output("all");
        let g = import(&m);
        let ins = [rand_t(&[2], &mut s), rand_t(&[5, 2], &mut s)];
        close(&interp(&g, &ins), &run_tract(&m.to_bytes(), &ins));
    }
}

#[test]
fn scan_along_axis_one_with_output_axis_one() {
    let mut s = 4u64;
    let mut m = ModelBuilder::new(13);
    m.input("init", DType::F32, &[2])
        .input("xs", DType::F32, &[2, 4])
        .node(
            "Scan",
            &["init", "xs"],
            &["last", "all"],
            vec![
                ("body", Attr::Graph(Box::new(cumulative_body()))),
                ("num_scan_inputs", Attr::Int(1)),
                ("scan_input_axes", Attr::Ints(vec![1])),
                ("scan_output_axes", Attr::Ints(vec![1])),
                ("scan_output_directions", Attr::Ints(vec![1])),
            ],
        )
        .output("last")
        .output("all");
    let g = import(&m);
    let init = rand_t(&[2], &mut s);
    let xs = rand_t(&[2, 4], &mut s);
    let outs = interp(&g, &[init.clone(), xs.clone()]);
    // By hand: state[k] += xs[k][t]; output t stored at position 3 - t of axis 1.
    let (iv, xv) = (init.to_f64_vec(), xs.to_f64_vec());
    let mut state = iv.clone();
    let mut all = vec![0.0; 8];
    for t in 0..4 {
        for k in 0..2 {
            state[k] += xv[k * 4 + t];
            all[k * 4 + (3 - t)] = state[k];
        }
    }
    assert_eq!(outs[1].shape(), &[2, 4]);
    for (a, b) in outs[0].to_f64_vec().iter().zip(&state) {
        assert!((a - b).abs() < 1e-5);
    }
    for (a, b) in outs[1].to_f64_vec().iter().zip(&all) {
        assert!((a - b).abs() < 1e-5);
    }
}
