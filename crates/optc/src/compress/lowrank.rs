//! Low-rank alternatives of the contractions with constant weights (`--low-rank`).
//!
//! A weight seen as a matrix `W` (a MatMul's `[K, N]`, a Gemm's `B` as used, a conv's
//! `[M, C*KH*KW]`) is replaced by the product of two thinner ones, `W ~ L R` with `L: rows x r`
//! and `R: r x cols`: the truncated SVD, from the eigen-decomposition of the smaller Gram
//! matrix (`W W^T` or `W^T W`, [`super::eigen`]); the rank keeps the asked share of the
//! energy (sum of squared singular values). The alternative computes
//! - a MatMul/Gemm `x @ W` as `(x @ L) @ R` (the second one keeps the node's bias and fused
//!   steps),
//! - a conv as the same conv to `r` channels (weights `R`) followed by a 1x1 conv (weights
//!   `L`, the bias and fused steps).
//!
//! A rank is offered only below the break-even `rows * cols / (rows + cols)` (fewer
//! multiply-adds) and only when the cost model prices the pair cheaper than the original.

use super::alternative::{add_tensor, node_cost};
use super::bias_correction;
use super::eigen::symmetric_eigen;
use super::input_stats::InputStats;
use optc_egraph::convert::Converted;
use optc_egraph::lossy::Alternative;
use optc_egraph::{egg, CostModel, ENode};
use optc_ir::{Data, Op, Tensor, TensorType, Window};

/// How ranks are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum LowRank {
    /// The smallest rank keeping this share of the energy (`energy=0.95`).
    Energy(f64),
    /// This rank (`rank=64`).
    Rank(usize),
    /// Ranks for the energies 0.99, 0.95, 0.9 and 0.8: the budget picks (`auto`).
    Auto,
}

impl LowRank {
    pub fn parse(s: &str) -> Result<LowRank, String> {
        if s == "auto" {
            return Ok(LowRank::Auto);
        }
        let bad = || format!("--low-rank '{s}': expected energy=0.95, rank=N or auto");
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        match k.trim() {
            "energy" => {
                let e: f64 = v.trim().parse().map_err(|_| bad())?;
                if e > 0.0 && e < 1.0 {
                    Ok(LowRank::Energy(e))
                } else {
                    Err(format!("--low-rank energy {e} must be between 0 and 1"))
                }
            }
            "rank" => {
                let r: usize = v.trim().parse().map_err(|_| bad())?;
                if r > 0 {
                    Ok(LowRank::Rank(r))
                } else {
                    Err("--low-rank rank must be at least 1".to_string())
                }
            }
            _ => Err(bad()),
        }
    }
    fn energies(&self) -> Vec<f64> {
        match self {
            LowRank::Energy(e) => vec![*e],
            LowRank::Rank(_) => vec![],
            LowRank::Auto => vec![0.99, 0.95, 0.9, 0.8],
        }
    }
}

/// One factorization: `(rank, energy kept, L [rows x r], R [r x cols])`.
type Factors = (usize, f64, Vec<f32>, Vec<f32>);

/// `a [n x k] @ b [k x m]` in f64.
fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
    let mut c = vec![0f64; n * m];
    for i in 0..n {
        let row = &mut c[i * m..(i + 1) * m];
        for p in 0..k {
            let x = a[i * k + p];
            if x == 0.0 {
                continue;
            }
            for (o, &y) in row.iter_mut().zip(&b[p * m..(p + 1) * m]) {
                *o += x * y;
            }
        }
    }
    c
}

fn transpose(a: &[f64], n: usize, m: usize) -> Vec<f64> {
    let mut t = vec![0f64; n * m];
    for i in 0..n {
        for j in 0..m {
            t[j * n + i] = a[i * m + j];
        }
    }
    t
}

/// The ranks `how` asks for, from the eigenvalues (descending) of a Gram matrix, below the
/// break-even of a `rows x cols` weight, with the energy each keeps.
fn ranks(values: &[f64], how: &LowRank, rows: usize, cols: usize) -> Vec<(usize, f64)> {
    let n = values.len();
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    if total <= 0.0 {
        return vec![];
    }
    let mut cum = vec![0f64; n + 1];
    for i in 0..n {
        cum[i + 1] = cum[i] + values[i].max(0.0);
    }
    let mut rs: Vec<usize> = how
        .energies()
        .iter()
        .map(|&e| (1..=n).find(|&r| cum[r] >= e * total).unwrap_or(n))
        .collect();
    if let LowRank::Rank(r) = how {
        rs.push((*r).min(n));
    }
    rs.sort_unstable();
    rs.dedup();
    let break_even = rows * cols / (rows + cols).max(1);
    rs.into_iter()
        .filter(|&r| r < break_even)
        .map(|r| (r, cum[r] / total))
        .collect()
}

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// The first `r` columns of the `n x n` matrix `v`.
fn leading(v: &[f64], n: usize, r: usize) -> Vec<f64> {
    (0..n)
        .flat_map(|i| (0..r).map(move |j| (i, j)))
        .map(|(i, j)| v[i * n + j])
        .collect()
}

/// The factors of `x @ W` (`W`: `rows = K` inputs by `cols = N` outputs) that keep the most
/// of the layer's OUTPUT variance on the calibration inputs, whose covariance is `c` (`K x
/// K`; the mean shift is left to bias correction): the truncated SVD of `S W` with
/// `S = C^(1/2)`, mapped back. Calibration-aware:
/// input directions the data never excites cost nothing to drop. With `N <= K` it needs only
/// `W^T C W`: `W ~ (W V_r) V_r^T`; otherwise `W ~ (S^-1 U_r) (U_r^T S W)`.
fn weighted_factorizations(
    w: &[f32],
    rows: usize,
    cols: usize,
    c: &[f64],
    how: &LowRank,
) -> Vec<Factors> {
    let (k, n) = (rows, cols);
    let wd: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    if n <= k {
        let cw = matmul(c, &wd, k, k, n);
        let g = matmul(&transpose(&wd, k, n), &cw, n, k, n);
        let (values, v) = symmetric_eigen(&g, n);
        return ranks(&values, how, rows, cols)
            .into_iter()
            .map(|(r, energy)| {
                let vr = leading(&v, n, r);
                let l = matmul(&wd, &vr, k, n, r);
                (r, energy, to_f32(&l), to_f32(&transpose(&vr, n, r)))
            })
            .collect();
    }
    // S = E L^(1/2) E^T and its inverse (eigenvalues floored: directions the inputs never
    // take are not blown up).
    let (lam, e) = symmetric_eigen(c, k);
    let floor = lam.first().copied().unwrap_or(0.0).max(0.0) * 1e-8 + 1e-30;
    let root = |pow: f64| -> Vec<f64> {
        let mut m = vec![0f64; k * k];
        for (q, &l) in lam.iter().enumerate() {
            let f = l.max(floor).powf(pow);
            for i in 0..k {
                let a = e[i * k + q] * f;
                if a == 0.0 {
                    continue;
                }
                for j in 0..k {
                    m[i * k + j] += a * e[j * k + q];
                }
            }
        }
        m
    };
    let (s, s_inv) = (root(0.5), root(-0.5));
    let m = matmul(&s, &wd, k, k, n);
    let g = matmul(&m, &transpose(&m, k, n), k, n, k);
    let (values, u) = symmetric_eigen(&g, k);
    ranks(&values, how, rows, cols)
        .into_iter()
        .map(|(r, energy)| {
            let ur = leading(&u, k, r);
            let l = matmul(&s_inv, &ur, k, k, r);
            let rt = matmul(&transpose(&ur, k, r), &m, r, k, n);
            (r, energy, to_f32(&l), to_f32(&rt))
        })
        .collect()
}

/// The factors of a `rows x cols` matrix `w` at every rank asked for (plain truncated SVD:
/// the most of the weight's own energy).
fn factorizations(w: &[f32], rows: usize, cols: usize, how: &LowRank) -> Vec<Factors> {
    let left = rows <= cols;
    let n = rows.min(cols);
    // Gram matrix of the smaller side.
    let mut g = vec![0f64; n * n];
    let at = |i: usize, j: usize| w[i * cols + j] as f64;
    for i in 0..n {
        for j in i..n {
            let s: f64 = if left {
                (0..cols).map(|k| at(i, k) * at(j, k)).sum()
            } else {
                (0..rows).map(|k| at(k, i) * at(k, j)).sum()
            };
            g[i * n + j] = s;
            g[j * n + i] = s;
        }
    }
    let (values, vectors) = symmetric_eigen(&g, n);
    ranks(&values, how, rows, cols)
        .into_iter()
        .map(|(r, energy)| {
            let vec = |k: usize, j: usize| vectors[k * n + j];
            let (l, rt) = if left {
                // W ~ U_r (U_r^T W)
                let l: Vec<f32> = (0..rows)
                    .flat_map(|i| (0..r).map(move |j| (i, j)))
                    .map(|(i, j)| vec(i, j) as f32)
                    .collect();
                let rt: Vec<f32> = (0..r)
                    .flat_map(|j| (0..cols).map(move |c| (j, c)))
                    .map(|(j, c)| (0..rows).map(|i| vec(i, j) * at(i, c)).sum::<f64>() as f32)
                    .collect();
                (l, rt)
            } else {
                // W ~ (W V_r) V_r^T
                let l: Vec<f32> = (0..rows)
                    .flat_map(|i| (0..r).map(move |j| (i, j)))
                    .map(|(i, j)| (0..cols).map(|c| at(i, c) * vec(c, j)).sum::<f64>() as f32)
                    .collect();
                let rt: Vec<f32> = (0..r)
                    .flat_map(|j| (0..cols).map(move |c| (j, c)))
                    .map(|(j, c)| vec(c, j) as f32)
                    .collect();
                (l, rt)
            };
            (r, energy, l, rt)
        })
        .collect()
}

fn tensor(shape: Vec<usize>, v: Vec<f32>) -> Tensor {
    Tensor::new(shape, Data::F32(v)).expect("length matches")
}

/// The layer's weight as a matrix: `(rows, cols, values)` with `x @ W` (MatMul/Gemm) or
/// `W [M, C*KH*KW]` (conv).
fn weight_matrix(base: &Op, w: &Tensor) -> Option<(usize, usize, Vec<f32>)> {
    let v = w.as_f32()?;
    let s = w.shape();
    match base {
        Op::MatMul if s.len() == 2 => Some((s[0], s[1], v.to_vec())),
        Op::Gemm {
            trans_a: false,
            trans_b,
            ..
        } if s.len() == 2 => {
            if *trans_b {
                // B is [N, K]: W = B^T.
                let (n, k) = (s[0], s[1]);
                let mut t = vec![0f32; k * n];
                for i in 0..n {
                    for j in 0..k {
                        t[j * n + i] = v[i * k + j];
                    }
                }
                Some((k, n, t))
            } else {
                Some((s[0], s[1], v.to_vec()))
            }
        }
        Op::Conv { group: 1, .. } if s.len() >= 3 => {
            Some((s[0], s[1..].iter().product(), v.to_vec()))
        }
        _ => None,
    }
}

/// Add the low-rank alternatives of every candidate layer; costs from `model`.
pub fn add_alternatives(
    conv: &mut Converted,
    layers: &[(egg::Id, ENode, String)],
    how: &LowRank,
    means: &InputStats,
    model: &CostModel,
) -> Vec<Alternative> {
    let mut out = vec![];
    for (class, node, name) in layers.iter().cloned() {
        let Some(op) = node.op().cloned() else {
            continue;
        };
        let base = match &op {
            Op::Fused { base, .. } => (**base).clone(),
            op => op.clone(),
        };
        let Some(w) = optc_egraph::query::const_of(&conv.egraph, node.children[1]) else {
            continue;
        };
        let Some((rows, cols, wm)) = weight_matrix(&base, &w) else {
            continue;
        };
        let exact_cost = node_cost(&conv.egraph, &node, model);
        // Calibration-aware for MatMul/Gemm when the inputs' covariance was observed.
        let second = match base {
            Op::Conv { .. } => None,
            _ => means.covariance(&name).filter(|c| c.len() == rows * rows),
        };
        let (factors, how_label) = match &second {
            Some(c) => (
                weighted_factorizations(&wm, rows, cols, c, how),
                "output variance",
            ),
            None => (factorizations(&wm, rows, cols, how), "energy"),
        };
        for (r, energy, l, rt) in factors {
            // What the factors leave out, as a `rows x cols` matrix (for bias correction).
            let delta: Vec<f32> = (0..rows * cols)
                .map(|i| {
                    let (a, b) = (i / cols, i % cols);
                    wm[i] - (0..r).map(|k| l[a * r + k] * rt[k * cols + b]).sum::<f32>()
                })
                .collect();
            let x = node.children[0];
            let (first, second_op, second_w) = match &base {
                Op::MatMul | Op::Gemm { .. } => {
                    let p = add_tensor(&mut conv.egraph, tensor(vec![rows, r], l));
                    let first = ENode::from_op(Op::MatMul, vec![x, p]);
                    let q = add_tensor(&mut conv.egraph, tensor(vec![r, cols], rt));
                    let second = match &base {
                        Op::Gemm { alpha, beta, .. } => Op::Gemm {
                            alpha: *alpha,
                            beta: *beta,
                            trans_a: false,
                            trans_b: false,
                        },
                        _ => Op::MatMul,
                    };
                    (first, second, q)
                }
                Op::Conv { window, .. } => {
                    let s = w.shape();
                    let mut rshape = vec![r];
                    rshape.extend_from_slice(&s[1..]);
                    let b = add_tensor(&mut conv.egraph, tensor(rshape, rt));
                    let first = ENode::from_op(
                        Op::Conv {
                            window: window.clone(),
                            group: 1,
                        },
                        vec![x, b],
                    );
                    let nsp = window.kernel.len();
                    let mut lshape = vec![rows, r];
                    lshape.extend(std::iter::repeat_n(1, nsp));
                    let a = add_tensor(&mut conv.egraph, tensor(lshape, l));
                    let one = Window {
                        kernel: vec![1; nsp],
                        strides: vec![1; nsp],
                        pads: vec![0; 2 * nsp],
                        dilations: vec![1; nsp],
                        ceil_mode: false,
                    };
                    (
                        first,
                        Op::Conv {
                            window: one,
                            group: 1,
                        },
                        a,
                    )
                }
                _ => continue,
            };
            // The first contraction's window must give the original's output map when the
            // second is 1x1: true for convs (same window), trivially for MatMuls.
            let first_cost = node_cost(&conv.egraph, &first, model);
            let t = conv.egraph.add(first);
            let new_op = match &op {
                Op::Fused {
                    base_inputs, steps, ..
                } => Op::Fused {
                    base: Box::new(second_op),
                    base_inputs: *base_inputs,
                    steps: steps.clone(),
                },
                _ => second_op,
            };
            let mut children = node.children.clone();
            children[0] = t;
            children[1] = second_w;
            let enode = ENode::from_op(new_op, children);
            // Only when the types agree with the class (e.g. a Gemm's 2-D input).
            let ins: Option<Vec<&TensorType>> = enode
                .children
                .iter()
                .map(|&c| conv.egraph[c].data.ty())
                .collect();
            let ok = ins
                .and_then(|ins| enode.op()?.infer(&ins).ok())
                .is_some_and(|outs| Some(&outs[0]) == conv.egraph[class].data.ty());
            if !ok {
                continue;
            }
            let cost = first_cost + node_cost(&conv.egraph, &enode, model);
            let id = conv.egraph.add(enode.clone());
            conv.egraph.union(class, id);
            let label = format!("low-rank r={r} ({:.1}% {how_label})", 100.0 * energy);
            out.push(Alternative {
                class,
                node: enode.clone(),
                also: vec![],
                layer: name.clone(),
                label: label.clone(),
                exact_cost,
                cost,
                error: None,
            });
            // With the bias corrected for what the factors leave out (`delta` is laid out as
            // a MatMul's `[K, N]`, or as the conv's weight).
            let as_op = match &base {
                Op::Conv { .. } => base.clone(),
                _ => Op::MatMul,
            };
            let shape = match &base {
                Op::Conv { .. } => w.shape().to_vec(),
                _ => vec![rows, cols],
            };
            let corrected = means
                .mean(&name)
                .and_then(|m| bias_correction::shift(&as_op, &shape, &delta, &m))
                .and_then(|sh| bias_correction::corrected_children(&mut conv.egraph, &enode, &sh));
            if let Some(ch) = corrected {
                let e2 = ENode::from_op(enode.op().expect("an op").clone(), ch);
                let id = conv.egraph.add(e2.clone());
                conv.egraph.union(class, id);
                out.push(Alternative {
                    class,
                    node: e2,
                    also: vec![],
                    layer: name.clone(),
                    label: format!("{label}, bias corrected"),
                    exact_cost,
                    cost,
                    error: None,
                });
            }
        }
    }
    conv.egraph.rebuild();
    for a in &mut out {
        a.canonicalize(&conv.egraph);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_reproduce_a_low_rank_matrix() {
        // A rank-2 6x9 matrix: energy 0.999 needs rank 2 and reproduces it.
        let (rows, cols) = (6, 9);
        let u = [1.0, -2.0, 0.5, 3.0, 0.0, 1.5];
        let v = [0.3, 1.0, -1.0, 2.0, 0.1, 0.0, -0.5, 1.2, 0.7];
        let u2 = [0.2, 0.1, -1.0, 0.4, 2.0, -0.3];
        let v2 = [1.0, 0.0, 0.5, -0.2, 0.3, 1.1, 0.0, -0.4, 0.2];
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| u[i / cols] * v[i % cols] + u2[i / cols] * v2[i % cols])
            .collect();
        for (wm, r, c) in [(w.clone(), rows, cols)] {
            let f = factorizations(&wm, r, c, &LowRank::Energy(0.999));
            assert_eq!(f.len(), 1);
            let (rank, energy, l, rt) = &f[0];
            assert_eq!(*rank, 2);
            assert!(*energy > 0.999);
            for i in 0..r {
                for j in 0..c {
                    let p: f32 = (0..*rank).map(|k| l[i * rank + k] * rt[k * c + j]).sum();
                    assert!((p - wm[i * c + j]).abs() < 1e-4, "{i},{j}");
                }
            }
        }
        // The transposed shape takes the other Gram matrix.
        let wt: Vec<f32> = (0..rows * cols)
            .map(|i| w[(i % rows) * cols + i / rows])
            .collect();
        let f = factorizations(&wt, cols, rows, &LowRank::Rank(2));
        let (rank, _, l, rt) = &f[0];
        for i in 0..cols {
            for j in 0..rows {
                let p: f32 = (0..*rank).map(|k| l[i * rank + k] * rt[k * rows + j]).sum();
                assert!((p - wt[i * rows + j]).abs() < 1e-4);
            }
        }
        // Calibration-aware, both branches (N <= K and N > K): an input second moment that
        // is not the identity still reproduces an exactly rank-2 weight.
        for (wm, r, c) in [(w.clone(), rows, cols), (wt.clone(), cols, rows)] {
            let mom: Vec<f64> = (0..r * r)
                .map(|i| {
                    let (a, b) = (i / r, i % r);
                    if a == b {
                        1.0 + a as f64
                    } else {
                        0.1
                    }
                })
                .collect();
            let f = weighted_factorizations(&wm, r, c, &mom, &LowRank::Rank(2));
            let (rank, energy, l, rt) = &f[0];
            assert_eq!(*rank, 2);
            assert!(*energy > 0.999999, "{energy}");
            for i in 0..r {
                for j in 0..c {
                    let p: f32 = (0..*rank).map(|k| l[i * rank + k] * rt[k * c + j]).sum();
                    assert!(
                        (p - wm[i * c + j]).abs() < 1e-3,
                        "{r}x{c} {i},{j}: {p} vs {}",
                        wm[i * c + j]
                    );
                }
            }
        }
        // Ranks at or above the break-even are not offered.
        assert!(factorizations(&w, rows, cols, &LowRank::Rank(5)).is_empty());
        assert!(LowRank::parse("energy=1.5").is_err());
        assert_eq!(LowRank::parse("rank=8"), Ok(LowRank::Rank(8)));
        assert_eq!(LowRank::parse("auto"), Ok(LowRank::Auto));
    }
}
