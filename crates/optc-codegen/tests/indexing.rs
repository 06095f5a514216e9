//! The indexing and ordering ops (ReduceMin/ReduceProd, ArgMax/ArgMin, CumSum, TopK, the
//! element and ND gathers and scatters), lowered and compared with the reference
//! interpreter on random inputs for each attribute combination; bad indices at run time.

mod common;
use common::*;
use optc_ir::{DType, Data, Graph, Op, ReduceKind, ScatterReduction, Tensor, TensorType};

const NUMERIC: [DType; 5] = [DType::F32, DType::I64, DType::I32, DType::U8, DType::I8];

/// Indices of `shape` in `-n..n` (every one valid), as `dt` (i64 or i32).
fn indices(rng: &mut Rng, dt: DType, shape: &[usize], n: &dyn Fn(usize) -> usize) -> Tensor {
    let q = shape.last().copied().unwrap_or(1).max(1);
    let count: usize = shape.iter().product();
    let v: Vec<i64> = (0..count)
        .map(|p| {
            let n = n(p % q) as i64;
            rng.int(-n, n)
        })
        .collect();
    let data = match dt {
        DType::I64 => Data::I64(v),
        _ => Data::I32(v.iter().map(|&k| k as i32).collect()),
    };
    Tensor::new(shape.to_vec(), data).unwrap()
}

/// A one-node graph on inputs of `types`; `given` replaces the random input of that port.
fn run_case(op: Op, types: &[TensorType], given: &[(usize, Tensor)], seed: u64, tol: Tol) {
    let mut g = Graph::new();
    let vs: Vec<_> = types
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_input(&format!("x{i}"), t.clone()))
        .collect();
    let outs = g
        .add_node("n", op.clone(), &vs)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    for (i, o) in outs.iter().enumerate() {
        g.add_output(&format!("y{i}"), *o);
    }
    let mut ins = inputs_for(&g, seed);
    for (k, t) in given {
        ins[*k] = t.clone();
    }
    check(&g, &ins, tol);
}

#[test]
fn reduce_min_and_prod() {
    for dt in NUMERIC {
        for kind in [ReduceKind::Min, ReduceKind::Prod, ReduceKind::Max] {
            for (shape, axes) in [
                (vec![3, 4, 5], vec![0]),
                (vec![3, 4, 5], vec![1, 2]),
                (vec![2, 13], vec![1]),
                (vec![2, 3, 4], vec![0, 1, 2]),
                (vec![6], vec![0]),
            ] {
                for keepdims in [false, true] {
                    let op = Op::Reduce {
                        kind,
                        axes: axes.clone(),
                        keepdims,
                    };
                    // Products of f32 round at each step in codegen, once in the interpreter.
                    check_op(op, &[ty(dt, &shape)], ARITH, 7);
                }
            }
        }
    }
    for kind in [ReduceKind::Min, ReduceKind::Max] {
        let op = Op::Reduce {
            kind,
            axes: vec![1],
            keepdims: false,
        };
        check_op(op, &[ty(DType::Bool, &[4, 5, 2])], EXACT, 3);
    }
    // Empty axes: +inf for min, 1 for the product.
    for kind in [ReduceKind::Min, ReduceKind::Prod] {
        let op = Op::Reduce {
            kind,
            axes: vec![1],
            keepdims: true,
        };
        check_op(op, &[f(&[3, 0, 2])], EXACT, 3);
    }
}

#[test]
fn reduce_min_ignores_nan_like_max() {
    let x = Tensor::from_f32(
        vec![3, 4],
        vec![
            f32::NAN,
            1.0,
            -2.0,
            3.0,
            f32::NAN,
            f32::NAN,
            f32::NAN,
            f32::NAN,
            5.0,
            f32::NAN,
            0.5,
            -7.0,
        ],
    )
    .unwrap();
    for kind in [ReduceKind::Min, ReduceKind::Max, ReduceKind::Prod] {
        let op = Op::Reduce {
            kind,
            axes: vec![1],
            keepdims: false,
        };
        run_case(op, &[x.ty()], &[(0, x.clone())], 1, EXACT);
    }
}

/// Small integers as f32: many ties, and NaN in some rows.
fn ties_and_nan(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| match rng.int(0, 12) {
            0 => f32::NAN,
            k => (k % 4) as f32,
        })
        .collect();
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}

#[test]
fn arg_max_and_min() {
    let mut rng = Rng::new(5);
    for dt in NUMERIC {
        for shape in [vec![4, 7], vec![2, 3, 5], vec![9]] {
            for axis in 0..shape.len() {
                for largest in [true, false] {
                    for keepdims in [true, false] {
                        for select_last_index in [false, true] {
                            let op = Op::Arg {
                                largest,
                                axis,
                                keepdims,
                                select_last_index,
                            };
                            check_op(op.clone(), &[ty(dt, &shape)], EXACT, 11);
                            if dt == DType::F32 {
                                let x = ties_and_nan(&mut rng, &shape);
                                run_case(op, &[x.ty()], &[(0, x)], 1, EXACT);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn cumulative_sums_and_products_every_direction() {
    for (dt, product) in NUMERIC.iter().flat_map(|&d| [(d, false), (d, true)]) {
        for shape in [vec![5], vec![3, 4], vec![2, 3, 4]] {
            for axis in 0..shape.len() {
                for exclusive in [false, true] {
                    for reverse in [false, true] {
                        let op = Op::Cumulative {
                            product,
                            axis,
                            exclusive,
                            reverse,
                        };
                        check_op(op, &[ty(dt, &shape)], EXACT, 13);
                    }
                }
            }
        }
    }
}

#[test]
fn top_k_orders_and_ties() {
    let mut rng = Rng::new(9);
    for dt in NUMERIC {
        for shape in [vec![9], vec![3, 6], vec![2, 5, 3]] {
            for axis in 0..shape.len() {
                let n = shape[axis];
                for k in [1, n / 2, n] {
                    for largest in [true, false] {
                        let op = Op::TopK { axis, k, largest };
                        check_op(op.clone(), &[ty(dt, &shape)], EXACT, 17);
                        if dt == DType::F32 {
                            let x = ties_and_nan(&mut rng, &shape);
                            run_case(op, &[x.ty()], &[(0, x)], 1, EXACT);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gather_elements_every_axis() {
    let mut rng = Rng::new(21);
    for dt in [DType::F32, DType::I64, DType::U8, DType::Bool] {
        for ity in [DType::I64, DType::I32] {
            for (dshape, ishape) in [
                (vec![3, 4], vec![3, 4]),
                (vec![3, 4], vec![2, 6]),
                (vec![4, 3, 5], vec![2, 3, 7]),
                (vec![6], vec![10]),
            ] {
                for axis in 0..dshape.len() {
                    let mut ishape = ishape.clone();
                    for d in 0..ishape.len() {
                        if d != axis {
                            ishape[d] = ishape[d].min(dshape[d]);
                        }
                    }
                    let n = dshape[axis];
                    let idx = indices(&mut rng, ity, &ishape, &|_| n);
                    let op = Op::GatherElements { axis };
                    run_case(op, &[ty(dt, &dshape), idx.ty()], &[(1, idx)], 2, EXACT);
                }
            }
        }
    }
}

#[test]
fn gather_nd_with_batch_dims() {
    let mut rng = Rng::new(23);
    for dt in [DType::F32, DType::I32, DType::Bool] {
        for ity in [DType::I64, DType::I32] {
            for (dshape, ishape, batch_dims) in [
                (vec![4, 5], vec![3, 2], 0),
                (vec![4, 5], vec![3, 1], 0),
                (vec![2, 3, 4], vec![5, 2], 0),
                (vec![2, 3, 4], vec![2, 2, 1], 1),
                (vec![2, 3, 4], vec![2, 2], 1),
                (vec![2, 3, 4, 2], vec![2, 3, 1], 2),
            ] {
                let dims = dshape.clone();
                let idx = indices(&mut rng, ity, &ishape, &|c| dims[batch_dims + c]);
                let op = Op::GatherNd { batch_dims };
                run_case(op, &[ty(dt, &dshape), idx.ty()], &[(1, idx)], 4, EXACT);
            }
        }
    }
}

const REDUCTIONS: [ScatterReduction; 5] = [
    ScatterReduction::Replace,
    ScatterReduction::Add,
    ScatterReduction::Mul,
    ScatterReduction::Max,
    ScatterReduction::Min,
];

#[test]
fn scatter_elements_every_reduction() {
    let mut rng = Rng::new(29);
    for dt in [
        DType::F32,
        DType::I64,
        DType::I32,
        DType::U8,
        DType::I8,
        DType::Bool,
    ] {
        for reduction in REDUCTIONS {
            if dt == DType::Bool && reduction != ScatterReduction::Replace {
                continue;
            }
            for (dshape, ishape) in [
                (vec![3, 4], vec![2, 4]),
                (vec![5], vec![8]),
                (vec![3, 4, 2], vec![3, 2, 2]),
            ] {
                for axis in 0..dshape.len() {
                    let mut ishape = ishape.clone();
                    for d in 0..ishape.len() {
                        if d != axis {
                            ishape[d] = ishape[d].min(dshape[d]);
                        }
                    }
                    // Few distinct targets: duplicate indices meet.
                    let n = dshape[axis];
                    let idx = indices(&mut rng, DType::I64, &ishape, &|_| n.min(2));
                    let op = Op::ScatterElements { axis, reduction };
                    let types = [ty(dt, &dshape), idx.ty(), ty(dt, &ishape)];
                    run_case(op, &types, &[(1, idx)], 6, EXACT);
                }
            }
        }
    }
}

#[test]
fn scatter_nd_every_reduction() {
    let mut rng = Rng::new(31);
    for dt in [DType::F32, DType::I32, DType::U8] {
        for reduction in REDUCTIONS {
            for (dshape, ishape) in [
                (vec![8], vec![4, 1]),
                (vec![4, 4, 4], vec![2, 1]),
                (vec![4, 4, 4], vec![3, 2]),
                (vec![4, 4, 4], vec![2, 2, 3]),
            ] {
                let q = ishape[ishape.len() - 1];
                let dims = dshape.clone();
                let idx = indices(&mut rng, DType::I64, &ishape, &|c| dims[c].min(2));
                let mut ushape = ishape[..ishape.len() - 1].to_vec();
                ushape.extend_from_slice(&dshape[q..]);
                let op = Op::ScatterNd { reduction };
                let types = [ty(dt, &dshape), idx.ty(), ty(dt, &ushape)];
                run_case(op, &types, &[(1, idx)], 8, EXACT);
            }
        }
    }
}

/// Each op with a bad index at run time: an error naming the node, never a wild access.
#[test]
fn out_of_range_indices_fail_at_run_time() {
    // (op, input types, indices shape, extent the last index addresses)
    let cases: Vec<(Op, Vec<TensorType>, Vec<usize>, usize)> = vec![
        (
            Op::GatherElements { axis: 1 },
            vec![f(&[3, 4]), ty(DType::I64, &[3, 2])],
            vec![3, 2],
            4,
        ),
        (
            Op::GatherNd { batch_dims: 0 },
            vec![f(&[3, 4]), ty(DType::I64, &[3, 2])],
            vec![3, 2],
            4,
        ),
        (
            Op::ScatterElements {
                axis: 0,
                reduction: ScatterReduction::Add,
            },
            vec![f(&[3, 4]), ty(DType::I64, &[2, 4]), f(&[2, 4])],
            vec![2, 4],
            3,
        ),
        (
            Op::ScatterNd {
                reduction: ScatterReduction::Replace,
            },
            vec![f(&[3, 4]), ty(DType::I64, &[2, 1]), f(&[2, 4])],
            vec![2, 1],
            3,
        ),
    ];
    for (op, types, ishape, n) in cases {
        let mut g = Graph::new();
        let vs: Vec<_> = types
            .iter()
            .enumerate()
            .map(|(i, t)| g.add_input(&format!("x{i}"), t.clone()))
            .collect();
        let y = g.add("picker", op.clone(), &vs).unwrap();
        g.add_output("y", y);
        let m = compile(&g);
        let mut ins = inputs_for(&g, 1);
        let count: usize = ishape.iter().product();
        for bad in [n as i64, -(n as i64) - 1, i64::MAX, i64::MIN] {
            let mut v = vec![0i64; count];
            v[count - 1] = bad;
            ins[1] = Tensor::from_i64(ishape.clone(), v).unwrap();
            let err = run_jit(&m, &ins).unwrap_err().to_string();
            assert!(
                err.contains("picker") && err.contains("range"),
                "{op:?} with index {bad}: {err}"
            );
            assert!(optc_ir::interp::run(&g, &ins).is_err());
        }
    }
}
