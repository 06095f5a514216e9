//! Driving the assembled direct-conv kernels ([`super::asm::direct_conv`]): which units take
//! them, and the deinterleaved padded input copy their stride-2 variant reads.

use super::asm::direct_conv::DcKey;
use super::plan::{AMode, Plan};
use super::tasks::Ctx;
use crate::emit::{mf, shuf, zero_span, E, F32X4};
use crate::ops::conv::ConvGeom;
use cranelift_codegen::ir::{types, InstBuilder};

impl Plan {
    /// Whether the conv's padded input copy is deinterleaved for the stride-2 direct-conv
    /// kernel (every unit runs it: see [`emit_deinterleaved_copy`]).
    pub(super) fn dc_deinterleaved(&self, g: &ConvGeom) -> bool {
        g.sw == 2 && self.dc_key(g, self.chunk, self.mrows).is_some()
    }

    /// The direct-conv kernel of a unit of `ncols` pixels x `mrows` channels, if the conv
    /// has one ([`crate::x64::asm::direct_conv`]): few input channels, constant weights, one K block.
    pub(super) fn dc_key(&self, g: &ConvGeom, ncols: usize, mrows: usize) -> Option<DcKey> {
        let ep = self.kernel_ep();
        // Stride 2 reads the deinterleaved padded copy, which exists only with pads.
        let ok = self.amode == AMode::Const
            && g.groups == 1
            && self.kblocks().len() == 1
            && self.res_port.is_none()
            && (g.sw == 1 || self.pad_bytes() > 0)
            && ncols.is_multiple_of(16)
            && DcKey::supports(g.c, g.kh, g.kw, g.sw, g.ow, &ep);
        ok.then_some(DcKey {
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
            ep,
        })
    }
}

/// The padded input copy of a stride-2 conv run by the direct-conv kernel ([`Plan::dc_key`]):
/// each padded row of `wp` floats holds its even columns, then its odd columns (`ceil(wp / 2)`
/// and `floor(wp / 2)` floats), so a tap of 8 stride-2 outputs is one contiguous load. Zeroes
/// the pad rows and, per input row, its pad columns; the interior by f32x4 pairs split into
/// even and odd lanes.
pub(super) fn emit_deinterleaved_copy(e: &mut E, g: &ConvGeom, c: &Ctx) {
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
    let z = e.ic(0);
    let zs = e.fc(types::F32, 0.0);
    let pads: Vec<usize> = (0..g.pw).chain(g.pw + g.w..g.wp).collect();
    e.loop_offs(
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
            e.loop_offs(
                g.h as i64,
                &[r0, s0],
                &[row_b, (g.w * 4) as i64],
                &mut |e, _r, q| {
                    for &j in &pads {
                        e.b.ins().store(mf(), zs, q[0], (pos(j) * 4) as i32);
                    }
                    // x[i], x[i + 2], .. (padded columns i + pw, ..: one part) and x[i + 1],
                    // x[i + 3], .. (the other), 4 consecutive positions each.
                    let nv = g.w / 8;
                    let ev0 = pos(g.pw);
                    let od0 = pos(g.pw + 1);
                    e.loop_offs(nv as i64, &[q[1], z, z], &[32, 16, 16], &mut |e, _v, t| {
                        let a = e.b.ins().load(F32X4, mf(), t[0], 0);
                        let b = e.b.ins().load(F32X4, mf(), t[0], 16);
                        let ev = shuf(e, a, b, [0, 2, 4, 6]);
                        let od = shuf(e, a, b, [1, 3, 5, 7]);
                        let d = e.b.ins().iadd(q[0], t[1]);
                        e.b.ins().store(mf(), ev, d, (ev0 * 4) as i32);
                        e.b.ins().store(mf(), od, d, (od0 * 4) as i32);
                    });
                    for i in nv * 8..g.w {
                        let x = e.b.ins().load(types::F32, mf(), q[1], (i * 4) as i32);
                        e.b.ins().store(mf(), x, q[0], (pos(i + g.pw) * 4) as i32);
                    }
                },
            );
        },
    );
}
