//! ONNX recurrent layers `RNN`, `GRU` and `LSTM`, unrolled exactly into existing IR ops for
//! the static sequence length the model is imported with, in X's type (f32, or f64: every
//! input of that type, the constants too, and no fused f32 `LstmCell`).
//!
//! The shape of the unrolled graph, per node:
//! - one `MatMul` computes the input projection of every step and every direction at once:
//!   `X [T*N, I] @ W^T [I, D*G*H] + (Wb + Rb)`, where `G` is the number of gates (RNN 1,
//!   GRU 3, LSTM 4) and `D` the number of directions;
//! - each step of each direction slices its `[N, G*H]` rows out of it, adds the recurrent
//!   `MatMul` of the hidden state (`H_{t-1} @ R^T`), splits the gates, applies the
//!   activations (after `clip`, when given) and the elementwise state updates of the spec;
//! - `Y` concatenates the hidden states of every step (`Y_h` and `Y_c` are the last ones).
//!
//! The reverse direction walks the steps from last to first. A zero initial state (no
//! `initial_h` / `initial_c`) drops the recurrent terms of the first step, which are zero.
//!
//! `sequence_lens` must be a constant. Equal to the sequence length everywhere, it changes
//! nothing. Shorter for some batch entries, it masks: at step `t` the entries with
//! `t >= len` keep their state and get zeros in `Y`. For the reverse direction this starts
//! each sequence at its own last element, as onnxruntime does.
//!
//! Activations (`activations`, case-insensitive) are those of the spec that existing IR ops
//! express exactly: Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, ScaledTanh,
//! HardSigmoid, Elu, Softsign, Softplus. `activation_alpha` / `activation_beta` are consumed
//! in the order of the activations that take them (onnxruntime's reading); the defaults are
//! those of the ONNX ops (LeakyRelu 0.01, HardSigmoid 0.2 and 0.5, Elu 1.0). Affine,
//! ScaledTanh and ThresholdedRelu have no agreed default and need their values given.
//! `input_forget` couples the LSTM forget gate to the input gate as `f = 1 - i`
//! (onnxruntime).

use super::{want_const, Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, SliceDim, Tensor, UnaryOp};
use std::sync::Arc;
use tract_onnx::pb;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Rnn,
    Gru,
    Lstm,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 3,
            Kind::Lstm => 4,
        }
    }

    /// Default activations of one direction (`f`, `g`, `h` in the spec's order).
    fn default_activations(self) -> &'static [&'static str] {
        match self {
            Kind::Rnn => &["Tanh"],
            Kind::Gru => &["Sigmoid", "Tanh"],
            Kind::Lstm => &["Sigmoid", "Tanh", "Tanh"],
        }
    }

    /// The number of ONNX inputs and outputs the op defines.
    fn max_inputs(self) -> usize {
        match self {
            Kind::Lstm => 8,
            _ => 6,
        }
    }

    fn max_outputs(self) -> usize {
        match self {
            Kind::Lstm => 3,
            _ => 2,
        }
    }
}

/// An activation function of the spec, with its parameters.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Activation {
    Relu,
    Tanh,
    Sigmoid,
    Affine { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    ScaledTanh { alpha: f32, beta: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    Elu { alpha: f32 },
    Softsign,
    Softplus,
}

const ACTIVATION_NAMES: &str = "Relu, Tanh, Sigmoid, Affine, LeakyRelu, ThresholdedRelu, \
                                ScaledTanh, HardSigmoid, Elu, Softsign, Softplus";

/// The activations of every direction (`per_direction` each, forward first), with
/// `activation_alpha` / `activation_beta` consumed in order by the activations that take
/// them.
fn activations(a: &Attrs, kind: Kind, directions: usize) -> R<Vec<Activation>> {
    let per_direction = kind.default_activations().len();
    let names: Vec<String> = match a.strings("activations") {
        Some(v) if v.len() == per_direction * directions => v,
        // One direction's list for both directions (onnxruntime repeats it).
        Some(v) if directions == 2 && v.len() == per_direction => {
            v.iter().chain(v.iter()).cloned().collect()
        }
        Some(v) => {
            return Err(format!(
                "attribute 'activations' has {} entries {v:?}; it needs {} ({per_direction} per direction)",
                v.len(),
                per_direction * directions
            ))
        }
        None => (0..directions)
            .flat_map(|_| kind.default_activations().iter().map(|s| s.to_string()))
            .collect(),
    };
    let alphas = a.floats("activation_alpha").unwrap_or_default();
    let betas = a.floats("activation_beta").unwrap_or_default();
    let (mut next_alpha, mut next_beta) = (alphas.iter(), betas.iter());
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        let mut alpha = |default: Option<f32>| -> R<f32> {
            next_alpha.next().copied().or(default).ok_or_else(|| {
                format!(
                    "activation '{name}' needs a value in 'activation_alpha' (it has no agreed default)"
                )
            })
        };
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Activation::Relu,
            "tanh" => Activation::Tanh,
            "sigmoid" => Activation::Sigmoid,
            "leakyrelu" => Activation::LeakyRelu {
                alpha: alpha(Some(0.01))?,
            },
            "thresholdedrelu" => Activation::ThresholdedRelu {
                alpha: alpha(None)?,
            },
            "elu" => Activation::Elu {
                alpha: alpha(Some(1.0))?,
            },
            "softsign" => Activation::Softsign,
            "softplus" => Activation::Softplus,
            lower @ ("affine" | "scaledtanh" | "hardsigmoid") => {
                let default = (lower == "hardsigmoid").then_some((0.2, 0.5));
                let alpha = alpha(default.map(|d| d.0))?;
                let beta = next_beta
                    .next()
                    .copied()
                    .or(default.map(|d| d.1))
                    .ok_or_else(|| {
                        format!(
                            "activation '{name}' needs a value in 'activation_beta' (it has no agreed default)"
                        )
                    })?;
                match lower {
                    "affine" => Activation::Affine { alpha, beta },
                    "scaledtanh" => Activation::ScaledTanh { alpha, beta },
                    _ => Activation::HardSigmoid { alpha, beta },
                }
            }
            _ => {
                return Err(format!(
                    "activation '{name}' is not supported (supported: {ACTIVATION_NAMES})"
                ))
            }
        };
        out.push(act);
    }
    let (extra_alpha, extra_beta) = (next_alpha.count(), next_beta.count());
    if extra_alpha > 0 || extra_beta > 0 {
        return Err(format!(
            "attributes 'activation_alpha' {alphas:?} and 'activation_beta' {betas:?} have \
             {extra_alpha} and {extra_beta} values more than the activations {names:?} take"
        ));
    }
    Ok(out)
}

/// Input `k` of `node` (`None` when absent or given as an empty name).
/// A float input `k` (`what` names it in errors) of shape `shape`, if present: f32 or f64,
/// of type `dtype` when given (X's: the layer computes in X's type).
fn float_input(
    ctx: &Ctx,
    node: &pb::NodeProto,
    k: usize,
    what: &str,
    shape: Option<&[usize]>,
    dtype: Option<DType>,
) -> R<Option<Val>> {
    let Some(v) = ctx.input(node, k) else {
        return Ok(None);
    };
    let t = ctx.ty(&v);
    match dtype {
        Some(d) if t.dtype != d => {
            return Err(format!(
                "input {what} of type {} differs from X's type {d}",
                t.dtype
            ))
        }
        _ if !matches!(t.dtype, DType::F32 | DType::F64) => {
            return Err(format!(
                "input {what} of type {} is not supported (f32 or f64)",
                t.dtype
            ))
        }
        _ => {}
    }
    if let Some(s) = shape {
        if t.shape != s {
            return Err(format!(
                "input {what} has shape {:?}, expected {s:?}",
                t.shape
            ));
        }
    }
    Ok(Some(v))
}

/// Builds the nodes of one recurrent node, all named under its name.
struct Unroll<'a> {
    ctx: &'a mut Ctx,
    name: String,
    /// The element type of X and of every value the layer computes (f32 or f64).
    dtype: DType,
    /// Scalar constants already made, by bits (one constant node each).
    scalars: Vec<(u32, Val)>,
}

impl Unroll<'_> {
    fn op(&mut self, what: &str, op: Op, ins: &[Val]) -> R<Val> {
        let name = format!("{}/{what}", self.name);
        self.ctx.emit1(&name, op, ins, true)
    }

    fn unary(&mut self, what: &str, u: UnaryOp, x: Val) -> R<Val> {
        self.op(what, Op::Unary(u), &[x])
    }

    fn binary(&mut self, what: &str, b: BinaryOp, x: Val, y: Val) -> R<Val> {
        self.op(what, Op::Binary(b), &[x, y])
    }

    /// The constant `v` (an attribute's float, exact in f64 too) in the layer's type.
    fn scalar(&mut self, v: f32) -> Val {
        if let Some((_, c)) = self.scalars.iter().find(|(b, _)| *b == v.to_bits()) {
            return c.clone();
        }
        let t = match self.dtype {
            DType::F64 => Tensor::new(vec![], Data::F64(vec![v as f64])).expect("a scalar"),
            _ => Tensor::scalar_f32(v),
        };
        let c = Val::Const {
            t: Arc::new(t),
            name: format!("{}/scalar", self.name),
        };
        self.scalars.push((v.to_bits(), c.clone()));
        c
    }

    fn shape(&self, v: &Val) -> Vec<usize> {
        self.ctx.ty(v).shape
    }

    fn reshape(&mut self, what: &str, x: Val, shape: Vec<usize>) -> R<Val> {
        if self.shape(&x) == shape {
            return Ok(x);
        }
        self.op(what, Op::Reshape { shape }, &[x])
    }

    /// `x[ranges]`, one `(start, end)` per dim.
    fn slice(&mut self, what: &str, x: Val, ranges: &[(usize, usize)]) -> R<Val> {
        let shape = self.shape(&x);
        if ranges
            .iter()
            .zip(&shape)
            .all(|(&(s, e), &d)| s == 0 && e == d)
        {
            return Ok(x);
        }
        let dims = ranges
            .iter()
            .map(|&(s, e)| SliceDim {
                start: s as i64,
                step: 1,
                len: e - s,
            })
            .collect();
        self.op(what, Op::Slice { dims }, &[x])
    }

    /// Entry `d` of dim 0 of `x`, that dim dropped.
    fn entry(&mut self, what: &str, x: Val, d: usize) -> R<Val> {
        let shape = self.shape(&x);
        let mut ranges: Vec<(usize, usize)> = shape.iter().map(|&n| (0, n)).collect();
        ranges[0] = (d, d + 1);
        let s = self.slice(what, x, &ranges)?;
        self.reshape(&format!("{what}/reshape"), s, shape[1..].to_vec())
    }

    fn split(&mut self, what: &str, x: Val, parts: usize) -> R<Vec<Val>> {
        let shape = self.shape(&x);
        let axis = shape.len() - 1;
        let sizes = vec![shape[axis] / parts; parts];
        let name = format!("{}/{what}", self.name);
        self.ctx.emit(&name, Op::Split { axis, sizes }, &[x], true)
    }

    /// `x + y`, where `None` is zero.
    fn add_maybe(&mut self, what: &str, x: Val, y: Option<Val>) -> R<Val> {
        match y {
            Some(y) => self.binary(what, BinaryOp::Add, x, y),
            None => Ok(x),
        }
    }

    /// `act(clip(x))`.
    fn activate(&mut self, what: &str, act: Activation, clip: Option<f32>, x: Val) -> R<Val> {
        let x = match clip {
            Some(c) => self.unary(
                &format!("{what}/clip"),
                UnaryOp::Clip { min: -c, max: c },
                x,
            )?,
            None => x,
        };
        match act {
            Activation::Relu => self.unary(what, UnaryOp::Relu, x),
            Activation::Tanh => self.unary(what, UnaryOp::Tanh, x),
            Activation::Sigmoid => self.unary(what, UnaryOp::Sigmoid, x),
            Activation::LeakyRelu { alpha } => self.unary(what, UnaryOp::LeakyRelu { alpha }, x),
            Activation::HardSigmoid { alpha, beta } => {
                self.unary(what, UnaryOp::HardSigmoid { alpha, beta }, x)
            }
            Activation::Affine { alpha, beta } => {
                let a = self.scalar(alpha);
                let scaled = self.binary(&format!("{what}/scale"), BinaryOp::Mul, x, a)?;
                let b = self.scalar(beta);
                self.binary(what, BinaryOp::Add, scaled, b)
            }
            Activation::ScaledTanh { alpha, beta } => {
                let b = self.scalar(beta);
                let inner = self.binary(&format!("{what}/scale_in"), BinaryOp::Mul, x, b)?;
                let t = self.unary(&format!("{what}/tanh"), UnaryOp::Tanh, inner)?;
                let a = self.scalar(alpha);
                self.binary(what, BinaryOp::Mul, t, a)
            }
            Activation::ThresholdedRelu { alpha } => {
                // x if x >= alpha else 0 (the spec of the recurrent ops).
                let a = self.scalar(alpha);
                let keep = self.binary(
                    &format!("{what}/keep"),
                    BinaryOp::GreaterOrEqual,
                    x.clone(),
                    a,
                )?;
                let zero = self.scalar(0.0);
                self.op(what, Op::Where, &[keep, x, zero])
            }
            Activation::Elu { alpha } => {
                // x if x >= 0 else alpha * (exp(x) - 1)
                let zero = self.scalar(0.0);
                let negative =
                    self.binary(&format!("{what}/negative"), BinaryOp::Less, x.clone(), zero)?;
                let e = self.unary(&format!("{what}/exp"), UnaryOp::Exp, x.clone())?;
                let one = self.scalar(1.0);
                let em1 = self.binary(&format!("{what}/expm1"), BinaryOp::Sub, e, one)?;
                let a = self.scalar(alpha);
                let low = self.binary(&format!("{what}/low"), BinaryOp::Mul, em1, a)?;
                self.op(what, Op::Where, &[negative, low, x])
            }
            Activation::Softsign => {
                // x / (1 + |x|)
                let abs = self.unary(&format!("{what}/abs"), UnaryOp::Abs, x.clone())?;
                let one = self.scalar(1.0);
                let den = self.binary(&format!("{what}/denominator"), BinaryOp::Add, abs, one)?;
                self.binary(what, BinaryOp::Div, x, den)
            }
            Activation::Softplus => {
                // log(exp(x) + 1)
                let e = self.unary(&format!("{what}/exp"), UnaryOp::Exp, x)?;
                let one = self.scalar(1.0);
                let s = self.binary(&format!("{what}/sum"), BinaryOp::Add, e, one)?;
                self.unary(what, UnaryOp::Log, s)
            }
        }
    }
}

/// Shapes and attributes of one recurrent node, checked.
struct Layer {
    kind: Kind,
    /// Sequence length, batch, input size, hidden size, directions.
    steps: usize,
    batch: usize,
    hidden: usize,
    directions: usize,
    /// Direction 0 runs backwards (direction "reverse").
    reverse_only: bool,
    batch_first: bool,
    clip: Option<f32>,
    activations: Vec<Activation>,
    input_forget: bool,
    linear_before_reset: bool,
    /// Per batch entry, when some sequence is shorter than `steps`.
    lengths: Option<Vec<usize>>,
}

impl Layer {
    fn runs_backwards(&self, d: usize) -> bool {
        d == 1 || self.reverse_only
    }

    /// `mask[b] = step < lengths[b]` as a `[N, 1]` bool constant, or `None` when every
    /// entry is still running.
    fn mask(&self, step: usize) -> R<Option<Tensor>> {
        let Some(lengths) = &self.lengths else {
            return Ok(None);
        };
        let m: Vec<bool> = lengths.iter().map(|&l| step < l).collect();
        if m.iter().all(|&b| b) {
            return Ok(None);
        }
        let t = Tensor::new(vec![self.batch, 1], Data::Bool(m)).map_err(|e| e.msg)?;
        Ok(Some(t))
    }
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let kind = match node.op_type.as_str() {
        "RNN" => Kind::Rnn,
        "GRU" => Kind::Gru,
        "LSTM" => Kind::Lstm,
        other => return Err(format!("{other} is not a recurrent op")),
    };
    if node.input.len() > kind.max_inputs() {
        return Err(format!(
            "has {} inputs, {} takes at most {}",
            node.input.len(),
            node.op_type,
            kind.max_inputs()
        ));
    }
    if node.output.len() > kind.max_outputs() {
        return Err(format!(
            "has {} outputs, {} has at most {}",
            node.output.len(),
            node.op_type,
            kind.max_outputs()
        ));
    }
    let required = |k: usize, what: &str, dtype: Option<DType>| -> R<Val> {
        float_input(ctx, node, k, what, None, dtype)?
            .ok_or_else(|| format!("required input #{k} ({what}) is missing"))
    };
    let x = required(0, "X", None)?;
    let dtype = Some(ctx.ty(&x).dtype);
    let (w, r) = (required(1, "W", dtype)?, required(2, "R", dtype)?);
    let (xt, wt, rt) = (ctx.ty(&x), ctx.ty(&w), ctx.ty(&r));
    for (what, t) in [("X", &xt), ("W", &wt), ("R", &rt)] {
        if t.rank() != 3 {
            return Err(format!("input {what} must have rank 3, got {t}"));
        }
    }
    let batch_first = match a.int_or("layout", 0) {
        0 => false,
        1 => true,
        l => {
            return Err(format!(
                "attribute 'layout' = {l} is not supported (0 or 1)"
            ))
        }
    };
    let direction = a.string("direction").unwrap_or_else(|| "forward".into());
    let (directions, reverse_only) = match direction.as_str() {
        "forward" => (1, false),
        "reverse" => (1, true),
        "bidirectional" => (2, false),
        d => {
            return Err(format!(
                "attribute 'direction' = '{d}' is not supported (forward, reverse or bidirectional)"
            ))
        }
    };
    let clip = match a.float("clip") {
        Some(c) if c >= 0.0 => Some(c),
        Some(c) => return Err(format!("attribute 'clip' = {c} must be >= 0")),
        None => None,
    };
    let input_forget = match (kind, a.int_or("input_forget", 0)) {
        (_, 0) => false,
        (Kind::Lstm, _) => true,
        (_, v) => {
            return Err(format!(
                "attribute 'input_forget' = {v} is an LSTM attribute"
            ))
        }
    };
    let linear_before_reset = match (kind, a.int_or("linear_before_reset", 0)) {
        (_, 0) => false,
        (Kind::Gru, _) => true,
        (_, v) => {
            return Err(format!(
                "attribute 'linear_before_reset' = {v} is a GRU attribute"
            ))
        }
    };
    let (steps, batch) = if batch_first {
        (xt.shape[1], xt.shape[0])
    } else {
        (xt.shape[0], xt.shape[1])
    };
    let inputs = xt.shape[2];
    let hidden = rt.shape[2];
    if steps == 0 || batch == 0 || hidden == 0 {
        return Err(format!(
            "an empty sequence, batch or hidden state (X {xt}, R {rt}) is not supported"
        ));
    }
    if steps > MAX_STEPS {
        return Err(format!(
            "the sequence has {steps} steps (X {xt}); optc unrolls recurrent layers over \
             their steps, up to {MAX_STEPS}"
        ));
    }
    if let Some(h) = a.int("hidden_size") {
        if h != hidden as i64 {
            return Err(format!(
                "attribute 'hidden_size' = {h} disagrees with R {rt} (hidden size {hidden})"
            ));
        }
    }
    let gates = kind.gates();
    let width = gates * hidden;
    if wt.shape != [directions, width, inputs] {
        return Err(format!(
            "input W is {wt}, expected [{directions}, {width}, {inputs}] (direction '{direction}', \
             {gates} gate(s) of hidden size {hidden}, input size {inputs})"
        ));
    }
    if rt.shape != [directions, width, hidden] {
        return Err(format!(
            "input R is {rt}, expected [{directions}, {width}, {hidden}]"
        ));
    }
    let state_shape = if batch_first {
        [batch, directions, hidden]
    } else {
        [directions, batch, hidden]
    };
    let b = float_input(ctx, node, 3, "B", Some(&[directions, 2 * width]), dtype)?;
    let lengths = sequence_lengths(ctx, node, steps, batch)?;
    let initial_h = float_input(ctx, node, 5, "initial_h", Some(&state_shape), dtype)?;
    let (initial_c, peepholes) = if kind == Kind::Lstm {
        (
            float_input(ctx, node, 6, "initial_c", Some(&state_shape), dtype)?,
            float_input(ctx, node, 7, "P", Some(&[directions, 3 * hidden]), dtype)?,
        )
    } else {
        (None, None)
    };
    let layer = Layer {
        kind,
        steps,
        batch,
        hidden,
        directions,
        reverse_only,
        batch_first,
        clip,
        activations: activations(&a, kind, directions)?,
        input_forget,
        linear_before_reset,
        lengths,
    };
    let wants = |k: usize| node.output.get(k).is_some_and(|o| !o.is_empty());
    let wanted = [wants(0), wants(1), wants(2)];
    let mut u = Unroll {
        ctx,
        name: name.to_string(),
        dtype: xt.dtype,
        scalars: vec![],
    };
    let states = States {
        h: initial_h,
        c: initial_c,
    };
    unroll(&mut u, &layer, x, w, r, b, states, peepholes, wanted)
}

/// The longest sequence a recurrent layer is unrolled over.
const MAX_STEPS: usize = 1 << 14;

/// `sequence_lens` as lengths per batch entry, `None` when absent or all full length.
fn sequence_lengths(
    ctx: &Ctx,
    node: &pb::NodeProto,
    steps: usize,
    batch: usize,
) -> R<Option<Vec<usize>>> {
    let t = match ctx.input(node, 4) {
        None => return Ok(None),
        Some(Val::Const { t, .. }) => t,
        Some(v @ Val::Dyn(_)) => {
            want_const(&node.input[4]);
            ctx.want(&v);
            return Err(format!(
                "input sequence_lens ('{}') must be a constant, but it is computed at run time",
                node.input[4]
            ));
        }
    };
    if !matches!(t.dtype(), DType::I32 | DType::I64) || t.shape() != [batch] {
        return Err(format!(
            "input sequence_lens must be i32[{batch}], got {}",
            t.ty()
        ));
    }
    let v = t.to_i64_vec();
    if let Some(l) = v.iter().find(|&&l| l < 1 || l > steps as i64) {
        return Err(format!(
            "input sequence_lens {v:?} holds {l}; lengths must be between 1 and the sequence length {steps}"
        ));
    }
    if v.iter().all(|&l| l == steps as i64) {
        return Ok(None);
    }
    Ok(Some(v.into_iter().map(|l| l as usize).collect()))
}

/// Initial states in the op's layout (`None`: zeros).
struct States {
    h: Option<Val>,
    c: Option<Val>,
}

/// Per-direction weights, ready for the steps.
struct Direction {
    /// `R^T [H, G*H]` (GRU without linear_before_reset: the z and r columns only).
    recurrent: Val,
    /// GRU without linear_before_reset: `Rh^T [H, H]`.
    recurrent_h: Option<Val>,
    /// GRU with linear_before_reset: `Rbh [H]`.
    recurrent_bias_h: Option<Val>,
    /// LSTM peepholes `Pi`, `Po`, `Pf` (`[H]` each).
    peepholes: Option<[Val; 3]>,
}

#[allow(clippy::too_many_arguments)]
fn unroll(
    u: &mut Unroll,
    layer: &Layer,
    x: Val,
    w: Val,
    r: Val,
    b: Option<Val>,
    initial: States,
    peepholes: Option<Val>,
    wanted: [bool; 3],
) -> R<Vec<Option<Val>>> {
    let (steps, batch, hidden, directions) =
        (layer.steps, layer.batch, layer.hidden, layer.directions);
    let width = layer.kind.gates() * hidden;
    let gru_reset_after = layer.kind == Kind::Gru && layer.linear_before_reset;

    // Everything in layout 0: X [T, N, I], states [D, N, H].
    let to_layout0 = |u: &mut Unroll, what: &str, v: Option<Val>| -> R<Option<Val>> {
        match v {
            Some(v) if layer.batch_first => Ok(Some(u.op(
                what,
                Op::Transpose {
                    perm: vec![1, 0, 2],
                },
                &[v],
            )?)),
            v => Ok(v),
        }
    };
    let x = to_layout0(u, "x_sequence_first", Some(x))?.ok_or("X is missing")?;
    let initial_h = to_layout0(u, "initial_h_sequence_first", initial.h)?;
    let initial_c = to_layout0(u, "initial_c_sequence_first", initial.c)?;
    let inputs = u.shape(&x)[2];

    // The input projection of every step and direction: [T*N, I] @ [I, D*G*H] + bias.
    let x2 = u.reshape("x_rows", x, vec![steps * batch, inputs])?;
    let w2 = u.reshape("w_rows", w, vec![directions * width, inputs])?;
    let wt = u.op("w_transposed", Op::Transpose { perm: vec![1, 0] }, &[w2])?;
    let mut projection = u.op("input_projection", Op::MatMul, &[x2, wt])?;
    // Recurrent biases folded into the projection; GRU with linear_before_reset keeps Rbh
    // apart (it is scaled by the reset gate).
    let mut bias_h: Option<Val> = None;
    if let Some(b) = b {
        let wb = u.slice("w_bias", b.clone(), &[(0, directions), (0, width)])?;
        let mut rb = u.slice("r_bias", b, &[(0, directions), (width, 2 * width)])?;
        if gru_reset_after {
            let h = u.slice(
                "r_bias_h",
                rb.clone(),
                &[(0, directions), (2 * hidden, width)],
            )?;
            bias_h = Some(h);
            let zr = u.slice("r_bias_zr", rb, &[(0, directions), (0, 2 * hidden)])?;
            let zeros = Val::Const {
                t: Arc::new(Tensor::zeros(u.dtype, vec![directions, hidden])),
                name: format!("{}/zeros", u.name),
            };
            rb = u.op("r_bias_input", Op::Concat { axis: 1 }, &[zr, zeros])?;
        }
        let bias = u.binary("bias", BinaryOp::Add, wb, rb)?;
        let bias = u.reshape("bias_row", bias, vec![directions * width])?;
        projection = u.binary("input_projection_biased", BinaryOp::Add, projection, bias)?;
    }

    let mut ys = vec![];
    let mut last_h = vec![];
    let mut last_c = vec![];
    for d in 0..directions {
        let dir = if layer.runs_backwards(d) {
            "reverse"
        } else {
            "forward"
        };
        let weights = direction_weights(u, layer, d, dir, &r, bias_h.as_ref(), &peepholes)?;
        let mut h = match &initial_h {
            Some(v) => Some(u.entry(&format!("{dir}/initial_h"), v.clone(), d)?),
            None => None,
        };
        let mut c = match &initial_c {
            Some(v) => Some(u.entry(&format!("{dir}/initial_c"), v.clone(), d)?),
            None => None,
        };
        let mut outputs: Vec<Option<Val>> = vec![None; steps];
        let order: Vec<usize> = if layer.runs_backwards(d) {
            (0..steps).rev().collect()
        } else {
            (0..steps).collect()
        };
        for t in order {
            let at = format!("{dir}/t{t}");
            let xp = u.slice(
                &format!("{at}/input"),
                projection.clone(),
                &[(t * batch, (t + 1) * batch), (d * width, (d + 1) * width)],
            )?;
            let activations = &layer.activations[d * layer.kind.default_activations().len()..];
            let (new_h, new_c) = match layer.kind {
                Kind::Rnn => (
                    rnn_step(u, layer, &at, activations, &weights, xp, h.clone())?,
                    None,
                ),
                Kind::Gru => (
                    gru_step(u, layer, &at, activations, &weights, xp, h.clone())?,
                    None,
                ),
                Kind::Lstm => {
                    let (nh, nc) = lstm_step(
                        u,
                        layer,
                        &at,
                        activations,
                        &weights,
                        xp,
                        h.clone(),
                        c.clone(),
                    )?;
                    (nh, Some(nc))
                }
            };
            match layer.mask(t)? {
                None => {
                    outputs[t] = Some(new_h.clone());
                    h = Some(new_h);
                    c = new_c;
                }
                Some(mask) => {
                    // Past a sequence's end: the state holds and Y is zero.
                    let mask = Val::Const {
                        t: Arc::new(mask),
                        name: format!("{}/{at}/mask", u.name),
                    };
                    let zero = u.scalar(0.0);
                    let y = u.op(
                        &format!("{at}/y_masked"),
                        Op::Where,
                        &[mask.clone(), new_h.clone(), zero.clone()],
                    )?;
                    outputs[t] = Some(y);
                    let held_h = h.unwrap_or_else(|| zero.clone());
                    h = Some(u.op(
                        &format!("{at}/h_masked"),
                        Op::Where,
                        &[mask.clone(), new_h, held_h],
                    )?);
                    if let Some(nc) = new_c {
                        let held_c = c.unwrap_or(zero);
                        c = Some(u.op(
                            &format!("{at}/c_masked"),
                            Op::Where,
                            &[mask, nc, held_c],
                        )?);
                    }
                }
            }
        }
        let h = h.ok_or("no step ran")?;
        last_h.push(u.reshape(&format!("{dir}/y_h"), h, vec![1, batch, hidden])?);
        if let Some(c) = c {
            last_c.push(u.reshape(&format!("{dir}/y_c"), c, vec![1, batch, hidden])?);
        }
        if wanted[0] {
            let outputs: Vec<Val> = outputs
                .into_iter()
                .map(|o| o.ok_or_else(|| "a step is missing".to_string()))
                .collect::<R<_>>()?;
            let all = concat(u, &format!("{dir}/y_rows"), outputs, 0)?;
            ys.push(u.reshape(&format!("{dir}/y"), all, vec![steps, 1, batch, hidden])?);
        }
    }

    let mut result = vec![None; layer.kind.max_outputs()];
    if wanted[0] {
        let y = concat(u, "y", ys, 1)?;
        result[0] = Some(if layer.batch_first {
            u.op(
                "y_batch_first",
                Op::Transpose {
                    perm: vec![2, 0, 1, 3],
                },
                &[y],
            )?
        } else {
            y
        });
    }
    let state_out = |u: &mut Unroll, what: &str, parts: Vec<Val>| -> R<Val> {
        let s = concat(u, what, parts, 0)?;
        if layer.batch_first {
            u.op(
                &format!("{what}_batch_first"),
                Op::Transpose {
                    perm: vec![1, 0, 2],
                },
                &[s],
            )
        } else {
            Ok(s)
        }
    };
    if wanted[1] {
        result[1] = Some(state_out(u, "y_h", last_h)?);
    }
    if layer.kind == Kind::Lstm && wanted[2] {
        result[2] = Some(state_out(u, "y_c", last_c)?);
    }
    Ok(result)
}

/// Concatenation along `axis` (the value itself when there is one).
fn concat(u: &mut Unroll, what: &str, mut parts: Vec<Val>, axis: usize) -> R<Val> {
    if parts.len() == 1 {
        return Ok(parts.remove(0));
    }
    u.op(what, Op::Concat { axis }, &parts)
}

/// The weights of direction `d`, transposed for `h @ R^T`.
fn direction_weights(
    u: &mut Unroll,
    layer: &Layer,
    d: usize,
    dir: &str,
    r: &Val,
    bias_h: Option<&Val>,
    peepholes: &Option<Val>,
) -> R<Direction> {
    let hidden = layer.hidden;
    let transposed = |u: &mut Unroll, what: &str, v: Val| -> R<Val> {
        u.op(what, Op::Transpose { perm: vec![1, 0] }, &[v])
    };
    let rd = u.entry(&format!("{dir}/r"), r.clone(), d)?;
    let (recurrent, recurrent_h) = if layer.kind == Kind::Gru && !layer.linear_before_reset {
        let zr = u.slice(
            &format!("{dir}/r_zr"),
            rd.clone(),
            &[(0, 2 * hidden), (0, hidden)],
        )?;
        let h = u.slice(
            &format!("{dir}/r_h"),
            rd,
            &[(2 * hidden, 3 * hidden), (0, hidden)],
        )?;
        (
            transposed(u, &format!("{dir}/r_zr_transposed"), zr)?,
            Some(transposed(u, &format!("{dir}/r_h_transposed"), h)?),
        )
    } else {
        (transposed(u, &format!("{dir}/r_transposed"), rd)?, None)
    };
    let recurrent_bias_h = match bias_h {
        Some(b) => Some(u.entry(&format!("{dir}/r_bias_h"), b.clone(), d)?),
        None => None,
    };
    let peepholes = match peepholes {
        Some(p) => {
            let pd = u.entry(&format!("{dir}/p"), p.clone(), d)?;
            let parts = u.split(&format!("{dir}/p_iof"), pd, 3)?;
            let [i, o, f]: [Val; 3] = parts.try_into().map_err(|_| "bad peephole split")?;
            Some([i, o, f])
        }
        None => None,
    };
    Ok(Direction {
        recurrent,
        recurrent_h,
        recurrent_bias_h,
        peepholes,
    })
}

/// `h @ R^T` (`None` when `h` is the zero initial state).
fn recurrent(u: &mut Unroll, what: &str, h: Option<Val>, rt: &Val) -> R<Option<Val>> {
    match h {
        Some(h) => Ok(Some(u.op(what, Op::MatMul, &[h, rt.clone()])?)),
        None => Ok(None),
    }
}

/// `Ht = f(Xt*Wi^T + Ht-1*Ri^T + Wbi + Rbi)`.
fn rnn_step(
    u: &mut Unroll,
    layer: &Layer,
    at: &str,
    acts: &[Activation],
    weights: &Direction,
    xp: Val,
    h: Option<Val>,
) -> R<Val> {
    let hr = recurrent(u, &format!("{at}/recurrent"), h, &weights.recurrent)?;
    let pre = u.add_maybe(&format!("{at}/preactivation"), xp, hr)?;
    u.activate(&format!("{at}/h"), acts[0], layer.clip, pre)
}

/// The GRU step of the spec (gates z, r, h; activations f, g).
fn gru_step(
    u: &mut Unroll,
    layer: &Layer,
    at: &str,
    acts: &[Activation],
    weights: &Direction,
    xp: Val,
    h: Option<Val>,
) -> R<Val> {
    let (f, g) = (acts[0], acts[1]);
    let parts = u.split(&format!("{at}/input_gates"), xp, 3)?;
    let [xz, xr, xh]: [Val; 3] = parts.try_into().map_err(|_| "bad gate split")?;
    let (z, candidate_pre) = if layer.linear_before_reset {
        // ht = g(Xt*Wh^T + rt (.) (Ht-1*Rh^T + Rbh) + Wbh)
        let (hz, hr, hh) =
            match recurrent(u, &format!("{at}/recurrent"), h.clone(), &weights.recurrent)? {
                Some(all) => {
                    let parts = u.split(&format!("{at}/recurrent_gates"), all, 3)?;
                    let [z, r, hh]: [Val; 3] = parts.try_into().map_err(|_| "bad gate split")?;
                    (Some(z), Some(r), Some(hh))
                }
                None => (None, None, None),
            };
        let z = u.add_maybe(&format!("{at}/z_preactivation"), xz, hz)?;
        let r = u.add_maybe(&format!("{at}/r_preactivation"), xr, hr)?;
        let z = u.activate(&format!("{at}/z"), f, layer.clip, z)?;
        let r = u.activate(&format!("{at}/r"), f, layer.clip, r)?;
        let hh = match (hh, weights.recurrent_bias_h.clone()) {
            (Some(hh), bias) => Some(u.add_maybe(&format!("{at}/recurrent_h_biased"), hh, bias)?),
            (None, bias) => bias,
        };
        let reset = match hh {
            Some(hh) => Some(u.binary(&format!("{at}/reset"), BinaryOp::Mul, r, hh)?),
            None => None,
        };
        (z, u.add_maybe(&format!("{at}/h_preactivation"), xh, reset)?)
    } else {
        // ht = g(Xt*Wh^T + (rt (.) Ht-1)*Rh^T + Rbh + Wbh)
        let (hz, hr) =
            match recurrent(u, &format!("{at}/recurrent"), h.clone(), &weights.recurrent)? {
                Some(all) => {
                    let parts = u.split(&format!("{at}/recurrent_gates"), all, 2)?;
                    let [z, r]: [Val; 2] = parts.try_into().map_err(|_| "bad gate split")?;
                    (Some(z), Some(r))
                }
                None => (None, None),
            };
        let z = u.add_maybe(&format!("{at}/z_preactivation"), xz, hz)?;
        let r = u.add_maybe(&format!("{at}/r_preactivation"), xr, hr)?;
        let z = u.activate(&format!("{at}/z"), f, layer.clip, z)?;
        let recurrent_h = match &h {
            Some(h) => {
                let r = u.activate(&format!("{at}/r"), f, layer.clip, r)?;
                let reset = u.binary(&format!("{at}/reset"), BinaryOp::Mul, r, h.clone())?;
                let rh = weights.recurrent_h.as_ref().ok_or("Rh is missing")?;
                Some(u.op(
                    &format!("{at}/recurrent_h"),
                    Op::MatMul,
                    &[reset, rh.clone()],
                )?)
            }
            // rt (.) 0 = 0: the reset gate does not matter.
            None => None,
        };
        (
            z,
            u.add_maybe(&format!("{at}/h_preactivation"), xh, recurrent_h)?,
        )
    };
    let candidate = u.activate(&format!("{at}/candidate"), g, layer.clip, candidate_pre)?;
    // Ht = (1 - zt) (.) ht + zt (.) Ht-1
    let one = u.scalar(1.0);
    let keep_new = u.binary(&format!("{at}/update"), BinaryOp::Sub, one, z.clone())?;
    let new = u.binary(
        &format!("{at}/h_new_part"),
        BinaryOp::Mul,
        keep_new,
        candidate,
    )?;
    match h {
        Some(h) => {
            let old = u.binary(&format!("{at}/h_old_part"), BinaryOp::Mul, z, h)?;
            u.binary(&format!("{at}/h"), BinaryOp::Add, new, old)
        }
        None => Ok(new),
    }
}

/// The LSTM step of the spec (gates i, o, f, c; activations f, g, h). Returns `(Ht, Ct)`.
#[allow(clippy::too_many_arguments)]
fn lstm_step(
    u: &mut Unroll,
    layer: &Layer,
    at: &str,
    acts: &[Activation],
    weights: &Direction,
    xp: Val,
    h: Option<Val>,
    c: Option<Val>,
) -> R<(Val, Val)> {
    let (f, g, hact) = (acts[0], acts[1], acts[2]);
    let hr = recurrent(u, &format!("{at}/recurrent"), h, &weights.recurrent)?;
    let pre = u.add_maybe(&format!("{at}/preactivation"), xp, hr)?;
    // The common case in one node: f32, default activations, no clip, peepholes or coupling.
    if u.dtype == DType::F32
        && (f, g, hact) == (Activation::Sigmoid, Activation::Tanh, Activation::Tanh)
        && layer.clip.is_none()
        && weights.peepholes.is_none()
        && !layer.input_forget
    {
        let mut ins = vec![pre];
        ins.extend(c);
        let name = format!("{}/{at}/cell", u.name);
        let out = u.ctx.emit(&name, Op::LstmCell, &ins, true)?;
        let [h_new, c_new]: [Val; 2] = out.try_into().map_err(|_| "bad lstm_cell outputs")?;
        return Ok((h_new, c_new));
    }
    let parts = u.split(&format!("{at}/gates"), pre, 4)?;
    let [i, o, fg, cg]: [Val; 4] = parts.try_into().map_err(|_| "bad gate split")?;
    // P (.) C, `None` when either is absent (zero).
    let peep = |u: &mut Unroll, what: &str, k: usize, c: &Option<Val>| -> R<Option<Val>> {
        match (&weights.peepholes, c) {
            (Some(p), Some(c)) => Ok(Some(u.binary(
                what,
                BinaryOp::Mul,
                p[k].clone(),
                c.clone(),
            )?)),
            _ => Ok(None),
        }
    };
    // it = f(Xt*Wi^T + Ht-1*Ri^T + Pi (.) Ct-1 + Wbi + Rbi)
    let pi = peep(u, &format!("{at}/i_peephole"), 0, &c)?;
    let i = u.add_maybe(&format!("{at}/i_preactivation"), i, pi)?;
    let i = u.activate(&format!("{at}/i"), f, layer.clip, i)?;
    // ft = f(Xt*Wf^T + Ht-1*Rf^T + Pf (.) Ct-1 + Wbf + Rbf), or 1 - it with input_forget
    let forget = if layer.input_forget {
        let one = u.scalar(1.0);
        u.binary(&format!("{at}/f"), BinaryOp::Sub, one, i.clone())?
    } else {
        let pf = peep(u, &format!("{at}/f_peephole"), 2, &c)?;
        let fg = u.add_maybe(&format!("{at}/f_preactivation"), fg, pf)?;
        u.activate(&format!("{at}/f"), f, layer.clip, fg)?
    };
    // ct = g(Xt*Wc^T + Ht-1*Rc^T + Wbc + Rbc); Ct = ft (.) Ct-1 + it (.) ct
    let cg = u.activate(&format!("{at}/c_candidate"), g, layer.clip, cg)?;
    let new = u.binary(&format!("{at}/c_new_part"), BinaryOp::Mul, i, cg)?;
    let c_new = match &c {
        Some(c) => {
            let old = u.binary(
                &format!("{at}/c_old_part"),
                BinaryOp::Mul,
                forget,
                c.clone(),
            )?;
            u.binary(&format!("{at}/c"), BinaryOp::Add, old, new)?
        }
        None => new,
    };
    // ot = f(Xt*Wo^T + Ht-1*Ro^T + Po (.) Ct + Wbo + Rbo); Ht = ot (.) h(Ct)
    let po = peep(u, &format!("{at}/o_peephole"), 1, &Some(c_new.clone()))?;
    let o = u.add_maybe(&format!("{at}/o_preactivation"), o, po)?;
    let o = u.activate(&format!("{at}/o"), f, layer.clip, o)?;
    let hc = u.activate(&format!("{at}/c_activated"), hact, None, c_new.clone())?;
    let h_new = u.binary(&format!("{at}/h"), BinaryOp::Mul, o, hc)?;
    Ok((h_new, c_new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::attribute_proto::AttributeType;

    fn node(attrs: Vec<pb::AttributeProto>) -> pb::NodeProto {
        pb::NodeProto {
            attribute: attrs,
            ..Default::default()
        }
    }

    fn strings(name: &str, v: &[&str]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Strings as i32,
            strings: v.iter().map(|s| s.as_bytes().to_vec()).collect(),
            ..Default::default()
        }
    }

    fn floats(name: &str, v: &[f32]) -> pb::AttributeProto {
        pb::AttributeProto {
            name: name.into(),
            r#type: AttributeType::Floats as i32,
            floats: v.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn alphas_go_to_the_activations_that_take_them() {
        let n = node(vec![
            strings("activations", &["sigmoid", "LeakyRelu", "Affine"]),
            floats("activation_alpha", &[0.3, 2.0]),
            floats("activation_beta", &[-1.0]),
        ]);
        let acts = activations(&Attrs { node: &n }, Kind::Lstm, 1).unwrap();
        assert_eq!(
            acts,
            vec![
                Activation::Sigmoid,
                Activation::LeakyRelu { alpha: 0.3 },
                Activation::Affine {
                    alpha: 2.0,
                    beta: -1.0
                }
            ]
        );
        // One direction's list serves both; defaults fill in.
        let n = node(vec![strings("activations", &["HardSigmoid", "Elu"])]);
        let acts = activations(&Attrs { node: &n }, Kind::Gru, 2).unwrap();
        assert_eq!(acts.len(), 4);
        assert_eq!(
            acts[2],
            Activation::HardSigmoid {
                alpha: 0.2,
                beta: 0.5
            }
        );
        assert_eq!(acts[3], Activation::Elu { alpha: 1.0 });
    }

    #[test]
    fn bad_activation_lists_are_refused() {
        let cases: Vec<(Vec<pb::AttributeProto>, &str)> = vec![
            (
                vec![strings("activations", &["Gelu"])],
                "activation 'Gelu' is not supported",
            ),
            (
                vec![strings("activations", &["Tanh", "Tanh"])],
                "needs 1 (1 per direction)",
            ),
            (
                vec![
                    strings("activations", &["Affine"]),
                    floats("activation_alpha", &[1.0]),
                ],
                "needs a value in 'activation_beta'",
            ),
            (
                vec![strings("activations", &["ThresholdedRelu"])],
                "needs a value in 'activation_alpha'",
            ),
            (
                vec![
                    strings("activations", &["Tanh"]),
                    floats("activation_alpha", &[1.0]),
                ],
                "1 and 0 values more than the activations",
            ),
        ];
        for (attrs, want) in cases {
            let n = node(attrs);
            let e = activations(&Attrs { node: &n }, Kind::Rnn, 1).unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn masks_mark_the_running_entries() {
        let layer = Layer {
            kind: Kind::Rnn,
            steps: 3,
            batch: 2,
            hidden: 1,
            directions: 1,
            reverse_only: false,
            batch_first: false,
            clip: None,
            activations: vec![Activation::Tanh],
            input_forget: false,
            linear_before_reset: false,
            lengths: Some(vec![3, 1]),
        };
        assert!(layer.mask(0).unwrap().is_none());
        let m = layer.mask(1).unwrap().unwrap();
        assert_eq!(m.shape(), [2, 1]);
        assert_eq!(m.data(), &Data::Bool(vec![true, false]));
    }
}
