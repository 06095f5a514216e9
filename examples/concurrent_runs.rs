//! Serving one model from several threads: measures runs per second of one thread, of N
//! threads each with a model of its own, and of N threads sharing one compiled model through
//! `CompiledModel::share` (one copy of the code and weights), each run single-threaded:
//! `cargo run --release --example concurrent_runs -- MODEL.onnx [THREADS] [SECONDS]`.

use optc::{CompiledModel, Options};
use std::time::{Duration, Instant};

/// Run `model` for `secs` seconds; returns the runs made.
fn run_for(model: &mut CompiledModel, inputs: &[optc::Tensor], secs: f64) -> usize {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut runs = 0;
    while Instant::now() < end {
        model.run(inputs).expect("the model runs");
        runs += 1;
    }
    runs
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: concurrent_runs MODEL.onnx [THREADS] [SECONDS]");
    let threads: usize = args
        .get(2)
        .map_or(2, |s| s.parse().expect("a thread count"));
    let secs: f64 = args.get(3).map_or(3.0, |s| s.parse().expect("seconds"));
    let bytes = std::fs::read(path).expect("the model file reads");
    let opts = Options {
        opt_level: 3,
        threads: 1,
        ..Default::default()
    };
    let mut first = optc::compile_bytes(&bytes, &opts).expect("the model compiles");
    let inputs = optc::random_inputs(&first.input_types(), 1);
    run_for(&mut first, &inputs, 0.5);
    let one = run_for(&mut first, &inputs, secs) as f64 / secs;
    println!("1 thread: {one:.1} runs/s");
    for shared in [false, true] {
        let models: Vec<CompiledModel> = (0..threads)
            .map(|_| {
                if shared {
                    first.share()
                } else {
                    optc::compile_bytes(&bytes, &opts).expect("the model compiles")
                }
            })
            .collect();
        let total: usize = std::thread::scope(|s| {
            let handles: Vec<_> = models
                .into_iter()
                .map(|mut m| {
                    let inputs = &inputs;
                    s.spawn(move || {
                        run_for(&mut m, inputs, 0.5);
                        run_for(&mut m, inputs, secs)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("runs")).sum()
        });
        let rate = total as f64 / secs;
        println!(
            "{threads} threads, {}: {rate:.1} runs/s ({:.2}x one thread)",
            if shared {
                "one shared model"
            } else {
                "a model each"
            },
            rate / one
        );
    }
}
