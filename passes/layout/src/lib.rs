//! The `layout` pass: transpose sinking and cancellation. See README.md.

use optc_egraph::egg::Id;
use optc_egraph::query::const_of;
use optc_egraph::{Build, Case, FnRule, OptEGraph, Pass, Rule};
use optc_ir::{BinaryOp, Data, Graph, Op, Tensor, TensorType, UnaryOp};

/// The pass.
pub fn pass() -> Pass {
    Pass {
        name: "layout",
        level: 2,
        exact: true,
        folds: false,
        rules: rules(),
        cases: cases(),
    }
}

/// `(perm, x)` for each transpose node in class `c`.
fn transposes(eg: &OptEGraph, c: Id) -> Vec<(Vec<usize>, Id)> {
    eg[c]
        .nodes
        .iter()
        .filter_map(|n| match n.op()? {
            Op::Transpose { perm } => Some((perm.clone(), n.children[0])),
            _ => None,
        })
        .collect()
}

fn inverse(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// Transpose a constant by `perm` at compile time.
fn transpose_const(t: &Tensor, perm: &[usize]) -> Option<Tensor> {
    optc_ir::interp::eval_op(
        &Op::Transpose {
            perm: perm.to_vec(),
        },
        &[t],
    )
    .ok()?
    .pop()
}

fn rules() -> Vec<Rule> {
    vec![
        FnRule::rewrite("transpose-unary", |eg, _c, n| {
            let Op::Unary(u) = n.op()? else { return None };
            let (perm, x) = transposes(eg, n.children[0]).into_iter().next()?;
            let inner = Build::Node(Op::Unary(u.clone()), vec![Build::Class(x)]);
            Some(Build::Node(Op::Transpose { perm }, vec![inner]))
        }),
        FnRule::rewrite("transpose-unary-rev", |eg, _c, n| {
            let Op::Transpose { perm } = n.op()? else {
                return None;
            };
            eg[n.children[0]].nodes.iter().find_map(|m| match m.op()? {
                Op::Unary(u) => {
                    let t = Build::Node(
                        Op::Transpose { perm: perm.clone() },
                        vec![Build::Class(m.children[0])],
                    );
                    Some(Build::Node(Op::Unary(u.clone()), vec![t]))
                }
                _ => None,
            })
        }),
        FnRule::rewrite("transpose-binary", |eg, _c, n| {
            let Op::Binary(b) = n.op()? else {
                return None;
            };
            let ta = transposes(eg, n.children[0]);
            let tb = transposes(eg, n.children[1]);
            ta.iter().find_map(|(pa, xa)| {
                tb.iter().find_map(|(pb, xb)| {
                    (pa == pb).then(|| {
                        let inner =
                            Build::Node(Op::Binary(*b), vec![Build::Class(*xa), Build::Class(*xb)]);
                        Build::Node(Op::Transpose { perm: pa.clone() }, vec![inner])
                    })
                })
            })
        }),
        FnRule::rewrite("transpose-binary-const", |eg, _c, n| {
            let Op::Binary(b) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let c = const_of(eg, n.children[1 - side])?;
                let (perm, x) = transposes(eg, n.children[side]).into_iter().next()?;
                if c.shape().len() != perm.len() {
                    return None;
                }
                let ct = Build::Const(transpose_const(&c, &inverse(&perm))?);
                let args = if side == 0 {
                    vec![Build::Class(x), ct]
                } else {
                    vec![ct, Build::Class(x)]
                };
                Some(Build::Node(
                    Op::Transpose { perm },
                    vec![Build::Node(Op::Binary(*b), args)],
                ))
            })
        }),
    ]
}

// ---- soundness cases -------------------------------------------------------------

fn shape(seed: u64) -> Vec<usize> {
    vec![
        1 + (seed % 3) as usize,
        2 + (seed % 2) as usize,
        3 + (seed % 4) as usize,
    ]
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: "transpose-unary",
            make: |s| {
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&shape(s)));
                let t = g
                    .add(
                        "t",
                        Op::Transpose {
                            perm: vec![2, 0, 1],
                        },
                        &[x],
                    )
                    .unwrap();
                let y = g.add("u", Op::Unary(UnaryOp::Tanh), &[t]).unwrap();
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "transpose-unary-rev",
            make: |s| {
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&shape(s)));
                let u = g.add("u", Op::Unary(UnaryOp::Sigmoid), &[x]).unwrap();
                let y = g
                    .add(
                        "t",
                        Op::Transpose {
                            perm: vec![1, 2, 0],
                        },
                        &[u],
                    )
                    .unwrap();
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "transpose-binary",
            make: |s| {
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&shape(s)));
                let z = g.add_input("z", TensorType::f32(&shape(s)));
                let a = g
                    .add(
                        "a",
                        Op::Transpose {
                            perm: vec![0, 2, 1],
                        },
                        &[x],
                    )
                    .unwrap();
                let b = g
                    .add(
                        "b",
                        Op::Transpose {
                            perm: vec![0, 2, 1],
                        },
                        &[z],
                    )
                    .unwrap();
                let y = g.add("m", Op::Binary(BinaryOp::Sub), &[a, b]).unwrap();
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "transpose-binary-const",
            make: |s| {
                let sh = shape(s);
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&sh));
                let t = g
                    .add(
                        "t",
                        Op::Transpose {
                            perm: vec![2, 0, 1],
                        },
                        &[x],
                    )
                    .unwrap();
                let csh = vec![sh[2], 1, sh[1]];
                let n: usize = csh.iter().product();
                let c = Tensor::new(
                    csh,
                    Data::F32((0..n).map(|i| i as f32 * 0.25 - 1.0).collect()),
                )
                .unwrap();
                let c = g.add_const("c", c);
                let y = g.add("d", Op::Binary(BinaryOp::Div), &[c, t]).unwrap();
                g.add_output("y", y);
                g
            },
        },
    ]
}
