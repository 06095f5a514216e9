//! The copy of a patch panel whose 16 columns are contiguous in the source (a conv's output
//! pixels of one output row at stride 1): each of its rows (K steps) is 64 bytes at its own
//! offset from the panel's first pixel, moved as two 32-byte AVX2 loads and stores. The
//! general packer (`crate::x64::packing`) does the same in 16-byte Cranelift vectors, a
//! quarter of the bytes per instruction, and handles the other panels.
//!
//! System-V ABI, no return value, no callee-saved register touched:
//! `panel_rows(dst, src, offsets, rows)`: for `k` in `0..rows`,
//! `dst[64 k .. 64 k + 64] = src[offsets[k] ..][..64]` (`offsets` i64 bytes).

use iced_x86::code_asm::*;

/// Integer (pointer / count) parameters.
pub(crate) const PANEL_ROWS_PARAMS: usize = 4;

pub(crate) const PANEL_ROWS_SYMBOL: &str = "optc_panel_rows_64";

/// One row: the offset, two loads, two stores (`ymm0`, `ymm1` or `ymm2`, `ymm3` by `u`).
fn row(a: &mut CodeAssembler, u: usize, d: i32) -> Result<(), IcedError> {
    let (r, v0, v1) = if u == 0 {
        (rax, ymm0, ymm1)
    } else {
        (r8, ymm2, ymm3)
    };
    a.mov(r, qword_ptr(rdx + 8 * u as i32))?;
    a.vmovdqu(v0, ymmword_ptr(rsi + r))?;
    a.vmovdqu(v1, ymmword_ptr(rsi + r + 32))?;
    a.vmovdqu(ymmword_ptr(rdi + d), v0)?;
    a.vmovdqu(ymmword_ptr(rdi + (d + 32)), v1)
}

pub(crate) fn assemble() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut pair = a.create_label();
    let mut odd = a.create_label();
    let mut done = a.create_label();
    // Two rows an iteration (rcx / 2 of them, counted in r9), then the odd one.
    a.mov(r9, rcx)?;
    a.shr(r9, 1)?;
    a.jz(odd)?;
    a.set_label(&mut pair)?;
    row(&mut a, 0, 0)?;
    row(&mut a, 1, 64)?;
    a.add(rdx, 16)?;
    a.add(rdi, 128)?;
    a.dec(r9)?;
    a.jnz(pair)?;
    a.set_label(&mut odd)?;
    a.and(rcx, 1)?;
    a.jz(done)?;
    row(&mut a, 0, 0)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

#[cfg(test)]
mod tests {
    use super::super::int8_tests::native;
    use super::*;

    /// Every row count (odd and even, none) against the definition: rows from scattered,
    /// unaligned offsets, nothing written past the last row (on AVX2 hosts).
    #[test]
    fn panel_rows_copy_each_row_from_its_offset() {
        if !(std::is_x86_feature_detected!("avx2")) {
            return;
        }
        let (_module, p) = native(&assemble().unwrap(), PANEL_ROWS_PARAMS);
        type PanelRows = extern "C" fn(*mut u8, *const u8, *const i64, u64);
        // SAFETY: the finalized code of the routine (4 integer arguments, no return value).
        let f: PanelRows = unsafe { std::mem::transmute::<*const u8, PanelRows>(p) };
        let src: Vec<u8> = (0..4096).map(|i| (i * 131 % 251) as u8).collect();
        for rows in 0..9usize {
            let offsets: Vec<i64> = (0..rows).map(|k| ((k * 977 + 13) % 4000) as i64).collect();
            let mut dst = vec![0xa5u8; 64 * rows + 64];
            f(
                dst.as_mut_ptr(),
                src.as_ptr(),
                offsets.as_ptr(),
                rows as u64,
            );
            for (k, &o) in offsets.iter().enumerate() {
                let o = o as usize;
                assert_eq!(
                    &dst[64 * k..64 * k + 64],
                    &src[o..o + 64],
                    "rows={rows} row {k}"
                );
            }
            assert!(
                dst[64 * rows..].iter().all(|&b| b == 0xa5),
                "rows={rows}: past the end"
            );
        }
    }
}
