//! Operands of an index-mapped loop: a pointer, a dtype, a base element offset and element
//! strides per loop dim (0 = broadcast); dims merged where contiguous for every operand.

use cranelift_codegen::ir::Value;
use optc_ir::{DType, TensorType};

pub(super) fn element_strides(shape: &[usize]) -> Vec<i64> {
    optc_ir::strides(shape).iter().map(|&s| s as i64).collect()
}

/// An operand of an index-mapped loop: pointer, dtype, base element offset and element strides
/// per loop dim (0 = broadcast, negative allowed).
#[derive(Clone)]
pub(crate) struct Operand {
    pub p: Value,
    pub dt: DType,
    pub base: i64,
    pub strides: Vec<i64>,
}

impl Operand {
    pub fn dense(p: Value, ty: &TensorType) -> Operand {
        Operand {
            p,
            dt: ty.dtype,
            base: 0,
            strides: element_strides(&ty.shape),
        }
    }
    /// One f32 per channel (dim 1) of a rank-`rank` output: scale, bias, mean, variance.
    pub fn per_channel(p: Value, rank: usize) -> Operand {
        let mut strides = vec![0i64; rank];
        strides[1] = 1;
        Operand {
            p,
            dt: DType::F32,
            base: 0,
            strides,
        }
    }
    /// `ty` broadcast (numpy, right-aligned) to `out`.
    pub fn broadcast(p: Value, ty: &TensorType, out: &[usize]) -> Operand {
        Operand {
            p,
            dt: ty.dtype,
            base: 0,
            strides: broadcast_strides(&ty.shape, out),
        }
    }
}

pub(super) fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<i64> {
    let s = element_strides(shape);
    let r = out.len();
    let k = shape.len();
    (0..r)
        .map(|i| {
            if i + k < r {
                0
            } else {
                let j = i + k - r;
                if shape[j] == 1 && out[i] != 1 {
                    0
                } else {
                    s[j]
                }
            }
        })
        .collect()
}

/// Drop size-1 dims and merge dims that are contiguous for every operand.
pub(super) fn collapse(shape: &[usize], ops: &mut [&mut Vec<i64>]) -> Vec<usize> {
    let mut dims: Vec<usize> = vec![];
    let mut st: Vec<Vec<i64>> = vec![vec![]; ops.len()];
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let can_merge = !dims.is_empty()
            && ops.iter().enumerate().all(|(k, o)| {
                let last = *st[k].last().unwrap_or(&0);
                last == o[d] * n as i64
            });
        if can_merge {
            let l = dims.len() - 1;
            dims[l] *= n;
            for (k, o) in ops.iter().enumerate() {
                let l2 = st[k].len() - 1;
                st[k][l2] = o[d];
            }
        } else {
            dims.push(n);
            for (k, o) in ops.iter().enumerate() {
                st[k].push(o[d]);
            }
        }
    }
    for (k, o) in ops.iter_mut().enumerate() {
        **o = std::mem::take(&mut st[k]);
    }
    dims
}
