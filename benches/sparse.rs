//! The sparse kernels against the dense ones on the same weights: the break-even curve.
//!
//! `cargo bench --bench sparse` — env as for the other benches (`OPTC_BENCH_THREADS`,
//! `OPTC_BENCH_TIME`, `OPTC_BENCH_SAMPLES`); criterion filters work
//! (`cargo bench --bench sparse -- 'sparse_t1/m128_k128_n512'`).
//!
//! Every case is a one-node model (MatMul with a constant B, or Conv + bias) whose weight
//! keeps each value with probability `density` (unstructured zeros), compiled for the host
//! twice: `dense` (`--sparse off`: the dense GEMM/conv kernels, which do not look at zeros)
//! and `sparse` (`--sparse always`). Shapes: the transformer FFNs of BERT-tiny (M = 128
//! tokens, hidden 128, FFN 512) and MiniLM-L6 (hidden 384, FFN 1536), a ResNet-style 3x3
//! conv and a 1x1 conv. The table at the end gives per shape the dense time, the sparse
//! speedup at each density (from each case's fastest sample) and the break-even density
//! (interpolated where the speedup crosses 1).

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use optc_codegen::{compile_jit, JitModel, Target};
use optc_ir::sparsity::SparseMode;
use optc_ir::{Data, Graph, Op, Tensor, TensorType, Window};
use std::sync::Mutex;

const DENSITIES: &[f64] = &[0.05, 0.1, 0.2, 0.3, 0.4, 0.5];

struct Case {
    jm: JitModel,
    x: Tensor,
    outs: Vec<Tensor>,
    ws: optc_codegen::Workspace,
}

impl Case {
    fn new(g: &Graph, x: Tensor, threads: usize, target: &Target) -> Case {
        let mut jm = compile_jit(g, target).expect("compile");
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

fn f32_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), Data::F32(common::rand(n, seed))).expect("tensor")
}

/// Values in [-0.5, 0.5), each kept with probability `density`.
fn sparse_tensor(shape: &[usize], density: f64, seed: u64) -> Tensor {
    let n = shape.iter().product();
    let keep = common::rand(n, seed + 1000);
    let v: Vec<f32> = common::rand(n, seed)
        .into_iter()
        .zip(keep)
        .map(|(v, k)| if (k as f64 + 0.5) < density { v } else { 0.0 })
        .collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).expect("tensor")
}

enum Shape {
    MatMul(usize, usize, usize),
    /// Channels in, out, map side, kernel.
    Conv(usize, usize, usize, usize),
}

impl Shape {
    fn id(&self) -> String {
        match *self {
            Shape::MatMul(m, k, n) => format!("m{m}_k{k}_n{n}"),
            Shape::Conv(c, m, hw, k) => format!("c{c}_m{m}_{hw}x{hw}_k{k}"),
        }
    }
    fn label(&self) -> String {
        match *self {
            Shape::MatMul(m, k, n) => format!("matmul M={m} K={k} N={n}"),
            Shape::Conv(c, m, hw, k) => format!("conv {k}x{k} {c}->{m} {hw}x{hw}"),
        }
    }
    fn ops(&self) -> u64 {
        match *self {
            Shape::MatMul(m, k, n) => 2 * (m * k * n) as u64,
            Shape::Conv(c, m, hw, k) => 2 * (c * m * hw * hw * k * k) as u64,
        }
    }
    fn case(&self, density: f64, threads: usize, target: &Target) -> Case {
        let mut g = Graph::new();
        match *self {
            Shape::MatMul(m, k, n) => {
                let a = g.add_input("a", TensorType::f32(&[m, k]));
                let b = g.add_const("b", sparse_tensor(&[k, n], density, 2));
                let y = g.add("mm", Op::MatMul, &[a, b]).expect("matmul");
                g.add_output("y", y);
                Case::new(&g, f32_tensor(&[m, k], 1), threads, target)
            }
            Shape::Conv(c, m, hw, k) => {
                let x = g.add_input("x", TensorType::f32(&[1, c, hw, hw]));
                let w = g.add_const("w", sparse_tensor(&[m, c, k, k], density, 3));
                let bias = g.add_const("bias", f32_tensor(&[m], 4));
                let window = Window {
                    kernel: vec![k, k],
                    strides: vec![1, 1],
                    pads: vec![k / 2; 4],
                    dilations: vec![1, 1],
                    ceil_mode: false,
                };
                let y = g
                    .add("conv", Op::Conv { window, group: 1 }, &[x, w, bias])
                    .expect("conv");
                g.add_output("y", y);
                Case::new(&g, f32_tensor(&[1, c, hw, hw], 1), threads, target)
            }
        }
    }
}

/// Fastest sample's seconds per run, per (shape label, density, sparse).
static RESULTS: Mutex<Vec<(String, f64, bool, f64)>> = Mutex::new(vec![]);

fn bench_case(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    shape: &Shape,
    density: f64,
    sparse: bool,
    threads: usize,
    target: &Target,
) {
    group.throughput(Throughput::Elements(shape.ops()));
    let name = if sparse { "sparse" } else { "dense" };
    let mut case: Option<Case> = None;
    let mut record = vec![];
    group.bench_function(
        format!("{}/d{:02.0}/{name}", shape.id(), density * 100.0),
        |b| {
            let case = case.get_or_insert_with(|| shape.case(density, threads, target));
            common::timed(b, &mut record, || case.run());
        },
    );
    if let Some(s) = common::median(&record) {
        let n = common::sample_size().min(record.len());
        let best = record[record.len() - n..]
            .iter()
            .copied()
            .fold(f64::MAX, f64::min);
        println!(
            "{:<36} density {:>3.0}% {name:<6} threads={threads}  {:>8.3} ms (median; best {:.3})\n",
            shape.label(),
            density * 100.0,
            s * 1e3,
            best * 1e3
        );
        RESULTS
            .lock()
            .expect("results")
            .push((shape.label(), density, sparse, best));
    }
}

fn sparse_benches(c: &mut Criterion) {
    let threads = common::threads();
    if common::listing() {
        return;
    }
    let host = Target::host().expect("host target");
    let dense = host.clone().with_sparse(SparseMode::Off);
    let sparse = host.with_sparse(SparseMode::Always);
    let mut group = c.benchmark_group(format!("sparse_t{threads}"));
    common::setup(&mut group);
    for shape in [
        Shape::MatMul(128, 128, 512),
        Shape::MatMul(128, 512, 128),
        Shape::MatMul(128, 384, 1536),
        Shape::MatMul(128, 1536, 384),
        Shape::Conv(64, 64, 28, 3),
        Shape::Conv(128, 128, 28, 1),
    ] {
        // The dense kernels do not look at zeros: one density is enough for them.
        bench_case(&mut group, &shape, 0.1, false, threads, &dense);
        for &d in DENSITIES {
            bench_case(&mut group, &shape, d, true, threads, &sparse);
        }
    }
    group.finish();
}

/// The table: per shape, the dense time, the sparse speedup per density and the break-even.
fn table(_: &mut Criterion) {
    let results = RESULTS.lock().expect("results");
    if results.is_empty() || common::testing() {
        return;
    }
    print!("{:<36} {:>9}", "shape", "dense ms");
    for d in DENSITIES {
        print!(" {:>6}", format!("{:.0}%", d * 100.0));
    }
    println!("  break-even density");
    let mut labels: Vec<&String> = vec![];
    for r in results.iter() {
        if !labels.contains(&&r.0) {
            labels.push(&r.0);
        }
    }
    for l in labels {
        let Some(dense) = results.iter().find(|r| &r.0 == l && !r.2).map(|r| r.3) else {
            continue;
        };
        print!("{l:<36} {:>9.3}", dense * 1e3);
        let mut points = vec![];
        for &d in DENSITIES {
            match results.iter().find(|r| &r.0 == l && r.2 && r.1 == d) {
                Some(r) => {
                    print!(" {:>5.2}x", dense / r.3);
                    points.push((d, dense / r.3));
                }
                None => print!(" {:>6}", "-"),
            }
        }
        // Where the speedup crosses 1 (linear between the two densities around it).
        let cross = points.windows(2).find_map(|w| {
            let ((d0, s0), (d1, s1)) = (w[0], w[1]);
            (s0 >= 1.0 && s1 < 1.0).then(|| d0 + (d1 - d0) * (s0 - 1.0) / (s0 - s1))
        });
        match cross {
            Some(d) => println!("  {:.0}% ({:.0}% sparsity)", d * 100.0, 100.0 - d * 100.0),
            None if points.last().is_some_and(|p| p.1 >= 1.0) => {
                println!("  above {:.0}%", DENSITIES[DENSITIES.len() - 1] * 100.0)
            }
            None => println!("  below {:.0}%", DENSITIES[0] * 100.0),
        }
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = sparse_benches, table
}
criterion_main!(benches);
