//! Int8 GEMM and conv throughput against the f32 path on the same shapes, as criterion
//! benches; a table of the ratios is printed at the end.
//!
//! `cargo bench --bench int8` — env as for the other benches (`OPTC_BENCH_THREADS`,
//! `OPTC_BENCH_TIME`, `OPTC_BENCH_SAMPLES`); criterion filters work
//! (`cargo bench --bench int8 -- 'int8_gemm_t1/m128_k384'`).
//!
//! Every case is a one-node model compiled through `optc_codegen::compile_jit` for the host:
//! - `f32`: `MatMul` with a constant B (as `sgemm`), or `Conv` + bias, the default path
//!   (3x3 stride-1 convs take Winograd: fewer multiplies), and `f32_direct`: the same conv
//!   with Winograd off;
//! - `bytepairs`: `QuantizedMatMul` (dynamic activations: one range pass, then quantization
//!   per run) or `QuantizedConv` (static activations) + bias, weights in -64..=64 so no pair can
//!   saturate and the plan takes the `vpmaddubsw` kernels;
//! - `wordpairs`: the same with full-range weights (-128..=127): the exact `vpmaddwd` kernels.
//!
//! Throughput counts 2 x M x N x K operations per run for every variant (for Winograd convs
//! that is the direct convolution's count: an effective rate); the int8 times include the
//! activation quantization. The table at the end takes each case's fastest sample (on a
//! shared machine the least disturbed one; the per-case lines also give the median). Shapes: BERT-tiny (M = 128 tokens, hidden 128, FFN 512), MiniLM-L6
//! (hidden 384, FFN 1536), the ResNet-18 3x3 convs, its first conv and a 1x1 stride-2 one,
//! MobileNet-v2 pointwise and depthwise convs (depthwise int8: exact f32 sums, no scheme).

#[path = "common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use optc_codegen::{compile_jit, JitModel, Target};
use optc_ir::quantized::ActivationQuantization;
use optc_ir::{Data, Graph, Op, Tensor, TensorType, Window};
use std::sync::Mutex;

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

/// Which variant of a shape.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    F32,
    F32Direct,
    BytePairs,
    WordPairs,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::F32 => "f32",
            Variant::F32Direct => "f32_direct",
            Variant::BytePairs => "bytepairs",
            Variant::WordPairs => "wordpairs",
        }
    }
    /// Weight magnitude limit of the int8 variants.
    fn wlim(self) -> i64 {
        if self == Variant::BytePairs {
            64
        } else {
            128
        }
    }
}

/// Deterministic i8 weights in `[-lim, lim]` (clamped to i8).
fn weights(n: usize, lim: i64, seed: u64) -> Vec<i8> {
    common::rand(n, seed)
        .iter()
        .map(|&u| ((u as f64 + 0.5) * (2 * lim + 1) as f64 - lim as f64).floor() as i64)
        .map(|v| v.clamp(-128, 127) as i8)
        .collect()
}

fn f32_tensor(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::new(shape.to_vec(), Data::F32(common::rand(n, seed))).expect("tensor")
}

fn matmul_graph(m: usize, k: usize, n: usize, v: Variant) -> Graph {
    let mut g = Graph::new();
    let a = g.add_input("a", TensorType::f32(&[m, k]));
    let y = if matches!(v, Variant::F32 | Variant::F32Direct) {
        let b = g.add_const("b", f32_tensor(&[k, n], 2));
        g.add("mm", Op::MatMul, &[a, b]).expect("matmul")
    } else {
        let w = Tensor::new(vec![k, n], Data::I8(weights(k * n, v.wlim(), 2))).expect("w");
        let w = g.add_const("w", w);
        let ws = g.add_const("ws", f32_tensor(&[n], 3));
        let bias = g.add_const("bias", f32_tensor(&[n], 4));
        let op = Op::QuantizedMatMul {
            activation: ActivationQuantization::Dynamic,
        };
        g.add("qmm", op, &[a, w, ws, bias])
            .expect("quantized matmul")
    };
    g.add_output("y", y);
    g
}

fn conv_graph(c: usize, m: usize, hw: usize, k: usize, s: usize, v: Variant) -> Graph {
    let group = if m == 0 { c } else { 1 };
    let m = if m == 0 { c } else { m };
    let cg = c / group;
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, c, hw, hw]));
    let p = k / 2;
    let window = Window {
        kernel: vec![k, k],
        strides: vec![s, s],
        pads: vec![p; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let bias = g.add_const("bias", f32_tensor(&[m], 4));
    let y = if matches!(v, Variant::F32 | Variant::F32Direct) {
        let w = g.add_const("w", f32_tensor(&[m, cg, k, k], 3));
        g.add("conv", Op::Conv { window, group }, &[x, w, bias])
            .expect("conv")
    } else {
        let n = m * cg * k * k;
        let w = Tensor::new(vec![m, cg, k, k], Data::I8(weights(n, v.wlim(), 3))).expect("w");
        let w = g.add_const("w", w);
        let ws = g.add_const("ws", f32_tensor(&[m], 5));
        let xs = g.add_const("xs", Tensor::scalar_f32(1.0 / 255.0));
        let xz = g.add_const("xz", Tensor::new(vec![], Data::U8(vec![128])).expect("xz"));
        let op = Op::QuantizedConv {
            window,
            group,
            activation: ActivationQuantization::Static,
        };
        g.add("qconv", op, &[x, w, ws, xs, xz, bias])
            .expect("quantized conv")
    };
    g.add_output("y", y);
    g
}

/// Fastest sample's seconds per run, per shape label and variant, for the table at the end.
static RESULTS: Mutex<Vec<(String, &'static str, f64, u64)>> = Mutex::new(vec![]);

#[allow(clippy::too_many_arguments)]
fn bench_case(
    group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    label: &str,
    v: Variant,
    ops: u64,
    threads: usize,
    make: impl Fn() -> Case,
) {
    group.throughput(Throughput::Elements(ops));
    let mut case: Option<Case> = None;
    let mut record = vec![];
    group.bench_function(format!("{id}/{}", v.name()), |b| {
        let case = case.get_or_insert_with(&make);
        common::timed(b, &mut record, || case.run());
    });
    if let Some(s) = common::median(&record) {
        // The fastest measured sample: on a shared machine, the least disturbed one.
        let n = common::sample_size().min(record.len());
        let best = record[record.len() - n..]
            .iter()
            .copied()
            .fold(f64::MAX, f64::min);
        println!(
            "{label:<36} {:<11} threads={threads}  {:>8.3} ms  {:>7.1} GOP/s (median; best {:.1})\n",
            v.name(),
            s * 1e3,
            ops as f64 / s / 1e9,
            ops as f64 / best / 1e9
        );
        RESULTS
            .lock()
            .expect("results")
            .push((label.to_string(), v.name(), best, ops));
    }
}

fn int8_benches(c: &mut Criterion) {
    let threads = common::threads();
    if common::listing() {
        return;
    }
    let host = Target::host().expect("host target");
    let direct = host.clone().with_winograd(0).expect("target");
    let mut group = c.benchmark_group(format!("int8_gemm_t{threads}"));
    common::setup(&mut group);
    for (m, k, n) in [
        (128, 128, 128),
        (128, 128, 512),
        (128, 512, 128),
        (128, 384, 384),
        (128, 384, 1536),
        (128, 1536, 384),
    ] {
        for v in [Variant::F32, Variant::BytePairs, Variant::WordPairs] {
            bench_case(
                &mut group,
                &format!("m{m}_k{k}_n{n}"),
                &format!("gemm M={m} K={k} N={n}"),
                v,
                2 * (m * n * k) as u64,
                threads,
                || {
                    let x = f32_tensor(&[m, k], 1);
                    Case::new(&matmul_graph(m, k, n, v), x, threads, &host)
                },
            );
        }
    }
    group.finish();
    let mut group = c.benchmark_group(format!("int8_conv_t{threads}"));
    common::setup(&mut group);
    for (ci, m, hw, k, s) in [
        (64, 64, 56, 3, 1),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (512, 512, 7, 3, 1),
        (128, 256, 28, 3, 2),
        (3, 64, 224, 7, 2),
        (64, 128, 56, 1, 2),
        // MobileNet-v2: pointwise convs, then depthwise ones (M = 0: one per channel).
        (144, 24, 56, 1, 1),
        (384, 64, 14, 1, 1),
        (960, 160, 7, 1, 1),
        (144, 0, 56, 3, 1),
        (96, 0, 112, 3, 2),
    ] {
        let o = (hw + 2 * (k / 2) - k) / s + 1;
        let (cg, mm) = if m == 0 { (1, ci) } else { (ci, m) };
        let variants: &[Variant] = if k == 3 && s == 1 && m > 0 {
            &[
                Variant::F32,
                Variant::F32Direct,
                Variant::BytePairs,
                Variant::WordPairs,
            ]
        } else {
            &[Variant::F32, Variant::BytePairs, Variant::WordPairs]
        };
        for &v in variants {
            let target = if v == Variant::F32Direct {
                &direct
            } else {
                &host
            };
            bench_case(
                &mut group,
                &format!(
                    "c{ci}_m{mm}_{hw}x{hw}_k{k}_s{s}{}",
                    if m == 0 { "_dw" } else { "" }
                ),
                &format!(
                    "{} C={ci} M={mm} {hw}x{hw} k={k} s={s}",
                    if m == 0 { "depthwise" } else { "conv" }
                ),
                v,
                2 * (mm * o * o * cg * k * k) as u64,
                threads,
                || {
                    let x = f32_tensor(&[1, ci, hw, hw], 1);
                    Case::new(&conv_graph(ci, m, hw, k, s, v), x, threads, target)
                },
            );
        }
    }
    group.finish();
}

/// The table: per shape, GOP/s of every variant (from its fastest sample) and the int8 ones'
/// ratio to `f32`.
fn table(_: &mut Criterion) {
    let results = RESULTS.lock().expect("results");
    if results.is_empty() || common::testing() {
        return;
    }
    println!("shape                                f32 GOP/s   bytepairs (x f32)   wordpairs (x f32)   f32 direct");
    let mut labels: Vec<&String> = vec![];
    for r in results.iter() {
        if !labels.contains(&&r.0) {
            labels.push(&r.0);
        }
    }
    for l in labels {
        let rate = |v: &str| {
            results
                .iter()
                .find(|r| &r.0 == l && r.1 == v)
                .map(|r| r.3 as f64 / r.2 / 1e9)
        };
        let f = rate("f32");
        let cell = |v: &str| match (rate(v), f) {
            (Some(x), Some(f)) => format!("{x:>7.1} ({:>4.2}x)", x / f),
            (Some(x), None) => format!("{x:>7.1}"),
            _ => "-".to_string(),
        };
        println!(
            "{l:<36} {:>9}   {:>17}   {:>17}   {:>10}",
            f.map_or("-".to_string(), |x| format!("{x:.1}")),
            cell("bytepairs"),
            cell("wordpairs"),
            rate("f32_direct").map_or("-".to_string(), |x| format!("{x:.1}")),
        );
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = int8_benches, table
}
criterion_main!(benches);
