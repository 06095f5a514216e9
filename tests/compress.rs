//! Lossy compression end to end (`optc::compress`): lossy passes run only when asked; the
//! quantized model and its report are checked against an independent computation (tract on
//! the original model, the reference interpreter on the compressed graph); a budget makes
//! layers fall back to f32 or fails the compile.

mod common;

use common::{models, Rng};
use optc::compress::{Budget, CompressOptions, Quantization};
use optc::{Options, Tensor};
use optc_ir::Op;
use std::path::{Path, PathBuf};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("optc-compress-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` sets of the CNN's input, values uniform in `[-scale, scale]`, as `input_0_<k>.pb`.
fn write_sets(d: &Path, n: usize, scale: f32, seed: u64) -> Vec<Tensor> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|k| {
            let t = r.tensor(&[2, 3, 16, 16], -scale, scale);
            std::fs::write(
                d.join(format!("input_0_{k}.pb")),
                optc_onnx::tensor_to_pb(&t, "input"),
            )
            .unwrap();
            t
        })
        .collect()
}

fn int8(calibrate: &Path, eval: Option<&Path>, budget: &str) -> Options {
    Options {
        opt_level: 3,
        compress: CompressOptions {
            quantize: Some(Quantization::Int8),
            calibrate: vec![calibrate.to_path_buf()],
            eval: eval.map(|e| vec![e.to_path_buf()]).unwrap_or_default(),
            max_error: Budget::parse(budget).unwrap(),
            ..Default::default()
        },
        ..Options::default()
    }
}

fn quantized_ops(g: &optc::Graph) -> usize {
    g.g.node_weights()
        .filter(|n| {
            let base = match &n.op {
                Op::Fused { base, .. } => &**base,
                op => op,
            };
            matches!(base, Op::QuantizedConv { .. } | Op::QuantizedMatMul { .. })
        })
        .count()
}

#[test]
fn lossy_passes_run_only_when_asked() {
    let (bytes, _) = models::small_cnn_with_batchnorm();
    for level in 0..=3 {
        let opts = Options {
            opt_level: level,
            ..Options::default()
        };
        let m = optc::compile_bytes(&bytes, &opts).unwrap();
        assert_eq!(quantized_ops(m.graph()), 0, "-O{level}");
        assert!(m.report().compression.is_none());
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

#[test]
fn quantized_model_and_report_against_an_independent_computation() {
    let (bytes, _) = models::small_cnn_with_batchnorm();
    let d = dir("report");
    let sets = write_sets(&d, 3, 1.0, 5);
    let m = optc::compile_bytes(&bytes, &int8(&d, None, "")).unwrap();
    assert!(
        quantized_ops(m.graph()) >= 2,
        "{}",
        optc_ir::text::print(m.graph())
    );
    let r = m.report().compression.clone().expect("a report");
    assert!(r.passed());
    assert!(r.after.weight_bytes < r.before.weight_bytes);
    assert!(r.after.int8_ops > 0.0 && r.after.flops < r.before.flops);
    // Independent: tract runs the original model, the interpreter the compressed graph.
    let (mut max_abs, mut min_cos) = (0f64, 1f64);
    for s in &sets {
        let want = optc_onnx::oracle::run_tract(&bytes, std::slice::from_ref(s)).unwrap();
        let got = optc_ir::interp::run(m.graph(), std::slice::from_ref(s)).unwrap();
        let (w, g) = (want[0].as_f32().unwrap(), got[0].as_f32().unwrap());
        for (x, y) in w.iter().zip(g) {
            max_abs = max_abs.max((x - y).abs() as f64);
        }
        for (wr, gr) in w.chunks(10).zip(g.chunks(10)) {
            min_cos = min_cos.min(cosine(wr, gr));
        }
    }
    let o = &r.outputs[0];
    assert!(max_abs > 0.0, "quantization changed nothing?");
    assert!(
        (o.max_abs - max_abs).abs() <= 1e-4 * max_abs.max(1e-3),
        "report {} vs independent {max_abs}",
        o.max_abs
    );
    assert!(
        (o.min_cosine - min_cos).abs() <= 1e-6,
        "report {} vs independent {min_cos}",
        o.min_cosine
    );
    // The JIT runs the compressed graph as the interpreter does (the int8 ops are exact).
    let mut m = m;
    let jit = m.run(std::slice::from_ref(&sets[0])).unwrap();
    let interp = optc_ir::interp::run(m.graph(), std::slice::from_ref(&sets[0])).unwrap();
    let d = optc::compare(&jit[0], &interp[0], 1e-5, 1e-5).unwrap();
    assert!(d.allclose, "{d:?}");
    // Every layer says what it computes and, when it stayed f32, why.
    for l in &r.layers {
        assert!(
            l.what.starts_with("conv ") || l.what.starts_with("matmul "),
            "{l:?}"
        );
        assert_eq!(l.choice == "f32", l.why_f32.is_some(), "{l:?}");
    }
    // The markdown and JSON reports carry the same numbers.
    assert!(r.markdown().contains(&format!("{:.6}", o.min_cosine)));
    assert!(r.json().contains("\"within_budget\": true"));
}

#[test]
fn a_budget_makes_layers_fall_back_or_fails_the_compile() {
    let (bytes, _) = models::small_cnn_with_batchnorm();
    // Calibrated on small values, measured on large ones: the convs' static activation ranges
    // clip the evaluation inputs, which the per-layer estimates (on calibration data) miss.
    let cal = dir("cal");
    write_sets(&cal, 2, 0.01, 7);
    let eval = dir("eval");
    write_sets(&eval, 2, 4.0, 8);
    let strict = Options {
        compress: CompressOptions {
            fallback_rounds: 0,
            ..int8(&cal, Some(&eval), "cos=0.9999").compress
        },
        ..int8(&cal, Some(&eval), "cos=0.9999")
    };
    match optc::compile_bytes(&bytes, &strict) {
        Err(optc::Error::OverBudget(r)) => {
            assert!(!r.violations.is_empty());
            assert!(r.outputs[0].min_cosine < 0.9999, "{:?}", r.outputs);
        }
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("the compile should have failed"),
    }
    // With fallback rounds the layers that break it go back to f32 and the model fits.
    let m = optc::compile_bytes(&bytes, &int8(&cal, Some(&eval), "cos=0.9999")).unwrap();
    let r = m.report().compression.as_ref().unwrap();
    assert!(r.passed(), "{}", r.markdown());
    assert!(r.outputs[0].min_cosine >= 0.9999);
    assert!(
        r.notes.iter().any(|n| n.contains("back to f32")),
        "{:?}",
        r.notes
    );
}

#[test]
fn calibration_data_errors_name_the_problem() {
    let (bytes, _) = models::small_cnn_with_batchnorm();
    let d = dir("bad");
    let mut r = Rng::new(1);
    let t = r.tensor(&[2, 3, 16], -1.0, 1.0);
    std::fs::write(d.join("input_0.pb"), optc_onnx::tensor_to_pb(&t, "input")).unwrap();
    let e = optc::compile_bytes(&bytes, &int8(&d, None, ""))
        .err()
        .expect("a rank-3 input is refused")
        .to_string();
    assert!(
        e.contains("input 'input'") && e.contains("f32[2,3,16]"),
        "{e}"
    );
    let empty = dir("empty");
    let e = optc::compile_bytes(&bytes, &int8(&empty, None, ""))
        .err()
        .expect("no data is an error")
        .to_string();
    assert!(e.contains("no inputs found"), "{e}");
}
