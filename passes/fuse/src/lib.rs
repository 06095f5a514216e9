//! The `fuse` pass: folding affine ops into weights, and GEMM formation. See README.md.

use optc_egraph::egg::Id;
use optc_egraph::query::{const_of, ops_in, same, scalar_of, ty_of};
use optc_egraph::{single_user, Build, Case, CostModel, FnRule, OptEGraph, Pass, Rule};
use optc_ir::{
    BinaryOp, DType, Data, Family, FusedStep, Graph, Op, Prop, ReduceKind, Tensor, TensorType,
    UnaryOp, Window, GELU_ERF_SCALE, GELU_TANH_CUBE, GELU_TANH_SCALE,
};
use std::sync::Arc;

/// The pass, choosing among fusable forms with the default cost model.
pub fn pass() -> Pass {
    pass_with(CostModel::host())
}

/// The pass, choosing among fusable forms (an int8 conv next to its f32 form) with `model`:
/// the one extraction prices them with (the target's), so a chain goes to the form that
/// will be extracted.
pub fn pass_with(model: CostModel) -> Pass {
    Pass {
        name: "fuse",
        level: 2,
        exact: true,
        folds: false,
        rules: rules(model),
        cases: cases(),
    }
}

/// A constant broadcast against an output of shape `out` that varies only along `axis`:
/// its values per index of that axis.
fn per_axis(c: &Tensor, out: &[usize], axis: usize) -> Option<Vec<f32>> {
    let v = Tensor::as_f32(c)?;
    let r = out.len();
    if c.shape().len() > r {
        return None;
    }
    let off = r - c.shape().len();
    let mut along = 1;
    for (i, &d) in c.shape().iter().enumerate() {
        if i + off == axis {
            along = d;
        } else if d != 1 {
            return None;
        }
    }
    let m = out[axis];
    match along {
        1 => Some(vec![v[0]; m]),
        n if n == m => Some(v.to_vec()),
        _ => None,
    }
}

/// Scale each of the `m` leading blocks of `w` by `s[m]`.
fn scale_rows(w: &Tensor, s: &[f32]) -> Option<Tensor> {
    let v = Tensor::as_f32(w)?;
    let m = s.len();
    if m == 0 || v.len() % m != 0 {
        return None;
    }
    let blk = v.len() / m;
    let out = v.iter().enumerate().map(|(i, &x)| x * s[i / blk]).collect();
    Tensor::new(w.shape().to_vec(), Data::F32(out)).ok()
}

fn vec_tensor(v: Vec<f32>) -> Tensor {
    Tensor::new(vec![v.len()], Data::F32(v)).expect("1-d")
}

/// Whether class `c` already holds a conv or Gemm of `x`: the fold of a scale or shift into
/// its weights done in an earlier iteration (rules search every class every iteration, and
/// scaling the weights again each time cost MaxViT-T a fifth of its -O3 compile). Another
/// such node of `x` in the class computes the same value at the same cost.
fn folded_into(eg: &OptEGraph, c: Id, x: Id) -> bool {
    ops_in(eg, c).any(|(op, ch)| {
        matches!(op, Op::Conv { .. } | Op::Gemm { .. })
            && ch.first().is_some_and(|&y| eg.find(y) == eg.find(x))
    })
}

/// Conv nodes with constant weight (and bias) in class `id`: (op, x, W, b).
#[allow(clippy::type_complexity)]
fn const_convs(eg: &OptEGraph, id: Id) -> Vec<(Op, Id, Arc<Tensor>, Option<Arc<Tensor>>)> {
    ops_in(eg, id)
        .filter_map(|(op, ch)| match op {
            Op::Conv { .. } => {
                let w = const_of(eg, ch[1])?;
                let b = match ch.get(2) {
                    Some(&b) => Some(const_of(eg, b)?),
                    None => None,
                };
                Some((op.clone(), ch[0], w, b))
            }
            _ => None,
        })
        .collect()
}

fn conv_build(op: Op, x: Id, w: Tensor, b: Vec<f32>) -> Build {
    Build::Node(
        op,
        vec![
            Build::Class(x),
            Build::Const(w),
            Build::Const(vec_tensor(b)),
        ],
    )
}

/// The kernel indices `[lo, hi)` of one spatial axis of a conv (input extent `n`, output
/// extent `o`, kernel `k`, stride `s`, dilation `d`, leading padding `pb`) that read the
/// input for at least one output position: tap `t` of output `j` reads `j s + t d - pb`.
fn reading_taps(n: usize, o: usize, k: usize, s: usize, d: usize, pb: usize) -> (usize, usize) {
    let reads = |t: usize| {
        // The first output whose tap `t` is not in the leading padding, and its position.
        let j0 = (pb.saturating_sub(t * d)).div_ceil(s);
        j0 < o && j0 * s + t * d - pb < n
    };
    match (0..k).find(|&t| reads(t)) {
        Some(lo) => (lo, (lo..k).rev().find(|&t| reads(t)).map_or(lo, |t| t + 1)),
        None => (0, 0),
    }
}

/// Conv `window` over input `[N, C, *xs]` without the kernel taps that read only padding
/// (`ranges`: the taps kept per axis), or `None` when every tap reads the input somewhere,
/// no tap does, or the trimmed window cannot keep the output's extent with padding alone.
fn trimmed_window(window: &Window, xs: &[usize]) -> Option<(Window, Vec<(usize, usize)>)> {
    let nsp = window.nsp();
    let mut new = window.clone();
    let mut ranges = vec![];
    for (i, &n) in xs.iter().enumerate().take(nsp) {
        let o = window.out_dim(i, n).ok()?;
        let (k, s, d, pb) = (
            window.kernel[i],
            window.strides[i],
            window.dilations[i],
            window.pads[i],
        );
        if o == 0 || s == 0 {
            return None;
        }
        let (lo, hi) = reading_taps(n, o, k, s, d, pb);
        if hi <= lo {
            return None;
        }
        let k2 = hi - lo;
        let pb2 = pb.checked_sub(lo * d)?;
        let d2 = if k2 == 1 { 1 } else { d };
        let span = (o - 1) * s + d2 * (k2 - 1) + 1;
        let pe2 = span.saturating_sub(n + pb2);
        if (n + pb2 + pe2 - span) / s != 0 {
            // (The input reaches past the last window: the trimmed conv would have more
            // outputs.)
            return None;
        }
        new.kernel[i] = k2;
        new.dilations[i] = d2;
        new.pads[i] = pb2;
        new.pads[nsp + i] = pe2;
        ranges.push((lo, hi));
    }
    let trims = ranges
        .iter()
        .zip(&window.kernel)
        .any(|(&(lo, hi), &k)| (lo, hi) != (0, k));
    trims.then_some((new, ranges))
}

/// Conv weights `[M, C / group, *kernel]` cut to the taps `ranges`, when every weight cut
/// away is finite (the reference multiplies padding too: `0 x NaN` is NaN).
fn trimmed_weights(w: &Tensor, ranges: &[(usize, usize)]) -> Option<Tensor> {
    let shape = w.shape();
    let nsp = ranges.len();
    if shape.len() != nsp + 2 {
        return None;
    }
    let kernel = &shape[2..];
    let taps: usize = kernel.iter().product();
    let keep = |tap: usize| {
        let mut rest = tap;
        let mut inside = true;
        for i in (0..nsp).rev() {
            let t = rest % kernel[i];
            rest /= kernel[i];
            inside &= (ranges[i].0..ranges[i].1).contains(&t);
        }
        inside
    };
    let mut new_shape = shape[..2].to_vec();
    new_shape.extend(ranges.iter().map(|(lo, hi)| hi - lo));
    // The kept weights, or `None` when a dropped one is not finite.
    fn cut<T: Copy>(
        v: &[T],
        keep: impl Fn(usize) -> bool,
        finite: fn(&T) -> bool,
    ) -> Option<Vec<T>> {
        let dropped_finite = v.iter().enumerate().all(|(i, x)| keep(i) || finite(x));
        dropped_finite.then(|| {
            v.iter()
                .enumerate()
                .filter(|(i, _)| keep(*i))
                .map(|(_, &x)| x)
                .collect()
        })
    }
    let data = match w.data() {
        Data::F32(v) => Data::F32(cut(v, |i| keep(i % taps), |x| x.is_finite())?),
        Data::F64(v) => Data::F64(cut(v, |i| keep(i % taps), |x| x.is_finite())?),
        _ => return None,
    };
    Tensor::new(new_shape, data).ok()
}

/// Longest step chain a fusion rule builds.
const MAX_STEPS: usize = 16;

/// The ways class `c` can be a fused base consumed by class `user`:
/// (base op, base input count, steps so far, children). Empty unless `user` is its only
/// consumer, so fusion never computes a value twice.
fn fused_forms(
    eg: &OptEGraph,
    c: Id,
    user: Id,
    model: &CostModel,
) -> Vec<(Op, usize, Vec<FusedStep>, Vec<Id>)> {
    if ty_of(eg, c).map(|t| t.dtype) != Some(DType::F32) || !single_user(eg, c, user) {
        return vec![];
    }
    let forms: Vec<_> = eg[c]
        .nodes
        .iter()
        .filter_map(|n| match n.op()? {
            Op::Fused {
                base,
                base_inputs,
                steps,
            } if steps.len() < MAX_STEPS => Some((
                (**base).clone(),
                *base_inputs,
                steps.clone(),
                n.children.clone(),
            )),
            op if op.has(Prop::FusedBase) => {
                Some((op.clone(), n.children.len(), vec![], n.children.clone()))
            }
            _ => None,
        })
        .collect();
    // Heavy bases first: a chain belongs in the store of a contraction (conv, GEMM, their
    // int8 forms), not of an add; then longer chains. Among equals, the base the cost model
    // prices lowest (an int8 conv next to its f32 form, `x * (1/c)` next to `x / c`).
    let out = ty_of(eg, c);
    let cost = |base: &Op, children: &[Id], inputs: usize| -> f64 {
        let ins: Option<Vec<&TensorType>> = children
            .iter()
            .take(inputs)
            .map(|&k| ty_of(eg, k))
            .collect();
        match (ins, out) {
            (Some(ins), Some(out)) => model.op_cost(base, &ins, std::slice::from_ref(out)),
            _ => f64::INFINITY,
        }
    };
    let mut keyed: Vec<_> = forms
        .into_iter()
        .map(|f| {
            let heavy = f.0.info().family == Family::Contraction;
            let key = (!heavy, usize::MAX - f.2.len());
            (key, cost(&f.0, &f.3, f.1), f)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    keyed.into_iter().map(|(_, _, f)| f).collect()
}

/// How many producers deep `fuse-binary` looks for the base in its other operand: one more
/// than the consumers `single_user` follows up to the fused value.
const READS_DEPTH: usize = 6;

/// Whether some e-node of class `c`, or of a class it reads within `depth` steps, reads
/// class `target` (breadth first, each class once).
fn reads(eg: &OptEGraph, c: Id, target: Id, depth: usize) -> bool {
    let target = eg.find(target);
    let mut seen = std::collections::HashSet::from([eg.find(c)]);
    let mut level = vec![eg.find(c)];
    for _ in 0..depth {
        let mut next = vec![];
        for &class in &level {
            for m in &eg[class].nodes {
                for &k in &m.children {
                    let k = eg.find(k);
                    if k == target {
                        return true;
                    }
                    if seen.insert(k) {
                        next.push(k);
                    }
                }
            }
        }
        level = next;
    }
    false
}

fn fused_build(base: Op, base_inputs: usize, steps: Vec<FusedStep>, children: &[Id]) -> Build {
    let op = Op::Fused {
        base: Box::new(base),
        base_inputs,
        steps,
    };
    Build::Node(op, children.iter().map(|&c| Build::Class(c)).collect())
}

/// `Reduce{kind, axes, keepdims: true}(x)` in class `c`: returns (axes, x).
fn keep_reduce(eg: &OptEGraph, c: Id, kind: ReduceKind) -> Vec<(Vec<usize>, Id)> {
    ops_in(eg, c)
        .filter_map(|(op, ch)| match op {
            Op::Reduce {
                kind: k,
                keepdims: true,
                axes,
            } if *k == kind => Some((axes.clone(), ch[0])),
            _ => None,
        })
        .collect()
}

/// The children of each op `op` in class `c`.
fn operands_of<'a>(eg: &'a OptEGraph, c: Id, op: &'a Op) -> impl Iterator<Item = &'a [Id]> {
    ops_in(eg, c)
        .filter(move |(o, _)| *o == op)
        .map(|(_, ch)| ch)
}

/// The operands `(x, y)` of the binary `op` e-nodes in class `c`, each in both orders (for
/// a commutative `op`).
fn operand_pairs(eg: &OptEGraph, c: Id, op: BinaryOp) -> Vec<(Id, Id)> {
    operands_of(eg, c, &Op::Binary(op))
        .filter(|ch| ch.len() == 2)
        .flat_map(|ch| [(ch[0], ch[1]), (ch[1], ch[0])])
        .collect()
}

/// Whether class `s` holds `1 + erf(x * r)` (either order of each operand pair), `r` GELU's
/// scale 1/sqrt(2) in f32.
fn is_erf_plus_one(eg: &OptEGraph, s: Id, x: Id) -> bool {
    operand_pairs(eg, s, BinaryOp::Add)
        .into_iter()
        .any(|(e, one)| {
            scalar_of(eg, one) == Some(1.0)
                && operands_of(eg, e, &Op::Unary(UnaryOp::Erf)).any(|ch| {
                    operand_pairs(eg, ch[0], BinaryOp::Mul)
                        .into_iter()
                        .any(|(y, r)| same(eg, y, x) && scalar_of(eg, r) == Some(GELU_ERF_SCALE))
                })
        })
}

/// Whether class `s` holds `1 + tanh((x + pow(x, 3) * c) * k)` (either order of each sum and
/// product), `c` and `k` the tanh GELU's coefficient and scale in f32.
fn is_tanh_plus_one(eg: &OptEGraph, s: Id, x: Id) -> bool {
    let is_cube = |p: Id| {
        operands_of(eg, p, &Op::Binary(BinaryOp::Pow))
            .any(|ch| ch.len() == 2 && same(eg, ch[0], x) && scalar_of(eg, ch[1]) == Some(3.0))
    };
    let is_inner = |b: Id| {
        operand_pairs(eg, b, BinaryOp::Add)
            .into_iter()
            .any(|(y, a)| {
                same(eg, y, x)
                    && operand_pairs(eg, a, BinaryOp::Mul)
                        .into_iter()
                        .any(|(p, c)| scalar_of(eg, c) == Some(GELU_TANH_CUBE) && is_cube(p))
            })
    };
    operand_pairs(eg, s, BinaryOp::Add)
        .into_iter()
        .any(|(t, one)| {
            scalar_of(eg, one) == Some(1.0)
                && operands_of(eg, t, &Op::Unary(UnaryOp::Tanh)).any(|ch| {
                    operand_pairs(eg, ch[0], BinaryOp::Mul)
                        .into_iter()
                        .any(|(b, k)| scalar_of(eg, k) == Some(GELU_TANH_SCALE) && is_inner(b))
                })
        })
}

/// `exp(x)` or `exp(x - reduce_max(x))` in class `a`, reduced over `axes`: the softmax input.
fn softmax_input(eg: &OptEGraph, a: Id, axes: &[usize]) -> Option<Id> {
    operands_of(eg, a, &Op::Unary(UnaryOp::Exp))
        .map(|ch| {
            let x = ch[0];
            let shifted = operands_of(eg, x, &Op::Binary(BinaryOp::Sub)).find_map(|s| {
                keep_reduce(eg, s[1], ReduceKind::Max)
                    .into_iter()
                    .find(|(ax, m)| ax == axes && same(eg, *m, s[0]))
                    .map(|_| s[0])
            });
            shifted.unwrap_or(x)
        })
        .next()
}

/// Layer normalization over trailing `axes` in its primitive form: `d / sqrt(mean(d²) + ε)`
/// with `d = x - mean(x)`. Returns (x, ε).
fn layer_norm_parts(eg: &OptEGraph, d: Id, s: Id) -> Option<(Id, Vec<usize>, f32)> {
    let (x, axes) = operands_of(eg, d, &Op::Binary(BinaryOp::Sub)).find_map(|ch| {
        keep_reduce(eg, ch[1], ReduceKind::Mean)
            .into_iter()
            .find(|(_, m)| same(eg, *m, ch[0]))
            .map(|(ax, _)| (ch[0], ax))
    })?;
    let rank = ty_of(eg, x)?.rank();
    if axes.is_empty()
        || axes
            .iter()
            .enumerate()
            .any(|(i, &a)| a != rank - axes.len() + i)
    {
        return None;
    }
    operands_of(eg, s, &Op::Unary(UnaryOp::Sqrt)).find_map(|sq| {
        operands_of(eg, sq[0], &Op::Binary(BinaryOp::Add)).find_map(|ad| {
            (0..2).find_map(|k| {
                let eps = scalar_of(eg, ad[1 - k])?;
                keep_reduce(eg, ad[k], ReduceKind::Mean)
                    .into_iter()
                    .find_map(|(ax, p)| {
                        if ax != axes {
                            return None;
                        }
                        let squares = ops_in(eg, p).any(|(op, c)| match op {
                            Op::Binary(BinaryOp::Pow) => {
                                same(eg, c[0], d) && scalar_of(eg, c[1]) == Some(2.0)
                            }
                            Op::Binary(BinaryOp::Mul) => same(eg, c[0], d) && same(eg, c[1], d),
                            _ => false,
                        });
                        squares.then(|| (x, axes.clone(), eps))
                    })
            })
        })
    })
}

/// Gemm nodes with constant B (and C) in class `id`: (alpha, beta, trans_a, trans_b, a, B, C).
#[allow(clippy::type_complexity)]
fn const_gemms(
    eg: &OptEGraph,
    id: Id,
) -> Vec<(f32, f32, bool, bool, Id, Arc<Tensor>, Option<Arc<Tensor>>)> {
    ops_in(eg, id)
        .filter_map(|(op, ch)| match *op {
            Op::Gemm {
                alpha,
                beta,
                trans_a,
                trans_b,
            } => {
                let b = const_of(eg, ch[1])?;
                let c = match ch.get(2) {
                    Some(&c) => Some(const_of(eg, c)?),
                    None => None,
                };
                Some((alpha, beta, trans_a, trans_b, ch[0], b, c))
            }
            _ => None,
        })
        .collect()
}

/// Scale output column `n` of `op(B)` by `s[n]`: rows of B when it is transposed
/// (`[N, K]`), columns otherwise (`[K, N]`).
fn scale_gemm_b(b: &Tensor, s: &[f32], trans_b: bool) -> Option<Tensor> {
    if trans_b {
        return scale_rows(b, s);
    }
    let v = Tensor::as_f32(b)?;
    let n = s.len();
    if b.shape().len() != 2 || b.shape()[1] != n {
        return None;
    }
    let out = v.iter().enumerate().map(|(i, &x)| x * s[i % n]).collect();
    Tensor::new(b.shape().to_vec(), Data::F32(out)).ok()
}

/// `beta * C` as a per-column vector of length `n` (C absent, scalar, `[N]` or `[1, N]`).
fn gemm_c_vector(c: &Option<Arc<Tensor>>, beta: f32, n: usize) -> Option<Vec<f32>> {
    match c {
        None => Some(vec![0.0; n]),
        Some(c) => {
            let v = Tensor::as_f32(c)?;
            let cols = match c.shape() {
                [] | [1] | [1, 1] => vec![v[0]; n],
                [k] | [1, k] if *k == n => v.to_vec(),
                _ => return None,
            };
            Some(cols.into_iter().map(|x| x * beta).collect())
        }
    }
}

fn gemm_build(alpha: f32, trans_a: bool, trans_b: bool, a: Id, b: Tensor, c: Vec<f32>) -> Build {
    let op = Op::Gemm {
        alpha,
        beta: 1.0,
        trans_a,
        trans_b,
    };
    Build::Node(
        op,
        vec![
            Build::Class(a),
            Build::Const(b),
            Build::Const(vec_tensor(c)),
        ],
    )
}

fn rules(model: CostModel) -> Vec<Rule> {
    let unary_model = model.clone();
    vec![
        FnRule::rewrite("gemm-bn", |eg, class, n| {
            // batch_norm over the columns of a [M, N] gemm output
            let Op::BatchNorm { epsilon } = n.op()? else {
                return None;
            };
            if eg[n.children[0]].data.ty()?.rank() != 2 {
                return None;
            }
            let p: Vec<_> = (1..5)
                .map(|i| const_of(eg, n.children[i]))
                .collect::<Option<_>>()?;
            let (g, beta_bn, mu, var) = (
                Tensor::as_f32(&p[0])?,
                Tensor::as_f32(&p[1])?,
                Tensor::as_f32(&p[2])?,
                Tensor::as_f32(&p[3])?,
            );
            let (alpha, beta, ta, tb, a, b, c) =
                const_gemms(eg, n.children[0]).into_iter().next()?;
            if folded_into(eg, class, a) {
                return None;
            }
            let cols = g.len();
            let s: Vec<f32> = (0..cols)
                .map(|i| g[i] / (var[i] + epsilon).sqrt())
                .collect();
            let c0 = gemm_c_vector(&c, beta, cols)?;
            let nc = (0..cols)
                .map(|i| (c0[i] - mu[i]) * s[i] + beta_bn[i])
                .collect();
            Some(gemm_build(alpha, ta, tb, a, scale_gemm_b(&b, &s, tb)?, nc))
        }),
        FnRule::rewrite("gemm-mul", |eg, class, n| {
            let Op::Binary(BinaryOp::Mul) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let out = eg[n.children[side]].data.ty()?.shape.clone();
                let k = const_of(eg, n.children[1 - side])?;
                let (alpha, beta, ta, tb, a, b, c) =
                    const_gemms(eg, n.children[side]).into_iter().next()?;
                if folded_into(eg, class, a) {
                    return None;
                }
                let s = per_axis(&k, &out, 1)?;
                let c0 = gemm_c_vector(&c, beta, s.len())?;
                let nc = c0.iter().zip(&s).map(|(x, y)| x * y).collect();
                Some(gemm_build(alpha, ta, tb, a, scale_gemm_b(&b, &s, tb)?, nc))
            })
        }),
        FnRule::rewrite("softmax-recognize", |eg, _c, n| {
            let Op::Binary(BinaryOp::Div) = n.op()? else {
                return None;
            };
            let (a, s) = (n.children[0], n.children[1]);
            keep_reduce(eg, s, ReduceKind::Sum)
                .into_iter()
                .find_map(|(axes, e)| {
                    if axes.len() != 1 || !same(eg, e, a) {
                        return None;
                    }
                    let x = softmax_input(eg, a, &axes)?;
                    Some(Build::Node(
                        Op::Softmax { axis: axes[0] },
                        vec![Build::Class(x)],
                    ))
                })
        }),
        // GELU (erf form) as one op, which fuses into a GEMM epilogue: BERT's
        // `(x * (1 + erf(x r))) * 0.5` (after `erf-div-to-mul`) exactly, and
        // `(x * 0.5) * (1 + erf(x r))` (ONNX's Gelu, PyTorch's `0.5 * x * ...`), the same
        // products in another order: equal but where `x (1 + erf)` overflows or underflows.
        FnRule::rewrite("gelu-recognize", |eg, _c, n| {
            let Op::Binary(BinaryOp::Mul) = n.op()? else {
                return None;
            };
            let [a, b] = [*n.children.first()?, *n.children.get(1)?];
            let x = [(a, b), (b, a)].into_iter().find_map(|(p, q)| {
                let pairs = operand_pairs(eg, p, BinaryOp::Mul);
                let bert = scalar_of(eg, q) == Some(0.5);
                pairs.into_iter().find_map(|(x, s)| {
                    let found = if bert {
                        is_erf_plus_one(eg, s, x)
                    } else {
                        scalar_of(eg, s) == Some(0.5) && is_erf_plus_one(eg, q, x)
                    };
                    found.then_some(x)
                })
            })?;
            Some(Build::Node(Op::Unary(UnaryOp::Gelu), vec![Build::Class(x)]))
        }),
        // GELU (tanh form) as one op, which fuses into a GEMM epilogue: GPT-2's and ONNX's
        // `(x * 0.5) * (1 + tanh((x + pow(x, 3) * c) * k))`, exactly (the op is that chain's
        // roundings; each sum and product in either order). Only for f32 `x` of the
        // product's type (a one-element constant of higher rank would broadcast it).
        FnRule::rewrite("gelu-tanh-recognize", |eg, c, n| {
            let Op::Binary(BinaryOp::Mul) = n.op()? else {
                return None;
            };
            let [a, b] = [*n.children.first()?, *n.children.get(1)?];
            let x = [(a, b), (b, a)].into_iter().find_map(|(h, p)| {
                operand_pairs(eg, h, BinaryOp::Mul)
                    .into_iter()
                    .find(|&(x, half)| {
                        scalar_of(eg, half) == Some(0.5) && is_tanh_plus_one(eg, p, x)
                    })
                    .map(|(x, _)| x)
            })?;
            let ty = ty_of(eg, x)?;
            (ty.dtype == DType::F32 && Some(ty) == ty_of(eg, c)).then_some(())?;
            Some(Build::Node(
                Op::Unary(UnaryOp::GeluTanh),
                vec![Build::Class(x)],
            ))
        }),
        FnRule::rewrite("layernorm-recognize", |eg, _c, n| {
            let Op::Binary(BinaryOp::Div) = n.op()? else {
                return None;
            };
            let (x, axes, epsilon) = layer_norm_parts(eg, n.children[0], n.children[1])?;
            let ty = ty_of(eg, x)?;
            let norm: Vec<usize> = ty.shape[axes[0]..].to_vec();
            let ones =
                Tensor::new(norm.clone(), Data::F32(vec![1.0; norm.iter().product()])).ok()?;
            Some(Build::Node(
                Op::LayerNorm {
                    axis: axes[0],
                    epsilon,
                },
                vec![Build::Class(x), Build::Const(ones)],
            ))
        }),
        FnRule::rewrite("layernorm-affine", |eg, _c, n| {
            // layer_norm(x, 1) * γ → layer_norm(x, γ); layer_norm(x, γ) + β → layer_norm(x, γ, β)
            let Op::Binary(b @ (BinaryOp::Mul | BinaryOp::Add)) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let p = n.children[1 - side];
                const_of(eg, p)?;
                ops_in(eg, n.children[side])
                    .filter(|(op, _)| matches!(op, Op::LayerNorm { .. }))
                    .find_map(|(op, ch)| {
                        let scale = const_of(eg, ch[1])?;
                        let ok = match b {
                            BinaryOp::Mul => {
                                ch.len() == 2 && scale.to_f64_vec().iter().all(|&v| v == 1.0)
                            }
                            _ => ch.len() == 2,
                        };
                        if !ok {
                            return None;
                        }
                        let (s, bias) = match b {
                            BinaryOp::Mul => (Build::Class(p), vec![]),
                            _ => (Build::Class(ch[1]), vec![Build::Class(p)]),
                        };
                        let mut args = vec![Build::Class(ch[0]), s];
                        args.extend(bias);
                        Some(Build::Node(op.clone(), args))
                    })
            })
        }),
        FnRule::rewrite("fuse-unary", move |eg, class, n| {
            let op @ Op::Unary(u) = n.op()? else {
                return None;
            };
            if !op.has(Prop::FusedStep) {
                return None;
            }
            let (base, bi, mut steps, ch) = fused_forms(eg, n.children[0], class, &unary_model)
                .into_iter()
                .next()?;
            steps.push(FusedStep::Unary(u.clone()));
            Some(fused_build(base, bi, steps, &ch))
        }),
        FnRule::rewrite("fuse-binary", move |eg, class, n| {
            let op @ Op::Binary(b) = n.op()? else {
                return None;
            };
            if !op.has(Prop::FusedStep) {
                return None;
            }
            (0..2).find_map(|side| {
                let other = n.children[1 - side];
                // `x * sigmoid(x)` (SiLU), or a residual branch that starts at the base: the
                // other operand reads the base, so the base would be computed for it and
                // again inside the fused node. (As deep as `single_user` follows consumers.)
                if reads(eg, other, n.children[side], READS_DEPTH) {
                    return None;
                }
                let (base, bi, mut steps, mut ch) =
                    fused_forms(eg, n.children[side], class, &model)
                        .into_iter()
                        .next()?;
                let input = match ch
                    .iter()
                    .skip(bi)
                    .position(|&c| eg.find(c) == eg.find(other))
                {
                    Some(i) => bi + i,
                    None => {
                        ch.push(other);
                        ch.len() - 1
                    }
                };
                steps.push(FusedStep::Binary {
                    op: *b,
                    input,
                    swap: side == 1,
                });
                Some(fused_build(base, bi, steps, &ch))
            })
        }),
        FnRule::rewrite("conv-padding-taps", |eg, c, n| {
            // Kernel taps that read only padding, for every output position, dropped: a
            // dilated conv on a small map (DeepLab's atrous convs, dilation 24 and 36 on a
            // 16x16 map: only the centre tap reads the image) becomes the smaller conv it
            // is. Exact: each dropped product was a padding zero times a finite weight.
            let Op::Conv { window, group } = n.op()? else {
                return None;
            };
            let x = ty_of(eg, n.children[0])?;
            let w = const_of(eg, n.children[1])?;
            if x.rank() != window.nsp() + 2 {
                return None;
            }
            let (new, ranges) = trimmed_window(window, &x.shape[2..])?;
            // (Once: the class holds the trimmed conv after the first iteration, and cutting
            // the weights again would cost as much as the first time.)
            if ops_in(eg, c).any(|(op, _)| matches!(op, Op::Conv { window: w, .. } if *w == new)) {
                return None;
            }
            let w2 = trimmed_weights(&w, &ranges)?;
            let mut children = vec![Build::Class(n.children[0]), Build::Const(w2)];
            children.extend(n.children[2..].iter().map(|&c| Build::Class(c)));
            Some(Build::Node(
                Op::Conv {
                    window: new,
                    group: *group,
                },
                children,
            ))
        }),
        FnRule::rewrite("conv-bn", |eg, class, n| {
            let Op::BatchNorm { epsilon } = n.op()? else {
                return None;
            };
            let p: Vec<_> = (1..5)
                .map(|i| const_of(eg, n.children[i]))
                .collect::<Option<_>>()?;
            let (g, beta, mu, var) = (
                Tensor::as_f32(&p[0])?,
                Tensor::as_f32(&p[1])?,
                Tensor::as_f32(&p[2])?,
                Tensor::as_f32(&p[3])?,
            );
            let (op, x, w, b) = const_convs(eg, n.children[0]).into_iter().next()?;
            if folded_into(eg, class, x) {
                return None;
            }
            let m = w.shape()[0];
            let s: Vec<f32> = (0..m).map(|i| g[i] / (var[i] + epsilon).sqrt()).collect();
            let b0 = b
                .as_ref()
                .and_then(|b| Tensor::as_f32(b).map(|v| v.to_vec()))
                .unwrap_or(vec![0.0; m]);
            let nb = (0..m).map(|i| (b0[i] - mu[i]) * s[i] + beta[i]).collect();
            Some(conv_build(op, x, scale_rows(&w, &s)?, nb))
        }),
        FnRule::rewrite("conv-mul", |eg, class, n| {
            let Op::Binary(BinaryOp::Mul) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let out = eg[n.children[side]].data.ty()?.shape.clone();
                let c = const_of(eg, n.children[1 - side])?;
                let (op, x, w, b) = const_convs(eg, n.children[side]).into_iter().next()?;
                if folded_into(eg, class, x) {
                    return None;
                }
                let s = per_axis(&c, &out, 1)?;
                let b0 = b
                    .as_ref()
                    .and_then(|b| Tensor::as_f32(b).map(|v| v.to_vec()))
                    .unwrap_or(vec![0.0; s.len()]);
                let nb = b0.iter().zip(&s).map(|(a, b)| a * b).collect();
                Some(conv_build(op, x, scale_rows(&w, &s)?, nb))
            })
        }),
        FnRule::rewrite("conv-add", |eg, class, n| {
            let Op::Binary(BinaryOp::Add) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let out = eg[n.children[side]].data.ty()?.shape.clone();
                let c = const_of(eg, n.children[1 - side])?;
                let (op, x, w, b) = const_convs(eg, n.children[side]).into_iter().next()?;
                if folded_into(eg, class, x) {
                    return None;
                }
                let a = per_axis(&c, &out, 1)?;
                let b0 = b
                    .as_ref()
                    .and_then(|b| Tensor::as_f32(b).map(|v| v.to_vec()))
                    .unwrap_or(vec![0.0; a.len()]);
                let nb = b0.iter().zip(&a).map(|(x, y)| x + y).collect();
                Some(conv_build(op, x, (*w).clone(), nb))
            })
        }),
        // GELU's `erf(x / sqrt 2)`: a multiply by the reciprocal instead of a divide.
        // `erf(x * r)` differs from `erf(fl(x / c))` by under 1.5 ulp of the argument, which
        // moves erf by at most 1.5 * 2^-24 relative (`|y erf'(y)| <= erf(y)`).
        FnRule::rewrite("erf-div-to-mul", |eg, _c, n| {
            let Op::Unary(UnaryOp::Erf) = n.op()? else {
                return None;
            };
            ops_in(eg, n.children[0]).find_map(|(op, ch)| {
                if *op != Op::Binary(BinaryOp::Div) {
                    return None;
                }
                let c = const_of(eg, ch[1])?;
                let [v] = c.as_f32()? else { return None };
                let r = 1.0 / *v as f64;
                if !v.is_finite() || *v == 0.0 || !(r as f32).is_normal() {
                    return None;
                }
                let rc = Tensor::new(c.shape().to_vec(), Data::F32(vec![r as f32])).ok()?;
                let mul = Build::Node(
                    Op::Binary(BinaryOp::Mul),
                    vec![Build::Class(ch[0]), Build::Const(rc)],
                );
                Some(Build::Node(Op::Unary(UnaryOp::Erf), vec![mul]))
            })
        }),
        FnRule::rewrite("matmul-add-gemm", |eg, _c, n| {
            let Op::Binary(BinaryOp::Add) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let c = n.children[1 - side];
                let ct = ty_of(eg, c)?.clone();
                ops_in(eg, n.children[side]).find_map(|(op, ch)| {
                    if *op != Op::MatMul {
                        return None;
                    }
                    let (a, b) = (eg[ch[0]].data.ty()?, eg[ch[1]].data.ty()?);
                    if a.rank() != 2 || b.rank() != 2 || ct.rank() > 2 {
                        return None;
                    }
                    let gemm = Op::Gemm {
                        alpha: 1.0,
                        beta: 1.0,
                        trans_a: false,
                        trans_b: false,
                    };
                    Some(Build::Node(
                        gemm,
                        vec![Build::Class(ch[0]), Build::Class(ch[1]), Build::Class(c)],
                    ))
                })
            })
        }),
    ]
}

// ---- soundness cases -------------------------------------------------------------

fn lcg(seed: u64, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

fn t(seed: u64, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    Tensor::from_f32(shape.to_vec(), lcg(seed, shape.iter().product(), lo, hi)).expect("shape")
}

fn conv_graph(seed: u64, bias: bool) -> (Graph, optc_ir::Value, usize) {
    let m = 2 + (seed % 4) as usize;
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, 3, 5, 5]));
    let w = g.add_const("w", t(seed, &[m, 3, 3, 3], -1.0, 1.0));
    let mut ins = vec![x, w];
    if bias {
        ins.push(g.add_const("b", t(seed + 1, &[m], -1.0, 1.0)));
    }
    let window = Window {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        pads: vec![1; 4],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let c = g
        .add("conv", Op::Conv { window, group: 1 }, &ins)
        .expect("conv");
    (g, c, m)
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: "conv-padding-taps",
            make: |s| {
                // A map of 4-6 by 5-6 pixels, dilations (and padding) as large as the map:
                // the off-centre taps read only padding along one or both axes (a 1x1 or a
                // 1x3 conv is left), a stride of 2 on some seeds, a bias on others.
                let (h, w) = (4 + (s % 3) as usize, 5 + (s % 2) as usize);
                let (dh, dw) = (h, if s % 2 == 0 { 1 } else { w });
                let stride = 1 + (s % 2) as usize;
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[1, 3, h, w]));
                let wt = g.add_const("w", t(s, &[4, 3, 3, 3], -1.0, 1.0));
                let mut ins = vec![x, wt];
                if s % 2 == 1 {
                    ins.push(g.add_const("b", t(s + 1, &[4], -1.0, 1.0)));
                }
                let window = Window {
                    kernel: vec![3, 3],
                    strides: vec![stride, stride],
                    pads: vec![dh, dw, dh, dw],
                    dilations: vec![dh, dw],
                    ceil_mode: false,
                };
                let c = g
                    .add("conv", Op::Conv { window, group: 1 }, &ins)
                    .expect("conv");
                g.add_output("y", c);
                g
            },
        },
        Case {
            rule: "conv-bn",
            make: |s| {
                let (mut g, c, m) = conv_graph(s, s % 2 == 0);
                let p: Vec<_> = (0..4)
                    .map(|i| {
                        g.add_const(
                            &format!("p{i}"),
                            t(s + 10 + i, &[m], if i == 3 { 0.5 } else { -1.0 }, 1.5),
                        )
                    })
                    .collect();
                let y = g
                    .add(
                        "bn",
                        Op::BatchNorm { epsilon: 1e-3 },
                        &[c, p[0], p[1], p[2], p[3]],
                    )
                    .expect("bn");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "conv-mul",
            make: |s| {
                let (mut g, c, m) = conv_graph(s, true);
                let k = g.add_const("k", t(s + 3, &[m, 1, 1], -2.0, 2.0));
                let y = g
                    .add("mul", Op::Binary(BinaryOp::Mul), &[k, c])
                    .expect("mul");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "conv-add",
            make: |s| {
                let (mut g, c, m) = conv_graph(s, s % 2 == 1);
                let k = g.add_const("k", t(s + 4, &[1, m, 1, 1], -2.0, 2.0));
                let y = g
                    .add("add", Op::Binary(BinaryOp::Add), &[c, k])
                    .expect("add");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "fuse-unary",
            make: |s| {
                let (mut g, c, _) = conv_graph(s, true);
                let r = g.add("relu", Op::Unary(UnaryOp::Relu), &[c]).expect("relu");
                let y = g
                    .add(
                        "clip",
                        Op::Unary(UnaryOp::Clip { min: 0.0, max: 0.5 }),
                        &[r],
                    )
                    .expect("clip");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "fuse-binary",
            make: |s| {
                let (mut g, c, m) = conv_graph(s, true);
                let res = g.add_input("res", TensorType::f32(&[1, m, 5, 5]));
                let a = g
                    .add("add", Op::Binary(BinaryOp::Add), &[res, c])
                    .expect("add");
                let e = g.add("exp", Op::Unary(UnaryOp::Exp), &[a]).expect("exp");
                let y = g
                    .add("sub", Op::Binary(BinaryOp::Sub), &[e, res])
                    .expect("sub");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "softmax-recognize",
            make: |s| {
                let (r, c) = (2 + s as usize % 3, 3 + s as usize % 5);
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[r, c]));
                let red = |k| Op::Reduce {
                    kind: k,
                    axes: vec![1],
                    keepdims: true,
                };
                let x = if s % 2 == 0 {
                    let m = g.add("max", red(ReduceKind::Max), &[x]).unwrap();
                    g.add("sub", Op::Binary(BinaryOp::Sub), &[x, m]).unwrap()
                } else {
                    x
                };
                let e = g.add("exp", Op::Unary(UnaryOp::Exp), &[x]).unwrap();
                let z = g.add("sum", red(ReduceKind::Sum), &[e]).unwrap();
                let y = g.add("div", Op::Binary(BinaryOp::Div), &[e, z]).unwrap();
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "layernorm-recognize",
            make: |s| {
                let (r, c) = (2 + s as usize % 3, 4 + s as usize % 5);
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[r, c]));
                let mean = || Op::Reduce {
                    kind: ReduceKind::Mean,
                    axes: vec![1],
                    keepdims: true,
                };
                let m = g.add("m", mean(), &[x]).unwrap();
                let d = g.add("d", Op::Binary(BinaryOp::Sub), &[x, m]).unwrap();
                let sq = if s % 2 == 0 {
                    let two = g.add_const("two", Tensor::scalar_f32(2.0));
                    g.add("sq", Op::Binary(BinaryOp::Pow), &[d, two]).unwrap()
                } else {
                    g.add("sq", Op::Binary(BinaryOp::Mul), &[d, d]).unwrap()
                };
                let v = g.add("v", mean(), &[sq]).unwrap();
                let eps = g.add_const("eps", Tensor::scalar_f32(1e-5));
                let ve = g.add("ve", Op::Binary(BinaryOp::Add), &[v, eps]).unwrap();
                let sd = g.add("sd", Op::Unary(UnaryOp::Sqrt), &[ve]).unwrap();
                let y = g.add("y", Op::Binary(BinaryOp::Div), &[d, sd]).unwrap();
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "layernorm-affine",
            make: |s| {
                let c = 3 + s as usize % 4;
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[2, c]));
                let one = g.add_const(
                    "one",
                    Tensor::new(vec![c], Data::F32(vec![1.0; c])).unwrap(),
                );
                let gamma = g.add_const("g", t(s, &[c], 0.5, 1.5));
                let beta = g.add_const("b", t(s + 1, &[c], -1.0, 1.0));
                let ln = g
                    .add(
                        "ln",
                        Op::LayerNorm {
                            axis: 1,
                            epsilon: 1e-5,
                        },
                        &[x, one],
                    )
                    .unwrap();
                let m = g.add("m", Op::Binary(BinaryOp::Mul), &[ln, gamma]).unwrap();
                let y = g.add("a", Op::Binary(BinaryOp::Add), &[beta, m]).unwrap();
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "gemm-bn",
            make: |s| {
                let (m, k, n) = (1 + s as usize % 3, 5, 2 + s as usize % 4);
                let mut g = Graph::new();
                let a = g.add_input("a", TensorType::f32(&[m, k]));
                let tb = s % 2 == 0;
                let b = g.add_const("b", t(s, &if tb { [n, k] } else { [k, n] }, -1.0, 1.0));
                let mut ins = vec![a, b];
                if s % 3 != 0 {
                    ins.push(g.add_const("c", t(s + 1, &[n], -1.0, 1.0)));
                }
                let gemm = Op::Gemm {
                    alpha: 0.5,
                    beta: 2.0,
                    trans_a: false,
                    trans_b: tb,
                };
                let y0 = g.add("gemm", gemm, &ins).expect("gemm");
                let p: Vec<_> = (0..4)
                    .map(|i| {
                        g.add_const(
                            &format!("p{i}"),
                            t(s + 10 + i, &[n], if i == 3 { 0.5 } else { -1.0 }, 1.5),
                        )
                    })
                    .collect();
                let y = g
                    .add(
                        "bn",
                        Op::BatchNorm { epsilon: 1e-3 },
                        &[y0, p[0], p[1], p[2], p[3]],
                    )
                    .expect("bn");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "gemm-mul",
            make: |s| {
                let (m, k, n) = (2, 4, 3 + s as usize % 3);
                let mut g = Graph::new();
                let a = g.add_input("a", TensorType::f32(&[m, k]));
                let b = g.add_const("b", t(s, &[n, k], -1.0, 1.0));
                let c = g.add_const("c", t(s + 1, &[1, n], -1.0, 1.0));
                let gemm = Op::Gemm {
                    alpha: 1.5,
                    beta: 0.5,
                    trans_a: false,
                    trans_b: true,
                };
                let y0 = g.add("gemm", gemm, &[a, b, c]).expect("gemm");
                let sc = g.add_const("scale", t(s + 2, &[n], -2.0, 2.0));
                let y = g
                    .add("mul", Op::Binary(BinaryOp::Mul), &[sc, y0])
                    .expect("mul");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "erf-div-to-mul",
            make: |s| {
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[2, 3 + s as usize % 4]));
                let c = g.add_const("c", Tensor::scalar_f32(std::f32::consts::SQRT_2 + s as f32));
                let d = g
                    .add("div", Op::Binary(BinaryOp::Div), &[x, c])
                    .expect("div");
                let y = g.add("erf", Op::Unary(UnaryOp::Erf), &[d]).expect("erf");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "gelu-recognize",
            make: |s| {
                // BERT's order for even seeds, ONNX's for odd ones; operands swapped by seed.
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[2, 3 + s as usize % 5]));
                let r = g.add_const("r", Tensor::scalar_f32(GELU_ERF_SCALE));
                let one = g.add_const("one", Tensor::scalar_f32(1.0));
                let half = g.add_const("half", Tensor::scalar_f32(0.5));
                let mul = |g: &mut Graph, name: &str, a, b, swap: bool| {
                    let ins = if swap { [b, a] } else { [a, b] };
                    g.add(name, Op::Binary(BinaryOp::Mul), &ins).expect("mul")
                };
                let swap = s % 4 >= 2;
                let z = mul(&mut g, "scaled", x, r, swap);
                let e = g.add("erf", Op::Unary(UnaryOp::Erf), &[z]).expect("erf");
                let ins = if swap { [one, e] } else { [e, one] };
                let p = g.add("add", Op::Binary(BinaryOp::Add), &ins).expect("add");
                let y = if s % 2 == 0 {
                    let m = mul(&mut g, "product", x, p, swap);
                    mul(&mut g, "gelu", m, half, !swap)
                } else {
                    let h = mul(&mut g, "half_x", half, x, swap);
                    mul(&mut g, "gelu", h, p, !swap)
                };
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "gelu-tanh-recognize",
            make: |s| {
                // Operands swapped by seed: GPT-2's order, then ONNX's decomposition's.
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[2, 3 + s as usize % 5]));
                let c =
                    |g: &mut Graph, name: &str, v: f32| g.add_const(name, Tensor::scalar_f32(v));
                let (half, three) = (c(&mut g, "half", 0.5), c(&mut g, "three", 3.0));
                let cube_k = c(&mut g, "cube_k", GELU_TANH_CUBE);
                let k = c(&mut g, "k", GELU_TANH_SCALE);
                let one = c(&mut g, "one", 1.0);
                let swap = s % 2 == 1;
                let bin = |g: &mut Graph, name: &str, op: BinaryOp, a, b| {
                    let ins = if swap { [b, a] } else { [a, b] };
                    g.add(name, Op::Binary(op), &ins).expect("binary")
                };
                let h = bin(&mut g, "half_x", BinaryOp::Mul, x, half);
                let p = g
                    .add("cube", Op::Binary(BinaryOp::Pow), &[x, three])
                    .expect("pow");
                let a = bin(&mut g, "scaled_cube", BinaryOp::Mul, p, cube_k);
                let b = bin(&mut g, "inner", BinaryOp::Add, x, a);
                let z = bin(&mut g, "scaled", BinaryOp::Mul, b, k);
                let t = g.add("tanh", Op::Unary(UnaryOp::Tanh), &[z]).expect("tanh");
                let d = bin(&mut g, "plus_one", BinaryOp::Add, t, one);
                let y = bin(&mut g, "gelu", BinaryOp::Mul, h, d);
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "matmul-add-gemm",
            make: |s| {
                let (m, k, n) = (1 + s as usize % 3, 4, 3 + s as usize % 2);
                let mut g = Graph::new();
                let a = g.add_input("a", TensorType::f32(&[m, k]));
                let b = g.add_const("b", t(s, &[k, n], -1.0, 1.0));
                let c = g.add_const("c", t(s + 1, &[n], -1.0, 1.0));
                let mm = g.add("mm", Op::MatMul, &[a, b]).expect("mm");
                let y = g
                    .add("add", Op::Binary(BinaryOp::Add), &[c, mm])
                    .expect("add");
                g.add_output("y", y);
                g
            },
        },
    ]
}
