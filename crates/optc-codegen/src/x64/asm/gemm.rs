//! The AVX2/FMA and AVX-512F SGEMM microkernels assembled with `iced-x86` and put into the
//! Cranelift module with `Module::define_function_bytes` (Cranelift's x86-64 backend lowers only
//! 128-bit vectors).
//!
//! A microkernel computes one `mr x 16` tile (`mr <= 6`): `C[r][j] (+)= sum_k A[r][k] * B[k][j]`,
//! then applies an epilogue chain and stores the tile. [`Isa::Avx2`] keeps 2 ymm accumulators per
//! row; [`Isa::Avx512`] one zmm per row, or two over two panels for an `mr x 32` `wide` tile (see
//! [`assemble_avx512`]). Both ISAs share the signature
//! and the packed A/B layouts, so the driver (`crate::x64`) is the same for both; only
//! [`MicrokernelKey::isa`] differs.
//!
//! System-V ABI, no return value, no callee-saved register touched: `microkernel(a, b, c, kc,
//! lda_bytes, ldc_bytes, nr, bias, res)`, and for the AVX-512 `wide` tiles (`mr x 32`, two
//! panels) a tenth argument `panel_stride` (bytes from the first panel to the second)
//! - `a`: row 0 of the A block (rows `lda_bytes` apart, k contiguous),
//! - `b`: a packed B panel: `kc` rows of 16 floats (64 bytes each), zero-padded columns,
//! - `c`: top-left of the output tile (rows `ldc_bytes` apart),
//! - `kc`: depth (any value, 0 included),
//! - `nr`: valid columns (1..=16) for `partial` kernels (masked loads/stores), else ignored,
//! - `bias`: per-row bias (`bias[r]`) or per-column bias (`bias[j]`) of this tile,
//! - `res`: a residual tile with the same layout as `c`.

use super::epilogue::{epilogue_symbol, Epilogue};
use super::gemm_avx2::assemble_avx2;
use super::gemm_avx512::assemble_avx512;
use iced_x86::code_asm::*;

/// Rows of a microkernel tile.
pub(crate) const MR: usize = 6;
/// Columns of a microkernel tile (= packed B panel width).
pub(crate) const NR: usize = 16;

/// Instruction set of a microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Isa {
    /// AVX2 + FMA3, 256-bit ymm.
    Avx2,
    /// AVX-512F, 512-bit zmm with opmask registers and embedded broadcasts.
    Avx512,
}

/// Which microkernel: ISA, rows, masked columns, accumulate into C, epilogue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct MicrokernelKey {
    pub isa: Isa,
    pub mr: usize,
    /// A is packed: `kc` groups of `mr` floats (k-major), `lda_bytes` ignored.
    pub packed_a: bool,
    /// Two panels (AVX-512): an `mr x 32` tile, the second panel `panel_stride` bytes (a tenth
    /// argument) after the first; with `partial`, `nr` counts the tile's valid columns
    /// (17..=31).
    pub wide: bool,
    /// Only the panel's first 8 columns (AVX2): one ymm accumulator per row. For a last panel
    /// of at most 8 valid columns (e.g. 49 = 3 x 16 + 1), half the work of a full tile.
    pub half: bool,
    pub partial: bool,
    /// Add to C (the partial sums of earlier K blocks) instead of overwriting it.
    pub accumulate: bool,
    /// Stored transposed (AVX2 only, see `assemble_transposed_store` in `gemm_avx2.rs`): for
    /// small N with the roles swapped, the tile's rows are pixels, its 16 columns output channels;
    /// channel `j` goes to `c + j ldc_bytes`, pixel `r` to `+ 4 r`. With `acc`, the sum so far is
    /// read in row layout (rows 64 bytes apart) from the `nr` argument (a pointer here). A residual
    /// (same layout as C) only as the last epilogue step. Not with `half`, `partial` or `BiasRow`.
    pub transposed: bool,
    pub epilogue: Vec<Epilogue>,
}

impl MicrokernelKey {
    pub fn symbol(&self) -> String {
        let mut s = format!(
            "optc_microkernel_{}_{}x{}{}{}{}{}",
            match self.isa {
                Isa::Avx2 => "avx2",
                Isa::Avx512 => "avx512",
            },
            self.mr,
            if self.wide { 32 } else { 16 },
            if self.packed_a { "_pa" } else { "" },
            if self.half { "_h" } else { "" },
            if self.partial { "_p" } else { "" },
            if self.accumulate { "_acc" } else { "" }
        );
        if self.transposed {
            s.push_str("_transposed");
        }
        s.push_str(&epilogue_symbol(&self.epilogue));
        s
    }
}

/// Address of row `r` (0..6) given bases for rows 0-2 and 3-5, the row stride register, and
/// a displacement.
pub(super) fn row(
    r: usize,
    b012: AsmRegister64,
    b345: AsmRegister64,
    st: AsmRegister64,
    d: i32,
) -> AsmMemoryOperand {
    let base = if r < 3 { b012 } else { b345 };
    match r % 3 {
        0 => base + d,
        1 => base + st + d,
        _ => base + st * 2 + d,
    }
}

/// How far ahead (bytes) the k loop prefetches a packed A. Packed A is the constant
/// operand of a conv (its weights, or a Winograd conv's transformed weights): megabytes read
/// once per run, from memory rather than cache, and contiguous across a K block's row tiles
/// (see `packing::derived`). Without the prefetch the loop waited on memory: ResNet-18 took
/// 28.3 ms on an AVX-512 Xeon, 20.0 ms with it (512 bytes ahead: 25.0 ms, 2048: 20.3 ms,
/// 8192: 20.7 ms).
pub(super) const PREFETCH_A: i32 = 4096;

/// The k loop shared by the kernels: `kc` (rcx) steps, 4 at a time then one at a time;
/// `step(a, u)` emits step `u` of a group (B at `rsi + 64 u`, A at `rdi + ka u` or, unpacked,
/// the rows from `rdi`/`r10` at `4 u`). Advances rsi, rdi (and r10 for unpacked A). With
/// packed A, the 4-step groups prefetch A [`PREFETCH_A`] bytes ahead (two lines per group of
/// at most 96 bytes).
pub(super) fn k_loop(
    a: &mut CodeAssembler,
    packed_a: bool,
    ka: i32,
    step: &mut dyn FnMut(&mut CodeAssembler, i32) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut l4 = a.create_label();
    let mut rem = a.create_label();
    let mut l1 = a.create_label();
    let mut done = a.create_label();
    a.mov(rax, rcx)?;
    a.shr(rax, 2)?;
    a.jz(rem)?;
    a.set_label(&mut l4)?;
    for u in 0..4 {
        if packed_a && u % 2 == 0 {
            a.prefetcht0(byte_ptr(rdi + (PREFETCH_A + ka * u)))?;
        }
        step(a, u)?;
    }
    a.add(rsi, 256)?;
    a.add(rdi, 4 * ka)?;
    if !packed_a {
        a.add(r10, 16)?;
    }
    a.dec(rax)?;
    a.jnz(l4)?;
    a.set_label(&mut rem)?;
    a.and(rcx, 3)?;
    a.jz(done)?;
    a.set_label(&mut l1)?;
    step(a, 0)?;
    a.add(rsi, 64)?;
    a.add(rdi, ka)?;
    if !packed_a {
        a.add(r10, 4)?;
    }
    a.dec(rcx)?;
    a.jnz(l1)?;
    a.set_label(&mut done)?;
    Ok(())
}

/// Assemble the microkernel `key` (position independent, no relocations).
pub(crate) fn assemble(key: &MicrokernelKey) -> Result<Vec<u8>, IcedError> {
    match key.isa {
        Isa::Avx2 => assemble_avx2(key),
        Isa::Avx512 => assemble_avx512(key),
    }
}
