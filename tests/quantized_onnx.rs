//! Quantized ONNX models against onnxruntime's outputs: every case of
//! `tests/data/quantized/` (made by its `make_fixtures.py` with onnxruntime; see there) is
//! imported and run in the reference interpreter, and compiled and run by the JIT at -O0
//! and -O2. The interpreter and -O0 must give onnxruntime's outputs bit for bit (optc
//! follows onnxruntime's arithmetic step by step: integers exact, the same f32 operations
//! in the same order). So must -O2 on the single-op cases. The `tool_*` cases are whole
//! models made by onnxruntime's quantization tool: at -O2 `passes/quantize` moves them onto
//! optc's int8 ops, which quantize activations by multiplying with the reciprocal of the
//! scale (now and then one step away from onnxruntime's division, see `optc_ir::quantized`)
//! and sum the products exactly; their outputs are compared within a bound given by the
//! output's quantization step (static models) or its range (dynamic models), and must be
//! exact for all but a few elements.

use optc::{Options, Tensor};
use std::path::{Path, PathBuf};

/// Largest difference of a static `tool_*` model's output at -O2, in steps of its output
/// quantization.
const MODEL_STEPS: f64 = 2.0;
/// Largest difference of a dynamic `tool_*` model's output at -O2, relative to its largest
/// magnitude.
const MODEL_RANGE: f64 = 1e-2;
/// Fraction of a `tool_*` model's output elements that may differ at all at -O2.
const MODEL_DIFFERENT: f64 = 0.05;

fn cases() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quantized");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    v.sort();
    assert!(v.len() >= 30, "only {} cases in {}", v.len(), dir.display());
    v
}

fn read_tensors(dir: &Path, prefix: &str) -> Vec<Tensor> {
    (0..)
        .map(|i| dir.join(format!("{prefix}_{i}.pb")))
        .take_while(|p| p.exists())
        .map(|p| {
            optc_onnx::tensor_from_pb(&std::fs::read(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

/// The output quantization step of a `tool_*` model: the smallest positive difference
/// between two of onnxruntime's output values (they lie on the output's grid).
fn grid_step(t: &Tensor) -> f64 {
    let mut v = t.to_f64_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.dedup();
    v.windows(2)
        .map(|w| w[1] - w[0])
        .fold(f64::INFINITY, f64::min)
}

/// Compare `got` with onnxruntime's `want`: exactly, or (`rewritten`: a whole model after
/// `passes/quantize`) within the bounds above. The message names what ran.
fn compare(case: &str, what: &str, got: &[Tensor], want: &[Tensor], rewritten: bool) {
    assert_eq!(got.len(), want.len(), "{case} {what}: number of outputs");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let label = format!("{case} {what} output {i}");
        assert_eq!(g.dtype(), w.dtype(), "{label}: dtype");
        assert_eq!(g.shape(), w.shape(), "{label}: shape");
        if !rewritten || g.dtype() != optc::DType::F32 {
            assert_eq!(g.data(), w.data(), "{label}: differs from onnxruntime");
            continue;
        }
        let (gv, wv) = (g.to_f64_vec(), w.to_f64_vec());
        let bound = if case.starts_with("tool_static") {
            MODEL_STEPS * grid_step(w)
        } else {
            MODEL_RANGE * wv.iter().fold(0f64, |m, v| m.max(v.abs()))
        };
        let mut different = 0;
        for (k, (a, b)) in gv.iter().zip(&wv).enumerate() {
            let d = (a - b).abs();
            assert!(
                d <= bound * (1.0 + 1e-6),
                "{label}: element {k} is {a}, onnxruntime {b} (bound {bound})"
            );
            if d > 0.0 {
                different += 1;
            }
        }
        assert!(
            different as f64 <= MODEL_DIFFERENT * gv.len() as f64,
            "{label}: {different} of {} elements differ from onnxruntime",
            gv.len()
        );
    }
}

#[test]
fn quantized_onnx_cases_match_onnxruntime() {
    for dir in cases() {
        let case = dir.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
        let inputs = read_tensors(&dir, "input");
        let want = read_tensors(&dir, "output");
        let opts = Options::default();
        let g = optc::import_bytes(&bytes, &opts).unwrap_or_else(|e| panic!("{case}: {e}"));
        let got = optc_ir::interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{case}: {e}"));
        compare(&case, "interpreter", &got, &want, false);
        for level in [0, 2] {
            let opts = Options {
                opt_level: level,
                ..Default::default()
            };
            let mut m = optc::compile_bytes(&bytes, &opts)
                .unwrap_or_else(|e| panic!("{case} -O{level}: {e}"));
            let got = m
                .run(&inputs)
                .unwrap_or_else(|e| panic!("{case} -O{level}: {e}"));
            let rewritten = level > 0 && case.starts_with("tool_");
            if rewritten {
                // passes/quantize moved the model onto the int8 ops (both layers)
                let int8 = m
                    .graph()
                    .g
                    .node_weights()
                    .filter(|n| {
                        let base = match &n.op {
                            optc_ir::Op::Fused { base, .. } => base,
                            op => op,
                        };
                        base.name().starts_with("quantized_")
                    })
                    .count();
                assert!(int8 >= 2, "{case} -O{level}: {int8} int8 ops");
            }
            compare(&case, &format!("JIT -O{level}"), &got, &want, rewritten);
        }
    }
}

/// On a target whose int8 convs beat f32 Winograd (`x86_64-avx512`: VNNI rates), fusion
/// gives each requantization (`fake_quantize`) to the int8 form extraction takes (or the next
/// int8 conv reads the value before it): every conv of onnxruntime's static QDQ CNN is a
/// `quantized_conv`, and no requantization of one is left to a separate node. (With the AVX2
/// rates one conv stays f32 Winograd.)
#[test]
fn requantization_fuses_into_the_int8_form_of_the_target() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/quantized/tool_static_cnn");
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let opts = Options {
        opt_level: 3,
        target: "x86_64-avx512".into(),
        ..Default::default()
    };
    let (g, _) = optc::optimize_bytes(&bytes, &opts).unwrap();
    let base = |op: &optc_ir::Op| match op {
        optc_ir::Op::Fused { base, .. } => (**base).clone(),
        op => op.clone(),
    };
    let mut int8_convs = 0;
    for n in g.g.node_indices() {
        let node = g.node(n);
        match base(&node.op) {
            optc_ir::Op::QuantizedConv { .. } => int8_convs += 1,
            optc_ir::Op::Conv { .. } => panic!("{}: an f32 conv", node.name),
            optc_ir::Op::Unary(optc_ir::UnaryOp::FakeQuantize { .. }) => {
                for v in g.node_inputs(n) {
                    assert!(
                        !matches!(base(&g.node(v.node).op), optc_ir::Op::QuantizedConv { .. }),
                        "{}: a separate requantization of an int8 conv",
                        node.name
                    );
                }
            }
            _ => {}
        }
    }
    assert_eq!(int8_convs, 2);
}
