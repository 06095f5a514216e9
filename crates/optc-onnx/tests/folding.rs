//! Constant folding during import.

mod common;

use common::{import, ops, run_tract};
use optc_ir::{DType, Graph, Op, Tensor, UnaryOp};
use optc_onnx::builder::{Attr, ModelBuilder};

/// The constant second operand of the graph's binary op (the folded part of the model).
fn folded_operand(g: &Graph) -> Tensor {
    let op =
        g.g.node_indices()
            .find(|&n| matches!(g.node(n).op, Op::Binary(_)))
            .expect("a binary op");
    let c = g
        .const_value(g.node_inputs(op)[1])
        .expect("folded constant");
    Tensor::clone(c)
}

#[test]
fn shape_chain_folds_to_a_single_reshape() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3, 4])
        .initializer("zero", &Tensor::scalar_i64(0))
        .initializer("ax0", &Tensor::from_i64(vec![1], vec![0]).unwrap())
        .initializer("minus1", &Tensor::from_i64(vec![1], vec![-1]).unwrap())
        .node("Shape", &["x"], &["s"], vec![])
        .node(
            "Gather",
            &["s", "zero"],
            &["d0"],
            vec![("axis", Attr::Int(0))],
        )
        .node("Unsqueeze", &["d0", "ax0"], &["d0u"], vec![])
        .node(
            "Concat",
            &["d0u", "minus1"],
            &["shp"],
            vec![("axis", Attr::Int(0))],
        )
        .node("Reshape", &["x", "shp"], &["y"], vec![])
        .output("y");
    let g = import(&m);
    assert_eq!(ops(&g), vec![Op::Reshape { shape: vec![2, 12] }]);
    // Only the input and the reshape remain.
    assert_eq!(g.g.node_count(), 2);
    let theirs = run_tract(&m.to_bytes(), &[Tensor::zeros(DType::F32, vec![2, 3, 4])]);
    assert_eq!(g.output_types()[0].shape, theirs[0].shape());
}

#[test]
fn size_constant_of_shape_range_and_small_arith_fold() {
    // y = x + Cast(ConstantOfShape(Shape(x), value=2)) * Range(0, 4, 1) (as float)
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3, 4])
        .initializer("st", &Tensor::scalar_i64(0))
        .initializer("li", &Tensor::scalar_i64(4))
        .initializer("de", &Tensor::scalar_i64(1))
        .node("Shape", &["x"], &["s"], vec![])
        .node(
            "ConstantOfShape",
            &["s"],
            &["c"],
            vec![(
                "value",
                Attr::Tensor(Tensor::from_i64(vec![1], vec![2]).unwrap()),
            )],
        )
        .node("Range", &["st", "li", "de"], &["r"], vec![])
        .node("Mul", &["c", "r"], &["cr"], vec![])
        .node("Size", &["x"], &["n"], vec![])
        .node("Add", &["cr", "n"], &["crn"], vec![])
        .node("Cast", &["crn"], &["crf"], vec![("to", Attr::Int(1))])
        .node("Add", &["x", "crf"], &["y"], vec![])
        .output("y");
    let g = import(&m);
    let o = ops(&g);
    assert_eq!(o.len(), 1, "{o:?}");
    assert!(matches!(o[0], Op::Binary(optc_ir::BinaryOp::Add)));
    // The folded constant equals what tract computes for x = 0.
    let want = run_tract(&m.to_bytes(), &[Tensor::zeros(DType::F32, vec![3, 4])]);
    let c = folded_operand(&g);
    assert_eq!(c.as_f32().unwrap(), want[0].as_f32().unwrap());
}

#[test]
fn constant_only_model_output_is_identity_of_constant() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2])
        .initializer("a", &Tensor::from_f32(vec![2], vec![1.0, 2.0]).unwrap())
        .node("Exp", &["a"], &["e"], vec![])
        .node("Add", &["x", "e"], &["y"], vec![])
        .node("Neg", &["a"], &["z"], vec![])
        .output("y")
        .output("z");
    let g = import(&m);
    let o = ops(&g);
    assert_eq!(
        o,
        vec![
            Op::Binary(optc_ir::BinaryOp::Add),
            Op::Unary(UnaryOp::Identity)
        ]
    );
    let theirs = run_tract(&m.to_bytes(), &[Tensor::zeros(DType::F32, vec![2])]);
    let y = theirs[0].as_f32().unwrap();
    let e = folded_operand(&g);
    for (a, b) in e.as_f32().unwrap().iter().zip(y) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn big_constant_math_is_not_folded() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[100, 100])
        .initializer("w", &Tensor::zeros(DType::F32, vec![100, 100]))
        .node("Relu", &["w"], &["rw"], vec![])
        .node("Add", &["x", "rw"], &["y"], vec![])
        .output("y");
    let g = import(&m);
    assert_eq!(ops(&g).len(), 2);
}
