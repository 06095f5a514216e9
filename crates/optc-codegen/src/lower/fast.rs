//! The AVX2/FMA GEMM path (BLIS style): MatMul/Gemm with a constant B packed at compile time
//! into 16-column panels, and ungrouped Conv as an implicit GEMM (`W[M, C*KH*KW] @ patches`)
//! whose patch panels are packed on the fly, one K block at a time, into per-task scratch.
//! The `mr x 16` tiles are computed by the `iced-x86` microkernels of [`crate::ukr`], which
//! also apply the epilogue (bias, Relu/Clip, residual add, alpha) before the store.
//!
//! Work is split into column units (`chunk` columns of one image); a node's units are spread
//! over up to [`MAX_TASKS`] tasks run by the `optc_rt_parallel_for` hook.

use super::*;
use crate::ukr::{Ep, UkrKey, MR, NR};
use cranelift_codegen::ir::FuncRef;

/// Depth of one K block: a 16-column B panel of `KC` rows (16 KiB) stays in L1d (32 KiB).
pub(crate) const KC: usize = 256;
/// Rows of one M block: the `MC x KC` block of A (144 KiB) stays in L2 (512 KiB).
pub(crate) const MC: usize = 144;
/// At most this many tasks per node (each conv task owns a `KC x chunk` packing buffer).
pub(crate) const MAX_TASKS: usize = 16;

pub(super) enum Kind {
    /// `C[mt, n] = A[mt, k] @ B` with B packed (`extra[0]`), A = input 0.
    Mat,
    /// Implicit GEMM: A = weights (input 1), B = patches of input 0 (padded copy in scratch).
    Conv(ConvGeom),
}

pub(super) struct Plan {
    pub kind: Kind,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub nimg: usize,
    pub ep: Vec<Ep>,
    pub bias_port: Option<usize>,
    pub res_port: Option<usize>,
    /// Fused steps from this index on are applied afterwards by the generic chain pass.
    pub rest: usize,
    /// Gemm's `beta * C` term applied afterwards (when it is not an epilogue step).
    pub gemm_c_post: Option<f32>,
    /// Columns per work unit (a multiple of `NR`).
    pub chunk: usize,
    /// Rows per work unit (a multiple of `MR`, or all of M).
    pub mrows: usize,
    pub tasks: usize,
}

impl Plan {
    fn units_per_img(&self) -> usize {
        self.n.div_ceil(self.chunk)
    }
    fn mparts(&self) -> usize {
        self.m.div_ceil(self.mrows)
    }
    pub fn units(&self) -> usize {
        self.nimg * self.units_per_img() * self.mparts()
    }
    /// Bytes of the padded input copy at the start of scratch (conv only).
    pub fn pad_bytes(&self) -> usize {
        match &self.kind {
            Kind::Conv(g) if g.hp != g.h || g.wp != g.w => g.n * g.c * g.hp * g.wp * 4,
            _ => 0,
        }
    }
    /// Packing buffer bytes per task (conv only).
    pub fn pack_bytes(&self) -> usize {
        match &self.kind {
            Kind::Conv(_) => KC.min(self.k.max(1)) * self.chunk * 4,
            Kind::Mat => 0,
        }
    }
    pub fn scratch_bytes(&self) -> usize {
        self.pad_bytes() + self.tasks * self.pack_bytes()
    }
    fn kblocks(&self) -> Vec<usize> {
        if self.k == 0 {
            return vec![0];
        }
        let mut v = vec![KC; self.k / KC];
        if !self.k.is_multiple_of(KC) {
            v.push(self.k % KC);
        }
        v
    }
    /// Every microkernel the node calls.
    pub fn keys(&self) -> Vec<UkrKey> {
        let mut mrs = vec![];
        if self.m >= MR {
            mrs.push(MR);
        }
        let last_rows = self.m - (self.mparts() - 1) * self.mrows;
        for rows in [self.mrows, last_rows] {
            for mc in [MC.min(rows), rows % MC] {
                if mc % MR != 0 && !mrs.contains(&(mc % MR)) {
                    mrs.push(mc % MR);
                }
            }
        }
        let mut parts = vec![false];
        let last = self.n - (self.units_per_img() - 1) * self.chunk;
        if !last.is_multiple_of(NR) || !self.chunk.is_multiple_of(NR) {
            parts.push(true);
        }
        let nkb = self.kblocks().len();
        let mut kinds = vec![(false, nkb == 1)];
        if nkb > 1 {
            kinds.push((true, false));
            kinds.push((true, true));
        }
        let mut keys = vec![];
        for &mr in &mrs {
            for &partial in &parts {
                for &(acc, ep) in &kinds {
                    let k = UkrKey {
                        mr,
                        partial,
                        acc,
                        ep: if ep { self.ep.clone() } else { vec![] },
                    };
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
        keys
    }
}

fn is_f32(t: &TensorType) -> bool {
    t.dtype == DType::F32
}

/// The plan for `info` on the AVX2 path, or `None` when the node takes the generic path.
pub(super) fn plan(info: &NodeInfo, target: &Target) -> R<Option<Plan>> {
    if !target.has_avx2_fma() {
        return Ok(None);
    }
    let (base, steps): (&Op, &[FusedStep]) = match info.op {
        Op::Fused { base, steps, .. } => (base, steps),
        op => (op, &[]),
    };
    if !is_f32(&info.outs[0]) || info.outs.len() != 1 {
        return Ok(None);
    }
    let out = &info.outs[0].shape;
    let nbase = match info.op {
        Op::Fused { base_inputs, .. } => *base_inputs,
        _ => info.ins.len(),
    };
    let sub = base_info(info);
    let binfo = sub.as_ref().unwrap_or(info);
    let mut ep = vec![];
    let mut bias_port = None;
    let mut res_port = None;
    let mut gemm_c_post = None;
    let (kind, m, n, k, nimg, bias_is_row) = match base {
        Op::MatMul => {
            let Some(b) = &info.consts[1] else {
                return Ok(None);
            };
            if b.shape().len() != 2 || !is_f32(&info.ins[0]) || b.dtype() != DType::F32 {
                return Ok(None);
            }
            let (k, n) = (b.shape()[0], b.shape()[1]);
            let sa = &info.ins[0].shape;
            if sa.last() != Some(&k) || k == 0 {
                return Ok(None);
            }
            let mt = info.ins[0].numel() / k;
            if mt * n != info.outs[0].numel() || mt == 0 || n == 0 {
                return Ok(None);
            }
            (Kind::Mat, mt, n, k, 1, false)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            ..
        } => {
            if *trans_a || info.consts[1].is_none() || !is_f32(&info.ins[0]) {
                return Ok(None);
            }
            let (m, k) = (info.ins[0].shape[0], info.ins[0].shape[1]);
            let n = out[1];
            if m * n == 0 || k == 0 {
                return Ok(None);
            }
            if *alpha != 1.0 {
                ep.push(Ep::Scale(alpha.to_bits()));
            }
            if nbase > 2 && *beta != 0.0 {
                let cs = &info.ins[2].shape;
                if *beta == 1.0 && (cs.as_slice() == [n] || cs.as_slice() == [1, n]) {
                    ep.push(Ep::BiasCol);
                    bias_port = Some(2);
                } else if *beta == 1.0 && cs.as_slice() == [m, n] {
                    ep.push(Ep::Residual);
                    res_port = Some(2);
                } else {
                    gemm_c_post = Some(*beta);
                }
            }
            (Kind::Mat, m, n, k, 1, false)
        }
        Op::Conv { .. } => {
            let Some((g, _)) = conv_geom(binfo)? else {
                return Ok(None);
            };
            if g.groups != 1 || !info.ins.iter().take(3).all(is_f32) {
                return Ok(None);
            }
            let (m, n, k) = (g.m, g.oh * g.ow, g.c * g.kh * g.kw);
            if m * n * g.n == 0 || k == 0 {
                return Ok(None);
            }
            if nbase > 2 {
                ep.push(Ep::BiasRow);
                bias_port = Some(2);
            }
            let nimg = g.n;
            (Kind::Conv(g), m, n, k, nimg, true)
        }
        _ => return Ok(None),
    };
    // Fused steps that the tile store can apply.
    let mut rest = steps.len();
    if gemm_c_post.is_some() {
        rest = 0;
    }
    for (i, st) in steps.iter().enumerate().take(rest) {
        let e = match st {
            FusedStep::Unary(UnaryOp::Relu) => Some(Ep::Relu),
            FusedStep::Unary(UnaryOp::Clip { min, max }) => {
                Some(Ep::Clip(min.to_bits(), max.to_bits()))
            }
            FusedStep::Binary {
                op: BinaryOp::Add,
                input,
                ..
            } if is_f32(&info.ins[*input]) => {
                let s = &info.ins[*input].shape;
                if s == out && res_port.is_none() {
                    res_port = Some(*input);
                    Some(Ep::Residual)
                } else if bias_port.is_none() && s.len() <= out.len() {
                    // Rank-aligned: a bias broadcasts along rows (conv channels) or columns.
                    let pad = out.len() - s.len();
                    let dims: Vec<usize> = std::iter::repeat_n(1, pad)
                        .chain(s.iter().copied())
                        .collect();
                    let ok = if bias_is_row {
                        dims.len() == 4
                            && dims
                                .iter()
                                .enumerate()
                                .all(|(d, &x)| x == 1 || (d == 1 && x == m))
                            && dims[1] == m
                    } else {
                        dims.last() == Some(&n) && dims[..dims.len() - 1].iter().all(|&x| x == 1)
                    };
                    if ok {
                        bias_port = Some(*input);
                        Some(if bias_is_row {
                            Ep::BiasRow
                        } else {
                            Ep::BiasCol
                        })
                    } else {
                        None
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        match e {
            Some(x) => ep.push(x),
            None => {
                rest = i;
                break;
            }
        }
    }
    let chunk = match kind {
        Kind::Conv(_) => 128,
        Kind::Mat if m >= 64 => 256,
        Kind::Mat => 64,
    };
    let mut p = Plan {
        kind,
        m,
        n,
        k,
        nimg,
        ep,
        bias_port,
        res_port,
        rest,
        gemm_c_post,
        chunk,
        mrows: m,
        tasks: 1,
    };
    // Split rows too when there are few column units (e.g. 7x7 maps, small N).
    let cu = p.nimg * p.units_per_img();
    if cu < 8 && m >= 2 * 4 * MR {
        let want = 8usize.div_ceil(cu);
        p.mrows = m.div_ceil(want).div_ceil(MR).max(4) * MR;
    }
    // Spread work only when a unit has enough of it (~256 KFLOP).
    let flops = 2 * m * n * k * nimg;
    p.tasks = if flops < (1 << 21) {
        1
    } else {
        p.units().min(MAX_TASKS)
    };
    Ok(Some(p))
}

/// Compile-time data: the packed B (Mat) or the conv offset tables.
pub(super) fn derived(info: &NodeInfo, p: &Plan) -> R<Vec<Vec<u8>>> {
    match &p.kind {
        Kind::Mat => {
            let b = info.consts[1]
                .as_ref()
                .ok_or_else(|| info.err("B is not constant"))?;
            let trans = matches!(info.op, Op::Gemm { trans_b: true, .. })
                || matches!(info.op, Op::Fused { base, .. } if matches!(**base, Op::Gemm { trans_b: true, .. }));
            let v = b.as_f32().ok_or_else(|| info.err("B is not f32"))?;
            let (r, c) = (b.shape()[0], b.shape()[1]);
            let (k, n) = if trans { (c, r) } else { (r, c) };
            let tiles = n.div_ceil(NR);
            let mut out = vec![0f32; tiles * k * NR];
            for kk in 0..k {
                for j in 0..n {
                    let x = if trans { v[j * c + kk] } else { v[kk * c + j] };
                    out[((j / NR) * k + kk) * NR + j % NR] = x;
                }
            }
            Ok(vec![out.iter().flat_map(|x| x.to_le_bytes()).collect()])
        }
        Kind::Conv(g) => {
            let plane = g.hp * g.wp;
            let mut koff: Vec<i64> = Vec::with_capacity(p.k);
            for c in 0..g.c {
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        koff.push(((c * plane + kh * g.dh * g.wp + kw * g.dw) * 4) as i64);
                    }
                }
            }
            let np = p.n.div_ceil(NR) * NR;
            let pix: Vec<i64> = (0..np)
                .map(|q| {
                    if q < p.n {
                        let (oh, ow) = (q / g.ow, q % g.ow);
                        ((oh * g.sh * g.wp + ow * g.sw) * 4) as i64
                    } else {
                        0
                    }
                })
                .collect();
            let contig: Vec<i64> = (0..np / 4)
                .map(|q| {
                    let ok = (0..4).all(|l| {
                        let x = 4 * q + l;
                        x < p.n && pix[x] == pix[4 * q] + 4 * l as i64
                    });
                    ok as i64
                })
                .collect();
            let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            Ok(vec![bytes(&koff), bytes(&pix), bytes(&contig)])
        }
    }
}

/// Everything a task needs: node pointers and the microkernels.
pub(super) struct Ctx<'a> {
    pub ins: &'a [Value],
    pub out: Value,
    pub scratch: Value,
    pub extra: &'a [Value],
    pub ukrs: &'a HashMap<UkrKey, FuncRef>,
}

/// `for i in lo..hi` with runtime bounds.
fn loop_range(e: &mut E, lo: Value, hi: Value, body: &mut dyn FnMut(&mut E, Value)) {
    let iv = e.b.declare_var(types::I64);
    e.b.def_var(iv, lo);
    let header = e.b.create_block();
    let bodyb = e.b.create_block();
    let exit = e.b.create_block();
    e.b.ins().jump(header, &[]);
    e.b.switch_to_block(header);
    let i = e.b.use_var(iv);
    let c = e.b.ins().icmp(IntCC::SignedLessThan, i, hi);
    e.b.ins().brif(c, bodyb, &[], exit, &[]);
    e.b.switch_to_block(bodyb);
    e.b.seal_block(bodyb);
    body(e, i);
    let i2 = e.b.ins().iadd_imm_s(i, 1);
    e.b.def_var(iv, i2);
    e.b.ins().jump(header, &[]);
    e.b.seal_block(header);
    e.b.switch_to_block(exit);
    e.b.seal_block(exit);
}

/// `if c { then() } else { els() }`.
fn if_else(e: &mut E, c: Value, then: &mut dyn FnMut(&mut E), els: &mut dyn FnMut(&mut E)) {
    let tb = e.b.create_block();
    let eb = e.b.create_block();
    let join = e.b.create_block();
    e.b.ins().brif(c, tb, &[], eb, &[]);
    e.b.switch_to_block(tb);
    e.b.seal_block(tb);
    then(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(eb);
    e.b.seal_block(eb);
    els(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(join);
    e.b.seal_block(join);
}

/// Serial work before the tasks: the zero-padded input copy of a conv.
pub(super) fn emit_pre(e: &mut E, info: &NodeInfo, p: &Plan, c: &Ctx) -> R<()> {
    let Kind::Conv(g) = &p.kind else {
        return Ok(());
    };
    if p.pad_bytes() == 0 {
        return Ok(());
    }
    let total = g.n * g.c * g.hp * g.wp;
    let zv = e.fc(F32X4, 0.0);
    let z = e.ic(0);
    e.loop_offs((total / 4) as i64, &[z], &[16], &mut |e, _i, o| {
        e.st(zv, c.scratch, o[0]);
    });
    let zs = e.fc(types::F32, 0.0);
    for t in (total / 4) * 4..total {
        let o = e.ic(t as i64 * 4);
        e.st(zs, c.scratch, o);
    }
    let plane = [g.n * g.c, g.h, g.w];
    let dst = Opd {
        p: c.scratch,
        dt: DType::F32,
        base: (g.ph * g.wp + g.pw) as i64,
        strides: vec![(g.hp * g.wp) as i64, g.wp as i64, 1],
    };
    let src = Opd {
        p: c.ins[0],
        dt: DType::F32,
        base: 0,
        strides: vec![(g.h * g.w) as i64, g.w as i64, 1],
    };
    map(e, info, &plane, dst, &[src], &Ew::Copy)
}

/// Serial work after the tasks: Gemm's general C term and fused steps the tile store skipped.
pub(super) fn emit_post(e: &mut E, info: &NodeInfo, p: &Plan, c: &Ctx) -> R<()> {
    let oty = &info.outs[0];
    if let Some(beta) = p.gemm_c_post {
        let o = Opd::dense(c.out, oty);
        let cc = Opd::bcast(c.ins[2], &info.ins[2], &oty.shape);
        map(
            e,
            info,
            &oty.shape,
            o.clone(),
            &[o, cc],
            &Ew::AddScaled(beta),
        )?;
    }
    if let Op::Fused { steps, .. } = info.op {
        if p.rest < steps.len() {
            apply_chain(e, info, c.ins, c.out, &steps[p.rest..])?;
        }
    }
    Ok(())
}

/// The units of task `t` (of `p.tasks`).
pub(super) fn emit_task(e: &mut E, p: &Plan, c: &Ctx, t: Value) {
    let units = p.units() as i64;
    let tasks = p.tasks as i64;
    // [t * U / T, (t + 1) * U / T)
    let a = e.b.ins().imul_imm_s(t, units);
    let lo = e.b.ins().udiv_imm_u(a, tasks);
    let t1 = e.b.ins().iadd_imm_s(t, 1);
    let b = e.b.ins().imul_imm_s(t1, units);
    let hi = e.b.ins().udiv_imm_u(b, tasks);
    let pack = if p.pack_bytes() > 0 {
        let o = e.b.ins().imul_imm_s(t, p.pack_bytes() as i64);
        let o = e.b.ins().iadd_imm_s(o, p.pad_bytes() as i64);
        e.b.ins().iadd(c.scratch, o)
    } else {
        c.scratch
    };
    let upi = p.units_per_img();
    let mparts = p.mparts();
    let last_cols = p.n - (upi - 1) * p.chunk;
    let last_rows = p.m - (mparts - 1) * p.mrows;
    loop_range(e, lo, hi, &mut |e, u| {
        let mp = e.b.ins().urem_imm_u(u, mparts as i64);
        let u2 = e.b.ins().udiv_imm_u(u, mparts as i64);
        let img = e.b.ins().udiv_imm_u(u2, upi as i64);
        let ci = e.b.ins().urem_imm_u(u2, upi as i64);
        let col0 = e.b.ins().imul_imm_s(ci, p.chunk as i64);
        let row0 = e.b.ins().imul_imm_s(mp, p.mrows as i64);
        let by_rows = |e: &mut E, ncols: usize| {
            if mparts == 1 || last_rows == p.mrows {
                emit_unit(e, p, c, pack, img, col0, ncols, row0, last_rows);
            } else {
                let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, mp, mparts as i64 - 1);
                if_else(
                    e,
                    is_last,
                    &mut |e| emit_unit(e, p, c, pack, img, col0, ncols, row0, last_rows),
                    &mut |e| emit_unit(e, p, c, pack, img, col0, ncols, row0, p.mrows),
                );
            }
        };
        if upi == 1 || last_cols == p.chunk {
            by_rows(e, last_cols);
        } else {
            let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, ci, upi as i64 - 1);
            let t = |e: &mut E| by_rows(e, last_cols);
            let tb = e.b.create_block();
            let eb = e.b.create_block();
            let join = e.b.create_block();
            e.b.ins().brif(is_last, tb, &[], eb, &[]);
            e.b.switch_to_block(tb);
            e.b.seal_block(tb);
            t(e);
            e.b.ins().jump(join, &[]);
            e.b.switch_to_block(eb);
            e.b.seal_block(eb);
            by_rows(e, p.chunk);
            e.b.ins().jump(join, &[]);
            e.b.switch_to_block(join);
            e.b.seal_block(join);
        }
    });
}

/// One unit: `ncols` columns from column `col0` of image `img`, all rows, all of K.
#[allow(clippy::too_many_arguments)]
#[allow(clippy::too_many_arguments)]
fn emit_unit(
    e: &mut E,
    p: &Plan,
    c: &Ctx,
    pack: Value,
    img: Value,
    col0: Value,
    ncols: usize,
    row0: Value,
    mrows: usize,
) {
    let kbs = p.kblocks();
    let nkb = kbs.len();
    let z = e.ic(0);
    if nkb == 1 {
        emit_kblock(
            e, p, c, pack, img, col0, ncols, row0, mrows, z, kbs[0], false, true,
        );
        return;
    }
    emit_kblock(
        e, p, c, pack, img, col0, ncols, row0, mrows, z, KC, false, false,
    );
    let kstart = e.ic(KC as i64);
    let mids = nkb as i64 - 2;
    e.loop_offs(mids, &[kstart], &[KC as i64], &mut |e, _i, o| {
        emit_kblock(
            e, p, c, pack, img, col0, ncols, row0, mrows, o[0], KC, true, false,
        );
    });
    let k0 = e.ic((p.k - kbs[nkb - 1]) as i64);
    emit_kblock(
        e,
        p,
        c,
        pack,
        img,
        col0,
        ncols,
        row0,
        mrows,
        k0,
        kbs[nkb - 1],
        true,
        true,
    );
}

/// One K block `[k0, k0 + kc)` of a unit: pack (conv), then every tile.
#[allow(clippy::too_many_arguments)]
fn emit_kblock(
    e: &mut E,
    p: &Plan,
    c: &Ctx,
    pack: Value,
    img: Value,
    col0: Value,
    ncols: usize,
    row0: Value,
    mrows: usize,
    k0: Value,
    kc: usize,
    acc: bool,
    last: bool,
) {
    let npan = ncols.div_ceil(NR);
    let full = ncols / NR;
    let nr_last = ncols % NR;
    let ptr = types::I64;
    // B panel j of this block lives at `bbase + j * bstep`.
    let (bbase, bstep) = match &p.kind {
        Kind::Mat => {
            // packed[(col0/16 + j)][k][16]
            let pan = e.b.ins().udiv_imm_u(col0, NR as i64);
            let o = e.b.ins().imul_imm_s(pan, (p.k * NR * 4) as i64);
            let ko = e.b.ins().imul_imm_s(k0, (NR * 4) as i64);
            let o = e.b.ins().iadd(o, ko);
            (e.b.ins().iadd(c.extra[0], o), (p.k * NR * 4) as i64)
        }
        Kind::Conv(g) => {
            let x = if p.pad_bytes() > 0 {
                c.scratch
            } else {
                c.ins[0]
            };
            let io = e.b.ins().imul_imm_s(img, (g.c * g.hp * g.wp * 4) as i64);
            let xb = e.b.ins().iadd(x, io);
            pack_panels(e, c, pack, xb, col0, npan, k0, kc);
            (pack, (kc * NR * 4) as i64)
        }
    };
    let (a, lda) = match &p.kind {
        Kind::Mat => (c.ins[0], p.k as i64 * 4),
        Kind::Conv(_) => (c.ins[1], p.k as i64 * 4),
    };
    let ldc = p.n as i64 * 4;
    let ko = e.b.ins().imul_imm_s(k0, 4);
    let a = e.b.ins().iadd(a, ko);
    let io = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
    let co = e.b.ins().imul_imm_s(col0, 4);
    let cbase_off = e.b.ins().iadd(io, co);
    let kcv = e.ic(kc as i64);
    let ldav = e.ic(lda);
    let ldcv = e.ic(ldc);
    let ep = if last { p.ep.clone() } else { vec![] };
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    let row_bias = matches!(p.kind, Kind::Conv(_));
    let _ = ptr;
    // One tile: `mr` rows at A/C row offsets, panel at `bp`, column offset `colb` (bytes).
    let tile = |e: &mut E,
                mr: usize,
                partial: bool,
                arow: Value,
                crow: Value,
                rowb: Value,
                bp: Value,
                colb: Value| {
        let key = UkrKey {
            mr,
            partial,
            acc,
            ep: ep.clone(),
        };
        let f = c.ukrs[&key];
        let pa = e.b.ins().iadd(a, arow);
        let coff = e.b.ins().iadd(cbase_off, crow);
        let coff = e.b.ins().iadd(coff, colb);
        let pc = e.b.ins().iadd(c.out, coff);
        let nr = e.ic(if partial { nr_last as i64 } else { NR as i64 });
        let pb = match bias {
            Some(bv) => {
                if row_bias {
                    e.b.ins().iadd(bv, rowb)
                } else {
                    let cc = e.b.ins().iadd(co, colb);
                    e.b.ins().iadd(bv, cc)
                }
            }
            None => pc,
        };
        let pr = match res {
            Some(rv) => e.b.ins().iadd(rv, coff),
            None => pc,
        };
        e.b.ins()
            .call(f, &[pa, bp, pc, kcv, ldav, ldcv, nr, pb, pr]);
    };
    // Rows of one M block at row offset (a, c, bias) with `mc` rows, all panels.
    let mblock = |e: &mut E, mc: usize, ar: Value, cr: Value, br: Value| {
        let panel = |e: &mut E, partial: bool, bp: Value, colb: Value| {
            let nfull = mc / MR;
            e.loop_offs(
                nfull as i64,
                &[ar, cr, br],
                &[MR as i64 * lda, MR as i64 * ldc, MR as i64 * 4],
                &mut |e, _i, o| tile(e, MR, partial, o[0], o[1], o[2], bp, colb),
            );
            let rem = mc % MR;
            if rem > 0 {
                let a2 = e.b.ins().iadd_imm_s(ar, (nfull * MR) as i64 * lda);
                let c2 = e.b.ins().iadd_imm_s(cr, (nfull * MR) as i64 * ldc);
                let b2 = e.b.ins().iadd_imm_s(br, (nfull * MR) as i64 * 4);
                tile(e, rem, partial, a2, c2, b2, bp, colb);
            }
        };
        let zc = e.ic(0);
        e.loop_offs(
            full as i64,
            &[bbase, zc],
            &[bstep, (NR * 4) as i64],
            &mut |e, _j, o| {
                panel(e, false, o[0], o[1]);
            },
        );
        if nr_last > 0 {
            let bp = e.b.ins().iadd_imm_s(bbase, full as i64 * bstep);
            let colb = e.ic((full * NR * 4) as i64);
            panel(e, true, bp, colb);
        }
    };
    let nmb = mrows / MC;
    let ar0 = e.b.ins().imul_imm_s(row0, lda);
    let cr0 = e.b.ins().imul_imm_s(row0, ldc);
    let br0 = e.b.ins().imul_imm_s(row0, 4);
    e.loop_offs(
        nmb as i64,
        &[ar0, cr0, br0],
        &[MC as i64 * lda, MC as i64 * ldc, MC as i64 * 4],
        &mut |e, _i, o| mblock(e, MC, o[0], o[1], o[2]),
    );
    if mrows % MC > 0 {
        let ar = e.b.ins().iadd_imm_s(ar0, (nmb * MC) as i64 * lda);
        let cr = e.b.ins().iadd_imm_s(cr0, (nmb * MC) as i64 * ldc);
        let br = e.b.ins().iadd_imm_s(br0, (nmb * MC) as i64 * 4);
        mblock(e, mrows % MC, ar, cr, br);
    }
}

/// Pack patches `[k0, k0 + kc)` of columns `col0 .. col0 + 16 * npan` into `npan` panels of
/// `kc x 16` at `pack`; `xb` is this image's (padded) input.
#[allow(clippy::too_many_arguments)]
fn pack_panels(
    e: &mut E,
    c: &Ctx,
    pack: Value,
    xb: Value,
    col0: Value,
    npan: usize,
    k0: Value,
    kc: usize,
) {
    let (koff, pix, contig) = (c.extra[0], c.extra[1], c.extra[2]);
    let kb = e.b.ins().imul_imm_s(k0, 8);
    let kt = e.b.ins().iadd(koff, kb);
    let pixo = e.b.ins().imul_imm_s(col0, 8);
    let z = e.ic(0);
    e.loop_offs(
        npan as i64,
        &[z, pixo],
        &[(kc * NR * 4) as i64, (NR * 8) as i64],
        &mut |e, _j, o| {
            let dst = e.b.ins().iadd(pack, o[0]);
            for g in 0..4 {
                // flags index = pixel / 4 → byte offset pixo / 4 (pixel*8/4 = pixel*2)
                let fo = e.b.ins().ushr_imm_u(o[1], 2);
                let fo = e.b.ins().iadd_imm_s(fo, (g * 8) as i64);
                let flag = e.ld(types::I64, contig, fo);
                let po: Vec<Value> = (0..4)
                    .map(|l| {
                        let off = e.b.ins().iadd_imm_s(o[1], ((g * 4 + l) * 8) as i64);
                        let pv = e.ld(types::I64, pix, off);
                        e.b.ins().iadd(xb, pv)
                    })
                    .collect();
                let dg = e.b.ins().iadd_imm_s(dst, (g * 16) as i64);
                let zz = e.ic(0);
                if_else(
                    e,
                    flag,
                    &mut |e| {
                        e.loop_offs(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                            let ko = e.ld(types::I64, kt, q[0]);
                            let v = e.ld(F32X4, po[0], ko);
                            e.st(v, dg, q[1]);
                        });
                    },
                    &mut |e| {
                        e.loop_offs(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                            let ko = e.ld(types::I64, kt, q[0]);
                            let d = e.b.ins().iadd(dg, q[1]);
                            for l in 0..4 {
                                let v = e.ld(types::F32, po[l], ko);
                                e.b.ins().store(mf(), v, d, (l * 4) as i32);
                            }
                        });
                    },
                );
            }
        },
    );
}
