//! MatMul and Gemm on the generic path: a batched GEMM of f32x4 register tiles (`MR x 8`),
//! a constant B packed into 8-column tiles at compile time.

use crate::builder::{tensor_flags, Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::elementwise::Elementwise;
use crate::ops::map::map;
use crate::ops::operand::{broadcast_strides, element_strides, Operand};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use optc_ir::{DType, Op, Tensor};

/// Columns per packed tile of a constant GEMM operand B.
pub(super) const NR: usize = 8;

/// Pack a constant `B` (logically `[K, N]`, stored `[N, K]` when `trans`) into tiles of
/// `columns` columns: `packed[t][k][j] = B[k][t * columns + j]`, zero-padded to whole tiles,
/// so the GEMM inner loop walks B sequentially (`NR` here, 16-column panels for the x64
/// microkernels).
pub(crate) fn pack_b(info: &NodeInfo, b: &Tensor, trans: bool, columns: usize) -> Result<Vec<u8>> {
    let v = b.as_f32().ok_or_else(|| info.err("B is not f32"))?;
    let (r, c) = (b.shape()[0], b.shape()[1]);
    let (k, n) = if trans { (c, r) } else { (r, c) };
    let tiles = n.div_ceil(columns);
    let mut p = vec![0f32; tiles * k * columns];
    // Read B in its own order (a transposed B row by row: column by column, its k strided,
    // missed the cache on every element of AlexNet's 9216 x 4096 layer).
    if trans {
        for (j, row) in v.chunks_exact(c).enumerate() {
            let tile = &mut p[(j / columns) * k * columns..];
            for (kk, &x) in row.iter().enumerate() {
                tile[kk * columns + j % columns] = x;
            }
        }
    } else {
        for (kk, row) in v.chunks_exact(c).enumerate() {
            for (j, &x) in row.iter().enumerate() {
                p[((j / columns) * k + kk) * columns + j % columns] = x;
            }
        }
    }
    let mut bytes = Vec::with_capacity(p.len() * 4);
    for x in p {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// Matrix products.

/// One batched GEMM: `out[b] = alpha * A[b] @ B[b]` with element strides.
pub(super) struct BatchedGemm {
    pub batch: Vec<usize>,
    /// Element strides per batch dim: a, b, out.
    pub bst: [Vec<i64>; 3],
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub am: i64,
    pub ak: i64,
    pub bk: i64,
    pub bn: i64,
    /// Bytes between consecutive `NR`-column tiles of B when B is packed (`pack_b`).
    pub b_packed: Option<i64>,
    pub alpha: f32,
}

impl BatchedGemm {
    /// Byte offset of column `c` of B (row 0).
    fn boff(&self, c: usize) -> i64 {
        match self.b_packed {
            Some(t) => (c / NR) as i64 * t + (c % NR) as i64 * 4,
            None => c as i64 * self.bn * 4,
        }
    }
    /// B byte stride between consecutive k.
    fn bk_bytes(&self) -> i64 {
        match self.b_packed {
            Some(_) => NR as i64 * 4,
            None => self.bk * 4,
        }
    }
}

pub(super) fn lower_matmul(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    extra: &[Value],
) -> Result<()> {
    let mut sa = info.ins[0].shape.clone();
    let mut sb = info.ins[1].shape.clone();
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let ba = &sa[..sa.len() - 2];
    let bb = &sb[..sb.len() - 2];
    let batch = optc_ir::broadcast_shapes(ba, bb).map_err(|x| info.err(x.msg))?;
    if info.ins[0].dtype == DType::F64 {
        let bst = [
            batch_strides(ba, &batch, (m * k) as i64),
            batch_strides(bb, &batch, (k * n) as i64),
            batch_strides(&batch, &batch, (m * n) as i64),
        ];
        matmul_f64(e, &batch, &bst, (m, n, k), ins, out);
        return Ok(());
    }
    let sta = element_strides(&sa);
    let stb = element_strides(&sb);
    let mm = BatchedGemm {
        bst: [
            batch_strides(ba, &batch, (m * k) as i64),
            batch_strides(bb, &batch, (k * n) as i64),
            batch_strides(&batch, &batch, (m * n) as i64),
        ],
        batch,
        m,
        n,
        k,
        am: sta[sta.len() - 2],
        ak: sta[sta.len() - 1],
        bk: stb[stb.len() - 2],
        bn: stb[stb.len() - 1],
        b_packed: None,
        alpha: 1.0,
    };
    if let Some(&packed) = extra.first() {
        let mm = BatchedGemm {
            b_packed: Some((k * NR * 4) as i64),
            bk: NR as i64,
            bn: 1,
            ..mm
        };
        gemm(e, &mm, ins[0], packed, out);
        return Ok(());
    }
    gemm(e, &mm, ins[0], ins[1], out);
    Ok(())
}

/// An f64 MatMul: scalar loops, each output the sum of its products in k order (as the
/// interpreter has it, without fused multiply-adds). `bst`: the batch element strides of A,
/// B and the output.
fn matmul_f64(
    e: &mut Emitter,
    batch: &[usize],
    bst: &[Vec<i64>; 3],
    (m, n, k): (usize, usize, usize),
    ins: &[Value],
    out: Value,
) {
    if m * n == 0 {
        return;
    }
    let bytes: Vec<Vec<i64>> = bst
        .iter()
        .map(|v| v.iter().map(|x| x * 8).collect())
        .collect();
    let z = e.int_const(0);
    e.nest(batch, &bytes, &[z, z, z], &mut |e, o| {
        let (ao, bo, oo) = (o[0], o[1], o[2]);
        // Per operand (A, B, output): the byte strides of rows i and columns j.
        let strides = vec![vec![(k * 8) as i64, 0], vec![0, 8], vec![(n * 8) as i64, 8]];
        e.nest(&[m, n], &strides, &[ao, bo, oo], &mut |e, p| {
            let acc = e.b.declare_var(types::F64);
            let zero = e.f64_const(0.0);
            e.b.def_var(acc, zero);
            e.loop_offsets(
                k as i64,
                &[p[0], p[1]],
                &[8, (n * 8) as i64],
                &mut |e, _i, q| {
                    let x = e.load(types::F64, ins[0], q[0]);
                    let y = e.load(types::F64, ins[1], q[1]);
                    let prod = e.b.ins().fmul(x, y);
                    let a = e.b.use_var(acc);
                    let s = e.b.ins().fadd(a, prod);
                    e.b.def_var(acc, s);
                },
            );
            let r = e.b.use_var(acc);
            e.store(r, out, p[2]);
        });
    });
}

/// Element strides of batch dims `s` broadcast to `batch`, where one matrix has `mat` elements.
fn batch_strides(s: &[usize], batch: &[usize], mat: i64) -> Vec<i64> {
    broadcast_strides(s, batch)
        .iter()
        .map(|&x| x * mat)
        .collect()
}

pub(super) fn lower_gemm(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    extra: &[Value],
) -> Result<()> {
    let (alpha, beta, ta, tb) = match info.op {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => (*alpha, *beta, *trans_a, *trans_b),
        _ => return Err(info.err("not a gemm")),
    };
    let sa = &info.ins[0].shape;
    let sb = &info.ins[1].shape;
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let n = info.outs[0].shape[1];
    let (am, ak) = if ta {
        (1, sa[1] as i64)
    } else {
        (sa[1] as i64, 1)
    };
    // A constant B was packed into column tiles at compile time.
    let (bp, bk, bn, b_packed) = if let Some(&p) = extra.first() {
        (p, NR as i64, 1, Some((k * NR * 4) as i64))
    } else if tb {
        (ins[1], 1, sb[1] as i64, None)
    } else {
        (ins[1], sb[1] as i64, 1, None)
    };
    let mm = BatchedGemm {
        batch: vec![],
        bst: [vec![], vec![], vec![]],
        m,
        n,
        k,
        am,
        ak,
        bk,
        bn,
        b_packed,
        alpha,
    };
    gemm(e, &mm, ins[0], bp, out);
    if ins.len() > 2 && !c_vanishes(beta, info.consts[2].as_deref()) {
        let oty = &info.outs[0];
        let o = Operand::dense(out, oty);
        let c = Operand::broadcast(ins[2], &info.ins[2], &oty.shape);
        map(
            e,
            info,
            &oty.shape,
            o.clone(),
            &[o, c],
            &Elementwise::AddScaled(beta),
        )?;
    }
    Ok(())
}

/// Whether Gemm's `beta * C` adds nothing: `beta` is 0 and C a constant without NaN or
/// infinities (`0 * inf` is NaN, so a run-time or non-finite C is still added).
pub(crate) fn c_vanishes(beta: f32, c: Option<&optc_ir::Tensor>) -> bool {
    beta == 0.0 && c.is_some_and(|t| t.as_f32().is_none_or(|v| v.iter().all(|x| x.is_finite())))
}

pub(super) fn gemm(e: &mut Emitter, mm: &BatchedGemm, a: Value, b: Value, out: Value) {
    if mm.m * mm.n == 0 {
        return;
    }
    let bst: Vec<Vec<i64>> = mm
        .bst
        .iter()
        .map(|v| v.iter().map(|x| x * 4).collect())
        .collect();
    let z = e.int_const(0);
    e.nest(&mm.batch, &bst, &[z, z, z], &mut |e, offs| {
        gemm2d(e, mm, a, b, out, offs[0], offs[1], offs[2]);
    });
}

/// One 2-D product; `ao`, `bo`, `oo` are byte offsets of this batch's matrices.
#[allow(clippy::too_many_arguments)]
fn gemm2d(
    e: &mut Emitter,
    mm: &BatchedGemm,
    a: Value,
    b: Value,
    out: Value,
    ao: Value,
    bo: Value,
    oo: Value,
) {
    const MR: usize = 6;
    let vec_ok = mm.bn == 1;
    let row_step_a = mm.am * 4;
    let row_step_o = mm.n as i64 * 4;
    // Column blocks of `nc` columns keep a K x nc panel of B (~256 KiB) in L2 across all rows.
    let nc = if vec_ok {
        ((256 * 1024 / (mm.k * 4).max(1)) / NR * NR).clamp(NR, mm.n.div_ceil(NR) * NR)
    } else {
        mm.n
    };
    let tile_step = mm.boff(NR);
    // `ncols` columns starting at B byte offset `bo` / output byte offset `oo` (row 0).
    let block = |e: &mut Emitter, ncols: usize, bo: Value, oo: Value| {
        let nv_full = if vec_ok { ncols / 8 } else { 0 };
        let n8 = nv_full * 8;
        let n4 = if vec_ok && ncols - n8 >= 4 { 4 } else { 0 };
        let ncols_vec = n8 + n4;
        let rows = |e: &mut Emitter, mr: usize, ao: Value, oo: Value| {
            if nv_full > 0 {
                e.loop_offsets(
                    nv_full as i64,
                    &[bo, oo],
                    &[tile_step, 32],
                    &mut |e, _j, o| {
                        tile(e, mm, mr, 2, a, b, out, ao, o[0], o[1]);
                    },
                );
            }
            if n4 > 0 {
                let bo4 = e.b.ins().iadd_imm_s(bo, mm.boff(n8));
                let oo4 = e.b.ins().iadd_imm_s(oo, n8 as i64 * 4);
                tile(e, mm, mr, 1, a, b, out, ao, bo4, oo4);
            }
            let rest = ncols - ncols_vec;
            if rest > 0 {
                let bo0 = e.b.ins().iadd_imm_s(bo, mm.boff(ncols_vec));
                let oo0 = e.b.ins().iadd_imm_s(oo, ncols_vec as i64 * 4);
                e.loop_offsets(
                    rest as i64,
                    &[bo0, oo0],
                    &[mm.bn * 4, 4],
                    &mut |e, _j, o| {
                        tile(e, mm, mr, 0, a, b, out, ao, o[0], o[1]);
                    },
                );
            }
        };
        let mb = mm.m / MR;
        let mrem = mm.m % MR;
        if mb > 0 {
            e.loop_offsets(
                mb as i64,
                &[ao, oo],
                &[row_step_a * MR as i64, row_step_o * MR as i64],
                &mut |e, _i, o| rows(e, MR, o[0], o[1]),
            );
        }
        if mrem > 0 {
            let ao2 = e.b.ins().iadd_imm_s(ao, row_step_a * (mb * MR) as i64);
            let oo2 = e.b.ins().iadd_imm_s(oo, row_step_o * (mb * MR) as i64);
            rows(e, mrem, ao2, oo2);
        }
    };
    let nblocks = mm.n / nc;
    let rem = mm.n % nc;
    if nblocks == 1 && rem == 0 {
        block(e, nc, bo, oo);
        return;
    }
    e.loop_offsets(
        nblocks as i64,
        &[bo, oo],
        &[mm.boff(nc), nc as i64 * 4],
        &mut |e, _j, o| block(e, nc, o[0], o[1]),
    );
    if rem > 0 {
        let bo2 = e.b.ins().iadd_imm_s(bo, mm.boff(nblocks * nc));
        let oo2 = e.b.ins().iadd_imm_s(oo, (nblocks * nc) as i64 * 4);
        block(e, rem, bo2, oo2);
    }
}

/// `mr` rows × (`nv` f32x4 vectors, or one scalar column when `nv == 0`) of the output.
#[allow(clippy::too_many_arguments)]
fn tile(
    e: &mut Emitter,
    mm: &BatchedGemm,
    mr: usize,
    nv: usize,
    a: Value,
    b: Value,
    out: Value,
    ao: Value,
    bo: Value,
    oo: Value,
) {
    let ty = if nv == 0 { types::F32 } else { F32X4 };
    let ncol = nv.max(1);
    let accs: Vec<_> = (0..mr * ncol)
        .map(|_| {
            let v = e.b.declare_var(ty);
            let z = e.float_const(ty, 0.0);
            e.b.def_var(v, z);
            v
        })
        .collect();
    e.loop_offsets(
        mm.k as i64,
        &[ao, bo],
        &[mm.ak * 4, mm.bk_bytes()],
        &mut |e, _k, o| {
            let pa = e.b.ins().iadd(a, o[0]);
            let pb = e.b.ins().iadd(b, o[1]);
            let bv: Vec<Value> = (0..ncol)
                .map(|j| e.b.ins().load(ty, tensor_flags(), pb, (j * 16) as i32))
                .collect();
            for r in 0..mr {
                let s = e.b.ins().load(
                    types::F32,
                    tensor_flags(),
                    pa,
                    (r as i64 * mm.am * 4) as i32,
                );
                let av = if nv == 0 {
                    s
                } else {
                    e.b.ins().splat(F32X4, s)
                };
                for j in 0..ncol {
                    let acc = e.b.use_var(accs[r * ncol + j]);
                    let nacc = e.mul_add(av, bv[j], acc);
                    e.b.def_var(accs[r * ncol + j], nacc);
                }
            }
        },
    );
    let po = e.b.ins().iadd(out, oo);
    for r in 0..mr {
        for j in 0..ncol {
            let mut v = e.b.use_var(accs[r * ncol + j]);
            if mm.alpha != 1.0 {
                let al = e.float_const(ty, mm.alpha);
                v = e.b.ins().fmul(v, al);
            }
            let off = r as i64 * mm.n as i64 * 4 + j as i64 * 16;
            e.b.ins().store(tensor_flags(), v, po, off as i32);
        }
    }
}
