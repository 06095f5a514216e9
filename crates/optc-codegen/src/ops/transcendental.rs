//! Float approximations as Cranelift IR, on scalars or f32x4 vectors: `exp` (Cody-Waite
//! reduction, degree-7 polynomial, ~1 ulp), `exp_nonpos` (softmax's), `sigmoid`, `tanh`
//! (Cephes' odd polynomial near 0) and `erf` (the rational minimax of Eigen and XLA, 3.3e-7
//! relative).

use crate::builder::{Emitter, I32X4};
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, MemFlagsData, Type, Value};

/// `exp`'s constants, shared with the AVX-512 SiLU epilogue (`x64::asm::gemm_avx512`), which
/// computes the same function step by step: the clamp of the argument, the rounding magic
/// (1.5 2^23), ln 2 in two parts (Cody-Waite), the polynomial (highest degree first) and the
/// argument past which `exp` is infinite.
pub(crate) const EXP_HI: f32 = 88.72283;
pub(crate) const EXP_LO: f32 = -86.64;
pub(crate) const EXP_MAGIC: f32 = 12582912.0;
#[allow(clippy::excessive_precision)]
pub(crate) const EXP_LN2_HI: f32 = -0.693359375;
#[allow(clippy::excessive_precision)]
pub(crate) const EXP_LN2_LO: f32 = 2.12194440e-4;
#[allow(clippy::excessive_precision)]
pub(crate) const EXP_POLY: [f32; 6] = [
    1.987_569_2e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
pub(crate) const EXP_OVERFLOW: f32 = 88.72284;

/// `tanh`'s constants, shared with the AVX-512 LSTM cell (`x64::asm::lstm`): Cephes' odd
/// polynomial in `x^2` (highest degree first), and the `|x|` below which it is used.
#[allow(clippy::excessive_precision)]
pub(crate) const TANH_POLY: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_9e-2,
    -5.373_971_6e-2,
    1.333_144_2e-1,
    -3.333_328_2e-1,
];
pub(crate) const TANH_SMALL: f32 = 0.625;

/// `erf`'s constants, shared with the AVX-512 GELU epilogue: the clamp of the argument and
/// the numerator and denominator polynomials in `x^2` (highest degree first).
pub(crate) const ERF_CLAMP: f32 = 4.0;
#[allow(clippy::excessive_precision)]
pub(crate) const ERF_P: [f32; 7] = [
    -2.726_142_4e-10,
    2.770_681_5e-8,
    -2.101_024e-6,
    -5.692_506_2e-5,
    -7.349_906_4e-4,
    -2.954_6e-3,
    -1.609_603_3e-2,
];
#[allow(clippy::excessive_precision)]
pub(crate) const ERF_Q: [f32; 5] = [
    -1.45660715e-5,
    -2.133_740_5e-4,
    -1.682_827e-3,
    -7.373_329_3e-3,
    -1.426_473_9e-2,
];

#[allow(clippy::excessive_precision)]
impl Emitter<'_> {
    fn int_ty(ty: Type) -> Type {
        if ty.is_vector() {
            I32X4
        } else {
            types::I32
        }
    }

    fn bits_of(&mut self, ty: Type, x: Value) -> Value {
        self.b
            .ins()
            .bitcast(Self::int_ty(ty), MemFlagsData::new(), x)
    }

    fn float_of(&mut self, ty: Type, x: Value) -> Value {
        self.b.ins().bitcast(ty, MemFlagsData::new(), x)
    }

    /// `|x|` with the sign of `s`.
    fn copysign(&mut self, ty: Type, mag: Value, s: Value) -> Value {
        let it = Self::int_ty(ty);
        let sb = self.bits_of(ty, s);
        let mask = self.i32_const(it, i32::MIN);
        let sign = self.b.ins().band(sb, mask);
        let mb = self.bits_of(ty, mag);
        let r = self.b.ins().bor(mb, sign);
        self.float_of(ty, r)
    }

    fn poly(&mut self, ty: Type, x: Value, coefs: &[f32]) -> Value {
        let mut p = self.float_const(ty, coefs[0]);
        for &c in &coefs[1..] {
            let cv = self.float_const(ty, c);
            p = self.mul_add(p, x, cv);
        }
        p
    }

    /// `exp(x)` (Cody–Waite reduction, Cephes degree-6 polynomial; ~1 ulp), scalar or f32x4.
    pub fn exp(&mut self, ty: Type, x: Value) -> Value {
        // n = round(x / ln 2) stays in [-125, 128]; the scale 2^n is built as 2^(n-1) * 2.
        let hi = self.float_const(ty, EXP_HI);
        let lo = self.float_const(ty, EXP_LO);
        let xc = self.clamp_hi(ty, x, hi);
        let xc = self.clamp_lo(ty, xc, lo);
        let res = self.exp_reduced(ty, xc, 126);
        let two = self.float_const(ty, 2.0);
        let res = self.b.ins().fmul(res, two);
        let big = self.float_const(ty, EXP_OVERFLOW);
        let over = self.b.ins().fcmp(FloatCC::GreaterThan, x, big);
        let inf = self.float_const(ty, f32::INFINITY);
        self.select_float(ty, over, inf, res)
    }

    /// `exp(xc) / 2^(127 - bias)` for a clamped `xc`: `n = round(xc / ln 2)`, a degree-7
    /// polynomial on the Cody-Waite reduced `r = xc - n ln 2`, times `2^(n + bias - 127)`
    /// built in the exponent bits (`bias` 127: `2^n`; 126: `2^(n-1)`, for `n` up to 128).
    fn exp_reduced(&mut self, ty: Type, xc: Value, bias: i32) -> Value {
        let log2e = self.float_const(ty, std::f32::consts::LOG2_E);
        let magic = self.float_const(ty, EXP_MAGIC);
        let t = self.mul_add(xc, log2e, magic);
        let n = self.b.ins().fsub(t, magic);
        let c1 = self.float_const(ty, EXP_LN2_HI);
        let c2 = self.float_const(ty, EXP_LN2_LO);
        let r = self.mul_add(n, c1, xc);
        let r = self.mul_add(n, c2, r);
        let p = self.poly(ty, r, &EXP_POLY);
        let r2 = self.b.ins().fmul(r, r);
        let one = self.float_const(ty, 1.0);
        let rp1 = self.b.ins().fadd(r, one);
        let y = self.mul_add(p, r2, rp1);
        let it = Self::int_ty(ty);
        let tb = self.bits_of(ty, t);
        let off = self.i32_const(it, 0x4B40_0000 - bias);
        let e = self.b.ins().isub(tb, off);
        let e = self.b.ins().ishl_imm_s(e, 23);
        let scale = self.float_of(ty, e);
        self.b.ins().fmul(y, scale)
    }

    /// `exp(x)` for `x <= 0` or NaN (softmax's `x - max`), as `exp` without the overflow
    /// handling: same reduction and polynomial, scale `2^n` with `n` in [-125, 0].
    pub fn exp_nonpos(&mut self, ty: Type, x: Value) -> Value {
        let lo = self.float_const(ty, EXP_LO);
        let xc = self.clamp_lo(ty, x, lo);
        self.exp_reduced(ty, xc, 127)
    }

    pub fn sigmoid(&mut self, ty: Type, x: Value) -> Value {
        let nx = self.b.ins().fneg(x);
        let e = self.exp(ty, nx);
        let one = self.float_const(ty, 1.0);
        let d = self.b.ins().fadd(one, e);
        self.b.ins().fdiv(one, d)
    }

    pub fn tanh(&mut self, ty: Type, x: Value) -> Value {
        let ax = self.b.ins().fabs(x);
        // Small |x|: Cephes tanhf odd polynomial.
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(ty, z, &TANH_POLY);
        let pz = self.b.ins().fmul(p, z);
        let small = self.mul_add(pz, x, x);
        // Large |x|: 1 - 2 / (exp(2|x|) + 1), with the sign of x.
        let two = self.float_const(ty, 2.0);
        let a2 = self.b.ins().fmul(ax, two);
        let e = self.exp(ty, a2);
        let one = self.float_const(ty, 1.0);
        let d = self.b.ins().fadd(e, one);
        let q = self.b.ins().fdiv(two, d);
        let mag = self.b.ins().fsub(one, q);
        let large = self.copysign(ty, mag, x);
        let lim = self.float_const(ty, TANH_SMALL);
        let is_small = self.b.ins().fcmp(FloatCC::LessThan, ax, lim);
        self.select_float(ty, is_small, small, large)
    }

    /// `erf(x)`: the rational minimax approximation `x * P(x^2) / Q(x^2)` (degree 13 / 8, as
    /// in Eigen's and XLA's f32 erf) on `x` clamped to [-4, 4] (where erf rounds to +-1).
    /// Max relative error 3.3e-7 (under 3 ulp; `transcendental_error_bounds`) over the f32
    /// range; NaN stays NaN.
    pub fn erf(&mut self, ty: Type, x: Value) -> Value {
        let hi = self.float_const(ty, ERF_CLAMP);
        let lo = self.float_const(ty, -ERF_CLAMP);
        let xc = self.clamp_hi(ty, x, hi);
        let xc = self.clamp_lo(ty, xc, lo);
        let z = self.b.ins().fmul(xc, xc);
        let p = self.poly(ty, z, &ERF_P);
        let q = self.poly(ty, z, &ERF_Q);
        let xp = self.b.ins().fmul(xc, p);
        self.b.ins().fdiv(xp, q)
    }
}
