//! The copy of a patch panel whose 16 columns are evenly spaced in the source (a conv's
//! output pixels of one output row: contiguous at stride 1, every other dword at stride 2):
//! each of its rows (K steps) is 64 bytes gathered from its own offset from the panel's first
//! pixel, moved in 32-byte AVX2 registers (stride 2: 128 bytes loaded, the even dwords kept
//! by `vshufps` and put in order by `vpermq`). The general packer (`crate::x64::packing`)
//! does the same in 16-byte Cranelift vectors and handles the other panels.
//!
//! System-V ABI, no return value, no callee-saved register touched:
//! `panel_rows(dst, src, offsets, rows)`: for `k` in `0..rows` and `j` in `0..16`,
//! `dst[64 k + 4 j ..][..4] = src[offsets[k] + 4 stride j ..][..4]` (`offsets` i64 bytes;
//! stride 2 reads the odd dword after the last one too, as the general packer does).

use iced_x86::code_asm::*;

/// Integer (pointer / count) parameters.
pub(crate) const PANEL_ROWS_PARAMS: usize = 4;

/// The routine's symbol for dword `stride` 1 or 2.
pub(crate) fn symbol(stride: usize) -> String {
    format!("optc_panel_rows_stride{stride}")
}

/// One row: the offset, the loads, the stores (registers by `u`: ymm0-1 / ymm2-3, stride 2
/// also ymm4-7 / ymm8-11).
fn row(a: &mut CodeAssembler, stride: usize, u: usize, d: i32) -> Result<(), IcedError> {
    let r = if u == 0 { rax } else { r8 };
    let v = |i: usize| super::registers::ymm(if i < 2 { 2 * u + i } else { 4 + 4 * u + i - 2 });
    a.mov(r, qword_ptr(rdx + 8 * u as i32))?;
    if stride == 1 {
        a.vmovdqu(v(0), ymmword_ptr(rsi + r))?;
        a.vmovdqu(v(1), ymmword_ptr(rsi + r + 32))?;
    } else {
        // Dwords 0-7 / 8-15 / 16-23 / 24-31 in v2-v5; per 128-bit lane the even ones of two
        // registers (0 2 8 10 | 4 6 12 14), then their qwords in order (0 2 4 6 8 10 12 14).
        for i in 0..4 {
            a.vmovdqu(v(2 + i), ymmword_ptr(rsi + r + 32 * i as i32))?;
        }
        for h in 0..2 {
            a.vshufps(v(h), v(2 + 2 * h), v(3 + 2 * h), 0x88)?;
            a.vpermq(v(h), v(h), 0xd8)?;
        }
    }
    a.vmovdqu(ymmword_ptr(rdi + d), v(0))?;
    a.vmovdqu(ymmword_ptr(rdi + (d + 32)), v(1))
}

pub(crate) fn assemble(stride: usize) -> Result<Vec<u8>, IcedError> {
    assert!(stride == 1 || stride == 2, "panel rows at stride {stride}");
    let mut a = CodeAssembler::new(64)?;
    let mut pair = a.create_label();
    let mut odd = a.create_label();
    let mut done = a.create_label();
    // Two rows an iteration (rcx / 2 of them, counted in r9), then the odd one.
    a.mov(r9, rcx)?;
    a.shr(r9, 1)?;
    a.jz(odd)?;
    a.set_label(&mut pair)?;
    row(&mut a, stride, 0, 0)?;
    row(&mut a, stride, 1, 64)?;
    a.add(rdx, 16)?;
    a.add(rdi, 128)?;
    a.dec(r9)?;
    a.jnz(pair)?;
    a.set_label(&mut odd)?;
    a.and(rcx, 1)?;
    a.jz(done)?;
    row(&mut a, stride, 0, 0)?;
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
        for stride in [1usize, 2] {
            let (_module, p) = native(&assemble(stride).unwrap(), PANEL_ROWS_PARAMS);
            type PanelRows = extern "C" fn(*mut u8, *const u8, *const i64, u64);
            // SAFETY: the finalized code of the routine (4 integer arguments, no return
            // value); `src` covers every row's 64 stride bytes.
            let f: PanelRows = unsafe { std::mem::transmute::<*const u8, PanelRows>(p) };
            let src: Vec<u8> = (0..4096).map(|i| (i * 131 % 251) as u8).collect();
            for rows in 0..9usize {
                let offsets: Vec<i64> = (0..rows).map(|k| ((k * 977 + 13) % 3900) as i64).collect();
                let mut dst = vec![0xa5u8; 64 * rows + 64];
                f(
                    dst.as_mut_ptr(),
                    src.as_ptr(),
                    offsets.as_ptr(),
                    rows as u64,
                );
                for (k, &o) in offsets.iter().enumerate() {
                    for j in 0..16 {
                        let s = o as usize + 4 * stride * j;
                        assert_eq!(
                            &dst[64 * k + 4 * j..64 * k + 4 * j + 4],
                            &src[s..s + 4],
                            "stride {stride} rows={rows} row {k} column {j}"
                        );
                    }
                }
                assert!(
                    dst[64 * rows..].iter().all(|&b| b == 0xa5),
                    "rows={rows}: past the end"
                );
            }
        }
    }
}
