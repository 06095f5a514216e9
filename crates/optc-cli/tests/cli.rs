//! The `optc` binary: exit codes, messages, file formats.

use optc_ir::{DType, Tensor};
use optc_onnx::builder::{Attr as A, ModelBuilder};
use std::path::{Path, PathBuf};

mod common;
use common::{optc, text};

fn tmpdir(name: &str) -> PathBuf {
    common::tmpdir("cli", name)
}

fn model(dir: &Path) -> PathBuf {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2, 5]);
    b.input("ids", DType::I64, &[3]);
    let w: Vec<f32> = (0..20).map(|i| (i as f32 * 0.37).sin()).collect();
    b.initializer("w", &Tensor::from_f32(vec![5, 4], w).unwrap());
    let e: Vec<f32> = (0..12).map(|i| (i as f32 * 0.71).cos()).collect();
    b.initializer("emb", &Tensor::from_f32(vec![4, 3], e).unwrap());
    b.node("MatMul", &["x", "w"], &["h"], vec![]);
    b.node("Tanh", &["h"], &["out_a"], vec![]);
    b.node(
        "Gather",
        &["emb", "ids"],
        &["out_b"],
        vec![("axis", A::Int(0))],
    );
    b.output("out_a");
    b.output("out_b");
    let p = dir.join("m.onnx");
    b.write(&p).unwrap();
    p
}

#[test]
fn run_prints_outputs_and_writes_npy() {
    let d = tmpdir("run");
    let m = model(&d);
    let out = d.join("out");
    let o = optc(&["run", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("out_a: f32[2,4]") && so.contains("out_b: f32[3,3]"),
        "{so}"
    );
    let a = optc::npy::read(&out.join("out_a.npy")).unwrap();
    assert_eq!(a.shape(), &[2, 4]);
}

#[test]
fn npy_inputs_are_used() {
    let d = tmpdir("npy");
    let m = model(&d);
    let x = Tensor::from_f32(vec![2, 5], (0..10).map(|i| i as f32 / 10.0).collect()).unwrap();
    let ids = Tensor::from_i64(vec![3], vec![3, 0, 1]).unwrap();
    optc::npy::write(&d.join("x.npy"), &x).unwrap();
    optc::npy::write(&d.join("ids.npy"), &ids).unwrap();
    let out = d.join("out");
    let xa = format!("x={}", d.join("x.npy").display());
    let ia = format!("ids={}", d.join("ids.npy").display());
    let o = optc(&[
        "run",
        m.to_str().unwrap(),
        "--input",
        &xa,
        "--input",
        &ia,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    // oracle: tract on the same inputs
    let want = optc_onnx::oracle::run_tract(&std::fs::read(&m).unwrap(), &[x, ids]).unwrap();
    for (name, w) in ["out_a", "out_b"].iter().zip(&want) {
        let got = optc::npy::read(&out.join(format!("{name}.npy"))).unwrap();
        let d = optc::compare(&got, w, 1e-4, 1e-5).unwrap();
        assert!(d.allclose, "{name}: {d:?}");
    }
    // a wrongly shaped input names the input
    optc::npy::write(
        &d.join("bad.npy"),
        &Tensor::from_f32(vec![5, 2], vec![0.0; 10]).unwrap(),
    )
    .unwrap();
    let ba = format!("x={}", d.join("bad.npy").display());
    let o = optc(&["run", m.to_str().unwrap(), "--input", &ba]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    // (the importer takes dynamic dims from given values, so it checks them first)
    assert!(
        se.contains("'x'") && se.contains("x=5x2") && se.contains(": 2x5"),
        "{se}"
    );
}

#[test]
fn dynamic_dims_come_from_the_given_inputs() {
    // A dynamic batch: `run --input` needs no --input-shape; the output follows the data.
    let d = tmpdir("dyn");
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[-1, 3]);
    b.node("Relu", &["x"], &["y"], vec![]);
    b.output("y");
    let m = d.join("dyn.onnx");
    std::fs::write(&m, b.to_bytes()).unwrap();
    for batch in [1, 7] {
        let x = Tensor::from_f32(vec![batch, 3], vec![-1.0; batch * 3]).unwrap();
        optc::npy::write(&d.join("x.npy"), &x).unwrap();
        let arg = format!("x={}", d.join("x.npy").display());
        let o = optc(&["run", m.to_str().unwrap(), "--input", &arg]);
        let (so, se) = text(&o);
        assert!(o.status.success(), "{se}");
        assert!(so.contains(&format!("f32[{batch},3]")), "{so}");
    }
    // without data the error says how to fix the shape
    let o = optc(&["run", m.to_str().unwrap()]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(se.contains("--input-shape x="), "{se}");
}

#[test]
fn tensorproto_inputs_and_outputs() {
    let d = tmpdir("pb");
    let m = model(&d);
    let inputs = d.join("in");
    let outputs = d.join("outpb");
    std::fs::create_dir_all(&inputs).unwrap();
    // write inputs with optc's own run on random data → npy, then as TensorProto via the
    // ModelBuilder's encoder is not available, so use a model-independent route: run
    // twice and compare --outputs with --out.
    let o = optc(&[
        "run",
        m.to_str().unwrap(),
        "--seed",
        "5",
        "--outputs",
        outputs.to_str().unwrap(),
        "--out",
        inputs.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    for k in 0..2 {
        assert!(outputs.join(format!("output_{k}.pb")).exists());
    }
    // feed output_0.pb back as an input of an identity-like model
    let mut b = ModelBuilder::new(17);
    b.input("t", DType::F32, &[2, 4]);
    b.node("Identity", &["t"], &["u"], vec![]);
    b.output("u");
    let idm = d.join("id.onnx");
    b.write(&idm).unwrap();
    let dd = d.join("data");
    std::fs::create_dir_all(&dd).unwrap();
    std::fs::copy(outputs.join("output_0.pb"), dd.join("input_0.pb")).unwrap();
    let o2 = d.join("o2");
    let o = optc(&[
        "run",
        idm.to_str().unwrap(),
        "--inputs",
        dd.to_str().unwrap(),
        "--out",
        o2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    let a = optc::npy::read(&inputs.join("out_a.npy")).unwrap();
    let b = optc::npy::read(&o2.join("u.npy")).unwrap();
    assert_eq!(a, b);
}

#[test]
fn check_passes_and_reports_errors() {
    let d = tmpdir("check");
    let m = model(&d);
    let o = optc(&["check", m.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("out_a") && so.contains("max abs") && so.contains("ok"),
        "{so}"
    );
}

/// `check --expected DIR` compares with reference `output_N.pb` files instead of tract: the
/// right values pass, values off by one fail (exit 1), a missing file or missing inputs are
/// errors that say what to pass.
#[test]
fn check_against_expected_outputs() {
    let d = tmpdir("expected");
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2, 3]);
    b.initializer("two", &Tensor::from_f32(vec![1], vec![2.0]).unwrap());
    b.node("Mul", &["x", "two"], &["t"], vec![]);
    b.node("Relu", &["t"], &["y"], vec![]);
    b.output("y");
    let m = d.join("m.onnx");
    b.write(&m).unwrap();
    let x = [-1.5f32, 0.25, 3.0, -0.0, 7.5, -2.0];
    let inputs = d.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    let xt = Tensor::from_f32(vec![2, 3], x.to_vec()).unwrap();
    std::fs::write(inputs.join("input_0.pb"), optc_onnx::tensor_to_pb(&xt, "x")).unwrap();
    let run = |shift: f32, dir: &str| {
        let exp = d.join(dir);
        std::fs::create_dir_all(&exp).unwrap();
        let y: Vec<f32> = x.iter().map(|v| (2.0 * v).max(0.0) + shift).collect();
        let yt = Tensor::from_f32(vec![2, 3], y).unwrap();
        std::fs::write(exp.join("output_0.pb"), optc_onnx::tensor_to_pb(&yt, "y")).unwrap();
        let args = [
            "check",
            m.to_str().unwrap(),
            "--inputs",
            inputs.to_str().unwrap(),
            "--expected",
            exp.to_str().unwrap(),
        ];
        optc(&args)
    };
    let o = run(0.0, "right");
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("all outputs match the reference outputs"),
        "{so}"
    );
    let o = run(1.0, "off");
    let (so, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{so}");
    assert!(
        so.contains("MISMATCH") && so.contains("differ from the reference"),
        "{so}"
    );
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = optc(&[
        "check",
        m.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--expected",
        empty.to_str().unwrap(),
    ]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{se}");
    assert!(
        se.contains("output_0.pb") && se.contains("1 output(s)"),
        "{se}"
    );
    let o = optc(&[
        "check",
        m.to_str().unwrap(),
        "--expected",
        empty.to_str().unwrap(),
    ]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{se}");
    assert!(se.contains("--inputs DIR"), "{se}");
}

/// Outputs so small that `atol` alone would accept anything get a note pointing at `--atol 0`;
/// outputs of normal size do not.
#[test]
fn check_notes_outputs_below_atol() {
    let d = tmpdir("tiny");
    for (scale, noted) in [(1e-9f32, true), (1.0f32, false)] {
        let mut b = ModelBuilder::new(17);
        b.input("x", DType::F32, &[1, 8]);
        b.initializer(
            "s",
            &Tensor::new(vec![1], optc_ir::Data::F32(vec![scale])).unwrap(),
        );
        b.node("Mul", &["x", "s"], &["y"], vec![]);
        b.output("y");
        let p = d.join("tiny.onnx");
        b.write(&p).unwrap();
        let o = optc(&["check", p.to_str().unwrap()]);
        let (so, se) = text(&o);
        assert!(o.status.success(), "{so}\n{se}");
        assert_eq!(so.contains("note: y (|values| <="), noted, "{so}");
        let o = optc(&["check", p.to_str().unwrap(), "--atol", "0"]);
        let (so, _) = text(&o);
        assert!(o.status.success() && !so.contains("note:"), "{so}");
    }
}

#[test]
fn truncated_model_one_paragraph_exit_1() {
    let d = tmpdir("trunc");
    let m = model(&d);
    let b = std::fs::read(&m).unwrap();
    let t = d.join("t.onnx");
    std::fs::write(&t, &b[..b.len() / 2]).unwrap();
    let o = optc(&["run", t.to_str().unwrap()]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{se}");
    assert!(
        se.starts_with("error: ") && !se.contains("panicked"),
        "{se}"
    );
    assert!(se.trim().lines().count() <= 3, "{se}");
}

#[test]
fn unknown_op_exit_1_lists_ops() {
    let d = tmpdir("unk");
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 4]);
    b.node_named("mystery_node", "Mystery", &["x"], &["y"], vec![]);
    b.output("y");
    let p = d.join("u.onnx");
    b.write(&p).unwrap();
    for cmd in ["run", "check", "bench"] {
        let o = optc(&[cmd, p.to_str().unwrap()]);
        let (_, se) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {se}");
        assert!(
            se.contains("Mystery") && se.contains("mystery_node") && !se.contains("panicked"),
            "{se}"
        );
    }
}

#[test]
fn missing_file_and_bad_flags() {
    let o = optc(&["run", "/nonexistent/model.onnx"]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(se.contains("/nonexistent/model.onnx"), "{se}");
    let d = tmpdir("flags");
    let m = model(&d);
    let o = optc(&["run", m.to_str().unwrap(), "--input-shape", "x=2xq"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    let o = optc(&["run", m.to_str().unwrap(), "--target", "vax"]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(se.contains("vax"), "{se}");
}

#[test]
fn bench_json() {
    let d = tmpdir("bench");
    let m = model(&d);
    let o = optc(&[
        "bench",
        m.to_str().unwrap(),
        "--json",
        "--time",
        "0.2",
        "--threads",
        "1",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    let line = so
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON line");
    assert!(
        line.contains("\"median_ms\"") && line.contains("\"p90_ms\""),
        "{line}"
    );
    let o = optc(&["bench", m.to_str().unwrap(), "--time", "0.2"]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("optc") && so.contains("tract") && so.contains("median"),
        "{so}"
    );
}

#[test]
fn bench_notes_a_model_tract_cannot_run() {
    // Det is imported by optc and not by tract: the benchmark is optc's, tract's failure a note.
    let d = tmpdir("bench_tract");
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[3, 3]);
    b.node("Det", &["x"], &["y"], vec![]);
    b.output("y");
    let m = d.join("det.onnx");
    b.write(&m).unwrap();
    let o = optc(&["bench", m.to_str().unwrap(), "--time", "0.1"]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("optc") && so.contains("tract    not measured") && so.contains("Det"),
        "{so}"
    );
    // `check` compares with tract: it cannot, and says that optc itself ran.
    let o = optc(&["check", m.to_str().unwrap()]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{se}");
    assert!(
        se.contains("optc compiled and ran the model") && se.contains("Det"),
        "{se}"
    );
    let o = optc(&[
        "bench",
        m.to_str().unwrap(),
        "--json",
        "--tract",
        "--time",
        "0.1",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("\"median_ms\"") && so.contains("\"tract_error\""),
        "{so}"
    );
}

fn explain_model(dir: &Path) -> PathBuf {
    // conv + relu + (x * 1) + double negation: fusion, mul-one and neg-neg fire
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 2, 5, 5]);
    let w: Vec<f32> = (0..36).map(|i| (i as f32 * 0.3).cos()).collect();
    b.initializer("w", &Tensor::from_f32(vec![2, 2, 3, 3], w).unwrap());
    b.initializer("one", &Tensor::scalar_f32(1.0));
    b.node_named(
        "conv",
        "Conv",
        &["x", "w"],
        &["c"],
        vec![("pads", A::Ints(vec![1; 4]))],
    );
    b.node_named("relu", "Relu", &["c"], &["r"], vec![]);
    b.node_named("times_one", "Mul", &["r", "one"], &["m"], vec![]);
    b.node_named("neg1", "Neg", &["m"], &["n1"], vec![]);
    b.node_named("neg2", "Neg", &["n1"], &["y"], vec![]);
    b.output("y");
    let p = dir.join("e.onnx");
    b.write(&p).unwrap();
    p
}

#[test]
fn explain_reports_rules_and_emits_ir_and_dot() {
    let d = tmpdir("explain");
    let m = explain_model(&d);
    let o = optc(&["explain", m.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("-O3") && so.contains("stopped:") && so.contains("e-graph"),
        "{so}"
    );
    for rule in ["fuse-unary", "mul-one", "neg-neg"] {
        let line = so
            .lines()
            .find(|l| l.trim_start().starts_with(rule))
            .unwrap_or_else(|| panic!("{rule} missing:\n{so}"));
        assert!(!line.ends_with("fired 0"), "{line}");
    }
    assert!(so.contains("nodes 5 -> 1"), "{so}");
    // the IR is printed in the text format and parses back
    let o = optc(&["explain", m.to_str().unwrap(), "--emit", "ir"]);
    let (ir, _) = text(&o);
    assert!(ir.contains("fused.conv") && ir.contains("return"), "{ir}");
    let o = optc(&["explain", m.to_str().unwrap(), "--emit", "dot"]);
    let (dot, _) = text(&o);
    assert!(dot.starts_with("digraph") && dot.contains("->"), "{dot}");
}

#[test]
fn extra_rules_and_disabled_rules() {
    let d = tmpdir("rules");
    let m = explain_model(&d);
    let rules = d.join("my.rules");
    std::fs::write(
        &rules,
        "# a user rule\nmy-relu-relu: (relu (relu ?x)) => (relu ?x)\n",
    )
    .unwrap();
    let o = optc(&[
        "explain",
        m.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
        "--disable-rule",
        "neg-neg",
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(so.contains("my-relu-relu") && so.contains("user"), "{so}");
    assert!(!so.contains("neg-neg"), "{so}");
    // a disabled rule that does not exist, and a malformed rule file, are errors
    let o = optc(&[
        "explain",
        m.to_str().unwrap(),
        "--disable-rule",
        "no-such-rule",
    ]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        se.contains("no-such-rule") && se.contains("neg-neg"),
        "{se}"
    );
    std::fs::write(&rules, "broken (relu ?x) ?x\n").unwrap();
    let o = optc(&[
        "explain",
        m.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(se.contains("my.rules:1"), "{se}");
    // the optimized model still computes what tract computes, at every level
    for lvl in ["-O0", "-O1", "-O2", "-O3"] {
        let o = optc(&["check", m.to_str().unwrap(), lvl]);
        assert!(o.status.success(), "{lvl}: {:?}", text(&o));
    }
}

#[test]
fn every_command_shares_the_compile_options() {
    // One pipeline: the rule options reach ahead-of-time compiles and every subcommand.
    let d = tmpdir("shared-options");
    let m = explain_model(&d);
    let (m, out) = (m.to_str().unwrap(), d.join("m.o"));
    let out = out.to_str().unwrap();
    let commands: [&[&str]; 5] = [
        &["run", m],
        &["check", m],
        &["bench", m, "--time", "0"],
        &["explain", m],
        &[m, "-o", out],
    ];
    for cmd in commands {
        let args = [cmd, &["--disable-rule", "no-such-rule"]].concat();
        let o = optc(&args);
        let (_, se) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {se}");
        assert!(se.contains("no-such-rule"), "{args:?}: {se}");
    }
    let o = optc(&[m, "-o", out, "--disable-rule", "neg-neg", "-v"]);
    let (_, se) = text(&o);
    assert!(
        o.status.success() && se.contains("compile time: import"),
        "{se}"
    );
    // -v says what the object's run needs and what the compile took.
    assert!(
        se.contains("memory: the object's run needs its workspace"),
        "{se}"
    );
    assert!(se.contains("MiB resident"), "{se}");
}

#[test]
fn rules_are_checked_before_they_are_trusted() {
    let d = tmpdir("rulecheck");
    let good = d.join("good.rules");
    std::fs::write(
        &good,
        "double-neg: (neg (neg ?x)) => ?x\n\
         tt: (transpose[perm=?p] (transpose[perm=?q] ?x)) => (transpose[perm=(permute ?q ?p)] ?x)\n",
    )
    .unwrap();
    let o = optc(&["rules", "check", good.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(
        so.contains("double-neg: ok (") && so.contains("tt: ok ("),
        "{so}"
    );
    let bad = d.join("bad.rules");
    std::fs::write(
        &bad,
        "double-neg: (neg (neg ?x)) => ?x\nwrong: (relu ?x) => (abs ?x)\n",
    )
    .unwrap();
    let o = optc(&["rules", "check", bad.to_str().unwrap()]);
    let (so, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{so}");
    assert!(so.contains("double-neg: ok ("), "{so}");
    // the counterexample: the graph with both sides, its inputs and both outputs
    assert!(so.contains("wrong: UNSOUND"), "{so}");
    for part in [
        "relu(",
        "abs(",
        "return %lhs",
        "input %x",
        "lhs = f32",
        "rhs = f32",
    ] {
        assert!(so.contains(part), "{part}:\n{so}");
    }
    // every command with --rules refuses the unsound rule, naming it
    let m = explain_model(&d);
    for cmd in ["explain", "run", "check"] {
        let o = optc(&[cmd, m.to_str().unwrap(), "--rules", bad.to_str().unwrap()]);
        let (so, se) = text(&o);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {so}\n{se}");
        assert!(
            se.contains("rule wrong is unsound") && se.contains("abs("),
            "{cmd}: {se}"
        );
    }
    // and a sound one is used
    let o = optc(&[
        "explain",
        m.to_str().unwrap(),
        "--rules",
        good.to_str().unwrap(),
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    assert!(so.contains("double-neg"), "{so}");
}

/// A 3x3 conv that takes the Winograd path on AVX2 hosts.
fn conv_model(dir: &Path) -> PathBuf {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 16, 12, 12]);
    let w: Vec<f32> = (0..16 * 16 * 9)
        .map(|i| (i as f32 * 0.37).sin() * 0.1)
        .collect();
    b.initializer("w", &Tensor::from_f32(vec![16, 16, 3, 3], w).unwrap());
    b.node(
        "Conv",
        &["x", "w"],
        &["y"],
        vec![("pads", A::Ints(vec![1, 1, 1, 1]))],
    );
    b.output("y");
    let p = dir.join("conv.onnx");
    b.write(&p).unwrap();
    p
}

/// `bench --profile` prints every kernel with its time, share and GFLOP/s; `--trace` writes
/// a Chrome trace with each kernel of the first runs and the tasks of both threads.
#[test]
fn bench_profile_and_trace() {
    let d = tmpdir("profile");
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 32, 28, 28]);
    let w: Vec<f32> = (0..64 * 32 * 9)
        .map(|i| (i as f32 * 0.37).sin() * 0.1)
        .collect();
    b.initializer("w", &Tensor::from_f32(vec![64, 32, 3, 3], w).unwrap());
    b.node_named(
        "conv_big",
        "Conv",
        &["x", "w"],
        &["c"],
        vec![("pads", A::Ints(vec![1, 1, 1, 1]))],
    );
    b.node_named("act", "Relu", &["c"], &["r"], vec![]);
    b.node_named("pool", "GlobalAveragePool", &["r"], &["y"], vec![]);
    b.output("y");
    let m = d.join("profile.onnx");
    b.write(&m).unwrap();
    let trace = d.join("trace.json");
    let o = optc(&[
        "bench",
        m.to_str().unwrap(),
        "--no-tract",
        "--time",
        "0.3",
        "--threads",
        "2",
        "--profile",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    let rows: Vec<&str> = so
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("ms/run"))
        .skip(1)
        .take_while(|l| !l.starts_with("trace"))
        .collect();
    // The conv with its fused Relu, and the pool; shares add up to 100%.
    assert_eq!(rows.len(), 2, "{so}");
    let conv = rows.iter().find(|r| r.contains("conv+relu")).expect(&so);
    let pool = rows
        .iter()
        .find(|r| r.contains("global_average_pool") || r.contains("pool"))
        .expect(&so);
    let field = |r: &str, i: usize| r.split_whitespace().nth(i).unwrap().to_string();
    let share = |r: &str| field(r, 1).trim_end_matches('%').parse::<f64>().unwrap();
    assert!((share(conv) + share(pool) - 100.0).abs() < 0.3, "{so}");
    // 2 x 64 x 28 x 28 x 32 x 9 FLOPs in the conv's time.
    let (ms, gflops) = (
        field(conv, 0).parse::<f64>().unwrap(),
        field(conv, 2).parse::<f64>().unwrap(),
    );
    let want = 2.0 * 64.0 * 784.0 * 288.0 / (ms * 1e6);
    assert!(
        (gflops - want).abs() <= 0.01 * want + 0.1,
        "{gflops} vs {want}: {so}"
    );
    assert_eq!(field(pool, 2), "-", "{so}");

    let t: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let events = t["traceEvents"].as_array().unwrap();
    let spans = |f: &dyn Fn(&serde_json::Value) -> bool| {
        events.iter().filter(|e| e["ph"] == "X" && f(e)).count()
    };
    // 20 runs of two kernels on the caller.
    assert_eq!(spans(&|e| e["tid"] == 0 && e["cat"] != "task"), 40, "{t}");
    // The conv's tasks, each on the caller (0) or the worker (1): which, the scheduler
    // decides (on a busy machine the caller may run them all).
    let tasks = spans(&|e| e["cat"] == "task");
    assert!(tasks >= 20, "{t}");
    assert_eq!(
        tasks,
        spans(&|e| e["cat"] == "task" && (e["tid"] == 0 || e["tid"] == 1))
    );
}

#[test]
fn winograd_flag() {
    let d = tmpdir("winograd");
    let m = conv_model(&d);
    for w in ["0", "2", "4"] {
        let o = optc(&["check", m.to_str().unwrap(), "--winograd", w]);
        let (so, se) = text(&o);
        assert!(o.status.success(), "--winograd {w}: {so}\n{se}");
    }
    let o = optc(&["check", m.to_str().unwrap(), "--winograd", "3"]);
    let (_, se) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{se}");
    assert!(
        se.contains("--winograd") && se.contains("0 (off), 2 or 4"),
        "{se}"
    );
}

#[test]
fn explain_lists_the_int8_kernels_and_why() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/quantized/tool_dynamic_mlp/model.onnx");
    for (target, scheme) in [("x86_64-avx2", "scheme "), ("x86_64-avx512", "scheme vnni")] {
        let o = optc(&["explain", m.to_str().unwrap(), "--target", target]);
        let (so, se) = text(&o);
        assert!(o.status.success(), "{so}\n{se}");
        let section = so
            .split_once(&format!("int8 kernels ({target}, as run in the JIT):"))
            .unwrap_or_else(|| panic!("no int8 section:\n{so}"))
            .1;
        assert!(
            section.contains("int8 matmul") && section.contains(scheme),
            "{so}"
        );
    }
    // A model without int8 ops has no such section.
    let d = tmpdir("explain_f32");
    let o = optc(&["explain", explain_model(&d).to_str().unwrap()]);
    assert!(!text(&o).0.contains("int8 kernels"));
}

#[test]
fn sweep_prints_the_table_and_writes_the_plot() {
    let d = tmpdir("sweep");
    // A classifier: x [16, 32] -> Gemm 32x64 + Relu -> Gemm 64x10.
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[16, 32]);
    let w1: Vec<f32> = (0..64 * 32)
        .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
        .collect();
    let w2: Vec<f32> = (0..10 * 64)
        .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
        .collect();
    b.initializer("w1", &Tensor::from_f32(vec![64, 32], w1).unwrap());
    b.initializer("w2", &Tensor::from_f32(vec![10, 64], w2).unwrap());
    b.node("Gemm", &["x", "w1"], &["h"], vec![("transB", A::Int(1))]);
    b.node("Relu", &["h"], &["r"], vec![]);
    b.node("Gemm", &["r", "w2"], &["y"], vec![("transB", A::Int(1))]);
    b.output("y");
    let m = d.join("m.onnx");
    b.write(&m).unwrap();
    let svg = d.join("s.svg");
    let o = optc(&["sweep", m.to_str().unwrap(), "--svg", svg.to_str().unwrap()]);
    let (so, se) = text(&o);
    assert!(o.status.success(), "{so}\n{se}");
    for setting in [
        "| int8 |",
        "| prune 0.5 |",
        "| prune 0.9 |",
        "| low-rank energy=0.9 |",
    ] {
        assert!(so.contains(setting), "{setting}: {so}");
    }
    assert!(so.contains("Pareto front: "), "{so}");
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert!(plot.contains("Pareto front") && plot.contains("prune 0.9"));
    // The lossy flags belong to the grid.
    let o = optc(&["sweep", m.to_str().unwrap(), "--prune", "0.5"]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("own grid"), "{}", text(&o).1);
}
