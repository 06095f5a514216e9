//! MaxPool and AveragePool: the reference's window semantics (padding and NaN cells skipped
//! by max), a vectorized 2-D f32 max pool over a NaN-padded copy.

use crate::builder::{index_loops, tensor_flags, Emitter, F32X4};
use crate::error::Result;
use crate::node::{NodeInfo, MAX_TENSOR_BYTES};
use crate::ops::elementwise::Elementwise;
use crate::ops::map::map;
use crate::ops::operand::{element_strides, Operand};
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, InstBuilder, Type, Value,
};
use optc_ir::{DType, Op};

pub(super) fn lower_pool(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    w: &optc_ir::Window,
    avg: Option<bool>,
) -> Result<()> {
    let xs = info.ins[0].shape.clone();
    let os = info.outs[0].shape.clone();
    if info.outs[0].numel() == 0 {
        return Ok(());
    }
    let nsp = w.nsp();
    let isp = xs[2..].to_vec();
    let osp = os[2..].to_vec();
    let ist = element_strides(&isp);
    let iplane: i64 = isp.iter().product::<usize>() as i64 * 4;
    let oplane: i64 = osp.iter().product::<usize>() as i64 * 4;
    let ost = element_strides(&osp);
    let planes = (xs[0] * xs[1]) as i64;
    let z = e.int_const(0);
    let w = w.clone();
    e.loop_offsets(planes, &[z, z], &[iplane, oplane], &mut |e, _p, pl| {
        let mut oidx = vec![];
        index_loops(e, &osp, &mut oidx, &mut |e, o| {
            let acc = e.b.declare_var(types::F32);
            // Max starts at NaN so that the first valid cell always wins (NaN cells are then
            // ignored unless every valid cell is NaN); no valid cell at all gives -inf.
            let init = if avg.is_some() { 0.0 } else { f32::NAN };
            let iv = e.float_const(types::F32, init);
            e.b.def_var(acc, iv);
            let cv = e.b.declare_var(types::F32);
            let zf = e.float_const(types::F32, 0.0);
            e.b.def_var(cv, zf);
            let o = o.to_vec();
            let mut kidx = vec![];
            index_loops(e, &w.kernel, &mut kidx, &mut |e, k| {
                let mut valid = e.b.ins().iconst(types::I8, 1);
                let mut inpad = e.b.ins().iconst(types::I8, 1);
                let mut off = e.b.ins().iconst(types::I64, 0);
                for d in 0..nsp {
                    let a = e.b.ins().imul_imm_s(o[d], w.strides[d] as i64);
                    let b = e.b.ins().imul_imm_s(k[d], w.dilations[d] as i64);
                    let pp = e.b.ins().iadd(a, b);
                    let ext = (isp[d] + w.pads[d] + w.pads[nsp + d]) as i64;
                    let ip = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, pp, ext);
                    inpad = e.b.ins().band(inpad, ip);
                    let p = e.b.ins().iadd_imm_s(pp, -(w.pads[d] as i64));
                    let ge = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, p, 0);
                    let lt =
                        e.b.ins()
                            .icmp_imm_s(IntCC::SignedLessThan, p, isp[d] as i64);
                    valid = e.b.ins().band(valid, ge);
                    valid = e.b.ins().band(valid, lt);
                    let t = e.b.ins().imul_imm_s(p, ist[d] * 4);
                    off = e.b.ins().iadd(off, t);
                }
                let off = e.b.ins().iadd(off, pl[0]);
                let v = e.load_if(types::F32, valid, x, off);
                let a = e.b.use_var(acc);
                match avg {
                    None => {
                        // padding never wins; NaN cells are ignored
                        let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, a);
                        let un = e.b.ins().fcmp(FloatCC::Unordered, a, a);
                        let gt = e.b.ins().bor(gt, un);
                        let take = e.b.ins().band(gt, valid);
                        let na = e.b.ins().select(take, v, a);
                        e.b.def_var(acc, na);
                        let zf = e.float_const(types::F32, 0.0);
                        let one = e.float_const(types::F32, 1.0);
                        let inc = e.b.ins().select(valid, one, zf);
                        let c = e.b.use_var(cv);
                        let nc = e.b.ins().fadd(c, inc);
                        e.b.def_var(cv, nc);
                    }
                    Some(include_pad) => {
                        let zf = e.float_const(types::F32, 0.0);
                        let v = e.b.ins().select(valid, v, zf);
                        let na = e.b.ins().fadd(a, v);
                        e.b.def_var(acc, na);
                        let cnt_if = if include_pad { inpad } else { valid };
                        let one = e.float_const(types::F32, 1.0);
                        let inc = e.b.ins().select(cnt_if, one, zf);
                        let c = e.b.use_var(cv);
                        let nc = e.b.ins().fadd(c, inc);
                        e.b.def_var(cv, nc);
                    }
                }
            });
            let mut r = e.b.use_var(acc);
            if avg.is_none() {
                let c = e.b.use_var(cv);
                let zf = e.float_const(types::F32, 0.0);
                let none = e.b.ins().fcmp(FloatCC::Equal, c, zf);
                let ninf = e.float_const(types::F32, f32::NEG_INFINITY);
                r = e.b.ins().select(none, ninf, r);
            }
            if avg.is_some() {
                let c = e.b.use_var(cv);
                let q = e.b.ins().fdiv(r, c);
                let zf = e.float_const(types::F32, 0.0);
                let is0 = e.b.ins().fcmp(FloatCC::Equal, c, zf);
                r = e.b.ins().select(is0, zf, q);
            }
            let mut ooff = pl[1];
            for d in 0..nsp {
                let t = e.b.ins().imul_imm_s(o[d], ost[d] * 4);
                ooff = e.b.ins().iadd(ooff, t);
            }
            e.store(r, out, ooff);
        });
    });
    Ok(())
}

/// A 2-D f32 max pool taken by the vector path: the input is copied into a NaN-filled padded
/// buffer, where a NaN cell never replaces a non-NaN maximum and is replaced by any cell
/// (exactly the reference's "padding and NaN cells are skipped" rule, as long as every window
/// holds at least one real cell, which we check).
pub(crate) struct MaxPoolGeometry {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
}

pub(crate) fn maxpool2d_geometry(info: &NodeInfo) -> Option<MaxPoolGeometry> {
    let Op::MaxPool { window: w } = info.op else {
        return None;
    };
    let xs = &info.ins[0].shape;
    let os = &info.outs[0].shape;
    if w.nsp() != 2 || info.ins[0].dtype != DType::F32 || info.outs.len() != 1 {
        return None;
    }
    if info.outs[0].numel() == 0 {
        return None;
    }
    let (h, wd, oh, ow) = (xs[2], xs[3], os[2], os[3]);
    // Every window must contain a real cell.
    for (n, o, k, s, d, p) in [
        (h, oh, w.kernel[0], w.strides[0], w.dilations[0], w.pads[0]),
        (wd, ow, w.kernel[1], w.strides[1], w.dilations[1], w.pads[1]),
    ] {
        for i in 0..o {
            let ok = (0..k).any(|j| {
                let q = (i * s + j * d) as i64 - p as i64;
                q >= 0 && q < n as i64
            });
            if !ok {
                return None;
            }
        }
    }
    let hp = (h + w.pads[0] + w.pads[2])
        .max((oh - 1) * w.strides[0] + (w.kernel[0] - 1) * w.dilations[0] + 1);
    let wp = (wd + w.pads[1] + w.pads[3])
        .max((ow - 1) * w.strides[1] + (w.kernel[1] - 1) * w.dilations[1] + 1);
    let g = MaxPoolGeometry {
        planes: xs[0] * xs[1],
        h,
        w: wd,
        hp,
        wp,
        oh,
        ow,
        kh: w.kernel[0],
        kw: w.kernel[1],
        sh: w.strides[0],
        sw: w.strides[1],
        dh: w.dilations[0],
        dw: w.dilations[1],
        ph: w.pads[0],
        pw: w.pads[1],
    };
    let bytes = g.planes.checked_mul(hp)?.checked_mul(wp)?.checked_mul(4)?;
    (bytes <= MAX_TENSOR_BYTES).then_some(g)
}

pub(super) fn lower_maxpool2d(
    e: &mut Emitter,
    info: &NodeInfo,
    g: &MaxPoolGeometry,
    x: Value,
    out: Value,
    scratch: Value,
) -> Result<()> {
    // NaN-filled padded copy.
    let total = g.planes * g.hp * g.wp;
    let nanv = e.float_const(F32X4, f32::NAN);
    let z = e.int_const(0);
    e.loop_offsets((total / 4) as i64, &[z], &[16], &mut |e, _i, o| {
        e.store(nanv, scratch, o[0]);
    });
    let nans = e.float_const(types::F32, f32::NAN);
    for t in (total / 4) * 4..total {
        let o = e.int_const(t as i64 * 4);
        e.store(nans, scratch, o);
    }
    let dst = Operand {
        p: scratch,
        dt: DType::F32,
        base: (g.ph * g.wp + g.pw) as i64,
        strides: vec![(g.hp * g.wp) as i64, g.wp as i64, 1],
    };
    let src = Operand {
        p: x,
        dt: DType::F32,
        base: 0,
        strides: vec![(g.h * g.w) as i64, g.w as i64, 1],
    };
    map(
        e,
        info,
        &[g.planes, g.h, g.w],
        dst,
        &[src],
        &Elementwise::Copy,
    )?;
    // acc = (v > acc || acc is NaN) ? v : acc
    let step = |e: &mut Emitter, ty: Type, v: Value, acc: Value| -> Value {
        let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
        let un = e.b.ins().fcmp(FloatCC::Unordered, acc, acc);
        let take = e.b.ins().bor(gt, un);
        e.select_float(ty, take, v, acc)
    };
    let xplane = (g.hp * g.wp) as i64 * 4;
    let oplane = (g.oh * g.ow) as i64 * 4;
    let nv = g.ow / 4;
    let z = e.int_const(0);
    e.loop_offsets(
        g.planes as i64,
        &[z, z],
        &[xplane, oplane],
        &mut |e, _p, pl| {
            e.loop_offsets(
                g.oh as i64,
                &[pl[0], pl[1]],
                &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                &mut |e, _r, ro| {
                    e.loop_offsets(
                        nv as i64,
                        &[ro[0], ro[1]],
                        &[(4 * g.sw) as i64 * 4, 16],
                        &mut |e, _c, o| {
                            let px = e.b.ins().iadd(scratch, o[0]);
                            let mut acc = e.float_const(F32X4, f32::NAN);
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let off = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                                    let v = if g.sw == 1 {
                                        e.b.ins().load(F32X4, tensor_flags(), px, off)
                                    } else {
                                        e.gather4(px, off, g.sw)
                                    };
                                    acc = step(e, F32X4, v, acc);
                                }
                            }
                            e.store(acc, out, o[1]);
                        },
                    );
                    let xr = e.b.ins().iadd_imm_s(ro[0], (nv * 4 * g.sw) as i64 * 4);
                    let or = e.b.ins().iadd_imm_s(ro[1], (nv * 4) as i64 * 4);
                    e.loop_offsets(
                        (g.ow % 4) as i64,
                        &[xr, or],
                        &[g.sw as i64 * 4, 4],
                        &mut |e, _c, o| {
                            let px = e.b.ins().iadd(scratch, o[0]);
                            let mut acc = e.float_const(types::F32, f32::NAN);
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let off = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                                    let v = e.b.ins().load(types::F32, tensor_flags(), px, off);
                                    acc = step(e, types::F32, v, acc);
                                }
                            }
                            e.store(acc, out, o[1]);
                        },
                    );
                },
            );
        },
    );
    Ok(())
}
