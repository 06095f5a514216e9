//! Convs whose windows read mostly padding, split into border regions before lowering.
//!
//! A dilated conv on a small map (DeepLab's atrous conv, dilation 12 on a 16x16 map) reads
//! the image with 2 of its 9 taps on average; the patch matrix of the implicit GEMM holds
//! zeros for the rest, and the GEMM multiplies them all. Along each spatial axis the outputs
//! fall into runs that read the same taps (the first ones miss the taps before the image,
//! the last ones the taps after it); each pair of runs (one per axis) is a region, and its
//! outputs are the conv of only those taps over the input cells they read: a slice of the
//! input, no padding. The regions' convs are concatenated back along W, then H.
//!
//! Taken when the padding's share of the conv's products is at least
//! [`PADDING_SHARE`] (the slices and concatenations copy the input and output about once
//! more). Exact up to the order of the sums: every dropped product was a padding zero
//! times a finite weight (a weight that is not finite keeps the conv whole: `0 x NaN` is
//! NaN). Fused steps go with each region: unary ones as they are, a residual (or any
//! operand of the output's shape) sliced to the region, per-channel operands whole.
//! (The e-graph cannot choose this form: its tree-cost extraction counts the input's cost
//! once per region.)

use crate::error::Result;
use crate::graph_rewrite::rewrite_picked;
use optc_ir::{DType, FusedStep, Graph, NodeId, Op, SliceDim, Tensor, Value, Window};
use std::sync::Arc;

/// Split a conv when padding is at least this share of its products.
const PADDING_SHARE: f64 = 0.5;

/// At most this many runs along an axis.
const MAX_RUNS: usize = 5;

/// A run of outputs along one axis that read the same taps: outputs `[o0, o1)`, taps
/// `[t0, t1)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub o0: usize,
    pub o1: usize,
    pub t0: usize,
    pub t1: usize,
}

/// The runs of one axis (input extent `n`, output extent `o`, kernel `k`, stride `s`,
/// dilation `d`, leading padding `pb`: tap `t` of output `j` reads `j s + t d - pb`), or
/// `None` when an output reads no tap.
pub(crate) fn runs(
    n: usize,
    o: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
) -> Option<Vec<Run>> {
    let mut v: Vec<Run> = vec![];
    for j in 0..o {
        let reads = |t: usize| {
            let at = (j * s + t * d) as i64 - pb as i64;
            at >= 0 && (at as usize) < n
        };
        let t0 = (0..k).find(|&t| reads(t))?;
        let t1 = (t0..k).take_while(|&t| reads(t)).last()? + 1;
        match v.last_mut() {
            Some(r) if (r.t0, r.t1) == (t0, t1) => r.o1 = j + 1,
            _ => v.push(Run {
                o0: j,
                o1: j + 1,
                t0,
                t1,
            }),
        }
    }
    Some(v)
}

/// What a conv node splits into: its runs along H and W.
struct Split {
    rows: Vec<Run>,
    cols: Vec<Run>,
}

/// Whether conv node `n` splits ([`PADDING_SHARE`]), and its runs.
fn eligible(graph: &Graph, n: NodeId) -> Option<Split> {
    let node = graph.node(n);
    let ins = graph.node_inputs(n);
    let (base, nbase, steps) = node.op.fused_parts(ins.len());
    let Op::Conv { window, .. } = base else {
        return None;
    };
    let x = graph.value_type(ins[0]).ok()?;
    let w = graph.const_value(ins[1])?;
    let out = &node.outputs.first()?.shape;
    if window.nsp() != 2
        || x.rank() != 4
        || x.dtype != DType::F32
        || window.ceil_mode
        || node.outputs.len() != 1
        || !w.as_f32()?.iter().all(|v| v.is_finite())
    {
        return None;
    }
    // Fused operands: of the output's shape (sliced per region) or one value per channel
    // at most (whole).
    for &v in &ins[nbase..] {
        let t = graph.value_type(v).ok()?;
        let per_channel = t.rank() == 4 && t.shape[2] == 1 && t.shape[3] == 1;
        if t.shape != *out && !per_channel {
            return None;
        }
    }
    if steps
        .iter()
        .any(|s| !matches!(s, FusedStep::Unary(_) | FusedStep::Binary { .. }))
    {
        return None;
    }
    let mut axes = vec![];
    for i in 0..2 {
        let n = x.shape[2 + i];
        let o = out[2 + i];
        let (k, s, d, pb) = (
            window.kernel[i],
            window.strides[i],
            window.dilations[i],
            window.pads[i],
        );
        if o == 0 || s == 0 || d == 0 {
            return None;
        }
        let r = runs(n, o, k, s, d, pb)?;
        if r.len() > MAX_RUNS {
            return None;
        }
        axes.push(r);
    }
    let taps = |r: &[Run]| -> usize { r.iter().map(|r| (r.o1 - r.o0) * (r.t1 - r.t0)).sum() };
    let read = (taps(&axes[0]) * taps(&axes[1])) as f64;
    let all = (out[2] * out[3] * window.kernel[0] * window.kernel[1]) as f64;
    if read > (1.0 - PADDING_SHARE) * all {
        return None;
    }
    let cols = axes.pop()?;
    let rows = axes.pop()?;
    Some(Split { rows, cols })
}

/// Weights `[M, Cg, KH, KW]` cut to taps `[kh0, kh1) x [kw0, kw1)`.
fn cut_weights(w: &Tensor, rows: Run, cols: Run) -> Option<Tensor> {
    let s = w.shape();
    let (m, cg, kh, kw) = (s[0], s[1], s[2], s[3]);
    let v = w.as_f32()?;
    let mut out = Vec::with_capacity(m * cg * (rows.t1 - rows.t0) * (cols.t1 - cols.t0));
    for mc in 0..m * cg {
        for i in rows.t0..rows.t1 {
            for j in cols.t0..cols.t1 {
                out.push(v[(mc * kh + i) * kw + j]);
            }
        }
    }
    Tensor::from_f32(vec![m, cg, rows.t1 - rows.t0, cols.t1 - cols.t0], out).ok()
}

/// Conv node `n` replaced by its regions (see the module doc).
fn split(g: &mut Graph, n: NodeId, sp: &Split) -> std::result::Result<(), String> {
    let ins = g.node_inputs(n);
    let node = g.node(n).clone();
    let name = node.name.clone();
    let out = node.outputs[0].shape.clone();
    let (base, nbase, steps) = node.op.fused_parts(ins.len());
    let Op::Conv { window, group } = base else {
        return Err("not a conv".into());
    };
    let x = g.value_type(ins[0]).map_err(|e| e.msg.clone())?.clone();
    let w = g.const_value(ins[1]).ok_or("constant weight")?.clone();
    let err = |e: optc_ir::IrError| e.msg;
    let mut rows = vec![];
    for (ri, &r) in sp.rows.iter().enumerate() {
        let mut cols = vec![];
        for (ci, &c) in sp.cols.iter().enumerate() {
            let at = format!("{name}/region{ri}_{ci}");
            // The input cells the region's taps read, along H and W.
            let mut dims = vec![SliceDim::whole(x.shape[0]), SliceDim::whole(x.shape[1])];
            let mut sub = Window {
                kernel: vec![r.t1 - r.t0, c.t1 - c.t0],
                strides: window.strides.clone(),
                pads: vec![0; 4],
                dilations: window.dilations.clone(),
                ceil_mode: false,
            };
            for (i, run) in [r, c].into_iter().enumerate() {
                let (s, d, pb) = (window.strides[i], window.dilations[i], window.pads[i]);
                let start = run.o0 * s + run.t0 * d - pb;
                let len = (run.o1 - 1 - run.o0) * s + (run.t1 - 1 - run.t0) * d + 1;
                dims.push(SliceDim {
                    start: start as i64,
                    step: 1,
                    len,
                });
                if run.t1 - run.t0 == 1 {
                    sub.dilations[i] = 1;
                }
            }
            let xs = g
                .add(&format!("{at}/input"), Op::Slice { dims }, &[ins[0]])
                .map_err(err)?;
            let wsub = cut_weights(&w, r, c).ok_or("weights")?;
            let wv = g.add_const(&format!("{at}/weight"), Arc::new(wsub));
            let mut sub_ins = vec![xs, wv];
            sub_ins.extend(&ins[2..nbase]);
            // Fused operands of the output's shape, sliced to the region.
            for &v in &ins[nbase..] {
                let t = g.value_type(v).map_err(|e| e.msg.clone())?;
                if t.shape != out {
                    sub_ins.push(v);
                    continue;
                }
                let mut dims: Vec<SliceDim> =
                    out[..2].iter().map(|&n| SliceDim::whole(n)).collect();
                for run in [r, c] {
                    dims.push(SliceDim {
                        start: run.o0 as i64,
                        step: 1,
                        len: run.o1 - run.o0,
                    });
                }
                let sv = g
                    .add(&format!("{at}/operand"), Op::Slice { dims }, &[v])
                    .map_err(err)?;
                sub_ins.push(sv);
            }
            let conv = Op::Conv {
                window: sub,
                group: *group,
            };
            let op = if steps.is_empty() {
                conv
            } else {
                Op::Fused {
                    base: Box::new(conv),
                    base_inputs: nbase,
                    steps: steps.to_vec(),
                }
            };
            cols.push(g.add(&at, op, &sub_ins).map_err(err)?);
        }
        rows.push(if cols.len() == 1 {
            cols[0]
        } else {
            g.add(&format!("{name}/row{ri}"), Op::Concat { axis: 3 }, &cols)
                .map_err(err)?
        });
    }
    let y = if rows.len() == 1 {
        rows[0]
    } else {
        g.add(&format!("{name}/regions"), Op::Concat { axis: 2 }, &rows)
            .map_err(err)?
    };
    g.replace_uses(Value::new(n, 0), y);
    Ok(())
}

/// The graph with every conv that reads mostly padding split into regions, or `None` when
/// there is none.
pub(crate) fn split_border_regions(graph: &Graph) -> Result<Option<Graph>> {
    rewrite_picked(
        graph,
        "splitting a conv into border regions",
        eligible,
        |g, n, sp| split(g, n, &sp),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use optc_ir::{BinaryOp, TensorType, UnaryOp};

    /// Deterministic values in [-1, 1).
    fn values(seed: u64, n: usize) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    fn tensor(seed: u64, shape: &[usize]) -> Tensor {
        Tensor::from_f32(shape.to_vec(), values(seed, shape.iter().product())).unwrap()
    }

    /// The runs against the definition: every output's taps are the ones that read the
    /// input, consecutive runs differ, and they cover the outputs in order.
    #[test]
    fn runs_match_the_taps_each_output_reads() {
        for (n, k, s, d, pb, pe) in [
            (16, 3, 1, 12, 12, 12),
            (16, 3, 1, 1, 1, 1),
            (4, 3, 1, 1, 1, 1),
            (9, 5, 2, 3, 4, 2),
            (7, 7, 1, 1, 3, 3),
            (5, 3, 2, 4, 0, 4),
        ] {
            let o = (n + pb + pe - (k - 1) * d - 1) / s + 1;
            let r = runs(n, o, k, s, d, pb).unwrap();
            assert_eq!((r[0].o0, r.last().unwrap().o1), (0, o));
            for (a, b) in r.iter().zip(&r[1..]) {
                assert_eq!(a.o1, b.o0);
                assert_ne!((a.t0, a.t1), (b.t0, b.t1));
            }
            for run in &r {
                for j in run.o0..run.o1 {
                    let reads: Vec<usize> = (0..k)
                        .filter(|&t| {
                            let at = (j * s + t * d) as i64 - pb as i64;
                            at >= 0 && at < n as i64
                        })
                        .collect();
                    assert_eq!(
                        reads,
                        (run.t0..run.t1).collect::<Vec<_>>(),
                        "{n} {k} {s} {d} {pb} j={j}"
                    );
                }
            }
        }
    }

    /// Convs that read mostly padding (dilated on small maps, strided, uneven pads, grouped,
    /// with a bias, fused Relu and a fused residual, a per-channel operand) split, and the
    /// split graph gives the original's outputs on the reference interpreter; a conv that
    /// reads the image with most taps, or has a weight that is not finite, stays whole.
    #[test]
    fn split_convs_compute_the_same_outputs() {
        struct Case {
            x: [usize; 4],
            m: usize,
            group: usize,
            kernel: [usize; 2],
            strides: [usize; 2],
            pads: [usize; 4],
            dilations: [usize; 2],
            bias: bool,
            fused: bool,
            splits: bool,
        }
        let case = |x, m, group, kernel, strides, pads, dilations, bias, fused, splits| Case {
            x,
            m,
            group,
            kernel,
            strides,
            pads,
            dilations,
            bias,
            fused,
            splits,
        };
        let cases = [
            case(
                [1, 8, 16, 16],
                6,
                1,
                [3, 3],
                [1, 1],
                [12; 4],
                [12, 12],
                true,
                true,
                true,
            ),
            case(
                [2, 4, 9, 11],
                5,
                1,
                [3, 3],
                [1, 1],
                [6, 7, 6, 7],
                [6, 7],
                false,
                false,
                true,
            ),
            case(
                [1, 6, 12, 10],
                6,
                3,
                [3, 3],
                [2, 1],
                [5; 4],
                [5, 5],
                true,
                true,
                true,
            ),
            case(
                [1, 3, 7, 7],
                4,
                1,
                [5, 5],
                [1, 1],
                [4, 2, 4, 2],
                [3, 2],
                true,
                false,
                true,
            ),
            case(
                [1, 4, 2, 2],
                4,
                1,
                [3, 3],
                [1, 1],
                [1; 4],
                [1, 1],
                true,
                true,
                true,
            ),
            // Most taps read the image: whole.
            case(
                [1, 4, 8, 8],
                4,
                1,
                [3, 3],
                [1, 1],
                [1; 4],
                [1, 1],
                true,
                true,
                false,
            ),
        ];
        for (i, c) in cases.iter().enumerate() {
            let mut g = Graph::new();
            let x = g.add_input("x", TensorType::f32(&c.x));
            let w = g.add_const(
                "w",
                Arc::new(tensor(
                    i as u64,
                    &[c.m, c.x[1] / c.group, c.kernel[0], c.kernel[1]],
                )),
            );
            let mut ins = vec![x, w];
            if c.bias {
                ins.push(g.add_const("b", Arc::new(tensor(100 + i as u64, &[c.m]))));
            }
            let window = Window {
                kernel: c.kernel.to_vec(),
                strides: c.strides.to_vec(),
                pads: c.pads.to_vec(),
                dilations: c.dilations.to_vec(),
                ceil_mode: false,
            };
            let conv = Op::Conv {
                window,
                group: c.group,
            };
            let refs: Vec<TensorType> = ins
                .iter()
                .map(|&v| g.value_type(v).unwrap().clone())
                .collect();
            let out = conv.infer(&refs.iter().collect::<Vec<_>>()).unwrap()[0].clone();
            let op = if c.fused {
                // Relu, then + a residual of the output's shape, then * a per-channel value.
                let r = g.add_input("r", out.clone());
                let s = g.add_const("s", Arc::new(tensor(200 + i as u64, &[1, c.m, 1, 1])));
                let nb = ins.len();
                ins.push(r);
                ins.push(s);
                Op::Fused {
                    base: Box::new(conv),
                    base_inputs: nb,
                    steps: vec![
                        FusedStep::Unary(UnaryOp::Relu),
                        FusedStep::Binary {
                            op: BinaryOp::Add,
                            input: nb,
                            swap: true,
                        },
                        FusedStep::Binary {
                            op: BinaryOp::Mul,
                            input: nb + 1,
                            swap: false,
                        },
                    ],
                }
            } else {
                conv
            };
            let y = g.add("conv", op, &ins).unwrap();
            g.add_output("y", y);
            let split = split_border_regions(&g).unwrap();
            assert_eq!(split.is_some(), c.splits, "case {i}");
            let Some(split) = split else {
                continue;
            };
            let inputs: Vec<Tensor> = g
                .inputs
                .iter()
                .enumerate()
                .map(|(k, inp)| tensor(300 + k as u64, &g.node(inp.node).outputs[0].shape))
                .collect();
            let want = optc_ir::interp::run(&g, &inputs).unwrap();
            let got = optc_ir::interp::run(&split, &inputs).unwrap();
            let (a, b) = (want[0].as_f32().unwrap(), got[0].as_f32().unwrap());
            assert_eq!(a.len(), b.len());
            for (k, (p, q)) in a.iter().zip(b).enumerate() {
                assert!(
                    (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                    "case {i} at {k}: {p} vs {q}"
                );
            }
        }
        // A weight that is not finite keeps the conv whole (`0 x NaN` is NaN).
        let mut g = Graph::new();
        let x = g.add_input("x", TensorType::f32(&[1, 2, 16, 16]));
        let mut wt = values(7, 2 * 2 * 9);
        wt[0] = f32::NAN;
        let w = g.add_const(
            "w",
            Arc::new(Tensor::from_f32(vec![2, 2, 3, 3], wt).unwrap()),
        );
        let window = Window {
            kernel: vec![3, 3],
            strides: vec![1, 1],
            pads: vec![12; 4],
            dilations: vec![12, 12],
            ceil_mode: false,
        };
        let y = g
            .add("conv", Op::Conv { window, group: 1 }, &[x, w])
            .unwrap();
        g.add_output("y", y);
        assert!(split_border_regions(&g).unwrap().is_none());
    }
}
