//! Sparse contractions (`Strategy::Sparse`): a MatMul/Gemm or ungrouped conv whose constant
//! weight is mostly zeros skips the zeros. The weight's nonzeros are stored per output row
//! (`(byte offset, value)` entries, see [`crate::x64::asm::sparse`]); the dense operand is
//! packed into 16-column panels `[K][16]` per unit, and the sparse kernel multiplies each
//! row's entries with the panel's rows:
//!
//! - a conv (`W[M][C*KH*KW] @ patches`): rows are output channels, columns pixels, the
//!   patches packed as the implicit GEMM packs them (`packing::pack_panels`), the output
//!   stored directly;
//! - a MatMul `Y = A @ B` with constant `B[K][N]`: rows are the N output features (B's
//!   columns), columns are A's rows, so the panel is A transposed (the same packing with
//!   A's row and element offsets as its tables), and the kernel stores transposed into Y.
//!
//! Whether a weight is sparse enough is decided by [`optc_ir::sparsity`] (the same rule the
//! cost model prices); the kernel costs one broadcast and one offset load per stored weight
//! next to the FMAs, so it pays below about half density (see `benches/sparse.rs`).

use super::asm::{Epilogue, Routine, SparseKey, TransposeKey, NR};
use super::gemm::Unit;
use super::kernel_plan::{b_transposed, KernelPlan, Strategy};
use super::packing::{conv_tables, pack_panels};
use super::sparse_skipped::{self, Check};
use super::tasks::KernelArgs;
use crate::builder::Emitter;
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{InstBuilder, Value};
use optc_ir::sparsity::SparseMode;
use optc_ir::{Op, Tensor};

/// Columns of one kernel call: two 16-column panels.
const CALL_COLS: usize = 2 * NR;

/// The contraction's orientation.
#[derive(Clone, Debug)]
pub(crate) enum SparseKind {
    /// Rows are output channels of this conv, columns its output pixels.
    Conv(ConvGeometry),
    /// Rows are output features of a MatMul/Gemm, columns the rows of A; `trans_b`: the
    /// weight is stored `[N][K]` (Gemm's transB).
    MatMul { trans_b: bool },
}

pub(crate) struct SparsePlan {
    pub kind: SparseKind,
    /// Stored weights.
    pub nonzeros: usize,
    /// A MatMul on fewer than 8 rows of A: the scalar kernel reads A in place (no panels).
    pub scalar: bool,
}

impl SparsePlan {
    /// Bytes of the packed panels of one unit.
    pub fn task_bytes(&self, p: &KernelPlan) -> usize {
        if self.scalar {
            return 0;
        }
        p.k * p.chunk * 4 + self.tile_bytes(p)
    }
    /// Bytes between the rows of the dense operand the entries' offsets count: a panel's
    /// 16 floats, or one float of A read in place.
    fn entry_stride(&self) -> usize {
        if self.scalar {
            4
        } else {
            NR * 4
        }
    }
    /// A MatMul's output tile (`mrows x 32`, stored directly, then transposed into Y by
    /// 8x8 blocks), after the panels.
    fn tile_bytes(&self, p: &KernelPlan) -> usize {
        match self.kind {
            SparseKind::MatMul { .. } => p.mrows * CALL_COLS * 4,
            SparseKind::Conv(_) => 0,
        }
    }
    pub fn describe(&self, p: &KernelPlan) -> String {
        format!(
            "sparse ({} of {} weights stored, {:.0}%)",
            self.nonzeros,
            p.m * p.k,
            100.0 * self.nonzeros as f64 / (p.m * p.k).max(1) as f64
        )
    }
}

/// The kernel epilogue of a sparse node: a per-column bias of a MatMul is per row here.
pub(super) fn sparse_epilogue(epilogue: &[Epilogue]) -> Option<Vec<Epilogue>> {
    let e: Vec<Epilogue> = epilogue
        .iter()
        .map(|e| match e {
            Epilogue::BiasCol => Epilogue::BiasRow,
            e => *e,
        })
        .collect();
    SparseKey::supports(&e).then_some(e)
}

/// The weight as rows of K values: a conv's `[M][C*KH*KW]`, a MatMul's B transposed.
fn weight_rows(info: &NodeInfo, plan: &SparsePlan, p: &KernelPlan) -> Result<Vec<f32>> {
    let w = info.consts[1]
        .as_ref()
        .and_then(|t| t.as_f32())
        .ok_or_else(|| info.err("sparse weight is not constant f32"))?;
    let (m, k) = (p.m, p.k);
    Ok(match plan.kind {
        SparseKind::Conv(_) | SparseKind::MatMul { trans_b: true } => w.to_vec(),
        SparseKind::MatMul { trans_b: false } => {
            let mut t = vec![0f32; m * k];
            for kk in 0..k {
                for r in 0..m {
                    t[r * k + kk] = w[kk * m + r];
                }
            }
            t
        }
    })
}

/// Compile-time data: the packing tables (`koff`, `pix`, `contig` as the implicit GEMM's),
/// the rows' first entries (u32, `m + 1` of them) and the entries.
pub(crate) fn derived(info: &NodeInfo, plan: &SparsePlan, p: &KernelPlan) -> Result<Vec<Vec<u8>>> {
    let mut v = match &plan.kind {
        SparseKind::Conv(g) => conv_tables(p, g),
        SparseKind::MatMul { .. } => {
            // Element (k, column r) of the panel is A[r][k].
            let koff: Vec<i64> = (0..p.k as i64).map(|k| 4 * k).collect();
            let np = p.n.div_ceil(NR) * NR;
            let pix: Vec<i64> = (0..np)
                .map(|r| if r < p.n { (r * p.k * 4) as i64 } else { 0 })
                .collect();
            let contig: Vec<i64> = (0..np / 4)
                .map(|q| i64::from(p.k == 1 && 4 * q + 3 < p.n))
                .collect();
            let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            vec![bytes(&koff), bytes(&pix), bytes(&contig)]
        }
    };
    let rows = weight_rows(info, plan, p)?;
    let mut starts: Vec<u8> = Vec::with_capacity(4 * (p.m + 1));
    let mut entries: Vec<u8> = Vec::with_capacity(8 * plan.nonzeros);
    let mut count = 0u32;
    for r in 0..p.m {
        starts.extend(count.to_le_bytes());
        for (kk, &w) in rows[r * p.k..(r + 1) * p.k].iter().enumerate() {
            if w != 0.0 {
                entries.extend(((kk * plan.entry_stride()) as u32).to_le_bytes());
                entries.extend(w.to_le_bytes());
                count += 1;
            }
        }
    }
    starts.extend(count.to_le_bytes());
    v.push(starts);
    v.push(entries);
    Ok(v)
}

/// The kernel calls of a unit of `ncols` columns: (first column, columns) per call.
fn calls(ncols: usize) -> Vec<(usize, usize)> {
    (0..ncols.div_ceil(CALL_COLS))
        .map(|i| (i * CALL_COLS, CALL_COLS.min(ncols - i * CALL_COLS)))
        .collect()
}

/// The kernel of `cols` columns; a MatMul's stores transposed into Y unless `to_tile`.
fn key(p: &KernelPlan, plan: &SparsePlan, cols: usize, to_tile: bool) -> SparseKey {
    if plan.scalar {
        return SparseKey {
            vectors: 0,
            cols,
            panel_stride: (p.k * 4) as i32,
            transposed_ldo: (p.m * 4) as i32,
            epilogue: p.kernel_epilogue(),
        };
    }
    let vectors = cols.div_ceil(8).next_power_of_two();
    SparseKey {
        vectors,
        cols,
        // Only a 4-vector row reads a second panel (and its symbol names the stride): two
        // nodes of different K share the narrower kernels.
        panel_stride: if vectors > 2 {
            (p.k * NR * 4) as i32
        } else {
            0
        },
        transposed_ldo: match plan.kind {
            SparseKind::MatMul { .. } if !to_tile => (p.m * 4) as i32,
            _ => 0,
        },
        epilogue: p.kernel_epilogue(),
    }
}

/// The transposing copy of a MatMul's output tile: 8 rows (features) of 32 columns into Y.
fn tile_transpose_key(p: &KernelPlan) -> TransposeKey {
    TransposeKey {
        rows: 8,
        src_stride: (CALL_COLS * 4) as i32,
        dst_stride: (p.m * 4) as i32,
    }
}

/// Whether a call of `cols` columns over `mrows` rows stores a MatMul's output through the
/// tile (whole 32-column calls with at least 8 rows).
fn via_tile(plan: &SparsePlan, cols: usize, mrows: usize) -> bool {
    matches!(plan.kind, SparseKind::MatMul { .. }) && cols == CALL_COLS && mrows >= 8
}

/// The transposing copy that packs a MatMul's A (rows of K floats, K a multiple of 8).
fn transpose_key(p: &KernelPlan, plan: &SparsePlan) -> Option<TransposeKey> {
    (matches!(plan.kind, SparseKind::MatMul { .. })
        && p.k.is_multiple_of(8)
        && p.k * 4 * NR < 1 << 30)
        .then(|| TransposeKey {
            rows: NR,
            src_stride: (p.k * 4) as i32,
            dst_stride: (NR * 4) as i32,
        })
}

/// Every kernel the node calls.
pub(crate) fn routines(p: &KernelPlan, plan: &SparsePlan) -> Vec<Routine> {
    if plan.scalar {
        return vec![Routine::Sparse(key(p, plan, p.n, false))];
    }
    let last = p.last_unit_cols();
    let mut r: Vec<Routine> = transpose_key(p, plan)
        .map(Routine::Transpose)
        .into_iter()
        .collect();
    let last_rows = p.last_part_rows();
    let mut add = |k: Routine| {
        if !r.contains(&k) {
            r.push(k);
        }
    };
    for ncols in [p.chunk.min(p.n), last] {
        for (_, cols) in calls(ncols) {
            for mrows in [p.mrows, last_rows] {
                if via_tile(plan, cols, mrows) {
                    add(Routine::Sparse(key(p, plan, cols, true)));
                    add(Routine::Transpose(tile_transpose_key(p)));
                }
                if !via_tile(plan, cols, mrows) || mrows % 8 != 0 {
                    add(Routine::Sparse(key(p, plan, cols, false)));
                }
            }
        }
    }
    r
}

/// One unit: pack its panels, then one kernel call per 32 columns over the unit's rows.
pub(super) fn emit_unit(
    e: &mut Emitter,
    p: &KernelPlan,
    plan: &SparsePlan,
    c: &KernelArgs,
    unit: Unit,
) {
    let Unit {
        pack,
        img,
        col0,
        ncols,
        row0,
        mrows,
    } = unit;
    if plan.scalar {
        let f = c.microkernels[&Routine::Sparse(key(p, plan, ncols, false))];
        let st = e.b.ins().imul_imm_s(row0, 4);
        let starts = e.b.ins().iadd(c.extra[3], st);
        let out = e.b.ins().iadd(c.out, st);
        let bias = match p.bias_port {
            Some(q) => e.b.ins().iadd(c.ins[q], st),
            None => c.out,
        };
        let rows = e.int_const(mrows as i64);
        let zero = e.int_const(0);
        let check = Check::new(e);
        check.scan(e, c.ins[0], p.n * p.k);
        let any = check.any(e);
        e.b.ins()
            .call(f, &[c.ins[0], out, starts, c.extra[4], rows, zero, bias]);
        let o = sparse_skipped::operand(e, p, plan, c, &unit, zero);
        sparse_skipped::emit(e, p, &unit, &o, any);
        return;
    }
    let (src, out_img) = match &plan.kind {
        SparseKind::Conv(g) => {
            let x = if p.pad_bytes() > 0 {
                c.scratch
            } else {
                c.ins[0]
            };
            let io = e.b.ins().imul_imm_s(img, (g.c * g.hp * g.wp * 4) as i64);
            let oo = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
            (e.b.ins().iadd(x, io), oo)
        }
        SparseKind::MatMul { .. } => (c.ins[0], e.int_const(0)),
    };
    let z = e.int_const(0);
    let check = Check::new(e);
    match transpose_key(p, plan) {
        // Whole panels of A by 8x8 blocks, a last partial one by the patch packing.
        Some(tk) => {
            let f = c.microkernels[&Routine::Transpose(tk)];
            let kblocks = e.int_const((p.k / 8) as i64);
            let ro = e.b.ins().imul_imm_s(col0, (p.k * 4) as i64);
            let a0 = e.b.ins().iadd(src, ro);
            e.loop_offsets(
                (ncols / NR) as i64,
                &[a0, pack],
                &[(NR * p.k * 4) as i64, (p.k * NR * 4) as i64],
                &mut |e, _j, o| {
                    e.b.ins().call(f, &[o[0], o[1], kblocks]);
                },
            );
            // The rows of A the transposes read, contiguous.
            check.scan(e, a0, ncols / NR * NR * p.k);
            if ncols % NR != 0 {
                let full = ncols / NR;
                let dst = e.b.ins().iadd_imm_s(pack, (full * p.k * NR * 4) as i64);
                let c0 = e.b.ins().iadd_imm_s(col0, (full * NR) as i64);
                pack_panels(e, c, dst, src, c0, 1, z, p.k, Some(&check));
            }
        }
        None => pack_panels(
            e,
            c,
            pack,
            src,
            col0,
            ncols.div_ceil(NR),
            z,
            p.k,
            Some(&check),
        ),
    }
    let any = check.any(e);
    let starts_off = e.b.ins().imul_imm_s(row0, 4);
    let starts = e.b.ins().iadd(c.extra[3], starts_off);
    let entries = c.extra[4];
    let bias = match p.bias_port {
        Some(q) => {
            let o = e.b.ins().imul_imm_s(row0, 4);
            e.b.ins().iadd(c.ins[q], o)
        }
        None => c.out,
    };
    for (first, cols) in calls(ncols) {
        let panel =
            e.b.ins()
                .iadd_imm_s(pack, (first / NR * p.k * NR * 4) as i64);
        let col = e.b.ins().iadd_imm_s(col0, first as i64);
        let call =
            |e: &mut Emitter, key: SparseKey, out: Value, ldo: i64, r0: usize, rows: usize| {
                let f = c.microkernels[&Routine::Sparse(key)];
                let st = e.b.ins().iadd_imm_s(starts, (4 * r0) as i64);
                let bi = e.b.ins().iadd_imm_s(bias, (4 * r0) as i64);
                let rows = e.int_const(rows as i64);
                let ldo = e.int_const(ldo);
                e.b.ins().call(f, &[panel, out, st, entries, rows, ldo, bi]);
            };
        match plan.kind {
            SparseKind::Conv(_) => {
                let ro = e.b.ins().imul_imm_s(row0, (p.n * 4) as i64);
                let co = e.b.ins().imul_imm_s(col, 4);
                let o = e.b.ins().iadd(ro, co);
                let o = e.b.ins().iadd(o, out_img);
                let out = e.b.ins().iadd(c.out, o);
                call(
                    e,
                    key(p, plan, cols, false),
                    out,
                    (p.n * 4) as i64,
                    0,
                    mrows,
                );
            }
            SparseKind::MatMul { .. } => {
                // Y[col + j][row0 + r] for the call's columns j and the unit's rows r.
                let ro = e.b.ins().imul_imm_s(row0, 4);
                let co = e.b.ins().imul_imm_s(col, (p.m * 4) as i64);
                let o = e.b.ins().iadd(ro, co);
                let y = e.b.ins().iadd(c.out, o);
                let mut done = 0;
                if via_tile(plan, cols, mrows) {
                    done = mrows / 8 * 8;
                    let tile = e.b.ins().iadd_imm_s(pack, (p.k * p.chunk * 4) as i64);
                    call(
                        e,
                        key(p, plan, cols, true),
                        tile,
                        (CALL_COLS * 4) as i64,
                        0,
                        done,
                    );
                    let f = c.microkernels[&Routine::Transpose(tile_transpose_key(p))];
                    let kb = e.int_const((CALL_COLS / 8) as i64);
                    e.loop_offsets(
                        (done / 8) as i64,
                        &[tile, y],
                        &[(8 * CALL_COLS * 4) as i64, 32],
                        &mut |e, _g, o| {
                            e.b.ins().call(f, &[o[0], o[1], kb]);
                        },
                    );
                }
                if done < mrows {
                    let y = e.b.ins().iadd_imm_s(y, (4 * done) as i64);
                    call(e, key(p, plan, cols, false), y, 0, done, mrows - done);
                }
            }
        }
    }
    let o = sparse_skipped::operand(e, p, plan, c, &unit, out_img);
    sparse_skipped::emit(e, p, &unit, &o, any);
}

/// The weight's nonzeros when it takes the sparse kernel: see
/// [`optc_ir::sparsity::SparseMode::takes_sparse`].
fn nonzeros_if_sparse(
    mode: SparseMode,
    w: &Tensor,
    rows: usize,
    columns: usize,
    dense_gain: f64,
) -> Option<usize> {
    let v = w.as_f32()?;
    let nnz = optc_ir::sparsity::nonzeros(v);
    (rows > 0 && mode.takes_sparse(nnz, v.len(), columns, dense_gain)).then_some(nnz)
}

/// Columns of a unit: one kernel call.
pub(super) const CHUNK: usize = CALL_COLS;

/// Rows of a unit: all of them, or about 8 units in all when there are few column units.
pub(super) fn mrows(m: usize, column_units: usize) -> usize {
    if column_units >= 8 {
        m
    } else {
        m.div_ceil(8usize.div_ceil(column_units.max(1))).max(1)
    }
}

/// The sparse plan of a node planned as `kind` (a GEMM with constant B, or an implicit-GEMM
/// conv with constant weights) when its weight is sparse enough, with the kernel epilogue.
#[allow(clippy::too_many_arguments)]
pub(super) fn choose(
    info: &NodeInfo,
    binfo: &NodeInfo,
    kind: &Strategy,
    m: usize,
    n: usize,
    epilogue: &[Epilogue],
    gemm_c_post: Option<f32>,
    mode: SparseMode,
    dense_gain: f64,
) -> Option<(SparsePlan, Vec<Epilogue>)> {
    if gemm_c_post.is_some() {
        return None;
    }
    let e = sparse_epilogue(epilogue)?;
    let w = binfo.consts[1].as_ref()?;
    match kind {
        // Rows: B's N columns; columns: A's M rows.
        // (A one-pixel conv as a GEMM stays dense: its weights are `[M, C, 1, 1]`.)
        Strategy::GemmConstantB if !matches!(binfo.op, Op::Conv { .. }) => {
            let nonzeros = nonzeros_if_sparse(mode, w, n, m, 1.0)?;
            let kind = SparseKind::MatMul {
                trans_b: b_transposed(info),
            };
            let scalar = m < 8;
            Some((
                SparsePlan {
                    kind,
                    nonzeros,
                    scalar,
                },
                e,
            ))
        }
        Strategy::ImplicitGemm(g) if n >= 8 && g.groups == 1 => {
            let nonzeros = nonzeros_if_sparse(mode, w, m, n, dense_gain)?;
            let kind = SparseKind::Conv(g.clone());
            Some((
                SparsePlan {
                    kind,
                    nonzeros,
                    scalar: false,
                },
                e,
            ))
        }
        _ => None,
    }
}

/// The nodes of `graph` that take the sparse kernels on `target`, by name, with how many
/// weights they store (what `optc explain` lists).
pub fn sparse_plans(
    graph: &optc_ir::Graph,
    target: &crate::Target,
) -> std::result::Result<Vec<(String, String)>, crate::error::CodegenError> {
    let order = graph
        .topo_order()
        .map_err(|e| crate::error::CodegenError::new(e.msg))?;
    let mut v = vec![];
    for n in order {
        let info = NodeInfo::of(graph, n)?;
        if let Some(p) = super::kernel_plan(&info, target)? {
            if let Strategy::Sparse(s) = &p.kind {
                v.push((info.name.to_string(), s.describe(&p)));
            }
        }
    }
    Ok(v)
}
