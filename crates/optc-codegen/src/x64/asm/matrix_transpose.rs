//! A matrix transpose on AVX-512 ([`crate::x64::transpose`] keeps the Cranelift 4x4 blocks
//! for the other targets): an input of `rows` rows of `cols` floats becomes `cols` output
//! rows of `rows` floats, in 16x16 tiles transposed in registers (16 loads, four rounds of
//! 16 lane shuffles, 16 stores). A tile at the matrix's right or bottom edge loads its valid
//! columns masked and stores its valid lanes masked; nothing is read or written outside the
//! matrix.
//!
//! The routine covers strips: 16 input rows across all columns ([`MatrixTransposeKey::along_rows`]),
//! or 16 input columns down all rows; a key's strips all have `strip` rows (columns), so a
//! matrix whose extent is not a multiple of 16 takes a second key for its last strip.
//!
//! System-V ABI, no return value, no callee-saved register touched:
//! `transpose(src, dst, strips)`: `src` is the first strip's first input element, `dst` its
//! first output element; input row `i` of a strip at `src + i * in_stride` floats, output row
//! `j` at `dst + j * out_stride` floats; the strips follow each other (16 rows or columns on).

use super::registers::zmm;
use iced_x86::code_asm::*;

/// Integer (pointer / count) parameters.
pub(crate) const MATRIX_TRANSPOSE_PARAMS: usize = 3;

/// The geometry of one matrix transpose's strips.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MatrixTransposeKey {
    /// The input's rows and columns (the output's columns and rows).
    pub rows: usize,
    pub cols: usize,
    /// Floats between input rows, between output rows.
    pub in_stride: usize,
    pub out_stride: usize,
    /// Strips of input rows (else of input columns).
    pub along_rows: bool,
    /// Rows (columns) in each strip: 16, or fewer for a last strip.
    pub strip: usize,
}

impl MatrixTransposeKey {
    pub fn symbol(&self) -> String {
        format!(
            "optc_matrix_transpose_{}x{}_s{}_{}_{}{}",
            self.rows,
            self.cols,
            self.in_stride,
            self.out_stride,
            if self.along_rows { "rows" } else { "cols" },
            self.strip
        )
    }
}

/// The 16-bit mask of the first `n` lanes.
fn first_lanes(n: usize) -> u32 {
    if n >= 16 {
        0xffff
    } else {
        (1u32 << n) - 1
    }
}

/// Transpose the tile in zmm0-15 (row `i` in zmm `i`); returns the register holding each
/// output row (column `j` of the tile in `out[j]`). zmm16-31 are scratch.
fn transpose16(a: &mut CodeAssembler) -> Result<[usize; 16], IcedError> {
    // Rows 2i, 2i+1 interleaved: per 128-bit lane, (r2i c0, r2i+1 c0, r2i c1, r2i+1 c1) and
    // the same of columns c2, c3.
    for i in 0..8 {
        a.vunpcklps(zmm(16 + 2 * i), zmm(2 * i), zmm(2 * i + 1))?;
        a.vunpckhps(zmm(17 + 2 * i), zmm(2 * i), zmm(2 * i + 1))?;
    }
    // Per lane L, register 4i + j: column 4L + j of rows 4i..4i+3.
    for i in 0..4 {
        let t = |k: usize| zmm(16 + 4 * i + k);
        a.vshufps(zmm(4 * i), t(0), t(2), 0x44)?;
        a.vshufps(zmm(4 * i + 1), t(0), t(2), 0xEE)?;
        a.vshufps(zmm(4 * i + 2), t(1), t(3), 0x44)?;
        a.vshufps(zmm(4 * i + 3), t(1), t(3), 0xEE)?;
    }
    // Column 4L + j is lane L of registers j, 4 + j, 8 + j, 12 + j: gather the even lanes
    // and the odd ones of each pair, then the pairs.
    let pairs = |j: usize| (16 + 4 * j, 17 + 4 * j, 18 + 4 * j, 19 + 4 * j);
    for j in 0..4 {
        let (lo_even, hi_even, lo_odd, hi_odd) = pairs(j);
        a.vshuff32x4(zmm(lo_even), zmm(j), zmm(4 + j), 0x88)?;
        a.vshuff32x4(zmm(hi_even), zmm(8 + j), zmm(12 + j), 0x88)?;
        a.vshuff32x4(zmm(lo_odd), zmm(j), zmm(4 + j), 0xDD)?;
        a.vshuff32x4(zmm(hi_odd), zmm(8 + j), zmm(12 + j), 0xDD)?;
    }
    // Lanes 0 and 2 of the even pair: columns j and 8 + j; of the odd: 4 + j, 12 + j.
    let mut out = [0usize; 16];
    for j in 0..4 {
        let (lo_even, hi_even, lo_odd, hi_odd) = pairs(j);
        a.vshuff32x4(zmm(4 * j), zmm(lo_even), zmm(hi_even), 0x88)?;
        a.vshuff32x4(zmm(4 * j + 1), zmm(lo_even), zmm(hi_even), 0xDD)?;
        a.vshuff32x4(zmm(4 * j + 2), zmm(lo_odd), zmm(hi_odd), 0x88)?;
        a.vshuff32x4(zmm(4 * j + 3), zmm(lo_odd), zmm(hi_odd), 0xDD)?;
        out[j] = 4 * j;
        out[8 + j] = 4 * j + 1;
        out[4 + j] = 4 * j + 2;
        out[12 + j] = 4 * j + 3;
    }
    Ok(out)
}

/// One tile at `r8` (input) and `r9` (output): `nrows` input rows of `ncols` columns.
/// k1 holds the first `ncols` lanes when `ncols < 16`, k2 the first `nrows` when `nrows < 16`.
fn tile(
    a: &mut CodeAssembler,
    key: &MatrixTransposeKey,
    nrows: usize,
    ncols: usize,
) -> Result<(), IcedError> {
    for i in 0..nrows {
        let at = zmmword_ptr(r8 + (4 * i * key.in_stride) as i32);
        if ncols < 16 {
            a.vmovups(zmm(i).k1().z(), at)?;
        } else {
            a.vmovups(zmm(i), at)?;
        }
    }
    let out = transpose16(a)?;
    for (j, &v) in out.iter().enumerate().take(ncols) {
        let at = zmmword_ptr(r9 + (4 * j * key.out_stride) as i32);
        if nrows < 16 {
            a.vmovups(at.k2(), zmm(v))?;
        } else {
            a.vmovups(at, zmm(v))?;
        }
    }
    Ok(())
}

/// Assemble the transpose of `key` (position independent, no relocations).
pub(crate) fn assemble(key: &MatrixTransposeKey) -> Result<Vec<u8>, IcedError> {
    assert!(
        key.rows > 0
            && key.cols > 0
            && key.in_stride >= key.cols
            && key.out_stride >= key.rows
            && (1..=16).contains(&key.strip)
            && 16 * 4 * key.in_stride.max(key.out_stride) < i32::MAX as usize / 2,
        "unsupported matrix transpose {key:?}"
    );
    let mut a = CodeAssembler::new(64)?;
    let (in_row, out_row) = (4 * key.in_stride as i32, 4 * key.out_stride as i32);
    // Along a strip: the tiles' extent across it (fixed) and along it (16, then the rest).
    let (across, along) = if key.along_rows {
        (key.strip, key.cols)
    } else {
        (key.strip, key.rows)
    };
    let (full, tail) = (along / 16, along % 16);
    // A tile's shape (input rows, columns) at `n` along the strip.
    let shape = |n: usize| {
        if key.along_rows {
            (across, n)
        } else {
            (n, across)
        }
    };
    // The masks a strip's tiles use: k1 the columns' of the partial-column tiles, k2 the
    // rows' of the partial-row tiles (each strip has at most one of each width).
    let mut col_mask = None;
    let mut row_mask = None;
    for n in [16, tail] {
        if n == 0 || (n == 16 && full == 0) {
            continue;
        }
        let (r, c) = shape(n);
        if c < 16 {
            assert!(col_mask.is_none_or(|m| m == c));
            col_mask = Some(c);
        }
        if r < 16 {
            assert!(row_mask.is_none_or(|m| m == r));
            row_mask = Some(r);
        }
    }
    if let Some(c) = col_mask {
        a.mov(eax, first_lanes(c))?;
        a.kmovw(k1, eax)?;
    }
    if let Some(r) = row_mask {
        a.mov(eax, first_lanes(r))?;
        a.kmovw(k2, eax)?;
    }
    // Per tile along the strip: input and output pointer steps.
    let (tile_in, tile_out) = if key.along_rows {
        (64, 16 * out_row)
    } else {
        (16 * in_row, 64)
    };
    // Per strip.
    let (strip_in, strip_out) = if key.along_rows {
        (16 * in_row, 64)
    } else {
        (64, 16 * out_row)
    };
    let mut done = a.create_label();
    let mut strip = a.create_label();
    a.test(rdx, rdx)?;
    a.jz(done)?;
    a.set_label(&mut strip)?;
    a.mov(r8, rdi)?;
    a.mov(r9, rsi)?;
    if full > 0 {
        let mut next = a.create_label();
        a.mov(ecx, full as u32)?;
        a.set_label(&mut next)?;
        let (r, c) = shape(16);
        tile(&mut a, key, r, c)?;
        a.add(r8, tile_in)?;
        a.add(r9, tile_out)?;
        a.dec(ecx)?;
        a.jnz(next)?;
    }
    if tail > 0 {
        let (r, c) = shape(tail);
        tile(&mut a, key, r, c)?;
    }
    a.add(rdi, strip_in)?;
    a.add(rsi, strip_out)?;
    a.dec(rdx)?;
    a.jnz(strip)?;
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

#[cfg(test)]
mod tests {
    use super::super::int8_tests::native;
    use super::*;

    /// Every strip form (along rows and columns, full and last strips) over matrices
    /// narrower and wider than a tile, extents on and off multiples of 16, padded strides,
    /// against the definition `out[j][i] = in[i][j]`; nothing written outside the strips
    /// asked for.
    #[test]
    fn matrix_transpose_matches_the_definition() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let poison = f32::from_bits(0x7fc0_dead);
        for (rows, cols) in [
            (16, 16),
            (49, 960),
            (960, 49),
            (1, 37),
            (37, 1),
            (5, 7),
            (32, 48),
            (17, 33),
        ] {
            for (in_pad, out_pad) in [(0, 0), (3, 5)] {
                let (in_stride, out_stride) = (cols + in_pad, rows + out_pad);
                let x: Vec<f32> = (0..rows * in_stride).map(|i| i as f32 + 0.25).collect();
                for along_rows in [true, false] {
                    let extent = if along_rows { rows } else { cols };
                    let (full, tail) = (extent / 16, extent % 16);
                    // Every run of strips: full ones from each start, then the last.
                    let mut runs: Vec<(usize, usize, usize)> = vec![];
                    for first in 0..=full {
                        for count in 0..=(full - first) {
                            runs.push((16, first, count));
                        }
                    }
                    if tail > 0 {
                        runs.push((tail, full, 1));
                        runs.push((tail, full, 0));
                    }
                    for (strip, first, count) in runs {
                        let key = MatrixTransposeKey {
                            rows,
                            cols,
                            in_stride,
                            out_stride,
                            along_rows,
                            strip,
                        };
                        let bytes = assemble(&key).unwrap();
                        let (_module, f) = native(&bytes, MATRIX_TRANSPOSE_PARAMS);
                        type Transpose = extern "C" fn(*const f32, *mut f32, u64);
                        // SAFETY: the finalized code of the routine (3 integer arguments,
                        // no return value); the buffers cover the matrix the calls read
                        // and write.
                        let f: Transpose =
                            unsafe { std::mem::transmute::<*const u8, Transpose>(f) };
                        let mut out = vec![poison; cols * out_stride];
                        let (src, dst) = if along_rows {
                            (16 * first * in_stride, 16 * first)
                        } else {
                            (16 * first, 16 * first * out_stride)
                        };
                        f(x[src..].as_ptr(), out[dst..].as_mut_ptr(), count as u64);
                        // The strips asked for: input rows (columns) [lo, hi).
                        let lo = 16 * first;
                        let hi = (lo + strip * count).min(extent);
                        for j in 0..cols {
                            for i in 0..out_stride {
                                let got = out[j * out_stride + i];
                                let asked =
                                    i < rows && (lo..hi).contains(if along_rows { &i } else { &j });
                                if asked {
                                    assert_eq!(
                                        got,
                                        x[i * in_stride + j],
                                        "{key:?} first={first} count={count} out[{j}][{i}]"
                                    );
                                } else {
                                    assert_eq!(
                                        got.to_bits(),
                                        poison.to_bits(),
                                        "{key:?} first={first} count={count}: wrote out[{j}][{i}]"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
