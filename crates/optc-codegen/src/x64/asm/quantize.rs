//! AVX2 routines that quantize the f32 activations of an int8 contraction into the operand
//! layouts of the int8 microkernels (`int8.rs`), exactly as `optc_ir::quantized` defines it:
//! `q = clamp(round_half_even(x * inverse) + zero, 0, 255)` in f32 (`vmulps`, `vroundps`,
//! `vaddps`, then `vmaxps(q, 0)`, which turns a NaN into 0, and `vminps(q, 255)`), and the
//! dynamic range `[min(0, min x), max(0, max x)]` ignoring NaNs (`vminps(x, lo)` keeps `lo`
//! when `x` is NaN).
//!
//! The parameters block every quantizing routine reads (16 bytes): `inverse` (f32), `zero` (as
//! f32), `zero` (as u32), `scale` (f32).

use super::registers::ymm;
use iced_x86::code_asm::*;

/// Parameter block offsets.
pub(crate) const PARAM_INVERSE: i32 = 0;
pub(crate) const PARAM_ZERO_F32: i32 = 4;
pub(crate) const PARAM_ZERO_U32: i32 = 8;
pub(crate) const PARAM_SCALE: i32 = 12;

/// A padded plane of dwords made from up to `channels` input planes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PlaneKey {
    /// 4: the input planes are f32, quantized here; 1: u8, already quantized (only moved).
    pub source_bytes: usize,
    /// 1 (u8: 4 channels per dword) or 2 (u16: 2 channels per dword).
    pub element_bytes: usize,
    /// Input planes packed into this dword plane (1 ..= 4 / element_bytes).
    pub channels: usize,
    pub h: usize,
    pub w: usize,
    pub ph: usize,
    pub pw: usize,
    pub hp: usize,
    pub wp: usize,
    /// The source planes' extents: `(h, w)`, or larger for a subsampled source.
    pub source: (usize, usize),
    /// Every `step`-th source row and column (`(1, 1)`, or a 1x1 stride-s conv's strides,
    /// columns 1 or 2, f32 sources only): pixel `(y, x)` of the plane is source pixel
    /// `(step.0 y, step.1 x)`.
    pub step: (usize, usize),
}

/// Which quantizing routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum QuantizeKey {
    /// `range(x, n, out)`: `out[0] = min(0, min x)`, `out[1] = max(0, max x)` over `n` floats,
    /// NaNs ignored.
    Range,
    /// `rows(x, dst, rows, ldd, params)`: rows of `k` contiguous floats into rows of
    /// `element_bytes`-byte elements `ldd` bytes apart; writes `k` rounded up to 8 elements
    /// (the ones past `k` hold the zero point). Elements of 4 bytes are `q - zero` as f32
    /// (exact integers; 0 past `k`).
    Rows { element_bytes: usize, k: usize },
    /// `plane(x, dst, params)`: input planes `h x w` (channel `i` at `x + i * h * w *
    /// source_bytes`) into one zero-padded `hp x wp` plane of dwords: element `i` of a dword
    /// (byte or u16) is channel `i`, the padding is the zero point in every element, missing
    /// channels are 0. f32 inputs are quantized, u8 ones copied.
    Plane(PlaneKey),
}

impl QuantizeKey {
    pub fn symbol(&self) -> String {
        match self {
            QuantizeKey::Range => "optc_quantize_range".to_string(),
            QuantizeKey::Rows {
                element_bytes: 4,
                k,
            } => {
                format!("optc_quantize_rows_centered_f32_k{k}")
            }
            QuantizeKey::Rows { element_bytes, k } => {
                format!("optc_quantize_rows_u{}_k{k}", 8 * element_bytes)
            }
            QuantizeKey::Plane(p) => format!(
                "optc_quantize_plane{}_u{}_c{}_{}x{}_pad{}x{}_to{}x{}{}",
                if p.source_bytes == 1 { "_from_u8" } else { "" },
                8 * p.element_bytes,
                p.channels,
                p.h,
                p.w,
                p.ph,
                p.pw,
                p.hp,
                p.wp,
                if p.step == (1, 1) {
                    String::new()
                } else {
                    format!(
                        "_of{}x{}_step{}x{}",
                        p.source.0, p.source.1, p.step.0, p.step.1
                    )
                }
            ),
        }
    }
    pub fn nparams(&self) -> usize {
        match self {
            QuantizeKey::Range | QuantizeKey::Plane(_) => 3,
            QuantizeKey::Rows { .. } => 5,
        }
    }
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        match self {
            QuantizeKey::Range => assemble_range(),
            QuantizeKey::Rows { element_bytes, k } => assemble_rows(*element_bytes, *k),
            QuantizeKey::Plane(p) => assemble_plane(p),
        }
    }
}

const F255: u32 = 0x437f_0000;

/// Constants of the quantizing routines: ymm13 = inverse, ymm14 = zero (f32), ymm15 = 255,
/// ymm12 = 0.
fn load_params(
    a: &mut CodeAssembler,
    params: AsmRegister64,
    c255: CodeLabel,
) -> Result<(), IcedError> {
    a.vbroadcastss(ymm13, dword_ptr(params + PARAM_INVERSE))?;
    a.vbroadcastss(ymm14, dword_ptr(params + PARAM_ZERO_F32))?;
    a.vbroadcastss(ymm15, dword_ptr(c255))?;
    a.vxorps(ymm12, ymm12, ymm12)
}

/// `v` (8 floats) to 8 i32 in 0..=255 (see the module docs).
fn quantize(a: &mut CodeAssembler, v: AsmRegisterYmm) -> Result<(), IcedError> {
    a.vmulps(v, v, ymm13)?;
    a.vroundps(v, v, 0)?;
    a.vaddps(v, v, ymm14)?;
    a.vmaxps(v, v, ymm12)?;
    a.vminps(v, v, ymm15)?;
    a.vcvttps2dq(v, v)
}

/// The lane mask table: 8 x all-ones, then 8 x 0 (the first `n` lanes from `tab + 4 (8 - n)`).
fn lane_table(a: &mut CodeAssembler, tab: &mut CodeLabel) -> Result<(), IcedError> {
    a.set_label(tab)?;
    let mut t = [0u32; 16];
    t[..8].fill(u32::MAX);
    a.dd(&t)
}

fn assemble_range() -> Result<Vec<u8>, IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let mut tab = a.create_label();
    let mut l16 = a.create_label();
    let mut l8 = a.create_label();
    let mut tail = a.create_label();
    let mut reduce = a.create_label();
    // ymm0/1: minima, ymm2/3: maxima.
    for r in 0..4 {
        a.vxorps(ymm(r), ymm(r), ymm(r))?;
    }
    a.mov(rax, rsi)?;
    a.shr(rax, 4)?;
    a.jz(l8)?;
    a.set_label(&mut l16)?;
    a.vmovups(ymm4, ymmword_ptr(rdi))?;
    a.vmovups(ymm5, ymmword_ptr(rdi + 32))?;
    a.vminps(ymm0, ymm4, ymm0)?;
    a.vminps(ymm1, ymm5, ymm1)?;
    a.vmaxps(ymm2, ymm4, ymm2)?;
    a.vmaxps(ymm3, ymm5, ymm3)?;
    a.add(rdi, 64)?;
    a.dec(rax)?;
    a.jnz(l16)?;
    a.set_label(&mut l8)?;
    a.mov(rax, rsi)?;
    a.and(rax, 8)?;
    a.jz(tail)?;
    a.vmovups(ymm4, ymmword_ptr(rdi))?;
    a.vminps(ymm0, ymm4, ymm0)?;
    a.vmaxps(ymm2, ymm4, ymm2)?;
    a.add(rdi, 32)?;
    a.set_label(&mut tail)?;
    a.mov(rax, rsi)?;
    a.and(rax, 7)?;
    a.jz(reduce)?;
    // Masked-out lanes load 0.0, which changes neither extreme (lo <= 0 <= hi).
    a.mov(rcx, 8i64)?;
    a.sub(rcx, rax)?;
    a.lea(r8, ptr(tab))?;
    a.vmovdqu(ymm6, ymmword_ptr(r8 + rcx * 4))?;
    a.vmaskmovps(ymm4, ymm6, ymmword_ptr(rdi))?;
    a.vminps(ymm0, ymm4, ymm0)?;
    a.vmaxps(ymm2, ymm4, ymm2)?;
    a.set_label(&mut reduce)?;
    // No NaN is left: any order of the reduction gives the same extremes.
    a.vminps(ymm0, ymm0, ymm1)?;
    a.vmaxps(ymm2, ymm2, ymm3)?;
    a.vextractf128(xmm1, ymm0, 1)?;
    a.vminps(xmm0, xmm0, xmm1)?;
    a.vextractf128(xmm3, ymm2, 1)?;
    a.vmaxps(xmm2, xmm2, xmm3)?;
    for imm in [0x4e, 0xb1] {
        a.vpermilps(xmm1, xmm0, imm)?;
        a.vminps(xmm0, xmm0, xmm1)?;
        a.vpermilps(xmm3, xmm2, imm)?;
        a.vmaxps(xmm2, xmm2, xmm3)?;
    }
    a.vmovss(dword_ptr(rdx), xmm0)?;
    a.vmovss(dword_ptr(rdx + 4), xmm2)?;
    a.vzeroupper()?;
    a.ret()?;
    lane_table(&mut a, &mut tab)?;
    a.assemble(0)
}

fn assemble_rows(eb: usize, k: usize) -> Result<Vec<u8>, IcedError> {
    assert!(eb == 1 || eb == 2 || eb == 4);
    let mut a = CodeAssembler::new(64)?;
    let mut tab = a.create_label();
    let mut c255 = a.create_label();
    let mut order = a.create_label();
    let mut row_loop = a.create_label();
    let mut end = a.create_label();
    load_params(&mut a, r8, c255)?;
    // Blocks of 32 (u8) or 16 (u16) elements, then chunks of 8, then the masked tail (f32:
    // chunks only).
    let per_block = if eb == 4 { usize::MAX } else { 32 / eb };
    let blocks = k / per_block;
    let (chunks, tail) = (k % per_block / 8, k % 8);
    // (f32: a loop of chunks.)
    let chunk_loop = eb == 4 && chunks > 0;
    if tail > 0 {
        a.lea(rax, ptr(tab))?;
        a.vmovdqu(ymm11, ymmword_ptr(rax + 4 * (8 - tail) as i32))?;
    }
    if blocks > 0 && eb == 1 {
        a.vmovdqu(ymm10, ymmword_ptr(order))?;
    }
    // A block at r9 to r10: quantized vectors packed to u16 then u8 (within 128-bit lanes),
    // then the dwords (u8) or qwords (u16) put back in order.
    let block = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let n = per_block / 8;
        for i in 0..n {
            a.vmovups(ymm(i), ymmword_ptr(r9 + 32 * i as i32))?;
            quantize(a, ymm(i))?;
        }
        a.vpackusdw(ymm0, ymm0, ymm1)?;
        if eb == 1 {
            a.vpackusdw(ymm2, ymm2, ymm3)?;
            a.vpackuswb(ymm0, ymm0, ymm2)?;
            a.vpermd(ymm0, ymm10, ymm0)?;
        } else {
            a.vpermq(ymm0, ymm0, 0xd8)?;
        }
        a.vmovdqu(ymmword_ptr(r10), ymm0)
    };
    // 8 floats at r9 (masked: the tail) to 8 elements at r10.
    let chunk = |a: &mut CodeAssembler, masked: bool| -> Result<(), IcedError> {
        if masked {
            a.vmaskmovps(ymm0, ymm11, ymmword_ptr(r9))?;
        } else {
            a.vmovups(ymm0, ymmword_ptr(r9))?;
        }
        if eb == 4 {
            // q - zero, still in f32 (no conversion).
            a.vmulps(ymm0, ymm0, ymm13)?;
            a.vroundps(ymm0, ymm0, 0)?;
            a.vaddps(ymm0, ymm0, ymm14)?;
            a.vmaxps(ymm0, ymm0, ymm12)?;
            a.vminps(ymm0, ymm0, ymm15)?;
            a.vsubps(ymm0, ymm0, ymm14)?;
            return a.vmovups(ymmword_ptr(r10), ymm0);
        }
        quantize(a, ymm0)?;
        a.vextracti128(xmm1, ymm0, 1)?;
        a.vpackusdw(xmm0, xmm0, xmm1)?;
        if eb == 1 {
            a.vpackuswb(xmm0, xmm0, xmm0)?;
            a.vmovq(qword_ptr(r10), xmm0)
        } else {
            a.vmovdqu(xmmword_ptr(r10), xmm0)
        }
    };
    a.test(rdx, rdx)?;
    a.jz(end)?;
    a.set_label(&mut row_loop)?;
    a.mov(r9, rdi)?;
    a.mov(r10, rsi)?;
    if blocks > 0 {
        let mut l = a.create_label();
        a.mov(rax, blocks as i64)?;
        a.set_label(&mut l)?;
        block(&mut a)?;
        a.add(r9, (4 * per_block) as i32)?;
        a.add(r10, 32)?;
        a.dec(rax)?;
        a.jnz(l)?;
    }
    if chunk_loop {
        let mut l = a.create_label();
        a.mov(rax, chunks as i64)?;
        a.set_label(&mut l)?;
        chunk(&mut a, false)?;
        a.add(r9, 32)?;
        a.add(r10, 32)?;
        a.dec(rax)?;
        a.jnz(l)?;
    } else {
        for _ in 0..chunks {
            chunk(&mut a, false)?;
            a.add(r9, 32)?;
            a.add(r10, 8 * eb as i32)?;
        }
    }
    if tail > 0 {
        chunk(&mut a, true)?;
    }
    a.add(rdi, (4 * k) as i32)?;
    a.add(rsi, rcx)?;
    a.dec(rdx)?;
    a.jnz(row_loop)?;
    a.set_label(&mut end)?;
    a.vzeroupper()?;
    a.ret()?;
    lane_table(&mut a, &mut tab)?;
    a.set_label(&mut order)?;
    a.dd(&[0, 4, 1, 5, 2, 6, 3, 7])?;
    a.set_label(&mut c255)?;
    a.dd(&[F255])?;
    a.assemble(0)
}

/// Store the border pattern (eax, ymm11) to `n` dwords at `base + off`; clobbers r9, r10.
fn fill(a: &mut CodeAssembler, base: AsmRegister64, off: usize, n: usize) -> Result<(), IcedError> {
    let off = off as i32;
    if n >= 64 {
        let mut l = a.create_label();
        a.lea(r9, base + off)?;
        a.mov(r10, (n / 8) as i64)?;
        a.set_label(&mut l)?;
        a.vmovdqu(ymmword_ptr(r9), ymm11)?;
        a.add(r9, 32)?;
        a.dec(r10)?;
        a.jnz(l)?;
        for i in 0..n % 8 {
            a.mov(dword_ptr(r9 + 4 * i as i32), eax)?;
        }
        return Ok(());
    }
    for i in 0..n / 8 {
        a.vmovdqu(ymmword_ptr(base + (off + 32 * i as i32)), ymm11)?;
    }
    for i in n / 8 * 8..n {
        a.mov(dword_ptr(base + (off + 4 * i as i32)), eax)?;
    }
    Ok(())
}

fn assemble_plane(k: &PlaneKey) -> Result<Vec<u8>, IcedError> {
    let eb = k.element_bytes;
    let sb = k.source_bytes;
    assert!(eb == 1 || eb == 2);
    assert!(sb == 1 || sb == 4);
    assert!((1..=4 / eb).contains(&k.channels));
    let (step_h, step_w) = k.step;
    assert!(step_h >= 1 && (step_w == 1 || step_w == 2));
    assert!(
        k.step == (1, 1) || sb == 4,
        "only f32 sources are subsampled"
    );
    // (Every plane pixel has its source pixel.)
    assert!(k.source.0 > (k.h.max(1) - 1) * step_h && k.source.1 > (k.w.max(1) - 1) * step_w);
    let mut a = CodeAssembler::new(64)?;
    let mut tab = a.create_label();
    let mut c255 = a.create_label();
    let mut row_loop = a.create_label();
    let plane = (k.source.0 * k.source.1 * sb) as i32;
    load_params(&mut a, rdx, c255)?;
    // The border pattern: the zero point in every element of a dword.
    a.mov(eax, dword_ptr(rdx + PARAM_ZERO_U32))?;
    a.imul_3(eax, eax, if eb == 1 { 0x0101_0101 } else { 0x0001_0001 })?;
    a.vmovd(xmm11, eax)?;
    a.vpbroadcastd(ymm11, xmm11)?;
    // Chunks of 8 pixels whose source lies inside the row (every other column: 16 floats),
    // then the tail (at most 8 pixels).
    let full = if step_w == 1 {
        k.w / 8
    } else {
        k.source.1 / 16
    };
    let tail = k.w - 8 * full;
    // Masks of the tail: ymm10 its pixels' lanes (the loads of a contiguous source, and the
    // stores); every other column: ymm8 and ymm9 the first and second 8 source floats.
    let lanes = |a: &mut CodeAssembler, r: AsmRegisterYmm, n: usize| {
        a.vmovdqu(r, ymmword_ptr(rcx + 4 * (8 - n) as i32))
    };
    if tail > 0 {
        a.lea(rcx, ptr(tab))?;
        lanes(&mut a, ymm10, tail)?;
        if step_w == 2 {
            let n = 2 * tail - 1;
            lanes(&mut a, ymm8, n.min(8))?;
            lanes(&mut a, ymm9, n.saturating_sub(8))?;
        }
    }
    // 8 pixels of every channel at r8 (masked: the tail) into 8 dwords at r9 (r9 is saved
    // around nothing: chunks run between fills).
    let chunk = |a: &mut CodeAssembler, masked: bool| -> Result<(), IcedError> {
        if sb == 1 && masked {
            // The tail's bytes one pixel at a time (a wider load could pass the input's
            // end): each dword built in r9d.
            for i in 0..tail as i32 {
                a.xor(r9d, r9d)?;
                for c in 0..k.channels {
                    a.movzx(r10d, byte_ptr(r8 + (plane * c as i32 + i)))?;
                    if c > 0 {
                        a.shl(r10d, (8 * eb * c) as u32)?;
                    }
                    a.or(r9d, r10d)?;
                }
                a.mov(dword_ptr(r11 + 4 * i), r9d)?;
            }
            return Ok(());
        }
        for c in 0..k.channels {
            if sb == 1 {
                // 8 bytes widened to 8 dwords: already quantized.
                a.vpmovzxbd(ymm(c), qword_ptr(r8 + plane * c as i32))?;
                if c > 0 {
                    a.vpslld(ymm(c), ymm(c), (8 * eb * c) as i32)?;
                    a.vpor(ymm0, ymm0, ymm(c))?;
                }
                continue;
            }
            let m = ymmword_ptr(r8 + plane * c as i32);
            if step_w == 2 {
                // 16 floats; the even ones (per 128-bit lane of the two registers by
                // `vshufps`, then their qwords in order by `vpermq`) are the 8 pixels.
                let m2 = ymmword_ptr(r8 + (plane * c as i32 + 32));
                let odd = ymm(4 + c);
                if masked {
                    a.vmaskmovps(ymm(c), ymm8, m)?;
                    a.vmaskmovps(odd, ymm9, m2)?;
                } else {
                    a.vmovups(ymm(c), m)?;
                    a.vmovups(odd, m2)?;
                }
                a.vshufps(ymm(c), ymm(c), odd, 0x88)?;
                a.vpermq(ymm(c), ymm(c), 0xd8)?;
            } else if masked {
                a.vmaskmovps(ymm(c), ymm10, m)?;
            } else {
                a.vmovups(ymm(c), m)?;
            }
            quantize(a, ymm(c))?;
            if c > 0 {
                a.vpslld(ymm(c), ymm(c), (8 * eb * c) as i32)?;
                a.vpor(ymm0, ymm0, ymm(c))?;
            }
        }
        if masked {
            a.vpmaskmovd(ymmword_ptr(r11), ymm10, ymm0)
        } else {
            a.vmovdqu(ymmword_ptr(r11), ymm0)
        }
    };
    // Top border rows.
    fill(&mut a, rsi, 0, k.ph * k.wp)?;
    if k.h > 0 && k.w > 0 {
        a.add(rsi, (4 * k.ph * k.wp) as i32)?;
        a.mov(rcx, k.h as i64)?;
        a.set_label(&mut row_loop)?;
        fill(&mut a, rsi, 0, k.pw)?;
        a.mov(r8, rdi)?;
        a.lea(r11, rsi + (4 * k.pw) as i32)?;
        if full > 0 {
            let mut l = a.create_label();
            a.mov(rdx, full as i64)?;
            a.set_label(&mut l)?;
            chunk(&mut a, false)?;
            a.add(r8, (8 * sb * step_w) as i32)?;
            a.add(r11, 32)?;
            a.dec(rdx)?;
            a.jnz(l)?;
        }
        if tail > 0 {
            chunk(&mut a, true)?;
        }
        fill(&mut a, rsi, 4 * (k.pw + k.w), k.wp - k.pw - k.w)?;
        a.add(rdi, (sb * k.source.1 * step_h) as i32)?;
        a.add(rsi, (4 * k.wp) as i32)?;
        a.dec(rcx)?;
        a.jnz(row_loop)?;
        fill(&mut a, rsi, 0, (k.hp - k.ph - k.h) * k.wp)?;
    } else {
        fill(&mut a, rsi, 4 * k.ph * k.wp, (k.hp - k.ph) * k.wp)?;
    }
    a.vzeroupper()?;
    a.ret()?;
    lane_table(&mut a, &mut tab)?;
    a.set_label(&mut c255)?;
    a.dd(&[F255])?;
    a.assemble(0)
}
