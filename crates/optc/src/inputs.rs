//! Inputs for trying a model, and comparing outputs against a reference.

use optc_ir::{DType, Data, Tensor, TensorType};

/// Deterministic pseudo-random inputs: f32 uniform in [-1, 1), integers in {0, 1},
/// bools fair. Integers stay small so index-like inputs (token ids, masks) are valid.
pub fn random_inputs(types: &[TensorType], seed: u64) -> Vec<Tensor> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    types
        .iter()
        .map(|t| {
            let n = t.numel();
            let data = match t.dtype {
                DType::F32 => Data::F32(
                    (0..n)
                        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
                        .collect(),
                ),
                DType::I64 => Data::I64((0..n).map(|_| (next() >> 63) as i64).collect()),
                DType::I32 => Data::I32((0..n).map(|_| (next() >> 63) as i32).collect()),
                DType::Bool => Data::Bool((0..n).map(|_| next() >> 63 == 1).collect()),
                DType::U8 => Data::U8((0..n).map(|_| (next() >> 63) as u8).collect()),
                DType::I8 => Data::I8((0..n).map(|_| (next() >> 63) as i8).collect()),
                DType::F64 => Data::F64(
                    (0..n)
                        .map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
                        .collect(),
                ),
            };
            Tensor::new(t.shape.clone(), data).expect("length matches shape")
        })
        .collect()
}

/// Largest absolute and relative error between two tensors, and whether they are
/// allclose (`|a - b| <= atol + rtol * |b|` everywhere, NaNs equal only to NaNs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diff {
    pub max_abs: f64,
    pub max_rel: f64,
    pub allclose: bool,
}

/// Compare `got` against `want` (the reference).
pub fn compare(
    got: &Tensor,
    want: &Tensor,
    rtol: f64,
    atol: f64,
) -> std::result::Result<Diff, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} differs from the reference's {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!(
            "dtype {} differs from the reference's {}",
            got.dtype(),
            want.dtype()
        ));
    }
    let (a, b) = (got.to_f64_vec(), want.to_f64_vec());
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        allclose: true,
    };
    for (&x, &y) in a.iter().zip(&b) {
        if x.is_nan() || y.is_nan() {
            if x.is_nan() != y.is_nan() {
                d.allclose = false;
                d.max_abs = f64::INFINITY;
                d.max_rel = f64::INFINITY;
            }
            continue;
        }
        if x == y {
            continue;
        }
        let abs = (x - y).abs();
        let rel = abs / y.abs().max(f64::MIN_POSITIVE);
        d.max_abs = d.max_abs.max(abs);
        d.max_rel = d.max_rel.max(rel);
        if abs > atol + rtol * y.abs() || !abs.is_finite() {
            d.allclose = false;
        }
    }
    Ok(d)
}
