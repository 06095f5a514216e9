#![allow(clippy::needless_range_loop)]
//! Winograd F(r x r, 3x3), r = 2 or 4, for 3x3, stride-1, undilated, ungrouped convs with
//! constant weights.
//!
//! The output is cut into r x r tiles; tile `(ti, tj)` reads the n x n input window
//! (n = r + 2) at `(r ti, r tj)` of the zero-padded input. With `B`, `G`, `A` the F(r, 3)
//! matrices (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//!
//! ```text
//! U[xi][m][c] = (G g[m][c] G^T)[xi]          n x n per (m, c), once (winograd_weights.rs)
//! V[xi][c][t] = (B^T d[c][t] B)[xi]          n x n per (c, tile), at run time
//! M[xi][m][t] = sum_c U[xi][m][c] V[xi][c][t]  n^2 GEMMs (the AVX2 microkernels, K = C)
//! Y[m][t]     = A^T M[.][m][t] A (+ bias, residual, Relu/Clip)   r x r per (m, tile)
//! ```
//!
//! A tile costs n^2 multiply-adds per (m, c) instead of 9 r^2: F(2, 3) does 2.25x fewer,
//! F(4, 3) 4x fewer, plus the transforms. The arithmetic is exact in real numbers; in f32 the
//! rounding differs from the direct sum. F(2, 3)'s transforms only add, subtract and halve;
//! F(4, 3)'s scale by up to 8 and 1/24 and lose about 3 more bits (measured on random
//! ResNet-like data: max error / max output about 2e-6 at C = 128, against 4e-7 for F(2, 3)
//! and 1.3e-7 for the direct sum). The plan picks, per conv, the variant with fewer GEMM
//! flops after tile padding (F(4, 3) on large maps, F(2, 3) on 7x7).
//!
//! Layout. Tile columns are padded to `tw4` (a multiple of 4) so that 4 consecutive tiles of
//! a unit always share a tile row: the transforms work on `f32x4` vectors whose lanes are 4
//! tiles (gathered by even/odd shuffles for r = 2, by 4x4 transposes for r = 4). A work unit
//! is `(image, block of NB tiles, row part)`; per task the scratch holds `V` (`n^2 x C x NB`,
//! as `NB / 16` packed B panels per `xi`: exactly the microkernel's panel layout), `M`
//! (`n^2 x mrows x NB`) and the zero-padded input rows the unit reads. Consecutive units of a
//! task that share a tile block (different row parts) reuse `V`. A conv of one tile block
//! split into row parts across tasks computes its window and `V` once, before the tasks, in
//! parallel parts of its input channels ([`shares_transform`]).

use super::asm::{Epilogue, MicrokernelKey, MR, NR};
use super::kernel_plan::{balanced_rows, KernelPlan, Strategy};
use super::tasks::{acquire_slot, release_slot, task_units, unit_at, KernelArgs, UnitAt};
use crate::builder::{fill, if_else, shuffle_lanes, tensor_flags, transpose4, Emitter, F32X4};
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{condcodes::IntCC, types, FuncRef, InstBuilder, Value};

/// Tile geometry of a Winograd conv.
pub(super) struct WinogradGeometry {
    /// Output tile size (2 or 4).
    pub r: usize,
    /// Input tile size `r + 2`.
    pub n: usize,
    /// `n^2`: the number of GEMMs.
    pub nxi: usize,
    /// Tile rows.
    pub th: usize,
    /// Tile columns, rounded up to a multiple of 4.
    pub tw4: usize,
    /// Padded input extents (`r th + 2` x `r tw4 + 4`; the last 2 columns are slack for the
    /// vector loads of the last tile group).
    pub hb: usize,
    pub wb: usize,
}

impl WinogradGeometry {
    /// Rows of the zero-padded input window a unit of `nb` tiles (starting at a multiple of
    /// `nb`) reads: its tiles span at most `(nb - 1) / tw4 + 2` tile rows.
    pub fn win_rows(&self, nb: usize) -> usize {
        (self.r * ((nb - 1) / self.tw4 + 2) + 2).min(self.hb)
    }
}

pub(super) fn winograd_geometry(g: &ConvGeometry, r: usize) -> WinogradGeometry {
    let th = g.oh.div_ceil(r);
    let tw4 = g.ow.div_ceil(r).div_ceil(4) * 4;
    WinogradGeometry {
        r,
        n: r + 2,
        nxi: (r + 2) * (r + 2),
        th,
        tw4,
        hb: r * th + 2,
        wb: r * tw4 + 4,
    }
}

/// Tiles per work unit: [`nb`], or fewer on small maps (the GEMMs compute whole units: a
/// unit of one image's tiles rounded up to a panel).
pub(super) fn unit_tiles(g: &ConvGeometry, r: usize) -> usize {
    let wg = winograd_geometry(g, r);
    nb(g.c, g.m, r).min((wg.th * wg.tw4).div_ceil(NR) * NR)
}

/// Multiplies per output channel and input channel of one image in the GEMMs of F(r x r, 3x3),
/// with the tiles padded to whole units.
fn gemm_multiplies(g: &ConvGeometry, r: usize) -> usize {
    let wg = winograd_geometry(g, r);
    let u = unit_tiles(g, r);
    wg.nxi * (wg.th * wg.tw4).div_ceil(u) * u
}

/// The output tile size (at most `max`) with the fewest GEMM multiplies.
pub(super) fn choose_r(g: &ConvGeometry, max: usize) -> usize {
    if max >= 4 && gemm_multiplies(g, 4) < gemm_multiplies(g, 2) {
        4
    } else {
        2
    }
}

/// Whether F(r x r, 3x3) multiplies no more than direct convolution: on small maps (e.g. 4x4)
/// the padded tiles cost more than they save (measured: a 64->128 conv on 360 4x4 maps ran
/// 4x slower in Winograd than direct).
pub(super) fn saves_multiplies(g: &ConvGeometry, r: usize) -> bool {
    gemm_multiplies(g, r) <= g.kh * g.kw * g.oh * g.ow
}

/// How much faster than the plain implicit GEMM Winograd runs this conv, as the sparse
/// decision counts it: half its saving in multiplies (the cost model's
/// `winograd_efficiency`; `benches/sparse.rs`: 0.37 ms Winograd against about 0.75 ms direct
/// on a 64->64 28x28 conv), at least 1.
pub(super) fn dense_gain(g: &ConvGeometry, r: usize) -> f64 {
    let direct = (g.kh * g.kw * g.oh * g.ow) as f64;
    (0.5 * direct / gemm_multiplies(g, r).max(1) as f64).max(1.0)
}

/// Whether the conv takes the Winograd path.
pub(super) fn applies(g: &ConvGeometry, const_w: bool, epilogue: &[Epilogue]) -> bool {
    const_w
        && g.groups == 1
        && (g.kh, g.kw, g.sh, g.sw, g.dh, g.dw) == (3, 3, 1, 1, 1, 1)
        && g.c >= 16
        && g.m >= 16
        && g.oh >= 4
        && g.ow >= 4
        && epilogue.iter().all(|x| {
            matches!(
                x,
                Epilogue::BiasRow | Epilogue::Relu | Epilogue::Clip(..) | Epilogue::Residual
            )
        })
}

/// Tiles per work unit: `V` (`n^2 x C x NB` floats) around 128-512 KiB: 32 tiles while
/// that is at most 128 KiB, else 16; and 32 up to 144 KiB (32 input channels at F(4x4))
/// when the conv's `m` rows still take one row part at 32 tiles ([`mrows`]): with 16 tiles
/// the 36 GEMMs of K = 32 are too short for their calls and stores (U-Net's 32 -> 16 conv on
/// 128x128: 1.32 -> 1.13 ms with 32, Xeon, 1 thread), but a second row part transforms the
/// input again (its 32 -> 32 conv on 64x64 ran 35% slower with 32).
pub(super) fn nb(c: usize, m: usize, r: usize) -> usize {
    let n2 = (r + 2) * (r + 2);
    if c * n2 <= 1024 || (c * n2 <= 1152 && m <= mrows_cap(32, r)) {
        32
    } else {
        16
    }
}

/// The most rows of a row part with `nb` tiles: `M` (`n^2 x mrows x NB` floats) 128 KiB.
fn mrows_cap(nb: usize, r: usize) -> usize {
    rows_fitting(nb, r, 32768)
}

/// The most rows (a multiple of `MR`) whose `M` (`n^2 x rows x NB`) fits in `floats`.
fn rows_fitting(nb: usize, r: usize, floats: usize) -> usize {
    (floats / ((r + 2) * (r + 2) * nb)).max(MR) / MR * MR
}

/// Rows per row part (a multiple of `MR`): `M` (`n^2 x mrows x NB` floats) stays within a
/// quarter of the `l2` bytes of L2 (at least 128 KiB). Each row part of a tile block
/// transforms its input again: on a Xeon's 2 MiB L2, ResNet-18's 64- and 128-channel convs
/// (two row parts under the 128 KiB cap of a 512 KiB L2) ran 20% faster in one.
pub(super) fn mrows(m: usize, nb: usize, r: usize, l2: usize) -> usize {
    let cap = rows_fitting(nb, r, (l2 / 16).max(32768));
    if m <= cap {
        return m.div_ceil(MR) * MR;
    }
    // Up to a third over the cap when that splits the rows more evenly between threads.
    balanced_rows(m, m.div_ceil(cap), MR, cap + cap / 3)
}

/// Bytes between the `V` matrices of consecutive `xi`. The extra cache line keeps the 16
/// matrices off the same L1 set (a power-of-two stride made the 16 streams of the transforms
/// thrash one 8-way set).
fn vstride(p: &KernelPlan) -> usize {
    p.k * p.chunk * 4 + 64
}

/// Bytes between the `M` matrices of consecutive `xi` (padded like [`vstride`]).
fn xstride(p: &KernelPlan) -> usize {
    p.mrows * p.chunk * 4 + 64
}

/// Bytes of a task's input window: `C x win_rows x wb`.
fn win_bytes(p: &KernelPlan, wg: &WinogradGeometry, g: &ConvGeometry) -> usize {
    g.c * wg.win_rows(p.chunk) * wg.wb * 4
}

/// Scratch bytes per task: `V`, `M`, the input window; only `M` when the row parts share
/// the transform ([`shares_transform`]).
pub(super) fn task_bytes(p: &KernelPlan, g: &ConvGeometry, r: usize) -> usize {
    let wg = winograd_geometry(g, r);
    if shares_transform(p) {
        return wg.nxi * xstride(p);
    }
    wg.nxi * (vstride(p) + xstride(p)) + win_bytes(p, &wg, g)
}

/// Whether the row parts share one input transform: a conv of one tile block (one image, a
/// small map) whose rows are split into several tasks. Unshared, every task transformed the
/// whole input again for its rows (ResNet-18's 256- and 512-channel convs on 14x14 and 7x7:
/// 5 and 4 row parts). Shared, the window and `V` are computed once before the tasks, in
/// parallel parts of the input channels ([`shared_parts`]), at the start of the node's
/// scratch ([`shared_bytes`]), and each task runs only its rows' GEMMs and output transform.
pub(super) fn shares_transform(p: &KernelPlan) -> bool {
    matches!(p.kind, Strategy::Winograd(..)) && p.nimg * p.units_per_img() == 1 && p.tasks > 1
}

/// Bytes of the shared transform's `V` and input window (0 when not shared).
pub(super) fn shared_bytes(p: &KernelPlan, g: &ConvGeometry, r: usize) -> usize {
    if !shares_transform(p) {
        return 0;
    }
    let wg = winograd_geometry(g, r);
    wg.nxi * vstride(p) + win_bytes(p, &wg, g)
}

/// Parts of the shared transform: equal ranges of at least 8 input channels, 4 when the
/// channels divide so (two threads take two each), else 2, else 1 (before the tasks, by
/// `serial::emit_pre`).
pub(super) fn shared_parts(g: &ConvGeometry) -> usize {
    [4, 2]
        .into_iter()
        .find(|&k| g.c.is_multiple_of(k) && g.c / k >= 8)
        .unwrap_or(1)
}

/// Part `t` of the shared transform ([`shares_transform`]): the window rows and `V` of its
/// range of input channels, for every tile of the one block.
pub(super) fn emit_shared_part(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    r: usize,
    c: &KernelArgs,
    t: Value,
) {
    let wg = winograd_geometry(g, r);
    let vbuf = c.scratch;
    let win = e.b.ins().iadd_imm_s(vbuf, (wg.nxi * vstride(p)) as i64);
    let count = g.c / shared_parts(g);
    let c0 = e.b.ins().imul_imm_s(t, count as i64);
    let channels = Channels { c0, count };
    let z = e.int_const(0);
    let ngroups = e.int_const(p.last_unit_cols() as i64 / 4);
    input_window(e, p, g, &wg, c, win, z, z, ngroups, channels);
    input_transform(e, p, g, &wg, vbuf, win, z, ngroups, channels);
}

/// A range of input channels: `count` from `c0`.
#[derive(Clone, Copy)]
struct Channels {
    c0: Value,
    count: usize,
}

/// The microkernels a Winograd node calls.
pub(super) fn keys(p: &KernelPlan) -> Vec<MicrokernelKey> {
    let last_rows = p.last_part_rows();
    let mut mrs = vec![];
    for rows in [p.mrows, last_rows] {
        if rows >= MR && !mrs.contains(&MR) {
            mrs.push(MR);
        }
        if !rows.is_multiple_of(MR) && !mrs.contains(&(rows % MR)) {
            mrs.push(rows % MR);
        }
    }
    mrs.into_iter().map(|mr| microkernel_key(p, mr)).collect()
}

/// The `mr`-row microkernel of the GEMMs: packed A (U), full panels, plain store.
fn microkernel_key(p: &KernelPlan, mr: usize) -> MicrokernelKey {
    MicrokernelKey {
        mr,
        isa: p.isa,
        packed_a: true,
        wide: false,
        half: false,
        partial: false,
        accumulate: false,
        transposed: false,
        epilogue: vec![],
    }
}

/// The units of task `t`.
pub(super) fn emit_task(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    r: usize,
    c: &KernelArgs,
    t: Value,
) {
    let wg = winograd_geometry(g, r);
    let (lo, hi) = task_units(e, p, t);
    let slot = acquire_slot(e, p, c);
    let o = e.b.ins().imul_imm_s(slot, task_bytes(p, g, r) as i64);
    let o = e.b.ins().iadd_imm_s(o, p.prefix_bytes() as i64);
    let buf = e.b.ins().iadd(c.scratch, o);
    if shares_transform(p) {
        // `V` was computed before the tasks (`emit_shared_part`): each unit is a row part of
        // the one tile block.
        let z = e.int_const(0);
        let ngroups = e.int_const(p.last_unit_cols() as i64 / 4);
        e.loop_range(lo, hi, &mut |e, u| {
            let UnitAt { mp, row0, .. } = unit_at(e, p, u);
            let stage = |e: &mut Emitter, rows: usize| {
                gemms(e, p, &wg, c, c.scratch, buf, row0, rows);
                output_transform(e, p, g, &wg, c, buf, z, z, ngroups, row0, rows);
            };
            row_parts(e, p, mp, &stage);
        });
        release_slot(e, p, c, slot);
        return;
    }
    let vbuf = buf;
    let mbuf = e.b.ins().iadd_imm_s(vbuf, (wg.nxi * vstride(p)) as i64);
    let win = e.b.ins().iadd_imm_s(mbuf, (wg.nxi * xstride(p)) as i64);
    let upi = p.units_per_img();
    let last_tiles = p.last_unit_cols();
    // The tile block whose V is in the buffer (-1: none yet).
    let have = e.b.declare_var(types::I64);
    let m1 = e.int_const(-1);
    e.b.def_var(have, m1);
    e.loop_range(lo, hi, &mut |e, u| {
        // (The column units are tile blocks: `t0` is the first tile.)
        let UnitAt {
            mp,
            cu: u2,
            img,
            ci,
            col0: t0,
            row0,
        } = unit_at(e, p, u);
        let is_last_t = e.b.ins().icmp_imm_s(IntCC::Equal, ci, upi as i64 - 1);
        let full = e.int_const(p.chunk as i64 / 4);
        let last = e.int_const(last_tiles as i64 / 4);
        let ngroups = e.b.ins().select(is_last_t, last, full);
        let cur = e.b.use_var(have);
        let fresh = e.b.ins().icmp(IntCC::NotEqual, cur, u2);
        if_else(
            e,
            fresh,
            &mut |e| {
                let channels = Channels {
                    c0: e.int_const(0),
                    count: g.c,
                };
                input_window(e, p, g, &wg, c, win, img, t0, ngroups, channels);
                input_transform(e, p, g, &wg, vbuf, win, t0, ngroups, channels);
            },
            &mut |_| {},
        );
        e.b.def_var(have, u2);
        let stage = |e: &mut Emitter, rows: usize| {
            gemms(e, p, &wg, c, vbuf, mbuf, row0, rows);
            output_transform(e, p, g, &wg, c, mbuf, img, t0, ngroups, row0, rows);
        };
        row_parts(e, p, mp, &stage);
    });
    release_slot(e, p, c, slot);
}

/// `stage(rows)` for row part `mp`: the last part's rows, or `mrows`.
fn row_parts(e: &mut Emitter, p: &KernelPlan, mp: Value, stage: &dyn Fn(&mut Emitter, usize)) {
    let (mparts, last_rows) = (p.mparts(), p.last_part_rows());
    if mparts == 1 || last_rows == p.mrows {
        stage(e, last_rows);
    } else {
        let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, mp, mparts as i64 - 1);
        if_else(e, is_last, &mut |e| stage(e, last_rows), &mut |e| {
            stage(e, p.mrows)
        });
    }
}

/// Copy the input rows of `channels` the unit from tile `t0` reads into the task's window
/// `win` (`C x win_rows x wb`, zero-padded): window row `i` is padded-input row `r ti0 + i`.
/// Done inside the tasks, so no serial padded copy of the whole input precedes them.
#[allow(clippy::too_many_arguments)]
fn input_window(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    wg: &WinogradGeometry,
    c: &KernelArgs,
    win: Value,
    img: Value,
    t0: Value,
    ngroups: Value,
    channels: Channels,
) {
    let rows = wg.win_rows(p.chunk) as i64;
    // Rows this unit reads: its tiles span tile rows ti0 ..= ti1.
    let tl = e.b.ins().imul_imm_s(ngroups, 4);
    let tl = e.b.ins().iadd(t0, tl);
    let tl = e.b.ins().iadd_imm_s(tl, -1);
    let ti1 = e.b.ins().udiv_imm_u(tl, wg.tw4 as i64);
    let wrow = (wg.wb * 4) as i64;
    let xrow = (g.w * 4) as i64;
    let xplane = (g.h * g.w * 4) as i64;
    let ti0 = e.b.ins().udiv_imm_u(t0, wg.tw4 as i64);
    // Input row of window row 0 (may be negative: the top padding).
    let y0 = e.b.ins().imul_imm_s(ti0, wg.r as i64);
    let y0 = e.b.ins().iadd_imm_s(y0, -(g.ph as i64));
    let io = e.b.ins().imul_imm_s(img, g.c as i64 * xplane);
    let yo = e.b.ins().imul_imm_s(y0, xrow);
    let src0 = e.b.ins().iadd(io, yo);
    let co = e.b.ins().imul_imm_s(channels.c0, xplane);
    let src0 = e.b.ins().iadd(src0, co);
    let src0 = e.b.ins().iadd(c.ins[0], src0);
    let wo = e.b.ins().imul_imm_s(channels.c0, rows * wrow);
    let win = e.b.ins().iadd(win, wo);
    let zero = |e: &mut Emitter, d: Value, from: usize, to: usize| fill(e, d, from, to, 0.0);
    let (pw, w, wb) = (g.pw, g.w, wg.wb);
    let span = e.b.ins().isub(ti1, ti0);
    let nrows = e.b.ins().imul_imm_s(span, wg.r as i64);
    let nrows = e.b.ins().iadd_imm_s(nrows, wg.n as i64);
    let cap = e.int_const(rows);
    let nrows = e.b.ins().smin(nrows, cap);
    e.loop_offsets(
        channels.count as i64,
        &[src0, win],
        &[xplane, rows * wrow],
        &mut |e, _c, o| {
            let z = e.int_const(0);
            e.loop_range(z, nrows, &mut |e, r| {
                let so = e.b.ins().imul_imm_s(r, xrow);
                let s = e.b.ins().iadd(o[0], so);
                let dof = e.b.ins().imul_imm_s(r, wrow);
                let d = e.b.ins().iadd(o[1], dof);
                let y = e.b.ins().iadd(y0, r);
                let lo = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, y, 0);
                let hi = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, y, g.h as i64);
                let ok = e.b.ins().band(lo, hi);
                if_else(
                    e,
                    ok,
                    &mut |e| {
                        zero(e, d, 0, pw);
                        let nv = w / 4;
                        for k in 0..nv {
                            let v = e.b.ins().load(F32X4, tensor_flags(), s, (k * 16) as i32);
                            e.b.ins()
                                .store(tensor_flags(), v, d, ((pw + 4 * k) * 4) as i32);
                        }
                        for k in 4 * nv..w {
                            let v =
                                e.b.ins()
                                    .load(types::F32, tensor_flags(), s, (k * 4) as i32);
                            e.b.ins().store(tensor_flags(), v, d, ((pw + k) * 4) as i32);
                        }
                        zero(e, d, pw + w, wb);
                    },
                    &mut |e| zero(e, d, 0, wb),
                );
            });
        },
    );
}

/// `B^T d` of F(2, 3) along one line of 4 values.
fn bt4(e: &mut Emitter, d: &[Value]) -> Vec<Value> {
    vec![
        e.b.ins().fsub(d[0], d[2]),
        e.b.ins().fadd(d[1], d[2]),
        e.b.ins().fsub(d[2], d[1]),
        e.b.ins().fsub(d[1], d[3]),
    ]
}

/// `B^T d` of F(4, 3) along one line of 6 values:
/// `B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
/// 0 4 0 -5 0 1]`.
fn bt6(e: &mut Emitter, d: &[Value]) -> Vec<Value> {
    let (k4, km4, km5, k2) = (
        e.float_const(F32X4, 4.0),
        e.float_const(F32X4, -4.0),
        e.float_const(F32X4, -5.0),
        e.float_const(F32X4, 2.0),
    );
    let a = e.mul_add(km4, d[2], d[4]);
    let b = e.mul_add(km4, d[1], d[3]);
    let c = e.b.ins().fsub(d[4], d[2]);
    let t = e.b.ins().fsub(d[3], d[1]);
    let dd = e.b.ins().fmul(t, k2);
    let r0 = e.mul_add(km5, d[2], d[4]);
    let r0 = e.mul_add(k4, d[0], r0);
    let r5 = e.mul_add(km5, d[3], d[5]);
    let r5 = e.mul_add(k4, d[1], r5);
    vec![
        r0,
        e.b.ins().fadd(a, b),
        e.b.ins().fsub(a, b),
        e.b.ins().fadd(c, dd),
        e.b.ins().fsub(c, dd),
        r5,
    ]
}

/// `A^T m` of F(2, 3) along one line: `A^T = [1 1 1 0; 0 1 -1 -1]`.
fn at4(e: &mut Emitter, m: &[Value]) -> Vec<Value> {
    let y0 = e.b.ins().fadd(m[0], m[1]);
    let y0 = e.b.ins().fadd(y0, m[2]);
    let y1 = e.b.ins().fsub(m[1], m[2]);
    let y1 = e.b.ins().fsub(y1, m[3]);
    vec![y0, y1]
}

/// `A^T m` of F(4, 3) along one line:
/// `A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]`.
fn at6(e: &mut Emitter, m: &[Value]) -> Vec<Value> {
    let (k2, k4, k8) = (
        e.float_const(F32X4, 2.0),
        e.float_const(F32X4, 4.0),
        e.float_const(F32X4, 8.0),
    );
    let s = e.b.ins().fadd(m[1], m[2]);
    let d = e.b.ins().fsub(m[1], m[2]);
    let s2 = e.b.ins().fadd(m[3], m[4]);
    let d2 = e.b.ins().fsub(m[3], m[4]);
    let y0 = e.b.ins().fadd(m[0], s);
    let y0 = e.b.ins().fadd(y0, s2);
    let y1 = e.mul_add(k2, d2, d);
    let y2 = e.mul_add(k4, s2, s);
    let y3 = e.mul_add(k8, d2, d);
    let y3 = e.b.ins().fadd(y3, m[5]);
    vec![y0, y1, y2, y3]
}

/// The `n` input values of one window row for 4 consecutive tiles (lanes = tiles); `s`
/// points at the row's first column of the group.
fn load_line(e: &mut Emitter, wg: &WinogradGeometry, s: Value, off: i32) -> Vec<Value> {
    let ld = |e: &mut Emitter, o: i32| e.b.ins().load(F32X4, tensor_flags(), s, off + o);
    if wg.r == 2 {
        // Tile t's column k is at 2 t + k: even/odd deinterleave of columns 0..8 and 2..10.
        let (l0, l1, h0, h1) = (ld(e, 0), ld(e, 16), ld(e, 8), ld(e, 24));
        vec![
            shuffle_lanes(e, l0, l1, [0, 2, 4, 6]),
            shuffle_lanes(e, l0, l1, [1, 3, 5, 7]),
            shuffle_lanes(e, h0, h1, [0, 2, 4, 6]),
            shuffle_lanes(e, h0, h1, [1, 3, 5, 7]),
        ]
    } else {
        // Tile t's column k is at 4 t + k: transposes of columns 0..16 and 4..20.
        let l: Vec<Value> = (0..5).map(|k| ld(e, 16 * k)).collect();
        let a = transpose4(e, [l[0], l[1], l[2], l[3]]);
        let t0 = shuffle_lanes(e, l[1], l[2], [0, 4, 1, 5]);
        let t1 = shuffle_lanes(e, l[3], l[4], [0, 4, 1, 5]);
        let c4 = shuffle_lanes(e, t0, t1, [0, 1, 4, 5]);
        let c5 = shuffle_lanes(e, t0, t1, [2, 3, 6, 7]);
        vec![a[0], a[1], a[2], a[3], c4, c5]
    }
}

/// Tile row and column of the first tile of group `q` (4 tiles) of the unit from tile `t0`.
fn group_tile(e: &mut Emitter, wg: &WinogradGeometry, t0: Value, q: Value) -> (Value, Value) {
    let t = e.b.ins().imul_imm_s(q, 4);
    let t = e.b.ins().iadd(t0, t);
    let ti = e.b.ins().udiv_imm_u(t, wg.tw4 as i64);
    let tj = e.b.ins().urem_imm_u(t, wg.tw4 as i64);
    (ti, tj)
}

/// `V` of `channels` for the `ngroups` groups of 4 tiles from tile `t0` (read from the
/// window `win`); groups past `ngroups` (up to the unit's `NB / 4`) are zeroed.
#[allow(clippy::too_many_arguments)]
fn input_transform(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    wg: &WinogradGeometry,
    vbuf: Value,
    win: Value,
    t0: Value,
    ngroups: Value,
    channels: Channels,
) {
    let cn = g.c as i64;
    let count = channels.count as i64;
    let (r, n) = (wg.r as i64, wg.n);
    let rowb = (wg.wb * 4) as i64;
    let plane = wg.win_rows(p.chunk) as i64 * rowb;
    let vstride = vstride(p) as i64;
    let ti0 = e.b.ins().udiv_imm_u(t0, wg.tw4 as i64);
    let wo = e.b.ins().imul_imm_s(ti0, -r * rowb);
    let co = e.b.ins().imul_imm_s(channels.c0, plane);
    let wo = e.b.ins().iadd(wo, co);
    let xb = e.b.ins().iadd(win, wo);
    let z = e.int_const(0);
    // Destination of tile group q: panel q / 4, lanes 4 (q % 4), from channel c0.
    let vo = e.b.ins().imul_imm_s(channels.c0, 64);
    let vbuf = e.b.ins().iadd(vbuf, vo);
    let group_dst = |e: &mut Emitter, q: Value| {
        let pan = e.b.ins().ushr_imm_u(q, 2);
        let po = e.b.ins().imul_imm_s(pan, cn * 64);
        let lq = e.b.ins().band_imm_u(q, 3);
        let lo = e.b.ins().imul_imm_s(lq, 16);
        let doff = e.b.ins().iadd(po, lo);
        e.b.ins().iadd(vbuf, doff)
    };
    e.loop_range(z, ngroups, &mut |e, q| {
        let (ti, tj) = group_tile(e, wg, t0, q);
        // Input window: row r ti, column r tj.
        let r0 = e.b.ins().imul_imm_s(ti, r * rowb);
        let c0 = e.b.ins().imul_imm_s(tj, r * 4);
        let so = e.b.ins().iadd(r0, c0);
        let src = e.b.ins().iadd(xb, so);
        let dst = group_dst(e, q);
        e.loop_offsets(count, &[src, dst], &[plane, 64], &mut |e, _c, o| {
            let (s, d) = (o[0], o[1]);
            // w[row][j] = (d B)[row][j], then V[i][j] = (B^T w)[i][j].
            let w: Vec<Vec<Value>> = (0..n)
                .map(|row| {
                    let line = load_line(e, wg, s, row as i32 * rowb as i32);
                    if n == 4 {
                        bt4(e, &line)
                    } else {
                        bt6(e, &line)
                    }
                })
                .collect();
            for j in 0..n {
                let col: Vec<Value> = (0..n).map(|row| w[row][j]).collect();
                let v = if n == 4 { bt4(e, &col) } else { bt6(e, &col) };
                for (i, &x) in v.iter().enumerate() {
                    let xi = (i * n + j) as i64;
                    e.b.ins().store(tensor_flags(), x, d, (xi * vstride) as i32);
                }
            }
        });
    });
    // Zero the groups past the last tile (their columns are computed, never stored).
    let end = e.int_const((p.chunk / 4) as i64);
    let zv = e.float_const(F32X4, 0.0);
    let nxi = wg.nxi as i64;
    e.loop_range(ngroups, end, &mut |e, q| {
        let dst = group_dst(e, q);
        e.loop_offsets(count, &[dst], &[64], &mut |e, _c, o| {
            for xi in 0..nxi {
                e.b.ins()
                    .store(tensor_flags(), zv, o[0], (xi * vstride) as i32);
            }
        });
    });
}

/// The `n^2` GEMMs `M[xi][rows] = U[xi][row0 ..][C] @ V[xi]` for `rows` rows from `row0`.
#[allow(clippy::too_many_arguments)]
fn gemms(
    e: &mut Emitter,
    p: &KernelPlan,
    wg: &WinogradGeometry,
    c: &KernelArgs,
    vbuf: Value,
    mbuf: Value,
    row0: Value,
    rows: usize,
) {
    let (m, cn, nb) = (p.m as i64, p.k as i64, p.chunk as i64);
    let npan = p.chunk / NR;
    let ao = e.b.ins().imul_imm_s(row0, cn * 4);
    let a0 = e.b.ins().iadd(c.extra[0], ao);
    let kc = e.int_const(cn);
    let lda = e.int_const(cn * 4);
    let ldc = e.int_const(nb * 4);
    let nr = e.int_const(NR as i64);
    let f6 = (rows >= MR).then(|| c.microkernel(microkernel_key(p, MR)));
    let frem = (!rows.is_multiple_of(MR)).then(|| c.microkernel(microkernel_key(p, rows % MR)));
    let nfull = (rows / MR) as i64;
    e.loop_offsets(
        wg.nxi as i64,
        &[a0, vbuf, mbuf],
        &[m * cn * 4, vstride(p) as i64, xstride(p) as i64],
        &mut |e, _xi, o| {
            let (ax, vx, mx) = (o[0], o[1], o[2]);
            let tile = |e: &mut Emitter, f: FuncRef, a: Value, cp: Value| {
                e.loop_offsets(npan as i64, &[vx, cp], &[cn * 64, 64], &mut |e, _j, q| {
                    e.b.ins()
                        .call(f, &[a, q[0], q[1], kc, lda, ldc, nr, q[1], q[1]]);
                });
            };
            if let Some(f) = f6 {
                e.loop_offsets(
                    nfull,
                    &[ax, mx],
                    &[MR as i64 * cn * 4, MR as i64 * nb * 4],
                    &mut |e, _r, q| tile(e, f, q[0], q[1]),
                );
            }
            if let Some(f) = frem {
                let a = e.b.ins().iadd_imm_s(ax, nfull * MR as i64 * cn * 4);
                let cp = e.b.ins().iadd_imm_s(mx, nfull * MR as i64 * nb * 4);
                tile(e, f, a, cp);
            }
        },
    );
}

/// `Y = A^T M A` plus the epilogue for `rows` output channels from `row0`, stored as r x r
/// output tiles (clipped at the bottom and right edges).
#[allow(clippy::too_many_arguments)]
fn output_transform(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    wg: &WinogradGeometry,
    c: &KernelArgs,
    mbuf: Value,
    img: Value,
    t0: Value,
    ngroups: Value,
    row0: Value,
    rows: usize,
) {
    let (ow, oh) = (g.ow as i64, g.oh as i64);
    let (r, n) = (wg.r, wg.n);
    let oplane = oh * ow * 4;
    let nb = p.chunk as i64;
    let xstride = xstride(p) as i64;
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    // Valid columns of the last group of a tile row (4 r when every group is full), valid
    // rows of the last tile row.
    let vc_last = (g.ow - r * (wg.tw4 - 4)).min(4 * r);
    let vr_last = g.oh - r * (wg.th - 1);
    let io = e.b.ins().imul_imm_s(img, p.m as i64 * oplane);
    let ro = e.b.ins().imul_imm_s(row0, oplane);
    let obase = e.b.ins().iadd(io, ro);
    let bo = e.b.ins().imul_imm_s(row0, 4);
    let z = e.int_const(0);
    e.loop_range(z, ngroups, &mut |e, q| {
        let (ti, tj) = group_tile(e, wg, t0, q);
        let yr = e.b.ins().imul_imm_s(ti, r as i64 * ow * 4);
        let yc = e.b.ins().imul_imm_s(tj, r as i64 * 4);
        let yo = e.b.ins().iadd(yr, yc);
        let yo = e.b.ins().iadd(obase, yo);
        let mo = e.b.ins().imul_imm_s(q, 16);
        let body = |e: &mut Emitter, ncols: usize, nrows: usize| {
            e.loop_offsets(
                rows as i64,
                &[mo, yo, bo],
                &[nb * 4, oplane, 4],
                &mut |e, _r, o| {
                    let mp = e.b.ins().iadd(mbuf, o[0]);
                    // s[a][j] = (A^T M)[a][j], one column j at a time.
                    let mut s = vec![vec![]; r];
                    for j in 0..n {
                        let col: Vec<Value> = (0..n)
                            .map(|i| {
                                let off = ((i * n + j) as i64 * xstride) as i32;
                                e.b.ins().load(F32X4, tensor_flags(), mp, off)
                            })
                            .collect();
                        let y = if n == 4 { at4(e, &col) } else { at6(e, &col) };
                        for (a, v) in y.into_iter().enumerate() {
                            s[a].push(v);
                        }
                    }
                    let bv = bias.map(|bp| {
                        let x = e.load(types::F32, bp, o[2]);
                        e.b.ins().splat(F32X4, x)
                    });
                    for (a, sa) in s.iter().enumerate().take(nrows) {
                        // y[b] (lanes = 4 tiles) -> output columns r tj .. r tj + 4 r.
                        let y = if n == 4 { at4(e, sa) } else { at6(e, sa) };
                        let line: Vec<Value> = if r == 2 {
                            vec![
                                shuffle_lanes(e, y[0], y[1], [0, 4, 1, 5]),
                                shuffle_lanes(e, y[0], y[1], [2, 6, 3, 7]),
                            ]
                        } else {
                            transpose4(e, [y[0], y[1], y[2], y[3]]).to_vec()
                        };
                        let off = e.b.ins().iadd_imm_s(o[1], a as i64 * ow * 4);
                        store_row(e, p, c.out, res, off, &line, bv, ncols);
                    }
                },
            );
        };
        let rows_case = |e: &mut Emitter, ncols: usize| {
            if vr_last < r {
                let last_row = e.b.ins().icmp_imm_s(IntCC::Equal, ti, wg.th as i64 - 1);
                if_else(e, last_row, &mut |e| body(e, ncols, vr_last), &mut |e| {
                    body(e, ncols, r)
                });
            } else {
                body(e, ncols, r);
            }
        };
        if vc_last == 4 * r {
            rows_case(e, 4 * r);
        } else {
            let last_col = e.b.ins().icmp_imm_s(IntCC::Equal, tj, wg.tw4 as i64 - 4);
            if_else(e, last_col, &mut |e| rows_case(e, vc_last), &mut |e| {
                rows_case(e, 4 * r)
            });
        }
    });
}

/// Epilogue and store of `4 v.len()` output values (`v[h]`: columns `4h .. 4h + 4`) at byte
/// offset `off` of the output (and of the residual); only the first `ncols` are written.
#[allow(clippy::too_many_arguments)]
fn store_row(
    e: &mut Emitter,
    p: &KernelPlan,
    out: Value,
    res: Option<Value>,
    off: Value,
    v: &[Value],
    bias: Option<Value>,
    ncols: usize,
) {
    let full = ncols / 4;
    for (h, &x) in v.iter().enumerate().take(full) {
        let mut x = x;
        for st in &p.epilogue {
            x = match st {
                Epilogue::BiasRow => e.b.ins().fadd(x, bias.expect("bias port")),
                Epilogue::Residual => {
                    let r = res.expect("residual port");
                    let a = e.b.ins().iadd(r, off);
                    let y = e.b.ins().load(F32X4, tensor_flags(), a, (h * 16) as i32);
                    e.b.ins().fadd(x, y)
                }
                Epilogue::Relu => {
                    let z = e.float_const(F32X4, 0.0);
                    e.clamp_lo(F32X4, x, z)
                }
                Epilogue::Clip(lo, hi) => {
                    let l = e.float_const(F32X4, f32::from_bits(*lo));
                    let u = e.float_const(F32X4, f32::from_bits(*hi));
                    let y = e.clamp_lo(F32X4, x, l);
                    e.clamp_hi(F32X4, y, u)
                }
                // Excluded by `applies`.
                Epilogue::BiasCol
                | Epilogue::Scale(_)
                | Epilogue::HardSwish
                | Epilogue::Silu
                | Epilogue::Gelu
                | Epilogue::GeluTanh
                | Epilogue::FakeQuantize { .. } => x,
            };
        }
        let a = e.b.ins().iadd(out, off);
        e.b.ins().store(tensor_flags(), x, a, (h * 16) as i32);
    }
    for col in full * 4..ncols {
        let mut x = e.b.ins().extractlane(v[col / 4], (col % 4) as u8);
        for st in &p.epilogue {
            x = match st {
                Epilogue::BiasRow => {
                    let b = e.b.ins().extractlane(bias.expect("bias port"), 0);
                    e.b.ins().fadd(x, b)
                }
                Epilogue::Residual => {
                    let r = res.expect("residual port");
                    let a = e.b.ins().iadd(r, off);
                    let y =
                        e.b.ins()
                            .load(types::F32, tensor_flags(), a, (col * 4) as i32);
                    e.b.ins().fadd(x, y)
                }
                Epilogue::Relu => {
                    let z = e.float_const(types::F32, 0.0);
                    e.clamp_lo(types::F32, x, z)
                }
                Epilogue::Clip(lo, hi) => {
                    let l = e.float_const(types::F32, f32::from_bits(*lo));
                    let u = e.float_const(types::F32, f32::from_bits(*hi));
                    let y = e.clamp_lo(types::F32, x, l);
                    e.clamp_hi(types::F32, y, u)
                }
                Epilogue::BiasCol
                | Epilogue::Scale(_)
                | Epilogue::HardSwish
                | Epilogue::Silu
                | Epilogue::Gelu
                | Epilogue::GeluTanh
                | Epilogue::FakeQuantize { .. } => x,
            };
        }
        let a = e.b.ins().iadd(out, off);
        e.b.ins().store(tensor_flags(), x, a, (col * 4) as i32);
    }
}
