//! Seed models for the importer targets, built in code so the fixed-seed tests need no
//! files: a small CNN, an MLP, attention-like matmuls, recurrent layers, control flow, and
//! the shape-computing ops (`Shape`, `Reshape` from a tensor, `ConstantOfShape`, `Range`,
//! `Slice` with inputs) where importers most often trust numbers they should not.
//! The cargo-fuzz corpus adds the shared corpus and the ONNX node-suite models
//! (`fuzz/README.md`).

use optc_ir::{DType, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

fn f32s(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / (1 << 24) as f32
                - 0.5
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).expect("length matches")
}

fn i64s(v: &[i64]) -> Tensor {
    Tensor::new(vec![v.len()], optc_ir::Data::I64(v.to_vec())).expect("length matches")
}

fn ints(v: &[i64]) -> Attr {
    Attr::Ints(v.to_vec())
}

/// Every seed model, as ONNX bytes, with a name.
pub fn models() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![];
    let mut add = |name: &'static str, m: &ModelBuilder| out.push((name, m.to_bytes()));

    let mut cnn = ModelBuilder::new(13);
    cnn.input("x", DType::F32, &[1, 3, 8, 8])
        .initializer("w", &f32s(&[4, 3, 3, 3], 1))
        .initializer("b", &f32s(&[4], 2))
        .initializer("fc", &f32s(&[16, 5], 3))
        .node(
            "Conv",
            &["x", "w", "b"],
            &["c"],
            vec![("pads", ints(&[1, 1, 1, 1])), ("strides", ints(&[2, 2]))],
        )
        .node("Relu", &["c"], &["r"], vec![])
        .node(
            "MaxPool",
            &["r"],
            &["p"],
            vec![("kernel_shape", ints(&[2, 2])), ("strides", ints(&[2, 2]))],
        )
        .node("Flatten", &["p"], &["f"], vec![])
        .node("MatMul", &["f", "fc"], &["y"], vec![])
        .node("Softmax", &["y"], &["out"], vec![("axis", Attr::Int(-1))])
        .output("out");
    add("cnn", &cnn);

    let mut mlp = ModelBuilder::new(17);
    mlp.input("x", DType::F32, &[-1, 6])
        .initializer("w1", &f32s(&[6, 8], 4))
        .initializer("b1", &f32s(&[8], 5))
        .initializer("scale", &f32s(&[8], 6))
        .node(
            "Gemm",
            &["x", "w1", "b1"],
            &["h"],
            vec![("alpha", Attr::Float(0.5))],
        )
        .node(
            "LayerNormalization",
            &["h", "scale"],
            &["n"],
            vec![("axis", Attr::Int(-1))],
        )
        .node("Gelu", &["n"], &["g"], vec![])
        .node(
            "ReduceMean",
            &["g"],
            &["out"],
            vec![("keepdims", Attr::Int(0))],
        )
        .output("out");
    add("mlp_dynamic_batch", &mlp);

    let mut attn = ModelBuilder::new(13);
    attn.input("q", DType::F32, &[1, 2, 4, 8])
        .input("k", DType::F32, &[1, 2, 4, 8])
        .initializer("perm_shape", &i64s(&[1, 2, 32]))
        .node(
            "Transpose",
            &["k"],
            &["kt"],
            vec![("perm", ints(&[0, 1, 3, 2]))],
        )
        .node("MatMul", &["q", "kt"], &["s"], vec![])
        .node("Softmax", &["s"], &["a"], vec![("axis", Attr::Int(3))])
        .node("MatMul", &["a", "q"], &["o"], vec![])
        .node("Reshape", &["o", "perm_shape"], &["out"], vec![])
        .output("out");
    add("attention", &attn);

    let mut shapes = ModelBuilder::new(13);
    shapes
        .input("x", DType::F32, &[2, -1, 3])
        .initializer("starts", &i64s(&[0, 1]))
        .initializer("ends", &i64s(&[2, 1 << 40]))
        .initializer("axes", &i64s(&[0, 2]))
        .initializer(
            "limit",
            &Tensor::new(vec![], optc_ir::Data::I64(vec![5])).expect("scalar"),
        )
        .initializer(
            "zero",
            &Tensor::new(vec![], optc_ir::Data::I64(vec![0])).expect("scalar"),
        )
        .initializer(
            "one",
            &Tensor::new(vec![], optc_ir::Data::I64(vec![1])).expect("scalar"),
        )
        .node("Shape", &["x"], &["s"], vec![])
        .node("ConstantOfShape", &["s"], &["z"], vec![])
        .node("Add", &["x", "z"], &["xz"], vec![])
        .node("Slice", &["xz", "starts", "ends", "axes"], &["sl"], vec![])
        .node("Range", &["zero", "limit", "one"], &["r"], vec![])
        .node("Cast", &["r"], &["rf"], vec![("to", Attr::Int(1))])
        .node("Unsqueeze", &["rf", "zero"], &["ru"], vec![])
        .node("Concat", &["sl"], &["c"], vec![("axis", Attr::Int(1))])
        .node("Pad", &["c", "starts"], &["out"], vec![])
        .output("out")
        .output("ru");
    add("shape_ops", &shapes);

    let mut lstm = ModelBuilder::new(14);
    lstm.input("x", DType::F32, &[5, 1, 3])
        .initializer("w", &f32s(&[1, 16, 3], 7))
        .initializer("r", &f32s(&[1, 16, 4], 8))
        .initializer("b", &f32s(&[1, 32], 9))
        .node(
            "LSTM",
            &["x", "w", "r", "b"],
            &["y", "h"],
            vec![("hidden_size", Attr::Int(4))],
        )
        .node(
            "GRU",
            &["x", "wg", "rg"],
            &["yg"],
            vec![("hidden_size", Attr::Int(2))],
        )
        .initializer("wg", &f32s(&[1, 6, 3], 10))
        .initializer("rg", &f32s(&[1, 6, 2], 11))
        .output("y")
        .output("h")
        .output("yg");
    add("recurrent", &lstm);

    let mut then_b = ModelBuilder::new(13);
    then_b
        .node("Relu", &["x"], &["t"], vec![])
        .output_typed("t", DType::F32, &[4]);
    let mut else_b = ModelBuilder::new(13);
    else_b
        .node("Neg", &["x"], &["e"], vec![])
        .output_typed("e", DType::F32, &[4]);
    let mut body = ModelBuilder::new(13);
    body.input("i", DType::I64, &[])
        .input("cond", DType::Bool, &[])
        .input("acc", DType::F32, &[4])
        .node("Add", &["acc", "x"], &["acc2"], vec![])
        .node("Identity", &["cond"], &["cond2"], vec![])
        .output_typed("cond2", DType::Bool, &[])
        .output_typed("acc2", DType::F32, &[4])
        .output_typed("acc2", DType::F32, &[4]);
    let mut flow = ModelBuilder::new(13);
    flow.input("x", DType::F32, &[4])
        .input("c", DType::Bool, &[])
        .initializer(
            "trip",
            &Tensor::new(vec![], optc_ir::Data::I64(vec![3])).expect("scalar"),
        )
        .initializer(
            "go",
            &Tensor::new(vec![], optc_ir::Data::Bool(vec![true])).expect("scalar"),
        )
        .node(
            "If",
            &["c"],
            &["y"],
            vec![
                ("then_branch", Attr::Graph(Box::new(then_b))),
                ("else_branch", Attr::Graph(Box::new(else_b))),
            ],
        )
        .node(
            "Loop",
            &["trip", "go", "y"],
            &["acc", "scan"],
            vec![("body", Attr::Graph(Box::new(body)))],
        )
        .output("acc")
        .output("scan");
    add("control_flow", &flow);

    let mut resize = ModelBuilder::new(13);
    resize
        .input("x", DType::F32, &[1, 2, 3, 3])
        .initializer("roi", &f32s(&[0], 0))
        .initializer(
            "scales",
            &Tensor::from_f32(vec![4], vec![1.0, 1.0, 2.0, 1.5]).expect("4 scales"),
        )
        .initializer("w", &f32s(&[2, 1, 2, 2], 12))
        .node(
            "Resize",
            &["x", "roi", "scales"],
            &["r"],
            vec![("mode", Attr::Str("linear".into()))],
        )
        .node(
            "ConvTranspose",
            &["r", "w"],
            &["ct"],
            vec![("group", Attr::Int(2)), ("strides", ints(&[2, 2]))],
        )
        .node(
            "Einsum",
            &["ct", "ct"],
            &["out"],
            vec![("equation", Attr::Str("nchw,nchw->nc".into()))],
        )
        .output("out");
    add("resize_convtranspose_einsum", &resize);

    let mut index = ModelBuilder::new(13);
    index
        .input("x", DType::F32, &[3, 4])
        .initializer("idx", &i64s(&[2, -1, 0]))
        .initializer("k", &i64s(&[2]))
        .node(
            "Gather",
            &["x", "idx"],
            &["g"],
            vec![("axis", Attr::Int(1))],
        )
        .node("TopK", &["g", "k"], &["v", "i"], vec![])
        .node(
            "GatherElements",
            &["x", "i"],
            &["ge"],
            vec![("axis", Attr::Int(1))],
        )
        .node("ArgMax", &["ge"], &["am"], vec![])
        .initializer(
            "axis",
            &Tensor::new(vec![], optc_ir::Data::I64(vec![1])).expect("scalar"),
        )
        .node("CumSum", &["v", "axis"], &["cs"], vec![])
        .output("am")
        .output("cs");
    add("indexing", &index);

    let mut quant = ModelBuilder::new(13);
    quant
        .input("x", DType::F32, &[2, 4])
        .initializer("s", &Tensor::from_f32(vec![], vec![0.05]).expect("scalar"))
        .initializer(
            "z",
            &Tensor::new(vec![], optc_ir::Data::U8(vec![128])).expect("scalar"),
        )
        .node("QuantizeLinear", &["x", "s", "z"], &["q"], vec![])
        .node("DequantizeLinear", &["q", "s", "z"], &["dq"], vec![])
        .node("DynamicQuantizeLinear", &["dq"], &["y", "ys", "yz"], vec![])
        .output("y")
        .output("ys");
    add("quantization", &quant);

    out
}
