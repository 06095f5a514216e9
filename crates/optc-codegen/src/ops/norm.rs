//! Softmax and LayerNorm: vectorized contiguous rows (split across tasks when large), a
//! generic strided path otherwise.

use crate::builder::{Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::operand::{broadcast_strides, collapse, element_strides};
use crate::ops::parallel::task_rows;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};
use cranelift_frontend::Variable;

pub(super) fn lower_softmax(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    out: Value,
    axis: usize,
) -> Result<()> {
    let s = &info.ins[0].shape;
    let n = s[axis];
    let inner: usize = s[axis + 1..].iter().product();
    let outer: usize = s[..axis].iter().product();
    if n * inner * outer == 0 {
        return Ok(());
    }
    let f64 = info.ins[0].dtype == optc_ir::DType::F64;
    if inner == 1 && !f64 {
        // A task of a split softmax (`softmax_split`) does its block of rows.
        task_rows(e, outer, &|e, first, rows| {
            let start = e.b.ins().imul_imm_s(first, (n * 4) as i64);
            softmax_rows(e, x, out, start, rows, n)
        });
        return Ok(());
    }
    softmax_strided(e, x, out, (outer, n, inner), f64);
    Ok(())
}

/// Softmax along an axis with `inner` elements between neighbours, in scalar code: per
/// position the maximum, the exponentials (stored) and their sum, then each output
/// normalized. f32: the exponential's polynomial, times the sum's inverse with subnormal
/// results flushed; f64 (`f64`): libm's exp and a division, as the interpreter computes it.
fn softmax_strided(
    e: &mut Emitter,
    x: Value,
    out: Value,
    (outer, n, inner): (usize, usize, usize),
    f64: bool,
) {
    let f = if f64 { types::F64 } else { types::F32 };
    let es = f.bytes() as i64;
    let st = inner as i64 * es;
    let z = e.int_const(0);
    e.nest(
        &[outer, inner],
        &[vec![n as i64 * st, es]],
        &[z],
        &mut |e, o| {
            let base = o[0];
            let mx = e.b.declare_var(f);
            let ni = e.float_const(f, f32::NEG_INFINITY);
            e.b.def_var(mx, ni);
            e.loop_offsets(n as i64, &[base], &[st], &mut |e, _j, oo| {
                let v = e.load(f, x, oo[0]);
                let a = e.b.use_var(mx);
                let na = e.b.ins().fmax(a, v);
                e.b.def_var(mx, na);
            });
            let m = e.b.use_var(mx);
            let sum = e.b.declare_var(f);
            let zf = e.float_const(f, 0.0);
            e.b.def_var(sum, zf);
            e.loop_offsets(n as i64, &[base], &[st], &mut |e, _j, oo| {
                let v = e.load(f, x, oo[0]);
                let d = e.b.ins().fsub(v, m);
                let ex = if f64 {
                    e.math_f64(crate::runtime::F64_EXP, d, d)
                } else {
                    e.exp(f, d)
                };
                e.store(ex, out, oo[0]);
                let a = e.b.use_var(sum);
                let na = e.b.ins().fadd(a, ex);
                e.b.def_var(sum, na);
            });
            let sm = e.b.use_var(sum);
            if f64 {
                e.loop_offsets(n as i64, &[base], &[st], &mut |e, _j, oo| {
                    let v = e.load(f, out, oo[0]);
                    let r = e.b.ins().fdiv(v, sm);
                    e.store(r, out, oo[0]);
                });
                return;
            }
            let one = e.float_const(f, 1.0);
            let inv = e.b.ins().fdiv(one, sm);
            let (tiny, _) = flush_threshold(e, sm);
            e.loop_offsets(n as i64, &[base], &[st], &mut |e, _j, oo| {
                let v = e.load(f, out, oo[0]);
                let v = flush(e, f, v, tiny);
                let r = e.b.ins().fmul(v, inv);
                e.store(r, out, oo[0]);
            });
        },
    );
}

/// Below what exponential a softmax output would be subnormal (`exp < total * 2^-126`), as
/// a scalar and splat. Such outputs are 0: an error under 2^-126, where a subnormal would
/// make every multiply that reads it take a microcode assist (attention's probabilities times
/// V ran 100x slower on BERT-style models whose scores spread wide).
fn flush_threshold(e: &mut Emitter, total: Value) -> (Value, Value) {
    let min = e.float_const(types::F32, f32::MIN_POSITIVE);
    let t = e.b.ins().fmul(total, min);
    (t, e.b.ins().splat(F32X4, t))
}

/// `v < threshold ? 0 : v` (NaN stays NaN), before the multiply that would make it subnormal.
fn flush(e: &mut Emitter, ty: Type, v: Value, threshold: Value) -> Value {
    let small = e.b.ins().fcmp(FloatCC::LessThan, v, threshold);
    let zero = e.float_const(ty, 0.0);
    e.select_float(ty, small, zero, v)
}

/// Softmax over `rows` contiguous rows of `n` elements from byte offset `start`, vectorized.
fn softmax_rows(e: &mut Emitter, x: Value, out: Value, start: Value, rows: usize, n: usize) {
    let f = types::F32;
    e.loop_offsets(rows as i64, &[start], &[(n * 4) as i64], &mut |e, _r, o| {
        let row = o[0];
        // Row max with a compare-and-select (`v > a ? v : a`), four independent accumulators
        // over 16 elements a step. A NaN in the row is skipped here but still reaches every
        // output through the sum of exponentials, as with a NaN-propagating max.
        let ni = e.float_const(F32X4, f32::NEG_INFINITY);
        let accs: Vec<Variable> = (0..4)
            .map(|_| {
                let a = e.b.declare_var(F32X4);
                e.b.def_var(a, ni);
                a
            })
            .collect();
        let vmax = |e: &mut Emitter, a: Variable, v: Value| {
            let cur = e.b.use_var(a);
            let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, cur);
            let na = e.select_float(F32X4, gt, v, cur);
            e.b.def_var(a, na);
        };
        let n16 = n / 16;
        e.loop_offsets(n16 as i64, &[row], &[64], &mut |e, _j, oo| {
            for (k, &a) in accs.iter().enumerate() {
                let o = e.b.ins().iadd_imm_s(oo[0], 16 * k as i64);
                let v = e.load(F32X4, x, o);
                vmax(e, a, v);
            }
        });
        let row16 = e.b.ins().iadd_imm_s(row, (n16 * 64) as i64);
        let smx = e.b.declare_var(f);
        let ns = e.float_const(f, f32::NEG_INFINITY);
        e.b.def_var(smx, ns);
        e.vector_loop(
            n % 16,
            &[row16],
            &[true],
            &mut |e, oo| {
                let v = e.load(F32X4, x, oo[0]);
                vmax(e, accs[0], v);
            },
            &mut |e, oo| {
                let v = e.load(f, x, oo[0]);
                let a = e.b.use_var(smx);
                let na = e.b.ins().fmax(a, v);
                e.b.def_var(smx, na);
            },
        );
        let mut vm = e.b.use_var(accs[0]);
        for &a in &accs[1..] {
            let w = e.b.use_var(a);
            let gt = e.b.ins().fcmp(FloatCC::GreaterThan, w, vm);
            vm = e.select_float(F32X4, gt, w, vm);
        }
        let hm = e.horizontal_reduce(vm, true);
        let sm = e.b.use_var(smx);
        let m = e.b.ins().fmax(hm, sm);
        let mv = e.b.ins().splat(F32X4, m);
        let vsum = e.b.declare_var(F32X4);
        let ssum = e.b.declare_var(f);
        let zv = e.float_const(F32X4, 0.0);
        e.b.def_var(vsum, zv);
        let zs = e.float_const(f, 0.0);
        e.b.def_var(ssum, zs);
        e.vector_loop(
            n,
            &[row],
            &[true],
            &mut |e, oo| {
                let v = e.load(F32X4, x, oo[0]);
                let d = e.b.ins().fsub(v, mv);
                let ex = e.exp_nonpos(F32X4, d);
                e.store(ex, out, oo[0]);
                let a = e.b.use_var(vsum);
                let na = e.b.ins().fadd(a, ex);
                e.b.def_var(vsum, na);
            },
            &mut |e, oo| {
                let v = e.load(f, x, oo[0]);
                let d = e.b.ins().fsub(v, m);
                let ex = e.exp_nonpos(f, d);
                e.store(ex, out, oo[0]);
                let a = e.b.use_var(ssum);
                let na = e.b.ins().fadd(a, ex);
                e.b.def_var(ssum, na);
            },
        );
        let vs = e.b.use_var(vsum);
        let hs = e.horizontal_reduce(vs, false);
        let ss = e.b.use_var(ssum);
        let total = e.b.ins().fadd(hs, ss);
        let one = e.float_const(f, 1.0);
        let inv = e.b.ins().fdiv(one, total);
        let iv = e.b.ins().splat(F32X4, inv);
        let (tiny, tv) = flush_threshold(e, total);
        e.vector_loop(
            n,
            &[row],
            &[true],
            &mut |e, oo| {
                let v = e.load(F32X4, out, oo[0]);
                let v = flush(e, F32X4, v, tv);
                let r = e.b.ins().fmul(v, iv);
                e.store(r, out, oo[0]);
            },
            &mut |e, oo| {
                let v = e.load(f, out, oo[0]);
                let v = flush(e, f, v, tiny);
                let r = e.b.ins().fmul(v, inv);
                e.store(r, out, oo[0]);
            },
        );
    });
}

pub(super) fn lower_layernorm(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    axis: usize,
    eps: f32,
) -> Result<()> {
    let s = &info.ins[0].shape;
    let norm: Vec<usize> = s[axis..].to_vec();
    let d: usize = norm.iter().product();
    let outer: usize = s[..axis].iter().product();
    if d * outer == 0 {
        return Ok(());
    }
    let f = types::F32;
    let mut ndims = norm.clone();
    let mut sx = element_strides(&norm);
    let mut ssc = broadcast_strides(&info.ins[1].shape, &norm);
    let mut sbi = match info.ins.get(2) {
        Some(t) => broadcast_strides(&t.shape, &norm),
        None => vec![0; norm.len()],
    };
    ndims = {
        let mut refs = [&mut sx, &mut ssc, &mut sbi];
        collapse(&ndims, &mut refs)
    };
    let strides: Vec<Vec<i64>> = [&sx, &ssc, &sbi]
        .iter()
        .map(|v| v.iter().map(|x| x * 4).collect())
        .collect();
    let has_bias = ins.len() > 2;
    if ndims.len() == 1 && sx[0] == 1 && ssc[0] <= 1 && sbi[0] <= 1 {
        // A task of a split LayerNorm (`layernorm_split`) does its block of rows.
        let moving = [ssc[0] == 1, sbi[0] == 1];
        task_rows(e, outer, &|e, first, rows| {
            let start = e.b.ins().imul_imm_s(first, (d * 4) as i64);
            layernorm_rows(e, ins, out, start, rows, d, eps, moving)
        });
        return Ok(());
    }
    let z = e.int_const(0);
    e.loop_offsets(outer as i64, &[z], &[(d * 4) as i64], &mut |e, _r, o| {
        let row = o[0];
        let sum = e.b.declare_var(f);
        let zf = e.float_const(f, 0.0);
        e.b.def_var(sum, zf);
        e.loop_offsets(d as i64, &[row], &[4], &mut |e, _j, oo| {
            let v = e.load(f, ins[0], oo[0]);
            let a = e.b.use_var(sum);
            let na = e.b.ins().fadd(a, v);
            e.b.def_var(sum, na);
        });
        let sm = e.b.use_var(sum);
        let dn = e.float_const(f, d as f32);
        let mean = e.b.ins().fdiv(sm, dn);
        let sq = e.b.declare_var(f);
        e.b.def_var(sq, zf);
        e.loop_offsets(d as i64, &[row], &[4], &mut |e, _j, oo| {
            let v = e.load(f, ins[0], oo[0]);
            let c = e.b.ins().fsub(v, mean);
            let a = e.b.use_var(sq);
            let na = e.mul_add(c, c, a);
            e.b.def_var(sq, na);
        });
        let q = e.b.use_var(sq);
        let var = e.b.ins().fdiv(q, dn);
        let epilogue = e.float_const(f, eps);
        let ve = e.b.ins().fadd(var, epilogue);
        let sd = e.b.ins().sqrt(ve);
        let zz = e.int_const(0);
        e.nest(&ndims, &strides, &[row, zz, zz], &mut |e, oo| {
            let v = e.load(f, ins[0], oo[0]);
            let c = e.b.ins().fsub(v, mean);
            let n = e.b.ins().fdiv(c, sd);
            let sc = e.load(f, ins[1], oo[1]);
            let mut r = e.b.ins().fmul(n, sc);
            if has_bias {
                let b = e.load(f, ins[2], oo[2]);
                r = e.b.ins().fadd(r, b);
            }
            e.store(r, out, oo[0]);
        });
    });
    Ok(())
}

/// Fold a contiguous row of `n` f32 at `p + row` into one sum: `step(e, ty, x, acc)` adds
/// the term of a loaded `x` (f32x4 or f32) to an accumulator. Four independent vector
/// accumulators over 16 elements a step (the additions' latency is hidden), then the tail.
fn row_fold(
    e: &mut Emitter,
    p: Value,
    row: Value,
    n: usize,
    step: &dyn Fn(&mut Emitter, Type, Value, Value) -> Value,
) -> Value {
    let f = types::F32;
    let zv = e.float_const(F32X4, 0.0);
    let accs: Vec<Variable> = (0..4)
        .map(|_| {
            let a = e.b.declare_var(F32X4);
            e.b.def_var(a, zv);
            a
        })
        .collect();
    let n16 = n / 16;
    e.loop_offsets(n16 as i64, &[row], &[64], &mut |e, _j, oo| {
        for (k, &a) in accs.iter().enumerate() {
            let o = e.b.ins().iadd_imm_s(oo[0], 16 * k as i64);
            let v = e.load(F32X4, p, o);
            let cur = e.b.use_var(a);
            let na = step(e, F32X4, v, cur);
            e.b.def_var(a, na);
        }
    });
    let row16 = e.b.ins().iadd_imm_s(row, (n16 * 64) as i64);
    let ss = e.b.declare_var(f);
    let zs = e.float_const(f, 0.0);
    e.b.def_var(ss, zs);
    e.vector_loop(
        n % 16,
        &[row16],
        &[true],
        &mut |e, oo| {
            let v = e.load(F32X4, p, oo[0]);
            let cur = e.b.use_var(accs[0]);
            let na = step(e, F32X4, v, cur);
            e.b.def_var(accs[0], na);
        },
        &mut |e, oo| {
            let v = e.load(f, p, oo[0]);
            let cur = e.b.use_var(ss);
            let na = step(e, f, v, cur);
            e.b.def_var(ss, na);
        },
    );
    let a: Vec<Value> = accs.iter().map(|&a| e.b.use_var(a)).collect();
    let s01 = e.b.ins().fadd(a[0], a[1]);
    let s23 = e.b.ins().fadd(a[2], a[3]);
    let v = e.b.ins().fadd(s01, s23);
    let h = e.horizontal_reduce(v, false);
    let t = e.b.use_var(ss);
    e.b.ins().fadd(h, t)
}

/// LayerNorm over contiguous rows of `d` elements; scale/bias are either contiguous over the
/// row (`moving`) or a single broadcast value.
#[allow(clippy::too_many_arguments)]
fn layernorm_rows(
    e: &mut Emitter,
    ins: &[Value],
    out: Value,
    start: Value,
    rows: usize,
    d: usize,
    eps: f32,
    moving: [bool; 2],
) {
    let f = types::F32;
    let x = ins[0];
    let has_bias = ins.len() > 2;
    e.loop_offsets(rows as i64, &[start], &[(d * 4) as i64], &mut |e, _r, o| {
        let row = o[0];
        let sum = row_fold(e, x, row, d, &|e, _ty, v, a| e.b.ins().fadd(a, v));
        let dn = e.float_const(f, d as f32);
        let mean = e.b.ins().fdiv(sum, dn);
        let meanv = e.b.ins().splat(F32X4, mean);
        let q = row_fold(e, x, row, d, &|e, ty, v, a| {
            let m = if ty == F32X4 { meanv } else { mean };
            let c = e.b.ins().fsub(v, m);
            e.mul_add(c, c, a)
        });
        let var = e.b.ins().fdiv(q, dn);
        let epilogue = e.float_const(f, eps);
        let ve = e.b.ins().fadd(var, epilogue);
        let sd = e.b.ins().sqrt(ve);
        // One division per row; every element is scaled by the reciprocal.
        let one = e.float_const(f, 1.0);
        let rs = e.b.ins().fdiv(one, sd);
        let rsv = e.b.ins().splat(F32X4, rs);
        let zz = e.int_const(0);
        let apply = |e: &mut Emitter, ty: Type, oo: &[Value]| {
            let (m, s) = if ty == F32X4 {
                (meanv, rsv)
            } else {
                (mean, rs)
            };
            let v = e.load(ty, x, oo[0]);
            let c = e.b.ins().fsub(v, m);
            let n = e.b.ins().fmul(c, s);
            let sc = if moving[0] || ty == f {
                e.load(ty, ins[1], oo[1])
            } else {
                let t = e.load(f, ins[1], oo[1]);
                e.b.ins().splat(F32X4, t)
            };
            let mut r = e.b.ins().fmul(n, sc);
            if has_bias {
                let b = if moving[1] || ty == f {
                    e.load(ty, ins[2], oo[2])
                } else {
                    let t = e.load(f, ins[2], oo[2]);
                    e.b.ins().splat(F32X4, t)
                };
                r = e.b.ins().fadd(r, b);
            }
            e.store(r, out, oo[0]);
        };
        e.vector_loop(
            d,
            &[row, zz, zz],
            &[true, moving[0], moving[1]],
            &mut |e, oo| apply(e, F32X4, oo),
            &mut |e, oo| apply(e, f, oo),
        );
    });
}
