//! The AVX2 GEMM path (iced-x86 microkernels, tile-store epilogues, threads) against the
//! reference interpreter, on `x86_64-avx2` and `x86_64-sse4.2` targets, at 1 and 2 threads.

mod common;
use common::*;
use optc_codegen::Target;
use optc_ir::{
    interp, BinaryOp, FusedStep, Graph, Op, ReduceKind, SliceDim, Tensor, UnaryOp, Window,
};

const TOL: Tol = Tol {
    atol: 1e-4,
    rtol: 1e-4,
};
/// Winograd's rounding error scales with the magnitude of the tile, not of each output:
/// the absolute tolerance is also this times the largest conv output (before the
/// epilogue). Measured on these tests: up to 3e-6 for F(4x4, 3x3), 6e-7 for F(2x2, 3x3).
const WINO_REL: f64 = 1e-5;

fn targets() -> Vec<Target> {
    runnable_targets(4)
}

/// Run on every target at 1 and 2 threads; compare with the interpreter.
fn check_all(g: &Graph, inputs: &[Tensor], tol: Tol) {
    check_targets(g, inputs, tol, &targets())
}

fn matmul_case(m: usize, k: usize, n: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let a = g.add_input("a", f(&[m, k]));
    let b = g.add_const("b", f32t(&mut rng, &[k, n]));
    let y = g.add("mm", Op::MatMul, &[a, b]).unwrap();
    g.add_output("y", y);
    check_all(&g, &inputs_for(&g, seed), TOL);
}

#[test]
fn matmul_const_b_edges() {
    let dims = [1usize, 2, 5, 6, 7, 13, 16, 17, 31];
    let mut s = 0;
    for &m in &dims {
        for &n in &[1usize, 7, 16, 17, 33] {
            for &k in &[1usize, 3, 17] {
                s += 1;
                matmul_case(m, k, n, s);
            }
        }
    }
}

#[test]
fn matmul_const_b_blocked() {
    // K over several KC blocks (incl. a partial one), M over several MC blocks and N over
    // several column units.
    matmul_case(151, 601, 67, 1);
    matmul_case(1, 784, 512, 2);
    matmul_case(49, 512, 1000, 3);
    matmul_case(300, 256, 530, 4);
    matmul_case(64, 512, 64, 5);
    // Run-time packed A, with partial row tiles and two K blocks.
    matmul_case(259, 300, 300, 6);
    // A constant B's K blocks are longer (`Target::gemm_kc`: up to 1024): several of them,
    // the last partial, partial row tiles, two column units.
    matmul_case(13, 1300, 70, 7);
    matmul_case(300, 1100, 520, 8);
}

#[test]
fn matmul_batched_a() {
    let mut rng = Rng::new(9);
    let mut g = Graph::new();
    let a = g.add_input("a", f(&[2, 3, 7, 40]));
    let b = g.add_const("b", f32t(&mut rng, &[40, 23]));
    let y = g.add("mm", Op::MatMul, &[a, b]).unwrap();
    g.add_output("y", y);
    check_all(&g, &inputs_for(&g, 9), TOL);
}

#[test]
fn gemm_const_b_with_c_and_alpha() {
    let mut rng = Rng::new(5);
    for &(m, k, n) in &[(1, 1, 1), (7, 300, 19), (13, 64, 48)] {
        for tb in [false, true] {
            for (alpha, beta) in [(1.0, 1.0), (0.5, 1.0), (1.0, 2.0)] {
                for cshape in [vec![n], vec![m, n], vec![1, n], vec![m, 1]] {
                    let mut g = Graph::new();
                    let a = g.add_input("a", f(&[m, k]));
                    let bs = if tb { vec![n, k] } else { vec![k, n] };
                    let b = g.add_const("b", f32t(&mut rng, &bs));
                    let c = g.add_const("c", f32t(&mut rng, &cshape));
                    let op = Op::Gemm {
                        alpha,
                        beta,
                        trans_a: false,
                        trans_b: tb,
                    };
                    let y = g.add("gemm", op, &[a, b, c]).unwrap();
                    g.add_output("y", y);
                    check_all(&g, &inputs_for(&g, 6), TOL);
                }
            }
        }
    }
}

/// Conv (+ bias) with fused steps, direct convolution (no Winograd).
fn conv_fused(x: &[usize], w: &[usize], window: Window, steps: &[&str], seed: u64) {
    conv_fused_w(x, w, window, steps, seed, 0)
}

/// Conv (+ bias) with fused steps, Winograd tiles up to `wino`.
fn conv_fused_w(x: &[usize], w: &[usize], window: Window, steps: &[&str], seed: u64, wino: usize) {
    conv_grouped(x, w, window, 1, steps, seed, wino)
}

/// Conv of `group` groups (+ bias) with fused steps, Winograd tiles up to `wino`.
fn conv_grouped(
    x: &[usize],
    w: &[usize],
    window: Window,
    group: usize,
    steps: &[&str],
    seed: u64,
    wino: usize,
) {
    let window_c = window.clone();
    let mut rng = Rng::new(seed);
    let mut g = Graph::new();
    let xv = g.add_input("x", f(x));
    let wv = g.add_const("w", f32t(&mut rng, w));
    let bv = g.add_const("b", f32t(&mut rng, &[w[0]]));
    let conv = Op::Conv { window, group };
    let oty = conv
        .infer(&[&f(x), &f(w), &f(&[w[0]])])
        .unwrap_or_else(|e| panic!("{e:?}"))[0]
        .clone();
    let mut ins = vec![xv, wv, bv];
    let fs = fused_steps(
        &mut g,
        &mut ins,
        &mut rng,
        steps,
        &oty,
        &[1, w[0], 1, 1],
        true,
    );
    let op = if fs.is_empty() {
        ins.truncate(3);
        conv
    } else {
        Op::Fused {
            base: Box::new(conv),
            base_inputs: 3,
            steps: fs,
        }
    };
    let y = g.add("conv", op, &ins).unwrap();
    g.add_output("y", y);
    let inputs = inputs_for(&g, seed);
    let mut tol = TOL;
    if wino > 0 {
        // The scale of the conv itself (its output before the fused steps).
        let mut base = Graph::new();
        let xv = base.add_input("x", f(x));
        let wt = (**g.const_value(ins[1]).expect("w")).clone();
        let bt = (**g.const_value(ins[2]).expect("b")).clone();
        let wv = base.add_const("w", wt);
        let bv = base.add_const("b", bt);
        let conv = Op::Conv {
            window: window_c,
            group,
        };
        let y = base.add("conv", conv, &[xv, wv, bv]).unwrap();
        base.add_output("y", y);
        let plain = interp::run(&base, &inputs[..1]).unwrap_or_else(|e| panic!("interp: {e}"));
        let scale = plain[0]
            .as_f32()
            .unwrap()
            .iter()
            .fold(0f64, |m, &v| m.max((v as f64).abs()));
        tol.atol = tol.atol.max(WINO_REL * scale);
    }
    check_targets(&g, &inputs, tol, &runnable_targets(wino));
}

/// A 1x1 conv whose tasks differ in work (two row parts of two column units, the last
/// column unit short: 14x14 = 112 + 84 columns), run in the order that balances claims from
/// both ends; with a residual and without, against the interpreter at 1 and 2 threads.
#[test]
fn conv_tasks_of_unequal_work() {
    let w1 = window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]);
    conv_fused(
        &[1, 576, 14, 14],
        &[96, 576, 1, 1],
        w1.clone(),
        &["res"],
        2101,
    );
    conv_fused(&[1, 320, 14, 14], &[112, 320, 1, 1], w1, &[], 2102);
}

#[test]
fn conv_implicit_gemm() {
    let w3 = window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]);
    conv_fused(&[1, 3, 7, 9], &[16, 3, 3, 3], w3.clone(), &[], 1);
    conv_fused(
        &[2, 5, 11, 10],
        &[19, 5, 3, 3],
        window(&[3, 3], &[2, 2], &[1, 0, 2, 1], &[1, 1]),
        &[],
        2,
    );
    conv_fused(
        &[1, 8, 5, 6],
        &[12, 8, 1, 1],
        window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]),
        &[],
        3,
    );
    conv_fused(
        &[1, 7, 9, 8],
        &[5, 7, 1, 1],
        window(&[1, 1], &[2, 2], &[0; 4], &[1, 1]),
        &[],
        4,
    );
    conv_fused(
        &[1, 4, 12, 13],
        &[9, 4, 3, 2],
        window(&[3, 2], &[1, 2], &[2, 1, 0, 1], &[2, 1]),
        &[],
        5,
    );
    // Stride 2 packs every other float with two loads and a shuffle: whole panels of such
    // groups (ow = 16), groups mixed with row-crossing ones (ow = 17, batch 2), and an
    // unpadded 1x1 stride-2 conv whose last groups end at the input's last float (the guard
    // that keeps the second load inside the buffer).
    let s2 = |p: &[usize]| window(&[3, 3], &[2, 2], p, &[1, 1]);
    conv_fused(&[1, 16, 32, 32], &[24, 16, 3, 3], s2(&[1, 1, 1, 1]), &[], 8);
    conv_fused(&[2, 8, 30, 33], &[10, 8, 3, 3], s2(&[1, 1, 1, 1]), &[], 9);
    conv_fused(
        &[1, 16, 16, 32],
        &[12, 16, 1, 1],
        window(&[1, 1], &[2, 2], &[0; 4], &[1, 1]),
        &[],
        10,
    );
    // K = 64*9 = 576 over three KC blocks, M over MC, many pixel units.
    conv_fused(&[1, 64, 20, 19], &[150, 64, 3, 3], w3.clone(), &[], 6);
    // Small maps split by rows pack their patches once before the tasks: one column unit
    // (7x7: a wide tile and a partial wide one), two units of two images (14x14), and a 1x1
    // conv read as a GEMM; with fused steps (residual, relu) in the last K block's tiles.
    conv_fused(&[1, 64, 7, 7], &[128, 64, 3, 3], w3.clone(), &["relu"], 11);
    conv_fused(&[2, 32, 14, 14], &[96, 32, 3, 3], w3.clone(), &[], 12);
    // Fused steps the tiles leave (sigmoid) on an output of 2^16 floats: after the tasks,
    // split across tasks by slices of the output.
    conv_fused(
        &[1, 8, 64, 64],
        &[16, 8, 3, 3],
        w3.clone(),
        &["sigmoid", "res", "relu"],
        14,
    );
    conv_fused(
        &[1, 256, 7, 7],
        &[128, 256, 1, 1],
        window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]),
        &["res", "relu"],
        13,
    );
    conv_fused(
        &[1, 3, 23, 23],
        &[8, 3, 7, 7],
        window(&[7, 7], &[2, 2], &[3, 3, 3, 3], &[1, 1]),
        &[],
        7,
    );
}

/// Convs over many images of fewer than 16 output pixels fold the images into the GEMM's
/// columns (`KernelPlan::fold`): 1-D windows of 4, 2 and 1 outputs (silero-vad's STFT and
/// encoder shapes: a 256-tap stride-128 window, 3 taps with padding, stride 2, windows whose
/// outer taps only ever read padding), a 2-D 3x3 map, enough images to split into tasks, with
/// bias and activations; a residual keeps the images apart (not folded). Against the
/// interpreter.
#[test]
fn conv_images_folded_into_columns() {
    let w1 = |k: usize, s: usize, p: usize| window(&[k], &[s], &[p, p], &[1]);
    conv_fused(&[16, 1, 640], &[24, 1, 256], w1(256, 128, 0), &[], 801);
    conv_fused(&[9, 10, 4], &[16, 10, 3], w1(3, 1, 1), &["relu"], 802);
    conv_fused(&[7, 12, 4], &[8, 12, 3], w1(3, 2, 1), &["relu6"], 803);
    conv_fused(&[5, 6, 1], &[16, 6, 3], w1(3, 1, 1), &[], 804);
    conv_fused(&[40, 16, 4], &[32, 16, 3], w1(3, 1, 1), &["relu"], 805);
    let w3 = window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]);
    conv_fused(&[3, 4, 3, 3], &[10, 4, 3, 3], w3.clone(), &["silu"], 806);
    conv_fused(&[3, 4, 3, 3], &[10, 4, 3, 3], w3, &["res", "relu"], 807);
    // A 1x1 conv (otherwise its input is B as it is) and silero's output conv.
    let w11 = window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]);
    conv_fused(&[2, 9, 3, 5], &[7, 9, 1, 1], w11, &[], 808);
    conv_fused(&[128, 16, 1], &[1, 16, 1], w1(1, 1, 0), &[], 809);
    // Silero's third encoder conv: one column unit of enough work, split in two for tasks.
    conv_fused(&[128, 64, 2], &[64, 64, 3], w1(3, 2, 1), &["relu"], 810);
    conv_fused(&[100, 40, 3], &[24, 40, 3], w1(3, 1, 1), &["relu"], 811);
}

/// Folded convs whose windows read padding run class by class of their pixels, only the
/// taps each class reads (`tap_classes`): a 3x3 conv on 4x4 maps (nine classes), a 1-D one
/// (three), stride 2, dilation 2 (1-D), a class of one tap (1-D windows of 3 over one input
/// pixel), an image count not a multiple of four, a rectangular map with uneven padding, a
/// bias and activations; enough images that the fillers stay under a tenth of the columns
/// (units of 128, 64 and 32 columns). Against the interpreter.
#[test]
fn conv_folded_by_tap_classes() {
    let w2 = |k: usize, s: usize, p: [usize; 4], d: usize| window(&[k, k], &[s, s], &p, &[d, d]);
    let w1 = |k: usize, s: usize, p: usize| window(&[k], &[s], &[p, p], &[1]);
    conv_fused(
        &[128, 16, 4, 4],
        &[24, 16, 3, 3],
        w2(3, 1, [1; 4], 1),
        &["bias", "relu"],
        821,
    );
    conv_fused(&[64, 16, 4], &[32, 16, 3], w1(3, 1, 1), &["relu"], 822);
    conv_fused(
        &[30, 16, 5, 5],
        &[16, 16, 3, 3],
        w2(3, 2, [1; 4], 1),
        &[],
        823,
    );
    conv_fused(
        &[64, 16, 8],
        &[16, 16, 3],
        window(&[3], &[1], &[2, 2], &[2]),
        &["relu6"],
        824,
    );
    conv_fused(&[64, 16, 1], &[16, 16, 3], w1(3, 1, 1), &["relu"], 825);
    conv_fused(
        &[93, 24, 3, 3],
        &[20, 24, 3, 3],
        w2(3, 1, [1; 4], 1),
        &["bias", "relu"],
        826,
    );
    conv_fused(
        &[128, 16, 2, 5],
        &[8, 16, 3, 3],
        w2(3, 1, [1, 2, 0, 1], 1),
        &[],
        827,
    );
    conv_fused(
        &[160, 32, 4, 4],
        &[64, 32, 3, 3],
        w2(3, 1, [1; 4], 1),
        &["relu"],
        828,
    );
}

#[test]
fn conv_epilogues() {
    let w3 = window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]);
    let w1 = window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]);
    let mut s = 10;
    for steps in [
        vec!["relu"],
        vec!["relu6"],
        vec!["res"],
        vec!["res", "relu"],
        vec!["bias", "relu"],
        vec!["relu", "sigmoid"],
        vec!["sigmoid", "res", "relu"],
        vec!["hardswish"],
        vec!["res", "hardswish", "relu6"],
        vec!["hardswish", "sigmoid"],
        // (SiLU tiles on AVX-512; elsewhere the step runs after the tiles.)
        vec!["silu"],
        vec!["res", "silu", "relu"],
    ] {
        s += 1;
        conv_fused(&[1, 6, 9, 7], &[13, 6, 3, 3], w3.clone(), &steps, s);
        conv_fused(
            &[2, 300, 5, 4],
            &[17, 300, 1, 1],
            w1.clone(),
            &steps,
            s + 100,
        );
    }
}

#[test]
fn matmul_epilogues() {
    let mut rng = Rng::new(77);
    // (Fewer than 6 rows, over several K blocks: kernels with 2 accumulator sets.)
    for (m, k, n) in [
        (1, 20, 37),
        (49, 300, 40),
        (3, 701, 21),
        (2, 6, 9),
        (8, 1200, 33),
    ] {
        for steps in [
            vec!["bias", "relu"],
            vec!["res"],
            vec!["bias", "res", "relu6"],
            vec!["bias", "hardswish", "res"],
            vec!["bias", "silu"],
        ] {
            let mut g = Graph::new();
            let a = g.add_input("a", f(&[m, k]));
            let b = g.add_const("b", f32t(&mut rng, &[k, n]));
            let mut ins = vec![a, b];
            let out = f(&[m, n]);
            let fs = fused_steps(&mut g, &mut ins, &mut rng, &steps, &out, &[n], false);
            let op = Op::Fused {
                base: Box::new(Op::MatMul),
                base_inputs: 2,
                steps: fs,
            };
            let y = g.add("mm", op, &ins).unwrap();
            g.add_output("y", y);
            check_all(&g, &inputs_for(&g, 3), TOL);
        }
    }
}

extern "C" fn count_task(ctx: *const u8, i: u64) {
    // SAFETY: `ctx` points to the `counts` array of the test below, which outlives the call,
    // and `i` is below its length.
    let counts = unsafe { &*(ctx as *const [std::sync::atomic::AtomicU32; 1000]) };
    counts[i as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

#[test]
fn parallel_for_runs_every_index_once() {
    use optc_codegen::runtime::set_thread_count;
    use optc_codegen::runtime::{optc_rt_parallel_for, run_begin, set_active_wait};
    // Passive and active waiting, inside and outside a run (active workers poll between
    // the run's parallel calls).
    for (active, in_run) in [(true, false), (true, true), (false, true), (true, true)] {
        set_active_wait(active);
        for threads in [1, 2, 4, 0] {
            let prev = set_thread_count(threads);
            let guard = in_run.then(run_begin);
            for n in [0u64, 1, 2, 7, 1000] {
                let counts: [std::sync::atomic::AtomicU32; 1000] =
                    std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0));
                optc_rt_parallel_for(count_task, &counts as *const _ as *const u8, n);
                for (i, c) in counts.iter().enumerate() {
                    let want = u32::from((i as u64) < n);
                    assert_eq!(
                        c.load(std::sync::atomic::Ordering::Relaxed),
                        want,
                        "active {active} threads {threads} n {n} i {i}"
                    );
                }
            }
            drop(guard);
            set_thread_count(prev);
        }
    }
}

#[test]
fn maxpool_nan_and_padding() {
    let mut rng = Rng::new(3);
    for (shape, w) in [
        (
            vec![1, 3, 12, 13],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![2, 2, 9, 17],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 1, 6, 9],
            window(&[2, 3], &[1, 2], &[0, 2, 1, 2], &[2, 1]),
        ),
        // Big enough to split across tasks (ResNet's stem pool, fewer channels).
        (
            vec![1, 40, 56, 57],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        // Stride 3 (lane gathers), dilation 2 with stride 2, an output narrower than 4.
        (
            vec![2, 3, 20, 23],
            window(&[2, 2], &[3, 3], &[1, 0, 0, 1], &[1, 1]),
        ),
        (
            vec![1, 2, 15, 19],
            window(&[3, 2], &[2, 2], &[2, 1, 2, 1], &[2, 2]),
        ),
        (
            vec![1, 2, 7, 6],
            window(&[3, 3], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        // Planes pooled as one tall plane (no padding, windows covering each plane's rows),
        // their rows as one row (the windows covering each row's columns too): 2x2 stride 2
        // on 8x8 and 4x4 maps, on enough planes for tasks; 3x3 stride 3; dilation 2 with
        // stride 4. Then 3x3 stride 3 on a 10x10 map, whose last row and column no window
        // reads: plane by plane.
        (
            vec![3, 5, 8, 8],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![40, 64, 4, 4],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        // A whole chunk of planes pooled along as one row, then planes one at a time.
        (
            vec![3, 50, 4, 4],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![40, 64, 8, 8],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![2, 3, 9, 6],
            window(&[3, 3], &[3, 3], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 2, 8, 8],
            window(&[2, 2], &[4, 4], &[0, 0, 0, 0], &[2, 2]),
        ),
        (
            vec![2, 3, 10, 10],
            window(&[3, 3], &[3, 3], &[0, 0, 0, 0], &[1, 1]),
        ),
        // Rows of 16 outputs and more (the AVX-512 routine: whole vectors and a masked
        // last one): stacked planes read in place whose rows do not pool as one row, stride
        // 1 with dilation, a padded stride-2 row of exactly 32 outputs.
        (
            vec![1, 3, 40, 41],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 2, 12, 70],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[2, 2]),
        ),
        (
            vec![2, 2, 9, 64],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        // Read in place, the windows' rows in the padding left out: two padded rows at the
        // top and none at the bottom (windows of 1, 2 and 3 rows), dilation 2 (windows
        // clipped to every other row), a window whose only row inside is the last; then a
        // window wholly in the padding (NaN: the padded copy).
        (
            vec![1, 3, 11, 37],
            window(&[3, 3], &[1, 2], &[2, 1, 0, 2], &[1, 1]),
        ),
        (
            vec![1, 2, 13, 20],
            window(&[3, 2], &[2, 1], &[3, 0, 3, 1], &[2, 1]),
        ),
        (
            vec![1, 2, 6, 18],
            window(&[2, 2], &[2, 2], &[2, 0, 0, 0], &[1, 1]),
        ),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let y = g.add("pool", Op::MaxPool { window: w }, &[x]).unwrap();
        g.add_output("y", y);
        let mut t = f32t(&mut rng, &shape);
        if let optc_ir::Data::F32(v) = t.data_mut() {
            for (i, x) in v.iter_mut().enumerate() {
                // Scattered NaNs, and whole NaN rows of some windows.
                if i % 7 == 3 || (i / shape[3]) % 5 == 2 {
                    *x = f32::NAN;
                }
            }
        }
        check_all(&g, &[t], EXACT);
    }
}

/// A MaxPool with fused steps (a QDQ model's fake_quantize, a per-channel Add) takes the
/// pool kernel, its steps after the planes: small planes (many of them, as in a QDQ CNN on
/// 8x8 images) and planes big enough for the steps to run in parallel slices.
#[test]
fn maxpool_with_fused_steps() {
    let mut rng = Rng::new(12);
    for (shape, w) in [
        (
            vec![6, 8, 4, 4],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![2, 8, 130, 131],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let c = shape[1];
        let bias = g.add_const("bias", f32t(&mut rng, &[c, 1, 1]));
        let op = Op::Fused {
            base: Box::new(Op::MaxPool { window: w }),
            base_inputs: 1,
            steps: vec![
                FusedStep::Unary(UnaryOp::FakeQuantize {
                    scale: 0.02,
                    zero: 3.0,
                    signed: false,
                }),
                FusedStep::Binary {
                    op: BinaryOp::Add,
                    input: 1,
                    swap: false,
                },
            ],
        };
        let y = g.add("pool", op, &[x, bias]).unwrap();
        g.add_output("y", y);
        let t = f32t(&mut rng, &shape);
        check_all(&g, &[t], EXACT);
    }
}

#[test]
fn matmul_runtime_b() {
    let cases: Vec<(Vec<usize>, Vec<usize>)> = vec![
        (vec![1, 1], vec![1, 1]),
        (vec![7, 13], vec![13, 17]),
        (vec![2, 5, 33], vec![33, 16]),
        (vec![2, 3, 7, 5], vec![2, 3, 5, 6]),
        (vec![2, 128, 64], vec![2, 64, 128]),
        (vec![2, 128, 128], vec![2, 128, 64]),
        (vec![300, 270], vec![270, 259]),
        (vec![3, 61, 300], vec![3, 300, 70]),
    ];
    for (i, (a, b)) in cases.into_iter().enumerate() {
        let mut g = Graph::new();
        let av = g.add_input("a", f(&a));
        let bv = g.add_input("b", f(&b));
        let y = g.add("mm", Op::MatMul, &[av, bv]).unwrap();
        g.add_output("y", y);
        check_all(&g, &inputs_for(&g, 40 + i as u64), TOL);
    }
    // With a fused bias + residual + relu epilogue.
    let mut rng = Rng::new(8);
    let mut g = Graph::new();
    let av = g.add_input("a", f(&[2, 9, 40]));
    let bv = g.add_input("b", f(&[2, 40, 21]));
    let bias = g.add_const("bias", f32t(&mut rng, &[21]));
    let r = g.add_input("r", f(&[2, 9, 21]));
    let op = Op::Fused {
        base: Box::new(Op::MatMul),
        base_inputs: 2,
        steps: vec![
            FusedStep::Binary {
                op: BinaryOp::Add,
                input: 2,
                swap: false,
            },
            FusedStep::Binary {
                op: BinaryOp::Add,
                input: 3,
                swap: true,
            },
            FusedStep::Unary(UnaryOp::Relu),
        ],
    };
    let y = g.add("mm", op, &[av, bv, bias, r]).unwrap();
    g.add_output("y", y);
    check_all(&g, &inputs_for(&g, 81), TOL);
}

/// Convs with few input channels whose output rows are whole 16-pixel steps run the
/// assembled direct-conv kernel (`ukr::dc`): stride 1 and 2 (and mixed), dilation, 1-4 input
/// channels, kernels up to 64 taps, output channels that are not a multiple of 6, batch 2,
/// every epilogue (HardSwish too; SiLU after the kernel); plus neighbours that take the implicit GEMM (a residual, 24-pixel rows,
/// too many taps, stride 2 without pads).
#[test]
fn conv_direct_few_channels() {
    let cases: Vec<(Vec<usize>, Vec<usize>, Window)> = vec![
        (
            vec![1, 3, 32, 32],
            vec![8, 3, 3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![2, 3, 20, 64],
            vec![13, 3, 3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 1, 9, 48],
            vec![7, 1, 5, 5],
            window(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1]),
        ),
        (
            vec![1, 4, 17, 32],
            vec![6, 4, 3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 2, 33, 64],
            vec![5, 2, 3, 3],
            window(&[3, 3], &[2, 2], &[2, 2, 2, 2], &[2, 2]),
        ),
        (
            vec![1, 1, 20, 32],
            vec![4, 1, 7, 7],
            window(&[7, 7], &[1, 1], &[3, 3, 3, 3], &[1, 1]),
        ),
        (
            vec![1, 3, 24, 16],
            vec![32, 3, 3, 3],
            window(&[3, 3], &[2, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 10, 31],
            vec![9, 3, 2, 2],
            window(&[2, 2], &[2, 2], &[0, 1, 1, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 12, 24],
            vec![8, 3, 3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 9, 33],
            vec![8, 3, 3, 3],
            window(&[3, 3], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 8, 16],
            vec![4, 3, 5, 5],
            window(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1]),
        ),
        // 16 outputs x stride 2 = 32 > the row's 31 columns: the next row's origin is behind.
        (
            vec![1, 2, 10, 31],
            vec![5, 2, 3, 1],
            window(&[3, 1], &[1, 2], &[1, 0, 1, 0], &[1, 1]),
        ),
    ];
    let mut s = 700;
    for (x, w, win) in cases {
        for steps in [
            vec![],
            vec!["relu"],
            vec!["relu6"],
            vec!["bias", "relu"],
            vec!["res"],
            // HardSwish in the direct-conv kernel (MobileNetV3's stem); SiLU stops it.
            vec!["bias", "hardswish"],
            vec!["hardswish", "relu6"],
            vec!["silu"],
        ] {
            s += 1;
            conv_fused(&x, &w, win.clone(), &steps, s);
        }
    }
}

/// Convs whose zero-padded input copy is large enough to be split into parallel parts of rows
/// before the tasks (`x64/padded_copy.rs`): the deinterleaved copy of the stride-2 direct-conv
/// kernel over two images (parts end inside planes), a grouped conv with asymmetric pads,
/// and an ungrouped 3x3 conv; each at 1 and 2 threads against the interpreter.
#[test]
fn padded_copy_in_parallel_parts() {
    let cases: Vec<(Vec<usize>, Vec<usize>, Window, usize)> = vec![
        (
            vec![2, 3, 70, 96],
            vec![16, 3, 3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
            1,
        ),
        (
            vec![1, 32, 61, 59],
            vec![64, 4, 3, 3],
            window(&[3, 3], &[1, 1], &[1, 2, 0, 1], &[1, 1]),
            8,
        ),
        (
            vec![1, 16, 63, 70],
            vec![40, 16, 3, 3],
            window(&[3, 3], &[2, 1], &[1, 1, 1, 1], &[1, 1]),
            1,
        ),
    ];
    for (s, (x, w, win, group)) in cases.into_iter().enumerate() {
        conv_grouped(&x, &w, win, group, &["bias", "relu"], 900 + s as u64, 0);
    }
}

/// Grouped convs, and ungrouped ones of few input channels, on the AVX-512 direct-conv kernel
/// (`x64/asm/direct_conv_avx512.rs`; the AVX2 and SSE targets take the implicit GEMM): rows of 7, 14, 28, 56 and 5 pixels (steps whose
/// second vector starts the next row, masked row ends, units that start mid-row), stride 2 on
/// the deinterleaved copy, dilation, groups of 8 channels (one pass of the 6- and 2-row
/// tiles), of 4, 11 and 12 (two 6-row tiles in a loop), one input channel per group, batch 2,
/// and the epilogues (Relu, none, Relu6, HardSwish, SiLU, GELU, after the conv's bias; and a
/// conv without a bias); against the
/// interpreter at 1 and 2 threads.
#[test]
fn conv_grouped_direct() {
    let w3 = |s: usize, p: usize, d: usize| window(&[3, 3], &[s, s], &[p; 4], &[d, d]);
    let cases: Vec<(Vec<usize>, Vec<usize>, Window, usize)> = vec![
        (vec![1, 48, 14, 14], vec![48, 8, 3, 3], w3(1, 1, 1), 6),
        (vec![1, 32, 7, 7], vec![32, 8, 3, 3], w3(1, 1, 1), 4),
        (vec![2, 24, 28, 28], vec![24, 8, 3, 3], w3(1, 1, 1), 3),
        (vec![1, 16, 112, 112], vec![16, 8, 3, 3], w3(2, 1, 1), 2),
        (vec![1, 16, 57, 57], vec![16, 4, 3, 3], w3(2, 1, 1), 4),
        (vec![1, 22, 9, 5], vec![22, 2, 3, 3], w3(1, 1, 1), 11),
        (vec![1, 24, 20, 21], vec![24, 12, 3, 3], w3(1, 2, 2), 2),
        (vec![1, 6, 30, 33], vec![12, 1, 3, 3], w3(1, 1, 1), 6),
        (
            vec![1, 16, 13, 40],
            vec![32, 8, 5, 3],
            window(&[5, 3], &[1, 2], &[2, 1, 2, 1], &[1, 1]),
            2,
        ),
        // Joined rows (padded rows under 16 positions, stride 1: vectors across row ends,
        // stored compressed): a 13x13 map whose second unit starts mid-row, 4x4 maps over
        // two images, a 5x5 kernel on a non-square map, dilation 2, and no padding (the
        // input read in place to its last float).
        (vec![1, 32, 13, 13], vec![32, 8, 3, 3], w3(1, 1, 1), 4),
        (vec![2, 12, 4, 4], vec![24, 6, 3, 3], w3(1, 1, 1), 2),
        (
            vec![1, 16, 6, 5],
            vec![16, 8, 5, 5],
            window(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1]),
            2,
        ),
        (vec![1, 16, 7, 7], vec![16, 4, 3, 3], w3(1, 2, 2), 4),
        (vec![1, 16, 9, 9], vec![16, 4, 3, 3], w3(1, 0, 1), 4),
        // Groups of 13 to 16 output channels in two passes (rows of two tiles of the
        // packed A each): RegNet's groups of 16, at stride 1 and 2.
        (vec![1, 32, 7, 7], vec![32, 16, 3, 3], w3(1, 1, 1), 2),
        (vec![1, 32, 20, 20], vec![32, 16, 3, 3], w3(2, 1, 1), 2),
        (vec![1, 26, 11, 12], vec![26, 13, 3, 3], w3(1, 1, 1), 2),
        (vec![1, 30, 14, 14], vec![30, 15, 3, 3], w3(1, 1, 1), 2),
        // Padded copies a whole plane at a time (at most 16 padded rows), in parallel parts
        // of planes: stride 2 (each row deinterleaved) over four images, and stride 1.
        (vec![4, 64, 14, 14], vec![64, 16, 3, 3], w3(2, 1, 1), 4),
        (vec![3, 48, 10, 9], vec![48, 8, 3, 3], w3(1, 1, 1), 6),
        // Ungrouped convs of few input channels take the kernel on AVX-512 too: a 7x7
        // stride-2 stem (147 taps) of 20 channels, a 5x5 conv of one channel over two images.
        (
            vec![1, 3, 45, 50],
            vec![20, 3, 7, 7],
            window(&[7, 7], &[2, 2], &[3, 3, 3, 3], &[1, 1]),
            1,
        ),
        (
            vec![2, 1, 17, 19],
            vec![13, 1, 5, 5],
            window(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1]),
            1,
        ),
    ];
    let mut s = 1900;
    for (x, w, win, group) in cases {
        for steps in [
            vec!["relu"],
            vec![],
            vec!["relu6"],
            vec!["hardswish"],
            vec!["silu"],
            vec!["gelu"],
        ] {
            s += 1;
            conv_grouped(&x, &w, win.clone(), group, &steps, s, 0);
        }
    }
    // Without a bias input (the accumulators start at zero).
    let mut rng = Rng::new(1999);
    let mut g = Graph::new();
    let xv = g.add_input("x", f(&[1, 24, 14, 14]));
    let wv = g.add_const("w", f32t(&mut rng, &[24, 8, 3, 3]));
    let conv = Op::Conv {
        window: w3(1, 1, 1),
        group: 3,
    };
    let y = g.add("conv", conv, &[xv, wv]).unwrap();
    g.add_output("y", y);
    check_all(&g, &inputs_for(&g, 1999), TOL);
}

/// Depthwise conv (+ bias) with fused steps.
fn dw_case(x: &[usize], k: [usize; 2], window: Window, bias: bool, steps: &[&str], seed: u64) {
    let mut rng = Rng::new(seed);
    let c = x[1];
    let mut g = Graph::new();
    let xv = g.add_input("x", f(x));
    let wv = g.add_const("w", f32t(&mut rng, &[c, 1, k[0], k[1]]));
    let mut ins = vec![xv, wv];
    if bias {
        ins.push(g.add_const("b", f32t(&mut rng, &[c])));
    }
    let conv = Op::Conv { window, group: c };
    let tys = [f(x), f(&[c, 1, k[0], k[1]]), f(&[c])];
    let refs: Vec<&optc_ir::TensorType> = tys.iter().take(ins.len()).collect();
    let oty = conv.infer(&refs).unwrap_or_else(|e| panic!("{e:?}"))[0].clone();
    let nb = ins.len();
    let fs = fused_steps(
        &mut g,
        &mut ins,
        &mut rng,
        steps,
        &oty,
        &[1, c, 1, 1],
        false,
    );
    let op = if fs.is_empty() {
        conv
    } else {
        Op::Fused {
            base: Box::new(conv),
            base_inputs: nb,
            steps: fs,
        }
    };
    let y = g.add("dw", op, &ins).unwrap();
    g.add_output("y", y);
    check_all(&g, &inputs_for(&g, seed), TOL);
}

#[test]
fn depthwise_conv() {
    let mut s = 200;
    for (x, k, w) in [
        (
            vec![1, 5, 9, 11],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![2, 3, 12, 13],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 4, 7, 3],
            [3, 3],
            window(&[3, 3], &[1, 1], &[0, 1, 2, 1], &[1, 1]),
        ),
        (
            vec![1, 2, 14, 17],
            [5, 5],
            window(&[5, 5], &[1, 2], &[2, 2, 2, 2], &[1, 1]),
        ),
        (
            vec![1, 3, 10, 12],
            [3, 3],
            window(&[3, 3], &[1, 1], &[2, 2, 2, 2], &[2, 2]),
        ),
        (
            vec![1, 40, 30, 30],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
    ] {
        for (bias, steps) in [
            (true, vec![]),
            (false, vec![]),
            (true, vec!["relu6"]),
            (true, vec!["relu", "res"]),
            (false, vec!["sigmoid", "relu"]),
            // With a residual the depthwise kernels stop before HardSwish; without one the
            // assembled kernel applies the activations on AVX-512 (SiLU, HardSwish, GELU,
            // between other steps).
            (true, vec!["relu", "hardswish", "res"]),
            (true, vec!["silu"]),
            (false, vec!["hardswish", "relu6"]),
            (true, vec!["relu", "gelu", "silu"]),
        ] {
            s += 1;
            dw_case(&x, k, w.clone(), bias, &steps, s);
        }
    }
    // SiLU after the depthwise kernel's tiles, on an output large enough to split.
    dw_case(
        &[1, 32, 48, 48],
        [3, 3],
        window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        true,
        &["silu", "res"],
        299,
    );
}

/// Depthwise geometries of the register-blocked kernel: unpadded (in place, scalar tails,
/// lane gathers), stride 2 (even/odd deinterleave) with dilation and asymmetric pads, stride 3,
/// mixed strides, odd output heights (single-row pass), 1-3 pixel row tails, many channels.
#[test]
fn depthwise_conv_geometries() {
    let mut s = 300;
    for (x, k, w) in [
        (
            vec![1, 6, 9, 10],
            [3, 3],
            window(&[3, 3], &[1, 1], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 5, 11, 13],
            [3, 3],
            window(&[3, 3], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 15, 19],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[2, 2]),
        ),
        (
            vec![1, 4, 13, 16],
            [3, 3],
            window(&[3, 3], &[3, 3], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 48, 57, 57],
            [3, 3],
            window(&[3, 3], &[2, 2], &[0, 0, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 8, 6, 7],
            [1, 3],
            window(&[1, 3], &[1, 1], &[0, 1, 0, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 9, 9],
            [3, 3],
            window(&[3, 3], &[2, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 9, 14],
            [3, 3],
            window(&[3, 3], &[1, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![2, 16, 7, 7],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 24, 14, 14],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 2, 5, 21],
            [5, 5],
            window(&[5, 5], &[2, 2], &[2, 2, 2, 2], &[1, 1]),
        ),
        (
            vec![1, 3, 1, 1],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 5, 10, 34],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 4, 9, 16],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 6, 8, 18],
            [1, 1],
            window(&[1, 1], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 6, 4],
            [3, 3],
            window(&[3, 3], &[1, 1], &[2, 3, 2, 3], &[1, 1]),
        ),
        (
            vec![1, 3, 9, 12],
            [7, 7],
            window(&[7, 7], &[1, 1], &[3, 3, 3, 3], &[1, 1]),
        ),
        (
            vec![1, 5, 6, 4],
            [5, 5],
            window(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1]),
        ),
        (
            vec![1, 4, 1, 20],
            [1, 5],
            window(&[1, 5], &[1, 1], &[0, 2, 0, 2], &[1, 1]),
        ),
        (
            vec![1, 2, 11, 23],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 4, 1, 4], &[1, 3]),
        ),
    ] {
        for (bias, steps) in [
            (true, vec!["relu6"]),
            (false, vec!["res"]),
            (true, vec!["relu", "res"]),
        ] {
            s += 1;
            dw_case(&x, k, w.clone(), bias, &steps, s);
        }
    }
}

/// Geometries of the assembled depthwise kernels (`ukr::dw`, used without a fused residual):
/// wide rows (inner column loop, several vectors per step, an overlapping last group), rows of
/// 1-9 outputs (partial stores of every length), stride 2 and mixed strides, pads 0-2,
/// dilation, 1-D and 2x2 kernels, batch 2 with many channels, windows of 16 to 49 taps (on
/// AVX-512); every epilogue.
#[test]
fn depthwise_conv_assembled() {
    let mut cases: Vec<(Vec<usize>, [usize; 2], Window)> = vec![
        (
            vec![1, 3, 9, 70],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 2, 20, 130],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 8, 40],
            [3, 3],
            window(&[3, 3], &[1, 1], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 9, 41],
            [3, 3],
            window(&[3, 3], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 12, 45],
            [3, 3],
            window(&[3, 3], &[1, 1], &[2, 2, 2, 2], &[2, 2]),
        ),
        (
            vec![1, 3, 12, 47],
            [3, 3],
            window(&[3, 3], &[2, 2], &[2, 2, 2, 2], &[2, 2]),
        ),
        (
            vec![1, 4, 10, 34],
            [2, 2],
            window(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 4, 37],
            [1, 3],
            window(&[1, 3], &[1, 1], &[0, 1, 0, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 10, 19],
            [3, 1],
            window(&[3, 1], &[1, 1], &[1, 0, 1, 0], &[1, 1]),
        ),
        (
            vec![1, 2, 9, 50],
            [3, 3],
            window(&[3, 3], &[1, 1], &[0, 2, 1, 0], &[1, 1]),
        ),
        (
            vec![1, 3, 17, 33],
            [3, 3],
            window(&[3, 3], &[2, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 3, 9, 40],
            [3, 3],
            window(&[3, 3], &[1, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![2, 37, 13, 29],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 40, 14, 14],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
    ];
    for w in 1..=9 {
        cases.push((
            vec![1, 2, 5, w],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ));
    }
    for w in [3, 5, 9, 13, 15, 17] {
        cases.push((
            vec![1, 2, 7, w],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ));
    }
    // The AVX-512 (zmm) kernel's rows of 9-17 outputs (partial stores of every length, an
    // overlapping last vector), at strides 1 and 2; more masks than it holds in registers
    // (a 7x7 window over a 12-wide row, a dilated window with uneven pads); rows long
    // enough for its inner column loop to take several steps (and leave a rest) at both
    // strides.
    cases.extend([
        (
            vec![1, 2, 5, 150],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ),
        (
            vec![1, 2, 6, 230],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ),
    ]);
    for w in 9..=17 {
        cases.push((
            vec![1, 2, 6, w],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]),
        ));
    }
    for w in [19, 25, 31, 33, 35] {
        cases.push((
            vec![1, 2, 7, w],
            [3, 3],
            window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        ));
    }
    cases.extend([
        (
            vec![1, 3, 9, 12],
            [7, 7],
            window(&[7, 7], &[1, 1], &[3, 3, 3, 3], &[1, 1]),
        ),
        (
            vec![1, 2, 11, 23],
            [3, 3],
            window(&[3, 3], &[1, 1], &[1, 4, 1, 4], &[1, 3]),
        ),
        (
            vec![1, 3, 12, 37],
            [5, 5],
            window(&[5, 5], &[2, 2], &[2, 2, 2, 2], &[1, 1]),
        ),
    ]);
    // Windows of more than 9 taps (AVX-512 targets: taps 9-19 in ymm21-31, the rest read
    // as broadcasts): 5x5 (MobileNetV3, EfficientNet) at strides 1 and 2, 7x7 (49 taps), a
    // dilated 5x5 and a 4x4 without pads.
    cases.extend([
        (
            vec![1, 6, 14, 14],
            [5, 5],
            window(&[5, 5], &[1, 1], &[2, 2, 2, 2], &[1, 1]),
        ),
        (
            vec![1, 4, 15, 33],
            [5, 5],
            window(&[5, 5], &[2, 2], &[2, 2, 2, 2], &[1, 1]),
        ),
        (
            vec![2, 3, 11, 40],
            [7, 7],
            window(&[7, 7], &[1, 1], &[3, 3, 3, 3], &[1, 1]),
        ),
        (
            vec![1, 3, 16, 21],
            [5, 5],
            window(&[5, 5], &[1, 1], &[4, 4, 4, 4], &[2, 2]),
        ),
        (
            vec![1, 2, 9, 19],
            [4, 4],
            window(&[4, 4], &[1, 1], &[0, 0, 0, 0], &[1, 1]),
        ),
    ]);
    let mut s = 500;
    for (x, k, w) in cases {
        for (bias, steps) in [
            (true, vec![]),
            (false, vec![]),
            (true, vec!["relu6"]),
            (false, vec!["relu"]),
            (true, vec!["sigmoid"]),
            (true, vec!["hardswish"]),
            (false, vec!["silu"]),
        ] {
            s += 1;
            dw_case(&x, k, w.clone(), bias, &steps, s);
        }
    }
}

#[test]
fn large_elementwise_split_across_tasks() {
    // Outputs of >= 65536 f32 elements are split into tasks along one dim.
    for (a, b) in [
        (vec![1, 128, 512], vec![512]),
        (vec![2, 64, 33, 17], vec![1, 64, 1, 1]),
        (vec![3, 5, 7, 11, 13], vec![3, 5, 7, 11, 13]),
        (vec![65536], vec![1]),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&a));
        let y = g.add_input("y", f(&b));
        let s = g.add("add", Op::Binary(BinaryOp::Mul), &[x, y]).unwrap();
        let t = g.add("sig", Op::Unary(UnaryOp::Sigmoid), &[s]).unwrap();
        let fused = g
            .add(
                "fused",
                Op::Fused {
                    base: Box::new(Op::Binary(BinaryOp::Sub)),
                    base_inputs: 2,
                    steps: vec![
                        FusedStep::Unary(UnaryOp::Relu),
                        FusedStep::Binary {
                            op: BinaryOp::Add,
                            input: 2,
                            swap: true,
                        },
                    ],
                },
                &[t, y, x],
            )
            .unwrap();
        g.add_output("o", fused);
        g.add_output("s", s);
        check_all(&g, &inputs_for(&g, 5), TRANS);
    }
}

/// Reductions over trailing axes of 65536 elements or more run in blocks of their outputs
/// (`ops::parallel::reduce_split`): parts that divide the outputs, a shorter last block
/// (13 outputs in 7 blocks), kept dims of several axes; one over a middle axis stays whole.
/// At 1 and 2 threads against the interpreter.
#[test]
fn large_reductions_split_across_tasks() {
    for (shape, axes, kind) in [
        (vec![1, 144, 56, 56], vec![2, 3], ReduceKind::Mean),
        (vec![2, 3, 97, 113], vec![2, 3], ReduceKind::Sum),
        (vec![13, 50, 101], vec![1, 2], ReduceKind::Max),
        (vec![5, 7, 2000], vec![2], ReduceKind::L2),
        (vec![4, 300, 64], vec![1], ReduceKind::Mean),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", f(&shape));
        let op = Op::Reduce {
            kind,
            axes,
            keepdims: true,
        };
        let y = g.add("reduce", op, &[x]).unwrap();
        g.add_output("y", y);
        check_all(&g, &inputs_for(&g, 9), TOL);
    }
}

/// Large nodes with no dim that 8, 4 or 2 parts divide (ViT's 197 tokens) split into up to 8
/// parts of `ceil(n / parts)` and a shorter last one (`ops::parallel::uneven_split`):
/// elementwise chains, a transpose of 4x4 blocks and one by the generic copy, a strided slice
/// split along its inner dim, a concat; at 1 and 2 threads against the interpreter.
#[test]
fn uneven_splits_across_tasks() {
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[3, 197, 131]));
    let y = g.add_input("y", f(&[131]));
    let m = g.add("mul", Op::Binary(BinaryOp::Mul), &[x, y]).unwrap();
    let s = g.add("sig", Op::Unary(UnaryOp::Sigmoid), &[m]).unwrap();
    g.add_output("s", s);
    // [197, 389] -> [389, 197]: 4x4 blocks, parts along the output's rows.
    let a = g.add_input("a", f(&[197, 389]));
    let at = g
        .add("t_blocks", Op::Transpose { perm: vec![1, 0] }, &[a])
        .unwrap();
    g.add_output("at", at);
    // [197, 3, 1, 131] -> [3, 197, 1, 131]: the generic copy, parts along 197.
    let b = g.add_input("b", f(&[197, 3, 1, 131]));
    let perm = vec![1, 0, 2, 3];
    let bt = g.add("t_map", Op::Transpose { perm }, &[b]).unwrap();
    g.add_output("bt", bt);
    // [3, 211, 521] -> [3, 199, 257] (every other column): parts along 257.
    let c = g.add_input("c", f(&[3, 211, 521]));
    let dims = vec![
        SliceDim::whole(3),
        SliceDim {
            start: 5,
            step: 1,
            len: 199,
        },
        SliceDim {
            start: 3,
            step: 2,
            len: 257,
        },
    ];
    let cs = g.add("slice", Op::Slice { dims }, &[c]).unwrap();
    g.add_output("cs", cs);
    // [197, 200] ++ [197, 157] along 1: parts along 197.
    let d = g.add_input("d", f(&[197, 200]));
    let e = g.add_input("e", f(&[197, 157]));
    let de = g.add("concat", Op::Concat { axis: 1 }, &[d, e]).unwrap();
    g.add_output("de", de);
    check_all(&g, &inputs_for(&g, 11), TRANS);
}

/// 3x3 stride-1 convs with constant weights take the Winograd F(2x2, 3x3) path on AVX2:
/// odd and even output sizes (clipped edge tiles), asymmetric and zero pads, C not a
/// multiple of 4, M not a multiple of 6, several row parts and tile blocks, a partial last
/// tile block, batch 2, and the epilogues.
#[test]
fn conv_winograd() {
    for wino in [2, 4] {
        conv_winograd_cases(wino);
    }
}

fn conv_winograd_cases(wino: usize) {
    let w3 = |p: &[usize]| window(&[3, 3], &[1, 1], p, &[1, 1]);
    let p1 = [1, 1, 1, 1];
    conv_fused_w(&[1, 16, 4, 4], &[16, 16, 3, 3], w3(&p1), &[], 31, wino);
    conv_fused_w(&[2, 17, 9, 7], &[19, 17, 3, 3], w3(&p1), &[], 32, wino);
    conv_fused(
        &[1, 20, 11, 30],
        &[22, 20, 3, 3],
        w3(&[0, 2, 1, 0]),
        &[],
        33,
    );
    conv_fused(&[1, 16, 10, 10], &[16, 16, 3, 3], w3(&[0; 4]), &[], 34);
    conv_fused_w(&[1, 32, 6, 6], &[290, 32, 3, 3], w3(&p1), &[], 35, wino);
    conv_fused_w(&[1, 130, 8, 8], &[24, 130, 3, 3], w3(&p1), &[], 36, wino);
    conv_fused_w(&[1, 16, 40, 40], &[16, 16, 3, 3], w3(&p1), &[], 37, wino);
    // 32 input channels and few output ones: units of 32 tiles at F(4x4) (the last partial:
    // 9 x 12 = 108 tiles), over two images too.
    conv_fused_w(
        &[1, 32, 36, 34],
        &[16, 32, 3, 3],
        w3(&p1),
        &["relu"],
        38,
        wino,
    );
    conv_fused_w(&[2, 32, 20, 20], &[24, 32, 3, 3], w3(&p1), &[], 39, wino);
    // One tile block in several row parts: the input transform shared by the tasks, done
    // before them in 4 parts of the input channels (64, 36), 2 (20), or 1 (17, serially).
    for (c, steps, s) in [
        (64, vec!["bias", "relu"], 131),
        (36, vec!["res", "relu"], 132),
        (20, vec![], 133),
        (17, vec!["res"], 134),
    ] {
        conv_fused_w(&[1, c, 14, 14], &[260, c, 3, 3], w3(&p1), &steps, s, wino);
        conv_fused_w(
            &[1, c, 7, 7],
            &[300, c, 3, 3],
            w3(&p1),
            &steps,
            s + 10,
            wino,
        );
    }
    let mut s = 40;
    for steps in [
        vec!["relu"],
        vec!["relu6"],
        vec!["res"],
        vec!["res", "relu"],
        vec!["bias", "relu"],
        vec!["relu", "sigmoid"],
        vec!["sigmoid", "res", "relu"],
        // Winograd's output transform stops before HardSwish and SiLU.
        vec!["relu", "hardswish"],
        vec!["silu"],
    ] {
        s += 1;
        conv_fused_w(&[1, 18, 7, 9], &[20, 18, 3, 3], w3(&p1), &steps, s, wino);
        conv_fused_w(
            &[2, 64, 14, 14],
            &[70, 64, 3, 3],
            w3(&p1),
            &steps,
            s + 100,
            wino,
        );
    }
}

/// Last panels of at most 8 columns take the 8-column (half) microkernels: 7x7 maps (49 =
/// 3 x 16 + 1), 14x14 (196 = 12 x 16 + 4), N = 8, 24, 40 exactly and N = 9 (a 9-column tail
/// stays on the full kernel), with accumulation over K blocks and the epilogues.
#[test]
fn half_panel_tails() {
    let w1 = window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]);
    conv_fused(&[1, 40, 7, 7], &[50, 40, 1, 1], w1.clone(), &["relu6"], 61);
    conv_fused(&[1, 300, 7, 7], &[20, 300, 1, 1], w1.clone(), &["res"], 62);
    conv_fused(
        &[2, 24, 14, 14],
        &[13, 24, 1, 1],
        w1.clone(),
        &["bias", "relu"],
        63,
    );
    for (m, k, n) in [
        (7, 33, 8),
        (13, 300, 24),
        (6, 17, 40),
        (5, 9, 9),
        (1, 600, 5),
    ] {
        matmul_case(m, k, n, 64 + n as u64);
    }
}

/// 1x1 convs on small maps with 16k output channels swap the GEMM roles (pixels as the
/// microkernel's rows, tiles stored transposed): 7x7 (49 = 8 x 6 + 1), 5x5, 3x3, 2x2, 1x1,
/// 1x5 and 2x7 maps (last tiles of every height), batches, K not a multiple of 4, in 1, 2 or
/// 3 K blocks, several channel units, every epilogue; a residual (added in the transposed
/// store) as the last step, and followed by a step (the usual path); deep convs on maps of
/// up to 256 pixels.
#[test]
fn small_map_1x1_swapped() {
    let w1 = window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]);
    let cases: [(&[usize], &[usize], &[&str]); 18] = [
        (&[1, 40, 7, 7], &[64, 40, 1, 1], &["relu6"]),
        (&[1, 1000, 3, 3], &[32, 1000, 1, 1], &["relu6"]),
        (&[2, 301, 7, 7], &[160, 301, 1, 1], &["relu6"]),
        (&[1, 17, 3, 3], &[32, 17, 1, 1], &["relu"]),
        (&[1, 8, 1, 1], &[16, 8, 1, 1], &[]),
        (&[1, 5, 2, 2], &[48, 5, 1, 1], &["bias", "relu"]),
        (&[3, 12, 5, 5], &[32, 12, 1, 1], &["relu6"]),
        (&[1, 7, 1, 5], &[16, 7, 1, 1], &["relu"]),
        (&[1, 9, 2, 7], &[16, 9, 1, 1], &[]),
        (&[1, 24, 7, 7], &[32, 24, 1, 1], &["res"]),
        (&[1, 24, 7, 7], &[32, 24, 1, 1], &["relu", "sigmoid"]),
        (&[2, 500, 7, 7], &[48, 500, 1, 1], &["res"]),
        (&[1, 17, 3, 3], &[32, 17, 1, 1], &["relu6", "res"]),
        (&[1, 9, 2, 7], &[16, 9, 1, 1], &["res"]),
        (&[1, 5, 2, 2], &[16, 5, 1, 1], &["res"]),
        (&[1, 24, 7, 7], &[32, 24, 1, 1], &["res", "relu"]),
        // Deep convs on up to 256 pixels: 14x14 (196 = 32 x 6 + 4), 9x11.
        (&[1, 400, 14, 14], &[32, 400, 1, 1], &["res"]),
        (&[2, 100, 9, 11], &[16, 100, 1, 1], &["relu6"]),
    ];
    for (i, (x, w, steps)) in cases.iter().enumerate() {
        conv_fused(x, w, w1.clone(), steps, 90 + i as u64);
    }
}

/// An activation in the tile epilogue (AVX-512; after the tiles on AVX2) of a MatMul whose
/// outputs span `range`, with NaN and infinite inputs.
fn activation_over_the_range(step: UnaryOp, range: f32, seed: u64) {
    let mut rng = Rng::new(seed);
    let (m, k, n) = (7, 5, 40);
    let mut g = Graph::new();
    let a = g.add_input("a", f(&[m, k]));
    let b = g.add_const("b", f32t(&mut rng, &[k, n]));
    let op = Op::Fused {
        base: Box::new(Op::MatMul),
        base_inputs: 2,
        steps: vec![FusedStep::Unary(step)],
    };
    let y = g.add("mm", op, &[a, b]).unwrap();
    g.add_output("y", y);
    let mut x: Vec<f32> = (0..m * k).map(|_| rng.f32(-range, range)).collect();
    x[3] = f32::NAN;
    x[11] = f32::INFINITY;
    x[17] = f32::NEG_INFINITY;
    let inputs = [Tensor::new(vec![m, k], optc_ir::Data::F32(x)).unwrap()];
    check_all(&g, &inputs, TOL);
}

/// SiLU over the whole f32 range of its argument: outputs far past the point where
/// `exp(-x)` overflows (x < -88.7: 0) and where the sigmoid saturates at 1.
#[test]
fn silu_epilogue_over_the_range() {
    activation_over_the_range(UnaryOp::Silu, 80.0, 91);
}

/// HardSwish on both sides of its bends (t = 0 below -3, 1 above 3), on infinities (+inf
/// stays inf: AVX-512 divides min(x, 4) by a product and two FMAs, whose remainder an
/// infinite x would make NaN) and NaN.
#[test]
fn hard_swish_epilogue_over_the_range() {
    activation_over_the_range(UnaryOp::HardSwish, 8.0, 93);
}

/// GELU where erf's argument is clamped (|x r| > 4) and saturates to +-1 (the negative
/// side's `1 + erf` cancels to 0; -inf gives NaN: `-inf * 0`, as the chain does).
#[test]
fn gelu_epilogue_over_the_range() {
    activation_over_the_range(UnaryOp::Gelu, 8.0, 92);
}

/// Grouped convs (not depthwise) on the implicit GEMM, one group per row part: 8 output
/// channels per group (a 6-row tile and a 2-row one), depth over two K blocks, stride 2 with
/// padding, two images, a grouped 1x1 conv, and fused steps in the tiles (residual, relu)
/// and after them (sigmoid).
#[test]
fn conv_groups() {
    let w3 = window(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1]);
    conv_grouped(&[1, 16, 9, 11], &[16, 8, 3, 3], w3.clone(), 2, &[], 61, 0);
    conv_grouped(
        &[2, 24, 10, 9],
        &[48, 8, 3, 3],
        w3.clone(),
        3,
        &["relu"],
        62,
        0,
    );
    conv_grouped(
        &[1, 96, 8, 8],
        &[32, 48, 3, 3],
        w3.clone(),
        2,
        &["res", "relu"],
        63,
        0,
    );
    conv_grouped(
        &[1, 32, 15, 14],
        &[64, 8, 3, 3],
        window(&[3, 3], &[2, 2], &[1, 1, 1, 1], &[1, 1]),
        4,
        &["sigmoid"],
        64,
        0,
    );
    conv_grouped(
        &[1, 40, 7, 7],
        &[40, 8, 1, 1],
        window(&[1, 1], &[1, 1], &[0; 4], &[1, 1]),
        5,
        &["res"],
        65,
        0,
    );
    // Winograd allowed: grouped convs stay on the implicit GEMM.
    conv_grouped(&[1, 32, 12, 12], &[32, 16, 3, 3], w3, 2, &["relu"], 66, 4);
}
