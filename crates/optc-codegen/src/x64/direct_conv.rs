//! Driving the assembled direct-conv kernels ([`super::asm::direct_conv`]) of convs with few
//! input channels (a network's first conv): an ungrouped conv with constant weights, at most 4
//! input channels and 64 taps, stride 1 or 2 along rows, output rows of whole 16-pixel steps,
//! one K block and no fused residual calls one kernel per unit instead of packing patches for
//! the microkernels. Stride 2 reads a deinterleaved padded input copy (each padded row's even
//! columns, then its odd ones), made before the tasks.

use super::asm::direct_conv::DirectConvKey;
use super::kernel_plan::{ALayout, KernelPlan};
use super::tasks::KernelArgs;
use crate::builder::{shuffle_lanes, tensor_flags, zero_span, Emitter, F32X4};
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{types, InstBuilder};

impl KernelPlan {
    /// Whether the conv's padded input copy is deinterleaved for the stride-2 direct-conv
    /// kernel (every unit runs it: see [`emit_deinterleaved_copy`]).
    pub(super) fn direct_conv_deinterleaved(&self, g: &ConvGeometry) -> bool {
        g.sw == 2 && self.direct_conv_key(g, self.chunk, self.mrows).is_some()
    }

    /// The direct-conv kernel of a unit of `ncols` pixels x `mrows` channels, if the conv has one
    /// ([`crate::x64::asm::direct_conv`]): few input channels, constant weights, one K block.
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
            && g.groups == 1
            && self.kblocks().len() == 1
            && self.res_port.is_none()
            && (g.sw == 1 || self.pad_bytes() > 0)
            && ncols.is_multiple_of(16)
            && DirectConvKey::supports(g.c, g.kh, g.kw, g.sw, g.ow, &epilogue);
        ok.then_some(DirectConvKey {
            c: g.c,
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
        })
    }
}

/// The padded input copy of a stride-2 conv run by the direct-conv kernel
/// ([`KernelPlan::direct_conv_key`]): each padded row of `wp` floats holds its even columns, then
/// its odd columns (`ceil(wp / 2)` and `floor(wp / 2)` floats), so a tap of 8 stride-2 outputs is
/// one contiguous load. Zeroes the pad rows and, per input row, its pad columns; the interior by
/// f32x4 pairs split into even and odd lanes.
pub(super) fn emit_deinterleaved_copy(e: &mut Emitter, g: &ConvGeometry, c: &KernelArgs) {
    let half = g.wp.div_ceil(2);
    // Position of padded column j in its row.
    let pos = |j: usize| {
        if j.is_multiple_of(2) {
            j / 2
        } else {
            half + j / 2
        }
    };
    let plane_b = (g.hp * g.wp * 4) as i64;
    let row_b = (g.wp * 4) as i64;
    let z = e.int_const(0);
    let zs = e.float_const(types::F32, 0.0);
    let pads: Vec<usize> = (0..g.pw).chain(g.pw + g.w..g.wp).collect();
    e.loop_offsets(
        (g.n * g.c) as i64,
        &[z, z],
        &[plane_b, (g.h * g.w * 4) as i64],
        &mut |e, _i, o| {
            let base = e.b.ins().iadd(c.scratch, o[0]);
            zero_span(e, base, g.ph * g.wp);
            let bot = e.b.ins().iadd_imm_s(base, (g.ph + g.h) as i64 * row_b);
            zero_span(e, bot, (g.hp - g.ph - g.h) * g.wp);
            let r0 = e.b.ins().iadd_imm_s(base, g.ph as i64 * row_b);
            let s0 = e.b.ins().iadd(c.ins[0], o[1]);
            e.loop_offsets(
                g.h as i64,
                &[r0, s0],
                &[row_b, (g.w * 4) as i64],
                &mut |e, _r, q| {
                    for &j in &pads {
                        e.b.ins()
                            .store(tensor_flags(), zs, q[0], (pos(j) * 4) as i32);
                    }
                    // x[i], x[i + 2], .. (padded columns i + pw, ..: one part) and x[i + 1],
                    // x[i + 3], .. (the other), 4 consecutive positions each.
                    let nv = g.w / 8;
                    let ev0 = pos(g.pw);
                    let od0 = pos(g.pw + 1);
                    e.loop_offsets(nv as i64, &[q[1], z, z], &[32, 16, 16], &mut |e, _v, t| {
                        let a = e.b.ins().load(F32X4, tensor_flags(), t[0], 0);
                        let b = e.b.ins().load(F32X4, tensor_flags(), t[0], 16);
                        let ev = shuffle_lanes(e, a, b, [0, 2, 4, 6]);
                        let od = shuffle_lanes(e, a, b, [1, 3, 5, 7]);
                        let d = e.b.ins().iadd(q[0], t[1]);
                        e.b.ins().store(tensor_flags(), ev, d, (ev0 * 4) as i32);
                        e.b.ins().store(tensor_flags(), od, d, (od0 * 4) as i32);
                    });
                    for i in nv * 8..g.w {
                        let x =
                            e.b.ins()
                                .load(types::F32, tensor_flags(), q[1], (i * 4) as i32);
                        e.b.ins()
                            .store(tensor_flags(), x, q[0], (pos(i + g.pw) * 4) as i32);
                    }
                },
            );
        },
    );
}
