#![allow(clippy::needless_range_loop)]
//! The Winograd weights `U = G g G^T` of a conv (see `winograd.rs`): `n^2` matrices `M x C`,
//! each packed in `MR`-row tiles (`[C][mr]`, the tile of row `r` at `r * C` floats), matrix
//! `xi` at `xi * M * C` floats. `U` is `n^2 / 9` times the 3x3 weights (1.8x for F(2, 3),
//! 4x for F(4, 3)).
//!
//! The JIT computes `U` at compile time into the module's data ([`transformed`]). An AOT
//! object instead holds the 3x3 weights once and computes `U` at the model's first run into
//! zeroed, writable memory (`.bss`: no bytes in the file) ([`FirstRunWeights`]): the object
//! stays about the size of the model's weights. Both compute in f64 in the same order and
//! round once to f32, so both give the same bits.
//!
//! First run: a flag after `U` goes 0 (not computed) -> 1 (being computed) -> 2 (ready) by an
//! atomic compare-and-swap, so concurrent first runs compute it once; the others wait for 2.

use super::asm::MR;
use crate::builder::{if_else, tensor_flags, Emitter};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::conv::ConvGeometry;
use cranelift_codegen::ir::{condcodes::IntCC, types, InstBuilder, Value};

/// `G` of F(r, 3): `n x 3`.
fn gmat(r: usize) -> Vec<[f64; 3]> {
    if r == 2 {
        vec![
            [1.0, 0.0, 0.0],
            [0.5, 0.5, 0.5],
            [0.5, -0.5, 0.5],
            [0.0, 0.0, 1.0],
        ]
    } else {
        vec![
            [1.0 / 4.0, 0.0, 0.0],
            [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
            [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
            [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
            [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
            [0.0, 0.0, 1.0],
        ]
    }
}

/// What a sum of no terms is in Rust (`Iterator::sum` starts from it): the emitted sums start
/// from the same value, so a `-0.0` comes out the same.
fn empty_sum() -> f64 {
    std::iter::empty::<f64>().sum()
}

fn weights<'a>(info: &'a NodeInfo) -> Result<&'a [f32]> {
    info.consts[1]
        .as_ref()
        .and_then(|w| w.as_f32())
        .ok_or_else(|| info.err("conv weight is not constant f32"))
}

/// `U` computed now (the JIT's compile-time data).
pub(super) fn transformed(info: &NodeInfo, g: &ConvGeometry, r: usize) -> Result<Vec<Vec<u8>>> {
    let w = weights(info)?;
    let (m, c) = (g.m, g.c);
    let gm = gmat(r);
    let n = gm.len();
    let mut u = vec![0f32; n * n * m * c];
    for mm in 0..m {
        for cc in 0..c {
            let k = &w[(mm * c + cc) * 9..(mm * c + cc) * 9 + 9];
            // t = G g (n x 3), then U = t G^T (n x n).
            let mut t = vec![[0f64; 3]; n];
            for (i, row) in t.iter_mut().enumerate() {
                for (b, x) in row.iter_mut().enumerate() {
                    *x = (0..3).map(|a| gm[i][a] * k[a * 3 + b] as f64).sum();
                }
            }
            let tile = mm / MR;
            let mr = MR.min(m - tile * MR);
            let row = mm % MR;
            for i in 0..n {
                for j in 0..n {
                    let v: f64 = (0..3).map(|b| t[i][b] * gm[j][b]).sum();
                    let xi = i * n + j;
                    u[xi * m * c + tile * MR * c + cc * mr + row] = v as f32;
                }
            }
        }
    }
    Ok(vec![u.iter().flat_map(|x| x.to_le_bytes()).collect()])
}

/// `U` computed by the generated code at the first run, from the 3x3 weights.
pub(crate) struct FirstRunWeights {
    /// The 3x3 weights as stored in the model (`M x C x 3 x 3` f32), until the kernel writer
    /// takes them for its data object.
    pub raw: Vec<u8>,
    m: usize,
    c: usize,
    r: usize,
}

/// The flag's states.
const READY: i64 = 2;
const BUSY: i64 = 1;

impl FirstRunWeights {
    pub(super) fn new(info: &NodeInfo, g: &ConvGeometry, r: usize) -> Result<FirstRunWeights> {
        let raw = weights(info)?
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        Ok(FirstRunWeights {
            raw,
            m: g.m,
            c: g.c,
            r,
        })
    }

    fn u_bytes(&self) -> usize {
        (self.r + 2) * (self.r + 2) * self.m * self.c * 4
    }

    /// Bytes of the zeroed, writable object the generated code fills: `U`, then the flag
    /// (a cache line of its own).
    pub fn zeroed_bytes(&self) -> usize {
        self.u_bytes() + 64
    }

    /// Make sure `U` (at `u`, in the zeroed object) is computed from the 3x3 weights at `raw`
    /// before the kernel reads it: compute it if no run has, or wait for the run that is.
    pub fn emit(&self, e: &mut Emitter, u: Value, raw: Value) {
        let flag = e.b.ins().iadd_imm_s(u, self.u_bytes() as i64);
        let state = e.b.ins().atomic_load(types::I64, tensor_flags(), flag);
        let ready = e.b.ins().icmp_imm_s(IntCC::Equal, state, READY);
        if_else(e, ready, &mut |_| {}, &mut |e| {
            let zero = e.int_const(0);
            let busy = e.int_const(BUSY);
            let old = e.b.ins().atomic_cas(tensor_flags(), flag, zero, busy);
            let won = e.b.ins().icmp_imm_s(IntCC::Equal, old, 0);
            if_else(
                e,
                won,
                &mut |e| {
                    self.emit_transform(e, u, raw);
                    let r = e.int_const(READY);
                    e.b.ins().atomic_store(tensor_flags(), r, flag);
                },
                &mut |e| {
                    // Another thread's first run is computing `U`: wait until it is ready.
                    let wait = e.b.create_block();
                    let done = e.b.create_block();
                    e.b.ins().jump(wait, &[]);
                    e.b.switch_to_block(wait);
                    let s = e.b.ins().atomic_load(types::I64, tensor_flags(), flag);
                    let ok = e.b.ins().icmp_imm_s(IntCC::Equal, s, READY);
                    e.b.ins().brif(ok, done, &[], wait, &[]);
                    e.b.seal_block(wait);
                    e.b.switch_to_block(done);
                    e.b.seal_block(done);
                },
            );
        });
    }

    /// The loops of [`transformed`], as code: the same f64 products and sums in the same
    /// order, rounded once.
    fn emit_transform(&self, e: &mut Emitter, u: Value, raw: Value) {
        let (m, c, r) = (self.m, self.c, self.r);
        let gm = gmat(r);
        let n = gm.len();
        let plane = (m * c * 4) as i64;
        e.loop_count(m as i64, &mut |e, mm| {
            let tile = e.b.ins().udiv_imm_u(mm, MR as i64);
            let row = e.b.ins().urem_imm_u(mm, MR as i64);
            let first = e.b.ins().imul_imm_s(tile, MR as i64);
            let mc = e.int_const(m as i64);
            let left = e.b.ins().isub(mc, first);
            let mrc = e.int_const(MR as i64);
            let mr = e.b.ins().umin(left, mrc);
            // The element of (mm, cc = 0) in each plane, in floats.
            let tile0 = e.b.ins().imul_imm_s(tile, (MR * c) as i64);
            let base = e.b.ins().iadd(tile0, row);
            let src_row = e.b.ins().imul_imm_s(mm, (c * 36) as i64);
            e.loop_count(c as i64, &mut |e, cc| {
                let so = e.b.ins().imul_imm_s(cc, 36);
                let so = e.b.ins().iadd(so, src_row);
                let src = e.b.ins().iadd(raw, so);
                let k: Vec<Value> = (0..9)
                    .map(|x| {
                        let f = e.b.ins().load(types::F32, tensor_flags(), src, 4 * x);
                        e.b.ins().fpromote(types::F64, f)
                    })
                    .collect();
                let sum3 = |e: &mut Emitter, terms: [(f64, Value); 3]| {
                    let mut s = e.b.ins().f64const(empty_sum());
                    for (g, x) in terms {
                        let gv = e.b.ins().f64const(g);
                        let p = e.b.ins().fmul(gv, x);
                        s = e.b.ins().fadd(s, p);
                    }
                    s
                };
                let t: Vec<[Value; 3]> = (0..n)
                    .map(|i| {
                        [0, 1, 2].map(|b| {
                            sum3(
                                e,
                                [(gm[i][0], k[b]), (gm[i][1], k[3 + b]), (gm[i][2], k[6 + b])],
                            )
                        })
                    })
                    .collect();
                let col = e.b.ins().imul(cc, mr);
                let at = e.b.ins().iadd(base, col);
                let at = e.b.ins().ishl_imm_u(at, 2);
                let dst = e.b.ins().iadd(u, at);
                for i in 0..n {
                    for j in 0..n {
                        // t[i][b] * G[j][b]: the products in the order of `transformed`.
                        let mut s = e.b.ins().f64const(empty_sum());
                        for b in 0..3 {
                            let gv = e.b.ins().f64const(gm[j][b]);
                            let p = e.b.ins().fmul(t[i][b], gv);
                            s = e.b.ins().fadd(s, p);
                        }
                        let v = e.b.ins().fdemote(types::F32, s);
                        let xi = (i * n + j) as i64;
                        let a = e.b.ins().iadd_imm_s(dst, xi * plane);
                        e.b.ins().store(tensor_flags(), v, a, 0);
                    }
                }
            });
        });
    }
}
