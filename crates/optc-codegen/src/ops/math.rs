//! One element function ([`Elementwise`]) as Cranelift IR: float math on scalars or f32x4 vectors,
//! integer and bool math on scalars, the bool/f32 vector paths, and `Cast` semantics.

use crate::builder::{element_type, Emitter, F32X4, I32X4};
use crate::error::{Result, RuntimeError};
use crate::node::NodeInfo;
use crate::ops::elementwise::Elementwise;
use crate::ops::fused::eval_chain;
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, InstBuilder, MemFlagsData, Type, Value,
};
use optc_ir::{BinaryOp, DType, UnaryOp, GELU_ERF_SCALE, GELU_TANH_CUBE, GELU_TANH_SCALE};

/// The trigonometric and hyperbolic ops, computed by libm through the runtime's
/// `optc_rt_unary_math`: their code there (the index in `runtime::UNARY_MATH`).
pub(super) fn libm_code(u: &UnaryOp) -> Option<usize> {
    [
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tan,
        UnaryOp::Asin,
        UnaryOp::Acos,
        UnaryOp::Atan,
        UnaryOp::Sinh,
        UnaryOp::Cosh,
        UnaryOp::Asinh,
        UnaryOp::Acosh,
        UnaryOp::Atanh,
    ]
    .iter()
    .position(|v| v == u)
}

/// Float elementwise math on scalar `F32` or `F32X4` values.
pub(super) fn float_math(e: &mut Emitter, ty: Type, f: &Elementwise, a: &[Value]) -> Option<Value> {
    if let Elementwise::Chain(steps) = f {
        return eval_chain(steps, a, |g, v| float_math(e, ty, g, v));
    }
    let x = a[0];
    Some(match f {
        Elementwise::Unary(u) => match u {
            UnaryOp::Identity => x,
            UnaryOp::Relu => {
                let z = e.float_const(ty, 0.0);
                e.clamp_lo(ty, x, z)
            }
            UnaryOp::LeakyRelu { alpha } => {
                let z = e.float_const(ty, 0.0);
                let al = e.float_const(ty, *alpha);
                let m = e.b.ins().fmul(x, al);
                let c = e.b.ins().fcmp(FloatCC::LessThan, x, z);
                e.select_float(ty, c, m, x)
            }
            UnaryOp::Clip { min, max } => {
                let mut v = x;
                if *min > f32::NEG_INFINITY {
                    let lo = e.float_const(ty, *min);
                    v = e.clamp_lo(ty, v, lo);
                }
                if *max < f32::INFINITY {
                    let hi = e.float_const(ty, *max);
                    v = e.clamp_hi(ty, v, hi);
                }
                v
            }
            UnaryOp::Sigmoid => e.sigmoid(ty, x),
            UnaryOp::HardSigmoid { alpha, beta } => {
                let al = e.float_const(ty, *alpha);
                let be = e.float_const(ty, *beta);
                let v = e.mul_add(x, al, be);
                let z = e.float_const(ty, 0.0);
                let o = e.float_const(ty, 1.0);
                let v = e.clamp_hi(ty, v, o);
                e.clamp_lo(ty, v, z)
            }
            UnaryOp::HardSwish => {
                let six = e.float_const(ty, 6.0);
                let h = e.float_const(ty, 0.5);
                let d = e.b.ins().fdiv(x, six);
                let v = e.b.ins().fadd(d, h);
                let z = e.float_const(ty, 0.0);
                let o = e.float_const(ty, 1.0);
                let v = e.clamp_hi(ty, v, o);
                let v = e.clamp_lo(ty, v, z);
                e.b.ins().fmul(x, v)
            }
            UnaryOp::Silu => {
                let s = e.sigmoid(ty, x);
                e.b.ins().fmul(x, s)
            }
            UnaryOp::Gelu => {
                // The chain it stands for, step by step (the AVX-512 epilogue's order).
                let k = e.float_const(ty, GELU_ERF_SCALE);
                let z = e.b.ins().fmul(x, k);
                let erf = e.erf(ty, z);
                let one = e.float_const(ty, 1.0);
                let a = e.b.ins().fadd(erf, one);
                let m = e.b.ins().fmul(x, a);
                let h = e.float_const(ty, 0.5);
                e.b.ins().fmul(m, h)
            }
            UnaryOp::GeluTanh => {
                // The chain it stands for, step by step (the AVX-512 epilogue's order); the
                // cube as `Pow(x, 3)` lowers (`Elementwise::PowConst`).
                let h = e.float_const(ty, 0.5);
                let half = e.b.ins().fmul(x, h);
                let x2 = e.b.ins().fmul(x, x);
                let cube = e.b.ins().fmul(x2, x);
                let c = e.float_const(ty, GELU_TANH_CUBE);
                let cc = e.b.ins().fmul(cube, c);
                let inner = e.b.ins().fadd(x, cc);
                let k = e.float_const(ty, GELU_TANH_SCALE);
                let z = e.b.ins().fmul(inner, k);
                let t = e.tanh(ty, z);
                let one = e.float_const(ty, 1.0);
                let a = e.b.ins().fadd(t, one);
                e.b.ins().fmul(half, a)
            }
            UnaryOp::Tanh => e.tanh(ty, x),
            UnaryOp::Erf => e.erf(ty, x),
            UnaryOp::Exp => e.exp(ty, x),
            UnaryOp::Log => {
                if ty.is_vector() {
                    return None;
                }
                let f = e.runtime.log;
                e.call1(f, x)
            }
            UnaryOp::Sqrt => e.b.ins().sqrt(x),
            UnaryOp::Neg => e.b.ins().fneg(x),
            UnaryOp::Abs => e.b.ins().fabs(x),
            u if libm_code(u).is_some() => {
                if ty.is_vector() {
                    return None;
                }
                let code = libm_code(u).unwrap_or(0);
                let f = e.runtime.unary_math;
                let c = e.b.ins().iconst(types::I32, code as i64);
                let call = e.b.ins().call(f, &[x, c]);
                e.b.inst_results(call)[0]
            }
            UnaryOp::Floor => e.b.ins().floor(x),
            UnaryOp::Ceil => e.b.ins().ceil(x),
            UnaryOp::Round => e.b.ins().nearest(x),
            UnaryOp::FakeQuantize {
                scale,
                zero,
                signed,
            } => {
                // optc_ir::linear_quantization's quantize, then dequantize: `q - zero` is a
                // small integer, exact in f32.
                let (lo, hi) = optc_ir::linear_quantization::fake_quantize_bounds(*signed);
                let s = e.float_const(ty, *scale);
                let z = e.float_const(ty, *zero);
                let q = e.b.ins().fdiv(x, s);
                let q = round_add_clamp(e, ty, q, z, lo, hi);
                let d = e.b.ins().fsub(q, z);
                e.b.ins().fmul(d, s)
            }
            UnaryOp::RoundToHalf { bfloat } => round_to_half(e, ty, x, *bfloat),
            UnaryOp::NanTo { value } => {
                let m = e.b.ins().fcmp(FloatCC::Unordered, x, x);
                let v = e.float_const(ty, *value);
                e.select_float(ty, m, v, x)
            }
            // Not float math (and the libm ops are taken above).
            _ => return None,
        },
        Elementwise::Binary(b) => {
            let y = a[1];
            match b {
                BinaryOp::Add => e.b.ins().fadd(x, y),
                BinaryOp::Sub => e.b.ins().fsub(x, y),
                BinaryOp::Mul => e.b.ins().fmul(x, y),
                BinaryOp::Div => e.b.ins().fdiv(x, y),
                BinaryOp::Max => e.b.ins().fmax(x, y),
                BinaryOp::Min => e.b.ins().fmin(x, y),
                BinaryOp::Pow if !ty.is_vector() => {
                    let f = e.runtime.pow;
                    e.call2(f, x, y)
                }
                BinaryOp::FMod if !ty.is_vector() => {
                    let f = e.runtime.fmod;
                    e.call2(f, x, y)
                }
                _ => return None,
            }
        }
        Elementwise::PowConst(c) => {
            if *c == 1.0 {
                x
            } else if *c == 2.0 {
                e.b.ins().fmul(x, x)
            } else if *c == 3.0 {
                let x2 = e.b.ins().fmul(x, x);
                e.b.ins().fmul(x2, x)
            } else if *c == 0.5 {
                e.b.ins().sqrt(x)
            } else if ty.is_vector() {
                return None;
            } else {
                let f = e.runtime.pow;
                let cv = e.float_const(ty, *c);
                e.call2(f, x, cv)
            }
        }
        Elementwise::BatchNorm(eps) => {
            let (sc, bi, mean, var) = (a[1], a[2], a[3], a[4]);
            let epilogue = e.float_const(ty, *eps);
            let v = e.b.ins().fadd(var, epilogue);
            let sd = e.b.ins().sqrt(v);
            let d = e.b.ins().fsub(x, mean);
            let n = e.b.ins().fdiv(d, sd);
            e.mul_add(n, sc, bi)
        }
        Elementwise::AddScaled(beta) => {
            let bt = e.float_const(ty, *beta);
            e.mul_add(a[1], bt, x)
        }
        _ => return None,
    })
}

/// f64 elementwise math on scalars: arithmetic as [`float_math`] has it, and the
/// transcendental functions (whose f32 forms are polynomials made for f32) through libm's f64
/// functions (`optc_rt_math_f64`). `None` for what has no f64 form (Silu and the GELUs are
/// defined by their f32 rounding steps, the quantizing steps are f32).
fn f64_math(e: &mut Emitter, f: &Elementwise, a: &[Value]) -> Option<Value> {
    use crate::runtime::{F64_ERF, F64_EXP, F64_FMOD, F64_LOG, F64_POW, F64_TANH};
    let ty = types::F64;
    let x = a[0];
    Some(match f {
        Elementwise::Chain(steps) => return eval_chain(steps, a, |g, v| f64_math(e, g, v)),
        Elementwise::Unary(u) => match u {
            UnaryOp::Exp => e.math_f64(F64_EXP, x, x),
            UnaryOp::Log => e.math_f64(F64_LOG, x, x),
            UnaryOp::Tanh => e.math_f64(F64_TANH, x, x),
            UnaryOp::Erf => e.math_f64(F64_ERF, x, x),
            UnaryOp::Sigmoid => {
                // 1 / (1 + exp(-x)), as the interpreter has it.
                let n = e.b.ins().fneg(x);
                let ex = e.math_f64(F64_EXP, n, n);
                let one = e.f64_const(1.0);
                let d = e.b.ins().fadd(one, ex);
                e.b.ins().fdiv(one, d)
            }
            u if libm_code(u).is_some() => e.math_f64(libm_code(u)? as i64, x, x),
            UnaryOp::Silu
            | UnaryOp::Gelu
            | UnaryOp::GeluTanh
            | UnaryOp::FakeQuantize { .. }
            | UnaryOp::RoundToHalf { .. }
            | UnaryOp::NanTo { .. } => return None,
            _ => return float_math(e, ty, f, a),
        },
        Elementwise::Binary(BinaryOp::Pow) => e.math_f64(F64_POW, x, a[1]),
        Elementwise::Binary(BinaryOp::FMod) => e.math_f64(F64_FMOD, x, a[1]),
        Elementwise::PowConst(c) if ![1.0, 2.0, 3.0, 0.5].contains(c) => {
            let cv = e.f64_const(*c as f64);
            e.math_f64(F64_POW, x, cv)
        }
        Elementwise::Binary(_)
        | Elementwise::PowConst(_)
        | Elementwise::BatchNorm(_)
        | Elementwise::AddScaled(_) => return float_math(e, ty, f, a),
        _ => return None,
    })
}

pub(super) fn is_signed(dt: DType) -> bool {
    matches!(dt, DType::I64 | DType::I32 | DType::I8)
}

/// Scalar elementwise function on native values (`element_type` of each dtype).
pub(super) fn scalar_math(
    e: &mut Emitter,
    info: &NodeInfo,
    f: &Elementwise,
    a: &[Value],
    dts: &[DType],
    out: DType,
) -> Result<Value> {
    if matches!(f, Elementwise::Copy) {
        return Ok(a[0]);
    }
    // (Before the f32 chain below: a chain's steps keep its input's dtype.)
    if dts.first() == Some(&DType::F64)
        && out == DType::F64
        && !matches!(f, Elementwise::Cast | Elementwise::Where)
    {
        let mut args = a.to_vec();
        if let Elementwise::Binary(BinaryOp::Pow) = f {
            // Any exponent as f64 (as the interpreter reads it).
            args[1] = int_to_float(e, a[1], dts[1], types::F64);
        }
        return f64_math(e, f, &args)
            .ok_or_else(|| info.err(format!("{} does not take f64", info.op.name())));
    }
    if let Elementwise::Chain(steps) = f {
        let mut err = None;
        let r = eval_chain(steps, a, |g, v| {
            match scalar_math(e, info, g, v, &vec![DType::F32; v.len()], DType::F32) {
                Ok(x) => Some(x),
                Err(x) => {
                    err.get_or_insert(x);
                    None
                }
            }
        });
        return r.ok_or_else(|| err.unwrap_or_else(|| info.err("fused step chain")));
    }
    if dts[0] == DType::F32
        && out == DType::F32
        && !matches!(f, Elementwise::Cast | Elementwise::Where)
    {
        let mut args = a.to_vec();
        if let Elementwise::Binary(BinaryOp::Pow) = f {
            if dts[1] == DType::F64 {
                // `x^y` in f64 rounded once, the exponent kept whole.
                let x = e.b.ins().fpromote(types::F64, a[0]);
                let r = e.math_f64(crate::runtime::F64_POW, x, a[1]);
                return Ok(e.b.ins().fdemote(types::F32, r));
            }
            if dts[1] != DType::F32 {
                args[1] = int_to_f32(e, a[1], dts[1]);
            }
        }
        if let Some(v) = float_math(e, types::F32, f, &args) {
            return Ok(v);
        }
    }
    let x = a[0];
    let dt = dts[0];
    let ty = element_type(dt);
    let sg = is_signed(dt);
    let v = match f {
        Elementwise::Unary(u) => match u {
            UnaryOp::IsNaN => e.b.ins().fcmp(FloatCC::Unordered, x, x),
            UnaryOp::QuantizeActivation { scale, zero } => {
                // f32 to u8 by the reciprocal (`optc_ir::quantized`, step 2).
                let p = optc_ir::QuantParams {
                    scale: *scale,
                    zero: *zero as u8,
                };
                let inv = e.float_const(types::F32, p.inverse());
                let z = e.float_const(types::F32, *zero);
                let q = e.b.ins().fmul(x, inv);
                let r = round_add_clamp(e, types::F32, q, z, 0, 255);
                let w = e.b.ins().fcvt_to_sint_sat(types::I32, r);
                e.b.ins().ireduce(types::I8, w)
            }
            UnaryOp::Not => e.b.ins().bxor_imm_s(x, 1),
            UnaryOp::BitNot => e.b.ins().bnot(x),
            UnaryOp::Identity => x,
            UnaryOp::Relu => {
                let z = e.b.ins().iconst(ty, 0);
                if sg {
                    e.b.ins().smax(x, z)
                } else {
                    x
                }
            }
            UnaryOp::Neg => e.b.ins().ineg(x),
            UnaryOp::Wrap { bits, signed } => {
                let shift = (ty.bits() as usize).saturating_sub(*bits) as i64;
                let up = e.b.ins().ishl_imm_s(x, shift);
                if *signed {
                    e.b.ins().sshr_imm_s(up, shift)
                } else {
                    e.b.ins().ushr_imm_u(up, shift)
                }
            }
            UnaryOp::Abs => {
                if sg {
                    e.b.ins().iabs(x)
                } else {
                    x
                }
            }
            UnaryOp::Clip { min, max } => {
                let (lo, hi) = int_range(dt);
                let mut v = x;
                if *min > lo as f32 {
                    let l = (*min as f64).clamp(lo as f64, hi as f64) as i64;
                    let c = e.b.ins().iconst(ty, l);
                    v = if sg {
                        e.b.ins().smax(v, c)
                    } else {
                        e.b.ins().umax(v, c)
                    };
                }
                if *max < hi as f32 {
                    let h = (*max as f64).clamp(lo as f64, hi as f64) as i64;
                    let c = e.b.ins().iconst(ty, h);
                    v = if sg {
                        e.b.ins().smin(v, c)
                    } else {
                        e.b.ins().umin(v, c)
                    };
                }
                v
            }
            _ => return Err(info.err(format!("{} does not take {}", info.op.name(), dt))),
        },
        Elementwise::Binary(b) => {
            let y = a[1];
            if dt.is_float() {
                let cc = match b {
                    BinaryOp::Equal => FloatCC::Equal,
                    BinaryOp::Greater => FloatCC::GreaterThan,
                    BinaryOp::Less => FloatCC::LessThan,
                    BinaryOp::GreaterOrEqual => FloatCC::GreaterThanOrEqual,
                    BinaryOp::LessOrEqual => FloatCC::LessThanOrEqual,
                    _ => return Err(info.err(format!("unsupported f32 op {b:?}"))),
                };
                e.b.ins().fcmp(cc, x, y)
            } else {
                let cmp = |s: IntCC, u: IntCC| if sg { s } else { u };
                match b {
                    BinaryOp::Add => e.b.ins().iadd(x, y),
                    BinaryOp::Sub => e.b.ins().isub(x, y),
                    BinaryOp::Mul => e.b.ins().imul(x, y),
                    BinaryOp::Div => {
                        let z = e.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                        e.fail_if(z, RuntimeError::DivisionByZero);
                        if sg {
                            let m1 = e.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                            let one = e.b.ins().iconst(ty, 1);
                            let ys = e.b.ins().select(m1, one, y);
                            let q = e.b.ins().sdiv(x, ys);
                            let nx = e.b.ins().ineg(x);
                            e.b.ins().select(m1, nx, q)
                        } else {
                            e.b.ins().udiv(x, y)
                        }
                    }
                    BinaryOp::Max => {
                        if sg {
                            e.b.ins().smax(x, y)
                        } else {
                            e.b.ins().umax(x, y)
                        }
                    }
                    BinaryOp::Min => {
                        if sg {
                            e.b.ins().smin(x, y)
                        } else {
                            e.b.ins().umin(x, y)
                        }
                    }
                    BinaryOp::Equal => e.b.ins().icmp(IntCC::Equal, x, y),
                    BinaryOp::Greater => e.b.ins().icmp(
                        cmp(IntCC::SignedGreaterThan, IntCC::UnsignedGreaterThan),
                        x,
                        y,
                    ),
                    BinaryOp::Less => {
                        e.b.ins()
                            .icmp(cmp(IntCC::SignedLessThan, IntCC::UnsignedLessThan), x, y)
                    }
                    BinaryOp::GreaterOrEqual => e.b.ins().icmp(
                        cmp(
                            IntCC::SignedGreaterThanOrEqual,
                            IntCC::UnsignedGreaterThanOrEqual,
                        ),
                        x,
                        y,
                    ),
                    BinaryOp::LessOrEqual => e.b.ins().icmp(
                        cmp(IntCC::SignedLessThanOrEqual, IntCC::UnsignedLessThanOrEqual),
                        x,
                        y,
                    ),
                    BinaryOp::And | BinaryOp::BitAnd => e.b.ins().band(x, y),
                    BinaryOp::Or | BinaryOp::BitOr => e.b.ins().bor(x, y),
                    BinaryOp::BitXor => e.b.ins().bxor(x, y),
                    // Cranelift takes shift amounts modulo the width, as the op says.
                    BinaryOp::ShiftLeft => e.b.ins().ishl(x, y),
                    BinaryOp::ShiftRight => {
                        if sg {
                            e.b.ins().sshr(x, y)
                        } else {
                            e.b.ins().ushr(x, y)
                        }
                    }
                    BinaryOp::FMod => {
                        return Err(info.err(format!("fmod does not take {dt}")));
                    }
                    BinaryOp::Pow => {
                        let x64 = cast(e, x, dt, DType::I64);
                        let edt = dts[1];
                        let (ef, is_int, ei) = if edt.is_float() {
                            let ef = int_to_float(e, y, edt, types::F64);
                            (ef, 0, e.int_const(0))
                        } else {
                            let ei = cast(e, y, edt, DType::I64);
                            let ef = e.b.ins().fcvt_from_sint(types::F64, ei);
                            (ef, 1, ei)
                        };
                        let (lo, hi) = int_range(dt);
                        let isi = e.b.ins().iconst(types::I32, is_int);
                        let lo = e.int_const(lo);
                        let hi = e.int_const(hi);
                        let f = e.runtime.integer_pow;
                        let c = e.b.ins().call(f, &[x64, ef, isi, ei, lo, hi]);
                        let r = e.b.inst_results(c)[0];
                        if ty == types::I64 {
                            r
                        } else {
                            e.b.ins().ireduce(ty, r)
                        }
                    }
                }
            }
        }
        Elementwise::Where => e.b.ins().select(a[0], a[1], a[2]),
        Elementwise::Cast => cast(e, x, dt, out),
        Elementwise::Bitcast => {
            let to = element_type(out);
            if element_type(dt) == to {
                x
            } else {
                e.b.ins().bitcast(to, MemFlagsData::new(), x)
            }
        }
        Elementwise::Quantize { lo, hi, zero } => {
            let z = if *zero {
                int_to_f32(e, a[2], dts[2])
            } else {
                e.float_const(types::F32, 0.0)
            };
            let q = e.b.ins().fdiv(x, a[1]);
            let r = round_add_clamp(e, types::F32, q, z, *lo, *hi);
            let w = e.b.ins().fcvt_to_sint_sat(types::I32, r);
            e.b.ins().ireduce(types::I8, w)
        }
        Elementwise::Dequantize { zero } => {
            let xi = cast(e, x, dt, DType::I64);
            let d = if *zero {
                let zi = cast(e, a[2], dts[2], DType::I64);
                e.b.ins().isub(xi, zi)
            } else {
                xi
            };
            let f = e.b.ins().fcvt_from_sint(types::F32, d);
            e.b.ins().fmul(f, a[1])
        }
        Elementwise::Shift => {
            let xi = cast(e, x, dt, DType::I32);
            let zi = cast(e, a[1], dts[1], DType::I32);
            e.b.ins().isub(xi, zi)
        }
        _ => return Err(info.err(format!("unsupported elementwise op on {dt}"))),
    };
    Ok(v)
}

/// `clamp(round_half_even(q) + zero, lo, hi)` on f32 scalars or `F32X4` vectors, NaN giving
/// `lo` (the comparison before the minimum): the quantization step every quantizing
/// lowering shares (see `optc_ir::linear_quantization::quantize`).
/// `optc_ir::narrow::round_to_half` on a scalar f32 or an f32x4: the f32 bits rounded to
/// binary16's 10 (bfloat16's 7) mantissa bits, ties to even; for binary16 also the subnormal
/// range (multiples of 2^-24) and overflow to infinity. NaN stays NaN.
fn round_to_half(e: &mut Emitter, ty: Type, x: Value, bfloat: bool) -> Value {
    let ity = if ty.is_vector() { I32X4 } else { types::I32 };
    let flags = crate::ops::map::le();
    let bits = if ty.is_vector() {
        e.b.ins().bitcast(ity, flags, x)
    } else {
        e.b.ins().bitcast(ity, MemFlagsData::new(), x)
    };
    let (shift, half, keep) = if bfloat {
        (16, 0x7FFF, 0xFFFF_0000u32 as i32)
    } else {
        (13, 0x0FFF, !0x1FFF)
    };
    let one = e.i32_const(ty, 1);
    let lsb = e.b.ins().ushr_imm_u(bits, shift);
    let lsb = e.b.ins().band(lsb, one);
    let h = e.i32_const(ty, half);
    let add = e.b.ins().iadd(h, lsb);
    let r = e.b.ins().iadd(bits, add);
    let k = e.i32_const(ty, keep);
    let r = e.b.ins().band(r, k);
    let mut y = if ty.is_vector() {
        e.b.ins().bitcast(ty, flags, r)
    } else {
        e.b.ins().bitcast(ty, MemFlagsData::new(), r)
    };
    if !bfloat {
        let a = e.b.ins().fabs(y);
        let max = e.float_const(ty, optc_ir::narrow::HALF_MAX);
        let over = e.b.ins().fcmp(FloatCC::GreaterThan, a, max);
        let inf = e.float_const(ty, f32::INFINITY);
        let minus_inf = e.float_const(ty, f32::NEG_INFINITY);
        let zero = e.float_const(ty, 0.0);
        let negative = e.b.ins().fcmp(FloatCC::LessThan, x, zero);
        let signed_inf = e.select_float(ty, negative, minus_inf, inf);
        y = e.select_float(ty, over, signed_inf, y);
        let scale = e.float_const(ty, 16_777_216.0);
        let unscale = e.float_const(ty, 1.0 / 16_777_216.0);
        let t = e.b.ins().fmul(x, scale);
        let t = e.b.ins().nearest(t);
        let sub = e.b.ins().fmul(t, unscale);
        let ax = e.b.ins().fabs(x);
        let normal = e.float_const(ty, optc_ir::narrow::HALF_MIN_NORMAL);
        let small = e.b.ins().fcmp(FloatCC::LessThan, ax, normal);
        y = e.select_float(ty, small, sub, y);
    }
    let nan = e.b.ins().fcmp(FloatCC::Unordered, x, x);
    e.select_float(ty, nan, x, y)
}

pub(crate) fn round_add_clamp(
    e: &mut Emitter,
    ty: Type,
    q: Value,
    zero: Value,
    lo: i32,
    hi: i32,
) -> Value {
    let r = e.b.ins().nearest(q);
    let r = e.b.ins().fadd(r, zero);
    let l = e.float_const(ty, lo as f32);
    let above = e.b.ins().fcmp(FloatCC::GreaterThan, r, l);
    let r = e.select_float(ty, above, r, l);
    let h = e.float_const(ty, hi as f32);
    e.clamp_hi(ty, r, h)
}

pub(super) fn int_range(dt: DType) -> (i64, i64) {
    match dt {
        DType::I64 => (i64::MIN, i64::MAX),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I8 => (-128, 127),
        DType::U8 => (0, 255),
        _ => (0, 1),
    }
}

fn int_to_f32(e: &mut Emitter, x: Value, dt: DType) -> Value {
    int_to_float(e, x, dt, types::F32)
}

/// An integer, bool or float value of `dt` as the float type `to` (F32 or F64; nearest).
fn int_to_float(e: &mut Emitter, x: Value, dt: DType, to: Type) -> Value {
    match dt {
        DType::F32 if to == types::F32 => x,
        DType::F32 => e.b.ins().fpromote(to, x),
        DType::F64 if to == types::F64 => x,
        DType::F64 => e.b.ins().fdemote(to, x),
        DType::I64 | DType::I32 => e.b.ins().fcvt_from_sint(to, x),
        DType::I8 => {
            let w = e.b.ins().sextend(types::I32, x);
            e.b.ins().fcvt_from_sint(to, w)
        }
        DType::U8 | DType::Bool => {
            let w = e.b.ins().uextend(types::I32, x);
            e.b.ins().fcvt_from_sint(to, w)
        }
    }
}

/// `Cast` semantics (see the interpreter): float→int truncates and saturates (NaN → 0),
/// int→int wraps, anything→bool is `x != 0`, bool→number is 0/1.
pub(super) fn cast(e: &mut Emitter, x: Value, from: DType, to: DType) -> Value {
    if from == to {
        return x;
    }
    let tt = element_type(to);
    if to == DType::Bool {
        return if from.is_float() {
            let z = e.float_const(element_type(from), 0.0);
            e.b.ins().fcmp(FloatCC::NotEqual, x, z)
        } else {
            e.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        };
    }
    if to.is_float() {
        return int_to_float(e, x, from, tt);
    }
    if from.is_float() {
        return match to {
            DType::I64 | DType::I32 => e.b.ins().fcvt_to_sint_sat(tt, x),
            _ => {
                let w = e.b.ins().fcvt_to_sint_sat(types::I32, x);
                let (lo, hi) = int_range(to);
                let l = e.b.ins().iconst(types::I32, lo);
                let h = e.b.ins().iconst(types::I32, hi);
                let w = e.b.ins().smax(w, l);
                let w = e.b.ins().smin(w, h);
                e.b.ins().ireduce(types::I8, w)
            }
        };
    }
    // int/bool → int
    let fb = element_type(from).bits();
    let tb = tt.bits();
    if fb == tb {
        x
    } else if fb > tb {
        e.b.ins().ireduce(tt, x)
    } else if is_signed(from) {
        e.b.ins().sextend(tt, x)
    } else {
        e.b.ins().uextend(tt, x)
    }
}

/// The function of a `mixed_lanes` path on loaded vectors.
pub(super) fn mixed_math(e: &mut Emitter, f: &Elementwise, a: &[Value]) -> Value {
    match f {
        Elementwise::Where => {
            let z = e.i32_const(I32X4, 0);
            let m = e.b.ins().icmp(IntCC::NotEqual, a[0], z);
            let m = e.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
            e.b.ins().bitselect(m, a[1], a[2])
        }
        Elementwise::Unary(_) => {
            // IsNaN: all-ones lanes where unordered, then 0/1.
            let m = e.b.ins().fcmp(FloatCC::Unordered, a[0], a[0]);
            let one = e.i32_const(I32X4, 1);
            e.b.ins().band(m, one)
        }
        Elementwise::Binary(BinaryOp::And) => e.b.ins().band(a[0], a[1]),
        Elementwise::Quantize { lo, hi, zero } => {
            // the scalar path's steps, on f32x4 (zero point lanes widened to i32)
            let z = if *zero {
                e.b.ins().fcvt_from_sint(F32X4, a[2])
            } else {
                e.float_const(F32X4, 0.0)
            };
            let q = e.b.ins().fdiv(a[0], a[1]);
            let r = round_add_clamp(e, F32X4, q, z, *lo, *hi);
            e.b.ins().fcvt_to_sint_sat(I32X4, r)
        }
        Elementwise::Dequantize { zero } => {
            let d = if *zero {
                e.b.ins().isub(a[0], a[2])
            } else {
                a[0]
            };
            let f = e.b.ins().fcvt_from_sint(F32X4, d);
            e.b.ins().fmul(f, a[1])
        }
        _ => e.b.ins().bor(a[0], a[1]),
    }
}
