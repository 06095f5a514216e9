//! The math functions generated code calls on the host (the JIT); AOT objects carry
//! instruction-for-instruction equivalents (`aot::runtime`).

/// `ln(x)` in f32.
pub extern "C" fn optc_rt_logf(x: f32) -> f32 {
    x.ln()
}

/// `x^y` computed in f64 and rounded once (matches the reference interpreter).
pub extern "C" fn optc_rt_powf(x: f32, y: f32) -> f32 {
    (x as f64).powf(y as f64) as f32
}

/// `Pow` with an integer base (see the interpreter): a non-negative integer exponent gives the
/// wrapping power (computed in i64; the caller truncates to the element width); any other
/// exponent computes `powf` in f64 and converts back, saturating to `[lo, hi]` (NaN → 0).
pub extern "C" fn optc_rt_powi(x: i64, ef: f64, is_int: i32, ei: i64, lo: i64, hi: i64) -> i64 {
    let k = if is_int != 0 {
        Some(ei)
    } else if ef.fract() == 0.0 && (0.0..1.8e19).contains(&ef) {
        Some(ef as i64)
    } else {
        None
    };
    match k {
        Some(k) if k >= 0 => optc_ir::interp::wrapping_pow(x, k as u64),
        _ => {
            let f = if is_int != 0 { ei as f64 } else { ef };
            let r = (x as f64).powf(f);
            if r.is_nan() {
                0
            } else {
                r.clamp(lo as f64, hi as f64) as i64
            }
        }
    }
}

/// The libm functions behind [`optc_rt_unary_math`], by code (`UnaryOp::Sin` is 0, ...).
pub const UNARY_MATH: [&str; 11] = [
    "sinf", "cosf", "tanf", "asinf", "acosf", "atanf", "sinhf", "coshf", "asinhf", "acoshf",
    "atanhf",
];

extern "C" {
    fn sinf(x: f32) -> f32;
    fn cosf(x: f32) -> f32;
    fn tanf(x: f32) -> f32;
    fn asinf(x: f32) -> f32;
    fn acosf(x: f32) -> f32;
    fn atanf(x: f32) -> f32;
    fn sinhf(x: f32) -> f32;
    fn coshf(x: f32) -> f32;
    fn asinhf(x: f32) -> f32;
    fn acoshf(x: f32) -> f32;
    fn atanhf(x: f32) -> f32;
}

/// The libm functions behind [`optc_rt_math_f64`], by code: the f64 twins of
/// [`UNARY_MATH`] (the same codes), then `exp`, `log`, `tanh`, `erf`, and of two arguments
/// `pow` and `fmod` (codes [`F64_POW`] and [`F64_FMOD`]).
pub const MATH_F64: [&str; 17] = [
    "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "exp",
    "log", "tanh", "erf", "pow", "fmod",
];
/// [`MATH_F64`]'s codes past the trigonometric ones.
pub const F64_EXP: i64 = 11;
pub const F64_LOG: i64 = 12;
pub const F64_TANH: i64 = 13;
pub const F64_ERF: i64 = 14;
pub const F64_POW: i64 = 15;
pub const F64_FMOD: i64 = 16;

extern "C" {
    fn sin(x: f64) -> f64;
    fn cos(x: f64) -> f64;
    fn tan(x: f64) -> f64;
    fn asin(x: f64) -> f64;
    fn acos(x: f64) -> f64;
    fn atan(x: f64) -> f64;
    fn sinh(x: f64) -> f64;
    fn cosh(x: f64) -> f64;
    fn asinh(x: f64) -> f64;
    fn acosh(x: f64) -> f64;
    fn atanh(x: f64) -> f64;
    fn exp(x: f64) -> f64;
    fn log(x: f64) -> f64;
    fn tanh(x: f64) -> f64;
    fn erf(x: f64) -> f64;
    fn pow(x: f64, y: f64) -> f64;
    fn fmod(x: f64, y: f64) -> f64;
}

/// libm function number `code` of [`MATH_F64`] at `x` (and `y` for the two-argument ones;
/// NaN for an unknown code): f64 elementwise math. AOT objects call the same libm functions.
pub extern "C" fn optc_rt_math_f64(x: f64, y: f64, code: i32) -> f64 {
    // SAFETY: these libm functions are defined for every f64 input (NaN, inf and
    // out-of-domain values give NaN or inf); the C library the process links provides them.
    unsafe {
        match code {
            0 => sin(x),
            1 => cos(x),
            2 => tan(x),
            3 => asin(x),
            4 => acos(x),
            5 => atan(x),
            6 => sinh(x),
            7 => cosh(x),
            8 => asinh(x),
            9 => acosh(x),
            10 => atanh(x),
            11 => exp(x),
            12 => log(x),
            13 => tanh(x),
            14 => erf(x),
            15 => pow(x, y),
            16 => fmod(x, y),
            _ => f64::NAN,
        }
    }
}

/// libm function number `code` of [`UNARY_MATH`] at `x` (NaN for an unknown code). AOT
/// objects call the same libm functions.
pub extern "C" fn optc_rt_unary_math(x: f32, code: i32) -> f32 {
    // SAFETY: the libm functions of one f32 argument are defined for every input (NaN, inf
    // and out-of-domain values give NaN or inf); the C library the process links provides them.
    unsafe {
        match code {
            0 => sinf(x),
            1 => cosf(x),
            2 => tanf(x),
            3 => asinf(x),
            4 => acosf(x),
            5 => atanf(x),
            6 => sinhf(x),
            7 => coshf(x),
            8 => asinhf(x),
            9 => acoshf(x),
            10 => atanhf(x),
            _ => f32::NAN,
        }
    }
}

/// C's `fmod` in f32 (Rust's `%` on f32, which calls libm's `fmodf`).
pub extern "C" fn optc_rt_fmodf(x: f32, y: f32) -> f32 {
    x % y
}
