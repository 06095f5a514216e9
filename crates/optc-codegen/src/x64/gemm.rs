//! The GEMM driver of a work unit: per K block, pack B (conv patches, or a run-time B), pack A
//! (when it pays), then one microkernel call per `mr x 16` tile, the epilogue in the last
//! block's calls.

use super::asm::{MicrokernelKey, Routine, MR, NR};
use super::kernel_plan::{ALayout, ColumnTile, KernelPlan, Strategy};
use super::packing::{group_offset, pack_a, pack_b_rt, pack_panels};
use super::tasks::KernelArgs;
use super::{depthwise, int8, pairs, sparse};
use crate::builder::{if_else, Emitter};
use crate::ops::conv::{conv_is_gemm, ConvGeometry};
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};

/// A work unit of the GEMM family: `ncols` columns from column `col0` of image `img`, `mrows`
/// rows from row `row0`, all of K, packing into the task's buffer `pack`.
#[derive(Clone, Copy)]
pub(super) struct Unit {
    pub pack: Value,
    pub img: Value,
    pub col0: Value,
    pub ncols: usize,
    pub row0: Value,
    pub mrows: usize,
}

/// One K block `[k0, k0 + kc)`: `acc` adds to the partial sums of the blocks before, `last`
/// applies the epilogue.
#[derive(Clone, Copy)]
struct KBlock {
    k0: Value,
    kc: usize,
    acc: bool,
    last: bool,
}

/// One unit.
pub(super) fn emit_unit(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, unit: Unit) {
    if let Some(d) = &p.depthwise_after {
        return pairs::emit_unit(e, p, d, c, unit);
    }
    if p.fold > 0 {
        // A folded conv's tiles store into its buffer in scratch (`emit_post` reorders).
        let out = e.b.ins().iadd_imm_s(c.scratch, p.fold_off() as i64);
        return emit_columns(e, p, &c.with_out(out), unit);
    }
    emit_columns(e, p, c, unit)
}

/// One unit's tiles, stored at `c.out`.
pub(super) fn emit_columns(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, unit: Unit) {
    let Unit {
        img,
        col0,
        ncols,
        row0,
        mrows,
        ..
    } = unit;
    if let Strategy::Depthwise(g) = &p.kind {
        depthwise::emit_depthwise(e, p, g, c, img, row0, mrows);
        return;
    }
    if let Strategy::Int8(q) = &p.kind {
        int8::emit_unit(e, p, q, c, unit);
        return;
    }
    if let Strategy::Sparse(s) = &p.kind {
        sparse::emit_unit(e, p, s, c, unit);
        return;
    }
    if let Strategy::ImplicitGemm(g) = &p.kind {
        let f = p.direct_conv_key(g, ncols, mrows).map(Routine::DirectConv);
        if let Some(&f) = f.and_then(|k| c.microkernels.get(&k)) {
            // Window origin of pixel col0: input row `row * sh`, and position `col` of that
            // row (stride 1: column `col`; stride 2, the deinterleaved copy: the even
            // column `2 col`).
            let mut xb = conv_image(e, p, g, c, img);
            if g.groups > 1 {
                // The unit's group (a row part is one group): its input channels.
                let gi = e.b.ins().udiv_imm_u(row0, g.mg as i64);
                let go = e.b.ins().imul_imm_s(gi, group_offset(g, 1));
                xb = e.b.ins().iadd(xb, go);
            }
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
    let block = |k0, kc, acc, last| KBlock { k0, kc, acc, last };
    if let Some(t) = &p.taps {
        // The blocks of the taps the unit's class reads (see `tap_classes`): its row of the
        // unit table (`extra[4]`) holds their count, then each one's first K row.
        let kc = p.kc;
        let stride = (8 * (1 + t.max_taps())) as i64;
        let u = e.b.ins().udiv_imm_u(col0, p.chunk as i64);
        let uo = e.b.ins().imul_imm_s(u, stride);
        let row = e.b.ins().iadd(c.extra[4], uo);
        let zero = e.int_const(0);
        let count = e.load(types::I64, row, zero);
        let k_at = |e: &mut Emitter, i: Value| {
            let o = e.b.ins().imul_imm_s(i, 8);
            let o = e.b.ins().iadd_imm_s(o, 8);
            e.load(types::I64, row, o)
        };
        let several = |e: &mut Emitter| {
            let k0 = k_at(e, zero);
            emit_kblock(e, p, c, unit, block(k0, kc, false, false));
            let one = e.int_const(1);
            let end = e.b.ins().iadd_imm_s(count, -1);
            e.loop_range(one, end, &mut |e, i| {
                let k0 = k_at(e, i);
                emit_kblock(e, p, c, unit, block(k0, kc, true, false));
            });
            let k0 = k_at(e, end);
            emit_kblock(e, p, c, unit, block(k0, kc, true, true));
        };
        if t.has_single_tap() {
            let single = e.b.ins().icmp_imm_s(IntCC::Equal, count, 1);
            if_else(
                e,
                single,
                &mut |e| {
                    let k0 = k_at(e, zero);
                    emit_kblock(e, p, c, unit, block(k0, kc, false, true));
                },
                &mut |e| several(e),
            );
        } else {
            several(e);
        }
        return;
    }
    let kbs = p.kblocks();
    let nkb = kbs.len();
    let z = e.int_const(0);
    if nkb == 1 {
        emit_kblock(e, p, c, unit, block(z, kbs[0], false, true));
        return;
    }
    let kb = kbs[0];
    emit_kblock(e, p, c, unit, block(z, kb, false, false));
    let kstart = e.int_const(kb as i64);
    let mids = nkb as i64 - 2;
    e.loop_offsets(mids, &[kstart], &[kb as i64], &mut |e, _i, o| {
        emit_kblock(e, p, c, unit, block(o[0], kb, true, false));
    });
    let k0 = e.int_const((p.k - kbs[nkb - 1]) as i64);
    emit_kblock(e, p, c, unit, block(k0, kbs[nkb - 1], true, true));
}

/// Image `img` of a conv's input: its padded copy in scratch, or the input itself.
pub(super) fn conv_image(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    c: &KernelArgs,
    img: Value,
) -> Value {
    let x = if p.pad_bytes() > 0 {
        c.scratch
    } else {
        c.ins[0]
    };
    let io = e.b.ins().imul_imm_s(img, (g.c * g.hp * g.wp * 4) as i64);
    e.b.ins().iadd(x, io)
}

/// Pack the patches `[k0, k0 + kc)` of columns `col0 .. col0 + ncols` of the (padded) image
/// at `xb` into panels `[panel][kc][16]` at `dst`.
#[allow(clippy::too_many_arguments)]
fn pack_patches(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &ConvGeometry,
    c: &KernelArgs,
    dst: Value,
    xb: Value,
    col0: Value,
    ncols: usize,
    k0: Value,
    kc: usize,
) {
    if conv_is_gemm(g) && p.fold == 0 {
        // 1x1, stride 1, unpadded: the input is already B[C][H*W], row-major (not across
        // folded images: their pixels are the patch tables').
        let hw = (g.h * g.w * 4) as i64;
        let ko = e.b.ins().imul_imm_s(k0, hw);
        let co = e.b.ins().imul_imm_s(col0, 4);
        let o = e.b.ins().iadd(ko, co);
        let src = e.b.ins().iadd(xb, o);
        pack_b_rt(e, src, dst, ncols, kc, hw);
    } else {
        pack_panels(e, c, dst, xb, col0, ncols.div_ceil(NR), k0, kc, None);
    }
}

/// Where the shared patches of K block `k0` of column unit `ci` of image `img` start (see
/// [`KernelPlan::shared_patches`]).
fn patches_at(
    e: &mut Emitter,
    p: &KernelPlan,
    c: &KernelArgs,
    img: Value,
    ci: Value,
    k0: Value,
) -> Value {
    let panel_row = (p.unit_panels() * NR * 4) as i64;
    let ui = e.b.ins().imul_imm_s(img, p.units_per_img() as i64);
    let ui = e.b.ins().iadd(ui, ci);
    let uo = e.b.ins().imul_imm_s(ui, p.k as i64 * panel_row);
    let ko = e.b.ins().imul_imm_s(k0, panel_row);
    let o = e.b.ins().iadd(uo, ko);
    let o = e.b.ins().iadd_imm_s(o, p.patches_off() as i64);
    e.b.ins().iadd(c.scratch, o)
}

/// Part `t` of the shared patch packing (before the tasks): K block `t % blocks` of column
/// unit `t / blocks` (over all images).
pub(super) fn emit_pack_patches(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    let Strategy::ImplicitGemm(g) = &p.kind else {
        return;
    };
    let kbs = p.kblocks();
    let nkb = kbs.len();
    let upi = p.units_per_img();
    let kbi = e.b.ins().urem_imm_u(t, nkb as i64);
    let cu = e.b.ins().udiv_imm_u(t, nkb as i64);
    let img = e.b.ins().udiv_imm_u(cu, upi as i64);
    let ci = e.b.ins().urem_imm_u(cu, upi as i64);
    let k0 = e.b.ins().imul_imm_s(kbi, p.kb() as i64);
    let col0 = e.b.ins().imul_imm_s(ci, p.chunk as i64);
    let dst = patches_at(e, p, c, img, ci, k0);
    let last_cols = p.last_unit_cols();
    let full_cols = p.chunk.min(p.n);
    // The block's depth and the unit's columns are compile-time sizes: branch on the last.
    let last_kb = e.b.ins().icmp_imm_s(IntCC::Equal, kbi, nkb as i64 - 1);
    let last_unit = e.b.ins().icmp_imm_s(IntCC::Equal, ci, upi as i64 - 1);
    let xb = conv_image(e, p, g, c, img);
    let for_depth = |e: &mut Emitter, kc: usize| {
        if last_cols == full_cols {
            pack_patches(e, p, g, c, dst, xb, col0, full_cols, k0, kc);
        } else {
            if_else(
                e,
                last_unit,
                &mut |e| pack_patches(e, p, g, c, dst, xb, col0, last_cols, k0, kc),
                &mut |e| pack_patches(e, p, g, c, dst, xb, col0, full_cols, k0, kc),
            );
        }
    };
    if kbs[nkb - 1] == kbs[0] {
        for_depth(e, kbs[0]);
    } else {
        if_else(e, last_kb, &mut |e| for_depth(e, kbs[nkb - 1]), &mut |e| {
            for_depth(e, kbs[0])
        });
    }
}

/// One K block of a unit: pack (conv), then every tile.
fn emit_kblock(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, unit: Unit, block: KBlock) {
    let Unit {
        pack,
        img,
        col0,
        ncols,
        row0,
        mrows,
    } = unit;
    let KBlock { k0, kc, acc, last } = block;
    let tiles = p.column_tiles(ncols);
    let ptr = types::I64;
    // B panel j of this block lives at `bbase + j * bstep`.
    let (bbase, bstep) = match &p.kind {
        // Handled by `emit_depthwise` / `winograd` / `int8`.
        Strategy::Depthwise(_)
        | Strategy::Winograd(..)
        | Strategy::MaxPool(_)
        | Strategy::Softmax
        | Strategy::LstmCell { .. }
        | Strategy::MatrixTranspose(_)
        | Strategy::SmallMap
        | Strategy::Int8(_)
        | Strategy::Sparse(_) => (pack, 0),
        Strategy::GemmConstantB => {
            // packed[(col0/16 + j)][k][16]
            let pan = e.b.ins().udiv_imm_u(col0, NR as i64);
            let o = e.b.ins().imul_imm_s(pan, (p.k * NR * 4) as i64);
            let ko = e.b.ins().imul_imm_s(k0, (NR * 4) as i64);
            let o = e.b.ins().iadd(o, ko);
            (e.b.ins().iadd(c.extra[0], o), (p.k * NR * 4) as i64)
        }
        Strategy::ImplicitGemm(_) if p.shared_patches() => {
            // Packed before the tasks (`emit_pack_patches`).
            let ci = e.b.ins().udiv_imm_u(col0, p.chunk as i64);
            (patches_at(e, p, c, img, ci, k0), (kc * NR * 4) as i64)
        }
        Strategy::ImplicitGemm(g) => {
            // A grouped conv: the patches of this part's group of input channels.
            let xb = conv_image(e, p, g, c, img);
            let xb = match p.group_rows() {
                Some(rows) => {
                    let gi = e.b.ins().udiv_imm_u(row0, rows as i64);
                    let go = e.b.ins().imul_imm_s(gi, group_offset(g, 1));
                    e.b.ins().iadd(xb, go)
                }
                None => xb,
            };
            pack_patches(e, p, g, c, pack, xb, col0, ncols, k0, kc);
            (pack, (kc * NR * 4) as i64)
        }
        Strategy::GemmRuntimeB { b_image, .. } => {
            let io = e.b.ins().imul_imm_s(img, *b_image);
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
        Strategy::Depthwise(_)
        | Strategy::Winograd(..)
        | Strategy::MaxPool(_)
        | Strategy::Softmax
        | Strategy::LstmCell { .. }
        | Strategy::MatrixTranspose(_)
        | Strategy::SmallMap
        | Strategy::Int8(_)
        | Strategy::Sparse(_) => (c.ins[1], 0),
        Strategy::GemmConstantB => (c.ins[0], p.k as i64 * 4),
        Strategy::GemmRuntimeB { a_image, .. } => {
            let io = e.b.ins().imul_imm_s(img, *a_image);
            (e.b.ins().iadd(c.ins[0], io), p.k as i64 * 4)
        }
        // Rows of a K block's packed weights are `kc` floats apart (see `packing::derived`).
        Strategy::ImplicitGemm(_) if p.a_layout == ALayout::PackedAtCompileTime => {
            (c.ins[1], kc as i64 * 4)
        }
        Strategy::ImplicitGemm(_) => (c.ins[1], p.k as i64 * 4),
    };
    let ldc = p.n as i64 * 4;
    let a_layout = p.a_layout;
    let a = match a_layout {
        ALayout::PackedAtCompileTime => c.extra[3],
        _ => {
            let ko = e.b.ins().imul_imm_s(k0, 4);
            e.b.ins().iadd(a, ko)
        }
    };
    let apack = if a_layout == ALayout::PackedAtRunTime {
        e.b.ins()
            .iadd_imm_s(pack, (p.pack_bytes() - p.apack_bytes()) as i64)
    } else {
        pack
    };
    let io = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
    let co = e.b.ins().imul_imm_s(col0, 4);
    let cbase_off = e.b.ins().iadd(io, co);
    let kcv = e.int_const(kc as i64);
    let ldav = e.int_const(lda);
    let ldcv = e.int_const(ldc);
    let bstepv = e.int_const(bstep);
    let epilogue = if last { p.epilogue.clone() } else { vec![] };
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    let row_bias = matches!(p.kind, Strategy::ImplicitGemm(_));
    let _ = ptr;
    // One tile: `mr` rows at A/C row offsets, panel at `bp`, column offset `colb` (bytes),
    // columns `cols` (the tile's shape and valid columns).
    let tile = |e: &mut Emitter,
                mr: usize,
                cols: ColumnTile,
                ablk: Value,
                arow: Value,
                crow: Value,
                rowb: Value,
                bp: Value,
                colb: Value| {
        let partial = cols.partial();
        let key = MicrokernelKey {
            isa: p.isa,
            mr,
            wide: cols.wide,
            packed_a: a_layout != ALayout::InPlace,
            half: cols.half,
            partial,
            accumulate: acc,
            transposed: false,
            epilogue: epilogue.clone(),
        };
        let f = c.microkernel(key);
        let pa = match a_layout {
            ALayout::InPlace => e.b.ins().iadd(a, arow),
            ALayout::PackedAtCompileTime => {
                let ko = e.b.ins().imul_imm_s(k0, (4 * p.m) as i64);
                let o = e.b.ins().iadd(arow, ko);
                e.b.ins().iadd(a, o)
            }
            ALayout::PackedAtRunTime => {
                let rel = e.b.ins().isub(arow, ablk);
                let t = e.b.ins().udiv_imm_u(rel, lda);
                let o = e.b.ins().imul_imm_s(t, (kc * 4) as i64);
                e.b.ins().iadd(apack, o)
            }
        };
        let coff = e.b.ins().iadd(cbase_off, crow);
        let coff = e.b.ins().iadd(coff, colb);
        let pc = e.b.ins().iadd(c.out, coff);
        let nr = e.int_const(cols.valid as i64);
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
        if cols.wide {
            e.b.ins()
                .call(f, &[pa, bp, pc, kcv, ldav, ldcv, nr, pb, pr, bstepv]);
        } else {
            e.b.ins()
                .call(f, &[pa, bp, pc, kcv, ldav, ldcv, nr, pb, pr]);
        }
    };
    // Rows of one M block at row offset (a, c, bias) with `mc` rows, all panels.
    let mblock = |e: &mut Emitter, mc: usize, ar: Value, cr: Value, br: Value| {
        let panel = |e: &mut Emitter, cols: ColumnTile, bp: Value, colb: Value| {
            let nfull = mc / MR;
            e.loop_offsets(
                nfull as i64,
                &[ar, cr, br],
                &[MR as i64 * lda, MR as i64 * ldc, MR as i64 * 4],
                &mut |e, _i, o| tile(e, MR, cols, ar, o[0], o[1], o[2], bp, colb),
            );
            let rem = mc % MR;
            if rem > 0 {
                let a2 = e.b.ins().iadd_imm_s(ar, (nfull * MR) as i64 * lda);
                let c2 = e.b.ins().iadd_imm_s(cr, (nfull * MR) as i64 * ldc);
                let b2 = e.b.ins().iadd_imm_s(br, (nfull * MR) as i64 * 4);
                tile(e, rem, cols, ar, a2, c2, b2, bp, colb);
            }
        };
        if a_layout == ALayout::PackedAtRunTime {
            let src = e.b.ins().iadd(a, ar);
            pack_a(e, src, apack, mc, kc, lda);
        }
        let zc = e.int_const(0);
        let per = if tiles.wide { 2 } else { 1 };
        let whole = ColumnTile {
            panel: 0,
            wide: tiles.wide,
            half: false,
            valid: per * NR,
        };
        e.loop_offsets(
            tiles.count as i64,
            &[bbase, zc],
            &[per as i64 * bstep, (per * NR * 4) as i64],
            &mut |e, _j, o| {
                panel(e, whole, o[0], o[1]);
            },
        );
        if let Some(t) = tiles.tail {
            let bp = e.b.ins().iadd_imm_s(bbase, t.panel as i64 * bstep);
            let colb = e.int_const((t.panel * NR * 4) as i64);
            panel(e, t, bp, colb);
        }
    };
    let mcb = p.mc;
    let nmb = mrows / mcb;
    let ar0 = e.b.ins().imul_imm_s(row0, lda);
    let cr0 = e.b.ins().imul_imm_s(row0, ldc);
    let br0 = e.b.ins().imul_imm_s(row0, 4);
    e.loop_offsets(
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
