//! Integer contractions on the generic path: `MatMulInteger`, `ConvInteger` and optc's int8
//! ops `QuantizedMatMul` and `QuantizedConv`, all on one i32 GEMM of i32x4 register tiles
//! ([`int_gemm`]: 4 rows x 8 columns, operands i32 or widened from i8/u8, column blocks that
//! keep a panel of B in L2). Zero points are taken off the operands first (into i32 copies in
//! scratch) and convs go through a zero-padded i32 copy of their input and an im2col buffer,
//! so every sum is exact; the quantized ops quantize their f32 input into that copy
//! (`ops/quantize.rs`) and apply their f32 epilogue `f32(acc) * (xs * ws[c]) + bias[c]` in
//! the tile store.

use crate::builder::{Emitter, F32X4, I32X4};
use crate::error::Result;
use crate::node::{NodeInfo, MAX_TENSOR_BYTES};
use crate::ops::conv::{window_geometry, ConvGeometry};
use crate::ops::elementwise::Elementwise;
use crate::ops::map::{le, map};
use crate::ops::operand::{broadcast_strides, element_strides, Operand};
use crate::ops::quantize::{dynamic_params, quantize_shifted};
use cranelift_codegen::ir::{types, InstBuilder, Value};
use optc_ir::{ActivationQuantization, DType, Op, TensorType, Window};

// ---------------------------------------------------------------------------------------------
// The i32 GEMM.

/// Rows of a register tile.
const MR: usize = 4;

/// A row-major matrix operand: element type (i32, i8 or u8) and elements per row.
#[derive(Clone, Copy)]
struct Matrix {
    p: Value,
    dt: DType,
    ld: usize,
}

impl Matrix {
    fn size(&self) -> i64 {
        self.dt.size() as i64
    }

    /// The element at byte offset `off`, as an i32.
    fn scalar(&self, e: &mut Emitter, off: Value) -> Value {
        match self.dt {
            DType::I32 => e.load(types::I32, self.p, off),
            dt => {
                let v = e.load(types::I8, self.p, off);
                if dt == DType::I8 {
                    e.b.ins().sextend(types::I32, v)
                } else {
                    e.b.ins().uextend(types::I32, v)
                }
            }
        }
    }

    /// `nv` i32x4 vectors of consecutive elements at byte offset `off` (`nv` 1 or 2).
    fn vectors(&self, e: &mut Emitter, off: Value, nv: usize) -> Vec<Value> {
        if self.dt == DType::I32 {
            return (0..nv)
                .map(|q| {
                    let o = e.b.ins().iadd_imm_s(off, q as i64 * 16);
                    e.load(I32X4, self.p, o)
                })
                .collect();
        }
        let signed = self.dt == DType::I8;
        let widen_low = |e: &mut Emitter, v: Value| {
            if signed {
                e.b.ins().swiden_low(v)
            } else {
                e.b.ins().uwiden_low(v)
            }
        };
        let bytes = if nv == 1 {
            let w = e.load(types::I32, self.p, off);
            let v = e.b.ins().scalar_to_vector(I32X4, w);
            e.b.ins().bitcast(types::I8X16, le(), v)
        } else {
            let w = e.load(types::I64, self.p, off);
            let v = e.b.ins().scalar_to_vector(types::I64X2, w);
            e.b.ins().bitcast(types::I8X16, le(), v)
        };
        let half = widen_low(e, bytes);
        let lo = widen_low(e, half);
        if nv == 1 {
            return vec![lo];
        }
        let hi = if signed {
            e.b.ins().swiden_high(half)
        } else {
            e.b.ins().uwiden_high(half)
        };
        vec![lo, hi]
    }
}

/// Where a tile's results go: `store(e, row, column, acc, lanes)` with row and column
/// indices (i64) and the accumulator (an i32, or an i32x4 of columns `column..column + 4`).
type TileStore<'a> = dyn FnMut(&mut Emitter, Value, Value, Value, usize) + 'a;

/// `C[i][j] = Σ_k A[i][k] * B[k][j]` for `m x n` with depth `k`, in i32 (wrapping), each
/// result handed to `store`. `a0`, `b0`: byte offsets of `A[0][0]` and `B[0][0]`.
#[allow(clippy::too_many_arguments)]
fn int_gemm(
    e: &mut Emitter,
    m: usize,
    n: usize,
    k: usize,
    a: Matrix,
    a0: Value,
    b: Matrix,
    b0: Value,
    store: &mut TileStore,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Column blocks of `nc` columns: a k x nc panel of B (~256 KiB) stays in L2 while every
    // row tile passes over it.
    let nc = ((256 * 1024 / (k * b.size() as usize).max(1)) / 8 * 8).clamp(8, n.div_ceil(8) * 8);
    let nblocks = n / nc;
    let rest = n % nc;
    let block = &mut |e: &mut Emitter, ncols: usize, j0: Value| {
        let rows = &mut |e: &mut Emitter, mr: usize, i: Value| {
            let n8 = ncols / 8;
            e.loop_count(n8 as i64, &mut |e, t| {
                let j = e.b.ins().imul_imm_s(t, 8);
                let j = e.b.ins().iadd(j, j0);
                tile(e, mr, 2, k, a, a0, b, b0, i, j, store);
            });
            let mut done = n8 * 8;
            if ncols - done >= 4 {
                let j = e.b.ins().iadd_imm_s(j0, done as i64);
                tile(e, mr, 1, k, a, a0, b, b0, i, j, store);
                done += 4;
            }
            e.loop_count((ncols - done) as i64, &mut |e, t| {
                let j = e.b.ins().iadd_imm_s(t, done as i64);
                let j = e.b.ins().iadd(j, j0);
                tile(e, mr, 0, k, a, a0, b, b0, i, j, store);
            });
        };
        e.loop_count((m / MR) as i64, &mut |e, t| {
            let i = e.b.ins().imul_imm_s(t, MR as i64);
            rows(e, MR, i);
        });
        if !m.is_multiple_of(MR) {
            let i = e.int_const((m / MR * MR) as i64);
            rows(e, m % MR, i);
        }
    };
    e.loop_count(nblocks as i64, &mut |e, t| {
        let j0 = e.b.ins().imul_imm_s(t, nc as i64);
        block(e, nc, j0);
    });
    if rest > 0 {
        let j0 = e.int_const((nblocks * nc) as i64);
        block(e, rest, j0);
    }
}

/// One tile: `mr` rows from row `i` x (`nv` i32x4 vectors, or one scalar column when
/// `nv == 0`) from column `j`.
#[allow(clippy::too_many_arguments)]
fn tile(
    e: &mut Emitter,
    mr: usize,
    nv: usize,
    k: usize,
    a: Matrix,
    a0: Value,
    b: Matrix,
    b0: Value,
    i: Value,
    j: Value,
    store: &mut TileStore,
) {
    let ty = if nv == 0 { types::I32 } else { I32X4 };
    let ncol = nv.max(1);
    let accs: Vec<_> = (0..mr * ncol)
        .map(|_| {
            let v = e.b.declare_var(ty);
            let z = e.i32_const(ty, 0);
            e.b.def_var(v, z);
            v
        })
        .collect();
    let row_a = a.ld as i64 * a.size();
    let ao = e.b.ins().imul_imm_s(i, row_a);
    let ao = e.b.ins().iadd(ao, a0);
    let bo = e.b.ins().imul_imm_s(j, b.size());
    let bo = e.b.ins().iadd(bo, b0);
    e.loop_offsets(
        k as i64,
        &[ao, bo],
        &[a.size(), b.ld as i64 * b.size()],
        &mut |e, _k, o| {
            let bv = if nv == 0 {
                vec![b.scalar(e, o[1])]
            } else {
                b.vectors(e, o[1], nv)
            };
            for r in 0..mr {
                let off = e.b.ins().iadd_imm_s(o[0], r as i64 * row_a);
                let s = a.scalar(e, off);
                let av = if nv == 0 {
                    s
                } else {
                    e.b.ins().splat(I32X4, s)
                };
                for (q, &bq) in bv.iter().enumerate() {
                    let acc = e.b.use_var(accs[r * ncol + q]);
                    let p = e.b.ins().imul(av, bq);
                    let nacc = e.b.ins().iadd(acc, p);
                    e.b.def_var(accs[r * ncol + q], nacc);
                }
            }
        },
    );
    for r in 0..mr {
        let row = e.b.ins().iadd_imm_s(i, r as i64);
        for q in 0..ncol {
            let col = e.b.ins().iadd_imm_s(j, q as i64 * 4);
            let acc = e.b.use_var(accs[r * ncol + q]);
            store(e, row, col, acc, if nv == 0 { 1 } else { 4 });
        }
    }
}

/// Store an i32 accumulator (scalar or i32x4) at element `index` of the i32 tensor `out`.
fn store_i32(e: &mut Emitter, out: Value, index: Value, acc: Value) {
    let off = e.b.ins().imul_imm_s(index, 4);
    e.store(acc, out, off);
}

// ---------------------------------------------------------------------------------------------
// Scratch.

fn checked(info: &NodeInfo, parts: &[usize]) -> Result<usize> {
    let mut total = 0usize;
    for &p in parts {
        total = total
            .checked_add(p.saturating_mul(4))
            .filter(|&t| t <= MAX_TENSOR_BYTES)
            .ok_or_else(|| info.err("the integer contraction's scratch is too large"))?;
    }
    Ok(total)
}

/// The i32 elements of a conv's scratch: its padded input copy and its im2col buffer.
fn conv_scratch(g: &ConvGeometry) -> [usize; 2] {
    [g.n * g.c * g.hp * g.wp, g.cg * g.kh * g.kw * g.oh * g.ow]
}

fn conv_view<'a>(info: &NodeInfo<'a>) -> Result<(&'a Window, usize)> {
    match info.op {
        Op::ConvInteger { window, group } | Op::QuantizedConv { window, group, .. } => {
            Ok((window, *group))
        }
        _ => Err(info.err("not an integer conv")),
    }
}

fn geometry(info: &NodeInfo) -> Result<ConvGeometry> {
    let (window, group) = conv_view(info)?;
    window_geometry(
        window,
        group,
        &info.ins[0].shape,
        &info.ins[1].shape,
        &info.outs[0].shape,
    )
    .ok_or_else(|| {
        info.err(format!(
            "{} with {} spatial dims has no code generation (1 or 2 are supported)",
            info.op.name(),
            window.nsp()
        ))
    })
}

/// Bytes of scratch an integer contraction needs.
pub(super) fn scratch_bytes(info: &NodeInfo) -> Result<usize> {
    match info.op {
        Op::MatMulInteger => checked(info, &[info.ins[0].numel(), info.ins[1].numel()]),
        Op::QuantizedMatMul { .. } => checked(info, &[info.ins[0].numel()]),
        Op::QuantizedConv { .. } => checked(info, &conv_scratch(&geometry(info)?)),
        Op::ConvInteger { .. } => {
            let [p, c] = conv_scratch(&geometry(info)?);
            checked(info, &[p, c, info.ins[1].numel()])
        }
        _ => Ok(0),
    }
}

// ---------------------------------------------------------------------------------------------
// MatMulInteger.

/// `i32(x) - i32(zero)` of `x` (its own type) into the i32 tensor at `out` (zero broadcast
/// to x's shape; absent: a widening copy).
fn shifted_copy(
    e: &mut Emitter,
    info: &NodeInfo,
    x: Value,
    xt: &TensorType,
    zero: Option<(Value, &TensorType)>,
    out: Value,
) -> Result<()> {
    let oty = TensorType::new(DType::I32, xt.shape.clone());
    let mut ops = vec![Operand::dense(x, xt)];
    let f = match zero {
        Some((z, zt)) => {
            ops.push(Operand::broadcast(z, zt, &xt.shape));
            Elementwise::Shift
        }
        None => Elementwise::Cast,
    };
    map(e, info, &xt.shape, Operand::dense(out, &oty), &ops, &f)
}

pub(super) fn lower_matmul_integer(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    scratch: Value,
) -> Result<()> {
    let (at, bt) = (&info.ins[0], &info.ins[1]);
    let mut sa = at.shape.clone();
    let mut sb = bt.shape.clone();
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    // Shifted i32 copies of both operands (as promoted: the same elements).
    let a_copy = scratch;
    let b_copy = e.b.ins().iadd_imm_s(scratch, at.numel() as i64 * 4);
    let zero = |k: usize| ins.get(k).map(|&p| (p, &info.ins[k]));
    let (za, zb) = (zero(2), zero(3));
    // a's zero point broadcasts against a as given (a rank-1 a has one element of zero).
    shifted_copy(e, info, ins[0], at, za, a_copy)?;
    shifted_copy(e, info, ins[1], bt, zb, b_copy)?;
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let (ba, bb) = (&sa[..sa.len() - 2], &sb[..sb.len() - 2]);
    let batch = optc_ir::broadcast_shapes(ba, bb).map_err(|x| info.err(x.msg))?;
    let st = |s: &[usize], mat: usize| -> Vec<i64> {
        broadcast_strides(s, &batch)
            .iter()
            .map(|&x| x * (mat * 4) as i64)
            .collect()
    };
    let bst = [
        st(ba, m * k),
        st(bb, k * n),
        element_strides(&batch)
            .iter()
            .map(|&x| x * (m * n * 4) as i64)
            .collect(),
    ];
    let z = e.int_const(0);
    let a = Matrix {
        p: a_copy,
        dt: DType::I32,
        ld: k,
    };
    let b = Matrix {
        p: b_copy,
        dt: DType::I32,
        ld: n,
    };
    e.nest(&batch, &bst, &[z, z, z], &mut |e, offs| {
        let oo = offs[2];
        int_gemm(
            e,
            m,
            n,
            k,
            a,
            offs[0],
            b,
            offs[1],
            &mut |e, row, col, acc, _| {
                let idx = e.b.ins().imul_imm_s(row, n as i64);
                let idx = e.b.ins().iadd(idx, col);
                let off = e.b.ins().imul_imm_s(idx, 4);
                let off = e.b.ins().iadd(off, oo);
                e.store(acc, out, off);
            },
        );
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Convolutions.

/// Fill `n` i32 at `p` with zeros.
fn zero_i32(e: &mut Emitter, p: Value, n: usize) {
    let zv = e.i32_const(I32X4, 0);
    let zs = e.i32_const(types::I32, 0);
    let start = e.int_const(0);
    e.vector_loop(
        n,
        &[start],
        &[true],
        &mut |e, o| e.store(zv, p, o[0]),
        &mut |e, o| e.store(zs, p, o[0]),
    );
}

/// The zero-padded i32 input of a conv, `[n][c][hp][wp]` at `padded`: zeros everywhere, then
/// `fill(e, src, dst)` writes each of the `n * c * h` input rows: `src` is the byte offset of
/// the row in the input (rows of `row_bytes`), `dst` its place in `padded`.
fn padded_input(
    e: &mut Emitter,
    g: &ConvGeometry,
    padded: Value,
    row_bytes: usize,
    fill: &mut dyn FnMut(&mut Emitter, Value, Value),
) {
    zero_i32(e, padded, g.n * g.c * g.hp * g.wp);
    let z = e.int_const(0);
    let first = e.int_const(((g.ph * g.wp + g.pw) * 4) as i64);
    e.nest(
        &[g.n * g.c, g.h],
        &[
            vec![(g.h * row_bytes) as i64, row_bytes as i64],
            vec![(g.hp * g.wp * 4) as i64, (g.wp * 4) as i64],
        ],
        &[z, first],
        &mut |e, o| {
            let dst = e.b.ins().iadd(padded, o[1]);
            fill(e, o[0], dst);
        },
    );
}

/// The im2col buffer of image `img` and group `grp`: `cols[(c * kh + ki) * kw + kj][oh * ow +
/// x] = padded[img][grp * cg + c][oh * sh + ki * dh][x * sw + kj * dw]`.
fn im2col(e: &mut Emitter, g: &ConvGeometry, padded: Value, cols: Value, plane0: Value) {
    let plane = (g.hp * g.wp * 4) as i64;
    let npix = (g.oh * g.ow * 4) as i64;
    let z = e.int_const(0);
    e.nest(
        &[g.cg, g.kh, g.kw],
        &[
            vec![plane, (g.dh * g.wp * 4) as i64, (g.dw * 4) as i64],
            vec![npix * (g.kh * g.kw) as i64, npix * g.kw as i64, npix],
        ],
        &[plane0, z],
        &mut |e, o| {
            e.loop_offsets(
                g.oh as i64,
                &[o[0], o[1]],
                &[(g.sh * g.wp * 4) as i64, (g.ow * 4) as i64],
                &mut |e, _y, r| {
                    if g.sw == 1 {
                        e.copy_bytes(cols, r[1], padded, r[0], g.ow * 4);
                    } else {
                        e.loop_offsets(
                            g.ow as i64,
                            &[r[0], r[1]],
                            &[(g.sw * 4) as i64, 4],
                            &mut |e, _x, c| {
                                let v = e.load(types::I32, padded, c[0]);
                                e.store(v, cols, c[1]);
                            },
                        );
                    }
                },
            );
        },
    );
}

/// A conv over the padded i32 input at `padded`: per image and group, im2col into `cols`,
/// then the GEMM of the weights (`w`: `[m][cg * kh * kw]`) with it; `store(e, image, oc,
/// pixel, acc, lanes)` writes each result.
#[allow(clippy::type_complexity)]
fn conv_gemm(
    e: &mut Emitter,
    g: &ConvGeometry,
    padded: Value,
    cols: Value,
    w: Matrix,
    store: &mut dyn FnMut(&mut Emitter, Value, Value, Value, Value, usize),
) {
    let kdepth = g.cg * g.kh * g.kw;
    let npix = g.oh * g.ow;
    let plane = (g.hp * g.wp * 4) as i64;
    let z = e.int_const(0);
    e.loop_count(g.n as i64, &mut |e, img| {
        e.loop_count(g.groups as i64, &mut |e, grp| {
            let c0 = e.b.ins().imul_imm_s(img, g.c as i64);
            let cg0 = e.b.ins().imul_imm_s(grp, g.cg as i64);
            let c0 = e.b.ins().iadd(c0, cg0);
            let plane0 = e.b.ins().imul_imm_s(c0, plane);
            im2col(e, g, padded, cols, plane0);
            let m0 = e.b.ins().imul_imm_s(grp, g.mg as i64);
            let a0 = e.b.ins().imul_imm_s(m0, kdepth as i64 * w.size());
            let b = Matrix {
                p: cols,
                dt: DType::I32,
                ld: npix,
            };
            int_gemm(
                e,
                g.mg,
                npix,
                kdepth,
                w,
                a0,
                b,
                z,
                &mut |e, row, col, acc, lanes| {
                    let oc = e.b.ins().iadd(row, m0);
                    store(e, img, oc, col, acc, lanes);
                },
            );
        });
    });
}

pub(super) fn lower_conv_integer(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    scratch: Value,
) -> Result<()> {
    let g = geometry(info)?;
    if info.outs[0].numel() == 0 {
        return Ok(());
    }
    let [np, nc] = conv_scratch(&g);
    let padded = scratch;
    let cols = e.b.ins().iadd_imm_s(scratch, np as i64 * 4);
    let wcopy = e.b.ins().iadd_imm_s(scratch, (np + nc) as i64 * 4);
    // The weights minus their zero point (one per output channel or one), as i32.
    let wt = &info.ins[1];
    let wz = ins.get(3).map(|&p| {
        let zt = &info.ins[3];
        let mut s = vec![1; wt.rank()];
        s[0] = zt.numel();
        (p, TensorType::new(zt.dtype, s))
    });
    shifted_copy(
        e,
        info,
        ins[1],
        wt,
        wz.as_ref().map(|(p, t)| (*p, t)),
        wcopy,
    )?;
    // The input minus its zero point, into the padded copy (row by row).
    let xt = &info.ins[0];
    let row = TensorType::new(xt.dtype, vec![g.w]);
    let zt = info.ins.get(2).map(|t| TensorType::new(t.dtype, vec![]));
    let xz = ins.get(2).copied();
    let mut err = None;
    padded_input(e, &g, padded, g.w * xt.dtype.size(), &mut |e, xo, dst| {
        let src = e.b.ins().iadd(ins[0], xo);
        let z = match (&zt, xz) {
            (Some(t), Some(p)) => Some((p, t)),
            _ => None,
        };
        if let Err(x) = shifted_copy(e, info, src, &row, z, dst) {
            err.get_or_insert(x);
        }
    });
    if let Some(x) = err {
        return Err(x);
    }
    let w = Matrix {
        p: wcopy,
        dt: DType::I32,
        ld: g.cg * g.kh * g.kw,
    };
    let npix = (g.oh * g.ow) as i64;
    conv_gemm(e, &g, padded, cols, w, &mut |e, img, oc, pix, acc, _| {
        let idx = e.b.ins().imul_imm_s(img, g.m as i64);
        let idx = e.b.ins().iadd(idx, oc);
        let idx = e.b.ins().imul_imm_s(idx, npix);
        let idx = e.b.ins().iadd(idx, pix);
        store_i32(e, out, idx, acc);
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// QuantizedMatMul and QuantizedConv.

/// The activation's scale and zero point (f32 values) of a quantized contraction: chosen
/// from the `n` floats at `x` (dynamic), or its constant inputs (static).
fn activation_params(
    e: &mut Emitter,
    info: &NodeInfo,
    act: ActivationQuantization,
    x: Value,
) -> Result<(Value, Value)> {
    match act {
        ActivationQuantization::Dynamic => Ok(dynamic_params(e, x, info.ins[0].numel())),
        ActivationQuantization::Static => {
            let constant = |k: usize| {
                info.consts[k].as_ref().ok_or_else(|| {
                    info.err(
                        "the static activation scale and zero point must be constants for code generation",
                    )
                })
            };
            let scale = constant(3)?.to_f64_vec()[0] as f32;
            let zero = constant(4)?.to_f64_vec()[0] as f32;
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(info.err(format!(
                    "the activation scale must be positive and finite, got {scale}"
                )));
            }
            Ok((
                e.float_const(types::F32, scale),
                e.float_const(types::F32, zero),
            ))
        }
    }
}

/// The epilogue of a quantized contraction: `f32(acc) * (scale * ws[c]) + bias[c]`, each
/// step rounded (no fused multiply-add), for `lanes` consecutive output channels `c` (matmul)
/// or one channel `c` (conv, `lanes` pixels), stored at element `index` of the f32 `out`.
struct Epilogue {
    scale: Value,
    ws: Value,
    per_channel: bool,
    bias: Option<Value>,
    out: Value,
}

impl Epilogue {
    /// `channel_lanes`: the lanes are `lanes` consecutive channels from `c` (else all lanes
    /// are channel `c`).
    fn store(
        &self,
        e: &mut Emitter,
        c: Value,
        channel_lanes: bool,
        index: Value,
        acc: Value,
        lanes: usize,
    ) {
        let vector = lanes == 4;
        let ty = if vector { F32X4 } else { types::F32 };
        let coff = e.b.ins().imul_imm_s(c, 4);
        let z = e.int_const(0);
        let load = |e: &mut Emitter, p: Value, per: bool| -> Value {
            match (per, vector && channel_lanes) {
                (true, true) => e.load(F32X4, p, coff),
                (true, false) => {
                    let s = e.load(types::F32, p, coff);
                    if vector {
                        e.b.ins().splat(F32X4, s)
                    } else {
                        s
                    }
                }
                (false, _) => {
                    let s = e.load(types::F32, p, z);
                    if vector {
                        e.b.ins().splat(F32X4, s)
                    } else {
                        s
                    }
                }
            }
        };
        let ws = load(e, self.ws, self.per_channel);
        let scale = if vector {
            e.b.ins().splat(F32X4, self.scale)
        } else {
            self.scale
        };
        let s = e.b.ins().fmul(scale, ws);
        let f = e.b.ins().fcvt_from_sint(ty, acc);
        let mut y = e.b.ins().fmul(f, s);
        if let Some(b) = self.bias {
            let bv = load(e, b, true);
            y = e.b.ins().fadd(y, bv);
        }
        let off = e.b.ins().imul_imm_s(index, 4);
        e.store(y, self.out, off);
    }
}

fn epilogue(
    info: &NodeInfo,
    ins: &[Value],
    act: ActivationQuantization,
    scale: Value,
    out: Value,
) -> Epilogue {
    Epilogue {
        scale,
        ws: ins[2],
        per_channel: info.ins[2].numel() != 1,
        bias: ins.get(act.fixed_inputs()).copied(),
        out,
    }
}

pub(super) fn lower_quantized_matmul(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    scratch: Value,
    act: ActivationQuantization,
) -> Result<()> {
    let (k, n) = (info.ins[1].shape[0], info.ins[1].shape[1]);
    let rows = info.ins[0].numel() / k.max(1);
    if rows * n == 0 {
        return Ok(());
    }
    let (scale, zero) = activation_params(e, info, act, ins[0])?;
    if info.ins[0].dtype == DType::U8 {
        // Already quantized (static): only the zero point taken off.
        let zt = TensorType::new(DType::U8, vec![]);
        shifted_copy(e, info, ins[0], &info.ins[0], Some((ins[4], &zt)), scratch)?;
    } else {
        let one = e.float_const(types::F32, 1.0);
        let inverse = e.b.ins().fdiv(one, scale);
        quantize_shifted(e, ins[0], scratch, info.ins[0].numel(), inverse, zero);
    }
    let ep = epilogue(info, ins, act, scale, out);
    let a = Matrix {
        p: scratch,
        dt: DType::I32,
        ld: k,
    };
    let w = Matrix {
        p: ins[1],
        dt: DType::I8,
        ld: n,
    };
    let z = e.int_const(0);
    int_gemm(e, rows, n, k, a, z, w, z, &mut |e, row, col, acc, lanes| {
        let idx = e.b.ins().imul_imm_s(row, n as i64);
        let idx = e.b.ins().iadd(idx, col);
        ep.store(e, col, true, idx, acc, lanes);
    });
    Ok(())
}

pub(super) fn lower_quantized_conv(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    scratch: Value,
    act: ActivationQuantization,
) -> Result<()> {
    let g = geometry(info)?;
    if info.outs[0].numel() == 0 {
        return Ok(());
    }
    let (scale, zero) = activation_params(e, info, act, ins[0])?;
    let one = e.float_const(types::F32, 1.0);
    let inverse = e.b.ins().fdiv(one, scale);
    let [np, _] = conv_scratch(&g);
    let padded = scratch;
    let cols = e.b.ins().iadd_imm_s(scratch, np as i64 * 4);
    // The quantized input (minus its zero point: padding contributes 0) into the padded copy;
    // a u8 input (static) is already quantized.
    let xt = &info.ins[0];
    let row = TensorType::new(xt.dtype, vec![g.w]);
    let zt = TensorType::new(DType::U8, vec![]);
    let mut err = None;
    padded_input(e, &g, padded, g.w * xt.dtype.size(), &mut |e, xo, dst| {
        let src = e.b.ins().iadd(ins[0], xo);
        if xt.dtype == DType::U8 {
            if let Err(x) = shifted_copy(e, info, src, &row, Some((ins[4], &zt)), dst) {
                err.get_or_insert(x);
            }
        } else {
            quantize_shifted(e, src, dst, g.w, inverse, zero);
        }
    });
    if let Some(x) = err {
        return Err(x);
    }
    let ep = epilogue(info, ins, act, scale, out);
    let w = Matrix {
        p: ins[1],
        dt: DType::I8,
        ld: g.cg * g.kh * g.kw,
    };
    let npix = (g.oh * g.ow) as i64;
    conv_gemm(
        e,
        &g,
        padded,
        cols,
        w,
        &mut |e, img, oc, pix, acc, lanes| {
            let idx = e.b.ins().imul_imm_s(img, g.m as i64);
            let idx = e.b.ins().iadd(idx, oc);
            let idx = e.b.ins().imul_imm_s(idx, npix);
            let idx = e.b.ins().iadd(idx, pix);
            ep.store(e, oc, false, idx, acc, lanes);
        },
    );
    Ok(())
}
