//! The `fold` pass: constant folding through the reference interpreter. See README.md.

use optc_egraph::{Case, Pass};
use optc_ir::{BinaryOp, Graph, Op, Tensor, TensorType, UnaryOp};

/// The pass. It has no rewrite rules: enabling it turns on folding in the analysis.
pub fn pass() -> Pass {
    Pass {
        name: "fold",
        level: 1,
        exact: true,
        folds: true,
        rules: vec![],
        cases: vec![Case {
            rule: "fold",
            make: case,
        }],
    }
}

/// A graph with a foldable constant subexpression feeding a runtime op.
pub fn case(seed: u64) -> Graph {
    let n = 1 + (seed % 7) as usize;
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[2, n]));
    let a = g.add_const(
        "a",
        Tensor::from_f32(vec![n], (0..n).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap(),
    );
    let b = g.add_const(
        "b",
        Tensor::from_f32(vec![1], vec![0.25 + seed as f32 * 0.01]).unwrap(),
    );
    let e = g.add("e", Op::Unary(UnaryOp::Exp), &[a]).unwrap();
    let m = g.add("m", Op::Binary(BinaryOp::Mul), &[e, b]).unwrap();
    let y = g.add("y", Op::Binary(BinaryOp::Add), &[x, m]).unwrap();
    g.add_output("y", y);
    g
}
