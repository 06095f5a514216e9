//! The int8 path of `QuantizedMatMul` / `QuantizedConv` against the reference interpreter,
//! bit for bit: M, N, K edges (1, primes, tile, panel and K-block boundaries, K not a multiple
//! of 4, batch dims), dynamic and static activations, with and without bias, fused epilogues,
//! conv geometries (strides, pads, dilation, 1x1, 3x3, a first conv, 1-D, groups, depthwise), 1 and 2
//! threads; weights that need the exact scheme; the AVX-512 target's VNNI kernels in objects.

mod common;
use common::*;
use optc_codegen::{compile_jit, int8_plans, pairs_never_saturate, Target};
use optc_ir::quantized::ActivationQuantization;
use optc_ir::{BinaryOp, Data, FusedStep, Graph, Op, Tensor, TensorType, UnaryOp, Value, Window};

const DYNAMIC: ActivationQuantization = ActivationQuantization::Dynamic;
const STATIC: ActivationQuantization = ActivationQuantization::Static;

/// The x86-64 targets with the int8 path this host runs.
/// The x64 targets whose int8 kernels this host runs: AVX2 (byte and word pairs), AVX-512 with
/// VNNI (dot products; the emulator checks those kernels on every host), and `native` when
/// the JIT gives it AMX tiles.
fn targets() -> Vec<Target> {
    let mut v = vec![];
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        v.push(Target::parse("x86_64-avx2").unwrap());
    }
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512dq")
        && std::is_x86_feature_detected!("avx512vnni")
    {
        v.push(Target::parse("x86_64-avx512").unwrap());
    }
    let native = Target::parse("native").unwrap();
    if native.for_jit().has_int8_tiles() {
        v.push(native);
    }
    v
}

fn i8_tensor(rng: &mut Rng, shape: &[usize], lim: i64) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| rng.int(-lim, lim + 1).clamp(-128, 127) as i8)
        .collect();
    Tensor::new(shape.to_vec(), Data::I8(v)).unwrap()
}

/// Per-channel (or one) weight scales, positive.
fn scales(rng: &mut Rng, n: usize) -> Tensor {
    let v = (0..n).map(|_| rng.f32(0.001, 0.05)).collect();
    Tensor::new(vec![n], Data::F32(v)).unwrap()
}

/// The quantized inputs after `x` (weights, scales, static parameters, bias) as constants.
struct Quant {
    act: ActivationQuantization,
    /// Weight magnitude limit: 64 makes every pair safe (`BytePairs`), 128 needs `WordPairs`.
    wlim: i64,
    bias: bool,
    /// One weight scale for all channels.
    one_scale: bool,
    /// The static zero point (else a random one).
    zero: Option<u8>,
}

fn quant_inputs(
    g: &mut Graph,
    rng: &mut Rng,
    q: &Quant,
    wshape: &[usize],
    channels: usize,
) -> Vec<Value> {
    let mut v = vec![g.add_const("w", i8_tensor(rng, wshape, q.wlim))];
    v.push(g.add_const("ws", scales(rng, if q.one_scale { 1 } else { channels })));
    if q.act == STATIC {
        v.push(g.add_const("xs", Tensor::scalar_f32(rng.f32(0.01, 0.03))));
        let z = rng.int(0, 256) as u8;
        let z = q.zero.unwrap_or(z);
        v.push(g.add_const("xz", Tensor::new(vec![], Data::U8(vec![z])).unwrap()));
    }
    if q.bias {
        v.push(g.add_const("b", f32t(rng, &[channels])));
    }
    v
}

/// Fused steps by name: "relu", "relu6", "res" (adds a graph input of the output's type),
/// "bias" (adds a constant of shape `bias`); every added value has a name of its own.
fn steps_named(
    g: &mut Graph,
    ins: &mut Vec<Value>,
    rng: &mut Rng,
    names: &[&str],
    out: &TensorType,
    bias: &[usize],
) -> Vec<FusedStep> {
    let add = |ins: &mut Vec<Value>, v: Value, i: usize| {
        ins.push(v);
        FusedStep::Binary {
            op: BinaryOp::Add,
            input: ins.len() - 1,
            swap: i % 2 == 1,
        }
    };
    names
        .iter()
        .enumerate()
        .map(|(i, name)| match *name {
            "relu" => FusedStep::Unary(UnaryOp::Relu),
            "relu6" => FusedStep::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }),
            // A QDQ model's requantization (u8, and i8 with a negative zero point).
            "fq" => FusedStep::Unary(UnaryOp::FakeQuantize {
                scale: 0.03,
                zero: 7.0,
                signed: false,
            }),
            "gelu" => FusedStep::Unary(UnaryOp::Gelu),
            "silu" => FusedStep::Unary(UnaryOp::Silu),
            "hardswish" => FusedStep::Unary(UnaryOp::HardSwish),
            "fq_i8" => FusedStep::Unary(UnaryOp::FakeQuantize {
                scale: 0.01,
                zero: -3.0,
                signed: true,
            }),
            "res" => {
                let r = g.add_input(&format!("r{i}"), out.clone());
                add(ins, r, i)
            }
            "bias" => {
                let b = g.add_const(&format!("step_bias{i}"), f32t(rng, bias));
                add(ins, b, i)
            }
            other => panic!("unknown fused step {other:?}"),
        })
        .collect()
}

/// Add `op` on `ins` with fused `steps` (names as in `common::fused_steps`), output `y`.
fn finish(g: &mut Graph, rng: &mut Rng, op: Op, mut ins: Vec<Value>, steps: &[&str]) {
    let tys: Vec<TensorType> = ins
        .iter()
        .map(|v| g.value_type(*v).unwrap().clone())
        .collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    let out = op.infer(&refs).unwrap_or_else(|e| panic!("{e:?}"))[0].clone();
    let y = if steps.is_empty() {
        g.add("q", op, &ins).unwrap()
    } else {
        let base_inputs = ins.len();
        let bias_shape: Vec<usize> = match &op {
            Op::QuantizedConv { .. } => vec![out.shape[1], 1, 1],
            _ => vec![*out.shape.last().unwrap()],
        };
        let fs = steps_named(g, &mut ins, rng, steps, &out, &bias_shape);
        let fused = Op::Fused {
            base: Box::new(op),
            base_inputs,
            steps: fs,
        };
        g.add("q", fused, &ins).unwrap()
    };
    g.add_output("y", y);
}

fn matmul_graph(xs: &[usize], n: usize, q: &Quant, steps: &[&str], seed: u64) -> Graph {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let k = *xs.last().unwrap();
    let x = g.add_input("x", f(xs));
    let mut ins = vec![x];
    ins.extend(quant_inputs(&mut g, &mut rng, q, &[k, n], n));
    finish(
        &mut g,
        &mut rng,
        Op::QuantizedMatMul { activation: q.act },
        ins,
        steps,
    );
    g
}

fn conv_graph(
    xs: &[usize],
    ws: &[usize],
    window: Window,
    group: usize,
    q: &Quant,
    steps: &[&str],
    seed: u64,
) -> Graph {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let x = g.add_input("x", f(xs));
    let mut ins = vec![x];
    ins.extend(quant_inputs(&mut g, &mut rng, q, ws, ws[0]));
    let op = Op::QuantizedConv {
        window,
        group,
        activation: q.act,
    };
    finish(&mut g, &mut rng, op, ins, steps);
    g
}

/// Compile for every target, run at 1 and 2 threads, compare exactly with the interpreter.
fn check_exact(g: &Graph, seed: u64) {
    let inputs = inputs_for(g, seed);
    check_targets(g, &inputs, EXACT, &targets());
}

fn q(act: ActivationQuantization, wlim: i64, bias: bool) -> Quant {
    Quant {
        act,
        wlim,
        bias,
        one_scale: false,
        zero: None,
    }
}

#[test]
fn matmul_edges() {
    let mut s = 0;
    for &m in &[1usize, 5, 6, 7, 13] {
        for &n in &[1usize, 16, 17, 33] {
            for &k in &[1usize, 3, 4, 5, 17] {
                s += 1;
                let act = if s % 2 == 0 { DYNAMIC } else { STATIC };
                let wlim = if s % 3 == 0 { 128 } else { 64 };
                check_exact(
                    &matmul_graph(&[m, k], n, &q(act, wlim, s % 4 < 2), &[], s),
                    s,
                );
            }
        }
    }
}

#[test]
fn matmul_both_modes_and_schemes() {
    for (i, act) in [DYNAMIC, STATIC].into_iter().enumerate() {
        for wlim in [64, 128] {
            for bias in [false, true] {
                for one_scale in [false, true] {
                    let qq = Quant {
                        act,
                        wlim,
                        bias,
                        one_scale,
                        zero: None,
                    };
                    let seed = 100 + i as u64 * 10 + wlim as u64 + bias as u64 + one_scale as u64;
                    check_exact(&matmul_graph(&[37, 129], 45, &qq, &[], seed), seed);
                }
            }
        }
    }
}

#[test]
fn matmul_blocked_and_threaded() {
    // K over several K blocks (a partial last one), M over several M blocks and row parts,
    // N over several column units, split into tasks.
    for (m, k, n, wlim) in [
        (151, 2001, 67, 64),
        (151, 1031, 67, 128),
        (300, 256, 530, 64),
        (1, 784, 512, 128),
        (128, 384, 384, 64),
        (64, 512, 64, 128),
    ] {
        for act in [DYNAMIC, STATIC] {
            let seed = (m + k + n) as u64;
            check_exact(
                &matmul_graph(&[m, k], n, &q(act, wlim, true), &[], seed),
                seed,
            );
        }
    }
}

#[test]
fn matmul_batched_activations() {
    for act in [DYNAMIC, STATIC] {
        check_exact(
            &matmul_graph(&[2, 3, 7, 40], 23, &q(act, 64, true), &[], 9),
            9,
        );
        check_exact(&matmul_graph(&[40], 23, &q(act, 128, false), &[], 10), 10);
    }
}

#[test]
fn matmul_fused_epilogues() {
    let lists: [&[&str]; 8] = [
        &["relu"],
        &["relu6"],
        &["res"],
        &["res", "relu"],
        &["bias", "relu6"],
        // The second bias is not a tile step: it and what follows run afterwards.
        &["bias", "bias", "relu"],
        // Requantization in the tile (AVX-512 kernels) or afterwards (AVX2).
        &["fq"],
        &["res", "fq_i8", "bias", "fq"],
    ];
    for (i, steps) in lists.iter().enumerate() {
        for act in [DYNAMIC, STATIC] {
            for bias in [false, true] {
                let seed = 20 + i as u64;
                let g = matmul_graph(&[2, 13, 70], 35, &q(act, 64, bias), steps, seed);
                check_exact(&g, seed);
            }
        }
    }
}

/// Values at the quantizer's edges in the activations: NaN (0 after quantization, ignored by
/// the range), infinities, signed zeros, exact ties of the rounding.
#[test]
fn matmul_special_activation_values() {
    for act in [DYNAMIC, STATIC] {
        for with_inf in [false, true] {
            let g = matmul_graph(&[5, 24], 20, &q(act, 128, true), &[], 3);
            let mut rng = Rng::new(4);
            let mut x: Vec<f32> = (0..120).map(|_| rng.f32(-2.0, 2.0)).collect();
            x[3] = f32::NAN;
            x[10] = -0.0;
            x[11] = 0.5;
            x[12] = -2.5;
            if with_inf {
                x[50] = f32::INFINITY;
                x[70] = f32::NEG_INFINITY;
            }
            let inputs = vec![Tensor::new(vec![5, 24], Data::F32(x)).unwrap()];
            check_targets(&g, &inputs, EXACT, &targets());
        }
    }
}

fn win(k: [usize; 2], s: [usize; 2], p: [usize; 4], d: [usize; 2]) -> Window {
    window(&k, &s, &p, &d)
}

#[test]
fn conv_geometries() {
    // (input [n, c, h, w], output channels, window)
    let cases: Vec<(Vec<usize>, usize, Window)> = vec![
        (vec![1, 8, 9, 9], 16, win([1, 1], [1, 1], [0; 4], [1, 1])),
        (vec![2, 5, 7, 11], 7, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (vec![1, 16, 14, 14], 13, win([3, 3], [2, 2], [1; 4], [1, 1])),
        (
            vec![1, 6, 13, 13],
            8,
            win([5, 5], [1, 1], [4, 4, 4, 4], [2, 2]),
        ),
        // A network's first conv: 3 channels, 7x7 stride 2.
        (vec![1, 3, 32, 32], 16, win([7, 7], [2, 2], [3; 4], [1, 1])),
        (
            vec![1, 2, 10, 6],
            5,
            win([3, 2], [1, 2], [0, 1, 2, 0], [1, 1]),
        ),
        // 1x1 stride 2, and a map wider than a patch panel with pads on one side.
        (vec![1, 12, 10, 10], 24, win([1, 1], [2, 2], [0; 4], [1, 1])),
        (
            vec![1, 4, 5, 40],
            9,
            win([3, 3], [1, 1], [0, 2, 1, 0], [1, 1]),
        ),
        // 1x1 stride 1 unpadded (the planes read in place), several column units and K
        // blocks.
        (vec![2, 12, 20, 21], 10, win([1, 1], [1, 1], [0; 4], [1, 1])),
        (vec![1, 1100, 6, 7], 8, win([1, 1], [1, 1], [0; 4], [1, 1])),
    ];
    let mut s = 40;
    for (xs, m, w) in cases {
        let ws = [m, xs[1], w.kernel[0], w.kernel[1]];
        for act in [DYNAMIC, STATIC] {
            for wlim in [64, 128] {
                s += 1;
                let g = conv_graph(&xs, &ws, w.clone(), 1, &q(act, wlim, s % 2 == 0), &[], s);
                check_exact(&g, s);
            }
        }
    }
}

#[test]
fn conv_large_reduction_and_tasks() {
    // K = 256 x 9 over several K blocks, enough work for tasks, output channels over several
    // row parts.
    for (act, wlim) in [(STATIC, 64), (DYNAMIC, 128)] {
        let g = conv_graph(
            &[1, 256, 12, 12],
            &[70, 256, 3, 3],
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            1,
            &q(act, wlim, true),
            &["relu"],
            61,
        );
        check_exact(&g, 61);
        // Two images whose channels do not fill the last dword plane, quantized in parallel
        // parts.
        let g = conv_graph(
            &[2, 21, 24, 24],
            &[40, 21, 3, 3],
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            1,
            &q(act, wlim, false),
            &[],
            62,
        );
        check_exact(&g, 62);
    }
}

/// Convs whose tasks split the output channels pack their patches once, next to the
/// quantization (each part the taps of the planes it quantized), and every task reads them:
/// small maps (7x7: panels across rows), stride 2, two images, channels that do not fill the
/// last dword plane, dynamic and static activations; the plan says so, the sums are exact.
#[test]
fn conv_patches_packed_once_for_all_tasks() {
    let cases: [(Vec<usize>, usize, Window); 3] = [
        (vec![2, 30, 7, 7], 60, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (vec![1, 18, 14, 14], 56, win([3, 3], [2, 2], [1; 4], [1, 1])),
        // (Padded: an unpadded 1x1 strided conv reads subsampled planes in place.)
        (vec![1, 64, 9, 9], 90, win([1, 1], [2, 2], [1; 4], [1, 1])),
    ];
    let mut s = 700;
    for (xs, m, w) in cases {
        let ws = [m, xs[1], w.kernel[0], w.kernel[1]];
        for (act, wlim) in [(STATIC, 64), (DYNAMIC, 128)] {
            s += 1;
            let g = conv_graph(&xs, &ws, w.clone(), 1, &q(act, wlim, true), &["relu"], s);
            let vnni = Target::parse("x86_64-avx512").unwrap();
            let plans = int8_plans(&g, &vnni).unwrap();
            assert!(
                plans.iter().all(|(_, p)| p.contains("packed once")),
                "{plans:?}"
            );
            check_exact(&g, s);
        }
    }
}

/// Unpadded 1x1 convs of strides above 1 (a ResNet's downsample) are the stride-1 convs of
/// every s-th pixel: the pre-pass quantizes only those into the planes, which the tiles read
/// in place. Rows of 8 pixels from 15 (the last chunk's odd source column past the row),
/// 17 and 9 pixels (a chunk and a tail), strides 2x1 and 3x2, two images, the channels in
/// both forms (pixels as rows on the 7x7 map), the residual QDQ epilogue; static and
/// dynamic activations (the range over the whole input). The plan says so; the sums are
/// exact.
#[test]
fn strided_pointwise_convs_read_subsampled_planes() {
    // (input, output channels, window, steps, what the plan says)
    type Case<'a> = (Vec<usize>, usize, Window, &'a [&'a str], &'a str);
    let cases: [Case; 5] = [
        (
            vec![1, 24, 15, 15],
            40,
            win([1, 1], [2, 2], [0; 4], [1, 1]),
            &["relu"],
            "2x2 pixel of 15x15",
        ),
        (
            vec![2, 12, 10, 33],
            24,
            win([1, 1], [2, 2], [0; 4], [1, 1]),
            &["res", "fq"],
            "2x2 pixel of 10x33",
        ),
        (
            vec![1, 8, 9, 17],
            16,
            win([1, 1], [2, 1], [0; 4], [1, 1]),
            &[],
            "2x1 pixel of 9x17",
        ),
        (
            vec![1, 20, 11, 14],
            32,
            win([1, 1], [3, 2], [0; 4], [1, 1]),
            &["bias", "relu6"],
            "3x2 pixel of 11x14",
        ),
        (
            vec![1, 64, 14, 14],
            64,
            win([1, 1], [2, 2], [0; 4], [1, 1]),
            &["fq_i8", "res", "fq"],
            "2x2 pixel of 14x14",
        ),
    ];
    let mut s = 980;
    for (xs, m, w, steps, what) in cases {
        let ws = [m, xs[1], 1, 1];
        for (act, wlim) in [(STATIC, 64), (DYNAMIC, 128)] {
            s += 1;
            let g = conv_graph(&xs, &ws, w.clone(), 1, &q(act, wlim, s % 2 == 0), steps, s);
            let vnni = Target::parse("x86_64-avx512").unwrap();
            let plans = int8_plans(&g, &vnni).unwrap();
            assert!(
                plans
                    .iter()
                    .all(|(_, p)| p.contains(&format!("the planes of every {what}"))),
                "{xs:?}: {plans:?}"
            );
            check_exact(&g, s);
        }
    }
}

/// Convs whose output channels fill 16-channel panels and whose maps fill 16-pixel panels badly
/// take pixels as rows (`Contraction::ConvPixels`): rows of 7 (two tiles of 7 for 14, 7 + 7 + 6
/// for 20), of 5 (one short tile) and of 8 (twice: an 8x8 map whose 16-pixel panels fit, but
/// packing them would cost more than the transposed stores); stride 2; a 1x1 conv read in
/// place; two images; channel blocks of 32 and a last one of 16, split over tasks; the QDQ
/// residual epilogue (transposed before the residual) and the others. The plan says so, the
/// sums are exact.
#[test]
fn conv_pixel_rows() {
    let cases: [(Vec<usize>, usize, Window, &[&str]); 7] = [
        (
            vec![2, 64, 7, 7],
            48,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            &["fq_i8", "res", "fq"],
        ),
        (
            vec![1, 40, 28, 28],
            80,
            win([3, 3], [2, 2], [1; 4], [1, 1]),
            &["bias", "res", "relu6"],
        ),
        (
            vec![1, 36, 20, 20],
            32,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            &["relu"],
        ),
        (
            vec![1, 128, 5, 5],
            16,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            &[],
        ),
        (
            vec![2, 160, 8, 8],
            176,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            &["res", "relu"],
        ),
        (
            vec![1, 512, 7, 7],
            64,
            win([1, 1], [1, 1], [0; 4], [1, 1]),
            &["fq"],
        ),
        (
            vec![2, 32, 8, 8],
            64,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            &["fq"],
        ),
    ];
    let mut s = 900;
    for (xs, m, w, steps) in cases {
        let ws = [m, xs[1], w.kernel[0], w.kernel[1]];
        for (act, wlim) in [(STATIC, 64), (DYNAMIC, 128)] {
            s += 1;
            let g = conv_graph(&xs, &ws, w.clone(), 1, &q(act, wlim, s % 2 == 0), steps, s);
            let vnni = Target::parse("x86_64-avx512").unwrap();
            let plans = int8_plans(&g, &vnni).unwrap();
            assert!(
                plans.iter().all(|(_, p)| p.contains("pixels as rows")),
                "{xs:?}: {plans:?}"
            );
            check_exact(&g, s);
        }
    }
}

/// A conv of few K groups keeps channels as rows on the same 8x8 map (the transposed stores
/// would cost more than the padding rows and the packing save): one input channel, a 3x3
/// kernel, 9 K groups. Exact.
#[test]
fn conv_of_few_k_groups_keeps_channels_as_rows() {
    let xs = [2, 1, 8, 8];
    let w = win([3, 3], [1, 1], [1; 4], [1, 1]);
    let ws = [32, 1, 3, 3];
    let g = conv_graph(&xs, &ws, w, 1, &q(STATIC, 64, false), &["relu"], 990);
    let vnni = Target::parse("x86_64-avx512").unwrap();
    let plans = int8_plans(&g, &vnni).unwrap();
    assert!(
        plans.iter().all(|(_, p)| !p.contains("pixels as rows")),
        "{plans:?}"
    );
    check_exact(&g, 990);
}

/// Pixel-rows convs sum only the kernel rows of each output row that read the image: the
/// K groups of the rest and their share of the zero-point correction are left out (one
/// correction table per range of kernel rows). Symmetric and asymmetric padding, a 5x5
/// kernel on a 4x4 map (three ranges at each border), stride 2, dilation 2, and padding so
/// wide that a row's window is all padding; the plan says which share is summed, the sums are
/// exact (against the interpreter, which sums every tap).
#[test]
fn conv_pixel_rows_skip_the_padding_rows() {
    let cases: [(Vec<usize>, usize, Window, &str); 5] = [
        (
            vec![3, 64, 4, 4],
            128,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
            "83%",
        ),
        (
            vec![1, 48, 4, 6],
            64,
            win([5, 5], [1, 1], [2; 4], [1, 1]),
            "70%",
        ),
        (
            vec![1, 32, 7, 7],
            32,
            win([3, 3], [1, 1], [2, 1, 0, 1], [1, 1]),
            "86%",
        ),
        (
            vec![2, 64, 9, 9],
            48,
            win([3, 3], [2, 2], [1; 4], [2, 2]),
            "83%",
        ),
        (
            vec![1, 32, 5, 5],
            32,
            win([3, 3], [1, 1], [4, 1, 4, 1], [1, 1]),
            "45%",
        ),
    ];
    let mut s = 950;
    for (xs, m, w, share) in cases {
        let ws = [m, xs[1], w.kernel[0], w.kernel[1]];
        for (act, wlim) in [(STATIC, 64), (DYNAMIC, 128)] {
            s += 1;
            let g = conv_graph(&xs, &ws, w.clone(), 1, &q(act, wlim, true), &["relu"], s);
            let vnni = Target::parse("x86_64-avx512").unwrap();
            let plans = int8_plans(&g, &vnni).unwrap();
            assert!(
                plans
                    .iter()
                    .all(|(_, p)| p.contains(&format!("pixels as rows, {share} of the kernel"))),
                "{xs:?}: {plans:?}"
            );
            check_exact(&g, s);
        }
    }
}

/// Where padding is the static zero point 0, the pixel-rows tiles at the ends of an output
/// row also skip the kernel columns that read the left or right padding (each such product
/// is 0): a 3x3 kernel on 4x4 and 8x8 maps and 12-pixel rows (two tiles), a 5x5 one (padding 2) on a 4x6 map, asymmetric
/// padding, stride 2 with dilation 2, padding so wide that a pixel's whole window row is
/// padding; two images, the residual step. The plan says so, and the sums are exact against
/// the interpreter (which sums every tap); with another zero point nothing is skipped.
#[test]
fn conv_pixel_rows_skip_the_padding_columns() {
    let cases: [(Vec<usize>, usize, Window); 7] = [
        (vec![2, 64, 4, 4], 128, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (vec![1, 32, 3, 12], 32, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (vec![1, 32, 8, 8], 64, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (vec![1, 48, 4, 6], 64, win([5, 5], [1, 1], [2; 4], [1, 1])),
        (
            vec![1, 32, 7, 7],
            32,
            win([3, 3], [1, 1], [0, 2, 1, 0], [1, 1]),
        ),
        (vec![2, 64, 9, 9], 48, win([3, 3], [2, 2], [1; 4], [2, 2])),
        (
            vec![1, 32, 5, 5],
            32,
            win([3, 3], [1, 1], [1, 4, 1, 4], [1, 1]),
        ),
    ];
    let vnni = Target::parse("x86_64-avx512").unwrap();
    let mut s = 1250;
    for (xs, m, w) in cases {
        let ws = [m, xs[1], w.kernel[0], w.kernel[1]];
        for (zero, steps) in [(0, &["relu"][..]), (0, &["res"][..]), (7, &["relu"][..])] {
            s += 1;
            let qq = Quant {
                zero: Some(zero),
                ..q(STATIC, 64, true)
            };
            let g = conv_graph(&xs, &ws, w.clone(), 1, &qq, steps, s);
            let plans = int8_plans(&g, &vnni).unwrap();
            let skips = plans
                .iter()
                .all(|(_, p)| p.contains("pixels as rows") && p.contains("the edge tiles skip"));
            assert_eq!(skips, zero == 0, "{xs:?} {w:?}: {plans:?}");
            check_exact(&g, s);
        }
    }
}

#[test]
fn conv_1d() {
    for act in [DYNAMIC, STATIC] {
        let g = conv_graph(
            &[2, 6, 30],
            &[10, 6, 3],
            window(&[3], &[2], &[1, 1], &[1]),
            1,
            &q(act, 128, true),
            &[],
            70,
        );
        check_exact(&g, 70);
    }
}

#[test]
fn conv_fused_epilogues() {
    let lists: [&[&str]; 7] = [
        &["relu"],
        &["relu6"],
        &["res", "relu"],
        &["bias", "res", "relu6"],
        &["relu", "bias", "bias"],
        &["fq"],
        &["fq_i8", "res", "fq"],
    ];
    for (i, steps) in lists.iter().enumerate() {
        for act in [DYNAMIC, STATIC] {
            for bias in [false, true] {
                let seed = 80 + i as u64;
                let g = conv_graph(
                    &[1, 9, 8, 8],
                    &[11, 9, 3, 3],
                    win([3, 3], [1, 1], [1; 4], [1, 1]),
                    1,
                    &q(act, 64, bias),
                    steps,
                    seed,
                );
                check_exact(&g, seed);
            }
        }
    }
}

/// The activations the AVX-512 kernels apply in the tile (GELU, SiLU, HardSwish; the AVX2
/// ones after it), alone and between other steps, against the interpreter (their
/// polynomials round differently from its f64 functions: a tolerance on top of the exact
/// integer contraction).
#[test]
fn activation_epilogues() {
    let lists: [&[&str]; 5] = [
        &["gelu"],
        &["silu"],
        &["hardswish"],
        &["res", "gelu", "bias"],
        &["bias", "silu", "fq"],
    ];
    for (i, steps) in lists.iter().enumerate() {
        for act in [DYNAMIC, STATIC] {
            let seed = 120 + i as u64;
            let g = matmul_graph(&[2, 13, 70], 35, &q(act, 64, i % 2 == 0), steps, seed);
            check_targets(&g, &inputs_for(&g, seed), TRANS, &targets());
            let g = conv_graph(
                &[1, 9, 8, 8],
                &[11, 9, 3, 3],
                win([3, 3], [1, 1], [1; 4], [1, 1]),
                1,
                &q(act, 64, i % 2 == 1),
                steps,
                seed,
            );
            check_targets(&g, &inputs_for(&g, seed), TRANS, &targets());
        }
    }
}

#[test]
fn depthwise_convs() {
    let cases = [
        (vec![1, 8, 10, 10], win([3, 3], [1, 1], [1; 4], [1, 1])),
        (vec![2, 5, 11, 9], win([3, 3], [2, 2], [1; 4], [1, 1])),
        (vec![1, 32, 7, 7], win([5, 5], [1, 1], [2; 4], [1, 1])),
        (vec![1, 3, 9, 9], win([3, 3], [3, 3], [0, 0, 2, 2], [2, 2])),
        // Wide rows (several 8-column groups), no padding; tasks.
        (vec![1, 40, 20, 37], win([3, 3], [1, 1], [0; 4], [1, 1])),
        (vec![1, 96, 30, 30], win([3, 3], [2, 2], [1; 4], [1, 1])),
    ];
    let mut s = 90;
    for (xs, w) in cases {
        let c = xs[1];
        for act in [DYNAMIC, STATIC] {
            for steps in [
                &[][..],
                &["relu6"][..],
                &["relu", "res"][..],
                &["bias", "relu"][..],
            ] {
                s += 1;
                let ws = [c, 1, w.kernel[0], w.kernel[1]];
                let g = conv_graph(&xs, &ws, w.clone(), c, &q(act, 128, s % 2 == 0), steps, s);
                check_exact(&g, s);
            }
        }
    }
}

#[test]
fn grouped_convs() {
    // (input, output channels, groups, window): channel counts per group that fill dword
    // planes or not, output channels per group below, at and over a tile, a channel
    // multiplier (one input channel per group, several outputs), tasks.
    let cases = [
        (vec![1, 8, 9, 9], 8, 2, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (
            vec![2, 12, 7, 7],
            18,
            3,
            win([3, 3], [2, 2], [1; 4], [1, 1]),
        ),
        (
            vec![1, 10, 6, 11],
            20,
            2,
            win([1, 1], [1, 1], [0; 4], [1, 1]),
        ),
        (vec![1, 4, 8, 8], 12, 4, win([3, 3], [1, 1], [1; 4], [1, 1])),
        (
            vec![1, 64, 16, 16],
            128,
            8,
            win([3, 3], [1, 1], [1; 4], [1, 1]),
        ),
    ];
    let mut s = 110;
    for (xs, m, group, w) in cases {
        let ws = [m, xs[1] / group, w.kernel[0], w.kernel[1]];
        for act in [DYNAMIC, STATIC] {
            for wlim in [64, 128] {
                s += 1;
                let g = conv_graph(
                    &xs,
                    &ws,
                    w.clone(),
                    group,
                    &q(act, wlim, s % 2 == 0),
                    &["relu"],
                    s,
                );
                check_exact(&g, s);
            }
        }
    }
}

/// Weights that can saturate `vpmaddubsw` (a pair 127, 127) are not proven safe, and the node
/// still computes exactly (on `WordPairs`); 7-bit weights are proven safe.
#[test]
fn saturating_weights_take_the_exact_scheme() {
    let op = Op::QuantizedMatMul {
        activation: DYNAMIC,
    };
    let mut w = vec![1i8; 8 * 4];
    let safe = Tensor::new(vec![8, 4], Data::I8(w.clone())).unwrap();
    assert!(pairs_never_saturate(&op, &safe));
    // Rows 2 and 3 of column 1 form a pair: 127 + 127 > 128.
    w[2 * 4 + 1] = 127;
    w[3 * 4 + 1] = 127;
    let bad = Tensor::new(vec![8, 4], Data::I8(w.clone())).unwrap();
    assert!(!pairs_never_saturate(&op, &bad));
    // Opposite signs never saturate; rows 3 and 4 are in different pairs.
    w[3 * 4 + 1] = -127;
    w[4 * 4 + 1] = 127;
    let ok = Tensor::new(vec![8, 4], Data::I8(w)).unwrap();
    assert!(pairs_never_saturate(&op, &ok));
    // |w| <= 64 everywhere is always safe; -128 with -1 is not.
    let seven: Vec<i8> = (0..64).map(|i| (i % 129) as i8 - 64).collect();
    let t = Tensor::new(vec![16, 4], Data::I8(seven)).unwrap();
    assert!(pairs_never_saturate(&op, &t));
    let t = Tensor::new(vec![2, 1], Data::I8(vec![-128, -1])).unwrap();
    assert!(!pairs_never_saturate(&op, &t));
    // A conv pairs input channels at the same tap.
    let conv = Op::QuantizedConv {
        window: win([1, 1], [1, 1], [0; 4], [1, 1]),
        group: 1,
        activation: STATIC,
    };
    let t = Tensor::new(vec![1, 2, 1, 1], Data::I8(vec![100, 100])).unwrap();
    assert!(!pairs_never_saturate(&conv, &t));
    let t = Tensor::new(vec![2, 1, 1, 1], Data::I8(vec![100, 100])).unwrap();
    assert!(pairs_never_saturate(&conv, &t));

    // Activations that saturate the naive scheme: every x at the top of the range, weights
    // 127: a pair sum of 2 x 255 x 127 = 64770.
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[3, 16]));
    let wv = g.add_const(
        "w",
        Tensor::new(vec![16, 5], Data::I8(vec![127; 80])).unwrap(),
    );
    let ws = g.add_const("ws", Tensor::from_f32(vec![1], vec![0.01]).unwrap());
    let y = g
        .add(
            "q",
            Op::QuantizedMatMul {
                activation: DYNAMIC,
            },
            &[x, wv, ws],
        )
        .unwrap();
    g.add_output("y", y);
    let inputs = vec![Tensor::new(vec![3, 16], Data::F32(vec![3.0; 48])).unwrap()];
    check_targets(&g, &inputs, EXACT, &targets());
    // The interpreter's exact sum: 16 x 255 x 127 (zero point 0, scale 3 / 255).
    let want = optc_ir::interp::run(&g, &inputs).unwrap();
    let xs = 3.0f32 / 255.0;
    let exact = (16 * 255 * 127) as f32 * (xs * 0.01);
    assert!(want[0].as_f32().unwrap().iter().all(|&v| v == exact));
}

/// `x86_64-avx512` objects hold VNNI kernels (`vpdpbusd`) and no AVX2 int8 kernel; AVX2
/// objects name the scheme each node took.
#[test]
fn objects_name_the_int8_scheme() {
    let g7 = matmul_graph(&[4, 64], 32, &q(DYNAMIC, 64, true), &["relu"], 1);
    let g8 = matmul_graph(&[4, 64], 32, &q(STATIC, 128, true), &[], 2);
    let conv = conv_graph(
        &[1, 4, 6, 6],
        &[8, 4, 3, 3],
        win([3, 3], [1, 1], [1; 4], [1, 1]),
        1,
        &q(STATIC, 128, false),
        &[],
        3,
    );
    let object = |g: &Graph, t: &str| {
        let target = Target::parse(t).unwrap();
        let opts = optc_codegen::aot::AotOptions {
            name: "m".to_string(),
            ..Default::default()
        };
        optc_codegen::aot::compile_object(g, &target, &opts)
            .unwrap_or_else(|e| panic!("{t}: {e}"))
            .object
    };
    let has = |o: &[u8], s: &str| o.windows(s.len()).any(|w| w == s.as_bytes());
    // The plans say which scheme and why.
    let avx2 = Target::parse("x86_64-avx2").unwrap();
    let plans = int8_plans(&g7, &avx2).unwrap();
    assert_eq!(plans.len(), 1);
    assert!(
        plans[0]
            .1
            .contains("scheme bytepairs (no weight pair can saturate)"),
        "{plans:?}"
    );
    let plans = int8_plans(&g8, &avx2).unwrap();
    assert!(
        plans[0]
            .1
            .contains("scheme wordpairs (a weight pair could saturate"),
        "{plans:?}"
    );
    assert!(plans[0].1.contains("static activations"), "{plans:?}");
    let plans = int8_plans(&conv, &Target::parse("x86_64-avx512").unwrap()).unwrap();
    assert!(
        plans[0].1.starts_with("int8 conv 3x3") && plans[0].1.contains("vnni"),
        "{plans:?}"
    );
    let o = object(&g7, "x86_64-avx2");
    assert!(has(&o, "optc_int8_bytepairs_matmul") && !has(&o, "optc_int8_wordpairs"));
    let o = object(&g8, "x86_64-avx2");
    assert!(has(&o, "optc_int8_wordpairs_matmul") && !has(&o, "optc_int8_bytepairs"));
    for g in [&g7, &g8, &conv] {
        let o = object(g, "x86_64-avx512");
        assert!(has(&o, "optc_int8_vnni_"), "no VNNI kernel");
        assert!(!has(&o, "optc_int8_bytepairs") && !has(&o, "optc_int8_wordpairs"));
    }
    // The int8 weights are stored once, as bytes: the object is far smaller than the f32
    // weights would be.
    let big = matmul_graph(&[4, 512], 512, &q(STATIC, 64, false), &[], 4);
    let o = object(&big, "x86_64-avx2");
    assert!(o.len() < 512 * 512 + 64 * 1024, "{} bytes", o.len());
}

/// A bad static scale is an error naming the node.
#[test]
fn bad_static_scale_is_an_error() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[2, 8]));
    let w = g.add_const("w", Tensor::new(vec![8, 3], Data::I8(vec![1; 24])).unwrap());
    let ws = g.add_const("ws", Tensor::from_f32(vec![1], vec![0.1]).unwrap());
    let xs = g.add_const("xs", Tensor::scalar_f32(0.0));
    let xz = g.add_const("xz", Tensor::new(vec![], Data::U8(vec![3])).unwrap());
    let y = g
        .add(
            "qmm",
            Op::QuantizedMatMul { activation: STATIC },
            &[x, w, ws, xs, xz],
        )
        .unwrap();
    g.add_output("y", y);
    for t in targets() {
        let Err(e) = compile_jit(&g, &t) else {
            panic!("a zero activation scale compiled")
        };
        assert!(e.to_string().contains("qmm"), "{e}");
        assert!(e.to_string().contains("scale"), "{e}");
    }
}

/// The static parameters of a consumer conv's activation: `(xs, xz)` constants.
fn activation_params(g: &mut Graph, scale: f32, zero: u8) -> [Value; 2] {
    let n = g.g.node_count();
    [
        g.add_const(&format!("xs{n}"), Tensor::scalar_f32(scale)),
        g.add_const(
            &format!("xz{n}"),
            Tensor::new(vec![], Data::U8(vec![zero])).unwrap(),
        ),
    ]
}

/// A static quantized conv of `x` (`ws` weights, fused `steps` by name) with activation
/// parameters `params`.
fn static_conv(
    g: &mut Graph,
    rng: &mut Rng,
    x: Value,
    ws: &[usize],
    window: Window,
    params: [Value; 2],
    steps: &[&str],
) -> Value {
    let n = g.g.node_count();
    let w = g.add_const(&format!("w{n}"), i8_tensor(rng, ws, 128));
    let scale = g.add_const(&format!("ws{n}"), scales(rng, ws[0]));
    let mut ins = vec![x, w, scale, params[0], params[1]];
    let op = Op::QuantizedConv {
        window,
        group: 1,
        activation: STATIC,
    };
    if steps.is_empty() {
        return g.add(&format!("conv{n}"), op, &ins).unwrap();
    }
    let tys: Vec<TensorType> = ins
        .iter()
        .map(|v| g.value_type(*v).unwrap().clone())
        .collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    let out = op.infer(&refs).unwrap()[0].clone();
    let base_inputs = ins.len();
    let fs = steps_named(g, &mut ins, rng, steps, &out, &[ws[0], 1, 1]);
    let fused = Op::Fused {
        base: Box::new(op),
        base_inputs,
        steps: fs,
    };
    g.add(&format!("conv{n}"), fused, &ins).unwrap()
}

/// A QDQ CNN's conv -> conv: conv 1 (its steps `steps1`) read by `readers` static convs
/// (`(output channels, window)`), all with the parameters `(0.05, 9)` unless `differ` (the
/// last reader's differ); conv 1's output also a graph output when `visible`.
#[allow(clippy::too_many_arguments)]
fn conv_chain(
    xs: &[usize],
    m1: usize,
    w1: Window,
    steps1: &[&str],
    readers: &[(usize, Window)],
    differ: bool,
    visible: bool,
    seed: u64,
) -> Graph {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let x = g.add_input("x", f(xs));
    let p1 = activation_params(&mut g, 0.02, 120);
    let ws1 = [m1, xs[1], w1.kernel[0], w1.kernel[1]];
    let y1 = static_conv(&mut g, &mut rng, x, &ws1, w1, p1, steps1);
    if visible {
        g.add_output("y1", y1);
    }
    let shared = activation_params(&mut g, 0.05, 9);
    for (i, (m, w)) in readers.iter().enumerate() {
        let p = if differ && i + 1 == readers.len() {
            activation_params(&mut g, 0.05, 10)
        } else {
            shared
        };
        let ws = [*m, m1, w.kernel[0], w.kernel[1]];
        let y = static_conv(&mut g, &mut rng, y1, &ws, w.clone(), p, &["relu"]);
        g.add_output(&format!("y{}", i + 2), y);
    }
    g
}

/// Int8 stays int8 between static quantized convs: a conv whose every reader quantizes its
/// output with the same parameters stores u8 (quantized in its tile store) and the readers
/// take it as quantized (their pre-pass moves bytes). Both kernel forms (channels as rows,
/// with partial panels and a 19-pixel row's tail; pixels as rows, with short blocks), two
/// readers, two images; not taken when the readers' parameters differ, when the output is
/// also a graph output, or when the producer adds a residual. Exact against the interpreter
/// of the original graph on every target, 1 and 2 threads.
#[test]
fn quantized_convs_hand_off_bytes() {
    let same = win([3, 3], [1, 1], [1; 4], [1, 1]);
    let one = win([1, 1], [1, 1], [0; 4], [1, 1]);
    let down = win([3, 3], [2, 2], [1; 4], [1, 1]);
    // (input, conv 1's channels and window, its steps, readers, differ, visible, handed off)
    type Case<'a> = (
        Vec<usize>,
        usize,
        Window,
        &'a [&'a str],
        Vec<(usize, Window)>,
        bool,
        bool,
        bool,
    );
    let cases: Vec<Case> = vec![
        (
            vec![1, 24, 19, 19],
            40,
            same.clone(),
            &["relu"],
            vec![(24, same.clone())],
            false,
            false,
            true,
        ),
        (
            vec![2, 64, 7, 7],
            48,
            same.clone(),
            &["bias", "relu6"],
            vec![(32, same.clone())],
            false,
            false,
            true,
        ),
        (
            vec![1, 32, 14, 14],
            64,
            one.clone(),
            &[],
            vec![(64, down.clone()), (16, one.clone())],
            false,
            false,
            true,
        ),
        (
            vec![1, 24, 19, 19],
            40,
            same.clone(),
            &["relu"],
            vec![(24, same.clone()), (8, one.clone())],
            true,
            false,
            false,
        ),
        (
            vec![1, 24, 19, 19],
            40,
            same.clone(),
            &["relu"],
            vec![(24, same.clone())],
            false,
            true,
            false,
        ),
        (
            vec![1, 24, 19, 19],
            24,
            same.clone(),
            &["res"],
            vec![(24, same.clone())],
            false,
            false,
            false,
        ),
    ];
    let vnni = Target::parse("x86_64-avx512").unwrap();
    let mut s = 2000;
    for (xs, m1, w1, steps1, readers, differ, visible, handed) in cases {
        s += 1;
        let g = conv_chain(&xs, m1, w1, steps1, &readers, differ, visible, s);
        let plans = int8_plans(&g, &vnni).unwrap();
        let outs = plans.iter().filter(|(_, p)| p.contains("u8 out")).count();
        let ins = plans.iter().filter(|(_, p)| p.contains("u8 in")).count();
        let want = if handed { (1, readers.len()) } else { (0, 0) };
        assert_eq!((outs, ins), want, "{xs:?}: {plans:?}");
        check_exact(&g, s);
    }
}

/// The hand-off's graph written directly (a fused `quantize_activation` step, a u8 input)
/// on every target: the VNNI kernels, the AVX2 kernels' planes from bytes (byte and word
/// pairs) with the producer on the generic lowering, and the generic lowering throughout.
#[test]
fn quantized_input_and_output_on_every_path() {
    let mut targets = targets();
    targets.push(Target::parse("x86_64-sse4.2").unwrap());
    for (i, wlim) in [64i64, 128].into_iter().enumerate() {
        let mut rng = Rng::new(77 + i as u64);
        let mut g = Graph::new();
        let x = g.add_input("x", f(&[1, 12, 9, 11]));
        let p1 = activation_params(&mut g, 0.02, 120);
        let w = g.add_const("w", i8_tensor(&mut rng, &[20, 12, 3, 3], wlim));
        let ws = g.add_const("ws", scales(&mut rng, 20));
        let conv = Op::QuantizedConv {
            window: win([3, 3], [1, 1], [1; 4], [1, 1]),
            group: 1,
            activation: STATIC,
        };
        let quantize = UnaryOp::QuantizeActivation {
            scale: 0.05,
            zero: 9.0,
        };
        let fused = Op::Fused {
            base: Box::new(conv.clone()),
            base_inputs: 5,
            steps: vec![FusedStep::Unary(UnaryOp::Relu), FusedStep::Unary(quantize)],
        };
        let y1 = g.add("conv1", fused, &[x, w, ws, p1[0], p1[1]]).unwrap();
        assert_eq!(g.value_type(y1).unwrap().dtype, optc_ir::DType::U8);
        let p2 = activation_params(&mut g, 0.05, 9);
        let w2 = g.add_const("w2", i8_tensor(&mut rng, &[8, 20, 3, 3], wlim));
        let ws2 = g.add_const("ws2", scales(&mut rng, 8));
        let y2 = g.add("conv2", conv, &[y1, w2, ws2, p2[0], p2[1]]).unwrap();
        g.add_output("y1", y1);
        g.add_output("y2", y2);
        let inputs = inputs_for(&g, 5 + i as u64);
        check_targets(&g, &inputs, EXACT, &targets);
    }
}
