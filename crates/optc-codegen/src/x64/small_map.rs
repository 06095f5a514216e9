//! 1x1 convs on small maps (`Strategy::SmallMap`, e.g. MobileNetV2's 7x7 stage: N = 49 pixels, and
//! its deep 14x14 projects; see [`applies`]) with the GEMM roles swapped: the microkernel's rows
//! are pixels and its 16 columns output channels, from the weights packed at compile time into
//! 16-channel panels (`[M / 16][K][16]`, the layout of a constant MatMul B). Compared with pixels
//! as 16-wide panels (49 = 3 x 16 + a 1-column tail computed 8 wide), no column is wasted.
//!
//! Before the tasks, the input `[K][N]` of every image is packed into 6-pixel tiles (`[K][6]` each,
//! the last `[K][N % 6]`, or 4 + 3 rather than 6 + 1: see [`tiles`]; the layout of packed A) at the
//! start of the node's scratch. A unit is a group of channel panels of one image; per panel and K
//! block (the panel's block stays in L1), every pixel tile (streamed from L2). With one K block,
//! the `transposed` microkernels apply the epilogue and store the tile transposed into the NCHW
//! output; with several, the partial sums go to a per-task buffer of row-layout tiles (plain
//! kernels, 64-byte rows) and the last block's `transposed` kernel adds them.

use super::asm::{Epilogue, Isa, MicrokernelKey, MR, NR};
use super::kernel_plan::{KernelPlan, MAX_TASKS};
use super::tasks::{release_slot, task_buffers, task_units, KernelArgs};
use crate::builder::{if_else, tensor_flags, Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::matmul::pack_b;
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};

/// Depth of a K block: a panel's block (`KC x 64` bytes) and a pixel tile's (`KC x 24`)
/// together in L1 (32 KiB), e.g. K = 320 in one block.
pub(super) const KC: usize = 384;

/// Whether a 1x1 conv of `m` output channels, depth `k`, on `n` pixels takes this path:
/// AVX2, `m` a multiple of 16, a residual only as the last epilogue step, and
/// - at most 64 pixels whose 16-column panels cost at least 4% more than 6-pixel tiles, or
/// - at most 256 pixels, tiles costing no more than panels, and `k >= m`: the usual path
///   splits the few column units by rows, each part packing the deep B again (measured on
///   MobileNetV2's 14x14 projects, K = 384, 576: 7-10% faster; its expands, K = 64, 96 for
///   M = 384, 576, were 1-2% slower).
pub(super) fn applies(isa: Isa, m: usize, k: usize, n: usize, epilogues: &[Epilogue]) -> bool {
    if isa != Isa::Avx2 || m == 0 || !m.is_multiple_of(NR) || n == 0 || n > 256 {
        return false;
    }
    // A residual (added in the transposed store) only as the last step.
    let n_ep = epilogues.len();
    if epilogues
        .iter()
        .enumerate()
        .any(|(i, e)| *e == Epilogue::BiasCol || (*e == Epilogue::Residual && i + 1 < n_ep))
    {
        return false;
    }
    // Columns computed: full panels, and a tail of <= 8 columns on the half kernel.
    let tail = n % NR;
    let cols = n / NR * NR
        + match tail {
            0 => 0,
            t if t <= NR / 2 => NR / 2,
            _ => NR,
        };
    // Rows computed: full tiles, and a last tile of `n % 6` rows, which costs about 2 rows
    // at least (with the k steps over several accumulator sets, its loads bound it).
    let rows = n / MR * MR
        + match n % MR {
            0 => 0,
            r => r.max(2),
        };
    if n <= 64 {
        rows * 100 < cols * 96
    } else {
        rows <= cols && k >= m
    }
}

/// The epilogue of the swapped tiles: the conv's per-channel bias is per column.
pub(super) fn epilogue(epilogues: &[Epilogue]) -> Vec<Epilogue> {
    epilogues
        .iter()
        .map(|e| {
            if *e == Epilogue::BiasRow {
                Epilogue::BiasCol
            } else {
                *e
            }
        })
        .collect()
}

/// Channel rows per unit (a multiple of 16): the fewest panels per unit giving at most 16
/// units, an even count if one exists (two threads pulling units in order then finish
/// together: 10 panels as 10 units, not 5 of 2 split 3 / 2).
pub(super) fn mrows(m: usize) -> usize {
    let panels = m / NR;
    let ok = |pu: usize| panels.div_ceil(pu) <= MAX_TASKS;
    let even = (1..=panels).find(|&pu| {
        let u = panels.div_ceil(pu);
        ok(pu) && u.is_multiple_of(2) && (u - 1) * pu < panels && panels.is_multiple_of(pu)
    });
    let pu = even.unwrap_or_else(|| (1..=panels).find(|&pu| ok(pu)).unwrap_or(panels.max(1)));
    pu * NR
}

/// The pixel tiles `(first row, rows)`: 6 rows each, the last `n % 6`; a last single row
/// (one accumulator pair, FMA-latency bound) joins the tile before it as 4 + 3 rows.
pub(super) fn tiles(n: usize) -> Vec<(usize, usize)> {
    let mut v: Vec<(usize, usize)> = (0..n / MR).map(|t| (t * MR, MR)).collect();
    match n % MR {
        0 => {}
        1 if n > MR => {
            let (r0, _) = v.pop().expect("a full tile");
            v.push((r0, 4));
            v.push((r0 + 4, 3));
        }
        r => v.push((n - r, r)),
    }
    v
}

/// Bytes of the packed input (all images) at the start of the scratch: tile `(r0, mr)` of
/// an image at `r0 K` floats, `[K][mr]`.
pub(super) fn apack_bytes(p: &KernelPlan) -> usize {
    p.nimg * p.k * p.n * 4
}

/// Bytes of a task's partial-sum tiles (one panel's tiles, row `r` at `64 r` bytes), with
/// several K blocks.
pub(super) fn tmp_bytes(p: &KernelPlan) -> usize {
    if p.kblocks().len() > 1 {
        p.n * NR * 4
    } else {
        0
    }
}

/// The distinct tile heights.
fn heights(n: usize) -> Vec<usize> {
    let mut mrs = vec![];
    for (_, mr) in tiles(n) {
        if !mrs.contains(&mr) {
            mrs.push(mr);
        }
    }
    mrs
}

pub(super) fn keys(p: &KernelPlan) -> Vec<MicrokernelKey> {
    let mrs = heights(p.n);
    let multi = p.kblocks().len() > 1;
    let mut v = vec![];
    for mr in mrs {
        if multi {
            v.push(key(p, mr, false, false));
            v.push(key(p, mr, false, true));
        }
        v.push(key(p, mr, true, multi));
    }
    v
}

/// The `mr`-row kernel: `transposed` (the transposed store with the epilogue) or plain (row-layout
/// partial sums, no epilogue); `acc`: add the sums so far.
pub(super) fn key(p: &KernelPlan, mr: usize, transposed: bool, acc: bool) -> MicrokernelKey {
    MicrokernelKey {
        isa: p.isa,
        mr,
        packed_a: true,
        wide: false,
        half: false,
        partial: false,
        accumulate: acc,
        transposed,
        epilogue: if transposed {
            p.epilogue.clone()
        } else {
            vec![]
        },
    }
}

/// The weights `W[M][K]` as 16-channel panels `[M / 16][K][16]`.
pub(super) fn derived(info: &NodeInfo) -> Result<Vec<Vec<u8>>> {
    let w = info.consts[1]
        .as_ref()
        .filter(|w| w.as_f32().is_some())
        .ok_or_else(|| info.err("conv weight is not constant f32"))?;
    // The weights `[M][K]` (a 1x1 kernel) are the transposed B of the swapped product.
    Ok(vec![pack_b(info, w, true, NR)?])
}

/// Pack every image's input into pixel tiles at the start of the scratch (serial, before
/// the tasks): per k, each tile's `mr` floats in pieces of 4, 2 and 1.
pub(super) fn emit_pack(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs) {
    let (n, k) = (p.n, p.k);
    let tl = tiles(n);
    let mrs = heights(n);
    let z = e.int_const(0);
    e.loop_offsets(
        p.nimg as i64,
        &[z, z],
        &[(k * n * 4) as i64, (k * n * 4) as i64],
        &mut |e, _i, o| {
            let src = e.b.ins().iadd(c.ins[0], o[0]);
            let dst = e.b.ins().iadd(c.scratch, o[1]);
            // Offsets per k: the input row, then row k of a tile of each height.
            let mut init = vec![e.int_const(0)];
            let mut steps = vec![(n * 4) as i64];
            for &mr in &mrs {
                init.push(init[0]);
                steps.push((mr * 4) as i64);
            }
            e.loop_offsets(k as i64, &init, &steps, &mut |e, _k, q| {
                let s = e.b.ins().iadd(src, q[0]);
                for &(r0, mr) in &tl {
                    let h = mrs.iter().position(|&x| x == mr).expect("a height");
                    let d = e.b.ins().iadd(dst, q[1 + h]);
                    let dof = (r0 * k * 4) as i32;
                    let mut r = 0;
                    while r < mr {
                        let (ty, w) = match mr - r {
                            x if x >= 4 => (F32X4, 4),
                            x if x >= 2 => (types::F64, 2),
                            _ => (types::F32, 1),
                        };
                        let v = e.b.ins().load(ty, tensor_flags(), s, ((r0 + r) * 4) as i32);
                        e.b.ins().store(tensor_flags(), v, d, dof + (r * 4) as i32);
                        r += w;
                    }
                }
            });
        },
    );
}

/// The units of task `t`: per unit, its channel panels, each over all pixel tiles.
pub(super) fn emit_task(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    let (lo, hi) = task_units(e, p, t);
    let (slot, tmp) = task_buffers(e, p, c);
    let mparts = p.mparts();
    let last_rows = p.last_part_rows();
    e.loop_range(lo, hi, &mut |e, u| {
        let mp = e.b.ins().urem_imm_u(u, mparts as i64);
        let img = e.b.ins().udiv_imm_u(u, mparts as i64);
        if mparts == 1 || last_rows == p.mrows {
            emit_unit(e, p, c, tmp, img, mp, last_rows);
        } else {
            let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, mp, mparts as i64 - 1);
            if_else(
                e,
                is_last,
                &mut |e| emit_unit(e, p, c, tmp, img, mp, last_rows),
                &mut |e| emit_unit(e, p, c, tmp, img, mp, p.mrows),
            );
        }
    });
    if let Some(slot) = slot {
        release_slot(e, p, c, slot);
    }
}

/// Channels `[mp * mrows, + rows)` of image `img`.
pub(super) fn emit_unit(
    e: &mut Emitter,
    p: &KernelPlan,
    c: &KernelArgs,
    tmp: Value,
    img: Value,
    mp: Value,
    rows: usize,
) {
    let (n, k) = (p.n, p.k);
    let ldc = (n * 4) as i64;
    let tl = tiles(n);
    let nfull = tl.iter().take_while(|t| t.1 == MR).count();
    let xo = e.b.ins().imul_imm_s(img, (k * n * 4) as i64);
    let x = e.b.ins().iadd(c.scratch, xo);
    let oo = e.b.ins().imul_imm_s(img, (p.m * n * 4) as i64);
    let out = e.b.ins().iadd(c.out, oo);
    // First panel of the unit: B, C and bias offsets.
    let pan0 = e.b.ins().imul_imm_s(mp, (p.mrows / NR) as i64);
    let bo = e.b.ins().imul_imm_s(pan0, (k * NR * 4) as i64);
    let co = e.b.ins().imul_imm_s(pan0, NR as i64 * ldc);
    let biaso = e.b.ins().imul_imm_s(pan0, (NR * 4) as i64);
    let ldv = e.int_const(ldc);
    let tmp_ld = e.int_const((NR * 4) as i64);
    let nrv = e.int_const(NR as i64);
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    let kbs = p.kblocks();
    let nkb = kbs.len();
    e.loop_offsets(
        (rows / NR) as i64,
        &[bo, co, biaso],
        &[(k * NR * 4) as i64, NR as i64 * ldc, (NR * 4) as i64],
        &mut |e, _j, o| {
            let cp = e.b.ins().iadd(out, o[1]);
            let pb = match bias {
                Some(bv) => e.b.ins().iadd(bv, o[2]),
                None => cp,
            };
            // K block `[k0, k0 + kc)`: every tile.
            let block = |e: &mut Emitter, k0: usize, kc: usize, b: usize| {
                // The last block stores transposed (adding the sums so far when there are
                // several blocks); the others keep row-layout sums in `tmp`.
                let transposed = b + 1 == nkb;
                let acc = if transposed { nkb > 1 } else { b > 0 };
                let bp = e.b.ins().iadd_imm_s(o[0], (k0 * NR * 4) as i64);
                let bp = e.b.ins().iadd(c.extra[0], bp);
                let kcv = e.int_const(kc as i64);
                // One tile of `mr` rows: packed A at `a`, its sums at `tt`, C at `r4` bytes
                // from the panel's row start.
                let call = |e: &mut Emitter, mr: usize, a: Value, tt: Value, r4: Value| {
                    let f = c.microkernel(key(p, mr, transposed, acc));
                    if transposed {
                        // C and the residual: the same offset from the output / residual;
                        // the sums so far (`tmp`) in the `nr` argument.
                        let off = e.b.ins().iadd(o[1], r4);
                        let off = e.b.ins().iadd(oo, off);
                        let cc = e.b.ins().iadd(c.out, off);
                        let pr = match res {
                            Some(rv) => e.b.ins().iadd(rv, off),
                            None => cc,
                        };
                        e.b.ins().call(f, &[a, bp, cc, kcv, ldv, ldv, tt, pb, pr]);
                    } else {
                        e.b.ins()
                            .call(f, &[a, bp, tt, kcv, tmp_ld, tmp_ld, nrv, tt, tt]);
                    }
                };
                // The full tiles (the first `nfull`, rows 6 t) in a loop, then the others.
                let a0 = e.b.ins().iadd_imm_s(x, (k0 * MR * 4) as i64);
                let z = e.int_const(0);
                e.loop_offsets(
                    nfull as i64,
                    &[a0, tmp, z],
                    &[(MR * k * 4) as i64, (MR * NR * 4) as i64, (MR * 4) as i64],
                    &mut |e, _t, q| call(e, MR, q[0], q[1], q[2]),
                );
                for &(r0, mr) in &tl[nfull..] {
                    let a = e.b.ins().iadd_imm_s(x, (r0 * k * 4 + k0 * mr * 4) as i64);
                    let tt = e.b.ins().iadd_imm_s(tmp, (r0 * NR * 4) as i64);
                    let r4 = e.int_const((r0 * 4) as i64);
                    call(e, mr, a, tt, r4);
                }
            };
            let mut k0 = 0;
            for (b, &kc) in kbs.iter().enumerate() {
                block(e, k0, kc, b);
                k0 += kc;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_short_pixel_rows() {
        let relu6 = [Epilogue::BiasRow, Epilogue::Clip(0, 0x40c0_0000)];
        // 7x7: 56 columns computed as panels, 50 row-equivalents as tiles.
        assert!(applies(Isa::Avx2, 1280, 320, 49, &relu6));
        assert!(applies(Isa::Avx2, 16, 8, 1, &[]));
        assert!(applies(Isa::Avx2, 32, 8, 25, &[]));
        assert!(applies(
            Isa::Avx2,
            160,
            960,
            49,
            &[Epilogue::BiasRow, Epilogue::Residual]
        ));
        // 14x14 projects; not 28x28 ones.
        assert!(applies(Isa::Avx2, 96, 576, 196, &[]));
        assert!(!applies(Isa::Avx2, 32, 192, 784, &[]));
        // Exact panels, 14x14 expands, non-multiples of 16 channels, AVX-512, steps after a
        // residual: no.
        assert!(!applies(Isa::Avx2, 1280, 320, 64, &[]));
        assert!(!applies(Isa::Avx2, 64, 64, 16, &[]));
        assert!(!applies(Isa::Avx2, 576, 96, 196, &[]));
        assert!(!applies(Isa::Avx2, 1000, 320, 49, &[]));
        assert!(!applies(Isa::Avx512, 1280, 320, 49, &[]));
        assert!(!applies(
            Isa::Avx2,
            160,
            960,
            49,
            &[Epilogue::Residual, Epilogue::Relu]
        ));
        assert_eq!(epilogue(&relu6)[0], Epilogue::BiasCol);
        assert_eq!(mrows(1280), 80);
        assert_eq!(mrows(960), 80);
        assert_eq!(mrows(160), 16);
        assert_eq!(mrows(48), 16);
        assert_eq!(tiles(49)[7..], [(42, 4), (46, 3)]);
        assert_eq!(tiles(14), [(0, 6), (6, 6), (12, 2)]);
        assert_eq!(tiles(1), [(0, 1)]);
        assert_eq!(tiles(12), [(0, 6), (6, 6)]);
    }
}
