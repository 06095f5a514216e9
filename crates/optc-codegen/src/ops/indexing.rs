//! The indexing and ordering ops as scalar loops: ArgMax/ArgMin, CumSum, TopK,
//! GatherElements, GatherND, ScatterElements and ScatterND.
//!
//! Every index read at run time is resolved (negative counts from the end) and checked
//! before it addresses memory: a bad one makes the kernel return
//! [`RuntimeError::GatherIndex`] or [`RuntimeError::ScatterIndex`].

use crate::builder::{element_type, Emitter};
use crate::error::{Result, RuntimeError};
use crate::node::NodeInfo;
use crate::ops::math::is_signed;
use crate::ops::operand::element_strides;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use optc_ir::{DType, ScatterReduction};

/// The order of ArgMax/ArgMin/TopK on one dtype: NaN above every number.
#[derive(Clone, Copy)]
struct Order {
    dt: DType,
}

impl Order {
    /// `a` comes strictly before `b`: greater when `largest`, else smaller (an i8 truth value).
    fn before(self, e: &mut Emitter, a: Value, b: Value, largest: bool) -> Value {
        let (hi, lo) = if largest { (a, b) } else { (b, a) };
        if self.dt.is_float() {
            let gt = e.b.ins().fcmp(FloatCC::GreaterThan, hi, lo);
            let hi_nan = e.b.ins().fcmp(FloatCC::Unordered, hi, hi);
            let lo_num = e.b.ins().fcmp(FloatCC::Ordered, lo, lo);
            let nan_wins = e.b.ins().band(hi_nan, lo_num);
            e.b.ins().bor(gt, nan_wins)
        } else if is_signed(self.dt) {
            e.b.ins().icmp(IntCC::SignedGreaterThan, hi, lo)
        } else {
            e.b.ins().icmp(IntCC::UnsignedGreaterThan, hi, lo)
        }
    }

    /// `a` and `b` are equal (two NaNs are).
    fn same(self, e: &mut Emitter, a: Value, b: Value) -> Value {
        if self.dt.is_float() {
            let eq = e.b.ins().fcmp(FloatCC::Equal, a, b);
            let a_nan = e.b.ins().fcmp(FloatCC::Unordered, a, a);
            let b_nan = e.b.ins().fcmp(FloatCC::Unordered, b, b);
            let both = e.b.ins().band(a_nan, b_nan);
            e.b.ins().bor(eq, both)
        } else {
            e.b.ins().icmp(IntCC::Equal, a, b)
        }
    }
}

/// `(outer, extent, inner)` of `shape` around `axis`.
fn split_at(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// The index at byte offset `off` of `indices` (i64 or i32) as an i64.
fn load_index(e: &mut Emitter, dt: DType, indices: Value, off: Value) -> Value {
    let k = e.load(element_type(dt), indices, off);
    if dt == DType::I64 {
        k
    } else {
        e.b.ins().sextend(types::I64, k)
    }
}

/// `k` resolved against an axis of extent `n` (negative counts from the end); the kernel
/// fails with `error` unless it lands in `0..n`.
fn resolve(e: &mut Emitter, k: Value, n: i64, error: RuntimeError) -> Value {
    let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
    let kn = e.b.ins().iadd_imm_s(k, n);
    let k = e.b.ins().select(neg, kn, k);
    // One unsigned comparison: negative values wrap above `n`.
    let bad =
        e.b.ins()
            .icmp_imm_s(IntCC::UnsignedGreaterThanOrEqual, k, n);
    e.fail_if(bad, error);
    k
}

pub(super) fn lower_arg(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    largest: bool,
    axis: usize,
    last: bool,
) -> Result<()> {
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = element_type(dt);
    let (outer, n, inner) = split_at(&info.ins[0].shape, axis);
    let order = Order { dt };
    let step = inner as i64 * es;
    let z = e.int_const(0);
    let strides = vec![vec![n as i64 * step, es], vec![inner as i64 * 8, 8]];
    e.nest(&[outer, inner], &strides, &[z, z], &mut |e, o| {
        let best_v = e.b.declare_var(ty);
        let best_j = e.b.declare_var(types::I64);
        let v0 = e.load(ty, x, o[0]);
        e.b.def_var(best_v, v0);
        let z = e.int_const(0);
        e.b.def_var(best_j, z);
        let start = e.b.ins().iadd_imm_s(o[0], step);
        e.loop_offsets(n as i64 - 1, &[start], &[step], &mut |e, j, p| {
            let v = e.load(ty, x, p[0]);
            let b = e.b.use_var(best_v);
            let mut take = order.before(e, v, b, largest);
            if last {
                let same = order.same(e, v, b);
                take = e.b.ins().bor(take, same);
            }
            let nb = e.b.ins().select(take, v, b);
            e.b.def_var(best_v, nb);
            let bj = e.b.use_var(best_j);
            let j1 = e.b.ins().iadd_imm_s(j, 1);
            let nj = e.b.ins().select(take, j1, bj);
            e.b.def_var(best_j, nj);
        });
        let r = e.b.use_var(best_j);
        e.store(r, out, o[1]);
    });
    Ok(())
}

/// ONNX CumSum (`product` false) and CumProd along `axis`, one running value per line.
#[allow(clippy::too_many_arguments)]
pub(super) fn lower_cumulative(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    product: bool,
    axis: usize,
    exclusive: bool,
    reverse: bool,
) -> Result<()> {
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = element_type(dt);
    let is_f = dt.is_float();
    let f32 = dt == DType::F32;
    // Floats accumulate in f64 and f32 rounds each output once, as the interpreter does;
    // integers wrap.
    let acc_ty = if is_f { types::F64 } else { ty };
    let (outer, n, inner) = split_at(&info.ins[0].shape, axis);
    let step = inner as i64 * es;
    let z = e.int_const(0);
    let strides = vec![vec![n as i64 * step, es]];
    let identity = if product { 1 } else { 0 };
    e.nest(&[outer, inner], &strides, &[z], &mut |e, o| {
        let acc = e.b.declare_var(acc_ty);
        let first = if is_f {
            e.b.ins().f64const(identity as f64)
        } else {
            e.b.ins().iconst(ty, identity)
        };
        e.b.def_var(acc, first);
        let (start, st) = if reverse {
            (e.b.ins().iadd_imm_s(o[0], (n as i64 - 1) * step), -step)
        } else {
            (o[0], step)
        };
        e.loop_offsets(n as i64, &[start], &[st], &mut |e, _j, p| {
            let v = e.load(ty, x, p[0]);
            let a = e.b.use_var(acc);
            let v = if f32 {
                e.b.ins().fpromote(types::F64, v)
            } else {
                v
            };
            let next = match (is_f, product) {
                (true, false) => e.b.ins().fadd(a, v),
                (true, true) => e.b.ins().fmul(a, v),
                (false, false) => e.b.ins().iadd(a, v),
                (false, true) => e.b.ins().imul(a, v),
            };
            e.b.def_var(acc, next);
            let r = if exclusive { a } else { next };
            let r = if f32 {
                e.b.ins().fdemote(types::F32, r)
            } else {
                r
            };
            e.store(r, out, p[0]);
        });
    });
    Ok(())
}

/// TopK by repeated selection: the `j`-th output is the first element (in index order) of
/// those that come after output `j - 1` in the order `(value, index)`; no scratch needed.
pub(super) fn lower_top_k(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    outs: &[Value],
    axis: usize,
    k: usize,
    largest: bool,
) -> Result<()> {
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = element_type(dt);
    let (outer, n, inner) = split_at(&info.ins[0].shape, axis);
    if k == 0 {
        return Ok(());
    }
    let order = Order { dt };
    let step = inner as i64 * es;
    let z = e.int_const(0);
    let strides = vec![
        vec![n as i64 * step, es],
        vec![k as i64 * step, es],
        vec![(k * inner) as i64 * 8, 8],
    ];
    let (values, indices) = (outs[0], outs[1]);
    e.nest(&[outer, inner], &strides, &[z, z, z], &mut |e, o| {
        let prev_v = e.b.declare_var(ty);
        let prev_i = e.b.declare_var(types::I64);
        let v0 = e.load(ty, x, o[0]);
        e.b.def_var(prev_v, v0);
        let minus = e.int_const(-1);
        e.b.def_var(prev_i, minus);
        let out_steps = [inner as i64 * es, inner as i64 * 8];
        e.loop_offsets(k as i64, &[o[1], o[2]], &out_steps, &mut |e, _j, q| {
            let pv = e.b.use_var(prev_v);
            let pi = e.b.use_var(prev_i);
            let first = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, pi, 0);
            let best_v = e.b.declare_var(ty);
            let best_i = e.b.declare_var(types::I64);
            e.b.def_var(best_v, pv);
            let minus = e.int_const(-1);
            e.b.def_var(best_i, minus);
            e.loop_offsets(n as i64, &[o[0]], &[step], &mut |e, i, p| {
                let v = e.load(ty, x, p[0]);
                // Eligible: after the previous output in (value, index) order.
                let later = order.before(e, pv, v, largest);
                let same = order.same(e, v, pv);
                let beyond = e.b.ins().icmp(IntCC::SignedGreaterThan, i, pi);
                let tie = e.b.ins().band(same, beyond);
                let after = e.b.ins().bor(later, tie);
                let eligible = e.b.ins().bor(first, after);
                let bv = e.b.use_var(best_v);
                let bi = e.b.use_var(best_i);
                let none = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, bi, 0);
                let better = order.before(e, v, bv, largest);
                let wins = e.b.ins().bor(none, better);
                let take = e.b.ins().band(eligible, wins);
                let nv = e.b.ins().select(take, v, bv);
                let ni = e.b.ins().select(take, i, bi);
                e.b.def_var(best_v, nv);
                e.b.def_var(best_i, ni);
            });
            let bv = e.b.use_var(best_v);
            let bi = e.b.use_var(best_i);
            e.store(bv, values, q[0]);
            e.store(bi, indices, q[1]);
            e.b.def_var(prev_v, bv);
            e.b.def_var(prev_i, bi);
        });
    });
    Ok(())
}

/// Byte strides of `data` along every axis but `axis` (0 there), for loops over indices
/// of the data's rank.
fn other_axes(data: &[usize], axis: usize, es: i64) -> (Vec<i64>, i64) {
    let st = element_strides(data);
    let mut s: Vec<i64> = st.iter().map(|&x| x * es).collect();
    let along = s[axis];
    s[axis] = 0;
    (s, along)
}

pub(super) fn lower_gather_elements(
    e: &mut Emitter,
    info: &NodeInfo,
    d: Value,
    idx: Value,
    out: Value,
    axis: usize,
) -> Result<()> {
    let ds = &info.ins[0].shape;
    let it = &info.ins[1];
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let isz = it.dtype.size() as i64;
    let (dst, along) = other_axes(ds, axis, es);
    let ist: Vec<i64> = element_strides(&it.shape).iter().map(|s| s * isz).collect();
    let ost: Vec<i64> = element_strides(&it.shape).iter().map(|s| s * es).collect();
    let n = ds[axis] as i64;
    let z = e.int_const(0);
    let ity = it.dtype;
    e.nest(&it.shape, &[ist, ost, dst], &[z, z, z], &mut |e, o| {
        let k = load_index(e, ity, idx, o[0]);
        let k = resolve(e, k, n, RuntimeError::GatherIndex);
        let off = e.b.ins().imul_imm_s(k, along);
        let off = e.b.ins().iadd(off, o[2]);
        let v = e.load(element_type(dt), d, off);
        e.store(v, out, o[1]);
    });
    Ok(())
}

/// For `[b..., m..., q]` indices into data `ds`: loops over batches and rows, giving the
/// byte offsets of the row in the indices, of its slice in the rows' tensor (gather output
/// or scatter updates), and of the data slice it addresses (checked).
#[allow(clippy::too_many_arguments)]
fn nd_rows(
    e: &mut Emitter,
    ds: &[usize],
    ishape: &[usize],
    ity: DType,
    es: i64,
    batch: usize,
    idx: Value,
    error: RuntimeError,
    body: &mut dyn FnMut(&mut Emitter, Value, Value),
) {
    let q = ishape[ishape.len() - 1];
    let isz = ity.size() as i64;
    let slice = ds[batch + q..].iter().product::<usize>() as i64 * es;
    let batches: usize = ishape[..batch].iter().product();
    let rows: usize = ishape[batch..ishape.len() - 1].iter().product();
    let batch_bytes = ds[batch..].iter().product::<usize>() as i64 * es;
    let dst = element_strides(ds);
    let z = e.int_const(0);
    let rows_i = rows as i64;
    e.loop_offsets(
        batches as i64,
        &[z, z, z],
        &[rows_i * q as i64 * isz, rows_i * slice, batch_bytes],
        &mut |e, _b, ob| {
            e.loop_offsets(rows_i, ob, &[q as i64 * isz, slice, 0], &mut |e, _r, o| {
                let mut off = o[2];
                for c in 0..q {
                    let at = e.b.ins().iadd_imm_s(o[0], c as i64 * isz);
                    let k = load_index(e, ity, idx, at);
                    let k = resolve(e, k, ds[batch + c] as i64, error);
                    let b = e.b.ins().imul_imm_s(k, dst[batch + c] * es);
                    off = e.b.ins().iadd(off, b);
                }
                body(e, o[1], off);
            });
        },
    );
}

pub(super) fn lower_gather_nd(
    e: &mut Emitter,
    info: &NodeInfo,
    d: Value,
    idx: Value,
    out: Value,
    batch: usize,
) -> Result<()> {
    let ds = &info.ins[0].shape;
    let it = &info.ins[1];
    let es = info.ins[0].dtype.size() as i64;
    let q = it.shape[it.rank() - 1];
    let slice = ds[batch + q..].iter().product::<usize>() * es as usize;
    nd_rows(
        e,
        ds,
        &it.shape,
        it.dtype,
        es,
        batch,
        idx,
        RuntimeError::GatherIndex,
        &mut |e, row, src| e.copy_bytes(out, row, d, src, slice),
    );
    Ok(())
}

/// `a (r) u` on one element.
fn combine(e: &mut Emitter, dt: DType, r: ScatterReduction, a: Value, u: Value) -> Value {
    let is_f = dt.is_float();
    let sg = is_signed(dt);
    match r {
        ScatterReduction::Replace => u,
        ScatterReduction::Add if is_f => e.b.ins().fadd(a, u),
        ScatterReduction::Add => e.b.ins().iadd(a, u),
        ScatterReduction::Mul if is_f => e.b.ins().fmul(a, u),
        ScatterReduction::Mul => e.b.ins().imul(a, u),
        // Cranelift's fmax/fmin propagate NaN, as numpy's maximum/minimum do.
        ScatterReduction::Max if is_f => e.b.ins().fmax(a, u),
        ScatterReduction::Min if is_f => e.b.ins().fmin(a, u),
        ScatterReduction::Max if sg => e.b.ins().smax(a, u),
        ScatterReduction::Max => e.b.ins().umax(a, u),
        ScatterReduction::Min if sg => e.b.ins().smin(a, u),
        ScatterReduction::Min => e.b.ins().umin(a, u),
    }
}

/// The output starts as a copy of the data.
fn copy_data(e: &mut Emitter, info: &NodeInfo, d: Value, out: Value) {
    let bytes = info.ins[0].size_bytes();
    let z = e.int_const(0);
    e.copy_bytes(out, z, d, z, bytes);
}

pub(super) fn lower_scatter_elements(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    axis: usize,
    r: ScatterReduction,
) -> Result<()> {
    let (d, idx, upd) = (ins[0], ins[1], ins[2]);
    let ds = &info.ins[0].shape;
    let it = &info.ins[1];
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = element_type(dt);
    let isz = it.dtype.size() as i64;
    copy_data(e, info, d, out);
    let (dst, along) = other_axes(ds, axis, es);
    let ist: Vec<i64> = element_strides(&it.shape).iter().map(|s| s * isz).collect();
    let ust: Vec<i64> = element_strides(&it.shape).iter().map(|s| s * es).collect();
    let n = ds[axis] as i64;
    let z = e.int_const(0);
    let ity = it.dtype;
    e.nest(&it.shape, &[ist, ust, dst], &[z, z, z], &mut |e, o| {
        let k = load_index(e, ity, idx, o[0]);
        let k = resolve(e, k, n, RuntimeError::ScatterIndex);
        let off = e.b.ins().imul_imm_s(k, along);
        let off = e.b.ins().iadd(off, o[2]);
        let u = e.load(ty, upd, o[1]);
        let a = e.load(ty, out, off);
        let v = combine(e, dt, r, a, u);
        e.store(v, out, off);
    });
    Ok(())
}

pub(super) fn lower_scatter_nd(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    r: ScatterReduction,
) -> Result<()> {
    let (d, idx, upd) = (ins[0], ins[1], ins[2]);
    let ds = &info.ins[0].shape;
    let it = &info.ins[1];
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = element_type(dt);
    let q = it.shape[it.rank() - 1];
    let count = ds[q..].iter().product::<usize>();
    copy_data(e, info, d, out);
    nd_rows(
        e,
        ds,
        &it.shape,
        it.dtype,
        es,
        0,
        idx,
        RuntimeError::ScatterIndex,
        &mut |e, row, dst| {
            if r == ScatterReduction::Replace {
                e.copy_bytes(out, dst, upd, row, count * es as usize);
                return;
            }
            e.loop_offsets(count as i64, &[row, dst], &[es, es], &mut |e, _i, o| {
                let u = e.load(ty, upd, o[0]);
                let a = e.load(ty, out, o[1]);
                let v = combine(e, dt, r, a, u);
                e.store(v, out, o[1]);
            });
        },
    );
    Ok(())
}
