//! Randomized shapes and attributes, compared with the interpreter.

mod common;
use common::*;
use optc_ir::{BinaryOp, DType, Op, ReduceKind, SliceDim};

fn rand_shape(rng: &mut Rng, rank: usize, max: i64) -> Vec<usize> {
    (0..rank).map(|_| rng.int(1, max + 1) as usize).collect()
}

#[test]
fn random_broadcast_binary() {
    let mut rng = Rng::new(101);
    let ops = [
        BinaryOp::Add,
        BinaryOp::Mul,
        BinaryOp::Sub,
        BinaryOp::Max,
        BinaryOp::Less,
    ];
    for it in 0..60 {
        let rank = rng.int(0, 5) as usize;
        let out = rand_shape(&mut rng, rank, 6);
        let mk = |rng: &mut Rng| -> Vec<usize> {
            let r = rng.int(0, rank as i64 + 1) as usize;
            out[rank - r..]
                .iter()
                .map(|&d| {
                    if rng.next_u64().is_multiple_of(3) {
                        1
                    } else {
                        d
                    }
                })
                .collect()
        };
        let a = mk(&mut rng);
        let b = mk(&mut rng);
        let op = ops[it % ops.len()];
        let dt = if it % 4 == 3 { DType::I32 } else { DType::F32 };
        check_op(Op::Binary(op), &[ty(dt, &a), ty(dt, &b)], ARITH, it as u64);
    }
}

#[test]
fn random_transpose_slice_concat() {
    let mut rng = Rng::new(102);
    for it in 0..40 {
        let rank = rng.int(1, 5) as usize;
        let shape = rand_shape(&mut rng, rank, 7);
        // transpose
        let mut perm: Vec<usize> = (0..rank).collect();
        for i in (1..rank).rev() {
            let j = rng.int(0, i as i64 + 1) as usize;
            perm.swap(i, j);
        }
        check_op(Op::Transpose { perm }, &[f(&shape)], EXACT, it);
        // slice
        let dims: Vec<SliceDim> = shape
            .iter()
            .map(|&n| {
                let step = if rng.next_u64().is_multiple_of(2) {
                    1
                } else {
                    -(rng.int(1, 3))
                };
                let start = rng.int(0, n as i64);
                let room = if step > 0 {
                    (n as i64 - start + step - 1) / step
                } else {
                    start / (-step) + 1
                };
                let len = rng.int(0, room + 1) as usize;
                SliceDim { start, step, len }
            })
            .collect();
        check_op(Op::Slice { dims }, &[ty(DType::I64, &shape)], EXACT, it);
        // concat
        let axis = rng.int(0, rank as i64) as usize;
        let mut other = shape.clone();
        other[axis] = rng.int(1, 5) as usize;
        check_op(
            Op::Concat { axis },
            &[f(&shape), f(&other), f(&shape)],
            EXACT,
            it,
        );
    }
}

#[test]
fn random_reduce() {
    let mut rng = Rng::new(103);
    let kinds = [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::L2,
    ];
    for it in 0..60 {
        let rank = rng.int(1, 5) as usize;
        let shape = rand_shape(&mut rng, rank, 9);
        let mut axes: Vec<usize> = (0..rank)
            .filter(|_| rng.next_u64().is_multiple_of(2))
            .collect();
        if axes.is_empty() {
            axes.push(rng.int(0, rank as i64) as usize);
        }
        let kind = kinds[it % 4];
        let keepdims = it % 3 == 0;
        check_op(
            Op::Reduce {
                kind,
                axes,
                keepdims,
            },
            &[f(&shape)],
            ARITH,
            it as u64,
        );
    }
}

#[test]
fn random_matmul() {
    let mut rng = Rng::new(104);
    for it in 0..40 {
        let (m, k, n) = (
            rng.int(1, 20) as usize,
            rng.int(1, 20) as usize,
            rng.int(1, 30) as usize,
        );
        let nb = rng.int(0, 3) as usize;
        let batch = rand_shape(&mut rng, nb, 3);
        let mut a = batch
            .iter()
            .map(|&d| {
                if rng.next_u64().is_multiple_of(3) {
                    1
                } else {
                    d
                }
            })
            .collect::<Vec<_>>();
        let mut b = batch.clone();
        if rng.next_u64().is_multiple_of(2) {
            b.drain(..rng.int(0, nb as i64 + 1) as usize);
        }
        a.extend([m, k]);
        b.extend([k, n]);
        check_op(Op::MatMul, &[f(&a), f(&b)], ARITH, it as u64);
    }
}

#[test]
fn random_conv_and_pool() {
    let mut rng = Rng::new(105);
    for it in 0..60 {
        let group = [1, 2, 1, 3, 1, 1, 2, 1][it % 8];
        let cg = rng.int(1, 4) as usize;
        let mg = [1, 3, 8, 17][rng.int(0, 4) as usize];
        let (kh, kw) = (rng.int(1, 4) as usize, rng.int(1, 4) as usize);
        let (sh, sw) = (rng.int(1, 3) as usize, rng.int(1, 3) as usize);
        let (dh, dw) = (rng.int(1, 3) as usize, rng.int(1, 3) as usize);
        let pads: Vec<usize> = (0..4).map(|_| rng.int(0, 3) as usize).collect();
        let h = (dh * (kh - 1) + 1 + rng.int(0, 6) as usize).max(1);
        let w = (dw * (kw - 1) + 1 + rng.int(0, 9) as usize).max(1);
        let window = window(&[kh, kw], &[sh, sw], &pads, &[dh, dw]);
        let x = f(&[rng.int(1, 3) as usize, cg * group, h, w]);
        let wt = f(&[mg * group, cg, kh, kw]);
        let b = f(&[mg * group]);
        let tol = Tol {
            atol: 2e-5,
            rtol: 1e-4,
        };
        if it % 4 < 2 {
            // constant weights (packed path when there are >= 8 channels per group)
            let mut g = optc_ir::Graph::new();
            let xv = g.add_input("x", x.clone());
            let wv = g.add_const("w", f32t(&mut rng, &wt.shape));
            let mut ins = vec![xv, wv];
            if it % 2 == 0 {
                ins.push(g.add_const("b", f32t(&mut rng, &b.shape)));
            }
            let y = g
                .add(
                    "conv",
                    Op::Conv {
                        window: window.clone(),
                        group,
                    },
                    &ins,
                )
                .unwrap();
            g.add_output("y", y);
            check(&g, &inputs_for(&g, it as u64), tol);
        } else {
            let ins = if it % 2 == 0 {
                vec![x.clone(), wt, b]
            } else {
                vec![x.clone(), wt]
            };
            check_op(
                Op::Conv {
                    window: window.clone(),
                    group,
                },
                &ins,
                tol,
                it as u64,
            );
        }
        // pools share the window (pads must be smaller than the kernel for ONNX, not for us)
        let mut pw = window;
        pw.ceil_mode = it % 3 == 0;
        check_op(
            Op::MaxPool { window: pw.clone() },
            std::slice::from_ref(&x),
            EXACT,
            it as u64,
        );
        check_op(
            Op::AveragePool {
                window: pw,
                count_include_pad: it % 2 == 0,
            },
            &[x],
            ARITH,
            it as u64,
        );
    }
}

#[test]
fn matmul_constant_b_packed() {
    let mut rng = Rng::new(106);
    for (it, &(m, k, n)) in [
        (1, 1, 1),
        (7, 5, 3),
        (13, 9, 21),
        (6, 2000, 75),
        (3, 4100, 17),
        (20, 33, 64),
    ]
    .iter()
    .enumerate()
    {
        for lead in [vec![], vec![2]] {
            let mut a = lead.clone();
            a.extend([m, k]);
            let mut g = optc_ir::Graph::new();
            let x = g.add_input("x", f(&a));
            let w = g.add_const("w", f32t(&mut rng, &[k, n]));
            let y = g.add("mm", Op::MatMul, &[x, w]).unwrap();
            g.add_output("y", y);
            check(
                &g,
                &inputs_for(&g, it as u64),
                Tol {
                    atol: 1e-4,
                    rtol: 1e-4,
                },
            );
        }
    }
}
