//! The AVX-512 VNNI conv microkernel with the roles of the GEMM swapped
//! ([`Contraction::ConvPixels`]): rows are up to 8 output pixels of one output row, columns
//! up to 4 panels of 16 output channels (at most 4 blocks of 4 x 16 accumulators: 8 x 32,
//! 4 x 64). A tile of the other form (`int8_vnni.rs`: 6 channels x 16 pixels) fills its pixel
//! panels badly on small maps (a 7x7 map is 49 pixels in 64 columns) and needs its patches
//! packed; here a row of the map is split into tiles of as many pixels as it has, the
//! channels (a multiple of 16) fill the vectors, and the operands are read in place.
//!
//! Operands, per K group (the conv's K order, see `crate::x64::int8`): `a` = the quantized
//! dword planes of the image, each row's dword at `a + offset[g] + row_step r` broadcast (the
//! group's offset from a compile-time table: plane and kernel tap); `b` = the weights as
//! 16-channel panels (`[group][16 channels][4 s8]`, panels `lda` bytes apart). Every tile is
//! one whole K: it starts from the channel offsets and ends with the epilogue.
//!
//! Registers: the accumulators of row `r`, panel `z` in zmm0-15 (block `(r / 4) panels + z`,
//! register `r % 4` of it; a short block's missing rows are zero at the end); zmm16-19 /
//! zmm20-23 the panels of even / odd groups, zmm24-31 the rows' broadcasts, r11 a group's
//! offset. The epilogue runs per channel along the vectors (scale, bias) and elementwise; at
//! a residual step, or before the store, each 4 x 16 block is transposed (4 x 4 within each
//! 128-bit lane) so that its register `i` holds, in lane `l`, channel `16 z + 4 l + i` of the
//! block's 4 pixels: stored (and a residual read) 16 bytes per channel (`vextractf32x4`,
//! `vinsertf32x4`; a short block by masks), the output being `[channel][pixel]` with channels
//! `ldc` bytes apart.
//!
//! The int8 kernels' ABI (`int8.rs`) with two slots read differently: `kernel(a, b, c,
//! groups, lda, offsets, ldc, offset, scale, bias, res)`: `lda` = bytes between weight panels,
//! the 6th argument the K groups' byte offsets (i64 per group), the 7th the output's channel
//! stride; the channel tables at the tile's first channel
//! (not masked: the plan takes this form only for whole panels).

use super::epilogue::{
    fake_quantize, fake_quantize_constants, quantize_store_constants, quantize_to_bytes,
    Activation, Epilogue,
};
use super::int8::{assemble_loop_aligned, group_pairs, Contraction, Int8Key, Scheme};
use iced_x86::code_asm::*;

/// Output pixels of the tallest tile (two blocks of 4).
pub(crate) const PIXEL_ROWS: usize = 8;
/// 16-channel panels of the widest tile.
pub(crate) const CHANNEL_PANELS: usize = 4;
/// 4 x 16 accumulator blocks a tile may use (zmm0-15).
const BLOCKS: usize = 4;
/// The most channel panels a tile of `rows` pixels has (4 x 16 blocks: 8 rows, 2 panels; 4
/// rows, 4 panels).
pub(crate) fn panels_for(rows: usize) -> usize {
    (BLOCKS / rows.div_ceil(4)).min(CHANNEL_PANELS)
}
/// How far ahead (bytes) the k loop prefetches each weight panel.
const PREFETCH: i32 = 2048;

/// Most kernel columns a tile that skips padding taps unrolls ([`ColumnSkips`]).
pub(crate) const MAX_SKIP_TAPS: usize = 7;

/// The taps a tile at the left or right edge of an output row skips: with the K order
/// (kernel row, dword plane, kernel column), a K group's kernel column is its index modulo
/// `taps`, and for column `t` the first `rows[t].0` and the last `rows[t].1` rows of the tile
/// read the left or right padding. Those products are skipped: the plan takes this form only
/// where padding is the zero point 0, so each such product is 0 (a 3x3 kernel on a 4-pixel
/// row: 4 of 12 (pixel, column) pairs). The k loop then runs one dword plane's `taps` groups
/// per iteration, each over its rows. `taps` 0: nothing skipped (groups in pairs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct ColumnSkips {
    pub taps: usize,
    pub rows: [(usize, usize); MAX_SKIP_TAPS],
}

impl ColumnSkips {
    /// The skips of a tile of `rows` output pixels from column `x0` of a conv whose output
    /// column `x` reads padded input column `x sw + t dw` at kernel column `t`, the image
    /// being padded columns `[pw, pw + w)`; none when no pair reads padding or the kernel
    /// is wider than [`MAX_SKIP_TAPS`].
    pub fn of(
        x0: usize,
        rows: usize,
        kw: usize,
        (sw, dw, pw, w): (usize, usize, usize, usize),
    ) -> Self {
        let mut s = ColumnSkips::default();
        if kw > MAX_SKIP_TAPS || rows == 0 {
            return s;
        }
        let inside = |r: usize, t: usize| (pw..pw + w).contains(&((x0 + r) * sw + t * dw));
        let mut any = false;
        for t in 0..kw {
            let lead = (0..rows).take_while(|&r| !inside(r, t)).count();
            let trail = if lead == rows {
                0
            } else {
                (0..rows).rev().take_while(|&r| !inside(r, t)).count()
            };
            s.rows[t] = (lead, trail);
            any |= lead + trail > 0;
        }
        if any {
            s.taps = kw;
            s
        } else {
            ColumnSkips::default()
        }
    }

    /// The symbol's part: per column, the rows skipped at each end.
    pub fn symbol(&self) -> String {
        if self.taps == 0 {
            return String::new();
        }
        let cols: Vec<String> = self.rows[..self.taps]
            .iter()
            .map(|(l, t)| format!("{l}{t}"))
            .collect();
        format!("_skip{}", cols.join("_"))
    }
}

/// Whether a tile of `rows` pixels and `panels` channel panels exists.
pub(crate) fn tile_fits(rows: usize, panels: usize) -> bool {
    (1..=PIXEL_ROWS).contains(&rows)
        && (1..=CHANNEL_PANELS).contains(&panels)
        && rows.div_ceil(4) * panels <= BLOCKS
}

fn v(i: usize) -> AsmRegisterZmm {
    [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
        zmm14, zmm15, zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26,
        zmm27, zmm28, zmm29, zmm30, zmm31,
    ][i]
}

/// `x` under lane `l`'s opmask (k1-k4, merging).
fn masked(x: AsmRegisterZmm, l: usize) -> AsmRegisterZmm {
    match l {
        0 => x.k1(),
        1 => x.k2(),
        2 => x.k3(),
        _ => x.k4(),
    }
}

pub(super) fn assemble_pixels(key: &Int8Key) -> Result<Vec<u8>, IcedError> {
    assemble_loop_aligned(&|pad| build(key, pad))
}

fn build(key: &Int8Key, pad: usize) -> Result<(CodeAssembler, CodeLabel), IcedError> {
    let Contraction::ConvPixels {
        panels: nz,
        row_step,
        skips,
    } = key.contraction
    else {
        unreachable!("a pixel-rows kernel key")
    };
    let mr = key.mr;
    assert!(tile_fits(mr, nz), "pixel-rows tile {mr} x {nz} panels");
    assert_eq!(key.scheme, Scheme::DotProduct);
    assert!(key.first && !key.partial && !key.unpacked);
    let dq = key.last.as_ref().expect("a pixel-rows tile is a whole K");
    let halves = mr.div_ceil(4);
    // Row `r`, panel `z`: register `i` of block `(r / 4) nz + z`.
    let acc = |r: usize, z: usize| v(4 * ((r / 4) * nz + z) + r % 4);
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let gb = key.scheme.panel_group_bytes() as i32;

    // r10 = 3 lda (the fourth panel at rsi + r10), r9 = the K groups' offsets; accumulators
    // from the channel offsets.
    a.lea(r10, r8 + r8 * 2)?;
    a.mov(rax, qword_ptr(rsp + 16))?;
    for z in 0..nz {
        a.vmovdqu32(acc(0, z), zmmword_ptr(rax + 64 * z as i32))?;
        for r in 1..mr {
            a.vmovdqa32(acc(r, z), acc(0, z))?;
        }
    }
    // Panel `z`'s bytes at `d` from the k loop's position.
    let panel = |z: usize, d: i32| match z {
        0 => rsi + d,
        1 => rsi + r8 + d,
        2 => rsi + r8 * 2 + d,
        _ => rsi + r10 + d,
    };
    // K group `u` of an iteration over rows `[lo, hi)`: panels in zmm16-19 (even) / zmm20-23
    // (odd), the group's offset in r11, row `r`'s broadcast in zmm(24 + r).
    let group = |a: &mut CodeAssembler, u: i32, (lo, hi): (usize, usize)| {
        if lo >= hi {
            return Ok(());
        }
        let wb = 16 + 4 * (u as usize % 2);
        for z in 0..nz {
            a.vmovdqu32(v(wb + z), zmmword_ptr(panel(z, u * gb)))?;
        }
        a.mov(r11, qword_ptr(r9 + 8 * u))?;
        for r in lo..hi {
            let d = (row_step * r) as i32;
            a.vpbroadcastd(v(24 + r), dword_ptr(rdi + r11 + d))?;
            for z in 0..nz {
                a.vpdpbusd(acc(r, z), v(24 + r), v(wb + z))?;
            }
        }
        Ok::<(), IcedError>(())
    };
    // An iteration of `count` K groups: the weight panels stream from L2 (the iteration's
    // lines `PREFETCH` bytes ahead), then the groups.
    let iteration =
        |a: &mut CodeAssembler, count: usize, rows: &dyn Fn(usize) -> (usize, usize)| {
            for z in 0..nz {
                for line in 0..count {
                    a.prefetcht0(byte_ptr(panel(z, PREFETCH + 64 * line as i32)))?;
                }
            }
            for u in 0..count {
                group(a, u as i32, rows(u))?;
            }
            // The next block's panels (the next `nz` panels, read by the driver's next block of
            // channels) into L2, as far along as this tile is: the first of a block's output
            // rows then finds its weights in L2, not streaming from L3 (r11 is free until the
            // next group).
            match nz {
                3 => a.lea(r11, rsi + r10)?,
                _ => a.lea(r11, rsi + r8 * nz as i32)?,
            }
            for z in 0..nz {
                let next = match z {
                    0 => r11 + 0,
                    1 => r11 + r8,
                    2 => r11 + r8 * 2,
                    _ => r11 + r10,
                };
                for line in 0..count {
                    a.prefetcht1(byte_ptr(next + 64 * line as i32))?;
                }
            }
            a.add(rsi, count as i32 * gb)?;
            a.add(r9, 8 * count as i32)
        };
    let l2 = if skips.taps == 0 {
        group_pairs(
            &mut a,
            pad,
            &mut |a| iteration(a, 2, &|_| (0, mr)),
            &mut |a| group(a, 0, (0, mr)),
        )?
    } else {
        // One dword plane's kernel columns per iteration, each over the rows inside the
        // image (the group count is a multiple of `taps`).
        let taps = skips.taps;
        let rows = |u: usize| {
            let (lead, trail) = skips.rows[u];
            (lead, mr.saturating_sub(trail))
        };
        let mut top = a.create_label();
        let mut done = a.create_label();
        // (`and`, not `test`: the same flags, and the emulator's instruction set.)
        a.and(rcx, rcx)?;
        a.jz(done)?;
        if pad > 0 {
            a.nops_with_size(pad)?;
        }
        a.set_label(&mut top)?;
        iteration(&mut a, taps, &rows)?;
        a.sub(rcx, taps as i32)?;
        a.jnz(top)?;
        a.set_label(&mut done)?;
        top
    };
    a.mov(r9, qword_ptr(rsp + 8))?;
    let computed: Vec<AsmRegisterZmm> = (0..nz)
        .flat_map(|z| (0..mr).map(move |r| (r, z)))
        .map(|(r, z)| acc(r, z))
        .collect();
    for &x in &computed {
        a.vcvtdq2ps(x, x)?;
    }
    // Per channel (along the vectors): `acc (*|+)= t[c]`, the table at `rax`.
    let channel_op = |a: &mut CodeAssembler, mul: bool| -> Result<(), IcedError> {
        for z in 0..nz {
            a.vmovups(zmm16, zmmword_ptr(rax + 64 * z as i32))?;
            for r in 0..mr {
                if mul {
                    a.vmulps(acc(r, z), acc(r, z), zmm16)?;
                } else {
                    a.vaddps(acc(r, z), acc(r, z), zmm16)?;
                }
            }
        }
        Ok(())
    };
    a.mov(rax, qword_ptr(rsp + 24))?;
    channel_op(&mut a, true)?;
    if dq.bias {
        a.mov(rax, qword_ptr(rsp + 32))?;
        channel_op(&mut a, false)?;
    }
    // A short last block of 4 rows (`tail` pixels): its pixels in each 128-bit lane (k1-k4),
    // in one lane (k5).
    let tail = mr % 4;
    if tail > 0 {
        let pixels = (1u32 << tail) - 1;
        for l in 0..4 {
            a.mov(r11d, (pixels << (4 * l)) as i32)?;
            a.kmovw([k1, k2, k3, k4][l], r11d)?;
        }
        a.mov(r11d, pixels as i32)?;
        a.kmovw(k5, r11d)?;
    }
    let short = |h: usize| tail > 0 && h + 1 == halves;
    // rdi = 4 ldc, r10 = 12 ldc: a transposed register's lanes are 4 channels apart.
    a.lea(rdi, qword_ptr(r9 * 4))?;
    a.lea(r10, rdi + rdi * 2)?;
    let mut transposed = false;
    let transpose = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        for h in 0..halves {
            for z in 0..nz {
                let x = |i: usize| acc(4 * h + i, z);
                for i in (mr - 4 * h).min(4)..4 {
                    a.vpxord(x(i), x(i), x(i))?;
                }
                a.vunpcklps(zmm28, x(0), x(1))?;
                a.vunpckhps(zmm29, x(0), x(1))?;
                a.vunpcklps(zmm30, x(2), x(3))?;
                a.vunpckhps(zmm31, x(2), x(3))?;
                a.vunpcklpd(x(0), zmm28, zmm30)?;
                a.vunpckhpd(x(1), zmm28, zmm30)?;
                a.vunpcklpd(x(2), zmm29, zmm31)?;
                a.vunpckhpd(x(3), zmm29, zmm31)?;
            }
        }
        Ok(())
    };
    // Lane `l` of a transposed register of block row `h`: 16 bytes at `base + 16 h + l 4 ldc`
    // (moved whole by `vextractf32x4` / `vinsertf32x4`), or the masked elements 4l..4l+4 of
    // the vector 16 l bytes before (a short block's residual: masked loads do not fault).
    let lane_at = |base: AsmRegister64, h: usize, l: usize, vector: bool| {
        let d = 16 * h as i32 - if vector { 16 * l as i32 } else { 0 };
        let m = match l {
            0 => base + d,
            1 => base + rdi + d,
            2 => base + rdi * 2 + d,
            _ => base + r10 + d,
        };
        if vector {
            zmmword_ptr(m)
        } else {
            xmmword_ptr(m)
        }
    };
    // Every transposed register in channel order `(z, i)`, then block row `h`: the channel
    // row pointer `rax` from `start` moves on by `ldc` per `i` and 12 ldc more per panel.
    let per_channel_row =
        |a: &mut CodeAssembler,
         start: AsmRegister64,
         f: &mut dyn FnMut(&mut CodeAssembler, AsmRegisterZmm, usize) -> Result<(), IcedError>|
         -> Result<(), IcedError> {
            a.mov(rax, start)?;
            for z in 0..nz {
                for i in 0..4 {
                    for h in 0..halves {
                        f(a, acc(4 * h + i, z), h)?;
                    }
                    if i < 3 || z + 1 < nz {
                        a.add(rax, r9)?;
                    }
                }
                if z + 1 < nz {
                    a.add(rax, r10)?;
                }
            }
            Ok(())
        };
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    // The registers a step applies to.
    let all: Vec<AsmRegisterZmm> = (0..nz)
        .flat_map(|z| (0..4 * halves).map(move |r| (r, z)))
        .map(|(r, z)| acc(r, z))
        .collect();
    let live = |transposed: bool| if transposed { &all } else { &computed };
    for step in &dq.steps {
        match *step {
            Epilogue::BiasRow | Epilogue::BiasCol => {
                assert!(!transposed, "a channel step after the residual");
                a.mov(rax, qword_ptr(rsp + 32))?;
                channel_op(&mut a, false)?;
            }
            Epilogue::Relu => {
                a.vpxord(zmm16, zmm16, zmm16)?;
                for &x in live(transposed) {
                    a.vmaxps(x, zmm16, x)?;
                }
            }
            Epilogue::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(zmm16, dword_ptr(llo))?;
                a.vbroadcastss(zmm17, dword_ptr(lhi))?;
                for &x in live(transposed) {
                    a.vmaxps(x, zmm16, x)?;
                    a.vminps(x, zmm17, x)?;
                }
            }
            Epilogue::Residual => {
                if !transposed {
                    transpose(&mut a)?;
                    transposed = true;
                }
                a.mov(rcx, qword_ptr(rsp + 40))?;
                per_channel_row(&mut a, rcx, &mut |a, x, h| {
                    for l in 0..4 {
                        if short(h) {
                            a.vmovups(masked(zmm28, l), lane_at(rax, h, l, true))?;
                        } else {
                            a.vinsertf32x4(zmm28, zmm28, lane_at(rax, h, l, false), l as u32)?;
                        }
                    }
                    a.vaddps(x, x, zmm28)
                })?;
            }
            Epilogue::FakeQuantize {
                scale,
                zero,
                signed,
            } => {
                let regs = [zmm16, zmm17, zmm18, zmm19];
                fake_quantize_constants(&mut a, (scale, zero, signed), regs, &mut konst)?;
                for &x in live(transposed) {
                    fake_quantize(&mut a, x, zmm20, [zmm16, zmm17, zmm18, zmm19])?;
                }
            }
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                let act = Activation::new(&mut a, *step, &mut konst).expect("an activation step");
                for &x in live(transposed) {
                    act.apply(&mut a, x, [zmm16, zmm17, zmm18, zmm19, zmm20])?;
                }
            }
            Epilogue::Scale(_) => unreachable!("int8 kernels have no scale step"),
        }
    }
    if let Some(store) = dq.quantize {
        // u8 output: each register quantized, transposed as the f32 one is, its 16 dwords
        // packed into xmm28 (lane `l` = channel `16 z + 4 l + i`'s 4 pixels), each lane
        // shifted to the bottom (xmm29) and stored as 4 bytes (k6) at `4 h` from the
        // channel's row; a short block's `tail` bytes (k5).
        assert!(!transposed, "no residual before a u8 store");
        let regs = [zmm16, zmm17, zmm18, zmm19];
        quantize_store_constants(&mut a, store, regs, &mut konst)?;
        for &x in &computed {
            quantize_to_bytes(&mut a, x, regs)?;
        }
        transpose(&mut a)?;
        a.mov(r11d, 0xf)?;
        a.kmovw(k6, r11d)?;
        per_channel_row(&mut a, rdx, &mut |a, x, h| {
            let d = 4 * h as i32;
            a.vpmovusdb(xmm28, x)?;
            for l in 0..4 {
                let m = xmmword_ptr(match l {
                    0 => rax + d,
                    1 => rax + rdi + d,
                    2 => rax + rdi * 2 + d,
                    _ => rax + r10 + d,
                });
                let m = if short(h) { m.k5() } else { m.k6() };
                if l == 0 {
                    a.vmovdqu8(m, xmm28)?;
                } else {
                    // (EVEX: xmm29 has no VEX encoding.)
                    a.set_prefer_vex(false);
                    a.vpsrldq(xmm29, xmm28, 4 * l)?;
                    a.set_prefer_vex(true);
                    a.vmovdqu8(m, xmm29)?;
                }
            }
            Ok(())
        })?;
    } else {
        if !transposed {
            transpose(&mut a)?;
        }
        per_channel_row(&mut a, rdx, &mut |a, x, h| {
            for l in 0..4 {
                let m = lane_at(rax, h, l, false);
                let m = if short(h) { m.k5() } else { m };
                a.vextractf32x4(m, x, l as u32)?;
            }
            Ok(())
        })?;
    }
    a.vzeroupper()?;
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    Ok((a, l2))
}
