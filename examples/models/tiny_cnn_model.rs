// The bundled example model, `examples/models/tiny_cnn.onnx`, made with optc's own builder.
// Included by `examples/make_example_model.rs` (which writes the file) and by
// `tests/example_model.rs` (which checks the committed file is exactly this model).

/// A small image classifier: conv-bn-relu, maxpool, depthwise conv + relu6, 1x1 conv,
/// global average pool, gemm, softmax. Input `image` f32[1,3,16,16], output `probs` f32[1,10].
pub fn tiny_cnn_model() -> Vec<u8> {
    use optc_ir::{DType, Tensor};
    use optc_onnx::builder::{Attr, ModelBuilder};

    // Deterministic weights from a fixed LCG so the file is reproducible.
    let mut state: u32 = 12345;
    let mut weights = |shape: &[usize], scale: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                ((state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_f32(shape.to_vec(), v).expect("shape matches")
    };
    let mut b = ModelBuilder::new(17);
    b.input("image", DType::F32, &[1, 3, 16, 16]);
    b.initializer("conv1.w", &weights(&[8, 3, 3, 3], 0.4));
    b.initializer("conv1.b", &weights(&[8], 0.1));
    b.initializer("bn.scale", &weights(&[8], 0.2));
    b.initializer("bn.bias", &weights(&[8], 0.1));
    b.initializer("bn.mean", &weights(&[8], 0.1));
    b.initializer("bn.var", &Tensor::from_f32(vec![8], vec![1.0; 8]).unwrap());
    b.initializer("dw.w", &weights(&[8, 1, 3, 3], 0.5));
    b.initializer("pw.w", &weights(&[16, 8, 1, 1], 0.4));
    b.initializer("zero", &Tensor::scalar_f32(0.0));
    b.initializer("six", &Tensor::scalar_f32(6.0));
    b.initializer("fc.w", &weights(&[10, 16], 0.5));
    b.initializer("fc.b", &weights(&[10], 0.1));
    let ints = |v: &[i64]| Attr::Ints(v.to_vec());
    b.node_named(
        "conv1",
        "Conv",
        &["image", "conv1.w", "conv1.b"],
        &["c1"],
        vec![("pads", ints(&[1, 1, 1, 1]))],
    );
    b.node_named(
        "bn1",
        "BatchNormalization",
        &["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"],
        &["n1"],
        vec![],
    );
    b.node_named("relu1", "Relu", &["n1"], &["r1"], vec![]);
    b.node_named(
        "pool1",
        "MaxPool",
        &["r1"],
        &["p1"],
        vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))],
    );
    b.node_named(
        "dw",
        "Conv",
        &["p1", "dw.w"],
        &["d1"],
        vec![("group", Attr::Int(8)), ("pads", ints(&[1, 1, 1, 1]))],
    );
    b.node_named("relu6", "Clip", &["d1", "zero", "six"], &["d2"], vec![]);
    b.node_named("pw", "Conv", &["d2", "pw.w"], &["c2"], vec![]);
    b.node_named("gap", "GlobalAveragePool", &["c2"], &["g"], vec![]);
    b.node_named("flatten", "Flatten", &["g"], &["f"], vec![]);
    b.node_named(
        "fc",
        "Gemm",
        &["f", "fc.w", "fc.b"],
        &["logits"],
        vec![("transB", Attr::Int(1))],
    );
    b.node_named(
        "softmax",
        "Softmax",
        &["logits"],
        &["probs"],
        vec![("axis", Attr::Int(-1))],
    );
    b.output("probs");
    b.to_bytes()
}
