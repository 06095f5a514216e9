//! MaxPool output rows (AVX-512, zmm): per output row, the vertical max of the window's rows
//! into a row buffer, 16 floats a step with a masked last vector, then the horizontal max
//! along the buffer, 16 outputs a step (stride 1: unaligned loads; stride 2: the even floats
//! of two vectors by one `vpermt2ps`) with a masked last store.
//!
//! The max is the reference's, `acc = (v > acc || acc is NaN) ? v : acc` (a NaN cell is
//! skipped unless every cell is NaN): `vmaxps acc, v, acc` gives `v > acc ? v : acc` (and
//! `acc` where either is NaN), then the lanes where `acc` was NaN take `v`. The steps run in
//! the order of the Cranelift lowering (`crate::x64::pool`), so the results are the same bits.
//!
//! System-V ABI, no return value: `max_pool_rows(src, row, out, rows)`: output row `r`'s
//! window starts at input row `src + r * sh * pitch * 4` (its `kh` rows, `dh` apart); the
//! vertical max of a row's `pitch` floats goes to `row + left * 4` (the row buffer holds the
//! horizontal padding, `left` floats before, NaN, and slack after: `pitch + left + 32`
//! floats at least); `out + r * ow * 4` receives the row.

use iced_x86::code_asm::*;

use super::registers::zmm;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MaxPoolKey {
    pub kh: usize,
    pub kw: usize,
    pub dh: usize,
    pub dw: usize,
    pub sh: usize,
    /// 1 or 2.
    pub sw: usize,
    /// Floats per input row (the width the vertical pass covers), at least 1.
    pub pitch: usize,
    /// Floats of padding before the vertical maxima in the row buffer.
    pub left: usize,
    /// Outputs per row, at least 1.
    pub ow: usize,
    /// 0, or flat mode: this many output rows whose vertical maxima go side by side into
    /// the buffer (`pitch` floats each), then one horizontal pass along them all (their
    /// windows cover each row's columns exactly: `ow sw = pitch`); `rows` is ignored.
    pub flat_rows: usize,
}

impl MaxPoolKey {
    pub fn symbol(&self) -> String {
        format!(
            "optc_max_pool_avx512_k{}x{}_d{}x{}_s{}x{}_p{}_l{}_o{}_f{}",
            self.kh,
            self.kw,
            self.dh,
            self.dw,
            self.sh,
            self.sw,
            self.pitch,
            self.left,
            self.ow,
            self.flat_rows
        )
    }
}

pub(crate) const MAX_POOL_PARAMS: usize = 4;

/// The index vector of the even floats of two vectors (zmm31).
const EVENS: AsmRegisterZmm = zmm31;

/// `acc = (v > acc || acc is NaN) ? v : acc` (k2 scratch).
fn step(a: &mut CodeAssembler, acc: AsmRegisterZmm, v: AsmRegisterZmm) -> Result<(), IcedError> {
    a.vcmpps(k2, acc, acc, 3)?;
    a.vmaxps(acc, v, acc)?;
    a.vmovaps(acc.k2(), v)
}

/// `body(a, masked)` once per whole vector of `n` floats (a loop on r9, each pointer of
/// `advance` moved by its step after each), then once masked for the last `n % 16`.
fn vectors(
    a: &mut CodeAssembler,
    n: usize,
    advance: &[(AsmRegister64, i32)],
    body: &dyn Fn(&mut CodeAssembler, bool) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    if n >= 16 {
        a.mov(r9, (n / 16) as u64)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        body(a, false)?;
        for &(r, step) in advance {
            a.add(r, step)?;
        }
        a.dec(r9)?;
        a.jnz(top)?;
    }
    if !n.is_multiple_of(16) {
        body(a, true)?;
    }
    Ok(())
}

pub(crate) fn assemble(key: &MaxPoolKey) -> Result<Vec<u8>, IcedError> {
    assert!(key.pitch > 0 && key.ow > 0 && key.kh > 0 && key.kw > 0);
    assert!(
        matches!(key.sw, 1 | 2),
        "max-pool rows with stride {}",
        key.sw
    );
    let mut a = CodeAssembler::new(64)?;
    let evens = a.create_label();
    let pitch_bytes = (key.pitch * 4) as i32;
    // Outputs of one horizontal pass.
    let outputs = if key.flat_rows > 0 {
        key.flat_rows * key.ow
    } else {
        key.ow
    };
    // k1: the last vector of a row buffer (pitch % 16 floats); k3: of a horizontal pass.
    if !key.pitch.is_multiple_of(16) {
        a.mov(eax, (1u32 << (key.pitch % 16)) - 1)?;
        a.kmovw(k1, eax)?;
    }
    if !outputs.is_multiple_of(16) {
        a.mov(eax, (1u32 << (outputs % 16)) - 1)?;
        a.kmovw(k3, eax)?;
    }
    if key.sw == 2 {
        a.vmovdqu32(EVENS, zmmword_ptr(evens))?;
    }
    // Vertical: rax walks the window's first row, r8 the row buffer.
    let vertical = |a: &mut CodeAssembler, masked: bool| -> Result<(), IcedError> {
        let (acc, v) = (zmm(0), zmm(1));
        if masked {
            a.vmovups(acc.k1().z(), zmmword_ptr(rax))?;
        } else {
            a.vmovups(acc, zmmword_ptr(rax))?;
        }
        for kh in 1..key.kh {
            let off = (kh * key.dh) as i32 * pitch_bytes;
            if masked {
                a.vmovups(v.k1().z(), zmmword_ptr(rax + off))?;
            } else {
                a.vmovups(v, zmmword_ptr(rax + off))?;
            }
            step(a, acc, v)?;
        }
        if masked {
            a.vmovups(zmmword_ptr(r8).k1(), acc)
        } else {
            a.vmovups(zmmword_ptr(r8), acc)
        }
    };
    // Horizontal: r8 walks the row buffer (16 sw floats a step), r10 the output row.
    let horizontal = |a: &mut CodeAssembler, masked: bool| -> Result<(), IcedError> {
        let (acc, v, hi) = (zmm(0), zmm(1), zmm(2));
        for kw in 0..key.kw {
            let off = (kw * key.dw * 4) as i32;
            let dst = if kw == 0 { acc } else { v };
            if key.sw == 1 {
                a.vmovups(dst, zmmword_ptr(r8 + off))?;
            } else {
                a.vmovups(dst, zmmword_ptr(r8 + off))?;
                a.vmovups(hi, zmmword_ptr(r8 + off + 64))?;
                a.vpermt2ps(dst, EVENS, hi)?;
            }
            if kw > 0 {
                step(a, acc, v)?;
            }
        }
        if masked {
            a.vmovups(zmmword_ptr(r10).k3(), acc)
        } else {
            a.vmovups(zmmword_ptr(r10), acc)
        }
    };
    let step = (64 * key.sw) as i32;
    let mut done = a.create_label();
    if key.flat_rows > 0 {
        // Each output row's vertical maxima at r11 (moving on by a row), then one pass.
        a.mov(rcx, key.flat_rows as u64)?;
        a.mov(r11, rsi)?;
        let mut row = a.create_label();
        a.set_label(&mut row)?;
        a.mov(rax, rdi)?;
        a.mov(r8, r11)?;
        vectors(&mut a, key.pitch, &[(rax, 64), (r8, 64)], &vertical)?;
        a.add(rdi, (key.sh as i32) * pitch_bytes)?;
        a.add(r11, pitch_bytes)?;
        a.dec(rcx)?;
        a.jnz(row)?;
        a.mov(r8, rsi)?;
        a.mov(r10, rdx)?;
        vectors(&mut a, outputs, &[(r8, step), (r10, 64)], &horizontal)?;
    } else {
        a.test(rcx, rcx)?;
        a.jz(done)?;
        let mut row = a.create_label();
        a.set_label(&mut row)?;
        a.mov(rax, rdi)?;
        a.lea(r8, rsi + (key.left * 4) as i32)?;
        vectors(&mut a, key.pitch, &[(rax, 64), (r8, 64)], &vertical)?;
        a.mov(r8, rsi)?;
        a.mov(r10, rdx)?;
        vectors(&mut a, key.ow, &[(r8, step), (r10, 64)], &horizontal)?;
        a.add(rdi, (key.sh as i32) * pitch_bytes)?;
        a.add(rdx, (key.ow * 4) as i32)?;
        a.dec(rcx)?;
        a.jnz(row)?;
    }
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    if key.sw == 2 {
        let mut evens = evens;
        a.set_label(&mut evens)?;
        let idx: Vec<u32> = (0..16).map(|i| 2 * i).collect();
        a.dd(&idx)?;
    }
    a.assemble(0)
}
