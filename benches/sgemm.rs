//! SGEMM and whole-model latency benchmarks (plain `harness = false` main: criterion is not
//! vendored on this machine and would not build quickly; the timing method is the same idea:
//! warm up, then the median of many timed runs).
//!
//! `cargo bench --bench sgemm` — options via env: `OPTC_BENCH_THREADS` (default 1),
//! `OPTC_BENCH_TIME` (seconds per case, default 1), `OPTC_BENCH_MODELS` (comma list of corpus
//! models under `~/.cache/optc-corpus/models`, default: resnet18,mobilenet_v2,bert_tiny_l2_h128,
//! mlp_784_512_256_10; `none` to skip).
//!
//! SGEMM is `C[M,N] = A[M,K] @ B[K,N]` with B constant (packed at compile time, as weights
//! are), A an input. GFLOP/s = 2MNK / median time; % of peak is against the 256-bit FMA peak
//! measured first with a register-only loop of 10 independent `vfmadd231ps ymm`.

use optc_codegen::{compile_jit, Target};
use optc_ir::{Data, Graph, Op, Tensor, TensorType};
use std::time::{Duration, Instant};

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// Median seconds of `f` over about `time`.
fn median(time: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut v = vec![];
    let t0 = Instant::now();
    while t0.elapsed() < time || v.len() < 5 {
        let t = Instant::now();
        f();
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sgemm(m: usize, k: usize, n: usize, threads: usize, time: Duration, peak: f64) {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::f32(&[m, k]));
    let b = g.add_const(
        "b",
        Tensor::new(vec![k, n], Data::F32(rand(k * n, 2))).expect("tensor"),
    );
    let y = g.add("mm", Op::MatMul, &[a, b]).expect("matmul");
    g.add_output("y", y);
    let target = Target::host().expect("host target");
    let mut jm = compile_jit(&g, &target).expect("compile");
    jm.set_threads(threads);
    let x = Tensor::new(vec![m, k], Data::F32(rand(m * k, 1))).expect("tensor");
    let mut outs = vec![Tensor::zeros(optc_ir::DType::F32, vec![m, n])];
    let mut ws = jm.new_workspace();
    let s = median(time, || {
        jm.run(&[&x], &mut outs, &mut ws).expect("run");
    });
    let gf = 2.0 * (m * n * k) as f64 / s / 1e9;
    println!(
        "sgemm M={m:<5} K={k:<5} N={n:<5} threads={threads}  {:>9.3} ms  {gf:>7.1} GFLOP/s  {:>5.1}% of 1-core peak",
        s * 1e3,
        100.0 * gf / peak
    );
}

/// A 2-D conv `[1, c, h, w] * [m, c, k, k]` (pad k/2, stride s) as one graph; GFLOP/s.
#[allow(clippy::too_many_arguments)]
fn conv(
    c: usize,
    m: usize,
    hw: usize,
    k: usize,
    s: usize,
    threads: usize,
    time: Duration,
    peak: f64,
) {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, c, hw, hw]));
    let wt = g.add_const(
        "w",
        Tensor::new(vec![m, c, k, k], Data::F32(rand(m * c * k * k, 3))).expect("tensor"),
    );
    let b = g.add_const(
        "b",
        Tensor::new(vec![m], Data::F32(rand(m, 4))).expect("tensor"),
    );
    let p = k / 2;
    let window = optc_ir::Window {
        kernel: vec![k, k],
        strides: vec![s, s],
        pads: vec![p, p, p, p],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let y = g
        .add("conv", Op::Conv { window, group: 1 }, &[x, wt, b])
        .expect("conv");
    g.add_output("y", y);
    let target = Target::host().expect("host target");
    let mut jm = compile_jit(&g, &target).expect("compile");
    jm.set_threads(threads);
    let oty = jm.output_types()[0].clone();
    let o = oty.shape[2] * oty.shape[3];
    let xt = Tensor::new(vec![1, c, hw, hw], Data::F32(rand(c * hw * hw, 1))).expect("tensor");
    let mut outs = vec![Tensor::zeros(optc_ir::DType::F32, oty.shape.clone())];
    let mut ws = jm.new_workspace();
    let sec = median(time, || {
        jm.run(&[&xt], &mut outs, &mut ws).expect("run");
    });
    let gf = 2.0 * (m * o * c * k * k) as f64 / sec / 1e9;
    println!(
        "conv  C={c:<4} M={m:<4} {hw}x{hw} k={k} s={s} threads={threads}  {:>9.3} ms  {gf:>7.1} GFLOP/s  {:>5.1}% of 1-core peak",
        sec * 1e3,
        100.0 * gf / peak
    );
}

fn main() {
    let threads: usize = std::env::var("OPTC_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let secs: f64 = std::env::var("OPTC_BENCH_TIME")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let time = Duration::from_secs_f64(secs);
    let peak = optc_codegen::ukr::fma_peak_gflops(1.0).expect("peak");
    println!(
        "peak: {peak:.1} GFLOP/s per core (register-only loop, 10 independent vfmadd231ps ymm; \
         = {:.2} GHz x 2 FMA/cycle x 8 lanes x 2 flops)",
        peak / 32.0
    );
    for s in [64, 256, 512, 1024] {
        sgemm(s, s, s, threads, time, peak);
    }
    // Batch-1 shapes of the corpus: MLP and classifier heads (M=1), ResNet last stage as a
    // GEMM (M=49 pixels), BERT-tiny projections (M=128 tokens, hidden 128/512).
    for (m, k, n) in [
        (1, 784, 512),
        (1, 512, 256),
        (1, 512, 1000),
        (1, 1280, 1000),
        (49, 512, 512),
        (49, 4608, 512),
        (128, 128, 128),
        (128, 128, 512),
        (128, 512, 128),
    ] {
        sgemm(m, k, n, threads, time, peak);
    }
    // ResNet-18 conv layers (implicit GEMM, patches packed on the fly).
    for (c, m, hw, k, s) in [
        (3, 64, 224, 7, 2),
        (64, 64, 56, 3, 1),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (64, 128, 56, 1, 2),
        (256, 512, 14, 3, 2),
    ] {
        conv(c, m, hw, k, s, threads, time, peak);
    }
    let models = std::env::var("OPTC_BENCH_MODELS").unwrap_or_else(|_| {
        "resnet18,mobilenet_v2,bert_tiny_l2_h128,mlp_784_512_256_10".to_string()
    });
    if models == "none" {
        return;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    for name in models.split(',') {
        let path = format!("{home}/.cache/optc-corpus/models/{name}/model.onnx");
        if !std::path::Path::new(&path).exists() {
            println!("model {name}: not found at {path}, skipped");
            continue;
        }
        let opts = optc::Options {
            opt_level: 3,
            threads,
            ..Default::default()
        };
        let mut m = match optc::compile_file(std::path::Path::new(&path), &opts) {
            Ok(m) => m,
            Err(e) => {
                println!("model {name}: {e}");
                continue;
            }
        };
        let inputs = optc::random_inputs(&m.input_types(), 0);
        let s = median(time, || {
            m.run(&inputs).expect("run");
        });
        println!(
            "model {name:<24} -O3 threads={threads}  {:>9.3} ms",
            s * 1e3
        );
    }
}
