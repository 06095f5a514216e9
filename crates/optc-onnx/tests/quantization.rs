//! Importing ONNX quantization ops: what they become in the IR, and the opset differences
//! and unsupported forms refused with an error naming the node. (Their results against
//! onnxruntime are checked in `tests/quantized_onnx.rs` at the workspace root.)

use optc_ir::{DType, Data, Op, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use optc_onnx::{import_bytes, ImportOptions};
use tract_onnx::pb;

fn import(m: &ModelBuilder) -> Result<optc_ir::Graph, String> {
    import_bytes(&m.to_bytes(), &ImportOptions::default()).map_err(|e| e.to_string())
}

fn ops(g: &optc_ir::Graph) -> Vec<&str> {
    let mut v: Vec<&str> =
        g.g.node_weights()
            .map(|n| n.op.name())
            .filter(|n| *n != "input" && *n != "const")
            .collect();
    v.sort();
    v
}

fn t(shape: &[usize], d: Data) -> Tensor {
    Tensor::new(shape.to_vec(), d).unwrap()
}

fn quantize(opset: i64, scale: Tensor, attrs: Vec<(&str, Attr)>) -> ModelBuilder {
    let mut m = ModelBuilder::new(opset);
    m.input("x", DType::F32, &[2, 3])
        .initializer("s", &scale)
        .node_named("q", "QuantizeLinear", &["x", "s"], &["y"], attrs)
        .output("y");
    m
}

#[test]
fn quantize_linear_per_tensor_and_per_axis() {
    let g = import(&quantize(13, Tensor::scalar_f32(0.5), vec![])).unwrap();
    let q = g.g.node_weights().find(|n| n.name == "q").unwrap();
    assert_eq!(q.op, Op::QuantizeLinear { axis: 0 });
    assert_eq!(q.outputs[0].dtype, DType::U8);
    let s = t(&[3], Data::F32(vec![1.0, 2.0, 3.0]));
    let g = import(&quantize(13, s.clone(), vec![("axis", Attr::Int(-1))])).unwrap();
    let q = g.g.node_weights().find(|n| n.name == "q").unwrap();
    assert_eq!(q.op, Op::QuantizeLinear { axis: 1 });
    // Per-axis parameters came with opset 13.
    let e = import(&quantize(10, s.clone(), vec![])).unwrap_err();
    assert!(
        e.contains("node 'q' (QuantizeLinear)") && e.contains("need opset 13"),
        "{e}"
    );
    // A per-axis scale along the wrong axis.
    let e = import(&quantize(13, s, vec![("axis", Attr::Int(0))])).unwrap_err();
    assert!(e.contains("one per index of axis 0"), "{e}");
    // Opset 21's blocked quantization and output types other than u8/i8.
    let e = import(&quantize(
        21,
        Tensor::scalar_f32(1.0),
        vec![("block_size", Attr::Int(2))],
    ))
    .unwrap_err();
    assert!(
        e.contains("block_size = 2") && e.contains("not supported"),
        "{e}"
    );
    let e = import(&quantize(
        21,
        Tensor::scalar_f32(1.0),
        vec![(
            "output_dtype",
            Attr::Int(pb::tensor_proto::DataType::Uint16 as i64),
        )],
    ))
    .unwrap_err();
    assert!(e.contains("output_dtype UINT16"), "{e}");
    let g = import(&quantize(
        21,
        Tensor::scalar_f32(1.0),
        vec![(
            "output_dtype",
            Attr::Int(pb::tensor_proto::DataType::Int8 as i64),
        )],
    ))
    .unwrap();
    assert_eq!(g.output_types()[0].dtype, DType::I8);
}

#[test]
fn dequantize_linear_of_weights_is_not_folded() {
    // A constant DequantizeLinear stays: int8 weights stay int8 until the optimizer decides
    // (and passes/quantize can see them).
    let w = t(&[4, 3], Data::I8((0..12).map(|i| i - 6).collect()));
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 4])
        .initializer("w", &w)
        .initializer("s", &Tensor::scalar_f32(0.1))
        .node("DequantizeLinear", &["w", "s"], &["wf"], vec![])
        .node("MatMul", &["x", "wf"], &["y"], vec![])
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(ops(&g), ["dequantize_linear", "matmul"]);
    // Types it does not take.
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2])
        .initializer("s", &Tensor::scalar_f32(0.1))
        .node_named("dq", "DequantizeLinear", &["x", "s"], &["y"], vec![])
        .output("y");
    let e = import(&m).unwrap_err();
    assert!(
        e.contains("node 'dq' (DequantizeLinear)") && e.contains("u8, i8 or i32"),
        "{e}"
    );
}

#[test]
fn unsupported_element_types_are_named() {
    // A float8 zero point (opset 19): its initializer is refused, by name and type.
    let mut m = ModelBuilder::new(19);
    let z = pb::TensorProto {
        name: "z".into(),
        data_type: pb::tensor_proto::DataType::Float8e4m3fn as i32,
        raw_data: vec![0],
        ..Default::default()
    };
    m.input("x", DType::F32, &[2])
        .initializer("s", &Tensor::scalar_f32(0.1))
        .initializer_proto(z)
        .node("QuantizeLinear", &["x", "s", "z"], &["y"], vec![])
        .output("y");
    let e = import(&m).unwrap_err();
    assert!(e.contains("'z'") && e.contains("FLOAT8E4M3FN"), "{e}");
}

#[test]
fn qlinear_ops_are_decomposed_exactly() {
    let mut m = ModelBuilder::new(10);
    m.input("a", DType::U8, &[2, 4])
        .initializer("sa", &Tensor::scalar_f32(0.1))
        .initializer("za", &t(&[], Data::U8(vec![3])))
        .initializer("b", &t(&[4, 3], Data::I8(vec![1; 12])))
        .initializer("sb", &Tensor::scalar_f32(0.2))
        .initializer("zb", &t(&[], Data::I8(vec![0])))
        .initializer("sy", &Tensor::scalar_f32(0.3))
        .initializer("zy", &t(&[], Data::U8(vec![7])))
        .node(
            "QLinearMatMul",
            &["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
            &["y"],
            vec![],
        )
        .output("y");
    let g = import(&m).unwrap();
    assert_eq!(
        ops(&g),
        ["cast", "matmul_integer", "mul", "quantize_linear"]
    );
    assert_eq!(g.output_types()[0].dtype, DType::U8);
    // (a - 3) summed over 4 columns of ones, * (0.1 * 0.2 / 0.3), rounded, + 7
    let a = t(&[2, 4], Data::U8(vec![3, 4, 5, 6, 13, 13, 13, 13]));
    let y = optc_ir::interp::run(&g, &[a]).unwrap();
    let mult = 0.1f32 * 0.2 / 0.3;
    let want = |acc: i32| ((acc as f32 * mult).round_ties_even() + 7.0) as u8;
    assert_eq!(
        y[0].data(),
        &Data::U8(vec![
            want(6),
            want(6),
            want(6),
            want(40),
            want(40),
            want(40)
        ])
    );
    // QLinearConv: a bias of another type is refused.
    let mut m = ModelBuilder::new(10);
    m.input("x", DType::U8, &[1, 1, 3, 3])
        .initializer("s", &Tensor::scalar_f32(0.1))
        .initializer("z", &t(&[], Data::U8(vec![0])))
        .initializer("w", &t(&[2, 1, 1, 1], Data::U8(vec![1, 2])))
        .initializer("b", &Tensor::from_f32(vec![2], vec![0.0, 1.0]).unwrap())
        .node_named(
            "qc",
            "QLinearConv",
            &["x", "s", "z", "w", "s", "z", "s", "z", "b"],
            &["y"],
            vec![],
        )
        .output("y");
    let e = import(&m).unwrap_err();
    assert!(
        e.contains("node 'qc' (QLinearConv)") && e.contains("bias must be i32[2]"),
        "{e}"
    );
}
