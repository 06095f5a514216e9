//! The bugs the fuzz targets found, each as the smallest graph that shows it, checked by
//! the differential harness (interpreter vs optc at -O0..-O3 on every host target). The
//! raw inputs that found them are in `regressions/`; these stay meaningful when the
//! generator changes.

use optc_fuzz::differential::{check, Outcome};
use optc_ir::{DType, Graph, Op, Tensor, TensorType, UnaryOp, Window};

fn f32s(shape: &[usize], f: impl Fn(usize) -> f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_f32(shape.to_vec(), (0..n).map(f).collect()).expect("length matches")
}

fn all_agree(graph: &Graph) {
    let outcomes = check(graph, &[0, 1, 2, 3], 1);
    assert!(!outcomes.is_empty(), "the interpreter runs the graph");
    for (config, outcome) in outcomes {
        assert!(matches!(outcome, Outcome::Agrees), "{config}: {outcome:?}");
    }
}

/// A Relu or Clip fused into a conv / GEMM microkernel turned NaN into 0.
#[test]
fn nan_through_fused_relu_and_clip() {
    for unary in [
        UnaryOp::Relu,
        UnaryOp::Clip {
            min: -0.5,
            max: 0.5,
        },
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 8, 6, 6]));
        // One NaN weight per output channel 3: its whole output plane is NaN.
        let w = f32s(&[16, 8, 3, 3], |i| {
            if i / 72 == 3 {
                f32::NAN
            } else {
                ((i * 7919) % 13) as f32 / 13.0 - 0.5
            }
        });
        let w = g.add_const("w", w);
        let window = Window {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![1, 1, 1, 1],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        let c = g
            .add("conv", Op::Conv { window, group: 1 }, &[x, w])
            .unwrap();
        let y = g.add("act", Op::Unary(unary), &[c]).unwrap();
        g.add_output("y", y);
        all_agree(&g);
    }
}

/// Gemm with beta = 0 skipped C, but `0 * NaN` and `0 * inf` are NaN.
#[test]
fn gemm_with_beta_zero_still_multiplies_a_non_finite_c() {
    for (c_shape, special) in [(vec![4usize, 5], f32::NAN), (vec![5], f32::INFINITY)] {
        let mut g = Graph::new();
        let a = g.add_input("a", TensorType::new(DType::F32, vec![4, 3]));
        let b = g.add_const("b", f32s(&[3, 5], |i| i as f32 * 0.1 - 0.7));
        let c = g.add_const("c", f32s(&c_shape, |i| if i == 2 { special } else { 1.0 }));
        let op = Op::Gemm {
            alpha: 1.0,
            beta: 0.0,
            trans_a: false,
            trans_b: false,
        };
        let y = g.add("gemm", op, &[a, b, c]).unwrap();
        g.add_output("y", y);
        all_agree(&g);
    }
}

/// A NaN conv weight over padding: the input is padded with zeros and multiplied, and
/// `0 x NaN` is NaN, so the border outputs of that channel are NaN too. The interpreter and
/// the depthwise kernels skipped such taps (a finite border); im2col and Winograd multiplied.
#[test]
fn nan_conv_weight_over_padding_is_nan_at_the_border() {
    // (input channels, group, kernel, stride, pads): a 1x1 conv whose border outputs read
    // only padding, depthwise 3x3 at stride 1 and 2, and a grouped 3x3.
    for (c, group, k, stride, pad) in [
        (8, 1, 1, 1, 1),
        (8, 8, 3, 1, 1),
        (8, 8, 3, 2, 1),
        (8, 2, 3, 1, 2),
    ] {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, c, 6, 6]));
        let per = c / group * k * k;
        // Output channel 3: one NaN weight (its first tap).
        let w = f32s(&[8, c / group, k, k], |i| {
            if i == 3 * per {
                f32::NAN
            } else {
                ((i * 7919) % 13) as f32 / 13.0 - 0.5
            }
        });
        let w = g.add_const("w", w);
        let window = Window {
            kernel: vec![k, k],
            strides: vec![stride, stride],
            pads: vec![pad; 4],
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        let y = g.add("conv", Op::Conv { window, group }, &[x, w]).unwrap();
        g.add_output("y", y);
        // The interpreter (the oracle): channel 3's corner output is NaN, channel 2's is not.
        let inputs = optc::random_inputs(&g.input_types(), 3);
        let out = optc_ir::interp::run(&g, &inputs).expect("the interpreter runs it");
        let y = out[0].to_f64_vec();
        let plane = y.len() / 8;
        assert!(y[3 * plane].is_nan(), "{c} {group} {k} {stride} {pad}");
        assert!(!y[2 * plane].is_nan(), "{c} {group} {k} {stride} {pad}");
        all_agree(&g);
    }
}

/// Equality saturation never settled on a graph with a NaN constant: the constant folder
/// interned each folded NaN as a new constant (NaN != NaN), so every iteration added nodes
/// until the runner's limits (30 s at -O3 for these 4 nodes; the `graphs` target's timeout).
#[test]
fn nan_constants_fold_to_one_constant() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::new(DType::F32, vec![]));
    let t = g.add("t", Op::Transpose { perm: vec![] }, &[x]).unwrap();
    let c = g.add_const("c", f32s(&[], |_| f32::NAN));
    let m = g
        .add("m", Op::Binary(optc_ir::BinaryOp::Max), &[c, x])
        .unwrap();
    g.add_output("m", m);
    g.add_output("t", t);
    all_agree(&g);
}

/// The sparse kernels skipped zero weights, so `NaN x 0` added 0: `sqrt(x)` (NaN for x < 0)
/// into a MatMul with a weight of zeros gave 0 where the interpreter gives NaN. Also a weight
/// of 20% density (rows that meet the NaN through a stored weight, rows that do not), on
/// 1 row (the scalar kernel) and 20 rows (panels).
#[test]
fn nan_times_a_skipped_zero_weight_is_nan() {
    for (rows, k, n, stored_every) in [(1, 1, 1, 0), (1, 12, 9, 5), (20, 12, 9, 5)] {
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::new(DType::F32, vec![rows, k]));
        let s = g.add("s", Op::Unary(UnaryOp::Sqrt), &[x]).unwrap();
        let w = f32s(&[k, n], |i| {
            if stored_every == 0 || i % stored_every != 0 {
                -0.0
            } else {
                ((i * 7919) % 13) as f32 / 13.0 - 0.5
            }
        });
        let w = g.add_const("w", w);
        let y = g.add("mm", Op::MatMul, &[s, w]).unwrap();
        g.add_output("y", y);
        all_agree(&g);
    }
}
