//! The index-mapped elementwise loop: `out[i] = f(ins[k][i]...)` over a shape, vectorized
//! when the innermost dim is contiguous (or broadcast) for every operand, 4x4 tile copies for
//! transposes, and a task's slice of a node split across threads.

use crate::builder::{element_type, if_else, Emitter, F32X4};
use crate::error::{CodegenError, Result};
use crate::node::NodeInfo;
use crate::ops::elementwise::{mixed_lanes, vectorizable, Elementwise};
use crate::ops::math::{float_math, mixed_math, scalar_math};
use crate::ops::operand::{collapse, Operand};
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, MemFlagsData, Value};
use optc_ir::DType;

pub(super) fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Load one vector of a `mixed_lanes` path from `p + off` (`bcast`: one element, splatted);
/// bytes are widened to i32 lanes (signed for i8).
fn vload_mixed(e: &mut Emitter, dt: DType, lanes: i64, p: Value, off: Value, bcast: bool) -> Value {
    match (dt, lanes, bcast) {
        (DType::F32, _, false) => e.load(F32X4, p, off),
        (DType::F32, _, true) => {
            let s = e.load(types::F32, p, off);
            e.b.ins().splat(F32X4, s)
        }
        (_, 16, false) => e.load(types::I8X16, p, off),
        (_, 16, true) => {
            let s = e.load(types::I8, p, off);
            e.b.ins().splat(types::I8X16, s)
        }
        (_, _, false) => {
            let w = e.load(types::I32, p, off);
            let v = e.b.ins().scalar_to_vector(types::I32X4, w);
            let v = e.b.ins().bitcast(types::I8X16, le(), v);
            if dt == DType::I8 {
                let v = e.b.ins().swiden_low(v);
                e.b.ins().swiden_low(v)
            } else {
                let v = e.b.ins().uwiden_low(v);
                e.b.ins().uwiden_low(v)
            }
        }
        (_, _, true) => {
            let s = e.load(types::I8, p, off);
            let w = if dt == DType::I8 {
                e.b.ins().sextend(types::I32, s)
            } else {
                e.b.ins().uextend(types::I32, s)
            };
            e.b.ins().splat(types::I32X4, w)
        }
    }
}

/// Store one vector of a `mixed_lanes` path (bool `I32X4` lanes of 0/1 narrow to 4 bytes).
fn vstore_mixed(e: &mut Emitter, dt: DType, lanes: i64, v: Value, p: Value, off: Value) {
    if dt == DType::F32 || lanes == 16 {
        e.store(v, p, off);
        return;
    }
    // u8 lanes 0..=255 need the unsigned narrowing (bools and i8 fit the signed one)
    let b = if dt == DType::U8 {
        let h = e.b.ins().unarrow(v, v);
        e.b.ins().unarrow(h, h)
    } else {
        let h = e.b.ins().snarrow(v, v);
        e.b.ins().snarrow(h, h)
    };
    let w = e.b.ins().bitcast(types::I32X4, le(), b);
    let w = e.b.ins().extractlane(w, 0);
    e.store(w, p, off);
}

/// A 4-byte copy whose output is contiguous along the inner dim while the input is
/// contiguous along an outer dim `j` (a transpose of the two): 4x4 tiles, four f32x4 loads
/// along `j`, an in-register transpose (unpack lo/hi of dwords, then of qwords), four stores.
/// Returns false (emitting nothing) when the shape does not fit.
#[allow(clippy::too_many_arguments)]
fn copy_4x4_tiles(
    e: &mut Emitter,
    dims: &[usize],
    inner: usize,
    outer_st: &[Vec<i64>],
    inner_st: &[i64],
    es: &[i64],
    base: &[Value],
    ptrs: &[Value],
) -> bool {
    if es != [4, 4]
        || inner_st[0] != 4
        || inner_st[1] == 4
        || inner_st[1] == 0
        || !inner.is_multiple_of(4)
    {
        return false;
    }
    let Some(j) = (0..dims.len()).find(|&j| outer_st[1][j] == 4 && dims[j].is_multiple_of(4))
    else {
        return false;
    };
    let rest: Vec<usize> = (0..dims.len()).filter(|&d| d != j).collect();
    let rdims: Vec<usize> = rest.iter().map(|&d| dims[d]).collect();
    let rst: Vec<Vec<i64>> = outer_st
        .iter()
        .map(|s| rest.iter().map(|&d| s[d]).collect())
        .collect();
    let (ojs, ins_) = (outer_st[0][j], inner_st[1]);
    let shuffle_lanes = |e: &mut Emitter, a: Value, b: Value, lanes: [u8; 4], dq: bool| -> Value {
        // Bytes of `a` are 0..16, of `b` 16..32; `lanes` are dword (or qword, `dq`) indices.
        let mut m = [0u8; 16];
        for (k, &l) in lanes.iter().enumerate() {
            if dq {
                if k < 2 {
                    for t in 0..8 {
                        m[k * 8 + t] = l * 8 + t as u8;
                    }
                }
            } else {
                for t in 0..4 {
                    m[k * 4 + t] = l * 4 + t as u8;
                }
            }
        }
        let imm = e.b.func.dfg.immediates.push(m.to_vec().into());
        e.b.ins().shuffle(a, b, imm)
    };
    e.nest(&rdims, &rst, base, &mut |e, offs| {
        e.loop_offsets(
            (dims[j] / 4) as i64,
            offs,
            &[4 * ojs, 16],
            &mut |e, _i, o1| {
                e.loop_offsets((inner / 4) as i64, o1, &[16, 4 * ins_], &mut |e, _k, o| {
                    let a: Vec<Value> = (0..4)
                        .map(|k| {
                            let off = e.b.ins().iadd_imm_s(o[1], k * ins_);
                            let v = e.load(F32X4, ptrs[1], off);
                            e.b.ins().bitcast(types::I8X16, le(), v)
                        })
                        .collect();
                    // dword unpacks: t0 = a0.0 a1.0 a0.1 a1.1, t2 = a0.2 a1.2 a0.3 a1.3, ...
                    let t0 = shuffle_lanes(e, a[0], a[1], [0, 4, 1, 5], false);
                    let t1 = shuffle_lanes(e, a[2], a[3], [0, 4, 1, 5], false);
                    let t2 = shuffle_lanes(e, a[0], a[1], [2, 6, 3, 7], false);
                    let t3 = shuffle_lanes(e, a[2], a[3], [2, 6, 3, 7], false);
                    let r = [
                        shuffle_lanes(e, t0, t1, [0, 2, 0, 0], true),
                        shuffle_lanes(e, t0, t1, [1, 3, 0, 0], true),
                        shuffle_lanes(e, t2, t3, [0, 2, 0, 0], true),
                        shuffle_lanes(e, t2, t3, [1, 3, 0, 0], true),
                    ];
                    for (k, &v) in r.iter().enumerate() {
                        let off = e.b.ins().iadd_imm_s(o[0], k as i64 * ojs);
                        let v = e.b.ins().bitcast(F32X4, le(), v);
                        e.store(v, ptrs[0], off);
                    }
                });
            },
        );
    });
    true
}

/// Vectors per step of the vector loop.
const UNROLL: i64 = 4;

/// Generic index-mapped elementwise loop: `out[i] = f(ins[k][i]...)` over `shape`.
pub(crate) fn map(
    e: &mut Emitter,
    info: &NodeInfo,
    shape: &[usize],
    out: Operand,
    ins: &[Operand],
    f: &Elementwise,
) -> Result<()> {
    if shape.iter().product::<usize>() == 0 {
        return Ok(());
    }
    let ops: Vec<Operand> = std::iter::once(out).chain(ins.iter().cloned()).collect();
    // A task's part of a split node: a slice along `dim`, at a run-time offset (the last part
    // shorter when the parts do not divide the extent: a loop nest for each length).
    let Some(sp) = e
        .partition
        .clone()
        .filter(|sp| sp.shape.as_slice() == shape)
    else {
        return map_part(e, info, shape, ops, None, f);
    };
    let (part, last) = sp.lengths();
    let rt_base: Vec<Value> = ops
        .iter()
        .map(|o| {
            e.b.ins()
                .imul_imm_s(sp.t, part as i64 * o.strides[sp.dim] * o.dt.size() as i64)
        })
        .collect();
    let mut part_shape = shape.to_vec();
    part_shape[sp.dim] = part;
    if last == part {
        return map_part(e, info, &part_shape, ops, Some(rt_base), f);
    }
    let mut last_shape = shape.to_vec();
    last_shape[sp.dim] = last;
    let is_last =
        e.b.ins()
            .icmp_imm_s(IntCC::Equal, sp.t, sp.parts as i64 - 1);
    let (mut last_done, mut part_done) = (Ok(()), Ok(()));
    if_else(
        e,
        is_last,
        &mut |e| last_done = map_part(e, info, &last_shape, ops.clone(), Some(rt_base.clone()), f),
        &mut |e| part_done = map_part(e, info, &part_shape, ops.clone(), Some(rt_base.clone()), f),
    );
    last_done.and(part_done)
}

/// [`map`] over `shape` (a task's part when `rt_base` holds its byte offsets per operand).
fn map_part(
    e: &mut Emitter,
    info: &NodeInfo,
    shape: &[usize],
    mut ops: Vec<Operand>,
    rt_base: Option<Vec<Value>>,
    f: &Elementwise,
) -> Result<()> {
    let dims = {
        let mut refs: Vec<&mut Vec<i64>> = ops.iter_mut().map(|o| &mut o.strides).collect();
        collapse(shape, &mut refs)
    };
    let (dims, inner) = if dims.is_empty() {
        (vec![], 1usize)
    } else {
        (dims[..dims.len() - 1].to_vec(), dims[dims.len() - 1])
    };
    let nd = dims.len();
    // Byte strides of outer dims, inner stride separately.
    let es: Vec<i64> = ops.iter().map(|o| o.dt.size() as i64).collect();
    let outer_st: Vec<Vec<i64>> = ops
        .iter()
        .zip(&es)
        .map(|(o, s)| o.strides[..nd].iter().map(|x| x * s).collect())
        .collect();
    let inner_st: Vec<i64> = ops
        .iter()
        .zip(&es)
        .map(|(o, s)| o.strides.get(nd).copied().unwrap_or(0) * s)
        .collect();
    let mut base: Vec<Value> = ops
        .iter()
        .zip(&es)
        .map(|(o, s)| e.int_const(o.base * s))
        .collect();
    if let Some(rb) = &rt_base {
        for (b, r) in base.iter_mut().zip(rb) {
            *b = e.b.ins().iadd(*b, *r);
        }
    }
    let dts: Vec<DType> = ops[1..].iter().map(|o| o.dt).collect();
    let odt = ops[0].dt;
    let ptrs: Vec<Value> = ops.iter().map(|o| o.p).collect();
    if matches!(f, Elementwise::Copy)
        && rt_base.is_none()
        && copy_4x4_tiles(e, &dims, inner, &outer_st, &inner_st, &es, &base, &ptrs)
    {
        return Ok(());
    }
    // Vector path: contiguous output, every input contiguous or broadcast along the inner dim.
    let mixed = mixed_lanes(f, &dts, odt);
    let lanes: i64 = match (f, mixed) {
        (_, Some(l)) => l,
        (Elementwise::Copy, _) => 16 / es[0],
        _ => 4,
    };
    let vec_ok = (mixed.is_some() || vectorizable(f, &dts, odt))
        && inner as i64 >= lanes
        && inner_st[0] == es[0]
        && inner_st[1..]
            .iter()
            .zip(&es[1..])
            .all(|(&s, &z)| s == 0 || s == z);
    let vty = match es[0] {
        1 => types::I8X16,
        2 => types::I16X8,
        8 => types::I64X2,
        _ => F32X4,
    };
    let vty = if matches!(f, Elementwise::Copy) {
        vty
    } else {
        F32X4
    };
    // Vector path: an input broadcast along every dim is loaded and splatted once, before
    // the loops.
    let mut hoisted: Vec<Option<Value>> = vec![None; ops.len()];
    if vec_ok {
        for k in 1..ops.len() {
            if inner_st[k] == 0 && outer_st[k].iter().all(|&s| s == 0) {
                hoisted[k] = Some(if mixed.is_some() {
                    vload_mixed(e, dts[k - 1], lanes, ptrs[k], base[k], true)
                } else {
                    let s = e.load(vty.lane_type(), ptrs[k], base[k]);
                    e.b.ins().splat(vty, s)
                });
            }
        }
    }
    let mut err: Option<CodegenError> = None;
    e.nest(&dims, &outer_st, &base, &mut |e, offs| {
        let mut rem_offs = offs.to_vec();
        let mut rem = inner as i64;
        if vec_ok {
            let nv = inner as i64 / lanes;
            // Inputs broadcast along the inner dim: loaded and splatted once per row.
            let row: Vec<Option<Value>> = (0..ops.len())
                .map(|k| match hoisted[k] {
                    Some(h) => Some(h),
                    None if k > 0 && inner_st[k] == 0 => Some(if mixed.is_some() {
                        vload_mixed(e, dts[k - 1], lanes, ptrs[k], offs[k], true)
                    } else {
                        let s = e.load(vty.lane_type(), ptrs[k], offs[k]);
                        e.b.ins().splat(vty, s)
                    }),
                    None => None,
                })
                .collect();
            // One vector at offsets `o`.
            let vector = |e: &mut Emitter, o: &[Value]| {
                let mut args = vec![];
                for k in 1..o.len() {
                    let v = if let Some(h) = row[k] {
                        h
                    } else if mixed.is_some() {
                        vload_mixed(e, dts[k - 1], lanes, ptrs[k], o[k], false)
                    } else {
                        e.load(vty, ptrs[k], o[k])
                    };
                    args.push(v);
                }
                if mixed.is_some() {
                    let r = mixed_math(e, f, &args);
                    vstore_mixed(e, odt, lanes, r, ptrs[0], o[0]);
                    return;
                }
                let r = if matches!(f, Elementwise::Copy) {
                    Some(args[0])
                } else {
                    float_math(e, F32X4, f, &args)
                };
                if let Some(r) = r {
                    e.store(r, ptrs[0], o[0]);
                }
            };
            // Runs of `UNROLL` vectors (the loop's counting and branches once per run), then
            // the vectors left.
            let steps: Vec<i64> = inner_st.iter().map(|s| s * lanes).collect();
            let run_steps: Vec<i64> = steps.iter().map(|s| s * UNROLL).collect();
            let runs = nv / UNROLL;
            e.loop_offsets(runs, offs, &run_steps, &mut |e, _i, o| {
                for u in 0..UNROLL {
                    let ou: Vec<Value> = o
                        .iter()
                        .zip(&steps)
                        .map(|(&x, &s)| e.b.ins().iadd_imm_s(x, s * u))
                        .collect();
                    vector(e, &ou);
                }
            });
            let left: Vec<Value> = offs
                .iter()
                .zip(&run_steps)
                .map(|(&o, &s)| e.b.ins().iadd_imm_s(o, s * runs))
                .collect();
            e.loop_offsets(nv % UNROLL, &left, &steps, &mut |e, _i, o| vector(e, o));
            rem = inner as i64 % lanes;
            rem_offs = offs
                .iter()
                .zip(&inner_st)
                .map(|(&o, &s)| e.b.ins().iadd_imm_s(o, s * nv * lanes))
                .collect();
        }
        e.loop_offsets(rem, &rem_offs, &inner_st, &mut |e, _i, o| {
            let mut args = vec![];
            for k in 1..o.len() {
                args.push(e.load(element_type(dts[k - 1]), ptrs[k], o[k]));
            }
            match scalar_math(e, info, f, &args, &dts, odt) {
                Ok(r) => e.store(r, ptrs[0], o[0]),
                Err(x) => {
                    if err.is_none() {
                        err = Some(x);
                    }
                }
            }
        });
    });
    match err {
        Some(x) => Err(x),
        None => Ok(()),
    }
}
