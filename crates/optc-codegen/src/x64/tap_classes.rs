//! Folded convs whose windows read padding, computed without the padding's products.
//!
//! A conv over many images of few output pixels each folds the images into the GEMM's
//! columns ([`super::kernel_plan::folds`]). On such small maps much of each window is
//! padding: a 3x3 conv with padding 1 on a 4x4 map reads 100 of its 144 taps (digits_cnn's
//! third conv, 360 images of 64 channels), yet the implicit GEMM multiplies the padding's
//! zeros too. Along each spatial axis an output reads a contiguous run of taps; the pairs
//! of runs (one per axis) are the pixel classes (a 4x4 map's corners, edges and middle:
//! nine). Here the columns are grouped by class (a class's pixels, each pixel's images in
//! order, then the next class), the K axis is ordered tap by tap (`k = tap x C + channel`),
//! and every K block is one tap: a unit of columns, all of one class, runs only the blocks
//! of the taps its class reads. Each class's columns are padded to whole units with filler
//! columns (computed, never stored to the output).
//!
//! The patches are packed from a copy of the input with the images innermost, `[h][w][c][n]`
//! (made before the tasks, [`emit_copy`]; no padding, which is never read), so a tap's
//! channel row of four columns (four images, one pixel) is four consecutive floats, one
//! vector load. After the tasks the GEMM's buffer is reordered into the output
//! (`serial::unfold`), both in parallel parts.
//!
//! digits_cnn (360 images; its 64 -> 128 conv on 4x4 maps), on an AMD EPYC (Zen 5): the conv
//! 4.55 -> 2.94 ms at one thread; the model 0.76x the time at one thread, 0.81x at two.
//!
//! Exact up to the order of the sums: every product dropped is a padding zero times a
//! finite weight (weights that are not all finite keep the plain fold: `0 x NaN` is NaN).

use super::kernel_plan::KernelPlan;
use super::tasks::KernelArgs;
use crate::builder::{tensor_flags, Emitter};
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{types, InstBuilder, Value};

/// Padding must be at least this share of the conv's products.
const MIN_PADDING_SHARE: f64 = 0.1;
/// Filler columns at most this share of all columns.
const MAX_FILLER_SHARE: f64 = 0.1;
/// Input channels per group at least this many, and a multiple of 8: every tap is a K block
/// of that depth (its tiles load and store C once per block). (silero-vad's 129 -> 128 conv
/// over 4 frames, 17% padding, took 0.295 ms in blocks of 129 rows against 0.242 folded
/// whole; its 128 -> 64 conv, 0.070 against 0.086.)
const MIN_CHANNELS: usize = 16;
/// Column units tried, largest first: the first whose fillers are at most 1/32 of the
/// columns, else the smallest.
const CHUNKS: [usize; 3] = [128, 64, 32];

/// The classes of a folded conv's output pixels and its columns grouped by them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct TapClasses {
    /// Columns per unit (every unit is of one class).
    pub chunk: usize,
    /// Per class, the taps (`kh_index x kw + kw_index`) its windows read, in order.
    pub classes: Vec<Vec<usize>>,
    /// Per column unit, its class.
    pub unit_class: Vec<usize>,
    /// Per column: `Some((image, output pixel))`, or `None` for a filler.
    pub columns: Vec<Option<(usize, usize)>>,
}

/// Per output along an axis, the run of taps `[t0, t1)` it reads (input extent `n`, `o`
/// outputs, kernel `k`, stride `s`, dilation `d`, leading padding `pb`); `None` when an
/// output reads none.
fn tap_runs(
    n: usize,
    o: usize,
    k: usize,
    s: usize,
    d: usize,
    pb: usize,
) -> Option<Vec<(usize, usize)>> {
    let runs = crate::border_regions::runs(n, o, k, s, d, pb)?;
    Some(
        runs.iter()
            .flat_map(|r| (r.o0..r.o1).map(move |_| (r.t0, r.t1)))
            .collect(),
    )
}

/// The plan for a folded conv of geometry `g` (`weights_finite`: every weight is), or
/// `None` when it does not pay ([`MIN_PADDING_SHARE`], [`MIN_CHANNELS`],
/// [`MAX_FILLER_SHARE`]) or a pixel reads no tap.
pub(super) fn plan(g: &ConvGeometry, weights_finite: bool) -> Option<TapClasses> {
    if !weights_finite || g.groups != 1 || g.cg < MIN_CHANNELS || !g.cg.is_multiple_of(8) || g.n < 2
    {
        return None;
    }
    let rows = tap_runs(g.h, g.oh, g.kh, g.sh, g.dh, g.ph)?;
    let cols = tap_runs(g.w, g.ow, g.kw, g.sw, g.dw, g.pw)?;
    let read: usize = rows.iter().map(|r| r.1 - r.0).sum::<usize>()
        * cols.iter().map(|c| c.1 - c.0).sum::<usize>();
    let all = g.oh * g.ow * g.kh * g.kw;
    if (read as f64) > (1.0 - MIN_PADDING_SHARE) * all as f64 {
        return None;
    }
    // Classes in order of first appearance (row-major pixels), with their pixels.
    let mut keys: Vec<((usize, usize), (usize, usize))> = vec![];
    let mut pixels: Vec<Vec<usize>> = vec![];
    for (y, &r) in rows.iter().enumerate() {
        for (x, &c) in cols.iter().enumerate() {
            let key = (r, c);
            let i = match keys.iter().position(|&k| k == key) {
                Some(i) => i,
                None => {
                    keys.push(key);
                    pixels.push(vec![]);
                    keys.len() - 1
                }
            };
            pixels[i].push(y * g.ow + x);
        }
    }
    let real = g.n * g.oh * g.ow;
    let padded = |chunk: usize| -> usize {
        pixels
            .iter()
            .map(|p| (g.n * p.len()).div_ceil(chunk) * chunk)
            .sum()
    };
    let chunk = CHUNKS
        .iter()
        .copied()
        .find(|&c| (padded(c) - real) * 32 <= padded(c))
        .unwrap_or(CHUNKS[CHUNKS.len() - 1]);
    if (padded(chunk) - real) as f64 > MAX_FILLER_SHARE * padded(chunk) as f64 {
        return None;
    }
    let mut columns = Vec::with_capacity(padded(chunk));
    let mut unit_class = vec![];
    for (ci, p) in pixels.iter().enumerate() {
        let start = columns.len();
        for &x in p {
            columns.extend((0..g.n).map(|img| Some((img, x))));
        }
        let end = start + (columns.len() - start).div_ceil(chunk) * chunk;
        columns.resize(end, None);
        unit_class.extend(std::iter::repeat_n(ci, (end - start) / chunk));
    }
    let classes = keys
        .iter()
        .map(|&((r0, r1), (c0, c1))| {
            (r0..r1)
                .flat_map(|th| (c0..c1).map(move |tw| th * g.kw + tw))
                .collect()
        })
        .collect();
    Some(TapClasses {
        chunk,
        classes,
        unit_class,
        columns,
    })
}

impl TapClasses {
    /// Most taps of a class.
    pub fn max_taps(&self) -> usize {
        self.classes.iter().map(Vec::len).max().unwrap_or(0)
    }
    /// Whether some class reads a single tap (its one K block both starts and ends).
    pub fn has_single_tap(&self) -> bool {
        self.classes.iter().any(|c| c.len() == 1)
    }
    /// The run-time table of the units' K blocks: per unit, `1 + max_taps` i64s: the count
    /// of its class's taps, then each tap's first K row (`tap x cg`).
    pub fn unit_table(&self, cg: usize) -> Vec<u8> {
        let stride = 1 + self.max_taps();
        let mut v = vec![0i64; self.unit_class.len() * stride];
        for (u, &ci) in self.unit_class.iter().enumerate() {
            let taps = &self.classes[ci];
            v[u * stride] = taps.len() as i64;
            for (i, &t) in taps.iter().enumerate() {
                v[u * stride + 1 + i] = (t * cg) as i64;
            }
        }
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    /// Per output pixel, its first column: the pixel's columns are the images in order.
    pub fn pixel_columns(&self) -> Vec<(usize, usize)> {
        let mut v: Vec<(usize, usize)> = self
            .columns
            .iter()
            .enumerate()
            .filter_map(|(q, c)| match c {
                Some((0, x)) => Some((*x, q)),
                _ => None,
            })
            .collect();
        v.sort_unstable();
        v
    }
    /// Real (not filler) columns.
    pub fn real_columns(&self) -> usize {
        self.columns.iter().filter(|c| c.is_some()).count()
    }
}

/// Bytes of the input copy with the images innermost.
pub(super) fn copy_bytes(g: &ConvGeometry) -> usize {
    g.n * g.c * g.h * g.w * 4
}

/// The patch offset tables over that copy (see [`super::packing::conv_tables`]): per K row
/// (`tap x cg + channel`) its byte offset, per column its window origin's (an image's
/// float, at the pixel the window's first tap would read, outside the map for a window
/// over padding: only taps inside are read). A filler column reads the window of the real
/// column before it (each class's columns start with a real one).
pub(super) fn offset_tables(
    t: &TapClasses,
    g: &ConvGeometry,
    columns: usize,
) -> (Vec<i64>, Vec<i64>) {
    let (n, c) = (g.n as i64, g.c as i64);
    let pixel = c * n;
    let mut koff = Vec::with_capacity(g.kh * g.kw * g.cg);
    for kh in 0..g.kh {
        for kw in 0..g.kw {
            let at = (kh * g.dh * g.w + kw * g.dw) as i64 * pixel;
            koff.extend((0..c).map(|ci| (at + ci * n) * 4));
        }
    }
    let mut last = 0;
    let pix = (0..columns)
        .map(|q| {
            if let Some(Some((img, x))) = t.columns.get(q) {
                let (oy, ox) = ((x / g.ow) as i64, (x % g.ow) as i64);
                let y = oy * g.sh as i64 - g.ph as i64;
                let xx = ox * g.sw as i64 - g.pw as i64;
                last = ((y * g.w as i64 + xx) * pixel + *img as i64) * 4;
            }
            last
        })
        .collect();
    (koff, pix)
}

/// The input `[n][c][h][w]` copied to the start of scratch with the images innermost,
/// `[h][w][c][n]`, channels `[lo, hi)`: channel by channel, four images at a time, every
/// pixel (the four images' rows of the channel stay in L1 across the pixels, the channel's
/// output across the images).
pub(super) fn emit_copy(e: &mut Emitter, g: &ConvGeometry, c: &KernelArgs, lo: Value, hi: Value) {
    let (n, ch, px) = (g.n, g.c, g.h * g.w);
    let image = ch * px;
    let pixel_bytes = (ch * n * 4) as i64;
    e.loop_range(lo, hi, &mut |e, ci| {
        let so = e.b.ins().imul_imm_s(ci, (px * 4) as i64);
        let doff = e.b.ins().imul_imm_s(ci, (n * 4) as i64);
        let src = e.b.ins().iadd(c.ins[0], so);
        let dst = e.b.ins().iadd(c.scratch, doff);
        e.loop_offsets(
            (n / 4) as i64,
            &[src, dst],
            &[(4 * image * 4) as i64, 16],
            &mut |e, _i, r| {
                e.loop_offsets(
                    px as i64,
                    &[r[0], r[1]],
                    &[4, pixel_bytes],
                    &mut |e, _p, o| {
                        let v = e.gather4(o[0], 0, image);
                        e.b.ins().store(tensor_flags(), v, o[1], 0);
                    },
                );
            },
        );
        for i in n / 4 * 4..n {
            let from = e.b.ins().iadd_imm_s(src, (i * image * 4) as i64);
            let to = e.b.ins().iadd_imm_s(dst, (i * 4) as i64);
            e.loop_offsets(
                px as i64,
                &[from, to],
                &[4, pixel_bytes],
                &mut |e, _p, o| {
                    let x = e.b.ins().load(types::F32, tensor_flags(), o[0], 0);
                    e.b.ins().store(tensor_flags(), x, o[1], 0);
                },
            );
        }
    });
}

/// Parallel parts of the copy (by channels) and of the reorder after the tasks (by rows):
/// one per task, or 0 (both serial) when that is fewer than two.
pub(super) fn parts(p: &KernelPlan, g: &ConvGeometry) -> usize {
    let parts = p.tasks.min(g.c).min(p.m);
    if parts < 2 {
        0
    } else {
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geometry(n: usize, c: usize, h: usize, w: usize, k: usize, pad: usize) -> ConvGeometry {
        ConvGeometry {
            n,
            c,
            h,
            w,
            m: 8,
            groups: 1,
            cg: c,
            mg: 8,
            kh: k,
            kw: k,
            sh: 1,
            sw: 1,
            dh: 1,
            dw: 1,
            ph: pad,
            pw: pad,
            hp: h + 2 * pad,
            wp: w + 2 * pad,
            oh: h + 2 * pad + 1 - k,
            ow: w + 2 * pad + 1 - k,
        }
    }

    #[test]
    fn four_by_four_map_has_nine_classes() {
        let t = plan(&geometry(360, 64, 4, 4, 3, 1), true).unwrap();
        assert_eq!(t.classes.len(), 9);
        // Corners read 4 taps, edges 6, the middle 9: 100 of 144 per image.
        let per_image: usize = t
            .columns
            .iter()
            .filter_map(|c| c.filter(|&(img, _)| img == 0))
            .map(|(_, x)| class_taps(&t, x))
            .sum();
        assert_eq!(per_image, 100);
        assert_eq!(t.real_columns(), 360 * 16);
        assert_eq!(t.columns.len() % t.chunk, 0);
        // The top-left corner reads taps (1..3) x (1..3).
        assert_eq!(t.classes[0], vec![4, 5, 7, 8]);
    }

    fn class_taps(t: &TapClasses, x: usize) -> usize {
        let q = t.columns.iter().position(|c| *c == Some((0, x))).unwrap();
        t.classes[t.unit_class[q / t.chunk]].len()
    }

    #[test]
    fn not_taken_without_enough_padding_or_channels() {
        // 14x14: 3x3 windows read 1600 of 1764 taps, 9% padding.
        assert!(plan(&geometry(8, 64, 14, 14, 3, 1), true).is_none());
        assert!(plan(&geometry(360, 8, 4, 4, 3, 1), true).is_none());
        assert!(plan(&geometry(360, 64, 4, 4, 3, 1), false).is_none());
        assert!(plan(&geometry(360, 64, 4, 4, 3, 0), true).is_none());
    }
}
