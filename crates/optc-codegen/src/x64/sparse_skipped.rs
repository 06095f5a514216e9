//! The products a sparse kernel skips, made IEEE-exact: the kernel adds nothing for a zero
//! weight, but `0 x x` is NaN when `x` is NaN or infinite. After a sparse unit has stored its
//! outputs, this code scans the unit's dense operand (the packed panels, or A read in place)
//! for non-finite values; when there are none (the usual case) that is all it costs. When a
//! column `c` holds `n_c > 0` of them, row `r`'s output is exact only if each of those `k` has
//! a stored (nonzero) weight in row `r`: the kernel then multiplied every one of them. So the
//! slow path counts, per row, the stored entries that land on a non-finite value of column
//! `c`, and stores NaN where that count is short of `n_c` (a skipped `0 x inf` or `0 x NaN`).
//! Every epilogue the sparse kernels take (bias, Relu, Clip, ...) maps NaN to NaN, so the
//! store after the epilogue is the value the dense kernel would give.

use super::asm::NR;
use super::gemm::Unit;
use super::kernel_plan::KernelPlan;
use super::sparse::{SparseKind, SparsePlan};
use super::tasks::KernelArgs;
use crate::builder::{if_else, tensor_flags, Emitter, F32X4};
use cranelift_codegen::ir::{condcodes::FloatCC, condcodes::IntCC, types, InstBuilder, Value};
use cranelift_frontend::Variable;

/// Where the unit's operand and outputs are.
pub(super) struct Operand {
    /// The first float of the dense operand the unit read.
    pub base: Value,
    /// Panels (`[K][16]` per 16 columns) or A's rows read in place (`[column][K]`).
    pub panels: bool,
    /// The unit's first output, `(row0, col0)`, and the byte strides of a row and a column.
    pub out: Value,
    pub row_stride: i64,
    pub col_stride: i64,
    /// The rows' first entries (`u32`, from the unit's first row) and the entries.
    pub starts: Value,
    pub entries: Value,
}

/// The operand and output addressing of a sparse unit whose panels start at `pack`
/// (`a` for the scalar kernel, which reads A in place).
pub(super) fn operand(
    e: &mut Emitter,
    p: &KernelPlan,
    plan: &SparsePlan,
    c: &KernelArgs,
    unit: &Unit,
    out_img: Value,
) -> Operand {
    let starts_off = e.b.ins().imul_imm_s(unit.row0, 4);
    let starts = e.b.ins().iadd(c.extra[3], starts_off);
    let (row_stride, col_stride) = match plan.kind {
        SparseKind::Conv(_) => ((p.n * 4) as i64, 4),
        SparseKind::MatMul { .. } => (4, (p.m * 4) as i64),
    };
    let ro = e.b.ins().imul_imm_s(unit.row0, row_stride);
    let co = e.b.ins().imul_imm_s(unit.col0, col_stride);
    let o = e.b.ins().iadd(ro, co);
    let o = e.b.ins().iadd(o, out_img);
    let out = e.b.ins().iadd(c.out, o);
    let base = if plan.scalar {
        let ao = e.b.ins().imul_imm_s(unit.col0, (p.k * 4) as i64);
        e.b.ins().iadd(c.ins[0], ao)
    } else {
        unit.pack
    };
    Operand {
        base,
        panels: !plan.scalar,
        out,
        row_stride,
        col_stride,
        starts,
        entries: c.extra[4],
    }
}

/// `1` (i64) when `x` (f32) is NaN or infinite, else `0`.
fn non_finite(e: &mut Emitter, x: Value) -> Value {
    let zero = e.b.ins().f32const(0.0);
    let t = e.b.ins().fmul(x, zero);
    let u = e.b.ins().fcmp(FloatCC::Unordered, t, t);
    e.b.ins().uextend(types::I64, u)
}

/// Sums of the values a unit's kernel reads, as they are packed (or scanned where an
/// assembled routine packed them): a sum is NaN or infinite when some value is (and, rarely,
/// when finite values overflow: then the slow path finds nothing to do). Eight vector sums (the
/// packing adds a panel row's four 4-float groups to the first four; a scan spreads 32 floats
/// over all eight, so the adds do not wait on each other), and a scalar one.
pub(super) struct Check {
    vectors: [Variable; 8],
    scalar: Variable,
}

impl Check {
    pub fn new(e: &mut Emitter) -> Check {
        let zero = e.float_const(F32X4, 0.0);
        let vectors = [0; 8].map(|_| {
            let v = e.b.declare_var(F32X4);
            e.b.def_var(v, zero);
            v
        });
        let scalar = e.b.declare_var(types::F32);
        let z = e.b.ins().f32const(0.0);
        e.b.def_var(scalar, z);
        Check { vectors, scalar }
    }

    /// Add an f32x4 to sum `group` (0..8).
    pub fn vector(&self, e: &mut Emitter, group: usize, x: Value) {
        let v = self.vectors[group % 8];
        let s = e.b.use_var(v);
        let s = e.b.ins().fadd(s, x);
        e.b.def_var(v, s);
    }

    /// Add an f32.
    pub fn scalar(&self, e: &mut Emitter, x: Value) {
        let s = e.b.use_var(self.scalar);
        let s = e.b.ins().fadd(s, x);
        e.b.def_var(self.scalar, s);
    }

    /// Add `floats` contiguous floats from `base`.
    pub fn scan(&self, e: &mut Emitter, base: Value, floats: usize) {
        let groups = floats / 32;
        let start = e.int_const(0);
        e.loop_offsets(groups as i64, &[start], &[128], &mut |e, _i, off| {
            let a = e.b.ins().iadd(base, off[0]);
            for g in 0..8 {
                let x = e.b.ins().load(F32X4, tensor_flags(), a, 16 * g as i32);
                self.vector(e, g, x);
            }
        });
        for g in groups * 8..floats / 4 {
            let x = e.b.ins().load(F32X4, tensor_flags(), base, 16 * g as i32);
            self.vector(e, g, x);
        }
        for f in floats / 4 * 4..floats {
            let x =
                e.b.ins()
                    .load(types::F32, tensor_flags(), base, (4 * f) as i32);
            self.scalar(e, x);
        }
    }

    /// Whether some sum is NaN or infinite (an i8 truth value). Taken before the kernel calls:
    /// the sums do not live across them.
    pub fn any(&self, e: &mut Emitter) -> Value {
        let mut s: Vec<Value> = self.vectors.iter().map(|&v| e.b.use_var(v)).collect();
        while s.len() > 1 {
            s = s.chunks(2).map(|p| e.b.ins().fadd(p[0], p[1])).collect();
        }
        let v = s[0];
        let total = e.horizontal_reduce(v, false);
        let scalar = e.b.use_var(self.scalar);
        let total = e.b.ins().fadd(total, scalar);
        let zero = e.b.ins().f32const(0.0);
        let t = e.b.ins().fmul(total, zero);
        e.b.ins().fcmp(FloatCC::Unordered, t, t)
    }
}

/// After the unit's kernel calls: the slow path when the check saw a non-finite value (`any`,
/// from [`Check::any`]).
pub(super) fn emit(e: &mut Emitter, p: &KernelPlan, unit: &Unit, o: &Operand, any: Value) {
    let rare = e.b.create_block();
    let done = e.b.create_block();
    e.b.ins().brif(any, rare, &[], done, &[]);
    e.b.switch_to_block(rare);
    e.b.seal_block(rare);
    e.b.set_cold_block(rare);
    slow_path(e, p, unit, o);
    e.b.ins().jump(done, &[]);
    e.b.switch_to_block(done);
    e.b.seal_block(done);
}

/// Per column: count its non-finite values; per row, count the stored entries that meet them;
/// NaN where a skipped zero weight met one.
fn slow_path(e: &mut Emitter, p: &KernelPlan, unit: &Unit, o: &Operand) {
    let k_stride = if o.panels { (NR * 4) as i64 } else { 4 };
    let count = e.b.declare_var(types::I64);
    let hits = e.b.declare_var(types::I64);
    let nan = e.b.ins().f32const(f32::NAN);
    e.loop_count(unit.ncols as i64, &mut |e, col| {
        // The column's value at k = 0: panel col / 16 at lane col % 16, or A's row col.
        let column = if o.panels {
            let panel = e.b.ins().ushr_imm_u(col, 4);
            let po = e.b.ins().imul_imm_s(panel, (p.k * NR * 4) as i64);
            let lane = e.b.ins().band_imm_u(col, (NR - 1) as i64);
            let lo = e.b.ins().imul_imm_s(lane, 4);
            let off = e.b.ins().iadd(po, lo);
            e.b.ins().iadd(o.base, off)
        } else {
            let off = e.b.ins().imul_imm_s(col, (p.k * 4) as i64);
            e.b.ins().iadd(o.base, off)
        };
        let z = e.int_const(0);
        e.b.def_var(count, z);
        e.loop_offsets(p.k as i64, &[column], &[k_stride], &mut |e, _k, a| {
            let x = e.b.ins().load(types::F32, tensor_flags(), a[0], 0);
            let bad = non_finite(e, x);
            let n = e.b.use_var(count);
            let n = e.b.ins().iadd(n, bad);
            e.b.def_var(count, n);
        });
        let n = e.b.use_var(count);
        let some = e.b.ins().icmp_imm_s(IntCC::NotEqual, n, 0);
        if_else(
            e,
            some,
            &mut |e| {
                let co = e.b.ins().imul_imm_s(col, o.col_stride);
                let out_col = e.b.ins().iadd(o.out, co);
                e.loop_count(unit.mrows as i64, &mut |e, r| {
                    let so = e.b.ins().imul_imm_s(r, 4);
                    let s = e.b.ins().iadd(o.starts, so);
                    let first = e.b.ins().uload32(tensor_flags(), s, 0);
                    let end = e.b.ins().uload32(tensor_flags(), s, 4);
                    let z = e.int_const(0);
                    e.b.def_var(hits, z);
                    e.loop_range(first, end, &mut |e, i| {
                        let eo = e.b.ins().imul_imm_s(i, 8);
                        let ea = e.b.ins().iadd(o.entries, eo);
                        let off = e.b.ins().uload32(tensor_flags(), ea, 0);
                        let a = e.b.ins().iadd(column, off);
                        let x = e.b.ins().load(types::F32, tensor_flags(), a, 0);
                        let bad = non_finite(e, x);
                        let h = e.b.use_var(hits);
                        let h = e.b.ins().iadd(h, bad);
                        e.b.def_var(hits, h);
                    });
                    let h = e.b.use_var(hits);
                    let n = e.b.use_var(count);
                    let short = e.b.ins().icmp(IntCC::NotEqual, h, n);
                    if_else(
                        e,
                        short,
                        &mut |e| {
                            let ro = e.b.ins().imul_imm_s(r, o.row_stride);
                            let a = e.b.ins().iadd(out_col, ro);
                            e.b.ins().store(tensor_flags(), nan, a, 0);
                        },
                        &mut |_| {},
                    );
                });
            },
            &mut |_| {},
        );
    });
}
