//! Narrow element types: ONNX's `float16`, `bfloat16`, `int16`, `uint16` and `uint32` are
//! held widened in the IR (f32 for the floats, i64 for the integers) and kept exact by two
//! ops applied wherever a value of such a type is produced: [`crate::UnaryOp::RoundToHalf`]
//! rounds an f32 to the nearest f16 (or bf16) value, [`crate::UnaryOp::Wrap`] wraps an
//! integer modulo `2^bits`. An f16 add is then `round_to_half(a + b)`: the f32 sum of two
//! f16 values rounded once more gives the correctly rounded f16 sum (f32 has more than
//! twice f16's precision), which is what the ONNX reference computes.
//!
//! This module defines the two functions and the f16/bf16 bit encodings the importer and
//! the tensor I/O use.

/// `x` rounded to the nearest binary16 value (`bfloat`: bfloat16), ties to even, as an f32.
/// Beyond binary16's largest finite value (65504) the result is an infinity; below its
/// smallest normal the subnormal spacing 2^-24 applies. NaN stays NaN.
pub fn round_to_half(x: f32, bfloat: bool) -> f32 {
    if x.is_nan() || x.is_infinite() {
        return x;
    }
    if bfloat {
        let b = x.to_bits();
        let r = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000;
        return f32::from_bits(r);
    }
    let a = x.abs();
    if a < HALF_MIN_NORMAL {
        // Subnormal range: multiples of 2^-24; the scaled value is exact in f32.
        return (x * 16_777_216.0).round_ties_even() / 16_777_216.0;
    }
    let b = x.to_bits();
    let r = f32::from_bits(b.wrapping_add(0x0FFF + ((b >> 13) & 1)) & !0x1FFF);
    if r.abs() > HALF_MAX {
        f32::INFINITY.copysign(x)
    } else {
        r
    }
}

/// binary16's largest finite value.
pub const HALF_MAX: f32 = 65504.0;
/// binary16's smallest normal value, 2^-14.
pub const HALF_MIN_NORMAL: f32 = 6.103_515_6e-5;

/// `v` wrapped to a `bits`-bit integer (two's complement when `signed`), as C and numpy
/// convert: the low `bits` bits, sign-extended or not.
pub fn wrap(v: i64, bits: usize, signed: bool) -> i64 {
    if bits >= 64 {
        return v;
    }
    let shift = 64 - bits as u32;
    if signed {
        (v << shift) >> shift
    } else {
        ((v as u64) << shift >> shift) as i64
    }
}

/// The binary16 encoding of an f32 that holds a binary16 value (see [`round_to_half`]);
/// other values are rounded first.
pub fn f16_bits(x: f32) -> u16 {
    let x = round_to_half(x, false);
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    if x.is_nan() {
        return sign | 0x7E00;
    }
    let a = x.abs();
    if a.is_infinite() {
        return sign | 0x7C00;
    }
    if a < HALF_MIN_NORMAL {
        // exact: a multiple of 2^-24 below 2^-14
        return sign | (a * 16_777_216.0) as u16;
    }
    let exp = ((b >> 23) & 0xFF) as i32 - 127 + 15;
    let mantissa = (b >> 13) & 0x3FF;
    sign | ((exp as u16) << 10) | mantissa as u16
}

/// The f32 value of a binary16 encoding.
pub fn f16_value(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1F) as i32;
    let mantissa = (h & 0x3FF) as f32;
    match exp {
        0 => sign * mantissa / 16_777_216.0,
        31 if mantissa == 0.0 => sign * f32::INFINITY,
        31 => f32::NAN,
        _ => sign * (1.0 + mantissa / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// The bfloat16 encoding of an f32 (rounded to nearest even first).
pub fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0 | ((x.to_bits() >> 16) & 0x8000) as u16;
    }
    (round_to_half(x, true).to_bits() >> 16) as u16
}

/// The f32 value of a bfloat16 encoding.
pub fn bf16_value(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every binary16 encoding decodes to a value that encodes back to it (NaNs to NaN),
    /// and rounding an f32 gives the nearest of the two binary16 neighbours, the even
    /// one on a tie: checked against the neighbours found by decoding encodings.
    #[test]
    fn binary16_round_trip_and_nearest() {
        for h in 0..=u16::MAX {
            let v = f16_value(h);
            if v.is_nan() {
                assert!(f16_value(f16_bits(v)).is_nan());
            } else {
                assert_eq!(f16_bits(v), h, "{h:#06x} -> {v}");
                assert_eq!(round_to_half(v, false).to_bits(), v.to_bits());
            }
        }
        // Positive finite encodings in increasing order of value.
        let finite: Vec<f32> = (0..0x7C00u16).map(f16_value).collect();
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..200_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let x = f32::from_bits((seed as u32) & 0x477F_FFFF); // below 2^16, positive
            let i = finite.partition_point(|&v| v <= x);
            let lo = finite[i - 1];
            let want = if i == finite.len() {
                if x - lo < 16.0 {
                    lo
                } else {
                    f32::INFINITY
                }
            } else {
                let hi = finite[i];
                let (dl, dh) = ((x - lo) as f64, (hi - x) as f64);
                if dl < dh || (dl == dh && f16_bits(lo).is_multiple_of(2)) {
                    lo
                } else {
                    hi
                }
            };
            assert_eq!(round_to_half(x, false), want, "{x:e}");
            assert_eq!(round_to_half(-x, false), -want, "-{x:e}");
        }
    }

    #[test]
    fn bfloat16_keeps_the_high_half_rounded_to_even() {
        assert_eq!(round_to_half(1.0 + 1.0 / 256.0, true), 1.0);
        assert_eq!(round_to_half(1.0 + 3.0 / 256.0, true), 1.0 + 4.0 / 256.0);
        assert_eq!(bf16_value(bf16_bits(3.140625)), 3.140625);
        assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
        assert_eq!(round_to_half(f32::MAX, true), f32::INFINITY);
    }

    #[test]
    fn wrap_is_modular() {
        assert_eq!(wrap(32768, 16, true), -32768);
        assert_eq!(wrap(-1, 16, false), 65535);
        assert_eq!(wrap(4_294_967_296 + 5, 32, false), 5);
        assert_eq!(wrap(-5, 63, true), -5);
    }
}
