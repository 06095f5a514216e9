//! Imported graphs compute what tract computes on the original model (IR interpreter vs
//! tract), for small models exercising attribute defaults and opset differences.

mod common;

use common::{import, run_tract};
use optc_ir::{DType, Data, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

fn rand_t(shape: &[usize], seed: &mut u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 33) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).unwrap()
}

fn compare(m: &ModelBuilder, inputs: &[Tensor]) {
    let g = import(m);
    let ours = optc_ir::interp::run(&g, inputs).unwrap_or_else(|e| panic!("{e}"));
    let theirs = run_tract(&m.to_bytes(), inputs);
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.shape(), b.shape());
        for (x, y) in a.to_f64_vec().iter().zip(b.to_f64_vec()) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }
}

#[test]
fn small_cnn_matches_tract() {
    let mut s = 7u64;
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[1, 3, 11, 10])
        .initializer("w1", &rand_t(&[6, 3, 3, 3], &mut s))
        .initializer("b1", &rand_t(&[6], &mut s))
        .initializer("wd", &rand_t(&[6, 1, 3, 3], &mut s))
        .initializer("bs", &rand_t(&[6], &mut s))
        .initializer("bb", &rand_t(&[6], &mut s))
        .initializer("bm", &rand_t(&[6], &mut s))
        .initializer_typed_fields(
            "bv",
            &Tensor::from_f32(vec![6], vec![0.5, 1.0, 1.5, 2.0, 0.1, 0.9]).unwrap(),
        )
        .initializer("fc", &rand_t(&[10, 6], &mut s))
        .node(
            "Conv",
            &["x", "w1", "b1"],
            &["c1"],
            vec![
                ("auto_pad", Attr::Str("SAME_LOWER".into())),
                ("strides", Attr::Ints(vec![2, 2])),
            ],
        )
        .node(
            "BatchNormalization",
            &["c1", "bs", "bb", "bm", "bv"],
            &["n1"],
            vec![],
        )
        .node("HardSwish", &["n1"], &["a1"], vec![])
        .node(
            "Conv",
            &["a1", "wd"],
            &["c2"],
            vec![
                ("group", Attr::Int(6)),
                ("pads", Attr::Ints(vec![1, 0, 0, 1])),
            ],
        )
        .node("LeakyRelu", &["c2"], &["a2"], vec![])
        .node(
            "MaxPool",
            &["a2"],
            &["p"],
            vec![
                ("kernel_shape", Attr::Ints(vec![2, 2])),
                ("ceil_mode", Attr::Int(1)),
                ("strides", Attr::Ints(vec![2, 2])),
            ],
        )
        .node("GlobalAveragePool", &["p"], &["gp"], vec![])
        .node("Flatten", &["gp"], &["f"], vec![])
        .node(
            "Gemm",
            &["f", "fc"],
            &["lg"],
            vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(2.0))],
        )
        .node("Softmax", &["lg"], &["y"], vec![])
        .output("y");
    compare(&m, &[rand_t(&[1, 3, 11, 10], &mut s)]);
}

#[test]
fn opset11_softmax_slice_pad_split_match_tract() {
    let mut s = 9u64;
    let mut m = ModelBuilder::new(11);
    m.input("x", DType::F32, &[2, 3, 4])
        .initializer("st", &Tensor::from_i64(vec![2], vec![-1, 1]).unwrap())
        .initializer("en", &Tensor::from_i64(vec![2], vec![i64::MIN, 4]).unwrap())
        .initializer("ax", &Tensor::from_i64(vec![2], vec![2, 1]).unwrap())
        .initializer("sp", &Tensor::from_i64(vec![2], vec![-2, 1]).unwrap())
        .initializer(
            "pads",
            &Tensor::from_i64(vec![6], vec![1, 1, 1, 1, 0, 2]).unwrap(),
        )
        // (Softmax before Slice hits a tract 0.23.9 bug: it slices before the opset-11
        // flattened softmax, which changes the normalization.)
        .node("Slice", &["x", "st", "en", "ax", "sp"], &["sl"], vec![])
        .node("Softmax", &["sl"], &["sm"], vec![])
        .node(
            "Pad",
            &["sm", "pads"],
            &["pd"],
            vec![("mode", Attr::Str("edge".into()))],
        )
        .node("Split", &["pd"], &["a", "b"], vec![("axis", Attr::Int(0))])
        .node("Sub", &["a", "b"], &["y"], vec![])
        .output("y");
    compare(&m, &[rand_t(&[2, 3, 4], &mut s)]);
}

#[test]
fn transformer_block_pieces_match_tract() {
    let mut s = 11u64;
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F32, &[1, 5, 8])
        .initializer("wq", &rand_t(&[8, 8], &mut s))
        .initializer("ln_s", &rand_t(&[8], &mut s))
        .initializer("ln_b", &rand_t(&[8], &mut s))
        .initializer(
            "shape",
            &Tensor::from_i64(vec![4], vec![0, 0, 2, -1]).unwrap(),
        )
        .initializer("half", &Tensor::scalar_f32(0.5))
        .node(
            "LayerNormalization",
            &["x", "ln_s", "ln_b"],
            &["ln"],
            vec![],
        )
        .node("MatMul", &["ln", "wq"], &["q"], vec![])
        .node("Reshape", &["q", "shape"], &["qh"], vec![])
        .node(
            "Transpose",
            &["qh"],
            &["qt"],
            vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
        )
        .node(
            "Transpose",
            &["qh"],
            &["kt"],
            vec![("perm", Attr::Ints(vec![0, 2, 3, 1]))],
        )
        .node("MatMul", &["qt", "kt"], &["att"], vec![])
        .node("Mul", &["att", "half"], &["atts"], vec![])
        .node("Softmax", &["atts"], &["p"], vec![])
        .node("MatMul", &["p", "qt"], &["o"], vec![])
        .node("Erf", &["o"], &["e"], vec![])
        .node("Tanh", &["e"], &["y"], vec![])
        .output("y");
    compare(&m, &[rand_t(&[1, 5, 8], &mut s)]);
}
