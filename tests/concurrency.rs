//! Several threads, several models, one process: handles of one compiled model
//! ([`CompiledModel::share`]) and models of their own compiled on their threads, all
//! running at once with two threads each (so their parallel nodes compete for the one
//! thread pool), every output checked against tract on the original model.

mod common;

use common::models::{resnet_style_stage, transformer_encoder_block};
use common::*;
use optc::{CompiledModel, Options, Tensor};
use optc_onnx::oracle::run_tract;
use std::sync::Arc;

const THREADS: usize = 4;
const RUNS: usize = 25;

/// Inputs for run `k` of thread `t`: each run its own values.
fn inputs_for(template: &[Tensor], t: usize, k: usize) -> Vec<Tensor> {
    let mut r = Rng::new((t * 1000 + k) as u64 + 1);
    template
        .iter()
        .map(|x| match x.dtype() {
            optc::DType::F32 => r.tensor(x.shape(), -1.0, 1.0),
            _ => x.clone(),
        })
        .collect()
}

fn check_runs(label: &str, model: &mut CompiledModel, bytes: &[u8], template: &[Tensor], t: usize) {
    // The oracle's answers first (tract is not what is being stressed).
    let cases: Vec<(Vec<Tensor>, Vec<Tensor>)> = (0..RUNS)
        .map(|k| {
            let inputs = inputs_for(template, t, k);
            let want = run_tract(bytes, &inputs).expect("tract runs the model");
            (inputs, want)
        })
        .collect();
    for (k, (inputs, want)) in cases.iter().enumerate() {
        let got = model.run(inputs).expect("the run succeeds");
        for (g, w) in got.iter().zip(want) {
            let d = optc::compare(g, w, RTOL, ATOL).expect("same shape and type");
            assert!(d.allclose, "{label}: thread {t}, run {k}: {d:?}");
        }
    }
}

#[test]
fn shared_and_own_models_on_several_threads() {
    let (cnn, cnn_inputs) = resnet_style_stage();
    let (bert, bert_inputs) = transformer_encoder_block();
    let opts = Options {
        threads: 2,
        ..Default::default()
    };
    let shared = optc::compile_bytes(&cnn, &opts).expect("compiles");
    let (cnn, cnn_inputs) = (Arc::new(cnn), Arc::new(cnn_inputs));
    let (bert, bert_inputs) = (Arc::new(bert), Arc::new(bert_inputs));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            // Even threads: a handle of the shared model; odd threads: a model of their own,
            // compiled on that thread while the others run.
            let mut handle = (t % 2 == 0).then(|| shared.share());
            let (cnn, cnn_inputs, bert, bert_inputs) = (
                cnn.clone(),
                cnn_inputs.clone(),
                bert.clone(),
                bert_inputs.clone(),
            );
            let opts = opts.clone();
            s.spawn(move || match handle.as_mut() {
                Some(m) => check_runs("shared cnn", m, &cnn, &cnn_inputs, t),
                None => {
                    let mut own = optc::compile_bytes(&bert, &opts).expect("compiles");
                    check_runs("own transformer", &mut own, &bert, &bert_inputs, t);
                }
            });
        }
    });
    // The handles compiled nothing: the shared model was compiled once.
    assert_eq!(shared.compile_count(), 1);
}

#[test]
fn shared_handles_compile_new_shapes_on_their_own() {
    use optc::DType;
    use optc_onnx::builder::ModelBuilder;
    let mut r = Rng::new(5);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[-1, 8])
        .initializer("w", &r.tensor(&[8, 4], -1.0, 1.0))
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y");
    let bytes = b.to_bytes();
    let mut first = optc::compile_bytes(&bytes, &Options::default()).expect("compiles");
    let x3 = r.tensor(&[3, 8], -1.0, 1.0);
    first.run(std::slice::from_ref(&x3)).expect("runs");
    let handles: Vec<CompiledModel> = (0..THREADS).map(|_| first.share()).collect();
    std::thread::scope(|s| {
        for (t, mut h) in handles.into_iter().enumerate() {
            let bytes = &bytes;
            let x3 = &x3;
            s.spawn(move || {
                // The shared shape: no compile; a new batch: one compile in this handle.
                let x = Rng::new(t as u64).tensor(&[t + 4, 8], -1.0, 1.0);
                for inputs in [vec![x3.clone()], vec![x]] {
                    let got = h.run(&inputs).expect("runs");
                    let want = run_tract(bytes, &inputs).expect("tract runs the model");
                    let d = optc::compare(&got[0], &want[0], RTOL, ATOL).expect("same shape");
                    assert!(d.allclose, "thread {t}: {d:?}");
                }
                assert_eq!(h.compile_count(), 1, "thread {t}");
            });
        }
    });
    assert_eq!(first.compile_count(), 1);
}

/// Runs at two threads while other threads of the process keep every core busy: the pool's
/// workers see their yields give the cores away, sleep between nodes and move off the
/// caller's CPU (`runtime/threads.rs`); every output must still be right.
#[test]
fn runs_stay_right_while_other_threads_keep_the_cores_busy() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (cnn, cnn_inputs) = resnet_style_stage();
    let opts = Options {
        threads: 2,
        ..Default::default()
    };
    let mut model = optc::compile_bytes(&cnn, &opts).expect("compiles");
    let stop = AtomicBool::new(false);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            });
        }
        // Stops the busy threads however the runs end (a failed check unwinds through it).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        check_runs("busy cores", &mut model, &cnn, &cnn_inputs, 0);
    });
}
