//! The transposing copy of the sparse path (AVX2, ymm): `rows` (8 or 16) rows of
//! `8 * kblocks` floats become `8 * kblocks` rows of `rows` contiguous floats, in 8x8 blocks
//! transposed in registers. It packs a MatMul's A into the `[K][16]` panels the sparse kernel
//! reads (`crate::x64::sparse`).
//!
//! System-V ABI, no return value: `transpose(src, dst, kblocks)`: source row `r` at
//! `src + r * key.src_stride`, destination row `k` at `dst + k * key.dst_stride`.

use super::registers::ymm;
use iced_x86::code_asm::*;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TransposeKey {
    /// 8 or 16.
    pub rows: usize,
    pub src_stride: i32,
    pub dst_stride: i32,
}

impl TransposeKey {
    pub fn symbol(&self) -> String {
        format!(
            "optc_transpose_avx2_{}r_{}_{}",
            self.rows, self.src_stride, self.dst_stride
        )
    }
}

pub(crate) const TRANSPOSE_PARAMS: usize = 3;

/// Transpose the 8x8 block in ymm0-7 (row i in ymm i) into ymm0-7 (column i in ymm i),
/// with ymm8-15 as scratch.
fn transpose8(a: &mut CodeAssembler) -> Result<(), IcedError> {
    for p in 0..4 {
        a.vunpcklps(ymm(8 + 2 * p), ymm(2 * p), ymm(2 * p + 1))?;
        a.vunpckhps(ymm(9 + 2 * p), ymm(2 * p), ymm(2 * p + 1))?;
    }
    // t0 = ymm8, t1 = ymm9 (rows 0, 1), t2 = ymm10, t3 = ymm11 (rows 2, 3), t4..t7: rows 4-7.
    for q in 0..2 {
        let (t0, t1, t2, t3) = (
            ymm(8 + 4 * q),
            ymm(9 + 4 * q),
            ymm(10 + 4 * q),
            ymm(11 + 4 * q),
        );
        a.vshufps(ymm(4 * q), t0, t2, 0x44)?;
        a.vshufps(ymm(4 * q + 1), t0, t2, 0xEE)?;
        a.vshufps(ymm(4 * q + 2), t1, t3, 0x44)?;
        a.vshufps(ymm(4 * q + 3), t1, t3, 0xEE)?;
    }
    // u0..u3 = ymm0-3 (rows 0-3), u4..u7 = ymm4-7 (rows 4-7).
    for i in 0..4 {
        a.vperm2f128(ymm(8 + i), ymm(i), ymm(4 + i), 0x20)?;
        a.vperm2f128(ymm(12 + i), ymm(i), ymm(4 + i), 0x31)?;
    }
    for i in 0..8 {
        a.vmovaps(ymm(i), ymm(8 + i))?;
    }
    Ok(())
}

pub(crate) fn assemble(key: &TransposeKey) -> Result<Vec<u8>, IcedError> {
    assert!(key.rows == 8 || key.rows == 16, "8 or 16 rows");
    let mut a = CodeAssembler::new(64)?;
    let mut top = a.create_label();
    let mut done = a.create_label();
    a.test(rdx, rdx)?;
    a.jz(done)?;
    a.set_label(&mut top)?;
    for half in 0..key.rows / 8 {
        for r in 0..8 {
            let row = (8 * half + r) as i32;
            a.vmovups(ymm(r), ymmword_ptr(rdi + row * key.src_stride))?;
        }
        transpose8(&mut a)?;
        for k in 0..8 {
            let m = ymmword_ptr(rsi + (k as i32 * key.dst_stride + 32 * half as i32));
            a.vmovups(m, ymm(k))?;
        }
    }
    a.add(rdi, 32)?;
    a.add(rsi, 8 * key.dst_stride)?;
    a.dec(rdx)?;
    a.jnz(top)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}
