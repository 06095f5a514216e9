#![allow(clippy::needless_range_loop)]
//! Packing for the microkernels: at compile time, the constant operands (a MatMul's B into
//! 16-column panels, a conv's weights into `MR`-row tiles of A, the conv's patch offset
//! tables); at run time, A blocks, B panels and conv patches, per K block into the task's
//! buffers.

use super::asm::{Routine, MR, NR};
use super::kernel_plan::{b_transposed, ALayout, KernelPlan, Strategy};
use super::sparse_skipped::Check;
use super::tasks::KernelArgs;
use super::winograd_weights::{self, FirstRunWeights};
use super::{int8, small_map, sparse, tap_classes};
use crate::builder::{if_else, shuffle_lanes, tensor_flags, Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::conv::ConvGeometry;
use crate::ops::matmul::pack_b;
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};

/// Data computed by the generated code at the first run instead of stored (AOT objects):
/// a Winograd conv's `U`, 1.8-4x its weights. Its kernel then takes, instead of
/// [`derived`]'s data, a zeroed writable object of [`FirstRunWeights::zeroed_bytes`] (the
/// same `extra[0]`) and the weights.
pub(crate) fn first_run_weights(
    info: &NodeInfo,
    p: &KernelPlan,
) -> Result<Option<FirstRunWeights>> {
    match &p.kind {
        Strategy::Winograd(g, r) => FirstRunWeights::new(info, g, *r).map(Some),
        _ => Ok(None),
    }
}

/// Compile-time data: the packed B (`GemmConstantB`) or the conv offset tables.
pub(crate) fn derived(info: &NodeInfo, p: &KernelPlan) -> Result<Vec<Vec<u8>>> {
    match &p.kind {
        Strategy::GemmRuntimeB { .. }
        | Strategy::Depthwise(_)
        | Strategy::MaxPool(_)
        | Strategy::Softmax
        | Strategy::LstmCell { .. }
        | Strategy::MatrixTranspose(_) => Ok(vec![]),
        Strategy::Winograd(g, r) => winograd_weights::transformed(info, g, *r),
        Strategy::SmallMap => small_map::derived(info),
        Strategy::Int8(q) => int8::derived(info, p, q),
        Strategy::GemmConstantB => {
            let b = info.consts[1]
                .as_ref()
                .ok_or_else(|| info.err("B is not constant"))?;
            Ok(vec![pack_b(info, b, b_transposed(info), NR)?])
        }
        Strategy::Sparse(plan) => sparse::derived(info, plan, p),
        Strategy::ImplicitGemm(g) => {
            let mut v = conv_tables(p, g);
            if p.a_layout == ALayout::PackedAtCompileTime {
                let w = info.consts[1]
                    .as_ref()
                    .and_then(|w| w.as_f32())
                    .ok_or_else(|| info.err("conv weight is not constant f32"))?;
                // K block by K block (each `m x kc` at `k0 m`), row tile by row tile (the
                // tile of rows from `r` at `r kc`, `[kc][mr]`): the row tiles a K block's
                // microkernels read one after another are one contiguous stream. (A grouped
                // conv's rows are its groups' weights, `k` deep each.)
                let (m, k) = (p.m, p.k);
                // Tap classes order K tap by tap (see `conv_tables`).
                let permuted: Vec<f32>;
                let w = if p.taps.is_some() {
                    let taps = g.kh * g.kw;
                    permuted = (0..m * k)
                        .map(|i| {
                            let (r, kk) = (i / k, i % k);
                            let (t, c) = (kk / g.cg, kk % g.cg);
                            w[r * k + c * taps + t]
                        })
                        .collect();
                    &permuted[..]
                } else {
                    w
                };
                let mut out = vec![0f32; m * k];
                let tiles = p.row_tiles();
                let mut k0 = 0;
                for kc in p.kblocks() {
                    let block = &mut out[k0 * m..(k0 + kc) * m];
                    for &(r0, mr) in &tiles {
                        for kk in 0..kc {
                            for r in 0..mr {
                                block[r0 * kc + kk * mr + r] = w[(r0 + r) * k + k0 + kk];
                            }
                        }
                    }
                    k0 += kc;
                }
                v.push(out.iter().flat_map(|x| x.to_le_bytes()).collect());
            }
            if let Some(t) = &p.taps {
                v.push(t.unit_table(g.cg));
            }
            Ok(v)
        }
    }
}

/// Bytes from an image's first input channel to group `gi`'s (0 without groups).
pub(super) fn group_offset(g: &ConvGeometry, gi: usize) -> i64 {
    (gi * g.cg * g.hp * g.wp * 4) as i64
}

/// The patch tables of a conv's panel packing ([`pack_panels`]): each tap's offset in the
/// (padded) input image, each output pixel's window origin, and per 4 pixels whether they
/// load contiguously.
pub(super) fn conv_tables(p: &KernelPlan, g: &ConvGeometry) -> Vec<Vec<u8>> {
    let np = p.n.div_ceil(NR) * NR;
    let (koff, pix) = match &p.taps {
        Some(t) => tap_classes::offset_tables(t, g, np),
        None => padded_tables(p, g, np),
    };
    // Per group of 4 pixels: 1 = contiguous (one vector load per k), 2 = every other
    // float (two loads and an even-lane shuffle per k; only where the second load's
    // extra float stays inside the source buffer), 0 = gathered one by one.
    let images = if p.fold > 0 { g.n } else { 1 };
    let src_bytes = if p.pad_bytes() > 0 {
        p.pad_bytes() / g.n * images
    } else {
        g.c * g.h * g.w * 4 * images
    } as i64;
    let max_koff = koff.iter().copied().max().unwrap_or(0) + group_offset(g, g.groups - 1);
    let contig: Vec<i64> = (0..np / 4)
        .map(|q| {
            let step = |d: i64| {
                (0..4).all(|l| {
                    let x = 4 * q + l;
                    x < p.n && pix[x] == pix[4 * q] + d * l as i64
                })
            };
            if step(4) {
                1
            } else if step(8) && pix[4 * q] + max_koff + 32 <= src_bytes {
                2
            } else {
                0
            }
        })
        .collect();
    let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    vec![bytes(&koff), bytes(&pix), bytes(&contig)]
}

/// The patch offset tables over the padded copy (`np` columns): per K row (channel, tap)
/// and per column (its window's origin).
fn padded_tables(p: &KernelPlan, g: &ConvGeometry, np: usize) -> (Vec<i64>, Vec<i64>) {
    let plane = g.hp * g.wp;
    // (Over one group's input channels: a grouped conv's units start at their group's.)
    let mut koff: Vec<i64> = Vec::with_capacity(p.k);
    for c in 0..g.cg {
        for kh in 0..g.kh {
            for kw in 0..g.kw {
                koff.push(((c * plane + kh * g.dh * g.wp + kw * g.dw) * 4) as i64);
            }
        }
    }
    // (Images folded into the columns: column q is pixel q % fold of image q / fold.)
    let per_image = if p.fold > 0 { p.fold } else { p.n.max(1) };
    let image_bytes = (g.c * g.hp * g.wp * 4) as i64;
    let pix: Vec<i64> = (0..np)
        .map(|q| {
            if q < p.n {
                let (img, x) = (q / per_image, q % per_image);
                let (oh, ow) = (x / g.ow, x % g.ow);
                img as i64 * image_bytes + ((oh * g.sh * g.wp + ow * g.sw) * 4) as i64
            } else {
                0
            }
        })
        .collect();
    (koff, pix)
}

/// Pack patches `[k0, k0 + kc)` of columns `col0 .. col0 + 16 * npan` into `npan` panels of
/// `kc x 16` at `pack`; `xb` is this image's (padded) input.
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_panels(
    e: &mut Emitter,
    c: &KernelArgs,
    pack: Value,
    xb: Value,
    col0: Value,
    npan: usize,
    k0: Value,
    kc: usize,
    check: Option<&Check>,
) {
    let panel_bytes = (kc * NR * 4) as i64;
    pack_panels_into(e, c, pack, panel_bytes, xb, col0, npan, k0, kc, check);
}

/// [`pack_panels`] into panels `panel_bytes` apart (rows `[k0, k0 + kc)` of longer panels
/// when `pack` points at row `k0` of the first).
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_panels_into(
    e: &mut Emitter,
    c: &KernelArgs,
    pack: Value,
    panel_bytes: i64,
    xb: Value,
    col0: Value,
    npan: usize,
    k0: Value,
    kc: usize,
    check: Option<&Check>,
) {
    let (koff, pix, contig) = (c.extra[0], c.extra[1], c.extra[2]);
    let kb = e.b.ins().imul_imm_s(k0, 8);
    let kt = e.b.ins().iadd(koff, kb);
    let pixo = e.b.ins().imul_imm_s(col0, 8);
    let z = e.int_const(0);
    e.loop_offsets(
        npan as i64,
        &[z, pixo],
        &[panel_bytes, (NR * 8) as i64],
        &mut |e, _j, o| {
            let dst = e.b.ins().iadd(pack, o[0]);
            // flags index = pixel / 4 -> byte offset (pixel * 8) / 4
            let fo = e.b.ins().ushr_imm_u(o[1], 2);
            let flags: Vec<Value> = (0..4)
                .map(|g| {
                    let f = e.b.ins().iadd_imm_s(fo, (g * 8) as i64);
                    e.load(types::I64, contig, f)
                })
                .collect();
            let f01 = e.b.ins().band(flags[0], flags[1]);
            let f23 = e.b.ins().band(flags[2], flags[3]);
            let f = e.b.ins().band(f01, f23);
            // Flags are 0, 1 or 2: bit 0 of the AND is set iff all are 1, bit 1 iff all are 2.
            let all = e.b.ins().band_imm_u(f, 1);
            let all2 = e.b.ins().band_imm_u(f, 2);
            // Base pointer of every pixel of the panel.
            let po: Vec<Value> = (0..NR)
                .map(|l| {
                    let off = e.b.ins().iadd_imm_s(o[1], (l * 8) as i64);
                    let pv = e.load(types::I64, pix, off);
                    e.b.ins().iadd(xb, pv)
                })
                .collect();
            let zz = e.int_const(0);
            // Every group of 4 pixels is contiguous (one offset load per k), or reads every
            // other float (stride 2: two loads and an even-lane shuffle per group and k).
            let panels = |e: &mut Emitter, stride2: bool| {
                e.loop_offsets(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                    let ko = e.load(types::I64, kt, q[0]);
                    let d = e.b.ins().iadd(dst, q[1]);
                    for g in 0..4 {
                        let v = if stride2 {
                            evens(e, po[4 * g], ko)
                        } else {
                            e.load(F32X4, po[4 * g], ko)
                        };
                        e.b.ins().store(tensor_flags(), v, d, (g * 16) as i32);
                        if let Some(check) = check {
                            check.vector(e, g, v);
                        }
                    }
                });
            };
            // A panel of 16 evenly spaced pixels (dword stride 1 or 2: a conv's output row):
            // the assembled row copy, 64 bytes a row (not with a check: it reads every value).
            let spaced_or_not = |e: &mut Emitter, stride: usize| {
                let routine = c
                    .microkernels
                    .get(&Routine::PanelRows { stride })
                    .copied()
                    .filter(|_| check.is_none());
                let Some(f) = routine else {
                    return panels(e, stride == 2);
                };
                let mut spaced = None;
                for g in 1..4 {
                    let d = e.b.ins().isub(po[4 * g], po[4 * (g - 1)]);
                    let even = e.b.ins().icmp_imm_s(IntCC::Equal, d, 16 * stride as i64);
                    spaced = Some(match spaced {
                        Some(c) => e.b.ins().band(c, even),
                        None => even,
                    });
                }
                let rows = e.int_const(kc as i64);
                if_else(
                    e,
                    spaced.expect("three differences"),
                    &mut |e| {
                        e.b.ins().call(f, &[dst, po[0], kt, rows]);
                    },
                    &mut |e| panels(e, stride == 2),
                );
            };
            if_else(e, all, &mut |e| spaced_or_not(e, 1), &mut |e| {
                if_else(e, all2, &mut |e| spaced_or_not(e, 2), &mut |e| {
                    for g in 0..4 {
                        let dg = e.b.ins().iadd_imm_s(dst, (g * 16) as i64);
                        let pg = &po[4 * g..4 * g + 4];
                        let is1 = e.b.ins().icmp_imm_s(IntCC::Equal, flags[g], 1);
                        let is2 = e.b.ins().icmp_imm_s(IntCC::Equal, flags[g], 2);
                        let vector = |e: &mut Emitter, stride2: bool| {
                            e.loop_offsets(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                                let ko = e.load(types::I64, kt, q[0]);
                                let v = if stride2 {
                                    evens(e, pg[0], ko)
                                } else {
                                    e.load(F32X4, pg[0], ko)
                                };
                                e.store(v, dg, q[1]);
                                if let Some(check) = check {
                                    check.vector(e, g, v);
                                }
                            });
                        };
                        if_else(e, is1, &mut |e| vector(e, false), &mut |e| {
                            if_else(e, is2, &mut |e| vector(e, true), &mut |e| {
                                e.loop_offsets(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                                    let ko = e.load(types::I64, kt, q[0]);
                                    let d = e.b.ins().iadd(dg, q[1]);
                                    for l in 0..4 {
                                        let v = e.load(types::F32, pg[l], ko);
                                        e.b.ins().store(tensor_flags(), v, d, (l * 4) as i32);
                                        if let Some(check) = check {
                                            check.scalar(e, v);
                                        }
                                    }
                                });
                            })
                        });
                    }
                });
            });
        },
    );
}

/// Floats 0, 2, 4, 6 from `p + off` (reads 8 floats less one: the caller guarantees the
/// eighth is inside the buffer).
fn evens(e: &mut Emitter, p: Value, off: Value) -> Value {
    let a = e.b.ins().iadd(p, off);
    let lo = e.b.ins().load(F32X4, tensor_flags(), a, 0);
    let hi = e.b.ins().load(F32X4, tensor_flags(), a, 16);
    shuffle_lanes(e, lo, hi, [0, 2, 4, 6])
}

/// Pack `mc` rows of A (row 0 at `src`, rows `lda` bytes apart, `kc` floats each) into row
/// tiles of `MR` (`[kc][MR]`, the last tile `[kc][mc % MR]`) at `dst`.
pub(super) fn pack_a(e: &mut Emitter, src: Value, dst: Value, mc: usize, kc: usize, lda: i64) {
    let nfull = mc / MR;
    let tiles = |e: &mut Emitter, mr: usize, s0: Value, d0: Value| {
        let zz = e.int_const(0);
        e.loop_offsets(
            kc as i64,
            &[zz, zz],
            &[4, (4 * mr) as i64],
            &mut |e, _k, q| {
                let s = e.b.ins().iadd(s0, q[0]);
                let d = e.b.ins().iadd(d0, q[1]);
                let v: Vec<Value> = (0..mr)
                    .map(|r| {
                        e.b.ins()
                            .load(types::F32, tensor_flags(), s, (r as i64 * lda) as i32)
                    })
                    .collect();
                for (r, &x) in v.iter().enumerate() {
                    e.b.ins().store(tensor_flags(), x, d, (r * 4) as i32);
                }
            },
        );
    };
    e.loop_offsets(
        nfull as i64,
        &[src, dst],
        &[MR as i64 * lda, (MR * kc * 4) as i64],
        &mut |e, _t, o| tiles(e, MR, o[0], o[1]),
    );
    if !mc.is_multiple_of(MR) {
        let s = e.b.ins().iadd_imm_s(src, (nfull * MR) as i64 * lda);
        let d = e.b.ins().iadd_imm_s(dst, (nfull * MR * kc * 4) as i64);
        tiles(e, mc % MR, s, d);
    }
}

/// Pack `kc` rows x `ncols` columns of a row-major B (`src` at the block's top-left, rows
/// `ldb` bytes apart) into panels of `[kc][16]` at `dst`, zero-padding the last panel.
/// Deep blocks (`kc > 32`) row by row: each row is read front to back and scattered over the
/// panels (measured on MobileNetV2's projects, K = 96, 144: a third less packing time than
/// panel by panel, which reads `kc` rows one line at a time); shallow ones panel by panel
/// (K = 16 at 112x112: row by row was slower).
pub(super) fn pack_b_rt(
    e: &mut Emitter,
    src: Value,
    dst: Value,
    ncols: usize,
    kc: usize,
    ldb: i64,
) {
    if kc <= 32 {
        pack_b_panels(e, src, dst, ncols, kc, ldb);
        return;
    }
    let full = ncols / NR;
    let rest = ncols % NR;
    let pstep = (kc * NR * 4) as i64;
    let zv = e.float_const(F32X4, 0.0);
    e.loop_offsets(kc as i64, &[src, dst], &[ldb, 64], &mut |e, _k, q| {
        let (sk, dk) = (q[0], q[1]);
        e.loop_offsets(
            full as i64,
            &[sk, dk],
            &[(NR * 4) as i64, pstep],
            &mut |e, _j, o| {
                let v: Vec<Value> = (0..4)
                    .map(|l| e.b.ins().load(F32X4, tensor_flags(), o[0], l * 16))
                    .collect();
                for (l, &x) in v.iter().enumerate() {
                    e.b.ins().store(tensor_flags(), x, o[1], (l * 16) as i32);
                }
            },
        );
        if rest > 0 {
            let s = e.b.ins().iadd_imm_s(sk, (full * NR * 4) as i64);
            let d = e.b.ins().iadd_imm_s(dk, full as i64 * pstep);
            for l in 0..4 {
                e.b.ins().store(tensor_flags(), zv, d, l * 16);
            }
            for j in 0..rest {
                let x =
                    e.b.ins()
                        .load(types::F32, tensor_flags(), s, (j * 4) as i32);
                e.b.ins().store(tensor_flags(), x, d, (j * 4) as i32);
            }
        }
    });
}

/// Panel by panel: [`pack_b_rt`] for shallow blocks (`kc` rows of one line each per panel).
fn pack_b_panels(e: &mut Emitter, src: Value, dst: Value, ncols: usize, kc: usize, ldb: i64) {
    let full = ncols / NR;
    let rest = ncols % NR;
    let pstep = (kc * NR * 4) as i64;
    e.loop_offsets(
        full as i64,
        &[src, dst],
        &[(NR * 4) as i64, pstep],
        &mut |e, _j, o| {
            let (s0, d0) = (o[0], o[1]);
            let zz = e.int_const(0);
            e.loop_offsets(kc as i64, &[zz, zz], &[ldb, 64], &mut |e, _k, q| {
                let s = e.b.ins().iadd(s0, q[0]);
                let d = e.b.ins().iadd(d0, q[1]);
                let v: Vec<Value> = (0..4)
                    .map(|l| e.b.ins().load(F32X4, tensor_flags(), s, l * 16))
                    .collect();
                for (l, &x) in v.iter().enumerate() {
                    e.b.ins().store(tensor_flags(), x, d, (l * 16) as i32);
                }
            });
        },
    );
    if rest > 0 {
        let s0 = e.b.ins().iadd_imm_s(src, (full * NR * 4) as i64);
        let d0 = e.b.ins().iadd_imm_s(dst, full as i64 * pstep);
        let zv = e.float_const(F32X4, 0.0);
        let zz = e.int_const(0);
        e.loop_offsets(kc as i64, &[zz, zz], &[ldb, 64], &mut |e, _k, q| {
            let s = e.b.ins().iadd(s0, q[0]);
            let d = e.b.ins().iadd(d0, q[1]);
            for l in 0..4 {
                e.b.ins().store(tensor_flags(), zv, d, l * 16);
            }
            for j in 0..rest {
                let x =
                    e.b.ins()
                        .load(types::F32, tensor_flags(), s, (j * 4) as i32);
                e.b.ins().store(tensor_flags(), x, d, (j * 4) as i32);
            }
        });
    }
}
