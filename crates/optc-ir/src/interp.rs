//! The reference interpreter: slow, obviously correct semantics for every op.
//!
//! This module *defines* what each [`Op`] means; codegen and every rewrite are tested
//! against it.
//!
//! Conventions:
//! - Float math is done in `f64` and rounded to `f32` once (sums, dot products, means and
//!   transcendental functions accumulate in `f64`).
//! - Integer arithmetic wraps; integer division truncates toward zero and division by zero is
//!   an error.
//! - `Max`/`Min` (binary) propagate NaN like numpy; `Relu` and `Clip` keep NaN.
//!   `MaxPool` and `reduce_max` ignore NaN unless every cell is NaN. A `MaxPool` window that
//!   holds only padding gives `-inf`; an `AveragePool` window with a zero divisor gives 0.
//! - Use [`erf_f64`] as an accurate `erf` oracle (std has none).
//! - `Cast`: float → int truncates toward zero and saturates (NaN → 0); int → int wraps;
//!   anything → bool is `x != 0`; bool → number is 0/1.
//! - `Pow` with an integer base: a non-negative integer exponent gives the wrapping integer
//!   power; any other exponent computes `powf` in `f64` and casts back (truncating, saturating).

mod linear_quantization;
mod quantized;

use crate::{
    bail, broadcast_shapes, strides, BinaryOp, DType, Data, Graph, IrError, Op, PadMode,
    ReduceKind, Result, Tensor, TensorType, UnaryOp, Value, Window,
};
use std::borrow::Cow;
use std::collections::HashMap;

// ---------------------------------------------------------------------------------------------
// Element types.

/// An element type of [`Data`].
trait Elem: Copy + PartialOrd + std::fmt::Debug + 'static {
    const DT: DType;
    fn get(d: &Data) -> Option<&[Self]>;
    fn wrap(v: Vec<Self>) -> Data;
    fn to_f64(self) -> f64;
    /// Floats truncate (saturating), bools are 0/1.
    fn to_i64(self) -> i64;
    /// Cast from f32: truncation toward zero, saturating, NaN → 0; to bool: `x != 0`.
    fn from_f32(x: f32) -> Self;
    /// Cast from an integer: wrapping; to f32: nearest; to bool: `x != 0`.
    fn from_i64(x: i64) -> Self;
    fn from_bool(b: bool) -> Self;
    fn is_nonzero(self) -> bool;
    /// Cast from f64: as [`Elem::from_f32`] (to f32: nearest).
    fn from_f64_cast(x: f64) -> Self;

    /// `Cast` semantics from any element type.
    fn cast_from<S: Elem>(x: S) -> Self {
        match S::DT {
            DType::F32 => Self::from_f32(x.to_f64() as f32),
            DType::F64 => Self::from_f64_cast(x.to_f64()),
            DType::Bool => Self::from_bool(x.is_nonzero()),
            _ => Self::from_i64(x.to_i64()),
        }
    }
}

/// Numeric element types (everything but bool).
trait Num: Elem {
    fn zero() -> Self;
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// `None` on integer division by zero.
    fn div(self, o: Self) -> Option<Self>;
    fn neg(self) -> Self;
    fn abs(self) -> Self;
    /// Convert an f64 result back (floats round, ints truncate and saturate).
    fn from_f64(x: f64) -> Self;
    /// Wrapping integer power (floats: `powf`).
    fn ipow(self, e: u64) -> Self;
    fn is_nan(self) -> bool {
        false
    }
}

/// `Elem` of a numeric element type: its `Data` variant, and `as` casts to and from it.
macro_rules! numeric_elem {
    ($t:ty, $dt:ident) => {
        impl Elem for $t {
            const DT: DType = DType::$dt;
            fn get(d: &Data) -> Option<&[$t]> {
                match d {
                    Data::$dt(v) => Some(v),
                    _ => None,
                }
            }
            fn wrap(v: Vec<$t>) -> Data {
                Data::$dt(v)
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_f32(x: f32) -> $t {
                x as $t
            }
            fn from_i64(x: i64) -> $t {
                x as $t
            }
            fn from_bool(b: bool) -> $t {
                b as u8 as $t
            }
            fn is_nonzero(self) -> bool {
                self != 0 as $t
            }
            fn from_f64_cast(x: f64) -> $t {
                x as $t
            }
        }
    };
}

macro_rules! float_elem {
    ($t:ty, $dt:ident) => {
        numeric_elem!($t, $dt);
        impl Num for $t {
            fn zero() -> $t {
                0.0
            }
            fn add(self, o: $t) -> $t {
                self + o
            }
            fn sub(self, o: $t) -> $t {
                self - o
            }
            fn mul(self, o: $t) -> $t {
                self * o
            }
            fn div(self, o: $t) -> Option<$t> {
                Some(self / o)
            }
            fn neg(self) -> $t {
                -self
            }
            fn abs(self) -> $t {
                self.abs()
            }
            fn from_f64(x: f64) -> $t {
                x as $t
            }
            fn ipow(self, e: u64) -> $t {
                (self as f64).powf(e as f64) as $t
            }
            fn is_nan(self) -> bool {
                self.is_nan()
            }
        }
    };
}
float_elem!(f32, F32);
float_elem!(f64, F64);

impl Elem for bool {
    const DT: DType = DType::Bool;
    fn get(d: &Data) -> Option<&[bool]> {
        match d {
            Data::Bool(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<bool>) -> Data {
        Data::Bool(v)
    }
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_f32(x: f32) -> bool {
        x != 0.0
    }
    fn from_i64(x: i64) -> bool {
        x != 0
    }
    fn from_bool(b: bool) -> bool {
        b
    }
    fn is_nonzero(self) -> bool {
        self
    }
    fn from_f64_cast(x: f64) -> bool {
        x != 0.0
    }
}

macro_rules! int_elem {
    ($t:ty, $dt:ident) => {
        numeric_elem!($t, $dt);
        impl Num for $t {
            fn zero() -> $t {
                0
            }
            fn add(self, o: $t) -> $t {
                self.wrapping_add(o)
            }
            fn sub(self, o: $t) -> $t {
                self.wrapping_sub(o)
            }
            fn mul(self, o: $t) -> $t {
                self.wrapping_mul(o)
            }
            fn div(self, o: $t) -> Option<$t> {
                if o == 0 {
                    None
                } else {
                    Some(self.wrapping_div(o))
                }
            }
            fn neg(self) -> $t {
                self.wrapping_neg()
            }
            fn abs(self) -> $t {
                #[allow(unused_comparisons)]
                if self < 0 {
                    self.wrapping_neg()
                } else {
                    self
                }
            }
            fn from_f64(x: f64) -> $t {
                x as $t
            }
            fn ipow(self, e: u64) -> $t {
                // Wrapping in i64, then truncated: the same bits as wrapping in `$t`.
                wrapping_pow(self as i64, e) as $t
            }
        }
    };
}
int_elem!(i64, I64);
int_elem!(i32, I32);
int_elem!(u8, U8);
int_elem!(i8, I8);

/// `base^exp` with wrapping multiplication (square and multiply): integer `Pow`'s semantics
/// for a non-negative exponent. Generated code calls it too (`optc_rt_powi`).
pub fn wrapping_pow(base: i64, exp: u64) -> i64 {
    let (mut base, mut e, mut acc) = (base, exp, 1i64);
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.wrapping_mul(base);
        }
        base = base.wrapping_mul(base);
        e >>= 1;
    }
    acc
}

/// Run `$body` with `$T` bound to the Rust element type of a [`DType`].
macro_rules! with_type {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::I64 => {
                type $T = i64;
                $body
            }
            DType::I32 => {
                type $T = i32;
                $body
            }
            DType::Bool => {
                type $T = bool;
                $body
            }
            DType::U8 => {
                type $T = u8;
                $body
            }
            DType::I8 => {
                type $T = i8;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
        }
    };
}

/// Like [`with_type!`] for numeric types; bool gives an error naming `$what`.
macro_rules! with_num_type {
    ($dt:expr, $what:expr, $T:ident => $body:expr) => {
        match $dt {
            DType::F32 => {
                type $T = f32;
                $body
            }
            DType::I64 => {
                type $T = i64;
                $body
            }
            DType::I32 => {
                type $T = i32;
                $body
            }
            DType::U8 => {
                type $T = u8;
                $body
            }
            DType::I8 => {
                type $T = i8;
                $body
            }
            DType::F64 => {
                type $T = f64;
                $body
            }
            DType::Bool => bail!("{} does not take bool", $what),
        }
    };
}

mod indexing;

/// Map each `Data` variant's vector `$v` through `$e` (which yields a `Vec` of the same type).
macro_rules! map_data {
    ($d:expr, $v:ident => $e:expr) => {
        match $d {
            Data::F32($v) => Data::F32($e),
            Data::I64($v) => Data::I64($e),
            Data::I32($v) => Data::I32($e),
            Data::Bool($v) => Data::Bool($e),
            Data::U8($v) => Data::U8($e),
            Data::I8($v) => Data::I8($e),
            Data::F64($v) => Data::F64($e),
        }
    };
}

fn sl<T: Elem>(t: &Tensor) -> Result<&[T]> {
    match T::get(t.data()) {
        Some(v) => Ok(v),
        None => bail!("expected {} data, got {}", T::DT, t.dtype()),
    }
}

fn f32s(t: &Tensor) -> Result<&[f32]> {
    sl::<f32>(t)
}

// ---------------------------------------------------------------------------------------------
// Index helpers.

/// Offsets `base + sum(idx[i] * st[i])` for every multi-index of `shape`, row-major.
fn offsets(shape: &[usize], base: i64, st: &[i64]) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let r = shape.len();
    let mut idx = vec![0usize; r];
    let mut off = base;
    for _ in 0..n {
        out.push(off as usize);
        // Increment the odometer.
        let mut d = r;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            off += st[d];
            if idx[d] < shape[d] {
                break;
            }
            off -= st[d] * shape[d] as i64;
            idx[d] = 0;
        }
    }
    out
}

/// For each element of `out` (row-major), the offset of the element of a tensor of shape
/// `inp` that numpy broadcasting maps to it.
fn bcast_index(out: &[usize], inp: &[usize]) -> Vec<usize> {
    let r = out.len();
    let off = r - inp.len();
    let s = strides(inp);
    let mut st = vec![0i64; r];
    for i in 0..inp.len() {
        if inp[i] != 1 {
            st[off + i] = s[i] as i64;
        }
    }
    offsets(out, 0, &st)
}

/// Every multi-index of `shape`, row-major.
fn multi_indices(shape: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(idx.clone());
        let mut d = shape.len();
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

/// Gather elements of `d` by index.
fn take(d: &Data, idx: &[usize]) -> Data {
    map_data!(d, v => idx.iter().map(|&i| v[i]).collect())
}

fn tensor(ty: &TensorType, data: Data) -> Result<Tensor> {
    if data.dtype() != ty.dtype {
        bail!(
            "internal: computed {} data for a {} output",
            data.dtype(),
            ty.dtype
        );
    }
    Tensor::new(ty.shape.clone(), data)
}

// ---------------------------------------------------------------------------------------------
// Entry points.

/// Evaluate one op (not `Input`/`Constant`) on concrete inputs.
pub fn eval_op(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let tys: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let refs: Vec<&TensorType> = tys.iter().collect();
    op.infer(&refs)
        .and_then(|out| eval_inner(op, inputs, &out))
        .map_err(|e| {
            if e.msg.starts_with(op.name()) {
                e
            } else {
                IrError::new(format!("{}: {}", op.name(), e.msg))
            }
        })
}

fn eval_inner(op: &Op, x: &[&Tensor], out: &[TensorType]) -> Result<Vec<Tensor>> {
    let one = |d: Data| -> Result<Vec<Tensor>> { Ok(vec![tensor(&out[0], d)?]) };
    match op {
        Op::Input { .. } | Op::Constant { .. } => {
            bail!("{} is not evaluated by eval_op", op.name())
        }
        Op::Unary(u) => one(unary(u, x[0])?),
        Op::Binary(b) => one(binary(*b, x[0], x[1], &out[0].shape)?),
        Op::Fused {
            base,
            base_inputs,
            steps,
        } => {
            // The definition of fusion: exactly the unfused ops, one after the other.
            let mut acc = eval_op(base, &x[..*base_inputs])?.remove(0);
            // The steps' type (f32); a last `QuantizeActivation` gives the output's (u8).
            let step_type = acc.ty();
            for (i, st) in steps.iter().enumerate() {
                let ty = if i + 1 == steps.len() {
                    &out[0]
                } else {
                    &step_type
                };
                acc = match st {
                    crate::FusedStep::Unary(u) => unary(u, &acc).and_then(|d| tensor(ty, d))?,
                    crate::FusedStep::Binary { op, input, swap } => {
                        let e = x[*input];
                        let (a, b) = if *swap { (e, &acc) } else { (&acc, e) };
                        tensor(ty, binary(*op, a, b, &out[0].shape)?)?
                    }
                };
            }
            Ok(vec![acc])
        }
        Op::Pair {
            first,
            first_inputs,
            second,
        } => {
            // The definition of a pair: the two ops, one after the other.
            let mid = eval_op(first, &x[..*first_inputs])?.remove(0);
            let mut rest = vec![&mid];
            rest.extend_from_slice(&x[*first_inputs..]);
            eval_op(second, &rest)
        }
        Op::Where => {
            let shape = &out[0].shape;
            let c = sl::<bool>(x[0])?;
            let ic = bcast_index(shape, x[0].shape());
            let ia = bcast_index(shape, x[1].shape());
            let ib = bcast_index(shape, x[2].shape());
            let d = with_type!(x[1].dtype(), T => {
                let a = sl::<T>(x[1])?;
                let b = sl::<T>(x[2])?;
                T::wrap(
                    (0..ic.len())
                        .map(|i| if c[ic[i]] { a[ia[i]] } else { b[ib[i]] })
                        .collect(),
                )
            });
            one(d)
        }
        Op::Cast { to } => {
            let d = with_type!(x[0].dtype(), S => {
                let v = sl::<S>(x[0])?;
                with_type!(*to, T => T::wrap(v.iter().map(|&e| T::cast_from(e)).collect()))
            });
            one(d)
        }
        Op::Bitcast { to } => one(bitcast(x[0], *to)?),
        Op::MatMul => one(matmul(x[0], x[1])?),
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => one(gemm(x, *alpha, *beta, *trans_a, *trans_b, &out[0].shape)?),
        Op::Conv { window, group } => one(conv(x, window, *group, &out[0].shape)?),
        Op::QuantizedMatMul { activation } => one(quantized::matmul(x, *activation)?),
        Op::QuantizedConv {
            window,
            group,
            activation,
        } => one(quantized::conv(
            x,
            window,
            *group,
            *activation,
            &out[0].shape,
        )?),
        Op::QuantizeLinear { axis } => one(linear_quantization::quantize_linear(
            x,
            *axis,
            out[0].dtype,
        )?),
        Op::DequantizeLinear { axis } => one(linear_quantization::dequantize_linear(x, *axis)?),
        Op::DynamicQuantizeLinear => linear_quantization::dynamic_quantize_linear(x[0])?
            .into_iter()
            .zip(out)
            .map(|(d, t)| tensor(t, d))
            .collect(),
        Op::MatMulInteger => one(linear_quantization::matmul_integer(x)?),
        Op::ConvInteger { window, group } => one(linear_quantization::conv_integer(
            x,
            window,
            *group,
            &out[0].shape,
        )?),
        Op::BatchNorm { epsilon } => {
            let xs = f32s(x[0])?;
            let (sc, bi, me, va) = (f32s(x[1])?, f32s(x[2])?, f32s(x[3])?, f32s(x[4])?);
            let shape = x[0].shape();
            let c = shape[1];
            let inner: usize = shape[2..].iter().product();
            let y = xs
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let ch = (i / inner.max(1)) % c;
                    let d = (va[ch] as f64 + *epsilon as f64).sqrt();
                    (sc[ch] as f64 * (v as f64 - me[ch] as f64) / d + bi[ch] as f64) as f32
                })
                .collect();
            one(Data::F32(y))
        }
        Op::MaxPool { window } => one(pool(x[0], window, None, &out[0].shape)?),
        Op::AveragePool {
            window,
            count_include_pad,
        } => one(pool(x[0], window, Some(*count_include_pad), &out[0].shape)?),
        Op::Reduce { kind, axes, .. } => one(reduce(x[0], *kind, axes, &out[0])?),
        Op::Softmax { axis } => one(softmax(x[0], *axis)?),
        Op::LayerNorm { axis, epsilon } => one(layer_norm(x, *axis, *epsilon)?),
        Op::Reshape { .. } => one(x[0].data().clone()),
        Op::LstmCell => {
            // The definition: the unfused ops, one after the other.
            let hidden = out[0].shape[1];
            let gate = |k: usize| -> Result<Tensor> {
                let rows = x[0].shape()[0];
                let dims = vec![
                    crate::SliceDim {
                        start: 0,
                        step: 1,
                        len: rows,
                    },
                    crate::SliceDim {
                        start: (k * hidden) as i64,
                        step: 1,
                        len: hidden,
                    },
                ];
                Ok(eval_op(&Op::Slice { dims }, &[x[0]])?.remove(0))
            };
            let apply = |u: UnaryOp, t: &Tensor| -> Result<Tensor> {
                Ok(eval_op(&Op::Unary(u), &[t])?.remove(0))
            };
            let mul = |a: &Tensor, b: &Tensor| -> Result<Tensor> {
                Ok(eval_op(&Op::Binary(BinaryOp::Mul), &[a, b])?.remove(0))
            };
            let i = apply(UnaryOp::Sigmoid, &gate(0)?)?;
            let o = apply(UnaryOp::Sigmoid, &gate(1)?)?;
            let f = apply(UnaryOp::Sigmoid, &gate(2)?)?;
            let g = apply(UnaryOp::Tanh, &gate(3)?)?;
            let new = mul(&i, &g)?;
            let c = match x.get(1) {
                Some(c_old) => {
                    let old = mul(&f, c_old)?;
                    eval_op(&Op::Binary(BinaryOp::Add), &[&old, &new])?.remove(0)
                }
                None => new,
            };
            let h = mul(&o, &apply(UnaryOp::Tanh, &c)?)?;
            Ok(vec![h, c])
        }
        Op::Guard { expect, length } => {
            if sl::<bool>(x[0])?[0] != *expect {
                if *length {
                    bail!("{}", crate::LENGTH_OUT_OF_RANGE);
                }
                bail!("{}", crate::UNCOMPILED_BRANCH);
            }
            one(x[1].data().clone())
        }
        Op::Transpose { perm } => {
            let s = strides(x[0].shape());
            let st: Vec<i64> = perm.iter().map(|&p| s[p] as i64).collect();
            one(take(x[0].data(), &offsets(&out[0].shape, 0, &st)))
        }
        Op::Concat { axis } => {
            let outer: usize = out[0].shape[..*axis].iter().product();
            let inner: usize = out[0].shape[axis + 1..].iter().product();
            let mut idx: Vec<(usize, usize)> = Vec::with_capacity(out[0].numel());
            for o in 0..outer {
                for (k, t) in x.iter().enumerate() {
                    let chunk = t.shape()[*axis] * inner;
                    for i in 0..chunk {
                        idx.push((k, o * chunk + i));
                    }
                }
            }
            let d = with_type!(x[0].dtype(), T => {
                let parts: Vec<&[T]> = x.iter().map(|t| sl::<T>(t)).collect::<Result<_>>()?;
                T::wrap(idx.iter().map(|&(k, i)| parts[k][i]).collect())
            });
            one(d)
        }
        Op::Split { axis, sizes } => {
            let shape = x[0].shape();
            let s = strides(shape);
            let mut res = vec![];
            let mut start = 0usize;
            for (k, &n) in sizes.iter().enumerate() {
                let mut sub = shape.to_vec();
                sub[*axis] = n;
                let st: Vec<i64> = s.iter().map(|&v| v as i64).collect();
                let base = (start * s[*axis]) as i64;
                res.push(tensor(
                    &out[k],
                    take(x[0].data(), &offsets(&sub, base, &st)),
                )?);
                start += n;
            }
            Ok(res)
        }
        Op::Slice { dims } => {
            let s = strides(x[0].shape());
            let mut base = 0i64;
            let mut st = vec![];
            for (d, &stride) in dims.iter().zip(&s) {
                base += d.start * stride as i64;
                st.push(d.step * stride as i64);
            }
            one(take(x[0].data(), &offsets(&out[0].shape, base, &st)))
        }
        Op::Pad { pads, mode, value } => one(pad(x[0], pads, *mode, *value, &out[0].shape)?),
        Op::Gather { axis } => one(gather(x[0], x[1], *axis)?),
        Op::Expand { .. } => one(take(x[0].data(), &bcast_index(&out[0].shape, x[0].shape()))),
        Op::Arg {
            largest,
            axis,
            select_last_index,
            ..
        } => one(indexing::arg(x[0], *largest, *axis, *select_last_index)?),
        Op::Cumulative {
            product,
            axis,
            exclusive,
            reverse,
        } => one(indexing::cumulative(
            x[0], *product, *axis, *exclusive, *reverse,
        )?),
        Op::TopK { axis, k, largest } => indexing::top_k(x[0], *axis, *k, *largest)?
            .into_iter()
            .zip(out)
            .map(|(d, t)| tensor(t, d))
            .collect(),
        Op::GatherElements { axis } => one(indexing::gather_elements(x[0], x[1], *axis)?),
        Op::GatherNd { batch_dims } => one(indexing::gather_nd(x[0], x[1], *batch_dims)?),
        Op::ScatterElements { axis, reduction } => one(indexing::scatter_elements(
            x[0], x[1], x[2], *axis, *reduction,
        )?),
        Op::ScatterNd { reduction } => one(indexing::scatter_nd(x[0], x[1], x[2], *reduction)?),
    }
}

/// Run a whole graph. `inputs` are in graph-input order and must match their types.
pub fn run(graph: &Graph, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
    if inputs.len() != graph.inputs.len() {
        bail!(
            "the graph takes {} inputs, got {}",
            graph.inputs.len(),
            inputs.len()
        );
    }
    for (i, (gi, t)) in graph.inputs.iter().zip(inputs).enumerate() {
        let want = graph
            .g
            .node_weight(gi.node)
            .and_then(|n| n.outputs.first())
            .ok_or_else(|| IrError::new(format!("graph input {} has no node", gi.name)))?;
        if t.dtype() != want.dtype || t.shape() != want.shape.as_slice() {
            bail!(
                "input {} ('{}'): expected {}, got {}",
                i,
                gi.name,
                want,
                t.ty()
            );
        }
    }
    let order = graph.topo_order()?;
    // Remaining uses of every value; graph outputs pin their value.
    let mut uses: HashMap<Value, usize> = HashMap::new();
    for e in graph.g.edge_indices() {
        if let (Some((src, _)), Some(w)) = (graph.g.edge_endpoints(e), graph.g.edge_weight(e)) {
            *uses.entry(Value::new(src, w.src_port)).or_insert(0) += 1;
        }
    }
    for o in &graph.outputs {
        uses.insert(o.value, usize::MAX);
    }
    let mut vals: HashMap<Value, Cow<Tensor>> = HashMap::new();
    for n in order {
        let node = &graph.g[n];
        let results: Vec<Cow<Tensor>> = match &node.op {
            Op::Input { index } => match inputs.get(*index) {
                Some(t) => vec![Cow::Borrowed(t)],
                None => bail!("input node {} has index {} out of range", node.name, index),
            },
            Op::Constant { id } => match graph.consts.get(id.0 as usize) {
                Some(t) => vec![Cow::Borrowed(&**t)],
                None => bail!("constant node {} refers to missing c{}", node.name, id.0),
            },
            op => {
                let ins = graph.node_inputs(n);
                let mut args: Vec<&Tensor> = Vec::with_capacity(ins.len());
                for v in &ins {
                    match vals.get(v) {
                        Some(t) => args.push(t),
                        None => bail!("node {}: an input value is missing", node.name),
                    }
                }
                let r = eval_op(op, &args)
                    .map_err(|e| IrError::new(format!("node {}: {}", node.name, e)))?;
                if r.iter().map(|t| t.ty()).ne(node.outputs.iter().cloned()) {
                    bail!(
                        "node {}: computed types differ from the node's stored types {:?}",
                        node.name,
                        node.outputs
                    );
                }
                for v in ins {
                    if let Some(u) = uses.get_mut(&v) {
                        if *u != usize::MAX {
                            *u -= 1;
                            if *u == 0 {
                                vals.remove(&v);
                            }
                        }
                    }
                }
                r.into_iter().map(Cow::Owned).collect()
            }
        };
        for (port, t) in results.into_iter().enumerate() {
            let v = Value::new(n, port);
            if uses.get(&v).copied().unwrap_or(0) > 0 {
                vals.insert(v, t);
            }
        }
    }
    graph
        .outputs
        .iter()
        .map(|o| match vals.get(&o.value) {
            Some(t) => Ok(t.clone().into_owned()),
            None => bail!("graph output {} was not computed", o.name),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Elementwise.

/// `erf` in f64: Taylor series for |x| < 3, continued fraction of `erfc` beyond.
/// Accurate to about 1e-13 absolute.
pub fn erf_f64(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let r = if a < 3.0 {
        // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
        let x2 = a * a;
        let mut term = a; // (-1)^n x^(2n+1) / n!
        let mut sum = a;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let t = term / (2.0 * n + 1.0);
            sum += t;
            if t.abs() <= 1e-17 * sum.abs() {
                break;
            }
        }
        sum * std::f64::consts::FRAC_2_SQRT_PI
    } else if a < 27.0 {
        // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
        let mut f = a;
        for k in (1..=80).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / f;
        1.0 - erfc
    } else {
        1.0
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

fn unary(u: &UnaryOp, x: &Tensor) -> Result<Data> {
    // Float math in f64, rounded once to f32 for f32 tensors.
    let fmap = |f: &dyn Fn(f64) -> f64| -> Result<Data> {
        if let Data::F64(v) = x.data() {
            return Ok(Data::F64(v.iter().map(|&v| f(v)).collect()));
        }
        Ok(Data::F32(
            f32s(x)?.iter().map(|&v| f(v as f64) as f32).collect(),
        ))
    };
    match u {
        UnaryOp::Identity => Ok(x.data().clone()),
        UnaryOp::Not => Ok(Data::Bool(sl::<bool>(x)?.iter().map(|&b| !b).collect())),
        UnaryOp::BitNot => match x.data() {
            Data::I64(v) => Ok(Data::I64(v.iter().map(|a| !a).collect())),
            Data::I32(v) => Ok(Data::I32(v.iter().map(|a| !a).collect())),
            Data::I8(v) => Ok(Data::I8(v.iter().map(|a| !a).collect())),
            Data::U8(v) => Ok(Data::U8(v.iter().map(|a| !a).collect())),
            _ => bail!("bit_not needs integers, got {}", x.dtype()),
        },
        UnaryOp::IsNaN => Ok(Data::Bool(f32s(x)?.iter().map(|v| v.is_nan()).collect())),
        UnaryOp::FakeQuantize {
            scale,
            zero,
            signed,
        } => {
            let (lo, hi) = crate::linear_quantization::fake_quantize_bounds(*signed);
            let z = *zero as i32;
            Ok(Data::F32(
                f32s(x)?
                    .iter()
                    .map(|&v| {
                        let q = crate::linear_quantization::quantize(v, *scale, z, lo, hi);
                        crate::linear_quantization::dequantize(q as i64, z as i64, *scale)
                    })
                    .collect(),
            ))
        }
        UnaryOp::QuantizeActivation { scale, zero } => {
            let p = crate::QuantParams {
                scale: *scale,
                zero: *zero as u8,
            };
            let inverse = p.inverse();
            Ok(Data::U8(
                f32s(x)?.iter().map(|&v| p.quantize(v, inverse)).collect(),
            ))
        }
        UnaryOp::RoundToHalf { bfloat } => Ok(Data::F32(
            f32s(x)?
                .iter()
                .map(|&v| crate::narrow::round_to_half(v, *bfloat))
                .collect(),
        )),
        UnaryOp::Wrap { bits, signed } => match x.data() {
            Data::I64(v) => Ok(Data::I64(
                v.iter()
                    .map(|&a| crate::narrow::wrap(a, *bits, *signed))
                    .collect(),
            )),
            Data::I32(v) => Ok(Data::I32(
                v.iter()
                    .map(|&a| crate::narrow::wrap(a as i64, *bits, *signed) as i32)
                    .collect(),
            )),
            _ => bail!("wrap needs i64 or i32, got {}", x.dtype()),
        },
        UnaryOp::NanTo { value } => Ok(Data::F32(
            f32s(x)?
                .iter()
                .map(|&v| if v.is_nan() { *value } else { v })
                .collect(),
        )),
        UnaryOp::Relu => with_num_type!(x.dtype(), "relu", T => Ok(T::wrap(
            sl::<T>(x)?.iter().map(|&v| if v < T::zero() { T::zero() } else { v }).collect()
        ))),
        UnaryOp::Neg => with_num_type!(x.dtype(), "neg", T => Ok(T::wrap(
            sl::<T>(x)?.iter().map(|&v| v.neg()).collect()
        ))),
        UnaryOp::Abs => with_num_type!(x.dtype(), "abs", T => Ok(T::wrap(
            sl::<T>(x)?.iter().map(|&v| v.abs()).collect()
        ))),
        UnaryOp::Clip { min, max } => {
            let (lo, hi) = (*min as f64, *max as f64);
            with_num_type!(x.dtype(), "clip", T => Ok(T::wrap(
                sl::<T>(x)?
                    .iter()
                    .map(|&v| {
                        let f = v.to_f64();
                        if f < lo {
                            T::from_f64(lo)
                        } else if f > hi {
                            T::from_f64(hi)
                        } else {
                            v
                        }
                    })
                    .collect()
            )))
        }
        UnaryOp::Floor => fmap(&f64::floor),
        UnaryOp::Ceil => fmap(&f64::ceil),
        UnaryOp::Round => fmap(&f64::round_ties_even),
        UnaryOp::Sin => fmap(&f64::sin),
        UnaryOp::Cos => fmap(&f64::cos),
        UnaryOp::Tan => fmap(&f64::tan),
        UnaryOp::Asin => fmap(&f64::asin),
        UnaryOp::Acos => fmap(&f64::acos),
        UnaryOp::Atan => fmap(&f64::atan),
        UnaryOp::Sinh => fmap(&f64::sinh),
        UnaryOp::Cosh => fmap(&f64::cosh),
        UnaryOp::Asinh => fmap(&f64::asinh),
        UnaryOp::Acosh => fmap(&f64::acosh),
        UnaryOp::Atanh => fmap(&f64::atanh),
        UnaryOp::LeakyRelu { alpha } => {
            let a = *alpha as f64;
            fmap(&|v| if v < 0.0 { a * v } else { v })
        }
        UnaryOp::Sigmoid => fmap(&|v| 1.0 / (1.0 + (-v).exp())),
        UnaryOp::HardSigmoid { alpha, beta } => {
            let (a, b) = (*alpha as f64, *beta as f64);
            fmap(&|v| (a * v + b).clamp(0.0, 1.0))
        }
        UnaryOp::HardSwish => fmap(&|v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0)),
        // The sigmoid rounded to f32, as `Mul(x, Sigmoid(x))` has it; the exact product of
        // two f32 values rounds once.
        UnaryOp::Silu => fmap(&|v| v * ((1.0 / (1.0 + (-v).exp())) as f32 as f64)),
        // The chain's steps, each rounded to f32 (a sum or product of two f32 values computed
        // in f64 and rounded once is the f32 operation's result).
        UnaryOp::Gelu => fmap(&|v| {
            let r = |x: f64| x as f32 as f64;
            let z = r(v * crate::op::GELU_ERF_SCALE as f64);
            let e = r(erf_f64(z));
            r(v * r(e + 1.0)) * 0.5
        }),
        // The chain's steps, each rounded to f32; the cube as `Pow(x, 3)` computes it.
        UnaryOp::GeluTanh => fmap(&|v| {
            let r = |x: f64| x as f32 as f64;
            let half = r(v * 0.5);
            let cube = r(v.powf(3.0));
            let inner = r(v + r(cube * crate::op::GELU_TANH_CUBE as f64));
            let t = r(r(inner * crate::op::GELU_TANH_SCALE as f64).tanh());
            half * r(t + 1.0)
        }),
        UnaryOp::Tanh => fmap(&f64::tanh),
        UnaryOp::Erf => fmap(&erf_f64),
        UnaryOp::Exp => fmap(&f64::exp),
        UnaryOp::Log => fmap(&f64::ln),
        UnaryOp::Sqrt => fmap(&f64::sqrt),
    }
}

fn nan_max<T: Num>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        if a.is_nan() {
            a
        } else {
            b
        }
    } else if b > a {
        b
    } else {
        a
    }
}

fn nan_min<T: Num>(a: T, b: T) -> T {
    if a.is_nan() || b.is_nan() {
        if a.is_nan() {
            a
        } else {
            b
        }
    } else if b < a {
        b
    } else {
        a
    }
}

fn binary_num<T: Num>(op: BinaryOp, a: &[T], b: &[T], ia: &[usize], ib: &[usize]) -> Result<Data> {
    let n = ia.len();
    let pairs = (0..n).map(|i| (a[ia[i]], b[ib[i]]));
    let arith =
        |f: &dyn Fn(T, T) -> T| -> Data { T::wrap(pairs.clone().map(|(x, y)| f(x, y)).collect()) };
    let cmp = |f: &dyn Fn(T, T) -> bool| -> Data {
        Data::Bool(pairs.clone().map(|(x, y)| f(x, y)).collect())
    };
    Ok(match op {
        BinaryOp::Add => arith(&|x, y| x.add(y)),
        BinaryOp::Sub => arith(&|x, y| x.sub(y)),
        BinaryOp::Mul => arith(&|x, y| x.mul(y)),
        BinaryOp::Div => {
            let mut v = Vec::with_capacity(n);
            for (x, y) in pairs.clone() {
                match x.div(y) {
                    Some(q) => v.push(q),
                    None => bail!("div: integer division by zero ({:?} / {:?})", x, y),
                }
            }
            T::wrap(v)
        }
        BinaryOp::Max => arith(&nan_max),
        BinaryOp::Min => arith(&nan_min),
        BinaryOp::Equal => cmp(&|x, y| x == y),
        BinaryOp::Greater => cmp(&|x, y| x > y),
        BinaryOp::Less => cmp(&|x, y| x < y),
        BinaryOp::GreaterOrEqual => cmp(&|x, y| x >= y),
        BinaryOp::LessOrEqual => cmp(&|x, y| x <= y),
        BinaryOp::FMod if T::DT == DType::F32 => {
            arith(&|x, y| T::from_f64((x.to_f64() as f32 % y.to_f64() as f32) as f64))
        }
        BinaryOp::FMod if T::DT == DType::F64 => {
            arith(&|x, y| T::from_f64(x.to_f64() % y.to_f64()))
        }
        BinaryOp::Pow
        | BinaryOp::FMod
        | BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::BitAnd
        | BinaryOp::BitOr
        | BinaryOp::BitXor
        | BinaryOp::ShiftLeft
        | BinaryOp::ShiftRight => {
            bail!("{:?} does not take {}", op, T::DT)
        }
    })
}

fn pow_num<T: Num>(a: &[T], e: &Tensor, ia: &[usize], ib: &[usize]) -> Data {
    let exps_i = if e.dtype().is_int() {
        Some(e.to_i64_vec())
    } else {
        None
    };
    let exps_f = e.to_f64_vec();
    T::wrap(
        (0..ia.len())
            .map(|i| {
                let x = a[ia[i]];
                if T::DT == DType::F32 {
                    return T::from_f64(x.to_f64().powf(exps_f[ib[i]]));
                }
                let ie = match &exps_i {
                    Some(v) => Some(v[ib[i]]),
                    None => {
                        let f = exps_f[ib[i]];
                        if f.fract() == 0.0 && (0.0..1.8e19).contains(&f) {
                            Some(f as i64).filter(|&k| k >= 0)
                        } else {
                            None
                        }
                    }
                };
                match ie {
                    Some(k) if k >= 0 => x.ipow(k as u64),
                    _ => T::from_f64(x.to_f64().powf(exps_f[ib[i]])),
                }
            })
            .collect(),
    )
}

/// The bitwise ops on integers, computed on their i64 values (sign- or zero-extended) and
/// wrapped to the element width; shift amounts are taken modulo the width.
fn bitwise(op: BinaryOp, a: &Tensor, b: &Tensor, ia: &[usize], ib: &[usize]) -> Result<Data> {
    let dt = a.dtype();
    let width: u64 = match dt {
        DType::I64 => 64,
        DType::I32 => 32,
        DType::I8 | DType::U8 => 8,
        _ => bail!("{:?} needs integers, got {}", op, dt),
    };
    let (x, y) = (a.to_i64_vec(), b.to_i64_vec());
    let v = (0..ia.len()).map(|i| {
        let (p, q) = (x[ia[i]], y[ib[i]]);
        let k = (q as u64 % width) as u32;
        match op {
            BinaryOp::BitAnd => p & q,
            BinaryOp::BitOr => p | q,
            BinaryOp::BitXor => p ^ q,
            BinaryOp::ShiftLeft => p.wrapping_shl(k),
            // arithmetic on a sign-extended value, logical on a zero-extended one
            _ => p >> k,
        }
    });
    Ok(match dt {
        DType::I64 => Data::I64(v.collect()),
        DType::I32 => Data::I32(v.map(|r| r as i32).collect()),
        DType::I8 => Data::I8(v.map(|r| r as i8).collect()),
        _ => Data::U8(v.map(|r| r as u8).collect()),
    })
}

fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &[usize]) -> Result<Data> {
    let ia = bcast_index(out, a.shape());
    let ib = bcast_index(out, b.shape());
    if op.is_bitwise() {
        return bitwise(op, a, b, &ia, &ib);
    }
    if op == BinaryOp::Pow {
        return with_num_type!(a.dtype(), "pow", T => Ok(pow_num::<T>(sl::<T>(a)?, b, &ia, &ib)));
    }
    if a.dtype() == DType::Bool {
        let (x, y) = (sl::<bool>(a)?, sl::<bool>(b)?);
        let f: fn(bool, bool) -> bool = match op {
            BinaryOp::And => |p, q| p && q,
            BinaryOp::Or => |p, q| p || q,
            BinaryOp::Equal => |p, q| p == q,
            _ => bail!("{:?} does not take bool", op),
        };
        return Ok(Data::Bool(
            (0..ia.len()).map(|i| f(x[ia[i]], y[ib[i]])).collect(),
        ));
    }
    with_num_type!(a.dtype(), "binary op", T => binary_num::<T>(op, sl::<T>(a)?, sl::<T>(b)?, &ia, &ib))
}

// ---------------------------------------------------------------------------------------------
// Linear algebra.

fn matmul(a: &Tensor, b: &Tensor) -> Result<Data> {
    // Products summed in f64 in k order (f32: rounded once).
    let f64_out = a.dtype() == DType::F64;
    let (av, bv) = (a.to_f64_vec(), b.to_f64_vec());
    let mut sa = a.shape().to_vec();
    let mut sb = b.shape().to_vec();
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let batch = broadcast_shapes(ba, bb)?;
    let oa = bcast_index(&batch, ba);
    let ob = bcast_index(&batch, bb);
    let mut out = Vec::with_capacity(oa.len() * m * n);
    for (&pa, &pb) in oa.iter().zip(&ob) {
        let (a0, b0) = (pa * m * k, pb * k * n);
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    acc += av[a0 + i * k + p] * bv[b0 + p * n + j];
                }
                out.push(acc);
            }
        }
    }
    Ok(if f64_out {
        Data::F64(out)
    } else {
        Data::F32(out.into_iter().map(|v| v as f32).collect())
    })
}

fn gemm(x: &[&Tensor], alpha: f32, beta: f32, ta: bool, tb: bool, out: &[usize]) -> Result<Data> {
    let (a, b) = (f32s(x[0])?, f32s(x[1])?);
    let (m, n) = (out[0], out[1]);
    let k = if ta { x[0].shape()[0] } else { x[0].shape()[1] };
    let (sa0, sa1) = (x[0].shape()[0], x[0].shape()[1]);
    let (sb0, sb1) = (x[1].shape()[0], x[1].shape()[1]);
    let _ = (sa0, sb0);
    let at = |i: usize, p: usize| if ta { a[p * sa1 + i] } else { a[i * sa1 + p] };
    let bt = |p: usize, j: usize| if tb { b[j * sb1 + p] } else { b[p * sb1 + j] };
    let c = match x.get(2) {
        Some(c) => Some((f32s(c)?, bcast_index(out, c.shape()))),
        None => None,
    };
    let mut y = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += at(i, p) as f64 * bt(p, j) as f64;
            }
            let mut v = alpha as f64 * acc;
            if let Some((cv, ci)) = &c {
                v += beta as f64 * cv[ci[i * n + j]] as f64;
            }
            y.push(v as f32);
        }
    }
    Ok(Data::F32(y))
}

// ---------------------------------------------------------------------------------------------
// Windows: conv and pools.

/// For each output spatial position (row-major): the valid cells of the window as
/// `(kernel offset, input offset within one plane)` and the number of cells that lie inside
/// the padded input (for `count_include_pad`).
fn window_cells(w: &Window, isp: &[usize], osp: &[usize]) -> Vec<(Vec<(usize, usize)>, usize)> {
    let nsp = w.nsp();
    let ist = strides(isp);
    let kidx = multi_indices(&w.kernel);
    let mut res = Vec::new();
    for o in multi_indices(osp) {
        let mut cells = vec![];
        for (ki, k) in kidx.iter().enumerate() {
            let mut off = 0usize;
            let mut ok = true;
            for d in 0..nsp {
                let p = (o[d] * w.strides[d] + k[d] * w.dilations[d]) as i64 - w.pads[d] as i64;
                if p < 0 || p >= isp[d] as i64 {
                    ok = false;
                    break;
                }
                off += p as usize * ist[d];
            }
            if ok {
                cells.push((ki, off));
            }
        }
        let mut padded = 1usize;
        for d in 0..nsp {
            let ext = (isp[d] + w.pads[d] + w.pads[nsp + d]) as i64;
            let cnt = (0..w.kernel[d])
                .filter(|&k| {
                    let p = (o[d] * w.strides[d] + k * w.dilations[d]) as i64;
                    p < ext
                })
                .count();
            padded *= cnt;
        }
        res.push((cells, padded));
    }
    res
}

fn conv(x: &[&Tensor], w: &Window, group: usize, out: &[usize]) -> Result<Data> {
    match x[0].dtype() {
        DType::F64 => conv_of::<f64>(x, w, group, out),
        _ => conv_of::<f32>(x, w, group, out),
    }
}

/// A conv of `T` elements: each output the bias, then the products in order, summed in f64
/// (f32: rounded to f32 once at the end).
fn conv_of<T: Elem>(x: &[&Tensor], w: &Window, group: usize, out: &[usize]) -> Result<Data> {
    let (xv, wv) = (sl::<T>(x[0])?, sl::<T>(x[1])?);
    let bias = match x.get(2) {
        Some(b) => Some(sl::<T>(b)?),
        None => None,
    };
    let xs = x[0].shape();
    let ws = x[1].shape();
    let (nb, c, m) = (xs[0], xs[1], ws[0]);
    let cg = ws[1];
    let mg = m / group;
    let isz: usize = xs[2..].iter().product();
    let ksz: usize = w.kernel.iter().product();
    let cells = window_cells(w, &xs[2..], &out[2..]);
    // The input is padded with zeros and multiplied like the rest (as the spec's reference
    // and the kernels that pack or copy a padded input do): a tap over padding adds
    // `0 x w`, which is 0 unless `w` is NaN or infinite, and then NaN.
    let nonfinite: Vec<bool> = wv
        .chunks(ksz)
        .map(|k| k.iter().any(|x| !x.to_f64().is_finite()))
        .collect();
    let mut y = Vec::with_capacity(nb * m * cells.len());
    for n in 0..nb {
        for oc in 0..m {
            let g = oc / mg;
            for (cl, _) in &cells {
                let mut acc = bias.map_or(0.0, |b| b[oc].to_f64());
                for ci in 0..cg {
                    let xb = (n * c + g * cg + ci) * isz;
                    let wb = (oc * cg + ci) * ksz;
                    for &(ki, off) in cl {
                        acc += xv[xb + off].to_f64() * wv[wb + ki].to_f64();
                    }
                    if cl.len() < ksz && nonfinite[oc * cg + ci] {
                        let over_padding = (0..ksz).filter(|ki| !cl.iter().any(|c| c.0 == *ki));
                        for ki in over_padding {
                            acc += 0.0 * wv[wb + ki].to_f64();
                        }
                    }
                }
                y.push(T::from_f64_cast(acc));
            }
        }
    }
    Ok(T::wrap(y))
}

/// `avg = None` is max pooling; `Some(count_include_pad)` is average pooling.
fn pool(x: &Tensor, w: &Window, avg: Option<bool>, out: &[usize]) -> Result<Data> {
    match x.dtype() {
        DType::F64 => pool_of::<f64>(x, w, avg, out),
        _ => pool_of::<f32>(x, w, avg, out),
    }
}

/// A pool of `T` elements (see [`pool`]); averages summed in f64 and rounded once.
fn pool_of<T: Elem>(x: &Tensor, w: &Window, avg: Option<bool>, out: &[usize]) -> Result<Data> {
    let xv = sl::<T>(x)?;
    let xs = x.shape();
    let planes = xs[0] * xs[1];
    let isz: usize = xs[2..].iter().product();
    let cells = window_cells(w, &xs[2..], &out[2..]);
    let mut y = Vec::with_capacity(planes * cells.len());
    for p in 0..planes {
        let base = p * isz;
        for (cl, padded) in &cells {
            let v = match avg {
                None => {
                    let mut best = T::from_f64_cast(f64::NEG_INFINITY);
                    let mut all_nan = !cl.is_empty();
                    for &(_, off) in cl {
                        let v = xv[base + off];
                        if !v.to_f64().is_nan() {
                            all_nan = false;
                            if v > best {
                                best = v;
                            }
                        }
                    }
                    if all_nan {
                        T::from_f64_cast(f64::NAN)
                    } else {
                        best
                    }
                }
                Some(include_pad) => {
                    let s: f64 = cl.iter().map(|&(_, off)| xv[base + off].to_f64()).sum();
                    let cnt = if include_pad { *padded } else { cl.len() };
                    if cnt == 0 {
                        T::from_f64_cast(0.0)
                    } else {
                        T::from_f64_cast(s / cnt as f64)
                    }
                }
            };
            y.push(v);
        }
    }
    Ok(T::wrap(y))
}

// ---------------------------------------------------------------------------------------------
// Reductions and normalizations.

fn reduce(x: &Tensor, kind: ReduceKind, axes: &[usize], out: &TensorType) -> Result<Data> {
    // Map each input element to its output element.
    let xs = x.shape();
    let kept: Vec<usize> = (0..xs.len())
        .map(|i| if axes.contains(&i) { 1 } else { xs[i] })
        .collect();
    let ks = strides(&kept);
    let st: Vec<i64> = (0..xs.len())
        .map(|i| if axes.contains(&i) { 0 } else { ks[i] as i64 })
        .collect();
    let dst = offsets(xs, 0, &st);
    let nout = out.numel();
    let count: usize = axes.iter().map(|&a| xs[a]).product();
    if matches!(x.dtype(), DType::F32 | DType::F64) {
        // Accumulated in f64 (f32: rounded once at the end).
        let v = x.to_f64_vec();
        let mut acc = vec![
            match kind {
                ReduceKind::Max => f64::NEG_INFINITY,
                ReduceKind::Min => f64::INFINITY,
                ReduceKind::Prod => 1.0,
                _ => 0.0,
            };
            nout
        ];
        let mut seen_num = vec![false; nout];
        for (&o, &e) in dst.iter().zip(&v) {
            match kind {
                ReduceKind::Sum | ReduceKind::Mean => acc[o] += e,
                ReduceKind::L2 => acc[o] += e * e,
                ReduceKind::Prod => acc[o] *= e,
                ReduceKind::Max | ReduceKind::Min => {
                    if !e.is_nan() {
                        seen_num[o] = true;
                        let wins = if kind == ReduceKind::Max {
                            e > acc[o]
                        } else {
                            e < acc[o]
                        };
                        if wins {
                            acc[o] = e;
                        }
                    }
                }
            }
        }
        let r = acc.iter().enumerate().map(|(i, &a)| match kind {
            ReduceKind::Sum | ReduceKind::Prod => a,
            ReduceKind::Mean => a / count as f64,
            ReduceKind::L2 => a.sqrt(),
            ReduceKind::Max | ReduceKind::Min => {
                if count > 0 && !seen_num[i] {
                    f64::NAN
                } else {
                    a
                }
            }
        });
        return Ok(match x.dtype() {
            DType::F64 => Data::F64(r.collect()),
            _ => Data::F32(r.map(|a| a as f32).collect()),
        });
    }
    if x.dtype() == DType::Bool {
        // Max is "any", min is "all" (the inference admits nothing else on bool).
        let v = sl::<bool>(x)?;
        if count == 0 {
            bail!(
                "{} over an empty axis of a bool tensor",
                ReduceKind::name(kind)
            );
        }
        let max = kind == ReduceKind::Max;
        let mut acc = vec![!max; nout];
        for (&o, &e) in dst.iter().zip(v) {
            acc[o] = if max { acc[o] || e } else { acc[o] && e };
        }
        return Ok(Data::Bool(acc));
    }
    with_num_type!(x.dtype(), "reduce", T => {
        let v = sl::<T>(x)?;
        if matches!(kind, ReduceKind::Max | ReduceKind::Min) && count == 0 {
            bail!("{} over an empty axis of an integer tensor", ReduceKind::name(kind));
        }
        let mut acc: Vec<Option<T>> = vec![None; nout];
        for (&o, &e) in dst.iter().zip(v) {
            acc[o] = Some(match (acc[o], kind) {
                (None, _) => e,
                (Some(a), ReduceKind::Max) => if e > a { e } else { a },
                (Some(a), ReduceKind::Min) => if e < a { e } else { a },
                (Some(a), ReduceKind::Prod) => a.mul(e),
                (Some(a), _) => a.add(e),
            });
        }
        let mut r = Vec::with_capacity(nout);
        for a in acc {
            let s = a.unwrap_or(if kind == ReduceKind::Prod { T::from_i64(1) } else { T::zero() });
            r.push(match kind {
                ReduceKind::Mean => match s.div(T::from_i64(count as i64)) {
                    Some(q) => q,
                    None => bail!("reduce_mean over an empty axis of an integer tensor"),
                },
                ReduceKind::L2 => bail!("reduce_l2 does not take {}", T::DT),
                _ => s,
            });
        }
        Ok(T::wrap(r))
    })
}

fn softmax(x: &Tensor, axis: usize) -> Result<Data> {
    // In f64 (f32: rounded once).
    let v = x.to_f64_vec();
    let s = x.shape();
    let n = s[axis];
    let inner: usize = s[axis + 1..].iter().product();
    let outer: usize = s[..axis].iter().product();
    let mut y = vec![0.0f64; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| o * n * inner + j * inner + i;
            let mx = (0..n).map(|j| v[at(j)]).fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = (0..n).map(|j| (v[at(j)] - mx).exp()).sum();
            for j in 0..n {
                y[at(j)] = (v[at(j)] - mx).exp() / sum;
            }
        }
    }
    Ok(match x.dtype() {
        DType::F64 => Data::F64(y),
        _ => Data::F32(y.into_iter().map(|a| a as f32).collect()),
    })
}

fn layer_norm(x: &[&Tensor], axis: usize, eps: f32) -> Result<Data> {
    let v = f32s(x[0])?;
    let norm = &x[0].shape()[axis..];
    let n: usize = norm.iter().product();
    let sc = f32s(x[1])?;
    let si = bcast_index(norm, x[1].shape());
    let bias = match x.get(2) {
        Some(b) => Some((f32s(b)?, bcast_index(norm, b.shape()))),
        None => None,
    };
    let mut y = Vec::with_capacity(v.len());
    if n == 0 {
        return Ok(Data::F32(y));
    }
    for row in v.chunks(n) {
        let mean = row.iter().map(|&e| e as f64).sum::<f64>() / n as f64;
        let var = row
            .iter()
            .map(|&e| (e as f64 - mean) * (e as f64 - mean))
            .sum::<f64>()
            / n as f64;
        let d = (var + eps as f64).sqrt();
        for (j, &e) in row.iter().enumerate() {
            let mut r = (e as f64 - mean) / d * sc[si[j]] as f64;
            if let Some((b, bi)) = &bias {
                r += b[bi[j]] as f64;
            }
            y.push(r as f32);
        }
    }
    Ok(Data::F32(y))
}

// ---------------------------------------------------------------------------------------------
// Data movement.

fn pad(x: &Tensor, pads: &[i64], mode: PadMode, value: f32, out: &[usize]) -> Result<Data> {
    let xs = x.shape();
    let r = xs.len();
    let ist = strides(xs);
    // Per dim: for each output index, the source index (None = constant fill).
    let mut per_dim: Vec<Vec<Option<usize>>> = Vec::with_capacity(r);
    for d in 0..r {
        let n = xs[d] as i64;
        let mut m = Vec::with_capacity(out[d]);
        for i in 0..out[d] as i64 {
            let src = mode.source_index(i, pads[d], n);
            m.push(src.map(|s| s as usize * ist[d]));
        }
        per_dim.push(m);
    }
    let idx: Vec<Option<usize>> = multi_indices(out)
        .into_iter()
        .map(|o| {
            let mut off = 0;
            for d in 0..r {
                off += per_dim[d][o[d]]?;
            }
            Some(off)
        })
        .collect();
    Ok(with_type!(x.dtype(), T => {
        let v = sl::<T>(x)?;
        let fill = T::from_f32(value);
        T::wrap(idx.iter().map(|i| match i { Some(i) => v[*i], None => fill }).collect())
    }))
}

fn gather(d: &Tensor, i: &Tensor, axis: usize) -> Result<Data> {
    let ds = d.shape();
    let dim = ds[axis];
    let outer: usize = ds[..axis].iter().product();
    let inner: usize = ds[axis + 1..].iter().product();
    let mut idx = Vec::with_capacity(i.numel());
    for k in i.to_i64_vec() {
        let j = if k < 0 { k + dim as i64 } else { k };
        if j < 0 || j >= dim as i64 {
            bail!(
                "gather: index {} is out of range for axis {} of extent {}",
                k,
                axis,
                dim
            );
        }
        idx.push(j as usize);
    }
    let mut src = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &j in &idx {
            for e in 0..inner {
                src.push((o * dim + j) * inner + e);
            }
        }
    }
    Ok(take(d.data(), &src))
}

/// Each element's bits as `to` (of the same width).
fn bitcast(x: &Tensor, to: DType) -> Result<Data> {
    let data = match (x.data(), to) {
        (Data::F32(v), DType::I32) => Data::I32(v.iter().map(|e| e.to_bits() as i32).collect()),
        (Data::I32(v), DType::F32) => {
            Data::F32(v.iter().map(|&e| f32::from_bits(e as u32)).collect())
        }
        (Data::F64(v), DType::I64) => Data::I64(v.iter().map(|e| e.to_bits() as i64).collect()),
        (Data::I64(v), DType::F64) => {
            Data::F64(v.iter().map(|&e| f64::from_bits(e as u64)).collect())
        }
        (Data::I8(v), DType::U8) => Data::U8(v.iter().map(|&e| e as u8).collect()),
        (Data::U8(v), DType::I8) => Data::I8(v.iter().map(|&e| e as i8).collect()),
        (d, t) if d.dtype() == t => d.clone(),
        (d, t) => bail!("bitcast of {} to {t}: not one width", d.dtype()),
    };
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_known_values() {
        // Values from Abramowitz & Stegun table 7.1 / high-precision references.
        let cases = [
            (0.0, 0.0),
            (0.1, 0.1124629160182849),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (1.5, 0.9661051464753108),
            (2.0, 0.9953222650189527),
            (2.5, 0.999593047982555),
            (3.0, 0.9999779095030014),
            (3.5, 0.9999992569016276),
            (4.0, 0.9999999845827421),
        ];
        for (x, want) in cases {
            let got = erf_f64(x);
            assert!((got - want).abs() < 1e-13, "erf({x}) = {got}, want {want}");
            assert!((erf_f64(-x) + want).abs() < 1e-13);
        }
        // Continuity at the switch point between series and continued fraction.
        let (a, b) = (erf_f64(3.0 - 1e-12), erf_f64(3.0));
        assert!((a - b).abs() < 1e-12);
        assert_eq!(erf_f64(30.0), 1.0);
        assert!(erf_f64(f64::NAN).is_nan());
    }

    #[test]
    fn offsets_odometer() {
        assert_eq!(offsets(&[2, 3], 0, &[3, 1]), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(offsets(&[2, 3], 0, &[1, 2]), vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(bcast_index(&[2, 3], &[3]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(bcast_index(&[2, 3], &[2, 1]), vec![0, 0, 0, 1, 1, 1]);
        assert_eq!(offsets(&[], 0, &[]), vec![0]);
    }
}
