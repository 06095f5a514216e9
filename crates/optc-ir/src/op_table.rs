//! The op table: every kind of op once, with its name, arity, attributes and properties.
//!
//! [`Op`] is the IR's representation of an op; this table describes it. One entry per case
//! of `Op` (a `UnaryOp`, `BinaryOp` or `ReduceKind` case is a kind of its own) gives:
//!
//! - its [`OpKind`], its name (text format, `.rules` files, errors) and its arity;
//! - its attributes: each field of the variant with the [`Codec`] that maps it to attribute
//!   values (the text format prints and parses them, `.rules` patterns match and build them);
//! - its [`Family`], [`CostClass`] and [`Prop`]s, which the optimizer and codegen ask
//!   instead of keeping their own lists of ops.
//!
//! The text printer and parser ([`crate::text`]), the e-graph's op names, the rule language
//! and the property queries are all derived from here. Adding an op: its variant (or case)
//! in `op.rs` with its inference in `Op::infer`, one entry below, its semantics in
//! `interp.rs`, its ONNX mapping and its lowering.
//!
//! [`Codec`]: crate::attr::Codec

use crate::attr::{self, AttrSpec, AttrValue, Attrs, Codec};
use crate::{bail, BinaryOp, Op, ReduceKind, Result, UnaryOp};

/// The broad family of an op: the categories a `.rules` op variable ranges over
/// (`?f:unary`), and the groups the optimizer and codegen ask about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Graph inputs and constants.
    Source,
    /// Elementwise, one input.
    Unary,
    /// Elementwise, two inputs with numpy broadcasting.
    Binary,
    /// `where`: elementwise, three inputs.
    Select,
    /// `cast`, `quantize_linear`, `dequantize_linear`: elementwise dtype conversions (the
    /// last two with parameters per tensor or per index of an axis).
    Convert,
    /// Sums of products: matmul, gemm, conv, their quantized and integer forms.
    Contraction,
    /// batch_norm, layer_norm, softmax.
    Normalization,
    /// Sliding-window reductions: max_pool, avg_pool.
    Pool,
    /// Reductions over axes; `dynamic_quantize_linear` (the whole tensor's range chooses
    /// the scale and zero point it is quantized with).
    Reduction,
    /// Data movement: reshape, transpose, concat, split, slice, pad, gather, expand, and the
    /// indexed gathers and scatters.
    Movement,
    /// The gates of one step of a recurrent layer: lstm_cell.
    Recurrent,
    /// `Op::Fused`: a base op and an elementwise chain.
    Fused,
}

// The names in `.rules` files.
named_values!(Family {
    Source => "source",
    Unary => "unary",
    Binary => "binary",
    Select => "select",
    Convert => "convert",
    Contraction => "contraction",
    Normalization => "normalization",
    Pool => "pool",
    Reduction => "reduction",
    Movement => "movement",
    Recurrent => "recurrent",
    Fused => "fused",
});

impl Family {
    /// Unary, binary, select and convert ops: each output element depends only on the
    /// input elements at the same (broadcast) position.
    pub fn is_elementwise(self) -> bool {
        matches!(
            self,
            Family::Unary | Family::Binary | Family::Select | Family::Convert
        )
    }
}

/// Which formula of the cost model (`optc-egraph/src/cost.rs`) prices an op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CostClass {
    /// No arithmetic: only the bytes moved count (sources, data movement).
    Memory,
    /// One cheap operation per output element.
    Elementwise,
    /// One transcendental function (exp, log, tanh, ...) per output element.
    Transcendental,
    /// One division per output element (slower than a multiply).
    Division,
    /// Multiply-adds of a contraction (the FLOPs depend on the op's shapes).
    Dense,
    /// A few passes over the input (mean, variance, scale).
    Normalization,
    /// An exponential and three cheap operations per element.
    Softmax,
    /// One operation per window cell per output element.
    Window,
    /// One operation per input element.
    Reduction,
    /// The base's cost plus the steps'.
    Fused,
}

/// A yes/no property of an op kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prop {
    /// `f(a, b) == f(b, a)` for every input (NaNs included).
    Commutative,
    /// Can be a step of an `Op::Fused` elementwise chain: f32 in, f32 out, cheap enough to
    /// apply in a kernel's store.
    FusedStep,
    /// Can be the base of an `Op::Fused`: its output stays in registers or cache for the
    /// steps that follow.
    FusedBase,
}

/// A set of [`Prop`]s.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Props(u32);

impl Props {
    pub const NONE: Props = Props(0);
    pub const fn with(self, p: Prop) -> Props {
        Props(self.0 | 1 << p as u32)
    }
    pub const fn has(self, p: Prop) -> bool {
        self.0 & (1 << p as u32) != 0
    }
}

/// What the table says about one kind of op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpInfo {
    pub kind: OpKind,
    /// The name in the text format and in `.rules` files.
    pub name: &'static str,
    /// Allowed number of inputs `(min, max)`; a fused op's depends on its steps
    /// ([`Op::arity`]).
    pub arity: (usize, usize),
    pub family: Family,
    pub cost: CostClass,
    pub props: Props,
}

impl OpInfo {
    pub fn has(&self, p: Prop) -> bool {
        self.props.has(p)
    }
}

/// Declares [`OpKind`], [`OPS`], [`Op::kind`], [`Op::attrs`], [`OpKind::attr_specs`] and
/// [`OpKind::build`] from one line per kind:
///
/// `Kind "name" (min, max) Family CostClass [Props] {field: Codec, ..} (pattern) [else build];`
///
/// The pattern is both the `match` arm that recognizes the kind (binding the fields) and
/// the expression that builds it from its attributes (fields read by their codecs), unless
/// an `else` expression says how building fails instead.
macro_rules! op_table {
    ($(
        $kind:ident $name:literal ($lo:expr, $hi:expr) $family:ident $cost:ident
        [$($prop:ident)*] {$($field:ident: $codec:ident),*} ($($op:tt)+) $(else $build:expr)?;
    )*) => {
        /// One kind of op: a variant of [`Op`], or a case of `UnaryOp`, `BinaryOp` or
        /// `ReduceKind`. `OPS[kind as usize]` describes it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum OpKind { $($kind,)* }

        /// Every kind of op, in [`OpKind`] order.
        pub static OPS: &[OpInfo] = &[$(
            OpInfo {
                kind: OpKind::$kind,
                name: $name,
                arity: ($lo, $hi),
                family: Family::$family,
                cost: CostClass::$cost,
                props: Props::NONE $(.with(Prop::$prop))*,
            },
        )*];

        impl Op {
            /// The op's kind (its entry in [`OPS`]).
            #[allow(unused_variables)]
            pub fn kind(&self) -> OpKind {
                match self { $( $($op)+ => OpKind::$kind, )* }
            }

            /// The op's attributes in text-format order (none for inputs, constants and
            /// fused ops: the text format writes those itself).
            #[allow(unused_variables, unused_mut)]
            pub fn attrs(&self) -> Vec<(&'static str, AttrValue)> {
                let mut out = vec![];
                match self {
                    $( $($op)+ => { $( <attr::$codec as Codec>::write($field, stringify!($field), &mut out); )* } )*
                }
                out
            }
        }

        impl OpKind {
            /// The attributes an op of this kind has, in text-format order.
            #[allow(unused_mut)]
            pub fn attr_specs(self) -> Vec<AttrSpec> {
                let mut out = vec![];
                match self {
                    $( OpKind::$kind => { $( <attr::$codec as Codec>::specs(stringify!($field), &mut out); )* } )*
                }
                out
            }

            fn take_fields(self, attrs: &mut Attrs) -> Result<Op> {
                match self {
                    $( OpKind::$kind => {
                        $( let $field = <attr::$codec as Codec>::read(stringify!($field), attrs)?; )*
                        op_table!(@build ($($op)+) $($build)?)
                    } )*
                }
            }
        }
    };
    (@build ($($op:tt)+)) => { Ok($($op)+) };
    (@build ($($op:tt)+) $build:expr) => { $build };
}

use BinaryOp as B;
use ReduceKind as R;
use UnaryOp as U;

op_table! {
    Input "input" (0, 0) Source Memory [] {} (Op::Input { .. })
        else bail!("inputs are declared in the graph(...) header");
    Constant "const" (0, 0) Source Memory [] {} (Op::Constant { .. })
        else bail!("constants are written `%name = const cN ...`");

    Identity "identity" (1, 1) Unary Elementwise [] {} (Op::Unary(U::Identity));
    Relu "relu" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Relu));
    LeakyRelu "leaky_relu" (1, 1) Unary Elementwise [FusedStep FusedBase] {alpha: Float}
        (Op::Unary(U::LeakyRelu { alpha }));
    Clip "clip" (1, 1) Unary Elementwise [FusedStep FusedBase] {min: Float, max: Float}
        (Op::Unary(U::Clip { min, max }));
    Sigmoid "sigmoid" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Sigmoid));
    HardSigmoid "hard_sigmoid" (1, 1) Unary Elementwise [FusedStep FusedBase]
        {alpha: Float, beta: Float} (Op::Unary(U::HardSigmoid { alpha, beta }));
    HardSwish "hard_swish" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::HardSwish));
    Silu "silu" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Silu));
    Gelu "gelu" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Gelu));
    GeluTanh "gelu_tanh" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::GeluTanh));
    Tanh "tanh" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Tanh));
    Erf "erf" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Erf));
    Exp "exp" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Exp));
    Log "log" (1, 1) Unary Transcendental [FusedStep FusedBase] {} (Op::Unary(U::Log));
    Sqrt "sqrt" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Sqrt));
    Neg "neg" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Neg));
    Abs "abs" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Abs));
    Floor "floor" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Floor));
    Ceil "ceil" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Ceil));
    Round "round" (1, 1) Unary Elementwise [FusedStep FusedBase] {} (Op::Unary(U::Round));
    Sin "sin" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Sin));
    Cos "cos" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Cos));
    Tan "tan" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Tan));
    Asin "asin" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Asin));
    Acos "acos" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Acos));
    Atan "atan" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Atan));
    Sinh "sinh" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Sinh));
    Cosh "cosh" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Cosh));
    Asinh "asinh" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Asinh));
    Acosh "acosh" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Acosh));
    Atanh "atanh" (1, 1) Unary Transcendental [] {} (Op::Unary(U::Atanh));
    Not "not" (1, 1) Unary Elementwise [] {} (Op::Unary(U::Not));
    BitNot "bit_not" (1, 1) Unary Elementwise [] {} (Op::Unary(U::BitNot));
    IsNaN "is_nan" (1, 1) Unary Elementwise [] {} (Op::Unary(U::IsNaN));
    NanTo "nan_to" (1, 1) Unary Elementwise [FusedStep FusedBase] {value: Float}
        (Op::Unary(U::NanTo { value }));
    FakeQuantize "fake_quantize" (1, 1) Unary Division [FusedStep FusedBase]
        {scale: Float, zero: Float, signed: Bool}
        (Op::Unary(U::FakeQuantize { scale, zero, signed }));
    QuantizeActivation "quantize_activation" (1, 1) Unary Elementwise [] {scale: Float, zero: Float}
        (Op::Unary(U::QuantizeActivation { scale, zero }));
    RoundToHalf "round_to_half" (1, 1) Unary Elementwise [FusedStep FusedBase] {bfloat: Bool}
        (Op::Unary(U::RoundToHalf { bfloat }));
    Wrap "wrap" (1, 1) Unary Elementwise [] {bits: Size, signed: Bool}
        (Op::Unary(U::Wrap { bits, signed }));

    Add "add" (2, 2) Binary Elementwise [Commutative FusedStep FusedBase] {} (Op::Binary(B::Add));
    Sub "sub" (2, 2) Binary Elementwise [FusedStep FusedBase] {} (Op::Binary(B::Sub));
    Mul "mul" (2, 2) Binary Elementwise [Commutative FusedStep FusedBase] {} (Op::Binary(B::Mul));
    Div "div" (2, 2) Binary Division [FusedStep FusedBase] {} (Op::Binary(B::Div));
    Pow "pow" (2, 2) Binary Elementwise [FusedStep FusedBase] {} (Op::Binary(B::Pow));
    Max "max" (2, 2) Binary Elementwise [Commutative FusedStep FusedBase] {} (Op::Binary(B::Max));
    Min "min" (2, 2) Binary Elementwise [Commutative FusedStep FusedBase] {} (Op::Binary(B::Min));
    Equal "equal" (2, 2) Binary Elementwise [Commutative] {} (Op::Binary(B::Equal));
    Greater "greater" (2, 2) Binary Elementwise [] {} (Op::Binary(B::Greater));
    Less "less" (2, 2) Binary Elementwise [] {} (Op::Binary(B::Less));
    GreaterOrEqual "greater_or_equal" (2, 2) Binary Elementwise [] {} (Op::Binary(B::GreaterOrEqual));
    LessOrEqual "less_or_equal" (2, 2) Binary Elementwise [] {} (Op::Binary(B::LessOrEqual));
    And "and" (2, 2) Binary Elementwise [Commutative] {} (Op::Binary(B::And));
    Or "or" (2, 2) Binary Elementwise [Commutative] {} (Op::Binary(B::Or));
    BitAnd "bit_and" (2, 2) Binary Elementwise [Commutative] {} (Op::Binary(B::BitAnd));
    BitOr "bit_or" (2, 2) Binary Elementwise [Commutative] {} (Op::Binary(B::BitOr));
    BitXor "bit_xor" (2, 2) Binary Elementwise [Commutative] {} (Op::Binary(B::BitXor));
    ShiftLeft "shift_left" (2, 2) Binary Elementwise [] {} (Op::Binary(B::ShiftLeft));
    ShiftRight "shift_right" (2, 2) Binary Elementwise [] {} (Op::Binary(B::ShiftRight));
    FMod "fmod" (2, 2) Binary Division [] {} (Op::Binary(B::FMod));

    Where "where" (3, 3) Select Elementwise [] {} (Op::Where);
    Cast "cast" (1, 1) Convert Elementwise [] {to: DTypeName} (Op::Cast { to });
    Bitcast "bitcast" (1, 1) Convert Elementwise [] {to: DTypeName} (Op::Bitcast { to });
    QuantizeLinear "quantize_linear" (2, 3) Convert Division [] {axis: Size}
        (Op::QuantizeLinear { axis });
    DequantizeLinear "dequantize_linear" (2, 3) Convert Elementwise [] {axis: Size}
        (Op::DequantizeLinear { axis });
    DynamicQuantizeLinear "dynamic_quantize_linear" (1, 1) Reduction Reduction [] {}
        (Op::DynamicQuantizeLinear);

    MatMul "matmul" (2, 2) Contraction Dense [FusedBase] {} (Op::MatMul);
    Gemm "gemm" (2, 3) Contraction Dense [FusedBase]
        {alpha: Float, beta: Float, trans_a: Bool, trans_b: Bool}
        (Op::Gemm { alpha, beta, trans_a, trans_b });
    Conv "conv" (2, 3) Contraction Dense [FusedBase] {window: ConvWindow, group: Size}
        (Op::Conv { window, group });
    QuantizedMatMul "quantized_matmul" (3, 6) Contraction Dense [FusedBase]
        {activation: ActivationQuantizationName} (Op::QuantizedMatMul { activation });
    QuantizedConv "quantized_conv" (3, 6) Contraction Dense [FusedBase]
        {window: ConvWindow, group: Size, activation: ActivationQuantizationName}
        (Op::QuantizedConv { window, group, activation });
    MatMulInteger "matmul_integer" (2, 4) Contraction Dense [] {} (Op::MatMulInteger);
    ConvInteger "conv_integer" (2, 4) Contraction Dense [] {window: ConvWindow, group: Size}
        (Op::ConvInteger { window, group });

    BatchNorm "batch_norm" (5, 5) Normalization Normalization [FusedBase] {epsilon: Float}
        (Op::BatchNorm { epsilon });
    LayerNorm "layer_norm" (2, 3) Normalization Normalization [FusedBase]
        {axis: Size, epsilon: Float} (Op::LayerNorm { axis, epsilon });
    Softmax "softmax" (1, 1) Normalization Softmax [FusedBase] {axis: Size} (Op::Softmax { axis });

    MaxPool "max_pool" (1, 1) Pool Window [FusedBase] {window: PoolWindow} (Op::MaxPool { window });
    AveragePool "avg_pool" (1, 1) Pool Window [FusedBase]
        {window: PoolWindow, count_include_pad: Bool}
        (Op::AveragePool { window, count_include_pad });

    ReduceSum "reduce_sum" (1, 1) Reduction Reduction [] {axes: Sizes, keepdims: Bool}
        (Op::Reduce { kind: R::Sum, axes, keepdims });
    ReduceMean "reduce_mean" (1, 1) Reduction Reduction [] {axes: Sizes, keepdims: Bool}
        (Op::Reduce { kind: R::Mean, axes, keepdims });
    ReduceMax "reduce_max" (1, 1) Reduction Reduction [] {axes: Sizes, keepdims: Bool}
        (Op::Reduce { kind: R::Max, axes, keepdims });
    ReduceL2 "reduce_l2" (1, 1) Reduction Reduction [] {axes: Sizes, keepdims: Bool}
        (Op::Reduce { kind: R::L2, axes, keepdims });
    ReduceMin "reduce_min" (1, 1) Reduction Reduction [] {axes: Sizes, keepdims: Bool}
        (Op::Reduce { kind: R::Min, axes, keepdims });
    ReduceProd "reduce_prod" (1, 1) Reduction Reduction [] {axes: Sizes, keepdims: Bool}
        (Op::Reduce { kind: R::Prod, axes, keepdims });
    ArgMax "arg_max" (1, 1) Reduction Reduction []
        {axis: Size, keepdims: Bool, select_last_index: Bool}
        (Op::Arg { largest: true, axis, keepdims, select_last_index });
    ArgMin "arg_min" (1, 1) Reduction Reduction []
        {axis: Size, keepdims: Bool, select_last_index: Bool}
        (Op::Arg { largest: false, axis, keepdims, select_last_index });
    CumSum "cumsum" (1, 1) Reduction Reduction [] {axis: Size, exclusive: Bool, reverse: Bool}
        (Op::Cumulative { product: false, axis, exclusive, reverse });
    CumProd "cumprod" (1, 1) Reduction Reduction [] {axis: Size, exclusive: Bool, reverse: Bool}
        (Op::Cumulative { product: true, axis, exclusive, reverse });
    TopK "top_k" (1, 1) Reduction Reduction [] {axis: Size, k: Size, largest: Bool}
        (Op::TopK { axis, k, largest });

    Reshape "reshape" (1, 1) Movement Memory [] {shape: Sizes} (Op::Reshape { shape });
    Transpose "transpose" (1, 1) Movement Memory [] {perm: Sizes} (Op::Transpose { perm });
    Concat "concat" (1, usize::MAX) Movement Memory [] {axis: Size} (Op::Concat { axis });
    Split "split" (1, 1) Movement Memory [] {axis: Size, sizes: Sizes} (Op::Split { axis, sizes });
    Slice "slice" (1, 1) Movement Memory [] {dims: SliceDims} (Op::Slice { dims });
    Pad "pad" (1, 1) Movement Memory [] {pads: Ints, mode: PadModeName, value: Float}
        (Op::Pad { pads, mode, value });
    Gather "gather" (2, 2) Movement Memory [] {axis: Size} (Op::Gather { axis });
    Expand "expand" (1, 1) Movement Memory [] {shape: Sizes} (Op::Expand { shape });
    GatherElements "gather_elements" (2, 2) Movement Memory [] {axis: Size}
        (Op::GatherElements { axis });
    GatherNd "gather_nd" (2, 2) Movement Memory [] {batch_dims: Size} (Op::GatherNd { batch_dims });
    ScatterElements "scatter_elements" (3, 3) Movement Memory []
        {axis: Size, reduction: ScatterReductionName} (Op::ScatterElements { axis, reduction });
    ScatterNd "scatter_nd" (3, 3) Movement Memory [] {reduction: ScatterReductionName}
        (Op::ScatterNd { reduction });
    LstmCell "lstm_cell" (1, 2) Recurrent Transcendental [] {} (Op::LstmCell);
    Guard "guard" (2, 2) Movement Memory [] {expect: Bool, length: Bool}
        (Op::Guard { expect, length });

    Fused "fused" (0, usize::MAX) Fused Fused [] {} (Op::Fused { .. })
        else bail!("fused ops are written fused.<base> with base_inputs and steps");
    Pair "pair" (0, usize::MAX) Fused Fused [] {} (Op::Pair { .. })
        else bail!("pairs are made by codegen, not written");
}

impl OpKind {
    /// What the table says about this kind.
    pub fn info(self) -> &'static OpInfo {
        &OPS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The kind named `name` (text-format name).
    pub fn from_name(name: &str) -> Option<OpKind> {
        OPS.iter().find(|i| i.name == name).map(|i| i.kind)
    }

    /// Build an op of this kind from its attributes: every attribute of the kind must be
    /// given, and no other.
    pub fn build(self, mut attrs: Attrs) -> Result<Op> {
        let op = self.take_fields(&mut attrs)?;
        attrs.finish()?;
        Ok(op)
    }
}

impl Op {
    /// What the table says about this op.
    pub fn info(&self) -> &'static OpInfo {
        self.kind().info()
    }

    /// Short name, as in the text format.
    pub fn name(&self) -> &'static str {
        self.info().name
    }

    /// Whether the table gives this op property `p`.
    pub fn has(&self, p: Prop) -> bool {
        self.info().has(p)
    }

    /// Allowed number of inputs `(min, max)`.
    pub fn arity(&self) -> (usize, usize) {
        match self {
            Op::Fused {
                base_inputs, steps, ..
            } => {
                let extra = steps
                    .iter()
                    .filter_map(|s| match s {
                        crate::FusedStep::Binary { input, .. } => Some(input + 1),
                        crate::FusedStep::Unary(_) => None,
                    })
                    .max()
                    .unwrap_or(0)
                    .max(*base_inputs);
                (extra, extra)
            }
            Op::Pair {
                first_inputs,
                second,
                ..
            } => {
                let (lo, hi) = second.arity();
                (
                    first_inputs + lo.max(1) - 1,
                    first_inputs.saturating_add(hi.max(1) - 1),
                )
            }
            _ => self.info().arity,
        }
    }
}
