//! The `quantize` pass: the patterns onnxruntime's quantization tool emits, onto optc's int8
//! contractions (`QuantizedMatMul`, `QuantizedConv`). See README.md.

use optc_egraph::egg::Id;
use optc_egraph::query::{const_of, ops_in, same, ty_of};
use optc_egraph::{single_user, Build, Case, ENodeKind, FnRule, OptEGraph, Pass, Rule};
use optc_ir::{
    ActivationQuantization, BinaryOp, DType, Data, FusedStep, Graph, Op, Tensor, TensorType,
    UnaryOp, Value, Window,
};
use std::sync::Arc;

/// The pass.
pub fn pass() -> Pass {
    Pass {
        name: "quantize",
        level: 2,
        exact: true,
        folds: false,
        rules: rules(),
        cases: cases(),
    }
}

// ---- what the rules look for ---------------------------------------------------------

/// Whether every element of `t` is 0.
fn all_zero(t: &Tensor) -> bool {
    t.to_i64_vec().iter().all(|&v| v == 0)
}

/// The `DynamicQuantizeLinear` tuples whose output `port` class `c` is: (tuple, its input).
fn dynamic_output(eg: &OptEGraph, c: Id, port: usize) -> Vec<(Id, Id)> {
    let tuples: Vec<Id> = eg[c]
        .nodes
        .iter()
        .filter(|n| n.kind == ENodeKind::Proj(port))
        .map(|n| n.children[0])
        .collect();
    tuples
        .into_iter()
        .flat_map(|t| {
            ops_in(eg, t)
                .filter(|(op, _)| matches!(op, Op::DynamicQuantizeLinear))
                .map(move |(_, ch)| (t, ch[0]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether class `c` is output `port` of tuple `tuple`.
fn is_output(eg: &OptEGraph, c: Id, port: usize, tuple: Id) -> bool {
    eg[c]
        .nodes
        .iter()
        .any(|n| n.kind == ENodeKind::Proj(port) && same(eg, n.children[0], tuple))
}

/// Weight scales as a quantized contraction takes them: one element (as is), or one per
/// output channel `[n]` (a constant that varies only along `axis` of a tensor of `rank`).
fn channel_scales(ws: &Tensor, n: usize) -> Option<Tensor> {
    if ws.dtype() != DType::F32 {
        return None;
    }
    if ws.numel() == 1 {
        return Some(ws.clone());
    }
    if ws.numel() != n || ws.shape().iter().filter(|&&d| d != 1).count() != 1 {
        return None;
    }
    ws.reshaped(vec![n]).ok()
}

/// `Mul(proj1(tuple), ws)` (either order) in class `s`, `ws` a constant: its value.
fn scale_product(eg: &OptEGraph, s: Id, tuple: Id) -> Option<Arc<Tensor>> {
    ops_in(eg, s)
        .filter(|(op, _)| **op == Op::Binary(BinaryOp::Mul))
        .find_map(|(_, ch)| {
            (0..2).find_map(|k| {
                if !is_output(eg, ch[k], 1, tuple) {
                    return None;
                }
                const_of(eg, ch[1 - k])
            })
        })
}

/// `DequantizeLinear(QuantizeLinear(x, s, z), s, z)` with a constant per-tensor scale and
/// zero point (equal values on both sides) in class `xd`: `(x, s, z, z's dtype)` (u8
/// without a zero point).
fn round_trip(eg: &OptEGraph, xd: Id) -> Option<(Id, f32, i64, DType)> {
    let params = |ch: &[Id]| -> Option<(f32, i64, DType)> {
        let s = const_of(eg, ch[1])?;
        let s = (s.dtype() == DType::F32 && s.numel() == 1).then(|| s.to_f64_vec()[0] as f32)?;
        let (z, dt) = match ch.get(2) {
            Some(&z) => {
                let z = const_of(eg, z)?;
                (z.numel() == 1).then_some(())?;
                (z.to_i64_vec()[0], z.dtype())
            }
            None => (0, DType::U8),
        };
        Some((s, z, dt))
    };
    ops_in(eg, xd)
        .filter(|(op, _)| matches!(op, Op::DequantizeLinear { .. }))
        .find_map(|(_, dch)| {
            let (s, z, dt) = params(dch)?;
            if !(s > 0.0 && s.is_finite() && matches!(dt, DType::U8 | DType::I8)) {
                return None;
            }
            ops_in(eg, dch[0])
                .filter(|(op, _)| matches!(op, Op::QuantizeLinear { .. }))
                .find_map(|(_, qch)| {
                    let (s2, z2, dt2) = params(qch)?;
                    (s2.to_bits() == s.to_bits() && z2 == z && dt2 == dt)
                        .then_some((qch[0], s, z, dt))
                })
        })
}

/// [`round_trip`] as the input of a static quantized contraction: `(xd, s, z)`, the zero
/// point as u8 (an i8 one plus 128: the same quantization, shifted). The contraction reads
/// the dequantized value `xd` itself (not `x`): quantizing it again with `s` and `z` gives
/// back exactly the integers `Q` made (`|q - z| <= 255`, so the reciprocal's rounding cannot
/// move it by half a step), and the producer of `x` keeps a single consumer, `Q`, whose
/// round trip `fuse` then puts in its store as a `fake_quantize` step.
fn quantized_input(eg: &OptEGraph, xd: Id) -> Option<(Id, Tensor, Tensor)> {
    let (_, s, z, dt) = round_trip(eg, xd)?;
    let z = if dt == DType::I8 { z + 128 } else { z };
    let zt = Tensor::new(vec![], Data::U8(vec![z as u8])).ok()?;
    Some((xd, Tensor::scalar_f32(s), zt))
}

/// `DequantizeLinear(W, ws[, 0])` of constant symmetric i8 weights in class `wd`, the scales
/// per tensor or along `axis` (the output channels): `(W, ws)`.
fn quantized_weight(eg: &OptEGraph, wd: Id, axis: usize) -> Option<(Arc<Tensor>, Tensor)> {
    ops_in(eg, wd).find_map(|(op, ch)| {
        let Op::DequantizeLinear { axis: a } = op else {
            return None;
        };
        let w = const_of(eg, ch[0])?;
        let ws = const_of(eg, ch[1])?;
        if w.dtype() != DType::I8 || w.shape().len() <= axis {
            return None;
        }
        if let Some(&z) = ch.get(2) {
            if !all_zero(&*const_of(eg, z)?) {
                return None;
            }
        }
        if ws.numel() != 1 && *a != axis {
            return None;
        }
        Some((w.clone(), channel_scales(&ws, w.shape()[axis])?))
    })
}

/// A bias of `n` channels in class `b`: an f32 constant with one value per channel (or
/// one for all), or the `DequantizeLinear` of constants (a quantized i32 bias) evaluated.
fn bias_value(eg: &OptEGraph, b: Id, n: usize) -> Option<Vec<f32>> {
    let value = match const_of(eg, b) {
        Some(t) => t,
        None => ops_in(eg, b).find_map(|(op, ch)| {
            if !matches!(op, Op::DequantizeLinear { .. }) {
                return None;
            }
            let ins: Vec<Arc<Tensor>> =
                ch.iter().map(|&c| const_of(eg, c)).collect::<Option<_>>()?;
            let refs: Vec<&Tensor> = ins.iter().map(|t| t.as_ref()).collect();
            optc_ir::interp::eval_op(op, &refs)
                .ok()?
                .pop()
                .map(Arc::new)
        })?,
    };
    let v = value.as_f32()?;
    if value.shape().iter().filter(|&&d| d != 1).count() > 1 {
        return None;
    }
    match v.len() {
        1 => Some(vec![v[0]; n]),
        k if k == n => Some(v.to_vec()),
        _ => None,
    }
}

fn vector(v: Vec<f32>) -> Tensor {
    Tensor::new(vec![v.len()], Data::F32(v)).expect("1-d")
}

/// A quantized contraction's children: `x`, the weights, their scales, the static
/// activation parameters, the bias.
fn children(
    x: Id,
    w: Tensor,
    ws: Tensor,
    act: Option<(Tensor, Tensor)>,
    bias: Option<Vec<f32>>,
) -> Vec<Build> {
    let mut v = vec![Build::Class(x), Build::Const(w), Build::Const(ws)];
    if let Some((s, z)) = act {
        v.push(Build::Const(s));
        v.push(Build::Const(z));
    }
    if let Some(b) = bias {
        v.push(Build::Const(vector(b)));
    }
    v
}

/// `w` `[N, K]` transposed to `[K, N]`.
fn transposed(w: &Tensor) -> Option<Tensor> {
    let Data::I8(v) = w.data() else {
        return None;
    };
    let (n, k) = (w.shape()[0], w.shape()[1]);
    let t = (0..k * n).map(|i| v[(i % n) * k + i / n]).collect();
    Tensor::new(vec![k, n], Data::I8(t)).ok()
}

// ---- the rules ---------------------------------------------------------------------------

/// Whether every window of a max pool from class `x` to class `y` holds a real cell (one
/// of only padding gives `-inf`, which no fake-quantize grid holds).
fn windows_hold_cells(eg: &OptEGraph, x: Id, y: Id, w: &Window) -> bool {
    let (Some(xt), Some(yt)) = (ty_of(eg, x), ty_of(eg, y)) else {
        return false;
    };
    let nsp = w.kernel.len();
    if xt.shape.len() != nsp + 2 || yt.shape.len() != nsp + 2 {
        return false;
    }
    (0..nsp).all(|i| {
        let (n, out) = (xt.shape[2 + i] as i64, yt.shape[2 + i]);
        (0..out).all(|o| {
            (0..w.kernel[i]).any(|j| {
                let q = (o * w.strides[i] + j * w.dilations[i]) as i64 - w.pads[i] as i64;
                (0..n).contains(&q)
            })
        })
    })
}

/// Whether every value of class `c` is on the grid of the fake-quantize `fq` (which then
/// returns each one unchanged: `(q - z) s / s` rounds back to the integer `q - z`, so the
/// round trip computes the same product): the output of that fake-quantize (alone or as a
/// fused node's last step), or a max pool, Relu, reshape or transpose of such values (they
/// only pick, move or zero values; 0 is on every grid). `depth` bounds the search.
fn on_grid(eg: &OptEGraph, c: Id, fq: &UnaryOp, depth: usize) -> bool {
    if depth == 0 {
        return false;
    }
    eg[c].nodes.iter().any(|n| match n.op() {
        Some(Op::Unary(u)) if u == fq => true,
        Some(Op::Fused { steps, .. }) => {
            matches!(steps.last(), Some(FusedStep::Unary(u)) if u == fq)
        }
        Some(Op::MaxPool { window }) => {
            windows_hold_cells(eg, n.children[0], c, window)
                && on_grid(eg, n.children[0], fq, depth - 1)
        }
        Some(Op::Unary(UnaryOp::Relu) | Op::Reshape { .. } | Op::Transpose { .. }) => {
            on_grid(eg, n.children[0], fq, depth - 1)
        }
        _ => false,
    })
}

fn rules() -> Vec<Rule> {
    vec![
        FnRule::rewrite("dynamic-matmul", |eg, _c, n| {
            // Cast(MatMulInteger(y, W, z, 0)) * (x_scale * w_scale), with (y, x_scale, z) =
            // DynamicQuantizeLinear(x): quantize_dynamic's MatMul.
            let Op::Binary(BinaryOp::Mul) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let (c, s) = (n.children[side], n.children[1 - side]);
                ops_in(eg, c)
                    .filter(|(op, _)| **op == Op::Cast { to: DType::F32 })
                    .find_map(|(_, cast)| {
                        ops_in(eg, cast[0])
                            .filter(|(op, _)| **op == Op::MatMulInteger)
                            .find_map(|(_, m)| {
                                if m.len() < 3 {
                                    return None;
                                }
                                let w = const_of(eg, m[1])?;
                                if w.dtype() != DType::I8 || w.shape().len() != 2 {
                                    return None;
                                }
                                if let Some(&z) = m.get(3) {
                                    if !all_zero(&*const_of(eg, z)?) {
                                        return None;
                                    }
                                }
                                let (tuple, x) = dynamic_output(eg, m[0], 0)
                                    .into_iter()
                                    .find(|(t, _)| is_output(eg, m[2], 2, *t))?;
                                let ws =
                                    channel_scales(&*scale_product(eg, s, tuple)?, w.shape()[1])?;
                                let op = Op::QuantizedMatMul {
                                    activation: ActivationQuantization::Dynamic,
                                };
                                Some(Build::Node(op, children(x, (*w).clone(), ws, None, None)))
                            })
                    })
            })
        }),
        FnRule::rewrite("quantized-matmul-bias", |eg, _c, n| {
            // A quantized matmul without bias, plus a constant per output column.
            let Op::Binary(BinaryOp::Add) = n.op()? else {
                return None;
            };
            (0..2).find_map(|side| {
                let (q, b) = (n.children[side], n.children[1 - side]);
                let bias = const_of(eg, b)?;
                ops_in(eg, q).find_map(|(op, ch)| {
                    let Op::QuantizedMatMul { activation } = op else {
                        return None;
                    };
                    if ch.len() != activation.fixed_inputs() {
                        return None;
                    }
                    let cols = ty_of(eg, ch[1])?.shape[1];
                    let out = ty_of(eg, q)?;
                    // the bias must vary along the columns only and not broadcast the output
                    let bt = bias.ty();
                    if bt.dtype != DType::F32
                        || bt.rank() > out.rank()
                        || bt.shape.iter().rev().skip(1).any(|&d| d != 1)
                    {
                        return None;
                    }
                    let v = bias_value(eg, b, cols)?;
                    let mut kids: Vec<Build> = ch.iter().map(|&c| Build::Class(c)).collect();
                    kids.push(Build::Const(vector(v)));
                    Some(Build::Node(op.clone(), kids))
                })
            })
        }),
        FnRule::rewrite("static-conv", |eg, _c, n| {
            // Conv(DQ(Q(x, s, z), s, z), DQ(W, ws, 0)[, bias]): quantize_static's QDQ conv.
            let Op::Conv { window, group } = n.op()? else {
                return None;
            };
            let (x, s, z) = quantized_input(eg, n.children[0])?;
            let (w, ws) = quantized_weight(eg, n.children[1], 0)?;
            let m = w.shape()[0];
            let bias = match n.children.get(2) {
                Some(&b) => Some(bias_value(eg, b, m)?),
                None => None,
            };
            let op = Op::QuantizedConv {
                window: window.clone(),
                group: *group,
                activation: ActivationQuantization::Static,
            };
            Some(Build::Node(
                op,
                children(x, (*w).clone(), ws, Some((s, z)), bias),
            ))
        }),
        FnRule::rewrite("static-gemm", |eg, _c, n| {
            // Gemm(DQ(Q(x, s, z), s, z), DQ(W, ws, 0)[, C]) with alpha 1: the QDQ linear layer.
            let Op::Gemm {
                alpha,
                beta,
                trans_a: false,
                trans_b,
            } = *n.op()?
            else {
                return None;
            };
            if alpha != 1.0 {
                return None;
            }
            let (x, s, z) = quantized_input(eg, n.children[0])?;
            // The output channels are W's rows when it is transposed, else its columns.
            let (w, ws) = quantized_weight(eg, n.children[1], if trans_b { 0 } else { 1 })?;
            let w = if trans_b {
                transposed(&w)?
            } else {
                (*w).clone()
            };
            let cols = w.shape()[1];
            let bias = match n.children.get(2) {
                Some(_) if beta == 0.0 => None,
                Some(&c) => Some(
                    bias_value(eg, c, cols)?
                        .into_iter()
                        .map(|v| beta * v)
                        .collect(),
                ),
                None => None,
            };
            let op = Op::QuantizedMatMul {
                activation: ActivationQuantization::Static,
            };
            Some(Build::Node(op, children(x, w, ws, Some((s, z)), bias)))
        }),
        FnRule::rewrite("static-matmul", |eg, _c, n| {
            // MatMul(DQ(Q(x, s, z), s, z), DQ(W, ws, 0)) with W [K, N].
            let Op::MatMul = n.op()? else {
                return None;
            };
            let (x, s, z) = quantized_input(eg, n.children[0])?;
            let (w, ws) = quantized_weight(eg, n.children[1], 1)?;
            if w.shape().len() != 2 {
                return None;
            }
            let op = Op::QuantizedMatMul {
                activation: ActivationQuantization::Static,
            };
            Some(Build::Node(
                op,
                children(x, (*w).clone(), ws, Some((s, z)), None),
            ))
        }),
        FnRule::rewrite("fake-quantize", |eg, class, n| {
            // DQ(Q(x, s, z), s, z) on f32, per tensor: one elementwise op (a fused step),
            // bit for bit the same.
            let Op::DequantizeLinear { .. } = n.op()? else {
                return None;
            };
            let (x, scale, zero, dt) = round_trip(eg, class)?;
            if ty_of(eg, x)?.dtype != DType::F32 {
                return None;
            }
            let op = Op::Unary(optc_ir::UnaryOp::FakeQuantize {
                scale,
                zero: zero as f32,
                signed: dt == DType::I8,
            });
            Some(Build::Node(op, vec![Build::Class(x)]))
        }),
        FnRule::rewrite("static-input-unrounded", |eg, class, n| {
            // A static int8 contraction quantizes its input with (s, z): reading `x` instead
            // of `fake_quantize(x)` on the same grid gives the same integers (the grid values
            // quantize back to themselves; clamping and NaN land alike). Only when the
            // requantized value has no other consumer, which would still need it.
            let op = n.op()?;
            let (Op::QuantizedConv {
                activation: ActivationQuantization::Static,
                ..
            }
            | Op::QuantizedMatMul {
                activation: ActivationQuantization::Static,
            }) = op
            else {
                return None;
            };
            let s = *const_of(eg, n.children[3])?.as_f32()?.first()?;
            let Data::U8(z) = const_of(eg, n.children[4])?.data().clone() else {
                return None;
            };
            let z = *z.first()? as f32;
            let input = n.children[0];
            if !single_user(eg, input, class) {
                return None;
            }
            let x = ops_in(eg, input).find_map(|(o, ch)| match o {
                Op::Unary(UnaryOp::FakeQuantize {
                    scale,
                    zero,
                    signed,
                }) if *scale == s && if *signed { *zero + 128.0 } else { *zero } == z => {
                    Some(ch[0])
                }
                _ => None,
            })?;
            let mut kids: Vec<Build> = n.children.iter().map(|&c| Build::Class(c)).collect();
            kids[0] = Build::Class(x);
            Some(Build::Node(op.clone(), kids))
        }),
        FnRule::rewrite("requantize-on-grid", |eg, _class, n| {
            // fake_quantize(y) = y when y is already on its grid: a QDQ pair after a max
            // pool or a flatten of values quantized with the same parameters (onnxruntime's
            // tool gives them the input's).
            let Op::Unary(fq @ UnaryOp::FakeQuantize { .. }) = n.op()? else {
                return None;
            };
            let x = n.children[0];
            on_grid(eg, x, fq, 8).then_some(Build::Class(x))
        }),
        FnRule::rewrite("dequantize-constant", |eg, class, n| {
            // The constant folding of DequantizeLinear, which the analysis leaves to this
            // pass: weights no rule above consumed become f32 (once).
            let op @ Op::DequantizeLinear { .. } = n.op()? else {
                return None;
            };
            if eg[class].data.konst.is_some() {
                return None;
            }
            let ins: Vec<Arc<Tensor>> = n
                .children
                .iter()
                .map(|&c| const_of(eg, c))
                .collect::<Option<_>>()?;
            let refs: Vec<&Tensor> = ins.iter().map(|t| t.as_ref()).collect();
            Some(Build::Const(
                optc_ir::interp::eval_op(op, &refs).ok()?.pop()?,
            ))
        }),
    ]
}

// ---- soundness cases ---------------------------------------------------------------------
//
// The rules change rounding (an activation quantized by multiplying with the reciprocal of
// its scale can land one step away from the division's; integer sums are exact where the
// dequantized f32 ops round), so the cases choose values where that cannot happen: static
// scales are powers of two (the reciprocal is exact), and products stay small.

fn lcg(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f64 / (1u64 << 24) as f64
        })
        .collect()
}

fn i8s(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    let v = lcg(seed, n)
        .iter()
        .map(|u| (u * 200.0 - 100.0) as i8)
        .collect();
    Tensor::new(shape.to_vec(), Data::I8(v)).expect("shape")
}

fn f32s(seed: u64, shape: &[usize], lo: f32, hi: f32) -> Tensor {
    let n = shape.iter().product();
    let v = lcg(seed, n)
        .iter()
        .map(|u| lo + (hi - lo) * *u as f32)
        .collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).expect("shape")
}

fn scalar_u8(z: u8) -> Tensor {
    Tensor::new(vec![], Data::U8(vec![z])).expect("scalar")
}

/// `DynamicQuantizeLinear(x) -> MatMulInteger(y, W, z, 0) -> Cast -> Mul(x_scale * ws)`:
/// returns the graph so far and the product's value.
fn dynamic_graph(seed: u64, per_column: bool) -> (Graph, Value) {
    let (m, k, n) = (
        2 + seed as usize % 3,
        5 + seed as usize % 4,
        3 + seed as usize % 5,
    );
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, m, k]));
    let d = g
        .add_node("dq", Op::DynamicQuantizeLinear, &[x])
        .expect("dql");
    let w = g.add_const("w", i8s(seed, &[k, n]));
    let zero_shape: &[usize] = if per_column { &[n] } else { &[] };
    let wz = g.add_const("wz", Tensor::zeros(DType::I8, zero_shape.to_vec()));
    let mm = g
        .add("mm", Op::MatMulInteger, &[d[0], w, d[2], wz])
        .expect("mmi");
    let c = g
        .add("cast", Op::Cast { to: DType::F32 }, &[mm])
        .expect("cast");
    let ws = if per_column {
        f32s(seed + 1, &[n], 0.005, 0.02)
    } else {
        Tensor::scalar_f32(0.01)
    };
    let ws = g.add_const("ws", ws);
    let sc = g
        .add("scales", Op::Binary(BinaryOp::Mul), &[d[1], ws])
        .expect("mul");
    let y = g
        .add("y", Op::Binary(BinaryOp::Mul), &[c, sc])
        .expect("mul");
    (g, y)
}

/// `DQ(Q(x, s, z), s, z)` of a graph input of type `t`, `s` a power of two.
fn qdq_input(g: &mut Graph, t: TensorType, signed: bool) -> Value {
    let x = g.add_input("x", t);
    let s = g.add_const("s", Tensor::scalar_f32(1.0 / 64.0));
    let z = if signed {
        g.add_const("z", Tensor::new(vec![], Data::I8(vec![-3])).expect("z"))
    } else {
        g.add_const("z", scalar_u8(121))
    };
    let q = g
        .add("q", Op::QuantizeLinear { axis: 0 }, &[x, s, z])
        .expect("q");
    g.add("dq", Op::DequantizeLinear { axis: 0 }, &[q, s, z])
        .expect("dq")
}

/// `DQ(W, ws, 0)` of i8 weights of `shape`, scales along `axis` (or one).
fn dq_weight(g: &mut Graph, seed: u64, shape: &[usize], axis: usize, per_channel: bool) -> Value {
    let w = g.add_const("w", i8s(seed, shape));
    let n = shape[axis];
    let (ws, wz) = if per_channel {
        (
            f32s(seed + 2, &[n], 0.001, 0.01),
            Tensor::zeros(DType::I8, vec![n]),
        )
    } else {
        (Tensor::scalar_f32(0.004), Tensor::zeros(DType::I8, vec![]))
    };
    let ws = g.add_const("ws", ws);
    let wz = g.add_const("wz", wz);
    let a = if per_channel { axis } else { 0 };
    g.add("dqw", Op::DequantizeLinear { axis: a }, &[w, ws, wz])
        .expect("dq w")
}

/// A quantized i32 bias `DQ(b, bs, 0)` of `n` channels.
fn dq_bias(g: &mut Graph, seed: u64, n: usize) -> Value {
    let v = lcg(seed, n)
        .iter()
        .map(|u| (u * 2000.0 - 1000.0) as i32)
        .collect();
    let b = g.add_const("b", Tensor::new(vec![n], Data::I32(v)).expect("b"));
    let bs = g.add_const("bs", f32s(seed + 3, &[n], 1e-4, 1e-3));
    let bz = g.add_const("bz", Tensor::zeros(DType::I32, vec![n]));
    g.add("dqb", Op::DequantizeLinear { axis: 0 }, &[b, bs, bz])
        .expect("dq b")
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            rule: "dynamic-matmul",
            make: |s| {
                let (mut g, y) = dynamic_graph(s, s % 2 == 0);
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "quantized-matmul-bias",
            make: |s| {
                let (mut g, y) = dynamic_graph(s, s % 2 == 1);
                let n = g.value_type(y).expect("typed").shape[2];
                let b = g.add_const("bias", f32s(s + 5, &[n], -1.0, 1.0));
                let ins = if s % 2 == 0 { [b, y] } else { [y, b] };
                let a = g.add("add", Op::Binary(BinaryOp::Add), &ins).expect("add");
                g.add_output("y", a);
                g
            },
        },
        Case {
            rule: "static-conv",
            make: |s| {
                let mut g = Graph::new();
                let group = 1 + s as usize % 2;
                let x = qdq_input(&mut g, TensorType::f32(&[1, 4, 5, 5]), s % 3 == 0);
                let w = dq_weight(&mut g, s, &[6, 4 / group, 3, 3], 0, s % 2 == 0);
                let mut ins = vec![x, w];
                if s % 4 != 1 {
                    ins.push(dq_bias(&mut g, s, 6));
                }
                let window = Window {
                    kernel: vec![3, 3],
                    strides: vec![1 + s as usize % 2, 1],
                    pads: vec![1; 4],
                    dilations: vec![1, 1],
                    ceil_mode: false,
                };
                let y = g
                    .add("conv", Op::Conv { window, group }, &ins)
                    .expect("conv");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "static-gemm",
            make: |s| {
                let mut g = Graph::new();
                let (m, k, n) = (3, 8, 5 + s as usize % 3);
                let tb = s % 2 == 1;
                let x = qdq_input(&mut g, TensorType::f32(&[m, k]), s % 3 == 2);
                let shape = if tb { [n, k] } else { [k, n] };
                let w = dq_weight(&mut g, s, &shape, if tb { 0 } else { 1 }, s % 3 != 0);
                let mut ins = vec![x, w];
                if s != 3 {
                    ins.push(dq_bias(&mut g, s, n));
                }
                let gemm = Op::Gemm {
                    alpha: 1.0,
                    beta: 1.0,
                    trans_a: false,
                    trans_b: tb,
                };
                let y = g.add("gemm", gemm, &ins).expect("gemm");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "static-matmul",
            make: |s| {
                let mut g = Graph::new();
                let (k, n) = (6, 4 + s as usize % 3);
                let x = qdq_input(&mut g, TensorType::f32(&[2, 3, k]), false);
                let w = dq_weight(&mut g, s, &[k, n], 1, s % 2 == 0);
                let y = g.add("mm", Op::MatMul, &[x, w]).expect("matmul");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "fake-quantize",
            make: |s| {
                // Any scale: the rewrite is exact (values around every rounding boundary
                // and beyond the range come from the random inputs).
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[3, 7]));
                let sc = g.add_const("s", Tensor::scalar_f32(0.0173 + s as f32 * 0.01));
                let z = if s % 2 == 0 {
                    g.add_const("z", Tensor::new(vec![], Data::I8(vec![-5])).expect("z"))
                } else {
                    g.add_const("z", scalar_u8(131))
                };
                let q = g
                    .add("q", Op::QuantizeLinear { axis: 0 }, &[x, sc, z])
                    .expect("q");
                let d = g
                    .add("dq", Op::DequantizeLinear { axis: 0 }, &[q, sc, z])
                    .expect("dq");
                let y = g
                    .add("relu", Op::Unary(optc_ir::UnaryOp::Relu), &[d])
                    .expect("relu");
                g.add_output("y", y);
                g
            },
        },
        Case {
            rule: "static-input-unrounded",
            make: |s| {
                // Requantized inputs (u8, and i8: the conv's zero point is 128 higher) into
                // static int8 convs of the same grid, and one of another grid (it stays).
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[1, 4, 5, 5]));
                let window = Window {
                    kernel: vec![3, 3],
                    strides: vec![1, 1],
                    pads: vec![1; 4],
                    dilations: vec![1, 1],
                    ceil_mode: false,
                };
                let conv = Op::QuantizedConv {
                    window,
                    group: 1,
                    activation: ActivationQuantization::Static,
                };
                let scale = 0.0173 + s as f32 * 0.01;
                let w = g.add_const("w", i8s(s, &[3, 4, 3, 3]));
                let ws = g.add_const("ws", f32s(s + 1, &[3], 0.01, 0.02));
                let xs = g.add_const("xs", Tensor::scalar_f32(scale));
                for (i, (fq_scale, zero, signed, conv_zero)) in [
                    (scale, 7.0, false, 7),
                    (scale, -5.0, true, 123),
                    (scale * 1.5, 7.0, false, 7),
                ]
                .into_iter()
                .enumerate()
                {
                    let fq = UnaryOp::FakeQuantize {
                        scale: fq_scale,
                        zero,
                        signed,
                    };
                    let q = g.add(&format!("fq{i}"), Op::Unary(fq), &[x]).expect("fq");
                    let xz = g.add_const(&format!("xz{i}"), scalar_u8(conv_zero));
                    let y = g
                        .add(&format!("conv{i}"), conv.clone(), &[q, w, ws, xs, xz])
                        .expect("conv");
                    g.add_output(&format!("y{i}"), y);
                }
                g
            },
        },
        Case {
            rule: "requantize-on-grid",
            make: |s| {
                // Quantized values through a max pool (padding included), a Relu (negative
                // zero point: values below 0 on the grid) and a flatten, requantized alike.
                let fq = UnaryOp::FakeQuantize {
                    scale: 0.0173 + s as f32 * 0.01,
                    zero: if s % 2 == 0 { -5.0 } else { 131.0 },
                    signed: s % 2 == 0,
                };
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[1, 2, 5, 6]));
                let q = g.add("fq0", Op::Unary(fq.clone()), &[x]).expect("fq");
                let window = Window {
                    kernel: vec![2, 3],
                    strides: vec![2, 1],
                    pads: vec![1, 1, 1, 1],
                    dilations: vec![1, 1],
                    ceil_mode: false,
                };
                let p = g.add("pool", Op::MaxPool { window }, &[q]).expect("pool");
                let r = g.add("relu", Op::Unary(UnaryOp::Relu), &[p]).expect("relu");
                let f = g
                    .add("flat", Op::Reshape { shape: vec![1, 36] }, &[r])
                    .expect("reshape");
                let y = g.add("fq1", Op::Unary(fq.clone()), &[f]).expect("fq");
                g.add_output("y", y);
                // Another grid: it stays.
                let other = UnaryOp::FakeQuantize {
                    scale: 0.031,
                    zero: 7.0,
                    signed: false,
                };
                let y2 = g.add("fq2", Op::Unary(other), &[p]).expect("fq");
                g.add_output("y2", y2);
                // A pool whose first windows hold only padding (-inf): it stays too.
                let window = Window {
                    kernel: vec![2, 2],
                    strides: vec![1, 1],
                    pads: vec![2, 0, 0, 0],
                    dilations: vec![1, 1],
                    ceil_mode: false,
                };
                let p3 = g.add("pool3", Op::MaxPool { window }, &[q]).expect("pool");
                let y3 = g.add("fq3", Op::Unary(fq.clone()), &[p3]).expect("fq");
                g.add_output("y3", y3);
                g
            },
        },
        Case {
            rule: "dequantize-constant",
            make: |s| {
                // Weights with a non-zero zero point: no int8 op takes them, they fold.
                let mut g = Graph::new();
                let x = g.add_input("x", TensorType::f32(&[2, 4]));
                let w = g.add_const("w", i8s(s, &[4, 3]));
                let ws = g.add_const("ws", Tensor::scalar_f32(0.05));
                let wz = g.add_const("wz", Tensor::new(vec![], Data::I8(vec![3])).expect("z"));
                let d = g
                    .add("dq", Op::DequantizeLinear { axis: 0 }, &[w, ws, wz])
                    .expect("dq");
                let y = g.add("mm", Op::MatMul, &[x, d]).expect("matmul");
                g.add_output("y", y);
                g
            },
        },
    ]
}
