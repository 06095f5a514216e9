//! Whole-model latency of the corpus models at -O3, as criterion benches.
//!
//! `cargo bench --bench models` — env: `OPTC_BENCH_THREADS` (default 1), `OPTC_BENCH_TIME`
//! (seconds of measurement per model, default 1), `OPTC_BENCH_SAMPLES` (default 20),
//! `OPTC_BENCH_MODELS` (comma list of models under `~/.cache/optc-corpus/models`, default
//! resnet18,mobilenet_v2,bert_tiny_l2_h128,mlp_784_512_256_10; `none` to skip). A missing
//! corpus or a model that fails to compile is reported on stdout and skipped, never an error.
//!
//! Each model is compiled once through `optc::compile_file` (-O3, the thread count above) and
//! run with `run_into` on fixed random inputs and preallocated outputs; criterion reports the
//! time per run, then one line gives the median sample in ms.

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, Criterion};
use optc_ir::Tensor;
use std::path::PathBuf;

const DEFAULT_MODELS: &str = "resnet18,mobilenet_v2,bert_tiny_l2_h128,mlp_784_512_256_10";

fn model_benches(c: &mut Criterion) {
    let threads = common::threads();
    let models = std::env::var("OPTC_BENCH_MODELS").unwrap_or_else(|_| DEFAULT_MODELS.into());
    if models == "none" {
        return;
    }
    let dir =
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/optc-corpus/models");
    let listing = common::listing();
    let mut group = c.benchmark_group(format!("model_O3_t{threads}"));
    common::setup(&mut group);
    for name in models.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let path = dir.join(name).join("model.onnx");
        if !path.exists() {
            if !listing {
                println!("model {name}: not found at {}, skipped\n", path.display());
            }
            continue;
        }
        if listing {
            // Register the name only; compiling is not needed to list it.
            group.bench_function(name, |b| b.iter(|| ()));
            continue;
        }
        let opts = optc::Options {
            opt_level: 3,
            threads,
            ..Default::default()
        };
        let mut m = match optc::compile_file(&path, &opts) {
            Ok(m) => m,
            Err(e) => {
                println!("model {name}: compile failed ({e}), skipped\n");
                continue;
            }
        };
        let inputs = optc::random_inputs(&m.input_types(), 0);
        let inputs: Vec<&Tensor> = inputs.iter().collect();
        let mut outs: Vec<Tensor> = m
            .output_types()
            .iter()
            .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
            .collect();
        if let Err(e) = m.run_into(&inputs, &mut outs) {
            println!("model {name}: run failed ({e}), skipped\n");
            continue;
        }
        let mut record = vec![];
        group.bench_function(name, |b| {
            common::timed(b, &mut record, || {
                m.run_into(&inputs, &mut outs).expect("run");
            });
        });
        if let Some(s) = common::median(&record) {
            println!(
                "model {name:<24} -O3 threads={threads}  {:>9.3} ms (median sample)\n",
                s * 1e3
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = model_benches
}
criterion_main!(benches);
