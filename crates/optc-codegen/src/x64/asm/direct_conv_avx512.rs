//! Direct-conv kernels on AVX-512 (zmm) for grouped convs (RegNet's and ResNeXt's groups of
//! 8 or so channels), assembled with `iced-x86`.
//!
//! Per group the implicit GEMM is short (M = the group's output channels, K = its input
//! channels x taps: 8 x 9 = 72): the patch packing costs about what the FMAs do, and 8 rows
//! fill a 6-row tile and a 2-row one. These kernels read the (padded) input in place instead:
//! per step of two zmm of up to 16 output pixels each (a row's last vector masked, so any row
//! length works; the second vector goes on along the row or starts the next one, so a 14- or
//! 7-pixel row does not leave half of each step empty), for the output channels (up to 11 in
//! one pass: a group of 8 is the packed A's 6-row tile and its 2-row one together; up to 16
//! in two passes of about half; more in tiles of 6), every tap `(c, kh, kw)` loads the
//! step's input vectors and does an FMA per channel and vector with the channel's weight
//! broadcast from the packed A (`[K][mr]` per tile, as the GEMM microkernels read it). The input channels are a loop; the taps of one
//! channel unrolled.
//!
//! On small maps at stride 1 (padded rows under 16 positions: 7x7, 4x4) a step's vectors
//! instead take 16 consecutive positions of the padded rows, across row ends, and store the
//! pixel lanes compressed ([`joined_rows`]): a 7x7 map in 4 vectors, not 7.
//!
//! Stride 2 reads the deinterleaved padded copy (`crate::x64::padded_copy`), as the AVX2
//! kernels of [`super::direct_conv`] do: the inputs of consecutive outputs are contiguous.
//!
//! The stores are masked to the vector's pixels; so are the loads of an input read in
//! place, but the padded copy is read in whole vectors (`DirectConvKey::padded_input`: the
//! lanes past the pixels read at most 15 floats past the copy, into the node's scratch, and
//! are dropped): RegNet's 7x7 and 14x14 grouped convs 8-10% faster than with masked loads.
//!
//! System-V ABI, no return value; rbx, rbp and r12-r15 saved and restored (the red zone
//! holds a count); the same arguments as
//! the AVX2 kernels: `dc(x, o, a, bias, col)`, `x` the input at the window origin of the
//! unit's first pixel, `o` the output at (first channel, first pixel), `a` the packed A tile
//! of the first channel, `bias` its bias (read only with a bias epilogue), `col` the first
//! pixel's column in its output row. The unit's `ncols` pixels may start and end anywhere in
//! a row.

use super::direct_conv::DirectConvKey;
use super::epilogue::{Activation, Epilogue};
use super::registers::zmm;
use iced_x86::code_asm::*;

/// Channels of one pass (22 accumulators of two vectors, zmm0-21; the inputs in zmm22-23,
/// the weights in zmm24-25, an activation's scratch in zmm26-30).
const MAX_ROWS: usize = 11;
/// Channels of a unit run in two passes of about half (up to 8 rows each) rather than in
/// 6-row tiles.
const TWO_PASSES: usize = 16;

/// Rows of one pass within one row tile of the packed A (`[K][tile_rows]`): `rows` rows
/// from the tile's row `first`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    rows: usize,
    tile_rows: usize,
    first: usize,
}

impl Segment {
    /// All `rows` rows of a tile of that many.
    fn whole(rows: usize) -> Segment {
        Segment {
            rows,
            tile_rows: rows,
            first: 0,
        }
    }
}

/// The rows `[r0, r1)` of a unit of `m` rows (the packed A's tiles of 6, the last of
/// `m % 6`) as segments, each with its tile's index.
fn segments_of(r0: usize, r1: usize, m: usize) -> Vec<(usize, Segment)> {
    let mut parts = vec![];
    let mut r = r0;
    while r < r1 {
        let t = r / 6;
        let end = r1.min(6 * t + 6);
        parts.push((
            t,
            Segment {
                rows: end - r,
                tile_rows: 6.min(m - 6 * t),
                first: r - 6 * t,
            },
        ));
        r = end;
    }
    parts
}

/// Whether the kernel exists: stride 1 or 2 along rows, at most 49 taps per channel (a
/// channel's taps are unrolled), no residual, and an epilogue of bias, Relu, Clip, Scale and
/// the AVX-512 activations.
pub(crate) fn supports(c: usize, kh: usize, kw: usize, sw: usize, epilogue: &[Epilogue]) -> bool {
    (sw == 1 || sw == 2)
        && c > 0
        && kh * kw > 1
        && kh * kw <= 49
        && epilogue.iter().all(|e| {
            matches!(
                e,
                Epilogue::BiasRow
                    | Epilogue::Relu
                    | Epilogue::Clip(..)
                    | Epilogue::Scale(_)
                    | Epilogue::HardSwish
                    | Epilogue::Silu
                    | Epilogue::Gelu
                    | Epilogue::GeluTanh
            )
        })
}

/// Assemble the kernel `key` (position independent, no relocations).
pub(crate) fn assemble(key: &DirectConvKey) -> Result<Vec<u8>, IcedError> {
    assert!(
        key.wide
            && supports(key.c, key.kh, key.kw, key.sw, &key.epilogue)
            && key.mrows > 0
            && key.ncols > 0
            && key.ow > 0,
        "unsupported AVX-512 direct-conv kernel"
    );
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let k = key.c * key.kh * key.kw;
    let full = key.mrows / 6;
    let rem = key.mrows % 6;
    for r in [rbx, rbp, r12, r13, r14, r15] {
        a.push(r)?;
    }
    // r9 = pixels left, r8 = column in the output row, rdi = window origin, rsi = output.
    a.mov(r9, key.ncols as i64)?;
    a.mov(r11, rcx)?;
    // The next output row's window origin from the end of a row: `ow` positions (columns,
    // or at stride 2 positions of the deinterleaved row) on, the row starts `sh` input rows
    // down.
    let next_row = ((key.sh * key.wp) as i64 - key.ow as i64) as i32 * 4;
    let ow = key.ow as i32;
    let mut step = a.create_label();
    // Joined rows: the labels of the lane and next-phase tables (see [`joined_rows`]).
    let tables = joined_rows(key).then(|| {
        let lanes: Vec<u32> = (0..key.wp)
            .map(|phase| {
                (0..16)
                    .filter(|l| (phase + l) % key.wp < key.ow)
                    .map(|l| 1u32 << l)
                    .sum()
            })
            .collect();
        let next: Vec<u32> = (0..key.wp)
            .map(|phase| ((phase + 16) % key.wp) as u32)
            .collect();
        let mut table = |values: Vec<u32>| {
            let labels: Vec<CodeLabel> = values.iter().map(|_| a.create_label()).collect();
            consts.extend(labels.iter().copied().zip(values));
            labels[0]
        };
        (table(lanes), table(next))
    });
    a.set_label(&mut step)?;
    if let Some((lanes, next)) = tables {
        joined_step(&mut a, lanes, next)?;
        step_tiles(&mut a, key, (k, full, rem), &mut consts)?;
        // On 32 positions (r8 is already the next step's phase), past both vectors' pixels
        // in the output.
        a.add(rdi, 128)?;
        a.add(r12, r13)?;
        a.lea(rsi, rsi + r12 * 4)?;
        a.sub(r9, r12)?;
        a.jnz(step)?;
        return finish(a, consts);
    }
    // The step's two vectors: r12 = the first's pixels, min(ow - col, 16, left); k3 its
    // lanes. (k7 is the activations'.)
    a.mov(r14d, -1)?;
    vector_pixels(&mut a, key, (r12, r12d), r8, r9, r13, k3)?;
    // The second goes on along the row, or, where the first ends it, starts the next row (a
    // short row's step covers two: 14 x 14 and 7 x 7 maps): rbp = its input's distance from
    // the first's; its output follows the first's (`r12` pixels on).
    a.lea(rbp, qword_ptr(r12 * 4))?;
    a.lea(r15, r8 + r12)?;
    row_end(&mut a, r15, rbp, ow, next_row)?;
    // r13 = the second's pixels, min(ow - its column, 16, left - r12); k4 its lanes.
    a.mov(r10, r9)?;
    a.sub(r10, r12)?;
    vector_pixels(&mut a, key, (r13, r13d), r15, r10, r15, k4)?;
    step_tiles(&mut a, key, (k, full, rem), &mut consts)?;
    // On past both vectors' pixels: at the end of an output row, to the next row's window
    // origin.
    for n in [r12, r13] {
        a.lea(rsi, rsi + n * 4)?;
        a.lea(rdi, rdi + n * 4)?;
        a.add(r8, n)?;
        row_end(&mut a, r8, rdi, ow, next_row)?;
        a.sub(r9, n)?;
    }
    a.jnz(step)?;
    finish(a, consts)
}

/// The tiles of a step: of both vectors, or of the first when the second has no pixels
/// (r13 = 0).
fn step_tiles(
    a: &mut CodeAssembler,
    key: &DirectConvKey,
    (k, full, rem): (usize, usize, usize),
    consts: &mut Vec<(CodeLabel, u32)>,
) -> Result<(), IcedError> {
    let mut narrow = a.create_label();
    let mut stored = a.create_label();
    // (r13 is a tile counter in the tiles: the second's pixels wait in the red zone.)
    a.mov(qword_ptr(rsp - 8), r13)?;
    a.test(r13, r13)?;
    a.jz(narrow)?;
    tiles(a, key, k, full, rem, 2, consts)?;
    a.jmp(stored)?;
    a.set_label(&mut narrow)?;
    tiles(a, key, k, full, rem, 1, consts)?;
    a.set_label(&mut stored)?;
    a.mov(r13, qword_ptr(rsp - 8))
}

/// The kernel's end: registers restored, the constants after the code.
fn finish(mut a: CodeAssembler, consts: Vec<(CodeLabel, u32)>) -> Result<Vec<u8>, IcedError> {
    a.vzeroupper()?;
    for r in [r15, r14, r13, r12, rbp, rbx] {
        a.pop(r)?;
    }
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}

/// Whether the kernel joins the rows of a small map: at stride 1 the inputs of the
/// positions `y wp + x` (`x` < `wp`, the padded row) are consecutive, so a vector takes 16
/// consecutive positions and only the lanes with `x < ow` are pixels, stored compressed
/// (consecutive in the output). A 7x7 map (padded rows of 9) then fills 49 of 64 lanes in 4
/// vectors, where a vector per row filled 49 of 112; from rows of 16 positions on (a
/// 14x14 map) a vector per row wastes no more, and the plain steps stay.
pub(crate) fn joined_rows(key: &DirectConvKey) -> bool {
    key.sw == 1 && key.sh == 1 && key.wp < 16
}

/// A joined-rows step ([`joined_rows`]): r8 = the phase (`x`) of the first vector's first
/// position; r9 = pixels left. Sets k3, k4 = the two vectors' pixel lanes (at most r9 in
/// all, the first ones), r12, r13 = their pixel counts, k5, k6 = the first r12 / r13 lanes
/// (the compressed stores'), rbp = 64 (the second's input, 16 positions on), and r8 = the
/// next step's phase (32 positions on; the tiles leave r8 alone). Clobbers rax, r10, r14,
/// r15.
fn joined_step(a: &mut CodeAssembler, lanes: CodeLabel, next: CodeLabel) -> Result<(), IcedError> {
    a.lea(rax, qword_ptr(lanes))?;
    a.mov(r15d, dword_ptr(rax + r8 * 4))?;
    joined_vector(a, r12d, r9, k3, k5)?;
    // r10 = the second's phase, r8 = the next step's.
    a.lea(rax, qword_ptr(next))?;
    a.mov(r10d, dword_ptr(rax + r8 * 4))?;
    a.mov(r8d, dword_ptr(rax + r10 * 4))?;
    a.lea(rax, qword_ptr(lanes))?;
    a.mov(r15d, dword_ptr(rax + r10 * 4))?;
    a.mov(r13, r9)?;
    a.sub(r13, r12)?;
    joined_vector(a, r13d, r13, k4, k6)?;
    a.mov(rbp, 64i64)
}

/// One vector of a joined step: r15d = the lanes of its positions that are pixels; `left`
/// = pixels left for it. `n32` = its pixels (the first min(left, 16) of those lanes, as
/// `lanes`), `first` = the first `n` lanes. Clobbers r14, r15.
fn joined_vector(
    a: &mut CodeAssembler,
    n32: AsmRegister32,
    left: AsmRegister64,
    lanes: AsmRegisterK,
    first: AsmRegisterK,
) -> Result<(), IcedError> {
    a.mov(r14, 16i64)?;
    a.cmp(left, r14)?;
    a.cmovl(r14, left)?;
    a.mov(n32, -1)?;
    a.bzhi(r14d, n32, r14d)?;
    // The first `left` pixel lanes: the low bits deposited on the pixel lanes.
    a.pdep(r15d, r14d, r15d)?;
    a.kmovw(lanes, r15d)?;
    a.popcnt(n32, r15d)?;
    a.mov(r14d, -1)?;
    a.bzhi(r14d, r14d, n32)?;
    a.kmovw(first, r14d)
}

/// At the end of an output row (`col` = `ow`): `col` back to 0 and the input pointer `x`
/// on to the next row's window origin (`next_row` bytes).
fn row_end(
    a: &mut CodeAssembler,
    col: AsmRegister64,
    x: AsmRegister64,
    ow: i32,
    next_row: i32,
) -> Result<(), IcedError> {
    let mut same = a.create_label();
    a.cmp(col, ow)?;
    a.jne(same)?;
    a.xor(col, col)?;
    a.add(x, next_row)?;
    a.set_label(&mut same)
}

/// `n` (and its low half `n32`) = the pixels of a vector starting at column `col` of its row
/// with `left` pixels left in the unit: min(ow - col, 16, left); `mask` = its lanes (r14d
/// holds all ones; `scratch` and r15 are clobbered; `scratch` may be `col`).
fn vector_pixels(
    a: &mut CodeAssembler,
    key: &DirectConvKey,
    (n, n32): (AsmRegister64, AsmRegister32),
    col: AsmRegister64,
    left: AsmRegister64,
    scratch: AsmRegister64,
    mask: AsmRegisterK,
) -> Result<(), IcedError> {
    a.mov(n, key.ow as i64)?;
    a.sub(n, col)?;
    a.mov(scratch, 16i64)?;
    for bound in [scratch, left] {
        a.cmp(n, bound)?;
        a.cmovg(n, bound)?;
    }
    let lanes = r15d;
    a.bzhi(lanes, r14d, n32)?;
    a.kmovw(mask, lanes)
}

/// Every channel tile of one step of `vectors` zmm (1: the first, `k3`; 2: and the second,
/// `k4`, input `rbp` bytes and output `r12` pixels after the first's): rdi = window origin,
/// rsi = output, rdx = A, r11 = bias.
fn tiles(
    a: &mut CodeAssembler,
    key: &DirectConvKey,
    k: usize,
    full: usize,
    rem: usize,
    vectors: usize,
    consts: &mut Vec<(CodeLabel, u32)>,
) -> Result<(), IcedError> {
    // r10 = A tile, rcx = bias, rax = output rows; r13 counts full tiles.
    a.mov(r10, rdx)?;
    a.mov(rcx, r11)?;
    a.mov(rax, rsi)?;
    if key.mrows <= MAX_ROWS {
        // All rows in one pass (a group of 8: the 6-row tile and the 2-row one together, so
        // the short tile's few accumulators do not wait on their FMAs' latency): r14 = the
        // second tile's A.
        if rem > 0 && full > 0 {
            a.lea(r14, rdx + (6 * k * 4) as i32)?;
        }
        let segments: Vec<Segment> = [6 * full, rem]
            .into_iter()
            .filter(|&r| r > 0)
            .map(Segment::whole)
            .collect();
        return tile(a, key, &segments, vectors, consts);
    }
    if key.mrows <= TWO_PASSES {
        // Two passes of about half the rows each (a group of 16: 8 and 8, not 6, 6 and 4):
        // each input vector loaded feeds more FMAs (loads not 64-byte aligned split cache
        // lines, and bound the 6-row passes). A pass takes rows of at most two tiles of the
        // packed A (r10, r14).
        let half = key.mrows.div_ceil(2);
        for (r0, r1) in [(0, half), (half, key.mrows)] {
            let parts = segments_of(r0, r1, key.mrows);
            assert!(parts.len() <= 2, "a pass over more than two tiles");
            for (reg, (t, _)) in [r10, r14].into_iter().zip(&parts) {
                a.lea(reg, rdx + (t * 6 * k * 4) as i32)?;
            }
            a.lea(rcx, r11 + (r0 * 4) as i32)?;
            a.lea(rax, rsi + (r0 * key.n * 4) as i32)?;
            let segments: Vec<Segment> = parts.into_iter().map(|(_, s)| s).collect();
            tile(a, key, &segments, vectors, consts)?;
        }
        return Ok(());
    }
    if full > 0 {
        let mut tl = a.create_label();
        if full > 1 {
            a.mov(r13, full as i64)?;
            a.set_label(&mut tl)?;
        }
        // (The channel loop leaves r10 at the next tile: `k` rows of 6 read.)
        tile(a, key, &[Segment::whole(6)], vectors, consts)?;
        if full > 1 {
            a.add(rcx, 24)?;
            a.add(rax, (6 * key.n * 4) as i32)?;
            a.dec(r13)?;
            a.jnz(tl)?;
        }
    }
    if rem > 0 {
        a.lea(r10, rdx + (full * 6 * k * 4) as i32)?;
        a.lea(rcx, r11 + (full * 24) as i32)?;
        a.lea(rax, rsi + (full * 6 * key.n * 4) as i32)?;
        tile(a, key, &[Segment::whole(rem)], vectors, consts)?;
    }
    Ok(())
}

/// One tile: the channels of `segments` (row tiles of the packed A, at `r10` and, for a
/// second one, `r14`: each advanced past its tile) x the step's pixels; input at `rdi`, bias
/// at `rcx`, output at `rax`.
fn tile(
    a: &mut CodeAssembler,
    key: &DirectConvKey,
    segments: &[Segment],
    vectors: usize,
    consts: &mut Vec<(CodeLabel, u32)>,
) -> Result<(), IcedError> {
    let acc = |i: usize, v: usize| zmm(2 * i + v);
    let mr: usize = segments.iter().map(|s| s.rows).sum();
    // Row `i`'s A: its segment's pointer, its tile's rows and its row in that tile.
    let a_regs = [r10, r14];
    let row_of = |i: usize| {
        let mut i = i;
        for (s, seg) in segments.iter().enumerate() {
            if i < seg.rows {
                return (a_regs[s], seg.tile_rows, seg.first + i);
            }
            i -= seg.rows;
        }
        unreachable!("row beyond the tile")
    };
    let bias0 = matches!(key.epilogue.first(), Some(Epilogue::BiasRow));
    for i in 0..mr {
        for v in 0..vectors {
            if bias0 {
                a.vbroadcastss(acc(i, v), dword_ptr(rcx + 4 * i as i32))?;
            } else {
                a.vpxord(acc(i, v), acc(i, v), acc(i, v))?;
            }
        }
    }
    // r15 = the channel's input plane; rbx counts channels.
    let plane = (key.hp * key.wp * 4) as i32;
    let taps = key.kh * key.kw;
    a.mov(r15, rdi)?;
    a.mov(rbx, key.c as i64)?;
    let mut channel = a.create_label();
    a.set_label(&mut channel)?;
    for kh in 0..key.kh {
        for kw in 0..key.kw {
            let tap = kh * key.kw + kw;
            let base = (kh * key.dh * key.wp) as i64 * 4;
            let at = key.tap_position(kw * key.dw);
            let disp = (base + 4 * at) as i32;
            // (From the padded copy: whole vectors, at most 15 floats past the last
            // pixel's window, inside the node's scratch; the extra lanes are not stored.)
            let (first, second) = if key.padded_input {
                (zmm22, zmm23)
            } else {
                (zmm22.k3().z(), zmm23.k4().z())
            };
            a.vmovups(first, zmmword_ptr(r15 + disp))?;
            if vectors == 2 {
                a.vmovups(second, zmmword_ptr(r15 + rbp + disp))?;
            }
            for i in 0..mr {
                // Two broadcast registers in turn: the next load does not wait on the FMAs.
                let w = zmm(24 + (i & 1));
                let (r, n, row) = row_of(i);
                a.vbroadcastss(w, dword_ptr(r + (4 * (tap * n + row)) as i32))?;
                for v in 0..vectors {
                    a.vfmadd231ps(acc(i, v), zmm(22 + v), w)?;
                }
            }
        }
    }
    a.add(r15, plane)?;
    for (s, seg) in segments.iter().enumerate() {
        a.add(a_regs[s], (taps * seg.tile_rows * 4) as i32)?;
    }
    a.dec(rbx)?;
    a.jnz(channel)?;
    let all: Vec<AsmRegisterZmm> = (0..mr)
        .flat_map(|i| (0..vectors).map(move |v| acc(i, v)))
        .collect();
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for epilogue in &key.epilogue[bias0 as usize..] {
        match *epilogue {
            Epilogue::BiasRow => {
                for i in 0..mr {
                    a.vbroadcastss(zmm24, dword_ptr(rcx + 4 * i as i32))?;
                    for v in 0..vectors {
                        a.vaddps(acc(i, v), acc(i, v), zmm24)?;
                    }
                }
            }
            Epilogue::Relu => {
                a.vpxord(zmm24, zmm24, zmm24)?;
                for &x in &all {
                    a.vmaxps(x, zmm24, x)?;
                }
            }
            Epilogue::Clip(lo, hi) => {
                let llo = konst(a, lo);
                let lhi = konst(a, hi);
                a.vbroadcastss(zmm24, dword_ptr(llo))?;
                a.vbroadcastss(zmm25, dword_ptr(lhi))?;
                for &x in &all {
                    a.vmaxps(x, zmm24, x)?;
                    a.vminps(x, zmm25, x)?;
                }
            }
            Epilogue::Scale(s) => {
                let l = konst(a, s);
                a.vbroadcastss(zmm24, dword_ptr(l))?;
                for &x in &all {
                    a.vmulps(x, x, zmm24)?;
                }
            }
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                let act = Activation::new(a, *epilogue, &mut konst).expect("an activation step");
                for &x in &all {
                    act.apply(a, x, [zmm26, zmm27, zmm28, zmm29, zmm30])?;
                }
            }
            _ => unreachable!("checked by `supports`"),
        }
    }
    let joined = joined_rows(key);
    for i in 0..mr {
        let row = (4 * i * key.n) as i32;
        if joined {
            // The pixel lanes compressed to the first ones, stored as consecutive pixels.
            a.vcompressps(acc(i, 0).k3().z(), acc(i, 0))?;
            a.vmovups(zmmword_ptr(rax + row).k5(), acc(i, 0))?;
            if vectors == 2 {
                a.vcompressps(acc(i, 1).k4().z(), acc(i, 1))?;
                a.vmovups(zmmword_ptr(rax + r12 * 4 + row).k6(), acc(i, 1))?;
            }
            continue;
        }
        a.vmovups(zmmword_ptr(rax + row).k3(), acc(i, 0))?;
        if vectors == 2 {
            a.vmovups(zmmword_ptr(rax + r12 * 4 + row).k4(), acc(i, 1))?;
        }
    }
    Ok(())
}
