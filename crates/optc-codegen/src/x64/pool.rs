//! 2-D MaxPool split across tasks by planes (image x channel), separable: a vertical max of
//! the window rows into a row buffer, then a horizontal max along that row (stride 2 by an
//! even/odd `shufps` deinterleave, stride 1 by unaligned loads, others by lane gathers).
//!
//! Semantics are the reference's: padding and NaN cells are skipped (`acc = v > acc || acc
//! is NaN ? v : acc`, a max that ignores NaN unless every cell is NaN), which is associative
//! and commutative, so the separable order gives the same result. With the AVX-512 routine
//! the planes are read in place, a window's rows in the padding left out and the horizontal
//! padding NaN in the row buffer ([`row_runs`]); otherwise each task copies its plane into a
//! NaN-padded buffer first, unless the pool has no padding and its windows cover each plane's
//! rows exactly ([`stacked`]): then a task's planes are one tall plane read in place,
//! and when they cover each row's columns exactly too ([`flat`]), the vertical maxima of a
//! chunk of planes are pooled along as one row (whole vectors where a small map's row has
//! two outputs).

use super::asm::max_pool::MaxPoolKey;
use super::asm::{Isa, Routine};
use super::kernel_plan::KernelPlan;
use super::tasks::{acquire_slot, release_slot, task_units, KernelArgs};
use crate::builder::{fill, shuffle_lanes, tensor_flags, Emitter, F32X4};
use crate::ops::pool::MaxPoolGeometry;
use cranelift_codegen::ir::{condcodes::FloatCC, types, InstBuilder, Type, Value};

/// The AVX-512 routine for a pool's output rows ([`super::asm::max_pool`]), when the target
/// has it, the horizontal stride is 1 or 2 and every output row's window has a row inside
/// the map (others, and the flat planes of tiny maps, take the Cranelift rows). It reads the
/// planes in place: the rows of a window that fall in the vertical padding are left out (a
/// padding cell is skipped by the max anyway), the horizontal padding is NaN in the row
/// buffer. One key per window height of [`row_runs`].
pub(super) fn routine_keys(p: &KernelPlan, g: &MaxPoolGeometry) -> Vec<MaxPoolKey> {
    let fits = |x: usize| x < i32::MAX as usize / 8;
    let runs = row_runs(g);
    let ok = p.isa == Isa::Avx512
        && matches!(g.sw, 1 | 2)
        && runs.iter().all(|r| r.kh > 0)
        && fits(g.wp * 4 * g.sh.max(g.kh * g.dh))
        && fits(g.ow * 4 * g.sw + g.kw * g.dw * 4);
    let mut v: Vec<MaxPoolKey> = vec![];
    if ok && flat(g) {
        v.push(flat_key(g, flat_planes(g)));
        if flat_planes(g) > 1 {
            v.push(flat_key(g, 1));
        }
    } else if ok {
        for r in runs {
            let k = routine_key(g, r.kh);
            if !v.contains(&k) {
                v.push(k);
            }
        }
    }
    v
}

fn routine_key(g: &MaxPoolGeometry, kh: usize) -> MaxPoolKey {
    MaxPoolKey {
        kh,
        kw: g.kw,
        dh: g.dh,
        dw: g.dw,
        sh: g.sh,
        sw: g.sw,
        pitch: g.w,
        left: g.pw,
        ow: g.ow,
        flat_rows: 0,
    }
}

/// The flat-mode routine for `planes` stacked planes' rows ([`flat`]).
fn flat_key(g: &MaxPoolGeometry, planes: usize) -> MaxPoolKey {
    MaxPoolKey {
        flat_rows: planes * g.oh,
        ..routine_key(g, g.kh)
    }
}

/// Consecutive output rows whose windows keep the same rows inside the map: from output row
/// `out_row`, `rows` of them, the first window's first row inside at input row `in_row`, `kh`
/// rows (`dh` apart) in each.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct RowRun {
    pub out_row: usize,
    pub rows: usize,
    pub in_row: usize,
    pub kh: usize,
}

pub(super) fn row_runs(g: &MaxPoolGeometry) -> Vec<RowRun> {
    let mut v: Vec<RowRun> = vec![];
    for r in 0..g.oh {
        // Window rows i with 0 <= r sh - ph + i dh < h.
        let inside: Vec<usize> = (0..g.kh)
            .filter(|&i| {
                let y = (r * g.sh + i * g.dh) as i64 - g.ph as i64;
                y >= 0 && y < g.h as i64
            })
            .collect();
        let (i0, kh) = (inside.first().copied().unwrap_or(0), inside.len());
        let in_row = (r * g.sh + i0 * g.dh).saturating_sub(g.ph);
        match v.last_mut() {
            Some(l) if l.kh == kh && l.in_row + l.rows * g.sh == in_row => l.rows += 1,
            _ => v.push(RowRun {
                out_row: r,
                rows: 1,
                in_row,
                kh,
            }),
        }
    }
    v
}

/// Planes per work unit: about 32 units, at least 1 plane each.
pub(super) fn plane_rows(planes: usize) -> usize {
    planes.div_ceil(32).max(1)
}

/// Scratch bytes per task: the padded plane (or the flat buffer of stacked planes) and the
/// row buffer (with slack for the last vector's over-read, which also follows the flat
/// buffer).
pub(super) fn task_bytes(g: &MaxPoolGeometry) -> usize {
    (plane_buffer_floats(g) + g.wp + 32) * 4
}

fn plane_buffer_floats(g: &MaxPoolGeometry) -> usize {
    if flat(g) {
        (g.hp * g.wp).max(flat_planes(g) * g.oh * g.w)
    } else {
        g.hp * g.wp
    }
}

/// `acc = (v > acc || acc is NaN) ? v : acc`.
pub(super) fn step(e: &mut Emitter, ty: Type, v: Value, acc: Value) -> Value {
    let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
    let un = e.b.ins().fcmp(FloatCC::Unordered, acc, acc);
    let take = e.b.ins().bor(gt, un);
    e.select_float(ty, take, v, acc)
}

/// The planes of task `t`.
pub(super) fn emit_task(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &MaxPoolGeometry,
    c: &KernelArgs,
    t: Value,
) {
    let (lo, hi) = task_units(e, p, t);
    let slot = acquire_slot(e, p, c);
    let o = e.b.ins().imul_imm_s(slot, task_bytes(g) as i64);
    let pbuf = e.b.ins().iadd(c.scratch, o);
    let vrow =
        e.b.ins()
            .iadd_imm_s(pbuf, (plane_buffer_floats(g) * 4) as i64);
    // The row buffer's slack stays NaN (read by the last vector, never selected... but
    // keep it defined); read in place, its horizontal padding too (the vertical maxima go
    // between).
    let routine = !routine_keys(p, g).is_empty();
    if routine {
        fill(e, vrow, 0, g.pw, f32::NAN);
        fill(e, vrow, g.pw + g.w, g.wp + 32, f32::NAN);
    } else {
        fill(e, vrow, g.wp, g.wp + 32, f32::NAN);
    }
    // Units are runs of `mrows` planes (the last one shorter).
    let p0 = e.b.ins().imul_imm_s(lo, p.mrows as i64);
    let p1 = e.b.ins().imul_imm_s(hi, p.mrows as i64);
    let cap = e.int_const(g.planes as i64);
    let p1 = e.b.ins().smin(p1, cap);
    if stacked(g) {
        // The task's planes as one tall plane, read in place.
        let xo = e.b.ins().imul_imm_s(p0, (g.h * g.w * 4) as i64);
        let x = e.b.ins().iadd(c.ins[0], xo);
        let oo = e.b.ins().imul_imm_s(p0, (g.oh * g.ow * 4) as i64);
        let out = e.b.ins().iadd(c.out, oo);
        let planes = e.b.ins().isub(p1, p0);
        if flat(g) {
            let routine = routine.then_some(c);
            flat_planes_rows(e, g, routine, x, pbuf, out, planes);
        } else {
            let nrows = e.b.ins().imul_imm_s(planes, g.oh as i64);
            output_rows(e, p, g, c, x, vrow, out, nrows);
        }
    } else if routine {
        e.loop_range(p0, p1, &mut |e, pl| plane_in_place(e, g, c, vrow, pl));
    } else {
        e.loop_range(p0, p1, &mut |e, pl| plane(e, p, g, c, pbuf, vrow, pl));
    }
    release_slot(e, p, c, slot);
}

/// Whether consecutive planes can be pooled as one tall plane read in place: no padding
/// (the padded plane is the plane) and the windows of a plane's output rows cover exactly
/// its `h` rows (`oh sh = h`), so no window reaches into the next plane and the rows of
/// plane `p` start at output row `p oh`. 2x2 stride-2 pools of even maps are: on small maps
/// (the late stages of a CNN, 4x4 to 2x2) a plane's copy and loops cost far more than its
/// few outputs.
pub(super) fn stacked(g: &MaxPoolGeometry) -> bool {
    g.ph == 0 && g.pw == 0 && g.hp == g.h && g.wp == g.w && g.oh * g.sh == g.h
}

/// Plane `pl` read in place by the AVX-512 routine: one call per run of output rows whose
/// windows keep the same rows inside the map ([`row_runs`]).
fn plane_in_place(e: &mut Emitter, g: &MaxPoolGeometry, c: &KernelArgs, vrow: Value, pl: Value) {
    let xo = e.b.ins().imul_imm_s(pl, (g.h * g.w * 4) as i64);
    let x = e.b.ins().iadd(c.ins[0], xo);
    let oo = e.b.ins().imul_imm_s(pl, (g.oh * g.ow * 4) as i64);
    let out = e.b.ins().iadd(c.out, oo);
    for run in row_runs(g) {
        let f = c.microkernels[&Routine::MaxPool(routine_key(g, run.kh))];
        let src = e.b.ins().iadd_imm_s(x, (run.in_row * g.w * 4) as i64);
        let dst = e.b.ins().iadd_imm_s(out, (run.out_row * g.ow * 4) as i64);
        let rows = e.int_const(run.rows as i64);
        e.b.ins().call(f, &[src, vrow, dst, rows]);
    }
}

pub(super) fn plane(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &MaxPoolGeometry,
    c: &KernelArgs,
    pbuf: Value,
    vrow: Value,
    pl: Value,
) {
    let xplane = (g.h * g.w * 4) as i64;
    let oplane = (g.oh * g.ow * 4) as i64;
    let xo = e.b.ins().imul_imm_s(pl, xplane);
    let x = e.b.ins().iadd(c.ins[0], xo);
    let oo = e.b.ins().imul_imm_s(pl, oplane);
    let out = e.b.ins().iadd(c.out, oo);
    let fill = |e: &mut Emitter, d: Value, from: usize, to: usize| fill(e, d, from, to, f32::NAN);
    // NaN-padded copy: rows [0, ph) and [ph + h, hp) all NaN; the rest NaN | row | NaN.
    let wrow = (g.wp * 4) as i64;
    e.loop_offsets(g.ph as i64, &[pbuf], &[wrow], &mut |e, _r, o| {
        fill(e, o[0], 0, g.wp)
    });
    let d0 = e.b.ins().iadd_imm_s(pbuf, g.ph as i64 * wrow);
    e.loop_offsets(
        g.h as i64,
        &[x, d0],
        &[(g.w * 4) as i64, wrow],
        &mut |e, _r, o| {
            let (s, d) = (o[0], o[1]);
            fill(e, d, 0, g.pw);
            for k in 0..g.w / 4 {
                let v = e.b.ins().load(F32X4, tensor_flags(), s, (k * 16) as i32);
                e.b.ins()
                    .store(tensor_flags(), v, d, ((g.pw + 4 * k) * 4) as i32);
            }
            for k in (g.w / 4) * 4..g.w {
                let v =
                    e.b.ins()
                        .load(types::F32, tensor_flags(), s, (k * 4) as i32);
                e.b.ins()
                    .store(tensor_flags(), v, d, ((g.pw + k) * 4) as i32);
            }
            fill(e, d, g.pw + g.w, g.wp);
        },
    );
    let d1 = e.b.ins().iadd_imm_s(pbuf, (g.ph + g.h) as i64 * wrow);
    e.loop_offsets(
        (g.hp - g.ph - g.h) as i64,
        &[d1],
        &[wrow],
        &mut |e, _r, o| fill(e, o[0], 0, g.wp),
    );
    let nrows = e.int_const(g.oh as i64);
    output_rows(e, p, g, c, pbuf, vrow, out, nrows);
}

/// `nrows` output rows from the padded rows at `src` (`wp` floats apart, `sh` rows per output
/// row) to `out`: the vertical max of each window's rows into the row buffer `vrow`, then
/// the horizontal max along it (one call of the AVX-512 routine where the plan has it).
#[allow(clippy::too_many_arguments)]
fn output_rows(
    e: &mut Emitter,
    p: &KernelPlan,
    g: &MaxPoolGeometry,
    c: &KernelArgs,
    src: Value,
    vrow: Value,
    out: Value,
    nrows: Value,
) {
    if !routine_keys(p, g).is_empty() {
        // (Stacked planes: no padding, every window whole.)
        let f = c.microkernels[&Routine::MaxPool(routine_key(g, g.kh))];
        e.b.ins().call(f, &[src, vrow, out, nrows]);
        return;
    }
    let z = e.int_const(0);
    e.loop_range(z, nrows, &mut |e, r| {
        let so = e.b.ins().imul_imm_s(r, (g.sh * g.wp * 4) as i64);
        let s = e.b.ins().iadd(src, so);
        vertical(e, g, s, vrow);
        let d = e.b.ins().imul_imm_s(r, (g.ow * 4) as i64);
        let d = e.b.ins().iadd(out, d);
        horizontal(e, g, vrow, d, g.ow);
    });
}

/// Floats of the flat buffer of stacked planes ([`flat`]): the vertical maxima of a chunk of
/// whole planes' output rows, pooled along as one row.
const FLAT_FLOATS: usize = 1024;

/// Whether stacked planes' rows also pool as one row: the windows of a row's outputs cover
/// its `w` columns exactly (`ow sw = w`), so the vertical maxima of consecutive output rows,
/// side by side, are one row whose `ow` outputs per row follow each other. Then the
/// horizontal pass runs whole vectors along a chunk of planes instead of a short row at a
/// time (a 4x4 -> 2x2 pool's row has two outputs).
fn flat(g: &MaxPoolGeometry) -> bool {
    stacked(g) && g.ow * g.sw == g.w
}

/// Planes of one flat chunk.
fn flat_planes(g: &MaxPoolGeometry) -> usize {
    (FLAT_FLOATS / (g.oh * g.w)).max(1)
}

/// `planes` stacked planes from `src` to `out` by chunks of [`flat_planes`] (then one plane
/// at a time): the vertical maxima of a chunk's rows into `buf`, one pass along them (a call
/// of the AVX-512 routine's flat mode where `routine` has it).
fn flat_planes_rows(
    e: &mut Emitter,
    g: &MaxPoolGeometry,
    routine: Option<&KernelArgs>,
    src: Value,
    buf: Value,
    out: Value,
    planes: Value,
) {
    let chunk = flat_planes(g);
    let whole = e.b.ins().udiv_imm_u(planes, chunk as i64);
    let z = e.int_const(0);
    let (in_plane, out_plane) = ((g.h * g.w * 4) as i64, (g.oh * g.ow * 4) as i64);
    let run = |e: &mut Emitter, first: Value, n: usize| {
        let s = e.b.ins().imul_imm_s(first, in_plane);
        let s = e.b.ins().iadd(src, s);
        let d = e.b.ins().imul_imm_s(first, out_plane);
        let d = e.b.ins().iadd(out, d);
        if let Some(c) = routine {
            let f = c.microkernels[&Routine::MaxPool(flat_key(g, n))];
            let rows = e.int_const((n * g.oh) as i64);
            e.b.ins().call(f, &[s, buf, d, rows]);
            return;
        }
        e.loop_offsets(
            (n * g.oh) as i64,
            &[s, buf],
            &[(g.sh * g.w * 4) as i64, (g.w * 4) as i64],
            &mut |e, _r, o| vertical(e, g, o[0], o[1]),
        );
        horizontal(e, g, buf, d, n * g.oh * g.ow);
    };
    e.loop_range(z, whole, &mut |e, c| {
        let first = e.b.ins().imul_imm_s(c, chunk as i64);
        run(e, first, chunk);
    });
    let done = e.b.ins().imul_imm_s(whole, chunk as i64);
    e.loop_range(done, planes, &mut |e, pl| run(e, pl, 1));
}

/// The vertical max of the window rows of the output row whose first input row is at `src`
/// (`wp` floats apart), `wp` floats into `dst`.
fn vertical(e: &mut Emitter, g: &MaxPoolGeometry, src: Value, dst: Value) {
    let vert = |e: &mut Emitter, ty: Type, off: i32| {
        let mut acc = e.b.ins().load(ty, tensor_flags(), src, off);
        for kh in 1..g.kh {
            let o = off + (kh * g.dh * g.wp * 4) as i32;
            let v = e.b.ins().load(ty, tensor_flags(), src, o);
            acc = step(e, ty, v, acc);
        }
        acc
    };
    let nvr = g.wp / 4;
    for k in 0..nvr {
        let v = vert(e, F32X4, (k * 16) as i32);
        e.b.ins().store(tensor_flags(), v, dst, (k * 16) as i32);
    }
    for k in nvr * 4..g.wp {
        let v = vert(e, types::F32, (k * 4) as i32);
        e.b.ins().store(tensor_flags(), v, dst, (k * 4) as i32);
    }
}

/// `n` outputs into `dst`, output `j` the max of the row buffer `buf` at `j sw + kw dw`
/// (whole vectors of 4 outputs, then single ones; `buf` has slack after the last read).
fn horizontal(e: &mut Emitter, g: &MaxPoolGeometry, buf: Value, dst: Value, n: usize) {
    let nanv = e.float_const(F32X4, f32::NAN);
    let nans = e.float_const(types::F32, f32::NAN);
    let nv = n / 4;
    let z = e.int_const(0);
    e.loop_offsets(
        nv as i64,
        &[z, z],
        &[(4 * g.sw * 4) as i64, 16],
        &mut |e, _c, o| {
            let s = e.b.ins().iadd(buf, o[0]);
            let mut acc = None;
            for kw in 0..g.kw {
                let off = (kw * g.dw * 4) as i32;
                let v = match g.sw {
                    1 => e.b.ins().load(F32X4, tensor_flags(), s, off),
                    2 => {
                        let a = e.b.ins().load(F32X4, tensor_flags(), s, off);
                        let b = e.b.ins().load(F32X4, tensor_flags(), s, off + 16);
                        shuffle_lanes(e, a, b, [0, 2, 4, 6])
                    }
                    sw => e.gather4(s, off, sw),
                };
                acc = Some(match acc {
                    None => v,
                    Some(a) => step(e, F32X4, v, a),
                });
            }
            let acc = acc.unwrap_or(nanv);
            e.store(acc, dst, o[1]);
        },
    );
    for j in nv * 4..n {
        let mut acc = nans;
        for kw in 0..g.kw {
            let off = ((j * g.sw + kw * g.dw) * 4) as i32;
            let v = e.b.ins().load(types::F32, tensor_flags(), buf, off);
            acc = step(e, types::F32, v, acc);
        }
        e.b.ins().store(tensor_flags(), acc, dst, (j * 4) as i32);
    }
}
