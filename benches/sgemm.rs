//! SGEMM (and ResNet-18 convs as implicit GEMM) throughput against this core's measured FMA
//! peak, as criterion benches.
//!
//! `cargo bench --bench sgemm` — env: `OPTC_BENCH_THREADS` (default 1), `OPTC_BENCH_TIME`
//! (seconds of measurement per case, default 1), `OPTC_BENCH_SAMPLES` (default 20),
//! `OPTC_BENCH_PEAK` (GFLOP/s per core to use instead of measuring it: on a shared machine the
//! SMT sibling's load can halve the measured peak). Criterion filters work:
//! `cargo bench --bench sgemm -- 'sgemm_t1/m1_'`.
//!
//! First the 256-bit FMA peak is measured with a register-only loop of 10 independent
//! `vfmadd231ps ymm` (`optc_codegen::fma_peak_gflops`) and printed with the implied clock
//! (peak / 32: 2 FMA ports x 8 lanes x 2 flops per cycle on Zen 3). Each GEMM is
//! `C[M,N] = A[M,K] @ B[K,N]` compiled as a model through the public API, B a constant
//! (packed at compile time, as weights are), A an input. Criterion's throughput is
//! `Elements(2MNK)`, so its "elem/s" is FLOP/s; after each case one more line gives GFLOP/s
//! from the median sample and the % of the measured peak (x threads).

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use optc_codegen::{compile_jit, JitModel, Target};
use optc_ir::{Data, Graph, Op, Tensor, TensorType};

/// One compiled case: the JIT module, its input and output buffers and workspace.
struct Case {
    jm: JitModel,
    x: Tensor,
    outs: Vec<Tensor>,
    ws: optc_codegen::Workspace,
}

impl Case {
    fn new(g: &Graph, x: Tensor, threads: usize) -> Case {
        let target = Target::host().expect("host target");
        let mut jm = compile_jit(g, &target).expect("compile");
        jm.set_threads(threads);
        let outs = jm
            .output_types()
            .iter()
            .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
            .collect();
        let ws = jm.new_workspace();
        Case { jm, x, outs, ws }
    }

    fn run(&mut self) {
        self.jm
            .run(&[&self.x], &mut self.outs, &mut self.ws)
            .expect("run");
    }
}

fn matmul_graph(m: usize, k: usize, n: usize) -> Graph {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::f32(&[m, k]));
    let b = g.add_const(
        "b",
        Tensor::new(vec![k, n], Data::F32(common::rand(k * n, 2))).expect("tensor"),
    );
    let y = g.add("mm", Op::MatMul, &[a, b]).expect("matmul");
    g.add_output("y", y);
    g
}

/// Output pixels of a conv with pad k/2.
fn conv_pixels(hw: usize, k: usize, s: usize) -> usize {
    let o = (hw + 2 * (k / 2) - k) / s + 1;
    o * o
}

/// A 2-D conv `[1, c, hw, hw] * [m, c, k, k]` + bias (pad k/2, stride s) as one graph.
fn conv_graph(c: usize, m: usize, hw: usize, k: usize, s: usize) -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, c, hw, hw]));
    let wt = g.add_const(
        "w",
        Tensor::new(vec![m, c, k, k], Data::F32(common::rand(m * c * k * k, 3))).expect("tensor"),
    );
    let b = g.add_const(
        "b",
        Tensor::new(vec![m], Data::F32(common::rand(m, 4))).expect("tensor"),
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
    g
}

/// Bench one case: `make` builds it (only when criterion actually runs the bench, so
/// filtered-out cases are not compiled); `flops` per run. Prints the summary line after
/// criterion's report.
fn bench_case(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    label: &str,
    flops: u64,
    peak: f64,
    threads: usize,
    make: impl Fn() -> Case,
) {
    group.throughput(Throughput::Elements(flops));
    let mut case: Option<Case> = None;
    let mut record = vec![];
    group.bench_function(id, |b| {
        let case = case.get_or_insert_with(&make);
        common::timed(b, &mut record, || case.run());
    });
    if let Some(s) = common::median(&record) {
        let gf = flops as f64 / s / 1e9;
        println!(
            "{label:<40} threads={threads}  {:>9.3} ms  {gf:>7.1} GFLOP/s  {:>5.1}% of peak{}\n",
            s * 1e3,
            100.0 * gf / (peak * threads as f64),
            if threads > 1 { " x threads" } else { "" },
        );
    }
}

fn sgemm_benches(c: &mut Criterion) {
    if common::listing() {
        // Still register the benches so `--list` shows them, but measure nothing.
        return register(c, 0.0, common::threads());
    }
    let peak = match std::env::var("OPTC_BENCH_PEAK")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
    {
        Some(p) if p > 0.0 => {
            println!("peak: {p:.1} GFLOP/s per core (given by OPTC_BENCH_PEAK, not measured)\n");
            p
        }
        _ => {
            let secs = if common::testing() { 0.2 } else { 1.0 };
            let p = optc_codegen::fma_peak_gflops(secs).expect("FMA peak");
            println!(
                "peak: {p:.1} GFLOP/s per core (register-only loop, 10 independent vfmadd231ps \
                 ymm); implied clock {:.2} GHz = peak / 32 (2 FMA/cycle x 8 lanes x 2 flops)\n",
                p / 32.0
            );
            p
        }
    };
    if common::testing() {
        println!("test mode: every case runs once; the numbers below are not measurements\n");
    }
    register(c, peak, common::threads());
    let _ = START_PEAK.set(peak);
}

/// The peak used for the cases (measured or given), for the check at the end.
static START_PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Measure the peak again after all cases: when it moved by more than 5%, other load shared
/// the core (or the clock changed) and the % of peak above are unreliable; say so.
fn peak_check(_: &mut Criterion) {
    let (Some(&start), false) = (START_PEAK.get(), common::testing()) else {
        return;
    };
    let Ok(end) = optc_codegen::fma_peak_gflops(1.0) else {
        return;
    };
    let moved = (end / start - 1.0) * 100.0;
    println!(
        "peak re-measured after the cases: {end:.1} GFLOP/s ({moved:+.1}% vs the peak used above){}",
        if moved.abs() > 5.0 {
            ": the machine was busy or the clock changed, % of peak is unreliable"
        } else {
            ""
        }
    );
}

fn register(c: &mut Criterion, peak: f64, threads: usize) {
    let mut group = c.benchmark_group(format!("sgemm_t{threads}"));
    common::setup(&mut group);
    // Square shapes, then the batch-1 shapes of the corpus: MLP and classifier heads (M=1),
    // the ResNet-18 last stage as a GEMM (M=49 pixels), BERT-tiny projections (M=128 tokens).
    let mut shapes: Vec<(usize, usize, usize)> =
        [64, 256, 512, 1024].iter().map(|&s| (s, s, s)).collect();
    shapes.extend([
        (1, 784, 512),
        (1, 512, 256),
        (1, 512, 1000),
        (1, 1280, 1000),
        (49, 512, 512),
        (49, 4608, 512),
        (128, 128, 128),
        (128, 128, 512),
        (128, 512, 128),
    ]);
    for (m, k, n) in shapes {
        bench_case(
            &mut group,
            &format!("m{m}_k{k}_n{n}"),
            &format!("sgemm M={m} K={k} N={n}"),
            2 * (m * n * k) as u64,
            peak,
            threads,
            || {
                let x = Tensor::new(vec![m, k], Data::F32(common::rand(m * k, 1))).expect("tensor");
                Case::new(&matmul_graph(m, k, n), x, threads)
            },
        );
    }
    group.finish();

    // ResNet-18 conv layers (implicit GEMM, patches packed on the fly). The 3x3 stride-1
    // ones take the Winograd path, which does fewer multiplies: their GFLOP/s count the
    // direct convolution's flops (effective throughput) and exceed the peak.
    let mut group = c.benchmark_group(format!("conv_t{threads}"));
    common::setup(&mut group);
    for (ci, m, hw, k, s) in [
        (3, 64, 224, 7, 2),
        (64, 64, 56, 3, 1),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (64, 128, 56, 1, 2),
        (256, 512, 14, 3, 2),
    ] {
        let o = conv_pixels(hw, k, s);
        bench_case(
            &mut group,
            &format!("c{ci}_m{m}_{hw}x{hw}_k{k}_s{s}"),
            &format!(
                "conv C={ci} M={m} {hw}x{hw} k={k} s={s}{}",
                if k == 3 && s == 1 {
                    " (Winograd, eff.)"
                } else {
                    ""
                }
            ),
            2 * (m * o * ci * k * k) as u64,
            peak,
            threads,
            || {
                let x = Tensor::new(
                    vec![1, ci, hw, hw],
                    Data::F32(common::rand(ci * hw * hw, 1)),
                )
                .expect("tensor");
                Case::new(&conv_graph(ci, m, hw, k, s), x, threads)
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = sgemm_benches, peak_check
}
criterion_main!(benches);
