//! Operators: one enum, each op's shape/dtype inference next to its definition.
//!
//! The IR is normalized: the importer resolves ONNX attribute defaults, negative axes,
//! `auto_pad`, opset differences and shape-typed inputs into the static attributes below,
//! so every op here is fully described by its attributes and its input types.

use crate::linear_quantization;
use crate::quantized::{self, ActivationQuantization};
use crate::{bail, checked_numel, DType, Result};
use std::fmt;

/// Dtype and static shape of a value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TensorType { dtype, shape }
    }
    pub fn f32(shape: &[usize]) -> Self {
        TensorType::new(DType::F32, shape.to_vec())
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn size_bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[", self.dtype)?;
        for (i, d) in self.shape.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// Index of a constant tensor in [`crate::Graph::consts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConstId(pub u32);

/// Elementwise ops of one input. Output type = input type, except `IsNaN` (f32 → bool).
#[derive(Clone, Debug, PartialEq)]
pub enum UnaryOp {
    Identity,
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    /// `min(max(x, min), max)`; bounds are `-inf`/`+inf` when absent.
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    /// `max(0, min(1, alpha * x + beta))`
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// `x * max(0, min(1, x / 6 + 0.5))`
    HardSwish,
    /// `x * sigmoid(x)` (SiLU, Swish), the sigmoid rounded to f32 first: exactly
    /// `Mul(x, Sigmoid(x))`, which the optimizer turns into it.
    Silu,
    /// GELU (erf form): `(x * (1 + erf(x * r))) * 0.5` with `r` = 1/sqrt(2) in f32, each step
    /// rounded to f32: exactly the chain `Mul(Mul(x, Add(Erf(Mul(x, r)), 1)), 0.5)` of
    /// BERT exports (their `Erf(Div(x, sqrt 2))` with the divide as a multiply), which the
    /// optimizer turns into it ([`GELU_ERF_SCALE`]).
    Gelu,
    /// GELU (tanh form): `(x * 0.5) * (1 + tanh((x + x^3 * c) * k))` with `c` = 0.044715
    /// and `k` = sqrt(2/pi) in f32, each step rounded to f32 (`x^3` as `Pow(x, 3)` rounds
    /// it): exactly the chain of GPT-2 exports and of ONNX's `Gelu(approximate="tanh")`,
    /// which the optimizer turns into it ([`GELU_TANH_CUBE`], [`GELU_TANH_SCALE`]).
    GeluTanh,
    Tanh,
    Erf,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    /// Round down to an integer (f32).
    Floor,
    /// Round up to an integer (f32).
    Ceil,
    /// Round to the nearest integer, ties to even (f32).
    Round,
    /// The trigonometric and hyperbolic functions of f32 (libm's `sinf`, ..., `atanhf`).
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Asinh,
    Acosh,
    Atanh,
    /// bool → bool
    Not,
    /// Bitwise not of integers.
    BitNot,
    /// f32 → bool
    IsNaN,
    /// `isnan(x) ? value : x` (f32).
    NanTo {
        value: f32,
    },
    /// `DequantizeLinear(QuantizeLinear(x, scale, zero), scale, zero)` on f32, per tensor:
    /// `f32(clamp(round_half_even(x / scale) + zero, lo, hi) - zero) * scale` with `[lo, hi]`
    /// the u8 range, or i8's when `signed` (NaN gives `lo`). `zero` is an integer in range.
    FakeQuantize {
        scale: f32,
        zero: f32,
        signed: bool,
    },
    /// f32 to u8 as a quantized contraction quantizes its activation (step 2 of
    /// [`crate::quantized`]): `clamp(round_half_even(x * (1 / scale)) + zero, 0, 255)`, the
    /// reciprocal rounded to f32 once (NaN gives 0). `zero` is an integer in 0..=255. The
    /// last step of a fused int8 conv whose consumers take its output already quantized
    /// (codegen's int8 hand-off); the only step that changes a fused node's type.
    QuantizeActivation {
        scale: f32,
        zero: f32,
    },
    /// f32 rounded to the nearest binary16 value (bfloat16 when `bfloat`), ties to even:
    /// how optc keeps ONNX `float16` / `bfloat16` values exact (see [`crate::narrow`]).
    RoundToHalf {
        bfloat: bool,
    },
    /// An integer (i64 or i32) wrapped to `bits` bits, two's complement when `signed`: how
    /// optc keeps ONNX `int16` / `uint16` / `uint32` values exact (see [`crate::narrow`]).
    Wrap {
        bits: usize,
        signed: bool,
    },
}

/// Elementwise ops of two inputs with numpy broadcasting. Both inputs have the same dtype
/// (except `Pow`, whose exponent may be any numeric dtype). Comparisons give `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division; integer division truncates toward zero.
    Div,
    Pow,
    Max,
    Min,
    Equal,
    Greater,
    Less,
    GreaterOrEqual,
    LessOrEqual,
    And,
    Or,
    /// Bitwise and of integers (two's complement).
    BitAnd,
    /// Bitwise or of integers.
    BitOr,
    /// Bitwise exclusive or of integers.
    BitXor,
    /// `x << (y mod width)` of integers, wrapping in the element width.
    ShiftLeft,
    /// `x >> (y mod width)` of integers: arithmetic for signed types, logical for unsigned.
    ShiftRight,
    /// C's `fmod` of f32: `x - trunc(x / y) * y` computed exactly, the sign of `x` (NaN for a
    /// zero `y`).
    FMod,
}

impl BinaryOp {
    /// The integer-only bitwise ops.
    pub fn is_bitwise(self) -> bool {
        matches!(
            self,
            BinaryOp::BitAnd
                | BinaryOp::BitOr
                | BinaryOp::BitXor
                | BinaryOp::ShiftLeft
                | BinaryOp::ShiftRight
        )
    }
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Equal
                | BinaryOp::Greater
                | BinaryOp::Less
                | BinaryOp::GreaterOrEqual
                | BinaryOp::LessOrEqual
        )
    }
    pub fn is_logical(self) -> bool {
        matches!(self, BinaryOp::And | BinaryOp::Or)
    }
}

/// Reduction kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceKind {
    Sum,
    Mean,
    Max,
    /// `sqrt(sum(x^2))`
    L2,
    /// Like `Max`, the other way (NaN ignored unless every cell is NaN).
    Min,
    /// Product (`1` over an empty axis).
    Prod,
}

impl ReduceKind {
    /// The op's name (`reduce_sum`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Mean => "reduce_mean",
            ReduceKind::Max => "reduce_max",
            ReduceKind::L2 => "reduce_l2",
            ReduceKind::Min => "reduce_min",
            ReduceKind::Prod => "reduce_prod",
        }
    }
}

/// How `ScatterElements` / `ScatterNd` combine an update with the element it lands on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScatterReduction {
    /// The update replaces the element (of duplicate indices, the last update wins).
    Replace,
    Add,
    Mul,
    /// numpy `maximum` (NaN propagates).
    Max,
    /// numpy `minimum` (NaN propagates).
    Min,
}

// ONNX's `reduction` attribute values.
named_values!(ScatterReduction {
    Replace => "none",
    Add => "add",
    Mul => "mul",
    Max => "max",
    Min => "min",
});

/// Padding modes of `Pad`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant,
    Reflect,
    Edge,
    /// Circular: index `i` past either end reads `i mod n` (opset 19).
    Wrap,
}

// ONNX's `mode` attribute values, and the text format's.
named_values!(PadMode {
    Constant => "constant",
    Reflect => "reflect",
    Edge => "edge",
    Wrap => "wrap",
});

impl PadMode {
    /// Along one dim of extent `n` padded by `begin` in front: the input index that output
    /// index `i` reads, or `None` where the constant fills in.
    pub fn source_index(self, i: i64, begin: i64, n: i64) -> Option<i64> {
        let mut p = i - begin;
        if p >= 0 && p < n {
            return Some(p);
        }
        match self {
            PadMode::Constant => None,
            PadMode::Edge => Some(p.clamp(0, n - 1)),
            PadMode::Wrap => Some(p.rem_euclid(n)),
            PadMode::Reflect if n == 1 => Some(0),
            PadMode::Reflect => {
                while p < 0 || p >= n {
                    if p < 0 {
                        p = -p;
                    }
                    if p >= n {
                        p = 2 * (n - 1) - p;
                    }
                }
                Some(p)
            }
        }
    }
}

/// Spatial attributes shared by Conv and the pools. `nsp` = number of spatial dims.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Kernel extent per spatial dim (`nsp` entries).
    pub kernel: Vec<usize>,
    /// `nsp` entries.
    pub strides: Vec<usize>,
    /// `2 * nsp` entries: all begins, then all ends (ONNX order).
    pub pads: Vec<usize>,
    /// `nsp` entries.
    pub dilations: Vec<usize>,
    /// Output extent rounds up instead of down (pools only; always false for Conv).
    pub ceil_mode: bool,
}

impl Window {
    pub fn nsp(&self) -> usize {
        self.kernel.len()
    }

    /// Output extent of spatial dim `i` for input extent `input`.
    pub fn out_dim(&self, i: usize, input: usize) -> Result<usize> {
        let nsp = self.nsp();
        let padded = input + self.pads[i] + self.pads[nsp + i];
        let eff = self.dilations[i] * (self.kernel[i].max(1) - 1) + 1;
        if self.strides[i] == 0 || self.dilations[i] == 0 {
            bail!("stride and dilation must be >= 1");
        }
        if padded < eff {
            bail!(
                "window of extent {} (kernel {}, dilation {}) does not fit padded input extent {}",
                eff,
                self.kernel[i],
                self.dilations[i],
                padded
            );
        }
        let span = padded - eff;
        let mut out = span / self.strides[i] + 1;
        if self.ceil_mode && !span.is_multiple_of(self.strides[i]) {
            // The last window must start inside the input or the begin padding.
            let last_start = out * self.strides[i];
            if last_start < input + self.pads[i] {
                out += 1;
            }
        }
        Ok(out)
    }

    pub(crate) fn check(&self, what: &str) -> Result<()> {
        let n = self.nsp();
        if self.strides.len() != n || self.dilations.len() != n || self.pads.len() != 2 * n {
            bail!("{what}: kernel, strides, dilations and pads disagree on the number of spatial dims");
        }
        if self.kernel.contains(&0) {
            bail!("{what}: kernel extents must be >= 1");
        }
        Ok(())
    }
}

/// One input dim of a `Slice`: output element `i` reads input index `start + i * step`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SliceDim {
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

impl SliceDim {
    /// The whole of a dim of `len` elements, in order.
    pub fn whole(len: usize) -> SliceDim {
        SliceDim {
            start: 0,
            step: 1,
            len,
        }
    }

    /// A slice of a tensor of `shape` along `axis` only: there `len` elements from `start`,
    /// `step` apart; every other dim whole.
    pub fn along(shape: &[usize], axis: usize, start: i64, step: i64, len: usize) -> Vec<SliceDim> {
        let mut dims: Vec<SliceDim> = shape.iter().map(|&n| SliceDim::whole(n)).collect();
        dims[axis] = SliceDim { start, step, len };
        dims
    }
}

/// GELU's erf argument scale, 1/sqrt(2) rounded to f32 (what BERT exports multiply by once
/// their `x / sqrt(2)` is a multiply: the reciprocal of `sqrt(2)` in f32 rounds to it too).
pub const GELU_ERF_SCALE: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// The tanh GELU's cube coefficient, 0.044715 in f32.
pub const GELU_TANH_CUBE: f32 = 0.044_715;

/// The tanh GELU's scale, sqrt(2/pi) rounded to f32 (0x3F4C422A; computed in f32,
/// `sqrt(2 / pi)` would be one ulp below).
pub const GELU_TANH_SCALE: f32 = 0.797_884_6;

/// One step of a fused elementwise tail (see [`Op::Fused`]).
#[derive(Clone, Debug, PartialEq)]
pub enum FusedStep {
    /// `acc = u(acc)`.
    Unary(UnaryOp),
    /// `acc = acc op in[input]`, or `in[input] op acc` when `swap`; `input` is an input
    /// port of the fused node, and that input broadcasts to the output's shape.
    Binary {
        op: BinaryOp,
        input: usize,
        swap: bool,
    },
}

/// What an [`Op::Guard`] that fails says: the interpreter's error and the status message of
/// generated code.
pub const UNCOMPILED_BRANCH: &str =
    "the If branch taken could not be compiled for the model's input shapes";

/// What an [`Op::Guard`] of a run's length says when the length is outside the range the
/// model was compiled for.
pub const LENGTH_OUT_OF_RANGE: &str =
    "the run's length is outside the range the model was compiled for";

/// An operator. Inputs are positional (edge `dst_port`), outputs too (`src_port`).
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Graph input number `index`; its type is the node's output type.
    Input {
        index: usize,
    },
    /// A constant from the graph's constant table.
    Constant {
        id: ConstId,
    },
    Unary(UnaryOp),
    Binary(BinaryOp),
    /// `cond ? x : y` with broadcasting of all three; cond is bool.
    Where,
    /// One step of an LSTM's gates with the default activations: inputs `gates`
    /// f32[N, 4H] (the pre-activations of the input, output, forget and cell gates, in
    /// ONNX's order) and the previous cell state `c` f32[N, H] (absent: zero); outputs the
    /// new hidden state `h` and cell state `c`, f32[N, H] each:
    /// `c' = sigmoid(f) c + sigmoid(i) tanh(g)`, `h' = sigmoid(o) tanh(c')`, each operation
    /// rounded to f32 as the unfused ops would.
    LstmCell,
    /// `x` unchanged when the one-element bool `cond` is `expect`; otherwise the run fails
    /// with an error. Inputs `(cond, x)`. Guards the branch kept of an `If` whose other
    /// branch could not be compiled for the model's shapes, or with `length` the run's
    /// length of an object compiled for a range of lengths (`cond`: inside the range).
    Guard {
        expect: bool,
        length: bool,
    },
    Cast {
        to: DType,
    },
    /// Each element's bits read as `to`, a type of the same width (ONNX `BitCast`: f32 and
    /// i32, f64 and i64, i8 and u8).
    Bitcast {
        to: DType,
    },
    /// numpy `matmul`: batched, broadcasting batch dims; rank-1 operands are promoted.
    MatMul,
    /// `alpha * op(A) @ op(B) + beta * C`; A and B rank 2, optional C broadcast to `[M, N]`.
    Gemm {
        alpha: f32,
        beta: f32,
        trans_a: bool,
        trans_b: bool,
    },
    /// Inputs `x [N, C, *sp]`, `w [M, C/group, *k]`, optional `b [M]`.
    Conv {
        window: Window,
        group: usize,
    },
    /// Inference batch norm over dim 1; inputs x, scale, bias, mean, var.
    BatchNorm {
        epsilon: f32,
    },
    /// Input `[N, C, *sp]`; padding never wins the max.
    MaxPool {
        window: Window,
    },
    /// Input `[N, C, *sp]`. The divisor counts padding when `count_include_pad`, but never
    /// the extra cells a `ceil_mode` window hangs past the end padding.
    AveragePool {
        window: Window,
        count_include_pad: bool,
    },
    /// Reduce over `axes` (sorted, unique, non-empty).
    Reduce {
        kind: ReduceKind,
        axes: Vec<usize>,
        keepdims: bool,
    },
    /// Softmax along one axis.
    Softmax {
        axis: usize,
    },
    /// Normalize over dims `axis..`; inputs x, scale, optional bias (broadcast to `shape[axis..]`).
    LayerNorm {
        axis: usize,
        epsilon: f32,
    },
    /// Same data, new shape (covers ONNX Reshape, Flatten, Squeeze, Unsqueeze).
    Reshape {
        shape: Vec<usize>,
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// Variadic concatenation along `axis`.
    Concat {
        axis: usize,
    },
    /// One output per entry of `sizes`.
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    /// One entry per input dim.
    Slice {
        dims: Vec<SliceDim>,
    },
    /// `pads`: `2 * rank` entries, begins then ends; negative values crop.
    Pad {
        pads: Vec<i64>,
        mode: PadMode,
        value: f32,
    },
    /// Inputs data, indices (i64 or i32, negative counts from the end).
    Gather {
        axis: usize,
    },
    /// ONNX `ArgMax` (`largest`) / `ArgMin` along `axis`: the i64 index of the first extreme
    /// (the last when `select_last_index`); NaN counts as the extreme.
    Arg {
        largest: bool,
        axis: usize,
        keepdims: bool,
        select_last_index: bool,
    },
    /// Running sums (ONNX CumSum), or products with `product` (CumProd), along `axis`;
    /// `exclusive` leaves the element itself out, `reverse` runs from the end.
    Cumulative {
        product: bool,
        axis: usize,
        exclusive: bool,
        reverse: bool,
    },
    /// The `k` largest (smallest) elements along `axis`, in order, and their i64 indices:
    /// two outputs. Equal elements keep index order; NaN is greater than every number.
    TopK {
        axis: usize,
        k: usize,
        largest: bool,
    },
    /// Inputs data, indices (i64 or i32, negative counts from the end, the data's rank);
    /// `out[i] = data[i with i[axis] replaced by indices[i]]`.
    GatherElements {
        axis: usize,
    },
    /// Inputs data, indices `[b..., m..., q]` (i64 or i32): ONNX `GatherND`.
    GatherNd {
        batch_dims: usize,
    },
    /// Inputs data, indices, updates (indices and updates of one shape, the data's rank):
    /// a copy of data where `out[i with i[axis] replaced by indices[i]] (op)= updates[i]`,
    /// in index order.
    ScatterElements {
        axis: usize,
        reduction: ScatterReduction,
    },
    /// Inputs data, indices `[m..., q]`, updates `[m..., data.shape[q..]...]`: ONNX
    /// `ScatterND`, in index order.
    ScatterNd {
        reduction: ScatterReduction,
    },
    /// Broadcast to `broadcast(input.shape, shape)`.
    Expand {
        shape: Vec<usize>,
    },
    /// `x [..., M, K] @ w [K, N]` in int8 with f32 in and out: see [`crate::quantized`] for
    /// the inputs and the exact semantics.
    QuantizedMatMul {
        activation: ActivationQuantization,
    },
    /// A conv in int8 with f32 in and out: see [`crate::quantized`].
    QuantizedConv {
        window: Window,
        group: usize,
        activation: ActivationQuantization,
    },
    /// ONNX `QuantizeLinear`: f32 to u8/i8 with a scale and zero point per tensor or per
    /// index of `axis`. See [`crate::linear_quantization`] for this op and the four below.
    QuantizeLinear {
        axis: usize,
    },
    /// ONNX `DequantizeLinear`: u8/i8/i32 to f32, `(x - zero) * scale`.
    DequantizeLinear {
        axis: usize,
    },
    /// ONNX `DynamicQuantizeLinear`: three outputs, `y` (u8), its scale and zero point.
    DynamicQuantizeLinear,
    /// ONNX `MatMulInteger`: `(a - a_zero) @ (b - b_zero)` in i32, numpy batching.
    MatMulInteger,
    /// ONNX `ConvInteger`: a conv of `(x - x_zero)` and `(w - w_zero)` in i32.
    ConvInteger {
        window: Window,
        group: usize,
    },
    /// `base` on the first `base_inputs` inputs, then `steps` applied elementwise to its
    /// result in order, without intermediate tensors: epilogues of Conv/Gemm/MatMul (bias,
    /// activation, residual add) and chains of elementwise ops. The base must have one f32
    /// output; steps keep its type (no comparisons), except a last `QuantizeActivation` (the
    /// node's output is then u8); step inputs broadcast to it.
    Fused {
        base: Box<Op>,
        base_inputs: usize,
        steps: Vec<FusedStep>,
    },
    /// Two ops as one node, without the tensor between them: `first` on the node's first
    /// `first_inputs` inputs, then `second` on that result (as its input 0) and the node's
    /// other inputs. Codegen pairs an expansion 1x1 conv with the depthwise conv that alone
    /// reads it, so a group of expanded channels at a time stays in cache (optc-codegen's
    /// `x64::pairs`); rewrites never make one.
    Pair {
        first: Box<Op>,
        first_inputs: usize,
        second: Box<Op>,
    },
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            bail!("shapes {:?} and {:?} do not broadcast", a, b);
        };
    }
    Ok(out)
}

/// Output shape of numpy `matmul` of `a` and `b` (rank-1 operands promoted, batch dims
/// broadcast); `what` names the op in errors.
pub(crate) fn matmul_shape(what: &str, a: &TensorType, b: &TensorType) -> Result<Vec<usize>> {
    if a.rank() == 0 || b.rank() == 0 {
        bail!("{what} does not take scalars");
    }
    let mut sa = a.shape.clone();
    let mut sb = b.shape.clone();
    let (pa, pb) = (sa.len() == 1, sb.len() == 1);
    if pa {
        sa.insert(0, 1);
    }
    if pb {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let (k2, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
    if k != k2 {
        bail!(
            "{what} inner dims differ: {:?} @ {:?} ({} vs {})",
            a.shape,
            b.shape,
            k,
            k2
        );
    }
    let mut s = broadcast_shapes(&sa[..sa.len() - 2], &sb[..sb.len() - 2])?;
    if !pa {
        s.push(m);
    }
    if !pb {
        s.push(n);
    }
    Ok(s)
}

/// Output shape of a conv of `x [N, C, *sp]` with `w [M, C/group, *k]` (the window's and
/// the group's rules); `what` names the op in errors.
pub(crate) fn conv_shape(
    what: &str,
    window: &Window,
    group: usize,
    x: &TensorType,
    w: &TensorType,
) -> Result<Vec<usize>> {
    window.check(what)?;
    if window.ceil_mode {
        bail!("{what} has no ceil_mode");
    }
    let nsp = window.nsp();
    if x.rank() != nsp + 2 || w.rank() != nsp + 2 {
        bail!(
            "{what} with {} spatial dims needs rank-{} input and weight, got {:?} and {:?}",
            nsp,
            nsp + 2,
            x.shape,
            w.shape
        );
    }
    let (c, m) = (x.shape[1], w.shape[0]);
    if group == 0 || c % group != 0 || m % group != 0 || w.shape[1] * group != c {
        bail!(
            "{what}: input has {} channels, weight {:?}, group {} do not agree",
            c,
            w.shape,
            group
        );
    }
    if w.shape[2..] != window.kernel[..] {
        bail!(
            "{what}: weight {:?} does not match kernel {:?}",
            w.shape,
            window.kernel
        );
    }
    let mut s = vec![x.shape[0], m];
    for i in 0..nsp {
        s.push(window.out_dim(i, x.shape[i + 2])?);
    }
    Ok(s)
}

/// Indices of a gather or scatter must be i64 or i32.
fn index_dtype(what: &str, i: &TensorType) -> Result<()> {
    if !matches!(i.dtype, DType::I64 | DType::I32) {
        bail!("{what} indices must be i64 or i32, got {}", i.dtype);
    }
    Ok(())
}

/// Indices of `GatherElements` / `ScatterElements`: the data's rank, no longer than the data
/// along every other axis.
fn same_rank_indices(what: &str, axis: usize, d: &TensorType, i: &TensorType) -> Result<()> {
    if axis >= d.rank() || i.rank() != d.rank() {
        bail!("{what}: axis {axis} with data {d} and indices {i} of another rank");
    }
    for k in 0..d.rank() {
        if k != axis && i.shape[k] > d.shape[k] {
            bail!("{what}: indices {i} are larger than data {d} along axis {k}");
        }
    }
    Ok(())
}

/// The depth `q` (last dim) of `GatherND` / `ScatterND` indices after `batch` batch dims.
fn nd_depth(what: &str, batch: usize, d: &TensorType, i: &TensorType) -> Result<usize> {
    if i.rank() == 0 || batch >= i.rank() || batch >= d.rank().max(1) {
        bail!("{what}: indices {i} and data {d} do not fit {batch} batch dims");
    }
    let q = i.shape[i.rank() - 1];
    if q == 0 || batch + q > d.rank() || i.shape[..batch] != d.shape[..batch] {
        bail!("{what}: indices {i} do not index data {d} after {batch} batch dims");
    }
    Ok(q)
}

/// Bool data only takes the plain scatter.
fn scatter_dtype(what: &str, r: ScatterReduction, d: &TensorType) -> Result<()> {
    if d.dtype == DType::Bool && r != ScatterReduction::Replace {
        bail!("{what}: reduction {} does not take bool", r.name());
    }
    Ok(())
}

impl Op {
    /// The op under a fused node's steps; any other op itself.
    pub fn base(&self) -> &Op {
        match self {
            Op::Fused { base, .. } => base,
            op => op,
        }
    }

    /// A fused node's base op, how many of its inputs the base reads and its steps; any
    /// other op (a node of `inputs` inputs) as its own base over all of them, no steps.
    pub fn fused_parts(&self, inputs: usize) -> (&Op, usize, &[FusedStep]) {
        match self {
            Op::Fused {
                base,
                base_inputs,
                steps,
            } => (base, *base_inputs, steps),
            op => (op, inputs, &[]),
        }
    }

    /// Number of outputs.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            Op::DynamicQuantizeLinear => 3,
            Op::TopK { .. } => 2,
            _ => 1,
        }
    }

    /// Output types from input types. `Input` and `Constant` are typed by the graph.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let (lo, hi) = self.arity();
        if inputs.len() < lo || inputs.len() > hi {
            bail!(
                "{} takes {} inputs, got {}",
                self.name(),
                if lo == hi {
                    lo.to_string()
                } else if hi == usize::MAX {
                    format!("at least {lo}")
                } else {
                    format!("{lo} to {hi}")
                },
                inputs.len()
            );
        }
        let out = self.infer_inner(inputs)?;
        for t in &out {
            checked_numel(&t.shape)?;
            if t.numel().checked_mul(t.dtype.size()).is_none() {
                bail!("output shape {:?} is too large", t.shape);
            }
        }
        Ok(out)
    }

    fn infer_inner(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>> {
        let one = |t: TensorType| Ok(vec![t]);
        let x = inputs.first().copied();
        match self {
            Op::Input { .. } | Op::Constant { .. } => {
                bail!("{} is typed by the graph", self.name())
            }
            Op::Unary(u) => {
                let x = x.unwrap();
                match u {
                    UnaryOp::Not => {
                        if x.dtype != DType::Bool {
                            bail!("not needs bool, got {}", x.dtype);
                        }
                    }
                    UnaryOp::IsNaN => {
                        if x.dtype != DType::F32 {
                            bail!("is_nan needs f32, got {}", x.dtype);
                        }
                        return one(TensorType::new(DType::Bool, x.shape.clone()));
                    }
                    UnaryOp::Identity | UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Relu => {
                        if x.dtype == DType::Bool {
                            bail!("{} does not take bool", self.name());
                        }
                    }
                    UnaryOp::Clip { .. } => {
                        if x.dtype == DType::Bool {
                            bail!("clip does not take bool");
                        }
                    }
                    UnaryOp::BitNot => {
                        if !x.dtype.is_int() {
                            bail!("bit_not needs integers, got {}", x.dtype);
                        }
                    }
                    UnaryOp::Wrap { bits, .. } => {
                        if !matches!(x.dtype, DType::I64 | DType::I32) {
                            bail!("wrap needs i64 or i32, got {}", x.dtype);
                        }
                        if !(1..=63).contains(bits) {
                            bail!("wrap: bits must be in 1..=63, got {bits}");
                        }
                    }
                    UnaryOp::FakeQuantize {
                        scale,
                        zero,
                        signed,
                    } => {
                        let (lo, hi) = crate::linear_quantization::fake_quantize_bounds(*signed);
                        let (lo, hi) = (lo as f32, hi as f32);
                        if !(*scale > 0.0 && scale.is_finite()) {
                            bail!(
                                "fake_quantize: the scale must be positive and finite, got {scale}"
                            );
                        }
                        if !(zero.fract() == 0.0 && (lo..=hi).contains(zero)) {
                            bail!("fake_quantize: the zero point {zero} is not an integer in {lo}..={hi}");
                        }
                        if x.dtype != DType::F32 {
                            bail!("fake_quantize needs f32, got {}", x.dtype);
                        }
                    }
                    UnaryOp::QuantizeActivation { scale, zero } => {
                        if !(*scale > 0.0 && scale.is_finite()) {
                            bail!("quantize_activation: the scale must be positive and finite, got {scale}");
                        }
                        if !(zero.fract() == 0.0 && (0.0..=255.0).contains(zero)) {
                            bail!("quantize_activation: the zero point {zero} is not an integer in 0..=255");
                        }
                        if x.dtype != DType::F32 {
                            bail!("quantize_activation needs f32, got {}", x.dtype);
                        }
                        return one(TensorType::new(DType::U8, x.shape.clone()));
                    }
                    // Defined by f32 rounding steps (Silu, Gelu) or for f32 only.
                    UnaryOp::Silu
                    | UnaryOp::Gelu
                    | UnaryOp::GeluTanh
                    | UnaryOp::RoundToHalf { .. }
                    | UnaryOp::NanTo { .. } => {
                        if x.dtype != DType::F32 {
                            bail!("{} needs f32, got {}", self.name(), x.dtype);
                        }
                    }
                    _ => {
                        if !x.dtype.is_float() {
                            bail!("{} needs f32 or f64, got {}", self.name(), x.dtype);
                        }
                    }
                }
                one(x.clone())
            }
            Op::Binary(b) => {
                let (a, c) = (inputs[0], inputs[1]);
                if *b != BinaryOp::Pow && a.dtype != c.dtype {
                    bail!(
                        "{} needs equal dtypes, got {} and {}",
                        self.name(),
                        a.dtype,
                        c.dtype
                    );
                }
                if b.is_logical() && a.dtype != DType::Bool {
                    bail!("{} needs bool, got {}", self.name(), a.dtype);
                }
                if b.is_bitwise() && !a.dtype.is_int() {
                    bail!("{} needs integers, got {}", self.name(), a.dtype);
                }
                if *b == BinaryOp::FMod && !a.dtype.is_float() {
                    bail!("fmod needs f32 or f64, got {}", a.dtype);
                }
                if !b.is_logical()
                    && (a.dtype == DType::Bool || c.dtype == DType::Bool)
                    && *b != BinaryOp::Equal
                {
                    bail!("{} does not take bool", self.name());
                }
                let shape = broadcast_shapes(&a.shape, &c.shape)?;
                let dtype = if b.is_comparison() {
                    DType::Bool
                } else {
                    a.dtype
                };
                one(TensorType::new(dtype, shape))
            }
            Op::Where => {
                let (c, a, b) = (inputs[0], inputs[1], inputs[2]);
                if c.dtype != DType::Bool {
                    bail!("where needs a bool condition, got {}", c.dtype);
                }
                if a.dtype != b.dtype {
                    bail!("where needs equal dtypes, got {} and {}", a.dtype, b.dtype);
                }
                let s = broadcast_shapes(&broadcast_shapes(&c.shape, &a.shape)?, &b.shape)?;
                one(TensorType::new(a.dtype, s))
            }
            Op::Cast { to } => one(TensorType::new(*to, x.unwrap().shape.clone())),
            Op::Bitcast { to } => {
                let x = x.unwrap();
                if x.dtype.size() != to.size() || x.dtype == DType::Bool || *to == DType::Bool {
                    bail!("bitcast of {x} to {to}: the types must be numbers of one width");
                }
                one(TensorType::new(*to, x.shape.clone()))
            }
            Op::LstmCell => {
                let g = inputs[0];
                if g.dtype != DType::F32 || g.rank() != 2 || !g.shape[1].is_multiple_of(4) {
                    bail!("lstm_cell needs f32 gates [N, 4H], got {g}");
                }
                let state = TensorType::new(DType::F32, vec![g.shape[0], g.shape[1] / 4]);
                if let Some(c) = inputs.get(1) {
                    if **c != state {
                        bail!("lstm_cell needs a cell state {state} for gates {g}, got {c}");
                    }
                }
                Ok(vec![state.clone(), state])
            }
            Op::Guard { .. } => {
                let c = inputs[0];
                if c.dtype != DType::Bool || c.numel() != 1 {
                    bail!("guard needs a one-element bool condition, got {c}");
                }
                one(inputs[1].clone())
            }
            Op::MatMul => {
                let (a, b) = (inputs[0], inputs[1]);
                if !a.dtype.is_float() || a.dtype != b.dtype {
                    bail!(
                        "matmul needs f32 or f64 (both alike), got {} and {}",
                        a.dtype,
                        b.dtype
                    );
                }
                one(TensorType::new(a.dtype, matmul_shape("matmul", a, b)?))
            }
            Op::Gemm {
                trans_a, trans_b, ..
            } => {
                let (a, b) = (inputs[0], inputs[1]);
                if a.rank() != 2 || b.rank() != 2 {
                    bail!(
                        "gemm needs rank-2 A and B, got {:?} and {:?}",
                        a.shape,
                        b.shape
                    );
                }
                if a.dtype != DType::F32 || b.dtype != DType::F32 {
                    bail!("gemm needs f32");
                }
                let (m, k) = if *trans_a {
                    (a.shape[1], a.shape[0])
                } else {
                    (a.shape[0], a.shape[1])
                };
                let (k2, n) = if *trans_b {
                    (b.shape[1], b.shape[0])
                } else {
                    (b.shape[0], b.shape[1])
                };
                if k != k2 {
                    bail!("gemm inner dims differ: {} vs {}", k, k2);
                }
                if let Some(c) = inputs.get(2) {
                    if c.dtype != DType::F32 {
                        bail!("gemm needs f32 C");
                    }
                    let s = broadcast_shapes(&c.shape, &[m, n])?;
                    if s != [m, n] {
                        bail!(
                            "gemm C of shape {:?} does not broadcast to [{m}, {n}]",
                            c.shape
                        );
                    }
                }
                one(TensorType::f32(&[m, n]))
            }
            Op::QuantizedMatMul { activation } => {
                one(quantized::infer_matmul(*activation, inputs)?)
            }
            Op::QuantizedConv {
                window,
                group,
                activation,
            } => one(quantized::infer_conv(window, *group, *activation, inputs)?),
            Op::Conv { window, group } => {
                let (x, w) = (inputs[0], inputs[1]);
                if !matches!(x.dtype, DType::F32 | DType::F64) || w.dtype != x.dtype {
                    bail!(
                        "conv needs f32 or f64 (both alike), got {} and {}",
                        x.dtype,
                        w.dtype
                    );
                }
                let s = conv_shape("conv", window, *group, x, w)?;
                if let Some(b) = inputs.get(2) {
                    if b.shape != [w.shape[0]] || b.dtype != x.dtype {
                        bail!("conv bias must be {}[{}], got {}", x.dtype, w.shape[0], b);
                    }
                }
                one(TensorType::new(x.dtype, s))
            }
            Op::QuantizeLinear { axis } => one(linear_quantization::infer_quantize(*axis, inputs)?),
            Op::DequantizeLinear { axis } => {
                one(linear_quantization::infer_dequantize(*axis, inputs)?)
            }
            Op::DynamicQuantizeLinear => linear_quantization::infer_dynamic(inputs[0]),
            Op::MatMulInteger => one(linear_quantization::infer_matmul_integer(inputs)?),
            Op::ConvInteger { window, group } => one(linear_quantization::infer_conv_integer(
                window, *group, inputs,
            )?),
            Op::BatchNorm { .. } => {
                let x = x.unwrap();
                if x.rank() < 2 || x.dtype != DType::F32 {
                    bail!("batch_norm needs an f32 input of rank >= 2, got {}", x);
                }
                for p in &inputs[1..] {
                    if p.shape != [x.shape[1]] || p.dtype != DType::F32 {
                        bail!(
                            "batch_norm parameters must be f32[{}], got {}",
                            x.shape[1],
                            p
                        );
                    }
                }
                one(x.clone())
            }
            Op::MaxPool { window } | Op::AveragePool { window, .. } => {
                window.check(self.name())?;
                let x = x.unwrap();
                let nsp = window.nsp();
                if x.rank() != nsp + 2 || !matches!(x.dtype, DType::F32 | DType::F64) {
                    bail!(
                        "{} with {} spatial dims needs f32 or f64 of rank {}, got {}",
                        self.name(),
                        nsp,
                        nsp + 2,
                        x
                    );
                }
                let mut s = x.shape[..2].to_vec();
                for i in 0..nsp {
                    s.push(window.out_dim(i, x.shape[i + 2])?);
                }
                one(TensorType::new(x.dtype, s))
            }
            Op::Reduce {
                kind,
                axes,
                keepdims,
            } => {
                let x = x.unwrap();
                if axes.is_empty()
                    || axes.windows(2).any(|w| w[0] >= w[1])
                    || axes.iter().any(|&a| a >= x.rank())
                {
                    bail!(
                        "reduce axes {:?} must be sorted, unique and below rank {}",
                        axes,
                        x.rank()
                    );
                }
                if (x.dtype == DType::Bool && !matches!(kind, ReduceKind::Max | ReduceKind::Min))
                    || (*kind == ReduceKind::L2 && !x.dtype.is_float())
                {
                    bail!("{} does not take {}", self.name(), x.dtype);
                }
                let mut s = vec![];
                for (i, &d) in x.shape.iter().enumerate() {
                    if axes.contains(&i) {
                        if *keepdims {
                            s.push(1);
                        }
                    } else {
                        s.push(d);
                    }
                }
                one(TensorType::new(x.dtype, s))
            }
            Op::Softmax { axis } => {
                let x = x.unwrap();
                if *axis >= x.rank() || !x.dtype.is_float() {
                    bail!(
                        "softmax axis {} needs an f32 or f64 input of higher rank, got {}",
                        axis,
                        x
                    );
                }
                one(x.clone())
            }
            Op::LayerNorm { axis, .. } => {
                let x = x.unwrap();
                if *axis >= x.rank() || x.dtype != DType::F32 {
                    bail!(
                        "layer_norm axis {} needs an f32 input of higher rank, got {}",
                        axis,
                        x
                    );
                }
                let norm = &x.shape[*axis..];
                for p in &inputs[1..] {
                    let s = broadcast_shapes(&p.shape, norm)?;
                    if s != norm || p.dtype != DType::F32 {
                        bail!(
                            "layer_norm parameter {} does not broadcast to {:?}",
                            p,
                            norm
                        );
                    }
                }
                one(x.clone())
            }
            Op::Reshape { shape } => {
                let x = x.unwrap();
                if checked_numel(shape)? != x.numel() {
                    bail!(
                        "cannot reshape {:?} ({} elements) to {:?}",
                        x.shape,
                        x.numel(),
                        shape
                    );
                }
                one(TensorType::new(x.dtype, shape.clone()))
            }
            Op::Transpose { perm } => {
                let x = x.unwrap();
                let mut seen = vec![false; x.rank()];
                if perm.len() != x.rank() {
                    bail!("transpose perm {:?} does not match rank {}", perm, x.rank());
                }
                for &p in perm {
                    if p >= x.rank() || seen[p] {
                        bail!("transpose perm {:?} is not a permutation", perm);
                    }
                    seen[p] = true;
                }
                one(TensorType::new(
                    x.dtype,
                    perm.iter().map(|&p| x.shape[p]).collect(),
                ))
            }
            Op::Concat { axis } => {
                let x = x.unwrap();
                if *axis >= x.rank() {
                    bail!("concat axis {} out of range for rank {}", axis, x.rank());
                }
                let mut s = x.shape.clone();
                for t in &inputs[1..] {
                    if t.dtype != x.dtype || t.rank() != x.rank() {
                        bail!("concat inputs {} and {} disagree", x, t);
                    }
                    for i in 0..x.rank() {
                        if i != *axis && t.shape[i] != x.shape[i] {
                            bail!("concat inputs {} and {} differ outside axis {}", x, t, axis);
                        }
                    }
                    s[*axis] += t.shape[*axis];
                }
                one(TensorType::new(x.dtype, s))
            }
            Op::Split { axis, sizes } => {
                let x = x.unwrap();
                if *axis >= x.rank()
                    || sizes.iter().sum::<usize>() != x.shape[*axis]
                    || sizes.is_empty()
                {
                    bail!(
                        "split sizes {:?} along axis {} do not cover {}",
                        sizes,
                        axis,
                        x
                    );
                }
                Ok(sizes
                    .iter()
                    .map(|&n| {
                        let mut s = x.shape.clone();
                        s[*axis] = n;
                        TensorType::new(x.dtype, s)
                    })
                    .collect())
            }
            Op::Slice { dims } => {
                let x = x.unwrap();
                if dims.len() != x.rank() {
                    bail!("slice has {} dims, input {}", dims.len(), x);
                }
                for (d, &n) in dims.iter().zip(&x.shape) {
                    if d.len > 0 {
                        let last = d.start + (d.len as i64 - 1) * d.step;
                        if d.step == 0
                            || d.start < 0
                            || d.start >= n as i64
                            || last < 0
                            || last >= n as i64
                        {
                            bail!("slice {:?} is out of bounds for extent {}", d, n);
                        }
                    }
                }
                one(TensorType::new(
                    x.dtype,
                    dims.iter().map(|d| d.len).collect(),
                ))
            }
            Op::Pad { pads, mode, .. } => {
                let x = x.unwrap();
                let r = x.rank();
                if pads.len() != 2 * r {
                    bail!("pad needs {} pads for {}, got {}", 2 * r, x, pads.len());
                }
                let mut s = vec![];
                for i in 0..r {
                    let n = x.shape[i] as i64 + pads[i] + pads[r + i];
                    if n < 0 {
                        bail!("pads {:?} crop more than dim {} of {}", pads, i, x);
                    }
                    if *mode == PadMode::Reflect
                        && (pads[i] >= x.shape[i] as i64 || pads[r + i] >= x.shape[i] as i64)
                        && (pads[i] > 0 || pads[r + i] > 0)
                    {
                        bail!(
                            "reflect pads {:?} must be smaller than dim {} of {}",
                            pads,
                            i,
                            x
                        );
                    }
                    if matches!(mode, PadMode::Edge | PadMode::Wrap) && x.shape[i] == 0 && n > 0 {
                        bail!("{mode:?} padding of an empty dim");
                    }
                    s.push(n as usize);
                }
                one(TensorType::new(x.dtype, s))
            }
            Op::Gather { axis } => {
                let (d, i) = (inputs[0], inputs[1]);
                if *axis >= d.rank() {
                    bail!("gather axis {} out of range for {}", axis, d);
                }
                if !matches!(i.dtype, DType::I64 | DType::I32) {
                    bail!("gather indices must be i64 or i32, got {}", i.dtype);
                }
                let mut s = d.shape[..*axis].to_vec();
                s.extend_from_slice(&i.shape);
                s.extend_from_slice(&d.shape[axis + 1..]);
                one(TensorType::new(d.dtype, s))
            }
            Op::Arg { axis, keepdims, .. } => {
                let x = x.unwrap();
                if *axis >= x.rank() || x.dtype == DType::Bool {
                    bail!(
                        "{} axis {} needs a numeric input of higher rank, got {}",
                        self.name(),
                        axis,
                        x
                    );
                }
                if x.shape[*axis] == 0 {
                    bail!("{} over an empty axis", self.name());
                }
                let mut s = x.shape.clone();
                if *keepdims {
                    s[*axis] = 1;
                } else {
                    s.remove(*axis);
                }
                one(TensorType::new(DType::I64, s))
            }
            Op::Cumulative { axis, .. } => {
                let x = x.unwrap();
                if *axis >= x.rank() || x.dtype == DType::Bool {
                    bail!(
                        "cumulative sum/product axis {} needs a numeric input of higher rank, got {}",
                        axis,
                        x
                    );
                }
                one(x.clone())
            }
            Op::TopK { axis, k, .. } => {
                let x = x.unwrap();
                if *axis >= x.rank() || x.dtype == DType::Bool {
                    bail!(
                        "top_k axis {} needs a numeric input of higher rank, got {}",
                        axis,
                        x
                    );
                }
                if *k > x.shape[*axis] {
                    bail!("top_k: k = {} is larger than axis {} of {}", k, axis, x);
                }
                let mut s = x.shape.clone();
                s[*axis] = *k;
                Ok(vec![
                    TensorType::new(x.dtype, s.clone()),
                    TensorType::new(DType::I64, s),
                ])
            }
            Op::GatherElements { axis } => {
                let (d, i) = (inputs[0], inputs[1]);
                index_dtype(self.name(), i)?;
                same_rank_indices(self.name(), *axis, d, i)?;
                one(TensorType::new(d.dtype, i.shape.clone()))
            }
            Op::GatherNd { batch_dims } => {
                let (d, i) = (inputs[0], inputs[1]);
                index_dtype(self.name(), i)?;
                let q = nd_depth(self.name(), *batch_dims, d, i)?;
                let mut s = i.shape[..i.rank() - 1].to_vec();
                s.extend_from_slice(&d.shape[batch_dims + q..]);
                one(TensorType::new(d.dtype, s))
            }
            Op::ScatterElements { axis, reduction } => {
                let (d, i, u) = (inputs[0], inputs[1], inputs[2]);
                index_dtype(self.name(), i)?;
                same_rank_indices(self.name(), *axis, d, i)?;
                if u.shape != i.shape || u.dtype != d.dtype {
                    bail!("scatter_elements: updates {} must have the indices' shape {:?} and the data's dtype {}", u, i.shape, d.dtype);
                }
                scatter_dtype(self.name(), *reduction, d)?;
                one(d.clone())
            }
            Op::ScatterNd { reduction } => {
                let (d, i, u) = (inputs[0], inputs[1], inputs[2]);
                index_dtype(self.name(), i)?;
                let q = nd_depth(self.name(), 0, d, i)?;
                let mut s = i.shape[..i.rank() - 1].to_vec();
                s.extend_from_slice(&d.shape[q..]);
                if u.shape != s || u.dtype != d.dtype {
                    bail!("scatter_nd: updates {} must be {}{:?}", u, d.dtype, s);
                }
                scatter_dtype(self.name(), *reduction, d)?;
                one(d.clone())
            }
            Op::Expand { shape } => {
                let x = x.unwrap();
                one(TensorType::new(x.dtype, broadcast_shapes(&x.shape, shape)?))
            }
            Op::Fused {
                base,
                base_inputs,
                steps,
            } => {
                if matches!(
                    **base,
                    Op::Fused { .. } | Op::Input { .. } | Op::Constant { .. }
                ) || base.num_outputs() != 1
                {
                    bail!("fused: {} cannot be a fused base", base.name());
                }
                if *base_inputs > inputs.len() {
                    bail!(
                        "fused: base takes {} inputs, node has {}",
                        base_inputs,
                        inputs.len()
                    );
                }
                let out = base
                    .infer(&inputs[..*base_inputs])
                    .map_err(|e| crate::IrError::new(format!("fused base: {e}")))?;
                let t = out[0].clone();
                if t.dtype != DType::F32 {
                    bail!("fused: the base must produce f32, got {}", t.dtype);
                }
                let mut used = vec![false; inputs.len()];
                let mut out = t.clone();
                for (i, st) in steps.iter().enumerate() {
                    match st {
                        // The last step may quantize the result to u8.
                        FusedStep::Unary(u @ UnaryOp::QuantizeActivation { .. })
                            if i + 1 == steps.len() =>
                        {
                            out = Op::Unary(u.clone()).infer(&[&t])?.remove(0);
                        }
                        FusedStep::Unary(u) => {
                            let r = Op::Unary(u.clone()).infer(&[&t])?;
                            if r[0] != t {
                                bail!("fused: step {:?} changes the type", u);
                            }
                        }
                        FusedStep::Binary { op, input, .. } => {
                            if *input < *base_inputs || *input >= inputs.len() {
                                bail!("fused: step input {} is not an extra input", input);
                            }
                            used[*input] = true;
                            let e = inputs[*input];
                            if op.is_comparison() || op.is_logical() || e.dtype != DType::F32 {
                                bail!("fused: step {:?} on {} does not keep f32", op, e);
                            }
                            if broadcast_shapes(&t.shape, &e.shape)? != t.shape {
                                bail!("fused: step input {} does not broadcast to {}", e, t);
                            }
                        }
                    }
                }
                if used[*base_inputs..].iter().any(|u| !u) {
                    bail!("fused: an extra input is not used by any step");
                }
                one(out)
            }
            Op::Pair {
                first,
                first_inputs,
                second,
            } => {
                if *first_inputs > inputs.len() {
                    bail!(
                        "pair: the first op takes {} inputs, node has {}",
                        first_inputs,
                        inputs.len()
                    );
                }
                let mid = first
                    .infer(&inputs[..*first_inputs])
                    .map_err(|e| crate::IrError::new(format!("pair, first op: {e}")))?;
                if mid.len() != 1 {
                    bail!("pair: the first op must have one output");
                }
                let mut rest = vec![&mid[0]];
                rest.extend_from_slice(&inputs[*first_inputs..]);
                second
                    .infer(&rest)
                    .map_err(|e| crate::IrError::new(format!("pair, second op: {e}")))
            }
        }
    }
}
