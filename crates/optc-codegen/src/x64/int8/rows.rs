//! The kernel rows a pixel-rows conv tile skips: an output row whose window reaches into the
//! top or bottom padding only sums the kernel rows that read the image (as oneDNN's brgemm
//! convolutions batch only the valid kernel rows). A pixel-rows conv's K order is (kh, dword
//! plane, kw), so the kernel rows `[lo, hi)` are the contiguous K groups
//! `[lo, hi) x planes x kw`; the zero-point correction of such a row sums only those kernel
//! rows' weights, one channel table per distinct range (the first the whole kernel).
//!
//! On a 7x7 map a 3x3 kernel's rows read the padding in 2 of 21 (row, kernel row) pairs, on
//! a 4x4 map in 2 of 12: that much of the tile's K loop is not run.

use crate::ops::conv::ConvGeometry;

/// The kernel-row ranges of a conv's output rows.
pub(crate) struct KernelRows {
    /// Distinct ranges `[lo, hi)` of kernel rows, the whole kernel first.
    pub ranges: Vec<(usize, usize)>,
    /// Per output row, its range's index in `ranges`.
    pub of_row: Vec<usize>,
}

/// Bytes of one output row's entry in the row table ([`row_table`]).
pub(crate) const ROW_ENTRY_BYTES: usize = 32;

impl KernelRows {
    /// The kernel rows output row `oh` of `g` reads inside the image: padded input row
    /// `oh sh + kh dh` in `[ph, ph + h)`.
    pub fn of(g: &ConvGeometry) -> KernelRows {
        let mut ranges = vec![(0, g.kh)];
        let mut of_row = Vec::with_capacity(g.oh);
        for oh in 0..g.oh {
            let valid = |kh: usize| (g.ph..g.ph + g.h).contains(&(oh * g.sh + kh * g.dh));
            let lo = (0..g.kh).find(|&kh| valid(kh)).unwrap_or(g.kh);
            let hi = (lo..g.kh)
                .rev()
                .find(|&kh| valid(kh))
                .map_or(lo, |kh| kh + 1);
            let range = (lo, hi);
            let i = match ranges.iter().position(|&r| r == range) {
                Some(i) => i,
                None => {
                    ranges.push(range);
                    ranges.len() - 1
                }
            };
            of_row.push(i);
        }
        KernelRows { ranges, of_row }
    }

    /// The share of the whole kernel's K groups the output rows sum.
    pub fn share(&self) -> f64 {
        let kh = self.ranges[0].1;
        if self.of_row.is_empty() || kh == 0 {
            return 1.0;
        }
        let rows: usize = self
            .of_row
            .iter()
            .map(|&i| self.ranges[i].1 - self.ranges[i].0)
            .sum();
        rows as f64 / (kh * self.of_row.len()) as f64
    }
}

/// The row table the pixel-rows driver reads per output row: four i64, the byte offset of its
/// first K group in a weight panel and in the K groups' offset table, its K group count, and
/// the byte offset of its channel table (`npad` i32 per range). `groups_per_row`: K groups per
/// kernel row (planes x kw); `panel_group_bytes`: bytes of one K group of a weight panel.
pub(crate) fn row_table(
    rows: &KernelRows,
    groups_per_row: usize,
    panel_group_bytes: usize,
    npad: usize,
) -> Vec<u8> {
    let mut v = Vec::with_capacity(rows.of_row.len() * ROW_ENTRY_BYTES);
    for &i in &rows.of_row {
        let (lo, hi) = rows.ranges[i];
        let first = lo * groups_per_row;
        for x in [
            first * panel_group_bytes,
            first * 8,
            (hi - lo) * groups_per_row,
            i * npad * 4,
        ] {
            v.extend((x as i64).to_le_bytes());
        }
    }
    v
}
