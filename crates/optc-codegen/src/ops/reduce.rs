//! Reductions (sum, mean, max, min, product, L2) over any axes.

use crate::builder::{element_type, Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::math::{int_range, is_signed};
use crate::ops::operand::{collapse, element_strides};
use crate::ops::parallel::task_rows;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};
use optc_ir::{DType, ReduceKind};

// ---------------------------------------------------------------------------------------------
// Reductions and normalizations.

pub(super) fn lower_reduce(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    kind: ReduceKind,
    axes: &[usize],
) -> Result<()> {
    let xs = &info.ins[0].shape;
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = element_type(dt);
    let xst = element_strides(xs);
    let kept: Vec<usize> = (0..xs.len()).filter(|d| !axes.contains(d)).collect();
    let kdims: Vec<usize> = kept.iter().map(|&d| xs[d]).collect();
    if kdims.iter().product::<usize>() == 0 {
        return Ok(());
    }
    let ost = element_strides(&kdims);
    let count: usize = axes.iter().map(|&a| xs[a]).product();
    let mut rdims: Vec<usize> = axes.iter().map(|&a| xs[a]).collect();
    let mut rst: Vec<i64> = axes.iter().map(|&a| xst[a]).collect();
    let rdims = {
        let mut refs = [&mut rst];
        let d = collapse(&rdims, &mut refs);
        rdims.clear();
        d
    };
    let kst: Vec<Vec<i64>> = vec![
        kept.iter().map(|&d| xst[d] * es).collect(),
        ost.iter().map(|s| s * es).collect(),
    ];
    let z = e.int_const(0);
    let is_f = dt.is_float();
    let sg = is_signed(dt);
    let contiguous_inner = rdims.len() == 1 && rst[0] == 1;
    let extreme = matches!(kind, ReduceKind::Max | ReduceKind::Min);
    if count == 0 && extreme && !is_f {
        return Err(info.err(format!(
            "{} over an empty axis of an integer tensor",
            kind.name()
        )));
    }
    // One output: its input offset `o[0]`, output offset `o[1]` (bytes).
    let row = |e: &mut Emitter, o: &[Value]| {
        let init = |e: &mut Emitter, ty: Type| -> Value {
            match (kind, is_f) {
                (ReduceKind::Max, true) if count == 0 => e.float_const(ty, f32::NEG_INFINITY),
                (ReduceKind::Min, true) if count == 0 => e.float_const(ty, f32::INFINITY),
                // NaN start: the first element always wins, later NaNs are ignored.
                (ReduceKind::Max | ReduceKind::Min, true) => e.float_const(ty, f32::NAN),
                (ReduceKind::Prod, true) => e.float_const(ty, 1.0),
                (_, true) => e.float_const(ty, 0.0),
                (ReduceKind::Max, false) => e.b.ins().iconst(ty, int_range(dt).0),
                (ReduceKind::Min, false) => e.b.ins().iconst(ty, int_range(dt).1),
                (ReduceKind::Prod, false) => e.b.ins().iconst(ty, 1),
                (_, false) => e.b.ins().iconst(ty, 0),
            }
        };
        let combine = |e: &mut Emitter, a: Value, v: Value| -> Value {
            match (kind, is_f) {
                (ReduceKind::L2, _) => e.mul_add(v, v, a),
                (_, true) => combine_parts(e, kind, a, v),
                (ReduceKind::Max, false) => {
                    if sg {
                        e.b.ins().smax(a, v)
                    } else {
                        e.b.ins().umax(a, v)
                    }
                }
                (ReduceKind::Min, false) => {
                    if sg {
                        e.b.ins().smin(a, v)
                    } else {
                        e.b.ins().umin(a, v)
                    }
                }
                (ReduceKind::Prod, false) => e.b.ins().imul(a, v),
                (_, false) => e.b.ins().iadd(a, v),
            }
        };
        let acc = e.b.declare_var(ty);
        let iv = init(e, ty);
        e.b.def_var(acc, iv);
        let mut start = o[0];
        let mut rem_dims = rdims.clone();
        if dt == DType::F32 && contiguous_inner && rdims[0] >= 8 {
            let n = rdims[0];
            let nv = n / 4;
            // Four vector accumulators over runs of 16 elements (one accumulator was bound
            // by the add's latency: a 56x56 plane's mean 3.6x slower), then the vectors
            // left into the first; the four combined pairwise.
            let vaccs: Vec<_> = (0..ACCUMULATORS)
                .map(|_| {
                    let v = e.b.declare_var(F32X4);
                    let vi = init(e, F32X4);
                    e.b.def_var(v, vi);
                    v
                })
                .collect();
            let runs = nv / ACCUMULATORS;
            let run_bytes = (ACCUMULATORS * 16) as i64;
            e.loop_offsets(runs as i64, &[o[0]], &[run_bytes], &mut |e, _i, oo| {
                for (j, &vacc) in vaccs.iter().enumerate() {
                    let at = e.b.ins().iadd_imm_s(oo[0], 16 * j as i64);
                    let v = e.load(F32X4, x, at);
                    let a = e.b.use_var(vacc);
                    let na = combine(e, a, v);
                    e.b.def_var(vacc, na);
                }
            });
            let rest = e.b.ins().iadd_imm_s(o[0], runs as i64 * run_bytes);
            let left = (nv % ACCUMULATORS) as i64;
            e.loop_offsets(left, &[rest], &[16], &mut |e, _i, oo| {
                let v = e.load(F32X4, x, oo[0]);
                let a = e.b.use_var(vaccs[0]);
                let na = combine(e, a, v);
                e.b.def_var(vaccs[0], na);
            });
            let mut parts: Vec<Value> = vaccs.iter().map(|&v| e.b.use_var(v)).collect();
            while parts.len() > 1 {
                parts = parts
                    .chunks(2)
                    .map(|p| match *p {
                        [a, b] => combine_parts(e, kind, a, b),
                        _ => p[0],
                    })
                    .collect();
            }
            let v = parts[0];
            let mut r = e.b.ins().extractlane(v, 0);
            for l in 1..4u8 {
                let s = e.b.ins().extractlane(v, l);
                r = combine_parts(e, kind, r, s);
            }
            e.b.def_var(acc, r);
            start = e.b.ins().iadd_imm_s(o[0], nv as i64 * 16);
            rem_dims = vec![n % 4];
        }
        let rstb: Vec<Vec<i64>> = vec![rst.iter().map(|s| s * es).collect()];
        e.nest(&rem_dims, &rstb, &[start], &mut |e, ro| {
            let v = e.load(ty, x, ro[0]);
            let a = e.b.use_var(acc);
            let na = combine(e, a, v);
            e.b.def_var(acc, na);
        });
        let mut r = e.b.use_var(acc);
        match kind {
            ReduceKind::Mean if count > 0 => {
                if dt == DType::F64 {
                    let c = e.f64_const(count as f64);
                    r = e.b.ins().fdiv(r, c);
                } else if is_f {
                    let c = e.float_const(types::F32, count as f32);
                    r = e.b.ins().fdiv(r, c);
                } else {
                    let c = e.b.ins().iconst(ty, count as i64);
                    r = if sg {
                        e.b.ins().sdiv(r, c)
                    } else {
                        e.b.ins().udiv(r, c)
                    };
                }
            }
            ReduceKind::Mean if is_f => r = e.float_const(ty, f32::NAN),
            ReduceKind::L2 => r = e.b.ins().sqrt(r),
            _ => {}
        }
        e.store(r, out, o[1]);
    };
    // The kept dims leading (a global pool's `[n, c]` over `h, w`): `outer` outputs `count`
    // elements apart, in this task's block of them when the node runs as tasks
    // (`parallel::reduce_split`).
    if kept.iter().enumerate().all(|(i, &d)| i == d) {
        let outer: usize = kdims.iter().product();
        let (istep, ostep) = (count as i64 * es, es);
        task_rows(e, outer, &|e, first, rows| {
            let i0 = e.b.ins().imul_imm_s(first, istep);
            let o0 = e.b.ins().imul_imm_s(first, ostep);
            e.loop_offsets(rows as i64, &[i0, o0], &[istep, ostep], &mut |e, _r, o| {
                row(e, o)
            });
        });
        return Ok(());
    }
    e.nest(&kdims, &kst, &[z, z], &mut |e, o| row(e, o));
    Ok(())
}

/// Vector accumulators of a contiguous f32 reduction.
const ACCUMULATORS: usize = 4;

/// Two values of a float reduction `kind` combined (an element into the accumulator, or two
/// partial results; scalars or vectors); an L2 reduction's partial sums of squares add.
fn combine_parts(e: &mut Emitter, kind: ReduceKind, a: Value, b: Value) -> Value {
    match kind {
        ReduceKind::Max => nan_ignoring(e, a, b, FloatCC::GreaterThan),
        ReduceKind::Min => nan_ignoring(e, a, b, FloatCC::LessThan),
        ReduceKind::Prod => e.b.ins().fmul(a, b),
        _ => e.b.ins().fadd(a, b),
    }
}

/// `v` when `v wins a` (greater than for max, less than for min) or `a` is NaN, else `a`
/// (scalar or f32x4).
fn nan_ignoring(e: &mut Emitter, a: Value, v: Value, wins: FloatCC) -> Value {
    let ty = e.b.func.dfg.value_type(a);
    let gt = e.b.ins().fcmp(wins, v, a);
    let un = e.b.ins().fcmp(FloatCC::Unordered, a, a);
    let take = e.b.ins().bor(gt, un);
    e.select_float(ty, take, v, a)
}
