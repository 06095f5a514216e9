//! The int8 microkernels of `QuantizedMatMul` / `QuantizedConv` (see `optc_ir::quantized` for
//! the exact semantics they reproduce): one `mr x 16` tile of i32 sums of u8 activations times
//! s8 weights, then either the i32 partial sums stored for the next K block, or the
//! dequantizing epilogue `f32(acc) * scale[c] (+ bias[c])` and the fused steps, stored as f32.
//!
//! K is consumed in groups of 4: a packed panel row holds, per column, the 4 operands of one
//! group, and the broadcast operand of a tile row is one dword (4 bytes) or two (8 bytes).
//! Three ways to sum the products ([`Scheme`]):
//!
//! - [`Scheme::BytePairs`] (AVX2): `vpmaddubsw` multiplies u8 by s8 and adds each PAIR of
//!   products into an s16 that SATURATES, then `vpmaddwd` by ones widens the pair sums to i32
//!   and `vpaddd` accumulates. Exact only when no pair of weights of one output channel can
//!   overflow s16 with u8 activations up to 255 (see `crate::x64::int8::pairs_never_saturate`);
//!   the plan proves it per layer at compile time.
//! - [`Scheme::WordPairs`] (AVX2): both operands widened to 16 bits at packing time, `vpmaddwd`
//!   sums pairs into i32 without any saturation, `vpaddd` accumulates. Exact for every weight;
//!   twice the operand bytes and, measured on Zen 3, 70-85% of the `BytePairs` rate.
//! - [`Scheme::DotProduct`] (AVX-512 VNNI, `x86_64-avx512`): `vpdpbusd` adds the 4 u8 x s8
//!   products of a dword into the i32 lane without intermediate saturation: exact for every
//!   weight, the `BytePairs` layout.
//! - [`Scheme::Tiles`] (AMX-INT8, JIT on hosts that have it): tile registers, 16 x 16 x 64
//!   multiply-adds per instruction, exact; the `DotProduct` panels, a conv's weights in
//!   64-byte rows, tiles of up to 16 rows (`int8_amx.rs`).
//!
//! Operand layouts, per K group `g` (`[16]` = the 16 columns of a panel):
//! - packed panel (`b`): `BytePairs`/`DotProduct` `[g][16][4 x u8|s8]` (64 bytes);
//!   `WordPairs` `[g][pair 0..2][16][2 x s16|u16]` (128 bytes: pair 0 is k = 4g, 4g+1).
//! - broadcast operand (`a`), row `r`: `BytePairs`/`DotProduct` 4 bytes, `WordPairs` 8 bytes
//!   (two dwords, pair 0 then pair 1); for [`Contraction::MatMul`] in place in rows `lda` bytes
//!   apart, for [`Contraction::Conv`] packed at compile time as `[g][mr][4|8 bytes]`.
//!
//! System-V ABI, no return value, no callee-saved register touched:
//! `kernel(a, b, c, groups, lda, ldc, nr, offset, scale, bias, res)`
//! - `groups`: K groups of this block (any value, 0 included), `lda`: matmul row stride (an
//!   `unpacked` conv's plane stride), `ldc`: output row stride, bytes,
//! - `nr`: valid columns (1..=16) of `partial` kernels,
//! - `offset`: i32 per channel of the tile (`-xz * sum of the channel's weights`: the zero-point
//!   correction; the starting value of a `first` block), padded to whole tiles,
//! - `scale`: f32 per channel (`xs * ws[c]`), padded to whole tiles; `bias`: f32 per channel
//!   (the op's bias, or the broadcast operand of a fused bias step); `res`: a residual tile
//!   laid out like `c`.
//!
//! Channels are the columns of a matmul tile and the rows of a conv tile.

use super::epilogue::{epilogue_symbol, Epilogue};
use super::gemm::PREFETCH_A;
use super::int8_amx::assemble_amx;
use super::int8_avx2::assemble_avx2;
use super::int8_pixels::{assemble_pixels, ColumnSkips};
use super::int8_vnni::assemble_vnni;
use iced_x86::code_asm::{byte_ptr, r10, rax, rcx, rdi, rsi, CodeAssembler, CodeLabel};
use iced_x86::{BlockEncoderOptions, IcedError};
use optc_ir::quantized::QuantParams;

/// How the kernel sums u8 x s8 products (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    BytePairs,
    WordPairs,
    DotProduct,
    Tiles,
}

impl Scheme {
    /// The word naming the scheme in symbols and plans.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::BytePairs => "bytepairs",
            Scheme::WordPairs => "wordpairs",
            Scheme::DotProduct => "vnni",
            Scheme::Tiles => "amx",
        }
    }
    /// Bytes of one K group of a packed panel row of 16 columns.
    pub fn panel_group_bytes(self) -> usize {
        match self {
            Scheme::WordPairs => 128,
            Scheme::BytePairs | Scheme::DotProduct | Scheme::Tiles => 64,
        }
    }
    /// Bytes of one K group of one row of the broadcast operand.
    pub fn row_group_bytes(self) -> usize {
        self.panel_group_bytes() / 16
    }
    /// Bytes per operand element (activations as u8 or u16).
    pub fn element_bytes(self) -> usize {
        self.row_group_bytes() / 4
    }
}

/// Which contraction the tile belongs to: it fixes which operand is broadcast and where the
/// channels are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Contraction {
    /// `a` = quantized activation rows in place (`lda` apart), `b` = weight panels packed at
    /// compile time; channels along columns.
    MatMul,
    /// `a` = weight tiles packed at compile time, `b` = patch panels packed per K block;
    /// channels along rows.
    Conv,
    /// A conv with the roles swapped (VNNI, `int8_pixels.rs`): `a` = the quantized dword
    /// planes in place (rows are output pixels of one output row, `row_step` bytes apart),
    /// `b` = weight panels of 16 output channels, `panels` of them in a tile; channels along
    /// columns, stored transposed (`[channel][pixel]`).
    /// `skips`: the kernel columns a tile at an edge of the output row leaves out.
    ConvPixels {
        panels: usize,
        row_step: usize,
        skips: ColumnSkips,
    },
}

/// The end of the last K block: dequantize and apply the fused steps.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Dequantize {
    /// Add the op's bias (`bias[c]`) after the scale.
    pub bias: bool,
    /// Fused steps after that: `Relu`, `Clip`, `Residual`, one `BiasRow`/`BiasCol` (a
    /// broadcast add reading `bias`) when the op has no bias, and (VNNI and AMX kernels)
    /// `FakeQuantize`, a QDQ model's requantization.
    pub steps: Vec<Epilogue>,
    /// Store u8, quantized after the steps (VNNI conv kernels), instead of f32.
    pub quantize: Option<QuantizeStore>,
}

/// A tile store of u8: `clamp(round_half_even(y * inverse) + zero, 0, 255)` in f32 (a NaN
/// gives 0), as `optc_ir::QuantParams::quantize`; f32 bit patterns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct QuantizeStore {
    pub inverse: u32,
    pub zero: u32,
}

impl QuantizeStore {
    /// The store quantizing with `p` (its f32 reciprocal and zero point).
    pub fn of(p: QuantParams) -> QuantizeStore {
        QuantizeStore {
            inverse: p.inverse().to_bits(),
            zero: (p.zero as f32).to_bits(),
        }
    }
}

/// Which int8 microkernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Int8Key {
    pub scheme: Scheme,
    pub contraction: Contraction,
    pub mr: usize,
    /// Only `nr` of the 16 columns are valid (masked loads and stores).
    pub partial: bool,
    /// Conv only: `b` is not packed but the quantized input itself (1x1 stride-1 unpadded
    /// convs): the dword slots of a K group are whole planes apart, `lda` bytes (a
    /// `WordPairs` group's two slots too).
    pub unpacked: bool,
    /// The first K block: start from `offset` (else from the i32 partial sums in `c`).
    pub first: bool,
    /// The last K block: dequantize and store f32 (else store the i32 partial sums).
    pub last: Option<Dequantize>,
}

impl Int8Key {
    pub fn symbol(&self) -> String {
        let mut s = format!(
            "optc_int8_{}_{}_{}x{}{}{}",
            self.scheme.name(),
            match self.contraction {
                Contraction::MatMul => "matmul",
                Contraction::Conv => "conv",
                Contraction::ConvPixels { .. } => "conv_pixels",
            },
            self.mr,
            16 * self.columns(),
            if self.partial { "_p" } else { "" },
            if self.first { "" } else { "_acc" },
        );
        if self.unpacked {
            s.push_str("_unpacked");
        }
        if let Contraction::ConvPixels {
            row_step, skips, ..
        } = self.contraction
        {
            s.push_str(&format!("_rows{row_step}B{}", skips.symbol()));
        }
        match &self.last {
            None => s.push_str("_partial_sums"),
            Some(d) => {
                s.push_str("_dequantize");
                if d.bias {
                    s.push_str("_bias");
                }
                s.push_str(&epilogue_symbol(&d.steps));
                if let Some(q) = d.quantize {
                    s.push_str(&format!("_to_u8_{:08x}_{:08x}", q.inverse, q.zero));
                }
            }
        }
        s
    }

    /// Whether channels run along the tile's rows.
    pub fn channel_rows(&self) -> bool {
        self.contraction == Contraction::Conv
    }

    /// 16-column panels of the tile.
    pub fn columns(&self) -> usize {
        match self.contraction {
            Contraction::ConvPixels { panels, .. } => panels,
            _ => 1,
        }
    }
}

/// Bytes every int8 kernel is aligned to in the module (see [`assemble_loop_aligned`]).
pub(crate) const INT8_ALIGN: u64 = 64;

/// Assemble `build(pad)` with the NOP padding `pad` that starts its k loop (the returned
/// label) on a 64-byte boundary of the kernel (itself 64-byte aligned): measured on Zen 3,
/// the 6x16 `BytePairs` kernel runs 20-25% slower at some loop placements.
/// A conv's packed weights (at `rdi`) stream from memory: the k loop prefetches them
/// ahead, as the f32 microkernels do ([`PREFETCH_A`]), every line of an iteration's `bytes`.
fn prefetch_weights(a: &mut CodeAssembler, bytes: i32) -> Result<(), IcedError> {
    for line in 0..(bytes as usize).div_ceil(64) as i32 {
        a.prefetcht0(byte_ptr(rdi + (PREFETCH_A + 64 * line)))?;
    }
    Ok(())
}

/// How the AVX2 and VNNI kernels' operands advance per K group: the broadcast operand `ga`
/// bytes (a conv's packed weights, prefetched; a matmul's rows at rdi and r10), the panel
/// `gb` (not an unpacked conv's planes: its groups move rsi themselves).
pub(super) struct PairLayout {
    pub matmul: bool,
    pub unpacked: bool,
    pub ga: i32,
    pub gb: i32,
}

impl PairLayout {
    /// One iteration of their k loop: K groups 0 and 1 (`group(a, u)`), then the advance.
    pub fn pair(
        &self,
        a: &mut CodeAssembler,
        group: &dyn Fn(&mut CodeAssembler, i32) -> Result<(), IcedError>,
    ) -> Result<(), IcedError> {
        if !self.matmul {
            prefetch_weights(a, 2 * self.ga)?;
        }
        group(a, 0)?;
        group(a, 1)?;
        if !self.unpacked {
            a.add(rsi, 2 * self.gb)?;
        }
        a.add(rdi, 2 * self.ga)?;
        if self.matmul {
            a.add(r10, 2 * self.ga)?;
        }
        Ok(())
    }

    /// The whole k loop ([`group_pairs`]): [`PairLayout::pair`] per iteration, then group 0
    /// for an odd count. Returns the loop's label.
    pub fn k_loop(
        &self,
        a: &mut CodeAssembler,
        pad: usize,
        group: &dyn Fn(&mut CodeAssembler, i32) -> Result<(), IcedError>,
    ) -> Result<CodeLabel, IcedError> {
        group_pairs(a, pad, &mut |a| self.pair(a, group), &mut |a| group(a, 0))
    }
}

/// The k loop of the dword-scheme kernels over `rcx` K groups: `pair` (both groups of an
/// iteration and the pointers' advance) `rcx / 2` times, counted in rax, after `pad` bytes of
/// NOPs, then `one` (a group) for an odd `rcx`. Returns the loop's label (see
/// [`assemble_loop_aligned`]).
pub(super) fn group_pairs(
    a: &mut CodeAssembler,
    pad: usize,
    pair: &mut dyn FnMut(&mut CodeAssembler) -> Result<(), IcedError>,
    one: &mut dyn FnMut(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<CodeLabel, IcedError> {
    let mut top = a.create_label();
    let mut rem = a.create_label();
    let mut done = a.create_label();
    a.mov(rax, rcx)?;
    a.shr(rax, 1)?;
    a.jz(rem)?;
    if pad > 0 {
        a.nops_with_size(pad)?;
    }
    a.set_label(&mut top)?;
    pair(a)?;
    a.dec(rax)?;
    a.jnz(top)?;
    a.set_label(&mut rem)?;
    a.and(rcx, 1)?;
    a.jz(done)?;
    one(a)?;
    a.set_label(&mut done)?;
    Ok(top)
}

pub(super) fn assemble_loop_aligned(
    build: &dyn Fn(usize) -> Result<(CodeAssembler, CodeLabel), IcedError>,
) -> Result<Vec<u8>, IcedError> {
    let mut pad = 0;
    loop {
        let (mut a, l) = build(pad)?;
        let r = a.assemble_options(0, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
        let off = (r.label_ip(&l)? % INT8_ALIGN) as usize;
        // (Padding can lengthen a branch over it: then once more; correct code either way.)
        if off == 0 || pad >= 4 * INT8_ALIGN as usize {
            return Ok(r.inner.code_buffer);
        }
        pad += INT8_ALIGN as usize - off;
    }
}

/// Integer (pointer / count) parameters of every int8 kernel.
pub(crate) const INT8_PARAMS: usize = 11;

/// Assemble the kernel `key` (position independent, no relocations).
pub(crate) fn assemble(key: &Int8Key) -> Result<Vec<u8>, IcedError> {
    match key.scheme {
        Scheme::BytePairs | Scheme::WordPairs => assemble_avx2(key),
        Scheme::DotProduct => match key.contraction {
            Contraction::ConvPixels { .. } => assemble_pixels(key),
            _ => assemble_vnni(key),
        },
        Scheme::Tiles => assemble_amx(key),
    }
}
