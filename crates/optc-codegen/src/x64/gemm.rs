//! The GEMM driver of a work unit: per K block, pack B (conv patches, or a run-time B), pack A
//! (when it pays), then one microkernel call per `mr x 16` tile, the epilogue in the last
//! block's calls.

use super::asm::{Routine, UkrKey, MR, NR};
use super::depthwise;
use super::packing::{pack_a, pack_b_rt, pack_panels};
use super::plan::{AMode, Kind, Plan};
use super::tasks::Ctx;
use crate::emit::E;
use crate::ops::conv::{conv_is_gemm, ConvGeom};
use cranelift_codegen::ir::{types, InstBuilder, Value};

/// One unit: `ncols` columns from column `col0` of image `img`, all rows, all of K.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_unit(
    e: &mut E,
    p: &Plan,
    c: &Ctx,
    pack: Value,
    img: Value,
    col0: Value,
    ncols: usize,
    row0: Value,
    mrows: usize,
) {
    if let Kind::Dw(g) = &p.kind {
        depthwise::emit_dw(e, p, g, c, img, row0, mrows);
        return;
    }
    if let Kind::Conv(g) = &p.kind {
        let f = p.dc_key(g, ncols, mrows).map(Routine::Dc);
        if let Some(&f) = f.and_then(|k| c.ukrs.get(&k)) {
            // Window origin of pixel col0: input row `row * sh`, and position `col` of that
            // row (stride 1: column `col`; stride 2, the deinterleaved copy: the even
            // column `2 col`).
            let xb = conv_image(e, p, g, c, img);
            let r = e.b.ins().udiv_imm_u(col0, g.ow as i64);
            let col = e.b.ins().urem_imm_u(col0, g.ow as i64);
            let ro = e.b.ins().imul_imm_s(r, (g.sh * g.wp * 4) as i64);
            let co = e.b.ins().imul_imm_s(col, 4);
            let xo = e.b.ins().iadd(ro, co);
            let xp = e.b.ins().iadd(xb, xo);
            let oo = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
            let ro = e.b.ins().imul_imm_s(row0, (p.n * 4) as i64);
            let co = e.b.ins().imul_imm_s(col0, 4);
            let oo = e.b.ins().iadd(oo, ro);
            let oo = e.b.ins().iadd(oo, co);
            let op = e.b.ins().iadd(c.out, oo);
            let ao = e.b.ins().imul_imm_s(row0, (p.k * 4) as i64);
            let ap = e.b.ins().iadd(c.extra[3], ao);
            let bp = match p.bias_port {
                Some(q) => {
                    let bo = e.b.ins().imul_imm_s(row0, 4);
                    e.b.ins().iadd(c.ins[q], bo)
                }
                None => ap,
            };
            e.b.ins().call(f, &[xp, op, ap, bp, col]);
            return;
        }
    }
    let kbs = p.kblocks();
    let nkb = kbs.len();
    let z = e.ic(0);
    if nkb == 1 {
        emit_kblock(
            e, p, c, pack, img, col0, ncols, row0, mrows, z, kbs[0], false, true,
        );
        return;
    }
    let kb = kbs[0];
    emit_kblock(
        e, p, c, pack, img, col0, ncols, row0, mrows, z, kb, false, false,
    );
    let kstart = e.ic(kb as i64);
    let mids = nkb as i64 - 2;
    e.loop_offs(mids, &[kstart], &[kb as i64], &mut |e, _i, o| {
        emit_kblock(
            e, p, c, pack, img, col0, ncols, row0, mrows, o[0], kb, true, false,
        );
    });
    let k0 = e.ic((p.k - kbs[nkb - 1]) as i64);
    emit_kblock(
        e,
        p,
        c,
        pack,
        img,
        col0,
        ncols,
        row0,
        mrows,
        k0,
        kbs[nkb - 1],
        true,
        true,
    );
}

/// Image `img` of a conv's input: its padded copy in scratch, or the input itself.
fn conv_image(e: &mut E, p: &Plan, g: &ConvGeom, c: &Ctx, img: Value) -> Value {
    let x = if p.pad_bytes() > 0 {
        c.scratch
    } else {
        c.ins[0]
    };
    let io = e.b.ins().imul_imm_s(img, (g.c * g.hp * g.wp * 4) as i64);
    e.b.ins().iadd(x, io)
}

/// One K block `[k0, k0 + kc)` of a unit: pack (conv), then every tile.
#[allow(clippy::too_many_arguments)]
fn emit_kblock(
    e: &mut E,
    p: &Plan,
    c: &Ctx,
    pack: Value,
    img: Value,
    col0: Value,
    ncols: usize,
    row0: Value,
    mrows: usize,
    k0: Value,
    kc: usize,
    acc: bool,
    last: bool,
) {
    let npan = ncols.div_ceil(NR);
    let full = ncols / NR;
    let nr_last = ncols % NR;
    let ptr = types::I64;
    // B panel j of this block lives at `bbase + j * bstep`.
    let (bbase, bstep) = match &p.kind {
        // Handled by `emit_dw` / `wino`.
        Kind::Dw(_) | Kind::Wino(..) | Kind::Pool(_) | Kind::Tn => (pack, 0),
        Kind::Mat => {
            // packed[(col0/16 + j)][k][16]
            let pan = e.b.ins().udiv_imm_u(col0, NR as i64);
            let o = e.b.ins().imul_imm_s(pan, (p.k * NR * 4) as i64);
            let ko = e.b.ins().imul_imm_s(k0, (NR * 4) as i64);
            let o = e.b.ins().iadd(o, ko);
            (e.b.ins().iadd(c.extra[0], o), (p.k * NR * 4) as i64)
        }
        Kind::Conv(g) => {
            let xb = conv_image(e, p, g, c, img);
            if conv_is_gemm(g) {
                // 1x1, stride 1, unpadded: the input is already B[C][H*W], row-major.
                let hw = (g.h * g.w * 4) as i64;
                let ko = e.b.ins().imul_imm_s(k0, hw);
                let co = e.b.ins().imul_imm_s(col0, 4);
                let o = e.b.ins().iadd(ko, co);
                let src = e.b.ins().iadd(xb, o);
                pack_b_rt(e, src, pack, ncols, kc, hw);
            } else {
                pack_panels(e, c, pack, xb, col0, npan, k0, kc);
            }
            (pack, (kc * NR * 4) as i64)
        }
        Kind::MatRt { b_img, .. } => {
            let io = e.b.ins().imul_imm_s(img, *b_img);
            let ko = e.b.ins().imul_imm_s(k0, (p.n * 4) as i64);
            let co = e.b.ins().imul_imm_s(col0, 4);
            let o = e.b.ins().iadd(io, ko);
            let o = e.b.ins().iadd(o, co);
            let src = e.b.ins().iadd(c.ins[1], o);
            pack_b_rt(e, src, pack, ncols, kc, (p.n * 4) as i64);
            (pack, (kc * NR * 4) as i64)
        }
    };
    let (a, lda) = match &p.kind {
        Kind::Dw(_) | Kind::Wino(..) | Kind::Pool(_) | Kind::Tn => (c.ins[1], 0),
        Kind::Mat => (c.ins[0], p.k as i64 * 4),
        Kind::MatRt { a_img, .. } => {
            let io = e.b.ins().imul_imm_s(img, *a_img);
            (e.b.ins().iadd(c.ins[0], io), p.k as i64 * 4)
        }
        Kind::Conv(_) => (c.ins[1], p.k as i64 * 4),
    };
    let ldc = p.n as i64 * 4;
    let amode = p.amode;
    let a = match amode {
        AMode::Const => c.extra[3],
        _ => {
            let ko = e.b.ins().imul_imm_s(k0, 4);
            e.b.ins().iadd(a, ko)
        }
    };
    let apack = if amode == AMode::Runtime {
        e.b.ins()
            .iadd_imm_s(pack, (p.pack_bytes() - p.apack_bytes()) as i64)
    } else {
        pack
    };
    let io = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
    let co = e.b.ins().imul_imm_s(col0, 4);
    let cbase_off = e.b.ins().iadd(io, co);
    let kcv = e.ic(kc as i64);
    let ldav = e.ic(lda);
    let ldcv = e.ic(ldc);
    let ep = if last { p.ep.clone() } else { vec![] };
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    let row_bias = matches!(p.kind, Kind::Conv(_));
    let _ = ptr;
    // One tile: `mr` rows at A/C row offsets, panel at `bp`, column offset `colb` (bytes).
    let tile = |e: &mut E,
                mr: usize,
                partial: bool,
                ablk: Value,
                arow: Value,
                crow: Value,
                rowb: Value,
                bp: Value,
                colb: Value| {
        let key = UkrKey {
            isa: p.isa,
            mr,
            pa: amode != AMode::Direct,
            half: partial && p.half_tail(nr_last),
            partial,
            acc,
            tn: false,
            ep: ep.clone(),
        };
        let f = c.ukr(key);
        let pa = match amode {
            AMode::Direct => e.b.ins().iadd(a, arow),
            AMode::Const => {
                let ko = e.b.ins().imul_imm_s(k0, (4 * mr) as i64);
                let o = e.b.ins().iadd(arow, ko);
                e.b.ins().iadd(a, o)
            }
            AMode::Runtime => {
                let rel = e.b.ins().isub(arow, ablk);
                let t = e.b.ins().udiv_imm_u(rel, lda);
                let o = e.b.ins().imul_imm_s(t, (kc * 4) as i64);
                e.b.ins().iadd(apack, o)
            }
        };
        let coff = e.b.ins().iadd(cbase_off, crow);
        let coff = e.b.ins().iadd(coff, colb);
        let pc = e.b.ins().iadd(c.out, coff);
        let nr = e.ic(if partial { nr_last as i64 } else { NR as i64 });
        let pb = match bias {
            Some(bv) => {
                if row_bias {
                    e.b.ins().iadd(bv, rowb)
                } else {
                    let cc = e.b.ins().iadd(co, colb);
                    e.b.ins().iadd(bv, cc)
                }
            }
            None => pc,
        };
        let pr = match res {
            Some(rv) => e.b.ins().iadd(rv, coff),
            None => pc,
        };
        e.b.ins()
            .call(f, &[pa, bp, pc, kcv, ldav, ldcv, nr, pb, pr]);
    };
    // Rows of one M block at row offset (a, c, bias) with `mc` rows, all panels.
    let mblock = |e: &mut E, mc: usize, ar: Value, cr: Value, br: Value| {
        let panel = |e: &mut E, partial: bool, bp: Value, colb: Value| {
            let nfull = mc / MR;
            e.loop_offs(
                nfull as i64,
                &[ar, cr, br],
                &[MR as i64 * lda, MR as i64 * ldc, MR as i64 * 4],
                &mut |e, _i, o| tile(e, MR, partial, ar, o[0], o[1], o[2], bp, colb),
            );
            let rem = mc % MR;
            if rem > 0 {
                let a2 = e.b.ins().iadd_imm_s(ar, (nfull * MR) as i64 * lda);
                let c2 = e.b.ins().iadd_imm_s(cr, (nfull * MR) as i64 * ldc);
                let b2 = e.b.ins().iadd_imm_s(br, (nfull * MR) as i64 * 4);
                tile(e, rem, partial, ar, a2, c2, b2, bp, colb);
            }
        };
        if amode == AMode::Runtime {
            let src = e.b.ins().iadd(a, ar);
            pack_a(e, src, apack, mc, kc, lda);
        }
        let zc = e.ic(0);
        e.loop_offs(
            full as i64,
            &[bbase, zc],
            &[bstep, (NR * 4) as i64],
            &mut |e, _j, o| {
                panel(e, false, o[0], o[1]);
            },
        );
        if nr_last > 0 {
            let bp = e.b.ins().iadd_imm_s(bbase, full as i64 * bstep);
            let colb = e.ic((full * NR * 4) as i64);
            panel(e, true, bp, colb);
        }
    };
    let mcb = p.mc;
    let nmb = mrows / mcb;
    let ar0 = e.b.ins().imul_imm_s(row0, lda);
    let cr0 = e.b.ins().imul_imm_s(row0, ldc);
    let br0 = e.b.ins().imul_imm_s(row0, 4);
    e.loop_offs(
        nmb as i64,
        &[ar0, cr0, br0],
        &[mcb as i64 * lda, mcb as i64 * ldc, mcb as i64 * 4],
        &mut |e, _i, o| mblock(e, mcb, o[0], o[1], o[2]),
    );
    if !mrows.is_multiple_of(mcb) {
        let ar = e.b.ins().iadd_imm_s(ar0, (nmb * mcb) as i64 * lda);
        let cr = e.b.ins().iadd_imm_s(cr0, (nmb * mcb) as i64 * ldc);
        let br = e.b.ins().iadd_imm_s(br0, (nmb * mcb) as i64 * 4);
        mblock(e, mrows % mcb, ar, cr, br);
    }
}
