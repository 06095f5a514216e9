//! The `simplify` pass: no-op removal and merging of data movement. See README.md.

use optc_egraph::query::{all_equal, const_of, ops_in, ty_of};
use optc_egraph::{rules, Build, Case, FnRule, Pass, Rule};
use optc_ir::{BinaryOp, DType, Data, Graph, Op, PadMode, SliceDim, Tensor, TensorType, UnaryOp};

const RULES: &str = include_str!("../simplify.rules");

/// The pass.
pub fn pass() -> Pass {
    let mut rules =
        rules::load_rules(RULES, "passes/simplify/simplify.rules").expect("simplify.rules parses");
    rules.extend(conditional_rules());
    Pass {
        name: "simplify",
        level: 1,
        exact: true,
        folds: false,
        rules,
        cases: cases(),
    }
}

fn conditional_rules() -> Vec<Rule> {
    vec![
        FnRule::rewrite("reshape-same", |eg, _c, n| match n.op()? {
            Op::Reshape { shape } if ty_of(eg, n.children[0])?.shape == *shape => {
                Some(Build::Class(n.children[0]))
            }
            _ => None,
        }),
        FnRule::rewrite("reshape-reshape", |eg, _c, n| match n.op()? {
            Op::Reshape { shape } => ops_in(eg, n.children[0]).find_map(|(op, ch)| match op {
                Op::Reshape { .. } => Some(Build::Node(
                    Op::Reshape {
                        shape: shape.clone(),
                    },
                    vec![Build::Class(ch[0])],
                )),
                _ => None,
            }),
            _ => None,
        }),
        FnRule::rewrite("transpose-identity", |_, _c, n| match n.op()? {
            Op::Transpose { perm } if perm.iter().enumerate().all(|(i, &p)| i == p) => {
                Some(Build::Class(n.children[0]))
            }
            _ => None,
        }),
        FnRule::rewrite("transpose-transpose", |eg, _c, n| match n.op()? {
            Op::Transpose { perm: p2 } => ops_in(eg, n.children[0]).find_map(|(op, ch)| match op {
                Op::Transpose { perm: p1 } if p1.len() == p2.len() => {
                    let q: Vec<usize> = p2.iter().map(|&j| p1[j]).collect();
                    Some(Build::Node(
                        Op::Transpose { perm: q },
                        vec![Build::Class(ch[0])],
                    ))
                }
                _ => None,
            }),
            _ => None,
        }),
        FnRule::rewrite("expand-same", |eg, _c, n| match n.op()? {
            Op::Expand { .. } => {
                Some(Build::Class(n.children[0])).filter(|_| ty_of(eg, n.children[0]).is_some())
            }
            _ => None,
        }),
        FnRule::rewrite("cast-same", |eg, _c, n| match n.op()? {
            Op::Cast { to } if ty_of(eg, n.children[0])?.dtype == *to => {
                Some(Build::Class(n.children[0]))
            }
            _ => None,
        }),
        FnRule::rewrite("concat-single", |_, _c, n| match n.op()? {
            Op::Concat { .. } if n.children.len() == 1 => Some(Build::Class(n.children[0])),
            _ => None,
        }),
        FnRule::rewrite("slice-full", |eg, _c, n| match n.op()? {
            Op::Slice { dims } => {
                let t = ty_of(eg, n.children[0])?;
                let full = dims
                    .iter()
                    .zip(&t.shape)
                    .all(|(d, &s)| d.start == 0 && d.step == 1 && d.len == s);
                full.then(|| Build::Class(n.children[0]))
            }
            _ => None,
        }),
        FnRule::rewrite("pad-zero", |_, _c, n| match n.op()? {
            Op::Pad { pads, .. } if pads.iter().all(|&p| p == 0) => {
                Some(Build::Class(n.children[0]))
            }
            _ => None,
        }),
        FnRule::rewrite("neutral-element", |eg, _c, n| {
            let op = n.op()?;
            let k = |i: usize| const_of(eg, n.children[i]);
            match op {
                Op::Binary(BinaryOp::Mul) => {
                    if k(1).is_some_and(|t| all_equal(&t, 1.0)) {
                        Some(Build::Class(n.children[0]))
                    } else if k(0).is_some_and(|t| all_equal(&t, 1.0)) {
                        Some(Build::Class(n.children[1]))
                    } else {
                        None
                    }
                }
                Op::Binary(BinaryOp::Add) => {
                    if k(1).is_some_and(|t| all_equal(&t, 0.0)) {
                        Some(Build::Class(n.children[0]))
                    } else if k(0).is_some_and(|t| all_equal(&t, 0.0)) {
                        Some(Build::Class(n.children[1]))
                    } else {
                        None
                    }
                }
                Op::Binary(BinaryOp::Sub) if k(1).is_some_and(|t| all_equal(&t, 0.0)) => {
                    Some(Build::Class(n.children[0]))
                }
                Op::Binary(BinaryOp::Div | BinaryOp::Pow)
                    if k(1).is_some_and(|t| all_equal(&t, 1.0)) =>
                {
                    Some(Build::Class(n.children[0]))
                }
                _ => None,
            }
        }),
    ]
}

// ---- soundness cases -------------------------------------------------------------

struct R(u64);
impl R {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn dim(&mut self) -> usize {
        1 + (self.next() % 5) as usize
    }
    fn shape(&mut self, rank: usize) -> Vec<usize> {
        (0..rank).map(|_| self.dim()).collect()
    }
}

fn rng(seed: u64) -> R {
    R(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
}

fn unary_graph(
    shape: &[usize],
    f: impl FnOnce(&mut Graph, optc_ir::Value) -> optc_ir::Value,
) -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(shape));
    let y = f(&mut g, x);
    g.add_output("y", y);
    g
}

fn filled(shape: &[usize], v: f32) -> Tensor {
    Tensor::new(shape.to_vec(), Data::F32(vec![v; shape.iter().product()])).expect("shape")
}

/// Soundness cases for the conditional rules.
pub fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: "reshape-same",
            make: |s| {
                let sh = rng(s).shape(3);
                unary_graph(&sh.clone(), |g, x| {
                    let r = g.add("r", Op::Reshape { shape: sh }, &[x]).unwrap();
                    g.add("e", Op::Unary(UnaryOp::Exp), &[r]).unwrap()
                })
            },
        },
        Case {
            rule: "reshape-reshape",
            make: |s| {
                let sh = rng(s).shape(3);
                let n: usize = sh.iter().product();
                unary_graph(&sh, |g, x| {
                    let a = g.add("a", Op::Reshape { shape: vec![n] }, &[x]).unwrap();
                    g.add(
                        "b",
                        Op::Reshape {
                            shape: vec![1, n, 1],
                        },
                        &[a],
                    )
                    .unwrap()
                })
            },
        },
        Case {
            rule: "transpose-identity",
            make: |s| {
                let sh = rng(s).shape(3);
                unary_graph(&sh, |g, x| {
                    g.add(
                        "t",
                        Op::Transpose {
                            perm: vec![0, 1, 2],
                        },
                        &[x],
                    )
                    .unwrap()
                })
            },
        },
        Case {
            rule: "transpose-transpose",
            make: |s| {
                let sh = rng(s).shape(4);
                unary_graph(&sh, |g, x| {
                    let a = g
                        .add(
                            "a",
                            Op::Transpose {
                                perm: vec![0, 2, 3, 1],
                            },
                            &[x],
                        )
                        .unwrap();
                    g.add(
                        "b",
                        Op::Transpose {
                            perm: vec![3, 0, 2, 1],
                        },
                        &[a],
                    )
                    .unwrap()
                })
            },
        },
        Case {
            rule: "expand-same",
            make: |s| {
                let sh = rng(s).shape(2);
                unary_graph(&sh.clone(), |g, x| {
                    g.add(
                        "e",
                        Op::Expand {
                            shape: vec![1, sh[1]],
                        },
                        &[x],
                    )
                    .unwrap()
                })
            },
        },
        Case {
            rule: "cast-same",
            make: |s| {
                let sh = rng(s).shape(2);
                unary_graph(&sh, |g, x| {
                    g.add("c", Op::Cast { to: DType::F32 }, &[x]).unwrap()
                })
            },
        },
        Case {
            rule: "concat-single",
            make: |s| {
                let sh = rng(s).shape(2);
                unary_graph(&sh, |g, x| {
                    g.add("c", Op::Concat { axis: 1 }, &[x]).unwrap()
                })
            },
        },
        Case {
            rule: "slice-full",
            make: |s| {
                let sh = rng(s).shape(2);
                let dims = sh
                    .iter()
                    .map(|&d| SliceDim {
                        start: 0,
                        step: 1,
                        len: d,
                    })
                    .collect();
                unary_graph(&sh, |g, x| g.add("s", Op::Slice { dims }, &[x]).unwrap())
            },
        },
        Case {
            rule: "pad-zero",
            make: |s| {
                let sh = rng(s).shape(2);
                unary_graph(&sh, |g, x| {
                    g.add(
                        "p",
                        Op::Pad {
                            pads: vec![0; 4],
                            mode: PadMode::Constant,
                            value: 0.0,
                        },
                        &[x],
                    )
                    .unwrap()
                })
            },
        },
        Case {
            rule: "neutral-element",
            make: |s| {
                let sh = rng(s).shape(3);
                unary_graph(&sh.clone(), |g, x| {
                    let one = g.add_const("one", filled(&[sh[2]], 1.0));
                    let zero = g.add_const("zero", filled(&[1], 0.0));
                    let a = g.add("a", Op::Binary(BinaryOp::Mul), &[x, one]).unwrap();
                    let b = g.add("b", Op::Binary(BinaryOp::Add), &[zero, a]).unwrap();
                    let c = g.add("c", Op::Binary(BinaryOp::Div), &[b, one]).unwrap();
                    g.add("d", Op::Binary(BinaryOp::Sub), &[c, zero]).unwrap()
                })
            },
        },
    ]
}
