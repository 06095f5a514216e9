//! Driving the assembled direct-conv kernels ([`super::asm::direct_conv`]) of convs with few
//! input channels (a network's first conv): an ungrouped conv with constant weights, at most 4
//! input channels and 64 taps, stride 1 or 2 along rows, output rows of whole 16-pixel steps,
//! one K block and no fused residual calls one kernel per unit instead of packing patches for
//! the microkernels. Stride 2 reads a deinterleaved padded input copy (each padded row's even
//! columns, then its odd ones: [`super::padded_copy`]), made before the tasks.

use super::asm::direct_conv::DirectConvKey;
use super::asm::{direct_conv_avx512, Isa};
use super::kernel_plan::{ALayout, KernelPlan};
use crate::ops::conv::ConvGeometry;

impl KernelPlan {
    /// Whether the conv's padded input copy is deinterleaved for the stride-2 direct-conv
    /// kernel (each padded row, before the tasks: `padded_copy::deinterleaved_row`).
    pub(super) fn direct_conv_deinterleaved(&self, g: &ConvGeometry) -> bool {
        g.sw == 2 && self.direct_conv_key(g, self.chunk, self.mrows).is_some()
    }

    /// The direct-conv kernel of a unit of `ncols` pixels x `mrows` channels, if the conv has one
    /// ([`crate::x64::asm::direct_conv`]): few input channels (up to 4), constant weights, one K
    /// block; on AVX-512 ([`crate::x64::asm::direct_conv_avx512`]) also a grouped conv (not
    /// depthwise), any row length and up to 49 taps per channel (7x7 stems).
    pub(super) fn direct_conv_key(
        &self,
        g: &ConvGeometry,
        ncols: usize,
        mrows: usize,
    ) -> Option<DirectConvKey> {
        let epilogue = self.kernel_epilogue();
        // Stride 2 reads the deinterleaved padded copy, which exists only with pads.
        let ok = self.a_layout == ALayout::PackedAtCompileTime
            && self.fold == 0
            && self.kblocks().len() == 1
            && self.res_port.is_none()
            && (g.sw == 1 || self.pad_bytes() > 0);
        // On AVX-512 the zmm kernel (at least the AVX2 one's FMA rate; any row length and
        // tap count, SiLU and GELU); the AVX2 kernel elsewhere.
        let wide = ok
            && (g.groups > 1 || g.c <= 4)
            && self.isa == Isa::Avx512
            && direct_conv_avx512::supports(g.cg, g.kh, g.kw, g.sw, &epilogue);
        let narrow = ok
            && !wide
            && g.groups == 1
            && ncols.is_multiple_of(16)
            && DirectConvKey::supports(g.c, g.kh, g.kw, g.sw, g.ow, &epilogue);
        (wide || narrow).then_some(DirectConvKey {
            c: g.cg,
            hp: g.hp,
            wp: g.wp,
            ow: g.ow,
            kh: g.kh,
            kw: g.kw,
            sh: g.sh,
            sw: g.sw,
            dh: g.dh,
            dw: g.dw,
            n: self.n,
            mrows,
            ncols,
            epilogue,
            wide,
            // (The node's scratch has its buffer-slot mask, 64 bytes, after the copy:
            // `KernelPlan::scratch_bytes`.)
            padded_input: wide && self.pad_bytes() > 0,
        })
    }
}
