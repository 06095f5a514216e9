#![allow(clippy::needless_range_loop)]
//! Convolution on the generic path: 1-D and 2-D convs through a padded input copy (a 1x1
//! unpadded one as a GEMM, 16 output channels per step with packed constant weights, depthwise
//! by rows of 4 pixels), any other rank by the scalar window loop.

use crate::builder::{element_type, index_loops, tensor_flags, Emitter, F32X4};
use crate::error::Result;
use crate::node::{NodeInfo, MAX_TENSOR_BYTES};
use crate::ops::elementwise::Elementwise;
use crate::ops::map::map;
use crate::ops::matmul::{gemm, BatchedGemm};
use crate::ops::operand::{element_strides, Operand};
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};
use optc_ir::{DType, Op, Tensor, Window};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Convolution.

#[derive(Clone, Debug)]
pub(crate) struct ConvGeometry {
    pub n: usize,
    pub c: usize,
    /// input extents (2-D view; 1-D convs have h = 1)
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub groups: usize,
    pub cg: usize,
    pub mg: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
    /// padded extents
    pub hp: usize,
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
}

/// The 2-D view of a conv of input shape `xs`, weight shape `ws` and output shape `os` with
/// `window` and `group` (1-D convs have h = 1); `None` beyond two spatial dims.
pub(crate) fn window_geometry(
    window: &Window,
    group: usize,
    xs: &[usize],
    ws: &[usize],
    os: &[usize],
) -> Option<ConvGeometry> {
    let nsp = window.nsp();
    let g = match nsp {
        1 => ConvGeometry {
            n: xs[0],
            c: xs[1],
            h: 1,
            w: xs[2],
            m: ws[0],
            groups: group,
            cg: ws[1],
            mg: ws[0] / group,
            kh: 1,
            kw: window.kernel[0],
            sh: 1,
            sw: window.strides[0],
            dh: 1,
            dw: window.dilations[0],
            ph: 0,
            pw: window.pads[0],
            hp: 1,
            wp: xs[2] + window.pads[0] + window.pads[1],
            oh: 1,
            ow: os[2],
        },
        2 => ConvGeometry {
            n: xs[0],
            c: xs[1],
            h: xs[2],
            w: xs[3],
            m: ws[0],
            groups: group,
            cg: ws[1],
            mg: ws[0] / group,
            kh: window.kernel[0],
            kw: window.kernel[1],
            sh: window.strides[0],
            sw: window.strides[1],
            dh: window.dilations[0],
            dw: window.dilations[1],
            ph: window.pads[0],
            pw: window.pads[1],
            hp: xs[2] + window.pads[0] + window.pads[2],
            wp: xs[3] + window.pads[1] + window.pads[3],
            oh: os[2],
            ow: os[3],
        },
        _ => return None,
    };
    Some(g)
}

/// The 2-D view of a 1-D or 2-D conv, and the constant weight when it is packed.
/// A 1x1, stride-1, unpadded, ungrouped conv is a batched GEMM `W[M, C] @ X[n][C, H*W]`.
pub(crate) fn conv_is_gemm(g: &ConvGeometry) -> bool {
    g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.groups == 1 && g.hp == g.h && g.wp == g.w
}

/// `None` for convs with more than two spatial dims (lowered by the generic scalar path).
pub(crate) fn conv_geometry(
    info: &NodeInfo,
) -> Result<Option<(ConvGeometry, Option<Arc<Tensor>>)>> {
    let (window, group) = match info.op {
        Op::Conv { window, group } | Op::QuantizedConv { window, group, .. } => (window, *group),
        _ => return Err(info.err("not a conv")),
    };
    let Some(g) = window_geometry(
        window,
        group,
        &info.ins[0].shape,
        &info.ins[1].shape,
        &info.outs[0].shape,
    ) else {
        return Ok(None);
    };
    let packed = if g.mg >= 8 && !conv_is_gemm(&g) {
        info.consts[1].clone()
    } else {
        None
    };
    Ok(Some((g, packed)))
}

/// The padded input copy of a conv with pads (in scratch).
pub(super) fn conv_scratch_bytes(info: &NodeInfo) -> Result<usize> {
    if let Op::Conv { window, .. } = info.op {
        if window.pads.iter().any(|&p| p > 0) && info.ins[0].dtype == DType::F32 {
            let Some((g, _)) = conv_geometry(info)? else {
                return Ok(0);
            };
            let n =
                g.n.checked_mul(g.c)
                    .and_then(|v| v.checked_mul(g.hp))
                    .and_then(|v| v.checked_mul(g.wp))
                    .and_then(|v| v.checked_mul(4))
                    .filter(|&b| b <= MAX_TENSOR_BYTES)
                    .ok_or_else(|| info.err("padded conv input is too large"))?;
            return Ok(n);
        }
    }
    Ok(0)
}

/// A conv's constant weights packed for the 16-channel vector path: `[g][mb][c*kh*kw][16]`.
pub(super) fn conv_kernel_data(info: &NodeInfo) -> Result<Vec<Vec<u8>>> {
    if info.ins[0].dtype != DType::F32 {
        return Ok(vec![]);
    }
    let Some((g, packed)) = conv_geometry(info)? else {
        return Ok(vec![]);
    };
    if let Some(w) = packed {
        let w = w
            .as_f32()
            .ok_or_else(|| info.err("conv weight is not f32"))?;
        let nb = g.mg.div_ceil(16);
        let r = g.cg * g.kh * g.kw;
        let mut out = vec![0f32; g.groups * nb * r * 16];
        for gi in 0..g.groups {
            for m in 0..g.mg {
                let (b, l) = (m / 16, m % 16);
                for rr in 0..r {
                    let oc = gi * g.mg + m;
                    out[((gi * nb + b) * r + rr) * 16 + l] = w[oc * r + rr];
                }
            }
        }
        return Ok(vec![out.iter().flat_map(|x| x.to_le_bytes()).collect()]);
    }
    Ok(vec![])
}

pub(super) fn lower_conv(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    scratch: Value,
    extra: &[Value],
) -> Result<()> {
    if info.outs[0].numel() == 0 {
        return Ok(());
    }
    if info.ins[0].dtype == DType::F64 {
        return lower_conv_nd(e, info, ins, out);
    }
    let Some((g, packed)) = conv_geometry(info)? else {
        return lower_conv_nd(e, info, ins, out);
    };
    if conv_is_gemm(&g) {
        let hw = g.h * g.w;
        let mm = BatchedGemm {
            batch: vec![g.n],
            bst: [vec![0], vec![(g.c * hw) as i64], vec![(g.m * hw) as i64]],
            m: g.m,
            n: hw,
            k: g.c,
            am: g.c as i64,
            ak: 1,
            bk: hw as i64,
            bn: 1,
            b_packed: None,
            alpha: 1.0,
        };
        gemm(e, &mm, ins[1], ins[0], out);
        if ins.len() > 2 {
            let oty = &info.outs[0];
            let o = Operand::dense(out, oty);
            let b = Operand::per_channel(ins[2], oty.rank());
            map(
                e,
                info,
                &oty.shape,
                o.clone(),
                &[o, b],
                &Elementwise::AddScaled(1.0),
            )?;
        }
        return Ok(());
    }
    let padded = g.hp != g.h || g.wp != g.w;
    // 1. Padded copy of the input in scratch.
    let x = if padded {
        let total = g.n * g.c * g.hp * g.wp;
        let zv = e.float_const(F32X4, 0.0);
        let z = e.int_const(0);
        e.loop_offsets((total / 4) as i64, &[z], &[16], &mut |e, _i, o| {
            e.store(zv, scratch, o[0]);
        });
        let zs = e.float_const(types::F32, 0.0);
        for t in (total / 4) * 4..total {
            let o = e.int_const(t as i64 * 4);
            e.store(zs, scratch, o);
        }
        let plane = [g.n * g.c, g.h, g.w];
        let dst = Operand {
            p: scratch,
            dt: DType::F32,
            base: (g.ph * g.wp + g.pw) as i64,
            strides: vec![(g.hp * g.wp) as i64, g.wp as i64, 1],
        };
        let src = Operand {
            p: ins[0],
            dt: DType::F32,
            base: 0,
            strides: vec![(g.h * g.w) as i64, g.w as i64, 1],
        };
        map(e, info, &plane, dst, &[src], &Elementwise::Copy)?;
        scratch
    } else {
        ins[0]
    };
    let bias = ins.get(2).copied();
    let xplane = (g.hp * g.wp) as i64 * 4;
    let oplane = (g.oh * g.ow) as i64 * 4;
    let z = e.int_const(0);
    if packed.is_some() {
        // Vectorized over 16 output channels with packed weights [g][mb][c*kh*kw][16].
        let wp = extra[0];
        let nb = g.mg.div_ceil(16);
        let full = g.mg / 16;
        let r = (g.cg * g.kh * g.kw) as i64;
        let blk_w = r * 64;
        let zb = e.int_const(0);
        e.loop_offsets(
            g.n as i64,
            &[z, z],
            &[g.c as i64 * xplane, g.m as i64 * oplane],
            &mut |e, _n, on| {
                // groups: x, out, packed weights, bias (byte offsets)
                e.loop_offsets(
                    g.groups as i64,
                    &[on[0], on[1], zb, zb],
                    &[
                        g.cg as i64 * xplane,
                        g.mg as i64 * oplane,
                        nb as i64 * blk_w,
                        g.mg as i64 * 4,
                    ],
                    &mut |e, _gi, og| {
                        let block =
                            |e: &mut Emitter, nch: usize, oo: Value, wo: Value, bo: Value| {
                                let nvec = nch.div_ceil(4);
                                e.loop_offsets(
                                    g.oh as i64,
                                    &[og[0], oo],
                                    &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                                    &mut |e, _oh, oh| {
                                        let np = if nvec <= 2 { 3 } else { 2 };
                                        let pairs = g.ow / np;
                                        e.loop_offsets(
                                            pairs as i64,
                                            &[oh[0], oh[1]],
                                            &[(np * g.sw) as i64 * 4, np as i64 * 4],
                                            &mut |e, _ow, o| {
                                                conv_pixel_packed(
                                                    e, &g, np, x, wp, wo, o[0], out, o[1], oplane,
                                                    nvec, nch, bias, bo,
                                                );
                                            },
                                        );
                                        let rest = g.ow % np;
                                        let xr =
                                            e.b.ins()
                                                .iadd_imm_s(oh[0], (pairs * np * g.sw) as i64 * 4);
                                        let or =
                                            e.b.ins().iadd_imm_s(oh[1], (pairs * np) as i64 * 4);
                                        e.loop_offsets(
                                            rest as i64,
                                            &[xr, or],
                                            &[g.sw as i64 * 4, 4],
                                            &mut |e, _ow, o| {
                                                conv_pixel_packed(
                                                    e, &g, 1, x, wp, wo, o[0], out, o[1], oplane,
                                                    nvec, nch, bias, bo,
                                                );
                                            },
                                        );
                                    },
                                );
                            };
                        e.loop_offsets(
                            full as i64,
                            &[og[1], og[2], og[3]],
                            &[16 * oplane, blk_w, 64],
                            &mut |e, _bi, ob| block(e, 16, ob[0], ob[1], ob[2]),
                        );
                        if nb > full {
                            let oo = e.b.ins().iadd_imm_s(og[1], (full * 16) as i64 * oplane);
                            let wo = e.b.ins().iadd_imm_s(og[2], full as i64 * blk_w);
                            let bo = e.b.ins().iadd_imm_s(og[3], (full * 16) as i64 * 4);
                            block(e, g.mg - full * 16, oo, wo, bo);
                        }
                    },
                );
            },
        );
    } else {
        // Vectorized over output width.
        let w = ins[1];
        let wsz = (g.cg * g.kh * g.kw) as i64 * 4;
        e.loop_offsets(
            g.n as i64,
            &[z, z],
            &[g.c as i64 * xplane, g.m as i64 * oplane],
            &mut |e, _n, on| {
                let zz = e.int_const(0);
                e.loop_offsets(
                    g.m as i64,
                    &[zz, on[1]],
                    &[wsz, oplane],
                    &mut |e, mi, om| {
                        // input channel base of this output channel's group
                        let gidx = e.b.ins().udiv_imm_u(mi, g.mg as i64);
                        let xo = e.b.ins().imul_imm_s(gidx, g.cg as i64 * xplane);
                        let xo = e.b.ins().iadd(xo, on[0]);
                        let bv = match bias {
                            Some(bp) => {
                                let bo = e.b.ins().imul_imm_s(mi, 4);
                                e.load(types::F32, bp, bo)
                            }
                            None => e.float_const(types::F32, 0.0),
                        };
                        if g.cg == 1 && g.kh * g.kw <= 16 {
                            // Depthwise-like: the window weights stay in registers.
                            let wv: Vec<Value> = (0..g.kh * g.kw)
                                .map(|c| {
                                    let a = e.b.ins().iadd(w, om[0]);
                                    let s = e.b.ins().load(
                                        types::F32,
                                        tensor_flags(),
                                        a,
                                        (c * 4) as i32,
                                    );
                                    e.b.ins().splat(F32X4, s)
                                })
                                .collect();
                            let bsplat = e.b.ins().splat(F32X4, bv);
                            e.loop_offsets(
                                g.oh as i64,
                                &[xo, om[1]],
                                &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                                &mut |e, _oh, oh| {
                                    let n8 = g.ow / 8;
                                    e.loop_offsets(
                                        n8 as i64,
                                        &[oh[0], oh[1]],
                                        &[(8 * g.sw) as i64 * 4, 32],
                                        &mut |e, _i, o| {
                                            depthwise_block(
                                                e, &g, x, &wv, o[0], out, o[1], bsplat, 2,
                                            );
                                        },
                                    );
                                    let mut done = n8 * 8;
                                    if g.ow - done >= 4 {
                                        let xr =
                                            e.b.ins().iadd_imm_s(oh[0], (done * g.sw) as i64 * 4);
                                        let or = e.b.ins().iadd_imm_s(oh[1], done as i64 * 4);
                                        depthwise_block(e, &g, x, &wv, xr, out, or, bsplat, 1);
                                        done += 4;
                                    }
                                    let rest = g.ow - done;
                                    let xr = e.b.ins().iadd_imm_s(oh[0], (done * g.sw) as i64 * 4);
                                    let or = e.b.ins().iadd_imm_s(oh[1], done as i64 * 4);
                                    e.loop_offsets(
                                        rest as i64,
                                        &[xr, or],
                                        &[g.sw as i64 * 4, 4],
                                        &mut |e, _i, o| {
                                            conv_row(
                                                e, &g, x, w, om[0], o[0], out, o[1], bv, false,
                                            );
                                        },
                                    );
                                },
                            );
                            return;
                        }
                        e.loop_offsets(
                            g.oh as i64,
                            &[xo, om[1]],
                            &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                            &mut |e, _oh, oh| {
                                let nv = g.ow / 4;
                                e.loop_offsets(
                                    nv as i64,
                                    &[oh[0], oh[1]],
                                    &[(4 * g.sw) as i64 * 4, 16],
                                    &mut |e, _i, o| {
                                        conv_row(e, &g, x, w, om[0], o[0], out, o[1], bv, true);
                                    },
                                );
                                let rest = g.ow % 4;
                                let xr = e.b.ins().iadd_imm_s(oh[0], (nv * 4 * g.sw) as i64 * 4);
                                let or = e.b.ins().iadd_imm_s(oh[1], (nv * 4) as i64 * 4);
                                e.loop_offsets(
                                    rest as i64,
                                    &[xr, or],
                                    &[g.sw as i64 * 4, 4],
                                    &mut |e, _i, o| {
                                        conv_row(e, &g, x, w, om[0], o[0], out, o[1], bv, false);
                                    },
                                );
                            },
                        );
                    },
                );
            },
        );
    }
    Ok(())
}

/// `4 * nv` consecutive output pixels of one output channel reading one input channel, with the
/// window weights `wv` (splatted) already in registers.
#[allow(clippy::too_many_arguments)]
fn depthwise_block(
    e: &mut Emitter,
    g: &ConvGeometry,
    x: Value,
    wv: &[Value],
    xo: Value,
    out: Value,
    oo: Value,
    bias: Value,
    nv: usize,
) {
    let px = e.b.ins().iadd(x, xo);
    let mut accs = vec![bias; nv];
    for kh in 0..g.kh {
        for kw in 0..g.kw {
            for (j, acc) in accs.iter_mut().enumerate() {
                let xoff = ((kh * g.dh * g.wp + kw * g.dw + j * 4 * g.sw) * 4) as i32;
                let xv = if g.sw == 1 {
                    e.b.ins().load(F32X4, tensor_flags(), px, xoff)
                } else {
                    e.gather4(px, xoff, g.sw)
                };
                *acc = e.mul_add(wv[kh * g.kw + kw], xv, *acc);
            }
        }
    }
    let po = e.b.ins().iadd(out, oo);
    for (j, &acc) in accs.iter().enumerate() {
        e.b.ins().store(tensor_flags(), acc, po, (j * 16) as i32);
    }
}

/// `np` consecutive output pixels for up to 16 channels: `x` at byte offset `xo` (top-left of
/// the first window in the first input channel of the group), packed weights at `wbase`.
#[allow(clippy::too_many_arguments)]
fn conv_pixel_packed(
    e: &mut Emitter,
    g: &ConvGeometry,
    np: usize,
    x: Value,
    wp: Value,
    wo: Value,
    xo: Value,
    out: Value,
    oo: Value,
    oplane: i64,
    nvec: usize,
    nch: usize,
    bias: Option<Value>,
    bo: Value,
) {
    let accs: Vec<_> = (0..nvec * np)
        .map(|_| {
            let v = e.b.declare_var(F32X4);
            let z = e.float_const(F32X4, 0.0);
            e.b.def_var(v, z);
            v
        })
        .collect();
    let xplane = (g.hp * g.wp) as i64 * 4;
    let kk = (g.kh * g.kw) as i64;
    e.loop_offsets(
        g.cg as i64,
        &[xo, wo],
        &[xplane, kk * 64],
        &mut |e, _c, o| {
            let px = e.b.ins().iadd(x, o[0]);
            let pw = e.b.ins().iadd(wp, o[1]);
            let mut cur: Vec<Value> = accs.iter().map(|&v| e.b.use_var(v)).collect();
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    let cell = (kh * g.kw + kw) as i32 * 64;
                    let wv: Vec<Value> = (0..nvec)
                        .map(|j| {
                            e.b.ins()
                                .load(F32X4, tensor_flags(), pw, cell + j as i32 * 16)
                        })
                        .collect();
                    for p in 0..np {
                        let xoff = ((kh * g.dh * g.wp + kw * g.dw + p * g.sw) * 4) as i32;
                        let s = e.b.ins().load(types::F32, tensor_flags(), px, xoff);
                        let sv = e.b.ins().splat(F32X4, s);
                        for j in 0..nvec {
                            let k = p * nvec + j;
                            cur[k] = e.mul_add(sv, wv[j], cur[k]);
                        }
                    }
                }
            }
            for (j, &v) in accs.iter().enumerate() {
                e.b.def_var(v, cur[j]);
            }
        },
    );
    let po = e.b.ins().iadd(out, oo);
    let pb = bias.map(|bp| e.b.ins().iadd(bp, bo));
    for p in 0..np {
        for j in 0..nvec {
            let v = e.b.use_var(accs[p * nvec + j]);
            for l in 0..4 {
                let ch = j * 4 + l;
                if ch >= nch {
                    break;
                }
                let mut s = e.b.ins().extractlane(v, l as u8);
                if let Some(bp) = pb {
                    let bb =
                        e.b.ins()
                            .load(types::F32, tensor_flags(), bp, (ch * 4) as i32);
                    s = e.b.ins().fadd(s, bb);
                }
                e.b.ins().store(
                    tensor_flags(),
                    s,
                    po,
                    (ch as i64 * oplane + p as i64 * 4) as i32,
                );
            }
        }
    }
}

/// Four (vector) or one (scalar) consecutive output pixels of one output channel.
#[allow(clippy::too_many_arguments)]
fn conv_row(
    e: &mut Emitter,
    g: &ConvGeometry,
    x: Value,
    w: Value,
    wo: Value,
    xo: Value,
    out: Value,
    oo: Value,
    bias: Value,
    vector: bool,
) {
    let ty = if vector { F32X4 } else { types::F32 };
    let acc = e.b.declare_var(ty);
    let init = if vector {
        e.b.ins().splat(F32X4, bias)
    } else {
        bias
    };
    e.b.def_var(acc, init);
    let xplane = (g.hp * g.wp) as i64 * 4;
    let kk = (g.kh * g.kw) as i64;
    e.loop_offsets(
        g.cg as i64,
        &[xo, wo],
        &[xplane, kk * 4],
        &mut |e, _c, o| {
            let px = e.b.ins().iadd(x, o[0]);
            let pw = e.b.ins().iadd(w, o[1]);
            let mut a = e.b.use_var(acc);
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    let xoff = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                    let ws = e.b.ins().load(
                        types::F32,
                        tensor_flags(),
                        pw,
                        ((kh * g.kw + kw) * 4) as i32,
                    );
                    let xv = if !vector {
                        e.b.ins().load(types::F32, tensor_flags(), px, xoff)
                    } else if g.sw == 1 {
                        e.b.ins().load(F32X4, tensor_flags(), px, xoff)
                    } else {
                        let s0 = e.b.ins().load(types::F32, tensor_flags(), px, xoff);
                        let mut v = e.b.ins().splat(F32X4, s0);
                        for l in 1..4 {
                            let s = e.b.ins().load(
                                types::F32,
                                tensor_flags(),
                                px,
                                xoff + (l * g.sw * 4) as i32,
                            );
                            v = e.b.ins().insertlane(v, s, l as u8);
                        }
                        v
                    };
                    let wv = if vector {
                        e.b.ins().splat(F32X4, ws)
                    } else {
                        ws
                    };
                    a = e.mul_add(wv, xv, a);
                }
            }
            e.b.def_var(acc, a);
        },
    );
    let v = e.b.use_var(acc);
    e.store(v, out, oo);
}

/// Any-rank convolution, scalar: the interpreter's window semantics, one output at a time
/// (f32 with multiply-adds; f64 products rounded then summed in order, as the interpreter
/// sums them).
fn lower_conv_nd(e: &mut Emitter, info: &NodeInfo, ins: &[Value], out: Value) -> Result<()> {
    let (w, group) = match info.op {
        Op::Conv { window, group } => (window.clone(), *group),
        _ => return Err(info.err("not a conv")),
    };
    let xs = info.ins[0].shape.clone();
    let ws = info.ins[1].shape.clone();
    let os = info.outs[0].shape.clone();
    let nsp = w.nsp();
    let isp = xs[2..].to_vec();
    let osp = os[2..].to_vec();
    let ist = element_strides(&isp);
    let kst = element_strides(&w.kernel);
    let ost = element_strides(&osp);
    let ty = element_type(info.ins[0].dtype);
    let (eb, f64) = (ty.bytes() as i64, ty == types::F64);
    let iplane = isp.iter().product::<usize>() as i64 * eb;
    let oplane = osp.iter().product::<usize>() as i64 * eb;
    let ksz = w.kernel.iter().product::<usize>() as i64 * eb;
    let (c, m, cg) = (xs[1] as i64, ws[0] as i64, ws[1] as i64);
    let mg = m / group as i64;
    let bias = ins.get(2).copied();
    let z = e.int_const(0);
    e.loop_offsets(
        xs[0] as i64,
        &[z, z],
        &[c * iplane, m * oplane],
        &mut |e, _n, on| {
            let zz = e.int_const(0);
            e.loop_offsets(m, &[zz, on[1]], &[cg * ksz, oplane], &mut |e, mi, om| {
                let gi = e.b.ins().udiv_imm_u(mi, mg);
                let xg = e.b.ins().imul_imm_s(gi, cg * iplane);
                let xg = e.b.ins().iadd(xg, on[0]);
                let init = match bias {
                    Some(bp) => {
                        let bo = e.b.ins().imul_imm_s(mi, eb);
                        e.load(ty, bp, bo)
                    }
                    None => e.float_const(ty, 0.0),
                };
                let mut oidx = vec![];
                index_loops(e, &osp, &mut oidx, &mut |e, o| {
                    let o = o.to_vec();
                    let acc = e.b.declare_var(ty);
                    e.b.def_var(acc, init);
                    e.loop_offsets(cg, &[xg, om[0]], &[iplane, ksz], &mut |e, _ci, oc| {
                        let mut kidx = vec![];
                        index_loops(e, &w.kernel, &mut kidx, &mut |e, k| {
                            let mut valid = e.b.ins().iconst(types::I8, 1);
                            let mut xoff = e.b.ins().iconst(types::I64, 0);
                            let mut woff = oc[1];
                            for d in 0..nsp {
                                let a = e.b.ins().imul_imm_s(o[d], w.strides[d] as i64);
                                let b = e.b.ins().imul_imm_s(k[d], w.dilations[d] as i64);
                                let pp = e.b.ins().iadd(a, b);
                                let p = e.b.ins().iadd_imm_s(pp, -(w.pads[d] as i64));
                                let ge =
                                    e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, p, 0);
                                let lt =
                                    e.b.ins()
                                        .icmp_imm_s(IntCC::SignedLessThan, p, isp[d] as i64);
                                valid = e.b.ins().band(valid, ge);
                                valid = e.b.ins().band(valid, lt);
                                let t = e.b.ins().imul_imm_s(p, ist[d] * eb);
                                xoff = e.b.ins().iadd(xoff, t);
                                let t = e.b.ins().imul_imm_s(k[d], kst[d] * eb);
                                woff = e.b.ins().iadd(woff, t);
                            }
                            let xoff = e.b.ins().iadd(xoff, oc[0]);
                            let xv = e.load_if(ty, valid, ins[0], xoff);
                            let zf = e.float_const(ty, 0.0);
                            let xv = e.b.ins().select(valid, xv, zf);
                            let wv = e.load(ty, ins[1], woff);
                            let a = e.b.use_var(acc);
                            let na = if f64 {
                                let p = e.b.ins().fmul(xv, wv);
                                e.b.ins().fadd(a, p)
                            } else {
                                e.mul_add(xv, wv, a)
                            };
                            e.b.def_var(acc, na);
                        });
                    });
                    let r = e.b.use_var(acc);
                    let mut ooff = om[1];
                    for d in 0..nsp {
                        let t = e.b.ins().imul_imm_s(o[d], ost[d] * eb);
                        ooff = e.b.ins().iadd(ooff, t);
                    }
                    e.store(r, out, ooff);
                });
            });
        },
    );
    Ok(())
}
