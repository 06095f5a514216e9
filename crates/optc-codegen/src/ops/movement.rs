//! Data movement: Reshape, Expand, Transpose, Slice, Concat, Split (index-mapped copies), Pad
//! (through a compile-time index table), Gather (checked indices) and Guard (a checked
//! condition, then a copy).

use crate::builder::{element_type, if_else, tensor_flags, transpose4, Emitter, Partition, F32X4};
use crate::error::{Result, RuntimeError};
use crate::node::NodeInfo;
use crate::ops::elementwise::Elementwise;
use crate::ops::map::map;
use crate::ops::math::cast;
use crate::ops::operand::{element_strides, Operand};
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Type, Value};
use optc_ir::{DType, Op, PadMode, SliceDim, TensorType};

/// A reshape that is not aliased by the memory plan: a flat copy.
pub(super) fn lower_reshape(e: &mut Emitter, info: &NodeInfo, x: Value, out: Value) -> Result<()> {
    flat_copy(e, info, x, &info.ins[0], out)
}

/// The output: the elements of `x` (of type `xty`) in order.
fn flat_copy(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    xty: &TensorType,
    out: Value,
) -> Result<()> {
    let oty = &info.outs[0];
    let x = Operand::dense(x, xty);
    let n = oty.numel();
    map(
        e,
        info,
        &[n],
        Operand::dense(out, &TensorType::new(oty.dtype, vec![n])),
        &[Operand {
            strides: vec![1],
            ..x
        }],
        &Elementwise::Copy,
    )
}

/// A guard: fail with [`RuntimeError::UncompiledBranch`] (or `LengthOutOfRange`) unless the bool `cond` is
/// `expect`, then copy `x`.
pub(super) fn lower_guard(
    e: &mut Emitter,
    info: &NodeInfo,
    cond: Value,
    x: Value,
    out: Value,
    expect: bool,
    length: bool,
) -> Result<()> {
    let zero = e.b.ins().iconst(types::I64, 0);
    let c = e.load(types::I8, cond, zero);
    let cc = if expect {
        IntCC::Equal
    } else {
        IntCC::NotEqual
    };
    let bad = e.b.ins().icmp_imm_u(cc, c, 0);
    e.fail_if(
        bad,
        if length {
            RuntimeError::LengthOutOfRange
        } else {
            RuntimeError::UncompiledBranch
        },
    );
    flat_copy(e, info, x, &info.ins[1], out)
}

pub(super) fn lower_expand(e: &mut Emitter, info: &NodeInfo, x: Value, out: Value) -> Result<()> {
    let oty = &info.outs[0];
    let x = Operand::broadcast(x, &info.ins[0], &oty.shape);
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &[x],
        &Elementwise::Copy,
    )
}

pub(super) fn lower_transpose(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    perm: &[usize],
) -> Result<()> {
    let oty = &info.outs[0];
    let xs = element_strides(&info.ins[0].shape);
    let st: Vec<i64> = perm.iter().map(|&q| xs[q]).collect();
    let r = oty.rank();
    if r >= 2
        && oty.dtype.size() == 4
        && st[r - 1] != 1
        && st[r - 2] == 1
        && oty.shape[r - 2] >= 4
        && oty.shape[r - 1] >= 4
    {
        transpose_blocks(e, oty, x, out, &st);
        return Ok(());
    }
    let x = Operand {
        p: x,
        dt: oty.dtype,
        base: 0,
        strides: st,
    };
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &[x],
        &Elementwise::Copy,
    )
}

/// A transpose whose output rows run along the input's contiguous dim (`st`: the input's
/// element stride per output dim, 1 for the second-to-last, not for the last: a key's
/// `[.., S, D] -> [.., D, S]`, NCHW to NHWC): 4 x 4 blocks, four vector loads along the
/// input's rows, a transpose in registers (two rounds of lane shuffles), four vector stores;
/// the edges element by element. A task's part of a split node ([`crate::ops::parallel`]) is
/// its slice along one output dim.
fn transpose_blocks(e: &mut Emitter, oty: &TensorType, x: Value, out: Value, st: &[i64]) {
    let full = oty.shape.clone();
    let ost = element_strides(&full);
    let Some(sp) = e.partition.clone().filter(|sp| sp.shape == full) else {
        let z = e.int_const(0);
        transpose_part(e, &full, &ost, x, out, st, z, z);
        return;
    };
    // The last part shorter when the parts do not divide the extent.
    let (part, last) = sp.lengths();
    let bin = e.b.ins().imul_imm_s(sp.t, part as i64 * st[sp.dim] * 4);
    let bout = e.b.ins().imul_imm_s(sp.t, part as i64 * ost[sp.dim] * 4);
    let mut shape = full.clone();
    shape[sp.dim] = part;
    if last == part {
        transpose_part(e, &shape, &ost, x, out, st, bin, bout);
        return;
    }
    let mut last_shape = full.clone();
    last_shape[sp.dim] = last;
    let is_last =
        e.b.ins()
            .icmp_imm_s(IntCC::Equal, sp.t, sp.parts as i64 - 1);
    if_else(
        e,
        is_last,
        &mut |e| transpose_part(e, &last_shape, &ost, x, out, st, bin, bout),
        &mut |e| transpose_part(e, &shape, &ost, x, out, st, bin, bout),
    );
}

/// [`transpose_blocks`] over `shape` (the whole output or a task's part of it, at byte
/// offsets `bin` and `bout`; `ost`: the whole output's element strides).
#[allow(clippy::too_many_arguments)]
fn transpose_part(
    e: &mut Emitter,
    shape: &[usize],
    ost: &[i64],
    x: Value,
    out: Value,
    st: &[i64],
    bin: Value,
    bout: Value,
) {
    let r = shape.len();
    let (rows, cols) = (shape[r - 2], shape[r - 1]);
    // Bytes between the input elements of neighbouring output columns, output rows.
    let s = st[r - 1] * 4;
    let orow = ost[r - 2] * 4;
    let outer_in: Vec<i64> = st[..r - 2].iter().map(|v| v * 4).collect();
    let outer_out: Vec<i64> = ost[..r - 2].iter().map(|v| v * 4).collect();
    let scalar = |e: &mut Emitter, pin: Value, pout: Value| {
        let v = e.b.ins().load(types::I32, tensor_flags(), pin, 0);
        e.b.ins().store(tensor_flags(), v, pout, 0);
    };
    e.nest(
        &shape[..r - 2],
        &[outer_in, outer_out],
        &[bin, bout],
        &mut |e, offs| {
            let pin = e.b.ins().iadd(x, offs[0]);
            let pout = e.b.ins().iadd(out, offs[1]);
            e.loop_offsets(
                (rows / 4) as i64,
                &[pin, pout],
                &[16, 4 * orow],
                &mut |e, _i, ro| {
                    e.loop_offsets(
                        (cols / 4) as i64,
                        &[ro[0], ro[1]],
                        &[4 * s, 16],
                        &mut |e, _j, o| {
                            let v = [0, 1, 2, 3].map(|i| {
                                let a = e.b.ins().iadd_imm_s(o[0], i * s);
                                e.b.ins().load(F32X4, tensor_flags(), a, 0)
                            });
                            let w = transpose4(e, v);
                            for (k, wk) in w.into_iter().enumerate() {
                                let a = e.b.ins().iadd_imm_s(o[1], k as i64 * orow);
                                e.b.ins().store(tensor_flags(), wk, a, 0);
                            }
                        },
                    );
                    for c in cols / 4 * 4..cols {
                        for k in 0..4 {
                            let a = e.b.ins().iadd_imm_s(ro[0], c as i64 * s + 4 * k);
                            let b = e.b.ins().iadd_imm_s(ro[1], k * orow + 4 * c as i64);
                            scalar(e, a, b);
                        }
                    }
                },
            );
            for k in rows / 4 * 4..rows {
                let a = e.b.ins().iadd_imm_s(pin, 4 * k as i64);
                let b = e.b.ins().iadd_imm_s(pout, k as i64 * orow);
                e.loop_offsets(cols as i64, &[a, b], &[s, 4], &mut |e, _c, o| {
                    scalar(e, o[0], o[1]);
                });
            }
        },
    );
}

pub(super) fn lower_slice(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    dims: &[SliceDim],
) -> Result<()> {
    let oty = &info.outs[0];
    let xs = element_strides(&info.ins[0].shape);
    let base = dims.iter().zip(&xs).map(|(d, s)| d.start * s).sum();
    let st = dims.iter().zip(&xs).map(|(d, s)| d.step * s).collect();
    let x = Operand {
        p: x,
        dt: oty.dtype,
        base,
        strides: st,
    };
    map(
        e,
        info,
        &oty.shape,
        Operand::dense(out, oty),
        &[x],
        &Elementwise::Copy,
    )
}

pub(super) fn lower_concat(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    axis: usize,
) -> Result<()> {
    let oty = &info.outs[0];
    let os = element_strides(&oty.shape);
    // A task's part (`ops::parallel`: a dim other than `axis`) is the same part of each input.
    let part = e.partition.clone().filter(|sp| sp.shape == oty.shape);
    let mut at = 0i64;
    for (k, t) in info.ins.iter().enumerate() {
        let o = Operand {
            p: out,
            dt: oty.dtype,
            base: at * os[axis],
            strides: os.clone(),
        };
        if let Some(sp) = &part {
            e.partition = Some(Partition {
                shape: t.shape.clone(),
                ..sp.clone()
            });
        }
        map(
            e,
            info,
            &t.shape,
            o,
            &[Operand::dense(ins[k], t)],
            &Elementwise::Copy,
        )?;
        at += t.shape[axis] as i64;
    }
    if part.is_some() {
        e.partition = part;
    }
    Ok(())
}

pub(super) fn lower_split(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    outs: &[Value],
    axis: usize,
) -> Result<()> {
    let xs = element_strides(&info.ins[0].shape);
    let mut at = 0i64;
    for (j, t) in info.outs.iter().enumerate() {
        let src = Operand {
            p: x,
            dt: t.dtype,
            base: at * xs[axis],
            strides: xs.clone(),
        };
        map(
            e,
            info,
            &t.shape,
            Operand::dense(outs[j], t),
            &[src],
            &Elementwise::Copy,
        )?;
        at += t.shape[axis] as i64;
    }
    Ok(())
}

/// Pad's index table: per dim and output index, the input byte offset along that dim, or -1
/// for the fill value.
pub(super) fn pad_table(info: &NodeInfo, pads: &[i64], mode: PadMode) -> Vec<u8> {
    let xs = &info.ins[0].shape;
    let out = &info.outs[0].shape;
    let r = xs.len();
    let es = info.ins[0].dtype.size() as i64;
    let ist = optc_ir::strides(xs);
    let mut tab: Vec<i64> = vec![];
    for d in 0..r {
        let n = xs[d] as i64;
        for i in 0..out[d] as i64 {
            let src = mode.source_index(i, pads[d], n);
            tab.push(src.map_or(-1, |s| s * ist[d] as i64 * es));
        }
    }
    tab.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Data movement with index tables and gathers.

/// The outputs of a pad's last dim in `start..end` read the inputs from `source` on, one after
/// the other (where the outer dims are not in the padding; else `fill`).
#[derive(Clone, Copy)]
struct Interior {
    start: usize,
    end: usize,
    source: i64,
    fill: Value,
}

pub(super) fn lower_pad(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    tab: Value,
    value: f32,
) -> Result<()> {
    let oty = &info.outs[0];
    if oty.numel() == 0 {
        return Ok(());
    }
    let dt = oty.dtype;
    let ty = element_type(dt);
    let es = dt.size() as i64;
    let fillf = e.float_const(types::F32, value);
    let fill = cast(e, fillf, DType::F32, dt);
    let shape = oty.shape.clone();
    let mut tab_off = vec![];
    let mut acc = 0i64;
    for &n in &shape {
        tab_off.push(acc);
        acc += n as i64 * 8;
    }
    let ost = element_strides(&shape);
    let in_empty = info.ins[0].numel() == 0;
    // A task's part of a split node: its slice along one dimension (`ops::parallel`).
    let part = e
        .partition
        .clone()
        .filter(|sp| sp.shape == shape)
        .map(|sp| (sp.dim, shape[sp.dim] / sp.parts, sp.t));
    #[allow(clippy::too_many_arguments)]
    fn rec(
        e: &mut Emitter,
        d: usize,
        shape: &[usize],
        tab_off: &[i64],
        ost: &[i64],
        es: i64,
        part: Option<(usize, usize, Value)>,
        interior: Option<Interior>,
        p: (Value, Value, Value),
        st: (Value, Value, Value),
        leaf: &mut dyn FnMut(&mut Emitter, Value, Value, Value),
    ) {
        if d == shape.len() {
            leaf(e, st.0, st.1, st.2);
            return;
        }
        let tab = p.2;
        let (ooff, ioff, valid) = st;
        let step = ost[d] * es;
        let tstart = e.int_const(tab_off[d]);
        // In a task's slice, this dimension runs over `[t n, (t + 1) n)` only.
        let (range, ooff, tstart) = match part {
            Some((dim, n, t)) if dim == d => {
                let first = e.b.ins().imul_imm_s(t, n as i64);
                let oo = e.b.ins().imul_imm_s(first, step);
                let to = e.b.ins().imul_imm_s(first, 8);
                (0..n, e.b.ins().iadd(ooff, oo), e.b.ins().iadd(tstart, to))
            }
            _ => (0..shape[d], ooff, tstart),
        };
        // The last dim's interior (`interior`): copied a vector at a time, the table-driven
        // loop only before and after it.
        let pieces = match interior {
            Some(r) if d + 1 == shape.len() && range == (0..shape[d]) => {
                let (x, out, _) = p;
                let src = e.b.ins().iadd_imm_s(ioff, r.source * es);
                let dst = e.b.ins().iadd_imm_s(ooff, r.start as i64 * es);
                let fill = r.fill;
                let copy = |e: &mut Emitter, ty: Type, o: &[Value]| {
                    let v = e.load(ty, x, o[0]);
                    let f = if ty.is_vector() {
                        e.b.ins().splat(ty, fill)
                    } else {
                        fill
                    };
                    let v = e.b.ins().select(valid, v, f);
                    e.store(v, out, o[1]);
                };
                e.vector_loop(
                    r.end - r.start,
                    &[src, dst],
                    &[true, true],
                    &mut |e, o| copy(e, F32X4, o),
                    &mut |e, o| copy(e, types::F32, o),
                );
                vec![0..r.start, r.end..shape[d]]
            }
            _ => vec![range],
        };
        for piece in pieces.into_iter().filter(|r| !r.is_empty()) {
            let ooff = e.b.ins().iadd_imm_s(ooff, piece.start as i64 * step);
            let tstart = e.b.ins().iadd_imm_s(tstart, piece.start as i64 * 8);
            e.loop_offsets(
                piece.len() as i64,
                &[ooff, tstart],
                &[step, 8],
                &mut |e, _i, o| {
                    let t = e.load(types::I64, tab, o[1]);
                    let ok = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, t, 0);
                    let v = e.b.ins().band(valid, ok);
                    let z = e.int_const(0);
                    let t = e.b.ins().select(ok, t, z);
                    let io = e.b.ins().iadd(ioff, t);
                    rec(
                        e,
                        d + 1,
                        shape,
                        tab_off,
                        ost,
                        es,
                        part,
                        interior,
                        p,
                        (o[0], io, v),
                        leaf,
                    );
                },
            );
        }
    }
    let z = e.int_const(0);
    let t = e.b.ins().iconst(types::I8, if in_empty { 0 } else { 1 });
    // The last dim's outputs read from consecutive inputs (all but the padding), when the
    // elements are f32 (copied as they are) and there are a few vectors of them (a rank-0
    // pad has no dims).
    let interior = match info.op {
        Op::Pad { pads, .. } if dt == DType::F32 && !in_empty && !shape.is_empty() => {
            let last = shape.len() - 1;
            let begin = pads[last];
            let n = info.ins[0].shape[last] as i64;
            let lo = begin.max(0);
            let hi = (begin + n).min(shape[last] as i64);
            (hi - lo >= 8).then_some(Interior {
                start: lo as usize,
                end: hi as usize,
                source: lo - begin,
                fill,
            })
        }
        _ => None,
    };
    rec(
        e,
        0,
        &shape,
        &tab_off,
        &ost,
        es,
        part,
        interior,
        (x, out, tab),
        (z, z, t),
        &mut |e, ooff, ioff, valid| {
            let v = e.load_if(ty, valid, x, ioff);
            let r = e.b.ins().select(valid, v, fill);
            e.store(r, out, ooff);
        },
    );
    Ok(())
}

pub(super) fn lower_gather(
    e: &mut Emitter,
    info: &NodeInfo,
    d: Value,
    idx: Value,
    out: Value,
    axis: usize,
) -> Result<()> {
    let ds = &info.ins[0].shape;
    let ity = &info.ins[1];
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let a = ds[axis] as i64;
    let pre: usize = ds[..axis].iter().product();
    let q: usize = ds[axis + 1..].iter().product();
    let ni = ity.numel();
    if info.outs[0].numel() == 0 {
        // Still validate indices when there are any.
        if ni == 0 || pre == 0 {
            return Ok(());
        }
    }
    let isz = ity.dtype.size() as i64;
    let qb = q as i64 * es;
    let z = e.int_const(0);
    e.loop_offsets(
        pre as i64,
        &[z, z],
        &[a * qb, ni as i64 * qb],
        &mut |e, _p, o1| {
            let z = e.int_const(0);
            e.loop_offsets(ni as i64, &[z, o1[1]], &[isz, qb], &mut |e, _j, o2| {
                let k = e.load(element_type(ity.dtype), idx, o2[0]);
                let k = if ity.dtype == DType::I64 {
                    k
                } else {
                    e.b.ins().sextend(types::I64, k)
                };
                let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
                let ka = e.b.ins().iadd_imm_s(k, a);
                let k = e.b.ins().select(neg, ka, k);
                let lo = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
                let hi = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, k, a);
                let bad = e.b.ins().bor(lo, hi);
                e.fail_if(bad, RuntimeError::GatherIndex);
                let so = e.b.ins().imul_imm_s(k, qb);
                let so = e.b.ins().iadd(so, o1[0]);
                e.copy_bytes(out, o2[1], d, so, qb as usize);
            });
        },
    );
    Ok(())
}
