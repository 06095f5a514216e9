//! Direct-conv kernels (AVX2/FMA, ymm) for convs with few input channels (a network's first conv: 3
//! channels, K = 27), assembled with `iced-x86`.
//!
//! The implicit GEMM packs `K x 16` patch panels per unit and calls a microkernel per 6-row tile;
//! with K = 27 the packing and the tile epilogues cost about as much as the FMAs. These kernels
//! gather the patches in registers instead: per step of 16 output pixels (two ymm) of one row, for
//! each tile of 6 output channels, every tap `k = (c, kh, kw)` loads the two input vectors and does
//! 12 FMAs with the tile's weights broadcast from the packed A (`[K][mr]` per tile, see
//! `crate::x64::kernel_plan::ALayout::PackedAtCompileTime`). 12 accumulators, 8 loads per 12 FMAs.
//!
//! Stride 2 reads a deinterleaved padded copy (`crate::x64::direct_conv`: each padded row holds its
//! even columns, then its odd ones), so the 8 inputs of a tap are one contiguous load: column `2 o
//! + s` is position `o + s / 2` of the even (s even) or odd part.
//!
//! System-V ABI, no return value; rbx is saved and restored: `dc(x, o, a, bias, col)`: `x` is the
//! (padded) input image at the window origin of the unit's first pixel (stride 2: position `col` of
//! its deinterleaved row), `o` the output at (first channel, first pixel), `a` the packed A tile of
//! the first channel, `bias` its bias (read only with a bias epilogue), `col` the first pixel's
//! column in its output row.

use super::epilogue::{epilogue_pointwise, epilogue_symbol, Epilogue};
use super::registers::ymm;
use iced_x86::code_asm::*;

/// One direct-conv kernel: a unit of `ncols` output pixels x `mrows` output channels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DirectConvKey {
    /// Input channels and padded input extents.
    pub c: usize,
    pub hp: usize,
    pub wp: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Output pixels per output channel (the output plane).
    pub n: usize,
    /// Channels of the unit (tiles of 6, the last one shorter: the packed A's tiles) and
    /// pixels of the unit (a multiple of 16).
    pub mrows: usize,
    pub ncols: usize,
    pub epilogue: Vec<Epilogue>,
    /// The AVX-512 kernel ([`super::direct_conv_avx512`]: zmm, any row length, grouped
    /// convs) rather than the AVX2 one.
    pub wide: bool,
    /// The input is the node's padded copy, followed by at least 64 bytes of its scratch:
    /// the AVX-512 kernel loads whole vectors (the lanes past a row's pixels are read and
    /// dropped) instead of masked ones, which were measured 8-10% slower.
    pub padded_input: bool,
}

impl DirectConvKey {
    /// Whether a kernel exists: stride 1 or 2 along rows, rows of whole 16-pixel steps, at
    /// most 4 input channels and 64 taps, no residual.
    pub fn supports(
        c: usize,
        kh: usize,
        kw: usize,
        sw: usize,
        ow: usize,
        epilogue: &[Epilogue],
    ) -> bool {
        (sw == 1 || sw == 2)
            && c <= 4
            && c * kh * kw <= 64
            && kh * kw > 1
            && ow.is_multiple_of(16)
            && ow > 0
            && !epilogue.contains(&Epilogue::Residual)
            && !epilogue
                .iter()
                .any(|e| e.gemm_only() && *e != Epilogue::HardSwish)
    }

    /// Where the input of tap column offset `s` (`kw x dw`) of a step's first output lies,
    /// in floats from its window origin: stride 1, `s` columns on; stride 2, in the
    /// deinterleaved row (`crate::x64::padded_copy`), input column `2 o + s` at `o + s / 2` of
    /// the even part (s even) or of the odd part (s odd).
    pub fn tap_position(&self, s: usize) -> i64 {
        let s = s as i64;
        if self.sw == 1 {
            s
        } else if s % 2 == 0 {
            s / 2
        } else {
            self.wp.div_ceil(2) as i64 + s / 2
        }
    }

    pub fn symbol(&self) -> String {
        let mut s = format!(
            "optc_direct_conv_{}_c{}_{}x{}_k{}x{}_s{}x{}_d{}x{}_ow{}_n{}_m{}_u{}",
            if self.wide { "avx512" } else { "avx2" },
            self.c,
            self.hp,
            self.wp,
            self.kh,
            self.kw,
            self.sh,
            self.sw,
            self.dh,
            self.dw,
            self.ow,
            self.n,
            self.mrows,
            self.ncols
        );
        if self.padded_input {
            s.push_str("_padded");
        }
        s.push_str(&epilogue_symbol(&self.epilogue));
        s
    }
}

/// Assemble the kernel `key` (position independent, no relocations).
pub(crate) fn assemble(key: &DirectConvKey) -> Result<Vec<u8>, IcedError> {
    if key.wide {
        return super::direct_conv_avx512::assemble(key);
    }
    assert!(
        DirectConvKey::supports(key.c, key.kh, key.kw, key.sw, key.ow, &key.epilogue)
            && key.mrows > 0
            && key.ncols.is_multiple_of(16)
            && key.ncols > 0,
        "unsupported direct-conv kernel"
    );
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let k = key.c * key.kh * key.kw;
    let full = key.mrows / 6;
    let rem = key.mrows % 6;

    a.push(rbx)?;
    a.mov(r9, (key.ncols / 16) as i64)?;
    let mut step = a.create_label();
    a.set_label(&mut step)?;
    // Full tiles in a loop: r10 = A tile, r11 = bias, rax = output, rbx = count.
    if full > 0 {
        a.mov(r10, rdx)?;
        a.mov(r11, rcx)?;
        a.mov(rax, rsi)?;
        let mut tl = a.create_label();
        if full > 1 {
            a.mov(rbx, full as i64)?;
            a.set_label(&mut tl)?;
        }
        tile(&mut a, key, 6, &mut consts)?;
        if full > 1 {
            a.add(r10, (6 * k * 4) as i32)?;
            a.add(r11, 24)?;
            a.add(rax, (6 * key.n * 4) as i32)?;
            a.dec(rbx)?;
            a.jnz(tl)?;
        }
    }
    if rem > 0 {
        a.lea(r10, rdx + (full * 6 * k * 4) as i32)?;
        a.lea(r11, rcx + (full * 24) as i32)?;
        a.lea(rax, rsi + (full * 6 * key.n * 4) as i32)?;
        tile(&mut a, key, rem, &mut consts)?;
    }
    // Next 16 pixels; at the end of an output row, the next row's window origin.
    a.add(rsi, 64)?;
    // (Stride 1: 16 columns; stride 2: 16 positions of the deinterleaved row.)
    a.add(rdi, 64)?;
    a.add(r8, 16)?;
    let mut same = a.create_label();
    a.cmp(r8, key.ow as i32)?;
    a.jne(same)?;
    a.xor(r8, r8)?;
    // A row of outputs advanced `ow` positions (columns, or at stride 2 positions of the
    // deinterleaved copy); the next output row starts `sh` input rows down.
    a.add(rdi, ((key.sh * key.wp) as i64 - key.ow as i64) as i32 * 4)?;
    a.set_label(&mut same)?;
    a.dec(r9)?;
    a.jnz(step)?;
    a.vzeroupper()?;
    a.pop(rbx)?;
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}

/// One tile: `mr` channels x 16 pixels; input at `rdi`, A tile at `r10`, bias at `r11`,
/// output at `rax`.
fn tile(
    a: &mut CodeAssembler,
    key: &DirectConvKey,
    mr: usize,
    consts: &mut Vec<(CodeLabel, u32)>,
) -> Result<(), IcedError> {
    let acc = |i: usize, v: usize| ymm(2 * i + v);
    let bias0 = matches!(
        key.epilogue.first(),
        Some(Epilogue::BiasRow | Epilogue::BiasCol)
    );
    for i in 0..mr {
        for v in 0..2 {
            if bias0 {
                a.vbroadcastss(acc(i, v), dword_ptr(r11 + 4 * i as i32))?;
            } else {
                a.vxorps(acc(i, v), acc(i, v), acc(i, v))?;
            }
        }
    }
    let plane = (key.hp * key.wp) as i64;
    let mut q = 0;
    for c in 0..key.c {
        for kh in 0..key.kh {
            for kw in 0..key.kw {
                let base = (c as i64 * plane + (kh * key.dh * key.wp) as i64) * 4;
                let at = key.tap_position(kw * key.dw);
                for v in 0..2 {
                    let m = rdi + (base + 4 * (at + 8 * v as i64)) as i32;
                    a.vmovups(ymm(12 + v), ymmword_ptr(m))?;
                }
                for i in 0..mr {
                    a.vbroadcastss(ymm14, dword_ptr(r10 + (4 * (q * mr + i)) as i32))?;
                    a.vfmadd231ps(acc(i, 0), ymm14, ymm12)?;
                    a.vfmadd231ps(acc(i, 1), ymm14, ymm13)?;
                }
                q += 1;
            }
        }
    }
    let all: Vec<AsmRegisterYmm> = (0..mr)
        .flat_map(|i| (0..2).map(move |v| (i, v)))
        .map(|(i, v)| acc(i, v))
        .collect();
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for epilogue in &key.epilogue[bias0 as usize..] {
        match *epilogue {
            Epilogue::BiasRow | Epilogue::BiasCol => {
                for i in 0..mr {
                    a.vbroadcastss(ymm15, dword_ptr(r11 + 4 * i as i32))?;
                    a.vaddps(acc(i, 0), acc(i, 0), ymm15)?;
                    a.vaddps(acc(i, 1), acc(i, 1), ymm15)?;
                }
            }
            Epilogue::Residual => unreachable!("checked by DirectConvKey::supports"),
            _ => epilogue_pointwise(a, *epilogue, &all, ymm15, &mut konst)?,
        }
    }
    for i in 0..mr {
        for v in 0..2 {
            let m = rax + (4 * (i * key.n + 8 * v)) as i32;
            a.vmovups(ymmword_ptr(m), acc(i, v))?;
        }
    }
    Ok(())
}
