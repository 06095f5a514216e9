//! The builder's models load and run in tract (an independent ONNX implementation).

mod common;

use common::run_tract;
use optc_ir::{DType, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

#[test]
fn builder_model_runs_in_tract_raw_and_typed_initializers() {
    let w = Tensor::from_f32(vec![2, 3], vec![1., 2., 3., 4., 5., 6.]).unwrap();
    let b = Tensor::from_f32(vec![3], vec![0.5, -0.5, 1.0]).unwrap();
    for typed in [false, true] {
        let mut m = ModelBuilder::new(17);
        m.input("x", DType::F32, &[1, 2]);
        if typed {
            m.initializer_typed_fields("w", &w)
                .initializer_typed_fields("b", &b);
        } else {
            m.initializer("w", &w).initializer("b", &b);
        }
        m.node("MatMul", &["x", "w"], &["mm"], vec![])
            .node("Add", &["mm", "b"], &["s"], vec![])
            .node(
                "LeakyRelu",
                &["s"],
                &["y"],
                vec![("alpha", Attr::Float(0.1))],
            )
            .output("y");
        let x = Tensor::from_f32(vec![1, 2], vec![1.0, -2.0]).unwrap();
        let got = run_tract(&m.to_bytes(), &[x]);
        // Independent arithmetic: x @ w + b, then leaky relu.
        let pre = [1. - 8. + 0.5, 2. - 10. - 0.5, 3. - 12. + 1.0];
        let want: Vec<f32> = pre
            .iter()
            .map(|&v: &f32| if v < 0. { 0.1 * v } else { v })
            .collect();
        assert_eq!(got[0].as_f32().unwrap(), want, "typed={typed}");
    }
}

#[test]
fn builder_dynamic_dim_and_int_attrs() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[-1, 4])
        .node(
            "Transpose",
            &["x"],
            &["t"],
            vec![("perm", Attr::Ints(vec![1, 0]))],
        )
        .node("Softmax", &["t"], &["y"], vec![("axis", Attr::Int(0))])
        .output("y");
    let x = Tensor::zeros(DType::F32, vec![2, 4]);
    let theirs = run_tract(&m.to_bytes(), &[x]);
    let got = theirs[0].as_f32().unwrap();
    assert_eq!(got.len(), 8);
    for v in got {
        assert!((v - 0.25).abs() < 1e-6, "{v}"); // softmax over 4 equal values
    }
}
