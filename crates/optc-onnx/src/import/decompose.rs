//! ONNX ops that are exactly a short composition of ops optc already has, imported as that
//! composition (the optimizer fuses the elementwise chains again, so nothing is lost at
//! run time): the activation functions `Elu`, `Selu`, `Celu`, `Softplus`, `Softsign`,
//! `Mish`, `ThresholdedRelu`, `Shrink`, `Gelu`, `PRelu`; `LogSoftmax`; the reductions
//! `ReduceL1`, `ReduceSumSquare`, `ReduceLogSum`, `ReduceLogSumExp`; `Mean`; `CastLike`;
//! data movement `Tile`, `DepthToSpace`, `SpaceToDepth`; `Trilu` and `OneHot` (with masks
//! known at compile time); `InstanceNormalization` and `GroupNormalization` (a layer
//! norm over the right axes, then the per-channel scale and bias); `LpNormalization`;
//! `MeanVarianceNormalization`; `RMSNormalization`.
//!
//! Each formula is the one the ONNX spec gives, written where it matters in its
//! numerically stable form (`Softplus(x) = max(x, 0) + log(1 + exp(-|x|))`, `LogSoftmax`
//! and `ReduceLogSumExp` shifted by the maximum).

use super::steps::Steps;
use super::{norm_axis, reduce_axes, Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, ReduceKind, Tensor, UnaryOp};
use tract_onnx::pb;

impl Steps<'_> {
    /// A scalar of `like`'s float type: `v64` for f64, else `v32` (a constant written out
    /// for f32, so that the f32 steps keep their exact constants).
    pub(super) fn float(&mut self, v32: f32, v64: f64, like: &Val) -> Val {
        if self.ctx.ty(like).dtype == DType::F64 {
            self.constant(Tensor::new(vec![], Data::F64(vec![v64])).expect("a scalar"))
        } else {
            self.f32(v32)
        }
    }

    /// A scalar `v` (exact in f32) of `like`'s float type.
    fn exact(&mut self, v: f32, like: &Val) -> Val {
        self.float(v, v as f64, like)
    }

    /// A tensor of ones of `shape` and `like`'s float type (a conv's summing kernel).
    fn ones(&mut self, shape: Vec<usize>, like: &Val) -> R<Val> {
        let n: usize = shape.iter().product();
        let data = if self.ctx.ty(like).dtype == DType::F64 {
            Data::F64(vec![1.0; n])
        } else {
            Data::F32(vec![1.0; n])
        };
        Ok(self.constant(Tensor::new(shape, data).map_err(|e| e.msg)?))
    }

    /// `max(x, 0) + log(1 + exp(-|x|))`: softplus without overflow.
    fn softplus(&mut self, x: &Val) -> R<Val> {
        let zero = self.exact(0.0, x);
        let one = self.exact(1.0, x);
        let pos = self.binary(BinaryOp::Max, x, &zero)?;
        let abs = self.unary(UnaryOp::Abs, x)?;
        let neg = self.unary(UnaryOp::Neg, &abs)?;
        let e = self.unary(UnaryOp::Exp, &neg)?;
        let s = self.binary(BinaryOp::Add, &one, &e)?;
        let l = self.unary(UnaryOp::Log, &s)?;
        self.binary(BinaryOp::Add, &pos, &l)
    }

    /// `alpha * (exp(x) - 1)` where `x <= 0`, `x` elsewhere.
    fn elu(&mut self, x: &Val, alpha: f32) -> R<Val> {
        let zero = self.exact(0.0, x);
        let one = self.exact(1.0, x);
        let a = self.exact(alpha, x);
        let e = self.unary(UnaryOp::Exp, x)?;
        let em1 = self.binary(BinaryOp::Sub, &e, &one)?;
        let neg = self.binary(BinaryOp::Mul, &a, &em1)?;
        let pos = self.binary(BinaryOp::Greater, x, &zero)?;
        self.op(Op::Where, &[pos, x.clone(), neg])
    }
}

fn need_f32(ctx: &Ctx, x: &Val, op: &str) -> R<()> {
    let t = ctx.ty(x);
    if t.dtype != DType::F32 {
        return Err(format!("{op} of {} is not supported (f32 only)", t.dtype));
    }
    Ok(())
}

/// The op types this module imports.
pub(super) const OPS: &[&str] = &[
    "CastLike",
    "Celu",
    "DepthToSpace",
    "Elu",
    "Gelu",
    "GroupNormalization",
    "InstanceNormalization",
    "LogSoftmax",
    "LpNormalization",
    "Mean",
    "MeanVarianceNormalization",
    "Mish",
    "NegativeLogLikelihoodLoss",
    "OneHot",
    "PRelu",
    "ReduceL1",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
    "RMSNormalization",
    "Selu",
    "Shrink",
    "SoftmaxCrossEntropyLoss",
    "Softplus",
    "Softsign",
    "SpaceToDepth",
    "ThresholdedRelu",
    "Tile",
    "Trilu",
    "Swish",
    "SwiGLU",
    "LpPool",
    "LRN",
    "CenterCropPad",
    "HannWindow",
    "HammingWindow",
    "BlackmanWindow",
    "EyeLike",
    "Sign",
    "Xor",
    "IsInf",
    "Hardmax",
    "Mod",
    "BitShift",
];

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let op_type = node.op_type.as_str();
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    let opset = ctx.opset;
    let float_ops = [
        "Celu",
        "Elu",
        "Gelu",
        "GroupNormalization",
        "InstanceNormalization",
        "LogSoftmax",
        "LpNormalization",
        "MeanVarianceNormalization",
        "Mish",
        "NegativeLogLikelihoodLoss",
        "PRelu",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "RMSNormalization",
        "Selu",
        "SoftmaxCrossEntropyLoss",
        "Softplus",
        "Softsign",
        "ThresholdedRelu",
        "Swish",
        "SwiGLU",
        "LpPool",
        "LRN",
        "RMSNormalization",
        "NegativeLogLikelihoodLoss",
        "SoftmaxCrossEntropyLoss",
    ];
    // Float inputs: f32 (and the narrow floats it holds) or f64 (their steps are
    // elementwise math, reductions and convs, which f64 has too; constants of the input's
    // type, `Steps::float`).
    if float_ops.contains(&op_type) && ctx.ty(&x).dtype != DType::F64 {
        need_f32(ctx, &x, op_type)?;
    }
    // Constant inputs, read before the steps borrow the context.
    let second = ctx.input(node, 1);
    let third = ctx.input(node, 2);
    let mut s = Steps::new(ctx, name);
    let out = match op_type {
        "NegativeLogLikelihoodLoss" | "SoftmaxCrossEntropyLoss" => {
            let target = second.ok_or("the target (input #1) is missing")?;
            return loss(
                &mut s,
                &a,
                op_type == "SoftmaxCrossEntropyLoss",
                x,
                target,
                third,
            );
        }
        "Elu" => {
            let alpha = a.float_or("alpha", 1.0);
            s.elu(&x, alpha)?
        }
        "Selu" => {
            let alpha = a.float_or("alpha", 1.673_263_2);
            let gamma = a.float_or("gamma", 1.050_701);
            let y = s.elu(&x, alpha)?;
            let g = s.exact(gamma, &x);
            s.last(Op::Binary(BinaryOp::Mul), &[g, y])?
        }
        "Celu" => {
            let alpha = a.float_or("alpha", 1.0);
            if alpha == 0.0 {
                return Err("alpha must not be 0".into());
            }
            let inv = s.float(1.0 / alpha, 1.0 / alpha as f64, &x);
            let scaled = s.binary(BinaryOp::Mul, &x, &inv)?;
            let e = s.elu(&scaled, alpha)?;
            let zero = s.exact(0.0, &x);
            let pos = s.binary(BinaryOp::Max, &x, &zero)?;
            let neg = s.binary(BinaryOp::Min, &e, &zero)?;
            s.last(Op::Binary(BinaryOp::Add), &[pos, neg])?
        }
        "Softplus" => s.softplus(&x)?,
        "Softsign" => {
            let one = s.exact(1.0, &x);
            let abs = s.unary(UnaryOp::Abs, &x)?;
            let d = s.binary(BinaryOp::Add, &one, &abs)?;
            s.last(Op::Binary(BinaryOp::Div), &[x, d])?
        }
        "Mish" => {
            let sp = s.softplus(&x)?;
            let t = s.unary(UnaryOp::Tanh, &sp)?;
            s.last(Op::Binary(BinaryOp::Mul), &[x, t])?
        }
        "ThresholdedRelu" => {
            let alpha = s.exact(a.float_or("alpha", 1.0), &x);
            let zero = s.exact(0.0, &x);
            let keep = s.binary(BinaryOp::Greater, &x, &alpha)?;
            s.last(Op::Where, &[keep, x, zero])?
        }
        "Shrink" => {
            if xt.dtype != DType::F64 {
                need_f32(s.ctx, &x, "Shrink")?;
            }
            let lambd = a.float_or("lambd", 0.5);
            let bias = a.float_or("bias", 0.0);
            let lo = s.exact(-lambd, &x);
            let hi = s.exact(lambd, &x);
            let b = s.exact(bias, &x);
            let zero = s.exact(0.0, &x);
            let below = s.binary(BinaryOp::Less, &x, &lo)?;
            let above = s.binary(BinaryOp::Greater, &x, &hi)?;
            let plus = s.binary(BinaryOp::Add, &x, &b)?;
            let minus = s.binary(BinaryOp::Sub, &x, &b)?;
            let inner = s.op(Op::Where, &[above, minus, zero])?;
            s.last(Op::Where, &[below, plus, inner])?
        }
        "Gelu" => {
            let half = s.exact(0.5, &x);
            let one = s.exact(1.0, &x);
            // (f64: the spec's function, its float constants cast to double: x / sqrt(2),
            // sqrt(0.63661975f), 0.044715f, Pow(x, 3).)
            let f64 = xt.dtype == DType::F64;
            let inner = match a.string("approximate").as_deref().unwrap_or("none") {
                "none" => {
                    let z = if f64 {
                        let root = s.float(0.0, std::f64::consts::SQRT_2, &x);
                        s.binary(BinaryOp::Div, &x, &root)?
                    } else {
                        let k = s.f32(std::f32::consts::FRAC_1_SQRT_2);
                        s.binary(BinaryOp::Mul, &x, &k)?
                    };
                    s.unary(UnaryOp::Erf, &z)?
                }
                "tanh" => {
                    // f32: sqrt(2/pi) rounded once (computed in f32 it is an ulp below) and the
                    // cube as `Pow`: GPT-2's chain, which `gelu-tanh-recognize` makes one op.
                    let c = s.exact(0.044_715, &x);
                    let k = s.float(
                        optc_ir::GELU_TANH_SCALE,
                        ((2.0 / std::f32::consts::PI) as f64).sqrt(),
                        &x,
                    );
                    let three = s.exact(3.0, &x);
                    let x3 = s.binary(BinaryOp::Pow, &x, &three)?;
                    let cx3 = s.binary(BinaryOp::Mul, &c, &x3)?;
                    let sum = s.binary(BinaryOp::Add, &x, &cx3)?;
                    let z = s.binary(BinaryOp::Mul, &k, &sum)?;
                    s.unary(UnaryOp::Tanh, &z)?
                }
                other => {
                    return Err(format!(
                        "approximate '{other}' is not supported (none, tanh)"
                    ))
                }
            };
            let p = s.binary(BinaryOp::Add, &one, &inner)?;
            let hx = s.binary(BinaryOp::Mul, &half, &x)?;
            s.last(Op::Binary(BinaryOp::Mul), &[hx, p])?
        }
        "PRelu" => {
            let slope = second.ok_or("the slope (input #1) is missing")?;
            let zero = s.exact(0.0, &x);
            let neg = s.binary(BinaryOp::Less, &x, &zero)?;
            let scaled = s.binary(BinaryOp::Mul, &x, &slope)?;
            let y = s.op(Op::Where, &[neg, scaled, x.clone()])?;
            if s.ctx.ty(&y) != xt {
                return Err(format!(
                    "the slope {} does not broadcast to the input {xt}",
                    s.ctx.ty(&slope)
                ));
            }
            y
        }
        "LogSoftmax" => {
            let r = xt.rank();
            if opset >= 13 {
                let axis = norm_axis(a.int_or("axis", -1), r, "axis")?;
                log_softmax(&mut s, &x, axis)?
            } else {
                // Before opset 13 the input is seen as 2-D, split at `axis`.
                let axis = norm_axis(a.int_or("axis", 1), r, "axis")?;
                let outer: usize = xt.shape[..axis].iter().product();
                let inner: usize = xt.shape[axis..].iter().product();
                let flat = s.reshape(&x, vec![outer, inner])?;
                let y = log_softmax(&mut s, &flat, 1)?;
                s.reshape(&y, xt.shape.clone())?
            }
        }
        "ReduceL1" | "ReduceSumSquare" | "ReduceLogSum" | "ReduceLogSumExp" => {
            let axes = if opset >= 18 {
                s.ctx
                    .constant_input(node, 1, "axes")?
                    .map(|t| t.to_i64_vec())
            } else {
                a.ints("axes")
            };
            let Some((axes, keepdims)) = reduce_axes(&a, xt.rank(), axes)? else {
                return Ok(vec![Some(x)]);
            };
            match op_type {
                "ReduceL1" => {
                    let abs = s.unary(UnaryOp::Abs, &x)?;
                    s.reduce(ReduceKind::Sum, &abs, &axes, keepdims)?
                }
                "ReduceSumSquare" => {
                    let sq = s.binary(BinaryOp::Mul, &x, &x)?;
                    s.reduce(ReduceKind::Sum, &sq, &axes, keepdims)?
                }
                "ReduceLogSum" => {
                    let sum = s.reduce(ReduceKind::Sum, &x, &axes, keepdims)?;
                    s.last(Op::Unary(UnaryOp::Log), &[sum])?
                }
                _ => {
                    // log(sum(exp(x - m))) + m, m the maximum (kept where it is -inf or
                    // +inf so that no inf - inf appears).
                    let m = s.reduce(ReduceKind::Max, &x, &axes, true)?;
                    let finite = finite_or_zero(&mut s, &m)?;
                    let d = s.binary(BinaryOp::Sub, &x, &finite)?;
                    let e = s.unary(UnaryOp::Exp, &d)?;
                    let sum = s.reduce(ReduceKind::Sum, &e, &axes, keepdims)?;
                    let l = s.unary(UnaryOp::Log, &sum)?;
                    let shift = if keepdims {
                        finite
                    } else {
                        let shape = s.ctx.ty(&l).shape;
                        s.reshape(&finite, shape)?
                    };
                    s.last(Op::Binary(BinaryOp::Add), &[l, shift])?
                }
            }
        }
        "Swish" | "SwiGLU" => {
            let alpha = a.float_or("alpha", 1.0);
            let scaled = if alpha == 1.0 {
                x.clone()
            } else {
                let al = s.exact(alpha, &x);
                s.binary(BinaryOp::Mul, &x, &al)?
            };
            let gate = s.unary(UnaryOp::Sigmoid, &scaled)?;
            if op_type == "Swish" {
                s.last(Op::Binary(BinaryOp::Mul), &[x, gate])?
            } else {
                let b = second.ok_or("input #1 (B) is missing")?;
                if s.ctx.ty(&b) != xt {
                    return Err(format!(
                        "A {xt} and B {} must have the same type (SwiGLU does not broadcast)",
                        s.ctx.ty(&b)
                    ));
                }
                let swish = s.binary(BinaryOp::Mul, &x, &gate)?;
                s.last(Op::Binary(BinaryOp::Mul), &[swish, b])?
            }
        }
        "Sign" => {
            if xt.dtype == DType::Bool {
                return Err("Sign does not take bool".into());
            }
            let zero = s.scalar(0.0, xt.dtype)?;
            let pos = s.binary(BinaryOp::Greater, &x, &zero)?;
            let neg = s.binary(BinaryOp::Less, &x, &zero)?;
            let p = s.op(Op::Cast { to: xt.dtype }, &[pos])?;
            let n = s.op(Op::Cast { to: xt.dtype }, &[neg])?;
            s.last(Op::Binary(BinaryOp::Sub), &[p, n])?
        }
        "Xor" => {
            let y = second.ok_or("input #1 (B) is missing")?;
            let eq = s.binary(BinaryOp::Equal, &x, &y)?;
            s.last(Op::Unary(UnaryOp::Not), &[eq])?
        }
        "IsInf" => {
            if xt.dtype != DType::F64 {
                need_f32(s.ctx, &x, "IsInf")?;
            }
            let mut found: Option<Val> = None;
            for (attr, v) in [
                ("detect_positive", f32::INFINITY),
                ("detect_negative", f32::NEG_INFINITY),
            ] {
                if a.int_or(attr, 1) != 0 {
                    let c = s.exact(v, &x);
                    let eq = s.binary(BinaryOp::Equal, &x, &c)?;
                    found = Some(match found {
                        None => eq,
                        Some(f) => s.binary(BinaryOp::Or, &f, &eq)?,
                    });
                }
            }
            match found {
                Some(f) => f,
                None => {
                    let f = s.exact(0.0, &x);
                    let eq = s.binary(BinaryOp::Equal, &x, &f)?;
                    let t = s.binary(BinaryOp::Equal, &x, &f)?;
                    let never = s.unary(UnaryOp::Not, &t)?;
                    s.binary(BinaryOp::And, &eq, &never)?
                }
            }
        }
        "Hardmax" => {
            if opset < 13 {
                return Err("Hardmax before opset 13 (2-D coerced axes) is not supported".into());
            }
            let axis = norm_axis(a.int_or("axis", -1), xt.rank().max(1), "axis")?;
            hardmax(&mut s, x, axis)?
        }
        "Mod" => {
            let y = second.ok_or("input #1 (B) is missing")?;
            if !matches!(
                xt.dtype,
                DType::F32 | DType::F64 | DType::I64 | DType::I32 | DType::I8 | DType::U8
            ) {
                return Err(format!("Mod needs a float or an integer, got {xt}"));
            }
            // Truncated remainder (floats: C's fmod, exact); for fmod = 0 moved to the
            // divisor's sign (Python's %, numpy's `mod`, also on floats).
            let r = if xt.dtype.is_float() {
                s.binary(BinaryOp::FMod, &x, &y)?
            } else {
                let q = s.binary(BinaryOp::Div, &x, &y)?;
                let qy = s.binary(BinaryOp::Mul, &q, &y)?;
                s.binary(BinaryOp::Sub, &x, &qy)?
            };
            if a.int_or("fmod", 0) != 0 {
                r
            } else {
                let zero = s.scalar(0.0, xt.dtype)?;
                let r_neg = s.binary(BinaryOp::Less, &r, &zero)?;
                let y_neg = s.binary(BinaryOp::Less, &y, &zero)?;
                let r_zero = s.binary(BinaryOp::Equal, &r, &zero)?;
                let differ = s.binary(BinaryOp::Equal, &r_neg, &y_neg)?;
                let differ = s.unary(UnaryOp::Not, &differ)?;
                let nonzero = s.unary(UnaryOp::Not, &r_zero)?;
                let fix = s.binary(BinaryOp::And, &differ, &nonzero)?;
                let shifted = s.binary(BinaryOp::Add, &r, &y)?;
                s.last(Op::Where, &[fix, shifted, r])?
            }
        }
        "BitShift" => {
            let y = second.ok_or("input #1 (Y) is missing")?;
            if !xt.dtype.is_int() {
                return Err(format!("BitShift needs integers, got {xt}"));
            }
            // The type's width (a narrow type's own), and its signedness.
            let narrow = s.ctx.narrow.get(&node.input[0]).copied();
            let (width, signed) = match (narrow, xt.dtype) {
                (Some(crate::narrow::Narrow::I16), _) => (16, true),
                (Some(crate::narrow::Narrow::U16), _) => (16, false),
                (Some(crate::narrow::Narrow::U32), _) => (32, false),
                (_, DType::I32) => (32, true),
                (_, DType::I8) => (8, true),
                (_, DType::U8) => (8, false),
                _ => (64, true),
            };
            let left = match a.string("direction").as_deref() {
                Some("LEFT") => true,
                Some("RIGHT") => false,
                d => return Err(format!("direction {d:?} must be LEFT or RIGHT")),
            };
            // Amounts outside 0..width give 0 (or -1 for a negative value shifted right).
            let zero = s.scalar(0.0, xt.dtype)?;
            let w = s.scalar(width as f32, xt.dtype)?;
            let low = s.binary(BinaryOp::GreaterOrEqual, &y, &zero)?;
            let high = s.binary(BinaryOp::Less, &y, &w)?;
            let valid = s.binary(BinaryOp::And, &low, &high)?;
            let amount = s.op(Op::Where, &[valid.clone(), y, zero.clone()])?;
            let op = if left {
                BinaryOp::ShiftLeft
            } else {
                BinaryOp::ShiftRight
            };
            let shifted = s.binary(op, &x, &amount)?;
            let fill = if !left && signed {
                let minus = s.scalar(-1.0, xt.dtype)?;
                let negative = s.binary(BinaryOp::Less, &x, &zero)?;
                s.op(Op::Where, &[negative, minus, zero])?
            } else {
                zero
            };
            s.last(Op::Where, &[valid, shifted, fill])?
        }
        "LpPool" => lp_pool(&mut s, &a, x)?,
        "LRN" => local_response_norm(&mut s, &a, x)?,
        "CenterCropPad" => {
            let shape = s
                .ctx
                .constant_input(node, 1, "shape")?
                .ok_or("the shape (input #1) is missing")?
                .to_i64_vec();
            center_crop_pad(&mut s, &a, x, &shape)?
        }
        "HannWindow" | "HammingWindow" | "BlackmanWindow" => {
            let size = s
                .ctx
                .constant_input(node, 0, "size")?
                .ok_or("the size (input #0) is missing")?
                .to_i64_vec();
            let size = match size[..] {
                [n] if (0..=1 << 24).contains(&n) => n as usize,
                _ => return Err(format!("size {size:?} must be one value in 0..=2^24")),
            };
            let to = a.int_or("output_datatype", 1);
            if to != 1 {
                return Err(format!(
                    "output_datatype {to} is not supported (only 1, float32)"
                ));
            }
            let n = if a.int_or("periodic", 1) != 0 {
                size as f64
            } else {
                size as f64 - 1.0
            };
            let pi = std::f64::consts::PI;
            let v: Vec<f32> = (0..size)
                .map(|i| {
                    let i = i as f64;
                    (match op_type {
                        "HannWindow" => (pi * i / n).sin().powi(2),
                        "HammingWindow" => {
                            let alpha = 25.0 / 46.0;
                            alpha - (1.0 - alpha) * (2.0 * pi * i / n).cos()
                        }
                        _ => {
                            0.42 - 0.5 * (2.0 * pi * i / n).cos() + 0.08 * (4.0 * pi * i / n).cos()
                        }
                    }) as f32
                })
                .collect();
            s.constant(Tensor::from_f32(vec![size], v).map_err(|e| e.msg)?)
        }
        "EyeLike" => {
            let (rows, cols) = match xt.shape[..] {
                [n] => (n, n),
                [r, c] => (r, c),
                _ => return Err(format!("the input {xt} must have rank 1 or 2")),
            };
            let k = a.int_or("k", 0);
            let ones: Vec<f32> = (0..rows * cols)
                .map(|p| ((p % cols) as i64 - (p / cols) as i64 == k) as u8 as f32)
                .collect();
            let eye = Tensor::from_f32(vec![rows, cols], ones).map_err(|e| e.msg)?;
            let to = match a.int("dtype") {
                None => xt.dtype,
                Some(code) => crate::proto::held_as(code as i32).ok_or_else(|| {
                    format!(
                        "dtype {} is not supported",
                        crate::proto::onnx_type_name(code as i32)
                    )
                })?,
            };
            let t = optc_ir::interp::eval_op(&Op::Cast { to }, &[&eye])
                .map_err(|e| e.msg)?
                .remove(0);
            s.constant(t)
        }
        "Mean" => {
            let xs: Vec<Val> = (0..node.input.len())
                .map(|k| s.ctx.required(node, k))
                .collect::<R<_>>()?;
            if xt.dtype != DType::F64 {
                need_f32(s.ctx, &x, "Mean")?;
            }
            let mut acc = xs[0].clone();
            for v in &xs[1..] {
                acc = s.binary(BinaryOp::Add, &acc, v)?;
            }
            let n = s.exact(xs.len() as f32, &x);
            s.last(Op::Binary(BinaryOp::Div), &[acc, n])?
        }
        "CastLike" => {
            let target = second.ok_or("the target (input #1) is missing")?;
            let to = s.ctx.ty(&target).dtype;
            if to == xt.dtype {
                x
            } else {
                let n = s.name.clone();
                s.ctx.emit1(&n, Op::Cast { to }, &[x], true)?
            }
        }
        "Tile" => {
            let repeats = s
                .ctx
                .constant_input(node, 1, "repeats")?
                .ok_or("the repeats (input #1) are missing")?
                .to_i64_vec();
            if repeats.len() != xt.rank() {
                return Err(format!(
                    "repeats {repeats:?} must have one entry per dim of {xt}"
                ));
            }
            let mut spread = vec![];
            let mut expanded = vec![];
            let mut out = vec![];
            for (&d, &r) in xt.shape.iter().zip(&repeats) {
                let r = usize::try_from(r)
                    .map_err(|_| format!("repeats {repeats:?} has a negative entry"))?;
                spread.extend([1, d]);
                expanded.extend([r, d]);
                out.push(r.checked_mul(d).ok_or("the result is too large")?);
            }
            optc_ir::checked_numel(&out).map_err(|e| e.msg)?;
            let sp = s.reshape(&x, spread)?;
            let ex = s.op(Op::Expand { shape: expanded }, &[sp])?;
            s.reshape(&ex, out)?
        }
        "DepthToSpace" | "SpaceToDepth" => {
            let b = a
                .int("blocksize")
                .ok_or("attribute 'blocksize' is missing")?;
            let b = usize::try_from(b)
                .ok()
                .filter(|&b| b > 0)
                .ok_or_else(|| format!("blocksize {b} must be positive"))?;
            let [n, c, h, w] = xt.shape[..] else {
                return Err(format!("the input must have rank 4, it is {xt}"));
            };
            if op_type == "DepthToSpace" {
                if c % (b * b) != 0 {
                    return Err(format!(
                        "{c} channels are not a multiple of blocksize² = {}",
                        b * b
                    ));
                }
                let c2 = c / (b * b);
                let crd = crd_mode(&a)?;
                let (split, perm) = if crd {
                    (vec![n, c2, b, b, h, w], vec![0, 1, 4, 2, 5, 3])
                } else {
                    (vec![n, b, b, c2, h, w], vec![0, 3, 4, 1, 5, 2])
                };
                let r = s.reshape(&x, split)?;
                let t = s.op(Op::Transpose { perm }, &[r])?;
                s.reshape(&t, vec![n, c2, h * b, w * b])?
            } else {
                if h % b != 0 || w % b != 0 {
                    return Err(format!(
                        "the spatial dims {h}x{w} are not multiples of blocksize {b}"
                    ));
                }
                let perm = if crd_mode(&a)? {
                    vec![0, 1, 3, 5, 2, 4]
                } else {
                    vec![0, 3, 5, 1, 2, 4]
                };
                let r = s.reshape(&x, vec![n, c, h / b, b, w / b, b])?;
                let t = s.op(Op::Transpose { perm }, &[r])?;
                s.reshape(&t, vec![n, c * b * b, h / b, w / b])?
            }
        }
        "Trilu" => {
            let upper = a.int_or("upper", 1) != 0;
            let k = match s.ctx.constant_input(node, 1, "k")? {
                Some(t) => *t.to_i64_vec().first().ok_or("k is empty")?,
                None => 0,
            };
            let r = xt.rank();
            if r < 2 {
                return Err(format!("the input must have rank >= 2, it is {xt}"));
            }
            let (rows, cols) = (xt.shape[r - 2], xt.shape[r - 1]);
            let mask: Vec<bool> = (0..rows * cols)
                .map(|i| {
                    let (row, col) = ((i / cols) as i64, (i % cols) as i64);
                    if upper {
                        col - row >= k
                    } else {
                        col - row <= k
                    }
                })
                .collect();
            let m = s.constant(Tensor::new(vec![rows, cols], Data::Bool(mask)).map_err(|e| e.msg)?);
            let zero = s.constant(Tensor::zeros(xt.dtype, vec![]));
            s.last(Op::Where, &[m, x, zero])?
        }
        "OneHot" => {
            let depth = s
                .ctx
                .constant_input(node, 1, "depth")?
                .ok_or("the depth (input #1) is missing")?;
            let depth = *depth.to_f64_vec().first().ok_or("depth is empty")?;
            if !(depth >= 1.0 && depth <= (1u64 << 24) as f64) {
                return Err(format!("depth {depth} is out of range"));
            }
            let depth = depth as usize;
            let values = third.ok_or("the values (input #2) are missing")?;
            let vt = s.ctx.ty(&values);
            if vt.numel() != 2 {
                return Err(format!(
                    "values must hold two elements [off, on], it is {vt}"
                ));
            }
            let r = xt.rank() + 1;
            let axis = norm_axis(a.int_or("axis", -1), r, "axis")?;
            // Indices as i64 (floats are truncated, as the spec says), negatives from the end.
            let idx = if xt.dtype == DType::I64 {
                x
            } else {
                s.op(Op::Cast { to: DType::I64 }, &[x])?
            };
            let zero = s.constant(Tensor::scalar_i64(0));
            let d = s.constant(Tensor::scalar_i64(depth as i64));
            let negative = s.binary(BinaryOp::Less, &idx, &zero)?;
            let wrapped = s.binary(BinaryOp::Add, &idx, &d)?;
            let idx = s.op(Op::Where, &[negative, wrapped, idx])?;
            let mut shape = xt.shape.clone();
            shape.insert(axis, 1);
            let idx = s.reshape(&idx, shape)?;
            let mut range_shape = vec![1; r];
            range_shape[axis] = depth;
            let range = s.constant(
                Tensor::from_i64(range_shape, (0..depth as i64).collect()).map_err(|e| e.msg)?,
            );
            let hot = s.binary(BinaryOp::Equal, &idx, &range)?;
            let flat = s.reshape(&values, vec![2])?;
            let pick = |k: i64| Op::Slice {
                dims: vec![optc_ir::SliceDim {
                    start: k,
                    step: 1,
                    len: 1,
                }],
            };
            let off = s.op(pick(0), std::slice::from_ref(&flat))?;
            let on = s.op(pick(1), &[flat])?;
            let off = s.reshape(&off, vec![])?;
            let on = s.reshape(&on, vec![])?;
            s.last(Op::Where, &[hot, on, off])?
        }
        "InstanceNormalization" | "GroupNormalization" => {
            let eps = a.float_or("epsilon", 1e-5);
            let scale = second.ok_or("the scale (input #1) is missing")?;
            let bias = third.ok_or("the bias (input #2) is missing")?;
            let r = xt.rank();
            if r < 3 {
                return Err(format!("the input must have rank >= 3, it is {xt}"));
            }
            let (n, c) = (xt.shape[0], xt.shape[1]);
            let spatial: usize = xt.shape[2..].iter().product();
            let groups = if op_type == "InstanceNormalization" {
                c
            } else {
                let g = a
                    .int("num_groups")
                    .ok_or("attribute 'num_groups' is missing")?;
                usize::try_from(g)
                    .ok()
                    .filter(|&g| g > 0 && c % g == 0)
                    .ok_or_else(|| format!("num_groups {g} does not divide {c} channels"))?
            };
            let st = s.ctx.ty(&scale);
            // GroupNormalization before opset 21 scales per group, later per channel.
            let per_group = op_type == "GroupNormalization" && opset < 21;
            let params = if per_group { groups } else { c };
            let dt = if xt.dtype == DType::F64 {
                DType::F64
            } else {
                DType::F32
            };
            for (p, what) in [(&st, "scale"), (&s.ctx.ty(&bias), "bias")] {
                if p.numel() != params || p.dtype != dt {
                    return Err(format!(
                        "the {what} must be {params} {dt} values, it is {p}"
                    ));
                }
            }
            let grouped = s.reshape(&x, vec![n, groups, c / groups * spatial])?;
            let normed = if dt == DType::F64 {
                // GroupNormalization-21 computes its statistics and the normalized values in
                // `stash_type` (default float32, as onnxruntime and the reference do), then
                // casts them to the input's type; InstanceNormalization in its own type.
                let stash = if op_type == "GroupNormalization" && opset >= 21 {
                    match a.int_or("stash_type", 1) {
                        1 => DType::F32,
                        11 => DType::F64,
                        t => return Err(format!("stash_type {t} is not supported (1 or 11)")),
                    }
                } else {
                    DType::F64
                };
                let grouped = if stash == DType::F32 {
                    s.op(Op::Cast { to: DType::F32 }, &[grouped])?
                } else {
                    grouped
                };
                let (_, centered, inv) = s.layer_norm_parts(&grouped, 2, eps)?;
                let normed = s.binary(BinaryOp::Mul, &centered, &inv)?;
                if stash == DType::F32 {
                    s.op(Op::Cast { to: DType::F64 }, &[normed])?
                } else {
                    normed
                }
            } else {
                let one = s.f32(1.0);
                s.op(
                    Op::LayerNorm {
                        axis: 2,
                        epsilon: eps,
                    },
                    &[grouped, one],
                )?
            };
            let (normed, pshape) = if per_group {
                (normed, vec![groups, 1])
            } else {
                let back = s.reshape(&normed, vec![n, c, spatial])?;
                (back, vec![c, 1])
            };
            let sc = s.reshape(&scale, pshape.clone())?;
            let bi = s.reshape(&bias, pshape)?;
            let scaled = s.binary(BinaryOp::Mul, &normed, &sc)?;
            let y = s.binary(BinaryOp::Add, &scaled, &bi)?;
            s.reshape(&y, xt.shape.clone())?
        }
        "LpNormalization" => {
            let axis = norm_axis(a.int_or("axis", -1), xt.rank(), "axis")?;
            let norm = match a.int_or("p", 2) {
                1 => {
                    let abs = s.unary(UnaryOp::Abs, &x)?;
                    s.reduce(ReduceKind::Sum, &abs, &[axis], true)?
                }
                2 => s.reduce(ReduceKind::L2, &x, &[axis], true)?,
                p => return Err(format!("p = {p} is not supported (1 or 2)")),
            };
            // A zero norm divides by one (the vector stays zero, as the spec's reference
            // computes).
            let zero = s.exact(0.0, &x);
            let one = s.exact(1.0, &x);
            let is_zero = s.binary(BinaryOp::Equal, &norm, &zero)?;
            let norm = s.op(Op::Where, &[is_zero, one, norm])?;
            s.last(Op::Binary(BinaryOp::Div), &[x, norm])?
        }
        "RMSNormalization" => {
            // The statistics and the normalized values in `stash_type` (float32 by
            // default, double), cast to the input's type before the scale.
            let stash = match a.int_or("stash_type", 1) {
                1 => DType::F32,
                11 => DType::F64,
                t => return Err(format!("stash_type {t} is not supported (1 or 11)")),
            };
            let scale = second.ok_or("the scale (input #1) is missing")?;
            let axis = norm_axis(a.int_or("axis", -1), xt.rank(), "axis")?;
            let axes: Vec<usize> = (axis..xt.rank()).collect();
            let xu = if stash == xt.dtype {
                x.clone()
            } else {
                s.op(Op::Cast { to: stash }, std::slice::from_ref(&x))?
            };
            let sq = s.binary(BinaryOp::Mul, &xu, &xu)?;
            let mean = s.reduce(ReduceKind::Mean, &sq, &axes, true)?;
            let eps = s.exact(a.float_or("epsilon", 1e-5), &xu);
            let me = s.binary(BinaryOp::Add, &mean, &eps)?;
            let rms = s.unary(UnaryOp::Sqrt, &me)?;
            let y = s.binary(BinaryOp::Div, &xu, &rms)?;
            let y = if stash == xt.dtype {
                y
            } else {
                s.op(Op::Cast { to: xt.dtype }, &[y])?
            };
            s.last(Op::Binary(BinaryOp::Mul), &[y, scale])?
        }
        "MeanVarianceNormalization" => {
            let axes = a.ints("axes").unwrap_or_else(|| vec![0, 2, 3]);
            let mut axes: Vec<usize> = axes
                .iter()
                .map(|&v| norm_axis(v, xt.rank(), "axis"))
                .collect::<R<_>>()?;
            axes.sort();
            axes.dedup();
            let mean = s.reduce(ReduceKind::Mean, &x, &axes, true)?;
            let d = s.binary(BinaryOp::Sub, &x, &mean)?;
            let sq = s.binary(BinaryOp::Mul, &d, &d)?;
            let var = s.reduce(ReduceKind::Mean, &sq, &axes, true)?;
            let eps = s.exact(1e-9, &x);
            let ve = s.binary(BinaryOp::Add, &var, &eps)?;
            let sd = s.unary(UnaryOp::Sqrt, &ve)?;
            s.last(Op::Binary(BinaryOp::Div), &[d, sd])?
        }
        other => return Err(format!("{other} is not a decomposed op")),
    };
    Ok(vec![Some(out)])
}

/// `Hardmax`: 1 at the first maximum along `axis`, 0 elsewhere: the maximum by a max
/// reduction, its first position by a max reduction over the positions where it is reached.
fn hardmax(s: &mut Steps, x: Val, axis: usize) -> R<Val> {
    let xt = s.ctx.ty(&x);
    if xt.dtype != DType::F64 {
        need_f32(s.ctx, &x, "Hardmax")?;
    }
    let n = xt.shape[axis];
    if n == 0 || n > 1 << 24 {
        return Err(format!("axis {axis} of {xt} is empty or too long"));
    }
    let m = s.reduce(ReduceKind::Max, &x, &[axis], true)?;
    let at = s.binary(BinaryOp::Equal, &x, &m)?;
    // Positions along the axis as f32 (exact below 2^24), negated to find the first.
    let mut shape = vec![1; xt.rank()];
    shape[axis] = n;
    let iota = s.constant(
        Tensor::from_f32(shape, (0..n).map(|i| -(i as f32)).collect()).map_err(|e| e.msg)?,
    );
    let never = s.f32(f32::NEG_INFINITY);
    let cand = s.op(Op::Where, &[at, iota.clone(), never])?;
    let pick = s.reduce(ReduceKind::Max, &cand, &[axis], true)?;
    let hit = s.binary(BinaryOp::Equal, &iota, &pick)?;
    s.last(Op::Cast { to: xt.dtype }, &[hit])
}

/// The second and third outputs of `LayerNormalization`: the mean and `1 / sqrt(var + eps)`
/// over the axes from `axis` on, kept as dims of extent 1.
pub(super) fn layer_norm_statistics(
    ctx: &mut Ctx,
    name: &str,
    x: &Val,
    axis: usize,
    epsilon: f32,
) -> R<(Val, Val)> {
    let dt = ctx.ty(x).dtype;
    if dt != DType::F64 {
        need_f32(ctx, x, "LayerNormalization")?;
    }
    let mut s = Steps::new(ctx, &format!("{name}:1"));
    let (mean, _, inv) = s.layer_norm_parts(x, axis, epsilon)?;
    Ok((mean, inv))
}

impl Steps<'_> {
    /// The layer norm of `x` over the axes from `axis` on as the spec's function defines it,
    /// in `x`'s type: `mean`, `d = x - mean`, `inv = 1 / sqrt(mean(d * d) + epsilon)`;
    /// returns `(mean, d, inv)` (means kept as dims of extent 1).
    fn layer_norm_parts(&mut self, x: &Val, axis: usize, epsilon: f32) -> R<(Val, Val, Val)> {
        let xt = self.ctx.ty(x);
        let axes: Vec<usize> = (axis..xt.rank()).collect();
        let mean = self.reduce(ReduceKind::Mean, x, &axes, true)?;
        let centered = self.binary(BinaryOp::Sub, x, &mean)?;
        let sq = self.binary(BinaryOp::Mul, &centered, &centered)?;
        let var = self.reduce(ReduceKind::Mean, &sq, &axes, true)?;
        let eps = self.scalar(epsilon, xt.dtype)?;
        let shifted = self.binary(BinaryOp::Add, &var, &eps)?;
        let root = self.unary(UnaryOp::Sqrt, &shifted)?;
        let one = self.scalar(1.0, xt.dtype)?;
        let inv = self.binary(BinaryOp::Div, &one, &root)?;
        Ok((mean, centered, inv))
    }
}

/// An f64 `LayerNormalization` (`ins`: x, scale, optional bias) as the spec's function,
/// `d * inv * scale + bias` ([`Steps::layer_norm_parts`]; optc's `LayerNorm` op is f32),
/// the last step named as the node.
pub(super) fn layer_norm_f64(
    ctx: &mut Ctx,
    name: &str,
    ins: &[Val],
    axis: usize,
    epsilon: f32,
) -> R<Val> {
    let mut s = Steps::new(ctx, name);
    let (_, centered, inv) = s.layer_norm_parts(&ins[0], axis, epsilon)?;
    let normed = s.binary(BinaryOp::Mul, &centered, &inv)?;
    match ins.get(2) {
        Some(bias) => {
            let scaled = s.binary(BinaryOp::Mul, &normed, &ins[1])?;
            s.last(Op::Binary(BinaryOp::Add), &[scaled, bias.clone()])
        }
        None => s.last(Op::Binary(BinaryOp::Mul), &[normed, ins[1].clone()]),
    }
}

/// An f64 `BatchNormalization` (inference; `ins`: x, scale, B, mean, var, all f64) as the
/// spec writes it: `(x - mean) / sqrt(var + epsilon) * scale + B`, the parameters along
/// dim 1 (optc's `BatchNorm` op is f32).
pub(super) fn batch_norm_f64(ctx: &mut Ctx, name: &str, ins: &[Val], epsilon: f32) -> R<Val> {
    let xt = ctx.ty(&ins[0]);
    if xt.rank() < 2 {
        return Err(format!("the input must have rank >= 2, it is {xt}"));
    }
    let c = xt.shape[1];
    for (v, what) in ins[1..].iter().zip(["scale", "B", "mean", "var"]) {
        let t = ctx.ty(v);
        if t.dtype != DType::F64 || t.shape != [c] {
            return Err(format!("the {what} must be f64[{c}], it is {t}"));
        }
    }
    let mut s = Steps::new(ctx, name);
    let mut pshape = vec![c];
    pshape.extend(std::iter::repeat_n(1, xt.rank() - 2));
    let p: Vec<Val> = ins[1..]
        .iter()
        .map(|v| s.reshape(v, pshape.clone()))
        .collect::<R<_>>()?;
    let (scale, bias, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
    let eps = s.scalar(epsilon, DType::F64)?;
    let shifted = s.binary(BinaryOp::Add, var, &eps)?;
    let root = s.unary(UnaryOp::Sqrt, &shifted)?;
    let centered = s.binary(BinaryOp::Sub, &ins[0], mean)?;
    let normed = s.binary(BinaryOp::Div, &centered, &root)?;
    let scaled = s.binary(BinaryOp::Mul, &normed, scale)?;
    s.last(Op::Binary(BinaryOp::Add), &[scaled, bias.clone()])
}

/// `BatchNormalization` in training mode (opset 14+): normalized by the batch's own mean
/// and (population) variance per channel, which also update the running statistics:
/// `[y, mean * momentum + batch_mean * (1 - momentum), var * momentum + batch_var * (1 -
/// momentum)]`, as the ONNX reference computes them.
pub(super) fn batch_norm_training(
    ctx: &mut Ctx,
    name: &str,
    ins: &[Val],
    epsilon: f32,
    momentum: f32,
) -> R<Vec<Val>> {
    let xt = ctx.ty(&ins[0]);
    if !matches!(xt.dtype, DType::F32 | DType::F64) || xt.rank() < 2 {
        return Err(format!(
            "the input must be f32 or f64 of rank >= 2, it is {xt}"
        ));
    }
    let c = xt.shape[1];
    let axes: Vec<usize> = (0..xt.rank()).filter(|&a| a != 1).collect();
    let (batch_mean, batch_var) = {
        let mut s = Steps::new(ctx, &format!("{name}/statistics"));
        let mean = s.reduce(ReduceKind::Mean, &ins[0], &axes, true)?;
        let centered = s.binary(BinaryOp::Sub, &ins[0], &mean)?;
        let squares = s.binary(BinaryOp::Mul, &centered, &centered)?;
        let var = s.reduce(ReduceKind::Mean, &squares, &axes, false)?;
        (s.reshape(&mean, vec![c])?, var)
    };
    let mut running = vec![];
    for (k, (old, batch)) in [(&ins[3], &batch_mean), (&ins[4], &batch_var)]
        .into_iter()
        .enumerate()
    {
        let mut s = Steps::new(ctx, &format!("{name}/running_{k}"));
        let kept = s.float(momentum, momentum as f64, old);
        let taken = s.float((1.0 - momentum as f64) as f32, 1.0 - momentum as f64, old);
        let a = s.binary(BinaryOp::Mul, old, &kept)?;
        let b = s.binary(BinaryOp::Mul, batch, &taken)?;
        running.push(s.binary(BinaryOp::Add, &a, &b)?);
    }
    let stats = [
        ins[0].clone(),
        ins[1].clone(),
        ins[2].clone(),
        batch_mean,
        batch_var,
    ];
    let y = if xt.dtype == DType::F64 {
        batch_norm_f64(ctx, name, &stats, epsilon)?
    } else {
        ctx.emit1(name, Op::BatchNorm { epsilon }, &stats, false)?
    };
    Ok(vec![y, running.remove(0), running.remove(0)])
}

/// `LpPool`: `(sum over the window of |x|^p)^(1/p)`, padding counting as zeros. The sums
/// are a depthwise convolution with a kernel of ones (a `ceil_mode` window that hangs past
/// the end sums what it covers).
fn lp_pool(s: &mut Steps, a: &Attrs, x: Val) -> R<Val> {
    let xt = s.ctx.ty(&x);
    let k = a
        .ints("kernel_shape")
        .ok_or("attribute 'kernel_shape' is missing")?;
    let kernel = super::dims_of(&k, "kernel_shape")?;
    let mut window = super::window(a, &xt, kernel.clone(), a.int_or("ceil_mode", 0) != 0)?;
    let pool = Op::AveragePool {
        window: window.clone(),
        count_include_pad: true,
    };
    let out = pool.infer(&[&xt]).map_err(|e| e.msg)?[0].shape.clone();
    let nsp = kernel.len();
    for i in 0..nsp {
        let reach =
            (out[2 + i] - 1) * window.strides[i] + (kernel[i] - 1) * window.dilations[i] + 1;
        let have = xt.shape[2 + i] + window.pads[i] + window.pads[nsp + i];
        window.pads[nsp + i] += reach.saturating_sub(have);
    }
    window.ceil_mode = false;
    let p = a.int_or("p", 2);
    if p < 1 {
        return Err(format!("p {p} must be at least 1"));
    }
    let abs = s.unary(UnaryOp::Abs, &x)?;
    let powered = match p {
        1 => abs,
        2 => s.binary(BinaryOp::Mul, &abs, &abs)?,
        _ => {
            let e = s.float(p as f32, p as f64, &x);
            s.binary(BinaryOp::Pow, &abs, &e)?
        }
    };
    let c = xt.shape[1];
    let mut wshape = vec![c, 1];
    wshape.extend(&kernel);
    let ones = s.ones(wshape, &x)?;
    let sum = s.op(Op::Conv { window, group: c }, &[powered, ones])?;
    match p {
        1 => Ok(sum),
        2 => s.last(Op::Unary(UnaryOp::Sqrt), &[sum]),
        _ => {
            let e = s.float(1.0 / p as f32, 1.0 / p as f64, &x);
            s.last(Op::Binary(BinaryOp::Pow), &[sum, e])
        }
    }
}

/// `LRN`: `x / (bias + alpha / size * sum of x^2 over the `size` channels around)^beta`;
/// the channel sum as a convolution of ones over `[N, 1, C, H*W]`.
fn local_response_norm(s: &mut Steps, a: &Attrs, x: Val) -> R<Val> {
    let xt = s.ctx.ty(&x);
    if xt.rank() < 3 {
        return Err(format!("the input {xt} must have rank 3 or more"));
    }
    let size = a.int("size").ok_or("attribute 'size' is missing")?;
    let size = usize::try_from(size)
        .ok()
        .filter(|&n| n >= 1 && n <= xt.shape[1].max(1) * 2 + 1)
        .ok_or_else(|| format!("size {size} must be at least 1 (and not absurd)"))?;
    let (alpha, beta, bias) = (
        a.float_or("alpha", 1e-4),
        a.float_or("beta", 0.75),
        a.float_or("bias", 1.0),
    );
    let (n, c) = (xt.shape[0], xt.shape[1]);
    let rest: usize = xt.shape[2..].iter().product();
    let sq = s.binary(BinaryOp::Mul, &x, &x)?;
    let flat = s.reshape(&sq, vec![n, 1, c, rest])?;
    let ones = s.ones(vec![1, 1, size, 1], &x)?;
    let window = optc_ir::Window {
        kernel: vec![size, 1],
        strides: vec![1, 1],
        pads: vec![(size - 1) / 2, 0, size / 2, 0],
        dilations: vec![1, 1],
        ceil_mode: false,
    };
    let sums = s.op(Op::Conv { window, group: 1 }, &[flat, ones])?;
    let sums = s.reshape(&sums, xt.shape.clone())?;
    let scale = s.float(alpha / size as f32, alpha as f64 / size as f64, &x);
    let scaled = s.binary(BinaryOp::Mul, &sums, &scale)?;
    let b = s.exact(bias, &x);
    let base = s.binary(BinaryOp::Add, &scaled, &b)?;
    let e = s.exact(-beta, &x);
    let factor = s.binary(BinaryOp::Pow, &base, &e)?;
    s.last(Op::Binary(BinaryOp::Mul), &[x, factor])
}

/// `CenterCropPad`: per axis, the centered window of the target extent (cropped where
/// smaller, zero-padded where larger; an odd difference puts the extra element at the end).
fn center_crop_pad(s: &mut Steps, a: &Attrs, x: Val, shape: &[i64]) -> R<Val> {
    let xt = s.ctx.ty(&x);
    let r = xt.rank();
    let axes: Vec<usize> = match a.ints("axes") {
        Some(v) => v
            .iter()
            .map(|&ax| norm_axis(ax, r, "axis"))
            .collect::<R<_>>()?,
        None => (0..r).collect(),
    };
    if shape.len() != axes.len() {
        return Err(format!(
            "shape {shape:?} needs one entry per axis ({})",
            axes.len()
        ));
    }
    let mut pads = vec![0i64; 2 * r];
    for (&ax, &want) in axes.iter().zip(shape) {
        if want < 0 {
            return Err(format!("shape {shape:?} has a negative entry"));
        }
        let d = want - xt.shape[ax] as i64;
        // crop: negative pads; the odd element goes at the end either way
        let (begin, end) = if d >= 0 {
            (d / 2, d - d / 2)
        } else {
            (-((-d) / 2), -((-d) - (-d) / 2))
        };
        pads[ax] = begin;
        pads[r + ax] = end;
    }
    s.last(
        Op::Pad {
            pads,
            mode: optc_ir::PadMode::Constant,
            value: 0.0,
        },
        &[x],
    )
}

/// `NegativeLogLikelihoodLoss` of `x` (log-probabilities `[N, C, d...]`), or
/// `SoftmaxCrossEntropyLoss` of `x` (scores: their log-softmax over axis 1 first, also the
/// optional second output), with the targets `[N, d...]` picked by a one-hot mask over
/// the classes. Weights, `ignore_index` and the reductions as the spec's reference computes
/// them (including its `mean`: the weighted sum over the sum of the weights picked).
fn loss(
    s: &mut Steps,
    a: &Attrs,
    softmax: bool,
    x: Val,
    target: Val,
    weight: Option<Val>,
) -> R<Vec<Option<Val>>> {
    let xt = s.ctx.ty(&x);
    let tt = s.ctx.ty(&target);
    let r = xt.rank();
    if r < 2 || tt.rank() + 1 != r || tt.shape[0] != xt.shape[0] || tt.shape[1..] != xt.shape[2..] {
        return Err(format!(
            "the target {tt} does not fit the input {xt} ([N, C, d...] and [N, d...])"
        ));
    }
    if !matches!(tt.dtype, DType::I64 | DType::I32) {
        return Err(format!("the target must be i32 or i64, it is {}", tt.dtype));
    }
    let classes = xt.shape[1];
    let reduction = a.string("reduction").unwrap_or_else(|| "mean".into());
    if !["none", "sum", "mean"].contains(&reduction.as_str()) {
        return Err(format!(
            "reduction '{reduction}' is not supported (none, sum, mean)"
        ));
    }
    let ignore = a.int("ignore_index");
    let log_prob = if softmax {
        Some(log_softmax(s, &x, 1)?)
    } else {
        None
    };
    let x = log_prob.clone().unwrap_or(x);
    let t = if tt.dtype == DType::I64 {
        target
    } else {
        s.op(Op::Cast { to: DType::I64 }, &[target])?
    };
    // One-hot over the classes: [N, 1, d...] == [1, C, 1...].
    let mut shape = tt.shape.clone();
    shape.insert(1, 1);
    let mut range_shape = vec![1; r];
    range_shape[1] = classes;
    let range = s.constant(
        Tensor::from_i64(range_shape.clone(), (0..classes as i64).collect()).map_err(|e| e.msg)?,
    );
    let hot_of = |s: &mut Steps, t: &Val| -> R<Val> {
        let t1 = s.reshape(t, shape.clone())?;
        s.binary(BinaryOp::Equal, &t1, &range)
    };
    let hot = hot_of(s, &t)?;
    let zero = s.exact(0.0, &x);
    let picked = s.op(Op::Where, &[hot, x, zero.clone()])?;
    let picked = s.reduce(ReduceKind::Sum, &picked, &[1], false)?;
    let mut loss = s.unary(UnaryOp::Neg, &picked)?;
    let ignored = match ignore {
        Some(i) => {
            let iv = s.constant(Tensor::scalar_i64(i));
            Some(s.binary(BinaryOp::Equal, &t, &iv)?)
        }
        None => None,
    };
    if let Some(ig) = &ignored {
        loss = s.op(Op::Where, &[ig.clone(), zero.clone(), loss])?;
    }
    // The weight picked per element (the class clipped into range, as numpy's take).
    let picked_weight = match weight {
        Some(w) => {
            let wt = s.ctx.ty(&w);
            if wt.shape != [classes] || wt.dtype != xt.dtype {
                return Err(format!(
                    "the weight must be {}[{classes}], it is {wt}",
                    xt.dtype
                ));
            }
            let lo = s.constant(Tensor::scalar_i64(0));
            let hi = s.constant(Tensor::scalar_i64(classes as i64 - 1));
            let clipped = s.binary(BinaryOp::Max, &t, &lo)?;
            let clipped = s.binary(BinaryOp::Min, &clipped, &hi)?;
            let hot = hot_of(s, &clipped)?;
            let w = s.reshape(&w, range_shape.clone())?;
            let pw = s.op(Op::Where, &[hot, w, zero.clone()])?;
            let pw = s.reduce(ReduceKind::Sum, &pw, &[1], false)?;
            Some(match &ignored {
                Some(ig) => s.op(Op::Where, &[ig.clone(), zero.clone(), pw])?,
                None => pw,
            })
        }
        // The reference weighs ignored elements 0 and others 1 (NegativeLogLikelihoodLoss
        // does not when ignore_index is -1: its mean then counts every element).
        None => match &ignored {
            Some(ig) if softmax || ignore != Some(-1) => {
                let one = s.exact(1.0, &zero);
                Some(s.op(Op::Where, &[ig.clone(), zero.clone(), one])?)
            }
            _ => None,
        },
    };
    if let Some(w) = &picked_weight {
        loss = s.binary(BinaryOp::Mul, w, &loss)?;
    }
    let all: Vec<usize> = (0..tt.rank()).collect();
    let out = match (reduction.as_str(), &picked_weight) {
        ("none", _) => loss,
        ("sum", _) => s.reduce(ReduceKind::Sum, &loss, &all, false)?,
        (_, Some(w)) => {
            let total = s.reduce(ReduceKind::Sum, &loss, &all, false)?;
            let weights = s.reduce(ReduceKind::Sum, w, &all, false)?;
            s.binary(BinaryOp::Div, &total, &weights)?
        }
        _ => s.reduce(ReduceKind::Mean, &loss, &all, false)?,
    };
    Ok(vec![Some(out), log_prob])
}

/// Whether a DepthToSpace / SpaceToDepth node is in CRD mode (else DCR, the default).
fn crd_mode(a: &Attrs) -> R<bool> {
    match a.string("mode").as_deref() {
        None | Some("DCR") => Ok(false),
        Some("CRD") => Ok(true),
        Some(m) => Err(format!("mode '{m}' is not supported (DCR, CRD)")),
    }
}

/// `x - m - log(sum(exp(x - m)))` along `axis`, `m` the maximum.
fn log_softmax(s: &mut Steps, x: &Val, axis: usize) -> R<Val> {
    let m = s.reduce(ReduceKind::Max, x, &[axis], true)?;
    let m = finite_or_zero(s, &m)?;
    let d = s.binary(BinaryOp::Sub, x, &m)?;
    let e = s.unary(UnaryOp::Exp, &d)?;
    let sum = s.reduce(ReduceKind::Sum, &e, &[axis], true)?;
    let l = s.unary(UnaryOp::Log, &sum)?;
    s.binary(BinaryOp::Sub, &d, &l)
}

/// `m` where it is finite, 0 where it is ±inf or NaN (a shift that keeps `x - m` free of
/// `inf - inf`).
fn finite_or_zero(s: &mut Steps, m: &Val) -> R<Val> {
    let dt = s.ctx.ty(m).dtype;
    let zero = s.scalar(0.0, dt)?;
    // |m| < inf is false for ±inf and NaN.
    let abs = s.unary(UnaryOp::Abs, m)?;
    let inf = s.scalar(f32::INFINITY, dt)?;
    let finite = s.binary(BinaryOp::Less, &abs, &inf)?;
    s.op(Op::Where, &[finite, m.clone(), zero])
}
